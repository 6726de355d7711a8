/**
 * A NIC worker's start: from its spawn to its first statement of its own (every module of its graph
 * loaded and evaluated), as src/nic/worker/spawn.ts starts it from a source checkout (a bundle of
 * the graph), against the same entry through tsx's loader hooks (CHIMNEY_WORKER_TSX=1, how every
 * worker started before), the compiled build in dist/ when there is one, and an empty worker (the
 * thread's own start, the floor). The kinds are alternated, one worker at a time, so that load
 * moves them all alike. The worker is given no boot, so it stops with a TypeError at its first use
 * of one: that error is the end of the measure.
 */
import { existsSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { Command } from 'commander';
import { intIn } from '../src/cli/options.ts';
import { spawnWorker } from '../src/nic/worker/spawn.ts';
import { parseBenchFlags } from './args.ts';

export interface WorkerStartResult {
  rounds: number;
  /** Per kind, each round's start in ms. */
  ms: Record<string, number[]>;
  load: number[];
}

const ROOT = new URL('../', import.meta.url);

async function startMs(spawn: () => Worker): Promise<number> {
  const t0 = performance.now();
  const w = spawn();
  await new Promise<void>((done) => {
    w.once('error', () => done());
    w.once('exit', () => done());
  });
  const ms = performance.now() - t0;
  await w.terminate();
  return ms;
}

export async function benchWorkerStart(o: { rounds?: number } = {}): Promise<WorkerStartResult> {
  const rounds = o.rounds ?? 5;
  const src = new URL('src/nic/worker/nic-worker.ts', ROOT);
  const dist = new URL('dist/nic/worker/nic-worker.js', ROOT);
  const kinds: Record<string, () => Worker> = {
    bundle: () => spawnWorker(src),
    tsx: () => {
      process.env.CHIMNEY_WORKER_TSX = '1';
      try {
        return spawnWorker(src);
      } finally {
        delete process.env.CHIMNEY_WORKER_TSX;
      }
    },
    empty: () => new Worker('', { eval: true }),
  };
  if (existsSync(dist)) kinds.dist = () => new Worker(dist);
  // The bundle is made (or found fresh) once a process, before the first measure.
  await startMs(kinds.bundle!);
  const ms: Record<string, number[]> = {};
  for (const k of Object.keys(kinds)) ms[k] = [];
  const load: number[] = [];
  const { loadavg } = await import('node:os');
  for (let i = 0; i < rounds; i++) {
    for (const [k, spawn] of Object.entries(kinds)) ms[k]!.push(Math.round(await startMs(spawn)));
    load.push(Math.round(loadavg()[0]!));
  }
  return { rounds, ms, load };
}

export function parseWorkerStartFlags(argv: readonly string[]): { rounds?: number; json?: boolean } {
  return parseBenchFlags(
    new Command('worker-start').option('--rounds <n>', 'workers started of each kind', intIn(1, 100)),
    argv,
  );
}

export function formatWorkerStart(r: WorkerStartResult): string {
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1] ?? 0;
  return [
    `a NIC worker's start to its first statement, ${r.rounds} rounds alternated (load ${r.load.join(', ')}):`,
    ...Object.entries(r.ms).map(([k, xs]) => `  ${k.padEnd(7)} median ${median(xs)} ms (${xs.join(', ')})`),
  ].join('\n');
}
