import type { Clock, Timer } from '../core/clock.ts';
import type { Counters } from '../core/counters.ts';
import { createIpv4Header, encodeIpv4, type Ipv4Header } from '../wire/ipv4.ts';
import { IPV6_HEADER_LENGTH, type Ipv6Header } from '../wire/ipv6.ts';
import { positive, positiveInt } from './neighbor.ts';

export interface ReassemblyOptions {
  /** A datagram not complete this long after its first fragment arrived is dropped (default 30000). */
  timeoutMs?: number;
  /** Bytes held over all incomplete datagrams; the oldest are evicted beyond it (default 4 MiB). */
  maxBytes?: number;
}

/**
 * Accounting charge per held fragment on top of its payload, so that a flood of tiny fragments is
 * bounded by `maxBytes` just as large ones are.
 */
const FRAGMENT_OVERHEAD = 64;
/**
 * The largest payload a reassembled datagram may have behind the header we rebuild: 20 bytes for
 * IPv4 (the total length field counts it), none for IPv6 (the payload length field does not).
 */
const MAX_PAYLOAD = { ipv4: 65535 - 20, ipv6: 65535 } as const;
/**
 * What an ICMP time-exceeded message quotes of the first fragment after its header: the first 8
 * payload bytes for IPv4 (RFC 792); as much as fits the minimum MTU for IPv6 (RFC 4443).
 */
const QUOTE_PAYLOAD = { ipv4: 8, ipv6: 1280 - 48 - IPV6_HEADER_LENGTH } as const;

export type ReassemblyFamily = 'ipv4' | 'ipv6';

/** Counter names, built once per family so that counting a fragment builds no string. */
function dropNames(f: ReassemblyFamily) {
  const n = (r: string) => `drop.${f}.frag-${r}`;
  return {
    empty: n('empty'),
    badLength: n('bad-length'),
    tooBig: n('too-big'),
    noMemory: n('no-memory'),
    poisoned: n('poisoned'),
    duplicate: n('duplicate'),
    overlap: n('overlap'),
    evicted: n('evicted'),
    timeout: n('timeout'),
    queued: `accept.${f}.frag-queued`,
  };
}

interface Fragment {
  start: number;
  end: number;
  data: Uint8Array;
}

const NO_COVER = new Uint8Array(0);
/** Coverage map bytes for a payload of `end` bytes: a power of two, 16 at least, 1 KiB at most. */
function coverSize(end: number): number {
  const need = (end + 63) >>> 6;
  let n = 16;
  while (n < need) n <<= 1;
  return n;
}

class Datagram {
  /** In arrival order; disjoint (the coverage map refuses overlaps), so assembly needs no sort. */
  frags: Fragment[] = [];
  /** The fragment starting at each offset: an exact duplicate is the one at its own start. */
  byStart = new Map<number, Fragment>();
  /**
   * One bit per 8-byte block of the payload that a held fragment covers. Fragments start on
   * 8-byte boundaries and only the last may end inside a block, so two fragments share a block
   * exactly when they share a byte: the overlap test costs the new fragment's own length, never
   * a walk over the fragments already held (a sorted list would, quadratically in a flood).
   */
  cover: Uint8Array = NO_COVER;
  /** Highest end of a held fragment. */
  maxEnd = 0;
  /** Payload length, known once the fragment without MF arrived; -1 before. */
  total = -1;
  received = 0;
  charged = FRAGMENT_OVERHEAD;
  /** Header and first payload bytes of the offset-0 fragment, for ICMP time exceeded. */
  first: Uint8Array | null = null;
  tos = 0;
  ttl = 0;
  /** IPv6: the fixed header of the offset-0 fragment, and the next header its fragment header names. */
  header6: Uint8Array | null = null;
  next6 = 0;
  /**
   * An overlapping fragment arrived: the datagram is discarded, and later fragments of it are too,
   * until the timeout, so a forged fragment can never splice into a fresh attempt.
   */
  poisoned = false;
  constructor(
    readonly key: string,
    readonly src: number,
    readonly dst: number,
    readonly protocol: number,
    readonly id: number,
    readonly createdAt: number,
  ) {}
}

