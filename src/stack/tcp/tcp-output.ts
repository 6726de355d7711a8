import type { TcpState } from '../../state/tcp-state.ts';
import { TcpEcn, TcpStateId } from '../../state/tcp-state.ts';
import { writeL4ChecksumFrom } from '../../wire/checksum.ts';
import {
  encodeTcpHeader,
  finishTcpChecksum,
  resetTcpOptions,
  TCP_PROTOCOL,
  TcpFlag,
  type TcpHeader,
} from '../../wire/tcp.ts';
import { TWO_32 } from '../address-table.ts';
import { effectiveMss, renoLeftOut } from './congestion.ts';
import { backedOffRto } from './rtt.ts';
import { recvSackBlocks, sackIsLost, sackNextSeg, sackPipe } from './sack.ts';
import { seqAdd, seqDiff, seqGt, seqLeq, seqLt } from './seq.ts';
import { ackSent, dataSent } from './tcp-ack-mode.ts';
import type { TcpConnection, TcpEngine } from './tcp-connection.ts';
import { ecnOut, ecnOutput, IP_ECN_MASK, IpEcn } from './tcp-ecn.ts';
import { selectWindow, synWindow } from './tcp-window.ts';

const INF = Number.POSITIVE_INFINITY;
/**
 * Output budget per connection and turn on a real clock (TcpLayer.outputBudget, output-scheduler.ts): two 64 KB
 * super-segments, the floor Linux's TCP small queues keep in flight per flow.
 */
export const OUTPUT_BUDGET_BYTES = 2 * 65536;
/**
 * Output of all of a NIC worker's connections together per turn (TcpLayer.outputTurnBudget): eight
 * connections' budgets, so a turn that sends it ends within a few ms and the link is read again.
 */
export const OUTPUT_TURN_BUDGET_BYTES = 8 * OUTPUT_BUDGET_BYTES;
/** RFC 5961 7: challenge ACKs one connection may send per second. */
export const CHALLENGE_ACKS_PER_CONN = 10;
/**
 * Linux's tcp_invalid_ratelimit: one connection answers unacceptable segments (out of window,
 * and challenge ACKs, which share the limit) at most this often.
 */
export const OOW_ACK_INTERVAL_MS = 500;
/** Like Linux' tcp_challenge_ack_limit: challenge ACKs per second for the whole layer. */
export const CHALLENGE_ACKS_GLOBAL = 1000;
/** Floor and ceiling of the persist (zero-window probe) interval. */
const PERSIST_MIN_MS = 200;
const PERSIST_MAX_MS = 60_000;

/**
 * Our TSval: clock milliseconds, offset by one so that a connection opened at virtual time 0 does
 * not send TSval 0, which some stacks read as "no echo".
 */
export function tsNow(now: number): number {
  return (Math.floor(now) + 1) >>> 0;
}

/** The largest window-scale shift we need so that rcvBufSize >> shift fits in 16 bits (RFC 7323). */
export function wscaleFor(bufSize: number): number {
  let shift = 0;
  while (shift < 14 && bufSize >>> shift > 65535) shift++;
  return shift;
}

/** States in which our FIN is due after the queued data. */
function finState(st: number): boolean {
  return st === TcpStateId.FIN_WAIT_1 || st === TcpStateId.CLOSING || st === TcpStateId.LAST_ACK;
}

/**
 * Whether a connection's receive buffer is autotuned: Linux tunes only a socket whose SO_RCVBUF
 * was not set (tcp_init_buffer_space, SOCK_RCVBUF_LOCK); here also not under a layer that fixes
 * every buffer (TcpEngine.fixedRcvBuf).
 */
export function rcvTuned(conn: TcpConnection): boolean {
  return conn.engine.fixedRcvBuf !== true && !conn.state.soft.rcvLocked;
}

/**
 * The window of the connection's SYN or SYN-ACK (synWindow): a SYN's in whole MSSs of ours, a
 * SYN-ACK's in MSSs less the timestamp option once it was agreed, as Linux's tcp_connect_init and
 * tcp_openreq_init_rwin count them.
 */
export function synOffer(conn: TcpConnection): number {
  const s = conn.state;
  const c = s.const;
  const mss = s.delegated.state === TcpStateId.SYN_SENT ? c.localMss : c.localMss - (c.tsEnabled ? 12 : 0);
  return synWindow(s, rcvTuned(conn), mss);
}

/**
 * The window field for a non-SYN segment, and the new right edge (Linux's tcp_select_window): the
 * window selectWindow offers (its silly window avoidance, tcp-window.ts), but never an edge left
 * of the one offered before (RFC 7323 2.4, RFC 9293 3.8.6.2.2).
 */
export function advertiseWindow(s: TcpState): number {
  const d = s.delegated;
  const shift = s.const.rcvWscale;
  let win = selectWindow(s);
  const cur = seqDiff(d.rcvAdv, d.rcvNxt);
  if (win < cur) win = cur;
  // Rounded down: rounding up would promise up to 2^shift - 1 bytes past the buffer on every ACK,
  // pushing the edge ever further and never letting the window reach zero. The field may then
  // name an edge a little below rcv.adv; data up to rcv.adv is still taken (RFC 7323 2.4), and
  // rcv.adv itself never lies past the buffer.
  let field = Math.floor(win / 2 ** shift);
  // Rounded up only where the buffer still has room for it, so the edge seldom looks retracted.
  if (field * 2 ** shift < cur && (field + 1) * 2 ** shift <= d.recvBuffer.free) field++;
  if (field > 65535) field = 65535;
  const edge = seqAdd(d.rcvNxt, field * 2 ** shift);
  if (seqGt(edge, d.rcvAdv)) d.rcvAdv = edge;
  return field;
}

