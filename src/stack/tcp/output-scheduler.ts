/**
 * What the scheduler keeps on each sender (a connection), so that queueing one costs no
 * allocation and no lookup.
 */
export interface OutputSender {
  /** The turn this sender last began to spend in (-1: never). */
  outputTurn: number;
  /** Bytes it sent in that turn. */
  outputUsed: number;
  /**
   * In a scheduler's list for its next turn. Written by the scheduler only (set by `later`, cleared
   * as the list is served), never by an owner resetting a sender that moved: a sender still listed
   * by the scheduler it left is then not listed a second time, by that one or its new one.
   */
  outputQueued: boolean;
}

/**
 * The per-turn output budget, like Linux's TCP small queues: a sender may send `budget` bytes per
 * turn of the event loop, so one with a large window cannot hold a turn (and the timers, reads and
 * requests behind it) while others wait. A sender that spends its budget goes in the list for the
 * next turn, behind those already there; that turn resumes the list in order, each with a fresh
 * budget, so senders with output are served round robin, once per turn each. One owner of
 * connections (a host's TcpLayer, and through its own TcpLayer a NIC's engine) has one scheduler.
 */
export class OutputScheduler<T extends OutputSender> {
  /** Bytes per sender and turn; Infinity: off (the scheduler then never defers anything). */
  budget = Number.POSITIVE_INFINITY;
  /**
   * Bytes all senders together may send per turn, with `budget` on (Infinity: no bound). Each
   * sender's budget keeps one from holding a turn, but not thousands with output at once: 5,000
   * downloads answered at a worker (serve --accept-at-nic) began their data in the same turns as
   * their handshakes, and the worker read its TAP, the SYNs and ACKs of the rest, seconds late
   * (BENCHMARKS.md, "Accept at the NIC: the turn's output bounded").
   */
  turnBudget = Number.POSITIVE_INFINITY;
  /** Bytes sent this turn by all senders (see turnBudget). */
  turnUsed = 0;
  /** Turns begun so far. */
  turn = 0;
  private ticking = false;
  private pending: T[] = [];
  private running: T[] = [];

  /**
   * @param defer runs a function at the end of this turn (the clock's `defer`).
   * @param resume lets a sender cut short by its budget send again (it decides whether it still
   *   may, e.g. a connection since handed to another owner does not).
   */
  constructor(
    private readonly defer: (fn: () => void) => void,
    private readonly resume: (sender: T) => void,
  ) {}

  /**
   * A sender is about to send: its budget for this turn (its bytes sent this turn are in
   * `outputUsed`). The first send of a turn starts its count from zero and makes sure the turn ends.
   */
  begin(sender: T): number {
    const budget = this.budget;
    if (budget !== Number.POSITIVE_INFINITY && sender.outputTurn !== this.turn) {
      sender.outputTurn = this.turn;
      sender.outputUsed = 0;
      this.tick();
    }
    return budget;
  }

  /** A sender spent its budget of this turn: it goes on in the next, after the others. */
  later(sender: T): void {
    if (sender.outputQueued) return;
    sender.outputQueued = true;
    this.pending.push(sender);
    this.tick();
  }

  /** Every sender must wait for the next turn: this one sent its `turnBudget`. */
  get turnSpent(): boolean {
    return this.turnUsed >= this.turnBudget && this.budget !== Number.POSITIVE_INFINITY;
  }

  /** Senders waiting for the next turn. */
  get waiting(): number {
    return this.pending.length;
  }

  /** One deferral per turn, however many senders spend in it. */
  private tick(): void {
    if (this.ticking) return;
    this.ticking = true;
    this.defer(this.nextTurn);
  }

  private readonly nextTurn = (): void => {
    this.ticking = false;
    this.turn++;
    this.turnUsed = 0;
    // Those that spend their budget again while the list runs go in the other list, for the turn
    // after: nobody is served twice in one turn.
    const list = this.pending;
    this.pending = this.running;
    this.running = list;
    let i = 0;
    for (; i < list.length && this.turnUsed < this.turnBudget; i++) {
      const sender = list[i]!;
      sender.outputQueued = false;
      this.resume(sender);
    }
    if (i === list.length) {
      list.length = 0;
      return;
    }
    // The turn's bytes ran out: those not reached go first next turn (still queued), then those
    // cut short in this one.
    const later = this.pending;
    list.copyWithin(0, i);
    list.length -= i;
    for (const sender of later) list.push(sender);
    later.length = 0;
    this.pending = list;
    this.running = later;
    this.tick();
  };
}
