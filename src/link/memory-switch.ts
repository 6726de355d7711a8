import type { Clock, Timer } from '../core/clock.ts';
import { Counters } from '../core/counters.ts';
import { InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import type { Random } from '../core/random.ts';
import { FramePool, type PoolBuf } from './frame-pool.ts';
import {
  type Impairment,
  type ImpairmentSpec,
  ResolvedImpairment,
  splitImpairmentSpec,
} from './impairment.ts';
import type { Link, LinkGsoOptions, LinkOffloads, RxOffloadInfo } from './link.ts';

export interface SwitchOptions {
  clock: Clock;
  random: Random;
  name?: string;
  /** MAC table entries age out after this long without a frame from that address (default 300 s). */
  ageMs?: number;
  /** Most MAC addresses the table holds; beyond it new addresses are flooded, not learned (default 8192). */
  maxMacEntries?: number;
  /**
   * Bytes one direction of one port may hold in flight before it drops (default 64 MiB). This is
   * not an impairment: it only keeps a sender that never yields from exhausting memory.
   */
  laneLimitBytes?: number;
}

export interface PortOptions {
  name?: string;
  /** Largest IP packet, 68..65535 (default 1500). */
  mtu?: number;
  impair?: ImpairmentSpec;
  /**
   * Offer segmentation and checksum offload, like a veth pair: a host may send TCP super-segments
   * of up to 64 KB whose checksums the "hardware" vouches for, and receivers get them whole, marked
   * checksum-valid. Frames on the wire then carry unfinished checksums (a capture shows them as
   * bad, as captures on Linux do). Off by default.
   */
  offload?: boolean;
}

/** Largest super-segment a port with offload takes: a 64 KB IP packet plus the L2 header. */
const GSO_MAX_FRAME = 65535 + 18;

/** Ethernet header plus one 802.1Q tag: a port accepts frames up to mtu + this. */
const L2_OVERHEAD = 18;
const ETH_HEADER = 14;

function readMac(d: Uint8Array, off: number): number {
  return (
    ((d[off]! << 8) | d[off + 1]!) * 0x100000000 +
    (((d[off + 2]! << 24) | (d[off + 3]! << 16) | (d[off + 4]! << 8) | d[off + 5]!) >>> 0)
  );
}

/** FIFO of (frame, due time) in parallel arrays that grow by doubling and are then reused. */
class FrameRing {
  private bufs: (PoolBuf | undefined)[] = new Array(16).fill(undefined);
  private ats = new Float64Array(16);
  private head = 0;
  private mask = 15;
  size = 0;

  get headAt(): number {
    return this.size === 0 ? Number.POSITIVE_INFINITY : this.ats[this.head]!;
  }

  push(b: PoolBuf, at: number): void {
    if (this.size > this.mask) this.grow();
    const i = (this.head + this.size) & this.mask;
    this.bufs[i] = b;
    this.ats[i] = at;
    this.size++;
  }

  /** Insert keeping due times sorted; equal times stay in arrival order. */
  insertSorted(b: PoolBuf, at: number): void {
    if (this.size > this.mask) this.grow();
    const m = this.mask;
    let i = this.size;
    // Held frames are few, so shifting from the tail is cheaper than a heap.
    while (i > 0) {
      const p = (this.head + i - 1) & m;
      if (this.ats[p]! <= at) break;
      const q = (this.head + i) & m;
      this.bufs[q] = this.bufs[p];
      this.ats[q] = this.ats[p]!;
      i--;
    }
    const q = (this.head + i) & m;
    this.bufs[q] = b;
    this.ats[q] = at;
    this.size++;
  }

  shift(): PoolBuf {
    const b = this.bufs[this.head]!;
    this.bufs[this.head] = undefined;
    this.head = (this.head + 1) & this.mask;
    this.size--;
    return b;
  }

  private grow(): void {
    const n = (this.mask + 1) * 2;
    const bufs: (PoolBuf | undefined)[] = new Array(n).fill(undefined);
    const ats = new Float64Array(n);
    for (let k = 0; k < this.size; k++) {
      const i = (this.head + k) & this.mask;
      bufs[k] = this.bufs[i];
      ats[k] = this.ats[i]!;
    }
    this.bufs = bufs;
    this.ats = ats;
    this.head = 0;
    this.mask = n - 1;
  }
}

/**
 * One direction of one port: the wire between a host and the switch. Frames wait in `main`
 * (due times non-decreasing, so FIFO) or, when picked for reordering, in `held` (sorted).
 */
class Lane {
  imp: ResolvedImpairment | null = null;
  private readonly main = new FrameRing();
  private readonly held = new FrameRing();
  private readonly timer: Timer;
  private deferred = false;
  /** Latest due time given to `main`; keeps jitter from reordering. */
  private lastAt = Number.NEGATIVE_INFINITY;
  /** When the serializer of a rate-limited wire is free again. */
  private txEnd = 0;
  private queuedBytes = 0;

  constructor(
    private readonly sw: MemorySwitch,
    private readonly port: SwitchPort,
    private readonly toSwitch: boolean,
  ) {
    this.timer = sw.clock.createTimer(this.flush);
  }

  get empty(): boolean {
    return this.main.size === 0 && this.held.size === 0;
  }

  /** Takes over one reference of `b`. Returns false only when the frame overflowed a queue. */
  enqueue(b: PoolBuf, now: number): boolean {
    const sw = this.sw;
    const len = b.len;
    if (this.queuedBytes + len > sw.laneLimitBytes) {
      sw.stats.inc('drop.queue');
      sw.pool.release(b);
      return false;
    }
    const imp = this.imp;
    let at = now;
    if (imp === null) {
      if (at < this.lastAt) at = this.lastAt;
      this.lastAt = at;
      this.main.push(b, at);
      this.queuedBytes += len;
      this.kick(at, now);
      return true;
    }
    if (imp.bytesPerMs > 0) {
      const start = Math.max(this.txEnd, now);
      const backlog = (start - now) * imp.bytesPerMs;
      // An idle serializer always takes a frame, so a queue smaller than one frame still passes traffic.
      if (backlog > 1e-6 && backlog + len > imp.queueBytes + 1e-6) {
        sw.stats.inc('drop.queue');
        sw.pool.release(b);
        return false;
      }
      this.txEnd = start + len / imp.bytesPerMs;
      at = this.txEnd;
    }
    const rnd = sw.random;
    if (imp.loss > 0 && rnd.float() < imp.loss) {
      sw.stats.inc('drop.loss');
      sw.pool.release(b);
      return true;
    }
    at += imp.delayMs;
    if (imp.jitterMs > 0) at += rnd.float() * imp.jitterMs;
    if (at < this.lastAt) at = this.lastAt;
    this.lastAt = at;
    let copies = 1;
    if (imp.duplicate > 0 && rnd.float() < imp.duplicate) {
      sw.pool.retain(b);
      sw.stats.inc('dup');
      copies = 2;
    }
    let first = Number.POSITIVE_INFINITY;
    for (let k = 0; k < copies; k++) {
      let due = at;
      if (imp.reorder > 0 && rnd.float() < imp.reorder) {
        // Held for half to all of reorderDelayMs, so held frames also overtake one another.
        due = at + imp.reorderDelayMs * (0.5 + 0.5 * rnd.float());
        this.held.insertSorted(b, due);
        sw.stats.inc('reordered');
      } else {
        this.main.push(b, due);
      }
      if (due < first) first = due;
    }
    this.queuedBytes += len * copies;
    this.kick(first, now);
    return true;
  }

  /** Drop everything in flight (cable pulled, port closed). */
  dropAll(reason: string): void {
    const pool = this.sw.pool;
    let n = 0;
    while (this.main.size) {
      pool.release(this.main.shift());
      n++;
    }
    while (this.held.size) {
      pool.release(this.held.shift());
      n++;
    }
    if (n) this.sw.stats.inc(reason, n);
    this.queuedBytes = 0;
    this.timer.disarm();
  }

  private kick(at: number, now: number): void {
    if (this.deferred) return;
    if (at <= now) {
      this.deferred = true;
      this.sw.clock.defer(this.flush);
    } else if (!this.timer.armed || at < this.timer.deadline) {
      this.timer.armAt(at);
    }
  }

  private nextAt(): number {
    const a = this.main.headAt;
    const b = this.held.headAt;
    return Math.min(a, b);
  }

  private readonly flush = (): void => {
    this.deferred = false;
    const now = this.sw.clock.now();
    // Frames queued by handlers during this run wait for the next one: no livelock, no starvation.
    let budget = this.main.size + this.held.size;
    try {
      while (budget-- > 0) {
        const ma = this.main.headAt;
        const ha = this.held.headAt;
        let b: PoolBuf;
        if (ma <= ha) {
          if (ma > now) break;
          b = this.main.shift();
        } else {
          if (ha > now) break;
          b = this.held.shift();
        }
        this.queuedBytes -= b.len;
        this.deliver(b, now);
      }
    } finally {
      const next = this.nextAt();
      if (next === Number.POSITIVE_INFINITY) this.timer.disarm();
      else if (next <= now) {
        this.timer.disarm();
        if (!this.deferred) {
          this.deferred = true;
          this.sw.clock.defer(this.flush);
        }
      } else this.timer.armAt(next);
    }
  };

  private deliver(b: PoolBuf, now: number): void {
    const sw = this.sw;
    const port = this.port;
    if (port.blackholed) {
      sw.stats.inc('drop.blackhole');
      sw.pool.release(b);
      return;
    }
    if (this.toSwitch) {
      sw.ingress(port, b, now);
      return;
    }
    const h = port.handler;
    if (h === null) {
      sw.stats.inc('drop.nohandler');
      sw.pool.release(b);
      return;
    }
    if (b.gsoSize !== 0 && !port.offloads.tso) {
      // A real switch would cut it; a host that cannot take super-segments never gets one here.
      sw.stats.inc('drop.gso-unsupported');
      sw.pool.release(b);
      return;
    }
    port.rxFrames++;
    port.rxBytes += b.len;
    try {
      port.receive(b);
    } finally {
      sw.pool.release(b);
    }
  }
}

interface MacEntry {
  port: SwitchPort;
  seen: number;
}

/**
 * An in-memory Ethernet learning switch. Each port is a `Link` for the host attached to it, with
 * its own impairments per direction, so a simulated network can lose, delay, duplicate and
 * reorder frames, pull cables and cut paths, all on the injected clock and random source.
 *
 * A flooded or duplicated frame is one pooled buffer shared by every receiver, so a receive
 * handler must treat its view as read-only as well as short-lived.
 */
export class MemorySwitch {
  readonly name: string;
  /** Counters: frames.forwarded, frames.flooded, drop.loss, drop.cut, drop.queue, dup, reordered, ... */
  readonly stats = new Counters();
  /** @internal */ readonly clock: Clock;
  /** @internal */ readonly random: Random;
  /** @internal */ readonly pool = new FramePool();
  /** @internal */ readonly laneLimitBytes: number;
  private readonly ageMs: number;
  private readonly maxMacEntries: number;
  private readonly portList: SwitchPort[] = [];
  private readonly table = new Map<number, MacEntry>();

  constructor(opts: SwitchOptions) {
    if (!opts || typeof opts !== 'object') throw new InvalidArgumentError('switch options required');
    if (!opts.clock) throw new InvalidArgumentError('switch needs a clock');
    if (!opts.random) throw new InvalidArgumentError('switch needs a random source');
    const ageMs = opts.ageMs ?? 300_000;
    if (typeof ageMs !== 'number' || !(ageMs > 0)) {
      throw new InvalidArgumentError(`ageMs must be > 0, got ${String(ageMs)}`);
    }
    const maxMac = opts.maxMacEntries ?? 8192;
    if (!Number.isInteger(maxMac) || maxMac < 1) {
      throw new InvalidArgumentError(`maxMacEntries must be a positive integer, got ${String(maxMac)}`);
    }
    const laneLimit = opts.laneLimitBytes ?? 64 * 1024 * 1024;
    if (typeof laneLimit !== 'number' || !(laneLimit > 0)) {
      throw new InvalidArgumentError(`laneLimitBytes must be > 0, got ${String(laneLimit)}`);
    }
    this.clock = opts.clock;
    this.random = opts.random;
    this.name = opts.name ?? 'switch';
    this.ageMs = ageMs;
    this.maxMacEntries = maxMac;
    this.laneLimitBytes = laneLimit;
  }

  get ports(): readonly SwitchPort[] {
    return this.portList;
  }

  /** A new port: a Link the host side sends into and receives from. */
  addPort(opts: PortOptions = {}): SwitchPort {
    const mtu = opts.mtu ?? 1500;
    if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) {
      throw new InvalidArgumentError(`port mtu must be an integer in 68..65535, got ${String(mtu)}`);
    }
    const split = opts.impair === undefined ? undefined : splitImpairmentSpec(opts.impair);
    const port = new SwitchPort(
      this,
      opts.name ?? `${this.name}.p${this.portList.length}`,
      mtu,
      opts.offload === true,
    );
    if (split) port.setImpairments(split.toSwitch, split.fromSwitch);
    this.portList.push(port);
    return port;
  }

  /** The port a MAC address was learned on, honouring ageing; undefined when it would be flooded. */
  portFor(mac: number): SwitchPort | undefined {
    const e = this.table.get(mac);
    if (e === undefined) return undefined;
    if (this.clock.now() - e.seen > this.ageMs) return undefined;
    return e.port;
  }

  /** Forget every learned address (as a topology change would). */
  flushMacTable(): void {
    this.table.clear();
  }

  /** Buffers in flight; zero when the switch is idle (tests check for leaks with it). */
  get framesInFlight(): number {
    return this.pool.outstanding;
  }

  /** @internal Forget addresses learned on `port` (its cable was pulled or it closed). */
  forgetPort(port: SwitchPort): void {
    for (const [mac, e] of this.table) if (e.port === port) this.table.delete(mac);
  }

  /** @internal A frame reached the switch from `src` at `now`; takes over one reference of `b`. */
  ingress(src: SwitchPort, b: PoolBuf, now: number): void {
    const d = b.data;
    // A multicast source address is invalid; never learn it.
    if ((d[6]! & 1) === 0) this.learn(readMac(d, 6), src, now);
    if ((d[0]! & 1) === 0) {
      const e = this.table.get(readMac(d, 0));
      if (e !== undefined) {
        if (now - e.seen <= this.ageMs) {
          if (e.port === src) {
            this.stats.inc('drop.filtered');
            this.pool.release(b);
          } else {
            this.stats.inc('frames.forwarded');
            this.egress(e.port, b, now);
          }
          return;
        }
        this.table.delete(readMac(d, 0));
        this.stats.inc('mac.aged');
      }
    }
    this.stats.inc('frames.flooded');
    const ports = this.portList;
    for (let i = 0; i < ports.length; i++) {
      const p = ports[i]!;
      if (p === src || p.closed || !p.carrier) continue;
      this.pool.retain(b);
      this.egress(p, b, now);
    }
    this.pool.release(b);
  }

  private egress(p: SwitchPort, b: PoolBuf, now: number): void {
    if (p.closed) {
      this.stats.inc('drop.closed');
      this.pool.release(b);
    } else if (!p.carrier) {
      this.stats.inc('drop.cut');
      this.pool.release(b);
    } else if (b.len > p.maxFrame && (b.gsoSize === 0 || !p.offloads.tso)) {
      this.stats.inc(b.gsoSize === 0 ? 'drop.oversize' : 'drop.gso-unsupported');
      this.pool.release(b);
    } else p.fromSwitchLane.enqueue(b, now);
  }

  private learn(mac: number, port: SwitchPort, now: number): void {
    const e = this.table.get(mac);
    if (e !== undefined) {
      e.seen = now;
      if (e.port !== port) {
        e.port = port;
        this.stats.inc('mac.moved');
      }
      return;
    }
    if (this.table.size >= this.maxMacEntries) {
      for (const [m, x] of this.table) if (now - x.seen > this.ageMs) this.table.delete(m);
      if (this.table.size >= this.maxMacEntries) {
        this.stats.inc('mac.full');
        return;
      }
    }
    this.table.set(mac, { port, seen: now });
    this.stats.inc('mac.learned');
  }
}

