/**
 * The WorkerNic case of reset-unread-mem.test.ts: a paused socket keeps what it has not read after
 * the peer's reset, and with it the shared block its connection ran on in the worker, whose slot
 * the close freed. That block must stay counted by the NIC that owns it until the data is read or
 * the socket destroyed (WorkerNic's `heldClosed`), as Linux keeps a closed socket's queued data
 * charged: a place of the NIC's capacity each (its load, the worker's room: installs past it are
 * refused) and its bytes in the NIC's ring budget. Uncounted, paused readers of reset connections
 * held blocks in any number.
 */
import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { seqDiff } from '../../src/stack/tcp/seq.ts';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import { TcpStateId } from '../../src/state/tcp-state.ts';
import { resetOf } from '../helpers/segments.ts';
import { keptServer, socketKey, WORKER_CASE_MS, workerSetup } from './worker-helpers.ts';

/** A worker host of `count` NICs (started) and a peer at 10.0.0.2 whose server keeps what it accepts. */
async function served80(
  t: TestContext,
  seed: number,
  count: number,
  capacity: number,
  rings?: { ringCapacity: number; placementRing: number },
) {
  const { net, wh, peer } = await workerSetup(seed, t, { count, capacity, ...rings });
  return { net, wh, served: keptServer(peer) };
}

/**
 * Wait until `cond` holds, at most `ms` of wall time; the assertion after it says what was wanted.
 * A bound by count of short sleeps (100 x 10 ms) is a window the machine's speed decides: at load
 * 20-40 on 2 cores the worker and the peer may not run for a second or more.
 */
async function until(
  net: { sleep(ms: number): Promise<void> },
  cond: () => boolean,
  ms = 30_000,
): Promise<void> {
  for (const end = Date.now() + ms; !cond() && Date.now() < end; ) await net.sleep(10);
}

const HELD = 20;
const CAPACITY = 24;

test('a worker connection closed with bytes unread keeps its block counted by the NIC until read or destroyed', {
  timeout: WORKER_CASE_MS,
}, async (t) => {
  const { net, wh, served } = await served80(t, 37, 1, CAPACITY);
  const nic = wh.nics[0]!;
  const open = async (n: number): Promise<TcpSocket[]> => {
    const out: TcpSocket[] = [];
    for (let i = 0; i < n; i++) {
      const s = wh.host.connect({ port: 80, host: '10.0.0.2' });
      s.on('error', () => {});
      out.push(s);
    }
    await Promise.all(out.map((s) => (s.connecting ? new Promise((r) => s.once('connect', r)) : null)));
    return out;
  };
  const socks = await open(HELD);
  t.after(() => {
    for (const s of socks) s.destroy();
  });
  for (const s of socks) s.once('data', () => s.pause());
  const r = await wh.offload.offload(socks.map(socketKey), nic);
  assert.equal(r.moved.length, HELD);
  await until(net, () => served.length >= HELD);
  assert.equal(served.length, HELD);
  for (const s of served) s.write(Buffer.alloc(400_000, 7));
  const unread = (): number => socks.reduce((n, s) => n + (s.connection?.readableLength ?? 0), 0);
  await until(net, () => unread() > HELD * 100_000);
  assert.ok(unread() > HELD * 100_000, `${unread()} bytes unread before the reset`);

  for (const s of served) s.resetAndDestroy();
  await until(net, () => nic.heldAfterClose.count >= HELD);
  assert.equal(wh.offload.keysOn(nic).length, 0, 'the resets closed every connection in the worker');
  const held = unread();
  assert.ok(held > HELD * 100_000, `${held} bytes still unread after the reset`);
  // Their unread bytes stay the NIC's to count (copied out of the blocks when the slots were freed).
  assert.equal(nic.heldAfterClose.count, HELD);
  assert.ok(nic.heldAfterClose.bytes >= held, `${nic.heldAfterClose.bytes} bytes held, ${held} unread`);
  assert.equal(nic.load, HELD);
  assert.equal((await nic.counters())['nic.held-closed'], HELD);

  // At the limit: the worker takes no more than its capacity less the blocks held.
  const late = await open(10);
  t.after(() => {
    for (const s of late) s.destroy();
  });
  const more = await wh.offload.offload(late.map(socketKey), nic);
  assert.equal(more.moved.length, CAPACITY - HELD);
  assert.equal(more.refused.length, 10 - (CAPACITY - HELD));
  assert.ok(
    more.refused.every((x) => x.status === 'no-resources'),
    JSON.stringify(more.refused),
  );

  // Reading half of the sockets to the end: their blocks are no longer counted.
  const readers = socks.slice(0, HELD / 2);
  const ended = readers.map((s) => new Promise((res) => s.once('close', res)));
  for (const s of readers) s.resume();
  await Promise.all(ended);
  assert.equal(nic.heldAfterClose.count, HELD / 2);
  assert.equal(nic.load, HELD / 2 + CAPACITY - HELD);

  // Destroyed unread: nothing stays counted, and the worker has its room back.
  for (const s of socks.slice(HELD / 2)) s.destroy();
  await until(net, () => nic.heldAfterClose.count === 0);
  assert.deepEqual(nic.heldAfterClose, { count: 0, bytes: 0 });
  const rest = late.filter((s) => wh.offload.ownerOf(socketKey(s)) === 'host');
  const again = await wh.offload.offload(rest.map(socketKey), nic);
  assert.equal(again.moved.length, rest.length);
});

