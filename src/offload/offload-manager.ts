import { EventEmitter } from 'node:events';
import type { Timer } from '../core/clock.ts';
import { ConnectionError, InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import { type HardState, rebuildTcpState } from '../nic/hard-state.ts';
import {
  type ConnKey,
  connKeyId,
  MANDATORY_UPLOAD_REASONS,
  type Nic,
  type NicIndications,
  type UploadReason,
} from '../nic/nic.ts';
import { TcpSocket } from '../socket/tcp-socket.ts';
import type { Stack } from '../stack/stack.ts';
import type { TcpConnection } from '../stack/tcp/tcp-connection.ts';
import type { TcpUser } from '../stack/tcp/tcp-types.ts';
import type { NeighborState } from '../state/neighbor-state.ts';
import { buildTrees, flattenTrees } from '../state/offload-tree.ts';
import type { PathState } from '../state/path-state.ts';
import { decodeBatch, encodeBatch } from '../state/state-codec.ts';
import type { TcpState } from '../state/tcp-state.ts';
import { DEFAULT_TCP_CACHED, type TcpCached } from '../state/tcp-state.ts';
import { isOffloadable, validateTcpState } from '../state/validate.ts';
import { parseIpv4 } from '../wire/addr.ts';

export interface OffloadPolicy {
  /**
   * 'manual': only explicit offload() calls; 'immediate': every offloadable connection as soon as
   * a scan sees it; 'after': once it has lived `minAgeMs` or moved `minBytes` (whichever first).
   */
  mode: 'manual' | 'immediate' | 'after';
  minAgeMs: number;
  minBytes: number;
  /** How often the policy looks for candidates (ms). */
  scanIntervalMs: number;
  /** Advisory upload reasons honoured (mandatory ones always are). */
  advisory: readonly UploadReason[];
}

export const DEFAULT_OFFLOAD_POLICY: Readonly<OffloadPolicy> = {
  mode: 'manual',
  minAgeMs: 1000,
  minBytes: 1 << 20,
  scanIntervalMs: 100,
  advisory: [],
};

export interface OffloadManagerOptions {
  stack: Stack;
  nics?: readonly Nic[];
  policy?: Partial<OffloadPolicy>;
}

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
}

/**
 * What a dead (or lying) NIC leaves of one connection: its hard-state record and buffers (design
 * section 6). WorkerNic and LocalNic both hand these out from `salvage()`.
 */
export interface SalvageRecord {
  key: ConnKey;
  hard: HardState | null;
  sendRing: TcpState['delegated']['sendBuffer'];
  recvRing: TcpState['delegated']['recvBuffer'];
  cached?: TcpCached;
}

/** A NIC that can hand over what is left of its connections. */
interface Salvageable {
  salvage(keys?: readonly ConnKey[]): SalvageRecord[];
}

function canSalvage(n: Nic): n is Nic & Salvageable {
  return typeof (n as Partial<Salvageable>).salvage === 'function';
}

export interface TransferReport {
  /** Connections that now run at the destination. */
  moved: ConnKey[];
  /** Connections that stayed with (or went back to) their source, and why. */
  refused: TransferRefusal[];
}

/** The 'warning' event's argument: background work that failed, counted under BACKGROUND_COUNTERS. */
export interface BackgroundWarning {
  what: 'upload' | 'update' | 'scan';
  /** The NIC it concerned, or null (a policy scan spans NICs). */
  nic: string | null;
  error: Error;
}

export const BACKGROUND_COUNTERS = {
  upload: 'offload.background.upload',
  update: 'offload.background.update',
  scan: 'offload.background.scan',
} as const;

interface Entry {
  key: ConnKey;
  nic: Nic;
  user: TcpUser | null;
}

/** One connection in a transfer. */
interface Item {
  key: ConnKey;
  id: string;
  user: TcpUser | null;
  socket: TcpSocket | null;
}

interface NicHooks {
  upload: NicIndications['upload-requested'];
  closed: NicIndications['closed'];
}

function keyOfState(s: TcpState): ConnKey {
  const c = s.const;
  return { localIp: c.localIp, localPort: c.localPort, remoteIp: c.remoteIp, remotePort: c.remotePort };
}

