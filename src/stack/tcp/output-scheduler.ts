/**
 * What the scheduler keeps on each sender (a connection), so that queueing one costs no
 * allocation and no lookup.
 */
export interface OutputSender {
  /** The turn this sender last began to spend in (-1: never). */
  outputTurn: number;
  /** Bytes it sent in that turn. */
  outputUsed: number;
  /** In the list for the next turn (at most once). */
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
    // Those that spend their budget again while the list runs go in the other list, for the turn
    // after: nobody is served twice in one turn.
    const list = this.pending;
    this.pending = this.running;
    this.running = list;
    for (const sender of list) {
      sender.outputQueued = false;
      this.resume(sender);
    }
    list.length = 0;
  };
}
