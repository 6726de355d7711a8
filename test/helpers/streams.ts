import { createHash } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { SeededRandom } from '../../src/core/random.ts';

/** Deterministic bytes for tests: `n` bytes from a seeded generator. */
export function randomBytes(seed: number, n: number): Buffer {
  return Buffer.from(new SeededRandom(seed).fill(new Uint8Array(n)));
}

export function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/** Collect everything a stream yields until 'end'; rejects on 'error'. */
export function collect(s: Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    s.on('end', () => resolve(Buffer.concat(parts)));
    s.on('error', reject);
  });
}

/** Write `data` in chunks honouring backpressure, then end. */
export async function writeAll(s: Duplex, data: Buffer, chunk = 64 * 1024): Promise<void> {
  for (let off = 0; off < data.length; off += chunk) {
    if (!s.write(data.subarray(off, off + chunk))) await new Promise((r) => s.once('drain', r));
  }
  s.end();
}
