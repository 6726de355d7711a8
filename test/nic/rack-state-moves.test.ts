/**
 * RACK's knowledge of the path rides with a connection through a WorkerNic's offload, a worker to
 * worker hand-over, an upload and a rebuild from the hard state a killed worker left (Linux keeps
 * tp->reordering for the socket's life): the new owner does not start again at a degree of 3.
 * So does its ECN state (TcpDelegated.ecn): an owner that forgot a CE mark it owes an echo for, or
 * that ECN was negotiated, would leave the peer blind to the congestion.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ConnKey } from '../../src/nic/nic.ts';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import type { Stack } from '../../src/stack/stack.ts';
import { TcpEcn } from '../../src/state/tcp-state.ts';
import { addWorkerHost, socketKey, streamBothWays } from './worker-helpers.ts';

/** The host's connection of `k`, while the host runs it. */
function hostConn(stack: Stack, k: ConnKey) {
  const c = stack.tcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort);
  assert.ok(c, 'the host runs it');
  return c;
}

const ECN_OWED = TcpEcn.OK | TcpEcn.DEMAND_CWR | TcpEcn.SEEN;

describe("RACK's knowledge of the path through a WorkerNic's moves", () => {
  test('offload, hand-over, upload, and a rebuild after a kill: the degree and the rest arrive', {
    timeout: 60_000,
  }, async (t) => {
    const net = new SimNetwork({ seed: 29, virtualTime: false });
    const wh = addWorkerHost(net, { capacity: 16 });
    t.after(() => {
      wh.close();
      net.close();
    });
    const peer = net.addHost({ ip: '10.0.0.2/24' });
    await Promise.all(wh.nics.map((n) => n.ready()));
    const [nic0, nic1] = wh.nics as [WorkerNic, WorkerNic];
    const st = await streamBothWays(wh.host, peer, 4, 200_000, 1000, 2);
    const keys = st.sockets.map(socketKey);
    // As a path that reordered would have left them (this lossless one changes none of them).
    for (const [i, k] of keys.entries()) {
      const c = hostConn(wh.stack, k);
      c.rack.reordering = 10 + i;
      c.rack.reorderingSeen = true;
      c.state.soft.reoWndMult = 3;
      // As a CE mark would have left it, with a peer that never sends CWR (it did not negotiate
      // ECN, so it ignores the echo): the echo stays owed through every move.
      c.state.delegated.ecn = ECN_OWED;
    }
    const learned = (k: ConnKey, i: number, where: string) => {
      const c = hostConn(wh.stack, k);
      assert.deepEqual(
        [c.rack.reordering, c.rack.reorderingSeen],
        [10 + i, true],
        `${where}: what RACK learned arrived`,
      );
      // At least the 3 it left with: a resend around a move in real time can draw the peer's
      // D-SACK (sent since receivers D-SACK duplicates), and RACK widens on it (RFC 8985 6.2),
      // which is knowledge arriving too. A new owner would start again at 1.
      assert.ok(c.rack.reoWndMult >= 3, `${where}: reoWndMult ${c.rack.reoWndMult} kept (at least 3)`);
      assert.equal(c.state.delegated.ecn, ECN_OWED, `${where}: ECN negotiated and the echo owed`);
    };
    const m = wh.offload;
    assert.equal((await m.offload(keys, nic0)).moved.length, keys.length);
    assert.equal((await m.move(keys, nic0, nic1)).moved.length, keys.length);
    assert.equal(wh.stack.counters.get('offload.handed'), keys.length, 'handed worker to worker');
    assert.equal((await m.upload(keys)).moved.length, keys.length);
    for (const [i, k] of keys.entries()) learned(k, i, 'offload, hand-over, upload');
    assert.equal((await m.offload(keys, nic1)).moved.length, keys.length);
    await nic1.kill();
    await m.recover(nic1, 'host');
    for (const [i, k] of keys.entries()) learned(k, i, 'rebuilt from the hard state');
    assert.equal(await st.done, 0, 'every direction of every connection intact');
    assert.deepEqual(st.errors, []);
  });
});
