/**
 * Issue 10 item 6: a move handed straight from one WorkerNic to another (WorkerNic.handTo) keeps
 * each connection's segments in order. Segments of a connection still queued at the source when it
 * lets the connection go must reach the destination ahead of the newer ones the destination's own
 * link receives meanwhile, not climb to the host and come down again after the destination ran
 * newer ones (src/nic/worker/hand-order.ts).
 *
 * The source stops at a gate twice (WorkerNicTestSeams.handGate), and the test opens it when what
 * the case needs has happened: a pause of a set length passed on an idle machine and, on a slower
 * one, ended before any segment came (the case then proved nothing and failed its first
 * assertion). The switch is steered to the destination only while the source is stopped after the
 * hand and the destination holds: steered while the source still took segments on its own link,
 * one connection's segments queued at the source on two ways in (its link, and the destination
 * forwarding it what came to the other port), which a thread drains in no set order, so the
 * source itself could send them on out of order. That race belongs to any team whose switch
 * learns the one team MAC on whichever port sent last, move or not; this case is about the hand.
 * So from the steer until the order is read, nothing the team sends leaves by the source's port
 * (it waits, and leaves after the read): one such frame teaches the switch the team MAC back there.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseIpv4 } from '../../src/wire/addr.ts';
import { flowing, setup, startOffloaded, TEAM_IP, until } from './worker-team-helpers.ts';

/** How late the host's segments reach the destination: a main thread busy elsewhere. */
const HOST_LATE_MS = 100;

