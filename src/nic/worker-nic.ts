import { MessageChannel, type MessagePort, type TransferListItem, type Worker } from 'node:worker_threads';
import { type Clock, RealClock, type Timer } from '../core/clock.ts';
import { ConnectionError, InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import { networkInput, TurnQueue } from '../core/turn-queue.ts';
import type { Link } from '../link/link.ts';
import {
  closeWakeEnd,
  descriptorIdentity,
  detachTapDescriptor,
  keepWakeEnd,
  openTapDescriptors,
  releaseTapHeld,
  type TapHeld,
  tapMayUseNapiFrags,
  tapQueueEmpty,
  wakeTapPoll,
} from '../link/tap-link.ts';
import { AddressTable } from '../stack/address-table.ts';
import type { ConnectionHandle, TcpUser } from '../stack/tcp/tcp-types.ts';
import { ByteRing } from '../state/byte-ring.ts';
import { flattenTrees, type OffloadTree } from '../state/offload-tree.ts';
import type { AddressBook } from '../state/path-state.ts';
import { sharedRingAdvance, sharedRingCopy, sharedRingPositions } from '../state/shared-ring.ts';
import { decodeBatch, encodeBatch, releaseTreeAddresses } from '../state/state-codec.ts';
import type { TcpState } from '../state/tcp-state.ts';
import { BatchList } from './batch-list.ts';
import { TUPLE_READ, tcpTuple, tuple } from './frame-tuple.ts';
import {
  allocConnBlock,
  type ConnBlockRef,
  connRingCapacities,
  emptyHardState,
  type HardState,
  keepReleasedBlocks,
  RING_BUDGET_BYTES,
  ringGrowLimit,
  ringUnderLoad,
  sendRingAtPlacement,
  takeReleasedBlock,
} from './hard-state.ts';
import { type Crossing, HostNic } from './host-nic.ts';
import {
  type ClosedConnection,
  type ConnKey,
  connKeyId,
  type Handed,
  type InitiateOptions,
  type InitiateResult,
  isTreeTransfer,
  keyOfState,
  type Nic,
  type NicDeath,
  type NicIndications,
  type NicListenHooks,
  type NicListenSpec,
  type SalvageRecord,
  sameConnKey,
  type TerminateOptions,
  type Transfer,
} from './nic.ts';
import { settleHoldOf } from './nic-engine.ts';
import { splitForRecords } from './transfer-record.ts';
import { fromWireError, PortTransport, type WorkerNotice } from './transport.ts';
import { TupleMap } from './tuple-map.ts';
import { BornArenaIndex, type BornEntry } from './worker/born-arena.ts';
import { blockOfRings, onSlabGone, slabIdOf } from './worker/conn-blocks.ts';
import { OwnerTable } from './worker/owner-table.ts';
import { peerWorkers } from './worker/peers.ts';
import {
  CAP_DROPPED,
  CAP_IN_FLIGHT,
  DB_BEAT,
  DB_BELL,
  DB_BUSY,
  DB_DRAIN_AT,
  DB_DRAINS,
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
  doorbellWords,
  FrameBatcher,
  forEachFrame,
  newTapHeld,
  ON_MALFORMED_ANSWER,
  publishTapHeld,
  type RegrowBlock,
  realStamp,
  type ToWorker,
  takeTapHeld,
  unhandled,
  type WorkerBoot,
  WorkerProtocolError,
  type WorkerReply,
  type WorkerRequest,
} from './worker/protocol.ts';
import { spawnWorker } from './worker/spawn.ts';
import { packBlocks, packKeys, unpackInitiate, unpackInstalled } from './worker/transfer-wire.ts';
import {
  type BlockViews,
  blockViews,
  dropSpare,
  givenBlocks,
  knownViews,
  type PreparedConn,
  prepare,
  returnRecords,
  sameKeyOr,
  settled,
  viewsOf,
} from './worker-block-views.ts';
import { hand } from './worker-hand.ts';
import { WorkerConnectionHandle } from './worker-handle.ts';
import type { WorkerNicOptions, WorkerNicTestSeams } from './worker-nic-options.ts';
import { fillFromReleased, salvageOf } from './worker-released.ts';

export { WorkerConnectionHandle } from './worker-handle.ts';
export type { WorkerNicOptions, WorkerNicTestSeams } from './worker-nic-options.ts';

/** Closed handles a WorkerNic keeps for a settle's attachClosed at most (see keepUnclaimed). */
const UNCLAIMED_MAX = 64;

/**
 * How long a worker may take to send its first heartbeat before the watchdog's silence counts:
 * starting a thread and compiling its modules took 20-40 s on two cores at load 25-40 (measured
 * with the test suite running beside helpers' benchmarks), and a worker killed for that is one that
 * never ran, not a dead one, and takes the connections it was given with it (they are rebuilt or
 * lost) when it would have run them a moment later. Requests sent before then wait in its port; a
 * worker that never starts is still taken for dead, its waiting requests answered by the death.
 */
const START_ALLOWANCE_MS = 60_000;
/** How often `loaded` looks at the open gate. */
const LOADED_POLL_MS = 10;
/**
 * How long a closed worker has to answer 'closed' (its last frames flushed, its TAP closed) before
 * it is terminated. A terminated worker's TAP resources are freed at its exit all the same; the
 * bound is for a worker that hangs, and a loaded 2-core machine took more than 1 s to close a
 * healthy one (tap-link's 'closed, each time' found its TAP still open at the exit).
 */
const CLOSE_BOUND_MS = 5_000;

/** Where the worker's frames go while the host has no receiver: counted (see DB_UP), not handled. */
function ignoreFrame(_frame: Uint8Array): void {}

function closing(h: WorkerConnectionHandle): boolean {
  return h._closing;
}

/** A block as a 'regrow' names it. */
function regrowBlock(b: ConnBlockRef): RegrowBlock {
  return {
    sab: b.sab,
    at: b.at,
    send: b.send.offset,
    sendCapacity: b.send.capacity,
    recv: b.recv.offset,
    recvCapacity: b.recv.capacity,
  };
}

/** Owner numbers of transfer records, one per WorkerNic of this process. */
let nextRecordOwner = 1;

/** Why a WorkerNic is gone: the failover layer rebuilds its connections from hard state. */
export type WorkerDeath = NicDeath;

/** What survives of one connection of a dead worker: enough for rebuildTcpState. */
export type SalvagedConnection = SalvageRecord;

/** The indications of a WorkerNic: those of every NIC (the common interface has them all now). */
export type WorkerNicIndications = NicIndications;

// Compiled, this module is a .js file beside a compiled worker; from source (tsx), both are .ts.
const SELF_EXT = import.meta.url.endsWith('.js') ? 'js' : 'ts';
const DEFAULT_CAPACITY = 65536;
/**
 * How long after the host's burst of placements ends the grows it held wait (Nic.placing): a
 * burst's accepts arrive in waves (the client's SYNs resent 1 s apart), and a wave that comes
 * within this finds the rings not yet grown.
 */
const GROW_QUIET_MS = 500;
/**
 * Connections whose events reach their sockets in one turn of the main thread, and the turn's
 * length after which the rest wait for the next (TurnQueue). A delivery is mostly the application
 * refilling a send ring (0.1-1 ms each under load): all of a worker's events in one turn held
 * serve's main thread 0.3-1.2 s at a time at 1,000 downloads, and a worker's death, its
 * heartbeats and the team's timers waited behind them.
 */
const DELIVERIES_PER_TURN = 32;
const DELIVERY_SLICE_MS = 8;
/**
 * Frames a worker passed up that reach the host stack in one turn, and the turn's length after
 * which the rest wait for the next (TurnQueue). After a crash the other workers pass up every
 * frame of the dead worker's connections until they are rebuilt, and one 'up' message of them
 * held serve's main thread in one turn: 525 ms of its blocks at 1,000 downloads (BENCHMARKS.md,
 * tap-team, s34h2).
 */
const UP_FRAMES_PER_TURN = 64;
const UP_SLICE_MS = 8;
/**
 * Frames passed up that have waited this long run past their turn's share, up to
 * UP_AGED_SLICE_MS a turn: with the deliveries' refills, the http service's writes and the
 * placements between them, 64 frames a turn left a connect burst's handshakes waiting past the
 * peer's and the host's 1 s timers (resent SYNs and SYN-ACKs), until an answer flushed the whole
 * backlog in one block (259 ms of serve's blocks at 1,000 downloads, BENCHMARKS.md, s37h3).
 */
const UP_AGED_MS = 250;
const UP_AGED_SLICE_MS = 24;
/**
 * What the worker says that may act before the frames it passed up earlier reached the host
 * stack: none of it touches the host's tables (see WorkerNic.onMessage).
 */
const UP_MAY_PASS: ReadonlySet<WorkerNotice['t']> = new Set(['up', 'hb', 'tx', 'cap', 'ev', 'grow', 'grown']);
/**
 * Queued in place of the frames of an 'up' batch that did not parse: the frame count then comes
 * from the worker's (DB_UP, less the frames queued behind it) once the frames before it reached
 * the host.
 */
const UP_RESYNC = new Uint8Array(0);
/**
 * Grows run at most this many a turn of the main thread (each allocates a block and copies a send
 * ring), held or asked for now: the port hands every message queued in one callback, and the
 * worker's grows for a whole wave of connections ran in one turn (regrow, 5 % of serve's main
 * thread blocks at 1,000 downloads at load 50, BENCHMARKS.md, s47h9).
 */
export const GROWS_PER_TURN = 16;
/** The file header a PcapWriter starts its first chunk with. */
const PCAP_FILE_HEADER = 24;
export const DEFAULT_RING = 256 * 1024;

/** Fault injection for tests of the transfer protocol. */
export interface WorkerNicFaults {
  /**
   * So many of the next hand-overs (`handTo`) answer null, changing nothing, as a pair that cannot
   * hand does: the caller takes the general way (terminate here, initiate there) for their parts.
   */
  cannotHand?: number;
}

/**
 * Of what detachTap took (`taken`, each fd's descriptorIdentity then in `ids`), what the exit may
 * free: a descriptor the thread closed itself after the detach (it ran on to its TapLink's close) is
 * no longer the same file, and its number may be another's by now.
 */
function stillTaken(taken: TapHeld | null, ids: readonly (string | null)[]): TapHeld | null {
  if (taken === null) return null;
  return {
    addrs: taken.addrs,
    fds: taken.fds.filter((fd, i) => ids[i] !== null && descriptorIdentity(fd) === ids[i]),
  };
}

/** Both lists as one, each item once (what a detached thread's list still named, and what it took). */
function heldOf(a: TapHeld | null, b: TapHeld | null): TapHeld | null {
  if (a === null || b === null) return a ?? b;
  return {
    addrs: [...new Set([...a.addrs, ...b.addrs])],
    fds: [...new Set([...a.fds, ...b.fds])],
  };
}

/**
 * An offload target on its own worker thread (design section 7). The worker runs a NicEngine on
 * wall-clock time; this object is its main-thread side: the host side every NIC shares
 * (`HostNic`) over a `PortTransport`, verbs being typed requests over the worker's port. Frames
 * cross in batches, and each offloaded connection's payload and hard state live in shared memory
 * that outlives the worker.
 */
export class WorkerNic extends HostNic {
  readonly capacity: number;
  /**
   * Hand connections to the worker as transfer records in their shared blocks (the default), or
   * (false) every state through the codec, as across a process boundary (`Nic.useRecords`).
   */
  override useRecords = true;
  /**
   * Connections this NIC's initiates handed over through the codec although records were on:
   * their SACK scoreboard or out-of-order runs were longer than a record holds, or their
   * out-of-order data did not fit the receive ring (`nic.worker.record-fallbacks` in counters()).
   */
  recordFallbacks = 0;
  /** Fault injection (tests). */
  readonly faults: WorkerNicFaults = {};
  readonly recordOwner = nextRecordOwner++;
  private readonly ringCapacity: number;
  private readonly placementRing: number;
  /** WorkerNicOptions.sendPlacementRing; 0 when unset. */
  private readonly sendPlacementRing: number;
  /**
   * @internal The send ring a connection placed while the NIC's share covers it gets
   * (sendPlacementRing): its socket may fill it at once, as a grown one
   * (WorkerConnectionHandle.sendGrown). Unset, no placed ring counts as grown.
   */
  get placedRing(): number {
    return this.sendPlacementRing > 0 ? this.sendPlacementRing : Number.POSITIVE_INFINITY;
  }
  readonly worker: Worker;
  /** The host's end of the channel whose other end the thread holds (WorkerBoot.end). */
  private readonly threadEnd: MessagePort;
  /** @internal */
  readonly clock: Clock;
  /** @internal Its handles waiting to tell their sockets of events, a bounded number per turn. */
  readonly deliveries: TurnQueue<WorkerConnectionHandle>;
  /** @internal */
  readonly port: PortTransport;
  /** @internal Set once the NIC is closed (or crashed): no verb runs after it (worker-hand.ts reads it). */
  declare closed: boolean;
  private hostCarrier: boolean;
  private readonly link: Link | null;
  private readonly doorbell: Int32Array;
  private readonly flagsAt: number;
  private readonly quietAt: number;
  private readonly qLen: number;
  /**
   * @internal Handles by the worker's slot index (dense, from 0; the protocol bounds it): an array, where a
   * Map of 10,000 slots paid a hash and its deleted entries' rehash on each move's set and delete.
   */
  readonly handles: (WorkerConnectionHandle | undefined)[] = [];
  /**
   * @internal With spares: each connection moved here took a new entry that lived, and was promoted, until
   * its next move (as the worker's own maps did, see TupleMap).
   */
  readonly byKey = new TupleMap<WorkerConnectionHandle>(true);
  /** @internal Bumped by every change of `byKey` but an install's own (see `installedList`). */
  keyEpoch = 0;
  /**
   * The handles the last install took up, in its answer's order, and the one `attach` tries next:
   * the settle that follows attaches the same connections in the same order, so each is one tuple
   * compared instead of a search of `byKey`. Used only while `byKey` is as that install left it
   * (`installedEpoch`); any other order, or a change between, takes the search.
   */
  private installedList: WorkerConnectionHandle[] = [];
  private installedNext = 0;
  private installedEpoch = -1;
  private readonly rxBatch: FrameBatcher;
  private readonly hostBatch: FrameBatcher;
  /** This thread's own descriptor of the TAP's wake pipe (keepWakeEnd), -1 without one. */
  private wakeEnd = -1;
  /** What the worker's TAP holds of the process, listed in shared memory (protocol.ts, TapHeld). */
  private readonly tapHeld: SharedArrayBuffer;
  /** The TAP's descriptor the host made for the worker (openTapDescriptors), -1 without one. */
  private readonly tunFd: number;
  /** What detachTap took of that list; freed at the exit. */
  private detached: TapHeld | null = null;
  /** The descriptorIdentity of each of `detached`'s fds once detached (see stillTaken). */
  private detachedIds: (string | null)[] = [];
  /** Terminates a closed worker that has not answered 'closed' within CLOSE_BOUND_MS. */
  private closeTimer: Timer | null = null;
  /** Whether detachTap let the TAP go (its answer, kept for the next asker). */
  private tapLetGo = false;
  private exited = false;
  private linkCarrier: boolean;
  /** @internal */
  conns = 0;
  private readonly captureWords: Int32Array | null;
  private readonly captureSink: ((records: Uint8Array) => void) | null;
  private captureStarted = false;
  /** The worker's drain count as last reported to the team (see rxReadState). */
  private drainsSeen = 0;
  /** Frames from the worker's 'up' batches handed to the host stack (see DB_UP). */
  private upSeen = 0;
  /** Frames from the worker's 'up' batches waiting for their turn to reach the host stack. */
  private readonly upFrames: TurnQueue<Uint8Array>;
  /** Of those, the frames (not UP_RESYNC marks): the worker's count already holds them. */
  private upQueued = 0;
  /** The connections the worker runs, for the other workers of a team (worker/peers.ts). */
  readonly owners: OwnerTable;
  /**
   * What the worker's TAP still held of the process when its thread exited (killed, or stopped
   * before it closed the TAP), freed here then: native buffers and descriptors. Null: nothing.
   */
  releasedAtExit: { native: number; fds: number } | null = null;
  /**
   * Resolves with the thread's exit code once it has exited and what its TAP held is released:
   * from then on the TAP is free for another opener (a team's host carrying on there, TeamMember
   * `hostPortAfterDeath`).
   */
  readonly threadExited: Promise<number>;
  private exitedResolve: (code: number) => void = () => {};
  /** WorkerNicOptions.openWhenLet's gate (WorkerBoot.openGate), or null. */
  private readonly openGate: Int32Array | null;
  /**
   * With `openWhenLet`: resolves once the worker has loaded its code and waits to open its TAP
   * (`letOpen`); rejects if it dies first. Null without.
   */
  readonly loaded: Promise<void> | null;

  constructor(opts: WorkerNicOptions, seams: WorkerNicTestSeams = {}) {
    if (!opts || typeof opts.id !== 'string') throw new InvalidArgumentError('WorkerNic needs an id');
    const capacity = opts.capacity ?? DEFAULT_CAPACITY;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1 << 22) {
      throw new InvalidArgumentError(`WorkerNic capacity must be an integer in 1..${1 << 22}`);
    }
    const ringCapacity = opts.ringCapacity ?? DEFAULT_RING;
    if (!Number.isInteger(ringCapacity) || ringCapacity < 1024 || ringCapacity > 0x3fffffff) {
      throw new InvalidArgumentError('ringCapacity must be an integer of at least 1024 bytes');
    }
    const heartbeatMs = opts.heartbeatMs ?? 50;
    const deadAfterMs = opts.deadAfterMs ?? 2000;
    if (!(heartbeatMs > 0) || !(deadAfterMs > heartbeatMs)) {
      throw new InvalidArgumentError('heartbeatMs must be > 0 and deadAfterMs above it');
    }
    // Checked here as the engine checks it, so a bad bound is refused before a thread is spawned
    // (the worker's engine would throw it in its thread, where nobody catches it).
    if (seams.settleHoldMs !== undefined) settleHoldOf(seams.settleHoldMs);
    const freeBound = seams.tapFreeBoundMs;
    if (freeBound !== undefined && !(Number.isFinite(freeBound) && freeBound >= 0))
      throw new InvalidArgumentError(
        `tapFreeBoundMs must be a finite number of ms, 0 or more, got ${freeBound}`,
      );
    const sab = new SharedArrayBuffer(doorbellWords(capacity) * 4);
    const captureWords = opts.capture ? new Int32Array(new SharedArrayBuffer(8)) : null;
    const link = 'tap' in opts.link ? null : opts.link;
    const tap = 'tap' in opts.link ? opts.link.tap : null;
    const owners = new OwnerTable(OwnerTable.create(capacity));
    const tapHeld = newTapHeld();
    // The TAP's descriptors and native buffers are made here, listed before the thread runs: a
    // kill between one's making and its listing in the thread would leak it for the process's life.
    const fds =
      tap !== null && tap.fds === undefined ? openTapDescriptors(tap.tunPath, tapMayUseNapiFrags(tap)) : null;
    const wakeEnd = fds === null ? -1 : keepWakeEnd(fds.wake[1]);
    if (fds !== null)
      publishTapHeld(new BigInt64Array(tapHeld), {
        addrs: fds.native === undefined ? [] : [fds.native.tbuf, fds.native.iov],
        fds: [fds.ctl, fds.tun, ...fds.wake],
      });
    const openGate = tap !== null && opts.openWhenLet === true ? new SharedArrayBuffer(8) : null;
    const ends = new MessageChannel();
    const boot: WorkerBoot = {
      id: opts.id,
      seed: opts.seed ?? 1,
      isnSecret: opts.isnSecret,
      capacity,
      ringCapacity,
      heartbeatMs,
      reachabilityIntervalMs: opts.reachabilityIntervalMs ?? 0,
      doorbell: sab,
      capture: captureWords ? (captureWords.buffer as SharedArrayBuffer) : undefined,
      owners: owners.sab,
      tapHeld,
      stopWhileOpening: seams.stopWhileOpening,
      handGapMs: seams.handGapMs,
      handGate: seams.handGate,
      stopBeforeBorn: seams.stopBeforeBorn,
      handHoldMs: seams.handHoldMs,
      peerFlushDelayMs: seams.peerFlushDelayMs,
      buildTurnMs: seams.buildTurnMs,
      settleHoldMs: seams.settleHoldMs,
      tapFreeBoundMs: seams.tapFreeBoundMs,
      openGate: openGate ?? undefined,
      end: ends.port2,
      exitHeldBy: seams.exitHeldBy,
      link: link
        ? { kind: 'proxy', name: link.name, mtu: link.mtu, carrier: link.carrier }
        : { kind: 'tap', options: fds === null ? tap : { ...tap!, fds } },
    };
    const mtu = link ? link.mtu : (tap?.mtu ?? 1500);
    let worker: Worker;
    try {
      worker = spawnWorker(new URL(`./worker/nic-worker.${SELF_EXT}`, import.meta.url), {
        workerData: boot,
        transferList: [ends.port2],
      });
    } catch (e) {
      const held = takeTapHeld(new BigInt64Array(tapHeld));
      if (held !== null) releaseTapHeld(held);
      closeWakeEnd(wakeEnd);
      ends.port1.close();
      throw e;
    }
    // The host link and the transport reach this object once it exists (the worker's first
    // message, and the host's first frame, come after the constructor returns).
    let self: WorkerNic | undefined;
    const clock = opts.clock ?? new RealClock();
    const doorbell = new Int32Array(sab);
    const port = new PortTransport(
      worker,
      (m) => self?.onMessage(m),
      () => self?.upFrames.flush(),
      (raw) => self?.onRefused(raw),
    );
    super(
      opts.id,
      {
        send: (frame) => self?._hostSend(frame) === true,
        mtu,
        get carrier() {
          return self?.hostCarrier === true;
        },
      },
      port,
      clock,
      {
        // Bumped by the thread on its timer and before every unit of work, in shared memory: read
        // whatever the thread is doing (a busy worker is not a dead one, design section 6).
        count: () => Atomics.load(doorbell, DB_BEAT),
        heartbeatMs,
        deadAfterMs,
        startAllowanceMs: START_ALLOWANCE_MS,
      },
    );
    self = this;
    // The thread's end closes as its runtime tears it down: a thread told to stop is known dead
    // then, not at its exit (Liveness.gone). Unreferenced: it keeps no process alive.
    this.threadEnd = ends.port1;
    this.threadEnd.unref();
    this.threadEnd.once('close', () => this.liveness.gone());
    this.threadExited = new Promise((resolve) => {
      this.exitedResolve = resolve;
    });
    this.owners = owners;
    this.port = port;
    this.worker = worker;
    this.wakeEnd = wakeEnd;
    this.tapHeld = tapHeld;
    this.tunFd = fds?.tun ?? -1;
    this.capacity = capacity;
    this.ringCapacity = ringCapacity;
    this.placementRing = Math.min(ringCapacity, opts.placementRing ?? ringCapacity);
    this.sendPlacementRing = Math.min(ringCapacity, opts.sendPlacementRing ?? 0);
    this.clock = clock;
    this.openGate = openGate === null ? null : new Int32Array(openGate);
    this.loaded = openGate === null ? null : this.whenLoaded();
    this.deliveries = new TurnQueue<WorkerConnectionHandle>(
      this.clock,
      (h) => h._deliver(),
      DELIVERIES_PER_TURN,
      DELIVERY_SLICE_MS,
      // Every live WorkerNic's frames passed up in this thread run ahead of any one's deliveries.
      { ahead: networkInput.run },
    );
    this.upFrames = new TurnQueue<Uint8Array>(this.clock, this.upFrame, UP_FRAMES_PER_TURN, UP_SLICE_MS, {
      agedMs: UP_AGED_MS,
      agedSliceMs: UP_AGED_SLICE_MS,
    });
    networkInput.add(this.upFrames);
    this.doorbell = doorbell;
    this.flagsAt = doorbellFlagsAt(capacity);
    this.quietAt = doorbellQuietAt(capacity);
    this.qLen = capacity + 1;
    this.captureSink = opts.capture ?? null;
    this.captureWords = captureWords;
    this.link = link;
    this.linkCarrier = link ? link.carrier : false;
    this.hostCarrier = this.linkCarrier;
    this.rxBatch = new FrameBatcher(
      (buf, len) => this.post({ t: 'rx', buf, len }, [buf]),
      (cb) => this.clock.defer(cb),
    );
    this.hostBatch = new FrameBatcher(
      (buf, len) => this.post({ t: 'host', buf, len }, [buf]),
      (cb) => this.clock.defer(cb),
    );
    this.worker.on('error', (error: Error) => this.die({ kind: 'error', error }));
    this.worker.on('exit', (exitCode: number) => {
      this.unwatchSlabs();
      // Killed, or stopped before it closed its TAP (a close that timed out): what that TAP held
      // of the process would be lost for good.
      this.exited = true;
      this.closeTimer?.disarm();
      const held = heldOf(
        takeTapHeld(new BigInt64Array(tapHeld)),
        stillTaken(this.detached, this.detachedIds),
      );
      this.detached = null;
      if (held !== null) {
        releaseTapHeld(held);
        this.releasedAtExit = { native: held.addrs.length, fds: held.fds.length };
      }
      closeWakeEnd(this.wakeEnd);
      this.wakeEnd = -1;
      this.exitedResolve(exitCode);
      if (!this.closed) this.die({ kind: 'exit', exitCode });
    });
    if (link) {
      link.onFrame((frame) => this.rxBatch.push(frame));
      // The carrier of a main-thread link is known here first: indicate it at once rather than
      // after a round trip through the worker, which a busy worker can stretch past a team's
      // probe deadline (a cut cable would then be reported as lost reachability).
      link.onCarrier((up, since) => {
        if (this.closed || this.death) return;
        this.post({ t: 'carrier', up });
        if (up === this.linkCarrier) return;
        this.linkCarrier = up;
        this.hostCarrier = up;
        this.host.carrierChanged(up);
        this.emit('link', up, since ?? this.clock.now());
      });
    }
    this.growTimer = this.clock.createTimer(() => this.runHeldGrows()).unref();
    this.unwatchSlabs = onSlabGone((id) => {
      if (!this.closed && this.death === null) this.post({ t: 'slabs-gone', ids: [id] });
    });
  }

  /** Stop telling the worker of buffers the host let go (see conn-blocks' HELD). */
  private readonly unwatchSlabs: () => void;

  /** Connections it runs, and those closed whose blocks sockets hold unread (heldClosed). */
  get load(): number {
    return this.conns + this.heldClosed;
  }
  /** Connections it runs (`load` without the held-closed blocks). */
  get runningConns(): number {
    return this.conns;
  }

  // ---- closed connections' blocks the application still holds -----------------------------------

  /**
   * Connections the worker closed (and freed their slots) whose handle a socket still holds with
   * bytes unread, and the bytes they hold. Linux keeps a closed socket's queued data charged to
   * tcp_mem until recvmsg frees it or close(2) purges it (the host's own connections:
   * TcpBudget.holdUnread); here the unread bytes, copied out of the block when it closed (the
   * block let go: holdClosed), are the memory, and this NIC's account is where it is charged:
   * each takes a place of `capacity` (the load, and the worker's room: NicEngine.heldClosed, so
   * its SYNs and installs are refused at the limit) and its bytes count against RING_BUDGET_BYTES
   * (no grows past it). Without it, paused sockets of reset connections held blocks nothing
   * counted, in any number.
   */
  private heldClosed = 0;
  private heldClosedBytes = 0;
  /** The count the worker was last told ('held-closed'), and whether a message is due this turn. */
  private heldTold = 0;
  private heldTellQueued = false;

  /** Closed connections' blocks held by their sockets with bytes unread: count and bytes (tests, bench). */
  get heldAfterClose(): { count: number; bytes: number } {
    return { count: this.heldClosed, bytes: this.heldClosedBytes };
  }

  /**
   * Its slot freed with bytes unread and a socket to read them: held, the unread bytes kept in
   * memory of their own and the block let go (WorkerConnectionHandle._keepUnreadOnly), so what
   * is counted is what is held.
   */
  private holdClosed(h: WorkerConnectionHandle): void {
    if (h.heldBytes > 0 || h.appDone || h.detached || h.recvRing.length === 0) return;
    if (h.user === null) {
      this.keepUnclaimed(h);
      return;
    }
    h.heldBytes = h._keepUnreadOnly();
    this.heldClosed++;
    this.heldClosedBytes += h.heldBytes;
    this.tellHeld();
  }

  /** Closed handles kept for a settle's attachClosed (keepUnclaimed), by tuple, oldest first. */
  private readonly unclaimed = new TupleMap<WorkerConnectionHandle>();

  /**
   * Closed before anything attached to it: a transfer's install whose peer reset it during the
   * settle. What the peer sent before is kept for that settle's attachClosed (the application
   * reads it before it hears the reset), out of the block, which goes. Not counted in
   * `heldClosed` until claimed, and at most UNCLAIMED_MAX kept, the oldest let go first: a
   * connection born here and reset before the host accepted it is never claimed, and a peer that
   * did that over and over would otherwise hold the NIC's room or the host's memory.
   */
  private keepUnclaimed(h: WorkerConnectionHandle): void {
    if (this.unclaimed.size >= UNCLAIMED_MAX) {
      const oldest = this.unclaimed.oldestKey();
      if (oldest !== undefined) this.dropUnclaimed(oldest);
    }
    h._keepUnreadOnly();
    this.unclaimed.set(h, h);
  }

  attachClosed(key: ConnKey, user: TcpUser | null): ClosedConnection | null {
    if (this.unclaimed.size === 0) return null;
    const h = this.unclaimed.get(key);
    if (h === undefined) return null;
    this.unclaimed.delete(key);
    // Its events came with no one to hear them, the close among them: the caller tells `user`.
    const remoteEnded = h._dropPending();
    h.user = user;
    // Held for a socket from now on, as any closed one (holdClosed), until read or let go.
    h.heldBytes = h.recvRing.capacity;
    this.heldClosed++;
    this.heldClosedBytes += h.heldBytes;
    this.tellHeld();
    return { handle: h, remoteEnded, error: h._closeError };
  }

  /** A kept closed handle of `key` nobody claimed (the tuple installed again, or the NIC closed). */
  private dropUnclaimed(key: ConnKey): void {
    const h = this.unclaimed.get(key);
    if (h === undefined) return;
    this.unclaimed.delete(key);
    h.dropUnread();
  }

  /** @internal The application read the rest or let go (WorkerConnectionHandle.read, dropUnread). */
  _unholdClosed(h: WorkerConnectionHandle): void {
    if (h.heldBytes === 0) return;
    this.heldClosed--;
    this.heldClosedBytes -= h.heldBytes;
    h.heldBytes = 0;
    this.tellHeld();
  }

  /** The worker hears the count once a turn, however many changed in it. */
  private tellHeld(): void {
    if (this.heldTellQueued) return;
    this.heldTellQueued = true;
    this.clock.defer(this.tellHeldNow);
  }
  private readonly tellHeldNow = (): void => {
    this.heldTellQueued = false;
    if (this.heldTold === this.heldClosed || this.closed || this.death !== null) return;
    this.heldTold = this.heldClosed;
    this.post({ t: 'held-closed', n: this.heldClosed });
  };
  get linkUp(): boolean {
    return this.linkCarrier && this.death === null;
  }
  /** Frames left out of the capture because the main thread's writer fell behind (0 without capture). */
  get captureDropped(): number {
    return this.captureWords ? Atomics.load(this.captureWords, CAP_DROPPED) : 0;
  }
  /**
   * The thread's proof-of-life count, what the watchdog reads (wraps at 2^32): it moves while the
   * thread runs, before its engine does too (a restart waiting for its TAP).
   */
  get beats(): number {
    return Atomics.load(this.doorbell, DB_BEAT) >>> 0;
  }
  /** Frames the worker's link has received so far (wraps at 2^32): evidence the link reaches the segment. */
  get rxFrames(): number {
    return Atomics.load(this.doorbell, DB_RX) >>> 0;
  }
  /**
   * How far the worker's TAP reader has caught up: how often it read its queue empty, and whether
   * the queue is empty right now (null for a proxied link, whose frames arrive from this thread).
   */
  rxReadState(): { drains: number; empty: boolean | null; drainedAt?: number } {
    // A worker busy with other messages may not have written the host's latest frames (a probe
    // among them) yet: its reader draining the queue, or the queue being empty, says nothing of the
    // probe's answer until it has. Report no progress until it catches up.
    // Nor while frames the worker read, an answer perhaps among them, are still on their way here.
    if (
      Atomics.load(this.doorbell, DB_HOST_SENT) >>> 0 !== this.hostBatch.frames >>> 0 ||
      this.hostBatch.pending ||
      Atomics.load(this.doorbell, DB_UP) !== this.upSeen
    ) {
      return { drains: this.drainsSeen, empty: false };
    }
    const fd = this.liveness.running && this.death === null ? Atomics.load(this.doorbell, DB_TAP_FD) : -1;
    this.drainsSeen = Atomics.load(this.doorbell, DB_DRAINS) >>> 0;
    if (fd <= 0) return { drains: this.drainsSeen, empty: null };
    return { drains: this.drainsSeen, empty: tapQueueEmpty(fd), drainedAt: this.clockOf(DB_DRAIN_AT) };
  }

  /**
   * The earliest time (clock ms) the latest frame counted by rxFrames could have arrived: when the
   * worker's TAP reader last read its queue empty before it. Now for a proxied link (its frames
   * arrive from this thread as they come), or a worker not running.
   */
  rxSince(): number {
    const now = this.clock.now();
    const fd = this.liveness.running && this.death === null ? Atomics.load(this.doorbell, DB_TAP_FD) : -1;
    return fd > 0 ? this.clockOf(DB_RX_SINCE) : now;
  }

  /** The realStamp() in doorbell word `w` as this thread's clock time. */
  private clockOf(w: number): number {
    const ageMs = ((realStamp() - Atomics.load(this.doorbell, w)) | 0) / 16;
    return this.clock.now() - Math.max(0, ageMs);
  }

  // ---- the verbs ----------------------------------------------------------------------------------

  protected offer(transfer: Transfer, opts: InitiateOptions | undefined): Promise<InitiateResult> {
    return this.cross(() => this.offered(transfer, opts));
  }

  /**
   * Trees given as objects cross the thread boundary as the codec's bytes (times as deltas),
   * without their data: every connection's rings are in a shared block named beside the batch,
   * which the host holds until the worker answers (and after, if it dies meanwhile).
   */
  private offered(
    transfer: Transfer,
    opts: InitiateOptions | undefined,
  ): Crossing<WorkerReply<'initiate'>, InitiateResult> {
    let states = opts?.states;
    const now = this.clock.now();
    if (isTreeTransfer(transfer)) states ??= flattenTrees(transfer.trees);
    // The prod must happen in the worker, as the connections are installed: a failover that loses
    // it leaves every moved connection's peer waiting for its own retransmission timer.
    if (states) this.bindAddresses(states);
    // The blocks first: a connection's out-of-order data travels in its block's receive ring.
    const byState = new Map<TcpState, PreparedConn>();
    const prepared = states ? this.preallocate(states, byState) : undefined;
    // Given back, or kept for salvage on a NIC already dead, whether the request fails before it
    // leaves (a batch that does not encode: its blocks and offered records were the host's all
    // along, and nothing else let go of them) or after.
    const failed = (e: unknown, sent: boolean): unknown => {
      if (this.death === null) returnRecords(prepared);
      else this.keepForSalvage(prepared);
      settled(prepared);
      // Closed by its owner with the batch in hand (posted: a close() before the answer still
      // reaches the worker after it): the worker installs it, then its close aborts (RST) all
      // it runs. Rolled back into the host, those connections would run on as if nothing
      // happened, and their sockets hear of the RST only at their next segment, or never when idle.
      if (sent && this.closed && this.death === null)
        return new ConnectionError('ECONNABORTED', `NIC ${this.id} closed with the batch in hand`);
      return e;
    };
    try {
      return this.encoded(transfer, opts, now, prepared, byState, failed);
    } catch (e) {
      throw failed(e, false);
    }
  }

  /** The rest of `offered`, once the blocks are the batch's: what the worker is sent. */
  private encoded(
    transfer: Transfer,
    opts: InitiateOptions | undefined,
    now: number,
    prepared: BatchList<PreparedConn> | undefined,
    byState: Map<TcpState, PreparedConn>,
    failed: (e: unknown, sent: boolean) => unknown,
  ): Crossing<WorkerReply<'initiate'>, InitiateResult> {
    let batch: Uint8Array;
    // Between threads the connections' states go as transfer records in their blocks (all but
    // those travelsAsRecord keeps in the codec), and the batch carries the neighbors and paths.
    let recordPaths: Map<TcpState, number> | null = null;
    if (isTreeTransfer(transfer)) {
      let trees = transfer.trees;
      if (this.useRecords && prepared !== undefined) {
        let codec: number;
        ({
          paths: recordPaths,
          trees,
          codec,
        } = splitForRecords(trees, (s) => byState.get(s)?.views.recv ?? null));
        this.recordFallbacks += codec;
      }
      batch = encodeBatch(trees, now, { skipValidation: true, ringsByRef: true });
    } else batch = transfer as Uint8Array;
    const owner = recordPaths === null ? undefined : this.recordOwner;
    if (recordPaths !== null && prepared !== undefined && owner !== undefined) {
      for (const [s, path] of recordPaths) {
        const p = byState.get(s)!;
        p.offered = true;
        p.views.transfer.write(s, now, path, owner, p.views.recv);
      }
    }
    const prod = opts?.prod === true;
    const holdInput = opts?.holdInput === true ? true : undefined;
    return {
      send: async () => {
        const blocks =
          prepared === undefined
            ? undefined
            : packBlocks(
                prepared.size,
                (i) => prepared.list[i]!.key,
                (i) => prepared.list[i]!.views.block,
                this.hostAddrs,
              );
        this.initiating++;
        try {
          return await this.request({ op: 'initiate', arg: { batch, prod, blocks, owner, holdInput } });
        } finally {
          this.initiating--;
          if (this.initiating === 0 && !this.placingBurst && this.heldGrows.size > 0) this.runHeldGrows();
        }
      },
      failed,
      took: (res) => {
        try {
          return this.takeInstalled(res, prepared, owner);
        } catch (e) {
          // An answer that does not unpack: the worker is taken as dead, having maybe run them.
          if (this.death !== null) this.keepForSalvage(prepared);
          throw e;
        } finally {
          settled(prepared);
        }
      },
    };
  }

  /**
   * @internal Dead before it answered an initiate: it may have run these connections meanwhile (sent,
   * acknowledged, taken in data), and only the memory it ran them on knows how far. The host
   * holds that memory (it allocated it, or a source worker released into it): keep it for
   * salvage(), as for any connection the worker ran.
   */
  keepForSalvage(prepared: BatchList<PreparedConn> | undefined): void {
    if (prepared === undefined) return;
    for (const p of prepared.list) {
      if (this.byKey.has(p.key)) continue;
      const key = p.key;
      this.keyEpoch++;
      const h = new WorkerConnectionHandle(this, key, -1, p.views.block, p.views);
      h._installedWith(p.state?.cached ?? p.settings);
      this.byKey.set(key, h);
      this.conns++;
    }
  }

  /**
   * @internal Released by a hand-over (`forget` let go of their slots), refused by the destination,
   * and what the worker handed back for them cannot be read: their blocks still hold the hard state
   * the worker wrote as it let go of them, and no thread runs them. Listed again, slot-less, for
   * salvage() (`Handed.readRefused`), the only way left to rebuild them; a slot of theirs may be a
   * new connection's already.
   */
  keepReleased(released: readonly WorkerConnectionHandle[]): void {
    for (const h of released) {
      // Taken up by a survivor since (a dead NIC's handle, handleOf): its connection runs there.
      if (!h.nicIs(this) || !h.unlisted || this.byKey.has(h)) continue;
      h.slot = -1;
      h.unlisted = false;
      this.keyEpoch++;
      this.byKey.set(h, h);
      this.conns++;
    }
  }

  /** @internal The connections of an initiate's answer the worker installed, taken up here. */
  takeInstalled(
    res: WorkerReply<'initiate'>,
    prepared: BatchList<PreparedConn> | undefined,
    owner: number | undefined,
  ): InitiateResult {
    let unpacked: ReturnType<typeof unpackInstalled>;
    try {
      unpacked = unpackInstalled(res.value, this.hostAddrs, givenBlocks(prepared));
    } catch (e) {
      const error = new WorkerProtocolError(`initiate answer: ${(e as Error).message}`);
      this.port.refuse(null, error);
      this.defective(error);
      throw error;
    }
    const { result, keys, slots, blocks } = unpacked;
    // What the worker did not install is the host's again.
    if (owner !== undefined && keys.length !== prepared?.size) returnRecords(prepared, owner);
    prepared?.rewind();
    // Installed here again, a connection is no longer passed up: the worker may hold its segments.
    const passedUp = this.passedUpTable();
    const anyPassedUp = passedUp.size > 0;
    const list = new Array<WorkerConnectionHandle>(keys.length);
    const sizeBefore = this.byKey.size;
    this.byKey.reserve(keys.length);
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      const slot = slots[i]!;
      if (anyPassedUp) passedUp.delete(key);
      if (this.unclaimed.size > 0) this.dropUnclaimed(key);
      const p = prepared?.get(key);
      const h =
        p === undefined
          ? new WorkerConnectionHandle(this, key, slot, blocks[i]!)
          : this.handleOf(p, key, slot, blocks[i]!);
      if (p === undefined) h._installedWith(null);
      else if (p.state === null) {
        // Handed from worker to worker: the source's handle let go of the connection, and its
        // settings object (its own since the first install) is this handle's from now on.
        h.settings = p.settings;
      } else {
        h._installedWith(p.state.cached);
        // Taken by the worker from its record: the state object is free for this block's next read.
        if (p.offered) p.views.spare = p.state;
      }
      this.handles[slot] = h;
      this.byKey.set(h, h);
      h.unlisted = false;
      this.conns++;
      list[i] = h;
    }
    this.installedList = list;
    this.installedNext = 0;
    // A key the answer named twice, or one that had a handle here, replaced a handle in `byKey`:
    // the list could name a handle `byKey` no longer holds, so attach searches.
    this.installedEpoch = this.byKey.size === sizeBefore + list.length ? this.keyEpoch : -1;
    return result;
  }

  // ---- hand-over straight to another WorkerNic -----------------------------------------------------

  /** The WorkerNics whose worker this one's has a hands channel with. */
  private readonly handsWith = new WeakSet<WorkerNic>();
  /** @internal Answers this NIC's worker owes for batches another worker hands it, by that worker's record owner. */
  readonly handsFrom = new Map<number, Set<number>>();

  /**
   * Two WorkerNics (records on both, both alive): the source's worker releases the batch as
   * transfer records offered to the destination and sends it, with the blocks, straight to the
   * destination's worker over a channel between the two, which installs it and answers the host.
   * One request and two answers instead of two round trips with the host's work between them; the
   * host still holds every block (and the hard state the source wrote as it let go), whichever
   * worker dies when.
   */
  handTo(
    dst: Nic,
    keys: readonly ConnKey[],
    opts: InitiateOptions,
    hints?: readonly (ConnectionHandle | null)[],
  ): Promise<Handed> | null {
    if (!(dst instanceof WorkerNic) || dst === this || !this.useRecords || !dst.useRecords) return null;
    if (this.faults.cannotHand !== undefined && this.faults.cannotHand > 0) {
      this.faults.cannotHand--;
      return null;
    }
    if (this.refusal() !== null || dst.refusal() !== null) return null;
    // IPv6 addresses are handles of the host's table, which every worker's mirrors (the batch and
    // the blocks name them by the same numbers on both): the destination reads its answer's keys
    // in the host's table too, which it may never have been handed an IPv6 state to learn.
    if (this.hostAddrs !== null) dst.learnHostAddrs(this.hostAddrs);
    // Made at its largest and cut to what froze (a push at a time left outgrown copies behind).
    const frozen = new Array<WorkerConnectionHandle>(keys.length);
    let n = 0;
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i]!;
      const hint = hints?.[i];
      // The handle the settle here gave, while it still runs the connection in its slot (and so
      // is the one `byKey` holds for the tuple: both are set and cleared together): no search.
      const h =
        hint instanceof WorkerConnectionHandle &&
        hint.nicIs(this) &&
        !hint.unlisted &&
        this.handles[hint.slot] === hint &&
        sameConnKey(hint, k)
          ? hint
          : this.byKey.get(k);
      if (h === undefined || h.detached) continue;
      // A handle kept for salvage has no block views here: the general way reads it.
      if (viewsOf(h) === undefined) return null;
      frozen[n++] = h;
    }
    frozen.length = n;
    // From here the application must not touch the rings: what they hold is being handed on.
    for (const h of frozen) h.detached = true;
    this.rxBatch.flush();
    if (!this.handsWith.has(dst)) {
      const { port1, port2 } = new MessageChannel();
      this.post({ t: 'hands', owner: dst.recordOwner, port: port1 }, [port1]);
      dst.post({ t: 'hands', owner: this.recordOwner, port: port2 }, [port2]);
      this.handsWith.add(dst);
      dst.handsWith.add(this);
    }
    return hand(this, dst, keys, frozen, opts.prod === true);
  }

  /**
   * The handle of a prepared connection the worker installed: its old one here if it can be
   * revived, or else the one a dead NIC's salvage let go of (a crash's rebuild on this survivor):
   * a handle and its settings made per connection were the largest part of the survivor's install
   * on this thread after a crash, and garbage the dead NIC's left behind.
   */
  private handleOf(p: PreparedConn, key: ConnKey, slot: number, block: ConnBlockRef): WorkerConnectionHandle {
    const views = p.views;
    const list = views.handles;
    let at = -1;
    let died = -1;
    for (let i = 0; i < list.length; i++) {
      const h = list[i]!;
      if (h.nicIs(this)) at = i;
      else if (h.nicDied()) died = i;
    }
    const old = at >= 0 ? list[at]! : died >= 0 ? list[died]! : undefined;
    if (
      old !== undefined &&
      old.block === block &&
      old._revivable(this, key) &&
      this.handles[old.slot] !== old &&
      (old.unlisted || this.byKey.get(old) !== old)
    ) {
      if (at >= 0) this.revivedHandles++;
      else this.adoptedHandles++;
      old._revive(slot, this);
      return old;
    }
    const h = new WorkerConnectionHandle(this, key, slot, block, views);
    // Only a handle over these same views is kept (one made over other views is not this block's).
    if (h.record === views.record) {
      if (at < 0) list.push(h);
      else list[at] = h;
    }
    return h;
  }

  /** @internal The host's address table, which the worker's mirrors; taken from the first IPv6 state handed over. */
  hostAddrs: AddressBook | null = null;

  /** The WorkerNics whose workers this one's hands frames to directly (`peerWorkers`). */
  readonly peered: WorkerNic[] = [];
  private hostAddrsPosted = false;

  private bindAddresses(states: readonly TcpState[]): void {
    if (this.hostAddrs !== null) return;
    for (const s of states) {
      if (s.path.addrs === undefined) continue;
      this.learnHostAddrs(s.path.addrs);
      return;
    }
  }

  /**
   * @internal Take the host's table, and give this worker and every peer's a view of it (the
   * 'host-addrs' message): a member that receives an IPv6 segment of a connection a peer runs
   * reads its addresses there when its own mirror, which holds only the addresses of connections
   * it ran, has none, and finds the owner by the handles the owner lists it under. The handles
   * stay the same addresses while any member runs the connection: the host's placeholder for it
   * holds a reference to each (TcpHandover.place).
   */
  learnHostAddrs(addrs: AddressBook): void {
    this.hostAddrs ??= addrs;
    this.postHostAddrs();
    for (const p of this.peered) {
      p.hostAddrs ??= addrs;
      p.postHostAddrs();
    }
  }

  /** @internal Send the worker its view of the host's table, once (see learnHostAddrs). */
  postHostAddrs(): void {
    if (this.hostAddrsPosted || !(this.hostAddrs instanceof AddressTable)) return;
    const view = this.hostAddrs.view();
    if (view === null) return;
    this.hostAddrsPosted = true;
    this.post({ t: 'host-addrs', view });
  }

  protected override keyAddresses(): AddressBook | null {
    return this.hostAddrs;
  }

  /**
   * Shared memory for each connection of an initiate, with its hard state written, before the
   * batch leaves: the host then holds the memory of every connection it handed over, whenever
   * the worker dies. A connection whose rings already lie in a shared block (it ran on a worker
   * before, here or elsewhere, or in the host since) keeps that block: nothing is copied. Only
   * data in thread-local rings (a connection the host or a LocalNic has run from the start) is
   * copied, once, into a new block.
   */
  private preallocate(
    states: readonly TcpState[],
    byState: Map<TcpState, PreparedConn>,
  ): BatchList<PreparedConn> {
    const out = new BatchList<PreparedConn>();
    const conns = this.load + states.length;
    const ring = ringUnderLoad(this.placementRing, conns);
    const sendRing =
      this.sendPlacementRing > 0
        ? sendRingAtPlacement(this.sendPlacementRing, this.ringCapacity, conns)
        : ring;
    const grownLimit = ringGrowLimit(this.ringCapacity, conns);
    for (const s of states) {
      const d = s.delegated;
      const known = knownViews(d.sendBuffer, d.recvBuffer);
      if (known !== undefined) {
        known.record.write(s, known.block.send, known.block.recv);
        const p = prepare(known, sameKeyOr(known.prepared?.key, s), s, null);
        out.push(p);
        byState.set(s, p);
        continue;
      }
      const key = keyOfState(s);
      let block = blockOfRings(d.sendBuffer, d.recvBuffer);
      let send: ByteRing;
      let recv: ByteRing;
      if (block !== null) {
        send = d.sendBuffer;
        recv = d.recvBuffer;
      } else {
        const caps = connRingCapacities(s, ring, grownLimit, sendRing);
        // Bytes from a worker's terminate without shared rings: its memory already holds them.
        block = takeReleasedBlock(connKeyId(key), s, caps.send, caps.recv);
        if (block !== null) {
          send = ByteRing.attachShared(block.send);
          recv = ByteRing.attachShared(block.recv);
        } else {
          block = allocConnBlock(caps.send, caps.recv);
          this.placedSendBytes += caps.send;
          send = ByteRing.createShared(block.send.capacity, block.send);
          recv = ByteRing.createShared(block.recv.capacity, block.recv);
          const n = d.sendBuffer.length + d.recvBuffer.length;
          if (n > 0) {
            send.write(d.sendBuffer.toArray());
            recv.write(d.recvBuffer.toArray());
            this.copiedBytes += n;
          }
        }
      }
      const views = blockViews(block, send, recv);
      views.record.write(s, block.send, block.recv);
      const p = prepare(views, key, s, null);
      out.push(p);
      byState.set(s, p);
    }
    return out;
  }

  /**
   * Bytes of send and receive data this NIC's initiates copied into shared memory: data that sat
   * in a connection's thread-local rings. 0 for connections whose rings were shared already.
   */
  copiedBytes = 0;

  /** Send-ring bytes this NIC's initiates allocated, and its grows added (`nic.ring.placed-send-bytes`, `nic.ring.grown-send-bytes`). */
  private placedSendBytes = 0;
  private grownSendBytes = 0;

  /** Records this NIC's terminates handed back that the host read into a pooled state (BlockViews.spare). */
  pooledReads = 0;

  /** Installs here that took up the connection's handle from its last stay here (BlockViews.handles). */
  revivedHandles = 0;

  /** Installs here that took up the handle a dead NIC's salvage let go of (BlockViews.handles). */
  adoptedHandles = 0;

  /** Entries this NIC's own tables made on the host (by four-tuple: handles, released by reference). */
  get tableEntriesMade(): number {
    return this.byKey.entriesMade + this.passedUp.entriesMade;
  }

  /**
   * Always the codec's bytes: the states come from another thread. With `opts` (a transfer),
   * without the data: the rings stay in the shared blocks, and `decodeReleased` attaches them.
   */
  protected release(keys: ConnKey[] | 'all', opts: TerminateOptions | undefined): Promise<Uint8Array> {
    return this.cross(() => this.released(keys, opts !== undefined));
  }

  /** The handles of `keys` frozen while their states are encoded, given back if nothing moved. */
  private released(keys: ConnKey[] | 'all', byRef: boolean): Crossing<WorkerReply<'terminate'>, Uint8Array> {
    // From here the application must not touch the rings: what they hold is being encoded.
    const frozen: WorkerConnectionHandle[] = [];
    for (const h of keys === 'all' ? this.byKey.values() : keys.map((k) => this.byKey.get(k))) {
      if (h && !h.detached) {
        h.detached = true;
        frozen.push(h);
      }
    }
    this.rxBatch.flush();
    return {
      send: () =>
        this.request({
          op: 'terminate',
          arg: keys === 'all' ? 'all' : packKeys(keys, this.hostAddrs),
          byRef,
          records: byRef && this.useRecords,
        }),
      failed: (e) => {
        // Nothing moved: the connections carry on here.
        this.giveBack(frozen);
        return e;
      },
      took: (res) => this.tookReleased(res, frozen, byRef),
    };
  }

  private tookReleased(
    res: WorkerReply<'terminate'>,
    frozen: readonly WorkerConnectionHandle[],
    byRef: boolean,
  ): Uint8Array {
    const moved = new Set(res.moved ?? []);
    const closed = this.closedWhileFrozen(frozen);
    if (byRef) {
      // In the order asked, as the answer's states come (paired by place: no table per batch).
      const released = new BatchList<WorkerConnectionHandle>();
      for (const h of frozen) if (moved.has(h.slot) && closed?.has(h) !== true) released.push(h);
      this.passUp(released.list);
      this.releasedBy.set(res.value, { handles: released, records: res.records === true });
    } else {
      const handedOn: [string, ConnBlockRef][] = [];
      for (const h of frozen)
        if (moved.has(h.slot) && closed?.has(h) !== true) handedOn.push([h.id, h.block]);
      keepReleasedBlocks(handedOn);
    }
    for (const s of res.freed ?? []) {
      // Closed at the worker instead of moving: the handle stays the socket's, and what is left in
      // the receive ring can still be read.
      const h = this.handles[s];
      if (h && !moved.has(s)) h._reattach();
    }
    this.forget(res.freed ?? []);
    return res.value;
  }

  /**
   * Connections a terminate by reference released, by connKeyId: the worker kept no placeholder
   * for them (it passes up what arrives for them: the transfer holds them frozen in the host), so
   * it holds no segment of theirs until one is installed there again.
   */
  private readonly passedUp = new TupleMap<true>(true);
  /**
   * Batches released by reference not yet in `passedUp`, each as its released handles in the
   * order asked: the transfer settles a batch by the same keys in the same order (takeQueued), so
   * the batch is found by place, a tuple compared per connection, and no table entry is made and
   * deleted per connection. Anything else (keys of another order or of several batches, an install
   * here meanwhile) enters them into `passedUp` first (passedUpTable), which answers as before.
   */
  private readonly passedUpLists: WorkerConnectionHandle[][] = [];
  private passedUpListed = 0;

  /** @internal */
  passUp(released: WorkerConnectionHandle[]): void {
    if (released.length === 0) return;
    // Bounded: an id left behind (a transfer that never settled) only costs a request later.
    if (this.passedUp.size + this.passedUpListed > this.capacity) {
      this.passedUp.clear();
      this.passedUpLists.length = 0;
      this.passedUpListed = 0;
    }
    this.passedUpLists.push(released);
    this.passedUpListed += released.length;
  }

  /** Every connection passed up, in one table (the batches not yet entered are entered). */
  private passedUpTable(): TupleMap<true> {
    if (this.passedUpLists.length === 0) return this.passedUp;
    for (const list of this.passedUpLists) for (const h of list) this.passedUp.set(h, true);
    this.passedUpLists.length = 0;
    this.passedUpListed = 0;
    return this.passedUp;
  }

  /** The place in passedUpLists of the batch released as exactly `keys`, in their order; or -1. */
  private passedUpBatch(keys: readonly ConnKey[]): number {
    const lists = this.passedUpLists;
    for (let i = 0; i < lists.length; i++) {
      const list = lists[i]!;
      if (list.length !== keys.length) continue;
      let j = 0;
      while (j < keys.length && sameConnKey(list[j]!, keys[j]!)) j++;
      if (j === keys.length) return i;
    }
    return -1;
  }

  /**
   * Released by reference, the worker holds nothing for them: answered here, without waking the
   * worker's thread for a settle. Anything else is asked of the worker.
   */
  override async takeQueued(keys: ConnKey[], opts?: { drop?: boolean }): Promise<Uint8Array[]> {
    if (this.death !== null || this.closed) return super.takeQueued(keys, opts);
    const at = keys.length === 0 ? -1 : this.passedUpBatch(keys);
    if (at >= 0) {
      // A connection is in one batch or in the table, never both: released again only after an
      // install here, which entered every batch into the table and took it out.
      if (opts?.drop === true) {
        this.passedUpListed -= this.passedUpLists[at]!.length;
        this.passedUpLists.splice(at, 1);
      }
      return [];
    }
    const passedUp = this.passedUpTable();
    for (const k of keys) if (!passedUp.has(k)) return super.takeQueued(keys, opts);
    if (opts?.drop === true) for (const k of keys) passedUp.delete(k);
    return [];
  }

  /**
   * Decode a terminate's batch as decodeReleased does, with only `handles` (released by a batch
   * handed to another NIC that refused them, their records the host's again) read from their records.
   */
  readReleased(
    bytes: Uint8Array,
    handles: readonly WorkerConnectionHandle[],
    now: number,
    addrs?: AddressBook,
  ): OffloadTree[] {
    const released = new BatchList<WorkerConnectionHandle>();
    for (const h of handles) released.push(h);
    this.releasedBy.set(bytes, { handles: released, records: true });
    return this.decodeReleased(bytes, now, addrs);
  }

  /**
   * What each terminate by reference released, by its answer's bytes, for decodeReleased: the
   * handles in the order asked, and whether the states went as transfer records. By answer, not the
   * latest: a large upload has several terminates in flight, and an answer may be read after the
   * next one came.
   */
  private readonly releasedBy = new WeakMap<
    Uint8Array,
    { handles: BatchList<WorkerConnectionHandle>; records: boolean }
  >();

  /**
   * Decode and validate what a terminate handed back (`bytes`, its answer), its connections'
   * rings attached from the shared memory this side already holds for them. A state for a
   * connection that was not released has no rings here, and the whole batch is refused.
   */
  override decodeReleased(bytes: Uint8Array, now: number, addrs?: AddressBook): OffloadTree[] {
    const by = this.releasedBy.get(bytes);
    this.releasedBy.delete(bytes);
    const released = by?.handles ?? new BatchList<WorkerConnectionHandle>();
    const rings = (s: TcpState): { send: ByteRing; recv: ByteRing } | null => {
      const h = released.get(s.const);
      return h === undefined ? null : { send: h.sendRing, recv: h.recvRing };
    };
    try {
      const trees = decodeBatch(bytes, now, { rings, addrs });
      if (by?.records === true) {
        try {
          this.pooledReads += fillFromReleased(trees, released.list, now);
        } catch (e) {
          // The decode's references on IPv6 paths go back with the refused answer.
          releaseTreeAddresses(trees);
          throw e;
        }
      }
      return trees;
    } catch (e) {
      // Unreadable: the host still holds what the worker wrote last for each of them (its hard
      // state, written as it released them, and the rings), so they stay salvageable here for a
      // rebuild instead of being lost with the answer.
      for (const h of released.list) {
        if (this.byKey.has(h)) continue;
        const views: BlockViews = {
          block: h.block,
          send: h.sendRing,
          recv: h.recvRing,
          record: h.record,
          transfer: h.transfer,
          spare: null,
          handles: [],
          prepared: null,
        };
        this.keyEpoch++;
        const kept = new WorkerConnectionHandle(this, h.key, -1, h.block, views, h.id);
        kept._installedWith(h.settings);
        this.byKey.set(h.key, kept);
        this.conns++;
      }
      throw e;
    }
  }

  /** The worker engine's counters, with this side's count of refused messages (`nic.worker.malformed`). */
  async counters(): Promise<Record<string, number>> {
    return (await this.counterSnapshot()).values;
  }
  protected override addHostCounters(values: Record<string, number>): Record<string, number> {
    if (this.protocolErrors > 0) values['nic.worker.malformed'] = this.protocolErrors;
    if (this.recordFallbacks > 0) values['nic.worker.record-fallbacks'] = this.recordFallbacks;
    if (this.grows > 0) values['nic.sndbuf.grow'] = this.grows;
    if (this.growsRefused > 0) values['nic.sndbuf.grow-refused'] = this.growsRefused;
    if (this.growsHeld > 0) values['nic.sndbuf.grow-held'] = this.growsHeld;
    if (this.placedSendBytes > 0) values['nic.ring.placed-send-bytes'] = this.placedSendBytes;
    if (this.grownSendBytes > 0) values['nic.ring.grown-send-bytes'] = this.grownSendBytes;
    if (this.heldClosed > 0) {
      values['nic.held-closed'] = this.heldClosed;
      values['nic.held-closed-bytes'] = this.heldClosedBytes;
    }
    return values;
  }

  /**
   * See `Nic.settlesHeld`: the worker keeps an install's link input for its settle, also for
   * connections it took unbuilt (kept from their build, or in the frames that wait for it).
   */
  readonly settlesHeld = true;

  inject(packets: readonly Uint8Array[], settled?: readonly ConnKey[]): void {
    if (this.closed || this.death) return;
    if (packets.length === 0 && (settled === undefined || settled.length === 0)) return;
    this.rxBatch.flush();
    this.post({
      t: 'inject',
      packets: [...packets],
      settled: settled === undefined || settled.length === 0 ? undefined : packKeys(settled, this.hostAddrs),
    });
  }

  /**
   * (Null once the NIC is dead or closed: HostNic.attach.) Dead, the handle is what is left for
   * salvage, and a socket put on it would run on memory no thread runs: a settle whose destination
   * died after its initiate answered leaves that socket frozen for the recover, which rebuilds the
   * connection from the same handle's record. Closed, the worker's close aborts the connection.
   */
  protected attachRunning(key: ConnKey, user: TcpUser | null): ConnectionHandle | null {
    let h: WorkerConnectionHandle | undefined;
    const next = this.installedEpoch === this.keyEpoch ? this.installedList[this.installedNext] : undefined;
    if (next !== undefined && (next.key === key || sameConnKey(next.key, key))) {
      this.installedNext++;
      h = next;
    } else h = this.byKey.get(key);
    if (!h || h.detached) return null;
    h.user = user;
    return h;
  }

  /** The handle of an offloaded connection (for tests and status), or undefined. */
  handle(key: ConnKey): WorkerConnectionHandle | undefined {
    return this.byKey.get(key);
  }

  /** A consistent snapshot of a connection's hard state from shared memory, whatever the worker is doing. */
  hardState(key: ConnKey): HardState | null {
    return this.byKey.get(key)?.hardState() ?? null;
  }

  // What is left of a connection here is what shared memory holds: the last whole hard state and
  // the rings, whether the worker is dead or not. The NIC forgets it; the caller now owns it.
  // A connection its worker runs now is not left over: handed out, it would have two owners (a
  // LocalNic's engine keeps its own likewise). Left over are a dead or closed NIC's, those the host
  // froze for a transfer, and those kept from an answer it could not read.
  protected salvageAll(): SalvageRecord[] {
    const out: SalvageRecord[] = [];
    for (const h of [...this.byKey.values()]) if (!this.runsNow(h)) out.push(this.take(h));
    return out;
  }
  protected salvageOne(key: ConnKey): SalvageRecord | undefined {
    const h = this.byKey.get(key);
    return h === undefined || this.runsNow(h) ? undefined : this.take(h);
  }
  /** Kept for salvage (no slot: refused answers, a death with the batch in hand) it runs nowhere. */
  private runsNow(h: WorkerConnectionHandle): boolean {
    return this.death === null && !this.closed && !h.detached && h.slot >= 0 && this.handles[h.slot] === h;
  }
  private take(h: WorkerConnectionHandle): SalvageRecord {
    h.detached = true;
    this.handles[h.slot] = undefined;
    this.keyEpoch++;
    this.byKey.delete(h);
    h.unlisted = true;
    this.conns--;
    this.dropGrown(h);
    if (h.growing !== null) return this.takeGrowing(h);
    // The state the host last handed over in this block's record, free since the worker took it
    // (BlockViews.spare): the rebuild makes it the connection's in place instead of a new one. The
    // record, from memory the dead worker wrote, is still validated (no ownThread).
    const views = viewsOf(h);
    const spare = views?.spare ?? null;
    if (spare !== null) views!.spare = null;
    return salvageOf(h, undefined, h.sendRing, spare ?? undefined);
  }

  /**
   * What is left of a connection whose worker stopped in the middle of a grow (see regrow): if
   * the worker wrote the new block's record, it had moved whole to the new block. If not, the old
   * record and receive ring are the truth, and the new send ring holds every byte the host wrote:
   * from the old ring's position r0 on, so the worker's reads of the old ring past r0 (it ran on
   * it until the end) are dropped from the new one, and the record's send ring position is put in
   * the new ring's terms (the bytes it acknowledged after the record stay counted).
   */
  private takeGrowing(h: WorkerConnectionHandle): SalvageRecord {
    const g = h.growing!;
    const fresh = g.views.record.read(emptyHardState());
    if (fresh) {
      h._finishGrow();
      return salvageOf(h, h.hardState(), h.sendRing);
    }
    h.growing = null;
    const old = g.oldSend.shared!;
    const send = g.views.send;
    const ref = send.shared!;
    const oldRead = sharedRingPositions(old).read;
    const consumed = sharedRingAdvance(old, g.r0, oldRead);
    // The worker may have caught the new ring up part way before it stopped.
    const caught = sharedRingPositions(ref).read;
    if (consumed > caught) send.consume(consumed - caught);
    const hard = h.hardState();
    if (hard !== null) {
      const p = sharedRingPositions(ref).read - sharedRingAdvance(old, hard.sendReadPos, oldRead);
      hard.sendReadPos = p < 0 ? p + 2 * ref.capacity : p;
    }
    return salvageOf(h, hard, send);
  }

  // ---- a send ring that grows with the connection ----------------------------------------------

  /**
   * Bytes the grows of this NIC's connections added to its rings, bounded by RING_BUDGET_BYTES
   * besides each ring's share (ringGrowLimit): rings grown while the NIC ran few connections stay
   * grown as more arrive.
   */
  private grownBytes = 0;
  /**
   * Grows begun, and asked for but refused (the ring at its share of the budget already, or the
   * grown bytes at the budget), as `nic.sndbuf.grow` / `nic.sndbuf.grow-refused`. A refused
   * connection asks again only for a larger ring (nic-worker.ts, askGrow's growAsked), so a burst
   * costs the main thread a few refusals a connection, not one per acknowledgement.
   */
  private grows = 0;
  private growsRefused = 0;
  /**
   * Grows asked for while this NIC is being given a burst of connections (`placing`, or an
   * initiate in hand), by connection: the largest ring each asked for. A ring grown early in a
   * burst of 5,000 took its share reckoned against the few placed so far, and kept it as the rest
   * came: fresh pages serve's main thread faulted in while it placed them (minor faults +31-44 %,
   * resident +60-160 MB; BENCHMARKS.md, "The burst of 5,000 with bounded growth"). Held, they are
   * reckoned once the burst is in, against every connection it brought (ringGrowLimit).
   */
  private readonly heldGrows = new Map<WorkerConnectionHandle, number>();
  /** The host places a burst (Nic.placing). */
  private placingBurst = false;
  /** Initiates sent and not yet answered. */
  private initiating = 0;
  /** Runs the held grows GROW_QUIET_MS after the burst's placing ended. */
  private readonly growTimer: Timer;
  private growsHeld = 0;

  placing(on: boolean): void {
    if (on === this.placingBurst) return;
    this.placingBurst = on;
    if (on) this.growTimer.disarm();
    else if (this.heldGrows.size > 0) this.growTimer.arm(GROW_QUIET_MS);
  }

  /** A grow asked for now waits for the burst's end (heldGrows). */
  private holdsGrowth(): boolean {
    return this.placingBurst || this.initiating > 0 || this.growTimer.armed || this.growsDeferred;
  }

  /** The burst is placed: the grows it held, each within its share of the budget now. */
  private runHeldGrows(): void {
    this.growsDeferred = false;
    if (this.holdsGrowth()) return;
    if (this.closed || this.death !== null) {
      this.heldGrows.clear();
      return;
    }
    // GROWS_PER_TURN a turn: the grows of a whole burst at once held the main thread 0.4 s.
    for (const [h, want] of this.heldGrows) {
      if (this.growsThisTurn >= GROWS_PER_TURN) {
        this.growsDeferred = true;
        this.clock.defer(this.runHeldGrowsBound);
        return;
      }
      this.heldGrows.delete(h);
      if (this.handles[h.slot] !== h || h.detached || h.closed || h.growing !== null) continue;
      this.countGrow();
      this.regrow(h, want);
    }
  }
  private readonly runHeldGrowsBound = (): void => this.runHeldGrows();
  /** The held grows go on next turn (runHeldGrows). */
  private growsDeferred = false;
  /** Grows begun in this turn of the loop (GROWS_PER_TURN); a deferred call ends the turn's count. */
  private growsThisTurn = 0;
  private readonly endGrowTurn = (): void => {
    this.growsThisTurn = 0;
  };
  // Deferred before any deferred run of the held grows, so that run finds the count at zero.
  private countGrow(): void {
    if (this.growsThisTurn++ === 0) this.clock.defer(this.endGrowTurn);
  }

  /** @internal */
  dropGrown(h: WorkerConnectionHandle): void {
    this.grownBytes -= h.grownBy;
    h.grownBy = 0;
  }

  /**
   * The host's half of a send ring's growth (the worker asked: 'grow'). The host is the ring's only
   * producer, the worker its only consumer, so the switch is made where each side owns its index:
   *
   * 1. Here: a new block (record, the larger send ring, a receive ring as large as the old), the
   *    old send ring's bytes from its read position r0 to its write position copied in, and every
   *    write of the application goes to the new ring from now on. The worker, still on the old
   *    ring, only consumes: the bytes at [r0, write) stay as they are (only this thread writes
   *    there), so the copy is exact whatever the worker does meanwhile. Reads of the receive ring
   *    pause, and 'regrow' goes to the worker.
   * 2. The worker (nic-worker.ts, regrow): consumes from the new send ring what it consumed from
   *    the old since r0 (its own index, it knows exactly), copies the old receive ring's unread
   *    bytes (nobody reads them: step 1 paused the host), runs the connection on the new block,
   *    writes the new record, and answers 'grown'.
   * 3. Here on 'grown': receive ring, record and transfer record are the new block's.
   *
   * The port is in order both ways, so anything the host asks after 'regrow' (a terminate, a close)
   * finds the connection on the new block, and the terminate's answer comes after 'grown'. A worker
   * that dies between 1 and 3 leaves either a new record (it got through 2: the new block is whole)
   * or none (the old record and receive ring hold, the new send ring is caught up here): takeGrowing.
   * The old block is no longer named by anyone once the move is done, and goes with its slab.
   */
  private regrow(h: WorkerConnectionHandle, want: number): void {
    const old = h.block;
    const cap = Math.min(want, ringGrowLimit(this.ringCapacity, this.load));
    const added = cap - old.send.capacity;
    // Blocks held after their close are this budget's too (heldClosed).
    if (added <= 0 || this.grownBytes + this.heldClosedBytes + added > RING_BUDGET_BYTES) {
      this.growsRefused++;
      return;
    }
    const next = allocConnBlock(cap, old.recv.capacity);
    const send = ByteRing.createShared(cap, next.send);
    const recv = ByteRing.createShared(old.recv.capacity, next.recv);
    const views = blockViews(next, send, recv);
    const { read: r0, write: w0 } = sharedRingPositions(old.send);
    const n = sharedRingAdvance(old.send, r0, w0);
    if (n > 0) {
      const bytes = new Uint8Array(n);
      sharedRingCopy(old.send, r0, bytes);
      send.write(bytes);
    }
    h._beginGrow(views, r0);
    h.grownBy += added;
    this.grownBytes += added;
    this.grownSendBytes += cap;
    this.grows++;
    this.post({
      t: 'regrow',
      slot: h.slot,
      old: regrowBlock(old),
      to: regrowBlock(next),
      id: slabIdOf(next.sab),
      r0,
    });
  }

  /** Abort everything (RST to every offloaded connection's peer) and stop the worker. */
  protected closeEngine(): void {
    this.runToEnd();
    networkInput.delete(this.upFrames);
    this.closed = true;
    this.unwatchSlabs();
    this.growTimer.disarm();
    this.heldGrows.clear();
    for (const h of [...this.unclaimed.values()]) this.dropUnclaimed(h);
    this.host.close();
    if (this.death) {
      void this.worker.terminate();
      return;
    }
    this.rxBatch.flush();
    this.hostBatch.flush();
    this.post({ t: 'close' });
    // The worker answers 'closed' after flushing its last frames; don't wait for ever.
    this.closeTimer = this.clock.createTimer(() => void this.worker.terminate()).unref();
    this.closeTimer.arm(CLOSE_BOUND_MS);
  }

  /** With `openWhenLet`: the worker may open its TAP now. */
  letOpen(): void {
    if (this.openGate === null) return;
    Atomics.store(this.openGate, 1, 1);
    Atomics.notify(this.openGate, 1);
  }

  /** Looked at every LOADED_POLL_MS: a worker's start is seconds at load, and this runs once. */
  private whenLoaded(): Promise<void> {
    const gate = this.openGate!;
    return new Promise((resolve, reject) => {
      const t = this.clock
        .createTimer(() => {
          const refused = this.refusal();
          if (Atomics.load(gate, 0) === 1) resolve();
          else if (refused !== null) reject(refused);
          else t.arm(LOADED_POLL_MS);
        })
        .unref();
      t.arm(0);
    });
  }

  /**
   * Block the worker's thread for `ms` (tests of a wedged NIC): it stops beating, and past
   * `deadAfterMs` the watchdog reports it dead and stops it. With `pool`, the thread keeps running
   * but leaves a request on the libuv pool for `ms`, as a TAP reader waiting for a frame does: a
   * kill meanwhile stops it, and its exit waits for the request. With `entered`, the blocked thread
   * first stores 1 in its word 0 (and notifies it): the test then knows the unit of work has begun;
   * if `entered` has a word 1, the stall also ends once the test stores anything but 0 there.
   */
  stall(ms: number, opts: { pool?: boolean; entered?: SharedArrayBuffer } = {}): void {
    if (!Number.isFinite(ms) || ms < 0) throw new InvalidArgumentError('stall needs a duration in ms');
    if (opts.pool) this.post({ t: 'stall', ms, pool: true });
    else this.post(opts.entered ? { t: 'stall', ms, entered: opts.entered } : { t: 'stall', ms });
  }

  /**
   * @internal Whether the thread is between turns of its JavaScript (DB_BUSY 0): a kill now is
   * known stopped at once (terminateThread). Tests.
   */
  get betweenTurns(): boolean {
    return Atomics.load(this.doorbell, DB_BUSY) === 0;
  }

  /**
   * Kill the worker thread outright (tests of NIC death): reported as 'dead' at its exit (or by the
   * watchdog), and resolves then. `terminateThread` does not wait.
   */
  kill(): Promise<number> {
    return this.worker.terminate();
  }

  /**
   * Tell the worker thread to stop, and return at once. Its exit can come much later: a thread
   * stopped while a request of its waits on the libuv pool (a TAP reader's poll for the next
   * frame) exits only when that request ends, and its heap's teardown takes hundreds of ms more
   * with thousands of connections. A thread that was between turns of its JavaScript when told
   * (DB_BUSY 0, read after DB_STOP was set) writes no shared memory again: a turn that begins
   * finds DB_STOP and waits for the termination, so the death is indicated in a microtask (`between`
   * in the answer says which). One
   * told in the middle of a turn (DB_BUSY 1) stops at its next
   * interrupt check, unless that turn waits in native code: its death is indicated at the exit,
   * or once the heartbeat, which the thread bumps on its timer and before every unit of work, has
   * not moved for KILL_SILENT_BEATS heartbeat periods since the request (no JavaScript runs there
   * any more: a stopped thread writes no shared memory), whichever comes first; not after
   * `deadAfterMs`, which is sized for a busy thread that still runs.
   */
  terminateThread(): { threadId: number; exited: Promise<number>; between: boolean } {
    const threadId = this.worker.threadId;
    // Stored before the read of DB_BUSY: a turn that begins after a 0 was read finds it, and writes
    // nothing (enterUnit in worker/nic-worker.ts).
    Atomics.store(this.doorbell, DB_STOP, 1);
    const exited = this.worker.terminate();
    const between = Atomics.load(this.doorbell, DB_BUSY) === 0;
    // The thread exits only once its TAP's poll for the next frame ends (up to POLL_MAX_MS when no
    // frame comes, and after a kill the switch steers the team's frames to the other members): end
    // it now. After terminate() the thread starts no new turn of JavaScript (the poll's callback
    // never runs), so the wake-up only lets the exit through.
    wakeTapPoll(this.wakeEnd);
    if (this.death === null && !this.closed) this.liveness.stopped(between);
    return { threadId, exited, between };
  }

  /** Whether detachTap let the TAP go under a thread that had not exited. */
  get tapDetached(): boolean {
    return this.tapLetGo;
  }

  /**
   * Let go of the TAP under a thread told to stop that has not exited (wedged in native code: it
   * exits only once that call returns, and until then its descriptor keeps the TAP, whose next
   * opener, a restart's worker or the host, is refused EBUSY). The descriptor is made to refer to
   * an empty pipe of its own (detachTapDescriptor), what the thread held is taken from its list and
   * freed at the exit as before, each descriptor only while it is still the file it was here
   * (stillTaken: a thread that ran on to its TapLink's close closed it itself); no JavaScript of the
   * thread runs again once told to stop, so nothing of it reads or writes the TAP after. True when the TAP was let go (the kernel detaches it once no
   * system call on it is under way); false when there is nothing to let go: no TAP of the host's
   * making, already exited, not told to stop, or the thread closed it itself. Asked again, it
   * answers as the first time: the host's dead-port opener and the restart both ask, and the
   * second must not take a TAP let go for one still held.
   */
  detachTap(): boolean {
    if (this.detached !== null) return this.tapLetGo;
    if (this.exited || this.tunFd < 0) return false;
    if (Atomics.load(this.doorbell, DB_STOP) === 0) return false;
    const held = takeTapHeld(new BigInt64Array(this.tapHeld));
    if (held === null) return false;
    // Still listed: the thread has not closed it (it unlists before it closes), so the number is
    // still this TAP's and not one reused since.
    this.tapLetGo = held.fds.includes(this.tunFd) && detachTapDescriptor(this.tunFd);
    this.detached = held;
    // A TAP descriptor's identity is /dev/net/tun's, the same for every open of it: only once it
    // refers to its own pipe can a later check tell it from a number the thread closed and another
    // open reused. A detach that failed (pipe2 or dup3 refused, as at EMFILE) leaves it to the
    // thread's exit unclosed: a descriptor leaked beats another owner's closed.
    this.detachedIds = held.fds.map((fd) =>
      fd === this.tunFd && !this.tapLetGo ? null : descriptorIdentity(fd),
    );
    return this.tapLetGo;
  }

  // ---- internals ----------------------------------------------------------------------------------

  /** @internal */
  post(m: ToWorker, transfer?: TransferListItem[]): void {
    if (this.death !== null) return;
    this.worker.postMessage(m, transfer);
  }

  /** @internal Ring the doorbell for a slot (see protocol.ts). */
  ring(slot: number, bits: number): void {
    const db = this.doorbell;
    if (Atomics.or(db, this.flagsAt + slot, bits) !== 0) return;
    const tail = Atomics.load(db, DB_TAIL);
    Atomics.store(db, DB_QUEUE + tail, slot);
    Atomics.store(db, DB_TAIL, tail + 1 === this.qLen ? 0 : tail + 1);
    Atomics.add(db, DB_BELL, 1);
    // One wake-up per burst: a notify is a system call whenever the worker waits, and a burst of
    // writes and reads over many connections would pay it once per connection.
    if (!this.bellQueued) {
      this.bellQueued = true;
      queueMicrotask(this.notifyBell);
    }
  }

  /**
   * @internal Whether a read of the slot's receive ring may leave out BELL_READ: the worker said
   * until when none can make it send (its word of quiet reads, protocol.ts). Loaded after the
   * read moved the ring's position, so a word the worker zeroes first is seen.
   */
  _readQuiet(slot: number): boolean {
    const until = Atomics.load(this.doorbell, this.quietAt + slot);
    if (until === 0 || ((until - realStamp()) | 0) <= 0) return false;
    this.readBellsQuiet++;
    return true;
  }

  private bellQueued = false;
  /** @internal Reads that rang no BELL_READ, the worker having said none could matter (tests). */
  readBellsQuiet = 0;
  /** @internal Notifies the doorbell made, and those it left out because the worker was in a turn (tests). */
  bellNotifies = 0;
  bellsUnnotified = 0;
  private readonly notifyBell = (): void => {
    this.bellQueued = false;
    // A worker in a turn looks at the queue as the turn ends (nic-worker.ts, bellAfterUnit); a
    // notify would only wake it again for what it serves anyway. This load comes after the queue's
    // tail was stored (ring), which is what makes the skip safe.
    if (Atomics.load(this.doorbell, DB_BUSY) !== 0) {
      this.bellsUnnotified++;
      return;
    }
    this.bellNotifies++;
    Atomics.notify(this.doorbell, DB_BELL);
  };

  /** @internal */
  _hostSend(frame: Uint8Array): boolean {
    if (this.closed || this.death || !this.linkCarrier) return false;
    this.hostBatch.push(frame);
    return true;
  }

  /**
   * @internal A request whose answer the host cannot read ends as ON_MALFORMED_ANSWER says for its verb:
   * refused with the WorkerProtocolError, or the worker taken as dead as well ('defective').
   */
  override request<R extends WorkerRequest>(r: R): Promise<WorkerReply<R['op']>> {
    const p = super.request(r);
    if (ON_MALFORMED_ANSWER[r.op] === 'refused') return p;
    return p.catch((e: unknown) => {
      if (e instanceof WorkerProtocolError) this.defective(e);
      throw e;
    });
  }

  /** It answered what the host cannot read, after a request that may have changed what it runs. */
  private defective(error: WorkerProtocolError): void {
    if (this.death !== null || this.closed) return;
    this.die({ kind: 'defective', error });
    void this.worker.terminate();
  }

  /** Messages from the worker refused as malformed (see PortTransport.refuse). */
  get protocolErrors(): number {
    return this.port.protocolErrors;
  }
  get lastProtocolError(): WorkerProtocolError | null {
    return this.port.lastProtocolError;
  }

  /**
   * Handles a terminate froze whose slot the worker freed before it read the request: the
   * connection closed there first (a reset, an abort), its 'freed' came while the handle was
   * detached, so forget() took it for moving, and the answer names it neither moved nor freed.
   * Left detached, its socket, resumed by the transfer (closed at the source), threw at its next
   * read (the data the peer sent before the close lost) and never heard the close, and the block
   * it holds went uncounted. The socket's again, as one the answer names closed (null: none).
   */
  /**
   * @internal A move or upload request that failed: nothing moved, the frozen handles are their sockets'
   * again; those the worker closed meanwhile as closedWhileFrozen tells (their blocks counted held).
   */
  giveBack(frozen: readonly WorkerConnectionHandle[]): void {
    this.closedWhileFrozen(frozen);
    for (const h of frozen) h._reattach();
  }

  /** @internal */
  closedWhileFrozen(frozen: readonly WorkerConnectionHandle[]): Set<WorkerConnectionHandle> | null {
    let closed: Set<WorkerConnectionHandle> | null = null;
    for (const h of frozen) {
      if (h.slot < 0 || this.handles[h.slot] === h) continue;
      (closed ??= new Set()).add(h);
      h._reattach();
      dropSpare(h);
      this.holdClosed(h);
    }
    return closed;
  }

  /** @internal */
  forget(slots: readonly number[]): void {
    // Read only while `byKey` is as the install left it, which a freed slot ends: let go of its
    // handles, or the last install's connections held their blocks' slabs after they closed.
    if (slots.length > 0) this.installedList = [];
    for (const s of slots) {
      const h = this.handles[s];
      if (!h) continue;
      this.handles[s] = undefined;
      this.keyEpoch++;
      this.byKey.deleteIf(h, h);
      // Held under its tuple only as its own value: not there now, whatever deleteIf found.
      h.unlisted = true;
      this.conns--;
      this.dropGrown(h);
      // The worker answers 'grown' before it frees the slot, so a grow still open here was not
      // seen there, and the old block holds; unless the new record says otherwise.
      if (h.growing?.views.record.read(emptyHardState()) === true) h._finishGrow();
      else h._abandonGrow();
      // Closed here, not moved (a moved one's spare is read into by the next owner's read).
      if (!h.detached) dropSpare(h);
      this.holdClosed(h);
    }
  }

  /**
   * A batch of frames passed up that was refused whole (not a frame batch): the worker counted its
   * frames, and without a resync mark the host's count stayed behind for good (rxReadState would
   * never again report the worker caught up).
   */
  private onRefused(raw: unknown): void {
    if (typeof raw === 'object' && raw !== null && (raw as { t?: unknown }).t === 'up')
      this.upFrames.push(UP_RESYNC);
  }

  /**
   * The NIC closes or dies: everything the worker passed up before reaches the host stack now
   * (frames it took off the wire, which the host's tables may hold for a connection in transit;
   * the failover starts from tables that have them, and a closed NIC's host link hears nothing
   * after). Nothing else waits here: every other message and every answer ran the queue before
   * it acted (onMessage, PortTransport's beforeAnswer).
   */
  private runToEnd(): void {
    this.upFrames.flush();
  }

  /**
   * A death: of the frames passed up, those of this NIC's connections in transit reach the host
   * stack now, before anyone hears of the death. Those are the frames the failover needs in the
   * host's placeholders when it starts (it replays what they hold to the connection's next
   * owner): the segments of a connection released to the host by reference and not yet settled,
   * or of a handle here (frozen in a move out, or running). Any other frame (the host's own
   * connections, other owners', a listener's SYNs and handshakes, ARP) keeps its turn: a host
   * placeholder forwards a late one to the connection's owner, or holds it for the rebuild. The
   * whole backlog run here (up to a second of it under load) put off the failover's start.
   * While an initiate is in flight its connections are not known by key here: all run.
   */
  private runInTransit(): void {
    if (this.initiating > 0) {
      this.upFrames.flush();
      return;
    }
    const passedUp = this.passedUpTable();
    const byKey = this.byKey;
    const addrs = this.hostAddrs;
    this.upFrames.flushWhere((f) => {
      if (f === UP_RESYNC) return false;
      // An IPv6 frame's addresses by the host's handles, the numbers the keys here hold them as:
      // one the host's table has no handle for is no connection's here.
      if (tcpTuple(f, addrs) !== TUPLE_READ) return false;
      const { localIp: li, localPort: lp, remoteIp: ri, remotePort: rp } = tuple;
      return byKey.lookup(li, lp, ri, rp) !== undefined || passedUp.lookup(li, lp, ri, rp) !== undefined;
    });
  }

  private onMessage(m: WorkerNotice): void {
    // The frames passed up wait for their turns, but nothing the worker said after them may act
    // before they reached the host stack (the order the one port gave them, which the host's
    // tables rely on: an install, a close, a new connection), but for what touches no table here:
    // heartbeats, the wire's frames, captures, sockets' events (their own turns) and ring grows.
    // Answers flush them too (PortTransport's beforeAnswer).
    if (this.upFrames.size > 0 && !UP_MAY_PASS.has(m.t)) this.upFrames.flush();
    switch (m.t) {
      case 'tx': {
        const link = this.link;
        if (link) forEachFrame(m.buf, m.len, (f) => link.send(f));
        return;
      }
      case 'up':
        // Each frame a view of the batch's buffer, which this thread owns from now on (transferred).
        if (forEachFrame(m.buf, m.len, this.pushUp) < 0) this.upFrames.push(UP_RESYNC);
        return;
      case 'host-carrier':
        // A main-thread link's carrier was reported when it changed; the worker's echo is stale.
        if (this.link !== null) return;
        this.hostCarrier = m.up;
        this.host.carrierChanged(m.up);
        return;
      case 'ev': {
        const list = m.list;
        for (let i = 0, e = 0; i < list.length; i += 2, e++) {
          const h = this.handles[list[i]!];
          if (!h) continue;
          const w = m.errors[e];
          h._event(list[i + 1]!, w ? (fromWireError(w) as ConnectionError) : null);
        }
        return;
      }
      case 'freed':
        this.forget(m.slots);
        return;
      case 'grow': {
        const h = this.handles[m.slot];
        if (h === undefined || h.detached || h.closed || h.growing !== null) return;
        if (this.holdsGrowth() || this.growsThisTurn >= GROWS_PER_TURN) {
          this.growsHeld++;
          this.heldGrows.set(h, Math.max(m.capacity, this.heldGrows.get(h) ?? 0));
          if (!this.holdsGrowth()) {
            this.growsDeferred = true;
            this.clock.defer(this.runHeldGrowsBound);
          }
          return;
        }
        this.countGrow();
        this.regrow(h, m.capacity);
        return;
      }
      case 'grown': {
        const h = this.handles[m.slot];
        if (h === undefined) return;
        if (m.ok) h._finishGrow();
        else h._abandonGrow();
        return;
      }
      case 'ind': {
        const ind = m.ind;
        if (ind[0] === 'link') {
          if (this.link !== null) return;
          this.linkCarrier = ind[1];
          // Epoch ms from the worker, back onto this thread's clock (real time, see `clock`).
          if (ind[2] !== undefined) ind[2] = Math.min(this.clock.now(), ind[2] - performance.timeOrigin);
        }
        if (ind[0] === 'reachability' && ind[2] > 0)
          ind[2] = Math.min(this.clock.now(), ind[2] - performance.timeOrigin);
        const [event, ...args] = ind;
        this.emit(event, ...args);
        return;
      }
      case 'hb':
        this.liveness.beat();
        return;
      case 'cap': {
        let rec = new Uint8Array(m.buf);
        const n = rec.length;
        if (!this.captureStarted) {
          this.captureStarted = true;
          rec = rec.subarray(PCAP_FILE_HEADER);
        }
        try {
          if (rec.length > 0) this.captureSink?.(rec);
        } finally {
          if (this.captureWords) Atomics.sub(this.captureWords, CAP_IN_FLIGHT, n);
        }
        return;
      }
      case 'hands-closed': {
        // The source's worker stopped: a batch it had not handed by then never comes.
        const ids = this.handsFrom.get(m.owner);
        if (ids === undefined) return;
        this.handsFrom.delete(m.owner);
        const e = new InvalidStateError('the source worker stopped before it handed the batch');
        for (const id of ids) this.port.fail(id, e);
        return;
      }
      case 'born':
        this.born(m.id, m.packed, m.entries);
        return;
      case 'born-arena':
        this.bornArenas.add(m.no, m.sab);
        return;
      case 'closed':
        void this.worker.terminate();
        return;
      default:
        unhandled(m, 'message from the worker');
    }
  }

  private readonly pushUp = (frame: Uint8Array): void => {
    this.upQueued++;
    this.upFrames.push(frame);
  };

  /**
   * A frame the worker passed up, in its turn: to the host stack (nowhere once the NIC closed).
   * Counted only now, so rxReadState reports no progress while an answer may still wait here.
   */
  private readonly upFrame = (frame: Uint8Array): void => {
    if (frame === UP_RESYNC) {
      // Not the worker's count alone: the frames of later batches queued behind this mark are in
      // it already, and each adds one as it runs. Counted twice, the host's count would stay
      // ahead for good, and rxReadState would never again report the worker caught up.
      this.upSeen = (Atomics.load(this.doorbell, DB_UP) - this.upQueued) | 0;
      return;
    }
    this.upQueued--;
    this.upSeen = (this.upSeen + 1) | 0;
    (this.host.receiver ?? ignoreFrame)(frame);
  };

  /** The host's accept of each listener the worker answers SYNs for (`listen`), by id. */
  private readonly listens = new Map<number, (h: WorkerConnectionHandle) => boolean>();
  private nextListen = 1;

  /**
   * Answer the SYNs of a host listener in the worker (NicListenSpec; see NicEngine.listen): each
   * connection it accepts is installed there on shared memory the worker allocates, and
   * `hooks.born` gets its handle, which the host holds from then on as an installed connection's.
   * `born` false: refused, the worker resets it. Its half-open connections stay in the worker
   * (`holds` answers for them). Returns what stops it (the worker's listener closes); null once
   * the NIC is closed or dead, as a LocalNic's: a stop handed out then stopped nothing, and its
   * listener answered no SYN.
   */
  listen(spec: NicListenSpec, hooks: NicListenHooks): (() => void) | null {
    if (this.death !== null || this.closed) return null;
    const id = this.nextListen++;
    // Born at the worker with the listener's settings: its salvage carries them (see `settings`).
    this.listens.set(id, (h) => {
      h._installedWith(spec.cached);
      return hooks.born(h);
    });
    this.post({ t: 'listen', id, spec, ring: this.placementRing, sendRing: this.sendPlacementRing });
    return () => {
      if (!this.listens.delete(id)) return;
      if (this.death === null && !this.closed) this.post({ t: 'unlisten', id });
    };
  }

  /**
   * Its owner table, which the worker writes as it takes and frees four-tuples; none once closed
   * or dead, as a LocalNic's (the worker's close marks its table dead only in its own later turn).
   * A read the worker's compaction disturbs answers yes (OwnerTable.mayHold): the SYN race needs
   * no miss.
   */
  holds(localIp: number, localPort: number, remoteIp: number, remotePort: number): boolean {
    return (
      this.death === null && !this.closed && this.owners.mayHold(localIp, localPort, remoteIp, remotePort)
    );
  }

  /** See `Nic.peer`: another WorkerNic, both alive, gets a channel between the two workers. */
  peer(other: Nic): boolean {
    return other instanceof WorkerNic && peerWorkers(this, other);
  }

  /** See Nic.sendFrom: the worker rewrites the source of what its link sends. */
  sendFrom(teamMac: number, mac: number | null): void {
    if (this.closed || this.death !== null) return;
    this.post({ t: 'send-from', team: teamMac, mac: mac ?? 0 });
  }

  /** The arenas the worker cuts accepted connections' blocks from (born-arena.ts). */
  private readonly bornArenas = new BornArenaIndex();

  private born(id: number, packed: Parameters<typeof unpackInitiate>[0], entries: number[]): void {
    // Dead: the death's sweep of the arenas adopted every connection this names.
    if (this.death !== null) return;
    let installed: ReturnType<typeof unpackInitiate>['installed'];
    try {
      installed = unpackInitiate(packed, this.hostAddrs).installed;
    } catch (e) {
      this.defective(new WorkerProtocolError(`born: ${(e as Error).message}`));
      return;
    }
    const named: BornEntry[] = [];
    for (let i = 0; i + 1 < entries.length; i += 2) named.push({ no: entries[i]!, entry: entries[i + 1]! });
    this.bornArenas.announced(named);
    for (const inst of installed) this.bornHere(id, inst.key, inst.slot, inst.block);
  }

  private bornHere(id: number, key: ConnKey, slot: number, block: ConnBlockRef): void {
    const h = new WorkerConnectionHandle(this, key, slot, block);
    this.handles[slot] = h;
    this.byKey.set(h, h);
    // Not an install's own change: an attach by place after it must search (see installedList).
    this.keyEpoch++;
    this.conns++;
    let ok = false;
    try {
      ok = this.listens.get(id)?.(h) === true;
    } catch {
      ok = false;
    }
    // Refused (the listener stopped meanwhile, the server full): reset at the worker.
    if (!ok) h.abort();
  }

  /**
   * Connections whose handshake ended in the worker that it died before it told ('born'): the
   * host takes them as their 'born' would have given them, before the death is told, so the
   * failover rebuilds them from their records with the rest (none is left hanging at the peer).
   */
  private adoptUnannounced(): void {
    for (const u of this.bornArenas.unannounced(this.hostAddrs)) {
      if (this.byKey.get(u.key) !== undefined) continue;
      this.bornHere(u.listener, u.key, u.slot, u.block);
      this.adoptedAtDeath++;
    }
  }

  /** Connections adopted at the worker's death from its born arenas (adoptUnannounced). */
  adoptedAtDeath = 0;

  /** Silent past `deadAfterMs` while it should run: dead, and its thread is stopped. */
  protected override silent(cause: WorkerDeath): void {
    this.die(cause);
    if (cause.kind === 'heartbeat') void this.worker.terminate();
  }

  protected override die(cause: WorkerDeath): void {
    // A worker stopped by close() exits: that is no death.
    if (this.closed || this.death !== null) return;
    this.runInTransit();
    this.adoptUnannounced();
    super.die(cause, () => {
      // Its table no longer says where anything runs: the other workers send up to the host again.
      this.owners.markDead();
      this.linkCarrier = false;
      // What the worker told its sockets before it died reaches them before anyone hears of the
      // death: the failover's salvage detaches their handles, and a close still queued (a reset's
      // error with it) would then never be delivered, or be told as an orderly close by the rebuild.
      // Only those: each handle's events are one mask delivered in their order, so a socket with a
      // close pending hears all it was told, and the others' refills (up to a second of backlog at
      // 1,000 downloads under load) keep their turns rather than delay the failover's start.
      this.deliveries.flushWhere(closing);
    });
  }
}
