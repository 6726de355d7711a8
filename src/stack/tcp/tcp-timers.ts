import { TcpEcn, TcpStateId } from '../../state/tcp-state.ts';
import { TcpFlag } from '../../wire/tcp.ts';
import { effectiveMss } from './congestion.ts';
import { backedOffRto } from './rtt.ts';
import { sackedPackets } from './sack.ts';
import { seqAdd, seqDiff, seqGeq, seqLt, seqSub } from './seq.ts';
import { delayedAckFired } from './tcp-ack-mode.ts';
import type { TcpConnection } from './tcp-connection.ts';
import { connError, deliverEvents, terminate } from './tcp-events.ts';
import {
  emit,
  hasUnsent,
  persistInterval,
  sendSyn,
  tcpOutput,
  transmit,
  tsNow,
  windowTakesNext,
} from './tcp-output.ts';
import { rackReoTimeout } from './tcp-recovery.ts';

const INF = Number.POSITIVE_INFINITY;

/**
 * Arm the connection's single timer at the earliest of its deadlines. Deadlines live in the state
 * (so they travel with it); the timer object is only the local means of waking up, and is re-armed
 * only when the earliest deadline changes.
 */
export function scheduleTimer(conn: TcpConnection): void {
  const d = conn.state.delegated;
  let t = d.rtxDeadline;
  if (d.persistDeadline < t) t = d.persistDeadline;
  if (d.keepaliveDeadline < t) t = d.keepaliveDeadline;
  if (d.timeWaitDeadline < t) t = d.timeWaitDeadline;
  if (conn.state.soft.delayedAckDeadline < t) t = conn.state.soft.delayedAckDeadline;
  if (conn.state.soft.tlpDeadline < t) t = conn.state.soft.tlpDeadline;
  if (conn.rack.reoDeadline < t) t = conn.rack.reoDeadline;
  if (d.state === TcpStateId.CLOSED) t = INF;
  if (t === INF) {
    conn.disarmTimer();
    conn.timerTarget = INF;
    return;
  }
  if (!conn.timerArmed || conn.timerTarget !== t) {
    conn.timerTarget = t;
    conn.timer.armAt(t);
  }
}

/**
 * How late (ms) a timer may fire before its loss timers let the input waiting meanwhile go first,
 * where that input cannot be read on demand (TcpHostEnv.drainInput absent or not all read).
 * A thread kept from running (a worker installing a crashed NIC's connections, or not scheduled
 * on a loaded machine) wakes to timers before input: Node's event loop runs expired timers, then
 * polls for I/O. So the ACKs that arrived while it was away, which had made the timers moot, were
 * read only after the timeouts had resent (1,000 kernel readers after a crash, load 10: 195 of the
 * survivor's 197 timeouts undone as spurious by Eifel, 420 of its 618 tail probes D-SACKed).
 */
export const LATE_TIMER_MS = 10;

