/**
 * WorkerNics on threads (the simulator on wall-clock time): offload, move and upload of 10,000
 * established connections, and throughput over two WorkerNics against the host stack alone.
 *
 *   npx tsx bench/offload-worker.ts [--json] [--connections N] [--runs N] [--ipv6] [--cpu]
 *   npm run bench -- offload-worker [the same flags]
 *
 * `--cpu`: the runs also move the connections back (n1 to n0) before the upload, and say what each
 * verb of every connection cost each thread in CPU (schedstat of every thread of this process,
 * read before a verb's first batch and after its last): the main thread, each NIC's worker (named
 * after its NIC), the others (V8's platform threads, libuv's, tsx's loader); the median of the
 * runs, per thread. CHIMNEY_BENCH_CONNS / CHIMNEY_BENCH_RUNS are the flags' defaults;
 * CHIMNEY_BENCH_CODEC=1 moves every state through the codec, CHIMNEY_BENCH_PROD=1 prods what the
 * moves install.
 */
import { once } from 'node:events';
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { intIn } from '../src/cli/options.ts';
import { SimNetwork } from '../src/sim/sim-network.ts';
import type { TcpSocket } from '../src/socket/tcp-socket.ts';
import { isOffloadable } from '../src/state/validate.ts';
import { type ThreadTimes, threadsBetween, threadTimes } from '../test/interop/tap-load.ts';
import { QUIET_IPV6 } from '../test/nic/worker-helpers.ts';
import { benchMain, medianOf, parseBenchFlags } from './args.ts';
import {
  openConnections,
  type TransferFigures,
  timeTransfers,
  type Verb,
  type WholeFigures,
} from './offload.ts';
import { benchWorkerHost } from './worker-host.ts';

/** CPU ms one verb of every connection cost each group of threads (see RunThreads). */
export interface VerbCpu {
  main: number;
  /** By NIC id: each NIC's worker thread. */
  workers: Record<string, number>;
  /** The process's other threads: V8's platform threads, libuv's pool, tsx's loader. */
  other: number;
}

/** Reads every thread's CPU around each verb; `result` is the median of the runs per verb. */
function verbCpuMeter(nics: string[]) {
  const runs: Partial<Record<Verb, VerbCpu[]>> = {};
  let start: ThreadTimes = new Map();
  return {
    around(verb: Verb, _run: number, end: boolean): void {
      const now = threadTimes(process.pid, 0, []);
      if (!end) {
        start = now;
        return;
      }
      const t = threadsBetween(start, now, process.pid, nics);
      const workers: Record<string, number> = {};
      for (const n of nics) workers[n] = t.nics[n]?.cpuMs ?? 0;
      (runs[verb] ??= []).push({ main: t.serveMain.cpuMs, workers, other: t.serveOther.cpuMs });
    },
    result(): Partial<Record<Verb, VerbCpu>> {
      const out: Partial<Record<Verb, VerbCpu>> = {};
      for (const [v, l] of Object.entries(runs)) out[v as Verb] = medianOf(l);
      return out;
    },
  };
}

export interface WorkerOffloadBenchResult {
  connections: number;
  runs: number;
  nic: 'worker';
  /** How the states crossed: transfer records in shared memory, or the codec (`records: false`). */
  states: 'records' | 'codec';
  /** The family of the timed connections (`--ipv6`: all IPv6). */
  family: 4 | 6;
  /** Whether the timed moves prodded what they installed, as a failover's do (`CHIMNEY_BENCH_PROD=1`). */
  prod: boolean;
  /**
   * Connections the two WorkerNics took as records (read at once, or taken unbuilt), and those that
   * fell back to the codec.
   */
  recordsTaken: number;
  recordFallbacks: number;
  offload: TransferFigures;
  move: TransferFigures;
  /** With `cpu`: the move from the second WorkerNic back to the first, before the upload. */
  back?: TransferFigures;
  upload: TransferFigures;
  /**
   * Each verb of every connection in one call (after each run's batches; one sample per run):
   * what a move of them all costs with the manager's parts in flight together, where the
   * batches above each wait for the one before.
   */
  whole: Partial<Record<Verb, WholeFigures>>;
  /**
   * Every connection moved in one call, once, before the runs, to the WorkerNic that has never
   * held them (a failover's case); its reference is `whole.move`, the same move to a warm worker.
   */
  firstMoveMs: number;
  /** With `cpu`: each verb's CPU by thread, ms per verb of every connection (median of the runs). */
  cpu?: Partial<Record<Verb, VerbCpu>>;
  /** Records read into pooled states (TransferRecord.readInto) during the timed transfers: by the host, by the workers. */
  pooled: { host: number; workers: number };
  /**
   * Four-tuple table entries made over the run's transfers (warm-up included): by the WorkerNics'
   * tables on the host, and by the workers' (four-tuple table, slots, pooled states). With spares,
   * only a connection's first visit to a worker makes any.
   */
  tableEntries: { host: number; workers: number };
  throughput: {
    connections: number;
    bytesEach: number;
    hostMbps: number;
    workersMbps: number;
    ratio: number;
  };
}

