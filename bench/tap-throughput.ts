/**
 * Throughput over a TAP between Chimney and the Linux kernel's TCP, in both directions, next to
 * the kernel's own TCP between two namespaces over a veth pair, all at MTU 1500 in the same run.
 * Needs root, iproute2, socat, curl and iperf3.
 *
 *   rx  kernel → Chimney: socat in the lab namespace writes `bytes` into Chimney's discard service
 *   tx  Chimney → kernel: curl in the namespace downloads /bytes/<bytes> from Chimney's http
 *       service to /dev/null (in `inproc` mode, socat reads a raw stream instead)
 *   kernel reference: iperf3 between two namespaces over a veth pair (one stream)
 *
 * Then the same three over IPv6 (unless `--no-ipv6`): Chimney's IPv6 address on the same TAP,
 * curl -6 and socat TCP6 in the namespace, iperf3 -6 over the veth pair, all in the same run, so
 * each family's ratio is to the kernel on that family.
 *
 * Chimney runs as `chimney serve` (mode `cli`), or inside this process on the TAP (`inproc`,
 * the TAP opened with offloads), or not at all (`kernel`: a kernel socat peer stands in
 * for Chimney, which checks the harness itself).
 *
 * With `--workers` (mode `cli`), the same transfers run a second time in the same run against
 * `chimney serve --workers`: the TAP belongs to a WorkerNic, and each connection is offloaded to
 * it once accepted (policy `immediate`), so its data path is the worker thread's, with the
 * application's bytes crossing the shared rings. The status socket confirms the offload: every
 * transfer's connection must have been counted offloaded, or the figure would be the host's.
 *
 *   npx tsx bench/tap-throughput.ts [--json] [--bytes N] [--mode cli|inproc|kernel] [--no-ipv6] [--workers]
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { controlRequest } from '../src/cli/control.ts';
import { ipv6Settled } from '../src/cli/tap-host.ts';
import { RealClock } from '../src/core/clock.ts';
import { CryptoRandom } from '../src/core/random.ts';
import { TapLink } from '../src/link/tap-link.ts';
import { Host } from '../src/socket/host.ts';
import { Stack } from '../src/stack/stack.ts';
import { hasTool, Lab, missingPrerequisite, ROOT, type RunResult, type Served } from '../test/interop/lab.ts';

export type TapBenchMode = 'cli' | 'inproc' | 'kernel';

export interface TapThroughputOptions {
  /** Bytes per direction (default 2 GiB; the issue asks for at least 2 GB). */
  bytes?: number;
  /** Bytes for the kernel reference run (default: the same). */
  kernelBytes?: number;
  /** Default `cli` when `chimney serve` exists, else `inproc`. */
  mode?: TapBenchMode;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
  /** Measure IPv6 too, in the same run (default true). */
  ipv6?: boolean;
  /** Mode `cli` only: also measure `chimney serve --workers` in the same run (default false). */
  workers?: boolean;
}

/** One family's figures. */
export interface FamilyThroughput {
  /** kernel → Chimney. */
  rxGbps: number;
  /** Chimney → kernel. */
  txGbps: number;
  /** Kernel TCP over a veth pair between two namespaces, same family. */
  kernelGbps: number;
  rxRatio: number;
  txRatio: number;
  rxSeconds: number;
  txSeconds: number;
  /** Mode `cli`: CPU time of serve's main thread per MB (10^6 bytes) moved, each direction (ms). */
  rxMainMsPerMB?: number;
  txMainMsPerMB?: number;
}

/** The IPv4 figures at the top level (as before IPv6 existed), IPv6 beside them. */
export interface TapThroughputResult extends FamilyThroughput {
  mode: TapBenchMode;
  mtu: number;
  bytes: number;
  kernelTool: string;
  /** The same over IPv6, same run; absent with `ipv6: false`. */
  ipv6?: FamilyThroughput;
  /** `chimney serve --workers` in the same run (option `workers`), each family's ratio to its kernel figure. */
  workers?: FamilyThroughput & { ipv6?: FamilyThroughput; moves: AcceptMoves };
}

