import type { Clock } from '../core/clock.ts';
import { Counters } from '../core/counters.ts';
import { AddressInUseError, InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import type { Link, RxOffloadInfo } from '../core/link.ts';
import type { Random } from '../core/random.ts';
import { RingPoolTrim } from '../state/byte-ring.ts';
import type { PathState } from '../state/path-state.ts';
import type { TcpCached } from '../state/tcp-state.ts';
import { BROADCAST_MAC, isMulticastMac, parseCidr, parseMac } from '../wire/addr.ts';
import { createEthernetHeader, decodeEthernet, type EthernetHeader, EtherType } from '../wire/ethernet.ts';
import { icmpType, ipv4FragOffset, ipv4HeaderLen } from '../wire/fields.ts';
import { IpProto } from '../wire/ipv4.ts';
import { AddressTable, type AddressTableOptions, isV6 } from './address-table.ts';
import { IcmpLayer, type IcmpOptions, type PingOptions } from './icmp.ts';
import {
  decodeDropNames,
  type InterfaceAddress,
  type InterfaceOptions,
  makeAddress,
  StackInterface,
} from './interface.ts';
import type { IcmpErrorInfo } from './ip-sender.ts';
import { Ipv6Layer, type Ipv6Options } from './ipv6.ts';
import { type ArpOptions, checkMac, NeighborTable } from './neighbor.ts';
import { PathLayer, type PathOptions, parseQuote, type RxPacket } from './path.ts';
import type { ReassemblyOptions } from './reassembly.ts';
import { TcpLayer, type TcpLimits } from './tcp/tcp-layer.ts';
import { UdpLayer } from './udp.ts';

export interface StackOptions {
  clock: Clock;
  random: Random;
  name?: string;
  /** Defaults for new TCP connections. */
  tcp?: Partial<TcpCached>;
  /**
   * Stack-wide TCP limits (tcp-mem.ts); each one left out takes its default from
   * `DEFAULT_TCP_LIMITS`, and Infinity turns it off.
   */
  tcpLimits?: TcpLimits;
  arp?: ArpOptions;
  reassembly?: ReassemblyOptions;
  path?: PathOptions;
  icmp?: IcmpOptions;
  ipv6?: Ipv6Options;
  /** Bounds of the table of IPv6 address handles. */
  addresses?: AddressTableOptions;
  /**
   * The host's ISN secret (16 bytes), to be given to the NICs this stack offloads to as well, so
   * that one function numbers every connection of the host (isn.ts). Default: drawn from `random`.
   */
  isnSecret?: Uint8Array;
}

/** The interfaces sharing one link, by VLAN id (-1 = untagged). */
interface LinkPort {
  readonly link: Link;
  readonly byVlan: Map<number, StackInterface>;
}

const ETH_DROP = decodeDropNames('eth');

/**
 * A host stack's TCP limits unless told otherwise: as many live connections as Linux's default
 * tcp_max_tw_buckets lets wait, and 1 GiB of connection buffers (Linux's tcp_mem[2] on a machine
 * with about 10 GiB of memory).
 */
export const DEFAULT_TCP_LIMITS: Required<TcpLimits> = { maxConnections: 65_536, memBytes: 1 << 30 };

/**
 * The host stack: Ethernet/VLAN demultiplexing, the neighbor (ARP) layer, the IPv4 path layer,
 * ICMP, UDP and TCP, over any number of links.
 *
 * Counters: every frame a link hands in counts `rx.frames` and then exactly one `accept.*` or
 * `drop.*` counter, with two exceptions that count datagrams, not frames: `drop.ipv4.frag-timeout`
 * and `drop.ipv4.frag-evicted` (their fragments were already counted as `accept.ipv4.frag-queued`).
 * Frames handed to TCP count `accept.tcp`; TCP's own `drop.tcp.*` counters come on top. Transmit
 * side problems count `tx.drop.*`. Offloads add, on top: `rx.offload.gso` (a super-segment came in),
 * `rx.offload.csum-partial` / `rx.offload.csum-valid`, and `tx.offload.tso` / `tx.offload.csum` /
 * `tx.offload.fallback` (an offload the transport asked for was no longer possible).
 */
export class Stack {
  readonly clock: Clock;
  readonly random: Random;
  readonly name: string;
  readonly counters = new Counters();
  readonly neighbors: NeighborTable;
  readonly ip: PathLayer;
  readonly icmp: IcmpLayer;
  readonly udp: UdpLayer;
  readonly tcp: TcpLayer;
  /** IPv6 and neighbor discovery, on the interfaces given IPv6 addresses (or `ipv6: true`). */
  readonly ip6: Ipv6Layer;
  /** Address handles: IPv4 addresses are their u32, IPv6 ones interned here (one per stack). */
  readonly addrs: AddressTable;
  private readonly ifaces: StackInterface[] = [];
  private readonly ports = new Map<Link, LinkPort>();
  private readonly eth: EthernetHeader = createEthernetHeader();
  private closed = false;
  /** Lets go of this thread's ring pool trim (RingPoolTrim) at close. */
  private readonly trimHeld: () => void;

  constructor(opts: StackOptions) {
    if (!opts || typeof opts.clock?.now !== 'function' || typeof opts.random?.u32 !== 'function') {
      throw new InvalidArgumentError('Stack needs a clock and a random source');
    }
    this.clock = opts.clock;
    this.random = opts.random;
    this.name = opts.name ?? 'host';
    // Shared: a worker NIC of a team finds the handles of its peers' IPv6 connections here.
    this.addrs = new AddressTable(this.random, { shared: true, ...opts.addresses });
    this.neighbors = new NeighborTable(
      {
        clock: this.clock,
        random: this.random,
        counters: this.counters,
        ifaceFor: (ip) => this.ifaces.find((i) => i.addressFor(ip) !== null) ?? null,
        ifaceByName: (n) => this.ifaces.find((i) => i.name === n) ?? null,
        onUnreachable: (frame, ethLen) => this.unresolved(frame, ethLen),
        solicit6: (iface, target, dstMac) => this.ip6.solicit(iface, target, dstMac),
      },
      opts.arp,
    );
    this.ip = new PathLayer(
      {
        clock: this.clock,
        random: this.random,
        counters: this.counters,
        neighbors: this.neighbors,
        interfaces: this.ifaces,
        deliver: (rx) => this.deliver(rx),
        localError: (protocol, e) => this.localError(protocol, e),
        reassemblyTimeout: (quote) => {
          this.icmp.sendReassemblyTimeout(quote);
        },
      },
      opts.path,
      opts.reassembly,
    );
    this.icmp = new IcmpLayer(
      {
        clock: this.clock,
        random: this.random,
        counters: this.counters,
        ip: this.ip,
        tcpError: (e) => this.tcp.icmpError(e),
        tcpErrorInFlight: (e) => this.tcp.icmpInFlight(e),
        udpError: (e) => this.udp.icmpError(e),
      },
      opts.icmp,
    );
    this.ip6 = new Ipv6Layer(
      {
        clock: this.clock,
        random: this.random,
        counters: this.counters,
        neighbors: this.neighbors,
        allowError: () => this.icmp.takeToken(),
        addrs: this.addrs,
        deliver: (rx) => this.deliver(rx),
        transportError: (protocol, e) => this.localError(protocol, e),
        tcpErrorInFlight: (e) => this.tcp.icmpInFlight(e),
        localError: (protocol, e) => this.localError(protocol, e),
        pathChanged: (p) => this.ip.changed(p),
      },
      opts.ipv6,
    );
    this.ip.attachIpv6(this.ip6, this.addrs);
    this.addrs.onFull = () => this.ip6.reclaimPaths();
    this.udp = new UdpLayer({
      addrs: this.addrs,
      random: this.random,
      counters: this.counters,
      ip: this.ip,
      portUnreachable: (rx) => {
        if (isV6(rx.dst)) this.ip6.portUnreachable(rx);
        else this.icmp.sendError(3, 3, rx);
      },
    });
    this.tcp = new TcpLayer(
      {
        clock: this.clock,
        random: this.random,
        ip: this.ip,
        counters: this.counters,
        pathTo: (remoteIp: number, localIp?: number) => this.ip.pathTo(remoteIp, localIp),
        isLocal: (ip: number) => this.ip.isLocal(ip),
        addrs: this.addrs,
        isnSecret: opts.isnSecret,
      },
      opts.tcp,
      { ...DEFAULT_TCP_LIMITS, ...opts.tcpLimits },
    );
    // Its connections' rings give their memory to the thread's pool as they end: trimmed while it
    // runs (last: a constructor that throws holds nothing).
    this.trimHeld = RingPoolTrim.hold(this.clock);
  }

  get interfaces(): readonly StackInterface[] {
    return this.ifaces;
  }

  /**
   * Attach `link` (or one VLAN of it) with its own MAC and addresses. Adds the connected routes and
   * announces the addresses with gratuitous ARP.
   */
  addInterface(link: Link, opts: InterfaceOptions): StackInterface {
    if (this.closed) throw new InvalidStateError('stack is closed');
    if (!link || typeof link.send !== 'function' || typeof link.onFrame !== 'function') {
      throw new InvalidArgumentError('addInterface needs a Link');
    }
    if (!opts) throw new InvalidArgumentError('addInterface needs options');
    const mac = typeof opts.mac === 'string' ? parseMac(opts.mac) : checkMac(opts.mac);
    if (isMulticastMac(mac) || mac === 0)
      throw new InvalidArgumentError('an interface MAC must be unicast and non-zero');
    const vlanId = opts.vlan ?? -1;
    if (opts.vlan !== undefined && (!Number.isInteger(vlanId) || vlanId < 1 || vlanId > 4094)) {
      throw new InvalidArgumentError(`VLAN id must be 1..4094, got ${opts.vlan}`);
    }
    const mtu = opts.mtu ?? link.mtu;
    if (!Number.isInteger(mtu) || mtu < 68 || mtu > link.mtu) {
      throw new InvalidArgumentError(`interface MTU must be 68..${link.mtu} (the link's), got ${opts.mtu}`);
    }
    const all = typeof opts.ip === 'string' ? [opts.ip] : opts.ip;
    if (!Array.isArray(all)) throw new InvalidArgumentError('ip must be an address/prefix or a list of them');
    // IPv6 addresses go to the IPv6 layer. Either family may be absent, as on Linux: without an
    // IPv4 address the interface neither sends nor answers ARP; without any address it only waits
    // for `ip6.enable` (a team's interface exists before its members run).
    const cidrs = all.filter((s) => typeof s !== 'string' || !s.includes(':'));
    const cidrs6 = all.filter((s) => typeof s === 'string' && s.includes(':'));
    const addresses: InterfaceAddress[] = [];
    for (const s of cidrs) {
      const { ip, prefixLength, mask } = parseCidr(s);
      if (prefixLength === 0)
        throw new InvalidArgumentError(`'${s}': an interface subnet needs a prefix length 1..32`);
      const a = makeAddress(ip, prefixLength, mask);
      const top = ip >>> 24;
      if (
        ip === 0 ||
        top === 127 ||
        top >= 224 ||
        (prefixLength < 31 && (ip === a.network || ip === a.broadcast))
      ) {
        throw new InvalidArgumentError(`'${s}' is not a usable host address`);
      }
      if (this.ip.isLocal(ip) || addresses.some((x) => x.ip === ip)) {
        throw new AddressInUseError(`${s} is already configured`);
      }
      addresses.push(a);
    }
    let port = this.ports.get(link);
    if (port?.byVlan.has(vlanId)) {
      throw new InvalidStateError(
        `${link.name} already has an interface for ${vlanId < 0 ? 'untagged frames' : `VLAN ${vlanId}`}`,
      );
    }
    const name = opts.name ?? (vlanId >= 0 ? `${link.name}.${vlanId}` : link.name);
    if (this.ifaces.some((i) => i.name === name))
      throw new InvalidArgumentError(`interface name '${name}' is taken`);

    if (!port) {
      const p: LinkPort = { link, byVlan: new Map() };
      this.ports.set(link, p);
      link.onFrame((frame, info) => this.onFrame(p, frame, info));
      // Loss timers read what waits on the links first, once one of them can be read on demand
      // (a TAP); without one, TCP's env keeps no hook and the simulator runs as it always did.
      if (link.drain !== undefined)
        (this.tcp.env as { drainInput?: () => boolean }).drainInput = this.drainLinks;
      if (link.yieldRx !== undefined)
        (this.tcp.env as { yieldInput?: () => void }).yieldInput = this.yieldLinks;
      link.onCarrier((up) => {
        if (!up || this.closed) return;
        this.neighbors.announce([...p.byVlan.values()]);
        for (const i of p.byVlan.values()) {
          this.ip6.mld.resend(i);
          this.ip6.linkUp(i);
        }
      });
      port = p;
    }
    const off = opts.offload ?? true;
    if (typeof off !== 'boolean' && (typeof off !== 'object' || off === null)) {
      throw new InvalidArgumentError('offload must be a boolean or { tso?, csum? }');
    }
    const offload =
      typeof off === 'boolean' ? { tso: off, csum: off } : { tso: off.tso ?? true, csum: off.csum ?? true };
    const iface = new StackInterface(this.ifaces.length, name, link, mac, vlanId, mtu, addresses, offload);
    port.byVlan.set(vlanId, iface);
    this.ifaces.push(iface);
    this.ip.interfaceAdded(iface);
    if (cidrs6.length > 0 || opts.ipv6 === true) this.ip6.enable(iface, cidrs6);
    if (link.carrier) this.neighbors.announce([iface]);
    return iface;
  }

  addRoute(cidr: string, gateway?: string, ifName?: string): void {
    this.ip.addRoute(cidr, gateway, ifName);
  }

  setDefaultGateway(gateway: string): void {
    this.ip.setDefaultGateway(gateway);
  }

  routeTo(ip: number): { iface: StackInterface; nextHop: number } | null {
    return this.ip.routeTo(ip);
  }

  pathTo(remoteIp: number, localIp?: number): PathState | null {
    return this.ip.pathTo(remoteIp, localIp);
  }

  isLocal(ip: number): boolean {
    return this.ip.isLocal(ip);
  }

  /**
   * Gratuitous ARP for one interface (by object or name) or all of them. Returns packets sent.
   * Refused on a closed stack: it would claim addresses for a host that no longer answers on them.
   */
  announce(iface?: StackInterface | string): number {
    if (this.closed) throw new InvalidStateError('stack is closed');
    if (iface === undefined) return this.neighbors.announce(this.ifaces);
    const i = typeof iface === 'string' ? this.ifaces.find((x) => x.name === iface) : iface;
    if (!i || !this.ifaces.includes(i)) throw new InvalidArgumentError(`unknown interface ${String(iface)}`);
    return this.neighbors.announce([i]);
  }

  ping(dst: string | number, opts?: PingOptions): Promise<{ rttMs: number }> {
    return this.icmp.ping(dst, opts);
  }

  /** Stop processing: pending pings fail, timers stop, frames are ignored. Links stay open (the caller owns them). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.tcp.close();
    this.udp.close();
    this.icmp.close();
    this.neighbors.close();
    this.ip.close();
    this.ip6.close();
    this.trimHeld();
  }

  // ---------------------------------------------------------------------------------------------

  /** See TcpHostEnv.drainInput: false while some link cannot be read on demand or was not read empty. */
  private readonly drainLinks = (): boolean => {
    let all = true;
    for (const p of this.ports.values()) if (p.link.drain === undefined || !p.link.drain()) all = false;
    return all;
  };

  /** See TcpHostEnv.yieldInput. */
  private readonly yieldLinks = (): void => {
    for (const p of this.ports.values()) p.link.yieldRx?.();
  };

  private onFrame(port: LinkPort, frame: Uint8Array, info?: RxOffloadInfo): void {
    const c = this.counters;
    c.inc('rx.frames');
    if (this.closed) {
      c.inc('drop.eth.closed');
      return;
    }
    const eth = this.eth;
    const err = decodeEthernet(frame, 0, frame.length, eth);
    if (err !== null) {
      c.inc(ETH_DROP[err]);
      return;
    }
    // VLAN 0 is a priority tag only (802.1Q): the frame belongs to the untagged interface.
    const iface = port.byVlan.get(eth.vlanId === 0 ? -1 : eth.vlanId);
    if (!iface) {
      c.inc('drop.eth.unknown-vlan');
      return;
    }
    const l2Broadcast = eth.dst === BROADCAST_MAC;
    const ipv6Group = eth.etherType === EtherType.IPV6 && this.ip6.acceptsMac(iface, eth.dst);
    if (eth.dst !== iface.mac && !l2Broadcast && !ipv6Group) {
      c.inc('drop.eth.not-for-us');
      return;
    }
    if (isMulticastMac(eth.src) || eth.src === iface.mac) {
      c.inc('drop.eth.bad-src');
      return;
    }
    const off = eth.headerLength;
    const len = frame.length - off;
    if (eth.etherType === EtherType.IPV4) this.ip.input(iface, frame, off, len, l2Broadcast, info);
    else if (eth.etherType === EtherType.ARP) this.neighbors.input(iface, frame, off, len);
    else if (eth.etherType === EtherType.IPV6) this.ip6.input(iface, frame, off, len, info);
    else c.inc('drop.eth.unknown-ethertype');
  }

  private deliver(rx: RxPacket): void {
    const c = this.counters;
    switch (rx.protocol) {
      case IpProto.ICMP:
        this.icmp.input(rx);
        return;
      case IpProto.UDP:
        this.udp.input(rx);
        return;
      case IpProto.TCP:
        if (rx.ipBroadcast || rx.l2Broadcast) {
          // TCP is unicast only (RFC 1122 4.2.3.10).
          c.inc('drop.ipv4.tcp-broadcast');
          return;
        }
        c.inc('accept.tcp');
        this.tcp.input(rx, rx.buf, rx.l4Off, rx.l4Len);
        return;
      default:
        c.inc('drop.ipv4.unknown-protocol');
        this.icmp.sendError(3, 2, rx);
    }
  }

  private localError(protocol: number, e: IcmpErrorInfo): void {
    if (this.closed) return;
    if (protocol === IpProto.TCP) this.tcp.icmpError(e);
    else if (protocol === IpProto.UDP) this.udp.icmpError(e);
    else if (protocol === IpProto.ICMP) this.icmp.localError(e);
  }

  /** A packet died waiting for ARP: tell its transport "host unreachable", as Linux does locally. */
  private unresolved(frame: Uint8Array, ethLen: number): void {
    if (frame.length > ethLen && frame[ethLen]! >>> 4 === 6) {
      // Address unreachable, ICMPv6's name for it; the IPv6 layer reads the quote.
      const e = this.ip6.quoteOf(frame, ethLen, frame.length, 'unreachable', 1, 0);
      if (e) this.localError(e.protocol, e);
      return;
    }
    const q = parseQuote('unreachable', 1, 0, frame, ethLen, frame.length - ethLen);
    if (!q) return;
    if (ipv4FragOffset(frame, ethLen) !== 0) return; // only the first fragment carries the transport header
    // Of our ICMP only echo requests have a waiting sender; replies and errors just vanish.
    if (q.protocol === IpProto.ICMP && icmpType(frame, ethLen + ipv4HeaderLen(frame, ethLen)) !== 8) return;
    const { protocol, quotedLength: _q, ...e } = q;
    this.localError(protocol, e);
  }
}
