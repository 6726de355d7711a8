/**
 * The offload manager settles nothing on a NIC marked failed (a team's member that is down), not
 * even a transfer that began before the mark: what it would have put there ends in the host (or
 * back at its source), and no byte is lost. Without this a failover's list of the member's
 * connections misses those that land after it was taken, and they hang on a dead link.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import type { Nic } from '../../src/nic/nic.ts';
import type { OffloadManager } from '../../src/offload/offload-manager.ts';
import { keysOf, offloadPair, type Pair, startStreams } from './helpers.ts';

const CONNS = 24;
const BYTES = 200_000;

/** Mark `nic` failed once its next initiate has run (the failure lands while the transfer runs). */
function failAfterInitiate(nic: LocalNic, failed: Set<Nic>, then?: () => void): void {
  const initiate = nic.initiate.bind(nic);
  nic.initiate = async (...args: Parameters<LocalNic['initiate']>) => {
    const r = await initiate(...args);
    failed.add(nic);
    then?.();
    nic.initiate = initiate;
    return r;
  };
}

/**
 * An offload host with two LocalNics whose failed set the test controls, streaming to a peer.
 * `live`: transfers hand live connections over in one turn, where no failure can land between
 * the initiate and the settle; without it each runs the general protocol's steps, which the tests
 * that mark a NIC failed mid-transfer (a WorkerNic's case) need.
 */
async function rig(seed: number, live = false) {
  const p: Pair = offloadPair(seed);
  const m: OffloadManager = p.host.offload;
  m.liveHandover = live;
  const failed = new Set<Nic>();
  m.failed = (nic) => failed.has(nic);
  const [n0, n1] = p.host.nics as LocalNic[];
  const st = await startStreams(p, CONNS, BYTES);
  return { p, m, n0: n0!, n1: n1!, failed, st, keys: keysOf(st.sockets) };
}

function ownersAreHost(m: OffloadManager, sockets: Parameters<typeof keysOf>[0]): boolean {
  return keysOf(sockets).every((k) => m.ownerOf(k) === 'host');
}

describe('offload onto a NIC marked failed', () => {
  for (const live of [false, true])
    test(`marked before: nothing goes there; offloads stay in the host, moves go back${live ? ' (live hand-over)' : ''}`, async () => {
      const { p, m, n0, n1, failed, st, keys } = await rig(71, live);
      failed.add(n0);
      const r = await m.offload(keys, n0);
      assert.equal(r.moved.length, 0);
      assert.equal(r.refused.length, CONNS);
      for (const x of r.refused) assert.match(x.reason, /has failed/);
      assert.equal(n0.load, 0);
      assert.ok(ownersAreHost(m, st.sockets));
      const half = keys.slice(0, CONNS / 2);
      assert.equal((await m.offload(half, n1)).moved.length, CONNS / 2);
      const mv = await m.move(half, n1, n0);
      assert.equal(mv.moved.length, 0);
      assert.equal(n0.load, 0, 'none initiated on the failed NIC');
      assert.equal(n1.load, CONNS / 2, 'back on their source, which works');
      assert.equal(p.host.stack.counters.get('offload.refused.failed-nic'), CONNS + CONNS / 2);
      assert.equal(p.host.stack.counters.get('offload.handover'), live ? CONNS / 2 : 0);
      assert.equal(await st.done, 0, 'every byte arrived');
      assert.deepEqual(st.errors, []);
    });

  test('marked while the initiate runs: withdrawn into the host before anything points there', async () => {
    const { p, m, n0, failed, st, keys } = await rig(72);
    failAfterInitiate(n0, failed);
    const r = await m.offload(keys, n0);
    assert.equal(r.moved.length, 0, 'none reported as settled on the failed NIC');
    assert.equal(r.refused.length, CONNS);
    for (const x of r.refused) assert.match(x.reason, /failed during the transfer/);
    assert.equal(n0.load, 0, 'terminated there');
    assert.deepEqual(m.keysOn(n0), []);
    assert.ok(ownersAreHost(m, st.sockets));
    assert.equal(p.host.stack.counters.get('offload.settle.refused'), CONNS);
    assert.equal(await st.done, 0, 'every byte arrived');
    assert.deepEqual(st.errors, []);
  });

  test('a NIC to NIC move whose target fails meanwhile ends in the host', async () => {
    const { m, n0, n1, failed, st, keys } = await rig(73);
    assert.equal((await m.offload(keys, n1)).moved.length, CONNS);
    failAfterInitiate(n0, failed);
    const r = await m.move(keys, n1, n0);
    assert.equal(r.moved.length, 0);
    assert.equal(n0.load + n1.load, 0, 'on neither NIC');
    assert.ok(ownersAreHost(m, st.sockets));
    assert.equal(await st.done, 0, 'every byte arrived');
    assert.deepEqual(st.errors, []);
  });

  test('a target that dies before the withdraw is rebuilt in the host from its hard state', async () => {
    // n1: the host stack's own frames leave through n0's host link.
    const { p, m, n1, failed, st, keys } = await rig(74);
    failAfterInitiate(n1, failed, () => n1.crash('test: died after the initiate'));
    const r = await m.offload(keys, n1);
    assert.equal(r.moved.length, 0);
    assert.equal(p.host.stack.counters.get('offload.settle.refused-rebuilt'), CONNS);
    assert.equal(p.host.stack.counters.get('offload.rebuilt'), CONNS);
    assert.ok(ownersAreHost(m, st.sockets));
    assert.equal(await st.done, 0, 'every byte arrived');
    assert.deepEqual(st.errors, []);
  });
});
