/**
 * The owner table's part of a warm move alone (issue 10 item 2): a worker lists every connection
 * it installs and unlists every one it lets go, so each move of N connections is N adds at the
 * destination and N removals at the source. Times rounds of N adds then N removals on one thread
 * (CPU time, so the load's preemptions are not counted), in a table sized as a WorkerNic's for N.
 * `--cold`: as in a move, where each worker touches every connection's block records between two
 * of these calls, the table is not in the caches: every call is preceded by two reads of random
 * lines of a 64 MB buffer, and `touchMs` is those reads alone (subtract it).
 *
 *   npx tsx bench/owner-table.ts [--json] [--connections N] [--rounds N] [--cold]
 *   CHIMNEY_ROOT=<tree> npx tsx bench/owner-table.ts ...   (that tree's build, for a same-run reference)
 */
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { intIn } from '../src/cli/options.ts';
import type { OwnerTable as Table } from '../src/nic/worker/owner-table.ts';
import { benchMain, parseBenchFlags } from './args.ts';
import { benchRoot } from './warm-move.ts';

export interface OwnerTableBenchResult {
  root: string;
  connections: number;
  rounds: number;
  /** Medians over the counted rounds, CPU ms per N. */
  addMs: number;
  removeMs: number;
  /** With `--cold`: the evicting reads alone, per round (adds' and removals' together). */
  touchMs?: number;
}

/**
 * The process's CPU, ns: this thread's alone in effect (no other thread works meanwhile);
 * schedstat moves only at the scheduler's ticks, too coarse for a round of a millisecond.
 */
function cpuNs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1e3;
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return +s[s.length >> 1]!.toFixed(3);
}

const BIG_WORDS = 8 << 20;

export async function benchOwnerTable(o: {
  connections?: number;
  rounds?: number;
  cold?: boolean;
}): Promise<OwnerTableBenchResult> {
  const { root, load } = benchRoot();
  const { OwnerTable } = await load<{ OwnerTable: typeof Table }>('src/nic/worker/owner-table.ts');
  const n = o.connections ?? 10_000;
  const rounds = o.rounds ?? 50;
  const t = new OwnerTable(OwnerTable.create(n));
  // The bench's peers: one local address and port, clients from a few addresses, ports climbing.
  const keys = new Int32Array(n * 2);
  for (let i = 0; i < n; i++) {
    keys[2 * i] = 0x0a000002 + (i >>> 14);
    keys[2 * i + 1] = 10_000 + (i & 0x3fff);
  }
  const big = o.cold === true ? new Float64Array(BIG_WORDS) : null;
  const lineMask = (BIG_WORDS - 1) & ~7;
  let seed = 12345;
  let sink = 0;
  /** Two random lines of `big` read (nothing without --cold). */
  const touch = (): void => {
    if (big === null) return;
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    sink += big[seed & lineMask]!;
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    sink += big[seed & lineMask]!;
  };
  const adds: number[] = [];
  const removes: number[] = [];
  const touches: number[] = [];
  // The first tenth warms the code up, uncounted.
  const skip = Math.max(1, rounds >> 3);
  for (let r = 0; r < rounds + skip; r++) {
    if (big !== null) for (let i = 0; i < big.length; i += 8) sink += big[i]!;
    const a = cpuNs();
    for (let i = 0; i < n; i++) {
      touch();
      if (!t.add(0x0a000001, 80, keys[2 * i]!, keys[2 * i + 1]!)) throw new Error('full');
    }
    const b = cpuNs();
    for (let i = 0; i < n; i++) {
      touch();
      t.remove(0x0a000001, 80, keys[2 * i]!, keys[2 * i + 1]!);
    }
    const c = cpuNs();
    if (t.size !== 0) throw new Error(`left ${t.size}`);
    if (big !== null) for (let i = 0; i < 2 * n; i++) touch();
    const d = cpuNs();
    if (r < skip) continue;
    adds.push((b - a) / 1e6);
    removes.push((c - b) / 1e6);
    if (big !== null) touches.push((d - c) / 1e6);
  }
  // Read, so that the evicting reads are not dropped as dead code.
  if (sink === -1) console.log(sink);
  return {
    root,
    connections: n,
    rounds,
    addMs: median(adds),
    removeMs: median(removes),
    ...(big === null ? {} : { touchMs: median(touches) }),
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await benchMain(
    (argv) =>
      parseBenchFlags<{ connections?: number; rounds?: number; cold?: boolean; json?: boolean }>(
        new Command('owner-table')
          .option('--connections <n>', 'connections listed and unlisted per round', intIn(1, 1 << 18))
          .option('--rounds <n>', 'rounds counted', intIn(1, 10_000))
          .option('--cold', 'each call after reads of random lines of 64 MB (touchMs: those alone)'),
        argv,
      ),
    async (o) => {
      const r = await benchOwnerTable(o);
      const touched = r.touchMs === undefined ? '' : `, the evicting reads alone ${r.touchMs} ms`;
      console.log(
        o.json
          ? JSON.stringify(r)
          : `owner table (${r.root}), ${r.connections} per round, ${r.rounds} rounds: add ${r.addMs} ms, remove ${r.removeMs} ms${touched} (CPU, median)`,
      );
    },
  );
}
