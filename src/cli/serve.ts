/**
 * `chimney serve` and `chimney get`: Chimney on real TAP devices, as a server of echo, discard and
 * HTTP, and as an HTTP client.
 *
 * One TAP: the host stack runs on it. Several TAPs (or `--workers`): the TAPs form one team with
 * one address and one MAC; each TAP belongs to a NIC (a worker thread with --workers) that runs the
 * connections offloaded to it, and a NIC whose link fails hands its connections to another.
 */

import { createWriteStream, writeFileSync } from 'node:fs';
import http from 'node:http';
import { Session } from 'node:inspector';
import { type Command, InvalidArgumentError as CommanderArgError, Option } from 'commander';
import { RealClock } from '../core/clock.ts';
import { ChimneyError } from '../core/errors.ts';
import { watchLoopBlocks } from '../core/loop-blocks.ts';
import { PcapWriter } from '../link/pcap.ts';
import { warmSlabs } from '../nic/hard-state.ts';
import type { Nic } from '../nic/nic.ts';
import { SlabWarmer } from '../nic/slab-warmer.ts';
import { DEFAULT_RING } from '../nic/worker-nic.ts';
import { formatPhases } from '../offload/move-phases.ts';
import type { PlaceTimeout } from '../offload/offload-manager.ts';
import type { Host } from '../socket/host.ts';
import { traceAccepts } from '../socket/tcp-server.ts';
import { DEFAULT_TCP_LIMITS, type Stack } from '../stack/stack.ts';
import type { FailureEvent } from '../team/health.ts';
import { ManagerOffloader } from '../team/manager-offloader.ts';
import {
  DEFAULT_RESTART_DELAY_MS,
  DEFAULT_RESTART_LIMIT,
  type FailoverRecord,
  RESTART_MAX_MS,
  type RestartRecord,
} from '../team/team.ts';
import type { TeamHost } from '../team/team-host.ts';
import { parseIpv4, parseIpv6 } from '../wire/addr.ts';
import { type CheckedAddresses, checkAddresses, collectIps, urlHostLiteral } from './addresses.ts';
import { type AdminFlags, adminAddress, startAdmin } from './admin-cli.ts';
import { counterSets, teamStatusExtras } from './admin-source.ts';
import { type ControlHandler, ControlServer, killWorkerNic } from './control.ts';
import { type ChimneyLog, createLog, LOG_FORMATS, type LogFormat } from './log.ts';
import { byteSize, intIn } from './options.ts';
import {
  checkServiceAddresses,
  DEFAULT_LISTEN_BACKLOG,
  parseService,
  type RunningService,
  type ServiceSpec,
  serviceLabel,
  servicesOverlap,
  startService,
} from './services.ts';
import { StatusReporter } from './status.ts';
import {
  checkTapHostOptions,
  createTapHost,
  ipv6Settled,
  macForIp,
  TAP_DAD_DELAY_MS,
  TAP_TCP_DEFAULTS,
  type TapHost,
  type TapHostOptions,
} from './tap-host.ts';
import { createTapTeam, type TapTeam } from './tap-team.ts';

/**
 * With worker NICs a connection's buffers become its shared rings, capped at the ring size: a
 * host buffer larger than that only fills, before the move, with bytes every move must then carry
 * (an HTTP body written at accept time: megabytes per connection, seconds per batch at scale).
 */
const WORKER_TCP_DEFAULTS = { ...TAP_TCP_DEFAULTS, sndBufSize: DEFAULT_RING, rcvBufSize: DEFAULT_RING };

/** Duplicate address detection takes about a second per address (RFC 4862 RetransTimer) after its initial delay (--dad-delay); a margin for a busy machine. */
const IPV6_SETTLE_MS = 10_000;

/** Connections get this long to finish after SIGINT/SIGTERM before they are aborted. */
const SHUTDOWN_GRACE_MS = 1000;
/**
 * The longest serve takes at its start to write its NICs' spare slabs through (warmSlabs): two
 * took 1.2-1.3 s at load 16; past this the rest is left to the SlabWarmer's idle moments.
 */
const WARM_START_MS = 5000;

function collectTaps(v: string, prev: string[] | undefined): string[] {
  const names = v
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
  if (names.length === 0) throw new CommanderArgError(`'${v}' names no TAP device`);
  return [...(prev ?? []), ...names];
}

function collectService(v: string, prev: ServiceSpec[] | undefined): ServiceSpec[] {
  let spec: ServiceSpec;
  try {
    spec = parseService(v);
  } catch (e) {
    throw new CommanderArgError((e as Error).message);
  }
  const all = prev ?? [];
  const taken = all.find((s) => servicesOverlap(s, spec));
  if (taken !== undefined)
    throw new CommanderArgError(
      `${serviceLabel(spec)}: port ${spec.port} is taken by ${serviceLabel(taken)}`,
    );
  return [...all, spec];
}

