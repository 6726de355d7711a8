import { pathToFileURL } from 'node:url';
import { type AttacksResult, benchAttacks, formatAttacks } from './attacks.ts';
import { benchChurn, type ChurnOptions, type ChurnResult, formatChurn, parseChurnFlags } from './churn.ts';
import {
  benchCrashRebuild,
  type CrashRebuildResult,
  formatCrashRebuild,
  parseCrashRebuildFlags,
} from './crash-rebuild.ts';
import {
  benchFailover,
  FAILOVER_ROWS,
  type FailoverBench,
  type FailoverFigures,
  failoverBroken,
  formatPhases,
  parseFailoverFlags,
} from './failover.ts';
import {
  benchHeldCapture,
  formatHeldCapture,
  type HeldCaptureResult,
  parseHeldCaptureFlags,
} from './held-capture.ts';
import { benchLoss, formatLoss, type LossResult } from './loss.ts';
import { benchOffload } from './offload.ts';
import { benchOffloadData, type DataOffloadBenchResult } from './offload-data.ts';
import {
  benchOffloadWorker,
  formatOffloadWorker,
  parseOffloadWorkerFlags,
  type WorkerOffloadBenchResult,
} from './offload-worker.ts';
import { benchReaders, formatReaders, type ReadersResult } from './readers.ts';
import {
  benchRecordRead,
  formatRecordRead,
  parseRecordReadFlags,
  type RecordReadResult,
} from './record-read.ts';
import { benchSim } from './sim.ts';
import { benchSimLoss, formatSimLoss, type SimLossResult } from './sim-loss.ts';
import { benchStateCodec } from './state-codec.ts';
import {
  benchTapTeam,
  formatTapTeam,
  parseTapTeamFlags,
  type TapTeamOptions,
  type TapTeamResult,
} from './tap-team.ts';
import { benchTapThroughput, formatTapThroughput, type TapThroughputResult } from './tap-throughput.ts';
import { benchWarmMove, formatWarmMove, parseWarmMoveFlags, type WarmMoveResult } from './warm-move.ts';
import {
  benchWorkerStart,
  formatWorkerStart,
  parseWorkerStartFlags,
  type WorkerStartResult,
} from './worker-start.ts';

/** A benchmark's run, given its own flags as its parser in FLAGS read them ({} without). */
type Bench = (flags: Record<string, unknown>) => Promise<Record<string, unknown>>;