export class SwitchPort implements Link {
  /** The switch this port belongs to. */
  readonly switch: MemorySwitch;
  readonly name: string;
  readonly mtu: number;
  /** Frames and bytes the host sent into this port and received from it. */
  txFrames = 0;
  txBytes = 0;
  rxFrames = 0;
  rxBytes = 0;
  /** @internal */ readonly maxFrame: number;
  /** @internal */ handler: ((frame: Uint8Array, info?: RxOffloadInfo) => void) | null = null;
  /** @internal */ blackholed = false;
  /** @internal */ closed = false;
  /** @internal */ readonly toSwitchLane: Lane;
  /** @internal */ readonly fromSwitchLane: Lane;
  private up = true;
  private carrierHandler: ((up: boolean, since?: number) => void) | null = null;

  /** Segmentation and checksum offload (PortOptions.offload). */
  readonly offloads: LinkOffloads;
  /** Reused receive info for offloaded frames (borrowed by the handler, like the frame). */
  private readonly rxInfo = { csumPartial: false, csumValid: true, gsoType: 0, gsoSize: 0 };

  /** @internal Use MemorySwitch.addPort. */
  constructor(sw: MemorySwitch, name: string, mtu: number, offload = false) {
    this.switch = sw;
    this.name = name;
    this.mtu = mtu;
    this.offloads = { tso: offload, csum: offload };
    this.maxFrame = mtu + L2_OVERHEAD;
    this.toSwitchLane = new Lane(sw, this, true);
    this.fromSwitchLane = new Lane(sw, this, false);
  }

