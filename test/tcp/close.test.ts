import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InvalidStateError } from '../../src/core/errors.ts';
import { TcpStateId } from '../../src/state/tcp-state.ts';
import {
  ACK,
  activeOpen,
  add,
  Bench,
  bytes,
  FIN,
  type Opened,
  PEER_ISN,
  passiveOpen,
  RST,
  SYN,
} from './harness.ts';

/** Segment from the peer on an active-open connection. */
function peer(o: Opened, flags: number, extra: { seq?: number; ack?: number; data?: Uint8Array } = {}) {
  o.b.inject({
    flags,
    seq: extra.seq ?? o.peerSeq,
    ack: extra.ack ?? o.conn.state.delegated.sndNxt,
    srcPort: 80,
    dstPort: o.conn.localPort,
    data: extra.data,
  });
}

function open(defaults = {}): Opened {
  const b = new Bench({ defaults });
  const o = activeOpen(b);
  b.take();
  b.flush();
  return o;
}

describe('closing', () => {
  test('active close: FIN_WAIT_1 → FIN_WAIT_2 → TIME_WAIT → CLOSED after timeWaitMs', () => {
    const o = open({ timeWaitMs: 5000 });
    const { b, conn, user } = o;
    conn.shutdown();
    assert.equal(conn.state.delegated.state, TcpStateId.FIN_WAIT_1);
    const [fin] = b.take();
    assert.equal(fin!.h.flags, FIN | ACK);
    assert.throws(() => conn.write(bytes(1)), InvalidStateError);
    peer(o, ACK);
    assert.equal(conn.state.delegated.state, TcpStateId.FIN_WAIT_2);
    peer(o, FIN | ACK);
    assert.equal(conn.state.delegated.state, TcpStateId.TIME_WAIT);
    assert.equal(b.take()[0]!.h.ack, add(o.peerSeq, 1));
    assert.deepEqual(user.events, ['connected', 'end', 'closed']);
    // A retransmitted FIN is ACKed again and restarts 2MSL.
    b.advance(4000);
    peer(o, FIN | ACK);
    assert.equal(b.take().length, 1);
    b.advance(4000);
    assert.equal(conn.state.delegated.state, TcpStateId.TIME_WAIT);
    b.advance(1100);
    assert.equal(conn.state.delegated.state, TcpStateId.CLOSED);
    assert.equal([...b.layer.connections()].length, 0);
  });

  test('passive close with half-close: CLOSE_WAIT keeps sending, then LAST_ACK → CLOSED', () => {
    const o = open();
    const { b, conn, user } = o;
    peer(o, FIN | ACK);
    assert.equal(conn.state.delegated.state, TcpStateId.CLOSE_WAIT);
    b.take();
    conn.write(bytes(100));
    const [d] = b.take();
    assert.equal(d!.data.length, 100);
    conn.shutdown();
    assert.equal(conn.state.delegated.state, TcpStateId.LAST_ACK);
    const [fin] = b.take();
    assert.equal(fin!.h.flags & FIN, FIN);
    peer(o, ACK, { seq: add(o.peerSeq, 1), ack: add(fin!.h.seq, 1) });
    assert.equal(conn.state.delegated.state, TcpStateId.CLOSED);
    assert.deepEqual(user.events, ['connected', 'end', 'closed']);
  });

  test('simultaneous close: FIN_WAIT_1 → CLOSING → TIME_WAIT', () => {
    const o = open();
    const { b, conn } = o;
    conn.shutdown();
    const [fin] = b.take();
    peer(o, FIN | ACK, { ack: fin!.h.seq });
    assert.equal(conn.state.delegated.state, TcpStateId.CLOSING);
    peer(o, ACK, { seq: add(o.peerSeq, 1), ack: add(fin!.h.seq, 1) });
    assert.equal(conn.state.delegated.state, TcpStateId.TIME_WAIT);
  });

  test('FIN+ACK of our FIN in FIN_WAIT_1 goes straight to TIME_WAIT', () => {
    const o = open();
    o.conn.shutdown();
    o.b.take();
    peer(o, FIN | ACK);
    assert.equal(o.conn.state.delegated.state, TcpStateId.TIME_WAIT);
  });

  test('FIN waits for queued data (sent after it in sequence)', () => {
    const o = open();
    o.conn.write(bytes(3000));
    o.conn.shutdown();
    const segs = o.b.take();
    const last = segs.at(-1)!;
    assert.equal(last.h.flags & FIN, FIN);
    assert.equal(last.h.seq + last.data.length, add(o.iss, 3001));
  });

  test('close() with unread data sends RST (RFC 2525)', () => {
    const o = open();
    peer(o, ACK, { data: bytes(10) });
    o.b.take();
    o.conn.close();
    assert.equal(o.b.last().h.flags & RST, RST);
    assert.equal(o.conn.state.delegated.state, TcpStateId.CLOSED);
    assert.deepEqual(o.user.events, ['connected', 'readable']);
    o.b.flush();
    assert.deepEqual(o.user.events, ['connected', 'readable', 'closed']);
  });

  test('data arriving after close() is answered with RST', () => {
    const o = open();
    o.conn.close();
    o.b.take();
    peer(o, ACK, { data: bytes(10) });
    assert.equal(o.b.last().h.flags & RST, RST);
    assert.equal(o.conn.state.delegated.state, TcpStateId.CLOSED);
  });

  test('orphaned FIN_WAIT_2 times out', () => {
    const o = open({ timeWaitMs: 3000 });
    o.conn.close();
    o.b.take();
    peer(o, ACK);
    assert.equal(o.conn.state.delegated.state, TcpStateId.FIN_WAIT_2);
    o.b.advance(3100);
    assert.equal(o.conn.state.delegated.state, TcpStateId.CLOSED);
  });

  test('abort sends RST and reports nothing', () => {
    const o = open();
    o.conn.abort();
    assert.equal(o.b.last().h.flags & RST, RST);
    o.b.flush();
    assert.deepEqual(o.user.events, ['connected']);
    assert.equal([...o.b.layer.connections()].length, 0);
  });

  test('SYN in TIME_WAIT with a higher sequence reopens (RFC 6191)', () => {
    const b = new Bench();
    const p = passiveOpen(b);
    p.conn.shutdown();
    const fin = b.take()[0]!;
    b.inject({ flags: FIN | ACK, seq: p.peerSeq, ack: add(fin.h.seq, 1) });
    assert.equal(p.conn.state.delegated.state, TcpStateId.TIME_WAIT);
    b.take();
    // An old duplicate SYN (lower sequence) only gets an ACK.
    b.inject({ flags: SYN, seq: PEER_ISN });
    assert.equal(b.take()[0]!.h.flags, ACK);
    b.inject({ flags: SYN, seq: PEER_ISN + 100_000 });
    assert.equal(b.count('tcp.time-wait.reopened'), 1);
    const sa = b.take()[0]!;
    assert.equal(sa.h.flags, SYN | ACK);
    assert.equal(sa.h.ack, PEER_ISN + 100_001);
  });
});

