import { AddressInUseError, InvalidArgumentError } from '../../core/errors.ts';
import { ByteRing } from '../../state/byte-ring.ts';
import type { PathState } from '../../state/path-state.ts';
import { type TcpCached, TcpStateId } from '../../state/tcp-state.ts';
import { encodeTcpHeader, resetTcpOptions, TCP_PROTOCOL, TcpFlag, type TcpHeader } from '../../wire/tcp.ts';
import { ANY6, endpointsOverlap, TWO_32 } from '../address-table.ts';
import type { IpInfo } from '../ip-sender.ts';
import { rttSample } from './rtt.ts';
import { seqAdd, seqDiff, seqSub } from './seq.ts';
import { type CookieOptions, SynCookies } from './syn-cookies.ts';
import type { ListenerRef, TcpConnection } from './tcp-connection.ts';
import { ecnAgreed, ecnPassiveOpen, ecnSynAgrees, IP_ECN_MASK } from './tcp-ecn.ts';
import { terminate } from './tcp-events.ts';
import { connInput, establish, negotiateSynOptions, offerToListener } from './tcp-input.ts';
import type { TcpLayer } from './tcp-layer.ts';
import { announcedMss, newConnection } from './tcp-open.ts';
import { checkAddress, checkPort } from './tcp-options.ts';
import { sendRstReply, sendSyn, tcpChecksum, tsNow, wscaleFor } from './tcp-output.ts';
import { scheduleTimer } from './tcp-timers.ts';
import type { ConnectionHandle } from './tcp-types.ts';
import { synSpace } from './tcp-window.ts';

export interface TcpListener {
  /** 0: every IPv4 address; ANY6: every address of both families, or every IPv6 one if `v6Only`. */
  readonly ip: number;
  readonly v6Only: boolean;
  readonly port: number;
  close(): void;
  /** Half-open connections (SYN_RECEIVED) waiting for the handshake's last ACK. */
  readonly pending: number;
  /** Bound on the half-open connections and on the accept queue, each (listen(2)'s backlog). */
  readonly backlog: number;
  /**
   * Established connections the owner holds for the application and it has not yet taken (Linux's
   * accept queue); the owner keeps this current. Past the backlog, SYNs and the handshake's last
   * ACK are dropped, so the peer retries, as Linux does with tcp_abort_on_overflow off.
   */
  queued: number;
  /** Shared with NICs that answer this listener's SYNs (see Listener.gate). */
  gate: Int32Array | null;
  /** A NIC's listener: its own word of `gate` (see Listener.gateWord). */
  gateWord: number;
  /**
   * The accept of a connection a NIC on another thread made (a handle to it, not a TcpConnection
   * of this thread): the owner's socket over it, as `accept` makes one (null: none is taken).
   */
  acceptBorn: ((h: ConnectionHandle) => boolean) | null;
  /**
   * Told as a half-open connection is made (open), and as it ends or is established (an
   * established one is told after its state left SYN_RECEIVED, so the state says which). For
   * `open`, false: it could not be published (a full table), so the other side could not see it.
   */
  onHalfOpen: ((conn: TcpConnection, open: boolean) => boolean) | null;
  /** See Listener.ringsAtAccept. */
  ringsAtAccept: boolean;
  /** See Listener.heldElsewhere. */
  heldElsewhere:
    | ((localIp: number, localPort: number, remoteIp: number, remotePort: number) => boolean)
    | null;
}

/**
 * The window a cookie's SYN-ACK offers (unscaled, as in any SYN-ACK): a SYN-ACK's, in whole
 * segments of `mss` (ours) less the timestamp option when the SYN had one (65,160 on a 1500-byte
 * link: the kernel's cookie SYN-ACK, captured with tcp_syncookies=2, offers what its other
 * SYN-ACKs do). The connection the cookie's ACK makes counts from the same figure, where Linux's
 * cookie_v4_check redoes it with the cookie's MSS and no timestamp allowance (64,240) and so moves
 * the edge its SYN-ACK offered back (RFC 7323 2.4: a receiver should not).
 */
