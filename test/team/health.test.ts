import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { Counters } from '../../src/core/counters.ts';
import { SeededRandom } from '../../src/core/random.ts';
import { MemorySwitch, type SwitchPort } from '../../src/link/memory-switch.ts';
import { Stack } from '../../src/stack/stack.ts';
import {
  type FailureEvent,
  type HealthOptions,
  NicHealth,
  resolveHealthOptions,
} from '../../src/team/health.ts';
import { ProbeTap } from '../../src/team/probe-tap.ts';
import { parseIpv4 } from '../../src/wire/addr.ts';

const GW = parseIpv4('10.0.0.254');

function rig(opts: HealthOptions = {}) {
  const clock = new VirtualClock();
  const random = new SeededRandom(7);
  const sw = new MemorySwitch({ clock, random: random.fork() });
  const gwPort = sw.addPort({ name: 'gw' });
  const gw = new Stack({ clock, random: random.fork(), name: 'gw' });
  gw.addInterface(gwPort, { mac: '02:00:00:00:00:fe', ip: '10.0.0.254/24' });
  const port: SwitchPort = sw.addPort({ name: 'nic0' });
  const counters = new Counters();
  const tap = new ProbeTap(port, 0x02_00_00_00_10_01, counters);
  const passed: Uint8Array[] = [];
  tap.onFrame((f) => passed.push(f.slice()));
  const events: FailureEvent[] = [];
  const recovered: number[] = [];
  const health = new NicHealth(
    'nic0',
    clock,
    resolveHealthOptions({ probeTargets: [GW], ...opts }),
    { failed: (e) => events.push(e), recovered: (_n, at) => recovered.push(at) },
    counters,
    tap,
    port.carrier,
  );
  tap.onCarrier((up) => health.carrier(up));
  return { clock, sw, port, gwPort, tap, health, events, recovered, counters, passed };
}

