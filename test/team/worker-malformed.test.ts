/**
 * A worker's answer the host cannot read (WorkerProtocolError) has a defined outcome for every
 * request (ON_MALFORMED_ANSWER in src/nic/worker/protocol.ts): after a request that may have changed
 * what the worker runs, the worker is taken as dead ('defective') and its connections rebuilt from
 * the hard state the host holds, so none runs in two places or in none; a pure reading fails with
 * the typed error and nothing changes (test/nic/worker-protocol.test.ts).
 */
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { describe, test } from 'node:test';
import type { FromWorker, WorkerOp } from '../../src/nic/worker/protocol.ts';
import { WorkerProtocolError } from '../../src/nic/worker/protocol.ts';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import { parseIpv4 } from '../../src/wire/addr.ts';
import { streamBothWays } from '../nic/worker-helpers.ts';
import {
  assertClean,
  BYTES,
  CHUNK,
  flowing,
  GAP_MS,
  keyOf,
  onNextReply,
  ownersOf,
  PEER_IP,
  setup,
} from './worker-team-helpers.ts';

const CONNS = 12;

/** `nic`'s next successful answer to `op` reaches the host as `spoil` makes it. Resolves once sent on. */
function spoilNext(nic: WorkerNic, op: WorkerOp, spoil: (m: FromWorker) => unknown): Promise<void> {
  return new Promise((resolve) =>
    onNextReply(nic, op, (m, deliver) => {
      deliver(spoil(m));
      resolve();
    }),
  );
}

async function streaming(t: TestContext, seed: number, offloaded: boolean) {
  // A defective worker is taken as dead by its answer, not by its silence: the watchdog only has
  // to stay out of the way, and at 1 s it declared loaded but live workers dead (2 cores, other
  // suites beside).
  const rig = await setup(t, { seed, heartbeatMs: 20, deadAfterMs: 5000 });
  const st = await streamBothWays(rig.host, rig.peer, CONNS, BYTES / 2, CHUNK, GAP_MS);
  const keys = st.sockets.map(keyOf);
  const nic0 = rig.nics[0]!;
  if (offloaded) {
    assert.equal((await rig.manager.offload(keys, nic0)).moved.length, CONNS);
    await flowing(rig, [nic0]);
  }
  return { rig, st, keys, nic0 };
}

/** `nic` was taken as dead for its answer, and every stream ends intact, none left on it. */
async function rebuiltClean(
  rig: Awaited<ReturnType<typeof streaming>>['rig'],
  st: Awaited<ReturnType<typeof streaming>>['st'],
  nic: WorkerNic,
): Promise<void> {
  assert.equal(nic.protocolErrors, 1, 'the answer was refused');
  assert.equal(nic.death?.kind, 'defective', 'a worker that answers so is taken as dead');
  await rig.team.settled();
  await assertClean(rig, st);
  assert.deepEqual(
    ownersOf(rig, st.sockets).filter((o) => o === nic),
    [],
    'none left on the defective worker',
  );
}

/**
 * `ask` of a worker running every connection, whose answer to `op` reaches the host as `spoil`
 * makes it: refused with the typed error, the worker taken as dead, each connection rebuilt once.
 */
async function refusedAndRebuilt(
  t: TestContext,
  seed: number,
  op: WorkerOp,
  spoil: (m: FromWorker) => unknown,
  ask: (s: Awaited<ReturnType<typeof streaming>>) => Promise<unknown>,
): Promise<void> {
  const s = await streaming(t, seed, true);
  const spoilt = spoilNext(s.nic0, op, spoil);
  await assert.rejects(ask(s), WorkerProtocolError);
  await spoilt;
  await rebuiltClean(s.rig, s.st, s.nic0);
  assert.equal(s.rig.stack.counters.get('offload.rebuilt'), CONNS, 'rebuilt from the hard state it wrote');
}

