/**
 * The receive side as Linux (6.17 and later, the kernel the conformance suite runs against): the
 * window's right edge as tcp_sequence judges it, and D-SACKs for out-of-order data received twice
 * (tcp_data_queue_ofo). test/conformance/robust.test.ts and flow.test.ts run the same rules
 * against the kernel.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type TcpCached, TcpStateId } from '../../src/state/tcp-state.ts';
import { validateTcpState } from '../../src/state/validate.ts';
import {
  ACK,
  add,
  Bench,
  bytes,
  FILL_2000_MTU,
  FIN,
  type Opened,
  openSettled,
  PSH,
  passiveOpen,
  pastStart,
  fromPeer as peer,
  REMOTE,
  Recorder,
  SYN,
  sackBlocks,
  shutOurWindow,
} from './harness.ts';

const open = (defaults: Partial<TcpCached> = {}, mtu?: number): Opened => openSettled(true, defaults, mtu);

const rel = (o: Opened, blocks: [number, number][]): [number, number][] =>
  blocks.map(([l, r]) => [(l - o.peerSeq) | 0, (r - o.peerSeq) | 0]);

/**
 * We send 500 bytes the peer does not acknowledge yet; the peer sends 1000, which we ACK (delayed).
 * Returns snd.una before our data.
 */
function dataBothWays(o: Opened): number {
  const { b, conn } = o;
  const una = conn.state.delegated.sndUna;
  conn.write(bytes(500));
  b.take();
  peer(o, ACK, o.peerSeq, una, bytes(1000));
  b.advance(200);
  b.flush();
  b.take();
  return una;
}

