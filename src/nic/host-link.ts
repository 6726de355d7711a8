import { InvalidArgumentError } from '../core/errors.ts';
import type { Link } from '../link/link.ts';

/** How a host link reaches its NIC: in the same thread, or across a worker's port. */
export interface HostLinkTransport {
  /** A frame from the host stack, to go out on the NIC's link (false: not sent). */
  send(frame: Uint8Array): boolean;
  readonly mtu: number;
  readonly carrier: boolean;
}

/**
 * The host stack's side of a NIC's link, one class for every NIC: frames the host sends go out
 * through the NIC (the transport), and the NIC hands up (`deliver`) every received frame that is
 * not for a connection it runs, and its carrier changes (`carrierChanged`).
 */
export class NicHostLink implements Link {
  private handler: ((frame: Uint8Array) => void) | null = null;
  private carrierHandler: ((up: boolean) => void) | null = null;

  constructor(
    readonly name: string,
    private readonly transport: HostLinkTransport,
  ) {}

  get mtu(): number {
    return this.transport.mtu;
  }
  get carrier(): boolean {
    return this.transport.carrier;
  }
  send(frame: Uint8Array): boolean {
    return this.transport.send(frame);
  }
  onFrame(handler: (frame: Uint8Array) => void): void {
    if (typeof handler !== 'function') throw new InvalidArgumentError('onFrame needs a function');
    this.handler = handler;
  }
  onCarrier(handler: (up: boolean) => void): void {
    if (typeof handler !== 'function') throw new InvalidArgumentError('onCarrier needs a function');
    this.carrierHandler = handler;
  }
  /** A frame for the host stack; false if nothing listens (the caller counts the drop). */
  deliver(frame: Uint8Array): boolean {
    const h = this.handler;
    if (h === null) return false;
    h(frame);
    return true;
  }
  /** The host's handler, for a batch of frames to hand up without a call per frame; null if none. */
  get receiver(): ((frame: Uint8Array) => void) | null {
    return this.handler;
  }
  carrierChanged(up: boolean): void {
    this.carrierHandler?.(up);
  }
  close(): void {
    this.handler = null;
    this.carrierHandler = null;
  }
}
