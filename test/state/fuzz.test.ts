import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { StateValidationError } from '../../src/core/errors.ts';
import {
  decodeBatch,
  encodeBatch,
  STATE_CODEC_MAGIC,
  STATE_CODEC_VERSION,
} from '../../src/state/state-codec.ts';
import { validateTrees } from '../../src/state/validate.ts';
import fc from '../helpers/fc.ts';
import { arbTrees, sampleTrees } from './helpers.ts';

/** Deterministic xorshift32, so a failing case is replayed from its seed. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** Decode must either return trees that validate, or throw StateValidationError; nothing else. */
function tryDecode(buf: Uint8Array): 'ok' | 'refused' {
  try {
    const trees = decodeBatch(buf, 12345);
    validateTrees(trees);
    encodeBatch(trees, 0);
    return 'ok';
  } catch (e) {
    if (e instanceof StateValidationError) return 'refused';
    throw e;
  }
}

function memNow(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

describe('hostile input', () => {
  test('10,000 mutated encodings: only StateValidationError, and bounded memory', () => {
    const random = fc.sample(arbTrees, { numRuns: 30, seed: 42 }).sort((a, b) => b.length - a.length);
    const seeds = [sampleTrees(1), sampleTrees(3), random[0]!, random[1]!];
    const bases = seeds.map((t) => encodeBatch(t, 1000));
    const next = rng(0xc0ffee);
    const base0 = memNow();
    let peak = 0;
    let maxInput = 0;
    const outcomes = { ok: 0, refused: 0 };
    for (let i = 0; i < 10_000; i++) {
      const base = bases[i % bases.length]!;
      let buf: Uint8Array;
      switch (next() % 5) {
        case 0: {
          // A few flipped bits anywhere.
          buf = base.slice();
          const flips = 1 + (next() % 8);
          for (let k = 0; k < flips; k++) buf[next() % buf.length]! ^= 1 << (next() % 8);
          break;
        }
        case 1: {
          // Truncated, with the length field made consistent so the records are what fails.
          const cut = next() % base.length;
          buf = base.slice(0, cut);
          if (cut >= 12) new DataView(buf.buffer).setUint32(8, cut);
          break;
        }
        case 2: {
          // Random bytes behind a valid header.
          const len = 24 + (next() % 3000);
          buf = new Uint8Array(len);
          for (let k = 24; k < len; k++) buf[k] = next() & 0xff;
          const dv = new DataView(buf.buffer);
          dv.setUint32(0, STATE_CODEC_MAGIC);
          dv.setUint16(4, STATE_CODEC_VERSION);
          dv.setUint32(8, len);
          dv.setUint32(12, next() % 4);
          dv.setUint32(16, next() % 8);
          dv.setUint32(20, next() % 16);
          break;
        }
        case 3: {
          // Whole 32-bit words overwritten with extreme values (counts, lengths, indexes).
          buf = base.slice();
          const dv = new DataView(buf.buffer);
          const words = [0xffffffff, 0x7fffffff, 0x80000000, 0, 1, 0xfffffff0];
          for (let k = 0; k < 3; k++) dv.setUint32(next() % (buf.length - 3), words[next() % words.length]!);
          break;
        }
        default: {
          // Entirely random.
          buf = new Uint8Array(next() % 200);
          for (let k = 0; k < buf.length; k++) buf[k] = next() & 0xff;
        }
      }
      maxInput = Math.max(maxInput, buf.length);
      outcomes[tryDecode(buf)]++;
      if (i % 50 === 0) peak = Math.max(peak, memNow() - base0);
    }
    assert.ok(outcomes.refused > 5000, `refused ${outcomes.refused}`);
    // Inputs are at most a few KB; a decoder that allocated by declared counts or lengths would
    // reach gigabytes. The bound leaves room for garbage not yet collected.
    assert.ok(peak < 2000 * maxInput + 32 * 1024 * 1024, `memory grew by ${peak} bytes`);
  });

  test('2^32-1 at every u32 position: refused, or a legal value that re-encodes byte for byte, without allocating it', () => {
    const buf = encodeBatch(sampleTrees(1), 0, { soft: 'none' });
    // Every u32 position set to 2^32-1, one at a time: counts, ring lengths, indexes, and fields
    // where it is a legal value (sequence numbers). Accepted means it was read, not skipped.
    const before = memNow();
    let refused = 0;
    for (let at = 12; at + 4 <= buf.length; at++) {
      const b = buf.slice();
      new DataView(b.buffer).setUint32(at, 0xffffffff);
      let trees: ReturnType<typeof decodeBatch>;
      try {
        trees = decodeBatch(b, 0);
      } catch (e) {
        assert.ok(e instanceof StateValidationError, `at ${at}: ${String(e)}`);
        refused++;
        continue;
      }
      assert.deepEqual(encodeBatch(trees, 0, { soft: 'none' }), b, `accepted at ${at} but not as written`);
    }
    assert.ok(refused > 0, 'some position is a count or length');
    assert.ok(memNow() - before < 64 * 1024 * 1024);
  });

  test('non-buffers and non-finite clocks are refused', () => {
    assert.throws(() => decodeBatch('abc' as unknown as Uint8Array, 0), StateValidationError);
    assert.throws(() => decodeBatch(encodeBatch([], 0), Number.NaN), StateValidationError);
    assert.throws(() => encodeBatch([], Number.POSITIVE_INFINITY), StateValidationError);
    assert.throws(() => encodeBatch(null as never, 0), StateValidationError);
  });
});
