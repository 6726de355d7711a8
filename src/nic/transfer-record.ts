import { StateValidationError } from '../core/errors.ts';
import type { ByteRing } from '../state/byte-ring.ts';
import type { OffloadTree } from '../state/offload-tree.ts';
import type { PathState } from '../state/path-state.ts';
import { createTcpState, DEFAULT_TCP_CACHED, type TcpConst, type TcpState } from '../state/tcp-state.ts';
import { CONGESTION_CODES, TCP_FIELDS, type TcpPart } from '../state/validate.ts';

/*
 * The transfer record: a connection's whole fixed-size TCP state (every scalar of TCP_FIELDS:
 * const, cached, delegated, and the soft scalars with CUBIC's) in its shared block, next to the
 * two copies of the hard state. Between threads of one process a transfer writes these records
 * and names the blocks; the receiver builds its TcpState from the record and the rings already in
 * the block, and validates it as the codec's decoder would (validateTcpState), so nothing is
 * encoded, copied into a message or parsed per connection. What does not fit a fixed size stays
 * behind, as the codec's `soft: 'scalars'` allows: the out-of-order queue and the SACK lists
 * (scoreboard and recent blocks) come back from traffic.
 *
 * Layout: one 8-byte header (i32 owner word, i32 path index), then one float64 per field in table
 * order. Times are deltas from the writer's clock (-1 "never" and Infinity kept), as on the wire.
 * The owner word is written with Atomics: 0 the host, N > 0 the worker NIC numbered N, -N offered
 * to it by a transfer in flight. A receiver takes a record only if it was offered to it.
 */

const SCALAR_FIELDS = TCP_FIELDS.filter((f) => f.type !== 'ring' && f.type !== 'ooo' && f.type !== 'ranges');
const HEADER_SLOTS = 1;
/** Bytes of one transfer record (a multiple of 8). */
export const TRANSFER_RECORD_BYTES = 8 * (HEADER_SLOTS + SCALAR_FIELDS.length);
/** Int32 index of the owner word and of the path index, relative to the record. */
const I_OWNER = 0;
const I_PATH = 1;

export const OWNER_HOST = 0;

/** The float64 slot of a field (its dotted name, e.g. `delegated.sndUna`) in a record; -1 if none. */
export function transferRecordSlot(name: string): number {
  const i = SCALAR_FIELDS.findIndex((f) => f.name === name);
  return i < 0 ? -1 : HEADER_SLOTS + i;
}

type Writer = (f: Float64Array, o: number, s: TcpState, now: number, cc: readonly string[]) => void;
type Reader = (
  f: Float64Array,
  o: number,
  now: number,
  path: PathState,
  send: ByteRing,
  recv: ByteRing,
  h: typeof H,
) => TcpState;

const H = {
  fail(name: string, message: string): never {
    throw new StateValidationError(name, message);
  },
  bool(v: number, name: string): boolean {
    if (v === 1) return true;
    if (v !== 0) H.fail(name, `boolean ${v}`);
    return false;
  },
  cc(v: number, name: string): string {
    const cc = Number.isInteger(v) ? CONGESTION_CODES[v] : undefined;
    return cc ?? H.fail(name, `unknown congestion algorithm code ${v}`);
  },
  time(t: number, now: number, name: string): number {
    if (Number.isNaN(t)) H.fail(name, 'time is NaN');
    return t === Number.NEGATIVE_INFINITY ? -1 : t === Number.POSITIVE_INFINITY ? t : now + t;
  },
};

const ACCESS: Record<TcpPart, string> = {
  const: 's.const',
  cached: 's.cached',
  delegated: 's.delegated',
  soft: 's.soft',
  cubic: 's.soft.cubic',
};

function genWriter(): Writer {
  const lines: string[] = [];
  SCALAR_FIELDS.forEach((fs, i) => {
    const v = `${ACCESS[fs.part]}.${fs.key}`;
    const at = `o + ${HEADER_SLOTS + i}`;
    switch (fs.type) {
      case 'bool':
        lines.push(`f[${at}] = ${v} ? 1 : 0;`);
        break;
      case 'cc':
        lines.push(`f[${at}] = cc.indexOf(${v});`);
        break;
      case 'time':
        lines.push(
          `{ const t = ${v}; f[${at}] = t === -1 ? -Infinity : t === Infinity ? Infinity : t - now; }`,
        );
        break;
      default:
        lines.push(`f[${at}] = ${v};`);
    }
  });
  return new Function('f', 'o', 's', 'now', 'cc', lines.join('\n')) as Writer;
}

/**
 * The reader builds the state as literals in the shape createTcpState gives it (so the engine's
 * property accesses stay monomorphic): the shape is taken from one state made at load.
 */
