import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { FrameBatcher, forEachFrame } from '../../src/nic/worker/protocol.ts';

describe('FrameBatcher', () => {
  test('a batch posted from within push holds only frames whose push has returned; all arrive in order', () => {
    const got: number[] = [];
    let returned = 0;
    let posts = 0;
    let pendingFlush: (() => void) | null = null;
    const b = new FrameBatcher(
      (buf, len) => {
        posts++;
        forEachFrame(buf, len, (f) => got.push(f[0]! | (f[1]! << 8)));
        // The worker publishes hard state here: it must not cover a frame still being handed over.
        assert.ok(got.length <= returned, `posted ${got.length} frames, only ${returned} pushes returned`);
      },
      (cb) => {
        pendingFlush = cb;
      },
    );
    const n = 500;
    for (let i = 0; i < n; i++) {
      // Sizes from tiny to a TSO super-frame bigger than the batch buffer.
      const size = i === 250 ? 600_000 : i % 97 === 0 ? 70_000 : 60 + ((i * 389) % 1440);
      const f = new Uint8Array(size);
      f[0] = i & 0xff;
      f[1] = i >> 8;
      b.push(f);
      returned++;
    }
    assert.ok(posts > 1, 'the pushes filled more than one batch');
    assert.ok(pendingFlush, 'the rest waits for the end of the turn');
    (pendingFlush as () => void)();
    assert.deepEqual(
      got,
      Array.from({ length: n }, (_, i) => i),
    );
    assert.equal(b.pending, false);
  });
});
