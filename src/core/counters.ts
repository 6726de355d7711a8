/**
 * Named event counters (drops by reason, retransmissions, ...). Names are constant strings, so
 * counting allocates nothing; a snapshot is a plain object for status output and tests.
 */
export class Counters {
  private readonly map = new Map<string, number>();
  inc(name: string, by = 1): void {
    this.map.set(name, (this.map.get(name) ?? 0) + by);
  }
  get(name: string): number {
    return this.map.get(name) ?? 0;
  }
  /** Sum of every counter whose name starts with `prefix`. */
  sum(prefix = ''): number {
    let s = 0;
    for (const [k, v] of this.map) if (k.startsWith(prefix)) s += v;
    return s;
  }
  snapshot(): Record<string, number> {
    return Object.fromEntries([...this.map].sort(([a], [b]) => a.localeCompare(b)));
  }
}
