/**
 * A warm WorkerNic move of every connection in one call, over and over: `move('all')` from the
 * first WorkerNic to the second and back, after both have held them (issue 10 item 2). Per move:
 * the wall time, the main thread's CPU (schedstat), the whole process's CPU (every thread: the
 * workers' share, which the main thread's misses; a worker's tail of one move may fall in the
 * next), and the garbage collections that ran during it
 * (count and ms, from `gc` performance entries); with `--heap`, what the main thread allocated over
 * the counted moves (V8's sampling heap profiler, garbage included), by function.
 *
 *   npx tsx bench/warm-move.ts [--json] [--connections N] [--rounds N] [--skip N] [--heap [N]]
 *   npm run bench -- warm-move [the same flags]
 *   CHIMNEY_ROOT=<tree> npx tsx bench/warm-move.ts ...   (that tree's build, for a same-run reference)
 *
 * A round is one move n0 → n1 and one back; the first `skip` rounds are not counted (the workers'
 * spares and the code paths warm up there).
 */
import { readFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { dirname, resolve } from 'node:path';
import { constants, type PerformanceEntry, PerformanceObserver } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { intIn } from '../src/cli/options.ts';
import type { MovePhases as MovePhasesT, MoveSpan } from '../src/offload/move-phases.ts';
import type { OffloadManager } from '../src/offload/offload-manager.ts';
import type { SimNetwork } from '../src/sim/sim-network.ts';
import type { isOffloadable as IsOffloadable } from '../src/state/validate.ts';
import type { addWorkerHost as AddWorkerHost } from '../test/nic/worker-helpers.ts';
import { BENCH_DEAD_AFTER_MS, benchMain, medianOf, parseBenchFlags } from './args.ts';
import type { openConnections as OpenConnections } from './offload.ts';

export interface WarmMoveResult {
  /** The tree whose build ran (CHIMNEY_ROOT, or this one). */
  root: string;
  connections: number;
  /** Moves counted (two per counted round). */
  moves: number;
  /** Median of the counted moves. */
  wallMs: number;
  mainCpuMs: number;
  /** Median of the counted moves: the whole process's CPU (every thread: main, both workers, V8's). */
  cpuMs: number;
  gcPerMove: number;
  gcMsPerMove: number;
  /**
   * Median of the counted moves, ms: where the wall went by the transfer's marks
   * (src/offload/move-phases.ts; the parts of a move run side by side, so a span ends at the last
   * part's mark): the freeze, the source's hand (the destination's install inside it), the settle.
   */
  phases: Record<MoveSpan, number>;
  /** Every counted move: wall, main CPU, collections (of them mark-compacts) and their ms. */
  each: { wallMs: number; mainCpuMs: number; cpuMs: number; gcs: number; majors: number; gcMs: number }[];
  /** With `--heap`: bytes the main thread allocated per counted move, and the largest sites. */
  heap?: HeapPerMove;
  /** With `--heap --workers`: the same for each worker thread, by its script. */
  workers?: (HeapPerMove & { url: string })[];
}

interface HeapPerMove {
  bytesPerMove: number;
  top: { fn: string; where: string; bytesPerMove: number }[];
}

/** This thread's CPU time, ns (schedstat: finer than stat's clock ticks). */
function mainCpuNs(): number {
  const s = readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8');
  return Number(s.split(' ')[0]);
}

interface HeapNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: HeapNode[];
}

