import { widenNumbers } from '../../state/tcp-state.ts';
import { TWO_32 } from '../address-table.ts';
import type { TcpConnection } from './tcp-connection.ts';

/**
 * What is left of a connection in the table after its state went elsewhere: it holds arriving
 * segments (as IPv4 packets) while the connection is between owners, or forwards them to the owner
 * once the move is done, instead of answering them with a RST.
 */
export interface Placeholder {
  queue: Uint8Array[];
  forward: Forward | null;
}

/**
 * Where a placeholder sends its tuple's segments: the connection's owner elsewhere. False when the
 * owner cannot take them (it died, and the connection is to be rebuilt elsewhere from what it
 * left): the placeholder then holds them for the new owner, as while the connection moves.
 */
export type Forward = ((packet: Uint8Array) => boolean) & {
  /**
   * What a placeholder held, handed on in one call, in order: all taken, or (false) none. A
   * crash's rebuild replays some six held segments a connection, and one deferred inject each was
   * 60,000 calls inside the charged settle of 10,000 connections.
   */
  many?: (packets: Uint8Array[]) => boolean;
};

/**
 * One four-tuple in a store of entries that several layers' tables may share (`ConnTable.share`):
 * the connection one table runs for it (`runBy`), the placeholder one table keeps for it
 * (`heldBy`), or both, which need not be the same table's. A connection handed between tables
 * that share a store keeps its entry: only `runBy` changes.
 */
export interface TableEntry {
  /** The connection `runBy` runs; while `runBy` is null, the last one that ran here (a hint to reuse the entry). */
  conn: TcpConnection | null;
  runBy: ConnTable | null;
  /** `heldBy`'s placeholder; while `heldBy` is null, the last one (taken up by the next). */
  held: Placeholder | null;
  heldBy: ConnTable | null;
  /**
   * What `taggedBy`'s user keeps of the tuple (the host's record of a connection it offloaded);
   * while `taggedBy` is null, the last one `lastTaggedBy` kept (taken up by its next, `setTagOf`).
   */
  tag: object | null;
  taggedBy: ConnTable | null;
  lastTaggedBy: ConnTable | null;
  /** The tuple: set when the entry is made or taken up again from `Store.spare`. */
  localIp: number;
  localPort: number;
  remoteIp: number;
  remotePort: number;
  /** The next entry whose tuple hashes alike. */
  next: TableEntry | null;
  /** The store the entry is in: a connection handed to a table of another store needs a new one. */
  readonly home: Store;
  /** Made while another entry of its tuple was in the store (counted in `Store.twins` until pruned). */
  twin: boolean;
  /**
   * Neighbours in `runBy`'s list of the connections it runs and in `taggedBy`'s list of its tags
   * (`EntryList`). Fields of the entry, not an array of its own: a hand-over of 10,000 connections
   * takes each out of one list and into another, and the array was one more cache miss each.
   */
  runPrev: TableEntry | null;
  runNext: TableEntry | null;
  tagPrev: TableEntry | null;
  tagNext: TableEntry | null;
}

/** Whether `t` is the four-tuple given (the check after a hash match, in both hashed tables). */
export function sameTuple(
  t: {
    readonly localIp: number;
    readonly localPort: number;
    readonly remoteIp: number;
    readonly remotePort: number;
  },
  localIp: number,
  localPort: number,
  remoteIp: number,
  remotePort: number,
): boolean {
  return (
    t.localPort === localPort &&
    t.remotePort === remotePort &&
    t.localIp === localIp &&
    t.remoteIp === remoteIp
  );
}

/**
 * The four-tuple folded into a small integer. A Map keyed by such numbers hashes them without
 * boxing; keyed by `ip * 65536 + port` (beyond 2^31) every lookup hashed a heap number, and the
 * table was most of the cost of handing 10,000 connections between owners. IPv6 handles, above
 * 2^32, fold their high part in.
 */
export function hashOf(localIp: number, localPort: number, remoteIp: number, remotePort: number): number {
  let h = Math.imul((remoteIp | 0) ^ ((remoteIp / TWO_32) | 0), 0x9e3779b1);
  h = Math.imul(h ^ (localIp | 0) ^ ((localIp / TWO_32) | 0), 0x85ebca6b);
  h = Math.imul(h ^ ((localPort << 16) | remotePort), 0xc2b2ae35);
  return (h ^ (h >>> 15)) & 0x3fffffff;
}

