/**
 * RACK (RFC 8985): time-based loss detection. A segment is lost once a segment sent at least a
 * reordering window after it has been delivered (ACKed or SACKed). It needs the time each range
 * of sequence space was last sent; that is soft state, kept beside the connection's state object
 * (a new owner starts without it and simply detects by the RFC 6675 rules until it has sent).
 *
 * The log is sorted by sequence number, its ranges disjoint; a retransmission overwrites the
 * time of the range it covers. With segmentation offload an entry is a whole super-segment, so
 * the log stays short.
 */
import {
  RACK_REO_PERSIST,
  RACK_REORDERING_MAX,
  RACK_REORDERING_MIN,
  type RackPathState,
  rackPathDefaults,
  type TcpState,
} from '../../state/tcp-state.ts';
import { DUP_THRESH, sackedPackets } from './sack.ts';
import { seqGt, seqLeq, seqLt } from './seq.ts';

export interface RackEntry {
  start: number;
  end: number;
  sentAt: number;
  rtx: boolean;
  /**
   * Rank of the entry's last send among every send of the log (RackLog.sends). Sends of one
   * instant share a time, and a retransmission may go before or after new data in it.
   */
  order: number;
}

/** Contiguous first transmissions this close in time share one entry (a bound on per-segment work). */
const MERGE_MS = 0.5;
/** Past this many entries the oldest are merged away: a bound on per-ACK work (hostile peers). */
const MAX_ENTRIES = 4096;

export class RackLog {
  readonly entries: RackEntry[] = [];
  /** RACK.xmit_ts: send time of the most recently sent segment known delivered (-1: none). */
  xmitTs = -1;
  /** The rank (RackEntry.order) of the send that set xmitTs. */
  private xmitOrder = -1;
  /** Sends logged so far: the next entry's order. */
  private sends = 0;
  /** RACK.min_RTT. */
  minRtt = Number.POSITIVE_INFINITY;
  /**
   * RACK's reordering timer (RFC 8985 6.2 step 5, Linux's ICSK_TIME_REO_TIMEOUT): when detect-loss
   * next has something to mark, Infinity when nothing waits on the reordering window. Kept with
   * the log it reads: a new owner starts without the log (and so with nothing to time).
   */
  reoDeadline = Number.POSITIVE_INFINITY;
  /**
   * What RACK knows of the path lives in the connection's state (TcpSoft: reordering,
   * reorderingSeen, reoWndMult, reoWndPersist, rtxBytes, dsackBytes), not here: Linux keeps it in
   * tcp_sock for the connection's life, and so it travels with every move, offload, upload and
   * rebuild, where this log (send times) starts empty. Bound by the connection (`bind`).
   */
  private soft: RackPathState = rackPathDefaults();

  /** The state whose path knowledge this log reads and grows (the connection's, for its life). */
  bind(soft: RackPathState): void {
    this.soft = soft;
  }

  /**
   * RACK.reordering_seen (RFC 8985 6.2 step 3, Linux's tp->reord_seen): an original was delivered
   * below data delivered before it. Until then the reordering window is zero in recovery or once
   * DupThresh segments are SACKed (reoWnd).
   */
  get reorderingSeen(): boolean {
    return this.soft.reorderingSeen;
  }
  set reorderingSeen(v: boolean) {
    this.soft.reorderingSeen = v;
  }
  /**
   * RACK.reo_wnd_mult (RFC 8985 6.2 step 4, Linux's reo_wnd_steps): one more quarter of the
   * minimum RTT per round trip in which a DSACK showed a retransmission needless, back to 1 after
   * RACK_REO_PERSIST recoveries without one.
   */
  get reoWndMult(): number {
    return this.soft.reoWndMult;
  }
  /**
   * The path's reordering degree in segments (Linux's tp->reordering, RFC 8985's DupThresh):
   * SACKed segments that make the reordering window zero while no reordering is seen. Starts at
   * Linux's sysctl tcp_reordering and grows to the distance, in segments, by which an original
   * arrived late (tcp_check_sack_reordering); a timeout with that many SACKed outside recovery
   * brings it back (tcp_enter_loss).
   */
  get reordering(): number {
    return this.soft.reordering;
  }
  set reordering(v: number) {
    this.soft.reordering = v;
  }
  /** snd.nxt at the last widening: a DSACK counts once a round trip (snd.una past it). */
  private reoWndRound = -1;

