import type { MessagePort } from 'node:worker_threads';
import { ChimneyError } from '../../core/errors.ts';
import type { TapHeld } from '../../link/tap-link.ts';
import type { AddressView } from '../../stack/address-table.ts';
import type { ConnBlockRef } from '../hard-state.ts';
import type {
  ConnKey,
  EngineIndication,
  EngineIndicationArgs,
  InitiateResult,
  InvalidateTarget,
  NicListenSpec,
  OffloadUpdate,
  QueryResult,
  TreeTransfer,
  UploadReason,
} from '../nic.ts';
import { SCAN } from '../nic.ts';
import type { PackedBlocks, PackedInitiate } from './transfer-wire.ts';

/*
 * What crosses between a WorkerNic (main thread) and its worker.
 *
 * Frames travel in batches: many frames packed into one ArrayBuffer (u32 length, bytes, ...) that
 * is transferred, not copied, once per event-loop turn. Control verbs are requests with ids.
 * Payload does not travel in messages at all: it sits in each connection's shared rings, and the
 * doorbell below says which connections to look at.
 */

/** Options the worker starts with (workerData). */
export interface WorkerBoot {
  id: string;
  seed: number;
  /** WorkerNicOptions.isnSecret. */
  isnSecret?: Uint8Array;
  capacity: number;
  /** Largest shared ring per direction and connection (bytes). */
  ringCapacity: number;
  heartbeatMs: number;
  reachabilityIntervalMs: number;
  /** The doorbell block (see DOORBELL_*). */
  doorbell: SharedArrayBuffer;
  link: { kind: 'proxy'; name: string; mtu: number; carrier: boolean } | { kind: 'tap'; options: unknown };
  /**
   * Capture every frame of a link the worker opens itself: pcap records go to the main thread in
   * 'cap' chunks. Int32 words: [CAP_IN_FLIGHT] bytes posted and not yet written (the worker adds,
   * the main thread subtracts), [CAP_DROPPED] frames left out because that passed CAP_LIMIT.
   */
  capture?: SharedArrayBuffer;
  /**
   * The worker's owner table (owner-table.ts): it lists there every connection it runs, so the other
   * workers of its team send it that connection's frames directly ('peer' below).
   */
  owners?: SharedArrayBuffer;
  /** What the worker's TAP holds of the process, while it holds it (see tapHeld below). */
  tapHeld: SharedArrayBuffer;
  /** A test's stop inside the TAP's open (WorkerNicTestSeams.stopWhileOpening). */
  stopWhileOpening?: { after: number; flag: SharedArrayBuffer };
  /** A test's pause between a hand-over's two messages (WorkerNicTestSeams.handGapMs). */
  handGapMs?: number;
  /** A test's gate around a hand-over's release (WorkerNicTestSeams.handGate). */
  handGate?: SharedArrayBuffer;
  /** A test's stop before the worker posts its turn's 'born' (WorkerNicTestSeams.stopBeforeBorn). */
  stopBeforeBorn?: SharedArrayBuffer;
  /** A test's longest hold of a handed batch's input (WorkerNicTestSeams.handHoldMs). */
  handHoldMs?: number;
  /** A test's delay of every batch of frames to a peer (WorkerNicTestSeams.peerFlushDelayMs). */
  peerFlushDelayMs?: number;
  /** A test's time for a turn of paced builds (WorkerNicTestSeams.buildTurnMs). */
  buildTurnMs?: number;
  /** A test's longest hold of a moved connection's input for its settle (WorkerNicTestSeams.settleHoldMs). */
  settleHoldMs?: number;
  /** A test's bound on a `create: false` TAP's EBUSY tries (WorkerNicTestSeams.tapFreeBoundMs). */
  tapFreeBoundMs?: number;
  /**
   * WorkerNicOptions.openWhenLet: Int32 words, [0] set by the worker once loaded and waiting to
   * open its TAP, [1] set by the host to let it open.
   */
  openGate?: SharedArrayBuffer;
  /**
   * The thread's end of a channel whose other end the host keeps (WorkerNic.threadEnd): the thread
   * never closes it and keeps it (workerData holds it for the thread's life), so it closes only as
   * the runtime tears the thread down, after the thread's last JavaScript.
   */
  end: MessagePort;
  /** A test's FIFO the thread opens to read at its boot (WorkerNicTestSeams.exitHeldBy). */
  exitHeldBy?: string;
}

// ---- what a worker's TAP holds of the process ------------------------------------------------------
//
// Native memory and descriptors belong to the process, not to the thread that made them: a worker
// killed before it closes its TAP leaves them behind. It lists each here the moment its open makes
// it (TapLinkOptions.onHeld: a worker killed halfway through the open leaves the list of what it
// had made by then), and lists what is left each time its close frees some (the wake pipe's read end goes last, once the
// pending poll that uses it has ended); the main thread frees what is still listed once the thread
// has exited. BigInt64 words: two addresses (0: none), then four descriptors (-1: none).

