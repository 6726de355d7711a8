/**
 * TCP as functions over (engine, TcpState): tcp-input (RFC 9293 segment arrival), tcp-output (what
 * to send), tcp-timers (one timer per connection at the earliest deadline in the state),
 * tcp-events (user notifications, CLOSED), congestion control, SACK, RTT, sequence arithmetic.
 * `TcpLayer` demultiplexes and owns listeners; a `TcpConnection` is a thin handle on its state, so
 * another owner can adopt the state and carry on.
 */
export { type CongestionControl, congestionControl, effectiveMss } from './congestion.ts';
export * from './seq.ts';
export { TcpConnection, type TcpConnectionStats } from './tcp-connection.ts';
export { flushDelayedAck } from './tcp-flush.ts';
export { mergeTcpOptions, TcpLayer, type TcpListener } from './tcp-layer.ts';
export type { TcpHostEnv, TcpUser } from './tcp-types.ts';
