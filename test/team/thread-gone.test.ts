/**
 * A dead member's worker thread must be gone before its TAP can be had again (a restart's new
 * worker, the host's own link): `threadGone` (src/cli/tap-team.ts), which serve's restart and
 * dead-port paths wait on. A thread the team took for dead while it still runs is told to stop
 * (before, the restart waited for an exit that never came: the member stayed dead and its TAP
 * held for good); one wedged in native code that does not exit fails the try with the reason
 * instead of waiting for ever, and the team tries again at its next backoff.
 */
import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import { threadGone } from '../../src/cli/tap-team.ts';
import { RealClock } from '../../src/core/clock.ts';
import { InvalidStateError } from '../../src/core/errors.ts';
import { WorkerNic } from '../../src/nic/worker-nic.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import { STARVED_NOT_DEAD_MS } from '../nic/worker-helpers.ts';

/**
 * How long the wedged thread's pool request holds its exit: twenty times the bound it is given,
 * so the counters' answer and the 300 ms try land inside it at load.
 */
const HOLD_MS = 6000;
/**
 * The running worker's exit once told to stop, on a suite at load: not the production bound
 * (THREAD_EXIT_BOUND_MS), which this does not measure.
 */
const EXIT_BOUND_MS = 30_000;
/** Only a guard against a hang: the stopped thread's exit takes ms quiet, seconds at load. */
const GUARD_MS = 120_000;

async function runningWorker(t: TestContext, seed: number): Promise<WorkerNic> {
  const net = new SimNetwork({ seed, virtualTime: false });
  const nic = new WorkerNic({
    id: 'gone.nic0',
    link: net.switch.addPort({ name: 'gone.nic0', mtu: 1500 }),
    seed,
    deadAfterMs: STARVED_NOT_DEAD_MS,
  });
  t.after(() => {
    nic.close();
    net.close();
  });
  await nic.ready();
  return nic;
}

function guard<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still waiting after ${GUARD_MS} ms`)), GUARD_MS);
  });
  return Promise.race([p, hung]).finally(() => clearTimeout(timer));
}

test('a worker the team took for dead while its thread runs is stopped, and its thread exits', async (t) => {
  const nic = await runningWorker(t, 41);
  assert.equal(nic.death, null, 'alive: nothing of its own would end it');
  let exited = false;
  void nic.threadExited.then(() => {
    exited = true;
  });
  await guard(threadGone(nic, 'gone.nic0', new RealClock(), EXIT_BOUND_MS), 'threadGone on a running worker');
  assert.equal(exited, true, 'the thread exited, so its TAP would be free');
});

test('a thread whose exit is held past the bound: the try fails with the reason, not a wait for ever', async (t) => {
  const nic = await runningWorker(t, 42);
  // A request on the libuv pool holds the exit, as a wedged native call would. The counters'
  // answer comes after the stall's message was read (one port, in order): the request is out.
  nic.stall(HOLD_MS, { pool: true });
  await nic.counters();
  let exited = false;
  void nic.threadExited.then(() => {
    exited = true;
  });
  await assert.rejects(
    guard(threadGone(nic, 'gone.nic0', new RealClock(), 300), 'threadGone on a wedged worker'),
    (e: Error) =>
      e instanceof InvalidStateError && /--tap gone\.nic0: .*has not exited 300 ms after/.test(e.message),
  );
  assert.equal(exited, false, 'the exit waits for the pool request');
  // Told to stop once, it exits when the request ends: a later try finds it gone.
  await guard(threadGone(nic, 'gone.nic0', new RealClock(), HOLD_MS + GUARD_MS), 'the later try');
  assert.equal(exited, true);
});
