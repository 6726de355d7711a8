/**
 * The impairment engine: one direction of a wire that loses, duplicates, reorders, delays and
 * rate-limits frames on the injected clock with the injected random source, and the pair of them
 * that makes a wire. A MemorySwitch port and `impairLink` are both an ImpairedWire with their own
 * delivery at each end, as smoltcp's FaultInjector wraps any device.
 */
import type { Clock, Timer } from '../core/clock.ts';
import type { Counters } from '../core/counters.ts';
import type { Random } from '../core/random.ts';
import { writeU16 } from '../wire/addr.ts';
import { foldChecksum, onesSum } from '../wire/checksum.ts';
import { EtherType } from '../wire/ethernet.ts';
import { ethL3Offset, ethType } from '../wire/fields.ts';
import type { FramePool, PoolBuf } from './frame-pool.ts';
import { GsoSegmenter } from './gso-segment.ts';
import { type ImpairmentSpec, ResolvedImpairment, splitImpairment } from './impairment.ts';

/**
 * Bytes one direction may hold in flight before it drops (default 64 MiB). Not an impairment: it
 * only keeps a sender that never yields from exhausting memory.
 */
export const DEFAULT_LANE_LIMIT_BYTES = 64 * 1024 * 1024;

/** The counters a lane increments (several lanes may share a name and a Counters). */
export interface LaneCounterNames {
  loss: string;
  /** An ECN-capable packet was marked CE (Impairment.ceMark). */
  marked: string;
  dup: string;
  reordered: string;
  /** A rate-limited queue or the lane's byte limit overflowed. */
  queue: string;
}

/** Hands a frame on at the far end of a lane; takes over the reference to `b`. */
export type LaneDeliver = (b: PoolBuf, now: number) => void;

export interface WireOptions {
  clock: Clock;
  random: Random;
  pool: FramePool;
  counters: Counters;
  /** Default DEFAULT_LANE_LIMIT_BYTES per direction. */
  limitBytes?: number;
  names: { tx: LaneCounterNames; rx: LaneCounterNames };
  deliver: { tx: LaneDeliver; rx: LaneDeliver };
}

/** FIFO of (frame, due time) in parallel arrays that grow by doubling and are then reused. */
class FrameRing {
  private bufs: (PoolBuf | undefined)[] = new Array(16).fill(undefined);
  private ats = new Float64Array(16);
  private head = 0;
  private mask = 15;
  size = 0;

  get headAt(): number {
    return this.size === 0 ? Number.POSITIVE_INFINITY : this.ats[this.head]!;
  }

  push(b: PoolBuf, at: number): void {
    if (this.size > this.mask) this.grow();
    const i = (this.head + this.size) & this.mask;
    this.bufs[i] = b;
    this.ats[i] = at;
    this.size++;
  }

  /** Insert keeping due times sorted; equal times stay in arrival order. */
  insertSorted(b: PoolBuf, at: number): void {
    if (this.size > this.mask) this.grow();
    const m = this.mask;
    let i = this.size;
    // Held frames are few, so shifting from the tail is cheaper than a heap.
    while (i > 0) {
      const p = (this.head + i - 1) & m;
      if (this.ats[p]! <= at) break;
      const q = (this.head + i) & m;
      this.bufs[q] = this.bufs[p];
      this.ats[q] = this.ats[p]!;
      i--;
    }
    const q = (this.head + i) & m;
    this.bufs[q] = b;
    this.ats[q] = at;
    this.size++;
  }

  shift(): PoolBuf {
    const b = this.bufs[this.head]!;
    this.bufs[this.head] = undefined;
    this.head = (this.head + 1) & this.mask;
    this.size--;
    return b;
  }

  private grow(): void {
    const n = (this.mask + 1) * 2;
    const bufs: (PoolBuf | undefined)[] = new Array(n).fill(undefined);
    const ats = new Float64Array(n);
    for (let k = 0; k < this.size; k++) {
      const i = (this.head + k) & this.mask;
      bufs[k] = this.bufs[i];
      ats[k] = this.ats[i]!;
    }
    this.bufs = bufs;
    this.ats = ats;
    this.head = 0;
    this.mask = n - 1;
  }
}

