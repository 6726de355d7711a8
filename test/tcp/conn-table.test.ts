/**
 * The four-tuple table, alone and with its entries in a store shared with other layers' tables
 * (the host's and its LocalNics'): each table sees only what it runs and holds, as with a store of
 * its own, and a connection handed between two that share keeps its entry.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConnTable } from '../../src/stack/tcp/conn-table.ts';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';

const HOST = 0x0a000001;
const PEER = 0x0a000002;
const PEER2 = 0x0a000003;

/** What the table reads of a connection: its tuple and its entry. */
function conn(localPort: number, remoteIp = PEER, remotePort = 80): TcpConnection {
  return {
    state: { const: { localIp: HOST, localPort, remoteIp, remotePort } },
    tableEntry: null,
  } as unknown as TcpConnection;
}

const T = [HOST, 40000, PEER, 80] as const;

describe('ConnTable over a shared store', () => {
  test('each table sees only the connections it runs and the placeholders it keeps', () => {
    const host = new ConnTable();
    const nic = new ConnTable();
    assert.equal(nic.share(host), true);
    assert.ok(nic.sharesWith(host));
    const c = conn(40000);
    host.add(c);
    assert.equal(host.lookup(...T), c);
    assert.equal(nic.lookup(...T), undefined, 'not the NIC’s');
    nic.hold(...T);
    assert.ok(nic.placeholder(...T));
    assert.equal(host.placeholder(...T), undefined, 'the NIC’s placeholder is not the host’s');
    assert.deepEqual([host.size, host.heldSize, nic.size, nic.heldSize], [1, 0, 0, 1]);
    assert.deepEqual(host.connections(), [c]);
    assert.deepEqual(nic.connections(), []);
    assert.ok(nic.unhold(...T));
    assert.equal(nic.unhold(...T), undefined);
    assert.equal(host.lookup(...T), c, 'the host’s connection stays in the entry');
    // A placeholder alone in its entry: dropped with it, handed back with what it held.
    const lone = host.hold(HOST, 40001, PEER, 80);
    lone.queue.push(new Uint8Array(2));
    assert.equal(host.unhold(HOST, 40001, PEER, 80), lone);
    assert.equal(lone.queue.length, 1);
    assert.equal(host.placeholder(HOST, 40001, PEER, 80), undefined);
  });

  test('a connection handed between tables of one store keeps its entry; the placeholder stays with its table', () => {
    const host = new ConnTable();
    const nic0 = new ConnTable();
    const nic1 = new ConnTable();
    nic0.share(host);
    nic1.share(host);
    const c = conn(40000);
    host.add(c);
    const entry = c.tableEntry;
    assert.ok(entry);
    // Offload: the host keeps a placeholder (a forwarder), the NIC runs the connection.
    const ph = host.hold(...T);
    assert.ok(host.remove(c));
    nic0.add(c);
    assert.equal(c.tableEntry, entry, 'the same entry, its owner re-pointed');
    assert.equal(nic0.lookup(...T), c);
    assert.equal(host.lookup(...T), undefined);
    assert.equal(host.placeholder(...T), ph);
    // Move to the other NIC, then upload.
    assert.ok(nic0.remove(c));
    nic1.add(c);
    assert.equal(c.tableEntry, entry);
    assert.deepEqual([nic0.size, nic1.size], [0, 1]);
    assert.equal(nic0.remove(c), false, 'no longer nic0’s');
    assert.ok(nic1.remove(c));
    host.add(c);
    assert.equal(c.tableEntry, entry);
    assert.equal(host.lookup(...T), c);
    assert.equal(host.unhold(...T), ph);
    // The next offload's placeholder is the same object, emptied.
    ph.queue.push(new Uint8Array(1));
    ph.forward = () => true;
    assert.equal(host.hold(...T), ph);
    assert.deepEqual([ph.queue.length, ph.forward], [0, null]);
    assert.equal(host.unhold(...T), ph);
    assert.deepEqual(host.connections(), [c]);
    assert.deepEqual([nic0.connections(), nic1.connections()], [[], []]);
    // Closed: the entry leaves the store, and a new connection of the tuple gets an entry with
    // nothing of the closed one in it. (The entry object itself is a spare of the store now, taken
    // up again by the next tuple: Store.spare. It was a new object before, which this asserted.)
    assert.ok(host.remove(c));
    assert.equal(c.tableEntry, null);
    assert.equal(host.lookup(...T), undefined);
    assert.equal(host.placeholder(...T), undefined);
    const again = conn(40000);
    nic0.add(again);
    const fresh = again.tableEntry!;
    assert.equal(fresh.conn, again);
    assert.deepEqual(
      [fresh.runBy, fresh.heldBy, fresh.held, fresh.taggedBy, fresh.tag],
      [nic0, null, null, null, null],
    );
    assert.equal(nic0.lookup(...T), again);
    assert.equal(host.lookup(...T), undefined);
  });

  test("a tuple's entry carried through an upload is read (soleIn) and linked in (placeIn) only while it is the tuple's only one", () => {
    const host = new ConnTable();
    const nic = new ConnTable();
    nic.share(host);
    const c = conn(40000);
    host.add(c);
    // Offloaded: the host's placeholder and tag in the connection's entry, the NIC runs it.
    host.hold(...T);
    host.setTag(...T, { tag: 1 });
    const at = host.tagEntry(...T)!;
    assert.equal(at, c.tableEntry);
    assert.ok(host.remove(c));
    nic.add(c);
    assert.equal(host.soleIn(at, ...T), at);
    assert.equal(host.soleIn(at, HOST, 40001, PEER, 80), null, 'another tuple');
    // Uploaded: the NIC lets go, a connection revived here has no entry (TcpConnection.revive).
    assert.ok(nic.remove(c));
    const revived = conn(40000);
    const made = host.entriesMade;
    host.placeIn(revived, at);
    host.add(revived);
    assert.equal(revived.tableEntry, at, 'linked in the carried entry');
    assert.equal(host.entriesMade, made, 'no entry made');
    assert.equal(host.lookup(...T), revived);
    // An entry whose RUN part is in use is not given to another connection.
    const other = conn(40000);
    host.placeIn(other, at);
    assert.equal(other.tableEntry, null);
    // A twin of the tuple in the store: the entry may not be the only one.
    const twin = conn(40000);
    nic.add(twin);
    assert.equal(host.soleIn(at, ...T), null, 'a twin');
    assert.ok(nic.remove(twin));
    // Let go and pruned, then taken up by another tuple: not read as this tuple's.
    host.untag(...T);
    host.unhold(...T);
    assert.ok(host.remove(revived));
    assert.equal(host.soleIn(at, ...T), null, 'pruned');
    host.add(conn(40002));
    assert.equal(host.soleIn(at, ...T), null, 'taken up by another tuple');
  });

  test('two connections of one tuple in two tables of a store do not meet', () => {
    const a = new ConnTable();
    const b = new ConnTable();
    b.share(a);
    const ca = conn(40000);
    const cb = conn(40000);
    a.add(ca);
    b.add(cb);
    assert.equal(a.lookup(...T), ca);
    assert.equal(b.lookup(...T), cb);
    assert.ok(a.remove(ca));
    assert.equal(b.lookup(...T), cb, 'b’s connection stays');
    assert.equal(a.lookup(...T), undefined);
    assert.equal(b.remove(ca), false, 'b does not run a’s connection');
    // Back in a while b runs another of the tuple: an entry of its own, not b's.
    a.add(ca);
    assert.ok(ca.tableEntry);
    assert.notEqual(ca.tableEntry, cb.tableEntry);
    assert.equal(a.lookup(...T), ca);
    assert.equal(b.lookup(...T), cb);
  });

  test('the same ports to different peers are different connections, in one table or in two', () => {
    const a = new ConnTable();
    const b = new ConnTable();
    b.share(a);
    const c1 = conn(40000, PEER, 5000);
    const c2 = conn(40000, PEER2, 5000);
    const c3 = conn(40000, PEER2, 5001);
    a.add(c1);
    a.add(c2);
    b.add(c3);
    assert.equal(a.lookup(HOST, 40000, PEER, 5000), c1);
    assert.equal(a.lookup(HOST, 40000, PEER2, 5000), c2);
    assert.equal(a.lookup(HOST, 40000, PEER2, 5001), undefined);
    assert.equal(b.lookup(HOST, 40000, PEER2, 5001), c3);
    assert.ok(a.remove(c1));
    assert.equal(a.lookup(HOST, 40000, PEER2, 5000), c2);
    assert.deepEqual(a.connections(), [c2]);
  });

  test('a table that holds anything keeps its own store; a connection from another store gets an entry there', () => {
    const a = new ConnTable();
    const b = new ConnTable();
    const c = conn(40000);
    b.add(c);
    assert.equal(b.share(a), false);
    assert.ok(!b.sharesWith(a));
    const old = c.tableEntry;
    assert.ok(b.remove(c));
    b.hold(...T);
    assert.equal(b.share(a), false, 'a placeholder keeps it too');
    a.add(c);
    assert.notEqual(c.tableEntry, old);
    assert.equal(a.lookup(...T), c);
    assert.equal(b.lookup(...T), undefined);
    assert.ok(b.placeholder(...T));
  });
  test("a table's placeholder by connection does not take another table's out of the entry", () => {
    // The host forwards the tuple to the NIC that runs the connection; the NIC releases it (a
    // crash, a terminate) and holds its own placeholder. Taking the host's took its forwarder
    // over: the host then found no placeholder of its own and answered the peer with RSTs.
    const host = new ConnTable();
    const nic = new ConnTable();
    nic.share(host);
    const c = conn(40000);
    const fwd = host.hold(...T);
    const forward = (): boolean => true;
    fwd.forward = forward;
    nic.add(c);
    assert.equal(host.placeholderOf(c), fwd);
    const mine = nic.holdOf(c);
    assert.notEqual(mine, fwd, 'a placeholder of its own');
    assert.equal(host.placeholder(...T), fwd, 'the host keeps its forwarder');
    assert.equal(host.placeholderOf(c), fwd);
    assert.equal(fwd.forward, forward);
    assert.equal(nic.placeholder(...T), mine);
    assert.equal(nic.placeholderOf(c), mine);
    assert.deepEqual([host.heldSize, nic.heldSize], [1, 1]);
    // Each lets go of its own.
    assert.ok(nic.remove(c));
    assert.equal(nic.unholdOf(c), mine);
    assert.equal(host.unhold(...T), fwd);
    assert.deepEqual([host.heldSize, nic.heldSize], [0, 0]);
  });

  test('a table emptied of more connections than SPARE_ENTRIES keeps all their entries for the next ones', () => {
    // As a worker whose 3,000 connections all move away and come back: bounded by the entries in
    // use at each prune, the store kept 1,500 spares and made 1,500 entries again on each round.
    const t = new ConnTable();
    const N = 3000;
    const conns = Array.from({ length: N }, (_, i) => conn(10_000 + i));
    for (let round = 0; round < 4; round++) {
      for (const c of conns) t.add(c);
      assert.equal(t.size, N);
      for (const c of conns) assert.equal(t.lookup(HOST, c.state.const.localPort, PEER, 80), c);
      for (const c of conns) assert.ok(t.remove(c));
      assert.equal(t.size, 0);
      // Placeholders take up the same spares.
      for (let i = 0; i < N; i++) t.hold(HOST, 20_000 + i, PEER2, 80);
      for (let i = 0; i < N; i++) assert.ok(t.unhold(HOST, 20_000 + i, PEER2, 80));
    }
    assert.equal(t.entriesMade, N, 'half again per round before');
  });
});