/** Every benchmark the project has; `npm run bench` with no name runs them all but NAMED_ONLY. */
const BENCHES: Record<string, { about: string; run: Bench; print: (r: Record<string, unknown>) => string }> =
  {
    sim: {
      about: 'bulk TCP between two Chimney stacks in one process over the memory switch, no loss',
      run: () =>
        benchSim(Number(process.env.CHIMNEY_BENCH_BYTES ?? 1 << 30)) as unknown as Promise<
          Record<string, unknown>
        >,
      print: (r) =>
        [
          `chimney↔chimney, MTU ${r.mtu} with TSO/checksum offload: ${r.gbps} Gbit/s, ${r.cpuUsPerSegment} µs CPU/segment`,
          `chimney↔chimney, MTU 1500 without offload: ${r.gbpsNoOffload} Gbit/s, ${r.cpuUsPerSegmentNoOffload} µs CPU/segment`,
          `chimney↔chimney over IPv6, MTU ${r.mtu} with TSO6/checksum offload: ${r.gbpsIpv6} Gbit/s, ${r.cpuUsPerSegmentIpv6} µs CPU/segment`,
          `chimney↔chimney over IPv6, MTU 1500 without offload: ${r.gbpsIpv6NoOffload} Gbit/s, ${r.cpuUsPerSegmentIpv6NoOffload} µs CPU/segment`,
          `chimney↔chimney, MTU 65535 without offload: ${r.gbpsJumbo} Gbit/s`,
          `reference, kernel TCP over loopback via node:net (same run): ${r.kernelLoopbackGbps} Gbit/s  → ratio ${r.ratio}`,
        ].join('\n'),
    },
    throughput: {
      about:
        'TCP over a TAP device against the Linux kernel, both directions (needs root), vs the kernel over veth',
      run: async () =>
        (await benchTapThroughput({
          bytes: Number(process.env.CHIMNEY_BENCH_BYTES ?? 2 * 1024 ** 3),
          log: (l) => console.error(l),
        })) as unknown as Record<string, unknown>,
      print: (r) => formatTapThroughput(r as unknown as TapThroughputResult),
    },
    'sim-loss': {
      about:
        'a 20 MB transfer between two Chimney hosts on the simulator with 1, 2, 5 and 10 % frame loss both ways (virtual time), vs the same without loss',
      run: async () => (await benchSimLoss()) as unknown as Record<string, unknown>,
      print: (r) => formatSimLoss(r as unknown as SimLossResult),
    },
    loss: {
      about:
        'a 20 MB download under 1, 2, 5 and 10 % random loss (nftables, both ways) from chimney serve on a TAP vs from Linux in a namespace, same run; and a slow reader (needs root)',
      run: async () =>
        (await benchLoss({
          runs: Number(process.env.CHIMNEY_BENCH_RUNS ?? 3),
          capS: Number(process.env.CHIMNEY_BENCH_CAP_S ?? 120),
          log: (l) => console.error(l),
        })) as unknown as Record<string, unknown>,
      print: (r) => formatLoss(r as unknown as LossResult),
    },
    readers: {
      about:
        'a hundred slow readers (CHIMNEY_BENCH_CONNS) downloading from chimney serve on a TAP and from Linux in a namespace, alternated: needless resends the readers saw, loss probes, stalls (needs root)',
      run: async () =>
        (await benchReaders((l) => console.error(l), {
          connections: Number(process.env.CHIMNEY_BENCH_CONNS ?? 100),
          runs: Number(process.env.CHIMNEY_BENCH_RUNS ?? 3),
          flushMetrics: process.env.CHIMNEY_BENCH_FLUSH_METRICS === '1',
        })) as unknown as Record<string, unknown>,
      print: (r) => formatReaders(r as unknown as ReadersResult),
    },
    'tap-team': {
      about:
        'a thousand slow downloads from the kernel (CHIMNEY_BENCH_CONNS) over two WorkerNics on two TAPs through carrier, reachability and worker-kill faults, vs no fault and the host alone, CPU per MB by thread (needs root; flags: --faults, --runs, --connections, --size, --rate)',
      run: async (f) =>
        (await benchTapTeam((l) => console.error(l), {
          connections: Number(process.env.CHIMNEY_BENCH_CONNS ?? 1000),
          ...(f as TapTeamOptions),
        })) as unknown as Record<string, unknown>,
      print: (r) => formatTapTeam(r as unknown as TapTeamResult),
    },
    offload: {
      about:
        'offload, move and upload of 10,000 established connections (LocalNics, then WorkerNics on threads), and of 500 with full 256 KiB send rings (WorkerNics); throughput over two WorkerNics vs the host alone',
      run: async () => {
        const connections = Number(process.env.CHIMNEY_BENCH_CONNS ?? 10_000);
        const local = await benchOffload({ connections });
        const worker = await benchOffloadWorker({ connections, runs: 3 });
        // WorkerNic moves of connections with full 256 KiB send rings: does a move cost the data?
        const data = await benchOffloadData({
          connections: Number(process.env.CHIMNEY_BENCH_DATA_CONNS ?? 500),
          runs: 2,
        });
        const floor = benchStateCodec(connections);
        return {
          connections,
          offload: local.offload,
          move: local.move,
          upload: local.upload,
          whole: local.whole,
          worker,
          data,
          // The same run's floor: encoding and validating-decoding the same number of trees.
          reference: {
            what: 'state-codec encode + decode of the same number of connections',
            ms: Math.round(((floor.encodeUsPerConn + floor.decodeUsPerConn) * connections) / 10) / 100,
          },
        };
      },
      print: (r) => {
        type P = { p50Ms: number; p99Ms: number; batch: number; samples: number; totalMs: number };
        const f = (label: string, p: P) =>
          `${label.padEnd(16)} all in ${p.totalMs.toFixed(1)} ms (median run); per batch of ${p.batch}: p50 ${p.p50Ms.toFixed(2)} ms, p99 ${p.p99Ms.toFixed(2)} ms (${p.samples} batches)`;
        const w = r.worker as {
          offload: P;
          move: P;
          upload: P;
          whole: Record<string, { p50Ms: number; p99Ms: number; samples: number }>;
          throughput: { connections: number; hostMbps: number; workersMbps: number; ratio: number };
        };
        const ref = r.reference as { what: string; ms: number };
        const d = r.data as DataOffloadBenchResult;
        return [
          `${r.connections} connections`,
          f('offload (local)', r.offload as P),
          f('move (local)', r.move as P),
          f('upload (local)', r.upload as P),
          ...Object.entries(
            (r.whole ?? {}) as Record<string, { p50Ms: number; p99Ms: number; samples: number }>,
          ).map(
            ([k, p]) =>
              `${`${k} (local)`.padEnd(16)} all in one call: p50 ${p.p50Ms.toFixed(1)} ms, p99 ${p.p99Ms.toFixed(1)} ms (${p.samples} calls)`,
          ),
          f('offload (worker)', w.offload),
          f('move (worker)', w.move),
          f('upload (worker)', w.upload),
          ...Object.entries(w.whole).map(
            ([k, p]) =>
              `${`${k} (worker)`.padEnd(16)} all in one call: p50 ${p.p50Ms.toFixed(1)} ms, p99 ${p.p99Ms.toFixed(1)} ms (${p.samples} calls)`,
          ),
          `${d.connections} connections with ${(d.bytesQueued / 2 ** 20).toFixed(0)} MiB queued in their send rings (WorkerNic), bytes copied ${d.copiedBytes} (the first offload only):`,
          f('  offload', d.offload),
          f('  move', d.move),
          f('  upload', d.upload),
          `throughput, ${w.throughput.connections} connections: host alone ${w.throughput.hostMbps} Mbit/s, over two WorkerNics ${w.throughput.workersMbps} Mbit/s (×${w.throughput.ratio})`,
          `reference (same run): ${ref.what}: ${ref.ms} ms`,
        ].join('\n');
      },
    },
    'warm-move': {
      about:
        "a warm WorkerNic move of every connection there and back, over and over: wall, the main thread's CPU and collections per move (flags: --connections, --rounds, --skip, --heap for the main thread's allocations by function; CHIMNEY_ROOT=<tree> runs that tree's build)",
      run: async (f) =>
        (await benchWarmMove(f as ReturnType<typeof parseWarmMoveFlags>)) as unknown as Record<
          string,
          unknown
        >,
      print: (r) => formatWarmMove(r as unknown as WarmMoveResult),
    },
    'held-capture': {
      about:
        "accept-time offloads to a WorkerNic against the kernel, captured at the kernel: each connection's longest stall and resends near its move, serve's held, kept and PAWS-dropped segments (needs root and tshark; flags: --connections, --rounds, --size; CHIMNEY_ROOT=<tree> runs that tree's build)",
      run: async (f) =>
        (await benchHeldCapture(
          (l) => console.error(l),
          f as ReturnType<typeof parseHeldCaptureFlags>,
        )) as unknown as Record<string, unknown>,
      print: (r) => formatHeldCapture(r as unknown as HeldCaptureResult),
    },
    'record-read': {
      about:
        "a cold pass of transfer-record reads, as a crash's survivor worker makes first: the thread's CPU per thousand (flags: --records; one pass a process; CHIMNEY_ROOT=<tree> runs that tree's build)",
      run: async (f) =>
        (await benchRecordRead(f as ReturnType<typeof parseRecordReadFlags>)) as unknown as Record<
          string,
          unknown
        >,
      print: (r) => formatRecordRead(r as unknown as RecordReadResult),
    },
    'worker-start': {
      about:
        "a NIC worker's start from a source checkout (spawn to its graph evaluated): from its bundle, against tsx's loader hooks (how workers started before), dist/ when built and an empty worker, alternated (flags: --rounds)",
      run: async (f) =>
        (await benchWorkerStart(f as ReturnType<typeof parseWorkerStartFlags>)) as unknown as Record<
          string,
          unknown
        >,
      print: (r) => formatWorkerStart(r as unknown as WorkerStartResult),
    },
    'crash-rebuild': {
      about:
        "a WorkerNic's crash alone: its thread killed, then every connection salvaged, validated, rebuilt and installed at the other WorkerNic; the parts' wall and main-thread CPU (flags: --connections, --runs, --profile FILE for a CPU profile of the last run's rebuild; CHIMNEY_ROOT=<tree> runs that tree's build)",
      run: async (f) =>
        (await benchCrashRebuild(f as ReturnType<typeof parseCrashRebuildFlags>)) as unknown as Record<
          string,
          unknown
        >,
      print: (r) => formatCrashRebuild(r as unknown as CrashRebuildResult),
    },
    'offload-worker': {
      about:
        "the WorkerNic part of offload alone: offload, move and upload of 10,000 connections on threads, throughput beside the host alone (flags: --cpu for each verb's CPU by thread, with a move back; --connections, --runs, --ipv6)",
      run: async (f) => {
        const o = f as ReturnType<typeof parseOffloadWorkerFlags>;
        return (await benchOffloadWorker({
          connections: o.connections ?? Number(process.env.CHIMNEY_BENCH_CONNS ?? 10_000),
          runs: o.runs ?? Number(process.env.CHIMNEY_BENCH_RUNS ?? 5),
          ipv6: o.ipv6 === true,
          cpu: o.cpu === true,
        })) as unknown as Record<string, unknown>;
      },
      print: (r) => formatOffloadWorker(r as unknown as WorkerOffloadBenchResult),
    },
    failover: {
      about:
        "failover of 10,000 offloaded, streaming connections on the simulator: carrier loss, reachability loss, NIC crash (flags: --connections, --rows carrier,crash,..., --phases for each row's timeline: fault, detected, moved, first and last resumed, with main-thread CPU and GCs; CHIMNEY_ROOT=<tree> runs that tree's build)",
      run: async (f) => {
        const o = f as ReturnType<typeof parseFailoverFlags>;
        return (await benchFailover({
          connections: o.connections ?? Number(process.env.CHIMNEY_BENCH_CONNS ?? 10_000),
          rows: o.rows,
          phases: o.phases === true,
        })) as unknown as Record<string, unknown>;
      },
      print: (r) => {
        const row = (k: string) => {
          const f = r[k] as FailoverFigures;
          const line = `${k.padEnd(13)} detect ${f.detectMs} ms, data at the receiver again after ${f.resumeMs} ms (slowest; median ${f.resumeP50Ms} ms; the team's streams ${f.resumeToPeerMs} ms, the peer's ${f.resumeFromPeerMs} ms), moved in ${f.movedMs} ms (${f.resumeWallMs} ms wall to move ${f.moved}), longest stall ${f.maxStallMs} ms, resets ${f.resets}; streams ${f.streamsOk}/${f.streams} intact, ${f.unfinished} unfinished, ${f.errors} errors, bytes lost ${f.bytesLost}, extra ${f.bytesExtra}${f.intact ? '' : ` - NOT INTACT: ${f.errorSamples.join('; ')}`}`;
          return f.phases ? `${line}\n${formatPhases(f.phases)}` : line;
        };
        const lines = [
          `${r.connections} connections (detect/resume/stall on the simulator's virtual clock; ${r.root})`,
        ];
        for (const k of FAILOVER_ROWS) {
          if (r[k] === undefined) continue;
          if (k === 'reference')
            lines.push(
              `reference (same run), ${(r.reference as { method: string }).method}: ${row('reference').slice(14)}`,
            );
          else lines.push(row(k));
        }
        return lines.join('\n');
      },
    },
    attacks: {
      about:
        'the attacks of issue 11 on the simulator (silent zero window, 100,000 TIME_WAIT, alternate-byte SACK, 8-byte fragment flood, stray-ACK flood, a flood of connections nobody reads): CPU and memory with the protection on vs off, and a bystander download during each next to the same without the attack, same run',
      run: async () => (await benchAttacks()) as unknown as Record<string, unknown>,
      print: (r) => formatAttacks(r as unknown as AttacksResult),
    },
    churn: {
      about:
        'memory under churn: cycles of connections opened, written, offloaded to two WorkerNics, moved there and back, closed (simulator, real time); RSS, heap and shared buffers at start, peak and end, each run a process, alternated with a reference (--ref <checkout>, or the host stack alone) (flags: --cycles, --connections, --bytes, --close, --ref, --ref-cycles, --pairs, --max-s)',
      run: async (f) => {
        const o = (Object.keys(f).length ? f : parseChurnFlags([])) as ChurnOptions;
        return (await benchChurn(o, (l) => console.error(l))) as unknown as Record<string, unknown>;
      },
      print: (r) => formatChurn(r as unknown as ChurnResult),
    },
    'state-codec': {
      about:
        'binary encoding and validated decoding of offload trees (10,000 connections, 64 B of data each way)',
      run: async () => benchStateCodec(10_000) as unknown as Record<string, unknown>,
      print: (r) =>
        [
          `encode ${r.encodeUsPerConn} µs/connection, decode ${r.decodeUsPerConn} µs/connection (${r.decodeNoSoftUsPerConn} without soft state), batch ${r.batchBytes} bytes`,
          `reference, JSON round trip of the same fields (same run): ${r.referenceJsonRoundTripUsPerConn} µs/connection`,
        ].join('\n'),
    },
  };

