/**
 * Offload facts a link may attach to a received frame. Links without offloads never pass one.
 */
export interface RxOffloadInfo {
  /**
   * The TCP/UDP checksum field holds only the pseudo-header sum: do not verify it. The device (the
   * kernel, for a TAP) vouches for the data, or it came from a local sender that never summed it.
   */
  readonly csumPartial: boolean;
  /** The device has already verified the L4 checksum. */
  readonly csumValid: boolean;
  /** Segmentation type of a super-segment (1 = TCP over IPv4, 4 = TCP over IPv6); 0 for an ordinary frame. */
  readonly gsoType: number;
  /** For a super-segment: the payload bytes per wire segment it stands for. */
  readonly gsoSize: number;
}

/** What a link can finish on the way out. */
export interface LinkOffloads {
  /** `sendGso` with gsoSize > 0: TCP/IPv4 super-segments up to 64 KB, cut by the device. */
  readonly tso: boolean;
  /**
   * The same for TCP over IPv6 (fixed header, no extension headers): each cut segment keeps the
   * IPv6 header (flow label included) with its own payload length. Absent means false.
   */
  readonly tso6?: boolean;
  /** `sendGso` with gsoSize 0: the device completes the TCP/UDP checksum, over IPv4 or IPv6. */
  readonly csum: boolean;
}

export interface LinkGsoOptions {
  /** TCP payload bytes per wire segment (the MSS); 0 asks only for checksum completion. */
  gsoSize: number;
  /** Offset in the frame of the L4 header, where the checksum sum starts. */
  csumStart: number;
  /** Offset of the checksum field from csumStart: 16 for TCP, 6 for UDP. */
  csumOffset: number;
}

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
  /**
   * Install the receive handler (one per link). Links with offloads pass `info` with every frame;
   * it is valid only during the call. A frame with info may be an IPv4 packet above the MTU (a
   * coalesced super-segment) and may carry a partial L4 checksum.
   */
  onFrame(handler: (frame: Uint8Array, info?: RxOffloadInfo) => void): void;
  /**
   * Install the carrier handler, called on every change. `since` (the link's clock) is the last
   * moment the link saw the old state: the change itself for a link that is told of it, the previous
   * poll for one that polls. Detection delays count from it.
   */
  onCarrier(handler: (up: boolean, since?: number) => void): void;
  close(): void;
  /** What `sendGso` may be asked for; absent or all false for links without offloads. */
  readonly offloads?: LinkOffloads;
  /**
   * Send an IPv4 or IPv6 frame whose L4 checksum the link completes (its checksum field is
   * ignored) and, with gsoSize > 0, which the link cuts into TCP segments of gsoSize payload bytes.
   * The IP header must be complete for the whole frame (an IPv6 one without extension headers).
   * Only called when `offloads` grants it (`tso6` for an IPv6 super-segment).
   */
  sendGso?(frame: Uint8Array, opts: LinkGsoOptions): boolean;
  /**
   * Hand the receive handler, synchronously, the frames waiting on the link now (up to a budget).
   * True when none is left waiting. Present on links whose frames wait somewhere a thread may be
   * late to look (a TAP's kernel queue, read after Node's timers run); absent where frames arrive
   * by their own events.
   */
  drain?(): boolean;
  /**
   * End the batch of received frames after the one being handled: the rest wait in the link's
   * queue until work that frame deferred has had its turn (the application taking connections
   * from a listener's accept queue, Stack's TcpHostEnv.yieldInput); `drain` reads nothing until
   * the link's next batch, which comes after that work. Present on links that read a batch per
   * turn (a TAP); absent where each frame comes by its own event.
   */
  yieldRx?(): void;
}
