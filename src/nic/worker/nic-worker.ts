/*
 * The worker thread of a WorkerNic: a NicEngine on wall-clock time, its link (a proxy of a
 * main-thread switch port, or a TAP device it opens itself), and the glue that makes its
 * connections' payload live in shared rings the application thread reads and writes directly.
 */
import { appendFileSync, closeSync, open, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { getHeapStatistics } from 'node:v8';
import { type MessagePort, parentPort, threadId, workerData } from 'node:worker_threads';
import { RealClock, type Timer } from '../../core/clock.ts';
import {
  ChimneyError,
  ConnectionError,
  InvalidArgumentError,
  InvalidStateError,
  StateValidationError,
} from '../../core/errors.ts';
import { watchLoopBlocks } from '../../core/loop-blocks.ts';
import { SeededRandom } from '../../core/random.ts';
import type { Link, LinkGsoOptions, RxOffloadInfo } from '../../link/link.ts';
import { LinkWrapper } from '../../link/link-wrapper.ts';
import { capture, PcapWriter } from '../../link/pcap.ts';
import { SourceSteer } from '../../link/source-steer.ts';
import type { TapHeld, TapLink, TapLinkOptions } from '../../link/tap-link.ts';
import { loadLibc } from '../../link/tap-sys.ts';
import { AddressFinder, AddressTable, TWO_32 } from '../../stack/address-table.ts';
import { seqDiff } from '../../stack/tcp/seq.ts';
import type { TcpConnection } from '../../stack/tcp/tcp-connection.ts';
import {
  ackAfterRead,
  canReceive,
  deliverEvents,
  isSynchronized,
  kick,
  OUTPUT_BUDGET_BYTES,
  OUTPUT_TURN_BUDGET_BYTES,
} from '../../stack/tcp/tcp-drive.ts';
import { maybeGrowSendRing } from '../../stack/tcp/tcp-mem.ts';
import { sendStateAck, tsNow } from '../../stack/tcp/tcp-output.ts';
import type { TcpUser } from '../../stack/tcp/tcp-types.ts';
import { rcvMss, windowClamp } from '../../stack/tcp/tcp-window.ts';
import { ByteRing } from '../../state/byte-ring.ts';
import type { NeighborState } from '../../state/neighbor-state.ts';
import type { OffloadTree } from '../../state/offload-tree.ts';
import type { PathState } from '../../state/path-state.ts';
import { sharedRingAdvance, sharedRingPositions } from '../../state/shared-ring.ts';
import { encodeBatch } from '../../state/state-codec.ts';
import { type TcpState, TcpStateId } from '../../state/tcp-state.ts';
import { validateAckOn, validateConnOn, validateTrees } from '../../state/validate.ts';
import { EtherType } from '../../wire/ethernet.ts';
import { ethL3Offset, ethType, ipv4HeaderLen, ipv4IsFragment, ipv4Proto } from '../../wire/fields.ts';
import { IpProto } from '../../wire/ipv4.ts';
import { Ipv6Next } from '../../wire/ipv6.ts';
import { type EngineVerbHooks, isEngineVerb, serveEngineVerb } from '../engine-verbs.ts';
import {
  allocConnBlock,
  CONN_SLAB_BYTES,
  type ConnBlockRef,
  connRingCapacities,
  goneBlock,
  HardStateRecord,
  ringUnderLoad,
  sendRingAtPlacement,
} from '../hard-state.ts';
import { type ConnKey, connKeyId, type InitiateResult, keyOfState, sameConnKey } from '../nic.ts';
import { type LazyConn, type LazyTake, NicEngine, namedTwice, type PathSlot } from '../nic-engine.ts';
import { OWNER_HOST, splitForRecords, type TransferRecord } from '../transfer-record.ts';
import { TupleMap } from '../tuple-map.ts';
import { BatchKeys } from './batch-keys.ts';
import { BornArenas, type BornCut } from './born-arena.ts';
import {
  aliveSlabs,
  type BlockParts,
  blockOfRings,
  blockParts,
  canonicalSlab,
  dropSlabs,
  heldSlabs,
  knownBlock,
  partsCount,
  sameBlock,
} from './conn-blocks.ts';
import { ConnIndex } from './conn-index.ts';
import {
  HandedOn,
  type HandsLink,
  HeldIn,
  TUPLE_READ,
  TUPLE_UNKNOWN,
  tcpTuple,
  tuple,
} from './hand-order.ts';
import { OwnerTable } from './owner-table.ts';
import {
  BELL_READ,
  BELL_WANT_ACKED,
  BELL_WANT_WRITABLE,
  BELL_WROTE,
  CAP_DROPPED,
  CAP_IN_FLIGHT,
  CAP_LIMIT,
  DB_BEAT,
  DB_BELL,
  DB_BUSY,
  DB_DRAIN_AT,
  DB_DRAINS,
  DB_HEAD,
  DB_HOST_SENT,
  DB_QUEUE,
  DB_RX,
  DB_RX_SINCE,
  DB_STOP,
  DB_TAIL,
  DB_TAP_FD,
  DB_UP,
  doorbellFlagsAt,
  doorbellQuietAt,
  EV_BLOCK_GONE,
  EV_CLOSED,
  EV_READABLE,
  EV_REMOTE_END,
  EV_SEND_DRY,
  EV_WRITABLE,
  FrameBatcher,
  type FromWorker,
  forEachFrame,
  type HandMessage,
  type HandsMessage,
  type InstalledConn,
  type PeerMessage,
  publishTapHeld,
  type RegrowBlock,
  realStamp,
  stampOf,
  type ToWorker,
  unhandled,
  type WireError,
  type WorkerBoot,
  type WorkerRequest,
} from './protocol.ts';
import { type AheadHooks, publishAhead } from './publish-ahead.ts';
import {
  forEachPackedKey,
  type PackedBlocks,
  type PackedInitiate,
  packBlocks,
  packInitiate,
  unpackBlocks,
  unpackKeys,
  unpackKnownKeys,
  unpackParts,
} from './transfer-wire.ts';

const port = parentPort as MessagePort;
const boot = workerData as WorkerBoot;

/**
 * DB_BUSY's word: 1 from the start of each turn of this thread's own JavaScript to the loop's next
 * check phase (its microtasks included), so the host, once it has called `terminate()`, can tell a
 * thread that will never write shared memory again (0) from one that may still be writing (1).
 * Set at every entry (enterUnit): the messages of its ports, its clock's timers and deferred calls
 * (the engine's, the TAP's and the capture's all go through `clock`), the bell's wake-up. The boot
 * is one unit, from here to the end of this module. Callbacks that write no shared memory (a pool
 * poll's end, which only closes descriptors or defers) need none.
 */
const unitWords = new Int32Array(boot.doorbell);
let unitOpen = true;
Atomics.store(unitWords, DB_BUSY, 1);

function endUnit(): void {
  unitOpen = false;
  Atomics.store(unitWords, DB_BUSY, 0);
  bellAfterUnit();
}

/**
 * DB_BUSY is stored, then DB_STOP read, before the turn's first write of shared memory; the host
 * stores DB_STOP, then reads DB_BUSY. All four are sequentially consistent, so at least one side
 * sees the other's store: a host that read 0 (and took the thread for stopped) is seen here, and
 * this turn then writes nothing and waits for the termination (each wait's return passes a loop
 * back-edge, where V8 stops a terminated thread).
 */
function enterUnit(): void {
  if (unitOpen) return;
  unitOpen = true;
  Atomics.store(unitWords, DB_BUSY, 1);
  if (Atomics.load(unitWords, DB_STOP) !== 0) for (;;) Atomics.wait(unitWords, DB_STOP, 1, 10);
  setImmediate(endUnit);
}

/** The thread's clock, every callback of it a unit of work (enterUnit). */
class UnitClock extends RealClock {
  override createTimer(cb: () => void): Timer {
    return super.createTimer(() => {
      enterUnit();
      cb();
    });
  }
  override defer(cb: () => void): void {
    super.defer(() => {
      enterUnit();
      cb();
    });
  }
}
const clock = new UnitClock();
nameThread(boot.id);
// A test's hold on this thread's exit (WorkerNicTestSeams.exitHeldBy): the open waits on the pool.
if (boot.exitHeldBy !== undefined)
  open(boot.exitHeldBy, 'r', (e, fd) => {
    if (e === null) closeSync(fd);
  });

/**
 * Give this thread the NIC's name (Linux: the kernel's `comm`, 15 bytes at most), so that a
 * NIC's worker can be told from the V8 and libuv threads beside it in `top -H`, `ps -L` and
 * /proc/PID/task/*: every thread of a Node process is otherwise called "node", and what a
 * stalled download waits for is often which thread of serve's holds a core (test/interop/tap-load.ts).
 */
function nameThread(name: string): void {
  try {
    writeFileSync('/proc/thread-self/comm', Buffer.from(name).subarray(0, 15));
  } catch {
    // No /proc (not Linux), or a kernel that refuses: the name is only a diagnostic.
  }
}
const requestTrace = traceWorkerThread();
const writeProfile = profileWorkerThread();

/**
 * Diagnostic (CHIMNEY_WORKER_CPU_PROF=FILE): a CPU profile of this worker, written to
 * FILE.w<threadId> at 'close' (serve's CHIMNEY_CPU_PROF covers only its main thread, and
 * `--cpu-prof` in NODE_OPTIONS is refused), to see what a worker spends its turns on in a burst.
 */
function profileWorkerThread(): (() => void) | null {
  const file = process.env.CHIMNEY_WORKER_CPU_PROF;
  if (!file) return null;
  const session = new Session();
  session.connect();
  session.post('Profiler.setSamplingInterval', { interval: 500 });
  session.post('Profiler.enable');
  session.post('Profiler.start');
  return () =>
    session.post('Profiler.stop', (_e, r) => {
      if (r) writeFileSync(`${file}.w${threadId}`, JSON.stringify(r.profile));
    });
}

/**
 * Diagnostic (CHIMNEY_LAG_LOG=FILE, as for serve's main thread): every block of this worker's event
 * loop of 20 ms or more, in epoch ms, with the requests handled in it (op, connections, ms),
 * appended to FILE.w<threadId> as it happens (a worker may be terminated, so nothing waits for an
 * exit), to line up with the stalls a client saw.
 */
function traceWorkerThread(): ((op: string, n: number, ms: number) => void) | null {
  const file = process.env.CHIMNEY_LAG_LOG;
  if (!file) return null;
  const out = `${file}.w${threadId}`;
  let handled: [string, number, number][] = [];
  watchLoopBlocks(
    (from, to) => appendFileSync(out, `${JSON.stringify({ from, to, handled })}\n`),
    () => {
      handled = [];
    },
  );
  return (op, n, ms) => handled.push([op, n, Math.round(ms)]);
}

function post(m: FromWorker, transfer?: ArrayBuffer[]): void {
  // Every message keeps its place behind the connections born before it (their events name them).
  if (bornOf.size > 0 && m.t !== 'born') postBorn();
  // An answer goes behind every frame passed up before it. The up batch is posted at the end of
  // the turn, and a loaded thread handles a request in the same turn as the batches of frames
  // queued ahead of it: the answer overtook those frames, so the host learnt of an install before
  // the segments this thread passed up while it did not yet run the connection, and read counters
  // that had counted frames it had not yet received (the placeholder then forwarded 41 of them
  // right after a baseline that claimed them, in worker-direct.test.ts).
  if (m.t === 'res') upBatch.flush();
  port.postMessage(m, transfer);
}

function wireError(e: unknown): WireError {
  if (e instanceof ChimneyError) {
    const out: WireError = { name: e.name, code: e.code, message: e.message };
    if (e instanceof StateValidationError) out.field = e.field;
    // The wire names the errno (the receiving side numbers it again).
    if (e instanceof ConnectionError) out.errno = e.code;
    return out;
  }
  return { name: 'Error', code: 'ERR_CHIMNEY_WORKER', message: e instanceof Error ? e.message : String(e) };
}

// ---- the link ------------------------------------------------------------------------------------

/**
 * The engine's receive handler, as installed on the link: frames another worker of the team sends
 * here run through it as if this link had received them (without counting as the link's own
 * proof of life).
 */
let runHere: ((frame: Uint8Array, info?: RxOffloadInfo) => void) | null = null;

/**
 * Frames this thread sends from the team's MAC leave from this member's own while the host says so
 * (Nic.sendFrom: every member but the one that carries the host's traffic), so the switch never
 * learns the team MAC here.
 */
const steer = new SourceSteer();

/** The worker's face of a main-thread link: frames cross in batches. */
class ProxyLink implements Link {
  handler: ((frame: Uint8Array) => void) | null = null;
  carrierHandler: ((up: boolean) => void) | null = null;
  // Hard state goes out before the frames do: a record published after them could, if the worker
  // died in between, trail what the peer already received, and the peer's ACKs for those bytes
  // would look "too new" to the connection rebuilt from it (RFC 5961: dropped), stalling it.
  private readonly out = new FrameBatcher(
    (buf, len) => {
      publishRecords();
      post({ t: 'tx', buf, len }, [buf]);
    },
    (cb) => clock.defer(cb),
  );
  constructor(
    readonly name: string,
    readonly mtu: number,
    public carrier: boolean,
  ) {}
  send(frame: Uint8Array): boolean {
    if (!this.carrier) return false;
    steer.apply(frame);
    this.out.push(frame);
    // After the push: a push that posts the earlier frames publishes and forgets every touched
    // record, and this frame's connection must stay marked for the batch that carries it.
    noteTx(frame);
    return true;
  }
  onFrame(handler: (frame: Uint8Array) => void): void {
    this.handler = handler;
    runHere = handler;
  }
  onCarrier(handler: (up: boolean) => void): void {
    this.carrierHandler = handler;
  }
  setCarrier(up: boolean): void {
    if (up === this.carrier) return;
    this.carrier = up;
    this.carrierHandler?.(up);
  }
  flush(): void {
    this.out.flush();
  }
  close(): void {
    this.flush();
    this.handler = null;
  }
}

/**
 * A link this thread opened itself (a TAP): every frame it receives is counted in shared memory
 * and marks the connection it is for, as the 'rx' batches of a proxied link do; every frame it
 * sends first has its connection's record publish the new snd.max (see publishAhead).
 */
/** The worker's TAP, and its rxSince as last published (DB_RX_SINCE). */
let tapLink: TapLink | null = null;
let publishedSince = 0;

class ObservedLink extends LinkWrapper {
  override send(frame: Uint8Array): boolean {
    publishAhead(frame, aheadHooks);
    steer.apply(frame);
    return this.inner.send(frame);
  }
  protected override sendOffloaded(frame: Uint8Array, o: LinkGsoOptions): boolean {
    publishAhead(frame, aheadHooks);
    steer.apply(frame);
    return this.inner.sendGso!(frame, o);
  }
  override onFrame(handler: (frame: Uint8Array, info?: RxOffloadInfo) => void): void {
    runHere = handler;
    this.inner.onFrame((frame, info) => {
      if (tapLink !== null && tapLink.rxSince !== publishedSince) {
        publishedSince = tapLink.rxSince;
        Atomics.store(db, DB_RX_SINCE, stampOf(publishedSince));
      }
      Atomics.add(db, DB_RX, 1);
      progress();
      if ((heldIn.size === 0 || !heldIn.offer(frame, info, false)) && !noteFrame(frame, info, false))
        handler(frame, info);
    });
  }
}

/**
 * Capture on this thread's own link: records cross to the main thread's writer once per turn, up
 * to CAP_LIMIT bytes in flight; past that, frames are counted as dropped, not queued without bound.
 */
class CapturePipe extends PcapWriter {
  private readonly words: Int32Array;
  private scheduled = false;
  constructor(sab: SharedArrayBuffer) {
    super(
      {
        write: (chunk) => {
          Atomics.add(this.words, CAP_IN_FLIGHT, chunk.length);
          post({ t: 'cap', buf: chunk.buffer as ArrayBuffer }, [chunk.buffer as ArrayBuffer]);
        },
      },
      { clock, epochMs: Date.now() - clock.now(), bufferBytes: 256 * 1024 },
    );
    this.words = new Int32Array(sab);
  }
  override writeFrame(frame: Uint8Array, atMs?: number): void {
    if (Atomics.load(this.words, CAP_IN_FLIGHT) > CAP_LIMIT) {
      Atomics.add(this.words, CAP_DROPPED, 1);
      return;
    }
    super.writeFrame(frame, atMs);
    if (!this.scheduled) {
      this.scheduled = true;
      clock.defer(this.flushTurn);
    }
  }
  private readonly flushTurn = (): void => {
    this.scheduled = false;
    this.flush();
  };
}

const capturePipe = boot.capture ? new CapturePipe(boot.capture) : null;

/** What the TAP still holds while it closes (see TapLink.onRelease), and who waits for none. */
let tapLeft = 0;
let whenTapReleased: (() => void) | null = null;

/** Block the thread for `ms` (tests: a wedged worker, or one slow between two messages). */
function pauseThread(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Count a stop in word 0 of `gate` and wait until word 1 reaches it (see WorkerNicTestSeams.handGate). */
function waitAtGate(gate: SharedArrayBuffer): void {
  const w = new Int32Array(gate);
  const stop = Atomics.add(w, 0, 1) + 1;
  Atomics.notify(w, 0);
  const until = Date.now() + 30_000;
  for (let open = Atomics.load(w, 1); open < stop && Date.now() < until; open = Atomics.load(w, 1))
    Atomics.wait(w, 1, open, until - Date.now());
}

/** Say so in word 0 of `flag`, and wait for good (see WorkerNicTestSeams.stopWhileOpening). */
function stopHere(flag: SharedArrayBuffer): void {
  const w = new Int32Array(flag);
  Atomics.store(w, 0, 1);
  Atomics.notify(w, 0);
  for (;;) Atomics.wait(w, 0, 1);
}

/**
 * Loaded, wait until the host lets this thread open its TAP (WorkerNicOptions.openWhenLet): the
 * host's own link holds the TAP meanwhile, and a second open of it is refused (EBUSY). Waited in
 * the event loop, so the thread's timers (its beats) run meanwhile.
 */
async function waitToOpen(gate: Int32Array): Promise<void> {
  Atomics.store(gate, 0, 1);
  Atomics.notify(gate, 0);
  while (Atomics.load(gate, 1) === 0) {
    const w = waitAsync(gate, 1, 0);
    if (w.async) await w.value;
  }
}

/** Atomics.waitAsync, which the TypeScript library in use does not declare. */
function waitAsync(a: Int32Array, i: number, v: number): { async: boolean; value: Promise<string> | string } {
  return (
    Atomics as unknown as {
      waitAsync(a: Int32Array, i: number, v: number): { async: boolean; value: Promise<string> | string };
    }
  ).waitAsync(a, i, v);
}

async function openLink(): Promise<Link> {
  const l = boot.link;
  if (l.kind === 'proxy') return new ProxyLink(l.name, l.mtu, l.carrier);
  const { TapLink, TAP_FREE_BOUND_MS } = await import('../../link/tap-link.ts');
  const held = new BigInt64Array(boot.tapHeld);
  // Listed as the open makes each: killed halfway through, this thread leaves the host a list.
  const stop = boot.stopWhileOpening;
  let told = 0;
  const onHeld = (h: TapHeld): void => {
    publishTapHeld(held, h);
    if (++told === stop?.after) stopHere(stop.flag);
  };
  // 0: before the open's first step, as a kill that lands before the thread has listed anything.
  if (stop?.after === 0) stopHere(stop.flag);
  // Until the engine runs, the thread's count moves on a timer of its own: a worker that waits for
  // its TAP is alive. The watchdog keeps its start allowance until the engine runs (liveness.ts),
  // so these beats say only that the thread still turns; `deadAfterMs` holds it from then.
  const beat = clock.createTimer(() => {
    progress();
    beat.arm(boot.heartbeatMs);
  });
  beat.arm(boot.heartbeatMs);
  let tap: TapLink;
  try {
    if (boot.openGate !== undefined) await waitToOpen(new Int32Array(boot.openGate));
    const o: TapLinkOptions = { ...(l.options as TapLinkOptions), clock, onHeld };
    // A TAP that must exist is a restart's, whose last reader (the host, or the dead worker's
    // poll) may hold it a moment yet: tried again on the clock, the thread beating meanwhile, not
    // blocked for up to 2 s in Atomics.wait. Past the bound, EBUSY ends the start (a typed error
    // the host reports as the restart's failure).
    tap =
      o.create === false
        ? await TapLink.openWhenFree(o, boot.tapFreeBoundMs ?? TAP_FREE_BOUND_MS)
        : TapLink.open(o);
  } finally {
    beat.disarm();
  }
  tap.onDrain = (drains) => {
    Atomics.store(db, DB_DRAIN_AT, stampOf(tap.drainedAt));
    Atomics.store(db, DB_DRAINS, drains | 0);
  };
  Atomics.store(db, DB_DRAIN_AT, stampOf(tap.drainedAt));
  tapLink = tap;
  publishedSince = tap.rxSince;
  Atomics.store(db, DB_RX_SINCE, stampOf(publishedSince));
  Atomics.store(db, DB_TAP_FD, tap.fileDescriptor);
  tap.onRelease = (left) => {
    publishTapHeld(held, left);
    tapLeft = left.addrs.length + left.fds.length;
    if (tapLeft > 0) return;
    const then = whenTapReleased;
    whenTapReleased = null;
    // Not from inside the callback: TapLink says "nothing left" just before it closes the read end,
    // and the host may stop this thread as soon as it reads 'closed'.
    if (then !== null)
      setImmediate(() => {
        enterUnit();
        then();
      });
  };
  // Every frame of the wire, offloaded connections' included (NDIS chimney's were invisible).
  return new ObservedLink(capturePipe ? capture(tap, capturePipe) : tap);
}

// ---- connections and their shared memory ---------------------------------------------------------

interface Slot {
  index: number;
  key: ConnKey;
  conn: TcpConnection;
  block: ConnBlockRef;
  record: HardStateRecord;
  send: ByteRing;
  recv: ByteRing;
  /** The TCP state the record holds now (see publishAhead). */
  published: number;
  /**
   * The block's transfer record, once asked for (transferOf): its rings' headers were checked
   * when the block came, so a terminate writes the record without finding the parts again.
   */
  transfer: TransferRecord | null;
  /** The connection's user here: events become messages for the host. */
  user: RemoteUser;
  /** The largest send ring asked of the host for this connection (regrow), 0 for none. */
  growAsked: number;
  /** Counted in `timeWaitHeld`: TIME_WAIT_HELD, or TIME_WAIT_UNREAD as well; 0 when not. */
  timeWait: number;
}

/**
 * The slot object (with its key and user) each block last had here: a connection that comes back
 * to this worker takes it up again instead of three new objects per move, which lived until the
 * next move and so reached the old generation (a scavenge's cost is what survives it).
 */
const slotOfBlock = new WeakMap<ConnBlockRef, Slot>();

/** The transfer record of a slot's block (a block allocated here gets its parts on first ask). */
function transferOf(slot: Slot): TransferRecord {
  if (slot.transfer === null) slot.transfer = blockParts(slot.block).transfer;
  return slot.transfer;
}

/** The record of goneBlock: what a slot whose block is gone holds in place of its own. */
let goneRecord: HardStateRecord | null = null;

/**
 * A connection entering TIME_WAIT with nothing in its rings gives its block back: nothing will be
 * sent again and nothing is left to read, and the block held its 64 MB slab alive for the 60 s of
 * TIME_WAIT (under churn, a cycle's slabs). The record is written a last time (the host keeps that
 * hard state for a salvage: a TIME_WAIT is ended there, not rebuilt), then the slot and the state
 * hold rings of their own, as a host connection's released rings are (the receive ring keeps its
 * capacity: the window its ACKs advertise). With bytes unread the block stays until TIME_WAIT
 * ends: they are the application's (EndedConnection in rebuild.ts).
 */
function giveBack(slot: Slot): boolean {
  const d = slot.conn.state.delegated;
  if (d.state !== TcpStateId.TIME_WAIT || slot.block === goneBlock()) return false;
  if (d.sendBuffer.length !== 0 || d.recvBuffer.length !== 0 || slot.conn.released) return false;
  uncountTimeWait(slot);
  writeRecord(slot);
  const gone = goneBlock();
  slot.block = gone;
  slot.record = goneRecord ??= new HardStateRecord(gone.sab, gone.at);
  slot.transfer = null;
  d.sendBuffer = slot.send = new ByteRing(16, slot.send.capacity);
  d.recvBuffer = slot.recv = new ByteRing(16, slot.recv.capacity);
  touched.delete(slot);
  engine.counters.inc('nic.time-wait.given');
  return true;
}

/** Publish a connection's hard state as it is now (not one whose block is gone: see giveBack). */
function writeRecord(slot: Slot): void {
  if (slot.record === goneRecord) return;
  recordsPublished++;
  slot.record.write(slot.conn.state, slot.send.shared, slot.recv.shared);
  slot.published = slot.conn.state.delegated.state;
  Atomics.store(db, quietAt + slot.index, quietReads(slot.conn.state));
}

/** Records published (writeRecord), for counters: an idle connection's stays put. */
let recordsPublished = 0;
/** Heartbeats this worker sent, for counters: how long something stayed put, counted in beats. */
let heartbeats = 0;

/** Quiet for as long as a word of realStamp() can say (its differences are int32s): about 18 hours. */
const QUIET_LONG = 2 ** 30;

/**
 * Until when (a realStamp(); 0: not now) no read of the application's can make ringBell's
 * BELL_READ do anything: ackAfterRead's three parts, each judged without the ring's read
 * position, which is the one thing the host changes. No ACK is owed that a read would send
 * (readAckNow: more than one segment, or any for pushed segments); the window the peer sees is
 * more than half of any window selectWindow could offer, whatever the free space (so
 * windowWorthAnnouncing says no); autotuning's measure is not due (rcvSpaceAdjust returns before
 * it reads anything). Each of these changes only in this thread, and a connection is touched (its
 * word zeroed) before it changes and written again after, so a word the host reads is never
 * quieter than the connection. A read the host leaves out is seen all the same: the worker reads
 * the ring's position live at its next ACK.
 */
function quietReads(s: TcpState): number {
  const d = s.delegated;
  if (canReceive(d.state) && !d.finReceived) {
    // readAckNow: more than a segment owed, or any owed for pushed segments (once the ring empties).
    const owed = seqDiff(d.rcvNxt, d.lastAckSent);
    if (owed > 0 && (owed > rcvMss(s) || s.soft.ackPushed !== 0)) return 0;
    // selectWindow offers at most the clamp, the ring, the buffer and the window's bound,
    // whatever the free space: a window the peer sees above half of that is not worth announcing.
    const so = s.soft;
    let most = Math.min(windowClamp(s), d.recvBuffer.maxCapacity, s.cached.rcvBufSize);
    if (so.rcvSsthresh > 0 && so.rcvSsthresh < most) most = so.rcvSsthresh;
    if (2 * seqDiff(d.rcvAdv, d.rcvNxt) <= most) return 0;
    if (so.rcvClamp !== 0 && so.rcvRtt !== 0) {
      // One stamp (1/16 ms) early: the host's clock rounds too.
      const left = so.rcvSpaceAt + so.rcvRtt - clock.now() - 1 / 16;
      return left > 0 ? stampOf(performance.now() + left) || 1 : 0;
    }
  }
  return (realStamp() + QUIET_LONG) | 0 || 1;
}

const slots: (Slot | undefined)[] = [];
const freeSlots: number[] = [];
const byKey = new TupleMap<Slot>(true);
/** Slots by four-tuple, to find what a frame touched without parsing it twice. */
const connIndex = new ConnIndex<Slot>(() => engine.addressBook);
const touched = new Set<Slot>();
const db = new Int32Array(boot.doorbell);
/** The connections run here, for the other workers of the team to read (see owner-table.ts). */
const owners = boot.owners ? new OwnerTable(boot.owners) : null;

/** Connections this worker handed to a peer that may not list them yet (hand-order.ts). */
const handedAway = new HandedOn(
  (k) => {
    if (!byKey.has(k) && pendingOf(k) === undefined)
      owners?.remove(k.localIp, k.localPort, k.remoteIp, k.remotePort);
  },
  () => engine.addressBook,
);

/** Input of connections a peer handed here, held until it sent on what it had for them (hand-order.ts). */
const heldIn = new HeldIn(
  clock,
  {
    run: (frame, info, peer) => {
      progress();
      if (noteFrame(frame, info, peer)) return;
      if (peer) runFromPeer(frame);
      else runHere?.(frame, info);
    },
    count: (what, n) => engine.counters.inc(`nic.hand.${what}`, n),
  },
  () => engine.addressBook,
  boot.handHoldMs,
);

/**
 * Proof of life for the watchdog on the main thread: bumped by the heartbeat timer and before each
 * unit of work (a frame, a rung slot, a connection installed, a message). A worker that is busy is
 * not dead: a long batch of work must not read as silence, as a timer that waits behind it would.
 * A thread that is stuck (a loop that makes no progress, a blocking call) bumps nothing.
 */
function progress(): void {
  Atomics.add(db, DB_BEAT, 1);
}
const flagsAt = doorbellFlagsAt(boot.capacity);
const quietAt = doorbellQuietAt(boot.capacity);
const qLen = boot.capacity + 1;

/** Events for the application thread, flushed once per turn: [slot, bits] pairs. */
let evList: number[] = [];
let evErrors: (WireError | null)[] = [];
let evScheduled = false;

function queueEvent(slot: Slot, bits: number, err: ConnectionError | null = null): void {
  evList.push(slot.index, bits);
  evErrors.push(err ? wireError(err) : null);
  if (!evScheduled) {
    evScheduled = true;
    clock.defer(flushEvents);
  }
}

/**
 * Connections here in TIME_WAIT still holding their shared block (a slot holds its block for as
 * long as it lives; `ByteRing.release` keeps a shared ring's memory), and those of them that
 * entered it with bytes the application had not read (why giveBack kept the block): under churn
 * these blocks are what keeps closed cycles' slabs alive for 60 s. Kept as slots enter TIME_WAIT
 * (countTimeWait) and leave it (free, giveBack), not found by a walk of every slot per `counters`
 * request, which a server of tens of thousands of connections polled is charged for each time.
 */
const timeWaitHeld = { blocks: 0, unread: 0 };
const TIME_WAIT_HELD = 1;
const TIME_WAIT_UNREAD = 2;

/** Count the slot if its connection waits in TIME_WAIT on its block (once; see timeWaitHeld). */
function countTimeWait(slot: Slot): void {
  if (slot.timeWait !== 0 || slot.block === goneBlock()) return;
  const d = slot.conn.state.delegated;
  if (d.state !== TcpStateId.TIME_WAIT) return;
  slot.timeWait = d.recvBuffer.length > 0 ? TIME_WAIT_HELD | TIME_WAIT_UNREAD : TIME_WAIT_HELD;
  timeWaitHeld.blocks++;
  if (slot.timeWait & TIME_WAIT_UNREAD) timeWaitHeld.unread++;
}

function uncountTimeWait(slot: Slot): void {
  if (slot.timeWait === 0) return;
  timeWaitHeld.blocks--;
  if (slot.timeWait & TIME_WAIT_UNREAD) timeWaitHeld.unread--;
  slot.timeWait = 0;
}

/** Rewrite the hard-state record of every connection touched since the last time. */
function publishRecords(): void {
  for (const s of touched) writeRecord(s);
  touched.clear();
}

function flushEvents(): void {
  evScheduled = false;
  publishRecords();
  if (evList.length === 0) return;
  post({ t: 'ev', list: evList, errors: evErrors });
  evList = [];
  evErrors = [];
}

/** touch() for a connection of the engine's, if it has a slot here. */
function touchConn(conn: TcpConnection): void {
  const slot = conn.user instanceof RemoteUser ? conn.user.slot : byKey.get(conn.state.const);
  if (slot !== undefined) touch(slot);
}

function touch(s: Slot): void {
  // Before anything of the connection changes: its reads may matter again (quietReads).
  Atomics.store(db, quietAt + s.index, 0);
  touched.add(s);
  if (!evScheduled) {
    evScheduled = true;
    clock.defer(flushEvents);
  }
}

/** Stands in for the socket on this side: every callback becomes an event for the other thread. */
class RemoteUser implements TcpUser {
  constructor(readonly slot: Slot) {}
  onConnected(): void {}
  onReadable(): void {
    touch(this.slot);
    queueEvent(this.slot, EV_READABLE);
  }
  onWritable(): void {
    queueEvent(this.slot, this.slot.conn.sendDry ? EV_WRITABLE | EV_SEND_DRY : EV_WRITABLE);
  }
  onRemoteEnd(): void {
    touch(this.slot);
    queueEvent(this.slot, EV_REMOTE_END);
  }
  onClosed(error: ConnectionError | null): void {
    touch(this.slot);
    const gone = giveBack(this.slot);
    if (!gone) countTimeWait(this.slot);
    queueEvent(this.slot, gone ? EV_CLOSED | EV_BLOCK_GONE : EV_CLOSED, error);
  }
}

/**
 * States of connections this worker released by records, by four-tuple, for their next initiate
 * here (the host moves connections back and forth between the same NICs): at most one per
 * connection this NIC can hold, the oldest let go first.
 */
const statePool = new TupleMap<TcpState>(true);

/**
 * What a pooled state holds in place of its rings: they were its block's, which the next visit
 * names again (readInto takes the block's rings). Kept, a pooled state held its block's slab: a
 * slab is freed when no block of it is referenced, so under churn (connections that never come
 * back, pooled until the pool's capacity pushes them out, in hash order) a few states of each
 * cycle held a 64 MB slab each, and with it every page its dead blocks had touched.
 */
const NO_RING = new ByteRing(16);

function poolState(key: ConnKey, s: TcpState): void {
  s.delegated.sendBuffer = NO_RING;
  s.delegated.recvBuffer = NO_RING;
  const was = statePool.get(key);
  if (was !== undefined) pooledShared -= holdsSharedRing(was);
  statePool.set(key, s);
  pooledShared += holdsSharedRing(s);
  if (statePool.size <= boot.capacity) return;
  const oldest = statePool.oldestKey();
  if (oldest !== undefined) unpool(oldest);
}

/** The pooled state of `key`, taken out of the pool; undefined when none is pooled. */
function unpool(key: ConnKey): TcpState | undefined {
  const s = statePool.get(key);
  if (s === undefined) return undefined;
  statePool.delete(key);
  pooledShared -= holdsSharedRing(s);
  return s;
}

/**
 * Pooled states still holding a shared ring (none while poolState swaps them for NO_RING), counted
 * as states enter and leave the pool rather than by a walk of the pool at each `counters` request.
 * A pooled state's rings do not change while it is pooled, so it counts the same going out as in.
 */
let pooledShared = 0;

function holdsSharedRing(s: TcpState): number {
  const d = s.delegated;
  return d.sendBuffer.shared !== null || d.recvBuffer.shared !== null ? 1 : 0;
}

/**
 * The connections of an initiate by records: each block's transfer record (but those of the
 * connections the batch carried), offered to this NIC, read over the block's rings into the path
 * it names, and the whole batch validated as the codec's decoder validates it (validateTrees:
 * every state's fields and rules, addresses against the path, no connection twice). Throws before
 * anything is installed; nothing is taken yet. One pass over the batch's keys and parts side by
 * side (unpackParts), indexed by place in `recordBatch` for the rest of the request.
 */
function fillFromRecords(
  trees: OffloadTree[],
  packed: PackedBlocks,
  owner: number,
  lazy: (Pending[] | undefined)[] | null,
  prod: boolean,
): void {
  const { keys, parts: all } = unpackParts(packed, engine.addressBook);
  recordBatch.parts = all;
  if (recordBatch.keys.reset(keys) >= 0) throw new StateValidationError('blocks', 'a connection named twice');
  const nodes = trees.flatMap((t) => t.paths);
  // Connections the batch carried itself (what a record cannot hold) have a block but no record.
  // Usually none: no table then (one a part of every move).
  let decoded: TupleMap<true> | null = null;
  for (const node of nodes) for (const s of node.conns) (decoded ??= new TupleMap<true>()).set(s.const, true);
  const now = clock.now();
  let n = 0;
  let pooled = 0;
  let unbuilt = 0;
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    if (decoded?.has(key) === true) continue;
    const parts = all[i]!;
    const b = parts.block;
    const rec = parts.transfer;
    if (rec.owner !== -owner) throw new StateValidationError('owner', 'record not offered to this NIC');
    const node = nodes[rec.pathIndex];
    if (node === undefined)
      throw new StateValidationError('path', `path index ${rec.pathIndex} outside the batch`);
    if (lazy !== null && mayTakeUnbuilt(key, parts, node.path, prod)) {
      (lazy[rec.pathIndex] ??= []).push({
        key,
        block: b,
        parts,
        path: null,
        index: -1,
        takenAt: now,
        prod,
        echoFloor: -1,
        waiting: null,
        namedBy: 0,
        awaitsSettle: false,
      });
      unbuilt++;
      continue;
    }
    // Only a connection read now is installed by this request (a pending one keeps its parts).
    batchParts.set(b, parts);
    n++;
    const send = parts.send;
    const recv = parts.recv;
    // A state this connection left here before is filled in place (whatever becomes of the batch:
    // nothing else holds it); a refused batch leaves it to the collector.
    const into = unpool(key);
    if (into !== undefined) pooled++;
    const s =
      into === undefined
        ? rec.read(now, node.path, send, recv)
        : rec.readInto(into, now, node.path, send, recv);
    if (!sameConnKey(s.const, key) && connKeyId(keyOfState(s)) !== connKeyId(key))
      throw new StateValidationError('tcp.const', 'record is not the connection its block was named for');
    node.conns.push(s);
  }
  validateTrees(trees);
  engine.counters.inc('nic.initiate.records', n);
  if (pooled > 0) engine.counters.inc('nic.initiate.pooled', pooled);
  if (unbuilt > 0) engine.counters.inc('nic.initiate.unbuilt', unbuilt);
}

// ---- connections taken unbuilt -------------------------------------------------------------------

/**
 * A connection this worker took by flipping its record's owner word, and has not built: its state
 * is the record's, read into a TcpState, adopted and given its slot object on its first frame,
 * doorbell, call or request (build), or handed on or up unread by a terminate. It counts in the
 * engine's load and holds its path (LazyTake); its slot index is the host's name for it already.
 * Only quiet connections are taken so (TransferRecord.quiet): with no deadline armed, none has a
 * timer that could be late, and a worker that dies before the build loses nothing, its record and
 * hard state being what the last owner wrote. An initiate that asks for a prod takes any so, and
 * builds them within a few turns (oweProds): the prod resends what a late timer would have.
 */
interface Pending extends LazyConn {
  readonly key: ConnKey;
  readonly block: ConnBlockRef;
  readonly parts: BlockParts;
  path: PathSlot | null;
  index: number;
  /** This thread's clock when it took the record: the instant the record's time deltas count from. */
  takenAt: number;
  /**
   * Taken by an initiate that asked for a prod: prodded at its build, which comes within turns
   * (oweProds), or unbuilt when its record allows (prodUnbuilt), which clears this.
   */
  prod: boolean;
  /** The TSval of the ACK prodUnbuilt sent for it (-1: none): its build's TcpConnection.rttEchoFloor. */
  echoFloor: number;
  /** Frames for it that wait for its paced build, oldest first (waitForBuild); null: none. */
  waiting: WaitingFrame[] | null;
  /** The last terminate that named it (its number): one naming it twice is refused whole. */
  namedBy: number;
  /**
   * Taken by an initiate with `holdInput` whose settle has not come: built now, its link's input
   * waits for the settle as a built one's does (NicEngine `awaiting`); its frames that wait for
   * the build take the settle's segments ahead of them (waitForBuild).
   */
  awaitsSettle: boolean;
}

/** Pending connections that await their settle (Pending.awaitsSettle): none, a settle's keys go unread. */
let pendingAwaiting = 0;

/** `p` awaits its settle no more (it came, or `p` was built or let go). */
function settledUnbuilt(p: Pending): void {
  if (!p.awaitsSettle) return;
  p.awaitsSettle = false;
  pendingAwaiting--;
}

/** Terminates that named keys, numbered (Pending.namedBy). */
let terminates = 0;

/**
 * A received frame held for a connection owed a prod (copied: its buffer is reused), or an IP
 * packet the host held for it while it moved (an inject).
 */
interface WaitingFrame {
  readonly frame: Uint8Array;
  readonly info: RxOffloadInfo | undefined;
  /** Read from this thread's link, sent here by another worker (runFromPeer), or the host's packet. */
  readonly from: 'link' | 'peer' | 'host';
}

/**
 * Pending connections by four-tuple: a frame's, or a key's (pendingOf). The only table by tuple
 * they enter: a second one by key (a TupleMap, as before) cost a set and a delete per connection
 * and move at each worker, for lookups this one answers.
 */
const pendingIndex = new ConnIndex<Pending>(() => engine.addressBook);

function pendingOf(k: ConnKey): Pending | undefined {
  return pendingIndex.get(k.localIp, k.localPort, k.remoteIp, k.remotePort);
}

/** Every pending connection, by slot index. */
function pendingList(): Pending[] {
  const out: Pending[] = [];
  if (pendingIndex.size === 0) return out;
  for (const p of pendingAt) if (p !== undefined) out.push(p);
  return out;
}
/** Pending connections by slot index (doorbell, connection calls). */
const pendingAt: (Pending | undefined)[] = [];

/**
 * Whether a record may be taken unbuilt: quiet, nothing in its send ring (both waived when a prod
 * builds it within turns: oweProds), not here already (the
 * engine refuses that), no segments held for it here from an earlier terminate (the engine feeds
 * those in). An IPv6 key's handles are held by no one but its path (the key names them without a
 * reference, and the connection takes its own only when built): they must be its path's, which
 * the hold on the path then keeps; one that is not is read now, and refused by the validation.
 */
function mayTakeUnbuilt(key: ConnKey, parts: BlockParts, path: PathState, prod: boolean): boolean {
  if (
    (key.localIp >= TWO_32 || key.remoteIp >= TWO_32) &&
    (key.localIp !== path.const.localIp || key.remoteIp !== path.const.remoteIp)
  )
    return false;
  if (!prod && (!parts.transfer.quiet || parts.send.length !== 0)) return false;
  if (byKey.has(key) || pendingOf(key) !== undefined) return false;
  const t = engine.tcp;
  return t.frozenSize === 0 || !t.isFrozen(key.localIp, key.localPort, key.remoteIp, key.remotePort);
}

/** The engine accepted a pending connection: give it its slot index and take its record. */
function takeUnbuilt(p: Pending, path: PathSlot, owner: number): InstalledConn {
  p.path = path;
  const index = freeSlots.pop() ?? slots.length;
  // The index is the connection's until it leaves: a later install must not take it.
  if (index === slots.length) slots.push(undefined);
  p.index = index;
  pendingIndex.add(p);
  pendingAt[index] = p;
  const k = p.key;
  owners?.add(k.localIp, k.localPort, k.remoteIp, k.remotePort);
  if (handedAway.size > 0) handedAway.reinstalled(k);
  Atomics.store(db, flagsAt + index, 0);
  Atomics.store(db, quietAt + index, 0);
  p.parts.transfer.take(owner);
  return { key: k, slot: index, block: p.block, given: true };
}

/**
 * A pending connection leaves this worker unbuilt (handed on, or refused at its build); still
 * listed when `keepListed` (handed to a peer: HandedOn).
 */
function letGoUnbuilt(p: Pending, keepListed = false): void {
  settledUnbuilt(p);
  if (p.waiting !== null) unwait(p.waiting);
  p.waiting = null;
  pendingIndex.remove(p);
  pendingAt[p.index] = undefined;
  freeSlots.push(p.index);
  const k = p.key;
  if (!keepListed) owners?.remove(k.localIp, k.localPort, k.remoteIp, k.remotePort);
  engine.dropLazy(p.path!);
}

/**
 * A terminate by records hands pending connections on unread: each one's path joins the batch
 * (in its neighbor's tree, or a tree of its own), and its record points at it and ages by the time
 * it waited here. The paths' indices change as nodes join: the new index of every path.
 */
function addUnreadPaths(
  trees: OffloadTree[],
  unread: readonly Pending[],
  now: number,
): Map<PathState, number> {
  const byNeighbor = new Map<NeighborState, OffloadTree>();
  const has = new Set<PathState>();
  for (const t of trees) {
    byNeighbor.set(t.neighbor, t);
    for (const node of t.paths) has.add(node.path);
  }
  for (const p of unread) {
    const path = p.path!.state;
    if (has.has(path)) continue;
    has.add(path);
    let t = byNeighbor.get(path.neighbor);
    if (t === undefined) {
      t = { neighbor: path.neighbor, paths: [] };
      byNeighbor.set(path.neighbor, t);
      trees.push(t);
    }
    t.paths.push({ path, conns: [] });
  }
  const at = new Map<PathState, number>();
  let i = 0;
  for (const t of trees) for (const node of t.paths) at.set(node.path, i++);
  for (const p of unread) {
    const rec = p.parts.transfer;
    rec.age(now - p.takenAt);
    // Aged to now: a terminate that fails after this leaves it pending, read on the right clock.
    p.takenAt = now;
    rec.setPathIndex(at.get(p.path!.state)!);
  }
  return at;
}

/**
 * Connections taken unbuilt by an initiate that asked for a prod (a failover's hand): built and
 * prodded a few a turn, the link's reads, the doorbell and the host's messages running between.
 * Built and prodded all in the initiate's turn, a failover's hand of 256 held the surviving worker
 * for about 115 ms (half of it the prods' frames: each write to the TAP runs the peer's receive),
 * its own connections' ACKs waiting behind (BENCHMARKS.md, "A failover's hand built a few a turn"). The
 * peer hears nothing later for it: a frame, a doorbell, a call or a request for one builds and
 * prods it first (build), as the initiate would have, and the prod resends from snd.una whatever
 * the wait left due. A frame from the peer is the exception: it waits for its connection's turn
 * (waitForBuild). Under traffic the peer's frames for the moved connections came in the same
 * batch of port messages as the hand, and built nearly all of them in the hand's turn anyway
 * (a 442 ms block at 1,000 connections, load 20).
 */
const owedProds: Pending[] = [];
let owedAt = 0;
let owedLater = false;
/**
 * How long one turn of these builds runs (ms, at least one build a turn): then the loop, with the
 * heartbeat, the link's reads and the doorbell, before the next turn. A fixed 64 a turn held a
 * turn as long as 64 builds took: a few ms once the worker's code is optimized, but a crash's
 * survivor starts cold, and its first thousand builds at 10,000 took 1.2-1.4 s against 0.06-0.65
 * s for each later thousand (load 30): 64 a turn were 80 ms and more then. Warm, 3 ms holds about
 * as many as 64.
 */
const BUILD_TURN_MS = boot.buildTurnMs ?? 3;

function oweProds(list: readonly Pending[]): void {
  for (const p of list) owedProds.push(p);
  buildOwedLater();
}

function buildOwedLater(): void {
  if (owedLater) return;
  owedLater = true;
  clock.defer(() => {
    owedLater = false;
    if (closed) return;
    buildOwed(clock.now() + BUILD_TURN_MS);
    if (owedAt < owedProds.length) buildOwedLater();
  });
}

/** Still pending: not built by a touch nor let go since (its slot index may be another's now). */
function stillOwed(p: Pending): boolean {
  return pendingAt[p.index] === p;
}

/** Build the connections owed a prod, oldest first, until the clock passes `until` (one at least). */
function buildOwed(until: number): void {
  let built = 0;
  while (owedAt < owedProds.length && (built === 0 || clock.now() < until)) {
    const p = owedProds[owedAt++]!;
    if (!stillOwed(p)) continue;
    progress();
    if (!prodUnbuilt(p)) build(p);
    engine.counters.inc('nic.lazy.paced');
    built++;
  }
  if (built > 0) engine.counters.inc('nic.lazy.turns');
  if (owedAt < owedProds.length) return;
  owedProds.length = 0;
  owedAt = 0;
}

/** A state prodUnbuilt reads records into (readInto), never handed to anything; made at its first read. */
let ackScratch: TcpState | null = null;

/**
 * Prod a pending connection owed a prod without building it, when its prod would be one pure ACK
 * and nothing else (tcp-handover's prod for an established connection with nothing in flight or
 * to send, no timer armed, SACK agreed): that ACK sent from its record's words (sendStateAck,
 * over a scratch state that holds only the fields it reads, read from the record and validated:
 * readForAck, validateAckOn; the build reads and validates the whole record), the fields
 * it changed written back, and the connection left pending as one taken without a prod is, to be
 * built by its first frame, doorbell, call or request. Building each only to send that ACK (the
 * record read into a new state, the connection object, its slot and hard-state record, a prod that
 * ran the whole output) cost 45-70 µs warm and several times that cold, and at 10,000 the builds
 * were most of a crash's time to all resumed; prodded so, the process's CPU over the crash fell by
 * about a third (BENCHMARKS.md, "A crash's survivor prods its quiet connections unbuilt"). False,
 * and nothing sent, when it must be built.
 */
function prodUnbuilt(p: Pending): boolean {
  const parts = p.parts;
  const rec = parts.transfer;
  // A rebuild owes each connection an ACK (soft.ackNow): the one sent here. One that awaits its
  // settle, or whose segments the engine holds frozen, is built: the build honours the hold and
  // runs what waits, where an ACK from the record's rcvNxt would speak before them.
  if (p.waiting !== null || parts.send.length !== 0 || !rec.quietButAck || p.awaitsSettle) return false;
  const t = engine.tcp;
  const k = p.key;
  if (t.frozenSize !== 0 && t.isFrozen(k.localIp, k.localPort, k.remoteIp, k.remotePort)) return false;
  const path = p.path!;
  let s: TcpState | null;
  try {
    // Only what the ACK reads (readForAck, validateAckOn): the whole record read and validated
    // was two thirds of each ACK's cost, and its build reads and validates it whole anyway.
    if (ackScratch === null) {
      s = rec.read(p.takenAt, path.state, parts.send, parts.recv);
      // Out-of-order data or SACK blocks to report: the ACK would leave them out.
      if (s.soft.ooo.length !== 0 || s.soft.recvSackRecent.length !== 0) return false;
      ackScratch = s;
    } else s = rec.readForAck(ackScratch, p.takenAt, path.state, parts.send, parts.recv);
    if (s === null || !sameConnKey(s.const, p.key)) return false;
    validateAckOn(s, path.state);
  } catch {
    // Its build refuses it, as it refuses any record that fails.
    return false;
  }
  if (!s.const.sackEnabled || s.delegated.ecn !== 0 || !sendStateAck(engine.tcp, s)) return false;
  rec.noteAck(s);
  p.echoFloor = tsNow(clock.now());
  p.prod = false;
  engine.counters.inc('nic.lazy.acked');
  return true;
}

/**
 * Build a pending connection: its record read (on the clock of its take, so its times are what an
 * initiate would have made them) and validated as an initiate validates it, adopted, given its
 * slot. A record that fails is refused now as a corrupt state is at a terminate: the connection is
 * aborted and its slot freed.
 */
function build(p: Pending): Slot | undefined {
  pendingIndex.remove(p);
  pendingAt[p.index] = undefined;
  const path = p.path!;
  const parts = p.parts;
  const key = p.key;
  let s: TcpState;
  try {
    const into = unpool(key);
    const rec = parts.transfer;
    s =
      into === undefined
        ? rec.read(p.takenAt, path.state, parts.send, parts.recv)
        : rec.readInto(into, p.takenAt, path.state, parts.send, parts.recv);
    // Counted as the initiate counts its own: a connection taken unbuilt reads its record here.
    if (into !== undefined) engine.counters.inc('nic.initiate.pooled');
    if (!sameConnKey(s.const, key))
      throw new StateValidationError('tcp.const', 'record is not the connection its block was named for');
    // The record is what may be damaged (shared memory, written by the last owner): its path and
    // neighbor were validated by the initiate that took it, and run the connections built on them.
    validateConnOn(s, path.state);
  } catch (e) {
    // Back in the index for letGoUnbuilt, which takes it out with its hold on the path.
    pendingIndex.add(p);
    letGoUnbuilt(p);
    engine.counters.inc('nic.lazy.invalid');
    // The host's socket hears it is lost, before the slot (and with it the handle) is freed: the
    // abort indication alone reached no one, and the socket waited for ever.
    const why = new ConnectionError('ECONNABORTED', `corrupt state at the build: ${(e as Error).message}`);
    post({ t: 'ev', list: [p.index, EV_CLOSED], errors: [wireError(why)] });
    post({ t: 'freed', slots: [p.index] });
    post({ t: 'ind', ind: ['abort', key] });
    return undefined;
  }
  const hold = p.awaitsSettle;
  settledUnbuilt(p);
  const conn = engine.adoptLazy(s, path, p.prod, hold);
  // Prodded unbuilt: the peer's echoes of older TSvals than that ACK's are of the dead owner's
  // segments, as prod's own floor says.
  if (p.echoFloor >= 0) conn.rttEchoFloor = p.echoFloor;
  const q = p.waiting;
  p.waiting = null;
  batchParts.set(p.block, parts);
  try {
    install(conn, p.block, p.index);
  } catch (e) {
    // Its waiting frames go with it: still counted, they would hold the worker's total bound.
    if (q !== null) unwait(q);
    throw e;
  } finally {
    batchParts.delete(p.block);
  }
  const slot = slots[p.index];
  if (q !== null) runWaiting(q, slot);
  return slot;
}

/**
 * What one connection owed a prod holds for its build, in frames and bytes (a TAP's frame may be
 * a 64 KB super-segment): past either it is built at once, as before the wait, rather than the
 * queue grown without bound by a peer that sends fast.
 */
const WAIT_FRAMES = 32;
const WAIT_BYTES = 256 * 1024;
/**
 * What all the connections owed a prod hold together: the per-connection bounds alone let a hand
 * of thousands under traffic keep 256 KiB each (a gigabyte at 4,000) on this thread's heap. Past
 * either, a frame builds its connection at once (nic.lazy.wait-full), as one past its own bound
 * does: that costs only the time the pacing saved (a build and its prod, about half a millisecond),
 * bounded by the connections held here, where a drop would cost the peer a retransmission (its
 * RTO, or for a pure ACK the news it carried) in the failover that promised it no pause. Linux
 * drops past a busy socket's backlog limit (TCPBacklogDrop) because its memory is the peer's doing;
 * this wait is the NIC's own choice, which it can always take back. 16 connections' worth of bytes;
 * frames at 32 connections' worth, a small frame costing a copy and an object all the same.
 */
const WAIT_TOTAL_FRAMES = 1024;
const WAIT_TOTAL_BYTES = 16 * WAIT_BYTES;
/** Frames and bytes waiting for builds now, all connections together, and the most frames ever. */
const waitingAll = { frames: 0, bytes: 0, framesMax: 0 };

function unwait(q: readonly WaitingFrame[]): void {
  waitingAll.frames -= q.length;
  for (const w of q) waitingAll.bytes -= w.frame.length;
}

/**
 * A received frame for a connection still owed its prod (oweProds) waits for its build, rather
 * than building it now: true when it was taken so, and must not run now. Its build (paced, or
 * by anything else that touches it) runs the frames that waited first, in the order they came,
 * so every later frame of the connection still runs after them: a frame is taken here only where
 * it would otherwise run at once (after hand-order's hold, HeldIn), and every frame of a pending
 * connection passes here before it runs.
 */
function waitForBuild(
  p: Pending,
  frame: Uint8Array,
  info: RxOffloadInfo | undefined,
  from: WaitingFrame['from'],
): boolean {
  if (!p.prod) return false;
  const q = (p.waiting ??= []);
  if (q.length >= WAIT_FRAMES) return false;
  let bytes = frame.length;
  for (const w of q) bytes += w.frame.length;
  if (bytes > WAIT_BYTES) return false;
  if (waitingAll.frames >= WAIT_TOTAL_FRAMES || waitingAll.bytes + frame.length > WAIT_TOTAL_BYTES) {
    engine.counters.inc('nic.lazy.wait-full');
    return false;
  }
  const w: WaitingFrame = { frame: frame.slice(), info: info === undefined ? undefined : { ...info }, from };
  // The host held the settle's segments from before the install: older than every frame of the
  // link or a peer that waits here (all came since), they go ahead of those.
  let at = q.length;
  if (from === 'host' && p.awaitsSettle) while (at > 0 && q[at - 1]!.from !== 'host') at--;
  if (at < q.length) engine.counters.inc('nic.lazy.settle-ahead');
  q.splice(at, 0, w);
  waitingAll.frames++;
  waitingAll.bytes += frame.length;
  if (waitingAll.frames > waitingAll.framesMax) waitingAll.framesMax = waitingAll.frames;
  engine.counters.inc('nic.lazy.frame-waits');
  return true;
}

/** The frames that waited for a connection's build, run now that it is built (its slot, if it was). */
function runWaiting(q: readonly WaitingFrame[], slot: Slot | undefined): void {
  unwait(q);
  for (const w of q) {
    progress();
    if (slot !== undefined) touch(slot);
    if (w.from === 'peer') runFromPeer(w.frame);
    else if (w.from === 'link') runHere?.(w.frame, w.info);
    else engine.inject([w.frame]);
  }
}

/**
 * Before a received frame runs: the pending connection a TCP segment is for is built, and the one
 * an ICMP error quotes; a segment for none, ARP, UDP, an ICMP echo or an ICMPv6 informational
 * message touches none of them; the rest (fragments hide their ports, extension headers and other
 * protocols are not read here) builds them all.
 */
function buildForOther(frame: Uint8Array): Slot | undefined {
  if (frame.length < 14) return;
  const type = ethType(frame);
  if (type === EtherType.ARP) return;
  const ip = ethL3Offset(frame);
  if (type === EtherType.IPV4 && frame.length >= ip + 20) {
    if (ipv4IsFragment(frame, ip)) {
      buildPending();
      return;
    }
    const proto = ipv4Proto(frame, ip);
    // An echo or a UDP datagram touches no connection.
    if (proto === IpProto.ICMP) {
      const t = ip + ipv4HeaderLen(frame, ip);
      if (frame.length > t && ICMP4_ERRORS.has(frame[t]!)) return buildQuoted(frame, t, false);
    } else if (proto !== IpProto.TCP && proto !== IpProto.UDP) buildPending();
    return;
  }
  if (type === EtherType.IPV6 && frame.length >= ip + 40) {
    const next = frame[ip + 6]!;
    if (next === IpProto.TCP || next === IpProto.UDP) return;
    if (next === Ipv6Next.ICMPV6 && frame.length > ip + 40) {
      // Neighbor discovery, MLD and echoes (informational, type 128 and up) touch no connection;
      // on an IPv6 link they come every few seconds and built every connection taken unbuilt.
      if (frame[ip + 40]! >= 128) return;
      return buildQuoted(frame, ip + 40, true);
    }
    // MLD goes behind a Hop-by-Hop header (its router alert, RFC 3810 5): an informational
    // message there touches no connection either. Anything else behind it builds them all.
    if (next === Ipv6Next.HOP_BY_HOP && frame.length >= ip + 48) {
      const at = ip + 40 + (frame[ip + 41]! + 1) * 8;
      if (frame[ip + 40] === Ipv6Next.ICMPV6 && frame.length > at && frame[at]! >= 128) return;
    }
  }
  buildPending();
}

/**
 * An ICMP error (its message at frame[icmp]) builds the pending connection it quotes, if one is.
 * The worker does not act on the error itself: it goes up to the host, which lowers the path MTU
 * (or notes a soft error) and pushes a path update that every connection on the path shares,
 * built or not; what the quoted connection would have done with it as a built one (resend what
 * is outstanding at the new size) it does on the same update, built now. A quote too short or
 * malformed to name a connection builds none, counted (`nic.lazy.icmp-unquoted`): it can name
 * no connection for the host either, and what the host does about the path reaches the pending
 * ones through their shared path (none has anything outstanding to resend, being quiet when taken).
 */
function buildQuoted(frame: Uint8Array, icmp: number, v6: boolean): Slot | undefined {
  const p = pendingIndex.ofQuote(frame, icmp, v6);
  if (p === null) engine.counters.inc('nic.lazy.icmp-unquoted');
  else if (p !== undefined) return build(p);
  return undefined;
}

/**
 * ICMPv4 errors, which quote a segment (RFC 792, RFC 1122 3.2.2): unreachable, source quench,
 * redirect, time exceeded, parameter problem.
 */
const ICMP4_ERRORS = new Set([3, 4, 5, 11, 12]);

/** Build every pending connection: before whatever may touch one of them. */
function buildPending(): void {
  for (const p of pendingList()) build(p);
}

/**
 * Run segments the host held for connections in transit (an inject): the pending connection each
 * is for is built first, not every one. A settle forwards what its placeholders held, a segment or
 * two for some of the connections it moved: building all of them for each (10,000 taken unbuilt
 * by an offload, built again by its first segments) cost the worker most of a second. One owed its
 * prod is not built for its segment: the segment waits for its build, as a frame does
 * (waitForBuild); under traffic the host held some for nearly every connection of a prodded move,
 * and built them all in the hand's turn (150 of 150 in the simulation, test/nic/prod-paced).
 */
function injectPackets(packets: readonly Uint8Array[], settled?: Uint32Array): void {
  if (pendingIndex.size === 0) engine.inject(packets);
  else injectToPending(packets);
  // Nothing here waits for a settle: the keys need not be read.
  if (settled !== undefined && (pendingAwaiting > 0 || engine.awaitingSettles > 0)) endSettles(settled);
}

/** The settle of each connection packed in `settled` came (InitiateOptions.holdInput). */
function endSettles(settled: Uint32Array): void {
  forEachPackedKey(settled, engine.addressBook, (k) => {
    const p = pendingAwaiting === 0 ? undefined : pendingOf(k);
    if (p !== undefined) settledUnbuilt(p);
    else engine.endAwait(k);
  });
}

/** injectPackets' way with pending connections here. */
function injectToPending(packets: readonly Uint8Array[]): void {
  const now: Uint8Array[] = [];
  for (let i = 0; i < packets.length; i++) {
    const p = packets[i]!;
    const c = pendingIndex.ofPacket(p);
    if (c === null) {
      buildPending();
      for (let j = i; j < packets.length; j++) now.push(packets[j]!);
      break;
    }
    if (c !== undefined && waitForBuild(c, p, undefined, 'host')) continue;
    if (c !== undefined) build(c);
    now.push(p);
  }
  if (now.length > 0) engine.inject(now);
}

/** The connection at a slot index, built first if it was pending. */
function slotAt(index: number): Slot | undefined {
  const p = pendingAt[index];
  return p === undefined ? slots[index] : build(p);
}

/**
 * The parts fillFromRecords found for each block of the batch being installed, for install to
 * take up instead of finding them again (and checking the same headers twice in one request).
 * Emptied at the end of each initiate.
 */
const batchParts = new Map<ConnBlockRef, BlockParts>();

/** The keys and parts of the initiate by records being installed, by place (fillFromRecords). */
const recordBatch: { keys: BatchKeys; parts: BlockParts[] } = { keys: new BatchKeys(), parts: [] };

/** The rings lie in `given` (rings attached to it otherwise than through its parts). */
function ownBlock(send: ByteRing, recv: ByteRing, given: ConnBlockRef): boolean {
  const own = blockOfRings(send, recv);
  return own !== null && sameBlock(own, given);
}

/** The host listeners whose SYNs this worker answers (WorkerNic.listen), by id: what stops each. */
const listenStops = new Map<number, () => void>();

/**
 * Connections whose handshake ended in this turn, by listener id, not yet handed to the host:
 * one 'born' a listener a turn, not one a connection (a burst of connects ends dozens of
 * handshakes in a turn of input, and each message cost both threads a turn's overhead and a
 * packing). Posted at the end of the turn, or before any other message (post), so none overtakes.
 */
const bornOf = new Map<number, { list: InstalledConn[]; entries: number[] }>();

/**
 * Where the blocks of the connections accepted here are cut (born-arena.ts): in memory the host
 * holds before the handshake ends, listed, so a death before their 'born' loses none. Posted as
 * they are made, not through `post`: an arena names no connection, and a 'born' that names its
 * blocks comes after it whatever.
 */
const bornArenas = new BornArenas((no, sab) => port.postMessage({ t: 'born-arena', no, sab }));

function postBorn(): void {
  // Only with handshakes to tell: a call deferred from a turn whose 'born' another message
  // already sent may run after the test armed the stop, and must not stop a worker with none.
  const seam = boot.stopBeforeBorn;
  if (seam !== undefined && bornOf.size > 0 && Atomics.load(new Int32Array(seam), 1) !== 0) stopHere(seam);
  for (const [id, { list, entries }] of bornOf) {
    bornOf.delete(id);
    engine.counters.inc('nic.listen.born-posts');
    const conns = list.map((inst) => ({ key: inst.key, status: 'success' as const }));
    const result: InitiateResult = { status: 'success', conns };
    post({ t: 'born', id, packed: packInitiate(result, list, engine.addressBook), entries });
  }
}

/**
 * Answer a host listener's SYNs here (NicEngine.listen): a half-open connection is listed in the
 * owner table at once (its handshake's last ACK may come in through another member, which sends
 * it here), and one whose handshake ends is installed on shared memory allocated here and handed
 * to the host ('born'), which makes the socket over it.
 */
function listen(m: Extract<ToWorker, { t: 'listen' }>): void {
  if (listenStops.has(m.id)) return;
  const claims = new OwnerTable(m.spec.claims);
  try {
    // The host's half-open connections, and every other worker's connections and half-open ones;
    // a read their writer disturbed counts as taken (OwnerTable.mayHold: the race needs no miss).
    const taken = (li: number, lp: number, ri: number, rp: number): boolean => {
      if (claims.mayHold(li, lp, ri, rp)) return true;
      for (let i = 0; i < peers.length; i++) if (peers[i]!.owners.mayHold(li, lp, ri, rp)) return true;
      return false;
    };
    const stop = engine.listen(m.spec, {
      taken,
      // Listed before the SYN-ACK goes, then the host's claims read again (NicBornHooks.publish).
      publish: (conn, open) => {
        const k = conn.key;
        // Not listed (the table full): the host and the other workers could not see it.
        if (open) return owners === null || owners.add(k.localIp, k.localPort, k.remoteIp, k.remotePort);
        // Left unanswered (never linked); one whose handshake ends stays listed, and one that
        // closes half-open is taken out at its 'closed'.
        if (!conn.linked) owners?.remove(k.localIp, k.localPort, k.remoteIp, k.remotePort);
        return true;
      },
      claimed: taken,
      halfOpen: (conn) => {
        const k = conn.key;
        owners?.add(k.localIp, k.localPort, k.remoteIp, k.remotePort);
      },
      accepted: (conn) => {
        // The share a placement by the host would give it (WorkerNic.preallocate), not the most:
        // its load counts the closed connections' blocks held unread, as the host's does.
        const load = engine.load + engine.heldClosed;
        const cuts: BornCut[] = [];
        const alloc = (send: number, recv: number): ConnBlockRef => {
          const cut = bornArenas.cut(send, recv);
          if (cut === null) return allocConnBlock(send, recv);
          cuts.push(cut);
          return cut.block;
        };
        const ring = ringUnderLoad(m.ring, load);
        // The send ring as the host places an offloaded one's (WorkerNic.preallocate): serve's
        // accepts here would otherwise start at the whole ring under light load and grow from half
        // of it past 256 a NIC.
        const sendRing = m.sendRing > 0 ? sendRingAtPlacement(m.sendRing, boot.ringCapacity, load) : ring;
        const inst = install(conn, undefined, undefined, ring, alloc, sendRing);
        let born = bornOf.get(m.id);
        if (born === undefined) {
          if (bornOf.size === 0) clock.defer(postBorn);
          born = { list: [], entries: [] };
          bornOf.set(m.id, born);
        }
        born.list.push(inst);
        const cut = cuts[0];
        if (cut !== undefined) {
          bornArenas.installed(cut, m.id, inst.slot, inst.key, engine.addressBook);
          born.entries.push(cut.at.no, cut.at.entry);
        }
        return true;
      },
      ringsAtAccept: true,
    });
    // Refused for its IPv6 address (NicEngine.listen, counted there): the host answers its SYNs.
    if (stop === null) return;
    listenStops.set(m.id, stop);
    bornArenas.ready();
  } catch {
    // A listener the engine refuses (closed, the port taken): its SYNs go up to the host.
    engine.counters.inc('nic.listen.refused');
  }
}

/**
 * Move a just-adopted connection's buffers into shared memory (the one copy of its bytes) and
 * give it a slot. The host normally allocated that memory and copied the buffers in before it
 * sent the batch (`given`); without it, allocate here (see connRingCapacities).
 */
function install(
  conn: TcpConnection,
  given: ConnBlockRef | undefined,
  at?: number,
  ring = boot.ringCapacity,
  /** Where a block is allocated when none was given (default: the worker's own slabs). */
  alloc: (send: number, recv: number) => ConnBlockRef = allocConnBlock,
  /** The send ring's placement when none was given (default `ring`; see connRingCapacities). */
  sendRing = ring,
): InstalledConn {
  const s = conn.state;
  const d = s.delegated;
  const caps = connRingCapacities(s, ring, 0, sendRing);
  let block: ConnBlockRef;
  let send: ByteRing;
  let recv: ByteRing;
  let onGiven = true;
  const parts = given === undefined ? null : (batchParts.get(given) ?? blockParts(given));
  if (
    given !== undefined &&
    ((d.sendBuffer === parts!.send && d.recvBuffer === parts!.recv) ||
      ownBlock(d.sendBuffer, d.recvBuffer, given))
  ) {
    // The batch named the rings, and the record took the block's own ring objects or the decoder
    // attached others over them: the data is where it was.
    block = given;
    send = d.sendBuffer;
    recv = d.recvBuffer;
  } else if (
    given !== undefined &&
    given.send.capacity >= d.sendBuffer.length &&
    given.recv.capacity >= d.recvBuffer.length
  ) {
    block = given;
    send = parts!.send;
    recv = parts!.recv;
  } else {
    onGiven = false;
    block = alloc(caps.send, caps.recv);
    send = ByteRing.createShared(block.send.capacity, block.send);
    recv = ByteRing.createShared(block.recv.capacity, block.recv);
    const copied = d.sendBuffer.length + d.recvBuffer.length;
    // A connection born here comes with nothing to copy: no copies made of nothing.
    if (d.sendBuffer.length > 0) send.write(d.sendBuffer.toArray());
    if (d.recvBuffer.length > 0) recv.write(d.recvBuffer.toArray());
    if (copied > 0) engine.counters.inc('nic.worker.copied-bytes', copied);
  }
  d.sendBuffer = send;
  d.recvBuffer = recv;
  const index = at ?? freeSlots.pop() ?? slots.length;
  const c = s.const;
  const record = onGiven ? parts!.record : new HardStateRecord(block.sab, block.at);
  let slot = onGiven ? slotOfBlock.get(block) : undefined;
  if (slot !== undefined && slots[slot.index] !== slot && sameConnKey(slot.key, c)) {
    // The connection's own slot from its last stay here, free since it left: the connection it
    // held then was released and gets no user calls any more, and this user is the new one's.
    if (slot.conn.user === slot.user) slot.conn.user = null;
    slot.index = index;
    slot.conn = conn;
    slot.record = record;
    slot.send = send;
    slot.recv = recv;
    slot.published = -1;
    slot.transfer = onGiven ? parts!.transfer : null;
    slot.growAsked = 0;
    slot.timeWait = 0;
    engine.counters.inc('nic.slots.reused');
  } else {
    const key = {
      localIp: c.localIp,
      localPort: c.localPort,
      remoteIp: c.remoteIp,
      remotePort: c.remotePort,
    };
    slot = {
      index,
      key,
      conn,
      block,
      record,
      send,
      recv,
      published: -1,
      transfer: onGiven ? parts!.transfer : null,
      user: null as unknown as RemoteUser,
      growAsked: 0,
      timeWait: 0,
    };
    slot.user = new RemoteUser(slot);
    if (onGiven) slotOfBlock.set(block, slot);
  }
  const key = slot.key;
  slots[index] = slot;
  byKey.set(key, slot);
  connIndex.add(slot);
  owners?.add(key.localIp, key.localPort, key.remoteIp, key.remotePort);
  if (handedAway.size > 0) handedAway.reinstalled(key);
  // A stale doorbell bit from the slot's previous tenant must not reach this one. A pending
  // connection's index was cleared at its take: bits set since are the host's rings for this
  // connection (queued, maybe not yet drained: a build by a frame must not lose them).
  if (at === undefined) Atomics.store(db, flagsAt + index, 0);
  conn.user = slot.user;
  writeRecord(slot);
  // Handed over already waiting (a terminate ends a TIME_WAIT, but an initiate may carry one).
  countTimeWait(slot);
  return { key, slot: index, block, given: onGiven };
}

/** Let a slot go; its connection stays listed when `keepListed` (handed to a peer: HandedOn). */
function free(slot: Slot, keepListed = false): void {
  if (slots[slot.index] !== slot) return;
  slots[slot.index] = undefined;
  uncountTimeWait(slot);
  freeSlots.push(slot.index);
  byKey.delete(slot.key);
  connIndex.remove(slot);
  const k = slot.key;
  if (!keepListed) owners?.remove(k.localIp, k.localPort, k.remoteIp, k.remotePort);
  touched.delete(slot);
}

/**
 * A terminate by reference keeps no placeholder for what it released: the host holds those
 * 4-tuples frozen for the whole transfer (TransferProtocol.freeze), so what arrives here meanwhile
 * goes up to it at once, behind anything an invalidate had held here, and the transfer's settle
 * needs no request to this thread to fetch it (WorkerNic.takeQueued answers for them itself).
 */
function passUp(keys: readonly ConnKey[]): void {
  if (engine.tcp.frozenSize === 0) return;
  const held = engine.takeQueued(keys);
  engine.dropFrozen(keys);
  for (const p of held) upBatch.push(p);
  Atomics.store(db, DB_UP, upBatch.frames | 0);
}

// ---- the doorbell --------------------------------------------------------------------------------

function ringBell(slot: Slot, bits: number): void {
  const conn = slot.conn;
  if (conn.released) return;
  const s = conn.state;
  const d = s.delegated;
  if (bits & BELL_WANT_WRITABLE) {
    // The application found the ring full: if the flight outgrew the ring, ask for a larger one.
    maybeGrowSendRing(conn);
    if (d.sendBuffer.free > 0) queueEvent(slot, EV_WRITABLE);
    else conn.wantWritable = true;
  }
  // The application saw bytes queued when it asked, but the peer may have acknowledged them all
  // before the bell got here: with nothing left to acknowledge, no ACK would ever answer it.
  if (bits & BELL_WANT_ACKED) {
    // The writer holds itself at the ring's brim (its socket's send target, which starts at the
    // placement's 64 KiB): it has more, so the ring is as full as it will be. A grow asked only
    // once it wrote past the ring lands after the ring drained (sendRingTarget, `ahead`).
    if (2 * d.sendBuffer.length >= d.sendBuffer.capacity) maybeGrowSendRing(conn);
    if (d.sendBuffer.length === 0) queueEvent(slot, EV_WRITABLE | EV_SEND_DRY);
    else conn.wantAcked = true;
  }
  let output = false;
  if (bits & BELL_WROTE && isSynchronized(d.state)) output = true;
  // The application read from the shared ring: the same rule as a read on the engine's own thread.
  if (bits & BELL_READ && canReceive(d.state) && !d.finReceived && ackAfterRead(s, clock.now())) {
    s.soft.ackNow = true;
    output = true;
  }
  if (output) kick(conn);
  touch(slot);
}

/**
 * Slots served per turn from the bell: the rest wait for the next turn, so timers (heartbeat,
 * retransmissions) and the link's reads are not held behind a thousand connections' output.
 */
const BELL_BUDGET = 64;
let bellLater = false;

/**
 * Take the slots the application rang for, up to `budget` (the rest in a later turn); cheap when
 * there is none. The queue is FIFO and a slot is queued once at a time, so every ready
 * connection is served in turn: round robin, none waits behind the others' backlog.
 */
function drainDoorbell(budget = Number.POSITIVE_INFINITY): void {
  let head = Atomics.load(db, DB_HEAD);
  const tail = Atomics.load(db, DB_TAIL);
  while (head !== tail) {
    if (budget-- <= 0) {
      if (!bellLater) {
        bellLater = true;
        clock.defer(drainLater);
      }
      return;
    }
    progress();
    const index = Atomics.load(db, DB_QUEUE + head);
    head = head + 1 === qLen ? 0 : head + 1;
    Atomics.store(db, DB_HEAD, head);
    const bits = Atomics.exchange(db, flagsAt + index, 0);
    const slot = bits === 0 ? slots[index] : slotAt(index);
    if (slot !== undefined && bits !== 0) ringBell(slot, bits);
  }
}

let closed = false;

function drainLater(): void {
  bellLater = false;
  if (!closed) drainDoorbell(BELL_BUDGET);
}

/**
 * The host rings without a notify while DB_BUSY is 1 (WorkerNic.ring): a notify to a thread that
 * waits is a system call and a wake-up, and this thread, in a turn, looks at the queue here as the
 * turn ends, once DB_BUSY is 0 again. Each side stores, then loads the other's word (the host its
 * queue's tail, then DB_BUSY; this thread DB_BUSY, then the tail), all sequentially consistent: a
 * slot queued is either seen here or the host sees 0 and notifies. Nothing is lost between.
 */
function bellAfterUnit(): void {
  if (closed || bellLater || Atomics.load(db, DB_HEAD) === Atomics.load(db, DB_TAIL)) return;
  bellLater = true;
  clock.defer(drainLater);
}

function waitBell(): void {
  enterUnit();
  if (closed) return;
  const seen = Atomics.load(db, DB_BELL);
  drainDoorbell(BELL_BUDGET);
  const w = waitAsync(db, DB_BELL, seen);
  if (w.async) (w.value as Promise<string>).then(waitBell);
  else clock.defer(waitBell);
}

// ---- the engine ----------------------------------------------------------------------------------

const link = await openLink();
const proxy = link instanceof ProxyLink ? link : null;
const upBatch = new FrameBatcher(
  (buf, len) => post({ t: 'up', buf, len }, [buf]),
  (cb) => clock.defer(cb),
);
const engine = new NicEngine({
  id: boot.id,
  link,
  clock,
  random: new SeededRandom(boot.seed),
  isnSecret: boot.isnSecret,
  // IPv6 handles numbered as the host numbers them, so keys and indications need no translation.
  addrs: new AddressTable(new SeededRandom(boot.seed ^ 0x6a09e667), { mirror: true }),
  capacity: boot.capacity,
  reachabilityIntervalMs: boot.reachabilityIntervalMs,
  settleHoldMs: boot.settleHoldMs,
  // A host's packet or a settle's kept segment marks its connection before it runs, as a frame of
  // the link does (noteFrame): its ACK may narrow the window while the application reads.
  beforeInjected: (p) => {
    const slot = connIndex.ofPacket(p);
    if (slot) touch(slot);
  },
  // A TCP settings update, or a resend on a changed path, is as much a change of the connection
  // as a packet: marked before it runs, its record and quiet word written again after.
  beforeUpdated: touchConn,
  // A timer's work (a delayed ACK, a retransmission, a probe, TIME_WAIT's end) changes the
  // connection with no frame in: marked as well, so no record needs rewriting in case (heartbeat).
  beforeTimer: touchConn,
  progress,
  // Segments of this worker's connections that reached a peer's port come from it by message.
  moreInput: () => peers.length > 0,
  toHost: (frame) => {
    if (toPeer(frame)) return;
    upBatch.push(frame);
    Atomics.store(db, DB_UP, upBatch.frames | 0);
  },
  hostCarrier: (up) => post({ t: 'host-carrier', up }),
  indicate: (...ind) => {
    if (ind[0] === 'closed') {
      const slot = byKey.get(ind[1]);
      if (slot) {
        writeRecord(slot);
        flushEvents();
        free(slot);
        post({ t: 'freed', slots: [slot.index] });
      } else {
        // A half-open connection a listener here made ended before its handshake did. Not only
        // while a listener runs: one its listener's 'unlisten' aborted says so only now (deferred),
        // and left listed it would hold the four-tuple for ever (WorkerNic.holds). Kept: the
        // tuple taken again meanwhile (a pending connection, the peer's SYN answered anew).
        const k = ind[1];
        if (
          pendingOf(k) === undefined &&
          engine.tcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort) === undefined
        )
          owners?.remove(k.localIp, k.localPort, k.remoteIp, k.remotePort);
      }
    }
    // Threads have their own performance.now() origin: carrier and reachability times cross as
    // epoch ms (a neighbor never heard from, 0, stays 0).
    if (ind[0] === 'link' && ind[2] !== undefined) ind[2] = performance.timeOrigin + ind[2];
    if (ind[0] === 'reachability' && ind[2] > 0) ind[2] = performance.timeOrigin + ind[2];
    post({ t: 'ind', ind });
  },
});