/** One fragment as the family-neutral core sees it. */
interface FragmentIn {
  key: string;
  /** Offset and length of its payload in the datagram being rebuilt. */
  start: number;
  plen: number;
  mf: boolean;
  buf: Uint8Array;
  ipOff: number;
  payloadOff: number;
}

/**
 * Fragment reassembly for IPv4 (RFC 791; a bit per 8-byte block for what has arrived) or,
 * with `family` 'ipv6', for IPv6 (RFC 8200 4.5; one instance per family, each with its own
 * memory bound and timeout). The reassembled IPv6 packet is its first fragment's fixed header
 * followed by the data: extension headers before the fragment header were processed on each
 * fragment already and are not kept.
 *
 * Overlap policy: IPv4 has no RFC 5722, but overlapping fragments have no legitimate use and have
 * been used to slip data past filters, so any overlap that is not an exact duplicate discards the
 * whole datagram, as RFC 5722 requires for IPv6. Exact duplicates (same range, same bytes: a
 * retransmitted or duplicated fragment) are ignored.
 */
export class Reassembler {
  private readonly pending = new Map<string, Datagram>();
  private held = 0;
  private readonly timer: Timer;
  private readonly hdr: Ipv4Header = createIpv4Header();
  private readonly names: ReturnType<typeof dropNames>;
  readonly timeoutMs: number;
  readonly maxBytes: number;

  constructor(
    private readonly clock: Clock,
    private readonly counters: Counters,
    opts: ReassemblyOptions,
    /** Called with the quoted start of a datagram that timed out after its first fragment arrived. */
    private readonly onTimeout: (quote: Uint8Array) => void,
    readonly family: ReassemblyFamily = 'ipv4',
  ) {
    this.names = dropNames(family);
    // RFC 8200 4.5: IPv6 gives a datagram 60 seconds, IPv4 (as Linux) 30.
    this.timeoutMs = positive(opts.timeoutMs, family === 'ipv6' ? 60000 : 30000, 'reassembly.timeoutMs');
    this.maxBytes = positiveInt(opts.maxBytes, 4 * 1024 * 1024, 'reassembly.maxBytes');
    this.timer = clock.createTimer(() => this.expire()).unref();
  }

  /**
   * Steps taken placing fragments (one per fragment, plus each block of the coverage map read or
   * written): what a test bounds to show a hostile order of tiny fragments costs linear work.
   */
  work = 0;

  /** Bytes charged to incomplete datagrams now. */
  get heldBytes(): number {
    return this.held;
  }

  /** Incomplete datagrams now. */
  get size(): number {
    return this.pending.size;
  }

  /**
   * Take the fragment whose IPv4 header `h` was decoded from buf[ipOff]. Returns the whole datagram
   * (a fresh buffer with a 20-byte header at 0) when this fragment completes it, else null. Counts
   * `accept.ipv4.frag-queued` or a `drop.ipv4.frag-*` reason for every fragment it holds or
   * refuses, and nothing for the completing one (the caller accounts for the datagram).
   */
  add(h: Ipv4Header, buf: Uint8Array, ipOff: number): Uint8Array | null {
    const f = this.frag;
    f.key = `${h.src}/${h.dst}/${h.protocol}/${h.id}`;
    f.start = h.fragOffset;
    f.plen = h.totalLength - h.headerLength;
    f.mf = h.mf;
    f.buf = buf;
    f.ipOff = ipOff;
    f.payloadOff = ipOff + h.headerLength;
    const d = this.place(f, () => new Datagram(f.key, h.src, h.dst, h.protocol, h.id, this.clock.now()));
    if (d && f.start === 0) {
      d.tos = h.tos;
      d.ttl = h.ttl;
    }
    return d && this.complete(d);
  }

