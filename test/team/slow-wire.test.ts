/**
 * A team of LocalNics behind a slow wire (2 Mbit/s into a 64 KiB queue: 260 ms of it) whose
 * connections start from an RTO sized to the empty path (2 ms RTT, a 20 ms minimum). The queue
 * fills within a round trip and the RTO fires; the ACKs of the originals queued before it echo
 * timestamps from before the timeout, which give no RTT sample (rttEchoFloor). Each of them had
 * ended the backoff, so the timer fired again on the unlearnt RTO, over and over.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { assertClean, runScenario } from './scenario.ts';

describe('a team behind a slow wire', () => {
  test('ten duplex streams at 2 Mbit/s finish near the wire time, not at a third of its rate', async () => {
    // 3 MB each way at 250 kB/s: 12 s of wire; 15.2 s of virtual time. Before: 40.5 s, so with
    // the limit below 20 streams unfinished.
    const r = await runScenario({
      seed: 43,
      nics: 2,
      conns: 10,
      bytes: 300_000,
      duplex: true,
      rateBps: 2e6,
      offloadTo: 1,
      limitMs: 30_000,
    });
    assertClean(r);
    const rtos = r.rig.nics[1]!.engine.counters.get('tcp.rto');
    const span = r.finishedAt - r.startedAt;
    assert.ok(rtos < 500, `timeouts on the member that runs them: ${rtos} in ${span} ms`);
  });
});
