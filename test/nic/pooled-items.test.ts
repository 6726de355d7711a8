/**
 * A transfer from a NIC freezes each connection into the item its host entry keeps (Entry.item),
 * set anew, every field, by each transfer: one object per offloaded connection, not one per
 * connection and move. An item is a transfer's until it ends; a freeze that finds it held makes
 * another.
 */
import assert from 'node:assert/strict';
import { describe, type TestContext, test } from 'node:test';
import { InvalidArgumentError } from '../../src/core/errors.ts';
import type { ConnKey, Nic } from '../../src/nic/nic.ts';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import type { Item } from '../../src/offload/transfer.ts';
import type { TableEntry } from '../../src/stack/tcp/conn-table.ts';
import { idleConnections, socketKey } from './worker-helpers.ts';

const CONNS = 6;

/** The manager's transfer protocol, its freeze watched: the items of every freeze, in order. */
function watchFreezes(m: object): Item[][] {
  type Freeze = (
    keys: readonly ConnKey[],
    src: Nic | 'host',
    ats?: readonly (TableEntry | undefined)[],
  ) => Item[];
  const proto = (m as { proto: { freeze: Freeze } }).proto;
  const freeze = proto.freeze.bind(proto);
  const seen: Item[][] = [];
  proto.freeze = (keys: readonly ConnKey[], src: Nic | 'host', ats?: readonly (TableEntry | undefined)[]) => {
    const items = freeze(keys, src, ats);
    // What the freeze set, before the transfer goes on (a copy: the item is the transfer's).
    seen.push(items);
    return items;
  };
  return seen;
}

/** CONNS idle connections, offloaded to the first of two WorkerNics. */
async function offloaded(t: TestContext, seed: number) {
  const { wh, sockets } = await idleConnections(t, { seed, n: CONNS, capacity: 100 });
  const [n0, n1] = wh.nics as [WorkerNic, WorkerNic];
  const keys = sockets.map(socketKey);
  const m = wh.offload;
  assert.equal((await m.offload(keys, n0)).moved.length, CONNS);
  return { sockets, keys, m, n0, n1 };
}

describe('pooled transfer items', () => {
  test('an item is taken up again by the next move, carrying nothing of the move before', {
    timeout: 60_000,
  }, async (t) => {
    const { sockets, keys, m, n0, n1 } = await offloaded(t, 98);
    const freezes = watchFreezes(m);
    const onN0 = keys.map((k) => n0.handle(k));
    assert.equal((await m.move(keys, n0, n1)).moved.length, CONNS);
    const first = freezes[0]!;
    assert.equal(first.length, CONNS);
    for (const [i, it] of first.entries()) {
      assert.equal(it.handle, onN0[i], "the first move's hint: n0's handle");
      assert.equal(it.socket, sockets[i]);
      assert.equal(it.held, false, 'free once the move ended');
    }
    const onN1 = keys.map((k) => n1.handle(k));
    // The second move: a batch in another order, each key named by another (equal) object.
    const order = [...keys].reverse().map((k) => ({ ...k }));
    let during: { held: boolean | undefined; handle: unknown; socket: unknown; key: ConnKey }[] = [];
    const n1HandTo = n1.handTo!.bind(n1);
    n1.handTo = (dst, ks, o, hints) => {
      // Read while the move runs: the second freeze's fields, not the first's.
      during = freezes[1]!.map((it) => ({
        held: it.held,
        handle: it.handle,
        socket: it.socket,
        key: it.key,
      }));
      return n1HandTo(dst, ks, o, hints);
    };
    assert.equal((await m.move(order, n1, n0)).moved.length, CONNS);
    const second = freezes[1]!;
    assert.equal(second.length, CONNS);
    for (const [j, it] of second.entries()) {
      const i = CONNS - 1 - j;
      assert.equal(it, first[i], 'the same item object, taken up again');
      assert.equal(during[j]!.held, true, 'held while the move runs');
      assert.deepEqual({ ...during[j]!.key }, { ...keys[i]! }, "the second move's connection");
      assert.equal(during[j]!.handle, onN1[i], "the second move's hint: n1's handle, not n0's");
      assert.equal(during[j]!.socket, sockets[i]);
      assert.equal(it.conn, undefined);
      assert.equal(it.held, false);
    }
    // Bytes still flow both ways on every connection (the sockets were resumed on n0's handles).
    for (const [i, k] of keys.entries()) assert.equal(n0.handle(k)?.user, sockets[i]);
  });

  test('a batch naming a connection twice is refused before anything is frozen, every socket where it was', {
    timeout: 60_000,
  }, async (t) => {
    const { sockets, keys, m, n0, n1 } = await offloaded(t, 99);
    assert.equal((await m.move(keys, n0, n1)).moved.length, CONNS);
    const freezes = watchFreezes(m);
    let handed = 0;
    const n1HandTo = n1.handTo!.bind(n1);
    n1.handTo = (dst, ks, o, hints) => {
      handed++;
      return n1HandTo(dst, ks, o, hints);
    };
    const twice = (a: number, b: number) => [keys[a]!, keys[b]!, { ...keys[a]! }];
    const namedTwice = (e: unknown) =>
      e instanceof InvalidArgumentError && /names connection .* twice/.test(e.message);
    // Let through, the worker refused the batch and the twice-named socket was left moving for
    // good: the rollback paired the refused by tuple, one item each.
    await assert.rejects(m.move(twice(0, 1), n1, n0), namedTwice);
    await assert.rejects(m.upload(twice(2, 3)), namedTwice);
    assert.equal(freezes.length, 0, 'nothing frozen');
    assert.equal(handed, 0, 'nothing handed');
    for (const [i, k] of keys.entries()) {
      assert.equal(sockets[i]!.moving, false);
      assert.equal(m.ownerOf(k), n1);
      assert.equal(n1.handle(k)?.user, sockets[i]);
    }
    // Named once, they move, each socket resumed on its own connection.
    assert.equal((await m.move(keys.slice(0, 2), n1, n0)).moved.length, 2);
    assert.equal((await m.upload(keys.slice(2, 4))).moved.length, 2);
    // An offload from the host: let through, the second release of a connection threw in the
    // middle of the batch and the connections released before it had no owner.
    await assert.rejects(m.offload(twice(2, 3), n0), namedTwice);
    for (const i of [2, 3]) {
      assert.equal(m.ownerOf(keys[i]!), 'host');
      assert.equal(sockets[i]!.moving, false);
    }
    assert.equal((await m.offload(keys.slice(2, 4), n0)).moved.length, 2);
    for (const i of [0, 1, 2, 3]) {
      assert.equal(n0.handle(keys[i]!)?.user, sockets[i]);
      assert.equal(sockets[i]!.moving, false);
    }
    // The move's and the upload's items (from a NIC: pooled on the entries).
    for (const f of freezes.slice(0, 2))
      for (const it of f) assert.equal(it.held, false, 'free once the move ended');
  });
});
