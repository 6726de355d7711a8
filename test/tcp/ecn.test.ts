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
function sending(seed?: number) {
  const o = ecnServer(new Bench({ seed }));
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

  // Seeds whose ISS lies on either side of 2^31: the pipe PRR counts must not read a snd.una past
  // it against a highRxt of 0 as data resent (it did, and the reduction sent without bound).
  const seeds = [1, 2, 3, 4];
  test('the reduction cases run with ISSs in both halves of the sequence space', () => {
    const high = seeds.map((seed) => sending(seed).d.iss >= 2 ** 31);
    assert.ok(high.includes(true) && high.includes(false), `ISS at or past 2^31: ${high}`);
  });

  for (const seed of seeds)
    test(`ECE brings the window down to ssthresh by PRR over the round trip (Linux CWR), once per window (seed ${seed})`, () => {
      ecnReduction(seed);
    });
});

/** One ECE reduction of a sending connection of `seed`, ACK by ACK (see the cases above). */
function ecnReduction(seed: number): void {
  const { o, b, d, flight } = sending(seed);
  assert.ok(flight.length >= 10, `${flight.length} segments in the first flight`);
  const mss = flight[0]!.data.length;
  const cwnd0 = d.cwnd;
  // The first two segments ACKed, with ECE.
  o.ackTo(add(flight[1]!.h.seq, flight[1]!.data.length), ECE);
  assert.equal(b.count('tcp.ecn.reductions'), 1);
  const ssthresh = d.ssthresh;
  assert.ok(ssthresh < cwnd0, `ssthresh ${ssthresh} below cwnd ${cwnd0}`);
  // Linux's tcp_cwnd_reduction: ssthresh/prior-cwnd of what the ACK delivered goes at once, where
  // a cut to ssthresh would hold everything until the flight drained below it.
  const sent = dataSegs(b.take());
  assert.ok(sent.length > 0, `new data on the ECE's ACK (cwnd ${d.cwnd}, ssthresh ${ssthresh})`);
  assert.ok(sent[0]!.h.flags & CWR, 'CWR on the first new data');
  // The rest of the window ACKed a segment at a time, the receiver echoing until it sees CWR.
  let delivered = 2 * mss;
  for (let i = 2; i < flight.length; i++) {
    o.ackTo(add(flight[i]!.h.seq, flight[i]!.data.length), ECE);
    delivered += flight[i]!.data.length;
    sent.push(...dataSegs(b.take()));
    assert.ok(d.cwnd <= cwnd0, `cwnd ${d.cwnd} does not grow in the reduction (was ${cwnd0})`);
    const bytesOut = sent.reduce((n, s) => n + s.data.length, 0);
    // RFC 6937: what went is ssthresh/prior-cwnd of what was delivered, rounded up to whole
    // segments as Linux's tcp_cwnd_reduction counts packets, at least one.
    const allowed = Math.max(Math.ceil((ssthresh * delivered) / (cwnd0 * mss)) * mss, mss);
    assert.ok(
      bytesOut <= allowed,
      `${bytesOut} bytes sent for ${delivered} delivered (PRR allows ${allowed})`,
    );
    assert.ok(
      bytesOut > allowed - 2 * mss,
      `${bytesOut} bytes sent for ${delivered} delivered (PRR allows ${allowed})`,
    );
  }
  assert.equal(b.count('tcp.ecn.reductions'), 1, 'one reduction per window');
  assert.equal(b.count('tcp.retransmits'), 0, 'a mark is no loss: nothing resent');
  assert.equal(sent.filter((s) => s.h.flags & CWR).length, 1, 'CWR on one segment');
  assert.ok(
    sent.every((s) => ecnField(s) === ECT0),
    'new data ECT(0)',
  );
  // Past the window's edge the reduction ends at ssthresh (tcp_end_cwnd_reduction).
  assert.ok(d.ecn & TcpEcn.CWR, 'still reducing at the edge');
  o.ackTo(add(sent[0]!.h.seq, sent[0]!.data.length));
  assert.equal(d.ecn & TcpEcn.CWR, 0, 'the reduction ended past its edge');
  assert.ok(d.cwnd >= ssthresh && d.cwnd <= ssthresh + mss, `cwnd ${d.cwnd} from ssthresh ${ssthresh}`);
  b.take();
  // Everything sent before the cut is ACKed: the next ECE starts another.
  o.ackTo(d.sndMax, ECE);
  assert.equal(b.count('tcp.ecn.reductions'), 2);
}

