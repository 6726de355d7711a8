import { isMainThread } from 'node:worker_threads';
import { ByteRing } from '../../state/byte-ring.ts';
import { checkSharedRingHeader, checkSharedRingRef, sharedRingBytes } from '../../state/shared-ring.ts';
import {
  CONN_SLAB_BYTES,
  type ConnBlockRef,
  HARD_STATE_BYTES,
  HardStateRecord,
  TRANSFER_RECORD_AT,
} from '../hard-state.ts';
import { TransferRecord } from '../transfer-record.ts';

/*
 * A connection that ran on a worker NIC keeps its send and receive data in one shared block
 * (hard-state record, send ring, receive ring: allocConnBlock). Wherever it goes next (another
 * worker, the host, a worker again), that block goes with it by reference: the transfer names it
 * and the rings are attached, not copied.
 */

/**
 * The block a connection's two rings lie in, if they lie in one as allocConnBlock lays it out
 * (record, then the send ring, then the receive ring right after it); null for rings in
 * thread-local memory or laid out otherwise, whose bytes must then be copied into a new block.
 */
export function blockOfRings(send: ByteRing, recv: ByteRing): ConnBlockRef | null {
  const s = send.shared;
  const r = recv.shared;
  if (s === null || r === null || s.sab !== r.sab) return null;
  const at = s.offset - HARD_STATE_BYTES;
  if (at < 0 || r.offset !== s.offset + sharedRingBytes(s.capacity)) return null;
  return { sab: s.sab, at, send: s, recv: r };
}

/** The same block: the same buffer at the same place. */
export function sameBlock(a: ConnBlockRef, b: ConnBlockRef): boolean {
  return (
    a.sab === b.sab &&
    a.at === b.at &&
    a.send.offset === b.send.offset &&
    a.send.capacity === b.send.capacity &&
    a.recv.offset === b.recv.offset &&
    a.recv.capacity === b.recv.capacity
  );
}

// ---- one object per buffer on the worker's side ----------------------------------------------

/*
 * A SharedArrayBuffer that crosses to a worker arrives as a new object over the same memory, every
 * message. Every view made over it (the views of transfer and hard-state records, each ring's
 * header and data) was then made again per connection and move, and the buffer's megabyte of
 * external memory counted again each time, which drove the worker's garbage collector. So the host
 * numbers each buffer it hands over (slabIdOf), and the worker keeps the first object it got for a
 * number (canonicalSlab) and the parts of each block made over it (blockParts): a connection that
 * comes back finds its rings and records as it left them.
 */

const SLAB_IDS = new WeakMap<SharedArrayBuffer, number>();
let nextSlabId = 1;

/** Told the number of each buffer the host numbered once the host's own object of it is collected. */
const slabWatchers = new Set<(id: number) => void>();
let slabsGone = 0;
const SLABS_GONE = new FinalizationRegistry<number>((id) => {
  slabsGone++;
  for (const f of slabWatchers) f(id);
});

/** Buffers the host numbered whose host object was collected since the process started (bench/churn.ts). */
export function slabsGoneCount(): number {
  return slabsGone;
}

/**
 * Hear of every buffer the host numbered (slabIdOf) that the host no longer holds: a WorkerNic
 * tells its worker, which lets go of the object it kept for that number (see `HELD`). Returns
 * the unsubscribe.
 */
export function onSlabGone(f: (id: number) => void): () => void {
  slabWatchers.add(f);
  return () => {
    slabWatchers.delete(f);
  };
}

/**
 * The number the host gives a buffer it hands to workers, the same in every message. In a worker,
 * the number the host gave the buffer when it came (a worker that hands a batch on to another
 * names its buffers as the host did, or the other would make all their parts again), and 0 for
 * the buffers it allocates itself: rare (a block the host did not give) and unnumbered, so numbers
 * come from one counter, this process's main thread.
 */
export function slabIdOf(sab: SharedArrayBuffer): number {
  if (!isMainThread) return SLAB_IDS.get(sab) ?? 0;
  let id = SLAB_IDS.get(sab);
  if (id === undefined) {
    id = nextSlabId++;
    SLAB_IDS.set(sab, id);
    SLABS_GONE.register(sab, id);
    weighNumbered(sab.byteLength);
  }
  return id;
}

