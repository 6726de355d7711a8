/**
 * HostNic.cross's failure paths: an initiate or a terminate that fails while its crossing is being
 * opened or its request built answers with a rejected promise, never a throw out of the verb, and a
 * terminate that fails so gives back the handles it froze (a WorkerNic's connection would otherwise
 * stay frozen, every write and read refused with "moved to another owner", while it runs on).
 */
import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import { InvalidArgumentError } from '../../src/core/errors.ts';
import { LocalNic } from '../../src/nic/local-nic.ts';
import type { ConnKey, Nic, Transfer } from '../../src/nic/nic.ts';
import type { WorkerConnectionHandle } from '../../src/nic/worker-handle.ts';
import { WorkerNic } from '../../src/nic/worker-nic.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import { sampleTrees } from '../state/helpers.ts';
import {
  halfwayGate,
  STARVED_NOT_DEAD_MS,
  socketKey,
  streamBothWays,
  workerSetup,
} from './worker-helpers.ts';

/** How a verb failed: thrown out of the call itself, or a promise that rejects. */
async function howFailed(call: () => Promise<unknown>): Promise<string> {
  let p: Promise<unknown>;
  try {
    p = call();
  } catch (e) {
    return `threw ${String(e)}`;
  }
  return p.then(
    () => 'resolved',
    () => 'rejected',
  );
}

const KEYS = sampleTrees(3)[0]!.paths[0]!.conns.map((s) => ({ ...s.const }) as ConnKey);
/** A key whose addresses are IPv6 handles, on a NIC that was never given an IPv6 connection. */
const V6_KEY: ConnKey = { localIp: 2 ** 33, localPort: 80, remoteIp: 2 ** 33 + 1, remotePort: 4000 };

/** A LocalNic and a WorkerNic on one switch, closed after the test. */
async function bothNics(t: TestContext, seed: number): Promise<{ local: LocalNic; worker: WorkerNic }> {
  const net = new SimNetwork({ seed, virtualTime: false });
  const port = (name: string) => net.switch.addPort({ name, mtu: 1500 });
  const local = new LocalNic({
    id: 'x.local',
    link: port('x.local'),
    clock: net.clock,
    random: net.random.fork(),
  });
  const worker = new WorkerNic({
    id: 'x.worker',
    link: port('x.worker'),
    seed,
    deadAfterMs: STARVED_NOT_DEAD_MS,
  });
  t.after(() => {
    for (const c of [local, worker, net]) c.close();
  });
  await worker.ready();
  return { local, worker };
}

test('a malformed batch of trees: the initiate rejects on a LocalNic and a WorkerNic alike', async (t) => {
  const { local, worker } = await bothNics(t, 76);
  const bad = { kind: 'trees', trees: [{}] } as unknown as Transfer;
  for (const nic of [local, worker] as Nic[])
    assert.equal(await howFailed(() => nic.initiate(bad)), 'rejected', nic.id);
});

test('a WorkerNic terminate whose keys do not pack rejects and gives back the handles it froze', async (t) => {
  const { worker } = await bothNics(t, 77);
  assert.equal((await worker.initiate({ kind: 'trees', trees: sampleTrees(3) })).status, 'success');
  const h = worker.attach(KEYS[0]!, null) as WorkerConnectionHandle;
  assert.ok(h !== null);
  assert.equal(await howFailed(() => worker.terminate([KEYS[0]!, V6_KEY])), 'rejected');
  assert.equal(h.detached, false, 'the handle is given back');
  assert.ok(h.write(new Uint8Array(100), 0, 100) > 0, 'and takes writes');
  // Nothing moved: the three still run there.
  assert.equal((await worker.query()).length, 3);
});

/** A tree whose neighbor cannot be encoded: read only once the batch is encoded, after the NIC has prepared its connections. */
function unencodable(): Transfer {
  const trees = sampleTrees(3);
  Object.defineProperty(trees[0]!.neighbor, 'cached', {
    get() {
      throw new Error('a neighbor that does not encode');
    },
  });
  return { kind: 'trees', trees };
}