  /**
   * A DSACK arrived (RFC 8985 6.2 step 4, Linux's tcp_rack_update_reo_wnd). Only once reordering
   * has been seen, as Linux's tcp_dsack_seen: a duplicate on a path that never reordered shows a
   * lost ACK or a needless timeout, not a window too narrow, and widening it there only delays
   * the repair of the next real loss.
   */
  noteDsack(una: number, nxt: number, len: number, probe = false): void {
    // Linux's dsack_dups against total_retrans: more reported twice than was ever resent means
    // the receiver (or a middlebox) duplicated it, which says nothing of our window.
    const p = this.soft;
    p.dsackBytes += len;
    if (p.dsackBytes > p.rtxBytes) return;
    // A loss probe's copy is resent by a timer, not by RACK's reading of the window: its DSACK
    // says the probe was needless, not that the window is too narrow (FLAG_DSACK_TLP).
    if (probe) return;
    if (!p.reorderingSeen) return;
    if (this.reoWndRound !== -1 && seqLt(una, this.reoWndRound)) return;
    p.reoWndMult = Math.min(p.reoWndMult + 1, 255);
    p.reoWndPersist = RACK_REO_PERSIST;
    this.reoWndRound = nxt >>> 0;
  }

  /**
   * The tail loss probe's episode (RFC 8985 7.4, Linux's tlp_high_seq): snd.max once the probe
   * went out, -1 when none is open. Outlives the ACK that reaches it, as Linux's, so that the
   * DSACK which follows for a probe whose original had arrived is known for the probe's.
   */
  tlpEnd = -1;
  /** The open probe resent data (Linux's tlp_retrans), rather than sending new data. */
  private tlpRtx = false;

  /** A loss probe went out; `end`: snd.max after it. */
  noteProbe(end: number, rtx: boolean): void {
    this.tlpEnd = end >>> 0;
    this.tlpRtx = rtx;
  }

  /**
   * A DSACK of [l, r): is it for the open probe's copy (Linux's tcp_dsack_seen sets
   * FLAG_DSACK_TLP for one segment ending at tlp_high_seq)? Then original and probe both
   * arrived: nothing was lost, and the episode ends.
   */
  probeDsack(l: number, r: number, mss: number): boolean {
    if (this.tlpEnd === -1 || r >>> 0 !== this.tlpEnd || ((r - l) | 0) > mss) return false;
    this.tlpEnd = -1;
    return true;
  }

  /**
   * An ACK while a probe's episode is open (Linux's tcp_process_tlp_ack). True when it shows the
   * probe repaired a loss: its copy was the only one to arrive, so the ACK went past the probe
   * with no DSACK for it; a reduction of the window is due (RFC 8985 7.4.2). `pureDup`: no
   * advance, no data or FIN, nothing newly SACKed: the copy arrived after its original, no loss.
   */
  probeAck(ack: number, pureDup: boolean): boolean {
    if (this.tlpEnd === -1 || seqLt(ack, this.tlpEnd)) return false;
    if (!this.tlpRtx || (pureDup && ack >>> 0 === this.tlpEnd)) {
      this.tlpEnd = -1;
      return false;
    }
    if (!seqGt(ack, this.tlpEnd)) return false;
    this.tlpEnd = -1;
    return true;
  }

  /** A recovery ended (Linux's tcp_try_undo_recovery, without an undo). */
  noteRecoveryEnd(): void {
    const p = this.soft;
    if (p.reoWndPersist > 0 && --p.reoWndPersist === 0) p.reoWndMult = 1;
  }

  clear(): void {
    this.entries.length = 0;
    this.xmitTs = -1;
    this.xmitOrder = -1;
    this.endSeq = 0;
    this.rtt = 0;
    this.reoDeadline = Number.POSITIVE_INFINITY;
    this.timeoutAt = Number.NEGATIVE_INFINITY;
    this.tlpEnd = -1;
  }

