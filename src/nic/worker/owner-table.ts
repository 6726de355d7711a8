/*
 * Which connections a worker runs, in shared memory, so that another worker of the same team can
 * tell, per frame and without asking the main thread, that a segment it received belongs there.
 *
 * With one MAC on several ports the switch delivers to whichever member sent last, so a segment of
 * a connection run by worker A often arrives at worker B. B looks the four-tuple up in every other
 * member's table and hands the frame straight to the worker that claims it (issue 10 item 6).
 *
 * One writer: the worker that owns the table, which adds a connection when it installs it and
 * removes it when it frees it (terminate, close). Readers are the other workers. An answer is a
 * hint, never the authority: the receiving worker runs the frame only if its own TCP layer holds
 * the four-tuple and otherwise passes it up to the host, as before. So a reader that races a write
 * (a half-written key, a compaction) may answer wrongly at the cost of one detour through the host,
 * and nothing is lost. A reader that sees the table being rebuilt, or any doubt, answers "no".
 *
 * Layout, Int32 words: [version, dead, live, used], then entries of [state, localIp, remoteIp,
 * localPort << 16 | remotePort]. `version` is odd while the writer compacts; `dead` is set by the
 * host when the worker is gone (its table then says nothing). Open addressing with linear probing;
 * a removed entry leaves a tombstone unless the probe chain ends right after it.
 *
 * Both families. An IPv6 connection is listed by its addresses' handles, which are the same
 * number in every worker (each worker's table mirrors the host's), as their slot (handle - 2^32,
 * so it fits a word), with the family in the state word: an IPv6 slot never matches the IPv4
 * address with the same 32 bits. A reader names an IPv6 address by the handle its own mirror holds
 * for the bytes; a worker that holds none for them (no connection of its own with that address)
 * cannot name it, and the segment takes the host path as before.
 */

import { TWO_32 } from '../../stack/address-table.ts';

const V = 0;
const DEAD = 1;
const LIVE = 2;
const USED = 3;
const HEADER = 4;
const ENTRY = 4;

const S_EMPTY = 0;
/** Live, IPv4 addresses. */
const S_LIVE = 1;
const S_GONE = 2;
/** Live, IPv6 handles (as slots). */
const S_LIVE6 = 3;

/** The live state for a four-tuple's family, or -1 for a mixture no connection has. */
function liveState(localIp: number, remoteIp: number): number {
  const v6 = remoteIp >= TWO_32;
  if (v6 !== localIp >= TWO_32) return -1;
  return v6 ? S_LIVE6 : S_LIVE;
}

/** The word an address is kept in: an IPv4 address as i32, an IPv6 handle as its slot. */
function word(ip: number): number {
  return (ip >= TWO_32 ? ip - TWO_32 : ip) | 0;
}

function isLive(s: number): boolean {
  return s === S_LIVE || s === S_LIVE6;
}

/** A reader's answers (OwnerTable.look): unsure when the writer disturbed the read. */
const NO = 0;
const YES = 1;
const UNSURE = 2;

/** Longest probe a reader makes before answering "no" (the writer keeps chains far shorter). */
const MAX_PROBE = 256;

function entriesFor(capacity: number): number {
  const want = Math.max(64, Math.min(capacity, 1 << 18) * 2);
  let n = 64;
  while (n < want) n *= 2;
  return n;
}

function hash(localIp: number, remoteIp: number, ports: number): number {
  let h = Math.imul(localIp ^ Math.imul(remoteIp, 0x9e3779b1) ^ Math.imul(ports, 0x85ebca6b), 0xc2b2ae35);
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  return h ^ (h >>> 12);
}

export class OwnerTable {
  private readonly w: Int32Array;
  private readonly mask: number;

  /** Shared memory for a table sized for `capacity` connections (at most 2^18 are tracked). */
  static create(capacity: number): SharedArrayBuffer {
    return new SharedArrayBuffer((HEADER + entriesFor(capacity) * ENTRY) * 4);
  }