/**
 * The entries of one or more tables (`ConnTable.share`), by `hashOf` their tuple. Most tuples have
 * one entry, holding every table's part of it; a second one is made only when a part is taken in
 * every entry of the tuple (the host runs a connection while a NIC runs another of the same tuple).
 * While no such entry exists (`twins` 0), the entry a connection is in is its tuple's only one, and
 * a table reads and writes its part of the tuple there without a lookup (`ConnTable.sole`).
 */
class Store {
  readonly map = new Map<number, TableEntry>();
  /**
   * Entries pruned, for the next tuple: a connection that leaves a worker (its placeholder
   * dropped at once) and comes back made an entry and its links each time, which lived until the
   * next move. At most as many as the store has had entries in use at once (`peak`; and a
   * thousand while it has had few): entries are made only when no spare is left, so spares and
   * entries in use together never take more than the table did at its fullest. (Bounded by the
   * entries in use now, a worker that moved its ten thousand connections away kept half of them,
   * and the next ten thousand to come made the other half again.)
   */
  readonly spare: TableEntry[] = [];
  /** Entries in the map now, and the most it has held at once. */
  inUse = 0;
  peak = 0;
  /** Entries made while another of their tuple existed, not yet pruned. */
  twins = 0;
}

/** Every table entry is made here: one literal, so one layout (see WIDENED_TABLE_ENTRY). */
function makeEntry(
  home: Store,
  localIp: number,
  localPort: number,
  remoteIp: number,
  remotePort: number,
): TableEntry {
  // What a hand-over reads and writes of each entry first, the tuple and the hash chain (read by
  // lookups) last: V8 lays the fields out in this order, and a move touches one cache line fewer.
  return {
    conn: null,
    runBy: null,
    runPrev: null,
    runNext: null,
    held: null,
    heldBy: null,
    tag: null,
    taggedBy: null,
    lastTaggedBy: null,
    home,
    twin: false,
    tagPrev: null,
    tagNext: null,
    localIp,
    localPort,
    remoteIp,
    remotePort,
    next: null,
  };
}

/**
 * An entry whose tuple fields hold fractions, kept: the layout every entry is born on from module
 * load (as widenTcpState's). The tuple comes from a state's constants, which are widened, so a
 * port or address read from them in code V8 has not optimized is a heap number, and the first
 * such store into an entry born on small-integer fields (a worker's first adopt in a failover)
 * gave the layout a new map and migrated every entry then alive at its next store: one runtime
 * call per moved connection, inside the failover (`--trace-migration`, a WorkerNic carrier cut).
 * Kept, since V8 holds the widened transitions weakly.
 */
export const WIDENED_TABLE_ENTRY: TableEntry = widenedEntry();

function widenedEntry(): TableEntry {
  const e = makeEntry(new Store(), 0, 0, 0, 0);
  widenNumbers(e);
  return e;
}

/** What an entry is looked for: `vacant`'s kinds. */
const RUN = 0;
const HELD = 1;
const TAG = 2;

/** Which table has the entry's part of `kind`. */
function ownerOf(e: TableEntry, kind: number): ConnTable | null {
  return kind === RUN ? e.runBy : kind === HELD ? e.heldBy : e.taggedBy;
}

/** Spare entries a store keeps whatever its size (see `Store.spare`). */
const SPARE_ENTRIES = 1024;

/** A table's entries of one kind, oldest first, linked through the entries themselves. */
class EntryList {
  first: TableEntry | null = null;
  last: TableEntry | null = null;
  size = 0;

  /** @param run the list of the connections a table runs (`runPrev`, `runNext`), else of its tags. */
  constructor(private readonly run: boolean) {}

  push(e: TableEntry): void {
    const last = this.last;
    if (this.run) {
      e.runPrev = last;
      e.runNext = null;
      if (last === null) this.first = e;
      else last.runNext = e;
    } else {
      e.tagPrev = last;
      e.tagNext = null;
      if (last === null) this.first = e;
      else last.tagNext = e;
    }
    this.last = e;
    this.size++;
  }

