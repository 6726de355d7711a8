/**
 * A Link wrapper that loses, duplicates, reorders, delays and rate-limits frames on their way
 * through a real link, with the same per-direction semantics as a MemorySwitch port
 * (impairment.ts). It is how interop tests make loss "in Chimney's link" against a kernel peer
 * that sits behind a clean TAP: `chimney serve --impair loss=0.01,reorder=0.01`.
 *
 * Directions: `tx` is what the stack sends into the link, `rx` what the link hands the stack.
 * A plain Impairment applies to both.
 *
 * Offloads: the wrapper presents only the Link interface, so a stack that looks for
 * `sendGso` sends MTU-sized frames through it and each lost frame is one lost segment. Frames
 * the kernel hands a TAP with TSO enabled may be super-segments; one of those counts as one
 * frame here, so a loss of it is a burst. Open the TAP without offloads (vnetHdr: false) when
 * per-segment loss matters. The receive info of a TapLink is carried along with
 * each delayed frame (the fields of FrameInfo) and handed to the handler as its second argument.
 */
import type { Clock, Timer } from '../core/clock.ts';
import { Counters } from '../core/counters.ts';
import { InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import type { Random } from '../core/random.ts';
import { FramePool, MAX_POOLED_FRAME, type PoolBuf } from './frame-pool.ts';
import { type Impairment, ResolvedImpairment, validateImpairment } from './impairment.ts';
import type { Link } from './link.ts';

/**
 * The offload facts a link attaches to a received frame (Link's RxOffloadInfo; TapLink passes a
 * superset). Declared here by shape so a delayed frame can carry a copy of its own.
 */
export interface FrameInfo {
  csumPartial: boolean;
  csumValid: boolean;
  gsoType: number;
  gsoSize: number;
}

/** Impairments per direction of a link; a missing direction is a perfect wire. */
export interface LinkImpairment {
  tx?: Impairment;
  rx?: Impairment;
}

export type LinkImpairmentSpec = Impairment | LinkImpairment;

/** A receive handler; `info` is present when the wrapped link supplies one (TapLink). */
export type ImpairedFrameHandler = (frame: Uint8Array, info?: FrameInfo) => void;

export interface ImpairedLink extends Link {
  readonly inner: Link;
  /** impair.<tx|rx>.loss, .dup, .reordered, .queue (rate-limit overflow), drop.link.oversize */
  readonly counters: Counters;
  onFrame(handler: ImpairedFrameHandler): void;
  /** Replace the impairments; frames already in flight keep their fate. */
  setImpairment(spec: LinkImpairmentSpec): void;
  /** Frames held in either direction right now. */
  readonly framesInFlight: number;
}

function isDirectional(spec: LinkImpairmentSpec): spec is LinkImpairment {
  return 'tx' in spec || 'rx' in spec;
}

/** Validates and splits a spec; throws InvalidArgumentError without side effects. */
export function splitLinkImpairment(spec: LinkImpairmentSpec): {
  tx: Impairment | undefined;
  rx: Impairment | undefined;
} {
  if (spec === null || typeof spec !== 'object') {
    throw new InvalidArgumentError('link impairment must be an object');
  }
  if (isDirectional(spec)) {
    for (const key of Object.keys(spec)) {
      if (key !== 'tx' && key !== 'rx') {
        throw new InvalidArgumentError(
          `link impairment mixes directions with '${key}'; put it under tx or rx`,
        );
      }
    }
    if (spec.tx !== undefined) validateImpairment(spec.tx);
    if (spec.rx !== undefined) validateImpairment(spec.rx);
    return { tx: spec.tx, rx: spec.rx };
  }
  validateImpairment(spec);
  return { tx: spec, rx: spec };
}

const KEY_ALIASES: Record<string, keyof Impairment> = {
  loss: 'loss',
  duplicate: 'duplicate',
  dup: 'duplicate',
  reorder: 'reorder',
  'reorder-delay': 'reorderDelayMs',
  reorderdelay: 'reorderDelayMs',
  reorderdelayms: 'reorderDelayMs',
  delay: 'delayMs',
  delayms: 'delayMs',
  jitter: 'jitterMs',
  jitterms: 'jitterMs',
  rate: 'rateBps',
  ratebps: 'rateBps',
  queue: 'queueBytes',
  queuebytes: 'queueBytes',
};
const PROBABILITY_KEYS = new Set<keyof Impairment>(['loss', 'duplicate', 'reorder']);
const SI: Record<string, number> = { '': 1, k: 1e3, m: 1e6, g: 1e9 };

function parseNumber(key: keyof Impairment, raw: string, item: string): number {
  const v = raw.trim();
  let n: number;
  if (PROBABILITY_KEYS.has(key) && v.endsWith('%')) n = Number(v.slice(0, -1)) / 100;
  else if (key === 'rateBps' || key === 'queueBytes') {
    const m = /^(\d+(?:\.\d+)?)([kmgKMG]?)$/.exec(v);
    n = m ? Number(m[1]) * SI[m[2]!.toLowerCase()]! : Number.NaN;
    if (key === 'queueBytes') n = Math.round(n);
  } else n = v === '' ? Number.NaN : Number(v);
  if (!Number.isFinite(n)) throw new InvalidArgumentError(`impairment '${item}': '${raw}' is not a number`);
  return n;
}

/**
 * Parses the CLI form: comma-separated `key=value`, a key optionally prefixed `tx.` or `rx.`
 * for one direction (unprefixed keys apply to both). Keys: loss, duplicate (dup), reorder,
 * reorder-delay (ms), delay (ms), jitter (ms), rate (bit/s, k/M/G suffix), queue (bytes).
 * Probabilities may be written as percentages. Example: `loss=1%,reorder=0.01,rx.delay=2`.
 * Throws InvalidArgumentError for anything it does not understand.
 */
export function parseImpairment(text: string): LinkImpairment {
  if (typeof text !== 'string') throw new InvalidArgumentError('impairment must be a string');
  const tx: Impairment = {};
  const rx: Impairment = {};
  const items = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (items.length === 0) throw new InvalidArgumentError('impairment is empty (e.g. loss=0.01,reorder=0.01)');
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new InvalidArgumentError(`impairment '${item}' is not key=value`);
    let name = item.slice(0, eq).trim().toLowerCase();
    let dirs: Impairment[] = [tx, rx];
    if (name.startsWith('tx.')) {
      dirs = [tx];
      name = name.slice(3);
    } else if (name.startsWith('rx.')) {
      dirs = [rx];
      name = name.slice(3);
    }
    const key = KEY_ALIASES[name];
    if (key === undefined) {
      throw new InvalidArgumentError(
        `impairment '${item}': unknown key '${name}' (have loss, duplicate, reorder, reorder-delay, delay, jitter, rate, queue)`,
      );
    }
    const n = parseNumber(key, item.slice(eq + 1), item);
    for (const d of dirs) d[key] = n;
  }
  const out: LinkImpairment = {};
  if (Object.keys(tx).length) out.tx = tx;
  if (Object.keys(rx).length) out.rx = rx;
  splitLinkImpairment(out);
  return out;
}

