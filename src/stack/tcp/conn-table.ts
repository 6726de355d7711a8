import { TWO_32 } from '../address-table.ts';
import type { TcpConnection } from './tcp-connection.ts';

/**
 * What is left of a connection in the table after its state went elsewhere: it holds arriving
 * segments (as IPv4 packets) while the connection is between owners, or forwards them to the owner
 * once the move is done, instead of answering them with a RST.
 */
export interface Placeholder {
  queue: Uint8Array[];
  forward: ((packet: Uint8Array) => void) | null;
}

/**
 * One four-tuple: the connection that runs it here, a placeholder for it, or both (an adopted
 * connection keeps the placeholder until the caller has replayed what it held).
 */
export interface TableEntry {
  conn: TcpConnection | null;
  held: Placeholder | null;
  readonly localIp: number;
  readonly localPort: number;
  readonly remoteIp: number;
  readonly remotePort: number;
  /** The next entry whose tuple hashes alike. */
  next: TableEntry | null;
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
 * The four-tuple table of one TCP layer, for connections and placeholders alike: demultiplexing
 * looks a segment up once and finds whichever holds its tuple (gVisor's demuxer keeps endpoints
 * and their transfer state in one table for the same reason).
 */
export class ConnTable {
  /** hashOf(tuple) → the entries of that hash, chained. */
  private readonly map = new Map<number, TableEntry>();
  private conns = 0;
  private holds = 0;

  /** Connections in the table. */
  get size(): number {
    return this.conns;
  }

  /** Placeholders in the table. */
  get heldSize(): number {
    return this.holds;
  }

  find(localIp: number, localPort: number, remoteIp: number, remotePort: number): TableEntry | undefined {
    let e = this.map.get(hashOf(localIp, localPort, remoteIp, remotePort));
    while (e !== undefined) {
      if (sameTuple(e, localIp, localPort, remoteIp, remotePort)) return e;
      e = e.next ?? undefined;
    }
    return undefined;
  }

  lookup(
    localIp: number,
    localPort: number,
    remoteIp: number,
    remotePort: number,
  ): TcpConnection | undefined {
    return this.find(localIp, localPort, remoteIp, remotePort)?.conn ?? undefined;
  }

  placeholder(
    localIp: number,
    localPort: number,
    remoteIp: number,
    remotePort: number,
  ): Placeholder | undefined {
    if (this.holds === 0) return undefined;
    return this.find(localIp, localPort, remoteIp, remotePort)?.held ?? undefined;
  }

  /** Run `conn` here; its tuple must not hold another connection. */
  add(conn: TcpConnection): void {
    const c = conn.state.const;
    const e = this.ensure(c.localIp, c.localPort, c.remoteIp, c.remotePort);
    e.conn = conn;
    this.conns++;
  }

  /** Take `conn` out; false if its tuple holds no connection or another one. */
  remove(conn: TcpConnection): boolean {
    const c = conn.state.const;
    const e = this.find(c.localIp, c.localPort, c.remoteIp, c.remotePort);
    if (e === undefined || e.conn !== conn) return false;
    e.conn = null;
    this.conns--;
    this.prune(e);
    return true;
  }

  /** The placeholder of this tuple, made if there is none. */
  hold(localIp: number, localPort: number, remoteIp: number, remotePort: number): Placeholder {
    const e = this.ensure(localIp, localPort, remoteIp, remotePort);
    if (e.held === null) {
      e.held = { queue: [], forward: null };
      this.holds++;
    }
    return e.held;
  }

  /** Forget the placeholder of this tuple; returns it (with whatever it still held). */
  unhold(localIp: number, localPort: number, remoteIp: number, remotePort: number): Placeholder | undefined {
    const e = this.find(localIp, localPort, remoteIp, remotePort);
    if (e === undefined || e.held === null) return undefined;
    const ph = e.held;
    e.held = null;
    this.holds--;
    this.prune(e);
    return ph;
  }

  /** Every connection, as a snapshot: callers close connections while they walk. */
  connections(): TcpConnection[] {
    const out: TcpConnection[] = [];
    for (const head of this.map.values())
      for (let e: TableEntry | null = head; e !== null; e = e.next) if (e.conn) out.push(e.conn);
    return out;
  }

  private ensure(localIp: number, localPort: number, remoteIp: number, remotePort: number): TableEntry {
    const found = this.find(localIp, localPort, remoteIp, remotePort);
    if (found !== undefined) return found;
    const e: TableEntry = { conn: null, held: null, localIp, localPort, remoteIp, remotePort, next: null };
    const h = hashOf(localIp, localPort, remoteIp, remotePort);
    const head = this.map.get(h);
    if (head === undefined) this.map.set(h, e);
    else {
      e.next = head.next;
      head.next = e;
    }
    return e;
  }

  /** Take an entry that holds nothing any more out of its chain. */
  private prune(e: TableEntry): void {
    if (e.conn !== null || e.held !== null) return;
    const h = hashOf(e.localIp, e.localPort, e.remoteIp, e.remotePort);
    const head = this.map.get(h);
    if (head === e) {
      if (e.next === null) this.map.delete(h);
      else this.map.set(h, e.next);
      return;
    }
    for (let p = head ?? null; p !== null; p = p.next) {
      if (p.next === e) {
        p.next = e.next;
        return;
      }
    }
  }
}
