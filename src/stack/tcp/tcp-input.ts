import type { Counters } from '../../core/counters.ts';
import type { TcpState } from '../../state/tcp-state.ts';
import { FIRST_DATA_PENDING, TcpEcn, TcpStateId } from '../../state/tcp-state.ts';
import { TcpFlag, type TcpHeader } from '../../wire/tcp.ts';
import { effectiveMss } from './congestion.ts';
import { backedOffRto, clampRto, rttSample } from './rtt.ts';
import {
  DUP_THRESH,
  recvSackAdd,
  recvSackPrune,
  sackedBytes,
  sackedIn,
  sackIsLost,
  sackPrune,
  sackUpdate,
} from './sack.ts';
import { seqAdd, seqDiff, seqGeq, seqGt, seqLeq, seqLt, seqMax, seqMin, seqSub } from './seq.ts';
import {
  dataAckNow,
  dataArrived,
  enterQuickAck,
  finAckNow,
  outOfOrderArrived,
  outOfOrderKept,
  peerClosing,
} from './tcp-ack-mode.ts';
import {
  armKeepalive,
  canReceive,
  connError,
  deliverEvents,
  reportClosed,
  type TcpConnection,
  TcpEvent,
  terminate,
} from './tcp-connection.ts';
import { ecnAck, ecnForbidsUndo, ecnReceived, ecnSynAnswered } from './tcp-ecn.ts';
import { maybeGrowSendRing, roomAtLimit } from './tcp-mem.ts';
import {
  hasUnsent,
  OOW_ACK_INTERVAL_MS,
  rcvTuned,
  sendAck,
  sendChallengeAck,
  sendRst,
  sendRstReply,
  sendSyn,
  synOffer,
  tcpOutput,
  transmit,
  tsNow,
  windowTakesNext,
} from './tcp-output.ts';
import {
  enterRecovery,
  probeRepairedLoss,
  prrAck,
  rackMark,
  renoAcked,
  renoDupAck,
  renoPartialAck,
  renoResendHead,
} from './tcp-recovery.ts';
import { scheduleTimer } from './tcp-timers.ts';
import { initRcvSpace, rcvRttFromEcho } from './tcp-window.ts';

const INF = Number.POSITIVE_INFINITY;
/** RFC 7323 5.5: ts.recent older than 24 days is no longer a valid PAWS reference. */
export const PAWS_IDLE_MS = 24 * 24 * 3600 * 1000;
/** Out-of-order segments kept per connection: a bound on bookkeeping, not only on bytes. */
const OOO_MAX_SEGMENTS = 1024;

/**
 * Apply the options of a SYN we received to the connection (RFC 7323, RFC 2018, RFC 9293 3.7.1):
 * window scaling only if both SYNs carry it, the shift clamped to 14; SACK and timestamps only if
 * the peer offers them (we always do on an active open).
 */
export function negotiateSynOptions(conn: TcpConnection, h: TcpHeader, now: number): void {
  const s = conn.state;
  const c = s.const;
  const d = s.delegated;
  c.remoteMss = h.mss > 0 ? h.mss : 536;
  if (h.wscale >= 0) {
    c.wsEnabled = true;
    if (h.wscale > 14) conn.engine.env.counters.inc('tcp.wscale.clamped');
    c.sndWscale = Math.min(h.wscale, 14);
    c.rcvWscale = conn.offeredWscale;
  } else {
    c.wsEnabled = false;
    c.sndWscale = 0;
    c.rcvWscale = 0;
  }
  c.sackEnabled = h.sackPermitted;
  c.tsEnabled = h.hasTimestamps;
  if (h.hasTimestamps) {
    d.tsRecent = h.tsVal;
    d.tsRecentAt = now;
  }
}

/** The handshake is done: start congestion control, keepalive and tell the user. */
export function establish(conn: TcpConnection, now: number): void {
  const s = conn.state;
  const d = s.delegated;
  // Before the state changes: which SYN we sent, ours or our answer, is read from it. A buffer
  // not tuned (SO_RCVBUF, a fixed layer) gets no bound, and its first ACK offers the whole ring.
  // So does Linux's, within a segment: tcp_select_initial_window sets rcv_wnd, and rcv_ssthresh
  // from it (tcp_connect_init, tcp_create_openreq_child), to its whole space in whole segments,
  // the 65,535 bound being the SYN field's alone, and tcp_init_buffer_space bounds rcv_ssthresh
  // only by window_clamp, tcp_full_space for a locked buffer; nothing checks the lock. On the lab
  // (SO_RCVBUF 262,144, MSS 1460) its first ACK offers 261,344 (261,340 aligned up to the scale)
  // where this offers 262,136; a 20,000-byte buffer keeps its SYN's 18,979 after a byte where
  // this offers 19,832 (rcv_mss's segments). Not followed, that part of a segment: bounded so, the
  // window's growth owes quick ACKs (tcp_grow_window) that the fixed-buffer cases of quick-ack and
  // receive-edge pin. Linux then opens past its buffer (to 293,464 in that run) as its clamp is
  // recomputed from the scaling ratio it measures (tcp_measure_rcv_mss, tcp_set_window_clamp);
  // a ring holds its bytes and no more.
  if (rcvTuned(conn)) initRcvSpace(s, now, synOffer(conn));
  d.state = d.finQueued ? TcpStateId.FIN_WAIT_1 : TcpStateId.ESTABLISHED;
  d.backoff = 0;
  d.rtxDeadline = INF;
  d.lastRecvAt = now;
  // Linux's lrcvtime starts at the handshake: data sent within the delayed-ACK time of it is an
  // answer too (tcp-ack-mode.ts, dataSent). The first data is yet to come (quick-ACK mode starts
  // with it, dataArrived).
  s.soft.lastDataAt = now;
  s.soft.quickAcks = FIRST_DATA_PENDING;
  // RFC 6298 5.7: a SYN timed out and the handshake gave no RTT sample, so the path may be slower
  // than the 1 s initial RTO assumed: start data transfer at 3 s.
  if (conn.synRetransmitted && d.srtt === 0) d.rto = clampRto(s, Math.max(d.rto, 3000));
  conn.engine.congestion(conn).init(s, now);
  s.soft.recoveryPoint = d.sndUna;
  armKeepalive(conn);
  conn.events |= TcpEvent.CONNECTED;
}

function enterTimeWait(conn: TcpConnection, now: number): void {
  const d = conn.state.delegated;
  if (conn.engine.admitTimeWait?.(conn) === false) {
    conn.engine.env.counters.inc('tcp.time-wait.overflow');
    // Our FIN is acknowledged and theirs is in: only the last ACK is owed.
    conn.state.soft.ackNow = true;
    sendAck(conn);
    terminate(conn, null, true);
    return;
  }
  // Nothing will be sent again, and an empty receive ring has nothing left to read: a waiting
  // connection keeps its state, not its buffers.
  d.sendBuffer.release();
  d.recvBuffer.release();
  d.state = TcpStateId.TIME_WAIT;
  d.rtxDeadline = INF;
  d.persistDeadline = INF;
  d.keepaliveDeadline = INF;
  d.timeWaitDeadline = now + conn.state.cached.timeWaitMs;
  reportClosed(conn, null);
}

/**
 * Process one segment for an existing connection, then send what is due and notify the user.
 * `ipEcn`: the ECN field of the packet it came in (tcp-ecn.ts).
 */
export function connInput(
  conn: TcpConnection,
  h: TcpHeader,
  buf: Uint8Array,
  pOff: number,
  pLen: number,
  ipEcn = 0,
): void {
  const s = conn.state;
  const d = s.delegated;
  const now = conn.engine.env.clock.now();
  conn.stats.segmentsIn++;
  if (d.state === TcpStateId.SYN_SENT) synSentInput(conn, h, buf, pOff, pLen, now);
  else if (d.state !== TcpStateId.CLOSED) syncInput(conn, h, buf, pOff, pLen, now, ipEcn);
  if (d.state !== TcpStateId.CLOSED) {
    tcpOutput(conn);
    scheduleTimer(conn);
  }
  deliverEvents(conn);
}

/**
 * An acceptable segment with an acceptable ACK arrived: the peer is alive. Segments that fail the
 * window or ACK checks say nothing about that (anyone can send them), so they must not hold a
 * keepalive off (Linux resets its probe count in tcp_ack only).
 */
function heard(conn: TcpConnection, now: number): void {
  const d = conn.state.delegated;
  d.lastRecvAt = now;
  conn.state.soft.persistProbesOut = 0;
  if (d.keepaliveProbes !== 0) {
    d.keepaliveProbes = 0;
    armKeepalive(conn);
  }
}

