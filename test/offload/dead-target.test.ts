/**
 * An offload to a NIC that is already dead, with nothing (no team) marking it failed first: the
 * initiate is refused at once, and the transfer rebuilds the batch in the host from what the NIC
 * left for salvage. A NIC that kept nothing of a batch it refused would leave those connections
 * to be lost by that rebuild ('no hard state left'), their sockets ended with an error.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import type { ConnKey, TerminateOptions, Transfer } from '../../src/nic/nic.ts';
import { keysOf, offloadPair, startStreams } from './helpers.ts';

const CONNS = 16;
const BYTES = 200_000;

describe('offload onto a LocalNic that already crashed', () => {
  for (const live of [false, true])
    test(`every connection stays in the host, every byte arrives${live ? ' (live hand-over on)' : ''}`, async () => {
      const p = offloadPair(75);
      const m = p.host.offload;
      m.liveHandover = live;
      // n1: the host stack's own frames leave through n0's host link.
      const n1 = p.host.nics[1] as LocalNic;
      const st = await startStreams(p, CONNS, BYTES);
      const keys = keysOf(st.sockets);
      n1.crash('test: dead before the offload');
      const r = await m.offload(keys, n1);
      assert.equal(r.moved.length, 0, 'none settled on the dead NIC');
      assert.equal(r.refused.length, CONNS);
      for (const x of r.refused) assert.match(x.reason, /rebuilt in the host/);
      assert.equal(p.host.stack.counters.get('offload.rebuilt'), CONNS);
      assert.ok(keys.every((k) => m.ownerOf(k) === 'host'));
      assert.equal(await st.done, 0, 'every byte arrived');
      assert.deepEqual(st.errors, []);
      assert.equal(n1.salvage().length, 0, 'nothing left behind at the dead NIC');
    });
});

describe('a move whose source LocalNic crashes with its terminate in hand', () => {
  test('every connection is rebuilt at the destination from what the source left, every byte arrives', async () => {
    const p = offloadPair(77);
    const m = p.host.offload;
    // The general protocol's terminate, not the live hand-over (which runs in one turn).
    m.liveHandover = false;
    const [n0, n1] = p.host.nics as LocalNic[];
    const st = await startStreams(p, CONNS, BYTES);
    const keys = keysOf(st.sockets);
    assert.equal((await m.offload(keys, n1!)).moved.length, CONNS);
    // Crashed once its terminate is sent, before the engine's turn to run it: a worker's host
    // side fails the request then, and its caller rebuilds from salvage. A LocalNic's ran it on
    // the dead engine, which answered that it released none: the move took all for closed at the
    // source, and their sockets waited on a connection nothing ran.
    const terminate = n1!.terminate.bind(n1!) as (
      k: ConnKey[] | 'all',
      o: TerminateOptions,
    ) => Promise<Transfer>;
    n1!.terminate = ((k: ConnKey[] | 'all', o: TerminateOptions) => {
      const sent = terminate(k, o);
      n1!.crash('test: died with the terminate in hand');
      return sent;
    }) as typeof n1.terminate;
    const r = await m.move(keys, n1!, n0!);
    assert.deepEqual(r.refused, []);
    assert.equal(r.moved.length, CONNS);
    assert.equal(p.host.stack.counters.get('offload.rebuilt'), CONNS);
    assert.ok(keys.every((k) => m.ownerOf(k) === n0));
    assert.equal(await st.done, 0, 'every byte arrived');
    assert.deepEqual(st.errors, []);
  });
});
