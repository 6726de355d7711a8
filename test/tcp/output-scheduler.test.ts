/**
 * The output scheduler on its own (output-scheduler.ts): senders driven as sendWindowed drives
 * connections (ask for the turn's budget, send segment by segment, go in the next turn's list when
 * it is spent), turns ended by a deferral queue run by hand.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { OutputScheduler, type OutputSender } from '../../src/stack/tcp/output-scheduler.ts';
import fc from '../helpers/fc.ts';

const SEG = 1460;

class Sender implements OutputSender {
  outputTurn = -1;
  outputUsed = 0;
  outputQueued = false;
  backlog = 0;
  sent = 0;
  constructor(readonly id: number) {}
}

class Rig {
  readonly deferred: (() => void)[] = [];
  /** Ids resumed in each turn, by turn. */
  readonly served = new Map<number, number[]>();
  /** Bytes sent by sender id in the current turn. */
  sentThisTurn = new Map<number, number>();
  maxSentInTurn = 0;
  gone = new Set<number>();
  readonly sched: OutputScheduler<Sender>;

  constructor(budget: number) {
    this.sched = new OutputScheduler<Sender>(
      (fn) => this.deferred.push(fn),
      (s) => {
        const list = this.served.get(this.sched.turn) ?? [];
        list.push(s.id);
        this.served.set(this.sched.turn, list);
        if (!this.gone.has(s.id)) this.send(s);
      },
    );
    this.sched.budget = budget;
  }

  /** As sendWindowed: the budget is checked before each segment. */
  send(s: Sender): void {
    const budget = this.sched.begin(s);
    while (s.backlog > 0) {
      if (s.outputUsed >= budget) {
        this.sched.later(s);
        return;
      }
      const n = Math.min(SEG, s.backlog);
      s.backlog -= n;
      s.outputUsed += n;
      s.sent += n;
      const t = (this.sentThisTurn.get(s.id) ?? 0) + n;
      this.sentThisTurn.set(s.id, t);
      if (t > this.maxSentInTurn) this.maxSentInTurn = t;
    }
  }

  write(s: Sender, bytes: number): void {
    s.backlog += bytes;
    this.send(s);
  }

  /** End the turn: what was deferred in it runs (the next turn begins). */
  endTurn(): void {
    const fns = this.deferred.splice(0);
    assert.ok(fns.length <= 1, 'one deferral per turn');
    this.sentThisTurn = new Map();
    for (const fn of fns) fn();
  }
}

