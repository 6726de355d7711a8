import { AddressInUseError, InvalidArgumentError, InvalidStateError } from '../../core/errors.ts';
import { createNeighborState } from '../../state/neighbor-state.ts';
import { createPathState, type PathState } from '../../state/path-state.ts';
import {
  type CongestionAlgorithm,
  createTcpState,
  DEFAULT_TCP_CACHED,
  type TcpCached,
  type TcpConst,
  type TcpState,
  TcpStateId,
} from '../../state/tcp-state.ts';
import type { DecodeError } from '../../wire/decode-error.ts';
import { createIpv4Header, decodeIpv4, encodeIpv4, IpProto } from '../../wire/ipv4.ts';
import {
  createTcpHeader,
  decodeTcp,
  encodeTcpHeader,
  finishTcpChecksum,
  resetTcpOptions,
  TCP_PROTOCOL,
  TcpFlag,
  type TcpHeader,
} from '../../wire/tcp.ts';
import type { IcmpErrorInfo, IpInfo } from '../ip-sender.ts';
import { type CongestionControl, congestionControl } from './congestion.ts';
import { IsnGenerator } from './isn.ts';
import { seqAdd, seqGeq, seqGt, seqLt, seqSub } from './seq.ts';
import { type CookieOptions, SynCookies } from './syn-cookies.ts';
import {
  connError,
  deliverEvents,
  type ListenerRef,
  reportClosed,
  TcpConnection,
  type TcpEngine,
  TcpEvent,
  terminate,
} from './tcp-connection.ts';
import { flushDelayedAck } from './tcp-flush.ts';
import { connInput, establish, negotiateSynOptions, offerToListener } from './tcp-input.ts';
import {
  CHALLENGE_ACKS_GLOBAL,
  sendAck,
  sendRstReply,
  sendSyn,
  tcpOutput,
  tsNow,
  wscaleFor,
} from './tcp-output.ts';
import { scheduleTimer } from './tcp-timers.ts';
import type { TcpHostEnv, TcpUser } from './tcp-types.ts';

export interface TcpListener {
  readonly ip: number;
  readonly port: number;
  close(): void;
  /** Half-open connections (SYN_RECEIVED) waiting for the handshake's last ACK. */
  readonly pending: number;
}

const DROP_NAMES: Record<DecodeError, string> = {
  truncated: 'drop.tcp.truncated',
  'bad-checksum': 'drop.tcp.bad-checksum',
  'bad-version': 'drop.tcp.bad-version',
  'bad-header-length': 'drop.tcp.bad-header-length',
  'bad-length': 'drop.tcp.bad-length',
  'bad-option': 'drop.tcp.bad-option',
  'bad-type': 'drop.tcp.bad-type',
  unsupported: 'drop.tcp.unsupported',
};

const EPHEMERAL_LOW = 49152;
const EPHEMERAL_COUNT = 65536 - EPHEMERAL_LOW;
/** Largest MSS we announce: a 65535-byte IP packet minus 40 bytes of headers. */
const MAX_ANNOUNCED_MSS = 65495;

/** Like Linux's TCP_SYNCOOKIE_VALID: cookie ACKs are looked at this long after an overflow. */
const SYNCOOKIE_VALID_MS = 120_000;

class Listener implements TcpListener, ListenerRef {
  pending = 0;
  closed = false;
  /** When the backlog last overflowed and a cookie went out (-Infinity: never). */
  lastOverflowAt = Number.NEGATIVE_INFINITY;
  constructor(
    private readonly layer: TcpLayer,
    readonly ip: number,
    readonly port: number,
    readonly backlog: number,
    readonly cached: TcpCached,
    readonly accept: (conn: TcpConnection) => boolean,
  ) {}
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.layer.removeListener(this);
  }
}

function checkU32(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new InvalidArgumentError(`${what} must be an IPv4 address as an unsigned 32-bit integer`);
  }
  return v;
}

function checkPort(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) {
    throw new InvalidArgumentError(`${what} must be an integer port in 1..65535`);
  }
  return v;
}

const POSITIVE_INT_FIELDS: readonly (keyof TcpCached)[] = [
  'keepIdleMs',
  'keepIntvlMs',
  'keepCount',
  'sndBufSize',
  'rcvBufSize',
  'minRtoMs',
  'maxRtoMs',
];
const NON_NEGATIVE_FIELDS: readonly (keyof TcpCached)[] = [
  'maxRetransmits',
  'maxSynRetransmits',
  'timeWaitMs',
  'delayedAckMs',
  'tos',
];

