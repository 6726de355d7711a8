/**
 * The per-turn output budget (Linux's TCP small queues, in spirit): a connection that may send a
 * lot sends at most its budget per turn of the event loop, the rest in later turns after the
 * other connections' shares, and nothing is lost or sent twice on the way.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SeededRandom } from '../../src/core/random.ts';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import { TcpLayer } from '../../src/stack/tcp/tcp-layer.ts';
import type { TcpState } from '../../src/state/tcp-state.ts';
import { ACK, activeOpen, add, Bench, bytes, type Opened, Recorder, type Seg } from './harness.ts';

const MSS = 1460;
/** The counter of resends the lone-piece shortcut (rtxQueueSingle) let past a spent budget. */
const LONE = 'tcp.rtx.lone-past-budget';

describe('output budget per turn', () => {
  test('two connections with a window each take turns, a budget at a time, and every byte goes once', () => {
    const b = new Bench();
    b.layer.outputBudget = 4 * MSS;
    const x = activeOpen(b);
    b.take();
    const y = activeOpen(b);
    b.take();
    const px = x.conn.localPort;
    x.conn.write(bytes(20 * MSS, 1));
    y.conn.write(bytes(20 * MSS, 2));
    const owner = (segs: ReturnType<Bench['take']>) =>
      segs.filter((s) => s.data.length > 0).map((s) => (s.h.srcPort === px ? 'x' : 'y'));
    assert.deepEqual(owner(b.take()), [...'xxxxyyyy'], 'one budget each in the turn of the writes');
    // The simulated clock runs every deferred turn of this instant in one flush: the turns follow
    // each other in order, a budget each, until the initial window (ten segments) is used up.
    b.flush();
    assert.deepEqual(owner(b.take()), [...'xxxxyyyyxxyy'], 'later turns: the same order, a budget at a time');
    b.flush();
    assert.deepEqual(b.take(), [], 'nothing more until ACKs come');
    for (const c of [x, y]) {
      const d = c.conn.state.delegated;
      assert.equal((d.sndMax - d.sndUna) >>> 0, 10 * MSS, 'each sent its window, once');
    }
  });

  test("a turn's bytes over all connections are bounded too; the rest follow in later turns, each byte once", () => {
    const b = new Bench();
    b.layer.outputBudget = 4 * MSS;
    b.layer.outputTurnBudget = 6 * MSS;
    // Turn by turn: the scheduler's deferral ends a turn, run here one at a time.
    const turns: (() => void)[] = [];
    b.env.clock.defer = (fn) => void turns.push(fn);
    const conns = [0, 1, 2].map(() => {
      const c = activeOpen(b);
      b.take();
      return c;
    });
    const dataOf = () => b.take().filter((s) => s.data.length > 0);
    // Three connections' data begins in one turn (as thousands of accepts' at a NIC worker did).
    for (const [i, c] of conns.entries()) c.conn.write(bytes(10 * MSS, i + 1));
    const ports = new Set<number>();
    const count = () => {
      const segs = dataOf();
      for (const s of segs) if (ports.size < 3) ports.add(s.h.srcPort);
      return segs.length;
    };
    const perTurn = [count()];
    for (let t = 0; t < 50 && turns.length > 0; t++) {
      for (const fn of turns.splice(0)) fn();
      perTurn.push(count());
      if (t === 1) assert.equal(ports.size, 3, 'by the third turn every connection has sent (round robin)');
    }
    assert.deepEqual(perTurn.slice(0, 1), [6], 'the turn of the writes: six segments, not twelve');
    assert.ok(
      perTurn.every((n) => n <= 6),
      `at most six segments a turn: ${perTurn.join(',')}`,
    );
    assert.equal(
      perTurn.reduce((a, n) => a + n, 0),
      30,
      'every connection sent its initial window (ten segments), once',
    );
    for (const c of conns) {
      const d = c.conn.state.delegated;
      assert.equal((d.sndMax - d.sndUna) >>> 0, 10 * MSS, 'each sent its window, once');
    }
  });

  test('without a budget a connection sends its whole window at once', () => {
    const b = new Bench();
    const x = activeOpen(b);
    b.take();
    x.conn.write(bytes(20 * MSS, 1));
    assert.equal(b.take().filter((s) => s.data.length > 0).length, 10);
  });
});

