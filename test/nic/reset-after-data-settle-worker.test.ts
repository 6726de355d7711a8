/**
 * The WorkerNic case of test/offload/reset-after-data-settle.test.ts: a connection handed from one
 * worker to another, whose peer's data and then its reset reach the destination while the settle
 * awaits what the source held. The destination's worker closes it and frees its slot before the
 * host attaches the socket; the application must read the data, then hear ECONNRESET (as Linux
 * reads the receive queue before sk_err), and the bytes kept for it are counted by the NIC until
 * read. Before, the settle's attach found nothing and the socket heard ECONNRESET, the data lost.
 * A FIN before the reset ends the socket as it would have ended attached: the data, then
 * end-of-file with no error (Linux's tcp_recvmsg looks at SOCK_DONE before sk_err); before, the
 * settle gave it ECONNRESET whatever ended the connection.
 * The order is driven by a seam (the source's takeQueued waits until the destination's slot is
 * freed), not by timing.
 */
import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { dataOf, resetOf } from '../helpers/segments.ts';
import { keptServer, socketKey, workerSetup } from './worker-helpers.ts';

/**
 * The peer's data and then its reset (after its FIN when `fin`) at the destination worker during
 * the settle: what the socket reads, and its events in order.
 */
async function endDuringSettle(t: TestContext, seed: number, fin: boolean): Promise<void> {
  const { net, wh, peer } = await workerSetup(seed, t, { deadAfterMs: 60_000 });
  const [n0, n1] = wh.nics as [WorkerNic, WorkerNic];
  keptServer(peer);
  const socks: TcpSocket[] = [];
  for (let i = 0; i < 3; i++) {
    const s = wh.host.connect({ port: 80, host: '10.0.0.2' });
    socks.push(s);
    await new Promise((r) => s.once('connect', r));
  }
  t.after(() => {
    for (const s of socks) s.destroy();
  });
  const keys = socks.map(socketKey);
  assert.equal((await wh.offload.offload(keys, n0)).moved.length, 3);
  const victim = 1;
  const k = keys[victim]!;
  const sock = socks[victim]!;
  const payload = new Uint8Array(3000);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 11 + 5) & 0xff;
  let got = Buffer.alloc(0);
  sock.on('data', (b: Buffer) => {
    got = Buffer.concat([got, b]);
  });
  const events: string[] = [];
  sock.on('end', () => events.push('end'));
  sock.on('error', (e: NodeJS.ErrnoException) => events.push(`error ${e.code}`));
  sock.on('close', () => events.push('close'));

  // The seam: when the settle asks the source for what it held, the peer's data and reset reach
  // the destination first, and the host has heard its worker free the slot.
  const takeQueued = n0.takeQueued.bind(n0);
  let injected = false;
  n0.takeQueued = async (...a: Parameters<WorkerNic['takeQueued']>) => {
    const h = n1.handle(k);
    if (!injected && h !== undefined) {
      injected = true;
      const hs = h.hardState()!;
      n1.inject([
        dataOf(k, hs.rcvNxt, hs.sndUna, payload, { val: hs.tsRecent, ecr: 0 }, fin),
        resetOf(k, (hs.rcvNxt + payload.length + (fin ? 1 : 0)) >>> 0),
      ]);
      for (let i = 0; i < 500 && n1.handle(k) !== undefined; i++) await net.sleep(10);
      assert.equal(n1.handle(k), undefined, 'the destination closed it and freed its slot');
    }
    return takeQueued(...a);
  };
  const r = await wh.offload.move(keys, n0, n1);
  assert.ok(injected, 'the settle asked the source for what it held');
  assert.equal(r.moved.length, 2, 'the other two moved');
  assert.deepEqual(
    r.refused.map((f) => [f.key.localPort, f.status]),
    [[k.localPort, 'closed']],
  );
  assert.equal(wh.offload.ownerOf(k), null, 'the host forgot it');
  for (let i = 0; i < 500 && !events.includes('close'); i++) await net.sleep(10);
  assert.equal(sock.destroyed, true, 'the socket ended');
  if (fin) assert.deepEqual(events, ['end', 'close'], 'end-of-file after the FIN, with no error');
  else assert.deepEqual(events, ['error ECONNRESET', 'close'], 'it heard the reset');
  assert.equal(got.length, payload.length, 'it read what the peer sent before its reset');
  assert.deepEqual(new Uint8Array(got), payload);
  assert.deepEqual(n1.heldAfterClose, { count: 0, bytes: 0 }, 'read to the end: nothing held');
  for (let i = 0; i < keys.length; i++) {
    if (i === victim) continue;
    assert.equal(wh.offload.ownerOf(keys[i]!), n1, `connection ${i} runs at the destination`);
  }
}

test(
  'data before a reset at a destination worker during the settle is read before ECONNRESET',
  { timeout: 120_000 },
  (t) => endDuringSettle(t, 71, false),
);

test(
  "the peer's data, FIN and reset at a destination worker during the settle read as the data, then end",
  { timeout: 120_000 },
  (t) => endDuringSettle(t, 73, true),
);