/** Merge per-socket options over defaults, refusing anything the engine cannot run with. */
export function mergeTcpOptions(base: Readonly<TcpCached>, opts?: Partial<TcpCached>): TcpCached {
  const out: TcpCached = { ...base };
  if (!opts) return out;
  for (const k of Object.keys(opts) as (keyof TcpCached)[]) {
    if (!(k in DEFAULT_TCP_CACHED)) throw new InvalidArgumentError(`unknown TCP option ${String(k)}`);
    const v = opts[k];
    if (v === undefined) continue;
    (out as unknown as Record<string, unknown>)[k] = v;
  }
  for (const k of POSITIVE_INT_FIELDS) {
    const v = out[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      throw new InvalidArgumentError(`TCP option ${k} must be a positive number`);
    }
  }
  for (const k of NON_NEGATIVE_FIELDS) {
    const v = out[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      throw new InvalidArgumentError(`TCP option ${k} must be a non-negative number`);
    }
  }
  if (!Number.isInteger(out.ttl) || out.ttl < 1 || out.ttl > 255) {
    throw new InvalidArgumentError('TCP option ttl must be in 1..255');
  }
  if (out.sndBufSize > 0x40000000 || out.rcvBufSize > 0x40000000) {
    throw new InvalidArgumentError('TCP buffer sizes are limited to 1 GiB');
  }
  if (out.minRtoMs > out.maxRtoMs) throw new InvalidArgumentError('minRtoMs must not exceed maxRtoMs');
  for (const k of ['keepAlive', 'noDelay'] as const) {
    if (typeof out[k] !== 'boolean') throw new InvalidArgumentError(`TCP option ${k} must be a boolean`);
  }
  const algos: readonly CongestionAlgorithm[] = ['cubic', 'newreno'];
  if (!algos.includes(out.congestion))
    throw new InvalidArgumentError(`unknown congestion control ${out.congestion}`);
  return out;
}

/** Segments a frozen 4-tuple holds while its connection moves; more are dropped and counted. */
const FROZEN_QUEUE_LIMIT = 4096;

/**
 * What is left of a connection in the demultiplexing table after its state went elsewhere: it
 * holds arriving segments (as IPv4 packets) while the connection is between owners, or forwards
 * them to the owner once the move is done, instead of answering them with a RST.
 */
interface Placeholder {
  queue: Uint8Array[];
  forward: ((packet: Uint8Array) => void) | null;
}

export interface AdoptOptions {
  /**
   * Make the peer recover at once (failover): send an ACK and retransmit from snd.una if data is
   * outstanding, instead of waiting for the retransmission timer.
   */
  prod?: boolean;
}

function announcedMss(path: PathState): number {
  return Math.max(88, Math.min(path.cached.mtu - 40, MAX_ANNOUNCED_MSS));
}

/**
 * The TCP layer of one host (or one offload target): demultiplexes segments to connections and
 * listeners, answers for closed ports, and owns the per-layer secrets (ISN, SYN cookies).
 */
export class TcpLayer implements TcpEngine {
  readonly env: TcpHostEnv;
  readonly txHdr: TcpHeader = createTcpHeader();
  private readonly rxHdr: TcpHeader = createTcpHeader();
  private readonly defaults: TcpCached;
  /** remoteIp * 65536 + remotePort → (localIp * 65536 + localPort → connection). */
  private readonly table = new Map<number, Map<number, TcpConnection>>();
  private readonly listeners = new Map<number, Listener[]>();
  private readonly isn: IsnGenerator;
  private readonly cookies: SynCookies;
  private readonly cookieOpts: CookieOptions = { mss: 0, wscale: -1, sackPermitted: false };
  private challengeStart = 0;
  private challengeCount = 0;
  private challengeBudget = CHALLENGE_ACKS_GLOBAL;
  private count = 0;
  /** Same two-level keys as `table`. */
  private readonly frozen = new Map<number, Map<number, Placeholder>>();
  private frozenCount = 0;
  private readonly pktHdr = createIpv4Header();
  private readonly injectInfo: IpInfo = { src: 0, dst: 0, ttl: 0, tos: 0, ifIndex: -1 };
  /**
   * Called (synchronously, from the engine's processing) when a connection leaves the table because
   * it closed; not when it is released to another owner.
   */
  onClosed: ((conn: TcpConnection) => void) | null = null;
  /**
   * Like Linux's TCP small queues: bytes one connection may send per turn of the event loop, so
   * one with a large window cannot hold a turn (and the timers, reads and requests behind it)
   * while others wait; the rest goes in the next turn, after everyone else's. Infinity: off.
   */
  outputBudget = Number.POSITIVE_INFINITY;
  outputTurn = 0;
  private outputTick = false;
  private outputPending: TcpConnection[] = [];
  private outputRunning: TcpConnection[] = [];

  constructor(env: TcpHostEnv, defaults?: Partial<TcpCached>) {
    this.env = env;
    this.defaults = mergeTcpOptions(DEFAULT_TCP_CACHED, defaults);
    this.isn = new IsnGenerator(env.clock, env.random);
    this.cookies = new SynCookies(env.random);
  }

  /** Number of live connections (TIME_WAIT included). */
  get size(): number {
    return this.count;
  }

  /** A connection spent its budget of this turn: it goes on in the next, after the others. */
  outputLater(conn: TcpConnection): void {
    if (conn.outputQueued) return;
    conn.outputQueued = true;
    this.outputPending.push(conn);
    this.noteOutputTurn();
  }

