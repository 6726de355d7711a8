import type { Clock, Timer } from '../core/clock.ts';
import type { Counters } from '../core/counters.ts';
import { InvalidArgumentError } from '../core/errors.ts';
import type { LinkGsoOptions, RxOffloadInfo } from '../core/link.ts';
import type { Random } from '../core/random.ts';
import { createPathState, type PathState } from '../state/path-state.ts';
import { BROADCAST_MAC, parseCidr, parseIpv4 } from '../wire/addr.ts';
import { completePartialL4Checksum, writeL4Checksum } from '../wire/checksum.ts';
import { EtherType } from '../wire/ethernet.ts';
import {
  ipVersion,
  ipv4Dst,
  ipv4HeaderLen,
  ipv4Proto,
  ipv4Src,
  ipv4TotalLen,
  l4DstPort,
  l4SrcPort,
  tcpSeq,
} from '../wire/fields.ts';
import { createIpv4Header, decodeIpv4, encodeIpv4, IpProto, type Ipv4Header } from '../wire/ipv4.ts';
import { type AddressTable, TWO_32 } from './address-table.ts';
import { decodeDropNames, type StackInterface } from './interface.ts';
import { Ipv4Output } from './ip-output.ts';
import type { IcmpErrorInfo, IpInfo, IpSender } from './ip-sender.ts';
import type { Ipv6Layer } from './ipv6.ts';
import { checkIp, type NeighborTable, positive, positiveInt } from './neighbor.ts';
import { Reassembler, type ReassemblyOptions } from './reassembly.ts';

export interface PathOptions {
  /** A path MTU lowered by ICMP returns to the interface MTU after this long (default 600000 = 10 min, RFC 1191). */
  pmtuExpiryMs?: number;
  /**
   * Floor for a path MTU learned from ICMP (default 552, Linux's min_pmtu): a forged
   * fragmentation-needed cannot shrink a path into uselessly small packets, and 552 still carries
   * the 512-byte payloads plus headers every IPv4 host must accept (RFC 1122 576 minus slack for options).
   */
  minPmtu?: number;
  /** Paths kept in the cache; the oldest beyond this is forgotten (default 8192). */
  maxPaths?: number;
  /** TTL of new paths (default 64). */
  ttl?: number;
}

/** What the path layer needs from the stack it belongs to. */
export interface PathHost {
  readonly clock: Clock;
  readonly random: Random;
  readonly counters: Counters;
  readonly neighbors: NeighborTable;
  readonly interfaces: readonly StackInterface[];
  /** A whole datagram for one of our addresses, after reassembly. */
  deliver(rx: RxPacket): void;
  /** A datagram too big for its path with DF set was refused; tell the transport (deferred). */
  localError(protocol: number, e: IcmpErrorInfo): void;
  /** A reassembly timed out after fragment zero arrived: `quote` is its IP header + 8 bytes. */
  reassemblyTimeout(quote: Uint8Array): void;
}

/** An arriving datagram as handed upwards. One object is reused for every packet. */
export class RxPacket implements IpInfo {
  src = 0;
  dst = 0;
  ttl = 0;
  tos = 0;
  ifIndex = 0;
  protocol = 0;
  buf: Uint8Array = new Uint8Array(0);
  /** Offset of the IP header in buf; the header is `ipHeaderLength` bytes. */
  ipOff = 0;
  ipHeaderLength = 20;
  l4Off = 0;
  l4Len = 0;
  /** Sent to the Ethernet broadcast address. */
  l2Broadcast = false;
  /** Sent to a broadcast IP address (limited or one of our subnets'). */
  ipBroadcast = false;
  /** Rebuilt from fragments (only the whole datagram ever reaches the transports). */
  reassembled = false;
  /** The L4 checksum is known good (the link verified it, or we completed a partial one). */
  l4ChecksumOk = false;
}

interface Route {
  network: number;
  mask: number;
  prefixLength: number;
  /** 0 for on-link routes. */
  gateway: number;
  iface: StackInterface;
  connected: boolean;
}

