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
import type { TcpState } from '../../state/tcp-state.ts';
import { seqLeq, seqLt } from './seq.ts';

export interface RackEntry {
  start: number;
  end: number;
  sentAt: number;
  rtx: boolean;
}

/** Contiguous first transmissions this close in time share one entry (a bound on per-segment work). */
const MERGE_MS = 0.5;
/** Past this many entries the oldest are merged away: a bound on per-ACK work (hostile peers). */
const MAX_ENTRIES = 4096;

export class RackLog {
  readonly entries: RackEntry[] = [];
  /** RACK.xmit_ts: send time of the most recently sent segment known delivered (-1: none). */
  xmitTs = -1;
  /** RACK.min_RTT. */
  minRtt = Number.POSITIVE_INFINITY;

  clear(): void {
    this.entries.length = 0;
    this.xmitTs = -1;
    this.timeoutAt = Number.NEGATIVE_INFINITY;
  }

  /** As new (a connection object taken up again for a state that moved back: TcpConnection.revive). */
  reset(): void {
    this.clear();
    this.minRtt = Number.POSITIVE_INFINITY;
    this.delivered = false;
  }

  /** [start, end) went out at `now`. */
  onSend(start: number, end: number, now: number, rtx: boolean): void {
    start >>>= 0;
    end >>>= 0;
    if (!seqLt(start, end)) return;
    const e = this.entries;
    const last = e[e.length - 1];
    if (!last || seqLeq(last.end, start)) {
      if (last && last.end === start && last.rtx === rtx && now - last.sentAt <= MERGE_MS) {
        // One entry per burst, not per segment: stamped with the latest send, so its older
        // part is only ever declared lost later than it could be, never earlier.
        last.end = end;
        last.sentAt = now;
      } else e.push({ start, end, sentAt: now, rtx });
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
    if (hasLeft) e[i]!.end = start;
    const k = hasLeft ? i + 1 : i;
    const want = hasRight ? 2 : 1;
    const spare = j - k;
    if (spare > want) e.splice(k + want, spare - want);
    else if (spare === want - 1) e.splice(k + spare, 0, { start: 0, end: 0, sentAt: 0, rtx: false });
    else if (spare === want - 2)
      e.splice(
        k,
        0,
        { start: 0, end: 0, sentAt: 0, rtx: false },
        { start: 0, end: 0, sentAt: 0, rtx: false },
      );
    const r = e[k]!;
    r.start = start;
    r.end = end;
    r.sentAt = now;
    r.rtx = rtx;
    if (hasRight) {
      const t = e[k + 1]!;
      t.start = end;
      t.end = rightEnd;
      t.sentAt = rightSentAt;
      t.rtx = rightRtx;
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

  /** A retransmission timeout fired: what goes out from now on is the timeout's copy. */
  noteTimeout(now: number): void {
    this.timeoutAt = now;
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

  private take(r: RackEntry, now: number): void {
    // RFC 8985 6.2 step 2: a retransmitted range ACKed sooner than min RTT after it went out was
    // delivered by its original copy, whose send time we no longer know.
    if (r.rtx && now - r.sentAt < this.minRtt) return;
    if (r.sentAt > this.xmitTs) {
      this.xmitTs = r.sentAt;
      this.delivered = true;
    }
    const rtt = now - r.sentAt;
    if (rtt >= 0 && rtt < this.minRtt && !r.rtx) this.minRtt = rtt;
  }

  /** Merge the two oldest-sent neighbours at the head: keeps the log bounded, loses precision only. */
  private squeeze(): void {
    const e = this.entries;
    const a = e[0]!;
    const b = e[1]!;
    a.end = b.end;
    a.sentAt = Math.max(a.sentAt, b.sentAt);
    a.rtx = a.rtx || b.rtx;
    e.splice(1, 1);
  }

  /**
   * Account an ACK: entries below snd.una or inside SACKed ranges are delivered (and dropped from
   * the log), moving RACK.xmit_ts. Then mark lost what was sent a reordering window before the
   * newest delivered segment. Returns the highest lost sequence number's end, or -1 if none; the
   * lowest lost start goes to `lowest.seq`.
   */
  onAck(s: TcpState, now: number, lowest: { seq: number }): number {
    const e = this.entries;
    const una = s.delegated.sndUna;
    this.delivered = false;
    let head = 0;
    while (head < e.length && seqLeq(e[head]!.end, una)) this.take(e[head++]!, now);
    if (head > 0) e.splice(0, head);
    if (e.length > 0 && seqLt(e[0]!.start, una)) {
      // Part of a super-segment arrived: that part was sent when the whole was.
      this.take(e[0]!, now);
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
          this.take(r, now);
          if (seqLeq(sr.start, r.start) && seqLeq(r.end, sr.end)) continue;
        }
        e[w++] = r;
      }
      e.length = w;
    }
    if (!this.delivered || this.xmitTs < 0) return -1;
    const minRtt = Number.isFinite(this.minRtt) ? this.minRtt : s.delegated.srtt;
    // RFC 8985 6.2 step 4: a quarter of the minimum RTT, never more than the smoothed RTT.
    const reoWnd = Math.min(minRtt / 4, s.delegated.srtt);
    let lostEnd = -1;
    for (const r of e) {
      if (r.sentAt + reoWnd <= this.xmitTs && r.sentAt < this.xmitTs) {
        if (lostEnd === -1) lowest.seq = r.start;
        lostEnd = r.end;
      } else if (!r.rtx && r.sentAt > this.xmitTs) {
        // First-time transmissions are logged in time order: nothing later can be older.
        break;
      }
    }
    return lostEnd;
  }
}
