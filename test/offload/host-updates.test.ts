/**
 * HostUpdates tells each NIC that runs connections of a neighbor's or a path's change. A worker
 * NIC's `load` also counts closed connections whose blocks their sockets hold unread (WorkerNic's
 * heldClosed): one holding only those runs no connection to update, so it is passed over; one running
 * any is told.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Nic, OffloadUpdate } from '../../src/nic/nic.ts';
import { HostUpdates } from '../../src/offload/host-updates.ts';
import type { Stack } from '../../src/stack/stack.ts';
import type { NeighborState } from '../../src/state/neighbor-state.ts';

test('host updates pass over a NIC that holds only closed connections’ blocks, and tell one that runs connections', () => {
  let neighborChanged: ((nb: NeighborState) => void) | null = null;
  const stack = {
    neighbors: { onChange: (cb: (nb: NeighborState) => void) => (neighborChanged = cb) },
    ip: { onChange: () => {} },
  } as unknown as Stack;
  const told: string[] = [];
  const nic = (id: string, runningConns: number, load: number): Nic =>
    ({
      id,
      runningConns,
      load,
      update: (u: OffloadUpdate) => {
        told.push(`${id} ${u.kind}`);
        return Promise.resolve();
      },
    }) as unknown as Nic;
  const nics = [nic('held-only', 0, 3), nic('running', 2, 2), nic('idle', 0, 0)];
  new HostUpdates(
    stack,
    () => nics,
    () => true,
    (e) => {
      throw e;
    },
  );
  const nb = { const: { ip: 0x0a000002 }, cached: { dstMac: 0x020000000002 } } as unknown as NeighborState;
  neighborChanged!(nb);
  assert.deepEqual(told, ['running neighbor']);
});
