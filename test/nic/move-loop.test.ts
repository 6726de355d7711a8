/**
 * Moves must cost what the state costs, round after round: nothing a move makes may pile up.
 * A loop of offload, move there and back, and upload of the same idle connections, with the
 * counters and the host's own tables read after each round.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { openConnections } from '../../bench/offload.ts';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import { keptServer, PING_MS, peerHolds, socketKey, workerSetup } from './worker-helpers.ts';

const CONNS = 40;
const ROUNDS = 12;

describe('a loop of moves on WorkerNics', () => {
  test('each round makes nothing new: block views, shared memory and tables stay as round one left them', {
    timeout: 120_000,
  }, async (t) => {
    const { net, wh, peer } = await workerSetup(91, t);
    const [n0, n1] = wh.nics as [WorkerNic, WorkerNic];
    const served = keptServer(peer);
    await wh.host.ping('10.0.0.2', PING_MS);
    const keys = (await openConnections(wh.host, net, CONNS, 5)).map(socketKey);
    // Until then the peer resends its SYN-ACKs, and one that reaches a worker mid-move is passed
    // up: an entry in a table whose size the rounds compare.
    await peerHolds(() => served.length, CONNS);
    const m = wh.offload;
    const shape = async () => {
      const c = await Promise.all([n0.counters(), n1.counters()]);
      return {
        // Views made over a connection's block: once per connection and worker, not per move.
        partsMade: c.map((x) => x['nic.blocks.parts-made']),
        partsFound: c.map((x) => x['nic.blocks.parts-found'] ?? 0),
        // Table entries (four-tuple, slots, pooled states): taken up again from the tables'
        // spares by connections that come back, not made per move.
        entriesMade: c.map((x) => x['nic.tables.entries-made']),
        // The same of the WorkerNics' tables on the host (handles by tuple, released by reference).
        hostEntriesMade: [n0.tableEntriesMade, n1.tableEntriesMade],
        // Every connection's block is shared memory: one per connection, handed on by moves.
        arrayBuffers: process.memoryUsage().arrayBuffers,
        host: wh.stack.tcp.size,
        offloaded: m.keysOn(n0).length + m.keysOn(n1).length,
        load: n0.load + n1.load,
      };
    };
    const round = async () => {
      assert.equal((await m.offload(keys, n0)).moved.length, CONNS);
      assert.equal((await m.move(keys, n0, n1)).moved.length, CONNS);
      assert.equal((await m.move(keys, n1, n0)).moved.length, CONNS);
      assert.equal((await m.upload(keys)).moved.length, CONNS);
    };
    // Two rounds first: the first gives every connection a block at each worker and a pooled
    // state at each end.
    await round();
    await round();
    const first = await shape();
    assert.deepEqual(
      first.partsMade.map((n) => n > 0),
      [true, true],
    );
    for (let r = 0; r < ROUNDS; r++) await round();
    const last = await shape();
    // A block's parts are found (and its rings' headers checked) once per connection a worker
    // installs: NIC 0 installs each connection twice a round, NIC 1 once; its slot keeps them
    // for the rest (the record's take, the terminate's writes). Found again at every use, they
    // were 5 per connection and move.
    const found = last.partsFound.map((n, i) => n - first.partsFound[i]!);
    assert.deepEqual(found, [2 * ROUNDS * CONNS, ROUNDS * CONNS], `parts found again: ${found}`);
    // Buffers of messages in flight come and go with the garbage collector: a block per
    // connection and move would be ROUNDS * 3 * CONNS blocks with two 16 KiB rings and more each (45 MB).
    assert.ok(
      last.arrayBuffers - first.arrayBuffers < 2 << 20,
      `shared memory grew by ${last.arrayBuffers - first.arrayBuffers} bytes`,
    );
    assert.deepEqual(
      { ...last, arrayBuffers: 0, partsFound: [] },
      { ...first, arrayBuffers: 0, partsFound: [] },
    );
  });
});
