/**
 * Chimney on TAP devices with the Linux kernel as the peer (needs root): aggregate throughput of
 * several concurrent curl downloads served by the host stack alone on one TAP, against the same
 * downloads served by a team of two WorkerNics (one thread each) on two TAPs, in the same run;
 * then, on the team, the failover figures `chimney serve` logs for a carrier loss, a reachability
 * loss and a killed worker while downloads run.
 *
 *   npx tsx bench/tap-team.ts [--json]
 */
import { pathToFileURL } from 'node:url';
import { controlRequest, type StatusSnapshot } from '../src/cli/control.ts';
import { Lab, missingPrerequisite, type RunResult, type Served, sleep } from '../test/interop/lab.ts';

export interface TapTeamFailover {
  detectMs: number;
  resumeMs: number;
  connections: number;
  /** Downloads that failed or came back short (a reset would show here). */
  failedDownloads: number;
}

export interface TapTeamResult {
  downloads: number;
  bytesEach: number;
  /** Reference, same run: the host stack alone on one TAP (TSO/checksum offload). */
  hostGbps: number;
  /** The same downloads over two WorkerNics on two TAPs. */
  workersGbps: number;
  ratio: number;
  carrier: TapTeamFailover;
  reachability: TapTeamFailover;
  crash: TapTeamFailover;
}

const SUBNET = 241;

function gbps(bytes: number, ms: number): number {
  return Math.round(((bytes * 8) / (ms / 1000) / 1e9) * 1000) / 1000;
}

async function downloadAll(lab: Lab, n: number, bytes: number, rate?: string): Promise<RunResult[]> {
  const url = `http://${lab.chimneyIps[0]}/bytes/${bytes}`;
  const limit = rate ? `--limit-rate ${rate}` : '';
  return Promise.all(
    Array.from({ length: n }, () =>
      lab.sh(`curl -sS --fail --max-time 120 ${limit} -o /dev/null -w '%{size_download}' ${url}`, 130_000),
    ),
  );
}

function failed(runs: RunResult[], bytes: number): number {
  return runs.filter((r) => r.code !== 0 || Number(r.stdout.trim()) !== bytes).length;
}

async function timed(lab: Lab, n: number, bytes: number): Promise<number> {
  await downloadAll(lab, 1, 1 << 20); // warm-up: ARP, JIT
  const t0 = performance.now();
  const runs = await downloadAll(lab, n, bytes);
  const ms = performance.now() - t0;
  if (failed(runs, bytes) > 0) throw new Error(`downloads failed: ${runs.map((r) => r.stderr).join(' ')}`);
  return ms;
}

/** One fault on the team while `n` rate-limited downloads run; the figures from its failover line. */
async function fault(
  lab: Lab,
  extra: string[],
  inject: (nic: string, ctl: string) => Promise<void>,
  cause: string,
): Promise<TapTeamFailover> {
  const ctl = `${lab.dir}/ctl-${cause}.sock`;
  const srv = await lab.serve({
    services: ['http:80'],
    extra: ['--tap', lab.taps[1]!, '--workers', '--quiet', '--control', ctl, ...extra],
  });
  try {
    const bytes = 100 * 1024 * 1024;
    const runs = downloadAll(lab, 4, bytes, '20M');
    let nic = '';
    const end = Date.now() + 15_000;
    while (nic === '' && Date.now() < end) {
      await sleep(200);
      const s = (await controlRequest(ctl, { op: 'status' })) as StatusSnapshot;
      const owners = s.trees.flatMap((t) => t.paths.flatMap((p) => p.conns.map((c) => c.owner)));
      if (owners.length === 4 && owners.every((o) => o !== 'host')) {
        const count = (x: string) => owners.filter((o) => o === x).length;
        nic = [...new Set(owners)].sort((a, b) => count(b) - count(a))[0]!;
      }
    }
    if (nic === '') throw new Error(`downloads never all offloaded:\n${srv.log().slice(-2000)}`);
    await sleep(1000);
    await inject(nic, ctl);
    const results = await runs;
    // The last failover of that NIC for that cause: a spurious one before the fault would not count.
    const lines = [
      ...srv
        .log()
        .matchAll(
          new RegExp(
            `failover ${nic} \\(${cause}\\): detected in ([\\d.]+) ms, (\\d+) connection\\(s\\) resumed on \\S+ ([\\d.]+) ms`,
            'g',
          ),
        ),
    ];
    const line = lines[lines.length - 1];
    if (!line) throw new Error(`no ${cause} failover of ${nic} logged:\n${srv.log().slice(-2000)}`);
    return {
      detectMs: Number(line[1]),
      connections: Number(line[2]),
      resumeMs: Number(line[3]),
      failedDownloads: failed(results, bytes),
    };
  } finally {
    await srv.stop();
  }
}

