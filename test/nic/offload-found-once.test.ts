/**
 * An offload to a WorkerNic finds what it needs per connection once: the host's table is searched
 * for each connection by the manager only (the freeze takes the connection it found), and an
 * offload into blocks the connections ran on before names the keys those blocks' entries kept
 * (PreparedConn.key, `sameKeyOr`) instead of a new key object per connection and offload. An
 * upload finds each connection's host table entry with its key (none searched for `'all'`), and
 * its freeze and adopt read the entry, placeholder and connection from it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { viewsOf } from '../../src/nic/worker-block-views.ts';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import { idleConnections, socketKey } from './worker-helpers.ts';

const CONNS = 6;

describe('an offload to a WorkerNic finds each connection once', () => {
  test("the host's table is searched once per connection named by key", { timeout: 120_000 }, async (t) => {
    const { wh, sockets } = await idleConnections(t, { seed: 131, n: CONNS, capacity: 100 });
    const n0 = wh.nics[0] as WorkerNic;
    const keys = sockets.map(socketKey);
    const tcp = wh.stack.tcp;
    const lookup = tcp.lookup.bind(tcp);
    let searched = 0;
    tcp.lookup = (...a: Parameters<typeof tcp.lookup>) => {
      searched++;
      return lookup(...a);
    };
    t.after(() => {
      tcp.lookup = lookup;
    });
    assert.equal((await wh.offload.offload(keys, n0)).moved.length, CONNS);
    // The manager's search of each key; the freeze searched each a second time before.
    assert.equal(searched, CONNS);
    for (const [i, k] of keys.entries()) {
      assert.equal(wh.offload.ownerOf(k), n0);
      assert.equal(n0.handle(k)?.user, sockets[i]);
    }
  });

  test("an upload searches the host's table once per connection named by key, and never for 'all'", {
    timeout: 120_000,
  }, async (t) => {
    const { wh, sockets } = await idleConnections(t, { seed: 133, n: CONNS, capacity: 100 });
    const n0 = wh.nics[0] as WorkerNic;
    const keys = sockets.map(socketKey);
    const m = wh.offload;
    const tcp = wh.stack.tcp;
    // Every search of the host's four-tuple table by tuple: its private `entry` (lookup,
    // placeholder, tagOf, tagEntry...) and `vacant` (an entry found or made for a new part).
    const table = tcp.table as unknown as Record<'entry' | 'vacant', (...a: unknown[]) => unknown>;
    const entry = table.entry;
    const vacant = table.vacant;
    let searched = 0;
    table.entry = function (...a: unknown[]) {
      searched++;
      return entry.apply(this, a);
    };
    table.vacant = function (...a: unknown[]) {
      searched++;
      return vacant.apply(this, a);
    };
    t.after(() => {
      table.entry = entry;
      table.vacant = vacant;
    });
    // A first round trip: the connections revived at the upload are the ones offloaded.
    assert.equal((await m.offload(keys, n0)).moved.length, CONNS);
    assert.equal((await m.upload('all')).moved.length, CONNS);
    assert.equal((await m.offload(keys, n0)).moved.length, CONNS);
    searched = 0;
    assert.equal((await m.upload(keys)).moved.length, CONNS);
    // The manager's search of each key; the freeze searched the entry and the placeholder again,
    // and the adopt the tuple's connection, before.
    assert.equal(searched, CONNS, 'an upload by key');
    assert.equal((await m.offload(keys, n0)).moved.length, CONNS);
    searched = 0;
    assert.equal((await m.upload('all')).moved.length, CONNS);
    assert.equal(searched, 0, "an upload of 'all'");
    for (const [i, k] of keys.entries()) {
      assert.equal(m.ownerOf(k), 'host');
      const c = tcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort);
      assert.equal(c?.user, sockets[i], 'the host runs each connection for its socket');
      assert.equal(sockets[i]!.connection, c);
    }
  });

  test('an offload into blocks the connections ran on names the keys their entries kept', {
    timeout: 120_000,
  }, async (t) => {
    const { wh, sockets } = await idleConnections(t, { seed: 132, n: CONNS, capacity: 100 });
    const n0 = wh.nics[0] as WorkerNic;
    const keys = sockets.map(socketKey);
    const m = wh.offload;
    assert.equal((await m.offload(keys, n0)).moved.length, CONNS);
    const first = keys.map((k) => viewsOf(n0.handle(k)!)?.prepared?.key);
    for (const [i, k] of first.entries()) assert.deepEqual({ ...k }, { ...keys[i]! });
    assert.equal((await m.upload(keys)).moved.length, CONNS);
    assert.equal((await m.offload(keys, n0)).moved.length, CONNS);
    for (const [i, k] of keys.entries()) {
      const h = n0.handle(k)!;
      const views = viewsOf(h);
      assert.notEqual(views, undefined, 'the block the connection ran on');
      assert.equal(views!.prepared!.key, first[i], "the key the block's entry kept, not a new one");
      assert.equal(h.user, sockets[i]);
    }
  });
});
