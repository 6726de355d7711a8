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
  /** hashOf the tuple: its bucket at any table size, and no hash again when the table grows. */
  hash: number;
  /** The next entry in its bucket. */
  next: Entry<V> | null;
  /**
   * Its place in the map's order of insertion (`order`). A place, not links to its neighbours: a
   * key that iteration gave (a worker's pending connection keeps one) would otherwise hold every
   * other entry of the map, and their values (blocks, and the slabs they are in), alive.
   */
  at: number;
  /** In the map (false once deleted, until a set takes it up again from the spares). */
  live: boolean;
}

/** Spare entries a map that keeps them holds whatever its size (see `TupleMap`). */
const SPARE_ENTRIES = 1024;

/** Buckets of a new map; doubled whenever it holds more tuples than buckets. */
const FIRST_BUCKETS = 8;

/** Deleted places `order` may hold beyond as many as its live ones before it is packed. */
const ORDER_SLACK = 32;

/**
 * A map keyed by a connection's four-tuple, hashed as the TCP layer's table hashes it (hashOf):
 * a string key per lookup (connKeyId) cost a few hundred nanoseconds to build and hash in a table of
 * ten thousand, and a WorkerNic looked its connections up a dozen times per connection and move.
 * Its own buckets (an array indexed by the hash's low bits, chained through the entries), not a
 * `Map` by hash: a WorkerNic's map took ten thousand tuples and let them go on every move, and the
 * `Map`'s inserts, deletes and the rehashes that both set off were the main thread's largest cost
 * of a move (a quarter of it, profiled). The buckets only grow (to the most tuples held at once),
 * so tuples that come and go touch no table but their own bucket's chain.
 * Iteration follows the order of insertion (a tuple set again keeps its place).
 */
export class TupleMap<V> {
  private buckets: (Entry<V> | null)[] = new Array<Entry<V> | null>(FIRST_BUCKETS).fill(null);
  private mask = FIRST_BUCKETS - 1;
  private count = 0;
  /** The most tuples the map has held at once: what its spares may hold (see `delete`). */
  private peak = 0;
  private made = 0;
  private grown = 0;
  /**
   * The entries in the order they were set, with null where one was deleted: packed (in place)
   * once the deleted places outnumber the live ones, and never shrunk, so a map whose tuples
   * all leave and come back writes into the same array.
   */
  private readonly order: (Entry<V> | null)[] = [];
  /** Places of `order` in use (live or deleted since the last packing). */
  private end = 0;
  private holes = 0;
  /** No live entry in `order` before this place (oldestKey's start). */
  private head = 0;
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

  /** Times its buckets grew (each a new array and every entry placed again). */
  get bucketsGrown(): number {
    return this.grown;
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

  /** The key of the tuple set longest ago and still here (undefined when empty). */
  oldestKey(): ConnKey | undefined {
    const order = this.order;
    while (this.head < this.end && order[this.head] === null) this.head++;
    return this.head < this.end ? order[this.head]! : undefined;
  }

  set(k: ConnKey, value: V): this {
    const l = norm(k.localIp);
    const r = norm(k.remoteIp);
    const h = hashOf(l, k.localPort, r, k.remotePort);
    const at = h & this.mask;
    const head = this.buckets[at] as Entry<V> | null;
    for (let e: Entry<V> | null = head; e !== null; e = e.next) {
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
        hash: h,
        next: head,
        at: this.end,
        live: true,
      };
    } else {
      entry.localIp = l;
      entry.localPort = k.localPort;
      entry.remoteIp = r;
      entry.remotePort = k.remotePort;
      entry.value = value;
      entry.hash = h;
      entry.next = head;
      entry.at = this.end;
      entry.live = true;
    }
    this.buckets[at] = entry;
    if (this.end < this.order.length) this.order[this.end] = entry;
    else this.order.push(entry);
    this.end++;
    if (++this.count > this.peak) this.peak = this.count;
    if (this.count > this.buckets.length) this.grow();
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
    const at = hashOf(l, k.localPort, r, k.remotePort) & this.mask;
    let prev: Entry<V> | null = null;
    for (let e = this.buckets[at] as Entry<V> | null; e !== null; prev = e, e = e.next) {
      if (!sameTuple(e, l, k.localPort, r, k.remotePort)) continue;
      if (only && e.value !== value) return false;
      if (prev !== null) prev.next = e.next;
      else this.buckets[at] = e.next;
      this.order[e.at] = null;
      e.live = false;
      this.count--;
      if (++this.holes > this.count + ORDER_SLACK) this.pack();
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
    const order = this.order;
    for (let i = 0; i < this.end; i++) {
      const e = order[i];
      if (e === null || e === undefined) continue;
      e.live = false;
      order[i] = null;
    }
    this.buckets.fill(null);
    this.end = 0;
    this.holes = 0;
    this.head = 0;
    this.count = 0;
  }

  /** The live entries moved to the front of `order`, in their order; the places after emptied. */
  private pack(): void {
    const order = this.order;
    let j = 0;
    for (let i = 0; i < this.end; i++) {
      const e = order[i];
      if (e === null || e === undefined) continue;
      e.at = j;
      order[j++] = e;
    }
    for (let i = j; i < this.end; i++) order[i] = null;
    this.end = j;
    this.holes = 0;
    this.head = 0;
  }

  /**
   * Room for `n` more tuples, made at once: a batch set one by one into a map too small for it
   * doubled its buckets again and again along the way (eleven times for a crash's 10,000 at a
   * survivor), placing every entry again each time.
   */
  reserve(n: number): void {
    let size = this.buckets.length;
    while (size < this.count + n) size *= 2;
    if (size > this.buckets.length) this.resize(size);
  }

  /** Twice the buckets, each entry placed again by its kept hash. */
  private grow(): void {
    this.resize(this.buckets.length * 2);
  }

  private resize(n: number): void {
    const b = new Array<Entry<V> | null>(n).fill(null);
    const mask = n - 1;
    for (let i = 0; i < this.end; i++) {
      const e = this.order[i];
      if (e === null || e === undefined) continue;
      const at = e.hash & mask;
      e.next = b[at] as Entry<V> | null;
      b[at] = e;
    }
    this.buckets = b;
    this.mask = mask;
    this.grown++;
  }

  /**
   * The live entries, oldest first, as they were when iteration began: a caller may delete (or
   * set) while it iterates, and an entry deleted before its turn is skipped, as a `Map` would.
   */
  private snapshot(): Entry<V>[] {
    const out: Entry<V>[] = [];
    for (let i = 0; i < this.end; i++) {
      const e = this.order[i];
      if (e !== null && e !== undefined) out.push(e);
    }
    return out;
  }

  *values(): IterableIterator<V> {
    for (const e of this.snapshot()) if (e.live) yield e.value;
  }

  /** Each entry as its key (a four-tuple, not a caller's object) and value. */
  *entries(): IterableIterator<[ConnKey, V]> {
    for (const e of this.snapshot()) if (e.live) yield [e, e.value];
  }

  /**
   * Every entry as its key and value, side by side in one array (key, value, key, value…): no
   * generator step and no pair per entry, for a batch's pass over its own map.
   */
  list(): (ConnKey | V)[] {
    const out: (ConnKey | V)[] = [];
    for (let i = 0; i < this.end; i++) {
      const e = this.order[i];
      if (e !== null && e !== undefined) out.push(e, e.value);
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
    for (
      let e = this.buckets[hashOf(l, localPort, r, remotePort) & this.mask] as Entry<V> | null;
      e !== null;
      e = e.next
    )
      if (sameTuple(e, l, localPort, r, remotePort)) return e;
    return undefined;
  }
}
