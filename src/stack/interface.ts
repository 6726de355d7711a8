import type { Link, LinkGsoOptions, RxOffloadInfo } from '../core/link.ts';
import type { DecodeError } from '../wire/decode-error.ts';
import { writeEthernetHeader } from '../wire/ethernet.ts';

/** One IPv4 address configured on an interface, with its subnet precomputed for on-link tests. */
export interface InterfaceAddress {
  readonly ip: number;
  readonly prefixLength: number;
  readonly mask: number;
  readonly network: number;
  /** Directed broadcast of the subnet; for /31 and /32 there is none and this is 0xffffffff. */
  readonly broadcast: number;
}

export interface InterfaceOptions {
  mac: number | string;
  /**
   * 'a.b.c.d/n', or several of them; the first IPv4 one is the primary address. IPv6 ones
   * ('fd00::10/64') turn IPv6 on for the interface. Either family may be left out: an interface
   * without an IPv4 address is IPv6-only (no ARP at all), one without any address carries nothing
   * until IPv6 is enabled on it.
   */
  ip: string | readonly string[];
  /** Turn IPv6 on (link-local address, neighbor discovery, SLAAC) even without an IPv6 address. */
  ipv6?: boolean;
  /** 802.1Q VLAN id 1..4094; absent for untagged. */
  vlan?: number;
  /** Largest IP packet; defaults to the link's MTU and may not exceed it. */
  mtu?: number;
  name?: string;
  /**
   * Use the link's segmentation and checksum offloads when it has them (default true). `false`, or
   * an object with `tso` / `csum` false, turns them off, e.g. to measure what they are worth.
   */
  offload?: boolean | { tso?: boolean; csum?: boolean };
}

/** Largest IPv4 packet: the ceiling of a super-segment. */
export const IPV4_MAX_PACKET = 65535;

/**
 * A stack interface: one (link, VLAN) pair with its own MAC and addresses. Several interfaces can
 * share a link when their VLAN ids differ, which is how a tagged trunk is split into subnets.
 */
export class StackInterface {
  /** Ethernet header length of frames this interface sends: 18 with an 802.1Q tag, 14 without. */
  readonly ethHeaderLength: number;
  /** The link cuts TCP super-segments for us (TSO). */
  readonly tso: boolean;
  /** The link cuts TCP-over-IPv6 super-segments too (TSO6); implies `tso`. */
  readonly tso6: boolean;
  /** The link completes TCP checksums for us. */
  readonly csumOffload: boolean;
  /** Largest IP packet handed to the link in one piece: 64 KB with TSO, else the MTU. */
  readonly maxPacket: number;
  /**
   * The link frames leave by. With offloads this is a thin wrapper over `device` that routes the
   * frame the path layer marked (see `sendOffloaded`) to `sendGso`, so that the neighbor layer's
   * ordinary transmit path (resolution state, counters) is the same for offloaded frames.
   */
  readonly link: Link;
  /** The link as given to the stack. */
  readonly device: Link;
  private readonly tx: OffloadTx | null;

  constructor(
    readonly index: number,
    readonly name: string,
    link: Link,
    readonly mac: number,
    /** 802.1Q VLAN id, or -1 when untagged. */
    readonly vlanId: number,
    readonly mtu: number,
    readonly addresses: readonly InterfaceAddress[],
    offload: { tso: boolean; csum: boolean } = { tso: false, csum: false },
  ) {
    this.ethHeaderLength = vlanId >= 0 ? 18 : 14;
    this.device = link;
    const can = typeof link.sendGso === 'function' ? link.offloads : undefined;
    this.csumOffload = offload.csum && can?.csum === true;
    // TSO without checksum offload cannot be asked for: every cut segment needs a fresh checksum.
    this.tso = this.csumOffload && offload.tso && can?.tso === true;
    this.tso6 = this.tso && can?.tso6 === true;
    this.maxPacket = this.tso ? IPV4_MAX_PACKET : mtu;
    this.tx = this.csumOffload ? new OffloadTx(link) : null;
    this.link = this.tx ?? link;
  }

