import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Counters } from '../../src/core/counters.ts';
import { InvalidArgumentError } from '../../src/core/errors.ts';
import { LocalNic } from '../../src/nic/local-nic.ts';
import type { Nic } from '../../src/nic/nic.ts';
import { NicEngine } from '../../src/nic/nic-engine.ts';
import { SameThreadTransport } from '../../src/nic/transport.ts';
import { checkFromWorker, type WorkerRequest } from '../../src/nic/worker/protocol.ts';
import { packKeys, unpackInitiate } from '../../src/nic/worker/transfer-wire.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import { keysOf, offloadPair, peerAck, startStreams } from '../offload/helpers.ts';

test('the same-thread transport answers every request as a worker must (the worker protocol checker accepts each answer)', async () => {
  const p = offloadPair(52);
  const { net, host } = p;
  const st = await startStreams(p, 4, 50_000, 2000, 2);
  const keys = keysOf(st.sockets);
  const [n0, n1] = host.nics;
  await net.sleep(20);
  assert.equal((await host.offload.offload(keys, n0 as Nic)).moved.length, 4);
  // The contract's counters: read at once from the engine's own set, which names itself as source.
  const snap = await n0!.counterSnapshot();
  assert.equal(snap.source, n0!.engine.counters);
  assert.equal(snap.values['nic.initiate.conns'], 4);
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
  // A worker's forms of shared memory mean nothing to an engine in this thread: refused, nothing
  // installed, rather than a batch by records taken for one with no connections.
  await assert.rejects(
    t1.request({ op: 'initiate', arg: { batch: bytes, prod: false, owner: 1 } }),
    InvalidArgumentError,
  );
  await assert.rejects(
    t0.request({ op: 'terminate', arg: packKeys(keys), records: true }),
    InvalidArgumentError,
  );
  assert.equal((await ask(t1, { op: 'query', arg: undefined })).value.length, 0);
  const res = await ask(t1, { op: 'initiate', arg: { batch: bytes, prod: false } });
  const { result } = unpackInitiate(res.value);
  assert.equal(result.status, 'success');
  assert.equal(result.conns.length, 4);
  assert.equal((await ask(t1, { op: 'query', arg: keys })).value.length, 4);
  await ask(t0, { op: 'dropFrozen', arg: packKeys(keys) });
  await ask(t1, { op: 'invalidate', arg: { keys } });
  net.close();
});

test('LocalNics built on one shared set of counters name it as their source, so a sum over NICs reads it once', async () => {
  const net = new SimNetwork({ seed: 3, virtualTime: true });
  const shared = new Counters();
  const make = (id: string, counters?: Counters) =>
    new LocalNic({
      id,
      link: net.switch.addPort({ name: id, mtu: 1500 }),
      clock: net.clock,
      random: net.random.fork(),
      counters,
    });
  const a = make('a', shared);
  const b = make('b', shared);
  const c = make('c');
  const [sa, sb, sc] = await Promise.all([a.counterSnapshot(), b.counterSnapshot(), c.counterSnapshot()]);
  assert.equal(sa.source, shared);
  assert.equal(sb.source, sa.source);
  assert.notEqual(sc.source, sa.source);
  // Read as they stand at the call.
  shared.inc('x', 2);
  assert.equal((await a.counterSnapshot()).values.x, 2);
  for (const n of [a, b, c]) n.close();
  net.close();
});

test("a NicEngine reports progress for every connection a batch installs or releases: a worker's proof of life through a batch longer than its watchdog's deadline", async () => {
  const p = offloadPair(53);
  const { net, host } = p;
  const st = await startStreams(p, 4, 50_000, 2000, 2);
  const keys = keysOf(st.sockets);
  const n0 = host.nics[0]!;
  await net.sleep(20);
  assert.equal((await host.offload.offload(keys, n0 as Nic)).moved.length, 4);
  let beats = 0;
  const engine = new NicEngine({
    id: 'beating',
    link: net.switch.addPort({ name: 'beating', mtu: 1500 }),
    clock: net.clock,
    random: net.random.fork(),
    toHost: () => {},
    indicate: () => {},
    progress: () => beats++,
  });
  const result = engine.initiate(n0.engine.terminate(keys));
  assert.equal(result.status, 'success');
  assert.equal(beats, 4, 'one beat a connection installed');
  engine.terminate(keys);
  assert.equal(beats, 8, 'one beat a connection released');
  engine.close();
  net.close();
});

test("a NicEngine tells its owner of each packet injected for its connections before the packet runs: a worker's mark that the application's reads may matter again (quietReads)", async () => {
  const p = offloadPair(57);
  const { net, host } = p;
  const st = await startStreams(p, 2, 50_000, 2000, 2);
  const keys = keysOf(st.sockets);
  const n0 = host.nics[0]!;
  await net.sleep(20);
  assert.equal((await host.offload.offload(keys, n0 as Nic)).moved.length, 2);
  const counters = new Counters();
  const seen: { packet: Uint8Array; injectedBefore: number }[] = [];
  const engine = new NicEngine({
    id: 'told',
    link: net.switch.addPort({ name: 'told', mtu: 1500 }),
    clock: net.clock,
    random: net.random.fork(),
    counters,
    toHost: () => {},
    indicate: () => {},
    beforeInjected: (packet) => seen.push({ packet, injectedBefore: counters.get('nic.rx.injected') }),
  });
  assert.equal(engine.initiate(n0.engine.terminate(keys)).status, 'success');
  const acks = keys.map(peerAck);
  engine.inject(acks);
  assert.equal(counters.get('nic.rx.injected'), 2, 'both packets ran');
  assert.deepEqual(
    seen.map((s) => [s.packet, s.injectedBefore]),
    [
      [acks[0], 0],
      [acks[1], 1],
    ],
    'each packet was told of just before it ran, in order',
  );
  engine.terminate(keys);
  engine.close();
  net.close();
});
