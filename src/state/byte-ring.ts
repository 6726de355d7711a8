import type { Clock, Timer } from '../core/clock.ts';
import {
  checkSharedRingRef,
  copyShared,
  initSharedRingHeader,
  RING_READ,
  RING_WRITE,
  SHARED_RING_HEADER,
  type SharedRingRef,
  sharedBytes,
  sharedRingBytes,
  sharedWords,
} from './shared-ring.ts';

/**
 * Ring memory given back in this thread (a grow's old buffer, the buffer of a ring emptied at a
 * connection's end) for the next grow to take: whole powers of two from a page up, by size.
 * Fresh memory costs what copying does not: a burst of 5,000 HTTP answers on one TAP grew each
 * answer's send ring 64 KiB and then 128-256 KiB of new, zeroed, first-touched memory, 1.36 s of
 * serve's main thread in `grow` (BENCHMARKS.md, s46h1), and 1 GB of external memory whose
 * accounting drives V8's collector. Linux's send path takes its pages from per-socket page frags
 * refilled from the page allocator and its skbs from slab caches: memory a closed socket gave
 * back. The bytes a pooled buffer still holds are never read: a ring reads only what it wrote.
 */
const POOL_MIN = 4096;
const POOL_MAX = 4 << 20;
/** What the pool keeps, per thread: past it a given-back buffer goes to the collector. */
export const RING_POOL_BYTES = 32 << 20;
/**
 * One size's buffers, most recently given last (taken from the end). `idle`: the fewest it held
 * since the last trim, so the buffers at its start that no take reached in all that time.
 */
interface PoolList {
  bufs: Uint8Array[];
  idle: number;
}
const pool = new Map<number, PoolList>();

/**
 * The pool's counts since the thread began: buffers taken from it, and bytes newly allocated;
 * `pooledBytes` is what it holds now, `trimmedBytes` what trims let go of.
 */
export const ringPool = { reused: 0, freshBytes: 0, limit: RING_POOL_BYTES, pooledBytes: 0, trimmedBytes: 0 };

function pooledSize(n: number): boolean {
  return n >= POOL_MIN && n <= POOL_MAX && (n & (n - 1)) === 0;
}

function takeRingMemory(n: number): Uint8Array {
  if (pooledSize(n)) {
    const l = pool.get(n);
    const got = l?.bufs.pop();
    if (got !== undefined) {
      if (l!.bufs.length < l!.idle) l!.idle = l!.bufs.length;
      ringPool.pooledBytes -= n;
      ringPool.reused++;
      return got;
    }
  }
  ringPool.freshBytes += n;
  return new Uint8Array(n);
}

function giveRingMemory(buf: Uint8Array): void {
  const n = buf.length;
  // A view into a larger buffer (none today) would hand out memory it does not own.
  if (!pooledSize(n) || buf.byteOffset !== 0 || buf.buffer.byteLength !== n) return;
  if (ringPool.pooledBytes + n > ringPool.limit) return;
  let l = pool.get(n);
  if (l === undefined) pool.set(n, (l = { bufs: [], idle: 0 }));
  l.bufs.push(buf);
  ringPool.pooledBytes += n;
}

/**
 * Let go of the pooled buffers no take needed since the last trim (the collector frees them), and
 * start the next interval; returns the bytes let go of. A thread that keeps opening and closing
 * connections keeps what its churn takes, and one whose 5,000 connections closed gives all their
 * memory back within two trims, as Linux's per-CPU page lists drain back to the page allocator on
 * its vmstat interval rather than keep a burst's pages for good. Run by `RingPoolTrim`.
 */
export function trimRingPool(): number {
  let freed = 0;
  for (const [n, l] of pool) {
    if (l.idle > 0) {
      // The oldest: the takes of the interval reached none of them.
      l.bufs.splice(0, l.idle);
      freed += l.idle * n;
    }
    if (l.bufs.length === 0) pool.delete(n);
    else l.idle = l.bufs.length;
  }
  ringPool.pooledBytes -= freed;
  ringPool.trimmedBytes += freed;
  return freed;
}

