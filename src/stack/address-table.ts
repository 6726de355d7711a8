import { InvalidArgumentError } from '../core/errors.ts';
import type { Random } from '../core/random.ts';
import { formatIpv4, formatIpv6, parseIpv4, parseIpv6 } from '../wire/addr.ts';

/**
 * Addresses as numbers for both families (issue 12). TCP, UDP, the path layer and the state
 * objects key everything by a number; an IPv4 address is its own u32 value, and an IPv6 address is
 * interned here to a handle in [2^32 + 1, 2^37), so `remoteIp * 65536 + port` keys stay exact
 * doubles and the IPv4 hot paths do not change. Only where bytes matter (pseudo-header sums, the
 * IPv6 header, ISN and cookie hashing) does code ask the table for them.
 *
 * A handle is refcounted by whatever holds it (the stack's own addresses, paths, connections in
 * the four-tuple table, listeners and UDP bindings); at zero its slot is reused, so a handle must
 * not be kept without a reference. The table is bounded: when it is full `intern` returns -1 and
 * the caller refuses the new IPv6 peer (counted). `find` looks up 16 bytes in place in a packet
 * with open addressing over typed arrays: no string keys and no allocation per packet.
 */
export const TWO_32 = 0x1_0000_0000;
/** `::`, the IPv6 wildcard (a listener or binding on every IPv6 address); never interned. */
export const ANY6 = TWO_32;
/** Handles stay below this, so `handle * 65536 + port` is an exact double. */
const HANDLE_LIMIT = 2 ** 37;

/** True for an IPv6 handle (or ANY6), false for an IPv4 u32. */
export function isV6(ip: number): boolean {
  return ip >= TWO_32;
}

/**
 * Whether two local endpoints on one port would take some of the same packets: equal addresses,
 * or a wildcard covering the other (0 every IPv4 address; ANY6 every IPv6 one, and every IPv4 one
 * too unless v6-only, as Linux with bindv6only off).
 */
export function endpointsOverlap(a: number, aV6Only: boolean, b: number, bV6Only: boolean): boolean {
  if (a === b) return true;
  return covers(a, aV6Only, b) || covers(b, bV6Only, a);
}

/** Whether the local address `w` (maybe a wildcard) takes packets for `ip`. */
export function covers(w: number, v6Only: boolean, ip: number): boolean {
  return (w === 0 && ip < TWO_32) || (w === ANY6 && (ip >= TWO_32 || !v6Only));
}

export interface AddressTableOptions {
  /** IPv6 addresses held at once (default 65536). */
  maxIpv6?: number;
  /**
   * A mirror of another table (a worker NIC's of the host's): its handles are the other table's,
   * given with each address (`internAt`), never chosen here, so a four-tuple, a key or an
   * indication means the same connection on both threads. `intern` is refused.
   */
  mirror?: boolean;
  /**
   * The bytes and the index in shared memory, so other threads can find a handle (`view`,
   * `AddressFinder`) without a message: a team member that receives a segment of a connection
   * another member runs names its addresses by this table's handles (issue 10 item 6).
   */
  shared?: boolean;
}

/** What another thread needs to look addresses up in a shared table (`AddressFinder`). */
export interface AddressView {
  store: SharedArrayBuffer;
  index: SharedArrayBuffer;
  k0: number;
  k1: number;
}

/**
 * Read-only lookups in a table that lives in another thread (`AddressTable.view`). That thread
 * writes while this one reads, with no lock: a lookup may miss an address being added or removed,
 * or, while a slot is reused, name a handle whose bytes just changed. Its callers take the answer
 * as a hint that the table's owner checks again, never as a fact.
 */
export class AddressFinder {
  private readonly store: Uint8Array;
  private readonly index: Uint32Array;
  private readonly mask: number;
  private readonly k0: number;
  private readonly k1: number;

  constructor(v: AddressView) {
    this.store = new Uint8Array(v.store);
    this.index = new Uint32Array(v.index);
    this.mask = this.index.length - 1;
    this.k0 = v.k0;
    this.k1 = v.k1;
  }

