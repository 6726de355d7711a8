/**
 * Quick-ACK mode and interactive (pingpong) connections, as Linux decides when a receiver's ACK
 * goes at once (src/stack/tcp/tcp-ack-mode.ts; test/conformance/ack.test.ts holds the cases that
 * run against the kernel too). Virtual time: every delay here is the clock's, not the machine's.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { TcpCached } from '../../src/state/tcp-state.ts';
import { assertSoftRefused, HANDOVERS, type Handover } from './handovers.ts';
import { ACK, activeOpen, add, Bench, bytes, FIN, type InjectOpts, REMOTE, Recorder } from './harness.ts';

function open(defaults: Partial<TcpCached> = {}) {
  const bench = () => new Bench({ defaults: { delayedAckMs: 40, ...defaults } });
  const b = bench();
  const o = activeOpen(b, {});
  b.take();
  b.flush();
  const port = o.conn.localPort;
  let peerSeq = o.peerSeq;
  // Through `r`, not `o`: a move gives the connection another bench and another object.
  const r = {
    ...o,
    send: (x: Partial<InjectOpts>) =>
      r.b.inject({
        flags: ACK,
        srcPort: 80,
        dstPort: port,
        seq: peerSeq,
        ack: r.conn.state.delegated.sndUna,
        ...x,
      }),
    // The peer ACKs all it has had of ours, so Nagle holds no answer back.
    data: (n: number) => {
      r.send({ data: bytes(n, 7), seq: peerSeq, ack: r.conn.state.delegated.sndMax });
      peerSeq = add(peerSeq, n);
    },
    /** Segments of `n` bytes one at a time: how many drew an ACK at once. */
    acked: (count: number, n = 1000) => {
      let k = 0;
      for (let i = 0; i < count; i++) {
        r.data(n);
        if (r.b.take().length > 0) k++;
      }
      return k;
    },
    /** The peer's FIN at its next sequence number. */
    fin: () => {
      r.send({ flags: FIN | ACK, seq: peerSeq, ack: r.conn.state.delegated.sndMax });
      peerSeq = add(peerSeq, 1);
    },
    seqAt: () => peerSeq,
    /** Host -> NIC -> host: released and taken up twice by `how`, each time by a new owner. */
    move: (how: Handover) => {
      for (let i = 0; i < 2; i++) {
        const next = bench();
        next.advance(r.b.env.clock.now() - next.env.clock.now());
        const s = how(r.b.layer.release(r.conn), r.b, next);
        r.conn = next.layer.adopt(s, new Recorder(), { prod: false });
        r.b = next;
        next.take();
      }
    },
  };
  return r;
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

describe('the ACK of a FIN (Linux tcp_fin, __tcp_ack_snd_check)', () => {
  test('in ESTABLISHED it waits for the delayed-ACK time and rides on our own FIN when the application closes in time', () => {
    const o = open();
    o.data(100);
    assert.equal(o.b.take().length, 1, 'the data, ACKed at once (quick-ACK mode)');
    o.fin();
    assert.equal(o.b.take().length, 0, 'the FIN waits');
    o.b.advance(20);
    o.conn.shutdown();
    const out = o.b.take();
    assert.equal(out.length, 1, 'one segment: our FIN with the ACK of theirs');
    assert.ok(out[0]!.h.flags & FIN);
    assert.equal(out[0]!.h.ack, o.seqAt());
  });

  test('in ESTABLISHED, with no answer, the delayed ACK goes alone', () => {
    const o = open();
    o.data(100);
    o.b.take();
    o.fin();
    assert.equal(o.b.take().length, 0);
    o.b.advance(39);
    assert.equal(o.b.take().length, 0);
    o.b.advance(1);
    const [a] = o.b.take();
    assert.equal(a?.h.ack, o.seqAt());
  });

  test('a FIN on the first data waits too: pingpong overrules quick-ACK mode', () => {
    const o = open();
    o.send({ flags: FIN | ACK, data: bytes(100, 7), ack: o.conn.state.delegated.sndMax });
    assert.equal(o.b.take().length, 0);
    o.b.advance(40);
    assert.equal(o.b.take().length, 1);
  });

  test('a FIN before any data is ACKed at once (Linux: an ATO of 0 until the first data)', () => {
    const o = open();
    o.fin();
    const [a] = o.b.take();
    assert.equal(a?.h.ack, o.seqAt());
  });

  test('a FIN behind more than a full segment not yet ACKed is ACKed at once', () => {
    const o = open();
    pastStart(o);
    const full = o.conn.state.const.localMss;
    o.data(full);
    assert.equal(o.b.take().length, 0, 'one full segment waits (every second one is ACKed)');
    o.fin();
    const [a] = o.b.take();
    assert.equal(a?.h.ack, o.seqAt());
  });

  test('in FIN_WAIT_2 it goes at once', () => {
    const o = open();
    o.data(100);
    o.b.take();
    o.conn.shutdown();
    const [ourFin] = o.b.take();
    assert.ok(ourFin && ourFin.h.flags & FIN);
    o.send({ ack: add(ourFin.h.seq, 1) });
    o.fin();
    const [a] = o.b.take();
    assert.equal(a?.h.ack, o.seqAt());
  });
});

