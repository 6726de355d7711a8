import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { flushDelayedAck } from '../../src/stack/tcp/index.ts';
import { seqDiff } from '../../src/stack/tcp/seq.ts';
import { MAX_REFUSED_RTOS } from '../../src/stack/tcp/tcp-timers.ts';
import { RCV_CLAMP_START } from '../../src/stack/tcp/tcp-window.ts';
import { type TcpCached, TcpStateId } from '../../src/state/tcp-state.ts';
import {
  ACK,
  activeOpen,
  add,
  Bench,
  bytes,
  type InjectOpts,
  LOCAL,
  openWithPeer,
  pastStart,
  REMOTE,
} from './harness.ts';

function open(synAck: Partial<InjectOpts> = {}, defaults: Partial<TcpCached> = {}) {
  const o = openWithPeer(synAck, defaults);
  return { ...o, data: (n: number, seed = 7) => o.deliver(bytes(n, seed)) };
}

describe('receiving', () => {
  test('delayed ACK: one segment waits delayedAckMs, the second full segment is ACKed at once', () => {
    const o = open({}, { delayedAckMs: 40 });
    pastStart(o.conn);
    o.data(1000);
    assert.equal(o.b.take().length, 0);
    o.b.advance(39);
    assert.equal(o.b.take().length, 0);
    o.b.advance(1);
    const [a] = o.b.take();
    assert.equal(a!.h.ack, add(o.peerSeq, 1000));
    o.data(1460);
    assert.equal(o.b.take().length, 0);
    o.data(1460);
    assert.equal(o.b.take()[0]!.h.ack, add(o.peerSeq, 3920));
  });

  test('flushDelayedAck sends a pending delayed ACK at once and clears its deadline', () => {
    const o = open({}, { delayedAckMs: 40 });
    pastStart(o.conn);
    o.data(100);
    assert.equal(o.b.take().length, 0);
    flushDelayedAck(o.conn);
    assert.equal(o.b.take()[0]!.h.ack, add(o.peerSeq, 100));
    assert.equal(o.conn.state.soft.delayedAckDeadline, Number.POSITIVE_INFINITY);
    o.b.advance(100);
    assert.equal(o.b.take().length, 0);
  });

  test('out-of-order data: immediate duplicate ACK with SACK blocks; hole fill ACKs everything', () => {
    const o = open({ sackPermitted: true });
    const base = o.peerSeq;
    const all = bytes(5000, 3);
    o.send({ seq: add(base, 1000), data: all.subarray(1000, 2000) });
    let [a] = o.b.take();
    assert.equal(a!.h.ack, base);
    assert.equal(a!.h.sackCount, 1);
    assert.deepEqual([...a!.h.sackBlocks.subarray(0, 2)], [add(base, 1000), add(base, 2000)]);
    o.send({ seq: add(base, 3000), data: all.subarray(3000, 4000) });
    [a] = o.b.take();
    assert.equal(a!.h.sackCount, 2);
    // Most recent block first (RFC 2018 4).
    assert.deepEqual(
      [...a!.h.sackBlocks.subarray(0, 4)],
      [add(base, 3000), add(base, 4000), add(base, 1000), add(base, 2000)],
    );
    // Overlapping duplicate is trimmed.
    o.send({ seq: add(base, 1500), data: all.subarray(1500, 3500) });
    o.b.take();
    o.send({ seq: base, data: all.subarray(0, 1500) });
    [a] = o.b.take();
    assert.equal(a!.h.ack, add(base, 4000));
    // No block left to SACK; the one block is the D-SACK of [1000, 1500), held and now received
    // again, as Linux's tcp_ofo_queue reports it.
    assert.equal(a!.h.sackCount, 1);
    assert.deepEqual([...a!.h.sackBlocks.subarray(0, 2)], [add(base, 1000), add(base, 1500)]);
    const got = new Uint8Array(4000);
    assert.equal(o.conn.read(got), 4000);
    assert.deepEqual(got, all.subarray(0, 4000));
  });

  test("receive window without scaling: whole segments of the peer's, never shrunk; zero window; its ACK when the reader lags; window update after read", () => {
    const o = open({ wscale: 0 }, { rcvBufSize: 8192 });
    pastStart(o.conn);
    // rcvBufSize 8192 needs no scaling: shift 0.
    assert.equal(o.conn.state.const.rcvWscale, 0);
    // The SYN offered 8192 in whole segments of ours (tcp_select_initial_window): 7300.
    assert.equal(seqDiff(o.conn.state.delegated.rcvAdv, o.conn.state.delegated.rcvNxt), 7300);
    o.data(1460);
    o.data(1460);
    // Two segments unread: the window offered now would be smaller than the last, so the ACK is
    // left to the read or the timer (Linux's __tcp_ack_snd_check); it keeps the edge.
    assert.deepEqual(o.b.take(), []);
    o.b.advance(40);
    // Linux's __tcp_select_window without scaling: the last offer (7300) is past the free space
    // (5272), so whole segments of the peer's (1460) are offered: 4380, the SYN's edge.
    assert.equal(o.b.take()[0]!.h.window, 4380);
    o.data(1000);
    o.b.advance(100);
    // 4272 free, in whole segments 2920: the right edge we offered must not move back.
    assert.equal(o.b.take().at(-1)!.h.window, 3380);
    for (const n of [1000, 1000, 1000, 380]) o.data(n);
    o.b.advance(100);
    // 892 free, less than one of the peer's segments: zero (receiver SWS avoidance).
    assert.equal(o.b.take().at(-1)!.h.window, 0);
    // Data beyond the window is not taken.
    o.send({ seq: o.seqAt(), data: bytes(100) });
    assert.equal(o.conn.readableLength, 7300);
    assert.equal(o.b.take().at(-1)!.h.window, 0);
    // Reading a little does not reopen the window: 992 free is less than one of the peer's
    // segments (receiver SWS avoidance)...
    o.conn.read(new Uint8Array(100));
    assert.equal(o.b.take().length, 0);
    // ...reading enough sends a window update: the whole buffer in segments of the peer's
    // estimate (1000: the last two alike, not pushed).
    o.conn.read(new Uint8Array(8192));
    const [wu] = o.b.take();
    assert.equal(o.conn.state.soft.rcvMss, 1000);
    assert.equal(wu!.h.window, 8000);
  });

  test('large buffers use the window scale we announced', () => {
    const o = open({ wscale: 2 }, { rcvBufSize: 1 << 20 });
    o.data(1460);
    o.b.advance(100);
    const [a] = o.b.take();
    // The buffer sets the scale (2^5); what is offered is the autotuning's starting clamp, as
    // Linux's (tcp-window.ts), not the whole buffer.
    assert.equal(a!.h.window, RCV_CLAMP_START / 32);
  });
});

