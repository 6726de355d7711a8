import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { OOW_ACK_INTERVAL_MS } from '../../src/stack/tcp/tcp-output.ts';
import { TcpStateId } from '../../src/state/tcp-state.ts';
import { ACK, activeOpen, add, Bench, bytes, RST, SYN } from './harness.ts';

function open() {
  const b = new Bench();
  const o = activeOpen(b, { ts: [1000, 0], wscale: 0 });
  b.take();
  const port = o.conn.localPort;
  const send = (x: {
    flags: number;
    seq: number;
    ack?: number;
    window?: number;
    ts?: [number, number];
    data?: Uint8Array;
  }) => b.inject({ srcPort: 80, dstPort: port, ack: add(o.iss, 1), ...x });
  return { ...o, send };
}

describe('RFC 5961', () => {
  test('in-window RST that is not exact draws a challenge ACK and does not reset', () => {
    const o = open();
    o.send({ flags: RST, seq: add(o.peerSeq, 100) });
    assert.equal(o.conn.state.delegated.state, TcpStateId.ESTABLISHED);
    const [ack] = o.b.take();
    assert.equal(ack!.h.flags, ACK);
    assert.equal(ack!.h.ack, o.peerSeq);
    assert.equal(o.b.count('tcp.challenge_acks'), 1);
  });

  test('exact RST resets with ECONNRESET', () => {
    const o = open();
    o.send({ flags: RST, seq: o.peerSeq });
    assert.equal(o.conn.state.delegated.state, TcpStateId.CLOSED);
    assert.equal(o.user.error?.code, 'ECONNRESET');
  });

  test('out-of-window RST is dropped silently', () => {
    const o = open();
    o.send({ flags: RST, seq: add(o.peerSeq, 10_000_000) });
    assert.equal(o.b.take().length, 0);
    assert.equal(o.conn.state.delegated.state, TcpStateId.ESTABLISHED);
  });

  test('SYN in ESTABLISHED draws a challenge ACK', () => {
    const o = open();
    o.send({ flags: SYN, seq: add(o.peerSeq, 5), ts: [1001, 0] });
    assert.equal(o.conn.state.delegated.state, TcpStateId.ESTABLISHED);
    assert.equal(o.b.take()[0]!.h.flags, ACK);
    assert.equal(o.b.count('tcp.challenge_acks'), 1);
  });

  test('ACK beyond snd.max or older than max.snd.wnd: challenge ACK and the data is dropped', () => {
    const o = open();
    o.send({ flags: ACK, seq: o.peerSeq, ack: add(o.iss, 5000), data: bytes(10), ts: [1001, 0] });
    assert.equal(o.conn.readableLength, 0);
    assert.equal(o.b.count('tcp.challenge_acks'), 1);
    o.b.advance(OOW_ACK_INTERVAL_MS);
    o.send({ flags: ACK, seq: o.peerSeq, ack: add(o.iss, -200_000), data: bytes(10), ts: [1001, 0] });
    assert.equal(o.conn.readableLength, 0);
    assert.equal(o.b.count('tcp.challenge_acks'), 2);
    assert.equal(o.b.count('drop.tcp.ack-too-old'), 1);
  });

  test('challenge ACKs are rate limited per connection, one per interval as Linux does', () => {
    const o = open();
    for (let i = 0; i < 50; i++) o.send({ flags: RST, seq: add(o.peerSeq, 100 + i) });
    assert.equal(o.b.count('tcp.challenge_acks'), 1, 'a burst of stale segments draws one answer');
    assert.equal(o.b.count('tcp.challenge_acks.limited'), 49);
    o.b.advance(OOW_ACK_INTERVAL_MS - 1);
    o.send({ flags: RST, seq: add(o.peerSeq, 100) });
    assert.equal(o.b.count('tcp.challenge_acks'), 1);
    o.b.advance(1);
    o.send({ flags: RST, seq: add(o.peerSeq, 100) });
    assert.equal(o.b.count('tcp.challenge_acks'), 2);
  });
});

