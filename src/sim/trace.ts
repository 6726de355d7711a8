import { createHash, type Hash } from 'node:crypto';
import type { Clock } from '../core/clock.ts';
import type { Link } from '../link/link.ts';

/**
 * A running digest of every frame a set of links sent, with its virtual send time: two runs
 * with the same seed must produce the same digest.
 */
export class FrameTrace {
  private readonly hash: Hash = createHash('sha256');
  private readonly stamp = new Float64Array(1);
  private readonly stampBytes = new Uint8Array(this.stamp.buffer);
  frames = 0;

  constructor(private readonly clock: Clock) {}

  record(frame: Uint8Array): void {
    this.stamp[0] = this.clock.now();
    this.hash.update(this.stampBytes);
    this.hash.update(frame);
    this.frames++;
  }

  digest(): string {
    return this.hash.copy().digest('hex');
  }

  /** A Link that records every frame sent through it before passing it on. */
  wrap(link: Link): Link {
    const trace = this;
    return {
      get name() {
        return link.name;
      },
      get mtu() {
        return link.mtu;
      },
      get carrier() {
        return link.carrier;
      },
      send(frame: Uint8Array): boolean {
        trace.record(frame);
        return link.send(frame);
      },
      onFrame: (h) => link.onFrame(h),
      onCarrier: (h) => link.onCarrier(h),
      close: () => link.close(),
    };
  }
}
