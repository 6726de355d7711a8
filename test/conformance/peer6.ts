/**
 * The IPv6 twin of `RawPeer` for the conformance tester: one MAC and one IPv6 address on a link,
 * neighbor discovery for itself (it answers solicitations for its address and resolves the DUT's
 * with one of its own, RFC 4861 7.2), and TCP segments and packet too big messages crafted with
 * Chimney's codecs. It keeps no TCP state; the harness plays the connection.
 */
import type { Link } from '../../src/core/link.ts';
import { type RawSegment, tcpHeaderOf } from '../../src/sim/raw-peer.ts';
import {
  copyIpv6,
  createIcmpv6Header,
  createIpv6Header,
  createNdMessage,
  createTcpHeader,
  decodeIcmpv6,
  decodeIpv6,
  decodeNd,
  decodeTcp,
  EtherType,
  encodeIcmpv6,
  encodeIpv6,
  encodeNd,
  encodeTcpHeader,
  ICMPV6_ERROR_QUOTE_MAX,
  Icmpv6Type,
  IPV6_HEADER_LENGTH,
  type Ipv6Header,
  Ipv6Next,
  ipv6Equal,
  ipv6MulticastMac,
  readMac,
  readU16,
  solicitedNodeAddress,
  type TcpHeader,
  writeEthernetHeader,
  writeL4Checksum6,
  writeU16,
  writeU32,
} from '../../src/wire/index.ts';

const ETH = 14;
const L4 = ETH + IPV6_HEADER_LENGTH;

export class RawPeer6 {
  /** The DUT's MAC once learnt from a neighbor advertisement or solicitation, else -1. */
  peerMac = -1;
  onTcp: ((h: TcpHeader, payloadLen: number) => void) | null = null;
  private readonly buf = new Uint8Array(2048);
  private readonly txIp = createIpv6Header();
  private readonly txTcp = createTcpHeader();
  private readonly rxIp = createIpv6Header();
  private readonly rxTcp = createTcpHeader();
  private readonly rxIcmp = createIcmpv6Header();
  private readonly txIcmp = createIcmpv6Header();
  private readonly nd = createNdMessage();
  private readonly groupMac: number;

  constructor(
    private readonly link: Link,
    readonly mac: number,
    readonly ip: Uint8Array,
    readonly peerIp: Uint8Array,
  ) {
    this.groupMac = ipv6MulticastMac(solicitedNodeAddress(ip));
    link.onFrame((f) => this.rx(f));
  }

  close(): void {
    this.link.close();
  }

  private rx(f: Uint8Array): void {
    if (f.length < L4 || readU16(f, 12) !== EtherType.IPV6) return;
    const dstMac = readMac(f, 0);
    if (dstMac !== this.mac && dstMac !== this.groupMac && dstMac !== 0x333300000001) return;
    const h = this.rxIp;
    if (decodeIpv6(f, ETH, f.length - ETH, h) !== null) return;
    if (h.protocol === Ipv6Next.ICMPV6) {
      this.icmp(f, h);
      return;
    }
    if (h.protocol !== Ipv6Next.TCP || !this.onTcp || !ipv6Equal(h.dst, 0, this.ip, 0)) return;
    // Not checked: a TAP without a virtio header hands over summed frames (as RawPeer).
    if (decodeTcp(f, h.payloadOffset, h.payloadLen, 0, 0, this.rxTcp, false) !== null) return;
    this.onTcp(this.rxTcp, h.payloadLen - this.rxTcp.headerLength);
  }

  private icmp(f: Uint8Array, h: Ipv6Header): void {
    if (decodeIcmpv6(f, h.payloadOffset, h.payloadLen, h.src, h.dst, this.rxIcmp) !== null) return;
    const t = this.rxIcmp.type;
    if (t !== Icmpv6Type.NEIGHBOR_SOLICITATION && t !== Icmpv6Type.NEIGHBOR_ADVERTISEMENT) return;
    const nd = this.nd;
    if (h.hopLimit !== 255 || decodeNd(f, h.payloadOffset, h.payloadLen, nd) !== null) return;
    if (t === Icmpv6Type.NEIGHBOR_ADVERTISEMENT) {
      if (ipv6Equal(nd.target, 0, this.peerIp, 0) && nd.targetLla >= 0) this.peerMac = nd.targetLla;
      return;
    }
    if (!ipv6Equal(nd.target, 0, this.ip, 0)) return;
    if (ipv6Equal(h.src, 0, this.peerIp, 0) && nd.sourceLla >= 0) this.peerMac = nd.sourceLla;
    // A solicitation from :: is someone's DAD for our address: not ours to answer here.
    if (h.src.every((b) => b === 0)) return;
    const src = new Uint8Array(h.src);
    this.sendNd(src, nd.sourceLla >= 0 ? nd.sourceLla : readMac(f, 6), {
      type: Icmpv6Type.NEIGHBOR_ADVERTISEMENT,
      solicited: true,
      override: true,
      target: this.ip,
      targetLla: this.mac,
    });
  }

