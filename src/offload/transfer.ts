import { ChargeMeter, type WorkMeter } from '../core/clock.ts';
import { ConnectionError } from '../core/errors.ts';
import { networkInput, TurnQueue } from '../core/turn-queue.ts';
import { decodeReleasedBy } from '../nic/host-nic.ts';
import {
  type ConnKey,
  connKeyId,
  type Handed,
  type InitiateOptions,
  type InitiateResult,
  isTreeTransfer,
  keyOfState,
  type Nic,
  resultSize,
  sameConnKey,
  type Transfer,
} from '../nic/nic.ts';
import type { NicEngine, PathSlot } from '../nic/nic-engine.ts';
import { TupleMap } from '../nic/tuple-map.ts';
import { TcpSocket } from '../socket/tcp-socket.ts';
import { TWO_32 } from '../stack/address-table.ts';
import type { Stack } from '../stack/stack.ts';
import type { Forward, TableEntry } from '../stack/tcp/conn-table.ts';
import type { TcpConnection } from '../stack/tcp/tcp-connection.ts';
import type { AdoptOptions } from '../stack/tcp/tcp-handover.ts';
import type { ConnectionHandle, TcpUser } from '../stack/tcp/tcp-types.ts';
import { buildTrees, flattenTrees, type OffloadTree } from '../state/offload-tree.ts';
import type { PathState } from '../state/path-state.ts';
import { encodeBatch, releaseTreeAddresses } from '../state/state-codec.ts';
import { type TcpState, TcpStateId } from '../state/tcp-state.ts';
import { isOffloadable, validateTcpState } from '../state/validate.ts';
import type { EntryTable } from './entry-table.ts';
import type { MovePhases } from './move-phases.ts';
import { rebuild } from './rebuild.ts';
import { withdraw } from './withdraw.ts';

/*
 * The transfer protocol (design section 4): freeze → release at the source → install at the
 * destination → settle (forward held segments, re-point sockets, unfreeze) → roll back whatever
 * the destination refused. Between owners on the host's thread (the host, LocalNics) the trees
 * travel as objects; to or from another thread as the codec's bytes, validated on decode.
 */

/** Who runs a connection: the host stack or a NIC. */
export type Owner = 'host' | Nic;

export interface TransferRefusal {
  key: ConnKey;
  /** 'ineligible': its state stays in the host (SYN, TIME_WAIT, closing, not yet accepted). */
  status: 'failure' | 'no-resources' | 'closed' | 'ineligible';
  reason: string;
}

/** How a transfer behaves (failover uses both). */
export interface TransferOptions {
  /** Prod every connection installed at the destination so its peer resumes at once. */
  prod?: boolean;
  /** What the destination refuses goes straight to the host, not back to the source (a failed NIC). */
  rollbackToHost?: boolean;
  /** A failover's recorder: the transfer marks each step it passes (move-phases.ts). */
  phases?: MovePhases;
}

export interface TransferReport {
  /** Connections that now run at the destination. */
  moved: ConnKey[];
  /** Connections that stayed with (or went back to) their source, and why. */
  refused: TransferRefusal[];
}

/** A NIC whose connections run in the host's thread (`Nic.engine`): one a live hand-over takes. */
type ThreadNic = Nic & { readonly engine: NicEngine };

/** An end of a live hand-over: the host, or a NIC of its thread. */
type LiveOwner = 'host' | ThreadNic;

/** A live hand-over's attach options, made once: the batch counts its attaches itself. */
const ADOPT: AdoptOptions = Object.freeze({ batched: true });
const ADOPT_PRODDED: AdoptOptions = Object.freeze({ batched: true, prod: true });

/** A live hand-over's report, and the keys it left for the general protocol. */
interface LiveReport {
  report: TransferReport;
  rest: ConnKey[];
}

/** An offloaded connection as the host knows it. */
export interface Entry {
  key: ConnKey;
  nic: Nic;
  user: TcpUser | null;
  /**
   * The connection object, when a NIC of this thread runs it (handed over live): a hint that
   * spares a move or an upload the lookup of its key at the source, checked before it is used.
   */
  conn: TcpConnection | null;
  /**
   * The handle the NIC gave when the connection was last settled there (a NIC on another
   * thread): a hint that spares the NIC's search by key at the next move (`Nic.handTo`), checked
   * there before it is used. Null (or absent) when there is none.
   */
  handle?: ConnectionHandle | null;
  /**
   * The item the connection's last transfer from a NIC froze it into, taken up again by the next
   * (`TransferProtocol.freeze`): one object per offloaded connection, not one per connection and
   * move that lived as long as the move's awaits, long enough to be promoted and collected again.
   */
  item?: Item | null;
  /**
   * A socket a settle left frozen: its destination died before the connection could be attached
   * there, and the handle it had at the source is let go. It waits, calls held, for the recover
   * that rebuilds the connection from the hard state the dead NIC left; that transfer's freeze
   * takes it over (`takeSocket`). Or the connection runs at its NIC (`handle`) and the socket
   * waits for its turn to resume there (a paced settle, `TransferProtocol.pacedResumes`); a freeze
   * before that turn takes it over the same way. Null (or absent) when there is none.
   */
  frozen?: TcpSocket | null;
  /**
   * The last batch of a verb that named it (`OffloadManager.batchNo`): a batch that names it
   * again is refused before anything changes, found with no set per batch.
   */
  named?: number;
}

/** One connection in a transfer. */
export interface Item {
  key: ConnKey;
  user: TcpUser | null;
  socket: TcpSocket | null;
  /** The host's connection, when the host is the source. */
  conn?: TcpConnection;
  /**
   * The host table's entry of its tuple, found once when the transfer began (EntryTable.at): its
   * tag and placeholder are read from it at the freeze and the settle, once checked still there.
   */
  at?: TableEntry;
  /** Its entry's `handle` as the freeze found it (a NIC source). */
  handle?: ConnectionHandle | null;
  /**
   * Held by a transfer that has not ended (an entry's pooled item: see `Entry.item`). A freeze that
   * finds its connection's item held (a recovery keeps its items) makes another.
   */
  held?: boolean;
}

/** The entry's item (`Entry.item`) taken up for a transfer with every field set anew, or a new one. */
function itemOf(
  e: Entry | undefined,
  key: ConnKey,
  user: TcpUser | null,
  socket: TcpSocket | null,
  at: TableEntry | undefined,
  handle: ConnectionHandle | null,
): Item {
  const it = e?.item;
  if (it == null || it.held === true) {
    const made: Item = { key, user, socket, conn: undefined, at, handle, held: true };
    if (e !== undefined) e.item = made;
    return made;
  }
  it.key = key;
  it.user = user;
  it.socket = socket;
  it.conn = undefined;
  it.at = at;
  it.handle = handle;
  it.held = true;
  return it;
}

/** `released[i]` is `items[i]`'s connection, for every i (the lists being as long). */
function inOrder<T>(released: readonly T[], items: readonly Item[], keyOf: (r: T) => ConnKey): boolean {
  for (let i = 0; i < released.length; i++)
    if (!sameConnKey(keyOf(released[i]!), items[i]!.key)) return false;
  return true;
}

const itself = (k: ConnKey): ConnKey => k;

/**
 * The keys of the items `parts` moved, after what `report.moved` holds: one list made at its size
 * (a part at a time, pushed, left its outgrown copies behind: 290 KiB a move of 10,000).
 */
function addMoved(report: TransferReport, parts: readonly Item[][]): void {
  let n = 0;
  for (const p of parts) n += p.length;
  if (n === 0) return;
  const had = report.moved;
  const out = new Array<ConnKey>(had.length + n);
  let i = 0;
  for (const k of had) out[i++] = k;
  for (const p of parts) for (const it of p) out[i++] = it.key;
  report.moved = out;
}

/** What a part's reused list of keys holds between parts: no connection. */
const NO_KEY: ConnKey = Object.freeze({ localIp: 0, localPort: 0, remoteIp: 0, remotePort: 0 });

/** `all` but `some`, in order. */
function without(all: readonly Item[], some: readonly Item[]): Item[] {
  const out = new Set(some);
  return all.filter((it) => !out.has(it));
}

/** Which item each state in a transfer belongs to, by identity: no key strings per step. */
export type ItemsByState = Map<TcpState, Item>;

export interface Refused {
  state: TcpState;
  /** 'closed': aborted at the destination, closed with them in hand; nothing takes them back. */
  status: 'failure' | 'no-resources' | 'closed';
  reason: string;
}

