/**
 * A NIC's liveness as its host side keeps it (`Liveness`, every HostNic's): readiness, heartbeats,
 * and the deaths only silence shows, on a virtual clock, so each bound is met exactly and no
 * case depends on the machine's speed. The WorkerNic's own cases (a stalled thread, a kill) run
 * the same object over a real thread in worker-nic.test.ts and team/declared-dead.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { InvalidStateError } from '../../src/core/errors.ts';
import { Liveness } from '../../src/nic/liveness.ts';
import { describeDeath, type NicDeath } from '../../src/nic/nic.ts';

const HEARTBEAT_MS = 50;
const DEAD_AFTER_MS = 2_000;
const START_ALLOWANCE_MS = 60_000;

/** A beating engine whose count the test moves, and what its liveness reported. */
function rig() {
  const clock = new VirtualClock();
  let count = 0;
  const deaths: NicDeath[] = [];
  let heard = 0;
  const live = Liveness.beating(
    clock,
    {
      count: () => count,
      heartbeatMs: HEARTBEAT_MS,
      deadAfterMs: DEAD_AFTER_MS,
      startAllowanceMs: START_ALLOWANCE_MS,
    },
    (cause) => deaths.push(cause),
    () => heard++,
  );
  return {
    clock,
    live,
    deaths,
    heard: () => heard,
    bump: () => {
      count++;
    },
  };
}

/** A promise's outcome as it stands after each `settle()`. */
function watch(p: Promise<void>): { state: 'pending' | 'resolved' | 'rejected'; error?: unknown } {
  const w: { state: 'pending' | 'resolved' | 'rejected'; error?: unknown } = { state: 'pending' };
  p.then(
    () => {
      w.state = 'resolved';
    },
    (e: unknown) => {
      w.state = 'rejected';
      w.error = e;
    },
  );
  return w;
}

