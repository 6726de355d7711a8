/*
 * Per-connection order across a move handed straight from one worker to another (WorkerNic.handTo).
 *
 * Two workers of a team hand each other the frames of each other's connections (owner-table.ts).
 * When the source lets a connection go, segments of it may still be on their way to the source: in
 * the peer channel from the destination (which received them on its link while the source listed
 * the connection), held in the source's engine, or arriving at the source's link before the
 * destination lists it. Passed up to the host, each waits there for the move's settle, while the
 * destination already runs the connection and the newer segments its own link receives: the older
 * ones arrive late and out of order (the peer sees duplicate ACKs, and may resend needlessly).
 *
 * So a hand keeps them on one path, in order:
 * - the source keeps listing a connection it handed until the destination says it installed it,
 *   and sends every frame for it that it would have passed up over the hands channel instead,
 *   behind the hand (`HandedOn`); what its engine held for it travels inside the hand;
 * - the destination, once it installed the batch, holds the input of its connections that arrives
 *   any other way (its link, the peer channel) and says 'installed' to the source behind every
 *   frame it forwarded to it (on the peer channel, so after them); the source answers 'through'
 *   behind every frame it sends on for the hand, and only then does the destination run what it
 *   held, in the order it came (`HeldIn`).
 * What arrives meanwhile over the hands channel is older than anything held, and runs at once. A
 * hold ends without 'through' when the channel closes (the source died or closed), when its oldest
 * frame waited HOLD_MS, or when it is full (HOLD_FRAMES, HOLD_BYTES): what it kept runs then, in
 * order, and later frames run as they come, as before; none is dropped.
 *
 * In a team of three or more, a third member that forwarded the source frames of the batch just
 * before the source took it off its owner table may still have them on their way: the source's
 * 'through' waits for each other member's 'drained', sent behind them (nic-worker.ts
 * handedThrough), and they follow the hand too.
 */

import type { MessagePort } from 'node:worker_threads';
import type { Clock, Timer } from '../../core/clock.ts';
import type { RxOffloadInfo } from '../../link/link.ts';
import type { AddressBook } from '../../state/path-state.ts';
import { TUPLE_READ, tcpTuple, tuple } from '../frame-tuple.ts';
import type { ConnKey } from '../nic.ts';
import { TupleMap } from '../tuple-map.ts';
import type { FrameBatcher } from './protocol.ts';

export { TUPLE_NONE, TUPLE_READ, TUPLE_UNKNOWN, tcpTuple, tuple } from '../frame-tuple.ts';

/** One end of a hands channel, as this worker uses it. */
export interface HandsLink {
  /** The owner number of the other worker's records (which names it). */
  readonly owner: number;
  readonly port: MessagePort;
  /** Frames for connections this worker handed over it ('fwd'), posted once per turn. */
  readonly out: FrameBatcher;
  /** Hands this worker sent over it, which numbers the next. */
  sent: number;
}

/** One hand the source sent, until the destination said it installed it. */
interface Hand {
  readonly link: HandsLink;
  readonly seq: number;
  readonly keys: readonly ConnKey[];
  /** Off the owner table already (`unlist`), still followed here until `installed`. */
  unlisted: boolean;
}

/** The source's side: connections it handed on, still listed as its own until the destination's word. */
export class HandedOn {
  private readonly byKey = new TupleMap<Hand>();
  private readonly open = new Map<HandsLink, Hand[]>();

  /**
   * `unlistKey`: take a connection off the owner table, unless this worker runs it again (a move
   * back before the destination's word came). `addrs`: the table of an IPv6 key's handles, which
   * the list keeps a reference to (see `add`).
   */
  constructor(
    private readonly unlistKey: (k: ConnKey) => void,
    private readonly addrs: () => AddressBook | null = () => null,
  ) {}

  get size(): number {
    return this.byKey.size;
  }

  /**
   * The batch `keys` goes over `link` (still listed here): its number in the hand. An IPv6 key's
   * handles are kept here until the hand is done with (the caller holds them as it calls): the
   * last connection with those addresses released, this worker's table would let them go, and
   * the frames that follow the hand could not be read.
   */
  add(link: HandsLink, keys: readonly ConnKey[]): number {
    const hand: Hand = { link, seq: ++link.sent, keys, unlisted: false };
    const addrs = this.addrs();
    for (const k of keys) {
      if (this.byKey.get(k) === undefined) {
        addrs?.ref(k.localIp);
        addrs?.ref(k.remoteIp);
      }
      this.byKey.set(k, hand);
    }
    let list = this.open.get(link);
    if (list === undefined) this.open.set(link, (list = []));
    list.push(hand);
    return hand.seq;
  }