/** The sampled profile's bytes by allocating function, largest first. */
function heapSites(root: HeapNode): Map<string, number> {
  const by = new Map<string, number>();
  // A builtin's allocation (an array's push, a map) is named with the function that called it.
  const walk = (n: HeapNode, caller: string): void => {
    const f = n.callFrame;
    const name = f.functionName || '(anonymous)';
    const where = f.url === '' ? `< ${caller}` : f.url.replace(/^.*\/(src|bench|test)\//, '$1/');
    if (n.selfSize > 0) by.set(`${name}\t${where}`, (by.get(`${name}\t${where}`) ?? 0) + n.selfSize);
    for (const c of n.children) walk(c, f.url === '' ? caller : name);
  };
  walk(root, '(root)');
  return by;
}

/**
 * The worker threads made from now on, reached through `session` (the inspector's NodeWorker
 * domain: a worker is announced only if it starts after this), for the heap profiler's verbs.
 */
async function workerSessions(session: Session): Promise<{
  call: (sessionId: string, method: string, params?: object) => Promise<unknown>;
  workers: { sessionId: string; url: string }[];
}> {
  const workers: { sessionId: string; url: string }[] = [];
  const waiting = new Map<number, (m: { result?: unknown; error?: { message: string } }) => void>();
  let next = 0;
  session.on('NodeWorker.attachedToWorker', (m) => {
    const p = m.params as { sessionId: string; workerInfo: { url: string } };
    workers.push({ sessionId: p.sessionId, url: p.workerInfo.url });
  });
  session.on('NodeWorker.receivedMessageFromWorker', (m) => {
    const msg = JSON.parse((m.params as { message: string }).message) as {
      id?: number;
      result?: unknown;
      error?: { message: string };
    };
    if (msg.id !== undefined) waiting.get(msg.id)?.(msg);
  });
  await session.post('NodeWorker.enable', { waitForDebuggerOnStart: false });
  const call = (sessionId: string, method: string, params: object = {}): Promise<unknown> =>
    new Promise((res, rej) => {
      const id = ++next;
      waiting.set(id, (m) => {
        waiting.delete(id);
        if (m.error) rej(new Error(`${method} in a worker: ${m.error.message}`));
        else res(m.result);
      });
      session
        .post('NodeWorker.sendMessageToWorker', {
          sessionId,
          message: JSON.stringify({ id, method, params }),
        })
        .catch(rej);
    });
  return { call, workers };
}

/** A sampled profile as bytes per move, its largest sites first. */
function perMove(head: HeapNode, moves: number): HeapPerMove {
  const sites = heapSites(head);
  const total = [...sites.values()].reduce((a, b) => a + b, 0);
  const per = (b: number) => Math.round(b / moves);
  return {
    bytesPerMove: per(total),
    top: [...sites]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 25)
      .map(([k, b]) => {
        const [fn, where] = k.split('\t') as [string, string];
        return { fn, where, bytesPerMove: per(b) };
      }),
  };
}

/** The tree a benchmark runs (CHIMNEY_ROOT's, or this one), and an import from it. */
export function benchRoot(): { root: string; load: <T>(p: string) => Promise<T> } {
  const here = resolve(dirname(fileURLToPath(import.meta.url)), '..');
  const root = process.env.CHIMNEY_ROOT ? resolve(process.env.CHIMNEY_ROOT) : here;
  const load = async <T>(p: string): Promise<T> => (await import(pathToFileURL(`${root}/${p}`).href)) as T;
  return { root, load };
}

/**
 * A real-time network, a worker host of two WorkerNics (its build `load`'s), `connections`
 * established to a peer, and every one offloaded to the first NIC.
 */
export async function offloadedToWorker(load: <T>(p: string) => Promise<T>, connections: number) {
  const { SimNetwork: Net } = await load<{ SimNetwork: typeof SimNetwork }>('src/sim/sim-network.ts');
  const { addWorkerHost } = await load<{ addWorkerHost: typeof AddWorkerHost }>('test/nic/worker-helpers.ts');
  const { openConnections } = await load<{ openConnections: typeof OpenConnections }>('bench/offload.ts');
  const { isOffloadable } = await load<{ isOffloadable: typeof IsOffloadable }>('src/state/validate.ts');
  const net = new Net({ seed: 1, virtualTime: false });
  const wh = addWorkerHost(net, { capacity: connections, deadAfterMs: BENCH_DEAD_AFTER_MS });
  const peer = net.addHost({ ip: '10.0.0.2/24' });
  await Promise.all(wh.nics.map((n) => n.ready()));
  peer
    .createServer((s) => {
      s.on('error', () => {});
    })
    .listen(80);
  await wh.host.ping('10.0.0.2');
  const sockets = await openConnections(wh.host, net, connections, 5);
  const established = [...wh.stack.tcp.connections()].filter((c) => isOffloadable(c.state)).length;
  const m: OffloadManager = wh.offload;
  const [n0, n1] = [wh.nics[0]!, wh.nics[1]!];
  const first = await m.offload('all', n0);
  if (first.moved.length !== established)
    throw new Error(`offloaded ${first.moved.length} of ${established} established`);
  const close = (): void => {
    for (const s of sockets) s.destroy();
    wh.close();
    net.close();
  };
  return { wh, m, n0, n1, established, close };
}

