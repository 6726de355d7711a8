/**
 * Wire-level conformance harness (in the spirit of gVisor's packetimpact): a tester that plays the
 * TCP peer frame by frame on a TAP of its own, and a device under test (DUT) that is either the
 * Linux kernel (a socket agent in a namespace behind a veth) or Chimney (a stack on a second TAP),
 * all ports of one bridge. Every case is written once against the `Dut` interface and runs against
 * both; the case asserts the correct answer, so Linux checks the case and the case checks Chimney.
 *
 *   bridge chb-<tag> ── cht-<tag>0  the tester's TAP (no vnet header: the kernel hands it whole,
 *                    │              summed frames, never super-segments)
 *                    ├─ cht-<tag>1  Chimney's TAP (offloads off: one segment is one frame)
 *                    └─ chv-<tag>   veth into chns-<tag>, where linux-agent.py runs
 *
 * The tester takes a fresh address per case (10.9.<subnet>.100+, fd00:<subnet>::100+), so what one
 * case leaves behind in the kernel (a TIME_WAIT, a lowered path MTU, a route's rto_min) never
 * reaches the next.
 *
 * Every case runs on both families (`VARIANTS`): over IPv4 the tester resolves with ARP and
 * reports path MTU with ICMP frag-needed, over IPv6 with neighbor discovery and packet too big
 * (peer6.ts). The kernel holds 10.9.<subnet>.1 and fd00:<subnet>::1, Chimney .2 and ::2.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ipv6Settled, tapStackOptions } from '../../src/cli/tap-host.ts';
import { RealClock } from '../../src/core/clock.ts';
import { CryptoRandom } from '../../src/core/random.ts';
import { TapLink } from '../../src/link/tap-link.ts';
import { RawPeer, type RawSegment } from '../../src/sim/raw-peer.ts';
import { Host } from '../../src/socket/host.ts';
import type { TcpServer } from '../../src/socket/tcp-server.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { Stack } from '../../src/stack/stack.ts';
import { effectiveMss } from '../../src/stack/tcp/congestion.ts';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import { OUTPUT_BUDGET_BYTES } from '../../src/stack/tcp/tcp-output.ts';
import { rcvMss } from '../../src/stack/tcp/tcp-window.ts';
import type { TcpCached } from '../../src/state/tcp-state.ts';
import { parseIpv4, parseIpv6, parseMac, TcpFlag, type TcpHeader } from '../../src/wire/index.ts';
import { assertCleanCapture, type Capture, readCapture, startCapture } from '../helpers/tshark.ts';
import { interopGate, type Lab, makeLab, python3, sleep } from '../interop/lab.ts';
import { RawPeer6 } from './peer6.ts';

export { TcpFlag };
export const { FIN, SYN, RST, PSH, ACK } = TcpFlag;

// ---------------------------------------------------------------------------------------------
// Sequence arithmetic (RFC 9293 3.4) for the assertions.

export const seqAdd = (a: number, n: number): number => (a + n) >>> 0;
export const seqDiff = (a: number, b: number): number => (a - b) | 0;
export const seqGt = (a: number, b: number): boolean => seqDiff(a, b) > 0;
export const seqGe = (a: number, b: number): boolean => seqDiff(a, b) >= 0;

// ---------------------------------------------------------------------------------------------
// The device under test.

export type DutKind = 'linux' | 'chimney';
export const DUTS: DutKind[] = ['linux', 'chimney'];
export type Family = 4 | 6;

/** One run of a case: which stack answers, over which IP version. */
export interface Variant {
  kind: DutKind;
  family: Family;
  /** 'linux/v4', 'chimney/v6', ... for test names. */
  name: string;
}
export const VARIANTS: Variant[] = ([4, 6] as const).flatMap((family) =>
  DUTS.map((kind) => ({ kind, family, name: `${kind}/v${family}` })),
);

