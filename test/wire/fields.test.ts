import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isMulticastMac, readU16 } from '../../src/wire/addr.ts';
import {
  createEthernetHeader,
  decodeEthernet,
  EtherType,
  encodeEthernet,
  writeEthernetHeader,
} from '../../src/wire/ethernet.ts';
import {
  ethDst,
  ethDstIsGroup,
  ethIpv4Offset,
  ethL3Offset,
  ethSrc,
  ethTagged,
  ethType,
  icmpType,
  ipVersion,
  ipv4Dst,
  ipv4FragOffset,
  ipv4HeaderLen,
  ipv4IsFragment,
  ipv4Proto,
  ipv4Src,
  ipv4TotalLen,
  l4DstPort,
  l4SrcPort,
  tcpAck,
  tcpFlags,
  tcpHeaderLen,
  tcpSeq,
  tcpSeqLen,
} from '../../src/wire/fields.ts';
import { createIcmpHeader, decodeIcmp } from '../../src/wire/icmp.ts';
import { createIpv4Header, decodeIpv4, encodeIpv4, IpProto } from '../../src/wire/ipv4.ts';
import { createTcpHeader, decodeTcp, encodeTcpHeader, TcpFlag } from '../../src/wire/tcp.ts';
import { createUdpHeader, decodeUdp } from '../../src/wire/udp.ts';
import fc from '../helpers/fc.ts';
import {
  ARP_REQUEST,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  mac,
  TCP_SYN,
  UDP_DATAGRAM,
  u8,
  u16,
  u32,
} from './fixtures.ts';

/** The same frame with an 802.1Q tag (VLAN `vid`, priority 5) after the MAC addresses. */
function tagged(f: Uint8Array, vid: number): Uint8Array {
  const out = new Uint8Array(f.length + 4);
  out.set(f.subarray(0, 12));
  out[12] = 0x81;
  out[13] = 0x00;
  out[14] = 0xa0 | (vid >>> 8);
  out[15] = vid & 0xff;
  out.set(f.subarray(12), 16);
  return out;
}

const FIXTURES = { TCP_SYN, ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY, UDP_DATAGRAM, ARP_REQUEST };
const CASES: [string, Uint8Array][] = [];
for (const [name, f] of Object.entries(FIXTURES)) {
  CASES.push([name, f], [`${name} in VLAN 42`, tagged(f, 42)]);
}

/** Every accessor agrees with the full decoders on the frame `f`. */
function agreesWithDecoders(f: Uint8Array): void {
  const eth = createEthernetHeader();
  assert.equal(decodeEthernet(f, 0, f.length, eth), null);
  assert.equal(ethDst(f), eth.dst);
  assert.equal(ethSrc(f), eth.src);
  assert.equal(ethDstIsGroup(f), isMulticastMac(eth.dst));
  assert.equal(ethTagged(f), eth.vlanId >= 0);
  assert.equal(ethL3Offset(f), eth.headerLength);
  assert.equal(ethType(f), eth.etherType);
  const ip = ethIpv4Offset(f);
  if (eth.etherType !== EtherType.IPV4) {
    assert.equal(ip, -1);
    return;
  }
  assert.equal(ip, eth.headerLength);
  const h = createIpv4Header();
  assert.equal(decodeIpv4(f, ip, f.length - ip, h), null);
  assert.equal(ipVersion(f, ip), 4);
  assert.equal(ipv4HeaderLen(f, ip), h.headerLength);
  assert.equal(ipv4TotalLen(f, ip), h.totalLength);
  assert.equal(ipv4Proto(f, ip), h.protocol);
  assert.equal(ipv4Src(f, ip), h.src);
  assert.equal(ipv4Dst(f, ip), h.dst);
  assert.equal(ipv4IsFragment(f, ip), h.mf || h.fragOffset !== 0);
  assert.equal(ipv4FragOffset(f, ip), h.fragOffset);
  const t = ip + h.headerLength;
  const l4Len = h.totalLength - h.headerLength;
  if (h.protocol === IpProto.TCP) {
    const th = createTcpHeader();
    assert.equal(decodeTcp(f, t, l4Len, h.src, h.dst, th, false), null);
    assert.equal(l4SrcPort(f, t), th.srcPort);
    assert.equal(l4DstPort(f, t), th.dstPort);
    assert.equal(tcpSeq(f, t), th.seq);
    assert.equal(tcpAck(f, t), th.ack);
    assert.equal(tcpFlags(f, t), th.flags);
    assert.equal(tcpHeaderLen(f, t), th.headerLength);
    const syn = th.flags & TcpFlag.SYN ? 1 : 0;
    const fin = th.flags & TcpFlag.FIN ? 1 : 0;
    assert.equal(tcpSeqLen(f, t, l4Len), l4Len - th.headerLength + syn + fin);
  } else if (h.protocol === IpProto.UDP) {
    const uh = createUdpHeader();
    assert.equal(decodeUdp(f, t, l4Len, h.src, h.dst, uh), null);
    assert.equal(l4SrcPort(f, t), uh.srcPort);
    assert.equal(l4DstPort(f, t), uh.dstPort);
  } else if (h.protocol === IpProto.ICMP) {
    const ih = createIcmpHeader();
    assert.equal(decodeIcmp(f, t, l4Len, ih), null);
    assert.equal(icmpType(f, t), ih.type);
  }
}