function cookieWindow(layer: TcpLayer, l: Listener, mss: number, ts: boolean): number {
  const tuned = layer.fixedRcvBuf !== true && l.cached.rcvBufLocked !== true;
  return synSpace(l.cached.rcvBufSize, tuned, mss - (ts ? TS_OPTION : 0));
}
/** The timestamp option's bytes in every segment once agreed (RFC 7323 3, aligned). */
const TS_OPTION = 12;

/** Like Linux's TCP_SYNCOOKIE_VALID: cookie ACKs are looked at this long after an overflow. */
const SYNCOOKIE_VALID_MS = 120_000;

export class Listener implements TcpListener, ListenerRef {
  private pendingNow = 0;
  private queuedNow = 0;
  private gateWords: Int32Array | null = null;
  /**
   * A NIC's listener: the word of `gate` that counts its own half-open connections as well, so the
   * host can take them out of [1] when the NIC dies (a dead NIC decrements nothing). -1: none.
   */
  gateWord = -1;
  closed = false;
  acceptBorn: ((h: ConnectionHandle) => boolean) | null = null;
  onHalfOpen: ((conn: TcpConnection, open: boolean) => boolean) | null = null;
  /**
   * Whether a NIC answering this listener's SYNs holds the four-tuple already (NicListenSpec): the
   * host's SYN for it, one the peer sent before the one the NIC answered, waited on this thread
   * meanwhile; answered here too, the peer would get a second SYN-ACK and be reset. Asked before
   * a half-open connection is made and, when `onHalfOpen` publishes it, again after that.
   */
  heldElsewhere:
    | ((localIp: number, localPort: number, remoteIp: number, remotePort: number) => boolean)
    | null = null;
  /** When the backlog last overflowed and a cookie went out (-Infinity: never). */
  lastOverflowAt = Number.NEGATIVE_INFINITY;
  /**
   * Its connections are put on other rings once their handshake ends (a worker NIC installs them
   * on shared memory, NicBornHooks.ringsAtAccept): a half-open one starts on rings of the least
   * size, which grow if anything is written before that. Rings of the listener's first size were
   * two 4 KiB buffers allocated and zeroed per SYN only to be dropped at the install (a worker's
   * CPU profile in a burst of 5,000 connects).
   */
  ringsAtAccept = false;
  constructor(
    private readonly listeners: Listeners,
    readonly ip: number,
    readonly v6Only: boolean,
    readonly port: number,
    readonly backlog: number,
    readonly cached: TcpCached,
    readonly accept: (conn: TcpConnection) => boolean,
  ) {}
  /**
   * Shared with NICs that answer this listener's SYNs (NicListenSpec.gate): [0] is 1 while the
   * accept queue is full (they pass SYNs up to the rules here), [1] counts the half-open
   * connections of the host's listener and of the NICs' together, so the backlog bounds them all
   * as it bounds one listener's.
   */
  get gate(): Int32Array | null {
    return this.gateWords;
  }
  set gate(g: Int32Array | null) {
    this.gateWords = g;
    if (g === null) return;
    Atomics.add(g, 1, this.pendingNow);
    if (this.gateWord >= 0) Atomics.add(g, this.gateWord, this.pendingNow);
  }
  get pending(): number {
    return this.pendingNow;
  }
  set pending(n: number) {
    const g = this.gateWords;
    if (g !== null) {
      const all = Atomics.add(g, 1, n - this.pendingNow) + n - this.pendingNow;
      if (this.gateWord >= 0) Atomics.add(g, this.gateWord, n - this.pendingNow);
      // NICs answer SYNs again only once no half-open connection is left anywhere and none of our
      // cookies is still valid: a SYN the peer resent before it took a cookie's SYN-ACK, answered
      // at a NIC with another ISS, would make a half-open connection there that resets the
      // cookie's connection at its ACK (a NIC cannot check the host's cookies; the host's own
      // half-open connection gives way to the cookie, cookieOverHalfOpen). Review r2 of s35h3.
      else if (all === 0 && this.listeners.now() - this.lastOverflowAt >= SYNCOOKIE_VALID_MS)
        Atomics.store(g, 2, 0);
    }
    this.pendingNow = n;
  }
  /** Half-open connections the backlog bounds: this listener's, and its NICs' when it has a gate. */
  get halfOpen(): number {
    return this.gateWords === null ? this.pendingNow : Atomics.load(this.gateWords, 1);
  }
  get queued(): number {
    return this.queuedNow;
  }
  set queued(n: number) {
    const wasFull = this.acceptFull;
    this.queuedNow = n;
    // Full within a turn of input: the application takes its accepts in the next turn, on this
    // thread, so the rest of the frames the link read at once would meet a full queue that only
    // the batch filled. Linux's application accepts on its own CPU while softirq takes each
    // handshake as it arrives; here, read on, a burst came in only backlog + 1 connections a turn
    // and dropped every other ACK of it: the peer's challenge ACKs to SYN-ACKs answered late (its
    // SYNs resent while this thread was away) then reached the listener numbered past the
    // request, failed the cookie check and drew the RST that reset the peer (serve stopped 4 s in
    // a burst of 64: 59 reset). The rest of the batch waits in the link's queue, not dropped.
    if (!wasFull && this.acceptFull) this.listeners.yieldInput();
    if (this.gateWords !== null) Atomics.store(this.gateWords, 0, this.acceptFull ? 1 : 0);
  }
  /**
   * Linux's sk_acceptq_is_full: more than the backlog already waits to be taken. A NIC's listener
   * keeps no accept queue: what it accepts goes to the host's, so the host's word ([0] of `gate`)
   * is its measure. Read as its own, a handshake ending at a NIC went into the host's queue past
   * the bound, which then reached about 2 x backlog + 1 (a full queue plus every half-open
   * connection the NICs held), where Linux holds one queue to backlog + 1.
   */
  get acceptFull(): boolean {
    if (this.gateWord >= 0 && this.gateWords !== null) return Atomics.load(this.gateWords, 0) !== 0;
    return this.queuedNow > this.backlog;
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.listeners.remove(this);
    this.listeners.released(this.ip);
  }
}

