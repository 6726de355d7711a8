import type { Timer } from '../../core/clock.ts';
import { type ConnectionError, InvalidArgumentError, InvalidStateError } from '../../core/errors.ts';
import type { TcpDelegated, TcpState } from '../../state/tcp-state.ts';
import { shapeSampleTcpState, TcpStateId, widenNumbers } from '../../state/tcp-state.ts';
import type { TcpHeader } from '../../wire/tcp.ts';
import { TWO_32 } from '../address-table.ts';
import { type CongestionControl, effectiveMss } from './congestion.ts';
import type { TableEntry } from './conn-table.ts';
import type { OutputScheduler, OutputSender } from './output-scheduler.ts';
import { RackLog } from './rack.ts';
import { seqDiff } from './seq.ts';
import { ackAfterRead } from './tcp-ack-mode.ts';
import type { EcnMode } from './tcp-ecn.ts';
import { deliverEvents, terminate } from './tcp-events.ts';
import { maybeGrowSendRing, oooBytesOf, roomAtLimit } from './tcp-mem.ts';
import { sendRst, tcpOutput } from './tcp-output.ts';
import { onConnectionTimer, scheduleTimer } from './tcp-timers.ts';
import type { ConnectionHandle, ConnTuple, TcpHostEnv, TcpUser } from './tcp-types.ts';

export { connError, deliverEvents, reportClosed, TcpEvent, terminate } from './tcp-events.ts';

/** What the engine functions need from the layer that runs a connection. */
export interface TcpEngine {
  readonly env: TcpHostEnv;
  /** Scratch header for every segment this layer builds. */
  readonly txHdr: TcpHeader;
  congestion(conn: TcpConnection): CongestionControl;
  /** Remove the connection from demultiplexing (it reached CLOSED). */
  unlink(conn: TcpConnection): void;
  /** Global RFC 5961 challenge-ACK budget: true if one more may be sent now. */
  takeChallengeAck(now: number): boolean;
  /**
   * The connection is about to wait in TIME_WAIT: false when too many already do (it then
   * closes at once, like Linux past tcp_max_tw_buckets). Absent: no limit.
   */
  admitTimeWait?(conn: TcpConnection): boolean;
  /**
   * The per-turn output budget of the layer's connections (output-scheduler.ts; see
   * sendWindowed). Absent: no limit.
   */
  readonly output?: OutputScheduler<TcpConnection>;
  /**
   * The stack's buffer memory is at its limit (tcp-mem.ts): rings must not grow, out-of-order
   * data is not kept. Absent: no limit.
   */
  readonly memFull?: boolean;
  /**
   * The stack's buffer memory is low enough for send rings to grow (tcp-mem.ts,
   * TcpBudget.expandable). Absent: they may.
   */
  readonly memExpandable?: boolean;
  /** A ring of this connection may have changed size: account for it. */
  memCharge?(conn: TcpConnection): void;
  /**
   * A closed connection's unread data was read (or, `drop`, dropped): its charge follows
   * (tcp-mem.ts, holdUnread).
   */
  memHeld?(conn: TcpConnection, drop: boolean): void;
  /**
   * Give the connection a send ring of `capacity` (sendRingTarget said its writer is held by the
   * ring). The switch may come later (a worker asks the thread that writes the ring); absent: the
   * ring never grows past what it was made with.
   */
  readonly growSendRing?: (conn: TcpConnection, capacity: number) => void;
  /**
   * growSendRing's switch comes a round trip later (a worker NIC): ask for the ring slow start is
   * heading for, not the one today's cwnd needs (tcp-mem.ts, sendRingTarget's `ahead`).
   */
  readonly growAhead?: boolean;
  /**
   * Receive buffers are fixed: a connection offers its whole rcvBufSize and is not autotuned
   * (tcp-window.ts), as a Linux socket whose SO_RCVBUF was set. Absent or false: autotuned.
   */
  readonly fixedRcvBuf?: boolean;
  /** ECN (tcp-ecn.ts), as Linux's sysctl tcp_ecn: 0 off, 1 ask and agree, 2 agree only. Absent: 2. */
  readonly ecn?: EcnMode;
}

