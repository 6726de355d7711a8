import { StateValidationError } from '../core/errors.ts';
import { ByteRing } from './byte-ring.ts';
import type { NeighborState } from './neighbor-state.ts';
import type { OffloadTree } from './offload-tree.ts';
import type { PathState } from './path-state.ts';
import {
  type CongestionAlgorithm,
  FIRST_DATA_PENDING,
  MAX_QUICK_ACKS,
  RACK_REO_PERSIST,
  RACK_REORDERING_MAX,
  RACK_REORDERING_MIN,
  TCP_ECN_BITS,
  TcpEcn,
  type TcpState,
  TcpStateId,
} from './tcp-state.ts';

/*
 * The schema of the three state objects: one table per object kind, one row per field. The
 * codec (state-codec.ts) walks these rows to encode and decode, and the validator walks them to
 * check that every value fits its type before the semantic rules below look at it; so a field
 * added to a state object is one row here, and the coverage test notices a missing row.
 */

/**
 * Value domains, which are also wire encodings:
 * - u8/u16/u32: unsigned integers of that width;
 * - addr: an IPv4 address (u32) or an IPv6 address handle in (2^32, 2^37) of the path's table;
 *   on the wire a u32 (0 for IPv6: the bytes travel in the path's address block);
 * - i32: signed 32-bit integer;
 * - mac: a 48-bit MAC as a number, or -1 (unresolved);
 * - num: a finite, non-negative float (RTT estimates, windows that may be fractional, durations);
 * - time: an absolute clock time in ms: finite, or Infinity (timer not running); travels as a
 *   delta from the sender's clock, with -1 ("never") and Infinity kept as they are;
 * - bool, cc (congestion algorithm enum), state (TCP state id);
 * - ring: a ByteRing's bytes; ooo: out-of-order segments; ranges: a list of sequence ranges.
 */
export type FieldType =
  | 'u8'
  | 'u16'
  | 'u32'
  | 'addr'
  | 'i32'
  | 'mac'
  | 'num'
  | 'time'
  | 'bool'
  | 'cc'
  | 'state'
  | 'ring'
  | 'ooo'
  | 'ranges';

/** Which soft sub-block a soft field travels in (a sender may leave each out). */
export type SoftGroup = 'scalars' | 'ooo' | 'sack';

export interface FieldSpec<P extends string> {
  /** Sub-object of the state object (`top` = a property of the state object itself). */
  readonly part: P;
  readonly key: string;
  readonly type: FieldType;
  /** Dotted name used in errors, e.g. `delegated.sndUna`. */
  readonly name: string;
  /** Present on soft fields only. */
  readonly soft?: SoftGroup;
  /** For rings: the `cached` field that bounds the ring's capacity. */
  readonly capacity?: string;
  /** The codec version that first carries the field (absent: every version this build reads). */
  readonly since?: number;
}

export type NeighborPart = 'const' | 'cached' | 'delegated';
export type PathPart = 'const' | 'cached' | 'top';
/** `cubic` is `soft.cubic`. */
export type TcpPart = 'const' | 'cached' | 'delegated' | 'soft' | 'cubic';

function f<P extends string>(
  part: P,
  key: string,
  type: FieldType,
  soft?: SoftGroup,
  since?: number,
): FieldSpec<P> {
  const name = part === 'top' ? key : part === 'cubic' ? `soft.cubic.${key}` : `${part}.${key}`;
  const spec: FieldSpec<P> = soft === undefined ? { part, key, type, name } : { part, key, type, name, soft };
  return since === undefined ? spec : { ...spec, since };
}

function ring<P extends string>(part: P, key: string, capacity: string): FieldSpec<P> {
  return { part, key, type: 'ring', name: `${part}.${key}`, capacity };
}

export const NEIGHBOR_FIELDS: readonly FieldSpec<NeighborPart>[] = [
  f('const', 'srcMac', 'mac'),
  f('const', 'vlanId', 'i32'),
  f('const', 'ip', 'u32'),
  f('cached', 'dstMac', 'mac'),
  f('cached', 'hostReachableAt', 'time'),
  f('delegated', 'nicReachableAt', 'time'),
];

/** `neighbor` is not a row: it travels as the index of the neighbor record. */
export const PATH_FIELDS: readonly FieldSpec<PathPart>[] = [
  f('const', 'localIp', 'addr'),
  f('const', 'remoteIp', 'addr'),
  f('cached', 'mtu', 'u32'),
  f('cached', 'ttl', 'u8'),
  f('cached', 'tos', 'u8'),
  f('top', 'ifIndex', 'u32'),
];

