import { ByteRing } from '../state/byte-ring.ts';
import type { TcpCached, TcpState } from '../state/tcp-state.ts';
import type { BatchList } from './batch-list.ts';
import { type ConnBlockRef, HardStateRecord, TRANSFER_RECORD_AT } from './hard-state.ts';
import { type ConnKey, keyOfState } from './nic.ts';
import { OWNER_HOST, TransferRecord } from './transfer-record.ts';
import type { GivenBlocks } from './worker/transfer-wire.ts';
import type { WorkerConnectionHandle } from './worker-handle.ts';

/**
 * One connection of an initiate: its key, its state and its block's views (the views object
 * itself, not a copy: a spread of it per connection per move cost microseconds once its shape
 * varied between blocks).
 */
export interface PreparedConn {
  key: ConnKey;
  /** Null when the record is named, not written, by the host (a move handed from worker to worker, handTo). */
  state: TcpState | null;
  readonly views: BlockViews;
  /** The transfer record was offered by this initiate (records transfer only). */
  offered: boolean;
  /**
   * A move handed from worker to worker (state null): the settings object the source's handle
   * kept, which the destination's handle takes as its own (see WorkerConnectionHandle.settings).
   */
  settings: TcpCached | null;
}

/**
 * The block's one PreparedConn (BlockViews.prepared), set for this initiate: a connection is in one
 * transfer at a time, and an object per connection and move lived until the answer came, long
 * enough to be promoted and collected again. Every field is written, so nothing of the transfer
 * before carries over.
 */
export function prepare(
  views: BlockViews,
  key: ConnKey,
  state: TcpState | null,
  settings: TcpCached | null,
): PreparedConn {
  const p = views.prepared;
  if (p === null) return (views.prepared = { key, state, views, offered: false, settings });
  p.key = key;
  p.state = state;
  p.offered = false;
  p.settings = settings;
  return p;
}

/**
 * `s`'s key: the one the block's last initiate named (`last`, PreparedConn.key) when it is the
 * same tuple, as it is for a connection coming back to a block it ran on, else a new one. A new
 * key per connection and offload lived on in its handle, to be promoted and collected later: half
 * a megabyte of an offload of 10,000's garbage on the main thread. Keys are values (nothing
 * writes a handle's key), so sharing one is safe.
 */
export function sameKeyOr(last: ConnKey | undefined, s: TcpState): ConnKey {
  const c = s.const;
  return last !== undefined &&
    last.localPort === c.localPort &&
    last.remotePort === c.remotePort &&
    last.localIp === c.localIp &&
    last.remoteIp === c.remoteIp
    ? last
    : keyOfState(s);
}

/**
 * The host's views of one connection's block: its rings, its hard-state record and its transfer
 * record. A block lives as long as its connection, wherever that runs, so its views are made once
 * and found again by the send ring the connection's state carries on every later move (a move
 * hands the host's ring objects from the source's handles to the destination's): per move no
 * typed array, no ring object and no block descriptor is made on the main thread.
 */
export interface BlockViews {
  block: ConnBlockRef;
  send: ByteRing;
  recv: ByteRing;
  record: HardStateRecord;
  transfer: TransferRecord;
  /**
   * The state the host last handed over in this block's transfer record, once the worker took
   * it: nothing uses it any more (the record is the state now), so the host's next read of the
   * record fills it in place (TransferRecord.readInto) instead of making nine objects anew.
   */
  spare: TcpState | null;
  /**
   * The handles made over this block, one per WorkerNic that ran it: a connection that comes back
   * to a NIC gets its old handle back (WorkerConnectionHandle._revive) rather than a new one per
   * move, which lived until the next move and so reached the old generation, where the collector
   * paid for it again (a scavenge's cost is what survives it).
   */
  handles: WorkerConnectionHandle[];
  /**
   * The entry of this block in the initiate that carries it now, or last did (see `prepare`);
   * once that transfer is over, without its state and settings (`settled`).
   */
  prepared: PreparedConn | null;
}

