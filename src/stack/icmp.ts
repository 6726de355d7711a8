import type { Clock, Timer } from '../core/clock.ts';
import type { Counters } from '../core/counters.ts';
import { ConnectionError, InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import type { Random } from '../core/random.ts';
import { parseIpv4 } from '../wire/addr.ts';
import { createIcmpHeader, decodeIcmp, encodeIcmp, type IcmpHeader, IcmpType } from '../wire/icmp.ts';
import { IpProto } from '../wire/ipv4.ts';
import { decodeDropNames } from './interface.ts';
import type { IcmpErrorInfo } from './ip-sender.ts';
import { checkIp, positive } from './neighbor.ts';
import { type PathLayer, parseQuote, type RxPacket } from './path.ts';

export interface IcmpOptions {
  /** Sustained rate of ICMP errors we generate (default 100 per second; RFC 1812 4.3.2.8). */
  errorRatePerSec?: number;
  /** Errors that may go out back to back before the rate applies (default 50). */
  errorBurst?: number;
  /** Answer echo requests (default true). */
  echo?: boolean;
}

export interface PingOptions {
  /** Give up after this long (default 1000 ms). */
  timeoutMs?: number;
  /** Echo data bytes (default 56, like ping(8)). */
  size?: number;
  /** Set Don't Fragment: a request bigger than the path MTU then fails with EMSGSIZE. */
  df?: boolean;
  ttl?: number;
  /** Source address (one of ours). */
  src?: string | number;
}

export interface IcmpHost {
  readonly clock: Clock;
  readonly random: Random;
  readonly counters: Counters;
  readonly ip: PathLayer;
  tcpError(e: IcmpErrorInfo): void;
  udpError(e: IcmpErrorInfo): void;
  /**
   * False when TCP runs the quoted connection and the quoted sequence number is not in flight:
   * the error is forged or stale, and must not lower the path MTU every connection shares
   * (RFC 5927 5.1). Absent: believe it.
   */
  tcpErrorInFlight?(e: IcmpErrorInfo): boolean;
}

interface PendingPing {
  sentAt: number;
  timer: Timer;
  resolve: (r: { rttMs: number }) => void;
  reject: (e: Error) => void;
}

const ICMP_DROP = decodeDropNames('icmp');
/** RFC 1812 4.3.2.3: quote as much of the offending datagram as keeps the error within 576 bytes. */
const MAX_QUOTE = 576 - 20 - 8;

/** ICMP for the host: echo, error generation (rate-limited, RFC 1122 3.2.2 rules), error intake. */
export class IcmpLayer {
  private readonly hdr: IcmpHeader = createIcmpHeader();
  private readonly txHdr: IcmpHeader = createIcmpHeader();
  private readonly pings = new Map<number, PendingPing>();
  private readonly pingId: number;
  private pingSeq = 0;
  private tokens: number;
  private lastRefill: number;
  private readonly ratePerMs: number;
  private readonly burst: number;
  private readonly echo: boolean;
  private closed = false;

  constructor(
    private readonly host: IcmpHost,
    opts: IcmpOptions = {},
  ) {
    this.ratePerMs = positive(opts.errorRatePerSec, 100, 'icmp.errorRatePerSec') / 1000;
    this.burst = positive(opts.errorBurst, 50, 'icmp.errorBurst');
    this.echo = opts.echo ?? true;
    this.tokens = this.burst;
    this.lastRefill = host.clock.now();
    this.pingId = host.random.u32() & 0xffff;
  }

  /** An ICMP message arrived (rx.l4Off/l4Len). Counts exactly one accept or drop. */
  input(rx: RxPacket): void {
    const c = this.host.counters;
    const h = this.hdr;
    const err = decodeIcmp(rx.buf, rx.l4Off, rx.l4Len, h, true);
    if (err !== null) {
      c.inc(ICMP_DROP[err]);
      return;
    }
    switch (h.type) {
      case IcmpType.ECHO_REQUEST:
        this.answerEcho(rx);
        return;
      case IcmpType.ECHO_REPLY:
        this.echoReply(h);
        return;
      case IcmpType.DEST_UNREACHABLE:
      case IcmpType.TIME_EXCEEDED:
        this.errorIn(rx, h);
        return;
      default:
        c.inc('drop.icmp.unsupported-type');
    }
  }

  /**
   * Send an ICMP error about the datagram in `rx` (type 3 or 11). Returns false when RFC 1122 or the
   * rate limit forbids it.
   */
  sendError(type: number, code: number, rx: RxPacket): boolean {
    if (rx.l2Broadcast || rx.ipBroadcast || !this.host.ip.isLocal(rx.dst)) return false;
    if (rx.protocol === IpProto.ICMP && !isQuery(rx.buf, rx.l4Off, rx.l4Len)) return false;
    const quoteLen = Math.min(rx.l4Off + rx.l4Len - rx.ipOff, MAX_QUOTE);
    return this.emitError(type, code, rx.dst, rx.src, rx.buf, rx.ipOff, quoteLen);
  }

  /** Time exceeded, fragment reassembly (type 11 code 1), quoting the datagram's first fragment. */
  sendReassemblyTimeout(quote: Uint8Array): boolean {
    if (quote.length < 20) return false;
    const src = ((quote[12]! << 24) | (quote[13]! << 16) | (quote[14]! << 8) | quote[15]!) >>> 0;
    const dst = ((quote[16]! << 24) | (quote[17]! << 16) | (quote[18]! << 8) | quote[19]!) >>> 0;
    if (!this.host.ip.isLocal(dst)) return false;
    if (quote[9] === IpProto.ICMP && !isQuery(quote, (quote[0]! & 0x0f) << 2, 1)) return false;
    return this.emitError(IcmpType.TIME_EXCEEDED, 1, dst, src, quote, 0, quote.length);
  }

  /** A packet of ours was refused locally (DF and too big) or its next hop did not resolve. */
  localError(e: IcmpErrorInfo): void {
    const p = this.pings.get(e.seq >>> 0);
    if (!p) return;
    this.settle(e.seq >>> 0);
    p.reject(errorFor(e));
  }

  /** Echo `dst`; resolves with the round-trip time, rejects with ConnectionError on timeout or error. */
  ping(dst: string | number, opts: PingOptions = {}): Promise<{ rttMs: number }> {
    if (this.closed) return Promise.reject(new InvalidStateError('stack is closed'));
    let remote: number;
    let local: number | undefined;
    let size: number;
    let timeoutMs: number;
    try {
      remote = typeof dst === 'string' ? parseIpv4(dst) : checkIp(dst);
      if (opts.src !== undefined)
        local = typeof opts.src === 'string' ? parseIpv4(opts.src) : checkIp(opts.src);
      size = opts.size ?? 56;
      if (!Number.isInteger(size) || size < 0 || size > 65507) {
        throw new InvalidArgumentError('ping size must be 0..65507');
      }
      timeoutMs = positive(opts.timeoutMs, 1000, 'ping timeoutMs');
      if (opts.ttl !== undefined && (!Number.isInteger(opts.ttl) || opts.ttl < 1 || opts.ttl > 255)) {
        throw new InvalidArgumentError('ping ttl must be 1..255');
      }
    } catch (e) {
      return Promise.reject(e);
    }
    const ip = this.host.ip;
    const path = ip.pathTo(remote, local);
    if (!path) return Promise.reject(new ConnectionError('ENETUNREACH', `no route to ${dst}`));

    const seq = (this.pingSeq = (this.pingSeq + 1) & 0xffff);
    const key = ((this.pingId << 16) | seq) >>> 0;
    this.pings.get(key)?.reject(new ConnectionError('ETIMEDOUT', 'echo sequence reused'));
    this.settle(key);

    const off = ip.beginLarge(path, 8 + size);
    const buf = ip.txBuf;
    for (let i = 0; i < size; i++) buf[off + 8 + i] = i & 0xff;
    const h = this.txHdr;
    h.type = IcmpType.ECHO_REQUEST;
    h.code = 0;
    h.id = this.pingId;
    h.seq = seq;
    encodeIcmp(h, buf, off, size);

    return new Promise((resolve, reject) => {
      const timer = this.host.clock.createTimer(() => {
        this.settle(key);
        reject(new ConnectionError('ETIMEDOUT', `no echo reply from ${dst} within ${timeoutMs} ms`));
      });
      this.pings.set(key, { sentAt: this.host.clock.now(), timer, resolve, reject });
      timer.arm(timeoutMs);
      this.host.counters.inc('icmp.tx.echo-request');
      const df = opts.df ?? false;
      if (!ip.commit(path, IpProto.ICMP, 8 + size, df, opts.ttl)) {
        this.settle(key);
        const tooBig = df && 28 + size > path.cached.mtu;
        reject(
          tooBig
            ? new ConnectionError('EMSGSIZE', `${28 + size} bytes exceed the path MTU ${path.cached.mtu}`)
            : new ConnectionError('ENETDOWN', 'the echo request could not be sent'),
        );
      }
    });
  }

  close(): void {
    this.closed = true;
    for (const [key, p] of [...this.pings]) {
      this.settle(key);
      p.reject(new ConnectionError('ECANCELED', 'stack closed'));
    }
  }

  // ---------------------------------------------------------------------------------------------

  private settle(key: number): void {
    const p = this.pings.get(key);
    if (!p) return;
    p.timer.disarm();
    this.pings.delete(key);
  }

  private answerEcho(rx: RxPacket): void {
    const c = this.host.counters;
    if (!this.echo) {
      c.inc('drop.icmp.echo-disabled');
      return;
    }
    if (rx.ipBroadcast || rx.l2Broadcast) {
      // Answering broadcast pings turns us into a smurf amplifier (RFC 1122 allows silence).
      c.inc('drop.icmp.broadcast-echo');
      return;
    }
    const ip = this.host.ip;
    const path = ip.replyPath(rx.src, rx.dst);
    if (!path) {
      c.inc('drop.icmp.no-route');
      return;
    }
    const bodyLen = rx.l4Len - 8;
    const off = ip.beginLarge(path, rx.l4Len);
    const buf = ip.txBuf;
    buf.set(rx.buf.subarray(rx.l4Off + 8, rx.l4Off + rx.l4Len), off + 8);
    const h = this.txHdr;
    h.type = IcmpType.ECHO_REPLY;
    h.code = 0;
    h.id = this.hdr.id;
    h.seq = this.hdr.seq;
    encodeIcmp(h, buf, off, bodyLen);
    ip.commit(path, IpProto.ICMP, rx.l4Len, false, undefined, rx.tos);
    c.inc('icmp.tx.echo-reply');
    c.inc('accept.icmp.echo-request');
  }

  private echoReply(h: IcmpHeader): void {
    const key = ((h.id << 16) | h.seq) >>> 0;
    const p = this.pings.get(key);
    if (!p) {
      this.host.counters.inc('drop.icmp.unexpected-echo-reply');
      return;
    }
    this.settle(key);
    this.host.counters.inc('accept.icmp.echo-reply');
    p.resolve({ rttMs: this.host.clock.now() - p.sentAt });
  }

  private errorIn(rx: RxPacket, h: IcmpHeader): void {
    const c = this.host.counters;
    const fragNeeded = h.type === IcmpType.DEST_UNREACHABLE && h.code === 4;
    const kind =
      h.type === IcmpType.TIME_EXCEEDED ? 'time-exceeded' : fragNeeded ? 'frag-needed' : 'unreachable';
    const end = rx.l4Off + rx.l4Len;
    const q = parseQuote(kind, h.code, h.mtu, rx.buf, h.bodyOffset, end - h.bodyOffset);
    if (!q) {
      c.inc('drop.icmp.bad-quote');
      return;
    }
    if (!this.host.ip.isLocal(q.src) || q.dst === q.src) {
      // Only errors about packets we sent mean anything; the rest are forged or misdelivered.
      c.inc('drop.icmp.not-ours');
      return;
    }
    const ip = this.host.ip;
    const e: IcmpErrorInfo = {
      kind: q.kind,
      code: q.code,
      mtu: q.mtu,
      src: q.src,
      dst: q.dst,
      srcPort: q.srcPort,
      dstPort: q.dstPort,
      seq: q.seq,
    };
    if (fragNeeded) {
      if (q.protocol === IpProto.TCP && this.host.tcpErrorInFlight?.(e) === false) {
        c.inc('drop.icmp.tcp-not-in-flight');
        return;
      }
      e.mtuLowered = ip.updatePmtu(q.src, q.dst, q.mtu, q.quotedLength);
      const path = ip.findPath(q.dst, q.src);
      if (path) e.mtu = path.cached.mtu;
      else if (e.mtu < ip.minPmtu) e.mtu = ip.minPmtu;
    }
    c.inc('accept.icmp.error');
    if (q.protocol === IpProto.TCP) this.host.tcpError(e);
    else if (q.protocol === IpProto.UDP) this.host.udpError(e);
    else if (
      q.protocol === IpProto.ICMP &&
      rx.buf[h.bodyOffset + ((rx.buf[h.bodyOffset]! & 0x0f) << 2)] === 8
    ) {
      // About one of our echo requests.
      this.localError(e);
    }
  }

  private emitError(
    type: number,
    code: number,
    from: number,
    to: number,
    quote: Uint8Array,
    quoteOff: number,
    quoteLen: number,
  ): boolean {
    const c = this.host.counters;
    if (!this.takeToken()) {
      c.inc('icmp.tx.rate-limited');
      return false;
    }
    const ip = this.host.ip;
    const path = ip.replyPath(to, from);
    if (!path) return false;
    const off = ip.beginLarge(path, 8 + quoteLen);
    const buf = ip.txBuf;
    buf.set(quote.subarray(quoteOff, quoteOff + quoteLen), off + 8);
    const h = this.txHdr;
    h.type = type;
    h.code = code;
    h.mtu = 0;
    encodeIcmp(h, buf, off, quoteLen);
    c.inc(type === IcmpType.TIME_EXCEEDED ? 'icmp.tx.time-exceeded' : 'icmp.tx.unreachable');
    return ip.commit(path, IpProto.ICMP, 8 + quoteLen, false);
  }

  /**
   * Token bucket: `burst` errors at once, refilled at `errorRatePerSec`. ICMPv6 errors draw on the
   * same budget: one bound on what a flood of bad packets can make this host send.
   */
  takeToken(): boolean {
    const now = this.host.clock.now();
    this.tokens = Math.min(this.burst, this.tokens + (now - this.lastRefill) * this.ratePerMs);
    this.lastRefill = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

/** Query messages (echo, timestamp, ...) may be answered with errors; errors never are (RFC 1122). */
function isQuery(buf: Uint8Array, l4Off: number, l4Len: number): boolean {
  if (l4Len < 1) return false;
  const t = buf[l4Off]!;
  return t === 0 || t === 8 || t === 13 || t === 14 || t === 15 || t === 16 || t === 17 || t === 18;
}

export function errorFor(e: IcmpErrorInfo): ConnectionError {
  if (e.kind === 'frag-needed') return new ConnectionError('EMSGSIZE', `path MTU is ${e.mtu}`);
  if (e.kind === 'time-exceeded') return new ConnectionError('EHOSTUNREACH', 'time exceeded in transit');
  switch (e.code) {
    case 0:
    case 6:
    case 9:
      return new ConnectionError('ENETUNREACH', 'network unreachable');
    case 2:
      return new ConnectionError('ENOPROTOOPT', 'protocol unreachable');
    case 3:
      return new ConnectionError('ECONNREFUSED', 'port unreachable');
    default:
      return new ConnectionError('EHOSTUNREACH', 'host unreachable');
  }
}
