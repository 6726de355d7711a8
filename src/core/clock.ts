/**
 * Time is injected everywhere protocol code runs, so the simulator can replace wall time with
 * virtual time and replay a scenario exactly.
 *
 * Timers are re-armable objects rather than one-shot callbacks: TCP re-arms its retransmission
 * timer on nearly every ACK, and re-arming an existing object avoids an allocation per segment.
 */
export interface Timer {
  /** Fire `cb` at absolute clock time `atMs` (replacing any earlier arming). */
  armAt(atMs: number): void;
  /** Fire `cb` after `delayMs` from now. */
  arm(delayMs: number): void;
  disarm(): void;
  readonly armed: boolean;
  /** Absolute deadline in ms, or Infinity when not armed. */
  readonly deadline: number;
  /** An unref'd timer does not keep the process (or the virtual-time driver) alive. */
  unref(): this;
}

/**
 * What charges this thread's real time to a clock that only moves when told (`Clock.elapse`).
 * Simulated hardware stops it while it works (see `Clock.meter`).
 */
export interface WorkMeter {
  pause(): void;
  resume(): void;
}

export interface Clock {
  /** Milliseconds, monotonic, fractional. */
  now(): number;
  /**
   * The wall-clock time (ms since the Unix epoch) of now()'s zero, on a clock that follows real
   * time: each thread's performance.now() starts at that thread's start, and a value that must
   * agree between threads (an ISN's timer) reads origin + now(). Absent on a virtual clock, whose
   * time is the one time of its run.
   */
  readonly origin?: number;
  createTimer(cb: () => void): Timer;
  /** Run `cb` soon, after the current work (never synchronously). */
  defer(cb: () => void): void;
  /**
   * Let `ms` pass that the clock did not see go by: work that took real time on a clock that only
   * moves when told (a simulation charging a move its real cost). Timers due meanwhile fire late,
   * in order, as they would behind a busy thread. Absent on clocks that follow real time.
   */
  elapse?(ms: number): void;
  /**
   * The meter charging this thread's real time to this clock now, if any. Simulated hardware (the
   * in-memory switch and its wires) pauses it while it works: on a real network that work is the
   * switch's, done beside the host, and a move charged it made every peer wait for the simulator
   * (a tenth of a failover's hand-over turns was the switch taking the prods' frames).
   */
  meter?: WorkMeter | null;
}

/**
 * Charge `clock` the real time a synchronous piece of work takes (`run`), less what simulated
 * hardware spent inside it: installed as the clock's meter for the run, the previous one put back.
 */
export class ChargeMeter implements WorkMeter {
  private t0 = -1;
  constructor(
    private readonly clock: Clock,
    private readonly now: () => number = () => performance.now(),
  ) {}

  run<T>(fn: () => T): T {
    const prev = this.clock.meter ?? null;
    this.clock.meter = this;
    this.t0 = this.now();
    try {
      return fn();
    } finally {
      this.pause();
      this.clock.meter = prev;
    }
  }

  pause(): void {
    if (this.t0 < 0) return;
    this.clock.elapse?.(this.now() - this.t0);
    this.t0 = -1;
  }

  resume(): void {
    if (this.clock.meter === this && this.t0 < 0) this.t0 = this.now();
  }
}

