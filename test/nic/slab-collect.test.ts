/**
 * A worker gives back the shared buffers the host let go soon, not at its next full collection:
 * V8 counts a SharedArrayBuffer as no external memory of any thread holding it, so nothing hurried
 * a worker with a small heap to collect its objects of them, and under churn the buffers let go
 * piled up (see weighSlabsLetGo in nic-worker.ts).
 */
import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { CONN_SLAB_BYTES } from '../../src/nic/hard-state.ts';
import { onSlabGone, slabIdOf } from '../../src/nic/worker/conn-blocks.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { peerHolds, workerSetup } from './worker-helpers.ts';

const CONNS = 12;
/** Rings of 4 MiB each way: a block of two is over a sixteenth of a slab, so a buffer of its own. */
const RING = 4 << 20;
const MB = 2 ** 20;
/** How long the buffers may take to go: 0.5-1 s at load 40-45; 30x that for a slower machine. */
const FREED_WITHIN_MS = 30_000;
/**
 * A worker case's bound: a worker's start took 14 s at load 42 (busy loops added) and the rest of
 * a case 2-3 s, besides the wait for the buffers; four times slower still fits.
 */
const CASE_MS = 180_000;
/** How long the closes may take: under 1 s at load 35. */
const CLOSED_WITHIN_MS = 60_000;

/**
 * Resolves once every socket closed, or fails at CLOSED_WITHIN_MS naming how many did: a wait with
 * no bound ends the case as a timeout, which says nothing of where the closes stopped.
 */
function allClose(sockets: readonly TcpSocket[]): Promise<void> {
  let closed = 0;
  return new Promise<void>((resolve, reject) => {
    const late = setTimeout(
      () =>
        reject(new Error(`${closed} of ${sockets.length} connections closed within ${CLOSED_WITHIN_MS} ms`)),
      CLOSED_WITHIN_MS,
    );
    for (const s of sockets)
      s.once('close', () => {
        if (++closed < sockets.length) return;
        clearTimeout(late);
        resolve();
      });
  });
}

/**
 * CONNS connections with rings of their own, offloaded to one worker, each with a little written;
 * `served` are the peer's sides (each answers a FIN with its own). Only the host's collector is
 * driven here (`gc`): the host's objects of the buffers go, it tells the worker ('slabs-gone'),
 * and the worker's objects must go with no collection forced in it.
 */
async function offloadedBlocks(t: TestContext, seed: number, workers = 1) {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const { net, wh, peer } = await workerSetup(seed, t, { count: workers, ringCapacity: RING });
  const served: TcpSocket[] = [];
  peer
    .createServer((s: TcpSocket) => {
      s.on('data', () => {});
      s.on('error', () => {});
      s.on('end', () => s.end());
      served.push(s);
    })
    .listen(80);
  const sockets: TcpSocket[] = [];
  for (let i = 0; i < CONNS; i++) {
    const s = wh.host.connect({ port: 80, host: '10.0.0.2', tcp: { sndBufSize: RING, rcvBufSize: RING } });
    s.on('error', () => {});
    s.on('data', () => {});
    s.on('end', () => s.end());
    sockets.push(s);
  }
  while (sockets.some((s) => s.connecting)) await net.sleep(10);
  // A socket here connects at the SYN-ACK; the peer's application is handed its side only after
  // the handshake's last ACK, which goes out through the worker and back over the switch, reached
  // the peer. At load 20-40 the case sometimes came to the peer's ends while the peer held 0 or 3
  // of its 12 sides: it ended only those, the others were never ended, and their connections never
  // closed. So the peer must hold every side before the case goes on.
  await peerHolds(() => served.length, CONNS);
  for (const s of sockets) s.write(Buffer.alloc(1000, 7));
  await net.sleep(50);
  assert.equal((await wh.offload.offload('all', wh.nics[0]!)).moved.length, CONNS);
  // Each block is a send ring of the placement's share (ringUnderLoad: 2.66 MiB at 12) and a receive
  // ring of the window promised, the whole 4 MiB: the socket named its rcvBufSize, which locks it
  // against autotuning (a tuned one promises 64 KiB, and gets 2.66 MiB). Together the blocks must
  // be more than a slab: a thread shows its collector only a slab's worth let go (weighSlabsLetGo,
  // weighNumbered), so 12 tuned blocks, 63.9 MiB, were left to each thread's own next collection.
  const before = process.memoryUsage().arrayBuffers;
  assert.ok(before >= 80 * MB, `the blocks are alive: ${Math.round(before / MB)} MiB`);
  /**
   * MiB of shared buffers given back once the host's collector ran, up to 64 MiB, within
   * FREED_WITHIN_MS. Bounded by time, not only by tries: each try is a full collection, which took
   * about 250 ms at load 40, so where the buffers never went (the 64 MiB rule before the sockets
   * were locked) a hundred tries outlasted the case's bound at load 45, and it ended as a timeout
   * instead of its message.
   */
  const freedMiB = async (): Promise<number> => {
    const deadline = Date.now() + FREED_WITHIN_MS;
    let after = before;
    for (let i = 0; i < 10_000 && after > before - 64 * MB && Date.now() < deadline; i++) {
      gc();
      await net.sleep(20);
      after = process.memoryUsage().arrayBuffers;
    }
    return Math.round((before - after) / MB);
  };
  /** The peer closes first (its side waits in TIME_WAIT), each socket here answers its FIN. */
  const peerCloses = async (): Promise<void> => {
    const closed = allClose(sockets);
    for (const s of served) s.end();
    await closed;
    sockets.length = 0;
  };
  return { wh, net, sockets, served, peerCloses, freedMiB };
}

