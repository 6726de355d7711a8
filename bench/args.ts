import type { Command } from 'commander';

/**
 * A benchmark's own flags, parsed by commander as the CLI's are, from `argv` (without the node and
 * script arguments). A wrong flag or value throws commander's error (its message says which and
 * why) instead of exiting, so that `npm run bench` and the tests see it; `--json` is every
 * benchmark's.
 */
export function parseBenchFlags<T extends object>(
  cmd: Command,
  argv: readonly string[],
): T & { json?: boolean } {
  cmd
    .option('--json', 'print the result as JSON')
    .exitOverride()
    .configureOutput({ writeErr: () => {} })
    .parse([...argv], { from: 'user' });
  return cmd.opts<T & { json?: boolean }>();
}

/**
 * Run a benchmark file's own command line: flags as `parseBenchFlags` reads them, a wrong one
 * printed with the usage and exit code 2.
 */
export async function benchMain<T extends object>(
  parse: (argv: readonly string[]) => T & { json?: boolean },
  run: (o: T & { json?: boolean }) => Promise<void>,
): Promise<void> {
  let o: T & { json?: boolean };
  try {
    o = parse(process.argv.slice(2));
  } catch (e) {
    const err = e as Error & { code?: string };
    if (err.code === 'commander.helpDisplayed') return;
    console.error(err.message);
    process.exitCode = 2;
    return;
  }
  await run(o);
}

/** Field by field, the median of several runs' figures (numbers, and objects of them, nested). */
export function medianOf<T>(runs: readonly T[]): T {
  const first = runs.find((r) => r !== null && r !== undefined);
  if (typeof first === 'number') {
    const s = (runs as readonly number[]).filter((x) => typeof x === 'number').sort((a, b) => a - b);
    const mid = s.length >> 1;
    return (s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2) as T;
  }
  if (first === null || typeof first !== 'object') return first as T;
  const out: Record<string, unknown> = {};
  const keys = new Set(runs.flatMap((r) => (r && typeof r === 'object' ? Object.keys(r) : [])));
  for (const k of keys) {
    const vals = runs
      .map((r) => (r as Record<string, unknown> | null)?.[k])
      .filter((v) => v !== undefined && v !== null);
    if (vals.length) out[k] = medianOf(vals);
  }
  return out as T;
}

/**
 * How long a benchmark's WorkerNic may go without a heartbeat before it counts as dead (the NIC's
 * own default is 2 s). A benchmark measures speed or memory, not failover, and must finish at any
 * load: on a loaded machine (load 20-30) a worker thread goes unscheduled for seconds, was declared
 * dead by the 2 s default, and the run ended with an error ("moved 0") instead of its figures.
 * Benches that measure failover keep their own deadlines.
 */
export const BENCH_DEAD_AFTER_MS = 60_000;
