/**
 * A NIC's verbs given a request that names a connection twice refuse it whole, before anything
 * changes (design: a malformed request is refused with a typed error and nothing else changes).
 * The offload layer refuses such a batch itself (test/offload/named-twice.test.ts); these are the
 * engine's own checks, for any other caller. Without them an invalidate parked the first naming,
 * threw at the second (its connection already released) and asked no upload: the connection stayed
 * frozen for good; and an initiate of trees in process installed the first naming and refused the
 * second as "already offloaded here", which a caller rolling back what was refused ran twice.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidArgumentError } from '../../src/core/errors.ts';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import type { ConnKey } from '../../src/nic/nic.ts';
import { isTreeTransfer } from '../../src/nic/nic.ts';
import { keysOf, offloadPair, startStreams } from '../offload/helpers.ts';

const namedTwice = (e: unknown) =>
  e instanceof InvalidArgumentError && /names connection .* twice/.test(e.message);

/** `k`, then the same tuple again as another object. */
const twice = (k: ConnKey): ConnKey[] => [k, { ...k }];

test('NicEngine invalidate, terminate and initiate refuse a connection named twice, nothing changed', async () => {
  const p = offloadPair(52);
  const m = p.host.offload;
  const st = await startStreams(p, 3, 20_000, 1000, 10);
  const n0 = p.host.nics[0] as LocalNic;
  const keys = keysOf(st.sockets);
  assert.equal((await m.offload(keys, n0)).moved.length, 3);
  const e = n0.engine;
  const asked: ConnKey[][] = [];
  n0.on('upload-requested', (ks: ConnKey[]) => asked.push(ks));

  // invalidate
  assert.throws(() => e.invalidate({ keys: twice(keys[0]!) }), namedTwice);
  assert.equal(e.parkedCount, 0, 'nothing parked');
  assert.notEqual(e.connection(keys[0]!), undefined, 'the connection still runs');
  await p.net.sleep(1);
  assert.deepEqual(asked, [], 'no upload asked');

  // terminate, as bytes and as trees
  const load = e.load;
  assert.throws(() => e.terminate(twice(keys[1]!)), namedTwice);
  assert.throws(() => e.terminateTrees([keys[2]!, keys[1]!, { ...keys[2]! }]), namedTwice);
  assert.equal(e.load, load, 'nothing released');
  for (const k of keys) assert.notEqual(e.connection(k), undefined, 'every connection still runs');

  // A parked connection named twice is refused too (it is a connection the request names).
  e.invalidate({ keys: [keys[0]!] });
  assert.equal(e.parkedCount, 1, 'named once, it is parked');
  assert.throws(() => e.terminate(twice(keys[0]!)), namedTwice);
  assert.equal(e.parkedCount, 1, 'still parked: nothing released');

  // initiate, trees in process: the same state listed twice in its path's node
  const released = e.terminateTrees([keys[2]!]);
  assert.ok(isTreeTransfer(released));
  const node = released.trees[0]!.paths[0]!;
  assert.equal(node.conns.length, 1);
  const s = node.conns[0]!;
  node.conns.push(s);
  const res = e.initiate(released);
  assert.equal(res.status, 'failure');
  assert.match(res.reason ?? '', /appears twice/);
  assert.deepEqual(res.conns, [], 'no connection named in the answer');
  assert.equal(e.connection(keys[2]!), undefined, 'nothing installed');
  // The same batch named once installs.
  node.conns.pop();
  assert.equal(e.initiate(released).status, 'success');
  assert.notEqual(e.connection(keys[2]!), undefined);
  p.net.close();
});
