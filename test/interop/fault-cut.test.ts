/**
 * The soak's cut of the stalls across a fault (tap-load.ts `cutStalls`): by who owned the
 * download, already stalled or flowing when the fault came, and the same count at moments
 * around it, so the connect burst's stalls are told from the fault's.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cutStalls, threadUsage } from './tap-load.ts';

test('stalls across a fault are cut by owner and by whether they were already stalled', () => {
  const at = 100_000;
  const stalls: [number, number, number, number][] = [
    // On the faulted NIC: stalled for a second already, and one flowing until the fault.
    [at - 1000, at + 800, 0, 1000],
    [at - 10, at + 300, 1, 1001],
    [at - 20, at + 200, 2, 1002],
    // On the other NIC, already stalled.
    [at - 400, at + 50, 3, 2000],
    // Began after the fault: not across it.
    [at + 100, at + 400, 4, 1003],
    // Ended before it: across the moment a second earlier only.
    [at - 1500, at - 900, 5, 1004],
    // In the host, and one nobody owned at the fault.
    [at - 60, at + 20, 6, 3000],
    [at, at + 30, 7, 4000],
  ];
  const owner = new Map<number, string>([
    [1000, 'nic0'],
    [1001, 'nic0'],
    [1002, 'nic0'],
    [1003, 'nic0'],
    [1004, 'nic0'],
    [2000, 'nic1'],
    [3000, 'host'],
  ]);
  const c = cutStalls(stalls, at, owner, 'nic0', { startAt: at - 9000, readyAt: at - 700 });
  assert.equal(c.atMs, 9000);
  assert.equal(c.afterReadyMs, 700);
  assert.deepEqual(c.faulted, { stalled: 3, stalledBefore: 1, p50ResumeMs: 300, resumeMs: 800 });
  assert.deepEqual(c.other, { stalled: 1, stalledBefore: 1, p50ResumeMs: 50, resumeMs: 50 });
  assert.deepEqual(c.host, { stalled: 1, stalledBefore: 1, p50ResumeMs: 20, resumeMs: 20 });
  assert.deepEqual(c.unknown, { stalled: 1, stalledBefore: 0, p50ResumeMs: 30, resumeMs: 30 });
  // The same rule as stalledByFault: six gaps across the fault itself.
  assert.equal(c.around['0'], 6);
  assert.equal(c.around['-1000'], 2);
  assert.equal(c.around['500'], 1);
  assert.equal(c.around['1000'], 0);
});

test("serve's main-thread usage is read from /proc: CPU time, minor faults, resident memory", {
  skip: process.platform !== 'linux' && 'no /proc',
}, () => {
  const a = threadUsage(process.pid);
  assert.ok(a !== null && a.rssMB > 0);
  // 32 MiB of fresh memory written: a fault a page (fewer only with huge pages, which Node does not ask for).
  const fresh = new Uint8Array(32 << 20);
  for (let i = 0; i < fresh.length; i += 4096) fresh[i] = 1;
  // 150 ms of this thread's CPU, not of the wall clock: at load 32 a thread at nice 19 got 0-80 ms
  // of CPU (most often 10) in a 150 ms spin, and the count passed only by the page faults' own
  // time. Read as the assertion reads it (the thread's own count, not the process's, which other
  // threads' work would fill).
  const spun = Date.now() + 30_000;
  while (threadUsage(process.pid)!.cpuMs - a.cpuMs < 150 && Date.now() < spun);
  const b = threadUsage(process.pid)!;
  assert.ok(b.minorFaults - a.minorFaults >= 1000, `${b.minorFaults - a.minorFaults} faults`);
  assert.ok(b.cpuMs - a.cpuMs >= 100, `${b.cpuMs - a.cpuMs} ms`);
  assert.ok(b.rssMB >= a.rssMB + 16);
  assert.ok(b.runqueueMs >= a.runqueueMs);
  assert.equal(fresh[4096], 1, 'the memory stays referenced until its pages are counted');
  assert.equal(threadUsage(0x7ffffffe), null);
});
