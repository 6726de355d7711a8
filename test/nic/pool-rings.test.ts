import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ConnKey } from '../../src/nic/nic.ts';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import { socketKey, streamBothWays, workerSetup } from './worker-helpers.ts';

const CONNS = 8;

test('a worker pools the states it released without their rings, and still reads into them', {
  timeout: 120_000,
}, async (t) => {
  const { wh, peer } = await workerSetup(91, t);
  const nics = wh.nics as [WorkerNic, WorkerNic];
  let stepping = true;
  const gap = () => (stepping ? new Promise<void>((r) => setTimeout(r, 3)) : Promise.resolve());
  const st = await streamBothWays(wh.host, peer, CONNS, 400_000, 500, gap);
  const keys: ConnKey[] = st.sockets.map((s) => socketKey(s));
  const m = wh.offload;
  assert.equal((await m.offload(keys, nics[0])).moved.length, CONNS);
  assert.equal((await m.move(keys, nics[0], nics[1])).moved.length, CONNS);
  assert.equal((await m.move(keys, nics[1], nics[0])).moved.length, CONNS);
  // NIC 1 keeps the states it released for their next visit. Their rings were the blocks'; kept,
  // each pooled state would hold its block's whole slab (64 MB) in memory after the connection
  // closed, for as long as the pool kept it: under churn, a slab every few cycles, never freed.
  const c1 = await nics[1].counters();
  assert.ok((c1['nic.pool.states'] ?? 0) >= CONNS, `NIC 1 pooled ${c1['nic.pool.states']} states`);
  assert.equal(c1['nic.pool.shared-rings'], 0, 'no pooled state holds a shared ring');
  // The next visit reads into them, with the block's rings, and every byte still arrives. A
  // connection quiet at the move (its stream waiting for a core, at load) is taken unbuilt and
  // read at its build, on its next frame or write: waited for, bounded.
  assert.equal((await m.move(keys, nics[0], nics[1])).moved.length, CONNS);
  const by = Date.now() + 30_000;
  for (;;) {
    const read = (await nics[1].counters())['nic.initiate.pooled'] ?? 0;
    if (read >= CONNS) break;
    assert.ok(Date.now() < by, `NIC 1 read ${read} into pooled states within 30 s`);
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal((await m.upload(keys)).moved.length, CONNS);
  stepping = false;
  assert.equal(await st.done, 0, 'every direction of every connection intact');
  assert.deepEqual(st.errors, []);
});