/** Every promise callback due now has run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

test('an engine in the host thread is ready at once and never dies of silence', async () => {
  const clock = new VirtualClock();
  const live = Liveness.sameThread(clock);
  assert.equal(live.running, true);
  await live.ready();
  assert.equal(clock.nextDeadline(), Number.POSITIVE_INFINITY, 'no watchdog is armed');
});

test('a beating engine is ready at its first beat, which is indicated; silence before it counts past the start allowance', async () => {
  const r = rig();
  let ready = false;
  void r.live.ready().then(() => {
    ready = true;
  });
  assert.equal(r.live.running, false);
  // Starting takes a while: silent for the allowance and almost deadAfterMs more, it still lives.
  r.clock.advance(START_ALLOWANCE_MS + DEAD_AFTER_MS - 1);
  assert.equal(r.deaths.length, 0);
  r.live.beat();
  await settle();
  assert.equal(ready, true);
  assert.equal(r.live.running, true);
  assert.equal(r.heard(), 1);
});

test('an engine that never ran dies of the heartbeat past its allowance and deadAfterMs, silent since it was made, and says so', async () => {
  const r = rig();
  const waiting = watch(r.live.ready());
  r.clock.advance(START_ALLOWANCE_MS + DEAD_AFTER_MS * 2);
  assert.equal(r.deaths.length, 1);
  const d = r.deaths[0]!;
  // Counted from the allowance's end it read as a running engine silent for about deadAfterMs
  // ("no heartbeat for 2500 ms"), which a start that took this long is not.
  assert.ok(d.silentMs! > START_ALLOWANCE_MS + DEAD_AFTER_MS, String(d.silentMs));
  assert.match(describeDeath(d).detail, /^no heartbeat for \d+ ms \(never started\)$/);
  // A death ends the liveness (the NIC's die): the wait for its first beat fails with it.
  r.live.end(new InvalidStateError(`NIC n died (heartbeat: ${describeDeath(d).detail})`));
  await settle();
  assert.equal(waiting.state, 'rejected');
});

test('a thread whose count moves before its engine runs keeps its start allowance, and past it lives while the count moves', async () => {
  const r = rig();
  // A restart's thread beats while it waits for its TAP, then makes its engine with the count still.
  r.clock.advance(1_000);
  r.bump();
  r.clock.advance(START_ALLOWANCE_MS - 1_000 - 1);
  assert.equal(r.deaths.length, 0, 'its allowance holds though its count moved early');
  for (let i = 0; i < 10; i++) {
    r.clock.advance(DEAD_AFTER_MS / 2);
    r.bump();
  }
  assert.equal(r.deaths.length, 0, 'past the allowance, alive while the count moves');
  r.clock.advance(DEAD_AFTER_MS * 2);
  assert.equal(r.deaths.length, 1);
  assert.equal(r.deaths[0]!.detail, undefined, 'its count moved: not a thread that never started');
});

test('a beating engine silent past deadAfterMs dies once of the heartbeat, with its silence', async () => {
  const r = rig();
  r.live.beat();
  // A busy engine bumps its count though its beat messages wait: that is life.
  for (let i = 0; i < 10; i++) {
    r.clock.advance(DEAD_AFTER_MS / 2);
    r.bump();
  }
  assert.equal(r.deaths.length, 0);
  r.clock.advance(DEAD_AFTER_MS * 2);
  assert.equal(r.deaths.length, 1);
  assert.equal(r.deaths[0]!.kind, 'heartbeat');
  assert.ok(r.deaths[0]!.silentMs! > DEAD_AFTER_MS, String(r.deaths[0]!.silentMs));
  assert.ok(r.deaths[0]!.silentMs! <= DEAD_AFTER_MS * 1.25 + 1, String(r.deaths[0]!.silentMs));
  assert.equal(r.deaths[0]!.detail, undefined, 'it ran');
  // The NIC's death ends it: nothing further is reported.
  r.live.end(new Error('dead'));
  r.clock.advance(DEAD_AFTER_MS * 4);
  assert.equal(r.deaths.length, 1);
});

test('told to stop between units of work, an engine is dead in a microtask; in one, once its count stops for 3 periods', async () => {
  const between = rig();
  between.live.beat();
  between.live.stopped(true);
  assert.equal(between.deaths.length, 0);
  await settle();
  assert.deepEqual(
    between.deaths.map((d) => d.kind),
    ['killed'],
  );

  const busy = rig();
  busy.live.beat();
  busy.live.stopped(false);
  // Still counting: it runs to its next interrupt check, and is not dead yet.
  for (let i = 0; i < 5; i++) {
    busy.clock.advance(HEARTBEAT_MS);
    busy.bump();
  }
  assert.equal(busy.deaths.length, 0);
  busy.clock.advance(3 * HEARTBEAT_MS + HEARTBEAT_MS);
  assert.deepEqual(
    busy.deaths.map((d) => d.kind),
    ['killed'],
  );
  assert.ok(busy.deaths[0]!.silentMs! >= 3 * HEARTBEAT_MS, String(busy.deaths[0]!.silentMs));
  // Long before deadAfterMs, which is sized for an engine that still runs.
  assert.ok(busy.deaths[0]!.silentMs! < DEAD_AFTER_MS);
});

test('told to stop in a unit of work, an engine is dead once its thread ran its last JavaScript (gone), not after its silence; not told, gone changes nothing', async () => {
  const busy = rig();
  busy.live.beat();
  busy.live.stopped(false);
  busy.clock.advance(20);
  busy.live.gone();
  assert.deepEqual(
    busy.deaths.map((d) => ({ kind: d.kind, silentMs: d.silentMs })),
    [{ kind: 'killed', silentMs: 20 }],
    'dead at its end, silent since it was told',
  );
  // Once: the kill watch's silence (3 periods, far below deadAfterMs) reports nothing more.
  busy.clock.advance(5 * HEARTBEAT_MS);
  busy.live.gone();
  assert.equal(busy.deaths.length, 1);

  // A thread that ended without being told (its own throw or exit) is the exit's or the error's to
  // report, with what they know (a code, the error): its end says nothing here.
  const untold = rig();
  untold.live.beat();
  untold.live.gone();
  await settle();
  assert.equal(untold.deaths.length, 0);

  // Closed by its owner, then told to stop (the stop the close makes): its end is no death.
  const closed = rig();
  closed.live.beat();
  closed.live.end(new Error('closed'));
  closed.live.stopped(false);
  closed.live.gone();
  assert.equal(closed.deaths.length, 0);
});

test('ended by a death or by a close, waiters for ready fail with its reason, as every later ready, and nothing is watched', async () => {
  const dead = rig();
  const waiting = watch(dead.live.ready());
  dead.live.end(new Error('died'));
  await settle();
  assert.match(String(waiting.error), /died/);
  dead.live.stopped(true);
  await settle();
  dead.clock.advance(START_ALLOWANCE_MS + DEAD_AFTER_MS * 4);
  assert.equal(dead.deaths.length, 0);
  // A NIC that died before its engine ran is not ready.
  await assert.rejects(dead.live.ready(), /died/);

  // Closed before its first beat (a shutdown while a worker starts): a caller awaiting ready()
  // must hear of it, not wait for a beat that never comes.
  const closed = rig();
  const before = watch(closed.live.ready());
  closed.live.end(new InvalidStateError('NIC n is closed'));
  await settle();
  assert.equal(before.state, 'rejected');
  assert.equal((before.error as { code?: string }).code, 'ERR_CHIMNEY_INVALID_STATE');
  await assert.rejects(closed.live.ready(), /is closed/);
  // Ended once: a later end (a close after a death) changes nothing.
  closed.live.end(new Error('again'));
  await assert.rejects(closed.live.ready(), /is closed/);
  closed.clock.advance(START_ALLOWANCE_MS + DEAD_AFTER_MS * 4);
  assert.equal(closed.deaths.length, 0);
  assert.equal(closed.clock.nextDeadline(), Number.POSITIVE_INFINITY);

  // Ended after its first beat, an engine that ran stays one that ran.
  const ran = rig();
  ran.live.beat();
  ran.live.end(new Error('died'));
  await ran.live.ready();
});
