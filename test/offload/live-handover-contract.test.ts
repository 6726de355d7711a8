/**
 * The live hand-over between owners of the host's thread goes through the Nic contract only
 * (`engine?`, `handsLive?`): a target of any kind whose connections run in the host's thread
 * joins the host's store of four-tuples and takes and gives live connections, and one that says
 * it cannot now (`handsLive` false) is taken the general protocol's way. Before, the transfer
 * tested for a LocalNic and read its `engine`, `running` and `faults`, so another kind of target
 * in the host's thread was moved by release and install, or not at all.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ConnKey, InitiateResult, Nic, QueryResult, Transfer } from '../../src/nic/nic.ts';
import type { NicEngine } from '../../src/nic/nic-engine.ts';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import { EngineNic, keysOf, nicRig, startStreams } from './helpers.ts';

/**
 * A target in the host's thread that is neither a LocalNic nor a WorkerNic: an engine on a link,
 * and a host link of its own. Its general protocol's verbs are only counted and refused, so a
 * connection it runs got there live.
 */
class ThreadNic extends EngineNic implements Nic {
  readonly inProcess = true;
  handsLive = true;
  /** Verbs of the general protocol it was asked for. */
  general = 0;

  get engine(): NicEngine {
    return this.eng;
  }
  private refuse(): Promise<never> {
    this.general++;
    return Promise.reject(new Error(`${this.id}: the general protocol`));
  }
  initiate(_batch: Transfer): Promise<InitiateResult> {
    return this.refuse();
  }
  terminate(_keys: ConnKey[] | 'all'): Promise<Uint8Array>;
  terminate(_keys: ConnKey[] | 'all', _opts: object): Promise<Transfer>;
  terminate(): Promise<Transfer> {
    return this.refuse();
  }
  async update(): Promise<void> {}
  async query(): Promise<QueryResult[]> {
    return [];
  }
  async progressScan(): Promise<Float64Array> {
    return new Float64Array(0);
  }
  takeQueued(): Promise<Uint8Array[]> {
    return this.refuse();
  }
  dropFrozen(): Promise<void> {
    return this.refuse();
  }
}

/** A host (10.0.0.1) whose stack reaches the segment through two ThreadNics, and a peer (10.0.0.2). */
const rig = (seed: number) =>
  nicRig(seed, 'fake', (id, link, clock, random) => new ThreadNic(id, link, clock, random));

const lookup = (tcp: NicEngine['tcp'], k: ConnKey): TcpConnection | undefined =>
  tcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort);

test('a target of any kind in the host thread takes part in the live hand-over: it shares the host store, its connections move as the same objects, and while it cannot (handsLive false) the general protocol runs', async () => {
  const { net, stack, nics, m, pair, close } = rig(41);
  const [f0, f1] = nics as [ThreadNic, ThreadNic];
  for (const f of nics)
    assert.ok(f.engine.tcp.table.sharesWith(stack.tcp.table), `${f.id} joined the host store`);
  const st = await startStreams(pair, 3, 150_000, 2000, 2);
  const keys = keysOf(st.sockets);
  await net.sleep(20);
  const conns = keys.map((k) => lookup(stack.tcp, k)!);

  const off = await m.offload(keys, f0);
  assert.equal(off.moved.length, 3, JSON.stringify(off.refused));
  for (const [i, k] of keys.entries())
    assert.equal(lookup(f0.engine.tcp, k), conns[i], 'the same object at fake0');
  await net.sleep(20);
  const moved = await m.move(keys, f0, f1);
  assert.equal(moved.moved.length, 3, JSON.stringify(moved.refused));
  for (const [i, k] of keys.entries())
    assert.equal(lookup(f1.engine.tcp, k), conns[i], 'the same object at fake1');
  await net.sleep(20);
  const up = await m.upload(keys);
  assert.equal(up.moved.length, 3, JSON.stringify(up.refused));
  for (const [i, k] of keys.entries())
    assert.equal(lookup(stack.tcp, k), conns[i], 'the same object in the host');

  assert.equal(f0.general + f1.general, 0, 'no verb of the general protocol was asked for');
  assert.equal(stack.counters.get('offload.handover'), 9);
  assert.equal(stack.counters.get('tcp.released'), 0, 'no state was released to be rebuilt');

  // One that cannot hand live now is taken the general way: its initiate is asked for (and
  // refused here), and the connections run on in the host.
  f0.handsLive = false;
  const general = await m.offload(keys, f0);
  assert.equal(general.moved.length, 0);
  assert.equal(f0.general, 1, 'its initiate was asked for');
  assert.equal(stack.counters.get('offload.handover'), 9, 'nothing more handed live');
  for (const [i, k] of keys.entries()) assert.equal(lookup(stack.tcp, k), conns[i], 'back in the host');
  assert.equal(await st.done, 0, 'every byte arrived');
  assert.deepEqual(st.errors, []);
  close();
});
