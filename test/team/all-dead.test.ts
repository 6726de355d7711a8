/**
 * Every member of a team dead while their ports still work: the connections rebuilt in the host
 * from the last member's hard state go on through the host's own link on a dead member's port
 * (TeamMember.hostPortAfterDeath, as `serve --workers` opens a dead worker's TAP). Without it the
 * host had no wire at all: every stream stalled until the scenario's limit. Against the kernel:
 * test/tap/team.test.ts ("every member dead").
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { assertClean, type Fault, runScenario, type ScenarioResult } from './scenario.ts';

/** Streams offloaded to member 0 of two whose ports go to the host once dead, through `faults`. */
async function run(seed: number, faults: Fault[]): Promise<{ r: ScenarioResult; ports: string[] }> {
  const ports: string[] = [];
  const r = await runScenario({
    seed,
    nics: 2,
    conns: 20,
    bytes: 300_000,
    offloadTo: 0,
    hostPorts: true,
    faults,
    limitMs: 20_000,
    onRig: (rig) => rig.team.on('host-port', (ev: { nic: string }) => ports.push(ev.nic)),
  });
  assertClean(r);
  return { r, ports };
}

describe('every member of a team dead', () => {
  test('both members crash one after the other: the host carries every stream on a dead port', async () => {
    const { r, ports } = await run(11, [
      { at: 5, kind: 'crash', nic: 0 },
      { at: 15, kind: 'crash', nic: 1 },
    ]);
    const c = r.rig.counters;
    const [first, second] = r.rig.team.failovers;
    assert.equal(r.rig.team.failovers.length, 2, 'both members failed over');
    assert.ok(first!.connections > 0 && second!.connections > 0, 'each took streams in flight with it');
    assert.deepEqual(second!.to, ['host'], 'the last one rebuilt them in the host');
    assert.equal(first!.lost + second!.lost, 0, 'nothing lost');
    // Both ports open at the second death, nic0's asked first: the host's traffic takes it.
    assert.deepEqual(ports, ['team.nic0'], 'the host went onto the first dead member port');
    assert.equal(c.get('team.dead-port-opened'), 2, 'both dead ports opened, each once');
    assert.deepEqual(
      r.rig.team.health().map((h) => h.health.state),
      ['dead', 'dead'],
      'the members stay dead',
    );
    assert.ok(r.rig.team.health()[0]!.carriesHost, 'the host traffic is on the first port');
  });

  test("the dead port in use loses carrier: the host goes on through the other dead member's port", async () => {
    const { r, ports } = await run(12, [
      { at: 5, kind: 'crash', nic: 0 },
      { at: 15, kind: 'crash', nic: 1 },
      { at: 25, kind: 'cut', nic: 0 },
    ]);
    assert.deepEqual(ports, ['team.nic0', 'team.nic1'], 'from the first dead port to the second');
    assert.ok(r.rig.team.health()[1]!.carriesHost, 'the host traffic is on the second port');
  });

  test('a member that only lost its link comes back: the host traffic and its connections go to it', async () => {
    const { r, ports } = await run(13, [
      { at: 5, kind: 'cut', nic: 1 },
      { at: 10, kind: 'crash', nic: 0 },
      { at: 40, kind: 'restore', nic: 1 },
    ]);
    const c = r.rig.counters;
    assert.deepEqual(ports, ['team.nic0'], 'the host carried on through the dead member port meanwhile');
    assert.ok(c.get('team.rehomed-from-host') > 0, 'the connections the host kept went to the member back');
    const h = r.rig.team.health();
    assert.equal(h[1]!.health.state, 'up');
    assert.ok(h[1]!.carriesHost, 'the host traffic left the dead port for the member back');
  });
});