describe('a worker answers what the host cannot read', () => {
  test('initiate: taken as dead; the batch it may have installed rebuilt from the hard state, not resumed in the host beside it', {
    timeout: 60_000,
  }, async (t) => {
    const { rig, st, keys, nic0 } = await streaming(t, 41, false);
    const spoilt = spoilNext(nic0, 'initiate', (m) => ({ ...m, value: { status: 'success' } }));
    const r = await rig.manager.offload(keys, nic0);
    await spoilt;
    assert.equal(r.moved.length, 0, 'none reported running on it');
    await rebuiltClean(rig, st, nic0);
    assert.equal(rig.stack.counters.get('offload.rebuilt'), CONNS, 'rebuilt from the hard state it wrote');
  });

  test('update: taken as dead (whether the change is in force there is unknown); its connections rebuilt', {
    timeout: 60_000,
  }, async (t) => {
    await refusedAndRebuilt(
      t,
      42,
      'update',
      (m) => ({ ...m, value: 7 }),
      ({ rig, nic0 }) => {
        // The same MAC again: nothing but the answer can go wrong.
        const nb = rig.stack.neighbors.lookup(parseIpv4(PEER_IP));
        assert.ok(nb !== null, 'the peer is a neighbor');
        return nic0.update({ kind: 'neighbor', neighborIp: parseIpv4(PEER_IP), dstMac: nb.mac });
      },
    );
  });

  test('takeQueued: taken as dead (the segments it held are gone from it, its freeze may be); its connections rebuilt', {
    timeout: 60_000,
  }, async (t) => {
    // Asked of the worker (a move's settle asks it for connections released other than by
    // reference; those the host holds frozen it answers itself).
    await refusedAndRebuilt(
      t,
      43,
      'takeQueued',
      (m) => ({ ...m, value: 'spoilt' }),
      ({ nic0, keys }) => nic0.takeQueued(keys.slice(0, 1)),
    );
  });
});

describe('a worker answers what the host cannot read, after a verb that changes what it runs', () => {
  test('invalidate: taken as dead (it may have parked the connections, or not); every one rebuilt', {
    timeout: 60_000,
  }, async (t) => {
    await refusedAndRebuilt(
      t,
      44,
      'invalidate',
      (m) => ({ ...m, value: 'spoilt' }),
      ({ nic0, keys }) => nic0.invalidate({ keys: keys.slice(0, CONNS / 2) }),
    );
  });

  test('dropFrozen: taken as dead (whether it still swallows their segments is unknown); its connections rebuilt', {
    timeout: 60_000,
  }, async (t) => {
    // Asked of the worker (a settle asks it for connections released other than by reference).
    await refusedAndRebuilt(
      t,
      45,
      'dropFrozen',
      (m) => ({ ...m, value: 'spoilt' }),
      ({ nic0, keys }) => nic0.dropFrozen(keys.slice(0, 1)),
    );
  });

  test('terminate of an upload to the host: taken as dead; what it released rebuilt from the hard state, once', {
    timeout: 60_000,
  }, async (t) => {
    const { rig, st, keys, nic0 } = await streaming(t, 46, true);
    const spoilt = spoilNext(nic0, 'terminate', (m) => ({ ...m, moved: 'spoilt' }));
    // By the ordinary path: the states come back to the host in the answer (no worker takes them).
    const r = await rig.manager.upload(keys);
    await spoilt;
    // The worker released them, but the host cannot tell which or read their states: they are
    // rebuilt in the host from the records it holds, each once.
    assert.equal(
      r.moved.length,
      CONNS,
      `every connection in the host: ${JSON.stringify(r.refused.slice(0, 3))}`,
    );
    await rebuiltClean(rig, st, nic0);
    assert.equal(rig.stack.counters.get('offload.rebuilt'), CONNS, 'rebuilt from the hard state it wrote');
    assert.deepEqual(
      ownersOf(rig, st.sockets).filter((o) => o !== 'host' && o !== null),
      [],
      'every one runs in the host',
    );
  });
});