export interface DutConfig {
  /**
   * Receive buffer (Linux: SO_RCVBUF, which the kernel doubles and which turns its autotuning
   * off; Chimney: rcvBufSize, not autotuned: TcpLayer.fixedRcvBuf). Unset: both autotune.
   */
  rcvBuf?: number;
  keepalive?: { idleS: number; intvlS: number; cnt: number };
  /** Minimum RTO towards the tester (Linux: the route's rto_min; Chimney: minRtoMs). */
  rtoMinMs?: number;
  /**
   * Congestion control towards the tester (Linux: the route's congctl, which a passive open takes
   * from the route as an active one does; Chimney: cached.congestion). Unset, Linux runs the lab's
   * default (BBR here), whose window never goes under four segments (bbr_cwnd_min_target) even in
   * its Loss state: where a case counts what one ACK releases, both must run the same algorithm.
   * 'reno' is Linux's tcp_reno and Chimney's 'newreno'.
   */
  congestion?: 'cubic' | 'reno';
  /** The application reads what arrives (default true); `read(id)` starts a paused reader. */
  read?: boolean;
}

export type DutEvent =
  | { ev: 'listening'; port: number }
  | { ev: 'unlistened'; port: number }
  | { ev: 'accepted'; id: number; port: number }
  | { ev: 'connected'; id: number }
  | { ev: 'data'; id: number; bytes: number }
  | { ev: 'eof'; id: number; bytes: number }
  | { ev: 'error'; id: number; code: string }
  | ({ ev: 'info'; q: number } & DutInfo);

/**
 * What a DUT's sender holds now: its retransmission timeout, its congestion window and the
 * segments it sent that it has not seen acknowledged (Linux: TCP_INFO's tcpi_rto, tcpi_snd_cwnd,
 * tcpi_unacked). A case whose answer depends on them (an idle measured in RTOs, a window large
 * enough to halve, every ACK taken) waits for them rather than guessing from time. And what its
 * receiver estimates the tester's segment size to be (tcpi_rcv_mss), which its ACK decisions count
 * in, where the ACKs themselves cannot show it whatever the timing.
 */
export interface DutInfo {
  rtoMs: number;
  cwnd: number;
  unacked: number;
  rcvMss: number;
}

/**
 * The bound on a handshake's steps (a SYN-ACK, an accept, an address ready): what must come, not a
 * window a case measures. A fresh Chimney DUT runs its first SYN through code not yet compiled, in
 * this process; at load 45 on 2 cores that took more than 5 s once and failed a case that waited
 * 5 s. A stall that long also lets the bound's timer run before the frames that answer it: Node
 * runs expired timers before it polls for I/O.
 */
export const HANDSHAKE_MS = 30_000;

export const accepted = (e: DutEvent): e is Extract<DutEvent, { ev: 'accepted' }> => e.ev === 'accepted';

export interface Dut {
  readonly kind: DutKind;
  readonly ip: string;
  /** Resolves once the DUT's address is usable (no Chimney IPv6 address is tentative). */
  ready(): Promise<void>;
  listen(port: number): Promise<void>;
  unlisten(port: number): Promise<void>;
  /** Active open from `lport` to the tester; the outcome arrives as a 'connected' or 'error' event. */
  connect(ip: string, port: number, lport: number): void;
  write(id: number, n: number): void;
  shutdown(id: number): void;
  close(id: number): void;
  read(id: number): void;
  info(id: number): Promise<DutInfo>;
  /** The next event (from the start of the log) satisfying `pred`, waiting up to `ms`. */
  event<E extends DutEvent>(pred: (e: DutEvent) => e is E, ms: number, what: string): Promise<E>;
  event(pred: (e: DutEvent) => boolean, ms: number, what: string): Promise<DutEvent>;
  readonly log: DutEvent[];
  stop(): Promise<void>;
}

abstract class DutBase {
  readonly log: DutEvent[] = [];
  private readonly bell = new EventEmitter();
  protected push(e: DutEvent): void {
    this.log.push(e);
    this.bell.emit('ev');
  }
  event(pred: (e: DutEvent) => boolean, ms: number, what: string): Promise<DutEvent> {
    return new Promise((res, rej) => {
      const check = (): boolean => {
        const e = this.log.find(pred);
        if (!e) return false;
        clearTimeout(timer);
        this.bell.off('ev', onEv);
        res(e);
        return true;
      };
      const onEv = (): void => {
        check();
      };
      const timer = setTimeout(() => {
        this.bell.off('ev', onEv);
        rej(new Error(`DUT: no ${what} in ${ms} ms; events: ${JSON.stringify(this.log)}`));
      }, ms);
      if (!check()) this.bell.on('ev', onEv);
    });
  }
}

