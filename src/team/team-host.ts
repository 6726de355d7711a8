import type { Clock } from '../core/clock.ts';
import { Counters } from '../core/counters.ts';
import { InvalidArgumentError } from '../core/errors.ts';
import type { Random } from '../core/random.ts';
import type { ImpairmentSpec } from '../link/impairment.ts';
import type { MemorySwitch, SwitchPort } from '../link/memory-switch.ts';
import { LocalNic } from '../nic/local-nic.ts';
import { OffloadManager, type OffloadPolicy } from '../offload/offload-manager.ts';
import { Host } from '../socket/host.ts';
import { Stack } from '../stack/stack.ts';
import type { TcpCached } from '../state/tcp-state.ts';
import { parseCidr, parseIpv4, parseMac } from '../wire/addr.ts';
import type { HealthOptions } from './health.ts';
import { ManagerOffloader } from './manager-offloader.ts';
import { ProbeTap } from './probe-tap.ts';
import { type FailoverRecord, Team, type TeamHealth } from './team.ts';

/** What a team host needs of a simulated segment (a SimNetwork fits). */
export interface TeamSegment {
  readonly clock: Clock;
  readonly random: Random & { fork(): Random };
  readonly switch: MemorySwitch;
}

export interface TeamHostOptions {
  /** The team's one address, with prefix, e.g. '10.0.0.1/24'. */
  ip: string;
  /** The team's one MAC (default 02:00:00:00:aa:01). */
  mac?: string;
  name?: string;
  /** LocalNics, one switch port each (default 2, at most 16). */
  nics?: number;
  nicCapacity?: number;
  /** Addresses the members probe for reachability (ARP, 10 ms × 3 by default); none: off. */
  probeTargets?: readonly string[];
  health?: HealthOptions;
  failback?: boolean;
  batchSize?: number;
  tcp?: Partial<TcpCached>;
  /** Impairments of every member's switch port. */
  impair?: ImpairmentSpec;
  /** Offload policy for new connections (default 'manual': call `offloadAll()`). */
  policy?: Partial<OffloadPolicy>;
}

/**
 * A host on a simulated segment whose one IP and MAC sit on a team of LocalNics: a stack on the
 * team's link, an offload manager that moves connections, and the team watching every member and
 * failing over. Events of `team`: 'failure', 'recovered', 'failover' (FailoverRecord).
 */
export class TeamHost extends Host {
  private closed = false;
  constructor(
    stack: Stack,
    readonly name: string,
    readonly ip: string,
    readonly team: Team,
    readonly manager: OffloadManager,
    readonly nics: readonly LocalNic[],
    readonly ports: readonly SwitchPort[],
    readonly counters: Counters,
  ) {
    super(stack);
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
    this.stack.close();
  }
}

export function buildTeamHost(seg: TeamSegment, opts: TeamHostOptions): TeamHost {
  if (!seg?.clock || !seg.switch)
    throw new InvalidArgumentError('buildTeamHost needs a segment (clock, random, switch)');
  if (!opts || typeof opts.ip !== 'string') throw new InvalidArgumentError('buildTeamHost needs ip');
  const { prefixLength } = parseCidr(opts.ip);
  if (prefixLength === 32) throw new InvalidArgumentError(`team address ${opts.ip} needs a subnet prefix`);
  const count = opts.nics ?? 2;
  if (!Number.isInteger(count) || count < 1 || count > 16)
    throw new InvalidArgumentError(`nics must be an integer 1..16, got ${String(opts.nics)}`);
  const name = opts.name ?? 'team';
  const macStr = opts.mac ?? '02:00:00:00:aa:01';
  const mac = parseMac(macStr);
  const ip = opts.ip.split('/')[0]!;
  const counters = new Counters();
  const targets = (opts.probeTargets ?? []).map((t) => parseIpv4(t));
  const team = new Team({
    clock: seg.clock,
    mac,
    ip: parseIpv4(ip),
    health: { probeTargets: targets, ...opts.health },
    failback: opts.failback,
    batchSize: opts.batchSize,
    counters,
  });
  const nics: LocalNic[] = [];
  const ports: SwitchPort[] = [];
  for (let i = 0; i < count; i++) {
    const port = seg.switch.addPort({ name: `${name}.nic${i}`, impair: opts.impair });
    // Each port probes from a MAC of its own, so probing never moves the team MAC in the switch.
    const tap = new ProbeTap(port, 0x020000bb0000 + (mac & 0xff) * 256 + i + 1, counters);
    const nic = new LocalNic({
      id: `${name}.nic${i}`,
      link: tap,
      clock: seg.clock,
      random: seg.random.fork(),
      capacity: opts.nicCapacity,
    });
    team.add({ nic, tap });
    nics.push(nic);
    ports.push(port);
  }
  const stack = new Stack({ clock: seg.clock, random: seg.random.fork(), name, tcp: opts.tcp });
  stack.addInterface(team.link, { mac: macStr, ip: opts.ip, name: `${name}0` });
  const manager = new OffloadManager({ stack, nics, policy: opts.policy });
  manager.eligible = (nic) => team.isUsable(nic) && nic.load < nic.capacity;
  team.setOffloader(new ManagerOffloader(manager));
  return new TeamHost(stack, name, ip, team, manager, nics, ports, counters);
}
