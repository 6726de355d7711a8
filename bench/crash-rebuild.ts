/**
 * A WorkerNic's crash on the main thread, alone (issue 10 item 3): N established connections
 * offloaded to the first of two WorkerNics, its thread killed, and once it is dead every
 * connection rebuilt from what it left and installed at the second (`OffloadManager.recover`, as
 * a team's failover does on 'dead'). Per run:
 *
 * - salvageMs: `salvage()`, the hard state and rings read out of the dead thread's memory;
 * - untilInstallMs: from the recover call to the install at the survivor: the freeze, the salvage,
 *   and the rebuild of every state from its record with its validation (the records came from
 *   another thread's memory), all on the main thread; untilInstallCpuMs its CPU;
 * - installMs: the install at the survivor (the main thread's part of the initiate, then the
 *   survivor thread's while the main thread waits);
 * - preallocateCpuMs / takeInstalledCpuMs: the main thread's CPU in the survivor's install on this
 *   side, summed over its batches: the blocks' records written before the batch leaves
 *   (`preallocate`), and the worker's answer taken up as a handle and table entry per connection
 *   (`takeInstalled`);
 * - settleMs: the install's end to the recover's end (the host table, the sockets re-pointed);
 * - recoverMs: the whole call, wall; mainCpuMs: the main thread's CPU over it (schedstat);
 * - resumedMs: from the recover call until the survivor's worker has prodded every connection it
 *   took (`nic.lazy.owed` 0; a tree without it: built every one, `nic.lazy.pending` 0): a rebuild
 *   prods each connection, and the worker prods them a few a turn after its answer, building each
 *   or, a quiet one, sending its ACK from its record unbuilt (`prodUnbuilt`; `unbuilt` counts
 *   those), so the recover's end is not yet "all resumed" (polled every
 *   millisecond or so: a figure to within a worker's turn); processCpuMs: the whole process's CPU
 *   (every thread) over the same span;
 * - gcs / gcMs: collections during the call.
 *
 *   npx tsx bench/crash-rebuild.ts [--json] [--connections N] [--runs N] [--profile FILE]
 *   npm run bench -- crash-rebuild [the same flags]
 *   CHIMNEY_ROOT=<tree> npx tsx bench/crash-rebuild.ts ...   (that tree's build, for a same-run reference)
 *
 * Each run is a new network, host and pair of NICs (a dead NIC does not come back); the first run
 * also warms the code. `--profile FILE` writes the last run's recover as a V8 CPU profile
 * (FILE.cpuprofile, for Chrome's DevTools) and prints its functions by self time.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { type PerformanceEntry, PerformanceObserver } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { intIn } from '../src/cli/options.ts';
import type { ConnKey } from '../src/nic/nic.ts';
import { benchMain, medianOf, parseBenchFlags } from './args.ts';
import { benchRoot, offloadedToWorker } from './warm-move.ts';

export interface CrashRunFigures {
  /** From `kill()` to the NIC's 'dead' event: the host's detection, before the recover begins. */
  detectMs: number;
  salvageMs: number;
  untilInstallMs: number;
  /** The main thread's CPU over untilInstallMs (at load the wall time is mostly waiting for a core). */
  untilInstallCpuMs: number;
  installMs: number;
  preallocateCpuMs: number;
  takeInstalledCpuMs: number;
  settleMs: number;
  recoverMs: number;
  mainCpuMs: number;
  resumedMs: number;
  processCpuMs: number;
  gcs: number;
  gcMs: number;
  /** Connections rebuilt at the survivor (all of them, or the run throws). */
  moved: number;
  /** Of those, installs that took up the dead NIC's handle (0 for a build that makes a new one). */
  adopted: number;
  /** Of those, prodded by an ACK from the record and left unbuilt (`nic.lazy.acked`). */
  unbuilt: number;
  /**
   * From the recover call, when each tenth of the connections had been prodded (ms; the first
   * is the first tenth): the survivor starts cold, and its first prods cost several times its
   * later ones.
   */
  tenthsMs: number[];
}

export interface CrashRebuildResult {
  /** The tree whose build ran (CHIMNEY_ROOT, or this one). */
  root: string;
  connections: number;
  /** Median of the runs. */
  median: CrashRunFigures;
  each: CrashRunFigures[];
  /** With `--profile`: the last run's functions by self time, largest first. */
  profile?: { file: string; totalMs: number; top: { fn: string; where: string; selfMs: number }[] };
}

/** This thread's CPU time, ns (schedstat: finer than stat's clock ticks). */
function mainCpuNs(): number {
  const s = readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8');
  return Number(s.split(' ')[0]);
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

/** Self time by function (µs), from a V8 CPU profile's samples. */
function selfTimes(p: {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}): Map<string, number> {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const by = new Map<string, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i]!)!;
    const f = n.callFrame;
    const k = `${f.functionName || '(anonymous)'}\t${f.url.replace(/^.*\/(src|bench|test)\//, '$1/')}`;
    by.set(k, (by.get(k) ?? 0) + (p.timeDeltas[i] ?? 0));
  }
  return by;
}

