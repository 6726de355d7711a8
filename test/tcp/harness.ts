import { VirtualClock } from '../../src/core/clock.ts';
import { Counters } from '../../src/core/counters.ts';
import type { ConnectionError } from '../../src/core/errors.ts';
import { SeededRandom } from '../../src/core/random.ts';
import { tcpHeaderOf } from '../../src/sim/raw-peer.ts';
import type { IpSender } from '../../src/stack/ip-sender.ts';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import { TcpLayer } from '../../src/stack/tcp/tcp-layer.ts';
import type { TcpHostEnv, TcpUser } from '../../src/stack/tcp/tcp-types.ts';
import { windowClamp } from '../../src/stack/tcp/tcp-window.ts';
import { createNeighborState } from '../../src/state/neighbor-state.ts';
import { createPathState, type PathState } from '../../src/state/path-state.ts';
import type { TcpCached } from '../../src/state/tcp-state.ts';
import {
  createTcpHeader,
  decodeTcp,
  encodeTcpHeader,
  finishTcpChecksum,
  TcpFlag,
  type TcpHeader,
} from '../../src/wire/tcp.ts';

export const LOCAL = 0x0a000001; // 10.0.0.1
export const REMOTE = 0x0a000002; // 10.0.0.2
export const UNROUTABLE = 0x0b000009;
export const { FIN, SYN, RST, PSH, ACK } = TcpFlag;

/** A segment our layer sent, decoded. */
export interface Seg {
  h: TcpHeader;
  data: Uint8Array;
  src: number;
  dst: number;
  ttl: number | undefined;
  /** The IP TOS byte the segment went with (its low two bits: the ECN field). */
  tos?: number;
  at: number;
}

const HDR_ROOM = 34;

/** Captures every segment into `out` (decoded), like a wire tap after the IP layer. */
export class CaptureSender implements IpSender {
  readonly txBuf = new Uint8Array(HDR_ROOM + 70_000);
  readonly out: Seg[] = [];
  /** If set, called with each raw segment instead of (or besides) capture. */
  onSegment: ((path: PathState, seg: Uint8Array) => void) | null = null;
  /**
   * While this returns true, commit refuses packets as a full transmit queue would: they never
   * leave the host, so they go to `refused` instead of `out`, and commit returns false.
   */
  refuse: (() => boolean) | null = null;
  readonly refused: Seg[] = [];
  constructor(private readonly clock: VirtualClock) {}
  begin(): number {
    return HDR_ROOM;
  }
  commit(
    path: PathState,
    protocol: number,
    l4Len: number,
    _df: boolean,
    ttl?: number,
    tos?: number,
  ): boolean {
    if (protocol !== 6) throw new Error('not TCP');
    const raw = this.txBuf.slice(HDR_ROOM, HDR_ROOM + l4Len);
    if (this.onSegment) {
      this.onSegment(path, raw);
      return true;
    }
    const h = createTcpHeader();
    const err = decodeTcp(raw, 0, raw.length, path.const.localIp, path.const.remoteIp, h);
    if (err) throw new Error(`engine sent a bad segment: ${err}`);
    const refuse = this.refuse?.() === true;
    (refuse ? this.refused : this.out).push({
      h,
      data: raw.subarray(h.headerLength),
      src: path.const.localIp,
      dst: path.const.remoteIp,
      ttl,
      tos,
      at: this.clock.now(),
    });
    return !refuse;
  }
}

export class Env implements TcpHostEnv {
  readonly clock: VirtualClock;
  readonly random: SeededRandom;
  readonly counters = new Counters();
  readonly ip: CaptureSender;
  readonly paths = new Map<number, PathState>();
  mtu: number;
  constructor(seed = 1, mtu = 1500, localIp = LOCAL, startMs = 1000) {
    this.clock = new VirtualClock(startMs);
    this.random = new SeededRandom(seed);
    this.ip = new CaptureSender(this.clock);
    this.mtu = mtu;
    this.localIp = localIp;
  }
  readonly localIp: number;
  pathTo(remoteIp: number, localIp?: number): PathState | null {
    if (remoteIp === UNROUTABLE) return null;
    let p = this.paths.get(remoteIp);
    if (!p) {
      const nb = createNeighborState({ srcMac: 1, vlanId: -1, ip: remoteIp }, 2, 0);
      p = createPathState({ localIp: localIp ?? this.localIp, remoteIp }, nb, 0, this.mtu);
      this.paths.set(remoteIp, p);
    }
    return p;
  }
  isLocal(ip: number): boolean {
    return ip === this.localIp;
  }
}

export type Ev = string;

/** A TcpUser that records what happened, in order. */
export class Recorder implements TcpUser {
  readonly events: Ev[] = [];
  error: ConnectionError | null | undefined = undefined;
  onConnected(): void {
    this.events.push('connected');
  }
  onReadable(): void {
    this.events.push('readable');
  }
  onWritable(): void {
    this.events.push('writable');
  }
  onRemoteEnd(): void {
    this.events.push('end');
  }
  onClosed(error: ConnectionError | null): void {
    this.events.push(error ? `closed:${error.code}` : 'closed');
    this.error = error;
  }
}

