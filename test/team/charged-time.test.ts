/**
 * On the simulator's clock a move is free unless its real duration is charged
 * (`OffloadManager.chargeWallTime`): then a failover's `resumeMs` is the stall a peer lives
 * through. Every path must charge: carrier loss, reachability loss, a NIC crash (rebuilt from hard
 * state), the host stack's own connections prodded when its traffic leaves a failed member, and a
 * transfer that runs several NICs' moves side by side. The meter reads an injected work clock
 * here, advanced by a fixed cost per unit of work, so the figures are exact and machine-free.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import { keysOf, offloadPair, startStreams } from '../offload/helpers.ts';
import { assertClean, type FaultKind, runScenario } from './scenario.ts';
import type { TeamRig } from './team-sim.ts';

const CONNS = 30;

/** A work clock that advances only when `cost` is called: 1 ms per call. */
function workMeter() {
  let t = 0;
  return { now: () => t, cost: (ms = 1) => void (t += ms) };
}

/** `m` (an offload manager) charges its transfers, read from a fresh work meter. */
function meterOn(m: TeamRig['manager'], on = true) {
  const meter = workMeter();
  m.chargeWallTime = on;
  m.workClock = meter.now;
  return meter;
}

/**
 * 1 ms per connection the host points at a NIC (one per connection settled there): by its key
 * or its table entry (the general protocol, a crash's rebuild) or by the connection itself (a
 * live hand-over from a NIC of this thread).
 */
function costPerForward(tcp: TeamRig['host']['stack']['tcp'], meter: ReturnType<typeof workMeter>): void {
  const forwardTo = tcp.forwardTo.bind(tcp);
  tcp.forwardTo = (...args: Parameters<typeof tcp.forwardTo>) => {
    meter.cost();
    forwardTo(...args);
  };
  const forwardIn = tcp.forwardIn.bind(tcp);
  tcp.forwardIn = (...args: Parameters<typeof tcp.forwardIn>) => {
    meter.cost();
    forwardIn(...args);
  };
  const forwardOf = tcp.forwardOf.bind(tcp);
  tcp.forwardOf = (...args: Parameters<typeof tcp.forwardOf>) => {
    meter.cost();
    forwardOf(...args);
  };
}

/** `withMeter`: more work the meter is to count, hooked into the rig once it charges. */
async function failover(
  kind: FaultKind,
  charge: boolean,
  withMeter?: (rig: TeamRig, meter: ReturnType<typeof workMeter>) => void,
) {
  const r = await runScenario({
    seed: 5,
    nics: 2,
    conns: CONNS,
    bytes: 60_000,
    faults: [{ at: 3, kind, nic: 0 }],
    offloadTo: 0,
    onRig: (rig) => {
      const meter = meterOn(rig.manager, charge);
      costPerForward(rig.host.stack.tcp, meter);
      withMeter?.(rig, meter);
    },
  });
  assertClean(r);
  const f = r.rig.team.failovers.find((x) => x.nic === r.rig.nics[0]!.id);
  assert.ok(f, 'the member failed over');
  assert.equal(f.connections, CONNS);
  return f;
}