/** The TAP / address options `serve` and `get` share. */
function addTapOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option('--tap <names>', 'TAP device (created if missing); repeatable or comma-separated')
        .argParser(collectTaps)
        .makeOptionMandatory(),
    )
    .requiredOption(
      '--ip <addr/prefix>',
      "Chimney's addresses, e.g. 10.9.0.10/24 or fd00::10/64; repeatable or comma-separated (IPv6 alone: an IPv6-only host, no ARP)",
      collectIps,
    )
    .option('--gw <addr>', 'IPv4 default gateway')
    .option('--gw6 <addr>', 'IPv6 default router (link-local, or on the subnet of an IPv6 --ip)')
    .option(
      '--mac <mac>',
      "Chimney's MAC (default 02:00 + the first IPv4 address, else the last 32 bits of the first IPv6 one)",
    )
    .option('--pcap <file>', 'capture every frame to this pcap file')
    .addOption(new Option('--mtu <n>', 'set the TAP MTU').argParser(intIn(576, 65521)))
    .option('--no-offload', 'do not use segmentation and checksum offload')
    .addOption(
      new Option(
        '--dad-delay <ms>',
        "largest random wait before an IPv6 address's first duplicate address detection probe (RFC 4862 5.4.2; 0: at once)",
      )
        .argParser(intIn(0, 60_000))
        .default(TAP_DAD_DELAY_MS),
    )
    .addOption(
      new Option('--vlan <id>', 'tag every frame with this 802.1Q VLAN id').argParser(intIn(1, 4094)),
    )
    .option(
      '--impair <spec>',
      "loss/reordering/delay made in Chimney's link, e.g. loss=1%,reorder=1%,delay=2",
    );
}

interface TapFlags {
  tap: string[];
  ip: string[];
  gw?: string;
  gw6?: string;
  mac?: string;
  pcap?: string;
  mtu?: number;
  offload: boolean;
  impair?: string;
  vlan?: number;
  dadDelay?: number;
}

interface TeamFlags {
  workers?: boolean;
  warmSlabs?: number;
  acceptAtNic?: boolean;
  offloadPolicy?: 'immediate' | 'after' | 'manual';
  offloadAfter?: number;
  offloadBytes?: number;
  probe?: string[];
  probeInterval?: number;
  probeMisses?: number;
  hold?: number;
  failback?: boolean;
  oneReceivePort?: boolean;
  restartLimit?: number;
  restartDelay?: number;
}

type ServeFlags = TapFlags &
  TeamFlags & {
    service?: ServiceSpec[];
    quiet?: boolean;
    control?: string;
    logFormat?: LogFormat;
    maxConnections?: number;
    tcpMem?: number;
    backlog?: number;
  };

function fail(cmd: string, msg: string): never {
  process.stderr.write(`chimney ${cmd}: ${msg}\n`);
  process.exit(1);
}

function failWith(cmd: string, e: unknown): never {
  if (e instanceof ChimneyError) fail(cmd, `${e.message}${e.code.startsWith('E') ? ` (${e.code})` : ''}`);
  fail(cmd, `${(e as Error).message}`);
}

function hostOptions(o: TapFlags): TapHostOptions {
  return {
    tap: o.tap[0]!,
    ip: o.ip,
    gw: o.gw,
    gw6: o.gw6,
    mac: o.mac,
    mtu: o.mtu,
    pcap: o.pcap,
    offload: o.offload,
    impair: o.impair,
    vlan: o.vlan,
    dadDelayMs: o.dadDelay,
  };
}

function openHost(cmd: string, o: TapFlags): TapHost {
  if (o.tap.length > 1) fail(cmd, `--tap: ${o.tap.join(',')}: ${cmd} runs on one TAP`);
  const opts = hostOptions(o);
  try {
    checkTapHostOptions(opts);
    return createTapHost(opts);
  } catch (e) {
    failWith(cmd, e);
  }
}

function collectAddrs(v: string, prev: string[] | undefined): string[] {
  const list = v
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
  for (const a of list) {
    try {
      if (a.includes(':')) parseIpv6(a);
      else parseIpv4(a);
    } catch {
      throw new CommanderArgError(`'${a}' is not an ${a.includes(':') ? 'IPv6' : 'IPv4'} address`);
    }
  }
  return [...(prev ?? []), ...list];
}

