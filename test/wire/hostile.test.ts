import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createArpPacket, decodeArp } from '../../src/wire/arp.ts';
import type { DecodeError } from '../../src/wire/decode-error.ts';
import { createEthernetHeader, decodeEthernet, EtherType } from '../../src/wire/ethernet.ts';
import { createIcmpHeader, decodeIcmp } from '../../src/wire/icmp.ts';
import { createIpv4Header, decodeIpv4, IpProto } from '../../src/wire/ipv4.ts';
import { createTcpHeader, decodeTcp } from '../../src/wire/tcp.ts';
import { createUdpHeader, decodeUdp } from '../../src/wire/udp.ts';
import fc from '../helpers/fc.ts';
import { ARP_REQUEST, DECODE_ERRORS, ICMP_ECHO_REPLY, TCP_SYN, UDP_DATAGRAM } from './fixtures.ts';
import { mutate, mutations } from './mutate.ts';

const eth = createEthernetHeader();
const arp = createArpPacket();
const ip = createIpv4Header();
const tcp = createTcpHeader();
const udp = createUdpHeader();
const icmp = createIcmpHeader();

function ok(r: DecodeError | null): boolean {
  if (r !== null) assert.ok(DECODE_ERRORS.has(r), `unknown decode error ${r}`);
  return r === null;
}

/** Every decoded header must describe bytes that lie inside the range it was given. */
function checkTcp(off: number, len: number): void {
  assert.ok(
    tcp.headerLength >= 20 && tcp.headerLength <= 60 && tcp.headerLength <= len && tcp.headerLength % 4 === 0,
  );
  assert.ok(tcp.sackCount >= 0 && tcp.sackCount <= 4);
  assert.ok(tcp.mss >= -1 && tcp.mss <= 0xffff && tcp.wscale >= -1 && tcp.wscale <= 255);
  assert.ok(tcp.seq >= 0 && tcp.seq <= 0xffffffff && tcp.ack >= 0 && tcp.ack <= 0xffffffff);
  assert.ok(off + tcp.headerLength <= off + len);
}

/** Decode a frame the way the stack does, layer by layer, checking each header's consistency. */
function decodeFrame(buf: Uint8Array, off: number, len: number, verify: boolean): void {
  if (!ok(decodeEthernet(buf, off, len, eth))) return;
  assert.ok(eth.headerLength === 14 || eth.headerLength === 18);
  assert.ok(eth.headerLength <= len);
  assert.ok(
    eth.vlanId >= -1 && eth.vlanId <= 4095 && eth.etherType >= 0x600 && eth.etherType !== EtherType.VLAN,
  );
  const l3 = off + eth.headerLength;
  const l3len = len - eth.headerLength;
  if (eth.etherType === EtherType.ARP) {
    if (ok(decodeArp(buf, l3, l3len, arp))) assert.ok(arp.op === 1 || arp.op === 2);
    return;
  }
  if (!ok(decodeIpv4(buf, l3, l3len, ip, verify))) return;
  assert.ok(ip.headerLength >= 20 && ip.headerLength <= 60);
  assert.ok(ip.headerLength <= ip.totalLength && ip.totalLength <= l3len);
  const l4 = l3 + ip.headerLength;
  const l4len = ip.totalLength - ip.headerLength;
  if (ip.protocol === IpProto.TCP) {
    if (ok(decodeTcp(buf, l4, l4len, ip.src, ip.dst, tcp, verify))) checkTcp(l4, l4len);
  } else if (ip.protocol === IpProto.UDP) {
    if (ok(decodeUdp(buf, l4, l4len, ip.src, ip.dst, udp, verify)))
      assert.ok(udp.length >= 8 && udp.length <= l4len);
  } else if (ip.protocol === IpProto.ICMP) {
    if (ok(decodeIcmp(buf, l4, l4len, icmp, verify)))
      assert.ok(icmp.bodyOffset === l4 + 8 && l4 + 8 <= l4 + l4len);
  }
}

