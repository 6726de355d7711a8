/**
 * The load client's command line (tap-load.ts clientArgv): a ramp asked for reaches
 * scripts/tap-load.py as `--ramp-ms`, and none asked for leaves its default (the connect burst of
 * the documented runs) alone. The prewarm's client (soak-tap --prewarm) never writes the ready file
 * that marks the measured burst's end.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Lab } from './lab.ts';
import { clientArgv, PREWARM_BYTES, prewarmArgv } from './tap-load.ts';

const lab = { ns: 'chimney-test' } as Lab;
const load = { connections: 1000, size: 1_000_000, rate: 150_000, timeoutS: 60 };

test("a ramp reaches tap-load.py as --ramp-ms; without one, tap-load.py's default holds", () => {
  const argv = clientArgv(lab, '10.0.0.2', { ...load, rampMs: 4000 }, ['--ready-file', 'r']);
  const at = argv.indexOf('--ramp-ms');
  assert.ok(at > 0, argv.join(' '));
  assert.equal(argv[at + 1], '4000');
  assert.deepEqual(argv.slice(-2), ['--ready-file', 'r'], 'the extra arguments last');
  assert.equal(clientArgv(lab, '10.0.0.2', load).includes('--ramp-ms'), false);
});

test("the prewarm's client asks for its own downloads and leaves the measured burst's ready file alone", () => {
  const argv = prewarmArgv(lab, '10.0.0.2', 300, 150_000);
  const arg = (name: string): string | undefined => argv[argv.indexOf(name) + 1];
  assert.equal(arg('--connections'), '300');
  assert.equal(arg('--size'), String(PREWARM_BYTES));
  assert.equal(arg('--rate'), '150000');
  assert.ok(argv.includes('--ramp-ms'), argv.join(' '));
  assert.equal(argv.includes('--ready-file'), false, argv.join(' '));
});