describe('ECN with loss', () => {
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

describe("ECN with a timeout (Linux's tcp_enter_loss queues CWR)", () => {
  /** An ECN server connection whose first flight timed out: the retransmission taken. */
  function timedOut() {
    const { o, b, d, flight } = sending();
    for (let ms = 0; ms < 3000 && b.count('tcp.rto') === 0; ms += 10) b.advance(10);
    assert.equal(b.count('tcp.rto'), 1, 'one timeout');
    const resent = dataSegs(b.take());
    assert.equal(resent.length, 1, 'the timeout resends snd.una');
    assert.equal(resent[0]!.h.seq, flight[0]!.h.seq);
    // A retransmission is not new data: CWR waits for new data (Linux's tcp_ecn_send).
    assert.equal(resent[0]!.h.flags & CWR, 0, 'no CWR on the retransmission');
    return { o, b, d, flight };
  }

  test('the first new data after a timeout carries CWR', () => {
    const { o, b, d, flight } = timedOut();
    // F-RTO step 2b: the ACK of the retransmission alone draws two new segments. A receiver that
    // echoed ECE before the timeout learns from their CWR that the window came down.
    o.ackTo(add(flight[0]!.h.seq, flight[0]!.data.length));
    const fresh = dataSegs(b.take()).filter((s) => (s.h.seq - flight.at(-1)!.h.seq) >>> 0 < 2 ** 31);
    assert.ok(fresh.length > 0, `new data after the timeout (cwnd ${d.cwnd})`);
    assert.ok(fresh[0]!.h.flags & CWR, 'CWR on the first new data after the timeout');
    assert.equal(fresh.filter((s) => s.h.flags & CWR).length, 1, 'CWR on one segment');
  });

  test('a timeout shown spurious withdraws its CWR (tcp_undo_cwnd_reduction), so no CWR goes', () => {
    const { o, b, d } = timedOut();
    // Every original arrived: the ACK of all of them undoes the timeout and its cut.
    o.ackTo(d.sndMax);
    assert.equal(b.count('tcp.rto.spurious'), 1, 'the timeout was spurious');
    const fresh = dataSegs(b.take());
    assert.ok(fresh.length > 0, 'new data after the undo');
    assert.ok(
      fresh.every((s) => (s.h.flags & CWR) === 0),
      'no CWR: the cut it would announce was undone',
    );
  });
});

/**
 * An ECN and SACK server connection with a window of 20 segments in flight (`segs` written), its
 * first flight taken; `ack` sends the peer's ACK up to `to` with `flags` and SACK blocks.
 */
function sackSending(segs: number) {
  const o = passiveOpen(new Bench(), { flags: SYN | ECE | CWR, sackPermitted: true });
  const { b, conn } = o;
  const d = conn.state.delegated;
  const m = 1460;
  d.cwnd = 20 * m;
  conn.write(bytes(segs * m));
  b.take();
  const ack = (to: number, flags = 0, sack?: [number, number][]): void =>
    b.inject({ flags: ACK | flags, seq: o.peerSeq, ack: to, window: 65535, sack });
  return { b, conn, d, m, una: d.sndUna, cwnd0: d.cwnd, ack };
}

describe('ECN with a needless recovery', () => {
  test("a recovery begun in an ECE's reduction, shown needless by a D-SACK, gives back no window (Linux's prior_ssthresh 0)", () => {
    const { b, conn, d, m, una, cwnd0, ack } = sackSending(20);
    // A mark: the reduction starts, cwnd left for PRR to bring down.
    ack(add(una, m), ECE);
    assert.equal(b.count('tcp.ecn.reductions'), 1);
    const ssthresh = d.ssthresh;
    assert.ok(ssthresh < cwnd0);
    // Segment 1 is only late: SACKs of 2-4 start a recovery inside the reduction, which resends it.
    for (let i = 2; i <= 4; i++) ack(add(una, m), 0, [[add(una, 2 * m), add(una, (i + 1) * m)]]);
    assert.ok(conn.state.soft.inRecovery, 'in recovery');
    assert.equal(b.count('tcp.fast_retransmits'), 1);
    b.take();
    // The original arrives, everything is ACKed, and the needless copy comes back as a D-SACK.
    const all = d.sndMax;
    ack(all);
    ack(all, 0, [[add(una, m), add(una, 2 * m)]]);
    assert.equal(b.count('tcp.undo.dsack'), 1, 'the recovery was needless');
    // Linux's tcp_enter_recovery in CWR leaves prior_ssthresh 0, so its undo restores nothing:
    // the mark's reduction stands.
    assert.equal(d.ssthresh, ssthresh, "ssthresh stays the mark's");
    assert.ok(d.cwnd <= ssthresh, `cwnd ${d.cwnd} not given back (was ${cwnd0}, ssthresh ${ssthresh})`);
  });
});

describe('ECN: an ECE forbids the undo of the recovery it comes in', () => {
  // Linux's tcp_fastretrans_alert zeroes prior_ssthresh on every ACK with ECE (its step A), and
  // tcp_enter_recovery keeps it 0 for a recovery an ECE's ACK starts: the undo that D-SACKs later
  // ask for then restores neither cwnd nor ssthresh (tcp_undo_cwnd_reduction).
  for (const when of ['on the ACK that starts it', 'on an ACK inside it'] as const)
    test(`an ECE ${when}: a needless recovery shown by a D-SACK gives back no window`, () => {
      const { b, conn, d, m, una, cwnd0, ack } = sackSending(40);
      ack(add(una, m));
      const ssthresh0 = d.ssthresh;
      // Segment 1 is only late: SACKs of 2-4 start a recovery, which resends it.
      for (let i = 2; i <= 4; i++) {
        const mark = when === 'on the ACK that starts it' && i === 4 ? ECE : 0;
        ack(add(una, m), mark, [[add(una, 2 * m), add(una, (i + 1) * m)]]);
      }
      assert.ok(conn.state.soft.inRecovery, 'in recovery');
      assert.equal(b.count('tcp.fast_retransmits'), 1);
      assert.equal(b.count('tcp.ecn.reductions'), 0, 'the recovery is the cut: no CWR reduction');
      if (when === 'on an ACK inside it') ack(add(una, m), ECE, [[add(una, 2 * m), add(una, 6 * m)]]);
      const ssthresh = d.ssthresh;
      assert.ok(ssthresh < cwnd0 && ssthresh < ssthresh0, `ssthresh ${ssthresh} cut (cwnd ${cwnd0})`);
      // Linux's tcp_init_cwnd_reduction queues CWR: the first new data after the cut says so.
      const edge = conn.state.soft.recoveryPoint;
      const sent = dataSegs(b.take()).filter((s) => (s.h.seq - edge) >>> 0 < 2 ** 31);
      assert.ok(sent.length > 0 && sent[0]!.h.flags & CWR, 'CWR on the first new data of the recovery');
      // The original arrives, everything is ACKed, and the needless copy comes back as a D-SACK.
      const all = d.sndMax;
      ack(all);
      ack(all, 0, [[add(una, m), add(una, 2 * m)]]);
      assert.equal(b.count('tcp.undo.dsack'), 1, 'the recovery was needless');
      assert.equal(d.ssthresh, ssthresh, 'ssthresh stays cut');
      assert.ok(d.cwnd <= ssthresh, `cwnd ${d.cwnd} not given back (was ${cwnd0}, ssthresh ${ssthresh})`);
    });

  test("an old ACK's ECE forbids nothing, SACK blocks or not (Linux's tcp_ack reads ECE after its old_ack jump)", () => {
    const { b, conn, d, m, una, ack } = sackSending(40);
    ack(add(una, m));
    const ssthresh0 = d.ssthresh;
    for (let i = 2; i <= 4; i++) ack(add(una, m), 0, [[add(una, 2 * m), add(una, (i + 1) * m)]]);
    assert.ok(conn.state.soft.inRecovery, 'in recovery');
    // Reordered from before the recovery: below snd.una, with ECE and a SACK block.
    ack(una, ECE, [[add(una, 2 * m), add(una, 3 * m)]]);
    b.take();
    const all = d.sndMax;
    ack(all);
    ack(all, 0, [[add(una, m), add(una, 2 * m)]]);
    assert.equal(b.count('tcp.undo.dsack'), 1, 'the recovery was needless');
    assert.equal(d.ssthresh, ssthresh0, 'ssthresh restored: the old ACK forbade no undo');
  });

  test('without an ECE the same needless recovery is undone whole (the cases above can fail)', () => {
    const { b, conn, d, m, una, ack } = sackSending(40);
    ack(add(una, m));
    const ssthresh0 = d.ssthresh;
    for (let i = 2; i <= 4; i++) ack(add(una, m), 0, [[add(una, 2 * m), add(una, (i + 1) * m)]]);
    assert.ok(conn.state.soft.inRecovery, 'in recovery');
    b.take();
    const all = d.sndMax;
    ack(all);
    ack(all, 0, [[add(una, m), add(una, 2 * m)]]);
    assert.equal(b.count('tcp.undo.dsack'), 1);
    assert.equal(d.ssthresh, ssthresh0, 'ssthresh restored');
  });
});

describe('ECN without SACK: duplicate ACKs in a reduction', () => {
  // Linux keeps a scoreboard for a peer without SACK from its duplicate ACKs: tcp_add_reno_sack
  // counts each as one segment delivered and out of the flight, and tcp_cwnd_reduction (CWR state)
  // sends ssthresh/prior-cwnd of that; the ACK that then moves snd.una counts what it ACKs less
  // those, at least one segment (tcp_remove_reno_sacks).
  test('each counts one segment delivered for PRR, and what goes stays within PRR', () => {
    const o = passiveOpen(new Bench(), { flags: SYN | ECE | CWR });
    const { b, conn } = o;
    const s = conn.state;
    const d = s.delegated;
    assert.equal(s.const.sackEnabled, false);
    const m = 1460;
    d.cwnd = 20 * m;
    conn.write(bytes(40 * m));
    const flight = dataSegs(b.take());
    assert.equal(flight.length, 20);
    const una = d.sndUna;
    const cwnd0 = d.cwnd;
    const ack = (to: number, flags = 0): void =>
      b.inject({ flags: ACK | flags, seq: o.peerSeq, ack: to, window: 65535 });
    // A mark on the ACK of the first segment: the reduction starts.
    ack(add(una, m), ECE);
    assert.equal(b.count('tcp.ecn.reductions'), 1);
    const ssthresh = d.ssthresh;
    const sent = dataSegs(b.take());
    // Two duplicates: segment 2 is late (a third would start a recovery).
    for (let i = 0; i < 2; i++) {
      ack(add(una, m), ECE);
      sent.push(...dataSegs(b.take()));
      assert.equal(s.soft.prrDelivered, (i + 2) * m, `PRR's delivered after duplicate ${i + 1}`);
    }
    assert.equal(s.soft.inRecovery, false);
    const bytesOut = sent.reduce((n, x) => n + x.data.length, 0);
    const allowed = Math.max(Math.ceil((ssthresh * 3 * m) / (cwnd0 * m)) * m, m);
    assert.ok(bytesOut <= allowed, `${bytesOut} bytes sent for 3 segments delivered (PRR allows ${allowed})`);
    // Segment 2 arrives: the ACK of 2-4 counts one segment, the other two were the duplicates.
    ack(add(una, 4 * m), ECE);
    assert.equal(s.soft.prrDelivered, 4 * m, "PRR's delivered after the ACK that moved snd.una");
    assert.equal(b.count('tcp.retransmits'), 0, 'nothing resent');
  });
});
