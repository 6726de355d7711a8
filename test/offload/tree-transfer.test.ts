import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ConnKey, Nic } from '../../src/nic/nic.ts';
import type { TcpState } from '../../src/state/tcp-state.ts';
import { keysOf, offloadPair, startStreams } from './helpers.ts';

test('in process the state moves as objects: rings kept, neighbor and path never shared between owners', async () => {
  const p = offloadPair(41);
  const { net, host } = p;
  const st = await startStreams(p, 6, 100_000, 2000, 2);
  const keys = keysOf(st.sockets);
  const [n0, n1] = host.nics;
  assert.ok(n0!.inProcess && n1!.inProcess);
  const m = host.offload;
  const tcp = host.stack.tcp;
  const stateOf = (k: ConnKey): TcpState | undefined =>
    tcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort)?.state;
  await net.sleep(20);
  const before = keys.map((k) => stateOf(k)!);
  const hostPath = before[0]!.path;
  assert.equal((await m.offload(keys, n0 as Nic)).moved.length, 6);
  const onN0 = keys.map((k) => n0!.engine.connection(k)!.state);
  for (let i = 0; i < keys.length; i++) {
    // The very objects: nothing encoded, no byte of either ring copied.
    assert.equal(onN0[i], before[i], 'the TcpState itself moved');
    assert.equal(onN0[i]!.delegated.sendBuffer, before[i]!.delegated.sendBuffer);
    assert.equal(onN0[i]!.delegated.recvBuffer, before[i]!.delegated.recvBuffer);
    // ...but the path and neighbor above it are the NIC's own, shared by its connections only.
    assert.notEqual(onN0[i]!.path, hostPath);
    assert.notEqual(onN0[i]!.path.neighbor, hostPath.neighbor);
    assert.equal(onN0[i]!.path, onN0[0]!.path, 'one path object for every connection of the path');
  }
  // The states themselves move on: keep what n0 held above them.
  const n0Path = onN0[0]!.path;
  const n0Mac = n0Path.neighbor.cached.dstMac;
  await net.sleep(20);
  assert.equal((await m.move(keys, n0 as Nic, n1 as Nic)).moved.length, 6);
  const onN1 = keys.map((k) => n1!.engine.connection(k)!.state);
  for (let i = 0; i < keys.length; i++) {
    assert.equal(onN1[i], before[i]);
    assert.notEqual(onN1[i]!.path, n0Path, 'the target does not adopt the source NIC path');
    assert.notEqual(onN1[i]!.path.neighbor, n0Path.neighbor);
    assert.notEqual(onN1[i]!.path, hostPath);
  }
  // A MAC change pushed to n1 must not leak into anything n0 or the host still holds.
  await n1!.update({ kind: 'neighbor', neighborIp: onN1[0]!.path.neighbor.const.ip, dstMac: 0x020000000bad });
  assert.equal(onN1[0]!.path.neighbor.cached.dstMac, 0x020000000bad);
  assert.equal(n0Path.neighbor.cached.dstMac, n0Mac);
  assert.notEqual(hostPath.neighbor.cached.dstMac, 0x020000000bad);
  await n1!.update({
    kind: 'neighbor',
    neighborIp: onN1[0]!.path.neighbor.const.ip,
    dstMac: hostPath.neighbor.cached.dstMac,
  });
  await net.sleep(20);
  assert.equal((await m.upload(keys)).moved.length, 6);
  for (let i = 0; i < keys.length; i++) {
    const s = stateOf(keys[i]!)!;
    assert.equal(s, before[i]);
    assert.equal(s.path, hostPath, 'back in the host on the host path');
  }
  assert.equal(await st.done, 0, 'every byte arrives');
  assert.deepEqual(st.errors, []);
  net.close();
});
