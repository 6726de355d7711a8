import type { NeighborState } from './neighbor-state.ts';

/**
 * Layer-3 state between a local and a remote IPv4 address, shared by every connection between
 * them. Its MTU falls when ICMP fragmentation-needed arrives, and that reaches every TCP state
 * that points here.
 */
export interface PathConst {
  localIp: number;
  remoteIp: number;
}

export interface PathCached {
  /** Path MTU in bytes (IP header included). */
  mtu: number;
  ttl: number;
  tos: number;
}

export interface PathState {
  readonly const: PathConst;
  readonly cached: PathCached;
  /** The next hop: the remote host itself on-link, or the gateway. Re-pointed when a route changes. */
  neighbor: NeighborState;
  /** Index of the stack interface the path leaves by. */
  ifIndex: number;
}

export function createPathState(
  c: PathConst,
  neighbor: NeighborState,
  ifIndex: number,
  mtu: number,
  ttl = 64,
): PathState {
  return { const: { ...c }, cached: { mtu, ttl, tos: 0 }, neighbor, ifIndex };
}
