import type { PathState } from '../state/path-state.ts';
import { tcpHeaderLen } from '../wire/fields.ts';
import { createIpv4Header, encodeIpv4, IPV4_HEADER_MIN, IpProto, type Ipv4Header } from '../wire/ipv4.ts';

/**
 * The IPv4 header of every packet a sender builds from a path: addresses from the path, TTL and
 * TOS from its cached state unless the transport overrides them, and the sender's IP id counter.
 * The host stack's path layer and a NIC's sender each own one, so both number and shape their
 * packets the same way, super-segments included.
 */
export class Ipv4Output {
  private readonly hdr: Ipv4Header = createIpv4Header();
  private id: number;

  constructor(firstId: number) {
    this.id = firstId & 0xffff;
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
    h.id = this.id = (this.id + 1) & 0xffff;
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
    if (segmented) this.id = (this.id + Math.ceil((l4Len - tcpHl) / segSize) - 1) & 0xffff;
    gso.gsoSize = segmented ? segSize : 0;
    gso.csumStart = l4;
    gso.csumOffset = 16;
    return true;
  }
}