function growFlags(a: Uint8Array<ArrayBuffer>, i: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(Math.max(a.length * 2, i + 1));
  b.set(a);
  return b;
}

/**
 * One direction of a wire. Frames wait in `main` (due times non-decreasing, so FIFO) or, when
 * picked for reordering, in `held` (sorted); each is handed to `deliver` when due, never inside
 * `enqueue`. Random draws per frame, in this order: loss, CE mark (ECT packets only), jitter, duplicate, then per copy
 * reorder and its hold time; the order is part of what a seed replays. With per-segment loss a
 * super-segment draws loss once per segment first, then the rest for each frame that goes on.
 */
export class ImpairedLane {
  /** Null for a perfect wire. */
  imp: ResolvedImpairment | null = null;
  private readonly main = new FrameRing();
  private readonly held = new FrameRing();
  private readonly timer: Timer;
  private deferred = false;
  /** Latest due time given to `main`; keeps jitter from reordering. */
  private lastAt = Number.NEGATIVE_INFINITY;
  /** When the serializer of a rate-limited wire is free again. */
  private txEnd = 0;
  private queuedBytes = 0;
  private readonly clock: Clock;
  private readonly random: Random;
  private readonly pool: FramePool;
  private readonly counters: Counters;
  private readonly limitBytes: number;
  /** Per-segment loss (Impairment.lossPerSegment): made on first need, with its scratch state. */
  private segmenter: GsoSegmenter | null = null;
  private segDrops = new Uint8Array(64);
  private segIndex = 0;
  private segLost = 0;
  private segAt = 0;
  private segNow = 0;

  constructor(
    o: WireOptions,
    private readonly names: LaneCounterNames,
    private readonly deliver: LaneDeliver,
  ) {
    this.clock = o.clock;
    this.random = o.random;
    this.pool = o.pool;
    this.counters = o.counters;
    this.limitBytes = o.limitBytes ?? DEFAULT_LANE_LIMIT_BYTES;
    this.timer = o.clock.createTimer(this.flush);
  }

  /** Frames waiting. */
  get size(): number {
    return this.main.size + this.held.size;
  }

  /**
   * Nothing impairs this lane and nothing waits in it: the owner may hand a frame straight on
   * (without a copy, inside its own call) and nobody can tell.
   */
  get idle(): boolean {
    return this.imp === null && this.main.size === 0 && this.held.size === 0;
  }

  /** Takes over one reference of `b`. Returns false only when the frame overflowed a queue. */
  enqueue(b: PoolBuf, now: number): boolean {
    const len = b.len;
    if (this.queuedBytes + len > this.limitBytes) {
      this.counters.inc(this.names.queue);
      this.pool.release(b);
      return false;
    }
    const imp = this.imp;
    let at = now;
    if (imp === null) {
      // Frames still in flight from an earlier impairment go first.
      if (at < this.lastAt) at = this.lastAt;
      this.lastAt = at;
      this.main.push(b, at);
      this.queuedBytes += len;
      this.kick(at, now);
      return true;
    }
    if (imp.bytesPerMs > 0) {
      const start = Math.max(this.txEnd, now);
      const backlog = (start - now) * imp.bytesPerMs;
      // An idle serializer always takes a frame, so a queue smaller than one frame still passes traffic.
      if (backlog > 1e-6 && backlog + len > imp.queueBytes + 1e-6) {
        this.counters.inc(this.names.queue);
        this.pool.release(b);
        return false;
      }
      this.txEnd = start + len / imp.bytesPerMs;
      at = this.txEnd;
    }
    if (imp.loss > 0) {
      if (imp.lossPerSegment && b.gsoSize > 0) return this.loseSegments(b, at, now, imp);
      if (this.random.float() < imp.loss) {
        this.counters.inc(this.names.loss);
        this.pool.release(b);
        return true;
      }
    }
    this.place(b, at, now, imp);
    return true;
  }

