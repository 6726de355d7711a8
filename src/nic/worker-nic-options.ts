import type { Clock } from '../core/clock.ts';
import type { Link } from '../link/link.ts';
import type { TapLinkOptions } from '../link/tap-link.ts';

/**
 * Hooks for tests only, kept out of WorkerNicOptions (what the CLI and users configure) and of the
 * link's options: nothing but a test has a reason to stop a thread halfway through its work.
 */
export interface WorkerNicTestSeams {
  /**
   * For tests of a worker killed while it opens its TAP: once the open has listed what it holds
   * (TapLinkOptions.onHeld) for the `after`-th time, word 0 of `flag` (Int32) becomes 1 and the
   * thread waits there for good; with `after` 0, before the open's first step.
   */
  stopWhileOpening?: { after: number; flag: SharedArrayBuffer };
  /**
   * For tests of a source worker killed during a move it hands straight to another worker: it
   * waits this long between posting the batch to the other worker and its answer to the host.
   */
  handGapMs?: number;
  /**
   * For tests of the order of a connection's segments across a move handed straight to another
   * worker: the source stops twice, before it releases the batch (what arrives for the
   * connections meanwhile queues at it) and after it handed the batch on (the destination runs
   * them and holds their input), each time until the test opens the gate. Int32 word 0 counts the
   * stops reached; the thread goes on once word 1 reaches that count (or after 30 s). A gate and
   * not a pause: the test goes on when what it needs happened, however slow the machine.
   */
  handGate?: SharedArrayBuffer;
  /**
   * For tests of a worker killed between handshakes it ended and the 'born' that tells the host:
   * once the test sets Int32 word 1, word 0 becomes 1 as the worker is about to post a turn's
   * 'born', and the thread waits there for good.
   */
  stopBeforeBorn?: SharedArrayBuffer;
  /** How long a destination holds a handed batch's input at most (hand-order.ts HOLD_MS otherwise). */
  handHoldMs?: number;
  /**
   * For tests of the order across a hand in a team of three or more: a worker posts each batch of
   * frames it forwards to a peer this long after the first of them (instead of at the end of its
   * turn), as a thread the machine preempts between reading the owner table and posting would.
   */
  peerFlushDelayMs?: number;
  /**
   * How long a turn of a worker's paced builds (connections a prodding move took unbuilt) runs, in
   * place of nic-worker.ts BUILD_TURN_MS: 0 builds one a turn, a minute all of them in one, for
   * tests of the pacing that hold however fast the machine is.
   */
  buildTurnMs?: number;
  /**
   * How long the worker's engine holds a moved connection's input for its settle at most
   * (NicEngineOptions.settleHoldMs; SETTLE_HOLD_MS otherwise): long, for tests of the order the
   * hold keeps, whose settle may reach a starved worker past the real bound.
   */
  settleHoldMs?: number;
  /**
   * For tests of a kill's detection ahead of the thread's exit: the path of a FIFO the thread opens
   * to read at its boot. The open waits on the libuv pool until a writer opens the FIFO, and a
   * thread's exit waits for its pending requests (as a TAP's poll holds it): the exit comes only
   * once the test opens the FIFO to write.
   */
  exitHeldBy?: string;
  /**
   * How long a worker whose TAP must exist (`create: false`) tries again while another reader
   * still holds it, ms (TAP_FREE_BOUND_MS otherwise): long, for a test that lets the TAP go only
   * once it saw the thread run meanwhile, or short, for one that never lets it go.
   */
  tapFreeBoundMs?: number;
}

export interface WorkerNicOptions {
  id: string;
  /**
   * The link the worker runs on: a main-thread link (a switch port of the simulator), whose frames
   * cross to the worker in batches, or a TAP device the worker opens itself.
   */
  link: Link | { tap: TapLinkOptions };
  /** Connections it holds at most (default 65536); fixes the size of the doorbell. */
  capacity?: number;
  /** Seed of the worker's random source (ports, jitter; the ISN secret too if none is given). Default 1. */
  seed?: number;
  /**
   * The host's ISN secret (StackOptions.isnSecret): the worker answers SYNs and reopens
   * four-tuples with the host's one ISN function.
   */
  isnSecret?: Uint8Array;
  /** Largest shared ring per direction and connection, bytes (default 256 KiB). */
  ringCapacity?: number;
  /**
   * The ring a connection gets when placed here (default ringCapacity; less under load,
   * ringUnderLoad); a send ring grows from there up to ringCapacity while its sender is held by it
   * (regrow).
   */
  placementRing?: number;
  /**
   * The send ring a connection gets when placed here while the NIC's share of the ring budget
   * covers it (sendRingAtPlacement): the size a grow would reach, filled by its socket at once as
   * a grown one. Unset: the send ring is placed as the receive ring is (placementRing, less under
   * load). serve sets it (tap-team.ts PLACEMENT_RING); its receive rings keep placementRing, since
   * a receive ring never grows and its capacity is the window offered.
   */
  sendPlacementRing?: number;
  /** The worker says it is alive this often (default 50 ms). */
  heartbeatMs?: number;
  /** Declared dead after this long without a heartbeat (default 2000 ms). */
  deadAfterMs?: number;
  reachabilityIntervalMs?: number;
  /** Main-thread clock for batching and the watchdog; must be real time (default RealClock). */
  clock?: Clock;
  /**
   * Capture every frame of a TAP the worker opens: called with whole pcap records (no file header),
   * for a PcapWriter's writeRecords. Frames past the bound in flight are counted in captureDropped.
   */
  capture?: (records: Uint8Array) => void;
  /**
   * A worker on a TAP loads its code and then waits, before it opens the TAP, for `letOpen()`
   * (`loaded` says when it waits): whoever holds the TAP now (a team's host on a dead member's
   * port) keeps it while the thread starts, seconds at load, and lets it go just before the open.
   */
  openWhenLet?: boolean;
}