/** RFC 9293 3.10.7.3. */
function synSentInput(
  conn: TcpConnection,
  h: TcpHeader,
  buf: Uint8Array,
  pOff: number,
  pLen: number,
  now: number,
): void {
  const s = conn.state;
  const d = s.delegated;
  const eng = conn.engine;
  const f = h.flags;
  if (f & TcpFlag.ACK && (seqLeq(h.ack, d.iss) || seqGt(h.ack, d.sndMax))) {
    eng.env.counters.inc('drop.tcp.bad-ack');
    if (!(f & TcpFlag.RST)) sendRstReply(eng, s.const.remoteIp, s.const.localIp, h, 0);
    return;
  }
  if (f & TcpFlag.RST) {
    conn.stats.resetsIn++;
    eng.env.counters.inc('tcp.rst.in');
    // Without an acceptable ACK a RST cannot be tied to our SYN (RFC 5961 3 for SYN_SENT).
    if (f & TcpFlag.ACK) terminate(conn, connError('ECONNREFUSED', 'connection refused'), true);
    return;
  }
  if (!(f & TcpFlag.SYN)) return;
  d.irs = h.seq;
  d.rcvNxt = seqAdd(h.seq, 1);
  d.lastAckSent = d.rcvNxt;
  // Our SYN offered a window, and the edge it named stands (Linux keeps the SYN's rcv_wnd from
  // rcv_wup = rcv_nxt): the handshake's ACK keeps it while within a segment of the free space,
  // where counted from nothing it was chosen afresh and could retract what the SYN offered.
  d.rcvAdv = seqAdd(d.rcvNxt, synOffer(conn));
  negotiateSynOptions(conn, h, now);
  ecnSynAnswered(conn, f);
  d.sndWnd = h.window;
  d.maxSndWnd = h.window;
  d.sndWl1 = h.seq;
  if (f & TcpFlag.ACK) {
    d.sndUna = h.ack;
    d.sndWl2 = h.ack;
    handshakeRtt(conn, h, now);
    establish(conn, now);
    heard(conn, now);
    s.soft.ackNow = true;
    // RFC 9293 3.10.7.3: data and a FIN riding on the SYN-ACK are processed like any other text,
    // within the window our SYN offered.
    if (pLen > 0 || f & TcpFlag.FIN) {
      let fl = f;
      const room = Math.min(d.recvBuffer.free, 65535);
      if (pLen > room) {
        pLen = room;
        fl &= ~TcpFlag.FIN;
      }
      textAndFin(conn, fl, h.headerLength, seqAdd(h.seq, 1), buf, pOff, pLen, now, pLen, fl);
    }
  } else {
    // Simultaneous open (RFC 9293 figure 8).
    d.sndWl2 = d.iss;
    d.state = TcpStateId.SYN_RECEIVED;
    sendSyn(conn);
  }
}

