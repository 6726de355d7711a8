import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  createTcpHeader,
  decodeTcp,
  encodeTcpHeader,
  finishTcpChecksum,
  resetTcpOptions,
  TcpFlag,
  type TcpHeader,
  tcpOptionsLength,
} from '../../src/wire/tcp.ts';
import fc from '../helpers/fc.ts';
import { HOST_IP, PEER_IP, TCP_SYN, u8, u16, u32 } from './fixtures.ts';

const SEG_OFF = 34;
const SEG_LEN = TCP_SYN.length - SEG_OFF;

/** A segment with a 20-byte header followed by `opts` (padded by the caller) and a checksum. */
function segmentWithOptions(opts: number[], verify = true): { buf: Uint8Array; len: number } {
  const h = createTcpHeader();
  h.srcPort = 1;
  h.dstPort = 2;
  h.flags = TcpFlag.ACK;
  const buf = new Uint8Array(20 + opts.length + 4);
  encodeTcpHeader(h, buf, 0);
  buf.set(opts, 20);
  buf[12] = ((20 + opts.length) >> 2) << 4;
  const len = buf.length;
  if (verify) finishTcpChecksum(buf, 0, len, HOST_IP, PEER_IP);
  return { buf, len };
}

describe('TCP known answers', () => {
  test('decodes a Linux SYN', () => {
    const h = createTcpHeader();
    assert.equal(decodeTcp(TCP_SYN, SEG_OFF, SEG_LEN, HOST_IP, PEER_IP, h), null);
    assert.equal(h.srcPort, 59700);
    assert.equal(h.dstPort, 8080);
    assert.equal(h.seq, 0xbabfe5fc);
    assert.equal(h.ack, 0);
    assert.equal(h.flags, TcpFlag.SYN);
    assert.equal(h.window, 64240);
    assert.equal(h.checksum, 0x5b3d);
    assert.equal(h.urgent, 0);
    assert.equal(h.headerLength, 40);
    assert.equal(h.mss, 1460);
    assert.equal(h.sackPermitted, true);
    assert.equal(h.hasTimestamps, true);
    assert.equal(h.tsVal, 0x30c40387);
    assert.equal(h.tsEcr, 0);
    assert.equal(h.wscale, 10);
    assert.equal(h.sackCount, 0);
  });

  test('re-encoding the SYN reproduces the kernel bytes and checksum', () => {
    const h = createTcpHeader();
    assert.equal(decodeTcp(TCP_SYN, SEG_OFF, SEG_LEN, HOST_IP, PEER_IP, h), null);
    assert.equal(tcpOptionsLength(h), 20);
    const out = new Uint8Array(SEG_LEN);
    assert.equal(encodeTcpHeader(h, out, 0), 40);
    finishTcpChecksum(out, 0, SEG_LEN, HOST_IP, PEER_IP);
    assert.deepEqual(out, TCP_SYN.subarray(SEG_OFF));
  });

  test('checksum depends on the pseudo-header addresses', () => {
    const h = createTcpHeader();
    assert.equal(decodeTcp(TCP_SYN, SEG_OFF, SEG_LEN, HOST_IP, PEER_IP + 1, h), 'bad-checksum');
    assert.equal(decodeTcp(TCP_SYN, SEG_OFF, SEG_LEN, PEER_IP, HOST_IP, h), null); // sum is symmetric
    assert.equal(decodeTcp(TCP_SYN, SEG_OFF, SEG_LEN, HOST_IP, PEER_IP + 1, h, false), null);
  });

  test('a flipped payload-free bit is caught by the checksum', () => {
    const b = TCP_SYN.slice();
    b[SEG_OFF + 5] ^= 0x10;
    assert.equal(decodeTcp(b, SEG_OFF, SEG_LEN, HOST_IP, PEER_IP, createTcpHeader()), 'bad-checksum');
  });
});