  /**
   * As new (a connection object taken up again for a state that moved back: TcpConnection.revive).
   * What it knows of the path is the state's, which came back with it.
   */
  reset(): void {
    this.clear();
    this.minRtt = Number.POSITIVE_INFINITY;
    this.delivered = false;
    this.fack = -1;
    this.fackStart = -1;
    this.reoWndRound = -1;
  }

  /**
   * [start, end) went out at `now`. `sacked`: the scoreboard, sorted (what of the rest of an
   * entry a retransmission cuts was SACKed already leaves the log with it).
   */
  onSend(
    start: number,
    end: number,
    now: number,
    rtx: boolean,
    sacked: readonly { start: number; end: number }[] = NO_RANGES,
  ): void {
    start >>>= 0;
    end >>>= 0;
    if (!seqLt(start, end)) return;
    if (rtx) this.soft.rtxBytes += (end - start) >>> 0;
    const order = this.sends++;
    const e = this.entries;
    const last = e[e.length - 1];
    if (!last || seqLeq(last.end, start)) {
      const next = last !== undefined && last.order === order - 1;
      if (next && last.end === start && last.rtx === rtx && now - last.sentAt <= MERGE_MS) {
        // One entry per burst, not per segment: stamped with the latest send, so its older
        // part is only ever declared lost later than it could be, never earlier. Not across
        // another send (a retransmission between): an entry's sends are consecutive, so a
        // delivery of its first part dates nothing after what went between.
        last.end = end;
        last.sentAt = now;
        last.order = order;
      } else e.push({ start, end, sentAt: now, rtx, order });
      while (e.length > MAX_ENTRIES) this.squeeze();
      return;
    }
    // A retransmission inside the log: cut the entries it overlaps and put it in their place, in
    // place. Every resend after a timeout or a failover's prod lands inside the log, segment by
    // segment as ACKs clock them out: no arrays built per segment, the overlapped entries reused.
    let i = 0;
    while (i < e.length && seqLeq(e[i]!.end, start)) i++;
    let j = i;
    while (j < e.length && seqLt(e[j]!.start, end)) j++;
    // Only the first entry overlapped can begin before `start`, only the last end after `end`.
    const hasLeft = j > i && seqLt(e[i]!.start, start);
    const tail = j > i ? e[j - 1]! : null;
    const hasRight = tail !== null && seqLt(end, tail.end);
    const rightEnd = tail?.end ?? 0;
    const rightSentAt = tail?.sentAt ?? 0;
    const rightRtx = tail?.rtx ?? false;
    const rightOrder = tail?.order ?? 0;
    if (hasLeft) e[i]!.end = start;
    const k = hasLeft ? i + 1 : i;
    const want = hasRight ? 2 : 1;
    const spare = j - k;
    if (spare > want) e.splice(k + want, spare - want);
    else if (spare === want - 1)
      e.splice(k + spare, 0, { start: 0, end: 0, sentAt: 0, rtx: false, order: 0 });
    else if (spare === want - 2)
      e.splice(
        k,
        0,
        { start: 0, end: 0, sentAt: 0, rtx: false, order: 0 },
        { start: 0, end: 0, sentAt: 0, rtx: false, order: 0 },
      );
    const r = e[k]!;
    r.start = start;
    r.end = end;
    r.sentAt = now;
    r.rtx = rtx;
    r.order = order;
    if (hasRight) {
      const t = e[k + 1]!;
      t.start = end;
      t.end = rightEnd;
      t.sentAt = rightSentAt;
      t.rtx = rightRtx;
      t.order = rightOrder;
      // The rest of an entry SACKed in its middle, cut from its head by the resend of the hole
      // below: its SACKed head was delivered (take, at the SACK), and left in the log the next
      // cumulative ACK would deliver it again, read as an original come after later data
      // (reordering). The SACK loop drops a SACKed head the same way (onAck).
      for (const b of sacked) {
        if (seqLeq(t.end, b.start)) break;
        if (seqLeq(b.start, t.start) && seqLt(t.start, b.end))
          t.start = seqLt(b.end, t.end) ? b.end >>> 0 : t.end;
      }
      if (t.start === t.end) e.splice(k + 1, 1);
    }
    while (e.length > MAX_ENTRIES) this.squeeze();
  }

