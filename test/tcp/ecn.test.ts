import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { TcpEcn } from '../../src/state/tcp-state.ts';
import { TcpFlag } from '../../src/wire/tcp.ts';
import { ACK, add, Bench, bytes, PEER_ISN, passiveOpen, REMOTE, Recorder, type Seg, SYN } from './harness.ts';

const { ECE, CWR } = TcpFlag;
const ECT0 = 2;
const CE = 3;
const ecnField = (s: Seg): number => (s.tos ?? 0) & 3;
const dataSegs = (segs: Seg[]): Seg[] => segs.filter((s) => s.data.length > 0);

/** A passive open whose SYN asked for ECN (ECE and CWR): an ECN connection, handshake output taken. */
function ecnServer(b = new Bench()) {
  const o = passiveOpen(b, { flags: SYN | ECE | CWR });
  b.take();
  b.flush();
  let peerSeq = o.peerSeq;
  /** Data from the peer at its next sequence number, with `flags` (ACK added) and IP `tos`. */
  const deliver = (n: number, tos: number, flags = 0): void => {
    b.inject({ flags: ACK | flags, seq: peerSeq, ack: o.conn.state.delegated.sndUna, data: bytes(n), tos });
    peerSeq = add(peerSeq, n);
  };
  /** A pure ACK from the peer of everything up to `ack`, with `flags`. */
  const ackTo = (ack: number, flags = 0): void =>
    b.inject({ flags: ACK | flags, seq: peerSeq, ack, window: 65535 });
  return { ...o, deliver, ackTo };
}

/** An ECN server connection with 200 KB to send: its first flight, taken. */
function sending() {
  const o = ecnServer();
  const { b, conn } = o;
  conn.write(bytes(200_000));
  return { o, b, conn, d: conn.state.delegated, flight: dataSegs(b.take()) };
}

describe('ECN negotiation (RFC 3168 6.1.1, as Linux with tcp_ecn=2)', () => {
  test('a SYN with ECE and CWR is answered with ECE alone, and the connection is ECN-capable', () => {
    const b = new Bench();
    const { conn, synAck } = passiveOpen(b, { flags: SYN | ECE | CWR });
    assert.equal(synAck.h.flags & (ECE | CWR), ECE);
    // RFC 3168 6.1.1: a SYN-ACK is not ECT.
    assert.equal(ecnField(synAck), 0);
    assert.equal(conn.state.delegated.ecn, TcpEcn.OK);
    assert.equal(b.count('tcp.ecn.accepted'), 1);
  });

  for (const [name, syn] of [
    ['a SYN that does not ask', { flags: SYN }],
    ['a SYN with ECE alone', { flags: SYN | ECE }],
    // Linux's tcp_ecn_create_request: a box on the path rewrote the field.
    ['a SYN that asks but is itself ECT', { flags: SYN | ECE | CWR, tos: ECT0 }],
  ] as const) {
    test(`${name} is answered without ECE`, () => {
      const b = new Bench();
      const { conn, synAck } = passiveOpen(b, syn);
      assert.equal(synAck.h.flags & (ECE | CWR), 0);
      assert.equal(conn.state.delegated.ecn, 0);
    });
  }

  test('a layer with ECN off (mode 0) does not agree', () => {
    const b = new Bench();
    b.layer.ecn = 0;
    const { conn, synAck } = passiveOpen(b, { flags: SYN | ECE | CWR });
    assert.equal(synAck.h.flags & (ECE | CWR), 0);
    assert.equal(conn.state.delegated.ecn, 0);
  });

  test('an active open asks only in mode 1, and an answer with ECE alone agrees', () => {
    const open = (mode: 0 | 1 | 2, answer: number) => {
      const b = new Bench();
      b.layer.ecn = mode;
      const conn = b.layer.connect({ remoteIp: REMOTE, remotePort: 80 }, new Recorder());
      const syn = b.take()[0]!;
      b.inject({
        flags: SYN | ACK | answer,
        seq: PEER_ISN,
        ack: add(syn.h.seq, 1),
        srcPort: 80,
        dstPort: conn.localPort,
      });
      return { syn, ecn: conn.state.delegated.ecn, b };
    };
    const asked = open(1, ECE);
    assert.equal(asked.syn.h.flags & (ECE | CWR), ECE | CWR);
    assert.equal(ecnField(asked.syn), 0);
    assert.equal(asked.ecn, TcpEcn.OK);
    assert.equal(asked.b.count('tcp.ecn.negotiated'), 1);
    // RFC 3168 6.1.1: a SYN-ACK with both is a peer reflecting the flags, not agreeing.
    assert.equal(open(1, ECE | CWR).ecn, 0);
    assert.equal(open(1, 0).ecn, 0);
    for (const mode of [0, 2] as const) {
      const o = open(mode, ECE);
      assert.equal(o.syn.h.flags & (ECE | CWR), 0, `mode ${mode}`);
      assert.equal(o.ecn, 0, `mode ${mode}`);
    }
  });

  test('a resent SYN no longer asks (tcp_ecn_fallback): a path that drops ECN SYNs still connects', () => {
    const b = new Bench();
    b.layer.ecn = 1;
    const conn = b.layer.connect({ remoteIp: REMOTE, remotePort: 80 }, new Recorder());
    assert.equal(b.take()[0]!.h.flags & (ECE | CWR), ECE | CWR);
    b.advance(1000);
    const again = b.take();
    assert.equal(again.length, 1);
    assert.equal(again[0]!.h.flags & (SYN | ECE | CWR), SYN);
    assert.equal(conn.state.delegated.ecn, 0);
  });
});

