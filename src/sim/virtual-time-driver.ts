import type { VirtualClock } from '../core/clock.ts';

/**
 * Runs a VirtualClock so that ordinary async code (streams, promises, await) works on virtual
 * time: between two turns of Node's event loop every pending microtask and nextTick has run,
 * so when a turn finds nothing due "now", nothing is runnable, and time may jump to the next
 * deadline. The driver keeps the process alive only while ref'd timers are pending, like
 * Node's own timers.
 */
export class VirtualTimeDriver {
  private scheduled = false;
  private stopped = false;

  constructor(private readonly clock: VirtualClock) {
    clock.onWork = () => this.schedule();
  }

  schedule(): void {
    if (this.scheduled || this.stopped) return;
    this.scheduled = true;
    setImmediate(this.turn);
  }

  stop(): void {
    this.stopped = true;
    this.clock.onWork = null;
  }

  private readonly turn = (): void => {
    this.scheduled = false;
    if (this.stopped) return;
    const ran = this.clock.runDue();
    if (ran === 0 && this.clock.pendingRefs > 0) this.clock.step();
    if (this.clock.pendingRefs > 0) this.schedule();
  };
}
