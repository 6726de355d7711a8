import { StateValidationError } from '../core/errors.ts';
import type { TcpUser } from '../stack/tcp/tcp-types.ts';
import type { ByteRing } from '../state/byte-ring.ts';
import type { OffloadTree } from '../state/offload-tree.ts';
import type { TcpCached, TcpState } from '../state/tcp-state.ts';
import { validateTrees } from '../state/validate.ts';
import type { HardState } from './hard-state.ts';
import { type ConnKey, connKeyId, keyOfState, LazySalvage, type SalvageRecord } from './nic.ts';
import { OWNER_HOST } from './transfer-record.ts';
import { TupleMap } from './tuple-map.ts';
import { viewsOf } from './worker-block-views.ts';
import type { WorkerConnectionHandle } from './worker-handle.ts';

/**
 * A terminate's connections that came as transfer records: each released handle's record (but
 * those of the connections the batch carried), handed to the host, read over the rings the host
 * shares with the worker into the path it names; then the whole batch validated as the codec's
 * decoder does. Throws StateValidationError on anything malformed (decodeReleased then keeps the
 * connections salvageable). Returns how many it read into pooled states.
 */
export function fillFromReleased(
  trees: OffloadTree[],
  released: readonly WorkerConnectionHandle[],
  now: number,
): number {
  const nodes = trees.flatMap((t) => t.paths);
  // Most batches carry no state in the codec: then no key needs naming.
  let decoded: TupleMap<true> | null = null;
  let pooled = 0;
  for (const node of nodes) for (const s of node.conns) (decoded ??= new TupleMap()).set(s.const, true);
  for (const h of released) {
    if (decoded?.has(h)) continue;
    const rec = h.transfer;
    if (rec.owner !== OWNER_HOST) throw new StateValidationError('owner', 'record not handed to the host');
    const node = nodes[rec.pathIndex];
    if (node === undefined)
      throw new StateValidationError('path', `path index ${rec.pathIndex} outside the batch`);
    const views = viewsOf(h);
    const spare = views?.spare ?? null;
    if (spare !== null) {
      views!.spare = null;
      pooled++;
    }
    const s =
      spare === null
        ? rec.read(now, node.path, h.sendRing, h.recvRing)
        : rec.readInto(spare, now, node.path, h.sendRing, h.recvRing);
    const c = s.const;
    if (
      (c.localIp !== h.localIp ||
        c.localPort !== h.localPort ||
        c.remoteIp !== h.remoteIp ||
        c.remotePort !== h.remotePort) &&
      connKeyId(keyOfState(s)) !== h.id
    )
      throw new StateValidationError('tcp.const', 'record is not the connection it was released as');
    node.conns.push(s);
  }
  validateTrees(trees);
  return pooled;
}

/**
 * A handle's salvage record. Its settings go as the handle's own object: the rebuild copies them
 * onto its state (a new one's, or the spare's, whose own are as of the handover). Without `hard`,
 * the record is read from the handle's block when first asked (LazySalvage): the handle is the
 * salvage's, detached, and nothing writes the block of a connection no worker runs.
 */
export function salvageOf(
  h: WorkerConnectionHandle,
  hard: HardState | null | undefined,
  sendRing: ByteRing,
  spare?: TcpState,
): SalvageRecord {
  const r = new HandleSalvage(h, sendRing, spare);
  if (hard !== undefined) r.hard = hard;
  return r;
}

class HandleSalvage extends LazySalvage {
  readonly key: ConnKey;
  readonly recvRing: ByteRing;
  readonly user: TcpUser | null;
  readonly cached: TcpCached | undefined;

  constructor(
    private readonly h: WorkerConnectionHandle,
    readonly sendRing: ByteRing,
    readonly spare: TcpState | undefined,
  ) {
    super();
    this.key = h.key;
    this.recvRing = h.recvRing;
    this.user = h.user;
    this.cached = h.settings ?? undefined;
  }

  protected readInto(out?: HardState): HardState | null {
    return this.h.hardState(out);
  }
}