const HELD_ADDRS = 2;
const HELD_FDS = 4;

export function newTapHeld(): SharedArrayBuffer {
  const sab = new SharedArrayBuffer((HELD_ADDRS + HELD_FDS) * 8);
  clearTapHeld(new BigInt64Array(sab));
  return sab;
}

export function clearTapHeld(words: BigInt64Array): void {
  for (let i = 0; i < HELD_ADDRS; i++) Atomics.store(words, i, 0n);
  for (let i = 0; i < HELD_FDS; i++) Atomics.store(words, HELD_ADDRS + i, -1n);
}

export function publishTapHeld(words: BigInt64Array, held: TapHeld): void {
  for (let i = 0; i < HELD_ADDRS; i++) Atomics.store(words, i, held.addrs[i] ?? 0n);
  for (let i = 0; i < HELD_FDS; i++) Atomics.store(words, HELD_ADDRS + i, BigInt(held.fds[i] ?? -1));
}

/** What is listed now, the list cleared: null when nothing is. */
export function takeTapHeld(words: BigInt64Array): TapHeld | null {
  const held: TapHeld = { addrs: [], fds: [] };
  for (let i = 0; i < HELD_ADDRS; i++) {
    const a = Atomics.load(words, i);
    if (a !== 0n) held.addrs.push(a);
  }
  for (let i = 0; i < HELD_FDS; i++) {
    const fd = Number(Atomics.load(words, HELD_ADDRS + i));
    if (fd >= 0) held.fds.push(fd);
  }
  clearTapHeld(words);
  return held.addrs.length + held.fds.length > 0 ? held : null;
}

export const CAP_IN_FLIGHT = 0;
export const CAP_DROPPED = 1;
/** Capture bytes on their way to the main thread at most: a writer that falls behind loses frames, counted, not memory. */
export const CAP_LIMIT = 16 << 20;

// ---- the doorbell --------------------------------------------------------------------------------
//
// Int32 words: [0] bell (bumped on every ring; the worker waits on it), [1] queue head (worker),
// [2] queue tail (main), [3] heartbeat count (worker), then a queue of slot numbers, then one flags
// word per slot.
// The main thread ORs a bit into a slot's flags and, only if they were 0, queues the slot; the
// worker dequeues a slot and takes its flags with an exchange. A slot is therefore queued at most
// once at a time, and the queue (one longer than the slot count) never overflows.

export const DB_BELL = 0;
export const DB_HEAD = 1;
export const DB_TAIL = 2;
/**
 * Bumped by the worker on every heartbeat. The watchdog reads it from shared memory rather than
 * waiting for heartbeat messages: a main thread that was itself stalled still finds its messages
 * unread when its timer fires, and would take a live worker for dead.
 */
export const DB_BEAT = 3;
/**
 * Frames the worker's link has received, bumped by the worker: proof, readable without a message,
 * that the link still reaches the segment (the team's reachability check counts it as evidence).
 */
export const DB_RX = 4;
/** Times the worker's TAP read its receive queue empty (TapLink.drains). */
export const DB_DRAINS = 5;
/** The file descriptor of the worker's TAP, -1 without one: the main thread can look at its queue. */
export const DB_TAP_FD = 6;
/**
 * Frames from the host the worker has handed to its link. While it trails the frames the host
 * batched, a reachability probe may still sit in the worker's message queue, not on the wire, and an
 * empty receive queue proves nothing about its answer.
 */
export const DB_HOST_SENT = 7;
/**
 * realStamp() of the earliest time the latest frame the worker's TAP delivered could have arrived
 * (TapLink.rxSince), written when it changes, before DB_RX counts the frame: a count seen comes
 * with its date.
 */
export const DB_RX_SINCE = 8;
/**
 * Frames the worker has handed the host so far ('up' batches, posted or not). While the host has
 * handled fewer, a probe's answer the worker read may still be on its way: a drained or empty queue
 * proves nothing of it yet.
 */
export const DB_UP = 9;
/** realStamp() of the worker's TAP's latest drain (TapLink.drainedAt), written before DB_DRAINS counts it. */
export const DB_DRAIN_AT = 10;
/**
 * 1 while the worker runs a turn of its own JavaScript, 0 once that turn and its microtasks are
 * over (cleared in the loop's check phase, before it can wait for I/O again). Read by the host
 * after it set DB_STOP and called `terminate()`: a 0 then says the thread will never write shared
 * memory again (see WorkerNic.terminateThread). Read by the doorbell too: a ring while it is 1
 * needs no notify, the worker looking at its queue as the turn ends (nic-worker.ts, bellAfterUnit).
 */
export const DB_BUSY = 11;
/**
 * Set by the host before it stops the thread (terminateThread). A turn that begins stores DB_BUSY
 * and then reads this: a thread that finds it set writes nothing more and waits to be stopped.
 */
export const DB_STOP = 12;
export const DB_QUEUE = 13;