/** RFC 9293 3.10.7.4 for every state from SYN_RECEIVED on, with RFC 5961 and RFC 7323 checks. */
function syncInput(
  conn: TcpConnection,
  h: TcpHeader,
  buf: Uint8Array,
  pOff: number,
  pLen: number,
  now: number,
  ipEcn: number,
) {
  const eng = conn.engine;
  const counters = eng.env.counters;
  const s = conn.state;
  const c = s.const;
  const d = s.delegated;
  const soft = s.soft;
  let f = h.flags;
  let seq = h.seq;

  if (d.state === TcpStateId.SYN_RECEIVED && f & TcpFlag.SYN && seq === d.irs && !(f & TcpFlag.RST)) {
    if (!(f & TcpFlag.ACK)) {
      // The peer did not hear our SYN-ACK. Two SYN-ACKs are now out: Karn's rule leaves the
      // handshake without an RTT sample, since the final ACK could answer either.
      conn.synRetransmitted = true;
      // RFC 7323 section 4.3: the resent SYN sits at or below Last.ACK.sent, so its TSval becomes
      // TS.Recent; echoing the first SYN's instead hands the peer the whole SYN timeout (1 s) as
      // its first RTT sample, and srtt/RTO stay inflated for hundreds of round trips. Chimney departs
      // from Linux here on purpose: Linux's request socket answers a resent SYN (tcp_check_req)
      // before it updates ts_recent, so its SYN-ACK echoes the first SYN and its client starts ~1 s
      // high. The RFC's rule costs the peer nothing and gives it a true sample.
      if (c.tsEnabled && h.hasTimestamps && seqGeq(h.tsVal, d.tsRecent)) {
        d.tsRecent = h.tsVal;
        d.tsRecentAt = now;
      }
      conn.stats.retransmits++;
      counters.inc('tcp.retransmits');
      sendSyn(conn);
      return;
    }
    // Simultaneous open: the peer's SYN-ACK; its SYN we already have.
    f &= ~TcpFlag.SYN;
    seq = seqAdd(seq, 1);
  }

  // A pure ACK older than one already processed: it may not move the send window.
  let stale = false;
  // RFC 7323 5.3 R1: PAWS.
  if (c.tsEnabled && h.hasTimestamps && !(f & TcpFlag.RST) && seqLt(h.tsVal, d.tsRecent)) {
    if (now - d.tsRecentAt > PAWS_IDLE_MS) {
      d.tsRecent = h.tsVal;
      d.tsRecentAt = now;
    } else if (
      pLen === 0 &&
      (f & (TcpFlag.ACK | TcpFlag.SYN | TcpFlag.FIN)) === TcpFlag.ACK &&
      seq === d.rcvNxt &&
      h.ack === d.sndUna &&
      !windowUpdateByLinux(s, seq, h.window * 2 ** c.sndWscale) &&
      seqSub(d.tsRecent, h.tsVal) <= Math.max(d.rto, 1000)
    ) {
      // A duplicate pure ACK overtaken by a later one (reordering): PAWS guards against old data,
      // and dropping this ACK would only throw away its SACK blocks and duplicate-ACK signal.
      // Like Linux's disordered-ACK rule (tcp_disordered_ack) it is processed; it cannot move
      // ts.recent back, nor the send window (stale).
      counters.inc('tcp.paws.disordered_acks');
      stale = true;
    } else {
      counters.inc('tcp.paws.drops');
      // Answered, but a pure ACK's answer at most once an interval (Linux: tcp_oow_rate_limited
      // on the PAWS path too): a team member's forwarded ACKs, overtaken by thousands, each drew
      // one at once.
      soft.ackNow = oowAnswer(soft, f, pLen, now, counters);
      if (soft.ackNow) duplicateOf(conn, f, seq, seqAdd(seq, pLen + (f & TcpFlag.FIN ? 1 : 0)));
      return;
    }
  }

  // First: is the segment acceptable? At the window's left edge Chimney follows Linux
  // (tcp_sequence), not RFC 9293 3.10.7.4: a segment is old only if it ends (SYN and FIN counted)
  // before rcv_wup, the rcv.nxt our last ACK carried (d.lastAckSent). One that starts before
  // rcv.nxt but ends at or after rcv_wup (a FIN resent at rcv.nxt - 1, data resent because our ACK
  // was lost) is read: its ACK, SACK blocks and window count, and what it carries that we already
  // have is answered as a duplicate (below). The RFC's test drops it unread, and a peer whose
  // retransmission also acknowledges our data then waits for our RTO to hear it again. TIME_WAIT
  // keeps the RFC's test: Linux handles that state apart (tcp_timewait_state_process), and there
  // a resent FIN is answered and restarts 2MSL below.
  // At the right edge Chimney follows the tcp_sequence of Linux 6.17 and later (9ca48d616ed7,
  // 1e3bb184e941), not the RFC either: a segment that ends at or before rcv.nxt + rcv.wnd is
  // acceptable (a pure ACK at exactly the edge included, which the RFC refuses), and so is one
  // whose FIN alone lies past it (a bare FIN into a zero window: peers that loop on FIN while our
  // window is shut, 2bd99aef1b19). A segment that starts inside the window but ends past it is
  // acceptable only while the receive queue is empty (then its ACK counts and what fits the buffer
  // is kept, none of it into a zero window); with data waiting to be read it is dropped whole, its
  // ACK unread, and answered.
  const segLen = pLen + (f & TcpFlag.SYN ? 1 : 0) + (f & TcpFlag.FIN ? 1 : 0);
  const segEnd = seqAdd(seq, segLen);
  // The payload as it came, for the duplicate-ACK tests: a segment that carried data is never a
  // duplicate ACK, even when all of it is old and trimmed away below, or it is a probe into our
  // shut window whose data waits (Linux's FLAG_DATA is set from the segment's own seq and end_seq).
  // Old data ending at rcv.nxt, a peer's retransmission, and a peer's probes must not count toward
  // a fast retransmit of ours or read as F-RTO's duplicate ACK. Taken before the probe path below
  // sets the length to 0 and clears the FIN (a FIN is data to FLAG_DATA too).
  const carried = pLen;
  const carriedFlags = f;
  let rcvWnd = seqDiff(d.rcvAdv, d.rcvNxt);
  if (rcvWnd < 0) rcvWnd = 0;
  // What is read may run past the window only into an empty receive queue, and only as far as the
  // buffer holds (Linux queues the whole segment; a ring cannot); never past a zero window, where
  // Linux's tcp_data_queue drops data at rcv.nxt (TCPZeroWindowDrop) though tcp_sequence let its
  // ACK be read. A worker's queue empties that way: its application reads the shared ring on
  // another thread, and the window it offered stays zero until the worker hears of the read.
  let room = rcvWnd;
  let ok: boolean;
  if (d.state === TcpStateId.TIME_WAIT) {
    if (segLen === 0) ok = rcvWnd === 0 ? seq === d.rcvNxt : inWindow(seq, d.rcvNxt, rcvWnd);
    else {
      ok =
        rcvWnd > 0 &&
        (inWindow(seq, d.rcvNxt, rcvWnd) || inWindow(seqAdd(seq, segLen - 1), d.rcvNxt, rcvWnd));
    }
  } else {
    ok = seqGeq(segEnd, d.lastAckSent);
    const edge = seqAdd(d.rcvNxt, rcvWnd);
    if (ok && seqGt(segEnd, edge) && !(f & TcpFlag.FIN && seqSub(segEnd, 1) === edge)) {
      if (seqGt(seq, edge) || d.recvBuffer.length > 0) ok = false;
      else if (rcvWnd > 0) room = Math.max(rcvWnd, d.recvBuffer.free);
    }
  }
  if (!ok) {
    if (f & TcpFlag.RST) {
      if (resetAfterFin(d, h.seq)) {
        conn.stats.resetsIn++;
        counters.inc('tcp.rst.in');
        resetReceived(conn);
        return;
      }
      counters.inc('drop.tcp.rst-out-of-window');
      return;
    }
    soft.ackNow = true;
    if (d.state === TcpStateId.TIME_WAIT && f & TcpFlag.FIN) {
      // A retransmitted FIN: our last ACK was lost, so wait the full 2MSL again.
      d.timeWaitDeadline = now + s.cached.timeWaitMs;
    }
    counters.inc('drop.tcp.out-of-window');
    soft.ackNow = oowAnswer(soft, f, pLen, now, counters);
    if (soft.ackNow && d.state !== TcpStateId.TIME_WAIT) {
      duplicateOf(conn, f, seq, segEnd);
      // Linux's tcp_send_dupack: what came again below rcv.nxt means our ACK was lost or late.
      if (segLen > 0 && seqLt(seq, d.rcvNxt)) enterQuickAck(conn);
    }
    return;
  }

  // What of the segment we already have (data, or a FIN at rcv.nxt - 1): Linux's tcp_data_queue
  // answers a segment wholly below rcv.nxt at once, and reports the duplicate (D-SACK) either way.
  // (Taken before the trim below moves seq.)
  const dupSeq = seq;
  const dupEnd = !(f & TcpFlag.SYN) && segLen > 0 && seqLt(seq, d.rcvNxt) ? seqMin(segEnd, d.rcvNxt) : seq;
  const wholeDup = dupEnd !== dupSeq && seqLeq(segEnd, d.rcvNxt);

  // Trim what we already have and what lies beyond the window.
  if (seqLt(seq, d.rcvNxt) && !(f & TcpFlag.SYN)) {
    let drop = seqDiff(d.rcvNxt, seq);
    if (drop > pLen) drop = pLen;
    pOff += drop;
    pLen -= drop;
    seq = seqAdd(seq, drop);
  }
  const over = seqDiff(seqAdd(seq, pLen), seqAdd(d.rcvNxt, room));
  if (over > 0 && !(f & TcpFlag.SYN)) {
    // Data into a shut window is answered at once, as a probe into it is (Linux: out_of_window).
    if (rcvWnd === 0 && pLen > 0) soft.ackNow = true;
    pLen -= Math.min(over, pLen);
    f &= ~(TcpFlag.FIN | TcpFlag.PSH);
  }

  // Second: RST (RFC 5961 3.2: only an exact match resets; in-window gets a challenge ACK).
  if (f & TcpFlag.RST) {
    conn.stats.resetsIn++;
    counters.inc('tcp.rst.in');
    // Counted apart: a RST in TIME_WAIT ends nothing the application still has (RFC 1337).
    if (d.state === TcpStateId.TIME_WAIT) counters.inc('tcp.rst.in.time-wait');
    if (h.seq === d.rcvNxt || resetAfterFin(d, h.seq) || resetAtSackEdge(s, h.seq)) resetReceived(conn);
    else sendChallengeAck(conn, now);
    return;
  }

  // Fourth: SYN in a synchronized state (RFC 5961 4.2).
  if (f & TcpFlag.SYN) {
    counters.inc('tcp.syn.in-window');
    sendChallengeAck(conn, now);
    return;
  }

  // Fifth: ACK.
  if (!(f & TcpFlag.ACK)) {
    counters.inc('drop.tcp.no-ack');
    return;
  }
  if (d.state === TcpStateId.SYN_RECEIVED) {
    if (seqLeq(h.ack, d.sndUna) || seqGt(h.ack, d.sndMax)) {
      counters.inc('drop.tcp.bad-ack');
      sendRstReply(eng, c.remoteIp, c.localIp, h, pLen);
      return;
    }
    d.sndUna = h.ack;
    d.sndWnd = h.window * 2 ** c.sndWscale;
    d.maxSndWnd = Math.max(d.maxSndWnd, d.sndWnd);
    d.sndWl1 = h.seq;
    d.sndWl2 = h.ack;
    handshakeRtt(conn, h, now);
    const l = conn.listener;
    if (l) {
      l.pending--;
      conn.listener = null;
    }
    establish(conn, now);
    // After the state changed: the hook tells an established connection from one that ended.
    l?.onHalfOpen?.(conn, false);
    if (l && !offerToListener(conn, l)) return;
  } else if (!processAck(conn, h, carriedFlags, carried, now, stale)) {
    return;
  }
  heard(conn, now);
  if (d.ecn !== 0) ecnReceived(conn, carriedFlags, carried, ipEcn);

  // RFC 7323 4.3 R3: ts.recent follows the segment that carries the left window edge. Only now,
  // after the RST, SYN and ACK checks: a segment that fails them (a blind injection with a huge
  // TSval, say) must not make every later honest segment fail PAWS (Linux commit bd090dfc634d).
  if (c.tsEnabled && h.hasTimestamps && seqGeq(h.tsVal, d.tsRecent) && seqLeq(h.seq, d.lastAckSent)) {
    d.tsRecent = h.tsVal;
    d.tsRecentAt = now;
  }

  if (dupEnd !== dupSeq) {
    if (wholeDup) {
      counters.inc('tcp.rx.duplicate');
      soft.ackNow = true;
      // Our ACK of it was lost or late (Linux's tcp_data_queue, DelayedACKLost): ACK at once for
      // a while, so the sender's recovery is not held by our delayed-ACK timer.
      enterQuickAck(conn);
    }
    noteDsack(conn, dupSeq, dupEnd);
  }
  if (carried > 0 && c.tsEnabled && h.hasTimestamps && h.tsEcr !== 0) {
    rcvRttFromEcho(s, h.tsEcr, seqDiff(tsNow(now), h.tsEcr), carried);
  }
  textAndFin(conn, f, h.headerLength, seq, buf, pOff, pLen, now, carried, carriedFlags);
}

/**
 * RFC 9293 3.10.7.4 seventh and eighth: segment text, then FIN (in order or remembered).
 * `wholeLen` and `wholeFlags` are the segment's payload length and flags as it came, before the
 * trims at rcv.nxt and at the buffer: the size estimate measures those (receiveData).
 */
function textAndFin(
  conn: TcpConnection,
  f: number,
  headerLen: number,
  seq: number,
  buf: Uint8Array,
  pOff: number,
  pLen: number,
  now: number,
  wholeLen: number,
  wholeFlags: number,
): void {
  const s = conn.state;
  const d = s.delegated;
  const soft = s.soft;
  const counters = conn.engine.env.counters;
  // Seventh: segment text.
  if (pLen > 0) {
    if (canReceive(d.state)) {
      if (d.readClosed) {
        // RFC 9293 3.10.4: nobody will read this; tell the peer rather than pretend.
        counters.inc('tcp.data-after-close');
        sendRst(conn);
        terminate(conn, null, true);
        return;
      }
      receiveData(conn, seq, buf, pOff, pLen, f, headerLen, now, wholeLen, wholeFlags);
    }
  }

  // Eighth: FIN, once everything before it is here. One that arrives ahead of a hole is kept
  // (with the data before it, in soft.ooo) and ACKed at once, like out-of-order data.
  if (f & TcpFlag.FIN && !d.finReceived && canFin(d.state)) {
    const finSeq = seqAdd(seq, pLen);
    if (finSeq !== d.rcvNxt) {
      if (seqGt(finSeq, d.rcvNxt)) {
        if (pLen === 0 && !seqLt(finSeq, d.rcvAdv)) {
          // A bare FIN at the window's right edge (tcp_sequence lets a FIN alone past it): Linux's
          // tcp_data_queue drops what starts at or past the edge (out_of_window) and ACKs at once
          // in quick-ACK mode; the peer sends it again once the window lets it in.
          counters.inc('drop.tcp.out-of-window');
          enterQuickAck(conn);
          soft.ackNow = true;
          return;
        }
        // A FIN with no data is out-of-order data to Linux's tcp_data_queue (end_seq is past seq):
        // past the memory check, tcp_data_queue_ofo measures it (receiveData) and SACKs it, its
        // block ending past the FIN as the queued skb's end_seq does (with data, one block).
        if (conn.engine.memFull !== true) {
          if (pLen === 0) outOfOrderArrived(conn, 0, headerLen, f);
          if (s.const.sackEnabled) recvSackAdd(s, finSeq, seqAdd(finSeq, 1));
        }
        soft.oooFin = true;
        soft.oooFinSeq = finSeq;
        soft.ackNow = true;
        counters.inc('tcp.ooo.fin');
      }
      return;
    }
    finReceived(conn, now);
  } else if (soft.oooFin && !d.finReceived && soft.oooFinSeq === d.rcvNxt && canFin(d.state)) {
    finReceived(conn, now);
  }
}

