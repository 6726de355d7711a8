import type { TcpState } from '../../state/tcp-state.ts';
import { seqAdd, seqDiff, seqLt } from './seq.ts';

/**
 * The receive window as Linux chooses it (net/ipv4/tcp_output.c, __tcp_select_window and
 * tcp_select_window), the kernel being the reference for what a peer sees.
 *
 * Chimney's receive buffer is a ring counted in bytes, whose size (cached.rcvBufSize) is the most
 * the connection may ever offer, as Linux's tcp_rmem[2]. What it offers is capped below that by a
 * window clamp that grows with what the application reads (receive-buffer autotuning, below), as
 * Linux's window_clamp follows sk_rcvbuf when tcp_moderate_rcvbuf is on. Below the clamp, a tuned
 * connection's window is also bounded by rcv_ssthresh, which starts at its SYN's window and grows
 * by a few segments per segment received (growWindow, tcp_grow_window), so what it offers opens
 * as the sender's data comes, not at once when the clamp grows.
 */

/** Linux's TCP_MSS_DEFAULT (RFC 1122's 536) and TCP_MIN_MSS: the bounds of the starting hint. */
export const MSS_DEFAULT = 536;
export const MIN_MSS_HINT = 88;

/**
 * The peer's segment size as estimated (icsk_ack.rcv_mss, measured in tcp-ack-mode.ts). Before the
 * first measure, Linux's tcp_initialize_rcv_mss: the smaller of the two MSSs, half the window and
 * 536, at least 88.
 */
export function rcvMss(s: TcpState): number {
  if (s.soft.rcvMss > 0) return s.soft.rcvMss;
  const sendMss = s.const.remoteMss - (s.const.tsEnabled ? 12 : 0);
  const hint = Math.min(s.const.localMss, sendMss, s.cached.rcvBufSize >>> 1, MSS_DEFAULT);
  return Math.max(hint, MIN_MSS_HINT);
}

/**
 * The largest window (Linux's window_clamp): the clamp the reader grew (soft.rcvClamp; 0, none:
 * the whole buffer), within the buffer and what the header can name.
 *
 * Where Chimney differs: Linux counts unread data against its autotuned sk_rcvbuf, so a reader
 * that stops closes the window once the clamp's worth is unread; here unread data counts against
 * the ring (the free space below), and the clamp bounds only the window, so a reader that stops
 * is offered the clamp's worth again with each ACK until the ring is full, as before autotuning.
 */
export function windowClamp(s: TcpState): number {
  const buf = s.cached.rcvBufSize;
  const tuned = s.soft.rcvClamp;
  return Math.min(tuned > 0 && tuned < buf ? tuned : buf, 65535 * 2 ** s.const.rcvWscale);
}

/*
 * Receive-buffer autotuning, as Linux's (net/ipv4/tcp_input.c: tcp_init_buffer_space,
 * tcp_rcv_rtt_update and its two measures, tcp_rcv_space_adjust, tcp_rcvbuf_grow): once per
 * receiver-side RTT, the bytes the application read in it are measured (dynamic right-sizing,
 * DRS), and when they beat the best measure so far the window clamp grows to twice them, more
 * while the sender's rate is still doubling (its slow start), up to the buffer. The clamp never
 * shrinks, and the offered window's right edge never moves back anyway (advertiseWindow). So a
 * connection offers what its reader keeps up with, not its whole buffer, from the first ACK on;
 * what it offers to a fast reader still grows ahead of the sender's slow start.
 *
 * The state is soft (rebuilt from traffic) and travels with a move (codec version 10), so a
 * moved connection keeps its grown clamp. A connection rebuilt from a dead NIC's hard state, or
 * taken from an older build, has none (rcvClamp 0): it offers its whole buffer, as before.
 */

/**
 * The clamp a connection starts at: Linux's, whose first sk_rcvbuf is tcp_rmem[1] (128 KiB) at
 * its starting scaling ratio of one half (the rest counted as per-segment overhead).
 */
export const RCV_CLAMP_START = 65536;
/** Linux's TCP_INIT_CWND: the first measure to beat is ten of our segments. */
const RCV_SPACE_SEGMENTS = 10;
/** The receiver's RTT estimate keeps 7/8 of the old value per sample (tcp_rcv_rtt_update). */
const RCV_RTT_KEEP = 7 / 8;
/** Window-dependent samples are timed with the clock; a 0 counts as this (1 µs, in ms). */
const RCV_RTT_MIN_SAMPLE = 0.001;

