import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import { BACKGROUND_COUNTERS, type BackgroundWarning } from '../../src/offload/offload-manager.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import { addWorkerHost } from '../nic/worker-helpers.ts';

// A worker thread cannot share virtual time, so this runs on wall-clock time (no timing asserted).
test('a NIC that died takes an update without taking the process down: counted, reported as a warning', {
  timeout: 60_000,
}, async (t) => {
  const net = new SimNetwork({ seed: 41, virtualTime: false });
  const wh = addWorkerHost(net, { count: 1 });
  t.after(() => {
    wh.close();
    net.close();
  });
  const peer = net.addHost({ ip: '10.0.0.2/24' });
  await Promise.all(wh.nics.map((n) => n.ready()));
  // An unhandled rejection would end this file's process; record it instead, to assert on.
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown): void => {
    unhandled.push(e);
  };
  process.on('unhandledRejection', onUnhandled);
  t.after(() => process.off('unhandledRejection', onUnhandled));

  peer.createServer((s) => s.pipe(s)).listen(7);
  const sock = wh.host.connect({ port: 7, host: '10.0.0.2' });
  await once(sock, 'connect');
  sock.on('error', () => undefined);
  const nic = wh.nics[0] as WorkerNic;
  const report = await wh.offload.offload('all', nic);
  assert.equal(report.moved.length, 1);
  assert.equal(wh.offload.ownerOf(report.moved[0]), nic);

  const warnings: BackgroundWarning[] = [];
  wh.offload.on('warning', (w: BackgroundWarning) => warnings.push(w));
  const dead = once(nic, 'dead');
  await nic.kill();
  await dead;
  assert.ok(nic.load > 0, 'the manager still counts the connection on the dead NIC, so it sends it updates');

  // The peer's MAC changes: one neighbor update to every NIC that runs connections, the dead one too.
  const counters = wh.stack.counters;
  const before = counters.get(BACKGROUND_COUNTERS.update);
  wh.stack.neighbors.setStatic('10.0.0.2', '02:00:00:00:99:99');
  for (let i = 0; i < 100 && warnings.length === 0; i++) await new Promise((r) => setTimeout(r, 10));

  assert.equal(warnings.length, 1);
  assert.equal(warnings[0].what, 'update');
  assert.equal(warnings[0].nic, nic.id);
  assert.match(warnings[0].error.message, /dead|died/);
  assert.equal(counters.get(BACKGROUND_COUNTERS.update), before + 1);
  assert.deepEqual(unhandled, []);
  assert.equal(wh.offload.listenerCount('error'), 0, 'no error listener was needed');
});