  /** A connection starts spending in this turn: make sure the turn ends (one deferral per turn). */
  noteOutputTurn(): void {
    if (this.outputTick) return;
    this.outputTick = true;
    this.env.clock.defer(this.nextOutputTurn);
  }

  private readonly nextOutputTurn = (): void => {
    this.outputTick = false;
    this.outputTurn++;
    const list = this.outputPending;
    this.outputPending = this.outputRunning;
    this.outputRunning = list;
    for (const conn of list) {
      conn.outputQueued = false;
      if (!conn.linked || conn.released) continue;
      tcpOutput(conn);
      scheduleTimer(conn);
      deliverEvents(conn);
    }
    list.length = 0;
  };

  congestion(conn: TcpConnection): CongestionControl {
    return congestionControl(conn.state.cached.congestion);
  }

  takeChallengeAck(now: number): boolean {
    if (now - this.challengeStart >= 1000 || now < this.challengeStart) {
      this.challengeStart = now;
      this.challengeCount = 0;
      // A fixed budget is a side channel: an off-path attacker who exhausts it and counts the
      // challenge ACKs it sees learns whether its guessed segment drew one (CVE-2016-5696). Like
      // Linux, each second's budget is drawn between half and one and a half times the limit.
      const half = CHALLENGE_ACKS_GLOBAL >>> 1;
      this.challengeBudget = half + (this.env.random.u32() % (CHALLENGE_ACKS_GLOBAL + 1));
    }
    if (this.challengeCount >= this.challengeBudget) return false;
    this.challengeCount++;
    return true;
  }

  lookup(
    localIp: number,
    localPort: number,
    remoteIp: number,
    remotePort: number,
  ): TcpConnection | undefined {
    return this.table.get(remoteIp * 65536 + remotePort)?.get(localIp * 65536 + localPort);
  }

  private link(conn: TcpConnection): void {
    const c = conn.state.const;
    const k1 = c.remoteIp * 65536 + c.remotePort;
    let inner = this.table.get(k1);
    if (!inner) {
      inner = new Map();
      this.table.set(k1, inner);
    }
    inner.set(c.localIp * 65536 + c.localPort, conn);
    conn.linked = true;
    this.count++;
  }

  /** Connections allowed to wait in TIME_WAIT at once (Linux: tcp_max_tw_buckets). */
  maxTimeWait = 65_536;
  private readonly timeWaiting = new Set<TcpConnection>();

  /** Connections in TIME_WAIT now. */
  get timeWaitCount(): number {
    return this.timeWaiting.size;
  }

  admitTimeWait(conn: TcpConnection): boolean {
    if (this.timeWaiting.size >= this.maxTimeWait) return false;
    this.timeWaiting.add(conn);
    return true;
  }

  unlink(conn: TcpConnection): void {
    this.timeWaiting.delete(conn);
    if (!conn.linked) return;
    this.unlinkQuiet(conn);
    this.onClosed?.(conn);
  }

  private unlinkQuiet(conn: TcpConnection): void {
    this.timeWaiting.delete(conn);
    conn.linked = false;
    const c = conn.state.const;
    const k1 = c.remoteIp * 65536 + c.remotePort;
    const inner = this.table.get(k1);
    if (!inner) return;
    const k2 = c.localIp * 65536 + c.localPort;
    if (inner.get(k2) === conn) {
      inner.delete(k2);
      this.count--;
    }
    if (inner.size === 0) this.table.delete(k1);
  }

  *connections(): Iterable<TcpConnection> {
    for (const inner of [...this.table.values()]) yield* [...inner.values()];
  }

  input(ip: IpInfo, buf: Uint8Array, off: number, len: number): void {
    const env = this.env;
    env.counters.inc('tcp.segments.in');
    const h = this.rxHdr;
    // A checksum the link (or our own completion of a partial one) vouched for is not summed twice.
    const err = decodeTcp(buf, off, len, ip.src, ip.dst, h, !ip.l4ChecksumOk);
    if (err !== null) {
      env.counters.inc(DROP_NAMES[err] ?? 'drop.tcp.malformed');
      return;
    }
    if (h.srcPort === 0 || h.dstPort === 0) {
      env.counters.inc('drop.tcp.bad-port');
      return;
    }
    const src = ip.src >>> 0;
    if (
      src === 0 ||
      src === 0xffffffff ||
      src >>> 28 === 14 ||
      ip.dst >>> 28 === 14 ||
      ip.dst >>> 0 === 0xffffffff
    ) {
      // TCP is unicast only (RFC 1122 4.2.3.10).
      env.counters.inc('drop.tcp.bad-address');
      return;
    }
    const pOff = off + h.headerLength;
    const pLen = len - h.headerLength;
    const conn = this.lookup(ip.dst, h.dstPort, src, h.srcPort);
    if (conn === undefined && this.frozenCount > 0) {
      const ph = this.frozen.get(src * 65536 + h.srcPort)?.get(ip.dst * 65536 + h.dstPort);
      if (ph !== undefined) {
        this.hold(ph, ip, buf, off, len);
        return;
      }
    }
    let reopenIss = -1;
    if (conn) {
      // A SYN ends TIME_WAIT only when a listener will take it (Linux TCP_TW_SYN); otherwise the
      // TIME_WAIT connection answers it as any other segment.
      const tl =
        conn.state.delegated.state === TcpStateId.TIME_WAIT && this.timeWaitReopen(conn, h)
          ? this.findListener(ip.dst, h.dstPort)
          : null;
      if (!tl) {
        connInput(conn, h, buf, pOff, pLen);
        return;
      }
      env.counters.inc('tcp.time-wait.reopened');
      // The new incarnation's sequence space starts clear above the old one, so stray segments
      // of the old connection cannot be taken for the new one's (Linux: tw_snd_nxt + 65535 + 2).
      reopenIss = seqAdd(conn.state.delegated.sndMax, 65537);
      terminate(conn, null, false);
    }
    const l = this.findListener(ip.dst, h.dstPort);
    if (!l) {
      env.counters.inc('drop.tcp.no-listener');
      sendRstReply(this, src, ip.dst, h, pLen);
      return;
    }
    this.listenInput(l, ip, h, buf, pOff, pLen, reopenIss);
  }

