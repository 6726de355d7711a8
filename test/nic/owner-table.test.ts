import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { OwnerTable } from '../../src/nic/worker/owner-table.ts';

type Key = [number, number, number, number];

test('an owner table lists what was added until it is removed, for any address sign', () => {
  const t = new OwnerTable(OwnerTable.create(16));
  const a: Key = [0x0a000001, 80, 0x0a000002, 40000];
  const b: Key = [0xc0a80001 | 0, 80, 0xc0a80002, 40000];
  const c: Key = [0x0a000001, 80, 0x0a000002, 40001];
  assert.ok(t.add(...a));
  assert.ok(t.add(...b));
  assert.ok(t.has(...a));
  assert.ok(t.has(0xc0a80001 >>> 0, 80, 0xc0a80002 | 0, 40000), 'u32 or i32 addresses alike');
  assert.equal(t.has(...c), false, 'another remote port');
  assert.equal(t.has(0x0a000002, 40000, 0x0a000001, 80), false, 'the reverse direction');
  assert.ok(t.add(...a), 'a second add is harmless');
  assert.equal(t.size, 2);
  t.remove(...a);
  assert.equal(t.has(...a), false);
  assert.ok(t.has(...b));
  t.markDead();
  assert.equal(t.has(...b), false, 'a dead worker claims nothing');
  assert.ok(t.dead);
});

test('a full table refuses, and tombstones are compacted away instead of filling it', () => {
  const t = new OwnerTable(OwnerTable.create(32));
  // 64 entries, at most 3/4 used.
  let added = 0;
  for (let i = 0; i < 100; i++) if (t.add(1, i, 2, 9)) added++;
  assert.equal(added, 48, 'three quarters of 64 entries');
  assert.equal(t.add(1, 1000, 2, 9), false, 'full');
  // Replace every entry, one at a time, three times over: tombstones pile up and are compacted.
  for (let gen = 1; gen <= 3; gen++) {
    for (let i = 0; i < 48; i++) {
      t.remove(1, (gen - 1) * 1000 + i, 2, 9);
      assert.ok(t.add(1, gen * 1000 + i, 2, 9), `room again after a removal (${gen}/${i})`);
    }
  }
  for (let i = 0; i < 48; i++) {
    assert.equal(t.has(1, 2000 + i, 2, 9), false, 'a replaced entry is gone');
    assert.ok(t.has(1, 3000 + i, 2, 9));
  }
  assert.equal(t.size, 48);
});

test('an owner table agrees with a Map under any sequence of adds and removes', () => {
  const key = fc.tuple(
    fc.constantFrom(0x0a000001, 0xfe000001 | 0),
    fc.integer({ min: 0, max: 40 }),
    fc.constantFrom(0x0a000002, 0x0a000003),
    fc.integer({ min: 0, max: 3 }),
  );
  const op = fc.tuple(fc.boolean(), key);
  fc.assert(
    fc.property(fc.array(op, { minLength: 200, maxLength: 600 }), (ops) => {
      const t = new OwnerTable(OwnerTable.create(64));
      const model = new Set<string>();
      for (const [add, k] of ops) {
        const id = k.map((x) => x >>> 0).join(':');
        if (add) {
          if (t.add(...k)) model.add(id);
          else assert.ok(model.size >= 96, 'refused only when full');
        } else {
          t.remove(...k);
          model.delete(id);
        }
        assert.equal(t.size, model.size);
      }
      for (const [, k] of ops) assert.equal(t.has(...k), model.has(k.map((x) => x >>> 0).join(':')));
    }),
    { numRuns: 200 },
  );
});

test('another thread reads what the owner wrote', async () => {
  const { Worker } = await import('node:worker_threads');
  const t = new OwnerTable(OwnerTable.create(16));
  t.add(0x0a000001, 80, 0x0a000002, 40000);
  const src = `
    const { workerData, parentPort } = require('node:worker_threads');
    const w = new Int32Array(workerData);
    parentPort.postMessage(Array.from(w.subarray(0, 4)));
  `;
  const w = new Worker(src, { eval: true, workerData: t.sab });
  const [header] = (await new Promise((resolve) => w.once('message', (m) => resolve([m])))) as [number[]];
  await w.terminate();
  assert.deepEqual(header, [0, 0, 1, 1], 'version even, alive, one live entry, one used');
});