export function registerTapCommands(program: Command): void {
  const serve = program
    .command('serve')
    .description(
      'run Chimney on TAP devices and serve echo, discard and http; several TAPs form one team with failover',
    );
  addTapOptions(serve)
    .option(
      '--service <name[:port][@addr]>',
      'echo[:7], discard[:9], http[:80]; @addr listens on that one --ip address only (IPv6 in brackets: http:80@[fd00::10]; @0.0.0.0 every IPv4 one); repeatable (default: all three, on every address)',
      collectService,
    )
    .option('--workers', 'run connections on software NICs, one worker thread per TAP')
    .addOption(
      new Option(
        '--warm-slabs <n>',
        "with --workers: slabs of the connections' shared memory kept written through while serve is idle (default: 0; one per NIC is its ring budget)",
      ).argParser(intIn(0, 64)),
    )
    .option(
      '--accept-at-nic',
      'on a team (or --workers), the member that has a path to the peer answers SYNs itself: connections are born offloaded, with no transfer',
    )
    .addOption(
      new Option('--offload-policy <mode>', 'when connections go to a NIC (teams and --workers)')
        .choices(['immediate', 'after', 'manual'])
        .default('immediate'),
    )
    .addOption(
      new Option('--offload-after <ms>', "with 'after': offload once a connection has lived this long")
        .argParser(intIn(0, 86_400_000))
        .default(1000),
    )
    .addOption(
      new Option('--offload-bytes <n>', "with 'after': ... or once it has moved this many bytes")
        .argParser(byteSize)
        .default(1 << 20),
    )
    .option(
      '--probe <addrs>',
      'reachability targets of every team member, comma-separated: ARP for IPv4, neighbor solicitations for IPv6 (default: --gw and --gw6, if given)',
      collectAddrs,
    )
    .addOption(
      new Option('--probe-interval <ms>', 'reachability probe interval')
        .argParser(intIn(1, 60_000))
        .default(10),
    )
    .addOption(
      new Option('--probe-misses <n>', 'unanswered probes before a link is unreachable')
        .argParser(intIn(1, 1000))
        .default(3),
    )
    .addOption(
      new Option('--hold <ms>', 'a recovered NIC stays healthy this long before it carries traffic')
        .argParser(intIn(0, 600_000))
        .default(200),
    )
    .option('--failback', 'move connections back to a recovered NIC after its hold')
    .option('--one-receive-port', 'one receive port (the default; kept for scripts that name it)')
    .option(
      '--no-one-receive-port',
      "every member sends from the team MAC (default: only the port that carries the host's traffic does, and receives for the team; the others send from their own MACs)",
    )
    .addOption(
      new Option(
        '--restart-limit <n>',
        'with --workers: a dead worker is started again on its TAP (after --restart-delay, doubling to 30 s while it keeps dying), at most n times in a row (0: never)',
      )
        .argParser(intIn(0, 1000))
        .default(DEFAULT_RESTART_LIMIT),
    )
    .addOption(
      new Option(
        '--restart-delay <ms>',
        "with --workers: a dead worker's first restart waits this long after its death, doubling to 30 s while it keeps dying",
      )
        .argParser(intIn(0, RESTART_MAX_MS))
        .default(DEFAULT_RESTART_DELAY_MS),
    )
    .addOption(
      new Option('--max-connections <n>', 'live TCP connections at once; SYNs past it are dropped')
        .argParser(intIn(1, 16_777_216))
        .default(DEFAULT_TCP_LIMITS.maxConnections),
    )
    .addOption(
      new Option(
        '--tcp-mem <bytes>',
        'TCP buffer memory (like tcp_mem[2]): new connections shrink past 2/3 of it, are refused past it',
      )
        .argParser(byteSize)
        .default(DEFAULT_TCP_LIMITS.memBytes),
    )
    .addOption(
      // As listen(fd, N) on Linux with net.core.somaxconn >= N (Linux clamps N to it silently):
      // N bounds each listener's half-open connections, past which SYNs get cookies (as with
      // net.ipv4.tcp_syncookies=1, Linux's default; tcp_max_syn_backlog bounds nothing then), and
      // its accept queue, past which SYNs are dropped. Past 65535 no value would differ: the
      // connection limit stops new connections first.
      new Option(
        '--backlog <n>',
        "each service's listen backlog (listen(2)): half-open connections past it get SYN cookies",
      )
        .argParser(intIn(1, 65_535))
        .default(DEFAULT_LISTEN_BACKLOG),
    )
    .option('-q, --quiet', 'do not log connections (errors and failovers are still logged)')
    .option(
      '--control <path>',
      'control socket for `chimney status` and `chimney move` (default /run/chimney/<tap>.sock)',
    )
    .option('--admin <addr:port>', 'serve /metrics, /api/status and the live view over HTTP here (loopback)')
    .addOption(
      new Option('--log-format <format>', 'human lines, or one JSON object per event')
        .choices(LOG_FORMATS)
        .default('human'),
    )
    .option('--admin-public', 'allow --admin on an address other than loopback (no authentication)')
    .action((o: ServeFlags & AdminFlags) => runServe(o));

  const get = program
    .command('get')
    .description('fetch an http:// URL over Chimney on a TAP device; the body goes to stdout')
    .argument('<url>', 'http://a.b.c.d[:port]/path or http://[fd00::1][:port]/path (no DNS)');
  addTapOptions(get)
    .option('-o, --output <file>', 'write the body to this file instead of stdout')
    .addOption(
      new Option('--timeout <ms>', 'give up when nothing arrives for this long')
        .argParser(intIn(1, 3_600_000))
        .default(10_000),
    )
    .action((url: string, o: TapFlags & { output?: string; timeout: number }) => runGet(url, o));
}

