import type { Counters } from '../../core/counters.ts';
import { InvalidArgumentError } from '../../core/errors.ts';
import { ByteRing } from '../../state/byte-ring.ts';
import type { OooSegment, TcpCached } from '../../state/tcp-state.ts';
import type { TcpConnection } from './tcp-connection.ts';

/**
 * Buffers a connection made under memory pressure gets, each way: Linux clamps the window of a
 * socket under pressure to four segments (tcp_select_window, rcv_ssthresh ≤ 4 advmss); four
 * 4 KiB pages is that at a 1500-byte MTU with room for the headers.
 */
export const PRESSURE_BUF_SIZE = 16 << 10;

/**
 * What a ring may still take at the memory limit: it does not grow, except up to
 * PRESSURE_BUF_SIZE, the floor every connection keeps (Linux lets a socket below tcp_rmem[0] /
 * tcp_wmem[0] allocate whatever the global state), so an established connection is slowed, never
 * stopped.
 */
export function roomAtLimit(ring: ByteRing): number {
  return Math.max(0, Math.max(ring.capacity, PRESSURE_BUF_SIZE) - ring.length);
}

/** Pressure starts at two thirds of the limit: Linux's default tcp_mem[1] / tcp_mem[2] ratio. */
const PRESSURE_FRACTION = 2 / 3;
/**
 * Send rings stop growing at half the limit: Linux's tcp_should_expand_sndbuf refuses from
 * tcp_mem[0] on, half of tcp_mem[2] by default (tcp_init_mem: 3/4 and 3/2 of the same figure), so
 * the buffers of connections already running cannot push the stack into pressure by growing.
 */
const EXPAND_FRACTION = 1 / 2;

export interface TcpLimits {
  /**
   * Connections this layer runs at once, TIME_WAIT excluded (those have their own cap,
   * `maxTimeWait`). A SYN past it is dropped, a connect() fails with ENOBUFS.
   */
  maxConnections?: number;
  /**
   * Bytes of connection buffers (send and receive rings, out-of-order data) this layer may hold,
   * like Linux's tcp_mem[2]. Past two thirds of it (pressure) new connections get small buffers;
   * past it rings stop growing, out-of-order queues are pruned and new connections are refused.
   */
  memBytes?: number;
}

/**
 * Bytes a connection's buffers hold now: what its rings allocated, and its out-of-order data (a
 * running sum, `TcpConnection.oooBytes`: this is read at every write and segment, and the queue
 * may hold hundreds of segments).
 */
export function connBytes(conn: TcpConnection): number {
  const d = conn.state.delegated;
  return d.sendBuffer.capacity + d.recvBuffer.capacity + conn.oooBytes;
}

/** Bytes of out-of-order data in a queue, by walking it (once, when a connection takes a state). */
export function oooBytesOf(ooo: readonly OooSegment[]): number {
  let n = 0;
  for (let i = 0; i < ooo.length; i++) n += ooo[i]!.data.length;
  return n;
}

function checkLimit(v: number | undefined, name: string): number {
  if (v === undefined) return Number.POSITIVE_INFINITY;
  if (v !== Number.POSITIVE_INFINITY && (!Number.isInteger(v) || v < 1))
    throw new InvalidArgumentError(`${name} must be a positive integer or Infinity, got ${String(v)}`);
  return v;
}

/**
 * The stack-wide budget of one TCP layer (Linux's tcp_mem and its memory-pressure state, plus a
 * connection count). Usage is what the connections' buffers allocated, re-read for a connection
 * whenever it may have changed (a segment processed, a write taken, linked or unlinked), so it
 * costs nothing per idle connection.
 *
 * Counters: `tcp.mem.pressure` (times pressure began), `tcp.mem.shrunk` (connections given small
 * buffers), `tcp.mem.limit` (new connections refused for memory), `tcp.mem.ooo-pruned` (out-of-order
 * queues dropped), `tcp.conn.limit` (new connections refused for the count).
 */
export class TcpBudget {
  maxConnections: number;
  memBytes: number;
  /** Bytes the connections' buffers hold now. */
  used = 0;
  private pressured = false;