/**
 * What the accept-time offloads of `--workers` did with the peer's segments, from serve's counters
 * after its transfers: those the host held while it moved a connection (`tcp.frozen.queued`),
 * those injected at the NIC, those the NIC's link brought an installed connection before its
 * settle and it kept (`nic.rx.settle-held`), and the NIC's PAWS drops (held segments run after a
 * newer resend had set ts.recent: the move's reordering, session 44).
 */
export interface AcceptMoves {
  held: number;
  injected: number;
  settleHeld: number;
  pawsDrops: number;
}

const MTU = 1500;
const SUBNET = 240;
const PORT_DISCARD = 9;
const PORT_HTTP = 80;
const PORT_SOURCE = 5001;
/** The lab segment's IPv6 prefix (fd00:<subnet>::/64) and the kernel reference's. */
const PREFIX6 = `fd00:${SUBNET}::`;
const CHIMNEY6 = `${PREFIX6}2`;
const KERNEL6 = `${PREFIX6}1`;

function gbps(bytes: number, seconds: number): number {
  return seconds > 0 ? Math.round(((bytes * 8) / seconds / 1e9) * 1000) / 1000 : 0;
}

function ratio(a: number, b: number): number {
  return b > 0 ? Math.round((a / b) * 1000) / 1000 : 0;
}

function check(r: RunResult, what: string): RunResult {
  if (r.code !== 0) throw new Error(`${what} failed (${r.code ?? r.signal}): ${r.stderr.slice(-2000)}`);
  return r;
}

function cliExists(): boolean {
  return existsSync(join(ROOT, 'src/cli/serve.ts'));
}

/** The kernel's TCP between two namespaces over a veth pair at MTU 1500, measured by iperf3. */
async function kernelReference(lab: Lab, bytes: number, family: 4 | 6 = 4): Promise<number> {
  const [ipA, ipB, plen] =
    family === 4 ? ['10.9.241.1', '10.9.241.2', '24'] : ['fd00:241::1', 'fd00:241::2', '64'];
  const a = 'chbk-a';
  const b = 'chbk-b';
  const ip = (...args: string[]): void => {
    lab.ip(...args);
  };
  const clean = (): void => {
    for (const ns of [a, b]) {
      try {
        ip('netns', 'del', ns);
      } catch {}
    }
  };
  clean();
  try {
    ip('netns', 'add', a);
    ip('netns', 'add', b);
    ip('-n', a, 'link', 'add', 'kva', 'mtu', String(MTU), 'type', 'veth', 'peer', 'name', 'kvb', 'netns', b);
    ip('-n', b, 'link', 'set', 'kvb', 'mtu', String(MTU));
    // nodad: an address the kernel is still checking cannot be bound for the first second.
    const dad = family === 6 ? ['nodad'] : [];
    ip('-n', a, 'addr', 'add', `${ipA}/${plen}`, 'dev', 'kva', ...dad);
    ip('-n', b, 'addr', 'add', `${ipB}/${plen}`, 'dev', 'kvb', ...dad);
    for (const [ns, dev] of [
      [a, 'kva'],
      [b, 'kvb'],
    ] as const) {
      ip('-n', ns, 'link', 'set', dev, 'up');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
    }
    const server = lab.spawn(['ip', 'netns', 'exec', b, 'iperf3', '-s', '-1', '-B', ipB, '-p', '5201']);
    try {
      await waitFor(async () => {
        const r = await lab.run(['ip', 'netns', 'exec', b, 'ss', '-Hltn', 'sport = :5201'], 5000);
        return r.stdout.trim() !== '';
      }, 10_000);
      const r = check(
        await lab.run(
          ['ip', 'netns', 'exec', a, 'iperf3', '-c', ipB, '-p', '5201', '-n', String(bytes), '-J'],
          120_000,
        ),
        'iperf3',
      );
      const j = JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number } } };
      return Math.round((j.end.sum_received.bits_per_second / 1e9) * 1000) / 1000;
    } finally {
      server.kill('SIGKILL');
    }
  } finally {
    clean();
  }
}

