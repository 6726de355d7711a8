/**
 * A warm move of every connection of a WorkerNic makes its lists (the manager's keys and table
 * entries, the freeze's items, each part's keys, hints, frozen and released handles, the answer's
 * keys, blocks and handles) once at their largest size and cuts them to what they hold, and reuses
 * a part's own lists where the source released all of it in order. A list cut short of what it
 * found, or one left at its largest, would carry another NIC's connections or empty places into
 * the move; one reused where it should not be would name connections the move did not take.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type ConnKey, connKeyId } from '../../src/nic/nic.ts';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import { idleConnections, socketKey } from './worker-helpers.ts';

const CONNS = 12;

const ids = (ks: readonly ConnKey[]) => ks.map(connKeyId).sort();

describe('warm moves: lists made at their size', () => {
  test("move('all') takes exactly the source's connections, beside another NIC's, move after move", {
    timeout: 120_000,
  }, async (t) => {
    const { wh, sockets } = await idleConnections(t, { seed: 141, n: CONNS, capacity: 100 });
    const [n0, n1] = wh.nics as [WorkerNic, WorkerNic];
    const keys = sockets.map(socketKey);
    const m = wh.offload;
    // Five on the first NIC, seven on the second: a walk of the host's entries for one NIC finds
    // fewer than the table holds.
    const on0 = keys.slice(0, 5);
    const on1 = keys.slice(5);
    assert.equal((await m.offload(on0, n0)).moved.length, on0.length);
    assert.equal((await m.offload(on1, n1)).moved.length, on1.length);

    const first = await m.move('all', n0, n1);
    assert.deepEqual(first.refused, []);
    assert.deepEqual(ids(first.moved), ids(on0), "the first NIC's five, and nothing else");
    assert.deepEqual(ids(m.keysOn(n1)), ids(keys));
    assert.equal(m.keysOn(n0).length, 0);

    // Every connection back, then half of them again: the lists of the move before (a part's
    // keys, its released handles reused as the answer's) name nothing of the next.
    const back = await m.move('all', n1, n0);
    assert.deepEqual(back.refused, []);
    assert.deepEqual(ids(back.moved), ids(keys));
    const some = await m.move(on1, n0, n1);
    assert.deepEqual(ids(some.moved), ids(on1));
    const rest = await m.move('all', n0, n1);
    assert.deepEqual(ids(rest.moved), ids(on0));
    for (const k of keys) {
      assert.ok(n1.handle(k) !== undefined, `${connKeyId(k)} runs at the second NIC`);
      assert.equal(n0.handle(k), undefined, `${connKeyId(k)} left the first`);
    }
    for (const s of sockets) assert.equal(s.destroyed, false);
  });
});
