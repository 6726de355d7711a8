import type { NeighborState } from './neighbor-state.ts';

/**
 * Layer-3 state between a local and a remote address of one family, shared by every connection
 * between them. Its MTU falls when ICMP fragmentation-needed (or packet too big) arrives, and that
 * reaches every TCP state that points here.
 */
export interface PathConst {
  /** An IPv4 address (u32) or an IPv6 address handle (> 2^32) of `PathState.addrs`. */
  localIp: number;
  remoteIp: number;
}

/**
 * The table an IPv6 path's address handles belong to (the stack's `AddressTable`, or a NIC's).
 * A handle means nothing without it: the codec writes the bytes it names and the receiver interns
 * them into its own table. Declared here, structurally, because `state` may not import `stack`.
 */
export interface AddressBook {
  /** A reference to the handle of buf[off..off+16], interned if new; -1 when the table is full. */
  intern(buf: Uint8Array, off?: number): number;
  /** The handle of buf[off..off+16] if interned, else -1 (no reference taken). */
  find(buf: Uint8Array, off: number): number;
  /** Mirror tables: a reference to `handle`, numbered by the sender's table, for these bytes; -1 if refused. */
  internAt?(buf: Uint8Array, off: number, handle: number): number;
  ref(handle: number): void;
  release(handle: number): void;
  /** A view of a handle's 16 bytes. */
  bytes(handle: number): Uint8Array;
  /** Copy a handle's 16 bytes to buf[off]. */
  write(handle: number, buf: Uint8Array, off: number): void;
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
  /** Where the IPv6 handles of `const` live; absent on an IPv4 path. */
  addrs?: AddressBook;
  /**
   * An IPv6 path's flow-label seed: each connection's label is a keyed hash of `base` (the two
   * addresses, hashed by the stack that made the path) and its ports with the keys k0/k1 (RFC
   * 6437), so every owner of a connection sends the label its peer first saw. Absent on IPv4.
   */
  flow?: FlowLabelSeed;
}

export interface FlowLabelSeed {
  base: number;
  k0: number;
  k1: number;
}

export function createPathState(
  c: PathConst,
  neighbor: NeighborState,
  ifIndex: number,
  mtu: number,
  ttl = 64,
  addrs?: AddressBook,
): PathState {
  const p: PathState = { const: { ...c }, cached: { mtu, ttl, tos: 0 }, neighbor, ifIndex };
  if (addrs !== undefined) p.addrs = addrs;
  return p;
}
