import type { Clock, Timer } from '../core/clock.ts';
import type { Link, RxOffloadInfo } from '../link/link.ts';

/**
 * The Link the host stack's interface sits on when its host has a team of NICs. Frames the host
 * sends go out through the NIC the team has chosen for host traffic (the active member); frames
 * are received from every member, because with one MAC on several ports the switch delivers to
 * whichever port last sent, not to the one the host chose.
 *
 * `steer` sees each received frame first, with the index of the member it came from: a frame for
 * a connection that another member runs is handed there instead of to the host stack.
 */
export class TeamLink implements Link {
  readonly name: string;
  private members: (Link | null)[] = [];
  private active = -1;
  private frameHandler: ((frame: Uint8Array, info?: RxOffloadInfo) => void) | null = null;
  private carrierHandler: ((up: boolean) => void) | null = null;
  private lastCarrier = false;
  private closed = false;
  /** Return true to consume the frame (it was forwarded elsewhere). */
  steer: ((frame: Uint8Array, member: number) => boolean) | null = null;
  framesSent = 0;
  framesDropped = 0;

  constructor(
    name: string,
    readonly mtu: number,
  ) {
    this.name = name;
  }

  /** Told when a member's link changes carrier (after the team link's own carrier is updated). */
  memberCarrier: ((i: number, up: boolean) => void) | null = null;

  /** Add a member's host link; returns its index. */
  add(link: Link): number {
    const i = this.members.length;
    this.members.push(link);
    this.listen(i, link);
    if (this.active < 0) this.active = i;
    this.carrierChanged();
    return i;
  }

  /** Member `i` stops being usable (dead NIC): never sent to or received from again. */
  remove(i: number): void {
    this.members[i] = null;
    if (this.active === i) this.active = -1;
    this.carrierChanged();
  }

  /**
   * Member `i`, removed, is reached through `link` from now on: the host's own link on a dead
   * member's port. Not made active by this (setActive).
   */
  restore(i: number, link: Link): void {
    if (i < 0 || i >= this.members.length || this.members[i] != null) return;
    this.members[i] = link;
    this.listen(i, link);
  }

  private listen(i: number, link: Link): void {
    // A removed member's frames still come up: a dead NIC passes up those it had in transit.
    link.onFrame((frame, info) => {
      if (this.closed) return;
      if (this.steer?.(frame, i)) return;
      this.frameHandler?.(frame, info);
    });
    link.onCarrier((up) => {
      this.carrierChanged();
      if (this.members[i] === link) this.memberCarrier?.(i, up);
    });
  }

  get activeIndex(): number {
    return this.active;
  }

  /** Send host traffic through member `i` from now on. */
  setActive(i: number): void {
    if (this.members[i] == null) return;
    this.active = i;
    this.carrierChanged();
  }

  get carrier(): boolean {
    if (this.closed || this.active < 0) return false;
    return this.members[this.active]?.carrier ?? false;
  }

  send(frame: Uint8Array): boolean {
    const l = this.active >= 0 ? this.members[this.active] : null;
    if (this.closed || !l) {
      this.framesDropped++;
      return false;
    }
    const ok = l.send(frame);
    if (ok) this.framesSent++;
    else this.framesDropped++;
    return ok;
  }

  onFrame(handler: (frame: Uint8Array, info?: RxOffloadInfo) => void): void {
    this.frameHandler = handler;
  }

  onCarrier(handler: (up: boolean) => void): void {
    this.carrierHandler = handler;
  }

  close(): void {
    this.closed = true;
    this.frameHandler = null;
    this.carrierHandler = null;
  }

  private carrierChanged(): void {
    const c = this.carrier;
    if (c === this.lastCarrier) return;
    this.lastCarrier = c;
    this.carrierHandler?.(c);
  }
}

/**
 * RFC 4861 7.2.6: MAX_NEIGHBOR_ADVERTISEMENT unsolicited advertisements, RetransTimer (1 s) apart.
 * One may be lost, and a neighbor that missed every one still recovers by NUD, so a few suffice.
 */
export const UNSOLICITED_NA_COUNT = 3;
export const UNSOLICITED_NA_INTERVAL_MS = 1000;

/**
 * The IPv6 half of what a port that takes over the host's traffic says: a series of unsolicited
 * neighbor advertisements (override set) for every address the team owns, the first at once, from
 * whichever port carries the host's traffic when each one is due. A new takeover restarts the
 * series from that port.
 */
export class UnsolicitedNaSeries {
  private left = 0;
  private readonly timer: Timer;

  constructor(
    clock: Clock,
    /** Send one round from the current host port; returns the advertisements sent. */
    private readonly round: () => number,
    private readonly count = UNSOLICITED_NA_COUNT,
    private readonly intervalMs = UNSOLICITED_NA_INTERVAL_MS,
  ) {
    this.timer = clock.createTimer(this.tick).unref();
  }

  start(): void {
    this.left = this.count;
    this.timer.disarm();
    this.tick();
  }

  close(): void {
    this.left = 0;
    this.timer.disarm();
  }

  private readonly tick = (): void => {
    if (this.left <= 0) return;
    this.left--;
    // An address still in DAD is skipped by the round; a later round announces it.
    this.round();
    if (this.left > 0) this.timer.arm(this.intervalMs);
  };
}
