import { StateValidationError } from '../core/errors.ts';
import { flowLabel6 } from '../stack/ipv6.ts';
import type { ByteRing } from '../state/byte-ring.ts';
import type { OffloadTree } from '../state/offload-tree.ts';
import type { PathState } from '../state/path-state.ts';
import {
  RING_WRITE,
  SHARED_RING_HEADER,
  type SharedRingRef,
  sharedBytes,
  sharedWords,
} from '../state/shared-ring.ts';
import {
  createTcpState,
  DEFAULT_TCP_CACHED,
  smallTcpField,
  type TcpConst,
  type TcpState,
} from '../state/tcp-state.ts';
import { ACK_FIELDS, CONGESTION_CODES, TCP_FIELDS, type TcpPart } from '../state/validate.ts';

/*
 * The transfer record: a connection's whole TCP state in its shared block, next to the two copies
 * of the hard state: every scalar of TCP_FIELDS (const, cached, delegated, and the soft scalars
 * with CUBIC's), then a tail with the family, the flow label and the lists (SACK scoreboard,
 * the SACK blocks we report, the runs of out-of-order data, each bounded). Between threads of one
 * process a transfer writes these records and names the blocks; the receiver builds its TcpState
 * from the record and the rings already in the block, and validates it as the codec's decoder
 * would (validateTcpState), so nothing is encoded, copied into a message or parsed per connection.
 *
 * Out-of-order data stays in the block's receive ring beyond the readable bytes, at the offsets it
 * will have once the hole before it fills (the ring is sized to the advertised window, so it fits
 * there unless the window shrank); the record holds its runs. IPv6 addresses are the host's
 * handles: a worker's table mirrors the host's numbering, and the batch's paths (codec bytes,
 * decoded before any record is read) bind both handles on the receiver; the reader checks the
 * family word against the handles and the path, and the key check and validateTrees the
 * addresses against the block's key and the path. Bytes would make a record self-contained, but
 * cost a table lookup per connection per move for what the path already says once; the hard
 * state, which must mean something after its writer died, carries bytes.
 *
 * Layout: one 8-byte header (i32 owner word, i32 path index), one float64 per scalar field in
 * table order, then the tail's int32 words (TRANSFER_RECORD_TAIL). Times are deltas from the
 * writer's clock (-1 "never" and Infinity kept), as on the wire. The owner word is written with
 * Atomics: 0 the host, N > 0 the worker NIC numbered N, -N offered to it by a transfer in flight.
 * A receiver takes a record only if it was offered to it.
 */

const SCALAR_FIELDS = TCP_FIELDS.filter((f) => f.type !== 'ring' && f.type !== 'ooo' && f.type !== 'ranges');
const HEADER_SLOTS = 1;

/*
 * The tail, after the scalar slots: int32 words with the connection's family and flow label and
 * its three lists of sequence ranges, each bounded (a connection with more goes through the codec,
 * counted by the caller). Ranges are u32 pairs [start, end).
 */
const TAIL_AT = 8 * (HEADER_SLOTS + SCALAR_FIELDS.length);
/** 4 or 6. */
const T_FAMILY = 0;
/** The IPv6 flow label the connection's packets carry (connFlowLabel); 0 for IPv4. */
const T_FLOW = 1;
const T_N_SACKED = 2;
const T_N_RECENT = 3;
const T_N_OOO = 4;
const T_LISTS = 6;
/**
 * The SACK scoreboard's ranges a record holds: a connection in recovery against a lossy peer
 * rarely has more islands than this; one with more (up to SACK_MAX_RANGES) takes the codec.
 */
