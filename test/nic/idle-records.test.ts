/**
 * A worker publishes a connection's hard-state record (and its word of quiet reads) after what
 * changes it: a frame in or out, a packet, a call, an update, its timer. An idle connection's
 * record is left as written: rewritten every heartbeat "in case", it cost each beat a pass over
 * the records, and the word's new stamp each time made an idle connection look touched to a
 * reader of the words. The timer is what that refresh stood for (a retransmission timeout moves
 * snd.nxt back with no frame in, and with none out when the link refuses it): it marks the
 * connection itself (NicEngineOptions.beforeTimer).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import { TcpStateId } from '../../src/state/tcp-state.ts';
import { idleConnections, nicCounter, socketKey, workerSetup } from './worker-helpers.ts';

/** Until the worker's heartbeat counter passes `beats` more than now (or 60 s): the count it reached. */
async function beatsPass(n: WorkerNic, beats: number): Promise<number> {
  const from = await nicCounter(n, 'nic.heartbeats');
  const by = Date.now() + 60_000;
  let at = from;
  while (at < from + beats && Date.now() < by) {
    await new Promise((r) => setTimeout(r, 20));
    at = await nicCounter(n, 'nic.heartbeats');
  }
  return at - from;
}

test("an idle worker connection's record is not published again, heartbeat after heartbeat", {
  timeout: 180_000,
}, async (t) => {
  const { wh, sockets } = await idleConnections(t, { seed: 161, n: 2, capacity: 100 });
  const [n0] = wh.nics as [WorkerNic, WorkerNic];
  const keys = sockets.map(socketKey);
  assert.equal((await wh.offload.offload(keys, n0)).moved.length, 2);
  // Built by the write (a connection taken unbuilt has no record of its own to publish).
  for (const s of sockets) s.write('hello');
  // Quiet: established, everything acknowledged, no timer armed.
  const by = Date.now() + 60_000;
  for (;;) {
    const q = await n0.query(keys);
    const quiet = q.every(
      (c) => c.state === TcpStateId.ESTABLISHED && c.sndUna === c.sndMax && !c.timerArmed,
    );
    if (quiet && q.length === 2) break;
    assert.ok(Date.now() < by, 'both connections went quiet within 60 s');
    await new Promise((r) => setTimeout(r, 20));
  }
  // A beat or two for what the last query marked to be published.
  await beatsPass(n0, 2);
  const before = await nicCounter(n0, 'nic.records.published');
  assert.ok(before >= 2, `each built connection's record was published (${before})`);
  assert.ok((await beatsPass(n0, 10)) >= 10, 'ten heartbeats passed');
  assert.equal(
    await nicCounter(n0, 'nic.records.published'),
    before,
    'no record published while both connections stayed idle for ten heartbeats',
  );
});

test("a worker connection's timer publishes what it changed, though no frame came in or went out", {
  timeout: 180_000,
}, async (t) => {
  const { net, wh, peer } = await workerSetup(162, t, { count: 1, deadAfterMs: 60_000 });
  const [n0] = wh.nics as [WorkerNic];
  peer.createServer((s) => s.on('error', () => {})).listen(80);
  const s = wh.host.connect({ port: 80, host: '10.0.0.2' });
  s.on('error', () => {});
  await new Promise((r) => s.once('connect', r));
  const k = socketKey(s);
  assert.equal((await wh.offload.offload([k], n0)).moved.length, 1);
  // The data leaves and is never acknowledged; then the worker's own link refuses every frame,
  // so the timeouts that follow send nothing (no frame out marks the connection).
  peer.cut();
  s.write(Buffer.alloc(1000, 7));
  const sent = Date.now() + 60_000;
  while ((await n0.query([k]))[0]?.sndMax === (await n0.query([k]))[0]?.sndUna) {
    assert.ok(Date.now() < sent, 'the data was sent within 60 s');
    await new Promise((r) => setTimeout(r, 20));
  }
  const port = net.switch.ports.find((p) => p.name === 'w.nic0')!;
  port.cut();
  await beatsPass(n0, 2);
  const before = await nicCounter(n0, 'nic.records.published');
  const rtos = await nicCounter(n0, 'tcp.rto.refused');
  const by = Date.now() + 60_000;
  while ((await nicCounter(n0, 'tcp.rto.refused')) < rtos + 1) {
    assert.ok(Date.now() < by, 'a timeout fired within 60 s');
    await new Promise((r) => setTimeout(r, 20));
  }
  // The timer marks the connection; the publish runs in the flush the mark defers
  // (clock.defer), so a counters request can be answered between the two.
  const flushed = Date.now() + 30_000;
  while ((await nicCounter(n0, 'nic.records.published')) <= before) {
    assert.ok(Date.now() < flushed, 'the timeout (snd.nxt back to snd.una) was published');
    await new Promise((r) => setTimeout(r, 20));
  }
  port.restore();
  peer.restore();
});
