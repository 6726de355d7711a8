import { type Clock, RealClock, VirtualClock } from '../core/clock.ts';
import { InvalidArgumentError } from '../core/errors.ts';
import { SeededRandom } from '../core/random.ts';
import { type ImpairmentSpec, validateImpairment } from '../link/impairment.ts';
import type { Link } from '../link/link.ts';
import { MemorySwitch, type SwitchPort } from '../link/memory-switch.ts';
import { capture, PcapWriter } from '../link/pcap.ts';
import { LocalNic } from '../nic/local-nic.ts';
import { NicGroupLink } from '../nic/nic-group-link.ts';
import { OffloadManager, type OffloadPolicy } from '../offload/offload-manager.ts';
import { Host } from '../socket/host.ts';
import type { AddressTableOptions } from '../stack/address-table.ts';
import type { Ipv6Options } from '../stack/ipv6.ts';
import { Stack } from '../stack/stack.ts';
import type { TcpLimits } from '../stack/tcp/tcp-mem.ts';
import type { TcpCached } from '../state/tcp-state.ts';
import { buildTeamHost, type TeamHost, type TeamHostOptions } from '../team/team-host.ts';
import { formatMac, parseCidr } from '../wire/addr.ts';
import { FrameTrace } from './trace.ts';
import { VirtualTimeDriver } from './virtual-time-driver.ts';

export interface SimNetworkOptions {
  /** Seed for every random choice in the network (impairments, ISNs, ports). Default 1. */
  seed?: number;
  /** Run on virtual time (default true): timers jump ahead whenever nothing is runnable. */
  virtualTime?: boolean;
  /** Default MTU of new hosts' links (default 1500). */
  mtu?: number;
  /** Keep a digest of every frame sent, for determinism checks (`net.traceDigest()`). */
  trace?: boolean;
  /** Write every frame seen by any host to this pcap file. */
  pcap?: string;
  /** The switch's MAC ageing time in ms (default 300 s, a Linux bridge's). */
  macAgeMs?: number;
}

export interface SimHostOptions {
  /** Address with prefix length, e.g. '10.0.0.1/24'. */
  ip: string;
  mac?: string;
  gateway?: string;
  name?: string;
  mtu?: number;
  vlan?: number;
  /** Impairments of this host's switch port (both directions, or per direction). */
  impair?: ImpairmentSpec;
  /**
   * Segmentation and checksum offload on this host's port, as on a veth pair: TCP sends 64 KB
   * super-segments and checksums are left to the "hardware" (off by default, so captures carry
   * real checksums).
   */
  offload?: boolean;
  /** Default TCP settings for this host's connections. */
  tcp?: Partial<TcpCached>;
  /** The host stack's TCP connection and memory limits (`StackOptions.tcpLimits`). */
  tcpLimits?: TcpLimits;
  /** IPv6 addresses with prefix length ('fd00::1/64'); the interface also gets its link-local one. */
  ip6?: string | string[];
  /** IPv6 settings (duplicate address detection, router solicitations, ...). */
  ipv6?: Ipv6Options;
  /** Bounds of the stack's table of IPv6 address handles. */
  addresses?: AddressTableOptions;
}

/** One host on the simulated network: a Chimney stack on a switch port, with Node-shaped sockets. */
export class SimHost extends Host {
  constructor(
    stack: Stack,
    readonly name: string,
    readonly ip: string,
    readonly port: SwitchPort,
  ) {
    super(stack);
  }

  /** Change this host's link impairments. */
  impair(spec: ImpairmentSpec): void {
    this.port.impair(spec);
  }
  /** Pull the cable: carrier goes down and frames are lost until restore(). */
  cut(): void {
    this.port.cut();
  }
  restore(): void {
    this.port.restore();
  }
}

export interface SimOffloadHostOptions extends SimHostOptions {
  /** LocalNics, each on its own switch port, all presenting the host's one IP and MAC (default 2). */
  nics?: number;
  /** Connections each NIC can hold (default 100000). */
  nicCapacity?: number;
  policy?: Partial<OffloadPolicy>;
}

/** A simulated host whose connections can be offloaded to its LocalNics. */
export class SimOffloadHost extends SimHost {
  constructor(
    stack: Stack,
    name: string,
    ip: string,
    readonly ports: readonly SwitchPort[],
    readonly nics: readonly LocalNic[],
    readonly offload: OffloadManager,
  ) {
    super(stack, name, ip, ports[0]!);
  }
}

/**
 * An L2 segment of simulated hosts on one memory switch, by default on virtual time so that a
 * scenario with long timeouts takes little real time and replays exactly from its seed.
 */
export class SimNetwork {
  readonly clock: Clock;
  readonly random: SeededRandom;
  readonly switch: MemorySwitch;
  readonly hosts: SimHost[] = [];
  readonly teamHosts: TeamHost[] = [];
  readonly seed: number;
  private readonly driver: VirtualTimeDriver | null;
  private readonly trace: FrameTrace | null;
  private readonly pcap: PcapWriter | null;
  private readonly defaultMtu: number;
  private closed = false;