/** Bytes from every host socket to the peer, until the peer has read them all; wall-clock ms. */
async function pump(sockets: TcpSocket[], received: () => number, bytes: number): Promise<number> {
  const chunk = Buffer.alloc(64 * 1024, 0x5a);
  const t = performance.now();
  await Promise.all(
    sockets.map(async (s) => {
      for (let off = 0; off < bytes; off += chunk.length) {
        if (!s.write(chunk.subarray(0, Math.min(chunk.length, bytes - off)))) await once(s, 'drain');
      }
    }),
  );
  while (received() < sockets.length * bytes) await new Promise((r) => setTimeout(r, 1));
  return performance.now() - t;
}

/**
 * WorkerNics on real threads (the simulated network on wall-clock time): time to offload
 * `connections` established connections to one WorkerNic, move them to a second and upload them
 * back, `runs` times; then the aggregate throughput of `streams` connections run by the host stack
 * alone against the same connections spread over the two WorkerNics, in the same run.
 */
export async function benchOffloadWorker(
  opts: {
    connections?: number;
    runs?: number;
    streams?: number;
    bytesEach?: number;
    records?: boolean;
    ipv6?: boolean;
    prod?: boolean;
    /** Move back too, and read each verb's CPU by thread. */
    cpu?: boolean;
  } = {},
): Promise<WorkerOffloadBenchResult> {
  const connections = opts.connections ?? 10_000;
  const runs = opts.runs ?? 5;
  const streams = opts.streams ?? 8;
  const bytesEach = opts.bytesEach ?? 16 * 1024 * 1024;
  const net = new SimNetwork({ seed: 1, virtualTime: false });
  const ipv6 = opts.ipv6 === true;
  const wh = benchWorkerHost(net, { capacity: connections + streams, ipv6 });
  const records = opts.records ?? true;
  for (const n of wh.nics) n.useRecords = records;
  const peer = net.addHost(
    ipv6 ? { ip: '10.0.0.2/24', ip6: 'fd00::2/64', ipv6: QUIET_IPV6 } : { ip: '10.0.0.2/24' },
  );
  await Promise.all(wh.nics.map((n) => n.ready()));
  let received = 0;
  peer
    .createServer((s) => {
      s.on('data', (d: Buffer) => {
        received += d.length;
      });
      s.on('error', () => {});
    })
    .listen(80);
  await wh.host.ping('10.0.0.2');
  const sockets = await openConnections(wh.host, net, connections, 5, ipv6 ? 'fd00::2' : '10.0.0.2');
  // On wall-clock time under load a handshake now and then fails; time the ones that stand.
  const established = [...wh.stack.tcp.connections()].filter((c) => isOffloadable(c.state)).length;
  const prod = opts.prod === true;
  const meter = opts.cpu ? verbCpuMeter(wh.nics.map((n) => n.id)) : null;
  const times = await timeTransfers(wh.offload, wh.nics[0]!, wh.nics[1]!, established, runs, prod, {
    back: meter !== null,
    around: meter?.around,
    whole: true,
    first: true,
  });
  const counts = await Promise.all(wh.nics.map((n) => n.counters()));
  const sum = (k: string) => counts.reduce((n, c) => n + (c[k] ?? 0), 0);
  const pooled = {
    host: wh.nics.reduce((a, n) => a + n.pooledReads, 0),
    workers: sum('nic.initiate.pooled'),
  };
  const tableEntries = {
    host: wh.nics.reduce((a, n) => a + n.tableEntriesMade, 0),
    workers: sum('nic.tables.entries-made'),
  };
  for (const s of sockets) s.destroy();
  await net.sleep(50);

  const bulk: TcpSocket[] = [];
  for (let i = 0; i < streams; i++) {
    const s = wh.host.connect({ port: 80, host: '10.0.0.2' });
    s.on('error', () => {});
    bulk.push(s);
  }
  await Promise.all(bulk.map((s) => once(s, 'connect')));
  received = 0;
  const hostMs = await pump(bulk, () => received, bytesEach);
  const keys = bulk.map((s) => {
    const c = s.connection!;
    return { localIp: c.localIp, localPort: c.localPort, remoteIp: c.remoteIp, remotePort: c.remotePort };
  });
  await wh.offload.offload(
    keys.filter((_, i) => i % 2 === 0),
    wh.nics[0],
  );
  await wh.offload.offload(
    keys.filter((_, i) => i % 2 === 1),
    wh.nics[1],
  );
  received = 0;
  const workerMs = await pump(bulk, () => received, bytesEach);
  const total = streams * bytesEach * 8;
  const hostMbps = +(total / hostMs / 1000).toFixed(1);
  const workersMbps = +(total / workerMs / 1000).toFixed(1);
  wh.close();
  net.close();
  return {
    connections: established,
    runs,
    nic: 'worker',
    states: records ? 'records' : 'codec',
    family: ipv6 ? 6 : 4,
    prod,
    // Read at the take, or taken unbuilt (their records read at a first touch, or never).
    recordsTaken: sum('nic.initiate.records') + sum('nic.initiate.unbuilt'),
    recordFallbacks: sum('nic.worker.record-fallbacks') + sum('nic.terminate.record-fallbacks'),
    ...times,
    whole: times.whole ?? {},
    firstMoveMs: times.firstMoveMs ?? 0,
    ...(meter ? { cpu: meter.result() } : {}),
    pooled,
    tableEntries,
    throughput: {
      connections: streams,
      bytesEach,
      hostMbps,
      workersMbps,
      ratio: +(workersMbps / hostMbps).toFixed(2),
    },
  };
}

