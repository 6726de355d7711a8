/**
 * Failover benchmark on the simulator: N offloaded connections streaming through one member of a
 * two-NIC team; the member fails (carrier cut, reachability loss, NIC crash) and the team moves
 * every connection to the other member. Measured per cause:
 *
 * - detectMs: fault to detection, virtual time (carrier: the link's own report; reachability: ARP
 *   probes 10 ms × 3, or silence on the port; crash: the NIC's 'dead' indication).
 * - resumeMs: detection to the moment data reaches the receiving application again, per connection
 *   (its first delivery after detection, at the peer for the team's streams and at the team host
 *   for the peer's), the slowest connection; virtual time in which every transfer is charged the
 *   real time it took (`OffloadManager.chargeWallTime`), so it is the stall a peer would live
 *   through. `resumeP50Ms` is the median connection. Half the connections carry data from the
 *   team to the peer and half the other way: `resumeToPeerMs` is the slowest of the team's
 *   streams (what the prod resends at once), `resumeFromPeerMs` the slowest of the peer's (data
 *   it had in flight into the outage waits its own timer, tail probe or RTO, as with Linux).
 * - movedMs: detection to the last connection running on its new NIC (the team's own record).
 *   `resumeWallMs` is the real time this process spent from detection to the failover's end
 *   (terminate, validate, initiate, prod).
 * - maxStallMs: longest gap between two deliveries any application saw (virtual time), at the peer
 *   and the team host alike, across the whole run.
 * - Every stream checked, not assumed (`summariseStreams`): `streams` expected, `streamsOk`
 *   delivered whole and in order, `unfinished`, `errors` (with the first few in `errorSamples`),
 *   `bytesLost` (bytes missing, stream by stream) and `bytesExtra` (bytes beyond a stream's length,
 *   or delivered by a second stream of the same tuple). `intact` is false unless all of these say
 *   every stream is whole; `npm run bench -- failover` then exits 1.
 * - resets, bytesLost: must be 0.
 *
 * Reference in the same run: the Broadcom TOE teaming way on a carrier cut: upload every
 * connection to the host stack, then offload it again to the surviving NIC.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { type PerformanceEntry, PerformanceObserver, performance } from 'node:perf_hooks';
import { Command } from 'commander';
import { intIn } from '../src/cli/options.ts';
import type { ConnKey, Nic } from '../src/nic/nic.ts';
import type { ManagerOffloader } from '../src/team/manager-offloader.ts';
import type { MoveResult } from '../src/team/team.ts';
import type { Fault, runScenario, ScenarioResult } from '../test/team/scenario.ts';
import type { TeamRig } from '../test/team/team-sim.ts';
import { benchMain, parseBenchFlags } from './args.ts';
import { benchRoot } from './warm-move.ts';

/** What the streams of a scenario delivered, every one checked. */
export interface StreamFigures {
  /** Streams the scenario opened (two per connection, one each way). */
  streams: number;
  /** Streams that delivered exactly their bytes, in order, and ended. */
  streamsOk: number;
  /** Streams that never ended (or never opened). */
  unfinished: number;
  /** Errors the streams reported (wrong bytes, short streams, resets), and duplicate streams. */
  errors: number;
  /** The first few of them. */
  errorSamples: string[];
  resets: number;
  /** Bytes missing, stream by stream: never negative, extra bytes on one do not hide another's loss. */
  bytesLost: number;
  /** Bytes delivered beyond a stream's length, or by a second socket of the same stream. */
  bytesExtra: number;
  /** Every stream whole: no error, none unfinished, nothing lost or extra, no reset. */
  intact: boolean;
}

/** Count, stream by stream, what a scenario's streams delivered. */
export function summariseStreams(r: ScenarioResult): StreamFigures {
  const errors = [...r.stats.errors];
  const seen = new Set<string>();
  let ok = 0;
  let ended = 0;
  let lost = r.unopenedBytes;
  let extra = 0;
  for (const st of r.stats.streams ?? []) {
    const k = `${st.from}/${st.id}`;
    if (seen.has(k)) {
      // A second socket for one stream: the host took a segment of a connection it had
      // elsewhere for a new one. Everything it delivered was delivered twice.
      errors.push(`stream ${st.id}: delivered by a second socket (${st.got} bytes)`);
      extra += st.got;
      continue;
    }
    seen.add(k);
    if (st.ended) ended++;
    if (st.ended && !st.bad && st.got === st.total) ok++;
    lost += Math.max(0, st.total - st.good);
    extra += Math.max(0, st.got - st.total);
  }
  // Streams still open when the scenario gave up are counted in its own error; count them here too.
  const unfinished = Math.max(0, r.expected - ended);
  const streamsOk = ok;
  return {
    streams: r.expected,
    streamsOk,
    unfinished,
    errors: errors.length,
    errorSamples: errors.slice(0, 5),
    resets: r.stats.resets,
    bytesLost: lost,
    bytesExtra: extra,
    intact:
      errors.length === 0 &&
      unfinished === 0 &&
      streamsOk === r.expected &&
      lost === 0 &&
      extra === 0 &&
      r.stats.resets === 0,
  };
}

