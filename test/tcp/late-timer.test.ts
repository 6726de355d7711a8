/**
 * A thread kept from running wakes to its expired timers before the input that waited meanwhile
 * (Node runs timers, then polls for I/O). A loss timer that fires late lets that input go first:
 * the ACK that arrived while the thread was away makes the timeout moot, and nothing is resent.
 * Where that input can be read on demand (a TAP's queue), the timer reads it first instead.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { Counters } from '../../src/core/counters.ts';
import { SeededRandom } from '../../src/core/random.ts';
import type { Link } from '../../src/link/link.ts';
import { MemorySwitch } from '../../src/link/memory-switch.ts';
import { capture, PcapWriter } from '../../src/link/pcap.ts';
import { NicEngine } from '../../src/nic/nic-engine.ts';
import { Stack } from '../../src/stack/stack.ts';
import { LATE_TIMER_MS } from '../../src/stack/tcp/tcp-timers.ts';
import { ProbeTap } from '../../src/team/probe-tap.ts';
import { ACK, activeOpen, add, Bench, bytes, LOCAL, REMOTE } from './harness.ts';

/** Two segments in flight, and the peer's ACK of both (not yet delivered). */
function twoInFlight() {
  const b = new Bench();
  const o = activeOpen(b, { ts: [5000, 1001], sackPermitted: true, wscale: 7 }, undefined, 5);
  o.conn.write(bytes(2 * 1448));
  const sent = b.take().filter((x) => x.data.length > 0);
  assert.equal(sent.length, 2);
  const d = o.conn.state.delegated;
  const top = d.sndMax;
  const ack = {
    flags: ACK,
    seq: o.peerSeq,
    ack: top,
    window: 500,
    srcPort: 80,
    dstPort: o.conn.localPort,
    ts: [5010, sent.at(-1)!.h.tsVal] as [number, number],
  };
  // The first loss deadline is the tail probe's.
  assert.equal(o.conn.timerTarget, o.conn.state.soft.tlpDeadline);
  return { b, o, sent, d, top, ack };
}

function busyThenAcked(lateMs: number) {
  const { b, o, d, top, ack } = twoInFlight();
  // The thread is busy past the first loss deadline; the peer's ACK of everything arrived
  // meanwhile and waits behind the timers (a deferred delivery stands for the I/O poll).
  b.env.clock.elapse(o.conn.timerTarget - b.env.clock.now() + lateMs);
  b.env.clock.defer(() => b.inject(ack));
  b.flush();
  return { b, d, top, resent: b.take().filter((x) => x.data.length > 0) };
}

test('a loss timer that fires late lets the waiting ACK in first: nothing resent', () => {
  const { b, d, top, resent } = busyThenAcked(50);
  assert.deepEqual(
    resent.map((x) => x.h.seq),
    [],
    'the ACK covered the flight',
  );
  assert.equal(d.sndUna, top);
  assert.equal(d.backoff, 0);
  assert.equal(b.count('tcp.tlp.probes'), 0);
  assert.equal(b.count('tcp.rto'), 0);
  assert.equal(b.count('tcp.timer.late-yields'), 1);
});

test('one that fires on time (or barely late) does not wait', () => {
  const { b, resent } = busyThenAcked(LATE_TIMER_MS / 2);
  assert.equal(resent.length, 1, 'the tail probe went before the ACK was read');
  assert.equal(b.count('tcp.timer.late-yields'), 0);
  assert.equal(b.count('tcp.tlp.probes'), 1);
});

test('a late timer whose input did not help fires one turn later, at the same instant', () => {
  const { b, o, sent } = twoInFlight();
  const at = o.conn.timerTarget;
  b.env.clock.elapse(at - b.env.clock.now() + 50);
  const now = b.env.clock.now();
  b.flush();
  const probe = b.take().filter((x) => x.data.length > 0);
  assert.deepEqual(
    probe.map((x) => [x.h.seq, x.at]),
    [[sent[1]!.h.seq, now]],
    'the tail probe, its last segment again',
  );
  assert.equal(b.count('tcp.timer.late-yields'), 1);
  assert.equal(b.count('tcp.tlp.probes'), 1);
  assert.equal(add(sent[0]!.h.seq, 2 * 1448), o.conn.state.delegated.sndMax);
});

// ---- Where the input can be read on demand (TcpHostEnv.drainInput: a TAP's queue), a loss timer
// reads it first, late or not: a yield of the event loop was not enough, the pool thread's poll for
// the TAP could answer a turn later, and the yielded timer then resent anyway.

