/**
 * A member the team takes for dead while its engine runs (declareDead) is stopped before its port
 * is reused (threadGone for a worker; the simulated members crash their engine): for the host's
 * own wire when no member is left, or for its restart. The failover moves its connections off
 * first, with their soft state; stopped before that, they would be rebuilt from hard state.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { RestartRecord } from '../../src/team/team.ts';
import { assertClean, runScenario, type ScenarioOptions, type ScenarioResult } from './scenario.ts';

const declaredAt5: Pick<ScenarioOptions, 'onStart'> = {
  onStart: (rig, t0) => {
    const t = rig.net.clock.createTimer(() => rig.team.declareDead(rig.nics[0]!, 'declared dead by a test'));
    t.armAt(t0 + 5);
  },
};

/** One failover took all 20 off the member with their soft state. */
function movedNotRebuilt(r: ScenarioResult): void {
  assertClean(r);
  const [f] = r.rig.team.failovers;
  assert.equal(r.rig.team.failovers.length, 1);
  assert.equal(f!.connections, 20);
  assert.equal(f!.lost, 0);
  // Before: the engine was stopped before the failover ran, which rebuilt all 20 from hard state.
  assert.equal(
    r.rig.host.stack.counters.get('offload.rebuilt'),
    0,
    'moved with their soft state, not rebuilt',
  );
}

describe('a live member declared dead, then stopped for its port', () => {
  test('the host takes its port once every connection moved off it, none rebuilt', async () => {
    const r = await runScenario({
      seed: 31,
      nics: 1,
      conns: 20,
      bytes: 200_000,
      offloadTo: 0,
      hostPorts: true,
      limitMs: 20_000,
      ...declaredAt5,
    });
    movedNotRebuilt(r);
    assert.notEqual(r.rig.nics[0]!.death, null, 'stopped once they were off it');
    assert.equal(r.rig.counters.get('team.dead-port-opened'), 1);
  });

  test('its restart stops it only after the failover, and the new engine takes its place', async () => {
    const restarts: RestartRecord[] = [];
    const r = await runScenario({
      seed: 32,
      nics: 2,
      conns: 20,
      bytes: 200_000,
      offloadTo: 0,
      restart: { firstDelayMs: 0 },
      limitMs: 20_000,
      ...declaredAt5,
      onRig: (rig) => rig.team.on('restart', (rec: RestartRecord) => restarts.push(rec)),
    });
    movedNotRebuilt(r);
    assert.deepEqual(
      restarts.map((x) => [x.nic, x.ok]),
      [['team.nic0', true]],
      'restarted once',
    );
    assert.equal(r.rig.nics[0]!.death, null, "the member's NIC now is the new one");
  });
});
