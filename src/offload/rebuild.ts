import { InvalidStateError, StateValidationError } from '../core/errors.ts';
import { emptyHardState, rebuildTcpState } from '../nic/hard-state.ts';
import { type ConnKey, keyOfState, type Nic, type SalvageRecord, sameConnKey } from '../nic/nic.ts';
import { TupleMap } from '../nic/tuple-map.ts';
import type { ConnectionHandle, TcpUser } from '../stack/tcp/tcp-types.ts';
import type { ByteRing } from '../state/byte-ring.ts';
import type { PathState } from '../state/path-state.ts';
import type { TcpState } from '../state/tcp-state.ts';
import { DEFAULT_TCP_CACHED, TcpStateId } from '../state/tcp-state.ts';
import type { Item, ItemsByState, Owner, Refused, TransferProtocol, TransferReport } from './transfer.ts';

/**
 * Rebuild `items` (frozen in the host, sockets frozen) from what `from` left (`salvage()`: hard
 * state and buffers, design section 6), and install them at `dst`. Segments held at `from` (if it
 * is alive) and in the host are replayed at the new owner. A connection with no usable hard state
 * is lost (its user hears ECONNABORTED).
 */
export async function rebuild(
  t: TransferProtocol,
  items: Item[],
  from: Nic,
  dst: Owner,
  report: TransferReport,
  /** Prod each rebuilt connection (default: as the transfer's options say). */
  prod: boolean = t.opts.prod === true,
): Promise<void> {
  const stack = t.stack;
  const now = stack.clock.now();
  const tcp = stack.tcp;
  // A NIC hands its records back in the order asked, those it has: matched to the items by
  // walking both lists. Only a NIC that gave them otherwise (or more than asked) costs a map by
  // the tuple's numbers, which for ten thousand was a fifth of the salvage's block.
  const got = from.salvage(items.map((i) => i.key));
  const recOf: (SalvageRecord | undefined)[] = new Array(items.length);
  let j = 0;
  for (let i = 0; i < items.length && j < got.length; i++) {
    const r = got[j]!;
    const k = items[i]!.key;
    if (r.key === k || sameConnKey(r.key, k)) {
      recOf[i] = r;
      j++;
    }
  }
  if (j < got.length) {
    const recs = new TupleMap<SalvageRecord>();
    for (const r of got) recs.set(r.key, r);
    const asked = new TupleMap<true>();
    for (let i = 0; i < items.length; i++) {
      const k = items[i]!.key;
      recOf[i] = recs.get(k);
      asked.set(k, true);
    }
    // A NIC may hand over more than asked: those cannot stay there either.
    for (const r of recs.values()) {
      const e = t.entries.get(r.key);
      if (asked.has(r.key) || e?.nic !== from) continue;
      const k = e.key;
      tcp.freeze(k.localIp, k.localPort, k.remoteIp, k.remotePort);
      const socket = t.takeSocket(e, e.user);
      items.push({ key: k, user: e.user, socket });
      recOf.push(r);
    }
  }
  const states: TcpState[] = [];
  const keys: ConnKey[] = [];
  const byState: ItemsByState = new Map();
  // Every connection of a batch mostly shares one path: looked up once, not per connection.
  let pathRemote = -1;
  let pathLocal = -1;
  let lastPath: PathState | null = null;
  let made = 0;
  let validated = 0;
  let refused = 0;
  for (let i = 0; i < items.length; i++) {
    const it = items[i]!;
    const r = recOf[i];
    const k = it.key;
    if (k.remoteIp !== pathRemote || k.localIp !== pathLocal) {
      lastPath = stack.pathTo(k.remoteIp, k.localIp);
      pathRemote = k.remoteIp;
      pathLocal = k.localIp;
    }
    const path = lastPath;
    // Read where it lies, into the one object every record of the rebuild is read into.
    const hard = r === undefined ? null : r.readHard !== undefined ? r.readHard(HARD) : r.hard;
    if (r === undefined || hard === null || path === null) {
      t.lost(it, r === undefined ? 'no hard state left' : 'hard state never written', report);
      continue;
    }
    if (hard.state === TcpStateId.CLOSED || hard.state === TcpStateId.TIME_WAIT) {
      // It ended at the NIC before the host did: nothing left to do on the wire. TIME_WAIT is
      // not rebuilt: its peer may be gone, and would answer the prod of a rebuilt connection with
      // RST; all it still did was answer a retransmitted FIN. But its application may not have
      // read all the peer sent (acknowledged, so the peer believes it delivered): the socket
      // reads the rest from the salvaged receive ring, then ends. The dead NIC's handle, detached
      // by the salvage, would refuse the read. (The forget's resume then finds it not moving.)
      it.socket?._completeMove(new EndedConnection(it.key, r.recvRing));
      t.forget(it);
      report.refused.push({ key: it.key, status: 'closed', reason: 'closed at the NIC before it died' });
      const u = it.user;
      if (u) stack.clock.defer(() => u.onClosed(null));
      continue;
    }
    try {
      if (r.spare === undefined) made++;
      if (r.ownThread !== true) validated++;
      const s = rebuildTcpState(
        hard,
        r.sendRing,
        r.recvRing,
        r.cached ?? DEFAULT_TCP_CACHED,
        path,
        now,
        r.spare ?? null,
        r.ownThread === true,
      );
      const c = s.const;
      // The record names its own tuple, and the rebuild takes it from there: one damaged in the
      // dead thread's memory could name another connection, whose twin would be installed under
      // this one's socket.
      if (!sameConnKey(c, k))
        throw new StateValidationError('hard.tuple', 'the record names another connection');
      states.push(s);
      keys.push(k);
      byState.set(s, it);
    } catch (e) {
      refused++;
      t.lost(it, `hard state does not make a connection: ${String(e)}`, report);
    }
  }
  stack.counters.inc('offload.rebuilt', states.length);
  // Records that made no connection (a malformed one is refused before anything of it is installed).
  if (refused > 0) stack.counters.inc('offload.rebuilt.refused', refused);
  // What the rebuild made and checked, per connection: a new state where no spare came with the
  // record, a validation where the record came from another thread's memory.
  stack.counters.inc('offload.rebuilt.made', made);
  stack.counters.inc('offload.rebuilt.validated', validated);
  // Whatever the dead NIC still held goes back to the host's placeholders, to be replayed.
  // A dead NIC refuses both at once; asking anyway packed every key for the request first, the
  // largest part of a 10,000-connection crash's rebuild on the main thread after the salvage.
  let held: Uint8Array[] = [];
  if (from.death === null) {
    try {
      held = await t.wait(from.takeQueued(keys));
      await t.wait(from.dropFrozen(keys));
    } catch {
      // Gone for good: the peer resends what it held.
    }
  }
  for (const p of held) tcp.inputPacket(p);
  if (states.length === 0) return;
  let ok = states;
  let failed: Refused[] = [];
  let died: TcpState[] | undefined;
  if (dst !== 'host') {
    const r = await t.install(dst, states, undefined, prod);
    ok = r.ok;
    failed = r.failed;
    died = r.died;
  }
  // Named by the item's key, as the general protocol's settle does: a key object made per
  // connection was a read of each state's constants again, in the charged settle. The sockets
  // resume paced (a turn's share at a time, network input first): every one of a dead NIC's
  // sockets held its application's writes through the rebuild, and copying them all into the new
  // owner's rings in the settle's turn was its longest block.
  for (const s of await t.settle(ok, byState, 'host', dst, report, prod, true))
    report.moved.push(byState.get(s)!.key);
  if (died !== undefined) await t.rebuildDied(died, byState, 'host', dst, report);
  if (failed.length === 0) return;
  for (const f of failed)
    report.refused.push({ key: keyOfState(f.state), status: f.status, reason: f.reason });
  const left = t.survivors(failed, byState);
  await t.settle(left, byState, 'host', 'host', undefined, prod);
}

