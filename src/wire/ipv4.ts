import { readU16, readU32, writeU16, writeU32 } from './addr.ts';
import { internetChecksum } from './checksum.ts';
import type { DecodeError } from './decode-error.ts';

export const IpProto = { ICMP: 1, TCP: 6, UDP: 17 } as const;
export const IPV4_HEADER_MIN = 20;
export const IPV4_HEADER_MAX = 60;

export interface Ipv4Header {
  /** Bytes, options included. */
  headerLength: number;
  tos: number;
  totalLength: number;
  id: number;
  df: boolean;
  mf: boolean;
  /** Fragment offset in bytes (the wire carries 8-byte units). */
  fragOffset: number;
  ttl: number;
  protocol: number;
  checksum: number;
  src: number;
  dst: number;
}

/** A zeroed Ipv4Header for decodeIpv4 to fill (one per caller, reused per packet). */
export function createIpv4Header(): Ipv4Header {
  return {
    headerLength: IPV4_HEADER_MIN,
    tos: 0,
    totalLength: 0,
    id: 0,
    df: false,
    mf: false,
    fragOffset: 0,
    ttl: 0,
    protocol: 0,
    checksum: 0,
    src: 0,
    dst: 0,
  };
}

/**
 * Decode the IPv4 header at buf[off] from a frame payload of len bytes. Bytes after totalLength are
 * Ethernet padding (short frames are padded to 60 bytes) and are ignored; the IP payload is
 * buf[off + headerLength, off + totalLength).
 */
export function decodeIpv4(
  buf: Uint8Array,
  off: number,
  len: number,
  out: Ipv4Header,
  verifyChecksum = true,
): DecodeError | null {
  if (off < 0 || len < IPV4_HEADER_MIN || off + len > buf.length) return 'truncated';
  const vihl = buf[off]!;
  if (vihl >>> 4 !== 4) return 'bad-version';
  const hl = (vihl & 0x0f) << 2;
  if (hl < IPV4_HEADER_MIN) return 'bad-header-length';
  if (hl > len) return 'truncated';
  const total = readU16(buf, off + 2);
  if (total < hl) return 'bad-length';
  if (total > len) return 'truncated';
  if (verifyChecksum && internetChecksum(buf, off, hl) !== 0) return 'bad-checksum';
  if (hl > IPV4_HEADER_MIN && !ipv4OptionsWellFormed(buf, off + IPV4_HEADER_MIN, off + hl))
    return 'bad-option';
  const frag = readU16(buf, off + 6);
  out.headerLength = hl;
  out.tos = buf[off + 1]!;
  out.totalLength = total;
  out.id = readU16(buf, off + 4);
  out.df = (frag & 0x4000) !== 0;
  out.mf = (frag & 0x2000) !== 0;
  out.fragOffset = (frag & 0x1fff) << 3;
  out.ttl = buf[off + 8]!;
  out.protocol = buf[off + 9]!;
  out.checksum = readU16(buf, off + 10);
  out.src = readU32(buf, off + 12);
  out.dst = readU32(buf, off + 16);
  return null;
}

/** Only the option framing is checked; no option's content is acted on. */
function ipv4OptionsWellFormed(buf: Uint8Array, i: number, end: number): boolean {
  while (i < end) {
    const kind = buf[i]!;
    if (kind === 0) return true;
    if (kind === 1) {
      i++;
      continue;
    }
    if (i + 1 >= end) return false;
    const olen = buf[i + 1]!;
    if (olen < 2 || i + olen > end) return false;
    i += olen;
  }
  return true;
}

/**
 * Write a 20-byte header (no options) at buf[off] with its checksum. Sets h.headerLength and
 * h.checksum; returns 20.
 */
export function encodeIpv4(h: Ipv4Header, buf: Uint8Array, off: number): number {
  buf[off] = 0x45;
  buf[off + 1] = h.tos;
  writeU16(buf, off + 2, h.totalLength);
  writeU16(buf, off + 4, h.id);
  writeU16(buf, off + 6, (h.df ? 0x4000 : 0) | (h.mf ? 0x2000 : 0) | ((h.fragOffset >>> 3) & 0x1fff));
  buf[off + 8] = h.ttl;
  buf[off + 9] = h.protocol;
  buf[off + 10] = 0;
  buf[off + 11] = 0;
  writeU32(buf, off + 12, h.src);
  writeU32(buf, off + 16, h.dst);
  const sum = internetChecksum(buf, off, IPV4_HEADER_MIN);
  writeU16(buf, off + 10, sum);
  h.checksum = sum;
  h.headerLength = IPV4_HEADER_MIN;
  return IPV4_HEADER_MIN;
}