/**
 * Build one segment straight into the IP sender's buffer and send it. Data comes from the send
 * buffer at `dataOff`. Returns the data bytes actually carried (fewer when the transmit buffer is
 * smaller than the segment; a FIN is then left for the next segment).
 */
export function emit(
  conn: TcpConnection,
  seq: number,
  flags: number,
  dataOff: number,
  dataLen: number,
): number {
  const eng = conn.engine;
  const env = eng.env;
  const s = conn.state;
  const c = s.const;
  const d = s.delegated;
  const soft = s.soft;
  const h = eng.txHdr;
  const now = env.clock.now();
  startHeader(h, s, seq, flags & TcpFlag.ACK ? d.rcvNxt : 0);
  if (flags & TcpFlag.SYN) {
    h.mss = c.localMss;
    if (d.state === TcpStateId.SYN_SENT) {
      h.wscale = conn.offeredWscale;
      h.sackPermitted = true;
      h.hasTimestamps = true;
      h.tsVal = tsNow(now);
      h.tsEcr = 0;
    } else {
      if (c.wsEnabled) h.wscale = c.rcvWscale;
      h.sackPermitted = c.sackEnabled;
      stampTimestamps(h, s, now);
    }
    const w = synOffer(conn);
    h.window = w;
    if (flags & TcpFlag.ACK) {
      const edge = seqAdd(d.rcvNxt, w);
      if (seqGt(edge, d.rcvAdv)) d.rcvAdv = edge;
    }
  } else {
    h.window = flags & TcpFlag.RST && !(flags & TcpFlag.ACK) ? 0 : advertiseWindow(s);
    stampTimestamps(h, s, now);
    if (c.sackEnabled && flags & TcpFlag.ACK && !(flags & TcpFlag.RST)) {
      let n = 0;
      if (conn.dsackEnd !== conn.dsackStart) {
        // RFC 2883: the duplicate first, reported once (Linux clears rx_opt.dsack once sent).
        h.sackBlocks[0] = conn.dsackStart;
        h.sackBlocks[1] = conn.dsackEnd;
        conn.dsackEnd = conn.dsackStart;
        n = 1;
      }
      if (soft.recvSackRecent.length > 0) n += recvSackBlocks(s, h.sackBlocks, (c.tsEnabled ? 3 : 4) - n, n);
      h.sackCount = n;
    }
  }
  let tos = s.cached.tos;
  if (d.ecn !== 0) {
    flags = ecnOutput(s, flags, seq, dataLen, conn.synRetransmitted);
    // The socket's TOS keeps its own bits; the ECN field is TCP's (Linux's INET_ECN_xmit).
    tos = (tos & ~IP_ECN_MASK) | (ecnOut.ect ? IpEcn.ECT0 : IpEcn.NOT_ECT);
  }
  const ip = env.ip;
  const path = s.path;
  const off = ip.begin(path);
  const buf = ip.txBuf;
  h.flags = flags;
  let hl = encodeTcpHeader(h, buf, off);
  // With checksum offload the link may also take a super-segment larger than the path MTU.
  const offload = ip.checksumOffload?.(path) === true;
  const maxPacket = offload ? ip.maxPacketBytes!(path) : path.cached.mtu;
  // SACK blocks can make the header longer than the MSS calculation assumed: trim the payload so
  // the packet still fits the path MTU (DF is always set).
  const room = Math.min(buf.length - off, maxPacket - ipHeaderBytes(c.remoteIp)) - hl;
  if (dataLen > room) {
    dataLen = Math.max(room, 0);
    if (flags & TcpFlag.FIN) {
      h.flags = flags & ~(TcpFlag.FIN | TcpFlag.PSH);
      hl = encodeTcpHeader(h, buf, off);
    }
  }
  // Below snd.una (a probe's octet, sent again) the data has left the buffer; the peer drops it
  // unread as a duplicate.
  if (dataLen > 0) {
    if (dataOff >= 0) d.sendBuffer.peek(dataOff, buf, off + hl, dataLen);
    else buf.fill(0, off + hl, off + hl + dataLen);
  }
  let accepted: boolean;
  if (offload) {
    // Each wire segment the link cuts carries this header, so its payload is what fits next to it.
    const seg = Math.min(effectiveMss(s), path.cached.mtu - ipHeaderBytes(c.remoteIp) - hl);
    accepted = ip.commitOffload!(path, hl + dataLen, seg, s.cached.ttl, tos);
  } else {
    tcpChecksum(env, buf, off, hl + dataLen, c.localIp, c.remoteIp);
    accepted = ip.commit(path, TCP_PROTOCOL, hl + dataLen, true, s.cached.ttl, tos);
  }
  if (!accepted) {
    conn.refusedSeq = seq >>> 0;
    env.counters.inc('tcp.tx.refused');
  }
  conn.stats.segmentsOut++;
  env.counters.inc('tcp.segments.out');
  if (flags & TcpFlag.RST) {
    conn.stats.resetsOut++;
    env.counters.inc('tcp.rst.out');
  }
  if (flags & TcpFlag.ACK) ackWentOut(s);
  return dataLen;
}

/** The fields every segment begins with: ports, numbers, no options yet (the caller adds its own). */
function startHeader(h: TcpHeader, s: TcpState, seq: number, ack: number): void {
  const c = s.const;
  h.srcPort = c.localPort;
  h.dstPort = c.remotePort;
  h.seq = seq >>> 0;
  h.ack = ack;
  h.urgent = 0;
  resetTcpOptions(h);
}

/** RFC 7323 timestamps where both ends agreed to them: our clock, and the peer's value to echo. */
function stampTimestamps(h: TcpHeader, s: TcpState, now: number): void {
  if (!s.const.tsEnabled) return;
  h.hasTimestamps = true;
  h.tsVal = tsNow(now);
  h.tsEcr = s.delegated.tsRecent;
}

