/**
 * Soak of `chimney serve --tap A --tap B --workers` against the Linux kernel at scale (needs root):
 * many slow HTTP downloads from the lab namespace (scripts/tap-load.py), with a fault injected once
 * all of them carry data. Prints one JSON line per run; exits 1 if any download was not intact or
 * serve logged a loss, a reset or a failure it should not have.
 *
 *   npx tsx scripts/soak-tap.ts [--connections 5000] [--size 3000000] [--rate 150000]
 *                               [--fault none|carrier|reachability|crash|all] [--timeout S]
 *                               [--pcap FILE] [--log FILE] [--stalls FILE] [--host-alone]
 *                               [--linux-server] [--linux-only]
 * `--serve-args ARGS`: more `chimney serve` arguments for every run (an offload policy to compare).
 * `--fault-delay S`: the fault S seconds after every download's first byte (default 0: at once).
 * `--ramp MS`: the client opens its connections over MS ms (default tap-load.py's 2,000: the connect
 * burst; at 1,000 downloads a ramp of 4,000 is the same load without it, BENCHMARKS.md tap-team).
 * Each run prints `faultCut`: the stalls across the fault by owner (the faulted NIC, the other, the
 * host) and begun before it or not, and how many downloads were stalled across moments before and
 * after it (`around`); with no fault, the same at the moment the fault would have come.
 * `--prewarm N`: first N downloads of 300 kB (opened over 1 s) against the same serve, then the
 * measured run: its burst meets code V8 has already optimised, the upper bound of a warm-up at
 * serve's start (BENCHMARKS.md tap-team, "V8 in the connect burst at 1,000").
 * `--host-alone`: the host stack alone on one TAP, no team (the reference; fault none only).
 * `--local-nics`: the team's members are LocalNics on serve's main thread, not worker threads
 * (with `--serve-args --accept-at-nic`, the passive open answered at the member).
 * `--linux-server`: after the runs, the same client against the Linux kernel serving the same
 * downloads (scripts/linux-serve.py in a second namespace on a veth port of the same bridge): the
 * reference for stalls, first-byte waits and SYN retries, in the same run (`--linux-only`: that
 * run alone). Each run also prints `peer` (the client namespace's kernel counters that moved:
 * SYN retransmits, receive-queue drops, ...) and `tapDrops` / `tapDropsBySecond` (frames the
 * kernel dropped on the way into Chimney's TAPs, their queues full).
 * The documented 5,000 run (30 MB/s in all, all downloads live when each fault comes; BENCHMARKS.md):
 * `--connections 5000 --size 200000 --rate 6000 --timeout 300 --fault all`, then `--host-alone
 * --linux-server`.
 * CHIMNEY_LAG_LOG / CHIMNEY_CPU_PROF in the environment reach serve (see serve.ts; on one TAP only the
 * counters and the profile); CHIMNEY_WORKER_CPU_PROF=FILE profiles each worker (FILE.w<threadId>,
 * written at its close, see nic-worker.ts).
 * `--times FILE`: each connection's connect, connected and first byte, with its client port (FILE.<fault>).
 * `--client-pcap FILE` captures the headers (128 bytes a frame) of what the client's kernel
 * receives and sends on its veth, for each run (FILE.<fault>, FILE.linux): the same view of
 * Chimney and of Linux serving.
 * `--tap-pcap FILE` captures the headers (80 bytes a frame) of both TAPs from the root namespace
 * (FILE.<fault>.<tap>): the kernel's own timestamps of when a frame was queued for Chimney to read
 * and when Chimney wrote one, with no work added to serve's threads (unlike `--pcap`).
 * `scripts/stall-anatomy.py` lines them up with `--stalls` and says what each stall waited for.
 * `--pcap` captures every frame of the team (one file per fault: FILE.<fault>); `--log` keeps serve's
 * whole log (FILE.<fault>), for diagnosing a run that logged resets. `--stalls` writes every gap the
client saw (FILE.<fault>, JSON: [start epoch ms, end epoch ms, connection, client port]), to line
them up with a capture, and who owned each download at the fault (FILE.<fault>.owners).
 */

import { existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { byteSize, intIn } from '../src/cli/options.ts';
import { Lab, missingPrerequisite, ROOT, sleep, stopProcess } from '../test/interop/lab.ts';
import {
  type ClientReport,
  clientArgv,
  type FaultKind,
  nsCounters,
  runLoad,
} from '../test/interop/tap-load.ts';

const FAULTS = ['none', 'carrier', 'reachability', 'crash', 'all'] as const;
const cli = new Command('soak-tap')
  .description('chimney serve on a team of two TAPs against 1,000s of slow downloads by the Linux kernel')
  .option('--connections <n>', 'concurrent downloads', intIn(1, 20_000), 1000)
  .option('--size <bytes>', 'bytes of each download', byteSize, 3_000_000)
  .option('--rate <bytes/s>', "each download's reading rate", byteSize, 150_000)
  .option('--timeout <s>', 'give up on a run after this many seconds', intIn(1, 3600), 300)
  .addOption(
    new Option('--fault <kind>', 'fault injected once all downloads carry data')
      .choices(FAULTS)
      .default('none'),
  )
  .option(
    '--fault-delay <s>',
    'wait this long after every download has data before the fault',
    intIn(0, 600),
    0,
  )
  .option(
    '--ramp <ms>',
    "the client opens its connections over this long (tap-load.py's default: 2000, the burst)",
    intIn(0, 600_000),
  )
  .option(
    '--prewarm <n>',
    'first n downloads of 300 kB against the same serve, then the measured run (warm code and tables)',
    intIn(0, 20_000),
  )
  .option('--pcap <file>', 'capture every frame of the team (FILE.<fault>)')
  .option('--log <file>', "keep serve's whole log (FILE.<fault>)")
  .option('--stalls <file>', 'write every gap the client saw (FILE.<fault>)')
  .option(
    '--times <file>',
    "write each connection's way to its first byte as the client saw it (FILE.<fault>)",
  )
  .option('--client-pcap <file>', "capture the headers the client's kernel sees (FILE.<fault>, FILE.linux)")
  .option(
    '--tap-pcap <file>',
    "capture the headers on both TAPs, the kernel's timestamps (FILE.<fault>.<tap>)",
  )
  .option('--host-alone', 'the host stack alone on one TAP, no team (the reference; fault none only)')
  .option('--local-nics', "the team's members are LocalNics on serve's main thread (no --workers)")
  .option('--linux-server', 'then the same client against Linux serving the same downloads')
  .option('--linux-only', 'only the run against Linux')
  .option(
    '--serve-args <args>',
    "more `chimney serve` arguments, space-separated (e.g. '--offload-policy after')",
  )
  .parse();
const o = cli.opts<{
  connections: number;
  size: number;
  rate: number;
  timeout: number;
  fault: (typeof FAULTS)[number];
  faultDelay: number;
  pcap?: string;
  log?: string;
  stalls?: string;
  times?: string;
  clientPcap?: string;
  tapPcap?: string;
  hostAlone?: boolean;
  localNics?: boolean;
  linuxServer?: boolean;
  linuxOnly?: boolean;
  serveArgs?: string;
  ramp?: number;
  prewarm?: number;
}>();
const { connections, size, rate } = o;
const timeoutS = o.timeout;
const pcap = o.pcap ?? '';
const logFile = o.log ?? '';
const stallsFile = o.stalls ?? '';
const timesFile = o.times ?? '';
const clientPcap = o.clientPcap ?? '';
const tapPcap = o.tapPcap ?? '';
const hostAlone = o.hostAlone === true;
const linuxServer = o.linuxServer === true;
const faults: FaultKind[] = o.linuxOnly
  ? []
  : o.fault === 'all'
    ? ['none', 'carrier', 'reachability', 'crash']
    : [o.fault];
const why = missingPrerequisite(['python3']);
if (why) {
  console.error(`soak-tap: ${why}`);
  process.exit(2);
}
const lab = new Lab({ tag: 'soak', subnet: 242, taps: 2 });
lab.up();
let bad = 0;
try {
  for (const fault of faults) {
    const extra = pcap ? ['--pcap', `${pcap}.${fault}`] : [];
    extra.push(...(o.serveArgs?.split(' ').filter(Boolean) ?? []));
    const before = nsCounters(lab);
    const drops0 = tapDrops(lab);
    // When the kernel dropped frames into the TAPs, by second of the run (the connect burst or later).
    const t0 = Date.now();
    const dropsBySecond: number[] = [];
    let dropsLast = drops0;
    const sampler = setInterval(() => {
      const now = tapDrops(lab);
      const sec = Math.floor((Date.now() - t0) / 1000);
      dropsBySecond[sec] = (dropsBySecond[sec] ?? 0) + now - dropsLast;
      dropsLast = now;
    }, 250);
    const cap = clientCapture(`${fault}`);
    const taps = tapCapture(`${fault}`);
    const r = await runLoad(lab, {
      connections,
      size,
      rate,
      fault,
      timeoutS,
      extra,
      hostAlone,
      localNics: o.localNics === true,
      faultDelayS: o.faultDelay,
      rampMs: o.ramp,
      prewarm: o.prewarm,
      log: (l) => console.error(l),
    });
    clearInterval(sampler);
    await cap?.stop();
    await taps?.stop();
    if (logFile) writeFileSync(`${logFile}.${fault}`, r.log);
    if (stallsFile) {
      writeFileSync(`${stallsFile}.${fault}`, JSON.stringify(r.client.stalls));
      writeFileSync(
        `${stallsFile}.${fault}.owners`,
        JSON.stringify({ at: r.markAt, nic: r.nic, owners: [...r.owners] }),
      );
    }
    if (timesFile) writeFileSync(`${timesFile}.${fault}`, JSON.stringify(r.client.times));
    const { stalls, times: _times, ...client } = r.client;
    console.log(
      JSON.stringify({
        fault,
        nic: r.nic,
        detectMs: r.detectMs,
        // From the fault's start (the cut, or a kill's request) to serve's failover, on the wall
        // clock: detectMs counts from the NIC's last sign of life (its link's last sign of carrier,
        // its thread's last beat), which may be older than the fault.
        realDetectMs: r.realDetectMs,
        resumeMs: r.resumeMs,
        moveMs: r.moveMs,
        movePhases: r.movePhases,
        stalledByFault: r.stalledByFault,
        faultCut: r.faultCut,
        ...client,
        longestStalls: longestOf(stalls),
        peer: counterDelta(before, nsCounters(lab)),
        tapDrops: tapDrops(lab) - drops0,
        tapDropsBySecond: Array.from(dropsBySecond, (n) => n ?? 0),
        serveLog: r.bad.slice(0, 20),
        resetCounters: r.resetCounters,
        ringCounters: r.ringCounters,
        serveMain: r.serveMain,
        threads: r.threads,
      }),
    );
    if (r.client.failed > 0 || r.bad.length > 0) {
      bad++;
      console.error(
        r.log
          .split('\n')
          .filter((l) => !/ closed \(in /.test(l))
          .slice(-40)
          .join('\n'),
      );
    }
  }
  if (linuxServer) {
    const before = nsCounters(lab);
    const cap = clientCapture('linux');
    const r = await runLinux(lab).finally(() => cap?.stop());
    const peer = counterDelta(before, nsCounters(lab));
    const { stalls, times, ...client } = r;
    if (stallsFile) writeFileSync(`${stallsFile}.linux`, JSON.stringify(stalls));
    if (timesFile) writeFileSync(`${timesFile}.linux`, JSON.stringify(times));
    console.log(
      JSON.stringify({
        fault: 'none',
        server: 'linux',
        ...client,
        longestStalls: longestOf(stalls),
        peer,
      }),
    );
    if (r.failed > 0) bad++;
  }
} finally {
  await lab.down();
}

/** dumpcap on the client's veth inside its namespace, headers only, while a run lasts. */
function clientCapture(run: string): { stop: () => Promise<void> } | null {
  if (!clientPcap) return null;
  const p = lab.spawnNs([
    'dumpcap',
    '-q',
    '-i',
    lab.vethPeer,
    '-s',
    '128',
    '-f',
    'tcp',
    '-w',
    `${clientPcap}.${run}`,
  ]);
  return { stop: () => stopProcess(p, 2000) };
}

/** dumpcap on each TAP in the root namespace, headers only, while a run lasts. */
function tapCapture(run: string): { stop: () => Promise<void> } | null {
  if (!tapPcap) return null;
  const ps = lab.taps.map((t) =>
    lab.spawn(['dumpcap', '-q', '-n', '-i', t, '-s', '80', '-f', 'tcp', '-w', `${tapPcap}.${run}.${t}`]),
  );
  return { stop: async () => void (await Promise.all(ps.map((p) => stopProcess(p, 2000)))) };
}

/** The longest gaps, with the client's port, to find them in a capture. */
function longestOf(stalls: ClientReport['stalls']) {
  return [...stalls]
    .sort((a, b) => b[1] - b[0] - (a[1] - a[0]))
    .slice(0, 5)
    .map(([from, to, conn, port]) => ({ ms: Math.round(to - from), from, conn, port }));
}

/** Frames the kernel dropped on the way into Chimney's TAPs (their queues full: Chimney read too late). */
function tapDrops(lab: Lab): number {
  let n = 0;
  for (const t of lab.taps)
    try {
      n += Number(readFileSync(`/sys/class/net/${t}/statistics/tx_dropped`, 'utf8'));
    } catch {}
  return n;
}

/** Counters that moved, the peer's drops and losses first (TcpExt names). */
function counterDelta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of Object.keys(b))
    if (
      /Drop|Prune|Retrans|Timeout|Syn|Listen|ZeroWindow|Lost|OFO|Collapsed|Probe/i.test(k) &&
      b[k]! - (a[k] ?? 0) > 0
    )
      out[k] = b[k]! - (a[k] ?? 0);
  return out;
}

