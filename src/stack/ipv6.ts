import type { Clock, Timer } from '../core/clock.ts';
import type { Counters } from '../core/counters.ts';
import { InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import type { LinkGsoOptions, RxOffloadInfo } from '../core/link.ts';
import type { Random } from '../core/random.ts';
import { createPathState, type PathState } from '../state/path-state.ts';
import {
  copyIpv6,
  createIpv6,
  formatIpv6,
  ipv6Equal,
  ipv6MulticastMac,
  ipv6PrefixMatch,
  isIpv6LinkLocal,
  isIpv6Loopback,
  isIpv6Multicast,
  isIpv6Unspecified,
  linkLocalFromMac,
  parseIpv6,
  parseIpv6Cidr,
  readU32,
  solicitedNodeAddress,
  writeInterfaceId,
  writeMac,
} from '../wire/addr.ts';
import { completePartialL4Checksum, l4Checksum6Ok, writeL4ChecksumFrom } from '../wire/checksum.ts';
import { EtherType } from '../wire/ethernet.ts';
import {
  createIcmpv6Header,
  decodeIcmpv6,
  encodeIcmpv6,
  ICMPV6_ERROR_QUOTE_MAX,
  type Icmpv6Header,
  Icmpv6Type,
  Icmpv6UnreachCode,
  isIcmpv6Error,
} from '../wire/icmpv6.ts';
import {
  createIpv6Header,
  decodeIpv6,
  encodeIpv6,
  encodeIpv6Fragment,
  IPV6_HEADER_LENGTH,
  IPV6_MIN_MTU,
  type Ipv6Header,
  Ipv6Next,
  Ipv6Problem,
} from '../wire/ipv6.ts';
import { MldType } from '../wire/mld.ts';
import {
  createNdMessage,
  decodeNd,
  encodeNd,
  isNdType,
  ND_INFINITE,
  type NdEncode,
  type NdMessage,
} from '../wire/ndp.ts';
import type { AddressTable } from './address-table.ts';
import { decodeDropNames, type StackInterface } from './interface.ts';
import type { IcmpErrorInfo } from './ip-sender.ts';
import { Mld, type MldOptions } from './mld.ts';
import { type NeighborTable, positive, positiveInt } from './neighbor.ts';
import { RxPacket } from './path.ts';
import { Reassembler, type ReassemblyOptions } from './reassembly.ts';

/*
 * IPv6 for the host (RFC 8200) with neighbor discovery (RFC 4861) and stateless address
 * autoconfiguration (RFC 4862): per interface a link-local address from the MAC, static and
 * autoconfigured addresses each checked by duplicate address detection, the multicast groups they
 * imply (all-nodes and each address's solicited-node group, which decide which 33:33:xx frames
 * the interface takes, reported to snooping switches by MLD in mld.ts), default routers and on-link prefixes learned from router advertisements,
 * and static routes. Neighbors live in the shared `NeighborTable` (`output6`, `learn6`); this layer
 * sends and validates the ND messages. ICMPv6 echo is answered; errors are generated as RFC 4443
 * 2.4 allows (never about an error, a multicast destination only for an unknown option whose type
 * asks for it) and share the ICMPv4 rate limit. TCP and UDP arrive here, are checksummed over
 * the IPv6 pseudo-header and go up with their addresses as `AddressTable` handles; going down,
 * the path layer hands a packet on an IPv6 path (`pathTo6`) to `commit6`, which writes the fixed
 * header with the path's hop limit and traffic class and a flow label per four-tuple.
 */

export interface Ipv6Options {
  /** Neighbor solicitations sent by duplicate address detection (default 1; 0 turns DAD off). */
  dadTransmits?: number;
  /** RFC 4861 RetransTimer: between DAD probes (default 1000 ms). */
  retransMs?: number;
  /**
   * Longest random wait before an address's first DAD probe, so that nodes started together do
   * not probe at once: RFC 4862 5.4.2 asks for up to MAX_RTR_SOLICITATION_DELAY (1000 ms), which
   * Linux applies to every address (rtr_solicit_delay). Default 0, probing at once, because the
   * simulator's tests time DAD from the moment an address is added: with a default of 1000, 26 of
   * the 104 tests of the IPv6 stack, MLD, IPv6 team and test/ipv6 files fail. On real links
   * `serve` and `get` pass 1000 (TAP_DAD_DELAY_MS, `--dad-delay`).
   */
  dadDelayMs?: number;
  /** Take addresses and default routers from router advertisements (default true). */
  slaac?: boolean;
  /** Router solicitations sent once the link-local address is usable (default 3, 4 s apart). */
  routerSolicitations?: number;
  /** Hop limit of packets we originate, until a router advertisement says otherwise (default 64). */
  hopLimit?: number;
  /** Fragment reassembly bounds (timeout default 60 s, RFC 8200 4.5). */
  reassembly?: ReassemblyOptions;
  /** IPv6 paths kept in the cache; the oldest beyond this is forgotten (default 8192). */
  maxPaths?: number;
  /** Multicast listener discovery for the groups joined (RFC 3810; on by default). */
  mld?: MldOptions;
}

export type Ipv6AddressState = 'tentative' | 'preferred' | 'deprecated' | 'duplicate';

export interface Ipv6AddressInfo {
  ip: string;
  prefixLength: number;
  state: Ipv6AddressState;
  origin: 'link-local' | 'static' | 'slaac';
  /** Seconds left, Infinity for ever. */
  validLifetime: number;
  preferredLifetime: number;
}

interface Addr {
  readonly ip: Uint8Array;
  readonly prefixLength: number;
  readonly origin: 'link-local' | 'static' | 'slaac';
  state: 'tentative' | 'preferred' | 'duplicate';
  /** Clock times; Infinity for ever. */
  validUntil: number;
  preferredUntil: number;
  /** DAD: our nonce (RFC 7527) and probes sent. */
  nonce: number;
  probes: number;
  /** DAD waits for the link: a probe fell due while the interface had no carrier. */
  waitingLink: boolean;
  readonly timer: Timer;
  /** The address's handle in the AddressTable (one reference held while configured). */
  readonly handle: number;
}

/** What the IPv6 layer keeps beside a path's state object. */
interface V6Path {
  /** Interface and next hop: re-pointed when routes or default routers change. */
  x: Ipv6Iface;
  nextHop: Uint8Array;
  /** Keyed hash of the two addresses; a packet's flow label mixes its ports into it. */
  readonly labelBase: number;
  /** The remote address is one of ours: packets loop back. */
  readonly loopback: boolean;
}

interface Router {
  readonly ip: Uint8Array;
  until: number;
  readonly timer: Timer;
}

interface Prefix {
  readonly prefix: Uint8Array;
  readonly prefixLength: number;
  until: number;
  readonly timer: Timer;
}

interface Route {
  readonly prefix: Uint8Array;
  readonly prefixLength: number;
  readonly gateway: Uint8Array | null;
  readonly x: Ipv6Iface;
}

/** IPv6 state of one interface. */
class Ipv6Iface {
  readonly addrs: Addr[] = [];
  readonly routers: Router[] = [];
  readonly prefixes: Prefix[] = [];
  /** Joined group MACs with the number of groups behind each. */
  readonly groupMacs = new Map<number, number>();
  mtu: number;
  hopLimit: number;
  retransMs: number;
  reachableMs = 0;
  rsLeft: number;
  readonly rsTimer: Timer;
  constructor(
    readonly iface: StackInterface,
    readonly slaac: boolean,
    hopLimit: number,
    retransMs: number,
    rs: number,
    clock: Clock,
    onRs: (x: Ipv6Iface) => void,
  ) {
    this.mtu = iface.mtu;
    this.hopLimit = hopLimit;
    this.retransMs = retransMs;
    this.rsLeft = rs;
    this.rsTimer = clock.createTimer(() => onRs(this)).unref();
  }
}

export interface Ipv6Context {
  clock: Clock;
  random: Random;
  counters: Counters;
  neighbors: NeighborTable;
  /** The shared ICMP error budget: false when an error may not be sent now. */
  allowError(): boolean;
  /** The stack's address handles (IPv4 u32, IPv6 interned). */
  addrs: AddressTable;
  /** A whole TCP or UDP packet for us; `rx.src`/`rx.dst` are handles, valid during the call. */
  deliver(rx: RxPacket): void;
  /** An ICMPv6 error about one of our TCP (6) or UDP (17) packets. */
  transportError(protocol: number, e: IcmpErrorInfo): void;
  /** False when TCP runs the quoted connection and the quoted sequence is not in flight. */
  tcpErrorInFlight(e: IcmpErrorInfo): boolean;
  /** Tell the transport of a refused packet (too big for its path) after the current call. */
  localError(protocol: number, e: IcmpErrorInfo): void;
  /** A path's MTU or next hop changed: owners of copies (NICs running its connections) hear of it. */
  pathChanged?(path: PathState): void;
}

const ALL_NODES = parseIpv6('ff02::1');
const ALL_ROUTERS = parseIpv6('ff02::2');
const UNSPECIFIED = createIpv6();
const RS_INTERVAL_MS = 4000;
/**
 * What router advertisements may add per interface (Linux's max_addresses is 16): a flood of
 * forged prefixes or routers must not grow the tables without bound.
 */
const MAX_ADDRESSES = 16;
const MAX_ROUTERS = 8;
const MAX_PREFIXES = 16;
/** Path MTUs learned from packet too big: how many destinations, and for how long (RFC 8201 5.3). */
const MAX_PMTU_ENTRIES = 1024;
const PMTU_EXPIRY_MS = 10 * 60 * 1000;
/** RFC 4862 5.5.3 (e): lifetimes below two hours are not shortened by an unauthenticated RA. */
const TWO_HOURS_MS = 2 * 3600 * 1000;
/** After a search for idle paths to free found none, the next one waits this long. */
const RECLAIM_RETRY_MS = 100;
const IP6_DROP = decodeDropNames('ipv6');
const ICMP6_DROP = decodeDropNames('icmpv6');
const ND_DROP = decodeDropNames('nd');

interface PendingPing {
  resolve(v: { rttMs: number }): void;
  reject(e: Error): void;
  sentAt: number;
  timer: Timer;
}

/**
 * The RFC 6437 flow label of a flow: `base` (a path's two addresses, hashed with a secret) mixed
 * with the transport ports (`srcPort << 16 | dstPort`) under the keys k0/k1; never 0. A function of
 * its arguments only, so a NIC given a path's seed sends each connection's label unchanged.
 */
export function flowLabel6(base: number, ports: number, k0: number, k1: number): number {
  let h = Math.imul(base ^ ports, k0);
  h ^= h >>> 16;
  h = Math.imul(h ^ k1, 0x85ebca6b);
  h ^= h >>> 13;
  const label = h & 0xfffff;
  return label === 0 ? 1 : label;
}

/**
 * The fixed IPv6 header at buf[at] of a packet on `path` (addresses are handles of `addrs`):
 * traffic class and hop limit from the connection when given, else from the path.
 */
export function writeIpv6Fixed(
  buf: Uint8Array,
  at: number,
  path: PathState,
  addrs: AddressTable,
  label: number,
  protocol: number,
  l4Len: number,
  ttl: number | undefined,
  tos: number | undefined,
): void {
  const tc = tos ?? path.cached.tos;
  buf[at] = 0x60 | (tc >>> 4);
  buf[at + 1] = ((tc & 0x0f) << 4) | (label >>> 16);
  buf[at + 2] = (label >>> 8) & 0xff;
  buf[at + 3] = label & 0xff;
  buf[at + 4] = l4Len >>> 8;
  buf[at + 5] = l4Len & 0xff;
  buf[at + 6] = protocol;
  buf[at + 7] = ttl ?? path.cached.ttl;
  addrs.write(path.const.localIp, buf, at + 8);
  addrs.write(path.const.remoteIp, buf, at + 24);
}

export class Ipv6Layer {
  private readonly ifs = new Map<StackInterface, Ipv6Iface>();
  private readonly routes: Route[] = [];
  private readonly dadTransmits: number;
  private readonly dadDelayMs: number;
  private readonly retransMs: number;
  private readonly slaac: boolean;
  private readonly rs: number;
  private readonly hopLimit: number;
  private readonly h: Ipv6Header = createIpv6Header();
  private readonly icmp: Icmpv6Header = createIcmpv6Header();
  private readonly txIcmp: Icmpv6Header = createIcmpv6Header();
  private readonly nd: NdMessage = createNdMessage();
  private readonly pings = new Map<number, PendingPing>();
  private readonly pingId: number;
  private pingSeq = 0;
  private closed = false;
  /** Per destination (RFC 5952 text): the path MTU a packet too big reported, and until when. */
  private readonly pmtus = new Map<string, { mtu: number; until: number }>();
  readonly reassembly: Reassembler;
  /** IPv6 paths: local handle → remote handle → path, in creation order for eviction. */
  private readonly paths = new Map<number, Map<number, PathState>>();
  private readonly pathInfo = new Map<PathState, V6Path>();
  private readonly byIndex = new Map<number, Ipv6Iface>();
  private readonly pathExpiry: Timer;
  readonly maxPaths: number;
  private readonly rx: RxPacket;
  private readonly labelKey: Uint8Array;
  /** Reused for every offloaded send: the link reads it synchronously. */
  private readonly gsoOpts: LinkGsoOptions = { gsoSize: 0, csumStart: 0, csumOffset: 16 };
  private readonly labelK0: number;
  private readonly labelK1: number;
  private futileReclaimAt = Number.NEGATIVE_INFINITY;
  readonly mld: Mld;

  constructor(
    private readonly ctx: Ipv6Context,
    opts: Ipv6Options = {},
  ) {
    this.dadTransmits = opts.dadTransmits === 0 ? 0 : positiveInt(opts.dadTransmits, 1, 'ipv6.dadTransmits');
    this.retransMs = positive(opts.retransMs, 1000, 'ipv6.retransMs');
    this.dadDelayMs = opts.dadDelayMs === 0 ? 0 : positive(opts.dadDelayMs, 0, 'ipv6.dadDelayMs');
    this.slaac = opts.slaac ?? true;
    this.rs =
      opts.routerSolicitations === 0
        ? 0
        : positiveInt(opts.routerSolicitations, 3, 'ipv6.routerSolicitations');
    this.hopLimit = positiveInt(opts.hopLimit, 64, 'ipv6.hopLimit');
    if (this.hopLimit > 255) throw new InvalidArgumentError('ipv6.hopLimit must be 1..255');
    this.pingId = ctx.random.u32() & 0xffff;
    this.maxPaths = positiveInt(opts.maxPaths, 8192, 'ipv6.maxPaths');
    this.labelKey = ctx.random.fill(new Uint8Array(16));
    this.labelK0 = ctx.random.u32() | 1;
    this.labelK1 = ctx.random.u32();
    this.pathExpiry = ctx.clock.createTimer(() => this.refreshPathMtus()).unref();
    this.rx = new RxPacket();
    this.mld = new Mld(
      { clock: ctx.clock, random: ctx.random, counters: ctx.counters, linkLocal: (i) => this.mldSource(i) },
      opts.mld,
    );
    this.reassembly = new Reassembler(
      ctx.clock,
      ctx.counters,
      opts.reassembly ?? {},
      (quote) => this.reassemblyTimeout(quote),
      'ipv6',
    );
  }

  /**
   * The path MTU towards `dst`: the smaller of the outgoing interface's IPv6 MTU and what a packet
   * too big reported (never below 1280), or 0 when nothing routes there.
   */
  pathMtu(dst: Uint8Array | string): number {
    const d = typeof dst === 'string' ? parseIpv6(dst) : dst;
    const r = this.route(d);
    if (!r) return 0;
    return this.mtuTo(this.ifs.get(r.iface)!, d, 0);
  }

  private mtuTo(x: Ipv6Iface, dst: Uint8Array, dstOff: number): number {
    if (this.pmtus.size === 0) return x.mtu;
    const e = this.pmtus.get(formatIpv6(dst, dstOff));
    if (!e) return x.mtu;
    if (e.until <= this.ctx.clock.now()) {
      this.pmtus.delete(formatIpv6(dst, dstOff));
      return x.mtu;
    }
    return Math.min(x.mtu, e.mtu);
  }

  /**
   * Turn IPv6 on for `iface`: its link-local address and the `cidrs` given ('fd00::10/64'), each
   * tentative until duplicate address detection passes. The link must be at least 1280 bytes.
   */
  enable(iface: StackInterface, cidrs: readonly string[] = []): void {
    if (this.closed) throw new InvalidStateError('stack is closed');
    if (this.ifs.has(iface)) throw new InvalidStateError(`IPv6 is already on for ${iface.name}`);
    if (iface.mtu < IPV6_MIN_MTU) {
      throw new InvalidArgumentError(
        `IPv6 needs an MTU of at least ${IPV6_MIN_MTU}; ${iface.name} has ${iface.mtu}`,
      );
    }
    const parsed = cidrs.map((s) => {
      const c = parseIpv6Cidr(s);
      if (c.prefixLength === 0) throw new InvalidArgumentError(`'${s}': a prefix length 1..128 is needed`);
      if (isIpv6Multicast(c.ip) || isIpv6Unspecified(c.ip) || isIpv6Loopback(c.ip)) {
        throw new InvalidArgumentError(`'${s}' is not a usable unicast address`);
      }
      if (this.owner(c.ip)) throw new InvalidArgumentError(`${s} is already configured`);
      return c;
    });
    const x = new Ipv6Iface(iface, this.slaac, this.hopLimit, this.retransMs, this.rs, this.ctx.clock, (y) =>
      this.sendRs(y),
    );
    this.ifs.set(iface, x);
    this.byIndex.set(iface.index, x);
    this.join(x, ALL_NODES);
    this.addAddr(x, linkLocalFromMac(iface.mac), 64, 'link-local');
    for (const c of parsed) this.addAddr(x, c.ip, c.prefixLength, 'static');
  }

  enabled(iface: StackInterface): boolean {
    return this.ifs.has(iface);
  }

  /** The interface's IPv6 addresses. */
  addresses(iface: StackInterface): Ipv6AddressInfo[] {
    const x = this.ifs.get(iface);
    if (!x) return [];
    const now = this.ctx.clock.now();
    return x.addrs.map((a) => ({
      ip: formatIpv6(a.ip),
      prefixLength: a.prefixLength,
      state: this.addrState(a, now),
      origin: a.origin,
      validLifetime: (a.validUntil - now) / 1000,
      preferredLifetime: Math.max(0, (a.preferredUntil - now) / 1000),
    }));
  }

  /** Default routers (RFC 5952 text) learned on `iface`. */
  routers(iface: StackInterface): string[] {
    return (this.ifs.get(iface)?.routers ?? []).map((r) => formatIpv6(r.ip));
  }

  /** The IPv6 MTU of `iface` (the link's, or smaller if a router advertisement said so). */
  mtu(iface: StackInterface): number {
    return this.ifs.get(iface)?.mtu ?? 0;
  }

  /** True when a frame to group MAC `mac` is for this interface (a group it joined). */
  acceptsMac(iface: StackInterface, mac: number): boolean {
    return this.ifs.get(iface)?.groupMacs.has(mac) === true;
  }

  /** A static route: 'prefix/len' via `gateway` (on-link when absent) out of `iface`. */
  addRoute(iface: StackInterface, cidr: string, gateway?: string): void {
    const x = this.ifs.get(iface);
    if (!x) throw new InvalidStateError(`IPv6 is not on for ${iface.name}`);
    const c = parseIpv6Cidr(cidr);
    const gw = gateway === undefined ? null : parseIpv6(gateway);
    if (gw && (isIpv6Multicast(gw) || isIpv6Unspecified(gw))) {
      throw new InvalidArgumentError(`gateway ${gateway} is not a unicast address`);
    }
    const prefix = createIpv6();
    for (let i = 0; i < 16; i++) {
      const bits = Math.min(8, Math.max(0, c.prefixLength - 8 * i));
      prefix[i] = c.ip[i]! & ((0xff << (8 - bits)) & 0xff);
    }
    this.routes.push({ prefix, prefixLength: c.prefixLength, gateway: gw, x });
    this.repoint();
  }

  /**
   * Where a packet to `dst` goes: its interface and on-link next hop. Link-local and multicast
   * destinations stay on `via` (or the first IPv6 interface); others take the longest matching
   * on-link prefix, static route, or a default router (one not known unreachable first, RFC 4861
   * 6.3.6). Null when nothing reaches it.
   */
  route(dst: Uint8Array, via?: StackInterface): { iface: StackInterface; nextHop: Uint8Array } | null {
    if (isIpv6LinkLocal(dst) || isIpv6Multicast(dst)) {
      const x = via ? this.ifs.get(via) : this.ifs.values().next().value;
      return x ? { iface: x.iface, nextHop: dst } : null;
    }
    let best: { iface: StackInterface; nextHop: Uint8Array } | null = null;
    let bestLen = -1;
    const consider = (x: Ipv6Iface, prefix: Uint8Array, len: number, gw: Uint8Array | null) => {
      if (len > bestLen && ipv6PrefixMatch(prefix, 0, dst, 0, len)) {
        best = { iface: x.iface, nextHop: gw ?? dst };
        bestLen = len;
      }
    };
    for (const x of this.ifs.values()) {
      if (via && x.iface !== via) continue;
      for (const a of x.addrs)
        if (a.origin !== 'link-local' && a.state !== 'duplicate') consider(x, a.ip, a.prefixLength, null);
      for (const p of x.prefixes) consider(x, p.prefix, p.prefixLength, null);
    }
    for (const r of this.routes)
      if (!via || r.x.iface === via) consider(r.x, r.prefix, r.prefixLength, r.gateway);
    if (best) return best;
    let fallback: { iface: StackInterface; nextHop: Uint8Array } | null = null;
    for (const x of this.ifs.values()) {
      if (via && x.iface !== via) continue;
      for (const r of x.routers) {
        const n = this.ctx.neighbors.lookup6(r.ip, x.iface.index);
        if (n?.status !== 'failed') return { iface: x.iface, nextHop: r.ip };
        fallback ??= { iface: x.iface, nextHop: r.ip };
      }
    }
    return fallback;
  }

  /**
   * Source address for `dst` out of `iface` (RFC 6724, the rules that matter on a host): the same
   * scope (link-local for link-local and link-scope multicast), a preferred address before a
   * deprecated one, then the longest common prefix. Null while no address is usable.
   */
  sourceFor(iface: StackInterface, dst: Uint8Array): Uint8Array | null {
    const x = this.ifs.get(iface);
    if (!x) return null;
    const now = this.ctx.clock.now();
    const linkScope = isIpv6LinkLocal(dst) || (isIpv6Multicast(dst) && (dst[1]! & 0x0f) <= 2);
    let best: Addr | null = null;
    let bestScore = -1;
    for (const a of x.addrs) {
      const st = this.addrState(a, now);
      if (st === 'tentative' || st === 'duplicate') continue;
      let score = 0;
      if ((a.origin === 'link-local') === linkScope) score += 1000;
      if (st === 'preferred') score += 500;
      let common = 0;
      while (common < 128 && ipv6PrefixMatch(a.ip, 0, dst, 0, common + 1)) common++;
      score += common;
      if (score > bestScore) {
        best = a;
        bestScore = score;
      }
    }
    return best ? best.ip : null;
  }

  /** True when `ip` is one of our addresses (any state but duplicate). */
  isLocal(ip: Uint8Array): boolean {
    return this.owner(ip) !== null;
  }

  /**
   * Unsolicited neighbor advertisements with the override flag for every usable address of
   * `iface` (RFC 4861 7.2.6), as a moved port announces itself. Returns the number sent.
   */
  announce(iface: StackInterface): number {
    // As Stack.announce: a closed stack claims no address.
    if (this.closed) throw new InvalidStateError('stack is closed');
    const x = this.ifs.get(iface);
    if (!x) return 0;
    let n = 0;
    for (const a of x.addrs) {
      if (a.state !== 'preferred') continue;
      this.sendNd(x, a.ip, ALL_NODES, {
        type: Icmpv6Type.NEIGHBOR_ADVERTISEMENT,
        override: true,
        target: a.ip,
        targetLla: iface.mac,
      });
      n++;
    }
    this.ctx.counters.inc('nd.tx.unsolicited-na', n);
    return n;
  }

  /** Echo request to `dst`; resolves with the round-trip time, rejects on timeout or no route. */
  ping(
    dst: string | Uint8Array,
    opts: { timeoutMs?: number; size?: number } = {},
  ): Promise<{ rttMs: number }> {
    const to = typeof dst === 'string' ? parseIpv6(dst) : dst;
    const size = opts.size ?? 56;
    const timeoutMs = opts.timeoutMs ?? 1000;
    return new Promise((resolve, reject) => {
      const r = this.route(to);
      const src = r && this.sourceFor(r.iface, to);
      if (!r || !src) {
        reject(new InvalidStateError(`no route to ${formatIpv6(to)}`));
        return;
      }
      const seq = (this.pingSeq = (this.pingSeq + 1) & 0xffff);
      const timer = this.ctx.clock.createTimer(() => {
        this.pings.delete(seq);
        reject(new InvalidStateError(`ping ${formatIpv6(to)} timed out`));
      });
      timer.arm(timeoutMs);
      this.pings.set(seq, { resolve, reject, sentAt: this.ctx.clock.now(), timer });
      const x = this.ifs.get(r.iface)!;
      const len = 8 + size;
      const { frame, at } = this.frame(x, src, to, Ipv6Next.ICMPV6, len, x.hopLimit);
      for (let i = 0; i < size; i++) frame[at + 8 + i] = i & 0xff;
      const t = this.txIcmp;
      t.type = Icmpv6Type.ECHO_REQUEST;
      t.code = 0;
      t.id = this.pingId;
      t.seq = seq;
      encodeIcmpv6(t, frame, at, size, src, to);
      this.ctx.counters.inc('icmpv6.tx.echo-request');
      this.transmit(x, r.nextHop, frame);
    });
  }

  /**
   * An IPv6 packet at frame[off, off+len) arrived on `iface`. Counts exactly one `accept.*` or
   * `drop.*`.
   */
  input(iface: StackInterface, frame: Uint8Array, off: number, len: number, info?: RxOffloadInfo): void {
    const c = this.ctx.counters;
    const x = this.ifs.get(iface);
    if (!x || this.closed) {
      c.inc('drop.ipv6.disabled');
      return;
    }
    const h = this.h;
    const err = decodeIpv6(frame, off, len, h);
    if (err !== null) {
      c.inc(IP6_DROP[err]);
      if (h.problemCode >= 0) {
        // RFC 4443 2.4 (e): no error about a multicast packet, but for an option that asks for one.
        const to = this.forUs(x, h.dst);
        if (to === 'unicast' || (to === 'multicast' && h.problemCode === Ipv6Problem.OPTION)) {
          this.sendProblem(x, frame, off, h);
        }
      }
      return;
    }
    if (isIpv6Multicast(h.src)) {
      c.inc('drop.ipv6.martian-src');
      return;
    }
    const to = this.forUs(x, h.dst);
    if (to === 'no') {
      c.inc('drop.ipv6.not-for-us');
      return;
    }
    if (to === 'tentative') {
      // RFC 4862 5.4: a tentative address receives nothing but what DAD needs, and that is multicast.
      c.inc('drop.ipv6.tentative-dst');
      return;
    }
    if (h.fragment) {
      const whole = this.reassembly.add6(h, frame, off);
      if (!whole) return;
      const e2 = decodeIpv6(whole, 0, whole.length, h);
      if (e2 !== null) {
        c.inc(IP6_DROP[e2]);
        return;
      }
      if (h.fragment) {
        // A fragment inside a reassembled packet: nested fragmentation has no legitimate use.
        c.inc('drop.ipv6.frag-nested');
        return;
      }
      this.dispatch(x, whole, 0, to, true);
      return;
    }
    this.dispatch(x, frame, off, to, false, info);
  }

  /** Hand a whole packet (header decoded in `this.h`) to its upper layer. */
  private dispatch(
    x: Ipv6Iface,
    frame: Uint8Array,
    off: number,
    to: 'unicast' | 'multicast',
    reassembled = false,
    info?: RxOffloadInfo,
  ): void {
    const c = this.ctx.counters;
    const h = this.h;
    switch (h.protocol) {
      case Ipv6Next.ICMPV6:
        this.icmpInput(x, frame, reassembled);
        return;
      case Ipv6Next.NO_NEXT:
        c.inc('accept.ipv6.no-next-header');
        return;
      case Ipv6Next.UDP:
      case Ipv6Next.TCP:
        this.transportInput(x, frame, off, to, reassembled, info);
        return;
      default:
        c.inc('drop.ipv6.unknown-protocol');
        if (to === 'unicast') {
          h.problemCode = Ipv6Problem.NEXT_HEADER;
          h.problemPointer = h.protocolPointer;
          this.sendProblem(x, frame, off, h);
        }
    }
  }

  // ---- TCP and UDP --------------------------------------------------------------------------------

  /**
   * A TCP or UDP packet (header in `this.h`) for one of our addresses: checksum over the
   * pseudo-header (RFC 8200 8.1; a zero UDP checksum is refused), then up with handles for its
   * addresses. The source is interned for the call; whoever keeps it takes its own reference.
   */
  private transportInput(
    x: Ipv6Iface,
    frame: Uint8Array,
    off: number,
    to: 'unicast' | 'multicast',
    reassembled: boolean,
    info: RxOffloadInfo | undefined,
  ): void {
    const c = this.ctx.counters;
    const h = this.h;
    const tcp = h.protocol === Ipv6Next.TCP;
    if (to !== 'unicast') {
      // TCP is unicast only; UDP to a group has no bindings here (no MLD joins but ND's).
      c.inc(tcp ? 'drop.ipv6.tcp-multicast' : 'drop.ipv6.udp-multicast');
      return;
    }
    if (isIpv6Unspecified(h.src) || isIpv6Loopback(h.src)) {
      c.inc('drop.ipv6.martian-src');
      return;
    }
    const l4 = h.payloadOffset;
    const len = h.payloadLen;
    if (len < (tcp ? 20 : 8)) {
      c.inc(tcp ? 'drop.ipv6.tcp-truncated' : 'drop.ipv6.udp-truncated');
      return;
    }
    if (!tcp && frame[l4 + 6] === 0 && frame[l4 + 7] === 0) {
      c.inc('drop.ipv6.udp-zero-checksum');
      return;
    }
    let ok = false;
    if (info !== undefined && !reassembled) {
      if (info.gsoType !== 0) {
        if (!tcp) {
          c.inc('drop.ipv6.bad-gso');
          return;
        }
        c.inc('rx.offload.gso');
      }
      if (info.csumPartial) {
        ok = completePartialL4Checksum(frame, l4, len, h.protocol);
        if (ok) c.inc('rx.offload.csum-partial');
      } else if (info.csumValid) {
        ok = true;
        c.inc('rx.offload.csum-valid');
      }
    }
    if (!ok && !l4Checksum6Ok(frame, l4, len, h.src, h.dst, h.protocol)) {
      c.inc(tcp ? 'drop.ipv6.tcp-bad-checksum' : 'drop.ipv6.udp-bad-checksum');
      return;
    }
    const addrs = this.ctx.addrs;
    const dst = addrs.find(h.dst, 0);
    if (dst < 0) {
      c.inc('drop.ipv6.not-for-us');
      return;
    }
    const src = addrs.intern(h.src, 0);
    if (src < 0) {
      c.inc('drop.ipv6.address-table-full');
      return;
    }
    const rx = this.rx;
    rx.src = src;
    rx.dst = dst;
    rx.ttl = h.hopLimit;
    rx.tos = h.trafficClass;
    rx.ifIndex = x.iface.index;
    rx.protocol = h.protocol;
    rx.buf = frame;
    rx.ipOff = off;
    rx.ipHeaderLength = l4 - off;
    rx.l4Off = l4;
    rx.l4Len = len;
    rx.l2Broadcast = false;
    rx.ipBroadcast = false;
    rx.reassembled = reassembled;
    rx.l4ChecksumOk = true;
    try {
      this.ctx.deliver(rx);
    } finally {
      addrs.release(src);
    }
  }

  /**
   * ICMPv6 port unreachable about the UDP packet being delivered now (`rx` from `deliver`; the
   * header is still in `this.h` because delivery is synchronous).
   */
  portUnreachable(rx: RxPacket): void {
    const x = this.byIndex.get(rx.ifIndex);
    if (!x || rx.buf[rx.ipOff]! >>> 4 !== 6) return;
    this.sendError(x, rx.buf, rx.ipOff, Icmpv6Type.DEST_UNREACHABLE, Icmpv6UnreachCode.PORT, 0);
  }

  /**
   * The shared path from `local` (chosen by RFC 6724 when absent) to `remote`, both handles,
   * created on first use; null when nothing routes there, no source address is usable yet, or
   * `local` is not ours. The path holds a reference on both handles.
   */
  pathTo6(remote: number, local?: number): PathState | null {
    if (this.closed) return null;
    const addrs = this.ctx.addrs;
    const dst = addrs.bytes(remote);
    if (isIpv6Multicast(dst) || isIpv6Unspecified(dst)) return null;
    let via: StackInterface | undefined;
    let localH = local;
    if (local !== undefined) {
      const a = this.owner(addrs.bytes(local));
      if (!a || a.state === 'tentative') return null;
      // A link-local source names its interface.
      if (isIpv6LinkLocal(a.ip)) via = this.ifaceOf(a);
    }
    const r = this.route(dst, via);
    if (!r) return null;
    if (localH === undefined) {
      const src = this.sourceFor(r.iface, dst);
      if (!src) return null;
      localH = addrs.find(src, 0);
      if (localH < 0) return null;
    }
    const hit = this.paths.get(localH)?.get(remote);
    if (hit) return hit;
    if (this.pathInfo.size >= this.maxPaths) this.evictPath();
    const x = this.ifs.get(r.iface)!;
    const nextHop = createIpv6();
    copyIpv6(nextHop, 0, r.nextHop, 0);
    const nb = this.ctx.neighbors.acquire6(r.iface, nextHop);
    const path = createPathState(
      { localIp: localH, remoteIp: remote },
      nb,
      r.iface.index,
      this.mtuTo(x, dst, 0),
      x.hopLimit,
      addrs,
    );
    addrs.ref(localH);
    addrs.ref(remote);
    const labelBase = this.labelBase(localH, remote);
    // The seed travels with the path, so a NIC running one of its connections keeps its label.
    path.flow = { base: labelBase, k0: this.labelK0 >>> 0, k1: this.labelK1 >>> 0 };
    let byRemote = this.paths.get(localH);
    if (!byRemote) this.paths.set(localH, (byRemote = new Map()));
    byRemote.set(remote, path);
    this.pathInfo.set(path, {
      x,
      nextHop,
      labelBase,
      loopback: this.isLocal(dst),
    });
    return path;
  }

  /** The cached IPv6 path if there is one, without creating it. */
  findPath6(remote: number, local: number): PathState | null {
    return this.paths.get(local)?.get(remote) ?? null;
  }

  get pathCount(): number {
    return this.pathInfo.size;
  }

  /** Offset in the transmit buffer where the transport header goes on an IPv6 path. */
  begin6(path: PathState): number {
    const x = this.byIndex.get(path.ifIndex);
    return (x ? x.iface.ethHeaderLength : 18) + IPV6_HEADER_LENGTH;
  }

  /**
   * Send the `l4Len` transport bytes at `buf[begin6(path)]` on an IPv6 path: the fixed header
   * (hop limit and traffic class from the path unless given, the flow label of the four-tuple),
   * then the neighbor. A packet over the path MTU is refused when `df` (TCP, which hears of it
   * as a local packet too big) and otherwise sent in fragments.
   */
  commit6(
    buf: Uint8Array,
    path: PathState,
    protocol: number,
    l4Len: number,
    df: boolean,
    ttl?: number,
    tos?: number,
  ): boolean {
    const c = this.ctx.counters;
    const p = this.pathInfo.get(path);
    if (!p || this.closed) {
      c.inc('tx.drop.ipv6.no-path');
      return false;
    }
    const x = p.x;
    const iface = x.iface;
    const eth = iface.ethHeaderLength;
    const total = IPV6_HEADER_LENGTH + l4Len;
    if (l4Len < 0 || l4Len > 65535 || eth + total > buf.length) {
      c.inc('tx.drop.ipv6.bad-length');
      return false;
    }
    const ports = this.writeHeader(buf, eth, path, p, protocol, l4Len, ttl, tos);
    if (p.loopback) {
      const pkt = buf.slice(eth, eth + total);
      c.inc('tx.ipv6.loopback');
      this.ctx.clock.defer(() => this.loopbackInput(x, pkt));
      return true;
    }
    if (!iface.up) {
      c.inc('tx.drop.ipv6.link-down');
      return false;
    }
    iface.writeEthernet(buf, 0, EtherType.IPV6);
    const mtu = Math.min(path.cached.mtu, x.mtu);
    if (total > mtu) {
      if (df) {
        c.inc('tx.drop.ipv6.too-big');
        const e: IcmpErrorInfo = {
          kind: 'frag-needed',
          code: 0,
          mtu,
          src: path.const.localIp,
          dst: path.const.remoteIp,
          srcPort: ports >>> 16,
          dstPort: ports & 0xffff,
          seq: protocol === Ipv6Next.TCP && l4Len >= 8 ? readU32(buf, eth + 44) : 0,
        };
        this.ctx.clock.defer(() => this.ctx.localError(protocol, e));
        return false;
      }
      return this.fragment(x, p.nextHop, buf.subarray(0, eth + total), mtu);
    }
    return this.ctx.neighbors.outputState6(iface, path.neighbor, p.nextHop, buf, eth + total);
  }

  /**
   * The fixed header at buf[eth] for `l4Len` transport bytes behind it: hop limit and traffic
   * class from the path unless given, the flow label of the four-tuple. Returns the ports (the
   * transport's first four bytes, 0 when shorter), which name the flow.
   */
  private writeHeader(
    buf: Uint8Array,
    eth: number,
    path: PathState,
    p: V6Path,
    protocol: number,
    l4Len: number,
    ttl: number | undefined,
    tos: number | undefined,
  ): number {
    const addrs = this.ctx.addrs;
    const ports =
      l4Len >= 4
        ? (buf[eth + 40]! << 24) | (buf[eth + 41]! << 16) | (buf[eth + 42]! << 8) | buf[eth + 43]!
        : 0;
    const label = this.flowLabel(p.labelBase, ports);
    writeIpv6Fixed(buf, eth, path, addrs, label, protocol, l4Len, ttl, tos);
    return ports;
  }

  // ---- send offloads (IpSender's optional hooks, for IPv6 paths) -----------------------------------

  /**
   * True if the link completes the TCP checksum of a packet committed now on `path` with
   * `commitOffload6`. As for IPv4, only towards a resolved neighbor: the neighbor layer then
   * transmits at once instead of queueing a copy, so the frame reaches the link while marked.
   */
  checksumOffload6(path: PathState): boolean {
    const p = this.pathInfo.get(path);
    return (
      p !== undefined &&
      !this.closed &&
      !p.loopback &&
      p.x.iface.csumOffload &&
      path.neighbor.cached.dstMac >= 0
    );
  }

  /** Largest IPv6 packet TCP may commit now on `path`: 64 KB when the link cuts IPv6 super-segments. */
  maxPacketBytes6(path: PathState): number {
    const p = this.pathInfo.get(path);
    if (p === undefined || !p.x.iface.tso6 || !this.checksumOffload6(path)) return path.cached.mtu;
    return p.x.iface.maxPacket;
  }

  /**
   * Like `commit6` (DF set) for a TCP packet whose checksum the link completes; above the path
   * MTU the link cuts it into segments of `segSize` payload bytes, each with this fixed header
   * (flow label included) and its own payload length. When the offload is no longer possible the
   * checksum is completed here and the packet goes out plainly (or is refused if too big).
   */
  commitOffload6(
    buf: Uint8Array,
    path: PathState,
    l4Len: number,
    segSize: number,
    ttl?: number,
    tos?: number,
  ): boolean {
    const c = this.ctx.counters;
    const p = this.pathInfo.get(path);
    const eth = p ? p.x.iface.ethHeaderLength : 18;
    if (p === undefined || !p.x.iface.up || !this.checksumOffload6(path)) {
      if (l4Len >= 20 && eth + IPV6_HEADER_LENGTH + l4Len <= buf.length) {
        const l4 = eth + IPV6_HEADER_LENGTH;
        writeL4ChecksumFrom(
          buf,
          l4,
          l4Len,
          Ipv6Next.TCP,
          this.ctx.addrs.pseudoSum(path.const.localIp, path.const.remoteIp, Ipv6Next.TCP, l4Len),
        );
      }
      c.inc('tx.offload.fallback');
      return this.commit6(buf, path, Ipv6Next.TCP, l4Len, true, ttl, tos);
    }
    const iface = p.x.iface;
    const l4 = eth + IPV6_HEADER_LENGTH;
    const total = IPV6_HEADER_LENGTH + l4Len;
    const mtu = Math.min(path.cached.mtu, p.x.mtu);
    const tcpHl = l4Len >= 20 ? (buf[l4 + 12]! >>> 4) * 4 : 0;
    const segmented = total > mtu;
    if (
      l4Len < 20 ||
      tcpHl < 20 ||
      tcpHl > l4Len ||
      l4 + l4Len > buf.length ||
      (segmented &&
        (!iface.tso6 || total > iface.maxPacket || segSize < 1 || IPV6_HEADER_LENGTH + tcpHl + segSize > mtu))
    ) {
      c.inc('tx.drop.ipv6.bad-length');
      return false;
    }
    this.writeHeader(buf, eth, path, p, Ipv6Next.TCP, l4Len, ttl, tos);
    iface.writeEthernet(buf, path.neighbor.cached.dstMac, EtherType.IPV6);
    const o = this.gsoOpts;
    o.gsoSize = segmented ? segSize : 0;
    o.csumStart = l4;
    o.csumOffset = 16;
    iface.markOffload(o);
    let ok: boolean;
    try {
      ok = this.ctx.neighbors.outputState6(iface, path.neighbor, p.nextHop, buf, eth + total);
    } finally {
      iface.markOffload(null);
    }
    c.inc(segmented ? 'tx.offload.tso6' : 'tx.offload.csum6');
    return ok;
  }

  /** Our own packet to one of our addresses, taken in as if it had arrived on `x`. */
  private loopbackInput(x: Ipv6Iface, pkt: Uint8Array): void {
    const c = this.ctx.counters;
    c.inc('rx.loopback');
    if (this.closed || decodeIpv6(pkt, 0, pkt.length, this.h) !== null) {
      c.inc('drop.ipv6.loopback');
      return;
    }
    // The destination may sit on another interface: deliver on the one that owns it.
    const owner = this.owner(this.h.dst);
    const y = owner ? (this.byIndex.get(this.ifaceOf(owner)?.index ?? -1) ?? x) : x;
    this.dispatch(y, pkt, 0, 'unicast');
  }

  private ifaceOf(a: Addr): StackInterface | undefined {
    for (const x of this.ifs.values()) if (x.addrs.includes(a)) return x.iface;
    return undefined;
  }

  /**
   * RFC 6437 flow label: a keyed hash of the four-tuple, so each connection keeps one label and an
   * outsider cannot predict it. The addresses are hashed once per path (`labelBase`), the ports
   * mixed in per packet with two multiplications.
   */
  private flowLabel(base: number, ports: number): number {
    return flowLabel6(base, ports, this.labelK0, this.labelK1);
  }

  private labelBase(local: number, remote: number): number {
    const addrs = this.ctx.addrs;
    const k = this.labelKey;
    let h = this.labelK1;
    for (const handle of [local, remote]) {
      const b = addrs.bytes(handle);
      for (let i = 0; i < 16; i += 4) {
        const w =
          ((b[i]! ^ k[i]!) << 24) |
          ((b[i + 1]! ^ k[i + 1]!) << 16) |
          ((b[i + 2]! ^ k[i + 2]!) << 8) |
          (b[i + 3]! ^ k[i + 3]!);
        h = Math.imul(h ^ w, 0xcc9e2d51);
        h = (h << 15) | (h >>> 17);
        h = Math.imul(h, 0x1b873593);
      }
    }
    return h >>> 0;
  }

  private evictPath(): void {
    const oldest = this.pathInfo.keys().next();
    if (oldest.done) return;
    this.forgetPath(oldest.value);
    this.ctx.counters.inc('path.evicted');
  }

  private forgetPath(p: PathState): void {
    const info = this.pathInfo.get(p);
    if (!info) return;
    this.pathInfo.delete(p);
    const byRemote = this.paths.get(p.const.localIp);
    byRemote?.delete(p.const.remoteIp);
    if (byRemote?.size === 0) this.paths.delete(p.const.localIp);
    this.ctx.neighbors.release6(info.x.iface, info.nextHop);
    this.ctx.addrs.release(p.const.localIp);
    this.ctx.addrs.release(p.const.remoteIp);
  }

  /** Paths take the path MTU of their destination again (after a report or an expiry). */
  private refreshPathMtus(): void {
    const now = this.ctx.clock.now();
    let next = Number.POSITIVE_INFINITY;
    for (const [p, info] of this.pathInfo) {
      const before = p.cached.mtu;
      p.cached.mtu = this.mtuTo(info.x, this.ctx.addrs.bytes(p.const.remoteIp), 0);
      if (p.cached.mtu !== before) this.ctx.pathChanged?.(p);
    }
    for (const e of this.pmtus.values()) if (e.until > now && e.until < next) next = e.until;
    if (next !== Number.POSITIVE_INFINITY) this.pathExpiry.armAt(next);
    else this.pathExpiry.disarm();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pathExpiry.disarm();
    for (const x of this.ifs.values()) {
      x.rsTimer.disarm();
      for (const a of x.addrs) a.timer.disarm();
      for (const r of x.routers) r.timer.disarm();
      for (const p of x.prefixes) p.timer.disarm();
    }
    for (const p of this.pings.values()) {
      p.timer.disarm();
      p.reject(new InvalidStateError('stack closed'));
    }
    this.pings.clear();
    this.reassembly.close();
    this.mld.close();
  }

  /** For the neighbor table: a solicitation for `target`, multicast (dstMac -1) or unicast. */
  solicit(iface: StackInterface, target: Uint8Array, dstMac: number): void {
    const x = this.ifs.get(iface);
    if (!x) return;
    const src = this.sourceFor(iface, target);
    if (!src) {
      this.ctx.counters.inc('tx.drop.nd.no-source');
      return;
    }
    const m: NdEncode = { type: Icmpv6Type.NEIGHBOR_SOLICITATION, target, sourceLla: iface.mac };
    if (dstMac < 0) this.sendNd(x, src, solicitedNodeAddress(target), m);
    else this.sendNd(x, src, target, m, dstMac);
  }

  // ---- receive ----------------------------------------------------------------------------------

  private icmpInput(x: Ipv6Iface, frame: Uint8Array, reassembled: boolean): void {
    const c = this.ctx.counters;
    const h = this.h;
    const m = this.icmp;
    const err = decodeIcmpv6(frame, h.payloadOffset, h.payloadLen, h.src, h.dst, m);
    if (err !== null) {
      c.inc(ICMP6_DROP[err]);
      return;
    }
    if (isNdType(m.type)) {
      // RFC 6980: neighbor discovery never needs fragments, and fragments hide it from RA guards.
      if (reassembled) c.inc('drop.nd.fragmented');
      else this.ndInput(x, frame);
      return;
    }
    switch (m.type) {
      case Icmpv6Type.ECHO_REQUEST:
        c.inc('accept.icmpv6.echo-request');
        this.echoReply(x, frame);
        return;
      case Icmpv6Type.ECHO_REPLY: {
        const p = m.id === this.pingId ? this.pings.get(m.seq) : undefined;
        if (!p) {
          c.inc('drop.icmpv6.unexpected-reply');
          return;
        }
        this.pings.delete(m.seq);
        p.timer.disarm();
        c.inc('accept.icmpv6.echo-reply');
        p.resolve({ rttMs: this.ctx.clock.now() - p.sentAt });
        return;
      }
      case MldType.QUERY:
      case MldType.V1_REPORT:
      case MldType.V1_DONE:
      case MldType.V2_REPORT:
        this.mld.input(x.iface, frame, this.h);
        return;
      case Icmpv6Type.PACKET_TOO_BIG:
        this.packetTooBig(x, frame, m.bodyOffset, this.h.payloadOffset + this.h.payloadLen, m.mtu);
        return;
      case Icmpv6Type.DEST_UNREACHABLE:
      case Icmpv6Type.TIME_EXCEEDED:
        this.errorToTransport(frame, m.bodyOffset, this.h.payloadOffset + this.h.payloadLen, m.type, m.code);
        return;
      default:
        // Parameter problems reach no transport; unknown informational messages are dropped (RFC 4443 2.4 b).
        c.inc(isIcmpv6Error(m.type) ? 'accept.icmpv6.error' : 'drop.icmpv6.unknown-type');
    }
  }

  /**
   * RFC 8201: lower the path MTU towards the quoted packet's destination, if the quote is of a
   * packet we sent (its source is ours). Never below 1280 (RFC 8200 5), never above the link's,
   * never raised by a report (an increase waits for the entry to expire).
   */
  private packetTooBig(x: Ipv6Iface, frame: Uint8Array, q: number, end: number, reported: number): void {
    const c = this.ctx.counters;
    if (
      end - q < IPV6_HEADER_LENGTH ||
      frame[q]! >>> 4 !== 6 ||
      !this.isLocal(frame.subarray(q + 8, q + 24))
    ) {
      c.inc('drop.icmpv6.ptb-not-ours');
      return;
    }
    const mtu = Math.min(x.iface.mtu, Math.max(IPV6_MIN_MTU, reported));
    const e = this.quoteOf(frame, q, end, 'frag-needed', 0, mtu);
    if (e && e.protocol === Ipv6Next.TCP && !this.ctx.tcpErrorInFlight(e)) {
      // RFC 5927 5.1 as for IPv4: a report quoting nothing we have in flight is forged or stale
      // and must not shrink a path every connection to that host shares.
      c.inc('drop.icmpv6.tcp-not-in-flight');
      return;
    }
    c.inc('accept.icmpv6.packet-too-big');
    const now = this.ctx.clock.now();
    const current = this.mtuTo(x, frame, q + 24);
    const lowered = mtu < current;
    if (lowered) {
      const key = formatIpv6(frame, q + 24);
      this.pmtus.delete(key);
      if (this.pmtus.size >= MAX_PMTU_ENTRIES) this.pmtus.delete(this.pmtus.keys().next().value!);
      this.pmtus.set(key, { mtu, until: now + PMTU_EXPIRY_MS });
      c.inc('ipv6.pmtu.lowered');
      this.refreshPathMtus();
    }
    if (e) {
      e.mtuLowered = lowered;
      e.mtu = Math.min(mtu, current);
      this.ctx.transportError(e.protocol, e);
    }
  }

  /**
   * Destination unreachable or time exceeded about a TCP or UDP packet of ours: to the transport,
   * with the ICMPv4 code of the same meaning so both families share one reading (RFC 4443 3.1:
   * port unreachable is ICMPv4's 3, no route its 0, the rest host unreachable).
   */
  private errorToTransport(frame: Uint8Array, q: number, end: number, type: number, code: number): void {
    const c = this.ctx.counters;
    if (
      end - q < IPV6_HEADER_LENGTH ||
      frame[q]! >>> 4 !== 6 ||
      !this.isLocal(frame.subarray(q + 8, q + 24))
    ) {
      c.inc('drop.icmpv6.error-not-ours');
      return;
    }
    c.inc('accept.icmpv6.error');
    const unreach = type === Icmpv6Type.DEST_UNREACHABLE;
    const v4code = !unreach
      ? code
      : code === Icmpv6UnreachCode.PORT
        ? 3
        : code === Icmpv6UnreachCode.NO_ROUTE
          ? 0
          : code === Icmpv6UnreachCode.ADMIN_PROHIBITED
            ? 13
            : 1;
    const e = this.quoteOf(frame, q, end, unreach ? 'unreachable' : 'time-exceeded', v4code, 0);
    if (e) this.ctx.transportError(e.protocol, e);
  }

  /**
   * Free the handles of IPv6 paths no connection uses any more (only the path holds the remote
   * address), oldest first, up to `max` of them. The address table calls it when full, so idle
   * paths do not keep new peers out. Returns how many went.
   */
  reclaimPaths(max = 64): number {
    const now = this.ctx.clock.now();
    // A flood of new sources against a table full of live connections would otherwise pay a scan
    // of every path per packet: after a scan that found nothing, wait a while before the next.
    if (now - this.futileReclaimAt < RECLAIM_RETRY_MS) return 0;
    const addrs = this.ctx.addrs;
    let n = 0;
    for (const p of this.pathInfo.keys()) {
      if (n >= max) break;
      if (addrs.refCount(p.const.remoteIp) !== 1) continue;
      // Deleting the entry being visited is safe for a Map iterator.
      this.forgetPath(p);
      n++;
    }
    if (n > 0) this.ctx.counters.inc('ipv6.path.reclaimed', n);
    else this.futileReclaimAt = now;
    return n;
  }

  /**
   * The transport facts of a quoted packet of ours at frame[q, end): TCP or UDP right after the
   * fixed header (we send no extension headers but fragments, and a fragment quote has no ports
   * unless it is the first). Null when there is no transport header to speak of.
   */
  quoteOf(
    frame: Uint8Array,
    q: number,
    end: number,
    kind: IcmpErrorInfo['kind'],
    code: number,
    mtu: number,
  ): (IcmpErrorInfo & { protocol: number }) | null {
    const protocol = frame[q + 6]!;
    if ((protocol !== Ipv6Next.TCP && protocol !== Ipv6Next.UDP) || end - q < IPV6_HEADER_LENGTH + 8)
      return null;
    const addrs = this.ctx.addrs;
    const src = addrs.find(frame, q + 8);
    const dst = addrs.find(frame, q + 24);
    if (src < 0 || dst < 0) return null;
    const l4 = q + IPV6_HEADER_LENGTH;
    return {
      protocol,
      kind,
      code,
      mtu,
      src,
      dst,
      srcPort: (frame[l4]! << 8) | frame[l4 + 1]!,
      dstPort: (frame[l4 + 2]! << 8) | frame[l4 + 3]!,
      seq: protocol === Ipv6Next.TCP ? readU32(frame, l4 + 4) : 0,
    };
  }

  private ndInput(x: Ipv6Iface, frame: Uint8Array): void {
    const c = this.ctx.counters;
    const h = this.h;
    const nd = this.nd;
    const err = decodeNd(frame, h.payloadOffset, h.payloadLen, nd);
    if (err !== null) {
      c.inc(ND_DROP[err]);
      return;
    }
    // RFC 4861 6.1 / 7.1: a hop limit of 255 proves the message was not forwarded from off-link.
    if (h.hopLimit !== 255) {
      c.inc('drop.nd.hop-limit');
      return;
    }
    const ns = nd.type === Icmpv6Type.NEIGHBOR_SOLICITATION;
    if ((ns || nd.type === Icmpv6Type.NEIGHBOR_ADVERTISEMENT) && isIpv6Multicast(nd.target)) {
      c.inc('drop.nd.bad-target');
      return;
    }
    switch (nd.type) {
      case Icmpv6Type.NEIGHBOR_SOLICITATION:
        this.nsInput(x);
        return;
      case Icmpv6Type.NEIGHBOR_ADVERTISEMENT:
        this.naInput(x);
        return;
      case Icmpv6Type.ROUTER_ADVERTISEMENT:
        this.raInput(x);
        return;
      case Icmpv6Type.ROUTER_SOLICITATION:
        c.inc('drop.nd.rs-not-router');
        return;
      default:
        // A host that takes redirects from anyone on the link lets anyone steer its traffic.
        c.inc('drop.nd.redirect-ignored');
    }
  }

  private nsInput(x: Ipv6Iface): void {
    const c = this.ctx.counters;
    const h = this.h;
    const nd = this.nd;
    const dad = isIpv6Unspecified(h.src);
    if (dad && (nd.sourceLla >= 0 || !isSolicitedNode(h.dst))) {
      // 7.1.1: from :: only to a solicited-node group, and without a source link-layer address.
      c.inc('drop.nd.bad-dad-probe');
      return;
    }
    const a = this.addrOn(x, nd.target);
    if (!a || a.state === 'duplicate') {
      c.inc('drop.nd.not-our-target');
      return;
    }
    if (a.state === 'tentative') {
      if (!dad) {
        // 5.4.3: someone resolving a tentative address is ignored, and we stay quiet.
        c.inc('drop.nd.tentative-target');
        return;
      }
      if (a.nonce >= 0 && nd.nonce === a.nonce) {
        // RFC 7527: our own probe came back (a looping link), not another node.
        c.inc('accept.nd.dad-looped');
        return;
      }
      c.inc('accept.nd.dad-conflict');
      this.duplicate(x, a);
      return;
    }
    if (!dad && nd.sourceLla >= 0)
      this.ctx.neighbors.learn6(x.iface, h.src, { from: 'ns', mac: nd.sourceLla });
    c.inc(dad ? 'accept.nd.dad-probe' : 'accept.nd.ns');
    const reply: NdEncode = {
      type: Icmpv6Type.NEIGHBOR_ADVERTISEMENT,
      solicited: !dad,
      override: true,
      target: a.ip,
      targetLla: x.iface.mac,
    };
    // Someone else's DAD for our address: defend it to all nodes (7.2.4).
    if (dad) this.sendNd(x, a.ip, ALL_NODES, reply);
    else this.sendNd(x, a.ip, h.src, reply, nd.sourceLla >= 0 ? nd.sourceLla : -1);
  }

  private naInput(x: Ipv6Iface): void {
    const c = this.ctx.counters;
    const h = this.h;
    const nd = this.nd;
    if (isIpv6Multicast(h.dst) && nd.solicited) {
      c.inc('drop.nd.solicited-to-multicast');
      return;
    }
    const a = this.addrOn(x, nd.target);
    if (a) {
      if (a.state === 'tentative') {
        c.inc('accept.nd.dad-conflict');
        this.duplicate(x, a);
      } else {
        // Someone claims an address we hold; never let that poison our own view.
        c.inc('drop.nd.address-conflict');
      }
      return;
    }
    c.inc('accept.nd.na');
    this.ctx.neighbors.learn6(x.iface, nd.target, {
      from: 'na',
      mac: nd.targetLla,
      solicited: nd.solicited,
      override: nd.override,
      router: nd.router,
    });
    if (!nd.router) {
      // 7.2.5: a router that says it no longer is one leaves the default router list.
      const i = x.routers.findIndex((r) => ipv6Equal(r.ip, 0, nd.target, 0));
      if (i >= 0) this.dropRouter(x, i);
    }
  }

  private raInput(x: Ipv6Iface): void {
    const c = this.ctx.counters;
    const h = this.h;
    const nd = this.nd;
    if (!isIpv6LinkLocal(h.src)) {
      c.inc('drop.nd.ra-not-link-local');
      return;
    }
    if (!x.slaac) {
      c.inc('drop.nd.ra-ignored');
      return;
    }
    c.inc('accept.nd.ra');
    const now = this.ctx.clock.now();
    if (nd.curHopLimit !== 0) x.hopLimit = nd.curHopLimit;
    if (nd.reachableTime !== 0) x.reachableMs = nd.reachableTime;
    if (nd.retransTimer !== 0) x.retransMs = nd.retransTimer;
    if (nd.sourceLla >= 0) this.ctx.neighbors.learn6(x.iface, h.src, { from: 'ns', mac: nd.sourceLla });
    if (nd.mtu >= 0) {
      if (nd.mtu >= IPV6_MIN_MTU && nd.mtu <= x.iface.mtu) x.mtu = nd.mtu;
      else c.inc('nd.ra.bad-mtu');
    }
    // Default router list (6.3.4).
    const ri = x.routers.findIndex((r) => ipv6Equal(r.ip, 0, h.src, 0));
    if (nd.routerLifetime === 0) {
      if (ri >= 0) this.dropRouter(x, ri);
    } else {
      let r = ri >= 0 ? x.routers[ri]! : undefined;
      if (!r && x.routers.length >= MAX_ROUTERS) c.inc('nd.router.limit');
      else if (!r) {
        const ip = createIpv6();
        copyIpv6(ip, 0, h.src, 0);
        const made: Router = {
          ip,
          until: 0,
          timer: this.ctx.clock.createTimer(() => this.dropRouter(x, x.routers.indexOf(made))).unref(),
        };
        x.routers.push(made);
        r = made;
        c.inc('nd.router.added');
        this.repoint();
      }
      if (r) {
        r.until = now + nd.routerLifetime * 1000;
        r.timer.arm(nd.routerLifetime * 1000);
      }
    }
    for (let i = 0; i < nd.prefixCount; i++) {
      const p = nd.prefixes[i]!;
      if (isIpv6LinkLocal(p.prefix) || p.preferredLifetime > p.validLifetime) {
        c.inc('nd.ra.prefix-ignored');
        continue;
      }
      if (p.onLink) this.onLinkPrefix(x, p.prefix, p.prefixLength, p.validLifetime);
      if (p.autonomous) this.autoconf(x, p.prefix, p.prefixLength, p.validLifetime, p.preferredLifetime, now);
    }
  }

  private onLinkPrefix(x: Ipv6Iface, prefix: Uint8Array, len: number, valid: number): void {
    const i = x.prefixes.findIndex(
      (q) => q.prefixLength === len && ipv6PrefixMatch(q.prefix, 0, prefix, 0, len),
    );
    if (valid === 0) {
      if (i >= 0) {
        x.prefixes[i]!.timer.disarm();
        x.prefixes.splice(i, 1);
      }
      return;
    }
    let q = i >= 0 ? x.prefixes[i]! : undefined;
    if (!q && x.prefixes.length >= MAX_PREFIXES) {
      this.ctx.counters.inc('nd.prefix.limit');
      return;
    }
    if (!q) {
      const own = createIpv6();
      copyIpv6(own, 0, prefix, 0);
      const made: Prefix = {
        prefix: own,
        prefixLength: len,
        until: 0,
        timer: this.ctx.clock
          .createTimer(() => {
            const k = x.prefixes.indexOf(made);
            if (k >= 0) x.prefixes.splice(k, 1);
          })
          .unref(),
      };
      x.prefixes.push(made);
      q = made;
    }
    q.until = lifetimeEnd(this.ctx.clock.now(), valid);
    if (Number.isFinite(q.until)) q.timer.arm(valid * 1000);
    else q.timer.disarm();
  }

  /** RFC 4862 5.5.3: form prefix + interface id, or refresh the lifetimes of the one formed before. */
  private autoconf(
    x: Ipv6Iface,
    prefix: Uint8Array,
    len: number,
    valid: number,
    preferred: number,
    now: number,
  ): void {
    const c = this.ctx.counters;
    if (len !== 64) {
      // The interface identifier from a MAC is 64 bits; other lengths cannot take it.
      c.inc('nd.ra.prefix-length-not-64');
      return;
    }
    const existing = x.addrs.find((a) => a.origin === 'slaac' && ipv6PrefixMatch(a.ip, 0, prefix, 0, 64));
    if (!existing) {
      if (valid === 0) return;
      const ip = createIpv6();
      copyIpv6(ip, 0, prefix, 0);
      writeInterfaceId(ip, 0, x.iface.mac);
      if (this.owner(ip)) return;
      if (x.addrs.length >= MAX_ADDRESSES) {
        c.inc('nd.slaac.limit');
        return;
      }
      if (this.ctx.addrs.size >= this.ctx.addrs.capacity) {
        c.inc('nd.slaac.address-table-full');
        return;
      }
      this.addAddr(x, ip, 64, 'slaac', lifetimeEnd(now, valid), lifetimeEnd(now, preferred));
      c.inc('nd.slaac.address');
      return;
    }
    existing.preferredUntil = lifetimeEnd(now, preferred);
    const remaining = existing.validUntil - now;
    const want = lifetimeEnd(now, valid) - now;
    // (e): a short lifetime from an unauthenticated RA may not cut a long one below two hours.
    if (want > TWO_HOURS_MS || want > remaining) existing.validUntil = now + want;
    else if (remaining > TWO_HOURS_MS) existing.validUntil = now + TWO_HOURS_MS;
    this.armValid(existing, now);
  }

  /** One timer serves DAD and then expiry: a tentative address arms expiry once DAD is done. */
  private armValid(a: Addr, now: number): void {
    if (a.state === 'tentative') return;
    if (Number.isFinite(a.validUntil)) a.timer.arm(Math.max(0, a.validUntil - now));
  }

  // ---- addresses ----------------------------------------------------------------------------------

  private addAddr(
    x: Ipv6Iface,
    ip: Uint8Array,
    prefixLength: number,
    origin: Addr['origin'],
    validUntil = Number.POSITIVE_INFINITY,
    preferredUntil = Number.POSITIVE_INFINITY,
  ): Addr {
    const handle = this.ctx.addrs.intern(ip, 0);
    if (handle < 0) throw new InvalidStateError(`the address table is full; ${formatIpv6(ip)} not added`);
    const a: Addr = {
      ip,
      handle,
      prefixLength,
      origin,
      state: 'tentative',
      validUntil,
      preferredUntil,
      nonce: -1,
      probes: 0,
      waitingLink: false,
      timer: this.ctx.clock.createTimer(() => this.addrTimer(x, a)),
    };
    x.addrs.push(a);
    this.join(x, solicitedNodeAddress(ip));
    if (this.dadTransmits === 0) this.preferred(x, a);
    else this.startDad(x, a);
    return a;
  }

  /**
   * The link came up: DAD starts again, initial delay included, for every address whose probe fell
   * due without carrier, as Linux's addrconf_dad_run does on NETDEV_CHANGE. Without it such an
   * address would pass DAD unprobed; and a TAP's carrier can read down for a while after it is
   * opened (the kernel's linkwatch), which dropped the probes while the MLD reports went out later.
   */
  linkUp(iface: StackInterface): void {
    const x = this.ifs.get(iface);
    if (!x || this.closed) return;
    for (const a of x.addrs) {
      if (a.state !== 'tentative' || !a.waitingLink) continue;
      a.waitingLink = false;
      a.probes = 0;
      this.startDad(x, a);
    }
  }

  private startDad(x: Ipv6Iface, a: Addr): void {
    if (this.dadDelayMs === 0) this.dadProbe(x, a);
    else {
      // The first probe's nonce is drawn now, as it was when the probe went out at once, and the
      // delay from the 16 bits of its first word the 48-bit nonce leaves unused: no extra draw, so
      // every later use of the stack's randomness sees the sequence it saw before.
      const r = this.ctx.random;
      const hi = r.u32();
      a.nonce = (hi & 0xffff) * 0x1_0000_0000 + r.u32();
      a.timer.arm(((hi >>> 16) / 0x10000) * this.dadDelayMs);
    }
  }

  /** A DAD probe; `drawn`: the first one after the initial delay, whose nonce is already drawn. */
  private dadProbe(x: Ipv6Iface, a: Addr, drawn = false): void {
    if (!x.iface.up) {
      // A probe the link would drop proves nothing: the address stays tentative until carrier.
      a.waitingLink = true;
      a.timer.disarm();
      this.ctx.counters.inc('nd.dad.wait-link');
      return;
    }
    if (!drawn) {
      const r = this.ctx.random;
      a.nonce = (r.u32() & 0xffff) * 0x1_0000_0000 + r.u32();
    }
    a.probes++;
    this.ctx.counters.inc('nd.tx.dad');
    this.sendNd(x, UNSPECIFIED, solicitedNodeAddress(a.ip), {
      type: Icmpv6Type.NEIGHBOR_SOLICITATION,
      target: a.ip,
      nonce: a.nonce,
    });
    a.timer.arm(x.retransMs);
  }

  private addrTimer(x: Ipv6Iface, a: Addr): void {
    if (a.state === 'tentative') {
      if (a.probes === 0) this.dadProbe(x, a, true);
      else if (a.probes < this.dadTransmits) this.dadProbe(x, a);
      else this.preferred(x, a);
      return;
    }
    if (a.validUntil <= this.ctx.clock.now()) this.removeAddr(x, a);
  }

  private preferred(x: Ipv6Iface, a: Addr): void {
    a.state = 'preferred';
    a.timer.disarm();
    this.armValid(a, this.ctx.clock.now());
    this.ctx.counters.inc('nd.dad.ok');
    if (a.origin === 'link-local' && x.slaac && x.rsLeft > 0) this.sendRs(x);
  }

  private duplicate(x: Ipv6Iface, a: Addr): void {
    a.state = 'duplicate';
    a.timer.disarm();
    this.leave(x, solicitedNodeAddress(a.ip));
    this.ctx.counters.inc('nd.dad.duplicate');
  }

  private removeAddr(x: Ipv6Iface, a: Addr): void {
    const i = x.addrs.indexOf(a);
    if (i < 0) return;
    a.timer.disarm();
    x.addrs.splice(i, 1);
    this.ctx.addrs.release(a.handle);
    if (a.state !== 'duplicate') this.leave(x, solicitedNodeAddress(a.ip));
    this.ctx.counters.inc('nd.address.expired');
  }

  private addrState(a: Addr, now: number): Ipv6AddressState {
    if (a.state === 'preferred' && a.preferredUntil <= now) return 'deprecated';
    return a.state;
  }

  private addrOn(x: Ipv6Iface, ip: Uint8Array): Addr | null {
    for (const a of x.addrs) if (ipv6Equal(a.ip, 0, ip, 0)) return a;
    return null;
  }

  private owner(ip: Uint8Array): Addr | null {
    for (const x of this.ifs.values()) {
      const a = this.addrOn(x, ip);
      if (a && a.state !== 'duplicate') return a;
    }
    return null;
  }

  /** Whether `dst` is ours on `x`: a usable unicast address, a tentative one, a joined group, or no. */
  private forUs(x: Ipv6Iface, dst: Uint8Array): 'unicast' | 'multicast' | 'tentative' | 'no' {
    if (isIpv6Multicast(dst)) {
      if (ipv6Equal(dst, 0, ALL_NODES, 0)) return 'multicast';
      if (!isSolicitedNode(dst)) return 'no';
      for (const a of x.addrs) {
        if (a.state !== 'duplicate' && a.ip[13] === dst[13] && a.ip[14] === dst[14] && a.ip[15] === dst[15]) {
          return 'multicast';
        }
      }
      return 'no';
    }
    const a = this.addrOn(x, dst);
    if (!a || a.state === 'duplicate') return 'no';
    return a.state === 'tentative' ? 'tentative' : 'unicast';
  }

  /** Joins are reported by MLD before the caller sends anything to the group's members (DAD). */
  private join(x: Ipv6Iface, group: Uint8Array): void {
    const mac = ipv6MulticastMac(group);
    x.groupMacs.set(mac, (x.groupMacs.get(mac) ?? 0) + 1);
    this.mld.join(x.iface, group);
  }

  private leave(x: Ipv6Iface, group: Uint8Array): void {
    const mac = ipv6MulticastMac(group);
    const n = (x.groupMacs.get(mac) ?? 0) - 1;
    if (n > 0) x.groupMacs.set(mac, n);
    else x.groupMacs.delete(mac);
    this.mld.leave(x.iface, group);
  }

  /** MLD's source: the usable link-local address (RFC 3810 5), none while it is tentative. */
  private mldSource(iface: StackInterface): Uint8Array | null {
    const x = this.ifs.get(iface);
    const a = x?.addrs.find((b) => b.origin === 'link-local' && b.state === 'preferred');
    return a ? a.ip : null;
  }

  private dropRouter(x: Ipv6Iface, i: number): void {
    if (i < 0) return;
    x.routers[i]!.timer.disarm();
    x.routers.splice(i, 1);
    this.ctx.counters.inc('nd.router.removed');
    this.repoint();
  }

  /**
   * After a routing change (a static route, a default router come or gone), move every IPv6 path
   * to its new interface and next hop, as the IPv4 path layer does; a path nothing routes any more
   * keeps its old way out.
   */
  private repoint(): void {
    const addrs = this.ctx.addrs;
    for (const [p, info] of this.pathInfo) {
      const r = this.route(addrs.bytes(p.const.remoteIp));
      if (!r) continue;
      if (r.iface === info.x.iface && ipv6Equal(r.nextHop, 0, info.nextHop, 0)) continue;
      const x = this.ifs.get(r.iface)!;
      this.ctx.neighbors.release6(info.x.iface, info.nextHop);
      const nextHop = createIpv6();
      copyIpv6(nextHop, 0, r.nextHop, 0);
      p.neighbor = this.ctx.neighbors.acquire6(r.iface, nextHop);
      p.ifIndex = r.iface.index;
      info.x = x;
      info.nextHop = nextHop;
      p.cached.mtu = this.mtuTo(x, addrs.bytes(p.const.remoteIp), 0);
      this.ctx.counters.inc('ipv6.path.repointed');
      this.ctx.pathChanged?.(p);
    }
  }

  // ---- send -------------------------------------------------------------------------------------

  private sendRs(x: Ipv6Iface): void {
    if (this.closed || x.rsLeft <= 0) return;
    const src = this.sourceFor(x.iface, ALL_ROUTERS);
    if (!src) return;
    x.rsLeft--;
    this.sendNd(x, src, ALL_ROUTERS, { type: Icmpv6Type.ROUTER_SOLICITATION, sourceLla: x.iface.mac });
    this.ctx.counters.inc('nd.tx.rs');
    if (x.rsLeft > 0 && x.routers.length === 0) x.rsTimer.arm(RS_INTERVAL_MS);
  }

  /** An ND message from `src` to `dst`, hop limit 255; to `dstMac` when given, else resolved. */
  private sendNd(x: Ipv6Iface, src: Uint8Array, dst: Uint8Array, m: NdEncode, dstMac = -1): void {
    // Fixed part (up to 40 bytes), link-layer, MTU and nonce options: 72 at most without prefixes.
    const { frame, at } = this.frame(x, src, dst, Ipv6Next.ICMPV6, 72, 255);
    const n = encodeNd(m, frame, at, src, dst);
    const f = frame.subarray(0, at + n);
    f[at - IPV6_HEADER_LENGTH + 4] = n >>> 8;
    f[at - IPV6_HEADER_LENGTH + 5] = n & 0xff;
    if (dstMac >= 0) this.sendTo(x, dstMac, f);
    else this.transmit(x, dst, f);
  }

  /** A frame with its Ethernet header (destination left for later) and IPv6 header; `at` is the payload. */
  private frame(
    x: Ipv6Iface,
    src: Uint8Array,
    dst: Uint8Array,
    next: number,
    payloadLen: number,
    hopLimit: number,
  ): { frame: Uint8Array; at: number } {
    const eth = x.iface.ethHeaderLength;
    const frame = new Uint8Array(eth + IPV6_HEADER_LENGTH + payloadLen);
    x.iface.writeEthernet(frame, 0, EtherType.IPV6);
    const h = txHeader;
    h.trafficClass = 0;
    h.flowLabel = 0;
    h.payloadLength = payloadLen;
    h.nextHeader = next;
    h.hopLimit = hopLimit;
    copyIpv6(h.src, 0, src, 0);
    copyIpv6(h.dst, 0, dst, 0);
    encodeIpv6(h, frame, eth);
    return { frame, at: eth + IPV6_HEADER_LENGTH };
  }

  /**
   * Out to `nextHop`: multicast straight to its group MAC, unicast through neighbor resolution;
   * a packet larger than the path MTU towards its destination is sent in fragments.
   */
  private transmit(x: Ipv6Iface, nextHop: Uint8Array, frame: Uint8Array): boolean {
    const eth = x.iface.ethHeaderLength;
    if (frame.length - eth > this.mtuTo(x, frame, eth + 24)) return this.fragment(x, nextHop, frame);
    return this.send1(x, nextHop, frame);
  }

  private send1(x: Ipv6Iface, nextHop: Uint8Array, frame: Uint8Array): boolean {
    if (isIpv6Multicast(nextHop)) return this.sendTo(x, ipv6MulticastMac(nextHop), frame);
    return this.ctx.neighbors.output6(x.iface, nextHop, frame, frame.length);
  }

  /**
   * Source fragmentation (RFC 8200 4.5) of a packet we built (a fixed header, no extension
   * headers): pieces of a multiple of 8 bytes that fit the path MTU with a fragment header, all
   * with one unpredictable identification (RFC 7739).
   */
  private fragment(x: Ipv6Iface, nextHop: Uint8Array, frame: Uint8Array, pmtu = 0): boolean {
    const eth = x.iface.ethHeaderLength;
    const mtu = pmtu || this.mtuTo(x, frame, eth + 24);
    const data = eth + IPV6_HEADER_LENGTH;
    const total = frame.length - data;
    const chunk = (mtu - IPV6_HEADER_LENGTH - 8) & ~7;
    const id = this.ctx.random.u32();
    const next = frame[eth + 6]!;
    let ok = true;
    for (let off = 0; off < total; off += chunk) {
      const n = Math.min(chunk, total - off);
      const f = new Uint8Array(data + 8 + n);
      f.set(frame.subarray(0, data), 0);
      f[eth + 4] = (8 + n) >>> 8;
      f[eth + 5] = (8 + n) & 0xff;
      f[eth + 6] = Ipv6Next.FRAGMENT;
      encodeIpv6Fragment(f, data, next, off, off + n < total, id);
      f.set(frame.subarray(data + off, data + off + n), data + 8);
      ok = this.send1(x, nextHop, f) && ok;
    }
    this.ctx.counters.inc('ipv6.tx.fragmented');
    return ok;
  }

  private sendTo(x: Ipv6Iface, mac: number, frame: Uint8Array): boolean {
    writeMac(frame, 0, mac);
    const ok = x.iface.link.send(frame);
    if (!ok) this.ctx.counters.inc('tx.drop.link');
    return ok;
  }

  private echoReply(x: Ipv6Iface, req: Uint8Array): void {
    const h = this.h;
    const src = isIpv6Multicast(h.dst) ? this.sourceFor(x.iface, h.src) : h.dst;
    const r = this.route(h.src, x.iface);
    if (!src || !r) {
      this.ctx.counters.inc('tx.drop.icmpv6.no-route');
      return;
    }
    const { frame, at } = this.frame(x, src, h.src, Ipv6Next.ICMPV6, h.payloadLen, x.hopLimit);
    frame.set(req.subarray(h.payloadOffset + 8, h.payloadOffset + h.payloadLen), at + 8);
    const t = this.txIcmp;
    t.type = Icmpv6Type.ECHO_REPLY;
    t.code = 0;
    t.id = this.icmp.id;
    t.seq = this.icmp.seq;
    encodeIcmpv6(t, frame, at, h.payloadLen - 8, src, h.src);
    this.ctx.counters.inc('icmpv6.tx.echo-reply');
    this.transmit(x, r.nextHop, frame);
  }

  private sendProblem(x: Ipv6Iface, frame: Uint8Array, ipOff: number, h: Ipv6Header): void {
    this.sendError(x, frame, ipOff, Icmpv6Type.PARAMETER_PROBLEM, h.problemCode, h.problemPointer);
  }

  /**
   * An ICMPv6 error about the packet at frame[ipOff] (its header decoded in `this.h`), quoting as
   * much of it as fits in the minimum MTU. RFC 4443 2.4: never about an ICMPv6 error, never to a
   * source that is not a unicast address of someone else; multicast destinations were filtered by
   * the caller. Rate-limited with ICMPv4's budget.
   */
  private sendError(
    x: Ipv6Iface,
    frame: Uint8Array,
    ipOff: number,
    type: number,
    code: number,
    word: number,
  ): void {
    const h = this.h;
    if (isIpv6Unspecified(h.src) || isIpv6Multicast(h.src) || this.isLocal(h.src)) return;
    if (h.protocol === Ipv6Next.ICMPV6 && !h.fragment && h.payloadLen >= 1) {
      const t = frame[h.payloadOffset]!;
      if (isIcmpv6Error(t)) return;
    }
    const quote = Math.min(
      IPV6_HEADER_LENGTH + h.payloadLength,
      frame.length - ipOff,
      ICMPV6_ERROR_QUOTE_MAX,
    );
    this.emitError(x.iface, frame.subarray(ipOff, ipOff + quote), type, code, word);
  }

  /** RFC 8200 4.5: time exceeded (code 1) to the sender whose first fragment came, but not the rest. */
  private reassemblyTimeout(quote: Uint8Array): void {
    const src = quote.subarray(8, 24);
    if (
      this.closed ||
      isIpv6Multicast(src) ||
      isIpv6Unspecified(src) ||
      isIpv6Multicast(quote.subarray(24, 40))
    )
      return;
    this.emitError(undefined, quote, Icmpv6Type.TIME_EXCEEDED, 1, 0);
  }

  /** An ICMPv6 error quoting `quote` (an offending packet from its IPv6 header on) to its source. */
  private emitError(
    via: StackInterface | undefined,
    quote: Uint8Array,
    type: number,
    code: number,
    word: number,
  ): void {
    const c = this.ctx.counters;
    if (!this.ctx.allowError()) {
      c.inc('icmpv6.tx.rate-limited');
      return;
    }
    const dst = createIpv6();
    copyIpv6(dst, 0, quote, 8);
    const r = this.route(dst, via);
    const src = r && this.sourceFor(r.iface, dst);
    if (!r || !src) {
      c.inc('tx.drop.icmpv6.no-route');
      return;
    }
    const rx = this.ifs.get(r.iface)!;
    const out = this.frame(rx, src, dst, Ipv6Next.ICMPV6, 8 + quote.length, rx.hopLimit);
    out.frame.set(quote, out.at + 8);
    const t = this.txIcmp;
    t.type = type;
    t.code = code;
    t.pointer = word;
    t.mtu = word;
    encodeIcmpv6(t, out.frame, out.at, quote.length, src, dst);
    c.inc(
      type === Icmpv6Type.PARAMETER_PROBLEM
        ? 'icmpv6.tx.parameter-problem'
        : type === Icmpv6Type.TIME_EXCEEDED
          ? 'icmpv6.tx.time-exceeded'
          : 'icmpv6.tx.unreachable',
    );
    this.transmit(rx, r.nextHop, out.frame);
  }
}

const txHeader = createIpv6Header();

/** ff02::1:ffXX:XXXX. */
function isSolicitedNode(a: Uint8Array): boolean {
  if (a[0] !== 0xff || a[1] !== 0x02 || a[11] !== 0x01 || a[12] !== 0xff) return false;
  for (let i = 2; i < 11; i++) if (a[i] !== 0) return false;
  return true;
}

function lifetimeEnd(now: number, seconds: number): number {
  return seconds === ND_INFINITE ? Number.POSITIVE_INFINITY : now + seconds * 1000;
}
