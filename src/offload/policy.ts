import type { Timer } from '../core/clock.ts';
import { InvalidArgumentError } from '../core/errors.ts';
import type { Nic, UploadReason } from '../nic/nic.ts';
import type { Stack } from '../stack/stack.ts';
import type { TcpConnection } from '../stack/tcp/tcp-connection.ts';
import { isOffloadable } from '../state/validate.ts';

export interface OffloadPolicy {
  /**
   * 'manual': only explicit offload() calls; 'immediate': every offloadable connection as soon as
   * a scan sees it; 'after': once it has lived `minAgeMs` or moved `minBytes` (whichever first).
   */
  mode: 'manual' | 'immediate' | 'after';
  minAgeMs: number;
  minBytes: number;
  /** How often the policy looks for candidates (ms). */
  scanIntervalMs: number;
  /** Advisory upload reasons honoured (mandatory ones always are). */
  advisory: readonly UploadReason[];
  /**
   * 'immediate': how long an accepted connection waits for the policy to place it while the policy
   * makes no progress (no transfer of its ends), in ms of the stack's clock; past it the
   * application gets it in the host (PolicyScanner.placed).
   */
  placeTimeoutMs: number;
}

export const DEFAULT_OFFLOAD_POLICY: Readonly<OffloadPolicy> = {
  mode: 'manual',
  minAgeMs: 1000,
  minBytes: 1 << 20,
  scanIntervalMs: 100,
  advisory: [],
  // Longer than a worker NIC's deadAfterMs (2 s) and its failover: a member that stops answering
  // is declared dead and its request rejected before this bound passes, so it serves only a
  // policy that is truly stuck. At 500 ms, a burst of 5,000 accepts on two loaded cores (policy
  // transfers of 256 taking over half a second each) left 3,894 to the host, which could not
  // serve them (stalls of 8.7 s at the clients against 0.45-1 s placed).
  placeTimeoutMs: 5000,
};

/** The defaults with `p` over them, checked. */
export function makePolicy(p: Partial<OffloadPolicy> | undefined): OffloadPolicy {
  const out = { ...DEFAULT_OFFLOAD_POLICY, ...p };
  if (!['manual', 'immediate', 'after'].includes(out.mode))
    throw new InvalidArgumentError(`unknown offload policy mode ${out.mode}`);
  for (const k of ['minAgeMs', 'minBytes', 'placeTimeoutMs'] as const) {
    if (!Number.isFinite(out[k]) || out[k] < 0) throw new InvalidArgumentError(`policy ${k} must be >= 0`);
  }
  if (!(out.scanIntervalMs > 0)) throw new InvalidArgumentError('policy scanIntervalMs must be > 0');
  return out;
}

/**
 * Connections handed to one offload at most. Every connection of a transfer is frozen until the
 * whole transfer is done, and its synchronous steps hold the host's thread: against the kernel, a
 * thousand connects in two seconds once piled up 465 ready connections, whose one transfer (each
 * carrying the HTTP body already written into its send buffer) froze them all for 2.2 s and the
 * main thread with them. Those beyond the cap wait for the next scan, which follows at once; they
 * run in the host meanwhile, not frozen.
 *
 * 256, not 64: a transfer's time on TAP is mostly the round trip to a busy worker, not its count,
 * and with 64 the thousand connections of `bench tap-team` reach the workers over ~10 s, while
 * the host's main thread also runs their traffic (a fifth of its time in a profile): in two
 * runs each, 64 left the team with no fault at 2.2-10.7 s of longest stall against 0.2-2.4 s
 * for the host alone in the same run, and the reachability fault 6.2-8.0 s to resume (detected
 * in 0.2-3.1 s); 256 gave 0.7 s against 4.9 s and 2.6 s against 1.9 s, and 1.8-4.5 s to resume
 * (detected in 35-57 ms).
 * Carrier faults resumed slower with 256 (3.4-3.9 s against 1.2-2.2 s), but on twice the
 * connections: with 64 only about a quarter were on the faulted member yet (BENCHMARKS.md).
 */
export const POLICY_BATCH = 256;