/** Run every decoder directly on the bytes, not only through the layering. */
function decodeAll(buf: Uint8Array, off: number, len: number, verify: boolean): void {
  decodeFrame(buf, off, len, verify);
  ok(decodeArp(buf, off, len, arp));
  if (ok(decodeIpv4(buf, off, len, ip, verify))) assert.ok(ip.totalLength <= len);
  if (ok(decodeTcp(buf, off, len, 1, 2, tcp, verify))) checkTcp(off, len);
  if (ok(decodeUdp(buf, off, len, 1, 2, udp, verify))) assert.ok(udp.length <= len);
  if (ok(decodeIcmp(buf, off, len, icmp, verify)))
    assert.ok(icmp.bodyOffset === off + 8 && icmp.bodyOffset <= off + len);
}

const FRAMES = [ARP_REQUEST, TCP_SYN, ICMP_ECHO_REPLY, UDP_DATAGRAM];

/** Offsets of the length-bearing fields of each fixture (Ethernet type, IP IHL/total, TCP offset, UDP length). */
const LENGTH_FIELDS = [12, 13, 14, 16, 17, 34 + 4, 34 + 5, 34 + 12];

const mutation = mutations([LENGTH_FIELDS, Array.from({ length: 20 }, (_, i) => 54 + i)]);

describe('decoders face hostile input', () => {
  test('the fixtures themselves decode', () => {
    for (const f of FRAMES) assert.doesNotThrow(() => decodeFrame(f, 0, f.length, true));
    assert.equal(decodeTcp(TCP_SYN, 34, 40, 0x0a000001, 0x0a000002, tcp), null);
  });

  test('random bytes never throw', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.boolean(), (b, verify) => {
        decodeAll(b, 0, b.length, verify);
      }),
      { numRuns: 2000 },
    );
  });

  test('random offsets and lengths, even nonsensical ones, never throw', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 100 }),
        fc.integer({ min: -10, max: 120 }),
        fc.integer({ min: -10, max: 120 }),
        (b, off, len) => {
          decodeAll(b, off, len, false);
          if (off < 0 || len < 0 || off + len > b.length) {
            assert.equal(decodeEthernet(b, off, len, eth), 'truncated');
            assert.equal(decodeIpv4(b, off, len, ip), 'truncated');
            assert.equal(decodeTcp(b, off, len, 0, 0, tcp), 'truncated');
          }
        },
      ),
      { numRuns: 2000 },
    );
  });

  test('random TCP headers with structurally valid lengths never throw', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 60, maxLength: 60 }),
        fc.integer({ min: 5, max: 15 }),
        (b, doff) => {
          b[12] = doff << 4;
          const r = decodeTcp(b, 0, 60, 0, 0, tcp, false);
          assert.ok(r === null || r === 'bad-option');
          if (r === null) checkTcp(0, 60);
        },
      ),
      { numRuns: 3000 },
    );
  });

  test('mutated real packets never throw and decode consistently', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...FRAMES),
        fc.array(mutation, { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        (frame, muts, verify) => {
          const b = mutate(frame, muts);
          decodeAll(b, 0, b.length, verify);
        },
      ),
      { numRuns: 3000 },
    );
  });

  test('with checksums verified, any single bit flip in an IP or TCP header is rejected', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 14, max: TCP_SYN.length - 1 }),
        fc.integer({ min: 0, max: 7 }),
        (at, bit) => {
          const b = TCP_SYN.slice();
          b[at]! ^= 1 << bit;
          const rIp = decodeIpv4(b, 14, b.length - 14, ip);
          if (at < 34) {
            assert.notEqual(rIp, null);
          } else {
            assert.equal(rIp, null);
            assert.notEqual(decodeTcp(b, 34, ip.totalLength - 20, ip.src, ip.dst, tcp), null);
          }
        },
      ),
    );
  });
});