/** FIFO of held frames (with their receive info) in parallel arrays that are reused. */
class HeldRing {
  private bufs: (PoolBuf | undefined)[] = new Array(16).fill(undefined);
  private ats = new Float64Array(16);
  private infos: (FrameInfo | undefined)[] = new Array(16).fill(undefined);
  private hasInfo = new Uint8Array(16);
  private head = 0;
  private mask = 15;
  size = 0;

  get headAt(): number {
    return this.size === 0 ? Number.POSITIVE_INFINITY : this.ats[this.head]!;
  }

  /** Append (sorted = false) or insert by due time, equal times in arrival order. */
  put(b: PoolBuf, at: number, info: FrameInfo | undefined, sorted: boolean): void {
    if (this.size > this.mask) this.grow();
    const m = this.mask;
    let i = this.size;
    if (sorted) {
      // Held frames are few, so shifting from the tail beats a heap.
      while (i > 0) {
        const p = (this.head + i - 1) & m;
        if (this.ats[p]! <= at) break;
        this.move((this.head + i) & m, p);
        i--;
      }
    }
    const q = (this.head + i) & m;
    this.bufs[q] = b;
    this.ats[q] = at;
    if (info) {
      let slot = this.infos[q];
      if (slot === undefined) {
        slot = { csumPartial: false, csumValid: false, gsoType: 0, gsoSize: 0 };
        copyInfo(slot, info);
        this.infos[q] = slot;
      } else copyInfo(slot, info);
      this.hasInfo[q] = 1;
    } else this.hasInfo[q] = 0;
    this.size++;
  }

