/**
 * SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed pseudorandom function of short messages,
 * the one Linux keys its ISNs, SYN cookies and port offsets with (secure_tcp_seq,
 * siphash_3u32). A SYN's ISN is on the path of every passive open, and hashing its 12 bytes
 * through node:crypto's createHash costs an object, a native call and a digest buffer per SYN;
 * this costs a few dozen integer operations and allocates nothing.
 *
 * 64-bit words are kept as two unsigned 32-bit halves (BigInt would allocate on every step).
 */

/** A 128-bit key as four little-endian 32-bit words: k0 low, k0 high, k1 low, k1 high. */
export type SipKey = Uint32Array;

/** The key whose 16 bytes are `bytes` (little-endian words, as the reference reads them). */
export function sipKey(bytes: Uint8Array): SipKey {
  if (bytes.length !== 16) throw new RangeError(`a SipHash key is 16 bytes, not ${bytes.length}`);
  const k = new Uint32Array(4);
  for (let i = 0; i < 4; i++) k[i] = readLe32(bytes, 4 * i);
  return k;
}

function readLe32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

// The state v0..v3 as halves; module-level so that a hash allocates nothing (one thread runs
// one hash at a time: nothing here awaits).
let v0l = 0;
let v0h = 0;
let v1l = 0;
let v1h = 0;
let v2l = 0;
let v2h = 0;
let v3l = 0;
let v3h = 0;
/** The high half of the last result (sipHash24 returns the low one). */
let outHigh = 0;

function sipRound(): void {
  let l: number;
  let h: number;
  // v0 += v1; v1 <<<= 13; v1 ^= v0; v0 <<<= 32
  l = (v0l + v1l) >>> 0;
  v0h = (v0h + v1h + (l < v0l ? 1 : 0)) >>> 0;
  v0l = l;
  h = ((v1h << 13) | (v1l >>> 19)) >>> 0;
  l = ((v1l << 13) | (v1h >>> 19)) >>> 0;
  v1h = (h ^ v0h) >>> 0;
  v1l = (l ^ v0l) >>> 0;
  h = v0h;
  v0h = v0l;
  v0l = h;
  // v2 += v3; v3 <<<= 16; v3 ^= v2
  l = (v2l + v3l) >>> 0;
  v2h = (v2h + v3h + (l < v2l ? 1 : 0)) >>> 0;
  v2l = l;
  h = ((v3h << 16) | (v3l >>> 16)) >>> 0;
  l = ((v3l << 16) | (v3h >>> 16)) >>> 0;
  v3h = (h ^ v2h) >>> 0;
  v3l = (l ^ v2l) >>> 0;
  // v0 += v3; v3 <<<= 21; v3 ^= v0
  l = (v0l + v3l) >>> 0;
  v0h = (v0h + v3h + (l < v0l ? 1 : 0)) >>> 0;
  v0l = l;
  h = ((v3h << 21) | (v3l >>> 11)) >>> 0;
  l = ((v3l << 21) | (v3h >>> 11)) >>> 0;
  v3h = (h ^ v0h) >>> 0;
  v3l = (l ^ v0l) >>> 0;
  // v2 += v1; v1 <<<= 17; v1 ^= v2; v2 <<<= 32
  l = (v2l + v1l) >>> 0;
  v2h = (v2h + v1h + (l < v2l ? 1 : 0)) >>> 0;
  v2l = l;
  h = ((v1h << 17) | (v1l >>> 15)) >>> 0;
  l = ((v1l << 17) | (v1h >>> 15)) >>> 0;
  v1h = (h ^ v2h) >>> 0;
  v1l = (l ^ v2l) >>> 0;
  h = v2h;
  v2h = v2l;
  v2l = h;
}

/** One message word m (halves ml, mh) through the two compression rounds. */
function compress(ml: number, mh: number): void {
  v3l = (v3l ^ ml) >>> 0;
  v3h = (v3h ^ mh) >>> 0;
  sipRound();
  sipRound();
  v0l = (v0l ^ ml) >>> 0;
  v0h = (v0h ^ mh) >>> 0;
}

/**
 * SipHash-2-4 of `msg[from, to)` under `key`: the low 32 bits of the 64-bit result (the first
 * four bytes of the reference's little-endian output; Linux's u32 of siphash_3u32 is these).
 * The high 32 bits are `sipHashHigh()` until the next call.
 */
export function sipHash24(key: SipKey, msg: Uint8Array, from = 0, to = msg.length): number {
  const k0l = key[0]!;
  const k0h = key[1]!;
  const k1l = key[2]!;
  const k1h = key[3]!;
  // "somepseudorandomlygeneratedbytes", the reference's initial constants.
  v0l = (k0l ^ 0x70736575) >>> 0;
  v0h = (k0h ^ 0x736f6d65) >>> 0;
  v1l = (k1l ^ 0x6e646f6d) >>> 0;
  v1h = (k1h ^ 0x646f7261) >>> 0;
  v2l = (k0l ^ 0x6e657261) >>> 0;
  v2h = (k0h ^ 0x6c796765) >>> 0;
  v3l = (k1l ^ 0x79746573) >>> 0;
  v3h = (k1h ^ 0x74656462) >>> 0;
  const len = to - from;
  const whole = from + (len & ~7);
  let i = from;
  for (; i < whole; i += 8) compress(readLe32(msg, i), readLe32(msg, i + 4));
  // The last word: the tail's bytes, little-endian, and the length's low byte on top.
  let ml = 0;
  let mh = (len & 0xff) << 24;
  const rest = to - i;
  for (let j = 0; j < rest; j++) {
    const b = msg[i + j]!;
    if (j < 4) ml |= b << (8 * j);
    else mh |= b << (8 * (j - 4));
  }
  compress(ml >>> 0, mh >>> 0);
  v2l = (v2l ^ 0xff) >>> 0;
  sipRound();
  sipRound();
  sipRound();
  sipRound();
  outHigh = (v0h ^ v1h ^ v2h ^ v3h) >>> 0;
  return (v0l ^ v1l ^ v2l ^ v3l) >>> 0;
}

/** The high 32 bits of the last sipHash24's result. */
export function sipHashHigh(): number {
  return outHigh;
}
