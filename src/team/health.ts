import type { Clock, Timer } from '../core/clock.ts';
import type { Counters } from '../core/counters.ts';
import { InvalidArgumentError } from '../core/errors.ts';
import { formatIpv6, ipv6Equal, isIpv6Multicast, isIpv6Unspecified } from '../wire/addr.ts';
import type { ArpPacket } from '../wire/arp.ts';
import type { ProbeTap } from './probe-tap.ts';

/**
 * - progress: the member's connections stopped getting acknowledged (timeouts, snd.una stuck) while
 *   another member's progressed: a gray failure its probes cannot see (progress-watch.ts).
 * - mac-mismatch: its probe replies come from another MAC than the one its connections send to.
 */
export type FailureCause = 'carrier' | 'reachability' | 'dead' | 'progress' | 'mac-mismatch';

/** One detected failure of one NIC, stamped with the clock time it was detected. */
export interface FailureEvent {
  nic: string;
  cause: FailureCause;
  /** Detection time (clock ms). */
  at: number;
  /**
   * The last evidence that the NIC was fine (clock ms): the link's last sight of carrier up, the
   * last probe reply, the last heartbeat. Detection delay is `at - since`.
   */
  since: number;
  detail: string;
  /** The death was seen as it happened (the worker's exit or error), not inferred from silence. */
  immediate?: boolean;
}

/**
 * - up: carries traffic.
 * - down: failed; nothing new goes to it.
 * - holding: every check passes again, but it has to stay so for the hold time before it is used.
 * - dead: the NIC itself is gone (its worker exited, threw or stopped beating); never comes back.
 */
export type NicHealthState = 'up' | 'down' | 'holding' | 'dead';

export interface HealthOptions {
  /** Probe interval in ms (default 10). */
  probeIntervalMs?: number;
  /** Probe intervals without a reply before the link is declared unreachable (default 3). */
  probeMisses?: number;
  /** IPv4 addresses to probe with ARP; with probeTargets6 empty too, reachability checking is off. */
  probeTargets?: readonly number[];
  /**
   * IPv6 addresses (16 bytes each) to probe with neighbor solicitations, in the same rounds and
   * with the same misses as the ARP probes; a round is answered when any target of either family
   * answers it.
   */
  probeTargets6?: readonly Uint8Array[];
  /** 802.1Q VLAN id the probes are tagged with (default untagged; a team sets its own). */
  probeVlan?: number;
  /** A recovered NIC waits this long, healthy throughout, before it carries traffic again (default 200). */
  holdMs?: number;
  /** Each failure during or soon after a hold doubles the next hold, up to this (default 5000). */
  maxHoldMs?: number;
  /** A NIC that stays up this long has its flap penalty forgotten (default 10 × holdMs). */
  flapDecayMs?: number;
  /** Heartbeats must arrive within this many ms once the first one was seen (0: not watched; default 0). */
  heartbeatTimeoutMs?: number;
  /**
   * What proves a port reachable: 'any' (default) any frame received on it, as well as probe
   * replies, like bonding's ARP monitor without arp_validate; 'probe' only replies to our probes.
   * A saturated link can queue or drop every probe reply for longer than interval × misses, while
   * it plainly carries traffic: 'probe' then reports a false failure.
   */
  validate?: 'any' | 'probe';
  /**
   * Progress watch window in ms (default 200; 0 turns the watch off): how often the team reads its
   * members' connections (snd.una, retransmissions, destination MAC) to find gray failures.
   */
  progressWindowMs?: number;
  /**
   * A connection with data outstanding counts as stalled once snd.una has not moved for this long
   * and it retransmitted meanwhile (default 3 windows): one retransmission timeout that is then
   * answered, ordinary loss, never gets there.
   */
  stallMs?: number;
  /** Stalled connections a member needs before it is suspect (default 1)... */
  stallMinConns?: number;
  /**
   * ...and the share of its connections with data outstanding they must make up (default 0.8): a
   * blackhole stalls all of them, loss one now and then while the others progress.
   */
  stallFraction?: number;
  /** Consecutive suspect windows before a member is declared failed (default 2). */
  progressWindows?: number;
  /**
   * A member failed for lack of progress or a MAC mismatch has nothing left to prove itself with:
   * it sits out this long (or its flap-grown hold, if longer) before its hold starts (default 5000).
   */
  grayQuarantineMs?: number;
}