/**
 * The policy's transfers in flight at once. Two: a transfer's time on TAP is the host's work
 * (freeze, release, the blocks) and then the worker's (install), one after the other; with one in
 * flight each side idles while the other works. In a burst of 5,000 accepts against the kernel, 21
 * transfers of up to 256, one at a time and 0.16-1.5 s each, placed the last 12.6 s after the
 * first accept, and three quarters of the first byte's wait was that queue (BENCHMARKS.md, "The
 * connect burst at 5,000"). With two, the host prepares the next while the worker installs the
 * one before. Not more: every transfer's connections are frozen until it ends, and the worker
 * takes them in order anyway.
 */
export const PLACE_PIPELINE = 2;

/** Accepted connections the host served because their placement passed `placeTimeoutMs`. */
export const PLACE_TIMEOUT_COUNTER = 'offload.place.timeout';

/** Placements given up within this long (ms) after the first of a burst are reported together. */
export const PLACE_REPORT_MS = 1000;

/**
 * Looks at the host's connections every `scanIntervalMs` and hands those the policy finds ready
 * to `offload`, at most POLICY_BATCH at a time and PLACE_PIPELINE offloads at once; a periodic
 * scan waits for those to finish.
 *
 * `placed(conn)` lets an accepted connection wait for its offload before the application gets it
 * (TcpServer through the host's `placeAccepted`): in 'immediate' mode, a connection handed to the
 * application in the host first fills its send buffer there (an HTTP body), and every byte is then
 * written, grown into, copied and carried by the transfer, on the main thread. Against the kernel,
 * 1,000 downloads of 300 kB: a transfer of 256 such connections held serve's main thread 4.2 s, half
 * of it the HTTP service writing into host buffers and the transfer copying them (BENCHMARKS.md).
 */
export class PolicyScanner {
  private readonly firstSeen = new Map<TcpConnection, number>();
  private readonly timer: Timer | null;
  private stopped = false;
  /** Offloads of the policy's under way (PLACE_PIPELINE at most; the next scan follows one's end). */
  private inFlight = 0;
  /** The connections of the offloads under way: no scan hands them to another. */
  private readonly inBatch = new Set<TcpConnection>();
  /** Accepts wait for their placement (onPlacing said so last). */
  private placingNow = false;
  /** A scan is queued for the end of the current task (kick). */
  private kicked = false;
  /**
   * Accepted connections waiting for the policy's offload: what each waits on and until when, in
   * the order they came (so by deadline).
   */
  private readonly waiting = new Map<TcpConnection, { done: () => void; until: number }>();
  /** Fires at the first waiting connection's deadline. */
  private readonly placeTimer: Timer;
  /**
   * When the policy last made progress: a transfer that held waiting accepts ended. A burst of
   * accepts queued behind transfers that each end in time waits for its turn; one behind a
   * transfer that does not end, or behind scans that only pick other connections (members full),
   * waits placeTimeoutMs at most.
   */
  private progressAt = Number.NEGATIVE_INFINITY;
  /** Placements given up since the current burst's report was scheduled (PLACE_REPORT_MS). */
  private timedOut = 0;
  private readonly reportTimer: Timer;

  constructor(
    private readonly stack: Stack,
    private readonly policy: OffloadPolicy,
    private readonly offload: (ready: TcpConnection[]) => Promise<unknown>,
    private readonly onError: (e: unknown) => void,
    /** Accepts served by the host because their placement took too long: once per burst. */
    private readonly onPlaceTimeout: (connections: number) => void = () => {},
    /** Accepts began to wait for their placement (true), or none waits any more (false). */
    private readonly onPlacing: (on: boolean) => void = () => {},
  ) {
    this.placeTimer = stack.clock.createTimer(() => this.giveUp()).unref();
    this.reportTimer = stack.clock.createTimer(() => this.report()).unref();
    if (policy.mode === 'manual') {
      this.timer = null;
      return;
    }
    this.timer = stack.clock.createTimer(() => this.scan()).unref();
    this.timer.arm(policy.scanIntervalMs);
  }

  stop(): void {
    this.stopped = true;
    this.timer?.disarm();
    this.placeTimer.disarm();
    this.release(this.waiting.keys());
    if (this.reportTimer.armed) {
      this.reportTimer.disarm();
      this.report();
    }
  }