describe('ECN on an established connection', () => {
  test('new data goes ECT(0); pure ACKs and retransmissions do not', () => {
    const o = ecnServer();
    const { b, conn } = o;
    conn.write(bytes(3000));
    const first = dataSegs(b.take());
    assert.ok(first.length >= 2, `${first.length} data segments`);
    for (const s of first) assert.equal(ecnField(s), ECT0);
    o.deliver(100, ECT0, TcpFlag.PSH);
    b.advance(conn.state.cached.delayedAckMs);
    const acks = b.take().filter((s) => s.data.length === 0);
    assert.ok(acks.length > 0, 'the peer data was ACKed');
    for (const s of acks) assert.equal(ecnField(s), 0);
    // Nothing more is ACKed: the retransmission timer resends snd.una's segment, not ECT.
    b.advance(conn.state.delegated.rto + 1);
    const resent = dataSegs(b.take());
    assert.ok(resent.length > 0, 'a retransmission went');
    assert.equal(resent[0]!.h.seq, first[0]!.h.seq);
    for (const s of resent) assert.equal(ecnField(s), 0);
  });

  test('a connection without ECN sends nothing ECT', () => {
    const b = new Bench();
    const { conn } = passiveOpen(b, { flags: SYN });
    b.take();
    conn.write(bytes(3000));
    for (const s of b.take()) assert.equal(ecnField(s), 0);
  });

  test('a CE mark is echoed with ECE on every segment, at once, until the peer sends CWR', () => {
    const o = ecnServer();
    const { b, conn } = o;
    // Past the first data's quick ACKs: the peer's every-other segment is delayed.
    for (let i = 0; i < 40; i++) o.deliver(1000, ECT0);
    b.advance(conn.state.cached.delayedAckMs);
    b.take();
    o.deliver(1000, ECT0);
    assert.equal(b.take().length, 0, 'a lone segment waits for the delayed ACK');
    o.deliver(1000, CE);
    const echo = b.take();
    assert.equal(echo.length, 1, 'the CE-marked segment is ACKed at once');
    assert.ok(echo[0]!.h.flags & ECE, 'the ACK echoes ECE');
    assert.equal(b.count('tcp.ecn.ce-received'), 1);
    // ECE stays on what goes, data included, until CWR.
    o.deliver(1000, ECT0);
    o.deliver(1000, ECT0);
    conn.write(bytes(500));
    b.advance(conn.state.cached.delayedAckMs);
    const still = b.take();
    assert.ok(still.length > 0, 'segments went');
    for (const s of still) assert.ok(s.h.flags & ECE, 'ECE until CWR');
    o.deliver(1000, ECT0, CWR);
    b.advance(conn.state.cached.delayedAckMs);
    const after = b.take();
    assert.ok(after.length > 0, 'segments went');
    for (const s of after) assert.equal(s.h.flags & ECE, 0, 'CWR ended the echo');
    assert.equal(conn.state.delegated.ecn & TcpEcn.DEMAND_CWR, 0);
  });

  test('ECE cuts the window once per window, resends nothing, and the next new data says CWR', () => {
    const { o, b, d, flight } = sending();
    assert.ok(flight.length >= 10, `${flight.length} segments in the first flight`);
    const cwnd0 = d.cwnd;
    // The first two segments ACKed, with ECE.
    o.ackTo(add(flight[1]!.h.seq, flight[1]!.data.length), ECE);
    assert.equal(b.count('tcp.ecn.reductions'), 1);
    assert.ok(d.cwnd < cwnd0, `cwnd ${d.cwnd} cut from ${cwnd0}`);
    assert.equal(d.cwnd, d.ssthresh);
    const cut = d.cwnd;
    const after = dataSegs(b.take());
    assert.equal(b.count('tcp.retransmits'), 0, 'a mark is no loss: nothing resent');
    const withCwr = after.filter((s) => s.h.flags & CWR);
    if (after.length > 0) {
      assert.equal(withCwr.length, 1, 'CWR on one segment');
      assert.equal(withCwr[0], after[0], 'the first new data');
    }
    // Another ECE within the same window (the receiver echoes until it sees CWR): no second cut.
    o.ackTo(add(flight[3]!.h.seq, flight[3]!.data.length), ECE);
    assert.equal(b.count('tcp.ecn.reductions'), 1);
    assert.ok(d.cwnd >= cut, `cwnd ${d.cwnd}, cut to ${cut}`);
    // CWR goes on new data even if none could go right after the cut.
    const sent = [...after, ...dataSegs(b.take())];
    assert.equal(sent.filter((s) => s.h.flags & CWR).length, 1);
    assert.ok(sent[0]!.h.flags & CWR, 'CWR on the first new data');
    assert.ok(
      sent.every((s) => ecnField(s) === ECT0),
      'new data ECT(0)',
    );
    // Everything sent before the cut is ACKed: the next ECE cuts again.
    const end = d.ecnCwrEnd;
    o.ackTo(end);
    b.take();
    o.ackTo(d.sndMax, ECE);
    assert.equal(b.count('tcp.ecn.reductions'), 2);
  });

  test('a loss recovery in the window an ECE already cut does not cut again', () => {
    const { o, b, conn, d, flight } = sending();
    const una = flight[0]!.h.seq;
    o.ackTo(add(una, flight[0]!.data.length), ECE);
    const ssthresh = d.ssthresh;
    b.take();
    // Three duplicate ACKs: the second segment was lost.
    const at = add(una, flight[0]!.data.length);
    for (let i = 0; i < 3; i++) o.ackTo(at);
    assert.ok(conn.state.soft.inRecovery, 'in recovery');
    assert.equal(d.ssthresh, ssthresh, 'no second reduction');
  });
});
