/**
 * Memory under connection churn (issue 10 item 1: a server that runs for hours). Each cycle opens
 * `--connections` connections from a host with two WorkerNics to a peer on the simulator (real
 * time, no root), writes `--bytes` on each, offloads them all to the first NIC, moves them to the
 * second and back in batches of 100, closes them (`end`, or `destroy`: a reset) and waits for
 * their sockets to close. Each run is a process of its own (its memory is the figure), and
 * reports the process's RSS, the main thread's heap, `external` and `arrayBuffers` (every
 * SharedArrayBuffer alive in any thread of the process is counted there, as Node allocated it),
 * sampled every 100 ms: at the start, the peak, and the end; each worker's JS heap where the
 * build reports it; the connection slabs the host made and those whose host object was
 * collected, where the build counts them. Nothing forces a garbage collection but the host's
 * before the cycles, for its bytes per connection (`perConn`).
 *
 *   npx tsx bench/churn.ts [--json] [--cycles N] [--connections N] [--bytes N] [--close end|destroy]
 *                          [--ref <checkout>] [--ref-cycles N] [--pairs N] [--max-s S]
 *   npm run bench -- churn [the same flags]
 *
 * The reference, in the same run and alternated with this checkout's runs (reference first in
 * each pair): with `--ref`, the same churn on another checkout's build (its modules, this file's
 * loop); without it, the same churn on this checkout's host stack alone (nothing offloaded).
 * `--ref-cycles` runs the reference for fewer cycles: a long run's plateau against a reference
 * that shows where the same cycles stood, without doubling the run's time.
 */
import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Command } from 'commander';
import { intIn } from '../src/cli/options.ts';
import { BENCH_DEAD_AFTER_MS, benchMain, parseBenchFlags } from './args.ts';

export interface ChurnOptions {
  cycles: number;
  connections: number;
  bytes: number;
  close: 'end' | 'destroy';
  /** Another checkout whose build is the reference (its src/ and test/nic/worker-helpers.ts). */
  ref?: string;
  /** Cycles of each reference run, if not `cycles`. */
  refCycles?: number;
  pairs: number;
  /** Each run stops after the cycle that ends past this many seconds. */
  maxS: number;
}

