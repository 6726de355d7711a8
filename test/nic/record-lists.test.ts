/**
 * What a transfer record carries beyond the scalars: the out-of-order data (in the block's receive
 * ring beyond the readable bytes, runs in the record) and the SACK lists. A connection moves by
 * record between two TCP layers on virtual time (`Bench`), as between a host and a worker.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { allocConnBlock, connRingCapacities, TRANSFER_RECORD_AT } from '../../src/nic/hard-state.ts';
import { RECORD_OOO_MAX, TransferRecord, travelsAsRecord } from '../../src/nic/transfer-record.ts';
import { seqDiff } from '../../src/stack/tcp/seq.ts';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import { ByteRing } from '../../src/state/byte-ring.ts';
import type { TcpState } from '../../src/state/tcp-state.ts';
import { validateTcpState } from '../../src/state/validate.ts';
import fc from '../helpers/fc.ts';
import { ACK, activeOpen, add, Bench, bytes, type Opened, REMOTE, Recorder } from '../tcp/harness.ts';

const SEG = 1448;

/** The connection's state in a shared block, as WorkerNic.initiate prepares it (rings copied once). */
function inBlock(s: TcpState) {
  const d = s.delegated;
  const caps = connRingCapacities(s, 1 << 18);
  const block = allocConnBlock(caps.send, caps.recv);
  const send = ByteRing.createShared(block.send.capacity, block.send);
  const recv = ByteRing.createShared(block.recv.capacity, block.recv);
  send.write(d.sendBuffer.toArray());
  recv.write(d.recvBuffer.toArray());
  return { block, send, recv };
}

/**
 * Release `conn` from `a`, write its record, read it on `b`'s clock over the block's rings and
 * adopt it there; `alter` changes the state read before it is adopted.
 */
function moveByRecord(
  a: Bench,
  conn: TcpConnection,
  b: Bench,
  opts: { prod?: boolean; alter?: (s: TcpState) => void } = {},
): { conn: TcpConnection; user: Recorder; before: TcpState } {
  const s = a.layer.release(conn);
  const { block, recv } = inBlock(s);
  assert.ok(travelsAsRecord(s, recv), 'fits a record');
  const rec = new TransferRecord(block.sab, block.at + TRANSFER_RECORD_AT);
  rec.write(s, a.env.clock.now(), 0, 1, recv);
  assert.ok(rec.take(1));
  b.advance(a.env.clock.now() - b.env.clock.now());
  const back = rec.read(
    b.env.clock.now(),
    b.env.pathTo(REMOTE)!,
    ByteRing.attachShared(block.send),
    ByteRing.attachShared(block.recv),
  );
  validateTcpState(back);
  opts.alter?.(back);
  const user = new Recorder();
  return { conn: b.layer.adopt(back, user, { prod: opts.prod === true }), user, before: s };
}

/** A segment of the peer's data at `off` bytes into its stream. */
function peerData(o: Opened, b: Bench, off: number, data: Uint8Array): void {
  b.inject({
    flags: ACK,
    seq: add(o.peerSeq, off),
    ack: add(o.iss, 1),
    srcPort: 80,
    dstPort: o.conn.localPort,
    window: 65535,
    data,
  });
}

function readAll(conn: TcpConnection): Uint8Array {
  const out = new Uint8Array(conn.state.delegated.recvBuffer.length);
  conn.read(out);
  return out;
}

/** Runs of out-of-order data (touching segments merged). */
function runsOf(s: TcpState): [number, number][] {
  const out: [number, number][] = [];
  for (const seg of s.soft.ooo) {
    const end = (seg.seq + seg.data.length) >>> 0;
    const last = out.at(-1);
    if (last !== undefined && last[1] === seg.seq) last[1] = end;
    else out.push([seg.seq, end]);
  }
  return out;
}

/**
 * The peer's segments of `segs` arrive but the holes; the connection moves by record; the holes
 * arrive at the new owner. Returns the runs of out-of-order data the record carried.
 */
