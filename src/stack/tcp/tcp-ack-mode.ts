import { FIRST_DATA_PENDING, MAX_QUICK_ACKS, type TcpState } from '../../state/tcp-state.ts';
import { TcpFlag } from '../../wire/tcp.ts';
import { seqDiff } from './seq.ts';
import type { TcpConnection } from './tcp-connection.ts';
import {
  growWindow,
  MIN_MSS_HINT,
  MSS_DEFAULT,
  offeredWindow,
  rcvMss,
  rcvRttFromWindow,
  rcvSpaceAdjust,
  selectWindow,
  windowWorthAnnouncing,
} from './tcp-window.ts';

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
 * acceptance test, as by Linux's tcp_sequence, before that point). A segment that grows the
 * window's bound (tcp_grow_window, tcp-window.ts) owes one more quick ACK (windowGrew).
 * It leaves the mode once less than half of the buffer is free (selectWindow, as Linux's
 * __tcp_select_window).
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
 * That every-second-segment ACK goes at once only while the receiver keeps up (__tcp_ack_snd_check):
 * when nothing is left unread, or when the window it would offer now is not smaller than the one
 * it offered (selectWindow >= rcv_wnd). A receiver whose application lags, and whose free space
 * has shrunk since, leaves the ACK to the application's read (tcp_cleanup_rbuf, readAckNow) or the
 * delayed-ACK timer: its peer hears of the data when there is room behind it. With a buffer of
 * fixed size (Linux's SO_RCVBUF, Chimney's rcvBufSize) that is any unread data past the last ACK;
 * on the conformance lab a Linux receiver that does not read ACKs each burst once, at its timer,
 * and one that reads ACKs at its reads. ECN's quick ACKs (__tcp_ecn_check_ce on a CE mark) have
 * nothing to follow: Chimney does not negotiate ECN.
 *
 * The mode is part of the connection's state (TcpState's soft part, codec versions 8 and 9): a
 * connection moved between the host and a NIC delays its ACKs as it would have where it was. Only
 * a rebuild from the hard state, which has no soft part, starts without it, past its start.
 */

/** Linux's TCP_REMNANT: a segment with any of these may be short for its own reasons. */
const REMNANT = TcpFlag.FIN | TcpFlag.URG | TcpFlag.SYN | TcpFlag.PSH;
const PUSHED = 1;
const PUSHED2 = 2;

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
 * Out-of-order data of `len` bytes was kept (past the memory check, as Linux's tcp_data_queue_ofo
 * calls tcp_measure_rcv_mss since 6.17): it teaches the estimate of the peer's segment size as
 * in-order data does. A connection whose peer's segments change size across a loss would
 * otherwise keep counting the every-second-segment ACK against the old size until two in-order
 * segments of the new one arrive in a row.
 */
export function outOfOrderArrived(conn: TcpConnection, len: number, headerLen: number, flags: number): void {
  measureRcvMss(conn, len, headerLen, flags);
}

/**
 * tcp_grow_window's `icsk_ack.quick |= 1`: the segment of `len` bytes grew the window's bound, so
 * the next ACK of new data goes at once, and the sender learns of the window while it opens.
 * Held to MAX_QUICK_ACKS (Linux's u8 may reach 17 so; one quick ACK less at most).
 */
function windowGrew(conn: TcpConnection, len: number): void {
  const soft = conn.state.soft;
  if (growWindow(conn.state, len) && soft.quickAcks >= 0)
    soft.quickAcks = Math.min(soft.quickAcks | 1, MAX_QUICK_ACKS);
}

/**
 * Out-of-order data of `len` bytes was kept: it grows the window's bound as in-order data does
 * (tcp_data_queue_ofo ends with tcp_grow_window), but only with SACK: the ACK it draws must stay a
 * duplicate, and one whose window changed is none to the sender (RFC 5681 2, Linux's
 * FLAG_WIN_UPDATE), which then never counts three for its fast retransmit.
 */
