import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import { type TcpState, TcpStateId } from '../../src/state/tcp-state.ts';
import { ACK, activeOpen, add, Bench, bytes, FIN, type Opened, Recorder } from './harness.ts';

const SEG = 1448; // MSS 1460 less the timestamp option

/**
 * A connection with four segments in flight whose path died: its retransmission timer backed off
 * `timeouts` times before the failover took its state away.
 */
function failedOver(
  timeouts: number,
  sack = true,
  segments = 4,
): { a: Bench; o: Opened; s: TcpState; peerTs: number } {
  const a = new Bench();
  const o = activeOpen(a, { ts: [5000, 1001], sackPermitted: sack, wscale: 7 });
  if (segments > 0) o.conn.write(bytes(segments * SEG));
  a.take();
  // Step until each timeout has fired (a tail loss probe goes first and pushes the RTO back).
  for (let i = 0; i < timeouts; i++) {
    for (let k = 0; k < 1000 && o.conn.state.delegated.backoff <= i; k++) a.advance(10);
  }
  assert.equal(o.conn.state.delegated.backoff, timeouts);
  return { a, o, s: a.layer.release(o.conn), peerTs: 5000 };
}

/** The next owner of a connection `a` ran: a new bench whose clock stands `laterMs` past `a`'s. */
function nextOwner(a: Bench, laterMs = 0): Bench {
  const b = new Bench();
  b.advance(a.env.clock.now() - b.env.clock.now() + laterMs);
  return b;
}

/**
 * A connection waiting on its persist timer (the peer acknowledged two segments, `top`, and shut
 * its window), released, and its next owner 50 ms later: its window update may have been lost.
 */
function shutWindowReleased(): { o: Opened; s: TcpState; top: number; b: Bench } {
  const a = new Bench();
  const o = activeOpen(a, { ts: [5000, 1001], sackPermitted: true, wscale: 7 });
  o.conn.write(bytes(2 * SEG));
  const top = add(a.take().filter((x) => x.data.length > 0)[0]!.h.seq, 2 * SEG);
  a.advance(5);
  a.inject({ flags: ACK, seq: o.peerSeq, ack: top, window: 0, srcPort: 80, dstPort: o.conn.localPort });
  o.conn.write(bytes(4 * SEG));
  a.take();
  assert.notEqual(o.conn.state.delegated.persistDeadline, Number.POSITIVE_INFINITY, 'waiting on persist');
  return { o, s: a.layer.release(o.conn), top, b: nextOwner(a, 50) };
}

