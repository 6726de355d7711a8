import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { TcpStateId } from '../../src/state/tcp-state.ts';
import {
  ACK,
  activeOpen,
  add,
  Bench,
  bytes,
  FIN,
  PEER_ISN,
  passiveOpen,
  Recorder,
  RST,
  SYN,
} from './harness.ts';

/** Established active open with SACK (and optionally timestamps), nothing captured yet. */
function sackOpen(
  extra: { ts?: boolean; wscale?: number; options?: Record<string, unknown>; rttMs?: number } = {},
) {
  const b = new Bench();
  const o = activeOpen(
    b,
    {
      sackPermitted: true,
      wscale: extra.wscale ?? 0,
      ...(extra.ts ? { ts: [5000, 0] as [number, number] } : {}),
    },
    extra.options,
    extra.rttMs,
  );
  b.take();
  const port = o.conn.localPort;
  const send = (x: {
    flags: number;
    seq?: number;
    ack?: number;
    window?: number;
    data?: Uint8Array;
    sack?: [number, number][];
    ts?: [number, number];
  }) => b.inject({ srcPort: 80, dstPort: port, seq: o.peerSeq, ack: add(o.iss, 1), ...x });
  return { ...o, send };
}

/** Thirty segments queued with timestamps on a 20 ms path: the initial window of ten is out. */
function tenOut() {
  const o = sackOpen({ ts: true, rttMs: 20 });
  o.conn.write(bytes(30 * 1460));
  const first = o.b.take().filter((s) => s.data.length > 0);
  assert.equal(first.length, 10, 'the initial window');
  const una = add(o.iss, 1);
  const seg = first[0]!.data.length;
  return { o, una, seg, at: (k: number) => add(una, k * seg), ecr: first[0]!.h.tsVal };
}