/**
 * A layer like a NIC worker's (a budget per connection and per turn) whose turns are all spent by
 * `others` backlogged senders, each turn taking `turnMs` of the clock, and one connection `x`
 * with one segment in flight (`sack`: it and its peer agreed SACK, so it may probe its tail).
 * The peer ACKs everything the others send, so only x's timers fire.
 */
function crowded(others: number, sack: boolean) {
  const b = new Bench();
  b.layer.outputBudget = 2 * MSS;
  b.layer.outputTurnBudget = 4 * MSS;
  const turns: (() => void)[] = [];
  b.env.clock.defer = (fn) => void turns.push(fn);
  // A 1 ms RTT and a 50 ms floor: x's RTO (and backed off, the next ones) fall within the test.
  const x = activeOpen(b, sack ? { sackPermitted: true } : {}, { minRtoMs: 50 }, 1);
  b.take();
  const crowd = Array.from({ length: others }, () => {
    const c = activeOpen(b, {}, { minRtoMs: 60_000 });
    b.take();
    return c;
  });
  const px = x.conn.localPort;
  return { b, x, crowd, px, turns };
}

/** The crowd's data of a turn, each acknowledged by its peer; x's segments are returned. */
function ackCrowd(b: Bench, px: number, crowd: Opened[]): Seg[] {
  const mine: Seg[] = [];
  for (const s of b.take()) {
    if (s.h.dstPort !== 80) continue;
    if (s.h.srcPort === px) {
      mine.push(s);
      continue;
    }
    if (s.data.length === 0) continue;
    const c = crowd.find((o) => o.conn.localPort === s.h.srcPort)!;
    b.inject({
      flags: ACK,
      seq: c.peerSeq,
      ack: add(s.h.seq, s.data.length),
      srcPort: 80,
      dstPort: s.h.srcPort,
    });
  }
  return mine;
}

/**
 * x, among 40 others, with SACK, sends `segs` segments, each its own send in its own turn (0.6 ms
 * apart: not one burst in RACK's log); then the others' data begins, more than a turn's bytes.
 */
function sentApart(segs: number) {
  const o = crowded(40, true);
  const { b, x, crowd, px, turns } = o;
  for (let k = 0; k < segs; k++) {
    if (k > 0) b.advance(0.6);
    x.conn.write(bytes(MSS, 9));
    for (const fn of turns.splice(0)) fn();
  }
  assert.equal(b.take().filter((s) => s.h.srcPort === px && s.data.length > 0).length, segs);
  for (const [i, c] of crowd.entries()) c.conn.write(bytes(200 * MSS, i + 1));
  const first = x.iss + 1;
  return { ...o, first, at: (k: number) => add(first, k * MSS) };
}

/**
 * A turn spends its bytes; the peer, which lost the first segment, SACKs the second: a recovery,
 * whose fast retransmission of the first (returned) goes with the ACK. Then a round trip of the
 * minimum RTT passes (a shorter one could answer the original, RFC 8985 6.2).
 */
function recoverFirst(o: ReturnType<typeof sentApart>): Seg[] {
  const { b, x, crowd, px, turns, first, at } = o;
  for (const fn of turns.splice(0)) fn();
  ackCrowd(b, px, crowd);
  assert.ok(b.layer.output.turnSpent, "the turn's bytes are spent");
  b.advance(0.6);
  b.inject({ flags: ACK, seq: x.peerSeq, ack: first, srcPort: 80, dstPort: px, sack: [[at(1), at(2)]] });
  const fast = ackCrowd(b, px, crowd).filter((s) => s.data.length > 0);
  b.advance(1.2);
  return fast;
}