function holesCase(segs: { len: number; hole: boolean }[]): number {
  const a = new Bench();
  const o = activeOpen(a, { sackPermitted: true, wscale: 7 });
  const total = segs.reduce((n, x) => n + x.len, 0);
  const stream = bytes(total, segs.length);
  const offs: number[] = [];
  let off = 0;
  for (const x of segs) {
    offs.push(off);
    off += x.len;
  }
  segs.forEach((x, i) => {
    if (!x.hole) peerData(o, a, offs[i]!, stream.subarray(offs[i]!, offs[i]! + x.len));
  });
  a.take();
  const runs = runsOf(o.conn.state);
  const b = new Bench({ seed: 2 });
  const moved = moveByRecord(a, o.conn, b);
  assert.deepEqual(runsOf(moved.conn.state), runs, 'the same runs on the new owner');
  assert.equal(
    moved.conn.oooBytes,
    moved.before.soft.ooo.reduce((n, x) => n + x.data.length, 0),
  );
  // The holes, filled at the new owner only.
  segs.forEach((x, i) => {
    if (x.hole) peerData(o, b, offs[i]!, stream.subarray(offs[i]!, offs[i]! + x.len));
  });
  const d = moved.conn.state.delegated;
  assert.equal(d.rcvNxt, add(o.peerSeq, total), 'every byte acknowledged');
  assert.equal(moved.conn.state.soft.ooo.length, 0);
  assert.deepEqual(readAll(moved.conn), stream, 'every byte, in order, once');
  // The new owner acknowledges the whole stream (at once, or on its delayed-ACK timer).
  b.advance(1000);
  if (segs.some((x) => x.hole)) assert.ok(b.take().some((x) => x.data.length === 0 && x.h.ack === d.rcvNxt));
  return runs.length;
}

describe('out-of-order data in a transfer record', () => {
  test('a connection moved by record with any hole pattern over 2 to 64 segments (up to 32 runs of out-of-order data) delivers every byte, in order, once the holes fill', () => {
    let mostRuns = 0;
    fc.assert(
      fc.property(
        fc.array(fc.record({ len: fc.integer({ min: 1, max: SEG }), hole: fc.boolean() }), {
          minLength: 2,
          maxLength: 64,
        }),
        (segs) => {
          mostRuns = Math.max(mostRuns, holesCase(segs));
        },
      ),
      { numRuns: 120 },
    );
    assert.ok(mostRuns >= 16, `hole patterns reached ${mostRuns} runs`);
  });

  test('more runs than a record holds: the connection goes through the codec (travelsAsRecord says no)', () => {
    const a = new Bench();
    const o = activeOpen(a, { sackPermitted: true, wscale: 7 });
    // Every other segment missing: RECORD_OOO_MAX + 1 runs.
    for (let i = 0; i <= RECORD_OOO_MAX; i++) peerData(o, a, (2 * i + 1) * 100, new Uint8Array(100).fill(i));
    const s = o.conn.state;
    assert.equal(runsOf(s).length, RECORD_OOO_MAX + 1);
    const { recv } = inBlock(s);
    assert.equal(travelsAsRecord(s, recv), false);
    s.soft.ooo.pop();
    assert.equal(travelsAsRecord(s, recv), true, 'one run fewer fits');
  });

  test("out-of-order data beyond the receive ring's free space does not travel as a record", () => {
    const a = new Bench();
    const o = activeOpen(a, { sackPermitted: true, wscale: 7 });
    peerData(o, a, 5000, new Uint8Array(100));
    const s = o.conn.state;
    const small = allocConnBlock(64, 4096);
    assert.equal(
      travelsAsRecord(s, ByteRing.createShared(4096, small.recv)),
      false,
      '5100 bytes past rcv.nxt',
    );
    assert.equal(travelsAsRecord(s, s.delegated.recvBuffer), false, 'a ring that is not shared');
  });
});