  constructor(
    private readonly counters: Counters,
    limits: TcpLimits = {},
  ) {
    this.maxConnections = checkLimit(limits.maxConnections, 'maxConnections');
    this.memBytes = checkLimit(limits.memBytes, 'memBytes');
  }

  /** Change the limits of a running layer (those given; a bad value changes nothing). */
  set(limits: TcpLimits): void {
    const max =
      limits.maxConnections === undefined
        ? this.maxConnections
        : checkLimit(limits.maxConnections, 'maxConnections');
    const mem = limits.memBytes === undefined ? this.memBytes : checkLimit(limits.memBytes, 'memBytes');
    this.maxConnections = max;
    this.memBytes = mem;
    this.note();
  }

  get pressureBytes(): number {
    return this.memBytes * PRESSURE_FRACTION;
  }

  /** Between pressure and the limit: new connections get small buffers. */
  get underPressure(): boolean {
    return this.used >= this.pressureBytes;
  }

  /** Below half the limit: a send ring may grow (sendRingTarget). */
  get expandable(): boolean {
    return this.used < this.memBytes * EXPAND_FRACTION;
  }

  /** At the limit: nothing may grow, nothing new is admitted. */
  get full(): boolean {
    return this.used >= this.memBytes;
  }

  charge(conn: TcpConnection): void {
    const now = connBytes(conn);
    this.used += now - conn.memCharged;
    conn.memCharged = now;
    this.note();
  }

  /**
   * With `carry`, the connection keeps the figure it was charged, for the layer that takes it next
   * in the same turn (`carry`): its buffers have not changed, and reading them again cost a cache
   * miss or two per connection handed over.
   */
  discharge(conn: TcpConnection, carry = false): void {
    this.used -= conn.memCharged;
    if (!carry) conn.memCharged = 0;
    this.note();
  }

  /**
   * A closed connection's unread data stays charged until it is read or dropped (`unreadHeld`),
   * as Linux keeps a socket's queued skbs charged to tcp_mem until recvmsg frees them or close(2)
   * purges them: a paused application holding reset connections would otherwise hold memory the
   * limit no longer sees. Called at the close (after `discharge`), at each read and at the drop.
   */
  holdUnread(conn: TcpConnection, drop = false): void {
    const now = drop ? 0 : conn.state.delegated.recvBuffer.length;
    this.used += now - conn.unreadHeld;
    conn.unreadHeld = now;
    this.note();
  }

  /** Charge what a connection handed over in this turn was charged where it ran (`discharge`). */
  carry(conn: TcpConnection): void {
    this.used += conn.memCharged;
    this.note();
  }

  /**
   * Whether one more connection may start, `live` running now. The refusal is counted; the caller
   * drops the SYN (or fails the connect).
   */
  admit(live: number): boolean {
    if (live >= this.maxConnections) {
      this.counters.inc('tcp.conn.limit');
      return false;
    }
    if (this.full) {
      this.counters.inc('tcp.mem.limit');
      return false;
    }
    return true;
  }

  /** The settings a connection admitted now gets: under pressure, small buffers. */
  sized(cached: TcpCached): TcpCached {
    if (!this.underPressure) return cached;
    if (cached.rcvBufSize <= PRESSURE_BUF_SIZE && cached.sndBufSize <= PRESSURE_BUF_SIZE) return cached;
    this.counters.inc('tcp.mem.shrunk');
    return {
      ...cached,
      rcvBufSize: Math.min(cached.rcvBufSize, PRESSURE_BUF_SIZE),
      sndBufSize: Math.min(cached.sndBufSize, PRESSURE_BUF_SIZE),
    };
  }

  /**
   * Over the limit, a connection that receives drops its out-of-order queue (Linux's
   * tcp_prune_ofo_queue): those bytes were never acknowledged, only SACKed, and RFC 2018 lets a
   * receiver renege; the sender resends them. Delivered data is never touched.
   */
  prune(conn: TcpConnection): void {
    const soft = conn.state.soft;
    if (soft.ooo.length === 0 || !this.full) return;
    soft.ooo.length = 0;
    conn.oooBytes = 0;
    soft.recvSackRecent.length = 0;
    this.counters.inc('tcp.mem.ooo-pruned');
    this.charge(conn);
  }

