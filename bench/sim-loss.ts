/**
 * Loss recovery on the simulator, on virtual time (no root): a 20 MB download between two
 * Chimney hosts whose receiver port drops N % of the frames both ways (1 ms each way, segmentation
 * offload on, so a drop takes a whole super-segment as on a veth). Prints the virtual seconds the
 * transfer took, next to the same transfer without loss in the same run, with the sender's
 * retransmission counters.
 *
 *   npx tsx bench/sim-loss.ts [--json]
 */
import { once } from 'node:events';
import { pathToFileURL } from 'node:url';
import { SimNetwork } from '../src/sim/sim-network.ts';

export interface SimLossLevel {
  lossPct: number;
  /** Virtual seconds, median over seeds. */
  seconds: number;
  rtos: number;
  fastRetransmits: number;
  retransmits: number;
}

export interface SimLossResult {
  bytes: number;
  seeds: number;
  /** The same transfer without loss (same run). */
  lossless: number;
  levels: SimLossLevel[];
}

async function transfer(
  bytes: number,
  lossPct: number,
  seed: number,
): Promise<{ s: number; rto: number; fr: number; rtx: number }> {
  const sim = new SimNetwork({ seed, virtualTime: true });
  const tcp = { sndBufSize: 4 << 20, rcvBufSize: 4 << 20 };
  const a = sim.addHost({ ip: '10.0.0.1/24', tcp, offload: true, impair: { delayMs: 1 } });
  const b = sim.addHost({
    ip: '10.0.0.2/24',
    tcp,
    offload: true,
    impair: { delayMs: 0, loss: lossPct / 100 },
  });
  let received = 0;
  const done = new Promise<void>((resolve) => {
    b.createServer((s) => {
      s.on('data', (d: Buffer) => {
        received += d.length;
      });
      s.on('end', () => {
        s.end();
        resolve();
      });
    }).listen(9);
  });
  const sock = a.connect(9, '10.0.0.2');
  await once(sock, 'connect');
  const t0 = sim.clock.now();
  const chunk = Buffer.alloc(256 * 1024, 0x5a);
  let sent = 0;
  while (sent < bytes) {
    sent += chunk.length;
    if (!sock.write(chunk)) await once(sock, 'drain');
  }
  sock.end();
  await done;
  const s = (sim.clock.now() - t0) / 1000;
  const c = a.stack.counters;
  const r = { s, rto: c.get('tcp.rto'), fr: c.get('tcp.fast_retransmits'), rtx: c.get('tcp.retransmits') };
  sim.close();
  if (received !== sent) throw new Error(`sim-loss lost data: sent ${sent}, received ${received}`);
  return r;
}

function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  return s[s.length >> 1]!;
}

export async function benchSimLoss(
  o: { bytes?: number; seeds?: number; levels?: number[] } = {},
): Promise<SimLossResult> {
  const bytes = o.bytes ?? 20 * 1024 * 1024;
  const seeds = o.seeds ?? 3;
  const lossless = (await transfer(bytes, 0, 1)).s;
  const levels: SimLossLevel[] = [];
  for (const pct of o.levels ?? [1, 2, 5, 10]) {
    const runs = [];
    for (let seed = 1; seed <= seeds; seed++) runs.push(await transfer(bytes, pct, seed));
    const m = median(runs.map((r) => r.s));
    const at = runs.find((r) => r.s === m)!;
    levels.push({
      lossPct: pct,
      seconds: Math.round(m * 1000) / 1000,
      rtos: at.rto,
      fastRetransmits: at.fr,
      retransmits: at.rtx,
    });
  }
  return { bytes, seeds, lossless: Math.round(lossless * 1000) / 1000, levels };
}

export function formatSimLoss(r: SimLossResult): string {
  return [
    `${r.bytes} B, 2 ms RTT, virtual time, median of ${r.seeds} seeds; without loss (same run): ${r.lossless} s`,
    ...r.levels.map(
      (l) =>
        `${String(l.lossPct).padStart(2)} % loss: ${l.seconds} s (×${Math.round((l.seconds / r.lossless) * 10) / 10}), ${l.rtos} RTOs, ${l.fastRetransmits} fast retransmits, ${l.retransmits} retransmitted segments`,
    ),
  ].join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = await benchSimLoss();
  console.log(process.argv.includes('--json') ? JSON.stringify(r) : formatSimLoss(r));
}