export const RECORD_SACKED_MAX = 32;
/** The SACK blocks we report: the receiver keeps at most 8 (RECV_SACK_MAX), so they always fit. */
export const RECORD_RECENT_MAX = 8;
/** Runs of out-of-order data (adjacent segments merged): more take the codec. */
export const RECORD_OOO_MAX = 32;
const T_SACKED = T_LISTS;
const T_RECENT = T_SACKED + 2 * RECORD_SACKED_MAX;
const T_OOO = T_RECENT + 2 * RECORD_RECENT_MAX;
const TAIL_WORDS = (T_OOO + 2 * RECORD_OOO_MAX + 1) & ~1;
/** Bytes of one transfer record (a multiple of 8). */
export const TRANSFER_RECORD_BYTES = TAIL_AT + 4 * TAIL_WORDS;
/** Where the tail's words lie (int32 index from the tail's start at byte `at` of the record), for tests. */
export const TRANSFER_RECORD_TAIL = {
  at: TAIL_AT,
  family: T_FAMILY,
  flow: T_FLOW,
  nSacked: T_N_SACKED,
  nRecent: T_N_RECENT,
  nOoo: T_N_OOO,
  sacked: T_SACKED,
  recent: T_RECENT,
  ooo: T_OOO,
} as const;
/** Int32 index of the owner word and of the path index, relative to the record. */
const I_OWNER = 0;
const I_PATH = 1;

export const OWNER_HOST = 0;

/** The float64 slot of a field (its dotted name, e.g. `delegated.sndUna`) in a record; -1 if none. */
export function transferRecordSlot(name: string): number {
  const i = SCALAR_FIELDS.findIndex((f) => f.name === name);
  return i < 0 ? -1 : HEADER_SLOTS + i;
}

/** Record slots of the deadlines a connection's timer waits for (scheduleTimer's), and of every time. */
const DEADLINE_SLOTS = [
  'delegated.rtxDeadline',
  'delegated.persistDeadline',
  'delegated.keepaliveDeadline',
  'delegated.timeWaitDeadline',
  'soft.delayedAckDeadline',
  'soft.tlpDeadline',
].map(transferRecordSlot);
const TIME_SLOTS = SCALAR_FIELDS.flatMap((f, i) => (f.type === 'time' ? [HEADER_SLOTS + i] : []));
const TIME_NAMES = SCALAR_FIELDS.flatMap((f) => (f.type === 'time' ? [f.name] : []));
/** The reader's times, converted before its literals are made (H.checkedTimes). */
const TIMES = new Float64Array(TIME_SLOTS.length);
const BOOL_SLOTS = SCALAR_FIELDS.flatMap((f, i) => (f.type === 'bool' ? [HEADER_SLOTS + i] : []));
const BOOL_NAMES = SCALAR_FIELDS.flatMap((f) => (f.type === 'bool' ? [f.name] : []));
const STATE_SLOT = transferRecordSlot('delegated.state');
const SND_UNA_SLOT = transferRecordSlot('delegated.sndUna');
const SND_MAX_SLOT = transferRecordSlot('delegated.sndMax');
const ACK_NOW_SLOT = transferRecordSlot('soft.ackNow');
const KEEPALIVE_SLOT = transferRecordSlot('cached.keepAlive');
/** What a pure ACK sent from a state read out of the record changes (noteAck). */
const ACK_SLOTS = [
  'delegated.rcvAdv',
  'delegated.lastAckSent',
  'delegated.segmentsOut',
  'soft.quickAcks',
  'soft.ackPushed',
  'soft.ackNow',
].map(transferRecordSlot);
/** TcpStateId.ESTABLISHED, as the record holds it. */
const ESTABLISHED = 4;
for (const k of [
  ...DEADLINE_SLOTS,
  STATE_SLOT,
  SND_UNA_SLOT,
  SND_MAX_SLOT,
  ACK_NOW_SLOT,
  KEEPALIVE_SLOT,
  ...ACK_SLOTS,
])
  if (k < 0) throw new Error('transfer record: a field quiet or noteAck uses is not in TCP_FIELDS');

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
  /** Every boolean slot of the record at `o` holds 0 or 1. */
  checkBooleans(f: Float64Array, o: number): void {
    for (let j = 0; j < BOOL_SLOTS.length; j++) {
      const v = f[o + BOOL_SLOTS[j]!]!;
      if (v !== 0 && v !== 1) H.fail(BOOL_NAMES[j]!, `boolean ${v}`);
    }
  },
  /** The record's times on the reader's clock, in TIME_SLOTS order (as H.time), in a scratch array. */
  checkedTimes(f: Float64Array, o: number, now: number): Float64Array {
    for (let j = 0; j < TIME_SLOTS.length; j++)
      TIMES[j] = H.time(f[o + TIME_SLOTS[j]!]!, now, TIME_NAMES[j]!);
    return TIMES;
  },
};

