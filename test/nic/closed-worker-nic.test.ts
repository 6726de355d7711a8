import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import type { ConnectionError } from '../../src/core/errors.ts';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import { socketKey, workerSetup } from './worker-helpers.ts';

// Real threads cannot share virtual time: this one runs on wall-clock time, a few hundred ms once
// the workers run. Starting them is most of a test on a loaded machine (20-40 s at load 40 on 2
// cores): 20 s timed out waiting for them, before the test began. 60 s, as the other rigs'.
describe('a WorkerNic closed while a transfer to it is in flight', () => {
  test('the connections it took are lost at once (the worker reset them), not run on in the host', {
    timeout: 60_000,
  }, async (t) => {
    const { wh, peer } = await workerSetup(5, t);
    const server = peer.createServer((s) => {
      s.on('error', () => {});
      s.pipe(s);
    });
    server.listen(80);
    await once(server, 'listening');
    const s = wh.host.connect(80, '10.0.0.2');
    await once(s, 'connect');
    const key = socketKey(s);
    const nic = wh.nics[1]! as WorkerNic;
    // Closed as soon as the batch is posted: the worker installs it, then its close aborts it.
    const initiate = nic.initiate.bind(nic);
    nic.initiate = (batch, opts) => {
      const answer = initiate(batch, opts);
      nic.close();
      return answer;
    };
    const failed = once(s, 'error') as Promise<[ConnectionError]>;
    const report = await wh.offload.offload([key], nic);
    assert.deepEqual(report.moved, []);
    assert.deepEqual(
      report.refused.map((r) => r.status),
      ['closed'],
    );
    const [err] = await failed;
    assert.equal(err.code, 'ECONNABORTED');
    const k = key;
    assert.equal(wh.stack.tcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort), undefined);
  });
});