  /** RFC 6191: a new SYN may take over a TIME_WAIT 4-tuple if it is clearly from a new incarnation. */
  private timeWaitReopen(conn: TcpConnection, h: TcpHeader): boolean {
    if ((h.flags & (TcpFlag.SYN | TcpFlag.ACK | TcpFlag.RST)) !== TcpFlag.SYN) return false;
    const s = conn.state;
    if (s.const.tsEnabled && h.hasTimestamps) return seqGt(h.tsVal, s.delegated.tsRecent);
    return seqGt(h.seq, s.delegated.rcvNxt);
  }

  private findListener(ip: number, port: number): Listener | null {
    const list = this.listeners.get(port);
    if (!list) return null;
    let any: Listener | null = null;
    for (const l of list) {
      if (l.ip === ip) return l;
      if (l.ip === 0) any = l;
    }
    return any;
  }

  private listenInput(
    l: Listener,
    ip: IpInfo,
    h: TcpHeader,
    buf: Uint8Array,
    pOff: number,
    pLen: number,
    reopenIss = -1,
  ): void {
    const env = this.env;
    const f = h.flags;
    if (f & TcpFlag.RST) return;
    if ((f & (TcpFlag.SYN | TcpFlag.FIN)) === (TcpFlag.SYN | TcpFlag.FIN)) {
      // No legitimate opener sets both; Linux discards it in LISTEN without an answer.
      env.counters.inc('drop.tcp.syn-fin');
      return;
    }
    if (f & TcpFlag.ACK) {
      // Only after a recent overflow can an ACK answer a cookie; checking every stray ACK would
      // spend a hash on each and let a blind attacker try cookies at will (Linux does the same).
      const recent = env.clock.now() - l.lastOverflowAt < SYNCOOKIE_VALID_MS;
      if (!(f & TcpFlag.SYN) && recent && this.cookieAck(l, ip, h, buf, pOff, pLen)) return;
      sendRstReply(this, ip.src, ip.dst, h, pLen);
      return;
    }
    if (!(f & TcpFlag.SYN)) {
      env.counters.inc('drop.tcp.listen-no-syn');
      return;
    }
    const path = env.pathTo(ip.src, ip.dst);
    if (!path) {
      env.counters.inc('drop.tcp.no-route');
      return;
    }
    if (l.pending >= l.backlog) {
      this.sendCookie(l, ip, h, path);
      return;
    }
    const now = env.clock.now();
    const conn = this.newConnection(ip.dst, h.dstPort, ip.src, h.srcPort, l.cached, path);
    const s = conn.state;
    const d = s.delegated;
    conn.listener = l;
    l.pending++;
    negotiateSynOptions(conn, h, now);
    d.irs = h.seq;
    d.rcvNxt = seqAdd(h.seq, 1);
    d.rcvAdv = d.rcvNxt;
    d.lastAckSent = d.rcvNxt;
    d.iss = reopenIss >= 0 ? reopenIss : this.isn.next(ip.dst, h.dstPort, ip.src, h.srcPort);
    d.sndUna = d.iss;
    d.sndNxt = seqAdd(d.iss, 1);
    d.sndMax = d.sndNxt;
    d.sndWnd = h.window;
    d.maxSndWnd = h.window;
    d.sndWl1 = h.seq;
    d.sndWl2 = d.iss;
    d.state = TcpStateId.SYN_RECEIVED;
    this.link(conn);
    conn.stats.segmentsIn++;
    s.soft.rttSentAt = now;
    sendSyn(conn);
    d.rtxDeadline = now + d.rto;
    scheduleTimer(conn);
  }

  private newConnection(
    localIp: number,
    localPort: number,
    remoteIp: number,
    remotePort: number,
    cached: TcpCached,
    path: PathState,
  ): TcpConnection {
    const c: TcpConst = {
      localIp,
      localPort,
      remoteIp,
      remotePort,
      tsEnabled: false,
      sackEnabled: false,
      wsEnabled: false,
      sndWscale: 0,
      rcvWscale: 0,
      remoteMss: 536,
      localMss: announcedMss(path),
    };
    const conn = new TcpConnection(this, createTcpState(c, cached, path));
    conn.offeredWscale = wscaleFor(cached.rcvBufSize);
    return conn;
  }

