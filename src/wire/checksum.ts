/**
 * RFC 1071 Internet checksum.
 *
 * `onesSum` returns an unfolded running sum: JS numbers hold integers exactly up to 2^53, so the
 * carries can pile up in the high bits and be folded once at the end instead of on every word.
 * A sum over a buffer can be continued by passing it as `initial` to the next call, as long as the
 * previous range had an even length (16-bit words must stay aligned to the start of the data; an odd
 * final byte is padded with a zero low byte, as RFC 1071 says).
 */
/** Below this many bytes the byte loop beats setting up a 32-bit view. */
const WIDE_MIN = 128;

/** Unfolded one's-complement sum of `buf[off..off+len)`, continuing from `initial` (see above). */
export function onesSum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  let sum = initial;
  let i = off;
  const end = off + len;
  if (len >= WIDE_MIN && ((buf.byteOffset + off) & 1) === 0) {
    // Bulk payloads: read 32-bit little-endian words. A one's-complement sum is byte-order
    // independent (RFC 1071 §2(B)): summing byte-swapped words gives the byte-swapped sum.
    if ((buf.byteOffset + i) & 2) {
      sum += (buf[i]! << 8) | buf[i + 1]!;
      i += 2;
    }
    const words = (end - i) >>> 2;
    const i32 = new Int32Array(buf.buffer, buf.byteOffset + i, words);
    let wide = 0;
    let j = 0;
    while (j < words) {
      // Two small-integer lanes stay in V8's fast integer range; fold them every 16 Ki words.
      const stop = Math.min(words, j + 0x4000);
      let lo = 0;
      let hi = 0;
      const stop4 = stop - 3;
      for (; j < stop4; j += 4) {
        const w0 = i32[j]!;
        const w1 = i32[j + 1]!;
        const w2 = i32[j + 2]!;
        const w3 = i32[j + 3]!;
        lo += (w0 & 0xffff) + (w1 & 0xffff) + (w2 & 0xffff) + (w3 & 0xffff);
        hi += (w0 >>> 16) + (w1 >>> 16) + (w2 >>> 16) + (w3 >>> 16);
      }
      for (; j < stop; j++) {
        const w = i32[j]!;
        lo += w & 0xffff;
        hi += w >>> 16;
      }
      wide += lo + hi;
    }
    while (wide > 0xffff) wide = (wide % 0x10000) + Math.floor(wide / 0x10000);
    sum += ((wide & 0xff) << 8) | (wide >>> 8);
    i += words << 2;
  }
  // Eight bytes per step amortises the loop test; the sum of four 16-bit words cannot overflow the
  // double's exact range for any buffer shorter than petabytes.
  const end8 = end - 7;
  while (i < end8) {
    sum +=
      ((buf[i]! << 8) | buf[i + 1]!) +
      ((buf[i + 2]! << 8) | buf[i + 3]!) +
      ((buf[i + 4]! << 8) | buf[i + 5]!) +
      ((buf[i + 6]! << 8) | buf[i + 7]!);
    i += 8;
  }
  const end2 = end - 1;
  while (i < end2) {
    sum += (buf[i]! << 8) | buf[i + 1]!;
    i += 2;
  }
  if (i < end) sum += buf[i]! << 8;
  return sum;
}

