/**
 * The cases test/socket/node-shape.test.ts runs against node:net on loopback and against Chimney's
 * TcpSocket on the simulated network. Each case drives one socket (the subject, a client) and its
 * peer (the server's socket), and returns what the subject showed: its events in order, with the
 * state the application can read at each, and what the peer saw (kept apart: the two sockets'
 * events interleave as the loop happens to wake them, on loopback).
 *
 * Waits are for a condition where one is visible; a fixed wait only where the point is that
 * nothing shows (a reset a paused reader has not reached yet).
 */
import type { Duplex } from 'node:stream';

/** What the cases use of a net.Socket or a TcpSocket. */
export type Sock = Duplex & {
  readonly readyState: string;
  readonly bytesRead: number;
  readonly bytesWritten: number;
  readonly pending: boolean;
  readonly connecting: boolean;
  readonly remoteAddress?: string;
  readonly remotePort?: number;
  readonly remoteFamily?: string;
  readonly localAddress?: string;
  readonly localPort?: number;
  readonly timeout?: number;
  address(): unknown;
  setTimeout(ms: number, cb?: () => void): Sock;
  setNoDelay(v?: boolean): Sock;
  setKeepAlive(v?: boolean, ms?: number): Sock;
  resetAndDestroy(): Sock;
  destroySoon(): void;
};

export interface Side {
  /** The address the subject connects to. */
  host: string;
  /** Listen on a free port; `onPeer` gets each accepted socket. */
  listen(
    opts: { allowHalfOpen?: boolean },
    onPeer: (p: Sock) => void,
  ): Promise<{ port: number; close(): void }>;
  connect(port: number, opts: { allowHalfOpen?: boolean; highWaterMark?: number }): Sock;
  /** A port nothing listens on. */
  closedPort(): Promise<number>;
  sleep(ms: number): Promise<void>;
}

/** Events in order; a run of 'data' events is one line with its byte count (chunking differs). */
class Log {
  readonly lines: string[] = [];
  private dataBytes = 0;
  add(line: string): void {
    this.flush();
    this.lines.push(line);
  }
  data(n: number): void {
    this.dataBytes += n;
  }
  flush(): void {
    if (this.dataBytes === 0) return;
    this.lines.push(`data ${this.dataBytes}`);
    this.dataBytes = 0;
  }
}

type Err = Error & { code?: string; errno?: number; syscall?: string; address?: string; port?: number };

/**
 * `bytes` false: the close shows no byte counts (where how far Node read ahead, one read of up to
 * 64 KiB, is not Chimney's, which reads what the stream asks for).
 */
function watch(s: Sock, log: Log, target: { host: string; port: number }, bytes = true): void {
  for (const ev of ['connect', 'ready', 'end', 'finish', 'timeout'])
    s.on(ev, () => log.add(`${ev} ${s.readyState}`));
  s.on('data', (d: Buffer) => log.data(d.length));
  s.on('error', (e: Err) => {
    const at = e.address === undefined ? '' : ` at ${e.address === target.host && e.port === target.port}`;
    log.add(`error ${e.code} ${e.errno} ${e.syscall}${at}`);
  });
  s.on('close', (hadError: unknown) => {
    const counts = bytes ? ` read=${s.bytesRead} written=${s.bytesWritten}` : '';
    log.add(`close hadError=${hadError}${counts} ${s.readyState}`);
  });
}

function watchPeer(p: Sock, seen: string[]): void {
  let n = 0;
  p.on('data', (d: Buffer) => {
    n += d.length;
  });
  p.on('end', () => seen.push(`peer end after ${n}`));
  p.on('error', (e: Err) => seen.push(`peer error ${e.code}`));
}

async function until(side: Side, ok: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (ok()) return;
    await side.sleep(10);
  }
  throw new Error(`not reached: ${what}`);
}

interface Pair {
  s: Sock;
  peer: Sock;
  log: Log;
  peerSeen: string[];
  closed: () => boolean;
  /** Wait for the subject's 'close', a little more for the peer, and return everything seen. */
  finish(): Promise<string[]>;
}

async function pair(
  side: Side,
  o: { allowHalfOpen?: boolean; peerHalfOpen?: boolean; bytes?: boolean; highWaterMark?: number } = {},
): Promise<Pair> {
  let peer: Sock | null = null;
  const peerSeen: string[] = [];
  const server = await side.listen({ allowHalfOpen: o.peerHalfOpen }, (p) => {
    peer = p;
    watchPeer(p, peerSeen);
  });
  const log = new Log();
  const s = side.connect(server.port, { allowHalfOpen: o.allowHalfOpen, highWaterMark: o.highWaterMark });
  let closed = false;
  s.on('close', () => {
    closed = true;
  });
  watch(s, log, { host: side.host, port: server.port }, o.bytes);
  await until(side, () => peer !== null && !s.connecting, 'connected and accepted');
  return {
    s,
    peer: peer!,
    log,
    peerSeen,
    closed: () => closed,
    async finish() {
      await until(side, () => closed, "the subject's close");
      await side.sleep(100);
      server.close();
      log.flush();
      return [...log.lines, ...peerSeen];
    },
  };
}

