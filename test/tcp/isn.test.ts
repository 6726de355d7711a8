import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { SeededRandom } from '../../src/core/random.ts';
import { sipHash24, sipKey } from '../../src/core/siphash.ts';
import { IsnGenerator } from '../../src/stack/tcp/isn.ts';

const A = 0x0a000001;
const B = 0x0a000002;

test("an ISN's offset is SipHash-2-4 of the four-tuple under the generator's secret, as Linux's", () => {
  const clock = new VirtualClock();
  const isn = new IsnGenerator(clock, new SeededRandom(7).fill(new Uint8Array(16)));
  // The same draw the generator made for its secret.
  const key = sipKey(new SeededRandom(7).fill(new Uint8Array(16)));
  const tuple = Buffer.alloc(12);
  tuple.writeUInt32BE(A, 0);
  tuple.writeUInt32BE(B, 4);
  tuple.writeUInt16BE(80, 8);
  tuple.writeUInt16BE(40000, 10);
  const m = Math.floor(clock.now() * 250) >>> 0;
  assert.equal(isn.next(A, 80, B, 40000), (m + sipHash24(key, tuple)) >>> 0);
});

test('an IPv6 four-tuple hashes both 16-byte addresses, not their handles', () => {
  const clock = new VirtualClock();
  const addr = (ip: number): Uint8Array => Uint8Array.from({ length: 16 }, (_, i) => (ip * 31 + i) & 0xff);
  const h1 = 2 ** 32 + 1;
  const h2 = 2 ** 32 + 2;
  const isn = new IsnGenerator(clock, new SeededRandom(3).fill(new Uint8Array(16)), addr);
  const key = sipKey(new SeededRandom(3).fill(new Uint8Array(16)));
  const tuple = Buffer.alloc(36);
  tuple.set(addr(h1), 0);
  tuple.set(addr(h2), 16);
  tuple.writeUInt16BE(443, 32);
  tuple.writeUInt16BE(51000, 34);
  const m = Math.floor(clock.now() * 250) >>> 0;
  assert.equal(isn.next(h1, 443, h2, 51000), (m + sipHash24(key, tuple)) >>> 0);
});

test('RFC 6528: the ISN of one four-tuple advances with a 4 µs clock', () => {
  const clock = new VirtualClock();
  const isn = new IsnGenerator(clock, new SeededRandom(1).fill(new Uint8Array(16)));
  const first = isn.next(A, 80, B, 40000);
  clock.advance(1);
  assert.equal((isn.next(A, 80, B, 40000) - first) >>> 0, 250);
  clock.advance(1000);
  assert.equal((isn.next(A, 80, B, 40000) - first) >>> 0, 250_250);
});

test('RFC 6528: every field of the four-tuple and the secret change the offset, which follows no pattern', () => {
  const clock = new VirtualClock();
  const isn = new IsnGenerator(clock, new SeededRandom(1).fill(new Uint8Array(16)));
  const base = isn.next(A, 80, B, 40000);
  assert.notEqual(isn.next(A + 1, 80, B, 40000), base);
  assert.notEqual(isn.next(A, 81, B, 40000), base);
  assert.notEqual(isn.next(A, 80, B + 1, 40000), base);
  assert.notEqual(isn.next(A, 80, B, 40001), base);
  // Addresses and ports are not interchangeable: swapping the two ends gives another offset.
  assert.notEqual(isn.next(B, 40000, A, 80), base);
  assert.notEqual(
    new IsnGenerator(clock, new SeededRandom(2).fill(new Uint8Array(16))).next(A, 80, B, 40000),
    base,
  );
  // An observer who opens 4,096 connections from consecutive ports sees offsets with no
  // step between them to extrapolate: all distinct, and each bit set about half the time.
  const seen = new Set<number>();
  const ones = new Array<number>(32).fill(0);
  const n = 4096;
  for (let p = 0; p < n; p++) {
    const f = isn.next(A, 80, B, 30000 + p);
    seen.add(f);
    for (let b = 0; b < 32; b++) ones[b]! += (f >>> b) & 1;
  }
  assert.ok(seen.size > n - 4, `${n - seen.size} repeated offsets`);
  // 4 standard deviations of a fair coin over 4,096 draws is 128.
  for (let b = 0; b < 32; b++) assert.ok(Math.abs(ones[b]! - n / 2) < 128, `bit ${b} set ${ones[b]} times`);
  const steps = new Set<number>();
  let prev = isn.next(A, 80, B, 30000);
  for (let p = 1; p < 64; p++) {
    const f = isn.next(A, 80, B, 30000 + p);
    steps.add((f - prev) >>> 0);
    prev = f;
  }
  assert.ok(steps.size > 60);
});

test("RFC 6528's timer reads wall-clock time where the clock has it, so two threads' clocks agree", () => {
  const secret = new SeededRandom(5).fill(new Uint8Array(16));
  // Two threads' real clocks at one instant: the worker's performance.now() started 1.5 s later.
  const host = { now: () => 2000, origin: 1_700_000_000_000, createTimer: () => null!, defer: () => {} };
  const worker = { now: () => 500, origin: 1_700_000_001_500, createTimer: () => null!, defer: () => {} };
  const a = new IsnGenerator(host, secret).next(A, 80, B, 40000);
  const b = new IsnGenerator(worker, secret).next(A, 80, B, 40000);
  assert.equal(b, a);
  // Without an origin (a virtual clock) the clock's own time is the timer.
  const v = new VirtualClock();
  const key = sipKey(secret);
  const tuple = Buffer.alloc(12);
  tuple.writeUInt32BE(A, 0);
  tuple.writeUInt32BE(B, 4);
  tuple.writeUInt16BE(80, 8);
  tuple.writeUInt16BE(40000, 10);
  assert.equal(
    new IsnGenerator(v, secret).next(A, 80, B, 40000),
    (Math.floor(v.now() * 250) + sipHash24(key, tuple)) >>> 0,
  );
});
