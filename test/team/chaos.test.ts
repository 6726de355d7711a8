/**
 * Deterministic chaos: seeded scenarios on the simulator with 2-4 NICs and 100-250 connections
 * loading both directions, random link cuts and restores, blackholes, NIC crashes and loss. Every
 * seed must end with no reset and every stream complete with every byte in order. A failing seed
 * prints the command that replays it exactly; `npm run chaos -- --seeds 5000` soaks.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checkChaosSeed } from './scenario.ts';

const SEEDS = 300;

describe('team chaos', () => {
  for (let seed = 1; seed <= SEEDS; seed++) {
    test(`seed ${seed}`, async () => {
      const failure = await checkChaosSeed(seed);
      assert.equal(failure, null, failure ?? '');
    });
  }
});