  /**
   * Take the IPv6 fragment whose header `h` (with `h.fragment` set) was decoded from buf[ipOff].
   * Returns the whole packet (a fresh buffer: a 40-byte header at 0 whose next header is the
   * upper layer, then the data) when this fragment completes it, else null. Counts as `add` does.
   */
  add6(h: Ipv6Header, buf: Uint8Array, ipOff: number): Uint8Array | null {
    const f = this.frag;
    // RFC 8200 4.5: source, destination and identification name a datagram.
    let key = '';
    for (let i = 0; i < 16; i++) key += String.fromCharCode(h.src[i]!, h.dst[i]!);
    f.key = `${key}/${h.fragId}`;
    f.start = h.fragOffset;
    f.plen = h.payloadLen;
    f.mf = h.mf;
    f.buf = buf;
    f.ipOff = ipOff;
    f.payloadOff = h.payloadOffset;
    const d = this.place(f, () => new Datagram(f.key, 0, 0, 0, h.fragId, this.clock.now()));
    if (d && f.start === 0) {
      d.header6 = buf.slice(ipOff, ipOff + IPV6_HEADER_LENGTH);
      d.next6 = h.protocol;
    }
    return d && this.complete(d);
  }

  private readonly frag: FragmentIn = {
    key: '',
    start: 0,
    plen: 0,
    mf: false,
    buf: new Uint8Array(0),
    ipOff: 0,
    payloadOff: 0,
  };

  private complete(d: Datagram): Uint8Array | null {
    if (d.total < 0 || d.received !== d.total) {
      this.counters.inc(this.names.queued);
      return null;
    }
    // No overlaps and every byte within [0, total): the received count equal to total means whole.
    return this.family === 'ipv6' ? this.assemble6(d) : this.assemble(d);
  }

  /** Place a fragment in its datagram; the datagram, or null when the fragment was refused. */
  private place(f: FragmentIn, make: () => Datagram): Datagram | null {
    const c = this.counters;
    const n = this.names;
    const { key, start, plen, buf } = f;
    const end = start + plen;
    if (plen <= 0) {
      c.inc(n.empty);
      return null;
    }
    if (f.mf && (plen & 7) !== 0) {
      c.inc(n.badLength);
      return null;
    }
    if (end > MAX_PAYLOAD[this.family]) {
      c.inc(n.tooBig);
      return null;
    }
    const cost = plen + FRAGMENT_OVERHEAD;
    if (cost + FRAGMENT_OVERHEAD > this.maxBytes) {
      c.inc(n.noMemory);
      return null;
    }

    this.work++;
    let d = this.pending.get(key);
    if (d?.poisoned) {
      c.inc(n.poisoned);
      return null;
    }

    const b0 = start >>> 3;
    const b1 = (end + 7) >>> 3;
    if (d) {
      if (this.covered(d.cover, b0, b1)) {
        const same = d.byStart.get(start);
        if (same && same.end === end) {
          this.work += b1 - b0;
          if (sameBytes(same.data, buf, f.payloadOff)) {
            c.inc(n.duplicate);
            return null;
          }
        }
        this.poison(d);
        c.inc(n.overlap);
        return null;
      }
      const conflict = f.mf
        ? d.total >= 0 && end > d.total
        : (d.total >= 0 && d.total !== end) || d.maxEnd > end;
      if (conflict) {
        this.poison(d);
        c.inc(n.overlap);
        return null;
      }
    }

    // The coverage map grows by doubling with the highest offset seen, charged like the data.
    const have = d ? d.cover.length : 0;
    const want = coverSize(end);
    const grow = want > have ? want - have : 0;
    if (!this.makeRoom(cost + grow, d)) {
      c.inc(n.noMemory);
      return null;
    }
    if (!d) {
      d = make();
      this.pending.set(key, d);
      this.held += d.charged;
      if (!this.timer.armed) this.timer.armAt(d.createdAt + this.timeoutMs);
    }

    if (grow > 0) {
      const cover = new Uint8Array(want);
      cover.set(d.cover);
      d.cover = cover;
    }
    const cover = d.cover;
    for (let b = b0; b < b1; b++) {
      cover[b >>> 3]! |= 1 << (b & 7);
      this.work++;
    }
    const payloadOff = f.payloadOff;
    const frag = { start, end, data: buf.slice(payloadOff, payloadOff + plen) };
    d.frags.push(frag);
    d.byStart.set(start, frag);
    if (end > d.maxEnd) d.maxEnd = end;
    d.received += plen;
    d.charged += cost + grow;
    this.held += cost + grow;
    if (!f.mf) d.total = end;
    if (start === 0) d.first = buf.slice(f.ipOff, payloadOff + Math.min(plen, QUOTE_PAYLOAD[this.family]));
    return d;
  }