function finReceived(conn: TcpConnection, now: number): void {
  const s = conn.state;
  const d = s.delegated;
  const soft = s.soft;
  soft.oooFin = false;
  d.rcvNxt = seqAdd(d.rcvNxt, 1);
  d.finReceived = true;
  conn.events |= TcpEvent.REMOTE_END;
  if (d.state === TcpStateId.ESTABLISHED) {
    d.state = TcpStateId.CLOSE_WAIT;
    // Linux's tcp_fin: the ACK waits for our application's FIN (tcp-ack-mode.ts, peerClosing).
    peerClosing(conn);
    if (!soft.ackNow) {
      if (finAckNow(conn) || s.cached.delayedAckMs <= 0) soft.ackNow = true;
      else if (soft.delayedAckDeadline === INF) soft.delayedAckDeadline = now + s.cached.delayedAckMs;
    }
    return;
  }
  // In FIN_WAIT_1 and FIN_WAIT_2 Linux ACKs the FIN at once (tcp_fin: tcp_send_ack).
  soft.ackNow = true;
  if (d.state === TcpStateId.FIN_WAIT_1) {
    if (d.finSent && d.sndUna === d.sndMax) enterTimeWait(conn, now);
    else d.state = TcpStateId.CLOSING;
  } else if (d.state === TcpStateId.FIN_WAIT_2) enterTimeWait(conn, now);
  if (d.keepaliveDeadline !== INF && d.state !== TcpStateId.CLOSE_WAIT) d.keepaliveDeadline = INF;
}

function canFin(st: number): boolean {
  return st === TcpStateId.ESTABLISHED || st === TcpStateId.FIN_WAIT_1 || st === TcpStateId.FIN_WAIT_2;
}

function inWindow(x: number, lo: number, wnd: number): boolean {
  const off = seqDiff(x, lo);
  return off >= 0 && off < wnd;
}

/** Hand a passive open to its listener's accept callback; refused connections are reset. */
function offerToListener(conn: TcpConnection, l: { closed: boolean; accept: (c: TcpConnection) => boolean }) {
  let ok = false;
  if (!l.closed) {
    try {
      ok = l.accept(conn) !== false;
    } catch {
      conn.engine.env.counters.inc('tcp.accept.errors');
      ok = false;
    }
  }
  if (!ok) {
    conn.engine.env.counters.inc('tcp.accept.refused');
    sendRst(conn);
    conn.finished = true;
    terminate(conn, null, false);
    return false;
  }
  return true;
}

export { offerToListener };

/**
 * Linux's tcp_reset_check, an exact match besides rcv.nxt (RFC 5961 3.2 as Linux extends it): once
 * the peer's FIN is in, a RST numbered like that FIN (rcv.nxt - 1), as stacks send after their FIN.
 */
function resetAfterFin(d: TcpState['delegated'], seq: number): boolean {
  const st = d.state;
  return (
    seq === seqSub(d.rcvNxt, 1) &&
    (st === TcpStateId.CLOSE_WAIT || st === TcpStateId.LAST_ACK || st === TcpStateId.CLOSING)
  );
}

/**
 * Linux's other exact match (tcp_validate_incoming): the right edge of the highest block we SACK,
 * where a peer that resets at its snd.nxt numbers its RST while a hole before it is unfilled.
 */
function resetAtSackEdge(s: TcpState, seq: number): boolean {
  const list = s.soft.recvSackRecent;
  if (!s.const.sackEnabled || list.length === 0) return false;
  let max = list[0]!.end;
  for (let i = 1; i < list.length; i++) if (seqGt(list[i]!.end, max)) max = list[i]!.end;
  return seq === max;
}

function resetReceived(conn: TcpConnection): void {
  const d = conn.state.delegated;
  switch (d.state) {
    case TcpStateId.SYN_RECEIVED:
      // A passive open returns to LISTEN (nothing to report); a simultaneous open was refused.
      if (conn.listener) terminate(conn, null, false);
      else terminate(conn, connError('ECONNREFUSED', 'connection refused'), true);
      return;
    case TcpStateId.ESTABLISHED:
    case TcpStateId.FIN_WAIT_1:
    case TcpStateId.FIN_WAIT_2:
    case TcpStateId.CLOSE_WAIT:
      terminate(conn, connError('ECONNRESET', 'connection reset by peer'), true);
      return;
    case TcpStateId.TIME_WAIT:
      // RFC 1337: a RST must not cut TIME_WAIT short (TIME-WAIT assassination).
      conn.engine.env.counters.inc('tcp.rst.time-wait-ignored');
      return;
    default:
      terminate(conn, null, true);
  }
}

/**
 * A segment we drop is answered (Linux's tcp_send_dupack): what it carries below rcv.nxt is
 * reported as a duplicate.
 */
function duplicateOf(conn: TcpConnection, f: number, seq: number, segEnd: number): void {
  const nxt = conn.state.delegated.rcvNxt;
  if (f & TcpFlag.SYN || seq === segEnd || !seqLt(seq, nxt)) return;
  noteDsack(conn, seq, seqMin(segEnd, nxt));
}

/**
 * RFC 2883: the next ACK's first SACK block reports [start, end), received twice. Only the latest
 * is kept (Linux's duplicate_sack[0]); it goes out once.
 */
function noteDsack(conn: TcpConnection, start: number, end: number): void {
  if (!conn.state.const.sackEnabled) return;
  conn.dsackStart = start >>> 0;
  conn.dsackEnd = end >>> 0;
}

/**
 * Linux's tcp_dsack_extend: a duplicate joins the pending D-SACK block when it touches it, and is
 * the block when none is pending; one apart from the pending block is not reported.
 */
function extendDsack(conn: TcpConnection, start: number, end: number): void {
  if (conn.dsackEnd === conn.dsackStart) noteDsack(conn, start, end);
  else if (seqLeq(conn.dsackStart, end) && seqLeq(start, conn.dsackEnd)) {
    noteDsack(conn, seqMin(conn.dsackStart, start), seqMax(conn.dsackEnd, end));
  }
}

/**
 * Whether a segment we drop (out of window, or failing PAWS) draws an ACK now. Segments with data
 * are answered at once (a retransmission we already have must draw its duplicate ACK); answers to
 * pure ACKs and SYNs are rate-limited, as Linux does, so two ends that disagree about sequence
 * numbers cannot ping-pong ACKs at full speed.
 */
function oowAnswer(
  soft: TcpState['soft'],
  f: number,
  pLen: number,
  now: number,
  counters: Counters,
): boolean {
  // A FIN counts as data here, as in Linux's tcp_oow_rate_limited (seq != end_seq): a peer
  // resending its FIN waits on our answer.
  if ((pLen > 0 || f & TcpFlag.FIN) && !(f & TcpFlag.SYN)) return true;
  // -1 alone is "never": a time from an older clock (a worker thread's starts at its spawn) arrives
  // below 0 and is still a recent answer.
  if (soft.lastOowAckAt !== -1 && now - soft.lastOowAckAt < OOW_ACK_INTERVAL_MS) {
    counters.inc('tcp.oow_ack.limited');
    return false;
  }
  soft.lastOowAckAt = now;
  return true;
}

/**
 * Linux's tcp_may_update_window for a segment that acknowledges nothing new: a newer segment, or
 * the same sequence number with a larger window or a zero one. A pure ACK overtaken by a later
 * one that would update the window is not a harmless duplicate: once the window update has come,
 * a zero window from before it would shut the window again, and the sender would wait for its
 * persist timer (seconds once the RTO has grown) while the receiver waits for data.
 */
function windowUpdateByLinux(s: TcpState, seq: number, wnd: number): boolean {
  const d = s.delegated;
  return seqLt(d.sndWl1, seq) || (seq === d.sndWl1 && (wnd > d.sndWnd || wnd === 0));
}

