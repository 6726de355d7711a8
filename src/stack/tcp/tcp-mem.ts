import type { Counters } from '../../core/counters.ts';
import { InvalidArgumentError } from '../../core/errors.ts';
import type { ByteRing } from '../../state/byte-ring.ts';
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
