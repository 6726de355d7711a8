import { hashOf } from '../../stack/tcp/conn-table.ts';
import type { ConnKey } from '../nic.ts';

/** An address as TupleMap compares it: an IPv4 address as a u32, an IPv6 handle whole. */
function norm(ip: number): number {
  return ip >= 0x1_0000_0000 ? ip : ip >>> 0;
}

function same(a: ConnKey, b: ConnKey): boolean {
  return (
    a.localPort === b.localPort &&
    a.remotePort === b.remotePort &&
    norm(a.localIp) === norm(b.localIp) &&
    norm(a.remoteIp) === norm(b.remoteIp)
  );
}

/**
 * One batch's keys by their place in it, for the batch being installed only: an open-addressing
 * table of places (place + 1, 0 empty) in one typed array that every batch reuses, cleared over
 * the part it uses. A TupleMap made per batch cost an entry object per connection and a rehash at
 * every doubling of its buckets, on every move, to answer "named twice?" and "whose block?".
 */
export class BatchKeys {
  private table = new Int32Array(64);
  private mask = 63;
  private keys: readonly ConnKey[] = [];

  /**
   * Index `keys` (the batch's, kept until the next `reset`): the place of the first key that an
   * earlier one named already, or -1 when each is named once.
   */
  reset(keys: readonly ConnKey[]): number {
    let size = 64;
    while (size < keys.length * 2) size *= 2;
    if (this.table.length < size) this.table = new Int32Array(size);
    else this.table.fill(0, 0, size);
    this.mask = size - 1;
    this.keys = keys;
    const t = this.table;
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i]!;
      let at = this.home(k);
      for (;;) {
        const v = t[at]!;
        if (v === 0) {
          t[at] = i + 1;
          break;
        }
        if (same(keys[v - 1]!, k)) return i;
        at = (at + 1) & this.mask;
      }
    }
    return -1;
  }

  /** The place of `k` in the batch, or -1. */
  indexOf(k: ConnKey): number {
    const t = this.table;
    for (let at = this.home(k); ; at = (at + 1) & this.mask) {
      const v = t[at]!;
      if (v === 0) return -1;
      if (same(this.keys[v - 1]!, k)) return v - 1;
    }
  }

  /** Let go of the batch's keys (the table's places are cleared by the next reset). */
  clear(): void {
    this.keys = [];
    this.table.fill(0, 0, this.mask + 1);
  }

  private home(k: ConnKey): number {
    return hashOf(norm(k.localIp), k.localPort, norm(k.remoteIp), k.remotePort) & this.mask;
  }
}
