/**
 * What an owner of connections outside the TCP engine (a NIC's engine, a worker) calls to drive
 * one: the small API it may use instead of the engine's internals.
 */
import type { TcpState } from '../../state/tcp-state.ts';
import { deliverEvents, type TcpConnection } from './tcp-connection.ts';
import { tcpOutput } from './tcp-output.ts';
import { scheduleTimer } from './tcp-timers.ts';

export { ackAfterRead } from './tcp-ack-mode.ts';
export { armKeepalive, canReceive, deliverEvents, isSynchronized, terminate } from './tcp-connection.ts';
export { OUTPUT_BUDGET_BYTES, OUTPUT_TURN_BUDGET_BYTES } from './tcp-output.ts';
export { scheduleTimer } from './tcp-timers.ts';

/** Something changed under the connection: send what may go, re-arm its timer. */
export function resume(conn: TcpConnection): void {
  tcpOutput(conn);
  scheduleTimer(conn);
}

/** `resume`, then hand the application what happened. */
export function kick(conn: TcpConnection): void {
  resume(conn);
  deliverEvents(conn);
}

/**
 * Go back to snd.una, so that the next output resends everything outstanding (a smaller MTU, a new
 * hop, a new owner); the RTT sample in progress would time the resend, so it is dropped.
 */
export function rewind(s: TcpState): void {
  const d = s.delegated;
  if (d.sndMax === d.sndUna) return;
  d.sndNxt = d.sndUna;
  s.soft.rttActive = false;
}