function genReader(): Reader {
  const byPart = new Map<string, number>();
  SCALAR_FIELDS.forEach((fs, i) => {
    byPart.set(`${fs.part}.${fs.key}`, i);
  });
  const read = (part: TcpPart, key: string): string | undefined => {
    const i = byPart.get(`${part}.${key}`);
    if (i === undefined) return undefined;
    const fs = SCALAR_FIELDS[i]!;
    const v = `f[o + ${HEADER_SLOTS + i}]`;
    const name = JSON.stringify(fs.name);
    switch (fs.type) {
      case 'bool':
        return `h.bool(${v}, ${name})`;
      case 'cc':
        return `h.cc(${v}, ${name})`;
      case 'time':
        return `h.time(${v}, now, ${name})`;
      default:
        return v;
    }
  };
  // Only the shape matters: the fields' values are read from the record or are the defaults.
  const constPart = Object.fromEntries(
    SCALAR_FIELDS.filter((f) => f.part === 'const').map((f) => [f.key, f.type === 'bool' ? false : 1]),
  ) as unknown as TcpConst;
  const sample = createTcpState(constPart, DEFAULT_TCP_CACHED, {} as PathState);
  const literal = (part: TcpPart, obj: Record<string, unknown>): string => {
    const props: string[] = [];
    for (const [key, def] of Object.entries(obj)) {
      let expr = read(part, key);
      if (expr === undefined) {
        if (key === 'sendBuffer') expr = 'send';
        else if (key === 'recvBuffer') expr = 'recv';
        else if (part === 'soft' && key === 'cubic') expr = literal('cubic', def as Record<string, unknown>);
        else if (Array.isArray(def)) expr = '[]';
        else if (typeof def === 'number' || typeof def === 'boolean' || typeof def === 'string')
          expr = def === Number.POSITIVE_INFINITY ? 'Infinity' : JSON.stringify(def);
        else throw new TypeError(`transfer record: no way to fill ${part}.${key}`);
      }
      props.push(`${JSON.stringify(key)}: ${expr}`);
    }
    return `{ ${props.join(', ')} }`;
  };
  const top: string[] = [];
  for (const key of Object.keys(sample)) {
    if (key === 'path') top.push('path');
    else if (key === 'const' || key === 'cached' || key === 'delegated' || key === 'soft')
      top.push(`${JSON.stringify(key)}: ${literal(key, (sample as unknown as Record<string, never>)[key])}`);
    else throw new TypeError(`transfer record: no way to fill ${key}`);
  }
  return new Function(
    'f',
    'o',
    'now',
    'path',
    'send',
    'recv',
    'h',
    `return { ${top.join(', ')} };`,
  ) as Reader;
}

const ACCESS_INTO: Record<TcpPart, string> = {
  const: 'c',
  cached: 'k',
  delegated: 'd',
  soft: 'x',
  cubic: 'u',
};

type IntoReader = (
  f: Float64Array,
  o: number,
  now: number,
  path: PathState,
  send: ByteRing,
  recv: ByteRing,
  h: typeof H,
  s: TcpState,
) => TcpState;

/**
 * The reader into a state made before (by the reader above, for the same connection): every
 * field the record holds is assigned, the lists emptied, nothing allocated but the lists that
 * were not empty. A state is nine objects and a hundred numbers; made anew on every move they
 * were most of a read's cost and of the collector's work.
 */
function genIntoReader(): IntoReader {
  const lines: string[] = ['const c = s.const, k = s.cached, d = s.delegated, x = s.soft, u = x.cubic;'];
  SCALAR_FIELDS.forEach((fs, i) => {
    const v = `f[o + ${HEADER_SLOTS + i}]`;
    const name = JSON.stringify(fs.name);
    const target = `${ACCESS_INTO[fs.part]}.${fs.key}`;
    switch (fs.type) {
      case 'bool':
        lines.push(`${target} = h.bool(${v}, ${name});`);
        break;
      case 'cc':
        lines.push(`${target} = h.cc(${v}, ${name});`);
        break;
      case 'time':
        lines.push(`${target} = h.time(${v}, now, ${name});`);
        break;
      default:
        lines.push(`${target} = ${v};`);
    }
  });
  lines.push('s.path = path;', 'd.sendBuffer = send;', 'd.recvBuffer = recv;');
  // What the record does not hold is what a new state has (as the reader above fills it in).
  const inRecord = new Set(SCALAR_FIELDS.map((f) => `${f.part}.${f.key}`));
  const sample = createTcpState({} as TcpConst, DEFAULT_TCP_CACHED, {} as PathState);
  const parts: [TcpPart, Record<string, unknown>][] = [
    ['cached', sample.cached as unknown as Record<string, unknown>],
    ['delegated', sample.delegated as unknown as Record<string, unknown>],
    ['soft', sample.soft as unknown as Record<string, unknown>],
    ['cubic', sample.soft.cubic as unknown as Record<string, unknown>],
  ];
  for (const [part, obj] of parts)
    for (const [key, def] of Object.entries(obj)) {
      if (inRecord.has(`${part}.${key}`)) continue;
      const target = `${ACCESS_INTO[part]}.${key}`;
      if (key === 'sendBuffer' || key === 'recvBuffer' || (part === 'soft' && key === 'cubic')) continue;
      if (Array.isArray(def)) lines.push(`if (${target}.length !== 0) ${target} = [];`);
      else if (typeof def === 'number' || typeof def === 'boolean' || typeof def === 'string')
        lines.push(`${target} = ${def === Number.POSITIVE_INFINITY ? 'Infinity' : JSON.stringify(def)};`);
      else throw new TypeError(`transfer record: no way to fill ${part}.${key}`);
    }
  lines.push('return s;');
  return new Function('f', 'o', 'now', 'path', 'send', 'recv', 'h', 's', lines.join('\n')) as IntoReader;
}

