/**
 * A crashed member started again (TeamMember.restart, as `serve --workers` restarts a dead
 * worker on its TAP): after its backoff it comes back through its hold, with failback the streams
 * the failover moved off it go back, and one that keeps dying is restarted with a doubling delay
 * up to its limit, then stays dead. Against the kernel: test/tap/team.test.ts ("restarted").
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import type { RestartRecord } from '../../src/team/team.ts';
import { assertClean, runScenario } from './scenario.ts';

describe('a crashed member restarted', () => {
  test('it comes back after its backoff and, with failback, takes its streams back', async () => {
    const restarts: RestartRecord[] = [];
    const r = await runScenario({
      seed: 21,
      nics: 2,
      conns: 20,
      bytes: 3_000_000,
      offloadTo: 0,
      failback: true,
      restart: { firstDelayMs: 50 },
      faults: [{ at: 5, kind: 'crash', nic: 0 }],
      limitMs: 20_000,
      onRig: (rig) => rig.team.on('restart', (rec: RestartRecord) => restarts.push(rec)),
    });
    assertClean(r);
    const c = r.rig.counters;
    const [f] = r.rig.team.failovers;
    assert.equal(r.rig.team.failovers.length, 1);
    assert.ok(f!.connections > 0 && f!.lost === 0, 'the crash took streams in flight with it, none lost');
    assert.deepEqual(
      restarts.map((x) => [x.nic, x.attempt, x.delayMs, x.ok]),
      [['team.nic0', 1, 50, true]],
      'restarted once, after the first delay',
    );
    // Virtual milliseconds as floats: the timer fires at the death plus the delay, to rounding.
    assert.ok(restarts[0]!.at - f!.at > 49.999, `not before the backoff: ${restarts[0]!.at - f!.at} ms`);
    const h = r.rig.team.health();
    assert.equal(h[0]!.health.state, 'up', 'the restarted member is usable');
    assert.equal(h[0]!.restarts, 1);
    assert.notEqual(r.rig.nics[0], undefined);
    assert.equal(r.rig.nics[0]!.death, null, "the member's NIC now is the new one");
    assert.equal(c.get('team.failback'), f!.connections, 'every stream moved off it went back');
    assert.equal(c.get('team.restart'), 1);
  });

  test('one that keeps dying: the delay doubles to its cap, and past the limit it stays dead', async () => {
    const restarts: RestartRecord[] = [];
    const limits: { nic: string; restarts: number }[] = [];
    const r = await runScenario({
      seed: 22,
      nics: 2,
      conns: 20,
      bytes: 3_000_000,
      offloadTo: 0,
      restart: { limit: 3, firstDelayMs: 20, maxDelayMs: 50, stableMs: 10_000 },
      faults: [{ at: 5, kind: 'crash', nic: 0 }],
      limitMs: 20_000,
      onRig: (rig) => {
        rig.team.on('restart-limit', (ev: { nic: string; restarts: number }) => limits.push(ev));
        // Each new NIC crashes soon after it joins, before it ran stableMs.
        rig.team.on('restart', (rec: RestartRecord) => {
          restarts.push(rec);
          const t = rig.net.clock.createTimer(() => rig.nics[0]!.crash('crashed again'));
          t.arm(10);
        });
      },
    });
    assertClean(r);
    assert.deepEqual(
      restarts.map((x) => [x.attempt, x.delayMs, x.ok]),
      [
        [1, 20, true],
        [2, 40, true],
        [3, 50, true],
      ],
      'doubling from 20 ms to the 50 ms cap',
    );
    assert.deepEqual(
      limits.map((x) => [x.nic, x.restarts]),
      [['team.nic0', 3]],
      'then it stays dead',
    );
    assert.equal(r.rig.team.health()[0]!.health.state, 'dead');
    assert.equal(r.rig.counters.get('team.restart.gave-up'), 1);
    assert.equal(
      r.rig.team.failovers.reduce((n, f) => n + f.lost, 0),
      0,
      'nothing lost through four deaths',
    );
  });

  test('a member that keeps dying leaves no dead NIC behind in the host', async () => {
    const dead: LocalNic[] = [];
    const r = await runScenario({
      seed: 23,
      nics: 2,
      conns: 20,
      bytes: 3_000_000,
      offloadTo: 0,
      restart: { limit: 8, firstDelayMs: 20, maxDelayMs: 20, stableMs: 10_000 },
      faults: [{ at: 5, kind: 'crash', nic: 0 }],
      limitMs: 20_000,
      onRig: (rig) => {
        rig.team.on('failure', () => dead.push(rig.nics[0]!));
        rig.team.on('restart', () => {
          const t = rig.net.clock.createTimer(() => rig.nics[0]!.crash('crashed again'));
          t.arm(10);
        });
      },
    });
    assertClean(r);
    assert.equal(r.rig.counters.get('team.restart'), 8, 'restarted up to its limit');
    assert.equal(new Set(dead).size, 9, 'nine NICs died in the member');
    // Before: the manager listed every one of them (11 NICs), each hooked and answering for ever.
    assert.equal(r.rig.manager.nics.length, 2, 'the manager lists the two members only');
    // The last stays the member's NIC, dead past the limit; the eight before it were replaced.
    assert.equal(dead.at(-1), r.rig.nics[0]);
    for (const nic of dead.slice(0, -1)) {
      assert.ok(!r.rig.manager.nics.includes(nic), `${nic.id} left the manager's list`);
      assert.equal(nic.listenerCount('upload-requested'), 0, "the manager's hooks left it");
    }
  });
});