export function onConnectionTimer(conn: TcpConnection): void {
  const target = conn.timerTarget;
  conn.timerTarget = INF;
  const now = conn.engine.env.clock.now();
  const s = conn.state;
  const d = s.delegated;
  const soft = s.soft;
  if (d.state === TcpStateId.CLOSED) return;
  conn.engine.env.beforeTimer?.(conn);
  const yielded = conn.timerYielded;
  conn.timerYielded = false;
  if (!yielded && (d.rtxDeadline <= now || soft.tlpDeadline <= now || conn.rack.reoDeadline <= now)) {
    const env = conn.engine.env;
    let all = false;
    if (env.drainInput !== undefined) {
      // A loss timer decides after the input waiting on the links now: the ACKs queued while this
      // thread was away (or that came as the timer fell due) may make it moot. One yield of the
      // event loop was not enough: the pool thread's poll for the TAP could answer a turn later.
      env.counters.inc('tcp.timer.drains');
      all = env.drainInput();
      if (!alive(conn)) return;
      // Moot: the input moved every loss deadline on (and re-armed the timer for them).
      if (d.rtxDeadline > now && soft.tlpDeadline > now && conn.rack.reoDeadline > now)
        env.counters.inc('tcp.timer.drain-moot');
    }
    if (
      !all &&
      now - target > LATE_TIMER_MS &&
      (d.rtxDeadline <= now || soft.tlpDeadline <= now || conn.rack.reoDeadline <= now)
    ) {
      // Fired late, and input may still wait where it cannot be read now: one turn for it (armed
      // for now, it fires again after the event loop's poll for I/O and its immediates, whose ACKs
      // re-arm it if they move a deadline).
      conn.timerYielded = true;
      conn.timerTarget = now;
      conn.timer.armAt(now);
      env.counters.inc('tcp.timer.late-yields');
      return;
    }
  }
  if (d.timeWaitDeadline <= now) {
    // TIME_WAIT is over, or an orphaned FIN_WAIT_2 (closed by the user) waited long enough.
    terminate(conn, null, true);
    deliverEvents(conn);
    return;
  }
  if (soft.delayedAckDeadline <= now) {
    soft.delayedAckDeadline = INF;
    soft.ackNow = true;
    delayedAckFired(conn);
  }
  let rto = false;
  if (d.rtxDeadline <= now) {
    d.rtxDeadline = INF;
    soft.tlpDeadline = INF;
    rto = retransmitTimeout(conn, now);
  }
  if (alive(conn) && conn.rack.reoDeadline <= now) rackReoTimeout(conn, now);
  if (alive(conn) && soft.tlpDeadline <= now) {
    soft.tlpDeadline = INF;
    lossProbe(conn, now);
  }
  if (alive(conn) && d.persistDeadline <= now) {
    d.persistDeadline = INF;
    persistProbe(conn, now);
  }
  if (alive(conn) && d.keepaliveDeadline <= now) {
    d.keepaliveDeadline = INF;
    keepaliveTimeout(conn, now);
  }
  if (alive(conn)) {
    conn.refusedSeq = -1;
    tcpOutput(conn, rto);
    if (rto) afterTimeoutSend(conn, now);
    scheduleTimer(conn);
  }
  deliverEvents(conn);
}

/**
 * Timeouts in a row whose retransmission the local path refused before the usual doubling
 * resumes: a queue that is merely full lets a retry through well before this, while a path that
 * refuses every attempt is down, and the connection must then still reach maxRetransmits (only
 * this many RTOs later than otherwise).
 */
export const MAX_REFUSED_RTOS = 8;

/**
 * The timeout's retransmission of snd.una (sent by tcpOutput) never left this host when the path
 * layer refused it: our own transmit queue was full. That is no news about the path, and RFC
 * 6298 5.5's doubling would be wrong here: connections whose timers fire together (several that
 * lost their SYN together, say) refill the queue at the same instant, the same ones lose the race
 * again, and each round doubles their RTO until one ordinary loss costs them many seconds. So the
 * timeout does not count; the retry waits the interval this timeout waited.
 */
function afterTimeoutSend(conn: TcpConnection, now: number): void {
  const s = conn.state;
  const d = s.delegated;
  if (conn.refusedSeq !== d.sndUna || d.sndUna === d.sndMax) {
    conn.refusedRtos = 0;
    return;
  }
  if (conn.refusedRtos >= MAX_REFUSED_RTOS || d.backoff === 0 || d.rtxDeadline === INF) return;
  conn.refusedRtos++;
  d.backoff--;
  d.rtxDeadline = now + backedOffRto(s);
  conn.engine.env.counters.inc('tcp.rto.refused');
}

/** Re-reads the state (a timeout handler above may have closed the connection). */
function alive(conn: TcpConnection): boolean {
  return conn.state.delegated.state !== TcpStateId.CLOSED;
}

