import type { TcpState } from '../../state/tcp-state.ts';
import { seqDiff } from './seq.ts';

/**
 * The receive window as Linux chooses it (net/ipv4/tcp_output.c, __tcp_select_window and
 * tcp_select_window), the kernel being the reference for what a peer sees.
 *
 * Chimney's receive buffer is a fixed ring counted in bytes, as a Linux socket whose SO_RCVBUF
 * was set (no autotuning). Such a socket starts rcv_ssthresh, the cap Linux puts on its window
 * (grown by tcp_grow_window), at its whole space rounded down to a segment, and the rest of that
 * cap's growth only follows the kernel's accounting of per-segment overhead (skb truesize and its
 * scaling ratio), which a byte ring does not have: so here the cap is the buffer (measured on the
 * conformance lab: a 256 KiB SO_RCVBUF offered 265 KB at its first ACK, grew 29 KB in 26 segments,
 * then followed its free space). Without the cap, no ACK for its growth either (tcp_grow_window's
 * quick ACK).
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

/** The largest window: the buffer, within what the header can name (Linux's window_clamp). */
function windowClamp(s: TcpState): number {
  return Math.min(s.cached.rcvBufSize, 65535 * 2 ** s.const.rcvWscale);
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
 * Where Chimney differs: Linux rounds a scaled window up to the scale (ALIGN), promising up to
 * 2^wscale - 1 bytes that its accounting slack absorbs; a ring takes no byte past its end, so here
 * the offer is rounded down. And a window not scaled is the free space itself, where Linux offers
 * whole segments of the peer's (rounddown(free, rcv_mss), kept while within a segment of the free
 * space; its SYN's too, tcp_select_initial_window): only connections without window scaling see
 * that.
 */
export function selectWindow(s: TcpState): number {
  const full = windowClamp(s);
  const unit = 2 ** s.const.rcvWscale;
  let free = s.delegated.recvBuffer.free;
  if (free < full >>> 1) {
    if (s.soft.quickAcks > 0) s.soft.quickAcks = 0;
    free -= free % unit;
    if (free < s.cached.rcvBufSize >>> 4 || free < Math.min(rcvMss(s), full)) return 0;
  }
  if (free > full) free = full;
  return free - (free % unit);
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
