import { EventEmitter } from 'node:events';
import { InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import {
  type ConnKey,
  connKeyId,
  MANDATORY_UPLOAD_REASONS,
  type Nic,
  type NicIndications,
  type UploadReason,
} from '../nic/nic.ts';
import type { Stack } from '../stack/stack.ts';
import type { TableEntry } from '../stack/tcp/conn-table.ts';
import type { TcpConnection } from '../stack/tcp/tcp-connection.ts';
import type { TcpListener } from '../stack/tcp/tcp-listen.ts';
import { isOffloadable } from '../state/validate.ts';
import { formatIpv4, parseIpv4 } from '../wire/addr.ts';
import { AcceptAtNic } from './accept-at-nic.ts';
import { EntryTable } from './entry-table.ts';
import { HostUpdates } from './host-updates.ts';
import type { MovePhases } from './move-phases.ts';
import { makePolicy, type OffloadPolicy, PolicyScanner, placeByFreeCapacity } from './policy.ts';
import { rebuild } from './rebuild.ts';
import {
  type Entry,
  type Item,
  mergeReports as merge,
  type Owner,
  type TransferOptions,
  TransferProtocol,
  type TransferRefusal,
  type TransferReport,
} from './transfer.ts';

export type { SalvageRecord } from '../nic/nic.ts';
export { DEFAULT_OFFLOAD_POLICY, type OffloadPolicy } from './policy.ts';
export type { Owner, TransferOptions, TransferRefusal, TransferReport } from './transfer.ts';

export interface OffloadManagerOptions {
  stack: Stack;
  nics?: readonly Nic[];
  policy?: Partial<OffloadPolicy>;
}

/** The 'warning' event's argument: background work that failed, counted under BACKGROUND_COUNTERS. */
export interface BackgroundWarning {
  what: 'upload' | 'update' | 'scan';
  /** The NIC it concerned, or null (a policy scan spans NICs). */
  nic: string | null;
  error: Error;
}

/** The 'place-timeout' event's argument: a burst of accepts whose placement passed its bound. */
export interface PlaceTimeout {
  /** Connections handed to the application in the host. */
  connections: number;
  /** How long each waited (the policy's placeTimeoutMs). */
  waitedMs: number;
}

export const BACKGROUND_COUNTERS = {
  upload: 'offload.background.upload',
  update: 'offload.background.update',
  scan: 'offload.background.scan',
} as const;

/** Connections a transfer moves from one NIC: their keys, and the connections the host's records name. */
interface Batch {
  keys: ConnKey[];
  conns: (TcpConnection | null)[];
  /** Each key's host table entry, found with it (an upload's freeze and adopt read them there). */
  ats: TableEntry[];
}

interface NicHooks {
  upload: NicIndications['upload-requested'];
  closed: NicIndications['closed'];
  abort: NicIndications['abort'];
  dead: () => void;
}

/**
 * A verb's batch that names a connection twice, refused before anything changes: a transfer
 * freezes, releases and settles each connection once, and pairs what comes back by tuple.
 */
function namedTwice(verb: string, k: ConnKey): InvalidArgumentError {
  return new InvalidArgumentError(`${verb}: the batch names connection ${connKeyId(k)} twice`);
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
 * Runs the offload of connections between the host stack and its NICs, and NIC to NIC: the public
 * verbs, the table of offloaded connections and the NICs' indications. The transfer protocol is
 * `transfer.ts`, rebuilding from hard state `rebuild.ts`, the automatic policy `policy.ts`, and
 * host changes turned into updates `host-updates.ts`, listeners answered at the NICs
 * `accept-at-nic.ts`.
 *
 * A transfer: freeze the sockets (application calls wait) → release at the source (the host's
 * TcpLayer, or NIC terminate) leaving placeholders that hold arriving segments → hand over (objects
 * in this thread, the codec's bytes to another) → initiate
 * at the destination → forward the held segments → re-point the sockets → unfreeze. Whatever the
 * destination refuses goes back to the source (or to the host if the source will not take it), so
 * nothing is lost. Transfers run one at a time.
 *
 * While a connection is offloaded the host keeps a forwarding placeholder for its 4-tuple: frames
 * that reach the host (through whichever NIC received them) are passed to the owning NIC.
 *
 * Events: 'upload-requested' (nic, keys, reason, honoured), 'warning' (BackgroundWarning) and
 * 'place-timeout' (PlaceTimeout: accepts the host served because their placement took too long,
 * once per burst). It never emits 'error': failures of work no caller awaits become counters and
 * a 'warning'.
 */
export class OffloadManager extends EventEmitter {
  readonly stack: Stack;
  readonly policy: OffloadPolicy;
  private readonly nicList: Nic[] = [];
  private readonly entries: EntryTable;
  private readonly hooks = new Map<Nic, NicHooks>();
  private chain: Promise<unknown> = Promise.resolve();
  /**
   * Connections automatic offloads placed on each NIC and whose transfer there has not ended. The
   * policy's offloads run side by side: one placed while another is on its way must count that
   * one's, which a NIC's load shows only once installed. Without it, a placement made as the first
   * NIC had taken its half and the second not yet took the second for the emptier and gave it the
   * surplus (6/10 of 16 in test/offload/placement.test.ts; a bisect saw 441/559 of 1,000 on TAP).
   * A NIC's half counts twice from its install to its transfer's end (the settle, in this thread
   * for the host's connections).
   */
  private readonly placedOnWay = new Map<Nic, number>();
  /**
   * Diagnostics (serve's CHIMNEY_LAG_LOG): told of every offload from the host as its transfer
   * begins, the public verb's and the policy's alike, with how many connections it takes and its
   * end. Hooked here rather than by wrapping `offload`: the policy does not call the public verb,
   * and a trace that wrapped it recorded no transfer at all once the policy stopped (e8be04c).
   */
  onOffload: ((connections: number, done: Promise<unknown>) => void) | null = null;
  private readonly proto: TransferProtocol;
  private readonly scanner: PolicyScanner;
  private readonly updates: HostUpdates;
  private closed = false;
  /**
   * Answer host listeners' SYNs at the NICs (off by default; LocalNics and WorkerNics): a
   * connection is born on the member its SYN came in on, offloaded from its first segment, and
   * reaches the application with no transfer (`listenAtNics`). A SYN a NIC cannot take as the host
   * would (no path to the peer there yet, its half-open connections at the backlog, the host's
   * accept queue full, a cookie of the host's possibly answered, an IPv6 peer, a four-tuple
   * another owner holds) goes up to the host, whose SYN cookies and limits apply.
   */
  acceptAtNic = false;
  private readonly accepts: AcceptAtNic;
  /** Reused for per-frame owner lookups. */
  private readonly probeKey: ConnKey = { localIp: 0, localPort: 0, remoteIp: 0, remotePort: 0 };
  /**
   * The last batch a verb checked (`Entry.named`): a move, an upload or a recovery marks each
   * offloaded connection it names with it, so a second naming is found with no set per batch.
   */
  private batchNo = 0;
  /**
   * Which NICs automatic offloads may choose (a team excludes failed members); default: link up.
   * Explicit transfers to a named NIC are not filtered.
   */
  eligible: (nic: Nic) => boolean = (nic) => nic.linkUp;
  /**
   * Which NICs are failed (a team's members that are down or dead; default none): no transfer
   * installs or settles connections there, whoever asked and whenever it began. What one would
   * have put there goes back to its source, or into the host.
   */
  failed: (nic: Nic) => boolean = () => false;

  constructor(opts: OffloadManagerOptions) {
    super();
    if (!opts?.stack) throw new InvalidArgumentError('OffloadManager needs a stack');
    this.stack = opts.stack;
    this.entries = new EntryTable(this.stack.tcp.table);
    this.policy = makePolicy(opts.policy);
    this.proto = new TransferProtocol(this.stack, this.entries);
    this.proto.refuses = (nic) => this.failed(nic);
    this.accepts = new AcceptAtNic({
      stack: this.stack,
      entries: this.entries,
      proto: this.proto,
      nics: () => this.nicList,
      failed: (nic) => this.failed(nic),
      closed: () => this.closed,
    });
    for (const n of opts.nics ?? []) this.addNic(n);
    this.updates = new HostUpdates(
      this.stack,
      () => this.nicList,
      () => this.entries.size > 0,
      (e, nic) => this.backgroundFailure('update', e, nic),
    );
    this.scanner = new PolicyScanner(
      this.stack,
      this.policy,
      (ready) => this.policyOffload(ready),
      (e) => this.backgroundFailure('scan', e, null),
      (connections) => {
        const ev: PlaceTimeout = { connections, waitedMs: this.policy.placeTimeoutMs };
        this.emit('place-timeout', ev);
      },
      (on) => {
        for (const n of this.nicList) n.placing?.(on);
      },
    );
  }

  /**
   * Charge each transfer's real time to a simulated clock (`Clock.elapse`): in the simulator a
   * move then stalls its connections as long as it really took. Off by default, which keeps a
   * seeded run identical from one machine to the next.
   */
  get chargeWallTime(): boolean {
    return this.proto.chargeWallTime;
  }
  set chargeWallTime(on: boolean) {
    this.proto.chargeWallTime = on;
  }

  /**
   * Hand live connections between owners of this thread (the host, LocalNics) in one turn, the
   * same objects re-pointed (TransferProtocol.handover); on by default. Off: every transfer runs
   * the general protocol's steps (freeze, release, initiate, settle), as to a WorkerNic.
   */
  get liveHandover(): boolean {
    return this.proto.liveHandover;
  }
  set liveHandover(on: boolean) {
    this.proto.liveHandover = on;
  }

  /** The real-time source `chargeWallTime` reads (default `performance.now`; tests inject one). */
  set workClock(now: () => number) {
    this.proto.workNow = now;
  }

  /**
   * Run `fn`, work of this thread that a failover costs outside any transfer (prodding the host
   * stack's own connections), charged to the clock as a transfer is (see chargeWallTime).
   */
  charged<T>(fn: () => T): T {
    return this.proto.charged(fn);
  }

  get nics(): readonly Nic[] {
    return this.nicList;
  }

  /**
   * Resolves once the offload policy has had its say on an accepted connection (offloaded, refused
   * or gone; at once unless the policy is 'immediate'): see PolicyScanner.placed.
   */
  placed(conn: TcpConnection): Promise<void> {
    return this.scanner.placed(conn);
  }

  /** Accepted connections waiting for the policy to place them (PolicyScanner.placed). */
  get placing(): number {
    return this.scanner.placing;
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
      abort: (key) => this.nicClosed(nic, key),
      dead: () => this.accepts.nicDied(nic),
    };
    nic.on('upload-requested', hooks.upload);
    nic.on('closed', hooks.closed);
    nic.on('abort', hooks.abort);
    nic.on('dead', hooks.dead);
    this.proto.join(nic);
    this.hooks.set(nic, hooks);
    this.nicList.push(nic);
    this.accepts.nicAdded(nic);
  }

  /**
   * Forget a NIC that runs nothing the host knows of (a team member's dead NIC, once its failover
   * and salvage are done and a restart put a new NIC in its place): its indications, its
   * forwarder, its SYN-answering and its place in the list go, so a member that dies every few
   * minutes does not add one NIC to every later scan. False, and nothing changed, while a
   * connection is still recorded there (its owner is this NIC until moved, uploaded or recovered).
   */
  removeNic(nic: Nic): boolean {
    const hooks = this.hooks.get(nic);
    if (hooks === undefined) return true;
    for (const e of this.entries.values()) if (e.nic === nic) return false;
    nic.off('upload-requested', hooks.upload);
    nic.off('closed', hooks.closed);
    nic.off('abort', hooks.abort);
    nic.off('dead', hooks.dead);
    this.hooks.delete(nic);
    this.accepts.nicRemoved(nic);
    this.proto.leave(nic);
    this.placedOnWay.delete(nic);
    this.nicList.splice(this.nicList.indexOf(nic), 1);
    return true;
  }

  /**
   * With `acceptAtNic`, every NIC that can (`Nic.listen`) answers the SYNs of host listener `l`
   * (see acceptAtNic); returns what stops them (TcpServer calls it as the listener closes), or
   * null when none does.
   */
  listenAtNics(l: TcpListener): (() => void) | null {
    if (!this.acceptAtNic || this.closed) return null;
    return this.accepts.listen(l);
  }

  ownerOf(key: ConnKey): Owner | null {
    const e = this.entries.get(key);
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
    return this.entries.find(localIp, localPort, remoteIp, remotePort)?.nic ?? null;
  }

  /** Keys of the connections a NIC runs (as far as the host knows). */
  keysOn(nic: Nic): ConnKey[] {
    const out: ConnKey[] = [];
    for (const e of this.entries.values()) if (e.nic === nic) out.push(e.key);
    return out;
  }

  /**
   * Offload host connections (all offloadable ones, or those given) to `nic`, or spread over the
   * NICs whose link is up by free capacity. A list that names an offloadable connection twice is
   * refused whole (InvalidArgumentError), nothing moved.
   */
  offload(
    conns: readonly (TcpConnection | ConnKey)[] | 'all',
    nic?: Nic,
    opts: TransferOptions = {},
  ): Promise<TransferReport> {
    return this.serial(() => this.doOffload(conns, nic), opts);
  }

  /**
   * Take connections back into the host: the named ones, every one on a NIC, or all. A list that
   * names an offloaded connection twice is refused whole (InvalidArgumentError), nothing moved.
   */
  upload(what: readonly ConnKey[] | Nic | 'all', opts: TransferOptions = {}): Promise<TransferReport> {
    return this.serial(() => this.doUpload(what, true), opts);
  }

  /** `upload`; `refuseTwice` false: a connection named again is skipped (a NIC's indication). */
  private async doUpload(
    what: readonly ConnKey[] | Nic | 'all',
    refuseTwice: boolean,
  ): Promise<TransferReport> {
    const byNic = new Map<Nic, Batch>();
    const refused: TransferRefusal[] = [];
    // Each connection's host table entry is found here once, as a move's are: the freeze reads its
    // entry and placeholder from it, and the adopt its address-in-use check, instead of three
    // searches of the table by key per connection.
    const add = (e: Entry, at: TableEntry): void => {
      let b = byNic.get(e.nic);
      if (b === undefined) {
        b = { keys: [], conns: [], ats: [] };
        byNic.set(e.nic, b);
      }
      b.keys.push(e.key);
      b.conns.push(e.conn);
      b.ats.push(at);
    };
    if (what === 'all') this.entries.forEachAt(add);
    else if (Array.isArray(what)) {
      const batch = ++this.batchNo;
      for (const k of what as readonly ConnKey[]) {
        const at = isKey(k) ? this.entries.at(k) : undefined;
        const e = at === undefined ? undefined : this.entries.getIn(at, k);
        if (e) {
          if (e.named === batch) {
            if (refuseTwice) throw namedTwice('upload', k);
            continue;
          }
          e.named = batch;
          add(e, at!);
        } else if (isKey(k)) refused.push({ key: k, status: 'failure', reason: 'not offloaded' });
        else throw new InvalidArgumentError('upload: not a connection key');
      }
    } else if (this.hooks.has(what as Nic)) {
      this.entries.forEachAt((e, at) => {
        if (e.nic === what) add(e, at);
      });
    } else throw new InvalidArgumentError('upload: unknown NIC');
    const reports = await Promise.all(
      [...byNic].map(([n, b]) => this.proto.run(b.keys, n, 'host', b.conns, b.ats)),
    );
    return merge(reports, refused);
  }

  /**
   * Move offloaded connections from one NIC to another. A list that names a connection of `from`
   * twice is refused whole (InvalidArgumentError), nothing moved.
   */
  move(
    keys: readonly ConnKey[] | 'all',
    from: Nic,
    to: Nic,
    opts: TransferOptions = {},
  ): Promise<TransferReport> {
    if (!this.hooks.has(from) || !this.hooks.has(to)) throw new InvalidArgumentError('move: unknown NIC');
    if (from === to) throw new InvalidArgumentError('move: source and destination are the same NIC');
    return this.serial(async () => {
      if (keys === 'all') {
        // Every connection of the NIC, read in one walk of the entries with the table entry of each,
        // into lists made once at their largest size and cut to what was found: grown a push at a
        // time, each list of 10,000 left a trail of outgrown copies about twice its own size, the
        // largest part of a warm move's garbage on this thread. The connection objects only a
        // source in this thread has (a hand-over's hint) are not listed for one on another.
        const most = this.entries.size;
        const withConns = from.inProcess;
        const found = new Array<ConnKey>(most);
        const foundConns = withConns ? new Array<TcpConnection | null>(most) : undefined;
        const foundAts = new Array<TableEntry>(most);
        let n = 0;
        this.entries.forEachAt((e, at) => {
          if (e.nic !== from) return;
          found[n] = e.key;
          if (foundConns !== undefined) foundConns[n] = e.conn;
          foundAts[n++] = at;
        });
        found.length = n;
        if (foundConns !== undefined) foundConns.length = n;
        foundAts.length = n;
        return this.proto.run(found, from, to, foundConns, foundAts);
      }
      const refused: TransferRefusal[] = [];
      // Made at their largest and cut to what was found, as for 'all' above. Each connection's
      // host table entry is found here once: the transfer reads its tag and placeholder from it
      // at the freeze and the settle instead of searching the table again.
      const list = new Array<ConnKey>(keys.length);
      const conns = new Array<TcpConnection | null>(keys.length);
      const ats = new Array<TableEntry>(keys.length);
      const batch = ++this.batchNo;
      let n = 0;
      for (const k of keys) {
        if (!isKey(k)) throw new InvalidArgumentError('move: not a connection key');
        const at = this.entries.at(k);
        const e = at === undefined ? undefined : this.entries.getIn(at, k);
        if (e?.nic === from) {
          if (e.named === batch) throw namedTwice('move', k);
          e.named = batch;
          list[n] = e.key;
          conns[n] = e.conn;
          ats[n++] = at!;
        } else refused.push({ key: k, status: 'failure', reason: 'not on the source NIC' });
      }
      list.length = n;
      conns.length = n;
      ats.length = n;
      return merge([await this.proto.run(list, from, to, conns, ats)], refused);
    }, opts);
  }

  /**
   * A NIC died (or handed back a transfer that does not validate): rebuild the named connections
   * (default: every one the host believes it ran) from the hard state it left (`salvage()`), at
   * `to` or, with null, in the host; every rebuilt connection is prodded. A connection with no
   * usable hard state is lost (its user hears ECONNABORTED).
   */
  recover(
    from: Nic,
    to: Nic | 'host',
    keys?: readonly ConnKey[],
    /** A failover's recorder (TransferOptions.phases). */
    phases?: MovePhases,
  ): Promise<TransferReport> {
    if (!this.hooks.has(from)) throw new InvalidArgumentError('recover: unknown NIC');
    if (to !== 'host' && !this.hooks.has(to)) throw new InvalidArgumentError('recover: unknown NIC');
    return this.serial(
      async () => {
        const list: ConnKey[] = [];
        const refused: TransferRefusal[] = [];
        // Each connection's host table entry, found here once as `move` does: the freeze and the
        // settle read the tag and the placeholder from it (three searches of the host's table
        // per connection before, in a crash's charged rebuild of every connection).
        const ats: TableEntry[] = [];
        const batch = ++this.batchNo;
        for (const k of keys ?? this.keysOn(from)) {
          if (!isKey(k)) throw new InvalidArgumentError('recover: not a connection key');
          const at = this.entries.at(k);
          const e = at === undefined ? undefined : this.entries.getIn(at, k);
          if (e?.nic === from) {
            if (e.named === batch) throw namedTwice('recover', k);
            e.named = batch;
            list.push(e.key);
            ats.push(at!);
          } else refused.push({ key: k, status: 'failure', reason: 'not on the source NIC' });
        }
        const report: TransferReport = { moved: [], refused };
        if (list.length === 0) return report;
        const items: Item[] = this.proto.freeze(list, from, ats);
        phases?.mark('frozen');
        await rebuild(this.proto, items, from, to, report);
        return report;
      },
      { prod: true, rollbackToHost: true, phases },
    );
  }

  /**
   * An ICMP redirect (or a route change) for `dst`: its path now leaves through `gateway`. The host
   * re-points the path; every NIC re-points its copy to the new neighbor in one update.
   */
  async redirect(dst: string | number, gateway: string | number): Promise<void> {
    const d = typeof dst === 'string' ? parseIpv4(dst) : dst;
    const gw = typeof gateway === 'string' ? gateway : formatIpv4(gateway);
    this.stack.addRoute(`${formatIpv4(d)}/32`, gw);
    await this.chain;
  }

  /** Stop the policy timer and forget the NICs' indications (connections stay where they are). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.scanner.stop();
    this.updates.stop();
    this.accepts.close();
    for (const [nic, h] of this.hooks) {
      nic.off('upload-requested', h.upload);
      nic.off('closed', h.closed);
      nic.off('abort', h.abort);
      nic.off('dead', h.dead);
    }
  }

  // ---- transfers -----------------------------------------------------------------------------------

  /**
   * The chain as it was before the last run of `serial`, when that run was the policy's offload
   * (null otherwise): the policy's next offload starts when that one did, beside it.
   */
  private besidePolicy: Promise<unknown> | null = null;

  private serial<T>(fn: () => Promise<T>, opts: TransferOptions = {}, policy = false): Promise<T> {
    if (this.closed) return Promise.reject(new InvalidStateError('offload manager is closed'));
    const go = (): Promise<T> => {
      // Queued behind a transfer still running at close(): it would move connections for a
      // manager that no longer hears their NICs' indications.
      if (this.closed) return Promise.reject(new InvalidStateError('offload manager is closed'));
      this.proto.opts = opts;
      opts.phases?.mark('begun');
      return this.proto.metered(fn);
    };
    // The policy's offloads go side by side (PolicyScanner bounds how many, PLACE_PIPELINE): each
    // takes its own connections, from the host, with the same options; any other transfer still
    // waits for all of them, and they for it.
    const before = policy && this.besidePolicy !== null ? this.besidePolicy : this.chain;
    const run = before.then(go, go);
    const ran = run.catch(() => undefined);
    this.chain = before === this.chain ? ran : Promise.all([this.chain, ran]);
    this.besidePolicy = policy ? before : null;
    return run;
  }

  /** The policy scanner's offload: spread over the eligible NICs, beside its other offloads. */
  private policyOffload(ready: TcpConnection[]): Promise<TransferReport> {
    // The scanner's batch names each connection once (`PolicyScanner.inBatch`): not checked again.
    return this.serial(() => this.doOffload(ready, undefined, false), {}, true);
  }

  /** `refuseTwice`: a list that names a connection twice is refused whole (see `offload`). */
  private async doOffload(
    conns: readonly (TcpConnection | ConnKey)[] | 'all',
    nic?: Nic,
    refuseTwice = conns !== 'all',
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
            key: conn.key,
            status: 'ineligible',
            reason: 'connection state stays in the host',
          });
        continue;
      }
      cands.push(conn);
    }
    if (refuseTwice) this.refuseTwiceInHost(cands);
    if (nic !== undefined && !this.hooks.has(nic)) throw new InvalidArgumentError('offload: unknown NIC');
    let groups: Map<Nic, TcpConnection[]>;
    if (nic !== undefined) groups = new Map([[nic, cands]]);
    else {
      const placed = placeByFreeCapacity(
        cands,
        this.nicList.filter((n) => this.eligible(n)),
        (n) => this.placedOnWay.get(n) ?? 0,
      );
      groups = placed.groups;
      for (const [n, cs] of groups) this.placedOnWay.set(n, (this.placedOnWay.get(n) ?? 0) + cs.length);
      for (const c of placed.unplaced)
        refused.push({ key: c.key, status: 'no-resources', reason: 'no NIC with free capacity' });
    }
    // Each connection's own key (made once per connection), and the connection itself: the
    // transfer need not look it up again.
    const running = Promise.all(
      [...groups].map(([n, cs]) =>
        this.proto
          .run(
            cs.map((c) => c.key),
            'host',
            n,
            cs,
          )
          .finally(() => {
            if (nic !== undefined) return;
            const left = (this.placedOnWay.get(n) ?? 0) - cs.length;
            if (left > 0) this.placedOnWay.set(n, left);
            else this.placedOnWay.delete(n);
          }),
      ),
    );
    try {
      this.onOffload?.(cands.length, running);
    } catch {
      // A diagnostic's fault: the transfers have begun and must still be awaited and settled.
      this.stack.counters.inc('offload.hook-errors');
    }
    const reports = await running;
    // The accepted connections a NIC holds now leave the host's claims (AcceptAtNic.held).
    this.accepts.settled();
    return merge(reports, refused);
  }

  /**
   * Throws when `conns` holds a connection twice, before anything has changed. Let through, the
   * second naming's release of a connection released by the first threw in the middle of the
   * batch, and the connections released before it were lost (no owner, their sockets silent).
   */
  private refuseTwiceInHost(conns: readonly TcpConnection[]): void {
    // Marked on the connection, as a move marks the entry (`Entry.named`): a set of the batch's
    // tuples, filled and emptied, is two hash operations per connection in a verb that aims at
    // 10 ms for 10,000 (whole offload p50 7.4-8.9 ms with the set, 4.8-8.3 marked, 3 pairs).
    const batch = ++this.batchNo;
    for (const c of conns) {
      if (c.namedIn === batch) throw namedTwice('offload', c.key);
      c.namedIn = batch;
    }
  }

  // ---- indications and host changes -----------------------------------------------------------------

  private uploadRequested(nic: Nic, keys: ConnKey[], reason: UploadReason): void {
    if (this.closed) return;
    const honour = MANDATORY_UPLOAD_REASONS.has(reason) || this.policy.advisory.includes(reason);
    this.emit('upload-requested', nic, keys, reason, honour);
    if (!honour) return;
    // A NIC's list is taken as far as it goes: a connection it names twice goes up once.
    this.serial(() => this.doUpload(keys, false)).catch((e) => this.backgroundFailure('upload', e, nic));
  }

  /**
   * A connection ended on `nic` ('closed'), or was aborted there ('abort': a RST, then 'closed'
   * too; or its state found corrupt and dropped, with nothing after, which left the host's entry
   * and its placeholder forwarding to a NIC that no longer had it): the host forgets it.
   */
  private nicClosed(nic: Nic, key: ConnKey): void {
    const e = this.entries.get(key);
    if (e === undefined) this.accepts.closedAt(nic, key);
    if (e?.nic !== nic) return;
    this.entries.delete(key);
    this.stack.tcp.dropFrozen(key.localIp, key.localPort, key.remoteIp, key.remotePort);
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
