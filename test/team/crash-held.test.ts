/**
 * A crashed NIC drops whatever it is handed, and a crash's rebuild, batch after batch, takes time:
 * the peers' segments for connections not yet rebuilt (their retransmissions among them) must be
 * held by the host for the new owner, not forwarded into the dead NIC. Lost there, a peer's stream
 * resumed only with its next retransmission timeout after its connection's rebuild, backed off
 * through the whole dead time (at 10,000 connections, the crash's slowest resume was that step).
 *
 * And what the rebuild does per connection on the host's thread, charged to the peers' wait: it
 * finds each connection's host table entry once and reads its tag and placeholder from it, and
 * replays what a placeholder held for the new owner in one inject, not one deferred call a segment.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ConnKey } from '../../src/nic/nic.ts';
import { assertClean, runScenario } from './scenario.ts';
import type { TeamRig } from './team-sim.ts';

const CONNS = 40;

/**
 * A crash of member 0 with its streams running, charged; `watch` is called once the rig is built,
 * with whether the failover runs now.
 */
async function crashRun(
  watch?: (rig: TeamRig, during: () => boolean) => void,
  onData?: (stream: number, at: 'peer' | 'team', now: number) => void,
) {
  let detectedAt = -1;
  let inFailover = false;
  // A work clock for the charged moves: 3 ms per connection the host points at its new owner (by
  // key, or by the table entry the recovery carries), so the rebuild of 10 batches spans 120 ms
  // of virtual time, several of the peers' timeouts (minimum RTO 20 ms).
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
      const forwardIn = tcp.forwardIn.bind(tcp);
      tcp.forwardIn = (...args: Parameters<typeof tcp.forwardIn>) => {
        work += 3;
        forwardIn(...args);
      };
      rig.team.on('failure', (ev: { at: number }) => {
        if (detectedAt < 0) detectedAt = ev.at;
        inFailover = true;
      });
      rig.team.on('failover', () => {
        inFailover = false;
      });
      watch?.(rig, () => inFailover);
    },
    onData:
      onData === undefined ? undefined : (stream, at, now) => detectedAt >= 0 && onData(stream, at, now),
  });
  assertClean(r);
  const f = r.rig.team.failovers.find((x) => x.nic === r.rig.nics[0]!.id);
  assert.ok(f, 'the member failed over');
  assert.equal(f.cause, 'dead');
  assert.equal(f.connections, CONNS);
  return { r, f, detectedAt };
}

test('a crash: the peers resend into the rebuild, and every stream resumes by the failover end', async () => {
  const firstAfter = new Map<string, number>();
  const { r, f, detectedAt } = await crashRun(undefined, (stream, at, now) => {
    const k = `${at}:${stream}`;
    if (!firstAfter.has(k)) firstAfter.set(k, now);
  });
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

test("a crash's rebuild searches the host's table for no connection at the freeze or the settle", async () => {
  let byKey = 0;
  await crashRun((rig, during) => {
    const tcp = rig.host.stack.tcp;
    const freeze = tcp.freeze.bind(tcp);
    const forwardTo = tcp.forwardTo.bind(tcp);
    tcp.freeze = (...a: Parameters<typeof tcp.freeze>) => {
      if (during()) byKey++;
      freeze(...a);
    };
    tcp.forwardTo = (...a: Parameters<typeof tcp.forwardTo>) => {
      if (during()) byKey++;
      forwardTo(...a);
    };
  });
  // Each connection's entry is found when the recovery lists it, as a move's are.
  assert.equal(byKey, 0, `${byKey} freezes and forwards by key`);
});

test("a crash's rebuild replays each placeholder's held segments in one inject", async () => {
  let calls = 0;
  let packets = 0;
  const { r } = await crashRun((rig, during) => {
    const to = rig.nics[1]!;
    const inject = to.inject.bind(to);
    // The settle's keys go on with the segments: they end the destination's hold of its link's input.
    to.inject = (ps: readonly Uint8Array[], settled?: readonly ConnKey[]) => {
      if (during()) {
        calls++;
        packets += ps.length;
      }
      inject(ps, settled);
    };
  });
  const held = r.rig.host.stack.counters.get('tcp.frozen.refused');
  assert.ok(held > CONNS, `${held} segments held for the dead NIC`);
  assert.ok(packets >= held, `${packets} segments injected at the new owner, ${held} held`);
  // At most one call per rebuilt connection (and per segment arriving after it), where each held
  // segment was a call of its own.
  assert.ok(calls <= packets - (held - CONNS), `${calls} injects for ${packets} segments (${held} held)`);
});
