import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { InvalidArgumentError } from '../../src/core/errors.ts';
import { spawnWorker } from '../../src/nic/worker/spawn.ts';
import { ByteRing } from '../../src/state/byte-ring.ts';
import { copyShared, initSharedRing, sharedRingBytes } from '../../src/state/shared-ring.ts';
import fc from '../helpers/fc.ts';

type Op =
  | { op: 'write'; len: number; seed: number }
  | { op: 'peek'; from: number; len: number }
  | { op: 'consume'; n: number }
  | { op: 'read'; len: number }
  | { op: 'clear' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ op: fc.constant('write' as const), len: fc.nat(90), seed: fc.nat(255) }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ op: fc.constant('peek' as const), from: fc.nat(70), len: fc.nat(90) }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('consume' as const), n: fc.nat(90) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('read' as const), len: fc.nat(90) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('clear' as const) }) },
);

function bytes(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (seed + i * 31) & 0xff;
  return b;
}

describe('shared ByteRing', () => {
  test('behaves like the plain ring for any sequence of operations', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 64 }), fc.array(opArb, { maxLength: 300 }), (cap, ops) => {
        const plain = new ByteRing(cap, cap);
        const shared = ByteRing.createShared(cap);
        assert.equal(shared.capacity, cap);
        for (const o of ops) {
          switch (o.op) {
            case 'write': {
              const src = bytes(o.len, o.seed);
              assert.equal(shared.write(src), plain.write(src));
              break;
            }
            case 'peek': {
              const a = new Uint8Array(o.len + 3);
              const b = new Uint8Array(o.len + 3);
              assert.equal(shared.peek(o.from, a, 3, o.len), plain.peek(o.from, b, 3, o.len));
              assert.deepEqual(a, b);
              break;
            }
            case 'consume':
              shared.consume(o.n);
              plain.consume(o.n);
              break;
            case 'read': {
              const a = new Uint8Array(o.len);
              const b = new Uint8Array(o.len);
              assert.equal(shared.read(a), plain.read(b));
              assert.deepEqual(a, b);
              break;
            }
            case 'clear':
              shared.clear();
              plain.clear();
              break;
          }
          assert.equal(shared.length, plain.length);
          assert.equal(shared.free, plain.free);
        }
        assert.deepEqual(shared.toArray(), plain.toArray());
      }),
      { numRuns: 400 },
    );
  });

  test('an attached ring sees the same bytes and positions', () => {
    const a = ByteRing.createShared(32);
    a.write(bytes(20, 1));
    a.consume(5);
    const ref = a.shared;
    assert.ok(ref);
    const b = ByteRing.attachShared(ref);
    assert.equal(b.length, 15);
    assert.deepEqual(b.toArray(), bytes(20, 1).subarray(5));
    b.write(bytes(10, 9));
    assert.equal(a.length, 25);
    assert.equal(new ByteRing(8).shared, null);
  });

  test('several rings share one buffer without overlapping', () => {
    const sab = new SharedArrayBuffer(sharedRingBytes(13) + sharedRingBytes(40));
    const r1 = ByteRing.createShared(13, { sab, offset: 0 });
    const r2 = ByteRing.createShared(40, { sab, offset: sharedRingBytes(13) });
    assert.equal(r1.write(bytes(100, 3)), 13);
    assert.equal(r2.write(bytes(100, 7)), 40);
    assert.deepEqual(r1.toArray(), bytes(13, 3));
    assert.deepEqual(r2.toArray(), bytes(40, 7));
  });

  test('bad references are refused with a typed error', () => {
    const sab = new SharedArrayBuffer(64);
    assert.throws(() => ByteRing.attachShared({ sab, offset: 0, capacity: 16 }), InvalidArgumentError);
    initSharedRing(sab, 0, 16);
    assert.throws(() => ByteRing.attachShared({ sab, offset: 0, capacity: 17 }), InvalidArgumentError);
    assert.throws(() => ByteRing.attachShared({ sab, offset: 4, capacity: 16 }), InvalidArgumentError);
    assert.throws(() => ByteRing.attachShared({ sab, offset: 0, capacity: 4096 }), InvalidArgumentError);
    assert.throws(() => ByteRing.createShared(0), InvalidArgumentError);
    assert.throws(
      () =>
        ByteRing.attachShared({
          sab: new ArrayBuffer(64) as unknown as SharedArrayBuffer,
          offset: 0,
          capacity: 16,
        }),
      InvalidArgumentError,
    );
  });

  test('streams bytes through a real worker thread and back, verified by digest', async () => {
    const total = 8 * 1024 * 1024;
    const toWorker = ByteRing.createShared(65_537);
    const toHost = ByteRing.createShared(40_009);
    const worker = spawnWorker(new URL('./ring-worker.ts', import.meta.url), {
      workerData: { toWorker: toWorker.shared, toHost: toHost.shared, total },
    });
    const sent = createHash('sha256');
    const echoed = createHash('sha256');
    const src = new Uint8Array(12_345);
    const dst = new Uint8Array(30_000);
    let produced = 0;
    let received = 0;
    let x = 0x1234567;
    const done = new Promise<{ digest: string; seen: number }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    let pendingOff = src.length;
    while (received < total) {
      if (produced < total && pendingOff === src.length) {
        const n = Math.min(src.length, total - produced);
        for (let i = 0; i < n; i++) {
          x = (Math.imul(x, 1103515245) + 12345) >>> 0;
          src[i] = x >>> 24;
        }
        sent.update(src.subarray(0, n));
        pendingOff = src.length - n;
        if (n < src.length) src.copyWithin(pendingOff, 0, n);
      }
      if (pendingOff < src.length) {
        const w = toWorker.write(src, pendingOff, src.length - pendingOff);
        pendingOff += w;
        produced += w;
      }
      const r = toHost.read(dst);
      if (r > 0) {
        echoed.update(dst.subarray(0, r));
        received += r;
      }
      // Let the worker's messages and errors through now and then.
      if ((produced & 0xfffff) === 0) await new Promise((res) => setImmediate(res));
    }
    const result = await done;
    await worker.terminate();
    const digest = sent.digest('hex');
    assert.equal(result.seen, total);
    assert.equal(result.digest, digest);
    assert.equal(echoed.digest('hex'), digest);
  });
});

