import { StateValidationError } from '../core/errors.ts';
import { ByteRing } from './byte-ring.ts';
import { createNeighborState, type NeighborState } from './neighbor-state.ts';
import type { OffloadPathNode, OffloadTree } from './offload-tree.ts';
import { type AddressBook, createPathState, type PathState } from './path-state.ts';
import { createTcpState, DEFAULT_TCP_CACHED, type TcpState } from './tcp-state.ts';
import {
  CONGESTION_CODES,
  type FieldSpec,
  type FieldType,
  NEIGHBOR_FIELDS,
  PATH_FIELDS,
  TCP_FIELDS,
  type TcpPart,
  tcpPart,
  validateTrees,
} from './validate.ts';

/*
 * Binary transfer format of offload trees (all integers big-endian):
 *
 *   header   u32 magic 'CHNY' | u16 version | u16 flags (0) | u32 total length
 *            | u32 neighbor count | u32 path count | u32 connection count
 *   neighbor NEIGHBOR_FIELDS in order | (v3) u8 family 4 or 6 | 16 address bytes if 6
 *   path     u32 neighbor index | PATH_FIELDS in order | (v3) u8 family | if 6: 16 local,
 *            16 remote, u32 flow-label base, k0, k1 (all 0: no seed), f64 local and remote
 *            handle in the sender's table (for a receiver that mirrors it)
 *   tcp      u32 path index | hard rows of TCP_FIELDS in order (rings inline: u32 length, bytes)
 *            | u32 soft length | soft block
 *   soft     u8 groups present (1 scalars, 2 ooo, 4 sack) | soft rows of those groups in order
 *            (ooo: u32 count, then u32 seq, u32 length, bytes; ranges: u32 count, u32 start/end)
 *
 * Records of each kind come tree by tree, so decoding rebuilds the trees in the same order.
 * The soft block is length-prefixed so a receiver can skip it and rebuild soft state from traffic.
 * Times travel as float64 deltas from the sender's clock: +Infinity stays +Infinity (timer not
 * running), -1 ("never") travels as -Infinity; the receiver adds its own clock.
 *
 * Addresses: an IPv4 address is its u32 in the records. An IPv6 path's addresses are handles in
 * the sender's AddressTable, which mean nothing to the receiver, so version 3 writes 0 in the
 * records' address fields and the 16 bytes of each address in the path's address block (and the
 * neighbor's in its own); the decoder interns them in the receiver's table (`DecodeOptions.addrs`)
 * and gives every connection of the path the path's handles. Version 2 (IPv4 only, no address
 * blocks), version 3 (no soft.smallSentEnd), version 4 (no RACK path knowledge), version 5 (no
 * soft.undoNxt), version 6 (no soft.repaired), version 7 (no ACK mode), version 8 (no
 * soft.rcvMss, ackPushed), version 9 (no receive-buffer autotuning), version 10 (no
 * soft.rcvSsthresh, rcvLocked) and version 11 (no ECN state) are still read and written on
 * request; any other version is refused before anything is decoded.
 */

export const STATE_CODEC_MAGIC = 0x43484e59;
/**
 * 2: per-connection statistics in the delegated state. 3: IPv6 neighbors, paths and connections.
 * 4: soft.smallSentEnd ends the soft scalars (a field's `since`); an older batch leaves it at its
 * default, and the encoder leaves it out of an older batch. 5: RACK's knowledge of the path
 * (soft.reordering, reorderingSeen, reoWndMult, reoWndPersist, rtxBytes, dsackBytes) after it.
 * 6: soft.undoNxt (where a timeout's undo puts snd.nxt) after them; an older batch leaves it at 0,
 * which the undo reads as no record (snd.max, the old behaviour) or at worst resends from snd.una.
 * 7: soft.repaired (a rebuilt connection whose flight no ACK has spoken for yet) after it; an older
 * batch leaves it false, and a prod then resends snd.una's segment at once (the old behaviour).
 * 8: the receiver's ACK mode (soft.quickAcks, pingpong, lastDataAt) after it; an older batch
 * leaves none (0, false, -1): the new owner delays ACKs until an event grants quick ones (the old
 * behaviour).
 * 9: the receiver's estimate of the peer's segment size and its small segments since the last ACK
 * (soft.rcvMss, ackPushed) after them; an older batch leaves 0 and 0: the kernel's starting hint,
 * measured again from the next full segment, and no ACK owed to a read. soft.unackedSegments is
 * always 0 from this version on.
 * 10: receive-buffer autotuning (soft.rcvClamp, rcvSpace, rcvSpaceSeq, rcvSpaceAt, rcvRtt,
 * rcvRttSeq, rcvRttAt, rcvRttEcr) after them, so a moved connection keeps the window its reader
 * grew; an older batch leaves a clamp of 0: the connection offers its whole buffer (the old
 * behaviour) and is not autotuned.
 * 11: the bound the receiver's window grows under (soft.rcvSsthresh, Linux's rcv_ssthresh) and
 * its socket's lock of the buffer (soft.rcvLocked) after them, so a moved connection keeps
 * growing its window a few segments at a time, and one moved before its handshake ends is tuned
 * or not as its socket says; an older batch leaves 0 and false: the clamp alone bounds the window
 * (the old behaviour), and the new owner tunes it.
 * 12: ECN (RFC 3168) in the delegated state (delegated.ecn, ecnCwrEnd) after delegated.readClosed:
 * what was negotiated and which echo is owed, hard state a new owner cannot rebuild from traffic.
 * An older batch leaves both 0, no ECN: a build that wrote one never negotiated it, so that is
 * its connection's true state, not a guess.
 */
export const STATE_CODEC_VERSION = 12;
/** The oldest version this build still reads. */
export const STATE_CODEC_MIN_VERSION = 2;