  /**
   * Resolves once the policy has had its say on `conn`: offloaded, refused (it stays in the host),
   * or gone. At once unless the mode is 'immediate'. The next scan comes at once if none is under
   * way (one that is picks up what arrived meanwhile when it ends: a burst of accepts goes in few
   * transfers, not one each).
   */
  placed(conn: TcpConnection): Promise<void> {
    if (this.stopped || this.policy.mode !== 'immediate' || this.timer === null) return Promise.resolve();
    const prev = this.waiting.get(conn);
    return new Promise<void>((resolve) => {
      if (prev) {
        const first = prev.done;
        prev.done = () => {
          first();
          resolve();
        };
      } else {
        // Bounded, whatever the placement waits on (a worker that does not answer, a NIC that
        // failed mid-initiate, a transfer that never settles): the host serves it meanwhile.
        const until = this.stack.clock.now() + this.policy.placeTimeoutMs;
        this.waiting.set(conn, { done: resolve, until });
        if (!this.placeTimer.armed) this.placeTimer.armAt(until);
        this.placingChanged();
      }
      this.kick();
    });
  }

  /**
   * A scan once the current task is done (the accepts of one batch of frames then go in one
   * transfer), unless one is under way, which takes them when it ends. Not a timer of 0: under
   * load a timer fires only after the event loop's other phases, and the sockets' flushes there
   * ran 0.7-1 s at the start of a burst of 5,000 accepts, each of which waited that long.
   */
  private kick(): void {
    if (this.inFlight >= PLACE_PIPELINE || this.kicked) return;
    this.kicked = true;
    queueMicrotask(() => {
      this.kicked = false;
      this.scan();
    });
  }

  private placingChanged(): void {
    const on = this.waiting.size > 0;
    if (on === this.placingNow) return;
    this.placingNow = on;
    this.onPlacing(on);
  }

  /** An accept waits that no offload under way carries. */
  private waitingBeyond(): boolean {
    for (const c of this.waiting.keys()) if (!this.inBatch.has(c)) return true;
    return false;
  }

  /** Connections waiting in `placed`. */
  get placing(): number {
    return this.waiting.size;
  }

  private release(conns: Iterable<TcpConnection>): void {
    for (const c of [...conns]) {
      const w = this.waiting.get(c);
      if (w === undefined) continue;
      this.waiting.delete(c);
      w.done();
    }
    this.placingChanged();
  }

  /** The connections whose placement is past its deadline go to the application, in the host. */
  private giveUp(): void {
    const now = this.stack.clock.now();
    const stuckAt = this.progressAt + this.policy.placeTimeoutMs;
    const late: TcpConnection[] = [];
    let next = Number.POSITIVE_INFINITY;
    for (const [c, w] of this.waiting) {
      const until = Math.max(w.until, stuckAt);
      if (until > now) {
        next = until;
        break;
      }
      late.push(c);
    }
    if (late.length > 0) {
      this.stack.counters.inc(PLACE_TIMEOUT_COUNTER, late.length);
      // One report per burst: a thousand accepts that wait on one hung transfer are one event.
      this.timedOut += late.length;
      if (!this.reportTimer.armed) this.reportTimer.arm(PLACE_REPORT_MS);
      this.release(late);
    }
    if (next !== Number.POSITIVE_INFINITY) this.placeTimer.armAt(next);
  }

  private report(): void {
    const n = this.timedOut;
    this.timedOut = 0;
    if (n > 0) this.onPlaceTimeout(n);
  }

