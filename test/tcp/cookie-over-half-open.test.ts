import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import { TcpStateId } from '../../src/state/tcp-state.ts';
import { ACK, add, Bench, bytes, PEER_ISN, Recorder, RST, type Seg, SYN } from './harness.ts';

/** The peer's HTTP request, sent right after its handshake's ACK. */
const REQUEST = 100;

/**
 * A connect burst's two answers to one SYN (as a Linux peer sends it, timestamps on): the backlog
 * of one is full, so the SYN gets a cookie; the other handshake ends, making room; the peer,
 * not yet having the cookie's SYN-ACK, sends the SYN again, and it makes a half-open connection
 * with its own ISS.
 */
function twoAnswers() {
  const b = new Bench();
  const accepted: TcpConnection[] = [];
  const l = b.layer.listen({ port: 80, backlog: 1 }, (c) => {
    c.user = new Recorder();
    accepted.push(c);
    return true;
  });
  const opts = { mss: 1460, wscale: 7, sackPermitted: true };
  b.inject({ flags: SYN, seq: 777, srcPort: 6000, ...opts, ts: [100, 0] });
  const other = b.take()[0]!;
  b.inject({ flags: SYN, seq: PEER_ISN, ...opts, ts: [1000, 0] });
  const cookie = b.take()[0]!;
  assert.equal(b.count('tcp.syncookies.sent'), 1, 'the backlog of one is full: a cookie');
  b.inject({ flags: ACK, seq: 778, ack: add(other.h.seq, 1), srcPort: 6000, ts: [101, other.h.tsVal] });
  b.advance(1000);
  b.inject({ flags: SYN, seq: PEER_ISN, ...opts, ts: [2000, 0] });
  const synAck = b.take()[0]!;
  assert.equal(synAck.h.flags, SYN | ACK);
  assert.notEqual(synAck.h.seq, cookie.h.seq, 'the half-open connection has its own ISS');
  assert.equal(l.pending, 1);
  return { b, accepted, cookie, synAck };
}

/** What a peer established on `answer` (its SYN-ACK) sends: ACK, request, and the ACK a later SYN-ACK draws. */
function peerOn(answer: Seg) {
  const ack = add(answer.h.seq, 1);
  const echo = answer.h.tsVal;
  return {
    ack: { flags: ACK, seq: add(PEER_ISN, 1), ack, ts: [2001, echo] as [number, number] },
    request: {
      flags: ACK,
      seq: add(PEER_ISN, 1),
      ack,
      ts: [2001, echo] as [number, number],
      data: bytes(REQUEST),
    },
    // Linux answers a SYN-ACK out of its window in ESTABLISHED with a challenge ACK at snd.nxt
    // (tcp_validate_incoming, TCPSYNChallenge), echoing the TSval it last took: the cookie's.
    challenge: { flags: ACK, seq: add(PEER_ISN, 1 + REQUEST), ack, ts: [2002, echo] as [number, number] },
  };
}

function onlyConnection(b: Bench): TcpConnection {
  const conns = [...b.layer.connections()].filter((c) => c.remotePort === 5000);
  assert.equal(conns.length, 1, 'one connection for the tuple');
  return conns[0]!;
}