/** Memory of the process in MiB, as `process.memoryUsage()` reads it. */
export interface ChurnMemory {
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

/** One run: one process, one build, one way (`workers`: offloaded and moved; `host`: the host alone). */
export interface ChurnRun {
  root: string;
  mode: 'workers' | 'host';
  cycles: number;
  seconds: number;
  start: ChurnMemory;
  peak: ChurnMemory;
  end: ChurnMemory;
  /**
   * After each cycle's close: RSS and arrayBuffers, MiB; the host's objects of the buffers it
   * handed to workers still alive (made less collected: in use or awaiting its collector), and
   * each worker's alive (MiB, `nic.slabs.alive-bytes`), and of those how many it holds for the
   * host (`nic.slabs.held`: the host's object of the buffer not yet collected), where the build
   * counts them (else empty).
   */
  perCycle: {
    rss: number[];
    arrayBuffers: number[];
    hostSlabs: number[];
    workerSlabsMiB: number[][];
    workerSlabsHeld: number[][];
  };
  /** Each worker's JS heap used at the end, MiB (null where the build does not report it). */
  workerHeap: (number | null)[];
  /** Connection slabs the host made, and those whose host object was collected (null: not counted by that build). */
  slabsMade: number | null;
  slabsGone: number | null;
  /** Times each worker showed its collector a slab's worth of buffers the host let go (null: not counted). */
  workerWeighed: (number | null)[];
  /** Times the host showed its collector a slab's worth of buffers it numbered (null: not counted). */
  hostWeighed: number | null;
  /**
   * At the end, each worker's connections in TIME_WAIT still holding their shared block, and those
   * of them with bytes unread (null: not counted by that build).
   */
  timeWaitBlocks: (number | null)[];
  timeWaitUnread: (number | null)[];
  /** Connections that did not open, or did not close, summed over the cycles. */
  failedOpen: number;
  unclosed: number;
  /**
   * Bytes per connection, before the cycles (nothing else alive yet: no TIME_WAIT of an earlier
   * cycle): `--connections` opened and offloaded to the first NIC, the memory then against that
   * before they opened, then reset. The host's heap after a forced full collection (before
   * `start` is read, so no figure above is touched but the slabs made); the first worker's heap
   * as its counter reads it, no collection forced there: the garbage of their install counts
   * too, a bound from above. Null where none opened.
   */
  perConn: { host: number; worker: number | null } | null;
}

export interface ChurnResult {
  options: ChurnOptions;
  /** Each pair's reference run, then this checkout's, in the order they ran. */
  pairs: { ref: ChurnRun; branch: ChurnRun; load: [number, number] }[];
}

const HERE = fileURLToPath(import.meta.url);
const THIS_ROOT = resolve(import.meta.dirname, '..');
const PORT0 = 1000;
const PORTS = 64;
const MB = (x: number) => Math.round(x / 2 ** 20);

/** One churn run in this process: the child's side (see runChild). */
async function churnHere(root: string, mode: 'workers' | 'host', o: ChurnOptions): Promise<ChurnRun> {
  const mod = (p: string) => import(pathToFileURL(resolve(root, p)).href);
  const { SimNetwork } = await mod('src/sim/sim-network.ts');
  const { addWorkerHost } = await mod('test/nic/worker-helpers.ts');
  const hard = await mod('src/nic/hard-state.ts');
  const blocks = await mod('src/nic/worker/conn-blocks.ts');
  const net = new SimNetwork({ seed: 1, virtualTime: false });
  // addWorkerHost of the tree measured (a reference may predate bench/worker-host.ts), with the
  // benches' deadline: memory is the figure, not failover.
  const wh = addWorkerHost(net, { capacity: o.connections + 10, deadAfterMs: BENCH_DEAD_AFTER_MS });
  const peer = net.addHost({ ip: '10.0.0.2/24' });
  await Promise.all(wh.nics.map((n: { ready(): Promise<void> }) => n.ready()));
  // A port per cycle, of PORTS in turn: a cycle's four-tuples wait in TIME_WAIT (60 s) after its
  // close, and a new connection on the same ports would be refused meanwhile.
  for (let p = 0; p < PORTS; p++)
    peer
      .createServer((s: import('../src/socket/tcp-socket.ts').TcpSocket) => {
        s.on('data', () => {});
        s.on('error', () => {});
        s.on('end', () => s.end());
      })
      .listen(PORT0 + p);
  await wh.host.ping('10.0.0.2');
  const mem = (): ChurnMemory => {
    const m = process.memoryUsage();
    return {
      rss: MB(m.rss),
      heapUsed: MB(m.heapUsed),
      external: MB(m.external),
      arrayBuffers: MB(m.arrayBuffers),
    };
  };
  const counters = async () =>
    (await Promise.all(
      wh.nics.map((n: { counters(): Promise<Record<string, number>> }) => n.counters()),
    )) as Record<string, number>[];
  const perConn = mode === 'workers' ? await bytesPerConn() : null;
  const start = mem();
  const peak = { ...start };
  const sample = () => {
    const m = mem();
    for (const k of Object.keys(peak) as (keyof ChurnMemory)[]) peak[k] = Math.max(peak[k], m[k]);
  };
  const timer = setInterval(sample, 100);
  const perCycle = {
    rss: [] as number[],
    arrayBuffers: [] as number[],
    hostSlabs: [] as number[],
    workerSlabsMiB: [] as number[][],
    workerSlabsHeld: [] as number[][],
  };
  const counted = typeof hard.connSlabsMade === 'function' && typeof blocks.slabsGoneCount === 'function';
  const t0 = performance.now();
  let failedOpen = 0;
  let unclosed = 0;
  let cycles = 0;
  const payload = Buffer.alloc(o.bytes, 1);
  while (cycles < o.cycles && (performance.now() - t0) / 1000 < o.maxS) {
    const sockets: import('../src/socket/tcp-socket.ts').TcpSocket[] = [];
    for (let i = 0; i < o.connections; i++) {
      const s = wh.host.connect({
        port: PORT0 + (cycles % PORTS),
        host: '10.0.0.2',
        tcp: { sndBufSize: 16384, rcvBufSize: 16384 },
      });
      s.on('error', () => {});
      sockets.push(s);
      if (i % 200 === 199) await net.sleep(5);
    }
    for (let i = 0; i < 500 && sockets.some((s) => s.connecting); i++) await net.sleep(10);
    const open = sockets.filter((s) => !s.connecting && !s.destroyed);
    failedOpen += o.connections - open.length;
    for (const s of open) s.write(payload);
    await net.sleep(100);
    if (mode === 'workers') {
      await wh.offload.offload('all', wh.nics[0]);
      const keys = wh.offload.keysOn(wh.nics[0]);
      for (let i = 0; i < keys.length; i += 100)
        await wh.offload.move(keys.slice(i, i + 100), wh.nics[0], wh.nics[1]);
      for (let i = 0; i < keys.length; i += 100)
        await wh.offload.move(keys.slice(i, i + 100), wh.nics[1], wh.nics[0]);
    }
    const closed = sockets.map((s) =>
      s.destroyed ? null : new Promise<void>((r) => s.once('close', () => r())),
    );
    for (const s of sockets) {
      if (o.close === 'destroy') s.destroy();
      else s.end();
    }
    let left = closed.filter((p) => p !== null).length;
    for (const p of closed) void p?.then(() => left--);
    for (let i = 0; i < 300 && left > 0; i++) await net.sleep(10);
    unclosed += left;
    cycles++;
    const m = mem();
    sample();
    perCycle.rss.push(m.rss);
    perCycle.arrayBuffers.push(m.arrayBuffers);
    if (counted)
      perCycle.hostSlabs.push((hard.connSlabsMade() as number) - (blocks.slabsGoneCount() as number));
    const c = await counters();
    if (c.every((x) => x['nic.slabs.alive-bytes'] !== undefined)) {
      perCycle.workerSlabsMiB.push(c.map((x) => MB(x['nic.slabs.alive-bytes']!)));
      perCycle.workerSlabsHeld.push(c.map((x) => x['nic.slabs.held'] ?? 0));
    }
  }
  clearInterval(timer);
  const last = await counters();
  const made = typeof hard.connSlabsMade === 'function' ? (hard.connSlabsMade() as number) : null;
  const gone = typeof blocks.slabsGoneCount === 'function' ? (blocks.slabsGoneCount() as number) : null;
  return {
    root,
    mode,
    cycles,
    seconds: Math.round((performance.now() - t0) / 100) / 10,
    start,
    peak,
    end: mem(),
    perCycle,
    workerHeap: last.map((c) => (c['nic.mem.heap-used'] === undefined ? null : MB(c['nic.mem.heap-used']))),
    slabsMade: made,
    slabsGone: gone,
    workerWeighed: last.map((c) => c['nic.slabs.weighed'] ?? null),
    hostWeighed:
      typeof blocks.numberedWeighedCount === 'function' ? (blocks.numberedWeighedCount() as number) : null,
    timeWaitBlocks: last.map((c) => c['nic.time-wait.blocks'] ?? null),
    timeWaitUnread: last.map((c) => c['nic.time-wait.unread'] ?? null),
    failedOpen,
    unclosed,
    perConn,
  };

  async function bytesPerConn(): Promise<ChurnRun['perConn']> {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const heaps = async () => {
      gc();
      gc();
      const w = (await counters())[0]!['nic.mem.heap-used'];
      return { host: process.memoryUsage().heapUsed, worker: w ?? null };
    };
    const before = await heaps();
    const sockets: import('../src/socket/tcp-socket.ts').TcpSocket[] = [];
    for (let i = 0; i < o.connections; i++) {
      const s = wh.host.connect({ port: PORT0 + PORTS - 1, host: '10.0.0.2' });
      s.on('error', () => {});
      sockets.push(s);
      if (i % 200 === 199) await net.sleep(5);
    }
    for (let i = 0; i < 500 && sockets.some((s) => s.connecting); i++) await net.sleep(10);
    const n = sockets.filter((s) => !s.connecting && !s.destroyed).length;
    await wh.offload.offload('all', wh.nics[0]);
    await net.sleep(200);
    const after = await heaps();
    for (const s of sockets) s.destroy();
    await net.sleep(500);
    if (n === 0) return null;
    return {
      host: Math.round((after.host - before.host) / n),
      worker:
        after.worker === null || before.worker === null
          ? null
          : Math.round((after.worker - before.worker) / n),
    };
  }
}

/** One run in a process of its own (its memory is the figure): this file, `--child`. */
function runChild(root: string, mode: 'workers' | 'host', o: ChurnOptions): Promise<ChurnRun> {
  const args = [...process.execArgv, HERE, '--child', root, mode, JSON.stringify({ ...o, ref: undefined })];
  return new Promise((res, rej) => {
    execFile(process.execPath, args, { cwd: THIS_ROOT, maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
      if (err) return rej(new Error(`churn run (${root}, ${mode}) failed: ${err.message}\n${stderr}`));
      const line = stdout.trim().split('\n').at(-1) ?? '';
      res(JSON.parse(line) as ChurnRun);
    });
  });
}

const load1 = async (): Promise<number> => (await import('node:os')).loadavg()[0]!;

export async function benchChurn(o: ChurnOptions, log: (l: string) => void = () => {}): Promise<ChurnResult> {
  const pairs: ChurnResult['pairs'] = [];
  for (let p = 0; p < o.pairs; p++) {
    const l0 = Math.round((await load1()) * 10) / 10;
    const ro = o.refCycles === undefined ? o : { ...o, cycles: o.refCycles };
    const ref = o.ref ? await runChild(resolve(o.ref), 'workers', ro) : await runChild(THIS_ROOT, 'host', ro);
    log(`pair ${p + 1} reference: ${line(ref)}`);
    const l1 = Math.round((await load1()) * 10) / 10;
    const branch = await runChild(THIS_ROOT, 'workers', o);
    log(`pair ${p + 1} this build: ${line(branch)}`);
    pairs.push({ ref, branch, load: [l0, l1] });
  }
  return { options: o, pairs };
}

function line(r: ChurnRun): string {
  const m = (x: ChurnMemory) => `${x.rss} / ${x.arrayBuffers} / ${x.heapUsed}`;
  return `${r.mode} ${r.root}: ${r.cycles} cycles in ${r.seconds} s; RSS / arrayBuffers / heap MiB: start ${m(r.start)}, peak ${m(r.peak)}, end ${m(r.end)}; workers' heaps ${r.workerHeap.join(', ')} MiB; slabs made ${r.slabsMade ?? '-'}, host objects collected ${r.slabsGone ?? '-'}; slabs' worth weighed by the workers ${r.workerWeighed.join(', ')}, by the host ${r.hostWeighed ?? '-'}; host slab objects alive after each cycle ${r.perCycle.hostSlabs.join(' ') || '-'}; workers' slab objects alive at the end ${r.perCycle.workerSlabsMiB.at(-1)?.join(', ') ?? '-'} MiB (held for the host ${r.perCycle.workerSlabsHeld?.at(-1)?.join(', ') ?? '-'}); TIME_WAIT holding blocks ${r.timeWaitBlocks.join(', ')} (unread ${r.timeWaitUnread.join(', ')}); failed opens ${r.failedOpen}, unclosed ${r.unclosed}; bytes per connection, host ${r.perConn?.host ?? '-'}, worker ${r.perConn?.worker ?? '-'}`;
}

export function formatChurn(r: ChurnResult): string {
  const o = r.options;
  const out = [
    `${o.cycles} cycles${o.refCycles === undefined ? '' : ` (the reference ${o.refCycles})`} (at most ${o.maxS} s) of ${o.connections} connections, ${o.bytes} bytes each, closed by ${o.close}; reference: ${o.ref ?? 'the host stack alone, this build'}`,
  ];
  r.pairs.forEach((p, i) => {
    out.push(`pair ${i + 1} (load ${p.load[0]} / ${p.load[1]})`);
    out.push(`  reference   ${line(p.ref)}`);
    out.push(`  this build  ${line(p.branch)}`);
  });
  return out.join('\n');
}

export function parseChurnFlags(argv: readonly string[]): ChurnOptions & { json?: boolean } {
  const f = parseBenchFlags<{
    cycles: number;
    connections: number;
    bytes: number;
    close: string;
    ref?: string;
    refCycles?: number;
    pairs: number;
    maxS: number;
  }>(
    new Command('churn')
      .option('--cycles <n>', 'cycles per run', intIn(1, 100_000), 30)
      .option('--connections <n>', 'connections per cycle', intIn(1, 50_000), 2000)
      .option('--bytes <n>', 'bytes written on each connection', intIn(0, 1 << 20), 2000)
      .option('--close <how>', 'end (FIN) or destroy (RST)', 'end')
      .option('--ref <checkout>', "another checkout's build as the reference, alternated")
      .option('--ref-cycles <n>', 'cycles per reference run (default: --cycles)', intIn(1, 100_000))
      .option('--pairs <n>', 'reference and this build, alternated, this many times', intIn(1, 100), 1)
      .option('--max-s <s>', 'stop a run after the cycle that ends past this', intIn(1, 86_400), 600),
    argv,
  );
  if (f.close !== 'end' && f.close !== 'destroy') throw new Error(`--close: end or destroy, not ${f.close}`);
  return { ...f, close: f.close };
}

if (process.argv[2] === '--child') {
  const [root, mode, opts] = process.argv.slice(3) as [string, 'workers' | 'host', string];
  const r = await churnHere(root, mode, JSON.parse(opts) as ChurnOptions);
  console.log(JSON.stringify(r));
  process.exit(0);
} else if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await benchMain(parseChurnFlags, async (o) => {
    const r = await benchChurn(o, (l) => console.error(l));
    console.log(o.json ? JSON.stringify(r) : formatChurn(r));
  });
}
