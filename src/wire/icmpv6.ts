import { readU16, readU32, writeU16, writeU32 } from './addr.ts';
import { foldChecksum, onesSum, pseudoHeaderSum6 } from './checksum.ts';
import type { DecodeError } from './decode-error.ts';
import { IPV6_HEADER_LENGTH, IPV6_MIN_MTU, Ipv6Next } from './ipv6.ts';

export const Icmpv6Type = {
  DEST_UNREACHABLE: 1,
  PACKET_TOO_BIG: 2,
  TIME_EXCEEDED: 3,
  PARAMETER_PROBLEM: 4,
  ECHO_REQUEST: 128,
  ECHO_REPLY: 129,
  ROUTER_SOLICITATION: 133,
  ROUTER_ADVERTISEMENT: 134,
  NEIGHBOR_SOLICITATION: 135,
  NEIGHBOR_ADVERTISEMENT: 136,
  REDIRECT: 137,
} as const;

/** Destination-unreachable codes (RFC 4443 3.1). */
export const Icmpv6UnreachCode = {
  NO_ROUTE: 0,
  ADMIN_PROHIBITED: 1,
  BEYOND_SCOPE: 2,
  ADDRESS: 3,
  PORT: 4,
  SOURCE_POLICY: 5,
  REJECT_ROUTE: 6,
} as const;

export const ICMPV6_HEADER_LENGTH = 8;
/** An error message must fit the minimum MTU: 1280 - 40 - 8 bytes of the offending packet at most. */
export const ICMPV6_ERROR_QUOTE_MAX = IPV6_MIN_MTU - IPV6_HEADER_LENGTH - ICMPV6_HEADER_LENGTH;

export interface Icmpv6Header {
  type: number;
  code: number;
  checksum: number;
  /** Echo identifier and sequence number (bytes 4-7), else 0. */
  id: number;
  seq: number;
  /** Packet too big: the MTU (bytes 4-7), else 0. */
  mtu: number;
  /** Parameter problem: the pointer (bytes 4-7), else 0. */
  pointer: number;
  /** Offset of the data after the 8-byte header, relative to buf. */
  bodyOffset: number;
}

/** A zeroed Icmpv6Header for decodeIcmpv6 to fill (one per caller, reused per packet). */
export function createIcmpv6Header(): Icmpv6Header {
  return { type: 0, code: 0, checksum: 0, id: 0, seq: 0, mtu: 0, pointer: 0, bodyOffset: 0 };
}

/** Error messages have types 0..127 (RFC 4443 2.1); a host never answers one with another. */
export function isIcmpv6Error(type: number): boolean {
  return type < 128;
}

/**
 * Decode the ICMPv6 message buf[off, off+len). Unlike ICMPv4 the checksum covers the IPv6
 * pseudo-header (RFC 4443 2.3), so the addresses (16 bytes each) are needed.
 */
export function decodeIcmpv6(
  buf: Uint8Array,
  off: number,
  len: number,
  src: Uint8Array,
  dst: Uint8Array,
  out: Icmpv6Header,
  verifyChecksum = true,
): DecodeError | null {
  if (off < 0 || len < ICMPV6_HEADER_LENGTH || off + len > buf.length) return 'truncated';
  if (verifyChecksum) {
    const sum = onesSum(buf, off, len, pseudoHeaderSum6(src, 0, dst, 0, Ipv6Next.ICMPV6, len));
    if (foldChecksum(sum) !== 0) return 'bad-checksum';
  }
  const type = buf[off]!;
  out.type = type;
  out.code = buf[off + 1]!;
  out.checksum = readU16(buf, off + 2);
  const echo = type === Icmpv6Type.ECHO_REQUEST || type === Icmpv6Type.ECHO_REPLY;
  out.id = echo ? readU16(buf, off + 4) : 0;
  out.seq = echo ? readU16(buf, off + 6) : 0;
  out.mtu = type === Icmpv6Type.PACKET_TOO_BIG ? readU32(buf, off + 4) : 0;
  out.pointer = type === Icmpv6Type.PARAMETER_PROBLEM ? readU32(buf, off + 4) : 0;
  out.bodyOffset = off + ICMPV6_HEADER_LENGTH;
  return null;
}

/**
 * Write the 8-byte header at buf[off] for a body already at buf[off+8, off+8+bodyLen), and the
 * checksum over the pseudo-header of src and dst. Bytes 4-7 carry id and seq for echo, the MTU
 * for packet too big, the pointer for parameter problem, zero for the other errors, and are left
 * as they are for other types (neighbor discovery writes its own). Sets h.checksum and
 * h.bodyOffset; returns 8 + bodyLen.
 */
export function encodeIcmpv6(
  h: Icmpv6Header,
  buf: Uint8Array,
  off: number,
  bodyLen: number,
  src: Uint8Array,
  dst: Uint8Array,
): number {
  buf[off] = h.type;
  buf[off + 1] = h.code;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  switch (h.type) {
    case Icmpv6Type.ECHO_REQUEST:
    case Icmpv6Type.ECHO_REPLY:
      writeU16(buf, off + 4, h.id);
      writeU16(buf, off + 6, h.seq);
      break;
    case Icmpv6Type.PACKET_TOO_BIG:
      writeU32(buf, off + 4, h.mtu);
      break;
    case Icmpv6Type.PARAMETER_PROBLEM:
      writeU32(buf, off + 4, h.pointer);
      break;
    default:
      if (isIcmpv6Error(h.type)) writeU32(buf, off + 4, 0);
  }
  const total = ICMPV6_HEADER_LENGTH + bodyLen;
  const sum = foldChecksum(
    onesSum(buf, off, total, pseudoHeaderSum6(src, 0, dst, 0, Ipv6Next.ICMPV6, total)),
  );
  writeU16(buf, off + 2, sum);
  h.checksum = sum;
  h.bodyOffset = off + ICMPV6_HEADER_LENGTH;
  return total;
}