describe('a cookie ACK reaching the half-open connection of the same SYN', () => {
  const orders: [string, ('ack' | 'request' | 'challenge')[]][] = [
    ['ACK, request, challenge ACK', ['ack', 'request', 'challenge']],
    ['request, ACK, challenge ACK', ['request', 'ack', 'challenge']],
    ['challenge ACK, then ACK and request (they came up another queue)', ['challenge', 'ack', 'request']],
    ['challenge ACK twice, then the request (the ACK lost)', ['challenge', 'challenge', 'request']],
  ];
  for (const [name, order] of orders) {
    test(`peer on the cookie, ${name}: no reset, the request read on the cookie's sequence space`, () => {
      const { b, accepted, cookie } = twoAnswers();
      const p = peerOn(cookie);
      const sent: Seg[] = [];
      for (const k of order) {
        b.inject(p[k]);
        sent.push(...b.take());
      }
      assert.deepEqual(
        sent.filter((s) => s.h.flags & RST).map((s) => s.h.seq),
        [],
        'no RST (one numbered at the cookie + 1 resets the peer)',
      );
      assert.equal(b.count('drop.tcp.bad-ack'), 0);
      assert.equal(b.count('tcp.syncookies.over-half-open'), 1);
      const conn = onlyConnection(b);
      assert.equal(conn.state.delegated.state, TcpStateId.ESTABLISHED);
      assert.equal(conn.state.delegated.sndUna, add(cookie.h.seq, 1), "on the cookie's sequence space");
      assert.equal(conn.readableLength, REQUEST, 'the request, once, in order');
      assert.equal(conn.state.delegated.rcvNxt, add(PEER_ISN, 1 + REQUEST));
      assert.equal(accepted.length, 2, 'both connections accepted');
      const c = conn.state.const;
      assert.deepEqual([c.sndWscale, c.sackEnabled, c.tsEnabled], [7, true, true], "the cookie's options");
    });
  }

  test("peer on the cookie, its request's second segment first: held past the hole, read once the first fills it", () => {
    const { b, cookie } = twoAnswers();
    const p = peerOn(cookie);
    const half = REQUEST / 2;
    const sent: Seg[] = [];
    b.inject({ ...p.request, seq: add(PEER_ISN, 1 + half), data: bytes(half) });
    sent.push(...b.take());
    assert.equal(b.count('tcp.syncookies.over-half-open'), 1, 'the segment ahead carries the cookie');
    assert.deepEqual(
      sent.map((s) => [s.h.flags & RST, s.h.ack]),
      [[0, add(PEER_ISN, 1)]],
      "a duplicate ACK at the peer's ISN + 1 (the hole), no RST",
    );
    assert.equal(onlyConnection(b).readableLength, 0, 'nothing readable past the hole');
    b.inject({ ...p.request, data: bytes(half) });
    sent.push(...b.take());
    assert.ok(!sent.some((s) => s.h.flags & RST), 'no RST');
    const conn = onlyConnection(b);
    assert.equal(conn.readableLength, REQUEST, 'both halves, once, in order');
    assert.equal(conn.state.delegated.rcvNxt, add(PEER_ISN, 1 + REQUEST));
  });

  test("peer on the half-open connection's SYN-ACK: the handshake ends there, the cookie's SYN-ACK changes nothing", () => {
    const { b, synAck, cookie } = twoAnswers();
    const p = peerOn(synAck);
    b.inject(p.ack);
    b.inject(p.request);
    // Its duplicate ACK for the cookie's SYN-ACK, out of its window, acknowledges ours again.
    b.inject({ ...p.challenge, ack: add(synAck.h.seq, 1) });
    assert.ok(!b.take().some((s) => s.h.flags & RST), 'no RST');
    assert.equal(b.count('tcp.syncookies.over-half-open'), 0);
    const conn = onlyConnection(b);
    assert.equal(conn.state.delegated.sndUna, add(synAck.h.seq, 1));
    assert.notEqual(conn.state.delegated.sndUna, add(cookie.h.seq, 1));
    assert.equal(conn.readableLength, REQUEST);
  });

  test('an ACK of no cookie of ours, or one past the window the cookie offered, still draws the RST', () => {
    const { b, cookie, synAck } = twoAnswers();
    const p = peerOn(cookie);
    b.inject({ ...p.challenge, ack: add(cookie.h.seq, 2) });
    assert.equal(b.take()[0]?.h.flags, RST, 'not our cookie: refused as RFC 9293 says');
    // Past the window the cookie's SYN-ACK offered: not taken for the cookie (counted below).
    b.inject({ ...p.challenge, seq: add(PEER_ISN, 1 + 70_000) });
    assert.equal(b.count('tcp.syncookies.over-half-open'), 0);
    assert.equal(onlyConnection(b).state.delegated.state, TcpStateId.SYN_RECEIVED);
    // The half-open connection still completes its own handshake.
    b.inject({ ...p.ack, ack: add(synAck.h.seq, 1) });
    assert.equal(onlyConnection(b).state.delegated.state, TcpStateId.ESTABLISHED);
  });
});

describe('a cookie ACK over a half-open connection while no new connection may start', () => {
  test('refused for memory, the half-open connection stays: the next challenge ACK finds its ISN, no reset', () => {
    const { b, accepted, cookie } = twoAnswers();
    const p = peerOn(cookie);
    const memBytes = b.layer.budget.memBytes;
    b.layer.budget.set({ memBytes: 1 });
    b.inject(p.challenge);
    assert.deepEqual(b.take(), [], 'dropped: no connection may start, and no RST');
    assert.ok(b.count('tcp.mem.limit') >= 1);
    b.layer.budget.set({ memBytes });
    // The peer's next SYN-ACK from the half-open connection draws another challenge ACK; ended
    // before, it reached the listener alone, whose check (seq - 1) failed and whose RST reset the peer.
    b.inject(p.challenge);
    b.inject(p.ack);
    b.inject(p.request);
    assert.ok(!b.take().some((s) => s.h.flags & RST), 'no RST');
    const conn = onlyConnection(b);
    assert.equal(conn.state.delegated.state, TcpStateId.ESTABLISHED);
    assert.equal(conn.state.delegated.sndUna, add(cookie.h.seq, 1), "on the cookie's sequence space");
    assert.equal(conn.readableLength, REQUEST);
    assert.equal(accepted.length, 2);
  });
});
