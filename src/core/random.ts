/**
 * Randomness is injected so that a simulated scenario replays exactly from its seed.
 * Protocol code asks for numbers only through this interface.
 */
export interface Random {
  /** Uniform in [0, 1). */
  float(): number;
  /** Uniform unsigned 32-bit integer. */
  u32(): number;
  /** Fill `out` with random bytes and return it. */
  fill(out: Uint8Array): Uint8Array;
}

/** xoshiro128** seeded through splitmix32: fast, small state, good enough for simulation. */
export class SeededRandom implements Random {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    let s = seed >>> 0;
    const next = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next();
  }

  u32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  float(): number {
    return this.u32() / 4294967296;
  }

  fill(out: Uint8Array): Uint8Array {
    for (let i = 0; i < out.length; i++) out[i] = this.u32() & 0xff;
    return out;
  }

  /** An independent stream derived from this one (for a sub-component). */
  fork(): SeededRandom {
    return new SeededRandom(this.u32());
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** Cryptographic randomness for real deployments (ISN secrets, SYN-cookie keys). */
export class CryptoRandom implements Random {
  private readonly buf = new Uint32Array(256);
  private pos = 256;
  u32(): number {
    if (this.pos === this.buf.length) {
      crypto.getRandomValues(this.buf);
      this.pos = 0;
    }
    return this.buf[this.pos++]!;
  }
  float(): number {
    return this.u32() / 4294967296;
  }
  fill(out: Uint8Array): Uint8Array {
    return crypto.getRandomValues(out);
  }
  /** Another independent source (nothing to derive: every draw is from the system). */
  fork(): CryptoRandom {
    return new CryptoRandom();
  }
}