const ACCESS: Record<TcpPart, string> = {
  const: 's.const',
  cached: 's.cached',
  delegated: 's.delegated',
  soft: 's.soft',
  cubic: 's.soft.cubic',
};

/**
 * A name for a generated function in CPU profiles, which otherwise show it as an anonymous
 * function of no file: the reader was a third of a survivor worker's builds after a crash
 * (BENCHMARKS.md, "A crash: the survivor's builds") and could not be told apart by name.
 */
function sourceUrl(which: string): string {
  return `//# sourceURL=transfer-record-${which}.js`;
}

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
  lines.push(sourceUrl('writer'));
  return new Function('f', 'o', 's', 'now', 'cc', lines.join('\n')) as Writer;
}

/**
 * The reader builds the state as literals in the shape createTcpState gives it (so the engine's
 * property accesses stay monomorphic): the shape is taken from one state made at load. Each part
 * (const, cached, delegated, soft, cubic) is read by a function of its own, and what a field
 * needs beyond its load is done before, in two loops (checkedTimes, checkBooleans): a boolean is
 * then a comparison and a time a load from the times' scratch array, where each was a call with
 * its branches. One function with every field and those calls (inlined, a graph of hundreds of
 * branches) ran unoptimized through a crash's 10,000 builds at a survivor worker: V8 waits longer
 * to optimize a bigger function, and at load 30-40 its compile ran 2.4-3.3 s and was then dropped
 * for a dependency change (BENCHMARKS.md, "A crash's survivor: builds paced by time").
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
    switch (fs.type) {
      case 'bool':
        return `${v} === 1`;
      case 'cc':
        return `h.cc(${v}, ${JSON.stringify(fs.name)})`;
      case 'time':
        return `T[${TIME_SLOTS.indexOf(HEADER_SLOTS + i)}]`;
      default:
        return smallTcpField(fs.part, fs.key) ? asSmall(v) : v;
    }
  };
  // Only the shape matters: the fields' values are read from the record or are the defaults.
  const constPart = Object.fromEntries(
    SCALAR_FIELDS.filter((f) => f.part === 'const').map((f) => [f.key, f.type === 'bool' ? false : 1]),
  ) as unknown as TcpConst;
  const sample = createTcpState(constPart, DEFAULT_TCP_CACHED, {} as PathState);
  type PartReader = (
    f: Float64Array,
    o: number,
    T: Float64Array,
    send: ByteRing,
    recv: ByteRing,
    h: typeof H,
  ) => unknown;
  /** A part's reader; `u` the cubic part's, which the soft part's literal holds. */
  const partReader = (part: TcpPart, obj: Record<string, unknown>, u?: PartReader): PartReader => {
    const props: string[] = [];
    for (const [key, def] of Object.entries(obj)) {
      let expr = read(part, key);
      if (expr === undefined) {
        if (key === 'sendBuffer') expr = 'send';
        else if (key === 'recvBuffer') expr = 'recv';
        else if (part === 'soft' && key === 'cubic' && u !== undefined) expr = 'u(f, o, T, send, recv, h)';
        else if (Array.isArray(def)) expr = '[]';
        else if (typeof def === 'number' || typeof def === 'boolean' || typeof def === 'string')
          expr = def === Number.POSITIVE_INFINITY ? 'Infinity' : JSON.stringify(def);
        else throw new TypeError(`transfer record: no way to fill ${part}.${key}`);
      }
      props.push(`${JSON.stringify(key)}: ${expr}`);
    }
    const body = `return function (f, o, T, send, recv, h) { let t; return { ${props.join(', ')} }; };\n${sourceUrl(`reader-${part}`)}`;
    return new Function('u', body)(u) as PartReader;
  };
  const parts = sample as unknown as Record<string, Record<string, unknown>>;
  const readers: Record<string, PartReader> = {};
  const top: string[] = [];
  for (const key of Object.keys(sample)) {
    if (key === 'path') top.push('path');
    else if (key === 'const' || key === 'cached' || key === 'delegated' || key === 'soft') {
      readers[key] = partReader(
        key,
        parts[key]!,
        key === 'soft' ? partReader('cubic', parts.soft!.cubic as Record<string, unknown>) : undefined,
      );
      top.push(`${JSON.stringify(key)}: r.${key}(f, o, T, send, recv, h)`);
    } else throw new TypeError(`transfer record: no way to fill ${key}`);
  }
  const body = `return function (f, o, now, path, send, recv, h) { h.checkBooleans(f, o); const T = h.checkedTimes(f, o, now); return { ${top.join(', ')} }; };\n${sourceUrl('reader')}`;
  return new Function('r', body)(readers) as Reader;
}