  remove(e: TableEntry): void {
    if (this.run) {
      const p = e.runPrev;
      const n = e.runNext;
      if (p === null) this.first = n;
      else p.runNext = n;
      if (n === null) this.last = p;
      else n.runPrev = p;
      e.runPrev = null;
      e.runNext = null;
    } else {
      const p = e.tagPrev;
      const n = e.tagNext;
      if (p === null) this.first = n;
      else p.tagNext = n;
      if (n === null) this.last = p;
      else n.tagPrev = p;
      e.tagPrev = null;
      e.tagNext = null;
    }
    this.size--;
  }

  /** The entry after `e` in this list. */
  next(e: TableEntry): TableEntry | null {
    return this.run ? e.runNext : e.tagNext;
  }

  /** The entries, as a snapshot of what `read` reads of each. */
  map<T>(read: (e: TableEntry) => T): T[] {
    const out: T[] = [];
    for (let e = this.first; e !== null; e = this.next(e)) out.push(read(e));
    return out;
  }
}

/**
 * The four-tuple table of one TCP layer, for connections and placeholders alike: demultiplexing
 * looks a segment up once and finds whichever holds its tuple (gVisor's demuxer keeps endpoints
 * and their transfer state in one table for the same reason).
 *
 * The entries themselves may live in a store shared with other layers of the same thread (the
 * host's and its LocalNics', `share`), each table seeing only what it runs, holds and tags,
 * exactly as if it had its own: a connection handed live from one to another then stays in its
 * entry and changes table by a field written, where separate tables removed it from one hash
 * table and added it to the other, and the host's placeholder and its record of the offloaded
 * connection (a tag) sat in two more.
 */
export class ConnTable {
  /** hashOf(tuple) → the entries of that hash, chained; shared with the tables this one `share`s. */
  private store = new Store();
  private holds = 0;
  private made = 0;
  /** The connections this table runs, and its tags. */
  private readonly runs = new EntryList(true);
  private readonly tags = new EntryList(false);

  /** Connections in the table. */
  get size(): number {
    return this.runs.size;
  }

  /** Placeholders in the table. */
  get heldSize(): number {
    return this.holds;
  }

  /** Tags in the table. */
  get taggedSize(): number {
    return this.tags.size;
  }

  /** Entries this table made (the rest of its parts went into entries that were there). */
  get entriesMade(): number {
    return this.made;
  }

  /**
   * Keep this table's entries in `other`'s store from now on. Only an empty table joins another
   * (its entries would stay behind); false, and nothing changed, otherwise.
   */
  share(other: ConnTable): boolean {
    if (other.store === this.store) return true;
    if (this.store.map.size !== 0) return false;
    this.store = other.store;
    return true;
  }

  /** Whether this table and `other` keep their entries in one store. */
  sharesWith(other: ConnTable): boolean {
    return this.store === other.store;
  }

  lookup(
    localIp: number,
    localPort: number,
    remoteIp: number,
    remotePort: number,
  ): TcpConnection | undefined {
    if (this.runs.size === 0) return undefined;
    return this.entry(RUN, localIp, localPort, remoteIp, remotePort)?.conn ?? undefined;
  }

  placeholder(
    localIp: number,
    localPort: number,
    remoteIp: number,
    remotePort: number,
  ): Placeholder | undefined {
    if (this.holds === 0) return undefined;
    return this.entry(HELD, localIp, localPort, remoteIp, remotePort)?.held ?? undefined;
  }

  /** Run `conn` here; its tuple must not hold another connection. */
  add(conn: TcpConnection): void {
    let e = conn.tableEntry;
    // A connection handed from a table of this store comes with its entry (`remove` kept it).
    if (e === null || e.runBy !== null || e.conn !== conn || e.home !== this.store) {
      const c = conn.state.const;
      e = this.vacant(c.localIp, c.localPort, c.remoteIp, c.remotePort, RUN);
      e.conn = conn;
      conn.tableEntry = e;
    }
    e.runBy = this;
    this.runs.push(e);
  }

  /** Take `conn` out; false if its tuple holds no connection or another one. */
  remove(conn: TcpConnection): boolean {
    const e = conn.tableEntry;
    if (e === null || e.runBy !== this || e.conn !== conn) return false;
    e.runBy = null;
    this.runs.remove(e);
    this.pruneIfEmpty(e);
    return true;
  }