  /** Backlog full: answer with a SYN cookie and keep no state (counter tcp.syncookies.sent). */
  private sendCookie(l: Listener, ip: IpInfo, h: TcpHeader, path: PathState): void {
    const env = this.env;
    const now = env.clock.now();
    l.lastOverflowAt = now;
    env.counters.inc('tcp.syncookies.sent');
    const peerMss = h.mss > 0 ? h.mss : 536;
    const iss = this.cookies.make(ip.dst, h.dstPort, ip.src, h.srcPort, h.seq, peerMss, now);
    const t = this.txHdr;
    resetTcpOptions(t);
    t.srcPort = h.dstPort;
    t.dstPort = h.srcPort;
    t.seq = iss;
    t.ack = seqAdd(h.seq, 1);
    t.flags = TcpFlag.SYN | TcpFlag.ACK;
    t.window = Math.min(l.cached.rcvBufSize, 65535);
    t.urgent = 0;
    t.mss = announcedMss(path);
    if (h.hasTimestamps) {
      const peerWs = h.wscale >= 0 ? Math.min(h.wscale, 14) : -1;
      t.hasTimestamps = true;
      t.tsVal = SynCookies.encodeTs(tsNow(now), peerWs, h.sackPermitted);
      t.tsEcr = h.tsVal;
      if (peerWs >= 0) t.wscale = wscaleFor(l.cached.rcvBufSize);
      t.sackPermitted = h.sackPermitted;
    }
    const off = env.ip.begin(path);
    const buf = env.ip.txBuf;
    const hl = encodeTcpHeader(t, buf, off);
    finishTcpChecksum(buf, off, hl, ip.dst, ip.src);
    env.ip.commit(path, TCP_PROTOCOL, hl, true, l.cached.ttl, l.cached.tos);
    env.counters.inc('tcp.segments.out');
  }

  /** The handshake's last ACK for a cookie SYN-ACK: rebuild the connection from the cookie. */
  private cookieAck(
    l: Listener,
    ip: IpInfo,
    h: TcpHeader,
    buf: Uint8Array,
    pOff: number,
    pLen: number,
  ): boolean {
    const env = this.env;
    const now = env.clock.now();
    const cookie = seqSub(h.ack, 1);
    const peerIsn = seqSub(h.seq, 1);
    const mss = this.cookies.check(ip.dst, h.dstPort, ip.src, h.srcPort, peerIsn, cookie, now);
    if (mss < 0) {
      env.counters.inc('tcp.syncookies.failed');
      return false;
    }
    const path = env.pathTo(ip.src, ip.dst);
    if (!path) return false;
    env.counters.inc('tcp.syncookies.ok');
    const o = this.cookieOpts;
    if (h.hasTimestamps) SynCookies.decodeTs(h.tsEcr, o);
    else {
      o.wscale = -1;
      o.sackPermitted = false;
    }
    const conn = this.newConnection(ip.dst, h.dstPort, ip.src, h.srcPort, l.cached, path);
    const s = conn.state;
    const c = s.const;
    const d = s.delegated;
    c.remoteMss = mss;
    c.wsEnabled = o.wscale >= 0;
    c.sndWscale = c.wsEnabled ? o.wscale : 0;
    c.rcvWscale = c.wsEnabled ? conn.offeredWscale : 0;
    c.sackEnabled = o.sackPermitted;
    c.tsEnabled = h.hasTimestamps;
    if (h.hasTimestamps) {
      d.tsRecent = h.tsVal;
      d.tsRecentAt = now;
    }
    d.iss = cookie;
    d.irs = peerIsn;
    d.sndUna = h.ack;
    d.sndNxt = h.ack;
    d.sndMax = h.ack;
    d.rcvNxt = h.seq;
    d.lastAckSent = h.seq;
    d.rcvAdv = seqAdd(h.seq, Math.min(l.cached.rcvBufSize, 65535));
    d.sndWnd = h.window * 2 ** c.sndWscale;
    d.maxSndWnd = d.sndWnd;
    d.sndWl1 = h.seq;
    d.sndWl2 = h.ack;
    this.link(conn);
    establish(conn, now);
    if (!offerToListener(conn, l)) return true;
    // The ACK may carry data already; run it through the ordinary path.
    connInput(conn, h, buf, pOff, pLen);
    return true;
  }