describe('RFC 7323 timestamps and PAWS', () => {
  test('TSecr echoes ts.recent; ts.recent follows in-order segments', () => {
    const o = open();
    o.send({ flags: ACK, seq: o.peerSeq, ts: [2000, 0], data: bytes(10) });
    o.b.advance(100);
    const [ack] = o.b.take();
    assert.equal(ack!.h.tsEcr, 2000);
    assert.equal(o.conn.state.delegated.tsRecent, 2000);
  });

  test('segment with an older TSval is dropped (PAWS) and ACKed', () => {
    const o = open();
    o.send({ flags: ACK, seq: o.peerSeq, ts: [999, 0], data: bytes(10) });
    assert.equal(o.conn.readableLength, 0);
    assert.equal(o.b.count('tcp.paws.drops'), 1);
    assert.equal(o.b.take()[0]!.h.flags, ACK);
  });

  test('a reordered pure ACK with an older TSval is processed (disordered ACK); old data is not', () => {
    const o = open();
    o.conn.write(bytes(3000));
    const una = add(o.iss, 1);
    o.send({ flags: ACK, seq: o.peerSeq, ack: add(una, 1000), ts: [2000, 0] });
    const before = o.conn.state.delegated.dupAcks;
    o.send({ flags: ACK, seq: o.peerSeq, ack: add(una, 1000), ts: [1900, 0] });
    assert.equal(o.b.count('tcp.paws.drops'), 0);
    assert.equal(o.b.count('tcp.paws.disordered_acks'), 1);
    assert.equal(o.conn.state.delegated.dupAcks, before + 1, 'it counts as a duplicate ACK');
    assert.equal(o.conn.state.delegated.tsRecent, 2000, 'and cannot move ts.recent back');
    o.send({ flags: ACK, seq: o.peerSeq, ack: add(una, 1000), ts: [1900, 0], data: bytes(10) });
    assert.equal(o.b.count('tcp.paws.drops'), 1, 'data with an old TSval is still refused');
    assert.equal(o.conn.readableLength, 0);
  });

  test("an overtaken ACK does not move the window: a reader's window update stands (Linux's disordered-ACK rule)", () => {
    // A slow reader's kernel shuts its window, then reopens it once it reads; the two pure ACKs
    // (same seq, same ack) arrive the other way round, as when one crosses another NIC of a team.
    const o = open();
    o.conn.write(bytes(2896));
    const acked = add(o.iss, 2897);
    o.send({ flags: ACK, seq: o.peerSeq, ack: acked, window: 60_000, ts: [2000, 0] });
    assert.equal(o.conn.state.delegated.sndWnd, 60_000);
    o.b.take();
    o.send({ flags: ACK, seq: o.peerSeq, ack: acked, window: 0, ts: [1990, 0] });
    assert.equal(o.conn.state.delegated.sndWnd, 60_000, 'the stale zero window is not taken');
    assert.equal(o.b.count('tcp.paws.drops'), 1, 'it would update the window: PAWS drops it');
    assert.equal(o.b.take().length, 1, 'and answers it');
    o.send({ flags: ACK, seq: o.peerSeq, ack: acked, window: 0, ts: [1991, 0] });
    assert.equal(o.b.count('tcp.paws.drops'), 2);
    assert.equal(o.b.take().length, 0, "a pure ACK's answer at most once an interval, as Linux");
    assert.equal(o.b.count('tcp.oow_ack.limited'), 1);
    o.send({ flags: ACK, seq: o.peerSeq, ack: acked, window: 20_000, ts: [1995, 0] });
    assert.equal(o.conn.state.delegated.sndWnd, 60_000, 'nor a stale smaller one');
    assert.equal(o.b.count('tcp.paws.disordered_acks'), 1, 'which is a harmless duplicate');
    assert.equal(o.conn.state.delegated.persistDeadline, Number.POSITIVE_INFINITY, 'no probe timer');
    o.send({ flags: ACK, seq: o.peerSeq, ack: acked, window: 0, ts: [2010, 0] });
    assert.equal(o.conn.state.delegated.sndWnd, 0, 'a newer zero window still shuts it');
  });

  test('PAWS reference expires after 24 days idle', () => {
    const o = open();
    o.b.env.clock.advance(25 * 24 * 3600 * 1000);
    o.send({ flags: ACK, seq: o.peerSeq, ts: [5, 0], data: bytes(10) });
    assert.equal(o.conn.readableLength, 10);
  });

  test('RTT measured from TSecr', () => {
    const o = open();
    const before = o.conn.state.delegated.srtt;
    o.conn.write(bytes(100));
    const [d] = o.b.take();
    o.b.advance(40);
    // An ACK that does not echo our TSval (0) must not produce a sample.
    o.send({ flags: ACK, seq: o.peerSeq, ack: add(o.iss, 50), ts: [1001, 0] });
    assert.equal(o.conn.state.delegated.srtt, before);
    o.send({ flags: ACK, seq: o.peerSeq, ack: add(o.iss, 101), ts: [1001, d!.h.tsVal] });
    // RFC 6298 2.3: srtt = 7/8 srtt + 1/8 R.
    assert.ok(Math.abs(o.conn.state.delegated.srtt - (0.875 * before + 0.125 * 40)) < 0.01);
  });
});