/**
 * The listening half of a TCP layer: its listeners by port, the SYN cookies it answers with when a
 * backlog is full, and the passive open (a SYN to a listener, or the ACK of a cookie).
 */
export class Listeners {
  private readonly byPort = new Map<number, Listener[]>();
  private readonly cookies: SynCookies;
  private readonly cookieOpts: CookieOptions = { mss: 0, wscale: -1, sackPermitted: false, ecn: false };

  constructor(private readonly layer: TcpLayer) {
    const addrs = layer.env.addrs;
    this.cookies = new SynCookies(layer.env.random, addrs && ((ip) => addrs.bytes(ip)));
  }

  has(port: number): boolean {
    return this.byPort.has(port);
  }

  /** See TcpHostEnv.yieldInput: a listener's accept queue filled. */
  yieldInput(): void {
    const env = this.layer.env;
    if (env.yieldInput === undefined) return;
    env.counters.inc('tcp.listen.full-yield');
    env.yieldInput();
  }

  /** The stack's clock, for a listener's gate (see Listener.pending). */
  now(): number {
    return this.layer.env.clock.now();
  }

  /**
   * The listener for this address and port: the one bound to the address, else a wildcard of its
   * family, else a dual-stack `::` one for an IPv4 address (as Linux with bindv6only off).
   */
  find(ip: number, port: number): Listener | null {
    const list = this.byPort.get(port);
    if (!list) return null;
    let any: Listener | null = null;
    const v6 = ip >= TWO_32;
    for (const l of list) {
      if (l.ip === ip) return l;
      if (l.ip === 0 && !v6) any = l;
      else if (l.ip === ANY6 && (v6 || !l.v6Only)) any ??= l;
    }
    return any;
  }

  /** @internal A listener let go of its address. */
  released(ip: number): void {
    this.layer.env.addrs?.release(ip);
  }

