/**
 * A link moves Ethernet frames and reports carrier. It knows nothing of IP or TCP.
 *
 * Frames passed to `send` are borrowed: the link copies what it must keep before returning.
 * Frames handed to the receive handler are borrowed too: the handler must copy what it keeps,
 * because the link reuses the memory after the handler returns.
 */
export interface Link {
  readonly name: string;
  /** Largest Ethernet payload (IP packet) the link carries, e.g. 1500. */
  readonly mtu: number;
  /** True while the link can carry frames. */
  readonly carrier: boolean;
  /** Queue one frame for transmission. Returns false if it was dropped (no carrier, queue full). */
  send(frame: Uint8Array): boolean;
  /** Install the receive handler (one per link). */
  onFrame(handler: (frame: Uint8Array) => void): void;
  /** Install the carrier handler, called on every change. */
  onCarrier(handler: (up: boolean) => void): void;
  close(): void;
}
