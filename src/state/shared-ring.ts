import { InvalidArgumentError } from '../core/errors.ts';

/*
 * Layout of a ByteRing that lives in shared memory, so one thread can fill it while another drains
 * it (the application and a worker NIC):
 *
 *   Int32 [0] read position   written only by the consumer
 *   Int32 [1] write position  written only by the producer
 *   Int32 [2] capacity        fixed at creation, lets an attacher check the reference it got
 *   Int32 [3] magic           'RING', so a reference to the wrong bytes is refused
 *   bytes [16, 16 + capacity) data
 *
 * Positions run over [0, 2 * capacity): with each side owning one index, a full ring (positions
 * `capacity` apart) and an empty one (equal positions) stay distinct without a shared length
 * counter that both sides would have to update. A side publishes its index with Atomics.store
 * after touching the data, and reads the other's with Atomics.load before touching it; the
 * memory model's synchronizes-with edge between them makes the data visible without locks.
 */

export const SHARED_RING_HEADER = 16;
export const SHARED_RING_MAGIC = 0x52494e47;
/** Positions must fit an Int32 twice over: 2 * capacity < 2^31. */
export const SHARED_RING_MAX_CAPACITY = 0x3fffffff;

export const RING_READ = 0;
export const RING_WRITE = 1;
const RING_CAP = 2;
const RING_MAGIC = 3;

/** Where a shared ring lives: everything another thread needs to attach it (structured-cloneable). */
export interface SharedRingRef {
  readonly sab: SharedArrayBuffer;
  /** Byte offset of the ring's header in `sab`; a multiple of 8. */
  readonly offset: number;
  readonly capacity: number;
}

/** Bytes a ring of `capacity` takes in a shared block, rounded so the next one stays aligned. */
export function sharedRingBytes(capacity: number): number {
  return SHARED_RING_HEADER + ((capacity + 7) & ~7);
}

function checkCapacity(capacity: number): void {
  if (!Number.isInteger(capacity) || capacity < 1 || capacity > SHARED_RING_MAX_CAPACITY) {
    throw new InvalidArgumentError(
      `shared ring capacity must be an integer in 1..${SHARED_RING_MAX_CAPACITY}`,
    );
  }
}

/** Lay out an empty ring at `offset` of `sab` (which must be zeroed or unused there). */
export function initSharedRing(sab: SharedArrayBuffer, offset: number, capacity: number): SharedRingRef {
  initSharedRingHeader(sab, offset, capacity);
  return { sab, offset, capacity };
}

/**
 * `initSharedRing`, returning the view of the header it wrote: a ring made here keeps it rather
 * than make a second (a view over shared memory costs microseconds, and a worker makes two rings
 * for every handshake it ends in a burst of connects).
 */
export function initSharedRingHeader(sab: SharedArrayBuffer, offset: number, capacity: number): Int32Array {
  checkCapacity(capacity);
  if (!(sab instanceof SharedArrayBuffer))
    throw new InvalidArgumentError('shared ring needs a SharedArrayBuffer');
  if (!Number.isInteger(offset) || offset < 0 || offset % 8 !== 0) {
    throw new InvalidArgumentError('shared ring offset must be a non-negative multiple of 8');
  }
  if (offset + SHARED_RING_HEADER + capacity > sab.byteLength) {
    throw new InvalidArgumentError('shared ring does not fit in its buffer');
  }
  const ctl = new Int32Array(sab, offset, 4);
  Atomics.store(ctl, RING_READ, 0);
  Atomics.store(ctl, RING_WRITE, 0);
  ctl[RING_CAP] = capacity;
  Atomics.store(ctl, RING_MAGIC, SHARED_RING_MAGIC);
  return ctl;
}

/**
 * Check a reference that came from another thread before trusting it: the header must be a ring
 * header with the capacity the reference claims, and both positions must be in range.
 */
export function checkSharedRingRef(ref: SharedRingRef): Int32Array {
  if (ref === null || typeof ref !== 'object' || !(ref.sab instanceof SharedArrayBuffer)) {
    throw new InvalidArgumentError('shared ring reference needs a SharedArrayBuffer');
  }
  const { sab, offset, capacity } = ref;
  checkCapacity(capacity);
  if (!Number.isInteger(offset) || offset < 0 || offset % 8 !== 0) {
    throw new InvalidArgumentError('shared ring offset must be a non-negative multiple of 8');
  }
  if (offset + SHARED_RING_HEADER + capacity > sab.byteLength) {
    throw new InvalidArgumentError('shared ring runs past the end of its buffer');
  }
  const ctl = new Int32Array(sab, offset, 4);
  checkSharedRingHeader(ctl, capacity);
  return ctl;
}

/**
 * The header checks of checkSharedRingRef over a header view made before (`ctl`, four words at
 * the ring's offset): a ring attached once and found again is checked as a new one is.
 */
