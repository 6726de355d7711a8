import { EventEmitter } from 'node:events';
import type { Clock } from '../core/clock.ts';
import { InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import type { Link } from '../link/link.ts';
import type { ConnectionHandle, TcpUser } from '../stack/tcp/tcp-types.ts';
import type { OffloadTree } from '../state/offload-tree.ts';
import type { AddressBook } from '../state/path-state.ts';
import { decodeBatch } from '../state/state-codec.ts';
import { TWO_32 } from '../state/validate.ts';
import { type HostLinkTransport, NicHostLink } from './host-link.ts';
import { type BeatSource, Liveness } from './liveness.ts';
import {
  type ConnKey,
  describeDeath,
  type InitiateOptions,
  type InitiateResult,
  type InvalidateTarget,
  isTreeTransfer,
  type Nic,
  type NicCounterSnapshot,
  type NicDeath,
  type NicIndication,
  type NicIndications,
  type OffloadUpdate,
  type QueryResult,
  type SalvageRecord,
  type TerminateOptions,
  type Transfer,
} from './nic.ts';
import type { NicTransport } from './transport.ts';
import type { WorkerReply, WorkerRequest } from './worker/protocol.ts';
import { packKeys } from './worker/transfer-wire.ts';

/**
 * The host side of every NIC, whichever thread its engine runs in: the host's link to it (one
 * `NicHostLink`), the indications, its death, what it leaves for salvage, and the verbs as typed
 * requests over a `NicTransport` (same thread: `LocalNic`; a worker's port: `WorkerNic`). What
 * differs between the two is how a connection's memory is held (the engine's own buffers, or
 * shared rings the host reads directly), hence initiate, terminate, attach and salvage's records.
 */
export abstract class HostNic extends EventEmitter implements Nic {
  readonly id: string;
  readonly hostLink: Link;
  protected readonly host: NicHostLink;
  /** Set once the NIC is closed (or crashed): no verb runs after it. */
  protected closed = false;
  private deathCause: NicDeath | null = null;
  /** Whether its engine runs, its heartbeats, and the deaths only its silence shows. */
  protected readonly liveness: Liveness;

  /**
   * `beats`: how an engine on a thread of its own proves it runs (null: an engine in this thread,
   * which runs from its making and cannot fall silent while the host looks).
   */
  protected constructor(
    id: string,
    hostLink: HostLinkTransport,
    protected readonly transport: NicTransport,
    clock: Clock,
    beats: BeatSource | null,
  ) {
    super();
    this.id = id;
    this.host = new NicHostLink(`${id}.host`, hostLink);
    this.hostLink = this.host;
    this.liveness =
      beats === null
        ? Liveness.sameThread(clock)
        : Liveness.beating(
            clock,
            beats,
            (cause) => this.silent(cause),
            () => this.emit('heartbeat'),
          );
  }

  /**
   * Resolves once the engine runs (a worker's first heartbeat; a NIC in this thread at once): frames
   * and requests sent before then wait. Refused (InvalidStateError) once the NIC is closed or dead,
   * as every verb is, whether its engine ran first or not; a wait begun before the close or the
   * death fails with it.
   */
  ready(): Promise<void> {
    const refused = this.refusal();
    return refused === null ? this.liveness.ready() : Promise.reject(refused);
  }

  /** The engine fell silent (`Liveness`): it is dead of `cause`. */
  protected silent(cause: NicDeath): void {
    this.die(cause);
  }

  abstract readonly capacity: number;
  abstract readonly load: number;
  abstract readonly runningConns: number;
  abstract readonly linkUp: boolean;
  abstract inject(packets: readonly Uint8Array[]): void;

  /** Set once the owner called `close()`, whatever the NIC did before (ran, died, crashed). */
  private letGo = false;

  /**
   * The owner's end of the NIC (`Nic.close`), the same on every NIC: the engine aborts what it
   * runs (`closeEngine`), every request waiting for its answer fails (InvalidStateError), as does
   * a wait for `ready`, and `salvage` hands out nothing from now on.
   */
  close(): void {
    if (this.letGo) return;
    this.letGo = true;
    this.closeEngine();
    const e = new InvalidStateError(`NIC ${this.id} is closed`);
    // Whatever the engine runs next (its port's late answers, a turn of this thread), a request
    // still waiting for an answer fails now, on every NIC.
    this.transport.abandon(e);
    this.liveness.end(e);
  }
  /**
   * Abort every connection the engine runs and release the link; run once, at the owner's
   * `close()`, after a death too (what is left of the dead engine is released then).
   */
  protected abstract closeEngine(): void;

  /**
   * Null once the NIC is closed or dead, on every NIC: its connections are aborted (a close) or
   * left for salvage (a death), and a socket put on one would wait on a connection nothing runs.
   * A WorkerNic's handles outlive both (its worker's close aborts them later; a death leaves them
   * for salvage), so the state is checked here, not by whether a handle is found.
   */
  attach(key: ConnKey, user: TcpUser | null): ConnectionHandle | null {
    return this.closed || this.deathCause !== null ? null : this.attachRunning(key, user);
  }
  /** `attach` on a NIC neither closed nor dead. */
  protected abstract attachRunning(key: ConnKey, user: TcpUser | null): ConnectionHandle | null;

  /**
   * Decode and validate the bytes a terminate of this NIC handed back (a transfer from another
   * thread). A NIC whose terminate leaves the data in memory the host shares with it attaches
   * that memory here (WorkerNic); the codec's bytes alone are enough for the rest.
   */
  decodeReleased(bytes: Uint8Array, now: number, addrs?: AddressBook): OffloadTree[] {
    return decodeBatch(bytes, now, { addrs });
  }

  get inProcess(): boolean {
    return this.transport.inProcess;
  }

  /** See `Nic.useRecords`: off unless the NIC's states cross in records (WorkerNic). */
  readonly useRecords: boolean = false;

  /** See `Nic.takesTrees`: a NIC of this library encodes trees itself wherever its engine runs. */
  readonly takesTrees = true;

  /** The table of the host's IPv6 address handles in keys, to pack them as bytes; null before any. */
  protected keyAddresses(): AddressBook | null {
    return null;
  }

  /** Why the NIC died, or null while it lives. */
  get death(): NicDeath | null {
    return this.deathCause;
  }

  // ---- initiate and terminate: one way for every NIC ------------------------------------------------

  /**
   * Hand the connections of `transfer` to the engine. Checked here for every NIC: an engine in this
   * thread took anything else for a batch that does not decode, and answered a failure where a
   * worker's host side refused it.
   */
  initiate(transfer: Transfer, opts?: InitiateOptions): Promise<InitiateResult> {
    if (!isTreeTransfer(transfer) && !(transfer instanceof Uint8Array))
      return Promise.reject(new InvalidArgumentError('initiate needs trees or a Uint8Array'));
    return this.offer(transfer, opts);
  }

  terminate(keys: ConnKey[] | 'all'): Promise<Uint8Array>;
  terminate(keys: ConnKey[] | 'all', opts: TerminateOptions): Promise<Transfer>;
  terminate(keys: ConnKey[] | 'all', opts?: TerminateOptions): Promise<Transfer> {
    if (keys !== 'all' && !Array.isArray(keys))
      return Promise.reject(new InvalidArgumentError('terminate needs keys or "all"'));
    const unknown = keys === 'all' ? null : badKey(keys, this.keyAddresses());
    if (unknown !== null) return Promise.reject(unknown);
    return this.release(keys, opts);
  }

  /** An initiate of a checked transfer, as a `cross` that holds what this NIC's memory needs. */
  protected abstract offer(transfer: Transfer, opts: InitiateOptions | undefined): Promise<InitiateResult>;
  /** A terminate of checked keys, as a `cross` that holds what this NIC's memory needs. */
  protected abstract release(keys: ConnKey[] | 'all', opts: TerminateOptions | undefined): Promise<Transfer>;

  /**
   * One crossing of connections between the host and the engine (an initiate or a terminate), the
   * same for every NIC: `open` holds what the NIC's memory needs while the connections are in
   * flight; the request then goes over the transport, or is refused on a closed or dead NIC; a
   * failure either way gives back what was held (`failed`, told whether the request left, returns
   * the error to throw), an answer takes up what it names (`took`). Held before the refusal: an
   * initiate's batch on a NIC already dead is kept for salvage as if it had died with it in hand,
   * which is what the transfer that asked then rebuilds from. A throw while the crossing opens or
   * the request is built (a batch or a key that does not encode) is a rejection, as any other
   * failure, and gives back what was held: a verb of a Promise never throws at its caller.
   */
  protected cross<A, T>(open: () => Crossing<A, T>): Promise<T> {
    let c: Crossing<A, T>;
    try {
      c = open();
    } catch (e) {
      return Promise.reject(e);
    }
    const refused = this.refusal();
    if (c.took === undefined) return refused === null ? c.send() : Promise.reject(refused);
    const { took, failed } = c;
    if (refused !== null) return Promise.reject(failed(refused, false));
    let sent: Promise<A>;
    try {
      sent = c.send();
    } catch (e) {
      return Promise.reject(failed(e, false));
    }
    return sent.then(
      (answer) => took(answer),
      (e: unknown) => {
        throw failed(e, true);
      },
    );
  }

  async update(u: OffloadUpdate): Promise<void> {
    await this.request({ op: 'update', arg: u });
  }
  async invalidate(target: InvalidateTarget): Promise<void> {
    await this.request({ op: 'invalidate', arg: target });
  }
  async query(keys?: ConnKey[]): Promise<QueryResult[]> {
    return (await this.request({ op: 'query', arg: keys })).value;
  }
  async progressScan(): Promise<Float64Array> {
    return (await this.request({ op: 'progressScan', arg: null })).value;
  }
  /**
   * The segments held for `keys`; with `drop`, let go of the keys as well (dropFrozen) in the same
   * request: a transfer's settle needs both, and each request to a worker is a wake-up of its
   * thread that, on a loaded machine, can cost the host's thread its time slice.
   */
  async takeQueued(keys: ConnKey[], opts?: { drop?: boolean }): Promise<Uint8Array[]> {
    const arg = packKeys(keys, this.keyAddresses());
    return (await this.request({ op: 'takeQueued', arg, drop: opts?.drop === true })).value;
  }
  takeAndDrop(keys: ConnKey[]): Promise<Uint8Array[]> {
    return this.takeQueued(keys, { drop: true });
  }
  async dropFrozen(keys: ConnKey[]): Promise<void> {
    await this.request({ op: 'dropFrozen', arg: packKeys(keys, this.keyAddresses()) });
  }
  /** Asked of the engine, whose counters are its own (`source`: this NIC). */
  async counterSnapshot(): Promise<NicCounterSnapshot> {
    const values = (await this.request({ op: 'counters', arg: null })).value;
    return { source: this, values: this.addHostCounters(values) };
  }
  /** The engine's counters, with what this side counts itself. */
  protected addHostCounters(values: Record<string, number>): Record<string, number> {
    return values;
  }

  /**
   * What is left of connections the NIC can no longer run: all of them, or those named (a team
   * rebuilds a dead NIC's connections in batches, each on the least loaded healthy member, and
   * the rest must still be here for the next batch). Each is handed out once. None once the
   * owner closed the NIC, on every NIC: its close reset what it ran (a record handed out would
   * rebuild a connection its peer was told is gone), and what it kept (a death's, a damaged
   * terminate's) is let go with it; a caller that rebuilds salvages before it closes.
   */
  salvage(keys?: readonly ConnKey[]): SalvageRecord[] {
    if (keys !== undefined && !Array.isArray(keys))
      throw new InvalidArgumentError('salvage needs connection keys');
    if (this.letGo) return [];
    if (keys === undefined) return this.salvageAll();
    const out: SalvageRecord[] = [];
    for (const k of keys) {
      const r = this.salvageOne(k);
      if (r !== undefined) out.push(r);
    }
    return out;
  }
  /** Hand out (and forget) what is left of one connection, if anything. */
  protected abstract salvageOne(key: ConnKey): SalvageRecord | undefined;
  protected abstract salvageAll(): SalvageRecord[];

  override on<E extends NicIndication>(event: E, handler: NicIndications[E]): this {
    return super.on(event, handler as (...args: unknown[]) => void);
  }
  override off<E extends NicIndication>(event: E, handler: NicIndications[E]): this {
    return super.off(event, handler as (...args: unknown[]) => void);
  }

  /** A typed request to the engine; refused at once when the NIC is closed or dead. */
  protected request<R extends WorkerRequest>(r: R): Promise<WorkerReply<R['op']>> {
    const refused = this.refusal();
    return refused === null ? this.transport.request(r) : Promise.reject(refused);
  }

  /** Why no verb may run now, or null. */
  protected refusal(): InvalidStateError | null {
    if (this.closed) return new InvalidStateError(`NIC ${this.id} is closed`);
    if (this.deathCause !== null) return new InvalidStateError(`NIC ${this.id} is dead`);
    return null;
  }

  /**
   * The NIC is gone: requests waiting for an answer fail, and those waiting for it to be ready,
   * its liveness is no longer watched, `dying` runs (what the subclass must
   * settle before anyone hears of the death), and 'dead' is indicated, once.
   */
  protected die(cause: NicDeath, dying?: (e: InvalidStateError) => void): void {
    if (this.deathCause !== null) return;
    this.deathCause = cause;
    // What the death says (a silence's length, a start that never came): all a failing caller sees.
    const e = new InvalidStateError(`NIC ${this.id} died (${cause.kind}: ${describeDeath(cause).detail})`);
    this.transport.abandon(e);
    this.liveness.end(e);
    dying?.(e);
    this.emit('dead', cause);
  }
}

/**
 * Why `keys` cannot name connections of a NIC whose address table is `addrs`, or null: one is not
 * an object, or is an IPv6 key, whose addresses are handles of that table and mean nothing
 * without it. Checked before anything is frozen or released, so such a terminate is refused whole
 * on every NIC (an engine in this thread found no such connection and released the rest; a
 * worker's host side failed to pack it). Two comparisons per IPv4 key.
 */
function badKey(keys: readonly ConnKey[], addrs: AddressBook | null): InvalidArgumentError | null {
  for (const k of keys) {
    if (typeof k !== 'object' || k === null) return new InvalidArgumentError('not a connection key');
    if (k.localIp < TWO_32 && k.remoteIp < TWO_32) continue;
    if (addrs === null) return new InvalidArgumentError('an IPv6 key needs the address table of its handles');
    try {
      // A handle the table cannot hold throws (AddressTable.slotOf): the packing of a worker's key.
      addrs.write(k.localIp, SCRATCH16, 0);
      addrs.write(k.remoteIp, SCRATCH16, 0);
    } catch (e) {
      return e instanceof InvalidArgumentError ? e : new InvalidArgumentError(String(e));
    }
  }
  return null;
}
const SCRATCH16 = new Uint8Array(16);

/**
 * What differs between NICs when connections cross (`HostNic.cross`): where their memory lives.
 * Engine-owned buffers (LocalNic) hold nothing beside the states, so its crossing is the request
 * alone and its answer is the verb's result. Shared rings (WorkerNic) are the host's memory
 * whatever the engine does: blocks prepared before an initiate leaves and handles frozen while a
 * terminate runs, given back when the request fails and taken up from the answer.
 */
export type Crossing<A, T> =
  | { send(): Promise<T>; took?: undefined }
  | {
      send(): Promise<A>;
      /** The request failed (`sent`: after it left): give back what was held; the error to throw. */
      failed: (e: unknown, sent: boolean) => unknown;
      /** The answer: take up what it names; the verb's result. */
      took: (answer: A) => T;
    };

/**
 * The trees in what `nic`'s terminate handed back as bytes: a NIC that reads its own
 * (`Nic.decodeReleased`) attaches what they name but do not carry; any other NIC's bytes carry
 * everything. IPv6 addresses are interned in `addrs` (the host's table).
 */
export function decodeReleasedBy(
  nic: Nic,
  bytes: Uint8Array,
  now: number,
  addrs?: AddressBook,
): OffloadTree[] {
  return nic.decodeReleased !== undefined
    ? nic.decodeReleased(bytes, now, addrs)
    : decodeBatch(bytes, now, { addrs });
}
