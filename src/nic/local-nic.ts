import type { Clock } from '../core/clock.ts';
import type { Counters } from '../core/counters.ts';
import { ConnectionError, InvalidArgumentError } from '../core/errors.ts';
import type { Random } from '../core/random.ts';
import type { Link } from '../link/link.ts';
import { SteeredLink } from '../link/source-steer.ts';
import { TcpEvent } from '../stack/tcp/tcp-events.ts';
import type { ConnectionHandle, TcpUser } from '../stack/tcp/tcp-types.ts';
import type { ByteRing } from '../state/byte-ring.ts';
import { flattenTrees } from '../state/offload-tree.ts';
import type { AddressBook } from '../state/path-state.ts';
import type { TcpCached, TcpState } from '../state/tcp-state.ts';
import { type HardState, hardStateOf } from './hard-state.ts';
import { HostNic } from './host-nic.ts';
import {
  type ClosedConnection,
  type ConnKey,
  type InitiateOptions,
  type InitiateResult,
  isTreeTransfer,
  LazySalvage,
  type NicCounterSnapshot,
  type NicListenHooks,
  type NicListenSpec,
  type SalvageRecord,
  type TerminateOptions,
  type Transfer,
} from './nic.ts';
import { NicEngine } from './nic-engine.ts';
import { answerAddresses, SameThreadTransport } from './transport.ts';
import { TupleMap } from './tuple-map.ts';
import type { WorkerReply } from './worker/protocol.ts';
import { packKeys, unpackInstalled } from './worker/transfer-wire.ts';

export interface LocalNicOptions {
  id: string;
  /** The link this NIC owns (a switch port in the simulator). */
  link: Link;
  clock: Clock;
  random: Random;
  /** The host's ISN secret (StackOptions.isnSecret). */
  isnSecret?: Uint8Array;
  capacity?: number;
  counters?: Counters;
  reachabilityIntervalMs?: number;
  /** See NicEngineOptions.moreInput: input for its connections may also wait off its link. */
  moreInput?: () => boolean;
}

/**
 * What a LocalNic leaves of one connection when it dies (or hands back a transfer the host cannot
 * read): the hard-state record and the buffers, as a WorkerNic leaves them in shared memory
 * (design section 6), plus the cached settings, which the host owns anyway.
 */
export type LocalSalvage = SalvageRecord;

/** An initiate in hand, run at once by a close or a crash (see LocalNic.inHand). */
type InHand = (why: 'close' | 'crash') => void;

/** Fault injection for tests of the failover layer. */
export interface LocalNicFaults {
  /** The next terminate returns a damaged transfer (its connections' hard state stays salvageable). */
  corruptTerminate?: boolean;
}

/**
 * An offload target in the caller's thread: a NicEngine behind the asynchronous Nic interface,
 * the host side every NIC shares (`HostNic`) over a `SameThreadTransport`. Every verb runs in a
 * deferred call on the injected clock, so callers see the same ordering as with a NIC on another
 * thread, and simulations stay on virtual time. Frames between the NIC and the host are handed
 * over synchronously (zero copy): the link already delivers them from its own turn, never inside
 * a host call.
 */
export class LocalNic extends HostNic {
  readonly engine: NicEngine;
  private readonly here: SameThreadTransport;
  /** What died with the NIC, or went into a transfer it damaged, until the host salvages it. */
  private readonly leftovers = new TupleMap<LocalSalvage>();
  /** Fault injection (tests). */
  readonly faults: LocalNicFaults = {};
  /**
   * Charge each verb's real duration to the clock (`Clock.elapse`): on the simulator's clock a
   * transfer then costs the time it really takes (see OffloadManager.chargeWallTime).
   */
  chargeWork = false;
  /** The NIC's link as its engine sends on it: through the source rewrite (`sendFrom`). */
  private readonly steered: SteeredLink;

