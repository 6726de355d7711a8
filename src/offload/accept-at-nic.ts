/*
 * Host listeners answered at the NICs (OffloadManager.acceptAtNic): a connection is born on the
 * member its SYN came in on, offloaded from its first segment, and reaches the application with
 * no transfer. Only the Nic contract is used (`listen`, `holds`): how a target answers SYNs, and
 * how the host can tell what it holds, are the target's own.
 */
import type { ConnKey, Nic, NicListenSpec } from '../nic/nic.ts';
import { TupleMap } from '../nic/tuple-map.ts';
import { OwnerTable } from '../nic/worker/owner-table.ts';
import { ANY6 } from '../stack/address-table.ts';
import type { Stack } from '../stack/stack.ts';
import type { TcpConnection } from '../stack/tcp/tcp-connection.ts';
import { Listener, type TcpListener } from '../stack/tcp/tcp-listen.ts';
import type { ConnectionHandle } from '../stack/tcp/tcp-types.ts';
import { TcpStateId } from '../state/tcp-state.ts';
import type { EntryTable } from './entry-table.ts';
import type { Entry, TransferProtocol } from './transfer.ts';

/** Words of a listener's gate (NicListenSpec.gate): [0] full, [1] half-open in all, then one a NIC. */
const GATE_FIRST_NIC = 3;
/** NICs a listener's gate has words for: those past it pass every SYN up (the host's rules). */
const GATE_NICS = 64;

/** What accept-at-NIC needs of the OffloadManager that owns it. */
export interface AcceptAtNicHost {
  readonly stack: Stack;
  readonly entries: EntryTable;
  readonly proto: TransferProtocol;
  /** The manager's NICs, in the order it added them (a NIC's gate word is its place). */
  nics(): readonly Nic[];
  /** A NIC where nothing may be installed now (OffloadManager.failed). */
  failed(nic: Nic): boolean;
  /** The manager closed: nothing is accepted any more. */
  closed(): boolean;
}

type BaseSpec = Omit<NicListenSpec, 'word'>;

/**
 * A host listener answered at the NICs: the spec each NIC was given, what stops it at each, and
 * the host's claims (NicListenSpec.claims) with how many of them are established connections.
 */
interface AtNics {
  spec: BaseSpec;
  stops: Map<Nic, () => void>;
  claims: OwnerTable;
  /** Established host connections listed in `claims` (at most the backlog). */
  held: number;
}

/** An established connection of the host's listed in its listener's claims until a NIC holds it. */
interface Held {
  conn: TcpConnection;
  at: AtNics;
}

/** How often (ms of the stack's clock) at most a listener whose held claims are full looks for gone ones. */
const HELD_SWEEP_MS = 1000;

/** A half-open connection a NIC in the host's thread made, that NIC, and the listener it is for. */
interface HalfOpen {
  conn: TcpConnection;
  nic: Nic;
  at: AtNics;
}

export class AcceptAtNic {
  /** Host listeners answered at the NICs. */
  private readonly listens = new Map<Listener, AtNics>();
  /** Half-open connections born on a NIC: the host forwards their tuple there until accepted or closed. */
  private readonly halfOpen = new TupleMap<HalfOpen>();
  /**
   * The host's established connections of listeners answered at the NICs that no NIC holds yet
   * (waiting in the accept queue or for their placement): their tuples stay in the claims, so a
   * worker leaves a SYN the peer sent again to the host instead of answering it with its own ISS
   * (a needless SYN-ACK, which the peer's challenge ACK makes it give way to: NicEngine.givesWay).
   */
  private readonly held = new TupleMap<Held>();
  /** When the held claims were last looked through for connections gone from the host. */
  private sweptAt = Number.NEGATIVE_INFINITY;
  /** Each NIC's word in the gates, past GATE_FIRST_NIC (wordOf). */
  private readonly words = new Map<Nic, number>();

  constructor(private readonly host: AcceptAtNicHost) {}