/** True when a data retransmission timeout was taken (backoff advanced, snd.nxt back to snd.una). */
function retransmitTimeout(conn: TcpConnection, now: number): boolean {
  const s = conn.state;
  const d = s.delegated;
  const soft = s.soft;
  const counters = conn.engine.env.counters;
  if (d.state === TcpStateId.SYN_SENT || d.state === TcpStateId.SYN_RECEIVED) {
    if (d.backoff >= s.cached.maxSynRetransmits) {
      counters.inc('tcp.timeouts');
      // A passive half-open has no user yet: it just goes away.
      const passive = conn.listener !== null;
      terminate(conn, conn.softError ?? connError('ETIMEDOUT', 'connection timed out'), !passive);
      return false;
    }
    d.backoff++;
    conn.synRetransmitted = true;
    conn.stats.retransmits++;
    counters.inc('tcp.retransmits');
    sendSyn(conn);
    d.rtxDeadline = now + backedOffRto(s);
    return false;
  }
  if (d.sndMax === d.sndUna) return false;
  // A rebuilt connection's probe went unanswered: the timeout resends from snd.una, as for any.
  soft.repaired = false;
  if (d.sndWnd === 0) {
    // The peer shut its window with our data in flight. Probing, not retransmitting: a long zero
    // window alone must never kill the connection (RFC 9293 3.8.6.1).
    d.sndNxt = d.sndUna;
    soft.rttActive = false;
    d.persistDeadline = now + persistInterval(s);
    return false;
  }
  if (d.backoff >= s.cached.maxRetransmits) {
    counters.inc('tcp.timeouts');
    terminate(conn, conn.softError ?? connError('ETIMEDOUT', 'connection timed out'), true);
    return false;
  }
  // A timeout of the episode before repeats it while data sent before that one is outstanding.
  // The backoff alone no longer says so: it stays until an RTT sample (processAck's newAck), and
  // an undone timeout or its whole flight ACKed ends the episode first (Linux's tcp_enter_loss
  // takes a new undo record when snd_una reached high_seq, or from the Open state an undo leaves).
  const repeat = d.backoff > 0 && seqLt(d.sndUna, soft.recoveryPoint);
  if (!repeat && !soft.inRecovery) {
    // A new timeout episode: keep what to restore should the ACKs show it spurious (F-RTO, RFC
    // 5682; Eifel detection, RFC 3522). A timeout during fast recovery is not undone (Linux keeps
    // the recovery's undo record there; ours is the recovery's D-SACK undo, which a timeout ends).
    soft.undoCwnd = d.cwnd;
    soft.undoSsthresh = d.ssthresh;
    soft.undoWMax = soft.cubic.wMax;
    soft.undoLow = d.sndUna;
    soft.undoRetrans = 0;
    // The retransmission tcpOutput is about to send carries this TSval.
    soft.undoTsVal = s.const.tsEnabled ? tsNow(now) : 0;
    soft.undoNxt = d.sndNxt;
    soft.undoArmed = true;
  } else if (soft.inRecovery) {
    soft.undoArmed = false;
  }
  // RFC 5682 3.1 step 1, and 3.2 for a repeated timeout of the same episode.
  soft.frto = soft.undoArmed ? 1 : 0;
  soft.highRxt = d.sndUna;
  // An ACK that echoes a segment sent before this timeout answers an original whose ACK was lost
  // (the peer echoes TS.Recent to a duplicate): its echo would turn the wait for the timer into an
  // RTT sample, raise the RTO and, backed off, the next wait (sim, 10 % loss, 0.1 ms RTT: srtt
  // 1.3 s and an RTO of 11.6 s). Eifel (RFC 3522) reads the same echo as a spurious timeout.
  if (s.const.tsEnabled) conn.rttEchoFloor = tsNow(now);
  // Linux's tcp_enter_loss, from Open or Disorder only (not a recovery, not a timeout's episode).
  const open = !soft.inRecovery && seqGeq(d.sndUna, soft.recoveryPoint);
  conn.rack.noteTimeout(now, open, s.const.sackEnabled ? sackedPackets(s, effectiveMss(s)) : 0);
  d.backoff++;
  counters.inc('tcp.rto');
  conn.engine.congestion(conn).onTimeout(s, now);
  soft.inRecovery = false;
  // Linux's Loss state replaces CWR: an ECE's reduction must not end later at its ssthresh.
  d.ecn &= ~TcpEcn.CWR;
  // Linux's tcp_enter_loss queues CWR on every timeout: the cut is news to a receiver echoing ECE
  // (the mark may have come with the loss), and without it the echo outlives the timeout's
  // recovery and cuts the window again once it is over.
  if (d.ecn & TcpEcn.OK) d.ecn |= TcpEcn.QUEUE_CWR;
  d.dupAcks = 0;
  soft.rttActive = false;
  // RFC 6582 4.1: duplicate ACKs for data sent before the timeout must not start a fast retransmit.
  soft.recoveryPoint = d.sndMax;
  // A second timeout in a row suggests the receiver dropped data it had SACKed (RFC 2018 8).
  if (repeat) soft.sacked.length = 0;
  soft.rackLostEdge = d.sndUna;
  soft.tlpInFlight = false;
  d.sndNxt = d.sndUna;
  // tcpOutput resends from snd.una within the collapsed window and re-arms with the backed-off RTO.
  return true;
}

