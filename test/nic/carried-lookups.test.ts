/**
 * A move of WorkerNic connections finds each connection in the host's four-tuple table once and
 * carries that entry to the freeze and the settle; the destination attaches the handles its
 * install just made by place. Both fall back to a search when what they carry no longer holds.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { openConnections } from '../../bench/offload.ts';
import type { ConnKey } from '../../src/nic/nic.ts';
import type { TupleMap } from '../../src/nic/tuple-map.ts';
import type { WorkerConnectionHandle, WorkerNic } from '../../src/nic/worker-nic.ts';
import type { ConnTable } from '../../src/stack/tcp/conn-table.ts';
import { idleConnections, PING_MS, peerHolds, socketKey, workerSetup } from './worker-helpers.ts';

const CONNS = 30;

/**
 * Count the calls of `obj[name]` (an instance's own override of its class's method); with
 * `callers`, each call's callers in src/ too, so that a failure names the path that searched.
 */
function spy<T extends object>(obj: T, name: string, callers?: string[]): { n: number } {
  const o = obj as unknown as Record<string, (...a: unknown[]) => unknown>;
  const orig = o[name]!;
  const count = { n: 0 };
  o[name] = function (this: unknown, ...a: unknown[]) {
    count.n++;
    if (callers !== undefined) callers.push(srcFrames(new Error().stack ?? ''));
    return orig.apply(this, a);
  };
  return count;
}

