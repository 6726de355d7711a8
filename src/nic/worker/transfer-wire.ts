import { InvalidArgumentError } from '../../core/errors.ts';
import { TWO_32 } from '../../stack/address-table.ts';
import type { AddressBook } from '../../state/path-state.ts';
import { readU32, writeU32 } from '../../wire/addr.ts';
import type { ConnBlockRef } from '../hard-state.ts';
import { type ConnKey, type InitiateConnResult, type InitiateResult, sameConnKey } from '../nic.ts';
import { TupleMap } from '../tuple-map.ts';
import { type BlockParts, blockAt, canonicalSlab, knownBlock, partsAt, slabIdOf } from './conn-blocks.ts';
import type { InstalledConn } from './protocol.ts';

/*
 * The transfer messages between a WorkerNic and its worker carry a batch's keys and shared blocks
 * as flat words: structured cloning of a hundred small objects (and of a Map of nested ones) cost
 * a quarter to three quarters of a millisecond per message on the host's thread, more than the
 * rest of the move. Objects are rebuilt on the far side, where they cost far less than the clone.
 */

/**
 * Ten words per key: the family (4 or 6), the ports (local << 16 | remote), then each address in
 * four words: an IPv4 address in the first (the rest 0), an IPv6 address as its 16 bytes, big
 * endian. Bytes, not handles: a handle names a slot of one AddressTable, and a worker's table is
 * not the host's (a shared table would need every thread to agree on slot reuse while
 * connections move; bytes cost 24 more bytes a key and no coordination at all). IPv6 keys need
 * the table their handles belong to (`addrs`) on both sides.
 */
export const KEY_WORDS = 10;

export function packKeys(keys: readonly ConnKey[], addrs?: AddressBook | null): Uint32Array {
  return packKeysOf(keys.length, (i) => keys[i]!, addrs);
}

/** `n` keys, the i-th `keyOf(i)`, packed as packKeys packs a list. */
export function packKeysOf(
  n: number,
  keyOf: (i: number) => ConnKey,
  addrs?: AddressBook | null,
): Uint32Array {
  const w = new Uint32Array(n * KEY_WORDS);
  for (let i = 0, j = 0; i < n; i++, j += KEY_WORDS) {
    const k = keyOf(i);
    w[j + 1] = ((k.localPort << 16) | k.remotePort) >>> 0;
    if (k.remoteIp < TWO_32 && k.localIp < TWO_32) {
      w[j] = 4;
      w[j + 2] = k.localIp;
      w[j + 6] = k.remoteIp;
      continue;
    }
    if (!addrs) throw new InvalidArgumentError('an IPv6 key needs the address table of its handles');
    w[j] = 6;
    putAddress(w, j + 2, addrs, k.localIp);
    putAddress(w, j + 6, addrs, k.remoteIp);
  }
  return w;
}

const scratch = new Uint8Array(16);

function putAddress(w: Uint32Array, at: number, addrs: AddressBook, handle: number): void {
  addrs.write(handle, scratch, 0);
  for (let i = 0; i < 4; i++) w[at + i] = readU32(scratch, i * 4);
}

/**
 * An address of a packed key as a handle of `addrs` (not referenced: the connection or
 * placeholder it names holds it), or 0, which names no connection, when this side does not know
 * it or has no table.
 */
function takeAddress(w: Uint32Array, at: number, addrs: AddressBook | null | undefined): number {
  if (!addrs) return 0;
  for (let i = 0; i < 4; i++) writeU32(scratch, i * 4, w[at + i]!);
  const h = addrs.find(scratch, 0);
  return Math.max(h, 0);
}

/** The IPv4 key packed at `j` is `k`'s tuple, as unpackKeys would read it (addresses unsigned). */
function packedIs(w: Uint32Array, j: number, k: ConnKey): boolean {
  return (
    w[j] === 4 &&
    w[j + 2] === k.localIp &&
    w[j + 6] === k.remoteIp &&
    w[j + 1] === ((k.localPort << 16) | k.remotePort) >>> 0
  );
}

/** How far past the expected place a known key is looked for (the keys of refused connections left out). */
const KNOWN_SKIP = 4;