/** `path` is not a row: it travels as the index of the path record. Order follows createTcpState. */
export const TCP_FIELDS: readonly FieldSpec<TcpPart>[] = [
  f('const', 'localIp', 'addr'),
  f('const', 'localPort', 'u16'),
  f('const', 'remoteIp', 'addr'),
  f('const', 'remotePort', 'u16'),
  f('const', 'tsEnabled', 'bool'),
  f('const', 'sackEnabled', 'bool'),
  f('const', 'wsEnabled', 'bool'),
  f('const', 'sndWscale', 'u8'),
  f('const', 'rcvWscale', 'u8'),
  f('const', 'remoteMss', 'u16'),
  f('const', 'localMss', 'u16'),

  f('cached', 'keepAlive', 'bool'),
  f('cached', 'keepIdleMs', 'num'),
  f('cached', 'keepIntvlMs', 'num'),
  f('cached', 'keepCount', 'u32'),
  f('cached', 'noDelay', 'bool'),
  f('cached', 'maxRetransmits', 'u32'),
  f('cached', 'maxSynRetransmits', 'u32'),
  f('cached', 'ttl', 'u8'),
  f('cached', 'tos', 'u8'),
  f('cached', 'sndBufSize', 'u32'),
  f('cached', 'rcvBufSize', 'u32'),
  f('cached', 'timeWaitMs', 'num'),
  f('cached', 'delayedAckMs', 'num'),
  f('cached', 'minRtoMs', 'num'),
  f('cached', 'maxRtoMs', 'num'),
  f('cached', 'congestion', 'cc'),

  f('delegated', 'state', 'state'),
  f('delegated', 'iss', 'u32'),
  f('delegated', 'irs', 'u32'),
  f('delegated', 'sndUna', 'u32'),
  f('delegated', 'sndNxt', 'u32'),
  f('delegated', 'sndMax', 'u32'),
  f('delegated', 'sndWnd', 'u32'),
  f('delegated', 'maxSndWnd', 'u32'),
  f('delegated', 'sndWl1', 'u32'),
  f('delegated', 'sndWl2', 'u32'),
  f('delegated', 'rcvNxt', 'u32'),
  f('delegated', 'rcvAdv', 'u32'),
  f('delegated', 'cwnd', 'num'),
  f('delegated', 'ssthresh', 'num'),
  f('delegated', 'srtt', 'num'),
  f('delegated', 'rttvar', 'num'),
  f('delegated', 'rto', 'num'),
  f('delegated', 'tsRecent', 'u32'),
  f('delegated', 'tsRecentAt', 'time'),
  f('delegated', 'dupAcks', 'u32'),
  f('delegated', 'backoff', 'u32'),
  f('delegated', 'rtxDeadline', 'time'),
  f('delegated', 'persistDeadline', 'time'),
  f('delegated', 'keepaliveDeadline', 'time'),
  f('delegated', 'timeWaitDeadline', 'time'),
  f('delegated', 'keepaliveProbes', 'u32'),
  f('delegated', 'finQueued', 'bool'),
  f('delegated', 'finSent', 'bool'),
  f('delegated', 'finReceived', 'bool'),
  f('delegated', 'segmentsIn', 'num'),
  f('delegated', 'segmentsOut', 'num'),
  f('delegated', 'retransmits', 'num'),
  f('delegated', 'bytesIn', 'num'),
  f('delegated', 'bytesOut', 'num'),
  f('delegated', 'resetsIn', 'num'),
  f('delegated', 'resetsOut', 'num'),
  ring('delegated', 'sendBuffer', 'sndBufSize'),
  ring('delegated', 'recvBuffer', 'rcvBufSize'),
  f('delegated', 'lastRecvAt', 'time'),
  f('delegated', 'lastSendAt', 'time'),
  f('delegated', 'lastAckSent', 'u32'),
  f('delegated', 'persistBackoff', 'u32'),
  f('delegated', 'readClosed', 'bool'),
  f('delegated', 'ecn', 'u8', undefined, 12),
  f('delegated', 'ecnCwrEnd', 'u32', undefined, 12),

  f('soft', 'ooo', 'ooo', 'ooo'),
  f('soft', 'sacked', 'ranges', 'sack'),
  f('soft', 'recvSackRecent', 'ranges', 'sack'),
  f('soft', 'inRecovery', 'bool', 'scalars'),
  f('soft', 'recoveryPoint', 'u32', 'scalars'),
  f('soft', 'highRxt', 'u32', 'scalars'),
  f('soft', 'rxtAt', 'time', 'scalars'),
  f('soft', 'rttSeq', 'u32', 'scalars'),
  f('soft', 'rttSentAt', 'time', 'scalars'),
  f('soft', 'rttActive', 'bool', 'scalars'),
  f('soft', 'delayedAckDeadline', 'time', 'scalars'),
  f('soft', 'unackedSegments', 'u32', 'scalars'),
  f('soft', 'caBytesAcked', 'num', 'scalars'),
  f('cubic', 'wMax', 'num', 'scalars'),
  f('cubic', 'k', 'num', 'scalars'),
  f('cubic', 'epochStart', 'time', 'scalars'),
  f('cubic', 'originPoint', 'num', 'scalars'),
  f('cubic', 'wEst', 'num', 'scalars'),
  f('cubic', 'cwndPrior', 'num', 'scalars'),
  f('cubic', 'cwndFrac', 'num', 'scalars'),
  f('cubic', 'afterRto', 'bool', 'scalars'),
  f('soft', 'challengeWindowStart', 'time', 'scalars'),
  f('soft', 'challengeCount', 'u32', 'scalars'),
  f('soft', 'ackNow', 'bool', 'scalars'),
  f('soft', 'oooFin', 'bool', 'scalars'),
  f('soft', 'oooFinSeq', 'u32', 'scalars'),
  f('soft', 'rackLostEdge', 'u32', 'scalars'),
  f('soft', 'tlpDeadline', 'time', 'scalars'),
  f('soft', 'tlpInFlight', 'bool', 'scalars'),
  f('soft', 'tlpHighSeq', 'u32', 'scalars'),
  f('soft', 'persistProbesOut', 'u32', 'scalars'),
  f('soft', 'lastOowAckAt', 'time', 'scalars'),
  f('soft', 'undoCwnd', 'num', 'scalars'),
  f('soft', 'undoSsthresh', 'num', 'scalars'),
  f('soft', 'undoRetrans', 'num', 'scalars'),
  f('soft', 'undoLow', 'u32', 'scalars'),
  f('soft', 'undoArmed', 'bool', 'scalars'),
  f('soft', 'undoWMax', 'num', 'scalars'),
  f('soft', 'undoTsVal', 'u32', 'scalars'),
  f('soft', 'prrDelivered', 'num', 'scalars'),
  f('soft', 'prrOut', 'num', 'scalars'),
  f('soft', 'prrPriorCwnd', 'num', 'scalars'),
  f('soft', 'frto', 'u8', 'scalars'),
  f('soft', 'hsWindowEnd', 'u32', 'scalars'),
  f('soft', 'hsLastRoundMinRtt', 'num', 'scalars'),
  f('soft', 'hsCurrentRoundMinRtt', 'num', 'scalars'),
  f('soft', 'hsRttSamples', 'u32', 'scalars'),
  f('soft', 'hsInCss', 'bool', 'scalars'),
  f('soft', 'hsCssBaselineMinRtt', 'num', 'scalars'),
  f('soft', 'hsCssRounds', 'u32', 'scalars'),
  f('soft', 'smallSentEnd', 'u32', 'scalars', 4),
  f('soft', 'reordering', 'u16', 'scalars', 5),
  f('soft', 'reorderingSeen', 'bool', 'scalars', 5),
  f('soft', 'reoWndMult', 'u8', 'scalars', 5),
  f('soft', 'reoWndPersist', 'u8', 'scalars', 5),
  f('soft', 'rtxBytes', 'num', 'scalars', 5),
  f('soft', 'dsackBytes', 'num', 'scalars', 5),
  f('soft', 'undoNxt', 'u32', 'scalars', 6),
  f('soft', 'repaired', 'bool', 'scalars', 7),
  f('soft', 'quickAcks', 'i32', 'scalars', 8),
  f('soft', 'pingpong', 'bool', 'scalars', 8),
  f('soft', 'lastDataAt', 'time', 'scalars', 8),
  f('soft', 'rcvMss', 'u32', 'scalars', 9),
  f('soft', 'ackPushed', 'u8', 'scalars', 9),
  f('soft', 'rcvClamp', 'u32', 'scalars', 10),
  f('soft', 'rcvSpace', 'u32', 'scalars', 10),
  f('soft', 'rcvSpaceSeq', 'u32', 'scalars', 10),
  f('soft', 'rcvSpaceAt', 'time', 'scalars', 10),
  f('soft', 'rcvRtt', 'num', 'scalars', 10),
  f('soft', 'rcvRttSeq', 'u32', 'scalars', 10),
  f('soft', 'rcvRttAt', 'time', 'scalars', 10),
  f('soft', 'rcvRttEcr', 'u32', 'scalars', 10),
  f('soft', 'rcvSsthresh', 'u32', 'scalars', 11),
  f('soft', 'rcvLocked', 'bool', 'scalars', 11),
];