/** The part of a listener a half-open connection refers to. */
export interface ListenerRef {
  /** Half-open connections (SYN_RECEIVED) this listener owns. */
  pending: number;
  readonly closed: boolean;
  readonly accept: (conn: TcpConnection) => boolean;
  /** Told of each half-open connection it makes (`open`) and of its end as one (not `open`). */
  readonly onHalfOpen: ((conn: TcpConnection, open: boolean) => void) | null;
}

/** A connection's counts since it began; they live in its delegated state. */
export type TcpConnectionStats = Pick<
  TcpDelegated,
  'segmentsIn' | 'segmentsOut' | 'retransmits' | 'bytesIn' | 'bytesOut' | 'resetsIn' | 'resetsOut'
>;

/**
 * One TCP connection: the state object plus the small amount of glue an owner needs to run it (the
 * user, one timer, counters). Protocol logic lives in the engine functions (tcp-input, tcp-output,
 * tcp-timers), which work on `state`, so another owner can pick the state up and continue.
 */
export class TcpConnection implements ConnectionHandle, OutputSender {
  readonly state: TcpState;
  user: TcpUser | null = null;
  /** Counts since the connection began: kept in its state, so they carry across moves. */
  get stats(): TcpConnectionStats {
    return this.state.delegated;
  }
  /**
   * @internal The layer that runs it now: re-pointed when a live connection is handed to another
   * layer of the same thread (TcpLayer.attach), with its rings, timer, RACK log and SACK board.
   */
  engine: TcpEngine;
  // The fields a hand-over reads and writes of every connection it moves (the checks, the
  // tables, the memory charge, the key, the output turn), declared together so that they share a cache line or
  // two: spread over the object they were a cache miss each in a move of 10,000 (V8 lays a
  // class's fields out in the order they are declared).
  /** @internal True while linked in the layer's demultiplexing table. */
  linked = false;
  /**
   * @internal Its entry in the four-tuple table (conn-table.ts): kept while the connection is
   * handed to another layer whose table shares the entries, which then runs it in the same entry.
   */
  tableEntry: TableEntry | null = null;
  /**
   * @internal Its state was handed to another owner (TcpLayer.release): this object must not touch
   * the state any more, or two owners would run one connection.
   */
  released = false;