describe('output scheduler', () => {
  test('N senders that always have output: each served once per turn, in the same order', () => {
    const rig = new Rig(4 * SEG);
    const senders = Array.from({ length: 7 }, (_, i) => new Sender(i));
    for (const s of senders) rig.write(s, 1 << 30);
    for (let k = 0; k < 50; k++) {
      const turn = rig.sched.turn + 1;
      rig.endTurn();
      assert.deepEqual(rig.served.get(turn), [0, 1, 2, 3, 4, 5, 6], `turn ${turn}`);
      for (const s of senders) assert.equal(s.outputUsed, 4 * SEG, 'a budget each, no more');
    }
    for (const s of senders) assert.equal(s.sent, 51 * 4 * SEG);
  });

  test('a sender with budget left sends only the rest of it, then waits behind the others', () => {
    const rig = new Rig(4 * SEG);
    const [a, b, c] = [new Sender(0), new Sender(1), new Sender(2)];
    rig.write(b, 8 * SEG);
    rig.write(c, 8 * SEG);
    rig.write(a, 2 * SEG);
    assert.equal(a.outputQueued, false, 'under its budget: not waiting');
    rig.write(a, 10 * SEG);
    assert.equal(a.sent, 4 * SEG, 'the rest of its budget, not a new one');
    const turn = rig.sched.turn + 1;
    rig.endTurn();
    assert.deepEqual(rig.served.get(turn), [1, 2, 0], 'behind those that waited before it');
    assert.deepEqual([a.sent, b.sent, c.sent], [8 * SEG, 8 * SEG, 8 * SEG]);
    rig.endTurn();
    assert.deepEqual(rig.served.get(turn + 1), [0], 'only the one with output left');
    assert.equal(a.sent, 12 * SEG);
    assert.equal(rig.deferred.length, 1, 'a spent its budget again: one more turn');
    rig.endTurn();
    assert.equal(rig.deferred.length, 0, 'nothing left: no more turns');
  });

  test('a sender resumed in a turn and written to again in it is not served twice', () => {
    const rig = new Rig(2 * SEG);
    const [a, b] = [new Sender(0), new Sender(1)];
    rig.write(a, 4 * SEG);
    rig.write(b, 4 * SEG);
    rig.endTurn();
    rig.write(a, 4 * SEG);
    assert.equal(rig.sentThisTurn.get(0), 2 * SEG, 'its budget for the turn was already spent');
    const turn = rig.sched.turn + 1;
    rig.endTurn();
    assert.deepEqual(rig.served.get(turn), [0], 'once in the next turn');
  });

  test('a sender that is gone when its turn comes is dropped, and may be queued again', () => {
    const rig = new Rig(SEG);
    const a = new Sender(0);
    rig.write(a, 3 * SEG);
    rig.gone.add(0);
    rig.endTurn();
    assert.equal(a.outputQueued, false);
    assert.equal(rig.sched.waiting, 0);
    rig.gone.delete(0);
    rig.write(a, 0);
    assert.equal(a.sent, 2 * SEG, 'a new turn, a new budget');
    assert.equal(a.outputQueued, true);
  });

  test('without a budget nothing is deferred and everything goes at once', () => {
    const rig = new Rig(Number.POSITIVE_INFINITY);
    const a = new Sender(0);
    rig.write(a, 1000 * SEG);
    assert.equal(a.sent, 1000 * SEG);
    assert.equal(rig.deferred.length, 0);
  });

  test('property: hundreds of senders over thousands of turns, random writes: round robin, bounded, nothing lost', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 200, max: 400 }),
        fc.integer({ min: 1000, max: 2000 }),
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 1, max: 0x7fffffff }),
        (n, turns, budgetSegs, seed) => {
          let x = seed;
          // mulberry32: the writes of thousands of turns from one drawn seed.
          const rand = (): number => {
            x = (x + 0x6d2b79f5) | 0;
            let t = Math.imul(x ^ (x >>> 15), 1 | x);
            t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
            return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
          };
          const budget = budgetSegs * SEG;
          const rig = new Rig(budget);
          const senders = Array.from({ length: n }, (_, i) => new Sender(i));
          let written = 0;
          const drain = (turn: number) => {
            // Those waiting when the turn ended are served in the next, in the order they queued,
            // once each, and each sender with output left is waiting.
            const expected = rig.sched.waiting;
            rig.endTurn();
            const served = rig.served.get(turn) ?? [];
            if (served.length !== expected) throw new Error(`turn ${turn}: ${served.length} of ${expected}`);
            if (new Set(served).size !== served.length) throw new Error(`turn ${turn}: served twice`);
            for (const s of senders) {
              if (s.backlog > 0 !== s.outputQueued)
                throw new Error(`sender ${s.id} has output and waits not`);
            }
          };
          for (let k = 0; k < turns; k++) {
            const writes = Math.floor(rand() * 20);
            for (let w = 0; w < writes; w++) {
              const s = senders[Math.floor(rand() * n)]!;
              const bytes = 1 + Math.floor(rand() * 20 * SEG);
              written += bytes;
              rig.write(s, bytes);
            }
            drain(rig.sched.turn + 1);
          }
          // Writes stop: everything drains within as many turns as the largest backlog needs.
          const most = Math.max(...senders.map((s) => s.backlog));
          const bound = Math.ceil(most / budget) + 1;
          let k = 0;
          while (rig.deferred.length > 0) {
            if (++k > bound) throw new Error(`still draining after ${bound} turns`);
            drain(rig.sched.turn + 1);
          }
          const sent = senders.reduce((sum, s) => sum + s.sent, 0);
          assert.equal(sent, written, 'every byte sent once');
          // The budget is checked before each segment: at most one segment over it.
          assert.ok(rig.maxSentInTurn < budget + SEG, `${rig.maxSentInTurn} in one turn, budget ${budget}`);
        },
      ),
      { numRuns: 5 },
    );
  });
});