describe('output budget: a connection that moves while it waits for its turn', () => {
  /** A connection cut short by its budget (two segments a turn), waiting in its layer's list. */
  function waiting() {
    const b = new Bench();
    b.layer.outputBudget = 2 * MSS;
    const turns: (() => void)[] = [];
    b.env.clock.defer = (fn) => void turns.push(fn);
    const x = activeOpen(b);
    b.take();
    x.conn.write(bytes(20 * MSS, 1));
    const data = () => b.take().filter((s) => s.data.length > 0).length;
    assert.equal(data(), 2);
    assert.equal(b.layer.output.waiting, 1);
    return { b, x, turns, data };
  }

  test('released and taken up again by the same layer (revived) in that turn: listed once, one share a turn', () => {
    const { b, x, turns, data } = waiting();
    const back = b.layer.adopt(b.layer.release(x.conn), new Recorder());
    assert.equal(back, x.conn, 'the same object, revived');
    assert.equal(b.count('tcp.adopt.revived'), 1);
    assert.equal(b.layer.output.waiting, 1, 'still listed once');
    assert.equal(data(), 0, 'its share of this turn was spent before it moved');
    const perTurn: number[] = [];
    while (turns.length > 0) {
      for (const fn of turns.splice(0)) fn();
      perTurn.push(data());
      assert.ok(b.layer.output.waiting <= 1, `listed ${b.layer.output.waiting} times`);
    }
    assert.deepEqual(perTurn.slice(0, 4), [2, 2, 2, 2], 'a share a turn until the initial window is out');
    assert.ok(perTurn.slice(4).every((n) => n === 0));
    const d = x.conn.state.delegated;
    assert.equal((d.sndMax - d.sndUna) >>> 0, 10 * MSS, 'its window, each byte once');
  });

  test("taken up by another layer of the thread while listed: resumed once, then listed by its new layer's scheduler", () => {
    const { b, x, turns, data } = waiting();
    const other = new TcpLayer(b.env);
    other.outputBudget = 2 * MSS;
    const moved = other.adopt(b.layer.release(x.conn), new Recorder());
    assert.equal(moved, x.conn, 'the same object, revived on the other layer');
    // Its new layer counts its own turns: a share there. It spent it, and is listed once still.
    assert.equal(data(), 2);
    assert.equal(other.output.waiting + b.layer.output.waiting, 1, 'listed once, by the layer it left');
    for (const fn of turns.splice(0)) fn();
    assert.equal(data(), 2, 'one share in the next turn');
    assert.equal(b.layer.output.waiting, 0);
    assert.equal(other.output.waiting, 1, "then listed by its new layer's scheduler");
    let sent = 0;
    while (turns.length > 0) {
      for (const fn of turns.splice(0)) fn();
      const n = data();
      assert.ok(n <= 2, `${n} segments in a turn`);
      sent += n;
      assert.ok(other.output.waiting + b.layer.output.waiting <= 1, 'listed once');
    }
    assert.equal(sent, 4, 'the rest of its window');
    const d = x.conn.state.delegated;
    assert.equal((d.sndMax - d.sndUna) >>> 0, 10 * MSS, 'its window, each byte once');
  });
});

/**
 * Every way a connection object moves between the layers of a thread (released and revived by
 * `adopt`, with a prod or without; detached and attached), at random points between the turns of
 * three schedulers, each turn run in a random order: a connection is in one list at most, listed
 * exactly when its flag says so, and none is left with data to send, nothing in flight and no turn
 * to come (a stall, with no ACK or timer to wake it). The peer ACKs nothing: what each may send
 * is its initial window.
 */
