import type { ConnKey, Nic } from '../src/nic/nic.ts';
import type { OffloadManager, TransferReport } from '../src/offload/offload-manager.ts';
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

/** One verb's figures: whole transfers (one per run) and the batches they were made of. */
export interface TransferFigures extends Percentiles {
  /** Connections per batch; p50Ms / p99Ms are over every batch of every run. */
  batch: number;
  /** Batches timed (the p99's sample count). */
  samples: number;
  /** Median over runs of the time to transfer every connection (the sum of its batches). */
  totalMs: number;
}

export interface OffloadBenchResult {
  connections: number;
  runs: number;
  nic: 'local';
  offload: TransferFigures;
  move: TransferFigures;
  upload: TransferFigures;
  /** Each verb of every connection in one call, once a run after its batches. */
  whole?: Partial<Record<Verb, WholeFigures>>;
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
  // Each verb of every connection in one call too (`whole`): the aim (10 ms for 10,000) is for that.
  const times = await timeTransfers(host.offload, host.nics[0]!, host.nics[1]!, connections, runs, false, {
    whole: true,
  });
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
  peer = '10.0.0.2',
): Promise<TcpSocket[]> {
  const sockets: TcpSocket[] = [];
  for (let i = 0; i < n; i++) {
    const s = host.connect({ port: 80, host: peer, tcp: { sndBufSize: 16384, rcvBufSize: 16384 } });
    s.on('error', () => {});
    sockets.push(s);
    if (i % 200 === 199) await net.sleep(pauseMs);
  }
  while (sockets.some((s) => s.connecting)) await net.sleep(10);
  return sockets;
}

/** Connections per timed transfer: percentiles come from many batches, not from a few runs. */
export const BATCH = 100;

/**
 * One verb of every connection asked in a single call, the manager taking it in parts in flight
 * together (as a failover's batch is): one sample per run.
 */
export interface WholeFigures extends Percentiles {
  /** Calls timed (one per run): with few, the p99 is the slowest. */
  samples: number;
}

/** The verbs timed: `back` (n1 to n0 again, before the upload) only when asked. */
export type Verb = 'offload' | 'move' | 'back' | 'upload';

/**
 * Offload every connection to `n0`, move them to `n1` (with `back`, to `n0` again) and upload them
 * back, `runs` times, in batches of BATCH connections, each batch timed; each verb must move every
 * connection. `prod`: the timed moves prod what they install, as a failover's do. `around` is
 * called before a verb's first batch and after its last (outside the batches' times): where a
 * caller reads what the whole verb cost.
 */
