/**
 * A warm move of every connection of a WorkerNic makes its lists (the manager's keys and table
 * entries, the freeze's items, each part's keys, hints, frozen and released handles, the answer's
 * keys, blocks and handles) once at their largest size and cuts them to what they hold, and reuses
 * a part's own lists where the source released all of it in order. A list cut short of what it
 * found, or one left at its largest, would carry another NIC's connections or empty places into
 * the move; one reused where it should not be would name connections the move did not take. A
 * hand-over part's keys and hints are one pair of lists for every part of every move: a pair left
 * longer than the part would hand the connections of the move before.
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

  test("a hand-over part's reused keys and hints name only its own connections, whatever the move before held", {
    timeout: 120_000,
  }, async (t) => {
    const { wh, sockets } = await idleConnections(t, { seed: 142, n: CONNS, capacity: 100 });
    const [n0, n1] = wh.nics as [WorkerNic, WorkerNic];
    const keys = sockets.map(socketKey);
    const m = wh.offload;
    assert.equal((await m.offload(keys, n0)).moved.length, CONNS);
    const where = (): string[] => keys.map((k) => (n0.handle(k) ? 'n0' : n1.handle(k) ? 'n1' : '-'));
    const expect = (n1s: readonly ConnKey[]) => {
      const at1 = new Set(n1s.map(connKeyId));
      return keys.map((k) => (at1.has(connKeyId(k)) ? 'n1' : 'n0'));
    };
    // Seven there and back: the part's lists (seven places) are left holding the last move's.
    const seven = keys.slice(0, 7);
    assert.deepEqual(ids((await m.move(seven, n0, n1)).moved), ids(seven));
    assert.deepEqual(ids((await m.move(seven, n1, n0)).moved), ids(seven));
    // Three others from the same NIC: the seven's keys still name connections there, and a list
    // reused with its last places unwritten would hand them over too (the host none the wiser).
    const three = keys.slice(7, 10);
    const r = await m.move(three, n0, n1);
    assert.deepEqual(r.refused, []);
    assert.deepEqual(ids(r.moved), ids(three));
    assert.deepEqual(where(), expect(three), 'each connection at the NIC the host has it at');
    assert.deepEqual(ids(m.keysOn(n1)), ids(three));
    // And a larger part after the smaller one: every key of the twelve, once.
    const all = await m.move('all', n0, n1);
    assert.deepEqual(ids(all.moved), ids(keys.filter((k) => !three.includes(k))));
    assert.deepEqual(where(), expect(keys));
    for (const s of sockets) assert.equal(s.destroyed, false);
  });

  test('a move by keys naming connections of two NICs takes exactly those of its source, the rest refused', {
    timeout: 120_000,
  }, async (t) => {
    const { wh, sockets } = await idleConnections(t, { seed: 143, n: CONNS, capacity: 100 });
    const [n0, n1] = wh.nics as [WorkerNic, WorkerNic];
    const keys = sockets.map(socketKey);
    const m = wh.offload;
    const on0 = keys.filter((_, i) => i % 3 === 0);
    const on1 = keys.filter((_, i) => i % 3 !== 0);
    assert.equal((await m.offload(on0, n0)).moved.length, on0.length);
    assert.equal((await m.offload(on1, n1)).moved.length, on1.length);
    // Every key, in their own order: the lists, made at the batch's size, are cut to the four found.
    const r = await m.move(keys, n0, n1);
    assert.deepEqual(ids(r.moved), ids(on0));
    assert.deepEqual(ids(r.refused.map((f) => f.key)), ids(on1));
    for (const f of r.refused) assert.equal(f.reason, 'not on the source NIC');
    assert.deepEqual(ids(m.keysOn(n1)), ids(keys));
    for (const [i, k] of keys.entries()) assert.equal(n1.handle(k)?.user, sockets[i]);
    for (const s of sockets) assert.equal(s.destroyed, false);
  });
});