/** A batch of a version this build does not read (newer, or too old): refused whole, unread. */
export class StateCodecVersionError extends StateValidationError {
  constructor(readonly version: number) {
    super(
      'version',
      `unsupported offload state version ${version} (this build reads ${STATE_CODEC_MIN_VERSION}..${STATE_CODEC_VERSION})`,
    );
    this.name = 'StateCodecVersionError';
  }
}
const HEADER_SIZE = 24;

export const SOFT_SCALARS = 1;
export const SOFT_OOO = 2;
export const SOFT_SACK = 4;
const SOFT_ALL = SOFT_SCALARS | SOFT_OOO | SOFT_SACK;

export interface EncodeOptions {
  /**
   * Leave the send and receive data out (each ring travels as length 0, and the header says so):
   * the rings are shared memory the receiver attaches itself (DecodeOptions.rings), so no byte
   * of data is copied to move a connection between threads.
   */
  ringsByRef?: boolean;
  /** Which soft state travels: every group (default), only scalars (no queued segments or SACK lists), or none. */
  soft?: 'all' | 'scalars' | 'none';
  /**
   * The caller has just run validateTrees on these trees: skip the second pass. A value outside
   * its field's domain is then written as whatever the wire type makes of it, and the receiver's
   * validation is the only guard (tests use this to hand the decoder inconsistent states).
   */
  skipValidation?: boolean;
  /** Write an older format (2: IPv4 only), for peers and tests of the old reader. Default: current. */
  version?: number;
}

/** Fixed sizes of the format (IPv4 records), for tools and tests that patch encoded batches. */
export const STATE_CODEC_LAYOUT = {
  headerSize: HEADER_SIZE,
  neighborSize: 0,
  pathSize: 0,
  tcpMinSize: 0,
};

export interface DecodeOptions {
  /** Skip the soft blocks: the receiver starts every connection with fresh soft state. */
  dropSoft?: boolean;
  /**
   * For a batch encoded with `ringsByRef`: the rings of each decoded connection, found by its
   * addresses and ports (null: none known, and the batch is refused). Called before validation,
   * which then checks the rings against the state like any others. Ignored for a batch with its
   * rings inline; a batch by reference is refused without it.
   */
  rings?: (s: TcpState) => { send: ByteRing; recv: ByteRing } | null;
  /**
   * The receiver's address table: IPv6 addresses are interned there, and each decoded IPv6 path
   * holds one reference on each of its two handles, which the caller now owns (release them when
   * it drops the path). Without it a batch with an IPv6 path is refused.
   */
  addrs?: AddressBook;
  /** `addrs` mirrors the sender's table: take each address under the sender's handle (`internAt`). */
  senderHandles?: boolean;
}

/** Header flag: the rings are not in the batch (EncodeOptions.ringsByRef). */
export const FLAG_RINGS_BY_REF = 1;

const C_U8 = 0;
const C_U16 = 1;
const C_U32 = 2;
const C_I32 = 3;
const C_F64 = 4; // mac, num
const C_TIME = 5;
const C_BOOL = 6;
const C_CC = 7;
const C_STATE = 8;
const C_ADDR = 9;
/** Codes from here on are variable-length. */
const C_RING = 10;
const C_OOO = 11;
const C_RANGES = 12;

const CODE: Record<FieldType, number> = {
  u8: C_U8,
  u16: C_U16,
  u32: C_U32,
  i32: C_I32,
  mac: C_F64,
  num: C_F64,
  time: C_TIME,
  bool: C_BOOL,
  cc: C_CC,
  state: C_STATE,
  addr: C_ADDR,
  ring: C_RING,
  ooo: C_OOO,
  ranges: C_RANGES,
};
/** Fixed wire size; variable-length types count their length prefix. */
const SIZE = [1, 2, 4, 4, 8, 8, 1, 1, 1, 4, 4, 4, 4];

interface Row {
  readonly part: number;
  readonly key: string;
  readonly code: number;
  readonly name: string;
  /** 0 for hard fields, else the soft group bit. */
  readonly soft: number;
  readonly capacity: string;
  /** First codec version that carries the row (0: all of them). */
  readonly since: number;
}

function compile<P extends string>(fields: readonly FieldSpec<P>[], parts: readonly P[]): Row[] {
  return fields.map((fs) => ({
    part: parts.indexOf(fs.part),
    key: fs.key,
    code: CODE[fs.type],
    name: fs.name,
    soft:
      fs.soft === undefined
        ? 0
        : fs.soft === 'scalars'
          ? SOFT_SCALARS
          : fs.soft === 'ooo'
            ? SOFT_OOO
            : SOFT_SACK,
    capacity: fs.capacity ?? '',
    since: fs.since ?? 0,
  }));
}

const TCP_PARTS: readonly TcpPart[] = ['const', 'cached', 'delegated', 'soft', 'cubic'];
const P_CACHED = 1;
const P_SOFT = 3;
const P_CUBIC = 4;
const NB_ROWS = compile(NEIGHBOR_FIELDS, ['const', 'cached', 'delegated']);
const PATH_ROWS = compile(PATH_FIELDS, ['const', 'cached', 'top']);
const TCP_ROWS = compile(TCP_FIELDS, TCP_PARTS);
const TCP_HARD = TCP_ROWS.filter((r) => r.soft === 0);

function fixedSize(rows: readonly Row[]): number {
  let n = 0;
  for (const r of rows) n += SIZE[r.code]!;
  return n;
}
const NB_SIZE = fixedSize(NB_ROWS);
const PATH_SIZE = 4 + fixedSize(PATH_ROWS);
/** A connection record of `version` with empty rings and no soft block. */
function tcpMinSize(version: number): number {
  return 4 + fixedSize(TCP_HARD.filter((r) => r.since <= version)) + 4;
}
const TCP_MIN = tcpMinSize(STATE_CODEC_VERSION);
// The current version's IPv4 records: the fields and a family byte.
STATE_CODEC_LAYOUT.neighborSize = NB_SIZE + 1;
STATE_CODEC_LAYOUT.pathSize = PATH_SIZE + 1;
STATE_CODEC_LAYOUT.tcpMinSize = TCP_MIN;