describe('RST in each synchronized state', () => {
  const cases: [string, (o: Opened) => void, string | null][] = [
    ['ESTABLISHED', () => {}, 'ECONNRESET'],
    ['FIN_WAIT_1', (o) => o.conn.shutdown(), 'ECONNRESET'],
    [
      'FIN_WAIT_2',
      (o) => {
        o.conn.shutdown();
        peer(o, ACK);
      },
      'ECONNRESET',
    ],
    ['CLOSE_WAIT', (o) => peer(o, FIN | ACK), 'ECONNRESET'],
    [
      'LAST_ACK',
      (o) => {
        peer(o, FIN | ACK);
        o.conn.shutdown();
      },
      null,
    ],
    [
      'CLOSING',
      (o) => {
        o.conn.shutdown();
        peer(o, FIN | ACK, { ack: add(o.iss, 1) });
      },
      null,
    ],
  ];
  for (const [name, setup, errno] of cases) {
    test(`${name}: exact RST closes (${errno ?? 'orderly'})`, () => {
      const o = open();
      setup(o);
      assert.equal(o.conn.state.delegated.state, TcpStateId[name as keyof typeof TcpStateId]);
      const rcvNxt = o.conn.state.delegated.rcvNxt;
      o.b.inject({ flags: RST, seq: rcvNxt, srcPort: 80, dstPort: o.conn.localPort });
      assert.equal(o.conn.state.delegated.state, TcpStateId.CLOSED);
      assert.equal(o.user.error === null ? null : o.user.error?.code, errno);
      assert.equal(o.b.count('tcp.rst.in'), 1);
    });
  }
  test('TIME_WAIT ignores RST (RFC 1337)', () => {
    const o = open();
    o.conn.shutdown();
    peer(o, FIN | ACK);
    o.b.inject({ flags: RST, seq: o.conn.state.delegated.rcvNxt, srcPort: 80, dstPort: o.conn.localPort });
    assert.equal(o.conn.state.delegated.state, TcpStateId.TIME_WAIT);
  });
});