engine.isLazy = (k) => pendingOf(k) !== undefined;

// One connection's output must not hold a turn: the heartbeat, the doorbell and the link's reads
// wait behind it (TCP small queues).
engine.tcp.outputBudget = OUTPUT_BUDGET_BYTES;
// Nor thousands of connections' output together: their data beginning at once (a burst of
// accepts answered here) held the reads of the TAP behind it, and with them the handshakes.
engine.tcp.outputTurnBudget = OUTPUT_TURN_BUDGET_BYTES;

// The main thread knows a proxied link's carrier; a link opened here (a TAP) it learns now.
if (proxy === null) {
  post({ t: 'host-carrier', up: link.carrier });
  post({ t: 'ind', ind: ['link', link.carrier] });
}

/** The connection a TCP frame belongs to (received: our port is the destination), if it is one of ours. */
function slotOfFrame(frame: Uint8Array, inbound: boolean): Slot | undefined {
  return connIndex.ofFrame(frame, inbound);
}

/**
 * Mark the connection a received frame is for, so its hard state is rewritten after the batch;
 * one taken unbuilt is built first, or the frame waits for its paced build (waitForBuild): then
 * true, and the caller must not run the frame. Called just before the frame would run.
 */
function noteFrame(frame: Uint8Array, info: RxOffloadInfo | undefined, peer: boolean): boolean {
  // A built connection is found with one lookup; the pending index is asked only on a miss (a
  // connection taken unbuilt is in it until its first frame, never in both).
  const slot = slotOfFrame(frame, true);
  if (slot !== undefined) touch(slot);
  else if (pendingIndex.size > 0) {
    const p = pendingIndex.ofFrame(frame, true);
    if (p !== undefined && waitForBuild(p, frame, info, peer ? 'peer' : 'link')) return true;
    const built = p !== undefined ? build(p) : buildForOther(frame);
    if (built !== undefined) touch(built);
  }
  return false;
}

