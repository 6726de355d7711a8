/*
 * Single fields of a frame, read in place: for hot paths that must look at one or two fields of
 * every frame (demultiplexing, checksum completion, hard-state bookkeeping) before, or instead
 * of, decoding whole headers. Every other module asks these functions rather than counting byte
 * offsets itself, so the layout of each header is written down only in `src/wire/`.
 *
 * They are small, allocation-free and do no checks beyond what their comment says: the caller
 * has made sure the bytes exist (the decoders are for untrusted input). Offsets name where the
 * header starts: `ip` the IPv4 header, `t` the TCP (or UDP) header.
 */
import { readMac, readU16, readU32 } from './addr.ts';
import { ETHERNET_HEADER_LENGTH, ETHERNET_VLAN_HEADER_LENGTH, EtherType } from './ethernet.ts';
import { IPV4_HEADER_MIN } from './ipv4.ts';

// ---- Ethernet (untagged, or one 802.1Q tag) ----------------------------------------------------

/** Destination MAC of the frame at f[0]. */
export function ethDst(f: Uint8Array): number {
  return readMac(f, 0);
}

/** Source MAC of the frame at f[0]. */
export function ethSrc(f: Uint8Array): number {
  return readMac(f, 6);
}

/** True when the destination is a group address (multicast or broadcast): the I/G bit. */
export function ethDstIsGroup(f: Uint8Array): boolean {
  return (f[0]! & 1) !== 0;
}

/** True when the frame at f[0] carries an 802.1Q tag. Needs 14 bytes. */
export function ethTagged(f: Uint8Array): boolean {
  return readU16(f, 12) === EtherType.VLAN;
}

/** Where the L3 header starts: 18 behind an 802.1Q tag, else 14. Needs 14 bytes. */
export function ethL3Offset(f: Uint8Array): number {
  return ethTagged(f) ? ETHERNET_VLAN_HEADER_LENGTH : ETHERNET_HEADER_LENGTH;
}

/** The EtherType of the payload, behind the tag if there is one. Needs 18 bytes when tagged. */
export function ethType(f: Uint8Array): number {
  return readU16(f, ethL3Offset(f) - 2);
}

/**
 * Offset of the IPv4 header in an Ethernet frame, or -1 if the frame does not carry IPv4 or is
 * too short to hold the Ethernet header and a minimal IPv4 header.
 */
export function ethIpv4Offset(f: Uint8Array): number {
  if (f.length < ETHERNET_HEADER_LENGTH + IPV4_HEADER_MIN) return -1;
  const ip = ethL3Offset(f);
  if (f.length < ip + IPV4_HEADER_MIN) return -1;
  return readU16(f, ip - 2) === EtherType.IPV4 ? ip : -1;
}

// ---- IPv4 at f[ip] -----------------------------------------------------------------------------

/** The version field: 4 for IPv4. */
export function ipVersion(f: Uint8Array, ip: number): number {
  return f[ip]! >>> 4;
}

/** Header length in bytes, options included (IHL * 4). */
export function ipv4HeaderLen(f: Uint8Array, ip: number): number {
  return (f[ip]! & 0x0f) << 2;
}

/** Total length of the datagram in bytes. */
export function ipv4TotalLen(f: Uint8Array, ip: number): number {
  return readU16(f, ip + 2);
}

/** True for any fragment: more-fragments set or a non-zero offset (the whole datagram is not here). */
export function ipv4IsFragment(f: Uint8Array, ip: number): boolean {
  return (readU16(f, ip + 6) & 0x3fff) !== 0;
}

/** Fragment offset in bytes (the wire carries 8-byte units). */
export function ipv4FragOffset(f: Uint8Array, ip: number): number {
  return (readU16(f, ip + 6) & 0x1fff) << 3;
}

/** The protocol number of the payload (6 TCP, 17 UDP, 1 ICMP). */
export function ipv4Proto(f: Uint8Array, ip: number): number {
  return f[ip + 9]!;
}

/** Source address as a u32. */
export function ipv4Src(f: Uint8Array, ip: number): number {
  return readU32(f, ip + 12);
}

/** Destination address as a u32. */
export function ipv4Dst(f: Uint8Array, ip: number): number {
  return readU32(f, ip + 16);
}

// ---- ICMP at f[t] -----------------------------------------------------------------------------

/** The ICMP message type (8 echo request, 0 echo reply, 3 unreachable, ...). */
export function icmpType(f: Uint8Array, t: number): number {
  return f[t]!;
}

// ---- TCP (and UDP, for the ports) at f[t] ------------------------------------------------------

/** Source port of a TCP or UDP header. */
export function l4SrcPort(f: Uint8Array, t: number): number {
  return readU16(f, t);
}

/** Destination port of a TCP or UDP header. */
export function l4DstPort(f: Uint8Array, t: number): number {
  return readU16(f, t + 2);
}

/** Sequence number as a u32. */
export function tcpSeq(f: Uint8Array, t: number): number {
  return readU32(f, t + 4);
}

/** Acknowledgment number as a u32. */
export function tcpAck(f: Uint8Array, t: number): number {
  return readU32(f, t + 8);
}

/** Header length in bytes, options included (data offset * 4). */
export function tcpHeaderLen(f: Uint8Array, t: number): number {
  return (f[t + 12]! >>> 4) << 2;
}

/** The flag bits (TcpFlag: FIN 1, SYN 2, RST 4, PSH 8, ACK 16, ...). */
export function tcpFlags(f: Uint8Array, t: number): number {
  return f[t + 13]!;
}

/**
 * Sequence space a TCP segment of `l4Len` bytes (header included) occupies: its payload, plus one
 * each for SYN and FIN.
 */
export function tcpSeqLen(f: Uint8Array, t: number, l4Len: number): number {
  const flags = tcpFlags(f, t);
  return l4Len - tcpHeaderLen(f, t) + (flags & 0x02 ? 1 : 0) + (flags & 0x01 ? 1 : 0);
}