const round1 = (x: number): number => Math.round(x * 10) / 10;

async function oneCrash(
  load: <T>(p: string) => Promise<T>,
  connections: number,
  profileTo: string | null,
): Promise<{ figures: CrashRunFigures; profile?: CrashRebuildResult['profile'] }> {
  const { m, n0, n1, established, close } = await offloadedToWorker(load, connections);

  // The parts' edges, by wrapping the dead NIC's salvage and the transfer protocol's install on
  // these instances only (the same names in the reference's tree).
  let salvageMs = 0;
  const salvage = n0.salvage.bind(n0);
  n0.salvage = (keys?: readonly ConnKey[]) => {
    const t = performance.now();
    const r = salvage(keys);
    salvageMs += performance.now() - t;
    return r;
  };
  const proto = (m as unknown as { proto: { install: (...a: unknown[]) => Promise<unknown> } }).proto;
  const install = proto.install.bind(proto);
  let installAt = 0;
  let installCpu = 0;
  let installEnd = 0;
  proto.install = async (...a: unknown[]) => {
    installAt = performance.now();
    installCpu = mainCpuNs();
    try {
      return await install(...a);
    } finally {
      installEnd = performance.now();
    }
  };

  // The survivor's own parts of the install on this thread (the same private names in the
  // reference's tree), by CPU: at load their wall time is mostly waiting for a core.
  const cpuIn = { preallocate: 0, takeInstalled: 0 };
  const survivor = n1 as unknown as Record<keyof typeof cpuIn, (...a: unknown[]) => unknown>;
  for (const name of ['preallocate', 'takeInstalled'] as const) {
    const f = survivor[name].bind(n1);
    survivor[name] = (...a: unknown[]) => {
      const c = mainCpuNs();
      try {
        return f(...a);
      } finally {
        cpuIn[name] += mainCpuNs() - c;
      }
    };
  }

  let deadAt = 0;
  const dead = new Promise<void>((r) =>
    n0.once('dead', () => {
      deadAt = performance.now();
      r();
    }),
  );
  const killAt = performance.now();
  await n0.kill();
  await dead;
  const gcs: { start: number; ms: number }[] = [];
  const obs = new PerformanceObserver((l) => {
    for (const e of l.getEntries() as PerformanceEntry[]) gcs.push({ start: e.startTime, ms: e.duration });
  });
  obs.observe({ entryTypes: ['gc'] });
  const session = profileTo === null ? null : new Session();
  if (session) {
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: 100 });
    await session.post('Profiler.start');
  }
  const p0 = process.cpuUsage();
  const c0 = mainCpuNs();
  const t0 = performance.now();
  const rep = await m.recover(n0, n1);
  const t1 = performance.now();
  const c1 = mainCpuNs();
  // Bounded: a worker that never builds them all fails the run rather than hanging it.
  const survivorCounters = (n1 as unknown as { counters(): Promise<Record<string, number>> }).counters.bind(
    n1,
  );
  // All resumed: every connection prodded (`nic.lazy.owed` 0), built or prodded unbuilt; a tree
  // without that counter builds every one it prods (`nic.lazy.pending` 0).
  const owing = (c: Record<string, number>): number => c['nic.lazy.owed'] ?? c['nic.lazy.pending']!;
  let last: Record<string, number>;
  const tenthsMs: number[] = [];
  let left: number;
  while ((left = owing((last = await survivorCounters()))) !== 0) {
    const at = round1(performance.now() - t0);
    while (tenthsMs.length < 9 && established - left >= ((tenthsMs.length + 1) * established) / 10)
      tenthsMs.push(at);
    if (performance.now() - t1 > 120_000)
      throw new Error('the survivor did not prod every connection in 120 s');
    await new Promise((r) => setTimeout(r, 1));
  }
  const t2 = performance.now();
  while (tenthsMs.length < 10) tenthsMs.push(round1(t2 - t0));
  const p2 = process.cpuUsage(p0);
  let profile: CrashRebuildResult['profile'];
  if (session) {
    const { profile: p } = (await session.post('Profiler.stop')) as unknown as {
      profile: { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] };
    };
    session.disconnect();
    const file = profileTo!.endsWith('.cpuprofile') ? profileTo! : `${profileTo}.cpuprofile`;
    writeFileSync(file, JSON.stringify(p));
    const self = selfTimes(p);
    const total = [...self.values()].reduce((a, b) => a + b, 0);
    profile = {
      file,
      totalMs: round1(total / 1000),
      top: [...self]
        .sort((a, b) => b[1] - a[1])
        .slice(0, 30)
        .map(([k, us]) => {
          const [fn, where] = k.split('\t') as [string, string];
          return { fn, where, selfMs: round1(us / 1000) };
        }),
    };
  }
  // The gc entries arrive on a later turn.
  await new Promise((r) => setTimeout(r, 50));
  obs.disconnect();
  if (rep.moved.length !== established)
    throw new Error(`rebuilt ${rep.moved.length} of ${established} (${rep.refused[0]?.reason})`);
  const during = gcs.filter((g) => g.start >= t0 && g.start < t1);
  close();
  return {
    figures: {
      detectMs: round1(deadAt - killAt),
      salvageMs: round1(salvageMs),
      untilInstallMs: round1(installAt - t0),
      untilInstallCpuMs: round1((installCpu - c0) / 1e6),
      installMs: round1(installEnd - installAt),
      preallocateCpuMs: round1(cpuIn.preallocate / 1e6),
      takeInstalledCpuMs: round1(cpuIn.takeInstalled / 1e6),
      settleMs: round1(t1 - installEnd),
      recoverMs: round1(t1 - t0),
      mainCpuMs: round1((c1 - c0) / 1e6),
      resumedMs: round1(t2 - t0),
      processCpuMs: round1((p2.user + p2.system) / 1000),
      gcs: during.length,
      gcMs: round1(during.reduce((a, g) => a + g.ms, 0)),
      moved: rep.moved.length,
      adopted: (n1 as unknown as { adoptedHandles?: number }).adoptedHandles ?? 0,
      unbuilt: last['nic.lazy.acked'] ?? 0,
      tenthsMs,
    },
    ...(profile ? { profile } : {}),
  };
}