async function waitFor(cond: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (performance.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out after ${timeoutMs} ms`);
}

/**
 * Chimney in this process on the lab's TAP: discard on 9, a raw pattern source on 5001, both
 * families when `v6` (listening on '::', which takes IPv4 too, as Node's does).
 */
async function startInProc(lab: Lab, bytes: number, v6: boolean): Promise<{ close(): void }> {
  const clock = new RealClock();
  const tap = TapLink.open({ name: lab.taps[0]!, create: false, clock });
  const stack = new Stack({ clock, random: new CryptoRandom(), name: 'bench' });
  const ips = [`${lab.chimneyIps[0]}/24`, ...(v6 ? [`${CHIMNEY6}/64`] : [])];
  stack.addInterface(tap, { mac: lab.mac(0), ip: ips });
  await ipv6Settled(stack, 10_000);
  const host = new Host(stack);
  const discard = host.createServer((s) => {
    s.on('data', () => {});
    s.on('error', () => {});
    s.on('end', () => s.end());
  });
  discard.listen(PORT_DISCARD, v6 ? '::' : undefined);
  const block = Buffer.alloc(251 * 256);
  for (let i = 0; i < block.length; i++) block[i] = i % 251;
  // The tool on the kernel side only reads, so the size is fixed here rather than requested.
  const source = host.createServer((s) => {
    s.on('error', () => {});
    s.on('data', () => {});
    let left = bytes;
    const pump = (): void => {
      while (left > 0) {
        const k = Math.min(left, block.length);
        left -= k;
        if (!s.write(block.subarray(0, k))) {
          s.once('drain', pump);
          return;
        }
      }
      s.end();
    };
    pump();
  });
  source.listen(PORT_SOURCE, v6 ? '::' : undefined);
  return {
    close: () => {
      discard.close();
      source.close();
      stack.close();
      tap.close();
    },
  };
}

/**
 * Kernel stand-in for Chimney (harness check): a second namespace on the lab bridge through the
 * TAP's place, with socat discard and pattern source servers.
 */
async function startKernelPeer(lab: Lab, bytes: number, v6: boolean): Promise<{ close(): void }> {
  const ns = 'chbk-peer';
  try {
    lab.ip('netns', 'del', ns);
  } catch {}
  lab.ip('netns', 'add', ns);
  lab.ip(
    'link',
    'add',
    'chbk-pv',
    'mtu',
    String(MTU),
    'type',
    'veth',
    'peer',
    'name',
    'chbk-pvp',
    'netns',
    ns,
  );
  lab.ip('link', 'set', 'chbk-pv', 'master', lab.bridge, 'up');
  lab.ip('-n', ns, 'addr', 'add', `${lab.chimneyIps[0]}/24`, 'dev', 'chbk-pvp');
  if (v6) lab.ip('-n', ns, 'addr', 'add', `${CHIMNEY6}/64`, 'dev', 'chbk-pvp', 'nodad');
  lab.ip('-n', ns, 'link', 'set', 'chbk-pvp', 'up');
  const ex = ['ip', 'netns', 'exec', ns];
  const listen = (port: number): string =>
    v6 ? `TCP6-LISTEN:${port},ipv6only=0,reuseaddr,fork` : `TCP-LISTEN:${port},reuseaddr,fork`;
  const p1 = lab.spawn([...ex, 'socat', '-u', listen(PORT_DISCARD), 'OPEN:/dev/null']);
  const p2 = lab.spawn([
    ...ex,
    'socat',
    '-U',
    '-b',
    '262144',
    listen(PORT_SOURCE),
    `OPEN:/dev/zero,readbytes=${bytes}`,
  ]);
  await waitFor(async () => {
    const r = await lab.run([...ex, 'ss', '-Hltn', `sport = :${PORT_SOURCE}`], 5000);
    return r.stdout.trim() !== '';
  }, 10_000);
  return {
    close: () => {
      p1.kill('SIGKILL');
      p2.kill('SIGKILL');
      try {
        lab.ip('netns', 'del', ns);
      } catch {}
      try {
        lab.ip('link', 'del', 'chbk-pv');
      } catch {}
    },
  };
}

/** Timed transfers of `bytes` each way between the namespace and Chimney at `dst`. */
/** ns on a CPU of the thread `tid` of process `pid` so far (schedstat), or NaN without one. */
function threadCpuNs(pid: number | undefined, tid = pid): number {
  if (pid === undefined) return Number.NaN;
  try {
    return Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
  } catch {
    return Number.NaN;
  }
}

interface Measured {
  rxSeconds: number;
  txSeconds: number;
  /** serve's main thread's CPU over each transfer (NaN in the other modes). */
  rxMainMs: number;
  txMainMs: number;
}

async function measure(
  lab: Lab,
  mode: TapBenchMode,
  dst: string,
  family: 4 | 6,
  bytes: number,
  log: (line: string) => void,
  servePid?: number,
): Promise<Measured> {
  const tcp = family === 4 ? `TCP:${dst}` : `TCP6:[${dst}]`;
  const host = family === 4 ? dst : `[${dst}]`;
  // Warm up the neighbor entry and the path so the timed runs start resolved.
  await lab.sh(`ping -${family} -c 1 -W 2 ${dst} >/dev/null`, 5000);

  log(`rx IPv${family}: kernel → ${mode}, ${bytes} bytes`);
  const cpu0 = threadCpuNs(servePid);
  const rx = check(
    await lab.sh(
      `socat -u -b 262144 OPEN:/dev/zero,readbytes=${bytes} ${tcp}:${PORT_DISCARD},sndbuf=4194304`,
      300_000,
    ),
    `socat → discard (IPv${family})`,
  );
  const cpu1 = threadCpuNs(servePid);
  const rxMainMs = (cpu1 - cpu0) / 1e6;
  log(`tx IPv${family}: ${mode} → kernel, ${bytes} bytes`);
  if (mode === 'cli') {
    const r = check(
      await lab.sh(
        `curl -${family} -sS --fail -o /dev/null -w '%{size_download} %{time_total}' 'http://${host}:${PORT_HTTP}/bytes/${bytes}'`,
        300_000,
      ),
      `curl /bytes (IPv${family})`,
    );
    const [size, secs] = r.stdout.trim().split(' ').map(Number);
    if (size !== bytes) throw new Error(`curl got ${size} of ${bytes} bytes`);
    const txMainMs = (threadCpuNs(servePid) - cpu1) / 1e6;
    return { rxSeconds: rx.ms / 1000, txSeconds: secs!, rxMainMs, txMainMs };
  }
  const r = check(
    await lab.sh(`socat -u -b 262144 ${tcp}:${PORT_SOURCE},rcvbuf=4194304 - | wc -c`, 300_000),
    `socat ← source (IPv${family})`,
  );
  if (Number(r.stdout.trim()) !== bytes) throw new Error(`socat got ${r.stdout.trim()} of ${bytes} bytes`);
  return { rxSeconds: rx.ms / 1000, txSeconds: r.ms / 1000, rxMainMs, txMainMs: Number.NaN };
}

function figures(bytes: number, m: Measured, kernelGbps: number): FamilyThroughput {
  const rxGbps = gbps(bytes, m.rxSeconds);
  const txGbps = gbps(bytes, m.txSeconds);
  const perMB = (ms: number) => Math.round((ms / (bytes / 1e6)) * 1000) / 1000;
  return {
    ...(Number.isFinite(m.rxMainMs) ? { rxMainMsPerMB: perMB(m.rxMainMs) } : {}),
    ...(Number.isFinite(m.txMainMs) ? { txMainMsPerMB: perMB(m.txMainMs) } : {}),
    rxGbps,
    txGbps,
    kernelGbps,
    rxRatio: ratio(rxGbps, kernelGbps),
    txRatio: ratio(txGbps, kernelGbps),
    rxSeconds: Math.round(m.rxSeconds * 1000) / 1000,
    txSeconds: Math.round(m.txSeconds * 1000) / 1000,
  };
}

export async function benchTapThroughput(opts: TapThroughputOptions = {}): Promise<TapThroughputResult> {
  const bytes = opts.bytes ?? 2 ** 31;
  const kernelBytes = opts.kernelBytes ?? bytes;
  const mode: TapBenchMode = opts.mode ?? (cliExists() ? 'cli' : 'inproc');
  const log = opts.log ?? (() => {});
  const v6 = opts.ipv6 !== false;
  const reason = missingPrerequisite(['socat', 'curl', 'iperf3', 'ss']);
  if (reason) throw new Error(`tap throughput benchmark: ${reason}`);
  if (mode === 'cli' && !cliExists())
    throw new Error('tap throughput benchmark: chimney serve does not exist yet');
  if (!hasTool('iperf3')) throw new Error('tap throughput benchmark needs iperf3');
  if (opts.workers && mode !== 'cli') throw new Error('tap throughput benchmark: --workers needs mode cli');
  const controlDir = mkdtempSync(join(tmpdir(), 'chimney-tb-'));

  const lab = new Lab({ tag: 'tb', subnet: SUBNET, taps: 1, mtu: MTU });
  lab.up();
  if (v6) lab.ip('-n', lab.ns, 'addr', 'add', `${KERNEL6}/64`, 'dev', lab.vethPeer, 'nodad');
  let served: Served | null = null;
  let inproc: { close(): void } | null = null;
  try {
    log(`kernel reference: iperf3 over a veth pair, ${kernelBytes} bytes`);
    const kernelGbps = await kernelReference(lab, kernelBytes);
    log(`kernel: ${kernelGbps} Gbit/s`);
    let kernel6 = 0;
    if (v6) {
      kernel6 = await kernelReference(lab, kernelBytes, 6);
      log(`kernel over IPv6: ${kernel6} Gbit/s`);
    }

    const serveExtra = ['--quiet', ...(v6 ? ['--ip', `${CHIMNEY6}/64`] : [])];
    if (mode === 'cli') served = await lab.serve({ services: ['discard:9', 'http:80'], extra: serveExtra });
    else if (mode === 'inproc') inproc = await startInProc(lab, bytes, v6);
    else inproc = await startKernelPeer(lab, bytes, v6);

    const pid = served?.proc.pid;
    const m4 = await measure(lab, mode, lab.chimneyIps[0]!, 4, bytes, log, pid);
    const m6 = v6 ? await measure(lab, mode, CHIMNEY6, 6, bytes, log, pid) : null;

    let workers: TapThroughputResult['workers'];
    if (opts.workers) {
      await served!.stop();
      served = null;
      served = await lab.serve({
        services: ['discard:9', 'http:80'],
        extra: [...serveExtra, '--workers', '--control', join(controlDir, 'control.sock')],
      });
      const control = join(controlDir, 'control.sock');
      // Each family's two transfers are two connections; both must have run on the worker.
      const wl = (l: string) => log(`workers: ${l}`);
      const wpid = served.proc.pid;
      const w4 = await measure(lab, mode, lab.chimneyIps[0]!, 4, bytes, wl, wpid);
      let moves = await expectOffloaded(control, 2);
      const w6 = v6 ? await measure(lab, mode, CHIMNEY6, 6, bytes, wl, wpid) : null;
      if (w6) moves = await expectOffloaded(control, 4);
      workers = {
        ...figures(bytes, w4, kernelGbps),
        ...(w6 ? { ipv6: figures(bytes, w6, kernel6) } : {}),
        moves,
      };
    }
    return {
      mode,
      mtu: MTU,
      bytes,
      ...figures(bytes, m4, kernelGbps),
      kernelTool: 'iperf3 (one stream, two namespaces, veth, MTU 1500)',
      ...(m6 ? { ipv6: figures(bytes, m6, kernel6) } : {}),
      ...(workers ? { workers } : {}),
    };
  } finally {
    if (served) await served.stop();
    inproc?.close();
    await lab.down();
    rmSync(controlDir, { recursive: true, force: true });
  }
}

/**
 * Fails the run unless serve's offload manager has offloaded at least `n` connections: a transfer
 * the host stack kept would be measured as the worker's.
 */
async function expectOffloaded(control: string, n: number): Promise<AcceptMoves> {
  const sets = (await controlRequest(control, { op: 'counters' })) as Record<string, Record<string, number>>;
  let offloaded = 0;
  const moves: AcceptMoves = {
    held: sets.host?.['tcp.frozen.queued'] ?? 0,
    injected: 0,
    settleHeld: 0,
    pawsDrops: 0,
  };
  for (const [name, set] of Object.entries(sets)) {
    if (!name.startsWith('nic:')) continue;
    offloaded += set['nic.initiate.conns'] ?? 0;
    moves.injected += set['nic.rx.injected'] ?? 0;
    moves.settleHeld += set['nic.rx.settle-held'] ?? 0;
    moves.pawsDrops += set['tcp.paws.drops'] ?? 0;
  }
  if (offloaded < n)
    throw new Error(`serve --workers offloaded ${offloaded} connection(s), not the ${n} measured`);
  return moves;
}

function mainCpu(msPerMB: number | undefined): string {
  return msPerMB === undefined ? '' : `, serve's main thread ${msPerMB} ms CPU/MB`;
}

export function formatTapThroughput(r: TapThroughputResult): string {
  const lines = [
    `TAP, MTU ${r.mtu}, ${r.bytes} bytes each way, Chimney as ${r.mode}:`,
    `  kernel → Chimney (rx): ${r.rxGbps} Gbit/s  → ratio ${r.rxRatio}${mainCpu(r.rxMainMsPerMB)}`,
    `  Chimney → kernel (tx): ${r.txGbps} Gbit/s  → ratio ${r.txRatio}${mainCpu(r.txMainMsPerMB)}`,
    `  reference, ${r.kernelTool} (same run): ${r.kernelGbps} Gbit/s`,
  ];
  if (r.ipv6) {
    lines.push(
      `  IPv6 kernel → Chimney (rx): ${r.ipv6.rxGbps} Gbit/s  → ratio ${r.ipv6.rxRatio}`,
      `  IPv6 Chimney → kernel (tx): ${r.ipv6.txGbps} Gbit/s  → ratio ${r.ipv6.txRatio}`,
      `  IPv6 reference, iperf3 -6 over the same kind of veth pair (same run): ${r.ipv6.kernelGbps} Gbit/s`,
    );
  }
  const w = r.workers;
  if (w) {
    lines.push(
      `  serve --workers (offloaded to a WorkerNic), same run, same kernel references:`,
      `    kernel → Chimney (rx): ${w.rxGbps} Gbit/s  → ratio ${w.rxRatio}${mainCpu(w.rxMainMsPerMB)}`,
      `    Chimney → kernel (tx): ${w.txGbps} Gbit/s  → ratio ${w.txRatio}${mainCpu(w.txMainMsPerMB)}`,
    );
    if (w.ipv6)
      lines.push(
        `    IPv6 kernel → Chimney (rx): ${w.ipv6.rxGbps} Gbit/s  → ratio ${w.ipv6.rxRatio}`,
        `    IPv6 Chimney → kernel (tx): ${w.ipv6.txGbps} Gbit/s  → ratio ${w.ipv6.txRatio}`,
      );
    const m = w.moves;
    lines.push(
      `    accept-time moves: ${m.held} segment(s) held by the host, ${m.injected} injected, ` +
        `${m.settleHeld} kept for a settle, ${m.pawsDrops} PAWS drop(s) at the NIC`,
    );
  }
  return lines.join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const json = args.includes('--json');
  const val = (k: string): string | undefined => {
    const i = args.indexOf(k);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const r = await benchTapThroughput({
    bytes: val('--bytes') ? Number(val('--bytes')) : undefined,
    mode: val('--mode') as TapBenchMode | undefined,
    ipv6: !args.includes('--no-ipv6'),
    workers: args.includes('--workers'),
    log: json ? undefined : (l) => console.error(`# ${l}`),
  });
  console.log(json ? JSON.stringify(r) : formatTapThroughput(r));
}
