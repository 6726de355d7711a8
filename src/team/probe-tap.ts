import type { Counters } from '../core/counters.ts';
import type { Link, RxOffloadInfo } from '../link/link.ts';
import { BROADCAST_MAC } from '../wire/addr.ts';
import { ARP_LENGTH, ArpOp, type ArpPacket, createArpPacket, decodeArp, encodeArp } from '../wire/arp.ts';
import {
  createEthernetHeader,
  decodeEthernet,
  ETHERNET_VLAN_HEADER_LENGTH,
  EtherType,
  encodeEthernet,
} from '../wire/ethernet.ts';
import { ethTagged, ethType } from '../wire/fields.ts';

/** What a ProbeTap can learn of its port beyond the frames that pass through it. */
export interface ProbePort {
  /**
   * Frames the port received that never pass through here: a NIC that owns its port elsewhere
   * (a WorkerNic's TAP) keeps its own connections' frames, and only counts them.
   */
  rxFrames?: () => number;
  /**
   * How far the port's reader has caught up, wherever it runs: how often it read its queue empty
   * (TapLink.drains), and whether the queue is empty right now (null: cannot tell).
   */
  readState?: () => { drains: number; empty: boolean | null };
}

/**
 * Sits between a NIC and the port it owns, so the team can send frames of its own out of that very
 * port (reachability probes, gratuitous ARP after a failover) and see the ARP replies to its probes,
 * whatever kind of NIC runs behind it. Everything else passes through untouched.
 *
 * Probes carry a MAC of their own per port and sender address 0.0.0.0 (an RFC 5227 ARP probe):
 * neither the switch's entry for the team MAC nor any peer's ARP cache entry for the team address
 * moves when a standby port probes.
 */
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

  constructor(
    readonly inner: Link,
    /** The MAC probes are sent from; replies to it are consumed here. */
    readonly probeMac: number,
    private readonly counters: Counters,
    private readonly port: ProbePort = {},
  ) {
    this.name = `${inner.name}+probe`;
    inner.onFrame(this.rx);
  }

  /** Frames received on the port so far: traffic is evidence the port still reaches the segment. */
  get rxFrames(): number {
    const elsewhere = this.port.rxFrames;
    return elsewhere === undefined ? this.rxSeen : (this.rxSeen + elsewhere()) >>> 0;
  }
  /** See ProbePort.readState; null when the port cannot tell (its frames all pass through here). */
  readState(): { drains: number; empty: boolean | null } | null {
    return this.port.readState?.() ?? null;
  }
  get mtu(): number {
    return this.inner.mtu;
  }
  get carrier(): boolean {
    return this.inner.carrier;
  }
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

  private sendArp(dst: number, src: number, vlanId: number): boolean {
    const h = this.txEth;
    h.dst = dst;
    h.src = src;
    h.vlanId = vlanId;
    h.pcp = 0;
    h.dei = false;
    h.etherType = EtherType.ARP;
    const buf = vlanId >= 0 ? new Uint8Array(18 + ARP_LENGTH) : this.txFrame;
    const off = encodeEthernet(h, buf, 0);
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
    this.frameHandler?.(frame, info);
  };
}

/** ARP, untagged or behind one 802.1Q tag. */
function isArp(f: Uint8Array): boolean {
  if (!ethTagged(f)) return ethType(f) === EtherType.ARP;
  return f.length >= ETHERNET_VLAN_HEADER_LENGTH + ARP_LENGTH && ethType(f) === EtherType.ARP;
}
