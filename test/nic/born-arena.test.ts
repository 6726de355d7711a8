/**
 * The born arenas (src/nic/worker/born-arena.ts) in one thread: what a worker cuts and lists is
 * what the host finds at its death, each connection once, and an arena the worker retired with all
 * its connections announced is let go by the host (held, 64 MB each would pile up under churn).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SeededRandom } from '../../src/core/random.ts';
import type { ConnKey } from '../../src/nic/nic.ts';
import {
  BORN_ARENA_BYTES,
  BornArenaIndex,
  BornArenas,
  type BornCut,
} from '../../src/nic/worker/born-arena.ts';
import { AddressTable } from '../../src/stack/address-table.ts';
import { sharedRingBytes } from '../../src/state/shared-ring.ts';
import { parseIpv6 } from '../../src/wire/addr.ts';

const key = (i: number): ConnKey => ({
  localIp: 0x0a000001,
  localPort: 80,
  remoteIp: 0xc0a80002,
  remotePort: 40000 + i,
});

/** A worker's arenas whose posts reach `index` at once, as the host's port would hand them over. */
function pair() {
  const index = new BornArenaIndex();
  const posted: number[] = [];
  const arenas = new BornArenas((no, sab) => {
    posted.push(no);
    assert.ok(index.add(no, sab));
  });
  return { index, posted, arenas };
}

test('a connection listed as installed and never announced is found at the death, once; announced ones are not', () => {
  const { index, arenas } = pair();
  arenas.ready();
  const cuts: BornCut[] = [];
  for (let i = 0; i < 3; i++) {
    const c = arenas.cut(4096, 8192)!;
    cuts.push(c);
    arenas.installed(c, 7, 10 + i, key(i));
  }
  // Cut, not installed (the install never finished): no connection.
  arenas.cut(4096, 4096);
  index.announced([cuts[0]!.at]);
  const found = index.unannounced();
  assert.deepEqual(
    found.map((u) => [u.listener, u.slot, u.key.remotePort]),
    [
      [7, 11, 40001],
      [7, 12, 40002],
    ],
  );
  const b = found[0]!.block;
  assert.deepEqual(
    [b.at, b.send.capacity, b.recv.capacity, b.recv.offset - b.send.offset],
    [cuts[1]!.block.at, 4096, 8192, sharedRingBytes(4096)],
  );
  assert.ok(b.send.offset > b.at, 'the rings after the records');
  assert.equal(index.unannounced().length, 0, 'each once');
});

test('the next arena is posted once the current is half used; a retired one is let go once all of it is announced', () => {
  const { index, posted, arenas } = pair();
  arenas.ready();
  assert.deepEqual(posted, [1]);
  // Blocks of a third of an arena and a little more: the second is cut past its half, the third
  // does not fit.
  const ring = Math.floor(BORN_ARENA_BYTES / 6);
  const a = arenas.cut(ring, ring)!;
  arenas.installed(a, 1, 0, key(0));
  assert.deepEqual(posted, [1]);
  const b = arenas.cut(ring, ring)!;
  arenas.installed(b, 1, 1, key(1));
  assert.deepEqual(posted, [1, 2], 'posted ahead of its use');
  const c = arenas.cut(ring, ring)!;
  arenas.installed(c, 1, 2, key(2));
  assert.deepEqual([a.at.no, b.at.no, c.at.no], [1, 1, 2]);
  assert.equal(index.size, 2);
  index.announced([c.at]);
  assert.equal(index.size, 2, 'arena 1 retired, but two of its connections not announced');
  index.announced([a.at, b.at]);
  assert.equal(index.size, 1, 'arena 1 let go');
  assert.equal(index.unannounced().length, 0);
});

test('a block no arena can hold is not cut; an arena of another size or a number posted twice is refused', () => {
  const { index, arenas } = pair();
  assert.equal(arenas.cut(BORN_ARENA_BYTES / 2, BORN_ARENA_BYTES / 2), null);
  arenas.ready();
  assert.equal(index.add(1, new SharedArrayBuffer(BORN_ARENA_BYTES)), false, 'a number posted twice');
  assert.equal(index.add(9, new SharedArrayBuffer(1024)), false, 'another size');
  assert.equal(index.add(0, new SharedArrayBuffer(BORN_ARENA_BYTES)), false, 'no number');
});

test("an IPv6 connection is listed by its addresses, and found at the death under the host table's handles", () => {
  const { index, arenas } = pair();
  arenas.ready();
  // Two tables that number the same addresses differently, as a worker's and the host's may.
  const worker = new AddressTable(new SeededRandom(1));
  const host = new AddressTable(new SeededRandom(2));
  host.intern(parseIpv6('fd00::99'), 0);
  const local = parseIpv6('fd00::2');
  const remote = parseIpv6('fd00::100');
  const k6: ConnKey = {
    localIp: worker.intern(local, 0),
    localPort: 80,
    remoteIp: worker.intern(remote, 0),
    remotePort: 40000,
  };
  const want: ConnKey = {
    localIp: host.intern(local, 0),
    localPort: 80,
    remoteIp: host.intern(remote, 0),
    remotePort: 40000,
  };
  assert.notEqual(want.remoteIp, k6.remoteIp, 'the tables differ');
  const c = arenas.cut(4096, 4096)!;
  arenas.installed(c, 3, 5, k6, worker);
  const v4 = arenas.cut(4096, 4096)!;
  arenas.installed(v4, 3, 6, key(1), worker);
  const found = index.unannounced(host);
  assert.deepEqual(
    found.map((u) => [u.slot, u.key]),
    [
      [5, want],
      [6, key(1)],
    ],
  );
});