  /** The placeholder of this tuple, made if there is none. */
  hold(localIp: number, localPort: number, remoteIp: number, remotePort: number): Placeholder {
    const e = this.holds === 0 ? undefined : this.entry(HELD, localIp, localPort, remoteIp, remotePort);
    if (e !== undefined) return e.held!;
    return this.holdAt(this.vacant(localIp, localPort, remoteIp, remotePort, HELD));
  }

  /** Forget the placeholder of this tuple; returns it (with whatever it still held). */
  unhold(localIp: number, localPort: number, remoteIp: number, remotePort: number): Placeholder | undefined {
    if (this.holds === 0) return undefined;
    const e = this.entry(HELD, localIp, localPort, remoteIp, remotePort);
    return e === undefined ? undefined : this.unholdAt(e);
  }

  /** The tag this table keeps for the tuple. */
  tagOf(localIp: number, localPort: number, remoteIp: number, remotePort: number): object | undefined {
    if (this.tags.size === 0) return undefined;
    return this.entry(TAG, localIp, localPort, remoteIp, remotePort)?.tag ?? undefined;
  }

  /**
   * `tagOf` the connection's own tuple, read from the entry the connection is in when that holds
   * the tag (a connection handed within one store keeps its entry), else looked up.
   * `e.conn === conn` says the entry is still the connection's tuple's: a stopped connection whose
   * entry went on to another connection of its tuple keeps naming it, and once pruned the entry is
   * a spare (`Store.spare`) that the next tuple tags.
   */
  tagOfConn(conn: TcpConnection): object | undefined {
    const e = conn.tableEntry;
    if (e !== null && e.taggedBy === this && e.conn === conn) return e.tag!;
    if (this.sole(conn) !== null) return undefined;
    const c = conn.state.const;
    return this.tagOf(c.localIp, c.localPort, c.remoteIp, c.remotePort);
  }

  /**
   * The entry that holds this table's tag of the tuple. A transfer finds it once and carries it to
   * its later steps (`tagIn`, `heldIn`), which check that it still holds the tuple's part before
   * they read it: between the steps the entry may have been let go and taken up by another tuple.
   */
  tagEntry(localIp: number, localPort: number, remoteIp: number, remotePort: number): TableEntry | undefined {
    if (this.tags.size === 0) return undefined;
    return this.entry(TAG, localIp, localPort, remoteIp, remotePort);
  }

  /** `tagOf` the tuple, read from `e` (see `tagEntry`) while `e` holds this table's tag of it. */
  tagIn(
    e: TableEntry,
    localIp: number,
    localPort: number,
    remoteIp: number,
    remotePort: number,
  ): object | undefined {
    if (e.taggedBy === this && sameTuple(e, localIp, localPort, remoteIp, remotePort)) return e.tag!;
    return this.tagOf(localIp, localPort, remoteIp, remotePort);
  }

  /**
   * This table's placeholder of the tuple when `e` (see `tagEntry`) holds it; undefined when `e`
   * does not (there may be one elsewhere: look it up). A table keeps one placeholder per tuple, so
   * the one in `e` is the one `placeholder` would find.
   */
  heldIn(
    e: TableEntry,
    localIp: number,
    localPort: number,
    remoteIp: number,
    remotePort: number,
  ): Placeholder | undefined {
    return e.heldBy === this && sameTuple(e, localIp, localPort, remoteIp, remotePort) ? e.held! : undefined;
  }

  /**
   * `e` (see `tagEntry`) when it is the tuple's only entry in this table's store, so that this
   * table's part of the tuple, if it has one, is in it; null when it may not be (look up). A part
   * in use says `e` is still in the store (a pruned one has none, and may be another tuple's by
   * now), and with no twins no other entry of the tuple is.
   */
  soleIn(
    e: TableEntry,
    localIp: number,
    localPort: number,
    remoteIp: number,
    remotePort: number,
  ): TableEntry | null {
    return e.home === this.store &&
      this.store.twins === 0 &&
      (e.runBy !== null || e.heldBy !== null || e.taggedBy !== null) &&
      sameTuple(e, localIp, localPort, remoteIp, remotePort)
      ? e
      : null;
  }