/** The first sequence number the application has not read (Linux's copied_seq). */
function copiedSeq(s: TcpState): number {
  return (s.delegated.rcvNxt - s.delegated.recvBuffer.length) >>> 0;
}

/**
 * The window a SYN or SYN-ACK offers (never scaled, RFC 7323 2.2), as Linux's
 * tcp_select_initial_window: the space a connection starts with (a tuned one the starting clamp,
 * tcp_full_space of tcp_rmem[1]; an untuned one, a socket's own buffer as SO_RCVBUF, its whole
 * buffer) in whole segments of ours when it is more than one (`mss`: a SYN's our MSS, a SYN-ACK's
 * less the timestamp option when it was agreed), at most 65535, and never more than the ring has
 * free. On the lab: 65,160 in Linux's SYN-ACK (45 x 1448), 65,535 with a 256 KiB SO_RCVBUF (the
 * rounding comes before the 16-bit bound); a 2000-byte buffer offers 1460.
 */
export function synWindow(s: TcpState, tuned: boolean, mss: number): number {
  return Math.min(synSpace(s.cached.rcvBufSize, tuned, mss), s.delegated.recvBuffer.free);
}

/**
 * synWindow before the ring's free space: what a buffer of `rcvBufSize` offers in a SYN or
 * SYN-ACK. A SYN cookie's SYN-ACK offers it too (no ring exists yet), as Linux's
 * tcp_openreq_init_rwin runs for cookie and request alike.
 */
export function synSpace(rcvBufSize: number, tuned: boolean, mss: number): number {
  let space = rcvBufSize;
  if (tuned && space > RCV_CLAMP_START) space = RCV_CLAMP_START;
  if (space > mss) space -= space % mss;
  return Math.min(space, 65535);
}

/**
 * tcp_init_buffer_space, at the end of the handshake: the clamp starts at RCV_CLAMP_START (or the
 * whole buffer, if smaller) and the measure to beat at ten of our segments (no more than the
 * window), from now and the next byte the application will read. The window's bound
 * (rcv_ssthresh) starts at what the SYN offered (`synWnd`), within the clamp.
 */
export function initRcvSpace(s: TcpState, now: number, synWnd: number): void {
  const so = s.soft;
  so.rcvClamp = Math.min(s.cached.rcvBufSize, RCV_CLAMP_START);
  so.rcvSsthresh = Math.max(1, Math.min(synWnd, so.rcvClamp));
  so.rcvSpace = Math.min(so.rcvClamp, RCV_SPACE_SEGMENTS * s.const.localMss);
  so.rcvSpaceSeq = copiedSeq(s);
  so.rcvSpaceAt = now;
  so.rcvRtt = 0;
  so.rcvRttSeq = 0;
  so.rcvRttAt = -1;
  so.rcvRttEcr = 0;
}

/**
 * tcp_rcv_rtt_update: a sample (ms) of the receiver's RTT. The first sample, or one below the
 * estimate, is taken whole; a larger one is averaged in, unless it came from the window
 * (`windowDependent`: the time to fill a window is an RTT only when the sender had the window
 * full, so those only ever lower the estimate), or unread data waits in the buffer (a reader that
 * falls behind delays the window's opening, and so the echo, by its own lateness).
 */
export function rcvRttSample(s: TcpState, sample: number, windowDependent: boolean): void {
  const so = s.soft;
  const old = so.rcvRtt;
  if (old === 0 || sample < old) {
    so.rcvRtt = sample;
    return;
  }
  if (windowDependent || s.delegated.recvBuffer.length > 0) return;
  so.rcvRtt = old * RCV_RTT_KEEP + sample * (1 - RCV_RTT_KEEP);
}

/**
 * tcp_rcv_rtt_measure, on new in-order data: the time from offering a window to receiving data
 * past its right edge is at least an RTT. The next measure starts at the edge offered now.
 */
export function rcvRttFromWindow(s: TcpState, now: number): void {
  const so = s.soft;
  if (so.rcvRttAt !== -1) {
    if (seqLt(s.delegated.rcvNxt, so.rcvRttSeq)) return;
    rcvRttSample(s, Math.max(now - so.rcvRttAt, RCV_RTT_MIN_SAMPLE), true);
  }
  so.rcvRttSeq = seqAdd(s.delegated.rcvNxt, offeredWindow(s));
  so.rcvRttAt = now;
}

