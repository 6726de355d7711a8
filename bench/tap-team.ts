/**
 * Failover at scale against the Linux kernel (needs root and python3): `chimney serve --tap A
 * --tap B --workers` serves a thousand (or --connections) concurrent HTTP downloads, each read
 * slowly by one asyncio client in the lab namespace (scripts/tap-load.py), while the NIC carrying
 * most of them loses its carrier, leaves the bridge (reachability) or has its worker killed.
 * Every download is verified (length, every byte, SHA-256). Figures at the peer: resumeMs is how
 * long after the fault the last stalled download got data again, maxStallMs the longest gap in
 * any download's data; detectMs is serve's own (from its last evidence the NIC was fine),
 * faultToDetectMs from the fault to serve's failover (what the downloads wait through). Reference,
 * same run: the same downloads with no fault, on the team and on the host stack alone on one TAP.
 * Each run also says what each thread's CPU cost per MB delivered (serve's main thread, each NIC's
 * worker, serve's other threads: V8's platform threads, libuv's, tsx's loader; serve in all; the
 * kernel's client; schedstat, from serve's ready line to the client's end), and how many segments
 * the client received twice (its nstat TcpExtTCPDSACKOldSent: Chimney's needless resends).
 *
 *   npx tsx bench/tap-team.ts [--json] [--connections N] [--size BYTES] [--rate BYTES_PER_S]
 *                             [--faults host,none,carrier,reachability,crash] [--runs N]
 *   npm run bench -- tap-team [the same flags]
 *
 * `--faults` picks the runs (default all five, always in that order; `host` is the host stack
 * alone, `none` the team without a fault); a run not picked is a key absent from the JSON.
 * `--runs N` repeats the set N times, interleaved (every pick once, then again): each run is
 * printed, and the result's keys hold the median of the N runs field by field, with every run
 * under `each`.
 */
import { loadavg } from 'node:os';
import { pathToFileURL } from 'node:url';
import { Command, InvalidArgumentError } from 'commander';
import { byteSize, intIn } from '../src/cli/options.ts';
import { Lab, missingPrerequisite } from '../test/interop/lab.ts';
import {
  type CpuPerMB,
  cpuPerMB,
  type FaultKind,
  type LoadResult,
  nsCounters,
  type RunThreads,
  runLoad,
} from '../test/interop/tap-load.ts';
import { benchMain, medianOf, parseBenchFlags } from './args.ts';

export interface TapTeamRun {
  detectMs: number;
  /** From the fault to serve's failover (-1: none); see LoadResult.realDetectMs. */
  faultToDetectMs: number;
  /** How long the system call that made a carrier or reachability fault took, ms (LoadResult.faultCallMs). */
  faultCallMs: number;
  resumeMs: number;
  maxStallMs: number;
  p99StallMs: number;
  /** Median time from a download's start to its first byte at the client (the connect burst's). */
  p50FirstByteMs: number;
  /** Downloads that failed, came back short or corrupt, or were reset. */
  failed: number;
  resets: number;
  /** Lines serve logged that it should not have (false failures, losses, resets). */
  badLogLines: number;
  /** Connections on the NIC the fault hit / downloads whose data stopped across the fault. */
  stalledByFault: number;
  /** Serve's own move: detection to the last connection running at its new owner, ms (-1: none logged). */
  moveMs: number;
  /**
   * The move's phases from serve's failover line (docs/architecture.md, "The failover's phase
   * log"): each mark's ms after detection and the ms spent in each span, summed over the batches;
   * null when serve logged none (a build without them, or no fault).
   */
  movePhases: Record<string, number> | null;
  wallMs: number;
  /**
   * The machine's one-minute load average when the run ended: on a shared machine the stalls
   * follow it (the host alone stalled 0.45 s at 1.5 and 4.9 s at 15), so a figure without it
   * cannot be compared with another.
   */
  loadAvg: number;
  /** CPU and waits for a core by thread, in the burst and after it (see RunThreads); null off Linux. */
  threads: { burst: RunThreads; after: RunThreads } | null;
  /** The same CPU, burst and after together, per MB the client received; null off Linux. */
  cpuMsPerMB: CpuPerMB | null;
  /** Segments the client got again that it already had (its TcpExtTCPDSACKOldSent); -1 without nstat. */
  dsackOldSent: number;
  /**
   * Serve's tail loss probes (tcp.tlp.probes, every stack of the process summed), and those the
   * client answered with a D-SACK (tcp.tlp.dsack): probes of data it already had, sent while its
   * ACKs were only late. -1 without serve's counters.
   */
  tlpProbes: number;
  tlpDsacked: number;
}

/** The runs `--faults` can pick: the host alone, the team without a fault, then the three faults. */
export const RUN_NAMES = ['host', 'none', 'carrier', 'reachability', 'crash'] as const;
export type RunName = (typeof RUN_NAMES)[number];

