/**
 * `kill-nic` on the control socket answers at once, whatever the killed worker's exit waits for,
 * and the team fails over from the killed worker without waiting for that exit. A worker told to
 * stop while a request of its waits on the libuv pool (its TAP reader's poll for the next frame)
 * exits only once that request ends; in 5,000-connection soaks against the kernel the answer,
 * which waited for the exit, twice missed the harness's 10 s.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ControlServer, controlRequest, type KillAnswer, killWorkerNic } from '../../src/cli/control.ts';
import {
  assertClean,
  CONNS,
  flowing,
  nextFailover,
  setup,
  startOffloaded,
  until,
  within,
} from './worker-team-helpers.ts';

/**
 * How long the killed worker's pool request holds its exit: longer than the answer and the
 * failover may take together (ANSWER_MS each), so a slow machine fails a bound, never the order.
 */
const HOLD_MS = 20_000;
/** The bound on the control answer, and on the failover after it. */
const ANSWER_MS = 9000;

test('kill-nic answers before the killed worker exits, and the team fails over from it with nothing lost', async (t) => {
  // A heartbeat watchdog far beyond the test's bounds: the failover must come from the kill itself.
  const rig = await setup(t, { seed: 31, deadAfterMs: 60_000 });
  const [nic0, nic1] = rig.nics;
  const dir = mkdtempSync(join(tmpdir(), 'chimney-kill-'));
  const exits: number[] = [];
  const ctl = new ControlServer(join(dir, 'serve.sock'), {
    'kill-nic': () => killWorkerNic(nic0!, (_id, code) => exits.push(code)),
  });
  t.after(() => {
    ctl.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const half = CONNS / 2;
  const { st } = await startOffloaded(rig, [half, CONNS - half]);
  await flowing(rig, [nic0!, nic1!]);

  // The worker stays busy with its connections and leaves a request on the pool, as an idle TAP
  // reader does; the request is in the worker's queue before the kill (one port, in order).
  nic0!.stall(HOLD_MS, { pool: true });
  await flowing(rig, [nic0!]);
  let exited = false;
  nic0!.worker.once('exit', () => {
    exited = true;
  });
  const failover = nextFailover(rig);
  const answer = (await controlRequest(join(dir, 'serve.sock'), { op: 'kill-nic' }, ANSWER_MS)) as KillAnswer;
  assert.equal(exited, false, 'the answer came before the exit');
  assert.deepEqual(answer, { killed: nic0!.id, threadId: nic0!.worker.threadId, exited: false });

  const rec = await within(failover, ANSWER_MS, 'the failover from the killed worker', rig);
  assert.equal(rec.nic, nic0!.id);
  assert.equal(rec.cause, 'dead');
  assert.equal(nic0!.death?.kind, 'killed', 'dead from the kill, not from the exit or the watchdog');
  assert.equal(exited, false, 'the team did not wait for the exit');
  assert.equal(rec.connections, half);
  assert.equal(rec.lost, 0);
  await within(assertClean(rig, st), 60_000, 'the streams', rig);
  assert.equal(rig.team.failovers.length, 1, 'no other failover');
  // The exit is still heard of (and logged by serve) once the pool request ends.
  await within(
    until(
      rig,
      async () => exits.length,
      (n) => n > 0,
      { tries: 1000 },
    ),
    HOLD_MS + 10_000,
    'the exit',
    rig,
  );
  assert.deepEqual(exits, [1]);
});