  constructor(readonly sab: SharedArrayBuffer) {
    this.w = new Int32Array(sab);
    const n = (this.w.length - HEADER) / ENTRY;
    if (!Number.isInteger(n) || n < 1 || (n & (n - 1)) !== 0) throw new RangeError('not an owner table');
    this.mask = n - 1;
  }

  /** The worker is gone: readers ignore the table from now on. */
  markDead(): void {
    Atomics.store(this.w, DEAD, 1);
  }

  get dead(): boolean {
    return Atomics.load(this.w, DEAD) !== 0;
  }

  /** Connections listed. */
  get size(): number {
    return Atomics.load(this.w, LIVE);
  }

  // ---- the writer --------------------------------------------------------------------------------

  /** List a connection (the owner only). False when the table is full: frames then take the host path. */
  add(localIp: number, localPort: number, remoteIp: number, remotePort: number): boolean {
    const live = liveState(localIp, remoteIp);
    if (live < 0) return false;
    const w = this.w;
    const li = word(localIp);
    const ri = word(remoteIp);
    const pp = (localPort << 16) | remotePort | 0;
    // One probe: listed already, or where it goes (the chain's first tombstone, else its end).
    let i = hash(li, ri, pp) & this.mask;
    let gone = -1;
    for (;;) {
      const at = HEADER + i * ENTRY;
      const s = w[at];
      if (s === S_EMPTY) break;
      if (s === live && w[at + 1] === li && w[at + 2] === ri && w[at + 3] === pp) return true;
      if (s === S_GONE && gone < 0) gone = i;
      i = (i + 1) & this.mask;
    }
    const n = this.mask + 1;
    // The counts are this writer's alone: plain read-modify-writes (no lock), published by the
    // state word's store that follows; `size` is a reader's hint anyway.
    if (gone < 0 && w[USED]! + 1 > (n * 3) >>> 2) {
      if (w[USED] === w[LIVE]) return false;
      this.compact();
      if (w[LIVE]! + 1 > (n * 3) >>> 2) return false;
      // Compacted: no tombstones, and the chain moved. Its end is the place.
      i = hash(li, ri, pp) & this.mask;
      while (w[HEADER + i * ENTRY] !== S_EMPTY) i = (i + 1) & this.mask;
    } else if (gone >= 0) i = gone;
    const at = HEADER + i * ENTRY;
    // The key in plain writes, then the state in one sequentially consistent store: a reader's
    // Atomics.load of the state that sees it live synchronizes with that store, so the key words
    // it reads after are these (JS memory model: the plain writes happen before the store, which
    // the load reads from). A reader racing a reuse of a tombstone may read a mixture of two keys,
    // as before: at worst one frame sent the wrong way (see the file's comment). The same store is
    // what the SYN race needs (mayHold): it and the other side's listing are both seq-cst, so of
    // two sides that each list and then read the other, at least one sees the other's entry.
    w[at + 1] = li;
    w[at + 2] = ri;
    w[at + 3] = pp;
    const was = w[at];
    Atomics.store(w, at, live);
    if (was === S_EMPTY) w[USED]!++;
    w[LIVE]!++;
    return true;
  }

  /** Take a connection off the list (the owner only). */
  remove(localIp: number, localPort: number, remoteIp: number, remotePort: number): void {
    const live = liveState(localIp, remoteIp);
    if (live < 0) return;
    const w = this.w;
    const i = this.find(live, word(localIp), word(remoteIp), (localPort << 16) | remotePort | 0);
    if (i < 0) return;
    w[LIVE]!--;
    const next = HEADER + ((i + 1) & this.mask) * ENTRY;
    if (w[next] !== S_EMPTY) {
      Atomics.store(w, HEADER + i * ENTRY, S_GONE);
      return;
    }
    // The chain ends here: this entry and the tombstones before it become empty again.
    let j = i;
    for (;;) {
      Atomics.store(w, HEADER + j * ENTRY, S_EMPTY);
      w[USED]!--;
      j = (j - 1) & this.mask;
      if (w[HEADER + j * ENTRY] !== S_GONE) break;
    }
  }

