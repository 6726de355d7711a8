/**
 * The Nic contract as a caller sees it, whichever thread runs the engine: the same verbs, in the
 * same order, asked of a LocalNic and of a WorkerNic, give the same answers (results, keys handed
 * back, errors by code). Both are one host side (HostNic) over two transports; what may differ is
 * where a connection's memory lives, never what a verb answers.
 */
import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import { LocalNic } from '../../src/nic/local-nic.ts';
import type { ConnKey, Nic, NicListenHooks, NicListenSpec, Transfer } from '../../src/nic/nic.ts';
import { WorkerNic } from '../../src/nic/worker-nic.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import { decodeBatch } from '../../src/state/state-codec.ts';
import { sampleTrees } from '../state/helpers.ts';
import { STARVED_NOT_DEAD_MS } from './worker-helpers.ts';

type Outcome = { ok: true; value: unknown } | { ok: false; code: string };

/** A verb's answer, or its error's code, as plain data. */
async function outcome(run: () => Promise<unknown>): Promise<Outcome> {
  try {
    return { ok: true, value: await run() };
  } catch (e) {
    return { ok: false, code: (e as { code?: string }).code ?? String(e) };
  }
}

/** Longer than any wait of a case: the worker's stall ends by its kill, never by its time. */
const STALL_MS = 120_000;