describe('failover on the simulator is charged the time its moves take', () => {
  for (const [kind, cause] of [
    ['cut', 'carrier'],
    ['blackhole', 'reachability'],
    ['crash', 'dead'],
  ] as const) {
    test(`${cause}: resumeMs includes every connection's move`, async () => {
      const f = await failover(kind, true);
      assert.equal(f.cause, cause);
      // Exactly CONNS ms were charged; resumeMs is a difference of two clock readings (floats).
      assert.ok(f.resumeMs >= CONNS - 1e-6, `${f.resumeMs} ms >= ${CONNS} ms of charged work`);
    });
  }

  test('uncharged, the same failover costs the clock nothing (the figure the charge replaces)', async () => {
    const f = await failover('cut', false);
    assert.ok(f.resumeMs < CONNS, `${f.resumeMs} ms`);
  });

  test("the host stack's own connections, prodded when its traffic moves, are charged", async () => {
    const r = await runScenario({
      seed: 6,
      nics: 2,
      conns: CONNS,
      bytes: 60_000,
      offload: false,
      // nic0 carries the host's traffic when the team forms.
      faults: [{ at: 3, kind: 'cut', nic: 0 }],
      onRig: (rig) => {
        const meter = workMeter();
        rig.manager.chargeWallTime = true;
        rig.manager.workClock = meter.now;
        // 1 ms per frame the host stack sends: a prod sends at least one per connection.
        const link = rig.team.link;
        const send = link.send.bind(link);
        link.send = (frame: Uint8Array) => {
          meter.cost();
          return send(frame);
        };
      },
    });
    assertClean(r);
    const f = r.rig.team.failovers[0]!;
    assert.equal(f.connections, 0, 'nothing offloaded');
    assert.ok(r.rig.counters.get('team.host-prodded') >= CONNS);
    // With SACK a prod is one frame (the resent head, or one ACK): exactly CONNS ms, read as a
    // difference of two clock readings (floats).
    assert.ok(f.resumeMs >= CONNS - 1e-6, `${f.resumeMs} ms >= ${CONNS} ms of prods`);
  });

  test('an offload spread over two NICs is charged for both', async () => {
    const p = offloadPair(75);
    const m = p.host.offload;
    const st = await startStreams(p, CONNS, 50_000);
    const meter = meterOn(m);
    const tcp = p.host.stack.tcp;
    // One unit per connection leaving the host: released (the general protocol) or detached
    // live (a hand-over between owners of this thread).
    const release = tcp.release.bind(tcp);
    tcp.release = (...args: Parameters<typeof tcp.release>) => {
      meter.cost();
      return release(...args);
    };
    const detach = tcp.detach.bind(tcp);
    tcp.detach = (...args: Parameters<typeof tcp.detach>) => {
      meter.cost();
      detach(...args);
    };
    const t0 = p.net.now();
    const r = await m.offload(keysOf(st.sockets));
    const [n0, n1] = p.host.nics as LocalNic[];
    assert.ok(n0!.load > 0 && n1!.load > 0, 'spread over both');
    assert.equal(r.moved.length, CONNS);
    assert.ok(p.net.now() - t0 >= CONNS, `${p.net.now() - t0} ms >= ${CONNS} releases`);
    assert.equal(await st.done, 0);
  });

  test('a live hand-over is charged its own turn, not the microtasks others queued in it', async () => {
    const p = offloadPair(76);
    const m = p.host.offload;
    const st = await startStreams(p, CONNS, 50_000);
    const [n0, n1] = p.host.nics as LocalNic[];
    await m.offload(keysOf(st.sockets), n0!);
    const meter = meterOn(m);
    costPerForward(p.host.stack.tcp, meter);
    // Work of someone else that the hand-over's turn sets going: a later callback of the same
    // turn queues a microtask (as the team's progress watch does when its scan answers) that
    // costs 1,000 ms. It runs between the promise hops that carry the report back.
    const engine = n1!.engine;
    const settleLive = engine.settleLive.bind(engine);
    engine.settleLive = (...args: Parameters<typeof engine.settleLive>) => {
      p.net.clock.defer(() => queueMicrotask(() => meter.cost(1000)));
      settleLive(...args);
    };
    const t0 = p.net.now();
    const r = await m.move(keysOf(st.sockets), n0!, n1!);
    const took = p.net.now() - t0;
    assert.equal(r.moved.length, CONNS);
    assert.ok(took >= CONNS, `${took} ms >= ${CONNS} ms of the move's own work`);
    assert.ok(took < 1000, `${took} ms: the other work was charged to the move`);
    assert.equal(await st.done, 0);
  });
  test('an upload from two NICs stops the meter while one NIC works after the other is done', async () => {
    const p = offloadPair(77);
    const m = p.host.offload;
    // The general protocol: each NIC's terminate is awaited with the meter stopped.
    m.liveHandover = false;
    const st = await startStreams(p, CONNS, 50_000);
    const [n0, n1] = p.host.nics as LocalNic[];
    const keys = keysOf(st.sockets);
    await m.offload(keys.slice(0, CONNS / 2), n0!);
    await m.offload(keys.slice(CONNS / 2), n1!);
    const meter = meterOn(m);
    // n1 answers later than n0, and its work (1,000 ms, not this thread's transfer code: the
    // meter stops while a verb is awaited) comes after n0's half of the upload has ended.
    const nic1 = n1 as unknown as { terminate(...args: unknown[]): Promise<unknown> };
    const terminate = nic1.terminate.bind(nic1);
    nic1.terminate = async (...args: unknown[]) => {
      await p.net.sleep(1);
      meter.cost(1000);
      return terminate(...args);
    };
    const t0 = p.net.now();
    const r = await m.upload('all');
    const took = p.net.now() - t0;
    assert.equal(r.moved.length, CONNS);
    assert.ok(took < 1000, `${took} ms: the other NIC's verb was charged to the upload`);
    assert.equal(await st.done, 0);
  });
  test('no progress window is scanned while a failover moves connections', async () => {
    // Each member scan costs work on the thread that also moves and prods (10-40 ms at 10,000
    // connections); taken while connections are leaving a member it judges nothing, and on the
    // charged clock every one that fell inside the failover delayed the prods behind it.
    let moving = false;
    let scans = 0;
    let scansMoving = 0;
    const r = await runScenario({
      seed: 5,
      nics: 2,
      conns: CONNS,
      bytes: 60_000,
      faults: [{ at: 3, kind: 'cut', nic: 0 }],
      offloadTo: 0,
      // One connection a batch, 100 ms of charged work each: the failover spans fifteen windows.
      batchSize: 1,
      onRig: (rig) => {
        const meter = meterOn(rig.manager);
        const tcp = rig.host.stack.tcp;
        const forwardOf = tcp.forwardOf.bind(tcp);
        tcp.forwardOf = (...args: Parameters<typeof tcp.forwardOf>) => {
          meter.cost(100);
          forwardOf(...args);
        };
        for (const nic of rig.nics) {
          const scan = nic.progressScan.bind(nic);
          nic.progressScan = () => {
            scans++;
            if (moving) scansMoving++;
            return scan();
          };
        }
        rig.team.on('failure', () => {
          moving = true;
        });
        rig.team.on('failover', () => {
          moving = false;
        });
      },
    });
    assertClean(r);
    assert.ok(scans > 0, 'the watch scans outside the failover');
    assert.equal(scansMoving, 0);
    assert.ok(r.rig.counters.get('team.progress.skipped-moving') > 0);
  });

  test("carrier: the simulated switch's work is not charged, what the stack does is", async () => {
    // 1 ms of work per frame the switch takes in, and 1 ms per connection the host points at a
    // NIC. On a real network the switch runs beside the host: a move that charged its work made
    // every peer wait for the simulator (a tenth of a carrier failover's hand-over turns).
    let frames = 0;
    const f = await failover('cut', true, (rig, meter) => {
      const pool = rig.net.switch.pool;
      const take = pool.take.bind(pool);
      pool.take = (...args: Parameters<typeof pool.take>) => {
        frames++;
        meter.cost();
        return take(...args);
      };
    });
    assert.ok(frames >= CONNS, `${frames} frames through the switch`);
    // Exactly CONNS ms of the stack's work (forwards), none of the switch's, though every moved
    // connection sent at least one frame inside its move.
    assert.ok(f.resumeMs >= CONNS - 1e-6, `${f.resumeMs} ms >= ${CONNS} ms of charged work`);
    assert.ok(f.resumeMs < CONNS + 1, `${f.resumeMs} ms: the switch's frames were charged`);
  });
});