  /**
   * An RTT sample taken from an ACK (timestamps or a timed segment, the handshake's included), as
   * Linux feeds every sample to tcp_min_rtt. Without it the minimum knew only what the log itself
   * delivered: after a timeout the first of those is an original SACKed a whole RTO after it went
   * out, and every retransmission delivered within that long "minimum" was taken for its original
   * (take), so RACK saw no loss until the next timeout. A timestamp sample of 0 only says the RTT
   * is under a millisecond; the log's own samples are finer.
   */
  noteRtt(rtt: number): void {
    if (rtt > 0 && rtt < this.minRtt) this.minRtt = rtt;
  }

  /**
   * A retransmission timeout fired: what goes out from now on is the timeout's copy. `open`: it
   * fired outside a recovery and a timeout's episode; `sackedSegs`: segments SACKed then. A
   * timeout with DupThresh segments SACKed and no recovery started says the reordering degree
   * was set too high (Linux's tcp_enter_loss): back to the initial one.
   */
  noteTimeout(now: number, open = false, sackedSegs = 0): void {
    if (open && sackedSegs >= DUP_THRESH)
      this.soft.reordering = Math.min(this.soft.reordering, RACK_REORDERING_MIN);
    this.timeoutAt = now;
    // Linux's tcp_retransmit_timer: a timeout ends the probe's episode.
    this.tlpEnd = -1;
    // The timeout resends from snd.una whatever RACK would have marked (Linux's timer slot holds
    // one of the two).
    this.reoDeadline = Number.POSITIVE_INFINITY;
  }

  /**
   * A timeout proved spurious: the ACK that showed it was for the originals, so the copies the
   * timeout sent say nothing about when what they cover was delivered (RFC 8985 6.2 step 2):
   * taking one as delivered would date the delivery after every original still in flight and
   * declare them all lost. Those copies are forgotten; ranges below `una` sent before the timeout
   * stay, and the next `onAck` takes them as delivered at their own send time. Forgetting those
   * too hid the loss of what the same window lost (10 % loss: a hole left for the next timeout).
   */
  forgetBelow(una: number): void {
    const e = this.entries;
    let w = 0;
    for (let i = 0; i < e.length; i++) {
      const r = e[i]!;
      if (seqLt(r.start, una) && r.sentAt >= this.timeoutAt) {
        if (seqLeq(r.end, una)) continue;
        r.start = una >>> 0;
      }
      e[w++] = r;
    }
    e.length = w;
  }

  private timeoutAt = Number.NEGATIVE_INFINITY;
  private delivered = false;
  /**
   * RACK.end_seq: where the delivered data that set xmitTs ends. Ties in send time go by sequence
   * (Linux's tcp_skb_sent_after): an entry stamped as the delivered one holds a whole burst, and
   * its part below what was delivered went out before it.
   */
  private endSeq = 0;
  /** RACK.rtt: the round trip of that delivery, so a wait is measured from the ACK that brought it. */
  private rtt = 0;
  /** RACK.fack: the highest sequence delivered (cumulatively or SACKed), -1 before any. */
  private fack = -1;
  /**
   * Where the segment that set fack begins (Linux's tcp_highest_sack_seq, the highest SACKed
   * skb's start): an original delivered below it arrived after a segment sent later. -1: none.
   */
  private fackStart = -1;
  /**
   * Linux's fack for the reordering degree of this ACK (tcp_check_sack_reordering): the start of
   * the highest SACKed segment, or snd.una with nothing SACKed.
   */
  private degreeFack = 0;
  private mss = 1;

