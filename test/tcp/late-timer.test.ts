/**
 * A thread kept from running wakes to its expired timers before the input that waited meanwhile
 * (Node runs timers, then polls for I/O). A loss timer that fires late lets that input go first:
 * the ACK that arrived while the thread was away makes the timeout moot, and nothing is resent.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LATE_TIMER_MS } from '../../src/stack/tcp/tcp-timers.ts';
import { ACK, activeOpen, add, Bench, bytes } from './harness.ts';

function busyThenAcked(lateMs: number) {
  const b = new Bench();
  const o = activeOpen(b, { ts: [5000, 1001], sackPermitted: true, wscale: 7 }, undefined, 5);
  o.conn.write(bytes(2 * 1448));
  const sent = b.take().filter((x) => x.data.length > 0);
  assert.equal(sent.length, 2);
  const d = o.conn.state.delegated;
  const top = d.sndMax;
  const tsVal = sent.at(-1)!.h.tsVal;
  // The thread is busy past the first loss deadline (the tail probe's); the peer's ACK of
  // everything arrived meanwhile and waits behind the timers (a deferred delivery stands for the
  // I/O poll).
  assert.equal(o.conn.timerTarget, o.conn.state.soft.tlpDeadline);
  b.env.clock.elapse(o.conn.timerTarget - b.env.clock.now() + lateMs);
  b.env.clock.defer(() =>
    b.inject({
      flags: ACK,
      seq: o.peerSeq,
      ack: top,
      window: 500,
      srcPort: 80,
      dstPort: o.conn.localPort,
      ts: [5010, tsVal],
    }),
  );
  b.flush();
  return { b, d, top, resent: b.take().filter((x) => x.data.length > 0) };
}

test('a loss timer that fires late lets the waiting ACK in first: nothing resent', () => {
  const { b, d, top, resent } = busyThenAcked(50);
  assert.deepEqual(
    resent.map((x) => x.h.seq),
    [],
    'the ACK covered the flight',
  );
  assert.equal(d.sndUna, top);
  assert.equal(d.backoff, 0);
  assert.equal(b.count('tcp.tlp.probes'), 0);
  assert.equal(b.count('tcp.rto'), 0);
  assert.equal(b.count('tcp.timer.late-yields'), 1);
});

test('one that fires on time (or barely late) does not wait', () => {
  const { b, resent } = busyThenAcked(LATE_TIMER_MS / 2);
  assert.equal(resent.length, 1, 'the tail probe went before the ACK was read');
  assert.equal(b.count('tcp.timer.late-yields'), 0);
  assert.equal(b.count('tcp.tlp.probes'), 1);
});

test('a late timer whose input did not help fires one turn later, at the same instant', () => {
  const b = new Bench();
  const o = activeOpen(b, { ts: [5000, 1001], sackPermitted: true, wscale: 7 }, undefined, 5);
  o.conn.write(bytes(2 * 1448));
  const sent = b.take().filter((x) => x.data.length > 0);
  const at = o.conn.timerTarget;
  b.env.clock.elapse(at - b.env.clock.now() + 50);
  const now = b.env.clock.now();
  b.flush();
  const probe = b.take().filter((x) => x.data.length > 0);
  assert.deepEqual(
    probe.map((x) => [x.h.seq, x.at]),
    [[sent[1]!.h.seq, now]],
    'the tail probe, its last segment again',
  );
  assert.equal(b.count('tcp.timer.late-yields'), 1);
  assert.equal(b.count('tcp.tlp.probes'), 1);
  assert.equal(add(sent[0]!.h.seq, 2 * 1448), o.conn.state.delegated.sndMax);
});