export { keyOfState };

/** `connKeyId(keyOfState(s))` without the key object. */
function stateKeyId(s: TcpState): string {
  const c = s.const;
  // IPv6 handles (above 2^32) stay whole, as in connKeyId.
  const l = c.localIp >= 0x1_0000_0000 ? c.localIp : c.localIp >>> 0;
  const r = c.remoteIp >= 0x1_0000_0000 ? c.remoteIp : c.remoteIp >>> 0;
  return `${l}:${c.localPort}>${r}:${c.remotePort}`;
}

export function mergeReports(reports: readonly TransferReport[], refused: TransferRefusal[]): TransferReport {
  // One transfer (a move, or a batch for one NIC): its report, with what was refused before it.
  if (reports.length === 1) {
    const r = reports[0]!;
    if (refused.length === 0) return r;
    for (const f of r.refused) refused.push(f);
    return { moved: r.moved, refused };
  }
  const out: TransferReport = { moved: [], refused };
  for (const r of reports) {
    for (const k of r.moved) out.moved.push(k);
    for (const f of r.refused) out.refused.push(f);
  }
  return out;
}

/**
 * Connections per part of a batch to or from a NIC on another thread: small enough that the two
 * ends overlap (the source releasing one part while the destination installs the one before) and
 * that no request keeps a worker from its heartbeat for long, large enough that a part's messages
 * cost little beside its work.
 */
const HAND_PART = 256;

/**
 * Sockets a paced settle resumes in one turn of the loop, and the turn's length after which the
 * rest wait for the next (as a WorkerNic's deliveries). A resume is mostly the application's
 * write that waited through the move, copied into the new owner's send ring: a crash's rebuild
 * resumed 500 sockets in one turn, a block of 60-80 ms of serve's main thread at load 6 (s39h2).
 */
const RESUMES_PER_TURN = 32;
const RESUME_SLICE_MS = 8;
/**
 * What a paced resume gives of the writes its socket held (TcpSocket._completeMove's
 * `firstPart`): four pages, more than a rebuilt connection's first round trips can send (its
 * congestion window starts at one segment and doubles), where filling its ring to the send
 * target (64 KiB or more) at once cost the resume's turn a page fault a page at load.
 */
export const REBUILT_FIRST_PART = 16 * 1024;

/** Runs transfers for an OffloadManager, one at a time, over the manager's table of offloaded connections. */
export class TransferProtocol {
  /** Options of the transfer running now. */
  opts: TransferOptions = {};
  /**
   * Advance a clock that only moves when told (the simulator's) by the real time each step of a
   * transfer takes, so the stall a move causes is one a peer lives through, not zero.
   */
  chargeWallTime = false;
  /**
   * A NIC its owner (a team) has marked failed: no transfer installs or settles connections there,
   * even one that began before the failure. Checked before the initiate and again at the settle,
   * after the last await, so a failover that lists the NIC's connections once finds them all.
   */
  refuses: (nic: Nic) => boolean = () => false;
  /** The real-time source the meter reads (tests inject one). */
  workNow: () => number = () => performance.now();
  /**
   * Between owners of this thread (the host, LocalNics on its clock), hand the live connections
   * over in one turn (`handover`) instead of releasing states and building new connections from
   * them. Off: every transfer takes the general protocol (tests of its steps turn it off).
   */
  liveHandover = true;
  /** The forwarder of the host's placeholders to each NIC: one per NIC, not one per connection. */
  private readonly injectors = new Map<Nic, Forward>();
  /**
   * While a settle re-points its placeholders at a NIC: the segments they held, gathered for one
   * inject after its loop (one message to a worker per part, not one per connection that held any).
   */
  private readonly gathering = new Map<Nic, Uint8Array[]>();
  /** A hand-over part's keys and hints (`handPart`), reused: empty between parts. */
  private partKeys: ConnKey[] = [];
  private partHints: (ConnectionHandle | null)[] = [];
  private mark = -1;
  /** Inside `metered`: the meter runs whenever this thread runs transfer code. */
  private metering = false;
  /** Runs inside `metered` now, and the clock's meter before the first of them began. */
  private meteredRuns = 0;
  private meterBefore: WorkMeter | null = null;
  /** Verbs awaited with the meter stopped (several at once when runs go side by side). */
  private waits = 0;
  /**
   * Entries whose socket a paced settle left frozen (`Entry.frozen`) on the handle the connection
   * runs behind at its NIC, resumed a bounded number per turn, network input first.
   */
  readonly pacedResumes: TurnQueue<Entry>;

  constructor(
    readonly stack: Stack,
    readonly entries: EntryTable,
  ) {
    this.pacedResumes = new TurnQueue<Entry>(
      stack.clock,
      this.resumeTurn,
      RESUMES_PER_TURN,
      RESUME_SLICE_MS,
      {
        ahead: networkInput.run,
      },
    );
  }

  /**
   * A paced settle's socket, its turn: it resumes on the handle its connection runs behind now,
   * unless a transfer's freeze took it over meanwhile (which resumes it where that transfer ends)
   * or the connection's NIC died before it was attached (no handle: the recover takes it over).
   */
  private readonly resumeTurn = (e: Entry): void => {
    const socket = e.frozen;
    const handle = e.handle;
    if (socket == null || handle == null) return;
    e.frozen = null;
    // The simulator's clock still advances by what each resume costs (chargeWallTime), as it did
    // when they all ran inside the settle: a failover's resumeMs is what a peer lives through.
    // Its writes held through the rebuild go in a first part, the rest as the acks ask.
    if (this.chargeWallTime) this.charged(() => socket._completeMove(handle, null, REBUILT_FIRST_PART));
    else socket._completeMove(handle, null, REBUILT_FIRST_PART);
  };

  /**
   * Move `keys` from `src` to `dst`. Every connection ends up running exactly once: at `dst`, or
   * back at `src`, or (if even that fails) in the host. `keys` name each connection once (the
   * manager's verbs refuse a batch that does not): a second naming froze the connection into a
   * second item, released a host connection twice, or took the first's place in the pairing by
   * tuple, and left its socket moving for good. `conns`, if given: the connection the
   * caller found under each key (or null), which a hand-over in this thread takes instead of
   * looking the key up again, once it has checked that it still runs at `src` under that key.
   */
  async run(
    keys: readonly ConnKey[],
    src: Owner,
    dst: Owner,
    conns?: readonly (TcpConnection | null)[],
    /** Each key's host table entry, as `EntryTable.at` found it in this turn (a NIC source). */
    ats?: readonly (TableEntry | undefined)[],
  ): Promise<TransferReport> {
    try {
      return await this.runOne(keys, src, dst, conns, ats);
    } finally {
      // Runs side by side (an offload or upload spread over NICs): one that ends, or throws,
      // while another still awaits its NIC leaves this thread idle until that answer. The
      // meter stops here, or it charges the other NIC's work (and the simulator's meanwhile).
      if (this.waits > 0) this.pause();
    }
  }

  private async runOne(
    keys: readonly ConnKey[],
    src: Owner,
    dst: Owner,
    conns: readonly (TcpConnection | null)[] | undefined,
    ats: readonly (TableEntry | undefined)[] | undefined,
  ): Promise<TransferReport> {
    let report: TransferReport = { moved: [], refused: [] };
    if (keys.length === 0) return report;
    let left = keys;
    if (this.liveHandover && this.sameThread(src) && this.sameThread(dst)) {
      const r = await this.handover(keys, src, dst, conns);
      if (r !== null) {
        if (r.rest.length === 0) return r.report;
        // What the hand-over left (a connection a NIC would not hand live: TIME_WAIT) takes the
        // general protocol, the rest of the batch having moved.
        report = r.report;
        left = r.rest;
      }
    }
    // One transfer may run several of these side by side (an offload spread over NICs): this one
    // may start while another waits, with the meter stopped.
    this.resume();
    const frozen = this.freeze(left, src, left === keys ? ats : undefined, left === keys ? conns : undefined);
    this.opts.phases?.mark('frozen');
    try {
      await this.runFrozen(frozen, src, dst, report);
    } finally {
      // Ended: each entry's item is free for the connection's next transfer.
      for (const it of frozen) it.held = false;
    }
    return report;
  }

