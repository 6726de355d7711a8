/**
 * A worker's connections entering TIME_WAIT with empty rings give their shared blocks back, and
 * the memory goes while they still wait (60 s): before, each block held its slab alive, on the
 * worker (its slot and state) and on the host (its handle), so under churn a cycle's slabs
 * outlived its connections by a minute. test/team/time-wait-gone.test.ts has the unread, crash and
 * move cases.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { addWorkerHost } from './worker-helpers.ts';

const CONNS = 12;
/** Rings of 4 MiB each way: a block of two is over a sixteenth of a slab, so a buffer of its own. */
const RING = 4 << 20;
const MB = 2 ** 20;

test('the blocks given back in TIME_WAIT are freed while the connections still wait', {
  timeout: 120_000,
}, async (t) => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const net = new SimNetwork({ seed: 37, virtualTime: false });
  const wh = addWorkerHost(net, { count: 1, ringCapacity: RING });
  t.after(() => {
    wh.close();
    net.close();
  });
  const peer = net.addHost({ ip: '10.0.0.2/24' });
  await Promise.all(wh.nics.map((x) => x.ready()));
  peer
    .createServer((s: TcpSocket) => {
      s.on('data', () => {});
      s.on('error', () => {});
      s.on('end', () => s.end());
    })
    .listen(80);
  const sockets: TcpSocket[] = [];
  for (let i = 0; i < CONNS; i++) {
    const s = wh.host.connect({ port: 80, host: '10.0.0.2', tcp: { sndBufSize: RING, rcvBufSize: RING } });
    s.on('error', () => {});
    sockets.push(s);
  }
  while (sockets.some((s) => s.connecting)) await net.sleep(10);
  for (const s of sockets) s.write(Buffer.alloc(1000, 7));
  await net.sleep(50);
  assert.equal((await wh.offload.offload('all', wh.nics[0]!)).moved.length, CONNS);
  assert.equal((await wh.nics[0]!.counters())['nic.time-wait.blocks'], 0, 'none in TIME_WAIT while they run');
  const before = process.memoryUsage().arrayBuffers;
  assert.ok(before >= 80 * MB, `the blocks are alive: ${Math.round(before / MB)} MiB`);
  // This side closes first: the worker's side of each waits in TIME_WAIT (60 s) from the peer's FIN.
  const closed = sockets.map((s) => new Promise((r) => s.once('close', r)));
  for (const s of sockets) s.end();
  await Promise.all(closed);
  // Only the host's collector is driven (see slab-collect.test.ts): the worker lets go of its
  // objects of the buffers when the host says its own are gone.
  let after = before;
  for (let i = 0; i < 100 && after > before - 64 * MB; i++) {
    gc();
    await net.sleep(20);
    after = process.memoryUsage().arrayBuffers;
  }
  const freed = Math.round((before - after) / MB);
  assert.ok(freed >= 64, `${freed} MiB of shared buffers freed with the connections in TIME_WAIT`);
  const c = await wh.nics[0]!.counters();
  assert.equal(c['nic.time-wait.given'], CONNS, 'all of them still wait, block-less');
  assert.equal(c['nic.time-wait.blocks'], 0);
});
