import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { Counters } from '../../src/core/counters.ts';
import type { Link } from '../../src/core/link.ts';
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
import { ARP_LENGTH, ArpOp, createArpPacket, decodeArp, encodeArp } from '../../src/wire/arp.ts';
import { createEthernetHeader, EtherType, encodeEthernet } from '../../src/wire/ethernet.ts';

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
  const { health, events, recovered } = watch(clock, tap, counters, opts, port.carrier);
  tap.onCarrier((up) => health.carrier(up));
  return { clock, sw, port, gwPort, tap, health, events, recovered, counters, passed };
}

/** NicHealth of port nic0 probing GW through `tap`, with the failures and recoveries it reports. */
function watch(
  clock: VirtualClock,
  tap: ProbeTap,
  counters: Counters,
  opts: HealthOptions,
  carrier: boolean,
) {
  const events: FailureEvent[] = [];
  const recovered: number[] = [];
  const health = new NicHealth(
    'nic0',
    clock,
    resolveHealthOptions({ probeTargets: [GW], ...opts }),
    { failed: (e) => events.push(e), recovered: (_n, at) => recovered.push(at) },
    counters,
    tap,
    carrier,
  );
  return { health, events, recovered };
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

const GW_MAC = 0x02_00_00_00_00_fe;
const PROBE_MAC = 0x02_00_00_00_10_01;

/**
 * A port whose reader runs `lagMs` behind the wire, as a worker busy with a thousand connections
 * does: a frame is read lagMs after it arrived, and the queue is read empty (a drain) only when
 * nothing that arrived is left. The path beyond it carries traffic (a frame a millisecond) and
 * answers ARP probes while `path` is true.
 */
class BacklogPort implements Link {
  readonly name = 'nic0';
  readonly mtu = 1500;
  readonly carrier = true;
  path = true;
  lagMs: number;
  answers = true;
  /** The reader runs once every this many ms (0: all the time), as a thread off-CPU in between. */
  burstMs = 0;
  /** Every this many probe replies, one is lost (a full queue dropped it; 0: none). */
  dropEvery = 0;
  private replies = 0;
  drains = 0;
  rx = 0;
  drainedAt = 0;
  rxSince = 0;
  private readonly queue: { at: number; frame: Uint8Array }[] = [];
  private handler: ((f: Uint8Array) => void) | null = null;
  private readonly arp = createArpPacket();
  private readonly data = new Uint8Array(60);

  constructor(
    private readonly clock: VirtualClock,
    lagMs: number,
  ) {
    this.lagMs = lagMs;
    this.data[12] = 0x08; // IPv4, for another MAC: passes through the tap untouched
    const traffic = clock.createTimer(() => {
      if (this.path) this.queue.push({ at: clock.now(), frame: this.data });
      traffic.arm(1);
    });
    traffic.arm(1);
    const reader = clock.createTimer(() => {
      this.read();
      reader.arm(0.5);
    });
    reader.arm(0.5);
  }

  get empty(): boolean {
    return this.queue.length === 0;
  }

  private read(): void {
    const now = this.clock.now();
    if (this.burstMs > 0 && now % this.burstMs >= 0.5) return;
    while (this.queue.length > 0 && this.queue[0]!.at <= now - this.lagMs) {
      const f = this.queue.shift()!;
      this.rxSince = this.drainedAt;
      this.rx++;
      this.handler?.(f.frame);
    }
    if (this.queue.length === 0) {
      this.drains++;
      this.drainedAt = now;
    }
  }

  send(frame: Uint8Array): boolean {
    if (!this.path || !this.answers || frame.length < 14 + ARP_LENGTH) return true;
    const a = this.arp;
    if (decodeArp(frame, 14, ARP_LENGTH, a) !== null || a.op !== ArpOp.REQUEST || a.targetIp !== GW)
      return true;
    if (this.dropEvery > 0 && ++this.replies % this.dropEvery === 0) return true;
    const reply = new Uint8Array(14 + ARP_LENGTH);
    const h = createEthernetHeader();
    h.dst = a.senderMac;
    h.src = GW_MAC;
    h.etherType = EtherType.ARP;
    encodeEthernet(h, reply, 0);
    encodeArp(
      { op: ArpOp.REPLY, senderMac: GW_MAC, senderIp: GW, targetMac: a.senderMac, targetIp: 0 },
      reply,
      14,
    );
    this.queue.push({ at: this.clock.now() + 0.2, frame: reply });
    return true;
  }
  onFrame(handler: (f: Uint8Array) => void): void {
    this.handler = handler;
  }
  onCarrier(): void {}
  close(): void {}
}

function backlogRig(lagMs: number, opts: HealthOptions = {}) {
  const clock = new VirtualClock();
  const port = new BacklogPort(clock, lagMs);
  const counters = new Counters();
  const tap = new ProbeTap(port, PROBE_MAC, counters, {
    rxFrames: () => port.rx,
    readState: () => ({ drains: port.drains, empty: port.empty, drainedAt: port.drainedAt }),
    rxSince: () => port.rxSince,
  });
  return { clock, port, ...watch(clock, tap, counters, opts, true) };
}

// Defaults: 10 ms × 3 misses.
const BOUND = 10 * 3 + 10;

describe('NicHealth: evidence read late is dated when it could have come', () => {
  test('frames queued before the fault and read after it do not delay detection', () => {
    // The reader is 25 ms behind: for 25 ms after the cut it still reads traffic and probe replies
    // that came before it. They prove the link worked before the cut, nothing after.
    const r = backlogRig(25);
    r.clock.advance(1003);
    assert.equal(r.events.length, 0, 'a working link behind a lagging reader stays up');
    const cutAt = r.clock.now();
    r.port.path = false;
    r.clock.advance(500);
    assert.equal(r.events.length, 1);
    const ev = r.events[0]!;
    assert.equal(ev.cause, 'reachability');
    assert.ok(ev.at - cutAt <= BOUND, `detected ${ev.at - cutAt} ms after the cut (bound ${BOUND})`);
    assert.ok(ev.since <= cutAt, `last evidence dated ${ev.since - cutAt} ms after the cut`);
    assert.equal(r.health.snapshot().reachable, false);
  });

  test('a lagging reader, probe replies unanswered, traffic only: stays reachable', () => {
    const r = backlogRig(25);
    r.port.answers = false;
    r.clock.advance(2000);
    assert.equal(r.events.length, 0, r.events[0]?.detail);
  });

  test('a reader off-CPU most of the time, probe replies lost now and then: no false failure', () => {
    // Read in bursts every 45 ms: frames come dated by the burst before, and one reply in three is
    // lost, so replies matched in order are dated rounds too early. Only traffic read after a drain
    // brings the evidence forward; the port is never quiet, so no backlog of rounds is judged.
    const r = backlogRig(0);
    r.port.burstMs = 45;
    r.port.dropEvery = 3;
    r.clock.advance(3000);
    assert.equal(r.events.length, 0, r.events[0]?.detail);
  });

  test('traffic read promptly keeps the link reachable without probe replies, and its loss is seen in time', () => {
    const r = backlogRig(0);
    r.port.answers = false;
    r.clock.advance(2003);
    assert.equal(r.events.length, 0, r.events[0]?.detail);
    const cutAt = r.clock.now();
    r.port.path = false;
    r.clock.advance(200);
    assert.equal(r.events.length, 1);
    assert.ok(r.events[0]!.at - cutAt <= BOUND, `detected ${r.events[0]!.at - cutAt} ms after the cut`);
  });

  test('the link back: fresh evidence restores it after the hold', () => {
    const r = backlogRig(25, { holdMs: 100 });
    r.clock.advance(1003);
    r.port.path = false;
    r.clock.advance(300);
    assert.equal(r.events.length, 1);
    const backAt = r.clock.now();
    r.port.path = true;
    r.clock.advance(400);
    assert.equal(r.recovered.length, 1);
    assert.ok(r.recovered[0]! - backAt >= 100, 'not before its hold');
    assert.equal(r.events.length, 1, 'no flap');
  });
});
