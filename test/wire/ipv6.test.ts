import assert from 'node:assert/strict';
import { isIPv6 } from 'node:net';
import { describe, test } from 'node:test';
import { InvalidArgumentError } from '../../src/core/errors.ts';
import {
  formatIpv6,
  ipv6Equal,
  ipv6MulticastMac,
  ipv6PrefixMatch,
  isIpv6LinkLocal,
  isIpv6Multicast,
  isIpv6Unspecified,
  linkLocalFromMac,
  parseIpv6,
  parseIpv6Cidr,
  solicitedNodeAddress,
} from '../../src/wire/addr.ts';
import { l4Checksum6Ok, writeL4Checksum6 } from '../../src/wire/checksum.ts';
import {
  createIcmpv6Header,
  decodeIcmpv6,
  encodeIcmpv6,
  Icmpv6Type,
  Icmpv6UnreachCode,
} from '../../src/wire/icmpv6.ts';
import {
  createIpv6Header,
  decodeIpv6,
  encodeIpv6,
  encodeIpv6Fragment,
  IPV6_MAX_EXT_HEADERS,
  Ipv6Next,
  Ipv6Problem,
} from '../../src/wire/ipv6.ts';
import { createNdMessage, decodeNd, encodeNd, type NdPrefix } from '../../src/wire/ndp.ts';
import fc from '../helpers/fc.ts';
import { mac, u16, u32 } from './fixtures.ts';
import {
  ECHO_REPLY,
  ECHO_REQUEST,
  MLD_REPORT,
  NA,
  NS,
  NS_DAD,
  PORT_UNREACHABLE,
  RS,
  TCP6_SYN,
  UDP6,
} from './fixtures6.ts';

const ETH = 14;
const A1 = parseIpv6('fd00::1');
const A2 = parseIpv6('fd00::2');

/** Random addresses with a fair share of zero groups, so that `::` runs of every length appear. */
const addr6 = fc
  .array(fc.oneof(fc.constant(0), fc.constant(0), u16), { minLength: 8, maxLength: 8 })
  .map((groups) => {
    const a = new Uint8Array(16);
    groups.forEach((g, i) => {
      a[2 * i] = g >>> 8;
      a[2 * i + 1] = g & 0xff;
    });
    return a;
  });

function ipv6Packet(next: number, ext: Uint8Array, payload: Uint8Array, dst = A2, src = A1): Uint8Array {
  const h = createIpv6Header();
  h.payloadLength = ext.length + payload.length;
  h.nextHeader = next;
  h.hopLimit = 64;
  h.src.set(src);
  h.dst.set(dst);
  const b = new Uint8Array(40 + h.payloadLength);
  encodeIpv6(h, b, 0);
  b.set(ext, 40);
  b.set(payload, 40 + ext.length);
  return b;
}

/** An options header (hop-by-hop or destination) of 8 bytes holding `opts` then padding. */
function optsHeader(next: number, opts: number[]): Uint8Array {
  const len = Math.ceil((opts.length + 2) / 8) * 8;
  const h = new Uint8Array(len);
  h[0] = next;
  h[1] = len / 8 - 1;
  h.set(opts, 2);
  const rest = len - 2 - opts.length;
  if (rest === 1) h[2 + opts.length] = 0;
  else if (rest > 1) {
    h[2 + opts.length] = 1;
    h[3 + opts.length] = rest - 2;
  }
  return h;
}

