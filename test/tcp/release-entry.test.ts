import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type TcpState, TcpStateId } from '../../src/state/tcp-state.ts';
import { ACK, activeOpen, Bench, bytes, Recorder } from './harness.ts';

/** A segment of `n` bytes from the peer of released state `s`, in order, into `a`. */
function dataFromPeer(a: Bench, s: TcpState, n: number): void {
  const c = s.const;
  a.inject({
    flags: ACK,
    srcPort: c.remotePort,
    dstPort: c.localPort,
    seq: s.delegated.rcvNxt,
    ack: s.delegated.sndNxt,
    ts: [5100, 1001],
    data: bytes(n),
  });
}

/** An established connection, and the count of entries its table had made. */
function established() {
  const a = new Bench();
  const o = activeOpen(a, { ts: [5000, 1001] });
  return { a, o, table: a.layer.table, made: a.layer.table.entriesMade };
}

test('a released connection leaves its placeholder in its own table entry, which holds what arrives', () => {
  const { a, o, table, made } = established();
  const s = a.layer.release(o.conn);
  // The entry the connection ran in now holds its placeholder: none made, none hashed anew.
  assert.equal(table.entriesMade, made);
  assert.equal(table.size, 0);
  assert.equal(table.heldSize, 1);
  const c = s.const;
  a.take();
  // A segment for the tuple meanwhile is held for the next owner, not answered with a RST.
  dataFromPeer(a, s, 100);
  assert.equal(a.take().length, 0);
  const held = a.layer.takeQueued(c.localIp, c.localPort, c.remoteIp, c.remotePort);
  assert.equal(held.length, 1);
  // The next owner runs it as before.
  const b = new Bench();
  b.advance(a.env.clock.now() - b.env.clock.now());
  const conn = b.layer.adopt(s, new Recorder());
  assert.equal(conn.state.delegated.state, TcpStateId.ESTABLISHED);
  for (const p of held) b.layer.inputPacket(p);
  assert.equal(conn.state.delegated.recvBuffer.length, 100);
});

test('a connection that leaves and comes back takes up a spare entry, and its tuple is found again', () => {
  const { a, o, table, made } = established();
  let s = a.layer.release(o.conn);
  const c = s.const;
  for (let round = 0; round < 5; round++) {
    // As a worker's terminate: the placeholder is dropped at once, the entry pruned.
    a.layer.dropFrozen(c.localIp, c.localPort, c.remoteIp, c.remotePort);
    assert.equal(table.size + table.heldSize, 0);
    const conn = a.layer.adopt(s, new Recorder());
    assert.equal(a.layer.lookup(c.localIp, c.localPort, c.remoteIp, c.remotePort), conn);
    a.take();
    s = a.layer.release(conn);
  }
  // An entry and its links per move before.
  assert.equal(table.entriesMade, made);
  dataFromPeer(a, s, 10);
  assert.equal(a.take().length, 0, 'held for the next owner, not answered with a RST');
  assert.equal(a.layer.takeQueued(c.localIp, c.localPort, c.remoteIp, c.remotePort).length, 1);
});