  /** The link a frame (just read by tcpTuple) goes over, when it is for a connection handed on. */
  linkOfTuple(): HandsLink | undefined {
    return this.byKey.lookup(tuple.localIp, tuple.localPort, tuple.remoteIp, tuple.remotePort)?.link;
  }

  /** The connection runs here again: its frames are its own, and the destination's word is not for it. */
  reinstalled(k: ConnKey): void {
    if (this.byKey.delete(k)) this.letGo(k);
  }

  /**
   * The destination installed the hands up to `seq` over `link`: their connections come off the
   * owner table here, so the team's other members send their frames to the destination from now
   * on; what still reaches this worker for them follows the hands until `installed`.
   */
  unlist(link: HandsLink, seq: number): void {
    const list = this.open.get(link);
    if (list === undefined) return;
    for (const hand of list) {
      if (hand.seq > seq) break;
      if (hand.unlisted) continue;
      hand.unlisted = true;
      for (const k of hand.keys) if (this.byKey.get(k) === hand) this.unlistKey(k);
    }
  }

  /**
   * The destination installed the hands up to `seq` over `link`, and every other member sent on
   * what it had sent here for them: their connections are listed there now, and off the list here.
   * The caller sends 'through' behind what it forwarded.
   */
  installed(link: HandsLink, seq: number): void {
    const list = this.open.get(link);
    if (list === undefined) return;
    while (list.length > 0 && list[0]!.seq <= seq) this.forget(list.shift()!);
    if (list.length === 0) this.open.delete(link);
  }

  /** The channel closed (the destination stopped): nothing more goes over it. */
  closed(link: HandsLink): void {
    const list = this.open.get(link);
    if (list === undefined) return;
    this.open.delete(link);
    for (const hand of list) this.forget(hand);
  }

  private forget(hand: Hand): void {
    for (const k of hand.keys) {
      // Handed again since (another hand), or run here again: not this hand's to let go.
      if (this.byKey.get(k) !== hand) continue;
      this.byKey.delete(k);
      if (!hand.unlisted) this.unlistKey(k);
      this.letGo(k);
    }
  }

  private letGo(k: ConnKey): void {
    const addrs = this.addrs();
    addrs?.release(k.localIp);
    addrs?.release(k.remoteIp);
  }
}

/**
 * How long a frame waits in a hold at most, from the first one held, for the source's 'through'.
 * Linux's least retransmission timeout (TCP_RTO_MIN): a segment the peer sent held longer has its
 * timer fire (a resend, the window down to one segment), which costs the peer more than the
 * reordering that running it early may cause. Not from the install: the hold itself lasts as long
 * as the source takes to read the destination's word, which waits behind the source's other
 * requests: at 10,000 connections (40 parts of 256 in flight at once, load 16-24 on two cores)
 * 0.4-10 s, at 1,000 0.4-0.75 s (BENCHMARKS.md, "A direct hand's hold").
 */
export const HOLD_MS = 200;
/**
 * Frames and bytes a hold keeps at most (bytes as they came: a TAP's coalesced frames are up to
 * 64 KB each). Past either, the hold ends early: what it kept runs, in order, and so does the
 * frame that found it full (counted 'overflow'); later ones run as they come. Nothing is dropped:
 * a frame the peer must resend costs it a timeout, a frame run early only an out-of-order one.
 */
export const HOLD_FRAMES = 4096;
export const HOLD_BYTES = 8 << 20;

/** One batch's held input at the destination. */
interface Hold {
  readonly from: unknown;
  readonly seq: number;
  readonly keys: readonly ConnKey[];
  readonly frames: Uint8Array[];
  readonly infos: (RxOffloadInfo | undefined)[];
  /** Whether each frame came from a peer (run as one: never forwarded back out). */
  readonly fromPeer: boolean[];
  /** Bytes of `frames`. */
  bytes: number;
  /** When it began (clock ms): how long holds last is read from the longest (`longestMs`). */
  readonly at: number;
  readonly timer: Timer;
}