/** What an ACK sent settles: all received is acknowledged, no ACK is owed now or by a timer. */
function ackWentOut(s: TcpState): void {
  const d = s.delegated;
  const soft = s.soft;
  if (seqGt(d.rcvNxt, d.lastAckSent)) ackSent(s);
  d.lastAckSent = d.rcvNxt;
  soft.ackNow = false;
  soft.delayedAckDeadline = INF;
  // Linux's inet_csk_clear_xmit_timer(ICSK_TIME_DACK): the ACK owes the read nothing more.
  soft.ackPushed = 0;
}

export function sendSyn(conn: TcpConnection): void {
  const d = conn.state.delegated;
  const flags = d.state === TcpStateId.SYN_SENT ? TcpFlag.SYN : TcpFlag.SYN | TcpFlag.ACK;
  emit(conn, d.iss, flags, 0, 0);
}

/**
 * Pure ACKs (and RSTs) carry snd.max, not snd.nxt: after a timeout snd.nxt falls back to snd.una,
 * below what the peer may already have received, and an ACK numbered below the peer's rcv.nxt is
 * unacceptable to it. If both ends had rewound, each would answer the other's ACK with another
 * one, forever. The peer's rcv.nxt never passes snd.max, so snd.max is always acceptable.
 */
export function sendAck(conn: TcpConnection): void {
  emit(conn, conn.state.delegated.sndMax, TcpFlag.ACK, 0, 0);
}

/**
 * The pure ACK `sendAck` sends, from a state with no connection object around it: a connection a
 * NIC took unbuilt (a crash's survivor prods its quiet connections so, and builds each on its
 * first segment or call). Only for a state `emit` would give nothing more than this: synchronized,
 * SACK agreed (one ACK, not three duplicates), no ECN to echo, no out-of-order data to SACK; the
 * caller checks that, and that no D-SACK could be due (a connection object's, which a state taken
 * unbuilt never had). Changes the state as emit does (the advertised edge, the ACK's marks, the
 * segment count). False when the link refused the frame: the caller builds the connection, whose
 * own prod sends it again.
 */
export function sendStateAck(eng: TcpEngine, s: TcpState): boolean {
  const env = eng.env;
  const c = s.const;
  const d = s.delegated;
  const h = eng.txHdr;
  startHeader(h, s, d.sndMax, d.rcvNxt);
  h.window = advertiseWindow(s);
  stampTimestamps(h, s, env.clock.now());
  h.flags = TcpFlag.ACK;
  const ip = env.ip;
  const off = ip.begin(s.path);
  const buf = ip.txBuf;
  const hl = encodeTcpHeader(h, buf, off);
  tcpChecksum(env, buf, off, hl, c.localIp, c.remoteIp);
  if (!ip.commit(s.path, TCP_PROTOCOL, hl, true, s.cached.ttl, s.cached.tos)) {
    env.counters.inc('tcp.tx.refused');
    return false;
  }
  d.segmentsOut++;
  env.counters.inc('tcp.segments.out');
  ackWentOut(s);
  return true;
}

export function sendRst(conn: TcpConnection): void {
  emit(conn, conn.state.delegated.sndMax, TcpFlag.RST | TcpFlag.ACK, 0, 0);
}

/** RFC 5961 challenge ACK, rate-limited per connection and per layer (section 7). */
export function sendChallengeAck(conn: TcpConnection, now: number): void {
  const soft = conn.state.soft;
  const counters = conn.engine.env.counters;
  if (now - soft.challengeWindowStart >= 1000 || now < soft.challengeWindowStart) {
    soft.challengeWindowStart = now;
    soft.challengeCount = 0;
  }
  // Like Linux, the per-connection out-of-window limit first: a burst of stale ACKs (reordered
  // behind newer ones) draws one answer, not one each, and a peer that has closed meanwhile
  // answers each of those with a RST.
  const oowLimited = soft.lastOowAckAt !== -1 && now - soft.lastOowAckAt < OOW_ACK_INTERVAL_MS;
  if (oowLimited || soft.challengeCount >= CHALLENGE_ACKS_PER_CONN || !conn.engine.takeChallengeAck(now)) {
    counters.inc('tcp.challenge_acks.limited');
    return;
  }
  soft.challengeCount++;
  soft.lastOowAckAt = now;
  counters.inc('tcp.challenge_acks');
  sendAck(conn);
}

/**
 * RST for a segment that has no connection (RFC 9293 3.10.7.1): if it carried an ACK the RST takes
 * its sequence number from that ACK, otherwise it has sequence 0 and acknowledges the segment.
 */
export function sendRstReply(
  eng: TcpEngine,
  remoteIp: number,
  localIp: number,
  h: TcpHeader,
  payloadLen: number,
): void {
  if (h.flags & TcpFlag.RST) return;
  const env = eng.env;
  const path = env.pathTo(remoteIp, localIp);
  if (!path) {
    env.counters.inc('drop.tcp.no-route');
    return;
  }
  const t = eng.txHdr;
  t.srcPort = h.dstPort;
  t.dstPort = h.srcPort;
  resetTcpOptions(t);
  t.window = 0;
  t.urgent = 0;
  if (h.flags & TcpFlag.ACK) {
    t.seq = h.ack;
    t.ack = 0;
    t.flags = TcpFlag.RST;
  } else {
    const segLen = payloadLen + (h.flags & TcpFlag.SYN ? 1 : 0) + (h.flags & TcpFlag.FIN ? 1 : 0);
    t.seq = 0;
    t.ack = seqAdd(h.seq, segLen);
    t.flags = TcpFlag.RST | TcpFlag.ACK;
  }
  const off = env.ip.begin(path);
  const buf = env.ip.txBuf;
  const hl = encodeTcpHeader(t, buf, off);
  tcpChecksum(env, buf, off, hl, localIp, remoteIp);
  env.ip.commit(path, TCP_PROTOCOL, hl, true);
  env.counters.inc('tcp.segments.out');
  env.counters.inc('tcp.rst.out');
}

