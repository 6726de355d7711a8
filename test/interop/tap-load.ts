/**
 * Many slow downloads from the Linux kernel (scripts/tap-load.py in the lab's namespace) against
 * `chimney serve` on a team of TAPs, with a fault injected while they run: what the CI test at
 * scale, the soak command and the tap-team benchmark share.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { controlRequest, type StatusSnapshot } from '../../src/cli/control.ts';
import { type Lab, ROOT, type Served, sleep } from './lab.ts';
import { injectLinkFault } from './link-fault.ts';

export type FaultKind = 'none' | 'carrier' | 'reachability' | 'crash';

export interface LoadOptions {
  connections: number;
  size: number;
  /** Bytes/s each connection reads at. */
  rate: number;
  fault: FaultKind;
  /** Extra `chimney serve` arguments. */
  extra?: string[];
  /** The same run's reference: the host stack alone on the first TAP, no team (fault must be 'none'). */
  hostAlone?: boolean;
  /** The team's members are LocalNics on serve's main thread (no `--workers`). */
  localNics?: boolean;
  /** Client time-out per connection, s. */
  timeoutS?: number;
  log?: (line: string) => void;
  /**
   * Seconds to wait after every download has its first byte before the fault (0: at once, the
   * documented run). A later fault is an extra measurement, out of the connect burst.
   */
  faultDelayS?: number;
  /**
   * The client opens its connections over this long (scripts/tap-load.py `--ramp-ms`, whose
   * default, 2 s, is the documented burst). A slower ramp is the same load without the burst.
   */
  rampMs?: number;
  /**
   * Downloads (PREWARM_BYTES each, opened over PREWARM_RAMP_MS) the client completes against the
   * same serve before the measured run: its burst then meets the code V8 has already optimised
   * and the tables that traffic grew, an upper bound for what a warm-up at serve's start could give
   * (BENCHMARKS.md tap-team, "V8 in the connect burst at 1,000"). 0 or absent: none.
   */
  prewarm?: number;
}

/** Each prewarm download's bytes and the time its connections are opened over. */
export const PREWARM_BYTES = 300_000;
export const PREWARM_RAMP_MS = 1000;

/**
 * The prewarm's client: `connections` downloads of PREWARM_BYTES over PREWARM_RAMP_MS, without
 * the measured run's `--ready-file` (the file marks the measured burst's end; the prewarm's would
 * cut the burst's thread figures at the prewarm instead).
 */
export function prewarmArgv(lab: Lab, host: string, connections: number, rate: number): string[] {
  return clientArgv(lab, host, {
    connections,
    size: PREWARM_BYTES,
    rate,
    timeoutS: 60,
    rampMs: PREWARM_RAMP_MS,
  });
}

export interface ClientReport {
  connections: number;
  ok: number;
  failed: number;
  resets: number;
  errors: Record<string, number>;
  firstErrors: { conn: number; error: string; got: number }[];
  maxStallMs: number;
  p99StallMs: number;
  /** From the handshake's end (the client's connection_made) to the first byte. */
  p50FirstByteMs: number;
  maxFirstByteMs: number;
  /** From the connect (the client's SYN) to the first byte: a wait for the SYN-ACK counts. */
  p50FirstByteFromOpenMs: number;
  p99FirstByteFromOpenMs: number;
  maxFirstByteFromOpenMs: number;
  /** The first connect to the last: the ramp the server met (tap-load.py keeps it to the clock). */
  openSpreadMs: number;
  /** How late a connect went after its place in the ramp (its loop woke late). */
  p99OpenLateMs: number;
  maxOpenLateMs: number;
  wallMs: number;
  bytes: number;
  /** [start epoch ms, end epoch ms, connection index, client port]. */
  stalls: [number, number, number, number][];
  /** Each connection's [client port, connect asked, connected, first byte], epoch ms. */
  times: [number, number, number, number][];
}

