/**
 * Connections a reachability failover left in the host, because every member's probes went
 * unanswered, are offloaded again once a member has sat out its hold. The host has run them on
 * that member's port since it came back (or all along, when the failure was false), so the
 * re-homing moves them as any planned move does: no prod, nothing resent. At 10,000 connections
 * in bench/failover.ts (uncharged) both members failed at once, the survivor's probe replies
 * dropped at the tail of the peer's queue behind the streams, and the re-homing's prods were
 * 8,358 of the hand-over turns' 18,358 frames: a resend of each head in flight, or a pure ACK.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { assertClean, runScenario } from './scenario.ts';

describe('re-homing after every member failed', () => {
  test('connections the host kept go back to the recovered member without a prod', async () => {
    let proddedAtRecovery = -1;
    const r = await runScenario({
      seed: 3,
      nics: 2,
      conns: 20,
      bytes: 200_000,
      offloadTo: 0,
      faults: [
        { at: 5, kind: 'blackhole', nic: 0 },
        { at: 5, kind: 'blackhole', nic: 1 },
        { at: 60, kind: 'unblackhole', nic: 1 },
      ],
      limitMs: 20_000,
      onRig: (rig) => {
        rig.team.on('recovered', (ev: { nic: string }) => {
          if (ev.nic === 'team.nic1' && proddedAtRecovery < 0)
            proddedAtRecovery = rig.nics[1]!.counters.get('tcp.adopt.prodded');
        });
      },
    });
    assertClean(r);
    const c = r.rig.counters;
    assert.ok(c.get('team.rehomed-from-host') > 0, 'offloaded again after the member recovered');
    assert.ok(proddedAtRecovery >= 0, 'nic1 recovered');
    assert.equal(
      r.rig.nics[1]!.counters.get('tcp.adopt.prodded'),
      proddedAtRecovery,
      'nothing prodded by the re-homing',
    );
  });
});
