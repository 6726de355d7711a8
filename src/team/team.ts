import { EventEmitter } from 'node:events';
import type { Clock, Timer } from '../core/clock.ts';
import { Counters } from '../core/counters.ts';
import { InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import type { Link } from '../link/link.ts';
import { type ConnKey, describeDeath, type Nic } from '../nic/nic.ts';
import { type MovePhaseSummary, MovePhases } from '../offload/move-phases.ts';
import type { AddressBook } from '../state/path-state.ts';
import {
  type FailureCause,
  type FailureEvent,
  type HealthOptions,
  NicHealth,
  type NicHealthSnapshot,
  resolveHealthOptions,
} from './health.ts';
import type { ProbeTap } from './probe-tap.ts';
import { ProgressWatch } from './progress-watch.ts';
import { TeamLink, UnsolicitedNaSeries } from './team-link.ts';

/** Where the connections of one transfer ended up. */
export interface MoveResult {
  /** Running at the destination now. */
  moved: ConnKey[];
  /** Refused by the destination (or never offloadable): running in the host now. */
  inHost: ConnKey[];
  /** Could not be moved, kept or rebuilt: their users heard an error. */
  lost: ConnKey[];
}

/**
 * What the team needs from whoever moves connections (the offload manager, through
 * ManagerOffloader). Every transfer prods what it installs so the peer resumes at once, and
 * nothing refused goes back to a member that failed.
 */
export interface TeamOffloader {
  /** Connections offloaded to `nic` now. */
  connectionsOn(nic: Nic): ConnKey[];
  /** The member running this 4-tuple, or null (host, or unknown). */
  ownerOf(localIp: number, localPort: number, remoteIp: number, remotePort: number): Nic | null;
  /** NIC to NIC. `phases`: a failover's recorder, marked at each step (move-phases.ts). */
  move(keys: ConnKey[], from: Nic, to: Nic, phases?: MovePhases): Promise<MoveResult>;
  /** NIC to host. */
  upload(keys: ConnKey[], from: Nic, phases?: MovePhases): Promise<MoveResult>;
  /**
   * Host to NIC (connections that waited in the host for a link to come back). `prod` (default
   * true) false: the connections ran on a working port in the host, and the move lost nothing.
   */
  offload(keys: ConnKey[], to: Nic, prod?: boolean): Promise<MoveResult>;
  /** The NIC is gone or lied: rebuild from the hard state it left, on `to` or (null) in the host. */
  recover(keys: ConnKey[], from: Nic, to: Nic | null, phases?: MovePhases): Promise<MoveResult>;
  /**
   * Told once which members are failed (down, dead or in their hold): nothing may settle there,
   * not even a transfer that began before the failure, so a failover's one list of a member's
   * connections is complete.
   */
  refuseFailed?(failed: (nic: Nic) => boolean): void;
  /**
   * The host's traffic moved off a member that failed: prod the host stack's own connections as
   * a moved connection is prodded. Returns how many were prodded.
   */
  prodHost?(): number;
}

export interface TeamMember {
  nic: Nic;
  /** The tap on the NIC's port, for probes and gratuitous ARP (absent: no reachability checking). */
  tap?: ProbeTap;
  /**
   * What the team's link sends and hears through for this member (default `nic.hostLink`). A NIC
   * that owns its port itself (a WorkerNic on a TAP) is probed through its host link: then the
   * ProbeTap wrapping that host link goes here.
   */
  hostLink?: Link;
  /**
   * The member's port for the host's own link once the member is dead and no member can carry the
   * host's traffic: a NIC that owned its port (a WorkerNic's TAP) lets it go with its thread, and
   * the host opens it on its own thread. Resolves once the port is free and open; rejects when it
   * cannot be had (the device went with the thread). Absent: the host has no way onto this port.
   */
  hostPortAfterDeath?: () => Promise<ProbeTap>;
  /**
   * Start a new NIC on this member's port once the member is dead and its old engine has let the
   * port go (a WorkerNic's thread exited): resolves with the new member once its engine runs;
   * rejects when it cannot start (and the port is free again). Absent: a dead member stays dead.
   * `letGo`: called by the member once its new engine is loaded and about to open the port; the
   * host's own link on that port (hostPortAfterDeath) closes then, so the host keeps its wire
   * while the new engine loads (seconds at load). Not called: the team lets go as the new member
   * joins.
   */
  restart?: (letGo: () => void) => Promise<TeamMember>;
}

/**
 * How a dead member with `TeamMember.restart` is started again, as a service manager restarts a
 * crashed service: after `firstDelayMs`, doubling for each death in a row up to `maxDelayMs`, at
 * most `limit` times in a row (then it stays dead). A member that ran `stableMs` since its last
 * start begins the count again.
 */
export interface RestartOptions {
  /** Restarts in a row before the member stays dead (default 5; 0: never restarted). */
  limit?: number;
  firstDelayMs?: number;
  maxDelayMs?: number;
  stableMs?: number;
}

/** Linux bonding's default `lp_interval`: a learning frame a second (TeamOptions.learnIntervalMs). */
export const DEFAULT_LEARN_INTERVAL_MS = 1000;
export const DEFAULT_RESTART_LIMIT = 5;
export const DEFAULT_RESTART_DELAY_MS = 1000;
/** The longest backoff (RestartOptions.maxDelayMs's default). */
export const RESTART_MAX_MS = 30_000;
const RESTART_STABLE_MS = 60_000;

/** One restart of a dead member (event 'restart'). */
export interface RestartRecord {
  nic: string;
  /** When the new NIC joined (or its start failed), clock ms. */
  at: number;
  /** 1 for the first restart in a row. */
  attempt: number;
  /** The backoff waited after the death. */
  delayMs: number;
  /** From the end of the backoff to the new NIC running (or its start failing). */
  startMs: number;
  /** The new NIC runs and is in the team (sitting out its hold); false: it could not start. */
  ok: boolean;
  detail: string;
}

export interface TeamOptions {
  clock: Clock;
  /** The team's one MAC and its IPv4 address (u32); absent: IPv6 only, announced by NAs alone. */
  mac: number;
  ip?: number;
  vlanId?: number;
  health?: HealthOptions;
  /** Connections per transfer during a failover (default 512). */
  batchSize?: number;
  /** Move connections back to a NIC once it has sat out its hold after recovering (default false). */
  failback?: boolean;
  counters?: Counters;
  /** Restarting dead members that can be (TeamMember.restart). */
  restart?: RestartOptions;
  /**
   * One receive port (default true; false: every member sends from the team MAC): every member
   * but the one that carries the host's traffic sends from its own MAC (`Nic.sendFrom`), so the
   * switch keeps the team MAC on that port and every inbound segment takes one path (bonding's
   * TLB). A gray failure of that port stalls every member; the progress watch then moves the
   * receive port to another member (ProgressWatch, ReceivePortHooks).
   */
  oneReceivePort?: boolean;
  /**
   * How often the port that carries the host's traffic sends a learning frame while the other
   * members send from MACs of their own (`Nic.sendFrom`), in ms (default 1000, Linux bonding's
   * `lp_interval`; 0: never). That port may have nothing else to send (no connection of its own),
   * and a switch ages out a MAC it has not heard from (300 s on a Linux bridge) and then floods the
   * team's inbound frames to every member: each owner would get its segments twice.
   */
  learnIntervalMs?: number;
}

export interface FailoverRecord {
  nic: string;
  cause: FailureCause;
  /** Detection time (clock ms). */
  at: number;
  /** From the last evidence the NIC was fine (the link's last sight of carrier, probe reply, heartbeat) to detection. */
  detectMs: number;
  /** From detection to the last connection running at its new owner. */
  resumeMs: number;
  connections: number;
  /** Where they went: NIC ids, or 'host'. */
  to: string[];
  /** Connections that could not be moved or rebuilt. */
  lost: number;
  detail: string;
  /** Where the move's time went, phase by phase (absent when nothing was moved). */
  phases?: MovePhaseSummary;
}

export interface TeamHealth {
  nic: string;
  health: NicHealthSnapshot;
  /** Placement's count (Nic.load): running connections and closed ones' blocks held unread. */
  load: number;
  /** Connections it runs (Nic.runningConns). */
  runningConns: number;
  capacity: number;
  carriesHost: boolean;
  /** Times this member was started again after dying. */
  restarts: number;
}

interface Slot {
  index: number;
  nic: Nic;
  tap: ProbeTap | null;
  health: NicHealth;
  /** TeamMember.hostPortAfterDeath; null once asked (or never offered). */
  portAfterDeath: (() => Promise<ProbeTap>) | null;
  /** The host's own link on this dead member's port, once open (until close or a restart). */
  port: ProbeTap | null;
  /** TeamMember.hostPortAfterDeath as given, asked again after each new NIC's death. */
  opener: (() => Promise<ProbeTap>) | null;
  restart: ((letGo: () => void) => Promise<TeamMember>) | null;
  /** Restarts since the member last ran `stableMs`, and of all time. */
  inARow: number;
  restarted: number;
  /** When the current NIC was started (clock ms). */
  startedAt: number;
  /** Bumped at each restart: a dead port opened for an earlier NIC is not taken. */
  gen: number;
  restartTimer: Timer | null;
  /** The restart its timer will run. */
  pending: { attempt: number; delayMs: number } | null;
  /**
   * Resolves once the failover off the current NIC's last failure has finished. The opener and
   * the restart stop a NIC that still runs (threadGone), which would lose what the move has not
   * taken off it yet: they wait for this first (`afterMove`).
   */
  movedOff: Promise<void>;
  /**
   * Its port failed to receive (the progress watch moved the receive port off it and progress came
   * back): not the receive port again before this time (clock ms) while another member can be.
   */
  rxFailedUntil: number;
  /** That hold, doubled at each failure within flapDecayMs of the last, as a link's is. */
  rxHold: number;
  rxFailedAt: number;
}

/**
 * Several NICs on one L2 segment, one MAC and one address: spreads offloads over the healthy
 * members, carries the host stack's own traffic on one of them (`link`), watches each member's
 * health, and on a failure moves everything the member ran to the others (FailoverManager's job,
 * folded in here: it needs nothing the team does not already hold).
 *
 * Events: 'failure' (FailureEvent), 'recovered' ({ nic, at }), 'failover' (FailoverRecord),
 * 'host-port' ({ nic, at }: the host's traffic went onto that dead member's port, hostOnDeadPort),
 * 'host-port-released' ({ nic, at }: the host let that port go to the member's new engine),
 * 'receive-port' ({ from, to, at, detail }: every member stalled and the progress watch moved the
 * one receive port), 'receive-failed' ({ nic, at, detail, holdMs }: progress came back once it
 * moved off that member's port, which does not receive for the team again for holdMs).
 */
export class Team extends EventEmitter {
  readonly link: TeamLink;
  readonly counters: Counters;
  readonly mac: number;
  /** The team's IPv4 address, or null when it speaks IPv6 only (no gratuitous ARP then). */
  readonly ip: number | null;
  readonly failovers: FailoverRecord[] = [];
  private readonly clock: Clock;
  private readonly slots: Slot[] = [];
  private readonly healthOpts: ReturnType<typeof resolveHealthOptions>;
  private readonly batchSize: number;
  private readonly failback: boolean;
  private readonly vlanId: number;
  private offloader: TeamOffloader | null = null;
  /** Connections sent to the host because no member was healthy; offloaded again on recovery. */
  private readonly waitingInHost = new Map<string, ConnKey>();
  /** Where a connection lived before a failover moved it (for fail-back). */
  private readonly home = new Map<string, { key: ConnKey; slot: number }>();
  /**
   * NICs a restart replaced: failed for good (nothing settles there). Weak: the team holds no dead
   * NIC once the host's manager has let it go (TeamHost), however often a member dies.
   */
  private readonly retired = new WeakSet<Nic>();
  readonly restarts: RestartRecord[] = [];
  private readonly restartOpts: Required<RestartOptions>;
  /** Told when a restart puts a new NIC in a member's place (the host's manager takes it). */
  private replacedHook: (old: Nic, nic: Nic) => void = () => {};
  /** Failovers and recoveries run one at a time, in order. */
  private chain: Promise<void> = Promise.resolve();
  /** Failovers and recoveries running or queued (the progress watch sits them out). */
  private jobs = 0;
  private readonly watch: ProgressWatch;
  private readonly na: UnsolicitedNaSeries;
  private readonly learnIntervalMs: number;
  private readonly oneReceivePort: boolean;
  private readonly learnTimer: Timer;
  /** Whether some member sends from a MAC of its own (steerSources): the learning frames are due. */
  private steering = false;
  /** Whether some member sends from a MAC of its own: one receive port is in effect. */
  private oneReceiver = false;
  /** The IPv6 addresses the team owns now (none until the host's stack says). */
  private addresses6: () => readonly Uint8Array[] = () => [];
  /** The host's IPv6 address table: connections name IPv6 peers by its handles. */
  private addressBook: AddressBook | null = null;
  /** Told when the host's traffic changes port (after the team's own announcements). */
  private hostPortChanged: () => void = () => {};
  private closed = false;

  constructor(opts: TeamOptions) {
    super();
    if (!opts?.clock) throw new InvalidArgumentError('Team needs a clock');
    if (!Number.isInteger(opts.mac) || opts.mac < 0 || opts.mac > 0xffffffffffff)
      throw new InvalidArgumentError('Team needs a 48-bit MAC');
    if (opts.ip !== undefined && (!Number.isInteger(opts.ip) || opts.ip < 1 || opts.ip > 0xffffffff))
      throw new InvalidArgumentError('a team IPv4 address is a non-zero u32 (or absent: IPv6 only)');
    const batch = opts.batchSize ?? 512;
    if (!Number.isInteger(batch) || batch < 1)
      throw new InvalidArgumentError('batchSize must be a positive integer');
    this.clock = opts.clock;
    this.mac = opts.mac;
    this.ip = opts.ip === undefined ? null : opts.ip >>> 0;
    this.vlanId = opts.vlanId ?? -1;
    this.counters = opts.counters ?? new Counters();
    this.healthOpts = resolveHealthOptions({ probeVlan: this.vlanId, ...opts.health });
    this.batchSize = batch;
    this.failback = opts.failback === true;
    const r = opts.restart ?? {};
    this.restartOpts = {
      limit: r.limit ?? DEFAULT_RESTART_LIMIT,
      firstDelayMs: r.firstDelayMs ?? DEFAULT_RESTART_DELAY_MS,
      maxDelayMs: r.maxDelayMs ?? RESTART_MAX_MS,
      stableMs: r.stableMs ?? RESTART_STABLE_MS,
    };
    for (const [k, v] of Object.entries(this.restartOpts))
      if (!Number.isInteger(v) || v < 0)
        throw new InvalidArgumentError(`restart.${k} must be an integer >= 0`);
    this.link = new TeamLink('team', 1500);
    this.watch = new ProgressWatch(
      this.clock,
      this.healthOpts,
      () => this.slots,
      this.counters,
      (h) => this.addressBook?.bytes(h),
      () => this.jobs > 0,
      {
        move: (detail) => this.moveReceivePort(detail),
        failed: (old, detail) => this.receiveFailed(old, detail),
      },
    );
    this.na = new UnsolicitedNaSeries(this.clock, () => this.announce6());
    const learn = opts.learnIntervalMs ?? DEFAULT_LEARN_INTERVAL_MS;
    if (!Number.isInteger(learn) || learn < 0)
      throw new InvalidArgumentError('learnIntervalMs must be an integer >= 0');
    this.learnIntervalMs = learn;
    this.oneReceivePort = opts.oneReceivePort !== false;
    this.learnTimer = this.clock.createTimer(this.learnTick).unref();
    this.link.memberCarrier = (i) => {
      if (this.slots[i]?.port != null) this.hostOnDeadPort();
    };
  }

  /** Where the team reads the IPv6 addresses it announces when the host's traffic changes port. */
  setIpv6Addresses(list: () => readonly Uint8Array[]): void {
    this.addresses6 = list;
  }

  /**
   * Called each time the host's traffic takes another port: the host stack re-reports its
   * multicast groups there (MLD), since a snooping switch forwards a group only to ports that
   * reported it, and would keep the solicitations for the team's addresses on the old port.
   */
  onHostPortChange(cb: () => void): void {
    this.hostPortChanged = cb;
  }

  /** Called when a restart puts a new NIC in a member's place, before it sits out its hold. */
  onMemberReplaced(cb: (old: Nic, nic: Nic) => void): void {
    this.replacedHook = cb;
  }

  /** Where the team reads the bytes of the IPv6 handles its connections' keys carry. */
  setAddressBook(book: AddressBook): void {
    this.addressBook = book;
  }

  /** Who moves connections; without one a failure only stops new offloads to the member. */
  setOffloader(o: TeamOffloader): void {
    this.offloader = o;
    o.refuseFailed?.((nic) => this.isFailed(nic));
  }

  add(member: TeamMember): void {
    if (this.closed) throw new InvalidStateError('team is closed');
    const nic = member.nic;
    if (!nic || typeof nic.initiate !== 'function') throw new InvalidArgumentError('team member needs a Nic');
    if (this.slots.some((s) => s.nic === nic || s.nic.id === nic.id))
      throw new InvalidArgumentError(`NIC ${nic.id} is already in the team`);
    const index = this.link.add(member.hostLink ?? nic.hostLink);
    const slot: Slot = {
      index,
      nic,
      tap: member.tap ?? null,
      health: this.watchNic(nic, member.tap ?? null, nic.linkUp),
      portAfterDeath: member.hostPortAfterDeath ?? null,
      port: null,
      opener: member.hostPortAfterDeath ?? null,
      restart: member.restart ?? null,
      inARow: 0,
      restarted: 0,
      startedAt: this.clock.now(),
      gen: 0,
      movedOff: Promise.resolve(),
      restartTimer: null,
      pending: null,
      rxFailedUntil: Number.NEGATIVE_INFINITY,
      rxHold: 0,
      rxFailedAt: Number.NEGATIVE_INFINITY,
    };
    this.slots.push(slot);
    this.peerWithOthers(slot);
    this.steerSources();
    if (!this.slotUsable(this.slots[this.link.activeIndex] ?? null) && slot.health.usable)
      this.setHostSlot(slot);
  }

  /** The health of a member's NIC, fed by the NIC's indications. */
  private watchNic(nic: Nic, tap: ProbeTap | null, carrier: boolean): NicHealth {
    const health = new NicHealth(
      nic.id,
      this.clock,
      this.healthOpts,
      {
        failed: (ev) => this.onFailed(ev),
        recovered: (id, at) => this.onRecovered(id, at),
        holding: (id) => this.onHolding(id),
      },
      this.counters,
      tap,
      carrier,
    );
    nic.on('link', (up, since) => health.carrier(up, undefined, since));
    nic.on('dead', (cause) => {
      const d = describeDeath(cause);
      // Silence is counted from the worker's last progress, which the heartbeat indications miss.
      const since = cause.silentMs !== undefined ? this.clock.now() - cause.silentMs : undefined;
      health.dead(d.detail, d.immediate, since);
    });
    nic.on('heartbeat', () => health.heartbeat());
    return health;
  }

  /**
   * Frames of one member's connections that the switch delivers to another go straight across
   * between the two, not through this thread, where the pair can (`Nic.peer`: worker NICs). A dead
   * NIC's channels closed with its thread, and its peers forgot it.
   */
  private peerWithOthers(slot: Slot): void {
    for (const other of this.slots) if (other !== slot) other.nic.peer?.(slot.nic);
  }

  get nics(): readonly Nic[] {
    return this.slots.map((s) => s.nic);
  }

  /** The member carrying the host stack's own traffic, or null. */
  get hostNic(): Nic | null {
    return this.slots.find((s) => s.index === this.link.activeIndex)?.nic ?? null;
  }

  /** Healthy members, least loaded (relative to capacity) first. */
  healthy(): Nic[] {
    return this.slots
      .filter((s) => s.health.usable && s.nic.load < s.nic.capacity)
      .sort((a, b) => a.nic.load / a.nic.capacity - b.nic.load / b.nic.capacity || a.index - b.index)
      .map((s) => s.nic);
  }

  /** Where a new offload should go: the least loaded healthy member with room, or null (keep it in the host). */
  pick(): Nic | null {
    return this.healthy()[0] ?? null;
  }

  isUsable(nic: Nic): boolean {
    return this.slotOf(nic)?.health.usable ?? false;
  }

  /**
   * A member that failed and is not back in use (down, dead, or sitting out its hold): the mover
   * settles nothing there, as the failover moves everything off it.
   */
  isFailed(nic: Nic): boolean {
    if (this.retired.has(nic)) return true;
    const s = this.slotOf(nic);
    return s !== undefined && !s.health.usable;
  }

  health(): TeamHealth[] {
    const active = this.link.activeIndex;
    return this.slots.map((s) => ({
      nic: s.nic.id,
      health: s.health.snapshot(),
      load: s.nic.load,
      runningConns: s.nic.runningConns,
      capacity: s.nic.capacity,
      carriesHost: s.index === active,
      restarts: s.restarted,
    }));
  }

  /** Report a member's heartbeat or death from outside (a worker's exit event, a test). */
  heartbeat(nic: Nic): void {
    this.slotOf(nic)?.health.heartbeat();
  }
  declareDead(nic: Nic, detail: string): void {
    this.slotOf(nic)?.health.dead(detail);
  }

  /** Resolves when every failover and recovery started so far has finished. */
  settled(): Promise<void> {
    return this.chain;
  }

  close(): void {
    this.closed = true;
    this.watch.close();
    this.na.close();
    this.learnTimer.disarm();
    for (const s of this.slots) {
      s.health.close();
      s.port?.close();
      s.restartTimer?.disarm();
    }
    this.link.close();
  }

  // ---- internals ------------------------------------------------------------------------------

  private slotOf(nic: Nic): Slot | undefined {
    return this.slots.find((s) => s.nic === nic);
  }

  private slotUsable(s: Slot | null): boolean {
    return s?.health.usable === true;
  }

  private setHostSlot(slot: Slot): void {
    this.link.setActive(slot.index);
    this.steerSources();
    // The learning frame: the switch now sends the team MAC to this port, and peers refresh the
    // address's entry in their caches.
    if (this.ip !== null && hostTap(slot)?.announce(this.mac, this.ip, this.vlanId))
      this.counters.inc('team.garp');
    this.na.start();
    this.hostPortChanged();
  }

  /**
   * Every member but the one that carries the host's traffic sends from its probe MAC, not the
   * team's (Nic.sendFrom): the switch learns the team MAC on that port alone and stops moving it
   * to whichever member sent last, so a connection's inbound segments come one way (that port,
   * then worker to worker to the owner) and none overtakes another. A member with no tap has no
   * MAC of its own, and sends as before.
   */
  private steerSources(): void {
    const active = this.link.activeIndex;
    // No port carries the host's traffic: none would hold the team MAC, so none gives it up (nor
    // does any without oneReceivePort).
    const receiver =
      active < 0 || !this.oneReceivePort ? undefined : this.slots.find((s) => s.index === active);
    let steering = false;
    for (const s of this.slots) {
      const own = receiver === undefined || s === receiver ? null : (hostTap(s)?.probeMac ?? null);
      if (own !== null && s.nic.sendFrom !== undefined) steering = true;
      s.nic.sendFrom?.(this.mac, own);
    }
    const was = this.steering;
    this.oneReceiver = steering;
    this.steering = steering && this.learnIntervalMs > 0;
    if (this.steering && !was) this.learnTimer.arm(this.learnIntervalMs);
    else if (!this.steering) this.learnTimer.disarm();
  }

  /**
   * A usable member to carry the host's traffic (and so receive for the team) instead of `not`:
   * one whose port has not lately failed to receive, if there is one.
   */
  private nextHostSlot(not: Slot): Slot | undefined {
    const now = this.clock.now();
    const usable = this.slots.filter((s) => s !== not && s.health.usable);
    return usable.find((s) => s.rxFailedUntil <= now) ?? usable[0];
  }

  /**
   * The progress watch found every member stalled while one receive port is in effect: the host's
   * traffic, and with it the team MAC (steerSources, a gratuitous ARP and the learning frames),
   * goes to another healthy member with a port of its own. Returns the old receive port's NIC.
   */
  private moveReceivePort(detail: string): Nic | null {
    if (this.closed || !this.oneReceiver) return null;
    const cur = this.slots.find((s) => s.index === this.link.activeIndex);
    if (cur === undefined) return null;
    const now = this.clock.now();
    const usable = this.slots.filter((s) => s !== cur && s.health.usable && hostTap(s) !== null);
    const next = usable.find((s) => s.rxFailedUntil <= now) ?? usable[0];
    if (next === undefined) return null;
    this.moveHost(next);
    this.emit('receive-port', { from: cur.nic.id, to: next.nic.id, at: now, detail });
    return cur.nic;
  }

  /** The receive port's move off `nic` brought progress back: its port fails to receive. */
  private receiveFailed(nic: Nic, detail: string): void {
    const slot = this.slotOf(nic);
    if (slot === undefined || this.closed) return;
    const o = this.healthOpts;
    const now = this.clock.now();
    slot.rxHold =
      now - slot.rxFailedAt < o.flapDecayMs && slot.rxHold > 0
        ? Math.min(o.maxHoldMs, slot.rxHold * 2)
        : o.holdMs;
    slot.rxFailedAt = now;
    slot.rxFailedUntil = now + Math.max(o.grayQuarantineMs, slot.rxHold);
    this.counters.inc('team.receive-port.failed');
    this.emit('receive-failed', { nic: nic.id, at: now, detail, holdMs: slot.rxFailedUntil - now });
  }

  /** A learning frame from the port that carries the host's traffic (see learnIntervalMs). */
  private readonly learnTick = (): void => {
    if (this.closed || !this.steering) return;
    const slot = this.slots.find((s) => s.index === this.link.activeIndex);
    const tap = slot === undefined ? null : hostTap(slot);
    if (tap?.learn(this.mac, this.vlanId)) this.counters.inc('team.learn');
    this.learnTimer.arm(this.learnIntervalMs);
  };

  /** One round of unsolicited neighbor advertisements from the port carrying the host's traffic. */
  private announce6(): number {
    const slot = this.slots.find((s) => s.index === this.link.activeIndex);
    const tap = slot === undefined ? null : hostTap(slot);
    if (tap === null || this.closed) return 0;
    let n = 0;
    for (const ip of this.addresses6()) if (tap.announce6(this.mac, ip, this.vlanId)) n++;
    if (n > 0) this.counters.inc('team.unsolicited-na', n);
    return n;
  }

  /**
   * Host traffic leaves a member that failed (or no member was usable) for `slot`. Connections
   * the host stack runs itself (most of them, while the offload policy is still moving a burst of
   * accepts in batches) lost what they sent on the failed path and backed their timers off on it:
   * without a prod each waits out that backoff (seconds at 1,000 connections on TAP) while the
   * ones the failover moves resume at once.
   */
  private moveHost(slot: Slot): void {
    this.setHostSlot(slot);
    const n = this.offloader?.prodHost?.() ?? 0;
    if (n > 0) this.counters.inc('team.host-prodded', n);
  }

  private enqueue(job: () => Promise<void>): void {
    this.jobs++;
    this.chain = this.chain
      .then(job)
      .catch((e: unknown) => {
        this.counters.inc('team.failover.error');
        this.emit('error', e);
      })
      .finally(() => {
        this.jobs--;
      });
  }

  private onFailed(ev: FailureEvent): void {
    this.counters.inc('team.failure');
    this.emit('failure', ev);
    const slot = this.slots.find((s) => s.nic.id === ev.nic);
    if (!slot) return;
    if (ev.cause === 'dead') this.link.remove(slot.index);
    // Queued first so that the dead port's opener below waits for it; it runs no sooner than a
    // microtask from now.
    this.enqueue(() => this.failover(slot, ev));
    slot.movedOff = this.chain;
    // Host traffic moves at once, before any connection: ARP, new SYNs and everything the host
    // still runs need a working port right away.
    if (this.link.activeIndex === slot.index || this.link.activeIndex < 0) {
      const next = this.nextHostSlot(slot);
      if (next) this.moveHost(next);
      else this.hostOnDeadPort();
    }
    if (ev.cause === 'dead') this.scheduleRestart(slot);
  }

  /**
   * A dead member that can be restarted is, after its backoff: the first delay, doubled for each
   * death in a row, up to the cap; past the limit it stays dead (event 'restart-limit').
   */
  private scheduleRestart(slot: Slot): void {
    const o = this.restartOpts;
    if (slot.restart === null || o.limit === 0 || this.closed) return;
    if (this.clock.now() - slot.startedAt >= o.stableMs) slot.inARow = 0;
    if (slot.inARow >= o.limit) {
      this.counters.inc('team.restart.gave-up');
      this.emit('restart-limit', { nic: slot.nic.id, at: this.clock.now(), restarts: slot.inARow });
      return;
    }
    const delayMs = Math.min(o.maxDelayMs, o.firstDelayMs * 2 ** slot.inARow);
    slot.inARow++;
    const attempt = slot.inARow;
    slot.restartTimer ??= this.clock.createTimer(() => this.restartSlot(slot)).unref();
    slot.pending = { attempt, delayMs };
    slot.restartTimer.arm(delayMs);
  }

  /**
   * Start a new NIC on the member's port. If the host carries its own traffic there
   * (hostOnDeadPort), it keeps it until the new engine is loaded and about to open the port
   * (`letGo`): the new engine opens the TAP, which one still open refuses, and a new worker's
   * thread takes seconds at load to get there, which the host's connections spent with no wire.
   * The new NIC takes the member's place once the failover off the old one has finished (the
   * team's chain), and comes up through its hold like any member that recovers.
   */
  private restartSlot(slot: Slot): void {
    const restart = slot.restart;
    const a = slot.pending;
    slot.pending = null;
    if (this.closed || restart === null || a === null) return;
    slot.gen++;
    const start = this.clock.now();
    slot.startedAt = start;
    slot.portAfterDeath = null;
    let held = true;
    const letGo = (): void => {
      if (!held || this.closed) return;
      held = false;
      if (slot.port === null) return;
      this.link.remove(slot.index);
      slot.port.close();
      slot.port = null;
      this.counters.inc('team.dead-port-released');
      this.emit('host-port-released', { nic: slot.nic.id, at: this.clock.now() });
      // Another dead member's port, if one is open, carries the host meanwhile.
      this.hostOnDeadPort();
    };
    const id = slot.nic.id;
    this.afterMove(slot, () => restart(letGo)).then(
      (m) => {
        letGo();
        if (this.closed) {
          m.nic.close();
          return;
        }
        const startMs = this.clock.now() - start;
        this.enqueue(async () => this.replace(slot, m, { attempt: a.attempt, delayMs: a.delayMs, startMs }));
      },
      (e: unknown) => {
        if (this.closed) return;
        this.counters.inc('team.restart.failed');
        const rec: RestartRecord = {
          nic: id,
          at: this.clock.now(),
          attempt: a.attempt,
          delayMs: a.delayMs,
          startMs: this.clock.now() - start,
          ok: false,
          detail: (e as Error)?.message ?? String(e),
        };
        this.restarts.push(rec);
        this.emit('restart', rec);
        // The port is free again (or still the host's, never let go): the host may carry its
        // traffic there until the next try.
        held = false;
        if (slot.port === null) slot.portAfterDeath = slot.opener;
        this.hostOnDeadPort();
        this.scheduleRestart(slot);
      },
    );
  }

  /** The restarted NIC takes the member's place: a new health, link and peers, then its hold. */
  private replace(
    slot: Slot,
    m: TeamMember,
    r: Pick<RestartRecord, 'attempt' | 'delayMs' | 'startMs'>,
  ): void {
    if (this.closed) {
      m.nic.close();
      return;
    }
    const old = slot.nic;
    const nic = m.nic;
    // Its run starts now, not at the attempt: a start of seconds at load is not time it ran.
    slot.startedAt = this.clock.now();
    this.retired.add(old);
    slot.health.close();
    slot.nic = nic;
    slot.tap = m.tap ?? null;
    slot.opener = m.hostPortAfterDeath ?? null;
    slot.portAfterDeath = slot.opener;
    slot.restart = m.restart ?? null;
    slot.restarted++;
    // Down until told otherwise: a carrier that comes up goes through the hold (onHolding, then
    // onRecovered), which brings the host's traffic, the connections waiting in the host and,
    // with failback, those the failover moved off this member.
    slot.health = this.watchNic(nic, slot.tap, false);
    this.link.restore(slot.index, m.hostLink ?? nic.hostLink);
    this.peerWithOthers(slot);
    this.steerSources();
    this.replacedHook(old, nic);
    this.counters.inc('team.restart');
    const rec: RestartRecord = { nic: nic.id, at: this.clock.now(), ...r, ok: true, detail: '' };
    this.restarts.push(rec);
    this.emit('restart', rec);
    // Died while waiting for its place: its 'dead' was told to nobody.
    const death = nic.death;
    if (death !== null) slot.health.dead(describeDeath(death).detail, true);
    else slot.health.carrier(nic.linkUp);
  }

  /**
   * No member can carry the host's traffic: the host carries it on a dead member's port itself,
   * as a bond keeps sending on any port that has carrier. A dead WorkerNic's connections were
   * rebuilt in the host, which otherwise had no wire at all: each retransmitted into a link that
   * dropped everything until its peer gave up. Every dead member's port that can be had is opened
   * (once its thread has let the TAP go) and kept until the team closes; the host's traffic takes
   * the first with carrier, with a gratuitous ARP and a prod, as at any failover, and leaves it for
   * the first member usable again (onHolding, onRecovered), where the connections waiting in the
   * host are offloaded as before. A dead member stays dead unless it is restarted (restartSlot,
   * `--restart-limit`), which takes the port back once the new engine is loaded.
   */
  private hostOnDeadPort(): void {
    if (this.closed || this.slotUsable(this.slots[this.link.activeIndex] ?? null)) return;
    const active = this.slots[this.link.activeIndex];
    if (active?.port?.carrier === true) return;
    const open = this.slots.find((s) => s.port?.carrier === true);
    if (open !== undefined) {
      this.counters.inc('team.host-on-dead-port');
      this.moveHost(open);
      this.emit('host-port', { nic: open.nic.id, at: this.clock.now() });
      return;
    }
    for (const s of this.slots) {
      const opener = s.portAfterDeath;
      if (opener === null || s.health.state !== 'dead') continue;
      s.portAfterDeath = null;
      const gen = s.gen;
      this.afterMove(s, opener).then(
        (port) => {
          // A restart took the port back meanwhile.
          if (this.closed || s.gen !== gen) {
            port.close();
            return;
          }
          s.port = port;
          this.link.restore(s.index, port);
          this.counters.inc('team.dead-port-opened');
          this.hostOnDeadPort();
        },
        (e: unknown) => {
          this.counters.inc('team.dead-port-refused');
          if (!this.closed && this.listenerCount('error') > 0) this.emit('error', e);
        },
      );
    }
  }

  /**
   * Run `f` (a dead member's opener or restart, which stop its NIC's thread if it still runs)
   * once the NIC may be stopped. One that knows itself dead left its connections for salvage and
   * is stopped at once, so the host's wire does not wait for the salvage. One the team took for
   * dead while it runs (heartbeat timeout, declareDead) is still running the connections the
   * failover moves off it with their soft state (window, reordered data, SACK): stopped before the
   * move is done, the rest would be rebuilt from hard state, and those uploaded already dropped.
   * `movedOff` is the chain right after the failover was queued, so the jobs queued before it are
   * waited for too, but only because the failover itself waits for them: the chain runs one job at
   * a time, and each (another member's failover, a recovery's offloads, a restarted NIC taking its
   * place) works the same offload manager, so the failover cannot run beside them (ahead of them
   * it would change the order every failover and recovery is queued in). A bound on the wait would
   * stop the NIC mid-move, which is what this wait is for.
   */
  private afterMove<T>(slot: Slot, f: () => Promise<T>): Promise<T> {
    if (slot.nic.death !== null) return f();
    return slot.movedOff.then(f);
  }

  private async failover(slot: Slot, ev: FailureEvent): Promise<void> {
    const o = this.offloader;
    const rec: FailoverRecord = {
      nic: ev.nic,
      cause: ev.cause,
      at: ev.at,
      detectMs: ev.at - ev.since,
      resumeMs: 0,
      connections: 0,
      to: [],
      lost: 0,
      detail: ev.detail,
    };
    let phases: MovePhases | null = null;
    if (o !== null) {
      const dead = ev.cause === 'dead';
      const to = new Set<string>();
      // One list is complete: from the failure on, the mover settles nothing on this member (an
      // offload begun before it, the policy's say, is refused at its settle and ends in the host).
      const keys = o.connectionsOn(slot.nic);
      rec.connections = keys.length;
      if (keys.length > 0) {
        phases = new MovePhases(() => this.clock.now(), ev.at);
        phases.start();
        await this.moveOff(slot, keys, dead, rec, to, phases);
      }
      rec.to = [...to];
    }
    rec.resumeMs = this.clock.now() - ev.at;
    if (phases !== null) rec.phases = phases.summary(rec.resumeMs);
    this.failovers.push(rec);
    this.counters.inc('team.failover');
    this.emit('failover', rec);
  }

  /** Move `keys` off the failed member in batches, to the least loaded usable one or the host. */
  private async moveOff(
    slot: Slot,
    keys: ConnKey[],
    dead: boolean,
    rec: FailoverRecord,
    to: Set<string>,
    phases: MovePhases,
  ) {
    const o = this.offloader!;
    for (let i = 0; i < keys.length; ) {
      // Only a NIC that knows itself dead leaves its connections for salvage. One the team takes
      // for dead while it lives (its heartbeat timeout here, declareDead) still runs them, and a
      // live NIC hands out none of those (it would leave them two owners): they are moved off.
      const salvage = dead && slot.nic.death !== null;
      const n = this.share(slot, keys.length - i, salvage);
      const batch = keys.slice(i, i + n);
      i += n;
      const target = this.pick();
      // A member recovered meanwhile is not a reason to keep what failed.
      if (!dead && slot.health.usable) break;
      let r: MoveResult;
      phases.ask();
      if (salvage) r = await o.recover(batch, slot.nic, target, phases);
      else {
        try {
          r =
            target !== null
              ? await o.move(batch, slot.nic, target, phases)
              : await o.upload(batch, slot.nic, phases);
        } catch (e) {
          // Wedged, it died in the move (its own watchdog, a kill): its death brings no second
          // failover here (the member is dead already), so what is left of them is rebuilt now.
          if (!dead || slot.nic.death === null) throw e;
          r = { moved: [], inHost: [], lost: [] };
          // In the team's batches, as any rebuild (see share).
          for (let j = 0; j < batch.length; j += this.batchSize) {
            const part = await o.recover(batch.slice(j, j + this.batchSize), slot.nic, target, phases);
            for (const k of part.moved) r.moved.push(k);
            for (const k of part.inHost) r.inHost.push(k);
            for (const k of part.lost) r.lost.push(k);
          }
        }
      }
      phases.done();
      const moved = target === null ? r.moved.concat(r.inHost) : r.moved;
      const inHost = target === null ? moved : r.inHost;
      for (const k of inHost) this.waitingInHost.set(id(k), k);
      if (r.moved.length > 0) to.add(target === null ? 'host' : target.id);
      if (r.inHost.length > 0) to.add('host');
      rec.lost += r.lost.length;
      if (r.inHost.length > 0 && target !== null) this.counters.inc('team.failover.to-host', r.inHost.length);
      // A dead member comes back only restarted.
      if (this.failback && (!dead || (slot.restart !== null && this.restartOpts.limit > 0)))
        for (const k of moved) if (!this.home.has(id(k))) this.home.set(id(k), { key: k, slot: slot.index });
    }
  }

  /**
   * How many of the `left` connections the next transfer off `slot` takes. A member on another
   * thread is moved off in one transfer per healthy member, shared evenly: the transfer cuts it
   * into parts that are all in flight at once (TransferProtocol.inParts), so the source releases
   * one part while the target installs another. In batches one after another, each batch waited
   * for the round trips of the one before through two busy workers and this thread: serve's move
   * of 2,500 against the kernel took 0.67-7.9 s in five (BENCHMARKS.md, "The failover's phases").
   * A rebuild from a dead member's hard state (`salvage`) installs its batch in one request, and a
   * member on this thread hands a batch over in one turn: those keep the team's batch size, so no
   * request or turn grows with the failover.
   */
  private share(slot: Slot, left: number, salvage: boolean): number {
    if (salvage || slot.nic.inProcess) return Math.min(left, this.batchSize);
    return Math.ceil(left / Math.max(1, this.healthy().length));
  }

  /**
   * A member whose link works again sits out its hold before connections go back to it; the host
   * stack's own traffic (ARP, SYNs, the connections waiting in the host) need not wait when no
   * member is usable at all: it goes there at once, with the gratuitous ARP that steers the peers.
   */
  private onHolding(nicId: string): void {
    const slot = this.slots.find((s) => s.nic.id === nicId);
    if (!slot || this.slotUsable(this.slots[this.link.activeIndex] ?? null)) return;
    if (this.link.activeIndex === slot.index) return;
    this.counters.inc('team.host-on-holding');
    this.moveHost(slot);
  }

  private onRecovered(nicId: string, at: number): void {
    this.emit('recovered', { nic: nicId, at });
    const slot = this.slots.find((s) => s.nic.id === nicId);
    if (!slot) return;
    if (!this.slotUsable(this.slots[this.link.activeIndex] ?? null)) this.moveHost(slot);
    this.enqueue(() => this.recovered(slot));
  }

  private async recovered(slot: Slot): Promise<void> {
    const o = this.offloader;
    if (o === null || !slot.health.usable) return;
    if (this.waitingInHost.size > 0) {
      const keys = [...this.waitingInHost.values()];
      this.waitingInHost.clear();
      let rehomed = 0;
      for (let i = 0; i < keys.length; i += this.batchSize) {
        const target = this.pick();
        const batch = keys.slice(i, i + this.batchSize);
        if (target === null) {
          for (const k of batch) this.waitingInHost.set(id(k), k);
          continue;
        }
        // Not prodded: the host has run them on this member's port since it came back (its hold
        // began then), or all along when the failure was false (both members' probe replies
        // dropped behind a burst of data); their own timers and ACKs ran there. A prod now resent
        // each one's head, still in flight, or sent a pure ACK: at 10,000 in bench/failover.ts,
        // uncharged, 8,358 of the hand-over turns' 18,358 frames. (They had been masking a cookie
        // connection's RACK that never advanced on a SACKed retransmission: tcp-listen.ts.)
        const r = await o.offload(batch, target, false);
        rehomed += r.moved.length;
      }
      this.counters.inc('team.rehomed-from-host', rehomed);
    }
    if (this.failback) {
      const back: { key: ConnKey; from: Nic }[] = [];
      for (const [k, h] of this.home) {
        if (h.slot !== slot.index) continue;
        this.home.delete(k);
        const cur = o.ownerOf(h.key.localIp, h.key.localPort, h.key.remoteIp, h.key.remotePort);
        if (cur !== null && cur !== slot.nic) back.push({ key: h.key, from: cur });
      }
      const byFrom = new Map<Nic, ConnKey[]>();
      for (const b of back) {
        let l = byFrom.get(b.from);
        if (!l) byFrom.set(b.from, (l = []));
        l.push(b.key);
      }
      for (const [from, keys] of byFrom) {
        for (let i = 0; i < keys.length && slot.health.usable; i += this.batchSize) {
          await o.move(keys.slice(i, i + this.batchSize), from, slot.nic);
        }
      }
      this.counters.inc('team.failback', back.length);
    }
  }
}

/** Where the team's own frames for the host's port go out: the host's link on a dead member's port, or the member's tap. */
function hostTap(slot: Slot): ProbeTap | null {
  return slot.port ?? slot.tap;
}

function id(k: ConnKey): string {
  return `${k.localIp >>> 0}:${k.localPort}>${k.remoteIp >>> 0}:${k.remotePort}`;
}