/**
 * One phase of a failover's timeline (`--phases`): from one mark to the next, in the simulator's
 * charged virtual time and in real time, with the main thread's CPU (schedstat; the simulator,
 * its NICs and the team all run on it) and the collections that began within it.
 */
export interface FailoverPhase {
  /**
   * fault → detected → first resumed → 50% → 90% → last resumed (of the streams that deliver after
   * the detection), with `moved` (the team's failover done) wherever it falls.
   */
  from: string;
  to: string;
  virtualMs: number;
  wallMs: number;
  cpuMs: number;
  gcs: number;
  gcMs: number;
}

export interface FailoverFigures extends StreamFigures {
  detectMs: number;
  resumeMs: number;
  resumeP50Ms: number;
  resumeToPeerMs: number;
  resumeFromPeerMs: number;
  movedMs: number;
  resumeWallMs: number;
  maxStallMs: number;
  moved: number;
  /** With `--phases`: the timeline, each mark to the next in the order they came. */
  phases?: FailoverPhase[];
}

export type FailoverRow = 'carrier' | 'reachability' | 'crash' | 'reference';
export const FAILOVER_ROWS: readonly FailoverRow[] = ['carrier', 'reachability', 'crash', 'reference'];

export interface FailoverBench {
  connections: number;
  /** The tree whose build ran (CHIMNEY_ROOT, or this one). */
  root: string;
  /**
   * All times but `resumeWallMs` (and the phases' wall) are simulator time, into which every
   * transfer's real duration is charged (a move costs what it costs; nothing else in the
   * simulator does).
   */
  timebase: 'virtual+charged';
  /** The rows run (`--rows`; all by default). */
  carrier?: FailoverFigures;
  reachability?: FailoverFigures;
  crash?: FailoverFigures;
  reference?: FailoverFigures & { method: string };
}

/** The peer's wire, bytes/s. */
const RATE = 2e9;

/** What a run takes from the tree it measures (this one's, or CHIMNEY_ROOT's). */
interface Lib {
  runScenario: typeof runScenario;
  /** Upload to the host, then offload again: two transfers per connection instead of one. */
  uploadThenOffload: (rig: TeamRig) => ManagerOffloader;
}

async function loadLib(): Promise<{ root: string; lib: Lib }> {
  const { root, load } = benchRoot();
  const sc = await load<{ runScenario: typeof runScenario }>('test/team/scenario.ts');
  const mo = await load<{ ManagerOffloader: typeof ManagerOffloader }>('src/team/manager-offloader.ts');
  class UploadThenOffload extends mo.ManagerOffloader {
    override async move(keys: ConnKey[], from: Nic, to: Nic): Promise<MoveResult> {
      const up = await this.upload(keys, from);
      const down = await this.offload(up.moved, to);
      return { moved: down.moved, inHost: up.inHost.concat(down.inHost), lost: up.lost.concat(down.lost) };
    }
  }
  return {
    root,
    lib: { runScenario: sc.runScenario, uploadThenOffload: (rig) => new UploadThenOffload(rig.manager) },
  };
}

/** A mark of the timeline: virtual time, real time, the main thread's CPU (ns). */
interface Mark {
  at: number;
  wall: number;
  cpuNs: number;
}

/** The main thread's CPU time, ns, from its schedstat read through one open descriptor. */
class ThreadCpu {
  private readonly fd = openSync(`/proc/self/task/${process.pid}/schedstat`, 'r');
  private readonly buf = Buffer.alloc(128);
  ns(): number {
    const n = readSync(this.fd, this.buf, 0, this.buf.length, 0);
    return Number(this.buf.toString('latin1', 0, n).split(' ')[0]);
  }
  close(): void {
    closeSync(this.fd);
  }
}

