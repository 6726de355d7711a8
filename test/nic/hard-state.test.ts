import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { StateValidationError } from '../../src/core/errors.ts';
import {
  allocConnBlock,
  CONN_SLAB_BYTES,
  connRingCapacities,
  emptyHardState,
  HARD_STATE_BYTES,
  HARD_STATE_LAYOUT,
  HardStateRecord,
  hardStateOf,
  keepReleasedBlocks,
  RING_BUDGET_BYTES,
  RING_FLOOR_BYTES,
  rebuildTcpState,
  ringGrowLimit,
  ringUnderLoad,
  sendRingAtPlacement,
  TRANSFER_RECORD_AT,
  takeReleasedBlock,
  W_LAYOUT,
} from '../../src/nic/hard-state.ts';
import { connKeyId, keyOfState } from '../../src/nic/nic.ts';
import { ByteRing } from '../../src/state/byte-ring.ts';
import { createNeighborState } from '../../src/state/neighbor-state.ts';
import { createPathState } from '../../src/state/path-state.ts';
import { sharedRingBytes } from '../../src/state/shared-ring.ts';
import {
  createTcpState,
  DEFAULT_TCP_CACHED,
  type RackPathState,
  rackPathDefaults,
  resetTcpState,
  type TcpState,
  TcpStateId,
} from '../../src/state/tcp-state.ts';
import { ACK, activeOpen, add, Bench, bytes, passiveOpen, REMOTE, Recorder } from '../tcp/harness.ts';

function established(): { s: TcpState; block: ReturnType<typeof allocConnBlock> } {
  const nb = createNeighborState({ srcMac: 0x020000000001, vlanId: -1, ip: 0x0a000002 }, 0x020000000002, 0);
  const path = createPathState({ localIp: 0x0a000001, remoteIp: 0x0a000002 }, nb, 0, 1500);
  const s = createTcpState(
    {
      localIp: 0x0a000001,
      localPort: 40000,
      remoteIp: 0x0a000002,
      remotePort: 80,
      tsEnabled: true,
      sackEnabled: true,
      wsEnabled: true,
      sndWscale: 7,
      rcvWscale: 5,
      remoteMss: 1460,
      localMss: 1400,
    },
    DEFAULT_TCP_CACHED,
    path,
  );
  const block = allocConnBlock(4096, 8192);
  const d = s.delegated;
  d.sendBuffer = ByteRing.createShared(block.send.capacity, block.send);
  d.recvBuffer = ByteRing.createShared(block.recv.capacity, block.recv);
  d.state = TcpStateId.ESTABLISHED;
  d.iss = 0xfffffff0;
  d.irs = 1000;
  // 3000 bytes queued, 2000 of them in flight, across the sequence wrap.
  d.sendBuffer.write(new Uint8Array(3000).fill(7));
  d.sndUna = 0xfffffff1;
  d.sndNxt = (d.sndUna + 2000) >>> 0;
  d.sndMax = d.sndNxt;
  d.sndWnd = 60000;
  d.maxSndWnd = 60000;
  d.rcvNxt = 5001;
  d.rcvAdv = 5001 + 6000;
  d.recvBuffer.write(new Uint8Array(700).fill(9));
  d.tsRecent = 123456;
  d.cwnd = 40000;
  d.srtt = 12.5;
  d.rttvar = 3.25;
  d.rto = 200;
  s.soft.sacked.push({ start: (d.sndUna + 100) >>> 0, end: (d.sndUna + 200) >>> 0 });
  return { s, block };
}

