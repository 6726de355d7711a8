import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { SeededRandom } from '../../src/core/random.ts';
import { Stack } from '../../src/stack/stack.ts';
import {
  ByteRing,
  RING_POOL_TRIM_MS,
  RingPoolTrim,
  ringPool,
  trimRingPool,
} from '../../src/state/byte-ring.ts';

/** `n` rings' 64 KiB of memory given to the pool, as `n` connections that ended give theirs. */
function endConnections(n: number): void {
  const data = new Uint8Array(64 * 1024);
  const rings: ByteRing[] = [];
  for (let i = 0; i < n; i++) {
    const r = new ByteRing(64 * 1024);
    r.write(data);
    r.clear();
    rings.push(r);
  }
  for (const r of rings) r.release();
}

/** The pool emptied: two trims with no take between let go of everything. */
function emptyPool(): void {
  trimRingPool();
  trimRingPool();
  assert.equal(ringPool.pooledBytes, 0);
}

test('a trim lets go of the pooled ring memory no take needed since the last trim, and keeps what the churn takes', () => {
  emptyPool();
  endConnections(8);
  assert.equal(ringPool.pooledBytes, 8 * 64 * 1024, 'eight rings given back');
  // Given back since the last trim: none has been idle a whole interval yet.
  assert.equal(trimRingPool(), 0);
  // Churn: three connections take rings and give them back within the interval.
  const reused0 = ringPool.reused;
  const rings = [0, 1, 2].map(() => new ByteRing(64 * 1024));
  assert.equal(ringPool.reused - reused0, 3, 'taken from the pool');
  for (const r of rings) r.release();
  // Five were never reached by a take: those go; the three the churn took stay for it.
  assert.equal(trimRingPool(), 5 * 64 * 1024);
  assert.equal(ringPool.pooledBytes, 3 * 64 * 1024);
  // An interval with no take at all: the rest goes too.
  assert.equal(trimRingPool(), 3 * 64 * 1024);
  assert.equal(ringPool.pooledBytes, 0);
});

test("a stack trims its thread's ring pool on its clock while it runs: what ended connections gave it does not stay for good", () => {
  emptyPool();
  const clock = new VirtualClock();
  const stack = new Stack({ clock, random: new SeededRandom(1) });
  endConnections(400);
  const held = ringPool.pooledBytes;
  assert.ok(held > 0, 'the ended connections gave their memory to the pool');
  assert.equal(held, Math.min(ringPool.limit, 400 * 64 * 1024));
  clock.advance(2 * RING_POOL_TRIM_MS + 1);
  assert.equal(ringPool.pooledBytes, 0, 'two intervals without a take: all of it let go of');
  // Closed, the stack holds the trim no longer: what is given back now stays in the pool.
  stack.close();
  endConnections(2);
  clock.advance(5 * RING_POOL_TRIM_MS);
  assert.equal(ringPool.pooledBytes, 2 * 64 * 1024);
  emptyPool();
});

test('one trim per thread, on the clock of its oldest holder still holding', () => {
  emptyPool();
  const a = new VirtualClock();
  const b = new VirtualClock();
  const letA = RingPoolTrim.hold(a);
  const letB = RingPoolTrim.hold(b);
  endConnections(2);
  // B's clock drives nothing while A holds.
  b.advance(5 * RING_POOL_TRIM_MS);
  assert.equal(ringPool.pooledBytes, 2 * 64 * 1024);
  letA();
  letA();
  // Now B's does.
  b.advance(2 * RING_POOL_TRIM_MS + 1);
  assert.equal(ringPool.pooledBytes, 0);
  letB();
});