/**
 * Mark the connection a frame being sent belongs to: its record is rewritten before the batch
 * leaves (the TCP engine moves snd.max only after handing the frame over, so it is read then).
 */
function noteTx(frame: Uint8Array): void {
  const slot = slotOfFrame(frame, false);
  if (slot !== undefined) touched.add(slot);
}

/** publishAhead's view of this thread's slots, records and marks. */
const aheadHooks: AheadHooks<Slot> = {
  slotOf: (frame) => slotOfFrame(frame, false),
  touch,
  write: (slot) => writeRecord(slot),
};

// ---- the other workers of the team -----------------------------------------------------------------

interface Peer {
  id: string;
  /** The owner number of its records: its hands channel's key (hands). */
  owner: number;
  owners: OwnerTable;
  port: MessagePort;
  out: FrameBatcher;
}

const peers: Peer[] = [];
/** Set while a frame from a peer runs: one that is not ours after all goes up, never back out. */
let fromPeer = false;

/**
 * A frame the engine passes up (not for a connection run here): if it is a TCP segment of a
 * connection another worker of the team lists, send it there directly, one copy and no hop through
 * the main thread, instead of up to the host, whose placeholder would forward it down again later
 * and out of order. Fragments go up (the host reassembles), and so does anything no peer claims:
 * the host's own connections, listeners, connections between owners (no one lists them then, and
 * the host's placeholder holds their segments for the new owner).
 */