describe('hard-state record', () => {
  test('reads back what was written, identity included', () => {
    const { s, block } = established();
    const rec = new HardStateRecord(block.sab, block.at);
    const out = emptyHardState();
    assert.equal(rec.read(out), false, 'nothing written yet');
    rec.write(s, block.send, block.recv);
    assert.equal(rec.read(out), true);
    const d = s.delegated;
    assert.equal(out.version, 1);
    assert.equal(out.state, TcpStateId.ESTABLISHED);
    assert.equal(out.sndUna, d.sndUna);
    assert.equal(out.sndMax, d.sndMax);
    assert.equal(out.rcvNxt, d.rcvNxt);
    assert.equal(out.rcvAdv, d.rcvAdv);
    assert.equal(out.tsRecent, 123456);
    assert.deepEqual([out.srtt, out.rttvar], [12.5, 3.25]);
    assert.deepEqual(
      [out.localIp, out.localPort, out.remoteIp, out.remotePort],
      [0x0a000001, 40000, 0x0a000002, 80],
    );
    assert.deepEqual([out.sndWscale, out.rcvWscale, out.remoteMss, out.localMss], [7, 5, 1460, 1400]);
    assert.deepEqual([out.tsEnabled, out.sackEnabled, out.wsEnabled], [true, true, true]);
    d.finQueued = true;
    d.state = TcpStateId.FIN_WAIT_1;
    rec.write(s, block.send, block.recv);
    assert.equal(rec.read(out), true);
    assert.equal(out.version, 2);
    assert.equal(out.finQueued, true);
    assert.equal(out.state, TcpStateId.FIN_WAIT_1);
  });

  test("RACK's bytes resent and bytes DSACKed each come back whole, past 4 GiB, into a rebuild", () => {
    const { s, block } = established();
    // More reported twice than resent: the record once kept only the difference, clamped to a
    // signed word, so a rebuild had one of the two at 0 and the other at most 2 GiB.
    s.soft.rtxBytes = 2 ** 40 + 12_345;
    s.soft.dsackBytes = 2 ** 41 + 7;
    const rec = new HardStateRecord(block.sab, block.at);
    rec.write(s, block.send, block.recv);
    const out = emptyHardState();
    assert.ok(rec.read(out));
    assert.deepEqual([out.rtxBytes, out.dsackBytes], [2 ** 40 + 12_345, 2 ** 41 + 7]);
    const rebuilt = rebuildTcpState(
      out,
      ByteRing.attachShared(block.send),
      ByteRing.attachShared(block.recv),
      DEFAULT_TCP_CACHED,
      s.path,
    );
    assert.deepEqual([rebuilt.soft.rtxBytes, rebuilt.soft.dsackBytes], [2 ** 40 + 12_345, 2 ** 41 + 7]);
  });

  test('words of another layout are not read as a connection', () => {
    const { s, block } = established();
    const rec = new HardStateRecord(block.sab, block.at);
    rec.write(s, block.send, block.recv);
    const out = emptyHardState();
    assert.ok(rec.read(out));
    // Both copies claim layout 1 (42 words, the counts' difference at word 40).
    const words = new Int32Array(block.sab, block.at, TRANSFER_RECORD_AT >> 2);
    const copyWords = words.length / 2;
    assert.equal(words[W_LAYOUT], HARD_STATE_LAYOUT);
    assert.equal(words[copyWords + W_LAYOUT], HARD_STATE_LAYOUT);
    words[W_LAYOUT] = 1;
    words[copyWords + W_LAYOUT] = 1;
    assert.equal(rec.read(out), false);
  });

  test('a writer that dies mid-write leaves a whole copy to read', () => {
    const { s, block } = established();
    const rec = new HardStateRecord(block.sab, block.at);
    rec.write(s, block.send, block.recv);
    const before = s.delegated.rcvNxt;
    // Simulate death inside the first copy of the next write: odd sequence, half the fields new.
    const a = new Int32Array(block.sab, block.at, 24);
    Atomics.add(a, 0, 1);
    Atomics.store(a, 5, 999_999);
    const out = emptyHardState();
    assert.equal(rec.read(out), true);
    assert.equal(out.rcvNxt, before, 'the whole older copy is used');
    assert.ok(block.at + HARD_STATE_BYTES <= block.send.offset);
  });

  test('rebuilds a valid connection, brought forward by the rings', () => {
    const { s, block } = established();
    const rec = new HardStateRecord(block.sab, block.at);
    rec.write(s, block.send, block.recv);
    const hard = emptyHardState();
    assert.ok(rec.read(hard));
    // After the record: the peer acknowledged 500 more bytes, and 300 more bytes arrived.
    s.delegated.sendBuffer.consume(500);
    s.delegated.recvBuffer.write(new Uint8Array(300).fill(1));
    const r = rebuildTcpState(
      hard,
      s.delegated.sendBuffer,
      s.delegated.recvBuffer,
      DEFAULT_TCP_CACHED,
      s.path,
      5000,
    );
    const d = r.delegated;
    assert.equal(d.sndUna, (0xfffffff1 + 500) >>> 0);
    assert.equal(d.sndNxt, d.sndUna, 'resends from snd.una');
    assert.equal(d.sndMax, s.delegated.sndMax);
    assert.equal(d.rcvNxt, 5301);
    assert.equal(d.sendBuffer.length, 2500);
    assert.equal(d.recvBuffer.length, 1000);
    assert.equal(d.cwnd, 1448, 'one segment: the MSS less the timestamp option');
    assert.deepEqual([d.srtt, d.rttvar], [12.5, 3.25], 'the RTT estimate the NIC published');
    assert.equal(d.rto, 200, 'the RTO it had, not the 1 s of a connection that never measured');
    assert.deepEqual(r.soft.sacked, []);
    assert.equal(r.soft.smallSentEnd, d.sndUna, 'no short segment known to be in flight');
    // The adopter's output resends from snd.una at once; the timer only guards that resend.
    assert.equal(d.rtxDeadline, 5000 + 200);
    assert.equal(d.backoff, 0);
    assert.equal(r.const.sndWscale, 7);
  });

  /** A connection with these statistics, its record written, then `after` done; rebuilt. */
  function rebuiltWith(stats: Partial<TcpState['delegated']>, after: (d: TcpState['delegated']) => void) {
    const { s, block } = established();
    const d0 = s.delegated;
    Object.assign(d0, stats);
    const rec = new HardStateRecord(block.sab, block.at);
    rec.write(s, block.send, block.recv);
    const hard = emptyHardState();
    assert.ok(rec.read(hard));
    after(d0);
    return rebuildTcpState(hard, d0.sendBuffer, d0.recvBuffer, DEFAULT_TCP_CACHED, s.path, 5000).delegated;
  }

  test('statistics rebuilt: bytes stored or acknowledged after the record are counted, once', () => {
    const stats = { bytesIn: 50_000, bytesOut: 70_000, segmentsIn: 40, segmentsOut: 60 };
    const d = rebuiltWith(stats, (d0) => {
      // After the record, before the writer died: 300 bytes arrived in order and were stored, and
      // the peer acknowledged 2,500 bytes, 500 of them beyond the recorded snd.max (sent since).
      d0.recvBuffer.write(new Uint8Array(300).fill(1));
      d0.sendBuffer.consume(2500);
    });
    assert.equal(d.rcvNxt, 5301);
    assert.equal(d.bytesIn, 50_300, 'the stored bytes, which the peer will not send again');
    assert.equal(d.bytesOut, 70_500, 'the bytes sent after the record and acknowledged');
    // Segments: the record's counts and the fewest that carried those bytes, one each way.
    assert.deepEqual([d.segmentsIn, d.segmentsOut], [41, 61]);
    // Nothing after the record: the counts are the record's, no segment made up.
    const quiet = rebuiltWith({ segmentsIn: 7, segmentsOut: 9 }, () => {});
    assert.deepEqual([quiet.segmentsIn, quiet.segmentsOut], [7, 9]);
  });

  test("resets counted come back from the record (a worker's) and from a state taken in this thread (a LocalNic's)", () => {
    // Layout 2 had no words for them: a crash rebuild started both counts over at 0.
    const counts = { resetsIn: 2 ** 32 - 3, resetsOut: 1, retransmits: 5 };
    const d = rebuiltWith(counts, () => {});
    assert.deepEqual([d.resetsIn, d.resetsOut, d.retransmits], [2 ** 32 - 3, 1, 5]);
    const { s } = established();
    Object.assign(s.delegated, counts);
    const hard = hardStateOf(s);
    assert.deepEqual([hard.resetsIn, hard.resetsOut], [2 ** 32 - 3, 1]);
    for (const ownThread of [true, false]) {
      const r = rebuildTcpState(
        hard,
        s.delegated.sendBuffer,
        s.delegated.recvBuffer,
        s.cached,
        s.path,
        0,
        null,
        ownThread,
      ).delegated;
      assert.deepEqual([r.resetsIn, r.resetsOut], [2 ** 32 - 3, 1], `ownThread ${ownThread}`);
    }
  });

  test('a state made over given rings takes them as they are (a rebuild makes none of its own)', () => {
    const { s } = established();
    const send = s.delegated.sendBuffer;
    const recv = s.delegated.recvBuffer;
    const t = createTcpState({ ...s.const }, DEFAULT_TCP_CACHED, s.path, { send, recv });
    // By identity, not assert.equal: a failure would print rings over a 64 MB slab.
    assert.ok(t.delegated.sendBuffer === send, 'the send ring given');
    assert.ok(t.delegated.recvBuffer === recv, 'the receive ring given');
    assert.equal(t.delegated.sendBuffer.length, 3000, 'nothing cleared or copied');
    // Without rings, fresh ones of the cached sizes, as before.
    const u = createTcpState({ ...s.const }, DEFAULT_TCP_CACHED, s.path);
    assert.ok(u.delegated.sendBuffer !== send);
    assert.equal(u.delegated.sendBuffer.length, 0);
    assert.equal(u.delegated.recvBuffer.maxCapacity, DEFAULT_TCP_CACHED.rcvBufSize);
  });

  test('a record without an RTT estimate rebuilds with the initial RTO', () => {
    const { s, block } = established();
    s.delegated.srtt = 0;
    s.delegated.rttvar = 0;
    const rec = new HardStateRecord(block.sab, block.at);
    rec.write(s, block.send, block.recv);
    const hard = emptyHardState();
    assert.ok(rec.read(hard));
    assert.equal(hard.srtt, 0);
    const r = rebuildTcpState(
      hard,
      s.delegated.sendBuffer,
      s.delegated.recvBuffer,
      DEFAULT_TCP_CACHED,
      s.path,
      0,
    );
    assert.equal(r.delegated.srtt, 0);
    assert.equal(r.delegated.rto, 1000);
    assert.equal(r.delegated.rtxDeadline, 1000);
  });

  test('refuses a record that was never written', () => {
    const { s } = established();
    assert.throws(
      () =>
        rebuildTcpState(
          emptyHardState(),
          s.delegated.sendBuffer,
          s.delegated.recvBuffer,
          DEFAULT_TCP_CACHED,
          s.path,
        ),
      StateValidationError,
    );
  });

  /** [seq, length] of each data segment sent since the last take. */
  const dataSent = (b: Bench) =>
    b
      .take()
      .filter((x) => x.data.length > 0)
      .map((x) => [x.h.seq, x.data.length]);

  /**
   * A connection with four full segments in flight and timestamps on (MSS 1460 - 12) dies; the
   * host (here another layer on its own clock) rebuilds it and adopts it with a prod (or not).
   */
  function rebuiltAndProdded(prod = true) {
    const a = new Bench();
    const o = activeOpen(a, { ts: [5000, 1001], sackPermitted: true, wscale: 7 });
    o.conn.write(bytes(4 * 1448));
    assert.equal(a.take().filter((x) => x.data.length > 0).length, 4);
    const dead = a.layer.release(o.conn);
    const hard = hardStateOf(dead);
    const b = new Bench();
    b.advance(7000);
    const path = b.env.pathTo(REMOTE)!;
    const s = rebuildTcpState(
      hard,
      dead.delegated.sendBuffer,
      dead.delegated.recvBuffer,
      dead.cached,
      path,
      b.env.clock.now(),
    );
    assert.equal(s.soft.repaired, true);
    const conn = b.layer.adopt(s, new Recorder(), { prod });
    b.advance(1);
    const first = b.take();
    // The peer's answer: its ACK echoes TS.Recent, the dead owner's TSval (Linux answers a
    // segment below its window so), and SACKs what it holds above snd.una.
    const answer = (ack: number, sack?: [number, number][]) =>
      b.inject({
        flags: ACK,
        seq: o.peerSeq,
        ack,
        window: 500,
        srcPort: 80,
        dstPort: conn.localPort,
        ts: [6000, 1001],
        ...(sack ? { sack } : {}),
      });
    return { b, conn, dead, hard, first, answer };
  }

  test('a rebuilt connection, prodded, sends a probe without data; unanswered, its timer resends snd.una once as one whole segment', () => {
    const { b, conn, dead, hard, first } = rebuiltAndProdded();
    // One segment: no data, at snd.una - 1, which the peer must answer with its ACK (Linux's
    // window probe on leaving TCP_REPAIR). SACK was negotiated: no duplicate ACKs go first.
    assert.deepEqual(
      first.map((x) => [x.h.seq, x.data.length, x.h.flags]),
      [[add(hard.sndUna, -1), 0, ACK]],
      'one probe, nothing of the flight resent',
    );
    const d = conn.state.delegated;
    assert.equal(d.backoff, 0, 'the probe is not counted as a timeout');
    assert.equal(d.ssthresh, 0x7fffffff, 'slow start is not cut short by a spurious timeout');
    // Nothing more until the retransmission timer, one RTO (the one the NIC had) after the rebuild.
    assert.equal(d.srtt, dead.delegated.srtt, 'the RTT estimate survived');
    b.advance(d.rto - 10);
    assert.equal(b.take().length, 0);
    b.advance(20);
    const rto = b.take().filter((x) => x.data.length > 0);
    assert.deepEqual(
      rto.map((x) => [x.h.seq, x.data.length]),
      [[hard.sndUna, 1448]],
    );
    assert.equal(d.backoff, 1);
    assert.equal(conn.state.soft.repaired, false);
  });

  test('a rebuilt connection whose peer already has the whole flight resends no data', () => {
    const { b, conn, hard, first, answer } = rebuiltAndProdded();
    assert.equal(first.filter((x) => x.data.length > 0).length, 0, 'the prod resends nothing');
    b.advance(1);
    answer(hard.sndMax);
    const d = conn.state.delegated;
    assert.equal(d.sndUna, hard.sndMax);
    assert.equal(conn.state.soft.repaired, false);
    b.advance(10_000);
    assert.deepEqual(dataSent(b), [], 'not a byte of the flight again');
    assert.equal(d.backoff, 0);
  });

  test('a rebuilt connection whose peer has part of the flight resends exactly the missing part, on its answer', () => {
    const { b, conn, hard, answer } = rebuiltAndProdded();
    const una = hard.sndUna;
    b.advance(1);
    // The first segment arrived (its ACK died with the owner), the second did not, the last two did.
    answer(add(una, 1448), [[add(una, 2 * 1448), add(una, 4 * 1448)]]);
    assert.deepEqual(
      dataSent(b),
      [[add(una, 1448), 1448]],
      'the hole, at once: one round trip after the prod',
    );
    b.advance(1);
    answer(hard.sndMax);
    b.advance(10_000);
    assert.deepEqual(dataSent(b), [], 'nothing the peer SACKed');
    assert.equal(conn.state.delegated.backoff, 0);
  });

  test('a rebuilt connection whose peer got none of the flight resends it from its answer on', () => {
    const { b, conn, hard, answer } = rebuiltAndProdded();
    const una = hard.sndUna;
    b.advance(1);
    answer(una);
    const d = conn.state.delegated;
    assert.deepEqual(
      dataSent(b),
      [[una, 1448]],
      'snd.una again at once, as much as one segment of window allows',
    );
    // The rest follows as the peer acknowledges, in slow start, no timer waited for.
    let acked = add(una, 1448);
    for (let i = 0; i < 4 && acked !== hard.sndMax; i++) {
      b.advance(1);
      answer(acked);
      const sent = b.take().filter((x) => x.data.length > 0);
      assert.ok(sent.length > 0, `more after the ACK of ${acked - una}`);
      acked = add(sent.at(-1)!.h.seq, sent.at(-1)!.data.length);
    }
    assert.equal(acked, hard.sndMax, 'the whole flight again');
    assert.equal(d.backoff, 0);
  });

  test('a rebuilt connection adopted without a prod resends snd.una once: an ACK that does not cover it sends it no second time', () => {
    const { b, conn, hard, first, answer } = rebuiltAndProdded(false);
    const una = hard.sndUna;
    assert.deepEqual(
      first.filter((x) => x.data.length > 0).map((x) => [x.h.seq, x.data.length]),
      [[una, 1448]],
      'the adopter resends the head without asking',
    );
    // An ACK the resend did not cause (a window update, the peer's data, one held while the owner
    // died) comes before the resend's own: it is not an answer to a probe.
    b.advance(1);
    answer(una);
    assert.deepEqual(dataSent(b), [], 'the head is in flight already');
    b.advance(1);
    answer(add(una, 1448));
    assert.deepEqual(
      dataSent(b),
      [
        [add(una, 1448), 1448],
        [add(una, 2 * 1448), 1448],
      ],
      'slow start from there',
    );
    assert.equal(conn.state.soft.repaired, false, 'no probe went: nothing waits for an answer');
  });

  test('blocks are cut from shared slabs without overlapping; large ones get a buffer of their own', () => {
    const blocks = Array.from({ length: 200 }, () => allocConnBlock(16384, 16384));
    const size = HARD_STATE_BYTES + 2 * sharedRingBytes(16384);
    const bySab = new Map<SharedArrayBuffer, number[]>();
    for (const b of blocks) {
      assert.equal(b.at % 8, 0);
      assert.equal(b.send.offset, b.at + HARD_STATE_BYTES);
      assert.equal(b.recv.offset, b.send.offset + sharedRingBytes(16384));
      assert.ok(b.at + size <= b.sab.byteLength);
      const l = bySab.get(b.sab) ?? [];
      l.push(b.at);
      bySab.set(b.sab, l);
    }
    assert.ok(bySab.size < blocks.length / 10, `${bySab.size} buffers for ${blocks.length} blocks`);
    for (const ats of bySab.values()) {
      ats.sort((x, y) => x - y);
      for (let i = 1; i < ats.length; i++) assert.ok(ats[i]! - ats[i - 1]! >= size, 'blocks overlap');
    }
    const big = allocConnBlock(CONN_SLAB_BYTES, 16);
    assert.equal(big.at, 0);
    assert.ok(!bySab.has(big.sab));
  });

  test("RACK's defaults are written out by hand where states are born: each place agrees with rackPathDefaults field by field", () => {
    // emptyHardState and createTcpState copy rackPathDefaults' values as literals (a spread or a
    // template's copy gave those objects layouts of their own): a default changed in one place
    // only would give a rebuilt or a new connection another RACK than a moved one.
    const defaults = rackPathDefaults();
    const keys = Object.keys(defaults) as (keyof RackPathState)[];
    assert.ok(keys.length > 0);
    const pick = (o: RackPathState) => Object.fromEntries(keys.map((k) => [k, o[k]]));
    assert.deepEqual(pick(emptyHardState()), defaults, 'emptyHardState');
    const { s } = established();
    assert.deepEqual(pick(s.soft), defaults, 'createTcpState');
    for (const k of keys) (s.soft as unknown as Record<string, unknown>)[k] = 99;
    const reset = resetTcpState(s, s.const, s.cached, s.path, {
      send: s.delegated.sendBuffer,
      recv: s.delegated.recvBuffer,
    });
    assert.deepEqual(pick(reset.soft), defaults, 'resetTcpState');
  });

  test('a write that would change nothing leaves the record (and its version) alone', () => {
    const { s, block } = established();
    const rec = new HardStateRecord(block.sab, block.at);
    const out = emptyHardState();
    rec.write(s, block.send, block.recv);
    rec.write(s, block.send, block.recv);
    assert.ok(rec.read(out));
    assert.equal(out.version, 1, 'the same state twice is one write');
    s.delegated.sendBuffer.consume(10);
    rec.write(s, block.send, block.recv);
    assert.ok(rec.read(out));
    assert.equal(out.version, 2, 'a ring position that moved is a change');
    s.delegated.bytesOut = 2 ** 33 + 5;
    rec.write(s, block.send, block.recv);
    assert.ok(rec.read(out));
    assert.deepEqual([out.version, out.bytesOut], [3, 2 ** 33 + 5]);
  });

  test('a released block is handed on only while its rings hold exactly the bytes of the state', () => {
    const { s, block } = established();
    const id = connKeyId(keyOfState(s));
    const caps = [block.send.capacity, block.recv.capacity] as const;
    // The state as a decoded transfer carries it: its own copies of the rings' bytes.
    const copy = (r: ByteRing): ByteRing => {
      const x = new ByteRing(r.capacity);
      x.write(r.toArray());
      return x;
    };
    const moved = { ...s, delegated: { ...s.delegated } };
    moved.delegated.sendBuffer = copy(s.delegated.sendBuffer);
    moved.delegated.recvBuffer = copy(s.delegated.recvBuffer);
    keepReleasedBlocks([[id, block]]);
    assert.equal(takeReleasedBlock(id, moved, caps[0], caps[1]), block);
    assert.equal(takeReleasedBlock(id, moved, caps[0], caps[1]), null, 'handed out once');
    keepReleasedBlocks([[id, block]]);
    assert.equal(takeReleasedBlock(id, moved, caps[0] * 2, caps[1]), null, 'other capacities');
    const changed = moved.delegated.recvBuffer.toArray();
    changed[changed.length - 1] = 1;
    moved.delegated.recvBuffer = new ByteRing(caps[1]);
    moved.delegated.recvBuffer.write(changed);
    keepReleasedBlocks([[id, block]]);
    assert.equal(takeReleasedBlock(id, moved, caps[0], caps[1]), null, 'one byte differs');
    keepReleasedBlocks([]);
  });

  test("a record taken in this thread from a state on a worker's shared rings rebuilds at the state's own positions", () => {
    // A LocalNic runs a connection a worker ran before (its rings stay the block's, in this thread
    // too) and crashes: its record (hardStateOf) is taken at the instant of death, so the rebuild
    // must find nothing moved since. Positions of 0 read the rings' whole history as bytes
    // acknowledged and stored after the record, and moved snd.una and rcv.nxt past them.
    const { s } = established();
    const d = s.delegated;
    // History: bytes already acknowledged and already read, as a connection that ran a while.
    d.sendBuffer.read(new Uint8Array(1000));
    d.sndUna = (d.sndUna + 1000) >>> 0;
    d.recvBuffer.read(new Uint8Array(700));
    d.recvBuffer.write(new Uint8Array(300).fill(5));
    d.rcvNxt = (d.rcvNxt + 300) >>> 0;
    for (const ownThread of [true, false]) {
      const r = rebuildTcpState(
        hardStateOf(s),
        d.sendBuffer,
        d.recvBuffer,
        s.cached,
        s.path,
        0,
        null,
        ownThread,
      );
      assert.equal(r.delegated.sndUna, d.sndUna, `snd.una where the state had it (ownThread ${ownThread})`);
      assert.equal(r.delegated.sndMax, d.sndMax, 'the flight kept');
      assert.equal(r.delegated.rcvNxt, d.rcvNxt, 'rcv.nxt where the state had it');
      assert.equal(r.delegated.bytesIn, d.bytesIn, 'no bytes counted twice');
    }
  });

  test('an orphaned FIN_WAIT_2 (closed by its user) rebuilt does not wait forever for the peer FIN', () => {
    const a = new Bench();
    const p = passiveOpen(a);
    p.conn.close();
    const fin = a.take()[0]!;
    a.inject({ flags: ACK, seq: p.peerSeq, ack: add(fin.h.seq, 1) });
    assert.equal(p.conn.state.delegated.state, TcpStateId.FIN_WAIT_2);
    assert.equal(p.conn.state.delegated.readClosed, true);
    const dead = a.layer.release(p.conn);
    const b = new Bench();
    b.advance(3000);
    const s = rebuildTcpState(
      hardStateOf(dead),
      dead.delegated.sendBuffer,
      dead.delegated.recvBuffer,
      dead.cached,
      b.env.pathTo(REMOTE)!,
      b.env.clock.now(),
    );
    b.layer.adopt(s, new Recorder(), { prod: true });
    b.advance(dead.cached.timeWaitMs - 10);
    assert.equal([...b.layer.connections()].length, 1);
    b.advance(20);
    assert.equal([...b.layer.connections()].length, 0, 'ended, as the NIC would have ended it');
  });
});

