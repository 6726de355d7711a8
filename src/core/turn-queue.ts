import type { Clock } from './clock.ts';

/** How a TurnQueue's turns yield to other work and catch up on what waited (all optional). */
export interface TurnPace {
  /**
   * Run before this queue's slice in each turn: the `runAhead` of queues whose work comes first
   * (a WorkerNic's deliveries run the frames passed up to the host stack first).
   */
  ahead?: () => void;
  /**
   * Items that have waited this long run past the turn's `perTurn` and `sliceMs`, up to
   * `agedSliceMs`: a backlog that other work slowed to a turn now and then still keeps an upper
   * bound on its wait (a handshake's segments, before the peer's 1 s timers resend them).
   */
  agedMs?: number;
  agedSliceMs?: number;
}

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
  /** This turn's slice is still to run (in the scheduled drain, or earlier by `runAhead`). */
  private due = false;
  /** When each item was pushed, by its place in `items` (only with `pace.agedMs`). */
  private stamps: number[] = [];
  /** Turns that left items for the next (diagnostics). */
  carried = 0;

  constructor(
    private readonly clock: Clock,
    private readonly run: (item: T) => void,
    readonly perTurn: number,
    readonly sliceMs: number,
    private readonly pace: TurnPace = {},
  ) {}

  /** Items waiting for their turn. */
  get size(): number {
    return this.items.length - this.head - this.holes;
  }

  push(item: T): void {
    this.items.push(item);
    if (this.pace.agedMs !== undefined) this.stamps.push(this.clock.now());
    if (this.scheduled) return;
    this.scheduled = true;
    this.schedule();
  }

  /**
   * Run this turn's slice now if it has not run yet in this turn of the loop, ahead of whatever
   * the caller runs next (`TurnPace.ahead`: network input before the deliveries' refills, as a
   * kernel runs its packet processing before user work). The drain already scheduled then runs
   * nothing this turn: one slice a turn, whichever runs it. A throw as in `flush`.
   */
  runAhead(): void {
    if (!this.due) return;
    this.due = false;
    this.slice(true);
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

  private schedule(): void {
    this.due = true;
    this.clock.defer(this.drain);
  }

  /**
   * One turn's items from the head: at most `perTurn`, none begun once `sliceMs` passed; past
   * those, with `pace.agedMs`, the items that have waited that long, none begun once
   * `pace.agedSliceMs` passed. `caught`: a throw goes to a turn of its own (runNow).
   */
  private slice(caught: boolean): void {
    const t0 = this.clock.now();
    const aged = this.pace.agedMs;
    const agedSlice = this.pace.agedSliceMs ?? this.sliceMs;
    let n = 0;
    while (this.head < this.items.length) {
      if (n >= this.perTurn || (n > 0 && this.clock.now() - t0 >= this.sliceMs)) {
        // Past the turn's share: only what has waited its age, within the longer slice.
        if (aged === undefined) break;
        const now = this.clock.now();
        if (now - t0 >= agedSlice || now - this.stamps[this.head]! < aged) break;
      }
      const item = this.items[this.head];
      this.items[this.head++] = undefined;
      if (item === undefined) {
        this.holes--;
        continue;
      }
      n++;
      if (caught) this.runNow(item);
      else this.run(item);
    }
  }

  // `scheduled` stays set while it runs: an item pushed meanwhile joins this drain, not a second one.
  private readonly drain = (): void => {
    try {
      if (this.due) {
        this.due = false;
        this.pace.ahead?.();
        this.slice(false);
      }
    } finally {
      if (this.head === this.items.length) {
        this.items.length = 0;
        this.stamps.length = 0;
        this.head = 0;
        this.holes = 0;
        this.scheduled = false;
      } else {
        // What ran is dropped once it is most of the array, so the array stays near the backlog.
        if (this.head > 1024 && this.head * 2 > this.items.length) {
          this.items = this.items.slice(this.head);
          if (this.pace.agedMs !== undefined) this.stamps = this.stamps.slice(this.head);
          this.head = 0;
        }
        this.carried++;
        this.schedule();
      }
    }
  };
}

/**
 * Queues whose slice runs ahead of other queues' in each turn of the loop (their `TurnPace.ahead`
 * is `run`), whichever queue's drain came first: network input before user work.
 */
export class TurnLead {
  private readonly queues = new Set<{ runAhead(): void }>();

  add(q: { runAhead(): void }): void {
    this.queues.add(q);
  }

  delete(q: { runAhead(): void }): void {
    this.queues.delete(q);
  }

  readonly run = (): void => {
    for (const q of this.queues) q.runAhead();
  };
}

/**
 * This thread's network input: the frames every WorkerNic passed up to the host stack. A kernel
 * runs its packet processing before user work; here each turn's slice of them runs before a
 * WorkerNic's deliveries and a rebuild's paced resumes (TransferProtocol).
 */
export const networkInput = new TurnLead();