function movesAtRandom(seed: number): string | null {
  const r = new SeededRandom(seed);
  const pick = (n: number) => Math.floor(r.float() * n);
  const b = new Bench({ seed });
  const turns: (() => void)[] = [];
  b.env.clock.defer = (fn) => void turns.push(fn);
  const layers = [b.layer, new TcpLayer(b.env), new TcpLayer(b.env)];
  for (const l of layers) {
    l.outputBudget = (1 + pick(3)) * MSS;
    l.outputTurnBudget = (2 + pick(6)) * MSS;
  }
  const n = 6;
  const conns: TcpConnection[] = [];
  const written: number[] = [];
  // The layer running each (-1: released, its state in `away`).
  const at: number[] = [];
  const away: (TcpState | null)[] = [];
  for (let i = 0; i < n; i++) {
    conns.push(activeOpen(b).conn);
    b.take();
    written.push(0);
    at.push(0);
    away.push(null);
  }
  const unhold = (l: TcpLayer, c: TcpConnection) => {
    const k = c.state.const;
    l.dropFrozen(k.localIp, k.localPort, k.remoteIp, k.remotePort);
  };
  const listed = () => {
    const seen = new Map<TcpConnection, number>();
    for (const l of layers) {
      for (const c of (l.output as unknown as { pending: TcpConnection[] }).pending)
        seen.set(c, (seen.get(c) ?? 0) + 1);
    }
    return seen;
  };
  for (let step = 0; step < 120; step++) {
    const i = pick(n);
    const c = conns[i]!;
    const op = r.float();
    if (op < 0.25) {
      if (at[i] === -1) continue;
      const len = (1 + pick(8)) * MSS;
      c.write(bytes(len, i + 1));
      written[i]! += len;
    } else if (op < 0.45) {
      if (turns.length > 0) turns.splice(pick(turns.length), 1)[0]!();
    } else if (op < 0.6) {
      for (const fn of turns.splice(0)) fn();
    } else if (op < 0.75) {
      if (at[i] !== -1) {
        const from = layers[at[i]!]!;
        away[i] = from.release(c);
        unhold(from, c);
        at[i] = -1;
      } else {
        const to = pick(3);
        conns[i] = layers[to]!.adopt(away[i]!, new Recorder(), { prod: r.float() < 0.5 });
        at[i] = to;
      }
    } else if (at[i] !== -1) {
      const to = pick(3);
      if (to === at[i]) continue;
      const from = layers[at[i]!]!;
      from.detach(c, null);
      layers[to]!.attach(c, { prod: r.float() < 0.3 });
      unhold(from, c);
      at[i] = to;
    }
    b.take();
    for (const [c, times] of listed()) {
      if (times > 1) return `step ${step}: listed ${times} times`;
      if (!c.outputQueued) return `step ${step}: listed, its flag false`;
    }
    for (const c of conns) if (c.outputQueued && !listed().has(c)) return `step ${step}: flagged, in no list`;
  }
  for (let i = 0; i < n; i++) {
    if (at[i] === -1) conns[i] = b.layer.adopt(away[i]!, new Recorder());
  }
  for (let k = 0; k < 1000 && turns.length > 0; k++) for (const fn of turns.splice(0)) fn();
  b.take();
  for (let i = 0; i < n; i++) {
    const d = conns[i]!.state.delegated;
    const flight = (d.sndMax - d.sndUna) >>> 0;
    if (written[i]! > flight && flight === 0)
      return `connection ${i} stalled: ${written[i]} bytes written, none sent`;
  }
  return null;
}

describe('output budget: connections moved at random between the layers of a thread', () => {
  test('each in one list at most, listed exactly when flagged, and none stalls', () => {
    const faults: string[] = [];
    for (let seed = 1; seed <= 100; seed++) {
      const fault = movesAtRandom(seed);
      if (fault !== null) faults.push(`seed ${seed}: ${fault}`);
    }
    assert.deepEqual(faults, []);
  });
});

