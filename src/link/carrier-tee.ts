import type { Link } from './link.ts';

/**
 * Carrier changes of one link told to the one handler a Link has (the stack's) and then to every
 * watcher added with `watch` (a log, a status line). A Link keeps one carrier handler, so a second
 * `onCarrier` on the link itself replaces the first: `serve` on one TAP once took the stack's that
 * way, and the stack never heard its carrier come up (no MLD reports resent, no DAD restarted, no
 * neighbor announcement).
 *
 * It hooks the link's `onCarrier` in place rather than wrapping the link: a wrapper stands in the
 * way of every frame sent (one more call each, on a single-TAP host's hottest path) to share an
 * event that comes a few times a day. Install it before the stack takes the link.
 */
export class CarrierTee {
  private readonly watchers: ((up: boolean) => void)[] = [];

  constructor(link: Link) {
    const own = link.onCarrier.bind(link);
    link.onCarrier = (handler: (up: boolean) => void): void =>
      own((up) => {
        handler(up);
        for (const w of this.watchers) w(up);
      });
  }

  /** Also tell `watcher` of every carrier change, after the link's own handler. */
  watch(watcher: (up: boolean) => void): void {
    this.watchers.push(watcher);
  }
}
