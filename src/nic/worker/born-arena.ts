import type { AddressBook } from '../../state/path-state.ts';
import { sharedRingBytes } from '../../state/shared-ring.ts';
import { type ConnBlockRef, HARD_STATE_BYTES } from '../hard-state.ts';
import type { ConnKey } from '../nic.ts';
import { KEY_WORDS, packKeys, unpackKeys } from './transfer-wire.ts';

/*
 * The shared memory of connections a worker's listeners accept (accept at the NIC). Such a
 * connection is established at the peer the moment its handshake ends in the worker, but the host
 * hears of it only from the turn's 'born' message; a worker that dies in between took the only
 * reference to its block with it, and the peer's connection hung (nobody ran it, nobody reset it).
 * So its block is cut from an arena the host already holds: the worker allocates each arena and
 * posts it ('born-arena') before it cuts the first block from it (the next one as soon as the
 * current is half used, so a burst of handshakes in one turn finds it posted turns before), and
 * lists each block in the arena's index with its connection's four-tuple (packed as a transfer
 * packs a key: an IPv6 address by its bytes, which the host's table names by its own handle), slot
 * and listener as it installs the connection. The host marks an entry announced when it handles
 * the 'born' that names it; at the worker's death every entry still installed and not announced is
 * a connection the host never heard of, adopted from the index as if its 'born' had come, and
 * rebuilt with the rest.
 *
 * Layout: Int32 header words, then ENTRIES index entries of E_WORDS words, then the blocks. Every
 * word is written and read with Atomics; an entry's fields are written before its state, so a
 * reader that sees the state sees them.
 */

/** Bytes of one arena: a connection slab's worth (CONN_SLAB_BYTES); untouched pages cost nothing. */
export const BORN_ARENA_BYTES = 64 << 20;
/** Connections an arena indexes at most (its bytes run out first at the default rings). */
const ENTRIES = 1024;
const H_ENTRIES = 0;
const H_USED = 1;
/** Set by the worker once it cuts no more blocks from the arena. */
const H_RETIRED = 2;
const HEADER_WORDS = 4;
const E_STATE = 0;
const E_LISTENER = 1;
const E_SLOT = 2;
const E_AT = 3;
const E_SEND_CAPACITY = 4;
const E_RECV_CAPACITY = 5;
/** The four-tuple, KEY_WORDS words as packKeys lays them out. */
const E_KEY = 6;
const E_WORDS = E_KEY + KEY_WORDS;
const BLOCKS_AT = (HEADER_WORDS + ENTRIES * E_WORDS) * 4;

/** An entry's state: cut (its connection not installed yet), installed, announced to the host. */
const CUT = 0;
const INSTALLED = 1;
const ANNOUNCED = 2;

/** Where a block cut from an arena is listed: the arena's number and the entry. */
export interface BornEntry {
  no: number;
  entry: number;
}

/** A block cut for a connection, and where it is listed. */
export interface BornCut {
  block: ConnBlockRef;
  at: BornEntry;
  readonly arena: Arena;
}

interface Arena {
  no: number;
  sab: SharedArrayBuffer;
  words: Int32Array;
}

function arenaOf(no: number, sab: SharedArrayBuffer): Arena {
  return { no, sab, words: new Int32Array(sab, 0, HEADER_WORDS + ENTRIES * E_WORDS) };
}

function entryAt(entry: number): number {
  return HEADER_WORDS + entry * E_WORDS;
}

/** The block of an entry, as the arena lays it out (record, send ring, receive ring). */
function blockOf(a: Arena, e: number): ConnBlockRef {
  const w = a.words;
  const at = Atomics.load(w, e + E_AT);
  const sendCapacity = Atomics.load(w, e + E_SEND_CAPACITY);
  const sendAt = at + HARD_STATE_BYTES;
  return {
    sab: a.sab,
    at,
    send: { sab: a.sab, offset: sendAt, capacity: sendCapacity },
    recv: {
      sab: a.sab,
      offset: sendAt + sharedRingBytes(sendCapacity),
      capacity: Atomics.load(w, e + E_RECV_CAPACITY),
    },
  };
}

/** The worker's side: cuts blocks for the connections its listeners accept, and lists them. */
export class BornArenas {
  private current: Arena | null = null;
  private next: Arena | null = null;
  private made = 0;

  /** `posted` hands a new arena to the host, before any block is cut from it. */
  constructor(private readonly posted: (no: number, sab: SharedArrayBuffer) => void) {}

  /** Make the first arena now (a listener starts), so the first handshake finds it posted. */
  ready(): void {
    this.current ??= this.make();
  }

  /**
   * A block with rings of these capacities (not initialised: the install makes its rings), listed
   * as cut, and where; null when one arena cannot hold it (the caller allocates it elsewhere).
   */
  cut(sendCapacity: number, recvCapacity: number): BornCut | null {
    const bytes = (HARD_STATE_BYTES + sharedRingBytes(sendCapacity) + sharedRingBytes(recvCapacity) + 7) & ~7;
    if (BLOCKS_AT + bytes > BORN_ARENA_BYTES) return null;
    let a = this.current ?? this.make();
    if (!fits(a, bytes)) {
      Atomics.store(a.words, H_RETIRED, 1);
      a = this.next ?? this.make();
      this.next = null;
    }
    this.current = a;
    const w = a.words;
    const n = Atomics.load(w, H_ENTRIES);
    const used = Atomics.load(w, H_USED);
    const e = entryAt(n);
    Atomics.store(w, e + E_STATE, CUT);
    Atomics.store(w, e + E_AT, BLOCKS_AT + used);
    Atomics.store(w, e + E_SEND_CAPACITY, sendCapacity);
    Atomics.store(w, e + E_RECV_CAPACITY, recvCapacity);
    Atomics.store(w, H_USED, used + bytes);
    Atomics.store(w, H_ENTRIES, n + 1);
    // Half used: the next one goes to the host now, turns before a burst may need it.
    if (this.next === null && (2 * (n + 1) >= ENTRIES || 2 * (BLOCKS_AT + used + bytes) >= BORN_ARENA_BYTES))
      this.next = this.make();
    return { block: blockOf(a, e), at: { no: a.no, entry: n }, arena: a };
  }

