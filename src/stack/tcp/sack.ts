import type { SeqRange, TcpState } from '../../state/tcp-state.ts';
import { seqGt, seqLeq, seqLt } from './seq.ts';

/**
 * SACK bookkeeping on both sides of a connection (RFC 2018, RFC 6675).
 *
 * Sender: `soft.sacked` is the scoreboard, sorted by sequence number from snd.una, merged (no two
 * ranges overlap or touch) and confined to [snd.una, snd.max). Receiver: `soft.recvSackRecent`
 * lists the out-of-order ranges we hold, most recently changed first, as RFC 2018 §4 asks.
 *
 * `soft.highRxt` is used as an exclusive edge: every byte below it has been retransmitted in the
 * current recovery (RFC 6675's HighRxt is the last such byte, i.e. highRxt - 1). The engine sets it
 * to snd.una when recovery starts and to seq + len after each retransmission.
 *
 * Everything is modulo 2^32: ranges are compared by their distance from snd.una (or rcv.nxt), which
 * stays below 2^31 for any valid window.
 */

/**
 * Ranges the scoreboard keeps. A receiver that SACKs every other byte would otherwise make each
 * ACK cost time linear in an ever longer list (the CVE-2019-11477/11478 class); past the bound new
 * islands are ignored, which RFC 2018 allows (SACK information is advisory).
 */
export const SACK_MAX_RANGES = 512;
/**
 * The cap in force, process-wide. Only the attacks benchmark turns it off (Infinity), to show what
 * the cap saves against the same attack in the same run; everything else leaves it on.
 */
export const sackLimits = { maxRanges: SACK_MAX_RANGES };
/**
 * Steps the sender's scoreboard has taken, process-wide: one per block, per range visited and per
 * entry shifted. A test bounds it per block under a flood of islands to show the cap keeps the
 * work linear in the blocks received.
 */
export const sackWork = { steps: 0 };
/** RFC 6675 DupThresh, and Linux's initial tp->reordering (sysctl tcp_reordering). */
export const DUP_THRESH = 3;
/** RFC 2018 allows at most 4 blocks on the wire; remembering a few more lets older ones rotate in. */
const RECV_SACK_MAX = 8;
const POOL_MAX = 256;

/**
 * Range objects dropped from any scoreboard are recycled here, so the per-ACK path allocates only
 * when the number of live ranges grows.
 */
const pool: SeqRange[] = [];

function take(start: number, end: number): SeqRange {
  const r = pool.pop();
  if (r) {
    r.start = start;
    r.end = end;
    return r;
  }
  return { start, end };
}

function give(r: SeqRange): void {
  if (pool.length < POOL_MAX) pool.push(r);
}

/** Distance of `seq` above `base`, as an unsigned number. */
function off(seq: number, base: number): number {
  return (seq - base) >>> 0;
}

/** Remove `n` entries of `a` starting at `i`, in place (Array.splice would allocate its result). */
function removeAt(a: SeqRange[], i: number, n: number): void {
  if (n <= 0) return;
  const len = a.length;
  for (let j = i + n; j < len; j++) a[j - n] = a[j]!;
  a.length = len - n;
  sackWork.steps += len - i;
}

function insertAt(a: SeqRange[], i: number, r: SeqRange): void {
  let j = a.length;
  a.length = j + 1;
  sackWork.steps += j - i + 1;
  for (; j > i; j--) a[j] = a[j - 1]!;
  a[i] = r;
}

// ---------------------------------------------------------------------------------------------
// Sender side

export function sackPrune(s: TcpState): void {
  const sacked = s.soft.sacked;
  const una = s.delegated.sndUna;
  let drop = 0;
  while (drop < sacked.length && seqLeq(sacked[drop]!.end, una)) give(sacked[drop++]!);
  removeAt(sacked, 0, drop);
  const first = sacked[0];
  if (first && seqLt(first.start, una)) first.start = una;
}

