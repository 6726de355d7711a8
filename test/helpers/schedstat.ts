import { existsSync } from 'node:fs';

/**
 * The `skip` option of a benchmark's test that reads each thread's CPU from
 * /proc/thread-self/schedstat: skipped with its reason where Linux's schedstat is missing, but never
 * in CI (process.env.CI), where the test runs and fails plainly instead of passing by absence.
 */
export function schedstatSkip(): string | false {
  if (process.env.CI || existsSync('/proc/thread-self/schedstat')) return false;
  return 'needs /proc/thread-self/schedstat (Linux): the benchmark reads each thread CPU there';
}
