/**
 * Explicit Congestion Notification (RFC 3168) as Linux's TCP answers it (tcp_ecn_* in
 * net/ipv4/tcp_input.c and tcp_output.c, sysctl tcp_ecn). The connection's part lives in
 * TcpDelegated.ecn (TcpEcn bits) and ecnCwrEnd, so it moves with the connection.
 *
 * - Negotiation (6.1.1): a SYN with ECE and CWR asks; the SYN-ACK's ECE (without CWR) agrees. A
 *   listener agrees unless the layer's mode is 0; an active open asks only in mode 1, as Linux's
 *   default tcp_ecn=2 accepts and never asks. A SYN that is itself ECT is not agreed to (a box on
 *   the path rewrites the field: Linux's tcp_ecn_create_request). A resent SYN no longer asks
 *   (Linux's tcp_ecn_fallback=1, tcp_ecn_clear_syn): a path that drops ECN SYNs still connects.
 * - Sending (6.1.2, 6.1.5): new data goes ECT(0); pure ACKs, SYNs and retransmissions go not-ECT.
 * - Receiving (6.1.3): a CE mark on data sets DEMAND_CWR, and every segment echoes ECE until a
 *   segment with CWR arrives.
 * - Reacting (6.1.2): an ACK with ECE starts a reduction once per window of data (Linux's CWR
 *   state): ssthresh as for a loss, cwnd brought down to it by PRR over the next round trip, nothing
 *   resent, and CWR on the next new data.
 */
import { TcpEcn, type TcpState } from '../../state/tcp-state.ts';
import { TcpFlag } from '../../wire/tcp.ts';
import { seqGeq, seqGt } from './seq.ts';
import { enterQuickAck } from './tcp-ack-mode.ts';
import type { TcpConnection, TcpEngine } from './tcp-connection.ts';

/** The IP ECN field (RFC 3168 5): the low two bits of the IPv4 TOS or the IPv6 traffic class. */
export const IpEcn = { NOT_ECT: 0, ECT1: 1, ECT0: 2, CE: 3 } as const;
export const IP_ECN_MASK = 3;

/** Linux's sysctl tcp_ecn: 0 never, 1 ask on an active open and agree, 2 agree only. */
export type EcnMode = 0 | 1 | 2;
/** Linux's default: agree when asked, never ask. */
export const DEFAULT_ECN_MODE: EcnMode = 2;

const ASK = TcpFlag.ECE | TcpFlag.CWR;

/** An active open about to send its first SYN: ask for ECN in mode 1. */
export function ecnActiveOpen(conn: TcpConnection): void {
  conn.state.delegated.ecn = (conn.engine.ecn ?? DEFAULT_ECN_MODE) === 1 ? TcpEcn.OK : 0;
}

/**
 * A listener's SYN (`flags`, its IP ECN field `ipEcn`) made `conn`: agree if it asks and the
 * layer's mode allows (Linux's tcp_ecn_create_request).
 */
export function ecnPassiveOpen(conn: TcpConnection, flags: number, ipEcn: number): void {
  ecnAgreed(conn, ecnSynAgrees(conn.engine, flags, ipEcn));
}

/** Whether a listener of `engine` agrees to ECN for a SYN with `flags` and IP ECN field `ipEcn`. */
export function ecnSynAgrees(engine: TcpEngine, flags: number, ipEcn: number): boolean {
  return (engine.ecn ?? DEFAULT_ECN_MODE) !== 0 && (flags & ASK) === ASK && ipEcn === IpEcn.NOT_ECT;
}

/**
 * A passive open's connection agreed to ECN or not: at its SYN, or at a SYN cookie's ACK whose
 * echoed TSval says the cookie's SYN-ACK agreed (Linux's cookie_ecn_ok, with tcp_ecn not 0).
 */
export function ecnAgreed(conn: TcpConnection, ok: boolean): void {
  conn.state.delegated.ecn = ok ? TcpEcn.OK : 0;
  if (ok) conn.engine.env.counters.inc('tcp.ecn.accepted');
}

/**
 * Our SYN was answered with `flags`: a SYN-ACK agrees with ECE alone (Linux's
 * tcp_ecn_rcv_synack), a SYN of a simultaneous open with ECE and CWR (tcp_ecn_rcv_syn).
 */
export function ecnSynAnswered(conn: TcpConnection, flags: number): void {
  const d = conn.state.delegated;
  if (d.ecn === 0) return;
  const agreed = flags & TcpFlag.ACK ? (flags & ASK) === TcpFlag.ECE : (flags & ASK) === ASK;
  d.ecn = agreed ? TcpEcn.OK : 0;
  if (agreed) conn.engine.env.counters.inc('tcp.ecn.negotiated');
}

/**
 * The ECN flags of a segment of an ECN connection (d.ecn !== 0) about to go with `flags`, at
 * `seq`, carrying `dataLen` bytes: the flags to send. `out.ect` tells whether its packet is ECT(0).
 * Linux's tcp_ecn_send_syn, tcp_ecn_make_synack and tcp_ecn_send.
 */
export function ecnOutput(
  s: TcpState,
  flags: number,
  seq: number,
  dataLen: number,
  synResent: boolean,
): number {
  const d = s.delegated;
  ecnOut.ect = false;
  if (flags & TcpFlag.SYN) {
    if (flags & TcpFlag.ACK) return flags | TcpFlag.ECE;
    if (!synResent) return flags | ASK;
    // Linux's tcp_ecn_clear_syn: the first SYN may have been dropped for asking.
    d.ecn = 0;
    return flags;
  }
  if (dataLen > 0 && seqGeq(seq, d.sndMax)) {
    ecnOut.ect = true;
    if (d.ecn & TcpEcn.QUEUE_CWR) {
      d.ecn &= ~TcpEcn.QUEUE_CWR;
      flags |= TcpFlag.CWR;
    }
  }
  if (d.ecn & TcpEcn.DEMAND_CWR) flags |= TcpFlag.ECE;
  return flags;
}
export const ecnOut = { ect: false };