  connect(
    opts: {
      remoteIp: number;
      remotePort: number;
      localIp?: number;
      localPort?: number;
      options?: Partial<TcpCached>;
    },
    user: TcpUser,
  ): TcpConnection {
    if (!opts || typeof opts !== 'object') throw new InvalidArgumentError('connect: options required');
    const remoteIp = checkU32(opts.remoteIp, 'remoteIp');
    const remotePort = checkPort(opts.remotePort, 'remotePort');
    if (opts.localIp !== undefined) checkU32(opts.localIp, 'localIp');
    if (opts.localPort !== undefined) checkPort(opts.localPort, 'localPort');
    if (remoteIp === 0 || remoteIp === 0xffffffff || remoteIp >>> 28 === 14) {
      throw new InvalidArgumentError('connect: remote address must be unicast');
    }
    const cached = mergeTcpOptions(this.defaults, opts.options);
    const env = this.env;
    const path = env.pathTo(remoteIp, opts.localIp);
    const localIp = opts.localIp ?? path?.const.localIp ?? 0;
    let localPort = opts.localPort ?? 0;
    if (localPort !== 0) {
      if (this.lookup(localIp, localPort, remoteIp, remotePort)) {
        throw new AddressInUseError(`connect: local port ${localPort} already used for this peer`);
      }
    } else {
      localPort = this.ephemeralPort(localIp, remoteIp, remotePort);
    }
    const thePath = path ?? unroutablePath(localIp, remoteIp);
    const conn = this.newConnection(localIp, localPort, remoteIp, remotePort, cached, thePath);
    conn.user = user;
    if (!path) {
      env.counters.inc('tcp.connect.no-route');
      reportClosed(conn, connError('ENETUNREACH', 'no route to the remote address'));
      conn.deferDelivery();
      return conn;
    }
    const now = env.clock.now();
    const d = conn.state.delegated;
    d.iss = this.isn.next(localIp, localPort, remoteIp, remotePort);
    d.sndUna = d.iss;
    d.sndNxt = seqAdd(d.iss, 1);
    d.sndMax = d.sndNxt;
    d.state = TcpStateId.SYN_SENT;
    this.link(conn);
    conn.state.soft.rttSentAt = now;
    sendSyn(conn);
    d.rtxDeadline = now + d.rto;
    scheduleTimer(conn);
    return conn;
  }

  private ephemeralPort(localIp: number, remoteIp: number, remotePort: number): number {
    const start = this.env.random.u32() % EPHEMERAL_COUNT;
    for (let i = 0; i < EPHEMERAL_COUNT; i++) {
      const port = EPHEMERAL_LOW + ((start + i) % EPHEMERAL_COUNT);
      if (!this.lookup(localIp, port, remoteIp, remotePort) && !this.listeners.has(port)) return port;
    }
    throw new AddressInUseError('connect: no free ephemeral port');
  }

  listen(
    opts: { ip?: number; port: number; backlog?: number; options?: Partial<TcpCached> },
    accept: (conn: TcpConnection) => boolean,
  ): TcpListener {
    if (!opts || typeof opts !== 'object') throw new InvalidArgumentError('listen: options required');
    const ip = opts.ip === undefined ? 0 : checkU32(opts.ip, 'ip');
    const port = checkPort(opts.port, 'port');
    const backlog = opts.backlog ?? 511;
    if (!Number.isInteger(backlog) || backlog < 0) throw new InvalidArgumentError('listen: bad backlog');
    if (typeof accept !== 'function') throw new InvalidArgumentError('listen: accept must be a function');
    const cached = mergeTcpOptions(this.defaults, opts.options);
    const list = this.listeners.get(port) ?? [];
    for (const l of list) {
      if (l.ip === ip || l.ip === 0 || ip === 0)
        throw new AddressInUseError(`port ${port} is already listening`);
    }
    const l = new Listener(this, ip, port, backlog, cached, accept);
    list.push(l);
    this.listeners.set(port, list);
    return l;
  }

  /** @internal */
  removeListener(l: Listener): void {
    const list = this.listeners.get(l.port);
    if (list) {
      const i = list.indexOf(l);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.listeners.delete(l.port);
    }
    for (const conn of this.connections()) {
      if (conn.listener === l) conn.abort();
    }
  }

  /**
   * ICMP error about one of our segments (RFC 1122 4.2.3.9, RFC 5927, RFC 5461). Only errors quoting
   * a sequence number we have in flight are believed.
   */
  /**
   * False if we run the quoted connection and the quoted sequence number is not in flight. A
   * connection we do not run here (offloaded to a NIC) cannot be judged, and is believed.
   */
  icmpInFlight(e: IcmpErrorInfo): boolean {
    const conn = this.lookup(e.src, e.srcPort, e.dst, e.dstPort);
    if (!conn) return true;
    const d = conn.state.delegated;
    return seqGeq(e.seq, d.sndUna) && seqLt(e.seq, d.sndMax);
  }