  /** ConnectionHandle.letGo: released. */
  get letGo(): boolean {
    return this.released;
  }
  /** @internal Bytes of buffers this connection was last charged for (tcp-mem.ts). */
  memCharged = 0;
  private tuple: ConnTuple | null = null;
  /**
   * @internal Its addresses are IPv6 handles (`state.const.remoteIp` ≥ 2^32): what the tables
   * and a hand-over ask of the tuple per connection, read here rather than from the state's
   * const part, another object (and cache miss) away.
   */
  ipv6: boolean;
  /** @internal The output scheduler's turn this connection last sent in, and the bytes it sent then. */
  outputTurn = -1;
  outputUsed = 0;
  /** @internal Listener that created this passive open, until it is accepted. */
  listener: ListenerRef | null = null;
  /**
   * @internal The last batch of an offload that named it (the offload layer's count, positive; or
   * a NIC engine's request, negative): a list that names it again is found with no set of the
   * batch's connections.
   */
  namedIn = 0;
  /**
   * The connection's one timer, made when it is first armed: an idle connection (no data in
   * flight, no keepalive, no TIME_WAIT) has no deadline, and ten thousand of them handed to a NIC
   * they had never run on made ten thousand timers (three objects each) that nothing armed.
   */
  private wake: Timer | null = null;
  /** @internal TcpEvent bits not yet delivered. */
  events = 0;
  /** @internal Why the connection closed (null: orderly). */
  closeError: ConnectionError | null = null;
  /** @internal onClosed has been queued or delivered; nothing is delivered after it. */
  finished = false;
  /** @internal A write() came back short: report onWritable when room appears. */
  wantWritable = false;
  /** @internal Report onWritable at the next acknowledgement of new data (notifyOnAck). */
  wantAcked = false;
  /** @internal Last ICMP soft error (RFC 1122 4.2.3.9), reported instead of ETIMEDOUT. */
  softError: ConnectionError | null = null;
  /** @internal Our SYN had to go out again (no RTT sample from the handshake, Karn). */
  synRetransmitted = false;
  /**
   * @internal Sequence number of the last segment the path layer refused (its transmit queue was
   * full, or its link down): that segment never left this host. -1 when none since the last reset.
   */
  refusedSeq = -1;
  /** @internal Retransmission timeouts in a row whose retransmission never left this host. */
  refusedRtos = 0;
  /**
   * @internal Echoed timestamps older than this TSval give no RTT sample (-1: no floor). Set when a
   * failover hands the connection over: an echo of a segment sent before the hand-over measures
   * the outage as well as the path.
   */
  rttEchoFloor = -1;
  /**
   * @internal The sequence number of the octet a prod's probe sent again below snd.una (-1: none
   * out): the peer's D-SACK of it reports our probe, not a needless retransmission.
   */
  probeOctet = -1;
  /**
   * @internal A duplicate we received, [dsackStart, dsackEnd), for the next ACK's D-SACK block
   * (RFC 2883; none when equal). Soft, and sent within the turn that noted it or with the next
   * delayed ACK, so it stays out of the state a transfer carries.
   */
  dsackStart = 0;
  dsackEnd = 0;
  /**
   * @internal When each range in flight was last sent (RACK, RFC 8985). Soft: a new owner starts
   * with an empty log and detects losses by the RFC 6675 rules until its own sends are logged.
   */
  readonly rack = new RackLog();
  /**
   * @internal The last ACK was a partial ACK in recovery that an original answered while a
   * retransmission is still out (Linux's tcp_try_undo_partial returning early): the output it
   * draws sends new data only, no retransmission.
   */
  holdRetransmits = false;
  /**
   * @internal Waiting for the next turn to send the rest. The scheduler's alone (set as it lists
   * the connection, cleared as that list is served; a move or a revive leaves it), so the object
   * is in one list at most, however it moves.
   */
  outputQueued = false;
  /** @internal Offered window-scale shift while the handshake is under way. */
  offeredWscale = 0;
  /**
   * @internal The size of the last small in-order segment that could teach the peer's segment
   * size (Linux's icsk_ack.last_seg_size; tcp-ack-mode.ts): two alike in a row set soft.rcvMss.
   * Not moved with the state: a new owner waits for one more such segment to learn it.
   */
  lastSegSize = 0;
  /** @internal Unread bytes this connection, closed, is still charged for (tcp-mem.ts, holdUnread). */
  unreadHeld = 0;
  /** @internal Bytes held in `state.soft.ooo`, kept as the queue changes (tcp-input.ts, tcp-mem.ts). */
  oooBytes: number;
  /** @internal The deadline the timer was last armed for. */
  timerTarget = Number.POSITIVE_INFINITY;
  /** @internal The timer fired late and let one turn of input go first (onConnectionTimer). */
  timerYielded = false;
  private deferred = false;

  constructor(engine: TcpEngine, state: TcpState) {
    this.engine = engine;
    this.state = state;
    this.ipv6 = state.const.remoteIp >= TWO_32;
    this.oooBytes = oooBytesOf(state.soft.ooo);
    this.rack.bind(state.soft);
  }

  /** @internal The timer, made now if it was not yet (to arm it: disarmTimer and timerArmed make none). */
  get timer(): Timer {
    let t = this.wake;
    if (t === null) {
      t = this.engine.env.clock.createTimer(() => onConnectionTimer(this));
      this.wake = t;
      this.engine.env.counters.inc('tcp.timers.made');
    }
    return t;
  }

