import type { AddressBook } from '../state/path-state.ts';
import { EtherType } from '../wire/ethernet.ts';
import {
  ethIpv4Offset,
  ethL3Offset,
  ethType,
  ipv4Dst,
  ipv4HeaderLen,
  ipv4IsFragment,
  ipv4Proto,
  ipv4Src,
  l4DstPort,
  l4SrcPort,
} from '../wire/fields.ts';
import { IpProto } from '../wire/ipv4.ts';

/** The four-tuple of the last frame `tcpTuple` read (as the receiver names it: local is the destination). */
export const tuple = { localIp: 0, localPort: 0, remoteIp: 0, remotePort: 0 };

/** What `tcpTuple` found. */
export const TUPLE_READ = 1;
export const TUPLE_NONE = 0;
/** A TCP segment over IPv6 with an address the table holds no handle for: no connection's here. */
export const TUPLE_UNKNOWN = -1;

/**
 * Read a frame's four-tuple into `tuple`: an unfragmented IPv4 TCP segment, or an IPv6 one with
 * TCP right behind the fixed header (extension headers go up, and our TCP segments never carry
 * them), its addresses as the handles `addrs` holds for them: a worker's table mirrors the
 * host's, so a handle names the same address on every thread of the team.
 */
export function tcpTuple(frame: Uint8Array, addrs: AddressBook | null): number {
  const ip4 = ethIpv4Offset(frame);
  if (ip4 >= 0) {
    if (ipv4Proto(frame, ip4) !== IpProto.TCP || ipv4IsFragment(frame, ip4)) return TUPLE_NONE;
    const t = ip4 + ipv4HeaderLen(frame, ip4);
    if (frame.length < t + 4) return TUPLE_NONE;
    tuple.localIp = ipv4Dst(frame, ip4);
    tuple.localPort = l4DstPort(frame, t);
    tuple.remoteIp = ipv4Src(frame, ip4);
    tuple.remotePort = l4SrcPort(frame, t);
    return TUPLE_READ;
  }
  if (frame.length < 14 || ethType(frame) !== EtherType.IPV6) return TUPLE_NONE;
  const ip = ethL3Offset(frame);
  if (frame.length < ip + 44 || frame[ip + 6] !== IpProto.TCP) return TUPLE_NONE;
  const src = addrs === null ? -1 : addrs.find(frame, ip + 8);
  const dst = src < 0 ? -1 : addrs!.find(frame, ip + 24);
  if (dst < 0) return TUPLE_UNKNOWN;
  tuple.localIp = dst;
  tuple.localPort = l4DstPort(frame, ip + 40);
  tuple.remoteIp = src;
  tuple.remotePort = l4SrcPort(frame, ip + 40);
  return TUPLE_READ;
}
