/** A node of an `OldestFirst` list: its links, null while it is in none. */
export interface Aged<N> {
  older: N | null;
  newer: N | null;
}

/**
 * Nodes linked through themselves in the order they were pushed, oldest first: push, unlink from
 * anywhere and the oldest, each one step, with nothing allocated: what a table keeps for a
 * return (an emptied list) and lets go of, oldest first, past its bound, one per change instead
 * of a walk of them all.
 */
export class OldestFirst<N extends Aged<N>> {
  oldest: N | null = null;
  private newest: N | null = null;
  size = 0;

  push(n: N): void {
    n.older = this.newest;
    n.newer = null;
    if (this.newest !== null) this.newest.newer = n;
    else this.oldest = n;
    this.newest = n;
    this.size++;
  }

  /** `n`, which must be in this list, out of it. */
  unlink(n: N): void {
    if (n.older !== null) n.older.newer = n.newer;
    else this.oldest = n.newer;
    if (n.newer !== null) n.newer.older = n.older;
    else this.newest = n.older;
    n.older = null;
    n.newer = null;
    this.size--;
  }

  clear(): void {
    this.oldest = null;
    this.newest = null;
    this.size = 0;
  }
}
