/**
 * The benches' WorkerNics outlast a worker thread that goes unscheduled for seconds, as on a loaded
 * machine: `npm run bench -- offload-worker` at load 24 lost a worker to the NIC's 2 s default
 * deadline and ended with "moved 0" instead of its figures.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { BENCH_DEAD_AFTER_MS } from '../../bench/args.ts';
import { benchWorkerHost } from '../../bench/worker-host.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';

test('a bench worker silent for 3 s is not declared dead, and moves connections after', {
  timeout: 60_000,
}, async (t) => {
  assert.ok(BENCH_DEAD_AFTER_MS >= 30_000, 'seconds of a loaded machine fit in the deadline');
  const net = new SimNetwork({ seed: 1, virtualTime: false });
  const wh = benchWorkerHost(net, { capacity: 8 });
  t.after(() => wh.close());
  const peer = net.addHost({ ip: '10.0.0.2/24' });
  await Promise.all(wh.nics.map((n) => n.ready()));
  peer.createServer((s) => s.on('error', () => {})).listen(80);
  const nic0 = wh.nics[0]!;
  const deaths: string[] = [];
  for (const n of wh.nics) n.on('dead', (c: { kind: string }) => deaths.push(`${n.id}: ${c.kind}`));
  // Longer than the NIC's own 2 s default, as a loaded machine's descheduled thread.
  nic0.stall(3000);
  await sleep(3500);
  assert.deepEqual(deaths, [], 'no worker declared dead');
  assert.equal(nic0.death, null);
  const s = wh.host.connect({ host: '10.0.0.2', port: 80 });
  s.on('error', () => {});
  await new Promise<void>((r) => s.once('connect', () => r()));
  const r = await wh.offload.offload('all', nic0);
  assert.equal(r.moved.length, 1, 'the stalled worker took the connection once awake');
  s.destroy();
});
