import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { rttSample } from '../../src/stack/tcp/rtt.ts';
import { tsNow } from '../../src/stack/tcp/tcp-output.ts';
import { createNeighborState } from '../../src/state/neighbor-state.ts';
import { createPathState } from '../../src/state/path-state.ts';
import { TcpStateId } from '../../src/state/tcp-state.ts';
import { sampleConn } from '../state/helpers.ts';
import { ACK, activeOpen, add, Bench, bytes, PEER_ISN, REMOTE, Recorder, SYN, tsoBench } from './harness.ts';

describe('timers and windows (issue 11)', () => {
  test('RFC 6298 5.7: after a lost SYN the RTO starts at 3 s once the handshake completes', () => {
    const b = new Bench();
    const conn = b.layer.connect({ remoteIp: REMOTE, remotePort: 80 }, new Recorder());
    const syn = b.take()[0]!;
    b.advance(1001);
    assert.equal(b.take().length, 1, 'the SYN went again');
    b.inject({
      flags: SYN | ACK,
      seq: PEER_ISN,
      ack: add(syn.h.seq, 1),
      srcPort: 80,
      dstPort: conn.localPort,
      mss: 1460,
    });
    assert.equal(conn.state.delegated.state, TcpStateId.ESTABLISHED);
    assert.equal(conn.state.delegated.rto, 3000);
  });

  test('RFC 7323 appendix G: with a sample per ACK, RTTVAR moves by beta / ExpectedSamples; SRTT by 1/8 as Linux', () => {
    const nb = createNeighborState({ srcMac: 1, vlanId: -1, ip: 2 });
    const s = sampleConn(createPathState({ localIp: 1, remoteIp: 2 }, nb, 0, 1500));
    s.delegated.srtt = 100;
    s.delegated.rttvar = 10;
    rttSample(s, 200, 10);
    assert.equal(s.delegated.rttvar, (1 - 0.25 / 10) * 10 + (0.25 / 10) * 100);
    assert.equal(s.delegated.srtt, (1 - 0.125) * 100 + 0.125 * 200);
  });

  test('an ACK that echoes a segment sent before a timeout is no RTT sample', () => {
    const b = new Bench();
    const o = activeOpen(b, { sackPermitted: true, ts: [1000, tsNow(b.env.clock.now())] });
    b.take();
    const port = o.conn.localPort;
    const una = add(o.iss, 1);
    o.conn.write(bytes(1460));
    const first = b.take().filter((s) => s.data.length > 0)[0]!;
    b.advance(10);
    b.inject({
      flags: ACK,
      seq: o.peerSeq,
      ack: add(una, 1460),
      ts: [1001, first.h.tsVal],
      dstPort: port,
      srcPort: 80,
    });
    const srtt = o.conn.state.delegated.srtt;
    assert.ok(srtt < 15, `srtt ${srtt}`);
    o.conn.write(bytes(1460));
    const second = b.take().filter((s) => s.data.length > 0)[0]!;
    b.advance(250);
    assert.equal(b.count('tcp.rto'), 1);
    // The original arrived and its ACK was lost; the retransmission draws a duplicate ACK that
    // echoes the original's timestamp (TS.Recent), 260 ms old.
    b.inject({
      flags: ACK,
      seq: o.peerSeq,
      ack: add(una, 2920),
      ts: [1002, second.h.tsVal],
      dstPort: port,
      srcPort: 80,
    });
    assert.equal(o.conn.state.delegated.sndUna, add(una, 2920));
    assert.equal(o.conn.state.delegated.srtt, srtt, 'the stale echo left srtt alone');
    assert.equal(o.conn.state.delegated.rto, 200);
  });

  test('after a timeout, a retransmission lost again is resent once RACK sees a later one delivered', () => {
    const b = new Bench();
    const o = activeOpen(b, { sackPermitted: true });
    b.take();
    const port = o.conn.localPort;
    const m = 1460;
    const una = add(o.iss, 1);
    const ack = (n: number, sack?: [number, number][]) =>
      b.inject({ flags: ACK, seq: o.peerSeq, ack: add(una, n * m), srcPort: 80, dstPort: port, sack });
    const at = (n: number) => add(una, n * m);
    // One round trip of 10 ms first: RACK's minimum RTT.
    o.conn.write(bytes(m));
    b.take();
    b.advance(10);
    ack(1);
    o.conn.write(bytes(10 * m));
    assert.equal(b.take().filter((s) => s.data.length > 0).length, 10);
    b.advance(250);
    assert.equal(b.count('tcp.rto'), 1);
    b.take();
    // F-RTO aside (its probe with new data is tested elsewhere): the loss is real.
    o.conn.state.soft.frto = 0;
    b.advance(10);
    ack(2);
    // Slow start resends segments 2 and 3, then, on the ACK of 2, the next ones.
    assert.deepEqual(
      b
        .take()
        .filter((s) => s.data.length > 0)
        .map((s) => s.h.seq),
      [at(2), at(3)],
    );
    b.advance(10);
    ack(3);
    const burst = b
      .take()
      .filter((s) => s.data.length > 0)
      .map((s) => s.h.seq);
    assert.equal(burst[0], at(4));
    // Segment 3's second copy is lost; the later burst arrives and is SACKed.
    b.advance(10);
    ack(3, [[at(4), at(4 + burst.length)]]);
    const again = b.take().filter((s) => s.data.length > 0);
    assert.equal(again[0]?.h.seq, at(3), 'segment 3 resent without waiting for a second timeout');
    assert.equal(b.count('tcp.rto'), 1);
  });

  test('RFC 3042 limited transmit: the first two duplicate ACKs each let one new segment out', () => {
    const b = new Bench();
    const o = activeOpen(b, {});
    b.take();
    o.conn.write(bytes(30 * 1460));
    const first = b.take().filter((s) => s.data.length > 0);
    const una = add(o.iss, 1);
    const dup = () =>
      b.inject({ flags: ACK, seq: o.peerSeq, ack: una, srcPort: 80, dstPort: o.conn.localPort });
    dup();
    const one = b.take().filter((s) => s.data.length > 0);
    assert.equal(one.length, 1);
    assert.equal(one[0]!.h.seq, add(una, first.length * 1460), 'new data, not a retransmission');
    dup();
    assert.equal(b.take().filter((s) => s.data.length > 0).length, 1);
  });

  test('a peer that shuts its window and goes silent is given up after maxRetransmits probes', () => {
    const b = new Bench();
    const o = activeOpen(b, {}, { maxRetransmits: 6 });
    b.take();
    b.inject({
      flags: ACK,
      seq: o.peerSeq,
      ack: add(o.iss, 1),
      window: 0,
      srcPort: 80,
      dstPort: o.conn.localPort,
    });
    o.conn.write(bytes(5000));
    for (let i = 0; i < 100 && o.conn.state.delegated.state !== TcpStateId.CLOSED; i++) b.advance(30_000);
    assert.equal(o.conn.state.delegated.state, TcpStateId.CLOSED);
    assert.equal(o.user.error?.code, 'ETIMEDOUT');
    assert.ok(b.count('tcp.persist.probes') <= 7, `${b.count('tcp.persist.probes')} probes`);
  });

  test('a peer that answers every probe with a zero window is kept', () => {
    const b = new Bench();
    const o = activeOpen(b, {}, { maxRetransmits: 6 });
    b.take();
    const port = o.conn.localPort;
    b.inject({ flags: ACK, seq: o.peerSeq, ack: add(o.iss, 1), window: 0, srcPort: 80, dstPort: port });
    o.conn.write(bytes(5000));
    for (let i = 0; i < 3000; i++) {
      b.advance(100);
      if (b.take().length > 0) {
        b.inject({ flags: ACK, seq: o.peerSeq, ack: add(o.iss, 1), window: 0, srcPort: 80, dstPort: port });
      }
    }
    assert.equal(o.conn.state.delegated.state, TcpStateId.ESTABLISHED);
    assert.ok(b.count('tcp.persist.probes') > 6, 'more probes than the limit, all answered');
  });
});

