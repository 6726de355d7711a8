/**
 * A raw peer on any Link (a switch port of the simulator, a TAP): it owns one MAC and one IPv4
 * address, answers ARP for it, and crafts whatever a test or a benchmark needs to put on the wire
 * (TCP segments with any options, ICMP frag-needed, bare IPv4 fragments) with Chimney's codecs. It
 * keeps no TCP state: the conformance suite plays the peer with it, the attack benchmark the
 * attacker.
 */
import type { Link } from '../core/link.ts';
import {
  ArpOp,
  createArpPacket,
  createIpv4Header,
  createTcpHeader,
  decodeArp,
  decodeIpv4,
  decodeTcp,
  EtherType,
  encodeArp,
  encodeIpv4,
  encodeTcpHeader,
  finishTcpChecksum,
  IcmpType,
  IcmpUnreachCode,
  IpProto,
  type Ipv4Header,
  internetChecksum,
  readMac,
  readU16,
  type TcpHeader,
  writeEthernetHeader,
  writeU16,
  writeU32,
} from '../wire/index.ts';

export interface RawSegment {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack?: number;
  flags: number;
  window?: number;
  mss?: number;
  wscale?: number;
  sackPermitted?: boolean;
  ts?: { val: number; ecr: number };
  sack?: Array<[number, number]>;
  /** Bytes of payload (filled with 'a'). */
  payload?: number;
}

const BROADCAST = 0xffffffffffff;

/** Fill `t` from `o` (the IPv6 tester in test/conformance shares it). */
export function tcpHeaderOf(o: RawSegment, t: TcpHeader): void {
  t.srcPort = o.srcPort;
  t.dstPort = o.dstPort;
  t.seq = o.seq >>> 0;
  t.ack = (o.ack ?? 0) >>> 0;
  t.flags = o.flags;
  t.window = o.window ?? 65535;
  t.urgent = 0;
  t.mss = o.mss ?? -1;
  t.wscale = o.wscale ?? -1;
  t.sackPermitted = o.sackPermitted ?? false;
  t.hasTimestamps = o.ts !== undefined;
  t.tsVal = (o.ts?.val ?? 0) >>> 0;
  t.tsEcr = (o.ts?.ecr ?? 0) >>> 0;
  t.sackCount = o.sack?.length ?? 0;
  for (let i = 0; i < t.sackCount; i++) {
    t.sackBlocks[2 * i] = o.sack![i]![0] >>> 0;
    t.sackBlocks[2 * i + 1] = o.sack![i]![1] >>> 0;
  }
}

export class RawPeer {
  /** The peer's MAC once learnt (from its ARP traffic or an answer to `resolve`), else -1. */
  peerMac = -1;
  /** Every TCP segment addressed to us, decoded; `h` and `ip` are reused per call. */
  onTcp: ((h: TcpHeader, payloadLen: number, ip: Ipv4Header) => void) | null = null;
  private readonly buf = new Uint8Array(2048);
  private readonly tx = createIpv4Header();
  private readonly txTcp = createTcpHeader();
  private readonly rxIp = createIpv4Header();
  private readonly rxTcp = createTcpHeader();
  private readonly arp = createArpPacket();
  private ipId = 1;

  constructor(
    private readonly link: Link,
    readonly mac: number,
    readonly ip: number,
    readonly peerIp: number,
  ) {
    link.onFrame((f) => this.rx(f));
  }

  close(): void {
    this.link.close();
  }

  private rx(f: Uint8Array): void {
    if (f.length < 14) return;
    const type = readU16(f, 12);
    if (type === EtherType.ARP) {
      const a = this.arp;
      if (decodeArp(f, 14, f.length - 14, a) !== null) return;
      if (a.senderIp === this.peerIp) this.peerMac = a.senderMac;
      if (a.op === ArpOp.REQUEST && a.targetIp === this.ip) {
        const reply = {
          op: ArpOp.REPLY,
          senderMac: this.mac,
          senderIp: this.ip,
          targetMac: a.senderMac,
          targetIp: a.senderIp,
        };
        this.sendArp(a.senderMac, reply);
      }
      return;
    }
    if (type !== EtherType.IPV4 || !this.onTcp || readMac(f, 0) !== this.mac) return;
    const ip = this.rxIp;
    if (decodeIpv4(f, 14, f.length - 14, ip, false) !== null) return;
    if (ip.dst !== this.ip || ip.protocol !== IpProto.TCP) return;
    const l4 = ip.totalLength - ip.headerLength;
    // Checksums are not checked: a TAP without a virtio header hands over summed frames, and a
    // switch port with offloads may carry partial ones.
    if (decodeTcp(f, 14 + ip.headerLength, l4, ip.src, ip.dst, this.rxTcp, false) !== null) return;
    this.onTcp(this.rxTcp, l4 - this.rxTcp.headerLength, ip);
  }