/**
 * Wall-clock time in 1/16 ms, modulo 2^32: one time base for every thread of the process (each has
 * its own performance.now() origin), in one word. Two stamps compare by their difference as an
 * int32, good for ages up to 37 hours.
 */
export function realStamp(): number {
  return stampOf(performance.now());
}

/** realStamp() of this thread's performance.now() time `ms`. */
export function stampOf(ms: number): number {
  return Math.round((performance.timeOrigin + ms) * 16) | 0;
}

/** The application wrote into the send ring. */
export const BELL_WROTE = 1;
/** The application read from the receive ring (the window may open). */
export const BELL_READ = 2;
/** A write came back short: say when there is room. */
export const BELL_WANT_WRITABLE = 4;
/** Say when the peer acknowledges new data (the application holds itself below the ring's size). */
export const BELL_WANT_ACKED = 8;

/** The doorbell's words: the header, the queue (slots + 1), each slot's bits, each slot's quiet reads. */
export function doorbellWords(slots: number): number {
  return DB_QUEUE + (slots + 1) + slots + slots;
}

export function doorbellFlagsAt(slots: number): number {
  return DB_QUEUE + slots + 1;
}

/**
 * Each slot's word of quiet reads, written by the worker only: a realStamp() until which an
 * application's read of the slot's receive ring cannot make the worker send anything (no ACK
 * owed, the window the peer sees more than half the clamp, autotuning's next measure not due),
 * so the host rings no BELL_READ for it; 0 (ring for every read) whenever the worker may have
 * changed the connection since it last looked (nic-worker.ts, quietReads).
 */
export function doorbellQuietAt(slots: number): number {
  return DB_QUEUE + slots + 1 + slots;
}

// ---- events from the worker's connections --------------------------------------------------------

export const EV_READABLE = 1;
export const EV_REMOTE_END = 2;
export const EV_WRITABLE = 4;
export const EV_CLOSED = 8;
/** With EV_WRITABLE: everything in the send ring has been sent (the socket's target grows). */
export const EV_SEND_DRY = 16;
/**
 * With EV_CLOSED: the connection waits in TIME_WAIT with nothing left in its rings and gave its
 * block back (the worker holds it no longer; the host's handle lets go of it too, keeping the
 * record's last hard state).
 */
export const EV_BLOCK_GONE = 32;

export interface WireError {
  name: string;
  code: string;
  message: string;
  field?: string;
  errno?: string;
}

export interface InstalledConn {
  key: ConnKey;
  slot: number;
  block: ConnBlockRef;
  /** It runs on the block the host gave with the initiate (not one the worker allocated). */
  given?: boolean;
}

/** The verbs a WorkerNic asks of its worker, each with its argument. */
export type WorkerRequest =
  | {
      op: 'initiate';
      /**
       * `blocks`: shared memory the host allocated (and filled) for each connection of the batch,
       * by connKeyId, so that the host holds every connection's memory even if the worker dies
       * before it replies. `owner`: the batch names neighbors and paths only, and each
       * connection's state is the transfer record in its block, offered to this owner number
       * (src/nic/transfer-record.ts). `holdInput`: InitiateOptions.holdInput, for every
       * connection installed, built or taken unbuilt. `batch` as trees (objects, TreeTransfer):
       * only to an engine in the host's thread (SameThreadTransport), which runs the states
       * themselves; a port carries bytes, and PortTransport refuses objects, as the engine in this
       * thread refuses blocks and records.
       */
      arg: {
        batch: Uint8Array | TreeTransfer;
        prod: boolean;
        blocks?: PackedBlocks;
        owner?: number;
        holdInput?: boolean;
      };
    }
  /** Keys travel packed (transfer-wire.ts). */
  /**
   * `byRef`: the answer's batch leaves the data out (its rings travel by reference): the host
   * attaches the rings it already shares with the worker to the decoded states. `records`: the
   * batch names neighbors and paths (and what travelsAsRecord keeps in the codec), the other
   * connections' states are transfer records in their blocks, handed to the host.
   */
  | {
      op: 'terminate';
      arg: Uint32Array | 'all';
      byRef?: boolean;
      records?: boolean;
      /**
       * Hand what is released straight to another worker (`hand`, records only): each record is
       * offered to `owner`, and the batch with the released blocks goes over the hands channel to
       * that worker ('hands' below), which installs it and answers the host's request `id` there.
       */
      hand?: { owner: number; id: number; prod: boolean };
      /**
       * Answer with the released states themselves (the answer's `trees`; its `value` empty),
       * not their bytes: only an engine in the host's thread can (TerminateOptions.trees).
       */
      trees?: boolean;
    }
  | { op: 'update'; arg: OffloadUpdate }
  | { op: 'invalidate'; arg: InvalidateTarget }
  | { op: 'query'; arg: ConnKey[] | undefined }
  | { op: 'progressScan'; arg: null }
  /** `drop`: let go of the keys too (dropFrozen), in the same request. */
  | { op: 'takeQueued'; arg: Uint32Array; drop?: boolean }
  | { op: 'dropFrozen'; arg: Uint32Array }
  | { op: 'counters'; arg: null };

