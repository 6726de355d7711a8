import { hashOf, sameTuple } from '../stack/tcp/conn-table.ts';
import type { ConnKey } from './nic.ts';

/** An address as connKeyId names it: an IPv4 address as a u32 (keys may carry it signed), a handle whole. */
function norm(ip: number): number {
  return ip >= 0x1_0000_0000 ? ip : ip >>> 0;
}

interface Entry<V> {
  /** The tuple: set when the entry is made or taken up again from the map's spares. */
  localIp: number;
  localPort: number;
  remoteIp: number;
  remotePort: number;
  value: V;
  /** The next entry whose tuple hashes alike. */
  next: Entry<V> | null;
}

/** Spare entries a map that keeps them holds whatever its size (see `TupleMap`). */
const SPARE_ENTRIES = 1024;

/**
 * A map keyed by a connection's four-tuple, hashed as the TCP layer's table hashes it (hashOf):
 * a string key per lookup (connKeyId) cost a few hundred nanoseconds to build and hash in a table of
 * ten thousand, and a WorkerNic looked its connections up a dozen times per connection and move.
 * Iteration follows the order of first insertion of each hash (then of the chain).
 */
export class TupleMap<V> {
  private readonly map = new Map<number, Entry<V>>();
  private count = 0;
  /** The most tuples the map has held at once: what its spares may hold (see `delete`). */
  private peak = 0;
  private made = 0;
  /** Entries deleted, for the next tuple set (`keepSpares`). */
  private readonly spare: Entry<V>[] = [];

  /**
   * @param keepSpares keep deleted entries for the next tuples set, at most as many as the map
   * has held at once (or SPARE_ENTRIES while it has held few). For a long-lived map whose tuples come and go
   * (a worker's connections, by slot and by pooled state): each move made an entry at the
   * destination that lived, and was promoted, until the connection's next move. A key that
   * `entries()` or iteration gave names its tuple only until that tuple is deleted: a spare is
   * the next tuple's.
   */
  constructor(private readonly keepSpares = false) {}

  get size(): number {
    return this.count;
  }

  /** Entries this map made (the rest of its sets took up a spare or replaced a value). */
  get entriesMade(): number {
    return this.made;
  }

  get(k: ConnKey): V | undefined {
    return this.find(k.localIp, k.localPort, k.remoteIp, k.remotePort)?.value;
  }

  /** get() by the tuple's numbers, for callers that hold no key object (a frame's fields). */
  lookup(localIp: number, localPort: number, remoteIp: number, remotePort: number): V | undefined {
    return this.find(localIp, localPort, remoteIp, remotePort)?.value;
  }

  has(k: ConnKey): boolean {
    return this.find(k.localIp, k.localPort, k.remoteIp, k.remotePort) !== undefined;
  }

  set(k: ConnKey, value: V): this {
    const l = norm(k.localIp);
    const r = norm(k.remoteIp);
    const h = hashOf(l, k.localPort, r, k.remotePort);
    const head = this.map.get(h);
    let last: Entry<V> | null = null;
    for (let e = head ?? null; e !== null; last = e, e = e.next) {
      if (!sameTuple(e, l, k.localPort, r, k.remotePort)) continue;
      e.value = value;
      return this;
    }
    let entry = this.spare.pop();
    if (entry === undefined) {
      this.made++;
      entry = {
        localIp: l,
        localPort: k.localPort,
        remoteIp: r,
        remotePort: k.remotePort,
        value,
        next: null,
      };
    } else {
      entry.localIp = l;
      entry.localPort = k.localPort;
      entry.remoteIp = r;
      entry.remotePort = k.remotePort;
      entry.value = value;
    }
    if (last === null) this.map.set(h, entry);
    else last.next = entry;
    if (++this.count > this.peak) this.peak = this.count;
    return this;
  }

  delete(k: ConnKey): boolean {
    return this.remove(k, false, undefined);
  }

  /** delete(k) if k's value is `value`: one walk of the chain for a get and a delete. */
  deleteIf(k: ConnKey, value: V): boolean {
    return this.remove(k, true, value);
  }

  private remove(k: ConnKey, only: boolean, value: V | undefined): boolean {
    const l = norm(k.localIp);
    const r = norm(k.remoteIp);
    const h = hashOf(l, k.localPort, r, k.remotePort);
    let prev: Entry<V> | null = null;
    for (let e = this.map.get(h) ?? null; e !== null; prev = e, e = e.next) {
      if (!sameTuple(e, l, k.localPort, r, k.remotePort)) continue;
      if (only && e.value !== value) return false;
      if (prev !== null) prev.next = e.next;
      else if (e.next !== null) this.map.set(h, e.next);
      else this.map.delete(h);
      this.count--;
      // Bounded by the most the map has held, not by what it holds now: a worker that moves its
      // ten thousand connections away empties its maps, and a bound by the current size kept
      // half of the entries (the other half were made again by the next ten thousand to come).
      // Entries are made only when no spare is left, so spares and tuples together never exceed
      // that peak.
      if (this.keepSpares && this.spare.length < Math.max(SPARE_ENTRIES, this.peak)) {
        // Nothing of the deleted tuple's value stays reachable from the spare.
        e.next = null;
        e.value = undefined as V;
        this.spare.push(e);
      }
      return true;
    }
    return false;
  }

  clear(): void {
    this.map.clear();
    this.count = 0;
  }

  *values(): IterableIterator<V> {
    for (const head of this.map.values()) {
      for (let c: Entry<V> | null = head; c !== null; c = c.next) yield c.value;
    }
  }

  /** Each entry as its key (a four-tuple, not a caller's object) and value. */
  *entries(): IterableIterator<[ConnKey, V]> {
    for (const head of this.map.values()) {
      for (let c: Entry<V> | null = head; c !== null; c = c.next) yield [c, c.value];
    }
  }

  /**
   * Every entry as its key and value, side by side in one array (key, value, key, value…): no
   * generator step and no pair per entry, for a batch's pass over its own map.
   */
  list(): (ConnKey | V)[] {
    const out: (ConnKey | V)[] = [];
    for (const head of this.map.values()) {
      for (let c: Entry<V> | null = head; c !== null; c = c.next) out.push(c, c.value);
    }
    return out;
  }

  [Symbol.iterator](): IterableIterator<[ConnKey, V]> {
    return this.entries();
  }

  private find(
    localIp: number,
    localPort: number,
    remoteIp: number,
    remotePort: number,
  ): Entry<V> | undefined {
    const l = norm(localIp);
    const r = norm(remoteIp);
    for (let e = this.map.get(hashOf(l, localPort, r, remotePort)) ?? null; e !== null; e = e.next)
      if (sameTuple(e, l, localPort, r, remotePort)) return e;
    return undefined;
  }
}