describe('sending', () => {
  test('Nagle holds a small segment while data is unacknowledged; noDelay sends it', () => {
    const o = open();
    o.conn.write(bytes(100));
    assert.equal(o.b.take().length, 1);
    o.conn.write(bytes(100));
    assert.equal(o.b.take().length, 0, 'held by Nagle');
    o.send({ ack: add(o.iss, 101) });
    const [s] = o.b.take();
    assert.equal(s!.data.length, 100);
    o.conn.setNoDelay(true);
    o.conn.write(bytes(10));
    assert.equal(o.b.take().length, 1);
  });

  test('write returns what fits in sndBufSize; onWritable after ACK frees room', () => {
    const o = open({}, { sndBufSize: 4096 });
    assert.equal(o.conn.write(bytes(10_000)), 4096);
    assert.equal(o.conn.write(bytes(10)), 0);
    const segs = o.b.take();
    const last = segs.at(-1)!;
    assert.ok(!o.user.events.includes('writable'));
    o.send({ ack: add(last.h.seq, last.data.length) });
    assert.ok(o.user.events.includes('writable'));
    assert.ok(o.conn.writableLength < 4096);
  });

  test('RTO: exponential backoff, Karn (no sample from retransmission), ETIMEDOUT after maxRetransmits', () => {
    const o = open({}, { maxRetransmits: 3, minRtoMs: 200 });
    const rto0 = o.conn.state.delegated.rto;
    o.conn.write(bytes(100));
    const t0 = o.b.take()[0]!.at;
    o.b.advance(60_000);
    const times = o.b.take().map((s) => s.at - t0);
    assert.deepEqual(times, [rto0, 3 * rto0, 7 * rto0]);
    assert.equal(o.user.error?.code, 'ETIMEDOUT');
    assert.equal(o.b.count('tcp.retransmits'), 3);
  });

  test('RTO: a retransmission the local path refused does not double the RTO', () => {
    // Found by the duplex chaos seeds 143, 227, 249: connections whose timers fire together
    // overflow the host's own transmit queue each round, the same ones lose every time, and
    // doubling on each of those rounds left one ordinary loss later waiting 16 s.
    const o = open({}, { minRtoMs: 200 });
    const d = o.conn.state.delegated;
    const rto0 = d.rto;
    o.conn.write(bytes(100));
    const t0 = o.b.take()[0]!.at;
    let refusals = 3;
    o.b.env.ip.refuse = () => refusals-- > 0;
    o.b.advance(4 * rto0);
    assert.deepEqual(
      o.b.env.ip.refused.map((s) => s.at - t0),
      [rto0, 2 * rto0, 3 * rto0],
    );
    assert.equal(d.backoff, 1);
    const sent = o.b.take();
    assert.deepEqual(
      sent.map((s) => [s.at - t0, s.h.seq, s.data.length]),
      [[4 * rto0, add(o.iss, 1), 100]],
    );
    assert.equal(o.b.count('tcp.rto.refused'), 3);
    // The retransmission that left the host is an ordinary one: a loss now doubles as usual.
    o.b.advance(2 * rto0);
    assert.deepEqual(
      o.b.take().map((s) => s.at - t0),
      [6 * rto0],
    );
    assert.equal(d.backoff, 2);
    o.send({ ack: add(o.iss, 101) });
    assert.equal(d.sndUna, d.sndMax);
    // It covers a retransmission: no RTT sample (Karn), so the backoff stays.
    assert.equal(d.backoff, 2);
  });

  test('RTO: a path that refuses every retransmission resumes doubling and times out', () => {
    const o = open({}, { minRtoMs: 200, maxRetransmits: 3 });
    const rto0 = o.conn.state.delegated.rto;
    o.conn.write(bytes(100));
    const t0 = o.b.take()[0]!.at;
    o.b.env.ip.refuse = () => true;
    o.b.advance(60_000);
    const flat = Array.from({ length: MAX_REFUSED_RTOS + 1 }, (_, i) => (i + 1) * rto0);
    const last = flat.at(-1)!;
    assert.deepEqual(
      o.b.env.ip.refused.map((s) => s.at - t0),
      [...flat, last + 2 * rto0, last + 6 * rto0],
    );
    assert.equal(o.user.error?.code, 'ETIMEDOUT');
    assert.equal(o.b.take().length, 0);
  });

  test('Karn: an ACK after a retransmission gives no RTT sample', () => {
    const o = open();
    const srtt = o.conn.state.delegated.srtt;
    o.conn.write(bytes(100));
    o.b.advance(o.conn.state.delegated.rto + 1);
    assert.equal(o.b.take().length, 2);
    o.b.advance(500);
    o.send({ ack: add(o.iss, 101) });
    const d = o.conn.state.delegated;
    assert.equal(d.srtt, srtt);
    // RFC 6298 5: the backed-off RTO stays until a new RTT measurement, which only data sent and
    // acknowledged after it gives (Linux resets icsk_backoff in tcp_ack_update_rtt alone).
    const backoff = d.backoff;
    assert.ok(backoff > 0);
    o.b.take();
    o.conn.write(bytes(100));
    const sent = o.b.take().filter((x) => x.data.length > 0);
    assert.equal(sent.length, 1);
    assert.equal(d.rtxDeadline, sent[0]!.at + d.rto * 2 ** backoff, 'new data runs the backed-off RTO');
    o.b.advance(5);
    o.send({ ack: add(o.iss, 201) });
    assert.notEqual(d.srtt, srtt, 'new data acknowledged is a sample');
    assert.equal(d.backoff, 0, 'and it ends the backoff');
  });

  /** Four segments out on a 20 ms minimum RTO, none ACKed, until the RTO fired and resent the first. */
  function timedOut() {
    const b = new Bench();
    const o = activeOpen(b, { ts: [5000, 1001], sackPermitted: true, wscale: 7 }, { minRtoMs: 20 });
    const SEG = 1448;
    o.conn.write(bytes(4 * SEG));
    const first = b.take().filter((x) => x.data.length > 0);
    assert.equal(first.length, 4);
    const una = first[0]!.h.seq;
    const d = o.conn.state.delegated;
    for (let k = 0; k < 1000 && d.backoff === 0; k++) b.advance(1);
    assert.equal(d.backoff, 1, 'the RTO fired');
    const resent = b.take().filter((x) => x.data.length > 0 && x.h.seq === una);
    assert.equal(resent.length, 1);
    // The ACK of the first original, late: it echoes the TSval of a segment sent before the timeout.
    const staleAck = (): void =>
      b.inject({
        flags: ACK,
        seq: o.peerSeq,
        ack: add(una, SEG),
        srcPort: 80,
        dstPort: o.conn.localPort,
        ts: [5001, first[0]!.h.tsVal],
      });
    return { b, o, d, SEG, una, resent: resent[0]!, staleAck };
  }

  test('an echo from before the timeout, older than the backed-off RTO, leaves the backoff; a sample ends it (Linux tcp_ack_update_rtt)', () => {
    // A queue that fills (sim, 2 Mbit/s into 64 KiB: 260 ms) behind an RTO sized to its empty
    // RTT: the timer fires, and the ACKs of the originals queued before it echo timestamps older
    // than the timeout, so give no sample. Each of them had put the backoff back to 0: the RTO
    // never learnt the queue and fired again and again (a team of 10 duplex streams: 6,632
    // timeouts, 80 s for what the wire carries in 24 s).
    const { b, o, d, SEG, una, resent, staleAck } = timedOut();
    const srtt = d.srtt;
    const rto = d.rto;
    // The ACK comes just before the backed-off timer would fire: its echo is ~3 RTOs old.
    b.advance(2 * rto - 2);
    assert.equal(d.backoff, 1);
    staleAck();
    assert.equal(d.sndUna, add(una, SEG));
    assert.equal(b.count('tcp.rtt.stale-echo'), 1);
    assert.equal(d.srtt, srtt, 'no sample');
    assert.equal(d.backoff, 1, 'the backoff stays');
    assert.equal(d.rtxDeadline, b.env.clock.now() + 2 * rto, 'the timer runs the backed-off RTO');
    // An ACK echoing what was sent after the timeout is a sample: the RTO collapses (RFC 6298 5).
    b.advance(1);
    b.inject({
      flags: ACK,
      seq: o.peerSeq,
      ack: add(una, 2 * SEG),
      srcPort: 80,
      dstPort: o.conn.localPort,
      ts: [5002, resent.h.tsVal],
    });
    assert.notEqual(d.srtt, srtt);
    assert.equal(d.backoff, 0);
  });

  test('an echo from before the timeout within the backed-off RTO ends the backoff, as the sample Linux takes from it would', () => {
    const { b, d, staleAck } = timedOut();
    const srtt = d.srtt;
    b.advance(1);
    staleAck();
    assert.equal(b.count('tcp.rtt.stale-echo'), 1);
    assert.equal(d.srtt, srtt, 'no sample');
    assert.equal(d.backoff, 0);
  });

  test('fast retransmit after three duplicate ACKs (NewReno)', () => {
    const o = open({}, { congestion: 'newreno' });
    o.conn.write(bytes(10 * 1460));
    const segs = o.b.take();
    assert.equal(segs.length, 10);
    const una = add(o.iss, 1);
    o.send({ ack: add(una, 1460) });
    o.b.take();
    for (let i = 0; i < 2; i++) o.send({ ack: add(una, 1460) });
    assert.equal(o.b.take().filter((s) => s.data.length > 0 && s.h.seq === add(una, 1460)).length, 0);
    o.send({ ack: add(una, 1460) });
    const rtx = o.b.take().filter((s) => s.h.seq === add(una, 1460));
    assert.equal(rtx.length, 1);
    assert.equal(o.b.count('tcp.fast_retransmits'), 1);
    assert.equal(o.conn.state.soft.inRecovery, true);
    // Partial ACK retransmits the next hole (RFC 6582).
    o.send({ ack: add(una, 2 * 1460) });
    assert.ok(o.b.take().some((s) => s.h.seq === add(una, 2 * 1460)));
    o.send({ ack: add(una, 10 * 1460) });
    assert.equal(o.conn.state.soft.inRecovery, false);
  });

  test('SACK recovery retransmits holes only, never SACKed data', () => {
    const o = open({ sackPermitted: true });
    o.conn.write(bytes(10 * 1460));
    o.b.take();
    const una = add(o.iss, 1);
    const m = 1460;
    // Segments 0 and 3 lost; 1-2 and 4-9 SACKed.
    const sack = (ranges: [number, number][]) =>
      o.send({
        ack: una,
        sack: ranges.map(([l, r]) => [add(una, l * m), add(una, r * m)] as [number, number]),
      });
    sack([[1, 2]]);
    sack([[1, 3]]);
    sack([
      [4, 5],
      [1, 3],
    ]);
    sack([
      [4, 10],
      [1, 3],
    ]);
    const out = o.b.take().filter((s) => s.data.length > 0);
    const seqs = out.map((s) => (s.h.seq - una) / m);
    assert.ok(seqs.includes(0), `retransmitted ${seqs}`);
    assert.ok(seqs.includes(3), `retransmitted ${seqs}`);
    for (const k of [1, 2, 4, 5, 6, 7, 8, 9]) assert.ok(!seqs.includes(k), `SACKed segment ${k} resent`);
  });

  test('zero window: persist probes with backoff, connection survives, resumes when the window opens', () => {
    const o = open();
    o.send({ window: 0 });
    o.conn.write(bytes(500));
    assert.equal(o.b.take().length, 0);
    o.b.advance(200_000);
    const probes = o.b.take();
    assert.ok(probes.length >= 4);
    // Linux's probe (tcp_xmit_probe_skb): no data, at snd.una - 1.
    assert.ok(probes.every((p) => p.data.length === 0 && p.h.seq === add(o.iss, 0)));
    const gaps = probes.slice(1).map((p, i) => p.at - probes[i]!.at);
    assert.ok(gaps[1]! >= gaps[0]!, 'backoff');
    assert.equal(o.conn.state.delegated.state, TcpStateId.ESTABLISHED);
    o.send({ window: 65535, ack: add(o.iss, 1) });
    const rest = o.b.take().filter((s) => s.data.length > 0);
    assert.equal(
      rest.reduce((n, s) => n + s.data.length, 0),
      500,
      'all 500 bytes once the window opens',
    );
  });

  test('keepalive: probes after idle, ETIMEDOUT after keepCount unanswered', () => {
    const o = open({}, { keepAlive: false, keepIntvlMs: 1000, keepCount: 3 });
    o.conn.setKeepAlive(true, 10_000);
    o.b.advance(9_999);
    assert.equal(o.b.take().length, 0);
    o.b.advance(1);
    const [p] = o.b.take();
    assert.equal(p!.h.seq, add(o.iss, 0), 'probe uses snd.una - 1');
    // Answered: the counter resets.
    o.send({});
    o.b.advance(10_000);
    assert.equal(o.b.take().length, 1);
    o.b.advance(2_000);
    assert.equal(o.b.take().length, 2);
    assert.ok(!o.user.events.some((e) => e.startsWith('closed')));
    o.b.advance(1_000);
    assert.equal(o.user.error?.code, 'ETIMEDOUT');
  });

  test('ICMP frag-needed resegments outstanding data at the smaller MSS at once', () => {
    const o = open();
    o.conn.write(bytes(2920));
    const first = o.b.take();
    assert.equal(first[0]!.data.length, 1460);
    o.b.env.paths.get(REMOTE)!.cached.mtu = 1000;
    o.b.layer.icmpError({
      kind: 'frag-needed',
      code: 4,
      mtu: 1000,
      src: LOCAL,
      dst: REMOTE,
      srcPort: o.conn.localPort,
      dstPort: 80,
      seq: first[0]!.h.seq,
    });
    const again = o.b.take();
    assert.ok(again.length >= 3);
    assert.ok(again.every((s) => s.data.length <= 960));
    assert.equal(again[0]!.h.seq, add(o.iss, 1));
    // Errors quoting data we never sent are ignored (RFC 5927).
    o.b.layer.icmpError({
      kind: 'frag-needed',
      code: 4,
      mtu: 600,
      src: LOCAL,
      dst: REMOTE,
      srcPort: o.conn.localPort,
      dstPort: 80,
      seq: add(o.iss, 99_999),
    });
    assert.equal(o.b.take().length, 0);
    assert.equal(o.b.count('drop.tcp.icmp-bad-seq'), 1);
  });

  test('MSS announced from the path MTU; segments on a big MTU are not capped at 1460', () => {
    const b = new Bench({ mtu: 9000 });
    const o = activeOpen(b, { mss: 8960 });
    assert.equal(o.conn.state.const.localMss, 8960);
    b.take();
    o.conn.write(bytes(20_000));
    assert.equal(b.take()[0]!.data.length, 8960);
  });
});