  /**
   * Make `e`, a tuple's only entry (`soleIn`) whose RUN part is free, the one `add` puts `conn` (a
   * connection of that tuple) in, without a search: a connection revived or made anew has no
   * entry of its own (`TcpConnection.revive`).
   */
  placeIn(conn: TcpConnection, e: TableEntry): void {
    if (e.runBy !== null || e.home !== this.store) return;
    e.conn = conn;
    conn.tableEntry = e;
  }

  /** Tag the tuple with `tag`, or replace its tag (its place in `tagged()` kept). */
  setTag(localIp: number, localPort: number, remoteIp: number, remotePort: number, tag: object): void {
    const e = this.tags.size === 0 ? undefined : this.entry(TAG, localIp, localPort, remoteIp, remotePort);
    this.tagAt(e ?? this.vacant(localIp, localPort, remoteIp, remotePort, TAG), tag);
  }

  /** Forget the tuple's tag; false if it had none. */
  untag(localIp: number, localPort: number, remoteIp: number, remotePort: number): boolean {
    if (this.tags.size === 0) return false;
    const e = this.entry(TAG, localIp, localPort, remoteIp, remotePort);
    if (e === undefined) return false;
    this.untagAt(e);
    return true;
  }

  // ---- by connection: its tuple's entry read directly when it is the only one -----------------
  //
  // A live hand-over in this thread reads and writes, per connection, the source's and the
  // destination's runs, the host's placeholder and its tag: each a hash probe by tuple, where the
  // connection is in the one entry that holds them all (`Store`).

  /** `lookup` of `conn`'s tuple: the connection this table runs there (`conn`, another one, or none). */
  lookupOf(conn: TcpConnection): TcpConnection | undefined {
    const e = this.sole(conn);
    if (e !== null) return e.runBy === this ? e.conn! : undefined;
    const c = conn.state.const;
    return this.lookup(c.localIp, c.localPort, c.remoteIp, c.remotePort);
  }

  /** `placeholder` of `conn`'s tuple. */
  placeholderOf(conn: TcpConnection): Placeholder | undefined {
    if (this.holds === 0) return undefined;
    const e = this.sole(conn);
    if (e !== null) return e.heldBy === this ? e.held! : undefined;
    const c = conn.state.const;
    return this.placeholder(c.localIp, c.localPort, c.remoteIp, c.remotePort);
  }

  /** `hold` of `conn`'s tuple. */
  holdOf(conn: TcpConnection): Placeholder {
    const e = this.sole(conn);
    if (e === null) {
      const c = conn.state.const;
      return this.hold(c.localIp, c.localPort, c.remoteIp, c.remotePort);
    }
    if (e.heldBy === this) return e.held!;
    // Another table's placeholder is in the entry (the host's forwarder, while a NIC releases the
    // connection): taking the entry's HELD part would take that one over, and the host would
    // answer the tuple's segments with RSTs. This table's goes in an entry of its own.
    if (e.heldBy !== null) {
      const c = conn.state.const;
      return this.holdAt(this.vacant(c.localIp, c.localPort, c.remoteIp, c.remotePort, HELD));
    }
    return this.holdAt(e);
  }

  /** `unhold` of `conn`'s tuple. */
  unholdOf(conn: TcpConnection): Placeholder | undefined {
    if (this.holds === 0) return undefined;
    const e = this.sole(conn);
    if (e !== null) return e.heldBy === this ? this.unholdAt(e) : undefined;
    const c = conn.state.const;
    return this.unhold(c.localIp, c.localPort, c.remoteIp, c.remotePort);
  }

  /**
   * `setTag` of `conn`'s tuple, with the tag `make` returns given the one this table last kept
   * there (null if none): a tuple tagged again takes up its last tag object instead of a new one.
   */
  setTagOf<T extends object>(conn: TcpConnection, make: (spare: T | null) => T): T {
    let e = this.sole(conn);
    if (e === null) {
      const c = conn.state.const;
      const t = make(null);
      this.setTag(c.localIp, c.localPort, c.remoteIp, c.remotePort, t);
      return t;
    }
    const mine = e.taggedBy === this || (e.taggedBy === null && e.lastTaggedBy === this);
    const t = make(mine ? (e.tag as T) : null);
    if (e.taggedBy !== null && e.taggedBy !== this) {
      // Another table tags this entry: this table's tag goes in an entry of its own.
      const c = conn.state.const;
      e = this.vacant(c.localIp, c.localPort, c.remoteIp, c.remotePort, TAG);
    }
    this.tagAt(e, t);
    return t;
  }

