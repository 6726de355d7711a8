import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { allocConnBlock, CONN_SLAB_BYTES } from '../../src/nic/hard-state.ts';
import { adviseHugePages } from '../../src/nic/huge-pages.ts';
import { ByteRing } from '../../src/state/byte-ring.ts';

const THP = '/sys/kernel/mm/transparent_hugepage/enabled';
// `[never]` or no THP at all: the advice is refused and slabs stay small, by design.
const thp = process.platform === 'linux' && existsSync(THP) && !readFileSync(THP, 'utf8').includes('[never]');

function addressOf(sab: SharedArrayBuffer): bigint {
  const koffi = createRequire(import.meta.url)('koffi');
  const memset = koffi.load('libc.so.6').func('uintptr_t memset(void *s, int c, size_t n)');
  return BigInt(memset(new Uint8Array(sab), 0, 0));
}

/** The VmFlags of the mapping that holds `addr`, from /proc/self/smaps. */
function vmFlagsAt(addr: bigint): string[] {
  let inside = false;
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
    if (m) inside = BigInt(`0x${m[1]}`) <= addr && addr < BigInt(`0x${m[2]}`);
    else if (inside && line.startsWith('VmFlags:')) return line.slice(8).trim().split(/\s+/);
  }
  throw new Error('no mapping holds that address');
}

test('a connection slab asks for huge pages over its aligned interior', { skip: !thp && 'no THP' }, () => {
  const block = allocConnBlock(32768, 32768);
  assert.equal(block.sab.byteLength, CONN_SLAB_BYTES);
  const interior = (addressOf(block.sab) + (4n << 20n)) & ~((2n << 20n) - 1n);
  assert.ok(vmFlagsAt(interior).includes('hg'), 'the slab interior is marked MADV_HUGEPAGE');
  // The advice changes where the bytes live, never what they hold: the block is a fresh one.
  assert.ok(new Uint8Array(block.sab, block.at, 1 << 16).every((b) => b === 0));
  const send = ByteRing.createShared(block.send.capacity, block.send);
  assert.equal(send.length, 0);
  send.write(new Uint8Array([1, 2, 3]));
  assert.deepEqual([...send.toArray()], [1, 2, 3]);
});

test('a buffer too small for one aligned huge page is left alone', () => {
  assert.equal(adviseHugePages(new SharedArrayBuffer(1 << 20)), false);
});