function fail(field: string, message: string): never {
  throw new StateValidationError(field, message);
}

// ---------------------------------------------------------------------------------------------
// Code generation from the tables.
//
// A loop that interprets the tables field by field pays for keyed property access and for
// objects that grow one property at a time: about 12 µs per connection. The functions below are
// generated once, at load, from the same tables: straight-line reads and writes with constant
// offsets, and decoded objects built as literals with their final shape (the shape createTcpState
// gives them, so the engine's property accesses stay monomorphic). That is about 1 µs.

type Helpers = typeof H;
type EncodeFn = (
  dv: DataView,
  bytes: Uint8Array,
  o: number,
  s: unknown,
  now: number,
  groups: number,
  h: Helpers,
) => number;
type DecodeFn = (
  rd: Reader,
  dv: DataView,
  now: number,
  link: unknown,
  dropSoft: boolean,
  h: Helpers,
) => Record<string, unknown>;
type SoftSizeFn = (s: unknown, groups: number, h: Helpers) => number;

/** How the parts of one object kind are reached (encode) and assembled (decode). */
interface Kind {
  readonly label: string;
  readonly rows: readonly Row[];
  /** Expression (over `s`) for each part index. */
  readonly access: readonly string[];
  /** Top-level layout of the decoded object: part indexes, the structural link, or a spread part. */
  readonly layout: readonly (number | { link: string } | { spread: number })[];
  /** Part nested in another (soft.cubic): [child, parent, key]. */
  readonly nested?: readonly [number, number, string];
}

const IDENT = /^[A-Za-z_$][\w$]*$/;

function checkKind(kind: Kind): void {
  for (const [i, r] of kind.rows.entries()) {
    if (!IDENT.test(r.key)) throw new TypeError(`${kind.label}: field ${r.name} is not an identifier`);
    // A field an older batch lacks takes a fresh state's value (fieldDefaults): for a hard field
    // that must be what the older build's connection truly had, not a guess (delegated.ecn: an
    // older build never negotiated ECN). The neighbor and path kinds have no defaults.
    if (r.since !== 0 && r.soft === 0 && kind.label !== 'tcp')
      throw new TypeError(`${kind.label}: hard field ${r.name} has a version`);
    if (r.code === C_RING) {
      const cap = kind.rows.findIndex((c) => c.key === r.capacity && c.part === P_CACHED);
      if (cap < 0 || cap > i)
        throw new TypeError(`${kind.label}: ring ${r.name} needs an earlier ${r.capacity}`);
    }
  }
}

function ccEncodeExpr(v: string): string {
  return `${CONGESTION_CODES.map((c, i) => `${v} === ${JSON.stringify(c)} ? ${i} : `).join('')}255`;
}

/**
 * Encoder of the hard rows, or (soft = true) of the soft rows of the groups asked for, as `version`
 * writes them.
 */
function genEncode(kind: Kind, soft = false, version = STATE_CODEC_VERSION): EncodeFn {
  checkKind(kind);
  const lines = ['let v;'];
  kind.access.forEach((a, i) => {
    lines.push(`const p${i} = ${a};`);
  });
  let group = 0;
  for (const r of kind.rows) {
    if ((r.soft !== 0) !== soft || r.since > version) continue;
    if (r.soft !== group) {
      if (group !== 0) lines.push('}');
      if (r.soft !== 0) lines.push(`if (groups & ${r.soft}) {`);
      group = r.soft;
    }
    const x = `p${r.part}.${r.key}`;
    switch (r.code) {
      case C_U8:
      case C_STATE:
        lines.push(`dv.setUint8(o, ${x}); o += 1;`);
        break;
      case C_U16:
        lines.push(`dv.setUint16(o, ${x}); o += 2;`);
        break;
      case C_U32:
        lines.push(`dv.setUint32(o, ${x}); o += 4;`);
        break;
      case C_I32:
        lines.push(`dv.setInt32(o, ${x}); o += 4;`);
        break;
      case C_ADDR:
        // An IPv6 handle means nothing elsewhere: 0 here, the bytes in the path's address block.
        lines.push(`v = ${x}; dv.setUint32(o, v > 0xffffffff ? 0 : v); o += 4;`);
        break;
      case C_F64:
        lines.push(`dv.setFloat64(o, ${x}); o += 8;`);
        break;
      case C_TIME:
        lines.push(
          `v = ${x}; dv.setFloat64(o, v === -1 ? -Infinity : v === Infinity ? v : v - now); o += 8;`,
        );
        break;
      case C_BOOL:
        lines.push(`dv.setUint8(o, ${x} ? 1 : 0); o += 1;`);
        break;
      case C_CC:
        lines.push(`v = ${x}; dv.setUint8(o, ${ccEncodeExpr('v')}); o += 1;`);
        break;
      case C_RING:
        lines.push(`o = h.putRing(dv, bytes, o, ${x});`);
        break;
      case C_OOO:
        lines.push(`o = h.putOoo(dv, bytes, o, ${x});`);
        break;
      case C_RANGES:
        lines.push(`o = h.putRanges(dv, o, ${x});`);
        break;
    }
  }
  if (group !== 0) lines.push('}');
  lines.push('return o;');
  return new Function('dv', 'bytes', 'o', 's', 'now', 'groups', 'h', lines.join('\n')) as EncodeFn;
}

