import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from './fc.ts';

test('property tests draw lengths up to the maxLength they name', () => {
  const lengths = fc
    .sample(fc.uint8Array({ maxLength: 3000 }), { numRuns: 200, seed: 1 })
    .map((b) => b.length);
  assert.ok(Math.max(...lengths) > 2000, `longest draw ${Math.max(...lengths)}`);
  assert.ok(lengths.filter((n) => n >= 128).length > 100, 'most draws reach the 32-bit checksum path');
  // Without a maxLength the small default stays, so unbounded arbitraries do not explode.
  assert.ok(fc.sample(fc.array(fc.nat()), { numRuns: 200, seed: 1 }).every((a) => a.length <= 20));
});