  /** Removes the head; its info (if any) stays valid until the slot is reused. */
  shift(): { buf: PoolBuf; info: FrameInfo | undefined } {
    const h = this.head;
    const b = this.bufs[h]!;
    this.bufs[h] = undefined;
    this.head = (h + 1) & this.mask;
    this.size--;
    this.out.buf = b;
    this.out.info = this.hasInfo[h] ? this.infos[h] : undefined;
    return this.out;
  }
  private readonly out: { buf: PoolBuf; info: FrameInfo | undefined } = {
    buf: undefined as unknown as PoolBuf,
    info: undefined,
  };

  private move(to: number, from: number): void {
    this.bufs[to] = this.bufs[from];
    this.ats[to] = this.ats[from]!;
    // Swap the info objects so every slot keeps one of its own.
    const t = this.infos[to];
    this.infos[to] = this.infos[from];
    this.infos[from] = t;
    this.hasInfo[to] = this.hasInfo[from]!;
  }

  private grow(): void {
    const n = (this.mask + 1) * 2;
    const bufs: (PoolBuf | undefined)[] = new Array(n).fill(undefined);
    const infos: (FrameInfo | undefined)[] = new Array(n).fill(undefined);
    const ats = new Float64Array(n);
    const has = new Uint8Array(n);
    for (let k = 0; k < this.size; k++) {
      const i = (this.head + k) & this.mask;
      bufs[k] = this.bufs[i];
      ats[k] = this.ats[i]!;
      infos[k] = this.infos[i];
      has[k] = this.hasInfo[i]!;
    }
    this.bufs = bufs;
    this.ats = ats;
    this.infos = infos;
    this.hasInfo = has;
    this.head = 0;
    this.mask = n - 1;
  }
}

function copyInfo(to: FrameInfo, from: FrameInfo): void {
  to.csumPartial = from.csumPartial;
  to.csumValid = from.csumValid;
  to.gsoType = from.gsoType;
  to.gsoSize = from.gsoSize;
}

type Deliver = (frame: Uint8Array, info: FrameInfo | undefined) => void;

/** One direction: frames wait in `main` (due times non-decreasing) or, reordered, in `held`. */
class Lane {
  imp: ResolvedImpairment | null = null;
  private readonly main = new HeldRing();
  private readonly held = new HeldRing();
  private readonly timer: Timer;
  private deferred = false;
  private lastAt = Number.NEGATIVE_INFINITY;
  private txEnd = 0;
  private readonly cLoss: string;
  private readonly cDup: string;
  private readonly cReordered: string;
  private readonly cQueue: string;

  constructor(
    private readonly owner: ImpairedLinkImpl,
    dir: 'tx' | 'rx',
    private readonly deliver: Deliver,
  ) {
    this.timer = owner.clock.createTimer(this.flush);
    this.cLoss = `impair.${dir}.loss`;
    this.cDup = `impair.${dir}.dup`;
    this.cReordered = `impair.${dir}.reordered`;
    this.cQueue = `impair.${dir}.queue`;
  }