/** Where each run's figures go in the result. */
const RESULT_KEY = {
  host: 'hostAlone',
  none: 'noFault',
  carrier: 'carrier',
  reachability: 'reachability',
  crash: 'crash',
} as const satisfies Record<RunName, keyof TapTeamResult>;

export interface TapTeamOptions {
  connections?: number;
  size?: number;
  rate?: number;
  /** Runs to make (default all), made in RUN_NAMES' order whatever the order given. */
  faults?: RunName[];
  /** Times to make the set (default 1). */
  runs?: number;
}

/** A run not picked by `--faults` is absent; with `runs` > 1 each holds the median of its runs. */
export interface TapTeamResult {
  connections: number;
  bytesEach: number;
  rateEach: number;
  runs: number;
  /** Reference, same run: the host stack alone on one TAP, no fault. */
  hostAlone?: TapTeamRun;
  /** Reference, same run: the team, no fault. */
  noFault?: TapTeamRun;
  carrier?: TapTeamRun;
  reachability?: TapTeamRun;
  crash?: TapTeamRun;
  /** With `runs` > 1: every run, in the order made. */
  each?: Partial<Record<RunName, TapTeamRun[]>>;
}

/** `--faults`: a comma-separated subset of RUN_NAMES. */
export function runList(v: string): RunName[] {
  const names = v.split(',').map((x) => x.trim());
  const bad = names.filter((n) => !(RUN_NAMES as readonly string[]).includes(n));
  if (bad.length)
    throw new InvalidArgumentError(`unknown fault '${bad.join(',')}' (valid: ${RUN_NAMES.join(', ')})`);
  return RUN_NAMES.filter((n) => names.includes(n));
}

/** The benchmark's flags (see the header); throws commander's error on a wrong one. */
export function parseTapTeamFlags(argv: readonly string[]): TapTeamOptions & { json?: boolean } {
  return parseBenchFlags<TapTeamOptions>(
    new Command('tap-team')
      .option('--connections <n>', 'concurrent downloads', intIn(1, 20_000))
      .option('--size <bytes>', 'bytes of each download', byteSize)
      .option('--rate <bytes/s>', "each download's reading rate", byteSize)
      .option(
        '--faults <list>',
        `runs to make, comma-separated: ${RUN_NAMES.join(', ')} (default all)`,
        runList,
      )
      .option('--runs <n>', 'make the set N times; print each run and the median', intIn(1, 100)),
    argv,
  );
}

const SUBNET = 241;

function figures(r: LoadResult, dsackOldSent: number): TapTeamRun {
  return {
    detectMs: r.detectMs,
    faultToDetectMs: r.realDetectMs,
    faultCallMs: r.faultCallMs,
    resumeMs: r.resumeMs,
    maxStallMs: r.client.maxStallMs,
    p99StallMs: r.client.p99StallMs,
    p50FirstByteMs: r.client.p50FirstByteMs,
    failed: r.client.failed,
    resets: r.client.resets,
    badLogLines: r.bad.length,
    stalledByFault: r.stalledByFault,
    moveMs: r.moveMs,
    movePhases: phaseFigures(r.movePhases),
    wallMs: r.client.wallMs,
    loadAvg: Math.round(loadavg()[0]! * 10) / 10,
    threads: r.threads,
    cpuMsPerMB: r.threads ? cpuPerMB(r.threads, r.client.bytes) : null,
    dsackOldSent,
    tlpProbes: counterSum(r, 'tcp.tlp.probes'),
    tlpDsacked: counterSum(r, 'tcp.tlp.dsack'),
  };
}

/**
 * Serve's `phases` text (formatPhases: "(ms): first batch at begun 0.3, …; in wait 0.1, …; 5
 * batches, 10 parts, 0 rolled back, started 0.1") as numbers: the first batch's marks as
 * `<mark>At`, the spans as `<span>Ms`, then `batches`, `parts`, `rolledBack` and `startedAt`.
 */
export function phaseFigures(text: string): Record<string, number> | null {
  const m =
    /first batch at (.*); in (.*); (\d+) batches, (\d+) parts, (\d+) rolled back, started (-?[\d.]+)/.exec(
      text,
    );
  if (m === null) return null;
  const out: Record<string, number> = {};
  for (const [, k, v] of m[1]!.matchAll(/([a-z]+) (-?[\d.]+)/g)) out[`${k}At`] = Number(v);
  for (const [, k, v] of m[2]!.matchAll(/([a-z]+) (-?[\d.]+)/g)) out[`${k}Ms`] = Number(v);
  out.batches = Number(m[3]);
  out.parts = Number(m[4]);
  out.rolledBack = Number(m[5]);
  out.startedAt = Number(m[6]);
  return out;
}

function counterSum(r: LoadResult, name: string): number {
  if (r.counters === null) return -1;
  let n = 0;
  for (const set of Object.values(r.counters)) n += set[name] ?? 0;
  return n;
}