describe('the right edge of the receive window (Linux tcp_sequence since 9ca48d616ed7)', () => {
  test('a pure ACK at exactly rcv.nxt + rcv.wnd is read and draws no answer (the RFC refuses it)', () => {
    const o = open();
    const { b, conn } = o;
    const d = conn.state.delegated;
    const una = d.sndUna;
    conn.write(bytes(500));
    assert.equal(b.take().length, 1);
    const edge = d.rcvAdv;
    assert.ok(((edge - d.rcvNxt) | 0) > 0, 'the window is open');
    peer(o, ACK, edge, add(una, 500));
    assert.equal(d.sndUna, add(una, 500), 'its ACK was read');
    assert.deepEqual(b.take(), [], 'acceptable, so not answered');
    // One octet further is past the edge: dropped and answered.
    peer(o, ACK, add(edge, 1), add(una, 500));
    assert.equal(b.take().length, 1, 'answered');
    assert.equal(b.count('drop.tcp.out-of-window'), 1);
  });

  test('data across the right edge is dropped whole, its ACK unread, while read data waits in the queue', () => {
    const o = open({ rcvBufSize: 4000 });
    const { b, conn } = o;
    const d = conn.state.delegated;
    const una = dataBothWays(o);
    assert.equal(d.recvBuffer.length, 1000, '1000 bytes wait unread');
    const edge = d.rcvAdv;
    peer(o, ACK, add(edge, -100), add(una, 500), bytes(200));
    assert.equal(d.sndUna, una, 'its ACK was not read');
    assert.equal(conn.state.soft.ooo.length, 0, 'nothing of it kept');
    const ans = b.take();
    assert.equal(ans.length, 1, 'answered at once');
    assert.equal(ans[0]!.h.ack, add(o.peerSeq, 1000));
    assert.deepEqual(sackBlocks(ans[0]!), [], 'nothing SACKed');
    // Inside the window the same bytes are taken, and their ACK read.
    peer(o, ACK, add(edge, -200), add(una, 500), bytes(200));
    assert.equal(d.sndUna, add(una, 500));
    assert.deepEqual(rel(o, sackBlocks(b.take()[0]!)), [[3800, 4000]]);
  });

  test('with the receive queue empty, data across the edge is taken as far as the buffer holds, and its ACK read', () => {
    const o = open({ rcvBufSize: 64000 });
    const { b, conn } = o;
    const d = conn.state.delegated;
    const una = dataBothWays(o);
    const edge = d.rcvAdv;
    assert.equal((edge - o.peerSeq) | 0, 64000, 'the edge our last ACK offered');
    // The application reads it all; too little to announce, so the edge stays where it was.
    assert.equal(conn.read(new Uint8Array(2000)), 1000);
    assert.deepEqual(b.take(), []);
    assert.equal(d.rcvAdv, edge);
    peer(o, ACK, add(edge, -100), add(una, 500), bytes(600));
    assert.equal(d.sndUna, add(una, 500), 'its ACK was read');
    const [ans] = b.take();
    assert.deepEqual(rel(o, sackBlocks(ans!)), [[63900, 64500]], 'all of it held: the buffer has the room');
  });

  test('data into our zero window is dropped with the receive queue empty too, its ACK read and answered at once (Linux tcp_data_queue)', () => {
    // The queue empties without a read on this owner's side: a worker's application reads the
    // shared ring on another thread, and the worker hears of it in a later turn. Until then the
    // window it offered is zero, and Linux drops data at rcv.nxt into a zero window
    // (TCPZeroWindowDrop) whatever its queue holds; its tcp_sequence lets the ACK be read.
    // Our MSS 1000, so the SYN offers all 2000 bytes: Linux's tcp_select_initial_window offers
    // whole segments of it (FILL_2000_MTU).
    const o = open({ rcvBufSize: 2000 }, FILL_2000_MTU);
    const { b, conn } = o;
    const d = conn.state.delegated;
    const una = shutOurWindow(o);
    assert.equal(d.recvBuffer.read(new Uint8Array(4000)), 2000);
    assert.equal(d.recvBuffer.length, 0, 'the receive queue is empty');
    assert.equal(d.rcvAdv, d.rcvNxt, 'the window we offered is zero');
    const nxt = d.rcvNxt;
    peer(o, ACK | PSH, nxt, add(una, 1000), bytes(500));
    assert.equal(d.rcvNxt, nxt, 'nothing taken');
    assert.equal(conn.state.soft.ooo.length, 0, 'nothing held');
    assert.equal(d.sndUna, add(una, 1000), 'its ACK was read');
    const ans = b.take();
    assert.equal(ans.length, 1, 'answered at once');
    assert.equal(ans[0]!.h.ack, nxt);
    assert.ok(ans[0]!.h.window > 0, 'the answer offers the room now free');
    // Sent again into the window now offered, it is taken.
    peer(o, ACK | PSH, nxt, add(una, 1000), bytes(500));
    assert.equal(d.rcvNxt, add(nxt, 500));
  });

  test('in-order data across the edge into an empty queue leaves no edge behind rcv.nxt while its ACK waits', () => {
    // A state whose advertised edge lies before rcv.nxt is refused by validateTcpState, which an
    // offload (transfer) and a NIC's upload (nic-engine) run on the live state: the delayed ACK
    // must not leave that window open.
    // Our MSS 1000, so the SYN offers all 2000 bytes: Linux's tcp_select_initial_window offers
    // whole segments of it (FILL_2000_MTU).
    const o = open({ rcvBufSize: 2000 }, FILL_2000_MTU);
    const { b, conn } = o;
    const d = conn.state.delegated;
    pastStart(conn);
    const una = d.sndUna;
    peer(o, ACK, o.peerSeq, una, bytes(800));
    b.advance(200);
    b.flush();
    assert.equal(b.take()[0]!.h.window, 1200);
    // Read, but too little opened to announce: the queue is empty and the edge 1200 ahead.
    assert.equal(conn.read(new Uint8Array(4000)), 800);
    b.flush();
    assert.deepEqual(b.take(), []);
    assert.equal(d.recvBuffer.length, 0);
    peer(o, ACK, add(o.peerSeq, 800), una, bytes(1400));
    assert.equal(d.rcvNxt, add(o.peerSeq, 2200), 'all of it kept: the buffer has the room');
    assert.deepEqual(b.take(), [], 'its ACK is delayed');
    assert.doesNotThrow(() => validateTcpState(conn.state));
    b.advance(200);
    b.flush();
    assert.equal(b.take()[0]!.h.ack, add(o.peerSeq, 2200));
    assert.doesNotThrow(() => validateTcpState(conn.state));
  });

  test('a bare FIN into our zero window is taken, answered, and is no duplicate ACK (1e3bb184e941)', () => {
    // Our MSS 1000, so the SYN offers all 2000 bytes: Linux's tcp_select_initial_window offers
    // whole segments of it (FILL_2000_MTU).
    const o = open({ rcvBufSize: 2000 }, FILL_2000_MTU);
    const { b, conn } = o;
    const d = conn.state.delegated;
    const una = shutOurWindow(o);
    peer(o, FIN | ACK, add(o.peerSeq, 2000), una);
    assert.equal(d.state, TcpStateId.CLOSE_WAIT, 'the FIN was taken');
    assert.equal(d.rcvNxt, add(o.peerSeq, 2001));
    assert.ok(o.user.events.includes('end'));
    // Its ACK waits for ours to ride on, as every FIN that ends ESTABLISHED (tcp-ack-mode.ts).
    assert.deepEqual(b.take(), []);
    b.advance(conn.state.cached.delayedAckMs);
    b.flush();
    const ans = b.take();
    assert.equal(ans.length, 1, 'answered by the delayed-ACK timer');
    assert.equal(ans[0]!.h.ack, add(o.peerSeq, 2001));
    assert.equal(ans[0]!.h.window, 0);
    assert.equal(d.dupAcks, 0);
    // A FIN that comes with data into the shut window still waits.
    // Our MSS 1000, so the SYN offers all 2000 bytes: Linux's tcp_select_initial_window offers
    // whole segments of it (FILL_2000_MTU).
    const o2 = open({ rcvBufSize: 2000 }, FILL_2000_MTU);
    const d2 = o2.conn.state.delegated;
    peer(o2, ACK, o2.peerSeq, d2.sndUna, bytes(1000));
    peer(o2, ACK, add(o2.peerSeq, 1000), d2.sndUna, bytes(1000));
    o2.b.take();
    peer(o2, FIN | ACK, add(o2.peerSeq, 2000), d2.sndUna, bytes(1));
    assert.equal(d2.state, TcpStateId.ESTABLISHED);
    assert.equal(d2.rcvNxt, add(o2.peerSeq, 2000));
  });
});

