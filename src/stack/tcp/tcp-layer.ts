import { ConnectionError, InvalidStateError } from '../../core/errors.ts';
import { DEFAULT_TCP_CACHED, type TcpCached, type TcpState, TcpStateId } from '../../state/tcp-state.ts';
import type { DecodeError } from '../../wire/decode-error.ts';
import { createIpv4Header, decodeIpv4, IpProto } from '../../wire/ipv4.ts';
import { createTcpHeader, decodeTcp, TcpFlag, type TcpHeader } from '../../wire/tcp.ts';
import { TWO_32 } from '../address-table.ts';
import type { IcmpErrorInfo, IpInfo } from '../ip-sender.ts';
import { type CongestionControl, congestionControl } from './congestion.ts';
import { ConnTable, type Forward, type TableEntry } from './conn-table.ts';
import { IsnGenerator } from './isn.ts';
import { OutputScheduler } from './output-scheduler.ts';
import { seqAdd, seqGeq, seqGt, seqLt } from './seq.ts';
import { connError, deliverEvents, type TcpConnection, type TcpEngine, terminate } from './tcp-connection.ts';
import { kick, rewind } from './tcp-drive.ts';
import { DEFAULT_ECN_MODE, type EcnMode, IP_ECN_MASK } from './tcp-ecn.ts';
import { type AdoptOptions, Handover } from './tcp-handover.ts';
import { connInput } from './tcp-input.ts';
import { Listener, Listeners, type TcpListener } from './tcp-listen.ts';
import { growSendRingHere, TcpBudget, type TcpLimits } from './tcp-mem.ts';
import { type ConnectOptions, openConnection } from './tcp-open.ts';
import { mergeTcpOptions } from './tcp-options.ts';
import { CHALLENGE_ACKS_GLOBAL, sendRstReply } from './tcp-output.ts';
import type { TcpHostEnv, TcpUser } from './tcp-types.ts';

export type { AdoptOptions } from './tcp-handover.ts';
export type { TcpListener } from './tcp-listen.ts';
export type { TcpLimits } from './tcp-mem.ts';
export { mergeTcpOptions } from './tcp-options.ts';

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

/**
 * The TCP layer of one host (or one offload target), after gVisor's split of its transport layer:
 * this class demultiplexes segments, answers ICMP errors and closed ports, and owns the lifecycle
 * (the TIME_WAIT budget, close). Its parts: the one four-tuple table of connections and
 * placeholders (`conn-table.ts`), listening with SYN cookies (`tcp-listen.ts`), the active open
 * (`tcp-open.ts`), hand-over between owners (`tcp-handover.ts`), per-socket options
 * (`tcp-options.ts`). NICs drive the connections they run through `tcp-drive.ts`.
 */
export class TcpLayer implements TcpEngine {
  readonly env: TcpHostEnv;
  readonly txHdr: TcpHeader = createTcpHeader();
  private readonly rxHdr: TcpHeader = createTcpHeader();
  private readonly defaults: TcpCached;
  /** @internal The four-tuple table; its parts reach it through the layer. */
  readonly table = new ConnTable();
  /** @internal */
  readonly listeners: Listeners;
  /** @internal RFC 6528 initial sequence numbers, shared by the active and the passive open. */
  readonly isn: IsnGenerator;
  private readonly handover: Handover;
  private challengeStart = 0;
  private challengeCount = 0;
  private challengeBudget = CHALLENGE_ACKS_GLOBAL;
  private readonly pktHdr = createIpv4Header();
  private readonly injectInfo: IpInfo = { src: 0, dst: 0, ttl: 0, tos: 0, ifIndex: -1 };
  /**
   * Called (synchronously, from the engine's processing) when a connection leaves the table because
   * it closed; not when it is released to another owner.
   */
  onClosed: ((conn: TcpConnection) => void) | null = null;
  /** The per-turn output budget of this layer's connections (output-scheduler.ts). */
  readonly output: OutputScheduler<TcpConnection>;