export async function benchCrashRebuild(
  o: { connections?: number; runs?: number; profile?: string } = {},
): Promise<CrashRebuildResult> {
  const { root, load } = benchRoot();
  const connections = o.connections ?? 10_000;
  const runs = o.runs ?? 3;
  const each: CrashRunFigures[] = [];
  let profile: CrashRebuildResult['profile'];
  for (let i = 0; i < runs; i++) {
    const r = await oneCrash(load, connections, i === runs - 1 ? (o.profile ?? null) : null);
    each.push(r.figures);
    if (r.profile) profile = r.profile;
  }
  const median = medianOf(each);
  // medianOf takes an array for an object of its indices: each tenth's median, as an array again.
  median.tenthsMs = each[0]!.tenthsMs.map((_, i) => medianOf(each.map((x) => x.tenthsMs[i]!)));
  return { root, connections, median, each, ...(profile ? { profile } : {}) };
}

export function parseCrashRebuildFlags(argv: readonly string[]): {
  connections?: number;
  runs?: number;
  profile?: string;
  json?: boolean;
} {
  return parseBenchFlags(
    new Command('crash-rebuild')
      .option('--connections <n>', 'established connections on the NIC that crashes', intIn(1, 1_000_000))
      .option('--runs <n>', 'crashes, each on a new host and pair of NICs', intIn(1, 100))
      .option('--profile <file>', "write the last run's recover as a CPU profile, and print its top"),
    argv,
  );
}

export function formatCrashRebuild(r: CrashRebuildResult): string {
  const f = (x: CrashRunFigures) =>
    `detect ${x.detectMs}, salvage ${x.salvageMs}, to install ${x.untilInstallMs} (CPU ${x.untilInstallCpuMs}), install ${x.installMs} (preallocate CPU ${x.preallocateCpuMs}, takeInstalled CPU ${x.takeInstalledCpuMs}), settle ${x.settleMs}, recover ${x.recoverMs} ms (main CPU ${x.mainCpuMs}, ${x.gcs} GCs ${x.gcMs} ms), resumed ${x.resumedMs} ms (process CPU ${x.processCpuMs}), ${x.adopted} handles taken up, ${x.unbuilt} prodded unbuilt; each tenth prodded by ${x.tenthsMs.join(', ')} ms`;
  const lines = [
    `crash and rebuild of ${r.connections} (${r.root}), median of ${r.each.length}: ${f(r.median)}`,
    ...r.each.map((x, i) => `  run ${i + 1}: ${f(x)}`),
  ];
  if (r.profile) {
    lines.push(`  profile of the last run (${r.profile.totalMs} ms sampled), ${r.profile.file}:`);
    for (const t of r.profile.top) lines.push(`    ${String(t.selfMs).padStart(8)} ms  ${t.fn}  ${t.where}`);
  }
  return lines.join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await benchMain(parseCrashRebuildFlags, async (o) => {
    const r = await benchCrashRebuild(o);
    console.log(o.json ? JSON.stringify(r) : formatCrashRebuild(r));
  });
  process.exit(process.exitCode ?? 0);
}