  /** Same thread, same clock as the host (the clock it is given must be the host's). */
  constructor(opts: LocalNicOptions) {
    if (!opts || typeof opts.id !== 'string') throw new InvalidArgumentError('LocalNic needs an id');
    // The engine and the host side refer to each other: the transport and the host link find the
    // engine once it exists (nothing reaches them before the constructor returns).
    let engine: NicEngine | undefined;
    const here = new SameThreadTransport(
      () => engine!,
      opts.clock,
      () => this?.chargeWork === true,
    );
    super(
      opts.id,
      {
        send: (frame) => engine!.sendFromHost(frame),
        get mtu() {
          return engine!.link.mtu;
        },
        get carrier() {
          return engine!.link.carrier;
        },
      },
      here,
      opts.clock,
      null,
    );
    this.here = here;
    engine = this.engine = new NicEngine({
      id: opts.id,
      link: (this.steered = new SteeredLink(opts.link)),
      clock: opts.clock,
      random: opts.random,
      isnSecret: opts.isnSecret,
      counters: opts.counters,
      capacity: opts.capacity,
      reachabilityIntervalMs: opts.reachabilityIntervalMs,
      moreInput: opts.moreInput,
      toHost: (frame) => {
        if (!this.host.deliver(frame)) this.engine.counters.inc('drop.nic.no-host');
      },
      hostCarrier: (up) => this.host.carrierChanged(up),
      indicate: (...indication) => {
        const [event, ...args] = indication;
        this.emit(event, ...args);
      },
    });
  }

  get capacity(): number {
    return this.engine.capacity;
  }
  get load(): number {
    return this.engine.load;
  }
  /** As `load`: an in-process NIC holds no closed connection's block. */
  get runningConns(): number {
    return this.engine.load;
  }
  get linkUp(): boolean {
    return this.engine.linkUp;
  }
  get counters(): Counters {
    return this.engine.counters;
  }
  /** The engine's table is the host's (same thread), bound by the first IPv6 trees it took. */
  protected override keyAddresses(): AddressBook | null {
    return this.engine.addressBook;
  }
  /**
   * Read at once, not in a later turn: the engine's Counters are in this thread (and a simulation's
   * clock may stand still while they are read). They may be shared (`options.counters`): the
   * source is that object.
   */
  override counterSnapshot(): Promise<NicCounterSnapshot> {
    // Refused once closed or dead, as a worker's are: a caller sums live NICs' counters.
    const refused = this.refusal();
    if (refused !== null) return Promise.reject(refused);
    const c = this.engine.counters;
    return Promise.resolve({ source: c, values: c.snapshot() });
  }

  /**
   * Initiates sent whose turn of the clock has not come. A worker runs what its port brought
   * before a close or its death, so a close() or crash() runs these first (`InHand`): a close
   * installs them and then aborts them with everything else, a crash keeps them for salvage.
   */
  private readonly inHand = new Set<InHand>();

  // Objects in this thread need no codec, and their memory is the engine's: nothing is held
  // beside them while they cross. The verb goes as the typed request a worker gets, served by the
  // transport's one dispatch (SameThreadTransport.serve) in its turn, and its answer is unpacked as
  // a worker's is; unless the NIC closed or crashed with it in hand (the transport then fails the
  // request), which answers as a WorkerNic's host side does.
  protected offer(transfer: Transfer, opts: InitiateOptions | undefined): Promise<InitiateResult> {
    let cut: 'close' | 'crash' | null = null;
    const req = {
      op: 'initiate',
      arg: { batch: transfer, prod: opts?.prod === true, holdInput: opts?.holdInput === true },
    } as const;
    const job: InHand = (why) => {
      cut = why;
      if (why === 'crash') this.keepRefused(transfer, opts);
      else this.here.serve(req);
    };
    return this.cross<WorkerReply<'initiate'>, InitiateResult>(() => ({
      send: () => {
        this.inHand.add(job);
        return this.here.run(() => {
          this.inHand.delete(job);
          return this.here.serve(req);
        });
      },
      took: (res) => unpackInstalled(res.value, answerAddresses(this.engine, transfer)).result,
      failed: (e, sent) => {
        // Installed, then reset with everything else by the close: resumed in the host, they
        // would run on as if nothing happened.
        if (cut === 'close')
          return new ConnectionError('ECONNABORTED', `NIC ${this.id} closed with the batch in hand`);
        // Refused by a NIC already dead: its caller takes the batch as having died with it in hand
        // and rebuilds it from salvage(), so it is kept as a crash keeps what the engine ran (a
        // WorkerNic keeps the batch's blocks). Sent, the crash kept it (`cut`).
        if (!sent && this.death !== null) this.keepRefused(transfer, opts);
        return e;
      },
    }));
  }
  protected release(keys: ConnKey[] | 'all', opts: TerminateOptions | undefined): Promise<Transfer> {
    return this.cross(() => {
      // As a worker's, by the request's packed keys; in trees when the caller takes them (a move).
      const req = {
        op: 'terminate',
        arg: keys === 'all' ? 'all' : packKeys(keys, this.engine.addressBook),
        trees: opts?.trees === true,
      } as const;
      const run = (): Transfer => {
        if (this.faults.corruptTerminate === true) {
          this.faults.corruptTerminate = false;
          return this.damagedTerminate(keys);
        }
        const res = this.here.serve(req);
        return res.trees ?? res.value;
      };
      return {
        send: () => {
          const leaving = keys;
          this.leaving.push(leaving);
          this.leavingKeys = null;
          const left = () => {
            this.leaving.splice(this.leaving.indexOf(leaving), 1);
            this.leavingKeys = null;
          };
          return this.here.run(() => {
            try {
              return run();
            } finally {
              left();
            }
          }, left);
        },
      };
    });
  }