  /** The handle the other thread holds for the 16 bytes at buf[off], or -1. Allocation-free. */
  find(buf: Uint8Array, off: number): number {
    const slot = lookupSlot(
      this.store,
      this.index,
      this.mask,
      buf,
      off,
      hashAddr(this.k0, this.k1, buf, off),
    );
    return slot < 0 ? -1 : TWO_32 + 1 + slot;
  }
}

export class AddressTable {
  readonly capacity: number;
  /** Address bytes: slot i at [16 i, 16 i + 16). Read through `bytes`/`offset`. */
  readonly store: Uint8Array;
  private readonly refs: Int32Array;
  /** Unfolded one's-complement sum of each address's eight 16-bit words. */
  private readonly sums: Float64Array;
  /** Open-addressing index (linear probing): slot + 1, 0 when empty. */
  private readonly index: Uint32Array;
  private readonly mask: number;
  private readonly free: Int32Array;
  private freeTop: number;
  private readonly k0: number;
  private readonly k1: number;
  private used = 0;
  /** `intern` calls refused because the table was full. */
  refused = 0;
  /** Called once when `intern` finds the table full, to free what is idle; returns how many went. */
  onFull: (() => number) | null = null;
  readonly mirror: boolean;

  constructor(random: Random, opts: AddressTableOptions = {}) {
    this.mirror = opts.mirror === true;
    const cap = opts.maxIpv6 ?? 65536;
    if (!Number.isInteger(cap) || cap < 1 || cap > 1 << 24) {
      throw new InvalidArgumentError('addresses.maxIpv6 must be an integer 1..16777216');
    }
    this.capacity = cap;
    const shared = opts.shared === true && !this.mirror;
    this.store = new Uint8Array(shared ? new SharedArrayBuffer(cap * 16) : new ArrayBuffer(cap * 16));
    this.refs = new Int32Array(cap);
    this.sums = new Float64Array(cap);
    let size = 8;
    while (size < cap * 2) size *= 2;
    this.index = new Uint32Array(shared ? new SharedArrayBuffer(size * 4) : new ArrayBuffer(size * 4));
    this.mask = size - 1;
    this.free = new Int32Array(cap);
    for (let i = 0; i < cap; i++) this.free[i] = cap - 1 - i;
    this.freeTop = cap;
    // A keyed hash: whoever picks the addresses of arriving packets cannot aim them at one chain.
    this.k0 = random.u32() | 1;
    this.k1 = random.u32();
  }

  /** What another thread needs to find handles here (`AddressFinder`); null unless `shared`. */
  view(): AddressView | null {
    if (!(this.store.buffer instanceof SharedArrayBuffer)) return null;
    return {
      store: this.store.buffer,
      index: this.index.buffer as SharedArrayBuffer,
      k0: this.k0,
      k1: this.k1,
    };
  }

  /** IPv6 addresses held now. */
  get size(): number {
    return this.used;
  }

  /** The handle of the 16 bytes at buf[off], or -1 if not interned. Allocation-free. */
  find(buf: Uint8Array, off: number): number {
    const slot = this.lookup(buf, off, this.hash(buf, off));
    return slot < 0 ? -1 : TWO_32 + 1 + slot;
  }

  /**
   * A reference to the handle of the 16 bytes at buf[off], interning them if new; -1 when the
   * table is full (counted in `refused`). Release it with `release`.
   */
  intern(buf: Uint8Array, off = 0): number {
    const h = this.hash(buf, off);
    let slot = this.lookup(buf, off, h);
    if (slot >= 0) {
      this.refs[slot]!++;
      return TWO_32 + 1 + slot;
    }
    if (
      this.mirror ||
      (this.freeTop === 0 && !(this.onFull !== null && this.onFull() > 0 && this.freeTop > 0))
    ) {
      this.refused++;
      return -1;
    }
    slot = this.free[--this.freeTop]!;
    return this.place(buf, off, h, slot);
  }

