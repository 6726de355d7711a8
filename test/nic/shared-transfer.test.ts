import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { StateValidationError } from '../../src/core/errors.ts';
import { allocConnBlock } from '../../src/nic/hard-state.ts';
import { keyOfState } from '../../src/nic/nic.ts';
import { blockOfRings, sameBlock } from '../../src/nic/worker/conn-blocks.ts';
import type { WorkerReply, WorkerRequest } from '../../src/nic/worker/protocol.ts';
import { packBlocks } from '../../src/nic/worker/transfer-wire.ts';
import type { SimNetwork } from '../../src/sim/sim-network.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import type { Stack } from '../../src/stack/stack.ts';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import { ByteRing } from '../../src/state/byte-ring.ts';
import { flattenTrees } from '../../src/state/offload-tree.ts';
import { decodeBatch, encodeBatch, STATE_CODEC_LAYOUT } from '../../src/state/state-codec.ts';
import type { TcpState } from '../../src/state/tcp-state.ts';
import { collect, randomBytes, sha256 } from '../helpers/streams.ts';
import { normalize, sampleTrees } from '../state/helpers.ts';
import { socketKey as keyOf, PING_MS, workerSetup as setup, WORKER_CASE_MS } from './worker-helpers.ts';

/** The state's rings, copied into shared rings (what a worker NIC's block holds). */
function sharedCopy(s: TcpState): { send: ByteRing; recv: ByteRing } {
  const d = s.delegated;
  const send = ByteRing.createShared(d.sendBuffer.maxCapacity);
  const recv = ByteRing.createShared(d.recvBuffer.maxCapacity);
  send.write(d.sendBuffer.toArray());
  recv.write(d.recvBuffer.toArray());
  return { send, recv };
}

function refusedOn(field: string): (e: unknown) => boolean {
  return (e) => e instanceof StateValidationError && e.field === field;
}

/**
 * Nothing more moves on a connection's sending side: all it sent is acknowledged, and it has
 * nothing left to send or the other side's window is shut.
 */
function sendSettled(c: TcpConnection | undefined, s: TcpSocket): boolean {
  if (c === undefined) return false;
  const d = c.state.delegated;
  return d.sndUna === d.sndMax && (d.sndWnd === 0 || (d.sendBuffer.length === 0 && s.writableLength === 0));
}

/**
 * Wait (bounded, 20 s) until both sides of every pair (`hosts[i]` and the peer's socket on its
 * port) have settled their sending sides and `held` reads the same twice in a row (a writer's refill
 * at the last ACK is done); then what `held` reads, which nothing changes while neither side reads.
 */
async function quiescent(
  net: SimNetwork,
  host: Stack,
  peer: Stack,
  hosts: readonly TcpSocket[],
  peers: readonly TcpSocket[],
  held: () => number,
): Promise<number> {
  const byPort = new Map(peers.map((ps) => [ps.remotePort!, ps]));
  const settled = (): boolean =>
    hosts.every((s) => {
      const k = keyOf(s);
      const ps = byPort.get(k.localPort)!;
      return (
        sendSettled(host.tcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort), s) &&
        sendSettled(peer.tcp.lookup(k.remoteIp, k.remotePort, k.localIp, k.localPort), ps)
      );
    });
  const t0 = net.now();
  let last = -1;
  for (;;) {
    if (settled()) {
      const now = held();
      if (now === last) return now;
      last = now;
    } else last = -1;
    assert.ok(net.now() - t0 < 20_000, 'the connections settle');
    await net.sleep(5);
  }
}

