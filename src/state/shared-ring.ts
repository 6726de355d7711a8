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

/** Write an empty ring's header at `offset` of `sab`, after checking that the ring fits there. */
export function initSharedRingHeader(sab: SharedArrayBuffer, offset: number, capacity: number): void {
  checkCapacity(capacity);
  if (!(sab instanceof SharedArrayBuffer))
    throw new InvalidArgumentError('shared ring needs a SharedArrayBuffer');
  if (!Number.isInteger(offset) || offset < 0 || offset % 8 !== 0) {
    throw new InvalidArgumentError('shared ring offset must be a non-negative multiple of 8');
  }
  if (offset + SHARED_RING_HEADER + capacity > sab.byteLength) {
    throw new InvalidArgumentError('shared ring does not fit in its buffer');
  }
  const v = sharedWords(sab);
  const at = offset >> 2;
  Atomics.store(v, at + RING_READ, 0);
  Atomics.store(v, at + RING_WRITE, 0);
  v[at + RING_CAP] = capacity;
  Atomics.store(v, at + RING_MAGIC, SHARED_RING_MAGIC);
}

/**
 * Check a reference that came from another thread before trusting it: the header must be a ring
 * header with the capacity the reference claims, and both positions must be in range.
 */
export function checkSharedRingRef(ref: SharedRingRef): void {
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
  checkSharedRingHeader(sab, offset, capacity);
}

/**
 * The header checks of checkSharedRingRef, for a ring whose place was checked before (`offset`
 * in `sab`, the ring fits): a ring attached once and found again is checked as a new one is.
 */
export function checkSharedRingHeader(sab: SharedArrayBuffer, offset: number, capacity: number): void {
  const v = sharedWords(sab);
  const at = offset >> 2;
  if (Atomics.load(v, at + RING_MAGIC) !== SHARED_RING_MAGIC) {
    throw new InvalidArgumentError('no shared ring at that offset');
  }
  if (v[at + RING_CAP] !== capacity) throw new InvalidArgumentError('shared ring capacity mismatch');
  const r = Atomics.load(v, at + RING_READ);
  const w = Atomics.load(v, at + RING_WRITE);
  if (r < 0 || r >= 2 * capacity || w < 0 || w >= 2 * capacity) {
    throw new InvalidArgumentError('shared ring positions out of range');
  }
}

/**
 * Each shared buffer's words and bytes, one view of each per buffer (many rings share a slab): a
 * view made per read of a position cost 1-4 µs, and a crash's rebuild of ten thousand connections
 * read two positions of each. A ring attached (SharedByteRing) reads its header and data through
 * these too: the four views a ring pair made per connection were most of what a survivor's
 * install of 10,000 unbuilt connections made and kept, and what its scavenges then copied. Held
 * weakly only, and no last-used buffer kept beside the maps: that one reference held a slab a
 * worker had let go until it touched another (held-slabs.test.ts).
 */
const WORDS = new WeakMap<SharedArrayBuffer, Int32Array>();
const BYTES = new WeakMap<SharedArrayBuffer, Uint8Array>();

/** The whole of `sab` as words (its length rounded down to a word), the same view for every caller. */
export function sharedWords(sab: SharedArrayBuffer): Int32Array {
  let v = WORDS.get(sab);
  if (v === undefined) {
    v = new Int32Array(sab, 0, sab.byteLength >> 2);
    WORDS.set(sab, v);
  }
  return v;
}

/** The whole of `sab` as bytes, the same view for every caller. */
export function sharedBytes(sab: SharedArrayBuffer): Uint8Array {
  let v = BYTES.get(sab);
  if (v === undefined) {
    v = new Uint8Array(sab);
    BYTES.set(sab, v);
  }
  return v;
}

/** The ring's two positions as they are now (each in [0, 2 * capacity)). */
export function sharedRingPositions(ref: SharedRingRef): { read: number; write: number } {
  const v = sharedWords(ref.sab);
  const at = ref.offset >> 2;
  return { read: Atomics.load(v, at + RING_READ), write: Atomics.load(v, at + RING_WRITE) };
}

/** The ring's read position as it is now (the consumer's). */
export function sharedRingRead(ref: SharedRingRef): number {
  return Atomics.load(sharedWords(ref.sab), (ref.offset >> 2) + RING_READ);
}

/** The ring's write position as it is now (the producer's). */
export function sharedRingWrite(ref: SharedRingRef): number {
  return Atomics.load(sharedWords(ref.sab), (ref.offset >> 2) + RING_WRITE);
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
  const data = sharedBytes(ref.sab);
  const base = ref.offset + SHARED_RING_HEADER;
  const start = from >= cap ? from - cap : from;
  const first = Math.min(dst.length, cap - start);
  copyShared(dst, 0, data, base + start, first, 'src');
  if (dst.length > first) copyShared(dst, first, data, base, dst.length - first, 'src');
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