/**
 * `known`: keys this side sent, in the order sent. An answer names them in that order (a batch
 * of one path), less those it refused: a key packed as the next of them (or one a few further
 * on) is taken as that object, so an answer in order makes no key object.
 */
export function unpackKeys(
  w: Uint32Array,
  addrs?: AddressBook | null,
  known?: readonly ConnKey[],
): ConnKey[] {
  checkKeys(w);
  // Sized once (a list grown a push at a time leaves outgrown copies behind, per message).
  const out = new Array<ConnKey>(w.length / KEY_WORDS);
  let c = 0;
  for (let j = 0, i = 0; j < w.length; j += KEY_WORDS, i++) {
    if (known !== undefined) {
      let found = -1;
      for (let d = c; d < known.length && d <= c + KNOWN_SKIP; d++)
        if (packedIs(w, j, known[d]!)) {
          found = d;
          break;
        }
      if (found >= 0) {
        out[i] = known[found]!;
        c = found + 1;
        continue;
      }
    }
    out[i] = keyAt(w, j, addrs, null);
  }
  return out;
}

/**
 * The keys packed in `w`, each the object `known` gives for its tuple when this side holds one
 * already (the key of a connection it runs), else a new one: a terminate's keys were a new object
 * per connection and move, the largest garbage of a source worker's warm move. `known` is called
 * once per key, in order, with its index and a scratch tuple it must not keep.
 */
export function unpackKnownKeys(
  w: Uint32Array,
  addrs: AddressBook | null | undefined,
  known: (tuple: ConnKey, i: number) => ConnKey | undefined,
): ConnKey[] {
  checkKeys(w);
  const out = new Array<ConnKey>(w.length / KEY_WORDS);
  for (let j = 0, i = 0; j < w.length; j += KEY_WORDS, i++)
    out[i] = known(keyAt(w, j, addrs, lookup), i) ?? keyAt(w, j, addrs, null);
  return out;
}

/**
 * `each` once per key packed in `w`, in order, with a scratch tuple it must not keep: no key
 * object made, for a side that only looks the keys up (a settle's, one per connection moved).
 */
export function forEachPackedKey(
  w: Uint32Array,
  addrs: AddressBook | null | undefined,
  each: (tuple: ConnKey) => void,
): void {
  checkKeys(w);
  const k: ConnKey = { localIp: 0, localPort: 0, remoteIp: 0, remotePort: 0 };
  for (let j = 0; j < w.length; j += KEY_WORDS) each(keyAt(w, j, addrs, k));
}

/** The scratch tuple unpackKnownKeys asks `known` with. */
const lookup: ConnKey = { localIp: 0, localPort: 0, remoteIp: 0, remotePort: 0 };

function checkKeys(w: Uint32Array): void {
  if (!(w instanceof Uint32Array) || w.length % KEY_WORDS !== 0)
    throw new InvalidArgumentError(`packed keys must be a Uint32Array of ${KEY_WORDS} words per key`);
}

/** The key packed at `j`: written into `into` (a caller's scratch), or a new object when null. */
function keyAt(
  w: Uint32Array,
  j: number,
  addrs: AddressBook | null | undefined,
  into: ConnKey | null,
): ConnKey {
  const ports = w[j + 1]!;
  let localIp: number;
  let remoteIp: number;
  if (w[j] === 4) {
    localIp = w[j + 2]!;
    remoteIp = w[j + 6]!;
  } else if (w[j] === 6) {
    localIp = takeAddress(w, j + 2, addrs);
    remoteIp = takeAddress(w, j + 6, addrs);
  } else throw new InvalidArgumentError(`packed key of unknown family ${w[j]}`);
  if (into === null) return { localIp, localPort: ports >>> 16, remoteIp, remotePort: ports & 0xffff };
  into.localIp = localIp;
  into.localPort = ports >>> 16;
  into.remoteIp = remoteIp;
  into.remotePort = ports & 0xffff;
  return into;
}

/** The tuple unpackBlocks sets its map's entries by (the map copies it into each entry). */
const tuple: ConnKey = { localIp: 0, localPort: 0, remoteIp: 0, remotePort: 0 };