/**
 * RFC 8985 7.3: the probe is one segment of new data if the windows allow, else the last segment
 * sent again. Its ACK (with SACK) tells RACK what the tail lost, and recovery repairs it.
 */
function lossProbe(conn: TcpConnection, now: number): void {
  const s = conn.state;
  const d = s.delegated;
  const soft = s.soft;
  if (d.sndMax === d.sndUna || d.persistDeadline !== INF) return;
  // At most one probe an episode (Linux's tcp_send_loss_probe checks tlp_high_seq): the RTO stays.
  if (conn.rack.tlpEnd !== -1) return;
  const mss = effectiveMss(s);
  const flight = seqDiff(d.sndMax, d.sndUna);
  let used = 0;
  let rtx = false;
  // New data only into a window that takes it, as tcp_send_loss_probe's tcp_snd_wnd_test.
  if (hasUnsent(s) && d.sndWnd - flight > 0 && d.sndNxt === d.sndMax && windowTakesNext(s, mss)) {
    used = transmit(conn, d.sndMax, Math.min(mss, d.sndWnd - flight), now);
    d.sndNxt = d.sndMax;
    // Sent whatever Nagle says, a short probe is still the short segment in flight that holds
    // the next one (Linux's tcp_write_xmit updates snd_sml for it as for any).
    if (used > 0 && used < mss) soft.smallSentEnd = d.sndMax;
  }
  if (used === 0) {
    const seq = flight > mss ? seqSub(d.sndMax, mss) : d.sndUna;
    // Linux's __tcp_retransmit_skb: nothing that starts at or past the right edge of the window
    // the peer offers now, but at snd.una (then it is also a zero-window probe), and no more than
    // fits. A receiver out of memory drops in-window data and answers with a window shrunk to
    // what it can hold (ICSK_ACK_NOMEM); a probe of the tail past that edge is dropped again, and
    // restarting the RTO from it put the resend of snd.una off by the whole probe timeout (5,000
    // readers on 32 KB buffers: a pruned segment waited a median 0.81 s for its resend). A
    // refused probe leaves the RTO where it was, as tcp_rearm_rto does after a failed probe.
    const room = d.sndWnd - seqDiff(seq, d.sndUna);
    if (room <= 0 && seq !== d.sndUna) return;
    used = transmit(conn, seq, room > 0 ? Math.min(mss, room) : mss, now);
    rtx = true;
  }
  if (used === 0) return;
  conn.engine.env.counters.inc('tcp.tlp.probes');
  soft.tlpInFlight = true;
  soft.tlpHighSeq = d.sndMax;
  conn.rack.noteProbe(d.sndMax, rtx);
  d.rtxDeadline = now + backedOffRto(s);
}

