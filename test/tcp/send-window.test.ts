import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { TcpCached } from '../../src/state/tcp-state.ts';
import { HANDOVERS } from './handovers.ts';
import { ACK, activeOpen, add, Bench, bytes, FIN, type InjectOpts, Recorder, tsoBench } from './harness.ts';

const MSS = 1460;

/**
 * An open connection with segmentation offload; `peer` acknowledges `ack` bytes of it with
 * `window`, `lens` gives the lengths of the data segments sent since the last look.
 */
function tsoOpen() {
  const b = tsoBench();
  // A large first window keeps the bound at half the largest window out of the way.
  const o = activeOpen(b, { window: 65535 });
  b.take();
  const peer = (ack: number, window: number) =>
    b.inject({
      flags: ACK,
      srcPort: 80,
      dstPort: o.conn.localPort,
      seq: o.peerSeq,
      ack: add(o.iss, 1 + ack),
      window,
    });
  const lens = () =>
    b
      .take()
      .filter((s) => s.data.length > 0)
      .map((s) => s.data.length);
  return { b, o, peer, lens };
}

function open(window: number, defaults: Partial<TcpCached> = {}) {
  const b = new Bench({ defaults });
  const o = activeOpen(b, { window });
  b.take();
  b.flush();
  const port = o.conn.localPort;
  const send = (x: Partial<InjectOpts>) =>
    b.inject({
      flags: ACK,
      srcPort: 80,
      dstPort: port,
      seq: o.peerSeq,
      ack: o.conn.state.delegated.sndUna,
      ...x,
    });
  const dataOut = () => b.take().filter((s) => s.data.length > 0);
  return { ...o, send, dataOut };
}

describe("sending into a reader's window (Linux's tcp_snd_wnd_test)", () => {
  test('a window under one MSS with nothing in flight: no sliver until the probe timer, then what fits', () => {
    const o = open(1000);
    o.conn.write(bytes(5000));
    assert.deepEqual(
      o.dataOut().map((s) => s.data.length),
      [],
      'nothing goes into a 1000-byte window while 5000 bytes wait',
    );
    o.b.advance(150);
    assert.equal(o.dataOut().length, 0, 'still nothing before the probe timer');
    const d = o.conn.state.delegated;
    assert.ok(d.persistDeadline < Number.POSITIVE_INFINITY, 'the probe timer is armed');
    o.b.advance(d.persistDeadline - o.b.env.clock.now());
    const probe = o.dataOut();
    assert.equal(probe.length, 1, 'the probe timer sends one segment');
    assert.equal(probe[0]!.h.seq, add(o.iss, 1));
    assert.equal(probe[0]!.data.length, 1000, 'what the window takes');
    assert.equal(o.b.count('tcp.persist.window-probes'), 1);
    // ACKs that open a full window: the rest goes in whole segments but the last.
    const rest: number[] = [];
    let una = add(o.iss, 1001);
    for (let i = 0; i < 5 && una !== add(o.iss, 5001); i++) {
      o.send({ ack: una, window: 65535 });
      for (const s of o.dataOut()) {
        rest.push(s.data.length);
        una = add(s.h.seq, s.data.length);
      }
    }
    assert.equal(
      rest.reduce((n, l) => n + l, 0),
      4000,
    );
    assert.ok(
      rest.slice(0, -1).every((l) => l === MSS),
      `pieces ${rest}`,
    );
  });

  test('a window growing from zero in small steps: no segment under an MSS but the last of the data', () => {
    const o = open(0);
    o.conn.write(bytes(4000));
    assert.equal(o.dataOut().length, 0);
    const lens: number[] = [];
    for (const w of [300, 600, 900, 1200, 1459]) {
      o.send({ window: w });
      lens.push(...o.dataOut().map((s) => s.data.length));
    }
    assert.deepEqual(lens, [], 'nothing while the window is under one MSS');
    o.send({ window: 1700 });
    const first = o.dataOut().map((s) => s.data.length);
    assert.deepEqual(first, [MSS], 'one MSS once it fits; the 240 bytes beyond it wait');
    // The reader acknowledges it and opens a little more at a time.
    let una = add(o.iss, 1 + MSS);
    const later: number[] = [];
    for (const w of [500, 1000, 1600, 3000]) {
      o.send({ ack: una, window: w });
      for (const s of o.dataOut()) {
        later.push(s.data.length);
        una = add(s.h.seq, s.data.length);
      }
    }
    assert.equal(
      later.reduce((n, l) => n + l, 0),
      4000 - MSS,
      `all sent: ${later}`,
    );
    assert.ok(
      later.slice(0, -1).every((l) => l === MSS),
      `only the last piece is short: ${later}`,
    );
  });

  test('less queued than one MSS goes at once when the window takes all of it', () => {
    const o = open(1000);
    o.conn.write(bytes(600));
    assert.deepEqual(
      o.dataOut().map((s) => s.data.length),
      [600],
    );
  });

  test('with segmentation offload a piece up to the window edge takes its short tail (tcp_mss_split_point)', () => {
    const { o, peer, lens } = tsoOpen();
    peer(0, 0);
    o.conn.state.delegated.cwnd = 100 * MSS;
    o.conn.write(bytes(50 * MSS));
    assert.deepEqual(lens(), []);
    // The reader's window opens from zero: all of it goes, as one packet.
    peer(0, 2 * MSS + 500);
    assert.deepEqual(lens(), [2 * MSS + 500], 'the window filled to its edge');
    // Nagle, with that short segment not yet acknowledged: the next piece stops on an MSS boundary.
    peer(MSS, 2 * MSS + 500 - MSS + 2 * MSS + 300);
    assert.deepEqual(lens(), [2 * MSS], 'the tail waits while a short segment is in flight');
    // Nagle off: the tail goes with the piece.
    o.conn.setNoDelay(true);
    peer(2 * MSS, 4 * MSS + 500 - 2 * MSS + 2 * MSS + 200);
    assert.deepEqual(lens(), [2 * MSS + 200], 'with TCP_NODELAY the window filled to its edge');
  });

  test('small writes piled up behind a short segment in flight go as full segments, their short rest waiting (tcp_mss_split_point at the end of the queue)', () => {
    const { b, o, peer, lens } = tsoOpen();
    o.conn.write(bytes(700));
    assert.deepEqual(lens(), [700], 'nothing in flight: the first write goes');
    o.conn.write(bytes(700));
    o.conn.write(bytes(700));
    assert.deepEqual(lens(), [], '1,400 bytes: less than a segment, behind a short one in flight');
    o.conn.write(bytes(700));
    assert.deepEqual(lens(), [MSS], 'a full segment goes; its 640-byte rest waits behind the short one');
    o.conn.write(bytes(700));
    assert.deepEqual(lens(), [], 'still 1,340 bytes: less than a segment');
    peer(700, 65535);
    assert.deepEqual(
      lens(),
      [],
      'the short one acknowledged: the rest waits behind the full one (classic Nagle)',
    );
    peer(700 + MSS, 65535);
    assert.deepEqual(lens(), [1340], 'everything acknowledged, the rest goes');
    // The short rest of the next write waits behind that one; the FIN takes it whatever Nagle says.
    o.conn.write(bytes(2000));
    assert.deepEqual(lens(), [MSS]);
    o.conn.close();
    const out = b.take().filter((s) => s.data.length > 0);
    assert.deepEqual(
      out.map((s) => [s.data.length, (s.h.flags & FIN) !== 0]),
      [[540, true]],
    );
  });
});