/** The blocks the host gave for an initiate's connections, by their keys (a TupleMap is one). */
export interface GivenBlocks {
  get(k: ConnKey): ConnBlockRef | undefined;
  /** The keys the blocks were given for, in the order given (see unpackKeys' `known`). */
  readonly keys?: readonly ConnKey[];
}

/** A batch's blocks: each buffer once, then per connection its key and where its block lies. */
export interface PackedBlocks {
  sabs: SharedArrayBuffer[];
  /** Per buffer, the number the host gave it (slabIdOf; 0 for none): the same buffer, whatever object carries it. */
  ids?: Float64Array;
  keys: Uint32Array;
  /** Six words per connection: buffer index, record offset, send ring offset and capacity, receive ring offset and capacity. */
  words: Int32Array;
}

export const BLOCK_WORDS = 6;
/** Buffer index of a block the host gave with the request: its buffer need not cross again. */
export const GIVEN = -1;

/**
 * A batch's `n` blocks, the i-th `blockOf(i)` for `keyOf(i)`: by accessors, so that no caller
 * makes an object (or a pair) per connection to be packed. `given(i)`: whether that block is the
 * one the host gave for that connection (an initiate's answer). `packed`: the keys, packed
 * already (the answer's own, when it installed every connection in order).
 */
export function packBlocks(
  n: number,
  keyOf: (i: number) => ConnKey,
  blockOf: (i: number) => ConnBlockRef,
  addrs?: AddressBook | null,
  given?: (i: number) => boolean,
  packed?: Uint32Array,
): PackedBlocks {
  const sabs: SharedArrayBuffer[] = [];
  const ids: number[] = [];
  const index = new Map<SharedArrayBuffer, number>();
  const words = new Int32Array(n * BLOCK_WORDS);
  for (let i = 0; i < n; i++) {
    const b = blockOf(i);
    let at = given?.(i) === true ? GIVEN : index.get(b.sab);
    if (at === undefined) {
      at = sabs.length;
      sabs.push(b.sab);
      ids.push(slabIdOf(b.sab));
      index.set(b.sab, at);
    }
    const j = i * BLOCK_WORDS;
    words[j] = at;
    words[j + 1] = b.at;
    words[j + 2] = b.send.offset;
    words[j + 3] = b.send.capacity;
    words[j + 4] = b.recv.offset;
    words[j + 5] = b.recv.capacity;
  }
  return { sabs, ids: Float64Array.from(ids), keys: packed ?? packKeysOf(n, keyOf, addrs), words };
}

/**
 * The blocks by connKeyId of their keys as `addrs` numbers them (the shared rings are checked
 * when attached, as before). Unpack after the addresses are interned there. A block marked GIVEN
 * is the host's own object from `given`, which must hold one at the same place: the host keeps
 * the buffer objects it allocated (a buffer that crossed a thread is a new object over the same
 * memory, and would be attached again for nothing).
 */
export function unpackBlocks(
  p: PackedBlocks,
  addrs?: AddressBook | null,
  given?: GivenBlocks,
): TupleMap<ConnBlockRef> {
  // No key object per connection: the map's entries are its keys (TupleMap.list), and a key
  // object each, made to be copied into its entry, was the largest garbage of a worker's
  // initiate (600-900 KiB a warm move of 10,000).
  const w = p.keys;
  checkKeys(w);
  const list = blockList(p, w.length / KEY_WORDS, (i) => keyAt(w, i * KEY_WORDS, addrs, null), given);
  const out = new TupleMap<ConnBlockRef>();
  for (let i = 0; i < list.length; i++) out.set(keyAt(w, i * KEY_WORDS, addrs, tuple), list[i]!);
  return out;
}

