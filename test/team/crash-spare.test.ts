/**
 * A LocalNic's crash, rebuilt: each connection's state is the one the dead NIC released, made new
 * in place (resetTcpState), not a new object per connection, and not validated field by field,
 * since its record was taken in this thread from a state this thread ran. At 10,000 connections
 * the objects made and the validations were most of the rebuild's charged time, and the
 * collections the objects brought landed there too. Streams stay whole. The connection objects
 * too: the surviving NIC takes up the ones the dead NIC released (TcpConnection.revive), with their
 * keys and timers, instead of making a connection, a key and a timer per connection.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import type { TcpState } from '../../src/state/tcp-state.ts';
import { assertClean, runScenario, type ScenarioResult } from './scenario.ts';

const CONNS = 40;
/** Two LocalNics, 40 streams offloaded to the first, which crashes 15 ms in. */
const CRASH_OF_NIC0 = {
  seed: 5,
  nics: 2,
  conns: CONNS,
  bytes: 60_000,
  batchSize: 8,
  rateBps: 2e7,
  faults: [{ at: 15, kind: 'crash' as const, nic: 0 }],
  offloadTo: 0,
};

/**
 * Sees each connection NIC 0 runs as it crashes (before the crash releases them) and each one NIC 1
 * runs once the team has failed over.
 */
function watchCrash(
  rig: ScenarioResult['rig'],
  w: {
    atCrash: (c: TcpConnection) => void;
    beforeCrash?: () => void;
    atFailover: (c: TcpConnection) => void;
  },
): void {
  const nic = rig.nics[0]!;
  const crash = nic.crash.bind(nic);
  nic.crash = (cause?: string) => {
    for (const c of nic.engine.tcp.connections()) w.atCrash(c);
    w.beforeCrash?.();
    crash(cause);
  };
  rig.team.on('failover', () => {
    for (const c of rig.nics[1]!.engine.tcp.connections()) w.atFailover(c);
  });
}

test('a crash rebuilds into the states the dead LocalNic released: none made, none validated', async () => {
  const released = new Set<TcpState>();
  const rebuilt: TcpState[] = [];
  const r = await runScenario({
    ...CRASH_OF_NIC0,
    onRig: (rig) =>
      watchCrash(rig, {
        atCrash: (c) => released.add(c.state),
        atFailover: (c) => rebuilt.push(c.state),
      }),
  });
  assertClean(r);
  const f = r.rig.team.failovers.find((x) => x.nic === r.rig.nics[0]!.id);
  assert.ok(f, 'the member failed over');
  assert.equal(f.cause, 'dead');
  assert.equal(f.connections, CONNS);
  assert.equal(released.size, CONNS, 'every connection ran on the member that crashed');
  assert.equal(rebuilt.length, CONNS, 'and runs on the other after the failover');
  assert.equal(rebuilt.filter((s) => !released.has(s)).length, 0, 'no state made anew');
  const counters = r.rig.host.stack.counters;
  assert.equal(counters.get('offload.rebuilt'), CONNS);
  assert.equal(counters.get('offload.rebuilt.made'), 0);
  assert.equal(counters.get('offload.rebuilt.validated'), 0);
});

test('a crash runs the rebuilt connections on the objects the dead LocalNic released: none made', async () => {
  const released = new Set<TcpConnection>();
  const rebuilt: TcpConnection[] = [];
  let timersBefore = -1;
  const r = await runScenario({
    ...CRASH_OF_NIC0,
    onRig: (rig) =>
      watchCrash(rig, {
        atCrash: (c) => released.add(c),
        beforeCrash: () => {
          timersBefore = rig.nics[1]!.engine.counters.get('tcp.timers.made');
        },
        atFailover: (c) => rebuilt.push(c),
      }),
  });
  assertClean(r);
  assert.equal(released.size, CONNS, 'every connection ran on the member that crashed');
  assert.equal(rebuilt.length, CONNS, 'and runs on the other after the failover');
  assert.equal(rebuilt.filter((c) => !released.has(c)).length, 0, 'no connection object made anew');
  const survivor = r.rig.nics[1]!.engine.counters;
  assert.equal(survivor.get('tcp.adopt.revived'), CONNS);
  assert.equal(survivor.get('tcp.timers.made') - timersBefore, 0, 'no timer made for a rebuilt connection');
});
