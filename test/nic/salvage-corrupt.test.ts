/**
 * A dead worker's records are read from memory another thread wrote: a record damaged there is
 * refused at the rebuild (typed error, counted, its socket told ECONNABORTED), before anything of
 * it is installed, and the batch's other connections are rebuilt and run on at the survivor.
 */
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { describe, test } from 'node:test';
import { openConnections } from '../../bench/offload.ts';
import { COPY_BYTES, HardStateRecord, W_MSS, W_PORTS } from '../../src/nic/hard-state.ts';
import type { ConnKey } from '../../src/nic/nic.ts';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { echo, PING_MS, peerHolds, socketKey, workerSetup } from './worker-helpers.ts';

const N = 8;

/**
 * N echoing connections offloaded to the first WorkerNic, each echoed once there; then its
 * thread killed, and `damage` run on the first connection's hard-state record (both copies, as
 * whole copies: what the seqlock lets through) before the rebuild at the second NIC.
 */
async function crashWithDamage(
  t: TestContext,
  seed: number,
  damage: (v: Int32Array, copyAt: number, keys: ConnKey[], sockets: TcpSocket[]) => void,
  nics = 2,
) {
  const { net, wh, peer } = await workerSetup(seed, t, { count: nics });
  let held = 0;
  peer
    .createServer((s) => {
      held++;
      s.on('data', (d: Uint8Array) => s.write(d));
      s.on('error', () => {});
    })
    .listen(80);
  await wh.host.ping('10.0.0.2', PING_MS);
  const sockets = await openConnections(wh.host, net, N, 5);
  t.after(() => {
    for (const s of sockets) s.destroy();
  });
  // Before the offload: a SYN-ACK the peer resends would otherwise meet the connection mid-move.
  await peerHolds(() => held, N);
  const keys = sockets.map(socketKey);
  const [n0, n1] = wh.nics as [WorkerNic, WorkerNic];
  assert.equal((await wh.offload.offload(keys, n0)).moved.length, N);
  await Promise.all(sockets.map((s, i) => echo(net, s, 300 + i, 40 + i, 30_000)));
  const block = (sockets[0]!.connection as unknown as { block: { sab: SharedArrayBuffer; at: number } })
    .block;
  const dead = new Promise<void>((r) => n0.once('dead', () => r()));
  await n0.kill();
  await dead;
  const v = new Int32Array(block.sab);
  damage(v, block.at >> 2, keys, sockets);
  damage(v, (block.at + COPY_BYTES) >> 2, keys, sockets);
  const errors: string[] = [];
  sockets[0]!.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? e.message));
  const report = await wh.offload.recover(n0, n1);
  return { net, wh, sockets, keys, report, errors };
}

