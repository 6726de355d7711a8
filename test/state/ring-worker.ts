// Worker side of the two-thread ring test: consumes the host's send ring and produces into its
// receive ring, echoing every byte, then reports a digest of what it saw.
import { createHash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';
import { ByteRing } from '../../src/state/byte-ring.ts';
import type { SharedRingRef } from '../../src/state/shared-ring.ts';

const { toWorker, toHost, total } = workerData as {
  toWorker: SharedRingRef;
  toHost: SharedRingRef;
  total: number;
};
const inRing = ByteRing.attachShared(toWorker);
const outRing = ByteRing.attachShared(toHost);
const hash = createHash('sha256');
const chunk = new Uint8Array(7919);
let seen = 0;
let pending = 0;
let pendingOff = 0;
while (seen < total || pending > 0) {
  if (pending === 0) {
    const n = inRing.read(chunk, 0, chunk.length);
    if (n > 0) {
      hash.update(chunk.subarray(0, n));
      seen += n;
      pending = n;
      pendingOff = 0;
    }
  }
  if (pending > 0) {
    const w = outRing.write(chunk, pendingOff, pending);
    pending -= w;
    pendingOff += w;
  }
}
parentPort!.postMessage({ digest: hash.digest('hex'), seen });