/** The benchmarks that take flags of their own (see their files), parsed before anything runs. */
const FLAGS: Record<string, (argv: readonly string[]) => object> = {
  'tap-team': parseTapTeamFlags,
  'offload-worker': parseOffloadWorkerFlags,
  'warm-move': parseWarmMoveFlags,
  'crash-rebuild': parseCrashRebuildFlags,
  'record-read': parseRecordReadFlags,
  'worker-start': parseWorkerStartFlags,
  'held-capture': parseHeldCaptureFlags,
  churn: parseChurnFlags,
  failover: parseFailoverFlags,
};

/** Run only when named: a part of another benchmark, on its own for its flags. */
const NAMED_ONLY = new Set([
  'offload-worker',
  'warm-move',
  'churn',
  'crash-rebuild',
  'held-capture',
  'record-read',
  'worker-start',
]);

/**
 * Benchmarks whose figures can fail to stand (a stream not intact): what went wrong, '' when
 * nothing did. The run prints it and exits 1.
 */
const BROKEN: Record<string, (r: Record<string, unknown>) => string> = {
  failover: (r) => {
    const bad = failoverBroken(r as unknown as FailoverBench);
    return bad ? `failover: streams not intact in ${bad}` : '';
  },
};

/**
 * `args`: benchmark names, then the flags of the one named (`tap-team --faults crash --runs 3`);
 * a wrong name or flag is said before anything runs, exit code 2.
 */
