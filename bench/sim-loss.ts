/**
 * Loss recovery on the simulator, on virtual time (no root): a 20 MB download between two
 * Chimney hosts whose receiver port drops N % both ways (1 ms each way, segmentation offload on).
 * Two loss models: `frame` draws once per frame, so a drop takes a whole super-segment as
 * nftables does on a veth; `segment` draws once per MSS segment of a super-segment, as a wire
 * behind TSO loses them (Impairment.lossPerSegment). Prints the virtual seconds the transfer took,
 * next to the same transfer without loss in the same run, with the sender's retransmission
 * counters.
 *
 *   npx tsx bench/sim-loss.ts [--json] [--model frame|segment|both]   (default both)
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

export type SimLossModel = 'frame' | 'segment';

export interface SimLossResult {
  bytes: number;
  seeds: number;
  /** The same transfer without loss (same run). */
  lossless: number;
  /** Whole-frame loss (the model of every figure before per-segment loss existed). */
  levels: SimLossLevel[];
  /** Per-segment loss; absent when not run. */
  perSegment?: SimLossLevel[];
}

async function transfer(
  bytes: number,
  lossPct: number,
  seed: number,
  model: SimLossModel = 'frame',
): Promise<{ s: number; rto: number; fr: number; rtx: number }> {
  const sim = new SimNetwork({ seed, virtualTime: true });
  const tcp = { sndBufSize: 4 << 20, rcvBufSize: 4 << 20 };
  const a = sim.addHost({ ip: '10.0.0.1/24', tcp, offload: true, impair: { delayMs: 1 } });
  const b = sim.addHost({
    ip: '10.0.0.2/24',
    tcp,
    offload: true,
    impair: { delayMs: 0, loss: lossPct / 100, lossPerSegment: model === 'segment' },
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

async function runLevels(
  bytes: number,
  seeds: number,
  pcts: number[],
  model: SimLossModel,
): Promise<SimLossLevel[]> {
  const levels: SimLossLevel[] = [];
  for (const pct of pcts) {
    const runs = [];
    for (let seed = 1; seed <= seeds; seed++) runs.push(await transfer(bytes, pct, seed, model));
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
  return levels;
}

/** Seeds are 1..seeds for every level and model, so the models see the same seeds. */
export async function benchSimLoss(
  o: { bytes?: number; seeds?: number; levels?: number[]; models?: SimLossModel[] } = {},
): Promise<SimLossResult> {
  const bytes = o.bytes ?? 20 * 1024 * 1024;
  const seeds = o.seeds ?? 3;
  const pcts = o.levels ?? [1, 2, 5, 10];
  const models = o.models ?? ['frame', 'segment'];
  const lossless = (await transfer(bytes, 0, 1)).s;
  const r: SimLossResult = { bytes, seeds, lossless: Math.round(lossless * 1000) / 1000, levels: [] };
  if (models.includes('frame')) r.levels = await runLevels(bytes, seeds, pcts, 'frame');
  if (models.includes('segment')) r.perSegment = await runLevels(bytes, seeds, pcts, 'segment');
  return r;
}

export function formatSimLoss(r: SimLossResult): string {
  const line = (l: SimLossLevel): string =>
    `${String(l.lossPct).padStart(2)} % loss: ${l.seconds} s (×${Math.round((l.seconds / r.lossless) * 10) / 10}), ${l.rtos} RTOs, ${l.fastRetransmits} fast retransmits, ${l.retransmits} retransmitted segments`;
  const out = [
    `${r.bytes} B, 2 ms RTT, virtual time, median of ${r.seeds} seeds (1..${r.seeds}); without loss (same run): ${r.lossless} s`,
  ];
  if (r.levels.length) out.push('loss per frame (a super-segment is one draw):', ...r.levels.map(line));
  if (r.perSegment) out.push('loss per MSS segment (as on a wire behind TSO):', ...r.perSegment.map(line));
  return out.join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const i = process.argv.indexOf('--model');
  const m = i > 0 ? process.argv[i + 1] : 'both';
  if (m !== 'frame' && m !== 'segment' && m !== 'both') throw new Error('--model frame|segment|both');
  const r = await benchSimLoss({ models: m === 'both' ? ['frame', 'segment'] : [m] });
  console.log(process.argv.includes('--json') ? JSON.stringify(r) : formatSimLoss(r));
}