  get carrier(): boolean {
    return this.up && !this.closed;
  }

  /**
   * Send a super-segment (offload ports only): delivered whole to receivers that offload too, with
   * its checksum treated as valid. Returns false if this port does not offload.
   */
  sendGso(frame: Uint8Array, opts: LinkGsoOptions): boolean {
    if (!this.offloads.tso) {
      this.switch.stats.inc('drop.gso-unsupported');
      return false;
    }
    return this.transmit(frame, opts.gsoSize > 0 ? opts.gsoSize : 0xffff, GSO_MAX_FRAME);
  }

  send(frame: Uint8Array): boolean {
    return this.transmit(frame, 0, this.maxFrame);
  }

  /** @internal Hand a frame to the receiving host, with offload info when it was offloaded. */
  receive(b: PoolBuf): void {
    const h = this.handler!;
    if (b.gsoSize === 0) {
      h(b.view());
      return;
    }
    const info = this.rxInfo;
    info.gsoSize = b.gsoSize;
    info.gsoType = b.len - 54 > b.gsoSize ? 1 : 0;
    h(b.view(), info);
  }

  private transmit(frame: Uint8Array, gsoSize: number, maxFrame: number): boolean {
    const sw = this.switch;
    if (this.closed) {
      sw.stats.inc('drop.closed');
      return false;
    }
    if (!this.up) {
      sw.stats.inc('drop.cut');
      return false;
    }
    const len = frame.length;
    if (len < ETH_HEADER) {
      sw.stats.inc('drop.runt');
      return false;
    }
    if (len > maxFrame) {
      sw.stats.inc('drop.oversize');
      return false;
    }
    this.txFrames++;
    this.txBytes += len;
    if (this.blackholed) {
      // The host cannot tell: the link is up, the frame just never arrives anywhere.
      sw.stats.inc('drop.blackhole');
      return true;
    }
    const b = sw.pool.take(frame);
    b.gsoSize = gsoSize;
    const lane = this.toSwitchLane;
    const now = sw.clock.now();
    // A perfect wire with nothing queued adds nothing: hand the frame to the switch now. The
    // receiver still gets it from its own lane later, never inside this call.
    if (lane.imp === null && lane.empty) {
      sw.ingress(this, b, now);
      return true;
    }
    return lane.enqueue(b, now);
  }