export function sackUpdate(s: TcpState, blocks: Uint32Array, count: number): number {
  sackPrune(s);
  const d = s.delegated;
  const una = d.sndUna;
  const win = off(d.sndMax, una);
  const sacked = s.soft.sacked;
  const n = Math.min(count, blocks.length >>> 1);
  let added = 0;
  for (let b = 0; b < n; b++) {
    sackWork.steps++;
    let left = blocks[2 * b]! >>> 0;
    const right = blocks[2 * b + 1]! >>> 0;
    // Empty or reversed blocks, D-SACKs of data already ACKed (RFC 2883), and anything past what we
    // ever sent carry no news for the scoreboard; a peer that lies about the last is ignored.
    if (!seqLt(left, right) || seqLeq(right, una) || seqGt(right, d.sndMax)) continue;
    if (seqLt(left, una)) left = una;
    const lo = off(left, una);
    const hi = off(right, una);
    if (hi > win) continue;

    // First range that overlaps or touches [lo, hi): ranges are sorted, so scan from the bottom.
    let i = 0;
    while (i < sacked.length && off(sacked[i]!.end, una) < lo) i++;
    let j = i;
    let covered = 0;
    let newLo = lo;
    let newHi = hi;
    sackWork.steps += i;
    while (j < sacked.length) {
      sackWork.steps++;
      const r = sacked[j]!;
      const rs = off(r.start, una);
      if (rs > hi) break;
      const re = off(r.end, una);
      const ol = Math.max(rs, lo);
      const oh = Math.min(re, hi);
      if (oh > ol) covered += oh - ol;
      if (rs < newLo) newLo = rs;
      if (re > newHi) newHi = re;
      j++;
    }
    if (j === i) {
      if (sacked.length >= sackLimits.maxRanges) continue;
      added += hi - lo - covered;
      insertAt(sacked, i, take(left, right));
    } else {
      added += hi - lo - covered;
      const r = sacked[i]!;
      r.start = (una + newLo) >>> 0;
      r.end = (una + newHi) >>> 0;
      for (let k = i + 1; k < j; k++) give(sacked[k]!);
      removeAt(sacked, i + 1, j - i - 1);
    }
  }
  return added;
}

/** Bytes above snd.una the scoreboard holds as SACKed. */
export function sackedBytes(s: TcpState): number {
  sackPrune(s);
  let n = 0;
  for (const r of s.soft.sacked) n += (r.end - r.start) >>> 0;
  return n;
}

/**
 * SACKed segments, as Linux's sacked_out counts them (tcp_skb_pcount of each SACKed skb): a range
 * counts one per MSS begun, for it is made of whole segments, the last possibly short; a range
 * shorter than an MSS counts only if it ends at snd.max (a short last segment). Linux tags SACKs by
 * whole segments only (tcp_match_skb_to_sack), so a receiver SACKing single bytes inside segments
 * (bench/attacks.ts) SACKed no segment there.
 */
export function sackedPackets(s: TcpState, mss: number): number {
  sackPrune(s);
  let n = 0;
  const max = s.delegated.sndMax;
  for (const r of s.soft.sacked) {
    const len = (r.end - r.start) >>> 0;
    if (len >= mss) n += Math.ceil(len / mss);
    else if (r.end === max) n++;
  }
  return n;
}

/** SACKed bytes in [lo, hi), both at or above snd.una. */
export function sackedIn(s: TcpState, lo: number, hi: number): number {
  sackPrune(s);
  let n = 0;
  for (const r of s.soft.sacked) {
    if (seqLeq(r.end, lo)) continue;
    if (seqLeq(hi, r.start)) break;
    const a = seqLt(r.start, lo) ? lo : r.start;
    const b = seqLt(hi, r.end) ? hi : r.end;
    n += (b - a) >>> 0;
  }
  return n;
}

export function sackHighest(s: TcpState): number {
  sackPrune(s);
  const sacked = s.soft.sacked;
  return sacked.length ? sacked[sacked.length - 1]!.end : s.delegated.sndUna;
}

export function sackIsSacked(s: TcpState, seq: number, len: number): boolean {
  if (len <= 0) return false;
  sackPrune(s);
  const una = s.delegated.sndUna;
  const lo = off(seq >>> 0, una);
  const hi = lo + len;
  // Bytes below snd.una are ACKed, not SACKed; the scoreboard has nothing to say about them.
  if (seqLt(seq >>> 0, una)) return false;
  for (const r of s.soft.sacked) {
    const rs = off(r.start, una);
    if (rs > lo) return false;
    if (off(r.end, una) >= hi) return true;
  }
  return false;
}