describe('output budget: what Linux sends at once leaves at once', () => {
  test("a retransmission timeout's resend of snd.una leaves in the timer's turn, not behind the crowd", () => {
    const { b, x, crowd, px, turns } = crowded(40, false);
    const first = x.iss + 1;
    x.conn.write(bytes(MSS, 9));
    const sent = b.take().filter((s) => s.h.srcPort === px && s.data.length > 0);
    assert.equal(sent.length, 1, 'x sent its segment');
    // The crowd's data begins: far more than a turn's bytes, every turn.
    for (const [i, c] of crowd.entries()) c.conn.write(bytes(200 * MSS, i + 1));
    let resentAt = -1;
    let rtosBefore = 0;
    let firstRtoAt = -1;
    const start = b.env.clock.now();
    const watch = () => {
      for (const s of ackCrowd(b, px, crowd)) {
        if (s.data.length > 0 && s.h.seq === first && resentAt < 0) {
          resentAt = s.at - start;
          rtosBefore = b.count('tcp.rto');
        }
      }
    };
    for (let t = 0; t < 200 && resentAt < 0; t++) {
      // A turn of the worker: 10 ms of the clock (the timers due in it fire), then its deferred output.
      b.advance(10);
      if (b.count('tcp.rto') > 0 && firstRtoAt < 0) firstRtoAt = b.env.clock.now() - start;
      watch();
      for (const fn of turns.splice(0)) fn();
      watch();
      assert.ok(turns.length > 0, 'the crowd still has output');
    }
    assert.ok(resentAt > 0, 'x resent its segment');
    assert.equal(
      rtosBefore,
      1,
      `one timeout before the resend (at ${resentAt} ms, the first timeout at ${firstRtoAt})`,
    );
    assert.equal(resentAt, firstRtoAt, "sent by the timer, in the timer's turn");
    assert.equal(x.conn.state.delegated.backoff, 1, 'backed off once');
  });

  // Linux's Loss state resends through tcp_xmit_retransmit_queue, whose small-queue check lets a
  // resend through when the retransmit queue holds one skb (tcp_rtx_queue_empty_or_single_skb).
  test("after a timeout, the one piece the resend's ACK leaves in flight goes in that ACK's turn", () => {
    // Two segments, both lost.
    const { b, x, crowd, px, turns, first } = sentApart(2);
    let head = false;
    for (let t = 0; t < 200 && !head; t++) {
      for (const fn of turns.splice(0)) fn();
      ackCrowd(b, px, crowd);
      b.advance(10);
      head = ackCrowd(b, px, crowd).some((s) => s.data.length > 0 && s.h.seq === first);
    }
    assert.ok(head, "the timer's resend of the first");
    assert.equal(b.count('tcp.rto'), 1);
    assert.equal(b.count(LONE), 0, "the timer's resend is exempt on its own: not the shortcut's");
    // Its ACK comes within the turn, the turn's bytes spent: the second is all that is in flight.
    b.advance(1);
    assert.ok(b.layer.output.turnSpent, "the turn's bytes are spent");
    b.inject({ flags: ACK, seq: x.peerSeq, ack: add(first, MSS), srcPort: 80, dstPort: px });
    const resent = ackCrowd(b, px, crowd).filter((s) => s.data.length > 0);
    assert.deepEqual(
      resent.map((s) => s.h.seq),
      [add(first, MSS)],
      "the second resent in the ACK's turn, not behind the crowd",
    );
    assert.equal(b.count('tcp.rto'), 1, 'no second timeout');
    assert.equal(b.count(LONE), 1, 'counted: the one resend the shortcut let past the spent budget');
  });

  // The probe goes outside the budget (lossProbe); a recovery's output is budgeted
  // (sackRecoveryOutput) but for its fast retransmission, which this shows going at once.
  test("a tail loss probe leaves in the timer's turn, and a fast retransmission in the ACK's", () => {
    const { b, x, crowd, px, turns } = crowded(40, true);
    const first = x.iss + 1;
    x.conn.write(bytes(6 * MSS, 9));
    // Its budget a turn, alone: three turns.
    while (turns.length > 0) for (const fn of turns.splice(0)) fn();
    assert.equal(b.take().filter((s) => s.h.srcPort === px && s.data.length > 0).length, 6);
    for (const [i, c] of crowd.entries()) c.conn.write(bytes(200 * MSS, i + 1));
    for (const fn of turns.splice(0)) fn();
    ackCrowd(b, px, crowd);
    assert.ok(b.layer.output.turnSpent, "the turn's bytes are spent");
    // The probe's timeout (two RTTs and a little) falls in the next 10 ms.
    b.advance(10);
    const probe = ackCrowd(b, px, crowd).filter((s) => s.data.length > 0);
    assert.equal(b.count('tcp.tlp.probes'), 1);
    assert.deepEqual(
      probe.map((s) => s.h.seq),
      [add(first, 5 * MSS)],
      'the probe (the last segment again) went with the timer',
    );
    for (const fn of turns.splice(0)) fn();
    ackCrowd(b, px, crowd);
    assert.ok(b.layer.output.turnSpent, "the turn's bytes are spent");
    // The peer got all but the first segment: its SACKs start a recovery.
    for (let k = 2; k <= 4; k++) {
      b.inject({
        flags: ACK,
        seq: x.peerSeq,
        ack: first,
        srcPort: 80,
        dstPort: px,
        sack: [[add(first, MSS), add(first, k * MSS)]],
      });
    }
    const resent = ackCrowd(b, px, crowd).filter((s) => s.data.length > 0);
    assert.equal(b.count('tcp.fast_retransmits'), 1);
    assert.deepEqual(
      resent.map((s) => s.h.seq),
      [first],
      'the fast retransmission of snd.una went with the ACK',
    );
  });
});