  icmpError(e: IcmpErrorInfo): void {
    const env = this.env;
    const conn = this.lookup(e.src, e.srcPort, e.dst, e.dstPort);
    if (!conn) {
      env.counters.inc('drop.tcp.icmp-no-connection');
      return;
    }
    const s = conn.state;
    const d = s.delegated;
    if (!(seqGeq(e.seq, d.sndUna) && seqLt(e.seq, d.sndMax))) {
      env.counters.inc('drop.tcp.icmp-bad-seq');
      return;
    }
    if (e.kind === 'frag-needed') {
      if (d.state < TcpStateId.ESTABLISHED || d.state === TcpStateId.TIME_WAIT) return;
      if (e.mtuLowered === false) {
        // Every copy of the message for the burst that overflowed would resend a window.
        env.counters.inc('tcp.pmtu.unchanged');
        return;
      }
      env.counters.inc('tcp.pmtu.resegment');
      // The IP layer already lowered the path MTU: resend what is outstanding at the new size now
      // rather than after a timeout.
      d.sndNxt = d.sndUna;
      s.soft.rttActive = false;
      tcpOutput(conn);
      scheduleTimer(conn);
      deliverEvents(conn);
      return;
    }
    if (d.state === TcpStateId.SYN_SENT) {
      let errno = 'EHOSTUNREACH';
      if (e.kind === 'unreachable' && (e.code === 2 || e.code === 3)) errno = 'ECONNREFUSED';
      else if (e.kind === 'unreachable' && e.code === 0) errno = 'ENETUNREACH';
      env.counters.inc('tcp.icmp.hard-errors');
      terminate(conn, connError(errno, `ICMP ${e.kind} code ${e.code}`), true);
      deliverEvents(conn);
      return;
    }
    env.counters.inc('tcp.icmp.soft-errors');
    const errno =
      e.kind === 'unreachable' && (e.code === 2 || e.code === 3) ? 'ECONNREFUSED' : 'EHOSTUNREACH';
    conn.softError = connError(errno, `ICMP ${e.kind} code ${e.code}`);
  }

  // ---- hand-over primitives -------------------------------------------------------------------

  /** A connection or a placeholder holds this 4-tuple. */
  owns(localIp: number, localPort: number, remoteIp: number, remotePort: number): boolean {
    if (this.lookup(localIp, localPort, remoteIp, remotePort) !== undefined) return true;
    return this.frozenCount > 0 && this.placeholder(localIp, localPort, remoteIp, remotePort) !== undefined;
  }

  /**
   * Take over an established connection's state (validated by the caller): link it into the table,
   * re-arm its timer from the deadlines it carries and resume output. A placeholder for the same
   * 4-tuple stays until `dropFrozen` so the caller can replay what it held (`takeQueued`).
   */
  adopt(state: TcpState, user: TcpUser | null, opts: AdoptOptions = {}): TcpConnection {
    const c = state.const;
    if (this.lookup(c.localIp, c.localPort, c.remoteIp, c.remotePort)) {
      throw new AddressInUseError('adopt: this layer already runs a connection with that 4-tuple');
    }
    const conn = new TcpConnection(this, state);
    conn.user = user;
    // The delayed-ACK timer never travels: the previous owner flushed it.
    state.soft.delayedAckDeadline = Number.POSITIVE_INFINITY;
    this.link(conn);
    if (opts.prod === true) {
      const d = state.delegated;
      if (d.sndMax !== d.sndUna) {
        d.sndNxt = d.sndUna;
        state.soft.rttActive = false;
        // The backoff was earned on the path that failed (or while no link was left at all), and
        // says nothing about the one we resend on now: like RFC 6069's revert after a known
        // disruption, the timer that guards this resend starts from the plain RTO.
        d.backoff = 0;
        d.rtxDeadline = Number.POSITIVE_INFINITY;
      }
      state.soft.ackNow = true;
      conn.rttEchoFloor = tsNow(this.env.clock.now());
      this.env.counters.inc('tcp.adopt.prodded');
      // Three identical ACKs: a peer with data in flight takes them as duplicate ACKs and
      // retransmits at once (fast retransmit) instead of waiting for its own timer; a peer with
      // nothing in flight ignores them.
      sendAck(conn);
      sendAck(conn);
      sendAck(conn);
    }
    tcpOutput(conn);
    scheduleTimer(conn);
    if (state.delegated.recvBuffer.length > 0) conn.events |= TcpEvent.READABLE;
    conn.deferDelivery();
    return conn;
  }

  /**
   * The consistent point of a hand-over: flush a pending delayed ACK, stop the timer, take the
   * connection out of the table and leave a placeholder that queues segments for its 4-tuple.
   * Returns the state, which now belongs to whoever takes it next; `conn` is dead from here on.
   */
  release(conn: TcpConnection): TcpState {
    if (!conn.linked || conn.released)
      throw new InvalidStateError('release: connection not run by this layer');
    flushDelayedAck(conn);
    const s = conn.state;
    // Chimney: data SACKed but not cumulatively acknowledged is dropped on a hand-over, so the
    // next owner resends it rather than trust a scoreboard it did not build.
    s.soft.sacked.length = 0;
    s.soft.ackNow = false;
    conn.timer.disarm();
    conn.timerTarget = Number.POSITIVE_INFINITY;
    this.unlinkQuiet(conn);
    conn.released = true;
    const c = s.const;
    this.freeze(c.localIp, c.localPort, c.remoteIp, c.remotePort);
    this.env.counters.inc('tcp.released');
    return s;
  }

