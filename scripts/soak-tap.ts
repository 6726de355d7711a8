/**
 * Soak of `chimney serve --tap A --tap B --workers` against the Linux kernel at scale (needs root):
 * many slow HTTP downloads from the lab namespace (scripts/tap-load.py), with a fault injected once
 * all of them carry data. Prints one JSON line per run; exits 1 if any download was not intact or
 * serve logged a loss, a reset or a failure it should not have.
 *
 *   npx tsx scripts/soak-tap.ts [--connections 5000] [--size 3000000] [--rate 150000]
 *                               [--fault none|carrier|reachability|crash|all] [--timeout S]
 *                               [--pcap FILE] [--log FILE] [--stalls FILE] [--host-alone]
 * `--host-alone`: the host stack alone on one TAP, no team (the reference; fault none only).
 * The documented 5,000 run (30 MB/s in all, all downloads live when each fault comes; BENCHMARKS.md):
 * `--connections 5000 --size 200000 --rate 6000 --timeout 300 --fault all`, then `--host-alone`.
 * CHIMNEY_LAG_LOG / CHIMNEY_CPU_PROF in the environment reach serve (see serve.ts, traceMainThread).
 * `--pcap` captures every frame of the team (one file per fault: FILE.<fault>); `--log` keeps serve's
 * whole log (FILE.<fault>), for diagnosing a run that logged resets. `--stalls` writes every gap the
client saw (FILE.<fault>, JSON: [start epoch ms, end epoch ms, connection, client port]), to line
them up with a capture.
 */
import { writeFileSync } from 'node:fs';
import { Lab, missingPrerequisite } from '../test/interop/lab.ts';
import { type FaultKind, runLoad } from '../test/interop/tap-load.ts';

const args = process.argv.slice(2);
function opt(name: string, d: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : d;
}
const connections = Number(opt('connections', '1000'));
const size = Number(opt('size', '3000000'));
const rate = Number(opt('rate', '150000'));
const timeoutS = Number(opt('timeout', '300'));
const f = opt('fault', 'none');
const pcap = opt('pcap', '');
const logFile = opt('log', '');
const stallsFile = opt('stalls', '');
const hostAlone = args.includes('--host-alone');
const faults: FaultKind[] = f === 'all' ? ['none', 'carrier', 'reachability', 'crash'] : [f as FaultKind];
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
    const r = await runLoad(lab, {
      connections,
      size,
      rate,
      fault,
      timeoutS,
      extra,
      hostAlone,
      log: (l) => console.error(l),
    });
    if (logFile) writeFileSync(`${logFile}.${fault}`, r.log);
    if (stallsFile) writeFileSync(`${stallsFile}.${fault}`, JSON.stringify(r.client.stalls));
    const { stalls, ...client } = r.client;
    // The longest gaps, with the client's port, to find them in a capture.
    const longest = [...stalls].sort((a, b) => b[1] - b[0] - (a[1] - a[0])).slice(0, 5);
    console.log(
      JSON.stringify({
        fault,
        nic: r.nic,
        detectMs: r.detectMs,
        resumeMs: r.resumeMs,
        stalledByFault: r.stalledByFault,
        ...client,
        longestStalls: longest.map(([from, to, conn, port]) => ({
          ms: Math.round(to - from),
          from,
          conn,
          port,
        })),
        serveLog: r.bad.slice(0, 20),
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
} finally {
  await lab.down();
}
process.exit(bad > 0 ? 1 : 0);
