import type { Clock, Timer } from '../core/clock.ts';
import type { NicDeath } from './nic.ts';

/**
 * How an engine proves to its host side that it runs: a counter it bumps on its own timer and
 * before every unit of work (`count`, read at any moment, whatever the engine is doing: a worker's
 * doorbell word in shared memory), and a beat message it sends on its timer (`beat`).
 */
export interface BeatSource {
  /** The engine's beat count now. */
  count(): number;
  /** Its timer's period (ms): a running engine bumps `count` at least once a period. */
  readonly heartbeatMs: number;
  /** Silence (ms) past which a started engine is taken for dead; sized for a busy one. */
  readonly deadAfterMs: number;
  /** Silence allowed before the first beat (ms), on top of `deadAfterMs`: starting takes a while. */
  readonly startAllowanceMs: number;
}

/**
 * Heartbeat periods without a beat, after a stop was asked, before the engine counts as dead: a
 * thread told to stop runs at most to its next interrupt check, and one still running beats at
 * least once a period.
 */
const STOP_SILENT_BEATS = 3;

/**
 * A NIC's liveness as its host side keeps it, the same for every NIC (`HostNic`): whether its
 * engine runs yet (`ready`), its heartbeats (the 'heartbeat' indication), and the deaths that
 * only silence shows (`NicDeath` 'heartbeat': silent past `deadAfterMs`; 'killed': told to stop
 * and silent since). An engine in the host's own thread (`sameThread`) runs from its making and
 * cannot fall silent while the host looks at it: it has no beats and no watchdog, and dies only by
 * saying so (a LocalNic's crash). Deaths that are certain at once (a thread's exit or throw) are
 * the NIC's own; every death ends the liveness (`end`).
 */
export class Liveness {
  private started: boolean;
  /** Why the liveness ended (the NIC closed or died), or null while it is watched. */
  private ended: Error | null = null;
  private readonly waiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private lastBeat: number;
  private lastCount = 0;
  /** When the watch began: an engine that never ran has been silent since. */
  private readonly since: number;
  private readonly watchdog: Timer | null;
  private stopWatch: Timer | null = null;
  /** When the engine was told to stop (`stopped`), or -1. */
  private toldAt = -1;

  private constructor(
    private readonly clock: Clock,
    private readonly source: BeatSource | null,
    /** The engine fell silent: the NIC dies of `cause` (once: a NIC dies once). */
    private readonly silent: (cause: NicDeath) => void,
    /** A beat came: the NIC indicates 'heartbeat'. */
    private readonly heard: () => void,
  ) {
    this.started = source === null;
    this.since = clock.now();
    this.lastBeat = source === null ? 0 : this.since + source.startAllowanceMs;
    if (source === null) {
      this.watchdog = null;
      return;
    }
    this.watchdog = clock.createTimer(() => this.check()).unref();
    this.watchdog.arm(source.deadAfterMs);
  }

  /** An engine in the host's thread: running now, never silent. */
  static sameThread(clock: Clock): Liveness {
    return new Liveness(clock, null, noDeath, noBeat);
  }

  /** An engine on a thread of its own, watched through `source`. */
  static beating(
    clock: Clock,
    source: BeatSource,
    silent: (cause: NicDeath) => void,
    heard: () => void,
  ): Liveness {
    return new Liveness(clock, source, silent, heard);
  }

  /** Whether the engine has run (its first beat came, or it is in this thread). */
  get running(): boolean {
    return this.started;
  }

