import type { Clock } from '../core/clock.ts';
import { Counters } from '../core/counters.ts';
import { InvalidArgumentError } from '../core/errors.ts';
import type { Random } from '../core/random.ts';
import type { ImpairmentSpec } from '../link/impairment.ts';
import type { Link } from '../link/link.ts';
import type { MemorySwitch, SwitchPort } from '../link/memory-switch.ts';
import { LocalNic } from '../nic/local-nic.ts';
import type { Nic } from '../nic/nic.ts';
import { OffloadManager, type OffloadPolicy } from '../offload/offload-manager.ts';
import { Host } from '../socket/host.ts';
import type { Ipv6Options } from '../stack/ipv6.ts';
import { Stack } from '../stack/stack.ts';
import type { TcpConnection } from '../stack/tcp/tcp-connection.ts';
import type { TcpListener } from '../stack/tcp/tcp-layer.ts';
import type { TcpCached } from '../state/tcp-state.ts';
import { parseCidr, parseIpv4, parseIpv6, parseMac } from '../wire/addr.ts';
import type { HealthOptions } from './health.ts';
import { ManagerOffloader } from './manager-offloader.ts';
import { ProbeTap } from './probe-tap.ts';
import { type FailoverRecord, type RestartOptions, Team, type TeamHealth, type TeamMember } from './team.ts';

/** What a team host needs of a simulated segment (a SimNetwork fits). */
export interface TeamSegment {
  readonly clock: Clock;
  readonly random: Random & { fork(): Random };
  readonly switch: MemorySwitch;
}

export interface TeamHostOptions {
  /** The team's IPv4 address, with prefix, e.g. '10.0.0.1/24'; absent: IPv6 only (`ip6`). */
  ip?: string;
  /** The team's one MAC (default 02:00:00:00:aa:01). */
  mac?: string;
  name?: string;
  /** LocalNics, one switch port each (default 2, at most 16). */
  nics?: number;
  nicCapacity?: number;
  /** IPv6 addresses of the team's interface, with prefix, e.g. 'fd00::1/64' (none: IPv4 only). */
  ip6?: readonly string[];
  ipv6?: Ipv6Options;
  /**
   * Addresses the members probe for reachability (10 ms × 3 by default): ARP for IPv4 ones,
   * neighbor solicitations for IPv6 ones; none: off.
   */
  probeTargets?: readonly string[];
  /** 802.1Q VLAN id of the team's interface, probes and announcements (untagged when absent). */
  vlan?: number;
  health?: HealthOptions;
  failback?: boolean;
  batchSize?: number;
  tcp?: Partial<TcpCached>;
  /** Impairments of every member's switch port. */
  impair?: ImpairmentSpec;
  /** Offload policy for new connections (default 'manual': call `offloadAll()`). */
  policy?: Partial<OffloadPolicy>;
  /** What member `i` sends and hears through instead of its bare switch port (a test's filter). */
  wrapPort?: (port: SwitchPort, i: number) => Link;
  /**
   * A dead member's switch port goes to the host's own link when no member can carry the host's
   * traffic, as a dead WorkerNic's TAP does on real links (TeamMember.hostPortAfterDeath; default
   * false: the host has no wire once every member is dead).
   */
  hostPortsAfterDeath?: boolean;
  /**
   * A crashed member is started again on its switch port (a new LocalNic), as serve restarts a
   * dead worker (TeamMember.restart); with `restart`'s backoff and limit. Default: never.
   */
  restartMembers?: boolean;
  restart?: RestartOptions;
  /** The receive port's learning frames (TeamOptions.learnIntervalMs). */
  learnIntervalMs?: number;
  /** TeamOptions.oneReceivePort. */
  oneReceivePort?: boolean;
  /** The host's ISN secret, given to the stack and every member (absent: each draws its own). */
  isnSecret?: Uint8Array;
}

/**
 * A host whose one IP and MAC sit on a team of NICs: a stack on the team's link, an offload
 * manager that moves connections, and the team watching every member and failing over. Events of
 * `team`: 'failure', 'recovered', 'failover' (FailoverRecord).
 */
export class TeamHost<N extends Nic = Nic> extends Host {
  private closed = false;
  private readonly members: N[];
  /**
   * NICs a restart replaced that the manager could not forget yet (a connection still recorded
   * there: a failover that failed), closed with the host. The others are closed at once.
   */
  private readonly retired: Nic[] = [];
  constructor(
    stack: Stack,
    readonly name: string,
    /** The team's IPv4 address, or its first IPv6 one when it has no IPv4 address. */
    readonly ip: string,
    readonly team: Team,
    readonly manager: OffloadManager,
    nics: readonly N[],
    /** The members' switch ports (simulated segments only; empty otherwise). */
    readonly ports: readonly SwitchPort[],
    readonly counters: Counters,
  ) {
    super(stack);
    this.members = [...nics];
    // A member's restart returns the same kind of NIC (TeamMember.restart of the members given).
    // Called once the failover off the old NIC (its salvage included) is done: the team's chain
    // runs the replacement after it. The old NIC goes first, so the new one may take its gate word.
    team.onMemberReplaced((old, nic) => {
      const i = this.members.indexOf(old as N);
      if (i >= 0) this.members[i] = nic as N;
      if (manager.removeNic(old)) old.close();
      else this.retired.push(old);
      manager.addNic(nic);
    });
  }

