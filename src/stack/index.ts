/**
 * The host stack: protocol processing over state objects, never touching a device itself. `Stack`
 * holds the interfaces (Ethernet + VLAN), the neighbor layer (ARP, reachability), the path layer
 * (routing, path MTU, fragments, the `IpSender` that frames what TCP builds), ICMP, UDP, and TCP in
 * ./tcp. Links reach it only through the `Link` contract in src/core/link.ts.
 */
export { errorFor, IcmpLayer, type IcmpOptions, type PingOptions } from './icmp.ts';
export { type InterfaceAddress, type InterfaceOptions, StackInterface } from './interface.ts';
export { Ipv4Output } from './ip-output.ts';
export type { IcmpErrorInfo, IpInfo, IpSender } from './ip-sender.ts';
export { type ArpOptions, type NeighborInfo, type NeighborStatus, NeighborTable } from './neighbor.ts';
export { PathLayer, type PathOptions, plateauBelow, RxPacket } from './path.ts';
export { Reassembler, type ReassemblyOptions } from './reassembly.ts';
export { Stack, type StackOptions } from './stack.ts';
export {
  UdpBinding,
  type UdpBindOptions,
  type UdpErrorHandler,
  UdpLayer,
  type UdpMessageHandler,
  type UdpRemoteInfo,
} from './udp.ts';