  listen(
    opts: { ip?: number; port: number; backlog?: number; options?: Partial<TcpCached>; v6Only?: boolean },
    cached: (options?: Partial<TcpCached>) => TcpCached,
    accept: (conn: TcpConnection) => boolean,
  ): Listener {
    if (!opts || typeof opts !== 'object') throw new InvalidArgumentError('listen: options required');
    const addrs = this.layer.env.addrs;
    // `::` names no address, so a layer with no table yet may take it: a LocalNic's engine answers
    // a dual-stack listener's SYNs before its first IPv6 trees bring it the host's table.
    const ip =
      opts.ip === undefined ? 0 : opts.ip === ANY6 ? ANY6 : checkAddress(opts.ip, 'ip', addrs !== undefined);
    const v6Only = opts.v6Only === true;
    const port = checkPort(opts.port, 'port');
    const backlog = opts.backlog ?? 511;
    if (!Number.isInteger(backlog) || backlog < 0) throw new InvalidArgumentError('listen: bad backlog');
    if (typeof accept !== 'function') throw new InvalidArgumentError('listen: accept must be a function');
    const options = cached(opts.options);
    const list = this.byPort.get(port) ?? [];
    for (const l of list) {
      if (endpointsOverlap(l.ip, l.v6Only, ip, v6Only))
        throw new AddressInUseError(`port ${port} is already listening`);
    }
    // The listener holds its address's handle (the caller keeps its own reference).
    addrs?.ref(ip);
    const l = new Listener(this, ip, v6Only, port, backlog, options, accept);
    list.push(l);
    this.byPort.set(port, list);
    return l;
  }

  /** A listener closed: it takes its half-open and not yet accepted connections with it. */
  remove(l: Listener): void {
    const list = this.byPort.get(l.port);
    if (list) {
      const i = list.indexOf(l);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this.byPort.delete(l.port);
    }
    for (const conn of this.layer.connections()) {
      if (conn.listener === l) conn.abort();
    }
  }

  closeAll(): void {
    for (const list of [...this.byPort.values()]) for (const l of [...list]) l.close();
  }

