import type { Counters } from '../core/counters.ts';
import {
  AddressInUseError,
  type ConnectionError,
  InvalidArgumentError,
  InvalidStateError,
} from '../core/errors.ts';
import type { Random } from '../core/random.ts';
import { parseIpv4 } from '../wire/addr.ts';
import { writeL4ChecksumFrom } from '../wire/checksum.ts';
import { IpProto } from '../wire/ipv4.ts';
import {
  createUdpHeader,
  decodeUdp,
  encodeUdpHeader,
  finishUdpChecksum,
  type UdpHeader,
} from '../wire/udp.ts';
import { type AddressTable, ANY6, covers, endpointsOverlap, TWO_32 } from './address-table.ts';
import { errorFor } from './icmp.ts';
import { decodeDropNames } from './interface.ts';
import type { IcmpErrorInfo } from './ip-sender.ts';
import { checkIp } from './neighbor.ts';
import type { PathLayer, RxPacket } from './path.ts';

export interface UdpRemoteInfo {
  address: number;
  port: number;
}

export type UdpMessageHandler = (data: Uint8Array, rinfo: UdpRemoteInfo) => void;
export type UdpErrorHandler = (e: ConnectionError, about: UdpRemoteInfo) => void;

export interface UdpBindOptions {
  /**
   * Local address (one of ours); absent or '0.0.0.0' for every IPv4 address, '::' (or ANY6) for
   * every address of both families (IPv4 peers then show as ::ffff:a.b.c.d to a udp6 socket).
   */
  ip?: string | number;
  /** Local port; absent or 0 for an ephemeral one. */
  port?: number;
}

export interface UdpHost {
  readonly random: Random;
  readonly counters: Counters;
  readonly ip: PathLayer;
  /** The stack's address handles: IPv6 addresses are numbers ≥ 2^32 interned there. */
  readonly addrs?: AddressTable;
  /** Port unreachable for a datagram nobody listens for (subject to ICMP's own rules). */
  portUnreachable(rx: RxPacket): void;
}

/** IANA dynamic range (RFC 6335), used for ephemeral ports. */
const EPHEMERAL_LOW = 49152;
const EPHEMERAL_HIGH = 65535;
const MAX_PAYLOAD = 65535 - 20 - 8;
/** IPv6's payload length counts the UDP header but not the fixed IPv6 header. */
const MAX_PAYLOAD6 = 65535 - 8;
const UDP_DROP = decodeDropNames('udp');

/** One bound UDP endpoint. */
export class UdpBinding {
  private open = true;
  constructor(
    private readonly layer: UdpLayer,
    readonly localIp: number,
    readonly localPort: number,
    /** @internal */ readonly onMessage: UdpMessageHandler,
    /** @internal */ readonly onError: UdpErrorHandler | undefined,
  ) {}

  get closed(): boolean {
    return !this.open;
  }

  /**
   * Send one datagram to ip:port; larger than the path MTU, it is fragmented by IP. Returns false if
   * it could not be sent or queued (no route, link down, neighbor queue full).
   */
  send(data: Uint8Array, port: number, ip: string | number): boolean {
    if (!this.open) throw new InvalidStateError('UDP binding is closed');
    return this.layer.sendFrom(this, data, port, ip);
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    this.layer.unbind(this);
  }
}

/** UDP (RFC 768) over the path layer. */
export class UdpLayer {
  private readonly ports = new Map<number, UdpBinding[]>();
  private readonly hdr: UdpHeader = createUdpHeader();
  private readonly txHdr: UdpHeader = createUdpHeader();
  private nextEphemeral: number;

  constructor(private readonly host: UdpHost) {
    this.nextEphemeral = EPHEMERAL_LOW + (host.random.u32() % (EPHEMERAL_HIGH - EPHEMERAL_LOW + 1));
  }