const IPV4_DROP = decodeDropNames('ipv4');

/**
 * The IPv4 path layer: routing, the shared per-(local, remote) PathState cache with path MTU, the
 * transmit side (IpSender) with fragmentation and loopback, and the receive side with reassembly.
 */
export class PathLayer implements IpSender {
  /** May be replaced by a larger buffer when an interface with a bigger MTU appears or for `beginLarge`; read it after `begin`. */
  txBuf: Uint8Array;
  private fragBuf: Uint8Array;
  private readonly routes: Route[] = [];
  private readonly paths = new Map<number, Map<number, PathState>>();
  private readonly pathOrder = new Set<PathState>();
  private readonly pmtuExpiry = new Map<PathState, number>();
  private readonly pmtuTimer: Timer;
  private readonly localAddrs = new Map<number, StackInterface>();
  private readonly changeHandlers: ((path: PathState) => void)[] = [];
  private readonly rxHdr: Ipv4Header = createIpv4Header();
  private readonly rx = new RxPacket();
  private readonly scratchPath: PathState;
  private readonly ipOut: Ipv4Output;
  /** Reused for every offloaded send: the link reads it synchronously. */
  private readonly gsoOpts: LinkGsoOptions = { gsoSize: 0, csumStart: 0, csumOffset: 16 };
  readonly reassembly: Reassembler;
  readonly pmtuExpiryMs: number;
  readonly minPmtu: number;
  readonly maxPaths: number;
  readonly defaultTtl: number;
  /** IPv6 paths (remote address a handle ≥ 2^32) are the IPv6 layer's; see `attachIpv6`. */
  private v6: Ipv6Layer | null = null;
  private addrs: AddressTable | null = null;

  constructor(
    private readonly host: PathHost,
    opts: PathOptions = {},
    reassembly: ReassemblyOptions = {},
  ) {
    this.pmtuExpiryMs = positive(opts.pmtuExpiryMs, 600_000, 'path.pmtuExpiryMs');
    this.minPmtu = positiveInt(opts.minPmtu, 552, 'path.minPmtu');
    if (this.minPmtu < 68) throw new InvalidArgumentError('path.minPmtu must be at least 68 (RFC 791)');
    this.maxPaths = positiveInt(opts.maxPaths, 8192, 'path.maxPaths');
    this.defaultTtl = positiveInt(opts.ttl, 64, 'path.ttl');
    if (this.defaultTtl > 255) throw new InvalidArgumentError('path.ttl must be 1..255');
    this.txBuf = new Uint8Array(1500 + 18);
    this.fragBuf = new Uint8Array(1500 + 18);
    this.ipOut = new Ipv4Output(host.random.u32());
    this.pmtuTimer = host.clock.createTimer(() => this.expirePmtu()).unref();
    this.reassembly = new Reassembler(host.clock, host.counters, reassembly, (q) =>
      host.reassemblyTimeout(q),
    );
    this.scratchPath = createPathState({ localIp: 0, remoteIp: 0 }, null as never, 0, 1500, this.defaultTtl);
  }

  /**
   * @internal The stack's IPv6 layer and address table: `pathTo` an IPv6 handle and every
   * IpSender call on such a path go there, so transports need no second sender.
   */
  attachIpv6(v6: Ipv6Layer, addrs: AddressTable): void {
    this.v6 = v6;
    this.addrs = addrs;
  }

  /** Called when a path's MTU, interface or neighbor changes, so owners of copies can push updates. */
  onChange(cb: (path: PathState) => void): void {
    this.changeHandlers.push(cb);
  }

  // ---- interfaces and routes ---------------------------------------------------------------------