export interface ResolvedHealthOptions {
  probeIntervalMs: number;
  probeMisses: number;
  probeTargets: readonly number[];
  probeTargets6: readonly Uint8Array[];
  probeVlan: number;
  holdMs: number;
  maxHoldMs: number;
  flapDecayMs: number;
  heartbeatTimeoutMs: number;
  validate: 'any' | 'probe';
  progressWindowMs: number;
  stallMs: number;
  stallMinConns: number;
  stallFraction: number;
  progressWindows: number;
  grayQuarantineMs: number;
}

export function resolveHealthOptions(o: HealthOptions = {}): ResolvedHealthOptions {
  const num = (v: number | undefined, d: number, name: string, min: number): number => {
    const x = v ?? d;
    if (typeof x !== 'number' || !Number.isFinite(x) || x < min)
      throw new InvalidArgumentError(`${name} must be a number >= ${min}, got ${String(x)}`);
    return x;
  };
  const probeIntervalMs = num(o.probeIntervalMs, 10, 'probeIntervalMs', 0.001);
  const probeMisses = num(o.probeMisses, 3, 'probeMisses', 1);
  if (!Number.isInteger(probeMisses)) throw new InvalidArgumentError('probeMisses must be an integer');
  const holdMs = num(o.holdMs, 200, 'holdMs', 0);
  const targets = o.probeTargets ?? [];
  if (!Array.isArray(targets)) throw new InvalidArgumentError('probeTargets must be an array of addresses');
  for (const t of targets) {
    if (!Number.isInteger(t) || t < 0 || t > 0xffffffff)
      throw new InvalidArgumentError(`probe target must be a u32 address, got ${String(t)}`);
  }
  const targets6 = o.probeTargets6 ?? [];
  if (!Array.isArray(targets6)) throw new InvalidArgumentError('probeTargets6 must be an array of addresses');
  for (const t of targets6) {
    if (!(t instanceof Uint8Array) || t.length !== 16 || isIpv6Multicast(t) || isIpv6Unspecified(t))
      throw new InvalidArgumentError('an IPv6 probe target must be a unicast address of 16 bytes');
  }
  const progressWindowMs = num(o.progressWindowMs, 200, 'progressWindowMs', 0);
  const stallFraction = num(o.stallFraction, 0.8, 'stallFraction', 0);
  if (stallFraction > 1) throw new InvalidArgumentError('stallFraction must be in 0..1');
  const stallMinConns = num(o.stallMinConns, 1, 'stallMinConns', 1);
  const progressWindows = num(o.progressWindows, 2, 'progressWindows', 1);
  if (!Number.isInteger(stallMinConns) || !Number.isInteger(progressWindows))
    throw new InvalidArgumentError('stallMinConns and progressWindows must be integers');
  return {
    progressWindowMs,
    stallMs: num(o.stallMs, progressWindowMs * 5, 'stallMs', 0),
    stallMinConns,
    stallFraction,
    progressWindows,
    grayQuarantineMs: num(o.grayQuarantineMs, 5000, 'grayQuarantineMs', 0),
    probeIntervalMs,
    probeMisses,
    probeTargets: [...targets],
    probeTargets6: targets6.map((t) => t.slice()),
    probeVlan: num(o.probeVlan, -1, 'probeVlan', -1),
    holdMs,
    maxHoldMs: Math.max(holdMs, num(o.maxHoldMs, 5000, 'maxHoldMs', 0)),
    flapDecayMs: num(o.flapDecayMs, Math.max(holdMs * 10, 1), 'flapDecayMs', 0),
    heartbeatTimeoutMs: num(o.heartbeatTimeoutMs, 0, 'heartbeatTimeoutMs', 0),
    validate: validateMode(o.validate),
  };
}

function validateMode(v: unknown): 'any' | 'probe' {
  if (v === undefined || v === 'any') return 'any';
  if (v === 'probe') return 'probe';
  throw new InvalidArgumentError(`validate must be 'any' or 'probe', got ${String(v)}`);
}

export interface NicHealthSnapshot {
  nic: string;
  state: NicHealthState;
  carrier: boolean;
  reachable: boolean;
  /** Last probe reply (clock ms), -1 if none yet. */
  lastProbeReplyAt: number;
  lastHeartbeatAt: number;
  /** Failures seen so far, and the latest one. */
  failures: number;
  lastFailure: FailureEvent | null;
  /** The hold a recovery has to sit out now (grows with flapping). */
  holdMs: number;
  /** When the current hold ends (clock ms), or -1. */
  holdUntil: number;
}