test('an initiate whose batch does not encode, on a NIC already dead, leaves its connections to salvage on a LocalNic and a WorkerNic alike', async (t) => {
  const { local, worker } = await bothNics(t, 78);
  const dead = new Promise<void>((resolve) => worker.once('dead', () => resolve()));
  await worker.kill();
  await dead;
  local.crash('test');
  for (const nic of [local, worker] as Nic[]) {
    assert.equal(await howFailed(() => nic.initiate(unencodable())), 'rejected', nic.id);
    // The transfer that asked takes the batch as having died with the NIC, and rebuilds it from
    // salvage(): on a WorkerNic the blocks the batch was given hold what is left of it.
    const left = nic.salvage!().map((r) => r.key.localPort);
    assert.deepEqual(left.sort(), [40000, 40001, 40002], nic.id);
  }
});

test('a LocalNic that crashes with an initiate in hand answers as a dead WorkerNic does: rejected, the batch left to salvage', async (t) => {
  const { local } = await bothNics(t, 79);
  const inHand = local.initiate({ kind: 'trees', trees: sampleTrees(3) });
  local.crash('test');
  await assert.rejects(inHand, { code: 'ERR_CHIMNEY_INVALID_STATE' });
  // The transfer that asked sees the NIC dead and rebuilds the batch from what it left.
  assert.deepEqual(
    local
      .salvage()
      .map((r) => r.key.localPort)
      .sort(),
    [40000, 40001, 40002],
  );
});

test('an initiate whose batch does not encode, on a live NIC, leaves nothing there: the host still owns the batch, and it can be offered again', async (t) => {
  const { local, worker } = await bothNics(t, 80);
  for (const nic of [local, worker] as Nic[]) {
    assert.equal(await howFailed(() => nic.initiate(unencodable())), 'rejected', nic.id);
    // Alive, the NIC ran none of it and keeps none of it: handed out for salvage, or counted as
    // running, a connection the host rolls back would have two owners.
    assert.deepEqual(
      nic.salvage!().map((r) => r.key.localPort),
      [],
      nic.id,
    );
    assert.equal(nic.runningConns, 0, nic.id);
    assert.deepEqual(await nic.query(), [], nic.id);
    assert.equal(nic.attach(KEYS[0]!, null), null, nic.id);
    // The same connections offered again, whole, run there.
    const again = await nic.initiate({ kind: 'trees', trees: sampleTrees(3) });
    assert.equal(again.status, 'success', nic.id);
    assert.equal((await nic.query()).length, 3, nic.id);
  }
});

test("a hand-over whose refused connections cannot be read back: they are rebuilt in the host from the source's memory, none lost", {
  timeout: 120_000,
}, async (t) => {
  const { wh, peer } = await workerSetup(81, t, { capacity: 4 });
  const [n0, n1] = wh.nics as [WorkerNic, WorkerNic];
  const gate = halfwayGate();
  const st = await streamBothWays(wh.host, peer, 6, 200_000, 1000, gate.gap);
  const keys = st.sockets.map(socketKey);
  const moving = keys.slice(0, 4);
  assert.equal((await wh.offload.offload(moving, n0)).moved.length, 4);
  // Room for two more at the destination: it refuses the other two (no-resources).
  assert.equal((await wh.offload.offload(keys.slice(4), n1)).moved.length, 2);
  // What the source handed back for the refused two does not decode (a state its validation
  // refuses): nothing can be rolled back from it, only rebuilt from the source's hard state.
  n0.readReleased = () => {
    throw new InvalidArgumentError('a released state that does not validate');
  };
  const r = await wh.offload.move(moving, n0, n1);
  assert.equal(wh.stack.counters.get('offload.terminate.invalid'), 1, 'the unreadable answer is counted');
  // The report says where each one runs: two at the destination, two refused and run by the host.
  assert.equal(r.moved.length, 2, 'two handed over');
  for (const k of r.moved) assert.equal(wh.offload.ownerOf(k), n1);
  assert.deepEqual(
    r.refused.map((f) => f.status),
    ['no-resources', 'no-resources'],
  );
  for (const f of r.refused) {
    assert.match(f.reason, /rebuilt in the host/);
    assert.equal(wh.offload.ownerOf(f.key), 'host', 'rebuilt in the host, not lost');
  }
  assert.equal(n0.runningConns, 0, 'nothing left at the source');
  gate.open();
  assert.equal(await st.done, 0, 'every byte arrived, both ways');
  assert.deepEqual(st.errors, []);
});