const WRITE = genWriter();
const READ = genReader();
const READ_INTO = genIntoReader();

/**
 * A connection travels as a transfer record unless it has what a record cannot carry: an IPv6
 * connection's addresses are handles the worker learns from the batch's paths in the codec (the
 * record would need them as bytes, as the hard state has them), and out-of-order data the peer
 * may have been told about in SACK blocks (dropped, it would come back only after the peer's RTO).
 */
export function travelsAsRecord(s: TcpState): boolean {
  return s.const.remoteIp <= 0xffffffff && s.const.localIp <= 0xffffffff && s.soft.ooo.length === 0;
}

/**
 * The trees split for a transfer by records: each record connection's path as the codec numbers
 * the batch's paths (trees in order, their paths in order), and the trees with only the
 * connections that still go through the codec (and those `can` refuses: no block to write to).
 */
export function splitForRecords(
  trees: readonly OffloadTree[],
  can: (s: TcpState) => boolean = () => true,
): { paths: Map<TcpState, number>; trees: OffloadTree[] } {
  const paths = new Map<TcpState, number>();
  let i = 0;
  const rest = trees.map((t) => ({
    neighbor: t.neighbor,
    paths: t.paths.map((node) => {
      const conns: TcpState[] = [];
      for (const s of node.conns) {
        if (travelsAsRecord(s) && can(s)) paths.set(s, i);
        else conns.push(s);
      }
      i++;
      return { path: node.path, conns };
    }),
  }));
  return { paths, trees: rest };
}

/**
 * Views of whole buffers, made once per buffer: a record is read or written per connection and
 * move, and two typed arrays per record were garbage the collector then had to find (blocks share
 * 1 MiB slabs, so there are few buffers).
 */
const VIEWS = new WeakMap<SharedArrayBuffer, { f: Float64Array; i: Int32Array }>();

function viewsOf(sab: SharedArrayBuffer): { f: Float64Array; i: Int32Array } {
  let v = VIEWS.get(sab);
  if (v === undefined) {
    v = {
      f: new Float64Array(sab, 0, sab.byteLength >>> 3),
      i: new Int32Array(sab, 0, sab.byteLength >>> 2),
    };
    VIEWS.set(sab, v);
  }
  return v;
}

/** A view of one block's transfer record. */
export class TransferRecord {
  private readonly f: Float64Array;
  private readonly i: Int32Array;
  /** The record's first float64 and first int32 in the views. */
  private readonly fo: number;
  private readonly io: number;

  /** `at`: byte offset of the record in `sab` (8-aligned). */
  constructor(sab: SharedArrayBuffer, at: number) {
    if (at % 8 !== 0 || at < 0 || at + TRANSFER_RECORD_BYTES > sab.byteLength)
      throw new RangeError(`no transfer record at ${at}`);
    const v = viewsOf(sab);
    this.f = v.f;
    this.i = v.i;
    this.fo = at >>> 3;
    this.io = at >>> 2;
  }

  /** Write the state (the clock's `now` makes times deltas) and offer the record to `owner`. */
  write(s: TcpState, now: number, pathIndex: number, owner: number): void {
    WRITE(this.f, this.fo, s, now, CONGESTION_CODES);
    this.i[this.io + I_PATH] = pathIndex;
    Atomics.store(this.i, this.io + I_OWNER, -owner);
  }

  get pathIndex(): number {
    return this.i[this.io + I_PATH]!;
  }

  get owner(): number {
    return Atomics.load(this.i, this.io + I_OWNER);
  }

  /** Hand the record to `owner` (the host: OWNER_HOST). */
  setOwner(owner: number): void {
    Atomics.store(this.i, this.io + I_OWNER, owner);
  }

  /** Take the record offered to `owner`; false if it was not offered to it (or taken meanwhile). */
  take(owner: number): boolean {
    return Atomics.compareExchange(this.i, this.io + I_OWNER, -owner, owner) === -owner;
  }

  /**
   * The state the record holds, over the rings given, on the reader's clock. Not validated
   * (validateTcpState): the caller does it with the rest of the batch. Throws
   * StateValidationError for a boolean, congestion code or time no state can hold.
   */
  read(now: number, path: PathState, send: ByteRing, recv: ByteRing): TcpState {
    return READ(this.f, this.fo, now, path, send, recv, H);
  }

  /**
   * The same, into `into`, a state this reader made before and that nothing else uses any more
   * (a pooled state): every field the record holds is overwritten, its lists left empty.
   */
  readInto(into: TcpState, now: number, path: PathState, send: ByteRing, recv: ByteRing): TcpState {
    return READ_INTO(this.f, this.fo, now, path, send, recv, H, into);
  }
}