  /** @internal The stack registered an interface: connected routes, local addresses, buffers. */
  interfaceAdded(iface: StackInterface): void {
    for (const a of iface.addresses) {
      this.localAddrs.set(a.ip, iface);
      this.insertRoute({
        network: a.network,
        mask: a.mask,
        prefixLength: a.prefixLength,
        gateway: 0,
        iface,
        connected: true,
      });
    }
    const need = iface.mtu + 18;
    // A transport builds a whole super-segment in txBuf before the link cuts it.
    const txNeed = iface.maxPacket + 18;
    if (this.txBuf.length < txNeed) this.txBuf = new Uint8Array(txNeed);
    if (this.fragBuf.length < need) this.fragBuf = new Uint8Array(need);
    this.repoint();
  }

  addRoute(cidr: string, gateway?: string, ifName?: string): void {
    const { ip, prefixLength, mask } = parseCidr(cidr);
    const gw = gateway === undefined ? 0 : parseIpv4(gateway);
    let iface: StackInterface | null = null;
    if (ifName !== undefined) {
      iface = this.host.interfaces.find((i) => i.name === ifName) ?? null;
      if (!iface) throw new InvalidArgumentError(`no interface named '${ifName}'`);
    }
    if (gw !== 0) {
      const onLink = this.connectedRoute(gw, iface);
      if (!onLink) throw new InvalidArgumentError(`gateway ${gateway} is not on a connected subnet`);
      iface = onLink.iface;
    } else if (!iface) {
      throw new InvalidArgumentError('a route needs a gateway or an interface');
    }
    this.insertRoute({
      network: (ip & mask) >>> 0,
      mask,
      prefixLength,
      gateway: gw,
      iface,
      connected: false,
    });
    this.repoint();
  }

  setDefaultGateway(gateway: string): void {
    this.addRoute('0.0.0.0/0', gateway);
  }

  /** Longest-prefix match; our own addresses route to themselves (loopback). */
  routeTo(ip: number): { iface: StackInterface; nextHop: number } | null {
    const local = this.localAddrs.get(ip);
    if (local) return { iface: local, nextHop: ip };
    if (ip === 0xffffffff) {
      const first = this.host.interfaces.find((i) => i.ipv4);
      return first ? { iface: first, nextHop: ip } : null;
    }
    for (const r of this.routes) {
      // An IPv6-only interface has no IPv4 source to send from (Linux: "Network is unreachable").
      if ((ip & r.mask) >>> 0 === r.network && r.iface.ipv4)
        return { iface: r.iface, nextHop: r.gateway || ip };
    }
    return null;
  }

  isLocal(ip: number): boolean {
    if (ip >= TWO_32) return this.addrs !== null && ip > TWO_32 && this.v6!.isLocal(this.addrs.bytes(ip));
    return this.localAddrs.has(ip);
  }

  // ---- paths -------------------------------------------------------------------------------------

  /**
   * The shared path from `localIp` (chosen by the route when absent) to `remoteIp`, created on first
   * use; null when there is no route or `localIp` is not ours.
   */
  pathTo(remoteIp: number, localIp?: number): PathState | null {
    if (remoteIp >= TWO_32) {
      // Families do not mix on one path.
      if (this.v6 === null || (localIp !== undefined && localIp < TWO_32)) return null;
      return this.v6.pathTo6(remoteIp, localIp);
    }
    if (localIp !== undefined && localIp >= TWO_32) return null;
    checkIp(remoteIp);
    if (localIp !== undefined) {
      checkIp(localIp);
      if (!this.localAddrs.has(localIp)) return null;
    }
    const r = this.routeTo(remoteIp);
    if (!r) return null;
    const local = localIp ?? r.iface.sourceFor(r.nextHop);
    let byRemote = this.paths.get(local);
    const hit = byRemote?.get(remoteIp);
    if (hit) return hit;
    if (this.pathOrder.size >= this.maxPaths) this.evictPath();
    const nb = this.host.neighbors.acquire(r.iface, r.nextHop);
    const path = createPathState(
      { localIp: local, remoteIp },
      nb,
      r.iface.index,
      r.iface.mtu,
      this.defaultTtl,
    );
    if (!byRemote) this.paths.set(local, (byRemote = new Map()));
    byRemote.set(remoteIp, path);
    this.pathOrder.add(path);
    return path;
  }