describe('adopting a connection on failover (prod)', () => {
  test('the backoff earned on the failed path is dropped: resend now, next timeout one plain RTO later', () => {
    const { a, s } = failedOver(3);
    const una = s.delegated.sndUna;
    const b = nextOwner(a);
    const conn = b.layer.adopt(s, new Recorder(), { prod: true });
    const d = conn.state.delegated;
    const rto = d.rto;
    assert.equal(d.backoff, 0);
    const now = b.take().filter((x) => x.data.length > 0);
    assert.deepEqual(
      now.map((x) => x.h.seq),
      [una],
      'snd.una goes again at once',
    );
    b.advance(rto - 1);
    assert.equal(b.take().length, 0, 'nothing before one RTO');
    b.advance(2);
    const again = b.take().filter((x) => x.data.length > 0);
    assert.deepEqual(
      again.map((x) => x.h.seq),
      [una],
    );
    assert.equal(d.backoff, 1);
  });

  test('without a prod (a planned offload) the timer state travels unchanged', () => {
    const { a, s } = failedOver(2);
    const deadline = s.delegated.rtxDeadline;
    const b = nextOwner(a);
    const conn = b.layer.adopt(s, new Recorder());
    assert.equal(conn.state.delegated.backoff, 2);
    assert.equal(conn.state.delegated.rtxDeadline, deadline);
  });

  test('an echo of a timestamp from before the hand-over gives no RTT sample; a later one does', () => {
    const { a, o, s, peerTs } = failedOver(0);
    const una = s.delegated.sndUna;
    const srtt = s.delegated.srtt;
    // The outage: the peer got our first segment long ago, but every ACK for it was lost.
    const b = nextOwner(a, 8000);
    const conn = b.layer.adopt(s, new Recorder(), { prod: true });
    const resent = b.take().filter((x) => x.data.length > 0);
    assert.equal(resent[0]?.h.seq, una);
    b.advance(3);
    // Its answer to the resend echoes the segment that advanced its window: the one sent 8 s ago.
    b.inject({
      flags: ACK,
      seq: o.peerSeq,
      ack: add(una, SEG),
      srcPort: 80,
      dstPort: o.conn.localPort,
      ts: [peerTs + 1, 1001],
    });
    const d = conn.state.delegated;
    assert.equal(d.sndUna, add(una, SEG));
    assert.equal(d.srtt, srtt, 'the outage is not an RTT');
    assert.equal(b.count('tcp.rtt.stale-echo'), 1);
    // That ACK clocks out the rest of the flight; the next ACK echoes a segment this owner sent:
    // a real sample.
    const next = b.take().filter((x) => x.data.length > 0);
    assert.equal(next[0]?.h.seq, add(una, SEG));
    b.advance(5);
    b.inject({
      flags: ACK,
      seq: o.peerSeq,
      ack: add(una, 2 * SEG),
      srcPort: 80,
      dstPort: o.conn.localPort,
      ts: [peerTs + 2, next[0]!.h.tsVal],
    });
    assert.notEqual(d.srtt, srtt);
    assert.ok(d.srtt < 10, `srtt ${d.srtt} ms`);
  });

  test("a prod resends snd.una's segment alone; the rest goes as the ACK of it says it is missing", () => {
    const { a, o, s } = failedOver(0);
    const una = s.delegated.sndUna;
    const b = nextOwner(a);
    const conn = b.layer.adopt(s, new Recorder(), { prod: true });
    const out = b.take();
    // Before: the whole window of four segments (and, before SACK was read as Linux reads it,
    // three duplicate ACKs in front: a SACK peer does not count them).
    assert.deepEqual(
      out.map((x) => [x.h.seq, x.data.length]),
      [[una, SEG]],
      "snd.una's segment, carrying the ACK",
    );
    assert.equal(conn.state.delegated.sndNxt, add(una, SEG));
    b.advance(1);
    // The peer had the first two segments: its ACK of the resend says where the hole starts.
    b.inject({ flags: ACK, seq: o.peerSeq, ack: add(una, 2 * SEG), srcPort: 80, dstPort: o.conn.localPort });
    assert.deepEqual(
      b
        .take()
        .filter((x) => x.data.length > 0)
        .map((x) => x.h.seq),
      [add(una, 2 * SEG), add(una, 3 * SEG)],
    );
  });

  test('without SACK the prod sends three duplicate ACKs first: such a peer resends its lost data at once', () => {
    const { a, s } = failedOver(0, false);
    const una = s.delegated.sndUna;
    const top = add(una, 4 * SEG);
    const b = nextOwner(a);
    b.layer.adopt(s, new Recorder(), { prod: true });
    assert.deepEqual(
      b.take().map((x) => [x.h.seq, x.data.length]),
      [
        [top, 0],
        [top, 0],
        [top, 0],
        [una, SEG],
      ],
    );
  });

  test('with SACK and nothing outstanding the prod is one ACK', () => {
    const { a, s } = failedOver(0, true, 0);
    const b = nextOwner(a);
    b.layer.adopt(s, new Recorder(), { prod: true });
    const out = b.take();
    assert.deepEqual(
      out.map((x) => [x.h.seq, x.h.ack, x.data.length]),
      [[s.delegated.sndMax, s.delegated.rcvNxt, 0]],
    );
  });

  test('a prod of a connection waiting for a shut window probes it at once: the update may be lost', () => {
    // A slow reader shut its window, and opened it again while the old owner died (or its link
    // did): the peer sends that update once. Against the kernel the rebuilt connections sent one
    // ACK, which the peer does not answer, and waited out the persist timer (0.3-0.6 s).
    const { o, s, top, b } = shutWindowReleased();
    const conn = b.layer.adopt(s, new Recorder(), { prod: true });
    const out = b.take();
    // Data, which a peer answers at once (a segment without data below its window Linux answers
    // once in 500 ms, and the old owner's probe may have had that answer).
    assert.ok(
      out.some((x) => x.h.seq === add(top, -1) && x.data.length === 1),
      `the octet below snd.una again, at once: ${JSON.stringify(out.map((x) => [x.h.seq, x.data.length]))}`,
    );
    b.advance(1);
    b.inject({
      flags: ACK,
      seq: o.peerSeq,
      ack: top,
      window: 500,
      srcPort: 80,
      dstPort: o.conn.localPort,
      sack: [[add(top, -1), top]],
    });
    assert.equal(
      b.count('tcp.dsack.received'),
      0,
      'the D-SACK of the probe is not a needless retransmission',
    );
    assert.equal(
      b.take().filter((x) => x.data.length > 0)[0]?.h.seq,
      top,
      'its answer opens the window: data',
    );
    assert.equal(conn.state.delegated.persistDeadline, Number.POSITIVE_INFINITY);
  });

  test('a prod of a connection waiting for a shut window sends the probe alone: it carries the ACK', () => {
    // A carrier failover at 1,000 kernel readers with 32 KiB buffers: most windows were shut, and
    // each connection sent a pure ACK before its probe, which the peer takes the ACK field of too.
    const { s, top, b } = shutWindowReleased();
    b.layer.adopt(s, new Recorder(), { prod: true });
    assert.deepEqual(
      b.take().map((x) => [x.h.seq, x.h.ack, x.data.length]),
      [[add(top, -1), s.delegated.rcvNxt, 1]],
      'one frame: the octet below snd.una, acknowledging all received',
    );
    assert.equal(b.count('tcp.prod.window-probes'), 1);
  });

  test('a prod whose resend finds the whole flight arrived resends nothing more', () => {
    const { a, o, s } = failedOver(0);
    const una = s.delegated.sndUna;
    const b = nextOwner(a);
    const conn = b.layer.adopt(s, new Recorder(), { prod: true });
    b.take();
    b.advance(1);
    b.inject({ flags: ACK, seq: o.peerSeq, ack: add(una, 4 * SEG), srcPort: 80, dstPort: o.conn.localPort });
    assert.equal(b.take().filter((x) => x.data.length > 0).length, 0);
    assert.equal(conn.state.delegated.sndUna, add(una, 4 * SEG));
    assert.equal(conn.state.delegated.rtxDeadline, Number.POSITIVE_INFINITY);
  });
});

