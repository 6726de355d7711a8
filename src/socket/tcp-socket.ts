import { Duplex } from 'node:stream';
import type { Clock, Timer } from '../core/clock.ts';
import { ConnectionError, InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import { type AddressTable, TWO_32 } from '../stack/address-table.ts';
import type { ConnectionEnd, ConnectionHandle, TcpUser } from '../stack/tcp/tcp-types.ts';
import { formatIpv4 } from '../wire/addr.ts';

/** A write that cannot go out, with the syscall Node names. */
function writeError(code: string, message: string): ConnectionError {
  const e = new ConnectionError(code, message);
  e.syscall = 'write';
  return e;
}

function emitClose(s: TcpSocket, hadError: boolean): void {
  s.emit('close', hadError);
}

function closeAfterImmediates(s: TcpSocket, hadError: boolean, clock: Clock): void {
  // Work for a virtual clock, which steps ahead in time only when a turn finds nothing to run:
  // time does not jump (a test's sleep does not end) before the close.
  clock.defer(noop);
  setImmediate(emitClose, s, hadError);
}

function noop(): void {}

/** Reads are pulled from the connection's receive buffer in chunks of at most this size. */
const READ_CHUNK = 64 * 1024;

/**
 * The socket keeps at most its send target queued in the connection (unsent plus unacknowledged),
 * and the rest of a write waits in the stream, as a Linux writer waits in sk_stream_wait_memory.
 * Linux starts a socket's send buffer small (tcp_wmem[1]) and grows it with the congestion window
 * (tcp_sndbuf_expand). The target starts at 64 KiB, over twice the ten segments a connection may
 * send first, and doubles whenever an acknowledgement calls for a refill while the writer has
 * more and the sender has sent all it held (but less than a segment): then the target, not a
 * window, bounds the sender. A server of thousands of slow downloads so holds tens of kilobytes
 * per connection where it would copy every body whole into its buffers at once (which, in shared
 * rings, is fresh memory touched for the first time).
 */
export const SEND_TARGET_INITIAL = 64 * 1024;
/** Linux's tcp_wmem[2]. */
export const SEND_TARGET_MAX = 4 * 1024 * 1024;

export interface TcpSocketOptions {
  /** Like net.Socket: keep the writable side open after the peer's FIN (default false). */
  allowHalfOpen?: boolean;
  highWaterMark?: number;
}

/** What a socket needs from the stack it lives on; kept narrow so the owner can change later. */
export interface SocketHost {
  readonly clock: Clock;
  /** The stack's address handles (absent: IPv4 only). */
  readonly addrs?: AddressTable;
}

/** Text of a socket's two ends, fixed when it attaches (handles may be reused after the close). */
interface EndNames {
  local: string;
  remote: string;
  family: 'IPv4' | 'IPv6';
}

/**
 * The switching layer's face towards the application: a Duplex stream that behaves like
 * net.Socket, routing every call to the connection that runs it. Node's http and tls run on it.
 */
export class TcpSocket extends Duplex implements TcpUser {
  private conn: ConnectionHandle | null = null;
  /** The connection is between owners: calls that would reach it wait in `waitingForMove`. */
  private isMoving = false;
  private waitingForMove: (() => void)[] = [];
  private readonly host: SocketHost;
  private names: EndNames | null = null;
  /** A write the connection could not take whole: the rest waits for onWritable. */
  private pendingChunk: Uint8Array | null = null;
  private pendingOffset = 0;
  private pendingCb: ((err?: Error | null) => void) | null = null;
  private sendTarget = SEND_TARGET_INITIAL;
  /** The last refill stopped at the send target with more of the write left. */
  private heldAtTarget = false;
  /**
   * Bytes the connection may hold queued while a resume's first part is being given (0: no
   * bound but the send target): see `_completeMove`'s `firstPart`. Doubled at each refill the
   * connection's acknowledgements call for, and gone once it reaches the send target.
   */
  private partBound = 0;
  private flushing = false;
  private flushAgain = false;
  private wantRead = false;
  private remoteEnded = false;
  private endPushed = false;
  private closedByStack = false;
  /**
   * In a server's accept queue (TcpServer): the peer's end or reset waits for the application to
   * take the socket, as Linux keeps an ended or reset child queued and accept() returns it; Node
   * then emits 'connection' and the socket reports what happened. `heldError`: the reset.
   */
  private held = false;
  private heldError: ConnectionError | null = null;
  /**
   * The connection failed (a reset) with data still in its receive buffer: the error waits until
   * that data is read, as recv(2) on Linux returns what was queued before a reset, then the error.
   */
  private failure: ConnectionError | null = null;
  private idleTimeoutMs = 0;
  /** setTimeout was called (net.Socket#timeout is undefined until then, 0 after setTimeout(0)). */
  private timeoutSet = false;
  private idleTimer: Timer | null = null;
  private lastActivity = 0;
  private _bytesRead = 0;
  private _bytesWritten = 0;
  private _connecting = false;
  /** Writes that arrived before the handshake completed. */
  private waitingForConnect: (() => void)[] = [];

  constructor(host: SocketHost, opts: TcpSocketOptions = {}) {
    super({
      allowHalfOpen: opts.allowHalfOpen ?? false,
      highWaterMark: opts.highWaterMark,
      // Node's net.Socket leaves the stream open after 'end' until both sides are done.
      autoDestroy: true,
      // 'close' carries hadError, as net.Socket's does: emitted by _destroy, not by the stream.
      emitClose: false,
    });
    this.host = host;
  }

  /** @internal Attach an accepted (already established) connection. */
  /**
   * @internal Name both ends. `dualStack`: accepted by a `::` listener, so an IPv4 peer shows as
   * ::ffff:a.b.c.d with family IPv6, as Node shows it.
   */
  _nameEnds(conn: ConnectionHandle, dualStack = false): void {
    const addrs = this.host.addrs;
    const v6 = conn.remoteIp >= TWO_32;
    const fmt = (ip: number): string =>
      ip >= TWO_32 && addrs ? addrs.format(ip) : dualStack ? `::ffff:${formatIpv4(ip)}` : formatIpv4(ip);
    this.names = {
      local: fmt(conn.localIp),
      remote: fmt(conn.remoteIp),
      family: v6 || dualStack ? 'IPv6' : 'IPv4',
    };
  }

  _attachEstablished(conn: ConnectionHandle): void {
    if (!this.names) this._nameEnds(conn);
    this.conn = conn;
    conn.user = this;
    this.touch();
  }

  /** @internal Queued at a server, not yet taken by the application (see `held`). */
  _hold(): void {
    this.held = true;
  }

  /** @internal Taken by the application: what the peer did meanwhile now shows (see `held`). */
  _release(): void {
    if (!this.held) return;
    this.held = false;
    const err = this.heldError;
    this.heldError = null;
    if (err) this.failAfterData(err);
    else if (this.remoteEnded) this.pull();
  }

  /** @internal Attach a connection whose active open is under way. */
  _attachConnecting(conn: ConnectionHandle): void {
    if (!this.names) this._nameEnds(conn);
    this.conn = conn;
    conn.user = this;
    this._connecting = true;
  }

  /** The connection currently running this socket (its owner may change; the socket stays). */
  get connection(): ConnectionHandle | null {
    return this.conn;
  }

  /** True while the connection moves between owners. */
  get moving(): boolean {
    return this.isMoving;
  }

  /**
   * @internal The switching layer's freeze: from now until `_completeMove` or `_abortMove`, no call
   * reaches the connection. Writes, shutdown and option changes wait; reads pause.
   */
  _beginMove(): void {
    if (this.isMoving) throw new InvalidStateError('socket is already moving');
    this.isMoving = true;
  }

  /**
   * @internal The connection now runs behind `handle` (its user already points here, or is set now).
   * `closed`: it ended there before the move could end (its peer's FIN or reset, or a timeout,
   * during the settle), and the socket hears it as if it came just after, as it would have heard
   * it attached: what the handle holds unread is read first (as Linux's tcp_recvmsg copies the
   * receive queue first), then the end: EOF after the peer's FIN, otherwise the error; writes that
   * waited for the move fail with it (EPIPE after a FIN).
   *
   * `firstPart` (bytes, 0: none): the writes that waited for the move fill the connection only
   * to this many bytes queued, and from there to the send target as its acknowledgements ask
   * (the bound doubles at each refill), as a connection rebuilt from a dead NIC's hard state
   * sends one segment in its first round trip (its congestion window is relearned). A rebuilt
   * connection is often young, its ring's pages never written: each page a write reaches for the
   * first time costs the main thread a fault (0.2 ms at load 26), and its resume filling the ring
   * to the send target at once was 2-4 ms of the paced resume's turn per socket.
   */
  _completeMove(handle: ConnectionHandle, closed: ConnectionEnd | null = null, firstPart = 0): void {
    if (!this.isMoving) throw new InvalidStateError('socket is not moving');
    this.partBound = firstPart;
    this.conn = handle;
    handle.user = this;
    if (closed !== null) {
      this.isMoving = false;
      if (closed.remoteEnded) this.onRemoteEnd();
      this.onClosed(closed.error);
      if (this.destroyed) {
        this.waitingForMove = [];
        return;
      }
      this.isMoving = true;
    }
    this.resumeAfterMove();
  }

  /** @internal The move failed: carry on with the connection where it was. */
  _abortMove(): void {
    if (!this.isMoving) return;
    this.resumeAfterMove();
  }

  /**
   * @internal The move failed and took the connection with it: the old owner's handle let go of
   * it, so nothing resumes there; calls waiting for the move fail with the socket.
   */
  _loseMove(err: ConnectionError): void {
    if (!this.isMoving) return;
    this.isMoving = false;
    this.waitingForMove = [];
    // Events the old owner queued before it let go may still come: they find nothing to read.
    this.conn = null;
    this.onClosed(err);
  }

  private resumeAfterMove(): void {
    this.isMoving = false;
    // Most moves find no call waiting: no new list per socket and move then.
    if (this.waitingForMove.length > 0) {
      const waiting = this.waitingForMove;
      this.waitingForMove = [];
      for (const w of waiting) w();
    }
    if (this.conn) {
      if (!this.closedByStack) this.flushPending();
      // A close that came during the move still leaves received data (and the end) to deliver.
      if (this.wantRead || this.remoteEnded || this.failure !== null) this.pull();
    }
  }

  get connecting(): boolean {
    return this._connecting;
  }
  get pending(): boolean {
    return this._connecting || this.conn === null || this.destroyed;
  }
  get readyState(): 'opening' | 'open' | 'readOnly' | 'writeOnly' | 'closed' {
    if (this._connecting) return 'opening';
    if (this.destroyed || !this.conn) return 'closed';
    if (this.readable && this.writable) return 'open';
    if (this.readable) return 'readOnly';
    if (this.writable) return 'writeOnly';
    return 'closed';
  }
  get bytesRead(): number {
    return this._bytesRead;
  }
  /** Like net.Socket's: every byte the application wrote, taken by the connection yet or not. */
  get bytesWritten(): number {
    // The stream's length counts the chunk in _write whole, and _bytesWritten its part taken.
    return this._bytesWritten + this.writableLength - (this.pendingChunk ? this.pendingOffset : 0);
  }
  /** The bytes of the application's writes the connection has taken (its send buffer or the wire). */
  get bytesTaken(): number {
    return this._bytesWritten;
  }
  get remoteAddress(): string | undefined {
    return this.conn ? this.names?.remote : undefined;
  }
  get remotePort(): number | undefined {
    return this.conn?.remotePort;
  }
  get remoteFamily(): string | undefined {
    return this.conn ? this.names?.family : undefined;
  }
  // Both ends stay named after the close. Node keeps the remote end once read (it caches
  // getpeername); its local end comes from getsockname and is gone with the descriptor, but
  // code that names a connection by its local port after its end (tests here do) keeps working.
  get localAddress(): string | undefined {
    return this.conn ? this.names?.local : undefined;
  }
  get localFamily(): string | undefined {
    return this.conn ? this.names?.family : undefined;
  }
  get localPort(): number | undefined {
    return this.conn?.localPort;
  }
  get timeout(): number | undefined {
    return this.timeoutSet ? this.idleTimeoutMs : undefined;
  }

  address(): { address: string; family: string; port: number } | Record<string, never> {
    if (!this.conn) return {};
    const n = this.names;
    return { address: n?.local ?? '', family: n?.family ?? 'IPv4', port: this.conn.localPort };
  }

  setNoDelay(noDelay = true): this {
    if (this.isMoving) this.waitingForMove.push(() => this.conn?.setNoDelay(noDelay));
    else this.conn?.setNoDelay(noDelay);
    return this;
  }

  setKeepAlive(enable = false, initialDelayMs = 0): this {
    const idle = initialDelayMs > 0 ? initialDelayMs : undefined;
    if (this.isMoving) this.waitingForMove.push(() => this.conn?.setKeepAlive(enable, idle));
    else this.conn?.setKeepAlive(enable, idle);
    return this;
  }

  /** Like net.Socket#setTimeout: emit 'timeout' after `ms` of inactivity (0 disables). */
  setTimeout(ms: number, cb?: () => void): this {
    if (!Number.isFinite(ms) || ms < 0)
      throw new InvalidArgumentError(`timeout must be a non-negative number of ms, got ${ms}`);
    if (cb) {
      if (ms === 0) this.removeListener('timeout', cb);
      else this.once('timeout', cb);
    }
    this.idleTimeoutMs = ms;
    this.timeoutSet = true;
    if (ms === 0) {
      this.idleTimer?.disarm();
      return this;
    }
    if (!this.idleTimer) this.idleTimer = this.host.clock.createTimer(this.onIdleTimer);
    this.touch();
    return this;
  }

  ref(): this {
    return this;
  }
  unref(): this {
    return this;
  }

  /**
   * Like net.Socket#destroySoon: end, and destroy once the end is sent. Node's http server calls
   * it after a response that closes the connection.
   */
  destroySoon(): void {
    if (this.writable) this.end();
    if (this.writableFinished) this.destroy();
    else this.once('finish', () => this.destroy());
  }

  /** Reset the connection (RST), like net.Socket#resetAndDestroy. */
  resetAndDestroy(): this {
    if (this.conn && !this.closedByStack) {
      this.closedByStack = true;
      if (this.isMoving) this.waitingForMove.push(() => this.conn?.abort());
      else this.conn.abort();
    }
    this.destroy();
    return this;
  }

  // ---- TcpUser: indications from whoever runs the connection ----

  onConnected(): void {
    if (!this._connecting) return;
    this._connecting = false;
    this.touch();
    const waiting = this.waitingForConnect;
    this.waitingForConnect = [];
    for (const w of waiting) w();
    this.emit('connect');
    this.emit('ready');
    if (this.wantRead) this.pull();
  }

  onReadable(): void {
    if (this.wantRead) this.pull();
  }

  onWritable(): void {
    if (this.partBound > 0) this.partBound = this.partBound * 2 >= this.sendTarget ? 0 : this.partBound * 2;
    this.flushPending();
  }

  onRemoteEnd(): void {
    this.remoteEnded = true;
    // Not only when the application reads: with nothing left unread the end is pushed now, so a
    // socket never read still ends, and closes, at the peer's FIN (as net.Socket does). Not while
    // queued: its 'end' would come before 'connection', and with allowHalfOpen off end it unseen.
    if (!this.held) this.pull();
  }

  onClosed(error: ConnectionError | null): void {
    this.closedByStack = true;
    const connecting = this._connecting;
    this._connecting = false;
    // The idle timer stays: a socket with data (or a reset) still unread is open to its
    // application, and Node's 'timeout' still comes to it; _destroy disarms it.
    if (error && !this.remoteEnded) {
      if (connecting) {
        error.syscall ??= 'connect';
        error.address ??= this.names?.remote;
        error.port ??= this.conn?.remotePort;
      } else error.syscall ??= 'read';
      if (this.held) this.heldError = error;
      else this.failAfterData(error);
      return;
    }
    // Orderly close, or a failure after the peer's FIN, which reads never show: on Linux a read
    // returns the data, then EOF (tcp_recvmsg looks at SOCK_DONE before sk_err), and only a write
    // learns of it (EPIPE after a reset in CLOSE_WAIT). Deliver what is left, then end; a write
    // still waiting can no longer go out.
    this.remoteEnded = true;
    if (this.pendingCb) {
      const code = error && error.code !== 'ECONNRESET' ? error.code : 'EPIPE';
      this.failPending(writeError(code, 'connection closed with data unsent'));
    }
    if (!this.held) this.pull();
  }

  // ---- Duplex implementation ----

  override _read(): void {
    this.wantRead = true;
    this.pull();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this._connecting || !this.conn) {
      this.waitingForConnect.push(() => this._write(chunk, _enc, cb));
      return;
    }
    if (this.isMoving || this.orphaned) {
      this.waitingForMove.push(() => this._write(chunk, _enc, cb));
      return;
    }
    if (this.closedByStack) {
      // A reset not yet read (data before it waits): the write reports it, as send(2) reports
      // the socket's pending error before EPIPE; Node then destroys the socket, unread data too.
      const failed = this.failure;
      this.failure = null;
      cb(
        failed
          ? writeError(failed.code, failed.message)
          : writeError('EPIPE', 'write after the connection closed'),
      );
      return;
    }
    this.pendingChunk = chunk;
    this.pendingOffset = 0;
    this.pendingCb = cb;
    this.flushPending();
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this._connecting || !this.conn) {
      this.waitingForConnect.push(() => this._final(cb));
      return;
    }
    if (this.isMoving) {
      this.waitingForMove.push(() => this._final(cb));
      return;
    }
    if (!this.closedByStack) {
      try {
        this.conn.shutdown();
      } catch (e) {
        cb(e as Error);
        return;
      }
    }
    cb();
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.idleTimer?.disarm();
    this._connecting = false;
    if (this.conn && !this.closedByStack) {
      this.closedByStack = true;
      const finish = (): void => {
        const conn = this.conn;
        if (!conn) return;
        // Like close(2), which net.Socket#destroy calls whatever the error: unread data means the
        // peer must learn of it (RST); otherwise FIN.
        if (conn.readableLength > 0) conn.abort();
        else conn.close();
      };
      if (this.isMoving) this.waitingForMove.push(finish);
      else finish();
    } else this.conn?.dropUnread?.();
    if (this.pendingCb) {
      const pcb = this.pendingCb;
      this.pendingCb = null;
      this.pendingChunk = null;
      pcb(err ?? writeError('EPIPE', 'socket destroyed with a write pending'));
    }
    this.failure = null;
    cb(err);
    // net.Socket emits 'close' from its handle's close callback, which libuv runs after the loop's
    // check phase: after the stream's own 'error' (queued by cb), after what that error's (or the
    // 'end''s) listeners queued with process.nextTick, and after the setImmediate callbacks queued
    // meanwhile. An immediate queued from a tick behind those comes in that order.
    process.nextTick(closeAfterImmediates, this, err !== null && err !== undefined, this.host.clock);
  }

  /**
   * The connection failed: the error shows once the data received before it is read, as on
   * Linux, and only to a socket that reads. Node reads ahead while its stream holds less than its
   * high-water mark and stops at it: a paused or slow reader learns of a reset at once if the
   * stream has room (what the stream holds then is lost with it), and otherwise once the
   * application has read the stream down; the same here. A write waiting when it comes fails at
   * once, as libuv's write does, and takes the socket down with what is unread.
   */
  private failAfterData(err: ConnectionError): void {
    if (this.conn && !this.destroyed) {
      this.failure = err;
      if (this.readableLength < this.readableHighWaterMark) this.wantRead = true;
      this.pull();
      if (this.failure === null || !this.pendingCb) return;
      this.failure = null;
    }
    this.failPending(err);
    this.destroy(err);
  }

  private pull(): void {
    const conn = this.conn;
    if (!conn || this.endPushed || this.isMoving) return;
    while (this.wantRead) {
      const n = conn.readableLength;
      if (n === 0) break;
      const chunk = Buffer.allocUnsafe(Math.min(n, READ_CHUNK));
      const got = conn.read(chunk, 0, chunk.length);
      if (got === 0) break;
      this._bytesRead += got;
      this.touch();
      this.wantRead = this.push(got === chunk.length ? chunk : chunk.subarray(0, got));
    }
    if (this.failure !== null) {
      // Reads only find the failure past the data, and only while the stream asks for more.
      if (conn.readableLength > 0 || !this.wantRead) return;
      const err = this.failure;
      this.failure = null;
      this.failPending(err);
      this.destroy(err);
      return;
    }
    if (this.remoteEnded && conn.readableLength === 0 && !this.endPushed) {
      this.endPushed = true;
      this.push(null);
      // Like Node's stream_base_commons at EOF: a read of nothing lets 'end' out of a stream in
      // paused mode that holds no data, so it does not wait for a reader that may never come.
      this.read(0);
    }
  }

  /**
   * The connection's state left it with no move begun here: its NIC crashed, and the host has not
   * yet begun rebuilding it from the hard state (which then moves this socket, and its waiting
   * writes go to the rebuilt connection; if it is lost, they fail there).
   */
  private get orphaned(): boolean {
    return (this.conn as { released?: boolean } | null)?.released === true;
  }

  /**
   * One flush at a time: a flush can call back into this socket (the connection reports
   * onWritable, or the write's callback hands the stream's next chunk to _write) before it has
   * counted what it wrote, and a second flush then would count those bytes against the next chunk
   * (losing its start) or write them twice. A call meanwhile asks for another round instead.
   */
  private flushPending(): void {
    if (this.flushing) {
      this.flushAgain = true;
      return;
    }
    this.flushing = true;
    try {
      do {
        this.flushAgain = false;
        this.flushOnce();
      } while (this.flushAgain);
    } finally {
      this.flushing = false;
    }
  }

  private flushOnce(): void {
    const conn = this.conn;
    const chunk = this.pendingChunk;
    if (!conn || !chunk || this.isMoving || this.orphaned) return;
    const queued = conn.writableLength;
    // Held at the target last time, and the sender has sent all of it since: the target, not a
    // window, bounds this connection.
    if (this.heldAtTarget && conn.sendDry && this.sendTarget < SEND_TARGET_MAX) this.sendTarget *= 2;
    // A ring that grew (asked ahead of the flight, tcp-mem.ts sendRingTarget) is filled at once:
    // held at the old target, the writer would leave it to drain dry before the target doubled.
    const grown = conn.sendGrown ?? 0;
    if (grown > this.sendTarget) this.sendTarget = Math.min(grown, SEND_TARGET_MAX);
    const want = chunk.length - this.pendingOffset;
    const room = Math.max(0, this.sendTarget - queued);
    const part = this.partBound > 0 ? Math.max(0, this.partBound - queued) : room;
    const len = Math.min(want, room, part);
    // Held by a resume's first part, not by the target: no sign the target bounds the sender.
    this.heldAtTarget = len < want && room <= part;
    let n = 0;
    try {
      if (len > 0) n = conn.write(chunk, this.pendingOffset, len);
      // Held below the connection's own limit: the next acknowledgement is the time to refill.
      if (len < want && n === len) conn.notifyOnAck();
    } catch (e) {
      this.failPending(e as Error);
      return;
    }
    if (n > 0) {
      this.pendingOffset += n;
      this._bytesWritten += n;
      this.touch();
    }
    if (this.pendingOffset >= chunk.length) {
      const cb = this.pendingCb!;
      this.pendingChunk = null;
      this.pendingCb = null;
      cb();
    }
  }

  private failPending(err: Error): void {
    const cb = this.pendingCb;
    this.pendingChunk = null;
    this.pendingCb = null;
    cb?.(err);
  }

  private touch(): void {
    if (this.idleTimeoutMs > 0 && this.idleTimer) {
      this.lastActivity = this.host.clock.now();
      if (!this.idleTimer.armed) this.idleTimer.arm(this.idleTimeoutMs);
    }
  }

  private readonly onIdleTimer = (): void => {
    if (this.idleTimeoutMs <= 0 || this.destroyed) return;
    const idle = this.host.clock.now() - this.lastActivity;
    if (idle >= this.idleTimeoutMs) {
      // Like Node: one 'timeout' per idle period; the next activity re-arms the timer.
      this.emit('timeout');
    } else {
      this.idleTimer!.arm(this.idleTimeoutMs - idle);
    }
  };

  /** @internal used by the connect path to report an immediate failure asynchronously. */
  _failConnect(err: Error): void {
    this._connecting = false;
    this.destroy(err);
  }

  /** @internal */
  _assertOpenForConnect(): void {
    if (this.conn) throw new InvalidStateError('socket is already connected or connecting');
  }
}