describe('IPv6 addresses', () => {
  test('RFC 5952 text form of known addresses', () => {
    const cases: [string, string][] = [
      ['2001:0db8:0000:0000:0000:0000:0002:0001', '2001:db8::2:1'],
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
      ['2001:DB8::AAAA', '2001:db8::aaaa'],
      ['0:0:0:0:0:0:0:0', '::'],
      ['::1', '::1'],
      ['1::', '1::'],
      ['fe80::ff:fe00:1', 'fe80::ff:fe00:1'],
      ['2001:db8:0:0:1:0:0:0', '2001:db8:0:0:1::'],
      ['::ffff:192.0.2.128', '::ffff:192.0.2.128'],
      ['::ffff:c000:0280', '::ffff:192.0.2.128'],
      ['64:ff9b::192.0.2.33', '64:ff9b::c000:221'],
    ];
    for (const [input, want] of cases) assert.equal(formatIpv6(parseIpv6(input)), want, input);
  });

  test('malformed text is refused with InvalidArgumentError', () => {
    for (const bad of [
      '',
      ':',
      '1:2:3:4:5:6:7',
      '1:2:3:4:5:6:7:8:9',
      '1::2::3',
      ':1::2',
      '1::2:',
      '12345::',
      'g::1',
      '1:2:3:4:5:6:7::8',
      '::1.2.3',
      '::1.2.3.4.5',
      '::256.0.0.1',
      '1.2.3.4::',
      'fe80::1%eth0',
      ' ::1',
    ]) {
      assert.throws(() => parseIpv6(bad), InvalidArgumentError, bad);
    }
    assert.throws(() => parseIpv6(7 as unknown as string), InvalidArgumentError);
  });

  test('format then parse is the identity, and the text is what Node and WHATWG URL produce', () => {
    fc.assert(
      fc.property(addr6, (a) => {
        const s = formatIpv6(a);
        assert.deepEqual(parseIpv6(s), a);
        assert.ok(isIPv6(s), s);
        const mapped = s.startsWith('::ffff:') && s.includes('.');
        // URL writes the IPv4-mapped range in hex; RFC 5952 5 recommends the dotted tail.
        if (!mapped) assert.equal(new URL(`http://[${s}]/`).hostname, `[${s}]`);
      }),
      { numRuns: 2000 },
    );
  });

  test('every spelling Node accepts parses to the address URL canonicalises it to', () => {
    const spelling = fc.tuple(addr6, fc.nat(), fc.boolean(), fc.boolean()).map(([a, seed, upper, pad]) => {
      const groups: string[] = [];
      for (let i = 0; i < 8; i++) {
        let g = ((a[2 * i]! << 8) | a[2 * i + 1]!).toString(16);
        if (pad) g = g.padStart(4, '0');
        groups.push(upper ? g.toUpperCase() : g);
      }
      // Compress a zero run chosen by the seed (any run, not only the longest, is legal input).
      const zeros: number[] = [];
      for (let i = 0; i < 8; i++) if (/^0+$/.test(groups[i]!)) zeros.push(i);
      if (zeros.length === 0) return groups.join(':');
      const start = zeros[seed % zeros.length]!;
      let end = start;
      while (end + 1 < 8 && /^0+$/.test(groups[end + 1]!)) end++;
      end = start + ((seed >>> 3) % (end - start + 1));
      return `${groups.slice(0, start).join(':')}::${groups.slice(end + 1).join(':')}`;
    });
    fc.assert(
      fc.property(spelling, (s) => {
        assert.ok(isIPv6(s), s);
        const canonical = new URL(`http://[${s}]/`).hostname.slice(1, -1);
        assert.deepEqual(parseIpv6(s), parseIpv6(canonical), s);
      }),
      { numRuns: 2000 },
    );
  });

  test('CIDR, prefixes and address classes', () => {
    const c = parseIpv6Cidr('fd00::10/64');
    assert.equal(c.prefixLength, 64);
    assert.equal(formatIpv6(c.ip), 'fd00::10');
    for (const bad of ['fd00::1', 'fd00::1/129', 'fd00::1/', 'fd00::1/064', 'fd00::g/64']) {
      assert.throws(() => parseIpv6Cidr(bad), InvalidArgumentError, bad);
    }
    assert.ok(ipv6PrefixMatch(parseIpv6('fd00::1'), 0, parseIpv6('fd00::ffff'), 0, 64));
    assert.ok(!ipv6PrefixMatch(parseIpv6('fd00:0:0:1::1'), 0, parseIpv6('fd00::1'), 0, 64));
    assert.ok(ipv6PrefixMatch(parseIpv6('fd00::'), 0, parseIpv6('fd7f::'), 0, 9));
    assert.ok(!ipv6PrefixMatch(parseIpv6('fd00::'), 0, parseIpv6('fd80::'), 0, 9));
    assert.ok(isIpv6LinkLocal(parseIpv6('fe80::1')) && isIpv6LinkLocal(parseIpv6('febf::1')));
    assert.ok(!isIpv6LinkLocal(parseIpv6('fec0::1')));
    assert.ok(isIpv6Multicast(parseIpv6('ff02::1')) && !isIpv6Multicast(A1));
    assert.ok(isIpv6Unspecified(parseIpv6('::')) && !isIpv6Unspecified(parseIpv6('::1')));
  });

  test('link-local, solicited-node group and its MAC agree with the kernel', () => {
    // The kernel's DAD probe: for fe80::ff:fe00:1 (MAC 02:00:00:00:00:01) to ff02::1:ff00:1 on 33:33:ff:00:00:01.
    const ll = linkLocalFromMac(0x020000000001);
    assert.equal(formatIpv6(ll), 'fe80::ff:fe00:1');
    assert.ok(ipv6Equal(ll, 0, NS_DAD, ETH + 48));
    const group = solicitedNodeAddress(ll);
    assert.equal(formatIpv6(group), 'ff02::1:ff00:1');
    assert.ok(ipv6Equal(group, 0, NS_DAD, ETH + 24));
    assert.equal(ipv6MulticastMac(group), 0x3333ff000001);
    assert.equal(formatIpv6(linkLocalFromMac(0x001122334455)), 'fe80::211:22ff:fe33:4455');
  });
});

