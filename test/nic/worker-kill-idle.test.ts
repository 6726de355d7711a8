import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import { workerSetup as setup } from './worker-helpers.ts';

// A long beat: three of them (the kill watch's silence) are far beyond a thread's exit, so a death
// before one beat can only come from the thread found between turns or from its end, and no timer
// of its own ends that state while the test looks at it.
const BEAT_MS = 5000;
const KILL_SILENT_BEATS = 3;
const LIMIT_MS = 30_000;

async function waitFor(cond: () => boolean, what: string): Promise<void> {
  const until = Date.now() + LIMIT_MS;
  while (!cond()) {
    if (Date.now() > until) assert.fail(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

/** The NIC's stall, its thread blocked inside that unit of work once this resolves. */
async function stalled(nic: WorkerNic, ms: number): Promise<void> {
  const entered = new SharedArrayBuffer(4);
  nic.stall(ms, { entered });
  const w = new Int32Array(entered);
  await waitFor(() => Atomics.load(w, 0) === 1, 'the thread to enter its stall');
}

describe('WorkerNic told to stop', () => {
  test('between turns of its JavaScript, it is known dead at once, not after its silence or its exit', {
    timeout: 60_000,
  }, async (t) => {
    // Read and told in one synchronous step. A turn of the thread may still begin in those
    // microseconds (its beat is seconds away, but a loaded machine can run one late): then the kill
    // found it busy (`between` false) and takes the old path, so a fresh NIC is tried, up to 5.
    for (let attempt = 1; ; attempt++) {
      const { wh } = await setup(40 + attempt, t, { count: 1, heartbeatMs: BEAT_MS, deadAfterMs: 60_000 });
      const nic = wh.nics[0]!;
      let between = false;
      await waitFor(() => {
        if (!nic.betweenTurns) return false;
        between = nic.terminateThread().between;
        return true;
      }, 'the thread to be between turns');
      if (!between) {
        assert.ok(attempt < 5, 'a turn began between the check and the kill in 5 attempts of 5');
        continue;
      }
      await waitFor(() => nic.death !== null, 'the death');
      assert.equal(nic.death?.kind, 'killed', 'found stopped from the kill, before its exit');
      assert.ok(
        (nic.death?.silentMs ?? Number.POSITIVE_INFINITY) < BEAT_MS,
        `dead ${nic.death?.silentMs} ms after it was told, within one beat period (${BEAT_MS} ms)`,
      );
      return;
    }
  });

  test("inside a unit of work, it is known dead once the thread's JavaScript ended, before its exit", {
    timeout: 60_000,
  }, async (t) => {
    // The thread's exit waits for its open of this FIFO (a request pending on the pool, as a TAP's
    // poll holds it) until the test opens the FIFO to write: a death before that is not the exit's.
    const dir = mkdtempSync(join(tmpdir(), 'chimney-kill-'));
    const fifo = join(dir, 'exit');
    execFileSync('mkfifo', [fifo]);
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
    };
    // Registered before the setup's close, which would otherwise wait on the held exit.
    t.after(() => {
      try {
        release();
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
    const { wh } = await setup(42, t, {
      count: 1,
      heartbeatMs: BEAT_MS,
      deadAfterMs: 60_000,
      seams: [{ exitHeldBy: fifo }],
    });
    const nic = wh.nics[0]!;
    let exited = false;
    void nic.threadExited.then(() => {
      exited = true;
    });
    await stalled(nic, LIMIT_MS);
    assert.equal(nic.betweenTurns, false, 'the stall is a unit of work');
    nic.terminateThread();
    await waitFor(() => nic.death !== null, 'the death');
    const d = nic.death!;
    assert.equal(exited, false, 'the exit is still held');
    assert.equal(d.kind, 'killed', `dead from the thread's end, not its exit: ${JSON.stringify(d)}`);
    assert.ok(
      (d.silentMs ?? Number.POSITIVE_INFINITY) < KILL_SILENT_BEATS * BEAT_MS,
      `dead ${d.silentMs} ms after it was told, not after the kill watch's silence`,
    );
    release();
    await nic.threadExited;
  });

  test('busy, not told to stop, it is not declared dead: only its silence past deadAfterMs would', {
    timeout: 60_000,
  }, async (t) => {
    const beat = 200;
    const { wh } = await setup(43, t, { count: 1, heartbeatMs: beat, deadAfterMs: 60_000 });
    const nic = wh.nics[0]!;
    // Five beat periods inside one unit, more than the kill watch's silence.
    await stalled(nic, 5 * beat);
    await waitFor(() => nic.betweenTurns, 'the stall to end');
    await new Promise((r) => nic.once('heartbeat', r));
    assert.equal(nic.death, null, 'alive after its stall');
  });
});
