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
import { performance } from 'node:perf_hooks';
import type { ConnKey, Nic } from '../src/nic/nic.ts';
import { ManagerOffloader } from '../src/team/manager-offloader.ts';
import type { MoveResult } from '../src/team/team.ts';
import { type Fault, runScenario, type ScenarioResult } from '../test/team/scenario.ts';
import type { TeamRig } from '../test/team/team-sim.ts';

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
}

export interface FailoverBench {
  connections: number;
  /**
   * All times but `resumeWallMs` are simulator time, into which every transfer's real duration is
   * charged (a move costs what it costs; nothing else in the simulator does).
   */
  timebase: 'virtual+charged';
  carrier: FailoverFigures;
  reachability: FailoverFigures;
  crash: FailoverFigures;
  reference: FailoverFigures & { method: string };
}

/** The peer's wire, bytes/s. */
const RATE = 2e9;

/** Upload to the host, then offload again: two transfers per connection instead of one. */
class UploadThenOffload extends ManagerOffloader {
  override async move(keys: ConnKey[], from: Nic, to: Nic): Promise<MoveResult> {
    const up = await this.upload(keys, from);
    const down = await this.offload(up.moved, to);
    return { moved: down.moved, inHost: up.inHost.concat(down.inHost), lost: up.lost.concat(down.lost) };
  }
}

async function one(
  connections: number,
  kind: 'cut' | 'blackhole' | 'crash',
  reference = false,
): Promise<FailoverFigures> {
  const faultAt = 3;
  let detectWall = 0;
  let resumeWall = 0;
  let detectedAt = -1;
  const firstAfter = new Map<string, number>();
  const faults: Fault[] = [{ at: faultAt, kind, nic: 0 }];
  const r = await runScenario({
    seed: 7,
    nics: 2,
    conns: connections,
    // About 30 ms of data on the wire in all, so the fault at 3 ms lands mid-stream.
    bytes: Math.max(2048, Math.round((RATE * 0.03) / connections)),
    faults,
    offloadTo: 0,
    rateBps: RATE,
    limitMs: 60_000,
    onData: (stream, at, now) => {
      const k = `${at}:${stream}`;
      if (detectedAt >= 0 && !firstAfter.has(k)) firstAfter.set(k, now);
    },
    onRig: (rig: TeamRig) => {
      rig.manager.chargeWallTime = true;
      for (const n of rig.nics) n.chargeWork = true;
      if (reference) rig.team.setOffloader(new UploadThenOffload(rig.manager));
      rig.team.on('failure', (ev: { at: number }) => {
        if (detectWall === 0) detectWall = performance.now();
        if (detectedAt < 0) detectedAt = ev.at;
      });
      rig.team.on('failover', () => {
        if (resumeWall === 0) resumeWall = performance.now();
      });
    },
  });
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
  };
}

/** Which runs had a stream not intact ('' when all were whole). */
export function failoverBroken(b: FailoverBench): string {
  const runs = ['carrier', 'reachability', 'crash', 'reference'] as const;
  return runs.filter((k) => !b[k].intact).join(', ');
}

export async function benchFailover(opts: { connections?: number } = {}): Promise<FailoverBench> {
  const connections = opts.connections ?? 10_000;
  return {
    connections,
    timebase: 'virtual+charged',
    carrier: await one(connections, 'cut'),
    reachability: await one(connections, 'blackhole'),
    crash: await one(connections, 'crash'),
    reference: { method: 'upload to host, then offload again', ...(await one(connections, 'cut', true)) },
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const n = Number(process.argv[2] ?? 10_000);
  benchFailover({ connections: n }).then((r) => {
    console.log(JSON.stringify(r, null, 2));
    if (failoverBroken(r)) process.exitCode = 1;
  });
}