/** Waits for `cond`, bounded for a loaded machine. */
async function until(cond: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 30_000;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** Resolves in a later turn of the event loop, once every promise settled now has run its callbacks. */
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

const keyText = (k: ConnKey) => `${k.localIp}:${k.localPort}>${k.remoteIp}:${k.remotePort}`;

/** The keys of the connections in what a terminate handed back, sorted. */
function releasedKeys(bytes: unknown): string[] {
  assert.ok(bytes instanceof Uint8Array, 'terminate hands back bytes');
  const keys: string[] = [];
  for (const t of decodeBatch(bytes, 0))
    for (const p of t.paths) for (const s of p.conns) keys.push(keyText(s.const));
  return keys.sort();
}

/** Three connections of one path (10.0.0.2 to 10.0.0.254), each made anew for every initiate. */
const treesOf = (n = 3): Transfer => ({ kind: 'trees', trees: sampleTrees(n) });

/** The keys of treesOf()'s connections. */
const KEYS = sampleTrees(3)[0]!.paths[0]!.conns.map((s) => ({ ...s.const }) as ConnKey);

/** A key whose addresses are IPv6 handles, on NICs that were never given an IPv6 connection. */
const V6_KEY: ConnKey = { localIp: 2 ** 33, localPort: 80, remoteIp: 2 ** 33 + 1, remotePort: 4000 };

/**
 * The requests `inFlight` sends. Not `counterSnapshot`: a LocalNic reads its engine's counters at
 * once (a simulation's clock may stand still meanwhile), so it never has one in flight.
 */
const IN_FLIGHT = ['terminate', 'query', 'update', 'invalidate', 'takeQueued', 'dropFrozen', 'progressScan'];

/**
 * One request of each verb that asks the engine, sent now and not awaited: their outcomes once
 * they come, by verb (the value left out: only whether each failed, and how).
 */
function inFlight(nic: Nic): Promise<[string, unknown][]> {
  const sent: Promise<unknown>[] = [
    nic.terminate([KEYS[1]!]),
    nic.query(),
    nic.update({ kind: 'tcp', scope: 'all', settings: { noDelay: false } }),
    nic.invalidate({ keys: [KEYS[1]!] }),
    nic.takeQueued([KEYS[1]!]),
    nic.dropFrozen([KEYS[1]!]),
    nic.progressScan(),
  ];
  return Promise.all(
    sent.map(async (p, i) => {
      const o = await outcome(() => p);
      return [IN_FLIGHT[i]!, o.ok ? { ok: true } : o] as [string, unknown];
    }),
  );
}

/** Whether `nic` says it holds `k`'s four-tuple. */
const holds = (nic: Nic, k: ConnKey) => nic.holds!(k.localIp, k.localPort, k.remoteIp, k.remotePort);

/**
 * What `listen` gives on a NIC that cannot listen (closed or dead): checked before it reads its
 * arguments, so none is needed ('a stop' would be a listener that answers nothing).
 */
const listensAt = (nic: Nic) =>
  nic.listen!({} as NicListenSpec, {} as NicListenHooks) === null ? null : 'a stop';

/** The verb sequence, its answers as plain data, in order. */
async function run(nic: Nic & { close(): void; ready(): Promise<void> }): Promise<unknown[]> {
  const out: unknown[] = [];
  const initiate = async (t: unknown) => {
    const o = await outcome(() => nic.initiate(t as Transfer));
    if (!o.ok) return o;
    const r = o.value as Awaited<ReturnType<Nic['initiate']>>;
    return { status: r.status, conns: r.conns.map((c) => [keyText(c.key), c.status, c.reason ?? '']) };
  };
  const terminate = async (keys: unknown) => {
    const o = await outcome(() => nic.terminate(keys as ConnKey[]));
    return o.ok ? { ok: true, keys: releasedKeys(o.value) } : o;
  };
  const queried = async () => (await nic.query()).map((q) => keyText(q.key)).sort();

  // Its engine runs (a worker's first heartbeat came; a LocalNic's engine runs from its making).
  out.push(['ready', await outcome(() => nic.ready())]);
  out.push(['initiate of neither trees nor bytes', await initiate(42)]);
  out.push(['terminate of neither keys nor all', await terminate('x')]);
  out.push(['initiate', await initiate(treesOf())]);
  const keys = KEYS;
  out.push(['initiate of connections it runs', await initiate(treesOf())]);
  out.push(['query', await queried()]);
  out.push(['holds one it runs', holds(nic, keys[0]!)]);
  out.push(['attach of an unknown key', nic.attach({ ...keys[0]!, remotePort: 1 }, null) === null]);
  out.push(['attach', nic.attach(keys[0]!, null) !== null]);
  // What it runs is not left over: handed out, a connection would have two owners.
  out.push(['salvage of one it runs', nic.salvage?.([keys[0]!]).length]);
  out.push(['salvage of all it runs', nic.salvage?.().length]);
  out.push(['attachClosed of one that runs', nic.attachClosed?.(keys[1]!, null) ?? null]);
  out.push(['takeQueued', await nic.takeQueued(keys)]);
  await nic.update({ kind: 'tcp', scope: 'all', settings: { noDelay: true } });
  // Asked to upload what it was told to stop: the indication comes in a later turn (another
  // thread's message for a worker), waited for as long as a loaded machine needs.
  const told = new Promise<unknown>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no upload-requested within 30 s')), 30_000);
    nic.on('upload-requested', (named, reason) => {
      clearTimeout(timer);
      resolve([named.map(keyText), reason]);
    });
  });
  await nic.invalidate({ keys: [keys[2]!] });
  out.push(['invalidate of one', await told]);
  out.push(['counters', (await nic.counterSnapshot()).values['nic.initiate.conns']]);
  out.push(['terminate naming one twice', await terminate([keys[0], keys[0]])]);
  // Leaving from the request on: a socket attached now would be left on a released connection.
  const leaving = terminate([keys[0]]);
  out.push(['attach while its terminate is in flight', nic.attach(keys[0]!, null)]);
  out.push(['terminate of one', await leaving]);
  out.push(['terminate of one no longer here', await terminate([keys[0]])]);
  // Malformed as a whole (no IPv6 table here to name its addresses): nothing is released.
  out.push(['terminate of an IPv4 key and an IPv6 key', await terminate([keys[1], V6_KEY])]);
  out.push(['query after', await queried()]);
  out.push(['terminate all', await terminate('all')]);
  out.push(['query at the end', await queried()]);
  out.push(['counters at the end', (await nic.counterSnapshot()).values['nic.terminate.conns']]);
  // Closed with a batch in hand: the NIC took it before the close, and the close aborts it with
  // everything else it runs (a worker installs what its port brought first).
  const inHand = initiate(treesOf(1));
  // Requests still waiting for their answer at the close fail: the engine will answer nothing
  // more (a LocalNic's ran on its closed engine and answered as if nothing had happened).
  const waiting = inFlight(nic);
  nic.close();
  out.push(['initiate in hand at the close', await inHand]);
  out.push(['requests in flight at the close', await waiting]);
  out.push(['counters once closed', await outcome(() => nic.counterSnapshot())]);
  out.push(['initiate once closed', await initiate(treesOf(1))]);
  out.push(['terminate once closed', await terminate('all')]);
  // Nothing runs there any more: no four-tuple is held, no listener can start.
  out.push(['holds once closed', holds(nic, keys[0]!)]);
  out.push(['listen once closed', listensAt(nic)]);
  // Its close reset what it ran (the batch in hand too): nothing is left to rebuild.
  out.push(['salvage once closed', nic.salvage().length]);
  // Refused as every verb once closed, whether its engine ran first or not.
  out.push(['ready once closed', await outcome(() => nic.ready())]);
  return out;
}

