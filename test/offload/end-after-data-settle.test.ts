/**
 * A connection that ended at a move's destination during the settle, with data unread, ends its
 * socket as it would have ended had the socket been attached: after the data, EOF when the peer's
 * FIN came first (Linux's tcp_recvmsg looks at SOCK_DONE before sk_err, so a reset in CLOSE_WAIT
 * reads as end-of-file), ETIMEDOUT after a retransmission timeout (tcp_write_err's sk_err).
 * Before, the settle reported ECONNRESET whatever ended it (the reset case:
 * reset-after-data-settle.test.ts).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import type { ConnKey } from '../../src/nic/nic.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { dataOf, resetOf } from '../helpers/segments.ts';
import { keysOf, offloadPair, type Pair } from './helpers.ts';

/** `n` idle connections from the host to the peer, offloaded to the first NIC. */
async function idleOffloaded(p: Pair, n: number): Promise<TcpSocket[]> {
  await p.host.ping('10.0.0.2');
  p.peer
    .createServer((s) => {
      // The peer's sockets see the forged close only as the host's answers to it.
      s.on('error', () => {});
    })
    .listen(5000);
  const sockets: TcpSocket[] = [];
  for (let i = 0; i < n; i++) {
    const s = p.host.connect(5000, '10.0.0.2');
    await once(s, 'connect');
    sockets.push(s);
  }
  const [n0] = p.host.nics as [LocalNic, LocalNic];
  assert.equal((await p.host.offload.offload(keysOf(sockets), n0)).moved.length, n);
  await p.net.sleep(50);
  return sockets;
}

/** What the socket reads and how it ends, recorded in order. */
function watch(sock: TcpSocket): { events: string[]; got: () => Buffer } {
  const events: string[] = [];
  let got = Buffer.alloc(0);
  sock.on('data', (b: Buffer) => {
    got = Buffer.concat([got, b]);
  });
  sock.on('end', () => events.push('end'));
  sock.on('error', (e: NodeJS.ErrnoException) => events.push(`error ${e.code}`));
  sock.on('close', () => events.push('close'));
  return { events, got: () => got };
}

/**
 * The seam: once `dst` runs `k` (its initiate done) and while the settle awaits it, `during` runs
 * with the connection's receive point, acknowledgement and timestamp echo (what the peer's
 * segments need), and the settle waits for it.
 */
function onInstall(
  dst: LocalNic,
  k: ConnKey,
  during: (
    rcvNxt: number,
    sndUna: number,
    ts: { val: number; ecr: number } | undefined,
  ) => Promise<void> | void,
): void {
  const init = dst.initiate.bind(dst);
  dst.initiate = async (...a: Parameters<LocalNic['initiate']>) => {
    const res = await init(...a);
    const s = dst.engine.connection(k)!.state;
    const d = s.delegated;
    await during(d.rcvNxt, d.sndUna, s.const.tsEnabled ? { val: d.tsRecent, ecr: 0 } : undefined);
    return res;
  };
}

function payloadOf(n: number): Uint8Array {
  const payload = new Uint8Array(n);
  for (let i = 0; i < n; i++) payload[i] = (i * 11 + 5) & 0xff;
  return payload;
}

test("the peer's data, FIN and then reset during the settle read as the data, then end", async () => {
  const p = offloadPair(41);
  const m = p.host.offload;
  // The general protocol's settle (a live hand-over between LocalNics has no attach loop).
  m.liveHandover = false;
  const [n0, n1] = p.host.nics as [LocalNic, LocalNic];
  const sockets = await idleOffloaded(p, 3);
  const keys = keysOf(sockets);
  const victim = 1;
  const k = keys[victim]!;
  const payload = payloadOf(300);
  // Once the destination runs the connection, and while the settle awaits, the peer's data with
  // its FIN (CLOSE_WAIT) and then its reset (Linux: sk_err EPIPE, but SOCK_DONE is set) come.
  onInstall(n1, k, (rcvNxt, sndUna, ts) => {
    n1.inject([
      dataOf(k, rcvNxt, sndUna, payload, ts, true),
      resetOf(k, (rcvNxt + payload.length + 1) >>> 0),
    ]);
  });
  const sock = sockets[victim]!;
  const seen = watch(sock);
  const r = await m.move(keys, n0, n1);
  assert.deepEqual(
    r.refused.map((f) => [f.key.localPort, f.status]),
    [[k.localPort, 'closed']],
    'it ended at the destination during the move',
  );
  assert.equal(r.moved.length, 2, 'the other two moved');
  // Bounded, in simulated time: the socket ends by itself (allowHalfOpen off).
  for (let i = 0; i < 100 && !seen.events.includes('close'); i++) await p.net.sleep(10);
  assert.deepEqual(new Uint8Array(seen.got()), payload, 'it read the data the peer sent');
  assert.deepEqual(seen.events, ['end', 'close'], 'then end-of-file, with no error');
  assert.equal(sock.destroyed, true);
  assert.equal(m.ownerOf(k), null, 'the host forgot it');
  p.net.close();
});

test('data and then a retransmission timeout during the settle read as the data, then ETIMEDOUT', async () => {
  // Few retransmissions: the timeout comes within the settle's held await.
  const p = offloadPair(42, { tcp: { maxRetransmits: 2 } });
  const m = p.host.offload;
  m.liveHandover = false;
  const [n0, n1] = p.host.nics as [LocalNic, LocalNic];
  const sockets = await idleOffloaded(p, 3);
  const keys = keysOf(sockets);
  const victim = 2;
  const k = keys[victim]!;
  const sock = sockets[victim]!;
  const payload = payloadOf(200);
  // The peer is gone (its cable pulled): what the host writes now is never acknowledged.
  p.peer.cut();
  sock.write(Buffer.from('unanswered'));
  onInstall(n1, k, async (rcvNxt, sndUna, ts) => {
    // Data the peer sent before it went, then the settle held until the destination gives up.
    n1.inject([dataOf(k, rcvNxt, sndUna, payload, ts)]);
    for (let i = 0; i < 600 && n1.engine.connection(k) !== undefined; i++) await p.net.sleep(100);
    assert.equal(n1.engine.connection(k), undefined, 'the destination timed it out');
  });
  const seen = watch(sock);
  const r = await m.move(keys, n0, n1);
  assert.deepEqual(
    r.refused.map((f) => [f.key.localPort, f.status]),
    [[k.localPort, 'closed']],
  );
  for (let i = 0; i < 100 && !seen.events.includes('close'); i++) await p.net.sleep(10);
  assert.deepEqual(new Uint8Array(seen.got()), payload, 'it read the data the peer sent');
  assert.deepEqual(seen.events, ['error ETIMEDOUT', 'close'], 'then the timeout');
  assert.equal(sock.destroyed, true);
  p.net.close();
});
