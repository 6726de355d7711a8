import { readU16, writeU16 } from './addr.ts';
import { foldChecksum, onesSum, pseudoHeaderSum } from './checksum.ts';
import type { DecodeError } from './decode-error.ts';

export const UDP_HEADER_LENGTH = 8;
export const UDP_PROTOCOL = 17;

export interface UdpHeader {
  srcPort: number;
  dstPort: number;
  /** Header plus payload, from the UDP header itself. */
  length: number;
  /** 0 when the sender computed none. */
  checksum: number;
}

/** A zeroed UdpHeader for decodeUdp to fill (one per caller, reused per datagram). */
export function createUdpHeader(): UdpHeader {
  return { srcPort: 0, dstPort: 0, length: 0, checksum: 0 };
}

/**
 * Decode the datagram at buf[off] from an IP payload of len bytes. The payload is
 * buf[off + 8, off + out.length); the UDP length may be shorter than len, never longer.
 */
export function decodeUdp(
  buf: Uint8Array,
  off: number,
  len: number,
  srcIp: number,
  dstIp: number,
  out: UdpHeader,
  verifyChecksum = true,
): DecodeError | null {
  if (off < 0 || len < UDP_HEADER_LENGTH || off + len > buf.length) return 'truncated';
  const ulen = readU16(buf, off + 4);
  if (ulen < UDP_HEADER_LENGTH || ulen > len) return 'bad-length';
  const checksum = readU16(buf, off + 6);
  // A zero checksum means the sender did not compute one (RFC 768).
  if (
    verifyChecksum &&
    checksum !== 0 &&
    foldChecksum(onesSum(buf, off, ulen, pseudoHeaderSum(srcIp, dstIp, UDP_PROTOCOL, ulen))) !== 0
  ) {
    return 'bad-checksum';
  }
  out.srcPort = readU16(buf, off);
  out.dstPort = readU16(buf, off + 2);
  out.length = ulen;
  out.checksum = checksum;
  return null;
}

/** Write the 8-byte header at buf[off] with a zero checksum; returns 8. */
export function encodeUdpHeader(h: UdpHeader, buf: Uint8Array, off: number): number {
  writeU16(buf, off, h.srcPort);
  writeU16(buf, off + 2, h.dstPort);
  writeU16(buf, off + 4, h.length);
  buf[off + 6] = 0;
  buf[off + 7] = 0;
  return UDP_HEADER_LENGTH;
}

/** Checksum the datagram buf[off, off+len); a computed 0 goes out as 0xffff because 0 means "none". */
export function finishUdpChecksum(
  buf: Uint8Array,
  off: number,
  len: number,
  srcIp: number,
  dstIp: number,
): void {
  buf[off + 6] = 0;
  buf[off + 7] = 0;
  const sum = foldChecksum(onesSum(buf, off, len, pseudoHeaderSum(srcIp, dstIp, UDP_PROTOCOL, len)));
  writeU16(buf, off + 6, sum === 0 ? 0xffff : sum);
}