/** A LocalNic and a started WorkerNic on one switch, ids `<prefix>.local` and `<prefix>.worker`, closed after the test. */
async function bothNics(
  t: TestContext,
  seed: number,
  prefix: string,
): Promise<{ local: LocalNic; worker: WorkerNic }> {
  const net = new SimNetwork({ seed, virtualTime: false });
  const local = new LocalNic({
    id: `${prefix}.local`,
    link: net.switch.addPort({ name: `${prefix}.local`, mtu: 1500 }),
    clock: net.clock,
    random: net.random.fork(),
  });
  const worker = new WorkerNic({
    id: `${prefix}.worker`,
    link: net.switch.addPort({ name: `${prefix}.worker`, mtu: 1500 }),
    seed,
    deadAfterMs: STARVED_NOT_DEAD_MS,
  });
  t.after(() => {
    local.close();
    worker.close();
    net.close();
  });
  await worker.ready();
  return { local, worker };
}

/** bothNics, each given treesOf()'s three connections, then dead: the WorkerNic's thread killed, the LocalNic crashed. */
async function bothDead(
  t: TestContext,
  seed: number,
  prefix: string,
): Promise<{ local: LocalNic; worker: WorkerNic }> {
  const both = await bothNics(t, seed, prefix);
  for (const nic of [both.local, both.worker] as Nic[])
    assert.equal((await nic.initiate(treesOf())).status, 'success', nic.id);
  const dead = new Promise<void>((resolve) => both.worker.once('dead', () => resolve()));
  await both.worker.kill();
  await dead;
  both.local.crash('test');
  return both;
}

