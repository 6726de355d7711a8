/**
 * What a worker does with each frame it sends on a link it writes to directly (its TAP), before
 * the frame leaves: see `publishAhead`. Apart from nic-worker.ts so that tests can drive it with
 * frames and slots of their own.
 */
import { seqLeq } from '../../stack/tcp/seq.ts';
import { tcpSegmentEnd } from '../frame-tuple.ts';

/** What publishAhead reads of a worker's slot. */
export interface AheadSlot {
  readonly conn: { readonly state: { readonly delegated: { sndMax: number; readonly state: number } } };
  /** The TCP state the record holds now. */
  readonly published: number;
}

/** The worker's own parts publishAhead works with (one object for the thread's life). */
export interface AheadHooks<S extends AheadSlot> {
  /** The connection an outbound frame belongs to, if it runs here. */
  slotOf(frame: Uint8Array): S | undefined;
  /** Mark the connection: its record is rewritten after this turn's work. */
  touch(slot: S): void;
  /** Rewrite the connection's record now, from its state as it stands. */
  write(slot: S): void;
}

/**
 * A frame about to leave on a link the worker writes to directly (a TAP). Every such frame marks
 * its connection, as the proxied link's noteTx does: one sent from the output scheduler's own
 * turn (not a frame in, a call or the timer) may still have moved what the record holds (rcv.adv,
 * snd.nxt after a timeout's rewind), and nothing else would mark it.
 *
 * If it carries sequence space beyond the connection's recorded snd.max, the record is published
 * with that new edge first. The TCP engine advances snd.max only after the frame is out; a worker
 * dying in between must not leave a record behind what the peer received, or the peer's ACKs would
 * look "too new" to the connection rebuilt from it and be dropped (the ProxyLink publishes before
 * each batch instead). Likewise a frame of a connection whose TCP state moved since the record was
 * written: the ACK of the peer's FIN (FIN_WAIT_2 to TIME_WAIT, ESTABLISHED to CLOSE_WAIT) carries no
 * sequence space, but once it is out the peer may close for good, and a connection rebuilt from a
 * record without that FIN would ACK it again, to a port the peer answers with RST.
 */
export function publishAhead<S extends AheadSlot>(frame: Uint8Array, h: AheadHooks<S>): void {
  const slot = h.slotOf(frame);
  if (slot === undefined) return;
  h.touch(slot);
  // Both families: an IPv6 frame read as IPv4 published a garbage snd.max.
  const end = tcpSegmentEnd(frame);
  const d = slot.conn.state.delegated;
  const ahead = !seqLeq(end, d.sndMax);
  if (!ahead && d.state === slot.published) return;
  const kept = d.sndMax;
  if (ahead) d.sndMax = end;
  h.write(slot);
  d.sndMax = kept;
}
