import { InvalidArgumentError } from '../../core/errors.ts';
import { type CongestionAlgorithm, DEFAULT_TCP_CACHED, type TcpCached } from '../../state/tcp-state.ts';

/** An IPv4 address given by a caller, as an unsigned 32-bit integer. */
export function checkU32(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new InvalidArgumentError(`${what} must be an IPv4 address as an unsigned 32-bit integer`);
  }
  return v;
}

/**
 * An address as TCP takes it: an IPv4 u32, or (where `v6`) an IPv6 handle of the host's
 * AddressTable (ANY6 included; the caller decides where the wildcard is allowed).
 */
export function checkAddress(v: unknown, what: string, v6: boolean): number {
  if (v6 && typeof v === 'number' && Number.isInteger(v) && v >= 0x1_0000_0000 && v < 2 ** 37) return v;
  return checkU32(v, what);
}

export function checkPort(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) {
    throw new InvalidArgumentError(`${what} must be an integer port in 1..65535`);
  }
  return v;
}

const POSITIVE_INT_FIELDS: readonly (keyof TcpCached)[] = [
  'keepIdleMs',
  'keepIntvlMs',
  'keepCount',
  'sndBufSize',
  'rcvBufSize',
  'minRtoMs',
  'maxRtoMs',
];
const NON_NEGATIVE_FIELDS: readonly (keyof TcpCached)[] = [
  'maxRetransmits',
  'maxSynRetransmits',
  'timeWaitMs',
  'delayedAckMs',
  'tos',
];

/** Merge per-socket options over defaults, refusing anything the engine cannot run with. */
export function mergeTcpOptions(base: Readonly<TcpCached>, opts?: Partial<TcpCached>): TcpCached {
  const out: TcpCached = { ...base };
  if (!opts) return out;
  for (const k of Object.keys(opts) as (keyof TcpCached)[]) {
    if (!(k in DEFAULT_TCP_CACHED) && k !== 'rcvBufLocked')
      throw new InvalidArgumentError(`unknown TCP option ${String(k)}`);
    const v = opts[k];
    if (v === undefined) continue;
    (out as unknown as Record<string, unknown>)[k] = v;
  }
  for (const k of POSITIVE_INT_FIELDS) {
    const v = out[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      throw new InvalidArgumentError(`TCP option ${k} must be a positive number`);
    }
  }
  for (const k of NON_NEGATIVE_FIELDS) {
    const v = out[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      throw new InvalidArgumentError(`TCP option ${k} must be a non-negative number`);
    }
  }
  if (!Number.isInteger(out.ttl) || out.ttl < 1 || out.ttl > 255) {
    throw new InvalidArgumentError('TCP option ttl must be in 1..255');
  }
  if (out.sndBufSize > 0x40000000 || out.rcvBufSize > 0x40000000) {
    throw new InvalidArgumentError('TCP buffer sizes are limited to 1 GiB');
  }
  if (out.minRtoMs > out.maxRtoMs) throw new InvalidArgumentError('minRtoMs must not exceed maxRtoMs');
  if (out.rcvBufLocked !== undefined && typeof out.rcvBufLocked !== 'boolean')
    throw new InvalidArgumentError('TCP option rcvBufLocked must be a boolean');
  for (const k of ['keepAlive', 'noDelay'] as const) {
    if (typeof out[k] !== 'boolean') throw new InvalidArgumentError(`TCP option ${k} must be a boolean`);
  }
  const algos: readonly CongestionAlgorithm[] = ['cubic', 'newreno'];
  if (!algos.includes(out.congestion))
    throw new InvalidArgumentError(`unknown congestion control ${out.congestion}`);
  return out;
}
