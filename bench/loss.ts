/**
 * Download under random loss (needs root): the same file fetched by curl in a namespace from
 * `chimney serve` on a TAP and, in the same run, from python3's http.server on Linux's own TCP in
 * a second namespace on the same bridge. nftables in the client's namespace drops N % of the
 * packets in both directions (`numgen random mod 100 < N drop`, on the input and output hooks).
 * Medians of `runs` runs per level; a run that does not finish within the cap counts as the cap.
 *
 * What one drop takes (`--drop-unit`, default segment): with `segment` the client's veth pair has
 * its offloads off, so the kernel cuts every super-packet into MSS segments as it leaves the
 * bridge towards the client and the input hook drops single segments, as a wire behind a TSO NIC
 * loses them; the senders still hand the kernel super-packets (Chimney on its TAP, Linux on its
 * veth), so neither sender's behaviour changes. With `frame` (every figure before 2026-12-05) the
 * hook sees GSO super-packets and drops them whole, which punishes a sender that retransmits one
 * segment at a time (PRR) against one that resends a whole hole in one super-packet.
 *
 * Linux's server runs the namespace's default congestion control, which is the host's (BBR on
 * the lab machine): BBR does not read random loss as congestion, so at 10 % it keeps a window
 * CUBIC cannot. A second server in the same namespace sets CUBIC on its listening socket
 * (TCP_CONGESTION, which the accepted connections keep), Chimney's own algorithm, so the loss
 * recovery of the two stacks is compared under the same congestion control in the same run.
 *
 * The slow-reader case: a Python client that reads a quarter of the body, stops reading for three
 * seconds (the receive window closes), then reads the rest; again from both servers.
 *
 *   npx tsx bench/loss.ts [--json] [--drop-unit segment|frame]       (or: npm run bench -- loss)
 *   npx tsx bench/loss.ts --levels 1 --runs 1 --pcap /tmp/x.pcap   (diagnosis: one level, a capture
 *   of the Chimney downloads on the client's side)
 *   CHIMNEY_ROOT=<tree> npx tsx bench/loss.ts --levels 10 --chimney-only   (two builds alternated:
 *   only Chimney's downloads, which halves a run at 10 %, Linux CUBIC's taking 80-120 s; no slow reader)
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Lab, missingPrerequisite, sleep } from '../test/interop/lab.ts';

export interface LossLevel {
  lossPct: number;
  /** Median seconds for the download from Chimney. */
  chimneyS: number;
  /** Median seconds for the same download from Linux (same run), its default congestion control. */
  linuxS: number;
  /** The same from Linux with CUBIC set on the listener (same run). */
  linuxCubicS: number;
  ratio: number;
  chimneyRunsS: number[];
  linuxRunsS: number[];
  linuxCubicRunsS: number[];
}

export type DropUnit = 'segment' | 'frame';

export interface LossResult {
  /** What one nftables drop takes: one MSS segment, or a whole GSO super-packet. */
  dropUnit: DropUnit;
  bytes: number;
  runs: number;
  capS: number;
  levels: LossLevel[];
  slowReader: { pauseS: number; chimneyS: number; linuxS: number; ratio: number };
}

const SUBNET = 243;
const PORT = 8080;
const CUBIC_PORT = 8081;

/** http.server with CUBIC set on the listening socket: argv host, port, directory. */
const CUBIC_SERVER = `
import functools, http.server, socket, sys
class S(http.server.ThreadingHTTPServer):
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"cubic")
        super().server_bind()
h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[3])
S((sys.argv[1], int(sys.argv[2])), h).serve_forever()
`;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const round = (x: number, d = 3): number => Math.round(x * 10 ** d) / 10 ** d;

/** A second namespace on the lab's bridge with Linux's TCP as the server. */
export function linuxServerNs(lab: Lab): { ns: string; ip: string; remove: () => void } {
  const ns = `${lab.ns}s`;
  const veth = `${lab.veth}s`;
  const peer = `${lab.veth}t`;
  const ip = `10.9.${lab.subnet}.10`;
  const tryIp = (...a: string[]) => {
    try {
      lab.ip(...a);
    } catch {}
  };
  const remove = () => {
    tryIp('netns', 'del', ns);
    tryIp('link', 'del', veth);
  };
  remove();
  lab.ip('netns', 'add', ns);
  lab.ip('link', 'add', veth, 'type', 'veth', 'peer', 'name', peer, 'netns', ns);
  lab.ip('link', 'set', 'dev', veth, 'master', lab.bridge, 'up');
  lab.ip('-n', ns, 'addr', 'add', `${ip}/24`, 'dev', peer);
  lab.ip('-n', ns, 'link', 'set', 'dev', peer, 'up');
  lab.ip('-n', ns, 'link', 'set', 'dev', 'lo', 'up');
  process.once('exit', remove);
  return { ns, ip, remove };
}

