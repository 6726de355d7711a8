/**
 * A connection's notifications to its user and its move to CLOSED. Kept apart from tcp-connection
 * so that tcp-timers, which tcp-connection imports, can use them without an import cycle.
 */
import { ConnectionError } from '../../core/errors.ts';
import { TcpStateId } from '../../state/tcp-state.ts';
import type { TcpConnection } from './tcp-connection.ts';

/** Pending user notifications, delivered together once the state is consistent. */
export const TcpEvent = {
  CONNECTED: 1,
  READABLE: 2,
  REMOTE_END: 4,
  WRITABLE: 8,
  CLOSED: 16,
} as const;

/**
 * Move to CLOSED: stop every timer, free the 4-tuple, and (if `notify`) queue onClosed with `error`.
 */
export function terminate(conn: TcpConnection, error: ConnectionError | null, notify: boolean): void {
  const d = conn.state.delegated;
  const inf = Number.POSITIVE_INFINITY;
  const l = conn.listener;
  if (d.state === TcpStateId.SYN_RECEIVED && l) {
    l.pending--;
    conn.listener = null;
    l.onHalfOpen?.(conn, false);
  }
  d.state = TcpStateId.CLOSED;
  d.rtxDeadline = inf;
  d.persistDeadline = inf;
  d.keepaliveDeadline = inf;
  d.timeWaitDeadline = inf;
  conn.state.soft.delayedAckDeadline = inf;
  conn.disarmTimer();
  conn.engine.unlink(conn);
  // Nothing is sent again: an emptied ring's memory goes back for the next connection's grow
  // (byte-ring.ts, the pool), as a closed Linux socket's pages go back to their allocator. A ring
  // with bytes left (unread data, a reset's unsent) keeps them.
  d.sendBuffer.release();
  d.recvBuffer.release();
  if (notify) reportClosed(conn, error);
}

/** Queue the one onClosed notification. */
export function reportClosed(conn: TcpConnection, error: ConnectionError | null): void {
  if (conn.finished) return;
  conn.finished = true;
  conn.closeError = error;
  conn.events |= TcpEvent.CLOSED;
}

export function connError(errno: string, message: string): ConnectionError {
  return new ConnectionError(errno, message);
}

/** Run the user callbacks for every queued event, in a fixed order. */
export function deliverEvents(conn: TcpConnection): void {
  if (conn.released) {
    // Its state went to another owner (or was kept for salvage when its NIC crashed): that owner
    // tells the user from now on, and a user called back here (onWritable, say) would reach an
    // object that refuses every call. A delivery queued before the release lands here.
    conn.events = 0;
    return;
  }
  while (conn.events !== 0) {
    const ev = conn.events;
    conn.events = 0;
    const u = conn.user;
    if (!u) {
      // Nobody to tell yet (a passive open before accept): keep only the close, which matters later.
      continue;
    }
    if (ev & TcpEvent.CONNECTED) u.onConnected();
    if (ev & TcpEvent.READABLE) u.onReadable();
    if (ev & TcpEvent.REMOTE_END) u.onRemoteEnd();
    if (ev & TcpEvent.WRITABLE) u.onWritable();
    if (ev & TcpEvent.CLOSED) u.onClosed(conn.closeError);
  }
}
