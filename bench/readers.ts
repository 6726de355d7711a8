/**
 * Slow readers against the Linux kernel (needs root and python3): N concurrent HTTP downloads,
 * each read at a fixed rate by scripts/tap-load.py in the lab's namespace, so every receiver shuts
 * its window each buffer it drains and opens it as the reader catches up. Served by `chimney serve`
 * (host stack, one TAP) and, in the same run and alternated with it, by Linux's own TCP
 * (scripts/linux-serve.py in a second namespace on the same bridge). What is measured is the
 * sender's conduct towards such receivers, as the receivers' kernels count it:
 *
 *   needless resends   segments the receivers already had (TcpExtTCPDSACKOldSent in the
 *                      client's namespace): loss probes or timeouts that beat a delayed ACK
 *   loss probes        Chimney's tcp.tlp.probes; Linux's TcpExtTCPLossProbes (server namespace)
 *   longest stall      the longest gap in any download's data, at the reader
 *
 * Each kernel keeps per-destination TCP metrics (`ip tcp_metrics`: RTT, cwnd) across the runs of
 * one lab; the log shows them before every download, and `--flush-metrics` flushes them in both
 * namespaces first. They do not explain Chimney's run-to-run spread at 1,000 (BENCHMARKS.md).
 * `--capture DIR` keeps each download's client report and a capture of the client's side.
 *
 *   npx tsx bench/readers.ts [--json] [--connections N] [--runs R] [--flush-metrics] [--capture DIR]
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { controlRequest, type StatusSnapshot } from '../src/cli/control.ts';
import { Lab, missingPrerequisite, ROOT } from '../test/interop/lab.ts';
import { type ClientReport, clientArgv } from '../test/interop/tap-load.ts';
import { linuxServerNs } from './loss.ts';

export interface ReaderRun {
  needlessResends: number;
  lossProbes: number;
  maxStallMs: number;
  failed: number;
  wallMs: number;
}

export interface ReadersResult {
  connections: number;
  bytesEach: number;
  rateEach: number;
  chimney: ReaderRun[];
  linux: ReaderRun[];
  /** Medians over the runs. */
  median: { chimney: ReaderRun; linux: ReaderRun };
  loadAvg: number;
}

const SUBNET = 247;

function nstat(ns: string): Record<string, number> {
  const j = JSON.parse(execFileSync('ip', ['netns', 'exec', ns, 'nstat', '-az', '--json']).toString());
  return (j.kernel ?? j) as Record<string, number>;
}

const delta = (a: Record<string, number>, b: Record<string, number>, k: string): number =>
  (b[k] ?? 0) - (a[k] ?? 0);

function median(runs: ReaderRun[]): ReaderRun {
  const m = (f: (r: ReaderRun) => number): number => {
    const v = runs.map(f).sort((x, y) => x - y);
    return v[Math.floor(v.length / 2)] ?? 0;
  };
  return {
    needlessResends: m((r) => r.needlessResends),
    lossProbes: m((r) => r.lossProbes),
    maxStallMs: m((r) => r.maxStallMs),
    failed: m((r) => r.failed),
    wallMs: m((r) => r.wallMs),
  };
}

