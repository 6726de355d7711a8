import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidArgumentError } from '../../src/core/errors.ts';
import { NicEngine } from '../../src/nic/nic-engine.ts';
import { WorkerNic } from '../../src/nic/worker-nic.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';

// A settle hold's bound must be a finite number of ms, 0 or more: Infinity would hold a moved
// connection's link input for good when its settle never comes, and a negative bound arms the
// hold's timer in the past. Both are refused as the other options are, before anything runs.
const BAD = [Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -1, Number.NaN, '5' as unknown as number];

test('NicEngine refuses a settleHoldMs that is not a finite number of ms, 0 or more', () => {
  const net = new SimNetwork({ seed: 1, virtualTime: true });
  const make = (settleHoldMs: number | undefined, name: string) =>
    new NicEngine({
      id: name,
      link: net.switch.addPort({ name, mtu: 1500 }),
      clock: net.clock,
      random: net.random.fork(),
      toHost: () => {},
      indicate: () => {},
      settleHoldMs,
    });
  for (const [i, ms] of BAD.entries())
    assert.throws(() => make(ms, `bad${i}`), InvalidArgumentError, `settleHoldMs ${String(ms)}`);
  for (const [i, ms] of [undefined, 0, 250, 60_000].entries()) make(ms, `good${i}`).close();
  net.close();
});

test('WorkerNic refuses such a settleHoldMs seam before it spawns a thread', () => {
  const net = new SimNetwork({ seed: 2, virtualTime: false });
  for (const [i, ms] of BAD.entries()) {
    const link = net.switch.addPort({ name: `w${i}`, mtu: 1500 });
    let nic: WorkerNic | undefined;
    assert.throws(
      () => {
        nic = new WorkerNic({ id: `w${i}`, link }, { settleHoldMs: ms });
      },
      InvalidArgumentError,
      `settleHoldMs ${String(ms)}`,
    );
    nic?.close();
  }
  net.close();
});