/** Wire code of each congestion algorithm is its index here; append only. */
export const CONGESTION_CODES: readonly CongestionAlgorithm[] = ['cubic', 'newreno'];

/** Highest TCP state id (TIME_WAIT). */
export const MAX_TCP_STATE_ID = 10;
export const MAX_WSCALE = 14;
export const MIN_MSS = 64;
/** 65535 minus the IPv4 and TCP headers. */
export const MAX_MSS = 65495;
/** The largest window a header can name (65535 at the largest shift, 14): what a clamp may reach. */
const MAX_RCV_CLAMP = 2 ** 30;
export const MIN_MTU = 68;
/** RFC 8200 5: every IPv6 link carries 1280 bytes. */
export const MIN_MTU6 = 1280;
export const MAX_MTU = 65535;
/** IPv6 address handles lie in (2^32, 2^37) (`AddressTable`, which `state` may not import). */
export const TWO_32 = 0x1_0000_0000;
const ADDR_LIMIT = 2 ** 37;
/** Sequence distances TCP can compare unambiguously are below 2^31. */
const HALF_SEQ = 0x80000000;

export function tcpPart(s: TcpState, part: TcpPart): Record<string, unknown> {
  switch (part) {
    case 'const':
      return s.const as unknown as Record<string, unknown>;
    case 'cached':
      return s.cached as unknown as Record<string, unknown>;
    case 'delegated':
      return s.delegated as unknown as Record<string, unknown>;
    case 'soft':
      return s.soft as unknown as Record<string, unknown>;
    case 'cubic':
      return s.soft.cubic as unknown as Record<string, unknown>;
  }
}

