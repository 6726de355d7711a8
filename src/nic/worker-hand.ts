import { InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import { BatchList } from './batch-list.ts';
import type { ConnKey, Handed, InitiateResult } from './nic.ts';
import { TupleMap } from './tuple-map.ts';
import type { WorkerReply } from './worker/protocol.ts';
import { packKeys } from './worker/transfer-wire.ts';
import { type PreparedConn, prepare, returnRecords, settled, viewsOf } from './worker-block-views.ts';
import type { WorkerConnectionHandle } from './worker-handle.ts';
import type { WorkerNic } from './worker-nic.ts';

/** `slots` are the slots of `handles`, in their order. */
function slotsOf(handles: readonly WorkerConnectionHandle[], slots: readonly number[]): boolean {
  if (handles.length !== slots.length) return false;
  for (let i = 0; i < slots.length; i++) if (handles[i]!.slot !== slots[i]) return false;
  return true;
}

function sameSlots(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export async function hand(
  src: WorkerNic,
  dst: WorkerNic,
  keys: readonly ConnKey[],
  frozen: WorkerConnectionHandle[],
  prod: boolean,
): Promise<Handed> {
  // The caller reuses `keys` once this returns its promise (Nic.handTo): only its length is kept.
  const asked = keys.length;
  const expected = expectHand(dst, src.recordOwner);
  let res: WorkerReply<'terminate'>;
  try {
    res = await src.request({
      op: 'terminate',
      arg: packKeys(keys, src.hostAddrs),
      byRef: true,
      records: true,
      hand: { owner: dst.recordOwner, id: expected.id, prod },
    });
  } catch (e) {
    // An answer the host cannot read says nothing of whether the batch went: it may run at the
    // destination already, so resuming here could run it twice. The worker was taken as dead
    // ('defective', see request), and its channel's close tells the destination's side to stop
    // waiting for a batch it never got.
    if (src.death !== null) return handedByDead(src, dst, frozen, expected.answer, e);
    // Alive and answering a failure, its worker failed before it posted the batch (once it has,
    // it answers success or dies): nothing went, nothing will.
    dst.port.fail(expected.id, e as Error);
    src.giveBack(frozen);
    throw e;
  }
  const closed = src.closedWhileFrozen(frozen);
  // The worker releases in the order asked (the usual batch): then no set of slots is made.
  const moved = slotsOf(frozen, res.moved) ? null : new Set(res.moved);
  // Made at its largest and cut to what was released: a part's lists grown a push at a time left
  // outgrown copies behind, garbage of every move in proportion to its connections.
  const released = new Array<WorkerConnectionHandle>(frozen.length);
  const preparing = new Array<PreparedConn>(frozen.length);
  let n = 0;
  for (const h of frozen) {
    if ((moved !== null && !moved.has(h.slot)) || closed?.has(h) === true) continue;
    const p = prepare(viewsOf(h)!, h.key, null, h.settings);
    p.offered = true;
    preparing[n] = p;
    released[n++] = h;
  }
  released.length = n;
  preparing.length = n;
  const prepared = new BatchList(preparing);
  // Freed exactly what moved (the usual answer): none closed at the worker instead.
  const movedSet = moved ?? (sameSlots(res.freed, res.moved) ? null : new Set(res.moved));
  if (movedSet !== null)
    for (const s of res.freed) {
      // Closed at the worker instead of moving: the handle stays the socket's.
      const h = src.handles[s];
      if (h && !movedSet.has(s)) h._reattach();
    }
  src.passUp(released);
  src.forget(res.freed);
  const bytes = res.value;
  const result = await takeHand(dst, expected.answer, prepared);
  settled(prepared);
  // Closed by its owner before the host took its answer: it installed the batch and aborted it
  // (the events of that abort found no handle here yet), or it never will.
  let aborted: string | undefined;
  if (result !== null && dst.closed && dst.death === null) {
    aborted = `NIC ${dst.id} closed with the batch in hand`;
    for (const c of result.conns) {
      const h = c.status === 'success' ? dst.byKey.get(c.key) : undefined;
      if (h === undefined) continue;
      h.detached = true;
      dst.forget([h.slot]);
    }
  }
  return {
    // Every key asked released (the usual part): each handle was found under its key, in order.
    released: n === asked ? null : released.map((h) => h.key),
    result,
    sourceDied: false,
    aborted,
    readRefused: (ks, now, addrs) => {
      const byKey = new TupleMap<WorkerConnectionHandle>();
      for (const h of released) byKey.set(h, h);
      const hs: WorkerConnectionHandle[] = [];
      for (const k of ks) {
        const h = byKey.get(k);
        if (h === undefined) throw new InvalidArgumentError('readRefused: not a released connection');
        hs.push(h);
      }
      try {
        return src.readReleased(bytes, hs, now, addrs);
      } catch (e) {
        // Rolled back from nothing, they would be lost: left for the source's salvage() instead.
        src.keepReleased(hs);
        throw e;
      }
    },
  };
}

/**
 * The source died before it answered: it may have handed the batch on all the same. What the
 * destination installed runs there (and leaves this NIC's salvage); the rest is left for it.
 */
export async function handedByDead(
  src: WorkerNic,
  dst: WorkerNic,
  frozen: WorkerConnectionHandle[],
  answer: Promise<WorkerReply<'initiate'>>,
  cause: unknown,
): Promise<Handed> {
  let res: WorkerReply<'initiate'> | null = null;
  try {
    res = await answer;
  } catch {
    // Not handed (the channel closed first), refused whole, or the destination died too: each
    // block holds the newest hard state of its connection, whoever wrote it last, for salvage().
    // As after any terminate that failed, the handles are the sockets' again meanwhile. But a
    // destination closed by its owner (below) decides first.
    if (!(dst.closed && dst.death === null)) {
      for (const h of frozen) h._reattach();
      throw cause;
    }
  }
  // Closed by its owner with the batch maybe in hand (as in hand()): whatever it installed was
  // aborted (RST to the peer), and no one can say which it had. Rebuilt from the dead source's
  // hard state, one the peer has reset would run on until its next segment met a RST (the user
  // hearing ECONNRESET then, or never when idle), and one it had not would be the only one run:
  // the abort wins for all, none is left for salvage, each is lost at once with ECONNABORTED.
  if (dst.closed && dst.death === null) return abortedByDead(src, dst, frozen);
  if (res === null) throw cause;
  const prepared = new BatchList<PreparedConn>();
  for (const h of frozen) {
    const p = prepare(viewsOf(h)!, h.key, null, h.settings);
    p.offered = true;
    prepared.push(p);
  }
  const result = dst.takeInstalled(res, prepared, dst.recordOwner);
  settled(prepared);
  const released: ConnKey[] = [];
  const handed = new TupleMap<true>();
  for (const c of result.conns) {
    released.push(c.key);
    handed.set(c.key, true);
    if (c.status !== 'success') continue;
    const h = src.byKey.get(c.key);
    if (h !== undefined) {
      src.keyEpoch++;
      src.byKey.delete(h);
      h.unlisted = true;
      src.conns--;
      src.dropGrown(h);
    }
  }
  for (const h of frozen) if (!handed.has(h)) h._reattach();
  return {
    released,
    result,
    sourceDied: true,
    readRefused: () => {
      throw new InvalidStateError(`NIC ${src.id} died before it answered`);
    },
  };
}

/**
 * A dead source's batch whose destination was closed mid-hand: every frozen connection leaves
 * this NIC's salvage (nothing rebuilds what the destination may have reset) and is reported
 * aborted; any handle the destination took up lets go as in hand().
 */
export function abortedByDead(src: WorkerNic, dst: WorkerNic, frozen: WorkerConnectionHandle[]): Handed {
  const released: ConnKey[] = [];
  for (const h of frozen) {
    released.push(h.key);
    if (src.byKey.get(h) === h) {
      src.keyEpoch++;
      src.byKey.delete(h);
      h.unlisted = true;
      src.handles[h.slot] = undefined;
      src.conns--;
      src.dropGrown(h);
    }
    const d = dst.byKey.get(h.key);
    if (d !== undefined) {
      d.detached = true;
      dst.forget([d.slot]);
    }
  }
  return {
    released,
    result: { status: 'failure', reason: `NIC ${dst.id} closed with the batch in hand`, conns: [] },
    sourceDied: true,
    aborted: `NIC ${dst.id} closed with the batch in hand`,
    readRefused: () => {
      throw new InvalidStateError(`NIC ${src.id} died before it answered`);
    },
  };
}

/** Register the answer this NIC's worker will give for a batch the worker of `from` hands it. */
export function expectHand(
  nic: WorkerNic,
  from: number,
): { id: number; answer: Promise<WorkerReply<'initiate'>> } {
  const e = nic.port.expect('initiate');
  let ids = nic.handsFrom.get(from);
  if (ids === undefined) {
    ids = new Set();
    nic.handsFrom.set(from, ids);
  }
  const set = ids;
  set.add(e.id);
  const done = () => {
    set.delete(e.id);
  };
  // Awaited only once the source answers: a death meanwhile must not go unhandled.
  e.answer.then(done, done);
  return e;
}

/**
 * The answer to a batch handed here: the connections installed are taken up; when this NIC
 * died with the batch in hand, null, and the batch's blocks are kept for salvage().
 */
export async function takeHand(
  nic: WorkerNic,
  answer: Promise<WorkerReply<'initiate'>>,
  prepared: BatchList<PreparedConn>,
): Promise<InitiateResult | null> {
  // An answer that does not unpack is refused and counted as malformed, and the NIC taken as dead
  // ('defective'): the worker may have installed the batch, so, as when it dies with the batch in
  // hand, the batch is left for a rebuild from what it ran. Handed back to the source, its
  // connections could run in both places. Refused whole by a live worker (it did not decode or
  // validate), every record is the host's again.
  const failed = (e: unknown): InitiateResult | null => {
    if (nic.death !== null) {
      nic.keepForSalvage(prepared);
      return null;
    }
    returnRecords(prepared);
    return { status: 'failure', reason: (e as Error).message, conns: [] };
  };
  let res: WorkerReply<'initiate'>;
  try {
    res = await answer;
  } catch (e) {
    return failed(e);
  }
  try {
    return nic.takeInstalled(res, prepared, nic.recordOwner);
  } catch (e) {
    return failed(e);
  }
}
