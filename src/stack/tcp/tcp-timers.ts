import { TcpStateId } from '../../state/tcp-state.ts';
import { TcpFlag } from '../../wire/tcp.ts';
import { backedOffRto } from './rtt.ts';
import { seqAdd, seqGt, seqSub } from './seq.ts';
import { connError, deliverEvents, type TcpConnection, terminate } from './tcp-connection.ts';
import { emit, hasUnsent, persistInterval, sendSyn, tcpOutput, transmit } from './tcp-output.ts';

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
  if (d.state === TcpStateId.CLOSED) t = INF;
  if (t === INF) {
    if (conn.timer.armed) conn.timer.disarm();
    conn.timerTarget = INF;
    return;
  }
  if (!conn.timer.armed || conn.timerTarget !== t) {
    conn.timerTarget = t;
    conn.timer.armAt(t);
  }
}

export function onConnectionTimer(conn: TcpConnection): void {
  conn.timerTarget = INF;
  const now = conn.engine.env.clock.now();
  const s = conn.state;
  const d = s.delegated;
  const soft = s.soft;
  if (d.state === TcpStateId.CLOSED) return;
  if (d.timeWaitDeadline <= now) {
    // TIME_WAIT is over, or an orphaned FIN_WAIT_2 (closed by the user) waited long enough.
    terminate(conn, null, true);
    deliverEvents(conn);
    return;
  }
  if (soft.delayedAckDeadline <= now) {
    soft.delayedAckDeadline = INF;
    soft.ackNow = true;
  }
  if (d.rtxDeadline <= now) {
    d.rtxDeadline = INF;
    retransmitTimeout(conn, now);
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
    tcpOutput(conn);
    scheduleTimer(conn);
  }
  deliverEvents(conn);
}

/** Re-reads the state (a timeout handler above may have closed the connection). */
function alive(conn: TcpConnection): boolean {
  return conn.state.delegated.state !== TcpStateId.CLOSED;
}

function retransmitTimeout(conn: TcpConnection, now: number): void {
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
      return;
    }
    d.backoff++;
    conn.synRetransmitted = true;
    conn.stats.retransmits++;
    counters.inc('tcp.retransmits');
    sendSyn(conn);
    d.rtxDeadline = now + backedOffRto(s);
    return;
  }
  if (d.sndMax === d.sndUna) return;
  if (d.sndWnd === 0) {
    // The peer shut its window with our data in flight. Probing, not retransmitting: a long zero
    // window alone must never kill the connection (RFC 9293 3.8.6.1).
    d.sndNxt = d.sndUna;
    soft.rttActive = false;
    d.persistDeadline = now + persistInterval(s);
    return;
  }
  if (d.backoff >= s.cached.maxRetransmits) {
    counters.inc('tcp.timeouts');
    terminate(conn, conn.softError ?? connError('ETIMEDOUT', 'connection timed out'), true);
    return;
  }
  d.backoff++;
  counters.inc('tcp.rto');
  conn.engine.congestion(conn).onTimeout(s, now);
  soft.inRecovery = false;
  d.dupAcks = 0;
  soft.rttActive = false;
  // RFC 6582 4.1: duplicate ACKs for data sent before the timeout must not start a fast retransmit.
  soft.recoveryPoint = d.sndMax;
  // A second timeout in a row suggests the receiver dropped data it had SACKed (RFC 2018 8).
  if (d.backoff >= 2) soft.sacked.length = 0;
  d.sndNxt = d.sndUna;
  // tcpOutput resends from snd.una within the collapsed window and re-arms with the backed-off RTO.
}

function persistProbe(conn: TcpConnection, now: number): void {
  const s = conn.state;
  const d = s.delegated;
  if (d.sndWnd > 0) {
    d.persistBackoff = 0;
    return;
  }
  if (!hasUnsent(s) && d.sndMax === d.sndUna) return;
  // One byte: the first unacknowledged one if a probe is already out, else the next new one.
  const used = transmit(conn, d.sndUna, 1, now);
  const end = seqAdd(d.sndUna, used);
  if (seqGt(end, d.sndNxt)) d.sndNxt = end;
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
