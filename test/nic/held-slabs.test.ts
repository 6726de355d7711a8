/**
 * A worker keeps the object it holds for each buffer the host numbered, and so the parts it made
 * over the buffer's blocks, until the host says it let the buffer go: a worker whose connections
 * had all left a buffer (a move away, an upload) lost that object at its next full collection,
 * and made every block's parts again when they came back.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { allocConnBlock } from '../../src/nic/hard-state.ts';
import { onSlabGone, slabIdOf } from '../../src/nic/worker/conn-blocks.ts';
import { spawnWorker } from '../../src/nic/worker/spawn.ts';
import { ByteRing } from '../../src/state/byte-ring.ts';

test("a worker keeps a buffer's parts while the host holds the buffer, and lets them go when told", async (t) => {
  const w = spawnWorker(new URL('./held-slabs-worker.ts', import.meta.url));
  t.after(() => w.terminate());
  const ask = async (m: object): Promise<number> => {
    w.postMessage(m);
    const [r] = (await once(w, 'message')) as [{ made: number }];
    return r.made;
  };
  const b = allocConnBlock(4096, 4096);
  ByteRing.createShared(b.send.capacity, b.send);
  ByteRing.createShared(b.recv.capacity, b.recv);
  const id = slabIdOf(b.sab);
  // Each message carries the buffer as a new object over the same memory, as every transfer does.
  const block = {
    t: 'block',
    sab: b.sab,
    id,
    at: b.at,
    send: b.send.offset,
    recv: b.recv.offset,
    capacity: 4096,
  };
  assert.equal(await ask(block), 1, 'parts made at the first visit');
  assert.equal(await ask(block), 1, 'found again');
  // Nothing in the worker uses the buffer now (its connection left): a full collection, in a
  // turn of its own (a WeakRef read in a turn holds its target to the turn's end).
  await ask({ t: 'gc' });
  await ask({ t: 'gc' });
  assert.equal(await ask(block), 1, 'found again after the collection: the buffer was held');
  // The host let the buffer go: the worker holds it no longer, and the collector may take it.
  await ask({ t: 'gone', id });
  await ask({ t: 'gc' });
  await ask({ t: 'gc' });
  assert.equal(await ask(block), 2, 'made again: the buffer was let go');
});

test('the host hears of a numbered buffer once its own object of it is collected', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const gone: number[] = [];
  const stop = onSlabGone((id) => gone.push(id));
  try {
    let id = 0;
    (() => {
      id = slabIdOf(new SharedArrayBuffer(64));
    })();
    for (let i = 0; i < 20 && !gone.includes(id); i++) {
      gc();
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(gone.includes(id), `buffer ${id} reported gone (heard: ${gone.join(', ')})`);
  } finally {
    stop();
  }
});
