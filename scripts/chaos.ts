/**
 * Chaos soak for the failover layer: runs seeded team scenarios on the simulator and prints every
 * seed that breaks an invariant, with the command that replays it.
 *
 *   npm run chaos -- --seeds 5000 [--from 1] [--nics N] [--conns N] [--bytes N] [--loss P] [--duplex] [--mixed]
 *
 * --mixed: half the connections over IPv6 (the team announcing itself with unsolicited neighbor
 * advertisements, its members probing the peer with neighbor solicitations as well as ARP).
 */
import { type ChaosOptions, checkChaosSeed } from '../test/team/scenario.ts';

function parse(argv: string[]): { seeds: number; from: number; o: ChaosOptions } {
  const o: ChaosOptions = {};
  let seeds = 300;
  let from = 1;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v)) throw new Error(`${a} needs a number`);
      return v;
    };
    if (a === '--seeds') seeds = num();
    else if (a === '--from') from = num();
    else if (a === '--nics') o.nics = num();
    else if (a === '--conns') o.conns = num();
    else if (a === '--bytes') o.bytes = num();
    else if (a === '--loss') o.loss = num();
    else if (a === '--duplex') o.duplex = true;
    else if (a === '--mixed') o.mixed = true;
    else throw new Error(`unknown argument ${a}`);
  }
  return { seeds, from, o };
}

async function main(): Promise<void> {
  const { seeds, from, o } = parse(process.argv.slice(2));
  const t0 = Date.now();
  let failed = 0;
  for (let s = from; s < from + seeds; s++) {
    const f = await checkChaosSeed(s, o);
    if (f !== null) {
      failed++;
      console.log(`FAIL ${f}`);
    }
    if ((s - from + 1) % 100 === 0)
      console.log(`${s - from + 1}/${seeds} seeds, ${failed} failed, ${Date.now() - t0} ms`);
  }
  console.log(`${seeds} seeds from ${from}: ${failed} failed (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  process.exitCode = failed > 0 ? 1 : 0;
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 2;
});