test('a LocalNic and a WorkerNic answer the same verb sequence alike (the one host side of both)', async (t) => {
  const { local, worker } = await bothNics(t, 71, 'c');
  const fromLocal = await run(local);
  const fromWorker = await run(worker);
  assert.deepEqual(fromWorker, fromLocal);
  // And what both answer is the contract's, not a shared mistake.
  const byName = new Map(fromLocal.map((e) => e as [string, unknown]));
  assert.deepEqual(byName.get('ready'), { ok: true, value: undefined });
  assert.deepEqual(byName.get('initiate of neither trees nor bytes'), {
    ok: false,
    code: 'ERR_CHIMNEY_INVALID_ARG',
  });
  assert.deepEqual(byName.get('terminate of neither keys nor all'), {
    ok: false,
    code: 'ERR_CHIMNEY_INVALID_ARG',
  });
  assert.equal((byName.get('initiate') as { status: string }).status, 'success');
  const again = byName.get('initiate of connections it runs') as { status: string; conns: string[][] };
  assert.equal(again.status, 'failure');
  assert.ok(again.conns.every((c) => c[2] === 'already offloaded here'));
  assert.equal((byName.get('query') as string[]).length, 3);
  assert.equal(byName.get('attach of an unknown key'), true);
  assert.equal(byName.get('attach'), true);
  assert.equal(byName.get('salvage of one it runs'), 0);
  assert.equal(byName.get('salvage of all it runs'), 0);
  assert.equal(byName.get('attachClosed of one that runs'), null);
  assert.deepEqual(byName.get('takeQueued'), []);
  assert.deepEqual(byName.get('invalidate of one'), [[keyText(KEYS[2]!)], 'invalid-state']);
  assert.equal(byName.get('counters'), 3);
  assert.deepEqual(byName.get('terminate naming one twice'), { ok: false, code: 'ERR_CHIMNEY_INVALID_ARG' });
  assert.equal(byName.get('attach while its terminate is in flight'), null);
  assert.equal((byName.get('terminate of one') as { keys: string[] }).keys.length, 1);
  assert.deepEqual(byName.get('terminate of one no longer here'), { ok: true, keys: [] });
  assert.deepEqual(byName.get('terminate of an IPv4 key and an IPv6 key'), {
    ok: false,
    code: 'ERR_CHIMNEY_INVALID_ARG',
  });
  // The invalidated one is stopped, not run (no query finds it), and still handed back by 'all'.
  assert.deepEqual(byName.get('query after'), [keyText(KEYS[1]!)]);
  assert.deepEqual(
    (byName.get('terminate all') as { keys: string[] }).keys,
    [keyText(KEYS[1]!), keyText(KEYS[2]!)].sort(),
  );
  assert.deepEqual(byName.get('query at the end'), []);
  assert.equal(byName.get('counters at the end'), 3);
  assert.deepEqual(byName.get('initiate in hand at the close'), { ok: false, code: 'ECONNABORTED' });
  assert.deepEqual(byName.get('initiate once closed'), { ok: false, code: 'ERR_CHIMNEY_INVALID_STATE' });
  assert.deepEqual(byName.get('terminate once closed'), { ok: false, code: 'ERR_CHIMNEY_INVALID_STATE' });
  assert.equal(byName.get('holds one it runs'), true);
  assert.equal(byName.get('holds once closed'), false);
  assert.equal(byName.get('listen once closed'), null);
  assert.equal(byName.get('salvage once closed'), 0);
  const refused = { ok: false, code: 'ERR_CHIMNEY_INVALID_STATE' };
  assert.deepEqual(
    byName.get('requests in flight at the close'),
    IN_FLIGHT.map((v) => [v, refused]),
  );
  assert.deepEqual(byName.get('counters once closed'), refused);
  assert.deepEqual(byName.get('ready once closed'), { ok: false, code: 'ERR_CHIMNEY_INVALID_STATE' });
});

test('a wait for ready() fails when its NIC is closed before its engine ran (a WorkerNic before its first beat)', async (t) => {
  // Only a NIC on a thread of its own starts after its making; a LocalNic's engine runs at once.
  const net = new SimNetwork({ seed: 74, virtualTime: false });
  const worker = new WorkerNic({
    id: 'f.worker',
    link: net.switch.addPort({ name: 'f.worker', mtu: 1500 }),
    seed: 74,
    deadAfterMs: STARVED_NOT_DEAD_MS,
  });
  t.after(() => {
    worker.close();
    net.close();
  });
  // Asked and closed in one turn: its first beat, a message, cannot have come.
  const waiting = outcome(() => worker.ready());
  worker.close();
  // The close ends the wait at once (a rejection in this turn's microtasks), so one later turn
  // tells a wait that failed from one left pending for ever.
  const answered = await Promise.race([waiting, nextTurn().then(() => 'still waiting')]);
  assert.deepEqual(answered, { ok: false, code: 'ERR_CHIMNEY_INVALID_STATE' });
});

test('a dead NIC attaches nothing, LocalNic and WorkerNic alike, and still leaves every connection to salvage', async (t) => {
  const { local, worker } = await bothDead(t, 72, 'd');
  const answers = (nic: Nic) => {
    // Attached, a socket would run on a handle nothing runs (a settle whose destination died
    // after its initiate answered): null sends it to the recover, which rebuilds from salvage.
    const attached = KEYS.map((k) => (nic.attach(k, null) === null ? null : 'a handle'));
    const left = nic.salvage!()
      .map((r) => keyText(r.key))
      .sort();
    return { attached, left, held: KEYS.some((k) => holds(nic, k)), listen: listensAt(nic) };
  };
  const fromLocal = answers(local);
  const fromWorker = answers(worker);
  assert.deepEqual(fromWorker, fromLocal);
  assert.deepEqual(fromLocal.attached, [null, null, null]);
  assert.equal(fromLocal.held, false);
  assert.equal(fromLocal.listen, null);
  assert.deepEqual(fromLocal.left, KEYS.map(keyText).sort());
});