/** Bytes of the soft rows of the selected groups (the fixed ones are summed at generation). */
function genSoftSize(kind: Kind, version: number): SoftSizeFn {
  const lines = ['let n = 1;'];
  kind.access.forEach((a, i) => {
    lines.push(`const p${i} = ${a};`);
  });
  for (const g of [SOFT_SCALARS, SOFT_OOO, SOFT_SACK]) {
    const rows = kind.rows.filter((r) => r.soft === g && r.since <= version);
    if (rows.length === 0) continue;
    const parts: string[] = [String(fixedSize(rows.filter((r) => r.code < C_RING)))];
    for (const r of rows) {
      if (r.code === C_OOO) parts.push(`h.oooSize(p${r.part}.${r.key})`);
      else if (r.code === C_RANGES) parts.push(`4 + 8 * p${r.part}.${r.key}.length`);
      else if (r.code === C_RING) parts.push(`4 + p${r.part}.${r.key}.length`);
    }
    lines.push(`if (groups & ${g}) n += ${parts.join(' + ')};`);
  }
  lines.push('return n;');
  return new Function('s', 'groups', 'h', lines.join('\n')) as SoftSizeFn;
}

function readExpr(r: Row, off: string): string {
  switch (r.code) {
    case C_U8:
    case C_STATE:
      return `dv.getUint8(${off})`;
    case C_U16:
      return `dv.getUint16(${off})`;
    case C_U32:
    case C_ADDR:
      return `dv.getUint32(${off})`;
    case C_I32:
      return `dv.getInt32(${off})`;
    case C_F64:
      return `dv.getFloat64(${off})`;
    case C_TIME:
      return `h.time(dv.getFloat64(${off}), now, ${JSON.stringify(r.name)})`;
    case C_BOOL:
      return `h.bool(dv.getUint8(${off}), ${JSON.stringify(r.name)})`;
    case C_CC:
      return `h.cc(dv.getUint8(${off}), ${JSON.stringify(r.name)})`;
    default:
      throw new TypeError(`no fixed read for ${r.name}`);
  }
}

/** Reads of `rows` into locals f<i>, with one bounds check per run of fixed-size fields. */
function genReads(kind: Kind, rows: readonly { r: Row; i: number }[], lines: string[]): void {
  let k = 0;
  while (k < rows.length) {
    const { r, i } = rows[k]!;
    if (r.code >= C_RING) {
      const cap =
        r.code === C_RING
          ? `f${kind.rows.findIndex((c) => c.key === r.capacity && c.part === P_CACHED)}`
          : '0';
      const fn = r.code === C_RING ? 'getRing' : r.code === C_OOO ? 'getOoo' : 'getRanges';
      lines.push(`rd.o = o; f${i} = h.${fn}(rd, dv, ${cap}, ${JSON.stringify(r.name)}); o = rd.o;`);
      k++;
      continue;
    }
    let j = k;
    let size = 0;
    const reads: string[] = [];
    while (j < rows.length && rows[j]!.r.code < C_RING) {
      const x = rows[j]!;
      reads.push(`f${x.i} = ${readExpr(x.r, size === 0 ? 'o' : `o + ${size}`)};`);
      size += SIZE[x.r.code]!;
      j++;
    }
    lines.push(`if (rd.end - o < ${size}) h.trunc(${JSON.stringify(r.name)}, o);`);
    lines.push(...reads, `o += ${size};`);
    k = j;
  }
}

function literal(kind: Kind, part: number): string {
  const entries: string[] = [];
  let nestedDone = false;
  kind.rows.forEach((r, i) => {
    if (r.part === part) entries.push(`${r.key}: f${i}`);
    else if (kind.nested && kind.nested[1] === part && r.part === kind.nested[0] && !nestedDone) {
      nestedDone = true;
      entries.push(`${kind.nested[2]}: ${literal(kind, kind.nested[0])}`);
    }
  });
  return `{ ${entries.join(', ')} }`;
}

function genDecode(kind: Kind, version = STATE_CODEC_VERSION): DecodeFn {
  checkKind(kind);
  const indexed = kind.rows.map((r, i) => ({ r, i }));
  const lines = [`let o = rd.o; let ${indexed.map(({ i }) => `f${i}`).join(', ')};`];
  genReads(
    kind,
    indexed.filter(({ r }) => r.soft === 0 && r.since <= version),
    lines,
  );
  for (const { r, i } of indexed) if (r.soft === 0 && r.since > version) lines.push(`f${i} = h.def[${i}];`);
  const softRows = indexed.filter(({ r }) => r.soft !== 0);
  if (softRows.length > 0) {
    lines.push(
      `if (rd.end - o < 4) h.fail('soft', 'truncated');`,
      'const softLen = dv.getUint32(o); o += 4;',
      `if (rd.end - o < softLen) h.fail('soft', 'soft block runs past the end');`,
      'const softEnd = o + softLen; const outerEnd = rd.end; let groups = 0;',
      'if (softLen > 0 && !dropSoft) {',
      `  groups = dv.getUint8(o); o += 1;`,
      `  if (groups === 0 || (groups & ${~SOFT_ALL}) !== 0) h.fail('soft', 'unknown soft groups ' + groups);`,
      '  rd.end = softEnd;',
      '}',
    );
    // Wire order is table order, whatever the group: walk the soft rows in order, one run per
    // stretch of one group.
    let k = 0;
    while (k < softRows.length) {
      const g = softRows[k]!.r.soft;
      let j = k;
      while (j < softRows.length && softRows[j]!.r.soft === g) j++;
      const run = softRows.slice(k, j);
      lines.push(`if (groups & ${g}) {`);
      genReads(
        kind,
        run.filter(({ r }) => r.since <= version),
        lines,
      );
      for (const { r, i } of run) if (r.since > version) lines.push(`f${i} = h.def[${i}];`);
      lines.push('} else {');
      for (const { r, i } of run) {
        lines.push(r.code === C_OOO || r.code === C_RANGES ? `f${i} = [];` : `f${i} = h.def[${i}];`);
      }
      lines.push('}');
      k = j;
    }
    lines.push(
      `if (groups !== 0 && o !== softEnd) h.fail('soft', (softEnd - o) + ' unread bytes in the soft block');`,
      'rd.end = outerEnd; o = softEnd;',
    );
  }
  lines.push('rd.o = o;');
  const top = kind.layout.map((e) => {
    if (typeof e === 'number') return `${['const', 'cached', 'delegated', 'soft'][e]}: ${literal(kind, e)}`;
    if ('link' in e) return `${e.link}: link`;
    return literal(kind, e.spread).slice(1, -1);
  });
  lines.push(`return { ${top.join(', ')} };`);
  return new Function('rd', 'dv', 'now', 'link', 'dropSoft', 'h', lines.join('\n')) as DecodeFn;
}

