import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import {
  allocConnBlock,
  CONN_SLAB_BYTES,
  SLAB_TOUCH_AHEAD,
  slabTouchState,
} from '../../src/nic/hard-state.ts';
import { SlabToucher } from '../../src/nic/slab-toucher.ts';

/** This process's resident anonymous and shared memory, in bytes (Linux). */
function residentBytes(): number {
  const [, resident] = readFileSync('/proc/self/statm', 'utf8').split(' ');
  return Number(resident) * 4096;
}

describe('slab toucher', () => {
  test('faults a fresh buffer in on its own thread and changes no byte of it', async () => {
    const bytes = 32 << 20;
    const sab = new SharedArrayBuffer(bytes);
    const u = new Uint8Array(sab);
    // What the host may already have written where the toucher passes: it must stay.
    for (let i = 0; i < bytes; i += 4096 * 7) u[i] = 1 + (i % 251);
    u[bytes - 1] = 42;
    const before = residentBytes();
    await new SlabToucher().touchAndWait(sab, 0, bytes);
    const grew = residentBytes() - before;
    assert.ok(grew >= bytes * 0.8, `resident memory grew ${grew} bytes, not the buffer's ${bytes}`);
    for (let i = 0; i < bytes; i += 4096 * 7) assert.equal(u[i], 1 + (i % 251));
    assert.equal(u[bytes - 1], 42);
    let zero = 0;
    for (let i = 1; i < bytes; i += 4096) zero += u[i]!;
    assert.equal(zero, 0, 'untouched bytes are still zero');
  });

  test("the host's block allocator has the toucher run ahead of it, into the next slab", () => {
    const block = 2 * 32 * 1024 + 4096;
    allocConnBlock(32 * 1024, 32 * 1024);
    let st = slabTouchState();
    assert.ok(
      st.touchedTo >= st.used + SLAB_TOUCH_AHEAD - (2 << 20),
      `touched to ${st.touchedTo}, used ${st.used}`,
    );
    // Walk to the end of the slab: the pages of the next one are handed over before it is cut.
    const handed = st.handed;
    let guard = 0;
    while (slabTouchState().used + SLAB_TOUCH_AHEAD < CONN_SLAB_BYTES && guard++ < 2000)
      allocConnBlock(32 * 1024, 32 * 1024);
    for (let i = 0; i < 100; i++) allocConnBlock(32 * 1024, 32 * 1024);
    st = slabTouchState();
    assert.ok(st.touchedTo === CONN_SLAB_BYTES || st.used < block * 200, 'the slab is handed over whole');
    assert.ok(st.handed - handed >= CONN_SLAB_BYTES - SLAB_TOUCH_AHEAD, `handed ${st.handed - handed}`);
    assert.ok(st.handed > CONN_SLAB_BYTES, 'and part of the next slab with it');
  });
});