/**
 * The hard state of the record being rebuilt (SalvageRecord.readHard): the rebuild keeps nothing
 * of it (rebuildTcpState copies its fields), so one object serves every record.
 */
const HARD = emptyHardState();

/**
 * A connection that ended at a NIC before the NIC died, left to its socket as what remains of it:
 * the bytes its application had not yet read, in the receive ring salvaged from the NIC. Nothing
 * goes to the wire any more; writes are refused by the socket (closed by the stack) before here.
 */
class EndedConnection implements ConnectionHandle {
  readonly localIp: number;
  readonly localPort: number;
  readonly remoteIp: number;
  readonly remotePort: number;
  readonly writableLength = 0;
  readonly sendDry = true;
  user: TcpUser | null = null;

  constructor(
    key: ConnKey,
    private readonly recv: ByteRing,
  ) {
    this.localIp = key.localIp;
    this.localPort = key.localPort;
    this.remoteIp = key.remoteIp;
    this.remotePort = key.remotePort;
  }

  get readableLength(): number {
    return this.recv.length;
  }
  read(dst: Uint8Array, off = 0, len = dst.length - off): number {
    return this.recv.read(dst, off, len);
  }
  write(): number {
    throw new InvalidStateError('write: the connection ended');
  }
  notifyOnAck(): void {}
  shutdown(): void {}
  close(): void {}
  abort(): void {}
  setNoDelay(): void {}
  setKeepAlive(): void {}
}
