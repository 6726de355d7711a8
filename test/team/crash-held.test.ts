/**
 * A crashed NIC drops whatever it is handed, and a crash's rebuild, batch after batch, takes time:
 * the peers' segments for connections not yet rebuilt (their retransmissions among them) must be
 * held by the host for the new owner, not forwarded into the dead NIC. Lost there, a peer's stream
 * resumed only with its next retransmission timeout after its connection's rebuild, backed off
 * through the whole dead time (at 10,000 connections, the crash's slowest resume was that step).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertClean, runScenario } from './scenario.ts';

const CONNS = 40;

test('a crash: the peers resend into the rebuild, and every stream resumes by the failover end', async () => {
  let detectedAt = -1;
  const firstAfter = new Map<string, number>();
  // A work clock for the charged moves: 3 ms per connection the host points at its new owner, so
  // the rebuild of 10 batches spans 120 ms of virtual time, several of the peers' timeouts
  // (minimum RTO 20 ms).
  let work = 0;
  const r = await runScenario({
    seed: 3,
    nics: 2,
    conns: CONNS,
    bytes: 100_000,
    batchSize: 4,
    rateBps: 2e7,
    faults: [{ at: 20, kind: 'crash', nic: 0 }],
    offloadTo: 0,
    onRig: (rig) => {
      rig.manager.chargeWallTime = true;
      rig.manager.workClock = () => work;
      const tcp = rig.host.stack.tcp;
      const forwardTo = tcp.forwardTo.bind(tcp);
      tcp.forwardTo = (...args: Parameters<typeof tcp.forwardTo>) => {
        work += 3;
        forwardTo(...args);
      };
      rig.team.on('failure', (ev: { at: number }) => {
        if (detectedAt < 0) detectedAt = ev.at;
      });
    },
    onData: (stream, at, now) => {
      const k = `${at}:${stream}`;
      if (detectedAt >= 0 && !firstAfter.has(k)) firstAfter.set(k, now);
    },
  });
  assertClean(r);
  const f = r.rig.team.failovers.find((x) => x.nic === r.rig.nics[0]!.id);
  assert.ok(f, 'the member failed over');
  assert.equal(f.cause, 'dead');
  assert.equal(f.connections, CONNS);
  assert.ok(f.resumeMs >= 3 * CONNS - 1e-6, `${f.resumeMs} ms charged`);
  let slowestFromPeer = -1;
  let fromPeer = 0;
  for (const [k, t] of firstAfter) {
    if (!k.startsWith('team:')) continue;
    fromPeer++;
    slowestFromPeer = Math.max(slowestFromPeer, t - detectedAt);
  }
  assert.ok(fromPeer >= CONNS / 4, `${fromPeer} of the peer's streams were still sending at the crash`);
  // The held segments are replayed as each batch settles: a stream into the team resumes by the
  // end of the failover plus a delivery, not at its peer's next backed-off timeout.
  assert.ok(
    slowestFromPeer <= f.resumeMs + 5,
    `the peer's slowest stream resumed ${slowestFromPeer.toFixed(1)} ms after detection; the failover lasted ${f.resumeMs.toFixed(1)} ms`,
  );
  assert.ok(r.rig.host.stack.counters.get('tcp.frozen.refused') > 0, 'segments for the dead NIC were held');
});
