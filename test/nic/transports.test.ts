import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Worker } from 'node:worker_threads';
import { Counters } from '../../src/core/counters.ts';
import { InvalidArgumentError } from '../../src/core/errors.ts';
import { LocalNic } from '../../src/nic/local-nic.ts';
import { type ConnKey, isTreeTransfer, type Nic, resultSize } from '../../src/nic/nic.ts';
import { NicEngine, type NicEngineOptions } from '../../src/nic/nic-engine.ts';
import { PortTransport, SameThreadTransport } from '../../src/nic/transport.ts';
import { checkFromWorker, WorkerProtocolError, type WorkerRequest } from '../../src/nic/worker/protocol.ts';
import { packKeys, unpackInitiate } from '../../src/nic/worker/transfer-wire.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import { keysOf, offloadPair, peerAck, startStreams } from '../offload/helpers.ts';
import { sampleTrees } from '../state/helpers.ts';

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
  let beats = 0;
  const { net, keys, engine, released } = await engineBeside(53, 4, 'beating', { progress: () => beats++ });
  const result = engine.initiate(released());
  assert.equal(result.status, 'success');
  assert.equal(beats, 4, 'one beat a connection installed');
  engine.terminate(keys);
  assert.equal(beats, 8, 'one beat a connection released');
  engine.close();
  net.close();
});

test("a NicEngine tells its owner of each packet injected for its connections before the packet runs: a worker's mark that the application's reads may matter again (quietReads)", async () => {
  const counters = new Counters();
  const seen: { packet: Uint8Array; injectedBefore: number }[] = [];
  const { net, keys, engine, released } = await engineBeside(57, 2, 'told', {
    counters,
    beforeInjected: (packet) => seen.push({ packet, injectedBefore: counters.get('nic.rx.injected') }),
  });
  assert.equal(engine.initiate(released()).status, 'success');
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

test("a NicEngine tells its owner of each connection an update changes before it changes: a worker's mark that the application's reads may matter again (quietReads)", async () => {
  const seen: { port: number; keepIdleMs: number }[] = [];
  const { net, keys, engine, released } = await engineBeside(58, 2, 'updated', {
    beforeUpdated: (conn) =>
      seen.push({ port: conn.state.const.localPort, keepIdleMs: conn.state.cached.keepIdleMs }),
  });
  assert.equal(engine.initiate(released()).status, 'success');
  const before = engine.connection(keys[0]!)!.state.cached.keepIdleMs;
  engine.update({ kind: 'tcp', scope: { keys: [keys[0]!] }, settings: { keepIdleMs: before + 1000 } });
  assert.deepEqual(
    seen,
    [{ port: keys[0]!.localPort, keepIdleMs: before }],
    'told of the one connection named, before its change',
  );
  assert.equal(engine.connection(keys[0]!)!.state.cached.keepIdleMs, before + 1000);
  seen.length = 0;
  engine.update({ kind: 'tcp', scope: 'all', settings: { noDelay: true } });
  assert.deepEqual(
    seen.map((s) => s.port).sort(),
    keys.map((k) => k.localPort).sort(),
    'a settings update of all: each connection',
  );
  engine.terminate(keys);
  engine.close();
  net.close();
});

test("a LocalNic's initiate and terminate reach its engine as the typed requests a worker gets, through its transport's one dispatch", async () => {
  const net = new SimNetwork({ seed: 59, virtualTime: true });
  const make = (id: string) =>
    new LocalNic({
      id,
      link: net.switch.addPort({ name: id, mtu: 1500 }),
      clock: net.clock,
      random: net.random.fork(),
    });
  const a = make('a');
  const b = make('b');
  // Every request either NIC's transport serves, by verb and form.
  const served: string[] = [];
  for (const nic of [a, b]) {
    const here = (nic as unknown as { here: SameThreadTransport }).here;
    const serve = here.serve.bind(here);
    here.serve = ((r: WorkerRequest) => {
      let form = '';
      if (r.op === 'initiate') form = r.arg.batch instanceof Uint8Array ? ' bytes' : ' trees';
      if (r.op === 'terminate') form = r.trees === true ? ' trees' : ' bytes';
      served.push(`${nic.id} ${r.op}${form}`);
      return serve(r);
    }) as typeof here.serve;
  }
  const trees = sampleTrees(3);
  const keys = trees[0]!.paths[0]!.conns.map((s) => ({ ...s.const }) as ConnKey);
  assert.equal((await a.initiate({ kind: 'trees', trees })).status, 'success');
  const released = await a.terminate(keys, { trees: true });
  assert.ok(isTreeTransfer(released), 'the states themselves, in trees');
  const onB = await b.initiate(released, { prod: true });
  assert.equal(onB.status, 'success');
  assert.equal(resultSize(onB), 3);
  const bytes = await b.terminate(keys);
  assert.ok(bytes instanceof Uint8Array && bytes.length > 0);
  assert.equal((await a.initiate(bytes)).status, 'success');
  assert.equal((await a.query(keys)).length, 3);
  assert.deepEqual(served, [
    'a initiate trees',
    'a terminate trees',
    'b initiate trees',
    'b terminate bytes',
    'a initiate bytes',
    'a query',
  ]);
  // A batch refused (its connections run here already): the answer names the keys the batch named.
  const refused = await a.initiate(bytes);
  assert.notEqual(refused.status, 'success');
  assert.deepEqual(
    refused.conns.map((c) => [c.key.remotePort, c.status]),
    keys.map((k) => [k.remotePort, 'failure']),
  );
  for (const nic of [a, b]) nic.close();
  net.close();
});

test('the forms only an engine in this thread takes (a batch of trees, a terminate answered in trees) do not cross a port, and no worker answer may carry trees', async () => {
  const posted: unknown[] = [];
  const fake = { on() {}, postMessage: (m: unknown) => posted.push(m) } as unknown as Worker;
  const port = new PortTransport(fake, () => {});
  await assert.rejects(
    port.request({ op: 'initiate', arg: { batch: { kind: 'trees', trees: [] }, prod: false } }),
    InvalidArgumentError,
  );
  await assert.rejects(port.request({ op: 'terminate', arg: 'all', trees: true }), InvalidArgumentError);
  assert.deepEqual(posted, [], 'nothing posted to the worker');
  const answer = {
    t: 'res',
    id: 1,
    ok: true,
    op: 'terminate',
    value: new Uint8Array(0),
    freed: [],
    moved: [],
  };
  checkFromWorker(answer, () => 'terminate');
  assert.throws(
    () => checkFromWorker({ ...answer, trees: { kind: 'trees', trees: [] } }, () => 'terminate'),
    WorkerProtocolError,
  );
});

/**
 * `n` streams offloaded to a pair's first NIC, and an engine of `opts` beside it on the same
 * network: `released()` terminates the streams there, for the engine to take.
 */
async function engineBeside(seed: number, n: number, id: string, opts: Partial<NicEngineOptions>) {
  const p = offloadPair(seed);
  const { net, host } = p;
  const st = await startStreams(p, n, 50_000, 2000, 2);
  const keys = keysOf(st.sockets);
  const n0 = host.nics[0]!;
  await net.sleep(20);
  assert.equal((await host.offload.offload(keys, n0 as Nic)).moved.length, n);
  const engine = new NicEngine({
    id,
    link: net.switch.addPort({ name: id, mtu: 1500 }),
    clock: net.clock,
    random: net.random.fork(),
    toHost: () => {},
    indicate: () => {},
    ...opts,
  });
  return { net, keys, engine, released: () => n0.engine.terminate(keys) };
}
