/**
 * Failovers while the team's server opened its connections by SYN cookie. A LocalNic releasing
 * its connections (a crash; the general protocol's terminate, which a carrier failover takes for
 * IPv6 connections) once took the host's forwarding placeholder over in the tuple's shared table
 * entry (`ConnTable.holdOf`); the host then held nothing for the tuple until the install at the
 * surviving member, and the peer's segments meanwhile went to the listener. A stream's first
 * segment (seq irs + 1, ack iss + 1) is a valid cookie ACK there: the host opened a second
 * connection for a stream the failover was about to install, and its bytes were delivered twice.
 * Seen at 10,000 connections in bench/failover.ts, where 10,000 connects overflow the 511 backlog
 * and the charged transfers last hundreds of ms. Here a backlog of 1 makes the cookies, and a
 * rebuild or an install held back 5 ms of virtual time makes the window (uncharged, a failover
 * takes no virtual time, and no segment arrives inside it: 100 or 300 connections did not show
 * the fault).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ConnKey, Nic } from '../../src/nic/nic.ts';
import type { OffloadManager } from '../../src/offload/offload-manager.ts';
import type { SimNetwork } from '../../src/sim/sim-network.ts';
import { ManagerOffloader } from '../../src/team/manager-offloader.ts';
import type { MoveResult } from '../../src/team/team.ts';
import { assertClean, type Fault, runScenario, type ScenarioResult, secondSockets } from './scenario.ts';

/** Held back this long: a step of the failover that takes virtual time, as a charged one does. */
const HOLD_MS = 5;

/** The team's mover, each crash's rebuild starting `HOLD_MS` after the failover asks for it. */
class SlowRecover extends ManagerOffloader {
  constructor(
    manager: OffloadManager,
    private readonly net: SimNetwork,
  ) {
    super(manager);
  }
  override async recover(keys: ConnKey[], from: Nic, to: Nic | null): Promise<MoveResult> {
    await this.net.sleep(HOLD_MS);
    return super.recover(keys, from, to);
  }
}

const CONNS = 100;

/** Every connection on member 0, which fails while the streams' first segments are on the wire. */
async function run(fault: Fault['kind'], mixed: boolean): Promise<ScenarioResult> {
  return runScenario({
    seed: 7,
    nics: 2,
    conns: CONNS,
    bytes: 20_000,
    backlog: 1,
    mixed,
    offloadTo: 0,
    // Half a ms in, with 1 ms each way: the segments the peer has sent carry seq irs + 1 and
    // ack iss + 1, what a cookie's ACK carries.
    faults: [{ at: 0.5, kind: fault, nic: 0 }],
    limitMs: 20_000,
    onRig: (rig) => {
      // A crash's rebuild does not go through the member's initiate: held back before it starts.
      rig.team.setOffloader(new SlowRecover(rig.manager, rig.net));
      const nic = rig.nics[1]!;
      const initiate = nic.initiate.bind(nic);
      nic.initiate = async (batch, opts) => {
        await rig.net.sleep(HOLD_MS);
        return initiate(batch, opts);
      };
    },
  });
}

/**
 * No stream opened twice, nothing reset, every stream whole; one failover of `cause` moved every
 * connection to member 1.
 */
function assertOnce(r: ScenarioResult, cause: string): void {
  const host = r.rig.host.stack.counters;
  const cookies = host.get('tcp.syncookies.sent');
  assert.ok(cookies >= CONNS / 2, `${cookies} of ${CONNS} opened by cookie`);
  // What the fault looked like: the listener took a stream's segment for a cookie's ACK.
  assert.deepEqual(secondSockets(r), [], 'no stream delivered by a second socket');
  assert.equal(host.get('tcp.syncookies.ok'), cookies, 'each cookie opened one connection');
  assert.equal(host.get('tcp.rst.out'), 0, 'the host answered no segment of a moved connection');
  assertClean(r);
  const f = r.rig.team.failovers[0];
  assert.equal(f?.cause, cause);
  assert.equal(f?.connections, CONNS, 'every connection was on the failed member');
  assert.deepEqual(f?.to, ['team.nic1']);
}

describe('team failover while the connections opened by SYN cookie', () => {
  test('NIC crash: the peer segments that arrive before the rebuild open no second connection', async () => {
    const r = await run('crash', false);
    assertOnce(r, 'dead');
    assert.equal(r.rig.host.stack.counters.get('offload.rebuilt'), CONNS);
  });

  test('carrier cut, IPv4 and IPv6: those moved by terminate and initiate open no second connection', async () => {
    const r = await run('cut', true);
    assertOnce(r, 'carrier');
    assert.ok(r.rig.host.stack.counters.get('offload.handover') < CONNS, 'some took the general protocol');
  });
});