/** Bounds-checked reader over the input; `end` shrinks to a soft block while that is read. */
class Reader {
  readonly dv: DataView;
  o = 0;
  constructor(
    readonly bytes: Uint8Array,
    public end: number,
  ) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
}

/** Defaults for soft state that did not travel, from the constructor so they never drift. */
/** A fresh state's value of each row a batch may lack: every soft row and the versioned hard ones. */
function fieldDefaults(): unknown[] {
  const nb = createNeighborState({ srcMac: 0, vlanId: -1, ip: 1 });
  const path = createPathState({ localIp: 1, remoteIp: 2 }, nb, 0, 1500);
  const t = createTcpState(
    {
      localIp: 1,
      localPort: 1,
      remoteIp: 2,
      remotePort: 1,
      tsEnabled: false,
      sackEnabled: false,
      wsEnabled: false,
      sndWscale: 0,
      rcvWscale: 0,
      remoteMss: 536,
      localMss: 536,
    },
    { ...DEFAULT_TCP_CACHED, sndBufSize: 16, rcvBufSize: 16 },
    path,
  );
  return TCP_ROWS.map((r) =>
    r.soft === 0 && r.since === 0 ? undefined : tcpPart(t, TCP_PARTS[r.part]!)[r.key],
  );
}

const H = {
  def: fieldDefaults(),
  fail,
  trunc(name: string, o: number): never {
    return fail(name, `truncated at offset ${o}`);
  },
  time(t: number, now: number, name: string): number {
    if (Number.isNaN(t)) fail(name, 'time is NaN');
    return t === Number.NEGATIVE_INFINITY ? -1 : t === Number.POSITIVE_INFINITY ? t : now + t;
  },
  bool(b: number, name: string): boolean {
    if (b > 1) fail(name, `boolean byte ${b}`);
    return b === 1;
  },
  cc(c: number, name: string): string {
    const cc = CONGESTION_CODES[c];
    if (cc === undefined) fail(name, `unknown congestion algorithm code ${c}`);
    return cc;
  },
  putRing(dv: DataView, bytes: Uint8Array, o: number, ring: ByteRing): number {
    const len = ring.length;
    dv.setUint32(o, len);
    ring.peek(0, bytes, o + 4, len);
    return o + 4 + len;
  },
  putOoo(
    dv: DataView,
    bytes: Uint8Array,
    o: number,
    segs: readonly { seq: number; data: Uint8Array }[],
  ): number {
    dv.setUint32(o, segs.length);
    o += 4;
    for (const seg of segs) {
      dv.setUint32(o, seg.seq);
      dv.setUint32(o + 4, seg.data.length);
      bytes.set(seg.data, o + 8);
      o += 8 + seg.data.length;
    }
    return o;
  },
  putRanges(dv: DataView, o: number, ranges: readonly { start: number; end: number }[]): number {
    dv.setUint32(o, ranges.length);
    o += 4;
    for (const r of ranges) {
      dv.setUint32(o, r.start);
      dv.setUint32(o + 4, r.end);
      o += 8;
    }
    return o;
  },
  oooSize(segs: readonly { data: Uint8Array }[]): number {
    let n = 4;
    for (const seg of segs) n += 8 + seg.data.length;
    return n;
  },
  getRing(rd: Reader, dv: DataView, cap: number, name: string): ByteRing {
    if (rd.end - rd.o < 4) fail(name, 'truncated');
    const len = dv.getUint32(rd.o);
    rd.o += 4;
    if (rd.end - rd.o < len) fail(name, `${len} bytes run past the end`);
    if (len > cap) fail(name, `${len} bytes exceed the buffer size ${cap}`);
    // Sized to the data, not to the buffer limit: the ring grows on demand, and a hostile
    // batch cannot make us allocate more than it sent.
    const ring = new ByteRing(len, cap);
    ring.write(rd.bytes, rd.o, len);
    rd.o += len;
    return ring;
  },
  getOoo(rd: Reader, dv: DataView, _cap: number, name: string): { seq: number; data: Uint8Array }[] {
    if (rd.end - rd.o < 4) fail(name, 'truncated');
    const n = dv.getUint32(rd.o);
    rd.o += 4;
    if ((rd.end - rd.o) / 8 < n) fail(name, `${n} segments cannot fit`);
    const segs: { seq: number; data: Uint8Array }[] = [];
    for (let k = 0; k < n; k++) {
      if (rd.end - rd.o < 8) fail(name, 'truncated');
      const seq = dv.getUint32(rd.o);
      const len = dv.getUint32(rd.o + 4);
      rd.o += 8;
      if (rd.end - rd.o < len) fail(name, `segment of ${len} bytes runs past the end`);
      segs.push({ seq, data: rd.bytes.slice(rd.o, rd.o + len) });
      rd.o += len;
    }
    return segs;
  },
  getRanges(rd: Reader, dv: DataView, _cap: number, name: string): { start: number; end: number }[] {
    if (rd.end - rd.o < 4) fail(name, 'truncated');
    const n = dv.getUint32(rd.o);
    rd.o += 4;
    if ((rd.end - rd.o) / 8 < n) fail(name, `${n} ranges cannot fit`);
    const ranges: { start: number; end: number }[] = [];
    for (let k = 0; k < n; k++) {
      ranges.push({ start: dv.getUint32(rd.o), end: dv.getUint32(rd.o + 4) });
      rd.o += 8;
    }
    return ranges;
  },
};