  /**
   * Every NIC that can answers the SYNs of host listener `l`; returns what stops them (TcpServer
   * calls it as the listener closes), or null when none does.
   */
  listen(l: TcpListener): (() => void) | null {
    if (!(l instanceof Listener)) return null;
    const ip = l.ip;
    const gate = new Int32Array(new SharedArrayBuffer(4 * (GATE_FIRST_NIC + GATE_NICS)));
    l.gate = gate;
    Atomics.store(gate, 0, l.acceptFull ? 1 : 0);
    // The host's own half-open connections (at most the backlog) and the established ones no NIC
    // holds yet (at most the backlog again, `hold`), listed for NICs on other threads
    // (NicListenSpec.claims): a half-open one always finds room, whatever waits for placement.
    const claims = new OwnerTable(OwnerTable.create(2 * l.backlog + 1));
    const spec: BaseSpec = {
      ip,
      port: l.port,
      v6Only: l.v6Only,
      backlog: l.backlog,
      cached: l.cached,
      gate,
      claims: claims.sab,
    };
    // One IPv6 address: a NIC takes its handle only with the address it names (NicListenSpec),
    // copied, since the handle's slot is reused once the listener lets it go.
    if (ip > ANY6) spec.ipBytes = this.host.stack.addrs.bytes(ip).slice();
    const nl: AtNics = { spec, stops: new Map(), claims, held: 0 };
    l.onHalfOpen = (conn, open) => {
      const k = conn.key;
      if (open) {
        // The tuple's connection before, gone since and not yet swept: the claim is this one's now.
        const h = this.held.get(k);
        if (h !== undefined) {
          this.held.delete(k);
          h.at.held--;
        }
        return claims.add(k.localIp, k.localPort, k.remoteIp, k.remotePort);
      }
      // Established (the handshake's end tells after the state changed): listed on until a NIC
      // holds it or it is gone (`settled`).
      if (conn.state.delegated.state !== TcpStateId.SYN_RECEIVED && this.hold(conn, nl)) return true;
      claims.remove(k.localIp, k.localPort, k.remoteIp, k.remotePort);
      return true;
    };
    this.listens.set(l, nl);
    for (const nic of this.host.nics()) this.listenAt(nic, nl);
    l.heldElsewhere = (li, lp, ri, rp) => {
      for (const nic of this.host.nics()) if (nic.holds?.(li, lp, ri, rp) === true) return true;
      return false;
    };
    return () => {
      if (!this.listens.delete(l)) return;
      l.onHalfOpen = null;
      l.heldElsewhere = null;
      Atomics.store(gate, 0, 1);
      this.stop(nl);
    };
  }

  /**
   * Keep established `conn` in `nl`'s claims (false: its held claims are at the backlog, even
   * after those gone are dropped; the NICs' give-way then covers a SYN of it sent again).
   */
  private hold(conn: TcpConnection, nl: AtNics): boolean {
    if (nl.held >= nl.spec.backlog) {
      const now = this.host.stack.clock.now();
      if (now - this.sweptAt < HELD_SWEEP_MS) return false;
      this.settled();
      if (nl.held >= nl.spec.backlog) return false;
    }
    this.held.set(conn.key, { conn, at: nl });
    nl.held++;
    return true;
  }

  /**
   * Drop the claims of the held connections a NIC holds now or that are gone from the host (closed,
   * or refused at the accept): the manager calls it as its offloads end; `hold` as well, at most
   * every HELD_SWEEP_MS, when a listener's held claims are full. One still frozen for a transfer,
   * or back in the host after one, stays listed.
   */
  settled(): void {
    this.sweptAt = this.host.stack.clock.now();
    if (this.held.size === 0) return;
    const { stack, entries } = this.host;
    for (const h of [...this.held.values()]) {
      const k = h.conn.key;
      const { localIp: li, localPort: lp, remoteIp: ri, remotePort: rp } = k;
      const gone = !h.conn.linked && !stack.tcp.isFrozen(li, lp, ri, rp);
      if (!gone && entries.find(li, lp, ri, rp) === undefined) continue;
      this.held.delete(k);
      h.at.held--;
      h.at.claims.remove(li, lp, ri, rp);
    }
  }

  /** A NIC joined the manager: it answers the listeners' SYNs too. */
  nicAdded(nic: Nic): void {
    this.wordOf(nic);
    for (const nl of this.listens.values()) this.listenAt(nic, nl);
  }

  /**
   * A NIC the manager forgot (a dead member a restart replaced): it answers no SYN, the host
   * forgets the half-open connections it made, and its gate word is free for the next NIC.
   */
  nicRemoved(nic: Nic): void {
    this.nicDied(nic);
    for (const nl of this.listens.values()) {
      nl.stops.get(nic)?.();
      nl.stops.delete(nic);
    }
    this.words.delete(nic);
  }

  /**
   * Each NIC's word in the listeners' gates, the lowest free one, kept for the NIC's life in the
   * manager: a position in the NIC list would shift as a dead NIC leaves it, and a NIC's count
   * would then be read from, and cleared in, another's word. -1: every word is taken.
   */
  private wordOf(nic: Nic): number {
    const had = this.words.get(nic);
    if (had !== undefined) return had;
    const taken = new Set(this.words.values());
    let w = 0;
    while (taken.has(w)) w++;
    if (w >= GATE_NICS) return -1;
    this.words.set(nic, w);
    return w;
  }

  /**
   * A NIC died with half-open connections born there: the host forgets their tuples (a SYN sent
   * again finds the listener, not a placeholder forwarding to the dead), and their count against
   * the listener's backlog goes (a dead NIC decrements nothing).
   */
  nicDied(nic: Nic): void {
    const at = this.words.get(nic) ?? -1;
    if (at >= 0) {
      for (const nl of this.listens.values()) {
        const g = nl.spec.gate;
        Atomics.sub(g, 1, Atomics.exchange(g, GATE_FIRST_NIC + at, 0));
      }
    }
    if (this.halfOpen.size === 0) return;
    for (const h of [...this.halfOpen.values()]) if (h.nic === nic) this.forget(h.conn.key);
  }

  /**
   * `key` ended on `nic` and is no offloaded connection of the host's: if it was a half-open
   * connection born there, ended before its handshake did, the host forgets its tuple.
   */
  closedAt(nic: Nic, key: ConnKey): void {
    if (this.halfOpen.get(key)?.nic === nic) this.forget(key);
  }

