/**
 * A worker's answer to a request goes behind every frame it passed up to the host before it. A
 * loaded worker handles the batches of frames queued for it and a request in one turn; its up
 * batch was posted at the end of that turn, after the answer, so the host read counters that had
 * counted frames it had not yet received (a baseline that claimed segments the host's placeholder
 * forwarded right after it, test/team/worker-direct.test.ts), and could learn of an install before
 * the segments the worker had passed up while it did not yet run the connection.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { FromWorker } from '../../src/nic/worker/protocol.ts';
import { forEachFrame } from '../../src/nic/worker/protocol.ts';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import { workerSetup } from './worker-helpers.ts';

const DATAGRAMS = 20;

/** Frames `nic`'s worker has posted up to the host so far, as the host's side receives them. */
function upCount(nic: WorkerNic): () => number {
  let n = 0;
  nic.worker.prependListener('message', (m: FromWorker) => {
    if (m.t === 'up')
      n += Math.max(
        0,
        forEachFrame(m.buf, m.len, () => {}),
      );
  });
  return () => n;
}

/** Frames the host side has posted to `nic`'s worker so far (counted before the buffer is transferred). */
function rxCount(nic: WorkerNic): () => number {
  let n = 0;
  const post = nic.worker.postMessage.bind(nic.worker);
  nic.worker.postMessage = (m: { t?: string; buf?: ArrayBuffer; len?: number }, transfer?: never) => {
    if (m?.t === 'rx' && m.buf !== undefined)
      n += Math.max(
        0,
        forEachFrame(m.buf, m.len ?? 0, () => {}),
      );
    post(m, transfer);
  };
  return () => n;
}

describe('WorkerNic: answers and the frames passed up before them', () => {
  test('every frame a worker counted as passed up reaches the host before its answer to counters', {
    timeout: 30_000,
  }, async (t) => {
    // Stalled on purpose, and starved by other suites: not taken as dead for it.
    const { net, wh, peer } = await workerSetup(71, t, { deadAfterMs: 10_000 });
    const ups = wh.nics.map(upCount);
    const rxs = wh.nics.map(rxCount);
    const got: number[] = [];
    wh.stack.udp.bind({ port: 9 }, (d) => got.push(d[0]!));
    const out = peer.stack.udp.bind({}, () => {});
    // Neighbors resolved both ways, so what the peer sends next is datagrams and nothing else.
    out.send(new Uint8Array([255]), 9, '10.0.0.1');
    for (let i = 0; i < 200 && got.length === 0; i++) await net.sleep(10);
    assert.deepEqual(got, [255], 'the first datagram arrived');
    // What each worker passed up before the listeners above were in place (its neighbor
    // discovery: the peer's announcement and ARP request come up through every member), read
    // once nothing is on its way: every frame a worker posted up has reached the host stack
    // (rxReadState), and its count of frames passed up has not moved since the reading before.
    const passed = () => Promise.all(wh.nics.map((n) => n.counters().then((c) => c['nic.rx.host'] ?? 0)));
    let counted = await passed();
    let settled = false;
    for (let i = 0; i < 2000 && !settled; i++) {
      await net.sleep(10);
      const caughtUp = wh.nics.every((n) => n.rxReadState().empty !== false);
      const now = await passed();
      settled = caughtUp && now.every((c, k) => c === counted[k]);
      counted = now;
    }
    assert.ok(settled, 'the neighbor discovery passed up and received');
    const before = counted.map((c, i) => c - ups[i]!());
    // Both workers blocked (the switch delivers to whichever member sent last): the frames and the
    // request wait in each one's queue and are handled in one turn, as behind a busy core.
    for (const n of wh.nics) n.stall(300);
    const rxBefore = rxs.reduce((a, r) => a + r(), 0);
    for (let i = 0; i < DATAGRAMS; i++) out.send(new Uint8Array([i]), 9, '10.0.0.1');
    // Queued at a worker (the main thread posts a port's frames at the end of its turn) before the
    // request below: waited for, since on a loaded machine the simulated network's delivery can
    // take longer than any fixed pause (a 30 ms one let 16 of 20 follow the request, and the case
    // then asserted nothing about them).
    for (let i = 0; i < 500 && rxs.reduce((a, r) => a + r(), 0) - rxBefore < DATAGRAMS; i++)
      await net.sleep(5);
    assert.ok(
      rxs.reduce((a, r) => a + r(), 0) - rxBefore >= DATAGRAMS,
      'the datagrams were posted to the workers',
    );
    const seen = await Promise.all(
      wh.nics.map((n, i) =>
        n.counters().then((c) => ({ counted: (c['nic.rx.host'] ?? 0) - before[i]!, arrived: ups[i]!() })),
      ),
    );
    const total = seen.reduce((a, s) => a + s.counted, 0);
    assert.ok(total >= 1 + DATAGRAMS, `the datagrams were passed up: ${JSON.stringify(seen)}`);
    for (const s of seen)
      assert.equal(s.arrived, s.counted, `up frames the answer had counted: ${JSON.stringify(seen)}`);
  });
});