  /** The stack-wide connection and buffer-memory limits (tcp-mem.ts). */
  readonly budget: TcpBudget;

  constructor(env: TcpHostEnv, defaults?: Partial<TcpCached>, limits?: TcpLimits) {
    this.env = env;
    this.budget = new TcpBudget(env.counters, limits);
    this.defaults = mergeTcpOptions(DEFAULT_TCP_CACHED, defaults);
    // Read at each call: a LocalNic's engine is given the host's table after it starts (with its
    // first IPv6 trees), and a SYN it answers then must get the ISN the host gives the tuple.
    this.isn = new IsnGenerator(env.clock, env.isnSecret ?? env.random.fill(new Uint8Array(16)), (ip) =>
      env.addrs!.bytes(ip),
    );
    this.listeners = new Listeners(this);
    this.handover = new Handover(this, this.table);
    const clock = env.clock;
    // A connection cut short by its budget may since have closed or moved to another owner. One
    // that moved to another layer of this thread while listed here was not listed there (it stays
    // in one list, output-scheduler.ts): resumed here, it sends on its new layer's budget.
    this.output = new OutputScheduler<TcpConnection>(
      (fn) => clock.defer(fn),
      (conn) => {
        if (conn.linked && !conn.released) kick(conn);
      },
    );
  }

  /** Number of live connections (TIME_WAIT included). */
  get size(): number {
    return this.table.size;
  }

  /**
   * See TcpEngine.fixedRcvBuf: set before connections open (it counts at the end of the handshake).
   * The layer's own switch; a socket locks its connections by naming rcvBufSize (TcpCached.rcvBufLocked).
   */
  fixedRcvBuf = false;

  /**
   * See TcpEngine.ecn (Linux's sysctl tcp_ecn): read at each handshake. A NIC's own layer keeps
   * the default: it answers SYNs (accept-at-NIC) but opens nothing.
   */
  ecn: EcnMode = DEFAULT_ECN_MODE;

  /**
   * Like Linux's TCP small queues: bytes one connection may send per turn of the event loop, the
   * rest in the next turn, after everyone else's (output-scheduler.ts). Infinity: off.
   */
  get outputBudget(): number {
    return this.output.budget;
  }

  set outputBudget(bytes: number) {
    this.output.budget = bytes;
  }

  /**
   * Bytes all of the layer's connections together may send per turn, with `outputBudget` on (the
   * rest in later turns, in the same round robin; OutputScheduler.turnBudget). Infinity: off.
   */
  get outputTurnBudget(): number {
    return this.output.turnBudget;
  }

