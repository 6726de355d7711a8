/**
 * Chimney's public API. Sockets and servers are Node-shaped (net.Socket / net.Server / dgram);
 * the simulated network needs no privileges; the stack and its layers are exported for tools
 * that need to look inside.
 */
export { type Clock, RealClock, type Timer, VirtualClock } from './core/clock.ts';
export { Counters } from './core/counters.ts';
export {
  AddressInUseError,
  ChimneyError,
  ConnectionError,
  InvalidArgumentError,
  InvalidStateError,
  StateValidationError,
} from './core/errors.ts';
export { CryptoRandom, type Random, SeededRandom } from './core/random.ts';
export type { Impairment, ImpairmentSpec } from './link/impairment.ts';
export type { Link } from './link/link.ts';
export { MemorySwitch, SwitchPort } from './link/memory-switch.ts';
export { capture, PcapWriter } from './link/pcap.ts';
export { SimHost, type SimHostOptions, SimNetwork, type SimNetworkOptions } from './sim/sim-network.ts';
export {
  type ConnectOptions,
  Host,
  type ListenOptions,
  type RemoteInfo,
  TcpServer,
  type TcpServerOptions,
  TcpSocket,
  type TcpSocketOptions,
  UdpSocket,
} from './socket/index.ts';
export { Stack, type StackOptions } from './stack/stack.ts';
export type { CongestionAlgorithm, TcpCached } from './state/tcp-state.ts';
