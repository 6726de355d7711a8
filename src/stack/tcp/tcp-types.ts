import type { Clock } from '../../core/clock.ts';
import type { Counters } from '../../core/counters.ts';
import type { ConnectionError } from '../../core/errors.ts';
import type { Random } from '../../core/random.ts';
import type { PathState } from '../../state/path-state.ts';
import type { AddressTable } from '../address-table.ts';
import type { IpSender } from '../ip-sender.ts';
import type { TcpConnection } from './tcp-connection.ts';

/**
 * What the TCP layer needs from the host it runs in. The host stack provides one; an offload
 * target provides another, so the same engine runs connections wherever they are owned.
 */
export interface TcpHostEnv {
  readonly clock: Clock;
  readonly random: Random;
  readonly ip: IpSender;
  readonly counters: Counters;
  /** The path to `remoteIp` (created on first use, shared afterwards), or null if unroutable. */
  pathTo(remoteIp: number, localIp?: number): PathState | null;
  /** True if `ip` is one of this host's addresses. */
  isLocal(ip: number): boolean;
  /**
   * The host's address handles, where IPv6 runs (the host stack): an address ≥ 2^32 is an IPv6
   * handle whose bytes are here. Absent on an engine that runs IPv4 connections only; a
   * LocalNic's engine is given the host's with its first IPv6 trees, so it is read where used.
   */
  readonly addrs?: AddressTable;
  /**
   * The host's ISN secret (16 bytes, isn.ts), shared by the host stack and every NIC it offloads
   * to: one ISN function per host. Absent: the layer draws its own from `random`.
   */
  readonly isnSecret?: Uint8Array;
  /**
   * Deliver, synchronously, the input waiting on this host's links now (Link.drain), so a loss
   * timer decides after the ACKs that arrived while the thread was away. True when every link the
   * host hears was read empty; false when some input may still wait (a link that cannot be read on
   * demand, a budget spent). Absent: none can be (the simulator, whose frames come as events).
   */
  drainInput?(): boolean;
  /**
   * Stop reading this host's links for the rest of the turn (Link.yieldRx): what is still queued
   * there is read after the work deferred so far, the application's accepts first. Absent: input
   * comes a frame per event (the simulator).
   */
  yieldInput?(): void;
  /**
   * Told of each connection whose timer fired, just before the timer's work runs (a delayed ACK,
   * a retransmission, a probe, the end of TIME_WAIT): what a timer changes needs no frame to
   * come in, and may send none (a link that refuses it). A NIC worker marks the connection so its
   * hard-state record is published after, as it does for each frame. Absent: nobody asks.
   */
  beforeTimer?(conn: TcpConnection): void;
}

/**
 * How a connection reports to whoever uses it (the socket facade). All calls happen from the
 * engine's processing, never re-entrantly from inside a user call such as write().
 */
/** A connection's four-tuple, as a key object (`TcpConnection.key`). */
export interface ConnTuple {
  readonly localIp: number;
  readonly localPort: number;
  readonly remoteIp: number;
  readonly remotePort: number;
}

export interface TcpUser {
  /** The handshake completed (for active and passive opens). */
  onConnected(): void;
  /** New in-order bytes are waiting in the receive buffer. */
  onReadable(): void;
  /** The send buffer has room again after having been full. */
  onWritable(): void;
  /** The peer's FIN arrived and every byte before it is in the receive buffer. */
  onRemoteEnd(): void;
  /** The connection is finished: null for an orderly close, otherwise why it failed. */
  onClosed(error: ConnectionError | null): void;
}

/**
 * How a connection that closed with no user attached ended: what its user would have been told
 * (`Nic.attachClosed`), so one attached late ends as it would have ended attached.
 */
export interface ConnectionEnd {
  /** The peer's FIN came before the close (onRemoteEnd): reads end at EOF, whatever closed it. */
  readonly remoteEnded: boolean;
  /** onClosed's argument: null for an orderly close, otherwise why it failed. */
  readonly error: ConnectionError | null;
}

/**
 * What the socket facade needs from whoever runs its connection now: a TcpConnection of the host
 * stack or of a NIC in the same thread, or a proxy for a connection on another thread. The socket
 * re-points to another handle when the connection moves.
 */
export interface ConnectionHandle {
  readonly localIp: number;
  readonly localPort: number;
  readonly remoteIp: number;
  readonly remotePort: number;
  /** Bytes waiting to be read. */
  readonly readableLength: number;
  /** Bytes in the send buffer not yet acknowledged. */
  readonly writableLength: number;
  /**
   * Everything queued has been sent, up to less than a segment: the sender waits for the writer,
   * not for a window. (On another thread: as of the latest onWritable.)
   */
  readonly sendDry: boolean;
  /**
   * The send ring's capacity once it grew with the connection, or was placed at the size a grow
   * would give (a worker's, whose writer's target would otherwise keep it at the placement's size:
   * TcpSocket's send target); absent or 0: not grown.
   */
  readonly sendGrown?: number;
  user: TcpUser | null;
  /**
   * Its owner let go of the connection (released its state to a transfer, or handed it on): this
   * handle no longer reaches it, and no event comes through it. Absent: never.
   */
  readonly letGo?: boolean;
  /** Queue bytes for sending; returns how many were taken (fewer when the buffer is full). */
  write(src: Uint8Array, off?: number, len?: number): number;
  /**
   * Report onWritable after the next acknowledgement of new data, even though the buffer has room:
   * for a writer that holds itself below the buffer's size (the socket's send target).
   */
  notifyOnAck(): void;
  read(dst: Uint8Array, off?: number, len?: number): number;
  shutdown(): void;
  close(): void;
  abort(): void;
  /**
   * The application is done with a connection the stack closed (its socket destroyed): the memory
   * charge its unread data kept goes (tcp-mem.ts, holdUnread). Absent: nothing is kept.
   */
  dropUnread?(): void;
  setNoDelay(on: boolean): void;
  setKeepAlive(on: boolean, idleMs?: number): void;
}