describe('NicHealth', () => {
  test("a death by silence is dated from the NIC's own last sign of life when it gives one", () => {
    const r = rig();
    r.health.heartbeat();
    r.clock.advance(1000);
    // The worker made progress until 400 ms ago, though its last heartbeat message is 1000 ms old.
    r.health.dead('no heartbeat for 400 ms', false, r.clock.now() - 400);
    assert.equal(r.events.length, 1);
    assert.equal(r.events[0]!.at - r.events[0]!.since, 400);
    const q = rig();
    q.health.heartbeat();
    q.clock.advance(1000);
    q.health.dead('no heartbeat');
    assert.equal(q.events[0]!.at - q.events[0]!.since, 1000, 'without one, from the last heartbeat');
  });

  test('a gray failure: down at once, quarantined, then held like any recovery', () => {
    const r = rig({ holdMs: 100, grayQuarantineMs: 1000 });
    r.clock.advance(50);
    assert.equal(r.health.probeReplyMac(GW), 0x02_00_00_00_00_fe, 'the probe reply came from the gateway');
    r.health.gray('progress', '2 of 2 stalled', 10);
    assert.equal(r.health.state, 'down');
    assert.equal(r.events.length, 1);
    assert.equal(r.events[0]!.cause, 'progress');
    assert.equal(r.events[0]!.since, 10);
    assert.equal(r.counters.get('team.fail.progress'), 1);
    r.health.gray('mac-mismatch', 'again', 20);
    assert.equal(r.events.length, 1, 'a member already down is not failed twice');
    // The probes keep being answered: only the quarantine ends it.
    r.clock.advance(990);
    assert.equal(r.health.state, 'down');
    r.clock.advance(20);
    assert.equal(r.health.state, 'holding');
    r.clock.advance(100);
    assert.equal(r.health.state, 'up');
    assert.equal(r.recovered.length, 1);
  });

  test('progress watch options are checked', () => {
    assert.throws(() => resolveHealthOptions({ stallFraction: 1.5 }), /stallFraction/);
    assert.throws(() => resolveHealthOptions({ progressWindows: 1.5 }), /integers/);
    assert.throws(() => resolveHealthOptions({ progressWindowMs: -1 }), /progressWindowMs/);
    const o = resolveHealthOptions({ progressWindowMs: 50 });
    assert.equal(o.stallMs, 250, 'the stall defaults to five windows');
  });

  test('carrier loss is detected at once, recovery waits for the hold', () => {
    const r = rig({ holdMs: 100 });
    r.clock.advance(50);
    assert.equal(r.health.state, 'up');
    r.port.cut();
    r.clock.advance(0);
    assert.equal(r.events.length, 1);
    assert.equal(r.events[0]!.cause, 'carrier');
    assert.equal(r.events[0]!.at, 50);
    assert.equal(r.health.state, 'down');
    r.clock.advance(20);
    r.port.restore();
    r.clock.advance(30);
    assert.equal(r.health.state, 'holding');
    r.clock.advance(200);
    assert.equal(r.health.state, 'up');
    assert.equal(r.recovered.length, 1);
    assert.ok(r.recovered[0]! >= 170, `recovered at ${r.recovered[0]}`);
  });

  test('probes are answered and consumed; a healthy link stays up', () => {
    const r = rig();
    r.clock.advance(500);
    assert.equal(r.health.state, 'up');
    assert.equal(r.events.length, 0);
    assert.ok(r.counters.get('team.probe.reply') >= 40, `replies ${r.counters.get('team.probe.reply')}`);
    // Replies to the probe MAC never reach the NIC behind the tap.
    assert.equal(r.passed.filter((f) => f[12] === 0x08 && f[13] === 0x06 && f[21] === 2).length, 0);
  });

  test('reachability: a blackholed port fails after interval x misses', () => {
    const r = rig({ probeIntervalMs: 10, probeMisses: 3 });
    r.clock.advance(100);
    r.port.blackhole(true);
    const cutAt = r.clock.now();
    r.clock.advance(100);
    assert.equal(r.events.length, 1);
    const ev = r.events[0]!;
    assert.equal(ev.cause, 'reachability');
    const detect = ev.at - cutAt;
    assert.ok(detect >= 20 && detect <= 50, `detected after ${detect} ms`);
    assert.equal(r.port.carrier, true);
  });

  test('reachability: fewer misses than the limit do not fail the link', () => {
    const r = rig({ probeIntervalMs: 10, probeMisses: 3 });
    r.clock.advance(100);
    for (let i = 0; i < 10; i++) {
      r.port.blackhole(true);
      r.clock.advance(15);
      r.port.blackhole(false);
      r.clock.advance(20);
    }
    assert.equal(r.events.length, 0);
    assert.equal(r.health.state, 'up');
  });

  test('after a reachability failure, replies bring it back only after the hold', () => {
    const r = rig({ holdMs: 100 });
    r.clock.advance(50);
    r.port.blackhole(true);
    r.clock.advance(100);
    assert.equal(r.health.state, 'down');
    r.port.blackhole(false);
    r.clock.advance(20);
    assert.equal(r.health.state, 'holding');
    r.clock.advance(100);
    assert.equal(r.health.state, 'up');
  });

  test('flapping: holds grow, so failures are bounded however fast the link flaps', () => {
    const r = rig({ holdMs: 50, maxHoldMs: 1000 });
    r.clock.advance(10);
    // Down and up every 3 ms for 3 s.
    for (let t = 0; t < 3000; t += 6) {
      r.port.cut();
      r.clock.advance(3);
      r.port.restore();
      r.clock.advance(3);
    }
    // Each failure that counts needs the NIC up, which needs an unbroken hold: none can pass while
    // the link flaps every 3 ms.
    assert.equal(r.events.length, 1);
    assert.equal(r.recovered.length, 0);
    assert.equal(r.health.snapshot().holdMs, 1000);
    r.clock.advance(2000);
    assert.equal(r.health.state, 'up');
  });

  test('slow flapping: each recovery is followed by a longer hold', () => {
    const r = rig({ holdMs: 50, maxHoldMs: 800, flapDecayMs: 10_000 });
    const holds: number[] = [];
    for (let i = 0; i < 6; i++) {
      r.clock.advance(5);
      r.port.cut();
      r.clock.advance(1);
      holds.push(r.health.snapshot().holdMs);
      r.port.restore();
      r.clock.advance(2000);
    }
    assert.deepEqual(holds, [50, 100, 200, 400, 800, 800]);
    assert.equal(r.events.length, 6);
  });

  test('heartbeats: a NIC that stops beating is declared dead, once, for good', () => {
    const r = rig({ heartbeatTimeoutMs: 30 });
    for (let i = 0; i < 10; i++) {
      r.health.heartbeat();
      r.clock.advance(10);
    }
    assert.equal(r.events.length, 0);
    r.clock.advance(40);
    assert.equal(r.events.length, 1);
    assert.equal(r.events[0]!.cause, 'dead');
    assert.match(r.events[0]!.detail, /heartbeat/);
    r.health.heartbeat();
    r.port.cut();
    r.clock.advance(100);
    assert.equal(r.health.state, 'dead');
    assert.equal(r.events.length, 1);
  });

  test('bad options are refused with a typed error', () => {
    assert.throws(() => resolveHealthOptions({ probeIntervalMs: 0 }), { code: 'ERR_CHIMNEY_INVALID_ARG' });
    assert.throws(() => resolveHealthOptions({ probeMisses: 1.5 }), { code: 'ERR_CHIMNEY_INVALID_ARG' });
    assert.throws(() => resolveHealthOptions({ probeTargets: [-1] }), { code: 'ERR_CHIMNEY_INVALID_ARG' });
  });
});