export type WorkerOp = WorkerRequest['op'];

/**
 * What an answer the host cannot read (WorkerProtocolError) means, per request: one entry per verb,
 * so a new verb does not compile until it has a defined outcome.
 *
 * 'defective': the request may have changed what the worker runs, and the answer was the only
 * word of what it did. Believing either way could run a connection in two places or in none, so
 * the worker is stopped and taken as dead ('defective'), and its connections rebuilt from the hard
 * state the host holds (that memory is the host's, whatever the worker did or wrote in its answer).
 * - initiate: it may have installed the batch and run it since;
 * - terminate: it may have released the batch (or handed it on to another worker);
 * - update, invalidate: a neighbor's MAC, a path's MTU, or a stop of sending may or may not be in
 *   force there, and a connection sending on a stale MAC, or not at all, is lost without a word;
 * - takeQueued, dropFrozen: the segments it held for a move are gone from it, and so may its
 *   freeze be: the settle goes on without them (the peer resends), the worker does not.
 *
 * 'refused': a pure reading; the worker's state is as it was, only the reading is lost. The request
 * fails with the WorkerProtocolError and nothing changes: query, progressScan, counters.
 */
export const ON_MALFORMED_ANSWER: { readonly [O in WorkerOp]: 'defective' | 'refused' } = {
  initiate: 'defective',
  terminate: 'defective',
  update: 'defective',
  invalidate: 'defective',
  takeQueued: 'defective',
  dropFrozen: 'defective',
  query: 'refused',
  progressScan: 'refused',
  counters: 'refused',
};
export type WorkerArg<O extends WorkerOp> = Extract<WorkerRequest, { op: O }>['arg'];

/** What each verb answers with (`value` of a successful 'res'). */
export interface WorkerReplies {
  initiate: PackedInitiate;
  terminate: Uint8Array;
  update: undefined;
  invalidate: undefined;
  query: QueryResult[];
  progressScan: Float64Array;
  takeQueued: Uint8Array[];
  dropFrozen: undefined;
  counters: Record<string, number>;
}

/** What some answers carry beside their value. */
interface WorkerReplyExtras {
  /** The blocks installed (the same object as in the packed value). */
  initiate: { installed: PackedBlocks };
  /** Slots the terminate freed, and of those the ones whose state is in the transfer. */
  terminate: { freed: number[]; moved: number[]; records?: boolean; trees?: TreeTransfer };
  update: unknown;
  invalidate: unknown;
  query: unknown;
  progressScan: unknown;
  takeQueued: unknown;
  dropFrozen: unknown;
  counters: unknown;
}

/** A successful answer to the request `id`, which was an `op`. */
export type WorkerReply<O extends WorkerOp = WorkerOp> = {
  [K in O]: { t: 'res'; id: number; ok: true; op: K; value: WorkerReplies[K] } & WorkerReplyExtras[K];
}[O];

/** An indication of the worker's engine: its name, then its arguments (a link's `since` in epoch ms). */
export type WorkerIndication = { t: 'ind'; ind: EngineIndicationArgs };

