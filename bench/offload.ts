import { SimNetwork } from '../src/sim/sim-network.ts';

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

function pct(xs: number[]): Percentiles {
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
  const sockets = [];
  for (let i = 0; i < connections; i++) {
    const s = host.connect({ port: 80, host: '10.0.0.2', tcp: { sndBufSize: 16384, rcvBufSize: 16384 } });
    s.on('error', () => {});
    sockets.push(s);
    if (i % 200 === 199) await net.sleep(1);
  }
  while (sockets.some((s) => s.connecting)) await net.sleep(10);
  const [n0, n1] = host.nics;
  const m = host.offload;
  const off: number[] = [];
  const mv: number[] = [];
  const up: number[] = [];
  for (let r = 0; r < runs; r++) {
    let t = performance.now();
    const a = await m.offload('all', n0);
    off.push(performance.now() - t);
    t = performance.now();
    const b = await m.move('all', n0!, n1!);
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
  net.close();
  return { connections, runs, nic: 'local', offload: pct(off), move: pct(mv), upload: pct(up) };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const n = Number(process.argv[2] ?? 10_000);
  benchOffload({ connections: n, runs: Number(process.argv[3] ?? 5) }).then((r) =>
    console.log(JSON.stringify(r)),
  );
}