export async function runBenchmarks(args: string[], opts: { json: boolean }): Promise<number> {
  const at = args.findIndex((a) => a.startsWith('-'));
  const names = at < 0 ? args : args.slice(0, at);
  const argv = at < 0 ? [] : args.slice(at);
  const wanted = names.length ? names : Object.keys(BENCHES).filter((n) => !NAMED_ONLY.has(n));
  const unknown = wanted.filter((n) => !(n in BENCHES));
  if (unknown.length) {
    console.error(
      `chimney bench: unknown benchmark ${unknown.join(', ')} (have: ${Object.keys(BENCHES).join(', ')})`,
    );
    return 2;
  }
  let flags: Record<string, unknown> = {};
  if (argv.length) {
    const parse = FLAGS[wanted[0]!];
    if (wanted.length !== 1 || !parse) {
      console.error(
        `chimney bench: flags go to one benchmark that takes them (${Object.keys(FLAGS).join(', ')}): ${argv.join(' ')}`,
      );
      return 2;
    }
    try {
      flags = parse(argv) as Record<string, unknown>;
    } catch (e) {
      const err = e as Error & { code?: string };
      if (err.code === 'commander.helpDisplayed') return 0;
      console.error(`chimney bench ${wanted[0]}: ${err.message}`);
      return 2;
    }
  }
  const results: Record<string, unknown> = {};
  let code = 0;
  for (const name of wanted) {
    const b = BENCHES[name]!;
    if (!opts.json) console.log(`# ${name}: ${b.about}`);
    const r = await b.run(flags);
    results[name] = r;
    if (!opts.json) console.log(b.print(r));
    const broken = BROKEN[name]?.(r) ?? '';
    if (broken) {
      console.error(`chimney bench: ${broken}`);
      code = 1;
    }
  }
  if (opts.json) console.log(JSON.stringify(wanted.length === 1 ? results[wanted[0]!] : results));
  return code;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const json = args.includes('--json');
  process.exitCode = await runBenchmarks(
    args.filter((a) => a !== '--json'),
    { json },
  );
}
