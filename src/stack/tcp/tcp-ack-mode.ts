import { FIRST_DATA_PENDING, MAX_QUICK_ACKS, type TcpState } from '../../state/tcp-state.ts';
import { TcpFlag } from '../../wire/tcp.ts';
import { seqDiff, seqGt } from './seq.ts';
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
 * A "full segment" in these rules is the peer's, as the receiver estimates it from what arrives
 * (tcp_measure_rcv_mss: rcvMss), not our own MSS: a peer that sends 500-byte segments is ACKed
 * every second one, and one whose segments carry more options than the timestamp is not held to a
 * size it never sends. New data is ACKed at once when more than one such segment is unACKed
 * (__tcp_ack_snd_check). Small segments that did not teach the estimate (PSH, or too small) are
 * remembered (ICSK_ACK_PUSHED), and the application's read that empties the receive queue ACKs
 * them (tcp_cleanup_rbuf), so a stream of small writes is not left to the delayed-ACK timer.
 *
 * Not followed here either: Linux ACKs those segments at once only if the window it would offer
 * now is not smaller than the one it offered (__tcp_select_window(sk) >= rcv_wnd), leaving the
 * ACK to the application's read otherwise. Its offered window is rcv_ssthresh, grown below a
 * larger buffer, so the test fails only once the application falls behind; Chimney's window is
 * the whole free buffer, so the same test would fail on every segment not yet read, and move the
 * every-second-segment ACK of a bulk transfer from the input to the read. ECN's quick ACKs
 * (__tcp_ecn_check_ce on a CE mark) have nothing to follow: Chimney does not negotiate ECN.
 *
 * The mode is part of the connection's state (TcpState's soft part, codec versions 8 and 9): a
 * connection moved between the host and a NIC delays its ACKs as it would have where it was. Only
 * a rebuild from the hard state, which has no soft part, starts without it, past its start.
 */

/** Linux's TCP_MSS_DEFAULT (RFC 1122's 536) and TCP_MIN_MSS: the bounds of the starting hint. */
const MSS_DEFAULT = 536;
const MIN_MSS_HINT = 88;
/** Linux's TCP_REMNANT: a segment with any of these may be short for its own reasons. */
const REMNANT = TcpFlag.FIN | TcpFlag.URG | TcpFlag.SYN | TcpFlag.PSH;
const PUSHED = 1;
const PUSHED2 = 2;

/**
 * The peer's segment size as estimated (icsk_ack.rcv_mss). Before the first measure, Linux's
 * tcp_initialize_rcv_mss: the smaller of the two MSSs, half the window and 536, at least 88.
 */
export function rcvMss(s: TcpState): number {
  if (s.soft.rcvMss > 0) return s.soft.rcvMss;
  const sendMss = s.const.remoteMss - (s.const.tsEnabled ? 12 : 0);
  const hint = Math.min(s.const.localMss, sendMss, s.cached.rcvBufSize >>> 1, MSS_DEFAULT);
  return Math.max(hint, MIN_MSS_HINT);
}

/**
 * tcp_measure_rcv_mss: in-order data of `len` bytes arrived in a segment whose TCP header was
 * `headerLen` bytes, with `flags`. A segment at least as large as the estimate raises it (at most
 * to our MSS); two smaller ones of one size in a row that are not remnants set it to that size.
 * Any other smaller one is remembered (PUSHED, then PUSHED2) for the read's ACK.
 */
function measureRcvMss(conn: TcpConnection, len: number, headerLen: number, flags: number): void {
  const s = conn.state;
  const soft = s.soft;
  const last = conn.lastSegSize;
  conn.lastSegSize = 0;
  const full = s.const.localMss - (s.const.tsEnabled ? 12 : 0);
  if (len >= rcvMss(s)) {
    // A coalesced super-segment from an offloading link (longer than our MSS lets a segment be)
    // stands for segments of the size a peer that fills our MSS sends: the gso_size that Linux
    // measures from GRO's. Taken as our MSS, it would leave each lone full segment after it short.
    soft.rcvMss = len > s.const.localMss ? full : len;
    return;
  }
  // The header's options beyond the timestamp (SACK blocks) vary; the segment with them does not.
  const whole = len + headerLen;
  if (whole >= MSS_DEFAULT + 20 || (whole >= MIN_MSS_HINT + 20 && !(flags & REMNANT))) {
    const size = whole - (20 + (s.const.tsEnabled ? 12 : 0));
    conn.lastSegSize = size;
    if (size === last) {
      soft.rcvMss = size;
      return;
    }
  }
  soft.ackPushed |= soft.ackPushed & PUSHED ? PUSHED | PUSHED2 : PUSHED;
}

/**
 * tcp_incr_quickack: the receive window last offered in pairs of the peer's segments (at least 2,
 * at most `max`), unless more quick ACKs are already owed.
 */
function incrQuickAcks(conn: TcpConnection, max: number): void {
  const s = conn.state;
  const d = s.delegated;
  let q = Math.floor(seqDiff(d.rcvAdv, d.lastAckSent) / (2 * rcvMss(s)));
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
 * tcp_event_data_recv: `len` bytes of new in-order data arrived at `now`, in a segment with a TCP
 * header of `headerLen` bytes and `flags`. The peer's segment size is measured first; the
 * connection's first data starts quick-ACK mode, and so does data after a silence longer than the
 * RTO (the sender, idle that long, restarts from a small window).
 */
export function dataArrived(
  conn: TcpConnection,
  now: number,
  len: number,
  headerLen: number,
  flags: number,
): void {
  measureRcvMss(conn, len, headerLen, flags);
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
 * __tcp_ack_snd_check, for new in-order data: more than one of the peer's segments is unACKed
 * (rcv_nxt - rcv_wup > rcv_mss), or quick-ACK mode.
 */
export function dataAckNow(conn: TcpConnection): boolean {
  const s = conn.state;
  return seqDiff(s.delegated.rcvNxt, s.delegated.lastAckSent) > rcvMss(s) || inQuickAck(conn);
}

/**
 * tcp_cleanup_rbuf: the application's read emptied the receive queue of a connection that owes an
 * ACK for small segments (ICSK_ACK_PUSHED twice, or once on a connection not interactive): the
 * ACK goes now rather than at the delayed-ACK timer. Linux's other reason there, more than one
 * segment unACKed, is none here: the input ACKs that at once (see the header).
 */
export function readAckNow(s: TcpState): boolean {
  const p = s.soft.ackPushed;
  return (
    p !== 0 &&
    s.delegated.recvBuffer.length === 0 &&
    seqGt(s.delegated.rcvNxt, s.delegated.lastAckSent) &&
    ((p & PUSHED2) !== 0 || !s.soft.pingpong)
  );
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
 * tcp_send_delayed_ack): when more than one of the peer's segments is unACKed with it (rcv_nxt -
 * rcv_wup > rcv_mss), or when no data came before it: Linux's ATO is still 0 then, and its
 * delayed-ACK timer runs out at the next tick, which also ends the pingpong it had just entered.
 */
export function finAckNow(conn: TcpConnection): boolean {
  const s = conn.state;
  if (conn.state.soft.quickAcks === FIRST_DATA_PENDING) {
    delayedAckFired(conn);
    return true;
  }
  return seqDiff(s.delegated.rcvNxt, s.delegated.lastAckSent) > rcvMss(s);
}

/** tcp_delack_timer_handler: a delayed ACK had to go alone, so the answers are not coming. */
export function delayedAckFired(conn: TcpConnection): void {
  conn.state.soft.pingpong = false;
}