/** The ACK field of a segment in a synchronized state. False: drop the rest of the segment. */
function processAck(
  conn: TcpConnection,
  h: TcpHeader,
  f: number,
  pLen: number,
  now: number,
  stale = false,
): boolean {
  const s = conn.state;
  const c = s.const;
  const d = s.delegated;
  const counters = conn.engine.env.counters;
  const ack = h.ack;
  if (seqGt(ack, d.sndMax)) {
    counters.inc('drop.tcp.ack-too-new');
    sendChallengeAck(conn, now);
    return false;
  }
  // RFC 5961 5.2: an ACK from before the largest window the peer ever offered is blind injection.
  if (seqLt(ack, seqSub(d.sndUna, d.maxSndWnd))) {
    counters.inc('drop.tcp.ack-too-old');
    sendChallengeAck(conn, now);
    return false;
  }
  const wnd = h.window * 2 ** c.sndWscale;
  let finAcked = false;
  const advanced = seqGt(ack, d.sndUna);
  const old = seqLt(ack, d.sndUna);
  // Linux's tcp_ack jumps to old_ack before it reads ECE (FLAG_ECE is set only on the slow path
  // after that test): an old ACK, SACK blocks or not, never forbids an undo.
  const ece = d.ecn !== 0 && (f & TcpFlag.ECE) !== 0 && !old;
  if (ece) ecnForbidsUndo(s);
  if (c.sackEnabled && h.sackCount > 0) dsack(conn, h, ack);
  // RFC 6937 DeliveredData: the change in snd.una plus the change in SACKed bytes.
  const sackedBefore = c.sackEnabled ? sackedBytes(s) : 0;
  const unaBefore = d.sndUna;
  const dupsBefore = d.dupAcks;
  const recoveringBefore = s.soft.inRecovery;
  // After a timeout: data sent before it (below recoveryPoint) that the peer had SACKed.
  const soft0 = s.soft;
  const episode = !soft0.inRecovery && soft0.undoArmed && seqLt(d.sndUna, soft0.recoveryPoint);
  let origSackedBefore = 0;
  let origSackedCovered = 0;
  if (episode && c.sackEnabled) {
    origSackedBefore = sackedIn(s, d.sndUna, soft0.recoveryPoint);
    if (advanced) origSackedCovered = sackedIn(s, d.sndUna, seqMin(ack, soft0.recoveryPoint));
  }
  const sack = c.sackEnabled && h.sackCount > 0;
  let newlySacked = 0;
  let dup = false;
  if (advanced) {
    finAcked = newAck(conn, h, ack, now);
    if (sack) {
      newlySacked = sackUpdate(s, h.sackBlocks, h.sackCount);
      sackProgress(conn, newlySacked, now);
    }
  } else {
    newlySacked = sack ? sackUpdate(s, h.sackBlocks, h.sackCount) : 0;
    if (sack) sackProgress(conn, newlySacked, now);
    // RFC 6675 section 2: with SACK a duplicate ACK is one that SACKs new data, whatever its
    // window says (Linux moves its window on nearly every ACK). Without SACK information the
    // RFC 5681 definition applies: no data, no window change.
    dup = sack
      ? newlySacked > 0
      : pLen === 0 && !(f & (TcpFlag.SYN | TcpFlag.FIN)) && wnd === d.sndWnd && wnd !== 0;
    dup &&= ack === d.sndUna && d.sndMax !== d.sndUna && d.persistDeadline === INF;
    // A plain duplicate counts toward fast retransmit only when SACK was not negotiated: Linux
    // emulates a scoreboard from them for a peer without SACK alone (tcp_add_reno_sack) and
    // otherwise reads loss from what is SACKed. A SACK receiver that holds data above a hole
    // says so in every ACK (RFC 2018 4), so one without blocks (a repeated window update, a peer
    // prodding after a failover) shows nothing arrived past snd.una: no evidence that the head,
    // rather than the whole flight, was lost. F-RTO still reads it as the loss being real
    // (below; Linux's num_dupack in tcp_process_loss).
    if (dup && (sack || !c.sackEnabled)) dupAck(conn, now);
  }
  // An ACK that moved snd.una went through ecnAck in newAck, before the window could grow.
  if (d.ecn !== 0 && !old && !advanced) ecnAck(conn, f, now);
  conn.holdRetransmits = false;
  let undone = false;
  if (episode && !soft0.inRecovery && soft0.undoArmed) {
    // Linux's FLAG_ORIG_SACK_ACKED: data sent before the timeout, never resent and not SACKed
    // before, was cumulatively ACKed or is newly SACKed.
    const rp = soft0.recoveryPoint;
    let orig = 0;
    if (advanced) {
      const from = seqMax(unaBefore, soft0.highRxt);
      const to = seqMin(d.sndUna, rp);
      if (seqGt(to, from)) orig = seqDiff(to, from) - origSackedCovered;
    }
    if (c.sackEnabled && seqLt(d.sndUna, rp)) {
      orig += sackedIn(s, d.sndUna, rp) - (origSackedBefore - origSackedCovered);
    }
    undone = timeoutEpisodeAck(conn, h, advanced, orig > 0, dup, now);
  }
  // The episode is over once everything sent before the timeout is ACKed.
  if (episode && seqGeq(d.sndUna, soft0.recoveryPoint)) soft0.frto = 0;
  if (
    advanced &&
    c.sackEnabled &&
    soft0.inRecovery &&
    soft0.undoArmed &&
    soft0.undoTsVal !== 0 &&
    h.hasTimestamps &&
    h.tsEcr !== 0 &&
    seqLt(h.tsEcr, soft0.undoTsVal)
  ) {
    // Linux's tcp_try_undo_partial: the partial ACK echoes a TSval older than the recovery's
    // first retransmission, so an original filled the hole; the path reorders by that much.
    conn.engine.env.counters.inc('tcp.reorder.ts');
    conn.rack.noteLateHole(s, unaBefore, effectiveMss(s));
    // With a retransmission still out, Linux clocks out new data on this ACK but marks and
    // resends nothing more; with none, the reduction was needless and is undone, and the
    // recovery ends (tcp_try_keep_open). RACK then looks afresh and may start a new one.
    if (conn.rack.resentOutstanding(s)) conn.holdRetransmits = true;
    else {
      partialUndo(conn);
      // Back in Linux's Open state, tcp_cong_control grows the window by what this ACK delivered.
      const delivered = seqDiff(d.sndUna, unaBefore) + sackedBytes(s) - sackedBefore;
      conn.engine.congestion(conn).onAck(s, delivered, -1, now);
    }
  }
  if (c.sackEnabled && (advanced || h.sackCount > 0)) rackDetect(conn, now, conn.holdRetransmits);
  if (undone && sack) lossBehindSack(conn, now);
  // A recovery this ACK started keeps no window to give back either.
  if (ece && s.soft.inRecovery) ecnForbidsUndo(s);
  if (conn.rack.tlpEnd !== -1) {
    // A FIN (or SYN) takes sequence space as data does: Linux's FLAG_DATA, so no pure duplicate.
    const pureDup =
      !advanced && pLen === 0 && !(f & (TcpFlag.SYN | TcpFlag.FIN)) && newlySacked === 0 && wnd === d.sndWnd;
    // After RACK, unlike Linux's order: a recovery this ACK started cuts the window once, and
    // ends the probe's episode with it.
    if (conn.rack.probeAck(ack, pureDup) && !s.soft.inRecovery) probeRepairedLoss(conn, now);
  }
  if (s.soft.inRecovery || (d.ecn & TcpEcn.CWR) !== 0) {
    let delivered = seqDiff(d.sndUna, unaBefore) + sackedBytes(s) - sackedBefore;
    let unaAdvanced = advanced;
    if (!c.sackEnabled) {
      // A reduction without SACK (a loss recovery's or an ECE's): Linux's scoreboard for such a
      // peer counts a duplicate ACK as one segment delivered (tcp_add_reno_sack), none past the
      // cap (tcp_limit_reno_sacked, renoCapDupAcks), and the ACK that then moves snd.una as what
      // it ACKs less those, at least one (tcp_remove_reno_sacks). Counted as nothing, each
      // duplicate clocked out a segment by limited transmit alone, past what PRR allows.
      const mss = effectiveMss(s);
      if (dup) delivered = (d.dupAcks - dupsBefore) * mss;
      else if (advanced) delivered = Math.max(delivered - dupsBefore * mss, mss);
      // A partial ACK marks the new head lost (tcp_newreno_mark_lost): tcp_cwnd_reduction adds
      // no segment for snd.una's move when the ACK marked a loss.
      if (s.soft.inRecovery) unaAdvanced = false;
    }
    prrAck(conn, delivered, unaAdvanced);
    if (!c.sackEnabled) renoResendHead(conn, now, !recoveringBefore);
  }
  // The send window moves with an ACK of new data, or with a segment newer than the last update
  // (RFC 9293 3.10.7.4, Linux tcp_may_update_window): an old ACK never moves it, and an ACK of new
  // data always does, even when out-of-order data already raised SND.WL1 past its sequence number.
  if (
    !old &&
    !stale &&
    (advanced || seqLt(d.sndWl1, h.seq) || (d.sndWl1 === h.seq && seqLeq(d.sndWl2, ack)))
  ) {
    d.sndWnd = wnd;
    if (wnd > d.maxSndWnd) d.maxSndWnd = wnd;
    d.sndWl1 = h.seq;
    d.sndWl2 = ack;
    // The probe timer stays while the window is too small for the next segment (Linux's
    // tcp_ack_probe): it sends what fits when it fires.
    if (wnd > 0 && d.persistDeadline !== INF && windowTakesNext(s, effectiveMss(s))) {
      d.persistDeadline = INF;
      d.persistBackoff = 0;
    }
  }
  if (s.soft.repaired) repairAnswered(conn);
  if (finAcked) {
    if (d.state === TcpStateId.FIN_WAIT_1) {
      d.state = TcpStateId.FIN_WAIT_2;
      // Nobody will read anything more: do not wait forever for the peer's FIN.
      if (d.readClosed) d.timeWaitDeadline = now + s.cached.timeWaitMs;
    } else if (d.state === TcpStateId.CLOSING) {
      enterTimeWait(conn, now);
    } else if (d.state === TcpStateId.LAST_ACK) {
      terminate(conn, null, true);
      return false;
    }
  }
  return true;
}

