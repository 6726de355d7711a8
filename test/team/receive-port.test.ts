/**
 * One receive port for a team of LocalNics (issue 10 item 6), on the simulator: every member but
 * the one that carries the host's traffic sends from its own (probe) MAC (`Nic.sendFrom`), so the
 * switch learns the team MAC on that port alone and never moves it; and that port sends a learning
 * frame every second, so a switch that ages MACs out keeps the team MAC there even when the port
 * has nothing else to send.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { assertClean, runScenario } from './scenario.ts';

describe('one receive port: a team of LocalNics', () => {
  test('the switch never moves the team MAC while both members send, and the streams arrive whole', async () => {
    let at0 = 0;
    const r = await runScenario({
      seed: 41,
      oneReceivePort: true,
      nics: 2,
      conns: 20,
      bytes: 200_000,
      duplex: true,
      onStart: (x) => {
        at0 = x.net.switch.stats.get('mac.moved');
      },
    });
    const moved = r.rig.net.switch.stats.get('mac.moved') - at0;
    assertClean(r);
    const sent = r.rig.nics.map((n) => n.engine.counters.get('tcp.segments.out'));
    assert.ok(
      sent.every((n) => n > 0),
      `both members sent segments of their connections: ${JSON.stringify(sent)}`,
    );
    // With both members sending from the team MAC the switch moved it at each member's frame.
    assert.equal(moved, 0, 'the switch never moved the team MAC');
    const receiver = r.rig.nics.indexOf(r.rig.team.hostNic as (typeof r.rig.nics)[number]);
    assert.equal(
      r.rig.net.switch.portFor(r.rig.team.mac),
      r.rig.ports[receiver],
      'the switch holds the team MAC on the port that carries the host',
    );
  });

  test("a switch that ages MACs keeps the team MAC on the receiving port: that port's learning frames", async () => {
    let at0 = 0;
    let learnt0 = 0;
    // Every connection runs on member 1; member 0 carries the host's traffic, has no connection of
    // its own, and sends nothing from the team MAC but its learning frames, here one each 50 ms
    // against a switch that ages a MAC out after 150 ms (a Linux bridge's 300 s and bonding's 1 s,
    // scaled to the streams' 330 ms of virtual time).
    const r = await runScenario({
      seed: 43,
      oneReceivePort: true,
      nics: 2,
      conns: 10,
      bytes: 600_000,
      duplex: true,
      macAgeMs: 150,
      learnIntervalMs: 50,
      offloadTo: 1,
      onStart: (x) => {
        assert.equal(x.team.hostNic, x.nics[0], 'member 0 carries the host');
        at0 = x.net.switch.stats.get('mac.aged');
        learnt0 = x.counters.get('team.learn');
      },
    });
    assertClean(r);
    const aged = r.rig.net.switch.stats.get('mac.aged') - at0;
    const span = r.finishedAt - r.startedAt;
    assert.ok(span > 300, `the streams outlasted the ageing twice: ${span} ms`);
    const learnt = r.rig.counters.get('team.learn') - learnt0;
    assert.ok(learnt >= Math.floor(span / 50) - 1, `a learning frame each 50 ms: ${learnt} in ${span} ms`);
    // Without them the team MAC aged out 150 ms after the port's last announcement and every frame
    // to it was flooded to both members (2,599 floods against 71): member 1 took each segment
    // directly and again from the host, which member 0 passed it up to.
    assert.equal(aged, 0, 'no MAC aged out of the switch while the streams ran');
  });
});