/**
 * The ACK waits on the link, read only by a drain (unless `queued` is false), the thread `lateMs`
 * past the first loss deadline. `drained` says what a drain reports: all read, or some input left
 * behind (a budget spent).
 */
function queuedAck(lateMs: number, drained = true, queued = true) {
  const { b, o, sent, d, top, ack } = twoInFlight();
  const queue = queued ? [ack] : [];
  let drains = 0;
  Object.assign(b.env, {
    drainInput: (): boolean => {
      drains++;
      for (const a of queue.splice(0)) b.inject(a);
      return drained;
    },
  });
  b.env.clock.elapse(o.conn.timerTarget - b.env.clock.now() + lateMs);
  const now = b.env.clock.now();
  b.flush();
  return { b, d, top, sent, now, drains: () => drains, resent: b.take().filter((x) => x.data.length > 0) };
}

test('a late loss timer reads the queued ACK first: nothing resent, no turn yielded', () => {
  const { b, d, top, drains, resent } = queuedAck(50);
  assert.deepEqual(
    resent.map((x) => x.h.seq),
    [],
    'the ACK covered the flight',
  );
  assert.equal(d.sndUna, top);
  assert.equal(d.backoff, 0);
  assert.equal(drains(), 1);
  assert.equal(b.count('tcp.timer.drains'), 1);
  assert.equal(b.count('tcp.timer.drain-moot'), 1);
  assert.equal(b.count('tcp.timer.late-yields'), 0);
  assert.equal(b.count('tcp.tlp.probes'), 0);
  assert.equal(b.count('tcp.rto'), 0);
});

test('so does one that fires on time: the ACK that came as it fell due goes first', () => {
  const { b, d, top, resent } = queuedAck(LATE_TIMER_MS / 10);
  assert.equal(resent.length, 0);
  assert.equal(d.sndUna, top);
  assert.equal(b.count('tcp.timer.drain-moot'), 1);
  assert.equal(b.count('tcp.tlp.probes'), 0);
});

test('a drain that left input behind, but read the ACK that made the timer moot, does not yield', () => {
  const { b, drains } = queuedAck(50, false);
  assert.equal(drains(), 1);
  assert.equal(b.count('tcp.timer.late-yields'), 0);
  assert.equal(b.count('tcp.tlp.probes'), 0);
});

test('with nothing queued the timer acts at once, after one drain, without yielding', () => {
  const { b, sent, now, drains, resent } = queuedAck(50, true, false);
  assert.deepEqual(
    resent.map((x) => [x.h.seq, x.at]),
    [[sent[1]!.h.seq, now]],
    'the tail probe, its last segment again, with no turn lost',
  );
  assert.equal(drains(), 1);
  assert.equal(b.count('tcp.timer.drain-moot'), 0);
  assert.equal(b.count('tcp.timer.late-yields'), 0);
  assert.equal(b.count('tcp.tlp.probes'), 1);
});

test('a late timer whose drain left input behind yields one turn, then probes', () => {
  const { b, drains, resent } = queuedAck(50, false, false);
  assert.equal(resent.length, 1);
  // Drained at the first firing only: the yielded one acts on what the turn brought.
  assert.equal(drains(), 1);
  assert.equal(b.count('tcp.timer.late-yields'), 1);
  assert.equal(b.count('tcp.tlp.probes'), 1);
});

test('a tail probe whose drain reads a packet too big does not go: the resends at the new size probe', () => {
  // Linux: tcp_v6_mtu_reduced resends the head (tcp_simple_retransmit), which re-arms the RTO in
  // the one timer the pending probe was armed in. Here the timer had already fired: the probe
  // went after the drain, a copy of the tail next to its resend (seen on a TAP against Linux).
  const { b, o, sent, top } = twoInFlight();
  const path = o.conn.state.path;
  Object.assign(b.env, {
    drainInput: (): boolean => {
      // The IP layer lowers the path, then tells TCP (as Ipv6Layer.packetTooBig does).
      path.cached.mtu = 1280;
      b.layer.icmpError({
        kind: 'frag-needed',
        code: 4,
        mtu: 1280,
        mtuLowered: true,
        src: LOCAL,
        dst: REMOTE,
        srcPort: o.conn.localPort,
        dstPort: 80,
        seq: sent[0]!.h.seq,
      });
      return true;
    },
  });
  assert.equal(o.conn.timerTarget, o.conn.state.soft.tlpDeadline);
  b.env.clock.elapse(o.conn.timerTarget - b.env.clock.now());
  b.flush();
  const out = b.take().filter((x) => x.data.length > 0);
  const seg = 1280 - 20 - 32; // IPv4 and TCP headers, timestamps
  assert.deepEqual(
    out.map((x) => [x.h.seq, x.data.length]),
    [
      [sent[0]!.h.seq, seg],
      [add(sent[0]!.h.seq, seg), seg],
      [add(sent[0]!.h.seq, 2 * seg), 2 * 1448 - 2 * seg],
    ],
    'the flight once again, at the new size, and nothing more',
  );
  assert.equal(o.conn.state.delegated.sndNxt, top);
  assert.equal(b.count('tcp.pmtu.resegment'), 1);
  assert.equal(b.count('tcp.tlp.probes'), 0);
});