/** snd.una advances. Returns true if the ACK covers our FIN. */
function newAck(conn: TcpConnection, h: TcpHeader, ack: number, now: number): boolean {
  const s = conn.state;
  const c = s.const;
  const d = s.delegated;
  const soft = s.soft;
  let acked = seqDiff(ack, d.sndUna);
  const flightBefore = seqDiff(d.sndMax, d.sndUna);
  let finAcked = false;
  if (d.finSent && ack === d.sndMax) {
    finAcked = true;
    acked--;
  }
  d.sendBuffer.consume(Math.min(acked, d.sendBuffer.length));
  d.sndUna = ack;
  if (seqLt(d.sndNxt, ack)) d.sndNxt = ack;
  let rtt = -1;
  let staleRtt = -1;
  if (c.tsEnabled && h.hasTimestamps && h.tsEcr !== 0) {
    rtt = seqDiff(tsNow(now), h.tsEcr);
    if (rtt < 0 || rtt > 600_000) rtt = -1;
    else if (conn.rttEchoFloor >= 0 && seqLt(h.tsEcr, conn.rttEchoFloor)) {
      // The peer echoes the last segment that advanced its window; when the ACKs for a segment
      // sent before a failover were lost, that segment's echo arrives only now and would turn the
      // outage into an RTT (seconds), and the RTO after it into tens of seconds.
      staleRtt = rtt;
      rtt = -1;
      conn.engine.env.counters.inc('tcp.rtt.stale-echo');
    }
  } else if (soft.rttActive && seqGt(ack, soft.rttSeq)) {
    rtt = now - soft.rttSentAt;
    soft.rttActive = false;
  }
  if (rtt >= 0) {
    const perRtt = c.tsEnabled ? Math.ceil(flightBefore / (2 * effectiveMss(s))) : 1;
    rttSample(s, rtt, perRtt);
    conn.rack.noteRtt(rtt);
  }
  // The backoff ends with a new RTT sample (RFC 6298 5; Linux resets icsk_backoff in
  // tcp_ack_update_rtt alone), not with any ACK: after Karn's rule, none. Linux takes a sample
  // from every echo; under rttEchoFloor a stale one ends the backoff only when its round trip fits
  // the backed-off RTO. One longer says the path holds data longer than the timer waits (a queue
  // that filled behind an RTO sized to its empty RTT): collapsed on each such ACK, the backoff
  // never caught up and the RTO never learnt the queue (sim team of LocalNics, 2 Mbit/s into
  // 64 KiB: 6,632 timeouts, 80 s for 24 s of wire). One shorter is what Linux's sample would
  // collapse: kept, a lost resend after it waited twice the RTO (sim-loss at 10 %: 27.3 -> 31.3 s).
  if (rtt >= 0 || (staleRtt >= 0 && staleRtt <= backedOffRto(s))) d.backoff = 0;
  soft.tlpDeadline = INF;
  if (soft.tlpInFlight && seqGeq(ack, soft.tlpHighSeq)) soft.tlpInFlight = false;
  const cc = conn.engine.congestion(conn);
  const recovering = soft.inRecovery;
  if (!c.sackEnabled) renoAcked(s, acked, effectiveMss(s));
  if (soft.inRecovery) {
    if (seqGeq(ack, soft.recoveryPoint)) {
      soft.inRecovery = false;
      soft.rackLostEdge = ack;
      d.dupAcks = 0;
      if (soft.undoArmed) conn.rack.noteRecoveryEnd();
      cc.onRecoveryExit(s, now);
    } else if (!c.sackEnabled) {
      // RFC 6582 3.2 step 5: a partial ACK means the next segment was lost as well. It goes as
      // PRR allows (processAck), with no RFC 6582 deflation: cwnd is PRR's.
      renoPartialAck(s);
    }
  } else d.dupAcks = 0;
  // Linux's order in tcp_ack: the ECN state changes (tcp_fastretrans_alert), then the window grows
  // unless a reduction runs (tcp_cong_control), so an ACK with ECE grows nothing PRR must take back.
  const reducing = d.ecn !== 0 && ecnAck(conn, h.flags, now);
  if (!recovering && !reducing) cc.onAck(s, acked, rtt, now);
  if (c.sackEnabled) sackPrune(s);
  d.rtxDeadline = d.sndUna === d.sndMax || d.persistDeadline !== INF ? INF : now + backedOffRto(s);
  // The writer is held by the ring: with the flight larger than half of it, a larger ring.
  if (conn.wantWritable) maybeGrowSendRing(conn);
  if ((conn.wantWritable && d.sendBuffer.free > 0) || conn.wantAcked) {
    conn.wantWritable = false;
    conn.wantAcked = false;
    conn.events |= TcpEvent.WRITABLE;
  }
  return finAcked;
}

/**
 * An ACK while the data sent before a timeout is still outstanding: was the timeout spurious?
 * Linux's tcp_process_loss. Eifel (RFC 3522): an ACK that echoes a timestamp older than our first
 * retransmission answers an original. F-RTO (RFC 5682, SACK-enhanced as Linux's tcp_frto=2): if
 * data never retransmitted is ACKed or SACKed, the originals were only delayed; if the first ACK
 * covers just the retransmission, two new segments go out instead of more retransmissions, and
 * the ACK they draw decides. A spurious timeout is undone and nothing more is resent for it.
 * True when this ACK undid the timeout.
 */
function timeoutEpisodeAck(
  conn: TcpConnection,
  h: TcpHeader,
  advanced: boolean,
  origAcked: boolean,
  dup: boolean,
  now: number,
): boolean {
  const s = conn.state;
  const d = s.delegated;
  const soft = s.soft;
  const counters = conn.engine.env.counters;
  if (
    advanced &&
    soft.undoTsVal !== 0 &&
    h.hasTimestamps &&
    h.tsEcr !== 0 &&
    seqLt(h.tsEcr, soft.undoTsVal)
  ) {
    undoTimeout(conn);
    counters.inc('tcp.rto.undo.eifel');
    return true;
  }
  if (soft.frto === 0) return false;
  if (origAcked) {
    undoTimeout(conn);
    counters.inc('tcp.rto.spurious');
    return true;
  }
  if (soft.frto === 2) {
    // Step 3a: the new segments drew a duplicate ACK; the loss was real, resend as usual.
    if (dup) {
      soft.frto = 0;
      d.sndNxt = d.sndUna;
    }
    return false;
  }
  if (!advanced || seqGeq(d.sndUna, soft.recoveryPoint)) return false;
  // Step 2b: the retransmission is ACKed and nothing else yet; probe with new data. Without any
  // (all of it was sent before the timeout, or the window is full) the timeout is handled the
  // usual way (2b's last sentence).
  const mss = effectiveMss(s);
  const next = d.sndNxt;
  d.sndNxt = d.sndMax;
  let sent = 0;
  for (let i = 0; i < 2; i++) {
    const left = seqDiff(seqAdd(d.sndUna, d.sndWnd), d.sndMax);
    if (left <= 0 || !hasUnsent(s)) break;
    const used = transmit(conn, d.sndMax, Math.min(mss, left), now);
    if (used === 0) break;
    sent += used;
    d.sndNxt = d.sndMax;
  }
  if (sent === 0) {
    d.sndNxt = next;
    soft.frto = 0;
    return false;
  }
  // The probes are in flight like the originals: an undo that puts snd.nxt back where it was at
  // the timeout must not put it below them, or they go again as needless retransmissions (Linux
  // never moves snd_nxt back on an undo). A receiver that ACKs every segment (quick-ACK mode after
  // the silence, tcp-ack-mode.ts) answers the retransmission alone first, so 2b comes before the
  // ACK that shows the originals arrived.
  if (seqGt(d.sndMax, soft.undoNxt)) soft.undoNxt = d.sndMax;
  soft.frto = 2;
  return false;
}