/** The TCP checksum of buf[off, off + len) over either family's pseudo-header, in place. */
export function tcpChecksum(
  env: TcpEngine['env'],
  buf: Uint8Array,
  off: number,
  len: number,
  src: number,
  dst: number,
): void {
  if (dst < TWO_32) finishTcpChecksum(buf, off, len, src, dst);
  else writeL4ChecksumFrom(buf, off, len, TCP_PROTOCOL, env.addrs!.pseudoSum(src, dst, TCP_PROTOCOL, len));
}

/** Bytes of IP header in front of a segment to `remoteIp`: IPv6's fixed 40 or IPv4's 20. */
export function ipHeaderBytes(remoteIp: number): number {
  return remoteIp >= TWO_32 ? 40 : 20;
}

/** Data not yet sent, or a FIN still to be sent. */
export function hasUnsent(s: TcpState): boolean {
  const d = s.delegated;
  const sent = seqDiff(d.sndNxt, d.sndUna);
  return d.sendBuffer.length > sent || (d.finQueued && !d.finSent && finState(d.state));
}

/**
 * Linux's tcp_snd_wnd_test for the next new data (at snd.nxt): the peer's window takes its first
 * MSS, or all of it when less is queued. A window that takes less is left alone until it grows or
 * the probe timer fires (persistProbe), as Linux does: a sliver sent into it is a segment the
 * receiver charges a whole buffer for, and a slow reader's kernel, already short of memory, then
 * wants to offer a zero window it cannot (5,000 readers on 32 KB buffers: TcpExtTCPWantZeroWindowAdv
 * ~14,800 a run against Linux's sender's 36-68, and stalls of 0.2-0.8 s against its 15-60 ms).
 */
export function windowTakesNext(s: TcpState, mss: number): boolean {
  const d = s.delegated;
  const sent = seqDiff(d.sndNxt, d.sndUna);
  const unsent = d.sendBuffer.length - sent;
  return d.sndWnd - sent >= Math.min(mss, Math.max(unsent, 0));
}

/**
 * Send up to `maxLen` bytes starting at `seq` (≥ snd.una), with the FIN if the segment reaches the
 * end of the queued data and the FIN is due. Returns the sequence space used; snd.max advances,
 * snd.nxt is the caller's.
 */
export function transmit(conn: TcpConnection, seq: number, maxLen: number, now: number): number {
  const s = conn.state;
  const d = s.delegated;
  const soft = s.soft;
  const buffered = d.sendBuffer.length;
  const off = seqDiff(seq, d.sndUna);
  let len = Math.min(maxLen, buffered - off);
  if (len < 0) len = 0;
  let fin = d.finQueued && finState(d.state) && off + len === buffered;
  if (len === 0 && !fin) return 0;
  let flags = TcpFlag.ACK;
  if (fin) flags |= TcpFlag.FIN;
  if (len > 0 && off + len === buffered) flags |= TcpFlag.PSH;
  const sentLen = emit(conn, seq, flags, off, len);
  if (sentLen < len) fin = false;
  const used = sentLen + (fin ? 1 : 0);
  const end = seqAdd(seq, used);
  const counters = conn.engine.env.counters;
  if (s.const.sackEnabled) conn.rack.onSend(seq, end, now, seqLt(seq, d.sndMax), soft.sacked);
  // PRR counts what goes in a loss recovery and in an ECE's reduction (Linux's tcp_in_cwnd_reduction).
  if (soft.inRecovery || d.ecn & TcpEcn.CWR) soft.prrOut += sentLen;
  if (seqLt(seq, d.sndMax)) {
    if (soft.inRecovery && soft.undoArmed) soft.undoRetrans += sentLen;
    // After a timeout, what was resent so far: an ACK above it answers an original (F-RTO).
    else if (!soft.inRecovery && seqGt(end, soft.highRxt)) soft.highRxt = end;
    conn.stats.retransmits++;
    counters.inc('tcp.retransmits');
    // Karn: an ACK covering a retransmitted byte says nothing about which copy arrived.
    soft.rttActive = false;
  } else if (sentLen > 0 && !soft.rttActive && !s.const.tsEnabled) {
    soft.rttSeq = seq;
    soft.rttSentAt = now;
    soft.rttActive = true;
  }
  if (seqGt(end, d.sndMax)) {
    const fresh = seqDiff(end, d.sndMax) - (fin ? 1 : 0);
    if (fresh > 0) {
      conn.stats.bytesOut += fresh;
      dataSent(conn, now);
    }
    d.sndMax = end;
  }
  if (fin) d.finSent = true;
  if (sentLen > 0) d.lastSendAt = now;
  return used;
}

/** Resend the first unacknowledged segment (fast retransmit, partial ACK, MTU drop). */
export function retransmitHead(conn: TcpConnection, now: number): void {
  const s = conn.state;
  const d = s.delegated;
  const used = transmit(conn, d.sndUna, effectiveMss(s), now);
  if (used > 0) {
    const end = seqAdd(d.sndUna, used);
    if (seqGt(end, s.soft.highRxt)) s.soft.highRxt = end;
    if (s.const.sackEnabled) s.soft.rxtAt = now;
  }
  if (seqLt(d.sndNxt, seqAdd(d.sndUna, used))) d.sndNxt = seqAdd(d.sndUna, used);
}

/**
 * Send what the windows, Nagle and silly-window avoidance allow, then a pure ACK if one is owed,
 * then (re)arm the retransmission or persist timer as needed. `resendNow`: a retransmission
 * timeout's, whose resend of snd.una goes at once (sendWindowed).
 */