export function neighborPart(n: NeighborState, part: NeighborPart): Record<string, unknown> {
  return n[part] as unknown as Record<string, unknown>;
}

export function pathPart(p: PathState, part: PathPart): Record<string, unknown> {
  return (part === 'top' ? p : p[part]) as unknown as Record<string, unknown>;
}

function fail(field: string, message: string): never {
  throw new StateValidationError(field, message);
}

function isInt(v: unknown, lo: number, hi: number): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= lo && v <= hi;
}

/** Seq ranges: each non-empty and shorter than half the sequence space. */
function checkRanges(v: unknown, name: string, sorted: boolean): void {
  if (!Array.isArray(v)) fail(name, 'not a list of ranges');
  let prevEnd = 0;
  for (let i = 0; i < v.length; i++) {
    const r = v[i] as { start?: unknown; end?: unknown } | null;
    if (r === null || typeof r !== 'object') fail(name, `range ${i} is not an object`);
    if (!isInt(r.start, 0, 0xffffffff) || !isInt(r.end, 0, 0xffffffff)) fail(name, `range ${i} not u32`);
    const len = ((r.end as number) - (r.start as number)) >>> 0;
    if (len === 0 || len >= HALF_SEQ) fail(name, `range ${i} is empty or reversed`);
    if (sorted && i > 0 && (((r.start as number) - prevEnd) | 0) < 0) {
      fail(name, `range ${i} overlaps or is out of order`);
    }
    prevEnd = r.end as number;
  }
}

/** Check that a value belongs to its field's domain (and so encodes without loss). */
export function checkDomain(type: FieldType, v: unknown, name: string): void {
  switch (type) {
    case 'u8':
      if (!isInt(v, 0, 0xff)) fail(name, `expected an integer 0..255, got ${String(v)}`);
      return;
    case 'u16':
      if (!isInt(v, 0, 0xffff)) fail(name, `expected an integer 0..65535, got ${String(v)}`);
      return;
    case 'u32':
      if (!isInt(v, 0, 0xffffffff)) fail(name, `expected a u32, got ${String(v)}`);
      return;
    case 'addr':
      if (!isInt(v, 0, 0xffffffff) && !isInt(v, TWO_32 + 1, ADDR_LIMIT - 1))
        fail(name, `expected an IPv4 address or an IPv6 address handle, got ${String(v)}`);
      return;
    case 'i32':
      if (!isInt(v, -0x80000000, 0x7fffffff)) fail(name, `expected an i32, got ${String(v)}`);
      return;
    case 'mac':
      if (!isInt(v, -1, 0xffffffffffff)) fail(name, `expected a 48-bit MAC or -1, got ${String(v)}`);
      return;
    case 'num':
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
        fail(name, `expected a finite non-negative number, got ${String(v)}`);
      }
      return;
    case 'time':
      if (typeof v !== 'number' || Number.isNaN(v) || v === Number.NEGATIVE_INFINITY) {
        fail(name, `expected a clock time or Infinity, got ${String(v)}`);
      }
      return;
    case 'bool':
      if (typeof v !== 'boolean') fail(name, `expected a boolean, got ${String(v)}`);
      return;
    case 'cc':
      if (!CONGESTION_CODES.includes(v as CongestionAlgorithm)) {
        fail(name, `unknown congestion algorithm ${String(v)}`);
      }
      return;
    case 'state':
      if (!isInt(v, 0, MAX_TCP_STATE_ID)) fail(name, `state id ${String(v)} outside 0..${MAX_TCP_STATE_ID}`);
      return;
    case 'ring':
      if (!(v instanceof ByteRing)) fail(name, 'not a ByteRing');
      return;
    case 'ooo': {
      if (!Array.isArray(v)) fail(name, 'not a list of segments');
      let prevEnd = 0;
      for (let i = 0; i < v.length; i++) {
        const seg = v[i] as { seq?: unknown; data?: unknown } | null;
        if (seg === null || typeof seg !== 'object') fail(name, `segment ${i} is not an object`);
        if (!isInt(seg.seq, 0, 0xffffffff)) fail(name, `segment ${i} seq not u32`);
        if (!(seg.data instanceof Uint8Array) || seg.data.length === 0)
          fail(name, `segment ${i} has no data`);
        if (i > 0 && (((seg.seq as number) - prevEnd) | 0) < 0) {
          fail(name, `segment ${i} overlaps or is out of order`);
        }
        prevEnd = ((seg.seq as number) + seg.data.length) >>> 0;
      }
      return;
    }
    case 'ranges':
      checkRanges(v, name, false);
      return;
  }
}