export const BLOCK_VIEWS = new WeakMap<ByteRing, BlockViews>();

/**
 * Bumped when a send ring's views are replaced by new ones (a ring paired with another receive
 * ring): a handle's own reference to its views stands for the table's only while this holds.
 */
export let viewsReplaced = 0;

export function blockViews(block: ConnBlockRef, send: ByteRing, recv: ByteRing): BlockViews {
  const v: BlockViews = {
    block,
    send,
    recv,
    record: new HardStateRecord(block.sab, block.at),
    transfer: new TransferRecord(block.sab, block.at + TRANSFER_RECORD_AT),
    spare: null,
    handles: [],
    prepared: null,
  };
  if (BLOCK_VIEWS.has(send)) viewsReplaced++;
  BLOCK_VIEWS.set(send, v);
  return v;
}

/** The views made for these rings earlier, if they are a block's rings (and still the same pair). */
export function knownViews(send: ByteRing, recv: ByteRing): BlockViews | undefined {
  const v = BLOCK_VIEWS.get(send);
  return v !== undefined && v.recv === recv ? v : undefined;
}

/** knownViews of a handle's rings, from the handle's own reference while that still stands for it. */
export function viewsOf(h: WorkerConnectionHandle): BlockViews | undefined {
  const v = h.views;
  if (v !== undefined && h.viewsAt === viewsReplaced && v.send === h.sendRing && v.recv === h.recvRing)
    return v;
  return knownViews(h.sendRing, h.recvRing);
}

/**
 * The connection no longer runs on its block (closed, or the block given back in TIME_WAIT): the
 * state the host last handed over in it (BlockViews.spare) will not be read into again, and is let
 * go with its rings. That state is still its released host connection's (the hand-over's
 * `releasedBy`, and the host table's entry while the placeholder forwards to the NIC: until the
 * NIC's 'closed', the 60 s of TIME_WAIT), and a connection the host ran after an upload has its
 * rings in the block: the released object kept the block's slab as the worker's pooled states'
 * did (nic-worker.ts, where the user is dropped instead). Rings of its own, empty, as giveBack's.
 */
export function dropSpare(h: WorkerConnectionHandle): void {
  const v = viewsOf(h);
  const spare = v?.spare ?? null;
  if (spare === null) return;
  v!.spare = null;
  const d = spare.delegated;
  if (d.sendBuffer.shared !== null) d.sendBuffer = new ByteRing(16);
  if (d.recvBuffer.shared !== null) d.recvBuffer = new ByteRing(16);
}

/**
 * The transfer is over (answered, refused, or kept for salvage): its entries let go of the state
 * and settings they carried. An entry stays with its block (BlockViews.prepared) for the next
 * transfer, and the state it named held the host's released state object (its path, its
 * neighbor, and, without records, its rings) as long as the block lived: after the connection
 * left the host, and after it closed, for as long as a socket kept its handle.
 */
export function settled(prepared: BatchList<PreparedConn> | undefined): void {
  if (prepared === undefined) return;
  for (const p of prepared.list) {
    p.state = null;
    p.settings = null;
  }
}

/** Records offered and not taken (or all of them: `owner` undefined) go back to the host. */
export function returnRecords(prepared: BatchList<PreparedConn> | undefined, owner?: number): void {
  if (prepared === undefined) return;
  for (const p of prepared.list) {
    const t = p.views.transfer;
    if (p.offered && (owner === undefined || t.owner !== owner)) t.setOwner(OWNER_HOST);
  }
}

/** The block each prepared connection was given, for the initiate's answer (no map per batch). */
export function givenBlocks(prepared: BatchList<PreparedConn> | undefined): GivenBlocks | undefined {
  if (prepared === undefined) return undefined;
  prepared.rewind();
  return { get: (k) => prepared.get(k)?.views.block, keys: prepared.list.map((p) => p.key) };
}