function keyOfConn(c: TcpConnection): ConnKey {
  return { localIp: c.localIp, localPort: c.localPort, remoteIp: c.remoteIp, remotePort: c.remotePort };
}

function isKey(x: unknown): x is ConnKey {
  const k = x as ConnKey;
  return (
    typeof x === 'object' &&
    x !== null &&
    typeof k.localIp === 'number' &&
    typeof k.localPort === 'number' &&
    typeof k.remoteIp === 'number' &&
    typeof k.remotePort === 'number'
  );
}

/**
 * Runs the offload of connections between the host stack and its NICs, and NIC to NIC.
 *
 * A transfer: freeze the sockets (application calls wait) → release at the source (the host's
 * TcpLayer, or NIC terminate) leaving placeholders that hold arriving segments → encode → initiate
 * at the destination → forward the held segments → re-point the sockets → unfreeze. Whatever the
 * destination refuses goes back to the source (or to the host if the source will not take it), so
 * nothing is lost. Transfers run one at a time.
 *
 * While a connection is offloaded the host keeps a forwarding placeholder for its 4-tuple: frames
 * that reach the host (through whichever NIC received them) are passed to the owning NIC.
 *
 * Events: 'upload-requested' (nic, keys, reason, honoured) and 'warning' (BackgroundWarning). It
 * never emits 'error': failures of work no caller awaits become counters and a 'warning'.
 */
export class OffloadManager extends EventEmitter {
  readonly stack: Stack;
  readonly policy: OffloadPolicy;
  private readonly nicList: Nic[] = [];
  private readonly entries = new Map<string, Entry>();
  private readonly hooks = new Map<Nic, NicHooks>();
  private readonly firstSeen = new Map<TcpConnection, number>();
  private chain: Promise<unknown> = Promise.resolve();
  private readonly scanTimer: Timer | null;
  private closed = false;
  /** Options of the transfer running now (transfers run one at a time). */
  private topts: TransferOptions = {};
  /** Reused for per-frame owner lookups. */
  private readonly probeKey: ConnKey = { localIp: 0, localPort: 0, remoteIp: 0, remotePort: 0 };
  /**
   * Which NICs automatic offloads may choose (a team excludes failed members); default: link up.
   * Explicit transfers to a named NIC are not filtered.
   */
  eligible: (nic: Nic) => boolean = (nic) => nic.linkUp;

  constructor(opts: OffloadManagerOptions) {
    super();
    if (!opts?.stack) throw new InvalidArgumentError('OffloadManager needs a stack');
    this.stack = opts.stack;
    this.policy = { ...DEFAULT_OFFLOAD_POLICY, ...opts.policy };
    const p = this.policy;
    if (!['manual', 'immediate', 'after'].includes(p.mode))
      throw new InvalidArgumentError(`unknown offload policy mode ${p.mode}`);
    for (const k of ['minAgeMs', 'minBytes'] as const) {
      if (!Number.isFinite(p[k]) || p[k] < 0) throw new InvalidArgumentError(`policy ${k} must be >= 0`);
    }
    if (!(p.scanIntervalMs > 0)) throw new InvalidArgumentError('policy scanIntervalMs must be > 0');
    for (const n of opts.nics ?? []) this.addNic(n);
    this.stack.neighbors.onChange((nb) => this.neighborChanged(nb));
    this.stack.ip.onChange((path) => this.pathChanged(path));
    if (p.mode !== 'manual') {
      this.scanTimer = this.stack.clock.createTimer(() => this.scan()).unref();
      this.scanTimer.arm(p.scanIntervalMs);
    } else {
      this.scanTimer = null;
    }
  }

  get nics(): readonly Nic[] {
    return this.nicList;
  }

  /** Connections offloaded now. */
  get offloadedCount(): number {
    return this.entries.size;
  }

  addNic(nic: Nic): void {
    if (this.hooks.has(nic)) return;
    const hooks: NicHooks = {
      upload: (keys, reason) => this.uploadRequested(nic, keys, reason),
      closed: (key) => this.nicClosed(nic, key),
    };
    nic.on('upload-requested', hooks.upload);
    nic.on('closed', hooks.closed);
    this.hooks.set(nic, hooks);
    this.nicList.push(nic);
  }

