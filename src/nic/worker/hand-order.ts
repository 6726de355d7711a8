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
 * hold ends without 'through' when the channel closes (the source died or closed) or after
 * HOLD_MS: later frames then run as they come, as before.
 */

import type { MessagePort } from 'node:worker_threads';
import type { Clock, Timer } from '../../core/clock.ts';
import type { RxOffloadInfo } from '../../link/link.ts';
import {
  ethIpv4Offset,
  ipv4Dst,
  ipv4HeaderLen,
  ipv4IsFragment,
  ipv4Proto,
  ipv4Src,
  l4DstPort,
  l4SrcPort,
} from '../../wire/fields.ts';
import { IpProto } from '../../wire/ipv4.ts';
import type { ConnKey } from '../nic.ts';
import { TupleMap } from '../tuple-map.ts';
import type { FrameBatcher } from './protocol.ts';

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

/** The four-tuple of the last frame `tcp4Tuple` read (as the receiver names it: local is the destination). */
export const tuple = { localIp: 0, localPort: 0, remoteIp: 0, remotePort: 0 };

/** Read an unfragmented IPv4 TCP frame's four-tuple into `tuple`; false for anything else. */
export function tcp4Tuple(frame: Uint8Array): boolean {
  const ip = ethIpv4Offset(frame);
  if (ip < 0 || ipv4Proto(frame, ip) !== IpProto.TCP || ipv4IsFragment(frame, ip)) return false;
  const t = ip + ipv4HeaderLen(frame, ip);
  if (frame.length < t + 4) return false;
  tuple.localIp = ipv4Dst(frame, ip);
  tuple.localPort = l4DstPort(frame, t);
  tuple.remoteIp = ipv4Src(frame, ip);
  tuple.remotePort = l4SrcPort(frame, t);
  return true;
}

/** One hand the source sent, until the destination said it installed it. */
interface Hand {
  readonly link: HandsLink;
  readonly seq: number;
  readonly keys: readonly ConnKey[];
}

/** The source's side: connections it handed on, still listed as its own until the destination's word. */
export class HandedOn {
  private readonly byKey = new TupleMap<Hand>();
  private readonly open = new Map<HandsLink, Hand[]>();

  /**
   * `unlist`: take a connection off the owner table, unless this worker runs it again (a move
   * back before the destination's word came).
   */
  constructor(private readonly unlist: (k: ConnKey) => void) {}

  get size(): number {
    return this.byKey.size;
  }

  /** The batch `keys` goes over `link` (still listed here): its number in the hand. */
  add(link: HandsLink, keys: readonly ConnKey[]): number {
    const hand: Hand = { link, seq: ++link.sent, keys };
    for (const k of keys) this.byKey.set(k, hand);
    let list = this.open.get(link);
    if (list === undefined) this.open.set(link, (list = []));
    list.push(hand);
    return hand.seq;
  }

  /** The link a frame (just read by tcp4Tuple) goes over, when it is for a connection handed on. */
  linkOfTuple(): HandsLink | undefined {
    return this.byKey.lookup(tuple.localIp, tuple.localPort, tuple.remoteIp, tuple.remotePort)?.link;
  }

  /** The connection runs here again: its frames are its own, and the destination's word is not for it. */
  reinstalled(k: ConnKey): void {
    this.byKey.delete(k);
  }

  /**
   * The destination installed the hands up to `seq` over `link`: their connections are listed
   * there now, and off the list here. The caller sends 'through' behind what it forwarded.
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
      this.unlist(k);
    }
  }
}

/** How long a destination holds a batch's input at most, waiting for the source's 'through'. */
export const HOLD_MS = 200;
/** Frames a hold keeps at most; later ones are dropped (counted), and the peer resends them. */
export const HOLD_FRAMES = 4096;

/** One batch's held input at the destination. */
interface Hold {
  readonly from: unknown;
  readonly seq: number;
  readonly keys: readonly ConnKey[];
  readonly frames: Uint8Array[];
  readonly infos: (RxOffloadInfo | undefined)[];
  /** Whether each frame came from a peer (run as one: never forwarded back out). */
  readonly fromPeer: boolean[];
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

  constructor(
    private readonly clock: Clock,
    private readonly hooks: HeldInHooks,
    /** At most this long (HOLD_MS; longer in tests that stop the source and must not see a hold expire). */
    private readonly holdMs = HOLD_MS,
  ) {}

  get size(): number {
    return this.byKey.size;
  }

  /** Hold what arrives for `keys` (installed by hand `seq` from the source `from`) other than over the hands channel. */
  hold(from: unknown, seq: number, keys: readonly ConnKey[]): void {
    if (keys.length === 0) return;
    const timer = this.clock.createTimer(() => {
      this.hooks.count('expired', 1);
      this.release(hold);
    });
    const hold: Hold = { from, seq, keys, frames: [], infos: [], fromPeer: [], timer };
    for (const k of keys) this.byKey.set(k, hold);
    let list = this.byFrom.get(from);
    if (list === undefined) this.byFrom.set(from, (list = []));
    list.push(hold);
    timer.unref().arm(this.holdMs);
  }

  /** Whether a frame is held (kept to run later, or dropped past HOLD_FRAMES); false: run it now. */
  offer(frame: Uint8Array, info: RxOffloadInfo | undefined, fromPeer: boolean): boolean {
    if (!tcp4Tuple(frame)) return false;
    const hold = this.byKey.lookup(tuple.localIp, tuple.localPort, tuple.remoteIp, tuple.remotePort);
    if (hold === undefined) return false;
    if (hold.frames.length >= HOLD_FRAMES) {
      this.hooks.count('overflow', 1);
      return true;
    }
    // Copies: a batch's buffer, or a TAP's, is reused once its frames ran.
    hold.frames.push(frame.slice());
    hold.infos.push(info === undefined ? undefined : { ...info });
    hold.fromPeer.push(fromPeer);
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
    for (const k of hold.keys) if (this.byKey.get(k) === hold) this.byKey.delete(k);
    for (let i = 0; i < hold.frames.length; i++)
      this.hooks.run(hold.frames[i]!, hold.infos[i], hold.fromPeer[i]!);
  }
}