function toPeer(frame: Uint8Array): boolean {
  if (peers.length === 0 || frame.length < 54) return false;
  // IPv6 addresses by the handles this worker's mirror holds for them, the numbers the owner
  // listed them under. Bytes the mirror holds no handle for are no connection's here, but may be a
  // peer's: the host's table names them by the same handles (one receive port takes every member's
  // segments). What it answers is a hint, as the owner tables are: the owner reads the frame again
  // through its own mirror, and what is not its own after all goes up (bounced).
  let read = tcpTuple(frame, engine.addressBook);
  if (read === TUPLE_UNKNOWN && hostAddrs !== null && !fromPeer) read = tcpTuple(frame, hostAddrs);
  if (read !== TUPLE_READ) {
    if (fromPeer) engine.counters.inc('nic.forward.bounced');
    else if (read === TUPLE_UNKNOWN) engine.counters.inc('nic.forward.host');
    return false;
  }
  // A connection handed to a peer that may not list it yet: over the hands channel, behind the hand
  // (hand-order.ts), whether it came in here or from a peer.
  if (handedAway.size > 0) {
    const link = handedAway.linkOfTuple();
    if (link !== undefined) {
      link.out.push(frame);
      engine.counters.inc('nic.hand.forwarded');
      return true;
    }
  }
  if (fromPeer) {
    engine.counters.inc('nic.forward.bounced');
    return false;
  }
  const src = tuple.remoteIp;
  const dst = tuple.localIp;
  const sport = tuple.remotePort;
  const dport = tuple.localPort;
  for (let i = 0; i < peers.length; i++) {
    const p = peers[i]!;
    if (!p.owners.has(dst, dport, src, sport)) continue;
    p.out.push(frame);
    engine.counters.inc('nic.forward.direct');
    return true;
  }
  engine.counters.inc('nic.forward.host');
  return false;
}