/**
 * A connection with SACK and `segs` segments in flight (sent turn by turn under its budget), of
 * which the peer lost every fourth, the first included: `holes` are their sequence numbers. The
 * layer's turns are run by the test (`turns`).
 */
function sackedFlight(b: Bench, turns: (() => void)[], segs: number) {
  const x = activeOpen(b, { sackPermitted: true }, {}, 1);
  b.take();
  const first = x.iss + 1;
  const px = x.conn.localPort;
  // The window to have them all in flight at once (as after a slow start).
  x.conn.state.delegated.cwnd = segs * MSS;
  x.conn.write(bytes(segs * MSS, 7));
  while (turns.length > 0) for (const fn of turns.splice(0)) fn();
  const sent = b.take().filter((s) => s.h.srcPort === px && s.data.length > 0);
  assert.equal(sent.length, segs, 'all in flight');
  const holes: number[] = [];
  for (let k = 0; k < segs; k += 4) holes.push(add(first, k * MSS));
  /** The peer's duplicate ACKs, one per three segments it got past a hole, its last three blocks each. */
  const sackAll = () => {
    const blocks: [number, number][] = [];
    for (let k = 1; k < segs; k += 4) {
      blocks.unshift([add(first, k * MSS), add(first, (k + 3) * MSS)]);
      b.inject({
        flags: ACK,
        seq: x.peerSeq,
        ack: first,
        srcPort: 80,
        dstPort: px,
        sack: blocks.slice(0, 3),
      });
    }
  };
  return { x, px, holes, sackAll };
}