/**
 * tcp_rcv_rtt_measure_ts: a data segment of at least the peer's segment size echoes our
 * timestamp `ecr`, sent `delta` ms ago: an RTT, once per echoed value. Timestamps count whole
 * milliseconds, so a LAN's RTT often reads 0: no sample then, as Linux takes none.
 */
export function rcvRttFromEcho(s: TcpState, ecr: number, delta: number, segmentLen: number): void {
  const so = s.soft;
  if (ecr === so.rcvRttEcr) return;
  so.rcvRttEcr = ecr;
  if (segmentLen >= rcvMss(s) && delta > 0) rcvRttSample(s, delta, false);
}

/**
 * tcp_rcv_space_adjust, after the application read: once an RTT (the receiver's estimate) has
 * passed since the measure began, the bytes read in it, less those still unread, are the
 * measure; one beating the best so far grows the clamp (tcp_rcvbuf_grow). Either way a new
 * measure starts here. Nothing before the first RTT sample, nor on a connection not autotuned.
 */
export function rcvSpaceAdjust(s: TcpState, now: number): void {
  const so = s.soft;
  if (so.rcvClamp === 0 || so.rcvRtt === 0 || now - so.rcvSpaceAt < so.rcvRtt) return;
  const copied = copiedSeq(s);
  const read = seqDiff(copied, so.rcvSpaceSeq) - s.delegated.recvBuffer.length;
  if (read > so.rcvSpace) rcvClampGrow(s, read);
  so.rcvSpaceSeq = copied;
  so.rcvSpaceAt = now;
}

/**
 * tcp_rcvbuf_grow: `read` bytes in an RTT is the new measure. The window that sustains it is
 * twice that, DRS being an RTT late; plus, while the rate still grows, twice its growth in
 * proportion (a sender in slow start doubles each RTT); plus the out-of-order data held past
 * rcv.nxt. The clamp takes it, within the buffer (Linux: tcp_rmem[2]), and never goes down.
 */
export function rcvClampGrow(s: TcpState, read: number): void {
  const so = s.soft;
  const old = so.rcvSpace;
  so.rcvSpace = read;
  let win = 2 * read;
  if (old > 0) win += 2 * Math.floor((win * (read - old)) / old);
  const ooo = s.soft.ooo;
  const last = ooo[ooo.length - 1];
  if (last !== undefined) win += seqDiff(seqAdd(last.seq, last.data.length), s.delegated.rcvNxt);
  const clamp = Math.min(win, s.cached.rcvBufSize);
  if (clamp > so.rcvClamp) so.rcvClamp = clamp;
}

/** Linux grows the window only for segments of at least this many bytes (tcp_event_data_recv). */
const GROW_MIN_LEN = 128;

/**
 * tcp_grow_window: `len` bytes of the peer's data arrived (in order, or kept out of order). While
 * the window's bound is below the clamp and the free space, it grows by twice our MSS, or twice
 * the segment if larger (a coalesced one), up to them. Linux grows it so only when the segment's
 * memory (truesize at its scaling ratio) is not more than its data; a ring holds the data alone,
 * so every segment does. Returns whether it grew: Linux then owes the peer a quick ACK, so the
 * sender hears of the window as it opens (on the lab, an ACK per segment while it grows).
 */
export function growWindow(s: TcpState, len: number): boolean {
  const so = s.soft;
  if (so.rcvSsthresh === 0 || len < GROW_MIN_LEN) return false;
  const room = Math.min(windowClamp(s), s.delegated.recvBuffer.free) - so.rcvSsthresh;
  if (room <= 0) return false;
  so.rcvSsthresh += Math.min(room, Math.max(2 * s.const.localMss, 2 * len));
  return true;
}

/**
 * The window offered last, counted from the rcv.nxt our last ACK carried (Linux's rcv_wnd, kept
 * from rcv_wup).
 */
export function offeredWindow(s: TcpState): number {
  return Math.max(0, seqDiff(s.delegated.rcvAdv, s.delegated.lastAckSent));
}

