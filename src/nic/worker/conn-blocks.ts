import type { ByteRing } from '../../state/byte-ring.ts';
import { sharedRingBytes } from '../../state/shared-ring.ts';
import { type ConnBlockRef, HARD_STATE_BYTES } from '../hard-state.ts';

/*
 * A connection that ran on a worker NIC keeps its send and receive data in one shared block
 * (hard-state record, send ring, receive ring: allocConnBlock). Wherever it goes next (another
 * worker, the host, a worker again), that block goes with it by reference: the transfer names it
 * and the rings are attached, not copied.
 */

/**
 * The block a connection's two rings lie in, if they lie in one as allocConnBlock lays it out
 * (record, then the send ring, then the receive ring right after it); null for rings in
 * thread-local memory or laid out otherwise, whose bytes must then be copied into a new block.
 */
export function blockOfRings(send: ByteRing, recv: ByteRing): ConnBlockRef | null {
  const s = send.shared;
  const r = recv.shared;
  if (s === null || r === null || s.sab !== r.sab) return null;
  const at = s.offset - HARD_STATE_BYTES;
  if (at < 0 || r.offset !== s.offset + sharedRingBytes(s.capacity)) return null;
  return { sab: s.sab, at, send: s, recv: r };
}

/** The same block: the same buffer at the same place. */
export function sameBlock(a: ConnBlockRef, b: ConnBlockRef): boolean {
  return (
    a.sab === b.sab &&
    a.at === b.at &&
    a.send.offset === b.send.offset &&
    a.send.capacity === b.send.capacity &&
    a.recv.offset === b.recv.offset &&
    a.recv.capacity === b.recv.capacity
  );
}