  set outputTurnBudget(bytes: number) {
    this.output.turnBudget = bytes;
  }

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
    return this.table.lookup(localIp, localPort, remoteIp, remotePort);
  }

  /** The connection this layer runs under `conn`'s four-tuple (`conn` itself, another, or none). */
  lookupOf(conn: TcpConnection): TcpConnection | undefined {
    return this.table.lookupOf(conn);
  }

  /**
   * @internal A connection starts running here; `carried`: handed over in this turn by a layer
   * that kept its memory charge on it (`unlinkQuiet`).
   */
  link(conn: TcpConnection, carried = false): void {
    this.table.add(conn);
    conn.linked = true;
    // The table's keys are the handles: they must not be reused while the connection is here.
    if (conn.ipv6 && this.env.addrs) {
      const c = conn.state.const;
      this.env.addrs.ref(c.remoteIp);
      this.env.addrs.ref(c.localIp);
    }
    if (carried) this.budget.carry(conn);
    else this.budget.charge(conn);
  }

  /**
   * Connections that count against `maxConnections`: those running here and those this stack
   * handed to a NIC (their placeholders forward to it until the NIC reports the close), TIME_WAIT
   * excluded (it has its own cap).
   */
  get liveCount(): number {
    return this.table.size + this.table.heldSize - this.timeWaiting.size;
  }

  /** @internal May one more connection start here? A refusal is counted (tcp.conn.limit, tcp.mem.limit). */
  admitNew(): boolean {
    return this.budget.admit(this.liveCount);
  }

  /**
   * How a send ring grows (tcp-mem.ts, sendRingTarget): here, in this thread, which writes the ring
   * as well as sends from it. A worker NIC, whose rings the main thread writes, puts its handshake
   * in its place.
   */
  growSendRing: (conn: TcpConnection, capacity: number) => void = growSendRingHere;
  /** The grow above is a round trip (a worker NIC's): ask ahead of slow start (sendRingTarget). */
  growAhead = false;

  get memFull(): boolean {
    return this.budget.full;
  }

  get memExpandable(): boolean {
    return this.budget.expandable;
  }

  memCharge(conn: TcpConnection): void {
    if (conn.linked) this.budget.charge(conn);
  }

  /**
   * A closed connection's unread data stays charged until read or dropped (TcpBudget.holdUnread).
   * Off where the application reads the rings without this layer's connections (a worker NIC).
   */
  holdUnread = true;

  memHeld(conn: TcpConnection, drop: boolean): void {
    this.budget.holdUnread(conn, drop);
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
    // Closed, not handed over: what the application has not read yet stays charged (holdUnread).
    if (this.holdUnread && conn.state.delegated.recvBuffer.length > 0) this.budget.holdUnread(conn);
    this.onClosed?.(conn);
  }

  /**
   * @internal Out of the table without telling anyone (a hand-over, not a close); `carry`: the
   * connection keeps its memory charge for the layer that links it next in this turn.
   */
  unlinkQuiet(conn: TcpConnection, carry = false): void {
    this.budget.discharge(conn, carry);
    this.timeWaiting.delete(conn);
    conn.linked = false;
    this.table.remove(conn);
    if (conn.ipv6 && this.env.addrs) {
      const c = conn.state.const;
      this.env.addrs.release(c.remoteIp);
      this.env.addrs.release(c.localIp);
    }
  }

  connections(): Iterable<TcpConnection> {
    return this.table.connections();
  }

  input(ip: IpInfo, buf: Uint8Array, off: number, len: number): void {
    const env = this.env;
    // Segments still reach a closed layer other than through its stack's frames (those a transfer
    // held, replayed after the move): with nothing left to own them, each would draw a RST, or a
    // SYN-ACK from a listener, out of a stack that closed.
    if (this.closed) {
      env.counters.inc('drop.tcp.closed');
      return;
    }
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
    // IPv6 handles (≥ 2^32) pass: the IPv6 layer took only unicast; `>>> 0` would cut them.
    const src = ip.src < TWO_32 ? ip.src >>> 0 : ip.src;
    if (
      src < TWO_32 &&
      (src === 0 ||
        src === 0xffffffff ||
        src >>> 28 === 14 ||
        ip.dst >>> 28 === 14 ||
        ip.dst >>> 0 === 0xffffffff)
    ) {
      // TCP is unicast only (RFC 1122 4.2.3.10).
      env.counters.inc('drop.tcp.bad-address');
      return;
    }
    const pOff = off + h.headerLength;
    const pLen = len - h.headerLength;
    const conn = this.table.lookup(ip.dst, h.dstPort, src, h.srcPort) ?? null;
    const held = conn === null ? this.table.placeholder(ip.dst, h.dstPort, src, h.srcPort) : undefined;
    if (held !== undefined) {
      this.handover.hold(held, ip, buf, off, len);
      return;
    }
    let reopenIss = -1;
    if (conn) {
      const l = conn.listener;
      if (
        l instanceof Listener &&
        l.acceptFull &&
        (h.flags & (TcpFlag.ACK | TcpFlag.SYN | TcpFlag.RST)) === TcpFlag.ACK &&
        conn.state.delegated.state === TcpStateId.SYN_RECEIVED
      ) {
        // The handshake's last ACK with the accept queue full: Linux (tcp_abort_on_overflow off)
        // drops it and keeps the half-open connection; our SYN-ACK goes out again on its timer and
        // the peer's next ACK may find room.
        env.counters.inc('tcp.listen.overflow');
        return;
      }
      if (
        l instanceof Listener &&
        conn.state.delegated.state === TcpStateId.SYN_RECEIVED &&
        (h.flags & (TcpFlag.ACK | TcpFlag.SYN | TcpFlag.RST)) === TcpFlag.ACK &&
        h.ack !== seqAdd(conn.state.delegated.iss, 1) &&
        this.listeners.cookieOverHalfOpen(l, conn, ip, h, buf, pOff, pLen)
      )
        return;
      // A SYN ends TIME_WAIT only when a listener will take it (Linux TCP_TW_SYN); otherwise the
      // TIME_WAIT connection answers it as any other segment.
      const tl =
        conn.state.delegated.state === TcpStateId.TIME_WAIT && this.timeWaitReopen(conn, h)
          ? this.listeners.find(ip.dst, h.dstPort)
          : null;
      if (!tl) {
        connInput(conn, h, buf, pOff, pLen, ip.tos & IP_ECN_MASK);
        if (conn.linked) {
          this.budget.prune(conn);
          this.budget.charge(conn);
        }
        return;
      }
      env.counters.inc('tcp.time-wait.reopened');
      // The new incarnation's sequence space starts clear above the old one, so stray segments
      // of the old connection cannot be taken for the new one's (Linux: tw_snd_nxt + 65535 + 2).
      reopenIss = seqAdd(conn.state.delegated.sndMax, 65537);
      terminate(conn, null, false);
    }
    const l = this.listeners.find(ip.dst, h.dstPort);
    if (!l) {
      env.counters.inc('drop.tcp.no-listener');
      // A bare ACK for a tuple we hold nothing for: most often the late duplicate of an ACK that
      // already closed the connection (LAST_ACK), which Linux answers with a RST as we do.
      if (h.flags === TcpFlag.ACK && pLen === 0) env.counters.inc('tcp.rst.out.stray-ack');
      sendRstReply(this, src, ip.dst, h, pLen);
      return;
    }
    this.listeners.input(l, ip, h, buf, pOff, pLen, reopenIss);
  }

  /** RFC 6191: a new SYN may take over a TIME_WAIT 4-tuple if it is clearly from a new incarnation. */
  private timeWaitReopen(conn: TcpConnection, h: TcpHeader): boolean {
    if ((h.flags & (TcpFlag.SYN | TcpFlag.ACK | TcpFlag.RST)) !== TcpFlag.SYN) return false;
    const s = conn.state;
    if (s.const.tsEnabled && h.hasTimestamps) return seqGt(h.tsVal, s.delegated.tsRecent);
    return seqGt(h.seq, s.delegated.rcvNxt);
  }

  /**
   * A socket's settings; one that names its receive buffer locks it (TcpCached.rcvBufLocked), and
   * settings merged before (a NIC's listener takes its host listener's) say it themselves.
   */
  private readonly cached = (options?: Partial<TcpCached>): TcpCached => {
    const c = mergeTcpOptions(this.defaults, options);
    c.rcvBufLocked = options?.rcvBufLocked ?? options?.rcvBufSize !== undefined;
    return c;
  };

  /** Refused on a closed layer: no SYN leaves, and no timer starts that nothing will stop. */
  connect(opts: ConnectOptions, user: TcpUser): TcpConnection {
    if (this.closed) throw new ConnectionError('ENETDOWN', 'connect: the stack is closed');
    return openConnection(this, opts, this.cached, user);
  }

  listen(
    opts: { ip?: number; port: number; backlog?: number; options?: Partial<TcpCached>; v6Only?: boolean },
    accept: (conn: TcpConnection) => boolean,
  ): TcpListener {
    // close() closed the listeners it had; one opened after would answer SYNs on a closed stack.
    if (this.closed) throw new InvalidStateError('listen: the stack is closed');
    return this.listeners.listen(opts, this.cached, accept);
  }

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

  /**
   * ICMP error about one of our segments (RFC 1122 4.2.3.9, RFC 5927, RFC 5461). Only errors quoting
   * a sequence number we have in flight are believed.
   */
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
      // rather than after a timeout. As Linux's tcp_non_congestion_loss_retransmit, that is a loss
      // episode with no cut to the window and nothing to undo: until everything sent before the
      // drop is ACKed no loss probe goes (the resends probe), nor does a fast recovery start.
      if (!s.soft.inRecovery && seqGt(d.sndMax, s.soft.recoveryPoint)) {
        s.soft.recoveryPoint = d.sndMax;
        s.soft.undoArmed = false;
      }
      // A probe already due would go anyway when this came from a loss timer's drain (it reads
      // deadlines after the drain): a copy of the tail next to its resend. Linux's resend re-arms
      // the one timer the probe was pending in.
      s.soft.tlpDeadline = Number.POSITIVE_INFINITY;
      rewind(s);
      kick(conn);
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

  // ---- hand-over (tcp-handover.ts) --------------------------------------------------------------
  // These verbs stay on the layer, as one-line delegations, on purpose: their callers (the transfer
  // protocol, rebuild, the NIC engine, LocalNic) hold a layer, a host's or a NIC's, as the one
  // owner of its connections, and the freeze/release/adopt sequence works on that layer's table.
  // Handing out the `Handover` would make its split from the layer (which parts demultiplex, which
  // move connections) part of the contract those layers depend on, and give them a second object
  // that must always be the one belonging to the layer they mean.

  /** A connection or a placeholder holds this 4-tuple. */
  owns(localIp: number, localPort: number, remoteIp: number, remotePort: number): boolean {
    const t = this.table;
    return (
      t.lookup(localIp, localPort, remoteIp, remotePort) !== undefined ||
      t.placeholder(localIp, localPort, remoteIp, remotePort) !== undefined
    );
  }

  adopt(state: TcpState, user: TcpUser | null, opts: AdoptOptions = {}): TcpConnection {
    const conn = this.handover.adopt(state, user, opts);
    if (this.closed) conn.abort();
    return conn;
  }

  /** Hand `conn`'s state to another owner (`crash`: this one died, and sends nothing more). */
  release(conn: TcpConnection, crash = false): TcpState {
    return this.handover.release(conn, crash);
  }

  /**
   * Hand a live connection to another layer of this thread (with `attach` there, same turn).
   * `batched`: the caller counts it (`countHandovers`).
   */
  detach(conn: TcpConnection, forward: Forward | null = null, batched = false): void {
    this.handover.detach(conn, forward, batched);
  }

  /** Count `detached` and `attached` connections of a batch handed with `batched` at once. */
  countHandovers(detached: number, attached: number): void {
    if (detached > 0) this.env.counters.inc('tcp.detached', detached);
    if (attached > 0) this.env.counters.inc('tcp.attached', attached);
  }

  /** Run a connection another layer of this thread detached (the same object, timer and all). */
  attach(conn: TcpConnection, opts: AdoptOptions = {}): void {
    this.handover.attach(conn, opts);
    if (this.closed) conn.abort();
  }

  freeze(localIp: number, localPort: number, remoteIp: number, remotePort: number): void {
    this.handover.freeze(localIp, localPort, remoteIp, remotePort);
  }

  forwardTo(localIp: number, localPort: number, remoteIp: number, remotePort: number, fn: Forward): void {
    this.handover.forwardTo(localIp, localPort, remoteIp, remotePort, fn);
  }

  /**
   * `freeze` and `forwardTo` given the host table's entry a transfer carries from its first lookup
   * (ConnTable.tagEntry): the placeholder is read from it when it holds it, else looked up.
   */
  freezeIn(at: TableEntry, localIp: number, localPort: number, remoteIp: number, remotePort: number): void {
    this.handover.freezeIn(at, localIp, localPort, remoteIp, remotePort);
  }

  forwardIn(
    at: TableEntry,
    localIp: number,
    localPort: number,
    remoteIp: number,
    remotePort: number,
    fn: Forward,
  ): void {
    this.handover.forwardIn(at, localIp, localPort, remoteIp, remotePort, fn);
  }

  /** `forwardTo` for the tuple of `conn`, which another layer of this thread runs now. */
  forwardOf(conn: TcpConnection, fn: Forward): void {
    this.handover.forwardOf(conn, fn);
  }

  isFrozen(localIp: number, localPort: number, remoteIp: number, remotePort: number): boolean {
    return this.table.placeholder(localIp, localPort, remoteIp, remotePort) !== undefined;
  }

  takeQueued(localIp: number, localPort: number, remoteIp: number, remotePort: number): Uint8Array[] {
    return this.handover.takeQueued(localIp, localPort, remoteIp, remotePort);
  }

  dropFrozen(localIp: number, localPort: number, remoteIp: number, remotePort: number): void {
    this.handover.dropFrozen(localIp, localPort, remoteIp, remotePort);
  }

  /** `takeQueued` of `conn`'s tuple, found from the connection's table entry when it can be. */
  takeQueuedOf(conn: TcpConnection): Uint8Array[] {
    return this.handover.takeQueuedOf(conn);
  }

  /** `dropFrozen` of `conn`'s tuple, found from the connection's table entry when it can be. */
  dropFrozenOf(conn: TcpConnection): void {
    this.handover.dropFrozenOf(conn);
  }

  get frozenSize(): number {
    return this.table.heldSize;
  }

  /**
   * A whole IPv4 packet carrying a TCP segment (held by a placeholder, or forwarded by another
   * owner): run it through `input` as if it had just arrived.
   */
  inputPacket(pkt: Uint8Array): void {
    if (pkt.length >= 40 && pkt[0]! >>> 4 === 6) {
      this.inputPacket6(pkt);
      return;
    }
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

  /**
   * An IPv6 packet built by a placeholder (`Handover.hold`) or forwarded by another owner in this
   * process: its checksum was verified where it first arrived, and both addresses are held by
   * the connection or placeholder it is for, so an address this table does not know means it is
   * not for us.
   */
  private inputPacket6(pkt: Uint8Array): void {
    const addrs = this.env.addrs;
    const len = (pkt[4]! << 8) | pkt[5]!;
    const dst = addrs ? addrs.find(pkt, 24) : -1;
    const src = dst < 0 ? -1 : addrs!.find(pkt, 8);
    if (src < 0 || pkt[6] !== IpProto.TCP || 40 + len > pkt.length) {
      this.env.counters.inc('drop.tcp.bad-forwarded');
      return;
    }
    const info = this.injectInfo;
    info.src = src;
    info.dst = dst;
    info.ttl = pkt[7]!;
    info.tos = ((pkt[0]! & 0x0f) << 4) | (pkt[1]! >>> 4);
    info.l4ChecksumOk = true;
    this.input(info, pkt, 40, len);
    info.l4ChecksumOk = false;
  }

  /**
   * Set by close(): a connection handed to the layer after it is aborted there at once, as those
   * it ran at the close were. A transfer still settling when its stack closes (a failover that
   * rebuilds a dead NIC's connections in the host) would otherwise leave connections whose timers
   * retransmit into the closed stack for minutes, and keep the process alive all that time.
   */
  private closed = false;

  /** Abort every connection and listener and stop all timers, those of any handed over later too. */
  close(): void {
    this.closed = true;
    this.listeners.closeAll();
    for (const conn of this.connections()) conn.abort();
  }
}