  get size(): number {
    return this.main.size + this.held.size;
  }

  /** Copies the frame if it must wait. Returns false only when a rate-limited queue overflowed. */
  enqueue(frame: Uint8Array, info: FrameInfo | undefined): boolean {
    const o = this.owner;
    const imp = this.imp;
    const now = o.clock.now();
    if (imp === null) {
      if (this.size === 0) {
        this.deliver(frame, info);
        return true;
      }
      // Frames still in flight from an earlier impairment go first.
      const at = Math.max(now, this.lastAt);
      this.lastAt = at;
      this.main.put(o.pool.take(frame), at, info, false);
      this.kick(at, now);
      return true;
    }
    let at = now;
    if (imp.bytesPerMs > 0) {
      const start = Math.max(this.txEnd, now);
      const backlog = (start - now) * imp.bytesPerMs;
      if (backlog > 1e-6 && backlog + frame.length > imp.queueBytes + 1e-6) {
        o.counters.inc(this.cQueue);
        return false;
      }
      this.txEnd = start + frame.length / imp.bytesPerMs;
      at = this.txEnd;
    }
    const rnd = o.random;
    if (imp.loss > 0 && rnd.float() < imp.loss) {
      o.counters.inc(this.cLoss);
      return true;
    }
    at += imp.delayMs;
    if (imp.jitterMs > 0) at += rnd.float() * imp.jitterMs;
    if (at < this.lastAt) at = this.lastAt;
    this.lastAt = at;
    let copies = 1;
    if (imp.duplicate > 0 && rnd.float() < imp.duplicate) {
      o.counters.inc(this.cDup);
      copies = 2;
    }
    let first = Number.POSITIVE_INFINITY;
    for (let k = 0; k < copies; k++) {
      const b = o.pool.take(frame);
      let due = at;
      if (imp.reorder > 0 && rnd.float() < imp.reorder) {
        // Held for half to all of reorderDelayMs, so held frames also overtake one another.
        due = at + imp.reorderDelayMs * (0.5 + 0.5 * rnd.float());
        this.held.put(b, due, info, true);
        o.counters.inc(this.cReordered);
      } else {
        this.main.put(b, due, info, false);
      }
      if (due < first) first = due;
    }
    this.kick(first, now);
    return true;
  }

  dropAll(): void {
    const pool = this.owner.pool;
    while (this.main.size) pool.release(this.main.shift().buf);
    while (this.held.size) pool.release(this.held.shift().buf);
    this.timer.disarm();
  }

  private kick(at: number, now: number): void {
    if (this.deferred) return;
    if (at <= now) {
      this.deferred = true;
      this.owner.clock.defer(this.flush);
    } else if (!this.timer.armed || at < this.timer.deadline) {
      this.timer.armAt(at);
    }
  }

  private readonly flush = (): void => {
    this.deferred = false;
    const o = this.owner;
    if (o.closed) return;
    const now = o.clock.now();
    // Frames queued by handlers during this run wait for the next one: no livelock.
    let budget = this.size;
    try {
      while (budget-- > 0) {
        const ma = this.main.headAt;
        const ha = this.held.headAt;
        const ring = ma <= ha ? this.main : this.held;
        if (Math.min(ma, ha) > now) break;
        const e = ring.shift();
        const b = e.buf;
        try {
          this.deliver(b.view(), e.info);
        } finally {
          o.pool.release(b);
        }
      }
    } finally {
      const next = Math.min(this.main.headAt, this.held.headAt);
      if (o.closed || next === Number.POSITIVE_INFINITY) this.timer.disarm();
      else if (next <= now) {
        this.timer.disarm();
        if (!this.deferred) {
          this.deferred = true;
          o.clock.defer(this.flush);
        }
      } else this.timer.armAt(next);
    }
  };
}

