/**
 * Objects made per connection beside its state (the connection table's entries, the hard states a
 * crash's salvage reads, Node's timers behind a real clock's) are born on the layout a fraction in
 * any of their number fields leaves them, as the state and the connection object are
 * (test/state/layout.test.ts). V8 keeps a number field as a small integer until it first holds a
 * heap number, then deprecates the layout and migrates every object still on it at that object's
 * next store; a port or address read from a state's widened constants is a heap number where V8
 * has not optimized the read, so the first such store came inside a failover and cost one
 * migration per connection alive.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { emptyHardState } from '../../src/nic/hard-state.ts';
import { spawnWorker } from '../../src/nic/worker/spawn.ts';
import { ConnTable, type TableEntry } from '../../src/stack/tcp/conn-table.ts';

setFlagsFromString('--allow-natives-syntax');
const sameMap = new Function('a', 'b', 'return %HaveSameMap(a, b)') as (a: object, b: object) => boolean;
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** The number fields of `made()` whose layout a stored value changes: none, for every value. */
function layoutChanges<T extends object>(made: () => T): string[] {
  const changed: string[] = [];
  const probe = made() as Record<string, unknown>;
  for (const key of Object.keys(probe)) {
    if (typeof probe[key] !== 'number') continue;
    // A heap number (an address or port read from widened constants), a fraction, past 2^31.
    for (const v of [1234.5678, 3_000_000_000, -1, 80]) {
      const a = made() as Record<string, unknown>;
      const b = made();
      a[key] = v === 80 ? heapNumber(80) : v;
      if (!sameMap(a, b)) changed.push(`${key} = ${v}`);
    }
  }
  return changed;
}

/** A whole number V8 holds as a heap number, as a read of a widened (double) field returns it. */
const heapNumber = (n: number): number => {
  const box = { v: 0.5 };
  box.v = n;
  return box.v;
};

let port = 1000;
function newEntry(): TableEntry {
  const t = new ConnTable();
  const p = port++;
  t.setTag(0x0a000001, p, 0x0a000002, 80, {});
  return t.tagEntry(0x0a000001, p, 0x0a000002, 80)!;
}

test('a connection table entry keeps its layout whatever number its tuple takes', () => {
  gc();
  gc();
  assert.deepEqual(layoutChanges(newEntry), []);
});

test('a hard state keeps its layout whatever number its fields take', () => {
  gc();
  gc();
  assert.deepEqual(layoutChanges(emptyHardState), []);
});

test("a Node timer's delay field takes a fraction without a new layout, in a thread that loaded the clock", async () => {
  // In a thread of its own: this one's timers (the test runner's) may have taken fractions first.
  const w = spawnWorker(new URL('./timeout-layout-worker.ts', import.meta.url));
  const [same] = (await once(w, 'message')) as [boolean];
  await w.terminate();
  assert.equal(same, true, 'a fractional delay put the Timeouts made before it on a new layout');
});