export type ToWorker =
  | { t: 'rx'; buf: ArrayBuffer; len: number }
  | { t: 'host'; buf: ArrayBuffer; len: number }
  | { t: 'carrier'; up: boolean }
  /** Frames sent from the team's MAC leave from `mac` instead (`mac` 0: as they are; Nic.sendFrom). */
  | { t: 'send-from'; team: number; mac: number }
  /** The host's address table to read (AddressFinder): the handles of peers' IPv6 connections. */
  | { t: 'host-addrs'; view: AddressView }
  | ({ t: 'req'; id: number } & WorkerRequest)
  | {
      t: 'op';
      slot: number;
      op: 'shutdown' | 'close' | 'abort' | 'nodelay' | 'keepalive';
      on?: boolean;
      ms?: number;
    }
  /**
   * Segments another owner held for connections run here (IP packets). `settled`: packed keys
   * (transfer-wire.ts) of the connections whose settle this is (Nic.inject's `settled`).
   */
  | { t: 'inject'; packets: Uint8Array[]; settled?: Uint32Array }
  /**
   * The answer to a 'grow': the connection in `slot` (whose block, `old`, is the one it runs on:
   * a slot given to another connection meanwhile is left alone) moves to the new block `to`, whose
   * send ring the host fills from send ring position `r0` of the old one and writes from now on.
   * See WorkerNic's grow handshake (worker-nic.ts).
   */
  | { t: 'regrow'; slot: number; old: RegrowBlock; to: RegrowBlock; id: number; r0: number }
  /**
   * Another worker of the same team: its owner table, and one end of a channel between the two.
   * Frames that arrive here for a connection it lists go to it over the channel ('fwd' batches)
   * instead of up to the main thread; frames it sends here are run as if received on this link.
   * `owner`: the owner number of its records, which names it on the hands channel between the two.
   */
  | { t: 'peer'; id: string; owner: number; port: MessagePort; owners: SharedArrayBuffer }
  /**
   * Another worker's end of a channel for moves between the two (the owner number of its
   * records): a terminate with `hand` sends its released batch over it, and what comes in over it
   * is installed as an initiate the host awaits (HandMessage).
   */
  | { t: 'hands'; owner: number; port: MessagePort }
  | { t: 'close' }
  /**
   * Answer the SYNs of a host listener in the worker (NicListenSpec, its gate's shared memory by
   * reference); `id` names it in 'unlisten' and in the 'born' of each connection it accepts; `ring`:
   * the ring size the host places connections with, shared out by the load as the host does;
   * `sendRing`: WorkerNicOptions.sendPlacementRing (0 unset), a send ring placed as the host
   * places one (sendRingAtPlacement).
   */
  | { t: 'listen'; id: number; spec: NicListenSpec; ring: number; sendRing: number }
  | { t: 'unlisten'; id: number }
  /**
   * Tests: block the worker's thread for `ms`, as a wedged NIC would; with `pool`, keep running but
   * leave a request waiting on the libuv pool for `ms`, as a TAP reader's poll for its next frame does.
   */
  | { t: 'stall'; ms: number; pool?: boolean; entered?: SharedArrayBuffer }
  /** The host no longer holds these buffers (by the numbers slabIdOf gave them): see conn-blocks' HELD. */
  | { t: 'slabs-gone'; ids: number[] }
  /**
   * Connections that closed in the worker whose blocks the host's sockets still hold with bytes
   * unread (WorkerNic's `heldClosed`): counted against the worker's capacity (NicEngine.heldClosed).
   */
  | { t: 'held-closed'; n: number };

/** A block named in a 'regrow': its buffer, its record's offset and its rings' offsets and capacities. */
export interface RegrowBlock {
  sab: SharedArrayBuffer;
  at: number;
  send: number;
  sendCapacity: number;
  recv: number;
  recvCapacity: number;
}

export type FromWorker =
  | { t: 'tx'; buf: ArrayBuffer; len: number }
  | { t: 'up'; buf: ArrayBuffer; len: number }
  | { t: 'host-carrier'; up: boolean }
  | WorkerReply
  | { t: 'res'; id: number; ok: false; error: WireError }
  | WorkerIndication
  | { t: 'ev'; list: number[]; errors: (WireError | null)[] }
  | { t: 'freed'; slots: number[] }
  | { t: 'hb'; at: number }
  /** pcap records (whole ones; the first chunk starts with the file header). */
  | { t: 'cap'; buf: ArrayBuffer }
  /**
   * The hands channel with the worker of records `owner` closed (that worker stopped): nothing
   * more will come over it, so no move it had not handed yet will be installed here.
   */
  | { t: 'hands-closed'; owner: number }
  /** The connection in `slot` is held by its send ring: the worker asks for one of `capacity`. */
  | { t: 'grow'; slot: number; capacity: number }
  /** The connection in `slot` runs on the block a 'regrow' named (`ok`), or was gone (not `ok`). */
  | { t: 'grown'; slot: number; ok: boolean }
  /**
   * A connection the worker's listener `id` accepted (its handshake done), installed in a slot on
   * shared memory the worker allocated: `packed` as an initiate's answer of one connection;
   * `entries`: [arena, entry] pairs of those whose blocks a born arena lists (born-arena.ts).
   */
  | { t: 'born'; id: number; packed: PackedInitiate; entries: number[] }
  /** Memory the worker will cut accepted connections' blocks from, with their index (born-arena.ts). */
  | { t: 'born-arena'; no: number; sab: SharedArrayBuffer }
  | { t: 'closed' };

/** Reached only if a union above gained a member its handler does not know. */
export function unhandled(x: never, what: string): never {
  throw new WorkerProtocolError(`unhandled ${what}: ${JSON.stringify((x as { t?: unknown }).t ?? x)}`);
}

// ---- checking what comes from the worker ---------------------------------------------------------

/**
 * A message from a worker that does not have the shape of any `FromWorker`: refused (and counted)
 * by the host side, never acted on. A worker is our own code, but it runs what a peer sends it and
 * a corrupted or half-upgraded one must not be able to crash the host or feed it garbage.
 */
export class WorkerProtocolError extends ChimneyError {
  constructor(message: string) {
    super('ERR_CHIMNEY_WORKER_PROTOCOL', message);
  }
}

type Rec = Record<string, unknown>;