  /**
   * The connection on the block `cut` is installed in `slot`, for listener `listener`. `addrs`:
   * the table of an IPv6 key's handles.
   */
  installed(cut: BornCut, listener: number, slot: number, key: ConnKey, addrs?: AddressBook | null): void {
    const w = cut.arena.words;
    const e = entryAt(cut.at.entry);
    Atomics.store(w, e + E_LISTENER, listener);
    Atomics.store(w, e + E_SLOT, slot);
    const packed = packKeys([key], addrs);
    for (let i = 0; i < KEY_WORDS; i++) Atomics.store(w, e + E_KEY + i, packed[i]! | 0);
    Atomics.store(w, e + E_STATE, INSTALLED);
  }

  private make(): Arena {
    const a = arenaOf(++this.made, new SharedArrayBuffer(BORN_ARENA_BYTES));
    this.posted(a.no, a.sab);
    return a;
  }
}

function fits(a: Arena, bytes: number): boolean {
  return (
    Atomics.load(a.words, H_ENTRIES) < ENTRIES &&
    BLOCKS_AT + Atomics.load(a.words, H_USED) + bytes <= BORN_ARENA_BYTES
  );
}

/** A connection installed in a worker that the host has not heard of ('born' never handled). */
export interface Unannounced {
  listener: number;
  slot: number;
  key: ConnKey;
  block: ConnBlockRef;
}

/** The host's side: the arenas a worker posted, until each is retired and all of it announced. */
export class BornArenaIndex {
  private readonly arenas = new Map<number, Arena>();

  /** The worker posted arena `no` (a repeat, or a buffer of another size, is not believed). */
  add(no: number, sab: SharedArrayBuffer): boolean {
    if (!Number.isSafeInteger(no) || no <= 0 || this.arenas.has(no) || sab.byteLength !== BORN_ARENA_BYTES)
      return false;
    this.arenas.set(no, arenaOf(no, sab));
    return true;
  }

  /**
   * The 'born' that names these entries was handled: the death's sweep leaves them. An arena the
   * worker retired with every entry announced is let go (its blocks live as long as their handles).
   */
  announced(entries: readonly BornEntry[]): void {
    for (const { no, entry } of entries) {
      const a = this.arenas.get(no);
      if (a !== undefined && entry >= 0 && entry < ENTRIES)
        Atomics.store(a.words, entryAt(entry) + E_STATE, ANNOUNCED);
    }
    // Only a retired arena is looked through (letGoIfDone): one or two at a time.
    for (const a of [...this.arenas.values()]) this.letGoIfDone(a);
  }

  private letGoIfDone(a: Arena): void {
    const w = a.words;
    if (Atomics.load(w, H_RETIRED) !== 1) return;
    const n = Math.min(Atomics.load(w, H_ENTRIES), ENTRIES);
    for (let i = 0; i < n; i++) if (Atomics.load(w, entryAt(i) + E_STATE) === INSTALLED) return;
    this.arenas.delete(a.no);
  }

  /**
   * Every connection installed and never announced (the worker died), each taken out once.
   * `addrs`: the host's table, which names an IPv6 key's addresses by its own handles.
   */
  unannounced(addrs?: AddressBook | null): Unannounced[] {
    const out: Unannounced[] = [];
    const packed = new Uint32Array(KEY_WORDS);
    for (const a of this.arenas.values()) {
      const w = a.words;
      const n = Math.min(Atomics.load(w, H_ENTRIES), ENTRIES);
      for (let i = 0; i < n; i++) {
        const e = entryAt(i);
        if (Atomics.load(w, e + E_STATE) !== INSTALLED) continue;
        Atomics.store(w, e + E_STATE, ANNOUNCED);
        const block = blockOf(a, e);
        const end = block.recv.offset + sharedRingBytes(block.recv.capacity);
        // An entry a dying writer left inconsistent names no connection.
        if (block.at < BLOCKS_AT || end > BORN_ARENA_BYTES) continue;
        for (let k = 0; k < KEY_WORDS; k++) packed[k] = Atomics.load(w, e + E_KEY + k);
        let key: ConnKey;
        try {
          key = unpackKeys(packed, addrs)[0]!;
        } catch {
          continue;
        }
        // An IPv6 address the host's table does not hold (0) names no connection of the host's.
        if (key.localIp === 0 || key.remoteIp === 0) continue;
        out.push({
          listener: Atomics.load(w, e + E_LISTENER),
          slot: Atomics.load(w, e + E_SLOT),
          key,
          block,
        });
      }
    }
    return out;
  }

  /** Arenas held (tests). */
  get size(): number {
    return this.arenas.size;
  }
}
