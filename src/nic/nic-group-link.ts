import type { Link } from '../link/link.ts';
import { ethDstIsGroup } from '../wire/fields.ts';
import type { Nic } from './nic.ts';

/**
 * The host's side of several NICs on one segment (a team in the making): it sends through the
 * first NIC and hears every NIC. Only the first passes broadcasts up, so a flooded ARP request is
 * answered once.
 */
export class NicGroupLink implements Link {
  readonly name: string;
  private handler: ((frame: Uint8Array) => void) | null = null;
  constructor(private readonly nics: readonly Nic[]) {
    this.name = `${nics[0]!.id}+`;
    nics.forEach((nic, i) => {
      nic.hostLink.onFrame((frame) => {
        if (i > 0 && ethDstIsGroup(frame)) return;
        this.handler?.(frame);
      });
    });
  }
  get mtu(): number {
    return this.nics[0]!.hostLink.mtu;
  }
  get carrier(): boolean {
    return this.nics[0]!.hostLink.carrier;
  }
  send(frame: Uint8Array): boolean {
    return this.nics[0]!.hostLink.send(frame);
  }
  onFrame(handler: (frame: Uint8Array) => void): void {
    this.handler = handler;
  }
  onCarrier(handler: (up: boolean) => void): void {
    this.nics[0]!.hostLink.onCarrier(handler);
  }
  close(): void {
    this.handler = null;
  }
}
