import { copyIpv6, isIpv6Multicast, readU16, readU32, writeU16 } from './addr.ts';
import type { DecodeError } from './decode-error.ts';

export const IPV6_HEADER_LENGTH = 40;
/** RFC 8200 5: every link carries 1280-byte packets; path MTU never goes below it. */
export const IPV6_MIN_MTU = 1280;

/** Next-header values the extension-header walk knows (RFC 8200 4.1) and the upper layers. */
export const Ipv6Next = {
  HOP_BY_HOP: 0,
  TCP: 6,
  UDP: 17,
  ROUTING: 43,
  FRAGMENT: 44,
  ICMPV6: 58,
  NO_NEXT: 59,
  DEST_OPTS: 60,
} as const;

/** ICMPv6 parameter-problem codes (RFC 4443 3.4) the walk reports. */
export const Ipv6Problem = { HEADER_FIELD: 0, NEXT_HEADER: 1, OPTION: 2, INCOMPLETE_CHAIN: 3 } as const;

/** Extension headers walked before a packet is refused: far more than any real stack sends. */
export const IPV6_MAX_EXT_HEADERS = 8;
/** Options (padding excluded) in one hop-by-hop or destination options header, as Linux's default. */
export const IPV6_MAX_OPTIONS = 8;

/** Hop-by-hop option: router alert (RFC 2711), carried by MLD. */
const OPT_ROUTER_ALERT = 5;

export interface Ipv6Header {
  trafficClass: number;
  flowLabel: number;
  /** The payload length field: bytes after the fixed 40-byte header, extension headers included. */
  payloadLength: number;
  /** The fixed header's next header field. */
  nextHeader: number;
  hopLimit: number;
  /** Source and destination, copied here (16 bytes each; the arrays belong to the header object). */
  readonly src: Uint8Array;
  readonly dst: Uint8Array;

  // ---- from the extension-header walk ----
  /**
   * The upper-layer protocol: what the walk stopped at. Anything not TCP, UDP, ICMPv6 or 59 (no
   * next header) is for the caller to refuse with a parameter problem, code 1, at `protocolPointer`.
   */
  protocol: number;
  /** Offset, from the start of the IPv6 header, of the next-header field that named `protocol`. */
  protocolPointer: number;
  /** Where the upper-layer data starts (absolute offset into the buffer) and its length. */
  payloadOffset: number;
  payloadLen: number;
  /** Extension headers walked. */
  extCount: number;
  /** A fragment header other than an atomic one (offset 0 and M clear, RFC 6946) was found. */
  fragment: boolean;
  /** Fragment offset in bytes, more-fragments flag, identification; meaningful when `fragment`. */
  fragOffset: number;
  mf: boolean;
  fragId: number;
  /** Offset of the fragment header from the start of the IPv6 header (-1 without one). */
  fragHeaderAt: number;
  /** Router alert value from hop-by-hop options, or -1. */
  routerAlert: number;
  /**
   * When the decoder refused the packet and RFC 8200 asks for an ICMPv6 parameter problem: its
   * code (`Ipv6Problem`) and pointer (offset from the start of the IPv6 header); -1 otherwise.
   * Refusals from an option whose type says "discard silently" leave this at -1.
   */
  problemCode: number;
  problemPointer: number;
}

/** A zeroed Ipv6Header for decodeIpv6 to fill (one per caller, reused per packet). */
export function createIpv6Header(): Ipv6Header {
  return {
    trafficClass: 0,
    flowLabel: 0,
    payloadLength: 0,
    nextHeader: 0,
    hopLimit: 0,
    src: new Uint8Array(16),
    dst: new Uint8Array(16),
    protocol: 0,
    protocolPointer: 6,
    payloadOffset: 0,
    payloadLen: 0,
    extCount: 0,
    fragment: false,
    fragOffset: 0,
    mf: false,
    fragId: 0,
    fragHeaderAt: -1,
    routerAlert: -1,
    problemCode: -1,
    problemPointer: -1,
  };
}

/**
 * Decode the IPv6 header at buf[off] from a frame payload of len bytes, and walk its extension
 * headers (RFC 8200 4): hop-by-hop (first only), routing, fragment, destination options. Bytes
 * after 40 + payloadLength are link padding and ignored. The walk stops at the first next header
 * it does not know (the upper layer), at a non-atomic fragment header (the rest belongs to
 * reassembly) or at 59. `maxExt` bounds the chain; a longer one is refused as
 * 'bad-header-length' after at most that many steps.
 *
 * Errors: 'truncated', 'bad-version', 'bad-length' (a fragment whose size is not a multiple of
 * 8 while more follow), 'bad-option' (malformed option TLVs or an unknown option whose type says
 * discard), 'unsupported' (hop-by-hop not first, a routing header with segments left: a host
 * forwards nothing; a first fragment without the whole header chain), 'bad-header-length'.
 */