export function tcpOutput(conn: TcpConnection, resendNow = false): void {
  const s = conn.state;
  const d = s.delegated;
  const soft = s.soft;
  const st = d.state;
  if (st < TcpStateId.ESTABLISHED) return;
  const now = conn.engine.env.clock.now();
  const maxBefore = d.sndMax;
  if (st !== TcpStateId.TIME_WAIT && st !== TcpStateId.FIN_WAIT_2 && d.persistDeadline === INF) {
    if (soft.inRecovery && s.const.sackEnabled) sackRecoveryOutput(conn, now);
    else sendWindowed(conn, now, resendNow);
  }
  conn.holdRetransmits = false;
  if (soft.ackNow) sendAck(conn);
  if (st === TcpStateId.TIME_WAIT) return;
  if (d.sndMax !== d.sndUna) {
    if (d.rtxDeadline === INF && d.persistDeadline === INF) d.rtxDeadline = now + backedOffRto(s);
    // RFC 8985 7.2 (Linux: tcp_schedule_loss_probe after every tcp_write_xmit that sent): new data
    // restarts the probe timer, which then waits two RTTs for the ACK of the newest segment; a
    // timer left from the start of the flight would probe while that segment is still on its way.
    // Where no probe may be armed (armTlp), new data cancels a pending one, as Linux's
    // tcp_event_new_data_sent turns a pending probe timer into the RTO before asking for a probe.
    if (seqGt(d.sndMax, maxBefore)) {
      soft.tlpDeadline = INF;
      armTlp(conn, now);
    } else if (soft.tlpDeadline === INF) armTlp(conn, now);
  } else {
    d.rtxDeadline = INF;
    // Nothing in flight, so no ACK will come to open the window: Linux's probe timer
    // (tcp_check_probe_timer), for a shut window and for one too small for the next segment.
    const stuck = d.sndWnd === 0 || !windowTakesNext(s, effectiveMss(s));
    if (stuck && d.persistDeadline === INF && hasUnsent(s)) d.persistDeadline = now + persistInterval(s);
  }
}

/**
 * RFC 8985 7.2: arm the probe timeout, two smoothed RTTs (plus the peer's delayed-ACK allowance
 * when a single segment is out), if it fires before the RTO. A tail loss then costs a probe and a
 * fast recovery instead of a timeout with its collapse to one segment.
 */
export function armTlp(conn: TcpConnection, now: number): void {
  const s = conn.state;
  const d = s.delegated;
  const soft = s.soft;
  if (!s.const.sackEnabled || soft.tlpInFlight || d.srtt <= 0) return;
  if (d.persistDeadline !== INF || d.sndMax === d.sndUna || d.backoff > 0) return;
  // Linux's tcp_schedule_loss_probe: only in the Open (or CWR) state, so not in a recovery, not
  // with data SACKed (Disorder), not while resending after a timeout (Loss) or a hand-over. A
  // lost retransmission with nothing delivered after it then waits for the RTO, as in Linux.
  if (soft.inRecovery || soft.sacked.length > 0 || seqLt(d.sndNxt, d.sndMax)) return;
  if (seqLt(d.sndUna, soft.recoveryPoint)) return;
  // One probe an episode (Linux's tcp_send_loss_probe: none while tlp_high_seq is set, the RTO
  // instead): the episode outlives the ACK that reaches a resent probe (RackLog.probeAck).
  if (conn.rack.tlpEnd !== -1) return;
  const flight = seqDiff(d.sndMax, d.sndUna);
  const pto = 2 * d.srtt + (flight <= effectiveMss(s) ? 200 : 2);
  // A probe no earlier than the RTO is left to the RTO (which resends the same head of the tail).
  soft.tlpDeadline = now + pto < d.rtxDeadline ? now + pto : INF;
}

export function persistInterval(s: TcpState): number {
  const d = s.delegated;
  const base = Math.max(d.rto, PERSIST_MIN_MS);
  return Math.min(base * 2 ** Math.min(d.persistBackoff, 20), PERSIST_MAX_MS);
}

/**
 * Payload bytes one segment may carry: the MSS, or with segmentation offload the largest whole
 * number of MSS-sized pieces that fits a 64 KB packet (with room for the longest TCP header), so
 * that no wire segment but the last of a burst is short; and no more than half the largest window
 * the peer offered (Linux's tcp_bound_to_half_wnd in tcp_xmit_size_goal): a receiver charges a
 * super-segment to its buffer whole, and one the size of a small window (a reader with SO_RCVBUF
 * of 32 KB) leaves it no room for anything else in flight.
 */
export function segmentLimit(conn: TcpConnection, mss: number): number {
  const ip = conn.engine.env.ip;
  const path = conn.state.path;
  if (ip.maxPacketBytes === undefined) return mss;
  const max = ip.maxPacketBytes(path);
  if (max <= path.cached.mtu) return mss;
  let n = Math.floor((max - ipHeaderBytes(path.const.remoteIp) - 60) / mss);
  const maxWnd = conn.state.delegated.maxSndWnd;
  if (maxWnd > 0) n = Math.min(n, Math.floor((maxWnd > 536 ? maxWnd >>> 1 : maxWnd) / mss));
  return n > 1 ? n * mss : mss;
}

/** RFC 6928's initial window: the burst any sender may put on the wire at once. */
const IW_SEGMENTS = 10;