function isRec(x: unknown): x is Rec {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}
function isU32(x: unknown): x is number {
  return typeof x === 'number' && Number.isInteger(x) && x >= 0 && x <= 0xffffffff;
}
function isSlot(x: unknown): x is number {
  return typeof x === 'number' && Number.isInteger(x) && x >= -1 && x < 1 << 23;
}
/**
 * An IPv4 address as a number (signed or not: both name the same address, see connKeyId), or an
 * IPv6 address handle in (2^32, 2^37): the worker's table mirrors the host's numbering.
 */
function isAddr(x: unknown): x is number {
  return (
    typeof x === 'number' &&
    Number.isInteger(x) &&
    x >= -0x80000000 &&
    (x <= 0xffffffff || (x > 0x1_0000_0000 && x < 2 ** 37))
  );
}
function isPort(x: unknown): x is number {
  return typeof x === 'number' && Number.isInteger(x) && x >= 0 && x <= 0xffff;
}
function isKey(x: unknown): x is ConnKey {
  return isRec(x) && isAddr(x.localIp) && isPort(x.localPort) && isAddr(x.remoteIp) && isPort(x.remotePort);
}
function isFrames(m: Rec): boolean {
  return m.buf instanceof ArrayBuffer && isU32(m.len) && m.len <= m.buf.byteLength;
}
function isWireError(x: unknown): x is WireError {
  return (
    isRec(x) &&
    typeof x.name === 'string' &&
    typeof x.code === 'string' &&
    typeof x.message === 'string' &&
    (x.field === undefined || typeof x.field === 'string') &&
    (x.errno === undefined || typeof x.errno === 'string')
  );
}
function isSlots(x: unknown): x is number[] {
  return Array.isArray(x) && x.every(isSlot);
}
function isPackedBlocks(x: unknown): x is PackedBlocks {
  return (
    isRec(x) &&
    Array.isArray(x.sabs) &&
    x.sabs.every((b) => b instanceof SharedArrayBuffer) &&
    (x.ids === undefined || (x.ids instanceof Float64Array && x.ids.length === x.sabs.length)) &&
    x.keys instanceof Uint32Array &&
    x.words instanceof Int32Array
  );
}

const INITIATE_STATUS: ReadonlySet<unknown> = new Set<InitiateResult['status']>([
  'success',
  'partial',
  'failure',
  'no-resources',
]);

/** Every reason a worker may give: a `Record` so that a reason added to the type must be added here. */
const UPLOAD_REASONS: Record<UploadReason, true> = {
  'hardware-failure': true,
  'invalid-state': true,
  'urgent-data': true,
  timeout: true,
  'upload-requested': true,
  resources: true,
  'high-drop-rate': true,
  'high-fragmentation': true,
  'out-of-order': true,
  'low-activity': true,
  'no-buffer': true,
  'small-io': true,
};

/** The shape of each verb's answer (deeper checks where it is unpacked: transfer-wire.ts, the codec). */
const REPLY_CHECKS: { [O in WorkerOp]: (m: Rec) => boolean } = {
  initiate: (m) => {
    const v = m.value;
    return (
      isRec(v) &&
      INITIATE_STATUS.has(v.status) &&
      (v.reason === undefined || typeof v.reason === 'string') &&
      v.keys instanceof Uint32Array &&
      v.codes instanceof Uint8Array &&
      (v.reasons === null || (Array.isArray(v.reasons) && v.reasons.every((r) => typeof r === 'string'))) &&
      isPackedBlocks(v.installed) &&
      v.slots instanceof Int32Array &&
      m.installed === v.installed
    );
  },
  // Trees are objects of the host's thread: a worker's answer carrying any is refused.
  terminate: (m) =>
    m.value instanceof Uint8Array &&
    m.trees === undefined &&
    isSlots(m.freed) &&
    isSlots(m.moved) &&
    (m.records === undefined || typeof m.records === 'boolean'),
  update: (m) => m.value === undefined,
  invalidate: (m) => m.value === undefined,
  query: (m) => Array.isArray(m.value) && m.value.every((q) => isRec(q) && isKey(q.key)),
  progressScan: (m) => m.value instanceof Float64Array && m.value.length % SCAN.columns === 0,
  takeQueued: (m) => Array.isArray(m.value) && m.value.every((p) => p instanceof Uint8Array),
  dropFrozen: (m) => m.value === undefined,
  counters: (m) => isRec(m.value) && Object.values(m.value).every((n) => typeof n === 'number'),
};

function isOp(x: unknown): x is WorkerOp {
  return typeof x === 'string' && Object.hasOwn(REPLY_CHECKS, x);
}

