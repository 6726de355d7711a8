/**
 * The benchmarks' own flags (bench/args.ts and the benches that take flags): a wrong one is said
 * before anything runs, naming what is valid; the medians `--runs` prints are field by field.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { medianOf } from '../../bench/args.ts';
import { parseChurnFlags } from '../../bench/churn.ts';
import { parseOffloadWorkerFlags } from '../../bench/offload-worker.ts';
import { runBenchmarks } from '../../bench/run.ts';
import { parseTapTeamFlags, phaseFigures, RUN_NAMES } from '../../bench/tap-team.ts';
import { formatPhases, MovePhases } from '../../src/offload/move-phases.ts';

test('tap-team --faults: any subset, in the documented order; a wrong name lists the valid ones', () => {
  assert.deepEqual(parseTapTeamFlags(['--faults', 'crash,carrier']).faults, ['carrier', 'crash']);
  assert.deepEqual(parseTapTeamFlags(['--faults', 'host,none']).faults, ['host', 'none']);
  assert.equal(parseTapTeamFlags([]).faults, undefined, 'no flag: every run');
  assert.throws(
    () => parseTapTeamFlags(['--faults', 'crash,carier']),
    (e: Error) => /unknown fault 'carier'/.test(e.message) && e.message.includes(RUN_NAMES.join(', ')),
  );
  assert.throws(() => parseTapTeamFlags(['--faults', '']), /unknown fault/);
});

test('tap-team --runs: a whole number from 1; anything else is refused', () => {
  assert.equal(parseTapTeamFlags(['--runs', '3', '--connections', '1000']).runs, 3);
  assert.equal(parseTapTeamFlags(['--connections', '1000']).connections, 1000);
  for (const bad of ['0', '-1', '2.5', 'x', ''])
    assert.throws(() => parseTapTeamFlags(['--runs', bad]), /--runs/, `--runs ${bad}`);
  assert.throws(() => parseTapTeamFlags(['--fault', 'crash']), /unknown option/);
});

test('offload-worker --cpu and its other flags', () => {
  assert.deepEqual(parseOffloadWorkerFlags(['--cpu', '--runs', '2', '--json']), {
    cpu: true,
    runs: 2,
    json: true,
  });
  assert.throws(() => parseOffloadWorkerFlags(['--connections', 'many']), /not an integer/);
});

test('churn: bounded cycles and runs, a reference checkout, close by end or destroy', () => {
  const d = parseChurnFlags([]);
  assert.equal(d.close, 'end');
  assert.equal(d.pairs, 1);
  assert.ok(d.cycles >= 1 && d.maxS >= 1, 'bounded in count and time by default');
  assert.deepEqual(
    parseChurnFlags([
      '--cycles',
      '200',
      '--connections',
      '500',
      '--ref',
      '/x',
      '--close',
      'destroy',
      '--max-s',
      '60',
    ]),
    { cycles: 200, connections: 500, bytes: 2000, close: 'destroy', ref: '/x', pairs: 1, maxS: 60 },
  );
  assert.equal(parseChurnFlags([]).refCycles, undefined, 'the reference runs --cycles unless told');
  assert.equal(parseChurnFlags(['--cycles', '200', '--ref-cycles', '20']).refCycles, 20);
  assert.throws(() => parseChurnFlags(['--ref-cycles', '0']), /outside/);
  assert.throws(() => parseChurnFlags(['--close', 'rst']), /--close: end or destroy/);
  assert.throws(() => parseChurnFlags(['--cycles', '0']), /outside/);
});

test('npm run bench: flags reach the one benchmark named, and a wrong one stops the run before it starts', async (t) => {
  const errors: string[] = [];
  t.mock.method(console, 'error', (l: string) => void errors.push(l));
  t.mock.method(console, 'log', () => {});
  assert.equal(await runBenchmarks(['tap-team', '--faults', 'bogus'], { json: false }), 2);
  assert.match(errors.pop() ?? '', /unknown fault 'bogus'.*valid: host, none, carrier, reachability, crash/);
  assert.equal(await runBenchmarks(['offload-worker', '--runs', 'x'], { json: false }), 2);
  assert.match(errors.pop() ?? '', /--runs/);
  assert.equal(await runBenchmarks(['churn', '--close', 'rst'], { json: false }), 2);
  assert.match(errors.pop() ?? '', /end or destroy/);
  // A benchmark without flags, or two named at once: nothing to give them to.
  assert.equal(await runBenchmarks(['state-codec', '--runs', '2'], { json: false }), 2);
  assert.equal(await runBenchmarks(['tap-team', 'offload-worker', '--cpu'], { json: false }), 2);
  assert.match(errors.pop() ?? '', /flags go to one benchmark/);
});

test('the median of several runs, field by field, nested, absent fields left out', () => {
  const runs = [
    { a: 3, nested: { x: 1, y: 10 }, t: null, name: 'k' },
    { a: 1, nested: { x: 5 }, t: { z: 2 }, name: 'k' },
    { a: 2, nested: { x: 3, y: 30 }, t: { z: 4 }, name: 'k' },
  ];
  assert.deepEqual(medianOf(runs), { a: 2, nested: { x: 3, y: 20 }, t: { z: 3 }, name: 'k' });
});

test("tap-team reads serve's move phases back as the numbers the team recorded", () => {
  let now = 100;
  const p = new MovePhases(() => now, 100);
  now = 102;
  p.start();
  for (const [asked, marks] of [
    [103, { begun: 104, frozen: 106, handed: 350, taken: 351, settled: 420 }],
    [421, { begun: 421.5, frozen: 423, handed: 700, taken: 700.5, settled: 760 }],
  ] as const) {
    now = asked;
    p.ask();
    for (const [m, at] of Object.entries(marks)) {
      now = at;
      p.mark(m as 'begun');
    }
    now += 1;
    p.done();
  }
  p.parts += 4;
  p.refused(3);
  now = 765;
  const s = p.summary(now - 100);
  // The first batch's marks after detection; the spans summed over both batches; the rest the team's.
  assert.deepEqual(s.first, { begun: 4, frozen: 6, handed: 250, installed: -1, taken: 251, settled: 320 });
  assert.deepEqual(s.spent, {
    wait: 1.5,
    freeze: 3.5,
    hand: 521,
    install: 0,
    take: 1.5,
    settle: 128.5,
    batch: 2,
    team: 7,
  });
  const f = phaseFigures(formatPhases(s));
  assert.deepEqual(f, {
    ...{ begunAt: 4, frozenAt: 6, handedAt: 250, takenAt: 251, settledAt: 320 },
    ...{
      waitMs: 1.5,
      freezeMs: 3.5,
      handMs: 521,
      installMs: 0,
      takeMs: 1.5,
      settleMs: 128.5,
      batchMs: 2,
      teamMs: 7,
    },
    ...{ batches: 2, parts: 4, rolledBack: 3, startedAt: 2 },
  });
  assert.equal(phaseFigures('no phases here'), null);
});
