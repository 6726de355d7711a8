import type { Clock } from '../core/clock.ts';
import { Counters } from '../core/counters.ts';
import { InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import type { Random } from '../core/random.ts';
import { readMac, readU16 } from '../wire/addr.ts';
import { EtherType } from '../wire/ethernet.ts';
import { ethL3Offset } from '../wire/fields.ts';
import { FramePool, type PoolBuf } from './frame-pool.ts';
import { GsoSegmenter } from './gso-segment.ts';
import { DEFAULT_LANE_LIMIT_BYTES, ImpairedWire, type LaneCounterNames } from './impaired-lane.ts';
import { type ImpairmentSpec, validateImpairment } from './impairment.ts';
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
   * of up to 64 KB, over IPv4 or IPv6, whose checksums the "hardware" vouches for, and receivers
   * that offload too get them whole, marked checksum-valid. Frames on the wire then carry
   * unfinished checksums (a capture shows them as bad, as captures on Linux do). A receiver
   * without offload gets them cut into MTU-sized segments with every checksum completed, as
   * Linux's software GSO does before a device that cannot. Off by default.
   */
  offload?: boolean;
}

/** Largest super-segment a port with offload takes: a 64 KB IP packet plus the L2 header. */
const GSO_MAX_FRAME = 65535 + 18;

/** Ethernet header plus one 802.1Q tag: a port accepts frames up to mtu + this. */
const L2_OVERHEAD = 18;
const ETH_HEADER = 14;

/** One set of names for every lane of the switch: its counters are switch-wide. */
const LANE_COUNTERS: LaneCounterNames = {
  loss: 'drop.loss',
  marked: 'ce-marked',
  dup: 'dup',
  reordered: 'reordered',
  queue: 'drop.queue',
};

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
    const laneLimit = opts.laneLimitBytes ?? DEFAULT_LANE_LIMIT_BYTES;
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
    if (opts.impair !== undefined) validateImpairment(opts.impair);
    const port = new SwitchPort(
      this,
      opts.name ?? `${this.name}.p${this.portList.length}`,
      mtu,
      opts.offload === true,
    );
    if (opts.impair !== undefined) port.wire.impair(opts.impair);
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
    } else if (b.len > p.maxFrame && b.gsoSize === 0) {
      this.stats.inc('drop.oversize');
      this.pool.release(b);
    } else p.wire.rx.enqueue(b, now);
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

