/**
 * The virtio-net header that a TAP opened with IFF_VNET_HDR puts before every frame.
 *
 * Layout (linux/virtio_net.h, struct virtio_net_hdr_v1, 12 bytes):
 *   0 u8  flags        VIRTIO_NET_HDR_F_NEEDS_CSUM = 1, VIRTIO_NET_HDR_F_DATA_VALID = 2
 *   1 u8  gso_type     NONE = 0, TCPV4 = 1, UDP = 3, TCPV6 = 4, ECN bit = 0x80
 *   2 u16 hdr_len      Ethernet + IP + TCP header bytes of a GSO frame
 *   4 u16 gso_size     payload bytes per segment of a GSO frame (the MSS)
 *   6 u16 csum_start   where the partial checksum's sum begins (the L4 header)
 *   8 u16 csum_offset  where, from csum_start, the checksum field is
 *  10 u16 num_buffers  only meaningful for mergeable rx buffers; 0 here
 *
 * We use the 12-byte v1 layout rather than the 10-byte legacy one because it is the layout of
 * virtio 1.0 and of every modern vhost backend, so a dump of our frames reads the same as theirs;
 * the two extra bytes cost nothing. The u16 fields are little-endian: TapLink asks the kernel for
 * that with TUNSETVNETLE, so the byte order does not depend on the host.
 */
import {
  foldChecksum,
  pseudoHeaderSum6 as ip6PseudoHeaderSum,
  pseudoHeaderSum as ipPseudoHeaderSum,
  onesSum,
} from '../wire/checksum.ts';
import { ipv4Dst, ipv4Src } from '../wire/fields.ts';

export const VNET_HDR_LEN = 12;

export const VNET_F_NEEDS_CSUM = 1;
export const VNET_F_DATA_VALID = 2;
export const VNET_GSO_NONE = 0;
export const VNET_GSO_TCPV4 = 1;
export const VNET_GSO_UDP = 3;
export const VNET_GSO_TCPV6 = 4;
export const VNET_GSO_ECN = 0x80;

/** What the kernel said about the frame being delivered; one object, rewritten per frame. */
export interface TapRxInfo {
  /**
   * The TCP/UDP checksum is partial (only the pseudo-header sum is in the field): do not verify
   * it; the kernel has checked the data, or it came from a local socket that never summed it.
   */
  csumPartial: boolean;
  /** The kernel has already verified the checksum. */
  csumValid: boolean;
  /** VNET_GSO_* without the ECN bit; VNET_GSO_NONE for an ordinary frame. */
  gsoType: number;
  /** For a GSO frame: the segment payload size (MSS) the super-segment stands for. */
  gsoSize: number;
  /** For a GSO frame: bytes of Ethernet + IP + L4 headers. */
  hdrLen: number;
  csumStart: number;
  csumOffset: number;
}

/** A zeroed TapRxInfo, to be filled by decodeVnetHdr for each received frame. */
export function newRxInfo(): TapRxInfo {
  return {
    csumPartial: false,
    csumValid: false,
    gsoType: VNET_GSO_NONE,
    gsoSize: 0,
    hdrLen: 0,
    csumStart: 0,
    csumOffset: 0,
  };
}

/** Decode the header at `b[off..off+12)` into `out`. */
export function decodeVnetHdr(b: Uint8Array, off: number, out: TapRxInfo): void {
  const flags = b[off]!;
  out.csumPartial = (flags & VNET_F_NEEDS_CSUM) !== 0;
  out.csumValid = (flags & VNET_F_DATA_VALID) !== 0;
  out.gsoType = b[off + 1]! & ~VNET_GSO_ECN;
  out.hdrLen = b[off + 2]! | (b[off + 3]! << 8);
  out.gsoSize = b[off + 4]! | (b[off + 5]! << 8);
  out.csumStart = b[off + 6]! | (b[off + 7]! << 8);
  out.csumOffset = b[off + 8]! | (b[off + 9]! << 8);
}

/** Write a 12-byte virtio-net header at `b[off..off+12)` (little-endian fields, as the kernel reads them). */
export function encodeVnetHdr(
  b: Uint8Array,
  off: number,
  flags: number,
  gsoType: number,
  hdrLen: number,
  gsoSize: number,
  csumStart: number,
  csumOffset: number,
): void {
  b[off] = flags;
  b[off + 1] = gsoType;
  b[off + 2] = hdrLen & 0xff;
  b[off + 3] = hdrLen >>> 8;
  b[off + 4] = gsoSize & 0xff;
  b[off + 5] = gsoSize >>> 8;
  b[off + 6] = csumStart & 0xff;
  b[off + 7] = csumStart >>> 8;
  b[off + 8] = csumOffset & 0xff;
  b[off + 9] = csumOffset >>> 8;
  b[off + 10] = 0;
  b[off + 11] = 0;
}

/**
 * The folded (not complemented) IPv4 pseudo-header sum for an L4 segment of `l4Len` bytes: the
 * value a partial checksum field must hold, so that whoever finishes the sum (the kernel, for a
 * NEEDS_CSUM frame, per segment after cutting a TSO frame) only adds the L4 bytes.
 */
export function pseudoHeaderSum(f: Uint8Array, ipOff: number, proto: number, l4Len: number): number {
  // foldChecksum complements; the seed is the folded sum itself.
  return ~foldChecksum(ipPseudoHeaderSum(ipv4Src(f, ipOff), ipv4Dst(f, ipOff), proto, l4Len)) & 0xffff;
}

/** `pseudoHeaderSum` for an IPv6 packet at f[ipOff] (its fixed header's addresses). */
export function pseudoHeaderSum6(f: Uint8Array, ipOff: number, proto: number, l4Len: number): number {
  return ~foldChecksum(ip6PseudoHeaderSum(f, ipOff + 8, f, ipOff + 24, proto, l4Len)) & 0xffff;
}

/**
 * Complete a partial checksum in place: sum `f[csumStart..]` (which includes the pseudo-header
 * seed already sitting in the checksum field) and store its complement. For a stack that would
 * rather verify every checksum itself than trust `csumPartial`.
 */
export function completePartialChecksum(f: Uint8Array, csumStart: number, csumOffset: number): boolean {
  const at = csumStart + csumOffset;
  if (csumStart >= f.length || at + 2 > f.length) return false;
  let c = foldChecksum(onesSum(f, csumStart, f.length - csumStart));
  // UDP sends a computed zero as all ones, because zero means "no checksum"; TCP never minds.
  if (c === 0) c = 0xffff;
  f[at] = c >>> 8;
  f[at + 1] = c & 0xff;
  return true;
}