  private note(): void {
    const p = this.underPressure;
    if (p === this.pressured) return;
    this.pressured = p;
    if (p) this.counters.inc('tcp.mem.pressure');
  }
}

// ---- a send ring that grows with the connection ------------------------------------------------

/** Grown rings are whole pages: a ring is fresh memory, touched a page at a time. */
const RING_GROW_UNIT = 4096;

/**
 * The send ring capacity a connection whose writer is blocked on a full ring should have, or 0 to
 * keep the one it has. Linux grows sk_sndbuf the same way (tcp_new_space, tcp_sndbuf_expand): only
 * when the writer found no room (here `wantWritable`) and the sender is not held by cwnd or the
 * peer, to about twice what can be in flight, bounded by tcp_wmem[2] (here sndBufSize). A ring that
 * holds no more than the flight is sent whole; once the peer acknowledges it the next bytes wait
 * for the writer, which for a worker NIC is a round trip through the main thread (BENCHMARKS.md,
 * "What a team's stall waits for"); twice the flight lets the writer's refill overlap the flight.
 * The flight is the smaller of cwnd and the largest window the peer offered: a ring larger than
 * twice what the sender can have out is memory touched for nothing. Nothing grows once the
 * stack's buffers are past half their limit (TcpBudget.expandable, Linux's tcp_mem[0]); a worker
 * NIC's host also holds its rings to a budget of its own (hard-state.ts, ringGrowLimit).
 *
 * With `ahead` (TcpEngine.growAhead: the grow is a round trip, not a copy in this turn), a sender
 * in slow start counts the flight it is heading for (the window, or ssthresh if lower) instead of
 * today's cwnd: Linux grows in the ACK's own turn, when cwnd has just opened, but a worker's grow
 * asked then lands after the old ring has drained, and the connection waits for the main thread
 * (p50 0.5-0.8 s under load, BENCHMARKS.md "A send ring that grows with the connection"). Asked at
 * the writer's first full ring, the round trip overlaps the slow start that drains it.
 */
export function sendRingTarget(conn: TcpConnection, ahead = false): number {
  const s = conn.state;
  const d = s.delegated;
  const cap = d.sendBuffer.maxCapacity;
  const limit = s.cached.sndBufSize;
  if (cap >= limit || conn.engine.memFull === true || conn.engine.memExpandable === false) return 0;
  const wnd = Math.max(d.sndWnd, d.maxSndWnd);
  const cwnd = ahead && d.cwnd < d.ssthresh ? Math.max(d.cwnd, d.ssthresh) : d.cwnd;
  const flight = Math.min(cwnd, wnd);
  if (2 * flight <= cap) return 0;
  const want = Math.min(limit, Math.ceil((2 * flight) / RING_GROW_UNIT) * RING_GROW_UNIT);
  return want > cap ? want : 0;
}

/** Ask the connection's engine for a larger send ring if sendRingTarget wants one; true if it has one now. */
export function maybeGrowSendRing(conn: TcpConnection): boolean {
  const grow = conn.engine.growSendRing;
  if (grow === undefined) return false;
  const cap = sendRingTarget(conn, conn.engine.growAhead === true);
  if (cap === 0) return false;
  const before = conn.state.delegated.sendBuffer;
  grow(conn, cap);
  return conn.state.delegated.sendBuffer !== before;
}

/**
 * Grow a send ring whose producer and consumer are this thread (the host, a LocalNic): nothing
 * runs between the copy and the switch, so the unacknowledged and unsent bytes move whole and
 * snd.una still names the new ring's first byte. The new ring is thread-local and grows lazily
 * (ByteRing doubles), so its memory is what the connection fills. A worker's rings are shared
 * with the main thread, which writes them: it grows them by a handshake instead (nic-worker.ts).
 */
export function growSendRingHere(conn: TcpConnection, capacity: number): void {
  const d = conn.state.delegated;
  const old = d.sendBuffer;
  if (old.maxCapacity >= capacity) return;
  const next = new ByteRing(Math.max(old.length, Math.min(capacity, old.capacity)), capacity);
  next.grown = true;
  if (old.length > 0) next.write(old.toArray());
  d.sendBuffer = next;
  conn.engine.memCharge?.(conn);
  conn.engine.env.counters.inc('tcp.sndbuf.grown');
}
