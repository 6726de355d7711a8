/**
 * `serve --restart-limit <n>`: how many times in a row a dead worker is started again (0: never);
 * `--restart-delay <ms>`: how long its first restart waits.
 * Bad values are refused by the option parser before any device is opened, so no root is needed.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, test } from 'node:test';

const BIN = join(import.meta.dirname, '../../bin/chimney.js');

/** Each value of `option` is refused by serve's parser, with the option, the value and the reason. */
function refused(option: string, arg: string, values: readonly string[], range: RegExp): void {
  for (const v of values) {
    const r = spawnSync(
      process.execPath,
      [BIN, 'serve', '--tap', 'chnone0', '--workers', '--ip', '10.99.0.2/24', option, v],
      { encoding: 'utf8', timeout: 60_000 },
    );
    assert.equal(r.status, 1, `${option} ${v}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`${option} ${arg}' argument '.*' is invalid`));
    assert.match(r.stderr, range);
  }
}

describe('serve --restart-limit and --restart-delay', () => {
  test('a negative, fractional or too large limit is refused with the reason', () => {
    refused(
      '--restart-limit',
      '<n>',
      ['-1', '2.5', '1001', 'never'],
      /is not an integer|is outside 0\.\.1000/,
    );
  });

  test('--restart-delay: a negative, fractional or too long delay is refused with the reason', () => {
    refused(
      '--restart-delay',
      '<ms>',
      ['-1', '0.5', '30001', 'soon'],
      /is not an integer|is outside 0\.\.30000/,
    );
  });
});