/** The blocks in the order of their keys; `keyOf(i)`: the i-th key (read for a GIVEN block only). */
function blockList(
  p: PackedBlocks,
  n: number,
  keyOf: (i: number) => ConnKey,
  given?: GivenBlocks,
): ConnBlockRef[] {
  const sabs = packedSabs(p, n);
  const out = new Array<ConnBlockRef>(n);
  const w = p.words;
  for (let i = 0; i < n; i++) {
    const j = i * BLOCK_WORDS;
    if (w[j] === GIVEN) {
      const g = given?.get(keyOf(i));
      if (
        g === undefined ||
        g.at !== w[j + 1] ||
        g.send.offset !== w[j + 2] ||
        g.send.capacity !== w[j + 3] ||
        g.recv.offset !== w[j + 4] ||
        g.recv.capacity !== w[j + 5]
      )
        throw new InvalidArgumentError('packed block claims a block the host did not give');
      out[i] = g;
      continue;
    }
    const sab = sabAt(sabs, w, j);
    const known = knownBlock(sab, w[j + 1]!, w[j + 2]!, w[j + 3]!, w[j + 4]!, w[j + 5]!);
    if (known !== null) {
      out[i] = known;
      continue;
    }
    out[i] = blockAt(sab, w, j);
  }
  return out;
}

/** The buffers of `n` packed blocks, each as the object this thread holds for its number (see canonicalSlab). */
function packedSabs(p: PackedBlocks, n: number): unknown[] {
  if (!(p.words instanceof Int32Array) || p.words.length !== n * BLOCK_WORDS || !Array.isArray(p.sabs))
    throw new InvalidArgumentError('packed blocks do not match their keys');
  const ids = p.ids;
  if (ids !== undefined && (!(ids instanceof Float64Array) || ids.length !== p.sabs.length))
    throw new InvalidArgumentError('packed blocks: buffer numbers do not match the buffers');
  // Once per message, not per block.
  return ids === undefined ? p.sabs : p.sabs.map((b, k) => canonicalOf(b, ids[k]!));
}

/** The buffer a packed block names: one of the message's (a worker is given no block by the host's object). */
function sabAt(sabs: readonly unknown[], w: Int32Array, j: number): SharedArrayBuffer {
  if (w[j] === GIVEN) throw new InvalidArgumentError('packed block claims a block the host did not give');
  const sab = sabs[w[j]!];
  if (!(sab instanceof SharedArrayBuffer)) throw new InvalidArgumentError('packed block names no buffer');
  return sab;
}

/**
 * A worker's initiate by records: each connection's key (a new object) and this thread's parts of
 * its block (partsAt, their rings' headers checked), side by side in the batch's order. No table
 * by key and no block object per connection: unpackBlocks' map and objects, then a search of each
 * block's parts, were a third of a destination worker's initiate in a warm move (BENCHMARKS.md,
 * offload, session 44). Unpack after the addresses are interned in `addrs`.
 */
export function unpackParts(
  p: PackedBlocks,
  addrs: AddressBook | null | undefined,
): { keys: ConnKey[]; parts: BlockParts[] } {
  const kw = p.keys;
  checkKeys(kw);
  const n = kw.length / KEY_WORDS;
  const sabs = packedSabs(p, n);
  const w = p.words;
  const keys = new Array<ConnKey>(n);
  const parts = new Array<BlockParts>(n);
  for (let i = 0; i < n; i++) {
    const j = i * BLOCK_WORDS;
    parts[i] = partsAt(sabAt(sabs, w, j), w, j);
    keys[i] = keyAt(kw, i * KEY_WORDS, addrs, null);
  }
  return { keys, parts };
}

function canonicalOf(b: unknown, id: number): unknown {
  return b instanceof SharedArrayBuffer ? canonicalSlab(b, id) : b;
}

/** An initiate's answer: per-connection outcomes and the slots installed, packed. */
export interface PackedInitiate {
  status: InitiateResult['status'];
  reason?: string;
  keys: Uint32Array;
  /** Per connection: 0 success, 1 failure, 2 no resources. */
  codes: Uint8Array;
  /** Per connection, its reason ('' for none); null when no connection has one. */
  reasons: string[] | null;
  installed: PackedBlocks;
  slots: Int32Array;
}

const STATUS: readonly InitiateConnResult['status'][] = ['success', 'failure', 'no-resources'];