export interface HeldInHooks {
  /** Run a frame as its way in would have. */
  run(frame: Uint8Array, info: RxOffloadInfo | undefined, fromPeer: boolean): void;
  /** Counted events: 'held', 'overflow', 'expired'. */
  count(what: 'held' | 'overflow' | 'expired', n: number): void;
}

/** The destination's side: the input of connections just handed here, held until the source's 'through'. */
export class HeldIn {
  private readonly byKey = new TupleMap<Hold>();
  private readonly byFrom = new Map<unknown, Hold[]>();
  private longest = 0;

  /** `addrs`: the table an IPv6 frame's addresses are found in (tcpTuple). */
  constructor(
    private readonly clock: Clock,
    private readonly hooks: HeldInHooks,
    private readonly addrs: () => AddressBook | null = () => null,
    /** At most this long (HOLD_MS; longer in tests that stop the source and must not see a hold expire). */
    private readonly holdMs = HOLD_MS,
  ) {}

  get size(): number {
    return this.byKey.size;
  }

  /** The longest a hold lasted, from the install to its end (ms). */
  get longestMs(): number {
    return this.longest;
  }

  /** Hold what arrives for `keys` (installed by hand `seq` from the source `from`) other than over the hands channel. */
  hold(from: unknown, seq: number, keys: readonly ConnKey[]): void {
    if (keys.length === 0) return;
    const timer = this.clock.createTimer(() => {
      this.hooks.count('expired', 1);
      this.release(hold);
    });
    const hold: Hold = {
      from,
      seq,
      keys,
      frames: [],
      infos: [],
      fromPeer: [],
      bytes: 0,
      at: this.clock.now(),
      timer,
    };
    for (const k of keys) this.byKey.set(k, hold);
    let list = this.byFrom.get(from);
    if (list === undefined) this.byFrom.set(from, (list = []));
    list.push(hold);
    timer.unref();
  }

  /**
   * Whether a frame is held (kept to run later); false: run it now (the caller does), which for a
   * frame that finds its hold full comes after everything the hold kept.
   */
  offer(frame: Uint8Array, info: RxOffloadInfo | undefined, fromPeer: boolean): boolean {
    if (tcpTuple(frame, this.addrs()) !== TUPLE_READ) return false;
    const hold = this.byKey.lookup(tuple.localIp, tuple.localPort, tuple.remoteIp, tuple.remotePort);
    if (hold === undefined) return false;
    if (hold.frames.length >= HOLD_FRAMES || hold.bytes + frame.length > HOLD_BYTES) {
      this.hooks.count('overflow', 1);
      this.release(hold);
      return false;
    }
    if (hold.frames.length === 0) hold.timer.arm(this.holdMs);
    // Copies: a batch's buffer, or a TAP's, is reused once its frames ran.
    hold.frames.push(frame.slice());
    hold.infos.push(info === undefined ? undefined : { ...info });
    hold.fromPeer.push(fromPeer);
    hold.bytes += frame.length;
    this.hooks.count('held', 1);
    return true;
  }

  /** The source sent on everything it had for its hands up to `seq`: run what was held, in order. */
  through(from: unknown, seq: number): void {
    const list = this.byFrom.get(from);
    while (list !== undefined && list.length > 0 && list[0]!.seq <= seq) this.release(list[0]!);
  }

  /** The source's channel closed: nothing more comes from it. */
  closed(from: unknown): void {
    const list = this.byFrom.get(from);
    while (list !== undefined && list.length > 0) this.release(list[0]!);
  }

  private release(hold: Hold): void {
    const list = this.byFrom.get(hold.from);
    const at = list?.indexOf(hold) ?? -1;
    if (at < 0) return;
    list!.splice(at, 1);
    if (list!.length === 0) this.byFrom.delete(hold.from);
    hold.timer.disarm();
    const lasted = this.clock.now() - hold.at;
    if (lasted > this.longest) this.longest = lasted;
    for (const k of hold.keys) if (this.byKey.get(k) === hold) this.byKey.delete(k);
    for (let i = 0; i < hold.frames.length; i++)
      this.hooks.run(hold.frames[i]!, hold.infos[i], hold.fromPeer[i]!);
  }
}