  /**
   * Mirror tables only: a reference to `handle` for the 16 bytes at buf[off], as the table it
   * mirrors numbered them. -1 (nothing changed) when the handle is out of this table's range, or
   * held here for other bytes (the other table reused it while this one still holds the old
   * address: the caller refuses what brought it), or the bytes are held under another handle.
   */
  internAt(buf: Uint8Array, off: number, handle: number): number {
    const slot = handle - TWO_32 - 1;
    if (!this.mirror || !Number.isInteger(slot) || slot < 0 || slot >= this.capacity) return -1;
    const h = this.hash(buf, off);
    const found = this.lookup(buf, off, h);
    if (found === slot) {
      this.refs[slot]!++;
      return handle;
    }
    if (found >= 0 || this.refs[slot]! > 0) return -1;
    return this.place(buf, off, h, slot);
  }

  private place(buf: Uint8Array, off: number, h: number, slot: number): number {
    const at = slot * 16;
    const st = this.store;
    let sum = 0;
    for (let i = 0; i < 16; i += 2) {
      st[at + i] = buf[off + i]!;
      st[at + i + 1] = buf[off + i + 1]!;
      sum += (buf[off + i]! << 8) | buf[off + i + 1]!;
    }
    this.sums[slot] = sum;
    this.refs[slot] = 1;
    let i = h & this.mask;
    while (this.index[i] !== 0) i = (i + 1) & this.mask;
    this.index[i] = slot + 1;
    this.used++;
    return TWO_32 + 1 + slot;
  }

  /** One more reference to an IPv6 handle; IPv4 addresses and ANY6 need none (no-op). */
  ref(handle: number): void {
    if (handle <= ANY6) return;
    const slot = this.slotOf(handle);
    this.refs[slot]!++;
  }

  /** Drop a reference; the slot is free again at zero. IPv4 addresses and ANY6: no-op. */
  release(handle: number): void {
    if (handle <= ANY6) return;
    const slot = this.slotOf(handle);
    const n = this.refs[slot]! - 1;
    if (n > 0) {
      this.refs[slot] = n;
      return;
    }
    this.refs[slot] = 0;
    this.unindex(slot);
    if (!this.mirror) this.free[this.freeTop++] = slot;
    this.used--;
  }

  /** References held on an IPv6 handle (0 if free). */
  refCount(handle: number): number {
    return handle <= ANY6 ? 0 : this.refs[this.slotOf(handle)]!;
  }

  /** Offset of an IPv6 handle's 16 bytes in `store`. */
  offset(handle: number): number {
    return this.slotOf(handle) * 16;
  }

  /** A view of an IPv6 handle's 16 bytes (valid while a reference is held). */
  bytes(handle: number): Uint8Array {
    if (handle === ANY6) return UNSPECIFIED;
    const at = this.offset(handle);
    return this.store.subarray(at, at + 16);
  }

  /** Copy an IPv6 handle's bytes to buf[off]. */
  write(handle: number, buf: Uint8Array, off: number): void {
    if (handle === ANY6) {
      buf.fill(0, off, off + 16);
      return;
    }
    // A byte loop: a subarray per call would allocate on every packet sent.
    const at = this.offset(handle);
    const st = this.store;
    for (let i = 0; i < 16; i++) buf[off + i] = st[at + i]!;
  }

  /**
   * The unfolded pseudo-header sum for a TCP/UDP checksum between `src` and `dst` (both IPv4 or
   * both IPv6 handles): RFC 793's for IPv4, RFC 8200 8.1's for IPv6. Both are the address words,
   * the protocol and the length, so one formula serves.
   */
  pseudoSum(src: number, dst: number, protocol: number, length: number): number {
    return (
      this.wordSum(src) + this.wordSum(dst) + protocol + Math.floor(length / 0x10000) + (length & 0xffff)
    );
  }

  private wordSum(ip: number): number {
    if (ip < TWO_32) return (ip >>> 16) + (ip & 0xffff);
    if (ip === ANY6) return 0;
    return this.sums[this.slotOf(ip)]!;
  }

  /** Text form: dotted quad for IPv4, RFC 5952 for IPv6. */
  format(ip: number): string {
    return ip < TWO_32 ? formatIpv4(ip) : ip === ANY6 ? '::' : formatIpv6(this.store, this.offset(ip));
  }