  /**
   * Resolves once the engine runs (its first beat): starting a thread and compiling its modules
   * takes a while. Rejects with the end's reason once the liveness ended before that (the NIC
   * closed or died before its engine ran), whether asked before the end or after it.
   */
  ready(): Promise<void> {
    if (this.started) return Promise.resolve();
    if (this.ended !== null) return Promise.reject(this.ended);
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** A beat message from the engine. */
  beat(): void {
    this.lastBeat = this.clock.now();
    if (!this.started) {
      this.started = true;
      for (const w of this.waiters.splice(0)) w.resolve();
    }
    this.heard();
  }

  /**
   * The engine was told to stop outright, now. If it was between units of work then (`between`),
   * it is dead at once, in a microtask, before any I/O callback of this loop can run
   * (a timer would lose to the thread's exit when this process was off a core long enough for the
   * exit to be pending too). Otherwise it is dead once its thread says it ran its last JavaScript
   * (`gone`), or once its count has not moved for STOP_SILENT_BEATS periods, whichever comes first,
   * and not after `deadAfterMs`, which is sized for an engine that runs.
   */
  stopped(between: boolean): void {
    const source = this.source;
    if (source === null || this.stopWatch !== null || this.ended !== null) return;
    let count = source.count();
    const told = this.clock.now();
    this.toldAt = told;
    let since = told;
    const watch = this.clock
      .createTimer(() => {
        if (this.ended !== null) return;
        const now = this.clock.now();
        const c = source.count();
        if (c !== count) {
          count = c;
          since = now;
        } else if (now - since >= STOP_SILENT_BEATS * source.heartbeatMs) {
          this.silent({ kind: 'killed', silentMs: now - since });
          return;
        }
        watch.arm(source.heartbeatMs);
      })
      .unref();
    this.stopWatch = watch;
    if (between) {
      queueMicrotask(() => {
        if (this.ended === null) this.silent({ kind: 'killed', silentMs: this.clock.now() - told });
      });
    } else watch.arm(source.heartbeatMs);
  }

  /**
   * The engine's thread has run its last JavaScript: a sign from its runtime as it tears the
   * thread down, ahead of the thread's exit, which waits for the thread's pending requests on the
   * libuv pool and the teardown of its heap (tens to hundreds of ms more with thousands of
   * connections, while the kill watch waits STOP_SILENT_BEATS periods). Told to stop before
   * (`stopped`), the engine is dead now, however far its last unit of work had come: it writes
   * nothing again. Not told, it ended by itself, and its own exit or error says why: nothing here.
   */
  gone(): void {
    if (this.source === null || this.ended !== null || this.toldAt < 0) return;
    const silentMs = this.clock.now() - this.toldAt;
    // Reported once, whatever the owner does with it: the kill watch says no more.
    this.toldAt = -1;
    this.stopWatch?.disarm();
    this.silent({ kind: 'killed', silentMs });
  }

  /**
   * The NIC closed or died (`why`): no more watching, and an engine that had not run yet never
   * will: waiters for `ready` fail with `why`, as does every later `ready`. A close is an end like
   * a death here: a caller that awaited the first beat of a NIC its owner closed (a shutdown during
   * a start) waited for ever. Ended once: a later end (a close after a death) changes nothing.
   */
  end(why: Error): void {
    if (this.ended !== null) return;
    this.ended = why;
    this.watchdog?.disarm();
    this.stopWatch?.disarm();
    for (const w of this.waiters.splice(0)) w.reject(why);
  }

  /** The watchdog: silence past `deadAfterMs` is a death. */
  private check(): void {
    const source = this.source!;
    if (this.ended !== null) return;
    const now = this.clock.now();
    const count = source.count();
    if (count !== this.lastCount) {
      this.lastCount = count;
      // Before its engine runs, a thread whose count moves (a restart's, beating while it waits
      // for its TAP) keeps its start allowance: the rest of its start (the engine made, its first
      // beat) may take seconds at load with the count still.
      this.lastBeat = Math.max(now, this.started ? 0 : this.lastBeat);
    }
    const silent = now - this.lastBeat;
    if (silent > source.deadAfterMs) {
      // An engine that never ran (no beat, its count never moved) is silent since the watch began,
      // not since its allowance ended: reported so, a start that outlasted allowance and deadline
      // read as a running worker silent for deadAfterMs ("no heartbeat for 30012 ms").
      const never = !this.started && count === 0;
      this.silent(
        never
          ? { kind: 'heartbeat', silentMs: now - this.since, detail: 'never started' }
          : { kind: 'heartbeat', silentMs: silent },
      );
      return;
    }
    this.watchdog!.arm(Math.max(10, source.deadAfterMs / 4));
  }
}

function noDeath(_cause: NicDeath): void {}
function noBeat(): void {}
