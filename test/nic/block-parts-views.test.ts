import assert from 'node:assert/strict';
import { test } from 'node:test';
import { allocConnBlock, type ConnBlockRef } from '../../src/nic/hard-state.ts';
import { blockParts } from '../../src/nic/worker/conn-blocks.ts';
import { ByteRing } from '../../src/state/byte-ring.ts';
import { SHARED_RING_HEADER, sharedRingWrite } from '../../src/state/shared-ring.ts';

/** A block as the host lays one out: both rings' headers written. */
function block(): ConnBlockRef {
  const b = allocConnBlock(4096, 4096);
  ByteRing.createShared(b.send.capacity, b.send);
  ByteRing.createShared(b.recv.capacity, b.recv);
  return b;
}

/** Typed arrays of each kind `f` makes (the globals wrapped to count meanwhile). */
function viewsMadeBy(f: () => void): { i32: number; u8: number } {
  const made = { i32: 0, u8: 0 };
  const I32 = globalThis.Int32Array;
  const U8 = globalThis.Uint8Array;
  globalThis.Int32Array = new Proxy(I32, {
    construct: (c, args) => {
      made.i32++;
      return Reflect.construct(c, args);
    },
  });
  globalThis.Uint8Array = new Proxy(U8, {
    construct: (c, args) => {
      made.u8++;
      return Reflect.construct(c, args);
    },
  });
  try {
    f();
  } finally {
    globalThis.Int32Array = I32;
    globalThis.Uint8Array = U8;
  }
  return made;
}

// A view over shared memory costs microseconds to make, and a survivor keeps what it makes per
// connection: a worker's first take of 10,000 connections was mostly that (BENCHMARKS.md, "The
// first move to a worker"), and a crash's install of 10,000 unbuilt spent a third of its time
// in the scavenges of what it kept ("A crash's install at the survivor").
test("a block's first parts make no view of their own and no ring buffer: the slab's views serve every block", () => {
  blockParts(block()); // the slab's views, made once per buffer
  const b = block();
  let parts: ReturnType<typeof blockParts> | undefined;
  const made = viewsMadeBy(() => {
    parts = blockParts(b);
  });
  assert.deepEqual(made, { i32: 0, u8: 0 });
  // The rings work at their own places in the slab's views: each ring's header and data, and
  // nothing of the ring beside it.
  const p = parts!;
  assert.equal(p.send.write(new Uint8Array([1, 2, 3])), 3);
  const out = new Uint8Array(3);
  assert.equal(p.send.peek(0, out, 0, 3), 3);
  assert.deepEqual([...out], [1, 2, 3]);
  assert.equal(sharedRingWrite(b.send), 3);
  assert.equal(sharedRingWrite(b.recv), 0);
  assert.equal(p.recv.length, 0);
  const data = new Uint8Array(b.sab, b.send.offset + SHARED_RING_HEADER, 3);
  assert.deepEqual([...data], [1, 2, 3]);
  // Found again: nothing made.
  assert.deepEqual(
    viewsMadeBy(() => blockParts(b)),
    { i32: 0, u8: 0 },
  );
});