  ownerOf(key: ConnKey): Owner | null {
    const e = this.entries.get(connKeyId(key));
    if (e) return e.nic;
    return this.stack.tcp.lookup(key.localIp, key.localPort, key.remoteIp, key.remotePort) ? 'host' : null;
  }

  /** `ownerOf` by the 4-tuple's numbers, without building a key: the NIC that runs it, or null. */
  nicOf(localIp: number, localPort: number, remoteIp: number, remotePort: number): Nic | null {
    const k = this.probeKey;
    k.localIp = localIp;
    k.localPort = localPort;
    k.remoteIp = remoteIp;
    k.remotePort = remotePort;
    return this.entries.get(connKeyId(k))?.nic ?? null;
  }

  /** Keys of the connections a NIC runs (as far as the host knows). */
  keysOn(nic: Nic): ConnKey[] {
    const out: ConnKey[] = [];
    for (const e of this.entries.values()) if (e.nic === nic) out.push(e.key);
    return out;
  }

  /**
   * Offload host connections (all offloadable ones, or those given) to `nic`, or spread over the
   * NICs whose link is up by free capacity.
   */
  offload(
    conns: readonly (TcpConnection | ConnKey)[] | 'all',
    nic?: Nic,
    opts: TransferOptions = {},
  ): Promise<TransferReport> {
    return this.serial(() => this.doOffload(conns, nic), opts);
  }

  /** Take connections back into the host: the named ones, every one on a NIC, or all. */
  upload(what: readonly ConnKey[] | Nic | 'all', opts: TransferOptions = {}): Promise<TransferReport> {
    return this.serial(async () => {
      const byNic = new Map<Nic, ConnKey[]>();
      const refused: TransferRefusal[] = [];
      const add = (e: Entry): void => {
        const l = byNic.get(e.nic);
        if (l) l.push(e.key);
        else byNic.set(e.nic, [e.key]);
      };
      if (what === 'all') for (const e of this.entries.values()) add(e);
      else if (Array.isArray(what)) {
        for (const k of what as readonly ConnKey[]) {
          const e = isKey(k) ? this.entries.get(connKeyId(k)) : undefined;
          if (e) add(e);
          else if (isKey(k)) refused.push({ key: k, status: 'failure', reason: 'not offloaded' });
          else throw new InvalidArgumentError('upload: not a connection key');
        }
      } else if (this.hooks.has(what as Nic)) {
        for (const e of this.entries.values()) if (e.nic === what) add(e);
      } else throw new InvalidArgumentError('upload: unknown NIC');
      const reports = await Promise.all([...byNic].map(([n, keys]) => this.transfer(keys, n, 'host')));
      return merge(reports, refused);
    }, opts);
  }

  /** Move offloaded connections from one NIC to another. */
  move(
    keys: readonly ConnKey[] | 'all',
    from: Nic,
    to: Nic,
    opts: TransferOptions = {},
  ): Promise<TransferReport> {
    if (!this.hooks.has(from) || !this.hooks.has(to)) throw new InvalidArgumentError('move: unknown NIC');
    if (from === to) throw new InvalidArgumentError('move: source and destination are the same NIC');
    return this.serial(async () => {
      const refused: TransferRefusal[] = [];
      const list: ConnKey[] = [];
      const src = keys === 'all' ? this.keysOn(from) : keys;
      for (const k of src) {
        if (!isKey(k)) throw new InvalidArgumentError('move: not a connection key');
        const e = this.entries.get(connKeyId(k));
        if (e?.nic === from) list.push(e.key);
        else refused.push({ key: k, status: 'failure', reason: 'not on the source NIC' });
      }
      return merge([await this.transfer(list, from, to)], refused);
    }, opts);
  }