/** Lengths of the data segments `b` sent since the last look. */
const dataLens = (b: Bench): number[] =>
  b
    .take()
    .filter((x) => x.data.length > 0)
    .map((x) => x.data.length);

describe('the short segment in flight travels with a hand-over (Minshall, Linux snd_sml)', () => {
  for (const [how, move] of HANDOVERS) {
    test(`moved by ${how}, the new owner holds the next piece's short tail while the first is unacknowledged`, () => {
      const a = tsoBench();
      const o = activeOpen(a, { window: 65535 });
      a.take();
      const una = (k: number) => add(o.iss, 1 + k);
      const peer = (b: Bench, port: number, acked: number, window: number) =>
        b.inject({ flags: ACK, srcPort: 80, dstPort: port, seq: o.peerSeq, ack: una(acked), window });
      peer(a, o.conn.localPort, 0, 0);
      o.conn.state.delegated.cwnd = 100 * MSS;
      o.conn.write(bytes(50 * MSS));
      peer(a, o.conn.localPort, 0, 2 * MSS + 500);
      assert.deepEqual(dataLens(a), [2 * MSS + 500], 'a piece with a 500-byte tail in flight');

      const b = tsoBench();
      b.advance(a.env.clock.now() - b.env.clock.now());
      const s = a.layer.release(o.conn);
      const conn = b.layer.adopt(move(s, a, b), new Recorder(), { prod: false });
      assert.equal(conn.state.soft.smallSentEnd, una(2 * MSS + 500), 'the end of the short segment moved');
      b.take();
      // The peer acknowledges one MSS and opens its window to 2 MSS + 300 beyond the flight.
      peer(b, conn.localPort, MSS, MSS + 500 + 2 * MSS + 300);
      assert.deepEqual(dataLens(b), [2 * MSS], 'the tail waits on the new owner too');
    });
  }
});
