/**
 * A connection's timer is made when something first arms it: an idle connection handed to a layer
 * it never ran on (a NIC's first visit) makes none, and one that then needs a deadline gets a timer
 * that fires as one made up front did.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { TcpState } from '../../src/state/tcp-state.ts';
import { TcpStateId } from '../../src/state/tcp-state.ts';
import { ACK, activeOpen, Bench, bytes, Recorder } from './harness.ts';

/** Released states of `n` established, idle connections, and the clock they were released at. */
function idleStates(n: number): { states: TcpState[]; at: number } {
  const a = new Bench();
  const states: TcpState[] = [];
  for (let i = 0; i < n; i++) {
    a.take();
    const o = activeOpen(a, { ts: [5000, 1001] });
    assert.equal(o.conn.state.delegated.state, TcpStateId.ESTABLISHED);
    states.push(a.layer.release(o.conn));
  }
  return { states, at: a.env.clock.now() };
}

/** A layer on the releasing layer's time, as a NIC taking the states over, and its count of timers made. */
function taker(at: number): { b: Bench; timers: () => number } {
  const b = new Bench();
  b.advance(at - b.env.clock.now());
  const clock = b.env.clock;
  const make = clock.createTimer.bind(clock);
  let made = 0;
  clock.createTimer = (cb) => {
    made++;
    return make(cb);
  };
  return { b, timers: () => made };
}

test('idle connections adopted by a layer they never ran on make no timer', () => {
  const { states, at } = idleStates(50);
  const { b, timers } = taker(at);
  const conns = states.map((s) => b.layer.adopt(s, new Recorder()));
  b.flush();
  // A timer per connection before, armed by nothing.
  assert.equal(timers(), 0);
  for (const c of conns) assert.equal(c.state.delegated.state, TcpStateId.ESTABLISHED);
  // Released again and taken up once more: still none.
  const c = b.layer.adopt(b.layer.release(conns[0]!), new Recorder());
  assert.equal(timers(), 0);
  assert.equal(c.state.delegated.state, TcpStateId.ESTABLISHED);
});

test('an adopted idle connection that sends makes its timer then, and retransmits on it', () => {
  const { states, at } = idleStates(1);
  const s = states[0]!;
  const { b, timers } = taker(at);
  const conn = b.layer.adopt(s, new Recorder());
  b.flush();
  b.take();
  assert.equal(timers(), 0);
  conn.write(bytes(100));
  b.flush();
  const first = b.take().filter((x) => x.data.length > 0);
  assert.equal(first.length, 1);
  assert.equal(timers(), 1);
  assert.equal(b.count('tcp.timers.made'), 1);
  // Unacknowledged, it goes again when the retransmission timer fires.
  b.advance(s.delegated.rto + 1);
  b.flush();
  const again = b.take().filter((x) => x.data.length > 0);
  assert.equal(again.length, 1);
  assert.equal(again[0]!.h.seq, first[0]!.h.seq);
  // Acknowledged, nothing is armed any more.
  b.inject({
    flags: ACK,
    srcPort: s.const.remotePort,
    dstPort: s.const.localPort,
    seq: s.delegated.rcvNxt,
    ack: s.delegated.sndMax,
    ts: [5200, 1001],
  });
  b.flush();
  assert.equal(s.delegated.sndUna, s.delegated.sndMax);
  assert.equal(timers(), 1);
});
