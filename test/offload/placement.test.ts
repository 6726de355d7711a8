import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import type { Nic } from '../../src/nic/nic.ts';
import { placeByFreeCapacity } from '../../src/offload/policy.ts';
import type { TransferReport } from '../../src/offload/transfer.ts';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import { offloadPair, startStreams } from './helpers.ts';

/** Only what placement reads of a NIC. */
function nic(id: string, capacity: number, load: number): Nic {
  return { id, capacity, load } as Nic;
}

describe('placeByFreeCapacity', () => {
  test('each connection goes to the NIC with the most room left, so a batch evens out the load', () => {
    const a = nic('a', 10, 6);
    const b = nic('b', 10, 0);
    const c = nic('c', 4, 3);
    const items = Array.from({ length: 12 }, (_, i) => i);
    const { groups, unplaced } = placeByFreeCapacity(items, [a, b, c]);
    assert.deepEqual(unplaced, []);
    const took = (n: Nic) => groups.get(n)?.length ?? 0;
    assert.equal(took(a) + took(b) + took(c), 12);
    // Free before: a 4, b 10, c 1. The roomiest takes each in turn: b alone down to 4, then a and
    // b by turns down to 1 each, c (1 free) never being roomier than both.
    assert.deepEqual([took(a), took(b), took(c)], [3, 9, 0]);
    assert.deepEqual(
      [a, b, c].map((n) => n.capacity - n.load - took(n)),
      [1, 1, 1],
    );
  });

  test('what fits nowhere is returned unplaced, in order', () => {
    const a = nic('a', 2, 1);
    const b = nic('b', 1, 1);
    const { groups, unplaced } = placeByFreeCapacity(['x', 'y', 'z'], [a, b]);
    assert.deepEqual(groups.get(a), ['x']);
    assert.equal(groups.get(b), undefined);
    assert.deepEqual(unplaced, ['y', 'z']);
  });

  test('no NIC: nothing placed', () => {
    const { groups, unplaced } = placeByFreeCapacity([1, 2], []);
    assert.equal(groups.size, 0);
    assert.deepEqual(unplaced, [1, 2]);
  });
});

describe('placements in flight', () => {
  test('a placement made while another is still on its way counts that one, and the team ends even', async () => {
    const p = offloadPair(23);
    const { net, host } = p;
    const st = await startStreams(p, 16, 20_000, 1400, 10);
    const [n0, n1] = host.nics as LocalNic[];
    // The general protocol (release, initiate), as between threads: the second NIC answers its
    // initiates 50 ms late (a worker busy elsewhere), so the first batch's half there is still on
    // its way when the second batch is placed.
    host.offload.liveHandover = false;
    const initiate = n1!.initiate.bind(n1!);
    n1!.initiate = async (...args: Parameters<LocalNic['initiate']>) => {
      await net.sleep(50);
      return initiate(...args);
    };
    // The policy's offloads go side by side (PLACE_PIPELINE); explicit ones wait for each other.
    const conns = st.sockets.map((s) => s.connection as TcpConnection);
    const policy = host.offload as unknown as { policyOffload(cs: TcpConnection[]): Promise<TransferReport> };
    const place = (cs: TcpConnection[]) => policy.policyOffload(cs);
    const first = place(conns.slice(0, 8));
    await net.sleep(20);
    assert.deepEqual([n0!.load, n1!.load], [4, 0], 'half the first batch installed, half on its way');
    const second = place(conns.slice(8));
    const [a, b] = await Promise.all([first, second]);
    assert.equal(a.moved.length + b.moved.length, 16);
    assert.deepEqual([n0!.load, n1!.load], [8, 8]);
    assert.equal(await st.done, 0);
    net.close();
  });
});

describe("the offload hook (serve's CHIMNEY_LAG_LOG)", () => {
  test("is told of the policy's offloads and the public verb's, each with its connections and end", async () => {
    const p = offloadPair(29);
    const { net, host } = p;
    const st = await startStreams(p, 6, 20_000, 1400, 10);
    const told: { connections: number; ended: boolean }[] = [];
    host.offload.onOffload = (connections, done) => {
      const t = { connections, ended: false };
      told.push(t);
      void done.then(() => {
        t.ended = true;
      });
    };
    const conns = st.sockets.map((s) => s.connection as TcpConnection);
    const policy = host.offload as unknown as { policyOffload(cs: TcpConnection[]): Promise<TransferReport> };
    const a = await policy.policyOffload(conns.slice(0, 4));
    const b = await host.offload.offload(conns.slice(4));
    assert.equal(a.moved.length + b.moved.length, 6);
    assert.deepEqual(told, [
      { connections: 4, ended: true },
      { connections: 2, ended: true },
    ]);
    assert.equal(await st.done, 0);
    net.close();
  });
});
