// A file (so a process) of its own: run in one process after the other worker-team tests, this
// test has timed out (not yet understood; alone it passes in a few seconds).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import type { WorkerDeath } from '../../src/nic/worker-nic.ts';
import { assertClean, CONNS, nextFailover, setup, startOffloaded } from './worker-team-helpers.ts';

describe('team of WorkerNics: a wedged member', () => {
  test('a wedged worker (alive, silent) is declared dead by its missing heartbeats and rebuilt elsewhere', {
    timeout: 60_000,
  }, async (t) => {
    const rig = await setup(t, { seed: 25, heartbeatMs: 20, deadAfterMs: 500 });
    const nic0 = rig.nics[0]!;
    const nic1 = rig.nics[1]!;
    const { st } = await startOffloaded(rig, [CONNS, 0]);
    await rig.net.sleep(300);
    const dead = once(nic0, 'dead') as Promise<[WorkerDeath]>;
    const failover = nextFailover(rig);
    const t0 = rig.net.now();
    nic0.stall(5000);
    const [cause] = await dead;
    assert.equal(cause.kind, 'heartbeat');
    assert.ok((cause.silentMs ?? 0) > 500, `silent for ${cause.silentMs} ms`);
    assert.ok(rig.net.now() - t0 < 4000, 'detected well before the stall would have ended');
    const f = await failover;
    assert.equal(f.cause, 'dead');
    assert.equal(f.connections, CONNS);
    assert.deepEqual(f.to, [nic1.id]);
    assert.equal(f.lost, 0);
    assert.equal(rig.stack.counters.get('offload.rebuilt'), CONNS);
    await assertClean(rig, st);
    assert.equal(rig.team.failovers.length, 1);
  });
});
