/**
 * The shared memory of a burst's connections is faulted in before the burst (hard-state.ts
 * warmSlabs, SlabWarmer): a page's first write is a fault that cost serve's main thread 11-85 µs
 * on this project's virtual machines, paid while it placed connections that peers waited on.
 * Faults are the kernel's count for this process (/proc/self/stat, minflt), so the cases say
 * what the thread that writes a block's rings pays, whatever the machine's speed or load.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  allocConnBlock,
  type ConnBlockRef,
  connSlabsMade,
  warmSlabCount,
  warmSlabs,
} from '../../src/nic/hard-state.ts';
import { SlabWarmer } from '../../src/nic/slab-warmer.ts';

/** The process's minor page faults so far (field 10 of /proc/self/stat). */
function minorFaults(): number {
  const s = readFileSync('/proc/self/stat', 'utf8');
  return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[7]);
}

const RING = 64 << 10;
const BLOCKS = 256;
/** Pages the send rings of BLOCKS blocks span. */
const PAGES = (BLOCKS * RING) / 4096;

/** Faults taken writing every byte of the send rings of BLOCKS blocks (and that they were zero). */
function writeThrough(blocks: ConnBlockRef[]): number {
  const views = blocks.map((b) => new Uint8Array(b.sab, b.send.offset, b.send.capacity));
  const f0 = minorFaults();
  for (const v of views) {
    assert.equal(v[0], 0);
    assert.equal(v[v.length - 1], 0);
    v.fill(0xa5);
  }
  return minorFaults() - f0;
}

test("a burst's blocks cut from a warm slab take none of its pages' faults; from a cold one, all", () => {
  // Nothing was cut yet in this process: the first block takes the spare.
  const made = connSlabsMade();
  assert.equal(
    warmSlabs(1, Number.POSITIVE_INFINITY, () => 0),
    true,
  );
  assert.equal(warmSlabCount(), 1);
  assert.equal(connSlabsMade(), made + 1);
  const warm = Array.from({ length: BLOCKS }, () => allocConnBlock(RING, 4096));
  assert.equal(warm[0]!.at, 0);
  assert.equal(connSlabsMade(), made + 1, 'the blocks came from the spare');
  assert.equal(warmSlabCount(), 0);
  // Past the warm slab's end, with no spare left: a cold slab.
  let b = allocConnBlock(RING, 4096);
  while (b.sab === warm[0]!.sab) b = allocConnBlock(RING, 4096);
  const cold = [b, ...Array.from({ length: BLOCKS - 1 }, () => allocConnBlock(RING, 4096))];
  assert.equal(cold[BLOCKS - 1]!.sab, b.sab);
  const warmFaults = writeThrough(warm);
  const coldFaults = writeThrough(cold);
  assert.ok(warmFaults < PAGES / 4, `${warmFaults} faults writing ${PAGES} warm pages`);
  assert.ok(coldFaults > (PAGES * 3) / 4, `${coldFaults} faults writing ${PAGES} cold pages`);
});

test('warming stops at its deadline and goes on where it stopped', () => {
  let calls = 0;
  // A clock that reads past the deadline from its second look on: one check's worth of pages.
  assert.equal(
    warmSlabs(1, 1, () => (calls++ === 0 ? 0 : 2)),
    false,
  );
  assert.equal(warmSlabCount(), 0);
  assert.equal(
    warmSlabs(1, Number.POSITIVE_INFINITY, () => 0),
    true,
  );
  assert.equal(warmSlabCount(), 1);
});

test('the warmer waits while the event loop is busy and fills the reserve once it idles', async () => {
  const want = warmSlabCount() + 1;
  const made = connSlabsMade();
  const warmer = new SlabWarmer(want);
  warmer.start();
  try {
    // The loop never idles through 100 of the warmer's ticks' worth of work: it must not start.
    let spun = 0;
    await new Promise<void>((done) => {
      const spin = (): void => {
        const end = performance.now() + 15;
        while (performance.now() < end) {}
        if (++spun === 100) done();
        else setImmediate(spin);
      };
      setImmediate(spin);
    });
    assert.equal(connSlabsMade(), made, 'no slab made while the loop was busy');
    const deadline = Date.now() + 60_000;
    while (warmSlabCount() < want && Date.now() < deadline) await sleep(20);
    assert.equal(warmSlabCount(), want);
  } finally {
    warmer.stop();
  }
});