  /** @internal */
  get timerArmed(): boolean {
    return this.wake?.armed === true;
  }

  /** @internal */
  disarmTimer(): void {
    this.wake?.disarm();
  }

  get localIp(): number {
    return this.state.const.localIp;
  }
  get localPort(): number {
    return this.state.const.localPort;
  }
  get remoteIp(): number {
    return this.state.const.remoteIp;
  }
  get remotePort(): number {
    return this.state.const.remotePort;
  }

  /**
   * Its four-tuple as a key object, made once per connection object (the state's tuple never
   * changes) and frozen: a transfer's report and the host's record of an offloaded connection name
   * it by this one, not by an object made per move.
   */
  get key(): ConnTuple {
    let t = this.tuple;
    if (t === null) {
      const c = this.state.const;
      t = Object.freeze({
        localIp: c.localIp,
        localPort: c.localPort,
        remoteIp: c.remoteIp,
        remotePort: c.remotePort,
      });
      this.tuple = t;
    }
    return t;
  }

  /** Bytes in the send buffer not yet acknowledged. */
  get writableLength(): number {
    return this.state.delegated.sendBuffer.length;
  }
  /** Bytes waiting in the receive buffer. */
  get readableLength(): number {
    return this.state.delegated.recvBuffer.length;
  }

  get sendDry(): boolean {
    // Less than a segment left: the sender holds a small tail back (Nagle, SWS avoidance) and
    // waits for the writer as surely as with nothing left.
    const d = this.state.delegated;
    return d.sendBuffer.length - seqDiff(d.sndNxt, d.sndUna) < effectiveMss(this.state);
  }

  notifyOnAck(): void {
    this.wantAcked = true;
  }

  write(src: Uint8Array, off = 0, len = src.length - off): number {
    if (!Number.isInteger(off) || !Number.isInteger(len) || off < 0 || len < 0 || off + len > src.length) {
      throw new InvalidArgumentError('write: range outside the source buffer');
    }
    if (this.released) throw new InvalidStateError('write: the connection has moved to another owner');
    const d = this.state.delegated;
    if (d.finQueued || d.state === TcpStateId.CLOSED || d.state === TcpStateId.TIME_WAIT) {
      throw new InvalidStateError('write after shutdown or close');
    }
    if (d.state >= TcpStateId.FIN_WAIT_1 && d.state !== TcpStateId.CLOSE_WAIT) {
      throw new InvalidStateError('write after shutdown or close');
    }
    const ring = d.sendBuffer;
    // At the memory limit a write only fills what the ring already has, or its floor (Linux blocks
    // a writer in sk_stream_wait_memory); ACKs free room in it, and onWritable follows.
    const room = this.engine.memFull === true ? roomAtLimit(ring) : len;
    let n = ring.write(src, off, Math.min(len, room));
    // A writer held by a ring smaller than the flight: the ring grows (as Linux's sndbuf) and
    // takes the rest at once.
    if (n < len && maybeGrowSendRing(this)) n += d.sendBuffer.write(src, off + n, Math.min(len, room) - n);
    if (n > 0) this.engine.memCharge?.(this);
    if (n < len) this.wantWritable = true;
    if (n > 0 && isSynchronized(d.state)) {
      tcpOutput(this);
      scheduleTimer(this);
    }
    return n;
  }

  read(dst: Uint8Array, off = 0, len = dst.length - off): number {
    if (!Number.isInteger(off) || !Number.isInteger(len) || off < 0 || len < 0 || off + len > dst.length) {
      throw new InvalidArgumentError('read: range outside the destination buffer');
    }
    if (this.released) throw new InvalidStateError('read: the connection has moved to another owner');
    const s = this.state;
    const d = s.delegated;
    const n = d.recvBuffer.read(dst, off, len);
    if (n > 0 && this.unreadHeld > 0) this.engine.memHeld?.(this, false);
    if (n > 0 && canReceive(d.state) && !d.finReceived && ackAfterRead(s, this.engine.env.clock.now())) {
      s.soft.ackNow = true;
      tcpOutput(this);
      scheduleTimer(this);
    }
    return n;
  }