  /**
   * The tag this table last kept in `conn`'s own entry and let go since (`untagAt` leaves the object
   * there): an upload untags the tuple, and the connection's next offload takes its record up again
   * instead of making one. Undefined unless the entry is its tuple's only one and its TAG part is free.
   */
  lastTagOf(conn: TcpConnection): object | undefined {
    const e = this.sole(conn);
    return e !== null && e.taggedBy === null && e.lastTaggedBy === this ? (e.tag ?? undefined) : undefined;
  }

  /**
   * `setTag` of the tuple, written into `e` (a connection's own entry, or `tagEntry`'s, carried
   * over awaits) without a search when `e` is where `setTag` would put it: it holds this table's
   * tag of the tuple, or it is in the store, the tuple's only entry, with its TAG part free. The
   * tag is what `make` returns given the one this table keeps or last kept there (null if none;
   * `live` false for one let go), as `setTagOf`. Else looked up.
   */
  setTagIn<T extends object>(
    e: TableEntry,
    localIp: number,
    localPort: number,
    remoteIp: number,
    remotePort: number,
    make: (spare: T | null, live: boolean) => T,
  ): T {
    if (e.home === this.store && sameTuple(e, localIp, localPort, remoteIp, remotePort)) {
      if (e.taggedBy === this) {
        const t = make(e.tag as T, true);
        e.tag = t;
        return t;
      }
      // A part in use says the entry is in the store (a pruned one has none), and with no twins
      // no other entry of the tuple holds this table's tag.
      if (e.taggedBy === null && this.store.twins === 0 && (e.runBy !== null || e.heldBy !== null)) {
        const t = make(e.lastTaggedBy === this ? (e.tag as T) : null, false);
        this.tagAt(e, t);
        return t;
      }
    }
    const found =
      this.tags.size === 0 ? undefined : this.entry(TAG, localIp, localPort, remoteIp, remotePort);
    const t = make(found === undefined ? null : (found.tag as T), found !== undefined);
    this.tagAt(found ?? this.vacant(localIp, localPort, remoteIp, remotePort, TAG), t);
    return t;
  }

  /** `untag` of `conn`'s tuple. */
  untagOf(conn: TcpConnection): boolean {
    if (this.tags.size === 0) return false;
    const e = this.sole(conn);
    if (e !== null) {
      if (e.taggedBy !== this) return false;
      this.untagAt(e);
      return true;
    }
    const c = conn.state.const;
    return this.untag(c.localIp, c.localPort, c.remoteIp, c.remotePort);
  }

  /**
   * The entry `conn` is in, when it is the only entry of its tuple in this table's store: then
   * this table's part of the tuple, if it has one, is in it. Null when it may not be (look up).
   * `e.conn === conn` also says the entry is still in the store: a pruned one drops its connection.
   */
  private sole(conn: TcpConnection): TableEntry | null {
    const e = conn.tableEntry;
    return e !== null && e.conn === conn && e.home === this.store && this.store.twins === 0 ? e : null;
  }

  /** Hold a placeholder in `e`, whose HELD part is free. */
  private holdAt(e: TableEntry): Placeholder {
    const spare = e.held;
    if (spare === null) e.held = { queue: [], forward: null };
    else {
      if (spare.queue.length > 0) spare.queue = [];
      spare.forward = null;
    }
    e.heldBy = this;
    this.holds++;
    return e.held!;
  }

  private unholdAt(e: TableEntry): Placeholder {
    // The object stays with the entry, for the tuple's next placeholder (the connection's next
    // offload): one object per offloaded connection, not one per move.
    const ph = e.held!;
    e.heldBy = null;
    this.holds--;
    this.pruneIfEmpty(e);
    return ph;
  }

  /** Tag `e`, whose TAG part is free or this table's. */
  private tagAt(e: TableEntry, tag: object): void {
    if (e.taggedBy !== this) {
      e.taggedBy = this;
      e.lastTaggedBy = this;
      this.tags.push(e);
    }
    e.tag = tag;
  }