export interface LoadResult {
  client: ClientReport;
  /** The NIC the fault hit, '' without one. */
  nic: string;
  /**
   * Epoch ms of the fault, 0 without one: for a carrier or reachability fault, as the system call
   * that made it began (link-fault.ts); for a crash, before the control request that kills.
   */
  faultAt: number;
  /** How long the call that made a carrier or reachability fault took, ms (0 for the others). */
  faultCallMs: number;
  /** Every counter set serve reported after the run (null when it did not answer). */
  counters: Record<string, Record<string, number>> | null;
  /**
   * From serve's failover line: detection after the last evidence the team had that the NIC was
   * fine, ms (-1: none logged). Not what a user lives through when that evidence was stale: see
   * realDetectMs.
   */
  detectMs: number;
  /**
   * Detection after the fault itself, ms (-1: none seen): the failover's time from serve's status
   * once the client is done, against the fault's epoch ms. What the downloads wait through.
   */
  realDetectMs: number;
  /**
   * How long after the fault the team still held evidence the NIC was fine (its last evidence, the
   * failover's time minus detectMs), ms; negative when that evidence predates the fault.
   */
  believedMs: number;
  /** At the peer: the last connection stalled by the fault got data again this long after it, ms. */
  resumeMs: number;
  /** Connections that stalled across the fault (a gap the client saw; a quick failover may leave none). */
  stalledByFault: number;
  /** Connections the failover moved off the faulty member, from serve's failover line. */
  movedByFault: number;
  /**
   * Serve's own move of them, from its failover line: detection to the last one running at its new
   * owner, ms (-1: none logged). The move's part of what the downloads wait through, without the
   * detection or the client's own turns.
   */
  moveMs: number;
  /** The move's phases as serve logged them (its failover line's `phases …` part), '' when absent. */
  movePhases: string;
  /**
   * What the stalls across the fault were (see `cutStalls`). With no fault, the same cut at the
   * moment the fault would have come (every download's first byte, then the owners' query).
   */
  faultCut: FaultCut | null;
  /** Epoch ms of the fault, or of the moment it would have come (0: the run never got there). */
  markAt: number;
  /** Who owned each download (by the client's port) at the fault or its moment. */
  owners: Map<number, string>;
  /** Lines of serve's log that must never appear: false failures, losses, resets, errors. */
  bad: string[];
  /**
   * Serve's counters once the client was done that name who sent or met a reset, and the passive
   * opens (RSTs out, unacceptable ACKs, SYNs answered, held, cookies, accepts refused), by counter
   * set (host, team, each NIC), the nonzero ones; null when serve did not answer.
   */
  resetCounters: Record<string, Record<string, number>> | null;
  /** The NICs' ring counters once the client was done (send-ring bytes placed, grows), by set; null likewise. */
  ringCounters: Record<string, Record<string, number>> | null;
  log: string;
  /**
   * Serve's main thread when every download had its first byte (the connect burst's end) and when
   * the client was done; null off Linux. On a shared machine the burst's wall time follows the
   * other work on the cores; the CPU time and faults it cost serve's main thread much less so.
   */
  serveMain: { burst: ThreadUsage | null; end: ThreadUsage | null };
  /**
   * Every thread's CPU and wait for a core (see RunThreads), from serve's start to every
   * download's first byte (the connect burst) and from then to the client's end; null off Linux.
   */
  threads: { burst: RunThreads; after: RunThreads } | null;
}

/** One thread's CPU time and minor faults, and its process's resident memory, so far. */
export interface ThreadUsage {
  cpuMs: number;
  /**
   * Time the thread was ready to run but waited for a core (schedstat; -1 without it): with the
   * CPU time, tells a thread short of cores from one with nothing to do.
   */
  runqueueMs: number;
  minorFaults: number;
  rssMB: number;
}

/**
 * From /proc (Linux): thread `tid` of process `pid` (its main thread by default). Null where there
 * is no /proc or the process is gone. utime and stime are in clock ticks, 100 a second on every
 * Linux this runs on (USER_HZ, fixed by the kernel's ABI whatever its internal HZ).
 */