  private scan(): void {
    if (this.stopped || this.inFlight >= PLACE_PIPELINE) return;
    // Begun by a kick or straight after a transfer, not by the timer: the next comes from `next`.
    this.timer?.disarm();
    const p = this.policy;
    const now = this.stack.clock.now();
    const ready: TcpConnection[] = [];
    const seen = new Set<TcpConnection>();
    for (const conn of this.stack.tcp.connections()) {
      if (!isOffloadable(conn.state) || conn.listener !== null) continue;
      seen.add(conn);
      if (this.inBatch.has(conn)) continue;
      let first = this.firstSeen.get(conn);
      if (first === undefined) {
        first = now;
        this.firstSeen.set(conn, now);
      }
      const bytes = conn.stats.bytesIn + conn.stats.bytesOut;
      if (p.mode === 'immediate' || now - first >= p.minAgeMs || bytes >= p.minBytes) ready.push(conn);
    }
    for (const c of this.firstSeen.keys()) if (!seen.has(c)) this.firstSeen.delete(c);
    // Waiting for nothing: closed, or no longer one the policy would move.
    if (this.waiting.size > 0) {
      const gone: TcpConnection[] = [];
      // Not those of an offload under way: released from the host, they are the transfer's now.
      for (const c of this.waiting.keys()) if (!seen.has(c) && !this.inBatch.has(c)) gone.push(c);
      this.release(gone);
    }
    const { batch, more } = this.pick(ready);
    const next = (ended: boolean): void => {
      if (ended) {
        this.inFlight--;
        for (const c of batch) this.inBatch.delete(c);
      }
      if (this.waiting.size > 0 && batch.some((c) => this.waiting.has(c)))
        this.progressAt = this.stack.clock.now();
      this.release(batch);
      if (this.stopped) return;
      const again = more || this.waiting.size > 0;
      // Straight on from the transfer's end, not from a timer: under load the timer fires only
      // after the loop's other phases (the sockets' flushes of a burst's bodies ran 300-900 ms
      // there), and the accepts that wait had waited that long again for each transfer.
      // Only while accepts wait: each such pass releases the accepts it took, so it ends. Connections
      // the host already serves wait for a timer turn, or a transfer refused whole (every member
      // full) would start the next at once, for ever, in microtasks the event loop never leaves.
      if (again && ended && this.waiting.size > 0) this.scan();
      // The last offload under way arms it; one still running scans again as it ends.
      else if (this.inFlight === 0) this.timer?.arm(again ? 0 : p.scanIntervalMs);
    };
    if (batch.length === 0) {
      next(false);
      return;
    }
    this.inFlight++;
    for (const c of batch) this.inBatch.add(c);
    this.offload(batch).then(
      () => next(true),
      (e) => {
        this.onError(e);
        next(true);
      },
    );
    // Accepts beyond this batch: the next offload goes at once, beside this one.
    if (more && this.waitingBeyond()) this.scan();
  }

  /**
   * The next transfer's connections, POLICY_BATCH at most: accepts waiting for their placement
   * first (each one's application waits on it; a connection the host already serves loses
   * nothing by waiting for a later transfer), then the others.
   */
  private pick(ready: readonly TcpConnection[]): { batch: TcpConnection[]; more: boolean } {
    const batch: TcpConnection[] = [];
    if (this.waiting.size > 0) {
      for (const c of ready) {
        if (!this.waiting.has(c)) continue;
        if (batch.length === POLICY_BATCH) return { batch, more: true };
        batch.push(c);
      }
    }
    const accepts = batch.length;
    for (const c of ready) {
      // Taken above.
      if (accepts > 0 && this.waiting.has(c)) continue;
      if (batch.length === POLICY_BATCH) return { batch, more: true };
      batch.push(c);
    }
    return { batch, more: false };
  }
}

/**
 * Where an automatic offload puts each connection: on the NIC with the most free capacity at that
 * moment, so a batch spreads over the NICs rather than filling the first. What fits nowhere is
 * returned unplaced. `placing`: connections already placed on a NIC by offloads still under way,
 * not yet in its load.
 */
export function placeByFreeCapacity<T>(
  items: readonly T[],
  nics: readonly Nic[],
  placing: (nic: Nic) => number = () => 0,
): { groups: Map<Nic, T[]>; unplaced: T[] } {
  const free = new Map<Nic, number>();
  for (const n of nics) free.set(n, n.capacity - n.load - placing(n));
  const groups = new Map<Nic, T[]>();
  const unplaced: T[] = [];
  for (const item of items) {
    let best: Nic | null = null;
    let room = 0;
    for (const [n, f] of free) {
      if (f > room) {
        best = n;
        room = f;
      }
    }
    if (best === null) {
      unplaced.push(item);
      continue;
    }
    free.set(best, room - 1);
    const g = groups.get(best);
    if (g) g.push(item);
    else groups.set(best, [item]);
  }
  return { groups, unplaced };
}
