/**
 * Accept-time offloads to a WorkerNic against the Linux kernel, captured at the kernel: does the
 * peer see a stall when its connection moves (needs root, tshark, socat, curl)?
 *
 * `chimney serve --workers --offload-policy immediate` on the lab's TAP; in the lab's namespace,
 * `connections` uploads (socat to discard) and as many downloads (curl from http) of `size` bytes
 * start together, `rounds` times, so each round's accepts move in a few transfers whose settle
 * can outlast the kernel's RTO. tshark in the namespace captures the kernel's side (headers
 * only). Per connection, over the first `windowMs` after its SYN (where the move is):
 *
 *   stall       uploads: the longest gap between the kernel's data segments; downloads: the
 *               longest gap between Chimney's data segments after its first, and the wait from
 *               the request to that first byte (the move itself, the application's accept waits
 *               for it)
 *   resends     segments tshark marks retransmitted, by the kernel and by Chimney
 *
 * Beside them, serve's counters: segments the host held through the moves, injected at the
 * NIC, kept at the NIC for a settle (`nic.rx.settle-held`), holds ended by their bound
 * (`nic.rx.settle-hold-expired`), and the NIC's PAWS drops: a held segment run after a newer
 * resend had set ts.recent (session 44's 330-640 ms stall). `CHIMNEY_ROOT=<tree>` runs that
 * tree's build, the same-run reference.
 *
 *   npx tsx bench/held-capture.ts [--json] [--connections N] [--rounds R] [--size BYTES]
 */
import { spawn } from 'node:child_process';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { controlRequest } from '../src/cli/control.ts';
import { Lab, missingPrerequisite, ROOT } from '../test/interop/lab.ts';
import { benchMain, parseBenchFlags } from './args.ts';

export interface HeldCaptureOptions {
  connections?: number;
  rounds?: number;
  size?: number;
}

export interface HeldCaptureResult {
  root: string;
  connections: number;
  rounds: number;
  size: number;
  /** Transfers that ended whole (exit 0, every byte), of `transfers`. */
  intact: number;
  transfers: number;
  /** The longest stall of any connection near its move (ms), and how many had one of 300 ms or more. */
  maxStallMs: number;
  stalls300: number;
  /** The longest wait from a download's request to its first byte (ms). */
  maxFirstByteMs: number;
  /** Segments tshark marks retransmitted near the moves. */
  kernelResends: number;
  chimneyResends: number;
  held: number;
  injected: number;
  settleHeld: number;
  settleExpired: number;
  pawsDrops: number;
  loadAvg: number[];
}

const SUBNET = 236;
/** How long after its SYN a connection's frames count as near its move. */
const WINDOW_MS = 3000;

export function parseHeldCaptureFlags(argv: readonly string[]) {
  return parseBenchFlags<{ connections: number; rounds: number; size: number }>(
    new Command('held-capture')
      .option('--connections <n>', 'uploads, and as many downloads, per round', Number, 8)
      .option('--rounds <n>', 'rounds', Number, 3)
      .option('--size <bytes>', 'bytes per transfer', Number, 2 * 2 ** 20),
    argv,
  );
}

interface Frame {
  t: number;
  fromKernel: boolean;
  len: number;
  syn: boolean;
  resent: boolean;
}

/** Per connection near its move: the stall, the first byte's wait, the resends on each side. */
function analyse(streams: Map<number, { port: number; frames: Frame[] }>) {
  let maxStallMs = 0;
  let stalls300 = 0;
  let maxFirstByteMs = 0;
  let kernelResends = 0;
  let chimneyResends = 0;
  for (const { port, frames } of streams.values()) {
    const t0 = frames.find((f) => f.syn)?.t ?? frames[0]!.t;
    const near = frames.filter((f) => f.t - t0 <= WINDOW_MS / 1000);
    for (const f of near) if (f.resent) f.fromKernel ? kernelResends++ : chimneyResends++;
    // Uploads: the kernel's data; downloads: Chimney's, from its first byte on.
    const data = near.filter((f) => f.len > 0 && f.fromKernel === (port === 9));
    let stall = 0;
    for (let i = 1; i < data.length; i++) stall = Math.max(stall, (data[i]!.t - data[i - 1]!.t) * 1000);
    if (port !== 9) {
      const request = near.find((f) => f.len > 0 && f.fromKernel);
      if (request !== undefined && data.length > 0)
        maxFirstByteMs = Math.max(maxFirstByteMs, (data[0]!.t - request.t) * 1000);
    }
    if (stall >= 300) stalls300++;
    maxStallMs = Math.max(maxStallMs, stall);
  }
  return {
    maxStallMs: Math.round(maxStallMs),
    stalls300,
    maxFirstByteMs: Math.round(maxFirstByteMs),
    kernelResends,
    chimneyResends,
  };
}