  /**
   * Per-segment loss of a super-segment: one draw per `gsoSize` segment, in order. If none is
   * lost the frame goes on whole (what a receiver's GRO would rebuild); otherwise the survivors
   * go on one by one as plain frames. A frame that cannot be cut gets one draw, as a frame.
   */
  private loseSegments(b: PoolBuf, at: number, now: number, imp: ResolvedImpairment): boolean {
    this.segmenter ??= new GsoSegmenter();
    this.segLost = 0;
    this.segIndex = 0;
    const n = this.segmenter.segment(b.view(), b.gsoSize, this.drawSegment);
    if (n < 0) {
      if (this.random.float() < imp.loss) {
        this.counters.inc(this.names.loss);
        this.pool.release(b);
        return true;
      }
    } else if (this.segLost > 0) {
      this.counters.inc(this.names.loss, this.segLost);
      this.segIndex = 0;
      this.segAt = at;
      this.segNow = now;
      this.segmenter.segment(b.view(), b.gsoSize, this.placeSegment);
      this.pool.release(b);
      return true;
    }
    this.place(b, at, now, imp);
    return true;
  }

  private readonly drawSegment = (): void => {
    const i = this.segIndex++;
    if (this.random.float() < this.imp!.loss) {
      if (i >= this.segDrops.length) this.segDrops = growFlags(this.segDrops, i);
      this.segDrops[i] = 1;
      this.segLost++;
    } else if (i < this.segDrops.length) this.segDrops[i] = 0;
  };

  private readonly placeSegment = (seg: Uint8Array): void => {
    const i = this.segIndex++;
    if (i < this.segDrops.length && this.segDrops[i] === 1) return;
    // The segmenter reuses its buffer, and a survivor is a plain frame now (gsoSize 0).
    this.place(this.pool.take(seg), this.segAt, this.segNow, this.imp!);
  };

  /** After loss: CE marks, latency, jitter, duplication and reordering, then into a ring. */
  private place(b: PoolBuf, at: number, now: number, imp: ResolvedImpairment): void {
    const len = b.len;
    const rnd = this.random;
    if (imp.ceMark > 0) b = this.maybeMark(b, imp.ceMark);
    at += imp.delayMs;
    if (imp.jitterMs > 0) at += rnd.float() * imp.jitterMs;
    if (at < this.lastAt) at = this.lastAt;
    this.lastAt = at;
    let copies = 1;
    if (imp.duplicate > 0 && rnd.float() < imp.duplicate) {
      // Both copies share the buffer: receivers treat frames as read-only.
      this.pool.retain(b);
      this.counters.inc(this.names.dup);
      copies = 2;
    }
    let first = Number.POSITIVE_INFINITY;
    for (let k = 0; k < copies; k++) {
      let due = at;
      if (imp.reorder > 0 && rnd.float() < imp.reorder) {
        // Held for half to all of reorderDelayMs, so held frames also overtake one another.
        due = at + imp.reorderDelayMs * (0.5 + 0.5 * rnd.float());
        this.held.insertSorted(b, due);
        this.counters.inc(this.names.reordered);
      } else {
        this.main.push(b, due);
      }
      if (due < first) first = due;
    }
    this.queuedBytes += len * copies;
    this.kick(first, now);
  }

  /**
   * An ECT packet marked CE with probability `p` (the IPv4 header checksum made good); the frame
   * to go on: a copy when others still hold `b`, since marks are per copy.
   */
  private maybeMark(b: PoolBuf, p: number): PoolBuf {
    const f = b.view();
    const at = ecnFieldAt(f);
    if (at < 0) return b;
    const v6 = at & 1;
    const i = at >>> 1;
    const ecn = v6 ? (f[i + 1]! >>> 4) & 3 : f[i + 1]! & 3;
    if (ecn === 0 || ecn === 3 || this.random.float() >= p) return b;
    if (b.refs > 1) {
      const c = this.pool.take(f);
      c.gsoSize = b.gsoSize;
      this.pool.release(b);
      b = c;
    }
    const g = b.view();
    if (v6) g[i + 1]! |= 0x30;
    else {
      g[i + 1]! |= 3;
      const hl = (g[i]! & 0x0f) * 4;
      writeU16(g, i + 10, 0);
      writeU16(g, i + 10, foldChecksum(onesSum(g, i, hl)));
    }
    this.counters.inc(this.names.marked);
    return b;
  }