/**
 * Payload bytes of one super-segment, as Linux's tcp_tso_autosize: a millisecond at the pacing
 * rate Linux would use (twice cwnd per smoothed RTT in slow start, 1.2 times after), plus the
 * largest super-segment shifted right by one for every 512 µs of minimum RTT (tcp_tso_rtt_log 9).
 * On a LAN (RTT well under a millisecond) a window below 64 KB then goes out as one packet; on a
 * long path a window is cut in pieces that spread over the round trip. Loss on a veth or a
 * bridge takes whole packets: a window in four pieces (cwnd / 4, tried before) gives loss four
 * chances, and at 10 % loss kept packets at 1-2 MSS against Linux's 45.
 *
 * New data goes out in pieces of at least IW_SEGMENTS where Linux's floor is two: Linux measures
 * its RTT in softirq, but a user-space stack's RTT holds its own turns, and under load (thousands
 * of connections on two cores) that RTT made pieces of two segments. Each piece is a buffer the
 * receiver charges whole: 1,000 readers on 32 KB buffers pruned and dropped in-window data from
 * pieces of two segments (TcpExtRcvPruned 433-904 a run, stalls of 110-240 ms), and with pieces
 * of ten none (stalls of 23 ms, Linux's sender 28 ms in the same run). Ten segments back to back
 * are the burst RFC 6928 grants any sender at its start, so the floor makes no burst larger than
 * one the standard already allows; half the peer's window (segmentLimit) still bounds it.
 */
function autosize(conn: TcpConnection, mss: number, floor = IW_SEGMENTS * mss): number {
  const limit = segmentLimit(conn, mss);
  if (limit <= mss) return mss;
  const d = conn.state.delegated;
  const srtt = d.srtt > 0 ? d.srtt : 1;
  const ratePerMs = ((d.cwnd < d.ssthresh ? 2 : 1.2) * d.cwnd) / srtt;
  const minRtt = Number.isFinite(conn.rack.minRtt) ? conn.rack.minRtt : srtt;
  const shift = Math.floor((minRtt * 1000) / 512);
  const bytes = ratePerMs + (shift < 31 ? Math.floor(limit / 2 ** shift) : 0);
  return Math.min(limit, Math.max(floor, Math.floor(bytes / mss) * mss));
}

/**
 * `resendNow`: a retransmission timeout's output, whose first piece (a resend below snd.max, from
 * snd.una) goes whatever the turn's budgets say. Linux's tcp_retransmit_timer resends the head
 * itself (tcp_retransmit_skb), outside TCP small queues; queued behind a worker's backlogged
 * senders it waited turns, and the timer, backed off, fired again before it left (a spurious
 * backoff each time, and a connection given up on sooner).
 */
function sendWindowed(conn: TcpConnection, now: number, resendNow: boolean): void {
  const s = conn.state;
  const d = s.delegated;
  const soft = s.soft;
  const mss = effectiveMss(s);
  const segMax = autosize(conn, mss);
  if (d.sndMax === d.sndUna && now - d.lastSendAt > d.rto && d.lastSendAt > 0 && hasUnsent(s)) {
    // RFC 5681 4.1: after an idle period the old cwnd no longer reflects the path.
    conn.engine.congestion(conn).onIdleRestart(s, now);
    d.lastSendAt = now;
  }
  const sched = conn.engine.output;
  const budget = sched ? sched.begin(conn) : INF;
  for (let guard = 0; guard < 100_000; guard++) {
    let seq = d.sndNxt;
    let limit = segMax;
    if (s.const.sackEnabled && seqLt(seq, d.sndMax) && soft.sacked.length > 0) {
      // Going back over sent data (after an RTO or an MTU drop): what the peer SACKed stays put.
      for (const r of soft.sacked) {
        if (seqLeq(r.end, seq)) continue;
        if (seqLeq(r.start, seq)) {
          seq = r.end;
          continue;
        }
        if (seqLt(seq, d.sndMax)) limit = Math.min(limit, seqDiff(r.start, seq));
        break;
      }
      d.sndNxt = seq;
    }
    const buffered = d.sendBuffer.length;
    const off = seqDiff(seq, d.sndUna);
    if (off > buffered) break;
    const flight = seqDiff(seq, d.sndUna);
    // RFC 3042 limited transmit: each of the first two duplicate ACKs says a segment left the
    // network, so one new segment may go beyond cwnd for each. In a recovery without SACK, cwnd is
    // PRR's over Linux's packets_in_flight, which leaves out a segment for each duplicate
    // (tcp_add_reno_sack, capped by tcp_limit_reno_sacked): the flight here counts them, as
    // that pipe leaves them out (renoLeftOut).
    const reno = soft.inRecovery && !s.const.sackEnabled;
    const lt = reno
      ? renoLeftOut(s, mss)
      : !soft.inRecovery && d.dupAcks > 0 && d.dupAcks < 3
        ? d.dupAcks * mss
        : 0;
    const usable = Math.min(d.sndWnd, d.cwnd + lt) - flight;
    const avail = buffered - off;
    let len = Math.min(avail, limit, Math.max(usable, 0));
    // All that is queued fits: a piece that falls short of it below was cut by Nagle, not the window.
    const fits = len === avail;
    // A super-segment cut short ends on an MSS boundary, the rest going (or waiting) as the short
    // segment it is under the rules below; but one that reaches the right edge of the peer's
    // window takes the short tail with it unless Nagle would hold that (Linux's
    // tcp_mss_split_point). Cut there, the tail stayed open in the window while the data before
    // it filled a slow reader's memory, and each ACK it sent then wanted a zero window it could
    // not offer (5,000 readers on 32 KB buffers: TcpExtTCPWantZeroWindowAdv 12,000-14,000 a run,
    // 15-23 with Linux serving the same run). The same holds for the end of what is queued.
    if (len > mss && len % mss !== 0 && tailWaits(conn, off + len === buffered, len === d.sndWnd - flight))
      len -= len % mss;
    const finHere = d.finQueued && finState(d.state) && off + len === buffered;
    if (len <= 0 && !finHere) break;
    const fresh = !seqLt(seq, d.sndMax);
    // New data waits for a window that takes its first MSS (windowTakesNext); resent data goes
    // into whatever window there is, as Linux's tcp_retransmit_skb.
    if (fresh && avail > 0 && d.sndWnd - flight < Math.min(mss, avail)) break;
    if (!finHere && len < mss && fresh) {
      const outstanding = d.sndMax !== d.sndUna;
      const all = off + len === buffered;
      // Nagle (RFC 896, RFC 1122 4.2.3.4): one small segment in flight at a time. Sender SWS
      // avoidance (4.2.3.4): a window-limited piece goes only if it is a fair share of the window.
      // Held behind any data in flight, where Linux's Minshall check (tcp_nagle_check) holds it
      // only behind a short segment: that, tried, let serve's slow readers prune data again
      // (one 5,000 soak: TcpExtRcvPruned 415, 0-21 without it; BENCHMARKS.md, branch h4).
      const ok = !outstanding || (all && s.cached.noDelay) || (d.maxSndWnd > 0 && len >= d.maxSndWnd / 2);
      if (!ok) break;
    }
    if (!finHere && !fits && len < segMax && fresh && deferSmallPiece(conn, len, avail, mss, now)) break;
    // The budgets are asked only once a piece would go: a connection whose window (or Nagle)
    // holds everything waits for an ACK, not for a turn. Asked before, the timer's exempt resend
    // listed its connection with a one-MSS window already full (a needless kick next turn, 1,282
    // of 2,000 in a wave of timeouts).
    // A resend whose piece is all that is in flight goes as well (rtxQueueSingle): after a
    // timeout, what the ACK of the timer's resend leaves is resent in that ACK's turn.
    if (outputSpent(conn, budget) && !(resendNow && guard === 0 && !fresh)) {
      // Spent for this turn (TCP small queues), or every sender's bytes of the turn were: the rest
      // goes next turn, after the others.
      if (fresh || !rtxQueueSingle(conn)) {
        sched?.later(conn);
        break;
      }
      lonePastBudget(conn);
    }
    const used = transmit(conn, seq, len, now);
    if (used === 0) break;
    if (fresh && used % mss !== 0) soft.smallSentEnd = seqAdd(seq, used);
    countOutput(conn, used);
    d.sndNxt = seqAdd(seq, used);
    if (finHere) break;
  }
}