/** The benchmark's flags (see the header); throws commander's error on a wrong one. */
export function parseOffloadWorkerFlags(argv: readonly string[]): {
  connections?: number;
  runs?: number;
  ipv6?: boolean;
  cpu?: boolean;
  json?: boolean;
} {
  return parseBenchFlags(
    new Command('offload-worker')
      .option('--connections <n>', 'established connections to move', intIn(1, 1_000_000))
      .option('--runs <n>', 'rounds of offload, move, upload', intIn(1, 1000))
      .option('--ipv6', 'the timed connections are IPv6 ones (the throughput part stays IPv4)')
      .option('--cpu', "move back too, and each verb's CPU by thread"),
    argv,
  );
}

export function formatOffloadWorker(r: WorkerOffloadBenchResult): string {
  const lines: string[] = [];
  for (const k of ['offload', 'move', 'back', 'upload'] as const) {
    const f = r[k];
    if (!f) continue;
    const c = r.cpu?.[k];
    const cpu = c
      ? `; CPU per verb (median of ${r.runs}): main ${c.main} ms, ${Object.entries(c.workers)
          .map(([n, v]) => `${n} ${v} ms`)
          .join(', ')}, other ${c.other} ms`
      : '';
    lines.push(
      `${k.padEnd(7)} ${r.connections} IPv${r.family} connections (WorkerNic, ${r.states}): all in ${f.totalMs.toFixed(1)} ms (median run), per batch of ${f.batch} p50 ${f.p50Ms.toFixed(2)} ms, p99 ${f.p99Ms.toFixed(2)} ms${cpu}`,
    );
  }
  for (const [k, f] of Object.entries(r.whole)) {
    lines.push(
      `${k.padEnd(7)} all ${r.connections} in one call: p50 ${f.p50Ms.toFixed(1)} ms, p99 ${f.p99Ms.toFixed(1)} ms (${f.samples} calls)`,
    );
  }
  lines.push(
    `first   all ${r.connections} in one call to the WorkerNic that never held them: ${r.firstMoveMs.toFixed(1)} ms (once; against move's p50 above)`,
  );
  const t = r.throughput;
  lines.push(
    `${t.connections} connections × ${t.bytesEach >> 20} MiB: host stack alone ${t.hostMbps} Mbit/s, over two WorkerNics ${t.workersMbps} Mbit/s (×${t.ratio})`,
  );
  return lines.join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await benchMain(parseOffloadWorkerFlags, async (o) => {
    const r = await benchOffloadWorker({
      connections: o.connections ?? Number(process.env.CHIMNEY_BENCH_CONNS ?? 10_000),
      runs: o.runs ?? Number(process.env.CHIMNEY_BENCH_RUNS ?? 5),
      records: process.env.CHIMNEY_BENCH_CODEC !== '1',
      ipv6: o.ipv6 === true,
      prod: process.env.CHIMNEY_BENCH_PROD === '1',
      cpu: o.cpu === true,
    });
    console.log(o.json ? JSON.stringify(r) : formatOffloadWorker(r));
  });
  process.exit(process.exitCode ?? 0);
}
