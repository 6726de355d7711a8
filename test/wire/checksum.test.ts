import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { foldChecksum, internetChecksum, onesSum, pseudoHeaderSum } from '../../src/wire/checksum.ts';
import fc from '../helpers/fc.ts';
import { TCP_SYN, u32 } from './fixtures.ts';

/** Straightforward reference: 16-bit words, odd tail padded with a zero low byte. */
function refSum(b: Uint8Array, off: number, len: number): number {
  let s = 0;
  for (let i = 0; i < len; i++) s += i % 2 === 0 ? b[off + i]! * 256 : b[off + i]!;
  return s;
}

function refFold(sum: bigint): number {
  while (sum > 0xffffn) sum = (sum & 0xffffn) + (sum >> 16n);
  return Number(~sum & 0xffffn);
}

describe('checksum', () => {
  test('RFC 1071 section 3 example', () => {
    const b = Uint8Array.of(0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7);
    assert.equal(onesSum(b, 0, 8), 0x2ddf0);
    assert.equal(foldChecksum(0x2ddf0), ~0xddf2 & 0xffff);
    assert.equal(internetChecksum(b, 0, 8), 0x220d);
  });

  test('a real IPv4 header sums to zero', () => {
    const h = TCP_SYN.slice(14, 34);
    assert.equal(internetChecksum(h, 0, 20), 0);
    h[8] = 63; // TTL changed, checksum not
    assert.notEqual(internetChecksum(h, 0, 20), 0);
  });

  test('odd trailing byte is the high byte of a zero-padded word', () => {
    assert.equal(onesSum(Uint8Array.of(0xab), 0, 1), 0xab00);
    assert.equal(onesSum(Uint8Array.of(1, 2, 3), 0, 3), 0x0102 + 0x0300);
    assert.equal(onesSum(new Uint8Array(0), 0, 0, 7), 7);
  });

  test('pseudo-header sum', () => {
    assert.equal(pseudoHeaderSum(0x0a000001, 0x0a000002, 6, 40), 0x0a00 + 1 + 0x0a00 + 2 + 6 + 40);
    assert.equal(pseudoHeaderSum(0xffffffff, 0xffffffff, 17, 0xffff), 4 * 0xffff + 17 + 0xffff);
  });

  // Mod 0xffff, like every one's complement sum: the 32-bit path folds its part before returning.
  test('onesSum matches the reference mod 0xffff at any offset and length', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat(), fc.nat(), (b, a, c) => {
        const off = b.length === 0 ? 0 : a % b.length;
        const len = b.length - off === 0 ? 0 : c % (b.length - off + 1);
        assert.equal(onesSum(b, off, len) % 0xffff, refSum(b, off, len) % 0xffff);
      }),
    );
  });

  // Rule: a running sum may be continued only after an even-length range, because words are
  // aligned to the start of the summed data, not to buffer offsets. Equal means equal in one's
  // complement arithmetic (mod 0xffff): the 32-bit path folds its part before returning.
  test('onesSum over ranges split at even lengths equals the whole mod 0xffff', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(), fc.nat(), (b, x, y) => {
        const s1 = 2 * (x % (Math.floor(b.length / 2) + 1));
        const s2 = s1 + 2 * (y % (Math.floor((b.length - s1) / 2) + 1));
        const split = onesSum(b, s2, b.length - s2, onesSum(b, s1, s2 - s1, onesSum(b, 0, s1)));
        assert.equal(foldChecksum(split), foldChecksum(onesSum(b, 0, b.length)));
        assert.equal(split % 0xffff, onesSum(b, 0, b.length) % 0xffff);
      }),
    );
  });

  test('foldChecksum equals a BigInt reference for sums beyond 32 bits', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (s) => {
        assert.equal(foldChecksum(s), refFold(BigInt(s)));
      }),
    );
    assert.equal(foldChecksum(0xffff), 0);
    assert.equal(foldChecksum(0), 0xffff);
    assert.equal(foldChecksum(0x1_0000_0000), refFold(0x1_0000_0000n));
  });

  test('storing the checksum makes the data verify', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 2, maxLength: 100 }), u32, (b, seed) => {
        const data = new Uint8Array(b.length + 2 + (b.length % 2));
        data.set(b);
        const at = (seed % (data.length >> 1)) * 2; // checksum word at an even position
        data[at] = 0;
        data[at + 1] = 0;
        const c = internetChecksum(data, 0, data.length);
        data[at] = c >>> 8;
        data[at + 1] = c & 0xff;
        assert.equal(internetChecksum(data, 0, data.length), 0);
      }),
    );
  });
});

describe('onesSum wide path', () => {
  test('32-bit word summing equals the 16-bit definition at every alignment and length', () => {
    const naive = (buf: Uint8Array, off: number, len: number): number => {
      let s = 0;
      for (let i = 0; i < len; i += 2) s += (buf[off + i]! << 8) | (i + 1 < len ? buf[off + i + 1]! : 0);
      return foldChecksum(s);
    };
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 3000 }),
        fc.nat(7),
        fc.nat(3000),
        fc.nat(3000),
        (bytes, shift, a, b) => {
          const backing = new Uint8Array(bytes.length + 8);
          backing.set(bytes, shift);
          const view = backing.subarray(shift, shift + bytes.length);
          const off = Math.min(a, view.length);
          const len = Math.min(b, view.length - off);
          return foldChecksum(onesSum(view, off, len)) === naive(view, off, len);
        },
      ),
      { numRuns: 400 },
    );
  });
});