/**
 * Linux's tcp_mss_split_point: whether the short tail of a piece longer than an MSS stays behind,
 * the piece ending on an MSS boundary. A piece cut short by the bound on its size leaves it; one
 * that reaches the right edge of the peer's window (`atEdge`) or the end of what is queued
 * (`atEnd`) takes it unless Nagle holds it, and one that carries the FIN takes it. Sent with the
 * full segments of a burst of small writes while an earlier short segment was unacknowledged,
 * the tail of the queue made two short segments in flight where Linux has one
 * (test/interop/nagle.test.ts: 96-100 of about 180 short segments, Linux's sender 0-1).
 */
function tailWaits(conn: TcpConnection, atEnd: boolean, atEdge: boolean): boolean {
  const d = conn.state.delegated;
  if (atEnd && d.finQueued && finState(d.state)) return false;
  return atEnd || atEdge ? nagleHolds(conn) : true;
}

/**
 * Linux's tcp_nagle_check for the short tail of a piece: Nagle is on, data is in flight, and a
 * short segment sent earlier is not yet acknowledged (Minshall's variant, tcp_minshall_check).
 */
function nagleHolds(conn: TcpConnection): boolean {
  const s = conn.state;
  const d = s.delegated;
  const sml = s.soft.smallSentEnd;
  if (s.cached.noDelay || d.sndMax === d.sndUna) return false;
  return seqGt(sml, d.sndUna) && seqLeq(sml, d.sndMax);
}

/**
 * Linux's tcp_tso_should_defer: with segmentation offload, new data of which the window or cwnd
 * lets out only a sliver (at most three segments and under a third of the window) waits for the
 * ACK already on its way, which lets out more, so that the data goes in larger pieces. A receiver
 * charges each piece's buffer whole, and one that reads slowly opens its window a few kilobytes
 * at a time: sent at each opening, the pieces filled its memory before its window (5,000 readers
 * on 32 KB buffers pruned and dropped in-window data; Linux's sender, which defers, drew no
 * drops from them). Not in recovery, not with nothing in flight (no ACK would come), not with
 * less queued than the sliver (the data, not the window, is short: Nagle's rules apply), and not
 * when the oldest segment in flight went out more than half an RTT ago (the ACK is late).
 */
function deferSmallPiece(conn: TcpConnection, len: number, avail: number, mss: number, now: number): boolean {
  const s = conn.state;
  const d = s.delegated;
  if (s.soft.inRecovery || d.sndMax === d.sndUna || avail <= len) return false;
  if (len > MAX_DEFERRED_SEGMENTS * mss || len * TSO_WIN_DIVISOR >= Math.min(d.sndWnd, d.cwnd)) return false;
  const head = conn.rack.entries[0];
  const sentAt = head !== undefined ? head.sentAt : d.lastSendAt;
  return now - sentAt <= d.srtt / 2;
}

/** Linux's tcp_max_tso_deferred_mss and tcp_tso_win_divisor. */
const MAX_DEFERRED_SEGMENTS = 3;
const TSO_WIN_DIVISOR = 3;

/** Whether `conn` has spent its budget of the turn (`budget`, from OutputScheduler.begin), or the turn all of its own. */
function outputSpent(conn: TcpConnection, budget: number): boolean {
  return conn.outputUsed >= budget || conn.engine.output?.turnSpent === true;
}

/** `used` bytes of sequence space went out: counted in the connection's and the turn's bytes. */
function countOutput(conn: TcpConnection, used: number): void {
  conn.outputUsed += used;
  const sched = conn.engine.output;
  if (sched) sched.turnUsed += used;
}