/** Back to the window before a reduction that proved needless (RFC 3708, RFC 9438 4.9). */
function undoReduction(s: TcpState): void {
  const d = s.delegated;
  const soft = s.soft;
  soft.undoArmed = false;
  if (soft.undoCwnd > d.cwnd) d.cwnd = soft.undoCwnd;
  if (soft.undoSsthresh > d.ssthresh) {
    d.ssthresh = soft.undoSsthresh;
    // Linux's tcp_undo_cwnd_reduction withdraws a CWR not yet sent (tcp_ecn_withdraw_cwr): the
    // cut it would announce is gone.
    d.ecn &= ~TcpEcn.QUEUE_CWR;
  }
  if (soft.undoWMax > soft.cubic.wMax) soft.cubic.wMax = soft.undoWMax;
  soft.cubic.afterRto = false;
  soft.cubic.epochStart = -1;
}

/**
 * Linux's tcp_try_undo_partial with no retransmission left out: a late original, not our resend,
 * filled the hole, so the window cut was needless. It is undone (tcp_undo_cwnd_reduction, which
 * also forgets what was marked lost) and the recovery ends; a loss RACK finds on this ACK starts
 * a new one at once (Linux's fall-through to tcp_time_to_recover).
 */
function partialUndo(conn: TcpConnection): void {
  const s = conn.state;
  const d = s.delegated;
  const soft = s.soft;
  undoReduction(s);
  soft.inRecovery = false;
  d.dupAcks = 0;
  soft.recoveryPoint = d.sndUna;
  soft.rackLostEdge = d.sndUna;
  soft.highRxt = d.sndUna;
  conn.engine.env.counters.inc('tcp.undo.partial');
}

function undoTimeout(conn: TcpConnection): void {
  const s = conn.state;
  const d = s.delegated;
  const soft = s.soft;
  undoReduction(s);
  conn.rack.forgetBelow(d.sndUna);
  soft.frto = 0;
  // The originals arrived: nothing is resent on the timeout's account any more, and losses
  // found from here on start a fast recovery of their own. In flight is what snd.nxt said before
  // the timeout, not snd.max: a failover's prod rewinds the flight the failed path lost, and put
  // back at snd.max that rest waited out the next timeout (a whole second on a connection without
  // an RTT sample: the failover bench's 2 s stall). An ACK past it says what arrived, as after a
  // prod: the rest goes from there.
  d.sndNxt = seqGt(soft.undoNxt, d.sndMax) ? d.sndMax : seqMax(soft.undoNxt, d.sndUna);
  soft.recoveryPoint = d.sndUna;
  soft.rackLostEdge = d.sndUna;
}

/**
 * The peer's answer to a rebuilt connection's probe (prod, soft.repaired): its ACK, with SACK, says
 * what of the flight the dead owner sent arrived. That flight left a round trip ago at least, so
 * what the peer still lacks of it was lost, not delayed: it goes again from snd.una at once, the
 * SACKed ranges skipped as after a timeout, instead of waiting for a timer with nothing of it
 * resent. Any ACK counts as the answer: one the peer sent before the probe came (the dead owner's
 * queue held it, replayed here) may say less than the peer has by now, and costs at most the one
 * segment cwnd lets go before the real answer moves snd.una past it. Nor can the echoed TSval
 * tell them apart: the peer answers a segment below its window with TS.Recent, the dead owner's.
 */
function repairAnswered(conn: TcpConnection): void {
  const s = conn.state;
  s.soft.repaired = false;
  const d = s.delegated;
  if (d.sndUna === d.sndMax || d.persistDeadline !== INF) return;
  d.sndNxt = d.sndUna;
  s.soft.rttActive = false;
  conn.engine.env.counters.inc('tcp.repair.resent');
}

/**
 * Lost retransmissions. RFC 6675 retransmits each hole once per recovery, so a retransmission
 * that is lost again waits for the RTO. When, a round trip after our last retransmission, the
 * peer still SACKs newly arrived data while the retransmitted holes stay open, those copies were
 * lost too (the idea behind RACK, RFC 8985): let NextSeg pick the holes again.
 */
function sackProgress(conn: TcpConnection, newlySacked: number, now: number): void {
  const s = conn.state;
  const soft = s.soft;
  const d = s.delegated;
  if (!soft.inRecovery || newlySacked <= 0 || soft.rxtAt === -1 || !seqGt(soft.highRxt, d.sndUna)) return;
  const rtt = d.srtt > 0 ? d.srtt * 1.25 + 1 : d.rto;
  if (now - soft.rxtAt < rtt) return;
  soft.highRxt = d.sndUna;
  soft.rxtAt = now;
  conn.engine.env.counters.inc('tcp.lost_retransmits');
}

/**
 * RFC 2883: a first SACK block below the cumulative ACK, or inside the second block, reports a
 * segment that arrived twice. When such reports cover every byte the last recovery resent, the
 * losses were reordering and the window cut was needless: it is undone (RFC 3708, Linux
 * tcp_try_undo_dsack).
 */
function dsack(conn: TcpConnection, h: TcpHeader, ack: number): void {
  const s = conn.state;
  const soft = s.soft;
  const l = h.sackBlocks[0]! >>> 0;
  const r = h.sackBlocks[1]! >>> 0;
  if (!seqLt(l, r)) return;
  const below = seqLeq(r, ack);
  const inside = h.sackCount > 1 && seqGeq(l, h.sackBlocks[2]! >>> 0) && seqLeq(r, h.sackBlocks[3]! >>> 0);
  if (!below && !inside) return;
  if (l === conn.probeOctet && r === seqAdd(l, 1)) {
    // Our prod's probe came back: no retransmission of ours was needless.
    conn.probeOctet = -1;
    return;
  }
  conn.engine.env.counters.inc('tcp.dsack.received');
  const probe = conn.rack.probeDsack(l, r, effectiveMss(s));
  if (probe) conn.engine.env.counters.inc('tcp.tlp.dsack');
  conn.rack.noteDsack(s.delegated.sndUna, s.delegated.sndNxt, seqDiff(r, l), probe);
  if (!soft.undoArmed || soft.undoRetrans <= 0) return;
  if (seqLt(l, soft.undoLow) || seqGt(r, soft.recoveryPoint)) return;
  soft.undoRetrans = Math.max(soft.undoRetrans - seqDiff(r, l), 0);
  if (soft.undoRetrans > 0) return;
  undoReduction(s);
  conn.engine.env.counters.inc('tcp.undo.dsack');
}

const rackLowest = { seq: 0 };

/**
 * RACK (RFC 8985 6): after the scoreboard took this ACK, what was sent a reordering window before
 * the newest delivered segment is lost. That starts recovery without three duplicate ACKs (one
 * SACKed tail loss probe suffices) and finds retransmissions that were lost again. What waits on
 * the reordering window alone is left to RACK's reordering timer (rackReoTimeout).
 */
function rackDetect(conn: TcpConnection, now: number, noMarks = false): void {
  const lostEnd = conn.rack.onAck(conn.state, now, rackLowest, effectiveMss(conn.state));
  if (!noMarks) rackMark(conn, lostEnd, rackLowest.seq, now);
}

/**
 * The ACK that undid a timeout (F-RTO or Eifel: originals arrived) SACKs data above a hole. The
 * case: the first ACK after a timeout answers its resend of the head and SACKs originals the
 * peer holds above holes, the ACKs that SACKed them as they came having been lost. Linux, back
 * in Open, asks at once whether to recover (tcp_fastretrans_alert falls through to
 * tcp_time_to_recover; RACK's reordering window is zero once DupThresh segments are SACKed) and
 * resends the holes within a millisecond. Here a burst the RACK log holds as one entry shows no
 * order within it, RFC 6675 asks IsLost only on a duplicate ACK, and none followed: the holes
 * waited for the next timeout, 1 s. Only after an undo: on every advancing ACK (as Linux) it
 * also put a receiver that SACKs islands it never fills into recovery it cannot leave (the
 * scoreboard attack in attack-bystander.test.ts), where RACK's own timing is the better guide.
 */
function lossBehindSack(conn: TcpConnection, now: number): void {
  const s = conn.state;
  const d = s.delegated;
  const soft = s.soft;
  if (soft.inRecovery || d.sndUna === d.sndMax || d.persistDeadline !== INF) return;
  if (!seqGeq(d.sndUna, soft.recoveryPoint) || !sackIsLost(s, d.sndUna, effectiveMss(s))) return;
  conn.engine.env.counters.inc('tcp.rto.undo.recoveries');
  enterRecovery(conn, now);
}

/** RFC 5681 3.2 / RFC 6582 / RFC 6675 5: duplicate ACKs and the start of loss recovery. */
function dupAck(conn: TcpConnection, now: number): void {
  const s = conn.state;
  const c = s.const;
  const d = s.delegated;
  const soft = s.soft;
  const mss = effectiveMss(s);
  if (c.sackEnabled) d.dupAcks++;
  else renoDupAck(s, mss);
  if (!soft.inRecovery) {
    // RFC 6675's fixed DupThresh, not the adaptive degree (RackLog.reordering): Linux starts a
    // SACK recovery from RACK's marks alone, and the degree as a count here, grown by the false
    // reordering a three-block SACK list shows under heavy loss (an older block reported only
    // once a resend joins it to a newer one; Linux reads it the same way), left holes to the
    // timer: sim-loss 5 % 0.834 -> 2.111 s (1 -> 3 RTOs), 10 % 11.86 -> 12.64 s, seeds 1-3.
    // Without SACK the threshold is the degree (Linux's tcp_newreno_mark_lost: sacked_out, the
    // duplicates, at tp->reordering), which duplicates past the flight move (renoDupAck).
    const lost = c.sackEnabled
      ? d.dupAcks >= DUP_THRESH || sackIsLost(s, d.sndUna, mss)
      : d.dupAcks >= soft.reordering;
    if (!lost || !seqGeq(d.sndUna, soft.recoveryPoint)) return;
    enterRecovery(conn, now);
  }
}

