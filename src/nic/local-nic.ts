import { EventEmitter } from 'node:events';
import type { Clock } from '../core/clock.ts';
import type { Counters } from '../core/counters.ts';
import { InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import type { Random } from '../core/random.ts';
import type { Link } from '../link/link.ts';
import type { ConnectionHandle, TcpUser } from '../stack/tcp/tcp-types.ts';
import type {
  ConnKey,
  InitiateResult,
  InvalidateTarget,
  Nic,
  NicIndication,
  NicIndications,
  OffloadUpdate,
  QueryResult,
} from './nic.ts';
import { NicEngine } from './nic-engine.ts';

export interface LocalNicOptions {
  id: string;
  /** The link this NIC owns (a switch port in the simulator). */
  link: Link;
  clock: Clock;
  random: Random;
  capacity?: number;
  counters?: Counters;
  reachabilityIntervalMs?: number;
}

/**
 * The host stack's side of a NIC's link: frames it sends go out through the NIC, and the NIC
 * hands it every received frame that is not for an offloaded connection.
 */
class HostLink implements Link {
  handler: ((frame: Uint8Array) => void) | null = null;
  carrierHandler: ((up: boolean) => void) | null = null;
  constructor(
    private readonly nic: LocalNic,
    readonly name: string,
  ) {}
  get mtu(): number {
    return this.nic.engine.link.mtu;
  }
  get carrier(): boolean {
    return this.nic.engine.link.carrier;
  }
  send(frame: Uint8Array): boolean {
    return this.nic.engine.sendFromHost(frame);
  }
  onFrame(handler: (frame: Uint8Array) => void): void {
    if (typeof handler !== 'function') throw new InvalidArgumentError('onFrame needs a function');
    this.handler = handler;
  }
  onCarrier(handler: (up: boolean) => void): void {
    if (typeof handler !== 'function') throw new InvalidArgumentError('onCarrier needs a function');
    this.carrierHandler = handler;
  }
  close(): void {
    this.handler = null;
    this.carrierHandler = null;
  }
}

/**
 * An offload target in the caller's thread: a NicEngine behind the asynchronous Nic interface.
 * Every verb runs in a deferred call on the injected clock, so callers see the same ordering as
 * with a NIC on another thread, and simulations stay on virtual time. Frames between the NIC and
 * the host are handed over synchronously (zero copy): the link already delivers them from its
 * own turn, never inside a host call.
 */
export class LocalNic extends EventEmitter implements Nic {
  readonly id: string;
  readonly engine: NicEngine;
  readonly hostLink: Link;
  private readonly clock: Clock;
  private readonly host: HostLink;
  private closed = false;

  constructor(opts: LocalNicOptions) {
    super();
    if (!opts || typeof opts.id !== 'string') throw new InvalidArgumentError('LocalNic needs an id');
    this.id = opts.id;
    this.clock = opts.clock;
    this.host = new HostLink(this, `${opts.id}.host`);
    this.hostLink = this.host;
    this.engine = new NicEngine({
      id: opts.id,
      link: opts.link,
      clock: opts.clock,
      random: opts.random,
      counters: opts.counters,
      capacity: opts.capacity,
      reachabilityIntervalMs: opts.reachabilityIntervalMs,
      toHost: (frame) => {
        const h = this.host.handler;
        if (h) h(frame);
        else this.engine.counters.inc('drop.nic.no-host');
      },
      hostCarrier: (up) => this.host.carrierHandler?.(up),
      indicate: (event, ...args) => {
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
  get linkUp(): boolean {
    return this.engine.linkUp;
  }
  get counters(): Counters {
    return this.engine.counters;
  }

  initiate(batch: Uint8Array): Promise<InitiateResult> {
    return this.later(() => this.engine.initiate(batch));
  }
  terminate(keys: ConnKey[] | 'all'): Promise<Uint8Array> {
    return this.later(() => this.engine.terminate(keys));
  }
  update(u: OffloadUpdate): Promise<void> {
    return this.later(() => this.engine.update(u));
  }
  invalidate(target: InvalidateTarget): Promise<void> {
    return this.later(() => this.engine.invalidate(target));
  }
  query(keys?: ConnKey[]): Promise<QueryResult[]> {
    return this.later(() => this.engine.query(keys));
  }
  takeQueued(keys: ConnKey[]): Promise<Uint8Array[]> {
    return this.later(() => this.engine.takeQueued(keys));
  }
  dropFrozen(keys: ConnKey[]): Promise<void> {
    return this.later(() => this.engine.dropFrozen(keys));
  }

  inject(packets: readonly Uint8Array[]): void {
    if (this.closed) return;
    this.clock.defer(() => this.engine.inject(packets));
  }

  attach(key: ConnKey, user: TcpUser | null): ConnectionHandle | null {
    const conn = this.engine.connection(key);
    if (!conn) return null;
    conn.user = user;
    return conn;
  }

  override on<E extends NicIndication>(event: E, handler: NicIndications[E]): this {
    return super.on(event, handler as (...args: unknown[]) => void);
  }
  override off<E extends NicIndication>(event: E, handler: NicIndications[E]): this {
    return super.off(event, handler as (...args: unknown[]) => void);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.engine.close();
    this.host.close();
  }

  private later<T>(fn: () => T): Promise<T> {
    if (this.closed) return Promise.reject(new InvalidStateError(`NIC ${this.id} is closed`));
    return new Promise<T>((resolve, reject) => {
      this.clock.defer(() => {
        try {
          resolve(fn());
        } catch (e) {
          reject(e);
        }
      });
    });
  }
}
