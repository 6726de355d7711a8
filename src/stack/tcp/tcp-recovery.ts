/**
 * Entering SACK/NewReno loss recovery, and acting on what RACK (RFC 8985) marks lost: shared by
 * the input path (an ACK) and the timers (RACK's reordering timer), which may not import each
 * other.
 */
import { effectiveMss } from './congestion.ts';
import { backedOffRto } from './rtt.ts';
import { seqGeq, seqGt, seqLt } from './seq.ts';
import type { TcpConnection } from './tcp-connection.ts';
import { retransmitFirstLost, retransmitHead } from './tcp-output.ts';

export function enterRecovery(
  conn: TcpConnection,
  now: number,
  rackEdge = conn.state.delegated.sndUna,
): void {
  const s = conn.state;
  const c = s.const;
  const d = s.delegated;
  const soft = s.soft;
  const mss = effectiveMss(s);
  conn.engine.env.counters.inc('tcp.fast_retransmits');
  soft.undoCwnd = d.cwnd;
  soft.undoSsthresh = d.ssthresh;
  soft.undoRetrans = 0;
  soft.undoArmed = true;
  soft.undoLow = d.sndUna;
  soft.undoWMax = soft.cubic.wMax;
  soft.prrPriorCwnd = d.cwnd;
  soft.prrDelivered = 0;
  soft.prrOut = 0;
  soft.inRecovery = true;
  soft.rackLostEdge = rackEdge;
  soft.recoveryPoint = d.sndMax;
  soft.tlpDeadline = Number.POSITIVE_INFINITY;
  soft.tlpInFlight = false;
  conn.engine.congestion(conn).onLossDetected(s, now);
  soft.highRxt = d.sndUna;
  soft.rttActive = false;
  if (c.sackEnabled) retransmitFirstLost(conn, now);
  else retransmitHead(conn, now);
  // RFC 5681 3.2 step 4: the three segments that left the network make room for three more.
  if (!c.sackEnabled) d.cwnd = d.ssthresh + 3 * mss;
  d.rtxDeadline = now + backedOffRto(s);
}

/**
 * RACK found [lowest, lostEnd) holding lost data (lostEnd -1: nothing): start recovery, or, in
 * one, widen what counts as lost and resend retransmissions lost again.
 */
export function rackMark(conn: TcpConnection, lostEnd: number, lowest: number, now: number): void {
  const s = conn.state;
  const d = s.delegated;
  const soft = s.soft;
  if (lostEnd === -1) return;
  if (!soft.inRecovery) {
    if (seqGeq(d.sndUna, soft.recoveryPoint)) {
      conn.engine.env.counters.inc('tcp.rack.recoveries');
      enterRecovery(conn, now, lostEnd);
    } else if (soft.frto === 0 && seqLt(lowest, d.sndNxt) && seqGeq(lowest, d.sndUna)) {
      // After a timeout the window is resent once, from snd.una up; a retransmission lost again
      // would wait for the next timeout, backed off. As Linux marks RACK losses in its Loss state
      // (tcp_process_loss), resending goes back to it. Not while F-RTO is still deciding whether
      // the timeout was spurious: its step 3a goes back itself once the loss proves real.
      d.sndNxt = lowest;
      conn.engine.env.counters.inc('tcp.lost_retransmits');
    }
    return;
  }
  if (seqGt(lostEnd, soft.rackLostEdge)) soft.rackLostEdge = lostEnd;
  if (seqLt(lowest, soft.highRxt) && seqGeq(lowest, d.sndUna)) {
    // A retransmission of this recovery was lost as well: send it again.
    soft.highRxt = lowest;
    conn.engine.env.counters.inc('tcp.lost_retransmits');
  }
}

const reoLowest = { seq: 0 };

/**
 * RACK's reordering timer fired (RFC 8985 6.2 step 5, Linux's tcp_rack_reo_timeout): what an ACK
 * left unmarked only because of the reordering window is looked at again, now that the window has
 * passed. Without it, data sent before the newest delivered segment waited for the next ACK that
 * delivered something newer, or for the tail loss probe's (after a timeout undone by F-RTO with a
 * single segment SACKed above the holes: Linux resends the holes within milliseconds, this stack
 * waited two round trips for its probe). The caller sends what the recovery now allows.
 */
export function rackReoTimeout(conn: TcpConnection, now: number): void {
  const s = conn.state;
  if (!s.const.sackEnabled) return;
  const d = s.delegated;
  if (d.sndUna === d.sndMax) {
    conn.rack.reoDeadline = Number.POSITIVE_INFINITY;
    return;
  }
  const lostEnd = conn.rack.detect(s, now, reoLowest);
  if (lostEnd === -1) return;
  conn.engine.env.counters.inc('tcp.rack.reo-timeouts');
  rackMark(conn, lostEnd, reoLowest.seq, now);
}
