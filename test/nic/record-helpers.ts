import type { WorkerReply, WorkerRequest } from '../../src/nic/worker/protocol.ts';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import type { OffloadTree } from '../../src/state/offload-tree.ts';
import { encodeBatch } from '../../src/state/state-codec.ts';

/** A WorkerNic's record owner number and its raw request channel, to hand it records by hand. */
export function recordChannel(nic: WorkerNic): {
  owner: number;
  request(r: WorkerRequest): Promise<WorkerReply<'initiate'>>;
} {
  const inner = nic as unknown as {
    recordOwner: number;
    request(r: WorkerRequest): Promise<WorkerReply<'initiate'>>;
  };
  return { owner: inner.recordOwner, request: (r) => inner.request(r) };
}

/** The codec's bytes of the trees' neighbors and paths alone, rings by reference, as a records initiate sends. */
export function pathsOnly(trees: readonly OffloadTree[]): Uint8Array {
  const bare: OffloadTree[] = trees.map((tr) => ({
    neighbor: tr.neighbor,
    paths: tr.paths.map((p) => ({ path: p.path, conns: [] })),
  }));
  return encodeBatch(bare, 0, { ringsByRef: true });
}
