/**
 * Entering SACK/NewReno loss recovery, and acting on what RACK (RFC 8985) marks lost: shared by
 * the input path (an ACK) and the timers (RACK's reordering timer), which may not import each
 * other.
 */
import { RACK_REORDERING_MAX, TcpEcn, type TcpState } from '../../state/tcp-state.ts';
import { effectiveMss, flightSize, renoLeftOut } from './congestion.ts';
import { backedOffRto } from './rtt.ts';
import { sackedBytes, sackPipe } from './sack.ts';
import { seqGeq, seqGt, seqLt } from './seq.ts';
import type { TcpConnection } from './tcp-connection.ts';
import { ecnCutThisWindow } from './tcp-ecn.ts';
import { retransmitHead, tsNow } from './tcp-output.ts';

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
  // A recovery resends holes without rewinding snd.nxt: should a timeout's undo ever read this
  // record, everything sent was in flight.
  soft.undoNxt = d.sndMax;
  const fromCwr = ecnCutThisWindow(s);
  if (!fromCwr) {
    soft.prrPriorCwnd = d.cwnd;
    soft.prrDelivered = 0;
    soft.prrOut = 0;
    // Linux's tcp_init_cwnd_reduction queues CWR for any cut: a receiver echoing ECE (the mark
    // that came with this loss) stops once new data says the window came down, where without it
    // the echo outlived the recovery and cut the window a second time.
    if (d.ecn !== 0) d.ecn |= TcpEcn.QUEUE_CWR;
  } else {
    // Linux's tcp_enter_recovery in CWR leaves prior_ssthresh 0, so an undo gives back nothing:
    // the window this recovery found mid-reduction was the mark's to bring down, not a loss's.
    soft.undoCwnd = 0;
  }
  soft.inRecovery = true;
  soft.rackLostEdge = rackEdge;
  soft.recoveryPoint = d.sndMax;
  soft.tlpDeadline = Number.POSITIVE_INFINITY;
  soft.tlpInFlight = false;
  // Linux's tcp_init_cwnd_reduction: the recovery's reduction covers what the probe found.
  conn.rack.tlpEnd = -1;
  if (!fromCwr) conn.engine.congestion(conn).onLossDetected(s, now);
  soft.highRxt = d.sndUna;
  soft.rttActive = false;
  // Linux's retrans_stamp: the TSval the first retransmission carries. A partial ACK echoing an
  // older one answers an original (tcp_packet_delayed): the hole was filled late, not by us.
  // With an earlier retransmission still unacknowledged (a probe's, a recovery's before), Linux
  // keeps that one's older stamp; not knowing it, no stamp: an ACK of that copy echoes a TSval
  // older than this recovery's, and was taken for an original (sim-loss: 3 of 6 transfers at 5
  // and 10 %, on a path that never reorders).
  soft.undoTsVal = c.tsEnabled && !conn.rack.resentInFlight() ? tsNow(now) : 0;
  if (c.sackEnabled) {
    // What goes now is PRR's to say (prrAck, on the ACK or the RACK timeout that got here), then
    // tcpOutput sends it: Linux's tcp_cwnd_reduction forces at least one segment on entry and
    // tcp_xmit_retransmit_queue resends no more than cwnd - in_flight, so the first lost range goes
    // as one segment, or the few PRR allows, not as one super-segment of the whole range. Sent
    // whole, a range of 14 segments was resent as one frame beyond cwnd; on a path that drops
    // whole frames it was lost whole one time in ten, with nothing sent after it to show RACK the
    // loss, so it waited for the RTO. The floor keeps RFC 6675 5 (4.3) should no PRR step follow
    // (an ACK that delivered nothing new); sackRecoveryOutput sends the first hole first.
    const pipe = sackPipe(s, mss);
    if (d.cwnd < pipe + mss) d.cwnd = pipe + mss;
  }
  // Without SACK the head goes once the ACK's PRR step has set cwnd (renoResendHead), as Linux's
  // tcp_newreno_mark_lost marks it and tcp_xmit_retransmit_queue resends it within cwnd, with no
  // RFC 5681 inflation by the three duplicates: they are out of the pipe (reductionLeftOut).
  d.rtxDeadline = now + backedOffRto(s);
}

/**
 * A loss probe's copy was the only one to arrive (RFC 8985 7.4.2, Linux's tcp_process_tlp_ack):
 * the tail it resent had been lost, and the probe repaired it without a recovery. The window is
 * cut as for one (Linux enters CWR and ends it at once: cwnd = ssthresh), with no undo: no
 * DSACK can show the cut needless, the probe's being the one copy delivered.
 */
