import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Clock } from '../../src/core/clock.ts';
import { TurnLead, TurnQueue } from '../../src/core/turn-queue.ts';

/** A clock whose deferred calls run a turn at a time, as Node's check phase runs immediates. */
class TurnClock {
  t = 0;
  queue: (() => void)[] = [];
  now(): number {
    return this.t;
  }
  defer(cb: () => void): void {
    this.queue.push(cb);
  }
  createTimer(): never {
    throw new Error('no timers here');
  }
  elapse(ms: number): void {
    this.t += ms;
  }
  get pending(): number {
    return this.queue.length;
  }
  /** The calls deferred before this turn began. */
  turn(): void {
    const q = this.queue;
    this.queue = [];
    for (const cb of q) cb();
  }
  asClock(): Clock {
    return this as unknown as Clock;
  }
}

/** Run turn after turn, recording what each ran. */
function turns(clock: TurnClock, ran: number[]): number[][] {
  const out: number[][] = [];
  while (clock.pending > 0) {
    const before = ran.length;
    clock.turn();
    out.push(ran.slice(before));
  }
  return out;
}

/** A queue of `items` numbers, each run doing `each` after it is recorded in `ran`. */
function queued(
  perTurn: number,
  sliceMs: number,
  items: number,
  each: (i: number, q: TurnQueue<number>, clock: TurnClock) => void = () => {},
) {
  const clock = new TurnClock();
  const ran: number[] = [];
  const q: TurnQueue<number> = new TurnQueue<number>(
    clock.asClock(),
    (i) => {
      ran.push(i);
      each(i, q, clock);
    },
    perTurn,
    sliceMs,
  );
  for (let i = 0; i < items; i++) q.push(i);
  return { clock, ran, q };
}