  /** The members' NICs now (a restarted member's new NIC in its place). */
  get nics(): readonly N[] {
    return this.members;
  }

  /**
   * TcpServer's hook: an accepted connection reaches the application once the offload policy
   * has placed it (on a member, or left it in the host), so with an 'immediate' policy what the
   * application writes first goes straight to the member's shared rings instead of through the
   * host's buffers and a transfer.
   */
  placeAccepted(conn: TcpConnection): Promise<void> | null {
    // Born on a member (OffloadManager.acceptAtNic): placed already.
    if (conn.engine !== this.stack.tcp) return null;
    if (this.closed || this.manager.policy.mode !== 'immediate') return null;
    return this.manager.placed(conn);
  }

  /** TcpServer's hook: the members answer the listener's SYNs when the manager's `acceptAtNic` is on. */
  listening(l: TcpListener): (() => void) | null {
    return this.manager.listenAtNics(l);
  }

  /** Each member's health, load and whether it carries the host's own traffic. */
  health(): TeamHealth[] {
    return this.team.health();
  }

  get failovers(): readonly FailoverRecord[] {
    return this.team.failovers;
  }

  /** Offload every offloadable host connection, spread over the healthy members by free room. */
  async offloadAll(): Promise<number> {
    const r = await this.manager.offload('all');
    return r.moved.length;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.team.close();
    this.manager.close();
    for (const n of this.nics) n.close();
    for (const n of this.retired) n.close();
    this.stack.close();
  }
}

/** What assembleTeamHost needs besides the members. */
export interface TeamAssembly<N extends Nic = Nic> {
  clock: Clock;
  random: Random & { fork(): Random };
  /** The host's ISN secret, which its members were given too (StackOptions.isnSecret). */
  isnSecret?: Uint8Array;
  name: string;
  /** The team's IPv4 address with prefix (absent: IPv6 only), and its one MAC. */
  ip?: string;
  mac: string;
  members: readonly (TeamMember & { nic: N })[];
  ports?: readonly SwitchPort[];
  counters: Counters;
  /** IPv6 addresses of the team's interface, with prefix (IPv6 may also be enabled later). */
  ip6?: readonly string[];
  /** The IPv6 layer's options (DAD's initial delay on real links, ...). */
  ipv6?: Ipv6Options;
  /** Either family: ARP probes for IPv4 targets, neighbor solicitations for IPv6 ones. */
  probeTargets?: readonly string[];
  /** 802.1Q VLAN id of the team's interface, probes and announcements (untagged when absent). */
  vlan?: number;
  health?: HealthOptions;
  failback?: boolean;
  batchSize?: number;
  tcp?: Partial<TcpCached>;
  policy?: Partial<OffloadPolicy>;
  restart?: RestartOptions;
  learnIntervalMs?: number;
  oneReceivePort?: boolean;
}

/**
 * Wire a team host from members already built (simulated ports or TAP devices, LocalNics or
 * WorkerNics): the team, the stack on its link, the offload manager that only picks usable members
 * with room, and the team's mover on that manager.
 */
export function assembleTeamHost<N extends Nic>(a: TeamAssembly<N>): TeamHost<N> {
  if (a.ip !== undefined && parseCidr(a.ip).prefixLength === 32)
    throw new InvalidArgumentError(`team address ${a.ip} needs a subnet prefix`);
  const ip = a.ip?.split('/')[0];
  const targets = a.probeTargets ?? [];
  const probe4 = targets.filter((t) => !t.includes(':'));
  // An ARP probe would ask from an interface that has no IPv4 address to answer to.
  if (ip === undefined && probe4.length > 0)
    throw new InvalidArgumentError(`probe targets ${probe4.join(', ')}: an IPv6-only team probes IPv6 only`);
  const team = new Team({
    clock: a.clock,
    mac: parseMac(a.mac),
    ip: ip === undefined ? undefined : parseIpv4(ip),
    vlanId: a.vlan,
    health: {
      probeTargets: probe4.map((t) => parseIpv4(t)),
      probeTargets6: targets.filter((t) => t.includes(':')).map((t) => parseIpv6(t)),
      ...a.health,
    },
    failback: a.failback,
    batchSize: a.batchSize,
    counters: a.counters,
    restart: a.restart,
    learnIntervalMs: a.learnIntervalMs,
    oneReceivePort: a.oneReceivePort,
  });
  for (const m of a.members) team.add(m);
  const nics = a.members.map((m) => m.nic);
  const stack = new Stack({
    clock: a.clock,
    random: a.random.fork(),
    isnSecret: a.isnSecret,
    name: a.name,
    tcp: a.tcp,
    ipv6: a.ipv6,
  });
  const iface = stack.addInterface(team.link, {
    mac: a.mac,
    ip: [...(a.ip === undefined ? [] : [a.ip]), ...(a.ip6 ?? [])],
    vlan: a.vlan,
    name: `${a.name}0`,
  });
  // Read when announcing, not now: IPv6 may be enabled later, and addresses come and go (DAD, RA).
  team.setIpv6Addresses(() =>
    stack.ip6
      .addresses(iface)
      .filter((x) => x.state === 'preferred' || x.state === 'deprecated')
      .map((x) => parseIpv6(x.ip)),
  );
  team.onHostPortChange(() => stack.ip6.mld.resend(iface));
  team.setAddressBook(stack.addrs);
  const manager = new OffloadManager({ stack, nics, policy: a.policy });
  manager.eligible = (nic) => team.isUsable(nic) && nic.load < nic.capacity;
  team.setOffloader(new ManagerOffloader(manager));
  const name = ip ?? a.ip6?.[0]?.split('/')[0] ?? '';
  return new TeamHost(stack, a.name, name, team, manager, nics, a.ports ?? [], a.counters);
}