describe('a timeout after a prod, found spurious', () => {
  test("the ACK of the prod's resend, lost and drawn again by the timeout, lets the rest go at once", () => {
    // The failover bench's 2 s stall (reachability, 10,000 connections): the prod's resend
    // arrived but its ACK was lost; the timeout sent the head again and the peer's ACK of that
    // duplicate echoed the prod's TSval. Eifel rightly undid the timeout, but the undo put
    // snd.nxt at snd.max, as if the rest of the flight were still on its way: the prod had
    // rewound it (it was lost on the failed path), and nothing went until the next timeout.
    const { a, o, s } = failedOver(0);
    const una = s.delegated.sndUna;
    const b = nextOwner(a);
    const conn = b.layer.adopt(s, new Recorder(), { prod: true });
    const resent = b.take().find((x) => x.data.length > 0)!;
    assert.equal(resent.h.seq, una);
    const d = conn.state.delegated;
    for (let k = 0; k < 1000 && d.backoff === 0; k++) b.advance(1);
    assert.equal(d.backoff, 1, 'the timeout fired');
    const rto = b.take().filter((x) => x.data.length > 0);
    assert.deepEqual(
      rto.map((x) => x.h.seq),
      [una],
      'the timeout resent the head alone',
    );
    b.advance(1);
    b.inject({
      flags: ACK,
      seq: o.peerSeq,
      ack: add(una, SEG),
      ts: [5001, resent.h.tsVal],
      srcPort: 80,
      dstPort: o.conn.localPort,
    });
    assert.equal(b.count('tcp.rto.undo.eifel'), 1, 'the timeout is undone');
    const next = b
      .take()
      .filter((x) => x.data.length > 0)
      .map((x) => x.h.seq);
    assert.equal(next[0], add(una, SEG), 'the rest of the flight goes on this ACK, not a timeout later');
  });
});

