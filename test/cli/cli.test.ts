import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/chimney.js', import.meta.url));

function chimney(...args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
}

describe('chimney CLI', () => {
  test('demo --json verifies every byte and exits 0', () => {
    const r = chimney(
      'demo',
      '--json',
      '--connections',
      '8',
      '--bytes',
      '64KiB',
      '--loss',
      '2%',
      '--seed',
      '3',
    );
    assert.equal(r.status, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    assert.equal(s.connections, 8);
    assert.equal(s.bytes, 2 * 8 * 65536);
    assert.equal(s.verified, true);
    assert.equal(s.resets, 0);
    assert.equal(typeof s.retransmits, 'number');
    assert.ok(s.retransmits > 0, 'a 2% lossy link must cause retransmissions');
    assert.ok(s.durationMs > 0);
  });

  test('demo --json reports the live failover: a NIC link is cut mid-run and every byte still arrives', () => {
    const r = chimney(
      'demo',
      '--json',
      '--connections',
      '12',
      '--bytes',
      '128KiB',
      '--nics',
      '3',
      '--seed',
      '5',
    );
    assert.equal(r.status, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    assert.equal(s.verified, true);
    assert.equal(s.resets, 0);
    assert.equal(s.failovers.length, 1);
    const f = s.failovers[0];
    assert.match(f.nic, /^server\.nic\d$/);
    assert.equal(f.cause, 'carrier');
    assert.ok(f.connections > 0, 'the cut NIC carried connections');
    for (const k of ['detectMs', 'resumeMs', 'movedMs', 'resumeWallMs'])
      assert.ok(typeof f[k] === 'number' && f[k] >= 0, k);
    // Moves are charged to the simulated clock: the connections moved cost it time.
    assert.ok(f.movedMs > 0, 'the move advanced the simulated clock');
  });

  test('demo --nics 0 runs without offload and reports no failover', () => {
    const r = chimney('demo', '--json', '--connections', '4', '--bytes', '64KiB', '--nics', '0');
    assert.equal(r.status, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    assert.equal(s.verified, true);
    assert.deepEqual(s.failovers, []);
  });

  test('demo prints a human summary', () => {
    const r = chimney('demo', '--connections', '2', '--bytes', '16KiB');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /verified\s+yes/);
    assert.match(r.stdout, /failover\s+server\.nic\d \(carrier\)/);
  });

  for (const [flag, value, why] of [
    ['--loss', '150%', /not a probability/],
    ['--connections', 'many', /not an integer/],
    ['--bytes', '12parsecs', /not a size/],
    ['--cc', 'vegas', /Allowed choices/],
  ] as const) {
    test(`a bad ${flag} says which flag and why, and exits non-zero`, () => {
      const r = chimney('demo', flag, value);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, new RegExp(flag.replace(/-/g, '\\-')));
      assert.match(r.stderr, why);
    });
  }

  test('an unknown command is an error', () => {
    const r = chimney('frobnicate');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /unknown command/);
  });
});
