/**
 * Test rig: a host whose one address and MAC sit on a team of LocalNics (buildTeamHost), each on
 * its own switch port behind a ProbeTap, and a peer on the same segment; streams in both
 * directions with every byte checked.
 */
import type { Counters } from '../../src/core/counters.ts';
import type { Link, RxOffloadInfo } from '../../src/link/link.ts';
import type { SwitchPort } from '../../src/link/memory-switch.ts';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import type { OffloadManager } from '../../src/offload/offload-manager.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import type { HealthOptions } from '../../src/team/health.ts';
import type { RestartOptions, Team } from '../../src/team/team.ts';
import { buildTeamHost, type TeamHost } from '../../src/team/team-host.ts';

export const TEAM_IP = '10.0.0.1';
export const PEER_IP = '10.0.0.2';
export const TEAM_IP6 = 'fd00::1';
export const PEER_IP6 = 'fd00::2';

export interface TeamRig {
  net: SimNetwork;
  team: Team;
  nics: readonly LocalNic[];
  ports: readonly SwitchPort[];
  host: TeamHost;
  manager: OffloadManager;
  peer: ReturnType<SimNetwork['addHost']>;
  counters: Counters;
}

export function buildTeamRig(opts: {
  seed: number;
  nics: number;
  health?: HealthOptions;
  failback?: boolean;
  loss?: number;
  /** Wire rate of the peer's port (bytes/s; default 2e8). */
  rateBps?: number;
  batchSize?: number;
  wrapPort?: (port: SwitchPort, i: number) => Link;
  vlan?: number;
  /** Both ends get IPv6 addresses too (TEAM_IP6, PEER_IP6 on fd00::/64). */
  ip6?: boolean;
  /** What the members probe (default: PEER_IP, and PEER_IP6 as well with ip6). */
  probeTargets?: readonly string[];
  /** A dead member's port goes to the host (TeamHostOptions.hostPortsAfterDeath). */
  hostPorts?: boolean;
  /** A crashed member is started again (TeamHostOptions.restartMembers), with these settings. */
  restart?: RestartOptions;
  /** The switch's MAC ageing time (default 300 s). */
  macAgeMs?: number;
  /** The receive port's learning frames (TeamOptions.learnIntervalMs). */
  learnIntervalMs?: number;
  oneReceivePort?: boolean;
}): TeamRig {
  const net = new SimNetwork({ seed: opts.seed, macAgeMs: opts.macAgeMs });
  const peer = net.addHost({
    ip: `${PEER_IP}/24`,
    name: 'peer',
    vlan: opts.vlan,
    // A fast wire with 1 ms each way: transfers take virtual time, so faults land mid-stream. The
    // queue stays short (5 ms): ARP probes wait behind data, and 30 ms of queueing would look
    // like a dead path to a 10 ms × 3 probe.
    impair: {
      delayMs: 1,
      rateBps: opts.rateBps ?? 2e8,
      queueBytes: Math.max(64 << 10, Math.round((opts.rateBps ?? 2e8) * 0.005)),
      loss: opts.loss ?? 0,
    },
    tcp: { minRtoMs: 20 },
    ip6: opts.ip6 ? `${PEER_IP6}/64` : undefined,
  });
  const host = buildTeamHost(net, {
    ip: `${TEAM_IP}/24`,
    ip6: opts.ip6 ? [`${TEAM_IP6}/64`] : undefined,
    nics: opts.nics,
    probeTargets: opts.probeTargets ?? (opts.ip6 ? [PEER_IP, PEER_IP6] : [PEER_IP]),
    health: { holdMs: 100, ...opts.health },
    failback: opts.failback,
    batchSize: opts.batchSize,
    tcp: { minRtoMs: 20 },
    wrapPort: opts.wrapPort,
    vlan: opts.vlan,
    hostPortsAfterDeath: opts.hostPorts,
    restartMembers: opts.restart !== undefined,
    restart: opts.restart,
    learnIntervalMs: opts.learnIntervalMs,
    oneReceivePort: opts.oneReceivePort,
  });
  return {
    net,
    team: host.team,
    nics: host.nics,
    ports: host.ports,
    host,
    manager: host.manager,
    peer,
    counters: host.counters,
  };
}

/**
 * Deterministic content: byte i of stream `s`. The hash's top byte, which every bit of the offset
 * and of `s` feeds: its low byte would repeat every 256 bytes and for streams 256 apart, so data
 * delivered twice at a multiple of 256, or another stream's, would pass for the right bytes.
 */
export function pattern(s: number, from: number, len: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  const salt = Math.imul(s + 1, 0x85ebca6b);
  for (let i = 0; i < len; i++) b[i] = Math.imul((from + i + 1) ^ salt, 2654435761) >>> 24;
  return b;
}