  /**
   * `r` was delivered up to `end` (cumulatively or SACKed). `whole`: [r.start, end) is newly
   * delivered (an entry partly SACKed is taken again on every ACK that still SACKs it).
   */
  private take(r: RackEntry, now: number, end: number, whole: boolean): void {
    if (whole && seqLt(r.start, end)) {
      // RFC 8985 6.2 step 3: an original delivered below what was delivered before it arrived
      // out of order. A retransmission filling a hole says nothing of the kind. An entry is a
      // burst: still in the log, part of it was not yet delivered, and that part lies at or
      // above its start; below the start of the segment that set fack, it came after that one.
      if (!r.rtx && this.fack !== -1 && seqLt(r.start, this.fackStart)) this.reordered(r.start);
      if (this.fack === -1 || seqGt(end, this.fack)) this.setFack(r.start, end);
    } else if (seqLt(r.start, end) && (this.fack === -1 || seqGt(end, this.fack))) {
      this.setFack(r.start, end);
    }
    // RFC 8985 6.2 step 2: a retransmitted range ACKed sooner than min RTT after it went out was
    // delivered by its original copy, whose send time we no longer know.
    if (r.rtx && now - r.sentAt < this.minRtt) return;
    if (r.sentAt > this.xmitTs || (r.sentAt === this.xmitTs && this.later(r, end))) {
      this.xmitTs = r.sentAt;
      this.xmitOrder = r.order;
      this.endSeq = end >>> 0;
      this.rtt = now - r.sentAt;
      this.delivered = true;
    }
    const rtt = now - r.sentAt;
    if (rtt >= 0 && rtt < this.minRtt && !r.rtx) this.minRtt = rtt;
  }

  /**
   * RFC 8985's RACK_sent_after for a send of the same instant as the delivered one: the order of
   * the sends, and within one entry (one burst, sent in sequence order) the sequence.
   */
  private later(r: RackEntry, end: number): boolean {
    return r.order !== this.xmitOrder ? r.order > this.xmitOrder : seqLt(this.endSeq, end);
  }

  private setFack(start: number, end: number): void {
    this.fack = end >>> 0;
    // The last segment of [start, end): a whole one below its end, or the range if shorter.
    const seg = (end - this.mss) >>> 0;
    this.fackStart = seqLt(seg, start) ? start >>> 0 : seg;
  }

  /**
   * An original from `low` up was delivered after data sent later (Linux's
   * tcp_check_sack_reordering): reordering is seen, and the degree grows to the distance, in
   * whole segments begun, from it to the highest SACKed segment.
   */
  private reordered(low: number): void {
    const p = this.soft;
    p.reorderingSeen = true;
    if (!seqLt(low, this.degreeFack)) return;
    const metric = (this.degreeFack - low) >>> 0;
    if (metric > p.reordering * this.mss) {
      p.reordering = Math.min(Math.ceil(metric / this.mss), RACK_REORDERING_MAX);
    }
  }

  /**
   * A partial ACK in recovery answered originals (Linux's tcp_try_undo_partial with
   * tcp_packet_delayed): the hole from `low` (snd.una before it) was filled by a late original,
   * not by the retransmission. Reordering is seen, and the degree grows to the distance from `low`
   * to the highest SACKed segment still above snd.una, or to snd.una (Linux's
   * tcp_check_sack_reordering with its fack, tcp_highest_sack_seq, after the ACK).
   */
  noteLateHole(s: TcpState, low: number, mss: number): void {
    this.mss = mss > 0 ? mss : 1;
    const una = s.delegated.sndUna;
    const top = s.soft.sacked[s.soft.sacked.length - 1];
    if (top && seqLt(una, top.end)) {
      const seg = (top.end - this.mss) >>> 0;
      this.degreeFack = seqLt(seg, top.start) ? top.start : seg;
    } else this.degreeFack = una;
    this.reordered(low);
  }

  /**
   * A retransmission neither ACKed by snd.una nor inside a SACKed range (Linux's retrans_out),
   * read before onAck takes this ACK's deliveries out of the log. A retransmission RACK marked
   * lost again still counts (Linux's no longer does): no undo rather than one too early.
   */
  resentOutstanding(s: TcpState): boolean {
    const una = s.delegated.sndUna;
    const sacked = s.soft.sacked;
    let k = 0;
    for (const r of this.entries) {
      if (!r.rtx || seqLeq(r.end, una)) continue;
      const start = seqLt(r.start, una) ? una : r.start;
      while (k < sacked.length && seqLeq(sacked[k]!.end, start)) k++;
      const b = sacked[k];
      if (b && seqLeq(b.start, start) && seqLeq(r.end, b.end)) continue;
      return true;
    }
    return false;
  }