/** The running server, whichever of the two shapes it has. */
interface Served {
  host: Host;
  stack: Stack;
  label: string;
  controlName: string;
  /** Status extras: owners, NICs, failovers, offloaded connections. */
  status: ConstructorParameters<typeof StatusReporter>[2];
  handlers: Record<string, ControlHandler>;
  /** The team, for the admin endpoint's failover and move metrics. */
  team?: TeamHost;
  close(): void;
}

function serveOnTap(o: ServeFlags, log: ServeLog): Served {
  const th = openHost('serve', o);
  th.onCarrier((up) => {
    const line = `${th.tap.name}: carrier ${up ? 'up' : 'down'}`;
    const fields = { event: 'carrier', tap: th.tap.name, up };
    // Carrier coming (back) up is news, not an error: a TAP may read down for a moment after it opens.
    if (up) log.event(line, fields);
    else log.error(line, fields);
  });
  // CHIMNEY_LAG_LOG on one TAP keeps the stack's counters (SYN drops, cookies, timeouts, probes),
  // the main thread's blocks and each accept's wait in the accept queue and for its first write,
  // to set beside the client's stalls and first bytes (the team's is traceMainThread).
  const lagFile = process.env.CHIMNEY_LAG_LOG;
  if (lagFile) {
    const epoch = Date.now() - performance.now();
    const blocks: [number, number][] = [];
    watchLoopBlocks((from, to) => blocks.push([from, to]));
    // [made at (epoch ms), ms in the accept queue, ms from the hand-out to the first write]
    const accepts: [number, number, number][] = [];
    traceAccepts((a) =>
      accepts.push([
        Math.round(epoch + a.madeAt),
        Math.round(a.handedAt - a.queuedAt),
        Math.round(a.firstWriteAt - a.handedAt),
      ]),
    );
    process.on('exit', () =>
      writeFileSync(lagFile, JSON.stringify({ blocks, accepts, counters: th.stack.counters.snapshot() })),
    );
  }
  profileMainThread();
  const off = th.tap.offloads;
  const offloads = !o.offload ? 'off' : off.tso ? 'tso+csum' : off.csum ? 'csum' : 'none';
  return {
    host: th.host,
    stack: th.stack,
    label: `${th.tap.name} ${o.ip.join(' ')} (offload ${offloads})`,
    controlName: th.tap.name,
    status: {},
    handlers: {},
    close: () => th.close(),
  };
}

