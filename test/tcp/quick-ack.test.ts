/**
 * Quick-ACK mode and interactive (pingpong) connections, as Linux decides when a receiver's ACK
 * goes at once (src/stack/tcp/tcp-ack-mode.ts; test/conformance/ack.test.ts holds the cases that
 * run against the kernel too). Virtual time: every delay here is the clock's, not the machine's.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { TcpCached } from '../../src/state/tcp-state.ts';
import { add, bytes, openWithPeer } from './harness.ts';

function open(defaults: Partial<TcpCached> = {}) {
  const o = openWithPeer({}, { delayedAckMs: 40, ...defaults });
  const b = o.b;
  // The peer ACKs all it has had of ours, so Nagle holds no answer back.
  const data = (n: number) => {
    o.deliver(bytes(n, 7), { ack: o.conn.state.delegated.sndMax });
  };
  /** Segments of `n` bytes one at a time: how many drew an ACK at once. */
  const acked = (count: number, n = 1000) => {
    let k = 0;
    for (let i = 0; i < count; i++) {
      data(n);
      if (b.take().length > 0) k++;
    }
    return k;
  };
  return { ...o, data, acked };
}

/** Run out the quick ACKs of the start: 40 segments, each read, then any delayed ACK. */
function pastStart(o: ReturnType<typeof open>): void {
  for (let i = 0; i < 40; i++) {
    o.data(1000);
    o.conn.read(new Uint8Array(1000));
  }
  o.b.advance(40);
  o.b.take();
}

describe('quick-ACK mode (Linux icsk_ack.quick, pingpong)', () => {
  test('the first data starts it: 16 segments ACKed at once (TCP_MAX_QUICKACKS), then every second', () => {
    const o = open();
    assert.equal(o.acked(16), 16);
    assert.equal(o.acked(4), 2, 'every second segment once the count is spent (RFC 1122 4.2.3.2)');
  });

  test('a small window gives fewer: the window in pairs of segments (tcp_incr_quickack)', () => {
    const o = open({ rcvBufSize: 8 * 1460 });
    // 8 segments of window: 4 quick ACKs; the reads keep the window open.
    let k = 0;
    for (let i = 0; i < 8; i++) {
      o.data(1000);
      if (o.b.take().length > 0) k++;
      o.conn.read(new Uint8Array(1000));
      o.b.take();
    }
    assert.equal(k, 4 + 2);
  });

  test('data after a silence longer than the RTO starts it again (tcp_event_data_recv)', () => {
    const o = open();
    pastStart(o);
    assert.equal(o.acked(4), 2, 'past the start');
    o.b.advance(o.conn.state.delegated.rto + 1);
    assert.equal(o.acked(4), 4);
  });

  test('an answer within the delayed-ACK time makes the connection interactive: the ACK of the next request waits and rides on the answer', () => {
    const o = open();
    const conn = o.conn;
    o.data(100);
    assert.equal(o.b.take().length, 1, 'the first request is ACKed at once (quick-ACK mode)');
    o.b.advance(5);
    conn.write(bytes(200, 1));
    assert.equal(o.b.take().length, 1, 'the answer');
    o.b.advance(5);
    o.data(100);
    assert.equal(o.b.take().length, 0, 'the second request waits for its answer, quick ACKs left or not');
    o.b.advance(5);
    conn.write(bytes(200, 1));
    const [a] = o.b.take();
    assert.equal(a!.h.ack, o.seqAt(), 'the answer carries the ACK');
  });

  test('an answer later than the delayed-ACK time does not: requests stay ACKed at once', () => {
    const o = open();
    o.data(100);
    assert.equal(o.b.take().length, 1);
    o.b.advance(40);
    o.conn.write(bytes(200, 1));
    o.b.take();
    o.data(100);
    assert.equal(o.b.take().length, 1);
  });

  test('a delayed ACK that had to go alone ends the interactive mode (tcp_delack_timer_handler)', () => {
    const o = open();
    o.data(100);
    o.b.take();
    o.conn.write(bytes(200, 1));
    o.b.take();
    o.data(100);
    assert.equal(o.b.take().length, 0, 'interactive: the ACK waits');
    o.b.advance(40);
    assert.equal(o.b.take().length, 1, 'no answer came: the delayed ACK goes alone');
    o.data(100);
    assert.equal(o.b.take().length, 1, 'ACKed at once again');
  });

  test('data sent again after it was ACKed ends the interactive mode too (tcp_enter_quickack_mode)', () => {
    const o = open();
    o.data(100);
    o.b.take();
    o.conn.write(bytes(200, 1));
    o.b.take();
    // The request again: our ACK of it was lost.
    o.send({ data: bytes(100, 7), seq: add(o.seqAt(), -100) });
    assert.equal(o.b.take().length, 1);
    o.data(100);
    assert.equal(o.b.take().length, 1, 'ACKed at once');
  });
});