describe('TurnQueue', () => {
  test('at most perTurn items a turn, in order, each once; items queued meanwhile join the backlog', () => {
    const { clock, ran, q } = queued(4, 1000, 10, (i, q) => {
      if (i === 3) q.push(100);
    });
    assert.deepEqual(turns(clock, ran), [
      [0, 1, 2, 3],
      [4, 5, 6, 7],
      [8, 9, 100],
    ]);
    assert.equal(q.size, 0);
    assert.equal(q.carried, 2);
  });

  test('a turn ends once sliceMs have passed (at least one item a turn)', () => {
    // Each item takes 3 ms; the first 20.
    const { clock, ran } = queued(100, 8, 7, (i, _q, c) => c.elapse(i === 0 ? 20 : 3));
    assert.deepEqual(turns(clock, ran), [[0], [1, 2, 3], [4, 5, 6]]);
  });

  test('an item that throws does not strand the rest', () => {
    const { clock, ran } = queued(10, 100, 4, (i) => {
      if (i === 1) throw new Error('boom');
    });
    assert.throws(() => clock.turn(), /boom/);
    while (clock.pending > 0) clock.turn();
    assert.deepEqual(ran, [0, 1, 2, 3]);
  });

  test('flush runs every waiting item now, in order, with those pushed meanwhile; a throw goes to a turn of its own', () => {
    const { clock, ran, q } = queued(4, 1000, 10, (i, q) => {
      if (i === 2) q.push(100);
      if (i === 5) throw new Error('boom');
    });
    q.flush();
    assert.deepEqual(ran, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100], 'all of them, in order, before flush returns');
    assert.equal(q.size, 0);
    // The drain scheduled by the first push, then the rethrow.
    assert.throws(() => clock.turn(), /boom/);
    assert.equal(clock.pending, 0);
    assert.equal(ran.length, 11, 'nothing ran twice');
    q.push(200);
    clock.turn();
    assert.deepEqual(ran.slice(11), [200], 'the queue goes on as before');
  });

  test('flushWhere runs only the chosen items now, in order, with chosen ones pushed meanwhile; the rest keep their turns', () => {
    const { clock, ran, q } = queued(4, 1000, 10, (i, q) => {
      if (i === 3) q.push(101);
      if (i === 5) throw new Error('boom');
    });
    q.flushWhere((i) => i % 2 === 1);
    assert.deepEqual(ran, [1, 3, 5, 7, 9, 101], 'the odd ones, in order, before flushWhere returns');
    assert.equal(q.size, 5, 'the even ones wait');
    // The drain scheduled by the first push runs first; the rethrow was deferred after it.
    assert.throws(() => clock.turn(), /boom/);
    assert.deepEqual(ran.slice(6), [0, 2, 4, 6], 'four a turn, the holes not counted');
    clock.turn();
    assert.deepEqual(ran.slice(10), [8]);
    assert.equal(clock.pending, 0);
    assert.equal(q.size, 0);
    assert.equal(ran.length, 11, 'nothing ran twice');
  });

  test('the holes flushWhere leaves count for no turn', () => {
    const { clock, ran, q } = queued(3, 1000, 9);
    q.flushWhere((i) => i < 3 || i === 5);
    ran.length = 0;
    assert.deepEqual(turns(clock, ran), [
      [3, 4, 6],
      [7, 8],
    ]);
    assert.equal(q.size, 0);
    q.push(20);
    assert.equal(q.size, 1);
    clock.turn();
    assert.deepEqual(ran, [3, 4, 6, 7, 8, 20]);
  });
  test('a queue led by another runs after its slice in each turn, and the leader runs one slice a turn', () => {
    // Network input (`input`) and the deliveries (`user`): the deliveries' drain was deferred
    // first, so without the lead their refills ran before the frames in every turn.
    const clock = new TurnClock();
    const ran: string[] = [];
    const input: TurnQueue<number> = new TurnQueue<number>(
      clock.asClock(),
      (i) => ran.push(`f${i}`),
      2,
      1000,
    );
    const user = new TurnQueue<number>(clock.asClock(), (i) => ran.push(`d${i}`), 2, 1000, {
      ahead: () => input.runAhead(),
    });
    for (let i = 0; i < 4; i++) user.push(i);
    for (let i = 0; i < 5; i++) input.push(i);
    const seen: string[][] = [];
    while (clock.pending > 0) {
      const before = ran.length;
      clock.turn();
      seen.push(ran.slice(before));
    }
    assert.deepEqual(seen, [['f0', 'f1', 'd0', 'd1'], ['f2', 'f3', 'd2', 'd3'], ['f4']]);
  });

  test("a TurnLead's queues run their slice before any queue it leads, one slice a turn, until taken out", () => {
    // Two NICs' network input led ahead of two queues of user work (a NIC's deliveries, a
    // rebuild's paced resumes), whose drains were deferred first.
    const clock = new TurnClock();
    const ran: string[] = [];
    const lead = new TurnLead();
    const made = (name: string, led: boolean) =>
      new TurnQueue<number>(
        clock.asClock(),
        (i) => ran.push(`${name}${i}`),
        1,
        1000,
        led ? { ahead: lead.run } : {},
      );
    const deliveries = made('d', true);
    const resumes = made('r', true);
    const a = made('a', false);
    const b = made('b', false);
    lead.add(a);
    lead.add(b);
    for (let i = 0; i < 3; i++) {
      deliveries.push(i);
      resumes.push(i);
    }
    for (let i = 0; i < 2; i++) {
      a.push(i);
      b.push(i);
    }
    clock.turn();
    assert.deepEqual(ran, ['a0', 'b0', 'd0', 'r0'], 'both inputs first, once each, then each led queue');
    lead.delete(b);
    ran.length = 0;
    clock.turn();
    assert.deepEqual(ran, ['a1', 'd1', 'r1', 'b1'], 'b, taken out, runs in its own drain');
  });

  test("items that waited agedMs run past the turn's share, up to agedSliceMs; younger ones wait", () => {
    // Each item takes 2 ms; two a turn, or 10 ms of those that waited 50 ms.
    const clock = new TurnClock();
    const ran: number[] = [];
    const q = new TurnQueue<number>(
      clock.asClock(),
      (i) => {
        ran.push(i);
        clock.elapse(2);
      },
      2,
      1000,
      { agedMs: 50, agedSliceMs: 10 },
    );
    for (let i = 0; i < 20; i++) q.push(i);
    clock.turn();
    assert.deepEqual(ran, [0, 1], "a young backlog: the turn's share");
    clock.elapse(60);
    // Pushed now: young, so the aged run stops at it.
    q.push(100);
    ran.length = 0;
    clock.turn();
    assert.deepEqual(ran, [2, 3, 4, 5, 6], 'the share, then the aged ones until 10 ms of the turn passed');
    ran.length = 0;
    clock.turn();
    assert.deepEqual(ran, [7, 8, 9, 10, 11]);
    ran.length = 0;
    clock.elapse(60);
    clock.turn();
    assert.deepEqual(ran, [12, 13, 14, 15, 16]);
    ran.length = 0;
    while (clock.pending > 0) clock.turn();
    assert.deepEqual(ran, [17, 18, 19, 100], 'every item once, in order');
  });
});
