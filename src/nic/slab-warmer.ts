import { performance } from 'node:perf_hooks';
import { warmSlabCount, warmSlabs } from './hard-state.ts';

/** How often the warmer looks at the event loop. */
const TICK_MS = 15;
/** The longest the warmer holds the thread at a time. */
const SLICE_MS = 10;
/** A tick is idle when the thread's other work took less than this share of it. */
const IDLE_SHARE = 0.25;
/**
 * The warmer works only after this long of idle ticks in a row. One idle tick is no sign a burst
 * is over: at load the thread waits for a core between its turns, and that wait reads as idle.
 */
const QUIET_MS = 1000;

/**
 * Keeps `want` spare slabs of this thread written through (hard-state.ts warmSlabs), doing it only
 * once the event loop has had little else to do for a while (QUIET_MS): page faults a burst of accepts would have taken on
 * the critical path of its placements are taken between bursts instead. Real time, not a Clock:
 * what it measures is the thread's own idleness, which a simulation's virtual time does not have.
 */
export class SlabWarmer {
  private timer: NodeJS.Timeout | null = null;
  private last = performance.eventLoopUtilization();
  /** The warmer's own time in the loop since the last tick (not the others' work). */
  private own = 0;
  /** When the current run of idle ticks began (performance.now()), or -1 after a busy tick. */
  private idleSince = -1;

  constructor(readonly want: number) {}

  start(): void {
    if (this.timer !== null || this.want <= 0) return;
    this.last = performance.eventLoopUtilization();
    this.idleSince = -1;
    this.timer = setInterval(this.tick, TICK_MS).unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  private readonly tick = (): void => {
    const now = performance.eventLoopUtilization();
    const d = performance.eventLoopUtilization(now, this.last);
    this.last = now;
    const others = d.active - this.own;
    this.own = 0;
    const t0 = performance.now();
    if (others > IDLE_SHARE * (d.active + d.idle)) {
      this.idleSince = -1;
      return;
    }
    if (this.idleSince < 0) this.idleSince = t0;
    if (t0 - this.idleSince < QUIET_MS || warmSlabCount() >= this.want) return;
    warmSlabs(this.want, t0 + SLICE_MS, () => performance.now());
    this.own = performance.now() - t0;
  };
}