test('requests in flight at a death fail, and a terminate among them leaves its connections to salvage, LocalNic and WorkerNic alike', {
  timeout: 120_000,
}, async (t) => {
  const { local, worker } = await bothNics(t, 76, 'h');
  for (const nic of [local, worker] as Nic[])
    assert.equal((await nic.initiate(treesOf())).status, 'success', nic.id);
  // The worker's thread held inside a unit of work, so it cannot answer what is sent now before
  // the kill stops it: what it would have answered first is not this case.
  const entered = new SharedArrayBuffer(4);
  worker.stall(STALL_MS, { entered });
  await until(() => Atomics.load(new Int32Array(entered), 0) === 1, 'the worker to enter its stall');
  const answers = async (nic: Nic, die: () => void) => {
    const waiting = inFlight(nic);
    die();
    // Died with its terminate in hand: its three are rebuilt from what it left (a transfer's
    // `src.death` path); answered, a LocalNic's closed engine said it released none of them.
    return { requests: await waiting, left: nic.salvage(KEYS).length };
  };
  const fromLocal = await answers(local, () => local.crash('test'));
  const dead = new Promise<void>((resolve) => worker.once('dead', () => resolve()));
  const fromWorker = await answers(worker, () => worker.terminateThread());
  await dead;
  assert.deepEqual(fromWorker, fromLocal);
  const died = { ok: false, code: 'ERR_CHIMNEY_INVALID_STATE' };
  assert.deepEqual(fromLocal, { requests: IN_FLIGHT.map((v) => [v, died]), left: 3 });
});

test('a dead NIC its owner then closed leaves nothing to salvage, LocalNic and WorkerNic alike', async (t) => {
  const { local, worker } = await bothDead(t, 75, 'g');
  // Dead, each still has all three for a rebuild (the case above); closed by its owner since
  // (a shutdown during a failover), what it kept is let go.
  const answers = (nic: Nic) => {
    const before = nic.salvage([KEYS[0]!]).map((r) => keyText(r.key));
    nic.close();
    return { before, after: nic.salvage().length, named: nic.salvage(KEYS).length };
  };
  const fromLocal = answers(local);
  const fromWorker = answers(worker);
  assert.deepEqual(fromWorker, fromLocal);
  assert.deepEqual(fromLocal, { before: [keyText(KEYS[0]!)], after: 0, named: 0 });
});

test('a NIC its owner closed attaches nothing and leaves nothing to salvage, LocalNic and WorkerNic alike', async (t) => {
  const { local, worker } = await bothNics(t, 73, 'e');
  for (const nic of [local, worker] as Nic[])
    assert.equal((await nic.initiate(treesOf())).status, 'success', nic.id);
  const answers = (nic: Nic) => {
    // Attached before, each is aborted by the close; attached after, a socket would wait on a
    // connection nothing runs any more (a WorkerNic's handles outlive its close until its worker
    // aborts them): null sends a settle's socket the end of its connection instead.
    assert.ok(
      KEYS.every((k) => nic.attach(k, null) !== null),
      `${nic.id} runs all before its close`,
    );
    nic.close();
    // Salvaged, a record would rebuild a connection whose peer the close reset.
    return {
      attached: KEYS.map((k) => (nic.attach(k, null) === null ? null : 'a handle')),
      left: nic.salvage().length,
      // A SYN of one of them, sent again, would be left to a NIC that answers nothing.
      held: KEYS.map((k) => holds(nic, k)),
    };
  };
  const fromLocal = answers(local);
  const fromWorker = answers(worker);
  assert.deepEqual(fromWorker, fromLocal);
  assert.deepEqual(fromLocal, { attached: [null, null, null], left: 0, held: [false, false, false] });
});