  private async runFrozen(frozen: Item[], src: Owner, dst: Owner, report: TransferReport): Promise<void> {
    let items = frozen;
    // A pair of NICs that can hand connections straight to each other (two WorkerNics: worker to
    // worker) does; any other pair, or a part of a batch that one cannot hand, takes the general way.
    if (src !== 'host' && dst !== 'host' && src !== dst && !this.refuses(dst) && src.handTo !== undefined) {
      const settled: Item[][] = [];
      items = await this.inParts(items, report, async (part) => {
        const left = await this.handPart(part, src, dst, report, settled);
        // A part the source cannot hand goes the general way at once, beside the parts handed:
        // after them all, its two round trips (a terminate, then an initiate) came on top of
        // theirs, 0.5-2 s of a failover of 1,250 at load 30-40 (the failover's phases).
        if (left !== null && left.length > 0) await this.general(left, src, dst, report);
        return null;
      });
      addMoved(report, settled);
      if (items.length === 0) return;
    }
    // An end on another thread takes a large batch in parts too: one request of 10,000 kept a
    // worker silent past its heartbeat deadline, and it was declared dead with the batch in hand.
    if (!this.inThread(src) || !this.inThread(dst))
      await this.inParts(items, report, async (part) => {
        await this.general(part, src, dst, report);
        return null;
      });
    else await this.general(items, src, dst, report);
  }

  /** The host, or a NIC whose verbs run on this thread (a large batch costs no other thread's silence). */
  private inThread(o: Owner): boolean {
    return o === 'host' || o.inProcess;
  }

  /**
   * The general protocol for `items`, frozen: release at the source, install at the destination,
   * settle, roll back what was refused. Throws only when the source released nothing (a terminate
   * that failed outright), with `items` resumed there.
   */
  private async general(items: Item[], src: Owner, dst: Owner, report: TransferReport): Promise<void> {
    const byState: ItemsByState = new Map();
    // Release at the source.
    let released: Transfer;
    try {
      released =
        src === 'host'
          ? this.releaseFromHost(items, report, dst, byState)
          : await this.wait(
              src.terminate(
                items.map((i) => i.key),
                // In process, objects whatever the destination: a worker NIC's initiate encodes
                // them without their data (their rings are attached by reference there).
                { trees: src.inProcess },
              ),
            );
    } catch (e) {
      if (src !== 'host' && src.death !== null) {
        // The source died with the terminate in hand (it may have released them, or run them on
        // meanwhile): what it wrote last is in the memory the host holds. Resumed there, they
        // would wait for someone to notice; rebuilt at the destination, the transfer is done.
        await rebuild(this, items, src, dst, report);
        return;
      }
      // Nothing left the source (host release does not throw once begun; a terminate that failed
      // outright moved nothing): resume everything where it was.
      for (const it of items) this.resumeAt(it, src);
      throw e;
    }
    this.opts.phases?.mark('handed');
    let states: TcpState[];
    // The host's own states, validated as it released them (whatever form they travel in).
    if (src === 'host') states = [...byState.keys()];
    else if (isTreeTransfer(released)) states = flattenTrees(released.trees);
    else {
      try {
        // A worker NIC hands back states without their data: it attaches the shared rings. IPv6
        // addresses are interned in the host's table; the host's placeholders of these
        // connections hold their handles already, so the decoder's own references go back at once.
        const trees = decodeReleasedBy(src, released, this.stack.clock.now(), this.stack.addrs);
        releaseTreeAddresses(trees);
        states = flattenTrees(trees);
        // Decoded objects belong to no one yet: a destination that takes objects (in process, or
        // writing its records from them) takes them as they are. Bytes of a source by records name
        // only what its records could not carry: never pass them on.
        if (dst !== 'host' && (src.useRecords || dst.useRecords || dst.inProcess))
          released = { kind: 'trees', trees };
      } catch {
        // The NIC handed back something we cannot read: rebuild the connections from the hard
        // state it keeps where the host can see it (those without any are lost there).
        this.stack.counters.inc('offload.terminate.invalid');
        await rebuild(this, items, src, dst, report);
        return;
      }
    }
    if (src !== 'host') this.pairReleased(states, items, byState, report);
    if (states.length === 0) return;
    // Install at the destination.
    const { ok, failed, died } = await this.install(dst, states, released);
    for (const s of await this.settle(ok, byState, src, dst, report)) report.moved.push(byState.get(s)!.key);
    if (failed.length > 0) await this.rollback(failed, byState, src, report);
    if (died !== undefined) await this.rebuildDied(died, byState, src, dst, report);
  }

  /**
   * Run `each` over `items` in parts of HAND_PART, every part in flight at once: the source
   * releases one part while the destination installs the one before, so a large batch costs
   * about the slower end's work, not the sum of both, and no request to a worker carries more
   * than a part. `each` returns the items of its part it did not take (the general way takes
   * them), or throws with its part resumed at the source. A part that threw is reported refused,
   * item by item, beside what the others moved; only when every part threw does the transfer
   * throw, as a batch in one piece would (nothing moved).
   */
  private async inParts(
    items: Item[],
    report: TransferReport,
    each: (part: Item[]) => Promise<Item[] | null>,
  ): Promise<Item[]> {
    const parts: Item[][] = [];
    const runs: Promise<Item[] | null>[] = [];
    for (let i = 0; i < items.length; i += HAND_PART) {
      const part = items.length <= HAND_PART ? items : items.slice(i, i + HAND_PART);
      parts.push(part);
      runs.push(each(part));
    }
    if (this.opts.phases !== undefined) this.opts.phases.parts += parts.length;
    const ends = await Promise.allSettled(runs);
    const left: Item[] = [];
    let threw = 0;
    for (const e of ends) {
      if (e.status === 'rejected') threw++;
      else if (e.value !== null) for (const it of e.value) left.push(it);
    }
    if (threw === 0) return left;
    if (threw === ends.length) throw (ends[0] as PromiseRejectedResult).reason;
    ends.forEach((e, i) => {
      if (e.status !== 'rejected') return;
      const reason = e.reason instanceof Error ? e.reason.message : String(e.reason);
      for (const it of parts[i]!) report.refused.push({ key: it.key, status: 'failure', reason });
    });
    return left;
  }

  /**
   * One part of a move handed from NIC to NIC: the items the source could not hand (the general
   * way takes them), or none once handed.
   */
  private async handPart(
    items: Item[],
    src: Nic,
    dst: Nic,
    report: TransferReport,
    settled: Item[][],
  ): Promise<Item[] | null> {
    // The NIC reads both lists before handTo returns (Nic.handTo): one pair serves every part of
    // every move, made again only when a part's size differs from the last one's.
    if (this.partKeys.length !== items.length) {
      this.partKeys = new Array<ConnKey>(items.length);
      this.partHints = new Array<ConnectionHandle | null>(items.length);
    }
    const keys = this.partKeys;
    const handles = this.partHints;
    for (let i = 0; i < items.length; i++) {
      keys[i] = items[i]!.key;
      handles[i] = items[i]!.handle ?? null;
    }
    let hand: Promise<Handed> | null | undefined;
    try {
      hand = src.handTo?.(dst, keys, { prod: this.opts.prod === true }, handles);
    } finally {
      // Kept until the next part, they would hold its connections' keys and handles after they closed.
      keys.fill(NO_KEY);
      handles.fill(null);
    }
    if (hand == null) return items;
    await this.moveHanded(items, src, dst, hand, report, settled);
    return null;
  }

