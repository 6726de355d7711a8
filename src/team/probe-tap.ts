import type { Counters } from '../core/counters.ts';
import type { Link, RxOffloadInfo } from '../link/link.ts';
import { ALL_NODES_ADDRESS, decodeNdFrame, encodeNdFrame, ND_FRAME_MAX } from '../stack/nd-frame.ts';
import {
  BROADCAST_MAC,
  ipv6Equal,
  ipv6MulticastMac,
  isIpv6Unspecified,
  linkLocalFromMac,
  solicitedNodeAddress,
} from '../wire/addr.ts';
import { ARP_LENGTH, ArpOp, type ArpPacket, createArpPacket, decodeArp, encodeArp } from '../wire/arp.ts';
import {
  createEthernetHeader,
  decodeEthernet,
  ETHERNET_VLAN_HEADER_LENGTH,
  EtherType,
  encodeEthernet,
} from '../wire/ethernet.ts';
import { ethDst, ethSrc, ethTagged, ethType } from '../wire/fields.ts';
import { Icmpv6Type } from '../wire/icmpv6.ts';
import { createIpv6Header } from '../wire/ipv6.ts';
import { createNdMessage, type NdEncode } from '../wire/ndp.ts';

/**
 * How far a port's reader has caught up, wherever it runs: how often it read its queue empty
 * (TapLink.drains) and when it last did (clock ms; absent: cannot tell), and whether the queue is
 * empty right now (null: cannot tell).
 */
export interface ReadState {
  drains: number;
  empty: boolean | null;
  drainedAt?: number;
}

/** What a ProbeTap can learn of its port beyond the frames that pass through it. */
export interface ProbePort {
  /**
   * Frames the port received that never pass through here: a NIC that owns its port elsewhere
   * (a WorkerNic's TAP) keeps its own connections' frames, and only counts them.
   */
  rxFrames?: () => number;
  /** How far the port's reader has caught up (see ReadState). */
  readState?: () => ReadState;
  /**
   * The earliest time (clock ms) the latest frame counted could have arrived: when its reader last
   * read the queue empty before it. A frame read late, behind a backlog, proves only that.
   */
  rxSince?: () => number;
}

/**
 * Sits between a NIC and the port it owns, so the team can send frames of its own out of that very
 * port (reachability probes, gratuitous ARP after a failover) and see the ARP replies to its probes,
 * whatever kind of NIC runs behind it. Everything else passes through untouched.
 *
 * Probes carry a MAC of their own per port and sender address 0.0.0.0 (an RFC 5227 ARP probe):
 * neither the switch's entry for the team MAC nor any peer's ARP cache entry for the team address
 * moves when a standby port probes.
 *
 * IPv6 neighbors are probed with neighbor solicitations from the probe MAC and the link-local
 * address formed from it (the port's probe address). Not from ::, whose answer goes to all nodes
 * (RFC 4861 7.2.4) and so reaches every member alike, and not from a team address, which would
 * point the neighbor's cache entry for it at the probe MAC: the answer comes unicast to this port
 * only, and the one entry it creates at the neighbor is the probe address's own. The tap answers
 * the neighbor's solicitations for that address, so the entry stays valid.
 */
/** Ethernet configuration testing (loopback), the type of bonding's learning frames. */
const ETHERTYPE_LOOPBACK = 0x9000;

export class ProbeTap implements Link {
  readonly name: string;
  private frameHandler: ((frame: Uint8Array, info?: RxOffloadInfo) => void) | null = null;
  private arpHandler: ((p: ArpPacket) => void) | null = null;
  private readonly eth = createEthernetHeader();
  private readonly rxArp = createArpPacket();
  private readonly txArp = createArpPacket();
  private readonly txFrame = new Uint8Array(14 + ARP_LENGTH);
  private readonly txEth = createEthernetHeader();
  private rxSeen = 0;
  private ndHandler: ((target: Uint8Array, mac: number) => void) | null = null;
  /** This port's IPv6 probe address: fe80:: with the probe MAC's EUI-64 identifier. */
  readonly probeAddress6: Uint8Array;
  private readonly rxIp6 = createIpv6Header();
  private readonly rxNd = createNdMessage();
  private readonly txNd = new Uint8Array(ND_FRAME_MAX);