/**
 * __tcp_select_window: the window to offer now, before the rule that an offered edge never moves
 * back (advertiseWindow). Receiver-side silly window avoidance (RFC 9293 3.8.6.2.2) as Linux has
 * it: once less than half the buffer is free, nothing is offered until at least one of the peer's
 * segments and a sixteenth of the buffer are, and the offer is rounded down to the window scale so
 * the scaling cannot raise it. Linux also ends quick-ACK mode there: the ACKs of a receiver that
 * falls behind are not hurried.
 *
 * Past that rule the offer is at most the window's bound (rcv_ssthresh, growWindow; 0: the clamp).
 *
 * A window not scaled (or scaled by a shift of 0) below the field's largest is whole segments of
 * the peer's (rcv_mss), the last offer kept while within a segment of the free space, as Linux's.
 *
 * Where Chimney differs: Linux rounds a scaled window up to the scale (ALIGN), promising up to
 * 2^wscale - 1 bytes that its accounting slack absorbs; a ring takes no byte past its end, so here
 * the offer is rounded down.
 */
export function selectWindow(s: TcpState): number {
  const ring = s.delegated.recvBuffer;
  let free = ring.free;
  // The buffer is the ring as it is, which a worker's fixed shared ring may make smaller than
  // rcvBufSize: measured against rcvBufSize, an empty ring below a sixteenth of it offered 0 for
  // ever once the clamp passed twice the ring (Linux's allowed_space is the sk_rcvbuf it has).
  const size = Math.min(s.cached.rcvBufSize, free + ring.length);
  const full = Math.min(windowClamp(s), size);
  const unit = 2 ** s.const.rcvWscale;
  if (free < full >>> 1) {
    if (s.soft.quickAcks > 0) s.soft.quickAcks = 0;
    free -= free % unit;
    if (free < size >>> 4 || free < Math.min(rcvMss(s), full)) return 0;
  }
  const bound = s.soft.rcvSsthresh;
  if (free > full) free = full;
  if (bound > 0 && free > bound) free = bound;
  if (unit > 1) return free - (free % unit);
  // Not scaled (or by a shift of 0): whole segments of the peer's, the offer kept while it is
  // within a segment of the free space (Linux's no-wscale branch). A receiver whose reader lags
  // then offers the window in the steps the sender's segments fill, as BSD's mbufs did. Not at
  // the largest the field names: Linux's window_clamp passes 65,535 once it has measured its
  // scaling ratio (tcp_set_window_clamp), its rounded window with it, and tcp_select_window
  // names 65,535 (on the lab, at every ACK of a bulk transfer without scaling). Checked against
  // Linux's scaling-ratio model (tcp_win_from_space): where the two differ on the wire, it is the
  // space, not this rule. A non-reading receiver of 131,072 bytes (flow.test, without scaling,
  // bursts of 1000) names 65,535 in 33 windows on Linux (the SYN-ACK's first), then 62,000,
  // 55,000, ... 0 in the 43rd; here in 41, then 59,000, 51,000, ... 0 in the 50th: Linux's space is win_from_space(2 x
  // SO_RCVBUF) at the payload/truesize ratio it measures, and each unread segment costs its
  // truesize at that ratio; a ring's is its bytes. Both name 65,535 exactly while the window is
  // that or more, and whole segments below; the band where Linux's rounddown(free, rcv_mss)
  // falls under 65,535 while free is over it (less than a segment wide) showed in no run.
  if (free >= 65535) return 65535;
  const mss = Math.min(rcvMss(s), full);
  if (mss <= 0) return 0;
  const offered = offeredWindow(s);
  if (offered <= free - mss || offered > free) return free - (free % mss);
  if (mss === full && free > offered + (full >>> 1)) return free;
  return offered;
}

/**
 * After the application read: is the opened receive window worth an ACK of its own? Linux's
 * tcp_cleanup_rbuf: when the window the peer sees is at most half of the largest, and the one we
 * would offer now is not zero (the silly window rule above) and at least twice it. Otherwise the
 * ACKs that data draws anyway carry the news, and a bulk reader would cost an extra frame per
 * read. (Not once the peer's FIN came, the callers' test: no more data will.) One rule for
 * every owner of a connection: the host's read and a worker's (the application reads from the
 * shared ring on another thread).
 */
export function windowWorthAnnouncing(s: TcpState): boolean {
  const d = s.delegated;
  let now = seqDiff(d.rcvAdv, d.rcvNxt);
  if (now < 0) now = 0;
  if (2 * now > windowClamp(s)) return false;
  const next = selectWindow(s);
  return next > 0 && next >= 2 * now;
}