/**
 * A small-integer field's value read from the record (`v`, a Float64Array element) as the small
 * integer it is: V8's unoptimized code reads such an element as a heap number, and a field on the
 * small-integer layout (tcp-state.ts, widenNumbers' `small`) keeps that number boxed, 16 bytes a
 * field, as a fraction's layout does; a worker's first installs took every state so. Any other
 * value (a malformed record's) is kept as it is, for the validation to see. Needs `let t`.
 */
function asSmall(v: string): string {
  return `(((t = ${v}) | 0) === t ? t | 0 : t)`;
}

const ACCESS_INTO: Record<TcpPart, string> = {
  const: 'c',
  cached: 'k',
  delegated: 'd',
  soft: 'x',
  cubic: 'u',
};

/** The reader's arguments, then the state to read into. */
type IntoReader = (...args: [...Parameters<Reader>, s: TcpState]) => TcpState;

/**
 * The reader into a state made before (by the reader above, for the same connection): every
 * field the record holds is assigned, the lists emptied, nothing allocated but the lists that
 * were not empty. A state is nine objects and a hundred numbers; made anew on every move they
 * were most of a read's cost and of the collector's work.
 */
function genIntoReader(only?: ReadonlySet<string>): IntoReader {
  const lines: string[] = [
    'const c = s.const, k = s.cached, d = s.delegated, x = s.soft, u = x.cubic;',
    'let t;',
  ];
  SCALAR_FIELDS.forEach((fs, i) => {
    if (only !== undefined && !only.has(fs.name)) return;
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
        lines.push(`${target} = ${smallTcpField(fs.part, fs.key) ? asSmall(v) : v};`);
    }
  });
  lines.push('s.path = path;', 'd.sendBuffer = send;', 'd.recvBuffer = recv;');
  if (only !== undefined) {
    lines.push('return s;', sourceUrl('ack-reader'));
    return new Function('f', 'o', 'now', 'path', 'send', 'recv', 'h', 's', lines.join('\n')) as IntoReader;
  }
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
  lines.push('return s;', sourceUrl('into-reader'));
  return new Function('f', 'o', 'now', 'path', 'send', 'recv', 'h', 's', lines.join('\n')) as IntoReader;
}

const WRITE = genWriter();
const READ = genReader();
const READ_INTO = genIntoReader();
const READ_ACK = genIntoReader(new Set(ACK_FIELDS.map((f) => f.name)));

/** Runs of contiguous out-of-order data (segments that touch merged), as a record holds them. */
function oooRuns(s: TcpState): number {
  const ooo = s.soft.ooo;
  let runs = 0;
  let end = -1;
  for (let i = 0; i < ooo.length; i++) {
    const seg = ooo[i]!;
    if (seg.seq !== end) runs++;
    end = (seg.seq + seg.data.length) >>> 0;
  }
  return runs;
}