export async function timeTransfers(
  m: OffloadManager,
  n0: Nic,
  n1: Nic,
  connections: number,
  runs: number,
  prod = false,
  o: {
    back?: boolean;
    around?: (verb: Verb, run: number, end: boolean) => void;
    /** After each run's batches, each verb of every connection once more in a single call. */
    whole?: boolean;
    /**
     * Before the runs, every connection moved in one call to `n1`, which has never held them (a
     * failover's case): timed apart from `whole`'s moves, which find `n1` warm.
     */
    first?: boolean;
  } = {},
): Promise<{
  offload: TransferFigures;
  move: TransferFigures;
  upload: TransferFigures;
  back?: TransferFigures;
  whole?: Partial<Record<Verb, WholeFigures>>;
  firstMoveMs?: number;
}> {
  // An untimed round trip learns the keys (and warms the code paths).
  const first = await m.offload('all', n0);
  const keys = m.keysOn(n0);
  await m.upload('all');
  if (first.moved.length !== connections || keys.length !== connections) {
    // Which of them, and why: a count alone read as "a connection closed" when the NIC had died
    // with the batch and every connection was rebuilt in the host.
    const why = [...new Set(first.refused.map((r) => `${r.status}: ${r.reason}`))].slice(0, 3);
    throw new Error(
      `warm-up: offloaded ${first.moved.length} of ${connections}, ${keys.length} on the NIC after` +
        (why.length > 0 ? ` (refused: ${why.join('; ')})` : ''),
    );
  }
  const batches: ConnKey[][] = [];
  for (let i = 0; i < keys.length; i += BATCH) batches.push(keys.slice(i, i + BATCH));
  const samples: Record<Verb, number[]> = { offload: [], move: [], back: [], upload: [] };
  const totals: Record<Verb, number[]> = { offload: [], move: [], back: [], upload: [] };
  const timed = async (
    verb: Verb,
    run: number,
    go: (b: ConnKey[]) => Promise<TransferReport>,
  ): Promise<void> => {
    let total = 0;
    let moved = 0;
    const why = new Set<string>();
    o.around?.(verb, run, false);
    for (const b of batches) {
      const t = performance.now();
      const r = await go(b);
      const ms = performance.now() - t;
      moved += r.moved.length;
      refusals(r, why);
      samples[verb].push(ms);
      total += ms;
    }
    o.around?.(verb, run, true);
    if (moved !== connections)
      throw new Error(
        `run ${run}: ${verb} moved ${moved} of ${connections} (refused: ${[...why].join('; ')})`,
      );
    totals[verb].push(total);
  };
  const wholes: Record<Verb, number[]> = { offload: [], move: [], back: [], upload: [] };
  // The batches above wait for each other, so each costs its hops between threads in full; a
  // call with every connection has the manager's parts in flight together.
  const whole = async (verb: Verb, run: number, go: () => Promise<TransferReport>): Promise<void> => {
    const t = performance.now();
    const r = await go();
    wholes[verb].push(performance.now() - t);
    if (r.moved.length !== connections)
      throw new Error(
        `run ${run}: ${verb} of all in one call moved ${r.moved.length} of ${connections} (refused: ${[...refusals(r)].join('; ')})`,
      );
  };
  let firstMoveMs: number | undefined;
  if (o.first) {
    await whole('offload', -1, () => m.offload(keys, n0));
    wholes.offload.pop();
    const t = performance.now();
    const r = await m.move(keys, n0, n1, { prod });
    firstMoveMs = performance.now() - t;
    if (r.moved.length !== connections)
      throw new Error(
        `first move of all in one call moved ${r.moved.length} of ${connections} (refused: ${[...refusals(r)].join('; ')})`,
      );
    await whole('upload', -1, () => m.upload(keys));
    wholes.upload.pop();
  }
  for (let r = 0; r < runs; r++) {
    await timed('offload', r, (b) => m.offload(b, n0));
    await timed('move', r, (b) => m.move(b, n0, n1, { prod }));
    if (o.back) await timed('back', r, (b) => m.move(b, n1, n0, { prod }));
    await timed('upload', r, (b) => m.upload(b));
    if (!o.whole) continue;
    await whole('offload', r, () => m.offload(keys, n0));
    await whole('move', r, () => m.move(keys, n0, n1, { prod }));
    if (o.back) await whole('back', r, () => m.move(keys, n1, n0, { prod }));
    await whole('upload', r, () => m.upload(keys));
  }
  const fig = (verb: Verb): TransferFigures => ({
    ...pct(samples[verb]),
    batch: BATCH,
    samples: samples[verb].length,
    totalMs: pct(totals[verb]).p50Ms,
  });
  return {
    offload: fig('offload'),
    move: fig('move'),
    upload: fig('upload'),
    ...(o.back ? { back: fig('back') } : {}),
    ...(firstMoveMs !== undefined ? { firstMoveMs } : {}),
    ...(o.whole
      ? {
          whole: Object.fromEntries(
            (Object.entries(wholes) as [Verb, number[]][])
              .filter(([, l]) => l.length > 0)
              .map(([v, l]) => [v, { ...pct(l), samples: l.length }]),
          ),
        }
      : {}),
  };
}

/**
 * A report's first few distinct refusals, added to `into`: the error that says a transfer fell
 * short says why (a NIC declared dead, out of capacity, ...).
 */
function refusals(r: TransferReport, into = new Set<string>()): Set<string> {
  for (const f of r.refused) {
    if (into.size >= 3) break;
    into.add(`${f.status}: ${f.reason}`);
  }
  return into;
}
