/**
 * A TCP state, and a TCP connection object, are born on the layout a fraction in any of their
 * number fields leaves them (widenTcpState, widenTcpConnection). V8 keeps a number field as a
 * small integer until it first holds a fraction or a value beyond 2^30, then deprecates the
 * layout and migrates every object still on it at that object's next store: a crash's rebuild of
 * 10,000 connections paid one such migration per state and per connection object inside the
 * charged failover, the first fractions coming from the charged (fractional) clock.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { TcpEngine } from '../../src/stack/tcp/tcp-connection.ts';
import { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import { createNeighborState } from '../../src/state/neighbor-state.ts';
import { createPathState } from '../../src/state/path-state.ts';
import type { TcpState } from '../../src/state/tcp-state.ts';
import { recordOf, sampleConn } from './helpers.ts';

setFlagsFromString('--allow-natives-syntax');
const sameMap = new Function('a', 'b', 'return %HaveSameMap(a, b)') as (a: object, b: object) => boolean;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

function newState(): TcpState {
  const nb = createNeighborState({ srcMac: 0x020000000001, vlanId: -1, ip: 0x0a000002 }, 0x020000000002, 0);
  return sampleConn(createPathState({ localIp: 0x0a000001, remoteIp: 0x0a000002 }, nb, 0, 1500));
}

const PARTS = ['const', 'cached', 'delegated', 'soft', 'cubic'] as const;
const partOf = (t: TcpState, part: (typeof PARTS)[number]): object =>
  part === 'cubic' ? t.soft.cubic : t[part];

/** The number fields of `pick(made())` whose layout a stored value changes: none, for every value. */
function layoutChanges<T extends object>(made: () => T, pick: (t: T) => object): string[] {
  const changed: string[] = [];
  const probe = pick(made()) as Record<string, unknown>;
  for (const key of Object.keys(probe)) {
    if (typeof probe[key] !== 'number') continue;
    // A time on a charged clock, a sequence number past 2^31, and back to a small integer.
    for (const v of [1234.5678, 3_000_000_000, -1]) {
      const a = pick(made()) as Record<string, unknown>;
      const b = pick(made());
      a[key] = v;
      if (!sameMap(a, b)) changed.push(`${key} = ${v}`);
    }
  }
  return changed;
}

test('the widened layouts outlive a collection that finds no state or connection alive', () => {
  // V8 holds a layout's transitions weakly: with the widening's sample dropped, a collection
  // before the first connection (a worker thread's start) dropped the widened layouts, and the
  // next states and connections were born on small-integer fields again (in a WorkerNic failover
  // every moved connection was migrated on the surviving worker). First in this file: nothing
  // made here is alive yet.
  gc();
  gc();
  const made = (): TcpConnection => new TcpConnection(null as unknown as TcpEngine, newState());
  const changed = [
    ...layoutChanges(made, (c) => c).map((f) => `connection ${f}`),
    ...layoutChanges(made, (c) => c.rack).map((f) => `rack ${f}`),
  ];
  for (const part of PARTS)
    changed.push(...layoutChanges(made, (c) => partOf(c.state, part)).map((f) => `${part} ${f}`));
  assert.deepEqual(changed, []);
});

test('a new state keeps its layout whatever number its fields take', () => {
  const s = newState();
  assert.ok(sameMap(s.soft, newState().soft), 'two new states share a layout');
  assert.deepEqual(
    layoutChanges(newState, (t) => t.delegated),
    [],
  );
  assert.deepEqual(
    layoutChanges(newState, (t) => t.soft),
    [],
  );
  assert.deepEqual(
    layoutChanges(newState, (t) => t.soft.cubic),
    [],
  );
});

test('a new connection object, and its RACK log, keep their layout whatever number they take', () => {
  // Only the fields are looked at: the constructor stores the engine and reads the state.
  const made = (): TcpConnection => new TcpConnection(null as unknown as TcpEngine, newState());
  assert.deepEqual(
    layoutChanges(made, (c) => c),
    [],
  );
  assert.deepEqual(
    layoutChanges(made, (c) => c.rack),
    [],
  );
});

/**
 * A state as a thread takes it from a connection's transfer record (a move to or from a worker,
 * not pooled): TransferRecord's generated reader builds it as literals, not by createTcpState.
 */
function readState(): TcpState {
  const s = newState();
  const { rec, send, recv } = recordOf(s);
  return rec.read(1000.25, s.path, send, recv);
}

test('a state read from a transfer record is on the layouts a new state has, and keeps them', () => {
  // One layout for a worker's states and the host's whichever way they came: the engine's
  // accesses see one, and the widening at load covers both.
  // Made before this file's first record read: a read that changed a layout leaves it apart.
  const before = newState();
  const read = readState();
  const made = newState();
  for (const part of PARTS)
    assert.ok(sameMap(partOf(before, part), partOf(made, part)), `${part}: a record read changed no layout`);
  for (const part of PARTS)
    assert.ok(sameMap(partOf(read, part), partOf(made, part)), `${part}: read and new share a layout`);
  assert.ok(sameMap(read, made), 'the state object itself');
  for (const part of PARTS)
    assert.deepEqual(
      layoutChanges(readState, (t) => partOf(t, part)),
      [],
      part,
    );
  for (const part of PARTS)
    assert.deepEqual(
      layoutChanges(newState, (t) => partOf(t, part)),
      [],
      part,
    );
});

/**
 * Heap bytes of one `cached` object of a state: many states made, then each given one shared
 * object in its place, the difference per state after a full collection.
 */
function cachedBytes(n = 5_000): { bytes: number; fields: number } {
  const states: TcpState[] = [];
  for (let i = 0; i < n; i++) states.push(newState());
  gc();
  gc();
  const before = process.memoryUsage().heapUsed;
  const shared = states[0]!.cached;
  for (const s of states) (s as { cached: TcpState['cached'] }).cached = shared;
  gc();
  gc();
  const after = process.memoryUsage().heapUsed;
  // Kept alive to the second reading.
  assert.equal(states.length, n);
  return { bytes: (before - after) / (n - 1), fields: Object.keys(shared).length };
}

test("a state's cached settings are stored in their object, not boxed each on its own", () => {
  // A field on a fraction's layout keeps its number in a heap box of its own (16 bytes, 64-bit,
  // as Node runs): every cached setting is a small integer (or a boolean), on a layout that takes
  // any value, stored in the field. 360 bytes an object with every number field boxed.
  // The heap's reading moves by tens of bytes an object with what else the process made (165-190
  // seen against 152 alone), so the least of three readings is taken, against a bound that four
  // boxed fields would pass: the object (map, properties, elements and one word per field), a word
  // of slack, and 64 bytes of the reading's noise.
  const readings = [cachedBytes(), cachedBytes(), cachedBytes()];
  const bytes = Math.min(...readings.map((r) => r.bytes));
  const fields = readings[0]!.fields;
  const bound = 8 * (3 + fields) + 8 + 64;
  assert.ok(bytes <= bound, `${bytes.toFixed(1)} bytes an object, ${fields} fields, at most ${bound}`);
});