async function serveOnTeam(o: ServeFlags, log: ServeLog): Promise<Served> {
  if (o.impair !== undefined) fail('serve', '--impair: not available with a team or --workers');
  const opts = hostOptions(o);
  let tt: TapTeam;
  let pcap: PcapWriter | null = null;
  let v6: CheckedAddresses | null = null;
  // Slabs faulted in before the first burst needs them (here, before there is a team to keep
  // waiting), and again after each burst once serve is idle. Off unless asked for: it costs
  // 64 MiB resident a slab and a second of CPU at start, and no first-byte gain was shown at
  // 5,000 (BENCHMARKS.md, "The connect burst at 5,000: fresh memory faulted in before the burst").
  const warmer = new SlabWarmer(o.workers ? (o.warmSlabs ?? 0) : 0);
  try {
    for (const tap of o.tap) checkTapHostOptions({ ...opts, tap });
    if (o.pcap !== undefined) {
      const clock = new RealClock();
      pcap = new PcapWriter(o.pcap, { clock, epochMs: Date.now() - clock.now() });
    }
    const a = checkAddresses(o.ip, { gw: o.gw, gw6: o.gw6, mtu: o.mtu });
    if (a.v4.length > 1) fail('serve', `--ip: a team has one IPv4 address (given: ${a.v4.join(', ')})`);
    v6 = a;
    warmSlabs(warmer.want, performance.now() + WARM_START_MS, () => performance.now());
    tt = createTapTeam({
      taps: o.tap,
      ip: a.v4[0],
      mac: o.mac ?? macForIp(a.macSeed),
      ipv6: { dadDelayMs: o.dadDelay ?? TAP_DAD_DELAY_MS },
      mtu: o.mtu,
      offload: o.offload,
      vlan: o.vlan,
      workers: o.workers === true,
      policy: { mode: o.offloadPolicy ?? 'immediate', minAgeMs: o.offloadAfter, minBytes: o.offloadBytes },
      probeTargets: o.probe ?? [o.gw, a.gw6].filter((x) => x !== undefined),
      health: { probeIntervalMs: o.probeInterval, probeMisses: o.probeMisses, holdMs: o.hold },
      failback: o.failback,
      oneReceivePort: o.oneReceivePort !== false,
      restart: { limit: o.restartLimit, firstDelayMs: o.restartDelay },
      tcp: o.workers ? WORKER_TCP_DEFAULTS : TAP_TCP_DEFAULTS,
      pcap: pcap ?? undefined,
    });
    await tt.ready(5000);
    // The team's host interface takes the IPv6 addresses once the team exists (its members then
    // carry the MLD reports and DAD probes); IPv6 connections are offloaded to its NICs by the
    // same policy as IPv4 ones. Without an IPv4 address the interface waits here with none.
    if (v6.v6.length > 0) {
      const iface = tt.team.stack.interfaces[0]!;
      tt.team.stack.ip6.enable(iface, v6.v6);
      if (v6.gw6 !== undefined) tt.team.stack.ip6.addRoute(iface, '::/0', v6.gw6);
    }
  } catch (e) {
    failWith('serve', e);
  }
  const th = tt.team;
  th.manager.acceptAtNic = o.acceptAtNic === true;
  warmer.start();
  const lagFile = process.env.CHIMNEY_LAG_LOG;
  if (lagFile) traceMainThread(th, lagFile);
  // Not only with the trace: a team's profile was written only when CHIMNEY_LAG_LOG was set too.
  profileMainThread();
  // Records reach the file at least once a second, so a capture is readable while serve runs.
  const pcapFlush = setInterval(() => pcap?.flush(), 1000).unref();
  if (o.gw !== undefined) th.stack.setDefaultGateway(o.gw);
  const team = th.team;
  const t0 = th.stack.clock.now();
  const since = (at: number): string => `+${((at - t0) / 1000).toFixed(3)} s`;
  team.on('failure', (ev: FailureEvent) =>
    log.event(`${ev.nic}: failed (${ev.cause}: ${ev.detail}) at ${since(ev.at)}`, {
      event: 'nic-failure',
      nic: ev.nic,
      cause: ev.cause,
      detail: ev.detail,
    }),
  );
  team.on('failover', (r: FailoverRecord) =>
    log.event(
      `failover ${r.nic} (${r.cause}): detected in ${r.detectMs.toFixed(1)} ms, ${r.connections} connection(s) resumed on ${r.to.join(',') || '-'} ${r.resumeMs.toFixed(1)} ms after detection${r.lost ? `, ${r.lost} LOST` : ''}${r.phases ? `; ${formatPhases(r.phases)}` : ''}`,
      { event: 'failover', ...r },
    ),
  );
  team.on('recovered', (ev: { nic: string; at: number }) =>
    log.event(`${ev.nic}: recovered at ${since(ev.at)}, carries traffic again`, {
      event: 'nic-recovered',
      nic: ev.nic,
    }),
  );
  team.on('receive-port', (ev: { from: string; to: string; at: number; detail: string }) =>
    log.event(
      `receive port moved from ${ev.from} to ${ev.to} at ${since(ev.at)}: every member stalled (${ev.detail})`,
      { event: 'receive-port', ...ev },
    ),
  );
  team.on('receive-failed', (ev: { nic: string; at: number; detail: string; holdMs: number }) =>
    log.event(
      `${ev.nic}: its port fails to receive (${ev.detail}) at ${since(ev.at)}; not the receive port for ${ev.holdMs} ms`,
      { event: 'receive-failed', ...ev },
    ),
  );
  team.on('host-port', (ev: { nic: string; at: number }) =>
    log.event(
      `${ev.nic}: no member is usable; the host carries its own traffic on this dead member's TAP at ${since(ev.at)}`,
      {
        event: 'host-port',
        nic: ev.nic,
      },
    ),
  );
  team.on('host-port-released', (ev: { nic: string; at: number }) =>
    log.event(`${ev.nic}: its new worker is loaded; the host lets this TAP go to it at ${since(ev.at)}`, {
      event: 'host-port-released',
      nic: ev.nic,
    }),
  );
  team.on('restart', (r: RestartRecord) =>
    log.event(
      r.ok
        ? `${r.nic}: worker restarted (restart ${r.attempt} in a row, after ${r.delayMs} ms, started in ${r.startMs.toFixed(0)} ms) at ${since(r.at)}; in its hold`
        : `${r.nic}: worker restart ${r.attempt} failed at ${since(r.at)}: ${r.detail}`,
      { event: 'nic-restart', ...r },
    ),
  );
  team.on('restart-limit', (ev: { nic: string; at: number; restarts: number }) =>
    log.event(
      `${ev.nic}: died again after ${ev.restarts} restart(s) in a row (--restart-limit); it stays dead at ${since(ev.at)}`,
      { event: 'nic-restart-limit', ...ev },
    ),
  );
  team.on('error', (e: Error) => log.error(`failover: ${e.message}`));
  th.manager.on('place-timeout', (ev: PlaceTimeout) =>
    log.event(
      `${ev.connections} accepted connection(s) handed to the service unplaced (in the host): the offload policy made no progress for ${ev.waitedMs} ms`,
      { event: 'place-timeout', ...ev },
    ),
  );
  const nicById = (id: string): Nic => {
    const n = th.nics.find((x) => x.id === id);
    if (!n) throw new Error(`no NIC ${id} (NICs: ${th.nics.map((x) => x.id).join(', ')})`);
    return n;
  };
  const kind = o.workers ? 'worker' : 'local';
  const label = `team ${o.tap.join('+')} ${o.ip.join(' ')} (${o.tap.length} ${o.workers ? 'worker' : 'local'} NIC${o.tap.length > 1 ? 's' : ''}, offload ${o.offloadPolicy ?? 'immediate'})`;
  return {
    host: th,
    team: th,
    stack: th.stack,
    label,
    controlName: o.tap[0]!,
    status: teamStatusExtras(th, kind),
    handlers: {
      /** Move connections to a NIC or to the host: { to, from?, count? }. */
      move: async (req) => {
        const to = req.to === 'host' ? 'host' : nicById(String(req.to));
        const from = req.from === undefined ? null : req.from === 'host' ? 'host' : nicById(String(req.from));
        const count = typeof req.count === 'number' && req.count > 0 ? req.count : Number.POSITIVE_INFINITY;
        const owners: ('host' | Nic)[] = from !== null ? [from] : ['host', ...th.nics];
        let moved = 0;
        let refused = 0;
        for (const src of owners) {
          if (src === to || moved >= count) continue;
          const keys =
            src === 'host' ? new ManagerOffloader(th.manager).inHost() : th.manager.keysOn(src as Nic);
          const batch = keys.slice(0, count - moved);
          if (batch.length === 0) continue;
          const r =
            to === 'host'
              ? await th.manager.upload(batch, { prod: true })
              : src === 'host'
                ? await th.manager.offload(batch, to, { prod: true })
                : await th.manager.move(batch, src as Nic, to, { prod: true, rollbackToHost: true });
          moved += r.moved.length;
          refused += r.refused.length;
        }
        log.event(
          `moved ${moved} connection(s) to ${to === 'host' ? 'host' : to.id}${refused ? ` (${refused} refused)` : ''}`,
          { event: 'move', to: to === 'host' ? 'host' : to.id, moved, refused },
        );
        return { moved, refused };
      },
      /**
       * Every counter set, raw (the host's, the team's, each NIC's): what status filters out, such
       * as a worker NIC's timeouts undone, for a run's figures.
       */
      counters: () => counterSets(th.stack, th),
      /** Failover drill: kill a NIC's worker thread outright. */
      'kill-nic': (req) => {
        const nic = nicById(String(req.nic));
        const terminateThread = nic.terminateThread?.bind(nic);
        if (terminateThread === undefined) throw new Error(`${nic.id} is not a worker NIC (serve --workers)`);
        log.event(`${nic.id}: killing its worker thread (requested over the control socket)`, {
          event: 'nic-kill',
          nic: nic.id,
        });
        return killWorkerNic({ id: nic.id, terminateThread }, (threadId, code) =>
          log.event(`${nic.id}: worker thread ${threadId} exited (code ${code})`, {
            event: 'nic-exit',
            nic: nic.id,
            threadId,
            code,
          }),
        );
      },
    },
    close: () => {
      warmer.stop();
      tt.close();
      if (pcap) {
        clearInterval(pcapFlush);
        pcap.close();
        const dropped = th.nics.reduce((n, x) => n + (x.captureDropped ?? 0), 0);
        if (dropped > 0) log.error(`capture: ${dropped} frame(s) dropped (the writer fell behind)`);
      }
    },
  };
}

