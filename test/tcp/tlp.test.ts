/**
 * Tail loss probe scheduling (RFC 8985 7.2): the probe timeout restarts whenever new data goes
 * out, as Linux's tcp_write_xmit calls tcp_schedule_loss_probe after every send of new data, so
 * the probe waits two RTTs after the newest segment rather than after the first of the flight.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ACK, activeOpen, add, Bench, bytes, FIN, tsoBench } from './harness.ts';

const MSS = 1460;
const RTT = 10;

/** An open connection with SACK and a 10 ms RTT sample from the handshake; returns it at rest. */
function open(b = new Bench()) {
  const o = activeOpen(b, { mss: MSS, sackPermitted: true }, undefined, RTT);
  b.flush();
  b.take();
  assert.equal(o.conn.state.const.sackEnabled, true);
  assert.equal(o.conn.state.delegated.srtt, RTT);
  return o;
}

/** Step 1 ms at a time until a segment at or below snd.max goes out again; its time, or -1. */
function firstResend(b: Bench, sndMax: () => number, limitMs: number): { at: number; seq: number } | null {
  const end = b.env.clock.now() + limitMs;
  while (b.env.clock.now() < end) {
    b.advance(1);
    const seg = b.take().find((s) => s.data.length > 0 && ((sndMax() - s.h.seq) | 0) > 0);
    if (seg) return { at: seg.at, seq: seg.h.seq };
  }
  return null;
}