  /** A retransmission is in the log: resent data not yet delivered (Linux's tcp_any_retrans_done). */
  resentInFlight(): boolean {
    for (const r of this.entries) if (r.rtx) return true;
    return false;
  }

  /** Merge the two oldest-sent neighbours at the head: keeps the log bounded, loses precision only. */
  private squeeze(): void {
    const e = this.entries;
    const a = e[0]!;
    const b = e[1]!;
    a.end = b.end;
    a.sentAt = Math.max(a.sentAt, b.sentAt);
    a.rtx = a.rtx || b.rtx;
    a.order = Math.max(a.order, b.order);
    e.splice(1, 1);
  }

  /**
   * Account an ACK: entries below snd.una or inside SACKed ranges are delivered (and dropped from
   * the log), moving RACK.xmit_ts. Then detect losses (`detect`). Returns the highest lost sequence
   * number's end, or -1 if none; the lowest lost start goes to `lowest.seq`. `mss`: the segment
   * size, below which a SACK block dates nothing (sackedTop).
   */
  onAck(s: TcpState, now: number, lowest: { seq: number }, mss: number): number {
    const e = this.entries;
    const una = s.delegated.sndUna;
    this.delivered = false;
    this.mss = mss > 0 ? mss : 1;
    const top = s.soft.sacked[s.soft.sacked.length - 1];
    if (top && seqLt(una, top.end)) {
      const seg = (top.end - this.mss) >>> 0;
      this.degreeFack = seqLt(seg, top.start) ? top.start : seg;
    } else this.degreeFack = una;
    let head = 0;
    while (head < e.length && seqLeq(e[head]!.end, una)) {
      const r = e[head++]!;
      this.take(r, now, r.end, true);
    }
    if (head > 0) e.splice(0, head);
    if (e.length > 0 && seqLt(e[0]!.start, una)) {
      // Part of a super-segment arrived: that part was sent when the whole was.
      this.take(e[0]!, now, una, true);
      e[0]!.start = una;
    }
    const sacked = s.soft.sacked;
    if (sacked.length > 0 && e.length > 0) {
      let k = 0;
      let w = 0;
      for (let i = 0; i < e.length; i++) {
        const r = e[i]!;
        while (k < sacked.length && seqLeq(sacked[k]!.end, r.start)) k++;
        const sr = sacked[k];
        if (sr && seqLt(sr.start, r.end)) {
          if (seqLeq(sr.start, r.start) && seqLeq(r.end, sr.end)) {
            this.take(r, now, r.end, true);
            continue;
          }
          this.take(r, now, sackedTop(sacked, k, r, mss), false);
          // What is delivered from the entry's start leaves the log, as below snd.una: an entry
          // then starts with data not yet delivered, and its start is what a later delivery of
          // it brings (the reordering test in take: else a burst whose SACKed head was followed
          // by a lost, resent middle read as an original come late).
          if (seqLeq(sr.start, r.start)) r.start = sr.end >>> 0;
        }
        e[w++] = r;
      }
      e.length = w;
    }
    // Linux's tcp_rack_mark_lost: only an ACK that delivered something newer looks again; a wait
    // already armed stands.
    if (!this.delivered) return -1;
    return this.detect(s, now, lowest, mss);
  }

  /**
   * RACK.reo_wnd (RFC 8985 6.2 step 4, Linux's tcp_rack_reo_wnd). With no reordering seen, zero
   * in recovery, in a timeout's episode (Linux's Loss state: icsk_ca_state >= TCP_CA_Recovery) or
   * once `reordering` segments are SACKed: the path has not shown it reorders, and
   * waiting a quarter RTT more per hole only delays the repair (Linux resends at once there).
   * Otherwise a quarter of the minimum RTT times reoWndMult, never more than the smoothed RTT.
   */
  reoWnd(s: TcpState, mss: number): number {
    if (!this.reorderingSeen && (lossOrRecovery(s) || sackedPackets(s, mss) >= this.reordering)) return 0;
    const minRtt = Number.isFinite(this.minRtt) ? this.minRtt : s.delegated.srtt;
    return Math.min((minRtt / 4) * this.reoWndMult, s.delegated.srtt);
  }