/** The host's address table, read-only (toPeer); null until the host sends it ('host-addrs'). */
let hostAddrs: AddressFinder | null = null;

/** Run a frame another worker sent here: one that is not ours after all goes up, never back out. */
function runFromPeer(frame: Uint8Array): void {
  fromPeer = true;
  try {
    runHere?.(frame);
  } finally {
    fromPeer = false;
  }
}

function addPeer(m: Extract<ToWorker, { t: 'peer' }>): void {
  const port = m.port;
  const late = boot.peerFlushDelayMs;
  const p: Peer = {
    id: m.id,
    owner: m.owner,
    owners: new OwnerTable(m.owners),
    port,
    out: new FrameBatcher(
      (buf, len) => port.postMessage({ t: 'fwd', buf, len } satisfies PeerMessage, [buf]),
      late === undefined ? (cb) => clock.defer(cb) : (cb) => clock.createTimer(cb).unref().arm(late),
    ),
  };
  peers.push(p);
  port.on('message', (msg: PeerMessage) => {
    enterUnit();
    progress();
    if (closed) return;
    if (msg.t === 'installed') {
      // Behind every frame the peer forwarded here before it installed what this worker handed it.
      const link = hands.get(p.owner);
      if (link !== undefined) handedThrough(link, msg.seq);
      return;
    }
    if (msg.t === 'drain') {
      // The peer handed connections on and took them off its table: what went to it for them
      // goes ahead of the answer, and nothing more goes to it for them (it does not list them).
      p.out.flush();
      port.postMessage({ t: 'drained', id: msg.id } satisfies PeerMessage);
      return;
    }
    if (msg.t === 'drained') {
      drainedBy(p, msg.id);
      return;
    }
    if (msg.t !== 'fwd') return;
    forEachFrame(msg.buf, msg.len, (frame) => {
      progress();
      engine.counters.inc('nic.forward.received');
      if ((heldIn.size === 0 || !heldIn.offer(frame, undefined, true)) && !noteFrame(frame, undefined, true))
        runFromPeer(frame);
    });
    drainDoorbell(BELL_BUDGET);
  });
  // A peer that closed its end (its worker stopped) is forgotten, and sends nothing more here.
  port.on('close', () => {
    enterUnit();
    const at = peers.indexOf(p);
    if (at >= 0) peers.splice(at, 1);
    for (const id of [...drains.keys()]) drainedBy(p, id);
  });
}

