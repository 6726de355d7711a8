import type { Link } from './link.ts';
import { LinkWrapper } from './link-wrapper.ts';

/**
 * A link whose carrier changes reach the one handler a Link has (the stack's) and then every
 * watcher added with `watch` (a log, a status line). A Link keeps one carrier handler, so a second
 * `onCarrier` on the link itself replaces the first: `serve` on one TAP once took the stack's that
 * way, and the stack never heard its carrier come up (no MLD reports resent, no DAD restarted, no
 * neighbor announcement).
 */
export class CarrierTee extends LinkWrapper {
  private readonly watchers: ((up: boolean) => void)[] = [];

  constructor(inner: Link) {
    super(inner);
  }

  /** Also tell `watcher` of every carrier change, after the link's own handler. */
  watch(watcher: (up: boolean) => void): void {
    this.watchers.push(watcher);
  }

  override onCarrier(handler: (up: boolean) => void): void {
    this.inner.onCarrier((up) => {
      handler(up);
      for (const w of this.watchers) w(up);
    });
  }
}