describe('TCP options', () => {
  test('EOL ends the list, NOP and unknown options are skipped', () => {
    const h = createTcpHeader();
    // NOP, unknown kind 30 len 4, MSS, EOL, then garbage that must be ignored
    const { buf, len } = segmentWithOptions([1, 30, 4, 0xaa, 0xbb, 2, 4, 0x05, 0xdc, 0, 0xff, 0xff]);
    assert.equal(decodeTcp(buf, 0, len, HOST_IP, PEER_IP, h), null);
    assert.equal(h.mss, 1500);
    assert.equal(h.wscale, -1);
    assert.equal(h.headerLength, 32);
  });

  test('malformed options are bad-option', () => {
    const cases: number[][] = [
      [2, 3, 0, 1], // MSS with length 3
      [3, 4, 7, 1], // window scale with length 4
      [4, 3, 0, 1], // SACK-permitted with length 3
      [8, 8, 0, 0, 0, 0, 0, 0], // timestamps with length 8
      [5, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], // SACK with length not 2+8n
      [5, 2, 1, 1], // SACK with no block
      [30, 1, 1, 1], // length below 2
      [30, 0, 1, 1], // length 0 (would loop forever if accepted)
      [1, 1, 1, 30], // length byte missing at end of header
      [1, 1, 30, 5], // runs past the header
    ];
    for (const opts of cases) {
      const { buf, len } = segmentWithOptions(opts);
      assert.equal(decodeTcp(buf, 0, len, HOST_IP, PEER_IP, createTcpHeader()), 'bad-option', String(opts));
    }
  });

  test('SACK blocks decode in order', () => {
    const opts = [1, 1, 5, 26];
    for (const v of [0x10, 0x20, 0xfffffff0, 0x10, 0x7fffffff, 0x80000000])
      opts.push(v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255);
    const { buf, len } = segmentWithOptions(opts);
    const h = createTcpHeader();
    assert.equal(decodeTcp(buf, 0, len, HOST_IP, PEER_IP, h), null);
    assert.equal(h.sackCount, 3);
    assert.deepEqual(
      [...h.sackBlocks.subarray(0, 6)],
      [0x10, 0x20, 0xfffffff0, 0x10, 0x7fffffff, 0x80000000],
    );
  });

  test('a reused header forgets options of the previous segment', () => {
    const h = createTcpHeader();
    assert.equal(decodeTcp(TCP_SYN, SEG_OFF, SEG_LEN, HOST_IP, PEER_IP, h), null);
    const { buf, len } = segmentWithOptions([]);
    assert.equal(decodeTcp(buf, 0, len, HOST_IP, PEER_IP, h), null);
    assert.equal(h.mss, -1);
    assert.equal(h.wscale, -1);
    assert.equal(h.sackPermitted, false);
    assert.equal(h.hasTimestamps, false);
    assert.equal(h.headerLength, 20);
  });

  test('option layouts', () => {
    const h = createTcpHeader();
    const buf = new Uint8Array(60);
    const opts = () => [...buf.subarray(20, h.headerLength)];
    h.sackPermitted = true;
    encodeTcpHeader(h, buf, 0);
    assert.deepEqual(opts(), [1, 1, 4, 2]);
    h.hasTimestamps = true;
    h.tsVal = 1;
    h.tsEcr = 2;
    encodeTcpHeader(h, buf, 0);
    assert.deepEqual(opts(), [4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    h.sackPermitted = false;
    encodeTcpHeader(h, buf, 0);
    assert.deepEqual(opts(), [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    resetTcpOptions(h);
    h.wscale = 14;
    h.sackCount = 1;
    h.sackBlocks.set([5, 9]);
    encodeTcpHeader(h, buf, 0);
    assert.deepEqual(opts(), [1, 3, 3, 14, 1, 1, 5, 10, 0, 0, 0, 5, 0, 0, 0, 9]);
  });

  test('SACK blocks that do not fit in 40 bytes are dropped', () => {
    const h = createTcpHeader();
    h.sackCount = 4;
    assert.equal(tcpOptionsLength(h), 36);
    h.hasTimestamps = true;
    assert.equal(tcpOptionsLength(h), 12 + 4 + 24);
    h.mss = 1460;
    h.wscale = 7;
    h.sackPermitted = true;
    assert.equal(tcpOptionsLength(h), 20 + 4 + 16);
    const buf = new Uint8Array(60);
    assert.equal(encodeTcpHeader(h, buf, 0), 60);
    const d = createTcpHeader();
    finishTcpChecksum(buf, 0, 60, 1, 2);
    assert.equal(decodeTcp(buf, 0, 60, 1, 2, d), null);
    assert.equal(d.sackCount, 2);
  });
});

const tcpArb = fc.record({
  srcPort: u16,
  dstPort: u16,
  seq: u32,
  ack: u32,
  flags: u8,
  window: u16,
  urgent: u16,
  mss: fc.option(u16, { nil: -1 }),
  wscale: fc.option(u8, { nil: -1 }),
  sackPermitted: fc.boolean(),
  ts: fc.option(fc.tuple(u32, u32), { nil: null }),
  sack: fc.array(u32, { maxLength: 8 }),
  payload: fc.uint8Array({ maxLength: 64 }),
  off: fc.integer({ min: 0, max: 7 }),
});

/** Bytes the fixed layout spends before any SACK option. */
function baseLength(h: TcpHeader): number {
  return (h.mss >= 0 ? 4 : 0) + (h.hasTimestamps ? 12 : h.sackPermitted ? 4 : 0) + (h.wscale >= 0 ? 4 : 0);
}

describe('TCP round-trip', () => {
  test('encode then decode returns every field, for every option combination', () => {
    const enc = createTcpHeader();
    const dec = createTcpHeader();
    const buf = new Uint8Array(8 + 60 + 64);
    fc.assert(
      fc.property(tcpArb, u32, u32, (v, src, dst) => {
        const { ts, sack, payload, off, ...fields } = v;
        Object.assign(enc, fields);
        enc.hasTimestamps = ts !== null;
        enc.tsVal = ts?.[0] ?? 0;
        enc.tsEcr = ts?.[1] ?? 0;
        enc.sackCount = sack.length >> 1;
        enc.sackBlocks.fill(0).set(sack.slice(0, enc.sackCount * 2));
        const optLen = tcpOptionsLength(enc);
        assert.equal(optLen % 4, 0);
        assert.ok(optLen <= 40);
        const hl = encodeTcpHeader(enc, buf, off);
        assert.equal(hl, 20 + optLen);
        assert.equal(enc.headerLength, hl);
        buf.set(payload, off + hl);
        const segLen = hl + payload.length;
        finishTcpChecksum(buf, off, segLen, src, dst);
        assert.equal(decodeTcp(buf, off, segLen, src, dst, dec), null);
        for (const k of [
          'srcPort',
          'dstPort',
          'seq',
          'ack',
          'flags',
          'window',
          'urgent',
          'mss',
          'wscale',
        ] as const) {
          assert.equal(dec[k], enc[k], k);
        }
        assert.equal(dec.headerLength, hl);
        assert.equal(dec.sackPermitted, enc.sackPermitted);
        assert.equal(dec.hasTimestamps, enc.hasTimestamps);
        assert.equal(dec.tsVal, enc.tsVal);
        assert.equal(dec.tsEcr, enc.tsEcr);
        assert.equal(dec.sackCount, Math.min(enc.sackCount, (36 - baseLength(enc)) >> 3));
        assert.deepEqual(
          [...dec.sackBlocks.subarray(0, 2 * dec.sackCount)],
          [...enc.sackBlocks.subarray(0, 2 * dec.sackCount)],
        );
      }),
      { numRuns: 500 },
    );
  });
});