/**
 * Install an initiate's batch (by records when `owner` is given) and give each connection a slot;
 * what was installed is also added to `installedOut` when given.
 */
function initiateNow(
  a: Extract<WorkerRequest, { op: 'initiate' }>['arg'],
  installedOut?: InstalledConn[],
): PackedInitiate {
  // The blocks' IPv6 keys name addresses the decode takes in with the batch's paths, so
  // they are unpacked at the first connection (every path comes before any connection).
  let blocks: TupleMap<ConnBlockRef> | undefined;
  const blocksNow = (): TupleMap<ConnBlockRef> | undefined =>
    (blocks ??= a.blocks === undefined ? undefined : unpackBlocks(a.blocks, engine.addressBook));
  // A batch whose rings travel by reference names no bytes: each connection's rings are
  // the block the host sent for it, attached here (and checked: ByteRing.attachShared).
  const rings = (s: TcpState): { send: ByteRing; recv: ByteRing } | null => {
    const b = blocksNow()?.get(s.const);
    if (b === undefined) return null;
    const parts = blockParts(b);
    return { send: parts.send, recv: parts.recv };
  };
  const owner = a.owner;
  const prod = a.prod === true;
  const hold = a.holdInput === true;
  const byNode: (Pending[] | undefined)[] | null = owner !== undefined && a.blocks !== undefined ? [] : null;
  const installed: InstalledConn[] = [];
  const owed: Pending[] = [];
  const lazy: LazyTake | undefined =
    byNode === null
      ? undefined
      : {
          byNode,
          taken: (c, path) => {
            installed.push(takeUnbuilt(c as Pending, path, owner!));
            if (hold) {
              (c as Pending).awaitsSettle = true;
              pendingAwaiting++;
            }
            if (prod) owed.push(c as Pending);
          },
        };
  const fill =
    owner === undefined || a.blocks === undefined
      ? undefined
      : (trees: OffloadTree[]) => fillFromRecords(trees, a.blocks!, owner, byNode, prod);
  // By records, the batch's blocks were unpacked by fill, by place; otherwise into a table by key.
  const blockOf = (k: ConnKey): ConnBlockRef | undefined => {
    if (fill === undefined) return blocksNow()?.get(k);
    const i = recordBatch.keys.indexOf(k);
    return i < 0 ? undefined : recordBatch.parts[i]!.block;
  };
  try {
    const result: InitiateResult = engine.initiate(
      a.batch,
      { prod: a.prod, holdInput: hold },
      { rings, fill, lazy },
    );
    // Every connection installed was taken unbuilt (the usual move of idle connections): each is
    // in `installed` already, and none has a connection here to look up.
    const taken = installed.length;
    // Each enters the table by slot as it is built, a few a turn when owed a prod: its buckets
    // made for all of them now, once, not doubled again and again along the builds.
    if (taken > 0) byKey.reserve(pendingIndex.size);
    let built = 0;
    for (const c of result.conns) if (c.status === 'success') built++;
    built -= taken;
    if (built > 0)
      for (const c of result.conns) {
        progress();
        if (c.status !== 'success') continue;
        const conn = engine.connection(c.key);
        if (!conn) continue;
        const inst = install(conn, blockOf(c.key));
        if (owner !== undefined) transferOf(slots[inst.slot]!).take(owner);
        installed.push(inst);
      }
    if (installedOut !== undefined) for (const c of installed) installedOut.push(c);
    if (owed.length > 0) oweProds(owed);
    return packInitiate(result, installed, engine.addressBook);
  } finally {
    batchParts.clear();
    if (fill !== undefined) {
      recordBatch.keys.clear();
      recordBatch.parts = [];
    }
  }
}

