/**
 * Failover at scale against the Linux kernel (needs root and python3): `chimney serve --tap A
 * --tap B --workers` serves a thousand (or --connections) concurrent HTTP downloads, each read
 * slowly by one asyncio client in the lab namespace (scripts/tap-load.py), while the NIC carrying
 * most of them loses its carrier, leaves the bridge (reachability) or has its worker killed.
 * Every download is verified (length, every byte, SHA-256). Figures at the peer: resumeMs is how
 * long after the fault the last stalled download got data again, maxStallMs the longest gap in
 * any download's data; detectMs is serve's own (from its last evidence the NIC was fine),
 * faultToDetectMs from the fault itself to serve's failover (what the downloads wait through). Reference, same run: the same downloads with no
 * fault, on the team and on the host stack alone on one TAP.
 *
 *   npx tsx bench/tap-team.ts [--json] [--connections N] [--size BYTES] [--rate BYTES_PER_S]
 */
import { loadavg } from 'node:os';
import { pathToFileURL } from 'node:url';
import { Lab, missingPrerequisite } from '../test/interop/lab.ts';
import { type FaultKind, type LoadResult, type RunThreads, runLoad } from '../test/interop/tap-load.ts';

export interface TapTeamRun {
  detectMs: number;
  /** From the fault to serve's failover (-1: none); see LoadResult.realDetectMs. */
  faultToDetectMs: number;
  resumeMs: number;
  maxStallMs: number;
  p99StallMs: number;
  /** Downloads that failed, came back short or corrupt, or were reset. */
  failed: number;
  resets: number;
  /** Lines serve logged that it should not have (false failures, losses, resets). */
  badLogLines: number;
  /** Connections on the NIC the fault hit / downloads whose data stopped across the fault. */
  stalledByFault: number;
  wallMs: number;
  /**
   * The machine's one-minute load average when the run ended: on a shared machine the stalls
   * follow it (the host alone stalled 0.45 s at 1.5 and 4.9 s at 15), so a figure without it
   * cannot be compared with another.
   */
  loadAvg: number;
  /** CPU and waits for a core by thread, in the burst and after it (see RunThreads); null off Linux. */
  threads: { burst: RunThreads; after: RunThreads } | null;
}

export interface TapTeamResult {
  connections: number;
  bytesEach: number;
  rateEach: number;
  /** Reference, same run: the host stack alone on one TAP, no fault. */
  hostAlone: TapTeamRun;
  /** Reference, same run: the team, no fault. */
  noFault: TapTeamRun;
  carrier: TapTeamRun;
  reachability: TapTeamRun;
  crash: TapTeamRun;
}

const SUBNET = 241;

function figures(r: LoadResult): TapTeamRun {
  return {
    detectMs: r.detectMs,
    faultToDetectMs: r.realDetectMs,
    resumeMs: r.resumeMs,
    maxStallMs: r.client.maxStallMs,
    p99StallMs: r.client.p99StallMs,
    failed: r.client.failed,
    resets: r.client.resets,
    badLogLines: r.bad.length,
    stalledByFault: r.stalledByFault,
    wallMs: r.client.wallMs,
    loadAvg: Math.round(loadavg()[0]! * 10) / 10,
    threads: r.threads,
  };
}

export async function benchTapTeam(
  log: (l: string) => void = () => {},
  o: { connections?: number; size?: number; rate?: number } = {},
): Promise<TapTeamResult> {
  const why = missingPrerequisite(['python3']);
  if (why) throw new Error(`tap-team benchmark: ${why}`);
  const connections = o.connections ?? 1000;
  const size = o.size ?? 1_000_000;
  const rate = o.rate ?? 150_000;
  const lab = new Lab({ tag: 'btm', subnet: SUBNET, taps: 2 });
  lab.up();
  try {
    const one = async (fault: FaultKind, hostAlone = false): Promise<TapTeamRun> => {
      log(`${hostAlone ? 'host alone' : 'team'}, fault ${fault}: ${connections} × ${size} B at ${rate} B/s`);
      const r = await runLoad(lab, { connections, size, rate, fault, hostAlone, timeoutS: 300, log });
      for (const l of r.bad.slice(0, 5)) log(`  serve: ${l}`);
      return figures(r);
    };
    const hostAlone = await one('none', true);
    const noFault = await one('none');
    const carrier = await one('carrier');
    const reachability = await one('reachability');
    const crash = await one('crash');
    return { connections, bytesEach: size, rateEach: rate, hostAlone, noFault, carrier, reachability, crash };
  } finally {
    await lab.down();
  }
}

export function formatTapTeam(r: TapTeamResult): string {
  const row = (k: string, f: TapTeamRun) =>
    `${k.padEnd(22)} detect ${String(f.detectMs).padStart(6)} ms (${String(f.faultToDetectMs).padStart(6)} after the fault)  resume at peer ${String(f.resumeMs).padStart(7)} ms  max stall ${String(f.maxStallMs).padStart(7)} ms (p99 ${f.p99StallMs})  failed ${f.failed}  resets ${f.resets}  bad log lines ${f.badLogLines}  load ${f.loadAvg}`;
  return [
    `${r.connections} concurrent downloads of ${r.bytesEach} B, each read at ${r.rateEach} B/s, from the kernel`,
    row('carrier', r.carrier),
    row('reachability', r.reachability),
    row('crash (worker killed)', r.crash),
    row('team, no fault', r.noFault),
    row('reference: host alone', r.hostAlone),
  ].join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const arg = (n: string): number | undefined => {
    const i = process.argv.indexOf(`--${n}`);
    return i >= 0 ? Number(process.argv[i + 1]) : undefined;
  };
  const r = await benchTapTeam((l) => console.error(l), {
    connections: arg('connections'),
    size: arg('size'),
    rate: arg('rate'),
  });
  console.log(process.argv.includes('--json') ? JSON.stringify(r) : formatTapTeam(r));
}