class ImpairedLinkImpl implements ImpairedLink {
  readonly counters: Counters;
  readonly pool = new FramePool(16 * 1024 * 1024);
  closed = false;
  private handler: ImpairedFrameHandler | null = null;
  private readonly txLane: Lane;
  private readonly rxLane: Lane;

  constructor(
    readonly inner: Link,
    readonly clock: Clock,
    readonly random: Random,
    counters: Counters | undefined,
  ) {
    this.counters = counters ?? new Counters();
    this.txLane = new Lane(this, 'tx', (f) => {
      inner.send(f);
    });
    this.rxLane = new Lane(this, 'rx', (f, info) => {
      const h = this.handler;
      if (h !== null) h(f, info);
    });
    const onRx = (f: Uint8Array, info?: FrameInfo): void => {
      if (this.closed) return;
      if (f.length > MAX_POOLED_FRAME) {
        this.counters.inc('drop.link.oversize');
        return;
      }
      this.rxLane.enqueue(f, info);
    };
    // A TapLink passes its receive info as a second argument; a plain Link passes only the frame.
    (inner.onFrame as (h: (f: Uint8Array, info?: FrameInfo) => void) => void).call(inner, onRx);
  }

  get name(): string {
    return this.inner.name;
  }
  get mtu(): number {
    return this.inner.mtu;
  }
  get carrier(): boolean {
    return !this.closed && this.inner.carrier;
  }
  get framesInFlight(): number {
    return this.txLane.size + this.rxLane.size;
  }

  send(frame: Uint8Array): boolean {
    if (this.closed) return false;
    if (!this.inner.carrier) return this.inner.send(frame);
    if (frame.length > MAX_POOLED_FRAME) {
      this.counters.inc('drop.link.oversize');
      return false;
    }
    return this.txLane.enqueue(frame, undefined);
  }

  onFrame(handler: ImpairedFrameHandler): void {
    if (typeof handler !== 'function') throw new InvalidArgumentError('onFrame needs a function');
    this.handler = handler;
  }

  onCarrier(handler: (up: boolean) => void): void {
    if (typeof handler !== 'function') throw new InvalidArgumentError('onCarrier needs a function');
    this.inner.onCarrier(handler);
  }

  setImpairment(spec: LinkImpairmentSpec): void {
    if (this.closed) throw new InvalidStateError(`impaired link ${this.name} is closed`);
    const s = splitLinkImpairment(spec);
    this.txLane.imp = ResolvedImpairment.of(s.tx);
    this.rxLane.imp = ResolvedImpairment.of(s.rx);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.txLane.dropAll();
    this.rxLane.dropAll();
    this.handler = null;
    this.inner.close();
  }
}

/**
 * Wraps `link` so frames crossing it in each direction suffer `impairment`, timed by `clock` and
 * decided by `random` (a seeded source replays the same fate for the same frame sequence).
 * Takes over the inner link's frame handler; closing the wrapper closes the inner link.
 * Throws InvalidArgumentError for a bad spec, before touching the link.
 */
export function impairLink(
  link: Link,
  impairment: LinkImpairmentSpec,
  clock: Clock,
  random: Random,
  opts: { counters?: Counters } = {},
): ImpairedLink {
  if (!link || typeof link.send !== 'function' || typeof link.onFrame !== 'function') {
    throw new InvalidArgumentError('impairLink needs a Link');
  }
  if (!clock || typeof clock.createTimer !== 'function')
    throw new InvalidArgumentError('impairLink needs a clock');
  if (!random || typeof random.float !== 'function') {
    throw new InvalidArgumentError('impairLink needs a random source');
  }
  const s = splitLinkImpairment(impairment);
  const l = new ImpairedLinkImpl(link, clock, random, opts.counters);
  l.setImpairment({ tx: s.tx, rx: s.rx });
  return l;
}