export interface HealthListener {
  /** The NIC stopped being usable. Called once per up → down transition (and once for death). */
  failed(ev: FailureEvent): void;
  /** The NIC passed its hold and is usable again. */
  recovered(nic: string, at: number): void;
  /** Every check passes again; the hold starts (nothing new goes to it yet). */
  holding?(nic: string, at: number): void;
}

/**
 * The health of one NIC, from three detectors: carrier (the link's own report), reachability (ARP
 * probes and IPv6 neighbor solicitations out of the NIC's own port, like bonding's ARP and NS
 * monitors or BFD: interval × misses), and
 * liveness (heartbeats, or a report that the NIC's thread is gone).
 *
 * A failure is acted upon at once; a recovery only after a hold, and the hold doubles for every
 * failure that follows a recovery closely, so a flapping link costs at most one move per hold
 * rather than one per flap.
 */
export class NicHealth {
  private st: NicHealthState = 'up';
  private carrierUp: boolean;
  private carrierSince = 0;
  private reachable = true;
  private lastReply: number;
  private lastBeat = -1;
  private lastRxFrames = 0;
  /**
   * The probe rounds sent lately (a ring by round number): when each was sent, and whether it is
   * pending, answered (by some target) or missed. Evidence is dated by the earliest time it could
   * have come into being, never by when it was read: a reply proves the link worked no earlier than
   * the round it answers was sent, a frame no earlier than its reader last read the queue empty
   * before it. Frames that sat queued behind a busy reader prove nothing of the time after a fault.
   */
  private readonly roundAt = new Float64Array(ROUNDS);
  private readonly roundState = new Uint8Array(ROUNDS);
  /** Number of the next round to send, and of the first one still pending judgement. */
  private roundNext = 0;
  private judged = 0;
  /**
   * Per target (IPv4 targets, then IPv6 ones), the first round its next reply can answer: replies
   * come in the order their probes went out, so a late one is matched to the oldest round that
   * target left unanswered, not taken for an answer to the latest.
   */
  private readonly targetNext: Float64Array;
  /** Evidence must be dated after this to restore reachability (the newest round judged missed). */
  private doubtSince = Number.NEGATIVE_INFINITY;
  private lastDrains = -1;
  private failures = 0;
  private lastFail: FailureEvent | null = null;
  private hold: number;
  private holdUntil = -1;
  /** Since when the NIC has been up; a NIC that was up from the start has never flapped. */
  private upSince = Number.NEGATIVE_INFINITY;
  private readonly probeTimer: Timer;
  private readonly holdTimer: Timer;
  private readonly beatTimer: Timer;
  private readonly grayTimer: Timer;
  /** A gray failure (progress, MAC mismatch) in force: the member is down until its quarantine ends. */
  private grayed = false;
  private graySince = 0;
  /** The sender MAC of the last probe reply from each target. */
  private readonly replyMacs = new Map<number, number>();
  /** The same for IPv6 targets, by their text form. */
  private readonly replyMacs6 = new Map<string, number>();
  private closed = false;

  constructor(
    readonly nic: string,
    private readonly clock: Clock,
    private readonly opts: ResolvedHealthOptions,
    private readonly listener: HealthListener,
    private readonly counters: Counters,
    private readonly tap: ProbeTap | null,
    carrier: boolean,
  ) {
    this.carrierUp = carrier;
    this.hold = opts.holdMs;
    this.lastReply = clock.now();
    this.probeTimer = clock.createTimer(this.probeTick).unref();
    this.holdTimer = clock.createTimer(this.holdDone).unref();
    this.beatTimer = clock.createTimer(this.beatMissed).unref();
    this.grayTimer = clock.createTimer(this.grayDone).unref();
    this.targetNext = new Float64Array(opts.probeTargets.length + opts.probeTargets6.length);
    if (!carrier) this.st = 'down';
    if (tap !== null && opts.probeTargets.length + opts.probeTargets6.length > 0) {
      tap.onProbeReply(this.onReply);
      if (opts.probeTargets6.length > 0) tap.onProbeReply6(this.onReply6);
      this.probeTimer.arm(0);
    }
  }

