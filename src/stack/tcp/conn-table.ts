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
}

/**
 * The four-tuple table of one TCP layer, for connections and placeholders alike: demultiplexing
 * looks a segment up once and finds whichever holds its tuple (gVisor's demuxer keeps endpoints
 * and their transfer state in one table for the same reason).
 */
export class ConnTable {
  /** remoteIp * 65536 + remotePort → (localIp * 65536 + localPort → entry). */
  private readonly map = new Map<number, Map<number, TableEntry>>();
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
    return this.map.get(remoteIp * 65536 + remotePort)?.get(localIp * 65536 + localPort);
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
    this.prune(c.localIp, c.localPort, c.remoteIp, c.remotePort, e);
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
    this.prune(localIp, localPort, remoteIp, remotePort, e);
    return ph;
  }

  /** Every connection, as a snapshot: callers close connections while they walk. */
  connections(): TcpConnection[] {
    const out: TcpConnection[] = [];
    for (const inner of this.map.values()) for (const e of inner.values()) if (e.conn) out.push(e.conn);
    return out;
  }

  private ensure(localIp: number, localPort: number, remoteIp: number, remotePort: number): TableEntry {
    const k1 = remoteIp * 65536 + remotePort;
    let inner = this.map.get(k1);
    if (!inner) {
      inner = new Map();
      this.map.set(k1, inner);
    }
    const k2 = localIp * 65536 + localPort;
    let e = inner.get(k2);
    if (!e) {
      e = { conn: null, held: null };
      inner.set(k2, e);
    }
    return e;
  }

  private prune(
    localIp: number,
    localPort: number,
    remoteIp: number,
    remotePort: number,
    e: TableEntry,
  ): void {
    if (e.conn !== null || e.held !== null) return;
    const k1 = remoteIp * 65536 + remotePort;
    const inner = this.map.get(k1);
    if (!inner) return;
    inner.delete(localIp * 65536 + localPort);
    if (inner.size === 0) this.map.delete(k1);
  }
}