export function checkSharedRingHeader(ctl: Int32Array, capacity: number): void {
  if (Atomics.load(ctl, RING_MAGIC) !== SHARED_RING_MAGIC) {
    throw new InvalidArgumentError('no shared ring at that offset');
  }
  if (ctl[RING_CAP] !== capacity) throw new InvalidArgumentError('shared ring capacity mismatch');
  const r = Atomics.load(ctl, RING_READ);
  const w = Atomics.load(ctl, RING_WRITE);
  if (r < 0 || r >= 2 * capacity || w < 0 || w >= 2 * capacity) {
    throw new InvalidArgumentError('shared ring positions out of range');
  }
}

/**
 * Each shared buffer's words, one view per buffer (many rings share a slab): a view made per
 * read of a position cost 1-4 µs, and a crash's rebuild of ten thousand connections read two
 * positions of each.
 */
const WORDS = new WeakMap<SharedArrayBuffer, Int32Array>();
let lastSab: SharedArrayBuffer | null = null;
let lastWords: Int32Array | null = null;

function wordsOf(sab: SharedArrayBuffer): Int32Array {
  if (sab === lastSab) return lastWords!;
  let v = WORDS.get(sab);
  if (v === undefined) {
    v = new Int32Array(sab, 0, sab.byteLength >> 2);
    WORDS.set(sab, v);
  }
  lastSab = sab;
  lastWords = v;
  return v;
}

/** The ring's two positions as they are now (each in [0, 2 * capacity)). */
export function sharedRingPositions(ref: SharedRingRef): { read: number; write: number } {
  const v = wordsOf(ref.sab);
  const at = ref.offset >> 2;
  return { read: Atomics.load(v, at + RING_READ), write: Atomics.load(v, at + RING_WRITE) };
}

/** The ring's read position as it is now (the consumer's). */
export function sharedRingRead(ref: SharedRingRef): number {
  return Atomics.load(wordsOf(ref.sab), (ref.offset >> 2) + RING_READ);
}

/** The ring's write position as it is now (the producer's). */
export function sharedRingWrite(ref: SharedRingRef): number {
  return Atomics.load(wordsOf(ref.sab), (ref.offset >> 2) + RING_WRITE);
}

/** Bytes a position moved from `then` to `now`, modulo the ring's position space. */
export function sharedRingAdvance(ref: SharedRingRef, then: number, now: number): number {
  const d = now - then;
  return d >= 0 ? d : d + 2 * ref.capacity;
}

/**
 * Copy `dst.length` bytes of the ring from position `from` on (positions as the header keeps them),
 * reading the data only: for the producer, whose bytes from the consumer's read position to its own
 * write position stay as they are while it writes nothing, whatever the consumer does meanwhile.
 */
export function sharedRingCopy(ref: SharedRingRef, from: number, dst: Uint8Array): void {
  const cap = ref.capacity;
  if (dst.length > cap || !Number.isInteger(from) || from < 0 || from >= 2 * cap)
    throw new InvalidArgumentError('shared ring copy outside the ring');
  const data = new Uint8Array(ref.sab, ref.offset + SHARED_RING_HEADER, cap);
  const start = from >= cap ? from - cap : from;
  const first = Math.min(dst.length, cap - start);
  copyShared(dst, 0, data, start, first, 'src');
  if (dst.length > first) copyShared(dst, first, data, 0, dst.length - first, 'src');
}

/** Bytes a bounced copy moves at a time: small enough to stay in the core's first-level cache. */
const BOUNCE_BYTES = 16384;
/** Below this a bounce costs more than the byte-by-byte copy it avoids. */
const BOUNCE_MIN = 256;
let bounce = new Uint8Array(0);

/**
 * `dst.set(src.subarray(srcOff, srcOff + n), dstOff)` where one side (`shared`) lies in a
 * SharedArrayBuffer. V8 copies to or from shared memory with relaxed atomic stores, word by word
 * only when both addresses have the same remainder modulo 8, else byte by byte: about a tenth of the
 * speed (2-3 GB/s against 20-25 here). A ring's positions and a segment's payload offset (66 for
 * IPv4 with timestamps) fall anywhere, so most copies were the slow kind. Through a plain buffer
 * placed at the shared side's remainder, the shared copy is word by word and the other one is an
 * ordinary memmove.
 */
export function copyShared(
  dst: Uint8Array,
  dstOff: number,
  src: Uint8Array,
  srcOff: number,
  n: number,
  shared: 'src' | 'dst',
): void {
  const d = dst.byteOffset + dstOff;
  const s = src.byteOffset + srcOff;
  if (n < BOUNCE_MIN || ((d - s) & 7) === 0) {
    dst.set(src.subarray(srcOff, srcOff + n), dstOff);
    return;
  }
  if (bounce.length === 0) bounce = new Uint8Array(BOUNCE_BYTES + 8);
  const k = (shared === 'src' ? s : d) & 7;
  for (let o = 0; o < n; o += BOUNCE_BYTES) {
    const m = Math.min(BOUNCE_BYTES, n - o);
    bounce.set(src.subarray(srcOff + o, srcOff + o + m), k);
    dst.set(bounce.subarray(k, k + m), dstOff + o);
  }
}
