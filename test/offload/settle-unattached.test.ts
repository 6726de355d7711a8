/**
 * A settle at a NIC whose `attach` finds no connection: the source has let go of the handle the
 * socket had, so resuming there is no way on. Each such item must neither throw out of the settle's
 * loop (which would leave the rest of the part frozen) nor leave its socket on a dead handle.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import { resetOf } from '../helpers/segments.ts';
import { halfwayGate, socketKey, streamBothWays, workerSetup } from '../nic/worker-helpers.ts';
import { keysOf, offloadPair, startStreams } from './helpers.ts';

/** `n` streams offloaded to the first of two LocalNics, moves between them by the general protocol. */
async function streamsAtFirstNic(seed: number, n: number) {
  const p = offloadPair(seed);
  const m = p.host.offload;
  // The general protocol's settle (a live hand-over between LocalNics has no attach loop).
  m.liveHandover = false;
  const [n0, n1] = p.host.nics as [LocalNic, LocalNic];
  const st = await startStreams(p, n, 120_000);
  const keys = keysOf(st.sockets);
  assert.equal((await m.offload(keys, n0)).moved.length, n);
  await p.net.sleep(50);
  return { p, m, n0, n1, st, keys };
}

describe('settle: a destination attach that returns null', () => {
  it('destination crashed in the loop: the move ends, the rest wait frozen for the recover, which rebuilds them all', async () => {
    const { m, n0, n1, st, keys } = await streamsAtFirstNic(38, 8);
    let calls = 0;
    const attach = n1.attach.bind(n1);
    n1.attach = (k, u) => {
      if (++calls === 3) n1.crash('test: died before its third attach');
      return attach(k, u);
    };
    const r = await m.move(keys, n0, n1);
    assert.equal(calls, 8, 'every item reached the attach');
    assert.equal(r.moved.length, 2, 'the two attached before the crash moved');
    assert.equal(r.refused.length, 6);
    for (const f of r.refused) assert.match(f.reason, /died during the move/);
    // Those not attached wait with their calls held, not resumed on the handle n0 let go.
    const frozen = st.sockets.filter((s) => s.moving).length;
    assert.equal(frozen, 6, 'the six not attached stay frozen');
    for (const k of keys) assert.equal(m.ownerOf(k), n1, 'the recover finds every one on the dead NIC');
    const rec = await m.recover(n1, n0);
    assert.equal(rec.moved.length, 8, 'all rebuilt');
    assert.equal(st.sockets.filter((s) => s.moving).length, 0, 'no socket left frozen');
    assert.equal(await st.done, 0, 'every byte arrived, both ways');
    assert.deepEqual(st.errors, []);
  });

  it('reset at the destination during the settle: that socket hears ECONNRESET, the others move on', async () => {
    const { p, m, n0, n1, st, keys } = await streamsAtFirstNic(39, 6);
    const victim = 2;
    const k = keys[victim]!;
    // The peer's RST reaches the destination straight from the wire once it runs the connection,
    // while the settle awaits what the source held.
    const init = n1.initiate.bind(n1);
    n1.initiate = async (...a: Parameters<LocalNic['initiate']>) => {
      const res = await init(...a);
      const conn = n1.engine.connection(k)!;
      n1.inject([resetOf(k, conn.state.delegated.rcvNxt)]);
      return res;
    };
    const gone: Error[] = [];
    st.sockets[victim]!.on('error', (e) => gone.push(e));
    const r = await m.move(keys, n0, n1);
    assert.equal(n1.engine.connection(k), undefined, 'the reset closed it at the destination');
    assert.equal(r.moved.length, 5, 'the other five moved');
    assert.deepEqual(
      r.refused.map((f) => [f.key.localPort, f.status]),
      [[k.localPort, 'closed']],
    );
    assert.equal(m.ownerOf(k), null, 'the host forgot it');
    await p.net.sleep(10);
    assert.equal(st.sockets[victim]!.moving, false);
    assert.equal(st.sockets[victim]!.destroyed, true, 'the socket ended');
    assert.equal((gone[0] as NodeJS.ErrnoException | undefined)?.code, 'ECONNRESET');
    for (let i = 0; i < keys.length; i++) {
      if (i === victim) continue;
      assert.equal(m.ownerOf(keys[i]!), n1, `connection ${i} runs at the destination`);
      assert.equal(st.sockets[i]!.moving, false);
    }
    // Its two directions fail (the reset); the other ten arrive whole.
    assert.equal(await st.done, 2);
  });

  it('a WorkerNic destination dead after its initiate answered attaches nothing, as a LocalNic: the recover rebuilds them all', {
    timeout: 120_000,
  }, async (t) => {
    const { wh, peer } = await workerSetup(40, t);
    const [n0, n1] = wh.nics as [WorkerNic, WorkerNic];
    const gate = halfwayGate();
    const st = await streamBothWays(wh.host, peer, 6, 200_000, 1000, gate.gap);
    const keys = st.sockets.map(socketKey);
    // Its worker killed between the answer and the settle: the settle's attach finds it dead.
    const init = n0.initiate.bind(n0);
    n0.initiate = (async (...a: Parameters<WorkerNic['initiate']>) => {
      const res = await init(...a);
      const dead = new Promise<void>((resolve) => n0.once('dead', () => resolve()));
      await n0.kill();
      await dead;
      return res;
    }) as WorkerNic['initiate'];
    const r = await wh.offload.offload(keys, n0);
    assert.equal(r.moved.length, 0, 'none attached on the dead NIC');
    assert.equal(r.refused.length, keys.length);
    for (const f of r.refused) assert.match(f.reason, /died during the move/);
    // Waiting frozen (their calls held), not put on handles no thread runs.
    assert.equal(st.sockets.filter((s) => s.moving).length, keys.length, 'every socket waits frozen');
    for (const k of keys)
      assert.equal(wh.offload.ownerOf(k), n0, 'the recover finds every one on the dead NIC');
    const rec = await wh.offload.recover(n0, n1);
    assert.equal(rec.moved.length, keys.length, 'all rebuilt');
    gate.open();
    // Resumed at the survivor a bounded number per turn (paced), not all in the recover's turn.
    const until = Date.now() + 30_000;
    while (st.sockets.some((s) => s.moving) && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
    assert.equal(st.sockets.filter((s) => s.moving).length, 0, 'no socket left frozen');
    assert.equal(await st.done, 0, 'every byte arrived, both ways');
    assert.deepEqual(st.errors, []);
  });
});