describe('issue 11 defects', () => {
  test('RFC 6675: newly SACKed data counts as a duplicate ACK even when the window changes', () => {
    const o = sackOpen();
    o.conn.write(bytes(10 * 1460));
    const segs = o.b.take();
    assert.ok(segs.length >= 5, `sent ${segs.length}`);
    const una = add(o.iss, 1);
    // Segment 0 is lost; the receiver SACKs 1, 2, 3 and (like Linux) moves its window every time.
    for (let i = 1; i <= 3; i++) {
      o.send({
        flags: ACK,
        ack: una,
        window: 60_000 - i * 1000,
        sack: [[add(una, 1460), add(una, 1460 * (i + 1))]],
      });
    }
    assert.equal(o.b.count('tcp.fast_retransmits'), 1);
    assert.ok(
      o.b.out.some((s) => s.h.seq === una && s.data.length > 0),
      'the first segment is retransmitted without waiting for the RTO',
    );
  });

  test("an original come ten segments late sets the connection's reordering degree to ten (Linux's tp->reordering)", () => {
    // A 20 ms path: RACK's window is 5 ms, so nothing is marked lost at once by its timing.
    const o = sackOpen({ rttMs: 20 });
    o.conn.write(bytes(30 * 1460));
    const first = o.b.take().filter((s) => s.data.length > 0);
    assert.equal(first.length, 10, 'the initial window');
    const una = add(o.iss, 1);
    // Segment 5 is SACKed, then all ten arrive: the first came ten segments late.
    o.b.advance(20);
    o.send({ flags: ACK, ack: una, sack: [[add(una, 5 * 1460), add(una, 6 * 1460)]] });
    assert.equal(o.conn.rack.reordering, 3);
    o.send({ flags: ACK, ack: add(una, 10 * 1460) });
    assert.equal(o.conn.rack.reorderingSeen, true);
    assert.equal(o.conn.rack.reordering, 10);
    assert.equal(o.b.count('tcp.fast_retransmits'), 0);
  });

  test("a partial ACK in recovery echoing the originals' timestamp shows a hole filled late: reordering seen, the degree grown (Linux's tcp_try_undo_partial)", () => {
    const { o, una, at, ecr } = tenOut();
    o.b.advance(20);
    // Segments 1-3 arrive, 0 does not: RFC 6675's count, a recovery resends 0.
    o.send({ flags: ACK, ack: una, sack: [[at(1), at(4)]], ts: [5001, ecr] });
    o.b.flush();
    assert.equal(o.conn.state.soft.inRecovery, true);
    const rtx = o.b.take().filter((s) => s.data.length > 0 && s.h.seq === una);
    assert.equal(rtx.length, 1, 'the fast retransmit');
    assert.ok(rtx[0]!.h.tsVal !== ecr, 'the resend carries a later TSval');
    assert.equal(o.conn.rack.reorderingSeen, false);
    // The original 0 arrives after all: the ACK of 0-3 echoes its TSval, older than the resend's.
    o.b.advance(5);
    o.send({ flags: ACK, ack: at(4), ts: [5002, ecr] });
    assert.equal(o.conn.rack.reorderingSeen, true, 'reordering seen');
    assert.equal(o.conn.rack.reordering, 4, 'four segments from the old snd.una to the new');
    assert.equal(o.b.count('tcp.reorder.ts'), 1);
  });

  test("a partial ACK in recovery answered by an original, with no retransmission out, undoes the window cut and ends the recovery (Linux's tcp_try_undo_partial)", () => {
    const { o, una, seg, at, ecr } = tenOut();
    const d = o.conn.state.delegated;
    const cwnd0 = d.cwnd;
    const ssthresh0 = d.ssthresh;
    o.b.advance(20);
    o.send({ flags: ACK, ack: una, sack: [[at(1), at(4)]], ts: [5001, ecr] });
    o.b.flush();
    assert.equal(o.conn.state.soft.inRecovery, true);
    assert.ok(d.cwnd < cwnd0, 'the recovery cut the window');
    const rtx = o.b.take().filter((s) => s.data.length > 0);
    assert.deepEqual(
      rtx.map((s) => s.h.seq),
      [una],
      'the fast retransmit alone (PRR: one segment for the three delivered)',
    );
    // The original 0 arrives after all: the ACK of 0-3 echoes its TSval. The resend was needless.
    o.b.advance(5);
    o.send({ flags: ACK, ack: at(4), ts: [5002, ecr] });
    o.b.flush();
    assert.equal(o.b.count('tcp.undo.partial'), 1);
    assert.equal(o.conn.state.soft.inRecovery, false, 'the recovery is over');
    assert.equal(d.ssthresh, ssthresh0, 'ssthresh back to what it was');
    // cwnd back to ten segments and, out of recovery, slow start takes the one segment this ACK
    // delivered (Linux's tcp_cong_control): with six (4-9) in flight, five new ones go, nothing again.
    assert.equal(d.cwnd, cwnd0 + seg, 'cwnd back to what it was, grown by the segment delivered');
    const sent = o.b.take().filter((s) => s.data.length > 0);
    assert.deepEqual(
      sent.map((s) => s.h.seq),
      [at(10), at(11), at(12), at(13), at(14)],
    );
  });

  test("a partial ACK in recovery answered by an original while resends are still out: new data goes, the holes marked lost wait (Linux's tcp_try_undo_partial with retrans_out)", () => {
    const { o, una, at, ecr } = tenOut();
    const sent = () =>
      o.b
        .take()
        .filter((s) => s.data.length > 0)
        .map((s) => s.h.seq);
    o.b.advance(20);
    // 1-3 arrive: a recovery resends 0. Then 9 arrives: RACK marks 4-8 lost, PRR resends 4-6.
    o.send({ flags: ACK, ack: una, sack: [[at(1), at(4)]], ts: [5001, ecr] });
    o.b.flush();
    assert.deepEqual(sent(), [una]);
    o.b.advance(1);
    o.send({
      flags: ACK,
      ack: una,
      sack: [
        [at(9), at(10)],
        [at(1), at(4)],
      ],
      ts: [5001, ecr],
    });
    o.b.flush();
    assert.deepEqual(sent(), [at(4), at(5), at(6)]);
    // The original 0 arrives: the ACK of 0-3 echoes its TSval. The resends of 4-6 are out, so
    // no undo; Linux clocks out new data on this ACK and resends nothing more (7 and 8 wait).
    o.b.advance(5);
    o.send({ flags: ACK, ack: at(4), sack: [[at(9), at(10)]], ts: [5002, ecr] });
    o.b.flush();
    assert.equal(o.b.count('tcp.undo.partial'), 0);
    assert.equal(o.conn.state.soft.inRecovery, true);
    assert.deepEqual(sent(), [at(10), at(11)], 'new data only, as PRR allows');
  });

  test("with an earlier retransmission still unacknowledged, a partial ACK echoing a TSval older than the recovery's proves nothing (Linux keeps the older retrans_stamp)", () => {
    const o = sackOpen({ ts: true, rttMs: 20 });
    // Ten whole segments (1448 bytes with timestamps), nothing left for a probe of new data.
    o.conn.write(bytes(10 * 1448));
    const first = o.b.take().filter((s) => s.data.length > 0);
    assert.equal(first.length, 10);
    assert.equal(first[9]!.data.length, 1448);
    const una = add(o.iss, 1);
    const at = (k: number) => add(una, k * first[0]!.data.length);
    // Nothing answered: the loss probe resends the last segment.
    for (let i = 0; i < 100 && o.b.count('tcp.tlp.probes') === 0; i++) o.b.advance(1);
    assert.equal(o.b.count('tcp.tlp.probes'), 1);
    assert.equal(o.b.take().filter((s) => s.data.length > 0 && s.h.seq === at(9)).length, 1);
    o.b.advance(2);
    o.send({ flags: ACK, ack: una, sack: [[at(1), at(4)]], ts: [5001, first[0]!.h.tsVal] });
    assert.equal(o.conn.state.soft.inRecovery, true);
    o.b.advance(5);
    // An ACK of 0-3 echoing the originals': older than the recovery's resend, not than the probe's.
    o.send({ flags: ACK, ack: at(4), ts: [5002, first[0]!.h.tsVal] });
    assert.equal(o.conn.rack.reorderingSeen, false);
    assert.equal(o.b.count('tcp.reorder.ts'), 0);
  });

  for (const sack of [true, false]) {
    test(`three plain duplicate ACKs (no SACK blocks, same window), SACK ${sack ? 'negotiated: nothing is resent or sent' : 'not negotiated: fast retransmit on the third'} (Linux counts them only without SACK)`, () => {
      const b = new Bench();
      const o = activeOpen(b, { sackPermitted: sack });
      b.take();
      // More than the initial window, so RFC 3042's limited transmit would show as new data.
      o.conn.write(bytes(14 * 1460));
      const first = b.take().filter((s) => s.data.length > 0);
      assert.equal(first.length, 10, 'the initial window');
      const una = add(o.iss, 1);
      const dupack = () =>
        b.inject({ flags: ACK, srcPort: 80, dstPort: o.conn.localPort, seq: o.peerSeq, ack: una });
      for (let i = 0; i < 2; i++) dupack();
      const limited = b.take().filter((s) => s.data.length > 0);
      assert.equal(limited.length, sack ? 0 : 2, 'limited transmit only when the duplicates count');
      dupack();
      const rtx = b.take().filter((s) => s.data.length > 0 && s.h.seq === una);
      assert.equal(rtx.length, sack ? 0 : 1, 'the head is resent at once only without SACK');
      assert.equal(b.count('tcp.fast_retransmits'), sack ? 0 : 1);
      assert.equal(o.conn.state.soft.inRecovery, !sack);
      if (sack) {
        // The same loss reported the SACK way is repaired at once (RFC 6675 2).
        for (let i = 1; i <= 3; i++) {
          b.inject({
            flags: ACK,
            srcPort: 80,
            dstPort: o.conn.localPort,
            seq: o.peerSeq,
            ack: una,
            sack: [[add(una, 1460), add(una, 1460 * (i + 1))]],
          });
        }
        assert.equal(b.count('tcp.fast_retransmits'), 1);
        assert.ok(b.take().some((s) => s.data.length > 0 && s.h.seq === una));
      }
    });
  }

  test('RFC 7323 2.4: with window scaling the window reaches zero and no promised byte is refused', () => {
    const b = new Bench();
    const o = activeOpen(b, { wscale: 0 }, { rcvBufSize: 100_000 });
    const shift = o.conn.state.const.rcvWscale;
    assert.ok(shift >= 1, 'scaling in use');
    b.take();
    let seq = o.peerSeq;
    let edge = add(seq, 100);
    let win = -1;
    for (let i = 0; i < 500 && win !== 0; i++) {
      const room = (edge - seq) | 0;
      if (room <= 0) break;
      const len = Math.min(999, room);
      b.inject({
        flags: ACK,
        seq,
        ack: add(o.iss, 1),
        srcPort: 80,
        dstPort: o.conn.localPort,
        data: bytes(len),
      });
      const acks = b.take();
      const last = acks.at(-1);
      if (!last) {
        // Delayed ACK: let it go out.
        b.advance(50);
      }
      const a = last ?? b.take().at(-1)!;
      assert.equal(a.h.ack, add(seq, len), `every byte within the promised window is taken (at ${i})`);
      seq = add(seq, len);
      win = a.h.window;
      edge = add(a.h.ack, win * 2 ** shift);
    }
    assert.equal(win, 0, 'the advertised window reached zero');
    assert.ok(o.conn.readableLength > 100_000 - 2 ** shift, 'the buffer is full');
    assert.ok(o.conn.readableLength <= 100_000, 'and not overrun');
  });

  test('an out-of-order FIN is remembered; a lone out-of-order FIN is ACKed at once', () => {
    const o = sackOpen();
    o.send({ flags: ACK | FIN, seq: add(o.peerSeq, 100) });
    const a = o.b.take();
    assert.equal(a.length, 1, 'immediate ACK');
    assert.equal(a[0]!.h.ack, o.peerSeq);
    o.send({ flags: ACK, seq: o.peerSeq, data: bytes(100) });
    assert.equal(o.conn.state.delegated.state, TcpStateId.CLOSE_WAIT);
    assert.equal(o.b.last().h.ack, add(o.peerSeq, 101));
    assert.ok(o.user.events.includes('end'));
  });

  test('an out-of-order FIN with data is remembered too', () => {
    const o = sackOpen();
    o.send({ flags: ACK | FIN, seq: add(o.peerSeq, 100), data: bytes(50) });
    o.send({ flags: ACK, seq: o.peerSeq, data: bytes(100) });
    assert.equal(o.conn.state.delegated.state, TcpStateId.CLOSE_WAIT);
    assert.equal(o.conn.readableLength, 150);
    assert.equal(o.b.last().h.ack, add(o.peerSeq, 151));
  });

  test('TS.Recent moves only after the RST, SYN and ACK checks (Linux bd090dfc634d)', () => {
    const o = sackOpen({ ts: true });
    // In window, but its ACK acknowledges data never sent: dropped with a challenge ACK.
    o.send({ flags: ACK, ack: add(o.iss, 50_000), ts: [0x7fff0000, 0], data: bytes(10) });
    assert.equal(o.conn.readableLength, 0);
    o.send({ flags: ACK, ts: [5001, 0], data: bytes(10) });
    assert.equal(o.conn.readableLength, 10, 'the next honest segment is not a PAWS victim');
    assert.equal(o.b.count('tcp.paws.drops'), 0);
  });

  test('TIME_WAIT: a SYN without a listener does not end it', () => {
    const o = sackOpen();
    o.conn.close();
    const fin = o.b.take().find((s) => s.h.flags & FIN)!;
    o.send({ flags: ACK | FIN, ack: add(fin.h.seq, 1) });
    assert.equal(o.conn.state.delegated.state, TcpStateId.TIME_WAIT);
    o.b.take();
    o.send({ flags: SYN, seq: add(o.peerSeq, 100_000), ack: 0 });
    assert.equal(o.b.count('tcp.time-wait.reopened'), 0);
    assert.equal(o.conn.state.delegated.state, TcpStateId.TIME_WAIT);
    const r = o.b.take();
    assert.ok(r.every((s) => (s.h.flags & SYN) === 0));
  });

  test('TIME_WAIT: a SYN reopening it gets an ISN above the old snd.nxt', () => {
    const b = new Bench();
    const o = passiveOpen(b);
    const port = 80;
    const send = (x: { flags: number; seq: number; ack?: number }) =>
      b.inject({ srcPort: 5000, dstPort: port, ...x });
    o.conn.write(bytes(1000));
    b.take();
    o.conn.close();
    const fin = b.take().find((s) => s.h.flags & FIN)!;
    const oldNxt = add(fin.h.seq, 1);
    send({ flags: ACK | FIN, seq: o.peerSeq, ack: oldNxt });
    assert.equal(o.conn.state.delegated.state, TcpStateId.TIME_WAIT);
    b.take();
    send({ flags: SYN, seq: add(o.peerSeq, 100_000) });
    assert.equal(b.count('tcp.time-wait.reopened'), 1);
    const synAck = b.take().find((s) => s.h.flags & SYN)!;
    assert.ok(synAck, 'SYN-ACK sent');
    // Linux: tw_snd_nxt + 65535 + 2.
    assert.equal(synAck.h.seq, add(oldNxt, 65537));
  });

  test('window updates move with ACKs of new data (Linux tcp_may_update_window)', () => {
    const o = sackOpen();
    o.conn.write(bytes(3000));
    o.b.take();
    const una = add(o.iss, 1);
    // Out-of-order data raises SND.WL1 while the window is shut.
    o.send({ flags: ACK, seq: add(o.peerSeq, 500), ack: una, window: 0, data: bytes(100) });
    assert.equal(o.conn.state.delegated.sndWnd, 0);
    // The hole is filled by an earlier sequence number that ACKs our data and reopens the window.
    o.send({ flags: ACK, seq: o.peerSeq, ack: add(una, 1460), window: 50_000, data: bytes(500) });
    assert.equal(o.conn.state.delegated.sndWnd, 50_000);
  });

  test('a window update is taken after refused data (SND.WL1/WL2 move only with accepted segments)', () => {
    const b = new Bench();
    const o = activeOpen(b, { window: 0 }, { rcvBufSize: 2000 });
    const port = o.conn.localPort;
    const una = add(o.iss, 1);
    const peer = (x: { seq: number; window: number; data?: Uint8Array }) =>
      b.inject({ srcPort: 80, dstPort: port, flags: ACK, ack: una, ...x });
    // The peer fills our buffer, then sends data we must refuse (our window is zero).
    peer({ seq: o.peerSeq, window: 0, data: bytes(2000) });
    assert.equal(o.conn.readableLength, 2000);
    peer({ seq: add(o.peerSeq, 2000), window: 0, data: bytes(1000) });
    assert.equal(o.conn.readableLength, 2000);
    o.conn.write(bytes(3000));
    b.take();
    // Its window opens with a pure ACK at the sequence number we accepted: data goes at once (one
    // MSS; the 540 bytes left of the window wait, as a sliver would under Linux's window test).
    peer({ seq: add(o.peerSeq, 2000), window: 2000 });
    const out = b.take().filter((x) => x.data.length > 0);
    assert.equal(out.length, 1, 'data right after the window update, before any persist probe');
    assert.equal(out[0]!.h.seq, una);
    assert.equal(out[0]!.data.length, 1460);
  });

  test('an old ACK does not update the window', () => {
    const o = sackOpen();
    o.conn.write(bytes(3000));
    o.b.take();
    const una = add(o.iss, 1);
    o.send({ flags: ACK, ack: add(una, 2000), window: 40_000, data: bytes(10) });
    o.send({ flags: ACK, seq: add(o.peerSeq, 10), ack: add(una, 1000), window: 0, data: bytes(10) });
    assert.equal(o.conn.readableLength, 20);
    assert.equal(o.conn.state.delegated.sndWnd, 40_000);
  });

  test("Karn: a SYN-ACK resent for the peer's retransmitted SYN gives no RTT sample", () => {
    const b = new Bench();
    const user = new Recorder();
    b.layer.listen({ port: 80 }, (c) => {
      c.user = user;
      return true;
    });
    b.inject({ flags: SYN, seq: PEER_ISN, mss: 1460 });
    const synAck = b.take()[0]!;
    b.advance(500);
    b.inject({ flags: SYN, seq: PEER_ISN, mss: 1460 });
    assert.equal(b.take().length, 1);
    b.advance(10);
    b.inject({ flags: ACK, seq: add(PEER_ISN, 1), ack: add(synAck.h.seq, 1) });
    const conn = [...b.layer.connections()][0]!;
    assert.equal(conn.state.delegated.state, TcpStateId.ESTABLISHED);
    assert.equal(conn.state.delegated.srtt, 0, 'no sample from an ambiguous handshake');
  });

  test('no SACK block for data dropped at the out-of-order cap', () => {
    const o = sackOpen({ options: { rcvBufSize: 1 << 20 } });
    for (let i = 0; i < 1024; i++) o.send({ flags: ACK, seq: add(o.peerSeq, 10 + 2 * i), data: bytes(1) });
    o.b.take();
    const far = add(o.peerSeq, 100_000);
    o.send({ flags: ACK, seq: far, data: bytes(100) });
    const a = o.b.last();
    for (let i = 0; i < a.h.sackCount; i++) assert.notEqual(a.h.sackBlocks[2 * i], far);
  });

  test('unacceptable segments do not reset keepalive', () => {
    const o = sackOpen({ options: { keepIntvlMs: 1000, keepCount: 3 } });
    o.conn.setKeepAlive(true, 10_000);
    for (let t = 0; t < 40 && o.conn.state.delegated.state !== TcpStateId.CLOSED; t++) {
      o.b.advance(500);
      o.send({ flags: ACK, seq: add(o.peerSeq, 10_000_000), data: bytes(10) });
    }
    assert.equal(o.conn.state.delegated.state, TcpStateId.CLOSED);
    assert.equal(o.user.error?.code, 'ETIMEDOUT');
  });

  test('data and FIN in a SYN-ACK are processed', () => {
    const b = new Bench();
    const user = new Recorder();
    const conn = b.layer.connect({ remoteIp: 0x0a000002, remotePort: 80 }, user);
    const syn = b.take()[0]!;
    b.inject({
      flags: SYN | ACK | FIN,
      seq: PEER_ISN,
      ack: add(syn.h.seq, 1),
      srcPort: 80,
      dstPort: conn.localPort,
      mss: 1460,
      data: bytes(5),
    });
    assert.equal(conn.readableLength, 5);
    assert.equal(conn.state.delegated.state, TcpStateId.CLOSE_WAIT);
    assert.equal(b.last().h.ack, add(PEER_ISN, 7));
  });

  test('a listener drops SYN+FIN', () => {
    const b = new Bench();
    b.layer.listen({ port: 80 }, () => true);
    b.inject({ flags: SYN | FIN, seq: PEER_ISN, mss: 1460 });
    assert.equal(b.take().length, 0);
    assert.equal(b.layer.size, 0);
    assert.equal(b.count('drop.tcp.syn-fin'), 1);
  });
});