  /**
   * Parse an address literal of either family: IPv4 returns its u32 (no reference), IPv6 an interned
   * handle with one reference the caller owns ('::' gives ANY6), -1 when the table is full.
   * An IPv4-mapped IPv6 literal (::ffff:a.b.c.d) is the IPv4 address, as a dual-stack socket sees it.
   */
  parse(text: string): number {
    if (!text.includes(':')) return parseIpv4(text);
    const b = parseIpv6(text);
    const mapped = mappedIpv4(b);
    if (mapped >= 0) return mapped;
    let zero = true;
    for (let i = 0; i < 16; i++) if (b[i] !== 0) zero = false;
    if (zero) return ANY6;
    return this.intern(b, 0);
  }

  private slotOf(handle: number): number {
    const slot = handle - TWO_32 - 1;
    if (!(slot >= 0 && slot < this.capacity && Number.isInteger(slot)) || handle >= HANDLE_LIMIT) {
      throw new InvalidArgumentError(`not an IPv6 address handle: ${handle}`);
    }
    return slot;
  }

  private hash(buf: Uint8Array, off: number): number {
    return hashAddr(this.k0, this.k1, buf, off);
  }

  private lookup(buf: Uint8Array, off: number, h: number): number {
    return lookupSlot(this.store, this.index, this.mask, buf, off, h);
  }

  /** Remove a slot from the index by backward-shift deletion (no tombstones to pile up). */
  private unindex(slot: number): void {
    const idx = this.index;
    const m = this.mask;
    let i = this.hash(this.store, slot * 16) & m;
    while (idx[i] !== slot + 1) i = (i + 1) & m;
    let j = i;
    for (;;) {
      j = (j + 1) & m;
      const v = idx[j]!;
      if (v === 0) break;
      const home = this.hash(this.store, (v - 1) * 16) & m;
      // Move v back into the hole at i unless its home lies cyclically in (i, j].
      const inRange = i <= j ? home > i && home <= j : home > i || home <= j;
      if (!inRange) {
        idx[i] = v;
        i = j;
      }
    }
    idx[i] = 0;
  }
}

const UNSPECIFIED = new Uint8Array(16);

/** A keyed hash of 16 address bytes: whoever picks the addresses of arriving packets cannot aim them at one chain. */
function hashAddr(k0: number, k1: number, buf: Uint8Array, off: number): number {
  let h = k1;
  for (let i = 0; i < 16; i += 4) {
    const w =
      ((buf[off + i]! << 24) | (buf[off + i + 1]! << 16) | (buf[off + i + 2]! << 8) | buf[off + i + 3]!) >>>
      0;
    h = Math.imul(h ^ w, k0);
    h ^= h >>> 15;
    h = Math.imul(h, 0x2c1b3c6d);
    h ^= h >>> 12;
  }
  h = Math.imul(h ^ (h >>> 16), 0x297a2d39);
  return (h ^ (h >>> 15)) >>> 0;
}

/**
 * The slot holding the 16 bytes at buf[off] (hash `h`), or -1: linear probing over `index` (slot + 1,
 * 0 empty). The index is at least twice the table's capacity, so an empty entry ends every probe,
 * even one that races a writer in another thread.
 */
function lookupSlot(
  store: Uint8Array,
  index: Uint32Array,
  mask: number,
  buf: Uint8Array,
  off: number,
  h: number,
): number {
  let i = h & mask;
  for (;;) {
    const v = index[i]!;
    if (v === 0) return -1;
    const at = (v - 1) * 16;
    let same = true;
    for (let j = 0; j < 16; j++) {
      if (store[at + j] !== buf[off + j]) {
        same = false;
        break;
      }
    }
    if (same) return v - 1;
    i = (i + 1) & mask;
  }
}

/** The IPv4 address inside ::ffff:a.b.c.d, or -1. */
export function mappedIpv4(b: Uint8Array, off = 0): number {
  for (let i = 0; i < 10; i++) if (b[off + i] !== 0) return -1;
  if (b[off + 10] !== 0xff || b[off + 11] !== 0xff) return -1;
  return ((b[off + 12]! << 24) | (b[off + 13]! << 16) | (b[off + 14]! << 8) | b[off + 15]!) >>> 0;
}