describe('ring capacity under load', () => {
  test("a fresh accept at the soak's load touches 32 KiB of new memory, not 64 KiB", () => {
    // 5,000 downloads over two NICs. Each new send ring is fresh memory, paid for by the host's
    // first write of the body, page by page: 16 pages a connection at 64 KiB were half of serve's
    // main thread in the burst, and the accepts' placement waited behind it (BENCHMARKS.md).
    const { s } = established();
    const d = s.delegated;
    d.sendBuffer = new ByteRing(4096, s.cached.sndBufSize);
    d.recvBuffer = new ByteRing(4096, s.cached.rcvBufSize);
    d.recvBuffer.write(new Uint8Array(80).fill(1));
    d.rcvAdv = (d.rcvNxt + 65535) >>> 0;
    const caps = connRingCapacities(s, ringUnderLoad(256 << 10, 2500));
    assert.equal(caps.send, 32 << 10, 'about the window of a slow reader, and no less');
    assert.ok(caps.recv >= 80 + 65535, `the window promised still fits (${caps.recv})`);
  });

  test('a send ring grown to the whole of its bound keeps its size; one never grown is placed small', () => {
    const { s } = established();
    const d = s.delegated;
    const bound = 192 << 10;
    s.cached.sndBufSize = bound;
    const placed = 16 << 10;
    const share = 256 << 10;
    // The host's own ring, bounded by the socket's limit and never grown.
    d.sendBuffer = new ByteRing(4096, bound);
    assert.equal(connRingCapacities(s, placed, share).send, placed);
    // Grown in the host (growSendRingHere) to what its flight called for: the whole bound.
    d.sendBuffer = new ByteRing(4096, bound);
    d.sendBuffer.grown = true;
    assert.equal(connRingCapacities(s, placed, share).send, bound);
    // Grown, but beyond the NIC's share: the share.
    assert.equal(connRingCapacities(s, placed, 128 << 10).send, 128 << 10);
  });

  test("a thousand downloads over two NICs get send rings that hold a Linux reader's whole window", () => {
    // 500 a NIC. A reader with 32 KiB of SO_RCVBUF advertises 62,464 bytes: a smaller send ring is
    // all in flight and acknowledged before the reader reads it, and its next bytes wait for the
    // application's refill, a round trip through serve's main thread (BENCHMARKS.md, "What a
    // team's stall waits for"). Placed in batches of 256, the last batch counts 512.
    assert.ok(ringUnderLoad(256 << 10, 512) >= 62_464, `${ringUnderLoad(256 << 10, 512)} B`);
  });

  test("full rings while every connection's fit the budget, smaller beyond, never below the floor nor above the NIC's own", () => {
    const full = 256 << 10;
    const fits = RING_BUDGET_BYTES / (2 * full);
    assert.equal(ringUnderLoad(full, 1), full);
    assert.equal(ringUnderLoad(full, fits), full);
    assert.equal(ringUnderLoad(full, fits * 2), full / 2);
    // 2,500 connections a NIC, as in the soak of 5,000 downloads over two.
    assert.equal(ringUnderLoad(full, 2500), RING_FLOOR_BYTES);
    assert.equal(ringUnderLoad(full, 1e6), RING_FLOOR_BYTES);
    // A NIC made with smaller rings keeps its own.
    assert.equal(ringUnderLoad(8 << 10, 1e6), 8 << 10);
    let last = full;
    for (let n = 1; n <= 5000; n += 7) {
      const r = ringUnderLoad(full, n);
      assert.ok(r <= last, `no larger with more connections (${n}: ${r} after ${last})`);
      assert.equal(r % 4096, 0, 'whole pages');
      last = r;
    }
  });

  test("serve's send rings are placed at the size a grow would reach while the share covers it, as before beyond", () => {
    const placed = 128 << 10;
    const full = 256 << 10;
    // 500 a NIC (1,000 downloads over two): half the share is 64 KiB, which a sender of a Linux
    // reader's 62,464-byte window outgrew at once; the whole share, the grow's, holds twice it.
    assert.ok(ringUnderLoad(placed, 500) < 2 * 62_464);
    assert.equal(sendRingAtPlacement(placed, full, 500), placed);
    assert.ok(sendRingAtPlacement(placed, full, 512) >= 2 * 62_464);
    // 2,500 a NIC (5,000 over two): the floor, as ringUnderLoad gives.
    assert.equal(sendRingAtPlacement(placed, full, 2500), RING_FLOOR_BYTES);
    let last = placed;
    for (let n = 1; n <= 5000; n += 7) {
      const r = sendRingAtPlacement(placed, full, n);
      assert.ok(r >= ringUnderLoad(placed, n) && r <= placed, `${n}: ${r}`);
      assert.ok(r <= last, `no larger with more connections (${n}: ${r} after ${last})`);
      assert.equal(r % 4096, 0, 'whole pages');
      last = r;
    }
  });

  test('a send ring grows within its share of the budget: at 1,000 downloads over two NICs, not at 5,000', () => {
    const full = 256 << 10;
    // 500-528 a NIC: a 64 KiB ring grows to twice a Linux reader's 62,464-byte window.
    for (const n of [500, 512, 528]) {
      assert.ok(ringUnderLoad(full, n) < 2 * 62_464);
      assert.ok(ringGrowLimit(full, n) >= 126_976, `${n}: ${ringGrowLimit(full, n)} B`);
    }
    // 2,500 a NIC: not past the floor it was placed with.
    assert.ok(ringGrowLimit(full, 2500) <= RING_FLOOR_BYTES);
    assert.ok(ringGrowLimit(full, 2048) <= RING_FLOOR_BYTES);
    // 1,000 a NIC (2,000 downloads): placed at the floor, grown to twice it.
    assert.equal(ringUnderLoad(full, 1000), RING_FLOOR_BYTES);
    assert.equal(ringGrowLimit(full, 1000), 2 * RING_FLOOR_BYTES);
    assert.equal(ringGrowLimit(full, 1), full, "never past the NIC's own");
    for (let n = 1; n <= 5000; n += 7) {
      const g = ringGrowLimit(full, n);
      assert.equal(g % 4096, 0, 'whole pages');
      assert.ok(g * n <= Math.max(RING_BUDGET_BYTES, full), `${n} grown rings fit the budget`);
    }
  });
});