/**
 * A connection reset in the worker before the worker reads a terminate the host sent before it
 * heard of the reset (an upload, a move to another worker): the worker's 'freed' came while the
 * handle was frozen, and the answer names the connection neither moved nor freed. The handle must
 * be the socket's again (all that came before the reset read, then ECONNRESET) and its block
 * counted as any closed one's until then; left frozen, the socket's next read threw ("moved to
 * another owner", the bytes unread lost) and the block went uncounted.
 */
for (const how of ['upload', 'move'] as const) {
  for (const failing of [false, true]) {
    const what = failing ? `a failed ${how} request` : `the ${how}'s terminate`;
    test(`a worker connection reset before ${what} reached the worker stays its socket's, counted`, {
      timeout: WORKER_CASE_MS,
    }, async (t) => {
      await resetBeforeTerminate(t, how, failing);
    });
  }
}

/**
 * `failing`: the request fails after the worker answered it (what the host hears of a terminate
 * the worker refused): nothing moved, the handles go back to their sockets on the error path, and
 * one closed meanwhile must be counted there too, as on the answer's.
 */
async function resetBeforeTerminate(t: TestContext, how: 'upload' | 'move', failing: boolean): Promise<void> {
  const { net, wh, served } = await served80(t, 38, 2, 8);
  const [nic, other] = wh.nics as [WorkerNic, WorkerNic];
  const s = wh.host.connect({ port: 80, host: '10.0.0.2' });
  await new Promise((r) => s.once('connect', r));
  s.once('data', () => s.pause());
  const key = socketKey(s);
  assert.equal((await wh.offload.offload([key], nic)).moved.length, 1);
  await until(net, () => served.length >= 1);
  served[0]!.write(Buffer.alloc(200_000, 7));
  const h = nic.handle(key)!;
  // Until all 200,000 bytes are in (the ring, 1 MiB, takes them) and acknowledged: nothing more
  // arrives. Taken from a quiet spell of 50 ms, more could come after it on a loaded machine (the
  // worker or the peer off the CPU that long), and the reset below, placed by the count, then
  // missed the receive point and was only answered.
  const irs = h.hardState()!.irs;
  const sender = (served[0]!.connection as TcpConnection).state.delegated;
  await until(net, () => sender.sndUna === sender.sndMax && seqDiff(sender.sndUna, irs + 1) === 200_000);
  assert.equal(s.bytesRead + h.readableLength, 200_000, 'all of it taken by the worker');
  assert.ok(h.readableLength > 100_000, `${h.readableLength} bytes unread`);
  // What the stream holds (the first chunk's rest) and what the ring does: all of it comes.
  const total = s.readableLength + h.readableLength;
  let got = 0;
  const before = h.hardState()!.version;
  // At the receive point exactly (a reset elsewhere in the window is only answered, RFC 5961).
  nic.inject([resetOf(key, (h.hardState()!.irs + 1 + s.bytesRead + h.readableLength) >>> 0)]);
  // This thread waits (its messages with it) until the worker has closed the connection: its
  // last record is written just before the slot is freed. The terminate then goes after it.
  // Bounded by wall time, not a count of 2 ms waits: on a loaded machine the worker may not run
  // for seconds.
  const gate = new Int32Array(new SharedArrayBuffer(4));
  for (const until = Date.now() + 30_000; Date.now() < until; ) {
    const hs = h.hardState();
    if (hs !== null && hs.version !== before && hs.state === TcpStateId.CLOSED) break;
    Atomics.wait(gate, 0, 0, 2);
  }
  assert.equal(h.hardState()?.state, TcpStateId.CLOSED, 'reset in the worker');
  Atomics.wait(gate, 0, 0, 50);
  if (failing) {
    // The real request (so the worker's 'freed' comes first, as it does), then its failure.
    const target = nic as unknown as { request(r: { op: string }): Promise<unknown> };
    const request = target.request.bind(nic);
    target.request = async (req) => {
      const res = await request(req);
      if (req.op === 'terminate') throw new Error('terminate refused');
      return res;
    };
  }
  const moving = how === 'upload' ? wh.offload.upload([key]) : wh.offload.move([key], nic, other);
  if (failing) await assert.rejects(moving, /terminate refused/);
  else {
    const r = await moving;
    assert.equal(r.moved.length, 0);
    assert.deepEqual(
      r.refused.map((x) => x.status),
      ['closed'],
    );
  }
  assert.equal(h.detached, false, 'the handle is the socket’s again');
  assert.equal(nic.heldAfterClose.count, 1, 'its block counted');
  assert.equal(other.heldAfterClose.count, 0);

  const failed = new Promise<Error>((res) => s.once('error', res));
  const closed = new Promise((res) => s.once('close', res));
  s.on('data', (b: Buffer) => {
    got += b.length;
  });
  s.resume();
  assert.equal(((await failed) as NodeJS.ErrnoException).code, 'ECONNRESET');
  await closed;
  assert.equal(got, total, 'everything before the reset read');
  assert.deepEqual(nic.heldAfterClose, { count: 0, bytes: 0 });
}

