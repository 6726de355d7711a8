export { type CongestionControl, congestionControl, effectiveMss } from './congestion.ts';
export * from './seq.ts';
export { TcpConnection, type TcpConnectionStats } from './tcp-connection.ts';
export { flushDelayedAck } from './tcp-flush.ts';
export { mergeTcpOptions, TcpLayer, type TcpListener } from './tcp-layer.ts';
export type { TcpHostEnv, TcpUser } from './tcp-types.ts';