/** How often a thread's ring pool is trimmed (ms of the clock that drives it). */
export const RING_POOL_TRIM_MS = 1000;

/**
 * The timer that trims this thread's ring pool every RING_POOL_TRIM_MS: one per thread whatever
 * the number of stacks and engines in it (each `hold`s it while it runs), on the clock of the
 * oldest holder still holding, unref'd so that it keeps no process or simulation alive.
 */
export const RingPoolTrim = {
  hold(clock: Clock): () => void {
    const h: TrimHolder = { clock, timer: null };
    trimHolders.push(h);
    if (trimHolders.length === 1) armTrim(h);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      h.timer?.disarm();
      const at = trimHolders.indexOf(h);
      trimHolders.splice(at, 1);
      if (at === 0 && trimHolders.length > 0) armTrim(trimHolders[0]!);
    };
  },
};

interface TrimHolder {
  clock: Clock;
  timer: Timer | null;
}
const trimHolders: TrimHolder[] = [];

function armTrim(h: TrimHolder): void {
  const timer = (h.timer ??= h.clock
    .createTimer(() => {
      trimRingPool();
      timer.arm(RING_POOL_TRIM_MS);
    })
    .unref());
  timer.arm(RING_POOL_TRIM_MS);
}

/**
 * A bounded FIFO of bytes over one ArrayBuffer (or SharedArrayBuffer, so a worker NIC and the
 * host can both see it). TCP's send queue (bytes from snd.una on) and receive queue (in-order
 * bytes not yet read by the application) are ByteRings, which is what lets them travel with a
 * connection's state.
 */
export class ByteRing {
  private buf: Uint8Array;
  private head = 0;
  private len = 0;
  /**
   * The bound was set by a grow to what the connection's flight calls for (tcp-mem.ts,
   * growSendRingHere), not taken from the socket's buffer limit. A ring grown to the whole limit
   * has the bound of one never grown, and a NIC that adopts the connection keeps the size of a
   * grown ring only (hard-state.ts, connRingCapacities).
   */
  grown = false;

  constructor(
    capacity: number,
    /** Upper bound the ring may grow to; growth doubles, so small connections stay small. */
    readonly maxCapacity: number = capacity,
    /**
     * The shared mode's: its bytes lie in shared memory, so it takes NO_BYTES rather than a buffer
     * of its own that nothing reads (one allocation per ring a worker attaches).
     */
    buf?: Uint8Array,
  ) {
    this.buf = buf ?? takeRingMemory(Math.max(16, Math.min(capacity, maxCapacity)));
  }

  get length(): number {
    return this.len;
  }
  get capacity(): number {
    return this.buf.length;
  }
  /** Bytes that can still be written without exceeding maxCapacity. */
  get free(): number {
    return this.maxCapacity - this.len;
  }

  /** Append up to `len` bytes; returns how many were taken. */
  write(src: Uint8Array, off = 0, len = src.length - off): number {
    const n = Math.min(len, this.maxCapacity - this.len);
    if (n <= 0) return 0;
    if (this.len + n > this.buf.length) this.grow(this.len + n);
    const cap = this.buf.length;
    const tail = (this.head + this.len) % cap;
    const first = Math.min(n, cap - tail);
    this.buf.set(src.subarray(off, off + first), tail);
    if (n > first) this.buf.set(src.subarray(off + first, off + n), 0);
    this.len += n;
    return n;
  }

  /** Copy `len` bytes starting `from` bytes after the head into `dst` at `dstOff`, without consuming. */
  peek(from: number, dst: Uint8Array, dstOff: number, len: number): number {
    const n = Math.max(0, Math.min(len, this.len - from));
    if (n === 0) return 0;
    const cap = this.buf.length;
    const start = (this.head + from) % cap;
    const first = Math.min(n, cap - start);
    dst.set(this.buf.subarray(start, start + first), dstOff);
    if (n > first) dst.set(this.buf.subarray(0, n - first), dstOff + first);
    return n;
  }