  /** Forget every connection (the owner only). */
  clear(): void {
    const w = this.w;
    Atomics.add(w, V, 1);
    w.fill(0, HEADER);
    Atomics.store(w, LIVE, 0);
    Atomics.store(w, USED, 0);
    Atomics.add(w, V, 1);
  }

  private find(live: number, li: number, ri: number, pp: number): number {
    const w = this.w;
    let i = hash(li, ri, pp) & this.mask;
    for (let k = 0; k <= this.mask; k++) {
      const at = HEADER + i * ENTRY;
      const s = w[at];
      if (s === S_EMPTY) return -1;
      if (s === live && w[at + 1] === li && w[at + 2] === ri && w[at + 3] === pp) return i;
      i = (i + 1) & this.mask;
    }
    return -1;
  }

  /** Rebuild without tombstones; readers meanwhile see an odd version and answer "no". */
  private compact(): void {
    const w = this.w;
    const keep: number[] = [];
    for (let i = 0; i <= this.mask; i++) {
      const at = HEADER + i * ENTRY;
      if (isLive(w[at]!)) keep.push(w[at]!, w[at + 1]!, w[at + 2]!, w[at + 3]!);
    }
    Atomics.add(w, V, 1);
    w.fill(0, HEADER);
    for (let k = 0; k < keep.length; k += 4) {
      let i = hash(keep[k + 1]!, keep[k + 2]!, keep[k + 3]!) & this.mask;
      while (w[HEADER + i * ENTRY] !== S_EMPTY) i = (i + 1) & this.mask;
      const at = HEADER + i * ENTRY;
      w[at + 1] = keep[k + 1]!;
      w[at + 2] = keep[k + 2]!;
      w[at + 3] = keep[k + 3]!;
      w[at] = keep[k]!;
    }
    Atomics.store(w, LIVE, keep.length / 4);
    Atomics.store(w, USED, keep.length / 4);
    Atomics.add(w, V, 1);
  }

  // ---- readers -----------------------------------------------------------------------------------

  /** Whether the owner lists this connection now (a hint: see the file's comment). */
  has(localIp: number, localPort: number, remoteIp: number, remotePort: number): boolean {
    return this.look(localIp, localPort, remoteIp, remotePort) === YES;
  }

  /**
   * `has` for a reader that must never miss a listed connection: one the writer disturbed (a
   * compaction under way or done meanwhile, a probe past MAX_PROBE) answers yes. The SYN race
   * between the host and a worker (NicBornHooks.claimed, WorkerNic.holds) reads this way: each
   * side lists its half-open tuple, then reads the other's, and a "no" while the tuple was listed
   * let both answer one SYN; a wrong "yes" leaves it to the peer's resend.
   */
  mayHold(localIp: number, localPort: number, remoteIp: number, remotePort: number): boolean {
    return this.look(localIp, localPort, remoteIp, remotePort) !== NO;
  }

  private look(localIp: number, localPort: number, remoteIp: number, remotePort: number): number {
    const w = this.w;
    if (Atomics.load(w, DEAD) !== 0) return NO;
    const v = Atomics.load(w, V);
    if ((v & 1) !== 0) return UNSURE;
    const live = liveState(localIp, remoteIp);
    if (live < 0) return NO;
    const li = word(localIp);
    const ri = word(remoteIp);
    const pp = (localPort << 16) | remotePort | 0;
    let i = hash(li, ri, pp) & this.mask;
    let r = UNSURE;
    for (let k = 0; k < MAX_PROBE; k++) {
      const at = HEADER + i * ENTRY;
      const s = Atomics.load(w, at);
      if (s === S_EMPTY) {
        r = NO;
        break;
      }
      if (
        s === live &&
        Atomics.load(w, at + 1) === li &&
        Atomics.load(w, at + 2) === ri &&
        Atomics.load(w, at + 3) === pp
      ) {
        r = YES;
        break;
      }
      i = (i + 1) & this.mask;
    }
    return Atomics.load(w, V) === v ? r : UNSURE;
  }
}
