import { EventEmitter } from 'node:events';
import { AddressInUseError, InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import { ANY6, TWO_32 } from '../stack/address-table.ts';
import type { TcpConnection } from '../stack/tcp/tcp-connection.ts';
import type { TcpLayer, TcpListener } from '../stack/tcp/tcp-layer.ts';
import type { ConnectionHandle } from '../stack/tcp/tcp-types.ts';
import type { TcpCached } from '../state/tcp-state.ts';
import { formatIpv4, parseIpv4 } from '../wire/addr.ts';
import { type SocketHost, TcpSocket, type TcpSocketOptions } from './tcp-socket.ts';

/**
 * A socket not yet handed out, or handed to no 'connection' listener, has no 'error' listener of
 * the application's: a reset only ends it. (Node would throw the ECONNRESET of a socket it emitted
 * to nobody as an uncaught exception: a peer could then take the process down.)
 */
const ignoreUntaken = (): void => {};

/** Accepts handed to the application in one turn (TcpServer.drain); as many as a WorkerNic's deliveries. */
export const ACCEPTS_PER_TURN = 32;

/**
 * A deeper accept queue releases this fraction of itself a turn (1/ACCEPT_SPREAD_TURNS), so its
 * wait is a few turns whatever its depth. A fixed 32 a turn, on serve's main thread whose turns
 * last 0.1-0.3 s in a connect burst, released 100-300 a second against 2,500 connects a second:
 * the queue grew until it passed half the backlog, then that excess went out in one turn, a
 * thousand HTTP answers written at once, and the TAP was not read for 2 s, so the client resent
 * every SYN that came meanwhile (BENCHMARKS.md, tap-team, s46h1).
 */
export const ACCEPT_SPREAD_TURNS = 4;

/**
 * The most accepts one turn hands out, whatever the queue's depth. A release of whatever the
 * queue held over half its backlog (s46h1's rule) ran a thousand or more HTTP answers in one turn
 * at load 34-58, blocking serve's loop 10-17 s, while the TAP went unread and its kernel queue
 * dropped SYNs anyway. Linux's accept queue is emptied by the application at its own pace
 * (accept(2) in its loop), and the backlog is where the kernel drops (tcp_conn_request's
 * sk_acceptq_is_full), not what it pushes at the application: here too a full queue drops
 * SYNs and handshake ACKs (tcp-listen.ts), and the peers' retries come in as it drains.
 * 128 answers cost serve's main thread tens of milliseconds, a turn's share beside its TAP reads.
 */
export const ACCEPTS_MAX_PER_TURN = 4 * ACCEPTS_PER_TURN;

/**
 * How many of `queued` waiting accepts one turn hands out: at least ACCEPTS_PER_TURN, a share of a
 * deeper queue (ACCEPT_SPREAD_TURNS), never more than ACCEPTS_MAX_PER_TURN.
 */
export function acceptsThisTurn(queued: number): number {
  return Math.min(
    queued,
    Math.max(ACCEPTS_PER_TURN, Math.min(ACCEPTS_MAX_PER_TURN, Math.ceil(queued / ACCEPT_SPREAD_TURNS))),
  );
}

/**
 * An accepted connection's way to its first answer, in ms of the host's clock (0: not reached):
 * made (the listener's accept, or a NIC's born handle), queued once its placement is done, handed
 * to the application ('connection'), and the application's first write to it.
 */
export interface AcceptTimes {
  placed: boolean;
  /** The peer's port: lines the accept up with its client's own times (soak-tap --times). */
  remotePort: number;
  madeAt: number;
  queuedAt: number;
  handedAt: number;
  firstWriteAt: number;
}

/** Diagnostic (serve's CHIMNEY_LAG_LOG): told each accept's times at its first write; off by default. */
let acceptTrace: ((t: AcceptTimes) => void) | null = null;
const traced = new WeakMap<TcpSocket, AcceptTimes>();

/** Trace every server's accepts (null: stop): where a client's first byte waits in the host. */
export function traceAccepts(fn: ((t: AcceptTimes) => void) | null): void {
  acceptTrace = fn;
}

export interface ServerHost extends SocketHost {
  readonly tcp: TcpLayer;
  /** True when some interface runs IPv6: a listen without a host is then on `::` (dual stack), as in Node. */
  hasIpv6?(): boolean;
  /**
   * A promise to wait on before an accepted connection goes to the application (null: none), so
   * a host that moves connections to NICs can move it before it carries any data (TeamHost).
   */
  placeAccepted?(conn: TcpConnection): Promise<void> | null;
  /**
   * A listener opened: a host whose NICs answer its SYNs themselves starts them (TeamHost with
   * `acceptAtNic`); returns what stops them, called as the listener closes (null: nothing started).
   */
  listening?(l: TcpListener): (() => void) | null;
}

export interface ListenOptions {
  port?: number;
  host?: string;
  backlog?: number;
  /** With host '::': IPv6 only, no IPv4 connections (Node's ipv6Only). */
  ipv6Only?: boolean;
}

export interface TcpServerOptions extends TcpSocketOptions {
  /** TCP settings for accepted connections (buffer sizes, congestion control, ...). */
  tcp?: Partial<TcpCached>;
}

/**
 * Behaves like net.Server: 'listening', 'connection', 'close', 'error'.
 *
 * Every connection the listener establishes is accepted and emitted as 'connection' in a deferred
 * turn (the engine finishes its processing first; acceptsThisTurn a turn), whether or not anyone listens, as Node accepts every connection:
 * without a listener the socket sits open and unread, counted in `connections`, until its peer
 * ends or resets it; a listener added later gets only new ones. The listen backlog bounds only
 * what waits for those turns (Linux's accept queue), and what the stack holds in all is bounded by
 * its TCP limits (connections, buffer memory).
 */
export class TcpServer extends EventEmitter {
  private listener: TcpListener | null = null;
  /** Stops the NICs answering this listener's SYNs (ServerHost.listening). */
  private stopAtNics: (() => void) | null = null;
  private readonly sockets = new Set<TcpSocket>();
  /** Accepted, not yet handed to the application. */
  private readonly queue: TcpSocket[] = [];
  private draining = false;
  private closing = false;
  /** Like net.Server#maxConnections: connections beyond it are reset. */
  maxConnections = Number.POSITIVE_INFINITY;

  constructor(
    private readonly host: ServerHost,
    private readonly opts: TcpServerOptions = {},
    connectionListener?: (socket: TcpSocket) => void,
  ) {
    super();
    if (connectionListener) this.on('connection', connectionListener);
  }

  get listening(): boolean {
    return this.listener !== null;
  }

  listen(port?: number | ListenOptions, hostOrCb?: string | number | (() => void), ...rest: unknown[]): this {
    let opts: ListenOptions;
    const args = [hostOrCb, ...rest];
    if (typeof port === 'object' && port !== null) opts = { ...port };
    else opts = { port: port ?? 0 };
    const cb = args.find((a) => typeof a === 'function') as (() => void) | undefined;
    if (typeof hostOrCb === 'string') opts.host = hostOrCb;
    const backlogArg = args.find((a) => typeof a === 'number');
    if (typeof backlogArg === 'number') opts.backlog = backlogArg;
    if (this.listener) throw new InvalidStateError('server is already listening');
    const portNum = opts.port ?? 0;
    if (!Number.isInteger(portNum) || portNum < 0 || portNum > 65535)
      throw new InvalidArgumentError(`port must be an integer 0-65535, got ${String(opts.port)}`);
    if (opts.backlog !== undefined && (!Number.isInteger(opts.backlog) || opts.backlog < 1))
      throw new InvalidArgumentError(`backlog must be a positive integer, got ${String(opts.backlog)}`);
    const addrs = this.host.addrs;
    let ip: number;
    if (!opts.host) ip = this.host.hasIpv6?.() === true ? ANY6 : 0;
    else if (opts.host === '0.0.0.0') ip = 0;
    else ip = addrs ? addrs.parse(opts.host) : parseIpv4(opts.host);
    if (ip < 0) throw new InvalidStateError('too many IPv6 addresses in use');
    if (cb) this.once('listening', cb);
    try {
      this.listener = this.host.tcp.listen(
        { ip, port: portNum, backlog: opts.backlog, options: this.opts.tcp, v6Only: opts.ipv6Only === true },
        this.accept,
      );
    } catch (e) {
      if (e instanceof AddressInUseError) {
        // Node reports EADDRINUSE as an 'error' event, not a throw.
        this.host.clock.defer(() => this.emit('error', e));
        return this;
      }
      throw e;
    } finally {
      // The listener holds its own reference.
      addrs?.release(ip);
    }
    this.closing = false;
    this.listener.acceptBorn = this.acceptBorn;
    this.stopAtNics = this.host.listening?.(this.listener) ?? null;
    this.host.clock.defer(() => this.emit('listening'));
    return this;
  }

  address(): { address: string; family: string; port: number } | null {
    if (!this.listener) return null;
    const ip = this.listener.ip;
    if (ip < TWO_32) return { address: formatIpv4(ip), family: 'IPv4', port: this.listener.port };
    const address = this.host.addrs?.format(ip) ?? '::';
    return { address, family: 'IPv6', port: this.listener.port };
  }

  /** Stop accepting; 'close' follows once every accepted connection has closed. */
  close(cb?: (err?: Error) => void): this {
    if (!this.listener) {
      if (cb) this.host.clock.defer(() => cb(new InvalidStateError('server is not running')));
      return this;
    }
    this.listener.close();
    this.listener = null;
    this.stopAtNics?.();
    this.stopAtNics = null;
    this.closing = true;
    // Like closing a listening socket in Linux: what waited in its accept queue is reset.
    for (const q of this.queue.splice(0)) q.resetAndDestroy();
    if (cb) this.once('close', cb);
    this.maybeEmitClose();
    return this;
  }

  getConnections(cb: (err: Error | null, count: number) => void): this {
    const n = this.sockets.size;
    this.host.clock.defer(() => cb(null, n));
    return this;
  }

  /** Number of open connections accepted by this server. */
  get connections(): number {
    return this.sockets.size;
  }

  ref(): this {
    return this;
  }
  unref(): this {
    return this;
  }

  private readonly accept = (conn: TcpConnection): boolean => this.take(conn, true);

  /** A connection a NIC on another thread accepted (ServerHost.listening): placed already. */
  private readonly acceptBorn = (h: ConnectionHandle): boolean => this.take(h, false);

  /** `place`: wait for the host's placement first (placeAccepted), when `conn` is the stack's own. */
  private take(conn: ConnectionHandle, place: boolean): boolean {
    if (this.closing || this.sockets.size >= this.maxConnections) return false;
    const socket = new TcpSocket(this.host, {
      allowHalfOpen: this.opts.allowHalfOpen,
      highWaterMark: this.opts.highWaterMark,
    });
    // A `::` listener shows an IPv4 peer as ::ffff:a.b.c.d, as Node does.
    socket._nameEnds(conn, this.listener?.ip === ANY6 && conn.remoteIp < TWO_32);
    socket._attachEstablished(conn);
    // Until the application takes it, a reset or FIN only marks it: it is still handed out.
    socket._hold();
    if (acceptTrace !== null) {
      const now = this.host.clock.now();
      traced.set(socket, {
        placed: place,
        remotePort: conn.remotePort,
        madeAt: now,
        queuedAt: 0,
        handedAt: 0,
        firstWriteAt: 0,
      });
    }
    this.sockets.add(socket);
    socket.on('error', ignoreUntaken);
    socket.once('close', () => {
      this.sockets.delete(socket);
      const i = this.queue.indexOf(socket);
      if (i >= 0) {
        this.queue.splice(i, 1);
        this.syncQueued();
      }
      this.maybeEmitClose();
    });
    const placing = place ? (this.host.placeAccepted?.(conn as TcpConnection) ?? null) : null;
    if (placing === null) this.enqueue(socket);
    else {
      // Not in the accept queue meanwhile: it waits on the stack, not on the application, and
      // the stack's own limits bound how many do. One reset or ended meanwhile is still handed out.
      const go = (): void => {
        if (socket.destroyed || !this.sockets.has(socket)) return;
        // Closed meanwhile: reset, as what waited in the accept queue was.
        if (this.listener === null) socket.resetAndDestroy();
        else this.enqueue(socket);
      };
      placing.then(go, go);
    }
    return true;
  }

  private enqueue(socket: TcpSocket): void {
    const t = traced.get(socket);
    if (t !== undefined) t.queuedAt = this.host.clock.now();
    this.queue.push(socket);
    this.syncQueued();
    // The 'connection' event is deferred so the engine finishes its processing first.
    this.scheduleDrain();
  }

  private scheduleDrain(): void {
    if (this.draining) return;
    this.draining = true;
    this.host.clock.defer(this.drain);
  }

  /**
   * Hands out acceptsThisTurn, the rest next turn. What the application does with one runs in this
   * turn's nextTicks (an HTTP answer written into the socket's send ring): a placement's batch of
   * hundreds released at once held serve's main thread 0.2-0.7 s, and the SYNs, handshake ACKs and
   * worker messages waited behind it. A quarter of a deeper queue goes, so the queue stays short
   * and its wait a few turns, up to ACCEPTS_MAX_PER_TURN: a queue at its backlog drops what
   * comes, as Linux's does, rather than block the loop that reads the SYNs.
   */
  private readonly drain = (): void => {
    this.draining = false;
    let n = acceptsThisTurn(this.queue.length);
    while (n-- > 0 && this.queue.length > 0) {
      const socket = this.queue.shift()!;
      this.syncQueued();
      if (this.listenerCount('connection') > 0) socket.removeListener('error', ignoreUntaken);
      const t = traced.get(socket);
      if (t !== undefined) this.handed(socket, t);
      this.emit('connection', socket);
      socket._release();
    }
    if (this.queue.length > 0) this.scheduleDrain();
  };

  /** Traced: handed out now, and its first write ends the trace (the write itself is the socket's). */
  private handed(socket: TcpSocket, t: AcceptTimes): void {
    const clock = this.host.clock;
    t.handedAt = clock.now();
    traced.delete(socket);
    const own = socket as { write?: (...a: unknown[]) => boolean };
    own.write = (...a: unknown[]): boolean => {
      t.firstWriteAt = clock.now();
      delete own.write;
      acceptTrace?.(t);
      return (socket.write as (...b: unknown[]) => boolean)(...a);
    };
  }

  private syncQueued(): void {
    if (this.listener) this.listener.queued = this.queue.length;
  }

  private maybeEmitClose(): void {
    if (this.closing && this.sockets.size === 0) {
      this.closing = false;
      this.host.clock.defer(() => this.emit('close'));
    }
  }
}
