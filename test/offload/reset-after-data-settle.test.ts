/**
 * Data the peer sent that reached the destination during a settle, and then the peer's reset: the
 * application reads the data, then hears ECONNRESET. Linux does the same: tcp_reset() purges the
 * write queue only (tcp_write_queue_purge, then tcp_done), and tcp_recvmsg() copies what the
 * receive queue holds before it looks at sk_err. Before, the destination closed the connection
 * before any socket was attached to it, the settle's attach found nothing, and the socket heard
 * ECONNRESET with the data lost.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import { dataOf, resetOf } from '../helpers/segments.ts';
import { keysOf, offloadPair, startStreams } from './helpers.ts';

test('data before a reset at the destination during the settle is read before ECONNRESET', async () => {
  const p = offloadPair(39);
  const m = p.host.offload;
  // The general protocol's settle (a live hand-over between LocalNics has no attach loop).
  m.liveHandover = false;
  const [n0, n1] = p.host.nics as [LocalNic, LocalNic];
  const st = await startStreams(p, 6, 120_000);
  const keys = keysOf(st.sockets);
  assert.equal((await m.offload(keys, n0)).moved.length, 6);
  await p.net.sleep(50);
  const victim = 2;
  const k = keys[victim]!;
  const payload = new Uint8Array(300);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + 13) & 0xff;
  // The peer's data and then its RST reach the destination straight from the wire once it runs
  // the connection, while the settle awaits what the source held.
  const init = n1.initiate.bind(n1);
  n1.initiate = async (...a: Parameters<LocalNic['initiate']>) => {
    const res = await init(...a);
    const s = n1.engine.connection(k)!.state;
    const d = s.delegated;
    const ts = s.const.tsEnabled ? { val: d.tsRecent, ecr: 0 } : undefined;
    n1.inject([dataOf(k, d.rcvNxt, d.sndUna, payload, ts), resetOf(k, (d.rcvNxt + payload.length) >>> 0)]);
    return res;
  };
  const sock = st.sockets[victim]!;
  const events: string[] = [];
  let got = Buffer.alloc(0);
  sock.on('data', (b: Buffer) => {
    got = Buffer.concat([got, b]);
  });
  sock.on('error', (e: NodeJS.ErrnoException) => events.push(`error ${e.code}`));
  const r = await m.move(keys, n0, n1);
  assert.equal(r.moved.length, 5, 'the other five moved');
  assert.deepEqual(
    r.refused.map((f) => [f.key.localPort, f.status]),
    [[k.localPort, 'closed']],
  );
  assert.equal(m.ownerOf(k), null, 'the host forgot it');
  // The socket ends by itself; bounded, in simulated time.
  for (let i = 0; i < 100 && (!sock.destroyed || events.length === 0); i++) await p.net.sleep(10);
  assert.equal(sock.moving, false);
  assert.equal(sock.destroyed, true, 'the socket ended');
  assert.deepEqual(events, ['error ECONNRESET'], 'it heard the reset');
  assert.ok(got.length >= payload.length, 'it read data');
  assert.deepEqual(
    new Uint8Array(got.subarray(got.length - payload.length)),
    payload,
    'the last bytes it read are the data the peer sent before its reset',
  );
  for (let i = 0; i < keys.length; i++) {
    if (i === victim) continue;
    assert.equal(m.ownerOf(keys[i]!), n1, `connection ${i} runs at the destination`);
  }
  // Its two directions fail (the reset); the other ten arrive whole.
  assert.equal(await st.done, 2);
  p.net.close();
});