describe('challenge ACK budget (CVE-2016-5696)', () => {
  test('the layer-wide budget per second is drawn at random, so counting it reveals nothing', () => {
    const b = new Bench();
    const budgets = new Set<number>();
    for (let w = 0; w < 8; w++) {
      let n = 0;
      while (n < 5000 && b.layer.takeChallengeAck(b.env.clock.now())) n++;
      budgets.add(n);
      assert.ok(n >= 500 && n <= 1500, `budget ${n}`);
      b.advance(1000);
    }
    assert.ok(budgets.size > 1, 'not a fixed number');
  });
});

describe('answers to invalid segments', () => {
  test('duplicate ACKs for out-of-window pure ACKs and SYNs are rate-limited (Linux tcp_invalid_ratelimit)', () => {
    const o = sackOpen();
    for (let i = 0; i < 10; i++) o.send({ flags: ACK, seq: add(o.peerSeq, 50_000_000 + i) });
    assert.equal(o.b.take().length, 1);
    assert.ok(o.b.count('tcp.oow_ack.limited') >= 9);
    o.b.advance(501);
    o.send({ flags: ACK, seq: add(o.peerSeq, 50_000_000) });
    assert.equal(o.b.take().length, 1);
    // Data below the window (a retransmission we already have) is always answered.
    for (let i = 0; i < 3; i++) o.send({ flags: ACK, seq: add(o.peerSeq, -1000), data: bytes(100) });
    assert.equal(o.b.take().length, 3);
  });
});

