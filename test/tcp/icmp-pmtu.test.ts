import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { TcpUser } from '../../src/stack/tcp/tcp-types.ts';
import {
  bytes,
  etherType,
  IP_A,
  IP_B,
  icmpMessage,
  ipFrame,
  MAC_A,
  MAC_B,
  twoHosts,
} from '../stack/harness.ts';

const user: TcpUser = {
  onConnected() {},
  onReadable() {},
  onWritable() {},
  onRemoteEnd() {},
  onClosed() {},
};

/** ICMP frag-needed from B about a TCP segment A sent with sequence `seq`. */
function fragNeeded(srcPort: number, seq: number, mtu: number): Uint8Array {
  const f = ipFrame({
    dstMac: MAC_B,
    srcMac: MAC_A,
    src: IP_A,
    dst: IP_B,
    protocol: 6,
    payload: new Uint8Array(8),
  });
  const q = f.slice(14, 14 + 28);
  q[2] = 1500 >>> 8;
  q[3] = 1500 & 0xff;
  q[20] = srcPort >>> 8;
  q[21] = srcPort & 0xff;
  q[22] = 0;
  q[23] = 80;
  q[24] = seq >>> 24;
  q[25] = (seq >>> 16) & 0xff;
  q[26] = (seq >>> 8) & 0xff;
  q[27] = seq & 0xff;
  return icmpMessage(3, 4, q, mtu);
}

test('ICMP frag-needed: the quoted sequence is checked before the shared path MTU drops; a copy that lowers nothing resends nothing', () => {
  const w = twoHosts();
  w.b.tcp.listen({ port: 80 }, (c) => {
    c.user = user;
    return true;
  });
  const c = w.a.tcp.connect({ remoteIp: IP_B, remotePort: 80 }, user);
  w.clock.advance(50);
  const path = w.a.pathTo(IP_B)!;
  c.write(bytes(20_000, 1));
  const d = c.state.delegated;
  assert.ok(d.sndMax !== d.sndUna, 'data in flight');
  const from = (msg: Uint8Array) =>
    w.pa.receive(ipFrame({ dstMac: MAC_A, srcMac: MAC_B, src: IP_B, dst: IP_A, protocol: 1, payload: msg }));
  const tcpFromA = () =>
    w.hub.log.filter((e) => e.from === 'a' && etherType(e.frame) === 0x0800 && e.frame[23] === 6).length;

  // A forged error quoting a sequence number not in flight changes nothing.
  from(fragNeeded(c.localPort, (d.sndUna - 100_000) >>> 0, 600));
  assert.equal(path.cached.mtu, 1500);
  assert.equal(w.a.counters.get('drop.icmp.tcp-not-in-flight'), 1);

  from(fragNeeded(c.localPort, d.sndUna, 1200));
  assert.equal(path.cached.mtu, 1200);
  w.clock.advance(1);
  const afterFirst = tcpFromA();
  // A second copy of the same message: the MTU did not drop, so nothing is resent.
  from(fragNeeded(c.localPort, d.sndUna, 1200));
  w.clock.advance(1);
  assert.equal(tcpFromA(), afterFirst);
  assert.equal(w.a.counters.get('tcp.pmtu.resegment'), 1);
});
