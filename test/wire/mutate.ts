/**
 * Mutations of real frames for the hostile-input tests: bit flips, truncation, trailing garbage,
 * and any value written into the bytes that steer a decoder (lengths, next headers, option TLVs),
 * each group of such offsets drawn as often as a flip.
 */
import fc from '../helpers/fc.ts';

export function mutations(steer: readonly (readonly number[])[]) {
  return fc.oneof(
    fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
    fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
    fc.record({ kind: fc.constant('extend' as const), bytes: fc.uint8Array({ maxLength: 64 }) }),
    ...steer.map((at) =>
      fc.record({
        kind: fc.constant('set' as const),
        at: fc.constantFrom(...at),
        value: fc.integer({ min: 0, max: 255 }),
      }),
    ),
  );
}

export type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'extend'; bytes: Uint8Array }
  | { kind: 'set'; at: number; value: number };

/** A mutated copy of `frame`. */
export function mutate(frame: Uint8Array, muts: readonly Mutation[]): Uint8Array {
  let b = frame.slice();
  for (const m of muts) {
    if (b.length === 0) break;
    if (m.kind === 'flip') b[m.at % b.length]! ^= 1 << m.bit;
    else if (m.kind === 'truncate') b = b.slice(0, m.at % (b.length + 1));
    else if (m.kind === 'set') {
      if (m.at < b.length) b[m.at] = m.value;
    } else {
      const e = new Uint8Array(b.length + m.bytes.length);
      e.set(b);
      e.set(m.bytes, b.length);
      b = e;
    }
  }
  return b;
}