  /** Drop `n` bytes from the head. */
  consume(n: number): void {
    const k = Math.min(n, this.len);
    this.head = (this.head + k) % this.buf.length;
    this.len -= k;
    if (this.len === 0) this.head = 0;
  }

  /** Copy out and consume up to `len` bytes. */
  read(dst: Uint8Array, dstOff = 0, len = dst.length - dstOff): number {
    const n = this.peek(0, dst, dstOff, len);
    this.consume(n);
    return n;
  }

  /** All queued bytes as a fresh array (for state transfer and tests, not hot paths). */
  toArray(): Uint8Array {
    const out = new Uint8Array(this.len);
    this.peek(0, out, 0, this.len);
    return out;
  }

  clear(): void {
    this.head = 0;
    this.len = 0;
  }

  /** Give the memory of an empty ring back (it grows again on the next write, from the pool). */
  release(): void {
    if (this.len !== 0 || this.buf.length <= 16) return;
    giveRingMemory(this.buf);
    this.buf = new Uint8Array(16);
    this.head = 0;
  }

  /** The shared memory behind this ring, or null for a ring in thread-local memory. */
  get shared(): SharedRingRef | null {
    return null;
  }

  /**
   * A fixed-capacity ring in shared memory for one producer thread and one consumer thread (see
   * shared-ring.ts). Without `at`, it gets a SharedArrayBuffer of its own.
   */
  static createShared(capacity: number, at?: { sab: SharedArrayBuffer; offset: number }): ByteRing {
    const sab = at?.sab ?? new SharedArrayBuffer(sharedRingBytes(capacity));
    const offset = at?.offset ?? 0;
    initSharedRingHeader(sab, offset, capacity);
    return new SharedByteRing({ sab, offset, capacity });
  }

  /**
   * Attach, in another thread, the ring another thread created (`ring.shared`, posted over).
   * `checked`: the caller checked the reference (checkSharedRingRef) and will not change it, so
   * the ring keeps it as its own (`shared`) rather than a copy: a worker's first take of 10,000
   * connections attaches 20,000 rings, and what it makes per ring it keeps.
   */
  static attachShared(ref: SharedRingRef, checked = false): ByteRing {
    if (!checked) {
      checkSharedRingRef(ref);
      ref = { sab: ref.sab, offset: ref.offset, capacity: ref.capacity };
    }
    return new SharedByteRing(ref);
  }

  private grow(need: number): void {
    let cap = this.buf.length;
    while (cap < need) cap *= 2;
    cap = Math.min(Math.max(cap, need), this.maxCapacity);
    const next = takeRingMemory(cap);
    this.peek(0, next, 0, this.len);
    giveRingMemory(this.buf);
    this.buf = next;
    this.head = 0;
  }
}

/**
 * The shared mode of ByteRing. Exactly one thread calls write (the producer) and one calls
 * consume, read and clear (the consumer); length, free, peek and toArray may be called by the
 * consumer at any time and by the producer as a lower bound of what is free. The capacity is fixed:
 * growing would mean swapping memory under the other thread.
 */
const NO_BYTES = new Uint8Array(0);

class SharedByteRing extends ByteRing {
  /** The whole buffer's words and bytes (sharedWords, sharedBytes): no view of its own per ring. */
  private readonly words: Int32Array;
  private readonly bytes: Uint8Array;
  /** The header's first word in `words`, and the data's first byte in `bytes`. */
  private readonly hw: number;
  private readonly base: number;
  private readonly cap: number;
  private readonly wrap: number;
  private readonly ref: SharedRingRef;

