/**
 * The peer's segments the host held through an offload run at the NIC before any that reached the
 * NIC's own link after the install. Found at an accept-time offload at load (BENCHMARKS.md, h4,
 * session 44): the move outlasted the peer's RTO, the peer's resend of its first segment reached
 * the installed connection directly and set ts.recent, and the segments the host had held, sent
 * before it with older timestamps, were injected at the settle and dropped by PAWS: a stall and a
 * restart from one segment, the move's reordering seen by the peer.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { randomBytes } from '../helpers/streams.ts';
import { PING_MS, workerSetup } from '../nic/worker-helpers.ts';
import { keysOf, offloadPair } from './helpers.ts';

/** Step virtual time until `cond` holds, at most `steps` steps of `ms`. */
async function until(
  p: ReturnType<typeof offloadPair>,
  cond: () => boolean,
  what: string,
  steps = 1000,
  ms = 10,
) {
  for (let i = 0; i < steps && !cond(); i++) await p.net.sleep(ms);
  assert.ok(cond(), what);
}

test("the host's held segments run at the NIC before its link's newer resend (no PAWS drop)", async () => {
  const p = offloadPair(44, { nics: 1 });
  const m = p.host.offload;
  // The general protocol (freeze, initiate, settle): a live hand-over between owners of one thread
  // holds nothing.
  m.liveHandover = false;
  const [n0] = p.host.nics as [LocalNic];
  await p.host.ping('10.0.0.2');
  let peerSock: TcpSocket | null = null;
  p.peer.createServer((s) => (peerSock = s)).listen(5000);
  const sock = p.host.connect(5000, '10.0.0.2');
  await once(sock, 'connect');
  await until(p, () => peerSock !== null, 'the peer accepted');
  const got: Buffer[] = [];
  sock.on('data', (b: Buffer) => got.push(b));
  const payload = randomBytes(44, 4000);
  const hostCounters = p.host.stack.counters;
  const peerCounters = p.peer.stack.counters;
  const init = n0.initiate.bind(n0);
  n0.initiate = async (...a: Parameters<LocalNic['initiate']>) => {
    // Frozen at the host: the peer's segments reach it through the NIC (which runs nothing yet)
    // and wait in its placeholder.
    peerSock!.write(payload);
    await until(p, () => hostCounters.get('tcp.frozen.queued') >= 3, 'the host held the peer segments');
    const res = await init(...a);
    // Installed at the NIC, settle not yet come: the move outlasts the peer's RTO, and its resend
    // of the first segment (a newer timestamp) reaches the NIC's link directly.
    const rtos = peerCounters.get('tcp.rto');
    await until(p, () => peerCounters.get('tcp.rto') > rtos, 'the peer resent');
    await until(
      p,
      () => n0.counters.get('nic.rx.offloaded') + n0.counters.get('nic.rx.settle-held') > 0,
      'it came',
    );
    return res;
  };
  const r = await m.offload(keysOf([sock]), n0);
  assert.equal(r.moved.length, 1, `offloaded ${JSON.stringify(r.refused)}`);
  await until(p, () => Buffer.concat(got).length >= payload.length, 'the host read all the data');
  assert.deepEqual(Buffer.concat(got), payload, 'whole and in order');
  // The settle's inject runs in a later turn of the NIC's: every held segment reaches it.
  const held = hostCounters.get('tcp.frozen.queued');
  await until(p, () => n0.counters.get('nic.rx.injected') >= held, 'the held segments reached the NIC');
  assert.equal(n0.counters.get('nic.rx.injected'), held, 'each once');
  assert.equal(n0.counters.get('tcp.paws.drops'), 0, 'none dropped as older than the resend');
  assert.ok(n0.counters.get('nic.rx.settle-held') >= 1, 'the resend waited for the settle');
  p.net.close();
});

/**
 * The same at a WorkerNic, whose worker keeps its link's input for the settle, on a real-time rig:
 * every wait is for a condition (bounded far above what it takes on a machine 4x slower than a
 * loaded one), none for a length of time. The connection crosses as a transfer record and is
 * taken unbuilt (quiet), so the peer's resend is what builds it; through the codec it is built at
 * the install; taken for a prod, it is built a few turns after the install, before the resend.
 */
for (const how of ['unbuilt', 'codec', 'prod'] as const) {
  test(`at a WorkerNic (${how}), the host's held segments run before the link's newer resend (no PAWS drop)`, {
    timeout: 120_000,
  }, async (t) => {
    const { net, wh, peer } = await workerSetup(45, t, { count: 1 });
    const [n0] = wh.nics as [WorkerNic];
    if (how === 'codec') n0.useRecords = false;
    const counter = async (k: string): Promise<number> => (await n0.counters())[k] ?? 0;
    /** Poll `cond` every few ms, for at most 60 s of wall time. */
    const until = async (cond: () => boolean | Promise<boolean>, what: string): Promise<void> => {
      const t0 = Date.now();
      while (!(await cond()) && Date.now() - t0 < 60_000) await net.sleep(5);
      assert.ok(await cond(), `${what} (not within 60 s)`);
    };
    await wh.host.ping('10.0.0.2', PING_MS);
    let peerSock: TcpSocket | null = null;
    peer.createServer((s) => (peerSock = s)).listen(5000);
    const sock = wh.host.connect(5000, '10.0.0.2');
    await once(sock, 'connect');
    await until(() => peerSock !== null, 'the peer accepted');
    const got: Buffer[] = [];
    sock.on('data', (b: Buffer) => got.push(b));
    const payload = randomBytes(45, 4000);
    const hostCounters = wh.stack.counters;
    const peerCounters = peer.stack.counters;
    const init = n0.initiate.bind(n0);
    n0.initiate = async (...a: Parameters<WorkerNic['initiate']>) => {
      // Frozen at the host: the peer's segments come up through the worker, which runs nothing
      // yet, and wait in the host's placeholder.
      peerSock!.write(payload);
      await until(() => hostCounters.get('tcp.frozen.queued') >= 3, 'the host held the peer segments');
      const res = await init(...a);
      // Installed at the worker, settle not yet come: the move outlasts the peer's RTO, and its
      // resend of the first segment (a newer timestamp) reaches the worker's link directly.
      const rtos = peerCounters.get('tcp.rto');
      await until(() => peerCounters.get('tcp.rto') > rtos, 'the peer resent');
      await until(
        async () => (await counter('nic.rx.offloaded')) + (await counter('nic.rx.settle-held')) > 0,
        'the resend reached the worker',
      );
      return res;
    };
    const r = await wh.offload.offload(keysOf([sock]), n0, how === 'prod' ? { prod: true } : {});
    assert.equal(r.moved.length, 1, `offloaded ${JSON.stringify(r.refused)}`);
    await until(() => Buffer.concat(got).length >= payload.length, 'the host read all the data');
    assert.deepEqual(Buffer.concat(got), payload, 'whole and in order');
    const held = hostCounters.get('tcp.frozen.queued');
    await until(
      async () => (await counter('nic.rx.injected')) >= held,
      'the held segments reached the worker',
    );
    assert.equal(await counter('nic.rx.injected'), held, 'each once');
    if (how !== 'codec') assert.equal(await counter('nic.initiate.unbuilt'), 1, 'taken unbuilt');
    assert.equal(await counter('tcp.paws.drops'), 0, 'none dropped as older than the resend');
    assert.ok((await counter('nic.rx.settle-held')) >= 1, 'the resend waited for the settle');
  });
}