export interface StreamStats {
  ok: number;
  errors: string[];
  resets: number;
  /** Longest gap between two deliveries on any stream, after the first byte (virtual ms). */
  maxGapMs: number;
  /** Bytes delivered in order and verified, all streams together. */
  bytes: number;
  /** When present, `verifyIncoming` adds a record of every stream it watches. */
  streams?: StreamRecord[];
}

/** What one stream delivered, for accounting stream by stream. */
export interface StreamRecord {
  /** The stream's pattern (`s` of `verifyIncoming`). */
  id: number;
  /**
   * The socket's remote address: with IPv4 and IPv6 side by side one port number, so one
   * pattern, may serve a connection of each family.
   */
  from: string;
  /** Bytes it should deliver. */
  total: number;
  /** Bytes delivered in order and matching the pattern, up to the first that did not. */
  good: number;
  /** Bytes delivered in all, the damaged and any after the end included. */
  got: number;
  ended: boolean;
  bad: boolean;
}

/** Check that a readable delivers exactly `total` bytes of pattern `s`, in order. */
export function verifyIncoming(
  sock: TcpSocket,
  s: number,
  total: number,
  stats: StreamStats,
  done: () => void,
  now: () => number = () => 0,
): void {
  let got = 0;
  let bad = false;
  let last = -1;
  let finished = false;
  const rec: StreamRecord | null = stats.streams
    ? { id: s, from: sock.remoteAddress ?? '', total, good: 0, got: 0, ended: false, bad: false }
    : null;
  stats.streams?.push(rec!);
  const finish = (): void => {
    if (finished) return;
    finished = true;
    if (rec) rec.ended = true;
    done();
  };
  sock.on('data', (chunk: Buffer) => {
    if (rec) rec.got += chunk.length;
    if (bad) return;
    const t = now();
    if (last >= 0 && t - last > stats.maxGapMs) stats.maxGapMs = t - last;
    last = t;
    const want = pattern(s, got, chunk.length);
    if (!want.equals(chunk)) {
      bad = true;
      if (rec) rec.bad = true;
      stats.errors.push(`stream ${s}: wrong bytes at offset ${got}`);
    } else if (rec) rec.good += chunk.length;
    got += chunk.length;
    stats.bytes += chunk.length;
  });
  sock.on('end', () => {
    if (!bad && got !== total) stats.errors.push(`stream ${s}: ${got} of ${total} bytes`);
    else if (!bad) stats.ok++;
    finish();
  });
  sock.on('error', (e: Error & { code?: string }) => {
    if (e.code === 'ECONNRESET') stats.resets++;
    stats.errors.push(`stream ${s}: ${e.code ?? e.message}`);
    finish();
  });
}

/**
 * Write `total` bytes of pattern `s` in chunks, then end. The socket ends only its own direction:
 * with allowHalfOpen false it would end its writes at the peer's FIN, as net.Socket does, and what
 * it had yet to write would be refused (the socket holds only its send target, not a whole stream).
 */
export function sendPattern(sock: TcpSocket, s: number, total: number, chunk = 8192): void {
  sock.allowHalfOpen = true;
  let off = 0;
  const pump = (): void => {
    while (off < total) {
      const n = Math.min(chunk, total - off);
      const more = sock.write(pattern(s, off, n));
      off += n;
      if (!more) {
        sock.once('drain', pump);
        return;
      }
    }
    sock.end();
  };
  pump();
}

/**
 * A member's port as a test sees it: passes everything both ways; a subclass filters what the
 * member hears (`rx`) or sends (`send`).
 */
export class WrappedLink implements Link {
  protected handler: ((f: Uint8Array, info?: RxOffloadInfo) => void) | null = null;
  constructor(readonly inner: Link) {
    inner.onFrame((f, info) => this.rx(f, info));
  }
  /** A frame from the port: pass it on unless a subclass keeps it. */
  protected rx(f: Uint8Array, info?: RxOffloadInfo): void {
    this.handler?.(f, info);
  }
  get name(): string {
    return `${this.inner.name}+test`;
  }
  get mtu(): number {
    return this.inner.mtu;
  }
  get carrier(): boolean {
    return this.inner.carrier;
  }
  send(f: Uint8Array): boolean {
    return this.inner.send(f);
  }
  onFrame(h: (f: Uint8Array, info?: RxOffloadInfo) => void): void {
    this.handler = h;
  }
  onCarrier(h: (up: boolean) => void): void {
    this.inner.onCarrier(h);
  }
  close(): void {
    this.inner.close();
  }
}