  get state(): NicHealthState {
    return this.st;
  }
  get usable(): boolean {
    return this.st === 'up';
  }

  /**
   * Carrier report from the NIC ('link' indication) or the link itself; `since` is the link's last
   * sight of the old state (clock ms), when it knows it.
   */
  carrier(up: boolean, detail = up ? 'carrier up' : 'carrier lost', since?: number): void {
    if (this.closed || this.carrierUp === up) return;
    this.carrierUp = up;
    this.carrierSince = since ?? this.clock.now();
    if (up) {
      // A link that comes back has proved nothing yet about the path beyond it: with probing on, it
      // must earn a reply before it counts as reachable.
      if (this.probing) {
        this.reachable = false;
        this.doubtSince = Math.max(this.doubtSince, this.carrierSince);
        this.probeTimer.arm(0);
      }
      this.reevaluate('carrier', detail);
    } else {
      this.reevaluate('carrier', detail);
    }
  }

  /**
   * The NIC is gone (exited, threw, fell silent); terminal. `immediate` when its end was seen as it
   * happened rather than from missed beats; `since`, the NIC's own last sign of life when it knows
   * one better than the heartbeat indications seen here (a worker counts progress between beats).
   */
  dead(detail: string, immediate = false, since?: number): void {
    if (this.closed || this.st === 'dead') return;
    const ev = this.fail('dead', detail, since);
    if (immediate) ev.immediate = true;
    this.st = 'dead';
    this.holdTimer.disarm();
    this.probeTimer.disarm();
    this.beatTimer.disarm();
    this.grayTimer.disarm();
    this.listener.failed(ev);
  }

  /** A heartbeat from the NIC. */
  heartbeat(): void {
    if (this.closed || this.st === 'dead') return;
    this.lastBeat = this.clock.now();
    if (this.opts.heartbeatTimeoutMs > 0) this.beatTimer.arm(this.opts.heartbeatTimeoutMs);
  }

  /**
   * A failure the checks above cannot see, found by the progress watch: `since` is the last
   * evidence the member was fine (its stalled connections' last acknowledgement).
   */
  gray(cause: 'progress' | 'mac-mismatch', detail: string, since: number): void {
    if (this.closed || this.st !== 'up') return;
    this.grayed = true;
    this.graySince = since;
    this.reevaluate(cause, detail);
    this.grayTimer.arm(Math.max(this.opts.grayQuarantineMs, this.hold));
  }

  /** The sender MAC of the last probe reply from `targetIp` on this member, if any came. */
  probeReplyMac(targetIp: number): number | undefined {
    return this.replyMacs.get(targetIp >>> 0);
  }

  /** The link-layer address in the last probe answer from IPv6 target `target` on this member. */
  probeReplyMac6(target: Uint8Array): number | undefined {
    return this.replyMacs6.get(formatIpv6(target));
  }

  snapshot(): NicHealthSnapshot {
    return {
      nic: this.nic,
      state: this.st,
      carrier: this.carrierUp,
      reachable: this.reachable,
      lastProbeReplyAt: this.probing ? this.lastReply : -1,
      lastHeartbeatAt: this.lastBeat,
      failures: this.failures,
      lastFailure: this.lastFail,
      holdMs: this.hold,
      holdUntil: this.st === 'holding' ? this.holdUntil : -1,
    };
  }

  close(): void {
    this.closed = true;
    this.probeTimer.disarm();
    this.holdTimer.disarm();
    this.beatTimer.disarm();
    this.grayTimer.disarm();
  }

  private get probing(): boolean {
    return this.tap !== null && this.opts.probeTargets.length + this.opts.probeTargets6.length > 0;
  }

  private fail(cause: FailureCause, detail: string, evidence?: number): FailureEvent {
    const at = this.clock.now();
    const since =
      evidence !== undefined
        ? evidence
        : cause === 'carrier'
          ? this.carrierSince
          : cause === 'reachability'
            ? this.lastReply
            : cause === 'progress' || cause === 'mac-mismatch'
              ? this.graySince
              : this.lastBeat >= 0
                ? this.lastBeat
                : at;
    const ev: FailureEvent = { nic: this.nic, cause, at, since: Math.min(at, since), detail };
    this.failures++;
    this.lastFail = ev;
    this.counters.inc(`team.fail.${cause}`);
    return ev;
  }

