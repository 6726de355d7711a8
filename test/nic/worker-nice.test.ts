import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { WorkerNic } from '../../src/nic/worker-nic.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';

/** The nice value of each thread of this process, from /proc. */
function niceOfThreads(): number[] {
  return readdirSync('/proc/self/task').map(niceOf);
}

function niceOf(tid: string | number): number {
  const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
}

test('CHIMNEY_WORKER_NICE lowers the worker thread alone', {
  skip: process.platform !== 'linux' && 'no /proc',
}, async () => {
  process.env.CHIMNEY_WORKER_NICE = '7';
  const net = new SimNetwork({ seed: 5, virtualTime: false });
  const nic = new WorkerNic({ id: 'n0', link: net.switch.addPort({ name: 'n0', mtu: 1500 }), seed: 1 });
  try {
    await nic.ready();
    const nices = niceOfThreads();
    assert.equal(nices.filter((n) => n === 7).length, 1, `threads' nice values: ${nices}`);
    assert.equal(niceOf(process.pid), 0, 'the main thread keeps its priority');
  } finally {
    nic.close();
    delete process.env.CHIMNEY_WORKER_NICE;
  }
});
