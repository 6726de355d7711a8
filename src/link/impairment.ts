import { InvalidArgumentError } from '../core/errors.ts';

/**
 * What an impaired wire (impaired-lane.ts) does to the frames crossing it, in one direction. Every field is
 * optional; an empty object is a perfect wire.
 */
export interface Impairment {
  /** Probability 0..1 that a frame is dropped. */
  loss?: number;
  /**
   * Draw `loss` per MSS segment of a TCP super-segment (as a wire behind TSO loses them) instead
   * of once for the whole frame (as nftables on a veth drops a GSO packet). Default false.
   */
  lossPerSegment?: boolean;
  /**
   * Probability 0..1 that an ECN-capable packet (IPv4 or IPv6, ECT(0) or ECT(1)) is marked
   * Congestion Experienced (RFC 3168 5), as an AQM queue marks where it would drop; a super-segment
   * is marked whole. Not-ECT packets are never marked and cost no draw.
   */
  ceMark?: number;
  /** Probability 0..1 that a frame is delivered twice. */
  duplicate?: number;
  /** Probability 0..1 that a frame is held back and delivered after later ones. */
  reorder?: number;
  /** How long a reordered frame is held back at most; default max(delayMs, 1). */
  reorderDelayMs?: number;
  /** Fixed one-way latency in ms. */
  delayMs?: number;
  /**
   * Uniform extra latency 0..jitterMs. Delivery times stay non-decreasing, so jitter alone
   * never reorders frames (real jitter comes from queues, and queues are FIFO).
   */
  jitterMs?: number;
  /** Serialization rate in bits per second; frames wait in a FIFO of at most `queueBytes`. */
  rateBps?: number;
  /** Bytes the rate-limited queue holds before it drops (default 256 KiB). */
  queueBytes?: number;
}

/**
 * Impairments per direction, named from the side of the host (or stack) that owns the link: `tx`
 * is what it sends (into a switch port, into the wrapped link), `rx` what it receives. A missing
 * direction is a perfect wire.
 */
export interface DirectedImpairment {
  tx?: Impairment;
  rx?: Impairment;
}

/** A plain Impairment applies to both directions. */
export type ImpairmentSpec = Impairment | DirectedImpairment;

export const DEFAULT_QUEUE_BYTES = 256 * 1024;

const PROBABILITIES = ['loss', 'ceMark', 'duplicate', 'reorder'] as const;
const DURATIONS = ['delayMs', 'jitterMs', 'reorderDelayMs'] as const;
const KNOWN = new Set<string>([...PROBABILITIES, ...DURATIONS, 'rateBps', 'queueBytes', 'lossPerSegment']);

/**
 * Throws InvalidArgumentError unless every field is usable. Takes a plain Impairment or a
 * per-direction spec (each direction is checked).
 */
export function validateImpairment(spec: ImpairmentSpec): void {
  splitImpairment(spec);
}

function validateOne(i: Impairment): void {
  if (i === null || typeof i !== 'object') throw new InvalidArgumentError('impairment must be an object');
  for (const key of Object.keys(i)) {
    // A misspelt key would otherwise silently give a perfect wire.
    if (!KNOWN.has(key)) throw new InvalidArgumentError(`impairment: unknown field '${key}'`);
  }
  for (const k of PROBABILITIES) {
    const v = i[k];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !(v >= 0 && v <= 1)) {
      throw new InvalidArgumentError(`impairment.${k} must be a probability in 0..1, got ${String(v)}`);
    }
  }
  for (const k of DURATIONS) {
    const v = i[k];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      throw new InvalidArgumentError(`impairment.${k} must be a finite number >= 0, got ${String(v)}`);
    }
  }
  if (i.lossPerSegment !== undefined && typeof i.lossPerSegment !== 'boolean') {
    throw new InvalidArgumentError(
      `impairment.lossPerSegment must be a boolean, got ${String(i.lossPerSegment)}`,
    );
  }
  if (i.rateBps !== undefined) {
    const v = i.rateBps;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      throw new InvalidArgumentError(`impairment.rateBps must be a finite number > 0, got ${String(v)}`);
    }
  }
  if (i.queueBytes !== undefined) {
    const v = i.queueBytes;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
      throw new InvalidArgumentError(`impairment.queueBytes must be an integer >= 0, got ${String(v)}`);
    }
    if (i.rateBps === undefined) {
      throw new InvalidArgumentError('impairment.queueBytes only has a meaning together with rateBps');
    }
  }
}

function isDirected(spec: ImpairmentSpec): spec is DirectedImpairment {
  return 'tx' in spec || 'rx' in spec;
}

/**
 * The direction splitter: validates a spec and splits it into its tx and rx parts (undefined =
 * perfect wire). Throws InvalidArgumentError without side effects.
 */
export function splitImpairment(spec: ImpairmentSpec): {
  tx: Impairment | undefined;
  rx: Impairment | undefined;
} {
  if (spec === null || typeof spec !== 'object') {
    throw new InvalidArgumentError('impairment spec must be an object');
  }
  if (isDirected(spec)) {
    for (const key of Object.keys(spec)) {
      if (key !== 'tx' && key !== 'rx') {
        throw new InvalidArgumentError(
          `impairment spec mixes directions with '${key}'; put it under tx or rx`,
        );
      }
    }
    if (spec.tx !== undefined) validateOne(spec.tx);
    if (spec.rx !== undefined) validateOne(spec.rx);
    return { tx: spec.tx, rx: spec.rx };
  }
  validateOne(spec);
  return { tx: spec, rx: spec };
}

/** An Impairment with defaults filled in, read on the per-frame path. */
export class ResolvedImpairment {
  readonly loss: number;
  readonly lossPerSegment: boolean;
  readonly ceMark: number;
  readonly duplicate: number;
  readonly reorder: number;
  readonly reorderDelayMs: number;
  readonly delayMs: number;
  readonly jitterMs: number;
  /** Bytes per ms; 0 = unlimited. */
  readonly bytesPerMs: number;
  readonly queueBytes: number;

  constructor(i: Impairment) {
    this.loss = i.loss ?? 0;
    this.lossPerSegment = i.lossPerSegment ?? false;
    this.ceMark = i.ceMark ?? 0;
    this.duplicate = i.duplicate ?? 0;
    this.reorder = i.reorder ?? 0;
    this.delayMs = i.delayMs ?? 0;
    this.jitterMs = i.jitterMs ?? 0;
    this.reorderDelayMs = i.reorderDelayMs ?? Math.max(this.delayMs, 1);
    this.bytesPerMs = i.rateBps ? i.rateBps / 8000 : 0;
    this.queueBytes = i.queueBytes ?? DEFAULT_QUEUE_BYTES;
  }

  /** Null for a perfect wire, so the hot path can skip all of this with one check. */
  static of(i: Impairment | undefined): ResolvedImpairment | null {
    if (!i) return null;
    const r = new ResolvedImpairment(i);
    const perfect =
      r.loss === 0 &&
      r.ceMark === 0 &&
      r.duplicate === 0 &&
      r.reorder === 0 &&
      r.delayMs === 0 &&
      r.jitterMs === 0 &&
      r.bytesPerMs === 0;
    return perfect ? null : r;
  }
}