describe('the ACK mode travels with the connection (soft.quickAcks, pingpong, lastDataAt)', () => {
  const moves: [string, Handover][] = [
    ['objects', (s, _a, b) => Object.assign(s, { path: b.env.pathTo(REMOTE)! })],
    ...HANDOVERS,
  ];
  for (const [how, move] of moves) {
    test(`moved host -> NIC -> host by ${how}: the quick ACKs left of the start are still owed`, () => {
      const o = open();
      assert.equal(o.acked(4), 4);
      const left = o.conn.state.soft.quickAcks;
      o.move(move);
      assert.equal(o.conn.state.soft.quickAcks, left);
      assert.equal(o.acked(4), 4, 'each ACKed at once, as before the move');
    });

    test(`moved host -> NIC -> host by ${how}: an interactive connection stays interactive`, () => {
      const o = open();
      o.data(100);
      o.b.take();
      o.conn.write(bytes(200, 1));
      o.b.take();
      assert.equal(o.conn.state.soft.pingpong, true);
      o.move(move);
      o.data(100);
      assert.equal(o.b.take().length, 0, "the request's ACK waits for the answer, quick ACKs left or not");
      o.conn.write(bytes(200, 1));
      const [a] = o.b.take();
      assert.equal(a!.h.ack, o.seqAt(), 'the answer carries the ACK');
    });

    test(`moved host -> NIC -> host by ${how}: data after a silence longer than the RTO is ACKed at once`, () => {
      const o = open();
      pastStart(o);
      assert.equal(o.acked(2), 1, 'past the start: every second segment');
      o.move(move);
      // The last data came before the move: only the state says when.
      o.b.advance(o.conn.state.delegated.rto + 1);
      assert.equal(o.acked(4), 4);
    });
  }

  for (const [how, move] of HANDOVERS) {
    test(`moved by ${how} to an owner whose clock started after the last data: a silence longer than the RTO still starts it again`, () => {
      const o = open();
      // The host's clock runs from its process's start, a worker's from its thread's: the last data
      // before a long silence can be earlier than the new owner's clock began, a negative time there.
      o.b.advance(10_000);
      pastStart(o);
      assert.equal(o.acked(2), 1, 'past the start: every second segment');
      o.b.advance(3000);
      const next = new Bench({ defaults: { delayedAckMs: 40 } });
      const s = move(o.b.layer.release(o.conn), o.b, next);
      assert.ok(s.soft.lastDataAt < 0, 'the last data is before the new clock began');
      o.conn = next.layer.adopt(s, new Recorder(), { prod: false });
      o.b = next;
      next.take();
      assert.ok(3000 > o.conn.state.delegated.rto);
      assert.equal(o.acked(4), 4);
    });
  }

  const bad: [string, unknown, boolean][] = [
    ['quickAcks', 17, true],
    ['quickAcks', -2, true],
    ['quickAcks', 1.5, false],
    ['pingpong', 1, false],
    ['lastDataAt', Number.NaN, true],
  ];
  for (const [field, value, onWire] of bad) {
    test(`soft.${field} = ${String(value)} is refused by the validator, the encoder and the decoder`, () => {
      const o = open();
      o.data(100);
      assertSoftRefused(o.b.layer.release(o.conn), field, value, onWire);
    });
  }
});
