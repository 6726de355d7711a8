/**
 * Old segments: Chimney accepts a segment as Linux's tcp_sequence does, unless it ends before
 * rcv_wup (the rcv.nxt our last ACK carried), not by RFC 9293's test (first or last octet in the
 * window). A retransmission that ends at rcv.nxt (a resent FIN, data resent because our ACK was
 * lost) has its ACK read, and what it carries twice is answered at once with a D-SACK.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { TcpStateId } from '../../src/state/tcp-state.ts';
import { HANDOVERS } from './handovers.ts';
import {
  ACK,
  add,
  Bench,
  bytes,
  FILL_2000_MTU,
  FIN,
  fromPeer,
  type Opened,
  openSettled,
  pastStart,
  Recorder,
  RST,
  type Seg,
  sackBlocks,
  shutOurWindow,
} from './harness.ts';

const open = openSettled;
const peer = fromPeer;

/**
 * We send `ours` bytes (unacknowledged); the peer sends two segments of 700, which we ACK at once
 * (every second segment). Returns snd.una before our data, and what we sent after the segments.
 */
function dataBothWays(o: Opened, ours: number): { una: number; sent: Seg[] } {
  const una = o.conn.state.delegated.sndUna;
  o.conn.write(bytes(ours));
  o.b.take();
  peer(o, ACK, o.peerSeq, una, bytes(700));
  peer(o, ACK, add(o.peerSeq, 700), una, bytes(700));
  return { una, sent: o.b.take() };
}

