/**
 * A state's small-integer fields (ports, MSSes, window scales, cached settings, counts, enums:
 * widenNumbers' `small` sets) are on a layout that stores a small integer in the field itself,
 * not in a 16-byte box of its own. A transfer record holds them in a Float64Array, and a read of
 * one where V8 has not optimized the reader (a thread's first reads: a worker's first install, a
 * host's first reads of what a worker released) is a heap number: stored as read, each such field
 * of a state a worker took from a record kept a box, as on a fraction's layout. Its own file: the
 * first reads of this process are the ones looked at, before anything optimized the readers.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { createNeighborState } from '../../src/state/neighbor-state.ts';
import { createPathState } from '../../src/state/path-state.ts';
import { smallTcpField, type TcpState } from '../../src/state/tcp-state.ts';
import { recordOf, sampleConn } from './helpers.ts';

setFlagsFromString('--allow-natives-syntax');
const isSmi = new Function('v', 'return %IsSmi(v)') as (v: unknown) => boolean;

function newState(): TcpState {
  const nb = createNeighborState({ srcMac: 0x020000000001, vlanId: -1, ip: 0x0a000002 }, 0x020000000002, 0);
  return sampleConn(createPathState({ localIp: 0x0a000001, remoteIp: 0x0a000002 }, nb, 0, 1500));
}

const PARTS = ['const', 'cached', 'delegated', 'soft'] as const;

/** The small-integer fields a new state holds in the field that `read` holds boxed. */
function boxed(made: TcpState, read: TcpState): string[] {
  const out: string[] = [];
  for (const part of PARTS) {
    const m = made[part] as unknown as Record<string, unknown>;
    const r = read[part] as unknown as Record<string, unknown>;
    for (const key of Object.keys(m)) {
      if (!smallTcpField(part, key) || typeof m[key] !== 'number' || !isSmi(m[key])) continue;
      if (!isSmi(r[key])) out.push(`${part}.${key} = ${String(r[key])}`);
    }
  }
  return out;
}

test("a state read from a transfer record holds its small-integer fields unboxed, as a new state's", () => {
  const s = newState();
  const { rec, send, recv } = recordOf(s);
  const made = newState();
  // The first read of this process: nothing has optimized the reader yet.
  const read = rec.read(1000.25, s.path, send, recv);
  assert.deepEqual(boxed(made, read), []);
  // Read into a state made before (a pooled spare), likewise.
  const spare = newState();
  const again = recordOf(s);
  const into = again.rec.readInto(spare, 1000.25, s.path, again.send, again.recv);
  assert.equal(into, spare);
  assert.deepEqual(boxed(made, into), []);
  // The values themselves are the record's.
  assert.equal(read.const.localPort, s.const.localPort);
  assert.equal(read.cached.rcvBufSize, s.cached.rcvBufSize);
  assert.equal(into.delegated.sndWnd, s.delegated.sndWnd);
});
