import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { foldChecksum, onesSum, pseudoHeaderSum } from '../../src/wire/checksum.ts';
import { createIcmpHeader, decodeIcmp, encodeIcmp, IcmpType } from '../../src/wire/icmp.ts';
import { createUdpHeader, decodeUdp, encodeUdpHeader, finishUdpChecksum } from '../../src/wire/udp.ts';
import fc from '../helpers/fc.ts';
import {
  HOST_IP,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  PEER_IP,
  UDP_DATAGRAM,
  u8,
  u16,
  u32,
} from './fixtures.ts';

describe('ICMP', () => {
  test('decodes an echo request and the kernel reply', () => {
    const h = createIcmpHeader();
    assert.equal(decodeIcmp(ICMP_ECHO_REQUEST, 34, ICMP_ECHO_REQUEST.length - 34, h), null);
    assert.deepEqual(h, {
      type: IcmpType.ECHO_REQUEST,
      code: 0,
      checksum: 0x8fff,
      id: 0x1234,
      seq: 1,
      mtu: 0,
      bodyOffset: 42,
    });
    assert.equal(decodeIcmp(ICMP_ECHO_REPLY, 34, ICMP_ECHO_REPLY.length - 34, h), null);
    assert.equal(h.type, IcmpType.ECHO_REPLY);
    assert.equal(h.checksum, 0x97ff);
    assert.equal(new TextDecoder().decode(ICMP_ECHO_REPLY.subarray(h.bodyOffset)), 'chimney-ping-abcdefgh');
  });

  test('answering the request yields the kernel reply bytes', () => {
    const req = createIcmpHeader();
    assert.equal(decodeIcmp(ICMP_ECHO_REQUEST, 34, ICMP_ECHO_REQUEST.length - 34, req), null);
    const out = ICMP_ECHO_REQUEST.slice(34);
    const n = encodeIcmp({ ...req, type: IcmpType.ECHO_REPLY }, out, 0, out.length - 8);
    assert.equal(n, out.length);
    assert.deepEqual(out, ICMP_ECHO_REPLY.subarray(34));
  });

  test('fragmentation needed carries the next-hop MTU', () => {
    const buf = new Uint8Array(8 + 28);
    const h = { ...createIcmpHeader(), type: IcmpType.DEST_UNREACHABLE, code: 4, mtu: 1400, id: 7, seq: 9 };
    encodeIcmp(h, buf, 0, 28);
    assert.deepEqual([...buf.subarray(4, 8)], [0, 0, 0x05, 0x78]);
    const d = createIcmpHeader();
    assert.equal(decodeIcmp(buf, 0, buf.length, d), null);
    assert.equal(d.mtu, 1400);
    // other unreachable codes have no MTU and an unused (zero) word
    h.code = 3;
    encodeIcmp(h, buf, 0, 28);
    assert.equal(decodeIcmp(buf, 0, buf.length, d), null);
    assert.equal(d.mtu, 0);
    assert.deepEqual([...buf.subarray(4, 8)], [0, 0, 0, 0]);
  });

  test('errors', () => {
    const h = createIcmpHeader();
    assert.equal(decodeIcmp(ICMP_ECHO_REQUEST, 34, 7, h), 'truncated');
    const b = ICMP_ECHO_REQUEST.slice(34);
    b[b.length - 1] ^= 1;
    assert.equal(decodeIcmp(b, 0, b.length, h), 'bad-checksum');
    assert.equal(decodeIcmp(b, 0, b.length, h, false), null);
  });

  test('round-trip', () => {
    const dec = createIcmpHeader();
    const buf = new Uint8Array(8 + 8 + 64);
    const arb = fc.record({
      type: u8,
      code: u8,
      id: u16,
      seq: u16,
      mtu: u16,
      body: fc.uint8Array({ maxLength: 64 }),
      off: fc.integer({ min: 0, max: 7 }),
    });
    fc.assert(
      fc.property(arb, ({ body, off, ...v }) => {
        const enc = { ...createIcmpHeader(), ...v };
        buf.set(body, off + 8);
        assert.equal(encodeIcmp(enc, buf, off, body.length), 8 + body.length);
        assert.equal(decodeIcmp(buf, off, 8 + body.length, dec), null);
        assert.equal(dec.type, v.type);
        assert.equal(dec.code, v.code);
        assert.equal(dec.checksum, enc.checksum);
        assert.equal(dec.bodyOffset, off + 8);
        const fragNeeded = v.type === 3 && v.code === 4;
        const errorMsg = v.type === 3 || v.type === 11;
        assert.equal(dec.mtu, fragNeeded ? v.mtu : 0);
        assert.equal(dec.id, errorMsg ? 0 : v.id);
        assert.equal(dec.seq, fragNeeded ? v.mtu : errorMsg ? 0 : v.seq);
        assert.deepEqual(buf.subarray(off + 8, off + 8 + body.length), body);
      }),
    );
  });
});