export interface InjectOpts {
  flags: number;
  seq: number;
  ack?: number;
  window?: number;
  data?: Uint8Array;
  srcPort?: number;
  dstPort?: number;
  src?: number;
  dst?: number;
  mss?: number;
  wscale?: number;
  sackPermitted?: boolean;
  ts?: [number, number];
  sack?: [number, number][];
  badChecksum?: boolean;
  /** The IP TOS byte the segment arrives with (default 0: not ECN-capable). */
  tos?: number;
}

/** Test bench: one TcpLayer on `env`, plus a scripted peer at REMOTE. */
export class Bench {
  readonly env: Env;
  readonly layer: TcpLayer;
  private readonly buf = new Uint8Array(70_000);
  private readonly h = createTcpHeader();
  /** `startMs`: the clock's reading at the start (a worker thread's clock starts near 0 at its spawn). */
  constructor(opts: { seed?: number; mtu?: number; defaults?: Partial<TcpCached>; startMs?: number } = {}) {
    this.env = new Env(opts.seed ?? 1, opts.mtu ?? 1500, LOCAL, opts.startMs);
    this.layer = new TcpLayer(this.env, opts.defaults);
  }
  get out(): Seg[] {
    return this.env.ip.out;
  }
  /** Take and clear the captured segments. */
  take(): Seg[] {
    return this.env.ip.out.splice(0);
  }
  last(): Seg {
    const s = this.env.ip.out.at(-1);
    if (!s) throw new Error('nothing sent');
    return s;
  }
  inject(o: InjectOpts): void {
    const h = this.h;
    const ts = o.ts && { val: o.ts[0], ecr: o.ts[1] };
    tcpHeaderOf({ ...o, srcPort: o.srcPort ?? 5000, dstPort: o.dstPort ?? 80, ts }, h);
    const src = o.src ?? REMOTE;
    const dst = o.dst ?? LOCAL;
    const hl = encodeTcpHeader(h, this.buf, 0);
    const data = o.data ?? new Uint8Array(0);
    this.buf.set(data, hl);
    finishTcpChecksum(this.buf, 0, hl + data.length, src, dst);
    if (o.badChecksum) this.buf[16]! ^= 0xff;
    this.layer.input({ src, dst, ttl: 64, tos: o.tos ?? 0, ifIndex: 0 }, this.buf, 0, hl + data.length);
  }
  advance(ms: number): void {
    this.env.clock.advance(ms);
  }
  /** Run deferred callbacks due now. */
  flush(): void {
    this.env.clock.runDue();
  }
  count(name: string): number {
    return this.env.counters.get(name);
  }
}

/** Sequence arithmetic for building peer segments. */
export function add(a: number, n: number): number {
  return (a + n) >>> 0;
}

export function bytes(n: number, seed = 7): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

export const PEER_ISN = 1_000_000;

export interface Opened {
  b: Bench;
  conn: TcpConnection;
  user: Recorder;
  /** Our ISN. */
  iss: number;
  /** Next sequence number the peer sends. */
  peerSeq: number;
}

/**
 * Active open to REMOTE:80 completed with a scripted SYN-ACK. Options for the SYN-ACK are chosen by
 * `synAck` (default: MSS 1460 only).
 */
export function activeOpen(
  b: Bench,
  synAck: Partial<InjectOpts> = {},
  options?: Partial<TcpCached>,
  /** Virtual time between the SYN and the SYN-ACK: the connection's first RTT sample. */
  rttMs = 0,
): Opened {
  const user = new Recorder();
  const conn = b.layer.connect({ remoteIp: REMOTE, remotePort: 80, options }, user);
  const syn = b.take()[0]!;
  const iss = syn.h.seq;
  if (rttMs > 0) b.advance(rttMs);
  b.inject({
    flags: SYN | ACK,
    seq: PEER_ISN,
    ack: add(iss, 1),
    srcPort: 80,
    dstPort: conn.localPort,
    mss: 1460,
    ...synAck,
  });
  return { b, conn, user, iss, peerSeq: add(PEER_ISN, 1) };
}

/** Passive open on port 80 from REMOTE:5000, completed with the final ACK. */
export function passiveOpen(
  b: Bench,
  syn: Partial<InjectOpts> = {},
  options?: Partial<TcpCached>,
): Opened & { synAck: Seg } {
  const user = new Recorder();
  let conn: TcpConnection | null = null;
  b.layer.listen({ port: 80, options }, (c) => {
    c.user = user;
    conn = c;
    return true;
  });
  b.inject({ flags: SYN, seq: PEER_ISN, mss: 1460, ...syn });
  const synAck = b.take()[0]!;
  const iss = synAck.h.seq;
  b.inject({
    flags: ACK,
    seq: add(PEER_ISN, 1),
    ack: add(iss, 1),
    ts: syn.ts ? [syn.ts[0] + 1, synAck.h.tsVal] : undefined,
  });
  if (!conn) throw new Error('not accepted');
  return { b, conn, user, iss, peerSeq: add(PEER_ISN, 1), synAck };
}

