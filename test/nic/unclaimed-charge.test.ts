/**
 * A NicEngine keeps a connection that closed before anything attached to it, with data unread, for
 * a settle's attachClosed (test/offload/reset-after-data-settle.test.ts). Its unread bytes stay
 * charged to the engine's TCP memory (TcpBudget.holdUnread) until read or dropped, as Linux keeps a
 * socket's queued skbs charged until close(2) purges them. One let go unclaimed (its tuple
 * terminated or installed there again, the oldest over the bound) is dropped by nobody else: its
 * charge must go with it, or the NIC's budget counts, for good, memory nothing holds, and a peer
 * that resets connections during moves over and over drives the NIC into memory pressure.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import { isTreeTransfer } from '../../src/nic/nic.ts';
import { dataOf, resetOf } from '../helpers/segments.ts';
import { keysOf, offloadPair, startStreams } from '../offload/helpers.ts';

const KEPT = 64;

test('a closed connection a NicEngine kept and let go unclaimed takes its memory charge with it', async () => {
  const p = offloadPair(73);
  const m = p.host.offload;
  const [n0, n1] = p.host.nics as [LocalNic, LocalNic];
  // Two more than the engine keeps: the oldest two are let go by the bound.
  const n = KEPT + 2;
  const st = await startStreams(p, n, 60_000, 1000, 10);
  const keys = keysOf(st.sockets);
  assert.equal((await m.offload(keys, n0)).moved.length, n);
  await p.net.sleep(50);
  const budget = n1.engine.tcp.budget;
  const before = budget.used;

  // Installed at n1 straight from n0's release, with nothing attached (as during a settle), then
  // the peer's data and its reset: each closes there with its data unread.
  const released = n0.engine.terminateTrees(keys);
  assert.ok(isTreeTransfer(released));
  assert.equal(n1.engine.initiate(released).status, 'success');
  const payload = new Uint8Array(500).fill(7);
  for (const k of keys) {
    const s = n1.engine.connection(k)!.state;
    const d = s.delegated;
    const ts = s.const.tsEnabled ? { val: d.tsRecent, ecr: 0 } : undefined;
    n1.inject([dataOf(k, d.rcvNxt, d.sndUna, payload, ts), resetOf(k, (d.rcvNxt + payload.length) >>> 0)]);
  }
  for (let i = 0; i < 100 && keys.some((k) => n1.engine.connection(k) !== undefined); i++)
    await p.net.sleep(1);
  for (const k of keys) assert.equal(n1.engine.connection(k), undefined, 'closed at n1');
  assert.equal(budget.used, before + KEPT * payload.length, 'only the kept ones charged');

  // The newest let go by a terminate of its tuple.
  n1.engine.terminate([keys[n - 1]!]);
  assert.equal(n1.engine.claimClosed(keys[n - 1]!), undefined, 'no longer kept');
  assert.equal(budget.used, before + (KEPT - 1) * payload.length, 'its charge went with it');

  // The oldest two were let go by the bound; the rest are claimed, read and dropped.
  assert.equal(n1.engine.claimClosed(keys[0]!), undefined);
  assert.equal(n1.engine.claimClosed(keys[1]!), undefined);
  const buf = new Uint8Array(4096);
  for (const k of keys.slice(2, n - 1)) {
    const conn = n1.engine.claimClosed(k);
    assert.ok(conn !== undefined, 'still kept');
    assert.equal(conn.read(buf), payload.length);
    conn.dropUnread();
  }
  assert.equal(budget.used, before, 'nothing charged for connections let go');
  p.net.close();
});