/** One port of a MemorySwitch, seen from the host plugged into it: a `Link`. */
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
  /** @internal The cable: tx carries what the host sends to the switch, rx what it receives. */
  readonly wire: ImpairedWire;
  private up = true;
  private carrierHandler: ((up: boolean, since?: number) => void) | null = null;

  /** Segmentation and checksum offload (PortOptions.offload). */
  readonly offloads: LinkOffloads;
  /** Cuts super-segments for this port's host when it has no offload; made on first need. */
  private segmenter: GsoSegmenter | null = null;
  /** Reused receive info for offloaded frames (borrowed by the handler, like the frame). */
  private readonly rxInfo = { csumPartial: false, csumValid: true, gsoType: 0, gsoSize: 0 };

  /** @internal Use MemorySwitch.addPort. */
  constructor(sw: MemorySwitch, name: string, mtu: number, offload = false) {
    this.switch = sw;
    this.name = name;
    this.mtu = mtu;
    this.offloads = { tso: offload, tso6: offload, csum: offload };
    this.maxFrame = mtu + L2_OVERHEAD;
    this.wire = new ImpairedWire({
      clock: sw.clock,
      random: sw.random,
      pool: sw.pool,
      counters: sw.stats,
      limitBytes: sw.laneLimitBytes,
      names: { tx: LANE_COUNTERS, rx: LANE_COUNTERS },
      deliver: { tx: this.toSwitch, rx: this.fromSwitch },
    });
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
    const f = b.view();
    info.gsoSize = b.gsoSize;
    info.gsoType = gsoTypeOf(f, b.gsoSize);
    h(f, info);
  }

  private transmit(frame: Uint8Array, gsoSize: number, maxFrame: number): boolean {
    // The switch and its wires are hardware the simulator plays: a meter charging the host's work
    // to the clock stops while they run (Clock.meter).
    const m = this.switch.clock.meter;
    if (m == null) return this.transmitNow(frame, gsoSize, maxFrame);
    m.pause();
    try {
      return this.transmitNow(frame, gsoSize, maxFrame);
    } finally {
      m.resume();
    }
  }

  private transmitNow(frame: Uint8Array, gsoSize: number, maxFrame: number): boolean {
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
    const lane = this.wire.tx;
    const now = sw.clock.now();
    // A perfect wire with nothing queued adds nothing: hand the frame to the switch now. The
    // receiver still gets it from its own lane later, never inside this call.
    if (lane.idle) {
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
    this.wire.impair(spec);
  }

  /** Cable pulled: carrier goes down, frames on the wire and any sent later are dropped and counted. */
  cut(): void {
    if (this.closed) throw new InvalidStateError(`port ${this.name} is closed`);
    if (!this.up) return;
    this.up = false;
    this.dropInFlight('drop.cut');
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
    this.dropInFlight('drop.closed');
    this.switch.forgetPort(this);
    this.handler = null;
    this.carrierHandler = null;
  }

  private dropInFlight(reason: string): void {
    const n = this.wire.dropAll();
    if (n) this.switch.stats.inc(reason, n);
  }

  /** The far end of the tx lane: the frame reaches the switch. */
  private readonly toSwitch = (b: PoolBuf, now: number): void => {
    const sw = this.switch;
    if (this.blackholed) {
      sw.stats.inc('drop.blackhole');
      sw.pool.release(b);
      return;
    }
    sw.ingress(this, b, now);
  };

  /** The far end of the rx lane: the frame reaches the host. */
  private readonly fromSwitch = (b: PoolBuf): void => {
    const sw = this.switch;
    if (this.blackholed) {
      sw.stats.inc('drop.blackhole');
      sw.pool.release(b);
      return;
    }
    if (this.handler === null) {
      sw.stats.inc('drop.nohandler');
      sw.pool.release(b);
      return;
    }
    if (b.gsoSize !== 0 && !this.offloads.tso) {
      this.segmentTo(b);
      return;
    }
    this.rxFrames++;
    this.rxBytes += b.len;
    try {
      this.receive(b);
    } finally {
      sw.pool.release(b);
    }
  };

  /**
   * An offloaded frame for a host that cannot take one: cut (or only checksummed) in software, as
   * Linux does before a device without the offload; what cannot be cut is dropped and counted.
   */
  private segmentTo(b: PoolBuf): void {
    const sw = this.switch;
    try {
      this.segmenter ??= new GsoSegmenter();
      const n = this.segmenter.segment(b.view(), b.gsoSize, (seg) => {
        this.rxFrames++;
        this.rxBytes += seg.length;
        // A handler that closed the port on an earlier segment gets no more.
        this.handler?.(seg);
      });
      sw.stats.inc(n < 0 ? 'drop.gso-unsupported' : 'gso.segmented');
    } finally {
      sw.pool.release(b);
    }
  }

  private emitCarrier(up: boolean): void {
    // Deferred so a handler that reacts (fails over, sends) never runs inside cut()/restore().
    const since = this.switch.clock.now();
    this.switch.clock.defer(() => {
      if (!this.closed) this.carrierHandler?.(up, since);
    });
  }
}

/**
 * The segmentation type a receiver is told of an offloaded frame: TCPv4 (1) or TCPv6 (4) when its
 * payload spans more than one segment of `gsoSize`, else 0 (a checksum-only offload).
 */
function gsoTypeOf(f: Uint8Array, gsoSize: number): number {
  const ip = ethL3Offset(f);
  if (f.length < ip + 40) return 0;
  const v6 = readU16(f, ip - 2) === EtherType.IPV6;
  const l4 = ip + (v6 ? 40 : (f[ip]! & 15) * 4);
  if (f.length < l4 + 20) return 0;
  const payload = f.length - l4 - (f[l4 + 12]! >>> 4) * 4;
  if (payload <= gsoSize) return 0;
  return v6 ? 4 : 1;
}