export async function benchHeldCapture(
  log: (l: string) => void = () => {},
  o: HeldCaptureOptions = {},
): Promise<HeldCaptureResult> {
  const reason = missingPrerequisite(['tshark', 'socat', 'curl']);
  if (reason) throw new Error(`held-capture: ${reason}`);
  const connections = o.connections ?? 8;
  const rounds = o.rounds ?? 3;
  const size = o.size ?? 2 * 2 ** 20;
  const lab = new Lab({ tag: 'hcap', subnet: SUBNET, taps: 1, mtu: 1500, offloads: false });
  lab.up();
  try {
    const ctl = join(lab.dir, 'ctl.sock');
    const srv = await lab.serve({
      services: ['discard:9', 'http:80'],
      extra: ['--quiet', '--workers', '--offload-policy', 'immediate', '--control', ctl],
    });
    const ip = lab.chimneyIps[0]!;
    await lab.sh(`ping -c 1 -W 2 ${ip} >/dev/null`, 10_000);
    const pcap = join(lab.dir, 'kernel.pcap');
    const dump = spawn(
      'ip',
      ['netns', 'exec', lab.ns, 'tshark', '-q', '-i', lab.vethPeer, '-s', '96', '-w', pcap, '-f', 'tcp'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    dump.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    for (let i = 0; i < 300 && !/Capturing on/.test(err); i++) await new Promise((r) => setTimeout(r, 100));
    if (!/Capturing on/.test(err)) throw new Error(`tshark did not start: ${err}`);
    let intact = 0;
    const loads: number[] = [];
    try {
      for (let r = 0; r < rounds; r++) {
        loads.push(loadavg()[0]!);
        const runs = [];
        for (let i = 0; i < connections; i++) {
          runs.push(
            lab
              .sh(`socat -u OPEN:/dev/zero,readbytes=${size} TCP:${ip}:9`, 300_000)
              .then((x) => x.code === 0),
          );
          runs.push(
            lab
              .sh(`curl -sS --fail -o /dev/null -w '%{size_download}' http://${ip}:80/bytes/${size}`, 300_000)
              .then((x) => x.code === 0 && Number(x.stdout.trim()) === size),
          );
        }
        const ok = (await Promise.all(runs)).filter(Boolean).length;
        intact += ok;
        log(`round ${r + 1}: ${ok} of ${runs.length} whole (load ${loadavg()[0]!.toFixed(1)})`);
      }
    } finally {
      await new Promise((r) => setTimeout(r, 500));
      dump.kill('SIGINT');
      await new Promise((r) => (dump.exitCode !== null ? r(null) : dump.once('exit', r)));
    }
    const sets = (await controlRequest(ctl, { op: 'counters' })) as Record<string, Record<string, number>>;
    await srv.stop();
    const nic = (k: string) =>
      Object.entries(sets)
        .filter(([n]) => n.startsWith('nic:'))
        .reduce((s, [, set]) => s + (set[k] ?? 0), 0);
    const fields = await lab.run(
      [
        'tshark',
        '-r',
        pcap,
        '-T',
        'fields',
        '-E',
        'separator=,',
        '-e',
        'tcp.stream',
        '-e',
        'frame.time_relative',
        '-e',
        'ip.src',
        '-e',
        'tcp.dstport',
        '-e',
        'tcp.srcport',
        '-e',
        'tcp.len',
        '-e',
        'tcp.flags.syn',
        '-e',
        'tcp.analysis.retransmission',
      ],
      600_000,
    );
    if (fields.code !== 0) throw new Error(`tshark -r failed: ${fields.stderr.slice(-500)}`);
    const streams = new Map<number, { port: number; frames: Frame[] }>();
    for (const line of fields.stdout.split('\n')) {
      const [stream, t, src, dport, sport, len, syn, resent] = line.split(',');
      if (stream === undefined || stream === '' || t === undefined) continue;
      const fromKernel = src === lab.kernelIp;
      const port = Number(fromKernel ? dport : sport);
      let s = streams.get(Number(stream));
      if (s === undefined) streams.set(Number(stream), (s = { port, frames: [] }));
      s.frames.push({
        t: Number(t),
        fromKernel,
        len: Number(len),
        syn: syn === '1' || syn === 'True',
        resent: resent !== undefined && resent.trim() !== '',
      });
    }
    return {
      root: ROOT,
      connections,
      rounds,
      size,
      intact,
      transfers: 2 * connections * rounds,
      ...analyse(streams),
      held: sets.host?.['tcp.frozen.queued'] ?? 0,
      injected: nic('nic.rx.injected'),
      settleHeld: nic('nic.rx.settle-held'),
      settleExpired: nic('nic.rx.settle-hold-expired'),
      pawsDrops: nic('tcp.paws.drops'),
      loadAvg: loads,
    };
  } finally {
    await lab.down();
  }
}

export function formatHeldCapture(r: HeldCaptureResult): string {
  return [
    `${r.root}: ${r.rounds} rounds of ${r.connections} uploads and ${r.connections} downloads of ${r.size} bytes, serve --workers, offload immediate`,
    `  whole ${r.intact} of ${r.transfers}; near the moves: longest stall ${r.maxStallMs} ms (${r.stalls300} of 300 ms or more), longest first byte ${r.maxFirstByteMs} ms`,
    `  resent near the moves: kernel ${r.kernelResends}, Chimney ${r.chimneyResends}`,
    `  serve: held ${r.held}, injected ${r.injected}, kept for a settle ${r.settleHeld}, holds expired ${r.settleExpired}, PAWS drops ${r.pawsDrops}`,
    `  load at each round: ${r.loadAvg.map((l) => l.toFixed(1)).join(', ')}`,
  ].join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await benchMain(parseHeldCaptureFlags, async (o) => {
    const r = await benchHeldCapture((l) => console.error(l), o);
    console.log(o.json ? JSON.stringify(r) : formatHeldCapture(r));
  });
}