  /**
   * A move the source handed straight to the destination (`Nic.handTo`): the host hears once,
   * reads, writes and validates no state (the destination checks what crossed, as any initiate).
   * Only what the destination refuses is read here (decoded and validated, handed back to the
   * host) and rolled back as in the general protocol; what cannot be read is rebuilt from hard
   * state, and a destination that died with the batch leaves it for a rebuild from what it ran.
   */
  private async moveHanded(
    items: Item[],
    src: Nic,
    dst: Nic,
    hand: Promise<Handed>,
    report: TransferReport,
    settledParts: Item[][],
  ): Promise<void> {
    let handed: Handed;
    try {
      handed = await this.wait(hand);
      // The source's hand carries the target's answer: in hand and installed at once.
      this.opts.phases?.mark('handed');
    } catch (e) {
      // Nothing was handed (or the source died, and the destination installed none of it).
      for (const it of items) this.resumeAt(it, src);
      throw e;
    }
    const paired = this.pairReleasedKeys(handed.released, items, report, handed.sourceDied ? src : null);
    if (paired.length === 0) return;
    const res = handed.result;
    if (res === null) {
      await this.rebuildDiedItems(paired, src, dst, report);
      return;
    }
    if (handed.aborted !== undefined) {
      // Resumed, a connection whose peer the destination reset would hear of it only at its next
      // segment, or never when idle: it ends here, as its peer's did (or will, at the next segment).
      for (const it of paired) {
        report.refused.push({ key: it.key, status: 'closed', reason: handed.aborted });
        this.unlist(it);
        const err = new ConnectionError('ECONNABORTED', `connection lost in transfer: ${handed.aborted}`);
        // Not resumed at the source: its handle let go of the connection when it handed it on.
        this.loseUser(it, err);
      }
      this.stack.counters.inc('offload.handed.aborted', paired.length);
      // The source still swallows their segments: let go, so that the peer's next one meets a RST.
      if (src.death === null) {
        try {
          await this.wait(src.dropFrozen(paired.map((it) => it.key)));
        } catch {
          // The source died meanwhile: its 4-tuples went with it.
        }
      }
      return;
    }
    let ok = paired;
    const failed = new TupleMap<Item>();
    const reasons = new TupleMap<{ status: string; reason?: string }>();
    if (res.status !== 'success' || resultSize(res) !== paired.length) {
      for (const c of res.conns) reasons.set(c.key, c);
      ok = [];
      for (const it of paired) {
        if (reasons.get(it.key)?.status === 'success') ok.push(it);
        else failed.set(it.key, it);
      }
    }
    // Installed by the source's hand, not asked to hold its input (holdInput): no keys to name.
    const unsettled = ok.length > 0 ? await this.settleAtNic(ok, src, dst, report, false, false) : false;
    if (unsettled !== false) {
      const settled = unsettled === null ? ok : without(ok, unsettled);
      settledParts.push(settled);
      this.stack.counters.inc('offload.handed', settled.length);
    }
    if (failed.size === 0) return;
    let trees: OffloadTree[];
    try {
      const keys = [...failed.values()].map((it) => it.key);
      trees = handed.readRefused(keys, this.stack.clock.now(), this.stack.addrs);
      releaseTreeAddresses(trees);
    } catch {
      // Left for the source's salvage (Handed.readRefused): rebuilt in the host from the hard state
      // it wrote as it let go of them. They did not move to `dst`: refused, the host runs them.
      this.stack.counters.inc('offload.terminate.invalid');
      const here: TransferReport = { moved: [], refused: report.refused };
      await rebuild(this, [...failed.values()], src, 'host', here);
      for (const key of here.moved) {
        const r = reasons.get(key);
        const why = `${r?.reason ?? res.reason ?? 'refused'}; unreadable from ${src.id}, rebuilt in the host`;
        report.refused.push({
          key,
          status: r?.status === 'no-resources' ? 'no-resources' : 'failure',
          reason: why,
        });
      }
      return;
    }
    const byState: ItemsByState = new Map();
    const refused: Refused[] = [];
    for (const st of flattenTrees(trees)) {
      const it = failed.get(st.const);
      if (it === undefined) continue;
      byState.set(st, it);
      const r = reasons.get(it.key);
      refused.push({
        state: st,
        status: r?.status === 'no-resources' ? 'no-resources' : 'failure',
        reason: r?.reason ?? res.reason ?? 'refused',
      });
    }
    if (refused.length > 0) await this.rollback(refused, byState, src, report);
  }

  /**
   * The items of the keys a source released, in their order. The items without one closed at the
   * source; or, when it died (`deadSource`), stay with it for a rebuild from what it left.
   */
  private pairReleasedKeys(
    released: readonly ConnKey[] | null,
    items: readonly Item[],
    report: TransferReport,
    deadSource: Nic | null,
  ): Item[] {
    // Released in the order asked, every one (the usual part): the part's own list, not a copy.
    if (released === null || (released.length === items.length && inOrder(released, items, itself)))
      return items as Item[];
    const out: Item[] = [];
    this.pair(released, itself, items, report, (_, it) => out.push(it), deadSource);
    return out;
  }

  /**
   * Pair the states a NIC handed back with the items asked for. An item without one closed at the
   * NIC meanwhile (or its TIME_WAIT ended there): nothing to move.
   */
  pairReleased(
    states: readonly TcpState[],
    items: readonly Item[],
    byState: ItemsByState,
    report: TransferReport,
  ): void {
    this.pair(
      states,
      (s) => s.const,
      items,
      report,
      (s, it) => byState.set(s, it),
    );
  }

  /**
   * Calls `each` with what a NIC released (states, or handles of records), in its order, and the
   * item asked for under the same connection. The items left without one closed at the NIC
   * meanwhile, and are forgotten and reported so; or, when the NIC died (`deadSource`), stay
   * with it for a rebuild from what it left.
   */
  private pair<T>(
    released: readonly T[],
    keyOf: (r: T) => ConnKey,
    items: readonly Item[],
    report: TransferReport,
    each: (r: T, it: Item) => void,
    deadSource: Nic | null = null,
  ): void {
    // A NIC hands back in the order asked (one path, the usual batch): paired in place, with no
    // table per batch.
    if (released.length === items.length && inOrder(released, items, keyOf)) {
      for (let i = 0; i < released.length; i++) each(released[i]!, items[i]!);
      return;
    }
    const left = new TupleMap<Item>();
    for (const it of items) left.set(it.key, it);
    for (const r of released) {
      const key = keyOf(r);
      const it = left.get(key);
      if (it === undefined) continue;
      each(r, it);
      left.delete(key);
    }
    for (const it of left.values()) {
      if (deadSource !== null) {
        this.resumeAt(it, deadSource);
        report.refused.push({
          key: it.key,
          status: 'failure',
          reason: `${deadSource.id} died during the move`,
        });
        continue;
      }
      // Closed at the source: its socket carries on with the handle it has, which still holds
      // what was left to read and the close. But a connection the source released and then
      // dropped (its state failed validation there: NDIS has the target abort it) is in neither
      // list: resumed on the handle the source let go, its socket heard nothing, ever.
      if (this.userHandle(it)?.letGo === true)
        this.lost(it, 'let go at the source without being handed back (its state refused there)', report);
      else {
        this.forget(it);
        report.refused.push({
          key: it.key,
          status: 'closed',
          reason: 'closed at the source during the move',
        });
      }
    }
  }

  /** The handle `it`'s user runs on now: its socket's, or the one its entry had at the freeze. */
  private userHandle(it: Item): ConnectionHandle | null {
    return it.socket !== null ? it.socket.connection : (it.handle ?? it.conn ?? null);
  }

  /**
   * `dst` died during the initiate of `died`: rebuild them in the host from the memory it ran
   * them on. A source NIC still holds their 4-tuples frozen, swallowing what arrives there: take
   * that and let go of them, or they hang.
   */
  async rebuildDied(
    died: TcpState[],
    byState: ItemsByState,
    src: Owner,
    dst: Owner,
    report: TransferReport,
  ): Promise<void> {
    if (dst === 'host' || died.length === 0) return;
    await this.rebuildDiedItems(
      died.map((s) => byState.get(s)!),
      src,
      dst,
      report,
    );
  }

  private async rebuildDiedItems(items: Item[], src: Owner, dst: Nic, report: TransferReport): Promise<void> {
    this.stack.counters.inc('offload.initiate.died', items.length);
    let held: Uint8Array[] = [];
    if (src !== 'host' && src !== dst && src.death === null) {
      const keys = items.map((it) => it.key);
      try {
        held = await this.takeHeld(src, keys);
      } catch {
        // The source died too: the peer resends what it held.
      }
    }
    // Rebuilt in the host, they did not move to `dst`: refused, and the host runs them (the report
    // says where every connection is, and a team counts them as waiting in the host).
    const here: TransferReport = { moved: [], refused: report.refused };
    await rebuild(this, items, dst, 'host', here);
    for (const k of here.moved)
      report.refused.push({
        key: k,
        status: 'failure',
        reason: `${dst.id} died during the move; rebuilt in the host`,
      });
    if (held.length > 0) this.stack.counters.inc('offload.forwarded', held.length);
    for (const p of held) this.stack.tcp.inputPacket(p);
  }