  constructor(
    readonly inner: Link,
    /** The MAC probes are sent from; replies to it are consumed here. */
    readonly probeMac: number,
    private readonly counters: Counters,
    private readonly port: ProbePort = {},
  ) {
    this.name = `${inner.name}+probe`;
    this.probeAddress6 = linkLocalFromMac(probeMac);
    inner.onFrame(this.rx);
  }

  /** Frames received on the port so far: traffic is evidence the port still reaches the segment. */
  get rxFrames(): number {
    const elsewhere = this.port.rxFrames;
    return elsewhere === undefined ? this.rxSeen : (this.rxSeen + elsewhere()) >>> 0;
  }
  /** See ProbePort.readState; null when the port cannot tell (its frames all pass through here). */
  readState(): ReadState | null {
    return this.port.readState?.() ?? null;
  }
  /** See ProbePort.rxSince; null when the port cannot tell (a frame proves the link works as it is read). */
  rxSince(): number | null {
    return this.port.rxSince?.() ?? null;
  }
  get mtu(): number {
    return this.inner.mtu;
  }
  get carrier(): boolean {
    return this.inner.carrier;
  }
  get drain(): (() => boolean) | undefined {
    return this.inner.drain ? this.drainInner : undefined;
  }
  private readonly drainInner = (): boolean => this.inner.drain!();
  send(frame: Uint8Array): boolean {
    return this.inner.send(frame);
  }
  onFrame(handler: (frame: Uint8Array, info?: RxOffloadInfo) => void): void {
    this.frameHandler = handler;
  }
  onCarrier(handler: (up: boolean) => void): void {
    this.inner.onCarrier(handler);
  }
  close(): void {
    this.inner.close();
  }

  /** Where ARP replies addressed to the probe MAC go. */
  onProbeReply(handler: (p: ArpPacket) => void): void {
    this.arpHandler = handler;
  }

  /** Where neighbor advertisements for a target, addressed to the probe MAC, go. */
  onProbeReply6(handler: (target: Uint8Array, mac: number) => void): void {
    this.ndHandler = handler;
  }

  /**
   * A neighbor solicitation for `target` (16 bytes) from the probe address, to the target's
   * solicited-node group: the IPv6 counterpart of the ARP probe.
   */
  sendProbe6(target: Uint8Array, vlanId = -1): boolean {
    const group = solicitedNodeAddress(target);
    return this.sendNd(ipv6MulticastMac(group), this.probeMac, vlanId, this.probeAddress6, group, {
      type: Icmpv6Type.NEIGHBOR_SOLICITATION,
      target,
      sourceLla: this.probeMac,
    });
  }

  /**
   * An unsolicited neighbor advertisement for `ip` (16 bytes) from `mac`, override set, to all
   * nodes (RFC 4861 7.2.6): the switch learns `mac` on this port, and neighbors that cache `ip`
   * take `mac` for it whatever they held. The IPv6 counterpart of gratuitous ARP.
   */
  announce6(mac: number, ip: Uint8Array, vlanId = -1): boolean {
    return this.sendNd(ipv6MulticastMac(ALL_NODES_ADDRESS), mac, vlanId, ip, ALL_NODES_ADDRESS, {
      type: Icmpv6Type.NEIGHBOR_ADVERTISEMENT,
      override: true,
      target: ip,
      targetLla: mac,
    });
  }

  private sendNd(
    dstMac: number,
    srcMac: number,
    vlanId: number,
    src: Uint8Array,
    dst: Uint8Array,
    msg: NdEncode,
  ): boolean {
    const n = encodeNdFrame({ dstMac, srcMac, vlanId, src, dst, msg }, this.txNd);
    return n > 0 && this.inner.send(this.txNd.subarray(0, n));
  }

  /** Broadcast an ARP probe for `targetIp` from the probe MAC. */
  sendProbe(targetIp: number, vlanId = -1): boolean {
    const a = this.txArp;
    a.op = ArpOp.REQUEST;
    a.senderMac = this.probeMac;
    a.senderIp = 0;
    a.targetMac = 0;
    a.targetIp = targetIp >>> 0;
    return this.sendArp(BROADCAST_MAC, this.probeMac, vlanId);
  }

  /**
   * Gratuitous ARP for `ip` from `mac`: the switch learns `mac` on this port, and peers that cache
   * `ip` refresh it. This is the learning frame that steers inbound traffic to this port.
   */
  announce(mac: number, ip: number, vlanId = -1): boolean {
    const a = this.txArp;
    a.op = ArpOp.REQUEST;
    a.senderMac = mac;
    a.senderIp = ip >>> 0;
    a.targetMac = 0;
    a.targetIp = ip >>> 0;
    return this.sendArp(BROADCAST_MAC, mac, vlanId);
  }

