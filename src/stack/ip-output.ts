import type { PathState } from '../state/path-state.ts';
import { tcpHeaderLen } from '../wire/fields.ts';
import { createIpv4Header, encodeIpv4, IPV4_HEADER_MIN, IpProto, type Ipv4Header } from '../wire/ipv4.ts';

/** Destinations whose id counters are kept; past this the table starts again (see `switchTo`). */
const MAX_ID_COUNTERS = 4096;

/**
 * The IPv4 header of every packet a sender builds from a path: addresses from the path, TTL and
 * TOS from its cached state unless the transport overrides them, and an IP id from a counter of
 * the destination's own. The host stack's path layer and a NIC's sender each own one, so both
 * number and shape their packets the same way, super-segments included.
 *
 * One counter for all destinations would let anyone who talks to us count the packets we send to
 * everyone else (idle scans, traffic counting: RFC 7739 section 3). Each destination's counter
 * starts at a keyed hash of its address (RFC 7739 5.3), so neither its start nor its progress says
 * anything about another's.
 */
export class Ipv4Output {
  private readonly hdr: Ipv4Header = createIpv4Header();
  /** Destination address → last id sent to it, for every destination but `lastDst`. */
  private readonly ids = new Map<number, number>();
  /**
   * The destination of the last datagram and the last id sent to it, kept out of the map: a burst
   * to one peer (the common case) touches no map at all, and a super-segment skips its ids here.
   */
  private lastDst = -1;
  private lastId = 0;

  /** `secret`: a random 32-bit key of this sender's. */
  constructor(private readonly secret: number) {}

  /** Make `dst` the current destination, `lastId` the last id sent to it. */
  private switchTo(dst: number): void {
    if (this.lastDst >= 0) {
      // Forgetting every counter at once only restarts each from its own keyed start.
      if (this.ids.size >= MAX_ID_COUNTERS) this.ids.clear();
      this.ids.set(this.lastDst, this.lastId);
    }
    this.lastDst = dst;
    this.lastId = this.ids.get(dst) ?? keyedStart(this.secret, dst);
    this.ids.delete(dst);
  }

  /**
   * The header of the next datagram on `path`, with a fresh IP id, for `encodeIpv4`. Callers that
   * fragment change its length and fragment fields between encodes; it is reused by the next call.
   */
  next(
    path: PathState,
    protocol: number,
    total: number,
    df: boolean,
    ttl: number | undefined,
    tos: number | undefined,
  ): Ipv4Header {
    const h = this.hdr;
    h.tos = tos ?? path.cached.tos;
    h.totalLength = total;
    const dst = path.const.remoteIp;
    if (dst !== this.lastDst) this.switchTo(dst);
    h.id = this.lastId = (this.lastId + 1) & 0xffff;
    h.df = df;
    h.mf = false;
    h.fragOffset = 0;
    h.ttl = ttl ?? path.cached.ttl;
    h.protocol = protocol;
    h.src = path.const.localIp;
    h.dst = path.const.remoteIp;
    return h;
  }

  /** Write the next datagram's header at buf[ip]; returns its length. */
  write(
    buf: Uint8Array,
    ip: number,
    path: PathState,
    protocol: number,
    total: number,
    df: boolean,
    ttl?: number,
    tos?: number,
  ): number {
    return encodeIpv4(this.next(path, protocol, total, df, ttl, tos), buf, ip);
  }

  /**
   * Write the header (DF set) of a TCP packet of `l4Len` bytes at buf[ip + 20] whose checksum the
   * link completes and which, above `mtu`, it cuts into segments of `segSize` payload bytes; fill
   * `gso` for the link's `sendGso`. Returns false, writing nothing, if the packet cannot be sent
   * that way: no whole TCP header, beyond `maxPacket` or the buffer, or segments that would not
   * fit the MTU.
   */
  writeOffloaded(
    buf: Uint8Array,
    ip: number,
    path: PathState,
    l4Len: number,
    segSize: number,
    mtu: number,
    maxPacket: number,
    gso: { gsoSize: number; csumStart: number; csumOffset: number },
    ttl?: number,
    tos?: number,
  ): boolean {
    const total = IPV4_HEADER_MIN + l4Len;
    const l4 = ip + IPV4_HEADER_MIN;
    const tcpHl = l4Len >= 20 ? tcpHeaderLen(buf, l4) : 0;
    const segmented = total > mtu;
    if (
      l4Len < 20 ||
      ip + total > buf.length ||
      total > maxPacket ||
      (segmented && (segSize < 1 || IPV4_HEADER_MIN + tcpHl + segSize > mtu))
    ) {
      return false;
    }
    encodeIpv4(this.next(path, IpProto.TCP, total, true, ttl, tos), buf, ip);
    // Linux' TSO gives the segments it cuts consecutive IP ids: skip ours past them.
    if (segmented) this.lastId = (this.lastId + Math.ceil((l4Len - tcpHl) / segSize) - 1) & 0xffff;
    gso.gsoSize = segmented ? segSize : 0;
    gso.csumStart = l4;
    gso.csumOffset = 16;
    return true;
  }
}

/** A 16-bit starting id for `dst` under `secret` (a 32-bit integer mix; the key is what hides it). */
function keyedStart(secret: number, dst: number): number {
  let x = (secret ^ Math.imul(dst | 0, 0x9e3779b1)) | 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  x ^= x >>> 16;
  return x & 0xffff;
}