  private reevaluate(cause: FailureCause, detail: string): void {
    if (this.st === 'dead') return;
    const ok = this.carrierUp && this.reachable && !this.grayed;
    const now = this.clock.now();
    if (!ok) {
      if (this.st === 'up') {
        // A failure soon after coming up is a flap: the next recovery has to wait longer.
        if (now - this.upSince < this.opts.flapDecayMs)
          this.hold = Math.min(this.opts.maxHoldMs, this.hold * 2 || 1);
        else this.hold = this.opts.holdMs;
        this.st = 'down';
        this.listener.failed(this.fail(cause, detail));
      } else if (this.st === 'holding') {
        this.hold = Math.min(this.opts.maxHoldMs, this.hold * 2 || 1);
        this.st = 'down';
        this.holdTimer.disarm();
        this.counters.inc('team.hold.broken');
      }
      return;
    }
    if (this.st === 'down') {
      this.st = 'holding';
      this.holdUntil = now + this.hold;
      this.holdTimer.armAt(this.holdUntil);
      this.listener.holding?.(this.nic, now);
    }
  }

  private readonly holdDone = (): void => {
    if (this.st !== 'holding') return;
    this.st = 'up';
    this.upSince = this.clock.now();
    this.holdUntil = -1;
    this.counters.inc('team.recovered');
    this.listener.recovered(this.nic, this.clock.now());
  };

  private readonly grayDone = (): void => {
    if (this.closed || !this.grayed) return;
    this.grayed = false;
    this.reevaluate('progress', 'quarantine over');
  };

  private readonly probeTick = (): void => {
    if (this.closed || this.st === 'dead' || this.tap === null) return;
    const now = this.clock.now();
    const o = this.opts;
    if (this.carrierUp) {
      const rxMoved = this.tap.rxFrames !== this.lastRxFrames;
      this.lastRxFrames = this.tap.rxFrames;
      if (o.validate === 'any' && rxMoved) {
        const at = this.tap.rxSince();
        this.evidence(at === null ? now : Math.min(now, at));
      }
      const rs = this.tap.readState();
      // A round is judged only once it was sent (this thread may have stalled) and the port's
      // receive queue was read empty after it, or is empty now: the reader may have been off-CPU or
      // busy, the reply still queued. Caught up that way, the latest round is judged, as every tick
      // does. Every round still pending is judged only once the port is quiet (its queue empty and
      // not a frame read for a whole interval): a reader that caught up after a backlog read every
      // answer there was, and a full queue that dropped some while the link worked is not quiet.
      const caughtUp = rs === null || rs.empty === true || rs.drains !== this.lastDrains;
      if (caughtUp && !rxMoved && (rs === null || rs.empty === true)) this.judgeAll();
      else if (caughtUp && this.roundNext > 0) this.judge(this.roundNext - 1);
      // Read up to the drain (or now, the queue empty): every round sent well before then had its
      // answers read, if any came.
      if (caughtUp)
        this.resync((rs === null || rs.empty === true ? now : (rs.drainedAt ?? now)) - o.probeIntervalMs / 2);
      this.lastDrains = rs?.drains ?? -1;
      // Judged at probe time: a reply that is late by less than a tick still counts.
      const unanswered = this.unanswered();
      if (
        this.reachable &&
        unanswered >= o.probeMisses &&
        now - this.lastReply > o.probeIntervalMs * o.probeMisses
      ) {
        this.reachable = false;
        this.doubtSince = this.newestMissed;
        this.reevaluate(
          'reachability',
          `no ${probeKinds(o)} reply from ${o.probeTargets.length + o.probeTargets6.length} target(s) to ${unanswered} probe rounds in ${Math.round(now - this.lastReply)} ms`,
        );
      }
      // Counted before it goes: an answer may come back within the send (a same-thread peer).
      this.sentRound(now);
      for (const t of o.probeTargets) this.tap.sendProbe(t, o.probeVlan);
      for (const t of o.probeTargets6) this.tap.sendProbe6(t, o.probeVlan);
      this.counters.inc('team.probe.sent', o.probeTargets.length);
      if (o.probeTargets6.length > 0) this.counters.inc('team.probe.sent6', o.probeTargets6.length);
    }
    this.probeTimer.arm(o.probeIntervalMs);
  };