export function threadUsage(pid: number, tid = pid): ThreadUsage | null {
  try {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Not status's VmRSS: the kernel updates that lazily, smaps_rollup walks the mappings.
    const rss = /^Rss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    let runqueueMs = -1;
    try {
      const ss = parseSchedstat(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8'));
      if (ss) runqueueMs = Math.round(ss.waitNs / 1e6);
    } catch {
      // A kernel without CONFIG_SCHEDSTATS.
    }
    return {
      cpuMs: (Number(f[11]) + Number(f[12])) * 10,
      runqueueMs,
      minorFaults: Number(f[7]),
      rssMB: rss ? Math.round(Number(rss[1]) / 1024) : 0,
    };
  } catch {
    return null;
  }
}

/** CPU time and time ready to run but waiting for a core, of a thread or a group of threads, ms. */
export interface CpuWait {
  cpuMs: number;
  runqueueMs: number;
}

/**
 * Where a stretch of the run's CPU went, and who waited for a core (schedstat, Linux): serve's
 * main thread, each NIC's worker (which names its thread after the NIC), serve's other threads
 * (V8's platform threads: the garbage collector's and the compiler's; libuv's pool; under tsx, its
 * loader's module thread), the client, and the kernel's softirq threads (the TAPs' and veths'
 * deliveries the writers did not do themselves). On two cores shared by all of them, a download stalls while the thread that holds
 * its data waits for a core, so the waits say which thread it was more than the CPU times do.
 */
export interface RunThreads {
  serveMain: CpuWait;
  nics: Record<string, CpuWait>;
  serveOther: CpuWait;
  client: CpuWait;
  ksoftirqd: CpuWait;
}

/**
 * A thread's /proc/PID/task/TID/schedstat: time on a core, time ready to run but waiting for one
 * (both ns), and timeslices. Unlike stat's utime/stime (10 ms ticks) it is exact, so a verb that
 * costs a thread a few ms reads as what it cost. Null for anything else.
 */
export function parseSchedstat(text: string): { cpuNs: number; waitNs: number } | null {
  const m = /^(\d+) (\d+) \d+\s*$/.exec(text);
  return m ? { cpuNs: Number(m[1]), waitNs: Number(m[2]) } : null;
}

/** One thread's schedstat, keyed by process and thread. */
export type ThreadTimes = Map<
  string,
  { pid: number; tid: number; comm: string; cpuNs: number; waitNs: number }
>;

function addThreads(out: ThreadTimes, pid: number, tids?: number[]): void {
  let list: number[];
  try {
    list = tids ?? readdirSync(`/proc/${pid}/task`).map(Number);
  } catch {
    return;
  }
  for (const tid of list) {
    try {
      const ss = parseSchedstat(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8'));
      const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      if (ss) out.set(`${pid}/${tid}`, { pid, tid, comm, ...ss });
    } catch {
      // The thread ended, or a kernel without CONFIG_SCHEDSTATS.
    }
  }
}

/** The kernel's softirq threads (one a core). */
function ksoftirqdPids(): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (readFileSync(`/proc/${e}/comm`, 'utf8').startsWith('ksoftirqd/')) out.push(Number(e));
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

/** The process whose command line holds `marker` (the client: its ready file is the run's own). */
function pidOf(marker: string): number {
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (readFileSync(`/proc/${e}/cmdline`, 'utf8').includes(marker)) return Number(e);
    } catch {
      // Gone meanwhile.
    }
  }
  return 0;
}

/** Every thread of serve, the client's and the softirq threads, now (empty off Linux). */
export function threadTimes(servePid: number, clientPid: number, softirq: number[]): ThreadTimes {
  const out: ThreadTimes = new Map();
  try {
    addThreads(out, servePid);
    if (clientPid > 0) addThreads(out, clientPid);
    for (const p of softirq) addThreads(out, p, [p]);
  } catch {
    // No /proc.
  }
  return out;
}

/**
 * What each group of threads used between two `threadTimes`, ms. A thread that started between
 * them counts from zero; one that ended in between is left out (a NIC's worker killed by a fault).
 */
export function threadsBetween(
  a: ThreadTimes,
  b: ThreadTimes,
  servePid: number,
  nics: readonly string[],
): RunThreads {
  const z = (): CpuWait => ({ cpuMs: 0, runqueueMs: 0 });
  const r: RunThreads = { serveMain: z(), nics: {}, serveOther: z(), client: z(), ksoftirqd: z() };
  for (const [k, t] of b) {
    const t0 = a.get(k);
    let g: CpuWait;
    if (t.pid !== servePid) g = t.comm.startsWith('ksoftirqd/') ? r.ksoftirqd : r.client;
    else if (t.tid === servePid) g = r.serveMain;
    else if (nics.includes(t.comm)) {
      r.nics[t.comm] ??= z();
      g = r.nics[t.comm]!;
    } else g = r.serveOther;
    g.cpuMs += Math.round((t.cpuNs - (t0?.cpuNs ?? 0)) / 1e6);
    g.runqueueMs += Math.round((t.waitNs - (t0?.waitNs ?? 0)) / 1e6);
  }
  return r;
}

