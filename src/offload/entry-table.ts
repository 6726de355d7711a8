import type { ConnKey, Nic } from '../nic/nic.ts';
import { ConnTable, type TableEntry } from '../stack/tcp/conn-table.ts';
import type { TcpConnection } from '../stack/tcp/tcp-connection.ts';
import type { ConnectionHandle, TcpUser } from '../stack/tcp/tcp-types.ts';
import type { Entry, Item } from './transfer.ts';

/** An address as the TCP layer keys it: an IPv4 address as a u32 (keys may carry it signed), a handle whole. */
function norm(ip: number): number {
  return ip >= 0x1_0000_0000 ? ip : ip >>> 0;
}

/**
 * The host's table of offloaded connections, by four-tuple: which NIC runs each one. Looked up
 * for every frame that reaches the host for a NIC's connection and for every connection a
 * transfer moves. Its entries are tags in the host's four-tuple table (ConnTable.setTag), in the
 * entry that holds the host's placeholder of the connection and, for a LocalNic whose table
 * shares the host's store, the connection itself: a live hand-over finds the entry from the
 * connection, and offloading or uploading one adds or drops no entry of a table of its own.
 */
export class EntryTable {
  /** @param table the host stack's four-tuple table (a table of its own when none is given). */
  constructor(private readonly table: ConnTable = new ConnTable()) {}

  get size(): number {
    return this.table.taggedSize;
  }

  get(k: ConnKey): Entry | undefined {
    return this.table.tagOf(norm(k.localIp), k.localPort, norm(k.remoteIp), k.remotePort) as
      | Entry
      | undefined;
  }

  /**
   * The host table's entry that holds `k`'s entry (ConnTable.tagEntry): a transfer looks it up
   * once and reads the entry (`getIn`) and the placeholder (TcpLayer.freezeIn, forwardIn) from it.
   */
  at(k: ConnKey): TableEntry | undefined {
    return this.table.tagEntry(norm(k.localIp), k.localPort, norm(k.remoteIp), k.remotePort);
  }

  /** `get(k)`, read from `at` (see `at`) while it still holds it. */
  getIn(at: TableEntry, k: ConnKey): Entry | undefined {
    return this.table.tagIn(at, norm(k.localIp), k.localPort, norm(k.remoteIp), k.remotePort) as
      | Entry
      | undefined;
  }

  find(localIp: number, localPort: number, remoteIp: number, remotePort: number): Entry | undefined {
    return this.table.tagOf(norm(localIp), localPort, norm(remoteIp), remotePort) as Entry | undefined;
  }

  /** The entry of `conn`'s four-tuple, read from the table entry the connection is in when it can be. */
  ofConn(conn: TcpConnection): Entry | undefined {
    return this.table.tagOfConn(conn) as Entry | undefined;
  }

  /**
   * Record that `nic`, a NIC of this thread, runs `conn` now (the same object, handed over live):
   * the entry of its tuple is re-pointed, or the one it had before its last upload taken up again,
   * or made. Keyed by the connection's own key. Returns the entry.
   */
  setOf(conn: TcpConnection, nic: Nic, user: TcpUser | null): Entry {
    return this.table.setTagOf<Entry>(conn, (e) => {
      if (e === null) return { key: conn.key, nic, user, conn, handle: null, named: 0 };
      e.key = conn.key;
      e.nic = nic;
      e.user = user;
      e.conn = conn;
      e.handle = null;
      return e;
    });
  }

  /**
   * The entry `conn`'s tuple had before its last upload, let go and kept in the connection's own
   * table entry (ConnTable.lastTagOf): its next offload takes it up, and the item it keeps.
   */
  lastOf(conn: TcpConnection): Entry | undefined {
    return this.table.lastTagOf(conn) as Entry | undefined;
  }

  /**
   * Record that `nic` runs `k` now, with `handle`: the entry in `at` (a connection's own table
   * entry, or `at`'s, checked still its tuple's) re-pointed, or the one let go there at its last
   * upload taken up again (`lastOf`), with no search; else as `get` and `set` would. `item`: the
   * item of the transfer, kept by an entry made here for the connection's next one.
   */
  setIn(
    at: TableEntry,
    k: ConnKey,
    nic: Nic,
    user: TcpUser | null,
    handle: ConnectionHandle | null,
    item: Item,
  ): Entry {
    return this.table.setTagIn<Entry>(
      at,
      norm(k.localIp),
      k.localPort,
      norm(k.remoteIp),
      k.remotePort,
      (e, live) => {
        if (e === null) return { key: k, nic, user, conn: null, handle, item, named: 0 };
        if (!live) {
          // Taken up: nothing of its last life carries over but the object and its item.
          e.key = k;
          e.frozen = null;
          e.named = 0;
        }
        e.nic = nic;
        e.user = user;
        e.conn = null;
        e.handle = handle;
        return e;
      },
    );
  }

  /** `delete` of `conn`'s four-tuple. */
  deleteOf(conn: TcpConnection): boolean {
    return this.table.untagOf(conn);
  }

  /** Add `e`, or replace the entry of its four-tuple. */
  set(e: Entry): void {
    const k = e.key;
    this.table.setTag(norm(k.localIp), k.localPort, norm(k.remoteIp), k.remotePort, e);
  }

  delete(k: ConnKey): boolean {
    return this.table.untag(norm(k.localIp), k.localPort, norm(k.remoteIp), k.remotePort);
  }

  /**
   * Each entry with the host table's entry that holds it (see `at`): what a move of every
   * connection of a NIC reads, with no search of the table per connection. `fn` must not change
   * the table.
   */
  forEachAt(fn: (e: Entry, at: TableEntry) => void): void {
    this.table.forEachTag(fn as (tag: object, at: TableEntry) => void);
  }

  /** Every entry, as a snapshot (callers change the table while they walk). */
  values(): Entry[] {
    return this.table.tagged() as Entry[];
  }
}
