/** What owner-table.test.ts's race and its reader thread (owner-table-reader.ts) share. */

/** Words of the control array. */
export const CTL = {
  /** The last climbing key the owner listed. */
  PROGRESS: 0,
  /** Set by the owner when it is done writing. */
  STOP: 1,
  /** Rounds of reads the reader finished. */
  READS: 2,
  WORDS: 3,
  STABLE_KEYS: 16,
} as const;

/** The reader's bound, whatever the owner does. */
export const READER_MAX_ROUNDS = 2_000_000;

/**
 * Key n (negative: a stable key). Every key has the same addresses and differs in the ports
 * word only, so a read that mixes two entries' words still names one of the two, never a third.
 */
export function keyOf(n: number): [number, number, number, number] {
  if (n < 0) return [0x0a000001, 1, 0x0a000002, -n];
  return [0x0a000001, 1000 + (n >>> 15), 0x0a000002, n & 0x7fff];
}