async function setLoss(lab: Lab, pct: number): Promise<void> {
  const rules =
    pct > 0
      ? `table inet chloss {
  chain in { type filter hook input priority 0; numgen random mod 100 < ${pct} drop; }
  chain out { type filter hook output priority 0; numgen random mod 100 < ${pct} drop; }
}`
      : 'table inet chloss {}';
  const r = await lab.sh(`nft delete table inet chloss 2>/dev/null; nft -f - <<'EOF'\n${rules}\nEOF`, 10_000);
  if (r.code !== 0) throw new Error(`nft: ${r.stderr}`);
}

/** Seconds curl took, or the cap if it failed or ran out of time. */
async function curlTime(lab: Lab, url: string, bytes: number, capS: number): Promise<number> {
  const r = await lab.sh(
    `curl -sS --max-time ${capS} -o /dev/null -w '%{size_download} %{time_total}' ${url}`,
    (capS + 10) * 1000,
  );
  const [size, t] = r.stdout.trim().split(' ');
  if (r.code !== 0 || Number(size) !== bytes) return capS;
  return Number(t);
}

const SLOW_READER = `
import socket, sys, time
host, port, path, n, pause = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
s = socket.create_connection((host, port))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
t0 = time.monotonic()
s.sendall(f"GET {path} HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n".encode())
got = 0
paused = False
buf = bytearray(1 << 16)
while True:
    k = s.recv_into(buf)
    if k == 0:
        break
    got += k
    if not paused and got >= n // 4:
        paused = True
        time.sleep(pause)
print(got, time.monotonic() - t0 - pause)
`;