/** The client against the kernel's TCP (scripts/linux-serve.py) in a namespace of its own. */
async function runLinux(lab: Lab): Promise<ClientReport> {
  const ns = `${lab.ns}-srv`;
  const veth = `chw-${lab.ns.slice(5)}`;
  const ip = lab.chimneyIps[3]!;
  const ready = join(lab.dir, 'linux-serve.ready');
  const tryIp = (...a: string[]): void => {
    try {
      lab.ip(...a);
    } catch {}
  };
  tryIp('netns', 'del', ns);
  tryIp('link', 'del', veth);
  lab.ip('netns', 'add', ns);
  lab.ip('link', 'add', veth, 'type', 'veth', 'peer', 'name', `${veth}p`, 'netns', ns);
  lab.ip('link', 'set', 'dev', veth, 'master', lab.bridge, 'up');
  lab.ip('-n', ns, 'addr', 'add', `${ip}/24`, 'dev', `${veth}p`);
  lab.ip('-n', ns, 'link', 'set', 'dev', `${veth}p`, 'up');
  lab.ip('-n', ns, 'link', 'set', 'dev', 'lo', 'up');
  // Its stderr goes to a file: a pipe nobody reads blocks the server once full.
  const errFd = openSync(join(lab.dir, 'linux-serve.err'), 'w');
  const srv = lab.spawn(
    [
      'ip',
      'netns',
      'exec',
      ns,
      'python3',
      join(ROOT, 'scripts/linux-serve.py'),
      '--host',
      ip,
      '--ready-file',
      ready,
    ],
    { stdio: ['ignore', 'ignore', errFd] },
  );
  try {
    const end = Date.now() + 10_000;
    while (!existsSync(ready) && Date.now() < end) await sleep(50);
    if (!existsSync(ready)) throw new Error('linux-serve.py did not start');
    const r = await lab.run(
      clientArgv(lab, ip, { connections, size, rate, timeoutS, rampMs: o.ramp }),
      (timeoutS + 60) * 1000,
    );
    try {
      return JSON.parse(r.stdout) as ClientReport;
    } catch {
      throw new Error(`client printed no report (exit ${r.code}): ${r.stderr.slice(-2000)}`);
    }
  } finally {
    await stopProcess(srv, 2000);
    const err = readFileSync(join(lab.dir, 'linux-serve.err'), 'utf8');
    if (err) console.error(`linux-serve.py: ${err.slice(-2000)}`);
    tryIp('netns', 'del', ns);
    tryIp('link', 'del', veth);
  }
}
process.exit(bad > 0 ? 1 : 0);
