import { type ConnectionError, InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import type { ConnectionHandle, TcpUser } from '../stack/tcp/tcp-types.ts';
import { ByteRing } from '../state/byte-ring.ts';
import { assignTcpCached, copyTcpCached, type TcpCached } from '../state/tcp-state.ts';
import {
  type ConnBlockRef,
  emptyHardState,
  goneBlock,
  type HardState,
  type HardStateRecord,
} from './hard-state.ts';
import { type ConnKey, connKeyId } from './nic.ts';
import type { TransferRecord } from './transfer-record.ts';
import { sameBlock } from './worker/conn-blocks.ts';
import {
  BELL_READ,
  BELL_WANT_ACKED,
  BELL_WANT_WRITABLE,
  BELL_WROTE,
  EV_BLOCK_GONE,
  EV_CLOSED,
  EV_READABLE,
  EV_REMOTE_END,
  EV_SEND_DRY,
  EV_WRITABLE,
} from './worker/protocol.ts';
import { BLOCK_VIEWS, type BlockViews, blockViews, dropSpare, viewsReplaced } from './worker-block-views.ts';
import type { WorkerNic } from './worker-nic.ts';

/** What handles whose block the worker gave back hold in its place (see letGoBlock); made once. */
let goneViews: BlockViews | null = null;

/**
 * The application's handle of a connection that runs in a worker. Payload never crosses in a
 * message: write() copies into the shared send ring and rings the doorbell, read() takes from the
 * shared receive ring. Control calls (shutdown, close, ...) go over the port, after any bytes
 * already written, which the worker takes first.
 */
export class WorkerConnectionHandle implements ConnectionHandle {
  readonly localIp: number;
  readonly localPort: number;
  readonly remoteIp: number;
  readonly remotePort: number;
  /** The send ring this thread writes: a grown one as soon as the host made it (see WorkerNic.regrow). */
  sendRing: ByteRing;
  recvRing: ByteRing;
  /** As of the latest EV_WRITABLE: the worker had sent everything in the send ring. */
  private dry = false;
  record: HardStateRecord;
  /** The block's transfer record. */
  transfer: TransferRecord;
  /** @internal The views of the block it was made over, as the table then had them (see viewsOf). */
  views: BlockViews | undefined;
  /** @internal viewsReplaced when `views` was taken. */
  readonly viewsAt: number;
  /** The shared memory it runs on (handed on to the next worker when it moves). */
  block: ConnBlockRef;
  /**
   * A grow in progress (WorkerNic.regrow): the block the connection moves to, and the old send
   * ring's read position its send ring was copied from. Until the worker says it moved, nothing is
   * read from the receive ring (the worker copies what is unread) and `block`, `record`, `recvRing`
   * are the old block's.
   */
  growing: { views: BlockViews; r0: number; oldSend: ByteRing } | null = null;
  /** Bytes its grows added to the NIC's rings (WorkerNic's grow budget). */
  grownBy = 0;
  /**
   * @internal The bytes the NIC counts as held after the close (WorkerNic's `heldClosed`): the
   * worker freed its slot, the socket has not read all of it yet, and the unread bytes were
   * copied out of the block into a ring of this size (_keepUnreadOnly). 0: not held.
   */
  heldBytes = 0;
  /** @internal The application closed it (close, abort) or let go after the close (dropUnread): it reads no more. */
  appDone = false;
  /** connKeyId of its key, named when first asked (moves look handles up by the tuple). */
  private idRef: string | undefined;
  private userRef: TcpUser | null = null;
  private pending = 0;
  private pendingError: ConnectionError | null = null;
  private deliverScheduled = false;
  /** The connection is being (or was) uploaded: this handle no longer reaches it. */
  detached = false;

  /** ConnectionHandle.letGo: detached (a transfer that did not move it reattaches it first). */
  get letGo(): boolean {
    return this.detached;
  }
  /**
   * @internal Its NIC's table by four-tuple no longer holds it (set where it is deleted there,
   * cleared where an install enters it again): a revive then need not search the table. False
   * says nothing either way.
   */
  unlisted = false;
  /**
   * @internal The connection's cached settings as the worker was given them (the state the host
   * handed over) and then told (setNoDelay, setKeepAlive): a dead worker's salvage carries them,
   * or its rebuild would run with the defaults. Its own object, copied into: the state it came
   * from is reused (BlockViews.spare) for the block's next read. Accepted at the worker: its
   * listener's (the worker may have sized the buffers to its budget; the rebuild takes the rings').
   */
  settings: TcpCached | null = null;
  private ended = false;
  private closedFlag = false;
  /**
   * Set when the worker gave the block back (EV_BLOCK_GONE): the hard state its record held last
   * (TIME_WAIT), what a salvage reads from now on; null while the block is the connection's.
   */
  private blockGone: { hard: HardState | null } | null = null;

  constructor(
    /** Its NIC: the one it was made at, or the survivor that took it up from a dead one (_revive). */
    private nic: WorkerNic,
    readonly key: ConnKey,
    /** The worker's slot; a revived handle (see _revive) gets the slot of its new install. */
    public slot: number,
    /** The block the worker installed it on. */
    block: ConnBlockRef,
    /** Views of the same block made when the host prepared it (saves attaching them again). */
    views?: BlockViews,
    id?: string,
  ) {
    this.localIp = key.localIp;
    this.localPort = key.localPort;
    this.remoteIp = key.remoteIp;
    this.remotePort = key.remotePort;
    this.idRef = id;
    if (views === undefined || (views.block !== block && !sameBlock(views.block, block)))
      views = blockViews(block, ByteRing.attachShared(block.send), ByteRing.attachShared(block.recv));
    this.sendRing = views.send;
    this.recvRing = views.recv;
    this.record = views.record;
    this.transfer = views.transfer;
    this.block = views.block;
    this.views = BLOCK_VIEWS.get(views.send) === views ? views : undefined;
    this.viewsAt = viewsReplaced;
  }

  /** @internal This handle is `nic`'s. */
  nicIs(nic: WorkerNic): boolean {
    return this.nic === nic;
  }

  /** @internal Its NIC died: it runs nothing again, and hands its connections out by salvage only. */
  nicDied(): boolean {
    return this.nic.death !== null;
  }

  get id(): string {
    this.idRef ??= connKeyId(this.key);
    return this.idRef;
  }

  get user(): TcpUser | null {
    return this.userRef;
  }
  set user(u: TcpUser | null) {
    this.userRef = u;
    if (u !== null && this.pending !== 0) this.scheduleDelivery();
  }

  get readableLength(): number {
    // Mid-grow the old ring's unread bytes are the connection's still (the worker carries them to
    // the new ring), though read() takes none of them until it has: a length of 0 would let a
    // socket that heard the peer's FIN end the stream before them.
    return this.recvRing.length;
  }
  get writableLength(): number {
    return this.sendRing.length;
  }
  get closed(): boolean {
    return this.closedFlag;
  }

  write(src: Uint8Array, off = 0, len = src.length - off): number {
    if (!Number.isInteger(off) || !Number.isInteger(len) || off < 0 || len < 0 || off + len > src.length) {
      throw new InvalidArgumentError('write: range outside the source buffer');
    }
    if (this.detached) throw new InvalidStateError('write: the connection has moved to another owner');
    if (this.ended || this.closedFlag) throw new InvalidStateError('write after shutdown or close');
    const n = this.sendRing.write(src, off, len);
    let bits = 0;
    if (n > 0) bits |= BELL_WROTE;
    if (n < len) bits |= BELL_WANT_WRITABLE;
    if (bits !== 0) this.nic.ring(this.slot, bits);
    return n;
  }

  get sendDry(): boolean {
    return this.dry;
  }

  get sendGrown(): number {
    // A ring placed at the NIC's placement ring is one a grow would have given (sendRingAtPlacement).
    return this.grownBy > 0 || this.sendRing.capacity >= this.nic.placedRing ? this.sendRing.capacity : 0;
  }

  notifyOnAck(): void {
    if (this.detached || this.closedFlag) return;
    this.nic.ring(this.slot, BELL_WANT_ACKED);
  }

  read(dst: Uint8Array, off = 0, len = dst.length - off): number {
    if (!Number.isInteger(off) || !Number.isInteger(len) || off < 0 || len < 0 || off + len > dst.length) {
      throw new InvalidArgumentError('read: range outside the destination buffer');
    }
    if (this.detached) throw new InvalidStateError('read: the connection has moved to another owner');
    if (this.growing !== null) return 0;
    const n = this.recvRing.read(dst, off, len);
    // A read the worker said cannot make it send (no ACK owed, the window wide, no measure due)
    // rings nothing: its next ACK reads the ring's position anyway.
    if (n > 0 && !this.closedFlag && !this.nic._readQuiet(this.slot)) this.nic.ring(this.slot, BELL_READ);
    // Read to the end: nothing of the block is the application's any more.
    if (this.heldBytes > 0 && this.recvRing.length === 0) this.nic._unholdClosed(this);
    return n;
  }

  /** The socket is done with the closed connection: what its block held unread is not counted any more. */
  dropUnread(): void {
    this.appDone = true;
    if (this.heldBytes > 0) this.nic._unholdClosed(this);
  }

  shutdown(): void {
    if (this.detached || this.ended || this.closedFlag) return;
    this.ended = true;
    this.nic.post({ t: 'op', slot: this.slot, op: 'shutdown' });
  }
  close(): void {
    this.dropUnread();
    if (this.detached || this.closedFlag) return;
    this.ended = true;
    this.nic.post({ t: 'op', slot: this.slot, op: 'close' });
  }
  abort(): void {
    this.dropUnread();
    if (this.detached || this.closedFlag) return;
    this.closedFlag = true;
    this.nic.post({ t: 'op', slot: this.slot, op: 'abort' });
  }
  setNoDelay(on: boolean): void {
    if (this.detached || this.closedFlag) return;
    if (this.settings !== null) this.settings.noDelay = on;
    this.nic.post({ t: 'op', slot: this.slot, op: 'nodelay', on });
  }
  setKeepAlive(on: boolean, idleMs?: number): void {
    if (idleMs !== undefined && (!Number.isFinite(idleMs) || idleMs <= 0)) {
      throw new InvalidArgumentError('keepalive idle must be > 0');
    }
    if (this.detached || this.closedFlag) return;
    const k = this.settings;
    if (k !== null) {
      k.keepAlive = on;
      if (idleMs !== undefined) k.keepIdleMs = idleMs;
    }
    this.nic.post({ t: 'op', slot: this.slot, op: 'keepalive', on, ms: idleMs });
  }

  /** A consistent snapshot of the connection's hard state, read from shared memory. */
  hardState(out: HardState = emptyHardState()): HardState | null {
    if (this.blockGone !== null) return this.blockGone.hard;
    // Mid-grow, the new block's record once the worker wrote it (it then writes no other).
    if (this.growing?.views.record.read(out) === true) return out;
    return this.record.read(out) ? out : null;
  }

  /** @internal The host made a larger block for this connection; its writes go there from now on. */
  _beginGrow(views: BlockViews, r0: number): void {
    this.growing = { views, r0, oldSend: this.sendRing };
    this.sendRing = views.send;
  }

  /** @internal The worker moved the connection to the grown block (or died after it wrote its record there). */
  _finishGrow(): void {
    const g = this.growing;
    if (g === null) return;
    this.growing = null;
    const v = g.views;
    this.block = v.block;
    this.sendRing = v.send;
    this.recvRing = v.recv;
    this.record = v.record;
    this.transfer = v.transfer;
    v.handles.push(this);
    // Bytes that arrived meanwhile were held back from the socket: tell it now.
    if (this.recvRing.length > 0) this._event(EV_READABLE, null);
  }

  /**
   * @internal The worker no longer ran the connection in this slot when the grow came (it closed
   * there): the old block stays the connection's, reads resume from it.
   */
  _abandonGrow(): void {
    const g = this.growing;
    if (g === null) return;
    this.growing = null;
    this.sendRing = g.oldSend;
    if (this.recvRing.length > 0) this._event(EV_READABLE, null);
  }

  /** @internal Events from the worker. Delivered even while detached: the socket holds them. */
  _event(bits: number, error: ConnectionError | null): void {
    if (bits & EV_BLOCK_GONE) this.letGoBlock();
    if (bits & EV_CLOSED) {
      this.closedFlag = true;
      this.pendingError = error;
    }
    if (bits & EV_WRITABLE) this.dry = (bits & EV_SEND_DRY) !== 0;
    this.pending |= bits;
    this.scheduleDelivery();
  }

  /**
   * The worker holds this connection in TIME_WAIT with empty rings and no longer its block: let go
   * of it here too (this handle lives until TIME_WAIT ends, and held the block's slab as long),
   * keeping the record's last hard state for a salvage, which ends a TIME_WAIT (rebuild.ts).
   * A grow in flight goes with it: the worker refuses it (its slot is on no block the host names).
   */
  private letGoBlock(recv: ByteRing = new ByteRing(16)): void {
    if (this.blockGone !== null) return;
    dropSpare(this);
    const hard = this.hardState();
    this.blockGone = { hard };
    this.growing = null;
    const v = (goneViews ??= blockViews(
      goneBlock(),
      ByteRing.attachShared(goneBlock().send),
      ByteRing.attachShared(goneBlock().recv),
    ));
    this.block = v.block;
    this.record = v.record;
    this.transfer = v.transfer;
    this.views = undefined;
    // Rings of its own: what the socket reads or writes here stays here.
    this.sendRing = new ByteRing(16);
    this.recvRing = recv;
  }

  /**
   * @internal Closed in the worker (its slot freed, its last record written) with bytes its socket
   * has not read (WorkerNic.holdClosed): those bytes are copied into a ring of their own size and
   * the block is let go, as for a TIME_WAIT's (letGoBlock). Nothing writes into the block any
   * more, and the block held its whole rings (and its slab) for bytes that may be a few hundred:
   * a NIC's ring budget counted some 50 paused sockets of reset connections whole and refused
   * every live connection's grow. Linux charges a closed socket's queue by its buffers
   * (sk_rmem_alloc), not by its sk_rcvbuf. Returns the bytes the copy holds.
   */
  _keepUnreadOnly(): number {
    const n = this.recvRing.length;
    const copy = new ByteRing(n);
    copy.write(this.recvRing.toArray());
    this.letGoBlock(copy);
    return copy.capacity;
  }

  private scheduleDelivery(): void {
    if (this.deliverScheduled || this.userRef === null) return;
    this.deliverScheduled = true;
    this.nic.deliveries.push(this);
  }

  /**
   * @internal Whether `nic` may take this handle up again for the same connection (`key`) installed
   * anew: it was released from this NIC by a move, or salvaged from a NIC that died (whose tables
   * no longer hold it: `unlisted`, its slot emptied, and a dead NIC installs nothing again), nothing
   * holds it there any more, and no event waits in it for a socket. A dead NIC's handle that let
   * its block go (closed, held unread) or was mid-grow is not the running connection's any more.
   */
  _revivable(nic: WorkerNic, key: ConnKey): boolean {
    return (
      (this.nic === nic ||
        (this.nic.death !== null &&
          this.unlisted &&
          this.blockGone === null &&
          this.growing === null &&
          this.heldBytes === 0)) &&
      this.detached &&
      this.pending === 0 &&
      !this.deliverScheduled &&
      this.localIp === key.localIp &&
      this.localPort === key.localPort &&
      this.remoteIp === key.remoteIp &&
      this.remotePort === key.remotePort
    );
  }

  /** @internal The settings its install gave the worker (see `settings`); copied, the object kept. */
  _installedWith(from: TcpCached | null | undefined): void {
    if (from === null || from === undefined) this.settings = null;
    else if (this.settings === null) this.settings = copyTcpCached(from);
    else if (this.settings !== from) assignTcpCached(this.settings, from);
  }

  /**
   * @internal The same connection installed again at `nic` (this handle's, or a survivor of its dead
   * NIC), in `slot`: as new, but no object made, its settings' object kept.
   */
  _revive(slot: number, nic: WorkerNic): void {
    this.nic = nic;
    this.slot = slot;
    this.dry = false;
    this.userRef = null;
    this.pendingError = null;
    this.detached = false;
    this.ended = false;
    this.closedFlag = false;
    this.appDone = false;
  }

  /**
   * @internal Events queued for a user that never came: the one that comes now is told anew. Of
   * how the connection ended if it closed, `_closeError` keeps the reason; returned: whether the
   * peer's FIN was among them.
   */
  _dropPending(): boolean {
    const remoteEnded = (this.pending & EV_REMOTE_END) !== 0;
    this.pending = 0;
    return remoteEnded;
  }

  /** @internal Its close's error as the worker reported it (null: orderly, or not closed). */
  get _closeError(): ConnectionError | null {
    return this.pendingError;
  }

  /** @internal The handle reaches its connection again (a move that did not happen). */
  _reattach(): void {
    this.detached = false;
    if (this.pending !== 0) this.scheduleDelivery();
  }

  /** @internal A close (an end or a reset) waits in it for its socket. */
  get _closing(): boolean {
    return (this.pending & EV_CLOSED) !== 0;
  }

  /** @internal Its turn in the NIC's deliveries (WorkerNic.deliveries). */
  _deliver(): void {
    this.deliverScheduled = false;
    const u = this.userRef;
    if (u === null) return;
    while (this.pending !== 0) {
      let ev = this.pending;
      this.pending = 0;
      if (this.detached && ev & EV_CLOSED) {
        // The connection is moving: its close here is not the socket's to hear. A connection that
        // moved is closed by its new owner in due time, and one closed here instead of moving is
        // reattached and hears it then. Told now, a socket that is still moving would take the
        // connection for closed and never read what the new owner holds for it.
        this.pending = EV_CLOSED;
        ev &= ~EV_CLOSED;
        if (ev === 0) break;
      }
      if (ev & EV_READABLE) u.onReadable();
      if (ev & EV_REMOTE_END) u.onRemoteEnd();
      if (ev & EV_WRITABLE) u.onWritable();
      if (ev & EV_CLOSED) u.onClosed(this.pendingError);
    }
  }
}