  bind(opts: UdpBindOptions, onMessage: UdpMessageHandler, onError?: UdpErrorHandler): UdpBinding {
    // close() closed the bindings it had; one bound after would send from a closed stack.
    if (this.closed) throw new InvalidStateError('UDP: the stack is closed');
    if (typeof onMessage !== 'function') throw new InvalidArgumentError('onMessage must be a function');
    let port = opts.port ?? 0;
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new InvalidArgumentError(`UDP port must be 0..65535, got ${opts.port}`);
    }
    const addrs = this.host.addrs;
    const ip = opts.ip === undefined ? 0 : this.address(opts.ip);
    try {
      if (ip !== 0 && ip !== ANY6 && !this.host.ip.isLocal(ip)) {
        throw new InvalidArgumentError(`${opts.ip} is not an address of this stack (EADDRNOTAVAIL)`);
      }
      if (port === 0) port = this.ephemeral(ip);
      else if (this.conflicts(ip, port)) throw new AddressInUseError(`UDP port ${port} is in use`);
      addrs?.ref(ip);
    } finally {
      if (typeof opts.ip === 'string') addrs?.release(ip);
    }
    const b = new UdpBinding(this, ip, port, onMessage, onError);
    const list = this.ports.get(port);
    if (list) list.push(b);
    else this.ports.set(port, [b]);
    return b;
  }

  /** A UDP datagram arrived. Counts exactly one accept or drop. */
  input(rx: RxPacket): void {
    const c = this.host.counters;
    const h = this.hdr;
    // The IPv6 layer checked an IPv6 datagram's checksum over its own pseudo-header.
    const err = decodeUdp(rx.buf, rx.l4Off, rx.l4Len, rx.src, rx.dst, h, rx.dst < TWO_32);
    if (err !== null) {
      c.inc(UDP_DROP[err]);
      return;
    }
    if (h.srcPort === 0 && h.dstPort === 0) {
      c.inc('drop.udp.bad-port');
      return;
    }
    const b = this.lookup(rx.dst, h.dstPort, rx.ipBroadcast);
    if (!b) {
      c.inc('drop.udp.no-port');
      this.host.portUnreachable(rx);
      return;
    }
    c.inc('accept.udp');
    const data = rx.buf.slice(rx.l4Off + 8, rx.l4Off + h.length);
    b.onMessage(data, { address: rx.src, port: h.srcPort });
  }

  /** An ICMP error quoting one of our datagrams: reported to the binding that sent it. */
  icmpError(e: IcmpErrorInfo): void {
    if (e.kind === 'frag-needed') return; // IP already lowered the path MTU and fragments for us.
    const b = this.lookup(e.src, e.srcPort, false);
    if (!b?.onError) return;
    this.host.counters.inc('udp.icmp-error');
    b.onError(errorFor(e), { address: e.dst, port: e.dstPort });
  }

  /** @internal */
  sendFrom(b: UdpBinding, data: Uint8Array, port: number, ip: string | number): boolean {
    if (!(data instanceof Uint8Array)) throw new InvalidArgumentError('data must be a Uint8Array');
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new InvalidArgumentError(`UDP destination port must be 1..65535, got ${port}`);
    }
    const dst = this.address(ip);
    try {
      return this.sendTo(b, data, port, dst);
    } finally {
      if (typeof ip === 'string') this.host.addrs?.release(dst);
    }
  }

  private sendTo(b: UdpBinding, data: Uint8Array, port: number, dst: number): boolean {
    const v6 = dst >= TWO_32;
    const max = v6 ? MAX_PAYLOAD6 : MAX_PAYLOAD;
    if (data.length > max) throw new InvalidArgumentError(`UDP payload over ${max} bytes`);
    if (dst === ANY6) throw new InvalidArgumentError('UDP destination must be an address, not ::');
    const c = this.host.counters;
    const layer = this.host.ip;
    const local = b.localIp === 0 || b.localIp === ANY6 ? undefined : b.localIp;
    const path = layer.pathTo(dst, local);
    if (!path) {
      c.inc('tx.drop.udp.no-route');
      return false;
    }
    const len = 8 + data.length;
    const off = layer.beginLarge(path, len);
    const buf = layer.txBuf;
    const h = this.txHdr;
    h.srcPort = b.localPort;
    h.dstPort = port;
    h.length = len;
    encodeUdpHeader(h, buf, off);
    buf.set(data, off + 8);
    if (v6) {
      const sum = this.host.addrs!.pseudoSum(path.const.localIp, dst, IpProto.UDP, len);
      writeL4ChecksumFrom(buf, off, len, IpProto.UDP, sum);
    } else finishUdpChecksum(buf, off, len, path.const.localIp, dst);
    c.inc('udp.tx');
    return layer.commit(path, IpProto.UDP, len, false);
  }

  /** @internal */
  unbind(b: UdpBinding): void {
    const list = this.ports.get(b.localPort);
    if (!list) return;
    const i = list.indexOf(b);
    if (i >= 0) {
      list.splice(i, 1);
      this.host.addrs?.release(b.localIp);
    }
    if (!list.length) this.ports.delete(b.localPort);
  }

  /**
   * An address argument as a number: text of either family (an IPv6 literal is interned with a
   * reference the caller releases), or a number as TCP takes it.
   */
  private address(ip: string | number): number {
    const addrs = this.host.addrs;
    if (typeof ip === 'string') {
      if (!addrs) return parseIpv4(ip);
      const h = addrs.parse(ip);
      if (h < 0) throw new InvalidStateError('too many IPv6 addresses in use (ENOBUFS)');
      return h;
    }
    if (addrs && Number.isInteger(ip) && ip >= TWO_32 && ip < 2 ** 37) return ip;
    return checkIp(ip);
  }

  private closed = false;

  close(): void {
    this.closed = true;
    for (const list of [...this.ports.values()]) for (const b of [...list]) b.close();
  }

  /** Exact local address first, then the wildcard; broadcasts reach wildcard bindings only. */
  private lookup(dst: number, port: number, broadcast: boolean): UdpBinding | null {
    const list = this.ports.get(port);
    if (!list) return null;
    let wild: UdpBinding | null = null;
    for (const b of list) {
      if (b.localIp === 0 || b.localIp === ANY6) {
        if (covers(b.localIp, false, dst)) wild ??= b;
      } else if (!broadcast && b.localIp === dst) return b;
    }
    return wild;
  }

  private conflicts(ip: number, port: number): boolean {
    const list = this.ports.get(port);
    if (!list) return false;
    for (const b of list) if (endpointsOverlap(b.localIp, false, ip, false)) return true;
    return false;
  }

  private ephemeral(ip: number): number {
    const span = EPHEMERAL_HIGH - EPHEMERAL_LOW + 1;
    for (let i = 0; i < span; i++) {
      const p = this.nextEphemeral;
      this.nextEphemeral = p === EPHEMERAL_HIGH ? EPHEMERAL_LOW : p + 1;
      if (!this.conflicts(ip, p)) return p;
    }
    throw new AddressInUseError('no ephemeral UDP port left');
  }
}
