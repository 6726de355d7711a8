/**
 * A move between two WorkerNics names the transfer records the source wrote: the destination's
 * worker reads and validates them, and the host reads, writes and validates no state on the way.
 * The source's worker hands the batch straight to the destination's (`Nic.handTo`): one request,
 * answered by both. Only what the destination refuses is read by the host (from records handed
 * back to it) and rolled back, as exactly as before.
 */
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { describe, test } from 'node:test';
import { HardStateRecord } from '../../src/nic/hard-state.ts';
import { TransferRecord } from '../../src/nic/transfer-record.ts';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import { addWorkerHost, socketKey, streamBothWays, WORKER_CASE_MS } from './worker-helpers.ts';

/** Calls, on this thread, that read or write a connection's state in shared memory. */
function spyRecords(t: TestContext): { reads: number; writes: number } {
  const n = { reads: 0, writes: 0 };
  const proto = TransferRecord.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  const hard = HardStateRecord.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  const wrap = (o: Record<string, (...a: unknown[]) => unknown>, name: string, k: 'reads' | 'writes') => {
    const f = o[name]!;
    o[name] = function (this: unknown, ...a: unknown[]) {
      n[k]++;
      return f.apply(this, a);
    };
    t.after(() => {
      o[name] = f;
    });
  };
  wrap(proto, 'read', 'reads');
  wrap(proto, 'readInto', 'reads');
  wrap(proto, 'write', 'writes');
  wrap(hard, 'write', 'writes');
  return n;
}

/** Requests each NIC's host side sends its worker, by verb. */
function spyRequests(nics: readonly WorkerNic[]): Record<string, number>[] {
  return nics.map((n) => {
    const seen: Record<string, number> = {};
    const self = n as unknown as { request: (r: { op: string }) => Promise<unknown> };
    const f = self.request.bind(n);
    self.request = (r) => {
      seen[r.op] = (seen[r.op] ?? 0) + 1;
      return f(r);
    };
    return seen;
  });
}

async function setup(t: TestContext, capacity: number) {
  const net = new SimNetwork({ seed: 23, virtualTime: false });
  const wh = addWorkerHost(net, { capacity });
  t.after(() => {
    wh.close();
    net.close();
  });
  const peer = net.addHost({ ip: '10.0.0.2/24' });
  await Promise.all(wh.nics.map((n) => n.ready()));
  return { wh, peer, nics: wh.nics as [WorkerNic, WorkerNic] };
}