export function decodeIpv6(
  buf: Uint8Array,
  off: number,
  len: number,
  out: Ipv6Header,
  maxExt = IPV6_MAX_EXT_HEADERS,
): DecodeError | null {
  if (off < 0 || len < IPV6_HEADER_LENGTH || off + len > buf.length) return 'truncated';
  const vtf = readU32(buf, off);
  if (vtf >>> 28 !== 6) return 'bad-version';
  const payloadLength = readU16(buf, off + 4);
  // A zero payload length with a jumbo option (RFC 2675) is refused with the option below.
  if (IPV6_HEADER_LENGTH + payloadLength > len) return 'truncated';
  out.trafficClass = (vtf >>> 20) & 0xff;
  out.flowLabel = vtf & 0xfffff;
  out.payloadLength = payloadLength;
  out.nextHeader = buf[off + 6]!;
  out.hopLimit = buf[off + 7]!;
  copyIpv6(out.src, 0, buf, off + 8);
  copyIpv6(out.dst, 0, buf, off + 24);
  out.extCount = 0;
  out.fragment = false;
  out.fragOffset = 0;
  out.mf = false;
  out.fragId = 0;
  out.fragHeaderAt = -1;
  out.routerAlert = -1;
  out.problemCode = -1;
  out.problemPointer = -1;
  return walkExtensions(buf, off, out, maxExt);
}

function problem(out: Ipv6Header, code: number, pointer: number, err: DecodeError): DecodeError {
  out.problemCode = code;
  out.problemPointer = pointer;
  return err;
}

function walkExtensions(buf: Uint8Array, ip: number, out: Ipv6Header, maxExt: number): DecodeError | null {
  const end = ip + IPV6_HEADER_LENGTH + out.payloadLength;
  let next = out.nextHeader;
  let nextAt = 6;
  let at = ip + IPV6_HEADER_LENGTH;
  const mcast = isIpv6Multicast(out.dst);
  for (;;) {
    out.protocol = next;
    out.protocolPointer = nextAt;
    out.payloadOffset = at;
    out.payloadLen = end - at;
    if (
      next !== Ipv6Next.HOP_BY_HOP &&
      next !== Ipv6Next.ROUTING &&
      next !== Ipv6Next.FRAGMENT &&
      next !== Ipv6Next.DEST_OPTS
    ) {
      return null;
    }
    if (out.extCount >= maxExt) return 'bad-header-length';
    if (next === Ipv6Next.HOP_BY_HOP && nextAt !== 6) {
      // RFC 8200 4.3: only right after the IPv6 header; elsewhere it is an unknown next header.
      return problem(out, Ipv6Problem.NEXT_HEADER, nextAt, 'unsupported');
    }
    if (next === Ipv6Next.FRAGMENT) {
      if (at + 8 > end) return 'truncated';
      const offFlags = readU16(buf, at + 2);
      const fragOffset = offFlags & 0xfff8;
      const mf = (offFlags & 1) !== 0;
      out.extCount++;
      if (fragOffset === 0 && !mf) {
        // An atomic fragment (RFC 6946) is a whole packet: go on walking.
        nextAt = at - ip;
        next = buf[at]!;
        at += 8;
        continue;
      }
      if (mf && (end - at - 8) % 8 !== 0) {
        return problem(out, Ipv6Problem.HEADER_FIELD, 4, 'bad-length');
      }
      out.fragment = true;
      out.fragOffset = fragOffset;
      out.mf = mf;
      out.fragId = readU32(buf, at + 4);
      out.fragHeaderAt = at - ip;
      out.protocol = buf[at]!;
      out.protocolPointer = at - ip;
      out.payloadOffset = at + 8;
      out.payloadLen = end - at - 8;
      if (fragOffset === 0 && !chainComplete(buf, at, end, out.protocol, maxExt - out.extCount)) {
        // RFC 8200 4.5 / RFC 7112: the first fragment must hold the whole header chain.
        return problem(out, Ipv6Problem.INCOMPLETE_CHAIN, 0, 'unsupported');
      }
      return null;
    }
    if (at + 8 > end) return 'truncated';
    const hlen = (buf[at + 1]! + 1) << 3;
    if (at + hlen > end) return 'truncated';
    out.extCount++;
    if (next === Ipv6Next.ROUTING) {
      if (buf[at + 3] !== 0) {
        // Segments left: a host forwards nothing, and type 0 is deprecated (RFC 5095).
        return problem(out, Ipv6Problem.HEADER_FIELD, at + 2 - ip, 'unsupported');
      }
    } else {
      const err = walkOptions(buf, ip, at + 2, at + hlen, next === Ipv6Next.HOP_BY_HOP, mcast, out);
      if (err !== null) return err;
    }
    nextAt = at - ip;
    next = buf[at]!;
    at += hlen;
  }
}