  /** The cached path if there is one, without creating it. */
  findPath(remoteIp: number, localIp: number): PathState | null {
    if (remoteIp >= TWO_32) return this.v6?.findPath6(remoteIp, localIp) ?? null;
    return this.paths.get(localIp)?.get(remoteIp) ?? null;
  }

  /**
   * A path for a one-off reply (ICMP): the cached one if it exists, else a scratch object valid until
   * the next call, so that answering arbitrary sources does not fill the path cache.
   */
  replyPath(remoteIp: number, localIp: number): PathState | null {
    const cached = this.findPath(remoteIp, localIp);
    if (cached) return cached;
    const r = this.routeTo(remoteIp);
    if (!r) return null;
    const p = this.scratchPath;
    const c = p.const as { localIp: number; remoteIp: number };
    c.localIp = localIp;
    c.remoteIp = remoteIp;
    p.cached.mtu = r.iface.mtu;
    p.cached.ttl = this.defaultTtl;
    p.cached.tos = 0;
    p.ifIndex = r.iface.index;
    p.neighbor = this.host.neighbors.acquire(r.iface, r.nextHop, false);
    return p;
  }

  get pathCount(): number {
    return this.pathOrder.size;
  }

  /**
   * Lower the MTU of the path (localIp → remoteIp) after ICMP fragmentation-needed (RFC 1191).
   * Only ever lowers; clamped to [minPmtu, interface MTU]. Returns true if the MTU changed.
   */
  updatePmtu(localIp: number, remoteIp: number, mtu: number, quotedLength = 0): boolean {
    const path = this.findPath(remoteIp, localIp);
    if (!path) return false;
    let m = mtu;
    // Pre-RFC 1191 routers send 0: guess the next plateau below the packet that failed.
    if (m === 0) m = plateauBelow(quotedLength || path.cached.mtu);
    if (m < this.minPmtu) m = this.minPmtu;
    if (m >= path.cached.mtu) return false;
    path.cached.mtu = m;
    const at = this.host.clock.now() + this.pmtuExpiryMs;
    this.pmtuExpiry.set(path, at);
    if (!this.pmtuTimer.armed || this.pmtuTimer.deadline > at) this.pmtuTimer.armAt(at);
    this.host.counters.inc('path.pmtu.lowered');
    this.changed(path);
    return true;
  }

  // ---- transmit (IpSender) -----------------------------------------------------------------------

  begin(path: PathState): number {
    if (path.const.remoteIp >= TWO_32) return this.v6!.begin6(path);
    const iface = this.host.interfaces[path.ifIndex];
    return (iface ? iface.ethHeaderLength : 18) + 20;
  }

  /**
   * Like `begin`, for transports whose datagram may exceed the MTU (UDP, ICMP): grows `txBuf` so
   * `l4Len` bytes fit after the returned offset. Read `txBuf` after this call.
   */
  beginLarge(path: PathState, l4Len: number): number {
    const off = this.begin(path);
    if (path.const.remoteIp >= TWO_32) {
      if (l4Len > 65535) throw new InvalidArgumentError(`datagram of ${l4Len} bytes exceeds IPv6's 65535`);
    } else if (l4Len > 65535 - 20) {
      throw new InvalidArgumentError(`datagram of ${l4Len} bytes exceeds IPv4's 65515`);
    }
    if (this.txBuf.length < off + l4Len) {
      const bigger = new Uint8Array(Math.max(off + l4Len, this.txBuf.length * 2));
      this.txBuf = bigger;
    }
    return off;
  }

