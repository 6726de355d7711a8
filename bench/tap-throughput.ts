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
 * Chimney runs as `chimney serve` (mode `cli`), or inside this process on the TAP (`inproc`,
 * the TAP opened with offloads), or not at all (`kernel`: a kernel socat peer stands in
 * for Chimney, which checks the harness itself).
 *
 *   npx tsx bench/tap-throughput.ts [--json] [--bytes N] [--mode cli|inproc|kernel]
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
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
}

export interface TapThroughputResult {
  mode: TapBenchMode;
  mtu: number;
  bytes: number;
  /** kernel → Chimney. */
  rxGbps: number;
  /** Chimney → kernel. */
  txGbps: number;
  /** Kernel TCP over a veth pair between two namespaces. */
  kernelGbps: number;
  rxRatio: number;
  txRatio: number;
  rxSeconds: number;
  txSeconds: number;
  kernelTool: string;
}

const MTU = 1500;
const SUBNET = 240;
const PORT_DISCARD = 9;
const PORT_HTTP = 80;
const PORT_SOURCE = 5001;

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
async function kernelReference(lab: Lab, bytes: number): Promise<number> {
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
    ip('-n', a, 'addr', 'add', '10.9.241.1/24', 'dev', 'kva');
    ip('-n', b, 'addr', 'add', '10.9.241.2/24', 'dev', 'kvb');
    for (const [ns, dev] of [
      [a, 'kva'],
      [b, 'kvb'],
    ] as const) {
      ip('-n', ns, 'link', 'set', dev, 'up');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
    }
    const server = lab.spawn([
      'ip',
      'netns',
      'exec',
      b,
      'iperf3',
      '-s',
      '-1',
      '-B',
      '10.9.241.2',
      '-p',
      '5201',
    ]);
    try {
      await waitFor(async () => {
        const r = await lab.run(['ip', 'netns', 'exec', b, 'ss', '-Hltn', 'sport = :5201'], 5000);
        return r.stdout.trim() !== '';
      }, 10_000);
      const r = check(
        await lab.run(
          ['ip', 'netns', 'exec', a, 'iperf3', '-c', '10.9.241.2', '-p', '5201', '-n', String(bytes), '-J'],
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

/** Chimney in this process on the lab's TAP: discard on 9, a raw pattern source on 5001. */
function startInProc(lab: Lab, bytes: number): { close(): void } {
  const clock = new RealClock();
  const tap = TapLink.open({ name: lab.taps[0]!, create: false, clock });
  const stack = new Stack({ clock, random: new CryptoRandom(), name: 'bench' });
  stack.addInterface(tap, { mac: lab.mac(0), ip: `${lab.chimneyIps[0]}/24` });
  const host = new Host(stack);
  const discard = host.createServer((s) => {
    s.on('data', () => {});
    s.on('error', () => {});
    s.on('end', () => s.end());
  });
  discard.listen(PORT_DISCARD);
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
  source.listen(PORT_SOURCE);
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
async function startKernelPeer(lab: Lab, bytes: number): Promise<{ close(): void }> {
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
  lab.ip('-n', ns, 'link', 'set', 'chbk-pvp', 'up');
  const ex = ['ip', 'netns', 'exec', ns];
  const p1 = lab.spawn([...ex, 'socat', '-u', `TCP-LISTEN:${PORT_DISCARD},reuseaddr,fork`, 'OPEN:/dev/null']);
  const p2 = lab.spawn([
    ...ex,
    'socat',
    '-U',
    '-b',
    '262144',
    `TCP-LISTEN:${PORT_SOURCE},reuseaddr,fork`,
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

export async function benchTapThroughput(opts: TapThroughputOptions = {}): Promise<TapThroughputResult> {
  const bytes = opts.bytes ?? 2 ** 31;
  const kernelBytes = opts.kernelBytes ?? bytes;
  const mode: TapBenchMode = opts.mode ?? (cliExists() ? 'cli' : 'inproc');
  const log = opts.log ?? (() => {});
  const reason = missingPrerequisite(['socat', 'curl', 'iperf3', 'ss']);
  if (reason) throw new Error(`tap throughput benchmark: ${reason}`);
  if (mode === 'cli' && !cliExists())
    throw new Error('tap throughput benchmark: chimney serve does not exist yet');
  if (!hasTool('iperf3')) throw new Error('tap throughput benchmark needs iperf3');

  const lab = new Lab({ tag: 'tb', subnet: SUBNET, taps: 1, mtu: MTU });
  lab.up();
  let served: Served | null = null;
  let inproc: { close(): void } | null = null;
  try {
    log(`kernel reference: iperf3 over a veth pair, ${kernelBytes} bytes`);
    const kernelGbps = await kernelReference(lab, kernelBytes);
    log(`kernel: ${kernelGbps} Gbit/s`);

    if (mode === 'cli') served = await lab.serve({ services: ['discard:9', 'http:80'], extra: ['--quiet'] });
    else if (mode === 'inproc') inproc = startInProc(lab, bytes);
    else inproc = await startKernelPeer(lab, bytes);
    const dst = lab.chimneyIps[0]!;

    // Warm up ARP and the path so the timed runs start with a resolved neighbor.
    await lab.sh(`ping -c 1 -W 2 ${dst} >/dev/null`, 5000);

    log(`rx: kernel → ${mode}, ${bytes} bytes`);
    const rx = check(
      await lab.sh(
        `socat -u -b 262144 OPEN:/dev/zero,readbytes=${bytes} TCP:${dst}:${PORT_DISCARD},sndbuf=4194304`,
        300_000,
      ),
      'socat → discard',
    );
    const rxSeconds = rx.ms / 1000;

    log(`tx: ${mode} → kernel, ${bytes} bytes`);
    let txSeconds: number;
    if (mode === 'cli') {
      const r = check(
        await lab.sh(
          `curl -sS --fail -o /dev/null -w '%{size_download} %{time_total}' http://${dst}:${PORT_HTTP}/bytes/${bytes}`,
          300_000,
        ),
        'curl /bytes',
      );
      const [size, secs] = r.stdout.trim().split(' ').map(Number);
      if (size !== bytes) throw new Error(`curl got ${size} of ${bytes} bytes`);
      txSeconds = secs!;
    } else {
      const r = check(
        await lab.sh(`socat -u -b 262144 TCP:${dst}:${PORT_SOURCE},rcvbuf=4194304 - | wc -c`, 300_000),
        'socat ← source',
      );
      if (Number(r.stdout.trim()) !== bytes)
        throw new Error(`socat got ${r.stdout.trim()} of ${bytes} bytes`);
      txSeconds = r.ms / 1000;
    }
    const rxGbps = gbps(bytes, rxSeconds);
    const txGbps = gbps(bytes, txSeconds);
    return {
      mode,
      mtu: MTU,
      bytes,
      rxGbps,
      txGbps,
      kernelGbps,
      rxRatio: ratio(rxGbps, kernelGbps),
      txRatio: ratio(txGbps, kernelGbps),
      rxSeconds: Math.round(rxSeconds * 1000) / 1000,
      txSeconds: Math.round(txSeconds * 1000) / 1000,
      kernelTool: 'iperf3 (one stream, two namespaces, veth, MTU 1500)',
    };
  } finally {
    if (served) await served.stop();
    inproc?.close();
    await lab.down();
  }
}

export function formatTapThroughput(r: TapThroughputResult): string {
  return [
    `TAP, MTU ${r.mtu}, ${r.bytes} bytes each way, Chimney as ${r.mode}:`,
    `  kernel → Chimney (rx): ${r.rxGbps} Gbit/s  → ratio ${r.rxRatio}`,
    `  Chimney → kernel (tx): ${r.txGbps} Gbit/s  → ratio ${r.txRatio}`,
    `  reference, ${r.kernelTool} (same run): ${r.kernelGbps} Gbit/s`,
  ].join('\n');
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
    log: json ? undefined : (l) => console.error(`# ${l}`),
  });
  console.log(json ? JSON.stringify(r) : formatTapThroughput(r));
}