/*
 * The host's own collector, as a worker's (weighSlabsLetGo in nic-worker.ts), counts a
 * SharedArrayBuffer as no external memory, so the buffers it numbered weighed nothing towards its
 * next full collection: under churn the host's objects of closed connections' slabs waited for
 * one that only its JS heap's growth brought, and every worker kept its own objects of them until
 * then ('slabs-gone' follows the host's collection): at the end of an 8-cycle churn a forced
 * collection of the host alone freed 2 of the 3 slabs its objects held, and the workers' objects
 * of them followed (BENCHMARKS.md, "Memory under churn: where the shared memory is"). So a
 * slab's worth of buffers numbered is shown
 * to the collector as V8 shows it a plain ArrayBuffer's: one of that size, made and dropped (fresh
 * pages, never touched). A buffer numbered is a buffer made for blocks (no other is handed to a
 * worker), and under churn the memory made is the memory let go, one slab for another.
 */
let bytesNumbered = 0;
/** Times the host showed its collector a slab's worth of buffers it numbered. */
let numberedWeighed = 0;

function weighNumbered(bytes: number): void {
  bytesNumbered += bytes;
  if (bytesNumbered < CONN_SLAB_BYTES) return;
  new ArrayBuffer(bytesNumbered);
  bytesNumbered = 0;
  numberedWeighed++;
}

/** Times the host showed its collector a slab's worth of numbered buffers (bench/churn.ts, tests). */
export function numberedWeighedCount(): number {
  return numberedWeighed;
}

const CANON = new Map<number, WeakRef<SharedArrayBuffer>>();
let sweepAt = 1024;

/**
 * The buffers of CANON held strongly, until the host says its own object of the buffer is gone
 * (dropSlabs): the parts made over a buffer (PARTS) live as long as this thread's object of it,
 * and a worker whose connections had all left a buffer (a move away, an upload) lost that object
 * at its next full collection, and made every block's parts again when they came back: 18,000
 * parts made again over seven visits of 10,000 connections to one worker, with the garbage they
 * leave. The host holds a buffer while any block of it is in use, so what this keeps is memory
 * the host holds anyway, until the host's collector and one message say it is free.
 */
const HELD = new Map<number, SharedArrayBuffer>();

/** This thread's objects of numbered buffers not collected yet: counted, not held (aliveSlabs). */
const alive = { count: 0, bytes: 0 };
const ALIVE = new FinalizationRegistry<number>((bytes) => {
  alive.count--;
  alive.bytes -= bytes;
});

/**
 * The host let go of these buffers: this thread holds them only while something here uses them.
 * Returns the bytes of those it held: memory that only this thread's collector can give back now.
 */
export function dropSlabs(ids: readonly number[]): number {
  let bytes = 0;
  for (const id of ids) {
    const sab = HELD.get(id);
    if (sab === undefined) continue;
    bytes += sab.byteLength;
    HELD.delete(id);
  }
  return bytes;
}

/** Buffers held for the host (HELD): for tests. */
export function heldSlabs(): number {
  return HELD.size;
}

/**
 * This thread's objects of buffers the host numbered that its collector has not taken yet (held
 * for the host, in use here, or garbage not collected), and their bytes: a worker's share of the
 * process's shared memory (its `counters`: `nic.slabs.alive`).
 */
export function aliveSlabs(): { count: number; bytes: number } {
  return { count: alive.count, bytes: alive.bytes };
}

/**
 * The object this thread already holds for the buffer the host numbered `id` (the one `sab` is a
 * new object over), or `sab` itself, kept for that number from now on. Held weakly: a buffer no
 * connection here uses any more goes, and its number with it.
 */
export function canonicalSlab(sab: SharedArrayBuffer, id: number): SharedArrayBuffer {
  // The host keeps its own objects; numbers a worker sent it are not believed.
  if (isMainThread || !Number.isSafeInteger(id) || id <= 0) return sab;
  const known = CANON.get(id)?.deref();
  if (known !== undefined && known.byteLength === sab.byteLength) return known;
  SLAB_IDS.set(sab, id);
  HELD.set(id, sab);
  if (CANON.size >= sweepAt) {
    for (const [k, r] of CANON) if (r.deref() === undefined) CANON.delete(k);
    sweepAt = Math.max(1024, 2 * CANON.size);
  }
  CANON.set(id, new WeakRef(sab));
  alive.count++;
  alive.bytes += sab.byteLength;
  ALIVE.register(sab, sab.byteLength);
  return sab;
}

/** A block's rings and records, made once per buffer object and place (see above). */
export interface BlockParts {
  /** The block itself, as first named here: a later message naming the same place gets this object back. */
  readonly block: ConnBlockRef;
  readonly send: ByteRing;
  readonly recv: ByteRing;
  readonly record: HardStateRecord;
  readonly transfer: TransferRecord;
  readonly sendOffset: number;
  readonly recvOffset: number;
}

