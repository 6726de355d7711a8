/** What the CLI tests share: the `chimney` binary run to its end, and a typed refusal asserted. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError } from '../../src/core/errors.ts';

const BIN = fileURLToPath(new URL('../../bin/chimney.js', import.meta.url));

export function chimney(...args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
}

/** Asserts `f` throws an InvalidArgumentError whose message matches `re`. */
export function refuses(f: () => unknown, re: RegExp): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof InvalidArgumentError, `not an InvalidArgumentError: ${e}`);
    assert.equal(e.code, 'ERR_CHIMNEY_INVALID_ARG');
    assert.match(e.message, re);
    return true;
  });
}