/**
 * A connection travels as a transfer record unless its lists are longer than a record holds
 * (RECORD_SACKED_MAX, RECORD_RECENT_MAX, RECORD_OOO_MAX), or it has out-of-order data and `recv`
 * (the shared receive ring of its block) has no room for it beyond the readable bytes: the record
 * keeps those bytes there, at the offsets they will have once the hole before them fills. Both
 * families: an IPv6 connection's addresses are handles of the host's numbering, which every
 * worker's mirror table shares (see TransferRecord).
 */
export function travelsAsRecord(s: TcpState, recv?: ByteRing): boolean {
  const soft = s.soft;
  if (soft.sacked.length > RECORD_SACKED_MAX || soft.recvSackRecent.length > RECORD_RECENT_MAX) return false;
  const ooo = soft.ooo;
  if (ooo.length === 0) return true;
  if (recv === undefined || recv.shared === null || oooRuns(s) > RECORD_OOO_MAX) return false;
  const last = ooo[ooo.length - 1]!;
  const extent = (last.seq + last.data.length - s.delegated.rcvNxt) >>> 0;
  return extent <= recv.free;
}

/**
 * The trees split for a transfer by records: each record connection's path as the codec numbers
 * the batch's paths (trees in order, their paths in order), and the trees with only the
 * connections that still go through the codec: those `recv` gives no ring for (no block to write
 * to) and those travelsAsRecord keeps out, whose number is `codec`.
 */
export function splitForRecords(
  trees: readonly OffloadTree[],
  recv: (s: TcpState) => ByteRing | null | undefined = (s) => s.delegated.recvBuffer,
): { paths: Map<TcpState, number>; trees: OffloadTree[]; codec: number } {
  const paths = new Map<TcpState, number>();
  let i = 0;
  let codec = 0;
  const rest = trees.map((t) => ({
    neighbor: t.neighbor,
    paths: t.paths.map((node) => {
      const conns: TcpState[] = [];
      for (const s of node.conns) {
        const ring = recv(s);
        if (ring !== null && travelsAsRecord(s, ring)) paths.set(s, i);
        else {
          if (ring !== null) codec++;
          conns.push(s);
        }
      }
      i++;
      return { path: node.path, conns };
    }),
  }));
  return { paths, trees: rest, codec };
}

/**
 * The flow label an IPv6 connection's packets carry, from its path's seed and its ports, as the
 * NIC engine and the host stack compute it (0 for IPv4).
 */
export function connFlowLabel(s: TcpState, path: PathState): number {
  const c = s.const;
  if (c.remoteIp <= 0xffffffff) return 0;
  const ports = ((c.localPort << 16) | c.remotePort) >>> 0;
  const f = path.flow;
  return f === undefined
    ? flowLabel6(path.const.remoteIp, ports, 1, 0)
    : flowLabel6(f.base, ports, f.k0, f.k1);
}

/**
 * Views of whole buffers, made once per buffer: a record is read or written per connection and
 * move, and two typed arrays per record were garbage the collector then had to find (blocks share
 * 1 MiB slabs, so there are few buffers).
 */
const VIEWS = new WeakMap<SharedArrayBuffer, { f: Float64Array; i: Int32Array; b: Uint8Array }>();

