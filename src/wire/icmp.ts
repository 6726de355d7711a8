import { readU16, writeU16 } from './addr.ts';
import { internetChecksum } from './checksum.ts';
import type { DecodeError } from './decode-error.ts';

export const IcmpType = { ECHO_REPLY: 0, DEST_UNREACHABLE: 3, ECHO_REQUEST: 8, TIME_EXCEEDED: 11 } as const;
/** Destination-unreachable codes the stack acts on. */
export const IcmpUnreachCode = { NET: 0, HOST: 1, PROTOCOL: 2, PORT: 3, FRAG_NEEDED: 4 } as const;
export const ICMP_HEADER_LENGTH = 8;

export interface IcmpHeader {
  type: number;
  code: number;
  checksum: number;
  /** Bytes 4-5 of the header: the echo identifier. */
  id: number;
  /** Bytes 6-7 of the header: the echo sequence number. */
  seq: number;
  /** Next-hop MTU for destination-unreachable / fragmentation-needed (RFC 1191), else 0. */
  mtu: number;
  /** Offset of the data after the 8-byte header, relative to buf. */
  bodyOffset: number;
}

/** A zeroed IcmpHeader for decodeIcmp to fill (one per caller, reused per packet). */
export function createIcmpHeader(): IcmpHeader {
  return { type: 0, code: 0, checksum: 0, id: 0, seq: 0, mtu: 0, bodyOffset: 0 };
}

function isFragNeeded(type: number, code: number): boolean {
  return type === IcmpType.DEST_UNREACHABLE && code === IcmpUnreachCode.FRAG_NEEDED;
}

/** Decode the ICMP message buf[off, off+len); the checksum covers the whole message. */
export function decodeIcmp(
  buf: Uint8Array,
  off: number,
  len: number,
  out: IcmpHeader,
  verifyChecksum = true,
): DecodeError | null {
  if (off < 0 || len < ICMP_HEADER_LENGTH || off + len > buf.length) return 'truncated';
  if (verifyChecksum && internetChecksum(buf, off, len) !== 0) return 'bad-checksum';
  const type = buf[off]!;
  const code = buf[off + 1]!;
  out.type = type;
  out.code = code;
  out.checksum = readU16(buf, off + 2);
  out.id = readU16(buf, off + 4);
  out.seq = readU16(buf, off + 6);
  out.mtu = isFragNeeded(type, code) ? out.seq : 0;
  out.bodyOffset = off + ICMP_HEADER_LENGTH;
  return null;
}

/**
 * Write the 8-byte header at buf[off] for a body already at buf[off+8, off+8+bodyLen) and checksum
 * header and body. Error messages (unreachable, time exceeded) carry zeros in the unused word, with
 * the next-hop MTU in its low half for fragmentation-needed; other types carry id and seq. Sets
 * h.checksum and h.bodyOffset; returns 8 + bodyLen.
 */
export function encodeIcmp(h: IcmpHeader, buf: Uint8Array, off: number, bodyLen: number): number {
  buf[off] = h.type;
  buf[off + 1] = h.code;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  if (isFragNeeded(h.type, h.code)) {
    writeU16(buf, off + 4, 0);
    writeU16(buf, off + 6, h.mtu);
  } else if (h.type === IcmpType.DEST_UNREACHABLE || h.type === IcmpType.TIME_EXCEEDED) {
    writeU16(buf, off + 4, 0);
    writeU16(buf, off + 6, 0);
  } else {
    writeU16(buf, off + 4, h.id);
    writeU16(buf, off + 6, h.seq);
  }
  const total = ICMP_HEADER_LENGTH + bodyLen;
  const sum = internetChecksum(buf, off, total);
  writeU16(buf, off + 2, sum);
  h.checksum = sum;
  h.bodyOffset = off + ICMP_HEADER_LENGTH;
  return total;
}