  /**
   * A NIC died (or handed back a transfer that does not validate): rebuild the named connections
   * (default: every one the host believes it ran) from the hard state it left (`salvage()`), at
   * `to` or, with null, in the host; every rebuilt connection is prodded. A connection with no
   * usable hard state is lost (its user hears ECONNABORTED).
   */
  recover(from: Nic, to: Nic | 'host', keys?: readonly ConnKey[]): Promise<TransferReport> {
    if (!this.hooks.has(from)) throw new InvalidArgumentError('recover: unknown NIC');
    if (to !== 'host' && !this.hooks.has(to)) throw new InvalidArgumentError('recover: unknown NIC');
    return this.serial(
      async () => {
        const list: ConnKey[] = [];
        const refused: TransferRefusal[] = [];
        for (const k of keys ?? this.keysOn(from)) {
          if (!isKey(k)) throw new InvalidArgumentError('recover: not a connection key');
          const e = this.entries.get(connKeyId(k));
          if (e?.nic === from) list.push(e.key);
          else refused.push({ key: k, status: 'failure', reason: 'not on the source NIC' });
        }
        const report: TransferReport = { moved: [], refused };
        if (list.length === 0) return report;
        const items: Item[] = [];
        const tcp = this.stack.tcp;
        for (const key of list) {
          const id = connKeyId(key);
          const user = this.entries.get(id)?.user ?? null;
          tcp.freeze(key.localIp, key.localPort, key.remoteIp, key.remotePort);
          const socket = user instanceof TcpSocket && !user.moving ? user : null;
          socket?._beginMove();
          items.push({ key, id, user, socket });
        }
        await this.rebuild(items, from, to === 'host' ? 'host' : to, report);
        return report;
      },
      { prod: true, rollbackToHost: true },
    );
  }

  /**
   * An ICMP redirect (or a route change) for `dst`: its path now leaves through `gateway`. The host
   * re-points the path; every NIC re-points its copy to the new neighbor in one update.
   */
  async redirect(dst: string | number, gateway: string | number): Promise<void> {
    const d = typeof dst === 'string' ? parseIpv4(dst) : dst;
    const gw = typeof gateway === 'string' ? gateway : formatIp(gateway);
    this.stack.addRoute(`${formatIp(d)}/32`, gw);
    await this.chain;
  }

