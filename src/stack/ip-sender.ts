import type { PathState } from '../state/path-state.ts';

/**
 * How a transport protocol hands a packet to the path layer without copying it: it asks where
 * its header starts in the shared transmit buffer, writes the transport header and payload there,
 * then commits. The path layer fills in the IPv4 and Ethernet headers around it, fragments if the
 * packet is too big and DF is clear, resolves the neighbor (queueing while ARP is in progress),
 * and sends it on the path's interface.
 */
export interface IpSender {
  /** The transmit buffer; valid between `begin` and `commit`. */
  readonly txBuf: Uint8Array;
  /** Offset in `txBuf` where the transport header must be written for this path. */
  begin(path: PathState): number;
  /**
   * Transmit the `l4Len` bytes written at the offset `begin` returned.
   * `df`: set Don't Fragment (TCP always does; path MTU discovery relies on it).
   * Returns false if the packet could not be sent or queued (no route, link down, ARP queue full).
   */
  commit(path: PathState, protocol: number, l4Len: number, df: boolean, ttl?: number, tos?: number): boolean;

  // Offloads. All optional: a sender without them gets ordinary packets, checksummed by the
  // transport and no larger than the path MTU.

  /**
   * True if the link will complete the TCP checksum of a packet sent now on `path` with
   * `commitOffload`, so the transport need not compute it.
   */
  checksumOffload?(path: PathState): boolean;
  /**
   * Largest IP packet (header included) a transport may commit now on `path` with
   * `commitOffload`: the path MTU, or up to 65535 when the link cuts TCP super-segments (TSO).
   * Only valid until the next call into the path layer.
   */
  maxPacketBytes?(path: PathState): number;
  /**
   * Like `commit` (DF set) for a TCP packet whose checksum is left to the link: the checksum
   * field's content is ignored. A packet above the path MTU is cut by the link into segments of
   * `segSize` payload bytes, each with a copy of the TCP header (FIN and PSH only on the last).
   * If the offload is no longer possible the path layer completes the checksum in software.
   */
  commitOffload?(path: PathState, l4Len: number, segSize: number, ttl?: number, tos?: number): boolean;
}

/** The facts of an arriving IPv4 packet that transports need. */
export interface IpInfo {
  src: number;
  dst: number;
  ttl: number;
  tos: number;
  /** Index of the interface the packet arrived on. */
  ifIndex: number;
  /**
   * The link vouched for the TCP/UDP checksum (verified it, or received it from a local sender
   * that never computed it and had the path layer complete it): transports may skip verifying.
   */
  l4ChecksumOk?: boolean;
}

/** What an ICMP error tells a transport about one of its packets. */
export interface IcmpErrorInfo {
  /** 'unreachable' (type 3, except code 4), 'frag-needed' (type 3 code 4), 'time-exceeded' (type 11). */
  kind: 'unreachable' | 'frag-needed' | 'time-exceeded';
  code: number;
  /** Next-hop MTU for 'frag-needed' (0 if the router did not say). */
  mtu: number;
  /** Addresses of the quoted (original) packet: src is ours, dst is the peer's. */
  src: number;
  dst: number;
  /** First 8 bytes of the quoted transport header: ports, and for TCP the sequence number. */
  srcPort: number;
  dstPort: number;
  /** TCP sequence number from the quoted header (0 for UDP). */
  seq: number;
  /**
   * For 'frag-needed': false when the path MTU was already at or below the reported one (a copy
   * of an earlier message), so nothing needs resending. Absent for errors raised locally.
   */
  mtuLowered?: boolean;
}