  /**
   * Mark the next frame handed to `link.send` for the device's `sendGso` with `opts` (null clears
   * the mark). The path layer marks, hands the frame to the neighbor layer, which transmits it at
   * once because the neighbor is resolved, and clears. Only valid when `csumOffload` is true.
   */
  markOffload(opts: LinkGsoOptions | null): void {
    this.tx!.pending = opts;
  }

  /** The first IPv4 address, or 0 on an interface without one (IPv6-only). */
  get primaryIp(): number {
    return this.addresses.length > 0 ? this.addresses[0]!.ip : 0;
  }

  /** The interface has an IPv4 address: without one it speaks IPv6 only, and ARP is off. */
  get ipv4(): boolean {
    return this.addresses.length > 0;
  }

  get up(): boolean {
    return this.link.carrier;
  }

  hasAddress(ip: number): boolean {
    for (const a of this.addresses) if (a.ip === ip) return true;
    return false;
  }

  /** Limited broadcast or the directed broadcast of one of our subnets. */
  isBroadcast(ip: number): boolean {
    if (ip === 0xffffffff) return true;
    for (const a of this.addresses) if (a.prefixLength < 31 && a.broadcast === ip) return true;
    return false;
  }

  /** The configured address whose subnet contains `ip`, or null. */
  addressFor(ip: number): InterfaceAddress | null {
    for (const a of this.addresses) if ((ip & a.mask) >>> 0 === a.network) return a;
    return null;
  }

  /**
   * Source address for packets to `nextHop`: the address on the next hop's subnet if there is one
   * (so the peer can answer on-link), else the primary address.
   */
  sourceFor(nextHop: number): number {
    return this.addressFor(nextHop)?.ip ?? this.primaryIp;
  }

  /** Write the Ethernet header (with the VLAN tag if this interface has one) at buf[0]. */
  writeEthernet(buf: Uint8Array, dstMac: number, etherType: number): number {
    return writeEthernetHeader(buf, 0, Math.max(dstMac, 0), this.mac, this.vlanId, etherType);
  }
}

/** Routes one marked frame to `sendGso`; everything else passes straight through. */
class OffloadTx implements Link {
  pending: LinkGsoOptions | null = null;
  constructor(private readonly inner: Link) {}
  get name(): string {
    return this.inner.name;
  }
  get mtu(): number {
    return this.inner.mtu;
  }
  get carrier(): boolean {
    return this.inner.carrier;
  }
  get offloads() {
    return this.inner.offloads;
  }
  send(frame: Uint8Array): boolean {
    const p = this.pending;
    if (p === null) return this.inner.send(frame);
    this.pending = null;
    return this.inner.sendGso!(frame, p);
  }
  onFrame(handler: (frame: Uint8Array, info?: RxOffloadInfo) => void): void {
    this.inner.onFrame(handler);
  }
  onCarrier(handler: (up: boolean) => void): void {
    this.inner.onCarrier(handler);
  }
  close(): void {
    this.inner.close();
  }
}

export function makeAddress(ip: number, prefixLength: number, mask: number): InterfaceAddress {
  const network = (ip & mask) >>> 0;
  const broadcast = prefixLength >= 31 ? 0xffffffff : (network | ~mask) >>> 0;
  return { ip, prefixLength, mask, network, broadcast };
}

const DECODE_ERRORS: readonly DecodeError[] = [
  'truncated',
  'bad-checksum',
  'bad-version',
  'bad-header-length',
  'bad-length',
  'bad-option',
  'bad-type',
  'unsupported',
];

/**
 * Counter names `drop.<layer>.<decode error>`, built once so that counting a malformed frame does
 * not build a string per frame.
 */
export function decodeDropNames(layer: string): Readonly<Record<DecodeError, string>> {
  const out = {} as Record<DecodeError, string>;
  for (const e of DECODE_ERRORS) out[e] = `drop.${layer}.${e}`;
  return out;
}
