/**
 * A worker on its own TAP marks the connection of every frame it sends (publishAhead), as the
 * proxied link's noteTx does for a worker whose frames the host sends: a frame out from the output
 * scheduler's own turn, with no frame in, call or timer before it, may have moved what the record
 * holds (rcv.adv; snd.nxt resent after a timeout's rewind) without new sequence space. Marked only
 * when it carried new sequence space or a new TCP state, such a frame left the record behind the
 * connection until something else marked it (the heartbeat no longer republishes every record).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type AheadHooks, type AheadSlot, publishAhead } from '../../src/nic/worker/publish-ahead.ts';
import { TcpStateId } from '../../src/state/tcp-state.ts';

/** An Ethernet frame of one IPv4 TCP segment from `seq` with `payload` bytes. */
function segment(seq: number, payload: number, flags = 0x10): Uint8Array {
  const f = new Uint8Array(14 + 20 + 20 + payload);
  const dv = new DataView(f.buffer);
  dv.setUint16(12, 0x0800);
  f[14] = 0x45;
  dv.setUint16(16, 40 + payload);
  f[22] = 64;
  f[23] = 6;
  dv.setUint32(34 + 4, seq >>> 0);
  f[34 + 12] = 0x50;
  f[34 + 13] = flags;
  return f;
}

interface Seen {
  touched: number;
  /** snd.max as each record write saw it. */
  written: number[];
}

function connection(sndMax: number): { slot: AheadSlot; seen: Seen; hooks: AheadHooks<AheadSlot> } {
  const slot: AheadSlot = {
    conn: { state: { delegated: { sndMax, state: TcpStateId.ESTABLISHED } } },
    published: TcpStateId.ESTABLISHED,
  };
  const seen: Seen = { touched: 0, written: [] };
  const hooks: AheadHooks<AheadSlot> = {
    slotOf: () => slot,
    touch: (s) => {
      assert.equal(s, slot);
      seen.touched++;
    },
    write: (s) => seen.written.push(s.conn.state.delegated.sndMax),
  };
  return { slot, seen, hooks };
}

test('a frame out with no new sequence space (a window update, a resend below snd.max) marks its connection', () => {
  const { seen, hooks } = connection(5000);
  publishAhead(segment(5000, 0), hooks);
  assert.equal(seen.touched, 1, 'a pure ACK at snd.max: marked, its record rewritten after the turn');
  publishAhead(segment(2000, 1448), hooks);
  assert.equal(seen.touched, 2, 'a resend below snd.max (after a timeout rewound snd.nxt): marked');
  assert.deepEqual(seen.written, [], 'neither needs its record written before it leaves');
});

test('a frame out past snd.max is marked and its record written first with the new edge', () => {
  const { slot, seen, hooks } = connection(5000);
  publishAhead(segment(5000, 1448), hooks);
  assert.equal(seen.touched, 1);
  assert.deepEqual(seen.written, [6448], 'the record says what the peer may receive');
  assert.equal(slot.conn.state.delegated.sndMax, 5000, 'the engine moves its own snd.max after the send');
});

test('a frame out of a connection whose TCP state moved is marked and written first', () => {
  const { slot, seen, hooks } = connection(5000);
  (slot.conn.state.delegated as { state: number }).state = TcpStateId.TIME_WAIT;
  publishAhead(segment(5000, 0), hooks);
  assert.equal(seen.touched, 1);
  assert.deepEqual(seen.written, [5000]);
});

test('a frame of no connection here is left alone', () => {
  const { seen, hooks } = connection(5000);
  publishAhead(segment(5000, 0), { ...hooks, slotOf: () => undefined });
  assert.equal(seen.touched, 0);
  assert.deepEqual(seen.written, []);
});
