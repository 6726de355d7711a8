/**
 * A Link wrapper that loses, duplicates, reorders, delays and rate-limits frames on their way
 * through a real link: the same ImpairedWire (impaired-lane.ts) as a MemorySwitch port, with the
 * same spec and per-direction semantics. It is how interop tests make loss "in Chimney's link"
 * against a kernel peer that sits behind a clean TAP: `chimney serve --impair loss=0.01,reorder=0.01`.
 *
 * Directions: `tx` is what the stack sends into the link, `rx` what the link hands the stack.
 * A plain Impairment applies to both. Frames wait in pooled buffers, and a duplicate shares its
 * buffer with the original, so a receive handler must treat its frame as read-only.
 *
 * Offloads: the wrapper presents only the Link interface, so a stack that looks for
 * `sendGso` sends MTU-sized frames through it and each lost frame is one lost segment. Frames
 * the kernel hands a TAP with TSO enabled may be super-segments; one of those counts as one
 * frame here, so a loss of it is a burst. Open the TAP without offloads (vnetHdr: false) when
 * per-segment loss matters. The receive info of a TapLink travels with each delayed frame (in
 * its pooled buffer) and is handed to the handler as its second argument.
 */
import type { Clock } from '../core/clock.ts';
import { Counters } from '../core/counters.ts';
import { InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import type { Random } from '../core/random.ts';
import { FramePool, MAX_POOLED_FRAME, type PoolBuf } from './frame-pool.ts';
import { DEFAULT_LANE_LIMIT_BYTES, ImpairedWire, type LaneCounterNames } from './impaired-lane.ts';
import {
  type DirectedImpairment,
  type Impairment,
  type ImpairmentSpec,
  splitImpairment,
} from './impairment.ts';
import type { Link } from './link.ts';

/**
 * The offload facts a link attaches to a received frame (Link's RxOffloadInfo; TapLink passes a
 * superset). Declared here by shape, mutable, so one object can be refilled for every frame.
 */
export interface FrameInfo {
  csumPartial: boolean;
  csumValid: boolean;
  gsoType: number;
  gsoSize: number;
}

/** A receive handler; `info` is present when the wrapped link supplies one (TapLink). */
export type ImpairedFrameHandler = (frame: Uint8Array, info?: FrameInfo) => void;

export interface ImpairedLink extends Link {
  readonly inner: Link;
  /** impair.<tx|rx>.loss, .dup, .reordered, .queue (queue overflow), drop.link.oversize */
  readonly counters: Counters;
  onFrame(handler: ImpairedFrameHandler): void;
  /** Replace the impairments; frames already in flight keep their fate. */
  setImpairment(spec: ImpairmentSpec): void;
  /** Frames held in either direction right now. */
  readonly framesInFlight: number;
}

/** The numeric fields, the only ones the CLI form sets. */
type NumericKey = Exclude<keyof Impairment, 'lossPerSegment'>;

const KEY_ALIASES: Record<string, NumericKey> = {
  loss: 'loss',
  ce: 'ceMark',
  'ce-mark': 'ceMark',
  cemark: 'ceMark',
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

function parseNumber(key: NumericKey, raw: string, item: string): number {
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
export function parseImpairment(text: string): DirectedImpairment {
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
  const out: DirectedImpairment = {};
  if (Object.keys(tx).length) out.tx = tx;
  if (Object.keys(rx).length) out.rx = rx;
  splitImpairment(out);
  return out;
}

function laneCounters(dir: 'tx' | 'rx'): LaneCounterNames {
  return {
    loss: `impair.${dir}.loss`,
    marked: `impair.${dir}.ce-marked`,
    dup: `impair.${dir}.dup`,
    reordered: `impair.${dir}.reordered`,
    queue: `impair.${dir}.queue`,
  };
}

class ImpairedLinkImpl implements ImpairedLink {
  readonly counters: Counters;
  private readonly pool = new FramePool(16 * 1024 * 1024);
  private readonly wire: ImpairedWire;
  private closed = false;
  private handler: ImpairedFrameHandler | null = null;
  /** Reused receive info of a frame that waited (borrowed by the handler, like the frame). */
  private readonly rxInfo: FrameInfo = { csumPartial: false, csumValid: false, gsoType: 0, gsoSize: 0 };

  constructor(
    readonly inner: Link,
    private readonly clock: Clock,
    random: Random,
    counters: Counters | undefined,
    limitBytes: number,
  ) {
    this.counters = counters ?? new Counters();
    this.wire = new ImpairedWire({
      clock,
      random,
      pool: this.pool,
      counters: this.counters,
      limitBytes,
      names: { tx: laneCounters('tx'), rx: laneCounters('rx') },
      deliver: { tx: this.deliverTx, rx: this.deliverRx },
    });
    // A TapLink passes its receive info as a second argument; a plain Link passes only the frame.
    (inner.onFrame as (h: (f: Uint8Array, info?: FrameInfo) => void) => void).call(inner, this.onRx);
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
    return this.wire.size;
  }

  send(frame: Uint8Array): boolean {
    if (this.closed) return false;
    if (!this.inner.carrier) return this.inner.send(frame);
    if (frame.length > MAX_POOLED_FRAME) {
      this.counters.inc('drop.link.oversize');
      return false;
    }
    const lane = this.wire.tx;
    if (lane.idle) return this.inner.send(frame);
    return lane.enqueue(this.pool.take(frame), this.clock.now());
  }

  onFrame(handler: ImpairedFrameHandler): void {
    if (typeof handler !== 'function') throw new InvalidArgumentError('onFrame needs a function');
    this.handler = handler;
  }

  onCarrier(handler: (up: boolean) => void): void {
    if (typeof handler !== 'function') throw new InvalidArgumentError('onCarrier needs a function');
    this.inner.onCarrier(handler);
  }

  setImpairment(spec: ImpairmentSpec): void {
    if (this.closed) throw new InvalidStateError(`impaired link ${this.name} is closed`);
    this.wire.impair(spec);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.wire.dropAll();
    this.handler = null;
    this.inner.close();
  }

  private readonly onRx = (f: Uint8Array, info?: FrameInfo): void => {
    if (this.closed) return;
    if (f.length > MAX_POOLED_FRAME) {
      this.counters.inc('drop.link.oversize');
      return;
    }
    const lane = this.wire.rx;
    if (lane.idle) {
      this.handler?.(f, info);
      return;
    }
    const b = this.pool.take(f);
    if (info) {
      b.hasInfo = true;
      b.csumPartial = info.csumPartial;
      b.csumValid = info.csumValid;
      b.gsoType = info.gsoType;
      b.gsoSize = info.gsoSize;
    }
    lane.enqueue(b, this.clock.now());
  };

  private readonly deliverTx = (b: PoolBuf): void => {
    try {
      this.inner.send(b.view());
    } finally {
      this.pool.release(b);
    }
  };

  private readonly deliverRx = (b: PoolBuf): void => {
    try {
      const h = this.handler;
      if (h === null) return;
      let info: FrameInfo | undefined;
      if (b.hasInfo) {
        info = this.rxInfo;
        info.csumPartial = b.csumPartial;
        info.csumValid = b.csumValid;
        info.gsoType = b.gsoType;
        info.gsoSize = b.gsoSize;
      }
      h(b.view(), info);
    } finally {
      this.pool.release(b);
    }
  };
}

/**
 * Wraps `link` so frames crossing it in each direction suffer `impairment`, timed by `clock` and
 * decided by `random` (a seeded source replays the same fate for the same frame sequence).
 * Takes over the inner link's frame handler; closing the wrapper closes the inner link.
 * Throws InvalidArgumentError for a bad spec, before touching the link.
 */
export function impairLink(
  link: Link,
  impairment: ImpairmentSpec,
  clock: Clock,
  random: Random,
  opts: {
    counters?: Counters;
    /** Bytes each direction may hold before it drops, counted as .queue (default 64 MiB). */
    laneLimitBytes?: number;
  } = {},
): ImpairedLink {
  if (!link || typeof link.send !== 'function' || typeof link.onFrame !== 'function') {
    throw new InvalidArgumentError('impairLink needs a Link');
  }
  if (!clock || typeof clock.createTimer !== 'function')
    throw new InvalidArgumentError('impairLink needs a clock');
  if (!random || typeof random.float !== 'function') {
    throw new InvalidArgumentError('impairLink needs a random source');
  }
  const limit = opts.laneLimitBytes ?? DEFAULT_LANE_LIMIT_BYTES;
  if (typeof limit !== 'number' || !(limit > 0)) {
    throw new InvalidArgumentError(`laneLimitBytes must be > 0, got ${String(limit)}`);
  }
  splitImpairment(impairment);
  const l = new ImpairedLinkImpl(link, clock, random, opts.counters, limit);
  l.setImpairment(impairment);
  return l;
}