  /**
   * The key lists of terminates sent whose turn has not come: from the request on, those
   * connections are leaving, and attach finds none of them, as a WorkerNic's host side freezes
   * their handles at once (a socket attached meanwhile would be left on a released connection).
   */
  private readonly leaving: (ConnKey[] | 'all')[] = [];
  /** `leaving`'s keys as a table, made by the first attach that needs it (attach during a terminate is rare). */
  private leavingKeys: TupleMap<true> | null = null;

  private isLeaving(key: ConnKey): boolean {
    if (this.leaving.length === 0) return false;
    if (this.leavingKeys === null) {
      const t = new TupleMap<true>();
      for (const l of this.leaving) {
        if (l === 'all') return true;
        for (const k of l) t.set(k, true);
      }
      this.leavingKeys = t;
    }
    return this.leavingKeys.has(key);
  }

  /**
   * Answer the SYNs of a host listener here (NicListenSpec), at once (same thread): what it
   * accepts is born on this NIC and the host hears of it through the hooks' NicBornHooks part,
   * in the turn it happens. Returns what stops it; null once the NIC is closed or dead.
   */
  listen(spec: NicListenSpec, hooks: NicListenHooks): (() => void) | null {
    return this.running ? this.engine.listen(spec, hooks) : null;
  }

  /** See Nic.sendFrom: the engine's frames (its connections', the host's) leave through the rewrite. */
  sendFrom(teamMac: number, mac: number | null): void {
    this.steered.steer.set(teamMac, mac);
  }

  /** Its engine's table, read at once (same thread): half-open connections included. */
  holds(localIp: number, localPort: number, remoteIp: number, remotePort: number): boolean {
    return this.running && this.engine.tcp.lookup(localIp, localPort, remoteIp, remotePort) !== undefined;
  }

  /** Neither closed nor dead: its engine runs connections and may take more. */
  get running(): boolean {
    return !this.closed && this.death === null;
  }

  /**
   * See `Nic.handsLive`: running, and no damaged terminate armed (`faults.corruptTerminate`: a
   * live hand-over would go round it, and the test of the general protocol's rebuild with it).
   */
  get handsLive(): boolean {
    return this.running && this.faults.corruptTerminate !== true;
  }

  /** See `Nic.settlesHeld`: the engine keeps an install's link input for its settle. */
  readonly settlesHeld = true;

  inject(packets: readonly Uint8Array[], settled?: readonly ConnKey[]): void {
    if (this.closed) return;
    this.here.defer(() => this.engine.inject(packets, settled));
  }

  attachClosed(key: ConnKey, user: TcpUser | null): ClosedConnection | null {
    const conn = this.engine.claimClosed(key);
    if (conn === undefined) return null;
    conn.user = user;
    // What deliverEvents dropped for want of a user: the FIN's news and the close's reason.
    return { handle: conn, remoteEnded: conn.state.delegated.finReceived, error: conn.closeError };
  }

  protected attachRunning(key: ConnKey, user: TcpUser | null): ConnectionHandle | null {
    const conn = this.engine.connection(key);
    if (!conn || this.isLeaving(key)) return null;
    conn.user = user;
    // The install adopted it with nobody to tell, and an adopt's news of the peer's FIN (which may
    // have come in the old owner's last turn) went nowhere: a socket that missed it would never end.
    if (user !== null && conn.state.delegated.finReceived) {
      conn.events |= TcpEvent.REMOTE_END;
      conn.deferDelivery();
    }
    return conn;
  }

  protected closeEngine(): void {
    // Nothing is salvaged from a closed NIC (HostNic.salvage): what a crash or a damaged
    // terminate kept goes now.
    this.leftovers.clear();
    // Crashed before: its engine is closed already.
    if (this.closed) return;
    this.runInHand('close');
    this.closed = true;
    this.engine.close();
    this.host.close();
  }