/** The empty stand-in a ring by reference decodes to until its shared ring is attached. */
const NO_RING = new ByteRing(16, 16);

/** H for batches whose rings travel by reference: a length of 0 on the wire, nothing else. */
const H_REF: typeof H = {
  ...H,
  putRing(dv: DataView, _bytes: Uint8Array, o: number, _ring: ByteRing): number {
    dv.setUint32(o, 0);
    return o + 4;
  },
  getRing(rd: Reader, dv: DataView, _cap: number, name: string): ByteRing {
    if (rd.end - rd.o < 4) fail(name, 'truncated');
    const len = dv.getUint32(rd.o);
    rd.o += 4;
    if (len !== 0) fail(name, `${len} bytes inline in a batch whose rings are shared`);
    return NO_RING;
  },
};

const NB_KIND: Kind = {
  label: 'neighbor',
  rows: NB_ROWS,
  access: ['s.const', 's.cached', 's.delegated'],
  layout: [0, 1, 2],
};
const PATH_KIND: Kind = {
  label: 'path',
  rows: PATH_ROWS,
  access: ['s.const', 's.cached', 's'],
  layout: [0, 1, { link: 'neighbor' }, { spread: 2 }],
};
const TCP_KIND: Kind = {
  label: 'tcp',
  rows: TCP_ROWS,
  access: ['s.const', 's.cached', 's.delegated', 's.soft', 's.soft.cubic'],
  layout: [0, 1, { link: 'path' }, 2, 3],
  nested: [P_CUBIC, P_SOFT, 'cubic'],
};

const encodeNeighbor = genEncode(NB_KIND);
const encodePath = genEncode(PATH_KIND);
const decodeNeighbor = genDecode(NB_KIND);
const decodePath = genDecode(PATH_KIND);

/**
 * A version's hard and soft encoders, soft size, record minimum and connection decoder (made at
 * first use, but the current's).
 */
interface TcpCodec {
  readonly encodeHard: EncodeFn;
  readonly minSize: number;
  readonly encodeSoft: EncodeFn;
  readonly softSize: SoftSizeFn;
  readonly decode: DecodeFn;
}
const tcpCodecs = new Map<number, TcpCodec>();
function tcpCodec(version: number): TcpCodec {
  let c = tcpCodecs.get(version);
  if (c === undefined) {
    c = {
      encodeHard: genEncode(TCP_KIND, false, version),
      minSize: tcpMinSize(version),
      encodeSoft: genEncode(TCP_KIND, true, version),
      softSize: genSoftSize(TCP_KIND, version),
      decode: genDecode(TCP_KIND, version),
    };
    tcpCodecs.set(version, c);
  }
  return c;
}
tcpCodec(STATE_CODEC_VERSION);

// ---------------------------------------------------------------------------------------------
// the batch

const V6 = 0xffffffff;

/** Bytes of the version-3 address block of a neighbor or a path. */
function nbAddrSize(n: NeighborState): number {
  return n.const.ip6 === undefined ? 1 : 17;
}

const PATH6_BLOCK = 1 + 32 + 12 + 16;

function pathAddrSize(p: PathState): number {
  return p.const.remoteIp > V6 ? PATH6_BLOCK : 1;
}

/**
 * Encode whole trees into one transfer buffer. The trees are validated first: a state that
 * would be refused on arrival is refused here, with the same error.
 */