describe('copyShared', () => {
  const pattern = (n: number, seed: number): Uint8Array => {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = (i * 131 + seed * 7 + (i >>> 8)) & 0xff;
    return b;
  };

  test('copies exactly, to and from shared memory, at every alignment and across its chunks', () => {
    const shared = new Uint8Array(new SharedArrayBuffer(40_064));
    const plain = new Uint8Array(40_064);
    for (const n of [0, 1, 255, 256, 257, 16_383, 16_384, 16_385, 40_000]) {
      for (let so = 0; so < 8; so++) {
        for (let d = 0; d < 8; d++) {
          // Shared destination: a source with its own byteOffset (as a Buffer from node's pool has).
          const src = pattern(n + 16, so + d).subarray(3);
          shared.fill(0xee);
          copyShared(shared, d + 40, src, so, n, 'dst');
          assert.deepEqual(shared.subarray(d + 40, d + 40 + n), src.subarray(so, so + n));
          assert.equal(shared[d + 39], 0xee);
          if (d + 40 + n < shared.length) assert.equal(shared[d + 40 + n], 0xee);
          // Shared source into a plain buffer.
          plain.fill(0xee);
          copyShared(plain, d + 17, shared, d + 40, n, 'src');
          assert.deepEqual(plain.subarray(d + 17, d + 17 + n), src.subarray(so, so + n));
          assert.equal(plain[d + 16], 0xee);
          if (d + 17 + n < plain.length) assert.equal(plain[d + 17 + n], 0xee);
        }
      }
    }
  });

  test('a shared ring keeps large writes and peeks at odd positions byte for byte', () => {
    const cap = 50_000;
    const ring = ByteRing.createShared(cap);
    const model: number[] = [];
    const out = new Uint8Array(cap + 70);
    let seed = 1;
    for (let round = 0; round < 40; round++) {
      const len = 1_000 + ((round * 7_919) % 30_000);
      const chunk = pattern(len + 5, seed++).subarray(round % 5);
      const took = ring.write(chunk, 1, len);
      for (let i = 0; i < took; i++) model.push(chunk[1 + i]!);
      const from = round % 13;
      const want = Math.min(ring.length - from, 20_000 + round);
      const at = 66 + (round % 8);
      assert.equal(ring.peek(from, out, at, 20_000 + round), Math.max(0, want));
      for (let i = 0; i < want; i++)
        if (out[at + i] !== model[from + i]) assert.fail(`byte ${i} of peek ${round}`);
      const drop = Math.min(ring.length, 3_001 + round * 997);
      ring.consume(drop);
      model.splice(0, drop);
    }
  });
});
