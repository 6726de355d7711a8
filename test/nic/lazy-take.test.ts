/**
 * A worker takes a quiet connection by its record's owner word and builds it only when something
 * touches it (a frame, a doorbell, a call, a request); a terminate hands it on or up unread. What
 * must hold: bytes intact through every hop, a connection with a timer armed built at once (its
 * timer fires on time), and a worker that dies before the build loses nothing.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { openConnections } from '../../bench/offload.ts';
import { rebuildTcpState, TRANSFER_RECORD_AT } from '../../src/nic/hard-state.ts';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import type { SimNetwork } from '../../src/sim/sim-network.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { DEFAULT_TCP_CACHED } from '../../src/state/tcp-state.ts';
import { socketKey, workerSetup } from './worker-helpers.ts';

const N = 16;

async function counter(n: WorkerNic, key: string): Promise<number> {
  return (await n.counters())[key] ?? 0;
}

/** `len` bytes of `fill` from `s` to the echoing peer and back, checked byte for byte. */
async function echo(
  net: SimNetwork,
  s: TcpSocket,
  len: number,
  fill: number,
  withinMs = 10_000,
): Promise<void> {
  const want = Buffer.alloc(len, fill);
  const parts: Buffer[] = [];
  let got = 0;
  const on = (d: Uint8Array): void => {
    parts.push(Buffer.from(d));
    got += d.length;
  };
  s.on('data', on);
  s.write(want);
  const t0 = net.now();
  while (got < len && net.now() - t0 < withinMs) await net.sleep(5);
  s.off('data', on);
  assert.deepEqual(
    Buffer.concat(parts),
    want,
    `echo of ${len} bytes of ${fill} on port ${s.connection?.localPort}`,
  );
}

async function echoSetup(seed: number, t: Parameters<typeof workerSetup>[1]) {
  const { net, wh, peer } = await workerSetup(seed, t);
  const servers: TcpSocket[] = [];
  peer
    .createServer((s) => {
      servers.push(s);
      s.on('data', (d: Uint8Array) => s.write(d));
      s.on('error', () => {});
    })
    .listen(80);
  await wh.host.ping('10.0.0.2');
  const sockets = await openConnections(wh.host, net, N, 5);
  const t0 = net.now();
  while (servers.length < N && net.now() - t0 < 5_000) await net.sleep(5);
  return {
    net,
    wh,
    peer,
    servers,
    sockets,
    keys: sockets.map(socketKey),
    nics: wh.nics as [WorkerNic, WorkerNic],
  };
}