test('the buffers the host let go are freed without waiting for the worker to collect on its own', {
  timeout: CASE_MS,
}, async (t) => {
  const { wh, peerCloses, freedMiB } = await offloadedBlocks(t, 35);
  await peerCloses();
  const freed = await freedMiB();
  assert.ok(
    freed >= 64,
    `${freed} MiB of shared buffers freed within ${FREED_WITHIN_MS} ms of the connections' close`,
  );
  const c = await wh.nics[0]!.counters();
  assert.ok((c['nic.slabs.weighed'] ?? 0) >= 1, "the worker showed its collector the buffers' weight");
});

test('the blocks a worker gives back in TIME_WAIT are freed while the connections still wait', {
  timeout: CASE_MS,
}, async (t) => {
  // Before, each block held its buffer on the worker (its slot and state) and on the host (its
  // handle) for the 60 s of TIME_WAIT: under churn, a cycle's slabs outlived it by a minute.
  const { wh, sockets, freedMiB } = await offloadedBlocks(t, 37);
  assert.equal((await wh.nics[0]!.counters())['nic.time-wait.blocks'], 0, 'none in TIME_WAIT while they run');
  // This side closes first: the worker's side of each waits in TIME_WAIT from the peer's FIN.
  const closed = allClose(sockets);
  for (const s of sockets) s.end();
  await closed;
  const freed = await freedMiB();
  assert.ok(
    freed >= 64,
    `${freed} MiB of shared buffers freed within ${FREED_WITHIN_MS} ms, the connections in TIME_WAIT`,
  );
  const c = await wh.nics[0]!.counters();
  assert.equal(c['nic.time-wait.given'], CONNS, 'all of them still wait, block-less');
  assert.equal(c['nic.time-wait.blocks'], 0);
});

test('a worker the connections moved through gives back their buffers once they close elsewhere', {
  timeout: CASE_MS,
}, async (t) => {
  // Moved to the second worker, run there (the peer's data builds them), moved back: the second
  // keeps their states for a next visit (statePool), and each state's released connection object
  // kept its user, the slot, the block and the block's buffer, after the host had let it go.
  const { wh, net, served, peerCloses, freedMiB } = await offloadedBlocks(t, 39, 2);
  const [a, b] = [wh.nics[0]!, wh.nics[1]!];
  const keys = wh.offload.keysOn(a);
  assert.equal((await wh.offload.move(keys, a, b)).moved.length, CONNS);
  for (const s of served) s.write(Buffer.alloc(100, 1));
  await net.sleep(200);
  assert.equal((await wh.offload.move(keys, b, a)).moved.length, CONNS);
  assert.equal((await b.counters())['nic.pool.states'], CONNS, 'the states wait for a next visit');
  await peerCloses();
  const freed = await freedMiB();
  assert.ok(
    freed >= 64,
    `${freed} MiB of shared buffers freed within ${FREED_WITHIN_MS} ms of the connections' close`,
  );
  assert.equal((await b.counters())['nic.pool.states'], CONNS, 'still pooled, holding no buffer');
});

test('a connection the host ran after an upload gives back its buffer once it closes on a worker', {
  timeout: CASE_MS,
}, async (t) => {
  // Uploaded, the host runs each connection on its block's rings; offloaded again, the host's
  // released connection object keeps that state (the hand-over's releasedBy, and the host table's
  // entry while its placeholder forwards to the worker: until the worker's 'closed', after the
  // 60 s of TIME_WAIT), and the state named the block: its buffer outlived the close by a minute.
  const { wh, net, sockets, freedMiB } = await offloadedBlocks(t, 41);
  const nic = wh.nics[0]!;
  const keys = wh.offload.keysOn(nic);
  assert.equal((await wh.offload.upload(keys)).moved.length, CONNS);
  for (const s of sockets) s.write(Buffer.alloc(100, 2));
  await net.sleep(100);
  assert.equal((await wh.offload.offload(keys, nic)).moved.length, CONNS);
  // This side closes first: the worker gives each block back in TIME_WAIT, the host's placeholders stay.
  const closed = allClose(sockets);
  for (const s of sockets) s.end();
  await closed;
  sockets.length = 0;
  const freed = await freedMiB();
  assert.ok(
    freed >= 64,
    `${freed} MiB of shared buffers freed within ${FREED_WITHIN_MS} ms, the connections in TIME_WAIT`,
  );
  assert.equal((await nic.counters())['nic.time-wait.given'], CONNS, 'all of them wait, block-less');
});

test('the host collects its objects of the buffers it numbered without waiting for its heap to grow', {
  timeout: 60_000,
}, async () => {
  // Numbered (handed to workers), then dropped: nothing else allocates here and no collection is
  // forced, so only the weight the host shows its collector for them (weighNumbered) brings one.
  // A SharedArrayBuffer alone counts for nothing towards it.
  const gone = new Set<number>();
  const stop = onSlabGone((id) => gone.add(id));
  try {
    const ids: number[] = [];
    (() => {
      for (let i = 0; i < 3; i++) ids.push(slabIdOf(new SharedArrayBuffer(CONN_SLAB_BYTES)));
    })();
    const heard = () => ids.filter((id) => gone.has(id)).length;
    for (let i = 0; i < 200 && heard() === 0; i++) await new Promise((r) => setTimeout(r, 25));
    assert.ok(heard() >= 1, `${heard()} of ${ids.length} dropped buffers collected by the host within 5 s`);
  } finally {
    stop();
  }
});