describe('UDP', () => {
  const SEG = UDP_DATAGRAM.subarray(34);

  test('decodes a real datagram', () => {
    const h = createUdpHeader();
    assert.equal(decodeUdp(UDP_DATAGRAM, 34, SEG.length, HOST_IP, PEER_IP, h), null);
    assert.deepEqual(h, { srcPort: 5353, dstPort: 9999, length: 21, checksum: 0xb79b });
    assert.equal(decodeUdp(UDP_DATAGRAM, 34, SEG.length, HOST_IP, PEER_IP + 1, h), 'bad-checksum');
  });

  test('re-encoding reproduces the kernel checksum', () => {
    const out = SEG.slice();
    out.fill(0, 0, 8);
    assert.equal(encodeUdpHeader({ srcPort: 5353, dstPort: 9999, length: 21, checksum: 0 }, out, 0), 8);
    finishUdpChecksum(out, 0, out.length, HOST_IP, PEER_IP);
    assert.deepEqual(out, SEG);
  });

  test('checksum 0 means none; a computed 0 is sent as 0xffff', () => {
    const h = createUdpHeader();
    const b = SEG.slice();
    b[6] = 0;
    b[7] = 0;
    b[10] ^= 0xff; // payload corrupted, but there is no checksum to catch it
    assert.equal(decodeUdp(b, 0, b.length, HOST_IP, PEER_IP, h), null);
    assert.equal(h.checksum, 0);
    // Make the payload's last word cancel the rest so the computed checksum is exactly 0.
    const z = new Uint8Array(12);
    encodeUdpHeader({ srcPort: 1, dstPort: 2, length: 12, checksum: 0 }, z, 0);
    const c = foldChecksum(onesSum(z, 0, 12, pseudoHeaderSum(HOST_IP, PEER_IP, 17, 12)));
    z[10] = c >> 8;
    z[11] = c & 255;
    finishUdpChecksum(z, 0, 12, HOST_IP, PEER_IP);
    assert.deepEqual([...z.subarray(6, 8)], [0xff, 0xff]);
    assert.equal(decodeUdp(z, 0, 12, HOST_IP, PEER_IP, h), null);
    assert.equal(h.checksum, 0xffff);
  });

  test('errors', () => {
    const h = createUdpHeader();
    assert.equal(decodeUdp(SEG, 0, 7, HOST_IP, PEER_IP, h), 'truncated');
    assert.equal(decodeUdp(SEG, 0, 20, HOST_IP, PEER_IP, h), 'bad-length'); // UDP length 21 > 20
    const b = SEG.slice();
    b[5] = 7;
    assert.equal(decodeUdp(b, 0, b.length, HOST_IP, PEER_IP, h, false), 'bad-length');
    // an IP payload longer than the UDP length is fine; the checksum covers the UDP length only
    const longer = new Uint8Array(SEG.length + 3);
    longer.set(SEG);
    longer[SEG.length] = 0x55;
    assert.equal(decodeUdp(longer, 0, longer.length, HOST_IP, PEER_IP, h), null);
    assert.equal(h.length, 21);
  });

  test('round-trip', () => {
    const dec = createUdpHeader();
    const buf = new Uint8Array(8 + 8 + 64);
    fc.assert(
      fc.property(
        u16,
        u16,
        fc.uint8Array({ maxLength: 64 }),
        u32,
        u32,
        fc.integer({ min: 0, max: 7 }),
        (sp, dp, body, src, dst, off) => {
          const len = 8 + body.length;
          encodeUdpHeader({ srcPort: sp, dstPort: dp, length: len, checksum: 0 }, buf, off);
          buf.set(body, off + 8);
          finishUdpChecksum(buf, off, len, src, dst);
          assert.equal(decodeUdp(buf, off, len, src, dst, dec), null);
          assert.equal(dec.srcPort, sp);
          assert.equal(dec.dstPort, dp);
          assert.equal(dec.length, len);
          assert.notEqual(dec.checksum, 0);
        },
      ),
    );
  });
});
