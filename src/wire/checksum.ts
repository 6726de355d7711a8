/**
 * RFC 1071 Internet checksum.
 *
 * `onesSum` returns an unfolded running sum: JS numbers hold integers exactly up to 2^53, so the
 * carries can pile up in the high bits and be folded once at the end instead of on every word.
 * A sum over a buffer can be continued by passing it as `initial` to the next call, as long as the
 * previous range had an even length (16-bit words must stay aligned to the start of the data; an odd
 * final byte is padded with a zero low byte, as RFC 1071 says).
 */
export function onesSum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  let sum = initial;
  let i = off;
  const end = off + len;
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