  /**
   * A learning frame from `mac` to itself (ethertype 0x9000, Ethernet loopback, as Linux bonding's
   * TLB sends every `lp_interval`): the switch learns or refreshes `mac` on this port, and since
   * it is addressed to a MAC learned on the port it came from, goes nowhere else; no peer's cache
   * changes. Padded to the 60-byte minimum.
   */
  learn(mac: number, vlanId = -1): boolean {
    const buf = this.learnFrame;
    buf.fill(0);
    const end = this.ethernet(buf, mac, mac, vlanId, ETHERTYPE_LOOPBACK);
    return this.inner.send(buf.subarray(0, Math.max(60, end)));
  }
  private readonly learnFrame = new Uint8Array(64);

  /** Write an Ethernet header (tagged when `vlanId` >= 0) at buf[0]; returns where it ends. */
  private ethernet(buf: Uint8Array, dst: number, src: number, vlanId: number, etherType: number): number {
    const h = this.txEth;
    h.dst = dst;
    h.src = src;
    h.vlanId = vlanId;
    h.pcp = 0;
    h.dei = false;
    h.etherType = etherType;
    return encodeEthernet(h, buf, 0);
  }

  private sendArp(dst: number, src: number, vlanId: number): boolean {
    const buf = vlanId >= 0 ? new Uint8Array(18 + ARP_LENGTH) : this.txFrame;
    const off = this.ethernet(buf, dst, src, vlanId, EtherType.ARP);
    encodeArp(this.txArp, buf, off);
    return this.inner.send(buf);
  }

  private readonly rx = (frame: Uint8Array, info?: RxOffloadInfo): void => {
    this.rxSeen++;
    if (this.arpHandler !== null && frame.length >= 14 + ARP_LENGTH && isArp(frame)) {
      const e = this.eth;
      if (decodeEthernet(frame, 0, frame.length, e) === null && e.dst === this.probeMac) {
        const a = this.rxArp;
        if (decodeArp(frame, e.headerLength, frame.length - e.headerLength, a) !== null) {
          this.counters.inc('drop.team.bad-probe-reply');
          return;
        }
        if (a.op === ArpOp.REPLY && a.targetMac === this.probeMac) {
          this.counters.inc('team.probe.reply');
          this.arpHandler(a);
          return;
        }
      }
    }
    if (this.ndHandler !== null && ethDst(frame) === this.probeMac && this.ndRx(frame)) return;
    this.frameHandler?.(frame, info);
  };

  /** An ND message to the probe MAC: consumed (true) when it is an answer to a probe or about the probe address. */
  private ndRx(frame: Uint8Array): boolean {
    const ip = this.rxIp6;
    const nd = this.rxNd;
    if (!decodeNdFrame(frame, ip, nd)) return false;
    if (nd.type === Icmpv6Type.NEIGHBOR_ADVERTISEMENT) {
      if (!nd.solicited) return false;
      this.counters.inc('team.probe.reply6');
      this.ndHandler!(nd.target, nd.targetLla >= 0 ? nd.targetLla : ethSrc(frame));
      return true;
    }
    // The neighbor checks the probe address it learned (NUD): answer as its owner would.
    if (!ipv6Equal(nd.target, 0, this.probeAddress6, 0) || isIpv6Unspecified(ip.src)) return false;
    this.counters.inc('team.probe.ns6-answered');
    const dstMac = nd.sourceLla >= 0 ? nd.sourceLla : ethSrc(frame);
    const vlanId = ethTagged(frame) ? ((frame[14]! & 0x0f) << 8) | frame[15]! : -1;
    this.sendNd(dstMac, this.probeMac, vlanId, this.probeAddress6, ip.src, {
      type: Icmpv6Type.NEIGHBOR_ADVERTISEMENT,
      solicited: true,
      override: true,
      target: this.probeAddress6,
      targetLla: this.probeMac,
    });
    return true;
  }
}

/** ARP, untagged or behind one 802.1Q tag. */
function isArp(f: Uint8Array): boolean {
  if (!ethTagged(f)) return ethType(f) === EtherType.ARP;
  return f.length >= ETHERNET_VLAN_HEADER_LENGTH + ARP_LENGTH && ethType(f) === EtherType.ARP;
}
