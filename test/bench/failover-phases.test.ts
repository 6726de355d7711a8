/**
 * `failover --phases` at a tiny size: each row's timeline runs from the fault through the
 * detection to the last stream resumed, its marks in order, and its virtual time adds up to the
 * row's own figures (the same run, read two ways). `--rows` runs only the rows named.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { benchFailover, failoverBroken, parseFailoverFlags } from '../../bench/failover.ts';
import { schedstatSkip } from '../helpers/schedstat.ts';

test('failover --phases: fault, detected, resumed and moved, in order, adding up to the row', {
  skip: schedstatSkip(),
  timeout: 120_000,
}, async () => {
  assert.deepEqual(parseFailoverFlags(['--rows', 'crash,carrier', '--phases', '--connections', '40']), {
    rows: ['crash', 'carrier'],
    phases: true,
    connections: 40,
  });
  assert.throws(() => parseFailoverFlags(['--rows', 'crash,sideways']), /sideways/);
  const r = await benchFailover({ connections: 24, rows: ['carrier', 'crash'], phases: true, wireMs: 8 });
  assert.equal(r.reachability, undefined, 'a row not named does not run');
  assert.equal(r.reference, undefined, 'a row not named does not run');
  assert.equal(failoverBroken(r), '');
  for (const [name, f] of [
    ['carrier', r.carrier],
    ['crash', r.crash],
  ] as const) {
    assert.ok(f?.intact, `${name}: every stream whole`);
    const p = f.phases;
    assert.ok(p && p.length >= 3, `${name}: a timeline (${JSON.stringify(p)})`);
    const show = JSON.stringify(p);
    assert.equal(p[0]!.from, 'fault', show);
    assert.equal(p[0]!.to, 'detected', show);
    assert.equal(p[p.length - 1]!.to === 'last resumed' || p[p.length - 1]!.to === 'moved', true, show);
    const names = [p[0]!.from, ...p.map((x) => x.to)];
    for (const m of ['first resumed', 'last resumed', 'moved'])
      assert.equal(names.filter((n) => n === m).length, 1, `${name}: ${m} once in ${show}`);
    assert.ok(
      names.indexOf('first resumed') < names.indexOf('last resumed'),
      `${name}: the first resume before the last (${show})`,
    );
    for (const x of p) {
      assert.ok(x.virtualMs >= 0 && x.wallMs >= 0 && x.cpuMs >= 0 && x.gcs >= 0 && x.gcMs >= 0, show);
      assert.ok(x.gcMs <= x.wallMs + 50, `${name}: collections inside their phase (${show})`);
    }
    // The marks are the row's own events: detected to the last resume is its resumeMs.
    const from = names.indexOf('detected');
    const to = names.indexOf('last resumed');
    const sum = p.slice(from, to).reduce((s, x) => s + x.virtualMs, 0);
    assert.ok(Math.abs(sum - f.resumeMs) < 0.01, `${name}: ${sum} vs resumeMs ${f.resumeMs} (${show})`);
    const fault = p.slice(0, names.indexOf('detected')).reduce((s, x) => s + x.virtualMs, 0);
    assert.ok(Math.abs(fault - f.detectMs) < 0.01, `${name}: ${fault} vs detectMs ${f.detectMs} (${show})`);
  }
});