// ---- moves straight to another worker ------------------------------------------------------------

/** The hands channel to each other worker, by the owner number of its records. */
const hands = new Map<number, HandsLink>();

/**
 * The peer over `link` installed the hands up to `seq`: unlist them, and say so behind what went
 * to it. A turn later: frames that reached this worker's link before the word did, and wait in its
 * port's queue or its TAP's, still take the hands channel ahead of the 'through'. In a team of
 * three or more, another member may have read this worker in its owner table just before the
 * unlisting and forwarded frames here that are still on their way: the 'through' waits for each
 * other peer's 'drained', behind them, and those frames follow the hand too (they run at the
 * destination before anything it held, as this worker's own do).
 */
function handedThrough(link: HandsLink, seq: number): void {
  clock.defer(() => {
    if (closed) {
      handedAway.installed(link, seq);
      return;
    }
    handedAway.unlist(link, seq);
    const others = peers.filter((p) => p.owner !== link.owner);
    if (others.length === 0) {
      sendThrough(link, seq);
      return;
    }
    const id = ++drainsAsked;
    drains.set(id, { link, seq, waiting: new Set(others) });
    for (const p of others) p.port.postMessage({ t: 'drain', id } satisfies PeerMessage);
  });
}

/** Hands whose 'through' waits for other peers' 'drained' (handedThrough), by the drain's number. */
const drains = new Map<number, { link: HandsLink; seq: number; waiting: Set<Peer> }>();
let drainsAsked = 0;

/** Peer `p` answered drain `id` (or closed: nothing more comes from it). */
function drainedBy(p: Peer, id: number): void {
  const d = drains.get(id);
  if (d === undefined || !d.waiting.delete(p) || d.waiting.size > 0) return;
  drains.delete(id);
  sendThrough(d.link, d.seq);
}

/** Every frame of the hands up to `seq` went over `link`: off the list here, and 'through' behind them. */
function sendThrough(link: HandsLink, seq: number): void {
  handedAway.installed(link, seq);
  if (closed || hands.get(link.owner) !== link) return;
  link.out.flush();
  link.port.postMessage({ t: 'through', seq } satisfies HandsMessage);
}

/**
 * A channel for moves with another worker: a batch it hands over here is installed as an
 * initiate by records, and the answer goes to the host as the answer to the request the host
 * registered for it. Once that worker stops, the host hears of it, and stops waiting for a batch
 * it never handed. Frames for what either handed the other follow the hand over it (hand-order.ts).
 */
function addHands(m: Extract<ToWorker, { t: 'hands' }>): void {
  const port = m.port;
  const link: HandsLink = {
    owner: m.owner,
    port,
    out: new FrameBatcher(
      (buf, len) => port.postMessage({ t: 'fwd', buf, len } satisfies HandsMessage, [buf]),
      (cb) => clock.defer(cb),
    ),
    sent: 0,
  };
  hands.set(m.owner, link);
  port.on('message', (h: HandsMessage) => {
    enterUnit();
    progress();
    if (closed) return;
    switch (h.t) {
      case 'hand':
        takeHand(link, h);
        return;
      case 'fwd':
        // Sent on by the source for what it handed here: older than anything held, run now.
        forEachFrame(h.buf, h.len, (frame) => {
          progress();
          engine.counters.inc('nic.forward.received');
          if (!noteFrame(frame, undefined, true)) runFromPeer(frame);
        });
        drainDoorbell(BELL_BUDGET);
        return;
      case 'installed':
        handedThrough(link, h.seq);
        return;
      case 'through':
        heldIn.through(link, h.seq);
        drainDoorbell(BELL_BUDGET);
        return;
    }
  });
  port.on('close', () => {
    enterUnit();
    if (hands.get(m.owner) === link) hands.delete(m.owner);
    handedAway.closed(link);
    heldIn.closed(link);
    if (!closed) post({ t: 'hands-closed', owner: m.owner });
  });
}

/**
 * Install a batch another worker handed here, and answer the host. What its engine held for the
 * batch runs first; then, when the source numbered the hand, the batch's input waits for what the
 * source still has for it (hand-order.ts): 'installed' goes to the source behind every frame this
 * worker forwarded to it, on the peer channel when the two are peers.
 */
function takeHand(link: HandsLink, h: HandMessage): void {
  drainDoorbell();
  const installed: InstalledConn[] | undefined = h.seq > 0 ? [] : undefined;
  try {
    const packed = initiateNow({ batch: h.batch, prod: h.prod, blocks: h.blocks, owner: h.owner }, installed);
    post({ t: 'res', id: h.id, ok: true, op: 'initiate', value: packed, installed: packed.installed });
  } catch (e) {
    post({ t: 'res', id: h.id, ok: false, error: wireError(e) });
  }
  if (h.packets !== undefined && h.packets.length > 0) {
    // Segments are run by built connections only: the ones they are for, as the host's 'inject'
    // (not every connection taken unbuilt here, which a hand of a few would all have built); one
    // owed its prod keeps its segments for its paced build.
    injectPackets(h.packets);
  }
  if (installed === undefined) return;
  heldIn.hold(
    link,
    h.seq,
    installed.map((c) => c.key),
  );
  const peer = peers.find((p) => p.owner === link.owner);
  if (peer === undefined) {
    link.port.postMessage({ t: 'installed', seq: h.seq } satisfies HandsMessage);
    return;
  }
  peer.out.flush();
  peer.port.postMessage({ t: 'installed', seq: h.seq } satisfies PeerMessage);
}

function handleRequest(id: number, r: WorkerRequest): void {
  if (requestTrace === null) {
    handleRequestNow(id, r);
    return;
  }
  const t = performance.now();
  handleRequestNow(id, r);
  const a = (r as { arg?: { batch?: { length?: number } } | unknown[] }).arg;
  const n = Array.isArray(a) ? a.length : (a?.batch?.length ?? 0);
  requestTrace(r.op, n, performance.now() - t);
}

/**
 * What the verbs an engine serves alike in every thread (`serveEngineVerb`) need of this worker:
 * the connections taken unbuilt that a verb touches are built first, and the counters add this
 * thread's own.
 */
const verbHooks: EngineVerbHooks = {
  before(r) {
    switch (r.op) {
      case 'update':
        // A neighbor's or a path's change is to objects pending connections share (their path
        // slot and its neighbor), read at their build; quiet since their take, none has anything
        // outstanding to resend at a new MTU or through a new hop now (one owed a prod resends
        // what it has at its build, over the path as it is then). Settings of connections
        // (`tcp`) are in each one's record: those are built.
        if (r.arg?.kind !== 'neighbor' && r.arg?.kind !== 'path') buildPending();
        return;
      case 'query':
        // Built are those it reads: a caller watching one connection leaves the others unbuilt.
        if (r.arg === undefined) buildPending();
        else if (pendingIndex.size > 0)
          for (const k of r.arg) {
            const p = pendingOf(k);
            if (p !== undefined) build(p);
          }
        return;
      case 'progressScan':
        // Pending connections are left out unbuilt: quiet, with nothing sent or outstanding, none
        // can be stalled or sending to a wrong MAC, which is all a scan looks for (ProgressWatch);
        // one owed a prod sends nothing before its build, a few turns away (buildOwed).
        return;
      case 'counters':
        return;
      case 'invalidate':
      case 'takeQueued':
      case 'dropFrozen':
        buildPending();
        return;
      default:
        unhandled(r, 'request');
    }
  },
  moreCounters() {
    const alive = aliveSlabs();
    return {
      'nic.blocks.parts-made': partsCount.made,
      'nic.blocks.parts-found': partsCount.found,
      'nic.lazy.pending': pendingIndex.size,
      // Connections owed a prod that the pacing has not reached (oweProds; some may have been
      // built, and so prodded, by a touch since): 0 once every connection is prodded.
      'nic.lazy.owed': owedProds.length - owedAt,
      // Table entries made: by the TCP layer's four-tuple table, the slots' and the pool's.
      'nic.tables.entries-made': engine.tcp.table.entriesMade + byKey.entriesMade + statePool.entriesMade,
      // Times the table by slot made its buckets larger (TupleMap.reserve, bucketsGrown).
      'nic.tables.slots-grown': byKey.bucketsGrown,
      // Pooled states, and those of them still holding a shared ring (none: see NO_RING).
      'nic.pool.states': statePool.size,
      'nic.pool.shared-rings': pooledShared,
      // This thread's JS heap (the process's memoryUsage counts every thread's together).
      'nic.mem.heap-used': getHeapStatistics().used_heap_size,
      // The buffers the host numbered that this thread holds for it (until 'slabs-gone'),
      // and those whose object here is not collected yet: a worker's share of shared memory.
      'nic.slabs.held': heldSlabs(),
      'nic.slabs.alive': alive.count,
      'nic.slabs.alive-bytes': alive.bytes,
      'nic.time-wait.blocks': timeWaitHeld.blocks,
      'nic.time-wait.unread': timeWaitHeld.unread,
      // Frames waiting for paced builds (waitForBuild), now and at the most.
      'nic.lazy.frames-waiting': waitingAll.frames,
      'nic.lazy.frames-waiting-max': waitingAll.framesMax,
      // The longest a batch handed here held its input for the source's word (hand-order.ts).
      'nic.hand.hold-ms-max': Math.ceil(heldIn.longestMs),
      'nic.records.published': recordsPublished,
      'nic.heartbeats': heartbeats,
    };
  },
};

function handleRequestNow(id: number, r: WorkerRequest): void {
  // A terminate's batch went to another worker: a failure answered now would tell the host that
  // nothing went, and it would resume connections that the other worker runs too.
  let handedOn = false;
  try {
    switch (r.op) {
      case 'initiate': {
        // Trees are the host's objects (SameThreadTransport's form): a clone of them here would
        // run copies of states the host still holds.
        if (!(r.arg.batch instanceof Uint8Array))
          throw new InvalidArgumentError('initiate: a batch of bytes');
        const packed = initiateNow(r.arg);
        post({ t: 'res', id, ok: true, op: 'initiate', value: packed, installed: packed.installed });
        return;
      }
      case 'terminate': {
        if (r.trees === true) throw new InvalidArgumentError('terminate: this thread hands back bytes');
        // Each key a pending connection's own object, found once here: the pending list below
        // reads `pend` instead of searching again, and no key object is made for it.
        const pend: (Pending | undefined)[] = [];
        const keys =
          r.arg === 'all'
            ? 'all'
            : pendingIndex.size === 0
              ? unpackKeys(r.arg, engine.addressBook)
              : unpackKnownKeys(r.arg, engine.addressBook, (k, i) => (pend[i] = pendingOf(k))?.key);
        const list = keys === 'all' ? [...byKey.values(), ...pendingList()].map((s) => s.key) : keys;
        let out: Uint8Array;
        const records = r.byRef === true && r.records === true;
        // Pending connections go as the records they are, unread; the codec needs them built.
        const unread: Pending[] = [];
        // The keys of what runs built here: the engine releases those, and only those have a slot
        // to free (an unread one is no connection of the engine's and has no slot object).
        let builtKeys: readonly ConnKey[] | 'all' = keys;
        if (pendingIndex.size > 0) {
          // The engine refuses a built connection named twice, but only once the pending ones
          // were built (or, by records, after one named twice went up twice): refused whole
          // here, before anything changes.
          if (keys !== 'all') {
            // A pending connection is marked with this request's number; only the others (built
            // here, or unknown) need a table.
            const no = ++terminates;
            let named: TupleMap<true> | undefined;
            for (let i = 0; i < keys.length; i++) {
              const k = keys[i]!;
              const p = pend[i];
              if (p !== undefined) {
                if (p.namedBy === no) throw namedTwice('terminate', k);
                p.namedBy = no;
              } else {
                named ??= new TupleMap<true>();
                if (named.has(k)) throw namedTwice('terminate', k);
                named.set(k, true);
              }
            }
          }
          const rest: ConnKey[] = [];
          for (let i = 0; i < list.length; i++) {
            const k = list[i]!;
            const p = keys === 'all' ? pendingOf(k) : pend[i];
            if (p === undefined) rest.push(k);
            // One still owed its prod goes built: read unread, its next owner would not prod it.
            else if (records && !p.prod) unread.push(p);
            else {
              build(p);
              rest.push(k);
            }
          }
          if (keys !== 'all') builtKeys = rest;
        }
        const hand = records ? r.hand : undefined;
        if (hand !== undefined && boot.handGate !== undefined) waitAtGate(boot.handGate);
        const handLink = hand === undefined ? undefined : hands.get(hand.owner);
        if (hand !== undefined && handLink === undefined)
          throw new InvalidStateError(`no hands channel to records owner ${hand.owner}`);
        // Handed to a peer: listed here until it says it installed them, and their frames follow
        // the hand (hand-order.ts).
        const keepListed = handLink !== undefined && peers.some((p) => p.owner === handLink.owner);
        // The handles of IPv6 connections run here, held across their release until the list of
        // what was handed takes its own reference (HandedOn.add).
        const addrs = keepListed ? engine.addressBook : null;
        const held6: ConnKey[] = [];
        if (addrs !== null)
          for (const k of list)
            if (k.localIp >= TWO_32 && (byKey.has(k) || pendingOf(k) !== undefined)) {
              addrs.ref(k.localIp);
              addrs.ref(k.remoteIp);
              held6.push(k);
            }
        if (records) {
          // The states as records in their blocks, handed to the host (owner word); the batch
          // names their neighbors and paths, and carries what a record cannot hold.
          const { trees } = engine.terminateTrees(builtKeys);
          const slotOf = (s: TcpState) => byKey.get(s.const);
          const split = splitForRecords(trees, (s) => slotOf(s)?.recv ?? null);
          if (split.codec > 0) engine.counters.inc('nic.terminate.record-fallbacks', split.codec);
          const now = clock.now();
          const pathAt = unread.length === 0 ? null : addUnreadPaths(split.trees, unread, now);
          for (const [s, path] of split.paths) {
            const slot = slotOf(s)!;
            transferOf(slot).write(s, now, pathAt?.get(s.path) ?? path, OWNER_HOST, slot.recv);
            // Released, the state is the record's now (TcpHandover.release): kept for the
            // connection's next visit here, read into instead of made anew.
            poolState(slot.key, s);
            // The pooled state keeps its released connection object (TcpHandover's releasedBy,
            // weak by the state) and so, through its user, the slot, its block and the block's
            // slab: a worker the moves passed through kept the slabs of connections that never
            // came back after the host let them go, one slab per cycle under churn. A revived
            // connection takes a new user anyway (adopt).
            slot.conn.user = null;
          }
          out = encodeBatch(split.trees, now, { skipValidation: true, ringsByRef: true });
        } else out = engine.terminate(keys, { ringsByRef: r.byRef === true });
        const freed: number[] = [];
        const moved: number[] = [];
        // Handed on: the blocks of what was released, for the other worker.
        // Two lists, not a pair per connection: the pairs were the largest garbage a source
        // worker made per connection of a warm move.
        const givenKeys: ConnKey[] = [];
        const givenBlocks: ConnBlockRef[] = [];
        for (const p of unread) {
          freed.push(p.index);
          moved.push(p.index);
          p.parts.transfer.setOwner(hand === undefined ? OWNER_HOST : -hand.owner);
          if (hand !== undefined) {
            givenKeys.push(p.key);
            givenBlocks.push(p.block);
          }
          letGoUnbuilt(p, keepListed);
        }
        if (unread.length > 0) engine.counters.inc('nic.terminate.unread', unread.length);
        for (const k of builtKeys === 'all' ? list : builtKeys) {
          const slot = byKey.get(k);
          if (slot && engine.connection(k) === undefined) {
            writeRecord(slot);
            const released = slot.conn.released;
            free(slot, keepListed && released);
            freed.push(slot.index);
            // Released: its state is in the transfer. Otherwise it closed here (TIME_WAIT ends
            // on a terminate) and its last events must reach the application first.
            if (released) {
              moved.push(slot.index);
              transferOf(slot).setOwner(hand === undefined ? OWNER_HOST : -hand.owner);
              if (hand !== undefined) {
                givenKeys.push(slot.key);
                givenBlocks.push(slot.block);
              }
            }
          }
        }
        let seq = 0;
        let carried: Uint8Array[] | undefined;
        if (handLink !== undefined && givenKeys.length > 0) {
          const keys = givenKeys;
          if (keepListed) seq = handedAway.add(handLink, keys);
          // What the engine held for them goes with them, ahead of anything that follows.
          if (engine.tcp.frozenSize > 0) {
            carried = engine.takeQueued(keys);
            engine.dropFrozen(keys);
          }
        }
        for (const k of held6) {
          addrs!.release(k.localIp);
          addrs!.release(k.remoteIp);
        }
        if (r.byRef === true) passUp(list);
        flushEvents();
        // The other worker's copy of the batch (the host keeps this one, to read back what the
        // other refuses).
        const handed: HandMessage | null =
          hand === undefined
            ? null
            : {
                t: 'hand',
                id: hand.id,
                batch: out.slice(),
                blocks: packBlocks(
                  givenKeys.length,
                  (i) => givenKeys[i]!,
                  (i) => givenBlocks[i]!,
                  engine.addressBook,
                ),
                owner: hand.owner,
                prod: hand.prod,
                seq,
                packets: carried !== undefined && carried.length > 0 ? carried : undefined,
              };
        const buf =
          out.byteOffset === 0 && out.byteLength === out.buffer.byteLength ? out.buffer : out.slice().buffer;
        // The batch goes before the host's answer: a host that has the answer then knows the batch
        // waits at the other worker, ahead of the close of the channel that this thread's end
        // brings, and that worker answers for it whatever happens here next. Posted after the
        // answer, a kill in between (which the host may decide on as soon as it reads the answer,
        // on the other core) left the host told the batch was released and the batch never handed:
        // a move that the host hears of as the source's death rejected whole.
        if (handed !== null) {
          handLink!.port.postMessage(handed, [handed.batch.buffer as ArrayBuffer]);
          handedOn = true;
          if (boot.handGapMs !== undefined) pauseThread(boot.handGapMs);
          if (boot.handGate !== undefined) waitAtGate(boot.handGate);
        }
        post(
          {
            t: 'res',
            id,
            ok: true,
            op: 'terminate',
            value: new Uint8Array(buf as ArrayBuffer),
            freed,
            moved,
            records,
          },
          [buf as ArrayBuffer],
        );
        return;
      }
      default: {
        if (!isEngineVerb(r)) unhandled(r, 'request');
        const reply = serveEngineVerb(engine, r, id, verbHooks);
        // A scan's rows are made for this answer alone: moved, not copied.
        post(reply, reply.op === 'progressScan' ? [reply.value.buffer as ArrayBuffer] : undefined);
        return;
      }
    }
  } catch (e) {
    // Thrown on, the thread dies, and the host takes the other worker's answer (handedByDead).
    if (handedOn) throw e;
    post({ t: 'res', id, ok: false, error: wireError(e) });
  }
}