  commit(path: PathState, protocol: number, l4Len: number, df: boolean, ttl?: number, tos?: number): boolean {
    if (path.const.remoteIp >= TWO_32)
      return this.v6!.commit6(this.txBuf, path, protocol, l4Len, df, ttl, tos);
    const c = this.host.counters;
    const iface = this.host.interfaces[path.ifIndex];
    if (!iface) {
      c.inc('tx.drop.ipv4.no-interface');
      return false;
    }
    const ethLen = iface.ethHeaderLength;
    const total = 20 + l4Len;
    if (l4Len < 0 || ethLen + total > this.txBuf.length) {
      c.inc('tx.drop.ipv4.bad-length');
      return false;
    }
    const h = this.ipOut.next(path, protocol, total, df, ttl, tos);
    const buf = this.txBuf;

    if (this.localAddrs.has(h.dst)) {
      encodeIpv4(h, buf, ethLen);
      const pkt = buf.slice(ethLen, ethLen + total);
      c.inc('tx.ipv4.loopback');
      this.host.clock.defer(() => this.loopbackInput(pkt));
      return true;
    }
    if (!iface.up) {
      c.inc('tx.drop.ipv4.link-down');
      return false;
    }
    const mtu = Math.min(path.cached.mtu, iface.mtu);
    const broadcast = iface.isBroadcast(h.dst);
    if (total <= mtu) {
      encodeIpv4(h, buf, ethLen);
      return this.toLink(iface, path, buf, ethLen + total, broadcast);
    }
    if (df) {
      // Like Linux for a local sender: nothing goes out, and the transport hears of the MTU at once
      // instead of waiting for a router's ICMP.
      c.inc('tx.drop.ipv4.frag-needed');
      const e = quoteError('frag-needed', 4, mtu, protocol, h.src, h.dst, buf, ethLen + 20, l4Len);
      this.host.clock.defer(() => this.host.localError(protocol, e));
      return false;
    }
    return this.fragment(iface, path, h, ethLen, l4Len, mtu, broadcast);
  }

  checksumOffload(path: PathState): boolean {
    if (path.const.remoteIp >= TWO_32) return this.v6!.checksumOffload6(path);
    const iface = this.host.interfaces[path.ifIndex];
    // A resolved neighbor means the neighbor layer transmits at once instead of queueing a copy,
    // so the frame reaches the link while it is marked for offload.
    return (
      iface?.csumOffload === true &&
      path.neighbor.cached.dstMac >= 0 &&
      !this.localAddrs.has(path.const.remoteIp)
    );
  }

  maxPacketBytes(path: PathState): number {
    if (path.const.remoteIp >= TWO_32) return this.v6!.maxPacketBytes6(path);
    const mtu = path.cached.mtu;
    const iface = this.host.interfaces[path.ifIndex];
    if (iface === undefined || !iface.tso || !this.checksumOffload(path)) return mtu;
    return iface.maxPacket;
  }

  commitOffload(path: PathState, l4Len: number, segSize: number, ttl?: number, tos?: number): boolean {
    if (path.const.remoteIp >= TWO_32)
      return this.v6!.commitOffload6(this.txBuf, path, l4Len, segSize, ttl, tos);
    const c = this.host.counters;
    const iface = this.host.interfaces[path.ifIndex];
    if (!iface?.up || !this.checksumOffload(path)) {
      // Circumstances changed (or never allowed it): finish the checksum here and send plainly;
      // commit refuses, and counts, a packet that is now too big.
      const off = this.begin(path);
      writeL4Checksum(this.txBuf, off, l4Len, path.const.localIp, path.const.remoteIp, IpProto.TCP);
      c.inc('tx.offload.fallback');
      return this.commit(path, IpProto.TCP, l4Len, true, ttl, tos);
    }
    const ethLen = iface.ethHeaderLength;
    const mtu = Math.min(path.cached.mtu, iface.mtu);
    const buf = this.txBuf;
    const o = this.gsoOpts;
    if (!this.ipOut.writeOffloaded(buf, ethLen, path, l4Len, segSize, mtu, iface.maxPacket, o, ttl, tos)) {
      c.inc('tx.drop.ipv4.bad-length');
      return false;
    }
    const segmented = o.gsoSize > 0;
    iface.writeEthernet(buf, path.neighbor.cached.dstMac, EtherType.IPV4);
    iface.markOffload(o);
    let ok: boolean;
    try {
      ok = this.host.neighbors.output(iface, path.neighbor, buf, ethLen + 20 + l4Len);
    } finally {
      iface.markOffload(null);
    }
    c.inc(segmented ? 'tx.offload.tso' : 'tx.offload.csum');
    return ok;
  }

