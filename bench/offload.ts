import type { Nic } from '../src/nic/nic.ts';
import type { OffloadManager } from '../src/offload/offload-manager.ts';
import { SimNetwork } from '../src/sim/sim-network.ts';
import type { Host } from '../src/socket/host.ts';
import type { TcpSocket } from '../src/socket/tcp-socket.ts';

export interface OffloadBenchOptions {
  connections?: number;
  runs?: number;
  seed?: number;
}

export interface Percentiles {
  p50Ms: number;
  p99Ms: number;
}

export interface OffloadBenchResult {
  connections: number;
  runs: number;
  nic: 'local';
  offload: Percentiles;
  move: Percentiles;
  upload: Percentiles;
}

export function pct(xs: number[]): Percentiles {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  return { p50Ms: at(0.5), p99Ms: at(0.99) };
}

/**
 * Establish `connections` idle connections to a simulated peer, then time (wall clock) offloading
 * all of them to a LocalNic, moving them to a second one and uploading them back, `runs` times.
 */
export async function benchOffload(opts: OffloadBenchOptions = {}): Promise<OffloadBenchResult> {
  const connections = opts.connections ?? 10_000;
  const runs = opts.runs ?? 5;
  const net = new SimNetwork({ seed: opts.seed ?? 1 });
  const host = net.addOffloadHost({ ip: '10.0.0.1/24', nics: 2, nicCapacity: connections });
  const peer = net.addHost({ ip: '10.0.0.2/24' });
  peer.createServer(() => {}).listen(80);
  await host.ping('10.0.0.2');
  await openConnections(host, net, connections, 1);
  const times = await timeTransfers(host.offload, host.nics[0]!, host.nics[1]!, connections, runs);
  net.close();
  return { connections, runs, nic: 'local', ...times };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const n = Number(process.argv[2] ?? 10_000);
  benchOffload({ connections: n, runs: Number(process.argv[3] ?? 5) }).then((r) =>
    console.log(JSON.stringify(r)),
  );
}

/** Open `n` idle connections from `host` to 10.0.0.2:80, pausing every 200 so handshakes drain. */
export async function openConnections(
  host: Host,
  net: SimNetwork,
  n: number,
  pauseMs: number,
): Promise<TcpSocket[]> {
  const sockets: TcpSocket[] = [];
  for (let i = 0; i < n; i++) {
    const s = host.connect({ port: 80, host: '10.0.0.2', tcp: { sndBufSize: 16384, rcvBufSize: 16384 } });
    s.on('error', () => {});
    sockets.push(s);
    if (i % 200 === 199) await net.sleep(pauseMs);
  }
  while (sockets.some((s) => s.connecting)) await net.sleep(10);
  return sockets;
}

/** Time offload-all to `n0`, move-all to `n1` and upload-all, `runs` times; each must move every connection. */
export async function timeTransfers(
  m: OffloadManager,
  n0: Nic,
  n1: Nic,
  connections: number,
  runs: number,
): Promise<{ offload: Percentiles; move: Percentiles; upload: Percentiles }> {
  const off: number[] = [];
  const mv: number[] = [];
  const up: number[] = [];
  for (let r = 0; r < runs; r++) {
    let t = performance.now();
    const a = await m.offload('all', n0);
    off.push(performance.now() - t);
    t = performance.now();
    const b = await m.move('all', n0, n1);
    mv.push(performance.now() - t);
    t = performance.now();
    const c = await m.upload('all');
    up.push(performance.now() - t);
    if (a.moved.length !== connections || b.moved.length !== connections || c.moved.length !== connections) {
      throw new Error(
        `run ${r}: moved ${a.moved.length}/${b.moved.length}/${c.moved.length} of ${connections}`,
      );
    }
  }
  return { offload: pct(off), move: pct(mv), upload: pct(up) };
}