  private sendNd(dst: Uint8Array, dstMac: number, m: Parameters<typeof encodeNd>[0]): void {
    const n = encodeNd(m, this.buf, L4, this.ip, dst);
    this.ipHeader(dstMac, dst, Ipv6Next.ICMPV6, n, 255);
    this.link.send(this.buf.subarray(0, L4 + n));
  }

  private ipHeader(dstMac: number, dst: Uint8Array, next: number, payloadLen: number, hops = 64): void {
    writeEthernetHeader(this.buf, 0, dstMac, this.mac, -1, EtherType.IPV6);
    const h = this.txIp;
    h.trafficClass = 0;
    h.flowLabel = 0;
    h.payloadLength = payloadLen;
    h.nextHeader = next;
    h.hopLimit = hops;
    copyIpv6(h.src, 0, this.ip, 0);
    copyIpv6(h.dst, 0, dst, 0);
    encodeIpv6(h, this.buf, ETH);
  }

  /** Solicit the DUT's MAC until it answers, sleeping `gapMs` between tries. */
  async resolve(sleep: (ms: number) => Promise<void>, tries = 50, gapMs = 100): Promise<void> {
    const group = solicitedNodeAddress(this.peerIp);
    for (let i = 0; i < tries && this.peerMac < 0; i++) {
      this.sendNd(group, ipv6MulticastMac(group), {
        type: Icmpv6Type.NEIGHBOR_SOLICITATION,
        target: this.peerIp,
        sourceLla: this.mac,
      });
      await sleep(gapMs);
    }
    if (this.peerMac < 0) throw new Error(`raw peer 6: no neighbor advertisement after ${tries} tries`);
  }

  sendTcp(o: RawSegment): void {
    const t = this.txTcp;
    tcpHeaderOf(o, t);
    const hl = encodeTcpHeader(t, this.buf, L4);
    const plen = o.payload ?? 0;
    this.buf.fill(0x61, L4 + hl, L4 + hl + plen);
    this.ipHeader(this.peerMac, this.peerIp, Ipv6Next.TCP, hl + plen);
    writeL4Checksum6(this.buf, L4, hl + plen, this.ip, this.peerIp, Ipv6Next.TCP);
    this.link.send(this.buf.subarray(0, L4 + hl + plen));
  }

  /**
   * ICMPv6 packet too big (RFC 4443 3.2) quoting, as a router between us would, as much of a
   * segment the DUT "sent" to us as fits the minimum MTU: its IPv6 header and a TCP segment with
   * the given ports and sequence number, whole and correctly summed.
   */
  sendPacketTooBig(mtu: number, quoted: { srcPort: number; dstPort: number; seq: number }): void {
    const q = new Uint8Array(ICMPV6_ERROR_QUOTE_MAX);
    const h = createIpv6Header();
    h.payloadLength = q.length - IPV6_HEADER_LENGTH;
    h.nextHeader = Ipv6Next.TCP;
    h.hopLimit = 64;
    copyIpv6(h.src, 0, this.peerIp, 0);
    copyIpv6(h.dst, 0, this.ip, 0);
    encodeIpv6(h, q, 0);
    writeU16(q, 40, quoted.srcPort);
    writeU16(q, 42, quoted.dstPort);
    writeU32(q, 44, quoted.seq >>> 0);
    q[52] = 0x50;
    q[53] = 0x18;
    writeU16(q, 54, 1000);
    q.fill(0x78, 60);
    writeL4Checksum6(q, 40, h.payloadLength, this.peerIp, this.ip, Ipv6Next.TCP);
    this.buf.set(q, L4 + 8);
    const m = this.txIcmp;
    m.type = Icmpv6Type.PACKET_TOO_BIG;
    m.code = 0;
    m.mtu = mtu;
    const n = encodeIcmpv6(m, this.buf, L4, q.length, this.ip, this.peerIp);
    this.ipHeader(this.peerMac, this.peerIp, Ipv6Next.ICMPV6, n);
    this.link.send(this.buf.subarray(0, L4 + n));
  }
}