describe('tail loss probe timer (RFC 8985 7.2)', () => {
  test('restarted by new data: the probe comes 2·SRTT after the newest segment, not the first', () => {
    const { b, conn } = open();
    const t0 = b.env.clock.now();
    conn.write(bytes(2 * MSS, 1));
    b.flush();
    assert.equal(b.take().length, 2, 'two segments at t0');
    // A flight of more than one segment: PTO = 2·SRTT + 2 ms.
    const pto = 2 * RTT + 2;
    b.advance(15);
    conn.write(bytes(2 * MSS, 2));
    b.flush();
    const second = b.take();
    assert.equal(second.length, 2, 'two more, 15 ms later, still unacknowledged');
    const t1 = b.env.clock.now();
    const probe = firstResend(b, () => conn.state.delegated.sndMax, 200);
    assert.ok(probe, 'a probe went out before the RTO');
    assert.equal(
      probe.at,
      t1 + pto,
      `probe at t0+${probe.at - t0}, expected t0+${t1 + pto - t0} (not t0+${pto}: 2·SRTT after the first send)`,
    );
    // Nothing new to send: the probe is the last segment again.
    assert.equal(probe.seq, second[1]!.h.seq);
    assert.equal(b.count('tcp.tlp.probes'), 1);
    assert.equal(b.count('tcp.rto'), 0);
  });

  test('restarted by an ACK of new data, and the flight it leaves decides the delayed-ACK allowance', () => {
    const { b, conn, iss, peerSeq } = open();
    conn.write(bytes(3 * MSS, 3));
    b.flush();
    const sent = b.take();
    assert.equal(sent.length, 3);
    b.advance(8);
    // Two of three ACKed: one segment is left, so its PTO allows for a delayed ACK and the
    // probe would come after the RTO; none is armed, and the RTO (restarted by the ACK) repairs it.
    b.inject({ flags: ACK, seq: peerSeq, ack: add(iss, 1 + 2 * MSS), srcPort: 80, dstPort: conn.localPort });
    b.flush();
    assert.equal(conn.state.soft.tlpDeadline, Number.POSITIVE_INFINITY);
    const t1 = b.env.clock.now();
    // More data now: a flight of two segments again, and the probe 2·SRTT + 2 ms after it.
    conn.write(bytes(MSS, 4));
    b.flush();
    assert.equal(b.take().length, 1);
    const probe = firstResend(b, () => conn.state.delegated.sndMax, 300);
    assert.ok(probe);
    const pto = 2 * conn.state.delegated.srtt + 2;
    // The clock steps by 1 ms: the probe goes at the first step at or after its deadline.
    assert.ok(
      probe.at - t1 >= pto && probe.at - t1 < pto + 1,
      `probe ${probe.at - t1} ms after the new data, PTO ${pto}`,
    );
    assert.equal(b.count('tcp.rto'), 0);
  });

  test("with data SACKed (Linux's Disorder) new data cancels the probe and the RTO keeps its time (tcp_schedule_loss_probe: Open or CWR only)", () => {
    const { b, conn, iss, peerSeq } = open();
    conn.write(bytes(4 * MSS, 5));
    b.flush();
    assert.equal(b.take().length, 4);
    const armed = conn.state.soft.tlpDeadline;
    assert.ok(Number.isFinite(armed), 'armed by the first flight');
    b.advance(RTT);
    // The first segment is missing and the second arrived (a duplicate ACK with SACK).
    const sack: [number, number] = [add(iss, 1 + MSS), add(iss, 1 + 2 * MSS)];
    b.inject({
      flags: ACK,
      seq: peerSeq,
      ack: add(iss, 1),
      srcPort: 80,
      dstPort: conn.localPort,
      sack: [sack],
    });
    b.flush();
    assert.equal(conn.state.soft.inRecovery, false, 'one hole sent with the rest is not yet lost');
    b.advance(2);
    conn.write(bytes(MSS, 6));
    b.flush();
    const rto = conn.state.delegated.rtxDeadline;
    assert.equal(b.take().filter((s) => s.data.length > 0).length, 1, 'new data went out');
    // Linux's tcp_event_new_data_sent turns the pending probe timer into the RTO, and no probe
    // may be armed outside Open and CWR.
    assert.equal(conn.state.soft.tlpDeadline, Number.POSITIVE_INFINITY);
    assert.equal(conn.state.delegated.rtxDeadline, rto, 'the RTO keeps its time');
    for (let i = 0; i < 2 * RTT + 10; i++) b.advance(1);
    assert.equal(b.count('tcp.tlp.probes'), 0, 'no probe');
  });

  test('a receiver that dropped data and shrank its window: no probe past its right edge, the RTO keeps its time', () => {
    // What a Linux receiver out of receive memory does (tcp_data_queue, ICSK_ACK_NOMEM): it
    // drops an in-window segment, ACKs what it kept with a zero window, then offers a little
    // again as its reader frees space. Linux's sender (__tcp_retransmit_skb) sends no probe
    // that starts at or past the right edge, and its RTO stays anchored (tcp_rearm_rto).
    const { b, conn, iss, peerSeq } = open();
    conn.write(bytes(4 * MSS, 8));
    b.flush();
    assert.equal(b.take().length, 4);
    b.advance(RTT);
    const una = add(iss, 1 + MSS);
    const base = { flags: ACK, seq: peerSeq, ack: una, srcPort: 80, dstPort: conn.localPort };
    b.inject({ ...base, window: 0 });
    b.flush();
    const rtoAt = conn.state.delegated.rtxDeadline;
    assert.ok(Number.isFinite(rtoAt), 'the RTO restarted by the ACK of new data');
    b.advance(5);
    // One segment's room from snd.una: the tail (3 MSS above it) lies past the edge.
    b.inject({ ...base, window: MSS });
    b.flush();
    assert.equal(b.take().filter((x) => x.data.length > 0).length, 0, 'nothing new fits');
    const first = firstResend(b, () => conn.state.delegated.sndMax, 3000);
    assert.ok(first, 'something was resent');
    assert.equal(first.seq, una, 'the first resend is snd.una, not the tail past the window');
    assert.equal(first.at, Math.ceil(rtoAt), 'at the RTO set by the last ACK of new data');
    assert.equal(b.count('tcp.tlp.probes'), 0);
  });

  test("a probe of new data shorter than the MSS is the short segment in flight for Nagle (Linux's snd_sml)", () => {
    const { b, conn, iss, peerSeq } = open(tsoBench());
    const lens = () =>
      b
        .take()
        .filter((x) => x.data.length > 0)
        .map((x) => x.data.length);
    conn.write(bytes(MSS + 700, 7));
    b.flush();
    assert.deepEqual(lens(), [MSS + 700]);
    conn.write(bytes(300, 8));
    b.flush();
    assert.deepEqual(lens(), [], 'Nagle holds 300 bytes behind the unacknowledged 700');
    let probe: number[] = [];
    for (let i = 0; i < 200 && probe.length === 0; i++) {
      b.advance(1);
      probe = lens();
    }
    assert.deepEqual(probe, [300], 'the probe sends them whatever Nagle says');
    assert.equal(b.count('tcp.tlp.probes'), 1);
    // All but the probe acknowledged; the next write's short tail waits behind the probe.
    b.inject({
      flags: ACK,
      seq: peerSeq,
      ack: add(iss, 1 + MSS + 700),
      srcPort: 80,
      dstPort: conn.localPort,
    });
    b.flush();
    conn.write(bytes(2000, 9));
    b.flush();
    assert.deepEqual(lens(), [MSS]);
  });
});