  /** Hold segments for this 4-tuple (a placeholder in queueing mode); no-op if one exists. */
  freeze(localIp: number, localPort: number, remoteIp: number, remotePort: number): void {
    let ph = this.placeholder(localIp, localPort, remoteIp, remotePort);
    if (ph !== undefined) {
      ph.forward = null;
      return;
    }
    ph = { queue: [], forward: null };
    const k1 = remoteIp * 65536 + remotePort;
    let inner = this.frozen.get(k1);
    if (!inner) {
      inner = new Map();
      this.frozen.set(k1, inner);
    }
    inner.set(localIp * 65536 + localPort, ph);
    this.frozenCount++;
  }

  /**
   * Send segments for this 4-tuple to `fn` (the connection's owner elsewhere) instead of holding
   * them. Creates the placeholder if needed; segments already held are forwarded first.
   */
  forwardTo(
    localIp: number,
    localPort: number,
    remoteIp: number,
    remotePort: number,
    fn: (packet: Uint8Array) => void,
  ): void {
    this.freeze(localIp, localPort, remoteIp, remotePort);
    const ph = this.placeholder(localIp, localPort, remoteIp, remotePort)!;
    const q = ph.queue;
    ph.queue = [];
    ph.forward = fn;
    for (const p of q) fn(p);
  }

  isFrozen(localIp: number, localPort: number, remoteIp: number, remotePort: number): boolean {
    return this.placeholder(localIp, localPort, remoteIp, remotePort) !== undefined;
  }

  /** The segments held for this 4-tuple, oldest first; the placeholder stays. */
  takeQueued(localIp: number, localPort: number, remoteIp: number, remotePort: number): Uint8Array[] {
    const ph = this.placeholder(localIp, localPort, remoteIp, remotePort);
    if (ph === undefined) return [];
    const q = ph.queue;
    ph.queue = [];
    return q;
  }

  /** Forget the placeholder: later segments for the 4-tuple are handled as for any unknown one. */
  dropFrozen(localIp: number, localPort: number, remoteIp: number, remotePort: number): void {
    const k1 = remoteIp * 65536 + remotePort;
    const inner = this.frozen.get(k1);
    if (!inner) return;
    const held = inner.get(localIp * 65536 + localPort);
    if (held === undefined) return;
    if (held.queue.length > 0) this.env.counters.inc('drop.tcp.frozen-discarded', held.queue.length);
    inner.delete(localIp * 65536 + localPort);
    this.frozenCount--;
    if (inner.size === 0) this.frozen.delete(k1);
  }

  get frozenSize(): number {
    return this.frozenCount;
  }

  /**
   * A whole IPv4 packet carrying a TCP segment (held by a placeholder, or forwarded by another
   * owner): run it through `input` as if it had just arrived.
   */
  inputPacket(pkt: Uint8Array): void {
    const h = this.pktHdr;
    if (decodeIpv4(pkt, 0, pkt.length, h, false) !== null || h.protocol !== IpProto.TCP) {
      this.env.counters.inc('drop.tcp.bad-forwarded');
      return;
    }
    const info = this.injectInfo;
    info.src = h.src;
    info.dst = h.dst;
    info.ttl = h.ttl;
    info.tos = h.tos;
    this.input(info, pkt, h.headerLength, h.totalLength - h.headerLength);
  }

  private placeholder(
    localIp: number,
    localPort: number,
    remoteIp: number,
    remotePort: number,
  ): Placeholder | undefined {
    return this.frozen.get(remoteIp * 65536 + remotePort)?.get(localIp * 65536 + localPort);
  }

  /** Copy the segment into a fresh IPv4 packet (the receive buffer is reused after we return). */
  private hold(ph: Placeholder, ip: IpInfo, buf: Uint8Array, off: number, len: number): void {
    const counters = this.env.counters;
    if (ph.forward === null && ph.queue.length >= FROZEN_QUEUE_LIMIT) {
      counters.inc('drop.tcp.frozen-overflow');
      return;
    }
    const pkt = new Uint8Array(20 + len);
    const h = this.pktHdr;
    h.tos = ip.tos;
    h.totalLength = 20 + len;
    h.id = 0;
    h.df = true;
    h.mf = false;
    h.fragOffset = 0;
    h.ttl = ip.ttl > 0 ? ip.ttl : 64;
    h.protocol = IpProto.TCP;
    h.src = ip.src;
    h.dst = ip.dst;
    encodeIpv4(h, pkt, 0);
    pkt.set(buf.subarray(off, off + len), 20);
    if (ph.forward !== null) {
      counters.inc('tcp.frozen.forwarded');
      ph.forward(pkt);
    } else {
      counters.inc('tcp.frozen.queued');
      ph.queue.push(pkt);
    }
  }

  /** Abort every connection and listener and stop all timers. */
  close(): void {
    for (const list of [...this.listeners.values()]) for (const l of [...list]) l.close();
    for (const conn of [...this.connections()]) conn.abort();
  }
}

function unroutablePath(localIp: number, remoteIp: number): PathState {
  const nb = createNeighborState({ srcMac: 0, vlanId: -1, ip: remoteIp });
  return createPathState({ localIp, remoteIp }, nb, -1, 576);
}
