import { type ConnKey, sameConnKey } from './nic.ts';
import { TupleMap } from './tuple-map.ts';

/**
 * A batch's connections in the order the host sent them, found again by key. A worker answers in
 * that order (a batch of one path, the usual one), so each lookup first tries the entry after the
 * last one found: no map is made per batch, and a lookup is one tuple compared. An answer out of
 * order (several paths, refusals) costs a map, built once at the first miss. The connections of
 * one batch are distinct (the caller's rule: a batch names a connection once).
 */
export class BatchList<V extends { readonly key: ConnKey }> {
  private byKey: TupleMap<number> | null = null;
  private next = 0;

  /** `list`: the batch's entries so far, in order, now this list's own (a list made at its size). */
  constructor(readonly list: V[] = []) {}

  get size(): number {
    return this.list.length;
  }

  push(v: V): void {
    this.byKey?.set(v.key, this.list.length);
    this.list.push(v);
  }

  /** The next lookup tries the first entry again (a second pass over the answer). */
  rewind(): void {
    this.next = 0;
  }

  get(k: ConnKey): V | undefined {
    const at = this.list[this.next];
    if (at !== undefined && (at.key === k || sameConnKey(at.key, k))) {
      this.next++;
      return at;
    }
    if (this.byKey === null) {
      this.byKey = new TupleMap<number>();
      for (let i = 0; i < this.list.length; i++) this.byKey.set(this.list[i]!.key, i);
    }
    const i = this.byKey.get(k);
    if (i === undefined) return undefined;
    this.next = i + 1;
    return this.list[i];
  }

  /** The key of the entry the next lookup tries first (an answer's next key, when in order). */
  peekKey(): ConnKey | undefined {
    return this.list[this.next]?.key;
  }
}