describe("a record damaged in a dead worker's memory", () => {
  test('an MSS out of range is refused by validation; the others are rebuilt and run on', {
    timeout: 120_000,
  }, async (t) => {
    const { net, wh, sockets, keys, report, errors } = await crashWithDamage(t, 61, (v, at) => {
      // The remote MSS 0, the local one kept: nothing but the field's own check refuses it.
      v[at + W_MSS] = v[at + W_MSS]! & ~0xffff;
    });
    assert.equal(report.moved.length, N - 1, 'the undamaged ones rebuilt');
    assert.equal(report.refused.length, 1);
    assert.deepEqual(report.refused[0]!.key, keys[0]);
    assert.match(report.refused[0]!.reason, /remoteMss/);
    assert.equal(wh.stack.counters.get('offload.rebuilt.refused'), 1, 'counted');
    // The refused one's handle stays the dead NIC's: nothing of it is installed.
    const survivor = wh.nics[1] as WorkerNic;
    assert.equal(survivor.adoptedHandles, N - 1, 'the rebuilt ones took up their handles');
    assert.equal(survivor.handle(keys[0]!), undefined);
    const t0 = net.now();
    while (errors.length === 0 && !sockets[0]!.destroyed && net.now() - t0 < 30_000) await net.sleep(5);
    assert.deepEqual(errors, ['ECONNABORTED'], 'its socket is told');
    await Promise.all(sockets.slice(1).map((s, i) => echo(net, s, 700 + i, 90 + i, 30_000)));
  });

  test('a record naming another connection is refused: nothing is installed under its tuple', {
    timeout: 120_000,
  }, async (t) => {
    const { net, wh, sockets, keys, report, errors } = await crashWithDamage(t, 62, (v, at, ks) => {
      // The second connection's local port: the rebuilt state would be that connection's twin.
      v[at + W_PORTS] = (ks[1]!.localPort << 16) | (v[at + W_PORTS]! & 0xffff);
    });
    assert.equal(report.moved.length, N - 1, 'the undamaged ones rebuilt');
    assert.equal(report.refused.length, 1);
    assert.deepEqual(report.refused[0]!.key, keys[0]);
    assert.match(report.refused[0]!.reason, /another connection/);
    assert.equal(wh.stack.counters.get('offload.rebuilt.refused'), 1, 'counted');
    const t0 = net.now();
    while (errors.length === 0 && !sockets[0]!.destroyed && net.now() - t0 < 30_000) await net.sleep(5);
    assert.deepEqual(errors, ['ECONNABORTED'], 'its socket is told');
    await Promise.all(sockets.slice(1).map((s, i) => echo(net, s, 700 + i, 90 + i, 30_000)));
  });

  test('an undamaged batch: the rebuild reads every record into one object, and rebuilds them all', {
    timeout: 120_000,
  }, async (t) => {
    // Every record read on this thread from the kill on, and the objects it was read into: a
    // HardState per connection was garbage of some fifty fields each in a crash's charged rebuild.
    const proto = HardStateRecord.prototype as unknown as { read(out: object): boolean };
    const read = proto.read;
    const into = new Set<object>();
    let reads = 0;
    t.after(() => {
      proto.read = read;
    });
    const { net, sockets, report } = await crashWithDamage(t, 63, () => {
      proto.read = function (this: HardStateRecord, out: object) {
        reads++;
        into.add(out);
        return read.call(this, out);
      };
    });
    proto.read = read;
    assert.equal(report.moved.length, N, 'every one rebuilt');
    assert.ok(reads >= N, `${reads} records read`);
    assert.equal(into.size, 1, `${reads} records read into ${into.size} objects`);
    await Promise.all(sockets.map((s, i) => echo(net, s, 900 + i, 50 + i, 30_000)));
  });

  test("the survivor takes up the dead NIC's handles; its own death then loses nothing either", {
    timeout: 120_000,
  }, async (t) => {
    // The handles as the kill left them, before the rebuild.
    let before: unknown[] = [];
    const { net, wh, sockets, keys, report } = await crashWithDamage(
      t,
      64,
      (_v, _at, _keys, socks) => {
        before = socks.map((s) => s.connection);
      },
      3,
    );
    const [n0, n1, n2] = wh.nics as [WorkerNic, WorkerNic, WorkerNic];
    assert.equal(report.moved.length, N, 'every one rebuilt');
    assert.equal(n1.adoptedHandles, N, 'each install took up the dead NIC handle of its connection');
    for (let i = 0; i < N; i++) {
      const h = n1.handle(keys[i]!);
      assert.ok(
        h !== undefined && h === before[i] && h.nicIs(n1),
        `connection ${i} runs behind its old handle`,
      );
      assert.equal(sockets[i]!.connection, h);
    }
    assert.equal(n0.handle(keys[0]!), undefined, 'the dead NIC holds none of them');
    await Promise.all(sockets.map((s, i) => echo(net, s, 1100 + i, 60 + i, 30_000)));
    // The survivor dies in turn: its salvage finds the adopted handles as its own, and the third
    // NIC takes up the same handles again.
    const dead = new Promise<void>((r) => n1.once('dead', () => r()));
    await n1.kill();
    await dead;
    const again = await wh.offload.recover(n1, n2);
    assert.equal(again.moved.length, N, `rebuilt at the third NIC (${again.refused[0]?.reason})`);
    assert.equal(n2.adoptedHandles, N);
    for (let i = 0; i < N; i++) assert.equal(sockets[i]!.connection, before[i]);
    await Promise.all(sockets.map((s, i) => echo(net, s, 1300 + i, 70 + i, 30_000)));
  });
});
