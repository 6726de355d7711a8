/**
 * `offload-worker --cpu` at a tiny size: the move back is timed beside the other verbs, and each
 * verb's CPU is read for the main thread, each NIC's worker (found by its thread's name) and the
 * rest; each verb of every connection is timed in one call as well. What the figures are is the
 * benchmark's business; here, that they are there.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { benchOffloadWorker } from '../../bench/offload-worker.ts';

test('--cpu: four verbs timed, each with CPU by thread, the workers by NIC', {
  skip: existsSync('/proc/thread-self/comm') ? false : 'Linux only (threads in /proc)',
  timeout: 120_000,
}, async () => {
  const r = await benchOffloadWorker({ connections: 40, runs: 2, streams: 2, bytesEach: 65_536, cpu: true });
  assert.ok(r.back, 'the move back is timed');
  assert.equal(r.back.samples, 2 * Math.ceil(r.connections / 100), 'a batch a run');
  assert.deepEqual(Object.keys(r.cpu ?? {}).sort(), ['back', 'move', 'offload', 'upload']);
  for (const [verb, c] of Object.entries(r.cpu ?? {})) {
    assert.deepEqual(Object.keys(c.workers).sort(), ['w.nic0', 'w.nic1'], verb);
    for (const ms of [c.main, c.other, ...Object.values(c.workers)])
      assert.ok(Number.isFinite(ms) && ms >= 0, `${verb}: ${ms}`);
  }
  // Each verb of every connection in one call too, once a run (it throws unless every one moved).
  assert.deepEqual(Object.keys(r.whole).sort(), ['back', 'move', 'offload', 'upload']);
  for (const [verb, w] of Object.entries(r.whole)) {
    assert.equal(w.samples, 2, verb);
    assert.ok(w.p50Ms > 0 && w.p99Ms >= w.p50Ms, `${verb}: ${w.p50Ms} ${w.p99Ms}`);
  }
  // The first move to the worker that never held them, once, before the runs.
  assert.ok(r.firstMoveMs > 0, `first move: ${r.firstMoveMs}`);
  const plain = await benchOffloadWorker({ connections: 40, runs: 1, streams: 2, bytesEach: 65_536 });
  assert.equal(plain.back, undefined, 'without --cpu the loop is as before');
  assert.equal(plain.cpu, undefined);
  assert.deepEqual(Object.keys(plain.whole).sort(), ['move', 'offload', 'upload']);
});