describe('IPv6 pseudo-header checksums', () => {
  test("the kernel's TCP, UDP and ICMPv6 checksums verify, and writing them reproduces its bytes", () => {
    for (const [frame, proto] of [
      [TCP6_SYN, Ipv6Next.TCP],
      [UDP6, Ipv6Next.UDP],
      [ECHO_REQUEST, Ipv6Next.ICMPV6],
      [NA, Ipv6Next.ICMPV6],
      [PORT_UNREACHABLE, Ipv6Next.ICMPV6],
    ] as const) {
      const src = frame.slice(ETH + 8, ETH + 24);
      const dst = frame.slice(ETH + 24, ETH + 40);
      const len = frame.length - ETH - 40;
      assert.ok(l4Checksum6Ok(frame, ETH + 40, len, src, dst, proto));
      const b = frame.slice();
      writeL4Checksum6(b, ETH + 40, len, src, dst, proto);
      assert.deepEqual(b, frame);
      b[b.length - 1]! ^= 0x10;
      assert.ok(!l4Checksum6Ok(b, ETH + 40, len, src, dst, proto));
    }
  });

  test('a UDP checksum that sums to zero is sent as 0xffff (zero means none, forbidden over IPv6)', () => {
    // Payload chosen so the sum is 0: write once, then adjust the payload so the field becomes 0.
    const b = new Uint8Array(10);
    b.set([0, 1, 0, 2, 0, 10, 0, 0, 0, 0]);
    writeL4Checksum6(b, 0, 10, A1, A2, Ipv6Next.UDP);
    const sum = (b[6]! << 8) | b[7]!;
    // Putting the complement into the payload makes the one's-complement total 0xffff, i.e. a sum of 0.
    b[8] = sum >>> 8;
    b[9] = sum & 0xff;
    writeL4Checksum6(b, 0, 10, A1, A2, Ipv6Next.UDP);
    assert.equal((b[6]! << 8) | b[7]!, 0xffff);
    assert.ok(l4Checksum6Ok(b, 0, 10, A1, A2, Ipv6Next.UDP));
  });
});