describe('old segments (Linux tcp_sequence: acceptable unless they end before rcv_wup)', () => {
  test("a FIN resent at rcv.nxt - 1 has its ACK read: snd.una advances with no RTO's wait", () => {
    const o = open();
    const { b, conn } = o;
    const d = conn.state.delegated;
    const una = d.sndUna;
    peer(o, FIN | ACK, o.peerSeq, una);
    assert.equal(d.state, TcpStateId.CLOSE_WAIT);
    const finAck = b.take();
    assert.equal(finAck.length, 1);
    assert.equal(finAck[0]!.h.ack, add(o.peerSeq, 1));
    assert.equal(d.lastAckSent, d.rcvNxt);
    conn.write(bytes(1000));
    const [data] = b.take();
    assert.equal(data!.data.length, 1000);
    // The peer's ACK of our data is lost; it resends its FIN (our ACK of it was lost too, as when
    // the NIC that sent it died), and that FIN acknowledges our data.
    b.advance(50);
    peer(o, FIN | ACK, o.peerSeq, add(una, 1000));
    assert.equal(d.sndUna, add(una, 1000), "the resent FIN's ACK is read");
    assert.equal(d.sndMax, d.sndUna);
    assert.equal(d.rtxDeadline, Number.POSITIVE_INFINITY, 'nothing waits on the RTO');
    const answer = b.take();
    assert.equal(answer.length, 1, 'the duplicate FIN is answered at once');
    assert.equal(answer[0]!.h.ack, d.rcvNxt);
    assert.deepEqual(sackBlocks(answer[0]!), [[o.peerSeq, add(o.peerSeq, 1)]], 'D-SACK of the FIN');
    assert.equal(b.count('drop.tcp.out-of-window'), 0);
    assert.equal(d.state, TcpStateId.CLOSE_WAIT);
  });

  test('old data ending at rcv.nxt with a new ACK is read and answered with an immediate ACK and D-SACK', () => {
    for (const sack of [true, false]) {
      const o = open(sack);
      const { b, conn } = o;
      const d = conn.state.delegated;
      const { una, sent: acks } = dataBothWays(o, 500);
      assert.equal(acks.length, 1);
      assert.equal(acks[0]!.h.ack, add(o.peerSeq, 1400));
      // That ACK is lost: the peer resends its last segment, now acknowledging our 500 bytes.
      b.advance(30);
      peer(o, ACK, add(o.peerSeq, 700), add(una, 500), bytes(700));
      assert.equal(d.sndUna, add(una, 500), `sack ${sack}: the ACK is read`);
      assert.equal(d.rcvNxt, add(o.peerSeq, 1400), 'nothing received twice');
      assert.equal(d.recvBuffer.length, 1400);
      const answer = b.take();
      assert.equal(answer.length, 1, `sack ${sack}: answered at once, not after the delayed-ACK timer`);
      assert.equal(answer[0]!.h.ack, add(o.peerSeq, 1400));
      assert.deepEqual(sackBlocks(answer[0]!), sack ? [[add(o.peerSeq, 700), add(o.peerSeq, 1400)]] : []);
      assert.equal(b.count('tcp.rx.duplicate'), 1);
      // The D-SACK is reported once.
      peer(o, ACK, add(o.peerSeq, 1400), add(una, 500), bytes(10));
      b.advance(200);
      for (const s of b.take()) assert.deepEqual(sackBlocks(s), []);
    }
  });

  test('data resent while our ACK of it is still delayed (rcv_wup < rcv.nxt) is read', () => {
    const o = open();
    const { b, conn } = o;
    const d = conn.state.delegated;
    const una = d.sndUna;
    conn.write(bytes(300));
    b.take();
    peer(o, ACK, o.peerSeq, una, bytes(100));
    assert.equal(b.take().length, 0, 'the ACK is delayed');
    assert.equal(d.lastAckSent, o.peerSeq);
    // A stale copy of the same segment (say, duplicated by the network), with a later ACK.
    peer(o, ACK, o.peerSeq, add(una, 300), bytes(100));
    assert.equal(d.sndUna, add(una, 300));
    const [a] = b.take();
    assert.equal(a!.h.ack, add(o.peerSeq, 100));
    assert.deepEqual(sackBlocks(a!), [[o.peerSeq, add(o.peerSeq, 100)]]);
  });

  test('old data trimmed to nothing is no duplicate ACK: three copies start no fast retransmit (Linux FLAG_DATA)', () => {
    const o = open(false);
    const { b, conn } = o;
    const d = conn.state.delegated;
    const una = d.sndUna;
    conn.write(bytes(3000));
    assert.ok(b.take().length >= 2, 'our data is in flight');
    peer(o, ACK, o.peerSeq, una, bytes(700));
    // The peer resends that segment three times (its RTO, a duplicating path), still
    // acknowledging none of our data: each ends at rcv.nxt and is read, all of it old.
    for (let i = 0; i < 3; i++) {
      b.advance(10);
      peer(o, ACK, o.peerSeq, una, bytes(700));
    }
    assert.equal(d.rcvNxt, add(o.peerSeq, 700));
    assert.equal(b.count('tcp.rx.duplicate'), 3);
    assert.equal(d.dupAcks, 0, 'a segment that carried data is not a duplicate ACK');
    assert.equal(conn.state.soft.inRecovery, false);
    const resent = b.take().filter((s) => s.data.length > 0);
    assert.deepEqual(
      resent.map((s) => s.h.seq),
      [],
      'nothing of ours is resent',
    );
  });

  test("with SACK, old data without blocks is not F-RTO's duplicate ACK: the timeout may still prove spurious", () => {
    const o = open();
    const { b, conn } = o;
    const d = conn.state.delegated;
    const soft = conn.state.soft;
    const una = d.sndUna;
    conn.write(bytes(60_000));
    const [head] = b.take();
    const mss = head!.data.length;
    peer(o, ACK, o.peerSeq, una, bytes(700));
    // The tail probe, then the timeout: the head is resent and F-RTO armed.
    for (let i = 0; i < 3 && soft.frto === 0; i++) {
      b.advance(Math.min(d.rtxDeadline, soft.tlpDeadline) - b.env.clock.now());
      b.flush();
    }
    assert.equal(soft.frto, 1);
    // The resent head is ACKed: F-RTO sends new data (step 2b).
    peer(o, ACK, add(o.peerSeq, 700), add(una, mss));
    assert.equal(soft.frto, 2);
    const sndMax = d.sndMax;
    b.take();
    // The peer resends its segment (our ACK of it was lost): old data, no SACK blocks.
    peer(o, ACK, o.peerSeq, add(una, mss), bytes(700));
    assert.equal(b.count('tcp.rx.duplicate'), 1);
    assert.equal(soft.frto, 2, 'F-RTO still waits for the new data to be acknowledged');
    assert.equal(d.sndNxt, sndMax, 'no go-back-N');
  });

  test('a segment that ends before rcv_wup is still dropped unread and answered (pure ACKs rate-limited)', () => {
    const o = open();
    const { b, conn } = o;
    const d = conn.state.delegated;
    const { una } = dataBothWays(o, 400);
    assert.equal(d.lastAckSent, add(o.peerSeq, 1400));
    // The first segment again: it ends 700 before rcv_wup. Its ACK is not read.
    peer(o, ACK, o.peerSeq, add(una, 400), bytes(700));
    assert.equal(d.sndUna, una, 'an old segment says nothing about our data');
    assert.equal(b.count('drop.tcp.out-of-window'), 1);
    const [a] = b.take();
    assert.equal(a!.h.ack, add(o.peerSeq, 1400), 'data is answered at once');
    assert.deepEqual(sackBlocks(a!), [[o.peerSeq, add(o.peerSeq, 700)]], 'with a D-SACK of it');
    // Old pure ACKs draw one answer per interval.
    for (let i = 0; i < 3; i++) peer(o, ACK, add(o.peerSeq, 10), add(una, 400));
    assert.equal(d.sndUna, una);
    assert.equal(b.take().length, 1, 'one answer to three old pure ACKs');
    assert.equal(b.count('tcp.oow_ack.limited'), 2);
  });

  for (const [how, move] of HANDOVERS) {
    test(`moved by ${how} to an owner whose clock began after its last answer: the next old ACK is still limited`, () => {
      const o = open();
      const { una } = dataBothWays(o, 400);
      o.b.advance(10_000);
      o.b.take();
      peer(o, ACK, add(o.peerSeq, 10), add(una, 400));
      assert.equal(o.b.take().length, 1, 'the first old pure ACK is answered');
      o.b.advance(100);
      // A worker's clock runs from its thread's start: the answer 100 ms ago is before it began.
      const next = new Bench({ startMs: 50 });
      const s = move(o.b.layer.release(o.conn), o.b, next);
      assert.ok(
        s.soft.lastOowAckAt < 0 && s.soft.lastOowAckAt !== -1,
        'the answer is before the new clock began',
      );
      o.conn = next.layer.adopt(s, new Recorder(), { prod: false });
      o.b = next;
      next.take();
      peer(o, ACK, add(o.peerSeq, 10), add(una, 400));
      assert.equal(next.take().length, 0, 'within 500 ms of the last answer: none');
      assert.equal(next.count('tcp.oow_ack.limited'), 1);
    });
  }

  test('a bare FIN dropped as old is answered each time (Linux does not rate-limit FINs)', () => {
    const o = open(true, { timeWaitMs: 60_000 });
    const { b, conn } = o;
    const d = conn.state.delegated;
    conn.shutdown();
    const [fin] = b.take();
    peer(o, FIN | ACK, o.peerSeq, add(fin!.h.seq, 1));
    assert.equal(d.state, TcpStateId.TIME_WAIT);
    assert.equal(b.take().length, 1);
    // Our last ACK is lost twice; both resent FINs are answered, however close together.
    b.advance(100);
    peer(o, FIN | ACK, o.peerSeq, add(fin!.h.seq, 1));
    b.advance(100);
    peer(o, FIN | ACK, o.peerSeq, add(fin!.h.seq, 1));
    assert.equal(b.take().length, 2);
    assert.equal(d.timeWaitDeadline, b.env.clock.now() + 60_000, '2MSL restarted');
  });

  test('RST: exact rcv.nxt resets; between rcv_wup and rcv.nxt draws a challenge ACK; before rcv_wup is ignored', () => {
    const o = open();
    const { b, conn } = o;
    const d = conn.state.delegated;
    pastStart(conn);
    peer(o, ACK, o.peerSeq, d.sndUna, bytes(100));
    assert.equal(b.take().length, 0, 'the ACK is delayed: rcv_wup is 100 below rcv.nxt');
    const wup = d.lastAckSent;
    assert.equal(wup, o.peerSeq);
    peer(o, RST, add(wup, -1), 0);
    assert.equal(b.take().length, 0, 'a RST before rcv_wup is dropped silently');
    assert.equal(b.count('drop.tcp.rst-out-of-window'), 1);
    peer(o, RST | ACK, add(wup, 50), d.sndUna);
    const ch = b.take();
    assert.equal(ch.length, 1, 'challenge ACK (RFC 5961 3.2), as Linux answers it');
    assert.equal(ch[0]!.h.flags, ACK);
    assert.equal(d.state, TcpStateId.ESTABLISHED);
    peer(o, RST, d.rcvNxt, 0);
    assert.equal(d.state, TcpStateId.CLOSED);
    assert.deepEqual(o.user.events.at(-1), 'closed:ECONNRESET');
  });

  test("RST at rcv.nxt - 1 resets once the peer's FIN is in, and only then (Linux tcp_reset_check)", () => {
    const o = open();
    const { b, conn } = o;
    const d = conn.state.delegated;
    peer(o, ACK, o.peerSeq, d.sndUna, bytes(10));
    b.advance(100);
    b.take();
    peer(o, RST, add(d.rcvNxt, -1), 0);
    assert.equal(d.state, TcpStateId.ESTABLISHED, 'before the FIN, rcv.nxt - 1 is old');
    peer(o, FIN | ACK, add(o.peerSeq, 10), d.sndUna);
    assert.equal(d.state, TcpStateId.CLOSE_WAIT);
    b.take();
    peer(o, RST, add(o.peerSeq, 10), 0);
    assert.equal(d.state, TcpStateId.CLOSED, "a RST numbered like the peer's FIN resets");
    assert.equal(o.user.events.at(-1), 'closed:ECONNRESET');
  });

  test('RST at the right edge of the highest SACK block resets; elsewhere in the window it is challenged', () => {
    const o = open();
    const { b, conn } = o;
    const d = conn.state.delegated;
    // A hole of 100, then two islands: we SACK [100, 200) and [300, 400).
    peer(o, ACK, add(o.peerSeq, 100), d.sndUna, bytes(100));
    peer(o, ACK, add(o.peerSeq, 300), d.sndUna, bytes(100));
    const acks = b.take();
    assert.deepEqual(sackBlocks(acks.at(-1)!), [
      [add(o.peerSeq, 300), add(o.peerSeq, 400)],
      [add(o.peerSeq, 100), add(o.peerSeq, 200)],
    ]);
    peer(o, RST, add(o.peerSeq, 200), 0);
    assert.equal(d.state, TcpStateId.ESTABLISHED, 'the edge of a lower block is challenged');
    assert.equal(b.take().length, 1);
    peer(o, RST, add(o.peerSeq, 400), 0);
    assert.equal(d.state, TcpStateId.CLOSED);
  });

  test('data partly old into a shut window is answered at once, its old part D-SACKed (guards the new path)', () => {
    // Our MSS 1000, so the SYN offers all 2000 bytes: Linux's tcp_select_initial_window offers
    // whole segments of it (FILL_2000_MTU).
    const o = open(true, { rcvBufSize: 2000 }, FILL_2000_MTU);
    const { b, conn } = o;
    const d = conn.state.delegated;
    pastStart(conn);
    peer(o, ACK, o.peerSeq, d.sndUna, bytes(1000));
    peer(o, ACK, add(o.peerSeq, 1000), d.sndUna, bytes(1000));
    // Unread, so the ACK waits for the timer (Linux's __tcp_ack_snd_check).
    assert.deepEqual(b.take(), []);
    b.advance(conn.state.cached.delayedAckMs);
    const [a] = b.take();
    assert.equal(a!.h.window, 0, 'the window is shut');
    peer(o, ACK, add(o.peerSeq, 1900), d.sndUna, bytes(200));
    assert.equal(d.rcvNxt, add(o.peerSeq, 2000), 'nothing taken past the window');
    const [ans] = b.take();
    assert.ok(ans, 'answered at once');
    assert.deepEqual(sackBlocks(ans), [[add(o.peerSeq, 1900), add(o.peerSeq, 2000)]]);
  });

  test('probes into our shut window are no duplicate ACKs: three start no fast retransmit (Linux FLAG_DATA)', () => {
    // A probe carrying a byte of data waits, and is no duplicate ACK. (One carrying only a FIN, the
    // peer closing while our window is shut, is taken since Linux 6.17's tcp_sequence:
    // receive-edge.test.ts.)
    for (const [label, flags, data] of [['data', ACK, bytes(1)]] as const) {
      // Our MSS 1000, so the SYN offers all 2000 bytes: Linux's tcp_select_initial_window offers
      // whole segments of it (FILL_2000_MTU).
      const o = open(false, { rcvBufSize: 2000 }, FILL_2000_MTU);
      const { b, conn } = o;
      const d = conn.state.delegated;
      // Our data in flight, and our window shut (asserted by the helper).
      const una = shutOurWindow(o);
      // The peer probes our shut window three times, still acknowledging none of our data.
      const out: Seg[] = [];
      for (let i = 0; i < 3; i++) {
        b.advance(10);
        peer(o, flags, add(o.peerSeq, 2000), una, data);
        const answer = b.take();
        assert.ok(
          answer.some((s) => s.h.ack === add(o.peerSeq, 2000) && s.h.window === 0),
          `${label}: each probe is answered at once with our shut window`,
        );
        out.push(...answer);
      }
      assert.equal(d.rcvNxt, add(o.peerSeq, 2000), `${label}: the probe waits`);
      assert.equal(d.state, TcpStateId.ESTABLISHED);
      assert.equal(d.dupAcks, 0, `${label}: a probe that carried data is not a duplicate ACK`);
      assert.equal(conn.state.soft.inRecovery, false);
      assert.deepEqual(
        out.filter((s) => s.data.length > 0).map((s) => s.h.seq),
        [],
        `${label}: nothing of ours is resent`,
      );
    }
  });
});