  /** A segment for a listener (no connection holds its tuple); `reopenIss` when it ends a TIME_WAIT. */
  input(
    l: Listener,
    ip: IpInfo,
    h: TcpHeader,
    buf: Uint8Array,
    pOff: number,
    pLen: number,
    reopenIss = -1,
  ): void {
    const layer = this.layer;
    const env = layer.env;
    const f = h.flags;
    if (f & TcpFlag.RST) return;
    if ((f & (TcpFlag.SYN | TcpFlag.FIN)) === (TcpFlag.SYN | TcpFlag.FIN)) {
      // No legitimate opener sets both; Linux discards it in LISTEN without an answer.
      env.counters.inc('drop.tcp.syn-fin');
      return;
    }
    if (f & TcpFlag.ACK) {
      // A NIC on another thread holds the tuple (NicEngine.givesWay passed this up: a half-open
      // connection of one member met the peer's ACK of another's SYN-ACK; or it waited in a
      // member's queue while another's handshake ended): Linux's lookup finds an established or
      // request sock before its listener, and never resets a connection one holds, nor makes a
      // second one from a cookie (found_dup_sk). Dropped: the owner gets the peer's next
      // segments, and a challenge ACK lost costs nothing.
      if (l.heldElsewhere?.(ip.dst, h.dstPort, ip.src, h.srcPort) === true) {
        env.counters.inc('tcp.listen.ack-held-elsewhere');
        return;
      }
      // Only after a recent overflow can an ACK answer a cookie; checking every stray ACK would
      // spend a hash on each and let a blind attacker try cookies at will (Linux does the same).
      const recent = env.clock.now() - l.lastOverflowAt < SYNCOOKIE_VALID_MS;
      if (!(f & TcpFlag.SYN) && recent && this.cookieAck(l, ip, h, buf, pOff, pLen)) return;
      // Counted apart: with accept-at-NIC, where the ACK of a tuple no owner holds ends up.
      env.counters.inc('tcp.rst.out.listen-ack');
      sendRstReply(layer, ip.src, ip.dst, h, pLen);
      return;
    }
    if (!(f & TcpFlag.SYN)) {
      env.counters.inc('drop.tcp.listen-no-syn');
      return;
    }
    if (l.heldElsewhere?.(ip.dst, h.dstPort, ip.src, h.srcPort) === true) {
      env.counters.inc('tcp.listen.syn-held-elsewhere');
      return;
    }
    if (l.acceptFull) {
      // Linux's tcp_conn_request drops a SYN while the accept queue is full (ListenOverflows),
      // cookies or not: the application is not taking what it has, and the peer will retry.
      env.counters.inc('tcp.listen.overflow');
      return;
    }
    const path = env.pathTo(ip.src, ip.dst);
    if (!path) {
      env.counters.inc('drop.tcp.no-route');
      return;
    }
    if (l.halfOpen >= l.backlog) {
      this.sendCookieUnlessHeld(l, ip, h, path);
      return;
    }
    // Past the connection or memory limit the SYN is dropped, as a full accept queue drops it:
    // a RST would tell the peer to give up, a drop lets it retry once there is room. (Linux has
    // no such refusal for tcp_mem; it lets in-window data go, tcp_try_rmem_schedule, and kills
    // orphans; refusing the newcomer is the one way to keep established connections whole.)
    if (!layer.admitNew()) return;
    const now = env.clock.now();
    const cached = layer.budget.sized(l.cached);
    const rings = l.ringsAtAccept
      ? { send: new ByteRing(0, cached.sndBufSize), recv: new ByteRing(0, cached.rcvBufSize) }
      : undefined;
    const conn = newConnection(layer, ip.dst, h.dstPort, ip.src, h.srcPort, cached, path, rings);
    const s = conn.state;
    const d = s.delegated;
    conn.listener = l;
    l.pending++;
    negotiateSynOptions(conn, h, now);
    ecnPassiveOpen(conn, f, ip.tos & IP_ECN_MASK);
    d.irs = h.seq;
    d.rcvNxt = seqAdd(h.seq, 1);
    d.rcvAdv = d.rcvNxt;
    d.lastAckSent = d.rcvNxt;
    d.iss = reopenIss >= 0 ? reopenIss : layer.isn.next(ip.dst, h.dstPort, ip.src, h.srcPort);
    d.sndUna = d.iss;
    d.sndNxt = seqAdd(d.iss, 1);
    d.sndMax = d.sndNxt;
    // Linux starts snd_sml at the ISS: no short segment is in flight.
    conn.state.soft.smallSentEnd = d.iss;
    d.sndWnd = h.window;
    d.maxSndWnd = h.window;
    d.sndWl1 = h.seq;
    d.sndWl2 = d.iss;
    d.state = TcpStateId.SYN_RECEIVED;
    // Published, then looked again (heldElsewhere): a NIC on another thread answering this
    // listener's SYNs publishes its half-open tuple before it answers and looks at ours after
    // (NicBornHooks.publish, .claimed), so of two that take the same SYN at once at least one sees
    // the other. The look before, alone, left a window between it and the publication here in
    // which both answered, with two sequence numbers. Seen: left to the other, unanswered. Not
    // published (its table full): the other side could not see it, so it is left unanswered too,
    // to the peer's resend (the safe way, as a doubtful read counts as held: OwnerTable.mayHold).
    // A NIC's listener reads the host's cookie flag (gate [2]) again after it too: the host raises
    // it before its last look (sendCookieUnlessHeld).
    const listed = l.onHalfOpen?.(conn, true);
    if (
      l.onHalfOpen !== null &&
      (listed === false ||
        l.heldElsewhere?.(ip.dst, h.dstPort, ip.src, h.srcPort) === true ||
        (l.gateWord >= 0 && l.gate !== null && Atomics.load(l.gate, 2) !== 0))
    ) {
      l.pending--;
      conn.listener = null;
      l.onHalfOpen(conn, false);
      env.counters.inc(listed === false ? 'tcp.listen.syn-unlisted' : 'tcp.listen.syn-held-late');
      return;
    }
    layer.link(conn);
    conn.stats.segmentsIn++;
    s.soft.rttSentAt = now;
    sendSyn(conn);
    d.rtxDeadline = now + d.rto;
    scheduleTimer(conn);
  }