describe('IPv6 header and extension headers', () => {
  const h = createIpv6Header();

  test('kernel frames decode', () => {
    assert.equal(decodeIpv6(ECHO_REQUEST, ETH, ECHO_REQUEST.length - ETH, h), null);
    assert.equal(h.flowLabel, 0x55670);
    assert.equal(h.hopLimit, 64);
    assert.equal(h.protocol, Ipv6Next.ICMPV6);
    assert.equal(h.payloadOffset, ETH + 40);
    assert.equal(h.payloadLen, 24);
    assert.equal(formatIpv6(h.src), 'fd00::1');
    assert.equal(formatIpv6(h.dst), 'fd00::2');
    assert.equal(h.extCount, 0);

    assert.equal(decodeIpv6(MLD_REPORT, ETH, MLD_REPORT.length - ETH, h), null);
    assert.equal(h.nextHeader, Ipv6Next.HOP_BY_HOP);
    assert.equal(h.hopLimit, 1);
    assert.equal(h.extCount, 1);
    assert.equal(h.routerAlert, 0);
    assert.equal(h.protocol, Ipv6Next.ICMPV6);
    assert.equal(h.protocolPointer, 40);
    assert.equal(h.payloadOffset, ETH + 48);
    assert.equal(h.payloadLen, 28);
  });

  test('bytes after the payload length are padding; a short buffer is truncated; version 4 is refused', () => {
    const padded = new Uint8Array(ECHO_REQUEST.length + 30);
    padded.set(ECHO_REQUEST);
    assert.equal(decodeIpv6(padded, ETH, padded.length - ETH, h), null);
    assert.equal(h.payloadLen, 24);
    assert.equal(decodeIpv6(ECHO_REQUEST, ETH, ECHO_REQUEST.length - ETH - 1, h), 'truncated');
    const v4 = ECHO_REQUEST.slice();
    v4[ETH] = 0x45;
    assert.equal(decodeIpv6(v4, ETH, v4.length - ETH, h), 'bad-version');
  });

  test('header fields round-trip at every size up to a jumbo-less maximum', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 255 }),
        fc.integer({ min: 0, max: 0xfffff }),
        fc.integer({ min: 0, max: 255 }),
        addr6,
        addr6,
        fc.uint8Array({ maxLength: 9000 }),
        (tc, fl, hl, src, dst, payload) => {
          const e = createIpv6Header();
          e.trafficClass = tc;
          e.flowLabel = fl;
          e.hopLimit = hl;
          e.nextHeader = Ipv6Next.UDP;
          e.payloadLength = payload.length;
          e.src.set(src);
          e.dst.set(dst);
          const b = new Uint8Array(40 + payload.length);
          encodeIpv6(e, b, 0);
          b.set(payload, 40);
          assert.equal(decodeIpv6(b, 0, b.length, h), null);
          assert.deepEqual(
            [h.trafficClass, h.flowLabel, h.hopLimit, h.protocol, h.payloadLen],
            [tc, fl, hl, Ipv6Next.UDP, payload.length],
          );
          assert.deepEqual(h.src, src);
          assert.deepEqual(h.dst, dst);
        },
      ),
      { numRuns: 300 },
    );
  });

  test('a chain of every extension header is walked to the upper layer', () => {
    const hbh = optsHeader(Ipv6Next.ROUTING, [5, 2, 0, 0]);
    const rt = new Uint8Array([Ipv6Next.FRAGMENT, 0, 4, 0, 0, 0, 0, 0]); // segments left 0: skipped
    const atomic = new Uint8Array(8);
    encodeIpv6Fragment(atomic, 0, Ipv6Next.DEST_OPTS, 0, false, 7);
    const dst = optsHeader(Ipv6Next.UDP, [4, 1, 0]); // tunnel encapsulation limit: top bits 00, skipped
    const ext = new Uint8Array([...hbh, ...rt, ...atomic, ...dst]);
    const b = ipv6Packet(Ipv6Next.HOP_BY_HOP, ext, new Uint8Array(12));
    assert.equal(decodeIpv6(b, 0, b.length, h), null);
    assert.equal(h.extCount, 4);
    assert.equal(h.fragment, false);
    assert.equal(h.protocol, Ipv6Next.UDP);
    assert.equal(h.protocolPointer, 40 + 24);
    assert.equal(h.payloadOffset, 40 + 32);
    assert.equal(h.payloadLen, 12);
  });

  test('an unknown next header ends the walk and names the field to point at', () => {
    const b = ipv6Packet(Ipv6Next.DEST_OPTS, optsHeader(253, []), new Uint8Array(8));
    assert.equal(decodeIpv6(b, 0, b.length, h), null);
    assert.equal(h.protocol, 253);
    assert.equal(h.protocolPointer, 40);
    assert.equal(h.problemCode, -1);
  });

  test('hop-by-hop anywhere but first is an unrecognised next header (RFC 8200 4.3)', () => {
    const b = ipv6Packet(
      Ipv6Next.DEST_OPTS,
      new Uint8Array([...optsHeader(0, []), ...optsHeader(59, [])]),
      new Uint8Array(0),
    );
    assert.equal(decodeIpv6(b, 0, b.length, h), 'unsupported');
    assert.equal(h.problemCode, Ipv6Problem.NEXT_HEADER);
    assert.equal(h.problemPointer, 40);
  });

  test('unknown options act by their two high bits (RFC 8200 4.2)', () => {
    const run = (type: number, dst: Uint8Array) => {
      const b = ipv6Packet(Ipv6Next.DEST_OPTS, optsHeader(59, [1, 0, type, 2, 0, 0]), new Uint8Array(0), dst);
      return [decodeIpv6(b, 0, b.length, h), h.problemCode, h.problemPointer];
    };
    const mcast = parseIpv6('ff02::1');
    assert.deepEqual(run(0x1e, A2), [null, -1, -1]); // 00: skip
    assert.deepEqual(run(0x5e, A2), ['bad-option', -1, -1]); // 01: discard silently
    assert.deepEqual(run(0x9e, A2), ['bad-option', Ipv6Problem.OPTION, 44]); // 10: always answer
    assert.deepEqual(run(0x9e, mcast), ['bad-option', Ipv6Problem.OPTION, 44]);
    assert.deepEqual(run(0xde, A2), ['bad-option', Ipv6Problem.OPTION, 44]); // 11: answer unless multicast
    assert.deepEqual(run(0xde, mcast), ['bad-option', -1, -1]);
  });

  test('malformed option areas: overrun, long padding, too many options', () => {
    const overrun = ipv6Packet(Ipv6Next.DEST_OPTS, optsHeader(59, [0x1e, 9]), new Uint8Array(0));
    assert.equal(decodeIpv6(overrun, 0, overrun.length, h), 'bad-option');
    const longPad = new Uint8Array(16);
    longPad[0] = 59;
    longPad[1] = 1;
    longPad[2] = 1;
    longPad[3] = 12;
    const lp = ipv6Packet(Ipv6Next.DEST_OPTS, longPad, new Uint8Array(0));
    assert.equal(decodeIpv6(lp, 0, lp.length, h), 'bad-option');
    const nine = optsHeader(59, Array.from({ length: 9 }, () => [0x1e, 0]).flat());
    const many = ipv6Packet(Ipv6Next.DEST_OPTS, nine, new Uint8Array(0));
    assert.equal(decodeIpv6(many, 0, many.length, h), 'bad-option');
    const eight = ipv6Packet(
      Ipv6Next.DEST_OPTS,
      optsHeader(59, Array.from({ length: 8 }, () => [0x1e, 0]).flat()),
      new Uint8Array(0),
    );
    assert.equal(decodeIpv6(eight, 0, eight.length, h), null);
  });

  test('a routing header with segments left is refused, pointing at its type (a host forwards nothing)', () => {
    const rt = new Uint8Array([59, 0, 0, 1, 0, 0, 0, 0]);
    const b = ipv6Packet(Ipv6Next.ROUTING, rt, new Uint8Array(0));
    assert.equal(decodeIpv6(b, 0, b.length, h), 'unsupported');
    assert.deepEqual([h.problemCode, h.problemPointer], [Ipv6Problem.HEADER_FIELD, 42]);
  });

  test('fragments: fields, size rule, first fragment must hold the header chain', () => {
    const fh = new Uint8Array(8);
    encodeIpv6Fragment(fh, 0, Ipv6Next.UDP, 0, true, 0xdeadbeef);
    const first = ipv6Packet(Ipv6Next.FRAGMENT, fh, new Uint8Array(16));
    assert.equal(decodeIpv6(first, 0, first.length, h), null);
    assert.deepEqual(
      [h.fragment, h.fragOffset, h.mf, h.fragId, h.fragHeaderAt, h.protocol, h.payloadOffset, h.payloadLen],
      [true, 0, true, 0xdeadbeef, 40, Ipv6Next.UDP, 48, 16],
    );
    encodeIpv6Fragment(fh, 0, Ipv6Next.UDP, 1448, false, 1);
    const last = ipv6Packet(Ipv6Next.FRAGMENT, fh, new Uint8Array(5));
    assert.equal(decodeIpv6(last, 0, last.length, h), null);
    assert.deepEqual([h.fragOffset, h.mf, h.payloadLen], [1448, false, 5]);

    encodeIpv6Fragment(fh, 0, Ipv6Next.UDP, 8, true, 1);
    const odd = ipv6Packet(Ipv6Next.FRAGMENT, fh, new Uint8Array(13));
    assert.equal(decodeIpv6(odd, 0, odd.length, h), 'bad-length');
    assert.deepEqual([h.problemCode, h.problemPointer], [Ipv6Problem.HEADER_FIELD, 4]);

    // First fragment whose destination options header runs past the fragment: RFC 7112.
    encodeIpv6Fragment(fh, 0, Ipv6Next.DEST_OPTS, 0, true, 1);
    const cut = new Uint8Array(8);
    cut[0] = Ipv6Next.UDP;
    cut[1] = 2; // 24 bytes, only 8 present
    const split = ipv6Packet(Ipv6Next.FRAGMENT, new Uint8Array([...fh, ...cut]), new Uint8Array(0));
    assert.equal(decodeIpv6(split, 0, split.length, h), 'unsupported');
    assert.equal(h.problemCode, Ipv6Problem.INCOMPLETE_CHAIN);
  });

  test('an endless chain is refused after the bound, wherever it sits in a 64 KB packet', () => {
    const n = 8000; // 64 KB of 8-byte destination options headers
    const ext = new Uint8Array(n * 8);
    for (let i = 0; i < n; i++) {
      ext[i * 8] = Ipv6Next.DEST_OPTS;
      ext[i * 8 + 2] = 1;
      ext[i * 8 + 3] = 4;
    }
    const b = ipv6Packet(Ipv6Next.DEST_OPTS, ext.subarray(0, 65528), new Uint8Array(0));
    assert.equal(decodeIpv6(b, 0, b.length, h), 'bad-header-length');
    assert.equal(h.extCount, IPV6_MAX_EXT_HEADERS);
    const ok = ipv6Packet(Ipv6Next.DEST_OPTS, ext.subarray(0, 8 * IPV6_MAX_EXT_HEADERS), new Uint8Array(0));
    ok[40 + 8 * IPV6_MAX_EXT_HEADERS - 8] = 59;
    assert.equal(decodeIpv6(ok, 0, ok.length, h), null);
    assert.equal(h.protocol, 59);
  });
});