export function encodeBatch(
  trees: readonly OffloadTree[],
  now: number,
  opts: EncodeOptions = {},
): Uint8Array {
  if (opts.skipValidation !== true) validateTrees(trees);
  if (!Number.isFinite(now)) fail('now', 'clock time must be finite');
  const version = opts.version ?? STATE_CODEC_VERSION;
  if (!Number.isInteger(version) || version < STATE_CODEC_MIN_VERSION || version > STATE_CODEC_VERSION)
    throw new StateCodecVersionError(version);
  const v3 = version >= 3;
  const codec = tcpCodec(version);
  const groups = opts.soft === 'none' ? 0 : opts.soft === 'scalars' ? SOFT_SCALARS : SOFT_ALL;
  const byRef = opts.ringsByRef === true;
  const h = byRef ? H_REF : H;

  let nPaths = 0;
  let nConns = 0;
  let size = HEADER_SIZE + trees.length * NB_SIZE;
  for (const t of trees) {
    if (v3) size += nbAddrSize(t.neighbor);
    else if (t.neighbor.const.ip6 !== undefined) fail('neighbor.const.ip6', 'version 2 carries IPv4 only');
    nPaths += t.paths.length;
    for (const node of t.paths) {
      if (v3) size += pathAddrSize(node.path);
      else if (node.path.const.remoteIp > V6) fail('path.const.remoteIp', 'version 2 carries IPv4 only');
      nConns += node.conns.length;
      for (const s of node.conns) {
        size += codec.minSize;
        if (!byRef) size += s.delegated.sendBuffer.length + s.delegated.recvBuffer.length;
        if (groups !== 0) size += codec.softSize(s, groups, H);
      }
    }
  }
  size += nPaths * PATH_SIZE;
  if (size > 0xffffffff) fail('trees', 'batch larger than 4 GiB');

  const bytes = new Uint8Array(size);
  const dv = new DataView(bytes.buffer);
  dv.setUint32(0, STATE_CODEC_MAGIC);
  dv.setUint16(4, version);
  dv.setUint16(6, byRef ? FLAG_RINGS_BY_REF : 0);
  dv.setUint32(8, size);
  dv.setUint32(12, trees.length);
  dv.setUint32(16, nPaths);
  dv.setUint32(20, nConns);
  let o = HEADER_SIZE;
  for (const t of trees) {
    o = encodeNeighbor(dv, bytes, o, t.neighbor, now, 0, H);
    if (!v3) continue;
    const ip6 = t.neighbor.const.ip6;
    if (ip6 === undefined) bytes[o++] = 4;
    else {
      bytes[o] = 6;
      bytes.set(ip6.subarray(0, 16), o + 1);
      o += 17;
    }
  }
  for (let ti = 0; ti < trees.length; ti++) {
    for (const node of trees[ti]!.paths) {
      dv.setUint32(o, ti);
      const p = node.path;
      o = encodePath(dv, bytes, o + 4, p, now, 0, H);
      if (!v3) continue;
      if (p.const.remoteIp <= V6) bytes[o++] = 4;
      else {
        const book = p.addrs;
        if (book === undefined) fail('path.addrs', 'an IPv6 path without its address table');
        bytes[o] = 6;
        book.write(p.const.localIp, bytes, o + 1);
        book.write(p.const.remoteIp, bytes, o + 17);
        const f = p.flow;
        if (f !== undefined) {
          dv.setUint32(o + 33, f.base);
          dv.setUint32(o + 37, f.k0);
          dv.setUint32(o + 41, f.k1);
        }
        dv.setFloat64(o + 45, p.const.localIp);
        dv.setFloat64(o + 53, p.const.remoteIp);
        o += PATH6_BLOCK;
      }
    }
  }
  let pi = 0;
  for (const t of trees) {
    for (const node of t.paths) {
      for (const s of node.conns) {
        dv.setUint32(o, pi);
        o = codec.encodeHard(dv, bytes, o + 4, s, now, 0, h);
        const lenAt = o;
        o += 4;
        if (groups !== 0) {
          dv.setUint8(o, groups);
          o = codec.encodeSoft(dv, bytes, o + 1, s, now, groups, H);
        }
        dv.setUint32(lenAt, o - lenAt - 4);
      }
      pi++;
    }
  }
  // Only a state that changes under our feet (a getter) can get here.
  if (o !== size) fail('trees', `state changed while encoding: wrote ${o} of ${size} bytes`);
  return bytes;
}

/** The family byte of a version-3 address block: 4 or 6, anything else refused. */
function family(rd: Reader, dv: DataView, name: string): 4 | 6 {
  if (rd.end - rd.o < 1) fail(name, 'truncated');
  const f = dv.getUint8(rd.o);
  rd.o += 1;
  if (f !== 4 && f !== 6) fail(name, `unknown address family ${f}`);
  if (f === 6 && rd.end - rd.o < 16) fail(name, 'truncated');
  return f;
}

/** The u32 index of a record's parent: below `count`, and in tree order (not before `last`). */
function parentIndex(
  rd: Reader,
  dv: DataView,
  field: string,
  what: string,
  at: number,
  parent: string,
  count: number,
  last: number,
): number {
  if (rd.end - rd.o < 4) fail(field, 'truncated');
  const i = dv.getUint32(rd.o);
  rd.o += 4;
  // Messages are built only on failure: this runs once per connection.
  if (i >= count) fail(field, `${what} ${at} points at missing ${parent} ${i}`);
  if (i < last) fail(field, `${what} ${at} is out of tree order`);
  return i;
}

/** An IPv6 address as the wire gives it: unicast, not unspecified, not IPv4-mapped. */
function checkIp6(b: Uint8Array, o: number, name: string): void {
  if (b[o] === 0xff) fail(name, 'a multicast address');
  let zero = true;
  for (let i = 0; i < 16; i++) if (b[o + i] !== 0) zero = false;
  if (zero) fail(name, 'the unspecified address');
  let mapped = b[o + 10] === 0xff && b[o + 11] === 0xff;
  for (let i = 0; i < 10 && mapped; i++) if (b[o + i] !== 0) mapped = false;
  if (mapped) fail(name, 'an IPv4-mapped address travels as IPv4');
}

/**
 * Decode a transfer buffer into fresh trees, with shared neighbor and path objects rebuilt and
 * every time moved onto the receiver's clock. Throws StateValidationError (and creates nothing
 * visible: handles interned on the way are released) for any malformed, truncated, inconsistent
 * or unoffloadable content; a StateCodecVersionError for a version this build does not read.
 */