/** SACKed bytes and SACKed ranges strictly above `seq` (RFC 6675 IsLost's two measures). */
function countAbove(s: TcpState, seq: number): { bytes: number; ranges: number } {
  const una = s.delegated.sndUna;
  const base = seqLt(seq, una) ? 0 : off(seq, una) + 1;
  let bytes = 0;
  let ranges = 0;
  const sacked = s.soft.sacked;
  for (let i = sacked.length - 1; i >= 0; i--) {
    const r = sacked[i]!;
    const re = off(r.end, una);
    if (re <= base) break;
    const rs = off(r.start, una);
    bytes += re - Math.max(rs, base);
    ranges++;
  }
  above.bytes = bytes;
  above.ranges = ranges;
  return above;
}
const above = { bytes: 0, ranges: 0 };

function lostBy(bytes: number, ranges: number, mss: number): boolean {
  return ranges >= DUP_THRESH || bytes > (DUP_THRESH - 1) * mss;
}

/** Offset of the RACK lost edge above snd.una (0 when it is not above). */
function rackEdgeOffset(s: TcpState): number {
  const d = s.delegated;
  const e = s.soft.rackLostEdge >>> 0;
  if (!s.soft.inRecovery || !seqGt(e, d.sndUna)) return 0;
  return Math.min(off(e, d.sndUna), off(d.sndMax, d.sndUna));
}

export function sackIsLost(s: TcpState, seq: number, mss: number): boolean {
  sackPrune(s);
  if (s.soft.inRecovery && seqLt(seq >>> 0, s.soft.rackLostEdge) && !seqLt(seq >>> 0, s.delegated.sndUna)) {
    return true;
  }
  const a = countAbove(s, seq >>> 0);
  return lostBy(a.bytes, a.ranges, mss);
}

/**
 * Walk the holes (un-SACKed stretches) of [snd.una, snd.max) from the top down. Within one hole
 * every byte has the same SACKed data above it, so IsLost has one answer per hole; going downward
 * the counts only grow. The callback returns true to stop.
 */
function forEachHoleDown(
  s: TcpState,
  mss: number,
  fn: (lo: number, hi: number, lost: boolean) => boolean,
): void {
  const d = s.delegated;
  const una = d.sndUna;
  const sacked = s.soft.sacked;
  let hi = off(d.sndMax, una);
  let bytes = 0;
  let ranges = 0;
  const rack = rackEdgeOffset(s);
  for (let i = sacked.length - 1; i >= -1; i--) {
    const r = i >= 0 ? sacked[i]! : null;
    const lo = r ? off(r.end, una) : 0;
    if (hi > lo) {
      const lost = lostBy(bytes, ranges, mss);
      // A hole the RACK edge cuts is two: lost below the edge, as the RFC 6675 counts say above.
      if (lo < rack && hi > rack && !lost) {
        if (fn(rack, hi, false) || fn(lo, rack, true)) return;
      } else if (fn(lo, hi, lost || lo < rack)) return;
    }
    if (!r) return;
    const rs = off(r.start, una);
    bytes += off(r.end, una) - rs;
    ranges++;
    hi = rs;
  }
}

/** Offset of soft.highRxt above snd.una, clamped to [0, snd.max - snd.una]. */
function highRxtOffset(s: TcpState): number {
  const d = s.delegated;
  const h = s.soft.highRxt >>> 0;
  if (seqLeq(h, d.sndUna)) return 0;
  const win = off(d.sndMax, d.sndUna);
  const o = off(h, d.sndUna);
  return Math.min(o, win);
}

let pipeAcc = 0;
let pipeRxt = 0;
function pipeHole(lo: number, hi: number, lost: boolean): boolean {
  // RFC 6675 SetPipe, octet by octet: an octet not yet deemed lost is in flight once, and an octet
  // already retransmitted in this recovery has its retransmission in flight as well.
  if (!lost) pipeAcc += hi - lo;
  if (pipeRxt > lo) pipeAcc += Math.min(pipeRxt, hi) - lo;
  return false;
}