  shutdown(): void {
    if (this.released) return;
    const d = this.state.delegated;
    if (d.finQueued || d.state === TcpStateId.CLOSED) return;
    d.finQueued = true;
    if (d.state === TcpStateId.ESTABLISHED) d.state = TcpStateId.FIN_WAIT_1;
    else if (d.state === TcpStateId.CLOSE_WAIT) d.state = TcpStateId.LAST_ACK;
    // SYN_SENT / SYN_RECEIVED: the FIN follows once the handshake completes.
    if (isSynchronized(d.state)) {
      tcpOutput(this);
      scheduleTimer(this);
    }
  }

  close(): void {
    if (this.released) return;
    const s = this.state;
    const d = s.delegated;
    if (d.state === TcpStateId.CLOSED || d.readClosed) {
      this.dropUnread();
      return;
    }
    d.readClosed = true;
    if (d.state === TcpStateId.SYN_SENT) {
      terminate(this, null, true);
      this.deferDelivery();
      return;
    }
    if (d.recvBuffer.length > 0 && isSynchronized(d.state) && d.state !== TcpStateId.TIME_WAIT) {
      // RFC 2525 2.17: closing with unread data tells the peer the data was lost, with a RST.
      sendRst(this);
      terminate(this, null, true);
      this.deferDelivery();
      return;
    }
    if (d.state === TcpStateId.FIN_WAIT_2) {
      d.timeWaitDeadline = this.engine.env.clock.now() + s.cached.timeWaitMs;
      scheduleTimer(this);
    }
    this.shutdown();
  }

  abort(): void {
    if (this.released) return;
    const d = this.state.delegated;
    if (d.state === TcpStateId.CLOSED) {
      this.dropUnread();
      return;
    }
    if (
      (isSynchronized(d.state) || d.state === TcpStateId.SYN_RECEIVED) &&
      d.state !== TcpStateId.TIME_WAIT
    ) {
      sendRst(this);
    }
    this.finished = true;
    terminate(this, null, false);
  }

  /**
   * The application is done with this closed connection (close(2) on it, or its socket
   * destroyed): the memory charge its unread data kept goes (tcp-mem.ts, holdUnread).
   */
  dropUnread(): void {
    if (this.released || this.state.delegated.state !== TcpStateId.CLOSED) return;
    if (this.unreadHeld > 0) this.engine.memHeld?.(this, true);
  }

  setNoDelay(on: boolean): void {
    if (this.released) return;
    this.state.cached.noDelay = on;
    if (on && isSynchronized(this.state.delegated.state)) {
      tcpOutput(this);
      scheduleTimer(this);
    }
  }

  setKeepAlive(on: boolean, idleMs?: number): void {
    if (this.released) return;
    const s = this.state;
    if (idleMs !== undefined) {
      if (!Number.isFinite(idleMs) || idleMs <= 0)
        throw new InvalidArgumentError('keepalive idle must be > 0');
      s.cached.keepIdleMs = idleMs;
    }
    s.cached.keepAlive = on;
    armKeepalive(this);
    scheduleTimer(this);
  }

