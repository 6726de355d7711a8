import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { internetChecksum } from '../../src/wire/checksum.ts';
import { createIpv4Header, decodeIpv4, encodeIpv4, IpProto, type Ipv4Header } from '../../src/wire/ipv4.ts';
import fc from '../helpers/fc.ts';
import { HOST_IP, ICMP_ECHO_REPLY, PEER_IP, TCP_SYN, UDP_DATAGRAM, u8, u16, u32 } from './fixtures.ts';

/** A valid header with `opts` appended (length a multiple of 4) and a correct checksum. */
function withOptions(opts: number[], totalExtra = 0): Uint8Array {
  const b = new Uint8Array(20 + opts.length + totalExtra);
  b.set(TCP_SYN.subarray(14, 34));
  b.set(opts, 20);
  b[0] = 0x40 | ((20 + opts.length) >> 2);
  b[2] = 0;
  b[3] = b.length;
  b[10] = 0;
  b[11] = 0;
  const c = internetChecksum(b, 0, 20 + opts.length);
  b[10] = c >> 8;
  b[11] = c & 255;
  return b;
}

describe('IPv4 known answers', () => {
  test('decodes the SYN, the echo reply and the UDP datagram', () => {
    const h = createIpv4Header();
    assert.equal(decodeIpv4(TCP_SYN, 14, TCP_SYN.length - 14, h), null);
    assert.deepEqual(h, {
      headerLength: 20,
      tos: 0,
      totalLength: 60,
      id: 0x5093,
      df: true,
      mf: false,
      fragOffset: 0,
      ttl: 64,
      protocol: IpProto.TCP,
      checksum: 0xd626,
      src: HOST_IP,
      dst: PEER_IP,
    });
    assert.equal(decodeIpv4(ICMP_ECHO_REPLY, 14, ICMP_ECHO_REPLY.length - 14, h), null);
    assert.equal(h.protocol, IpProto.ICMP);
    assert.equal(h.df, false);
    assert.equal(h.totalLength, 49);
    assert.equal(decodeIpv4(UDP_DATAGRAM, 14, UDP_DATAGRAM.length - 14, h), null);
    assert.equal(h.protocol, IpProto.UDP);
    assert.equal(h.checksum, 0x64b1);
  });

  test('re-encoding reproduces the kernel headers, checksum included', () => {
    const h = createIpv4Header();
    const out = new Uint8Array(20);
    for (const f of [TCP_SYN, ICMP_ECHO_REPLY, UDP_DATAGRAM]) {
      assert.equal(decodeIpv4(f, 14, f.length - 14, h), null);
      const sum = h.checksum;
      assert.equal(encodeIpv4(h, out, 0), 20);
      assert.equal(h.checksum, sum);
      assert.deepEqual(out, f.subarray(14, 34));
    }
  });

  test('bytes after the total length are padding', () => {
    const padded = new Uint8Array(TCP_SYN.length + 10);
    padded.set(TCP_SYN);
    const h = createIpv4Header();
    assert.equal(decodeIpv4(padded, 14, padded.length - 14, h), null);
    assert.equal(h.totalLength, 60);
  });
});

describe('IPv4 errors', () => {
  const h = createIpv4Header();
  const hdr = () => TCP_SYN.slice(14);
  test('truncated, version, lengths, checksum', () => {
    assert.equal(decodeIpv4(TCP_SYN, 14, 19, h), 'truncated');
    assert.equal(decodeIpv4(TCP_SYN, 14, 59, h), 'truncated'); // total length 60 > 59
    let b = hdr();
    b[0] = 0x65;
    assert.equal(decodeIpv4(b, 0, b.length, h), 'bad-version');
    b = hdr();
    b[0] = 0x44;
    assert.equal(decodeIpv4(b, 0, b.length, h), 'bad-header-length');
    b = hdr();
    b[0] = 0x4f; // a 60-byte header cannot fit in 40 bytes
    assert.equal(decodeIpv4(b, 0, 40, h), 'truncated');
    b = hdr();
    b[3] = 19;
    b[2] = 0;
    assert.equal(decodeIpv4(b, 0, b.length, h, false), 'bad-length');
    b = hdr();
    b[8] = 1; // TTL without checksum update
    assert.equal(decodeIpv4(b, 0, b.length, h), 'bad-checksum');
    assert.equal(decodeIpv4(b, 0, b.length, h, false), null);
    assert.equal(h.ttl, 1);
  });

  test('options: well formed ones are accepted, broken ones are bad-option', () => {
    assert.equal(decodeIpv4(withOptions([1, 1, 1, 0]), 0, 24, h), null);
    assert.equal(h.headerLength, 24);
    // record route, length 7, pointer 4, one empty slot; then EOL
    assert.equal(decodeIpv4(withOptions([7, 7, 4, 0, 0, 0, 0, 0]), 0, 28, h), null);
    assert.equal(decodeIpv4(withOptions([0, 99, 99, 99]), 0, 24, h), null); // after EOL anything goes
    assert.equal(decodeIpv4(withOptions([7, 1, 0, 0]), 0, 24, h), 'bad-option');
    assert.equal(decodeIpv4(withOptions([7, 8, 4, 0]), 0, 24, h), 'bad-option');
    assert.equal(decodeIpv4(withOptions([1, 1, 1, 7]), 0, 24, h), 'bad-option');
  });
});

describe('IPv4 round-trip', () => {
  test('encode then decode returns every field', () => {
    const enc = createIpv4Header();
    const dec = createIpv4Header();
    const buf = new Uint8Array(80);
    const arb = fc.record({
      tos: u8,
      id: u16,
      df: fc.boolean(),
      mf: fc.boolean(),
      fragOffset: fc.integer({ min: 0, max: 0x1fff }).map((x) => x * 8),
      ttl: u8,
      protocol: u8,
      src: u32,
      dst: u32,
      extra: fc.integer({ min: 0, max: 40 }),
      off: fc.integer({ min: 0, max: 7 }),
    });
    fc.assert(
      fc.property(arb, ({ extra, off, ...v }) => {
        Object.assign(enc, v, { totalLength: 20 + extra });
        assert.equal(encodeIpv4(enc, buf, off), 20);
        assert.equal(decodeIpv4(buf, off, 20 + extra, dec), null);
        assert.deepEqual(dec, enc as Ipv4Header);
      }),
    );
  });
});