/**
 * CHIMNEY_CPU_PROF=FILE: a CPU profile of the main thread, written at exit (NODE_OPTIONS refuses
 * --cpu-prof).
 */
function profileMainThread(): void {
  const profFile = process.env.CHIMNEY_CPU_PROF;
  if (!profFile) return;
  const session = new Session();
  session.connect();
  session.post('Profiler.setSamplingInterval', { interval: 500 });
  session.post('Profiler.enable');
  session.post('Profiler.start');
  // The in-thread session answers synchronously, so the profile is written before the exit.
  process.on('exit', () =>
    session.post('Profiler.stop', (_e, r) => {
      if (r) writeFileSync(profFile, JSON.stringify(r.profile));
    }),
  );
}

/**
 * Diagnostic (CHIMNEY_LAG_LOG=FILE): every block of the main thread's event loop of 20 ms or more,
 * every offload from the host (the policy's and the verb's, from its transfer's start to its end), and
 * each accept's way to its first write, in epoch ms, written to FILE at exit, to line up with
 * the stalls a client saw (`scripts/soak-tap.ts --stalls`).
 */
function traceMainThread(th: TeamHost, file: string): void {
  const blocks: [number, number][] = [];
  // [start, end, connections, accepts waiting for their placement at the start]
  const transfers: [number, number, number, number][] = [];
  const epoch = Date.now() - performance.now();
  // Lines a CPU profile's microsecond timestamps (the same clock as hrtime) up with epoch ms.
  const hrUs = Number(process.hrtime.bigint() / 1000n);
  const hrEpoch = Date.now();
  watchLoopBlocks((from, to) => blocks.push([from, to]));
  const m = th.manager;
  m.onOffload = (connections, done) => {
    const t = performance.now();
    const waiting = m.placing;
    const end = () => transfers.push([epoch + t, epoch + performance.now(), connections, waiting]);
    done.then(end, end);
  };
  // [accepted at, ms it waited for its placement]: the part of a client's first byte spent here.
  const placements: [number, number][] = [];
  const placed = m.placed.bind(m);
  m.placed = (conn) => {
    const t = performance.now();
    const p = placed(conn);
    void p.then(() => placements.push([Math.round(epoch + t), Math.round(performance.now() - t)]));
    return p;
  };
  // [made at, placed (1) or born at a NIC (0), then ms of: its placement, the accept queue, the
  // application's turn to its first write; the peer's port]: where the first byte waited in the host.
  const accepts: [number, number, number, number, number, number][] = [];
  traceAccepts((a) => {
    const queued = a.queuedAt - a.madeAt;
    const handed = a.handedAt - a.queuedAt;
    const wrote = a.firstWriteAt - a.handedAt;
    accepts.push([
      Math.round(epoch + a.madeAt),
      a.placed ? 1 : 0,
      Math.round(queued),
      Math.round(handed),
      Math.round(wrote),
      a.remotePort,
    ]);
  });
  process.on('exit', () => {
    writeFileSync(
      file,
      JSON.stringify({
        blocks,
        transfers,
        placements,
        accepts,
        hrUs,
        hrEpoch,
        counters: th.stack.counters.snapshot(),
      }),
    );
  });
}