describe('connections taken unbuilt by a worker', () => {
  test('moved idle, none is built; the first frame or doorbell builds one; moved on and uploaded unread; bytes intact', {
    timeout: 60_000,
  }, async (t) => {
    const { net, wh, sockets, keys, nics } = await echoSetup(81, t);
    const [n0, n1] = nics;
    const m = wh.offload;
    assert.equal((await m.offload(keys, n0)).moved.length, N);
    assert.equal(await counter(n0, 'nic.lazy.pending'), N, 'taken unbuilt from the host');
    assert.equal(await counter(n0, 'nic.initiate.records'), 0, 'no record read');
    assert.equal(n0.load, N);
    assert.equal((await m.move(keys, n0, n1)).moved.length, N);
    assert.equal(await counter(n0, 'nic.terminate.unread'), N, 'handed on unread');
    assert.equal(await counter(n0, 'nic.lazy.pending'), 0);
    assert.equal(await counter(n1, 'nic.lazy.pending'), N);
    assert.equal((await counter(n0, 'nic.lazy.built')) + (await counter(n1, 'nic.lazy.built')), 0);
    // The host writes: the doorbell builds the connection; the peer's echo reaches it built.
    await echo(net, sockets[0]!, 3000, 1);
    assert.equal(await counter(n1, 'nic.lazy.built'), 1, 'only the connection touched is built');
    assert.equal(await counter(n1, 'nic.lazy.pending'), N - 1);
    // Its delayed ACK and the rest go out; then it is quiet again, and taken unbuilt again.
    await net.sleep(400);
    assert.equal((await m.move(keys, n1, n0)).moved.length, N);
    assert.equal(await counter(n1, 'nic.terminate.unread'), N - 1);
    assert.equal(await counter(n0, 'nic.lazy.pending'), N);
    assert.equal((await m.upload(keys)).moved.length, N);
    assert.equal(await counter(n0, 'nic.terminate.unread'), 2 * N, 'uploaded unread');
    assert.equal(await counter(n0, 'nic.lazy.pending'), 0);
    assert.equal(n0.load + n1.load, 0);
    await Promise.all(sockets.map((s, i) => echo(net, s, 1000 + i, 2 + i)));
  });

  test('a frame from the peer builds the connection it is for, and only that one', {
    timeout: 60_000,
  }, async (t) => {
    const { net, wh, sockets, keys, nics, servers } = await echoSetup(82, t);
    const [n0] = nics;
    // The peer's side of the first connection: its write reaches the worker first.
    const server = servers.find((s) => s.remotePort === keys[0]!.localPort);
    assert.ok(server);
    assert.equal((await wh.offload.offload(keys, n0)).moved.length, N);
    assert.equal(await counter(n0, 'nic.lazy.pending'), N);
    const got: Buffer[] = [];
    sockets[0]!.on('data', (d: Uint8Array) => got.push(Buffer.from(d)));
    server.write(new Uint8Array(500).fill(9));
    const t0 = net.now();
    while (Buffer.concat(got).length < 500 && net.now() - t0 < 10_000) await net.sleep(5);
    assert.deepEqual(Buffer.concat(got), Buffer.alloc(500, 9));
    assert.equal(await counter(n0, 'nic.lazy.built'), 1);
    assert.equal(await counter(n0, 'nic.lazy.pending'), N - 1);
  });

  test('a ping through the worker builds none of them (an echo touches no connection)', {
    timeout: 60_000,
  }, async (t) => {
    const { net, wh, sockets, keys, nics } = await echoSetup(86, t);
    const [n0] = nics;
    assert.equal((await wh.offload.offload(keys, n0)).moved.length, N);
    const rx = await counter(n0, 'nic.rx.host');
    // The echo reply comes in through the worker's link and goes up to the host.
    await wh.host.ping('10.0.0.2');
    assert.ok((await counter(n0, 'nic.rx.host')) > rx, 'the reply passed through the worker');
    assert.equal(await counter(n0, 'nic.lazy.pending'), N, 'still unbuilt');
    assert.equal(await counter(n0, 'nic.lazy.built'), 0);
    await echo(net, sockets[0]!, 800, 3);
    assert.equal(await counter(n0, 'nic.lazy.built'), 1);
  });

  test('a connection with a timer armed is built at its take, and retransmits on it', {
    timeout: 60_000,
  }, async (t) => {
    const { net, wh, peer, sockets, keys, nics } = await echoSetup(83, t);
    const [n0] = nics;
    // Unacknowledged data: the host's retransmission timer is armed when the batch is taken.
    peer.cut();
    const want = Buffer.alloc(1200, 5);
    const got: Buffer[] = [];
    sockets[0]!.on('data', (d: Uint8Array) => got.push(Buffer.from(d)));
    sockets[0]!.write(want);
    await net.sleep(20);
    assert.equal((await wh.offload.offload(keys, n0)).moved.length, N);
    assert.equal(await counter(n0, 'nic.lazy.pending'), N - 1, 'the idle ones only');
    peer.restore();
    // Nothing else will send it: no application call, no frame from the peer (it saw nothing).
    const t0 = net.now();
    while (Buffer.concat(got).length < want.length && net.now() - t0 < 8_000) await net.sleep(5);
    assert.deepEqual(Buffer.concat(got), want, 'retransmitted by the worker and echoed');
    assert.equal(await counter(n0, 'nic.lazy.built'), 0, 'built at the take, not later');
  });

  test('a record found corrupt at the build is refused: that connection is aborted and its slot freed, the others run on', {
    timeout: 60_000,
  }, async (t) => {
    const { net, wh, sockets, keys, nics } = await echoSetup(85, t);
    const [n0] = nics;
    assert.equal((await wh.offload.offload(keys, n0)).moved.length, N);
    assert.equal(await counter(n0, 'nic.lazy.pending'), N);
    // Something scribbles over the first connection's record while it waits unbuilt: every
    // scalar after its header (the connection's key first) becomes NaN.
    const block = (sockets[0]!.connection as unknown as { block: { sab: SharedArrayBuffer; at: number } })
      .block;
    new Float64Array(block.sab, block.at + TRANSFER_RECORD_AT + 8, 24).fill(Number.NaN);
    const errors: string[] = [];
    sockets[0]!.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? e.message));
    let closed = false;
    sockets[0]!.on('close', () => {
      closed = true;
    });
    // The write rings the doorbell that builds it.
    sockets[0]!.write(new Uint8Array(100).fill(7));
    const t0 = net.now();
    while (!closed && net.now() - t0 < 5_000) await net.sleep(5);
    assert.ok(closed, 'the socket of the corrupt record is closed');
    assert.equal(await counter(n0, 'nic.lazy.invalid'), 1);
    assert.equal(await counter(n0, 'nic.lazy.pending'), N - 1);
    assert.equal(n0.load, N - 1, 'its slot freed');
    assert.deepEqual(errors, ['ECONNABORTED'], 'the socket is told');
    await Promise.all(sockets.slice(1).map((s, i) => echo(net, s, 500 + i, 60 + i)));
  });

  test('a worker that dies before it builds them loses nothing: each one rebuilds from the hard state', {
    timeout: 60_000,
  }, async (t) => {
    const { net, wh, sockets, keys, nics } = await echoSetup(84, t);
    const [n0, n1] = nics;
    // Data first, so the hard state has something to be right about.
    await Promise.all(sockets.map((s, i) => echo(net, s, 700 + i, 40 + i)));
    await net.sleep(400);
    const before = keys.map((k) => {
      const d = wh.stack.tcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort)!.state.delegated;
      return { sndUna: d.sndUna, sndMax: d.sndMax, rcvNxt: d.rcvNxt };
    });
    assert.equal((await wh.offload.offload(keys, n0)).moved.length, N);
    assert.equal((await wh.offload.move(keys, n0, n1)).moved.length, N);
    assert.equal(await counter(n1, 'nic.lazy.pending'), N);
    const dead = once(n1, 'dead');
    await n1.kill();
    await dead;
    const salvaged = n1.salvage();
    assert.equal(salvaged.length, N);
    for (const s of salvaged) {
      const i = keys.findIndex((k) => k.localPort === s.key.localPort);
      assert.ok(s.hard, 'hard state survived the worker');
      assert.deepEqual(
        { sndUna: s.hard.sndUna, sndMax: s.hard.sndMax, rcvNxt: s.hard.rcvNxt },
        before[i],
        'the hard state the first worker wrote as it let go',
      );
      const path = wh.stack.pathTo(s.key.remoteIp)!;
      const rebuilt = rebuildTcpState(s.hard, s.sendRing, s.recvRing, DEFAULT_TCP_CACHED, path, net.now());
      assert.equal(rebuilt.delegated.rcvNxt, before[i]!.rcvNxt);
    }
  });
});