describe('the SACK scoreboard in a transfer record', () => {
  /** Full-sized segments: MSS 1460, no timestamps. */
  const MSS = 1460;

  /**
   * Ten segments in flight, the peer SACKs all but `lost`, three duplicate ACKs put the sender
   * in recovery and its first resend reaches the peer; before the peer's answer to it arrives the
   * connection moves (a failover: prod), and the new owner runs until everything is acknowledged.
   * Returns the bytes both owners resent.
   */
  function recoverAcrossMove(lost: number[]): { resent: number; holes: number } {
    const a = new Bench();
    const o = activeOpen(a, { sackPermitted: true, wscale: 7 });
    const N = 10;
    o.conn.write(bytes(N * MSS));
    const sent = a.take().filter((x) => x.data.length > 0);
    assert.equal(sent.length, N, 'ten segments in flight (the initial window)');
    const base = sent[0]!.h.seq;
    const sndMax = add(base, N * MSS);
    const got = new Uint8Array(N * MSS);
    const ackFrom = (bench: Bench) => {
      let cum = 0;
      while (cum < got.length && got[cum] === 1) cum++;
      const blocks: [number, number][] = [];
      for (let i = cum; i < got.length && blocks.length < 4; ) {
        if (got[i] === 0) {
          i++;
          continue;
        }
        let j = i;
        while (j < got.length && got[j] === 1) j++;
        blocks.push([add(base, i), add(base, j)]);
        i = j;
      }
      bench.inject({
        flags: ACK,
        seq: o.peerSeq,
        ack: add(base, cum),
        srcPort: 80,
        dstPort: o.conn.localPort,
        window: 65535,
        sack: blocks.length > 0 ? blocks : undefined,
      });
    };
    let resent = 0;
    /** The data segments `bench` sent reach the peer; counts what goes below the first snd.max. */
    const deliver = (bench: Bench): number => {
      const out = bench.take().filter((x) => x.data.length > 0);
      for (const x of out) {
        const off = seqDiff(x.h.seq, base);
        if (seqDiff(sndMax, x.h.seq) > 0) resent += x.data.length;
        got.fill(1, off, off + x.data.length);
      }
      return out.length;
    };
    for (let k = 0; k < N; k++) {
      if (lost.includes(k)) continue;
      got.fill(1, k * MSS, (k + 1) * MSS);
      ackFrom(a);
    }
    assert.ok(o.conn.state.soft.inRecovery, 'in SACK recovery');
    assert.ok(o.conn.state.soft.sacked.length > 0, 'the scoreboard holds what the peer SACKed');
    assert.ok(deliver(a) > 0, 'the old owner resent the first hole');
    const b = new Bench({ seed: 2 });
    const moved = moveByRecord(a, o.conn, b, {
      prod: true,
    });
    assert.deepEqual(moved.conn.state.soft.sacked, moved.before.soft.sacked, 'the scoreboard moved');
    const d = moved.conn.state.delegated;
    deliver(b);
    for (let it = 0; it < 500 && d.sndUna !== d.sndMax; it++) {
      ackFrom(b);
      if (deliver(b) === 0) b.advance(5);
    }
    assert.equal(d.sndUna, d.sndMax, 'everything acknowledged');
    assert.ok(got.every((x) => x === 1));
    return { resent, holes: lost.length * MSS };
  }

  test('a connection moved during SACK recovery resends only the holes (1 to 5 holes among 10 segments, more islands than an ACK has SACK blocks)', () => {
    for (const lost of [[0], [1, 4], [0, 3, 4, 6], [2, 5, 6], [0, 2, 4, 6, 8]]) {
      const kept = recoverAcrossMove(lost);
      assert.equal(kept.resent, kept.holes, `lost ${lost}: the holes' bytes, nothing SACKed`);
    }
  });

  test('a connection moved after SACKs and before recovery resends the hole at snd.una alone, nothing the peer SACKed', () => {
    const a = new Bench();
    const o = activeOpen(a, { sackPermitted: true, wscale: 7 });
    o.conn.write(bytes(10 * MSS));
    const base = a.take().filter((x) => x.data.length > 0)[0]!.h.seq;
    // Segment 0 is lost; the peer's ACKs for segments 1 and 2 (two duplicate ACKs with SACK
    // blocks) reach the sender, then its link dies. They come a round trip after the burst: at
    // the instant it went (a round trip of 0, so a reordering window of 0) RACK rightly took
    // segment 0, sent in the same burst before them, as lost at once, and recovery began.
    a.advance(10);
    for (const k of [1, 2]) {
      a.inject({
        flags: ACK,
        seq: o.peerSeq,
        ack: base,
        srcPort: 80,
        dstPort: o.conn.localPort,
        window: 65535,
        sack: [[add(base, MSS), add(base, (k + 1) * MSS)]],
      });
    }
    assert.equal(o.conn.state.soft.inRecovery, false);
    const b = new Bench({ seed: 2 });
    const moved = moveByRecord(a, o.conn, b, { prod: true });
    assert.deepEqual(moved.conn.state.soft.sacked, moved.before.soft.sacked, 'the scoreboard moved');
    // Before, the prod resent the window from snd.una, skipping what the scoreboard held.
    assert.deepEqual(
      b
        .take()
        .filter((x) => x.data.length > 0)
        .map((x) => [seqDiff(x.h.seq, base), x.data.length]),
      [[0, MSS]],
    );
  });
});
