/**
 * An upload leaves the host's entry of each connection (and the item it keeps) in the connection's
 * own table entry, let go; the next offload from the host takes both up again instead of making
 * them, re-pointed where the release left the placeholder. Whatever the verb, the tables answer
 * as before: the four-tuple's owner is the NIC that runs it, or the host, and the host's table runs
 * the connection only while the host does.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ConnKey, Nic } from '../../src/nic/nic.ts';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import type { EntryTable } from '../../src/offload/entry-table.ts';
import type { OffloadManager } from '../../src/offload/offload-manager.ts';
import type { Entry } from '../../src/offload/transfer.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import type { TcpLayer } from '../../src/stack/tcp/tcp-layer.ts';
import { idleConnections, socketKey } from './worker-helpers.ts';

const CONNS = 6;

const entriesOf = (m: OffloadManager): EntryTable => (m as unknown as { entries: EntryTable }).entries;

/** Each key's owner, its NIC's handle and the host's table agree on where it runs. */
function consistent(
  m: OffloadManager,
  tcp: TcpLayer,
  keys: readonly ConnKey[],
  sockets: readonly TcpSocket[],
  owner: Nic | 'host',
  nics: readonly WorkerNic[],
  verb: string,
): void {
  const entries = entriesOf(m);
  assert.equal(entries.size, owner === 'host' ? 0 : keys.length, `${verb}: the host's entries`);
  for (const [i, k] of keys.entries()) {
    assert.equal(m.ownerOf(k), owner, `${verb}: the owner of connection ${i}`);
    const run = tcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort);
    if (owner === 'host') {
      assert.notEqual(run, undefined, `${verb}: the host runs connection ${i}`);
      assert.equal(run!.user, sockets[i]);
      assert.equal(entries.get(k), undefined);
    } else {
      assert.equal(run, undefined, `${verb}: the host does not run connection ${i}`);
      assert.equal(entries.get(k)?.nic, owner);
      assert.equal(m.nicOf(k.localIp, k.localPort, k.remoteIp, k.remotePort), owner);
    }
    for (const n of nics)
      assert.equal(n.handle(k)?.user, n === owner ? sockets[i] : undefined, `${verb}: ${n.id}`);
  }
}

describe("an offload takes up the host entry of the connection's last offload", () => {
  test('offload, upload, offload, move, upload: the entry and item are taken up, the tables stay consistent', {
    timeout: 120_000,
  }, async (t) => {
    const { wh, sockets } = await idleConnections(t, { seed: 141, n: CONNS, capacity: 100 });
    const [n0, n1] = wh.nics as [WorkerNic, WorkerNic];
    const keys = sockets.map(socketKey);
    const m = wh.offload;
    const tcp = wh.stack.tcp;
    const entries = entriesOf(m);
    const nics = [n0, n1];
    consistent(m, tcp, keys, sockets, 'host', nics, 'before');

    assert.equal((await m.offload(keys, n0)).moved.length, CONNS);
    consistent(m, tcp, keys, sockets, n0, nics, 'first offload');
    const first = keys.map((k) => entries.get(k)!);
    // The offload's item stays with the entry it made, for the connection's next transfer.
    const items = first.map((e) => e.item);
    for (const it of items) assert.ok(it != null, "the offload's item kept by the entry");

    assert.equal((await m.upload(keys)).moved.length, CONNS);
    consistent(m, tcp, keys, sockets, 'host', nics, 'upload');
    for (const [i, k] of keys.entries()) {
      const conn = tcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort)!;
      assert.equal(entries.lastOf(conn), first[i], 'the entry kept, let go, in the table entry');
    }

    // A taken-up entry carries nothing of its last life but the object and its item.
    for (const e of first) e.named = 99;
    assert.equal((await m.offload(keys, n0)).moved.length, CONNS);
    consistent(m, tcp, keys, sockets, n0, nics, 'second offload');
    for (const [i, k] of keys.entries()) {
      const e: Entry = entries.get(k)!;
      assert.equal(e, first[i], "the entry of the connection's last offload, taken up");
      assert.equal(e.item, items[i], 'and its item');
      assert.equal(e.named, 0);
      assert.equal(e.frozen ?? null, null);
      assert.equal(e.handle, n0.handle(k));
    }

    assert.equal((await m.move(keys, n0, n1)).moved.length, CONNS);
    consistent(m, tcp, keys, sockets, n1, nics, 'move');
    for (const [i, k] of keys.entries()) assert.equal(entries.get(k), first[i], 'a move re-points the entry');

    assert.equal((await m.upload(keys)).moved.length, CONNS);
    consistent(m, tcp, keys, sockets, 'host', nics, 'second upload');
    assert.equal(tcp.frozenSize, 0, 'no placeholder left');

    // The connections still carry data after all that (their entries point where they run).
    assert.equal((await m.offload(keys, n1)).moved.length, CONNS);
    consistent(m, tcp, keys, sockets, n1, nics, 'third offload');
    const sent = await n1.query(keys);
    for (const s of sockets) assert.equal(s.write(Buffer.from('ping')), true);
    // Each ping leaves through the NIC that runs it now and is acknowledged by the peer.
    const by = Date.now() + 30_000;
    for (;;) {
      const q = await n1.query(keys);
      const acked = q.every((c, i) => c.sndUna === (sent[i]!.sndUna + 4) % 2 ** 32 && c.sndMax === c.sndUna);
      if (q.length === CONNS && acked) break;
      assert.ok(Date.now() < by, 'every ping acknowledged within 30 s');
      await new Promise((r) => setTimeout(r, 20));
    }
  });
});