export function decodeBatch(buf: Uint8Array, now: number, opts: DecodeOptions = {}): OffloadTree[] {
  if (!(buf instanceof Uint8Array)) fail('buffer', 'not a Uint8Array');
  if (!Number.isFinite(now)) fail('now', 'clock time must be finite');
  const rd = new Reader(buf, buf.length);
  const dv = rd.dv;
  if (buf.length < HEADER_SIZE) fail('header', `truncated: ${buf.length} bytes`);
  if (dv.getUint32(0) !== STATE_CODEC_MAGIC) fail('magic', 'not an offload state batch');
  const version = dv.getUint16(4);
  if (version < STATE_CODEC_MIN_VERSION || version > STATE_CODEC_VERSION)
    throw new StateCodecVersionError(version);
  const v3 = version >= 3;
  const codec = tcpCodec(version);
  const decodeTcp = codec.decode;
  const flags = dv.getUint16(6);
  if ((flags & ~FLAG_RINGS_BY_REF) !== 0) fail('flags', 'unknown flags');
  const byRef = (flags & FLAG_RINGS_BY_REF) !== 0;
  const ringsOf = opts.rings;
  if (byRef && ringsOf === undefined) fail('flags', 'rings by reference, and none to attach');
  const total = dv.getUint32(8);
  if (total > buf.length) fail('length', `header says ${total} bytes, buffer has ${buf.length}`);
  if (total < buf.length) fail('length', `${buf.length - total} bytes of trailing garbage`);
  const nNb = dv.getUint32(12);
  const nPath = dv.getUint32(16);
  const nConn = dv.getUint32(20);
  // Every record has a minimum size, so counts that could not fit are refused before any
  // allocation they would drive.
  const extra = v3 ? 1 : 0;
  if (nNb * (NB_SIZE + extra) + nPath * (PATH_SIZE + extra) + nConn * codec.minSize > total - HEADER_SIZE) {
    fail('counts', `${nNb} neighbors, ${nPath} paths, ${nConn} connections cannot fit in ${total} bytes`);
  }
  rd.o = HEADER_SIZE;
  const dropSoft = opts.dropSoft === true;
  const book = opts.addrs;
  const mirror = opts.senderHandles === true && typeof book?.internAt === 'function';
  const interned: number[] = [];
  try {
    const trees: OffloadTree[] = [];
    for (let i = 0; i < nNb; i++) {
      const neighbor = decodeNeighbor(rd, dv, now, null, false, H) as unknown as NeighborState;
      if (v3 && family(rd, dv, 'neighbor.family') === 6) {
        checkIp6(buf, rd.o, 'neighbor.const.ip6');
        neighbor.const.ip6 = buf.slice(rd.o, rd.o + 16);
        rd.o += 16;
      }
      trees.push({ neighbor, paths: [] });
    }
    const nodes: OffloadPathNode[] = [];
    let lastTree = 0;
    for (let i = 0; i < nPath; i++) {
      lastTree = parentIndex(rd, dv, 'path.neighbor', 'path', i, 'neighbor', nNb, lastTree);
      const tree = trees[lastTree]!;
      const path = decodePath(rd, dv, now, tree.neighbor, false, H) as unknown as PathState;
      if (v3 && family(rd, dv, 'path.family') === 6) {
        const c = path.const;
        if (c.localIp !== 0 || c.remoteIp !== 0) fail('path.const', 'an IPv6 path with IPv4 addresses');
        if (book === undefined) fail('path.const', 'an IPv6 path, and no address table to receive it');
        if (rd.end - rd.o < PATH6_BLOCK - 1) fail('path.const', 'truncated');
        checkIp6(buf, rd.o, 'path.const.localIp');
        checkIp6(buf, rd.o + 16, 'path.const.remoteIp');
        const at = mirror ? book.internAt!.bind(book) : null;
        const local = at ? at(buf, rd.o, dv.getFloat64(rd.o + 44)) : book.intern(buf, rd.o);
        if (local >= 0) interned.push(local);
        const remote =
          local < 0 ? -1 : at ? at(buf, rd.o + 16, dv.getFloat64(rd.o + 52)) : book.intern(buf, rd.o + 16);
        if (remote >= 0) interned.push(remote);
        if (remote < 0)
          fail(
            'path.const',
            mirror ? "the sender's handles conflict with this table" : "the receiver's address table is full",
          );
        c.localIp = local;
        c.remoteIp = remote;
        path.addrs = book;
        const base = dv.getUint32(rd.o + 32);
        const k0 = dv.getUint32(rd.o + 36);
        const k1 = dv.getUint32(rd.o + 40);
        if ((base | k0 | k1) !== 0) path.flow = { base, k0, k1 };
        rd.o += PATH6_BLOCK - 1;
      }
      const node: OffloadPathNode = { path, conns: [] };
      tree.paths.push(node);
      nodes.push(node);
    }
    let lastPath = 0;
    for (let i = 0; i < nConn; i++) {
      lastPath = parentIndex(rd, dv, 'tcp.path', 'connection', i, 'path', nPath, lastPath);
      const node = nodes[lastPath]!;
      const s = decodeTcp(rd, dv, now, node.path, dropSoft, byRef ? H_REF : H) as unknown as TcpState;
      const pc = node.path.const;
      if (pc.remoteIp > V6) {
        if (s.const.localIp !== 0 || s.const.remoteIp !== 0)
          fail('tcp.const', 'a connection on an IPv6 path with IPv4 addresses');
        s.const.localIp = pc.localIp;
        s.const.remoteIp = pc.remoteIp;
      }
      if (byRef) {
        // Found by the state's own addresses and ports (IPv6 ones as handles of the receiver's
        // table, set just above): a batch cannot point one connection at another's data. The
        // rings are checked against the state by validateTrees below.
        const r = ringsOf!(s);
        if (r === null) fail('delegated.sendBuffer', `no shared rings for connection ${i}`);
        s.delegated.sendBuffer = r.send;
        s.delegated.recvBuffer = r.recv;
      }
      node.conns.push(s);
    }
    if (rd.o !== total) fail('length', `${total - rd.o} bytes after the last record`);
    validateTrees(trees);
    return trees;
  } catch (e) {
    if (book !== undefined) for (const h of interned) book.release(h);
    throw e;
  }
}

/**
 * Give back the references a decode took on each IPv6 path's two handles, for a receiver whose
 * handles are held elsewhere anyway (the host: by the placeholders of connections it handed out)
 * or that drops the paths.
 */
export function releaseTreeAddresses(trees: readonly OffloadTree[]): void {
  for (const t of trees) {
    for (const node of t.paths) {
      const p = node.path;
      if (p.addrs === undefined || p.const.remoteIp <= V6) continue;
      p.addrs.release(p.const.localIp);
      p.addrs.release(p.const.remoteIp);
    }
  }
}
