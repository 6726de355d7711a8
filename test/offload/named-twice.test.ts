/**
 * A verb's batch that names a connection twice is refused before anything changes: a transfer
 * freezes, releases, pairs and settles each connection once. Let through, an offload from the host
 * released a connection twice and lost those released before the throw; a move or an upload by
 * the general protocol paired the two items by tuple, one of them left out, its socket moving for
 * good; a live hand-over moved it and reported it refused too. A NIC's indication that names a
 * connection twice uploads it once.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InvalidArgumentError } from '../../src/core/errors.ts';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import type { ConnKey, Nic } from '../../src/nic/nic.ts';
import { keysOf, offloadPair, startStreams } from './helpers.ts';

const namedTwice = (e: unknown) =>
  e instanceof InvalidArgumentError && /names connection .* twice/.test(e.message);

/** `keys[a]`, `keys[b]`, and `keys[a]` again as another (equal) object. */
function twice(keys: readonly ConnKey[], a: number, b: number): ConnKey[] {
  return [keys[a]!, keys[b]!, { ...keys[a]! }];
}

describe('a batch naming a connection twice', () => {
  for (const live of [false, true]) {
    test(`is refused whole by every verb, nothing moved (LocalNics, live hand-over ${live ? 'on' : 'off'})`, async () => {
      const p = offloadPair(live ? 41 : 40);
      const { net, host } = p;
      const m = host.offload;
      m.liveHandover = live;
      const st = await startStreams(p, 4, 60_000, 1000, 10);
      const [n0, n1] = host.nics as [LocalNic, LocalNic];
      const keys = keysOf(st.sockets);
      const still = (owner: Nic | 'host', which: number[], what: string) => {
        for (const i of which) {
          assert.equal(m.ownerOf(keys[i]!), owner, `${what}: connection ${i} where it was`);
          assert.equal(st.sockets[i]!.moving, false, `${what}: socket ${i} not moving`);
        }
      };
      await assert.rejects(m.offload(twice(keys, 0, 1), n0), namedTwice);
      still('host', [0, 1, 2, 3], 'offload');
      assert.equal((await m.offload(keys, n0)).moved.length, 4);
      await assert.rejects(m.move(twice(keys, 0, 1), n0, n1), namedTwice);
      still(n0, [0, 1, 2, 3], 'move');
      await assert.rejects(m.upload(twice(keys, 2, 3)), namedTwice);
      still(n0, [0, 1, 2, 3], 'upload');
      await assert.rejects(m.recover(n0, 'host', twice(keys, 2, 3)), namedTwice);
      still(n0, [0, 1, 2, 3], 'recover');
      // The NIC asks: each connection goes up once.
      n0.emit('upload-requested', twice(keys, 0, 1), 'urgent-data');
      await net.sleep(5);
      still('host', [0, 1], 'indication');
      still(n0, [2, 3], 'indication');
      assert.equal((await m.move(keys.slice(2), n0, n1)).moved.length, 2);
      still(n1, [2, 3], 'move named once');
      assert.equal(await st.done, 0, 'every byte arrives');
      assert.deepEqual(st.errors, []);
      net.close();
    });
  }
});