/** CPU ms per MB delivered, by group of threads (see RunThreads); `serve` is all of serve's. */
export interface CpuPerMB {
  main: number;
  nics: Record<string, number>;
  other: number;
  serve: number;
  client: number;
  ksoftirqd: number;
}

/**
 * A run's CPU by thread (its connect burst and what followed, together) per MB the client
 * received: what a download costs each thread, comparable across runs of other sizes.
 */
export function cpuPerMB(t: { burst: RunThreads; after: RunThreads }, bytes: number): CpuPerMB {
  const mb = bytes / 1e6;
  const per = (ms: number): number => (mb > 0 ? Math.round((ms / mb) * 1000) / 1000 : 0);
  const both = (f: (r: RunThreads) => CpuWait): number => f(t.burst).cpuMs + f(t.after).cpuMs;
  const nics: Record<string, number> = {};
  let nicMs = 0;
  for (const name of new Set([...Object.keys(t.burst.nics), ...Object.keys(t.after.nics)])) {
    const ms = (t.burst.nics[name]?.cpuMs ?? 0) + (t.after.nics[name]?.cpuMs ?? 0);
    nics[name] = per(ms);
    nicMs += ms;
  }
  const main = both((r) => r.serveMain);
  const other = both((r) => r.serveOther);
  return {
    main: per(main),
    nics,
    other: per(other),
    serve: per(main + nicMs + other),
    client: per(both((r) => r.client)),
    ksoftirqd: per(both((r) => r.ksoftirqd)),
  };
}

/** The client namespace's kernel counters (nstat), to diff around a run; {} without nstat. */
export function nsCounters(lab: Lab): Record<string, number> {
  try {
    const out = execFileSync('ip', ['netns', 'exec', lab.ns, 'nstat', '-az', '--json'], { encoding: 'utf8' });
    return (JSON.parse(out) as { kernel: Record<string, number> }).kernel;
  } catch {
    return {};
  }
}

const CAUSE: Record<Exclude<FaultKind, 'none'>, string> = {
  carrier: 'carrier',
  reachability: 'reachability',
  crash: 'dead',
};

/** Who owns each download, by the client's port. */
async function owners(ctl: string): Promise<Map<number, string>> {
  const s = (await controlRequest(ctl, { op: 'status' })) as StatusSnapshot;
  const out = new Map<number, string>();
  for (const t of s.trees)
    for (const p of t.paths)
      for (const c of p.conns)
        if (c.local.endsWith(':80')) out.set(Number(c.remote.slice(c.remote.lastIndexOf(':') + 1)), c.owner);
  return out;
}

/** One class of the stalls across a fault. */
export interface StallClass {
  /** Downloads with a gap across the fault (as `stalledByFault` counts them). */
  stalled: number;
  /**
   * Of them, downloads already stalled when the fault came (their gap began 50 ms or more
   * before it): a download that was flowing had data a tick of the client's reader before.
   */
  stalledBefore: number;
  /** Half of them / the last of them got data again this long after the fault, ms. */
  p50ResumeMs: number;
  resumeMs: number;
}

/**
 * The stalls across a fault, cut so that the fault's own can be told from those the connect burst
 * was causing anyway: by who owned the download when the fault came (the faulted NIC, the other
 * NICs, the host, not known), and the same count at moments before and after the fault, where no
 * fault is (`around`: offset ms → downloads with a gap across that moment).
 */
export interface FaultCut {
  /** ms from the client's start to the fault (or the moment it would have come). */
  atMs: number;
  /** ms from every download's first byte (the ready file seen) to the fault. */
  afterReadyMs: number;
  faulted: StallClass;
  other: StallClass;
  host: StallClass;
  unknown: StallClass;
  around: Record<string, number>;
}

const ALREADY_MS = 50;
const AROUND_MS = [-3000, -2000, -1000, -500, 0, 500, 1000, 2000, 3000];

/** Gaps that began no later than `at` + 5 ms and ended after `at`: the rule of `stalledByFault`. */
function across(stalls: ClientReport['stalls'], at: number): ClientReport['stalls'] {
  return stalls.filter(([start, end]) => start <= at + 5 && end > at);
}