  private sendArp(dst: number, p: Parameters<typeof encodeArp>[0]): void {
    const out = new Uint8Array(42);
    writeEthernetHeader(out, 0, dst, this.mac, -1, EtherType.ARP);
    encodeArp(p, out, 14);
    this.link.send(out);
  }

  /** Ask for the peer's MAC until it answers, sleeping `sleep(gapMs)` between tries. */
  async resolve(sleep: (ms: number) => Promise<void>, tries = 50, gapMs = 100): Promise<void> {
    for (let i = 0; i < tries && this.peerMac < 0; i++) {
      this.sendArp(BROADCAST, {
        op: ArpOp.REQUEST,
        senderMac: this.mac,
        senderIp: this.ip,
        targetMac: 0,
        targetIp: this.peerIp,
      });
      await sleep(gapMs);
    }
    if (this.peerMac < 0) throw new Error(`raw peer: no ARP answer from the peer after ${tries} tries`);
  }

  /** Ethernet and IPv4 headers for `payloadLen` bytes of `proto`; returns the frame length. */
  private ipFrame(
    payloadLen: number,
    proto: number,
    o: { id?: number; mf?: boolean; fragOffset?: number } = {},
  ) {
    writeEthernetHeader(this.buf, 0, this.peerMac, this.mac, -1, EtherType.IPV4);
    const h = this.tx;
    h.tos = 0;
    h.totalLength = 20 + payloadLen;
    h.id = (o.id ?? this.ipId++) & 0xffff;
    h.df = o.mf === undefined;
    h.mf = o.mf ?? false;
    h.fragOffset = o.fragOffset ?? 0;
    h.ttl = 64;
    h.protocol = proto;
    h.src = this.ip;
    h.dst = this.peerIp;
    encodeIpv4(h, this.buf, 14);
    return 34 + payloadLen;
  }

  sendTcp(o: RawSegment): void {
    const t = this.txTcp;
    tcpHeaderOf(o, t);
    const hl = encodeTcpHeader(t, this.buf, 34);
    const plen = o.payload ?? 0;
    this.buf.fill(0x61, 34 + hl, 34 + hl + plen);
    const n = this.ipFrame(hl + plen, IpProto.TCP);
    finishTcpChecksum(this.buf, 34, hl + plen, this.ip, this.peerIp);
    this.link.send(this.buf.subarray(0, n));
  }

  /** ICMP fragmentation-needed quoting a TCP header the peer "sent" to us (RFC 792, RFC 1191). */
  sendFragNeeded(mtu: number, quoted: { srcPort: number; dstPort: number; seq: number }): void {
    const body = new Uint8Array(28);
    body[0] = 0x45;
    writeU16(body, 2, 1500);
    body[6] = 0x40;
    body[8] = 64;
    body[9] = IpProto.TCP;
    writeU32(body, 12, this.peerIp);
    writeU32(body, 16, this.ip);
    writeU16(body, 10, internetChecksum(body, 0, 20));
    writeU16(body, 20, quoted.srcPort);
    writeU16(body, 22, quoted.dstPort);
    writeU32(body, 24, quoted.seq >>> 0);
    const icmpLen = 8 + body.length;
    const n = this.ipFrame(icmpLen, IpProto.ICMP);
    const b = this.buf;
    b.fill(0, 34, 42);
    b[34] = IcmpType.DEST_UNREACHABLE;
    b[35] = IcmpUnreachCode.FRAG_NEEDED;
    writeU16(b, 40, mtu);
    b.set(body, 42);
    writeU16(b, 36, internetChecksum(b, 34, icmpLen));
    this.link.send(b.subarray(0, n));
  }

  /** One non-final fragment of UDP datagram `id`: `len` bytes at byte `offset` (a multiple of 8). */
  sendFragment(id: number, offset: number, len = 8): void {
    const n = this.ipFrame(len, IpProto.UDP, { id, mf: true, fragOffset: offset });
    this.buf.fill(0x55, 34, 34 + len);
    this.link.send(this.buf.subarray(0, n));
  }
}
