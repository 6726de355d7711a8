/**
 * The reading side of owner-table.test.ts's race: another thread's lookups while the owner writes.
 * workerData: { table, ctl, stable, climbing } (see the test). Reads until `ctl[STOP]` is set or
 * its own bound is reached, then posts what it saw.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { OwnerTable } from '../../src/nic/worker/owner-table.ts';
import { CTL, keyOf, READER_MAX_ROUNDS } from './owner-table-race.ts';

const {
  table,
  ctl: ctlSab,
  window,
} = workerData as { table: SharedArrayBuffer; ctl: SharedArrayBuffer; window: number };
const t = new OwnerTable(table);
const ctl = new Int32Array(ctlSab);
const out = { rounds: 0, checked: 0, missed: [] as string[], ghosts: [] as string[] };
for (let r = 0; r < READER_MAX_ROUNDS && Atomics.load(ctl, CTL.STOP) === 0; r++) {
  // Listed for the whole check: the stable keys, and the climbing keys the owner published and
  // cannot have taken off yet (it removes key g - window when it adds g).
  for (let s = 0; s < CTL.STABLE_KEYS; s++) if (!t.mayHold(...keyOf(-1 - s))) out.missed.push(`stable ${s}`);
  const g = Atomics.load(ctl, CTL.PROGRESS);
  const half = window >> 1;
  for (let k = Math.max(0, g - half); k <= g; k++) {
    const held = t.mayHold(...keyOf(k));
    if (!held && Atomics.load(ctl, CTL.PROGRESS) < k + window) out.missed.push(`climbing ${k} at ${g}`);
    out.checked++;
  }
  // Taken off before this check began and never listed again: a read may doubt, never say yes.
  // The last half window of them, whose tombstones the owner is likeliest to be reusing.
  for (let k = Math.max(0, g - window - half); k < g - window; k++) {
    if (t.has(...keyOf(k))) out.ghosts.push(`removed ${k} at ${g}`);
    out.checked++;
  }
  Atomics.add(ctl, CTL.READS, 1);
  out.rounds++;
  if (out.missed.length + out.ghosts.length > 20) break;
}
parentPort!.postMessage(out);
