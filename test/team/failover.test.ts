import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { assertClean, chaosScenario, type Fault, runScenario } from './scenario.ts';

const BASE = { seed: 1, nics: 2, conns: 8, bytes: 300_000, limitMs: 20_000 };

describe('team failover on the simulator', () => {
  test('carrier cut mid-stream: every connection moves to the healthy NIC, prodded', async () => {
    const r = await runScenario({ ...BASE, faults: [{ at: 5, kind: 'cut', nic: 0 }] });
    assertClean(r);
    const [f, ...rest] = r.rig.team.failovers;
    assert.equal(rest.length, 0);
    assert.equal(f?.cause, 'carrier');
    // Counted from the cut, which the switch port reports as it happens (virtual time).
    assert.ok(f !== undefined && f.at >= r.startedAt + 5);
    assert.equal(f.detectMs, f.at - (r.startedAt + 5), 'detection counts from the cut');
    assert.ok((f?.connections ?? 0) > 0, 'the cut NIC carried connections');
    assert.deepEqual(f?.to, ['team.nic1']);
    assert.equal(f?.lost, 0);
    assert.equal(r.rig.nics[1]!.counters.get('tcp.adopt.prodded'), f?.connections);
    assert.ok(r.rig.counters.get('team.garp') >= 1, 'the MAC was announced from the new port');
  });

  test('reachability loss (carrier stays up): detected by ARP probes within interval × misses', async () => {
    const r = await runScenario({ ...BASE, faults: [{ at: 5, kind: 'blackhole', nic: 0 }] });
    assertClean(r);
    const f = r.rig.team.failovers[0];
    assert.equal(f?.cause, 'reachability');
    assert.ok(f !== undefined && f.detectMs > 0 && f.detectMs <= 40, `detected in ${f?.detectMs} ms`);
    assert.ok(r.rig.nics[0]!.linkUp, 'carrier never dropped');
    assert.equal(r.rig.nics[1]!.counters.get('tcp.adopt.prodded'), f?.connections);
  });

  test('on an 802.1Q VLAN: tagged probes find the peer, a blackhole is a reachability failover, a cut a carrier one', async () => {
    const faults: Fault[] = [
      { at: 5, kind: 'blackhole', nic: 0 },
      { at: 60, kind: 'cut', nic: 1 },
      { at: 70, kind: 'unblackhole', nic: 0 },
    ];
    const r = await runScenario({ ...BASE, bytes: 1_500_000, vlan: 100, faults });
    assertClean(r);
    const causes = r.rig.team.failovers.map((f) => `${f.nic}:${f.cause}`);
    // Untagged probes would go unanswered by a peer that only hears VLAN 100: both members
    // would fail for reachability at once, before any fault.
    assert.deepEqual(causes.slice(0, 2), ['team.nic0:reachability', 'team.nic1:carrier'], causes.join(' '));
    assert.ok(r.rig.counters.get('team.probe.reply') > 0, 'the peer answered the tagged probes');
    assert.equal(
      r.rig.peer.stack.counters.get('drop.eth.unknown-vlan'),
      0,
      'every frame the team sent was tagged',
    );
    for (const f of r.rig.team.failovers) assert.equal(f.lost, 0);
  });

  test('all NICs down: the host keeps the connections, then offloads them again when a link returns', async () => {
    const faults: Fault[] = [
      { at: 5, kind: 'cut', nic: 0 },
      { at: 6, kind: 'cut', nic: 1 },
      { at: 150, kind: 'restore', nic: 1 },
    ];
    // Enough data that the streams are still running when the team re-homes them: how soon the
    // host's timers resume after the outage is the TCP engine's business, not this test's.
    const r = await runScenario({ ...BASE, bytes: 1_500_000, faults });
    assertClean(r);
    const fs = r.rig.team.failovers;
    assert.equal(fs.length, 2);
    assert.deepEqual(fs[1]?.to, ['host']);
    assert.equal(fs[1]?.lost, 0);
    assert.ok(r.rig.host.stack.counters.get('tcp.rto') > 0, 'the host retransmitted while no link was up');
    assert.ok(r.rig.counters.get('team.rehomed-from-host') > 0, 'offloaded again after the link came back');
    assert.ok(r.finishedAt - r.startedAt > 150, 'transfers spanned the outage');
  });

  test('a flapping link does not make connections bounce: hysteresis holds them', async () => {
    const faults: Fault[] = [];
    for (let i = 0; i < 80; i++)
      faults.push({ at: 5 + i * 3, kind: i % 2 === 0 ? 'cut' : 'restore', nic: 0 });
    const r = await runScenario({ ...BASE, bytes: 600_000, faults });
    assertClean(r);
    assert.equal(r.rig.team.failovers.length, 1, 'one failover for 40 flaps');
    assert.ok(r.rig.counters.get('team.hold.broken') >= 5, 'each flap during the hold restarted it');
    assert.equal(r.rig.counters.get('team.recovered'), 0, 'never trusted again while flapping');
  });

  test('a flapping link with fail-back: at most one move back per (growing) hold', async () => {
    const faults: Fault[] = [];
    // Bursts of flaps with quiet gaps just over the base hold (100 ms).
    for (let b = 0; b < 4; b++)
      for (let i = 0; i < 6; i++)
        faults.push({ at: 5 + b * 130 + i * 2, kind: i % 2 === 0 ? 'cut' : 'restore', nic: 0 });
    const r = await runScenario({ ...BASE, bytes: 1_500_000, failback: true, faults });
    assertClean(r);
    const fails = r.rig.team.failovers.filter((f) => f.nic === 'team.nic0').length;
    assert.ok(fails <= 2, `nic0 failed over ${fails} times for 4 bursts`);
  });

  test('NIC crash: its connections are rebuilt from hard state on the healthy NIC', async () => {
    const r = await runScenario({ ...BASE, faults: [{ at: 5, kind: 'crash', nic: 0 }] });
    assertClean(r);
    const f = r.rig.team.failovers[0];
    assert.equal(f?.cause, 'dead');
    assert.deepEqual(f?.to, ['team.nic1']);
    assert.equal(r.rig.host.stack.counters.get('offload.rebuilt'), f?.connections);
    assert.equal(r.rig.nics[1]!.counters.get('tcp.adopt.prodded'), f?.connections);
  });

  test('NIC crash under full-duplex load on a slow wire: every rebuilt connection finishes within seconds', async () => {
    // Chaos seed 180 (duplex): one crash while 456 streams crowd a 20 MB/s port. The rebuilt
    // connections used to resend snd.una twice at once and double their 1 s initial RTO before any
    // round trip; with their first resends lost in the crowd, one stream was still stuck at 30 s.
    const sc = chaosScenario(180, { nics: 2, conns: 228, bytes: 6757, loss: 0.005, duplex: true });
    const r = await runScenario(sc);
    assert.deepEqual(
      r.faults.map((f) => [f.kind, f.nic]),
      [['crash', 0]],
      'the seed draws a single crash of nic0',
    );
    assertClean(r);
    const f = r.rig.team.failovers[0];
    assert.equal(f?.cause, 'dead');
    assert.equal(r.rig.host.stack.counters.get('offload.rebuilt'), f?.connections);
    assert.ok(
      r.finishedAt - r.startedAt < 10_000,
      `finished ${r.finishedAt - r.startedAt} ms after the start`,
    );
  });

  test('a corrupt tree on terminate is caught by validation; connections rebuilt from hard state', async () => {
    const faults: Fault[] = [
      { at: 4, kind: 'corrupt', nic: 0 },
      { at: 5, kind: 'cut', nic: 0 },
    ];
    const r = await runScenario({ ...BASE, faults });
    assertClean(r);
    const f = r.rig.team.failovers[0];
    assert.equal(r.rig.host.stack.counters.get('offload.terminate.invalid'), 1);
    assert.equal(r.rig.host.stack.counters.get('offload.rebuilt'), f?.connections);
    assert.deepEqual(f?.to, ['team.nic1']);
    assert.equal(f?.lost, 0);
  });

  test('health() reports each member', async () => {
    const r = await runScenario({ ...BASE, conns: 2, faults: [{ at: 5, kind: 'cut', nic: 0 }] });
    const h = r.rig.host.health();
    assert.equal(h.length, 2);
    assert.equal(h[0]?.health.state, 'down');
    assert.equal(h[1]?.health.state, 'up');
    assert.equal(h[1]?.carriesHost, true);
  });
});