export function probeRepairedLoss(conn: TcpConnection, now: number): void {
  const s = conn.state;
  if (seqLt(s.delegated.sndUna, s.soft.recoveryPoint)) return;
  conn.engine.env.counters.inc('tcp.tlp.recoveries');
  s.soft.undoArmed = false;
  // Linux's tcp_process_tlp_ack ends the reduction at once: an ECE's, running, ends with it.
  s.delegated.ecn &= ~TcpEcn.CWR;
  conn.engine.congestion(conn).onLossDetected(s, now);
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

/**
 * Proportional Rate Reduction (RFC 6937) as Linux's tcp_cwnd_reduction: while more than ssthresh
 * is in flight, send ssthresh/prior-cwnd of what each ACK delivered, so the window comes down to
 * ssthresh evenly over one round trip instead of sending nothing for its first half (RFC 6675
 * with cwnd = ssthresh) and bursting after; once the flight is below ssthresh, slow start back up
 * to it (PRR-SSRB), so a recovery that lost much does not end with a nearly empty pipe.
 */
export function prrAck(conn: TcpConnection, delivered: number, unaAdvanced: boolean): void {
  const s = conn.state;
  const d = s.delegated;
  const soft = s.soft;
  if (delivered <= 0 || soft.prrPriorCwnd <= 0) return;
  const mss = effectiveMss(s);
  // Outside a recovery (an ECE's reduction) nothing of this episode was resent, and highRxt keeps
  // a timeout's meaning, or its initial 0, which half the ISNs put ahead of snd.una: RFC 6675's
  // pipe then counted the flight twice and the reduction sent without bound. Linux's
  // packets_in_flight there is what was sent less what was SACKed. Without SACK, in a recovery
  // as in an ECE's reduction, it leaves out a segment for each duplicate and the lost head until
  // it is resent (tcp_newreno_mark_lost).
  const pipe =
    soft.inRecovery && s.const.sackEnabled
      ? sackPipe(s, mss)
      : flightSize(s) - reductionLeftOut(s, mss) - renoLost(s, mss);
  soft.prrDelivered += delivered;
  const sndcnt = s.const.sackEnabled
    ? prrBytes(s, pipe, delivered, unaAdvanced, mss)
    : prrSegments(s, pipe, delivered, unaAdvanced, mss) * mss;
  d.cwnd = Math.max(pipe + Math.max(sndcnt, 0), mss);
}

/** PRR's share in bytes (RFC 6937), with SACK. */
function prrBytes(s: TcpState, pipe: number, delivered: number, unaAdvanced: boolean, mss: number): number {
  const soft = s.soft;
  const ssthresh = s.delegated.ssthresh;
  const delta = ssthresh - pipe;
  let sndcnt: number;
  if (delta < 0) {
    sndcnt = Math.ceil((ssthresh * soft.prrDelivered) / soft.prrPriorCwnd) - soft.prrOut;
  } else {
    sndcnt = Math.max(soft.prrDelivered - soft.prrOut, delivered);
    if (unaAdvanced) sndcnt += mss;
    sndcnt = Math.min(delta, sndcnt);
  }
  // The fast retransmit itself goes whatever the arithmetic says (RFC 6675 5 step 4.3).
  return soft.prrOut === 0 && sndcnt < mss ? mss : sndcnt;
}

/**
 * Without SACK, PRR's share in whole segments, as Linux's tcp_cwnd_reduction counts packets:
 * ssthresh and the prior cwnd round down (snd_ssthresh is packets: CUBIC's 11 x 717 / 1024 is 7
 * where 0.7 of eleven segments in bytes is 7.7, Reno's 11 >> 1 is 5 where half in bytes is 5.5),
 * the flight and PRR's counts up (a short segment is a packet). Above ssthresh, counted in bytes,
 * ceil(6.3 x 3 / 9) sent a segment on a flight of nine's fifth duplicate where Linux's ceil(6 x 3
 * / 9) less the two sent sends none; at it, a room of 0.7 segment rounded up sent one where
 * Linux's 7 - 7 sends none (conformance flow.test, a window of eleven). In bytes alone, a fraction
 * of a segment was left that Nagle held (a flight of ten sent nothing on the fourth duplicate
 * where Linux sends one). With SACK PRR stays in bytes: rounded so, sim-loss took longer
 * (per-segment loss 1 %: 2.0 -> 2.7 virtual s; not understood yet).
 */
function prrSegments(
  s: TcpState,
  pipe: number,
  delivered: number,
  unaAdvanced: boolean,
  mss: number,
): number {
  const soft = s.soft;
  const ssthresh = Math.floor(s.delegated.ssthresh / mss);
  const delta = ssthresh - Math.ceil(pipe / mss);
  const prrOut = Math.ceil(soft.prrOut / mss);
  const prrDelivered = Math.ceil(soft.prrDelivered / mss);
  let sndcnt: number;
  if (delta < 0) {
    const prior = Math.max(Math.floor(soft.prrPriorCwnd / mss), 1);
    sndcnt = Math.ceil((ssthresh * prrDelivered) / prior) - prrOut;
  } else {
    sndcnt = Math.max(prrDelivered - prrOut, Math.ceil(delivered / mss));
    if (unaAdvanced) sndcnt++;
    sndcnt = Math.min(delta, sndcnt);
  }
  // The fast retransmit itself goes whatever the arithmetic says (RFC 6675 5 step 4.3).
  return prrOut === 0 && sndcnt < 1 ? 1 : sndcnt;
}

/**
 * What Linux's packets_in_flight leaves out of the flight in an ECE's reduction: the SACKed
 * bytes, or without SACK a segment for each duplicate ACK (its emulated sacked_out), at most all
 * but one segment of the flight (tcp_limit_reno_sacked). Limited transmit adds the duplicates
 * back to cwnd (tcpOutput), so what goes is PRR's count.
 */
function reductionLeftOut(s: TcpState, mss: number): number {
  return s.const.sackEnabled ? sackedBytes(s) : renoLeftOut(s, mss);
}

/**
 * Without SACK, a recovery's head is marked lost (Linux's tcp_newreno_mark_lost: on entering, and
 * on each partial ACK) and is out of the pipe until it is resent (`highRxt` past snd.una).
 */
function renoLost(s: TcpState, mss: number): number {
  const d = s.delegated;
  if (!s.soft.inRecovery || s.const.sackEnabled || seqGt(s.soft.highRxt, d.sndUna)) return 0;
  return Math.min(mss, flightSize(s));
}

/**
 * Linux's tcp_limit_reno_sacked: duplicate ACKs, each standing for a segment the peer holds above
 * the hole, never count more than the flight less that hole. Beyond it a duplicate (a segment the
 * network duplicated, a window probe's answer) delivered nothing and leaves nothing more out of
 * the pipe. Without the cap, each clocked out a segment PRR never counted. True when it capped.
 */
export function renoCapDupAcks(s: TcpState, mss: number): boolean {
  const d = s.delegated;
  const most = Math.max(Math.ceil(flightSize(s) / mss) - 1, 0);
  if (d.dupAcks <= most) return false;
  d.dupAcks = most;
  return true;
}

/**
 * Linux's tcp_check_reno_reordering: more duplicate ACKs than the flight could draw says, without
 * SACK, that segments were reordered (or the receiver errs), and the degree becomes the flight
 * counted in segments, with `addend` those the ACK just took out of it; raised or lowered, as
 * Linux assigns it. Without SACK the degree is the duplicate-ACK threshold (tcp_newreno_mark_lost
 * marks the head lost once that many came), so the next loss waits for that many.
 */
function renoCapReordering(s: TcpState, mss: number, addend: number): void {
  if (!renoCapDupAcks(s, mss)) return;
  s.soft.reordering = Math.min(Math.ceil(flightSize(s) / mss) + addend, RACK_REORDERING_MAX);
}

/** A duplicate ACK without SACK (Linux's tcp_add_reno_sack): one more segment held above the hole. */
export function renoDupAck(s: TcpState, mss: number): void {
  s.delegated.dupAcks++;
  renoCapReordering(s, mss, 0);
}

/**
 * An ACK that moves snd.una without SACK (Linux's tcp_remove_reno_sacks, on every such ACK): one
 * of the segments it ACKs filled the hole, the rest were those the duplicates stood for.
 */
export function renoAcked(s: TcpState, acked: number, mss: number): void {
  const d = s.delegated;
  const segs = Math.ceil(acked / mss);
  if (segs > 0) d.dupAcks = Math.max(d.dupAcks - (segs - 1), 0);
  renoCapReordering(s, mss, segs);
}

/**
 * A partial ACK without SACK, after renoAcked: the new head is lost (tcp_newreno_mark_lost), to
 * be resent as PRR allows (renoResendHead).
 */
export function renoPartialAck(s: TcpState): void {
  s.soft.highRxt = s.delegated.sndUna;
}

/**
 * Without SACK, resend a recovery's lost head once PRR's cwnd leaves room for it, as Linux's
 * tcp_xmit_retransmit_queue stops at cwnd; the ACK that started the recovery always sends it (the
 * fast retransmit, tcp_cwnd_reduction's forced segment).
 */
export function renoResendHead(conn: TcpConnection, now: number, entering: boolean): void {
  const s = conn.state;
  const d = s.delegated;
  if (!s.soft.inRecovery || s.const.sackEnabled || d.sndUna === d.sndMax) return;
  const mss = effectiveMss(s);
  const lost = renoLost(s, mss);
  if (lost === 0) return;
  if (!entering && d.cwnd < flightSize(s) - reductionLeftOut(s, mss) - lost + mss) return;
  retransmitHead(conn, now);
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
  const lostEnd = conn.rack.detect(s, now, reoLowest, effectiveMss(s));
  if (lostEnd === -1) return;
  conn.engine.env.counters.inc('tcp.rack.reo-timeouts');
  const entering = !s.soft.inRecovery;
  rackMark(conn, lostEnd, reoLowest.seq, now);
  // Linux's tcp_rack_reo_timeout runs tcp_cwnd_reduction(sk, 1, 0) on entering recovery: PRR as
  // for an ACK that delivered one segment, so the holes go out at PRR's pace, not a window's
  // worth at once (with cwnd = ssthresh from onLossDetected, three where Linux sent two).
  if (entering && s.soft.inRecovery) prrAck(conn, effectiveMss(s), false);
}