  /** Drops everything in flight (cable pulled, link closed); returns how many frames. */
  dropAll(): number {
    const pool = this.pool;
    let n = 0;
    while (this.main.size) {
      pool.release(this.main.shift());
      n++;
    }
    while (this.held.size) {
      pool.release(this.held.shift());
      n++;
    }
    this.queuedBytes = 0;
    this.timer.disarm();
    return n;
  }

  private kick(at: number, now: number): void {
    if (this.deferred) return;
    if (at <= now) {
      this.deferred = true;
      this.clock.defer(this.flush);
    } else if (!this.timer.armed || at < this.timer.deadline) {
      this.timer.armAt(at);
    }
  }

  private readonly flush = (): void => {
    this.deferred = false;
    const now = this.clock.now();
    // Frames queued by handlers during this run wait for the next one: no livelock, no starvation.
    // A handler that drops everything (closes the link) empties both rings and ends the loop.
    let budget = this.main.size + this.held.size;
    try {
      while (budget-- > 0) {
        const ma = this.main.headAt;
        const ha = this.held.headAt;
        let b: PoolBuf;
        if (ma <= ha) {
          if (ma > now) break;
          b = this.main.shift();
        } else {
          if (ha > now) break;
          b = this.held.shift();
        }
        this.queuedBytes -= b.len;
        this.deliver(b, now);
      }
    } finally {
      const next = Math.min(this.main.headAt, this.held.headAt);
      if (next === Number.POSITIVE_INFINITY) this.timer.disarm();
      else if (next <= now) {
        this.timer.disarm();
        if (!this.deferred) {
          this.deferred = true;
          this.clock.defer(this.flush);
        }
      } else this.timer.armAt(next);
    }
  };
}

/**
 * Both directions of one wire, named from the side of the host that owns it (tx out, rx in), with
 * one impairment spec split between them.
 */
export class ImpairedWire {
  readonly tx: ImpairedLane;
  readonly rx: ImpairedLane;

  constructor(o: WireOptions) {
    this.tx = new ImpairedLane(o, o.names.tx, o.deliver.tx);
    this.rx = new ImpairedLane(o, o.names.rx, o.deliver.rx);
  }

  /**
   * Replace the impairments; frames already in flight keep their fate. Throws
   * InvalidArgumentError for a bad spec and then changes nothing.
   */
  impair(spec: ImpairmentSpec): void {
    const s = splitImpairment(spec);
    this.tx.imp = ResolvedImpairment.of(s.tx);
    this.rx.imp = ResolvedImpairment.of(s.rx);
  }

  /** Frames waiting in either direction. */
  get size(): number {
    return this.tx.size + this.rx.size;
  }

  /** Drops everything in flight both ways; returns how many frames. */
  dropAll(): number {
    return this.tx.dropAll() + this.rx.dropAll();
  }
}

/**
 * Where the IP header of an Ethernet frame starts, doubled, plus 1 for IPv6 (the ECN field is the
 * low bits of the IPv4 TOS byte at +1, or bits 4-5 of the IPv6 byte at +1); -1 for anything else.
 */
function ecnFieldAt(f: Uint8Array): number {
  if (f.length < 18) return -1;
  const ip = ethL3Offset(f);
  const type = ethType(f);
  if (type === EtherType.IPV4 && f.length >= ip + 20 && f[ip]! >>> 4 === 4) return ip * 2;
  if (type === EtherType.IPV6 && f.length >= ip + 40 && f[ip]! >>> 4 === 6) return ip * 2 + 1;
  return -1;
}