// ---- shared buffers the host let go: weighed by this thread's collector ------------------------

/*
 * A buffer the host let go ('slabs-gone') is still this thread's object until this thread's
 * collector takes it, and only then is its memory given back (when every thread's object of it
 * is gone). Nothing here holds it any more (dropSlabs), but the collector did not hurry: V8
 * counts a SharedArrayBuffer as no external memory of any thread that holds it (a backing store
 * shared between isolates is left out of each one's external-memory accounting), so a 64 MB
 * slab weighed nothing towards this thread's next full collection, which its small JS heap makes
 * rare. Under churn the slabs let go piled up until then: a sawtooth some 600 MB tall. So once
 * the host has let go of a slab's worth of buffers this thread held, their weight is shown to
 * the collector the one way it counts: a plain ArrayBuffer of that size, made and dropped at once
 * (calloc of fresh mmap'd pages, never touched: address space for an instant, not memory). Past
 * its external-memory limit V8 starts an incremental collection of its own, in steps between
 * this thread's tasks, rather than the single full pause a forced gc() would take.
 */
let slabBytesLetGo = 0;

function weighSlabsLetGo(ids: readonly number[]): void {
  slabBytesLetGo += dropSlabs(ids);
  if (slabBytesLetGo < CONN_SLAB_BYTES) return;
  new ArrayBuffer(slabBytesLetGo);
  slabBytesLetGo = 0;
  engine.counters.inc('nic.slabs.weighed');
}

// ---- a send ring that grows (the worker's half; the host's, and why it is safe: WorkerNic.regrow) --

/** The TCP layer's growSendRing here: the ring is the main thread's to write, so ask it. */
function askGrow(conn: TcpConnection, capacity: number): void {
  const user = conn.user;
  if (!(user instanceof RemoteUser)) return;
  const slot = user.slot;
  if (slots[slot.index] !== slot || slot.conn !== conn || capacity <= slot.growAsked) return;
  slot.growAsked = capacity;
  post({ t: 'grow', slot: slot.index, capacity });
}
engine.tcp.growSendRing = askGrow;
// The switch is a round trip through the main thread: asked when cwnd has just opened, it lands
// after the old ring drained (BENCHMARKS.md, "A ring grown before it drains").
engine.tcp.growAhead = true;
// The main thread reads the receive rings, never this thread's connections: a closed one's unread
// data could not be discharged here (its block, a fixed size, is held by the host's handle).
engine.tcp.holdUnread = false;

function isBlock(b: ConnBlockRef, r: RegrowBlock): boolean {
  return (
    b.sab.byteLength === r.sab.byteLength &&
    b.at === r.at &&
    b.send.offset === r.send &&
    b.send.capacity === r.sendCapacity &&
    b.recv.offset === r.recv &&
    b.recv.capacity === r.recvCapacity
  );
}

/**
 * Move the connection in `m.slot` to the block the host made for it. The order matters if this
 * thread dies part way (the host then rebuilds from what it finds, WorkerNic.take): the new block's
 * record is written last, so while it is blank the old record and receive ring are the whole truth
 * and the new send ring is only brought up to the old one's read position; once it is written,
 * the new block is whole.
 */
function regrow(m: Extract<ToWorker, { t: 'regrow' }>): void {
  const slot = slotAt(m.slot);
  if (slot === undefined || slot.conn.released || !isBlock(slot.block, m.old)) {
    post({ t: 'grown', slot: m.slot, ok: false });
    return;
  }
  const t = m.to;
  const sab = canonicalSlab(t.sab, m.id);
  const to = knownBlock(sab, t.at, t.send, t.sendCapacity, t.recv, t.recvCapacity) ?? {
    sab,
    at: t.at,
    send: { sab, offset: t.send, capacity: t.sendCapacity },
    recv: { sab, offset: t.recv, capacity: t.recvCapacity },
  };
  let parts: BlockParts;
  try {
    parts = blockParts(to);
  } catch {
    engine.counters.inc('drop.nic.worker.bad-regrow');
    post({ t: 'grown', slot: m.slot, ok: false });
    return;
  }
  const conn = slot.conn;
  const d = conn.state.delegated;
  const oldSend = slot.send.shared!;
  // The host copied the old ring from position r0 on; what this thread has consumed since is
  // acknowledged and goes from the new ring too, so its read position is snd.una again.
  parts.send.consume(sharedRingAdvance(oldSend, m.r0, sharedRingPositions(oldSend).read));
  // The host reads nothing from the old receive ring until it hears 'grown': its unread bytes are
  // all there, and stay in order.
  if (slot.recv.length > 0) parts.recv.write(slot.recv.toArray());
  d.sendBuffer = parts.send;
  d.recvBuffer = parts.recv;
  slot.block = to;
  slot.record = parts.record;
  slot.send = parts.send;
  slot.recv = parts.recv;
  slot.transfer = parts.transfer;
  slotOfBlock.set(to, slot);
  writeRecord(slot);
  // The host may have granted less than asked (its share of the budget), or dropped an ask that
  // came while this grow was under way: the next ask is judged against the ring it has now.
  slot.growAsked = 0;
  post({ t: 'grown', slot: m.slot, ok: true });
  engine.counters.inc('nic.sndbuf.grown');
  kick(conn);
  touch(slot);
}

function connOp(m: Extract<ToWorker, { t: 'op' }>): void {
  const slot = slotAt(m.slot);
  if (slot === undefined || slot.conn.released) return;
  // Bytes written before this call are already in the ring: take them first, so a FIN follows them.
  drainDoorbell();
  const conn = slot.conn;
  try {
    switch (m.op) {
      case 'shutdown':
        conn.shutdown();
        break;
      case 'close':
        conn.close();
        break;
      case 'abort':
        conn.abort();
        break;
      case 'nodelay':
        conn.setNoDelay(m.on === true);
        break;
      case 'keepalive':
        conn.setKeepAlive(m.on === true, m.ms);
        break;
      default:
        unhandled(m.op, 'connection op');
    }
  } catch {
    engine.counters.inc('drop.nic.worker.bad-op');
  }
  deliverEvents(conn);
  touch(slot);
}

port.on('message', (m: ToWorker) => {
  // Handling a message is proof of life too. Node delivers every queued message in one turn, before
  // any timer: after a failover a burst of frame batches kept the heartbeat timer waiting for over
  // half a second, and the watchdog declared a busy survivor dead (then nothing was left to run on).
  enterUnit();
  progress();
  switch (m.t) {
    case 'rx': {
      const h = proxy?.handler;
      forEachFrame(m.buf, m.len, (frame) => {
        Atomics.add(db, DB_RX, 1);
        progress();
        if (
          (heldIn.size === 0 || !heldIn.offer(frame, undefined, false)) &&
          !noteFrame(frame, undefined, false)
        )
          h?.(frame);
      });
      drainDoorbell(BELL_BUDGET);
      return;
    }
    case 'host':
      forEachFrame(m.buf, m.len, (frame) => {
        Atomics.add(db, DB_HOST_SENT, 1);
        engine.sendFromHost(frame);
      });
      return;
    case 'carrier':
      proxy?.setCarrier(m.up);
      return;
    case 'send-from':
      steer.set(m.team, m.mac);
      return;
    case 'host-addrs':
      hostAddrs = new AddressFinder(m.view);
      return;
    case 'req':
      drainDoorbell();
      handleRequest(m.id, m);
      return;
    case 'op':
      connOp(m);
      return;
    case 'inject':
      injectPackets(m.packets, m.settled);
      return;
    case 'regrow':
      regrow(m);
      return;
    case 'peer':
      addPeer(m);
      return;
    case 'hands':
      addHands(m);
      return;
    case 'listen':
      listen(m);
      return;
    case 'unlisten':
      listenStops.get(m.id)?.();
      listenStops.delete(m.id);
      return;
    case 'slabs-gone':
      weighSlabsLetGo(m.ids);
      return;
    case 'held-closed':
      // A count from the host: not one, ignored; past what the worker could run, that.
      if (Number.isSafeInteger(m.n) && m.n >= 0) engine.heldClosed = Math.min(m.n, engine.capacity);
      return;
    case 'stall':
      if (m.pool) {
        holdPool(m.ms);
        return;
      }
      // Nothing runs meanwhile: no heartbeat, no frames, no timers. Only its silence tells.
      if (m.entered) {
        const w = new Int32Array(m.entered);
        Atomics.store(w, 0, 1);
        Atomics.notify(w, 0);
        // A word 1 lets the test end the stall early (it stores anything but 0 there).
        if (w.length > 1) {
          Atomics.wait(w, 1, 0, m.ms);
          return;
        }
      }
      pauseThread(m.ms);
      return;
    case 'close':
      writeProfile?.();
      // Closed, the engine aborts what it runs (RST): those not built yet too.
      buildPending();
      closed = true;
      owners?.markDead();
      engine.close();
      for (const s of slots) if (s) writeRecord(s);
      proxy?.flush();
      upBatch.flush();
      flushEvents();
      capturePipe?.close();
      for (const p of peers.splice(0)) {
        p.out.flush();
        p.port.close();
      }
      for (const h of hands.values()) {
        h.out.flush();
        h.port.close();
      }
      hands.clear();
      // After the last frames went out: a TAP's buffers and descriptors belong to the process, and
      // this thread's exit would not free them.
      link.close();
      // The host stops the thread at 'closed': a TAP whose poll was pending closes the read end
      // of its wake pipe only when that poll ends, so 'closed' waits for it (else it is left to
      // the host to free at the exit, if the exit comes first).
      if (tapLeft > 0) whenTapReleased = () => post({ t: 'closed' });
      else post({ t: 'closed' });
      return;
    default:
      unhandled(m, 'message');
  }
});

/** Heartbeats over which every record is refreshed once. */
// Say we are alive. No record is refreshed here: everything that changes a connection marks it
// first (a frame in or out, a packet, a call, an update, its timer: touch), and a quiet one's
// record and word stay as written, so the host sees it quiet (see quietReads).
const heartbeat = clock.createTimer(() => {
  Atomics.add(db, DB_BEAT, 1);
  heartbeats++;
  post({ t: 'hb', at: clock.now() });
  if (!closed) heartbeat.arm(boot.heartbeatMs);
});
heartbeat.arm(boot.heartbeatMs);
waitBell();
post({ t: 'hb', at: clock.now() });
// The boot's unit ends (see unitWords).
setImmediate(endUnit);

/**
 * Tests: a poll on a pipe nobody writes, waiting `ms` on the libuv pool, as a TAP reader's poll for
 * its next frame waits (the thread cannot exit before such a request ends).
 */
function holdPool(ms: number): void {
  const lib = loadLibc();
  const fds = new Int32Array(2);
  if (lib.pipe2(fds, 0) !== 0) throw new Error(`pipe2 failed (errno ${lib.errno()})`);
  const pfd = new Uint8Array(8);
  const v = new DataView(pfd.buffer);
  v.setInt32(0, fds[0]!, true);
  v.setInt16(4, 1 /* POLLIN */, true);
  lib.pollAsync(pfd, 1, Math.round(ms), () => {
    lib.close(fds[0]!);
    lib.close(fds[1]!);
  });
}