/** Condition, over `v`, that a value is in its type's domain (the fast path of checkDomain). */
function domainCond(type: FieldType): string {
  switch (type) {
    case 'u8':
      return '(v & 0xff) === v';
    case 'u16':
      return '(v & 0xffff) === v';
    case 'u32':
      return '(v >>> 0) === v';
    case 'addr':
      return `(v >>> 0) === v || (Number.isInteger(v) && v > ${TWO_32} && v < ${ADDR_LIMIT})`;
    case 'i32':
      return '(v | 0) === v';
    case 'mac':
      return 'Number.isInteger(v) && v >= -1 && v <= 0xffffffffffff';
    case 'num':
      return "typeof v === 'number' && v >= 0 && v < Infinity";
    case 'time':
      return "typeof v === 'number' && v > -Infinity";
    case 'bool':
      return "typeof v === 'boolean'";
    case 'cc':
      return CONGESTION_CODES.map((c) => `v === ${JSON.stringify(c)}`).join(' || ');
    case 'state':
      return `(v >>> 0) === v && v <= ${MAX_TCP_STATE_ID}`;
    case 'ring':
      return 'v instanceof ByteRing';
    default:
      // Non-empty lists are checked element by element by checkDomain itself.
      return 'Array.isArray(v) && v.length === 0';
  }
}

/*
 * The domain checks run for every field of every connection of a batch, so they are generated
 * once from the tables as straight-line code (a generic loop over the rows costs several times
 * more). A value that fails the fast condition goes to checkDomain, which throws the precise error.
 */
function genDomainCheck<P extends string>(
  fields: readonly FieldSpec<P>[],
  access: Record<P, string>,
): (s: unknown) => void {
  const parts = [...new Set(fields.map((fs) => fs.part))];
  const lines = ['let v;'];
  for (const part of parts) {
    const expr = access[part];
    lines.push(`const p_${part} = ${expr};`);
    lines.push(
      `if (p_${part} === null || typeof p_${part} !== 'object') fail(${JSON.stringify(part)}, 'missing');`,
    );
  }
  fields.forEach((fs, i) => {
    if (!/^[A-Za-z_$][\w$]*$/.test(fs.key)) throw new TypeError(`field ${fs.name} is not an identifier`);
    lines.push(
      `v = p_${fs.part}.${fs.key}; if (!(${domainCond(fs.type)})) checkDomain(fields[${i}].type, v, fields[${i}].name);`,
    );
  });
  const body = new Function(
    'fields',
    'checkDomain',
    'fail',
    'ByteRing',
    `return (s) => {\n${lines.join('\n')}\n};`,
  );
  return body(fields, checkDomain, fail, ByteRing) as (s: unknown) => void;
}

const checkNeighborDomains = genDomainCheck(NEIGHBOR_FIELDS, {
  const: 's.const',
  cached: 's.cached',
  delegated: 's.delegated',
});
const checkPathDomains = genDomainCheck(PATH_FIELDS, { const: 's.const', cached: 's.cached', top: 's' });
const checkTcpDomains = genDomainCheck(TCP_FIELDS, {
  const: 's.const',
  cached: 's.cached',
  delegated: 's.delegated',
  soft: 's.soft',
  cubic: '(s.soft ?? {}).cubic',
});

/**
 * NDIS chimney refuses to offload a connection that has no synchronized sequence space yet, or
 * that only lingers to absorb stray segments.
 */
export function isOffloadable(s: TcpState): boolean {
  const st = s.delegated.state;
  return (
    st !== TcpStateId.CLOSED &&
    st !== TcpStateId.LISTEN &&
    st !== TcpStateId.SYN_SENT &&
    st !== TcpStateId.SYN_RECEIVED &&
    st !== TcpStateId.TIME_WAIT &&
    isInt(st, 0, MAX_TCP_STATE_ID)
  );
}

export function validateNeighborState(n: NeighborState): void {
  if (n === null || typeof n !== 'object') fail('neighbor', 'not an object');
  checkNeighborDomains(n);
  const c = n.const;
  if (c.srcMac < 0) fail('const.srcMac', 'our own MAC must be known');
  if (c.vlanId < -1 || c.vlanId > 4094) fail('const.vlanId', `VLAN id ${c.vlanId} outside -1..4094`);
  const ip6 = c.ip6;
  if (ip6 === undefined) {
    if (c.ip === 0) fail('const.ip', 'address 0');
    return;
  }
  if (!(ip6 instanceof Uint8Array) || ip6.length !== 16) fail('const.ip6', 'not 16 bytes');
  if (c.ip !== 0) fail('const.ip', 'an IPv6 neighbor has no IPv4 address');
  if (ip6[0] === 0xff) fail('const.ip6', 'a multicast address is no neighbor');
  if (isZero(ip6, 0)) fail('const.ip6', 'the unspecified address is no neighbor');
}

function isZero(b: Uint8Array, off: number): boolean {
  for (let i = 0; i < 16; i++) if (b[off + i] !== 0) return false;
  return true;
}

