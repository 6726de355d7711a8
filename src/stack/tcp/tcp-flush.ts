import { TcpStateId } from '../../state/tcp-state.ts';
import type { TcpConnection } from './tcp-connection.ts';
import { sendAck } from './tcp-output.ts';
import { scheduleTimer } from './tcp-timers.ts';

/**
 * Send a pending delayed ACK now. An owner about to hand the connection elsewhere calls this so the
 * peer is not left waiting for an ACK that the next owner's timer would send late.
 */
export function flushDelayedAck(conn: TcpConnection): void {
  const d = conn.state.delegated;
  const soft = conn.state.soft;
  if (d.state < TcpStateId.SYN_RECEIVED || d.state === TcpStateId.CLOSED) return;
  if (soft.delayedAckDeadline === Number.POSITIVE_INFINITY && !soft.ackNow) return;
  sendAck(conn);
  scheduleTimer(conn);
}