describe('a released connection object taken up again (TcpConnection.revive)', () => {
  test('every field is back to what a new object over the same state has', () => {
    const { a, s } = failedOver(1);
    const b = nextOwner(a);
    const conn = b.layer.adopt(s, new Recorder());
    b.layer.release(conn);
    // What the object was made with (its key, `tuple`, is made from the state, which comes back
    // the same; its timer, `wake`, made when first armed, is kept disarmed), and `deferred`, which
    // tracks a delivery still queued.
    const kept = new Set(['state', 'tuple', 'engine', 'wake', 'rack', 'deferred']);
    // The output scheduler's, which revive leaves: a scheduler's list may still hold the object,
    // and its share of the turn stays spent (test/tcp/output-budget.test.ts, a connection that moves).
    const scheduler = ['outputTurn', 'outputUsed', 'outputQueued'];
    const dirty = conn as unknown as Record<string, unknown>;
    for (const k of Object.keys(dirty)) {
      if (kept.has(k)) continue;
      const v = dirty[k];
      dirty[k] = typeof v === 'number' ? 12345 : typeof v === 'boolean' ? !v : { stale: k };
    }
    const before = scheduler.map((k) => dirty[k]);
    for (const k of scheduler) kept.add(k);
    conn.revive();
    assert.deepEqual(
      scheduler.map((k) => dirty[k]),
      before,
      "the scheduler's fields as they were",
    );
    const fresh = new TcpConnection(conn.engine, conn.state) as unknown as Record<string, unknown>;
    for (const k of Object.keys(fresh)) {
      if (kept.has(k)) continue;
      assert.deepEqual(dirty[k], fresh[k], `${k} after revive`);
    }
    assert.equal(conn.rack.entries.length, 0, 'the RACK log is empty');
  });

  test('adopting the same state back on the same layer revives the object it left', () => {
    const { a, s } = failedOver(1);
    const b = nextOwner(a);
    const first = b.layer.adopt(s, new Recorder());
    const back = b.layer.release(first);
    const again = b.layer.adopt(back, new Recorder());
    assert.equal(again, first, 'the same object');
    assert.equal(b.env.counters.get('tcp.adopt.revived'), 1);
  });
});

describe("the peer's FIN heard where nobody was told", () => {
  test('the adopting owner tells its user the stream ended', () => {
    const a = new Bench();
    const o = activeOpen(a, { ts: [5000, 1001] });
    const d = o.conn.state.delegated;
    // A NIC installs a connection with nobody to tell until the host attaches its socket; a FIN
    // replayed or arriving meanwhile moves the state on and tells no one.
    o.conn.user = null;
    a.inject({
      flags: ACK | FIN,
      srcPort: 80,
      dstPort: o.conn.localPort,
      seq: d.rcvNxt,
      ack: d.sndNxt,
      ts: [5100, 1001],
    });
    assert.equal(d.state, TcpStateId.CLOSE_WAIT);
    const s = a.layer.release(o.conn);
    const b = nextOwner(a);
    const user = new Recorder();
    b.layer.adopt(s, user);
    b.advance(0);
    assert.ok(user.events.includes('end'), `the end is told (${user.events.join(', ')})`);
  });
});

describe('a layer that was closed', () => {
  test('a connection handed to it afterwards is aborted at once: no timer keeps it running', () => {
    const { a, s } = failedOver(1);
    const b = nextOwner(a);
    b.layer.close();
    // As a failover still rebuilding a dead NIC's connections when its stack closes does.
    const conn = b.layer.adopt(s, new Recorder(), { prod: true });
    assert.equal(conn.state.delegated.state, TcpStateId.CLOSED);
    b.take();
    b.advance(120_000);
    assert.deepEqual(
      b.take().map((x) => x.h.flags),
      [],
      'nothing retransmitted into the closed stack',
    );
  });
});
