/**
 * `crash-rebuild` at a tiny size: each crash rebuilds every connection at the survivor, and its
 * parts are measured and fit inside the whole; `--profile` writes a CPU profile and names its
 * functions. What the figures are is the benchmark's business; here, that they are there and add up.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { benchCrashRebuild, parseCrashRebuildFlags } from '../../bench/crash-rebuild.ts';
import { schedstatSkip } from '../helpers/schedstat.ts';

test('crash-rebuild: every connection rebuilt in each run, the parts measured, a profile with --profile', {
  skip: schedstatSkip(),
  timeout: 240_000,
}, async (t) => {
  assert.deepEqual(parseCrashRebuildFlags(['--runs', '2', '--connections', '40', '--profile', 'p']), {
    runs: 2,
    connections: 40,
    profile: 'p',
  });
  assert.throws(() => parseCrashRebuildFlags(['--runs', '0']), /runs/);
  const dir = mkdtempSync(join(tmpdir(), 'crash-rebuild-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const r = await benchCrashRebuild({ connections: 30, runs: 2, profile: join(dir, 'p') });
  assert.equal(r.connections, 30);
  assert.equal(r.each.length, 2);
  for (const e of r.each) {
    assert.equal(e.moved, 30, 'every connection rebuilt');
    assert.ok(e.salvageMs >= 0 && e.salvageMs <= e.untilInstallMs, JSON.stringify(e));
    assert.ok(e.untilInstallMs + e.installMs + e.settleMs <= e.recoverMs + 0.5, JSON.stringify(e));
    assert.ok(e.mainCpuMs > 0 && e.untilInstallCpuMs <= e.mainCpuMs + 0.1, JSON.stringify(e));
    assert.ok(e.detectMs >= 0, JSON.stringify(e));
    // Each tenth prodded by its time, in order, the last at all resumed.
    assert.equal(e.tenthsMs.length, 10, JSON.stringify(e));
    for (let i = 1; i < 10; i++) assert.ok(e.tenthsMs[i - 1]! <= e.tenthsMs[i]!, JSON.stringify(e));
    assert.equal(e.tenthsMs[9], e.resumedMs, JSON.stringify(e));
  }
  assert.equal(r.median.tenthsMs.length, 10, 'the median of each tenth, as a list');
  assert.ok(r.profile && existsSync(r.profile.file), 'profile written');
  assert.ok(r.profile.top.length > 0 && r.profile.totalMs > 0, 'functions by self time');
  for (let i = 1; i < r.profile.top.length; i++)
    assert.ok(r.profile.top[i - 1]!.selfMs >= r.profile.top[i]!.selfMs, 'largest first');
});