type ServeLog = ChimneyLog;

async function runServe(o: ServeFlags & AdminFlags): Promise<void> {
  const adminAt = o.admin === undefined ? null : adminAddress('serve', o);
  const specs = o.service ?? [
    { name: 'echo', port: 7 },
    { name: 'discard', port: 9 },
    { name: 'http', port: 80 },
  ];
  // A service bound to an address serve does not hold is refused before any device is opened.
  try {
    checkServiceAddresses(specs, checkAddresses(o.ip, { gw: o.gw, gw6: o.gw6, mtu: o.mtu }));
  } catch (e) {
    failWith('serve', e);
  }
  const log: ServeLog = createLog(o.logFormat ?? 'human', { quiet: o.quiet });
  const teamed = o.tap.length > 1 || o.workers === true;
  // One TAP without --workers has no NIC to answer SYNs: said, rather than silently ignored.
  if (!teamed && o.acceptAtNic === true)
    fail('serve', '--accept-at-nic: needs a team (two --tap) or --workers');
  const sv = teamed ? await serveOnTeam(o, log) : serveOnTap(o, log);
  // The ready line promises reachable addresses: an IPv6 one is usable once DAD has passed.
  try {
    await ipv6Settled(sv.stack, IPV6_SETTLE_MS + (o.dadDelay ?? TAP_DAD_DELAY_MS));
  } catch (e) {
    sv.close();
    failWith('serve', e);
  }
  // Limits of the host stack; connections offloaded to NICs live in the NICs' own memory.
  sv.stack.tcp.budget.set({ maxConnections: o.maxConnections, memBytes: o.tcpMem });
  const running: RunningService[] = specs.map((s) => startService(sv.host, s, log, o.backlog));
  const reporter = new StatusReporter(sv.stack, `chimney serve on ${sv.label}`, {
    ...sv.status,
    listeners: () => specs.map(serviceLabel),
  });
  let control: ControlServer | null = null;
  const controlPath = o.control ?? `/run/chimney/${sv.controlName}.sock`;
  try {
    control = new ControlServer(controlPath, { status: () => reporter.snapshot(), ...sv.handlers });
    control.onError = (e) => log.error(`control socket ${controlPath}: ${e.message}`);
  } catch (e) {
    log.error(
      `control socket ${controlPath}: ${(e as Error).message} (chimney status will not reach this server)`,
    );
  }
  const admin = adminAt && (await startAdmin('serve', adminAt, sv.stack, reporter, sv.team, log.event));
  process.stdout.write(`chimney: serving ${specs.map(serviceLabel).join(' ')} on ${sv.label}\n`);
  let stopping = false;
  const stop = (sig: string): void => {
    if (stopping) return;
    stopping = true;
    log.info(`${sig}: closing`);
    for (const r of running) r.close();
    control?.close();
    void admin?.close();
    const deadline = Date.now() + SHUTDOWN_GRACE_MS;
    const wait = (): void => {
      if (running.some((r) => r.open > 0) && Date.now() < deadline) {
        setTimeout(wait, 20);
        return;
      }
      for (const r of running) r.destroyAll();
      // Let the resets and FINs leave before the TAP goes.
      setImmediate(() => {
        sv.close();
        // Worker NICs flush their last frames before their threads end.
        setTimeout(() => process.exit(0), teamed ? 200 : 0);
      });
    };
    wait();
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
}

async function runGet(url: string, o: TapFlags & { output?: string; timeout: number }): Promise<void> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    fail('get', `'${url}' is not a URL`);
  }
  if (u.protocol !== 'http:') fail('get', `${url}: only http:// is supported`);
  const lit = urlHostLiteral(u.hostname);
  if (lit === null) {
    fail(
      'get',
      `${url}: the host must be an IPv4 address or an IPv6 one in brackets, http://[fd00::1]/ (Chimney has no DNS resolver)`,
    );
  }
  const hostname = lit.host;
  let a: CheckedAddresses;
  try {
    a = checkAddresses(o.ip, { gw: o.gw, gw6: o.gw6, mtu: o.mtu });
  } catch (e) {
    failWith('get', e);
  }
  if (lit.family === 6 && a.v6.length === 0)
    fail('get', `${url}: an IPv6 host needs an IPv6 --ip (e.g. --ip fd00::20/64)`);
  if (lit.family === 4 && a.v4.length === 0)
    fail('get', `${url}: an IPv4 host needs an IPv4 --ip (e.g. --ip 10.9.0.20/24)`);
  const th = openHost('get', o);
  try {
    await ipv6Settled(th.stack, IPV6_SETTLE_MS + (o.dadDelay ?? TAP_DAD_DELAY_MS));
  } catch (e) {
    th.close();
    failWith('get', e);
  }
  const port = u.port === '' ? 80 : Number(u.port);
  let done = false;
  const finish = (code: number, msg?: string): void => {
    if (done) return;
    done = true;
    if (msg) process.stderr.write(`chimney get: ${msg}\n`);
    th.close();
    const exit = (): void => process.exit(code);
    if (out === process.stdout) process.stdout.write('', exit);
    else out.end(exit);
  };
  const out: NodeJS.WritableStream =
    o.output !== undefined ? createWriteStream(o.output) : (process.stdout as NodeJS.WritableStream);
  out.on('error', (e: Error) => finish(1, `${o.output ?? 'stdout'}: ${e.message}`));
  const req = http.request(
    {
      method: 'GET',
      host: hostname,
      port,
      path: `${u.pathname}${u.search}`,
      headers: { host: u.host, 'user-agent': 'chimney-get' },
      createConnection: () => th.host.connect({ port, host: hostname }) as never,
      timeout: o.timeout,
    },
    (res) => {
      const status = res.statusCode ?? 0;
      if (status >= 400) {
        res.resume();
        finish(1, `${url}: HTTP ${status} ${res.statusMessage ?? ''}`.trimEnd());
        return;
      }
      res.on('error', (e) => finish(1, `${url}: ${e.message}`));
      res.on('aborted', () => finish(1, `${url}: connection closed before the body was complete`));
      res.pipe(out as NodeJS.WritableStream, { end: false });
      res.on('end', () => {
        if (!res.complete) finish(1, `${url}: connection closed before the body was complete`);
        else finish(0);
      });
    },
  );
  req.on('timeout', () => {
    req.destroy(new Error(`no data for ${o.timeout} ms`));
  });
  req.on('error', (e: Error & { code?: string }) => finish(1, `${url}: ${e.message}`));
  req.end();
}
