import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ChargeMeter, RealClock, VirtualClock } from '../../src/core/clock.ts';
import { SeededRandom } from '../../src/core/random.ts';
import { ByteRing } from '../../src/state/byte-ring.ts';

describe('VirtualClock', () => {
  test('fires timers in deadline order, ties in arming order', () => {
    const c = new VirtualClock();
    const seen: string[] = [];
    const a = c.createTimer(() => seen.push(`a@${c.now()}`));
    const b = c.createTimer(() => seen.push(`b@${c.now()}`));
    const d = c.createTimer(() => seen.push(`d@${c.now()}`));
    b.arm(10);
    a.arm(5);
    d.arm(10);
    c.advance(20);
    assert.deepEqual(seen, ['a@5', 'b@10', 'd@10']);
    assert.equal(c.now(), 20);
  });

  test('re-arming replaces the earlier deadline and disarm cancels', () => {
    const c = new VirtualClock();
    let fired = 0;
    const t = c.createTimer(() => fired++);
    t.arm(5);
    t.arm(50);
    c.advance(10);
    assert.equal(fired, 0);
    assert.equal(t.deadline, 50);
    t.disarm();
    c.advance(100);
    assert.equal(fired, 0);
    assert.equal(c.pendingRefs, 0);
  });

  test('timers re-armed and disarmed by the thousand fire in deadline, then arming order', () => {
    // Enough stale entries to compact the heap many times over (a failover re-arms 10,000 timers
    // in one turn); the order must be the model's: deadline, then the last arming.
    const c = new VirtualClock();
    const r = new SeededRandom(9);
    const seen: number[] = [];
    const armedAt = new Map<number, { at: number; seq: number }>();
    let seq = 0;
    const timers = Array.from({ length: 3000 }, (_, i) => c.createTimer(() => seen.push(i)));
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < timers.length; i++) {
        const x = r.float();
        if (x < 0.2) {
          timers[i]!.disarm();
          armedAt.delete(i);
        } else if (x < 0.9) {
          const at = 1 + (r.u32() % 500);
          timers[i]!.armAt(at);
          armedAt.set(i, { at, seq: seq++ });
        }
      }
    }
    c.advance(1000);
    const model = [...armedAt].sort((a, b) => a[1].at - b[1].at || a[1].seq - b[1].seq).map(([i]) => i);
    assert.deepEqual(seen, model);
    assert.equal(c.pending, 0);
  });

  test('unref timers do not count as pending work', () => {
    const c = new VirtualClock();
    const t = c.createTimer(() => {});
    t.arm(5);
    assert.equal(c.pendingRefs, 1);
    t.unref();
    assert.equal(c.pendingRefs, 0);
    t.arm(7);
    assert.equal(c.pendingRefs, 0);
    assert.equal(c.nextDeadline(), 7);
  });

  test('defer runs at the current instant, after already-due timers', () => {
    const c = new VirtualClock();
    const seen: number[] = [];
    c.createTimer(() => seen.push(1)).arm(0);
    c.defer(() => seen.push(2));
    c.runDue();
    assert.deepEqual(seen, [1, 2]);
  });
});

describe('ChargeMeter', () => {
  test('charges the work of a run, less what simulated hardware paused it for', () => {
    const clock = new VirtualClock(0);
    let work = 0;
    const m = new ChargeMeter(clock, () => work);
    const outer = { pause: () => undefined, resume: () => undefined };
    clock.meter = outer;
    m.run(() => {
      assert.equal(clock.meter, m, "the meter is the clock's for the run");
      work += 3;
      // Hardware, as the switch does: pause, its own work, resume.
      clock.meter!.pause();
      assert.equal(clock.now(), 3, 'charged so far, at the pause');
      work += 100;
      clock.meter!.resume();
      work += 2;
    });
    assert.equal(clock.now(), 5);
    assert.equal(clock.meter, outer, 'the previous meter is back');
    // A resume after the run does not start it again.
    m.resume();
    work += 7;
    m.pause();
    assert.equal(clock.now(), 5);
  });
});

