/**
 * Where a failover's move spends its time, phase by phase (docs/architecture.md, "The failover's
 * phase log"). A move of thousands of connections in real time is mostly waiting: for the
 * mover's chain, for a worker's answer behind its own output, for the main thread's turn. The
 * team passes one of these with every batch of a failover (TransferOptions.phases); the transfer
 * marks each step as it passes it, and the team's failover record carries the summary.
 */

/** The steps a batch passes, in order. */
export const MOVE_MARKS = ['begun', 'frozen', 'handed', 'installed', 'taken', 'settled'] as const;
export type MoveMark = (typeof MOVE_MARKS)[number];

/**
 * Spans between the marks, each the time from the mark before it: `wait` the batch waited for the
 * mover (other transfers, the policy's offloads); `freeze` sockets and host tuples frozen;
 * `hand` the source's answer with the state (a terminate, or a hand straight to the target);
 * `install` the target's answer to the initiate (none when the source handed it over itself);
 * `take` the source's answer with what it held meanwhile; `settle` re-pointing and resuming the
 * sockets; `batch` what followed in the batch (its report).
 */
export const MOVE_SPANS = ['wait', 'freeze', 'hand', 'install', 'take', 'settle', 'batch'] as const;
export type MoveSpan = (typeof MOVE_SPANS)[number];

/** A failover's phases as its record keeps them (FailoverRecord.phases). */
export interface MovePhaseSummary {
  batches: number;
  /** Parts of the batches that crossed to or from another thread, each one request. */
  parts: number;
  /** Connections a target refused, rolled back to the host (or the source). */
  rolledBack: number;
  /** The failover job's start after detection (it waits behind the team's earlier jobs), ms. */
  startMs: number;
  /** The first batch's marks, ms after detection (-1: not reached). */
  first: Record<MoveMark, number>;
  /** Each span summed over the batches, ms; `team` is the rest of the failover (between batches, after). */
  spent: Record<MoveSpan | 'team', number>;
}

const NONE = -1;

/** One failover's recorder: `ask` before each batch, the transfer's marks, `done` after it. */
export class MovePhases {
  batches = 0;
  parts = 0;
  /** Connections the targets refused, rolled back (the host runs them; their settle is among the marks). */
  rolledBack = 0;
  private startAt = NONE;
  private asked = NONE;
  private readonly marks: Record<MoveMark, number> = blankMarks();
  private readonly first: Record<MoveMark, number> = blankMarks();
  private readonly spent: Record<MoveSpan, number> = {
    wait: 0,
    freeze: 0,
    hand: 0,
    install: 0,
    take: 0,
    settle: 0,
    batch: 0,
  };

  constructor(
    private readonly now: () => number,
    /** Detection (the failover record's `at`), in the same clock. */
    private readonly detectedAt: number,
  ) {}

  /** The failover job begins (after the team's earlier jobs). */
  start(): void {
    this.startAt = this.now();
  }

  /** A batch is asked of the mover. */
  ask(): void {
    this.asked = this.now();
    for (const m of MOVE_MARKS) this.marks[m] = NONE;
  }

  /** The batch passed `m`: the last part to pass it sets it (parts of a batch run side by side). */
  mark(m: MoveMark): void {
    if (this.asked !== NONE) this.marks[m] = this.now();
  }

  /** `n` connections the target refused are rolled back. */
  refused(n: number): void {
    this.rolledBack += n;
  }

  /** The batch is done: its spans are added, a missing mark counting as the one before it. */
  done(): void {
    if (this.asked === NONE) return;
    const end = this.now();
    let prev = this.asked;
    MOVE_MARKS.forEach((m, i) => {
      // Parts overlap: a later mark set by an earlier part is never before the one ahead of it.
      const at = Math.max(prev, this.marks[m] === NONE ? prev : this.marks[m]);
      this.spent[MOVE_SPANS[i]!] += at - prev;
      if (this.batches === 0 && this.marks[m] !== NONE) this.first[m] = at - this.detectedAt;
      prev = at;
    });
    this.spent.batch += end - prev;
    this.batches++;
    this.asked = NONE;
  }

  /** The summary, with the failover's whole time from detection (`totalMs`). */
  summary(totalMs: number): MovePhaseSummary {
    let inBatches = 0;
    for (const s of MOVE_SPANS) inBatches += this.spent[s];
    const spent = { ...this.spent, team: 0 };
    for (const s of MOVE_SPANS) spent[s] = round(spent[s]);
    spent.team = round(totalMs - inBatches);
    const first = { ...this.first };
    for (const m of MOVE_MARKS) if (first[m] !== NONE) first[m] = round(first[m]);
    return {
      batches: this.batches,
      parts: this.parts,
      rolledBack: this.rolledBack,
      startMs: this.startAt === NONE ? NONE : round(this.startAt - this.detectedAt),
      first,
      spent,
    };
  }
}

/**
 * The summary as serve's log line ends: "phases (ms): first batch at begun 0.3, …; in wait 0.1,
 * …; 5 batches, 10 parts, 0 rolled back, started 0.1" (a mark not reached is left out).
 */
export function formatPhases(p: MovePhaseSummary): string {
  const at = MOVE_MARKS.filter((m) => p.first[m] >= 0).map((m) => `${m} ${p.first[m].toFixed(1)}`);
  const spent = [...MOVE_SPANS, 'team' as const].map((s) => `${s} ${p.spent[s].toFixed(1)}`);
  return `phases (ms): first batch at ${at.join(', ')}; in ${spent.join(', ')}; ${p.batches} batches, ${p.parts} parts, ${p.rolledBack} rolled back, started ${p.startMs.toFixed(1)}`;
}

function blankMarks(): Record<MoveMark, number> {
  return { begun: NONE, frozen: NONE, handed: NONE, installed: NONE, taken: NONE, settled: NONE };
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
