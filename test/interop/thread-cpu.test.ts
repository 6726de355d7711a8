/**
 * The CPU by thread that tap-team and offload-worker --cpu report (tap-load.ts): schedstat parsed
 * from /proc's text, grouped by thread (main, each NIC's worker by its name, the rest), and per MB
 * delivered.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cpuPerMB, parseSchedstat, type ThreadTimes, threadsBetween } from './tap-load.ts';

test("schedstat's text: ns on a core, ns waiting for one; anything else is no reading", () => {
  assert.deepEqual(parseSchedstat('97945946 30337499 78\n'), { cpuNs: 97945946, waitNs: 30337499 });
  assert.deepEqual(parseSchedstat('1234567890123 0 1'), { cpuNs: 1234567890123, waitNs: 0 });
  for (const bad of ['', '12 34\n', 'a b c\n', '1 2 3 4\n']) assert.equal(parseSchedstat(bad), null, bad);
});

test('threads grouped by role between two readings, and per MB delivered', () => {
  const serve = 100;
  const at = (rows: [number, number, string, string][]): ThreadTimes =>
    new Map(
      rows.map(([pid, tid, comm, text]) => [`${pid}/${tid}`, { pid, tid, comm, ...parseSchedstat(text)! }]),
    );
  const a = at([
    [serve, 100, 'node', '1000000000 5000000 10\n'],
    [serve, 101, 'tap0', '2000000000 0 10\n'],
    [serve, 103, 'node', '500000000 0 3\n'],
    [serve, 104, 'node', '900000000 0 3\n'],
    [200, 200, 'python3', '0 0 0\n'],
  ]);
  const b = at([
    [serve, 100, 'node', '3000000000 9000000 50\n'],
    [serve, 101, 'tap0', '6000000000 1000000 40\n'],
    // Started between the readings: counted from zero.
    [serve, 102, 'tap1', '1500000000 0 20\n'],
    [serve, 103, 'node', '1000000000 0 5\n'],
    // 104 ended in between (a killed worker's thread): left out.
    [200, 200, 'python3', '4000000000 2000000 90\n'],
    [7, 7, 'ksoftirqd/0', '250000000 0 9\n'],
  ]);
  const t = threadsBetween(a, b, serve, ['tap0', 'tap1']);
  assert.deepEqual(t.serveMain, { cpuMs: 2000, runqueueMs: 4 });
  assert.deepEqual(t.nics, { tap0: { cpuMs: 4000, runqueueMs: 1 }, tap1: { cpuMs: 1500, runqueueMs: 0 } });
  assert.deepEqual(t.serveOther, { cpuMs: 500, runqueueMs: 0 });
  assert.deepEqual(t.client, { cpuMs: 4000, runqueueMs: 2 });
  assert.deepEqual(t.ksoftirqd, { cpuMs: 250, runqueueMs: 0 });
  // The burst and what followed, together, over 500 MB.
  assert.deepEqual(cpuPerMB({ burst: t, after: t }, 500_000_000), {
    main: 8,
    nics: { tap0: 16, tap1: 6 },
    other: 2,
    serve: 32,
    client: 16,
    ksoftirqd: 1,
  });
});