class RealTimer implements Timer {
  private handle: NodeJS.Timeout | null = null;
  /** When the Node timer behind `handle` is due: before `deadline` once that moved later. */
  private due = Number.POSITIVE_INFINITY;
  private refd = true;
  deadline = Number.POSITIVE_INFINITY;
  constructor(
    private readonly clock: RealClock,
    private readonly cb: () => void,
  ) {}
  get armed(): boolean {
    return this.handle !== null;
  }
  armAt(atMs: number): void {
    this.arm(atMs - this.clock.now());
  }
  arm(delayMs: number): void {
    const d = Math.max(delayMs, 0);
    this.deadline = this.clock.now() + d;
    // A deadline moved later (a connection's, pushed on by each ACK) keeps the Node timer set for
    // the earlier one, which finds the deadline ahead when it fires and sets itself for the rest:
    // one wake-up per timeout instead of a clearTimeout and a new Timeout per ACK.
    if (this.handle !== null && this.due <= this.deadline) return;
    this.set(d);
  }
  private set(d: number): void {
    if (this.handle) clearTimeout(this.handle);
    this.due = this.deadline;
    this.handle = setTimeout(this.fire, d);
    if (!this.refd) this.handle.unref();
  }
  disarm(): void {
    if (this.handle) clearTimeout(this.handle);
    this.handle = null;
    this.due = this.deadline = Number.POSITIVE_INFINITY;
  }
  unref(): this {
    this.refd = false;
    this.handle?.unref();
    return this;
  }
  private readonly fire = (): void => {
    // Node counts a timer in whole ms of its loop's time, so one always could fire up to a ms
    // before performance.now() reached its deadline; only a deadline moved later waits more.
    const left = this.deadline - this.clock.now();
    if (left >= 1) {
      this.handle = null;
      this.set(left);
      return;
    }
    this.handle = null;
    this.due = this.deadline = Number.POSITIVE_INFINITY;
    this.cb();
  };
}

/**
 * A Node timer set for a fraction of a millisecond, cleared and kept: every Timeout is then born
 * with its delay field (`_idleTimeout`) able to hold a fraction. A RealTimer's delay is a
 * difference of `performance.now()` readings, whole only by chance; Timeouts made with whole
 * delays first, the first fraction gave the layout a new map and V8 migrated every Timeout then
 * alive (one per connection's armed timer, in a worker) at its next store, in the middle of a
 * failover (`--trace-migration`, a WorkerNic carrier cut). Kept, since V8 holds the widened
 * transitions weakly.
 */
export const WIDENED_NODE_TIMEOUT: NodeJS.Timeout = widenedTimeout();

function widenedTimeout(): NodeJS.Timeout {
  const t = setTimeout(() => {}, 1.5);
  clearTimeout(t);
  return t;
}

/** Wall-clock time from `performance.now()` and Node's timers. */
export class RealClock implements Clock {
  readonly origin = performance.timeOrigin;
  now(): number {
    return performance.now();
  }
  createTimer(cb: () => void): Timer {
    return new RealTimer(this, cb);
  }
  defer(cb: () => void): void {
    setImmediate(cb);
  }
}

interface HeapEntry {
  at: number;
  seq: number;
  timer: VirtualTimer | null;
  gen: number;
  fn: (() => void) | null;
}

class VirtualTimer implements Timer {
  gen = 0;
  deadline = Number.POSITIVE_INFINITY;
  refd = true;
  constructor(
    private readonly clock: VirtualClock,
    readonly cb: () => void,
  ) {}
  get armed(): boolean {
    return this.deadline !== Number.POSITIVE_INFINITY;
  }
  armAt(atMs: number): void {
    const at = Math.max(atMs, this.clock.now());
    if (this.armed) this.clock.cancelled(this);
    this.gen++;
    this.deadline = at;
    this.clock.schedule(this, at);
  }
  arm(delayMs: number): void {
    this.armAt(this.clock.now() + Math.max(delayMs, 0));
  }
  disarm(): void {
    if (!this.armed) return;
    this.clock.cancelled(this);
    this.gen++;
    this.deadline = Number.POSITIVE_INFINITY;
  }
  unref(): this {
    if (this.refd && this.armed) this.clock.cancelled(this);
    const wasArmed = this.armed;
    this.refd = false;
    if (wasArmed) this.clock.schedule(this, this.deadline, true);
    return this;
  }
}

/**
 * Virtual time: nothing happens until `runDue()` / `advance()` is called, usually by the
 * simulator's driver, which jumps to the next deadline whenever the process has nothing
 * else to run. Entries with equal deadlines fire in the order they were armed, which
 * makes runs with the same seed identical.
 */
export class VirtualClock implements Clock {
  private t: number;
  private seq = 0;
  private heap: HeapEntry[] = [];
  private refCount = 0;
  /** Entries left behind by timers re-armed or disarmed since the last compaction (an upper bound). */
  private stale = 0;
  /** Called whenever a ref'd timer is armed, so a driver can wake up. */
  onWork: (() => void) | null = null;
  meter: WorkMeter | null = null;

