/**
 * The policy's scanner in a burst of accepts: the accepts that wait for their placement go first,
 * a scan begins at the end of the task that accepted them and the next transfer as the one before
 * ends, never on a later timer turn (under load the timer fired only after the loop's other
 * phases: 300-1,000 ms between transfers against the kernel).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { makePolicy, PLACE_PIPELINE, POLICY_BATCH, PolicyScanner } from '../../src/offload/policy.ts';
import type { Stack } from '../../src/stack/stack.ts';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import { TcpStateId } from '../../src/state/tcp-state.ts';

/** What the scanner reads of a connection: an established one the host runs. */
function fakeConn(): TcpConnection {
  return {
    state: { delegated: { state: TcpStateId.ESTABLISHED } },
    listener: null,
    stats: { bytesIn: 0, bytesOut: 0 },
  } as unknown as TcpConnection;
}

function rig() {
  const clock = new VirtualClock();
  const conns = new Set<TcpConnection>();
  const stack = {
    clock,
    tcp: { connections: () => conns.values() },
    counters: { inc() {} },
  } as unknown as Stack;
  const batches: TcpConnection[][] = [];
  const ends: (() => void)[] = [];
  const scanner = new PolicyScanner(
    stack,
    makePolicy({ mode: 'immediate', scanIntervalMs: 100 }),
    (ready) => {
      batches.push(ready);
      return new Promise<void>((resolve) => {
        ends.push(() => {
          for (const c of ready) conns.delete(c);
          resolve();
        });
      });
    },
    (e) => {
      throw e;
    },
  );
  return { clock, conns, scanner, batches, ends };
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('PolicyScanner in a burst of accepts', () => {
  test('accepts waiting for their placement go before connections the host already serves', async () => {
    const { conns, scanner, batches, ends } = rig();
    const served = Array.from({ length: POLICY_BATCH }, fakeConn);
    for (const c of served) conns.add(c);
    const accepts = Array.from({ length: 10 }, fakeConn);
    const placed = accepts.map((c) => {
      conns.add(c);
      return scanner.placed(c);
    });
    await turn();
    assert.equal(batches.length, 1);
    const first = batches[0]!;
    assert.equal(first.length, POLICY_BATCH);
    assert.deepEqual(
      accepts.filter((c) => !first.includes(c)),
      [],
      'every waiting accept in the first transfer',
    );
    ends[0]!();
    await Promise.all(placed);
    assert.equal(scanner.placing, 0);
    scanner.stop();
  });

  test('two transfers go at once, and the next begins as one ends, with no timer turn between', async () => {
    const { conns, scanner, batches, ends } = rig();
    const n = POLICY_BATCH * 2 + 10;
    const placed: Promise<void>[] = [];
    for (let i = 0; i < n; i++) {
      const c = fakeConn();
      conns.add(c);
      placed.push(scanner.placed(c));
    }
    await turn();
    // One at a time, the host and the worker each idled while the other worked on a transfer:
    // 21 transfers of a burst of 5,000 one after the other, the last 12.6 s after the first accept.
    assert.equal(batches.length, PLACE_PIPELINE, 'as many transfers as the pipeline holds, at once');
    assert.equal(new Set(batches.flat()).size, POLICY_BATCH * 2, 'no connection in two of them');
    // The clock does not move from here: only the ends of the transfers drive the scanner.
    ends[0]!();
    await turn();
    assert.equal(batches.length, 3, 'transfer 3 began as transfer 1 ended');
    ends[1]!();
    ends[2]!();
    assert.deepEqual(
      batches.map((b) => b.length),
      [POLICY_BATCH, POLICY_BATCH, 10],
    );
    await Promise.all(placed);
    assert.equal(scanner.placing, 0);
    scanner.stop();
  });

  test('accepts are taken by a scan at the end of the task that accepted them, with no timer turn', async () => {
    const { clock, conns, scanner, batches, ends } = rig();
    // The periodic scan is far off and finds nothing: nothing to place yet.
    clock.advance(100);
    assert.deepEqual(batches, []);
    const accepts = Array.from({ length: 3 }, fakeConn);
    const placed = accepts.map((c) => {
      conns.add(c);
      return scanner.placed(c);
    });
    assert.equal(batches.length, 0, 'not within the task that accepted them');
    await turn();
    assert.equal(batches.length, 1, 'one scan, the clock standing still');
    assert.deepEqual(batches[0], accepts);
    ends[0]!();
    await Promise.all(placed);
    scanner.stop();
  });

  test('transfers that place nothing (every member full) do not follow one another without a turn', {
    timeout: 5000,
  }, async () => {
    const clock = new VirtualClock();
    const conns = new Set<TcpConnection>();
    for (let i = 0; i < POLICY_BATCH * 3; i++) conns.add(fakeConn());
    const stack = {
      clock,
      tcp: { connections: () => conns.values() },
      counters: { inc() {} },
    } as unknown as Stack;
    let transfers = 0;
    // Refused whole at once: the connections stay in the host.
    const scanner = new PolicyScanner(
      stack,
      makePolicy({ mode: 'immediate', scanIntervalMs: 100 }),
      async () => {
        // Bounded, so a loop of microtasks ends and the assertion below says what happened.
        if (++transfers > 10) scanner.stop();
      },
      (e) => {
        throw e;
      },
    );
    clock.advance(100);
    await turn();
    assert.equal(transfers, 1, 'one transfer, then a timer turn before the next');
    clock.advance(0);
    await turn();
    assert.equal(transfers, 2);
    scanner.stop();
  });
});