/** A team of LocalNics, one port each of a simulated switch. */
export function buildTeamHost(seg: TeamSegment, opts: TeamHostOptions): TeamHost<LocalNic> {
  if (!seg?.clock || !seg.switch)
    throw new InvalidArgumentError('buildTeamHost needs a segment (clock, random, switch)');
  if (!opts || (typeof opts.ip !== 'string' && !opts.ip6?.length))
    throw new InvalidArgumentError('buildTeamHost needs ip (IPv4) or ip6');
  if (opts.ip !== undefined) parseCidr(opts.ip);
  const count = opts.nics ?? 2;
  if (!Number.isInteger(count) || count < 1 || count > 16)
    throw new InvalidArgumentError(`nics must be an integer 1..16, got ${String(opts.nics)}`);
  // Closing the host's port on a switch port would close the port itself (ProbeTap.close).
  if (opts.restartMembers && opts.hostPortsAfterDeath)
    throw new InvalidArgumentError(
      'restartMembers and hostPortsAfterDeath: one or the other on a simulated team',
    );
  const name = opts.name ?? 'team';
  const macStr = opts.mac ?? '02:00:00:00:aa:01';
  const mac = parseMac(macStr);
  const counters = new Counters();
  const members: (TeamMember & { nic: LocalNic })[] = [];
  const ports: SwitchPort[] = [];
  for (let i = 0; i < count; i++) {
    const port = seg.switch.addPort({ name: `${name}.nic${i}`, impair: opts.impair });
    // Each port probes from a MAC of its own, so probing never moves the team MAC in the switch.
    const wire = opts.wrapPort?.(port, i) ?? port;
    const member = (): TeamMember & { nic: LocalNic } => {
      const tap = new ProbeTap(wire, probeMacFor(mac, i), counters);
      const nic = new LocalNic({
        id: `${name}.nic${i}`,
        link: tap,
        clock: seg.clock,
        random: seg.random.fork(),
        capacity: opts.nicCapacity,
        isnSecret: opts.isnSecret,
      });
      // As a dead worker's thread is (threadGone), an engine the team took for dead while it
      // runs is stopped before its port is reused: two engines would answer on one port.
      const stop = (): void => {
        if (nic.death === null) nic.crash('stopped: its port is taken over');
      };
      // The dead member's engine no longer reads the port: the new tap takes its frames over.
      const hostPortAfterDeath = opts.hostPortsAfterDeath
        ? () => {
            stop();
            return Promise.resolve(new ProbeTap(wire, probeMacFor(mac, i), counters));
          }
        : undefined;
      const restart = opts.restartMembers
        ? () => {
            stop();
            return Promise.resolve(member());
          }
        : undefined;
      return { nic, tap, hostPortAfterDeath, restart };
    };
    members.push(member());
    ports.push(port);
  }
  return assembleTeamHost({
    clock: seg.clock,
    random: seg.random,
    name,
    ip: opts.ip,
    mac: macStr,
    members,
    ports,
    counters,
    ip6: opts.ip6,
    ipv6: opts.ipv6,
    probeTargets: opts.probeTargets,
    vlan: opts.vlan,
    health: opts.health,
    failback: opts.failback,
    batchSize: opts.batchSize,
    tcp: opts.tcp,
    policy: opts.policy,
    isnSecret: opts.isnSecret,
    restart: opts.restart,
    learnIntervalMs: opts.learnIntervalMs,
    oneReceivePort: opts.oneReceivePort,
  });
}

/** The MAC member `i` of a team with MAC `teamMac` sends its reachability probes from. */
export function probeMacFor(teamMac: number, i: number): number {
  return 0x020000bb0000 + (teamMac & 0xff) * 256 + i + 1;
}
