import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { type ConnKey, connKeyId } from '../../src/nic/nic.ts';
import { TupleMap } from '../../src/nic/tuple-map.ts';

// IPv4 addresses (as u32 or as the signed int32 some keys carry) and IPv6 handles (above 2^32).
const arbIp = fc.oneof(
  fc.integer({ min: 0, max: 0xffffffff }),
  fc.integer({ min: -0x80000000, max: -1 }),
  fc.integer({ min: 0x1_0000_0000, max: 0x1_0000_0000 + 50 }),
);
// Few distinct ports and addresses, so that keys repeat and hashes share chains.
const arbKey: fc.Arbitrary<ConnKey> = fc.record({
  localIp: fc.oneof(arbIp, fc.constant(167772161)),
  localPort: fc.integer({ min: 0, max: 3 }),
  remoteIp: fc.oneof(arbIp, fc.constant(167772162)),
  remotePort: fc.integer({ min: 0, max: 3 }),
});
type Op = { op: 'set' | 'delete' | 'deleteIf' | 'get'; key: ConnKey; value: number };
const arbOp: fc.Arbitrary<Op> = fc.record({
  op: fc.constantFrom('set', 'delete', 'deleteIf', 'get'),
  key: arbKey,
  value: fc.integer(),
});

describe('TupleMap', () => {
  test('200 to 2,000 random sets, deletes (also only of a given value) and gets agree with a Map keyed by connKeyId, with spare entries or without', () => {
    fc.assert(
      fc.property(
        fc.array(arbOp, { minLength: 200, maxLength: 2000, size: 'max' }),
        fc.boolean(),
        (ops, spares) => {
          const m = new TupleMap<number>(spares);
          const ref = new Map<string, number>();
          for (const o of ops) {
            const id = connKeyId(o.key);
            if (o.op === 'set') {
              m.set(o.key, o.value);
              ref.set(id, o.value);
            } else if (o.op === 'delete') assert.equal(m.delete(o.key), ref.delete(id));
            else if (o.op === 'deleteIf') {
              // Half the time the value the key has (when it has one), else most likely another.
              const v = o.value % 2 === 0 && ref.has(id) ? ref.get(id)! : o.value;
              assert.equal(m.deleteIf(o.key, v), ref.get(id) === v && ref.delete(id));
            }
            assert.equal(m.get(o.key), ref.get(id));
            assert.equal(m.has(o.key), ref.has(id));
            assert.equal(m.size, ref.size);
          }
          const seen = new Map<string, number>();
          for (const [k, v] of m) seen.set(connKeyId(k), v);
          assert.deepEqual(seen, ref);
          assert.deepEqual([...m.values()].sort(), [...ref.values()].sort());
          m.clear();
          assert.equal(m.size, 0);
          assert.equal([...m.values()].length, 0);
        },
      ),
      { numRuns: 50 },
    );
  });

  test('an IPv4 address given signed or unsigned names the same key', () => {
    const m = new TupleMap<string>();
    m.set({ localIp: 0xc0a80001, localPort: 1, remoteIp: 0xc0a80002, remotePort: 2 }, 'a');
    assert.equal(
      m.get({ localIp: 0xc0a80001 | 0, localPort: 1, remoteIp: 0xc0a80002 | 0, remotePort: 2 }),
      'a',
    );
    assert.equal(
      m.get({ localIp: 0xc0a80001, localPort: 2, remoteIp: 0xc0a80002, remotePort: 1 }),
      undefined,
    );
  });

  test('a map that keeps spares makes no entry for tuples that come back, nor for new ones while it has spares', () => {
    const m = new TupleMap<object>(true);
    const key = (i: number): ConnKey => ({
      localIp: 0x0a000001,
      localPort: 1000 + i,
      remoteIp: 0x0a000002,
      remotePort: 80,
    });
    for (let i = 0; i < 300; i++) m.set(key(i), { i });
    for (let round = 0; round < 10; round++) {
      // As a worker's connections leaving (a move away) and coming back, or others coming in.
      for (let i = 0; i < 300; i++) assert.ok(m.delete(key(i)));
      assert.equal(m.size, 0);
      const base = round % 2 === 0 ? 0 : 5000;
      for (let i = 0; i < 300; i++) m.set(key(base + i), { i: base + i });
      for (let i = 0; i < 300; i++) assert.deepEqual(m.get(key(base + i)), { i: base + i });
      assert.equal(m.get(key(round % 2 === 0 ? 5000 : 0)), undefined);
      assert.equal(m.size, 300);
      // Rename the keys back for the next round's deletes.
      for (let i = 0; i < 300; i++) assert.ok(m.delete(key(base + i)));
      for (let i = 0; i < 300; i++) m.set(key(i), { i });
    }
    assert.equal(m.entriesMade, 300, 'an entry per tuple and move before');
    // What the spares held is gone from them: no deleted value is reachable through the map.
    assert.deepEqual(
      [...m.values()].map((v) => (v as { i: number }).i).sort((a, b) => a - b),
      [...Array(300).keys()],
    );
  });

  test('a map emptied of more tuples than SPARE_ENTRIES keeps them all as spares for the next ones', () => {
    // As a worker whose 3,000 connections all move away, then 3,000 others (or the same) come:
    // bounded by the tuples it held at each delete, the map kept 1,500 spares and made 1,500
    // entries again on every such round (10,000 connections: 5,000 a move and map).
    const m = new TupleMap<number>(true);
    const key = (i: number): ConnKey => ({
      localIp: 0x0a000001,
      localPort: i & 0xffff,
      remoteIp: 0x0a000002 + (i >> 16),
      remotePort: 80,
    });
    const N = 3000;
    for (let round = 0; round < 4; round++) {
      const base = round % 2 === 0 ? 0 : 70_000;
      for (let i = 0; i < N; i++) m.set(key(base + i), base + i);
      assert.equal(m.size, N);
      for (let i = 0; i < N; i++) assert.equal(m.get(key(base + i)), base + i);
      for (let i = 0; i < N; i++) assert.ok(m.delete(key(base + i)));
      assert.equal(m.size, 0);
    }
    assert.equal(m.entriesMade, N, 'half again per round before');
  });

  test('tuples that all leave and come back, as a move of 10,000 does, touch no table: the buckets grow only to the first fill', () => {
    // A WorkerNic's handles by tuple: 10,000 set at one NIC and deleted at the other on every
    // move. As a `Map` by hash, each round's deletes shrank its table and the sets grew it again
    // (a quarter of a move's main-thread CPU, profiled); the buckets stay at their peak.
    const a = new TupleMap<number>(true);
    const b = new TupleMap<number>(true);
    const key = (i: number): ConnKey => ({
      localIp: 0x0a000001,
      localPort: 1024 + (i % 50_000),
      remoteIp: 0x0a000002 + Math.floor(i / 50_000),
      remotePort: 80,
    });
    const N = 10_000;
    for (let i = 0; i < N; i++) a.set(key(i), i);
    const first = a.bucketsGrown;
    assert.ok(first > 0 && first <= 11, `grew ${first} times to hold ${N}`);
    for (let round = 0; round < 6; round++) {
      const [src, dst] = round % 2 === 0 ? [a, b] : [b, a];
      for (let i = 0; i < N; i++) {
        dst.set(key(i), i);
        assert.ok(src.deleteIf(key(i), i));
      }
      assert.equal(src.size, 0);
      assert.equal(dst.size, N);
    }
    assert.equal(a.bucketsGrown, first, 'the first map grew again');
    assert.equal(b.bucketsGrown, first, 'the second grew past its first fill');
    for (let i = 0; i < N; i++) assert.equal(a.get(key(i)), i);
  });

  test('reserve makes room for a batch at once: set one by one after it, the buckets do not grow again; every tuple is found', () => {
    const m = new TupleMap<number>(true);
    const key = (i: number): ConnKey => ({
      localIp: 0x0a000001,
      localPort: 1024 + i,
      remoteIp: 0x0a000002,
      remotePort: 80,
    });
    for (let i = 0; i < 5; i++) m.set(key(i), i);
    assert.equal(m.bucketsGrown, 0);
    // Already room: nothing made.
    m.reserve(3);
    assert.equal(m.bucketsGrown, 0);
    const N = 10_000;
    m.reserve(N);
    assert.equal(m.bucketsGrown, 1, 'grown once, to hold what it has and the batch');
    for (let i = 5; i < 5 + N; i++) m.set(key(i), i);
    assert.equal(m.bucketsGrown, 1, 'the batch set into it made it grow again');
    assert.equal(m.size, N + 5);
    for (let i = 0; i < N + 5; i++) assert.equal(m.get(key(i)), i);
    assert.deepEqual(
      [...m.values()].slice(0, 6),
      [0, 1, 2, 3, 4, 5],
      'iteration keeps the order of insertion',
    );
  });

  test('iteration is in the order of insertion; an entry deleted before its turn is skipped; oldestKey is the first', () => {
    const m = new TupleMap<number>(true);
    const key = (i: number): ConnKey => ({ localIp: 1, localPort: i, remoteIp: 2, remotePort: 80 });
    for (const i of [5, 3, 9, 1, 7]) m.set(key(i), i);
    m.set(key(3), 33); // set again: keeps its place
    assert.deepEqual([...m.values()], [5, 33, 9, 1, 7]);
    assert.equal(m.oldestKey()?.localPort, 5);
    const seen: number[] = [];
    for (const [k, v] of m) {
      seen.push(v);
      if (v === 5) {
        m.delete(key(9));
        m.delete(k);
      }
    }
    assert.deepEqual(seen, [5, 33, 1, 7]);
    assert.equal(m.oldestKey()?.localPort, 3);
    m.delete(key(3));
    m.set(key(3), 3); // deleted and set again: the newest
    assert.deepEqual([...m.values()], [1, 7, 3]);
    assert.deepEqual(
      m.list().filter((_, i) => i % 2 === 1),
      [1, 7, 3],
    );
    m.clear();
    assert.equal(m.oldestKey(), undefined);
    assert.deepEqual([...m.values()], []);
  });
});