describe('output budget: a SACK recovery sends under the budgets, as Linux', () => {
  test('many holes, a small budget: at most the budget a turn, the fast retransmission at once, every hole once', () => {
    const b = new Bench();
    b.layer.outputBudget = 3 * MSS;
    const turns: (() => void)[] = [];
    b.env.clock.defer = (fn) => void turns.push(fn);
    const { x, px, holes, sackAll } = sackedFlight(b, turns, 40);
    sackAll();
    assert.equal(b.count('tcp.fast_retransmits'), 1, 'in recovery');
    const resent = (segs: Seg[]) =>
      segs.filter((s) => s.h.srcPort === px && s.data.length > 0).map((s) => s.h.seq);
    const perTurn = [resent(b.take())];
    assert.equal(perTurn[0]![0], holes[0], 'the fast retransmission of snd.una went with the ACKs');
    const d = x.conn.state.delegated;
    for (let t = 0; t < 50 && turns.length > 0; t++) {
      assert.ok(x.conn.state.soft.inRecovery, 'still in recovery');
      assert.ok(Number.isFinite(d.rtxDeadline), 'its RTO armed while it waits for its turn');
      for (const fn of turns.splice(0)) fn();
      perTurn.push(resent(b.take()));
    }
    assert.ok(
      perTurn.every((segs) => segs.length <= 3),
      `at most its budget (three segments) a turn: ${perTurn.map((s) => s.length).join(',')}`,
    );
    assert.ok(perTurn.filter((segs) => segs.length > 0).length >= 4, 'the holes went over several turns');
    assert.deepEqual(perTurn.flat(), holes, 'every hole resent, holes in order, each once');
    assert.ok(x.conn.state.soft.inRecovery, 'the peer has not ACKed yet');
  });

  test("a crowd in recovery at a worker: the turn's bytes bound what they resend, each hole once", () => {
    const b = new Bench();
    b.layer.outputBudget = 2 * MSS;
    b.layer.outputTurnBudget = 4 * MSS;
    const turns: (() => void)[] = [];
    b.env.clock.defer = (fn) => void turns.push(fn);
    const crowd = Array.from({ length: 6 }, () => sackedFlight(b, turns, 24));
    // Their peers' SACKs arrive in one turn.
    for (const c of crowd) c.sackAll();
    assert.equal(b.count('tcp.fast_retransmits'), 6, 'each in recovery');
    const resent = () => b.take().filter((s) => s.data.length > 0);
    const seen = new Map<number, number[]>(crowd.map((c) => [c.px, []]));
    const note = (segs: Seg[]) => {
      for (const s of segs) seen.get(s.h.srcPort)!.push(s.h.seq);
      return segs.length;
    };
    const first = note(resent());
    // Each fast retransmission goes at once; past them, at most the turn's four segments.
    assert.ok(first <= 4 + 6, `${first} segments in the turn of the ACKs`);
    const perTurn: number[] = [];
    for (let t = 0; t < 50 && turns.length > 0; t++) {
      for (const fn of turns.splice(0)) fn();
      perTurn.push(note(resent()));
    }
    assert.ok(
      perTurn.every((n) => n <= 4),
      `at most the turn's bytes (four segments) a turn: ${perTurn.join(',')}`,
    );
    for (const c of crowd) assert.deepEqual(seen.get(c.px), c.holes, 'every hole resent, in order, once');
  });

  // Linux's tcp_xmit_retransmit_queue asks tcp_small_queue_check before each resend, and that
  // lets the resend through whatever the queues hold when the connection's retransmit queue is
  // empty or one skb (tcp_rtx_queue_empty_or_single_skb).
  test("a segment RACK marks lost with nothing else in flight goes in the ACK's turn, the turn's bytes spent", () => {
    const o = sentApart(3);
    const { b, x, crowd, px, first, at } = o;
    // The peer lost the first and the third.
    assert.deepEqual(
      recoverFirst(o).map((s) => s.h.seq),
      [first],
      'the fast retransmission',
    );
    assert.ok(x.conn.state.soft.inRecovery);
    assert.equal(b.count(LONE), 0, 'the fast retransmission goes on its own exemption: not counted');
    // Its ACK reaches the third, sent before it: RACK marks the third lost, the one piece left.
    assert.ok(b.layer.output.turnSpent, "the turn's bytes are still spent");
    b.inject({ flags: ACK, seq: x.peerSeq, ack: at(2), srcPort: 80, dstPort: px });
    const resent = ackCrowd(b, px, crowd).filter((s) => s.data.length > 0);
    assert.deepEqual(
      resent.map((s) => s.h.seq),
      [at(2)],
      "the third resent in the ACK's turn, not behind the crowd",
    );
    assert.equal(x.conn.outputQueued, false, 'not listed: nothing left to resend');
    assert.equal(b.count(LONE), 1, 'counted once, in the recovery');
  });

  test('a segment RACK marks lost with more in flight waits for a turn while the turn is spent', () => {
    const o = sentApart(4);
    const { b, x, crowd, px, turns, at } = o;
    recoverFirst(o);
    // The third and the fourth both still out: two pieces, so the third waits as Linux's would.
    b.inject({ flags: ACK, seq: x.peerSeq, ack: at(2), srcPort: 80, dstPort: px });
    assert.deepEqual(
      ackCrowd(b, px, crowd).filter((s) => s.data.length > 0),
      [],
      'nothing resent while the turn is spent',
    );
    assert.equal(x.conn.outputQueued, true, 'listed for the next turn');
    assert.equal(b.count(LONE), 0, 'two pieces in flight: the shortcut does not fire');
    let later: Seg[] = [];
    for (let t = 0; t < 100 && later.length === 0; t++) {
      for (const fn of turns.splice(0)) fn();
      later = ackCrowd(b, px, crowd).filter((s) => s.data.length > 0);
    }
    assert.equal(later[0]?.h.seq, at(2), 'resent in a later turn, its turn in the list');
  });

  test("the timer's exempt resend does not list a connection whose window it filled", () => {
    const { b, x, crowd, px, turns } = crowded(40, false);
    x.conn.write(bytes(MSS, 9));
    b.take();
    for (const [i, c] of crowd.entries()) c.conn.write(bytes(200 * MSS, i + 1));
    let resent = false;
    for (let t = 0; t < 200 && !resent; t++) {
      for (const fn of turns.splice(0)) fn();
      ackCrowd(b, px, crowd);
      assert.ok(b.layer.output.turnSpent, "the turn's bytes are spent");
      b.advance(10);
      resent = ackCrowd(b, px, crowd).some((s) => s.data.length > 0);
    }
    assert.ok(resent, 'x resent its segment with the timer');
    assert.equal(b.count('tcp.rto'), 1);
    assert.equal(x.conn.outputQueued, false, 'not listed: its one-segment window is full');
  });
});