class LinuxDut extends DutBase implements Dut {
  readonly kind = 'linux' as const;
  private readonly proc: ChildProcess;
  constructor(
    lab: Lab,
    readonly ip: string,
    private readonly cfg: DutConfig,
    testerIp: string,
  ) {
    super();
    if (cfg.rtoMinMs !== undefined || cfg.congestion !== undefined) {
      const metrics: string[] = [];
      if (cfg.rtoMinMs !== undefined) metrics.push('rto_min', `${cfg.rtoMinMs}ms`);
      if (cfg.congestion !== undefined) metrics.push('congctl', cfg.congestion);
      lab.ip('-n', lab.ns, 'route', 'replace', hostRoute(testerIp), 'dev', lab.vethPeer, ...metrics);
    }
    this.proc = lab.spawnNs([python3(), '-u', join(import.meta.dirname, 'linux-agent.py'), ip], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    createInterface({ input: this.proc.stdout! }).on('line', (l) => this.push(JSON.parse(l) as DutEvent));
    this.proc.stderr!.on('data', (d: Buffer) => process.stderr.write(`linux-agent: ${d}`));
  }
  async ready(): Promise<void> {}
  private cmd(c: Record<string, unknown>): void {
    this.proc.stdin!.write(`${JSON.stringify(c)}\n`);
  }
  private get opts(): Record<string, unknown> {
    return { rcvBuf: this.cfg.rcvBuf, keepalive: this.cfg.keepalive, read: this.cfg.read ?? true };
  }
  async listen(port: number): Promise<void> {
    const n = this.log.length;
    this.cmd({ op: 'listen', port, opts: this.opts });
    await this.event(
      (e) => this.log.indexOf(e) >= n && e.ev === 'listening' && e.port === port,
      10_000,
      'listening',
    );
  }
  async unlisten(port: number): Promise<void> {
    this.cmd({ op: 'unlisten', port });
    await this.event((e) => e.ev === 'unlistened' && e.port === port, 10_000, 'unlistened');
  }
  connect(ip: string, port: number, lport: number): void {
    this.cmd({ op: 'connect', ip, port, lport, opts: this.opts });
  }
  write(id: number, n: number): void {
    this.cmd({ op: 'write', id, n });
  }
  shutdown(id: number): void {
    this.cmd({ op: 'shutdown', id });
  }
  close(id: number): void {
    this.cmd({ op: 'close', id });
  }
  read(id: number): void {
    this.cmd({ op: 'read', id });
  }
  private queries = 0;
  async info(id: number): Promise<DutInfo> {
    const q = ++this.queries;
    this.cmd({ op: 'info', id, q });
    const e = await this.event((x) => x.ev === 'info' && x.q === q, 10_000, 'TCP_INFO');
    const { rtoMs, cwnd, unacked, rcvMss } = e as DutInfo;
    return { rtoMs, cwnd, unacked, rcvMss };
  }
  async stop(): Promise<void> {
    this.proc.stdin!.end();
    this.proc.kill('SIGKILL');
  }
}

class ChimneyDut extends DutBase implements Dut {
  readonly kind = 'chimney' as const;
  private readonly stack: Stack;
  private readonly host: Host;
  private readonly tap: TapLink;
  private readonly socks = new Map<number, TcpSocket>();
  private readonly servers = new Map<number, TcpServer>();
  private nextId = 0;
  constructor(
    tap: string,
    readonly ip: string,
    /** The IPv4 address every Chimney host needs (the one tested when `ip` is IPv4). */
    ip4: string,
    mac: string,
    private readonly cfg: DutConfig,
  ) {
    super();
    const tcp: Partial<TcpCached> = { sndBufSize: 1 << 20, rcvBufSize: cfg.rcvBuf ?? 1 << 20 };
    if (cfg.rtoMinMs !== undefined) tcp.minRtoMs = cfg.rtoMinMs;
    if (cfg.congestion !== undefined) tcp.congestion = cfg.congestion === 'reno' ? 'newreno' : cfg.congestion;
    if (cfg.keepalive) {
      tcp.keepAlive = true;
      tcp.keepIdleMs = cfg.keepalive.idleS * 1000;
      tcp.keepIntvlMs = cfg.keepalive.intvlS * 1000;
      tcp.keepCount = cfg.keepalive.cnt;
    }
    const ips = ip === ip4 ? [`${ip}/24`] : [`${ip4}/24`, `${ip}/64`];
    // A fresh Chimney per case, built as createTapHost builds `serve`'s but with its addresses
    // usable at once, as the kernel's (added `nodad`): duplicate address detection's one probe
    // and its 1 s RetransTimer added 1 s to each of the 40 Chimney IPv6 cases' set-up (42 s of
    // the CI run) and TCP conformance looks at none of it; DAD has tests of its own (test/ipv6,
    // test/stack/ipv6, test/interop/ipv6, the TAP labs).
    const clock = new RealClock();
    this.tap = TapLink.open({ name: tap, clock });
    const o = tapStackOptions({ tcp }, clock, new CryptoRandom());
    this.stack = new Stack({ ...o, ipv6: { ...o.ipv6, dadTransmits: 0 } });
    this.stack.tcp.outputBudget = OUTPUT_BUDGET_BYTES;
    // As Linux's SO_RCVBUF, which turns its autotuning off.
    this.stack.tcp.fixedRcvBuf = cfg.rcvBuf !== undefined;
    this.stack.addInterface(this.tap, { mac, ip: ips, offload: false });
    this.host = new Host(this.stack);
  }
  ready(): Promise<void> {
    return ipv6Settled(this.stack, HANDSHAKE_MS);
  }
  private register(s: TcpSocket): number {
    const id = ++this.nextId;
    this.socks.set(id, s);
    let total = 0;
    const onData = (d: Buffer): void => {
      total += d.length;
      this.push({ ev: 'data', id, bytes: total });
    };
    s.on('end', () => this.push({ ev: 'eof', id, bytes: total }));
    s.on('error', (e: Error & { code?: string }) =>
      this.push({ ev: 'error', id, code: e.code ?? e.message }),
    );
    if (this.cfg.read ?? true) s.on('data', onData);
    else {
      s.pause();
      // A stream paused by hand stays paused when a 'data' listener arrives: resume it too.
      (s as unknown as { startRead: () => void }).startRead = () => s.on('data', onData).resume();
    }
    return id;
  }
  async listen(port: number): Promise<void> {
    const srv = this.host.createServer({ allowHalfOpen: true }, (s) => {
      const id = this.register(s);
      this.push({ ev: 'accepted', id, port });
    });
    this.servers.set(port, srv);
    await new Promise<void>((res) => srv.listen(port, this.ip, () => res()));
    this.push({ ev: 'listening', port });
  }
  async unlisten(port: number): Promise<void> {
    // Stops accepting at once; the accepted connections stay the case's to drive.
    this.servers.get(port)!.close();
    this.servers.delete(port);
    this.push({ ev: 'unlistened', port });
  }
  connect(ip: string, port: number, lport: number): void {
    const s = this.host.connect({ host: ip, port, localPort: lport, allowHalfOpen: true });
    let id = 0;
    s.once('connect', () => {
      id = this.register(s);
      this.push({ ev: 'connected', id });
    });
    s.once('error', (e: Error & { code?: string }) => {
      if (id === 0) this.push({ ev: 'error', id: 0, code: e.code ?? e.message });
    });
  }
  write(id: number, n: number): void {
    this.socks.get(id)!.write(Buffer.alloc(n, 0x78));
  }
  shutdown(id: number): void {
    this.socks.get(id)!.end();
  }
  close(id: number): void {
    this.socks.get(id)!.end();
  }
  read(id: number): void {
    (this.socks.get(id) as unknown as { startRead: () => void }).startRead();
  }
  async info(id: number): Promise<DutInfo> {
    const s = (this.socks.get(id)!.connection as TcpConnection).state;
    const mss = effectiveMss(s);
    const d = s.delegated;
    return {
      rtoMs: d.rto,
      cwnd: Math.floor(d.cwnd / mss),
      unacked: Math.ceil(seqDiff(d.sndMax, d.sndUna) / mss),
      rcvMss: rcvMss(s),
    };
  }
  async stop(): Promise<void> {
    for (const s of this.socks.values()) s.destroy();
    this.stack.close();
    this.tap.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Segments as the tester sees and sends them.

export type Seg = Pick<
  TcpHeader,
  'srcPort' | 'dstPort' | 'seq' | 'ack' | 'flags' | 'window' | 'mss' | 'wscale' | 'sackPermitted'
> & {
  ts: { val: number; ecr: number } | null;
  sack: Array<[number, number]>;
  len: number;
  /** Arrival order among every segment the tester received in the case. */
  n: number;
  /** Arrival time (performance.now(), ms). */
  at: number;
};

export type SegOut = RawSegment;

export const has = (s: Seg, f: number): boolean => (s.flags & f) === f;
export const fmt = (s: Seg): string => {
  const f = ['FIN', 'SYN', 'RST', 'PSH', 'ACK'].filter((_, i) => s.flags & (1 << i)).join('|');
  const ts = s.ts ? ` ts=${s.ts.val}/${s.ts.ecr}` : '';
  const sack = s.sack.length ? ` sack=${s.sack.map(([l, r]) => `${l}-${r}`).join(',')}` : '';
  return `#${s.n} ${s.srcPort}>${s.dstPort} [${f}] seq=${s.seq} ack=${s.ack} win=${s.window} len=${s.len}${ts}${sack}`;
};

/** The tester's side of the bridge: a raw peer on its TAP, keeping every segment it receives. */
export class Tester {
  readonly segs: Seg[] = [];
  /** TCP segments this tester sent. */
  sent = 0;
  readonly family: Family;
  private readonly bell = new EventEmitter();
  private readonly peer: RawPeer | RawPeer6;

  constructor(
    tapName: string,
    readonly ipStr: string,
    peerIp: string,
  ) {
    const tap = TapLink.open({ name: tapName, create: false, vnetHdr: false, clock: new RealClock() });
    const mac = parseMac('02:cf:00:00:00:09');
    this.family = ipStr.includes(':') ? 6 : 4;
    this.peer =
      this.family === 6
        ? new RawPeer6(tap, mac, parseIpv6(ipStr), parseIpv6(peerIp))
        : new RawPeer(tap, mac, parseIpv4(ipStr), parseIpv4(peerIp));
    this.peer.onTcp = (t: TcpHeader, len: number) => {
      const sack: Array<[number, number]> = [];
      for (let i = 0; i < t.sackCount; i++) sack.push([t.sackBlocks[2 * i]!, t.sackBlocks[2 * i + 1]!]);
      this.segs.push({
        srcPort: t.srcPort,
        dstPort: t.dstPort,
        seq: t.seq,
        ack: t.ack,
        flags: t.flags,
        window: t.window,
        mss: t.mss,
        wscale: t.wscale,
        sackPermitted: t.sackPermitted,
        ts: t.hasTimestamps ? { val: t.tsVal, ecr: t.tsEcr } : null,
        sack,
        len,
        n: this.segs.length,
        at: performance.now(),
      });
      this.bell.emit('seg');
    };
  }

  close(): void {
    this.peer.close();
  }

  /** Learn the DUT's MAC (ARP request, or neighbor solicitation, from the tester's address). */
  resolve(): Promise<void> {
    // The peer asks again every 100 ms until it has an answer; the answer, which comes within a
    // millisecond or two, ends the wait rather than the gap's end (100 ms off each of ~230 cases).
    const peer = this.peer;
    return peer.resolve(async (ms) => {
      const until = performance.now() + ms;
      while (peer.peerMac < 0 && performance.now() < until) await sleep(2);
    });
  }

  send(o: SegOut): void {
    this.peer.sendTcp(o);
    this.sent++;
  }

  /**
   * A path MTU report quoting a TCP header the DUT "sent": ICMP destination unreachable,
   * fragmentation needed (RFC 1191) over IPv4, ICMPv6 packet too big (RFC 8201) over IPv6.
   */
  sendTooBig(mtu: number, quoted: { srcPort: number; dstPort: number; seq: number }): void {
    if (this.peer instanceof RawPeer6) this.peer.sendPacketTooBig(mtu, quoted);
    else this.peer.sendFragNeeded(mtu, quoted);
  }

  /** IP and TCP header bytes in front of a segment's payload (without TCP options). */
  get headerBytes(): number {
    return this.family === 6 ? 60 : 40;
  }

  /** The smallest path MTU a report may set: 68 is legal over IPv4, but 1280 is IPv6's floor. */
  get smallMtu(): number {
    return this.family === 6 ? 1280 : 1000;
  }

  /**
   * The first segment with arrival number >= `from` that satisfies `pred`, waiting up to `ms`.
   * Fails with every segment seen, so a failing case shows the conversation.
   */
  expect(pred: (s: Seg) => boolean, ms: number, what: string, from = 0): Promise<Seg> {
    return new Promise((res, rej) => {
      const check = (): boolean => {
        for (let i = from; i < this.segs.length; i++) {
          const s = this.segs[i]!;
          if (pred(s)) {
            clearTimeout(timer);
            this.bell.off('seg', onSeg);
            res(s);
            return true;
          }
        }
        return false;
      };
      const onSeg = (): void => {
        check();
      };
      const timer = setTimeout(() => {
        this.bell.off('seg', onSeg);
        rej(new Error(`tester: no ${what} in ${ms} ms; segments:\n${this.segs.map(fmt).join('\n')}`));
      }, ms);
      if (!check()) this.bell.on('seg', onSeg);
    });
  }

  /** Every segment that arrived from `from` on during `ms` and satisfies `pred`. */
  async collect(pred: (s: Seg) => boolean, ms: number, from = this.segs.length): Promise<Seg[]> {
    await sleep(ms);
    return this.segs.slice(from).filter(pred);
  }

  dump(): string {
    return this.segs.map(fmt).join('\n');
  }
}

// ---------------------------------------------------------------------------------------------
// One TCP connection between the tester and the DUT, seen from the tester.

export interface PeerOptions {
  mss?: number;
  wscale?: number;
  sack?: boolean;
  ts?: boolean;
  window?: number;
}

export class Conn {
  /** Tester's next sequence number. */
  sndNxt = 0;
  /** Next sequence number expected from the DUT. */
  rcvNxt = 0;
  /** The DUT's initial sequence number. */
  dutIss = 0;
  /** The DUT's window scale (0 if it did not scale). */
  dutWscale = 0;
  /** Highest TSval from the DUT (what the tester echoes). */
  tsRecent = 0;
  synAck: Seg | null = null;
  private readonly t0 = performance.now();
  constructor(
    readonly tester: Tester,
    readonly port: number,
    readonly dutPort: number,
    readonly o: PeerOptions,
    iss: number,
  ) {
    this.sndNxt = iss >>> 0;
  }

  /** The tester's TS clock: milliseconds since the connection began, from a base of 1000. */
  tsVal(): number {
    return (1000 + Math.floor(performance.now() - this.t0)) >>> 0;
  }

  ts(): { val: number; ecr: number } | undefined {
    return this.o.ts ? { val: this.tsVal(), ecr: this.tsRecent } : undefined;
  }

  fromDut = (s: Seg): boolean => s.srcPort === this.dutPort && s.dstPort === this.port;

  private note(s: Seg): void {
    if (s.ts && seqGe(s.ts.val, this.tsRecent)) this.tsRecent = s.ts.val;
  }

  /** Send a segment of this connection; fields default to the connection's own. */
  send(o: Partial<SegOut> & { flags: number }): void {
    this.tester.send({
      srcPort: this.port,
      dstPort: this.dutPort,
      seq: this.sndNxt,
      ack: this.rcvNxt,
      window: this.o.window ?? 65535,
      ts: this.ts(),
      ...o,
    });
  }

  /** Send `n` bytes of data at sndNxt and advance it. */
  data(n: number, flags = ACK | PSH, extra: Partial<SegOut> = {}): void {
    this.send({ flags, payload: n, ...extra });
    this.sndNxt = seqAdd(this.sndNxt, n + (flags & FIN ? 1 : 0));
  }

  async expect(pred: (s: Seg) => boolean, ms: number, what: string, from = 0): Promise<Seg> {
    const s = await this.tester.expect((x) => this.fromDut(x) && pred(x), ms, what, from);
    this.note(s);
    return s;
  }

  /**
   * Active open from the tester: SYN with the peer options, SYN-ACK, ACK. `ackDelayMs`: the ACK
   * waits that long, so the DUT's first RTT sample (and its minimum RTT) is a path that long.
   */
  async open(ackDelayMs = 0): Promise<Seg> {
    const o = this.o;
    const from = this.tester.segs.length;
    this.tester.send({
      srcPort: this.port,
      dstPort: this.dutPort,
      seq: this.sndNxt,
      flags: SYN,
      window: 65535,
      mss: o.mss ?? 1000,
      wscale: o.wscale,
      sackPermitted: o.sack,
      ts: o.ts ? { val: this.tsVal(), ecr: 0 } : undefined,
    });
    this.sndNxt = seqAdd(this.sndNxt, 1);
    const sa = await this.expect((s) => has(s, SYN | ACK), HANDSHAKE_MS, 'SYN-ACK', from);
    this.synAck = sa;
    this.dutIss = sa.seq;
    this.rcvNxt = seqAdd(sa.seq, 1);
    this.dutWscale = o.wscale !== undefined && sa.wscale >= 0 ? sa.wscale : 0;
    if (ackDelayMs > 0) await sleep(ackDelayMs);
    this.send({ flags: ACK });
    return sa;
  }

  /** Collect the DUT's data up to `total` bytes past its ISN+1, acknowledging as it arrives when `ackIt`. */
  async receive(total: number, ms: number, ackIt = true): Promise<Seg[]> {
    const end = seqAdd(this.dutIss, 1 + total);
    const got: Seg[] = [];
    let from = 0;
    while (seqGt(end, this.rcvNxt)) {
      const s = await this.expect(
        (x) => x.len > 0 && x.seq === this.rcvNxt,
        ms,
        `data at ${this.rcvNxt}`,
        from,
      );
      from = s.n + 1;
      got.push(s);
      this.rcvNxt = seqAdd(s.seq, s.len);
      if (ackIt) this.send({ flags: ACK });
    }
    return got;
  }

  /** The DUT's window in bytes as advertised by `s` (scaled unless it is a SYN). */
  windowOf(s: Seg): number {
    return has(s, SYN) ? s.window : s.window * 2 ** this.dutWscale;
  }
}

/** Every option a Linux peer offers, with a small MSS so a few kilobytes make several segments. */
export const FULL = { mss: 1000, wscale: 7, sack: true, ts: true } as const;

/** The sequence number after a segment. */
export const end = (s: Seg): number => seqAdd(s.seq, s.len);

/** The DUT sends two full segments (988 bytes each with timestamps); both as the tester saw them. */
export async function twoSegments(c: Conn, dut: Dut, id: number): Promise<[Seg, Seg]> {
  dut.write(id, 2 * 988);
  const a = await c.expect((s) => s.len > 0 && s.seq === c.rcvNxt, 3000, 'first segment');
  const b = await c.expect((s) => s.len > 0 && s.seq === end(a), 3000, 'second segment');
  return [a, b];
}

export const waitUntil = (at: number): Promise<void> => sleep(Math.max(0, at - performance.now()));

/** Open a connection from the tester to a fresh listener of the DUT; returns it and the DUT's id. */
export async function openConn(
  dut: Dut,
  tester: Tester,
  o: PeerOptions,
  ackDelayMs = 0,
): Promise<{ c: Conn; id: number }> {
  const port = freshPort();
  await dut.listen(port);
  const c = new Conn(tester, freshPort(), port, o, freshIss());
  await c.open(ackDelayMs);
  const acc = await dut.event(accepted, HANDSHAKE_MS, 'accept');
  return { c, id: acc.id };
}

// ---------------------------------------------------------------------------------------------
// The lab and the per-case fixture.

export interface Suite {
  lab: Lab | null;
  skip: string | false;
  /** TCP segments the cases' testers sent and received, by family: all of them crossed the captured TAP. */
  exchanged: Record<Family, number>;
}

/**
 * The lab for one case file: a bridge with the tester's and Chimney's TAPs and a Linux namespace,
 * and a capture on the tester's TAP, which carries every frame of every case.
 */
export function suite(
  tag: string,
  subnet: number,
): Suite & { setup(): Promise<void>; teardown(): Promise<void>; checkCapture(): Promise<void> } {
  const gate = interopGate(['python3', 'tshark']);
  let capture: Capture | null = null;
  const s = {
    lab: null as Lab | null,
    skip: gate.skip,
    exchanged: { 4: 0, 6: 0 } as Record<Family, number>,
    async setup(): Promise<void> {
      if (gate.reason && process.env.CI) throw new Error(gate.reason);
      s.lab = makeLab({ tag, subnet, taps: 2, offloads: false }, gate.reason);
      if (!s.lab) return;
      // The namespace's own TCP settings, stated rather than inherited from the host.
      for (const [k, v] of [
        ['net.ipv4.tcp_timestamps', '1'],
        ['net.ipv4.tcp_sack', '1'],
        ['net.ipv4.tcp_window_scaling', '1'],
        ['net.ipv4.tcp_syncookies', '1'],
      ]) {
        execFileSync('ip', ['netns', 'exec', s.lab.ns, 'sysctl', '-qw', `${k}=${v}`]);
      }
      s.lab.ip('-n', s.lab.ns, 'addr', 'add', `${prefix6(s.lab)}1/64`, 'dev', s.lab.vethPeer, 'nodad');
      capture = await startCapture(s.lab, s.lab.taps[0]!, join(s.lab.dir, 'conformance.pcapng'), 256);
    },
    /** Stop the capture; no frame of any case is malformed or fails its checksum. */
    async checkCapture(): Promise<void> {
      const lab = s.lab!;
      await capture?.stop();
      const pcap = capture!.pcap;
      capture = null;
      // Every segment a tester sent or received crossed the captured TAP: a bound from what the
      // cases did, not a guess (a fixed 100 failed a handshake run that captured exactly 100).
      for (const [family, v] of [
        ['ip', 4],
        ['ipv6', 6],
      ] as const) {
        const n = (await readCapture(lab, pcap, `tcp && ${family}`, ['frame.number'])).length;
        const want = s.exchanged[v];
        assert.ok(want > 0 && n >= want, `the capture holds the cases' ${family} segments (${n} of ${want})`);
      }
      await assertCleanCapture(lab, pcap);
    },
    async teardown(): Promise<void> {
      await capture?.stop();
      await s.lab?.down();
    },
  };
  return s;
}

export interface Case {
  dut: Dut;
  tester: Tester;
  /** The tester's address in this case. */
  testerIp: string;
  family: Family;
}

let caseNo = 0;

/** Build the DUT and the tester for one case, run `body`, tear both down. */
export async function runCase(
  st: Suite,
  v: Variant,
  cfg: DutConfig,
  body: (c: Case) => Promise<void>,
): Promise<void> {
  const lab = st.lab!;
  const { kind, family } = v;
  const host = 100 + (caseNo++ % 150);
  const testerIp = family === 6 ? `${prefix6(lab)}${host.toString(16)}` : `10.9.${lab.subnet}.${host}`;
  const ip4 = kind === 'linux' ? lab.kernelIp : lab.chimneyIps[0]!;
  const dutIp = family === 6 ? `${prefix6(lab)}${kind === 'linux' ? 1 : 2}` : ip4;
  const dut: Dut =
    kind === 'linux'
      ? new LinuxDut(lab, dutIp, cfg, testerIp)
      : new ChimneyDut(lab.taps[1]!, dutIp, ip4, lab.mac(1), cfg);
  const tester = new Tester(lab.taps[0]!, testerIp, dutIp);
  try {
    await dut.ready();
    await tester.resolve();
    await body({ dut, tester, testerIp, family });
  } finally {
    st.exchanged[family] += tester.sent + tester.segs.length;
    tester.close();
    await dut.stop();
    if (kind === 'linux' && (cfg.rtoMinMs !== undefined || cfg.congestion !== undefined)) {
      try {
        lab.ip('-n', lab.ns, 'route', 'del', hostRoute(testerIp));
      } catch {}
    }
  }
}

/** The lab's IPv6 prefix, fd00:<subnet>::/64 (this host's eth0 already sits on fd00::/64). */
function prefix6(lab: Lab): string {
  return `fd00:${lab.subnet}::`;
}

function hostRoute(ip: string): string {
  return ip.includes(':') ? `${ip}/128` : `${ip}/32`;
}

/** A port per connection, so no case meets another's TIME_WAIT. */
let portNo = 0;
export function freshPort(): number {
  return 20_000 + (portNo++ % 20_000);
}

/** An ISS for the tester far from anything the DUT has seen, changing per connection. */
export function freshIss(): number {
  return (0x10000000 + portNo * 0x01000193) >>> 0;
}

export { sleep };
