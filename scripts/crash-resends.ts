/**
 * A crash at 1,000 downloads (needs root): `chimney serve --tap A --tap B --workers` serving slow
 * HTTP downloads to the Linux kernel in the lab namespace, the worker carrying most of them killed
 * once all have data (test/interop/tap-load.ts runLoad). Prints one JSON line: the downloads'
 * longest stall, what the client's kernel saw resent needlessly (TcpExtTCPDSACKOldSent: D-SACKs it
 * sent for data it already had) and the surviving NIC's own counters from serve's `counters`
 * control request, read while it runs (timeouts, those undone by Eifel, tail probes, resends, the
 * loss timers' input drains and late yields).
 *
 *   npx tsx scripts/crash-resends.ts [--connections 1000] [--size 1000000] [--rate 150000]
 *
 * CHIMNEY_ROOT=<checkout> runs another tree's serve (test/interop/lab.ts ROOT): alternate it with
 * this one's, one run at a time, for a same-session reference.
 */
import { execFileSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { controlRequest } from '../src/cli/control.ts';
import { Lab, missingPrerequisite } from '../test/interop/lab.ts';
import { runLoad } from '../test/interop/tap-load.ts';

const arg = (n: string, d: number): number => {
  const i = process.argv.indexOf(`--${n}`);
  return i >= 0 ? Number(process.argv[i + 1]) : d;
};
const why = missingPrerequisite(['python3']);
if (why) throw new Error(`crash-resends: ${why}`);

const lab = new Lab({ tag: 'crr', subnet: 187, taps: 2 });

/** The lab namespace's kernel counters (/proc/net/netstat), as `TcpExt:Name`. */
function netstat(): Map<string, number> {
  const t = execFileSync('ip', ['netns', 'exec', lab.ns, 'cat', '/proc/net/netstat'], { encoding: 'utf8' });
  const lines = t.split('\n');
  const out = new Map<string, number>();
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const k = lines[i]!.split(/\s+/);
    const v = lines[i + 1]!.split(/\s+/);
    for (let j = 1; j < k.length; j++) out.set(`${k[0]}${k[j]}`, Number(v[j]));
  }
  return out;
}

const WANTED = /undo|tlp\.probes|^tcp\.rto$|^tcp\.retransmits$|^tcp\.timer\./;
lab.up();
try {
  // serve stops when runLoad returns: its counters are read while it runs, each set's latest
  // non-empty answer kept (a busy worker's may not come in time; a dead one's has none).
  const sets: Record<string, Record<string, number>> = {};
  let running = true;
  const ctl = join(lab.dir, 'ctl-load-crash.sock');
  const poller = (async () => {
    while (running) {
      try {
        const got = (await controlRequest(ctl, { op: 'counters' }, 5000)) as typeof sets;
        for (const [k, v] of Object.entries(got)) if (Object.keys(v).length > 0) sets[k] = v;
      } catch {
        // Not up yet, or too busy to answer this time.
      }
      await new Promise((r) => setTimeout(r, 300));
    }
  })();
  const before = netstat();
  const r = await runLoad(lab, {
    connections: arg('connections', 1000),
    size: arg('size', 1_000_000),
    rate: arg('rate', 150_000),
    fault: 'crash',
    timeoutS: 300,
    log: (l) => console.error(l),
  });
  running = false;
  await poller;
  const after = netstat();
  const moved = (k: string): number => (after.get(k) ?? 0) - (before.get(k) ?? 0);
  const survivor = Object.entries(sets).find(([k]) => k.startsWith('nic:') && k !== `nic:${r.nic}`)?.[1];
  console.log(
    JSON.stringify({
      connections: r.client.connections,
      load: Math.round(loadavg()[0]! * 10) / 10,
      failed: r.client.failed,
      resets: r.client.resets,
      badLogLines: r.bad.length,
      faultToDetectMs: r.realDetectMs,
      maxStallMs: r.client.maxStallMs,
      p99StallMs: r.client.p99StallMs,
      dsackOldSent: moved('TcpExt:TCPDSACKOldSent'),
      survivor:
        survivor === undefined
          ? null
          : Object.fromEntries(Object.entries(survivor).filter(([k]) => WANTED.test(k))),
    }),
  );
} finally {
  await lab.down();
}