/** Each indication's arguments (after its name). */
const IND_CHECKS: { [E in EngineIndication]: (a: unknown[]) => boolean } = {
  'upload-requested': (a) =>
    a.length === 2 &&
    Array.isArray(a[0]) &&
    a[0].every(isKey) &&
    typeof a[1] === 'string' &&
    Object.hasOwn(UPLOAD_REASONS, a[1]),
  abort: (a) => a.length === 1 && isKey(a[0]),
  closed: (a) => a.length === 1 && isKey(a[0]),
  link: (a) =>
    (a.length === 1 || a.length === 2) &&
    typeof a[0] === 'boolean' &&
    (a[1] === undefined || (typeof a[1] === 'number' && Number.isFinite(a[1]))),
  reachability: (a) =>
    typeof a[1] === 'number' &&
    Number.isFinite(a[1]) &&
    ((a.length === 2 && isAddr(a[0])) ||
      // An IPv6 neighbor: its bytes and VLAN.
      (a.length === 4 &&
        a[0] === 0 &&
        a[2] instanceof Uint8Array &&
        a[2].length === 16 &&
        Number.isInteger(a[3]) &&
        (a[3] as number) >= -1 &&
        (a[3] as number) <= 4094)),
};

function isIndication(x: unknown): x is EngineIndication {
  return typeof x === 'string' && Object.hasOwn(IND_CHECKS, x);
}

function isEvents(m: Rec): boolean {
  const list = m.list;
  const errors = m.errors;
  if (!Array.isArray(list) || !Array.isArray(errors) || list.length % 2 !== 0) return false;
  if (errors.length !== list.length / 2) return false;
  for (let i = 0; i < list.length; i += 2) {
    if (!isSlot(list[i]) || !isU32(list[i + 1])) return false;
  }
  return errors.every((e) => e === null || isWireError(e));
}

/**
 * A value from a malformed message, for an error text: never through its own `toString` (an object
 * whose `toString` is not a function makes `String()` throw a TypeError instead of the refusal).
 */
function describe(x: unknown): string {
  return typeof x === 'string'
    ? JSON.stringify(x)
    : typeof x === 'object' && x !== null
      ? 'an object'
      : typeof x;
}

/**
 * Check what a worker posted, field by field, against `FromWorker`: a `WorkerProtocolError` if it
 * is not one. An answer's value is checked against the verb it answers (`opOf`: the verb of the
 * request in flight with that id); an answer to no request in flight (one given up on: the NIC
 * closed) is checked for its shape only, and its receiver drops it.
 */
export function checkFromWorker(
  m: unknown,
  opOf: (id: number) => WorkerOp | undefined,
): asserts m is FromWorker {
  if (!isRec(m) || typeof m.t !== 'string') throw new WorkerProtocolError('a message without a type');
  const t = m.t;
  const bad = (why: string): never => {
    throw new WorkerProtocolError(`malformed '${t}' message: ${why}`);
  };
  switch (t) {
    case 'tx':
    case 'up':
      if (!isFrames(m)) bad('not a frame batch');
      return;
    case 'host-carrier':
      if (typeof m.up !== 'boolean') bad('carrier is not a boolean');
      return;
    case 'res': {
      if (!isU32(m.id)) bad('no request id');
      if (m.ok === false) {
        if (!isWireError(m.error)) bad('an error without name, code and message');
        return;
      }
      const op = m.op;
      if (m.ok !== true) bad('neither ok nor failed');
      else if (!isOp(op)) bad(`answers an unknown verb ${describe(op)}`);
      else {
        const asked = typeof m.id === 'number' ? opOf(m.id) : undefined;
        if (asked !== undefined && asked !== op) bad(`answers '${op}' to a '${asked}' request`);
        else if (!REPLY_CHECKS[op](m)) bad(`not the shape of a '${op}' answer`);
      }
      return;
    }
    case 'ind': {
      const ind: unknown = m.ind;
      if (!Array.isArray(ind)) bad('not an indication');
      else {
        const event: unknown = ind[0];
        if (!isIndication(event)) bad(`unknown indication ${describe(event)}`);
        else if (!IND_CHECKS[event](ind.slice(1))) bad(`bad arguments for '${event}'`);
      }
      return;
    }
    case 'ev':
      if (!isEvents(m)) bad('events are not [slot, bits] pairs with one error each');
      return;
    case 'freed':
      if (!isSlots(m.slots)) bad('slots are not slot numbers');
      return;
    case 'hb':
      if (typeof m.at !== 'number') bad('no time');
      return;
    case 'cap':
      if (!(m.buf instanceof ArrayBuffer)) bad('no buffer');
      return;
    case 'hands-closed':
      if (!isU32(m.owner)) bad('no owner');
      return;
    case 'grow':
      if (!isSlot(m.slot) || !isU32(m.capacity)) bad('no slot or capacity');
      return;
    case 'grown':
      if (!isSlot(m.slot) || typeof m.ok !== 'boolean') bad('no slot or outcome');
      return;
    case 'born':
      // An initiate's answer of one connection, whatever its other fields (unpackInitiate checks the rest).
      if (
        !isU32(m.id) ||
        !REPLY_CHECKS.initiate({ value: m.packed, installed: (m.packed as Rec)?.installed })
      )
        bad('no listener id, or not an installed connection');
      if (!Array.isArray(m.entries) || m.entries.length % 2 !== 0 || !m.entries.every(isU32))
        bad('arena entries are not [arena, entry] pairs');
      return;
    case 'born-arena':
      if (!isU32(m.no) || !(m.sab instanceof SharedArrayBuffer)) bad('no arena number or buffer');
      return;
    case 'closed':
      return;
    default:
      bad('unknown type');
  }
}

