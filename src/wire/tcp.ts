import { readU16, readU32, writeU16, writeU32 } from './addr.ts';
import { foldChecksum, onesSum, pseudoHeaderSum } from './checksum.ts';
import type { DecodeError } from './decode-error.ts';

export const TcpFlag = { FIN: 1, SYN: 2, RST: 4, PSH: 8, ACK: 16, URG: 32, ECE: 64, CWR: 128 } as const;
export const TCP_HEADER_MIN = 20;
/** Data offset is 4 bits of 32-bit words: 60 bytes of header, 40 of options. */
export const TCP_HEADER_MAX = 60;
export const TCP_OPTIONS_MAX = 40;
export const TCP_PROTOCOL = 6;

export const TcpOption = {
  EOL: 0,
  NOP: 1,
  MSS: 2,
  WSCALE: 3,
  SACK_PERMITTED: 4,
  SACK: 5,
  TIMESTAMPS: 8,
} as const;

export interface TcpHeader {
  srcPort: number;
  dstPort: number;
  /** Unsigned u32. */
  seq: number;
  /** Unsigned u32. */
  ack: number;
  flags: number;
  window: number;
  urgent: number;
  checksum: number;
  /** Bytes, options included. */
  headerLength: number;
  /** -1 when absent. */
  mss: number;
  /** -1 when absent; the value as sent (0..255), the TCP engine clamps it to 14. */
  wscale: number;
  sackPermitted: boolean;
  hasTimestamps: boolean;
  tsVal: number;
  tsEcr: number;
  /** Number of valid SACK blocks in `sackBlocks` (0..4). */
  sackCount: number;
  /** left0, right0, left1, right1, ... (length 8). */
  sackBlocks: Uint32Array;
}

/** A zeroed TcpHeader with no options, for decodeTcp to fill (one per caller, reused per segment). */
export function createTcpHeader(): TcpHeader {
  return {
    srcPort: 0,
    dstPort: 0,
    seq: 0,
    ack: 0,
    flags: 0,
    window: 0,
    urgent: 0,
    checksum: 0,
    headerLength: TCP_HEADER_MIN,
    mss: -1,
    wscale: -1,
    sackPermitted: false,
    hasTimestamps: false,
    tsVal: 0,
    tsEcr: 0,
    sackCount: 0,
    sackBlocks: new Uint32Array(8),
  };
}

/** Mark every option absent, before decoding or building a segment with the same header object. */
export function resetTcpOptions(h: TcpHeader): void {
  h.mss = -1;
  h.wscale = -1;
  h.sackPermitted = false;
  h.hasTimestamps = false;
  h.tsVal = 0;
  h.tsEcr = 0;
  h.sackCount = 0;
}

/**
 * Decode the segment buf[off, off+len) where len is the IP payload length. On success the payload
 * is buf[off + out.headerLength, off + len).
 */
export function decodeTcp(
  buf: Uint8Array,
  off: number,
  len: number,
  srcIp: number,
  dstIp: number,
  out: TcpHeader,
  verifyChecksum = true,
): DecodeError | null {
  if (off < 0 || len < TCP_HEADER_MIN || off + len > buf.length) return 'truncated';
  const hl = (buf[off + 12]! >>> 4) << 2;
  if (hl < TCP_HEADER_MIN || hl > len) return 'bad-header-length';
  if (
    verifyChecksum &&
    foldChecksum(onesSum(buf, off, len, pseudoHeaderSum(srcIp, dstIp, TCP_PROTOCOL, len))) !== 0
  ) {
    return 'bad-checksum';
  }
  out.srcPort = readU16(buf, off);
  out.dstPort = readU16(buf, off + 2);
  out.seq = readU32(buf, off + 4);
  out.ack = readU32(buf, off + 8);
  out.flags = buf[off + 13]!;
  out.window = readU16(buf, off + 14);
  out.checksum = readU16(buf, off + 16);
  out.urgent = readU16(buf, off + 18);
  out.headerLength = hl;
  resetTcpOptions(out);
  return hl > TCP_HEADER_MIN ? decodeTcpOptions(buf, off + TCP_HEADER_MIN, off + hl, out) : null;
}

function decodeTcpOptions(buf: Uint8Array, i: number, end: number, out: TcpHeader): DecodeError | null {
  while (i < end) {
    const kind = buf[i]!;
    if (kind === TcpOption.EOL) break;
    if (kind === TcpOption.NOP) {
      i++;
      continue;
    }
    if (i + 1 >= end) return 'bad-option';
    const olen = buf[i + 1]!;
    if (olen < 2 || i + olen > end) return 'bad-option';
    switch (kind) {
      case TcpOption.MSS:
        if (olen !== 4) return 'bad-option';
        out.mss = readU16(buf, i + 2);
        break;
      case TcpOption.WSCALE:
        if (olen !== 3) return 'bad-option';
        out.wscale = buf[i + 2]!;
        break;
      case TcpOption.SACK_PERMITTED:
        if (olen !== 2) return 'bad-option';
        out.sackPermitted = true;
        break;
      case TcpOption.TIMESTAMPS:
        if (olen !== 10) return 'bad-option';
        out.hasTimestamps = true;
        out.tsVal = readU32(buf, i + 2);
        out.tsEcr = readU32(buf, i + 6);
        break;
      case TcpOption.SACK: {
        const n = (olen - 2) >>> 3;
        if (n < 1 || n > 4 || olen !== 2 + 8 * n) return 'bad-option';
        const blocks = out.sackBlocks;
        for (let b = 0; b < n; b++) {
          blocks[2 * b] = readU32(buf, i + 2 + 8 * b);
          blocks[2 * b + 1] = readU32(buf, i + 6 + 8 * b);
        }
        out.sackCount = n;
        break;
      }
      default:
        // Unknown options are skipped by their length (RFC 9293 3.1: must be ignored).
        break;
    }
    i += olen;
  }
  return null;
}