/** The family of a path checked: both ends IPv6 handles of its table, and its neighbor IPv6. */
function checkPathFamily(p: PathState): void {
  const v6 = p.const.remoteIp > 0xffffffff;
  if (v6 !== p.const.localIp > 0xffffffff) fail('const.localIp', 'the two ends are of different families');
  const nb6 = p.neighbor?.const?.ip6 !== undefined;
  if (!v6) {
    if (nb6) fail('neighbor', 'an IPv4 path through an IPv6 neighbor');
    return;
  }
  if (!nb6) fail('neighbor', 'an IPv6 path through an IPv4 neighbor');
  const book = p.addrs;
  if (book === null || typeof book !== 'object' || typeof book.bytes !== 'function')
    fail('addrs', 'an IPv6 path without the table of its address handles');
  let remote: Uint8Array | null = null;
  try {
    remote = book.bytes(p.const.remoteIp);
    book.bytes(p.const.localIp);
  } catch {
    remote = null;
  }
  if (remote === null) fail('const.remoteIp', "not a handle of the path's address table");
  if (remote[0] === 0xff) fail('const.remoteIp', 'a multicast peer');
}

export function validatePathState(p: PathState): void {
  if (p === null || typeof p !== 'object') fail('path', 'not an object');
  checkPathDomains(p);
  if (p.const.localIp === 0) fail('const.localIp', 'address 0');
  if (p.const.remoteIp === 0) fail('const.remoteIp', 'address 0');
  checkPathFamily(p);
  const mtu = p.cached.mtu;
  if (mtu < MIN_MTU || mtu > MAX_MTU) fail('cached.mtu', `MTU ${mtu} outside ${MIN_MTU}..${MAX_MTU}`);
  if (mtu < MIN_MTU6 && p.const.remoteIp > 0xffffffff) fail('cached.mtu', `IPv6 MTU ${mtu} below 1280`);
  if (p.cached.ttl < 1) fail('cached.ttl', 'TTL 0');
}

/**
 * Field-by-field check of one connection: every value in its domain, then the rules that tie
 * fields together. Throws StateValidationError naming the first offending field.
 */
export function validateTcpState(s: TcpState): void {
  if (s === null || typeof s !== 'object') fail('tcp', 'not an object');
  checkTcpDomains(s);
  checkTcpRules(s);
}

/**
 * The rules a pure ACK sent from the state rests on (sendStateAck): the tuple, the scales and
 * segment sizes, the receive window's edge and buffer, the receiver's ACK marks, the ECN bits and
 * the TTL. Part of checkTcpRules, and all of them that validateAckOn checks.
 */
function checkAckRules(s: TcpState): void {
  const c = s.const;
  const k = s.cached;
  const d = s.delegated;
  const rk = s.soft;
  if (!isOffloadable(s)) fail('delegated.state', `state ${d.state} cannot be offloaded`);
  if (c.localIp === 0) fail('const.localIp', 'address 0');
  if (c.remoteIp === 0) fail('const.remoteIp', 'address 0');
  if (c.localPort === 0) fail('const.localPort', 'port 0');
  if (c.remotePort === 0) fail('const.remotePort', 'port 0');
  if (c.sndWscale > MAX_WSCALE) fail('const.sndWscale', `window scale ${c.sndWscale} > ${MAX_WSCALE}`);
  if (c.rcvWscale > MAX_WSCALE) fail('const.rcvWscale', `window scale ${c.rcvWscale} > ${MAX_WSCALE}`);
  if (!c.wsEnabled && (c.sndWscale !== 0 || c.rcvWscale !== 0)) {
    fail('const.wsEnabled', 'window scales set without window scaling');
  }
  if (c.remoteMss < MIN_MSS || c.remoteMss > MAX_MSS)
    fail('const.remoteMss', `MSS ${c.remoteMss} out of range`);
  if (c.localMss < MIN_MSS || c.localMss > MAX_MSS) fail('const.localMss', `MSS ${c.localMss} out of range`);
  if (rk.quickAcks < FIRST_DATA_PENDING || rk.quickAcks > MAX_QUICK_ACKS)
    fail('soft.quickAcks', `${rk.quickAcks} quick ACKs outside ${FIRST_DATA_PENDING}..${MAX_QUICK_ACKS}`);
  if (rk.rcvMss > MAX_MSS) fail('soft.rcvMss', `segment size ${rk.rcvMss} above ${MAX_MSS}`);
  if (rk.ackPushed > 3) fail('soft.ackPushed', `${rk.ackPushed} is not a set of ICSK_ACK_PUSHED, PUSHED2`);
  if (rk.rcvClamp > MAX_RCV_CLAMP)
    fail('soft.rcvClamp', `window clamp ${rk.rcvClamp} above ${MAX_RCV_CLAMP}`);
  if (rk.rcvSsthresh > MAX_RCV_CLAMP)
    fail('soft.rcvSsthresh', `window bound ${rk.rcvSsthresh} above ${MAX_RCV_CLAMP}`);
  if ((d.ecn & ~TCP_ECN_BITS) !== 0) fail('delegated.ecn', `bits ${d.ecn} beyond TcpEcn's`);
  if (d.ecn !== 0 && (d.ecn & TcpEcn.OK) === 0) fail('delegated.ecn', `bits ${d.ecn} without ECN negotiated`);
  if (k.ttl < 1) fail('cached.ttl', 'TTL 0');
  if (k.rcvBufSize === 0) fail('cached.rcvBufSize', 'empty receive buffer');
  const rcvWnd = (d.rcvAdv - d.rcvNxt) | 0;
  const maxRcvWnd = 65535 << c.rcvWscale;
  if (rcvWnd > maxRcvWnd) fail('delegated.rcvAdv', `window ${rcvWnd} beyond 65535 << ${c.rcvWscale}`);
  // A FIN may be taken at the very edge of a closed window.
  if (rcvWnd < (d.finReceived ? -1 : 0)) fail('delegated.rcvAdv', 'advertised edge before rcv.nxt');
  const recvLen = (d.recvBuffer as ByteRing).length;
  if (recvLen > k.rcvBufSize) fail('delegated.recvBuffer', `${recvLen} bytes exceed rcvBufSize`);
}