export function packInitiate(
  r: InitiateResult,
  installed: readonly InstalledConn[],
  addrs?: AddressBook | null,
): PackedInitiate {
  const n = r.conns.length;
  const codes = new Uint8Array(n);
  let reasons: string[] | null = null;
  for (let i = 0; i < n; i++) {
    const c = r.conns[i]!;
    codes[i] = STATUS.indexOf(c.status);
    if (c.reason !== undefined) {
      reasons ??= new Array<string>(n).fill('');
      reasons[i] = c.reason;
    }
  }
  const slots = new Int32Array(installed.length);
  let inOrder = installed.length === n;
  for (let i = 0; i < installed.length; i++) {
    slots[i] = installed[i]!.slot;
    if (inOrder && !sameConnKey(installed[i]!.key, r.conns[i]!.key)) inOrder = false;
  }
  const keys = packKeysOf(n, (i) => r.conns[i]!.key, addrs);
  const out: PackedInitiate = {
    status: r.status,
    keys,
    codes,
    reasons,
    // Every connection installed, in order (the usual answer): the installed keys are the same
    // words, as the same array, which the message carries once (a clone keeps an object named
    // twice as one object) and the host unpacks once.
    installed: packBlocks(
      installed.length,
      (i) => installed[i]!.key,
      (i) => installed[i]!.block,
      addrs,
      (i) => installed[i]!.given === true,
      inOrder ? keys : undefined,
    ),
    slots,
  };
  if (r.reason !== undefined) out.reason = r.reason;
  return out;
}

export function unpackInitiate(
  p: PackedInitiate,
  addrs?: AddressBook | null,
  given?: GivenBlocks,
): { result: InitiateResult; installed: InstalledConn[] } {
  const { result: lazy, keys, slots, blocks } = unpackInstalled(p, addrs, given);
  const installed: InstalledConn[] = [];
  for (let i = 0; i < keys.length; i++) installed.push({ key: keys[i]!, slot: slots[i]!, block: blocks[i]! });
  // A plain result, its list made: for the accept path and for tests that compare it whole.
  const result: InitiateResult = { status: lazy.status, conns: lazy.conns };
  if (lazy.reason !== undefined) result.reason = lazy.reason;
  return { result, installed };
}

/**
 * `unpackInitiate` with what was installed as three lists, one place per connection (key, slot,
 * block): the host takes a move's answer up without an object per connection for it.
 */
export function unpackInstalled(
  p: PackedInitiate,
  addrs?: AddressBook | null,
  given?: GivenBlocks,
): { result: InitiateResult; keys: readonly ConnKey[]; slots: Int32Array; blocks: readonly ConnBlockRef[] } {
  const keys = unpackKeys(p.keys, addrs, given?.keys);
  const codes = p.codes;
  if (!(codes instanceof Uint8Array) || codes.length !== keys.length)
    throw new InvalidArgumentError('packed initiate: outcomes do not match keys');
  for (let i = 0; i < codes.length; i++)
    if (STATUS[codes[i]!] === undefined) throw new InvalidArgumentError('packed initiate: unknown outcome');
  const reasons = p.reasons;
  // The list of outcomes, an object per connection, is made when read (a move that installed
  // every connection reads only `size`).
  let conns: InitiateConnResult[] | null = null;
  const result: InitiateResult = {
    status: p.status,
    size: keys.length,
    get conns(): InitiateConnResult[] {
      if (conns === null) {
        conns = [];
        for (let i = 0; i < keys.length; i++) {
          const c: InitiateConnResult = { key: keys[i]!, status: STATUS[codes[i]!]! };
          const why = reasons?.[i];
          if (why) c.reason = why;
          conns.push(c);
        }
      }
      return conns;
    },
    set conns(v: InitiateConnResult[]) {
      conns = v;
    },
  };
  if (p.reason !== undefined) result.reason = p.reason;
  // Every connection installed (the usual answer): the same array of keys (packInitiate), taken once.
  const ikeys = p.installed.keys === p.keys ? keys : unpackKeys(p.installed.keys, addrs, given?.keys);
  const blocks = blockList(p.installed, ikeys.length, (i) => ikeys[i]!, given);
  if (!(p.slots instanceof Int32Array) || p.slots.length !== ikeys.length)
    throw new InvalidArgumentError('packed initiate: slots do not match blocks');
  return { result, keys: ikeys, slots: p.slots, blocks };
}
