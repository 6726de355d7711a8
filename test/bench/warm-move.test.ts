/**
 * `warm-move` at a tiny size: every counted move is there with its wall, the main thread's CPU and
 * the collections attributed to it, and its phases; `--heap` names what the main thread allocated, by function,
 * and with `--workers` what each worker thread did.
 * What the figures are is the benchmark's business; here, that they are there and add up.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { benchWarmMove, parseWarmMoveFlags } from '../../bench/warm-move.ts';
import { schedstatSkip } from '../helpers/schedstat.ts';

test('warm-move: each counted move measured, allocations by function with --heap', {
  skip: schedstatSkip(),
  timeout: 120_000,
}, async () => {
  assert.deepEqual(parseWarmMoveFlags(['--rounds', '4', '--skip', '1', '--heap']), {
    rounds: 4,
    skip: 1,
    heap: true,
  });
  assert.throws(() => parseWarmMoveFlags(['--rounds', '1']), /rounds/);
  assert.equal(parseWarmMoveFlags(['--heap', '--workers']).workers, true);
  const r = await benchWarmMove({ connections: 30, rounds: 3, skip: 1, heap: 1024, workers: true });
  assert.equal(r.connections, 30);
  assert.equal(r.moves, 4, 'two moves a counted round');
  assert.equal(r.each.length, 4);
  for (const e of r.each) {
    assert.ok(e.wallMs > 0 && e.mainCpuMs >= 0 && e.gcs >= e.majors && e.gcMs >= 0, JSON.stringify(e));
  }
  // A hand from worker to worker: the move's time is the freeze, the hand (with the install
  // inside it) and what follows; none negative, the hand (a round trip through two workers) not 0.
  for (const [span, ms] of Object.entries(r.phases)) assert.ok(ms >= 0, `${span} ${ms}`);
  assert.ok(r.phases.hand > 0, JSON.stringify(r.phases));
  assert.ok(r.heap && r.heap.bytesPerMove > 0 && r.heap.top.length > 0, 'allocations sampled');
  for (let i = 1; i < r.heap.top.length; i++)
    assert.ok(r.heap.top[i - 1]!.bytesPerMove >= r.heap.top[i]!.bytesPerMove, 'largest first');
  // Both NICs' workers (started after the inspector was asked to announce them), each sampled:
  // their moves' work names the worker's own code.
  const nics = (r.workers ?? []).filter((w) => w.top.some((t) => t.where.startsWith('src/nic/worker/')));
  assert.equal(nics.length, 2, JSON.stringify(r.workers?.map((w) => [w.url, w.bytesPerMove])));
  for (const w of nics) assert.ok(w.bytesPerMove > 0);
});