/**
 * The fields a pure ACK sent from a state reads or changes (sendStateAck, with advertiseWindow,
 * selectWindow, rcvMss, windowClamp, offeredWindow and ackSentOn), besides the whole of const,
 * cached and delegated: the receiver's few soft fields. What a state read for that ACK alone
 * (TransferRecord.readForAck) holds, and validateAckOn checks.
 */
export const ACK_SOFT_FIELDS: readonly string[] = [
  'soft.ackNow',
  'soft.quickAcks',
  'soft.ackPushed',
  'soft.delayedAckDeadline',
  'soft.rcvMss',
  'soft.rcvClamp',
  'soft.rcvSsthresh',
];

/** TCP_FIELDS that a state read for an ACK alone holds (ACK_SOFT_FIELDS, and every field of const, cached, delegated). */
export const ACK_FIELDS: readonly FieldSpec<TcpPart>[] = TCP_FIELDS.filter(
  (f) =>
    f.part === 'const' || f.part === 'cached' || f.part === 'delegated' || ACK_SOFT_FIELDS.includes(f.name),
);
if (
  ACK_FIELDS.length !==
  TCP_FIELDS.filter((f) => f.part !== 'soft' && f.part !== 'cubic').length + ACK_SOFT_FIELDS.length
)
  throw new Error('ACK_SOFT_FIELDS names a field TCP_FIELDS does not have');

const checkAckDomains = genDomainCheck(ACK_FIELDS, {
  const: 's.const',
  cached: 's.cached',
  delegated: 's.delegated',
  soft: 's.soft',
  cubic: '(s.soft ?? {}).cubic',
});

/**
 * validateConnOn for a state read for one pure ACK and nothing else (ACK_FIELDS): those fields in
 * their domains, the rules the ACK rests on (checkAckRules), on path `p`. The rest of the record
 * is unread, and checked whole (validateConnOn) by the build that reads it.
 */
export function validateAckOn(s: TcpState, p: PathState): void {
  checkAckDomains(s);
  checkAckRules(s);
  checkOnPath(s, p);
}

/** Rules across fields; the domains are already known to hold. */
function checkTcpRules(s: TcpState): void {
  checkAckRules(s);
  const c = s.const;
  const k = s.cached;
  const d = s.delegated;
  const rk = s.soft;
  // Without SACK the degree follows the flight (tcp-recovery.ts renoCapReordering), down to one.
  const least = c.sackEnabled ? RACK_REORDERING_MIN : 1;
  if (rk.reordering < least || rk.reordering > RACK_REORDERING_MAX)
    fail('soft.reordering', `degree ${rk.reordering} outside ${least}..${RACK_REORDERING_MAX}`);
  if (rk.reoWndMult < 1) fail('soft.reoWndMult', 'multiplier 0');
  if (rk.reoWndPersist > RACK_REO_PERSIST)
    fail('soft.reoWndPersist', `${rk.reoWndPersist} recoveries > ${RACK_REO_PERSIST}`);
  if (!Number.isInteger(rk.rtxBytes)) fail('soft.rtxBytes', 'not a whole number of bytes');
  if (!Number.isInteger(rk.dsackBytes)) fail('soft.dsackBytes', 'not a whole number of bytes');
  if (rk.rcvSpace > MAX_RCV_CLAMP) fail('soft.rcvSpace', `measure ${rk.rcvSpace} above ${MAX_RCV_CLAMP}`);

  if (k.sndBufSize === 0) fail('cached.sndBufSize', 'empty send buffer');
  if (k.minRtoMs > k.maxRtoMs) fail('cached.minRtoMs', 'minimum RTO above maximum');

  // snd.una <= snd.nxt <= snd.max, all within one half of the sequence space.
  const flight = (d.sndMax - d.sndUna) >>> 0;
  if (flight >= HALF_SEQ) fail('delegated.sndMax', 'snd.max before snd.una');
  if ((d.sndNxt - d.sndUna) >>> 0 > flight) fail('delegated.sndNxt', 'snd.nxt outside snd.una..snd.max');
  if (d.finSent && !d.finQueued) fail('delegated.finSent', 'FIN sent but never queued');
  // The FIN, while unacknowledged, occupies the last sequence number below snd.max; the SYN
  // (only before the handshake completes) the one at the ISS.
  const finSeq = d.finSent && flight > 0 ? 1 : 0;
  const synSeq =
    (d.state === TcpStateId.SYN_SENT || d.state === TcpStateId.SYN_RECEIVED) && d.sndUna === d.iss ? 1 : 0;
  const inFlightData = flight - finSeq - synSeq;
  const sendLen = (d.sendBuffer as ByteRing).length;
  if (inFlightData < 0 || sendLen < inFlightData) {
    fail('delegated.sendBuffer', `${sendLen} bytes queued but ${inFlightData} in flight`);
  }
  if (d.finSent && sendLen !== inFlightData) fail('delegated.sendBuffer', 'data queued after the FIN');
  if (sendLen > k.sndBufSize) fail('delegated.sendBuffer', `${sendLen} bytes exceed sndBufSize`);
  if (d.sndWnd > 65535 * 2 ** c.sndWscale) fail('delegated.sndWnd', 'beyond what the peer can advertise');

  const soft = s.soft;
  checkRanges(soft.sacked, 'soft.sacked', true);
  for (const r of soft.sacked) {
    if (((r.start - d.sndUna) | 0) < 0 || ((d.sndMax - r.end) | 0) < 0) {
      fail('soft.sacked', 'SACKed range outside snd.una..snd.max');
    }
  }
  let oooBytes = 0;
  for (const seg of soft.ooo) {
    oooBytes += seg.data.length;
    if (((seg.seq - d.rcvNxt) | 0) <= 0) fail('soft.ooo', 'segment at or before rcv.nxt');
  }
  if (oooBytes > k.rcvBufSize) fail('soft.ooo', 'out-of-order data exceeds rcvBufSize');
}