  private untagAt(e: TableEntry): void {
    // The tag object stays with the entry (as a placeholder does), for `setTagOf` to take up.
    e.taggedBy = null;
    this.tags.remove(e);
    this.pruneIfEmpty(e);
  }

  /** Every tag, oldest first, as a snapshot. */
  tagged(): object[] {
    return this.tags.map((e) => e.tag!);
  }

  /**
   * Each tag with the entry that holds it (`tagEntry`'s), oldest first; `fn` must not tag or untag
   * (`tagged` is the snapshot for callers that do).
   */
  forEachTag(fn: (tag: object, e: TableEntry) => void): void {
    for (let e = this.tags.first; e !== null; e = e.tagNext) fn(e.tag!, e);
  }

  /** Every connection, as a snapshot: callers close connections while they walk. */
  connections(): TcpConnection[] {
    return this.runs.map((e) => e.conn!);
  }

  /** This table's entry of the tuple for `kind`. */
  private entry(
    kind: number,
    localIp: number,
    localPort: number,
    remoteIp: number,
    remotePort: number,
  ): TableEntry | undefined {
    for (
      let e = this.store.map.get(hashOf(localIp, localPort, remoteIp, remotePort)) ?? null;
      e !== null;
      e = e.next
    )
      if (ownerOf(e, kind) === this && sameTuple(e, localIp, localPort, remoteIp, remotePort)) return e;
    return undefined;
  }

  /**
   * An entry of this tuple free for a connection, a placeholder or a tag (`kind`): one whose other
   * parts are in use (by this table or another of the store) if there is one, else a new one.
   */
  private vacant(
    localIp: number,
    localPort: number,
    remoteIp: number,
    remotePort: number,
    kind: number,
  ): TableEntry {
    const h = hashOf(localIp, localPort, remoteIp, remotePort);
    const head = this.store.map.get(h);
    let twin = false;
    for (let e = head ?? null; e !== null; e = e.next) {
      if (!sameTuple(e, localIp, localPort, remoteIp, remotePort)) continue;
      if (ownerOf(e, kind) === null) return e;
      twin = true;
    }
    if (twin) this.store.twins++;
    const e = this.store.spare.pop() ?? this.newEntry(localIp, localPort, remoteIp, remotePort);
    e.localIp = localIp;
    e.localPort = localPort;
    e.remoteIp = remoteIp;
    e.remotePort = remotePort;
    e.twin = twin;
    if (++this.store.inUse > this.store.peak) this.store.peak = this.store.inUse;
    if (head === undefined) this.store.map.set(h, e);
    else {
      e.next = head.next;
      head.next = e;
    }
    return e;
  }

  private newEntry(localIp: number, localPort: number, remoteIp: number, remotePort: number): TableEntry {
    this.made++;
    return makeEntry(this.store, localIp, localPort, remoteIp, remotePort);
  }

  /** Take an entry that nothing uses any more out of its chain. */
  private pruneIfEmpty(e: TableEntry): void {
    if (e.runBy !== null || e.heldBy !== null || e.taggedBy !== null) return;
    if (e.conn !== null && e.conn.tableEntry === e) e.conn.tableEntry = null;
    e.conn = null;
    e.held = null;
    e.tag = null;
    e.lastTaggedBy = null;
    if (e.twin) {
      e.twin = false;
      this.store.twins--;
    }
    const map = this.store.map;
    const h = hashOf(e.localIp, e.localPort, e.remoteIp, e.remotePort);
    const head = map.get(h);
    if (head === e) {
      if (e.next === null) map.delete(h);
      else map.set(h, e.next);
    } else {
      for (let p = head ?? null; p !== null; p = p.next) {
        if (p.next === e) {
          p.next = e.next;
          break;
        }
      }
    }
    // Its lists' links are null (each list's remove cleared them); `sole` never takes it for a
    // connection's own entry again (its `conn` is null until the next one runs in it).
    e.next = null;
    this.store.inUse--;
    const spare = this.store.spare;
    if (spare.length < Math.max(SPARE_ENTRIES, this.store.peak)) spare.push(e);
  }
}