  /**
   * Run `fn` (a transfer, or a rebuild) with the real-time meter on (see chargeWallTime). Only
   * this thread's own work is charged: while a verb is awaited the meter stops, since the
   * simulator runs everything else (peers, switch) meanwhile; a NIC in this thread charges its
   * own verbs (LocalNic.chargeWork).
   */
  async metered<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.chargeWallTime) return fn();
    const clock = this.stack.clock;
    // The policy's offloads run side by side (OffloadManager.serial): one meter for them all, on
    // from the first one's start to the last one's end, whichever that is.
    if (this.meteredRuns++ === 0) {
      this.meterBefore = clock.meter ?? null;
      clock.meter = this.offSwitch;
      this.metering = true;
      this.mark = this.workNow();
    } else this.resume();
    try {
      return await fn();
    } finally {
      if (--this.meteredRuns === 0) {
        this.pause();
        this.metering = false;
        this.offSwitchPaused = false;
        clock.meter = this.meterBefore;
        this.meterBefore = null;
      }
    }
  }

  /** Run `fn` (work of this thread that a move costs, outside a transfer) charged as a transfer is. */
  charged<T>(fn: () => T): T {
    // Called from transfer code, the meter is running already.
    if (!this.chargeWallTime || this.mark >= 0) return fn();
    return new ChargeMeter(this.stack.clock, this.workNow).run(fn);
  }

  /**
   * The meter as simulated hardware sees it (Clock.meter): stopped while the switch works, and
   * started again only if it ran then (between turns, while a verb is awaited, it stays stopped).
   */
  private offSwitchPaused = false;
  private readonly offSwitch: WorkMeter = {
    pause: () => {
      if (this.mark < 0) return;
      this.pause();
      this.offSwitchPaused = true;
    },
    resume: () => {
      if (!this.offSwitchPaused) return;
      this.offSwitchPaused = false;
      this.resume();
    },
  };

  /** Await `p` with the meter stopped. */
  async wait<T>(p: Promise<T>): Promise<T> {
    if (!this.metering) return p;
    this.pause();
    this.waits++;
    try {
      return await p;
    } finally {
      this.waits--;
      this.resume();
    }
  }

  private resume(): void {
    if (this.metering && this.mark < 0) this.mark = this.workNow();
  }

  private pause(): void {
    if (this.mark < 0) return;
    this.stack.clock.elapse?.(this.workNow() - this.mark);
    this.mark = -1;
  }

  /** What `src` held for `keys` meanwhile; it lets go of them (one request where it can: `takeAndDrop`). */
  private async takeHeld(src: Nic, keys: ConnKey[]): Promise<Uint8Array[]> {
    try {
      if (src.takeAndDrop !== undefined) return await this.wait(src.takeAndDrop(keys));
      const held = await this.wait(src.takeQueued(keys));
      await this.wait(src.dropFrozen(keys));
      return held;
    } catch (e) {
      // Dead meanwhile (or taken as dead for an answer it could not give): what it held is gone
      // with it, and the peer resends it; the connections it released run on where they went.
      if (src.death !== null) return [];
      throw e;
    }
  }

  /**
   * The socket a freeze of `e`'s connection takes over, frozen: the one a settle left frozen for it
   * (`Entry.frozen`), or its user when that is a socket no other transfer moves now.
   */
  takeSocket(e: Entry | undefined, user: TcpUser | null): TcpSocket | null {
    const left = e?.frozen;
    if (left != null) {
      e!.frozen = null;
      return left;
    }
    const socket = user instanceof TcpSocket && !user.moving ? user : null;
    socket?._beginMove();
    return socket;
  }

  /** Application calls wait in the sockets; the host holds segments for the 4-tuples. */
  freeze(
    keys: readonly ConnKey[],
    src: Owner,
    ats?: readonly (TableEntry | undefined)[],
    /** From the host: each key's connection as the caller found it in this turn (an offload's). */
    conns?: readonly (TcpConnection | null)[],
  ): Item[] {
    const tcp = this.stack.tcp;
    // Made at its largest and cut to what froze: grown a push at a time, a list of 10,000 left
    // outgrown copies about twice its size behind it, garbage of every move.
    const items = new Array<Item>(keys.length);
    let n = 0;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      let user: TcpUser | null;
      if (src === 'host') {
        // The connection the offload found (by its own key) is still the one this layer runs
        // under that key while it is linked here (one per tuple): not searched for a second time.
        const found = conns?.[i];
        const conn =
          found != null && found.key === key && found.linked && !found.released && found.engine === tcp
            ? found
            : tcp.lookup(key.localIp, key.localPort, key.remoteIp, key.remotePort);
        if (!conn) continue;
        user = conn.user;
        const socket = user instanceof TcpSocket && !user.moving ? user : null;
        socket?._beginMove();
        // The entry and item of its last offload, kept in its table entry since the upload, taken
        // up; the release leaves its placeholder in that table entry, which the settle carries
        // (`at`): re-pointed there, it takes no search of the table nor a new entry or item.
        const it = itemOf(this.entries.lastOf(conn), key, user, socket, conn.tableEntry ?? undefined, null);
        it.conn = conn;
        items[n++] = it;
        continue;
      }
      // The entry found when the transfer began, in this same turn: its tag and placeholder are
      // read from it, not looked up again (one search of the host's table per connection and move).
      const at = ats?.[i];
      if (at === undefined) {
        const e = this.entries.get(key);
        user = e?.user ?? null;
        tcp.freeze(key.localIp, key.localPort, key.remoteIp, key.remotePort);
        const socket = this.takeSocket(e, user);
        items[n++] = itemOf(e, key, user, socket, undefined, e?.handle ?? null);
        continue;
      }
      const e = this.entries.getIn(at, key);
      user = e?.user ?? null;
      tcp.freezeIn(at, key.localIp, key.localPort, key.remoteIp, key.remotePort);
      const socket = this.takeSocket(e, user);
      items[n++] = itemOf(e, key, user, socket, at, e?.handle ?? null);
    }
    items.length = n;
    return items;
  }

  /**
   * Release host connections; those that do not validate resume in place. Objects for a
   * destination in this thread, the codec's bytes for another.
   */
  private releaseFromHost(
    items: Item[],
    report: TransferReport,
    dst: Owner,
    byState: ItemsByState,
  ): Transfer {
    const tcp = this.stack.tcp;
    const states: TcpState[] = [];
    for (const it of items) {
      const k = it.key;
      const s = tcp.release(it.conn!);
      try {
        validateTcpState(s);
      } catch (e) {
        this.readoptHost(it, s);
        report.refused.push({ key: k, status: 'failure', reason: (e as Error).message });
        continue;
      }
      states.push(s);
      byState.set(s, it);
    }
    return this.transferFor(dst, states);
  }

  /**
   * `states` in the form `dst` takes: objects for the host and a target in process or that
   * encodes them itself (`takesTrees`: a WorkerNic names their rings instead of copying their
   * data), the codec's bytes for any other.
   */
  transferFor(dst: Owner, states: readonly TcpState[]): Transfer {
    const trees = buildTrees(states);
    if (dst === 'host' || dst.inProcess || dst.takesTrees === true) return { kind: 'trees', trees };
    return encodeBatch(trees, this.stack.clock.now(), { skipValidation: true });
  }

  /** Install at `dst`; which states run there now and which were refused. */
  async install(
    dst: Owner,
    states: readonly TcpState[],
    transfer?: Transfer,
    prod: boolean = this.opts.prod === true,
  ): Promise<{ ok: TcpState[]; failed: Refused[]; died?: TcpState[] }> {
    const ok: TcpState[] = [];
    const failed: Refused[] = [];
    if (dst === 'host') {
      for (const s of states) ok.push(s);
      return { ok, failed };
    }
    if (this.refuses(dst)) {
      this.stack.counters.inc('offload.refused.failed-nic', states.length);
      for (const s of states) failed.push({ state: s, status: 'failure', reason: `${dst.id} has failed` });
      return { ok, failed };
    }
    let res: InitiateResult;
    try {
      const t = transfer ?? this.transferFor(dst, states);
      // What reaches `dst` directly from its install on waits there for what the host holds
      // until the settle (settleAtNic), which is older: run first, it would set ts.recent past
      // the held segments, and PAWS would drop them all.
      const opts: InitiateOptions = { states };
      if (prod) opts.prod = true;
      if (dst.settlesHeld === true) opts.holdInput = true;
      res = await this.wait(dst.initiate(t, opts));
      this.opts.phases?.mark('installed');
    } catch (e) {
      // Died with the batch in hand: it may have run the connections meanwhile, so the states
      // sent are stale; what it left (salvage) says how far they went.
      if (dst.death !== null) return { ok, failed, died: [...states] };
      const aborted = e instanceof ConnectionError && e.code === 'ECONNABORTED';
      for (const s of states)
        failed.push({ state: s, status: aborted ? 'closed' : 'failure', reason: String(e) });
      return { ok, failed };
    }
    if (res.status === 'success' && resultSize(res) === states.length) {
      for (const s of states) ok.push(s);
      return { ok, failed };
    }
    const status = new Map<string, { status: string; reason?: string }>();
    for (const c of res.conns) status.set(connKeyId(c.key), c);
    for (const s of states) {
      const r = status.get(stateKeyId(s));
      if (r?.status === 'success') ok.push(s);
      else
        failed.push({
          state: s,
          status: r?.status === 'no-resources' ? 'no-resources' : 'failure',
          reason: r?.reason ?? res.reason ?? 'refused',
        });
    }
    return { ok, failed };
  }

  /**
   * `states` now run at `dst` (for the host: adopt them here). Forward the segments held at the
   * source and in the host, re-point the sockets, unfreeze. Returns the states settled at `dst`:
   * all of them, or none when `dst` was marked failed meanwhile; those are withdrawn into the host
   * (`withdraw.ts`) and, with `report`, listed there as refused.
   */
  async settle(
    states: readonly TcpState[],
    byState: ItemsByState,
    src: Owner,
    dst: Owner,
    report?: TransferReport,
    /** Prod what the host adopts (default: as the transfer's options say). */
    prod: boolean = this.opts.prod === true,
    /**
     * At a NIC, resume the sockets a bounded number per turn after this one (`pacedResumes`),
     * network input first, instead of all in the settle's turn: the connections run at `dst` from
     * the settle on, and each socket's writes held through the move reach them at its turn.
     */
    pace = false,
  ): Promise<readonly TcpState[]> {
    if (states.length === 0) return states;
    const tcp = this.stack.tcp;
    const items = states.map((s) => byState.get(s)!);
    if (dst !== 'host') {
      const unsettled = await this.settleAtNic(items, src, dst, report, pace);
      if (unsettled === false) return [];
      if (unsettled === null) return states;
      const out = new Set(unsettled);
      return states.filter((_, i) => !out.has(items[i]!));
    }
    const keys = items.map((it) => it.key);
    let held: Uint8Array[] = [];
    if (src !== 'host') held = await this.takeHeld(src, keys);
    this.opts.phases?.mark('taken');
    const conns = states.map((s, i) => this.adoptHost(items[i]!, s, prod));
    if (held.length > 0) this.stack.counters.inc('offload.forwarded', held.length);
    for (const p of held) tcp.inputPacket(p);
    for (let i = 0; i < items.length; i++) {
      const it = items[i]!;
      const conn = conns[i]!;
      // Placeholder and entry are read from the table entry the connection runs in (the one they
      // were in while its NIC ran it), not searched for by key; the entry stays there, let go, for
      // the connection's next offload (`EntryTable.lastOf`).
      for (const p of tcp.takeQueuedOf(conn)) tcp.inputPacket(p);
      tcp.dropFrozenOf(conn);
      this.entries.deleteOf(conn);
      it.socket?._completeMove(conn);
    }
    this.opts.phases?.mark('settled');
    return states;
  }

  /**
   * The NIC half of `settle`, by items: null when they all run at `dst` now; false when it was
   * marked failed meanwhile and they were withdrawn into the host; else those `dst` could not
   * attach (see `repoint`), listed refused in `report`, the rest running there. `holding`: `install`
   * asked `dst` to hold its input for this settle (InitiateOptions.holdInput) when it could.
   */
  private async settleAtNic(
    items: readonly Item[],
    src: Owner,
    dst: Nic,
    report?: TransferReport,
    pace = false,
    holding = true,
  ): Promise<Item[] | null | false> {
    const tcp = this.stack.tcp;
    let held: Uint8Array[] = [];
    // A source that died holds nothing any more (the host's placeholders held what came since).
    if (src !== 'host' && src !== dst && src.death === null)
      held = await this.takeHeld(
        src,
        items.map((it) => it.key),
      );
    this.opts.phases?.mark('taken');
    if (this.refuses(dst)) {
      // What the source held waits in the host's placeholders for whoever takes the connections.
      for (const p of held) tcp.inputPacket(p);
      await withdraw(this, items as Item[], dst, report);
      return false;
    }
    let unsettled: Item[] | null = null;
    if (held.length > 0) {
      this.stack.counters.inc('offload.forwarded', held.length);
      dst.inject(held);
    }
    const inject = this.injector(dst);
    const gathered: Uint8Array[] = [];
    const outer = this.gathering.get(dst);
    this.gathering.set(dst, gathered);
    try {
      unsettled = this.repoint(items, dst, inject, report, pace);
    } finally {
      if (outer === undefined) this.gathering.delete(dst);
      else this.gathering.set(dst, outer);
      // Dead meanwhile: back into the placeholders, which hold them for whoever rebuilds.
      if (dst.death !== null) for (const p of gathered) tcp.inputPacket(p);
      else if (holding && dst.settlesHeld === true) {
        // Every segment the host held is on its way now: what `dst`'s link brought since the
        // install (InitiateOptions.holdInput) runs behind them.
        dst.inject(
          gathered,
          items.map((it) => it.key),
        );
      } else if (gathered.length > 0) dst.inject(gathered);
      this.opts.phases?.mark('settled');
    }
    return unsettled;
  }

  /**
   * The settle's loop at a NIC: placeholders forward there, entries and sockets point there.
   * Returns the items `dst` did not attach (null when it attached all): see `unattached`.
   */
  private repoint(
    items: readonly Item[],
    dst: Nic,
    inject: Forward,
    report: TransferReport | undefined,
    pace: boolean,
  ): Item[] | null {
    const tcp = this.stack.tcp;
    let unattached: Item[] | null = null;
    let paced = 0;
    for (const it of items) {
      const k = it.key;
      // The entry carried from the freeze, checked (the awaits since may have let it go).
      const at = it.at;
      if (at === undefined) tcp.forwardTo(k.localIp, k.localPort, k.remoteIp, k.remotePort, inject);
      else tcp.forwardIn(at, k.localIp, k.localPort, k.remoteIp, k.remotePort, inject);
      const handle = dst.attach(k, it.user);
      if (handle === null && dst.death === null) {
        this.endedAt(it, dst, report);
        (unattached ??= []).push(it);
        continue;
      }
      // A move re-points the entry the connection has (one object per offloaded connection, not per
      // move); an offload takes up the one it had before its last upload.
      let e: Entry;
      if (at !== undefined) e = this.entries.setIn(at, k, dst, it.user, handle, it);
      else {
        const had = this.entries.get(k);
        if (had !== undefined) {
          had.nic = dst;
          had.user = it.user;
          had.conn = null;
          had.handle = handle;
          e = had;
        } else {
          e = { key: k, nic: dst, user: it.user, conn: null, handle, item: null, named: 0 };
          this.entries.set(e);
        }
      }
      if (handle !== null) {
        if (pace && it.socket !== null) {
          // Frozen on the entry as a socket whose NIC died mid-move is, so that a transfer
          // before its turn takes it over (takeSocket). Its handle's events meanwhile reach it
          // frozen, which holds them as through the move (reads and writes wait for the resume).
          e.frozen = it.socket;
          this.pacedResumes.push(e);
          paced++;
        } else it.socket?._completeMove(handle);
        continue;
      }
      // `dst` died (in this loop, a LocalNic's attach may be what finds it so): the connection's
      // hard state is there for the recover that rebuilds what it ran, and the entry says so. The
      // handle at the source is let go: resumed on it, the socket's next read or write would throw
      // (out of this loop, leaving the rest frozen). It stays frozen, its calls held, until then.
      if (it.socket !== null) e.frozen = it.socket;
      report?.refused.push({ key: k, status: 'failure', reason: `${dst.id} died during the move` });
      (unattached ??= []).push(it);
    }
    if (unattached !== null) this.stack.counters.inc('offload.settle.unattached', unattached.length);
    if (paced > 0) {
      this.stack.counters.inc('offload.settle.paced', paced);
      // The first turn's share now, as a settle resumed every socket before: a small batch still
      // resumes in its settle.
      this.pacedResumes.runAhead();
    }
    return unattached;
  }

  /**
   * `dst`, alive, does not run `it` any more: it ended there (a reset from its peer, or a timeout,
   * came to it during the settle's awaits) before anyone could hear of it. The source let go of
   * it, so nothing resumes; the application hears the end it would have heard from `dst`, and the
   * host forgets the connection (its entry was not re-pointed, so `dst`'s 'closed' found none).
   */
  private endedAt(it: Item, dst: Nic, report?: TransferReport): void {
    this.unlist(it);
    report?.refused.push({ key: it.key, status: 'closed', reason: `closed at ${dst.id} during the move` });
    // Data its peer sent before the close is read before the end is heard: Linux's tcp_reset()
    // purges the write queue only (tcp_write_queue_purge, tcp_done), and tcp_recvmsg() copies the
    // receive queue before it looks at SOCK_DONE (a FIN came: EOF) or sk_err (ECONNRESET,
    // ETIMEDOUT). `dst` kept the closed connection, and how it ended, for it.
    const closed = it.socket?.moving === true ? (dst.attachClosed?.(it.key, it.user) ?? null) : null;
    if (closed !== null) it.socket!._completeMove(closed.handle, closed);
    else this.loseUser(it, new ConnectionError('ECONNRESET', 'connection reset by peer during a move'));
  }

  // ---- live hand-over between owners of this thread ------------------------------------------

  /**
   * An owner whose connections run on this thread's clock and may be handed live now: the host,
   * or a NIC of this thread (`Nic.engine`, a LocalNic or any other) that says so (`handsLive`).
   */
  private sameThread(o: Owner): o is LiveOwner {
    if (o === 'host') return true;
    const engine = o.engine;
    return engine !== undefined && o.handsLive === true && engine.tcp.env.clock === this.stack.tcp.env.clock;
  }

  /**
   * A NIC of this thread (`Nic.engine`) keeps its TCP layer's four-tuple entries in the host's
   * store (ConnTable.share), so a live hand-over between them re-points an entry instead of
   * moving it between hash tables. Each table still sees only its own connections and
   * placeholders. A NIC that runs connections already keeps its own store.
   */
  join(nic: Nic): void {
    nic.engine?.tcp.table.share(this.stack.tcp.table);
  }

  /** A NIC the manager forgot (OffloadManager.removeNic): its forwarder goes. */
  leave(nic: Nic): void {
    this.injectors.delete(nic);
  }

  /**
   * The host's forwarder to `nic`. It refuses once the NIC is dead, so the host's placeholder holds
   * the peers' segments until the connections are rebuilt elsewhere: a dead NIC drops whatever it
   * is handed, and a crash's rebuild of 10,000 lasts hundreds of ms of the peers' retransmissions.
   */
  injector(nic: Nic): Forward {
    let fn = this.injectors.get(nic);
    if (fn === undefined) {
      const one: Forward = (p) => {
        if (nic.death !== null) return false;
        const g = this.gathering.get(nic);
        if (g !== undefined) g.push(p);
        else nic.inject([p]);
        return true;
      };
      // A placeholder's held segments in one inject (one deferred turn of a LocalNic, one message
      // to a worker), not one each.
      one.many = (ps) => {
        if (nic.death !== null) return false;
        const g = this.gathering.get(nic);
        if (g !== undefined) for (const p of ps) g.push(p);
        else nic.inject(ps);
        return true;
      };
      fn = one;
      this.injectors.set(nic, fn);
    }
    return fn;
  }

  /**
   * Move `keys` between owners of this thread in one turn of a NIC's (as a verb runs): each
   * TcpConnection is detached from the source's layer and attached to the destination's, the
   * same object with its rings, timer, RACK log, SACK board and counts, its path re-pointed. No
   * segment and no application call can come between the two halves, so nothing is frozen,
   * nothing held, no socket re-pointed (its handle is the same object), and nothing validated:
   * the state never left the code that ran it, in the thread that ran it; validation guards what
   * crosses a trust boundary (another thread's bytes, a state a NIC hands back in a transfer).
   * The invariants the general protocol keeps hold as they did: a LocalNic keeps each
   * connection's hard state in the connection itself (a crash salvages it from there, and loses
   * the soft state), the counts live in the state, and a NIC marked failed, or one that refuses
   * (closed, link down, full, the 4-tuple taken), gets nothing: those stay at their source (with
   * `rollbackToHost`, go to the host). Null when this batch needs the general protocol (an IPv6
   * connection, a source that parked connections or holds one it would not hand over, an end
   * that stopped running): nothing has changed then.
   */
  private handover(
    keys: readonly ConnKey[],
    src: LiveOwner,
    dst: LiveOwner,
    hints: readonly (TcpConnection | null)[] | undefined,
  ): Promise<LiveReport | null> {
    // A later turn of the clock, as a NIC's verb runs, charged to the meter as the transfer code
    // of this thread it is (a LocalNic's own `chargeWork` charges only its verbs). The meter stays
    // stopped once that turn ends: what follows is only the report handed back through a few
    // promise hops, between which the microtasks the turn queued for others run (the team's
    // progress watch scanning 10,000 connections, the simulated applications' stream events);
    // resumed there, as `wait` does, it charged their work to the move. `run` resumes it if the
    // general protocol follows.
    this.pause();
    return new Promise<LiveReport | null>((resolve, reject) => {
      this.stack.clock.defer(() => {
        this.resume();
        try {
          resolve(this.handoverNow(keys, src, dst, hints));
        } catch (e) {
          reject(e);
        } finally {
          this.pause();
        }
      });
    });
  }

  private handoverNow(
    keys: readonly ConnKey[],
    src: LiveOwner,
    dst: LiveOwner,
    hints: readonly (TcpConnection | null)[] | undefined,
  ): LiveReport | null {
    if ((src !== 'host' && src.handsLive !== true) || (dst !== 'host' && dst.handsLive !== true)) return null;
    const srcTcp = src === 'host' ? this.stack.tcp : src.engine.tcp;
    if (src !== 'host' && src.engine.parkedCount > 0) return null;
    const conns: TcpConnection[] = [];
    const found: ConnKey[] = [];
    const gone: ConnKey[] = [];
    const rest: ConnKey[] = [];
    const ended: TcpConnection[] = [];
    const endedKeys: ConnKey[] = [];
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i]!;
      // IPv6 connections take the general protocol: their address handles are held per owner.
      if (k.remoteIp >= TWO_32 || k.localIp >= TWO_32) return null;
      // The caller's connection, if it still runs at the source under this key (a turn has passed
      // since it was found: it may have closed, or moved), else the one the source runs there.
      let conn: TcpConnection | undefined = hints?.[i] ?? undefined;
      // The caller's keys are mostly the connections' own (`TcpConnection.key`): identity first.
      if (
        conn === undefined ||
        !conn.linked ||
        conn.engine !== srcTcp ||
        (conn.key !== k && !sameConnKey(conn.state.const, k))
      )
        conn = srcTcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort);
      if (conn === undefined) {
        // The host's: closed meanwhile, nothing to say (as `freeze`); a NIC's: closed there.
        if (src !== 'host') gone.push(k);
        continue;
      }
      // A NIC's connection it would not hand live (TIME_WAIT, a handshake) takes the general
      // protocol after the others moved: one such in a batch of 512 sent the whole batch there
      // (released, validated, installed: 4 of a carrier failover's 20 batches of streams that
      // were ending).
      if (src !== 'host' && !isOffloadable(conn.state)) {
        // The general protocol's terminate would end a TIME_WAIT at the NIC anyway (nothing to
        // hand over; the host hears 'closed'): it ends in this turn instead. A carrier failover
        // of 10,000 streams that were ending took 2,000 of them through freeze, terminate,
        // pairing and forget, a sixth of its charged time.
        if (conn.state.delegated.state === TcpStateId.TIME_WAIT) {
          ended.push(conn);
          endedKeys.push(k);
        } else rest.push(k);
        continue;
      }
      conns.push(conn);
      found.push(k);
    }
    const report: TransferReport = { moved: [], refused: [] };
    if (src !== 'host') {
      for (let i = 0; i < ended.length; i++) {
        src.engine.endTimeWait(ended[i]!);
        report.refused.push({
          key: endedKeys[i]!,
          status: 'closed',
          reason: 'TIME_WAIT ended at the source',
        });
      }
    }
    for (const k of gone) {
      this.entries.delete(k);
      this.stack.tcp.dropFrozen(k.localIp, k.localPort, k.remoteIp, k.remotePort);
      report.refused.push({ key: k, status: 'closed', reason: 'closed at the source during the move' });
    }
    const adopt = this.opts.prod === true ? ADOPT_PRODDED : ADOPT;
    const back: number[] = [];
    const dstEngine = dst === 'host' ? null : dst.engine;
    let refusal: string | null = null;
    if (dst !== 'host' && this.refuses(dst)) {
      this.stack.counters.inc('offload.refused.failed-nic', conns.length);
      refusal = `${dst.id} has failed`;
    } else refusal = dstEngine?.liveRefusal() ?? null;
    let room = dstEngine === null ? Number.POSITIVE_INFINITY : dstEngine.room;
    const dstTcp = dstEngine === null ? this.stack.tcp : dstEngine.tcp;
    const slots = new Map<PathState, PathSlot>();
    const srcSlots = new Map<PathState, PathSlot | null>();
    const hostPaths = new Map<PathState, PathState | null>();
    // The host's forwarder to the destination, found once for the batch.
    const toDst = dst === 'host' ? null : this.injector(dst);
    for (let i = 0; i < conns.length; i++) {
      const conn = conns[i]!;
      const k = found[i]!;
      let status: TransferRefusal['status'] = 'failure';
      let why = refusal;
      if (why === null && room <= 0) {
        status = 'no-resources';
        why = `capacity ${dstEngine!.capacity} reached`;
      } else if (why === null && dstTcp.lookupOf(conn) !== undefined) {
        why = 'already offloaded here';
      }
      if (why !== null) {
        report.refused.push({ key: k, status, reason: why });
        back.push(i);
        continue;
      }
      this.handOne(conn, src, dst, toDst, adopt, slots, srcSlots, hostPaths);
      room--;
      report.moved.push(k);
    }
    const moved = report.moved.length;
    const backed = src !== 'host' && this.opts.rollbackToHost === true ? back.length : 0;
    if (backed > 0) {
      // A failed NIC's connections go to the host, which never refuses.
      for (const i of back) this.handOne(conns[i]!, src, 'host', null, adopt, slots, srcSlots, hostPaths);
    }
    // Each layer's `tcp.detached` / `tcp.attached`, counted for the batch (`AdoptOptions.batched`).
    srcTcp.countHandovers(moved + backed, 0);
    dstTcp.countHandovers(0, moved);
    if (backed > 0) this.stack.tcp.countHandovers(0, backed);
    dstEngine?.settleLive(slots, moved);
    if (src !== 'host') src.engine.gaveLive(moved + backed);
    this.stack.counters.inc('offload.handover', moved);
    return { report, rest };
  }

  /**
   * One connection from `src`'s layer to `dst`'s, and the host's table of who runs it: its
   * placeholder and its record in the host are found from the connection (`ConnTable.holdOf`,
   * `EntryTable.setOf`), not looked up by key.
   */
  private handOne(
    conn: TcpConnection,
    src: LiveOwner,
    dst: LiveOwner,
    toDst: Forward | null,
    adopt: AdoptOptions,
    slots: Map<PathState, PathSlot>,
    srcSlots: Map<PathState, PathSlot | null>,
    hostPaths: Map<PathState, PathState | null>,
  ): void {
    const tcp = this.stack.tcp;
    if (src === 'host') tcp.detach(conn, toDst, true);
    else src.engine.giveLive(conn, srcSlots, true);
    if (dst === 'host') {
      const from = conn.state.path;
      let path = hostPaths.get(from);
      if (path === undefined) {
        path = this.stack.pathTo(from.const.remoteIp, from.const.localIp);
        hostPaths.set(from, path);
      }
      if (path) conn.state.path = path;
      // The host's forwarding placeholder goes (`attach`): the host runs the 4-tuple again.
      tcp.attach(conn, adopt);
      this.entries.deleteOf(conn);
      return;
    }
    dst.engine.takeLive(conn, adopt, slots);
    if (src !== 'host') tcp.forwardOf(conn, toDst!);
    this.entries.setOf(conn, dst, conn.user);
  }

  /** What the destination refused goes back to the source, else to the host; what neither takes is lost. */
  private async rollback(
    failed: Refused[],
    byState: ItemsByState,
    src: Owner,
    report: TransferReport,
  ): Promise<void> {
    for (const f of failed) {
      report.refused.push({ key: keyOfState(f.state), status: f.status, reason: f.reason });
    }
    this.opts.phases?.refused(failed.length);
    let left = this.survivors(failed, byState);
    let reason = failed[0]!.reason;
    const backs = src === 'host' || this.opts.rollbackToHost ? (['host'] as const) : ([src, 'host'] as const);
    for (const back of backs) {
      if (left.length === 0) break;
      const rb = await this.install(back, left);
      await this.settle(rb.ok, byState, src, back);
      if (rb.died !== undefined) await this.rebuildDied(rb.died, byState, src, back, report);
      for (const f of rb.failed)
        if (f.status === 'closed')
          report.refused.push({ key: keyOfState(f.state), status: f.status, reason: f.reason });
      left = this.survivors(rb.failed, byState);
      if (rb.failed.length > 0) reason = rb.failed[0]!.reason;
    }
    for (const s of left) this.lost(byState.get(s)!, reason, report);
  }

  /**
   * The refused states something may still take; those aborted where they went (status 'closed':
   * a NIC closed with them in hand) are lost here, as their peers were reset. The caller lists
   * every refusal in its report.
   */
  survivors(failed: readonly Refused[], byState: ItemsByState): TcpState[] {
    const left: TcpState[] = [];
    for (const f of failed) {
      if (f.status === 'closed') this.lost(byState.get(f.state)!, f.reason);
      else left.push(f.state);
    }
    return left;
  }

  adoptHost(it: Item, s: TcpState, prod = this.opts.prod === true): TcpConnection {
    const path = this.stack.pathTo(s.const.remoteIp, s.const.localIp);
    if (path) s.path = path;
    return this.stack.tcp.adopt(s, it.user, { prod, at: it.at });
  }

  private readoptHost(it: Item, s: TcpState): void {
    const tcp = this.stack.tcp;
    const k = it.key;
    const conn = this.adoptHost(it, s);
    for (const p of tcp.takeQueued(k.localIp, k.localPort, k.remoteIp, k.remotePort)) tcp.inputPacket(p);
    tcp.dropFrozen(k.localIp, k.localPort, k.remoteIp, k.remotePort);
    if (it.socket) it.socket._completeMove(conn);
  }

  /** The transfer did not start for `it`: carry on at the source. */
  private resumeAt(it: Item, src: Owner): void {
    if (src !== 'host') {
      const k = it.key;
      this.stack.tcp.forwardTo(k.localIp, k.localPort, k.remoteIp, k.remotePort, this.injector(src));
    }
    it.socket?._abortMove();
  }

  /**
   * The host forgets `it`; its socket carries on with the handle it has, which must still hold the
   * connection (one that ended at its owner, or a socket already moved elsewhere): else `lost`.
   */
  forget(it: Item): void {
    this.unlist(it);
    it.socket?._abortMove();
  }

  /**
   * `it` is gone: the host forgets it and its user hears ECONNABORTED. Not resumed: the handle its
   * socket had is one its owner let go (a dead NIC's, or a source's that handed it on), whose next
   * read or write throws, out of the caller's loop over the rest. `report`: listed there as
   * refused (unless the caller listed it already).
   */
  lost(it: Item, reason: string, report?: TransferReport): void {
    this.unlist(it);
    report?.refused.push({ key: it.key, status: 'failure', reason });
    this.loseUser(it, new ConnectionError('ECONNABORTED', `connection lost in transfer: ${reason}`));
  }

  private unlist(it: Item): void {
    const k = it.key;
    this.entries.delete(k);
    this.stack.tcp.dropFrozen(k.localIp, k.localPort, k.remoteIp, k.remotePort);
  }

  /**
   * `it`'s user hears `err`: a socket this transfer froze loses its move at once (its held calls
   * fail with it); another user, or a socket no longer frozen, hears it on the next turn.
   */
  private loseUser(it: Item, err: ConnectionError): void {
    if (it.socket?.moving) it.socket._loseMove(err);
    else if (it.user !== null) {
      const u = it.user;
      this.stack.clock.defer(() => u.onClosed(err));
    }
  }
}