  // ---- receive -----------------------------------------------------------------------------------

  /**
   * An IPv4 packet at buf[off, off+len) arrived on `iface`. Accounts for it exactly once: a
   * `drop.ipv4.*` reason here, fragment bookkeeping in the reassembler, or by the transport.
   */
  input(
    iface: StackInterface,
    buf: Uint8Array,
    off: number,
    len: number,
    l2Broadcast: boolean,
    info?: RxOffloadInfo,
  ): void {
    const c = this.host.counters;
    const h = this.rxHdr;
    const err = decodeIpv4(buf, off, len, h, true);
    if (err !== null) {
      c.inc(IPV4_DROP[err]);
      return;
    }
    let l4Ok = false;
    if (info !== undefined && (info.csumPartial || info.csumValid || info.gsoType !== 0)) {
      if (info.gsoType !== 0 && (h.protocol !== IpProto.TCP || h.mf || h.fragOffset !== 0)) {
        // We only take TCP super-segments; the kernel was told so (TUNSETOFFLOAD).
        c.inc('drop.ipv4.bad-gso');
        return;
      }
      l4Ok = this.offloadedInput(buf, off, h, info);
    }
    if (isMartianSource(h.src) || this.localAddrs.has(h.src) || iface.isBroadcast(h.src)) {
      c.inc('drop.ipv4.martian-src');
      return;
    }
    const ipBroadcast = iface.isBroadcast(h.dst);
    if (!ipBroadcast && !iface.hasAddress(h.dst)) {
      // Strong host model: an address is reachable only through its own interface, which keeps
      // VLANs that share a link apart. We do not forward.
      c.inc('drop.ipv4.not-for-us');
      return;
    }
    this.accept(iface.index, buf, off, l2Broadcast, ipBroadcast, l4Ok);
  }

  close(): void {
    this.pmtuTimer.disarm();
    this.reassembly.close();
  }

  // ---- internals ---------------------------------------------------------------------------------

  private loopbackInput(pkt: Uint8Array): void {
    const c = this.host.counters;
    c.inc('rx.loopback');
    const err = decodeIpv4(pkt, 0, pkt.length, this.rxHdr, false);
    const iface = this.localAddrs.get(this.rxHdr.dst);
    if (err !== null || !iface) {
      c.inc('drop.ipv4.loopback');
      return;
    }
    this.accept(iface.index, pkt, 0, false, false);
  }

  /** Decoded header in rxHdr; reassemble if needed and deliver. */
  private accept(
    ifIndex: number,
    buf: Uint8Array,
    off: number,
    l2Broadcast: boolean,
    ipBroadcast: boolean,
    l4ChecksumOk = false,
  ): void {
    const h = this.rxHdr;
    let reassembled = false;
    if (h.mf || h.fragOffset !== 0) {
      const whole = this.reassembly.add(h, buf, off);
      if (!whole) return;
      buf = whole;
      off = 0;
      decodeIpv4(whole, 0, whole.length, h, false);
      reassembled = true;
    }
    const rx = this.rx;
    rx.src = h.src;
    rx.dst = h.dst;
    rx.ttl = h.ttl;
    rx.tos = h.tos;
    rx.ifIndex = ifIndex;
    rx.protocol = h.protocol;
    rx.buf = buf;
    rx.ipOff = off;
    rx.ipHeaderLength = h.headerLength;
    rx.l4Off = off + h.headerLength;
    rx.l4Len = h.totalLength - h.headerLength;
    rx.l2Broadcast = l2Broadcast;
    rx.ipBroadcast = ipBroadcast;
    rx.reassembled = reassembled;
    rx.l4ChecksumOk = l4ChecksumOk && !reassembled;
    this.host.deliver(rx);
  }

