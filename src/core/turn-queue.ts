import type { Clock } from './clock.ts';

/**
 * Work run a bounded amount per turn of the event loop: at most `perTurn` items, and no item begun
 * once `sliceMs` of the clock have passed since the turn's first; the rest wait for the next turn
 * (`clock.defer`), in the order they came. Work queued one deferred call each runs all in the same
 * turn (Node runs every immediate queued before its check phase), so a thousand connections made
 * readable by one message from a worker held serve's main thread 0.3-1.2 s at a time, and the
 * worker's heartbeats, its exit and the team's timers waited behind them (BENCHMARKS.md, tap-team).
 */
export class TurnQueue<T> {
  // Items are never undefined: an undefined slot past `head` is one `flushWhere` already ran.
  private items: (T | undefined)[] = [];
  private head = 0;
  /** Slots past `head` that `flushWhere` emptied. */
  private holes = 0;
  private scheduled = false;
  /** Turns that left items for the next (diagnostics). */
  carried = 0;

  constructor(
    private readonly clock: Clock,
    private readonly run: (item: T) => void,
    readonly perTurn: number,
    readonly sliceMs: number,
  ) {}

  /** Items waiting for their turn. */
  get size(): number {
    return this.items.length - this.head - this.holes;
  }

  push(item: T): void {
    this.items.push(item);
    if (this.scheduled) return;
    this.scheduled = true;
    this.clock.defer(this.drain);
  }

  /**
   * Run every waiting item now, in order, and any pushed meanwhile: for work that must be done
   * before what the caller does next (a NIC's death is indicated only once its sockets heard what
   * its worker sent before it died). An item that throws is rethrown in a turn of its own, so the
   * rest still run now and the caller goes on; the drain already scheduled finds nothing left.
   */
  flush(): void {
    while (this.head < this.items.length) {
      const item = this.items[this.head];
      this.items[this.head++] = undefined;
      if (item === undefined) {
        this.holes--;
        continue;
      }
      this.runNow(item);
    }
  }

  /**
   * Run now, in order, only the waiting items `pick` chooses (and any pushed meanwhile that it
   * chooses); the others keep their place and their turn. For a flush whose reason concerns a few
   * items: a NIC's death waits only for the sockets with a close to hear, not for the whole
   * backlog of refills. A throw is rethrown in a turn of its own, as in `flush`.
   */
  flushWhere(pick: (item: T) => boolean): void {
    for (let i = this.head; i < this.items.length; i++) {
      const item = this.items[i];
      if (item === undefined || !pick(item)) continue;
      this.items[i] = undefined;
      this.holes++;
      this.runNow(item);
    }
  }

  private runNow(item: T): void {
    try {
      this.run(item);
    } catch (err) {
      this.clock.defer(() => {
        throw err;
      });
    }
  }

  // `scheduled` stays set while it runs: an item pushed meanwhile joins this drain, not a second one.
  private readonly drain = (): void => {
    const t0 = this.clock.now();
    let n = 0;
    try {
      while (this.head < this.items.length) {
        if (n === this.perTurn || (n > 0 && this.clock.now() - t0 >= this.sliceMs)) break;
        const item = this.items[this.head];
        this.items[this.head++] = undefined;
        if (item === undefined) {
          this.holes--;
          continue;
        }
        n++;
        this.run(item);
      }
    } finally {
      if (this.head === this.items.length) {
        this.items.length = 0;
        this.head = 0;
        this.holes = 0;
        this.scheduled = false;
      } else {
        // What ran is dropped once it is most of the array, so the array stays near the backlog.
        if (this.head > 1024 && this.head * 2 > this.items.length) {
          this.items = this.items.slice(this.head);
          this.head = 0;
        }
        this.carried++;
        this.clock.defer(this.drain);
      }
    }
  };
}