/** The frames of a stack in src/, innermost first, as `function (file)`. */
function srcFrames(stack: string): string {
  const frames: string[] = [];
  for (const line of stack.split('\n')) {
    const m = /at (?:async )?(\S+) \(.*\/src\/([^:]+)/.exec(line);
    if (m !== null && frames.length < 6) frames.push(`${m[1]} (${m[2]})`);
  }
  return frames.join(' < ');
}

/** The distinct callers a spy saw, each with its count (an intermittent failure names its path). */
function named(callers: readonly string[]): string {
  return (
    [...new Set(callers)].map((c) => `${callers.filter((x) => x === c).length}x ${c}`).join('; ') || 'none'
  );
}

/** The private parts of a WorkerNic these tests read. */
interface NicInside {
  byKey: TupleMap<WorkerConnectionHandle>;
  takeInstalled: (...a: unknown[]) => unknown;
  forget: (slots: readonly number[]) => void;
}

describe('lookups carried through a WorkerNic move', () => {
  test('a move searches the host table once per connection, and attaches by place', {
    timeout: 60_000,
  }, async (t) => {
    const { net, wh, peer } = await workerSetup(95, t);
    const [n0, n1] = wh.nics as [WorkerNic, WorkerNic];
    let held = 0;
    peer
      .createServer((s) => {
        s.on('error', () => {});
        held++;
      })
      .listen(80);
    await wh.host.ping('10.0.0.2', PING_MS);
    const keys = (await openConnections(wh.host, net, CONNS, 5)).map(socketKey);
    // Until then the peer resends its SYN-ACKs, and the host's input searches for each one.
    await peerHolds(() => held, CONNS);
    const m = wh.offload;
    assert.equal((await m.offload(keys, n0)).moved.length, CONNS);
    const callers: string[] = [];
    spy(wh.stack.tcp.table as ConnTable, 'entry', callers);
    const attachCallers: string[] = [];
    const attachSearches = spy((n1 as unknown as NicInside).byKey, 'get', attachCallers);
    assert.equal((await m.move(keys, n0, n1)).moved.length, CONNS);
    // Before: the move's own lookup, the freeze's (tag and placeholder), the settle's (placeholder
    // and tag): five searches a connection. And the destination searched its handles to attach.
    assert.equal(callers.length, CONNS, `host table searches, by ${named(callers)}`);
    assert.equal(attachSearches.n, 0, `searches of the destination handles, by ${named(attachCallers)}`);
    for (const k of keys) assert.equal(m.ownerOf(k), n1);
    // They run there: back, and home, as before.
    assert.equal((await m.move(keys.slice().reverse(), n1, n0)).moved.length, CONNS);
    assert.equal((await m.upload(keys)).moved.length, CONNS);
    assert.equal(m.keysOn(n0).length + m.keysOn(n1).length, 0);
  });

  test('a move finds the source handles from the host entries, and revives without a search', {
    timeout: 60_000,
  }, async (t) => {
    const { wh, sockets } = await idleConnections(t, { seed: 98, n: CONNS, capacity: 100 });
    const [n0, n1] = wh.nics as [WorkerNic, WorkerNic];
    const keys = sockets.map(socketKey);
    const m = wh.offload;
    assert.equal((await m.offload(keys, n0)).moved.length, CONNS);
    const first = keys.map((k) => n0.handle(k));
    let src = spy((n0 as unknown as NicInside).byKey, 'get');
    let dstCallers: string[] = [];
    let dst = spy((n1 as unknown as NicInside).byKey, 'get', dstCallers);
    assert.equal((await m.move(keys, n0, n1)).moved.length, CONNS);
    // Before: the source searched its handles by tuple for every key.
    assert.equal(src.n, 0, 'searches of the source handles');
    assert.equal(dst.n, 0, `searches of the destination handles, by ${named(dstCallers)}`);
    src = spy((n1 as unknown as NicInside).byKey, 'get');
    dstCallers = [];
    dst = spy((n0 as unknown as NicInside).byKey, 'get', dstCallers);
    assert.equal((await m.move(keys, n1, n0)).moved.length, CONNS);
    assert.equal(src.n, 0, 'searches of the source handles, back');
    // Before: each revive checked the destination's table for the handle it took up again.
    assert.equal(dst.n, 0, `searches of the destination handles, back, by ${named(dstCallers)}`);
    for (const [i, k] of keys.entries()) {
      assert.equal(n0.handle(k), first[i], 'the same handle, revived');
      assert.equal(m.ownerOf(k), n0);
    }
    // A hint that no longer holds (the connection went up and came back elsewhere) is not taken.
    assert.equal((await m.upload(keys.slice(0, 5))).moved.length, 5);
    assert.equal((await m.offload(keys.slice(0, 5), n1)).moved.length, 5);
    assert.equal((await m.move(keys.slice(0, 10), n0, n1)).refused.length, 5);
    for (const k of keys.slice(0, 10)) assert.equal(m.ownerOf(k), n1);
    assert.equal((await m.upload(keys)).moved.length, CONNS);
  });

  test("a move of every connection of a NIC ('all') finds their entries in one walk, no search", {
    timeout: 60_000,
  }, async (t) => {
    const { wh, sockets } = await idleConnections(t, { seed: 96, n: CONNS, capacity: 100 });
    const [n0, n1] = wh.nics as [WorkerNic, WorkerNic];
    const keys = sockets.map(socketKey);
    const m = wh.offload;
    assert.equal((await m.offload(keys.slice(0, 20), n0)).moved.length, 20);
    assert.equal((await m.offload(keys.slice(20), n1)).moved.length, CONNS - 20);
    const callers: string[] = [];
    spy(wh.stack.tcp.table as ConnTable, 'entry', callers);
    const report = await m.move('all', n0, n1);
    // Before: one search a connection (keysOn, then each key's entry looked up). A refusal or a
    // NIC's death makes searches of its own: named with the refusals and the searches' callers, a
    // failure says which it was.
    const by = named(callers);
    assert.equal(
      callers.length,
      0,
      `host table searches (refused: ${JSON.stringify(report.refused)}; by: ${by})`,
    );
    assert.deepEqual(report.refused, []);
    assert.deepEqual(
      new Set(report.moved.map((k) => k.localPort)),
      new Set(keys.slice(0, 20).map((k) => k.localPort)),
    );
    for (const k of keys) assert.equal(m.ownerOf(k), n1);
    assert.equal((await m.move('all', n1, n0)).moved.length, CONNS);
    for (const k of keys) assert.equal(m.ownerOf(k), n0);
    assert.equal((await m.upload(keys)).moved.length, CONNS);
  });

  test('handles attached in another order, or after one was let go, are found by the search', {
    timeout: 60_000,
  }, async (t) => {
    const { net, wh, peer } = await workerSetup(96, t);
    const [n0, n1] = wh.nics as [WorkerNic, WorkerNic];
    peer.createServer((s) => s.on('error', () => {})).listen(80);
    await wh.host.ping('10.0.0.2', PING_MS);
    const keys = (await openConnections(wh.host, net, 6, 5)).map(socketKey);
    const m = wh.offload;
    assert.equal((await m.offload(keys, n0)).moved.length, 6);
    type Seen = {
      asked: ConnKey;
      got: WorkerConnectionHandle | null;
      held: WorkerConnectionHandle | undefined;
    };
    // Right after an install, before the transfer's settle, run `then` at the destination.
    const atInstall = (nic: WorkerNic, then: () => void): (() => void) => {
      const inside = nic as unknown as NicInside;
      const take = inside.takeInstalled;
      inside.takeInstalled = function (this: unknown, ...a: unknown[]) {
        const r = take.apply(this, a);
        then();
        return r;
      };
      return () => {
        inside.takeInstalled = take;
      };
    };
    const attachAt = (nic: WorkerNic, k: ConnKey): Seen => ({
      asked: k,
      got: nic.attach(k, null) as WorkerConnectionHandle | null,
      held: nic.handle(k),
    });
    const own = (s: Seen) => {
      assert.ok(s.got !== null && s.got === s.held, 'the handle of the key asked');
      assert.deepEqual(
        [s.got.localIp, s.got.localPort, s.got.remoteIp, s.got.remotePort],
        [s.asked.localIp, s.asked.localPort, s.asked.remoteIp, s.asked.remotePort],
      );
    };

    // In reverse order: each key its own handle.
    const reversed: Seen[] = [];
    let undo = atInstall(n1, () => {
      for (const k of keys.slice().reverse()) reversed.push(attachAt(n1, k));
    });
    assert.equal((await m.move(keys, n0, n1)).moved.length, 6);
    undo();
    assert.equal(reversed.length, 6);
    for (const s of reversed) own(s);
    for (const k of keys) assert.equal(m.ownerOf(k), n1);

    // The first installed let go (as a close at the worker does) before it is attached: no
    // handle, though it comes first in the install's order; the next one is still its own.
    const afterGone: Seen[] = [];
    undo = atInstall(n0, () => {
      (n0 as unknown as NicInside).forget([n0.handle(keys[0]!)!.slot]);
      afterGone.push(attachAt(n0, keys[0]!), attachAt(n0, keys[1]!));
    });
    await m.move(keys, n1, n0);
    undo();
    assert.equal(afterGone[0]!.got, null);
    own(afterGone[1]!);
    for (const k of keys.slice(1)) {
      assert.equal(m.ownerOf(k), n0);
      assert.equal(n0.handle(k)?.localPort, k.localPort);
    }
  });
});