/** The phases between the marks that came, in the order they came, with the GCs that began in each. */
function phasesOf(marks: [string, Mark][], gcs: readonly { start: number; ms: number }[]): FailoverPhase[] {
  const sorted = [...marks].sort((a, b) => a[1].wall - b[1].wall);
  const r3 = (x: number): number => Math.round(x * 1000) / 1000;
  const out: FailoverPhase[] = [];
  for (let i = 1; i < sorted.length; i++) {
    const [from, a] = sorted[i - 1]!;
    const [to, b] = sorted[i]!;
    const inside = gcs.filter((g) => g.start >= a.wall && g.start < b.wall);
    out.push({
      from,
      to,
      virtualMs: r3(b.at - a.at),
      wallMs: r3(b.wall - a.wall),
      cpuMs: r3((b.cpuNs - a.cpuNs) / 1e6),
      gcs: inside.length,
      gcMs: r3(inside.reduce((s, g) => s + g.ms, 0)),
    });
  }
  return out;
}

async function one(
  lib: Lib,
  connections: number,
  kind: 'cut' | 'blackhole' | 'crash',
  reference = false,
  phases = false,
  wireMs = 30,
): Promise<FailoverFigures> {
  const faultAt = 3;
  let detectWall = 0;
  let resumeWall = 0;
  let detectedAt = -1;
  const firstAfter = new Map<string, number>();
  const faults: Fault[] = [{ at: faultAt, kind, nic: 0 }];
  // The timeline (`phases`): marks taken in the simulator's turns. A resume's CPU is read at most
  // once per 0.2 ms of real time, so reading it does not become the work it measures.
  const cpu = phases ? new ThreadCpu() : null;
  const marks = new Map<string, Mark>();
  const gcs: { start: number; ms: number }[] = [];
  const obs = phases
    ? new PerformanceObserver((l) => {
        for (const e of l.getEntries() as PerformanceEntry[])
          gcs.push({ start: e.startTime, ms: e.duration });
      })
    : null;
  obs?.observe({ entryTypes: ['gc'] });
  const resumes: Mark[] = [];
  let cpuRead = { wall: -1, ns: 0 };
  const mark = (at: number): Mark => {
    const wall = performance.now();
    if (cpu !== null && wall - cpuRead.wall >= 0.2) cpuRead = { wall, ns: cpu.ns() };
    return { at, wall, cpuNs: cpuRead.ns };
  };
  const exact = (name: string, at: number): void => {
    if (cpu === null || marks.has(name)) return;
    cpuRead = { wall: performance.now(), ns: cpu.ns() };
    marks.set(name, { at, wall: cpuRead.wall, cpuNs: cpuRead.ns });
  };
  let r: ScenarioResult;
  try {
    r = await lib.runScenario({
      seed: 7,
      nics: 2,
      conns: connections,
      // About 30 ms of data on the wire in all, so the fault at 3 ms lands mid-stream.
      bytes: Math.max(2048, Math.round((RATE * wireMs) / 1000 / connections)),
      faults,
      offloadTo: 0,
      rateBps: RATE,
      limitMs: 60_000,
      onData: (stream, at, now) => {
        const k = `${at}:${stream}`;
        if (detectedAt >= 0 && !firstAfter.has(k)) {
          firstAfter.set(k, now);
          if (cpu !== null) {
            if (resumes.length === 0) exact('first resumed', now);
            resumes.push(mark(now));
          }
        }
      },
      onStart: (rig: TeamRig, t0: number) => {
        // Armed before the scenario's own fault timer at the same instant, so it fires first.
        if (cpu !== null) rig.net.clock.createTimer(() => exact('fault', rig.net.now())).armAt(t0 + faultAt);
      },
      onRig: (rig: TeamRig) => {
        rig.manager.chargeWallTime = true;
        for (const n of rig.nics) n.chargeWork = true;
        if (reference) rig.team.setOffloader(lib.uploadThenOffload(rig));
        rig.team.on('failure', (ev: { at: number }) => {
          if (detectWall === 0) detectWall = performance.now();
          if (detectedAt < 0) detectedAt = ev.at;
          exact('detected', rig.net.now());
        });
        rig.team.on('failover', () => {
          if (resumeWall === 0) resumeWall = performance.now();
          exact('moved', rig.net.now());
        });
      },
    });
  } finally {
    cpu?.close();
  }
  let timeline: FailoverPhase[] | undefined;
  if (obs !== null) {
    // The gc entries arrive on a later turn.
    await new Promise((res) => setTimeout(res, 50));
    obs.disconnect();
    // Streams resume in the order they deliver: the half and the nine tenths show whether most
    // wait for the last (one batch after another) or come early.
    const n = resumes.length;
    if (n > 2) {
      marks.set('50% resumed', resumes[Math.ceil(n * 0.5) - 1]!);
      marks.set('90% resumed', resumes[Math.ceil(n * 0.9) - 1]!);
    }
    if (n > 1) marks.set('last resumed', resumes[n - 1]!);
    timeline = phasesOf([...marks], gcs);
  }
  const f = r.rig.team.failovers.find((x) => x.nic === r.rig.nics[0]!.id);
  const round = (x: number): number => Math.round(x * 1000) / 1000;
  // Streams that had ended before the fault deliver nothing after it and do not count.
  const waits = [...firstAfter.values()].map((t) => t - detectedAt).sort((a, b) => a - b);
  const slowest = (end: 'peer' | 'team'): number => {
    let w = -1;
    for (const [k, t] of firstAfter) if (k.startsWith(`${end}:`)) w = Math.max(w, t - detectedAt);
    return f && w >= 0 ? round(w) : -1;
  };
  return {
    detectMs: f ? round(f.at - (r.startedAt + faultAt)) : -1,
    resumeMs: f && waits.length > 0 ? round(waits[waits.length - 1]!) : -1,
    resumeP50Ms: f && waits.length > 0 ? round(waits[waits.length >> 1]!) : -1,
    resumeToPeerMs: slowest('peer'),
    resumeFromPeerMs: slowest('team'),
    movedMs: f ? round(f.resumeMs) : -1,
    resumeWallMs: round(resumeWall - detectWall),
    maxStallMs: round(r.stats.maxGapMs),
    moved: f?.connections ?? 0,
    ...summariseStreams(r),
    ...(timeline ? { phases: timeline } : {}),
  };
}

