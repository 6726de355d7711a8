import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { type ConnKey, connKeyId } from '../../src/nic/nic.ts';
import { BatchKeys } from '../../src/nic/worker/batch-keys.ts';

// IPv4 addresses (as u32 or as the signed int32 some keys carry) and IPv6 handles (above 2^32),
// few of each, so that keys repeat and share probe chains.
const arbIp = fc.oneof(
  fc.integer({ min: 0, max: 3 }),
  fc.constantFrom(0xffffffff, -1, 0x80000000, -0x80000000, 167772161),
  fc.integer({ min: 0x1_0000_0000, max: 0x1_0000_0000 + 3 }),
);
const arbKey: fc.Arbitrary<ConnKey> = fc.record({
  localIp: arbIp,
  localPort: fc.integer({ min: 0, max: 3 }),
  remoteIp: arbIp,
  remotePort: fc.integer({ min: 0, max: 3 }),
});

test('BatchKeys, batch after batch in one table: the first key named twice is the one connKeyId finds, and every key is found at its first place', () => {
  const keys = new BatchKeys();
  fc.assert(
    fc.property(fc.array(fc.array(arbKey, { maxLength: 300 }), { minLength: 1, maxLength: 6 }), (batches) => {
      for (const batch of batches) {
        const seen = new Map<string, number>();
        let twice = -1;
        for (let i = 0; i < batch.length; i++) {
          const id = connKeyId(batch[i]!);
          if (seen.has(id)) {
            twice = i;
            break;
          }
          seen.set(id, i);
        }
        assert.equal(keys.reset(batch), twice);
        if (twice >= 0) continue;
        for (const k of batch) assert.equal(keys.indexOf(k), seen.get(connKeyId(k)));
        // A key of another batch is not this one's.
        for (const k of batches.flat()) if (!seen.has(connKeyId(k))) assert.equal(keys.indexOf(k), -1);
      }
      keys.clear();
      for (const k of batches.flat()) assert.equal(keys.indexOf(k), -1);
    }),
    { numRuns: 200 },
  );
});

test('BatchKeys: 10,000 distinct keys (a whole move in one batch) each found at its place, then a smaller batch in the same table', () => {
  const keys = new BatchKeys();
  const big: ConnKey[] = [];
  for (let i = 0; i < 10_000; i++)
    big.push({ localIp: 0x0a000001, localPort: 80, remoteIp: 0x0a000002 + (i >> 12), remotePort: i & 0xfff });
  assert.equal(keys.reset(big), -1);
  for (let i = 0; i < big.length; i++) assert.equal(keys.indexOf(big[i]!), i);
  const small = big.slice(5_000, 5_010).reverse();
  assert.equal(keys.reset(small), -1);
  assert.equal(keys.indexOf(big[0]!), -1);
  for (let i = 0; i < small.length; i++) assert.equal(keys.indexOf(small[i]!), i);
  assert.equal(keys.reset([...small, { ...big[5_003]! }]), small.length);
});
