/**
 * The ways a released TCP state reaches its next owner, for tests that check what survives a
 * hand-over: through the codec (a LocalNic, or a batch between processes) or a transfer record (a
 * WorkerNic's offload, move and upload).
 */
import assert from 'node:assert/strict';
import { StateValidationError } from '../../src/core/errors.ts';
import { allocConnBlock, connRingCapacities, TRANSFER_RECORD_AT } from '../../src/nic/hard-state.ts';
import { TransferRecord } from '../../src/nic/transfer-record.ts';
import { ByteRing } from '../../src/state/byte-ring.ts';
import { flattenTrees } from '../../src/state/offload-tree.ts';
import { decodeBatch, encodeBatch } from '../../src/state/state-codec.ts';
import type { TcpState } from '../../src/state/tcp-state.ts';
import { validateTcpState } from '../../src/state/validate.ts';
import { type Bench, REMOTE } from './harness.ts';

/** `s`'s shared block, as a worker's connection has one (the rings' bytes copied into it). */
export function sharedCopy(s: TcpState) {
  const caps = connRingCapacities(s, 1 << 18);
  const block = allocConnBlock(caps.send, caps.recv);
  const send = ByteRing.createShared(block.send.capacity, block.send);
  const recv = ByteRing.createShared(block.recv.capacity, block.recv);
  send.write(s.delegated.sendBuffer.toArray());
  recv.write(s.delegated.recvBuffer.toArray());
  return { block, send, recv };
}

export type Handover = (s: TcpState, a: Bench, b: Bench) => TcpState;

/** The state `a` released, as the owner `b` reads it: through the codec (LocalNic) or a record (WorkerNic). */
export const HANDOVERS: [string, Handover][] = [
  [
    'the codec',
    (s, a, b) => {
      const tree = { neighbor: s.path.neighbor, paths: [{ path: s.path, conns: [s] }] };
      const back = flattenTrees(decodeBatch(encodeBatch([tree], a.env.clock.now()), b.env.clock.now()))[0]!;
      back.path = b.env.pathTo(REMOTE)!;
      return back;
    },
  ],
  [
    'a transfer record',
    (s, a, b) => {
      const { block, send, recv } = sharedCopy(s);
      const rec = new TransferRecord(block.sab, block.at + TRANSFER_RECORD_AT);
      rec.write(s, a.env.clock.now(), 0, 1, recv);
      assert.ok(rec.take(1));
      return rec.read(b.env.clock.now(), b.env.pathTo(REMOTE)!, send, recv);
    },
  ],
];

/**
 * Put `value` in `s.soft[field]` and assert that the validator and the encoder refuse it by name,
 * and the decoder too when `onWire` (the wire carries the value as it is; a fraction in an integer
 * or a 1 in a bool leaves the encoder as a valid value). Returns the refusal's test.
 */
export function assertSoftRefused(s: TcpState, field: string, value: unknown, onWire: boolean) {
  (s.soft as unknown as Record<string, unknown>)[field] = value;
  const refused = (e: unknown) => e instanceof StateValidationError && e.field === `soft.${field}`;
  assert.throws(() => validateTcpState(s), refused, 'validator');
  const tree = { neighbor: s.path.neighbor, paths: [{ path: s.path, conns: [s] }] };
  assert.throws(() => encodeBatch([tree], 0), refused, 'encoder');
  // Bytes from elsewhere (written without validation): the decoder refuses the batch whole.
  if (onWire) {
    const wire = encodeBatch([tree], 0, { skipValidation: true });
    assert.throws(() => decodeBatch(wire, 0), refused, 'decoder');
  }
  return refused;
}