function viewsOf(sab: SharedArrayBuffer): { f: Float64Array; i: Int32Array; b: Uint8Array } {
  let v = VIEWS.get(sab);
  if (v === undefined) {
    v = {
      f: new Float64Array(sab, 0, sab.byteLength >>> 3),
      i: sharedWords(sab),
      b: sharedBytes(sab),
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
  /** The tail's first int32 in the view. */
  private readonly to: number;

  /** `at`: byte offset of the record in `sab` (8-aligned). */
  constructor(sab: SharedArrayBuffer, at: number) {
    if (at % 8 !== 0 || at < 0 || at + TRANSFER_RECORD_BYTES > sab.byteLength)
      throw new RangeError(`no transfer record at ${at}`);
    const v = viewsOf(sab);
    this.f = v.f;
    this.i = v.i;
    this.fo = at >>> 3;
    this.io = at >>> 2;
    this.to = (at + TAIL_AT) >>> 2;
  }

  /**
   * Write the state (the clock's `now` makes times deltas) and offer the record to `owner`.
   * `recv`: the shared receive ring of the record's block, where out-of-order data is kept beyond
   * the readable bytes (the state's own ring by default); travelsAsRecord(s, recv) must hold.
   */
  write(
    s: TcpState,
    now: number,
    pathIndex: number,
    owner: number,
    recv: ByteRing = s.delegated.recvBuffer,
  ): void {
    WRITE(this.f, this.fo, s, now, CONGESTION_CODES);
    this.writeTail(s, recv);
    this.i[this.io + I_PATH] = pathIndex;
    Atomics.store(this.i, this.io + I_OWNER, -owner);
  }

  get pathIndex(): number {
    return this.i[this.io + I_PATH]!;
  }

  /** Point the record at another path of the batch it travels in (a record handed on unread). */
  setPathIndex(pathIndex: number): void {
    this.i[this.io + I_PATH] = pathIndex;
  }

  /**
   * The record holds an established connection that nothing would wake before its next segment
   * or its application's next call: no deadline armed (retransmission, persist, keepalive,
   * TIME_WAIT, delayed ACK, tail-loss probe), nothing unacknowledged, no ACK owed, no keepalive.
   * Read from five words, not the whole record: what a receiver may take without building it.
   */
  get quiet(): boolean {
    return this.f[this.fo + ACK_NOW_SLOT] === 0 && this.quietButAck;
  }

  /**
   * Quiet but for an ACK it may owe now (soft.ackNow, which a crash's rebuild sets): what one ACK
   * sent from the record makes quiet (noteAck).
   */
  get quietButAck(): boolean {
    const f = this.f;
    const o = this.fo;
    if (f[o + STATE_SLOT] !== ESTABLISHED || f[o + SND_UNA_SLOT] !== f[o + SND_MAX_SLOT]) return false;
    if (f[o + KEEPALIVE_SLOT] !== 0) return false;
    for (const k of DEADLINE_SLOTS) if (f[o + k] !== Number.POSITIVE_INFINITY) return false;
    return true;
  }

  /**
   * The fields a pure ACK changed (sendStateAck) in `s`, a state read from this record and not
   * built: written back so that the build that follows starts from the edge the peer was offered
   * (a window never retracted) and counts the segment. Every other field is as the record holds
   * it (a quiet record has no delayed ACK armed).
   */
  noteAck(s: TcpState): void {
    const f = this.f;
    const o = this.fo;
    const d = s.delegated;
    f[o + ACK_SLOTS[0]!] = d.rcvAdv;
    f[o + ACK_SLOTS[1]!] = d.lastAckSent;
    f[o + ACK_SLOTS[2]!] = d.segmentsOut;
    f[o + ACK_SLOTS[3]!] = s.soft.quickAcks;
    f[o + ACK_SLOTS[4]!] = s.soft.ackPushed;
    f[o + ACK_SLOTS[5]!] = s.soft.ackNow ? 1 : 0;
  }

  /**
   * Times are deltas from the writer's clock: a record kept unread for `ms` and handed on is
   * `ms` older for its next reader (an idle time, ts.recent's age), as if written now.
   */
  age(ms: number): void {
    const f = this.f;
    const o = this.fo;
    for (const k of TIME_SLOTS) {
      const v = f[o + k]!;
      if (Number.isFinite(v)) f[o + k] = v - ms;
    }
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
    const s = READ(this.f, this.fo, now, path, send, recv, H);
    this.readTail(s, path, recv);
    return s;
  }

  /**
   * The same, into `into`, a state this reader made before and that nothing else uses any more
   * (a pooled state): every field the record holds is overwritten, the tail's lists refilled.
   */
  readInto(into: TcpState, now: number, path: PathState, send: ByteRing, recv: ByteRing): TcpState {
    const s = READ_INTO(this.f, this.fo, now, path, send, recv, H, into);
    this.readTail(s, path, recv);
    return s;
  }

  /**
   * What one pure ACK sent from the record needs (sendStateAck), and only that, into `into`, a
   * state this reader made before and that nothing else uses (a scratch state): the fields of
   * ACK_FIELDS, the family and flow label, over the rings given; null when the record holds
   * out-of-order data or SACK blocks to report, which that ACK would leave out. Every other field
   * of `into` is left as it was: not the record's. Not validated (validateAckOn). A third of the
   * fields, and of a whole read's cost: a crash's survivor reads 10,000 records so, one for each
   * ACK, and each connection's build reads its whole record again.
   */
  readForAck(into: TcpState, now: number, path: PathState, send: ByteRing, recv: ByteRing): TcpState | null {
    const i = this.i;
    const t = this.to;
    if (i[t + T_N_OOO] !== 0 || i[t + T_N_RECENT] !== 0) return null;
    const s = READ_ACK(this.f, this.fo, now, path, send, recv, H, into);
    this.readFamily(s, path);
    return s;
  }

  /** The family, the flow label and the lists; out-of-order bytes into `recv` beyond its readable bytes. */
  private writeTail(s: TcpState, recv: ByteRing): void {
    const i = this.i;
    const t = this.to;
    const soft = s.soft;
    i[t + T_FAMILY] = s.const.remoteIp > 0xffffffff ? 6 : 4;
    i[t + T_FLOW] = connFlowLabel(s, s.path);
    i[t + T_N_SACKED] = writeRanges(i, t + T_SACKED, soft.sacked, RECORD_SACKED_MAX, 'soft.sacked');
    i[t + T_N_RECENT] = writeRanges(
      i,
      t + T_RECENT,
      soft.recvSackRecent,
      RECORD_RECENT_MAX,
      'soft.recvSackRecent',
    );
    const ooo = soft.ooo;
    if (ooo.length === 0) {
      i[t + T_N_OOO] = 0;
      return;
    }
    const ring = recv.shared;
    if (ring === null || !travelsAsRecord(s, recv))
      throw new RangeError('out-of-order data does not fit the record');
    const rcvNxt = s.delegated.rcvNxt;
    const rv = viewsOf(ring.sab);
    const base = ringWritePos(rv.i, ring);
    let runs = 0;
    let end = -1;
    for (let k = 0; k < ooo.length; k++) {
      const seg = ooo[k]!;
      if (seg.seq !== end) {
        i[t + T_OOO + 2 * runs] = seg.seq | 0;
        runs++;
      }
      end = (seg.seq + seg.data.length) >>> 0;
      i[t + T_OOO + 2 * runs - 1] = end | 0;
      ringCopy(rv.b, ring, base + ((seg.seq - rcvNxt) >>> 0), seg.data, true);
    }
    i[t + T_N_OOO] = runs;
  }

  /** The family word against the addresses and the path, the flow label against the path's. */
  private readFamily(s: TcpState, path: PathState): void {
    const i = this.i;
    const t = this.to;
    const c = s.const;
    const family = i[t + T_FAMILY];
    if (family !== 4 && family !== 6) H.fail('family', `family ${family}`);
    const v6 = family === 6;
    if (v6 !== c.localIp > 0xffffffff || v6 !== c.remoteIp > 0xffffffff)
      H.fail('family', `an IPv${family} record whose addresses are not`);
    if (v6 && (path.addrs === undefined || path.const.remoteIp <= 0xffffffff))
      H.fail('family', 'an IPv6 record on a path that is not');
    if (i[t + T_FLOW] !== connFlowLabel(s, path))
      H.fail('flow', 'flow label is not the one the path gives this connection');
  }

  /**
   * What only the tail can get wrong: a family that is not the addresses', a flow label that is
   * not what the path gives this connection (its peer would see the label change), counts beyond
   * a record's capacity, out-of-order runs out of order or beyond the ring's free space. The rest
   * (ranges against snd.una/snd.max and rcv.nxt, overlaps) is validateTcpState's.
   */
  private readTail(s: TcpState, path: PathState, recv: ByteRing): void {
    const i = this.i;
    const t = this.to;
    this.readFamily(s, path);
    const soft = s.soft;
    readRanges(i, t + T_SACKED, i[t + T_N_SACKED]!, RECORD_SACKED_MAX, soft.sacked, 'soft.sacked');
    readRanges(
      i,
      t + T_RECENT,
      i[t + T_N_RECENT]!,
      RECORD_RECENT_MAX,
      soft.recvSackRecent,
      'soft.recvSackRecent',
    );
    const runs = i[t + T_N_OOO]!;
    soft.ooo.length = 0;
    if (runs === 0) return;
    if (!(runs > 0 && runs <= RECORD_OOO_MAX)) H.fail('soft.ooo', `${runs} runs of out-of-order data`);
    const ring = recv.shared;
    if (ring === null)
      throw new StateValidationError('soft.ooo', 'out-of-order data and no shared receive ring');
    const rcvNxt = s.delegated.rcvNxt;
    const room = recv.free;
    const rv = viewsOf(ring.sab);
    const base = ringWritePos(rv.i, ring);
    // Each run lies after the one before, all within the ring's free space: what is allocated
    // here is bounded by the ring.
    let from = 1;
    for (let k = 0; k < runs; k++) {
      const start = i[t + T_OOO + 2 * k]! >>> 0;
      const end = i[t + T_OOO + 2 * k + 1]! >>> 0;
      const off = (start - rcvNxt) >>> 0;
      const len = (end - start) >>> 0;
      if (off < from || len === 0 || off + len > room)
        H.fail('soft.ooo', `run ${k} [${start}, ${end}) outside rcv.nxt + 1 .. the ring's free space`);
      const data = new Uint8Array(len);
      ringCopy(rv.b, ring, base + off, data, false);
      soft.ooo.push({ seq: start, data });
      from = off + len + 1;
    }
  }
}

function writeRanges(
  i: Int32Array,
  at: number,
  list: readonly { start: number; end: number }[],
  max: number,
  name: string,
): number {
  if (list.length > max) throw new RangeError(`${name}: ${list.length} ranges, a record holds ${max}`);
  for (let k = 0; k < list.length; k++) {
    i[at + 2 * k] = list[k]!.start | 0;
    i[at + 2 * k + 1] = list[k]!.end | 0;
  }
  return list.length;
}

function readRanges(
  i: Int32Array,
  at: number,
  n: number,
  max: number,
  out: { start: number; end: number }[],
  name: string,
): void {
  if (!(n >= 0 && n <= max)) H.fail(name, `${n} ranges, a record holds ${max}`);
  out.length = 0;
  for (let k = 0; k < n; k++) out.push({ start: i[at + 2 * k]! >>> 0, end: i[at + 2 * k + 1]! >>> 0 });
}

/** A shared ring's write position (the data index, 0..capacity). */
function ringWritePos(i: Int32Array, ring: SharedRingRef): number {
  const w = Atomics.load(i, (ring.offset >>> 2) + RING_WRITE);
  return w >= ring.capacity ? w - ring.capacity : w;
}

/** Copy between `bytes` and the ring's data at index `at` (taken modulo the capacity), wrapping. */
function ringCopy(b: Uint8Array, ring: SharedRingRef, at: number, bytes: Uint8Array, into: boolean): void {
  const cap = ring.capacity;
  const data = ring.offset + SHARED_RING_HEADER;
  let pos = at % cap;
  let done = 0;
  while (done < bytes.length) {
    const n = Math.min(bytes.length - done, cap - pos);
    if (into) b.set(bytes.subarray(done, done + n), data + pos);
    else bytes.set(b.subarray(data + pos, data + pos + n), done);
    done += n;
    pos = 0;
  }
}