function persistProbe(conn: TcpConnection, now: number): void {
  const s = conn.state;
  const d = s.delegated;
  if (!hasUnsent(s) && d.sndMax === d.sndUna) return;
  const room = d.sndWnd - seqDiff(d.sndNxt, d.sndUna);
  if (room > 0) {
    // Linux's tcp_write_wakeup: a window too small for the next segment (windowTakesNext) gets
    // what fits of it, up to one MSS, once the probe timer has waited for it to grow. The data
    // then in flight has the retransmission timer.
    d.persistBackoff = 0;
    const used = transmit(conn, d.sndNxt, Math.min(room, effectiveMss(s)), now);
    d.sndNxt = seqAdd(d.sndNxt, used);
    if (used > 0) conn.engine.env.counters.inc('tcp.persist.window-probes');
    return;
  }
  // Like Linux's tcp_retries2 for probes: a peer that shut its window and answers nothing is gone
  // (or is holding our buffers hostage, RFC 6429); one that answers, even with a zero window, stays.
  if (s.soft.persistProbesOut >= s.cached.maxRetransmits) {
    conn.engine.env.counters.inc('tcp.persist.timeouts');
    terminate(conn, conn.softError ?? connError('ETIMEDOUT', 'zero-window probes unanswered'), true);
    return;
  }
  s.soft.persistProbesOut++;
  // As Linux's tcp_xmit_probe_skb: no data, at snd.una - 1, which the peer has acknowledged and
  // must answer with its window. RFC 1122 4.2.2.17 probes with one octet of new data instead, but
  // a receiver that could not shrink the window it offered (Linux never does) takes that octet
  // in, at the cost of a whole buffer of receive memory: 1,000 slow readers on 32 KB buffers got
  // 11,500 such probes in 30 s, and their kernels pruned and dropped in-window data for it
  // (TcpExtRcvPruned), which Linux's sender never drew from them.
  emit(conn, seqSub(d.sndUna, 1), TcpFlag.ACK, 0, 0);
  conn.engine.env.counters.inc('tcp.persist.probes');
  d.persistBackoff++;
  d.persistDeadline = now + persistInterval(s);
}

function keepaliveTimeout(conn: TcpConnection, now: number): void {
  const s = conn.state;
  const d = s.delegated;
  const c = s.cached;
  if (!c.keepAlive || (d.state !== TcpStateId.ESTABLISHED && d.state !== TcpStateId.CLOSE_WAIT)) return;
  if (d.sndMax !== d.sndUna || hasUnsent(s)) {
    // Data in flight has its own timer; keepalive is for idle connections.
    d.keepaliveProbes = 0;
    d.keepaliveDeadline = now + c.keepIdleMs;
    return;
  }
  if (d.keepaliveProbes === 0 && now - d.lastRecvAt < c.keepIdleMs) {
    d.keepaliveDeadline = d.lastRecvAt + c.keepIdleMs;
    return;
  }
  if (d.keepaliveProbes >= c.keepCount) {
    conn.engine.env.counters.inc('tcp.keepalive.timeouts');
    terminate(conn, connError('ETIMEDOUT', 'keepalive: peer not responding'), true);
    return;
  }
  // RFC 1122 4.2.3.6: a segment with an old sequence number, which the peer must ACK.
  emit(conn, seqSub(d.sndUna, 1), TcpFlag.ACK, 0, 0);
  conn.engine.env.counters.inc('tcp.keepalive.probes');
  d.keepaliveProbes++;
  d.keepaliveDeadline = now + c.keepIntvlMs;
}
