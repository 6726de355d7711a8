import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createEthernetHeader, decodeEthernet, EtherType } from '../../src/wire/ethernet.ts';
import { createIcmpv6Header, decodeIcmpv6 } from '../../src/wire/icmpv6.ts';
import { createIpv6Header, decodeIpv6, IPV6_MAX_EXT_HEADERS, Ipv6Next } from '../../src/wire/ipv6.ts';
import { createNdMessage, decodeNd, ND_MAX_PREFIXES } from '../../src/wire/ndp.ts';
import fc from '../helpers/fc.ts';
import { DECODE_ERRORS } from './fixtures.ts';
import { FRAMES6 } from './fixtures6.ts';
import { mutate, mutations } from './mutate.ts';

const eth = createEthernetHeader();
const ip = createIpv6Header();
const icmp = createIcmpv6Header();
const nd = createNdMessage();

function ok(r: string | null): boolean {
  if (r !== null) assert.ok(DECODE_ERRORS.has(r), `unknown decode error ${r}`);
  return r === null;
}

/** Whatever the walk reports must lie inside the packet it was given. */
function checkIp(off: number, len: number): void {
  const end = off + 40 + ip.payloadLength;
  assert.ok(end <= off + len);
  assert.ok(
    ip.payloadOffset >= off + 40 && ip.payloadOffset + ip.payloadLen === end,
    'payload inside packet',
  );
  assert.ok(ip.extCount >= 0 && ip.extCount <= IPV6_MAX_EXT_HEADERS);
  assert.ok(ip.protocolPointer >= 6 && off + ip.protocolPointer < end + 1);
  assert.ok(ip.flowLabel <= 0xfffff && ip.trafficClass <= 255);
}

function decodeFrame(buf: Uint8Array, off: number, len: number, verify: boolean): void {
  if (!ok(decodeEthernet(buf, off, len, eth)) || eth.etherType !== EtherType.IPV6) return;
  const l3 = off + eth.headerLength;
  const l3len = len - eth.headerLength;
  const r = decodeIpv6(buf, l3, l3len, ip);
  if (r !== null) {
    assert.ok(DECODE_ERRORS.has(r));
    if (ip.problemCode >= 0) assert.ok(ip.problemPointer >= 0 && ip.problemPointer < 40 + ip.payloadLength);
    return;
  }
  checkIp(l3, l3len);
  if (ip.protocol !== Ipv6Next.ICMPV6 || ip.fragment) return;
  if (!ok(decodeIcmpv6(buf, ip.payloadOffset, ip.payloadLen, ip.src, ip.dst, icmp, verify))) return;
  assert.equal(icmp.bodyOffset, ip.payloadOffset + 8);
  if (icmp.type >= 133 && icmp.type <= 137 && ok(decodeNd(buf, ip.payloadOffset, ip.payloadLen, nd))) {
    assert.ok(nd.prefixCount <= ND_MAX_PREFIXES);
    assert.ok(nd.sourceLla >= -1 && nd.sourceLla <= 0xffffffffffff);
    assert.ok(nd.targetLla >= -1 && nd.targetLla <= 0xffffffffffff);
  }
}

function decodeAll(b: Uint8Array, off: number, len: number, verify: boolean): void {
  decodeFrame(b, off, len, verify);
  if (ok(decodeIpv6(b, off, len, ip))) checkIp(off, len);
  ok(decodeIcmpv6(b, off, len, ip.src, ip.dst, icmp, verify));
  ok(decodeNd(b, off, len, nd));
}

// The bytes that steer the walk: payload length, next header, extension lengths, option TLVs.
const mutation = mutations([
  [18, 19, 20],
  [54, 55, 56, 57, 58, 59],
  [62, 63, 64, 65, 78, 79, 80, 81],
]);

describe('IPv6, ICMPv6 and ND decoders face hostile input', () => {
  test('the kernel fixtures decode cleanly', () => {
    for (const f of FRAMES6) {
      assert.equal(decodeIpv6(f, 14, f.length - 14, ip), null);
      decodeFrame(f, 0, f.length, true);
    }
  });

  test('random bytes, offsets and lengths never throw', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 300 }),
        fc.integer({ min: -10, max: 310 }),
        fc.integer({ min: -10, max: 310 }),
        fc.boolean(),
        (b, off, len, verify) => {
          decodeAll(b, 0, b.length, verify);
          decodeAll(b, off, len, verify);
          if (off < 0 || len < 0 || off + len > b.length)
            assert.equal(decodeIpv6(b, off, len, ip), 'truncated');
        },
      ),
      { numRuns: 3000 },
    );
  });

  test('random bytes behind a valid IPv6 header walk safely through any extension chain', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(0, 43, 44, 60, 59, 6, 17, 58),
        fc.uint8Array({ minLength: 0, maxLength: 1500 }),
        (next, rest) => {
          const b = new Uint8Array(40 + rest.length);
          b[0] = 0x60;
          b[4] = rest.length >>> 8;
          b[5] = rest.length & 0xff;
          b[6] = next;
          b.set(rest, 40);
          // Bias the chain towards extension headers: each 8-byte step's first byte names one.
          for (let i = 40; i < b.length; i += 8) if (b[i]! & 1) b[i] = [0, 43, 44, 60][b[i]! % 4]!;
          if (ok(decodeIpv6(b, 0, b.length, ip))) checkIp(0, b.length);
        },
      ),
      { numRuns: 3000 },
    );
  });

  test('mutated kernel frames never throw and decode consistently', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...FRAMES6),
        fc.array(mutation, { minLength: 1, maxLength: 5 }),
        fc.boolean(),
        (frame, muts, verify) => {
          const b = mutate(frame, muts);
          decodeAll(b, 0, b.length, verify);
        },
      ),
      { numRuns: 5000 },
    );
  });

  test('with checksums verified, any bit flip in an ICMPv6 message or the addresses is rejected', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...FRAMES6.filter((f) => f[20] === 58)),
        fc.nat(),
        fc.integer({ min: 0, max: 7 }),
        (f, at, bit) => {
          const b = f.slice();
          const pos = 22 + (at % (b.length - 22)); // source address onwards
          b[pos]! ^= 1 << bit;
          if (decodeIpv6(b, 14, b.length - 14, ip) !== null) return;
          assert.equal(
            decodeIcmpv6(b, ip.payloadOffset, ip.payloadLen, ip.src, ip.dst, icmp),
            'bad-checksum',
          );
        },
      ),
      { numRuns: 2000 },
    );
  });
});