describe("the loss probe's episode (RFC 8985 7.4, Linux's tcp_process_tlp_ack)", () => {
  /** Two segments out, nothing ACKed until the probe resends the second. */
  function probed() {
    const o = open();
    const { b, conn } = o;
    conn.write(bytes(2 * MSS, 9));
    b.flush();
    assert.equal(b.take().length, 2);
    const probe = firstResend(b, () => conn.state.delegated.sndMax, 100);
    assert.ok(probe, 'the probe went out');
    assert.equal(probe.seq, add(o.iss, 1 + MSS), 'the last segment again');
    const ackOf = (ack: number, sack?: [number, number][]) =>
      b.inject({ flags: ACK, seq: o.peerSeq, ack, srcPort: 80, dstPort: conn.localPort, sack });
    const end = add(o.iss, 1 + 2 * MSS);
    /** One more segment of new data, ACKed a round trip later; cwnd before it. */
    const pastProbe = (fill: number): number => {
      const cwnd = conn.state.delegated.cwnd;
      conn.write(bytes(MSS, fill));
      b.flush();
      b.advance(RTT);
      ackOf(add(end, MSS));
      b.flush();
      return cwnd;
    };
    return { ...o, ackOf, end, pastProbe };
  }

  test("a DSACK of the probe's copy does not widen RACK's window, even once reordering was seen (FLAG_DSACK_TLP)", () => {
    const { b, conn, ackOf, end, pastProbe } = probed();
    conn.rack.reorderingSeen = true;
    // The originals arrived, then the probe's copy: the ACK of both, then a DSACK of the copy.
    ackOf(end);
    ackOf(end, [[add(end, -MSS), end]]);
    b.flush();
    assert.equal(b.count('tcp.dsack.received'), 1);
    assert.equal(b.count('tcp.tlp.dsack'), 1, "known for the probe's, after the ACK that reached it");
    assert.equal(conn.rack.reoWndMult, 1, 'a timer resent it, not RACK: no sign its window is narrow');
    // Nothing was lost: new data ACKed past the probe cuts nothing.
    const cwnd = pastProbe(10);
    assert.equal(b.count('tcp.tlp.recoveries'), 0);
    assert.ok(conn.state.delegated.cwnd >= cwnd, `cwnd ${conn.state.delegated.cwnd}, was ${cwnd}`);
  });

  test("after an ACK that reaches a resent probe and no further, no new probe until the episode ends (Linux's tlp_high_seq)", () => {
    const { b, conn, ackOf, end } = probed();
    ackOf(end);
    b.flush();
    assert.notEqual(conn.rack.tlpEnd, -1, 'the episode is still open');
    conn.write(bytes(2 * MSS, 12));
    b.flush();
    assert.equal(b.take().filter((s) => s.data.length > 0).length, 2, 'new data went out');
    for (let i = 0; i < 100; i++) b.advance(1);
    assert.equal(b.count('tcp.tlp.probes'), 1, 'no second probe: the RTO is next');
    assert.equal(b.take().filter((s) => s.data.length > 0).length, 0);
  });

  test("a FIN whose ACK reaches the probe's end is no duplicate ACK: the episode stays open (Linux's FLAG_DATA)", () => {
    const { b, conn, ackOf, end, peerSeq } = probed();
    ackOf(end);
    b.flush();
    // The peer closes: its FIN carries no data but takes a sequence number, as data does; Linux
    // sets FLAG_DATA for it (its end_seq is past its seq), and only a pure duplicate ends the episode.
    b.inject({ flags: ACK | FIN, seq: peerSeq, ack: end, srcPort: 80, dstPort: conn.localPort });
    b.flush();
    assert.equal(conn.state.delegated.finReceived, true);
    assert.equal(conn.rack.tlpEnd, end, 'the episode is still open');
    // The second original was lost after all (no DSACK came): the ACK past the probe cuts the window.
    const cwnd = conn.state.delegated.cwnd;
    conn.write(bytes(MSS, 13));
    b.flush();
    b.advance(RTT);
    b.inject({ flags: ACK, seq: add(peerSeq, 1), ack: add(end, MSS), srcPort: 80, dstPort: conn.localPort });
    b.flush();
    assert.equal(b.count('tcp.tlp.recoveries'), 1);
    assert.ok(conn.state.delegated.cwnd < cwnd, `cwnd ${conn.state.delegated.cwnd}, was ${cwnd}`);
  });

  test('a probe whose copy alone arrived repaired a loss: the ACK past it cuts the window (RFC 8985 7.4.2)', () => {
    const { b, conn, ackOf, end, pastProbe } = probed();
    // The second original was lost; the probe's copy filled it: no DSACK follows.
    ackOf(end);
    b.flush();
    const cwnd = pastProbe(11);
    assert.equal(b.count('tcp.tlp.recoveries'), 1);
    assert.equal(conn.state.soft.inRecovery, false, 'no recovery: the probe repaired it');
    assert.ok(conn.state.delegated.cwnd < cwnd, `cwnd ${conn.state.delegated.cwnd}, was ${cwnd}`);
    assert.equal(conn.state.delegated.cwnd, conn.state.delegated.ssthresh);
  });
});
