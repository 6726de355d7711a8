/**
 * The load client's connect ramp (scripts/tap-load.py open_on_schedule) keeps to the clock, not to
 * its loop: driven here with a clock of its own whose every sleep wakes late (the loop busy with
 * the downloads already open), the connects of a 2 s ramp still all go within the ramp and one
 * late wake. Paced by sleeps between groups, the ramp of 5,000 connects stretched from 2 s to
 * 13-18 s in some soak runs and not in others, and the soak's figures came in two kinds
 * (BENCHMARKS.md, tap-team, session 51).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { ROOT } from './lab.ts';

interface Opens {
  /** The clock's time at each start(i), in order of i. */
  at: number[];
  /** The clock when open_on_schedule returned. */
  end: number;
}

/** open_on_schedule(n, ramp) on a clock that starts at 0 and wakes `lateS` after each sleep's end. */
function opens(n: number, rampS: number, lateS: number): Opens {
  const script = `
import asyncio, importlib.util, json, sys
spec = importlib.util.spec_from_file_location('tap_load', sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
n, ramp, late = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
clock = [0.0]
async def sleep(d):
    clock[0] += d + late
at = []
asyncio.run(m.open_on_schedule(n, ramp, lambda i: at.append(clock[0]), now=lambda: clock[0], sleep=sleep))
print(json.dumps({'at': at, 'end': clock[0]}))
`;
  const r = spawnSync(
    'python3',
    ['-c', script, join(ROOT, 'scripts/tap-load.py'), String(n), String(rampS), String(lateS)],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Opens;
}

test('connects keep to the ramp when every wake of the loop comes late', () => {
  const n = 5000;
  const ramp = 2;
  const late = 0.3;
  const o = opens(n, ramp, late);
  assert.equal(o.at.length, n);
  for (let i = 0; i < n; i++) {
    const due = (ramp * i) / n;
    // Never before its place in the ramp (rounded down to its group), never later than one late wake after it.
    assert.ok(o.at[i]! >= due - (ramp * 50) / n - 1e-9, `connect ${i} at ${o.at[i]} s, due ${due} s`);
    assert.ok(o.at[i]! <= due + late + (ramp * 50) / n + 1e-9, `connect ${i} at ${o.at[i]} s, due ${due} s`);
  }
  assert.ok(o.end <= ramp + late, `the last connect at ${o.at[n - 1]} s, the opener done at ${o.end} s`);
});

test('on time, the connects go in groups of 50 at their place in the ramp; with no ramp, all at once', () => {
  const o = opens(500, 1, 0);
  for (let i = 0; i < 500; i++)
    assert.ok(Math.abs(o.at[i]! - Math.floor(i / 50) * 0.1) < 1e-9, `connect ${i} at ${o.at[i]}`);
  const all = opens(300, 0, 0.5);
  assert.deepEqual(new Set(all.at), new Set([0]));
  assert.equal(all.end, 0);
});