/** Fold the carries back into 16 bits and complement: the value to store in a checksum field. */
export function foldChecksum(sum: number): number {
  // The running sum can exceed 32 bits, so fold with arithmetic rather than `>>>`.
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

/** Sum of the IPv4 pseudo-header (RFC 793 / RFC 768) for TCP and UDP checksums. */
export function pseudoHeaderSum(src: number, dst: number, protocol: number, length: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + protocol + length;
}

/** Checksum of buf[off, off+len); a range that already contains a correct checksum yields 0. */
export function internetChecksum(buf: Uint8Array, off: number, len: number): number {
  return foldChecksum(onesSum(buf, off, len));
}

/** Where the checksum field sits in a TCP (protocol 6), UDP (17) or ICMPv6 (58) header. */
function l4ChecksumField(proto: number): number {
  return proto === 6 ? 16 : proto === 58 ? 2 : 6;
}

/** Sum buf[off, off + len) onto `initial` and store it at the protocol's field, zeroed first. */
function storeL4Checksum(buf: Uint8Array, off: number, len: number, proto: number, initial: number): void {
  const at = off + l4ChecksumField(proto);
  buf[at] = 0;
  buf[at + 1] = 0;
  let sum = foldChecksum(onesSum(buf, off, len, initial));
  // A zero UDP checksum means "none" (and over IPv6 is forbidden, RFC 8200 8.1): send all ones.
  if (sum === 0 && proto === 17) sum = 0xffff;
  buf[at] = sum >>> 8;
  buf[at + 1] = sum & 0xff;
}

/** Compute the TCP or UDP checksum of the segment at buf[off, off + len) from scratch, in place. */
export function writeL4Checksum(
  buf: Uint8Array,
  off: number,
  len: number,
  src: number,
  dst: number,
  proto: number,
): void {
  storeL4Checksum(buf, off, len, proto, pseudoHeaderSum(src, dst, proto, len));
}

/**
 * Compute the TCP or UDP checksum of buf[off, off + len) in place from a pseudo-header sum the
 * caller already has (either family's).
 */
export function writeL4ChecksumFrom(
  buf: Uint8Array,
  off: number,
  len: number,
  proto: number,
  pseudo: number,
): void {
  storeL4Checksum(buf, off, len, proto, pseudo);
}

/**
 * Finish a partial TCP/UDP checksum (a device's CHECKSUM_PARTIAL: the field holds only the
 * pseudo-header sum, so summing the segment completes it). False if the field lies outside it.
 */
export function completePartialL4Checksum(buf: Uint8Array, off: number, len: number, proto: number): boolean {
  const at = off + l4ChecksumField(proto);
  if (at + 2 > off + len) return false;
  let sum = foldChecksum(onesSum(buf, off, len));
  if (sum === 0 && proto === 17) sum = 0xffff;
  buf[at] = sum >>> 8;
  buf[at + 1] = sum & 0xff;
  return true;
}

/**
 * Sum of the IPv6 pseudo-header (RFC 8200 8.1) for TCP, UDP and ICMPv6: both addresses (16 bytes
 * each at src[so] and dst[do_]), the upper-layer length as 32 bits and the next header value.
 * With a routing header the destination is the final one; this stack refuses routing headers
 * with segments left, so it is always the IPv6 header's.
 */
export function pseudoHeaderSum6(
  src: Uint8Array,
  srcOff: number,
  dst: Uint8Array,
  dstOff: number,
  protocol: number,
  length: number,
): number {
  return onesSum(
    src,
    srcOff,
    16,
    onesSum(dst, dstOff, 16, protocol + Math.floor(length / 0x10000) + (length & 0xffff)),
  );
}

/**
 * Compute the TCP (6), UDP (17) or ICMPv6 (58) checksum of buf[off, off + len) over the IPv6
 * pseudo-header, in place.
 */
export function writeL4Checksum6(
  buf: Uint8Array,
  off: number,
  len: number,
  src: Uint8Array,
  dst: Uint8Array,
  proto: number,
): void {
  storeL4Checksum(buf, off, len, proto, pseudoHeaderSum6(src, 0, dst, 0, proto, len));
}

/** True when the TCP, UDP or ICMPv6 message at buf[off, off + len) carries a correct IPv6 checksum. */
export function l4Checksum6Ok(
  buf: Uint8Array,
  off: number,
  len: number,
  src: Uint8Array,
  dst: Uint8Array,
  proto: number,
): boolean {
  return foldChecksum(onesSum(buf, off, len, pseudoHeaderSum6(src, 0, dst, 0, proto, len))) === 0;
}