  /**
   * @internal As a connection just made over the same state (the constructor's defaults), for a
   * state this object released coming back to the same layer (Handover.adopt): the object, its
   * timer and RACK log are kept rather than made anew per move, which lived until the next move
   * and so reached the old generation, where the collector paid for them again. The timer was
   * disarmed at the release.
   */
  revive(): void {
    this.user = null;
    this.listener = null;
    this.namedIn = 0;
    this.events = 0;
    this.closeError = null;
    this.finished = false;
    this.wantWritable = false;
    this.wantAcked = false;
    this.softError = null;
    this.synRetransmitted = false;
    this.refusedSeq = -1;
    this.refusedRtos = 0;
    this.rttEchoFloor = -1;
    this.probeOctet = -1;
    this.dsackStart = this.dsackEnd = 0;
    this.holdRetransmits = false;
    this.rack.reset();
    // The output fields stay: the object may still be in a scheduler's list from before it left
    // (outputQueued is the scheduler's), and on the same layer its share of the turn is spent.
    this.offeredWscale = 0;
    this.lastSegSize = 0;
    this.memCharged = 0;
    this.unreadHeld = 0;
    this.oooBytes = oooBytesOf(this.state.soft.ooo);
    this.linked = false;
    // The table finds the entry of its tuple again (a placeholder's, or a new one).
    this.tableEntry = null;
    this.ipv6 = this.state.const.remoteIp >= TWO_32;
    this.timerTarget = Number.POSITIVE_INFINITY;
    this.timerYielded = false;
    this.released = false;
  }

  /** @internal Deliver queued events later (used from user calls, never re-entrantly). */
  deferDelivery(): void {
    if (this.deferred || this.events === 0) return;
    this.deferred = true;
    this.engine.env.clock.defer(() => {
      this.deferred = false;
      deliverEvents(this);
    });
  }
}

/** The handshake is complete (ESTABLISHED or any later state). */
export function isSynchronized(st: number): boolean {
  return st >= TcpStateId.ESTABLISHED;
}

/** States in which arriving data is accepted. */
export function canReceive(st: number): boolean {
  return st === TcpStateId.ESTABLISHED || st === TcpStateId.FIN_WAIT_1 || st === TcpStateId.FIN_WAIT_2;
}

export function armKeepalive(conn: TcpConnection): void {
  const s = conn.state;
  const d = s.delegated;
  if (s.cached.keepAlive && (d.state === TcpStateId.ESTABLISHED || d.state === TcpStateId.CLOSE_WAIT)) {
    d.keepaliveDeadline = Math.max(d.lastRecvAt, d.lastSendAt) + s.cached.keepIdleMs;
    d.keepaliveProbes = 0;
  } else {
    d.keepaliveDeadline = Number.POSITIVE_INFINITY;
  }
}

/**
 * A connection object, and its RACK log, born on the layout a fraction in any number field leaves
 * it (see widenTcpState in tcp-state.ts): V8 migrates every object of a deprecated layout at its
 * next store, and with integer sequence numbers and times in the class's initial values, the first
 * fractions came inside a failover (a crash's rebuild of 10,000: every revived connection migrated
 * in `adopt`, charged). A sample made once, before any connection.
 */
function widenTcpConnection(): TcpConnection {
  const conn = new TcpConnection(null as unknown as TcpEngine, shapeSampleTcpState());
  widenNumbers(conn, SMALL_CONNECTION);
  widenNumbers(conn.rack, SMALL_RACK);
  return conn;
}
/**
 * Number fields of a connection object and its RACK log that hold small integers only (see
 * widenNumbers), but for `probeOctet`: a sequence number (past 2^31 half the time) when set, once
 * per prod's window probe, and -1 otherwise; that one store boxes its number, as widenNumbers allows.
 */
const SMALL_CONNECTION: ReadonlySet<string> = new Set([
  'events',
  'refusedRtos',
  'probeOctet',
  'outputUsed',
  'offeredWscale',
  'lastSegSize',
  'memCharged',
  'unreadHeld',
  'oooBytes',
  'namedIn',
]);
const SMALL_RACK: ReadonlySet<string> = new Set(['mss']);
/** Kept, not dropped: a collection would drop the widened layouts with it (see WIDENED_TCP_STATE). */
export const WIDENED_TCP_CONNECTION: TcpConnection = widenTcpConnection();