  /**
   * A packet from a link with offloads (header decoded in `h`). A partial L4 checksum is completed
   * in place, so every transport sees a valid one; returns whether the L4 checksum is known good.
   */
  private offloadedInput(buf: Uint8Array, off: number, h: Ipv4Header, info: RxOffloadInfo): boolean {
    const c = this.host.counters;
    if (info.gsoType !== 0) c.inc('rx.offload.gso');
    const proto = h.protocol;
    if (h.mf || h.fragOffset !== 0 || (proto !== IpProto.TCP && proto !== IpProto.UDP)) return false;
    if (info.csumPartial) {
      if (!completePartialL4Checksum(buf, off + h.headerLength, h.totalLength - h.headerLength, proto))
        return false;
      c.inc('rx.offload.csum-partial');
      return true;
    }
    if (info.csumValid) c.inc('rx.offload.csum-valid');
    return info.csumValid;
  }

  private toLink(
    iface: StackInterface,
    path: PathState,
    buf: Uint8Array,
    len: number,
    broadcast: boolean,
  ): boolean {
    if (broadcast) {
      iface.writeEthernet(buf, BROADCAST_MAC, EtherType.IPV4);
      const ok = iface.link.send(buf.subarray(0, len));
      if (!ok) this.host.counters.inc('tx.drop.link');
      return ok;
    }
    iface.writeEthernet(buf, path.neighbor.cached.dstMac, EtherType.IPV4);
    return this.host.neighbors.output(iface, path.neighbor, buf, len);
  }

  /** RFC 791 fragmentation of the datagram whose payload sits in txBuf after the headers. */
  private fragment(
    iface: StackInterface,
    path: PathState,
    h: Ipv4Header,
    ethLen: number,
    l4Len: number,
    mtu: number,
    broadcast: boolean,
  ): boolean {
    const chunk = (mtu - 20) & ~7;
    const src = this.txBuf;
    const out = this.fragBuf;
    const payload = ethLen + 20;
    let ok = true;
    for (let at = 0; at < l4Len; at += chunk) {
      const n = at + chunk < l4Len ? chunk : l4Len - at;
      h.totalLength = 20 + n;
      h.mf = at + n < l4Len;
      h.fragOffset = at;
      encodeIpv4(h, out, ethLen);
      out.set(src.subarray(payload + at, payload + at + n), payload);
      if (!this.toLink(iface, path, out, payload + n, broadcast)) ok = false;
    }
    this.host.counters.inc('tx.ipv4.fragmented');
    return ok;
  }

  private insertRoute(r: Route): void {
    const i = this.routes.findIndex((x) => x.network === r.network && x.prefixLength === r.prefixLength);
    if (i >= 0) this.routes.splice(i, 1);
    let at = 0;
    while (at < this.routes.length && this.routes[at]!.prefixLength >= r.prefixLength) at++;
    this.routes.splice(at, 0, r);
  }

  private connectedRoute(ip: number, iface: StackInterface | null): Route | null {
    for (const r of this.routes) {
      if (!r.connected || (iface && r.iface !== iface)) continue;
      if ((ip & r.mask) >>> 0 === r.network) return r;
    }
    return null;
  }

  /** After a routing change, move every cached path to its new interface and next hop. */
  private repoint(): void {
    for (const p of this.pathOrder) {
      const r = this.routeTo(p.const.remoteIp);
      if (!r) continue;
      const old = this.host.interfaces[p.ifIndex];
      if (old && r.iface === old && p.neighbor.const.ip === r.nextHop) continue;
      if (old) this.host.neighbors.release(old, p.neighbor.const.ip);
      p.neighbor = this.host.neighbors.acquire(r.iface, r.nextHop);
      p.ifIndex = r.iface.index;
      if (p.cached.mtu > r.iface.mtu || !this.pmtuExpiry.has(p)) p.cached.mtu = r.iface.mtu;
      this.changed(p);
    }
  }