describe('moves between WorkerNics by named records', () => {
  test('the host reads and writes no state of a moved connection, and asks only the source; every byte arrives', {
    timeout: WORKER_CASE_MS,
  }, async (t) => {
    const { wh, peer, nics } = await setup(t, 64);
    const st = await streamBothWays(wh.host, peer, 12, 300_000, 1000, 2);
    const keys = st.sockets.map(socketKey);
    const m = wh.offload;
    assert.equal((await m.offload(keys, nics[0])).moved.length, keys.length);
    const spy = spyRecords(t);
    const seen = spyRequests(nics);
    for (let i = 0; i < 3; i++) {
      assert.equal((await m.move(keys, nics[0], nics[1])).moved.length, keys.length);
      assert.equal((await m.move(keys, nics[1], nics[0])).moved.length, keys.length);
    }
    // One request a move, to the source, whose worker hands the batch to the destination's, which
    // answers the host (two round trips before: terminate at the source, initiate at the destination).
    assert.deepEqual(seen, [{ terminate: 3 }, { terminate: 3 }]);
    assert.equal(wh.stack.counters.get('offload.handed'), 6 * keys.length);
    // The general protocol read each record into a state, validated it and wrote it again (and
    // the hard-state record) for the destination: 12 connections, six moves.
    assert.deepEqual({ ...spy }, { reads: 0, writes: 0 });
    assert.equal(m.keysOn(nics[0]).length, keys.length);
    // Upload reads them, as the host's own now.
    assert.equal((await m.upload(keys)).moved.length, keys.length);
    assert.equal(spy.reads, keys.length);
    assert.equal(await st.done, 0, 'every direction of every connection intact');
    assert.deepEqual(st.errors, []);
  });

  test('what the destination refuses is read by the host and rolled back to the source, intact', {
    timeout: WORKER_CASE_MS,
  }, async (t) => {
    const { wh, peer, nics } = await setup(t, 10);
    const st = await streamBothWays(wh.host, peer, 14, 300_000, 1000, 2);
    const keys = st.sockets.map(socketKey);
    const m = wh.offload;
    const a = keys.slice(0, 8);
    const b = keys.slice(8);
    assert.equal((await m.offload(a, nics[0])).moved.length, a.length);
    assert.equal((await m.offload(b, nics[1])).moved.length, b.length);
    const spy = spyRecords(t);
    // Room for four more at NIC 1.
    const r = await m.move(a, nics[0], nics[1]);
    assert.equal(r.moved.length, 4);
    assert.deepEqual(
      r.refused.map((x) => x.status),
      ['no-resources', 'no-resources', 'no-resources', 'no-resources'],
    );
    // Only the four refused were read (and written again for NIC 0, their way back).
    assert.equal(spy.reads, 4);
    assert.equal(m.keysOn(nics[0]).length, 4);
    assert.equal(m.keysOn(nics[1]).length, 10);
    const back = new Set(m.keysOn(nics[0]).map((k) => k.localPort));
    assert.deepEqual(
      r.refused.map((x) => back.has(x.key.localPort)),
      [true, true, true, true],
    );
    assert.equal((await m.upload(keys)).moved.length, keys.length);
    assert.equal(await st.done, 0, 'every direction of every connection intact');
    assert.deepEqual(st.errors, []);
  });

  test('handTo answers null, changing nothing, where a pair cannot hand over directly', async (t) => {
    const { wh, peer, nics } = await setup(t, 16);
    peer.createServer(() => {}).listen(80);
    const s = wh.host.connect({ port: 80, host: '10.0.0.2' });
    s.on('error', () => {});
    await new Promise((r) => s.once('connect', r));
    const k = socketKey(s);
    assert.equal((await wh.offload.offload([k], nics[0])).moved.length, 1);
    assert.equal(nics[0].handTo(nics[0], [k], {}), null, 'to itself');
    assert.equal(nics[0].handTo(wh.offload as never, [k], {}), null, 'not a WorkerNic');
    // IPv6 keys are handed too since s39h4 (test/team/worker-hand-three.test.ts).
    nics[1].useRecords = false;
    assert.equal(nics[0].handTo(nics[1], [k], {}), null, 'records off at the destination');
    nics[1].useRecords = true;
    // Still running at the source, its socket untouched.
    assert.equal(wh.offload.keysOn(nics[0]).length, 1);
    assert.ok(s.write(Buffer.from('still here')));
    s.destroy();
  });

  test('a destination whose link is down refuses the whole batch: rolled back to the source, every byte intact', {
    timeout: WORKER_CASE_MS,
  }, async (t) => {
    const { wh, peer, nics } = await setup(t, 64);
    const st = await streamBothWays(wh.host, peer, 10, 300_000, 1000, 2);
    const keys = st.sockets.map(socketKey);
    const m = wh.offload;
    assert.equal((await m.offload(keys, nics[0])).moved.length, keys.length);
    const port = (nics[1] as unknown as { link: { cut(): void; restore(): void } }).link;
    port.cut();
    // The destination's worker hears of its carrier by message: wait until it has.
    while (nics[1].linkUp) await new Promise((r) => setTimeout(r, 5));
    const spy = spyRecords(t);
    const r = await m.move(keys, nics[0], nics[1]);
    assert.equal(r.moved.length, 0);
    assert.deepEqual(new Set(r.refused.map((x) => x.reason)), new Set(['link down']));
    // Each refused record read once by the host, back from the destination's offer.
    assert.equal(spy.reads, keys.length);
    assert.equal(m.keysOn(nics[0]).length, keys.length);
    port.restore();
    assert.equal((await m.move(keys, nics[0], nics[1])).moved.length, keys.length);
    assert.equal((await m.upload(keys)).moved.length, keys.length);
    assert.equal(await st.done, 0, 'every direction of every connection intact');
    assert.deepEqual(st.errors, []);
  });

  test('a large move is handed in parts, all in flight at once: the source releases one while the destination installs another', {
    timeout: WORKER_CASE_MS,
  }, async (t) => {
    const { wh, peer, nics } = await setup(t, 700);
    peer.createServer(() => {}).listen(80);
    const sockets = [];
    for (let i = 0; i < 600; i++) {
      const s = wh.host.connect({ port: 80, host: '10.0.0.2' });
      s.on('error', () => {});
      sockets.push(s);
      if (i % 100 === 99) await new Promise((r) => setTimeout(r, 5));
    }
    await Promise.all(sockets.map((s) => (s.connecting ? new Promise((r) => s.once('connect', r)) : null)));
    const keys = sockets.map(socketKey);
    const m = wh.offload;
    assert.equal((await m.offload(keys, nics[0])).moved.length, keys.length);
    let inFlight = 0;
    let most = 0;
    let asked = 0;
    const self = nics[0] as unknown as { request: (r: { op: string }) => Promise<unknown> };
    const f = self.request.bind(nics[0]);
    self.request = (r) => {
      asked++;
      most = Math.max(most, ++inFlight);
      return f(r).finally(() => inFlight--);
    };
    const r = await m.move(keys, nics[0], nics[1]);
    assert.equal(r.moved.length, keys.length);
    assert.equal(m.keysOn(nics[1]).length, keys.length);
    // 600 in parts of 256: three requests, sent before the first answer came.
    assert.equal(asked, 3);
    assert.equal(most, 3);
    for (const s of sockets) s.destroy();
  });
});
