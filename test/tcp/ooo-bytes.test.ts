/**
 * The memory charge reads a connection's out-of-order bytes at every write and segment, so it
 * keeps a running sum (`TcpConnection.oooBytes`) instead of walking the queue. Under random
 * segments (in order, ahead of holes, overlapping what is held, duplicated), reads, memory-limit
 * prunes and drops at the limit, the sum always equals the walk.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { connBytes, oooBytesOf } from '../../src/stack/tcp/tcp-mem.ts';
import fc from '../helpers/fc.ts';
import { ACK, add, Bench, bytes, passiveOpen } from './harness.ts';

type Op =
  | { kind: 'seg'; ahead: number; len: number }
  | { kind: 'read'; n: number }
  | { kind: 'prune' }
  | { kind: 'full'; on: boolean };

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      kind: fc.constant('seg' as const),
      ahead: fc.integer({ min: 0, max: 40_000 }),
      len: fc.integer({ min: 1, max: 3000 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('seg' as const),
      ahead: fc.constant(0),
      len: fc.integer({ min: 1, max: 3000 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('read' as const), n: fc.integer({ min: 1, max: 20_000 }) }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: 'prune' as const }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('full' as const), on: fc.boolean() }) },
);

const OPS = 300;

describe('out-of-order bytes: a running sum', () => {
  test(`equals the walk of the queue after every one of ${OPS} random operations`, () => {
    fc.assert(
      fc.property(fc.array(op, { minLength: OPS, maxLength: OPS }), (ops) => {
        const b = new Bench({ seed: 3 });
        const { conn, iss } = passiveOpen(b, {}, { rcvBufSize: 64 << 10 });
        const payload = bytes(3000);
        const sink = new Uint8Array(20_000);
        const budget = b.layer.budget;
        for (const o of ops) {
          if (o.kind === 'seg') {
            const seq = add(conn.state.delegated.rcvNxt, o.ahead);
            b.inject({ flags: ACK, seq, ack: add(iss, 1), data: payload.subarray(0, o.len) });
          } else if (o.kind === 'read') conn.read(sink, 0, o.n);
          else if (o.kind === 'prune') {
            const limit = budget.memBytes;
            budget.set({ memBytes: 1 });
            budget.prune(conn);
            budget.set({ memBytes: limit });
          } else budget.set({ memBytes: o.on ? 1 : Number.POSITIVE_INFINITY });
          b.flush();
          const walked = oooBytesOf(conn.state.soft.ooo);
          assert.equal(conn.oooBytes, walked);
          const d = conn.state.delegated;
          assert.equal(connBytes(conn), d.sendBuffer.capacity + d.recvBuffer.capacity + walked);
          assert.equal(conn.memCharged <= budget.used, true);
        }
        return true;
      }),
      { numRuns: 60 },
    );
  });

  test('a connection adopted with out-of-order data starts from its walk', () => {
    const b = new Bench({ seed: 4 });
    const { conn, iss } = passiveOpen(b);
    b.inject({
      flags: ACK,
      seq: add(conn.state.delegated.rcvNxt, 5000),
      ack: add(iss, 1),
      data: bytes(1200),
    });
    b.inject({ flags: ACK, seq: add(conn.state.delegated.rcvNxt, 9000), ack: add(iss, 1), data: bytes(700) });
    assert.equal(conn.oooBytes, 1900);
    const s = b.layer.release(conn);
    const again = b.layer.adopt(s, null);
    assert.equal(again.oooBytes, oooBytesOf(s.soft.ooo));
    assert.equal(again.oooBytes, 1900);
  });
});