  close(): void {
    this.timer.disarm();
    this.pending.clear();
    this.held = 0;
  }

  private assemble(d: Datagram): Uint8Array {
    this.remove(d);
    const out = new Uint8Array(20 + d.total);
    const h = this.hdr;
    h.tos = d.tos;
    h.totalLength = 20 + d.total;
    h.id = d.id;
    h.df = false;
    h.mf = false;
    h.fragOffset = 0;
    h.ttl = d.ttl;
    h.protocol = d.protocol;
    h.src = d.src;
    h.dst = d.dst;
    encodeIpv4(h, out, 0);
    for (const f of d.frags) out.set(f.data, 20 + f.start);
    return out;
  }

  private assemble6(d: Datagram): Uint8Array {
    this.remove(d);
    const out = new Uint8Array(IPV6_HEADER_LENGTH + d.total);
    out.set(d.header6!, 0);
    out[4] = d.total >>> 8;
    out[5] = d.total & 0xff;
    out[6] = d.next6;
    for (const f of d.frags) out.set(f.data, IPV6_HEADER_LENGTH + f.start);
    return out;
  }

  /** True if any block in [b0, b1) is covered; bits past the map's end are not. */
  private covered(cover: Uint8Array, b0: number, b1: number): boolean {
    const last = Math.min(b1, cover.length << 3);
    for (let b = b0; b < last; b++) {
      this.work++;
      if ((cover[b >>> 3]! & (1 << (b & 7))) !== 0) return true;
    }
    this.work++;
    return false;
  }

  private poison(d: Datagram): void {
    this.held -= d.charged - FRAGMENT_OVERHEAD;
    d.charged = FRAGMENT_OVERHEAD;
    d.frags = [];
    d.byStart.clear();
    d.cover = NO_COVER;
    d.first = null;
    d.poisoned = true;
  }

  private remove(d: Datagram): void {
    this.pending.delete(d.key);
    this.held -= d.charged;
  }

  /** Evict the oldest datagrams (other than `keep`) until `cost` more bytes fit. */
  private makeRoom(cost: number, keep: Datagram | undefined): boolean {
    const extra = keep ? 0 : FRAGMENT_OVERHEAD;
    if (this.held + cost + extra <= this.maxBytes) return true;
    for (const d of this.pending.values()) {
      if (d === keep) continue;
      this.remove(d);
      if (!d.poisoned) this.counters.inc(this.names.evicted);
      if (this.held + cost + extra <= this.maxBytes) break;
    }
    this.rearm();
    return this.held + cost + extra <= this.maxBytes;
  }

  private expire(): void {
    const now = this.clock.now();
    for (const d of this.pending.values()) {
      if (d.createdAt + this.timeoutMs > now) break;
      this.remove(d);
      if (d.poisoned) continue;
      this.counters.inc(this.names.timeout);
      // RFC 792/1122: time exceeded (reassembly) only if fragment zero arrived, since only it
      // carries the transport header the sender needs to match the error.
      if (d.first) this.onTimeout(d.first);
    }
    this.rearm();
  }

  private rearm(): void {
    const oldest = this.pending.values().next();
    if (oldest.done) this.timer.disarm();
    else this.timer.armAt(oldest.value.createdAt + this.timeoutMs);
  }
}

function sameBytes(a: Uint8Array, buf: Uint8Array, off: number): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== buf[off + i]) return false;
  return true;
}