/** The headers after a first fragment's fragment header reach an upper layer inside `end`. */
function chainComplete(buf: Uint8Array, fh: number, end: number, next: number, budget: number): boolean {
  let at = fh + 8;
  for (let n = 0; n <= budget; n++) {
    if (next !== Ipv6Next.ROUTING && next !== Ipv6Next.DEST_OPTS && next !== Ipv6Next.HOP_BY_HOP) {
      // The upper-layer header itself must be present too: its first 4 bytes (ports, ICMP type) at least.
      return next === Ipv6Next.NO_NEXT || at + 4 <= end;
    }
    if (at + 8 > end) return false;
    const hlen = (buf[at + 1]! + 1) << 3;
    if (at + hlen > end) return false;
    next = buf[at]!;
    at += hlen;
  }
  return false;
}

/**
 * Walk the TLV options in buf[i, end). Unknown options act by their top two bits (RFC 8200 4.2):
 * skip, discard, discard with a parameter problem, or the same unless the destination is multicast.
 * Runs of padding longer than 7 bytes and more than IPV6_MAX_OPTIONS options are refused, as Linux
 * does: they carry nothing and only cost the receiver.
 */
function walkOptions(
  buf: Uint8Array,
  ip: number,
  i: number,
  end: number,
  hopByHop: boolean,
  mcast: boolean,
  out: Ipv6Header,
): DecodeError | null {
  let pad = 0;
  let count = 0;
  while (i < end) {
    const type = buf[i]!;
    if (type === 0) {
      if (++pad > 7) return 'bad-option';
      i++;
      continue;
    }
    if (i + 2 > end) return 'bad-option';
    const olen = buf[i + 1]!;
    if (i + 2 + olen > end) return 'bad-option';
    if (type === 1) {
      pad += olen + 2;
      if (pad > 7) return 'bad-option';
      i += 2 + olen;
      continue;
    }
    pad = 0;
    if (++count > IPV6_MAX_OPTIONS) return 'bad-option';
    if (hopByHop && type === OPT_ROUTER_ALERT) {
      if (olen !== 2) return problem(out, Ipv6Problem.HEADER_FIELD, i + 1 - ip, 'bad-option');
      out.routerAlert = readU16(buf, i + 2);
    } else {
      switch (type >>> 6) {
        case 0:
          break;
        case 1:
          return 'bad-option';
        case 2:
          return problem(out, Ipv6Problem.OPTION, i - ip, 'bad-option');
        default:
          return mcast ? 'bad-option' : problem(out, Ipv6Problem.OPTION, i - ip, 'bad-option');
      }
    }
    i += 2 + olen;
  }
  return null;
}

/**
 * Write the fixed 40-byte header at buf[off] from h (no extension headers: `nextHeader` is the
 * upper layer). Returns 40.
 */
export function encodeIpv6(h: Ipv6Header, buf: Uint8Array, off: number): number {
  buf[off] = 0x60 | (h.trafficClass >>> 4);
  buf[off + 1] = ((h.trafficClass & 0x0f) << 4) | ((h.flowLabel >>> 16) & 0x0f);
  writeU16(buf, off + 2, h.flowLabel & 0xffff);
  writeU16(buf, off + 4, h.payloadLength);
  buf[off + 6] = h.nextHeader;
  buf[off + 7] = h.hopLimit;
  copyIpv6(buf, off + 8, h.src, 0);
  copyIpv6(buf, off + 24, h.dst, 0);
  return IPV6_HEADER_LENGTH;
}

/**
 * Write an 8-byte fragment header at buf[off]: next header, offset in bytes (a multiple of 8),
 * more-fragments flag, identification. Returns 8.
 */
export function encodeIpv6Fragment(
  buf: Uint8Array,
  off: number,
  next: number,
  fragOffset: number,
  mf: boolean,
  id: number,
): number {
  buf[off] = next;
  buf[off + 1] = 0;
  writeU16(buf, off + 2, (fragOffset & 0xfff8) | (mf ? 1 : 0));
  buf[off + 4] = id >>> 24;
  buf[off + 5] = id >>> 16;
  buf[off + 6] = id >>> 8;
  buf[off + 7] = id;
  return 8;
}