describe('state codec: rings by reference', () => {
  test('a batch by reference carries no data, and decodes to the very rings given, validated', () => {
    const trees = sampleTrees(3);
    const states = flattenTrees(trees);
    const inline = encodeBatch(trees, 1000);
    const byRef = encodeBatch(trees, 1000, { ringsByRef: true });
    const data = states.reduce(
      (n, s) => n + s.delegated.sendBuffer.length + s.delegated.recvBuffer.length,
      0,
    );
    assert.equal(data, 3 * 350);
    assert.equal(inline.length - byRef.length, data, 'exactly the data is left out');
    const rings = new Map(states.map((s) => [s.const.localPort, sharedCopy(s)]));
    const out = decodeBatch(byRef, 1000, { rings: (s) => rings.get(s.const.localPort) ?? null });
    const got = flattenTrees(out);
    for (const s of got) {
      const r = rings.get(s.const.localPort)!;
      assert.equal(s.delegated.sendBuffer, r.send, 'the given send ring itself, not a copy');
      assert.equal(s.delegated.recvBuffer, r.recv);
    }
    // Everything else as the inline batch has it.
    const strip = (ts: TcpState[]) =>
      ts.map((s) => {
        const n = normalize({ ...s, path: null }) as { delegated: Record<string, unknown> };
        n.delegated.sendBuffer = s.delegated.sendBuffer.toArray();
        n.delegated.recvBuffer = s.delegated.recvBuffer.toArray();
        return n;
      });
    assert.deepEqual(strip(got), strip(flattenTrees(decodeBatch(inline, 1000))));
  });

  test('a batch by reference is refused without rings, with a connection it has none for, or with rings that do not fit the state', () => {
    const trees = sampleTrees(2);
    const byRef = encodeBatch(trees, 1000, { ringsByRef: true });
    assert.throws(() => decodeBatch(byRef, 1000), refusedOn('flags'));
    const first = flattenTrees(trees)[0]!;
    const only = sharedCopy(first);
    assert.throws(
      () =>
        decodeBatch(byRef, 1000, {
          rings: (s) => (s.const.localPort === first.const.localPort ? only : null),
        }),
      refusedOn('delegated.sendBuffer'),
    );
    // 200 bytes in flight (snd.una..snd.max) and an empty send ring: not a connection.
    const empty = () => ({ send: ByteRing.createShared(4096), recv: ByteRing.createShared(4096) });
    assert.throws(() => decodeBatch(byRef, 1000, { rings: empty }), refusedOn('delegated.sendBuffer'));
    // More queued than the state's buffer size allows.
    const big = () => {
      const send = ByteRing.createShared(8192);
      send.write(new Uint8Array(5000));
      return { send, recv: ByteRing.createShared(4096) };
    };
    assert.throws(() => decodeBatch(byRef, 1000, { rings: big }), refusedOn('delegated.sendBuffer'));
  });

  test('a header that says "by reference" over inline data, or an unknown flag, is refused', () => {
    const trees = sampleTrees(1);
    const inline = encodeBatch(trees, 1000);
    const rings = () => sharedCopy(flattenTrees(trees)[0]!);
    const flagged = inline.slice();
    new DataView(flagged.buffer).setUint16(6, 1);
    assert.throws(() => decodeBatch(flagged, 1000, { rings }), refusedOn('delegated.sendBuffer'));
    const unknown = inline.slice();
    new DataView(unknown.buffer).setUint16(6, 2);
    assert.throws(() => decodeBatch(unknown, 1000, { rings }), refusedOn('flags'));
    // The hook is not consulted for a batch with its data inline.
    const plain = decodeBatch(inline, 1000, {
      rings: () => {
        throw new Error('asked for rings of an inline batch');
      },
    });
    assert.equal(flattenTrees(plain)[0]!.delegated.sendBuffer.length, 300);
    assert.ok(STATE_CODEC_LAYOUT.headerSize > 6);
  });
});