  private evictPath(): void {
    const oldest = this.pathOrder.values().next();
    if (oldest.done) return;
    const p = oldest.value;
    this.pathOrder.delete(p);
    this.pmtuExpiry.delete(p);
    this.paths.get(p.const.localIp)?.delete(p.const.remoteIp);
    const iface = this.host.interfaces[p.ifIndex];
    if (iface) this.host.neighbors.release(iface, p.neighbor.const.ip);
    this.host.counters.inc('path.evicted');
  }

  private expirePmtu(): void {
    const now = this.host.clock.now();
    let next = Number.POSITIVE_INFINITY;
    for (const [p, at] of this.pmtuExpiry) {
      if (at > now) {
        if (at < next) next = at;
        continue;
      }
      this.pmtuExpiry.delete(p);
      const iface = this.host.interfaces[p.ifIndex];
      if (iface) p.cached.mtu = iface.mtu;
      this.host.counters.inc('path.pmtu.expired');
      this.changed(p);
    }
    if (next !== Number.POSITIVE_INFINITY) this.pmtuTimer.armAt(next);
  }

  /** @internal A path changed (also an IPv6 path, told by the IPv6 layer): run the handlers. */
  changed(p: PathState): void {
    for (const h of this.changeHandlers) h(p);
  }
}

/**
 * What an ICMP error (or a local refusal) says about the packet it quotes: the quoted IP header at
 * buf[ipOff] is not trusted to be complete, only its first 20 bytes and 8 transport bytes are read.
 * Returns null if the quote is too short or not IPv4.
 */
export function parseQuote(
  kind: IcmpErrorInfo['kind'],
  code: number,
  mtu: number,
  buf: Uint8Array,
  ipOff: number,
  avail: number,
): (IcmpErrorInfo & { protocol: number; quotedLength: number }) | null {
  if (avail < 20 || ipVersion(buf, ipOff) !== 4) return null;
  const hl = ipv4HeaderLen(buf, ipOff);
  if (hl < 20 || avail < hl + 8) return null;
  const protocol = ipv4Proto(buf, ipOff);
  const e = quoteError(
    kind,
    code,
    mtu,
    protocol,
    ipv4Src(buf, ipOff),
    ipv4Dst(buf, ipOff),
    buf,
    ipOff + hl,
    8,
  );
  return { ...e, protocol, quotedLength: ipv4TotalLen(buf, ipOff) };
}

function quoteError(
  kind: IcmpErrorInfo['kind'],
  code: number,
  mtu: number,
  protocol: number,
  src: number,
  dst: number,
  buf: Uint8Array,
  l4Off: number,
  l4Len: number,
): IcmpErrorInfo {
  const ports = protocol === IpProto.TCP || protocol === IpProto.UDP;
  return {
    kind,
    code,
    mtu,
    src,
    dst,
    srcPort: ports && l4Len >= 4 ? l4SrcPort(buf, l4Off) : 0,
    dstPort: ports && l4Len >= 4 ? l4DstPort(buf, l4Off) : 0,
    seq: protocol !== IpProto.UDP && l4Len >= 8 ? tcpSeq(buf, l4Off) : 0,
  };
}

/** RFC 1191 section 7 plateau table: the next common MTU strictly below `len`. */
export function plateauBelow(len: number): number {
  const plateaus = [32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68];
  for (const p of plateaus) if (p < len) return p;
  return 68;
}

/** Sources no real host sends from: unspecified, loopback, multicast, class E, limited broadcast. */
function isMartianSource(ip: number): boolean {
  const top = ip >>> 24;
  return ip === 0 || top === 127 || top >= 224;
}