describe('retransmission with segmentation offload', () => {
  test('a window below the largest super-segment goes out as one packet (Linux TSO sizing)', () => {
    const b = tsoBench();
    // A peer offering 8 MB (window 65535 << 7): the bound at half its largest window stays out of the way.
    const o = activeOpen(b, { sackPermitted: true, wscale: 7, window: 65535 });
    b.take();
    o.conn.state.delegated.cwnd = 20 * 1460;
    o.conn.write(bytes(100 * 1460));
    const out = b.take().filter((s) => s.data.length > 0);
    // Loss on a veth takes whole packets: a window in one packet is one chance of loss, not four.
    assert.deepEqual(
      out.map((s) => s.data.length),
      [20 * 1460],
    );
    // A larger window: the largest super-segment that fits 64 KB (44 MSS), no more.
    o.conn.state.delegated.cwnd = 100 * 1460;
    b.inject({
      flags: ACK,
      seq: o.peerSeq,
      ack: add(o.iss, 1 + 20 * 1460),
      window: 65535,
      srcPort: 80,
      dstPort: o.conn.localPort,
    });
    const more = b.take().filter((s) => s.data.length > 0);
    assert.equal(more[0]?.data.length, 44 * 1460);
  });

  test('a sliver of window waits for the next ACK, and the data goes in a larger piece (tcp_tso_should_defer)', () => {
    const b = tsoBench();
    const m = 1460;
    const o = activeOpen(b, { sackPermitted: true, window: 20 * m });
    b.take();
    o.conn.state.delegated.cwnd = 100 * m;
    o.conn.write(bytes(100 * m));
    const first = b.take().filter((s) => s.data.length > 0);
    assert.equal(
      first.reduce((n, s) => n + s.data.length, 0),
      20 * m,
      'the window went out whole',
    );
    const ack = (n: number): void =>
      b.inject({
        flags: ACK,
        seq: o.peerSeq,
        ack: add(o.iss, 1 + n * m),
        window: 20 * m,
        srcPort: 80,
        dstPort: o.conn.localPort,
      });
    // Two segments of window open, with the rest of the window still in flight: no piece of two.
    ack(2);
    assert.deepEqual(
      b.take().filter((s) => s.data.length > 0),
      [],
      'two segments of window wait for the next ACK',
    );
    // The next ACK opens six: they go as one piece.
    ack(6);
    assert.deepEqual(
      b
        .take()
        .map((s) => s.data.length)
        .filter((n) => n > 0),
      [6 * m],
    );
    // Everything acknowledged: nothing left in flight to bring an ACK, so a sliver goes at once.
    ack(20);
    const rest = b.take().filter((s) => s.data.length > 0);
    assert.ok(rest.length > 0, 'data follows an ACK of everything');
  });

  test('a super-segment is at most half the largest window the peer offered (tcp_bound_to_half_wnd)', () => {
    const b = tsoBench();
    // No window scaling: the peer offers at most 64 KB, so packets of 22 MSS (32,120 B), not 44.
    const o = activeOpen(b, { sackPermitted: true, window: 65535 });
    b.take();
    o.conn.state.delegated.cwnd = 100 * 1460;
    o.conn.write(bytes(100 * 1460));
    const out = b.take().filter((s) => s.data.length > 0);
    assert.ok(out.length >= 2, `${out.length} packets`);
    assert.equal(Math.max(...out.map((s) => s.data.length)), 22 * 1460);
  });

  test('lost ranges go out again as super-segments, as Linux does with TSO', () => {
    const b = tsoBench();
    const o = activeOpen(b, { sackPermitted: true });
    b.take();
    // A window past its start (a small one after heavy loss resends MSS by MSS).
    o.conn.state.delegated.cwnd = 40 * 1460;
    o.conn.write(bytes(40 * 1460));
    const first = b.take().filter((s) => s.data.length > 0);
    assert.ok(
      first.some((s) => s.data.length > 1460),
      'new data went as super-segments',
    );
    const una = add(o.iss, 1);
    const m = 1460;
    // The first four segments are lost; the rest of the window is SACKed.
    b.inject({
      flags: ACK,
      seq: o.peerSeq,
      ack: una,
      srcPort: 80,
      dstPort: o.conn.localPort,
      sack: [[add(una, 4 * m), add(una, 10 * m)]],
    });
    const rtx = b.take().filter((s) => s.data.length > 0 && s.h.seq === una);
    assert.equal(rtx.length, 1);
    assert.equal(rtx[0]!.data.length, 4 * m, 'the whole lost range in one super-segment');
  });
});