/** A link whose queued frames a drain hands over (a TAP's kernel queue, in miniature). */
class QueueLink implements Link {
  readonly queued: Uint8Array[] = [];
  drains = 0;
  private handler: ((f: Uint8Array) => void) | null = null;
  readonly mtu = 1500;
  readonly carrier = true;
  constructor(readonly name: string) {}
  send(): boolean {
    return true;
  }
  onFrame(h: (f: Uint8Array) => void): void {
    this.handler = h;
  }
  onCarrier(): void {}
  close(): void {}
  drain(): boolean {
    this.drains++;
    for (const f of this.queued.splice(0)) this.handler?.(f);
    return true;
  }
}

test('the hook reaches TCP through the stack and a NIC engine, wrappers included; a link without drain gives none', () => {
  const clock = new VirtualClock(0);
  const random = new SeededRandom(3);
  const sw = new MemorySwitch({ clock, random: random.fork() });
  const plain = new Stack({ clock, random });
  plain.addInterface(sw.addPort({ name: 'p0', mtu: 1500 }), { mac: '02:00:00:00:00:01', ip: '10.1.0.1/24' });
  assert.equal(plain.tcp.env.drainInput, undefined, 'the simulator keeps no hook');

  const q = new QueueLink('q1');
  const stack = new Stack({ clock, random });
  stack.addInterface(capture(q, new PcapWriter({ write: () => {} }, { clock })), {
    mac: '02:00:00:00:00:02',
    ip: '10.1.0.2/24',
  });
  assert.equal(stack.tcp.env.drainInput?.(), true);
  assert.equal(q.drains, 1, "the stack's drain read its link through the capture");
  // A second link that cannot be read on demand: a drain can no longer say all was read.
  stack.addInterface(sw.addPort({ name: 'p2', mtu: 1500 }), { mac: '02:00:00:00:00:03', ip: '10.2.0.2/24' });
  assert.equal(stack.tcp.env.drainInput?.(), false);
  assert.equal(q.drains, 2);

  const q2 = new QueueLink('q2');
  const engine = new NicEngine({
    id: 'n',
    link: new ProbeTap(q2, 0x020000000009, new Counters()),
    clock,
    random: random.fork(),
    toHost: () => {},
    indicate: () => {},
  });
  assert.equal(engine.tcp.env.drainInput?.(), true);
  assert.equal(q2.drains, 1, "the engine's drain read its link through the probe tap");
  engine.close();
  stack.close();
  plain.close();
});

test("a NIC engine whose segments may also come off its link (a team's peers) reads it but does not say it read all", () => {
  const clock = new VirtualClock(0);
  const random = new SeededRandom(5);
  const make = (q: QueueLink, moreInput?: () => boolean) =>
    new NicEngine({
      id: q.name,
      link: q,
      clock,
      random: random.fork(),
      toHost: () => {},
      indicate: () => {},
      ...(moreInput ? { moreInput } : {}),
    });
  let peers = 1;
  const q = new QueueLink('q3');
  const engine = make(q, () => peers > 0);
  // One MAC on every port: a peer forwards this NIC's ACKs by message, which no drain reaches, so
  // a late loss timer must keep its turn for them.
  assert.equal(engine.tcp.env.drainInput?.(), false);
  assert.equal(q.drains, 1, 'the link was read all the same');
  peers = 0;
  assert.equal(engine.tcp.env.drainInput?.(), true, 'alone again, its link is all it hears');
  assert.equal(q.drains, 2);
  engine.close();
});
