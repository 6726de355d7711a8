import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Nic } from '../../src/nic/nic.ts';
import { placeByFreeCapacity } from '../../src/offload/policy.ts';

/** Only what placement reads of a NIC. */
function nic(id: string, capacity: number, load: number): Nic {
  return { id, capacity, load } as Nic;
}

describe('placeByFreeCapacity', () => {
  test('each connection goes to the NIC with the most room left, so a batch evens out the load', () => {
    const a = nic('a', 10, 6);
    const b = nic('b', 10, 0);
    const c = nic('c', 4, 3);
    const items = Array.from({ length: 12 }, (_, i) => i);
    const { groups, unplaced } = placeByFreeCapacity(items, [a, b, c]);
    assert.deepEqual(unplaced, []);
    const took = (n: Nic) => groups.get(n)?.length ?? 0;
    assert.equal(took(a) + took(b) + took(c), 12);
    // Free before: a 4, b 10, c 1. The roomiest takes each in turn: b alone down to 4, then a and
    // b by turns down to 1 each, c (1 free) never being roomier than both.
    assert.deepEqual([took(a), took(b), took(c)], [3, 9, 0]);
    assert.deepEqual(
      [a, b, c].map((n) => n.capacity - n.load - took(n)),
      [1, 1, 1],
    );
  });

  test('what fits nowhere is returned unplaced, in order', () => {
    const a = nic('a', 2, 1);
    const b = nic('b', 1, 1);
    const { groups, unplaced } = placeByFreeCapacity(['x', 'y', 'z'], [a, b]);
    assert.deepEqual(groups.get(a), ['x']);
    assert.equal(groups.get(b), undefined);
    assert.deepEqual(unplaced, ['y', 'z']);
  });

  test('no NIC: nothing placed', () => {
    const { groups, unplaced } = placeByFreeCapacity([1, 2], []);
    assert.equal(groups.size, 0);
    assert.deepEqual(unplaced, [1, 2]);
  });
});