export async function benchTapTeam(log: (l: string) => void = () => {}): Promise<TapTeamResult> {
  const why = missingPrerequisite(['curl']);
  if (why) throw new Error(`tap-team benchmark: ${why}`);
  const lab = new Lab({ tag: 'btm', subnet: SUBNET, taps: 2 });
  lab.up();
  try {
    const n = 4;
    const bytes = 1024 * 1024 * 1024;
    log(`host stack alone on ${lab.taps[0]}: ${n} × ${bytes} B`);
    let srv: Served = await lab.serve({ services: ['http:80'], extra: ['--quiet'] });
    const hostMs = await timed(lab, n, bytes).finally(() => srv.stop());
    log(`two WorkerNics on ${lab.taps.join(' + ')}: ${n} × ${bytes} B`);
    srv = await lab.serve({ services: ['http:80'], extra: ['--tap', lab.taps[1]!, '--workers', '--quiet'] });
    const workersMs = await timed(lab, n, bytes).finally(() => srv.stop());
    log('failover: carrier');
    const carrier = await fault(
      lab,
      [],
      async (nic) => {
        lab.ip('link', 'set', 'dev', nic, 'down');
      },
      'carrier',
    );
    for (const t of lab.taps) lab.ip('link', 'set', 'dev', t, 'up');
    log('failover: reachability');
    let cut = '';
    const reachability = await fault(
      lab,
      ['--probe', lab.kernelIp],
      async (nic) => {
        cut = nic;
        lab.ip('link', 'set', 'dev', nic, 'nomaster');
      },
      'reachability',
    );
    if (cut) lab.ip('link', 'set', 'dev', cut, 'master', lab.bridge);
    log('failover: killed worker');
    const crash = await fault(
      lab,
      [],
      async (nic, ctl) => {
        await controlRequest(ctl, { op: 'kill-nic', nic });
      },
      'dead',
    );
    const hostGbps = gbps(n * bytes, hostMs);
    const workersGbps = gbps(n * bytes, workersMs);
    return {
      downloads: n,
      bytesEach: bytes,
      hostGbps,
      workersGbps,
      ratio: Math.round((workersGbps / hostGbps) * 100) / 100,
      carrier,
      reachability,
      crash,
    };
  } finally {
    await lab.down();
  }
}

export function formatTapTeam(r: TapTeamResult): string {
  const row = (k: string, f: TapTeamFailover) =>
    `${k.padEnd(13)} detect ${f.detectMs} ms, last of ${f.connections} connection(s) resumed ${f.resumeMs} ms later, failed downloads ${f.failedDownloads}`;
  return [
    `${r.downloads} concurrent curl downloads of ${r.bytesEach} B each`,
    `two WorkerNics on two TAPs: ${r.workersGbps} Gbit/s`,
    `reference, same run: the host stack alone on one TAP: ${r.hostGbps} Gbit/s  → ratio ${r.ratio}`,
    row('carrier', r.carrier),
    row('reachability', r.reachability),
    row('crash', r.crash),
  ].join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = await benchTapTeam((l) => console.error(l));
  console.log(process.argv.includes('--json') ? JSON.stringify(r) : formatTapTeam(r));
}