describe('SeededRandom', () => {
  test('the same seed gives the same sequence, another seed another', () => {
    const a = new SeededRandom(42);
    const b = new SeededRandom(42);
    const c = new SeededRandom(43);
    const sa = Array.from({ length: 8 }, () => a.u32());
    assert.deepEqual(
      sa,
      Array.from({ length: 8 }, () => b.u32()),
    );
    assert.notDeepEqual(
      sa,
      Array.from({ length: 8 }, () => c.u32()),
    );
  });

  test('float stays in [0, 1) and is roughly uniform', () => {
    const r = new SeededRandom(1);
    let sum = 0;
    for (let i = 0; i < 10000; i++) {
      const f = r.float();
      assert.ok(f >= 0 && f < 1);
      sum += f;
    }
    assert.ok(Math.abs(sum / 10000 - 0.5) < 0.02);
  });
});

describe('ByteRing', () => {
  test('wraps, grows to its maximum and refuses beyond it', () => {
    const r = new ByteRing(16, 64);
    const src = Uint8Array.from({ length: 100 }, (_, i) => i);
    assert.equal(r.write(src, 0, 10), 10);
    const out = new Uint8Array(8);
    assert.equal(r.read(out), 8);
    assert.deepEqual([...out], [0, 1, 2, 3, 4, 5, 6, 7]);
    assert.equal(r.write(src, 10, 90), 62);
    assert.equal(r.length, 64);
    assert.equal(r.free, 0);
    const all = r.toArray();
    assert.deepEqual([...all], [...src.subarray(8, 72)]);
    const mid = new Uint8Array(4);
    r.peek(30, mid, 0, 4);
    assert.deepEqual([...mid], [38, 39, 40, 41]);
  });
});

describe('RealClock', () => {
  test('a timer whose deadline only moves later sets one Node timer, and fires at the last deadline', async () => {
    const clock = new RealClock();
    const real = globalThis.setTimeout;
    let sets = 0;
    globalThis.setTimeout = ((...a: Parameters<typeof setTimeout>) => {
      sets++;
      return real(...a);
    }) as typeof setTimeout;
    let firedAt = -1;
    let last = 0;
    let fired = (): void => {};
    try {
      const t = clock.createTimer(() => {
        firedAt = clock.now();
        fired();
      });
      // As a retransmission deadline pushed on by each ACK. A second ahead, so that the deadline
      // of 10 ms below is earlier than the Node timer set here however long a loaded machine
      // holds this loop up (at 20 ms, 10 ms after a stall of 10 ms was no longer earlier).
      for (let i = 0; i < 50; i++) {
        t.arm(1000 + i);
        last = t.deadline;
      }
      assert.equal(sets, 1);
      assert.equal(t.armed, true);
      // Earlier than the Node timer set: that needs a timer of its own.
      t.arm(10);
      last = t.deadline;
      assert.equal(sets, 2);
      t.arm(60);
      last = t.deadline;
      assert.equal(sets, 2);
      // Until it fires (a fixed wait could end first on a loaded machine); the limit only stops a hang.
      await new Promise<void>((res, rej) => {
        const limit = real(() => rej(new Error(`not fired in 30 s, deadline ${last}`)), 30_000);
        fired = () => {
          clearTimeout(limit);
          res();
        };
      });
      assert.ok(firedAt >= last - 1, `fired at ${firedAt}, deadline ${last}`);
      assert.equal(t.armed, false);
      assert.equal(t.deadline, Number.POSITIVE_INFINITY);
      t.arm(5);
      t.disarm();
      firedAt = -1;
      await new Promise<void>((res) => real(res, 30));
      assert.equal(firedAt, -1);
    } finally {
      globalThis.setTimeout = real;
    }
  });
});
