/**
 * A transfer to a member that is under way when the member fails (the offload policy's, or an
 * operator's) completes after the failover has listed the member's connections: the failover
 * must look again, or those connections stay on the failed member until their peers give up.
 * Seen against the kernel: a policy batch of 64 downloads stranded on a member cut from the bridge.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { streamBothWays } from '../nic/worker-helpers.ts';
import {
  assertClean,
  BYTES,
  CHUNK,
  CONNS,
  GAP_MS,
  keyOf,
  nextFailover,
  setup,
  within,
} from './worker-team-helpers.ts';

describe('team of WorkerNics: a member fails while connections are being offloaded to it', () => {
  test('those that land there after the failure are moved off too', { timeout: 60_000 }, async (t) => {
    const rig = await setup(t, { seed: 41 });
    const nic0 = rig.nics[0]!;
    const st = await streamBothWays(rig.host, rig.peer, CONNS, BYTES, CHUNK, GAP_MS);
    const keys = st.sockets.map(keyOf);
    const failover = nextFailover(rig);
    // The offload is on its way to the worker when the cable is cut: the failover starts at once
    // and lists nic0's connections before the worker has installed these.
    // A worker held up for a moment (busy, as under load) answers the initiate only after that.
    nic0.stall(300);
    const offload = rig.manager.offload(keys, nic0);
    rig.ports[0]!.cut();
    const f = await within(failover, 20_000, 'failover', rig);
    const r = await offload;
    assert.equal(f.nic, nic0.id);
    assert.equal(r.moved.length, keys.length, 'the offload itself went through');
    assert.equal(f.connections, keys.length, 'the failover moved every one of them, late or not');
    assert.ok(rig.counters.get('team.failover.late') > 0, 'some arrived after the first list');
    assert.equal(nic0.load, 0, 'nothing left on the failed member');
    await within(assertClean(rig, st), 30_000, 'streams', rig);
  });
});