/** Bytes of options before the SACK option, in the layout `encodeTcpHeader` writes. */
function baseOptionsLength(h: TcpHeader): number {
  let n = 0;
  if (h.mss >= 0) n += 4;
  if (h.hasTimestamps) n += 12;
  else if (h.sackPermitted) n += 4;
  if (h.wscale >= 0) n += 4;
  return n;
}

/** SACK blocks that fit after `base` bytes of other options. */
function sackBlocksThatFit(h: TcpHeader, base: number): number {
  if (h.sackCount <= 0) return 0;
  const room = (TCP_OPTIONS_MAX - base - 4) >> 3;
  return Math.max(0, Math.min(h.sackCount, 4, room));
}

/**
 * Option bytes `encodeTcpHeader` will write for h. Every item in the layout is a multiple of 4, so
 * no trailing padding is needed; SACK blocks that would push past 40 bytes are dropped.
 */
export function tcpOptionsLength(h: TcpHeader): number {
  const base = baseOptionsLength(h);
  const n = sackBlocksThatFit(h, base);
  return n > 0 ? base + 4 + 8 * n : base;
}

/**
 * Write the header and options at buf[off]; the checksum field is written as 0 and filled later by
 * `finishTcpChecksum` once the payload is in place. Sets and returns h.headerLength.
 */
export function encodeTcpHeader(h: TcpHeader, buf: Uint8Array, off: number): number {
  const base = baseOptionsLength(h);
  const nSack = sackBlocksThatFit(h, base);
  const hl = TCP_HEADER_MIN + (nSack > 0 ? base + 4 + 8 * nSack : base);
  writeU16(buf, off, h.srcPort);
  writeU16(buf, off + 2, h.dstPort);
  writeU32(buf, off + 4, h.seq);
  writeU32(buf, off + 8, h.ack);
  buf[off + 12] = (hl >>> 2) << 4;
  buf[off + 13] = h.flags;
  writeU16(buf, off + 14, h.window);
  buf[off + 16] = 0;
  buf[off + 17] = 0;
  writeU16(buf, off + 18, h.urgent);
  let i = off + TCP_HEADER_MIN;
  if (h.mss >= 0) {
    buf[i] = TcpOption.MSS;
    buf[i + 1] = 4;
    writeU16(buf, i + 2, h.mss);
    i += 4;
  }
  // SACK-permitted takes the place of the two NOPs that would align the timestamps.
  if (h.hasTimestamps) {
    if (h.sackPermitted) {
      buf[i] = TcpOption.SACK_PERMITTED;
      buf[i + 1] = 2;
    } else {
      buf[i] = TcpOption.NOP;
      buf[i + 1] = TcpOption.NOP;
    }
    buf[i + 2] = TcpOption.TIMESTAMPS;
    buf[i + 3] = 10;
    writeU32(buf, i + 4, h.tsVal);
    writeU32(buf, i + 8, h.tsEcr);
    i += 12;
  } else if (h.sackPermitted) {
    buf[i] = TcpOption.NOP;
    buf[i + 1] = TcpOption.NOP;
    buf[i + 2] = TcpOption.SACK_PERMITTED;
    buf[i + 3] = 2;
    i += 4;
  }
  if (h.wscale >= 0) {
    buf[i] = TcpOption.NOP;
    buf[i + 1] = TcpOption.WSCALE;
    buf[i + 2] = 3;
    buf[i + 3] = h.wscale;
    i += 4;
  }
  if (nSack > 0) {
    buf[i] = TcpOption.NOP;
    buf[i + 1] = TcpOption.NOP;
    buf[i + 2] = TcpOption.SACK;
    buf[i + 3] = 2 + 8 * nSack;
    i += 4;
    const blocks = h.sackBlocks;
    for (let b = 0; b < nSack; b++) {
      writeU32(buf, i, blocks[2 * b]!);
      writeU32(buf, i + 4, blocks[2 * b + 1]!);
      i += 8;
    }
  }
  h.headerLength = hl;
  return hl;
}

/** Compute and store the checksum of the segment buf[off, off+segLen) with the IPv4 pseudo-header. */
export function finishTcpChecksum(
  buf: Uint8Array,
  off: number,
  segLen: number,
  srcIp: number,
  dstIp: number,
): void {
  buf[off + 16] = 0;
  buf[off + 17] = 0;
  const sum = onesSum(buf, off, segLen, pseudoHeaderSum(srcIp, dstIp, TCP_PROTOCOL, segLen));
  writeU16(buf, off + 16, foldChecksum(sum));
}