describe('team of WorkerNics: a move handed from worker to worker', () => {
  test('segments queued at the source go to the destination ahead of the newer ones it holds, none through the host', {
    // Four copies at once at load 33-50 took 48-52 s, and 8 of 46 ran out 60 s.
    timeout: 180_000,
  }, async (t) => {
    const gate = new Int32Array(new SharedArrayBuffer(8));
    // No reachability probing and no silence verdict: the source's stops are the test's, not a
    // failure (see worker-direct.test.ts); a hold as long as the test's stop, which is not the
    // expiry's case. The source is silent from its first stop to the end of its second (up to 30 s
    // each, waitAtGate's bound): with 20 s, 2 of 5 runs at load 46-68 had it declared dead.
    const rig = await setup(t, {
      seed: 41,
      health: { probeTargets: [] },
      deadAfterMs: 90_000,
      seams: { handGate: gate.buffer as SharedArrayBuffer, handHoldMs: 60_000 },
    });
    const [src, dst] = rig.nics as [(typeof rig.nics)[0], (typeof rig.nics)[0]];
    const { st, keys } = await startOffloaded(rig, [4, 0]);
    await flowing(rig, [src]);
    const count = async (nic: typeof src, k: string): Promise<number> => (await nic.counters())[k] ?? 0;
    /** Polls `done` (bounded) and fails naming `what` when it never holds. */
    const waitFor = async (done: () => boolean | Promise<boolean>, what: string): Promise<void> => {
      assert.ok(
        await until(
          rig,
          async () => done(),
          (v) => v,
        ),
        `${what} (not within 10 s)`,
      );
    };
    const open = (stop: number): void => {
      Atomics.store(gate, 1, stop);
      Atomics.notify(gate, 1);
    };
    // Whatever the host forwards to the destination arrives late, as behind a busy main thread.
    const inject = dst.inject.bind(dst);
    dst.inject = (packets, settled) => {
      const late = [...packets];
      // The settle's keys go on with the segments: they end the destination's hold of its input.
      setTimeout(() => inject(late, settled), HOST_LATE_MS);
    };
    const oooBefore = await count(dst, 'tcp.ooo.segments');
    const viaHost = (): number =>
      rig.stack.counters.get('tcp.frozen.queued') + rig.stack.counters.get('tcp.frozen.forwarded');
    const hostBefore = viaHost();
    const handedBefore = rig.stack.counters.get('offload.handed');
    let steer: NodeJS.Timeout | undefined;
    // While the order is read, the team's frames for the source's port wait here. In 35 of 42
    // traced runs (load 18-50) the team sent one from there after the steer: the source's ACKs,
    // made as it let the connections go and posted only once the test opened its last stop, or
    // the host's ARP, which leaves by the team's first member. Each taught the switch the team MAC
    // on the source's port until the next announce; in 21 runs segments the peer sent meanwhile
    // reached the source after its 'through', so it forwarded them on the peer channel
    // (nic.forward.direct) before the read. Where the destination's own link took in newer ones
    // first, it ran those out of order (in 6 runs, 4-34 segments, each after the read, every one
    // by its link behind a forwarded one): the switch's race, which a slow read takes in too.
    const srcTap = rig.taps[0]!;
    const sendOnSrcPort = srcTap.send.bind(srcTap);
    let quiet: Uint8Array[] | null = null;
    srcTap.send = (frame) => {
      if (quiet === null) return sendOnSrcPort(frame);
      quiet.push(frame.slice());
      return true;
    };
    const speak = (): void => {
      const waited = quiet ?? [];
      quiet = null;
      for (const f of waited) sendOnSrcPort(f);
    };
    let r: Awaited<ReturnType<typeof rig.manager.move>>;
    let oooInHand = 0;
    let directAtHand = 0;
    try {
      const moving = rig.manager.move(keys, src, dst);
      // Awaited below; a failed step before that must not leave its rejection unhandled.
      moving.catch(() => undefined);
      // Stopped with the request in hand: the peer's segments that reach its link now wait behind
      // the request, for connections it no longer runs when it reads them.
      await waitFor(() => Atomics.load(gate, 0) === 1, 'the source stops before it releases the batch');
      const atStop = rig.taps[0]!.rxFrames;
      await waitFor(() => rig.taps[0]!.rxFrames - atStop >= 8, 'segments queue at the stopped source');
      open(1);
      // Stopped again after it handed the batch on: the destination runs the connections. The
      // switch now learns the team MAC on the destination's port (again and again: a frame sent
      // into the source's port before the quiet began may reach the switch after the announce), so
      // the newer segments arrive there, and it must hold them until the source sent on what it had.
      await waitFor(() => Atomics.load(gate, 0) === 2, 'the source stops after it handed the batch on');
      await waitFor(
        async () => (await dst.query()).length === keys.length,
        'the destination runs the connections',
      );
      quiet = [];
      rig.taps[1]!.announce(rig.team.mac, parseIpv4(TEAM_IP));
      steer = setInterval(() => rig.taps[1]!.announce(rig.team.mac, parseIpv4(TEAM_IP)), 5);
      await waitFor(
        async () => (await count(dst, 'nic.hand.held')) > 0,
        'the destination holds newer segments',
      );
      open(2);
      r = await moving;
      // The hand ends when the destination runs what it held (hold-ms-max is set then). Once the
      // source's port speaks again, what comes later reaches the destination by whichever port the
      // switch sends it to, and the segments on its own link overtake what the source forwards on
      // the peer channel: the switch's race the header sets aside, not the hand's. Read after the
      // flow resumed, the count took that race in too (2-16 at load 40+; 44 where a copy had the
      // switch learn the MAC back after the hand), so the order is read at the hand's end.
      await waitFor(
        async () => (await count(dst, 'nic.hand.hold-ms-max')) > 0,
        "the destination's hold of the newer segments ends",
      );
      oooInHand = (await count(dst, 'tcp.ooo.segments')) - oooBefore;
      directAtHand = await count(src, 'nic.forward.direct');
    } finally {
      clearInterval(steer);
      speak();
      // Open whatever happened, so that a failure above does not leave the source stopped.
      open(1 << 30);
    }
    assert.deepEqual(r.refused, [], 'every connection moved');
    assert.equal(
      rig.stack.counters.get('offload.handed') - handedBefore,
      keys.length,
      'handed worker to worker',
    );
    await flowing(rig, [dst]);
    const why = JSON.stringify({
      src: {
        forwarded: await count(src, 'nic.hand.forwarded'),
        bounced: await count(src, 'nic.forward.bounced'),
      },
      dst: {
        held: await count(dst, 'nic.hand.held'),
        expired: await count(dst, 'nic.hand.expired'),
        overflow: await count(dst, 'nic.hand.overflow'),
        ooo: oooInHand,
        // After the hand: the reordering and the source's forwards of the switch's race.
        oooAfter: (await count(dst, 'tcp.ooo.segments')) - oooBefore - oooInHand,
      },
      srcDirectAfter: (await count(src, 'nic.forward.direct')) - directAtHand,
      host: viaHost() - hostBefore,
    });
    t.diagnostic(why);
    assert.ok(
      (await count(src, 'nic.hand.forwarded')) > 0,
      `segments queued at the source went on to the destination: ${why}`,
    );
    assert.equal(
      oooInHand,
      0,
      `the destination ran every segment in order, the source's before the ones it held: ${why}`,
    );
    assert.equal(
      viaHost() - hostBefore,
      0,
      `no segment of the moving connections waited in the host for the destination: ${why}`,
    );
    assert.equal(await count(src, 'nic.forward.bounced'), 0, `the source bounced none up: ${why}`);
    assert.equal(
      await count(dst, 'nic.hand.expired'),
      0,
      `the destination's hold ended on the source's word: ${why}`,
    );
    assert.equal(await st.done, 0, 'every byte arrives intact in both directions (SHA-256)');
    assert.deepEqual(st.errors.map(String), [], 'no socket errors');
  });
});