  onFrame(handler: (frame: Uint8Array, info?: RxOffloadInfo) => void): void {
    if (typeof handler !== 'function') throw new InvalidArgumentError('onFrame needs a function');
    this.handler = handler;
  }

  onCarrier(handler: (up: boolean, since?: number) => void): void {
    if (typeof handler !== 'function') throw new InvalidArgumentError('onCarrier needs a function');
    this.carrierHandler = handler;
  }

  /** Replace this port's impairments; frames already in flight keep their fate. */
  impair(spec: ImpairmentSpec): void {
    if (this.closed) throw new InvalidStateError(`port ${this.name} is closed`);
    const s = splitImpairmentSpec(spec);
    this.setImpairments(s.toSwitch, s.fromSwitch);
  }

  /** @internal */
  setImpairments(to: Impairment | undefined, from: Impairment | undefined): void {
    this.toSwitchLane.imp = ResolvedImpairment.of(to);
    this.fromSwitchLane.imp = ResolvedImpairment.of(from);
  }

  /** Cable pulled: carrier goes down, frames on the wire and any sent later are dropped and counted. */
  cut(): void {
    if (this.closed) throw new InvalidStateError(`port ${this.name} is closed`);
    if (!this.up) return;
    this.up = false;
    this.toSwitchLane.dropAll('drop.cut');
    this.fromSwitchLane.dropAll('drop.cut');
    // A real switch flushes addresses on link down, so traffic for a host that moved floods at once.
    this.switch.forgetPort(this);
    this.emitCarrier(false);
  }

  /** Cable back in: carrier up. */
  restore(): void {
    if (this.closed) throw new InvalidStateError(`port ${this.name} is closed`);
    if (this.up) return;
    this.up = true;
    this.emitCarrier(true);
  }

  /** While on, frames vanish both ways without a trace at the host, and carrier stays up. */
  blackhole(on: boolean): void {
    if (this.closed) throw new InvalidStateError(`port ${this.name} is closed`);
    this.blackholed = on;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.toSwitchLane.dropAll('drop.closed');
    this.fromSwitchLane.dropAll('drop.closed');
    this.switch.forgetPort(this);
    this.handler = null;
    this.carrierHandler = null;
  }

  private emitCarrier(up: boolean): void {
    // Deferred so a handler that reacts (fails over, sends) never runs inside cut()/restore().
    const since = this.switch.clock.now();
    this.switch.clock.defer(() => {
      if (!this.closed) this.carrierHandler?.(up, since);
    });
  }
}
