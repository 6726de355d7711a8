import type { Link, LinkGsoOptions, LinkOffloads, RxOffloadInfo } from './link.ts';

/**
 * A Link that passes everything through to `inner`: the base of links that watch or change one
 * thing (a capture, a counter) and must otherwise be indistinguishable from the link they wrap,
 * offloads included. Subclasses override what they change; `sendOffloaded` stands for `sendGso`,
 * which exists only when the inner link has it.
 */
export class LinkWrapper implements Link {
  constructor(protected readonly inner: Link) {}
  get name(): string {
    return this.inner.name;
  }
  get mtu(): number {
    return this.inner.mtu;
  }
  get carrier(): boolean {
    return this.inner.carrier;
  }
  get offloads(): LinkOffloads | undefined {
    return this.inner.offloads;
  }
  get sendGso(): ((frame: Uint8Array, opts: LinkGsoOptions) => boolean) | undefined {
    return this.inner.sendGso ? this.gso : undefined;
  }
  get drain(): (() => boolean) | undefined {
    return this.inner.drain ? this.drainInner : undefined;
  }
  get yieldRx(): (() => void) | undefined {
    return this.inner.yieldRx ? this.yieldInner : undefined;
  }
  send(frame: Uint8Array): boolean {
    return this.inner.send(frame);
  }
  /** What `sendGso` does; the inner link is known to have one. */
  protected sendOffloaded(frame: Uint8Array, opts: LinkGsoOptions): boolean {
    return this.inner.sendGso!(frame, opts);
  }
  onFrame(handler: (frame: Uint8Array, info?: RxOffloadInfo) => void): void {
    this.inner.onFrame(handler);
  }
  onCarrier(handler: (up: boolean) => void): void {
    this.inner.onCarrier(handler);
  }
  close(): void {
    this.inner.close();
  }
  private readonly drainInner = (): boolean => this.inner.drain!();
  private readonly yieldInner = (): void => this.inner.yieldRx!();
  private readonly gso = (frame: Uint8Array, opts: LinkGsoOptions): boolean =>
    this.sendOffloaded(frame, opts);
}
