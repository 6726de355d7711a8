import { InvalidArgumentError } from '../../core/errors.ts';
import type { ConnBlockRef } from '../hard-state.ts';
import { type ConnKey, connKeyId, type InitiateConnResult, type InitiateResult } from '../nic.ts';
import type { InstalledConn } from './protocol.ts';

/*
 * The transfer messages between a WorkerNic and its worker carry a batch's keys and shared blocks
 * as flat words: structured cloning of a hundred small objects (and of a Map of nested ones) cost
 * a quarter to three quarters of a millisecond per message on the host's thread, more than the
 * rest of the move. Objects are rebuilt on the far side, where they cost far less than the clone.
 */

/** Four words per key: local address, local port, remote address, remote port. */
export function packKeys(keys: readonly ConnKey[]): Uint32Array {
  const w = new Uint32Array(keys.length * 4);
  for (let i = 0, j = 0; i < keys.length; i++, j += 4) {
    const k = keys[i]!;
    w[j] = k.localIp;
    w[j + 1] = k.localPort;
    w[j + 2] = k.remoteIp;
    w[j + 3] = k.remotePort;
  }
  return w;
}

export function unpackKeys(w: Uint32Array): ConnKey[] {
  if (!(w instanceof Uint32Array) || w.length % 4 !== 0)
    throw new InvalidArgumentError('packed keys must be a Uint32Array of four words per key');
  const out: ConnKey[] = [];
  for (let j = 0; j < w.length; j += 4) {
    out.push({ localIp: w[j]!, localPort: w[j + 1]!, remoteIp: w[j + 2]!, remotePort: w[j + 3]! });
  }
  return out;
}

/** A batch's blocks: each buffer once, then per connection its key and where its block lies. */
export interface PackedBlocks {
  sabs: SharedArrayBuffer[];
  keys: Uint32Array;
  /**
   * Six words per connection: buffer index (GIVEN: the block the host gave for it, whose buffer
   * does not travel back), record offset, send ring offset and capacity, receive ring offset and
   * capacity.
   */
  words: Int32Array;
}

const BLOCK_WORDS = 6;
/** Buffer index of a block the host gave with the request: its buffer need not cross again. */
export const GIVEN = -1;

/** `given`: per block, whether it is the one the host gave for that connection (an initiate's answer). */
export function packBlocks(blocks: readonly (readonly [ConnKey, ConnBlockRef, boolean?])[]): PackedBlocks {
  const sabs: SharedArrayBuffer[] = [];
  const index = new Map<SharedArrayBuffer, number>();
  const keys: ConnKey[] = [];
  const words = new Int32Array(blocks.length * BLOCK_WORDS);
  for (let i = 0; i < blocks.length; i++) {
    const [key, b, given] = blocks[i]!;
    let at = given === true ? GIVEN : index.get(b.sab);
    if (at === undefined) {
      at = sabs.length;
      sabs.push(b.sab);
      index.set(b.sab, at);
    }
    keys.push(key);
    const j = i * BLOCK_WORDS;
    words[j] = at;
    words[j + 1] = b.at;
    words[j + 2] = b.send.offset;
    words[j + 3] = b.send.capacity;
    words[j + 4] = b.recv.offset;
    words[j + 5] = b.recv.capacity;
  }
  return { sabs, keys: packKeys(keys), words };
}

/**
 * The blocks by connKeyId (the shared rings are checked when attached, as before). A block
 * marked GIVEN is the host's own object from `given`, which must hold one at the same place:
 * the host keeps the buffer objects it allocated (a buffer that crossed a thread is a new object
 * over the same memory, and would be attached again for nothing).
 */
export function unpackBlocks(
  p: PackedBlocks,
  given?: ReadonlyMap<string, ConnBlockRef>,
): Map<string, ConnBlockRef> {
  const keys = unpackKeys(p.keys);
  if (
    !(p.words instanceof Int32Array) ||
    p.words.length !== keys.length * BLOCK_WORDS ||
    !Array.isArray(p.sabs)
  )
    throw new InvalidArgumentError('packed blocks do not match their keys');
  const out = new Map<string, ConnBlockRef>();
  const w = p.words;
  for (let i = 0; i < keys.length; i++) {
    const j = i * BLOCK_WORDS;
    const id = connKeyId(keys[i]!);
    if (w[j] === GIVEN) {
      const g = given?.get(id);
      if (
        g === undefined ||
        g.at !== w[j + 1] ||
        g.send.offset !== w[j + 2] ||
        g.send.capacity !== w[j + 3] ||
        g.recv.offset !== w[j + 4] ||
        g.recv.capacity !== w[j + 5]
      )
        throw new InvalidArgumentError('packed block claims a block the host did not give');
      out.set(id, g);
      continue;
    }
    const sab = p.sabs[w[j]!];
    if (!(sab instanceof SharedArrayBuffer)) throw new InvalidArgumentError('packed block names no buffer');
    out.set(id, {
      sab,
      at: w[j + 1]!,
      send: { sab, offset: w[j + 2]!, capacity: w[j + 3]! },
      recv: { sab, offset: w[j + 4]!, capacity: w[j + 5]! },
    });
  }
  return out;
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

export function packInitiate(r: InitiateResult, installed: readonly InstalledConn[]): PackedInitiate {
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
  for (let i = 0; i < installed.length; i++) slots[i] = installed[i]!.slot;
  const out: PackedInitiate = {
    status: r.status,
    keys: packKeys(r.conns.map((c) => c.key)),
    codes,
    reasons,
    installed: packBlocks(installed.map((c) => [c.key, c.block, c.given === true] as const)),
    slots,
  };
  if (r.reason !== undefined) out.reason = r.reason;
  return out;
}

export function unpackInitiate(
  p: PackedInitiate,
  given?: ReadonlyMap<string, ConnBlockRef>,
): { result: InitiateResult; installed: InstalledConn[] } {
  const keys = unpackKeys(p.keys);
  if (!(p.codes instanceof Uint8Array) || p.codes.length !== keys.length)
    throw new InvalidArgumentError('packed initiate: outcomes do not match keys');
  const conns: InitiateConnResult[] = [];
  for (let i = 0; i < keys.length; i++) {
    const status = STATUS[p.codes[i]!];
    if (status === undefined) throw new InvalidArgumentError('packed initiate: unknown outcome');
    const c: InitiateConnResult = { key: keys[i]!, status };
    const why = p.reasons?.[i];
    if (why) c.reason = why;
    conns.push(c);
  }
  const result: InitiateResult = { status: p.status, conns };
  if (p.reason !== undefined) result.reason = p.reason;
  const blocks = unpackBlocks(p.installed, given);
  const ikeys = unpackKeys(p.installed.keys);
  if (!(p.slots instanceof Int32Array) || p.slots.length !== ikeys.length)
    throw new InvalidArgumentError('packed initiate: slots do not match blocks');
  const installed: InstalledConn[] = [];
  for (let i = 0; i < ikeys.length; i++) {
    const key = ikeys[i]!;
    installed.push({ key, slot: p.slots[i]!, block: blocks.get(connKeyId(key))! });
  }
  return { result, installed };
}
