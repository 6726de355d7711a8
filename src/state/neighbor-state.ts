/**
 * Layer-2 state for one next hop, shared by every path that goes through it. A change of the
 * neighbor's MAC is one write to this object, whatever the number of connections beneath it.
 */
export interface NeighborConst {
  /** Our MAC on the interface that reaches this neighbor (48-bit number). */
  srcMac: number;
  /** 802.1Q VLAN id, or -1 when untagged. */
  vlanId: number;
  /** The neighbor's IPv4 address (u32). */
  ip: number;
}

export interface NeighborCached {
  /** The neighbor's MAC (48-bit number), or -1 while unresolved. */
  dstMac: number;
  /** Clock time (ms) the host last had proof the neighbor is reachable. */
  hostReachableAt: number;
}

export interface NeighborDelegated {
  /** Clock time (ms) the current owner last had proof the neighbor is reachable. */
  nicReachableAt: number;
}

export interface NeighborState {
  readonly const: NeighborConst;
  readonly cached: NeighborCached;
  readonly delegated: NeighborDelegated;
}

export function createNeighborState(c: NeighborConst, dstMac = -1, now = 0): NeighborState {
  return {
    const: { ...c },
    cached: { dstMac, hostReachableAt: dstMac >= 0 ? now : -1 },
    delegated: { nicReachableAt: -1 },
  };
}
