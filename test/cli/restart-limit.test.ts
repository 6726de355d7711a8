/**
 * `serve --restart-limit <n>`: how many times in a row a dead worker is started again (0: never).
 * Bad values are refused by the option parser before any device is opened, so no root is needed.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, test } from 'node:test';

const BIN = join(import.meta.dirname, '../../bin/chimney.js');

describe('serve --restart-limit', () => {
  test('a negative, fractional or too large limit is refused with the reason', () => {
    for (const v of ['-1', '2.5', '1001', 'never']) {
      const r = spawnSync(
        process.execPath,
        [BIN, 'serve', '--tap', 'chnone0', '--workers', '--ip', '10.99.0.2/24', '--restart-limit', v],
        { encoding: 'utf8', timeout: 60_000 },
      );
      assert.equal(r.status, 1, `--restart-limit ${v}: ${r.stderr}`);
      assert.match(r.stderr, /--restart-limit <n>' argument '.*' is invalid/);
      assert.match(r.stderr, /is not an integer|is outside 0\.\.1000/);
    }
  });
});
