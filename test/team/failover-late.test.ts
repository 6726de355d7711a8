/**
 * A transfer to a member that is under way when the member fails (the offload policy's, or an
 * operator's) completes after the failover has listed the member's connections. Seen against the
 * kernel: a policy batch of 64 downloads stranded on a member cut from the bridge. The offload
 * manager refuses to settle it there (the team marks the member failed before the failover
 * starts): it ends in the host, and the failover's one list is complete.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { streamBothWays, WORKER_CASE_MS } from '../nic/worker-helpers.ts';
import {
  assertClean,
  BYTES,
  CHUNK,
  CONNS,
  GAP_MS,
  keyOf,
  nextFailover,
  ownersOf,
  setup,
  within,
} from './worker-team-helpers.ts';

describe('team of WorkerNics: a member fails while connections are being offloaded to it', () => {
  // The case's workers start, 50 streams flow both ways and end: 60 s ran out at load 34 (as cases
  // like it did elsewhere, WORKER_CASE_MS).
  test('none of them settles on the failed member; all carry on intact', {
    timeout: WORKER_CASE_MS,
  }, async (t) => {
    const rig = await setup(t, { seed: 41 });
    const nic0 = rig.nics[0]!;
    const st = await streamBothWays(rig.host, rig.peer, CONNS, BYTES, CHUNK, GAP_MS);
    const keys = st.sockets.map(keyOf);
    const failover = nextFailover(rig);
    // The offload is on its way to the worker when the cable is cut: the failover starts at once
    // and lists nic0's connections before the worker's answer has reached the manager, as when a
    // worker held up (busy, as under load) answers late. The answer is held until the failover has
    // come, not for a time: a 300 ms worker stall left the order to the machine, and a main thread
    // starved past it took the answer (a message) before the port's carrier indication (deferred
    // to the next turn), settled there before the member was marked failed, and the failover then
    // moved those 50 off it: correct, but not this case.
    let sent!: () => void;
    let answer!: () => void;
    const posted = new Promise<void>((resolve) => {
      sent = resolve;
    });
    const held = new Promise<void>((resolve) => {
      answer = resolve;
    });
    const initiate = nic0.initiate.bind(nic0);
    nic0.initiate = async (batch, opts) => {
      const reply = initiate(batch, opts);
      sent();
      const res = await reply;
      await held;
      return res;
    };
    const offload = rig.manager.offload(keys, nic0);
    await within(posted, 20_000, 'initiate sent', rig);
    rig.ports[0]!.cut();
    const f = await within(failover, 20_000, 'failover', rig);
    answer();
    const r = await offload;
    assert.equal(f.nic, nic0.id);
    assert.equal(r.moved.length + r.refused.length, keys.length, 'every connection accounted for');
    assert.equal(r.moved.length, 0, 'nothing settled on the failed member');
    for (const x of r.refused) assert.match(x.reason, /failed/);
    assert.equal(rig.stack.counters.get('offload.settle.refused'), keys.length, 'refused at the settle');
    assert.equal(f.connections, 0, 'the failover found nothing to move: its one list was complete');
    assert.equal(nic0.load, 0, 'nothing left on the failed member');
    assert.deepEqual(new Set(ownersOf(rig, st.sockets)), new Set(['host']), 'all run in the host');
    await within(assertClean(rig, st), 60_000, 'streams', rig);
  });
});