  /** `ref`: checked by the caller, and this ring's own (not changed by anyone after). */
  constructor(ref: SharedRingRef) {
    // The base class's own buffer is never used.
    super(0, ref.capacity, NO_BYTES);
    this.ref = ref;
    this.words = sharedWords(ref.sab);
    this.bytes = sharedBytes(ref.sab);
    this.hw = ref.offset >> 2;
    this.base = ref.offset + SHARED_RING_HEADER;
    this.cap = ref.capacity;
    this.wrap = 2 * ref.capacity;
  }

  override get shared(): SharedRingRef {
    return this.ref;
  }

  /*
   * span, pos and the index steps run their wrapped case's arithmetic on every call, choosing only
   * the operand: a ring wraps first well into a download, and optimised code that had inlined a
   * branch never run (no type feedback for its loads and sums) was thrown away there, in every
   * caller that had inlined it (in each NIC worker and on the host, in the burst of 1,000).
   */
  private span(r: number, w: number): number {
    const cap = this.cap;
    const wrap = this.wrap;
    const n = w - r;
    const m = n + (n < 0 ? wrap : 0);
    // A peer that scribbles on the header must not make us read or write outside the data.
    return m >= 0 && m <= cap ? m : cap;
  }

  private pos(p: number): number {
    const cap = this.cap;
    return p - (p >= cap ? cap : 0);
  }

  /** An index `n` bytes on, both indexes running over [0, 2 * capacity). */
  private step(i: number, n: number): number {
    const wrap = this.wrap;
    const next = i + n;
    return next - (next >= wrap ? wrap : 0);
  }

  override get length(): number {
    const v = this.words;
    return this.span(Atomics.load(v, this.hw + RING_READ), Atomics.load(v, this.hw + RING_WRITE));
  }
  override get capacity(): number {
    return this.cap;
  }
  override get free(): number {
    return this.cap - this.length;
  }

  override write(src: Uint8Array, off = 0, len = src.length - off): number {
    const v = this.words;
    const h = this.hw;
    const w = Atomics.load(v, h + RING_WRITE);
    const used = this.span(Atomics.load(v, h + RING_READ), w);
    const n = Math.min(len, this.cap - used);
    if (n <= 0) return 0;
    // One copy, or two where the bytes wrap: one call site for both (see span).
    for (let i = 0, done = 0, at = this.pos(w); i < 2 && done < n; i++, at = 0) {
      const k = Math.min(n - done, this.cap - at);
      copyShared(this.bytes, this.base + at, src, off + done, k, 'dst');
      done += k;
    }
    Atomics.store(v, h + RING_WRITE, this.step(w, n));
    return n;
  }

  override peek(from: number, dst: Uint8Array, dstOff: number, len: number): number {
    const v = this.words;
    const r = Atomics.load(v, this.hw + RING_READ);
    const avail = this.span(r, Atomics.load(v, this.hw + RING_WRITE));
    const n = Math.max(0, Math.min(len, avail - from));
    if (n === 0) return 0;
    for (let i = 0, done = 0, at = this.pos(this.step(r, from)); i < 2 && done < n; i++, at = 0) {
      const k = Math.min(n - done, this.cap - at);
      copyShared(dst, dstOff + done, this.bytes, this.base + at, k, 'src');
      done += k;
    }
    return n;
  }

  override consume(n: number): void {
    const v = this.words;
    const h = this.hw;
    const r = Atomics.load(v, h + RING_READ);
    const k = Math.min(n, this.span(r, Atomics.load(v, h + RING_WRITE)));
    if (k <= 0) return;
    Atomics.store(v, h + RING_READ, this.step(r, k));
  }

  override toArray(): Uint8Array {
    const out = new Uint8Array(this.length);
    this.peek(0, out, 0, out.length);
    return out;
  }

  /** Consumer side: drop everything queued so far. */
  /** Shared memory is fixed: nothing to give back. */
  override release(): void {}

  override clear(): void {
    const v = this.words;
    Atomics.store(v, this.hw + RING_READ, Atomics.load(v, this.hw + RING_WRITE));
  }
}