/**
 * A segment in the window with `flags` and `dataLen` bytes arrived on an ECN connection, its IP
 * ECN field `ipEcn` (Linux's tcp_ecn_accept_cwr, then __tcp_ecn_check_ce): the peer's CWR ends our
 * echo; a CE mark starts one and ACKs at once, so the sender hears of it within a round trip.
 */
export function ecnReceived(conn: TcpConnection, flags: number, dataLen: number, ipEcn: number): void {
  const d = conn.state.delegated;
  if (flags & TcpFlag.CWR) {
    d.ecn &= ~TcpEcn.DEMAND_CWR;
    // The sender cut its window, perhaps to one segment: its next ACK should not wait (Linux ACKs
    // such a segment at once, ICSK_ACK_NOW).
    if (dataLen > 0) conn.state.soft.ackNow = true;
  }
  if (dataLen === 0) return;
  const counters = conn.engine.env.counters;
  switch (ipEcn) {
    case IpEcn.NOT_ECT:
      // Marks were seen and now stop: the path may be dropping in their place; ACK quickly.
      if (d.ecn & TcpEcn.SEEN) enterQuickAck(conn);
      break;
    case IpEcn.CE:
      counters.inc('tcp.ecn.ce-received');
      if (!(d.ecn & TcpEcn.DEMAND_CWR)) {
        enterQuickAck(conn);
        d.ecn |= TcpEcn.DEMAND_CWR;
      }
      d.ecn |= TcpEcn.SEEN;
      break;
    default:
      d.ecn |= TcpEcn.SEEN;
  }
}

/**
 * An acceptable ACK (not older than snd.una) arrived on an ECN connection, after its snd.una moved
 * and before the window grows on it (Linux's tcp_fastretrans_alert, then tcp_cong_control): end a
 * reduction whose window is ACKed, and answer an ECE with a new one. True while a reduction runs
 * (Linux's CWR state): the window does not grow, and prrAck brings it down to ssthresh over the
 * round trip (tcp_cwnd_reduction), where cutting it at once sent nothing for half a round trip and
 * a burst after. Not in a loss recovery or a timeout's episode, which cut it already.
 */
export function ecnAck(conn: TcpConnection, flags: number, now: number): boolean {
  const s = conn.state;
  const d = s.delegated;
  const soft = s.soft;
  // Held until snd.una is past the edge, not at it (Linux's tcp_fastretrans_alert in CWR): the ACK
  // up to the edge answers data sent before our CWR reached the receiver, and may still echo ECE.
  if (d.ecn & TcpEcn.CWR && seqGt(d.sndUna, d.ecnCwrEnd)) {
    d.ecn &= ~TcpEcn.CWR;
    // Linux's tcp_end_cwnd_reduction: the reduction ends at ssthresh, wherever PRR had it.
    d.cwnd = d.ssthresh;
  }
  if (flags & TcpFlag.ECE) {
    conn.engine.env.counters.inc('tcp.ecn.ece-received');
    if (!(d.ecn & TcpEcn.CWR) && !soft.inRecovery && seqGeq(d.sndUna, soft.recoveryPoint))
      enterCwr(conn, now);
  }
  return (d.ecn & TcpEcn.CWR) !== 0;
}

/**
 * An ACK with ECE on an ECN connection, in any state (Linux's tcp_fastretrans_alert, step A:
 * prior_ssthresh = 0): congestion is shown, so an undo of the recovery or timeout running, or of
 * a recovery this ACK starts (tcp_enter_recovery with ece_ack), gives back no window. The undo's
 * other effects (a recovery ended early, nothing more resent) stay, as in Linux, whose undo with
 * prior_ssthresh 0 restores neither cwnd nor ssthresh. Run before the ACK's D-SACKs are read and
 * again after any recovery it started.
 */
export function ecnForbidsUndo(s: TcpState): void {
  const soft = s.soft;
  soft.undoCwnd = 0;
  soft.undoSsthresh = 0;
  soft.undoWMax = 0;
}

/**
 * Linux's tcp_enter_cwr: ssthresh (and CUBIC's W_max) as for a loss, cwnd left where it is for
 * PRR to bring down from, with nothing resent.
 */
function enterCwr(conn: TcpConnection, now: number): void {
  const s = conn.state;
  const d = s.delegated;
  const soft = s.soft;
  conn.engine.env.counters.inc('tcp.ecn.reductions');
  // Linux's tcp_enter_cwr clears undo_marker: a mark is no loss a DSACK could show needless.
  soft.undoArmed = false;
  const cwnd = d.cwnd;
  conn.engine.congestion(conn).onLossDetected(s, now);
  d.cwnd = cwnd;
  soft.prrPriorCwnd = cwnd;
  soft.prrDelivered = 0;
  soft.prrOut = 0;
  d.ecn |= TcpEcn.CWR | TcpEcn.QUEUE_CWR;
  d.ecnCwrEnd = d.sndMax;
}

/**
 * A loss recovery begins: if an ECE already started a reduction in this window of data, the
 * recovery carries it on (Linux's tcp_enter_recovery skips tcp_init_cwnd_reduction while in CWR):
 * ssthresh, and PRR's count of what was delivered and sent, stay. True when it does.
 */
export function ecnCutThisWindow(s: TcpState): boolean {
  const d = s.delegated;
  if (!(d.ecn & TcpEcn.CWR)) return false;
  d.ecn &= ~TcpEcn.CWR;
  return true;
}
