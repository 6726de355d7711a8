import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Nic } from '../../src/nic/nic.ts';
import { SameThreadTransport } from '../../src/nic/transport.ts';
import { checkFromWorker, type WorkerRequest } from '../../src/nic/worker/protocol.ts';
import { packKeys, unpackInitiate } from '../../src/nic/worker/transfer-wire.ts';
import { keysOf, offloadPair, startStreams } from '../offload/helpers.ts';

test('the same-thread transport answers every request as a worker must (the worker protocol checker accepts each answer)', async () => {
  const p = offloadPair(52);
  const { net, host } = p;
  const st = await startStreams(p, 4, 50_000, 2000, 2);
  const keys = keysOf(st.sockets);
  const [n0, n1] = host.nics;
  await net.sleep(20);
  assert.equal((await host.offload.offload(keys, n0 as Nic)).moved.length, 4);
  const t0 = new SameThreadTransport(
    () => n0!.engine,
    net.clock,
    () => false,
  );
  const t1 = new SameThreadTransport(
    () => n1!.engine,
    net.clock,
    () => false,
  );
  const ask = async <R extends WorkerRequest>(t: SameThreadTransport, r: R) => {
    const reply = await t.request(r);
    checkFromWorker(reply, () => r.op);
    assert.equal(reply.op, r.op);
    return reply;
  };
  assert.equal((await ask(t0, { op: 'counters', arg: null })).value['nic.initiate.conns'], 4);
  assert.equal((await ask(t0, { op: 'query', arg: undefined })).value.length, 4);
  await ask(t0, { op: 'update', arg: { kind: 'tcp', scope: 'all', settings: { noDelay: true } } });
  assert.deepEqual((await ask(t0, { op: 'takeQueued', arg: packKeys(keys) })).value, []);
  // A terminate's bytes installed elsewhere through the same request protocol: the batch moves whole.
  const bytes = (await ask(t0, { op: 'terminate', arg: packKeys(keys) })).value;
  assert.equal((await ask(t0, { op: 'query', arg: undefined })).value.length, 0);
  const res = await ask(t1, { op: 'initiate', arg: { batch: bytes, prod: false } });
  const { result } = unpackInitiate(res.value);
  assert.equal(result.status, 'success');
  assert.equal(result.conns.length, 4);
  assert.equal((await ask(t1, { op: 'query', arg: keys })).value.length, 4);
  await ask(t0, { op: 'dropFrozen', arg: packKeys(keys) });
  await ask(t1, { op: 'invalidate', arg: { keys } });
  net.close();
});