  constructor(opts: SimNetworkOptions = {}) {
    const seed = opts.seed ?? 1;
    if (!Number.isInteger(seed)) throw new InvalidArgumentError(`seed must be an integer, got ${seed}`);
    this.seed = seed;
    this.defaultMtu = opts.mtu ?? 1500;
    const virtual = opts.virtualTime ?? true;
    if (virtual) {
      const vc = new VirtualClock();
      this.clock = vc;
      this.driver = new VirtualTimeDriver(vc);
    } else {
      this.clock = new RealClock();
      this.driver = null;
    }
    this.random = new SeededRandom(seed);
    this.switch = new MemorySwitch({
      clock: this.clock,
      random: this.random.fork(),
      name: 'sim',
      ageMs: opts.macAgeMs,
    });
    this.trace = opts.trace ? new FrameTrace(this.clock) : null;
    this.pcap = opts.pcap ? new PcapWriter(opts.pcap, this.clock) : null;
  }

  addHost(opts: SimHostOptions): SimHost {
    const { prefixLength } = parseCidr(opts.ip);
    if (prefixLength === 32)
      throw new InvalidArgumentError(`host address ${opts.ip} needs a subnet prefix, e.g. /24`);
    if (opts.impair) validateImpairment(opts.impair);
    const index = this.hosts.length + 1;
    const name = opts.name ?? `h${index}`;
    const mac = opts.mac ?? formatMac(0x020000000000 + index);
    const port = this.switch.addPort({
      name,
      mtu: opts.mtu ?? this.defaultMtu,
      impair: opts.impair,
      offload: opts.offload,
    });
    let link: Link = port;
    if (this.trace) link = this.trace.wrap(link);
    if (this.pcap) link = capture(link, this.pcap);
    const stack = this.newStack(name, opts, link, mac);
    if (opts.gateway) stack.setDefaultGateway(opts.gateway);
    const host = new SimHost(stack, name, opts.ip.split('/')[0]!, port);
    this.hosts.push(host);
    return host;
  }

  /**
   * A host whose stack reaches the segment through `nics` LocalNics (one switch port each), with an
   * OffloadManager (`host.offload`) that moves its connections between the stack and the NICs.
   */
  addOffloadHost(opts: SimOffloadHostOptions): SimOffloadHost {
    const { prefixLength } = parseCidr(opts.ip);
    if (prefixLength === 32)
      throw new InvalidArgumentError(`host address ${opts.ip} needs a subnet prefix, e.g. /24`);
    if (opts.impair) validateImpairment(opts.impair);
    const count = opts.nics ?? 2;
    if (!Number.isInteger(count) || count < 1 || count > 16)
      throw new InvalidArgumentError(`nics must be an integer 1..16, got ${String(opts.nics)}`);
    const index = this.hosts.length + 1;
    const name = opts.name ?? `h${index}`;
    const mac = opts.mac ?? formatMac(0x020000000000 + index);
    const ports: SwitchPort[] = [];
    const nics: LocalNic[] = [];
    for (let i = 0; i < count; i++) {
      const port = this.switch.addPort({
        name: `${name}.nic${i}`,
        mtu: opts.mtu ?? this.defaultMtu,
        impair: opts.impair,
      });
      let link: Link = port;
      if (this.trace) link = this.trace.wrap(link);
      if (this.pcap) link = capture(link, this.pcap);
      ports.push(port);
      nics.push(
        new LocalNic({
          id: `${name}.nic${i}`,
          link,
          clock: this.clock,
          random: this.random.fork(),
          capacity: opts.nicCapacity,
        }),
      );
    }
    const stack = this.newStack(name, opts, new NicGroupLink(nics), mac);
    if (opts.gateway) stack.setDefaultGateway(opts.gateway);
    const offload = new OffloadManager({ stack, nics, policy: opts.policy });
    const host = new SimOffloadHost(stack, name, opts.ip.split('/')[0]!, ports, nics, offload);
    this.hosts.push(host);
    return host;
  }

  /**
   * A host whose one IP and MAC sit on a team of LocalNics (one switch port each), with an offload
   * manager and failover: `host.team` emits 'failover', `host.health()` reports each member.
   */
  addTeamHost(opts: TeamHostOptions): TeamHost<LocalNic> {
    const host = buildTeamHost(this, opts);
    this.teamHosts.push(host);
    return host;
  }

  /** A host's stack with its one interface: the IPv4 address and any IPv6 ones. */
  private newStack(name: string, opts: SimHostOptions, link: Link, mac: string): Stack {
    const stack = new Stack({
      clock: this.clock,
      random: this.random.fork(),
      name,
      tcp: opts.tcp,
      tcpLimits: opts.tcpLimits,
      ipv6: opts.ipv6,
      addresses: opts.addresses,
    });
    const ip6 = opts.ip6 === undefined ? [] : typeof opts.ip6 === 'string' ? [opts.ip6] : opts.ip6;
    stack.addInterface(link, { mac, ip: [opts.ip, ...ip6], vlan: opts.vlan, name: 'eth0' });
    return stack;
  }

  /** Resolve after `ms` of network time (virtual or real). */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = this.clock.createTimer(resolve);
      t.arm(ms);
    });
  }

  /** Current network time in ms. */
  now(): number {
    return this.clock.now();
  }

  /** Digest of every frame sent so far (needs `trace: true`). */
  traceDigest(): string {
    if (!this.trace)
      throw new InvalidArgumentError('create the SimNetwork with { trace: true } to record a trace');
    return this.trace.digest();
  }

  get framesTraced(): number {
    return this.trace?.frames ?? 0;
  }

  /** Stop every stack and the driver; pending timers are dropped. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const h of this.hosts) {
      if (h instanceof SimOffloadHost) {
        h.offload.close();
        for (const n of h.nics) n.close();
      }
      h.stack.close();
    }
    for (const h of this.teamHosts) h.close();
    this.pcap?.close();
    this.driver?.stop();
  }
}