/**
 * Check one tree: shape (every path under this neighbor points at it, every connection at its
 * path), no object twice, and every object's fields. Several trees of one transfer go through
 * validateTrees, which also refuses an object that appears in two of them.
 */
export function validateTree(t: OffloadTree): void {
  validateTrees([t]);
}

/**
 * One connection as validateTrees checks each of a path's: its fields and rules, and that it
 * points at `p` and has its addresses. For a connection that joins a path validated before (a
 * worker's build of a connection it took unbuilt): a tree made around it to validate it checked
 * the path and its neighbor again and made four sets, each time.
 */
export function validateConnOn(s: TcpState, p: PathState): void {
  validateTcpState(s);
  checkOnPath(s, p);
}

/** The connection points at `p` and has its addresses. */
function checkOnPath(s: TcpState, p: PathState): void {
  if (s.path !== p) fail('tcp.path', 'connection points at another path than its node');
  if (s.const.localIp !== p.const.localIp || s.const.remoteIp !== p.const.remoteIp) {
    fail('tcp.const', 'connection addresses differ from its path');
  }
}

export function validateTrees(trees: readonly OffloadTree[]): void {
  if (!Array.isArray(trees)) fail('trees', 'not a list');
  const neighbors = new Set<NeighborState>();
  const paths = new Set<PathState>();
  const addrPairs = new Set<string>();
  const conns = new Set<TcpState>();
  // Handles of one transfer must name addresses in one table, or two equal numbers could be two
  // addresses.
  let book: unknown = null;
  for (let ti = 0; ti < trees.length; ti++) {
    const t = trees[ti]!;
    if (t === null || typeof t !== 'object' || !Array.isArray(t.paths)) fail(`trees[${ti}]`, 'not a tree');
    if (neighbors.has(t.neighbor)) fail('neighbor', 'the same neighbor roots two trees');
    validateNeighborState(t.neighbor);
    neighbors.add(t.neighbor);
    for (const node of t.paths) {
      const p = node?.path;
      if (node === null || typeof node !== 'object' || !Array.isArray(node.conns))
        fail('path', 'not a path node');
      if (paths.has(p)) fail('path', 'the same path appears twice');
      validatePathState(p);
      if (p.addrs !== undefined && p.const.remoteIp > 0xffffffff) {
        if (book === null) book = p.addrs;
        else if (book !== p.addrs) fail('path.addrs', 'IPv6 paths of one transfer from two address tables');
      }
      if (p.neighbor !== t.neighbor) fail('path.neighbor', 'path points at another neighbor than its tree');
      const pair = `${p.const.localIp}:${p.const.remoteIp}`;
      if (addrPairs.has(pair)) fail('path.const', 'two paths between the same addresses');
      addrPairs.add(pair);
      paths.add(p);
      const ports = new Set<number>();
      for (const s of node.conns) {
        if (conns.has(s)) fail('tcp', 'the same connection appears twice');
        validateConnOn(s, p);
        const portPair = s.const.localPort * 0x10000 + s.const.remotePort;
        if (ports.has(portPair)) fail('tcp.const', 'two connections with the same ports on one path');
        ports.add(portPair);
        conns.add(s);
      }
    }
  }
}