  /**
   * RFC 8985 6.2 steps 4-5 (Linux's tcp_rack_detect_loss): what went out before the newest
   * delivered data is lost once a round trip (RACK.rtt) and a reordering window have passed since
   * it was sent; what is not yet lost only because of that window arms the reordering timer for
   * the rest of the wait (reoDeadline). Returns the end of the highest lost range, or -1; the
   * lowest lost start goes to `lowest.seq`. Called on an ACK that delivered something and when the
   * timer fires.
   */
  detect(s: TcpState, now: number, lowest: { seq: number }, mss: number): number {
    this.reoDeadline = Number.POSITIVE_INFINITY;
    if (this.xmitTs < 0) return -1;
    const reoWnd = this.reoWnd(s, mss);
    const xmitTs = this.xmitTs;
    const xmitOrder = this.xmitOrder;
    const endSeq = this.endSeq;
    const wait = this.rtt + reoWnd;
    let lostEnd = -1;
    // The latest of the waits, as RFC 8985 and Linux: one expiry then marks them all.
    let next = -1;
    for (const r of this.entries) {
      // Sends of the delivered data's instant go by the order they left in (RFC 8985's
      // RACK_sent_after): a retransmission sent in the same burst before new data that arrived is
      // lost like one sent earlier. Taking every such retransmission as sent after left the hole
      // resent with the last of the send buffer for the RTO (sim-loss, 10 %). Within the delivered
      // entry itself, only its first transmissions are ordered by sequence.
      const same = r.sentAt === xmitTs && r.order === xmitOrder && !r.rtx;
      const before = r.sentAt === xmitTs && r.order < xmitOrder;
      if (r.sentAt < xmitTs || before || (same && seqLt(r.start, endSeq))) {
        // Deadlines are sums of the same terms here and at the timer: an exact comparison holds.
        const due = r.sentAt + wait;
        if (due <= now) {
          if (lostEnd === -1) lowest.seq = r.start;
          // Of the delivered burst only the part below the delivery went out before it.
          lostEnd = same && seqLt(endSeq, r.end) ? endSeq : r.end;
        } else if (due > next) {
          next = due;
        }
      } else if (!r.rtx && r.sentAt > xmitTs) {
        // First-time transmissions are logged in time order: nothing later can be older.
        break;
      }
    }
    if (next >= 0) this.reoDeadline = next;
    return lostEnd;
  }
}

/**
 * Linux's icsk_ca_state >= TCP_CA_Recovery: a fast recovery, or a timeout's episode (its Loss
 * state) until everything sent before the timeout is ACKed or the timeout is undone (both move
 * recoveryPoint to snd.una or below).
 */
function lossOrRecovery(s: TcpState): boolean {
  return s.soft.inRecovery || seqLt(s.delegated.sndUna, s.soft.recoveryPoint);
}

/**
 * Where the SACKed data inside entry `r` (partly SACKed; `sacked[k]` is the first block that
 * overlaps it) ends, for RACK.end_seq: the part of the burst below it went out before it. Only a
 * block that could be a whole segment counts (at least `mss` long, or reaching the entry's end: a
 * short last segment), as Linux tags SACKs by whole segments only (tcp_match_skb_to_sack rounds to
 * full MSS and ignores less): a receiver that SACKs single bytes inside segments (the scoreboard
 * attack of bench/attacks.ts) delivered no segment there, and dates nothing. Without such a block,
 * the entry's start: the burst counts as delivered at its send time, and none of it as before.
 */
const NO_RANGES: readonly { start: number; end: number }[] = [];

function sackedTop(
  sacked: readonly { start: number; end: number }[],
  k: number,
  r: RackEntry,
  mss: number,
): number {
  let top = r.start;
  for (let i = k; i < sacked.length; i++) {
    const b = sacked[i]!;
    if (!seqLt(b.start, r.end)) break;
    const end = seqLt(b.end, r.end) ? b.end : r.end;
    const start = seqLt(b.start, r.start) ? r.start : b.start;
    if (end === r.end || ((end - start) | 0) >= mss) top = end;
  }
  return top;
}
