/**
 * Issue 10 item 6: a move handed straight from one WorkerNic to another (WorkerNic.handTo) keeps
 * each connection's segments in order. Segments of a connection still queued at the source when it
 * lets the connection go (here: the ones the other member received on its link and forwarded to the
 * source, its owner then) must reach the destination ahead of the newer ones, not climb to the host
 * and come down again after the destination already ran newer ones (src/nic/worker/hand-order.ts).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseIpv4 } from '../../src/wire/addr.ts';
import { flowing, setup, startOffloaded, TEAM_IP } from './worker-team-helpers.ts';

/** How long the source waits with the move's request in hand before it releases the batch. */
const DELAY_MS = 100;
/** How late the host's segments reach the destination: a main thread busy elsewhere. */
const HOST_LATE_MS = 100;

/**
 * Where the source waits: before it releases the batch (segments for it queue at the source, which
 * still runs it), or between handing the batch on and answering the host (segments the destination
 * forwarded to it before it installed the batch wait at the source while the destination's own
 * link receives newer ones: the destination must hold those).
 */
const WAITS = [
  { name: 'before it releases the batch', seams: { handDelayMs: DELAY_MS }, held: false },
  { name: 'after it handed the batch on', seams: { handGapMs: DELAY_MS }, held: true },
] as const;

describe('team of WorkerNics: a move handed from worker to worker', () => {
  for (const wait of WAITS)
    test(`segments queued at the source go to the destination ahead of newer ones, none through the host (the source waits ${wait.name})`, {
      timeout: 60_000,
    }, async (t) => {
      // No reachability probing and no silence verdict: the source's pause is the test's, not a
      // failure (see worker-direct.test.ts).
      const rig = await setup(t, {
        seed: 41,
        health: { probeTargets: [] },
        deadAfterMs: 10_000,
        seams: wait.seams,
      });
      const [src, dst] = rig.nics as [(typeof rig.nics)[0], (typeof rig.nics)[0]];
      const { st, keys } = await startOffloaded(rig, [4, 0]);
      await flowing(rig, [src]);
      const count = async (nic: typeof src, k: string): Promise<number> => (await nic.counters())[k] ?? 0;
      // Whatever the host forwards to the destination arrives late, as behind a busy main thread.
      const inject = dst.inject.bind(dst);
      dst.inject = (packets) => {
        const late = [...packets];
        setTimeout(() => inject(late), HOST_LATE_MS);
      };
      const oooBefore = await count(dst, 'tcp.ooo.segments');
      const viaHost = (): number =>
        rig.stack.counters.get('tcp.frozen.queued') + rig.stack.counters.get('tcp.frozen.forwarded');
      const hostBefore = viaHost();
      const handedBefore = rig.stack.counters.get('offload.handed');
      // While the source waits with the request in hand, the switch learns the team MAC on the
      // other member's port (again and again: the source's last frames may still be on their way),
      // so the peer's segments arrive there, and that member forwards them to the source, which
      // lists the connections still: they queue at the source.
      const steer = setInterval(() => rig.taps[1]!.announce(rig.team.mac, parseIpv4(TEAM_IP)), 5);
      let r: Awaited<ReturnType<typeof rig.manager.move>>;
      try {
        r = await rig.manager.move(keys, src, dst);
      } finally {
        clearInterval(steer);
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
          received: await count(src, 'nic.forward.received'),
        },
        dst: {
          direct: await count(dst, 'nic.forward.direct'),
          held: await count(dst, 'nic.hand.held'),
          expired: await count(dst, 'nic.hand.expired'),
          ooo: (await count(dst, 'tcp.ooo.segments')) - oooBefore,
        },
        host: viaHost() - hostBefore,
      });
      t.diagnostic(why);
      assert.ok(
        (await count(src, 'nic.hand.forwarded')) > 0,
        `segments queued at the source went on to the destination: ${why}`,
      );
      assert.equal(
        (await count(dst, 'tcp.ooo.segments')) - oooBefore,
        0,
        `the destination received every segment in order: ${why}`,
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
