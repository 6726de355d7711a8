import { once } from 'node:events';
import { pathToFileURL } from 'node:url';
import { SimNetwork } from '../src/sim/sim-network.ts';
import type { TcpSocket } from '../src/socket/tcp-socket.ts';
import { isOffloadable } from '../src/state/validate.ts';
import { addWorkerHost, QUIET_IPV6 } from '../test/nic/worker-helpers.ts';
import { openConnections, type TransferFigures, timeTransfers } from './offload.ts';

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
  upload: TransferFigures;
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
  } = {},
): Promise<WorkerOffloadBenchResult> {
  const connections = opts.connections ?? 10_000;
  const runs = opts.runs ?? 5;
  const streams = opts.streams ?? 8;
  const bytesEach = opts.bytesEach ?? 16 * 1024 * 1024;
  const net = new SimNetwork({ seed: 1, virtualTime: false });
  const ipv6 = opts.ipv6 === true;
  const wh = addWorkerHost(net, { capacity: connections + streams, ipv6 });
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
  const times = await timeTransfers(wh.offload, wh.nics[0]!, wh.nics[1]!, established, runs, prod);
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

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = await benchOffloadWorker({
    connections: Number(process.env.CHIMNEY_BENCH_CONNS ?? 10_000),
    runs: Number(process.env.CHIMNEY_BENCH_RUNS ?? 5),
    // CHIMNEY_BENCH_CODEC=1: every state through the codec, as before transfer records.
    records: process.env.CHIMNEY_BENCH_CODEC !== '1',
    // --ipv6: the timed connections are IPv6 ones (the throughput part stays IPv4).
    ipv6: process.argv.includes('--ipv6'),
    prod: process.env.CHIMNEY_BENCH_PROD === '1',
  });
  if (process.argv.includes('--json')) console.log(JSON.stringify(r));
  else {
    for (const k of ['offload', 'move', 'upload'] as const)
      console.log(
        `${k} ${r.connections} IPv${r.family} connections (WorkerNic, ${r.states}): p50 ${r[k].p50Ms} ms, p99 ${r[k].p99Ms} ms`,
      );
    const t = r.throughput;
    console.log(
      `${t.connections} connections × ${t.bytesEach >> 20} MiB: host stack alone ${t.hostMbps} Mbit/s, over two WorkerNics ${t.workersMbps} Mbit/s (×${t.ratio})`,
    );
  }
  process.exit(0);
}
