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

/*
 * The state v0..v3 as 32-bit halves in a typed array: a store wraps to 32 bits by itself, and
 * nothing is boxed (module-level numbers above 2^30 were heap numbers, one allocation a write).
 * One thread runs one hash at a time: nothing here awaits.
 */
const V = new Uint32Array(8);
/** The high 32 bits of the last result (sipHash24 returns the low one). */
const HIGH = new Uint32Array(1);
const V0L = 0;
const V0H = 1;
const V1L = 2;
const V1H = 3;
const V2L = 4;
const V2H = 5;
const V3L = 6;
const V3H = 7;

/** a += b on the 64-bit words whose halves are at `al`/`al + 1` and `bl`/`bl + 1`. */
function add(v: Uint32Array, al: number, bl: number): void {
  const l = v[al]! + v[bl]!;
  v[al + 1] = v[al + 1]! + v[bl + 1]! + (l > 0xffffffff ? 1 : 0);
  v[al] = l;
}

/** x = (x <<< b) ^ y, for 0 < b < 32, halves at `xl`/`xl + 1` and `yl`/`yl + 1`. */
function rotXor(v: Uint32Array, xl: number, b: number, yl: number): void {
  const l = v[xl]!;
  const h = v[xl + 1]!;
  v[xl + 1] = ((h << b) | (l >>> (32 - b))) ^ v[yl + 1]!;
  v[xl] = ((l << b) | (h >>> (32 - b))) ^ v[yl]!;
}

/** x <<<= 32: its halves swap. */
function swap(v: Uint32Array, xl: number): void {
  const l = v[xl]!;
  v[xl] = v[xl + 1]!;
  v[xl + 1] = l;
}

function sipRound(v: Uint32Array): void {
  add(v, V0L, V1L);
  rotXor(v, V1L, 13, V0L);
  swap(v, V0L);
  add(v, V2L, V3L);
  rotXor(v, V3L, 16, V2L);
  add(v, V0L, V3L);
  rotXor(v, V3L, 21, V0L);
  add(v, V2L, V1L);
  rotXor(v, V1L, 17, V2L);
  swap(v, V2L);
}

/** One message word m (halves ml, mh) through the two compression rounds. */
function compress(v: Uint32Array, ml: number, mh: number): void {
  v[V3L] ^= ml;
  v[V3H] ^= mh;
  sipRound(v);
  sipRound(v);
  v[V0L] ^= ml;
  v[V0H] ^= mh;
}

/**
 * SipHash-2-4 of `msg[from, to)` under `key`: the low 32 bits of the 64-bit result (the first
 * four bytes of the reference's little-endian output; Linux's u32 of siphash_3u32 is these).
 * The high 32 bits are `sipHashHigh()` until the next call.
 */
export function sipHash24(key: SipKey, msg: Uint8Array, from = 0, to = msg.length): number {
  const v = V;
  // "somepseudorandomlygeneratedbytes", the reference's initial constants.
  v[V0L] = key[0]! ^ 0x70736575;
  v[V0H] = key[1]! ^ 0x736f6d65;
  v[V1L] = key[2]! ^ 0x6e646f6d;
  v[V1H] = key[3]! ^ 0x646f7261;
  v[V2L] = key[0]! ^ 0x6e657261;
  v[V2H] = key[1]! ^ 0x6c796765;
  v[V3L] = key[2]! ^ 0x79746573;
  v[V3H] = key[3]! ^ 0x74656462;
  const len = to - from;
  const whole = from + (len & ~7);
  let i = from;
  for (; i < whole; i += 8) compress(v, readLe32(msg, i), readLe32(msg, i + 4));
  // The last word: the tail's bytes, little-endian, and the length's low byte on top.
  let ml = 0;
  let mh = (len & 0xff) << 24;
  const rest = to - i;
  for (let j = 0; j < rest; j++) {
    const b = msg[i + j]!;
    if (j < 4) ml |= b << (8 * j);
    else mh |= b << (8 * (j - 4));
  }
  compress(v, ml >>> 0, mh >>> 0);
  v[V2L] ^= 0xff;
  for (let r = 0; r < 4; r++) sipRound(v);
  HIGH[0] = v[V0H]! ^ v[V1H]! ^ v[V2H]! ^ v[V3H]!;
  return (v[V0L]! ^ v[V1L]! ^ v[V2L]! ^ v[V3L]!) >>> 0;
}

/** The high 32 bits of the last sipHash24's result. */
export function sipHashHigh(): number {
  return HIGH[0]!;
}