export async function benchWarmMove(
  o: {
    connections?: number;
    rounds?: number;
    skip?: number;
    heap?: number | boolean;
    workers?: boolean;
  } = {},
): Promise<WarmMoveResult> {
  const { root, load } = benchRoot();
  const connections = o.connections ?? 10_000;
  const rounds = o.rounds ?? 8;
  const skip = Math.min(o.skip ?? 3, rounds - 1);

  const heapEvery = o.heap === true ? 16_384 : typeof o.heap === 'number' ? o.heap : 0;
  const session = heapEvery > 0 ? new Session() : null;
  session?.connect();
  // Before the NICs start: only a worker made after this is announced to the session.
  const inWorkers = session !== null && o.workers === true ? await workerSessions(session) : null;
  const sampling = {
    samplingInterval: heapEvery,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  };
  // A source checkout starts workers from a bundle (spawn.ts), whose samples would all name the
  // bundle's file: sampled workers start through tsx, so each allocation names its source file.
  const tsxBefore = process.env.CHIMNEY_WORKER_TSX;
  if (inWorkers !== null) process.env.CHIMNEY_WORKER_TSX = '1';
  const { m, n0, n1, established, close } = await offloadedToWorker(load, connections).finally(() => {
    if (tsxBefore === undefined) delete process.env.CHIMNEY_WORKER_TSX;
    else process.env.CHIMNEY_WORKER_TSX = tsxBefore;
  });
  const { MovePhases, MOVE_SPANS } = await load<typeof import('../src/offload/move-phases.ts')>(
    'src/offload/move-phases.ts',
  );
  const spans: Record<MoveSpan, number>[] = [];

  const gcs: { start: number; ms: number; major: boolean }[] = [];
  const obs = new PerformanceObserver((l) => {
    for (const e of l.getEntries()) {
      const kind = (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind;
      gcs.push({ start: e.startTime, ms: e.duration, major: kind === constants.NODE_PERFORMANCE_GC_MAJOR });
    }
  });
  obs.observe({ entryTypes: ['gc'] });
  const each: WarmMoveResult['each'] = [];
  const windows: [number, number][] = [];
  for (let r = 0; r < rounds; r++) {
    if (r === skip && session) {
      await session.post('HeapProfiler.startSampling', sampling);
      for (const w of inWorkers?.workers ?? [])
        await inWorkers!.call(w.sessionId, 'HeapProfiler.startSampling', sampling);
    }
    for (const [a, b] of [
      [n0, n1],
      [n1, n0],
    ] as const) {
      const c0 = mainCpuNs();
      const p0 = process.cpuUsage();
      const t0 = performance.now();
      const phases: MovePhasesT = new MovePhases(() => performance.now(), t0);
      phases.ask();
      const rep = await m.move('all', a, b, { phases });
      phases.done();
      const t1 = performance.now();
      const c1 = mainCpuNs();
      const p1 = process.cpuUsage(p0);
      if (rep.moved.length !== established)
        throw new Error(
          `round ${r}: moved ${rep.moved.length} of ${established} (${rep.refused[0]?.reason})`,
        );
      if (r >= skip) {
        windows.push([t0, t1]);
        spans.push(phases.summary(t1 - t0).spent);
        each.push({
          wallMs: +(t1 - t0).toFixed(1),
          mainCpuMs: +((c1 - c0) / 1e6).toFixed(1),
          cpuMs: +((p1.user + p1.system) / 1e3).toFixed(1),
          gcs: 0,
          majors: 0,
          gcMs: 0,
        });
      }
    }
  }
  let heap: WarmMoveResult['heap'];
  let workers: WarmMoveResult['workers'];
  if (session) {
    const { profile } = (await session.post('HeapProfiler.stopSampling')) as unknown as {
      profile: { head: HeapNode };
    };
    heap = perMove(profile.head, each.length);
    if (inWorkers !== null) {
      workers = [];
      for (const w of inWorkers.workers) {
        const r = (await inWorkers.call(w.sessionId, 'HeapProfiler.stopSampling')) as {
          profile: { head: HeapNode };
        };
        workers.push({ url: w.url.replace(/^.*\/src\//, 'src/'), ...perMove(r.profile.head, each.length) });
      }
    }
    session.disconnect();
  }
  // The gc entries arrive on a later turn.
  await new Promise((r) => setTimeout(r, 50));
  obs.disconnect();
  for (const g of gcs) {
    const i = windows.findIndex(([a, b]) => g.start >= a && g.start < b);
    if (i < 0) continue;
    each[i]!.gcs++;
    if (g.major) each[i]!.majors++;
    each[i]!.gcMs = +(each[i]!.gcMs + g.ms).toFixed(2);
  }
  close();
  const med = medianOf(each);
  return {
    root,
    connections: established,
    moves: each.length,
    wallMs: med.wallMs,
    mainCpuMs: med.mainCpuMs,
    cpuMs: med.cpuMs,
    gcPerMove: +(each.reduce((a, e) => a + e.gcs, 0) / each.length).toFixed(2),
    gcMsPerMove: +(each.reduce((a, e) => a + e.gcMs, 0) / each.length).toFixed(2),
    phases: pickSpans(medianOf(spans), MOVE_SPANS),
    each,
    ...(heap ? { heap } : {}),
    ...(workers ? { workers } : {}),
  };
}

/** The spans a move passes (the median of each; `team` is a failover's, not a move's). */
function pickSpans(m: Record<MoveSpan, number>, names: readonly MoveSpan[]): Record<MoveSpan, number> {
  const out = {} as Record<MoveSpan, number>;
  for (const k of names) out[k] = +m[k].toFixed(1);
  return out;
}

export function parseWarmMoveFlags(argv: readonly string[]): {
  connections?: number;
  rounds?: number;
  skip?: number;
  heap?: number | boolean;
  workers?: boolean;
  json?: boolean;
} {
  return parseBenchFlags(
    new Command('warm-move')
      .option('--connections <n>', 'established connections to move', intIn(1, 1_000_000))
      .option('--rounds <n>', 'rounds of a move there and back', intIn(2, 1000))
      .option('--skip <n>', 'first rounds not counted', intIn(0, 1000))
      .option('--heap [bytes]', "sample the main thread's allocations (every N bytes)", intIn(512, 1 << 20))
      .option('--workers', "with --heap: each worker thread's allocations too"),
    argv,
  );
}

export function formatWarmMove(r: WarmMoveResult): string {
  const lines = [
    `warm move of ${r.connections} (${r.root}): ${r.moves} moves, p50 wall ${r.wallMs} ms, main CPU ${r.mainCpuMs} ms, process CPU ${r.cpuMs} ms; GC ${r.gcPerMove} per move, ${r.gcMsPerMove} ms per move`,
    `  phases, median ms: ${Object.entries(r.phases)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
    `  each (wall/main CPU/process CPU/gcs/of them major/gc ms): ${r.each.map((e) => `${e.wallMs}/${e.mainCpuMs}/${e.cpuMs}/${e.gcs}/${e.majors}/${e.gcMs}`).join(' ')}`,
  ];
  if (r.heap) {
    lines.push(`  allocated by the main thread: ${(r.heap.bytesPerMove / 1024).toFixed(0)} KiB per move`);
    for (const t of r.heap.top)
      lines.push(`    ${(t.bytesPerMove / 1024).toFixed(1).padStart(8)} KiB  ${t.fn}  ${t.where}`);
  }
  for (const [i, w] of (r.workers ?? []).entries()) {
    const name = w.url === '' ? `thread ${i + 1}` : w.url;
    lines.push(`  allocated by worker ${name}: ${(w.bytesPerMove / 1024).toFixed(0)} KiB per move`);
    for (const t of w.top.slice(0, 15))
      lines.push(`    ${(t.bytesPerMove / 1024).toFixed(1).padStart(8)} KiB  ${t.fn}  ${t.where}`);
  }
  return lines.join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await benchMain(parseWarmMoveFlags, async (o) => {
    const r = await benchWarmMove(o);
    console.log(o.json ? JSON.stringify(r) : formatWarmMove(r));
  });
  process.exit(process.exitCode ?? 0);
}