export function sackPipe(s: TcpState, mss: number): number {
  sackPrune(s);
  pipeAcc = 0;
  pipeRxt = highRxtOffset(s);
  forEachHoleDown(s, mss, pipeHole);
  return pipeAcc;
}

let nextLo = -1;
let nextHi = 0;
let nextFloor = 0;
function nextHole(lo: number, hi: number): boolean {
  // Walking down, remember the lowest hole that still has bytes at or above the floor.
  if (hi <= nextFloor) return true;
  nextLo = Math.max(lo, nextFloor);
  nextHi = hi;
  return false;
}

/**
 * RFC 6675 NextSeg rules 1 and 3: the lowest un-SACKed data at or above highRxt and below the
 * highest SACKed byte. Because IsLost only weakens going up, that is the rule 1 segment whenever one
 * exists; otherwise it is rule 3's. A caller that must try new data (rule 2) before rule 3 tells the
 * two apart with sackIsLost(s, out.seq, mss).
 */
export function sackNextSeg(
  s: TcpState,
  mss: number,
  out: { seq: number; len: number },
  maxLen = mss,
): boolean {
  sackPrune(s);
  const sacked = s.soft.sacked;
  const rack = rackEdgeOffset(s);
  if ((!sacked.length && rack === 0) || mss <= 0) return false;
  const una = s.delegated.sndUna;
  const top = Math.max(sacked.length ? off(sacked[sacked.length - 1]!.end, una) : 0, rack);
  nextLo = -1;
  nextFloor = highRxtOffset(s);
  forEachHoleDown(s, mss, nextHole);
  // Rules 1 and 3 both need the hole to lie below the highest SACKed byte; the tail hole above it is
  // new or not-yet-suspect data, which is rule 2's (the caller's) business.
  if (nextLo < 0 || nextLo >= top) return false;
  const hi = Math.min(nextHi, top);
  out.seq = (una + nextLo) >>> 0;
  out.len = Math.min(hi - nextLo, Math.max(maxLen, mss));
  return true;
}

// ---------------------------------------------------------------------------------------------
// Receiver side

export function recvSackAdd(s: TcpState, start: number, end: number): void {
  start >>>= 0;
  end >>>= 0;
  if (!seqLt(start, end)) return;
  const list = s.soft.recvSackRecent;
  let lo = start;
  let hi = end;
  let i = 0;
  let reuse: SeqRange | null = null;
  while (i < list.length) {
    const r = list[i]!;
    // Overlapping or touching ranges are one block on the wire.
    if (seqLeq(r.start, hi) && seqLeq(lo, r.end)) {
      if (seqLt(r.start, lo)) lo = r.start;
      if (seqGt(r.end, hi)) hi = r.end;
      removeAt(list, i, 1);
      if (reuse) give(r);
      else reuse = r;
    } else {
      i++;
    }
  }
  const merged = reuse ?? take(lo, hi);
  merged.start = lo;
  merged.end = hi;
  insertAt(list, 0, merged);
  while (list.length > RECV_SACK_MAX) give(list.pop()!);
}

export function recvSackPrune(s: TcpState): void {
  const list = s.soft.recvSackRecent;
  const nxt = s.delegated.rcvNxt;
  let i = 0;
  while (i < list.length) {
    const r = list[i]!;
    if (seqLeq(r.end, nxt)) {
      removeAt(list, i, 1);
      give(r);
    } else {
      if (seqLt(r.start, nxt)) r.start = nxt;
      i++;
    }
  }
}

/** Writes up to `max` blocks into `out` from block `at` on; returns how many. */
export function recvSackBlocks(s: TcpState, out: Uint32Array, max: number, at = 0): number {
  recvSackPrune(s);
  const list = s.soft.recvSackRecent;
  let n = Math.min(list.length, max, (out.length >>> 1) - at);
  if (n < 0) n = 0;
  for (let i = 0; i < n; i++) {
    out[2 * (at + i)] = list[i]!.start;
    out[2 * (at + i) + 1] = list[i]!.end;
  }
  return n;
}
