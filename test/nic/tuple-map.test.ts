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
});