export function outOfOrderKept(conn: TcpConnection, len: number): void {
  if (conn.state.const.sackEnabled) windowGrew(conn, len);
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
 * RTO (the sender, idle that long, restarts from a small window); last, the window's bound grows.
 */
export function dataArrived(
  conn: TcpConnection,
  now: number,
  len: number,
  headerLen: number,
  flags: number,
): void {
  measureRcvMss(conn, len, headerLen, flags);
  rcvRttFromWindow(conn.state, now);
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
  windowGrew(conn, len);
}

/**
 * tcp_event_data_sent: new data went out within the delayed-ACK time of the last data in (or of
 * the handshake, as Linux's lrcvtime starts there): an answer, so the connection is interactive.
 */
export function dataSent(conn: TcpConnection, now: number): void {
  const soft = conn.state.soft;
  if (soft.lastDataAt !== -1 && now - soft.lastDataAt < conn.state.cached.delayedAckMs) soft.pingpong = true;
}

/**
 * tcp_dec_quickack_mode: an ACK of new data went out (a window update or a duplicate's answer is
 * none). On the state, as sendStateAck has no connection object.
 */
export function ackSent(s: TcpState): void {
  if (s.soft.quickAcks > 0) s.soft.quickAcks--;
}

/**
 * __tcp_ack_snd_check's first reason: more than one of the peer's segments is unACKed (rcv_nxt -
 * rcv_wup > rcv_mss), and the receiver keeps up: nothing is left unread (sk_rcvlowat, 1 byte), or
 * the window it would offer now is not below the one it offered.
 */
function segmentsAckNow(s: TcpState): boolean {
  const d = s.delegated;
  return (
    seqDiff(d.rcvNxt, d.lastAckSent) > rcvMss(s) &&
    (d.recvBuffer.length === 0 || selectWindow(s) >= offeredWindow(s))
  );
}

/** __tcp_ack_snd_check, for new in-order data: the reason above, or quick-ACK mode. */
export function dataAckNow(conn: TcpConnection): boolean {
  // In this order, as Linux's: selectWindow may end quick-ACK mode.
  return segmentsAckNow(conn.state) || inQuickAck(conn);
}

/**
 * tcp_cleanup_rbuf, after the application's read, for a connection that owes an ACK: more than
 * one of the peer's segments is unACKed (the input left it to the read: segmentsAckNow), or the
 * read emptied the receive queue and small segments are owed one (ICSK_ACK_PUSHED twice, or once
 * on a connection not interactive), which then goes now rather than at the delayed-ACK timer.
 */
export function readAckNow(s: TcpState): boolean {
  const d = s.delegated;
  const owed = seqDiff(d.rcvNxt, d.lastAckSent);
  if (owed <= 0) return false;
  if (owed > rcvMss(s)) return true;
  const p = s.soft.ackPushed;
  return p !== 0 && d.recvBuffer.length === 0 && ((p & PUSHED2) !== 0 || !s.soft.pingpong);
}

/**
 * After the application read, at `now`: the read is measured for autotuning first (Linux's
 * tcp_rcv_space_adjust, before tcp_cleanup_rbuf), so a grown clamp can be announced; then, does
 * an ACK go now? Either the window opened enough to announce (tcp-window.ts), or the ACK owed
 * waited for the read (readAckNow). One rule for every owner: the host's read and a worker's (the
 * application reads from the shared ring on another thread).
 */
export function ackAfterRead(s: TcpState, now: number): boolean {
  rcvSpaceAdjust(s, now);
  return readAckNow(s) || windowWorthAnnouncing(s);
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
 * tcp_send_delayed_ack): for more than one of the peer's segments unACKed with it, as for data
 * (segmentsAckNow), or when no data came before it: Linux's ATO is still 0 then, and its
 * delayed-ACK timer runs out at the next tick, which also ends the pingpong it had just entered.
 */
export function finAckNow(conn: TcpConnection): boolean {
  if (conn.state.soft.quickAcks === FIRST_DATA_PENDING) {
    delayedAckFired(conn);
    return true;
  }
  return segmentsAckNow(conn.state);
}

/** tcp_delack_timer_handler: a delayed ACK had to go alone, so the answers are not coming. */
export function delayedAckFired(conn: TcpConnection): void {
  conn.state.soft.pingpong = false;
}