  /** The manager closes: every NIC stops answering. */
  close(): void {
    for (const nl of this.listens.values()) this.stop(nl);
    this.listens.clear();
  }

  /**
   * Every NIC stops answering `nl`'s SYNs, and the host forgets the half-open connections they
   * made for it: a stop ends them there (Nic.listen), but their 'closed' comes a turn later, when
   * a closing manager hears its NICs no more, and their tuples stayed forwarded to the NIC.
   */
  private stop(nl: AtNics): void {
    for (const stop of nl.stops.values()) stop();
    nl.stops.clear();
    if (nl.held > 0) {
      for (const h of [...this.held.values()]) if (h.at === nl) this.held.delete(h.conn.key);
      nl.held = 0;
    }
    if (this.halfOpen.size === 0) return;
    for (const h of [...this.halfOpen.values()]) if (h.at === nl) this.forget(h.conn.key);
  }

  private forget(k: ConnKey): void {
    this.halfOpen.delete(k);
    this.host.stack.tcp.dropFrozen(k.localIp, k.localPort, k.remoteIp, k.remotePort);
  }

  private listenAt(nic: Nic, nl: AtNics): void {
    const at = this.wordOf(nic);
    if (at < 0 || nic.death !== null || nic.listen === undefined) return;
    const spec: NicListenSpec = { ...nl.spec, word: GATE_FIRST_NIC + at };
    const { stack, entries, proto } = this.host;
    const stop = nic.listen(spec, {
      halfOpen: (conn) => {
        // Its handshake's last ACK may come in through another member: the host sends it here.
        stack.tcp.forwardOf(conn, proto.injector(nic));
        this.halfOpen.set(conn.key, { conn, nic, at: nl });
      },
      accepted: (conn) => this.bornAt(nic, conn),
      born: (h) => this.bornOnThread(nic, h),
      taken: (li, lp, ri, rp) =>
        stack.tcp.lookup(li, lp, ri, rp) !== undefined ||
        stack.tcp.isFrozen(li, lp, ri, rp) ||
        this.halfOpen.lookup(li, lp, ri, rp) !== undefined ||
        entries.find(li, lp, ri, rp) !== undefined,
    });
    if (stop !== null) nl.stops.set(nic, stop);
  }

  /**
   * A connection's handshake ended on `nic` (in this thread), which answered its SYN: it is
   * recorded there as any offloaded connection (so moves, uploads and failover take it as they
   * take a placed one) and handed to the host listener's accept (the server makes its socket over
   * it, and emits it). False: refused (the listener closed, the server full, the NIC failed
   * meanwhile): the NIC resets it.
   */
  private bornAt(nic: Nic, conn: TcpConnection): boolean {
    const { stack, entries } = this.host;
    const k = conn.key;
    this.halfOpen.delete(k);
    const l = stack.tcp.listeners.find(k.localIp, k.localPort);
    let ok = !this.host.closed() && l !== null && !l.closed && !this.host.failed(nic);
    if (ok) {
      entries.setOf(conn, nic, null);
      try {
        ok = l!.accept(conn) !== false;
      } catch {
        ok = false;
      }
      if (ok) entries.setOf(conn, nic, conn.user);
      else entries.deleteOf(conn);
    }
    if (!ok) {
      stack.tcp.dropFrozen(k.localIp, k.localPort, k.remoteIp, k.remotePort);
      return false;
    }
    stack.counters.inc('offload.accept-at-nic');
    return true;
  }

  /**
   * `bornAt` for a connection a NIC on another thread accepted: its handle (over the shared memory
   * that NIC allocated, which the host now holds) is recorded and handed to the listener's
   * `acceptBorn`, and the host forwards its tuple there. False: refused (the NIC resets it).
   */
  private bornOnThread(nic: Nic, h: ConnectionHandle): boolean {
    const { stack, entries, proto } = this.host;
    const k: ConnKey = {
      localIp: h.localIp,
      localPort: h.localPort,
      remoteIp: h.remoteIp,
      remotePort: h.remotePort,
    };
    // An IPv6 address the host's table no longer holds (its last holder let it go after the
    // worker's path took the SYN) unpacks as 0: no key of the host's would name this connection.
    if (k.localIp === 0 || k.remoteIp === 0) {
      stack.counters.inc('offload.accept-at-nic.unknown-address');
      return false;
    }
    const l = stack.tcp.listeners.find(k.localIp, k.localPort);
    if (this.host.closed() || l === null || l.closed || l.acceptBorn === null || this.host.failed(nic))
      return false;
    const e = { key: k, nic, user: null, conn: null } as Entry;
    entries.set(e);
    let ok: boolean;
    try {
      ok = l.acceptBorn(h) !== false;
    } catch {
      ok = false;
    }
    if (!ok) {
      entries.delete(k);
      return false;
    }
    e.user = h.user;
    stack.tcp.forwardTo(k.localIp, k.localPort, k.remoteIp, k.remotePort, proto.injector(nic));
    stack.counters.inc('offload.accept-at-nic');
    return true;
  }
}
