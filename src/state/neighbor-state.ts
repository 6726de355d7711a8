/**
 * Layer-2 state for one next hop, shared by every path that goes through it. A change of the
 * neighbor's MAC is one write to this object, whatever the number of connections beneath it.
 */
export interface NeighborConst {
  /** Our MAC on the interface that reaches this neighbor (48-bit number). */
  srcMac: number;
  /** 802.1Q VLAN id, or -1 when untagged. */
  vlanId: number;
  /** The neighbor's IPv4 address (u32), or 0 for an IPv6 neighbor (then `ip6` says who it is). */
  ip: number;
  /**
   * An IPv6 neighbor's 16 bytes (a copy owned by this object). Bytes, not an address handle: the
   * neighbor cache is keyed by bytes and the object must mean the same to an owner on another
   * thread. Absent for IPv4.
   */
  ip6?: Uint8Array;
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
    const: c.ip6 === undefined ? { ...c } : { ...c, ip6: c.ip6.slice(0, 16) },
    cached: { dstMac, hostReachableAt: dstMac >= 0 ? now : -1 },
    delegated: { nicReachableAt: -1 },
  };
}