  /**
   * The ACK of one of our cookies reached a half-open connection of `l` for the same tuple: the
   * peer's SYN got a cookie while the backlog was full, and its resend, once there was room, made
   * this half-open connection with another ISS. The peer took the cookie's SYN-ACK and is
   * established on it, so the ACK is unacceptable only to the half-open connection, whose RST
   * (RFC 9293 for SYN_RECEIVED) would reset a connection the peer holds (the likely cause, not
   * caught in a capture, of 14 of 5,000 downloads against the kernel reset with nothing received,
   * the last to connect, while serve's main thread was seconds behind its SYNs). Linux hands an ACK
   * its request sock refuses to the listener's cookie check (tcp_check_req, then
   * tcp_v4_cookie_check), which since 5.11 drops it in silence when that request sock holds the
   * tuple (the child collides with it in the established hash: found_dup_sk, commit 01770a166165):
   * the peer stalls until the request sock's SYN-ACKs give up (about 63 s), and then its next
   * segment opens the connection if the cookie is still valid, or draws the listener's RST. Here
   * the half-open connection goes and the cookie's takes its place at once, as Linux before 5.11
   * took the cookie: 5.11 closed a race of two CPUs each making a child for one tuple, and this
   * listener runs on one thread, so the half-open connection is retired first and the peer,
   * established on the cookie, is not stalled for a minute (a deliberate difference). False when the ACK is not one of our cookies: the half-open one answers it
   * with a RST, as Linux's listener does.
   */
  cookieOverHalfOpen(
    l: Listener,
    conn: TcpConnection,
    ip: IpInfo,
    h: TcpHeader,
    buf: Uint8Array,
    pOff: number,
    pLen: number,
  ): boolean {
    const now = this.layer.env.clock.now();
    if (now - l.lastOverflowAt >= SYNCOOKIE_VALID_MS) return false;
    // The cookie is checked against the peer's ISN the half-open connection holds (its SYN was the
    // cookie SYN's resend, with the same ISN), not against the segment's sequence number less one
    // as a listener must: the peer's first segment on the cookie need not be the one that arrives
    // first. Its request goes out right after its ACK, and the half-open connection's SYN-ACK,
    // out of window to it, draws a challenge ACK numbered past the request. Reaching the host
    // before the other two (they came up through a member whose queue was behind, or were lost at
    // a full TAP), it failed the check and drew the RST that reset the peer with nothing received:
    // the counters of 8 resets in a 5,000 connect burst, bad-ack twice each, then the cookie's
    // connection from the late ACK, whose answer the reset peer refused. Linux's cookie_v4_check
    // hashes seq - 1 too and would refuse it; the half-open connection holds the ISN it was made for.
    const d = conn.state.delegated;
    const ahead = seqDiff(h.seq, d.rcvNxt);
    if (ahead < 0 || ahead > cookieWindow(this.layer, l, conn.state.const.localMss, h.hasTimestamps))
      return false;
    if (this.cookies.check(ip.dst, h.dstPort, ip.src, h.srcPort, d.irs, seqSub(h.ack, 1), now) < 0)
      return false;
    // No new connection may start (cookieAck would drop the segment): the half-open connection
    // stays, as Linux's request sock stays when tcp_check_req cannot make the child, so the peer's
    // next segment finds the ISN again. Ended first, the next challenge ACK reached the listener
    // alone, whose check (seq - 1) failed, and its RST reset the peer. One less: it gives way.
    if (!this.layer.budget.admit(this.layer.liveCount - 1)) return true;
    this.layer.env.counters.inc('tcp.syncookies.over-half-open');
    const half = { irs: d.irs, tsRecent: d.tsRecent };
    terminate(conn, null, false);
    if (!this.cookieAck(l, ip, h, buf, pOff, pLen, half)) sendRstReply(this.layer, ip.src, ip.dst, h, pLen);
    return true;
  }