export function cutStalls(
  stalls: ClientReport['stalls'],
  at: number,
  owner: Map<number, string>,
  nic: string,
  times: { startAt: number; readyAt: number },
): FaultCut {
  const cls = (): StallClass => ({ stalled: 0, stalledBefore: 0, p50ResumeMs: 0, resumeMs: 0 });
  const cut: FaultCut = {
    atMs: at - times.startAt,
    afterReadyMs: at - times.readyAt,
    faulted: cls(),
    other: cls(),
    host: cls(),
    unknown: cls(),
    around: {},
  };
  const resumes = new Map<StallClass, number[]>();
  // One gap a download at most can span one moment: gaps of one download do not overlap.
  for (const [start, end, , port] of across(stalls, at)) {
    const o = owner.get(port);
    const c = o === undefined ? cut.unknown : o === 'host' ? cut.host : o === nic ? cut.faulted : cut.other;
    c.stalled++;
    if (start <= at - ALREADY_MS) c.stalledBefore++;
    const l = resumes.get(c) ?? [];
    l.push(end - at);
    resumes.set(c, l);
  }
  for (const [c, l] of resumes) {
    l.sort((a, b) => a - b);
    c.p50ResumeMs = Math.round(l[l.length >> 1]! * 10) / 10;
    c.resumeMs = Math.round(l[l.length - 1]! * 10) / 10;
  }
  for (const off of AROUND_MS) cut.around[off] = across(stalls, at + off).length;
  return cut;
}

/** Counters that say who reset what, and how the passive opens went (see LoadResult.resetCounters). */
const RESET_COUNTERS = /rst|bad-ack|\.listen\.|syncookies|accept-at-nic|accept\.(refused|errors)/;

/** Counters of the NICs' ring memory: bytes placed, grows and their bytes (see LoadResult.ringCounters). */
const RING_COUNTERS = /^nic\.(sndbuf|ring)\./;

function resetsOf(sets: Record<string, Record<string, number>>): Record<string, Record<string, number>> {
  return countersMatching(sets, RESET_COUNTERS);
}

function countersMatching(
  sets: Record<string, Record<string, number>>,
  re: RegExp,
): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const [set, counters] of Object.entries(sets)) {
    const kept: Record<string, number> = {};
    for (const [k, v] of Object.entries(counters)) if (v !== 0 && re.test(k)) kept[k] = v;
    if (Object.keys(kept).length > 0) out[set] = kept;
  }
  return out;
}

/** scripts/tap-load.py in the lab's namespace against `host`. */
export function clientArgv(
  lab: Lab,
  host: string,
  o: { connections: number; size: number; rate: number; timeoutS: number; rampMs?: number },
  extra: string[] = [],
): string[] {
  const n = (v: number): string => String(v);
  return ['ip', 'netns', 'exec', lab.ns, 'python3', join(ROOT, 'scripts/tap-load.py'), '--host', host]
    .concat(['--connections', n(o.connections), '--size', n(o.size), '--rate', n(o.rate)])
    .concat(o.rampMs === undefined ? [] : ['--ramp-ms', n(o.rampMs)])
    .concat(['--timeout', n(o.timeoutS), ...extra]);
}