export async function benchReaders(
  log: (l: string) => void = () => {},
  o: {
    connections?: number;
    size?: number;
    rate?: number;
    runs?: number;
    /** Flush the kernels' per-destination TCP metrics before every download (by default kept). */
    flushMetrics?: boolean;
    /** Diagnosis: a directory for each download's client report and a capture of the client's side. */
    capture?: string;
  } = {},
): Promise<ReadersResult> {
  const why = missingPrerequisite(['python3', 'nstat']);
  if (why) throw new Error(`readers benchmark: ${why}`);
  const connections = o.connections ?? 100;
  const size = o.size ?? 1_000_000;
  const rate = o.rate ?? 150_000;
  const runs = o.runs ?? 3;
  const load = { connections, size, rate, timeoutS: 120 };
  const lab = new Lab({ tag: 'brd', subnet: SUBNET, taps: 1 });
  lab.up();
  const server = linuxServerNs(lab);
  const chimney: ReaderRun[] = [];
  const linux: ReaderRun[] = [];
  try {
    const linuxServe = lab.run(
      ['ip', 'netns', 'exec', server.ns, 'python3', join(ROOT, 'scripts/linux-serve.py')].concat([
        '--host',
        server.ip,
        '--port',
        '80',
      ]),
      3_600_000,
    );
    linuxServe.catch(() => {});
    const download = async (host: string, name: string): Promise<ClientReport> => {
      // Each kernel caches what it learnt of a destination when a connection to it closes (the
      // client's initial RTO to Chimney follows the RTT it cached, 0.3 s after a burst): logged, and
      // with flushMetrics cleared so that every download starts as the first did.
      for (const ns of [lab.ns, server.ns]) {
        const cached = lab.ip('-n', ns, 'tcp_metrics', 'show').trim();
        if (cached) log(`${name}: ${ns} tcp_metrics before: ${cached.split('\n').length} entries: ${cached}`);
        if (o.flushMetrics) lab.ip('-n', ns, 'tcp_metrics', 'flush', 'all');
      }
      if (o.capture) mkdirSync(o.capture, { recursive: true });
      const pcap = o.capture ? join(o.capture, `${name}.pcap`) : '';
      const tshark = ['tshark', '-q', '-i', lab.vethPeer, '-s', '96', '-w', pcap, '-f', 'tcp'];
      const dump = pcap
        ? spawn('ip', ['netns', 'exec', lab.ns, ...tshark], { stdio: 'ignore' }).on('error', () => {})
        : null;
      if (dump) await new Promise((r) => setTimeout(r, 1000));
      try {
        const r = await lab.run(clientArgv(lab, host, load), (load.timeoutS + 60) * 1000);
        if (o.capture) writeFileSync(join(o.capture, `${name}.json`), r.stdout);
        const rep = JSON.parse(r.stdout) as ClientReport;
        // Where the longest gaps fell: in the connect burst or later, and on which downloads.
        const t0 = Math.min(...rep.stalls.map((g) => g[0]));
        const top = [...rep.stalls].sort((a, b) => b[1] - b[0] - (a[1] - a[0])).slice(0, 5);
        log(
          `${name}: first byte p50 ${rep.p50FirstByteMs} max ${rep.maxFirstByteMs} ms; ${rep.stalls.length} gaps of 20 ms or more; longest [ms, at ms after the first gap, download]: ${JSON.stringify(top.map((g) => [Math.round(g[1] - g[0]), Math.round(g[0] - t0), g[2]]))}`,
        );
        return rep;
      } finally {
        if (dump) {
          dump.kill('SIGINT');
          await new Promise((r) => {
            if (dump.exitCode !== null || dump.pid === undefined) r(null);
            else dump.once('exit', r);
          });
        }
      }
    };
    const figures = (rep: ClientReport, needless: number, probes: number): ReaderRun => ({
      needlessResends: needless,
      lossProbes: probes,
      maxStallMs: rep.maxStallMs,
      failed: rep.failed,
      wallMs: rep.wallMs,
    });
    for (let i = 0; i < runs; i++) {
      {
        const ctl = join(lab.dir, `ctl-readers-${i}.sock`);
        const srv = await lab.serve({ services: ['http:80'], extra: ['--quiet', '--control', ctl] });
        try {
          const c0 = nstat(lab.ns);
          const rep = await download(lab.chimneyIps[0]!, `chimney-${i + 1}`);
          const c1 = nstat(lab.ns);
          const st = (await controlRequest(ctl, { op: 'status' })) as StatusSnapshot;
          const run = figures(
            rep,
            delta(c0, c1, 'TcpExtTCPDSACKOldSent'),
            st.counters['tcp.tlp.probes'] ?? 0,
          );
          chimney.push(run);
          log(`run ${i + 1} chimney: ${JSON.stringify(run)}`);
        } finally {
          await srv.stop();
        }
      }
      {
        const c0 = nstat(lab.ns);
        const s0 = nstat(server.ns);
        const rep = await download(server.ip, `linux-${i + 1}`);
        const c1 = nstat(lab.ns);
        const s1 = nstat(server.ns);
        const run = figures(
          rep,
          delta(c0, c1, 'TcpExtTCPDSACKOldSent'),
          delta(s0, s1, 'TcpExtTCPLossProbes'),
        );
        linux.push(run);
        log(`run ${i + 1} linux:   ${JSON.stringify(run)}`);
      }
    }
  } finally {
    server.remove();
    await lab.down();
  }
  return {
    connections,
    bytesEach: size,
    rateEach: rate,
    chimney,
    linux,
    median: { chimney: median(chimney), linux: median(linux) },
    loadAvg: Math.round(loadavg()[0]! * 10) / 10,
  };
}

export function formatReaders(r: ReadersResult): string {
  const row = (k: string, f: ReaderRun) =>
    `${k.padEnd(8)} needless resends ${String(f.needlessResends).padStart(6)}  loss probes ${String(f.lossProbes).padStart(6)}  longest stall ${String(f.maxStallMs).padStart(7)} ms  failed ${f.failed}`;
  return [
    `${r.connections} downloads of ${r.bytesEach} B, each read at ${r.rateEach} B/s; medians of ${r.chimney.length} alternated runs (load ${r.loadAvg})`,
    row('chimney', r.median.chimney),
    row('linux', r.median.linux),
  ].join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const arg = (n: string): number | undefined => {
    const i = process.argv.indexOf(`--${n}`);
    return i >= 0 ? Number(process.argv[i + 1]) : undefined;
  };
  const r = await benchReaders((l) => console.error(l), {
    connections: arg('connections'),
    runs: arg('runs'),
    flushMetrics: process.argv.includes('--flush-metrics'),
    capture: process.argv.includes('--capture')
      ? process.argv[process.argv.indexOf('--capture') + 1]
      : undefined,
  });
  console.log(process.argv.includes('--json') ? JSON.stringify(r) : formatReaders(r));
}
