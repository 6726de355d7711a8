/**
 * A WorkerNic's initiate keeps one prepared entry per block (BlockViews.prepared), set anew by
 * each transfer that carries the block, and a move handed from worker to worker gives the
 * destination's handle the source handle's settings object instead of copying it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ConnKey } from '../../src/nic/nic.ts';
import type { WorkerConnectionHandle, WorkerNic } from '../../src/nic/worker-nic.ts';
import { idleConnections, socketKey } from './worker-helpers.ts';

const CONNS = 6;

/** What these tests read of a handle's block views. */
interface Prepared {
  key: ConnKey;
  state: object | null;
  offered: boolean;
  settings: object | null;
}
function preparedOf(h: WorkerConnectionHandle): Prepared {
  const v = h.views as unknown as { prepared: Prepared | null } | undefined;
  assert.ok(v?.prepared, 'the block keeps its prepared entry');
  return v.prepared;
}

/**
 * What the prepared entries of each initiate `nic` takes up carry while it takes them up (its
 * `takeInstalled`), in their order: after that they let go of both (see `settled`).
 */
function whileTaken(nic: WorkerNic): { state: object | null; settings: object | null }[][] {
  const seen: { state: object | null; settings: object | null }[][] = [];
  const target = nic as unknown as {
    takeInstalled(res: unknown, prepared: unknown, owner: unknown): unknown;
  };
  const take = target.takeInstalled.bind(nic);
  target.takeInstalled = (res, prepared, owner) => {
    const list = (prepared as { list: Prepared[] } | undefined)?.list ?? [];
    seen.push(list.map((p) => ({ state: p.state, settings: p.settings })));
    return take(res, prepared, owner);
  };
  return seen;
}

describe('pooled prepared entries of WorkerNic transfers', () => {
  test('one entry per block across offload, moves and upload, carrying nothing of the transfer before', {
    timeout: 60_000,
  }, async (t) => {
    const { wh, sockets } = await idleConnections(t, { seed: 97, n: CONNS, capacity: 100 });
    const [n0, n1] = wh.nics as [WorkerNic, WorkerNic];
    const keys = sockets.map(socketKey);
    const m = wh.offload;
    const taken0 = whileTaken(n0);
    const taken1 = whileTaken(n1);
    assert.equal((await m.offload(keys, n0)).moved.length, CONNS);
    const first = keys.map((k) => preparedOf(n0.handle(k)!));
    assert.equal(taken0.length, 1);
    for (const [i, p] of first.entries()) {
      // An offload from the host writes the record from the host's state.
      assert.notEqual(taken0[0]![i]!.state, null);
      assert.equal(taken0[0]![i]!.settings, null);
      assert.equal(p.offered, true);
      // Once the offload is over, the entry (kept with the block) no longer holds the host's state.
      assert.equal(p.state, null, 'the state let go after the offload');
      assert.equal(p.settings, null);
      assert.deepEqual({ ...p.key }, { ...keys[i]! });
    }
    // A setting changed while on n0 goes with the connection.
    sockets[0]!.setNoDelay(false);
    sockets[1]!.setNoDelay(true);
    const s0 = keys.map((k) => n0.handle(k)!.settings);
    assert.equal((await m.move(keys, n0, n1)).moved.length, CONNS);
    for (const [i, k] of keys.entries()) {
      const h = n1.handle(k)!;
      const p = preparedOf(h);
      assert.equal(p, first[i], 'the same entry, taken up again');
      // Handed from worker to worker: no state of the offload's left in it.
      assert.equal(taken1[0]![i]!.state, null, 'the offload state is not carried');
      assert.equal(p.state, null);
      assert.equal(p.offered, true);
      assert.equal(taken1[0]![i]!.settings, s0[i], "the source handle's settings");
      assert.equal(p.settings, null, 'let go after the move');
      // One settings object, shared, not copied per move.
      assert.equal(h.settings, s0[i]);
    }
    assert.equal(n1.handle(keys[0]!)!.settings!.noDelay, false);
    assert.equal(n1.handle(keys[1]!)!.settings!.noDelay, true);
    // A change on n1 is the connection's wherever it goes next.
    sockets[0]!.setNoDelay(true);
    assert.equal((await m.move(keys, n1, n0)).moved.length, CONNS);
    for (const [i, k] of keys.entries()) {
      const h = n0.handle(k)!;
      assert.equal(preparedOf(h), first[i]);
      assert.equal(h.settings, s0[i]);
    }
    assert.equal(n0.handle(keys[0]!)!.settings!.noDelay, true);
    // Up and out again: the offload's entry is the same object, its state the host's new one.
    assert.equal((await m.upload(keys)).moved.length, CONNS);
    assert.equal((await m.offload(keys, n1)).moved.length, CONNS);
    for (const [i, k] of keys.entries()) {
      const p = preparedOf(n1.handle(k)!);
      assert.equal(p, first[i]);
      assert.notEqual(taken1.at(-1)![i]!.state, null);
      assert.equal(taken1.at(-1)![i]!.settings, null);
      assert.equal(p.state, null);
      assert.equal(p.settings, null);
    }
    assert.equal(n1.handle(keys[0]!)!.settings!.noDelay, true);
    assert.equal(n1.handle(keys[1]!)!.settings!.noDelay, true);
    assert.equal((await m.upload(keys)).moved.length, CONNS);
  });
});