describe('SYN cookies', () => {
  test('a stray ACK to a listener that has not overflowed lately is not checked as a cookie', () => {
    const b = new Bench();
    b.layer.listen({ port: 80 }, () => true);
    b.inject({ flags: ACK, seq: PEER_ISN, ack: 12345 });
    assert.equal(b.count('tcp.syncookies.failed'), 0);
    assert.equal(b.take()[0]?.h.flags, RST, 'answered with a RST');
  });

  test('after an overflow the cookie ACK is honoured', () => {
    const b = new Bench();
    let accepted = 0;
    b.layer.listen({ port: 80, backlog: 0 }, () => {
      accepted++;
      return true;
    });
    b.inject({ flags: SYN, seq: PEER_ISN, mss: 1460 });
    const synAck = b.take()[0]!;
    assert.equal(b.count('tcp.syncookies.sent'), 1);
    b.inject({ flags: ACK, seq: add(PEER_ISN, 1), ack: add(synAck.h.seq, 1) });
    assert.equal(b.count('tcp.syncookies.ok'), 1);
    assert.equal(accepted, 1);
  });

  test('a cookie ACK that finds the half-open connection its resent SYN made is honoured, not reset', () => {
    // A SYN answered with a cookie (the backlog full), then sent again by the peer once there was
    // room: the resend made a half-open connection with another ISS. The peer took the cookie's
    // SYN-ACK first and is established on it; its ACK must not be reset as unacceptable (Linux
    // hands an ACK its request sock refuses to the listener's cookie check).
    const b = new Bench();
    let accepted = 0;
    b.layer.listen({ port: 80, backlog: 1 }, () => {
      accepted++;
      return true;
    });
    b.inject({ flags: SYN, seq: 777, srcPort: 6000, mss: 1460 });
    const other = b.take()[0]!;
    b.inject({ flags: SYN, seq: PEER_ISN, mss: 1460 });
    const cookie = b.take()[0]!;
    assert.equal(b.count('tcp.syncookies.sent'), 1, 'the backlog of one is full: a cookie');
    // The other handshake completes, which makes room; the peer's SYN comes again.
    b.inject({ flags: ACK, seq: 778, ack: add(other.h.seq, 1), srcPort: 6000 });
    b.inject({ flags: SYN, seq: PEER_ISN, mss: 1460 });
    const synAck = b.take()[0]!;
    assert.equal(synAck.h.flags, SYN | ACK);
    assert.notEqual(synAck.h.seq, cookie.h.seq, 'the half-open connection has its own ISS');
    // The cookie's SYN-ACK reached the peer first: it acknowledges the cookie.
    b.inject({ flags: ACK, seq: add(PEER_ISN, 1), ack: add(cookie.h.seq, 1) });
    const out = b.take();
    assert.ok(!out.some((s) => s.h.flags & RST), 'no reset');
    assert.equal(b.count('tcp.syncookies.ok'), 1);
    assert.equal(accepted, 2, 'both connections accepted');
    const conn = [...b.layer.connections()].find((c) => c.remotePort === 5000);
    assert.equal(conn?.state.delegated.state, TcpStateId.ESTABLISHED);
    assert.equal(conn?.state.delegated.sndUna, add(cookie.h.seq, 1), "on the cookie's sequence space");
    assert.equal(
      [...b.layer.connections()].filter((c) => c.remotePort === 5000).length,
      1,
      'the half-open connection is gone',
    );
  });
});