  /** Stop the policy timer and forget the NICs' indications (connections stay where they are). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.scanTimer?.disarm();
    for (const [nic, h] of this.hooks) {
      nic.off('upload-requested', h.upload);
      nic.off('closed', h.closed);
    }
  }

  // ---- transfers -----------------------------------------------------------------------------------

  private serial<T>(fn: () => Promise<T>, opts: TransferOptions = {}): Promise<T> {
    if (this.closed) return Promise.reject(new InvalidStateError('offload manager is closed'));
    const go = (): Promise<T> => {
      this.topts = opts;
      return fn();
    };
    const run = this.chain.then(go, go);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async doOffload(
    conns: readonly (TcpConnection | ConnKey)[] | 'all',
    nic?: Nic,
  ): Promise<TransferReport> {
    const tcp = this.stack.tcp;
    const refused: TransferRefusal[] = [];
    const cands: TcpConnection[] = [];
    const list = conns === 'all' ? [...tcp.connections()] : conns;
    for (const x of list) {
      let conn: TcpConnection | undefined;
      if (isKey(x)) conn = tcp.lookup(x.localIp, x.localPort, x.remoteIp, x.remotePort);
      else if (x && typeof x === 'object' && 'state' in x) conn = x;
      else throw new InvalidArgumentError('offload: not a connection or key');
      if (conn === undefined || !conn.linked) {
        if (isKey(x)) refused.push({ key: x, status: 'closed', reason: 'not running in the host' });
        continue;
      }
      if (!isOffloadable(conn.state) || conn.listener !== null) {
        if (conns !== 'all')
          refused.push({
            key: keyOfConn(conn),
            status: 'ineligible',
            reason: 'connection state stays in the host',
          });
        continue;
      }
      cands.push(conn);
    }
    if (nic !== undefined && !this.hooks.has(nic)) throw new InvalidArgumentError('offload: unknown NIC');
    const groups = new Map<Nic, ConnKey[]>();
    if (nic !== undefined) groups.set(nic, cands.map(keyOfConn));
    else {
      const free = new Map<Nic, number>();
      for (const n of this.nicList) if (this.eligible(n)) free.set(n, n.capacity - n.load);
      for (const c of cands) {
        let best: Nic | null = null;
        let room = 0;
        for (const [n, f] of free) {
          if (f > room) {
            best = n;
            room = f;
          }
        }
        if (best === null) {
          refused.push({ key: keyOfConn(c), status: 'no-resources', reason: 'no NIC with free capacity' });
          continue;
        }
        free.set(best, room - 1);
        const g = groups.get(best);
        if (g) g.push(keyOfConn(c));
        else groups.set(best, [keyOfConn(c)]);
      }
    }
    const reports = await Promise.all([...groups].map(([n, keys]) => this.transfer(keys, 'host', n)));
    return merge(reports, refused);
  }

  /**
   * Move `keys` from `src` to `dst`. Every connection ends up running exactly once: at `dst`, or
   * back at `src`, or (if even that fails) in the host.
   */
  private async transfer(keys: readonly ConnKey[], src: Owner, dst: Owner): Promise<TransferReport> {
    const report: TransferReport = { moved: [], refused: [] };
    if (keys.length === 0) return report;
    const tcp = this.stack.tcp;
    const items: Item[] = [];
    // 1. Freeze: application calls wait in the sockets; the host holds segments for the 4-tuples.
    for (const key of keys) {
      const id = connKeyId(key);
      let user: TcpUser | null;
      if (src === 'host') {
        const conn = tcp.lookup(key.localIp, key.localPort, key.remoteIp, key.remotePort);
        if (!conn) continue;
        user = conn.user;
      } else {
        user = this.entries.get(id)?.user ?? null;
        tcp.freeze(key.localIp, key.localPort, key.remoteIp, key.remotePort);
      }
      const socket = user instanceof TcpSocket && !user.moving ? user : null;
      socket?._beginMove();
      items.push({ key, id, user, socket });
    }
    // 2. Release at the source.
    let batch: Uint8Array;
    try {
      batch =
        src === 'host' ? this.releaseFromHost(items, report) : await src.terminate(items.map((i) => i.key));
    } catch (e) {
      // Nothing left the source (host release does not throw once begun; a terminate that failed
      // outright moved nothing): resume everything where it was.
      for (const it of items) this.resumeAt(it, src);
      throw e;
    }
    const now = this.stack.clock.now();
    let states: TcpState[];
    try {
      states = flattenTrees(decodeBatch(batch, now));
    } catch (e) {
      // The source handed back something we cannot read. A NIC that keeps hard state the host can
      // see still lets us rebuild them; otherwise those connections are gone.
      if (src !== 'host' && canSalvage(src)) {
        this.stack.counters.inc('offload.terminate.invalid');
        await this.rebuild(items, src, dst, report);
        return report;
      }
      for (const it of items) this.lost(it, `source returned an unreadable transfer: ${String(e)}`, report);
      return report;
    }
    const byId = new Map<string, Item>();
    for (const it of items) byId.set(it.id, it);
    const present = new Set<string>();
    for (const s of states) present.add(connKeyId(keyOfState(s)));
    for (const it of items) {
      if (!present.has(it.id) && src !== 'host') {
        // Closed at the source meanwhile (or its TIME_WAIT ended there): nothing to move.
        this.forget(it);
        report.refused.push({
          key: it.key,
          status: 'closed',
          reason: 'closed at the source during the move',
        });
      }
    }
    if (states.length === 0) return report;
    // 3. Install at the destination.
    const { ok, failed } = await this.install(dst, batch, states);
    await this.settle(ok, byId, src, dst);
    for (const s of ok) report.moved.push(keyOfState(s));
    if (failed.length === 0) return report;
    // 4. Roll back what the destination refused: to the source, else to the host.
    for (const f of failed) {
      report.refused.push({ key: keyOfState(f.state), status: f.status, reason: f.reason });
    }
    let left = failed.map((f) => f.state);
    let reason = failed[0]!.reason;
    const backs =
      src === 'host' || this.topts.rollbackToHost ? (['host'] as const) : ([src, 'host'] as const);
    for (const back of backs) {
      if (left.length === 0) break;
      const rb = await this.install(back, encodeBatch(buildTrees(left), now, { skipValidation: true }), left);
      await this.settle(rb.ok, byId, src, back);
      left = rb.failed.map((f) => f.state);
      if (rb.failed.length > 0) reason = rb.failed[0]!.reason;
    }
    for (const s of left) this.lost(byId.get(connKeyId(keyOfState(s)))!, reason, report);
    return report;
  }