export type InitiateReply = InitiateResult;

/**
 * What crosses the channel between two workers of a team: frames of each other's connections;
 * and, behind every frame this worker handed over before it, the word that a batch the other
 * handed here (its hand `seq`) is installed (HandsMessage 'installed'). A worker that handed a
 * batch to a third asks each other peer to send on what it forwarded here ('drain' `id`): the
 * answer ('drained' `id`) comes behind every such frame, and no frame of the batch's connections
 * comes here after it (they are off this worker's owner table by then).
 */
export type PeerMessage =
  | { t: 'fwd'; buf: ArrayBuffer; len: number }
  | { t: 'installed'; seq: number }
  | { t: 'drain'; id: number }
  | { t: 'drained'; id: number };

/**
 * What crosses a hands channel: a batch another worker released for this one, as an initiate by
 * records (the records in `blocks` offered to `owner`, this worker's number), answered to the
 * host as its request `id` (the host registered it with this worker's transport, unsent).
 */
export type HandMessage = {
  t: 'hand';
  id: number;
  batch: Uint8Array;
  blocks: PackedBlocks;
  owner: number;
  prod: boolean;
  /**
   * The source's number for this hand on the channel, when the two workers are peers: the
   * destination holds the batch's input until the source says 'through' for it (see HandsMessage);
   * 0 when they are not.
   */
  seq: number;
  /** Segments the source held for the batch's connections (IP packets): run first, in order. */
  packets?: Uint8Array[];
};

/**
 * What crosses a hands channel, in order (one channel, so one order): a hand; the frames the
 * source received for a connection it handed, after the hand ('fwd'); from the destination, that
 * hand `seq` is installed ('installed', when the two are not peers: peers send it on the peer
 * channel, behind the frames the destination forwarded to the source before it); from the
 * source, that every frame of hand `seq` it had went ahead ('through').
 */
export type HandsMessage =
  | HandMessage
  | { t: 'fwd'; buf: ArrayBuffer; len: number }
  | { t: 'installed'; seq: number }
  | { t: 'through'; seq: number };

// ---- frame batches -------------------------------------------------------------------------------

const INITIAL_BATCH = 64 * 1024;

/**
 * Packs frames into one buffer to be transferred whole at the end of the turn, or sooner when the
 * next frame does not fit. A fresh buffer follows each flush: the old one now belongs to the other
 * thread.
 *
 * A batch posted from within `push` holds only frames pushed before: the worker publishes the hard
 * state of what a batch carries as it posts it, and a frame whose sender has not yet returned from
 * handing it over is not reflected in that state (see the worker's ProxyLink).
 */
export class FrameBatcher {
  private buf = new Uint8Array(INITIAL_BATCH);
  private dv = new DataView(this.buf.buffer);
  private off = 0;
  private scheduled = false;
  frames = 0;

  constructor(
    private readonly post: (buf: ArrayBuffer, len: number) => void,
    private readonly schedule: (cb: () => void) => void,
  ) {}

  /** Frames pushed and not yet posted. */
  get pending(): boolean {
    return this.off > 0;
  }

  push(frame: Uint8Array): void {
    const need = 4 + frame.length;
    if (this.off + need > this.buf.length) {
      if (this.off > 0) this.flush();
      if (need > this.buf.length) {
        this.buf = new Uint8Array(need);
        this.dv = new DataView(this.buf.buffer);
      }
    }
    this.dv.setUint32(this.off, frame.length);
    this.buf.set(frame, this.off + 4);
    this.off += need;
    this.frames++;
    if (!this.scheduled) {
      this.scheduled = true;
      this.schedule(this.flushLater);
    }
  }

  private readonly flushLater = (): void => {
    this.scheduled = false;
    this.flush();
  };

  flush(): void {
    if (this.off === 0) return;
    const len = this.off;
    const out = this.buf.buffer;
    this.buf = new Uint8Array(INITIAL_BATCH);
    this.dv = new DataView(this.buf.buffer);
    this.off = 0;
    this.post(out, len);
  }
}

/** Call `fn` for every frame of a batch; a malformed batch stops at the first bad length. */
export function forEachFrame(buf: ArrayBuffer, len: number, fn: (frame: Uint8Array) => void): number {
  const bytes = new Uint8Array(buf, 0, Math.min(len, buf.byteLength));
  const dv = new DataView(buf, 0, bytes.length);
  let off = 0;
  let n = 0;
  while (off + 4 <= bytes.length) {
    const flen = dv.getUint32(off);
    if (off + 4 + flen > bytes.length) return -1;
    fn(bytes.subarray(off + 4, off + 4 + flen));
    off += 4 + flen;
    n++;
  }
  return n;
}
