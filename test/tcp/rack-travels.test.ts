/**
 * What RACK knows of the path (the reordering degree, reordering seen, the window's multiplier and
 * its persistence, bytes resent and bytes DSACKed) is part of the connection's state, as Linux
 * keeps it in tcp_sock for the socket's life: it survives every way a connection changes owner
 * (objects in one thread, the codec, a transfer record, a rebuild from the hard-state record), and
 * a malformed value is refused before anything changes.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  emptyHardState,
  HardStateRecord,
  rebuildTcpState,
  TRANSFER_RECORD_AT,
} from '../../src/nic/hard-state.ts';
import { TransferRecord } from '../../src/nic/transfer-record.ts';
import type { TcpSoft } from '../../src/state/tcp-state.ts';
import { validateTcpState } from '../../src/state/validate.ts';
import { assertSoftRefused, HANDOVERS, type Handover, sharedCopy } from './handovers.ts';
import { ACK, activeOpen, add, Bench, bytes, REMOTE, Recorder } from './harness.ts';

const MSS = 1460;

/** A connection on a 20 ms path whose first segment came ten segments late: degree ten, learned. */
function learned() {
  const a = new Bench();
  const o = activeOpen(a, { sackPermitted: true, wscale: 0 }, undefined, 20);
  a.take();
  o.conn.write(bytes(30 * MSS));
  assert.equal(a.take().filter((s) => s.data.length > 0).length, 10);
  const una = add(o.iss, 1);
  const peer = (b: Bench, port: number, ack: number, sack?: [number, number][]) =>
    b.inject({ flags: ACK, srcPort: 80, dstPort: port, seq: o.peerSeq, ack, ...(sack ? { sack } : {}) });
  a.advance(20);
  peer(a, o.conn.localPort, una, [[add(una, 5 * MSS), add(una, 6 * MSS)]]);
  peer(a, o.conn.localPort, add(una, 10 * MSS));
  assert.equal(o.conn.rack.reordering, 10, 'the degree learned');
  // The rest as a long life on that path would leave them.
  const soft = o.conn.state.soft;
  soft.reoWndMult = 3;
  soft.reoWndPersist = 7;
  soft.rtxBytes = 5 * MSS;
  soft.dsackBytes = 2 * MSS;
  return { a, o, una, peer };
}

const RACK_FIELDS = ['reordering', 'reorderingSeen', 'reoWndMult', 'reoWndPersist'] as const;
const rackOf = (s: TcpSoft) => Object.fromEntries(RACK_FIELDS.map((k) => [k, s[k]]));

/** The state `a` released as the next owner `b` takes it, each way a connection changes owner. */
const MOVES: [string, Handover][] = [
  // Host and LocalNic in one thread (offload, move, upload by objects).
  ['objects', (s, _a, b) => Object.assign(s, { path: b.env.pathTo(REMOTE)! })],
  // A LocalNic across the codec, or a WorkerNic's batch where a record does not serve; a
  // WorkerNic's offload, move and upload.
  ...HANDOVERS,
  // A dead worker's connection rebuilt from the hard state the host holds.
  [
    'a rebuild from the hard-state record',
    (s, _a, b) => {
      const { block, send, recv } = sharedCopy(s);
      new HardStateRecord(block.sab, block.at).write(s, block.send, block.recv);
      const hard = emptyHardState();
      assert.ok(new HardStateRecord(block.sab, block.at).read(hard));
      return rebuildTcpState(hard, send, recv, s.cached, b.env.pathTo(REMOTE)!, b.env.clock.now());
    },
  ],
];

describe("RACK's knowledge of the path travels with the connection (Linux's tp->reordering)", () => {
  for (const [how, move] of MOVES) {
    test(`moved by ${how}: the new owner keeps the degree and the rest RACK learned of the path`, () => {
      const { a, o } = learned();
      const before = rackOf(o.conn.state.soft);
      const counts = { rtxBytes: o.conn.state.soft.rtxBytes, dsackBytes: o.conn.state.soft.dsackBytes };
      const b = new Bench();
      b.advance(a.env.clock.now() - b.env.clock.now());
      const moved = move(a.layer.release(o.conn), a, b);
      // Both counts, not only their difference (which the hard-state record once kept): RACK's
      // accounting of resends and DSACKs goes on from them at the new owner.
      assert.deepEqual({ rtxBytes: moved.soft.rtxBytes, dsackBytes: moved.soft.dsackBytes }, counts);
      const conn = b.layer.adopt(moved, new Recorder(), { prod: false });
      assert.deepEqual(rackOf(conn.state.soft), before, 'what RACK learned moved with it');
      assert.equal(conn.rack.reordering, 10, "the new owner's RACK reads the degree");
      assert.equal(conn.rack.reorderingSeen, true);
      // Reordering seen, its window is a quarter of the minimum RTT times three at the new owner,
      // not zero: a segment SACKed past a hole is not taken for a loss at once.
      assert.ok(conn.rack.reoWnd(conn.state, MSS) > 0, 'a reordering window at the new owner');
    });
  }
});

describe("RACK's knowledge of the path is validated", () => {
  // The third: the wire carries the value as it is (or as another invalid one), so the decoder
  // sees it; a fraction in a u16 or a 1 in a bool leave the encoder as a valid value.
  const bad: [keyof TcpSoft, unknown, boolean][] = [
    ['reordering', 2, true],
    ['reordering', 301, true],
    ['reordering', 10.5, false],
    ['reordering', Number.NaN, true],
    ['reorderingSeen', 1, false],
    ['reoWndMult', 0, true],
    ['reoWndMult', 256, true],
    ['reoWndPersist', 17, true],
    ['rtxBytes', -1, true],
    ['rtxBytes', 1.5, true],
    ['dsackBytes', Number.POSITIVE_INFINITY, true],
  ];
  for (const [field, value, onWire] of bad) {
    test(`soft.${field} = ${String(value)}: refused by the validator, the encoder, the decoder and a record's reader`, () => {
      const { a, o } = learned();
      const s = a.layer.release(o.conn);
      const refused = assertSoftRefused(s, field, value, onWire);
      // A transfer record carries any number (a bool slot reads back a bool): its reader's batch
      // validation refuses it.
      if (field === 'reorderingSeen') return;
      const { block, send, recv } = sharedCopy(s);
      const rec = new TransferRecord(block.sab, block.at + TRANSFER_RECORD_AT);
      rec.write(s, 0, 0, 1, recv);
      assert.ok(rec.take(1));
      const read = rec.read(0, s.path, send, recv);
      assert.throws(() => validateTcpState(read), refused, "a record's reader");
    });
  }
});