/** The subject paused, the peer sends (`send`), then resets; a moment for each to arrive. */
async function pausedThenReset(side: Side, t: Pair, send: (peer: Sock) => void): Promise<void> {
  t.s.pause();
  send(t.peer);
  await side.sleep(100);
  t.peer.resetAndDestroy();
  await side.sleep(100);
}

/**
 * At each of `events` on the subject, queue a tick and an immediate that log themselves: where they
 * fall against 'close' is what an application can see of when the socket let go of its handle.
 */
function markQueues(t: Pair, events: string[]): void {
  for (const ev of events)
    t.s.on(ev, () => {
      process.nextTick(() => t.log.add(`tick after ${ev}`));
      setImmediate(() => t.log.add(`immediate after ${ev}`));
    });
}

/** More than Node reads ahead of a paused reader (its high-water mark): the rest waits in the kernel. */
const sendMore = (t: Pair) => (peer: Sock) => peer.write(Buffer.alloc(3 * t.s.readableHighWaterMark));

export const CASES: Record<string, (side: Side) => Promise<string[]>> = {
  async 'write before the connect, end; the peer answers and ends'(side) {
    const server = await side.listen({ allowHalfOpen: true }, (p) => {
      p.resume();
      p.on('end', () => p.end('pong'));
    });
    const log = new Log();
    const s = side.connect(server.port, {});
    watch(s, log, { host: side.host, port: server.port });
    s.write('ping');
    log.add(`written ${s.bytesWritten} ${s.readyState} pending=${s.pending} connecting=${s.connecting}`);
    let closed = false;
    s.on('close', () => {
      closed = true;
    });
    await until(side, () => !s.connecting, 'connected');
    s.end();
    log.add(`end() ${s.readyState}`);
    await until(side, () => closed, 'closed');
    server.close();
    log.flush();
    return log.lines;
  },

  async 'the peer ends'(side) {
    const t = await pair(side);
    t.peer.end('bye');
    return t.finish();
  },

  async 'the peer ends; allowHalfOpen keeps this side open until it ends'(side) {
    const t = await pair(side, { allowHalfOpen: true });
    t.peer.end('bye');
    await until(side, () => t.log.lines.some((l) => l.startsWith('end')), "the subject's end");
    await side.sleep(100);
    t.log.add(`still ${t.s.readyState}`);
    t.s.end('x');
    return t.finish();
  },

  async 'the peer resets after its data was read'(side) {
    const t = await pair(side);
    t.peer.write('hello');
    await until(side, () => t.s.bytesRead === 5, 'the data read');
    t.peer.resetAndDestroy();
    const lines = await t.finish();
    const code = await new Promise<string>((r) => t.s.write('x', (e) => r(String((e as Err | null)?.code))));
    return [...lines, `write after close: ${code}`];
  },

  async 'the peer resets after more data than a paused reader holds; the reader resumes'(side) {
    const t = await pair(side);
    await pausedThenReset(side, t, sendMore(t));
    t.log.add(`paused: closed=${t.closed()}`);
    t.s.resume();
    return t.finish();
  },

  async 'the peer resets after data that fills a paused reader; the reader resumes'(side) {
    // One segment fills a stream of this high-water mark: Node stops reading there, and does
    // not see the reset until the application reads the stream down.
    const t = await pair(side, { highWaterMark: 1024 });
    await pausedThenReset(side, t, (peer) => peer.write(Buffer.alloc(1200)));
    t.log.add(`paused: closed=${t.closed()}`);
    t.s.resume();
    return t.finish();
  },

  async 'the peer resets while a paused reader holds more data; this side writes'(side) {
    const t = await pair(side, { bytes: false });
    await pausedThenReset(side, t, sendMore(t));
    t.s.write('x', (e) => t.log.add(`write callback ${(e as Err | null)?.code}`));
    return t.finish();
  },

  async 'the peer resets while a paused reader holds more data; its idle timeout still comes'(side) {
    // The reset waits behind the data (the application has not read it): until then the socket
    // is open, and an application that reaps idle sockets with setTimeout must still hear it.
    const t = await pair(side, { bytes: false, highWaterMark: 1024 });
    t.s.setTimeout(300, () => t.s.destroy());
    t.s.once('data', () => t.s.pause());
    t.peer.write('x');
    await until(side, () => t.s.isPaused(), 'the first data read');
    await pausedThenReset(side, t, (peer) => peer.write(Buffer.alloc(10_000)));
    t.log.add(`paused: closed=${t.closed()}`);
    return t.finish();
  },

  async 'the peer ends while a paused reader holds more data; this side ends; its idle timeout still comes'(
    side,
  ) {
    const t = await pair(side, { bytes: false, highWaterMark: 1024, peerHalfOpen: true });
    t.s.setTimeout(300, () => t.s.destroy());
    t.s.once('data', () => t.s.pause());
    t.peer.write('x');
    await until(side, () => t.s.isPaused(), 'the first data read');
    t.peer.end(Buffer.alloc(10_000));
    await side.sleep(100);
    t.s.end();
    await side.sleep(100);
    t.log.add(`paused: closed=${t.closed()}`);
    return t.finish();
  },

  async 'the peer resets after a little data while this side is paused'(side) {
    const t = await pair(side);
    t.s.pause();
    t.peer.write('hello');
    await side.sleep(100);
    t.peer.resetAndDestroy();
    const lines = await t.finish();
    return [...lines, `read() after close: ${String(t.s.read())}`];
  },

  async 'the peer ends, then resets'(side) {
    const t = await pair(side, { peerHalfOpen: true });
    await pausedThenReset(side, t, (peer) => peer.end('bye'));
    t.log.add(`paused: closed=${t.closed()}`);
    t.s.resume();
    return t.finish();
  },

  async 'the peer ends, then resets; this half-open side writes'(side) {
    const t = await pair(side, { allowHalfOpen: true, peerHalfOpen: true });
    t.peer.end('bye');
    await until(side, () => t.log.lines.some((l) => l.startsWith('end')), "the subject's end");
    await side.sleep(100);
    t.peer.resetAndDestroy();
    await side.sleep(100);
    t.log.add(`after the reset: ${t.s.readyState}`);
    t.s.write('x', (e) => t.log.add(`write callback ${(e as Err | null)?.code}`));
    return t.finish();
  },

  async 'destroy()'(side) {
    const t = await pair(side);
    t.peer.resume();
    t.s.destroy();
    t.log.add(`destroy() ${t.s.readyState} destroyed=${t.s.destroyed}`);
    return t.finish();
  },

  async 'destroy(error)'(side) {
    const t = await pair(side);
    t.peer.resume();
    t.s.destroy(Object.assign(new Error('boom'), { code: 'EBOOM' }));
    return t.finish();
  },

  async 'idle timeout'(side) {
    const t = await pair(side);
    t.log.add(`timeout ${t.s.timeout}`);
    const ret = t.s.setTimeout(50);
    t.log.add(`setTimeout returns the socket: ${ret === t.s}; timeout ${t.s.timeout}`);
    await side.sleep(170);
    t.s.setTimeout(0);
    t.log.add(`timeout ${t.s.timeout}`);
    t.s.destroy();
    return t.finish();
  },

  async 'connection refused'(side) {
    const port = await side.closedPort();
    const log = new Log();
    const s = side.connect(port, {});
    watch(s, log, { host: side.host, port });
    log.add(`${s.readyState} pending=${s.pending} connecting=${s.connecting}`);
    let closed = false;
    s.on('close', () => {
      closed = true;
    });
    await until(side, () => closed, 'closed');
    log.flush();
    return log.lines;
  },

  async 'options return the socket; destroySoon'(side) {
    const t = await pair(side);
    t.peer.resume();
    const same = t.s.setNoDelay(true) === t.s && t.s.setKeepAlive(true, 1000) === t.s;
    t.log.add(`setNoDelay and setKeepAlive return the socket: ${same}`);
    t.s.write('abc');
    t.s.destroySoon();
    t.log.add(`destroySoon() ${t.s.readyState} writable=${t.s.writable}`);
    return t.finish();
  },

  async 'the peer ends: what was queued at the end runs before the close'(side) {
    const t = await pair(side);
    markQueues(t, ['end', 'finish']);
    t.peer.end('bye');
    return t.finish();
  },

  async 'the peer resets: what was queued at the error runs before the close'(side) {
    const t = await pair(side);
    markQueues(t, ['error']);
    t.peer.resetAndDestroy();
    return t.finish();
  },

  async 'destroy(): what was queued at the call runs before the close'(side) {
    const t = await pair(side);
    t.peer.resume();
    t.s.destroy();
    process.nextTick(() => t.log.add('tick after destroy()'));
    setImmediate(() => t.log.add('immediate after destroy()'));
    return t.finish();
  },

  async 'addresses after the close'(side) {
    const t = await pair(side);
    t.peer.resume();
    const before = [t.s.remoteAddress, t.s.remotePort, t.s.remoteFamily];
    t.log.add(
      `before: local ${t.s.localAddress !== undefined} ${JSON.stringify(Object.keys(t.s.address() as object))}`,
    );
    t.s.destroy();
    const after = [t.s.remoteAddress, t.s.remotePort, t.s.remoteFamily];
    const lines = await t.finish();
    // Not the local end: Node's is gone with its descriptor, Chimney's stays (tcp-socket.ts).
    const kept = JSON.stringify(after) === JSON.stringify(before);
    return [...lines, `remote kept: ${kept} ${t.s.remoteFamily}`, `pending=${t.s.pending}`];
  },
};
