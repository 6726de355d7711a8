/**
 * A shared ring's first wrap must not throw away the optimised code of the functions that inlined
 * its methods. A ring wraps first well into a download, after its callers were optimised on the
 * straight case; a wrapped case written as a branch of its own (its loads and sums never run, so
 * without type feedback) was a deopt at that moment in every such caller, 6-8 times a NIC worker
 * in the connect burst of 1,000 downloads (BENCHMARKS.md, "V8 in the connect burst at 1,000").
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { ByteRing } from '../../src/state/byte-ring.ts';

setFlagsFromString('--allow-natives-syntax');
type Natives = { prepare(f: unknown): void; optimize(f: unknown): void; status(f: unknown): number };
const natives = new Function(`return {
  prepare: (f) => %PrepareFunctionForOptimization(f),
  optimize: (f) => %OptimizeFunctionOnNextCall(f),
  status: (f) => %GetOptimizationStatus(f),
}`)() as Natives;
/** V8's OptimizationStatus bit for code made by TurboFan (runtime-test.cc). */
const TURBOFANNED = 1 << 6;
const turbofanned = (f: unknown): boolean => (natives.status(f) & TURBOFANNED) !== 0;

const CAPACITY = 64;
/** Not a divisor of the capacity: the ring's bytes come to straddle its end. */
const CHUNK = 24;
const src = new Uint8Array(CHUNK).map((_, i) => i + 1);
const dst = new Uint8Array(CHUNK);

/** A sender's turn on a ring: queue a chunk, read it back, drop it. */
function pump(ring: ByteRing): number {
  ring.write(src, 0, CHUNK);
  const n = ring.peek(0, dst, 0, CHUNK);
  ring.consume(n);
  return n + ring.length;
}

test("a shared ring's wrap keeps the optimised code of a caller that inlined it", () => {
  const fresh = (): ByteRing => ByteRing.createShared(CAPACITY);
  // Type feedback from the straight case only, as a connection's first segments give it.
  natives.prepare(pump);
  for (let i = 0; i < 20; i++) assert.equal(pump(fresh()), CHUNK);
  natives.optimize(pump);
  assert.equal(pump(fresh()), CHUNK);
  assert.ok(turbofanned(pump), 'pump was not optimised; the test shows nothing');

  // Bring a ring to two chunks from the start without wrapping, outside pump.
  const ring = fresh();
  for (let i = 0; i < 2; i++) {
    ring.write(src, 0, CHUNK);
    ring.consume(CHUNK);
  }
  // Then through pump: the bytes straddle the end, the positions pass the capacity, and the
  // indexes pass twice the capacity (10 turns cover 240 bytes: 2 * 64 and more).
  for (let turn = 0; turn < 10; turn++) {
    assert.equal(pump(ring), CHUNK);
    assert.deepEqual(dst, src, `turn ${turn}: the bytes came back changed`);
    dst.fill(0);
  }
  assert.ok(turbofanned(pump), "the ring's wrap deoptimised its caller");
});