  /** Release host connections and encode those that validate; the others resume in place. */
  private releaseFromHost(items: Item[], report: TransferReport): Uint8Array {
    const tcp = this.stack.tcp;
    const states: TcpState[] = [];
    for (const it of items) {
      const k = it.key;
      const conn = tcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort)!;
      const s = tcp.release(conn);
      try {
        validateTcpState(s);
      } catch (e) {
        this.readoptHost(it, s);
        report.refused.push({ key: k, status: 'failure', reason: (e as Error).message });
        continue;
      }
      states.push(s);
    }
    return encodeBatch(buildTrees(states), this.stack.clock.now(), { skipValidation: true });
  }

  /** Install at `dst`; which states run there now and which were refused. */
  private async install(
    dst: Owner,
    batch: Uint8Array,
    states: readonly TcpState[],
  ): Promise<{
    ok: TcpState[];
    failed: { state: TcpState; status: 'failure' | 'no-resources'; reason: string }[];
  }> {
    const ok: TcpState[] = [];
    const failed: { state: TcpState; status: 'failure' | 'no-resources'; reason: string }[] = [];
    if (dst === 'host') {
      for (const s of states) ok.push(s);
      return { ok, failed };
    }
    let res: Awaited<ReturnType<Nic['initiate']>>;
    try {
      res = await dst.initiate(batch, this.topts.prod === true ? { prod: true } : undefined);
    } catch (e) {
      for (const s of states) failed.push({ state: s, status: 'failure', reason: String(e) });
      return { ok, failed };
    }
    const status = new Map<string, { status: string; reason?: string }>();
    for (const c of res.conns) status.set(connKeyId(c.key), c);
    for (const s of states) {
      const r = status.get(connKeyId(keyOfState(s)));
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
   * source and in the host, re-point the sockets, unfreeze.
   */
  private async settle(
    states: readonly TcpState[],
    byId: Map<string, Item>,
    src: Owner,
    dst: Owner,
  ): Promise<void> {
    if (states.length === 0) return;
    const tcp = this.stack.tcp;
    const items = states.map((s) => byId.get(connKeyId(keyOfState(s)))!);
    const keys = items.map((it) => it.key);
    let held: Uint8Array[] = [];
    if (src !== 'host' && src !== dst) {
      held = await src.takeQueued(keys);
      await src.dropFrozen(keys);
    }
    if (dst === 'host') {
      const conns = states.map((s, i) => this.adoptHost(items[i]!, s));
      if (held.length > 0) this.stack.counters.inc('offload.forwarded', held.length);
      for (const p of held) tcp.inputPacket(p);
      for (let i = 0; i < items.length; i++) {
        const it = items[i]!;
        const k = it.key;
        for (const p of tcp.takeQueued(k.localIp, k.localPort, k.remoteIp, k.remotePort)) tcp.inputPacket(p);
        tcp.dropFrozen(k.localIp, k.localPort, k.remoteIp, k.remotePort);
        this.entries.delete(it.id);
        it.socket?._completeMove(conns[i]!);
      }
      return;
    }
    if (held.length > 0) {
      this.stack.counters.inc('offload.forwarded', held.length);
      dst.inject(held);
    }
    const inject = (p: Uint8Array): void => dst.inject([p]);
    for (const it of items) {
      const k = it.key;
      tcp.forwardTo(k.localIp, k.localPort, k.remoteIp, k.remotePort, inject);
      const handle = dst.attach(k, it.user);
      this.entries.set(it.id, { key: k, nic: dst, user: it.user });
      if (it.socket) {
        if (handle) it.socket._completeMove(handle);
        else it.socket._abortMove();
      }
    }
  }

  private adoptHost(it: Item, s: TcpState): TcpConnection {
    const path = this.stack.pathTo(s.const.remoteIp, s.const.localIp);
    if (path) s.path = path;
    return this.stack.tcp.adopt(s, it.user, { prod: this.topts.prod === true });
  }

  /**
   * Rebuild `items` (frozen in the host, sockets frozen) from what `from` left, and install them at
   * `dst`. Segments held at `from` (if it is alive) and in the host are replayed at the new owner.
   */
  private async rebuild(items: Item[], from: Nic, dst: Owner, report: TransferReport): Promise<void> {
    if (!canSalvage(from)) {
      for (const it of items) this.lost(it, `NIC ${from.id} keeps no hard state`, report);
      return;
    }
    const now = this.stack.clock.now();
    const recs = new Map<string, SalvageRecord>();
    const tcp = this.stack.tcp;
    const asked = new Set(items.map((i) => i.id));
    for (const r of from.salvage(items.map((i) => i.key))) {
      const id = connKeyId(r.key);
      recs.set(id, r);
      // A NIC that salvages wholesale (WorkerNic) hands over the rest too: they cannot stay there.
      const e = this.entries.get(id);
      if (asked.has(id) || e?.nic !== from) continue;
      const k = e.key;
      tcp.freeze(k.localIp, k.localPort, k.remoteIp, k.remotePort);
      const socket = e.user instanceof TcpSocket && !e.user.moving ? e.user : null;
      socket?._beginMove();
      items.push({ key: k, id, user: e.user, socket });
    }
    const states: TcpState[] = [];
    const byId = new Map<string, Item>();
    for (const it of items) {
      const r = recs.get(it.id);
      const path = this.stack.pathTo(it.key.remoteIp, it.key.localIp);
      if (r === undefined || r.hard === null || path === null) {
        this.lost(it, r === undefined ? 'no hard state left' : 'hard state never written', report);
        continue;
      }
      try {
        states.push(
          rebuildTcpState(r.hard, r.sendRing, r.recvRing, r.cached ?? DEFAULT_TCP_CACHED, path, now),
        );
        byId.set(it.id, it);
      } catch (e) {
        this.lost(it, `hard state does not make a connection: ${String(e)}`, report);
      }
    }
    this.stack.counters.inc('offload.rebuilt', states.length);
    // Whatever the dead NIC still held goes back to the host's placeholders, to be replayed.
    let held: Uint8Array[] = [];
    const keys = [...byId.values()].map((i) => i.key);
    try {
      held = await from.takeQueued(keys);
      await from.dropFrozen(keys);
    } catch {
      // Gone for good: the peer resends what it held.
    }
    for (const p of held) tcp.inputPacket(p);
    if (states.length === 0) return;
    let ok = states;
    let failed: { state: TcpState; status: 'failure' | 'no-resources'; reason: string }[] = [];
    if (dst !== 'host') {
      const r = await this.install(
        dst,
        encodeBatch(buildTrees(states), now, { skipValidation: true }),
        states,
      );
      ok = r.ok;
      failed = r.failed;
    }
    await this.settle(ok, byId, 'host', dst);
    for (const s of ok) report.moved.push(keyOfState(s));
    if (failed.length === 0) return;
    const left = failed.map((f) => f.state);
    for (const f of failed)
      report.refused.push({ key: keyOfState(f.state), status: f.status, reason: f.reason });
    await this.settle(left, byId, 'host', 'host');
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
      const nic = src;
      this.stack.tcp.forwardTo(k.localIp, k.localPort, k.remoteIp, k.remotePort, (p) => nic.inject([p]));
    }
    it.socket?._abortMove();
  }

  private forget(it: Item): void {
    const k = it.key;
    this.entries.delete(it.id);
    this.stack.tcp.dropFrozen(k.localIp, k.localPort, k.remoteIp, k.remotePort);
    it.socket?._abortMove();
  }

  private lost(it: Item, reason: string, report: TransferReport): void {
    this.forget(it);
    report.refused.push({ key: it.key, status: 'failure', reason });
    const u = it.user;
    if (u) {
      const err = new ConnectionError('ECONNABORTED', `connection lost in transfer: ${reason}`);
      this.stack.clock.defer(() => u.onClosed(err));
    }
  }

  // ---- indications and host changes -----------------------------------------------------------------

  private uploadRequested(nic: Nic, keys: ConnKey[], reason: UploadReason): void {
    if (this.closed) return;
    const honour = MANDATORY_UPLOAD_REASONS.has(reason) || this.policy.advisory.includes(reason);
    this.emit('upload-requested', nic, keys, reason, honour);
    if (!honour) return;
    this.upload(keys).catch((e) => this.backgroundFailure('upload', e, nic));
  }

  private nicClosed(nic: Nic, key: ConnKey): void {
    const id = connKeyId(key);
    const e = this.entries.get(id);
    if (e?.nic !== nic) return;
    this.entries.delete(id);
    this.stack.tcp.dropFrozen(key.localIp, key.localPort, key.remoteIp, key.remotePort);
  }

  private neighborChanged(nb: NeighborState): void {
    if (this.closed || this.entries.size === 0) return;
    const ip = nb.const.ip;
    for (const nic of this.nicList) {
      if (nic.load === 0) continue;
      nic
        .update({ kind: 'neighbor', neighborIp: ip, dstMac: nb.cached.dstMac })
        .catch((e) => this.backgroundFailure('update', e, nic));
    }
  }

  private pathChanged(p: PathState): void {
    if (this.closed || this.entries.size === 0) return;
    const nb = p.neighbor;
    for (const nic of this.nicList) {
      if (nic.load === 0) continue;
      nic
        .update({
          kind: 'path',
          remoteIp: p.const.remoteIp,
          localIp: p.const.localIp,
          mtu: p.cached.mtu,
          ttl: p.cached.ttl,
          tos: p.cached.tos,
          neighbor: {
            ip: nb.const.ip,
            srcMac: nb.const.srcMac,
            vlanId: nb.const.vlanId,
            dstMac: nb.cached.dstMac,
          },
        })
        .catch((e) => this.backgroundFailure('update', e, nic));
    }
  }

  private scan(): void {
    if (this.closed) return;
    const p = this.policy;
    const now = this.stack.clock.now();
    const ready: TcpConnection[] = [];
    const seen = new Set<TcpConnection>();
    for (const conn of this.stack.tcp.connections()) {
      if (!isOffloadable(conn.state) || conn.listener !== null) continue;
      seen.add(conn);
      let first = this.firstSeen.get(conn);
      if (first === undefined) {
        first = now;
        this.firstSeen.set(conn, now);
      }
      const bytes = conn.stats.bytesIn + conn.stats.bytesOut;
      if (p.mode === 'immediate' || now - first >= p.minAgeMs || bytes >= p.minBytes) ready.push(conn);
    }
    for (const c of this.firstSeen.keys()) if (!seen.has(c)) this.firstSeen.delete(c);
    const next = (): void => {
      if (!this.closed) this.scanTimer?.arm(p.scanIntervalMs);
    };
    if (ready.length === 0) {
      next();
      return;
    }
    this.offload(ready).then(next, (e) => {
      this.backgroundFailure('scan', e, null);
      next();
    });
  }

  /**
   * Work nobody awaits (an update to a NIC that has just died, an upload a NIC asked for, a policy
   * offload) has no caller to hand its error to, and an 'error' event without a listener would throw
   * inside a promise callback and take the process down. So it is counted and reported as 'warning'.
   */
  private backgroundFailure(what: BackgroundWarning['what'], e: unknown, nic: Nic | null): void {
    this.stack.counters.inc(BACKGROUND_COUNTERS[what]);
    const error = e instanceof Error ? e : new Error(String(e));
    const w: BackgroundWarning = { what, nic: nic?.id ?? null, error };
    this.emit('warning', w);
  }
}

function merge(reports: readonly TransferReport[], refused: TransferRefusal[]): TransferReport {
  const out: TransferReport = { moved: [], refused };
  for (const r of reports) {
    out.moved.push(...r.moved);
    out.refused.push(...r.refused);
  }
  return out;
}

function formatIp(ip: number): string {
  return `${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`;
}
