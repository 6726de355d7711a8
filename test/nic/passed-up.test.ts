/**
 * A WorkerNic that hands a batch on keeps it as the batch, not as a table entry per connection:
 * the transfer settles it by the same keys in the same order, found by place.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { openConnections } from '../../bench/offload.ts';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import { keptServer, PING_MS, peerHolds, socketKey, WORKER_CASE_MS, workerSetup } from './worker-helpers.ts';

const CONNS = 30;

describe('connections a WorkerNic passed up', () => {
  test('a batch handed on and settled makes no table entry at the source', {
    timeout: WORKER_CASE_MS,
  }, async (t) => {
    const { net, wh, peer } = await workerSetup(93, t);
    const [n0, n1] = wh.nics as [WorkerNic, WorkerNic];
    const served = keptServer(peer);
    await wh.host.ping('10.0.0.2', PING_MS);
    const keys = (await openConnections(wh.host, net, CONNS, 5)).map(socketKey);
    // Until then the peer resends its SYN-ACKs: one that reaches a source mid-move is passed up,
    // input of the table this case counts.
    await peerHolds(() => served.length, CONNS);
    const m = wh.offload;
    assert.equal((await m.offload(keys, n0)).moved.length, CONNS);
    const made = n0.tableEntriesMade;
    assert.equal((await m.move(keys, n0, n1)).moved.length, CONNS);
    // Before, each connection handed on made an entry in the source's table of connections
    // passed up, taken out again when the transfer settled them.
    assert.equal(n0.tableEntriesMade, made, 'entries made at the source by the move');
    // Settled: the source holds nothing for them, and they come back and leave as before.
    assert.equal((await m.move(keys, n1, n0)).moved.length, CONNS);
    assert.equal((await m.move(keys.slice().reverse(), n0, n1)).moved.length, CONNS);
    assert.equal((await m.upload(keys)).moved.length, CONNS);
    assert.equal(m.keysOn(n0).length + m.keysOn(n1).length, 0);
  });

  test('keys settled in another order than released are answered from the table', {
    timeout: WORKER_CASE_MS,
  }, async (t) => {
    const { net, wh, peer } = await workerSetup(94, t);
    const [n0] = wh.nics as [WorkerNic, WorkerNic];
    const served = keptServer(peer);
    await wh.host.ping('10.0.0.2', PING_MS);
    const keys = (await openConnections(wh.host, net, 6, 5)).map(socketKey);
    // The table's entries are counted: no resent SYN-ACK may reach the worker while it releases.
    await peerHolds(() => served.length, 6);
    assert.equal((await wh.offload.offload(keys, n0)).moved.length, 6);
    const made = n0.tableEntriesMade;
    // By reference, as a transfer releases: the worker keeps nothing of them.
    await n0.terminate(keys, {});
    // Out of order: every released batch enters the table, which answers.
    assert.deepEqual(await n0.takeQueued(keys.slice().reverse(), { drop: true }), []);
    assert.equal(n0.tableEntriesMade, made + 6);
  });
});
