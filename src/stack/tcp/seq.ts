/**
 * Sequence-number arithmetic modulo 2^32 (RFC 9293 3.4). Comparisons look at the signed 32-bit
 * distance, so they are right as long as the two numbers are less than 2^31 apart, which TCP's
 * window limits guarantee.
 */

export function seqLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}
export function seqLeq(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}
export function seqGt(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}
export function seqGeq(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0;
}
/** a + n as a u32. */
export function seqAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}
/** a - n as a u32. */
export function seqSub(a: number, n: number): number {
  return (a - n) >>> 0;
}
/** Signed distance a - b. */
export function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}
export function seqMax(a: number, b: number): number {
  return seqGt(a, b) ? a : b;
}
export function seqMin(a: number, b: number): number {
  return seqLt(a, b) ? a : b;
}
/** lo <= x < hi modulo 2^32. */
export function seqInRange(x: number, lo: number, hi: number): boolean {
  return seqGeq(x, lo) && seqLt(x, hi);
}