export async function benchTapTeam(
  log: (l: string) => void = () => {},
  o: TapTeamOptions = {},
): Promise<TapTeamResult> {
  const why = missingPrerequisite(['python3']);
  if (why) throw new Error(`tap-team benchmark: ${why}`);
  const connections = o.connections ?? 1000;
  const size = o.size ?? 1_000_000;
  const rate = o.rate ?? 150_000;
  const picks = RUN_NAMES.filter((n) => (o.faults ?? RUN_NAMES).includes(n));
  const runs = o.runs ?? 1;
  const lab = new Lab({ tag: 'btm', subnet: SUBNET, taps: 2 });
  lab.up();
  try {
    const one = async (name: RunName, i: number): Promise<TapTeamRun> => {
      const hostAlone = name === 'host';
      const fault: FaultKind = hostAlone ? 'none' : name;
      log(
        `${hostAlone ? 'host alone' : 'team'}, fault ${fault}${runs > 1 ? `, run ${i + 1} of ${runs}` : ''}: ${connections} × ${size} B at ${rate} B/s`,
      );
      // The client namespace's counters are the lab's: read around each run, they are its own.
      const before = nsCounters(lab);
      const r = await runLoad(lab, { connections, size, rate, fault, hostAlone, timeoutS: 300, log });
      const after = nsCounters(lab);
      const k = 'TcpExtTCPDSACKOldSent';
      const dsack = k in after ? after[k]! - (before[k] ?? 0) : -1;
      for (const l of r.bad.slice(0, 5)) log(`  serve: ${l}`);
      return figures(r, dsack);
    };
    const each: Partial<Record<RunName, TapTeamRun[]>> = {};
    // Interleaved, so that the machine's load drifting over the runs falls on every pick alike.
    for (let i = 0; i < runs; i++) for (const n of picks) (each[n] ??= []).push(await one(n, i));
    const result: TapTeamResult = { connections, bytesEach: size, rateEach: rate, runs };
    for (const n of picks) result[RESULT_KEY[n]] = medianOf(each[n]!);
    if (runs > 1) result.each = each;
    return result;
  } finally {
    await lab.down();
  }
}

/** One run's row, and its CPU per MB by thread under it. */
function formatRun(label: string, f: TapTeamRun): string {
  const move = f.moveMs >= 0 ? `  serve's move ${f.moveMs} ms` : '';
  const row = `${label.padEnd(22)} detect ${String(f.detectMs).padStart(6)} ms (${String(f.faultToDetectMs).padStart(6)} after the fault)${move}  resume at peer ${String(f.resumeMs).padStart(7)} ms  max stall ${String(f.maxStallMs).padStart(7)} ms (p99 ${f.p99StallMs})  first byte p50 ${f.p50FirstByteMs} ms  failed ${f.failed}  resets ${f.resets}  bad log lines ${f.badLogLines}  load ${f.loadAvg}`;
  const c = f.cpuMsPerMB;
  const nics = Object.entries(c?.nics ?? {}).map(([n, v]) => `${n} ${v}, `);
  const cpu = c
    ? `CPU ms per MB: main ${c.main}, ${nics.join('')}other ${c.other}, serve ${c.serve}; client ${c.client}, ksoftirqd ${c.ksoftirqd}`
    : 'CPU by thread: not on Linux';
  const phases = f.movePhases
    ? `\n${''.padEnd(22)} move phases: ${Object.entries(f.movePhases)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}`
    : '';
  return `${row}\n${''.padEnd(22)} ${cpu}; client's D-SACKs of old data ${f.dsackOldSent}; loss probes ${f.tlpProbes}, D-SACKed ${f.tlpDsacked}${phases}`;
}

export function formatTapTeam(r: TapTeamResult): string {
  const label: Record<RunName, string> = {
    carrier: 'carrier',
    reachability: 'reachability',
    crash: 'crash (worker killed)',
    none: 'team, no fault',
    host: 'reference: host alone',
  };
  const lines = [
    `${r.connections} concurrent downloads of ${r.bytesEach} B, each read at ${r.rateEach} B/s, from the kernel${r.runs > 1 ? `; median of ${r.runs} runs field by field` : ''}`,
  ];
  for (const n of ['carrier', 'reachability', 'crash', 'none', 'host'] as const) {
    const f = r[RESULT_KEY[n]];
    if (!f) continue;
    for (const [i, e] of (r.each?.[n] ?? []).entries()) lines.push(formatRun(`${label[n]} #${i + 1}`, e));
    lines.push(formatRun(r.runs > 1 ? `${label[n]}, median` : label[n], f));
  }
  return lines.join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await benchMain(parseTapTeamFlags, async (o) => {
    const r = await benchTapTeam((l) => console.error(l), o);
    console.log(o.json ? JSON.stringify(r) : formatTapTeam(r));
  });
}
