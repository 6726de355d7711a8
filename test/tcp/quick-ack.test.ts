/**
 * Quick-ACK mode and interactive (pingpong) connections, as Linux decides when a receiver's ACK
 * goes at once (src/stack/tcp/tcp-ack-mode.ts; test/conformance/ack.test.ts holds the cases that
 * run against the kernel too). Virtual time: every delay here is the clock's, not the machine's.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SeededRandom } from '../../src/core/random.ts';
import { seqDiff } from '../../src/stack/tcp/seq.ts';
import {
  RCV_CLAMP_START,
  rcvClampGrow,
  rcvMss,
  rcvRttFromEcho,
  rcvRttSample,
  rcvSpaceAdjust,
  selectWindow,
} from '../../src/stack/tcp/tcp-window.ts';
import { ByteRing } from '../../src/state/byte-ring.ts';
import { flattenTrees } from '../../src/state/offload-tree.ts';
import { DEFAULT_TCP_CACHED, type TcpCached, TcpStateId } from '../../src/state/tcp-state.ts';
import { sampleTrees } from '../state/helpers.ts';
import { assertSoftRefused, HANDOVERS, type Handover } from './handovers.ts';
import {
  ACK,
  activeOpen,
  add,
  Bench,
  bytes,
  FIN,
  type InjectOpts,
  PEER_ISN,
  PSH,
  passiveOpen,
  REMOTE,
  Recorder,
  SYN,
  sackBlocks,
} from './harness.ts';

function open(
  defaults: Partial<TcpCached> = {},
  synAck: Partial<InjectOpts> = {},
  options?: Partial<TcpCached>,
) {
  const bench = () => new Bench({ defaults: { delayedAckMs: 40, ...defaults } });
  const b = bench();
  const o = activeOpen(b, synAck, options);
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
    data: (n: number, flags: number = ACK) => {
      r.send({ flags, data: bytes(n, 7), seq: peerSeq, ack: r.conn.state.delegated.sndMax });
      peerSeq = add(peerSeq, n);
    },
    /** Segments of `n` bytes one at a time: how many drew an ACK at once. */
    acked: (count: number, n = 1000, flags: number = ACK) => {
      let k = 0;
      for (let i = 0; i < count; i++) {
        r.data(n, flags);
        if (r.b.take().length > 0) k++;
      }
      return k;
    },
    /** As `acked`, the application reading each segment at once (its ACK, if any, not counted). */
    ackedReading: (count: number, n: number) => {
      let k = 0;
      for (let i = 0; i < count; i++) {
        r.data(n);
        if (r.b.take().length > 0) k++;
        r.conn.read(new Uint8Array(n));
        r.b.take();
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
    // 11680 bytes of window in pairs of the peer's 1000-byte segments: 5 quick ACKs, then every
    // second segment.
    assert.equal(o.ackedReading(8, 1000), 5 + 1);
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

describe("the peer's segment size, as the receiver estimates it (Linux's rcv_mss)", () => {
  test("pushed small segments are no full segments: the ACK goes once more than one of the peer's full segments is unACKed", () => {
    const o = open();
    pastStart(o);
    assert.equal(o.conn.state.soft.rcvMss, 1000, "learned from the peer's 1000-byte segments");
    // 1000 bytes unACKed are not more than one segment; the 11th 100-byte segment passes it.
    assert.equal(o.acked(10, 100, ACK | PSH), 0);
    assert.equal(o.acked(1, 100, ACK | PSH), 1);
    // Segments of 700 with PSH: every second one passes 1000 bytes.
    assert.equal(o.acked(4, 700, ACK | PSH), 2);
  });

  test('two small segments of one size in a row, not pushed, teach it: then every second one is ACKed', () => {
    const o = open();
    pastStart(o);
    // Pushed 300-byte segments are remnants: three of them still wait (900 bytes).
    assert.equal(o.acked(3, 300, ACK | PSH), 0);
    o.b.advance(40);
    o.b.take();
    assert.equal(o.acked(2, 300), 1, 'the second alike sets the estimate to 300, and 600 bytes pass it');
    assert.equal(o.conn.state.soft.rcvMss, 300);
    assert.equal(o.acked(4, 300), 2);
  });

  // Linux measures out-of-order segments too (tcp_data_queue_ofo calls tcp_measure_rcv_mss, since
  // 6.17); test/conformance cannot show it against the kernel, whose every-second-segment ACK
  // waits on unread data (its window test) and whose read ACKs small segments anyway.
  test('out-of-order segments teach it as in-order ones do: two alike past a hole set it, and the in-order data after the hole is counted against it', () => {
    const o = open();
    pastStart(o);
    const hole = o.seqAt();
    // Two 400-byte segments past a 300-byte hole, each answered by a duplicate ACK.
    for (const at of [300, 700]) o.send({ seq: add(hole, at), data: bytes(400, 5) });
    assert.equal(o.b.take().length, 2);
    assert.equal(o.conn.state.soft.rcvMss, 400);
    // The hole: the ACK of everything at once (RFC 5681 4.2), learning nothing (300, not alike).
    o.send({ seq: hole, data: bytes(300, 5) });
    assert.equal(o.b.take()[0]?.h.ack, add(hole, 1100));
    // In order, sizes that teach nothing (below 400, none alike): 350 bytes wait, 710 pass 400.
    o.send({ seq: add(hole, 1100), data: bytes(350, 5) });
    assert.equal(o.b.take().length, 0);
    o.send({ seq: add(hole, 1450), data: bytes(360, 5) });
    assert.equal(o.b.take()[0]?.h.ack, add(hole, 1810));
  });

  // A FIN with no data is out-of-order data to Linux too (its sequence number counts: end_seq past
  // seq), so tcp_data_queue_ofo measures it as a zero-length segment, which ends a run of alike sizes.
  test('an out-of-order FIN with no data is measured too: a segment of the size before it is not taken as the second alike', () => {
    const o = open();
    pastStart(o);
    const hole = o.seqAt();
    o.send({ seq: add(hole, 400), data: bytes(400, 5) });
    o.send({ flags: FIN | ACK, seq: add(hole, 800) });
    assert.equal(o.b.take().length, 2, 'each answered by a duplicate ACK');
    // The hole, 400 bytes as the segment past it: not alike to the last one measured, the FIN.
    o.send({ seq: hole, data: bytes(400, 5) });
    assert.equal(o.conn.state.soft.rcvMss, 1000);
    assert.equal(o.b.take()[0]?.h.ack, add(hole, 801), 'the data and the FIN ACKed at once');
  });

  // Linux's tcp_data_queue queues a segment that overlaps rcv.nxt whole (queue_and_out) and
  // tcp_event_data_recv measures skb->len: the bytes we already had count toward its size.
  test('an in-order segment that overlaps data already here is measured whole, not by its new bytes', () => {
    const o = open();
    pastStart(o);
    const at = o.seqAt();
    o.send({ seq: at, data: bytes(400, 5) });
    // 200 old bytes and 200 new: the second 400-byte segment in a row.
    o.send({ seq: add(at, 200), data: bytes(400, 5) });
    assert.equal(o.conn.state.delegated.rcvNxt, add(at, 600));
    assert.equal(o.conn.state.soft.rcvMss, 400);
  });

  // Into an empty queue Linux takes a segment that ends past the window whole (tcp_sequence), and
  // measures it whole with its flags; Chimney's ring keeps only what fits, the size is the peer's.
  test('a segment trimmed to the buffer is measured as it came', () => {
    const o = open({ rcvBufSize: 512 });
    o.send({ flags: ACK | PSH, seq: o.seqAt(), data: bytes(612, 5) });
    assert.equal(o.conn.state.delegated.rcvNxt, add(o.seqAt(), 512), 'what fits the buffer is taken');
    assert.equal(o.conn.state.soft.rcvMss, 612);
  });

  // tcp_data_queue_ofo queues a bare FIN as an skb whose end_seq is one past it, and its SACK block
  // (tcp_sack_new_ofo_skb) ends there: with data before it, one block up to and over the FIN.
  test("the duplicate ACK for an out-of-order FIN SACKs the FIN's sequence number", () => {
    const o = open({}, { sackPermitted: true });
    pastStart(o);
    const hole = o.seqAt();
    o.send({ seq: add(hole, 400), data: bytes(400, 5) });
    o.send({ flags: FIN | ACK, seq: add(hole, 800) });
    const acks = o.b.take();
    assert.equal(acks.length, 2);
    assert.deepEqual(sackBlocks(acks[1]!), [[add(hole, 400), add(hole, 801)]]);
    o.send({ seq: hole, data: bytes(400, 5) });
    const [a] = o.b.take();
    assert.equal(a?.h.ack, add(hole, 801));
    assert.deepEqual(sackBlocks(a!), [], 'nothing held past the FIN');
    // A FIN with its data out of order: one block, the data and the FIN.
    const p = open({}, { sackPermitted: true });
    pastStart(p);
    const gap = p.seqAt();
    p.send({ flags: FIN | ACK, seq: add(gap, 100), data: bytes(300, 5) });
    assert.deepEqual(sackBlocks(p.b.take()[0]!), [[add(gap, 100), add(gap, 401)]]);
  });

  // tcp_sequence lets a FIN alone past the window's right edge in, but tcp_data_queue drops what
  // starts at or past the edge (out_of_window: quick-ACK mode, an ACK at once). The FIN is not kept.
  test('a FIN with no data at the right edge of the window is dropped and answered, not kept', () => {
    const o = open({ rcvBufSize: 8 * 1000 });
    pastStart(o);
    const d = o.conn.state.delegated;
    const at = o.seqAt();
    const edge = d.rcvAdv;
    assert.ok(seqDiff(edge, at) > 0 && seqDiff(edge, at) <= 8000);
    o.send({ flags: FIN | ACK, seq: edge });
    const [a] = o.b.take();
    assert.equal(a?.h.ack, at, 'answered at once');
    assert.equal(o.conn.state.soft.oooFin, false);
    // The window filled up to the edge: nothing past it was kept, the connection is still open.
    for (let s = at; s !== edge; ) {
      const n = Math.min(1000, seqDiff(edge, s));
      o.send({ seq: s, data: bytes(n, 5) });
      s = add(s, n);
    }
    assert.equal(d.rcvNxt, edge);
    assert.equal(d.finReceived, false);
    assert.equal(d.state, TcpStateId.ESTABLISHED);
  });

  test("a coalesced super-segment teaches the size of the peer's full segments, our MSS less the timestamp option (Linux measures GRO's gso_size)", () => {
    const b = new Bench({ defaults: { delayedAckMs: 40 } });
    const o = activeOpen(b, { ts: [1000, 0] });
    b.take();
    assert.equal(o.conn.state.const.tsEnabled, true);
    const full = o.conn.state.const.localMss - 12;
    let seq = o.peerSeq;
    let tsVal = 1001;
    const send = (n: number) => {
      b.inject({
        flags: ACK,
        srcPort: 80,
        dstPort: o.conn.localPort,
        seq,
        ack: add(o.iss, 1),
        ts: [tsVal++, 0],
        data: bytes(n, 3),
      });
      seq = add(seq, n);
      o.conn.read(new Uint8Array(n));
      return b.take().length;
    };
    send(3 * full);
    assert.equal(o.conn.state.soft.rcvMss, full);
    // A lone full segment after it is a full one: nothing owed to the read that empties the queue.
    for (let i = 0; i < 40; i++) send(full);
    send(full);
    assert.equal(o.conn.state.soft.ackPushed, 0);
  });

  test('the read that empties the queue of pushed small segments ACKs them at once (tcp_cleanup_rbuf)', () => {
    // A buffer the unscaled window covers whole, so no read opens the window enough to announce.
    const o = open({ rcvBufSize: 32 * 1024 });
    pastStart(o);
    assert.equal(o.acked(3, 100, ACK | PSH), 0);
    o.conn.read(new Uint8Array(200));
    assert.equal(o.b.take().length, 0, 'bytes still queued: no ACK yet');
    o.conn.read(new Uint8Array(200));
    const [a] = o.b.take();
    assert.equal(a?.h.ack, o.seqAt(), 'the read that emptied it ACKed all, before any timer');
  });

  test("quick ACKs are the window in pairs of the peer's segments, not ours (tcp_incr_quickack)", () => {
    const o = open({ rcvBufSize: 8 * 1460 });
    // 500-byte segments: before it has learned their size the estimate is Linux's starting 536
    // (tcp_initialize_rcv_mss), so 11680 bytes of window give 10 quick ACKs, not 11680 / 2920 = 4.
    assert.equal(o.ackedReading(10, 500), 10);
  });
});

describe("the ACK while the reader lags and the window it offers (Linux's __tcp_ack_snd_check, __tcp_select_window, tcp_cleanup_rbuf)", () => {
  // A buffer no larger than what the header can name, as a Linux socket with SO_RCVBUF: every
  // byte left unread shrinks the window the receiver would offer.
  const lagging = () => {
    const o = open({}, { wscale: 7 }, { rcvBufSize: 64_000 });
    pastStart(o);
    return o;
  };

  test('past its quick ACKs, segments left unread are not ACKed every second one: the delayed-ACK timer ACKs them', () => {
    const o = lagging();
    assert.equal(o.acked(4), 0, 'the window offered now would be smaller than the last');
    o.b.advance(40);
    const acks = o.b.take();
    assert.equal(acks.length, 1);
    assert.equal(acks[0]!.h.ack, o.seqAt());
  });

  test('the read ACKs them at once when more than one segment is owed; a reader that keeps up has every second segment ACKed by its reads', () => {
    const o = lagging();
    assert.equal(o.acked(4), 0);
    o.conn.read(new Uint8Array(4000));
    const [a] = o.b.take();
    assert.equal(a?.h.ack, o.seqAt(), 'the read ACKed all, before any timer');
    let byInput = 0;
    let byRead = 0;
    for (let i = 0; i < 6; i++) {
      o.data(1000);
      byInput += o.b.take().length;
      o.conn.read(new Uint8Array(4000));
      byRead += o.b.take().length;
    }
    assert.deepEqual([byInput, byRead], [0, 3]);
  });

  test('quick-ACK mode ends once less than half of the buffer is free: data sent again does not hurry the next ACK', () => {
    const o = lagging();
    o.acked(34);
    o.b.advance(40);
    o.b.take();
    // The last segment again: its ACK was lost, for the receiver (tcp_enter_quickack_mode)...
    o.send({ seq: add(o.seqAt(), -1000), data: bytes(1000, 7), ack: o.conn.state.delegated.sndMax });
    assert.equal(o.b.take().length, 1, 'answered at once');
    // ...but 34 000 of 64 000 bytes are unread, and the answer's window ended the mode.
    assert.equal(o.conn.state.soft.quickAcks, 0);
    assert.equal(o.acked(1), 0);
  });

  test("a shut window reopens only once a sixteenth of the buffer and one of the peer's segments are free (receiver silly window avoidance)", () => {
    const o = lagging();
    const d = o.conn.state.delegated;
    // Up to the edge offered: all unread.
    for (let room = d.rcvAdv - d.rcvNxt; room > 0; room = d.rcvAdv - d.rcvNxt)
      o.acked(1, Math.min(1000, room));
    o.b.advance(40);
    const [shut] = o.b.take();
    assert.equal(shut?.h.window, 0);
    // 3900 bytes free: more than three of the peer's segments, less than 64 000 / 16.
    o.conn.read(new Uint8Array(3900 - d.recvBuffer.free));
    assert.deepEqual(o.b.take(), [], 'no window update');
    o.conn.read(new Uint8Array(300));
    const [upd] = o.b.take();
    // Our shift is 0 (a 64 000-byte buffer): Linux's __tcp_select_window offers whole segments
    // of the peer's (1000) without a scale, 4000 of the 4200 free.
    assert.equal(upd?.h.window, 4000, "the update offers what is free, in whole segments of the peer's");
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
    ['rcvMss', 65496, true],
    ['ackPushed', 4, true],
  ];
  for (const [field, value, onWire] of bad) {
    test(`soft.${field} = ${String(value)} is refused by the validator, the encoder and the decoder`, () => {
      const o = open();
      o.data(100);
      assertSoftRefused(o.b.layer.release(o.conn), field, value, onWire);
    });
  }
});

describe('receive-buffer autotuning (Linux tcp_rcv_space_adjust, tcp_rcvbuf_grow, tcp_rcv_rtt_update)', () => {
  const RTT = 10;
  const SEG = 1000;

  /** Our wscale for the default 1 MiB buffer is 5; the peer's SYN-ACK offers scaling. */
  function tuned(defaults: Partial<TcpCached> = {}) {
    const o = open(defaults, { wscale: 7 });
    return { o, edges: [] as number[] };
  }

  /**
   * One RTT of a sender limited by our window: after RTT ms, it sends up to the right edge our
   * last ACK offered, in 1000-byte segments; the application reads `read` bytes after each
   * (Infinity: all of it). Our rcv.adv is recorded after each segment.
   */
  function round(t: ReturnType<typeof tuned>, read: number) {
    const { o } = t;
    o.b.advance(RTT);
    const d = o.conn.state.delegated;
    let room = seqDiff(d.rcvAdv, o.seqAt());
    while (room > 0) {
      const n = Math.min(SEG, room);
      o.data(n);
      room -= n;
      if (read > 0) o.conn.read(new Uint8Array(Math.min(read, d.recvBuffer.length)));
      t.edges.push(o.conn.state.delegated.rcvAdv);
    }
    o.b.take();
  }

  function offered(o: ReturnType<typeof open>): number {
    const d = o.conn.state.delegated;
    return seqDiff(d.rcvAdv, d.rcvNxt);
  }

  function neverBack(edges: number[]): void {
    for (let i = 1; i < edges.length; i++)
      assert.ok(seqDiff(edges[i]!, edges[i - 1]!) >= 0, `edge ${i} moved back`);
  }

  test("the first window is the SYN's (Linux's 64,240: 64 KiB in whole segments), within the starting clamp (64 KiB), not the whole buffer", () => {
    const { o } = tuned();
    assert.equal(o.conn.state.soft.rcvClamp, RCV_CLAMP_START);
    const syn = RCV_CLAMP_START - (RCV_CLAMP_START % o.conn.state.const.localMss);
    assert.equal(syn, 64_240);
    assert.equal(o.conn.state.soft.rcvSsthresh, syn, "the window's bound starts at the SYN's");
    // The handshake's ACK keeps the SYN's edge, named in the scale rounded up (the ring has room
    // for it), as Linux's ALIGN: 2008 << 5 = 64,256.
    const unit = 2 ** o.conn.state.const.rcvWscale;
    assert.equal(offered(o), Math.ceil(syn / unit) * unit);
    assert.equal(
      o.conn.state.soft.rcvSpace,
      10 * o.conn.state.const.localMss,
      'the measure to beat: ten segments',
    );
  });

  test('a reader that keeps up grows the window each RTT ahead of the sender, up to the buffer, and the edge never moves back', () => {
    const t = tuned();
    const o = t.o;
    const windows: number[] = [];
    for (let i = 0; i < 10; i++) {
      round(t, Number.POSITIVE_INFINITY);
      windows.push(offered(o));
    }
    assert.ok(
      Math.abs(o.conn.state.soft.rcvRtt - RTT) < 1e-9,
      `the receiver's RTT from the window: ${o.conn.state.soft.rcvRtt}`,
    );
    // By the third RTT the measure (a 64 KiB window read in one RTT) beats ten segments: the
    // clamp goes to twice it and more, and the window with it.
    assert.ok(windows[2]! > 2 * RCV_CLAMP_START, `windows ${windows.join(' ')}`);
    // Less the segment unread when the bound last grew: it grows within the free space (Linux's
    // tcp_space, counted with the segment just queued).
    assert.ok(windows.at(-1)! > (1 << 20) - 2 * SEG, `the whole buffer at last: ${windows.join(' ')}`);
    for (let i = 1; i < windows.length; i++)
      assert.ok(windows[i]! >= windows[i - 1]!, `windows ${windows.join(' ')}`);
    neverBack(t.edges);
  });

  // tcp_grow_window: below the clamp the window is bounded by rcv_ssthresh, which starts at the
  // SYN's window and grows by twice our MSS (or twice the segment, if larger) for each segment of
  // at least 128 bytes, within the clamp and the free space; each growth owes a quick ACK. On the
  // lab Linux's window went 65,160, 68,608, 71,680, 72,704 and later 74,752, 76,800, 79,872: an
  // ACK a segment, each about 2 x 1460 more. Random segment sizes, a reader that keeps up, a
  // sender limited by the window for ten RTTs, so the clamp grows (autotuning) under it.
  for (const seed of [1, 2, 3]) {
    test(`the window opens by at most twice our MSS a segment as Linux's rcv_ssthresh grows, each growth ACKed at once, and still reaches the buffer (seed ${seed})`, () => {
      const rnd = new SeededRandom(seed);
      const t = tuned();
      const o = t.o;
      const s = o.conn.state;
      const d = s.delegated;
      const unit = 2 ** s.const.rcvWscale;
      let last = offered(o);
      let since = 0;
      let steps = 0;
      for (let r = 0; r < 12; r++) {
        o.b.advance(RTT);
        // What the last round's ACKs offered: the sender hears of the rest an RTT later.
        for (let room = seqDiff(d.rcvAdv, o.seqAt()); room >= 128; ) {
          const n = Math.min(128 + (rnd.u32() % (s.const.localMss - 127)), room);
          room -= n;
          const before = s.soft.rcvSsthresh;
          o.data(n);
          since += 2 * Math.max(s.const.localMss, n);
          const acks = o.b.take();
          if (s.soft.rcvSsthresh > before) assert.equal(acks.length, 1, 'a growth is ACKed at once');
          o.conn.read(new Uint8Array(n));
          acks.push(...o.b.take());
          for (const a of acks) {
            const w = a.h.window * unit;
            assert.ok(
              w <= last + since + unit,
              `window ${w} after ${last}: more than ${since} in ${steps} steps`,
            );
            last = w;
            since = 0;
          }
          steps++;
        }
        assert.ok(s.soft.rcvSsthresh <= Math.max(s.soft.rcvClamp, 1), 'the bound stays within the clamp');
      }
      assert.ok(last > (1 << 20) - 2 * s.const.localMss, `the whole buffer at last (${last})`);
    });
  }

  test('a reader that reads less than ten segments an RTT leaves the clamp where it started', () => {
    const t = tuned();
    const o = t.o;
    // 500 bytes after each of the ~65 segments of a window is ~32 KB an RTT read at first; the
    // unread rest fills the buffer, and the window the sender is given shrinks with it.
    for (let i = 0; i < 8; i++) round(t, 100);
    assert.equal(o.conn.state.soft.rcvClamp, RCV_CLAMP_START);
    assert.ok(offered(o) <= RCV_CLAMP_START, `offered ${offered(o)}`);
    neverBack(t.edges);
  });

  test('a reader that does not read leaves the clamp where it started: each ACK offers no more than it', () => {
    const t = tuned();
    for (let i = 0; i < 4; i++) round(t, 0);
    assert.equal(t.o.conn.state.soft.rcvClamp, RCV_CLAMP_START);
    const o = offered(t.o);
    // Unread data counts against the ring (tcp-window.ts): the clamp's worth is offered again.
    assert.ok(o <= RCV_CLAMP_START && o > RCV_CLAMP_START - 2 * SEG, `offered ${o}`);
    neverBack(t.edges);
  });

  // tcp_data_queue_ofo grows rcv_ssthresh for out-of-order data only when SACK was agreed: an ACK
  // whose window changed is no duplicate to the sender (RFC 5681 2; Linux's FLAG_WIN_UPDATE), so a
  // growing window would keep a sender without SACK from its fast retransmit.
  for (const sack of [false, true]) {
    test(`out-of-order data ${sack ? 'grows' : 'does not grow'} the window's bound ${sack ? 'with' : 'without'} SACK: ${sack ? 'SACK blocks tell the sender' : 'its ACKs stay duplicates'}`, () => {
      const o = open({}, { wscale: 7, sackPermitted: sack });
      const s = o.conn.state;
      assert.equal(s.const.sackEnabled, sack);
      const before = s.soft.rcvSsthresh;
      assert.ok(before < s.soft.rcvClamp, 'room to grow');
      // The window of the handshake's ACK, as the sender read it.
      const first = offered(o) / 2 ** s.const.rcvWscale;
      const windows: number[] = [];
      for (let i = 1; i <= 3; i++) {
        o.send({ data: bytes(SEG, 7), seq: add(o.seqAt(), i * SEG) });
        const a = o.b.take();
        assert.equal(a.length, 1, 'each out-of-order segment is ACKed at once');
        assert.equal(a[0]!.h.ack, o.seqAt());
        windows.push(a[0]!.h.window);
      }
      if (sack) {
        assert.ok(s.soft.rcvSsthresh > before, 'grown');
      } else {
        assert.deepEqual(windows, [first, first, first], 'three duplicate ACKs, the window unchanged');
        assert.equal(s.soft.rcvSsthresh, before, 'not grown');
      }
    });
  }

  // The lock is read when the connection is made; the handshake's end, on whichever owner, acts
  // on it. A connection released while its SYN waits for an answer ends its handshake elsewhere
  // (as objects or a transfer record: the codec refuses a state before the handshake's end).
  const preMoves: [string, Handover][] = [
    ['objects', (s, _a, b) => Object.assign(s, { path: b.env.pathTo(REMOTE)! })],
    ...HANDOVERS.filter(([how]) => how !== 'the codec'),
  ];
  for (const [how, move] of preMoves) {
    test(`a socket's lock of its buffer travels with a connection moved before its handshake ends, by ${how}`, () => {
      for (const locked of [true, false]) {
        const bench = () => new Bench({ defaults: { delayedAckMs: 40, rcvBufSize: 1 << 20 } });
        const a = bench();
        const conn = a.layer.connect(
          { remoteIp: REMOTE, remotePort: 80, options: locked ? { rcvBufSize: 1 << 20 } : undefined },
          new Recorder(),
        );
        const iss = a.take()[0]!.h.seq;
        const b = bench();
        const moved = b.layer.adopt(move(a.layer.release(conn), a, b), new Recorder(), { prod: false });
        b.inject({
          flags: SYN | ACK,
          seq: PEER_ISN,
          ack: add(iss, 1),
          srcPort: 80,
          dstPort: moved.localPort,
          mss: 1460,
          wscale: 7,
        });
        assert.equal(
          moved.state.delegated.state,
          TcpStateId.ESTABLISHED,
          'the handshake ended on the new owner',
        );
        assert.equal(
          moved.state.soft.rcvClamp,
          locked ? 0 : RCV_CLAMP_START,
          locked ? 'locked: no clamp' : 'tuned',
        );
      }
    });
  }

  test('a layer with fixed receive buffers (Linux: SO_RCVBUF set) offers the whole buffer at once and does not tune it', () => {
    const b = new Bench({ defaults: { delayedAckMs: 40 } });
    b.layer.fixedRcvBuf = true;
    const o = activeOpen(b, { wscale: 7 });
    const ack = b.take().at(-1)!;
    assert.equal(ack.h.window * 2 ** o.conn.state.const.rcvWscale, 1 << 20);
    assert.equal(o.conn.state.soft.rcvClamp, 0);
  });

  test('a socket that sets its receive buffer is not tuned (Linux: SO_RCVBUF locks it); the layer’s default does not lock', () => {
    const MiB = 1 << 20;
    // The layer's default buffer is a MiB too: only naming it on the socket locks it.
    const bench = () => new Bench({ defaults: { delayedAckMs: 40, rcvBufSize: MiB } });
    const scaled = (o: { conn: { state: { const: { rcvWscale: number } } } }, w: number) =>
      w * 2 ** o.conn.state.const.rcvWscale;
    const free = activeOpen(bench(), { wscale: 7 });
    assert.equal(free.conn.state.soft.rcvClamp, RCV_CLAMP_START, 'the default buffer: tuned');
    const syn = 44 * free.conn.state.const.localMss;
    // The SYN's edge, named in the scale rounded up (Linux's ALIGN).
    const unit = 2 ** free.conn.state.const.rcvWscale;
    assert.equal(scaled(free, free.b.take().at(-1)!.h.window), Math.ceil(syn / unit) * unit);
    const locked = activeOpen(bench(), { wscale: 7 }, { rcvBufSize: MiB });
    assert.equal(locked.conn.state.soft.rcvClamp, 0, 'connect with rcvBufSize: no clamp');
    assert.equal(scaled(locked, locked.b.take().at(-1)!.h.window), MiB, 'the whole buffer offered at once');
    const lockedListener = passiveOpen(bench(), { wscale: 7 }, { rcvBufSize: MiB });
    assert.equal(lockedListener.conn.state.soft.rcvClamp, 0, 'listen with rcvBufSize: no clamp');
    assert.equal(passiveOpen(bench(), { wscale: 7 }).conn.state.soft.rcvClamp, RCV_CLAMP_START);
    // A NIC's listener takes its host listener's settings whole (NicListenSpec.cached), buffer
    // size included: the lock those settings carry decides, not the size being named.
    const settings = (rcvBufLocked: boolean) => ({ ...DEFAULT_TCP_CACHED, rcvBufSize: MiB, rcvBufLocked });
    assert.equal(
      passiveOpen(bench(), { wscale: 7 }, settings(false)).conn.state.soft.rcvClamp,
      RCV_CLAMP_START,
    );
    assert.equal(passiveOpen(bench(), { wscale: 7 }, settings(true)).conn.state.soft.rcvClamp, 0);
  });

  test('a buffer smaller than the starting clamp is the clamp from the start', () => {
    const t = tuned({ rcvBufSize: 32 * 1024 });
    assert.equal(t.o.conn.state.soft.rcvClamp, 32 * 1024);
    for (let i = 0; i < 6; i++) round(t, Number.POSITIVE_INFINITY);
    assert.equal(t.o.conn.state.soft.rcvClamp, 32 * 1024);
    assert.ok(offered(t.o) <= 32 * 1024, `offered ${offered(t.o)}`);
  });

  test('with timestamps, an echo of at least a segment samples the RTT; a window-filled sample never raises it', () => {
    const o = open({}, { wscale: 7 });
    const s = o.conn.state;
    // Timestamps are off here (no TS option in the SYN-ACK): only the window measure runs.
    assert.equal(s.const.tsEnabled, false);
    s.soft.rcvRtt = 0;
    rcvRttSample(s, 8, true);
    assert.equal(s.soft.rcvRtt, 8, 'the first sample whole');
    rcvRttSample(s, 20, true);
    assert.equal(s.soft.rcvRtt, 8, 'a larger window sample is not taken');
    rcvRttSample(s, 16, false);
    assert.equal(s.soft.rcvRtt, 8 * (7 / 8) + 16 / 8, 'a larger echo sample is averaged in, 1/8');
    rcvRttSample(s, 2, true);
    assert.equal(s.soft.rcvRtt, 2, 'a smaller one of either kind is taken whole');
    o.data(SEG);
    rcvRttSample(s, 40, false);
    assert.equal(s.soft.rcvRtt, 2, 'not while unread data waits: its lateness is the reader’s');
    const mss = rcvMss(s);
    rcvRttFromEcho(s, 500, 3, mss - 1);
    assert.equal(s.soft.rcvRtt, 2, 'a segment below the peer’s size is no sample');
    rcvRttFromEcho(s, 501, 0, mss);
    assert.equal(s.soft.rcvRtt, 2, 'a delta of 0 ms is none');
    rcvRttFromEcho(s, 502, 1, mss);
    assert.equal(s.soft.rcvRtt, 1);
    rcvRttFromEcho(s, 502, 0.5, mss);
    assert.equal(s.soft.rcvRtt, 1, 'one sample per echoed value');
  });

  test('the growth: twice what was read in an RTT, plus twice its growth in proportion, within the buffer; never down', () => {
    const o = open({}, { wscale: 7 });
    const s = o.conn.state;
    assert.equal(s.soft.rcvSpace, 14_600);
    rcvClampGrow(s, 30_000);
    // 2 * 30000 = 60000, grown by (30000 - 14600) / 14600 of it, twice: 2 * floor(60000 * 15400 / 14600).
    assert.equal(s.soft.rcvClamp, 60_000 + 2 * Math.floor((60_000 * 15_400) / 14_600));
    assert.equal(s.soft.rcvSpace, 30_000);
    rcvClampGrow(s, 30_000);
    assert.equal(s.soft.rcvClamp, 186_574, 'a steady rate: twice it is less than the clamp, which stays');
    rcvClampGrow(s, 400_000);
    assert.equal(s.soft.rcvClamp, 1 << 20, 'the buffer caps it (Linux: tcp_rmem[2])');
  });

  test('the measure waits an RTT, counts what was read less what is still unread, and only a better one grows the clamp', () => {
    const o = open({}, { wscale: 7 });
    const s = o.conn.state;
    const now = () => o.b.env.clock.now();
    s.soft.rcvRtt = 10;
    const start = s.soft.rcvSpaceAt;
    for (let i = 0; i < 40; i++) o.data(SEG);
    o.conn.read(new Uint8Array(40 * SEG));
    assert.equal(s.soft.rcvSpaceAt, start, 'less than an RTT since the measure began: none');
    assert.equal(s.soft.rcvClamp, RCV_CLAMP_START);
    o.b.advance(10);
    for (let i = 0; i < 4; i++) o.data(SEG);
    rcvSpaceAdjust(s, now());
    // 40000 read, 4000 unread: 36000 beats 14600.
    assert.equal(s.soft.rcvSpace, 36_000);
    assert.equal(s.soft.rcvSpaceAt, now());
    const clamp = s.soft.rcvClamp;
    assert.equal(clamp, 72_000 + 2 * Math.floor((72_000 * 21_400) / 14_600), 'grown from the measure');
    o.b.advance(10);
    o.conn.read(new Uint8Array(4 * SEG));
    assert.equal(s.soft.rcvSpace, 36_000, '4000 in the next RTT is no better');
    assert.equal(s.soft.rcvClamp, clamp);
    assert.equal(s.soft.rcvSpaceAt, now(), 'a new measure starts all the same');
  });

  for (const [how, move] of [
    ['objects', ((s, _a, b) => Object.assign(s, { path: b.env.pathTo(REMOTE)! })) as Handover] as const,
    ...HANDOVERS,
  ]) {
    test(`moved host -> NIC -> host by ${how}: the grown clamp and the receiver's RTT go with it`, () => {
      const t = tuned();
      for (let i = 0; i < 4; i++) round(t, Number.POSITIVE_INFINITY);
      const before = { ...t.o.conn.state.soft };
      assert.ok(before.rcvClamp > 2 * RCV_CLAMP_START, `clamp ${before.rcvClamp}`);
      t.o.move(move);
      const soft = t.o.conn.state.soft;
      assert.equal(soft.rcvClamp, before.rcvClamp);
      assert.equal(soft.rcvSpace, before.rcvSpace);
      assert.equal(soft.rcvRtt, before.rcvRtt);
      assert.equal(soft.rcvSpaceSeq, before.rcvSpaceSeq);
      round(t, Number.POSITIVE_INFINITY);
      assert.ok(offered(t.o) > 2 * RCV_CLAMP_START, `offered after the move: ${offered(t.o)}`);
      neverBack(t.edges);
    });
  }
});

describe('the window of a ring smaller than the socket buffer', () => {
  test('an empty shared ring below a sixteenth of rcvBufSize still offers itself once the clamp passes twice it', () => {
    // A worker's connection keeps the fixed shared ring it was placed with (here 64,224 bytes)
    // while its socket's buffer (rcvBufSize) is 1 MiB and autotuning grew the clamp past twice the
    // ring. The silly-window rule measured the free space against rcvBufSize / 16 (65,536), so
    // the empty ring offered 0 for ever and the peer's data stopped (send-ring-grow's WorkerNic case).
    const s = flattenTrees(sampleTrees(1))[0]!;
    const ring = ByteRing.createShared(64_224);
    Object.assign(s.delegated, { recvBuffer: ring });
    Object.assign(s.cached, { rcvBufSize: 1 << 20 });
    Object.assign(s.const, { rcvWscale: 5 });
    Object.assign(s.soft, { rcvClamp: 430_114, rcvSsthresh: 64_240 });
    assert.equal(ring.free, 64_224);
    assert.equal(selectWindow(s), 64_224 - (64_224 % 32), 'the whole empty ring, in units of the scale');
    // Less than half of it free and less than a sixteenth of the ring: nothing (the rule itself).
    ring.write(new Uint8Array(64_224 - 2_000));
    assert.equal(selectWindow(s), 0);
  });
});
