import { writeMac } from '../wire/addr.ts';
import type { LinkGsoOptions } from './link.ts';
import { LinkWrapper } from './link-wrapper.ts';

/**
 * The source MAC rewrite of a team member that does not receive for the team (`Nic.sendFrom`): a
 * frame sent from the team's MAC leaves from the member's own instead, so the switch learns the
 * team MAC on the receiving member's port alone (bonding's TLB: transmit from every member,
 * receive on one). Rewritten in place: the frame is the sender's to send, and is sent as it is now.
 */
export class SourceSteer {
  private readonly team = new Uint8Array(6);
  private readonly own = new Uint8Array(6);
  private on = false;

  /** Frames from `teamMac` leave from `mac` from now on; `mac` null: as they are. */
  set(teamMac: number, mac: number | null): void {
    writeMac(this.team, 0, teamMac);
    writeMac(this.own, 0, mac ?? 0);
    this.on = mac !== null && mac !== 0;
  }

  /** The frame's source rewritten in place when it is the team's MAC and the steer is on. */
  apply(frame: Uint8Array): void {
    if (!this.on || frame.length < 14) return;
    const team = this.team;
    for (let i = 0; i < 6; i++) if (frame[6 + i] !== team[i]) return;
    frame.set(this.own, 6);
  }
}

/** A link whose frames go out through a `SourceSteer` (a member's link in the host's thread or a worker's). */
export class SteeredLink extends LinkWrapper {
  readonly steer = new SourceSteer();
  override send(frame: Uint8Array): boolean {
    this.steer.apply(frame);
    return this.inner.send(frame);
  }
  protected override sendOffloaded(frame: Uint8Array, o: LinkGsoOptions): boolean {
    this.steer.apply(frame);
    return this.inner.sendGso!(frame, o);
  }
}
