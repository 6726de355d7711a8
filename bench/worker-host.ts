import type { SimNetwork } from '../src/sim/sim-network.ts';
import { addWorkerHost, type WorkerHost } from '../test/nic/worker-helpers.ts';
import { BENCH_DEAD_AFTER_MS } from './args.ts';

/**
 * `addWorkerHost` for a benchmark: its WorkerNics count as dead only after BENCH_DEAD_AFTER_MS
 * without a heartbeat, so that a loaded machine slows the run instead of ending it.
 */
export function benchWorkerHost(
  net: SimNetwork,
  opts: Omit<NonNullable<Parameters<typeof addWorkerHost>[1]>, 'deadAfterMs'> = {},
): WorkerHost {
  return addWorkerHost(net, { ...opts, deadAfterMs: BENCH_DEAD_AFTER_MS });
}