/** Run the client against a fresh `chimney serve` on the lab's two TAPs; inject the fault once all have data. */
export async function runLoad(lab: Lab, o: LoadOptions): Promise<LoadResult> {
  const log = o.log ?? (() => {});
  const ctl = join(lab.dir, `ctl-load-${o.fault}.sock`);
  const ready = join(lab.dir, `ready-${o.fault}`);
  // A run before this one in the same lab with the same fault (the benchmark's host alone, then
  // the team, both 'none') left its file: seen at once, it marked the burst's end and the fault's
  // moment before this run's downloads had begun.
  rmSync(ready, { force: true });
  const probe = o.fault === 'reachability' ? ['--probe', lab.kernelIp] : [];
  // No restart of a killed worker (serve restarts one 1 s after its death by default): its start's
  // CPU would fall inside the resume these runs measure, and figures would not compare with those
  // before restarts; test/tap/team.test.ts tests the restart.
  const workers = o.localNics === true ? [] : ['--workers', '--restart-limit', '0'];
  const team = o.hostAlone ? [] : ['--tap', lab.taps[1]!, ...workers];
  const srv: Served = await lab.serve({
    services: ['http:80'],
    extra: [...team, '--quiet', '--control', ctl, ...probe, ...(o.extra ?? [])],
  });
  let nic = '';
  let faultAt = 0;
  let faultCallMs = 0;
  let cut = '';
  let markAt = 0;
  let readyAt = 0;
  let owner = new Map<number, string>();
  const pid = srv.proc.pid ?? 0;
  let burst: ThreadUsage | null = null;
  const nics = o.hostAlone ? [lab.taps[0]!] : lab.taps.slice(0, 2);
  const softirq = ksoftirqdPids();
  let clientPid = 0;
  if ((o.prewarm ?? 0) > 0) {
    const w = await lab.run(prewarmArgv(lab, lab.chimneyIps[0]!, o.prewarm!, o.rate), 120_000);
    let done: ClientReport | null = null;
    try {
      done = JSON.parse(w.stdout) as ClientReport;
    } catch {}
    if (done === null || done.ok !== o.prewarm) {
      throw new Error(
        `the prewarm's downloads did not all complete (exit ${w.code}): ${w.stdout.slice(0, 500)}`,
      );
    }
    log(`prewarm: ${done.ok} downloads of ${PREWARM_BYTES} B, longest stall ${done.maxStallMs} ms`);
  }
  const times0 = threadTimes(pid, 0, softirq);
  let timesBurst = times0;
  try {
    const timeoutS = o.timeoutS ?? 300;
    const startAt = Date.now();
    const client = lab.run(
      clientArgv(
        lab,
        lab.chimneyIps[0]!,
        { connections: o.connections, size: o.size, rate: o.rate, timeoutS, rampMs: o.rampMs },
        ['--ready-file', ready],
      ),
      (timeoutS + 60) * 1000,
    );
    {
      // Without a fault too: the same moment is marked, to count the stalls across it that no
      // fault caused.
      const { existsSync } = await import('node:fs');
      const end = Date.now() + 120_000;
      while (!existsSync(ready) && Date.now() < end) await sleep(100);
      if (!existsSync(ready)) throw new Error(`the downloads never all started:\n${srv.log().slice(-2000)}`);
      readyAt = Date.now();
      burst = threadUsage(pid);
      clientPid = pidOf(ready);
      timesBurst = threadTimes(pid, clientPid, softirq);
      if (o.faultDelayS) await sleep(o.faultDelayS * 1000);
      // The NIC carrying most of them takes the fault.
      // With no fault the owners only cut the stalls: a serve too starved of a core to answer
      // within the control's bound (load 15-25 on a shared machine, every build) loses that cut,
      // not the run.
      owner = await owners(ctl).catch((e: Error) => {
        if (o.fault !== 'none') throw e;
        log(`owners query: ${e.message}`);
        return new Map<number, string>();
      });
      const o2 = [...owner.values()];
      const count = (n: string): number => o2.filter((x) => x === n).length;
      nic = [...new Set(o2)].filter((x) => x !== 'host').sort((a, b) => count(b) - count(a))[0] ?? '';
      markAt = Date.now();
    }
    if (o.fault !== 'none') {
      if (nic === '') throw new Error(`no connection on a NIC: ${owner.size} on the host`);
      log(
        `fault ${o.fault} on ${nic} (${[...owner.values()].filter((x) => x === nic).length} of ${owner.size} connections)`,
      );
      faultAt = markAt;
      if (o.fault === 'carrier' || o.fault === 'reachability') {
        if (o.fault === 'reachability') cut = nic;
        const f = injectLinkFault(o.fault, nic, lab.bridge);
        // The call's start: the kernel made the change somewhere inside it (a port leaves its
        // bridge's forwarding early in br_del_if, then waits out an RCU grace period, 77 ms at load
        // 30), so the whole call is charged to the team, as the start of `ip` used to be.
        faultAt = markAt = f.before;
        faultCallMs = f.at - f.before;
      } else {
        // The kill is the fault, not its answer: serve answers once the worker is told to die,
        // and whether the team saw the death is read from serve's log below (detectMs -1 when it
        // did not). A lost answer must not lose the run and everything it measured.
        try {
          await controlRequest(ctl, { op: 'kill-nic', nic });
        } catch (e) {
          log(`kill-nic ${nic}: ${(e as Error).message}`);
        }
      }
    }
    // The client's last figures before it exits: its report comes after its last download.
    let timesEnd = timesBurst;
    const sampler = setInterval(() => {
      const t = threadTimes(pid, clientPid, softirq);
      if (clientPid === 0 || [...t.values()].some((x) => x.pid === clientPid)) timesEnd = t;
    }, 200);
    const r = await client.finally(() => clearInterval(sampler));
    const end = threadUsage(pid);
    const counters = await controlRequest(ctl, { op: 'counters' }).then(
      (sets) => sets as Record<string, Record<string, number>>,
      (e: Error) => {
        log(`counters after the run: ${e.message}`);
        return null;
      },
    );
    const resetCounters = counters === null ? null : resetsOf(counters);
    const ringCounters = counters === null ? null : countersMatching(counters, RING_COUNTERS);
    // The failover's own time, read before serve stops: its status gives its age, taken on the
    // server between the request and the answer (their midpoint, within a millisecond or two).
    let detectedAt = 0;
    if (faultAt > 0 && o.fault !== 'none')
      try {
        const cause = CAUSE[o.fault];
        const t0 = Date.now();
        const s = (await controlRequest(ctl, { op: 'status' })) as StatusSnapshot;
        const mid = (t0 + Date.now()) / 2;
        const f = s.failovers.filter((x) => x.nic === nic && x.cause === cause).pop();
        if (f) detectedAt = mid - f.agoMs;
      } catch (e) {
        log(`status after the run: ${(e as Error).message}`);
      }
    let report: ClientReport;
    try {
      report = JSON.parse(r.stdout) as ClientReport;
    } catch {
      throw new Error(
        `client printed no report (exit ${r.code}): ${r.stderr.slice(-2000)}\n${srv.log().slice(-3000)}`,
      );
    }
    const text = srv.log();
    let detectMs = -1;
    let movedByFault = 0;
    let moveMs = -1;
    let movePhases = '';
    if (o.fault !== 'none') {
      const re = new RegExp(
        `failover ${nic} \\(${CAUSE[o.fault]}\\): detected in ([\\d.]+) ms, (\\d+) connection.* ([\\d.]+) ms after detection(.*)`,
        'g',
      );
      const m = [...text.matchAll(re)].pop();
      if (m) {
        detectMs = Number(m[1]);
        movedByFault = Number(m[2]);
        moveMs = Number(m[3]);
        movePhases = /phases (.*)/.exec(m[4]!)?.[1]?.trim() ?? '';
      }
    }
    let resumeMs = 0;
    let stalledByFault = 0;
    if (faultAt > 0)
      for (const [start, endAt] of report.stalls)
        if (start <= faultAt + 5 && endAt > faultAt) {
          stalledByFault++;
          resumeMs = Math.max(resumeMs, endAt - faultAt);
        }
    const expected = o.fault === 'none' ? null : new RegExp(`failover ${nic} \\(${CAUSE[o.fault]}\\)`);
    const bad = text
      .split('\n')
      .filter(
        (l) =>
          /LOST|reset|error|failed|dead|failover/i.test(l) &&
          !(expected?.test(l) ?? false) &&
          !(o.fault !== 'none' && new RegExp(`${nic}: (failed|down|dead)`).test(l)),
      );
    return {
      client: report,
      nic: faultAt > 0 ? nic : '',
      faultAt,
      faultCallMs,
      counters,
      detectMs,
      realDetectMs: detectedAt > 0 ? Math.round((detectedAt - faultAt) * 10) / 10 : -1,
      believedMs:
        detectedAt > 0 && detectMs >= 0 ? Math.round((detectedAt - detectMs - faultAt) * 10) / 10 : 0,
      resumeMs: Math.round(resumeMs * 10) / 10,
      stalledByFault,
      movedByFault,
      moveMs,
      movePhases,
      markAt,
      owners: owner,
      faultCut: markAt > 0 ? cutStalls(report.stalls, markAt, owner, nic, { startAt, readyAt }) : null,
      bad,
      resetCounters,
      ringCounters,
      log: text,
      serveMain: { burst, end },
      threads:
        timesEnd.size === 0
          ? null
          : {
              burst: threadsBetween(times0, timesBurst, pid, nics),
              after: threadsBetween(timesBurst, timesEnd, pid, nics),
            },
    };
  } finally {
    if (o.fault === 'carrier' && nic) lab.ip('link', 'set', 'dev', nic, 'up');
    if (cut) lab.ip('link', 'set', 'dev', cut, 'master', lab.bridge);
    // A CPU profile is written at serve's exit, after its shutdown grace: a long run's may take
    // longer than the default 3 s before SIGKILL.
    await srv.stop(process.env.CHIMNEY_CPU_PROF || process.env.CHIMNEY_WORKER_CPU_PROF ? 30_000 : undefined);
  }
}