  constructor(startMs = 0) {
    this.t = startMs;
  }
  now(): number {
    return this.t;
  }
  createTimer(cb: () => void): Timer {
    return new VirtualTimer(this, cb);
  }
  defer(cb: () => void): void {
    this.push({ at: this.t, seq: this.seq++, timer: null, gen: 0, fn: cb });
    this.refCount++;
    this.onWork?.();
  }
  elapse(ms: number): void {
    if (ms > 0) this.t += ms;
  }
  /** Number of pending ref'd timers and deferred calls. */
  get pendingRefs(): number {
    return this.refCount;
  }
  get pending(): number {
    return this.heap.length;
  }
  /** Earliest pending deadline, or Infinity. */
  nextDeadline(): number {
    this.dropStale();
    return this.heap.length ? this.heap[0]!.at : Number.POSITIVE_INFINITY;
  }

  /** @internal */
  schedule(timer: VirtualTimer, at: number, skipRef = false): void {
    this.push({ at, seq: this.seq++, timer, gen: timer.gen, fn: null });
    if (timer.refd && !skipRef) {
      this.refCount++;
      this.onWork?.();
    }
  }
  /** @internal */
  cancelled(timer: VirtualTimer): void {
    if (timer.refd) this.refCount--;
    // The old entry stays in the heap until its deadline comes up. A timer disarmed far ahead of
    // it (a keepalive, a connection that moved to another owner) would otherwise hold its
    // callback, and everything that reaches, for hours of virtual time, and grow the heap.
    if (++this.stale > 4096 && this.stale > this.heap.length >> 1) this.compact();
  }

  /**
   * Drop every stale entry at once; order (deadline, then arming sequence) is unchanged. In place
   * and rebuilt bottom-up (linear), not sorted: a failover re-arms 10,000 timers in one turn and
   * compacts a heap of tens of thousands several times in it, on the clock it is charged to.
   */
  private compact(): void {
    const h = this.heap;
    let n = 0;
    for (let i = 0; i < h.length; i++) {
      const e = h[i]!;
      if (e.timer === null || e.timer.gen === e.gen) h[n++] = e;
    }
    h.length = n;
    for (let i = (n >> 1) - 1; i >= 0; i--) this.siftDown(i, h[i]!);
    this.stale = 0;
  }

  /** Fire everything due at the current time. Returns how many callbacks ran. */
  runDue(): number {
    let ran = 0;
    for (;;) {
      this.dropStale();
      const top = this.heap[0];
      if (!top || top.at > this.t) return ran;
      this.pop();
      ran++;
      if (top.fn) {
        this.refCount--;
        top.fn();
      } else {
        const timer = top.timer!;
        if (timer.refd) this.refCount--;
        timer.deadline = Number.POSITIVE_INFINITY;
        timer.gen++;
        timer.cb();
      }
    }
  }

  /** Jump to the next deadline (if any) and fire what is due there. */
  step(): number {
    const next = this.nextDeadline();
    if (next === Number.POSITIVE_INFINITY) return 0;
    if (next > this.t) this.t = next;
    return this.runDue();
  }

  /** Advance by `ms`, firing every timer on the way in order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const next = this.nextDeadline();
      if (next > end) break;
      if (next > this.t) this.t = next;
      this.runDue();
    }
    this.t = end;
  }

  private dropStale(): void {
    const h = this.heap;
    while (h.length) {
      const top = h[0]!;
      if (top.timer && top.timer.gen !== top.gen) this.pop();
      else break;
    }
  }

  private push(e: HeapEntry): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (less(h[p]!, e)) break;
      h[i] = h[p]!;
      i = p;
    }
    h[i] = e;
  }

  private pop(): void {
    const h = this.heap;
    const last = h.pop()!;
    if (h.length) this.siftDown(0, last);
  }

  /** Put `e` at `i` or below, moving smaller children up. */
  private siftDown(i: number, e: HeapEntry): void {
    const h = this.heap;
    const n = h.length;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && less(h[r]!, h[l]!) ? r : l;
      if (less(e, h[c]!)) break;
      h[i] = h[c]!;
      i = c;
    }
    h[i] = e;
  }
}

function less(a: HeapEntry, b: HeapEntry): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}