const nextSeg = { seq: 0, len: 0 };

/**
 * RFC 6675 section 5 step (C): send while cwnd - pipe allows, holes first, then new data. Under
 * the turn's budgets as sendWindowed, as Linux's tcp_xmit_retransmit_queue asks TCP small queues
 * before each retransmission (tcp_small_queue_check) and new data in recovery goes through
 * tcp_write_xmit: a connection cut short is listed for the next turn, whose resume comes back here
 * (still in recovery) and goes on from high_rxt, holes first. Its RTO stays armed meanwhile. The
 * recovery's fast retransmission (its first send, of snd.una) goes whatever the budgets say, as
 * Linux's leaves in the processing of the ACK that started the recovery.
 */
function sackRecoveryOutput(conn: TcpConnection, now: number): void {
  const s = conn.state;
  const d = s.delegated;
  const mss = effectiveMss(s);
  // A small window (heavy loss) resends MSS by MSS: a lost super-segment would cost more of it.
  const segMax = autosize(conn, mss, mss);
  const sched = conn.engine.output;
  const budget = sched ? sched.begin(conn) : INF;
  d.sndNxt = d.sndMax;
  for (let guard = 0; guard < 10_000; guard++) {
    const pipe = sackPipe(s, mss);
    const room = d.cwnd - pipe;
    if (room < mss) break;
    // With segmentation offload a lost range goes again as one super-segment (Linux does the
    // same), as much of it as the window has room for.
    const limit = Math.min(segMax, Math.floor(room / mss) * mss);
    // RFC 6675 NextSeg order: (1) a lost hole, (2) new data, (3) a hole not yet deemed lost.
    const hole = !conn.holdRetransmits && sackNextSeg(s, mss, nextSeg, limit);
    const spent = outputSpent(conn, budget);
    // The recovery's first send is its fast retransmit (RFC 6675 5 step 4.3): the first hole,
    // deemed lost or not (three duplicate ACKs started the recovery).
    if (hole && (s.soft.prrOut === 0 || sackIsLost(s, nextSeg.seq, mss))) {
      if (spent && !(s.soft.prrOut === 0 && nextSeg.seq === d.sndUna)) {
        if (!rtxQueueSingle(conn)) {
          sched?.later(conn);
          break;
        }
        lonePastBudget(conn);
      }
      if (!retransmitHole(conn, now)) break;
      continue;
    }
    if (hole && nextSeg.len > mss) nextSeg.len = mss;
    const sentNew = sendNewInRecovery(conn, limit, now, spent);
    if (sentNew > 0) continue;
    if (sentNew < 0) break;
    if (hole && spent) {
      sched?.later(conn);
      break;
    }
    if (hole && retransmitHole(conn, now)) continue;
    break;
  }
}

/**
 * Linux's tcp_rtx_queue_empty_or_single_skb, the shortcut of tcp_small_queue_check: a resend goes
 * whatever the queues hold when what is in flight is one piece, since nothing else of the
 * connection's is queued to wake it (Linux: no TX completion to wait for). A piece is a send of
 * RACK's log (a super-segment, or a burst logged as one, as a TSO skb) or a SACKed range (Linux
 * keeps SACKed skbs in its queue until cumulatively ACKed), so a hole below SACKed data is two
 * and waits its turn. A lost segment left alone once the rest is ACKed (RACK marks it on the ACK
 * of a later resend) waited behind a worker's spent turn, as many turns as the crowd took.
 * Without a log covering the flight (a new owner's starts empty; none is kept without SACK), not
 * one piece as far as known: the resend waits its turn, as before.
 */
function rtxQueueSingle(conn: TcpConnection): boolean {
  const s = conn.state;
  const d = s.delegated;
  if (d.sndUna === d.sndMax) return true;
  const e = conn.rack.entries;
  if (e.length !== 1 || s.soft.sacked.length > 0) return false;
  const only = e[0]!;
  return seqLeq(only.start, d.sndUna) && !seqLt(only.end, d.sndMax);
}

/**
 * Counts a resend that rtxQueueSingle let past a spent budget: how often the shortcut decides
 * anything, to set beside a download's time under loss (bench/loss.ts).
 */
function lonePastBudget(conn: TcpConnection): void {
  conn.engine.env.counters.inc('tcp.rtx.lone-past-budget');
}

/** Resend the hole `nextSeg` describes; false if nothing could be sent. */
function retransmitHole(conn: TcpConnection, now: number): boolean {
  const used = transmit(conn, nextSeg.seq, nextSeg.len, now);
  if (used === 0) return false;
  countOutput(conn, used);
  conn.state.soft.highRxt = seqAdd(nextSeg.seq, used);
  conn.state.soft.rxtAt = now;
  return true;
}

/**
 * Send up to `mss` bytes of new data during recovery: >0 sent, 0 nothing to send, <0 stop (the FIN
 * went out, or there was something to send but the turn's budget is `spent`: listed for the next).
 */
function sendNewInRecovery(conn: TcpConnection, mss: number, now: number, spent: boolean): number {
  const s = conn.state;
  const d = s.delegated;
  const buffered = d.sendBuffer.length;
  const off = seqDiff(d.sndMax, d.sndUna);
  if (off > buffered) return 0;
  const inWnd = seqDiff(seqAdd(d.sndUna, d.sndWnd), d.sndMax);
  const len = Math.min(buffered - off, mss, Math.max(inWnd, 0));
  const finHere = d.finQueued && finState(d.state) && off + len === buffered;
  if (len <= 0 && !finHere) return 0;
  if (spent) {
    conn.engine.output?.later(conn);
    return -1;
  }
  const used = transmit(conn, d.sndMax, len, now);
  countOutput(conn, used);
  d.sndNxt = d.sndMax;
  if (finHere) return -1;
  return used;
}