export async function benchLoss(
  o: {
    bytes?: number;
    runs?: number;
    capS?: number;
    levels?: number[];
    /** Capture the client's side of the Chimney downloads under loss into this pcap file (diagnosis). */
    pcap?: string;
    dropUnit?: DropUnit;
    /** Only Chimney's downloads (Linux's figures 0, no slow reader): for builds set side by side. */
    chimneyOnly?: boolean;
    log?: (l: string) => void;
  } = {},
): Promise<LossResult> {
  const why = missingPrerequisite(['curl', 'python3', 'nft']);
  if (why) throw new Error(`loss benchmark: ${why}`);
  const bytes = o.bytes ?? 20 * 1024 * 1024;
  const runs = o.runs ?? 3;
  const capS = o.capS ?? 120;
  // 0 %: the lossless download in the same run, so what loss costs each stack is visible apart
  // from what the machine's load costs it.
  const levels = o.levels ?? [0, 1, 2, 5, 10];
  const log = o.log ?? (() => {});
  const dropUnit = o.dropUnit ?? 'segment';
  // Offloads off on the client's veth pair: the kernel segments (and sums) before the veth, so
  // the client's hooks see MSS segments; GRO off keeps them from being merged again.
  const lab = new Lab({ tag: 'bls', subnet: SUBNET, taps: 1, offloads: dropUnit === 'frame' });
  lab.up();
  const server = linuxServerNs(lab);
  try {
    const file = join(lab.dir, 'bytes');
    writeFileSync(file, Buffer.alloc(bytes, 0x5a));
    const script = join(lab.dir, 'slow.py');
    writeFileSync(script, SLOW_READER);
    const cubicScript = join(lab.dir, 'cubic.py');
    writeFileSync(cubicScript, CUBIC_SERVER);
    const python = (...argv: string[]) => lab.spawn(['ip', 'netns', 'exec', server.ns, 'python3', ...argv]);
    python(cubicScript, server.ip, String(CUBIC_PORT), lab.dir);
    python('-m', 'http.server', String(PORT), '--bind', server.ip, '--directory', lab.dir);
    const srv = await lab.serve({ services: ['http:80'], extra: ['--quiet'] });
    try {
      const chimneyUrl = `http://${lab.chimneyIps[0]}/bytes/${bytes}`;
      const linuxUrl = `http://${server.ip}:${PORT}/bytes`;
      const cubicUrl = `http://${server.ip}:${CUBIC_PORT}/bytes`;
      for (const url of o.chimneyOnly ? [] : [linuxUrl, cubicUrl]) {
        for (let i = 0; i < 50; i++) {
          if ((await curlTime(lab, url, bytes, 5)) < 5) break;
          await sleep(200);
        }
      }
      // Warm-up: ARP, JIT.
      await curlTime(lab, chimneyUrl, bytes, 30);
      const out: LossLevel[] = [];
      const capture = o.pcap
        ? lab.spawnNs([
            'tshark',
            '-q',
            '-i',
            lab.vethPeer,
            '-s',
            '128',
            '-w',
            o.pcap,
            '-f',
            'tcp port 80 or tcp port 8080 or tcp port 8081',
          ])
        : null;
      if (capture) await sleep(1000);
      for (const pct of levels) {
        await setLoss(lab, pct);
        const c: number[] = [];
        const l: number[] = [];
        const lc: number[] = [];
        for (let r = 0; r < runs; r++) {
          c.push(await curlTime(lab, chimneyUrl, bytes, capS));
          l.push(o.chimneyOnly ? 0 : await curlTime(lab, linuxUrl, bytes, capS));
          lc.push(o.chimneyOnly ? 0 : await curlTime(lab, cubicUrl, bytes, capS));
          log(
            `loss ${pct}% run ${r + 1}: chimney ${c.at(-1)} s, linux ${l.at(-1)} s, linux cubic ${lc.at(-1)} s`,
          );
        }
        const chimneyS = round(median(c));
        const linuxS = round(median(l));
        out.push({
          lossPct: pct,
          chimneyS,
          linuxS,
          linuxCubicS: round(median(lc)),
          ratio: linuxS > 0 ? round(chimneyS / linuxS, 2) : 0,
          chimneyRunsS: c,
          linuxRunsS: l,
          linuxCubicRunsS: lc,
        });
      }
      await setLoss(lab, 0);
      if (capture) {
        capture.kill('SIGINT');
        await sleep(500);
      }
      const pauseS = 3;
      const slow = async (host: string, port: number, path: string): Promise<number> => {
        const r = await lab.sh(
          `python3 ${script} ${host} ${port} ${path} ${bytes} ${pauseS}`,
          (capS + 10) * 1000,
        );
        const [got, t] = r.stdout.trim().split(' ');
        if (r.code !== 0 || Number(got) < bytes) return capS;
        return Number(t);
      };
      const sc: number[] = [];
      const sl: number[] = [];
      for (let r = 0; r < (o.chimneyOnly ? 0 : runs); r++) {
        sc.push(await slow(lab.chimneyIps[0]!, 80, `/bytes/${bytes}`));
        sl.push(await slow(server.ip, PORT, '/bytes'));
        log(
          `slow reader run ${r + 1}: chimney ${sc.at(-1)} s, linux ${sl.at(-1)} s (after the ${pauseS} s pause)`,
        );
      }
      const chimneyS = sc.length > 0 ? round(median(sc)) : 0;
      const linuxS = sl.length > 0 ? round(median(sl)) : 0;
      return {
        dropUnit,
        bytes,
        runs,
        capS,
        levels: out,
        slowReader: { pauseS, chimneyS, linuxS, ratio: linuxS > 0 ? round(chimneyS / linuxS, 2) : 0 },
      };
    } finally {
      await srv.stop();
    }
  } finally {
    await lab.down();
    server.remove();
  }
}

export function formatLoss(r: LossResult): string {
  const lines = [
    `${r.bytes} B download, median of ${r.runs} runs (cap ${r.capS} s), nftables drops per ${r.dropUnit}`,
  ];
  for (const l of r.levels) {
    lines.push(
      `${String(l.lossPct).padStart(2)} % loss: chimney ${l.chimneyS} s, linux ${l.linuxS} s, linux with cubic ${l.linuxCubicS} s (same run)  → ratio ${l.ratio}`,
    );
  }
  const s = r.slowReader;
  lines.push(
    `slow reader (pauses ${s.pauseS} s after a quarter; time without the pause): chimney ${s.chimneyS} s, linux ${s.linuxS} s  → ratio ${s.ratio}`,
  );
  return lines.join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const json = process.argv.includes('--json');
  const arg = (name: string): string | undefined => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : undefined;
  };
  // --levels 1,2 --runs 1 --pcap /tmp/x.pcap: a shorter run for diagnosis.
  const lv = arg('--levels');
  const unit = arg('--drop-unit') ?? 'segment';
  if (unit !== 'segment' && unit !== 'frame') throw new Error('--drop-unit segment|frame');
  const r = await benchLoss({
    dropUnit: unit,
    log: (l) => console.error(l),
    levels: lv ? lv.split(',').map(Number) : undefined,
    runs: arg('--runs') ? Number(arg('--runs')) : undefined,
    pcap: arg('--pcap'),
    chimneyOnly: process.argv.includes('--chimney-only'),
  });
  console.log(json ? JSON.stringify(r) : formatLoss(r));
}