/** Which runs had a stream not intact ('' when all were whole). */
export function failoverBroken(b: FailoverBench): string {
  return FAILOVER_ROWS.filter((k) => b[k] !== undefined && !b[k].intact).join(', ');
}

export async function benchFailover(
  opts: {
    connections?: number;
    rows?: readonly FailoverRow[];
    phases?: boolean;
    /** Data on the wire in all, ms at the peer's rate (default 30; the fault comes at 3 ms). */
    wireMs?: number;
  } = {},
): Promise<FailoverBench> {
  const connections = opts.connections ?? 10_000;
  const rows = opts.rows ?? FAILOVER_ROWS;
  const phases = opts.phases === true;
  const { root, lib } = await loadLib();
  const out: FailoverBench = { connections, root, timebase: 'virtual+charged' };
  if (rows.includes('carrier')) out.carrier = await one(lib, connections, 'cut', false, phases, opts.wireMs);
  if (rows.includes('reachability'))
    out.reachability = await one(lib, connections, 'blackhole', false, phases, opts.wireMs);
  if (rows.includes('crash')) out.crash = await one(lib, connections, 'crash', false, phases, opts.wireMs);
  if (rows.includes('reference'))
    out.reference = {
      method: 'upload to host, then offload again',
      ...(await one(lib, connections, 'cut', true, phases, opts.wireMs)),
    };
  return out;
}

export function parseFailoverFlags(argv: readonly string[]): {
  connections?: number;
  rows?: FailoverRow[];
  phases?: boolean;
  json?: boolean;
} {
  return parseBenchFlags(
    new Command('failover')
      .option(
        '--connections <n>',
        'streaming connections (default CHIMNEY_BENCH_CONNS or 10,000)',
        intIn(2, 1_000_000),
      )
      .option('--rows <list>', `rows to run, comma-separated (${FAILOVER_ROWS.join(', ')})`, (v: string) => {
        const rows = v.split(',').map((x) => x.trim());
        const bad = rows.filter((x) => !(FAILOVER_ROWS as readonly string[]).includes(x));
        if (bad.length > 0 || rows.length === 0) throw new Error(`--rows: unknown row ${bad.join(', ')}`);
        return rows as FailoverRow[];
      })
      .option('--phases', 'each row as a timeline: fault, detected, moved, first and last resumed'),
    argv,
  );
}

/** A row's timeline, one phase a line. */
export function formatPhases(p: readonly FailoverPhase[]): string {
  return p
    .map(
      (x) =>
        `    ${`${x.from} → ${x.to}`.padEnd(32)} virtual ${x.virtualMs} ms, wall ${x.wallMs} ms, main CPU ${x.cpuMs} ms, ${x.gcs} GCs ${x.gcMs} ms`,
    )
    .join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await benchMain(parseFailoverFlags, async (o) => {
    const r = await benchFailover({
      connections: o.connections ?? 10_000,
      rows: o.rows,
      phases: o.phases === true,
    });
    console.log(JSON.stringify(r, null, 2));
    if (failoverBroken(r)) process.exitCode = 1;
  });
}
