import type { TcpState } from '../../state/tcp-state.ts';
import { seqDiff } from './seq.ts';
import { readAckNow } from './tcp-ack-mode.ts';

/**
 * After the application read: is the opened receive window worth an ACK of its own? RFC 1122
 * 4.2.3.3: only once it has grown by a useful amount; and, as Linux does, only when the peer sees
 * less than half of what is free, since otherwise the ACKs that data draws anyway carry the news
 * and a bulk reader would cost an extra frame per read. One rule for every owner of a connection:
 * the host's read and a worker's (the application reads from the shared ring on another thread).
 */
export function windowWorthAnnouncing(s: TcpState): boolean {
  const d = s.delegated;
  const advertised = seqDiff(d.rcvAdv, d.rcvNxt);
  const opened = d.recvBuffer.free - advertised;
  return (
    opened >= Math.min(2 * s.const.localMss, s.cached.rcvBufSize >>> 1) && d.recvBuffer.free >= 2 * advertised
  );
}

/**
 * After the application read: does an ACK go now? Either the window opened enough to announce, or
 * the read emptied the queue of small segments owed an ACK (tcp-ack-mode.ts, readAckNow). One
 * rule for every owner, as above.
 */
export function ackAfterRead(s: TcpState): boolean {
  return windowWorthAnnouncing(s) || readAckNow(s);
}