function receiveData(
  conn: TcpConnection,
  seq: number,
  buf: Uint8Array,
  pOff: number,
  pLen: number,
  flags: number,
  headerLen: number,
  now: number,
  wholeLen: number,
  wholeFlags: number,
) {
  const fin = (flags & TcpFlag.FIN) !== 0;
  const s = conn.state;
  const d = s.delegated;
  const soft = s.soft;
  const memFull = conn.engine.memFull === true;
  if (seq === d.rcvNxt) {
    const ring = d.recvBuffer;
    // At the memory limit the ring takes only what fits without growing past its floor; the rest is not
    // acknowledged and comes again (Linux's tcp_try_rmem_schedule failing: TCPRcvQDrop).
    const n = ring.write(buf, pOff, memFull ? Math.min(pLen, roomAtLimit(ring)) : pLen);
    d.rcvNxt = seqAdd(d.rcvNxt, n);
    conn.stats.bytesIn += n;
    if (soft.ooo.length > 0) {
      drainOoo(conn);
      // RFC 5681 4.2: a segment that fills a hole is ACKed at once, so the sender's recovery ends.
      soft.ackNow = true;
    }
    // Data kept past our edge (into an empty queue, as tcp_sequence lets it in) leaves no promise
    // ahead: the edge comes up to rcv.nxt at once, not at our next ACK, since a state whose edge
    // lies behind rcv.nxt is refused by validateTcpState (an offload, a NIC's upload).
    if (seqGt(d.rcvNxt, d.rcvAdv)) d.rcvAdv = d.rcvNxt;
    if (s.const.sackEnabled && soft.recvSackRecent.length > 0) recvSackPrune(s);
    if (n > 0) {
      conn.events |= TcpEvent.READABLE;
      // Measured whole, as Linux's tcp_event_data_recv measures skb->len: the bytes we already had
      // (a resend overlapping rcv.nxt) and those past the buffer's room are the peer's segment too.
      dataArrived(conn, now, wholeLen, headerLen, wholeFlags);
    }
    // All of it taken, so the FIN behind it is in order and ends ESTABLISHED (finReceived).
    if (fin && n === pLen && d.state === TcpStateId.ESTABLISHED) peerClosing(conn);
    if (!soft.ackNow) {
      // The every-second-segment ACK (RFC 1122 4.2.3.2) as Linux counts it, in bytes of the
      // peer's segment size; a coalesced super-segment from an offloading link passes it alone.
      if (dataAckNow(conn) || s.cached.delayedAckMs <= 0) soft.ackNow = true;
      else if (soft.delayedAckDeadline === INF) soft.delayedAckDeadline = now + s.cached.delayedAckMs;
    }
    return;
  }
  // Out of order: keep it and tell the sender at once (duplicate ACK plus SACK, RFC 5681 4.2).
  // Only data actually held may be SACKed (RFC 2018 8 lets a receiver renege, but a sender that
  // trusts the block would never resend it before its RTO).
  if (memFull) {
    conn.engine.env.counters.inc('drop.tcp.ooo-mem');
  } else {
    outOfOrderArrived(conn, wholeLen, headerLen, wholeFlags);
    if (oooInsert(conn, seq, buf, pOff, pLen)) {
      if (s.const.sackEnabled) recvSackAdd(s, seq, seqAdd(seq, pLen));
      outOfOrderKept(conn, wholeLen);
    } else {
      conn.engine.env.counters.inc('drop.tcp.ooo-cap');
    }
  }
  conn.engine.env.counters.inc('tcp.ooo.segments');
  soft.ackNow = true;
}

function drainOoo(conn: TcpConnection): void {
  const s = conn.state;
  const d = s.delegated;
  const ooo = s.soft.ooo;
  // What held data the in-order segment just taken covers came twice: a D-SACK, as Linux's
  // tcp_ofo_queue reports it (dsack_high, tcp_dsack_extend).
  const high = d.rcvNxt;
  let i = 0;
  while (i < ooo.length) {
    const o = ooo[i]!;
    if (seqGt(o.seq, d.rcvNxt)) break;
    conn.oooBytes -= o.data.length;
    const end = seqAdd(o.seq, o.data.length);
    if (seqLt(o.seq, high)) extendDsack(conn, o.seq, seqMin(end, high));
    if (seqGt(end, d.rcvNxt)) {
      const skip = seqDiff(d.rcvNxt, o.seq);
      const n = d.recvBuffer.write(o.data, skip, o.data.length - skip);
      d.rcvNxt = seqAdd(d.rcvNxt, n);
      conn.stats.bytesIn += n;
    }
    i++;
  }
  if (i > 0) ooo.splice(0, i);
}

/**
 * Insert the parts of [seq, seq+len) not already held, keeping soft.ooo sorted and disjoint.
 * False if the bound on segments kept part of it out. What was already held is reported as a
 * duplicate (RFC 2883), as Linux's tcp_data_queue_ofo does: the first held range the segment
 * covers (tcp_dsack_set), extended over held ranges next to it (tcp_dsack_extend).
 */
function oooInsert(conn: TcpConnection, seq: number, buf: Uint8Array, pOff: number, pLen: number): boolean {
  const ooo = conn.state.soft.ooo;
  let start = seq;
  const end = seqAdd(seq, pLen);
  let dupStart = 0;
  let dupEnd = 0;
  let i = 0;
  let ok = true;
  while (i < ooo.length && seqLeq(seqAdd(ooo[i]!.seq, ooo[i]!.data.length), start)) i++;
  while (seqLt(start, end)) {
    if (ooo.length >= OOO_MAX_SEGMENTS) {
      ok = false;
      break;
    }
    const o = ooo[i];
    if (!o || seqGeq(o.seq, end)) {
      ooo.splice(i, 0, piece(buf, pOff + seqDiff(start, seq), seqDiff(end, start), start));
      conn.oooBytes += seqDiff(end, start);
      break;
    }
    if (seqLt(start, o.seq)) {
      ooo.splice(i, 0, piece(buf, pOff + seqDiff(start, seq), seqDiff(o.seq, start), start));
      conn.oooBytes += seqDiff(o.seq, start);
      i++;
    }
    const held = seqMax(start, o.seq);
    const heldEnd = seqMin(end, seqAdd(o.seq, o.data.length));
    if (dupEnd === dupStart) {
      dupStart = held;
      dupEnd = heldEnd;
    } else if (seqLeq(held, dupEnd)) {
      // Linux's tcp_sack_extend: only a range that touches the block joins it.
      dupEnd = seqMax(dupEnd, heldEnd);
    }
    start = seqMax(start, seqAdd(o.seq, o.data.length));
    i++;
  }
  if (dupEnd !== dupStart) {
    conn.engine.env.counters.inc('tcp.dsack.ofo-sent');
    noteDsack(conn, dupStart, dupEnd);
  }
  return ok;
}

function piece(buf: Uint8Array, off: number, len: number, seq: number) {
  return { seq, data: buf.slice(off, off + len) };
}

/**
 * The handshake's RTT sample. An echoed timestamp names the very SYN (or SYN-ACK) it answers, so
 * it gives a sample even after retransmissions (RFC 7323 section 4, RFC 6298 section 3); without
 * timestamps Karn's rule leaves a retransmitted handshake unsampled.
 */
function handshakeRtt(conn: TcpConnection, h: TcpHeader, now: number): void {
  const s = conn.state;
  // RACK's minimum from the clock, not the timestamps: they count whole milliseconds, a LAN's
  // 0.4 ms reads as 0 or 1, and a minimum set too high takes a resend SACKed sooner than it for
  // the original (RackLog.take).
  if (!conn.synRetransmitted) conn.rack.noteRtt(now - s.soft.rttSentAt);
  if (s.const.tsEnabled && h.hasTimestamps && h.tsEcr !== 0) {
    const rtt = seqDiff(tsNow(now), h.tsEcr);
    if (rtt >= 0 && rtt <= 600_000) {
      rttSample(s, rtt);
      // A resent handshake has no clock sample, and RACK no minimum without this one (Linux's
      // tcp_ack_update_rtt takes the echo for both): every SACKed retransmission then counted as
      // possibly its original's delivery, and a hole below a SACKed tail probe waited for the RTO
      // (bench/failover.ts, 10,000 connects: the peers whose SYN went twice).
      if (conn.synRetransmitted) conn.rack.noteRtt(rtt);
    }
    return;
  }
  if (!conn.synRetransmitted) rttSample(s, now - s.soft.rttSentAt);
}