  private sentRound(now: number): void {
    const k = this.roundNext++;
    this.roundAt[k % ROUNDS] = now;
    this.roundState[k % ROUNDS] = PENDING;
    // A reader more than a ring behind: its oldest rounds are forgotten, neither answered nor missed.
    if (this.roundNext - this.judged > ROUNDS) this.judged = this.roundNext - ROUNDS;
  }

  /** Round `k`, unanswered and sent after the latest evidence, is missed. */
  private judge(k: number): void {
    const i = k % ROUNDS;
    if (this.roundState[i] === PENDING && this.roundAt[i]! > this.lastReply) this.roundState[i] = MISSED;
  }

  /** The port is quiet: every round still pending is judged. */
  private judgeAll(): void {
    for (let k = this.judged; k < this.roundNext; k++) this.judge(k);
    this.judged = this.roundNext;
  }

  /**
   * Every answer to a round sent before `readTo` was read by now: later replies answer later rounds.
   * Without this, each reply lost (a full queue drops them, a neighbor answers only once its address
   * is valid) would date every reply after it a round too early, for good.
   */
  private resync(readTo: number): void {
    let k = this.roundNext;
    while (k > Math.max(0, this.roundNext - ROUNDS) && this.roundAt[(k - 1) % ROUNDS]! >= readTo) k--;
    for (let t = 0; t < this.targetNext.length; t++) if (this.targetNext[t]! < k) this.targetNext[t] = k;
  }

  /** Missed rounds sent after the latest evidence (the latest ROUNDS rounds). */
  private unanswered(): number {
    let c = 0;
    for (let k = Math.max(0, this.roundNext - ROUNDS); k < this.roundNext; k++)
      if (this.roundState[k % ROUNDS] === MISSED && this.roundAt[k % ROUNDS]! > this.lastReply) c++;
    return c;
  }

  /** When the newest missed round was sent. */
  private get newestMissed(): number {
    for (let k = this.roundNext - 1; k >= Math.max(0, this.roundNext - ROUNDS); k--)
      if (this.roundState[k % ROUNDS] === MISSED) return this.roundAt[k % ROUNDS]!;
    return this.lastReply;
  }

  /** A reply from target `t` answers the oldest round it left unanswered: dated by that round. */
  private answered(t: number): void {
    let k = Math.max(this.targetNext[t]!, this.roundNext - ROUNDS, 0);
    // More replies than rounds (a duplicate, a reply to a round forgotten): the latest round at best.
    if (k >= this.roundNext) k = this.roundNext - 1;
    if (k < 0) {
      this.evidence(this.clock.now(), 'probe answered');
      return;
    }
    this.targetNext[t] = k + 1;
    this.roundState[k % ROUNDS] = ANSWERED;
    this.evidence(this.roundAt[k % ROUNDS]!, 'probe answered');
  }

  private readonly onReply = (p: ArpPacket): void => {
    if (this.closed) return;
    const t = this.opts.probeTargets.indexOf(p.senderIp);
    if (t < 0) return;
    this.replyMacs.set(p.senderIp >>> 0, p.senderMac);
    this.answered(t);
  };

  private readonly onReply6 = (target: Uint8Array, mac: number): void => {
    if (this.closed) return;
    const t = this.opts.probeTargets6.findIndex((x) => ipv6Equal(x, 0, target, 0));
    if (t < 0) return;
    this.replyMacs6.set(formatIpv6(target), mac);
    this.answered(this.opts.probeTargets.length + t);
  };

  /** Proof the link worked at `at` (clock ms) or later. */
  private evidence(at: number, detail = 'traffic received'): void {
    if (at > this.lastReply) this.lastReply = at;
    // Evidence from before the failure was judged (read late) does not undo it.
    if (!this.reachable && at >= this.doubtSince) {
      this.reachable = true;
      this.reevaluate('reachability', detail);
    }
  }

  private readonly beatMissed = (): void => {
    if (this.closed || this.st === 'dead') return;
    this.dead(`no heartbeat for ${this.opts.heartbeatTimeoutMs} ms`);
  };
}

/** Probe rounds remembered: a reader this many intervals behind has its oldest rounds forgotten. */
const ROUNDS = 64;
const PENDING = 0;
const ANSWERED = 1;
const MISSED = 2;

function probeKinds(o: ResolvedHealthOptions): string {
  if (o.probeTargets6.length === 0) return 'ARP';
  return o.probeTargets.length === 0 ? 'NS' : 'ARP or NS';
}