describe('D-SACK for out-of-order data received twice (Linux tcp_data_queue_ofo)', () => {
  test('a segment inside held out-of-order data is D-SACKed; a partial overlap reports the overlap', () => {
    const o = open();
    const { b, conn } = o;
    const una = conn.state.delegated.sndUna;
    const at = (n: number): number => add(o.peerSeq, n);
    peer(o, ACK, at(1000), una, bytes(1000));
    assert.deepEqual(rel(o, sackBlocks(b.take()[0]!)), [[1000, 2000]]);
    // Wholly inside what is held (tcp_dsack_set): the D-SACK first, then the block holding it.
    peer(o, ACK, at(1200), una, bytes(300));
    assert.deepEqual(rel(o, sackBlocks(b.take()[0]!)), [
      [1200, 1500],
      [1000, 2000],
    ]);
    // Reported once.
    peer(o, ACK, at(3000), una, bytes(100));
    assert.deepEqual(rel(o, sackBlocks(b.take()[0]!)), [
      [3000, 3100],
      [1000, 2000],
    ]);
    // Partly held: the part already here.
    peer(o, ACK, at(1800), una, bytes(500));
    assert.deepEqual(rel(o, sackBlocks(b.take()[0]!)), [
      [1800, 2000],
      [1000, 2300],
      [3000, 3100],
    ]);
    // Across two held ranges with a gap between: the first, with what touches it (tcp_dsack_extend
    // joins only a range next to the block); the gap is filled.
    peer(o, ACK, at(1500), una, bytes(1700));
    assert.deepEqual(rel(o, sackBlocks(b.take()[0]!)), [
      [1500, 2300],
      [1000, 3200],
    ]);
    assert.equal(b.count('tcp.dsack.ofo-sent'), 3);
    // Everything arrives: the data is whole.
    peer(o, ACK, o.peerSeq, una, bytes(1000));
    assert.equal(conn.state.delegated.rcvNxt, at(3200));
    assert.equal(conn.state.soft.ooo.length, 0);
  });

  test('in-order data that covers held out-of-order data D-SACKs the overlap as it is drained (tcp_ofo_queue)', () => {
    const o = open();
    const { b, conn } = o;
    const una = conn.state.delegated.sndUna;
    const at = (n: number): number => add(o.peerSeq, n);
    peer(o, ACK, at(1000), una, bytes(1000));
    peer(o, ACK, at(2500), una, bytes(500));
    b.take();
    // A resend from rcv.nxt that covers part of the first held range: that part came twice.
    peer(o, ACK, o.peerSeq, una, bytes(1400));
    const [ans] = b.take();
    assert.equal(ans!.h.ack, at(2000));
    assert.deepEqual(rel(o, sackBlocks(ans!)), [
      [1000, 1400],
      [2500, 3000],
    ]);
    // Reported once.
    peer(o, ACK, at(2000), una, bytes(500));
    const [next] = b.take();
    assert.equal(next!.h.ack, at(3000));
    assert.deepEqual(sackBlocks(next!), []);
  });
});

describe("a socket's own buffer (SO_RCVBUF): the SYN's window (Linux's tcp_select_initial_window)", () => {
  // tcp_select_initial_window rounds the space down to whole segments of our MSS whenever it is
  // more than one, whatever set the buffer, then bounds it by the 16-bit field: so a locked
  // 2000-byte buffer offers one 1460-byte segment, and one below the MSS offers itself.
  const cases = [
    [1000, 1000],
    [2000, 1460],
    [4000, 2920],
    [100_000, 65_535],
  ] as const;

  for (const [buf, want] of cases)
    test(`a SYN of a ${buf}-byte buffer offers ${want}`, () => {
      const b = new Bench();
      b.layer.connect({ remoteIp: REMOTE, remotePort: 80, options: { rcvBufSize: buf } }, new Recorder());
      const [syn] = b.take();
      assert.equal(syn!.h.flags & SYN, SYN);
      assert.equal(syn!.h.window, want);
    });

  test("a SYN-ACK's segments are our MSS less the timestamp option once agreed (tcp_openreq_init_rwin)", () => {
    assert.equal(passiveOpen(new Bench(), {}, { rcvBufSize: 4000 }).synAck.h.window, 2920);
    // 1460 - 12 = 1448: two of them.
    const ts = passiveOpen(new Bench(), { ts: [100, 0] }, { rcvBufSize: 4000 });
    assert.ok(ts.conn.state.const.tsEnabled);
    assert.equal(ts.synAck.h.window, 2896);
  });
});