/**
 * Paused sockets of reset connections hold their unread bytes, not their blocks: counted whole
 * against the NIC's ring budget (RING_BUDGET_BYTES), as many as fill it (blocks placed at their
 * fair share of it) refused every grow of the connections still running. Each closed one's unread
 * bytes are copied out of its block when the worker frees its slot, and only those are counted.
 */
test('closed worker connections held by paused sockets count their unread bytes, and a live ring still grows', {
  timeout: WORKER_CASE_MS,
}, async (t) => {
  // Placed at their share of the 64 MiB budget: 48 connections' blocks (send and receive rings)
  // take more than all of it.
  const rings = { ringCapacity: 4 << 20, placementRing: 2 << 20 };
  const { net, wh, served } = await served80(t, 39, 1, 56, rings);
  const nic = wh.nics[0]!;
  const N = 48;
  const socks: TcpSocket[] = [];
  for (let i = 0; i < N; i++) {
    const s = wh.host.connect({ port: 80, host: '10.0.0.2' });
    s.on('error', () => {});
    s.pause();
    socks.push(s);
  }
  t.after(() => {
    for (const s of socks) s.destroy();
  });
  await Promise.all(socks.map((s) => (s.connecting ? new Promise((r) => s.once('connect', r)) : null)));
  assert.equal((await wh.offload.offload(socks.map(socketKey), nic)).moved.length, N);
  await until(net, () => served.length >= N);
  // More than a paused socket's stream takes in at the reset (a read of up to 64 KiB): the rest
  // stays in the ring.
  for (const s of served) s.write(Buffer.alloc(200_000, 5));
  const unread = (): number => socks.reduce((n, s) => n + (s.connection?.readableLength ?? 0), 0);
  await until(net, () => unread() >= N * 200_000);
  for (const s of served) s.resetAndDestroy();
  await until(net, () => nic.heldAfterClose.count >= N);
  assert.equal(nic.heldAfterClose.count, N);
  const held = unread();
  assert.ok(held >= N * 100_000, `${held} bytes unread`);

  // A connection placed beside them asks for a larger send ring: within the budget.
  const live = wh.host.connect({ port: 80, host: '10.0.0.2' });
  live.on('error', () => {});
  t.after(() => live.destroy());
  await new Promise((r) => live.once('connect', r));
  assert.equal((await wh.offload.offload([socketKey(live)], nic)).moved.length, 1);
  const h = nic.handle(socketKey(live))!;
  const placed = h.sendRing.capacity;
  (nic as unknown as { regrow(h: unknown, want: number): void }).regrow(h, 4 << 20);
  await until(net, () => h.sendRing.capacity !== placed);
  const c = await nic.counters();
  assert.equal(c['nic.sndbuf.grow-refused'] ?? 0, 0, JSON.stringify(c));
  assert.ok(h.sendRing.capacity > placed, `grew from ${placed} to ${h.sendRing.capacity}`);

  // What was unread when the slot was freed (the socket's read at the reset came after): not the
  // blocks' megabytes.
  const counted = nic.heldAfterClose.bytes;
  assert.ok(counted >= held && counted <= N * 200_000, `${counted} bytes counted, ${held} unread`);

  // Read to the end, each lets go of its count.
  const ended = socks.map((s) => new Promise((res) => s.once('close', res)));
  for (const s of socks) s.resume();
  await Promise.all(ended);
  assert.deepEqual(nic.heldAfterClose, { count: 0, bytes: 0 });
});