const PARTS = new WeakMap<SharedArrayBuffer, Map<number, BlockParts>>();

/** Parts made and parts found again by this thread (a worker reports them as `nic.blocks.parts-*`). */
export const partsCount = { made: 0, found: 0 };

/**
 * The parts this thread made at this place of `sab` (record offset `at`) for the same rings: send
 * ring offset and capacity `so`, `sc`, receive ring `ro`, `rc`.
 */
function madeAt(sab: SharedArrayBuffer, at: number, so: number, sc: number, ro: number, rc: number) {
  const known = PARTS.get(sab)?.get(at);
  return known !== undefined &&
    known.sendOffset === so &&
    known.recvOffset === ro &&
    known.send.capacity === sc &&
    known.recv.capacity === rc
    ? known
    : undefined;
}

/**
 * The block object this thread made parts for at this place of `sab` (the same rings: offsets and
 * capacities), or null: a message naming a block already known costs no new object. Its rings'
 * headers are checked when its parts are asked for (blockParts), as for a new one.
 */
export function knownBlock(
  sab: SharedArrayBuffer,
  at: number,
  sendOffset: number,
  sendCapacity: number,
  recvOffset: number,
  recvCapacity: number,
): ConnBlockRef | null {
  return madeAt(sab, at, sendOffset, sendCapacity, recvOffset, recvCapacity)?.block ?? null;
}

/** Parts found again, their rings' headers checked as attaching them checks them. */
function foundAgain(known: BlockParts): BlockParts {
  const b = known.block;
  checkSharedRingHeader(b.sab, known.sendOffset, known.send.capacity);
  checkSharedRingHeader(b.sab, known.recvOffset, known.recv.capacity);
  partsCount.found++;
  return known;
}

/**
 * The parts of the block a packed batch names in `sab` by the five words from `w[j + 1]` (record
 * offset, send ring offset and capacity, receive ring offset and capacity: transfer-wire's
 * BLOCK_WORDS), by blockParts' rule: a block found again costs no object and one search, where a
 * block object made first and its parts searched for after it cost two (unpackParts).
 */
export function partsAt(sab: SharedArrayBuffer, w: Int32Array, j: number): BlockParts {
  const known = madeAt(sab, w[j + 1]!, w[j + 2]!, w[j + 3]!, w[j + 4]!, w[j + 5]!);
  return known !== undefined ? foundAgain(known) : makeParts(blockAt(sab, w, j));
}

/** A new block object for the place a packed batch names (as partsAt reads it). */
export function blockAt(sab: SharedArrayBuffer, w: Int32Array, j: number): ConnBlockRef {
  return {
    sab,
    at: w[j + 1]!,
    send: { sab, offset: w[j + 2]!, capacity: w[j + 3]! },
    recv: { sab, offset: w[j + 4]!, capacity: w[j + 5]! },
  };
}

/**
 * The parts of block `b`: those made before over the same buffer object at the same place, their
 * rings' headers checked as attaching them checks them (a block whose header is not a ring of the
 * stated capacity throws InvalidArgumentError, found again or not), or new ones.
 */
export function blockParts(b: ConnBlockRef): BlockParts {
  const known = madeAt(b.sab, b.at, b.send.offset, b.send.capacity, b.recv.offset, b.recv.capacity);
  return known !== undefined ? foundAgain(known) : makeParts(b);
}

function makeParts(b: ConnBlockRef): BlockParts {
  // No view of its own for a ring, a record or a header: each reads its buffer's one view at an
  // offset (a view over shared memory was the costly part of a connection's first visit to this
  // worker: BENCHMARKS.md, "The first move"), and the rings keep the block's references, which
  // nothing changes, rather than copies of them.
  checkSharedRingRef(b.send);
  checkSharedRingRef(b.recv);
  const parts: BlockParts = {
    block: b,
    send: ByteRing.attachShared(b.send, true),
    recv: ByteRing.attachShared(b.recv, true),
    record: new HardStateRecord(b.sab, b.at),
    transfer: new TransferRecord(b.sab, b.at + TRANSFER_RECORD_AT),
    sendOffset: b.send.offset,
    recvOffset: b.recv.offset,
  };
  let bySab = PARTS.get(b.sab);
  if (bySab === undefined) {
    bySab = new Map();
    PARTS.set(b.sab, bySab);
  }
  bySab.set(b.at, parts);
  partsCount.made++;
  return parts;
}