  /**
   * Backlog full: answer with a SYN cookie and keep no state (counter tcp.syncookies.sent), unless
   * a NIC on another thread took the SYN meanwhile.
   */
  private sendCookieUnlessHeld(l: Listener, ip: IpInfo, h: TcpHeader, path: PathState): void {
    const layer = this.layer;
    const env = layer.env;
    const now = env.clock.now();
    // Its NICs pass SYNs up from now on: a peer's SYN sent again must not get a second, different
    // SYN-ACK from one of them (the host keeps no state of a cookie to tell them).
    if (l.gate !== null) {
      Atomics.store(l.gate, 2, 1);
      // Raised, then looked again, as a half-open connection is published then looked at (input):
      // a worker that read [2] before it rose and published its half-open tuple after the look in
      // input would answer too. Its SYN-ACK, out of the window of a peer established on the
      // cookie, drew a challenge ACK past the peer's request, which made that connection give way
      // (NicEngine.givesWay) and reached a listener with no ISN for the cookie: its RST reset the
      // peer. The worker reads [2] after it publishes, so one of the two sees the other.
      if (l.heldElsewhere?.(ip.dst, h.dstPort, ip.src, h.srcPort) === true) {
        env.counters.inc('tcp.listen.syn-held-late');
        return;
      }
    }
    l.lastOverflowAt = now;
    env.counters.inc('tcp.syncookies.sent');
    const peerMss = h.mss > 0 ? h.mss : 536;
    const iss = this.cookies.make(ip.dst, h.dstPort, ip.src, h.srcPort, h.seq, peerMss, now);
    const t = layer.txHdr;
    resetTcpOptions(t);
    t.srcPort = h.dstPort;
    t.dstPort = h.srcPort;
    t.seq = iss;
    t.ack = seqAdd(h.seq, 1);
    t.flags = TcpFlag.SYN | TcpFlag.ACK;
    t.urgent = 0;
    t.mss = announcedMss(path);
    t.window = cookieWindow(layer, l, t.mss, h.hasTimestamps);
    if (h.hasTimestamps) {
      const peerWs = h.wscale >= 0 ? Math.min(h.wscale, 14) : -1;
      // ECN is agreed as for any SYN, and the echo of our TSval brings the agreement back (Linux's
      // cookie_init_timestamp); without timestamps there is nowhere to keep it, so no ECE.
      const ecn = ecnSynAgrees(layer, h.flags, ip.tos & IP_ECN_MASK);
      if (ecn) t.flags |= TcpFlag.ECE;
      t.hasTimestamps = true;
      t.tsVal = SynCookies.encodeTs(tsNow(now), peerWs, h.sackPermitted, ecn);
      t.tsEcr = h.tsVal;
      if (peerWs >= 0) t.wscale = wscaleFor(l.cached.rcvBufSize);
      t.sackPermitted = h.sackPermitted;
    }
    const off = env.ip.begin(path);
    const buf = env.ip.txBuf;
    const hl = encodeTcpHeader(t, buf, off);
    tcpChecksum(env, buf, off, hl, ip.dst, ip.src);
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
    half: { irs: number; tsRecent: number } | null = null,
  ): boolean {
    const layer = this.layer;
    const env = layer.env;
    const now = env.clock.now();
    const cookie = seqSub(h.ack, 1);
    const peerIsn = half === null ? seqSub(h.seq, 1) : half.irs;
    const mss = this.cookies.check(ip.dst, h.dstPort, ip.src, h.srcPort, peerIsn, cookie, now);
    if (mss < 0) {
      env.counters.inc('tcp.syncookies.failed');
      return false;
    }
    if (l.acceptFull) {
      // tcp_v4_syn_recv_sock: no room in the accept queue, the ACK is dropped (the peer resends it
      // with its data, or its next segment carries the cookie again).
      env.counters.inc('tcp.listen.overflow');
      return true;
    }
    const path = env.pathTo(ip.src, ip.dst);
    if (!path) return false;
    // Refused for the limits: dropped, not reset (see input). The cookie's connection keeps the
    // listener's buffer sizes, since its SYN-ACK already announced a window scale for them.
    if (!layer.admitNew()) return true;
    env.counters.inc('tcp.syncookies.ok');
    const o = this.cookieOpts;
    if (h.hasTimestamps) SynCookies.decodeTs(h.tsEcr, o);
    else {
      o.wscale = -1;
      o.sackPermitted = false;
      o.ecn = false;
    }
    const conn = newConnection(layer, ip.dst, h.dstPort, ip.src, h.srcPort, l.cached, path);
    const s = conn.state;
    const c = s.const;
    const d = s.delegated;
    c.remoteMss = mss;
    c.wsEnabled = o.wscale >= 0;
    c.sndWscale = c.wsEnabled ? o.wscale : 0;
    c.rcvWscale = c.wsEnabled ? conn.offeredWscale : 0;
    c.sackEnabled = o.sackPermitted;
    c.tsEnabled = h.hasTimestamps;
    // Linux's cookie_ecn_ok: the bit, and ECN not turned off since.
    ecnAgreed(conn, o.ecn && layer.ecn !== 0);
    if (h.hasTimestamps) {
      // A segment ahead of rcv.nxt may not set TS.Recent (RFC 7323 4.3): the request it overtook
      // carries an older TSval and would fail PAWS. The half-open connection's resent SYN gave one.
      d.tsRecent = half === null || h.seq === seqAdd(peerIsn, 1) ? h.tsVal : half.tsRecent;
      d.tsRecentAt = now;
    }
    d.iss = cookie;
    d.irs = peerIsn;
    d.sndUna = h.ack;
    d.sndNxt = h.ack;
    d.sndMax = h.ack;
    conn.state.soft.smallSentEnd = h.ack;
    // From the peer's ISN, not the segment: one ahead of it (see cookieOverHalfOpen) leaves a
    // hole that the segments it overtook, or the peer's resend, fill.
    const rcvNxt = seqAdd(peerIsn, 1);
    d.rcvNxt = rcvNxt;
    d.lastAckSent = rcvNxt;
    d.rcvAdv = seqAdd(rcvNxt, cookieWindow(layer, l, c.localMss, c.tsEnabled));
    d.sndWnd = h.window * 2 ** c.sndWscale;
    d.maxSndWnd = d.sndWnd;
    d.sndWl1 = rcvNxt;
    d.sndWl2 = h.ack;
    if (h.hasTimestamps) {
      // No send time was kept for the cookie's SYN-ACK, but its TSval comes back in the echo (too
      // early by the option bits, under 64 ms, as Linux's tcp_ack_update_rtt takes it). Without
      // a sample the connection starts on the 1 s initial RTO and no tail probe: a burst of
      // accepts (every connection of a 10,000-connection failover bench) then waits out a whole
      // second for each lost segment until its data is acknowledged.
      const rtt = seqDiff(tsNow(now), h.tsEcr);
      if (h.tsEcr !== 0 && rtt >= 0 && rtt <= 600_000) {
        rttSample(s, rtt);
        // RACK's minimum too, as the handshake's sample seeds it on the other paths (Linux's
        // tcp_update_rtt_min): with none, every retransmission SACKed (a tail probe of the
        // flight, a failover's resend) counts as its original's delivery, whose send time is
        // unknown (RackLog.take), and a loss below it waits for the RTO (bench/failover.ts,
        // reachability, 10,000 cookie connections: 89 ms after the SACK of the probe).
        conn.rack.noteRtt(rtt);
      }
    }
    layer.link(conn);
    establish(conn, now);
    if (!offerToListener(conn, l)) return true;
    // The ACK may carry data already; run it through the ordinary path.
    connInput(conn, h, buf, pOff, pLen);
    return true;
  }
}
