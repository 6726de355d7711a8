import type { Clock, Timer } from '../core/clock.ts';
import type { Counters } from '../core/counters.ts';
import { createIpv4Header, encodeIpv4, type Ipv4Header } from '../wire/ipv4.ts';
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
/** The largest payload a reassembled datagram may have behind the 20-byte header we rebuild. */
const MAX_PAYLOAD = 65535 - 20;
/** Header plus the first 8 payload bytes: what an ICMP time-exceeded message must quote. */
const QUOTE_PAYLOAD = 8;

interface Fragment {
  start: number;
  end: number;
  data: Uint8Array;
}

class Datagram {
  frags: Fragment[] = [];
  /** Payload length, known once the fragment without MF arrived; -1 before. */
  total = -1;
  received = 0;
  charged = FRAGMENT_OVERHEAD;
  /** Header and first payload bytes of the offset-0 fragment, for ICMP time exceeded. */
  first: Uint8Array | null = null;
  tos = 0;
  ttl = 0;
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

/**
 * IPv4 fragment reassembly (RFC 791, RFC 815 style hole tracking via sorted fragments).
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
  readonly timeoutMs: number;
  readonly maxBytes: number;

  constructor(
    private readonly clock: Clock,
    private readonly counters: Counters,
    opts: ReassemblyOptions,
    /** Called with the quoted start of a datagram that timed out after its first fragment arrived. */
    private readonly onTimeout: (quote: Uint8Array) => void,
  ) {
    this.timeoutMs = positive(opts.timeoutMs, 30000, 'reassembly.timeoutMs');
    this.maxBytes = positiveInt(opts.maxBytes, 4 * 1024 * 1024, 'reassembly.maxBytes');
    this.timer = clock.createTimer(() => this.expire()).unref();
  }

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
    const c = this.counters;
    const plen = h.totalLength - h.headerLength;
    const start = h.fragOffset;
    const end = start + plen;
    if (plen <= 0) {
      c.inc('drop.ipv4.frag-empty');
      return null;
    }
    if (h.mf && (plen & 7) !== 0) {
      c.inc('drop.ipv4.frag-bad-length');
      return null;
    }
    if (end > MAX_PAYLOAD) {
      c.inc('drop.ipv4.frag-too-big');
      return null;
    }
    const cost = plen + FRAGMENT_OVERHEAD;
    if (cost + FRAGMENT_OVERHEAD > this.maxBytes) {
      c.inc('drop.ipv4.frag-no-memory');
      return null;
    }

    const key = `${h.src}/${h.dst}/${h.protocol}/${h.id}`;
    let d = this.pending.get(key);
    if (d?.poisoned) {
      c.inc('drop.ipv4.frag-poisoned');
      return null;
    }

    // Place the fragment: frags stay sorted by start and never overlap.
    let i = 0;
    if (d) {
      const frags = d.frags;
      while (i < frags.length && frags[i]!.start < start) i++;
      const prev = i > 0 ? frags[i - 1]! : null;
      const next = i < frags.length ? frags[i]! : null;
      const overlapsPrev = prev !== null && prev.end > start;
      const overlapsNext = next !== null && next.start < end;
      if (overlapsPrev || overlapsNext) {
        if (next && !overlapsPrev && next.start === start && next.end === end) {
          if (sameBytes(next.data, buf, ipOff + h.headerLength)) {
            c.inc('drop.ipv4.frag-duplicate');
            return null;
          }
        }
        this.poison(d);
        c.inc('drop.ipv4.frag-overlap');
        return null;
      }
      const lastEnd = frags.length ? frags[frags.length - 1]!.end : 0;
      const conflict = h.mf
        ? d.total >= 0 && end > d.total
        : (d.total >= 0 && d.total !== end) || lastEnd > end;
      if (conflict) {
        this.poison(d);
        c.inc('drop.ipv4.frag-overlap');
        return null;
      }
    }

    if (!this.makeRoom(cost, d)) {
      c.inc('drop.ipv4.frag-no-memory');
      return null;
    }
    if (!d) {
      d = new Datagram(key, h.src, h.dst, h.protocol, h.id, this.clock.now());
      this.pending.set(key, d);
      this.held += d.charged;
      if (!this.timer.armed) this.timer.armAt(d.createdAt + this.timeoutMs);
    }

    const payloadOff = ipOff + h.headerLength;
    d.frags.splice(i, 0, { start, end, data: buf.slice(payloadOff, payloadOff + plen) });
    d.received += plen;
    d.charged += cost;
    this.held += cost;
    if (!h.mf) d.total = end;
    if (start === 0) {
      d.first = buf.slice(ipOff, payloadOff + Math.min(plen, QUOTE_PAYLOAD));
      d.tos = h.tos;
      d.ttl = h.ttl;
    }
    if (d.total < 0 || d.received !== d.total) {
      c.inc('accept.ipv4.frag-queued');
      return null;
    }
    // No overlaps and every byte within [0, total): the received count equal to total means whole.
    return this.assemble(d);
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

  private poison(d: Datagram): void {
    this.held -= d.charged - FRAGMENT_OVERHEAD;
    d.charged = FRAGMENT_OVERHEAD;
    d.frags = [];
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
      if (!d.poisoned) this.counters.inc('drop.ipv4.frag-evicted');
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
      this.counters.inc('drop.ipv4.frag-timeout');
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