describe('field accessors', () => {
  for (const [name, f] of CASES) {
    test(`agree with the decoders on ${name}`, () => agreesWithDecoders(f));
  }

  test('read the captured SYN as Wireshark shows it', () => {
    for (const f of [TCP_SYN, tagged(TCP_SYN, 7)]) {
      const ip = ethIpv4Offset(f);
      const t = ip + ipv4HeaderLen(f, ip);
      assert.equal(l4SrcPort(f, t), 0xe934);
      assert.equal(l4DstPort(f, t), 8080);
      assert.equal(tcpSeq(f, t), 0xbabfe5fc);
      assert.equal(tcpFlags(f, t), TcpFlag.SYN);
      assert.equal(tcpHeaderLen(f, t), 40);
      assert.equal(tcpSeqLen(f, t, ipv4TotalLen(f, ip) - 20), 1);
    }
  });

  test('ethIpv4Offset refuses frames too short for IPv4 and frames of other types', () => {
    assert.equal(ethIpv4Offset(new Uint8Array(33)), -1);
    const t = tagged(TCP_SYN, 1);
    assert.equal(ethIpv4Offset(t.subarray(0, 37)), -1, 'a tagged frame needs 18 + 20 bytes');
    assert.equal(ethIpv4Offset(t.subarray(0, 38)), 18);
    assert.equal(ethIpv4Offset(ARP_REQUEST), -1);
    assert.equal(ethIpv4Offset(tagged(ARP_REQUEST, 1)), -1);
  });

  test('agree with the decoders on generated TCP/IPv4 frames, tagged or not', () => {
    const th = createTcpHeader();
    const ih = createIpv4Header();
    fc.assert(
      fc.property(
        fc.record({
          vlan: fc.integer({ min: -1, max: 4095 }),
          dst: mac,
          src: mac,
          srcIp: u32,
          dstIp: u32,
          sport: u16,
          dport: u16,
          seq: u32,
          ack: u32,
          flags: u8,
          ts: fc.boolean(),
          payload: fc.integer({ min: 0, max: 1460 }),
          mf: fc.boolean(),
          fragUnits: fc.integer({ min: 0, max: 0x1fff }),
        }),
        (r) => {
          const f = new Uint8Array(18 + 20 + 60 + r.payload);
          const ip = writeEthernetHeader(f, 0, r.dst, r.src, r.vlan, EtherType.IPV4);
          th.srcPort = r.sport;
          th.dstPort = r.dport;
          th.seq = r.seq;
          th.ack = r.ack;
          th.flags = r.flags;
          th.hasTimestamps = r.ts;
          const hl = encodeTcpHeader(th, f, ip + 20);
          ih.totalLength = 20 + hl + r.payload;
          ih.protocol = IpProto.TCP;
          ih.src = r.srcIp;
          ih.dst = r.dstIp;
          ih.ttl = 64;
          ih.mf = r.mf;
          ih.fragOffset = r.fragUnits << 3;
          encodeIpv4(ih, f, ip);
          agreesWithDecoders(f.subarray(0, ip + ih.totalLength));
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('writeEthernetHeader', () => {
  test('writes what encodeEthernet writes and decodeEthernet reads back', () => {
    fc.assert(
      fc.property(
        mac,
        mac,
        fc.integer({ min: -1, max: 4095 }),
        fc.integer({ min: 0x0600, max: 0xffff }).filter((t) => t !== EtherType.VLAN),
        fc.integer({ min: 0, max: 7 }),
        fc.boolean(),
        (dst, src, vlanId, etherType, pcp, dei) => {
          const a = new Uint8Array(18);
          const b = new Uint8Array(18);
          const len = writeEthernetHeader(a, 0, dst, src, vlanId, etherType, pcp, dei);
          const h = createEthernetHeader();
          Object.assign(h, { dst, src, vlanId, etherType, pcp, dei });
          assert.equal(encodeEthernet(h, b, 0), len);
          assert.deepEqual(a, b);
          const back = createEthernetHeader();
          assert.equal(decodeEthernet(a, 0, 18, back), null);
          assert.deepEqual(
            { dst: back.dst, src: back.src, vlanId: back.vlanId, etherType: back.etherType },
            { dst, src, vlanId, etherType },
          );
          assert.equal(len, vlanId >= 0 ? 18 : 14);
          if (vlanId >= 0) assert.equal(readU16(a, 14) >>> 13, pcp);
        },
      ),
      { numRuns: 300 },
    );
  });
});
