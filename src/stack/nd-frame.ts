/**
 * Whole neighbor discovery frames (Ethernet, optional 802.1Q tag, IPv6 with hop limit 255,
 * ICMPv6 ND message) for senders outside an interface's IPv6 layer: a team port probing a
 * neighbor with solicitations from a MAC of its own, or announcing the team's addresses with
 * unsolicited advertisements after traffic moved to it. The IPv6 layer builds its own (it picks
 * sources and resolves next hops); these write into a caller's buffer and allocate nothing.
 */
import { isIpv6Multicast, isIpv6Unspecified, parseIpv6 } from '../wire/addr.ts';
import { l4Checksum6Ok } from '../wire/checksum.ts';
import { EtherType, writeEthernetHeader } from '../wire/ethernet.ts';
import { ethL3Offset, ethType } from '../wire/fields.ts';
import { Icmpv6Type } from '../wire/icmpv6.ts';
import {
  createIpv6Header,
  decodeIpv6,
  encodeIpv6,
  IPV6_HEADER_LENGTH,
  type Ipv6Header,
  Ipv6Next,
} from '../wire/ipv6.ts';
import { decodeNd, encodeNd, type NdEncode, type NdMessage } from '../wire/ndp.ts';

/** ff02::1, where unsolicited advertisements go (RFC 4861 7.2.6). */
export const ALL_NODES_ADDRESS: Uint8Array = parseIpv6('ff02::1');

/**
 * Room for one NS or NA with one link-layer option behind a VLAN tag: 18 + 40 + 24 + 8, with
 * a nonce option to spare.
 */
export const ND_FRAME_MAX = 18 + IPV6_HEADER_LENGTH + 24 + 16;

export interface NdFrame {
  dstMac: number;
  srcMac: number;
  /** 802.1Q VLAN id, -1 untagged. */
  vlanId: number;
  src: Uint8Array;
  dst: Uint8Array;
  msg: NdEncode;
}

const txIp: Ipv6Header = createIpv6Header();
txIp.nextHeader = Ipv6Next.ICMPV6;
txIp.hopLimit = 255;

/**
 * Write the frame at buf[0]; returns its length (0 when `buf` is too small or the message type
 * is not an ND type). Hop limit 255, as every ND message must carry (RFC 4861 6.1, 7.1).
 */
export function encodeNdFrame(f: NdFrame, buf: Uint8Array): number {
  if (buf.length < ND_FRAME_MAX) return 0;
  const eth = writeEthernetHeader(buf, 0, f.dstMac, f.srcMac, f.vlanId, EtherType.IPV6, 0, false);
  const at = eth + IPV6_HEADER_LENGTH;
  const n = encodeNd(f.msg, buf, at, f.src, f.dst);
  if (n === 0) return 0;
  const h = txIp;
  h.payloadLength = n;
  h.src.set(f.src.subarray(0, 16));
  h.dst.set(f.dst.subarray(0, 16));
  encodeIpv6(h, buf, eth);
  return at + n;
}

/**
 * Decode `frame` as a neighbor solicitation or advertisement that passes RFC 4861 7.1's checks
 * (IPv6 without extension headers, ICMPv6 checksum, hop limit 255, code 0, a unicast target;
 * an advertisement to multicast is unsolicited). Fills `ip` and `nd`; false for anything else.
 */
export function decodeNdFrame(frame: Uint8Array, ip: Ipv6Header, nd: NdMessage): boolean {
  if (frame.length < 14 + IPV6_HEADER_LENGTH + 24 || ethType(frame) !== EtherType.IPV6) return false;
  const off = ethL3Offset(frame);
  // The next header must be ICMPv6 at once: ND from a host carries no extension headers, and the
  // ones that would arrive fragmented are to be ignored anyway (RFC 6980).
  if (frame[off + 6] !== Ipv6Next.ICMPV6) return false;
  if (decodeIpv6(frame, off, frame.length - off, ip) !== null || ip.protocol !== Ipv6Next.ICMPV6)
    return false;
  const type = frame[ip.payloadOffset];
  if (type !== Icmpv6Type.NEIGHBOR_SOLICITATION && type !== Icmpv6Type.NEIGHBOR_ADVERTISEMENT) return false;
  if (ip.hopLimit !== 255 || ip.fragment) return false;
  if (!l4Checksum6Ok(frame, ip.payloadOffset, ip.payloadLen, ip.src, ip.dst, Ipv6Next.ICMPV6)) return false;
  if (decodeNd(frame, ip.payloadOffset, ip.payloadLen, nd) !== null) return false;
  if (isIpv6Multicast(nd.target)) return false;
  if (type === Icmpv6Type.NEIGHBOR_ADVERTISEMENT && nd.solicited && isIpv6Multicast(ip.dst)) return false;
  if (type === Icmpv6Type.NEIGHBOR_SOLICITATION && isIpv6Unspecified(ip.src) && nd.sourceLla >= 0)
    return false;
  return true;
}