/** A bench whose link cuts super-segments (TSO): each packet handed to it is one recorded segment. */
export function tsoBench(): Bench {
  const b = new Bench();
  const ip = b.env.ip as unknown as Record<string, unknown>;
  ip.checksumOffload = () => true;
  ip.maxPacketBytes = () => 65535;
  ip.commitOffload = (path: PathState, l4Len: number) => {
    const raw = b.env.ip.txBuf.slice(34, 34 + l4Len);
    const h = createTcpHeader();
    decodeTcp(raw, 0, raw.length, path.const.localIp, path.const.remoteIp, h, false);
    b.env.ip.out.push({
      h,
      data: raw.subarray(h.headerLength),
      src: 0,
      dst: 0,
      ttl: 64,
      at: b.env.clock.now(),
    });
    return true;
  };
  return b;
}

/**
 * An active open (SACK offered unless `sack` is false) whose handshake output is taken and timers
 * run, on a link of `mtu`.
 */
export function openSettled(sack = true, defaults: Partial<TcpCached> = {}, mtu = 1500): Opened {
  const b = new Bench({ defaults, mtu });
  // A buffer named is the socket's own, as SO_RCVBUF: not tuned (tcp-window.ts).
  const own = defaults.rcvBufSize !== undefined ? { rcvBufSize: defaults.rcvBufSize } : undefined;
  const o = activeOpen(b, { sackPermitted: sack }, own);
  b.take();
  b.flush();
  return o;
}

/**
 * An active open (SYN-ACK options `synAck`) whose handshake output is taken and timers run, with
 * the peer's side of it: `send` a segment at the peer's next sequence number (`seqAt`), ACKing
 * snd.una unless it says otherwise; `deliver` data there and move the peer's sequence past it.
 */
export function openWithPeer(synAck: Partial<InjectOpts> = {}, defaults: Partial<TcpCached> = {}) {
  const b = new Bench({ defaults });
  const o = activeOpen(b, synAck);
  b.take();
  b.flush();
  const port = o.conn.localPort;
  let peerSeq = o.peerSeq;
  const send = (x: Partial<InjectOpts> & { flags?: number }) =>
    b.inject({
      flags: ACK,
      srcPort: 80,
      dstPort: port,
      seq: peerSeq,
      ack: o.conn.state.delegated.sndUna,
      ...x,
    });
  const deliver = (d: Uint8Array, x: Partial<InjectOpts> = {}): Uint8Array => {
    send({ ...x, data: d, seq: peerSeq });
    peerSeq = add(peerSeq, d.length);
    return d;
  };
  return { ...o, send, deliver, seqAt: () => peerSeq };
}

/** A segment from the peer of `o`. */
export function fromPeer(o: Opened, flags: number, seq: number, ack: number, data?: Uint8Array): void {
  o.b.inject({ flags, seq, ack, srcPort: 80, dstPort: o.conn.localPort, data });
}

/** The SACK blocks a segment carries, as [left, right) pairs. */
export function sackBlocks(s: Seg): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i < s.h.sackCount; i++) out.push([s.h.sackBlocks[2 * i]!, s.h.sackBlocks[2 * i + 1]!]);
  return out;
}

/**
 * The link MTU of a case that fills a 2000-byte buffer (shutOurWindow): our MSS 1000, so the buffer
 * is two whole segments of ours. Linux's tcp_select_initial_window offers a SYN's window in whole
 * segments of our MSS, a socket's own buffer (SO_RCVBUF) too: at MSS 1460 a 2000-byte buffer's SYN
 * offers 1460, past which the peer's second 1000 bytes would end, and with the first unread its
 * tcp_sequence drops them.
 */
export const FILL_2000_MTU = 1040;

/**
 * On a connection opened with rcvBufSize 2000 on a link of FILL_2000_MTU: we send 3000 bytes, the peer acknowledges none and
 * sends 2000, which shut our window. The ACK that says so waits for the delayed-ACK timer: nothing
 * was read, so the window offered now would be smaller than the last (Linux's __tcp_ack_snd_check).
 * Returns snd.una before our data.
 */
export function shutOurWindow(o: Opened): number {
  const { b, conn } = o;
  const una = conn.state.delegated.sndUna;
  pastStart(conn);
  conn.write(bytes(3000));
  if (b.take().length < 2) throw new Error('our data is not in flight');
  fromPeer(o, ACK, o.peerSeq, una, bytes(1000));
  fromPeer(o, ACK, add(o.peerSeq, 1000), una, bytes(1000));
  b.take();
  b.advance(conn.state.cached.delayedAckMs);
  const a = b.take().at(-1);
  if (a?.h.window !== 0) throw new Error('the window is not shut');
  return una;
}

/**
 * Take `conn` past its start, as a case that tests a later ACK means it: its quick ACKs spent
 * (tcp-ack-mode.ts) and its window's bound grown to the clamp (tcp-window.ts, growWindow), so
 * neither hurries an ACK that may wait.
 */
export function pastStart(conn: TcpConnection): void {
  conn.state.soft.quickAcks = 0;
  if (conn.state.soft.rcvSsthresh > 0) conn.state.soft.rcvSsthresh = windowClamp(conn.state);
}