  /**
   * Simulate the NIC dying: its connections stop where they stand, without a RST or a 'closed'
   * indication (a dead NIC says nothing), and all soft state (congestion window, RTT estimates,
   * out-of-order data, SACK scoreboard) is lost. The hard-state record and buffers stay for
   * `salvage()`, as a WorkerNic's shared memory outlives its thread. Emits 'dead' (a NicDeath of
   * kind 'crash' whose detail is `cause`).
   */
  crash(cause = 'crashed'): void {
    if (this.closed) return;
    this.runInHand('crash');
    const tcp = this.engine.tcp;
    for (const conn of [...tcp.connections()]) {
      // Released as a crash: a hand-over's flush of a pending delayed ACK would go out of a NIC
      // that is dead.
      const s = tcp.release(conn, true);
      this.keep(s, conn.user);
    }
    this.closed = true;
    this.engine.close();
    this.host.close();
    this.die({ kind: 'crash', detail: cause });
  }

  private runInHand(why: 'close' | 'crash'): void {
    for (const job of this.inHand) job(why);
    this.inHand.clear();
  }

  protected salvageAll(): SalvageRecord[] {
    const out = [...this.leftovers.values()];
    this.leftovers.clear();
    return out;
  }
  protected salvageOne(key: ConnKey): SalvageRecord | undefined {
    // By the tuple's numbers: a string key per connection was a fifth of a crash's rebuild of
    // 10,000 (made, hashed and looked up in a map of 10,000 strings, on the charged clock).
    const l = this.leftovers.get(key);
    if (l !== undefined) this.leftovers.delete(key);
    return l;
  }

  private keep(s: TcpState, user: TcpUser | null): void {
    const c = s.const;
    const key: ConnKey = {
      localIp: c.localIp,
      localPort: c.localPort,
      remoteIp: c.remoteIp,
      remotePort: c.remotePort,
    };
    this.leftovers.set(key, new ReleasedSalvage(key, s, user));
  }

  /**
   * The connections of a batch refused by this dead NIC, for salvage(): the states themselves
   * (the trees', or `opts.states` beside a batch of bytes; without them, as on a WorkerNic, none).
   * Nothing ran them here, so they are as the host let go of them, and nobody runs them now.
   */
  private keepRefused(transfer: Transfer, opts: InitiateOptions | undefined): void {
    const states = opts?.states ?? (isTreeTransfer(transfer) ? flattenTrees(transfer.trees) : []);
    for (const s of states) this.keep(s, null);
  }

  /** A terminate whose output is garbage, while the connections' hard state survives. */
  private damagedTerminate(keys: ConnKey[] | 'all'): Uint8Array {
    const tcp = this.engine.tcp;
    const list = keys === 'all' ? [...tcp.connections()] : keys.map((k) => this.engine.connection(k));
    for (const conn of list) {
      if (conn === undefined) continue;
      const user = conn.user;
      this.keep(tcp.release(conn), user);
    }
    this.engine.counters.inc('nic.fault.corrupt-terminate');
    const out = new Uint8Array(64);
    out.fill(0xa5);
    return out;
  }
}

/**
 * What a crash keeps of one connection: the released state itself, whose hard state is read from
 * it when the rebuild asks (LazySalvage), in the salvage's turn: nothing runs the state after its
 * engine died, and of its rings the host moves only the ends hardStateOf does not read (the send
 * ring's write end, the receive ring's read end), so it reads what it would have read at the
 * crash. The state goes along as the rebuild's spare too: its connection object is released with
 * the dead engine, and the rebuild resets it to a new state's fields after reading the record, so
 * no soft state survives the crash. Its cached settings are the record's: the rebuild copies them
 * onto the spare they came from, or a new state, and nothing else reads them.
 */
class ReleasedSalvage extends LazySalvage {
  readonly sendRing: ByteRing;
  readonly recvRing: ByteRing;
  readonly cached: TcpCached;
  readonly ownThread = true;

  constructor(
    readonly key: ConnKey,
    readonly spare: TcpState,
    readonly user: TcpUser | null,
  ) {
    super();
    this.sendRing = spare.delegated.sendBuffer;
    this.recvRing = spare.delegated.recvBuffer;
    this.cached = spare.cached;
  }

  protected readInto(out?: HardState): HardState | null {
    return hardStateOf(this.spare, out);
  }
}