describe('TIME_WAIT memory', () => {
  function toTimeWait(b: Bench) {
    b.take();
    const o = activeOpen(b, {}, { sndBufSize: 1 << 20 });
    b.take();
    o.conn.write(bytes(100_000));
    const segs = b.take();
    const end = segs.reduce((m, s) => Math.max(m, (s.h.seq - o.iss + s.data.length) >>> 0), 0);
    b.inject({ flags: ACK, seq: o.peerSeq, ack: add(o.iss, end), srcPort: 80, dstPort: o.conn.localPort });
    for (let i = 0; i < 50 && o.conn.writableLength > 0; i++) {
      const more = b.take();
      const e = more.reduce((m, s) => Math.max(m, (s.h.seq - o.iss + s.data.length) >>> 0), 0);
      if (e > 0)
        b.inject({ flags: ACK, seq: o.peerSeq, ack: add(o.iss, e), srcPort: 80, dstPort: o.conn.localPort });
      else b.advance(10);
    }
    o.conn.close();
    const fin = b.take().find((s) => s.h.flags & FIN)!;
    b.inject({
      flags: ACK | FIN,
      seq: o.peerSeq,
      ack: add(fin.h.seq, 1),
      srcPort: 80,
      dstPort: o.conn.localPort,
    });
    return o;
  }

  test('a connection in TIME_WAIT gives its buffers back', () => {
    const b = new Bench();
    const o = toTimeWait(b);
    assert.equal(o.conn.state.delegated.state, TcpStateId.TIME_WAIT);
    assert.ok(
      o.conn.state.delegated.sendBuffer.capacity <= 16,
      `${o.conn.state.delegated.sendBuffer.capacity} B kept`,
    );
  });

  test('past the cap, a connection that would wait in TIME_WAIT closes at once (Linux tcp_max_tw_buckets)', () => {
    const b = new Bench();
    b.layer.maxTimeWait = 2;
    const os = [toTimeWait(b), toTimeWait(b), toTimeWait(b)];
    assert.deepEqual(
      os.map((o) => o.conn.state.delegated.state),
      [TcpStateId.TIME_WAIT, TcpStateId.TIME_WAIT, TcpStateId.CLOSED],
    );
    assert.equal(b.layer.timeWaitCount, 2);
    assert.equal(b.count('tcp.time-wait.overflow'), 1);
    b.advance(61_000);
    assert.equal(b.layer.timeWaitCount, 0);
  });
});