describe('WorkerNic transfers: data stays where it is', () => {
  test('host → worker → worker → host → worker → worker → host with data queued both ways: copied once into shared memory, never again, intact', {
    timeout: WORKER_CASE_MS,
  }, async (t) => {
    // The peer's receive buffer is smaller than what the host writes: its window shuts with the
    // rest queued in the host's send rings (with the default 1 MiB it would take all of it).
    const { net, wh, peer } = await setup(21, t, { peerTcp: { rcvBufSize: 64 << 10 } });
    const N = 8;
    const UP = 300_000;
    const DOWN = 120_000;
    const peerSockets: TcpSocket[] = [];
    const accepted = new Promise<void>((resolve) => {
      peer
        .createServer({ allowHalfOpen: true }, (s) => {
          s.on('error', () => {});
          s.pause();
          peerSockets.push(s);
          if (peerSockets.length === N) resolve();
        })
        .listen(6000);
    });
    await wh.host.ping('10.0.0.2', PING_MS);
    const sockets: TcpSocket[] = [];
    for (let i = 0; i < N; i++) {
      const s = wh.host.connect({ port: 6000, host: '10.0.0.2', allowHalfOpen: true });
      s.on('error', () => {});
      sockets.push(s);
    }
    await Promise.all(sockets.map((s) => once(s, 'connect')));
    await accepted;
    const up = sockets.map((_, i) => randomBytes(100 + i, UP));
    // Neither side reads yet: the host's send rings fill behind the peer's closed window, and
    // what the peer sends waits in the host's receive rings.
    for (let i = 0; i < N; i++) {
      sockets[i]!.pause();
      sockets[i]!.write(up[i]!);
    }
    const down = new Map<number, Buffer>();
    for (const ps of peerSockets) {
      const data = randomBytes(7000 + ps.remotePort!, DOWN);
      down.set(ps.remotePort!, data);
      ps.write(data);
    }
    const keys = sockets.map(keyOf);
    const queued = (): number =>
      keys.reduce((n, k) => {
        const c = wh.stack.tcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort);
        return n + (c ? c.state.delegated.sendBuffer.length + c.state.delegated.recvBuffer.length : 0);
      }, 0);
    // The frames cross the workers in real time, and a starved worker (stalled here, as on a
    // loaded CI machine) delivers them late: after a fixed 300 ms sleep the host's receive rings
    // were still empty, and only one way was tested. So wait until nothing can move any more: the
    // snapshot is then what the offload finds, with data queued both ways.
    for (const n of wh.nics) n.stall(500);
    const inHost = await quiescent(net, wh.stack, peer.stack, sockets, peerSockets, queued);
    assert.ok(inHost > N * 16_384, `data waits in the host's rings (${inHost} bytes)`);
    for (const k of keys) {
      const d = wh.stack.tcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort)!.state.delegated;
      assert.ok(d.sendBuffer.length > 0 && d.recvBuffer.length > 0, 'data queued both ways');
    }
    const [a, b] = wh.nics as [(typeof wh.nics)[0], (typeof wh.nics)[0]];
    const m = wh.offload;
    const inRings = (nic: typeof a): number =>
      keys.reduce((n, k) => {
        const h = nic.handle(k);
        return n + (h ? h.sendRing.length + h.recvRing.length : 0);
      }, 0);

    assert.equal((await m.offload(keys, a)).moved.length, N);
    // The host ran them in its own memory: copied once, into the blocks the worker runs on.
    const first = a.copiedBytes;
    assert.ok(first > 0 && first <= inHost, `copied once (${first} bytes)`);
    assert.ok(inRings(a) > N * 16_384);
    const blocks = keys.map((k) => a.handle(k)!.block);

    for (let round = 0; round < 2; round++) {
      assert.equal((await m.move(keys, a, b)).moved.length, N);
      const atB = inRings(b);
      assert.ok(atB > N * 16_384, `data still queued both ways at the second worker (${atB} bytes)`);
      for (let i = 0; i < N; i++) {
        assert.ok(sameBlock(b.handle(keys[i]!)!.block, blocks[i]!), 'the same block moved on');
      }
      const upr = await m.upload(keys);
      assert.deepEqual(upr.refused, []);
      assert.equal(upr.moved.length, N);
      for (let i = 0; i < N; i++) {
        const k = keys[i]!;
        const d = wh.stack.tcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort)!.state.delegated;
        const at = blockOfRings(d.sendBuffer, d.recvBuffer);
        assert.ok(at !== null && sameBlock(at, blocks[i]!), 'the host runs it on the same shared rings');
      }
      if (round === 0) assert.equal((await m.offload(keys, a)).moved.length, N);
    }
    assert.equal(a.copiedBytes, first, 'no byte copied after the first offload');
    assert.equal(b.copiedBytes, 0, 'a move between workers copies nothing');
    for (const c of await Promise.all([a.counters(), b.counters()])) {
      assert.equal(c['nic.worker.copied-bytes'] ?? 0, 0, 'the workers copied nothing either');
    }

    // Now both sides read and finish: every byte arrives, in order, in both directions.
    for (const ps of peerSockets) ps.end();
    for (const s of sockets) s.end();
    const gotUp = peerSockets.map((ps) => collect(ps));
    const gotDown = sockets.map((s) => collect(s));
    for (const ps of peerSockets) ps.resume();
    for (const s of sockets) s.resume();
    const ups = await Promise.all(gotUp);
    const downs = await Promise.all(gotDown);
    const upByPort = new Map(peerSockets.map((ps, i) => [ps.remotePort!, ups[i]!]));
    for (let i = 0; i < N; i++) {
      const port = sockets[i]!.localPort!;
      assert.equal(sha256(upByPort.get(port)!), sha256(up[i]!), `connection ${i}: host → peer intact`);
      assert.equal(sha256(downs[i]!), sha256(down.get(port)!), `connection ${i}: peer → host intact`);
    }
  });

  test('a worker refuses a batch by reference whose block is not a connection block before installing anything; a good one installs on the host-filled block', {
    timeout: WORKER_CASE_MS,
  }, async (t) => {
    const { wh } = await setup(22, t);
    const nic = wh.nics[0]!;
    const trees = sampleTrees(1);
    const s = flattenTrees(trees)[0]!;
    const batch = encodeBatch(trees, 0, { ringsByRef: true });
    const request = (r: WorkerRequest) =>
      (nic as unknown as { request(r: WorkerRequest): Promise<WorkerReply<'initiate'>> }).request(r);
    // Memory that holds no ring where the block says: attaching it fails, nothing is installed.
    const bogus = allocConnBlock(4096, 4096);
    const forged = { ...bogus, send: { ...bogus.send, offset: bogus.send.offset + 8 } };
    const before = (await nic.counters())['nic.initiate.refused'] ?? 0;
    const res = await request({
      op: 'initiate',
      arg: {
        batch,
        prod: false,
        blocks: packBlocks(
          1,
          () => keyOfState(s),
          () => forged,
        ),
      },
    });
    assert.equal(res.value.status, 'failure');
    assert.equal(res.value.slots.length, 0, 'nothing installed');
    // And a batch by reference with no block at all.
    const none = await request({ op: 'initiate', arg: { batch, prod: false } });
    assert.equal(none.value.status, 'failure');
    assert.equal(nic.load, 0);
    const c = await nic.counters();
    assert.equal((c['nic.initiate.refused'] ?? 0) - before, 2);
    assert.equal(c['nic.initiate.conns'] ?? 0, 0);

    // The same state through the verb: its thread-local data is copied once into a block the
    // host allocated, and the worker runs it there.
    const r = await nic.initiate({ kind: 'trees', trees });
    assert.equal(r.status, 'success');
    assert.equal(nic.load, 1);
    assert.equal(nic.copiedBytes, 350);
    const h = nic.handle(keyOfState(s))!;
    assert.deepEqual([...h.sendRing.toArray()], new Array(300).fill(7));
    assert.deepEqual([...h.recvRing.toArray()], new Array(50).fill(9));
    assert.equal((await nic.counters())['nic.worker.copied-bytes'] ?? 0, 0);
  });

  test('a terminate answer the host cannot read leaves the released connections salvageable: hard state and data', {
    timeout: WORKER_CASE_MS,
  }, async (t) => {
    const { wh } = await setup(24, t);
    const nic = wh.nics[0]!;
    const trees = sampleTrees(2);
    const keys = flattenTrees(trees).map(keyOfState);
    assert.equal((await nic.initiate({ kind: 'trees', trees })).status, 'success');
    const bytes = await nic.terminate(keys, {});
    assert.ok(bytes instanceof Uint8Array);
    assert.equal(nic.load, 0, 'released by the worker');
    // The answer itself damaged (the host knows what a terminate released by its answer).
    bytes.fill(0xa5);
    assert.throws(() => nic.decodeReleased(bytes, 0), StateValidationError);
    assert.equal(nic.load, 2);
    const left = nic.salvage(keys);
    assert.equal(left.length, 2);
    for (const r of left) {
      assert.ok(r.hard !== null && r.hard.version > 0, 'its last hard state');
      assert.deepEqual([...r.sendRing.toArray()], new Array(300).fill(7), 'the unacknowledged data');
      assert.deepEqual([...r.recvRing.toArray()], new Array(50).fill(9), 'the undelivered data');
    }
    assert.equal(nic.load, 0);
  });

  test('two terminates in flight at once: each answer is read with what its own terminate released, in either order', {
    timeout: WORKER_CASE_MS,
  }, async (t) => {
    const { wh } = await setup(25, t);
    const nic = wh.nics[0]!;
    const trees = sampleTrees(4);
    const states = flattenTrees(trees);
    const keys = states.map(keyOfState);
    assert.equal((await nic.initiate({ kind: 'trees', trees })).status, 'success');
    // A large upload's parts: both asked before either answer is read.
    const [a, b] = await Promise.all([nic.terminate(keys.slice(0, 2), {}), nic.terminate(keys.slice(2), {})]);
    assert.ok(a instanceof Uint8Array && b instanceof Uint8Array);
    // The first answer read last: the host must not take the second's connections for its own.
    const fromB = flattenTrees(nic.decodeReleased(b, 0));
    const fromA = flattenTrees(nic.decodeReleased(a, 0));
    assert.deepEqual(
      [...fromA, ...fromB].map((s) => s.const.localPort),
      states.map((s) => s.const.localPort),
    );
    for (const s of [...fromA, ...fromB])
      assert.deepEqual([...s.delegated.sendBuffer.toArray()], new Array(300).fill(7));
  });

  test('the host refuses a terminate answer naming a connection it did not release', async (t) => {
    const { wh } = await setup(23, t);
    const bytes = encodeBatch(sampleTrees(1), 0, { ringsByRef: true });
    assert.throws(() => wh.nics[0]!.decodeReleased(bytes, 0), refusedOn('delegated.sendBuffer'));
  });
});
