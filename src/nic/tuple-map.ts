import { hashOf, sameTuple } from '../stack/tcp/conn-table.ts';
import type { ConnKey } from './nic.ts';

/** An address as connKeyId names it: an IPv4 address as a u32 (keys may carry it signed), a handle whole. */
function norm(ip: number): number {
  return ip >= 0x1_0000_0000 ? ip : ip >>> 0;
}

interface Entry<V> {
  readonly localIp: number;
  readonly localPort: number;
  readonly remoteIp: number;
  readonly remotePort: number;
  value: V;
  /** The next entry whose tuple hashes alike. */
  next: Entry<V> | null;
}

/**
 * A map keyed by a connection's four-tuple, hashed as the TCP layer's table hashes it (hashOf):
 * a string key per lookup (connKeyId) cost a few hundred nanoseconds to build and hash in a table of
 * ten thousand, and a WorkerNic looked its connections up a dozen times per connection and move.
 * Iteration follows the order of first insertion of each hash (then of the chain).
 */
export class TupleMap<V> {
  private readonly map = new Map<number, Entry<V>>();
  private count = 0;

  get size(): number {
    return this.count;
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
    const entry: Entry<V> = {
      localIp: l,
      localPort: k.localPort,
      remoteIp: r,
      remotePort: k.remotePort,
      value,
      next: null,
    };
    if (last === null) this.map.set(h, entry);
    else last.next = entry;
    this.count++;
    return this;
  }

  delete(k: ConnKey): boolean {
    const l = norm(k.localIp);
    const r = norm(k.remoteIp);
    const h = hashOf(l, k.localPort, r, k.remotePort);
    let prev: Entry<V> | null = null;
    for (let e = this.map.get(h) ?? null; e !== null; prev = e, e = e.next) {
      if (!sameTuple(e, l, k.localPort, r, k.remotePort)) continue;
      if (prev !== null) prev.next = e.next;
      else if (e.next !== null) this.map.set(h, e.next);
      else this.map.delete(h);
      this.count--;
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
