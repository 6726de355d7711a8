/**
 * A crash's survivor owes every connection it took a prod (nic-worker.ts oweProds). A quiet one
 * (established, nothing in flight or to send, no timer armed, SACK agreed) is prodded by one pure
 * ACK, which the survivor sends from the connection's record without building it (prodUnbuilt):
 * the connection stays pending, to be built by its first segment or call, as one a move took
 * without a prod is. What must hold: each quiet connection is prodded exactly once and left
 * unbuilt, one that is not quiet is built and prodded as before, and every byte still goes both
 * ways afterwards.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { openConnections } from '../../bench/offload.ts';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import {
  nicCounter as counter,
  nicCounterIs as counterIs,
  echoAll,
  PING_MS,
  socketKey,
  workerSetup,
} from './worker-helpers.ts';

/** Several turns of the survivor's prods (BUILD_TURN_MS, 3 ms). */
const N = 120;

describe("a crash's survivor prods its quiet connections unbuilt", () => {
  test('each quiet connection gets one ACK from its record and stays unbuilt; one with keepalive on is built and prodded; every byte goes both ways after', {
    timeout: 120_000,
  }, async (t) => {
    const { net, wh, peer } = await workerSetup(96, t);
    peer
      .createServer((s) => {
        s.on('data', (d: Uint8Array) => s.write(d));
        s.on('error', () => {});
      })
      .listen(80);
    await wh.host.ping('10.0.0.2', PING_MS);
    const sockets = await openConnections(wh.host, net, N, 5);
    // A keepalive deadline is armed on these: not quiet, so their prod needs the connection.
    const KEPT = 20;
    for (const s of sockets.slice(0, KEPT)) s.setKeepAlive(true, 600_000);
    const keys = sockets.map(socketKey);
    const [n0, n1] = wh.nics as [WorkerNic, WorkerNic];
    assert.equal((await wh.offload.offload(keys, n0)).moved.length, N);
    // Data both ways at the first worker (each built by it), then quiet: its delayed ACKs sent
    // (and the peer's). Both fire within 200 ms; 2 s leaves a loaded worker's turn its time.
    await echoAll(net, sockets, 300);
    await net.sleep(2000);

    let toPeer = 0;
    const port = peer.port;
    const inner = port.handler!;
    port.handler = (f, info) => {
      toPeer++;
      inner(f, info);
    };
    const dead = once(n0, 'dead');
    await n0.kill();
    await dead;
    assert.equal((await wh.offload.recover(n0, n1)).moved.length, N);
    assert.equal(await counterIs(net, n1, 'nic.lazy.owed', 0), 0, 'every one prodded');
    assert.equal(await counter(n1, 'nic.lazy.acked'), N - KEPT, 'the quiet ones by an ACK from the record');
    assert.equal(await counter(n1, 'tcp.adopt.prodded'), KEPT, 'the others built and prodded');
    assert.equal(await counter(n1, 'nic.lazy.pending'), N - KEPT, 'the quiet ones still unbuilt');
    // The counters are the worker's word that each prod went out; the frames then cross the
    // simulated link, which at load may still carry some when the counters answer.
    const reached = Date.now() + 30_000;
    while (toPeer < N && Date.now() < reached) await net.sleep(20);
    assert.ok(toPeer >= N, `a frame at least for each connection (${toPeer})`);

    // Each quiet one builds at its first segment (the doorbell of the write), and runs on intact.
    await echoAll(net, sockets, 900);
    assert.equal(await counter(n1, 'nic.lazy.pending'), 0, 'built by their traffic');
    assert.equal(await counter(n1, 'nic.lazy.built'), N);
    assert.equal(await counter(n1, 'tcp.adopt.prodded'), KEPT, 'no quiet one prodded again at its build');
    assert.equal(await counter(n1, 'nic.lazy.invalid'), 0);
    for (const s of sockets) assert.equal(s.destroyed, false);
  });
});
