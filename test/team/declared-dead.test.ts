/**
 * A member the team takes for dead while its NIC does not know itself dead (the team's own
 * heartbeat timeout, `declareDead`): a live NIC hands out none of the connections it runs for
 * salvage, so the failover must move them off, not rebuild them from salvage (which lost every one).
 */
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { describe, test } from 'node:test';
import {
  assertClean,
  nextFailover,
  ownersOf,
  setup,
  startOffloaded,
  type WorkerTeamRig,
  within,
} from './worker-team-helpers.ts';

const N = 6;

/** N connections streaming on the first member, declared dead by its team after `before` ran. */
async function declared(t: TestContext, seed: number, before: (rig: WorkerTeamRig) => void) {
  const rig = await setup(t, { seed });
  const { st } = await startOffloaded(rig, [N, 0]);
  before(rig);
  const failover = nextFailover(rig);
  rig.team.declareDead(rig.nics[0]!, 'declared dead by a test');
  return { rig, st, failover };
}

/** None lost: every byte arrived both ways, and every open connection runs on the other member. */
async function noneLost({ rig, st, failover }: Awaited<ReturnType<typeof declared>>) {
  const f = await within(failover, 60_000, 'failover', rig);
  assert.equal(f.cause, 'dead');
  assert.equal(f.connections, N);
  assert.equal(f.lost, 0, JSON.stringify(f));
  assert.equal(rig.nics[0]!.load, 0, 'nothing left on the declared member');
  await within(assertClean(rig, st), 60_000, 'streams', rig);
  const nic1 = rig.nics[1]!;
  assert.deepEqual(
    ownersOf(rig, st.sockets).filter((o) => o !== null && o !== nic1),
    [],
    'every open connection runs on the other member',
  );
  return f;
}

describe('a WorkerNic its team declares dead', () => {
  test('while its worker runs: every connection moved to the other member, none lost', {
    timeout: 120_000,
  }, async (t) => {
    const d = await declared(t, 43, () => {});
    const f = await noneLost(d);
    const rig = d.rig;
    assert.equal(rig.nics[0]!.death, null, 'its worker still runs');
    assert.deepEqual(f.to, [rig.nics[1]!.id]);
  });

  test('while its worker is wedged, then killed: rebuilt from what it left, none lost', {
    timeout: 120_000,
  }, async (t) => {
    // Wedged, the worker answers no move; killed, it leaves its connections for salvage.
    const d = await declared(t, 44, (r) => r.nics[0]!.stall(60_000));
    await d.rig.nics[0]!.kill();
    await noneLost(d);
    assert.notEqual(d.rig.nics[0]!.death, null);
  });
});
