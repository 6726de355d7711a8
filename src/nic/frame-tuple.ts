import { seqAdd } from '../stack/tcp/seq.ts';
import type { AddressBook } from '../state/path-state.ts';
import { EtherType } from '../wire/ethernet.ts';
import {
  ethIpv4Offset,
  ethL3Offset,
  ethType,
  ipv4Dst,
  ipv4FragOffset,
  ipv4HeaderLen,
  ipv4IsFragment,
  ipv4Proto,
  ipv4Src,
  ipv4TotalLen,
  l4DstPort,
  l4SrcPort,
  tcpSeq,
  tcpSeqLen,
} from '../wire/fields.ts';
import { IpProto } from '../wire/ipv4.ts';

/** What the tuple readers need of an address table: a handle for 16 bytes (`AddressFinder` will do). */
export type AddressLookup = Pick<AddressBook, 'find'>;

/** The four-tuple of the last frame `tcpTuple` read (as the receiver names it: local is the destination). */
export const tuple = { localIp: 0, localPort: 0, remoteIp: 0, remotePort: 0 };

/** What `tcpTuple` and `packetTuple` found. */
export const TUPLE_READ = 1;
export const TUPLE_NONE = 0;
/** A TCP segment over IPv6 with an address the table holds no handle for: no connection's here. */
export const TUPLE_UNKNOWN = -1;
/**
 * `packetTuple` only: the ports are not where it reads, an IPv4 fragment past the first or IPv6
 * with a header other than TCP behind the fixed one (an extension header, or another protocol):
 * the packet may be any connection's.
 */
export const TUPLE_HIDDEN = -2;
/** `packetTuple` only: the first fragment of an IPv4 TCP segment, its tuple read; not a whole segment. */
export const TUPLE_FIRST_FRAGMENT = 2;

/**
 * Read a frame's four-tuple into `tuple`: an unfragmented IPv4 TCP segment, or an IPv6 one with
 * TCP right behind the fixed header (extension headers go up, and our TCP segments never carry
 * them), its addresses as the handles `addrs` holds for them: a worker's table mirrors the
 * host's, so a handle names the same address on every thread of the team.
 */
export function tcpTuple(frame: Uint8Array, addrs: AddressLookup | null): number {
  const ip4 = ethIpv4Offset(frame);
  let read: number;
  if (ip4 >= 0) read = packetTuple(frame, ip4, false, addrs);
  else if (frame.length < 14 || ethType(frame) !== EtherType.IPV6) return TUPLE_NONE;
  else read = packetTuple(frame, ethL3Offset(frame), true, addrs);
  return read === TUPLE_READ || read === TUPLE_UNKNOWN ? read : TUPLE_NONE;
}

/**
 * Read the four-tuple of the TCP segment in the IP packet at buf[ip] (IPv6 if `v6`, its header
 * whole in `buf` for IPv4) into `tuple`, as `tcpTuple` does, and say what it found: the one
 * reader of a segment's tuple for a frame, a packet the host injects, and the packet an ICMP error
 * quotes. TUPLE_HIDDEN and TUPLE_FIRST_FRAGMENT tell apart what `tcpTuple` reports as none.
 */
export function packetTuple(buf: Uint8Array, ip: number, v6: boolean, addrs: AddressLookup | null): number {
  if (v6) {
    if (buf.length < ip + 40) return TUPLE_NONE;
    if (buf[ip + 6] !== IpProto.TCP) return TUPLE_HIDDEN;
    if (buf.length < ip + 44) return TUPLE_NONE;
    const src = addrs === null ? -1 : addrs.find(buf, ip + 8);
    const dst = src < 0 ? -1 : addrs!.find(buf, ip + 24);
    if (dst < 0) return TUPLE_UNKNOWN;
    tuple.localIp = dst;
    tuple.localPort = l4DstPort(buf, ip + 40);
    tuple.remoteIp = src;
    tuple.remotePort = l4SrcPort(buf, ip + 40);
    return TUPLE_READ;
  }
  if (ipv4Proto(buf, ip) !== IpProto.TCP) return TUPLE_NONE;
  if (ipv4FragOffset(buf, ip) !== 0) return TUPLE_HIDDEN;
  const t = ip + ipv4HeaderLen(buf, ip);
  const first = ipv4IsFragment(buf, ip);
  if (buf.length < t + 4) return first ? TUPLE_HIDDEN : TUPLE_NONE;
  tuple.localIp = ipv4Dst(buf, ip);
  tuple.localPort = l4DstPort(buf, t);
  tuple.remoteIp = ipv4Src(buf, ip);
  tuple.remotePort = l4SrcPort(buf, t);
  return first ? TUPLE_FIRST_FRAGMENT : TUPLE_READ;
}

/**
 * The sequence number just past what a TCP segment we send occupies (its payload, SYN and FIN),
 * in a frame `tcpTuple` reads as a segment: IPv4, or IPv6 with TCP right behind the fixed header
 * (we send no extension headers).
 */
export function tcpSegmentEnd(frame: Uint8Array): number {
  const ip = ethL3Offset(frame);
  const v6 = ethType(frame) === EtherType.IPV6;
  const t = v6 ? ip + 40 : ip + ipv4HeaderLen(frame, ip);
  const l4Len = v6 ? (frame[ip + 4]! << 8) | frame[ip + 5]! : ipv4TotalLen(frame, ip) - (t - ip);
  return seqAdd(tcpSeq(frame, t), tcpSeqLen(frame, t, l4Len));
}