describe('undo of spurious retransmissions (RFC 2883 D-SACK, RFC 3708)', () => {
  test('when D-SACKs show every retransmission of a recovery was needless, cwnd and ssthresh come back', () => {
    const o = sackOpen();
    const d = o.conn.state.delegated;
    d.cwnd = 20 * 1460;
    o.conn.write(bytes(20 * 1460));
    o.b.take();
    const una = add(o.iss, 1);
    const m = 1460;
    const cwndBefore = d.cwnd;
    // Segment 0 is only late: three SACKs of later data start a recovery that resends it.
    for (let i = 1; i <= 3; i++)
      o.send({ flags: ACK, ack: una, sack: [[add(una, m), add(una, (i + 1) * m)]] });
    assert.equal(o.b.count('tcp.fast_retransmits'), 1);
    assert.ok(d.cwnd < cwndBefore);
    // The original arrives: everything is ACKed. Then the needless copy is reported as a D-SACK.
    o.send({ flags: ACK, ack: add(una, 20 * m) });
    o.send({ flags: ACK, ack: add(una, 20 * m), sack: [[una, add(una, m)]] });
    assert.equal(o.b.count('tcp.undo.dsack'), 1);
    assert.ok(d.cwnd >= cwndBefore, `cwnd ${d.cwnd} back to ${cwndBefore}`);
  });
});
