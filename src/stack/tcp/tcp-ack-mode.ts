import { FIRST_DATA_PENDING, MAX_QUICK_ACKS } from '../../state/tcp-state.ts';
import { seqDiff } from './seq.ts';
import type { TcpConnection } from './tcp-connection.ts';

/**
 * When a receiver's ACK goes at once and when it may wait, as Linux decides it (the kernel is the
 * reference; RFC 1122 4.2.3.2 and RFC 5681 4.2 only bound the delay: at most 500 ms, and every
 * second full-sized segment ACKed).
 *
 * Linux sends every ACK of new data at once while it is in quick-ACK mode (icsk_ack.quick, a count
 * of ACKs, in net/ipv4/tcp_input.c): from the first data of a connection, after data came again
 * that it had already ACKed (its ACK was lost or late: DelayedACKLost), and after a silence longer
 * than the RTO. A sender in slow start, or one recovering from a loss, then hears of each segment
 * without waiting for a delayed-ACK timer. The count is the receive window last offered in pairs
 * of segments, at least 2 and at most 16 (TCP_MAX_QUICKACKS).
 *
 * Not followed here: Linux also enters the mode on data into a shut window with an empty receive
 * queue (here a window is shut by unread data, and a segment into it is refused whole by the
 * acceptance test, as by Linux's tcp_sequence, before that point), and adds one quick ACK whenever its
 * receive window grows (tcp_grow_window), which while the window opens has it ACK every segment;
 * Chimney offers its whole buffer from the start, so there is no such phase to follow.
 *
 * A connection that answers data within the delayed-ACK time is interactive (pingpong mode,
 * tcp_event_data_sent; net.ipv4.tcp_pingpong_thresh, 1 by default): its ACKs wait to ride on
 * its answers, quick-ACK mode or not. It is no longer interactive once a delayed ACK had to go
 * alone (tcp_delack_timer_handler) or quick-ACK mode is entered again.
 *
 * The mode is part of the connection's state (TcpState's soft part, codec version 8): a connection
 * moved between the host and a NIC delays its ACKs as it would have where it was. Only a rebuild
 * from the hard state, which has no soft part, starts without it, past its start.
 */

/**
 * tcp_incr_quickack: the receive window last offered in pairs of full segments (at least 2, at
 * most `max`), unless more quick ACKs are already owed.
 */
function incrQuickAcks(conn: TcpConnection, max: number): void {
  const s = conn.state;
  const d = s.delegated;
  let q = Math.floor(seqDiff(d.rcvAdv, d.lastAckSent) / (2 * s.const.localMss));
  if (q <= 0) q = 2;
  if (q > max) q = max;
  if (q > conn.state.soft.quickAcks) conn.state.soft.quickAcks = q;
}

/**
 * tcp_enter_quickack_mode: data came again that we had ACKed. ACK at once from here on,
 * interactive or not.
 */
export function enterQuickAck(conn: TcpConnection): void {
  incrQuickAcks(conn, MAX_QUICK_ACKS);
  conn.state.soft.pingpong = false;
}

/** tcp_in_quickack_mode: the ACK of new data goes at once. */
export function inQuickAck(conn: TcpConnection): boolean {
  return conn.state.soft.quickAcks > 0 && !conn.state.soft.pingpong;
}

/**
 * tcp_event_data_recv: new in-order data arrived at `now`. The connection's first data starts
 * quick-ACK mode, and so does data after a silence longer than the RTO (the sender, idle that
 * long, restarts from a small window).
 */
export function dataArrived(conn: TcpConnection, now: number): void {
  if (conn.state.soft.quickAcks === FIRST_DATA_PENDING) {
    conn.state.soft.quickAcks = 0;
    incrQuickAcks(conn, MAX_QUICK_ACKS);
  } else if (
    conn.state.soft.lastDataAt !== -1 &&
    now - conn.state.soft.lastDataAt > conn.state.delegated.rto
  ) {
    // -1 alone is "not known": a time from an older clock (a worker thread's starts at its spawn)
    // arrives below 0 and is a long silence, not none.
    incrQuickAcks(conn, MAX_QUICK_ACKS);
  }
  conn.state.soft.lastDataAt = now;
}

/**
 * tcp_event_data_sent: new data went out within the delayed-ACK time of the last data in (or of
 * the handshake, as Linux's lrcvtime starts there): an answer, so the connection is interactive.
 */
export function dataSent(conn: TcpConnection, now: number): void {
  const soft = conn.state.soft;
  if (soft.lastDataAt !== -1 && now - soft.lastDataAt < conn.state.cached.delayedAckMs) soft.pingpong = true;
}

/** tcp_dec_quickack_mode: an ACK of new data went out (a window update or a duplicate's answer is none). */
export function ackSent(conn: TcpConnection): void {
  if (conn.state.soft.quickAcks > 0) conn.state.soft.quickAcks--;
}

/**
 * tcp_fin, on a FIN that takes the connection from ESTABLISHED to CLOSE_WAIT: the application will
 * likely close in turn, so the connection becomes interactive and the ACK waits to ride on our own
 * FIN. Called before the ACK of the segment that carries the FIN is decided, as Linux decides it
 * only after tcp_fin (tcp_ack_snd_check): surprisingly, even a FIN that rides on a connection's
 * first data, which quick-ACK mode would ACK at once, waits, since pingpong overrules the mode.
 */
export function peerClosing(conn: TcpConnection): void {
  conn.state.soft.pingpong = true;
}

/**
 * Whether the ACK of a FIN that ended ESTABLISHED goes at once all the same (__tcp_ack_snd_check,
 * tcp_send_delayed_ack): when more than one full segment is unACKed with it (Linux's rcv_nxt -
 * rcv_wup > rcv_mss; a full segment here is our MSS less the timestamp option, what a peer that
 * fills it sends), or when no data came before it: Linux's ATO is still 0 then, and its delayed-ACK
 * timer runs out at the next tick, which also ends the pingpong it had just entered.
 */
export function finAckNow(conn: TcpConnection): boolean {
  const s = conn.state;
  if (conn.state.soft.quickAcks === FIRST_DATA_PENDING) {
    delayedAckFired(conn);
    return true;
  }
  const fullSegment = s.const.localMss - (s.const.tsEnabled ? 12 : 0);
  return seqDiff(s.delegated.rcvNxt, s.delegated.lastAckSent) > fullSegment;
}

/** tcp_delack_timer_handler: a delayed ACK had to go alone, so the answers are not coming. */
export function delayedAckFired(conn: TcpConnection): void {
  conn.state.soft.pingpong = false;
}