describe('ICMPv6', () => {
  const ip = createIpv6Header();
  const m = createIcmpv6Header();

  test('kernel echo request, reply and port unreachable decode', () => {
    decodeIpv6(ECHO_REQUEST, ETH, ECHO_REQUEST.length - ETH, ip);
    assert.equal(decodeIcmpv6(ECHO_REQUEST, ip.payloadOffset, ip.payloadLen, ip.src, ip.dst, m), null);
    assert.deepEqual([m.type, m.code, m.id, m.seq], [Icmpv6Type.ECHO_REQUEST, 0, 0x75db, 1]);
    decodeIpv6(PORT_UNREACHABLE, ETH, PORT_UNREACHABLE.length - ETH, ip);
    assert.equal(decodeIcmpv6(PORT_UNREACHABLE, ip.payloadOffset, ip.payloadLen, ip.src, ip.dst, m), null);
    assert.deepEqual([m.type, m.code], [Icmpv6Type.DEST_UNREACHABLE, Icmpv6UnreachCode.PORT]);
    // The quote is the offending packet itself, starting with its IPv6 header.
    assert.deepEqual(PORT_UNREACHABLE.subarray(m.bodyOffset), UDP6.subarray(ETH));
    // The pseudo-header matters: the same bytes under swapped addresses fail.
    assert.equal(
      decodeIcmpv6(PORT_UNREACHABLE, ip.payloadOffset, ip.payloadLen, ip.dst, A1, m),
      'bad-checksum',
    );
  });

  test("answering the kernel's echo request reproduces its reply byte for byte", () => {
    const b = ECHO_REQUEST.slice();
    decodeIpv6(b, ETH, b.length - ETH, ip);
    decodeIcmpv6(b, ip.payloadOffset, ip.payloadLen, ip.src, ip.dst, m);
    m.type = Icmpv6Type.ECHO_REPLY;
    encodeIcmpv6(m, b, ip.payloadOffset, ip.payloadLen - 8, ip.dst, ip.src);
    assert.deepEqual(b.subarray(ip.payloadOffset), ECHO_REPLY.subarray(ETH + 40));
  });

  test('every type round-trips its fields and checksum at real sizes', () => {
    const types = [1, 2, 3, 4, 128, 129];
    fc.assert(
      fc.property(
        fc.constantFrom(...types),
        fc.integer({ min: 0, max: 255 }),
        u16,
        u16,
        u32,
        addr6,
        addr6,
        fc.uint8Array({ maxLength: 1232 }),
        (type, code, id, seq, word, src, dst, body) => {
          const e = createIcmpv6Header();
          Object.assign(e, { type, code, id, seq, mtu: word, pointer: word });
          const b = new Uint8Array(8 + body.length);
          b.set(body, 8);
          const n = encodeIcmpv6(e, b, 0, body.length, src, dst);
          assert.equal(n, b.length);
          assert.equal(decodeIcmpv6(b, 0, n, src, dst, m), null);
          assert.deepEqual([m.type, m.code, m.checksum], [type, code, e.checksum]);
          if (type >= 128) assert.deepEqual([m.id, m.seq], [id, seq]);
          if (type === 2) assert.equal(m.mtu, word);
          if (type === 4) assert.equal(m.pointer, word);
          if (type === 1 || type === 3) assert.equal((b[4]! | b[5]! | b[6]! | b[7]!) === 0, true);
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('neighbor discovery messages', () => {
  const ip = createIpv6Header();
  const icmp = createIcmpv6Header();
  const nd = createNdMessage();

  function decodeFrame(f: Uint8Array): void {
    assert.equal(decodeIpv6(f, ETH, f.length - ETH, ip), null);
    assert.equal(decodeIcmpv6(f, ip.payloadOffset, ip.payloadLen, ip.src, ip.dst, icmp), null);
    assert.equal(decodeNd(f, ip.payloadOffset, ip.payloadLen, nd), null);
  }

  test("the kernel's NS, DAD probe, NA and RS decode", () => {
    decodeFrame(NS);
    assert.equal(ip.hopLimit, 255);
    assert.equal(nd.type, Icmpv6Type.NEIGHBOR_SOLICITATION);
    assert.equal(formatIpv6(nd.target), 'fd00::2');
    assert.deepEqual([nd.sourceLla, nd.targetLla, nd.nonce], [0x020000000001, -1, -1]);

    decodeFrame(NS_DAD);
    assert.ok(isIpv6Unspecified(ip.src));
    assert.equal(formatIpv6(nd.target), 'fe80::ff:fe00:1');
    assert.deepEqual([nd.sourceLla, nd.nonce, nd.nonceLength], [-1, 0xf8de9a5195a7, 6]);

    decodeFrame(NA);
    assert.equal(nd.type, Icmpv6Type.NEIGHBOR_ADVERTISEMENT);
    assert.deepEqual([nd.router, nd.solicited, nd.override], [false, true, true]);
    assert.equal(formatIpv6(nd.target), 'fd00::2');
    assert.equal(nd.targetLla, 0x020000000002);

    decodeFrame(RS);
    assert.equal(nd.type, Icmpv6Type.ROUTER_SOLICITATION);
    assert.equal(nd.sourceLla, 0x020000000001);
  });

  test("encoding the kernel's NS and NA reproduces its bytes", () => {
    for (const [frame, m] of [
      [NS, { type: 135, target: A2, sourceLla: 0x020000000001 }],
      [NA, { type: 136, solicited: true, override: true, target: A2, targetLla: 0x020000000002 }],
      [NS_DAD, { type: 135, target: parseIpv6('fe80::ff:fe00:1'), nonce: 0xf8de9a5195a7 }],
    ] as const) {
      decodeIpv6(frame, ETH, frame.length - ETH, ip);
      const b = new Uint8Array(ip.payloadLen);
      assert.equal(encodeNd(m, b, 0, ip.src, ip.dst), ip.payloadLen);
      assert.deepEqual(b, frame.subarray(ETH + 40));
    }
  });

  test('router advertisements round-trip with their prefixes, MTU and flags', () => {
    const prefix = fc.record({
      prefixLength: fc.integer({ min: 0, max: 128 }),
      onLink: fc.boolean(),
      autonomous: fc.boolean(),
      validLifetime: u32,
      preferredLifetime: u32,
      prefix: addr6,
    });
    fc.assert(
      fc.property(
        fc.record({
          curHopLimit: fc.integer({ min: 0, max: 255 }),
          managed: fc.boolean(),
          other: fc.boolean(),
          routerLifetime: u16,
          reachableTime: u32,
          retransTimer: u32,
          sourceLla: mac,
          mtu: u32,
        }),
        fc.array(prefix, { maxLength: 8 }),
        addr6,
        (fields, prefixes, src) => {
          const m = { type: 134, ...fields, prefixes: prefixes as NdPrefix[] };
          const b = new Uint8Array(16 + 16 + 32 * prefixes.length);
          const dst = parseIpv6('ff02::1');
          const n = encodeNd(m, b, 0, src, dst);
          assert.equal(n, b.length);
          assert.equal(decodeIcmpv6(b, 0, n, src, dst, icmp), null);
          assert.equal(decodeNd(b, 0, n, nd), null);
          for (const k of Object.keys(fields) as (keyof typeof fields)[]) assert.equal(nd[k], fields[k], k);
          assert.equal(nd.prefixCount, prefixes.length);
          for (const [i, p] of prefixes.entries()) assert.deepEqual({ ...nd.prefixes[i]! }, { ...p });
        },
      ),
      { numRuns: 300 },
    );
  });

  test('framing errors: wrong code, short, zero-length or oversized options, odd link-layer option', () => {
    const body = (f: Uint8Array) => f.slice(ETH + 40);
    const ns = body(NS);
    assert.equal(decodeNd(ns, 0, ns.length, nd), null);
    const code = ns.slice();
    code[1] = 1;
    assert.equal(decodeNd(code, 0, code.length, nd), 'unsupported');
    assert.equal(decodeNd(ns, 0, 23, nd), 'truncated');
    const zero = ns.slice();
    zero[25] = 0;
    assert.equal(decodeNd(zero, 0, zero.length, nd), 'bad-option');
    const over = ns.slice();
    over[25] = 2;
    assert.equal(decodeNd(over, 0, over.length, nd), 'bad-option');
    const wide = new Uint8Array(ns.length + 8);
    wide.set(ns);
    wide[25] = 2;
    assert.equal(decodeNd(wide, 0, wide.length, nd), 'bad-option');
    const unknownOpt = new Uint8Array(ns.length + 8);
    unknownOpt.set(ns);
    unknownOpt[ns.length] = 200;
    unknownOpt[ns.length + 1] = 1;
    assert.equal(decodeNd(unknownOpt, 0, unknownOpt.length, nd), null);
    const echo = body(ECHO_REQUEST);
    assert.equal(decodeNd(echo, 0, echo.length, nd), 'bad-type');
  });

  test('prefixes beyond the bound are counted, not stored', () => {
    const prefixes = Array.from({ length: 11 }, (_, i) => ({
      prefixLength: 64,
      onLink: true,
      autonomous: true,
      validLifetime: i,
      preferredLifetime: i,
      prefix: A1,
    }));
    const b = new Uint8Array(16 + 32 * 11);
    const n = encodeNd({ type: 134, prefixes }, b, 0, A1, A2);
    assert.equal(decodeNd(b, 0, n, nd), null);
    assert.deepEqual([nd.prefixCount, nd.prefixesDropped], [8, 3]);
  });
});
