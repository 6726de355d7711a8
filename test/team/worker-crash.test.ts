/**
 * A worker that dies while an initiate to it is in flight (it may have installed the batch and run
 * the connections for a while, but its reply never reached the host) loses no connection: the
 * host allocated each connection's shared memory (rings and hard-state record) before the batch
 * left, so it rebuilds them from how far the worker got, not from the stale states it sent.
 */
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { describe, test } from 'node:test';
import type { WorkerNic, WorkerNicTestSeams } from '../../src/nic/worker-nic.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { TCP_STATE_NAMES } from '../../src/state/tcp-state.ts';
import { streamBothWays } from '../nic/worker-helpers.ts';
import {
  assertClean,
  BYTES,
  CHUNK,
  CONNS,
  flowing,
  GAP_MS,
  keyOf,
  onNextReply,
  ownersOf,
  setup,
  type WorkerTeamRig,
} from './worker-team-helpers.ts';

/**
 * Each case's bound. What a case waits for grows with the machine's load: two workers' start (their
 * first heartbeats), then CONNS connections streaming BYTES both ways to their end, every byte
 * checked. At load 70 (busy loops beside), of a 48 s case the start took 20 s, the handshakes,
 * the offload, the flow and the failover 8 s, and the rest of the streams 21 s; at load 75-95 the
 * cases took 26-40 s, and at load 37-47 with the helpers' own runs beside every case ran out 60 s.
 * Sized for a machine five times slower than the measured one.
 */
const CASE_MS = 240_000;

/**
 * Hold back `nic`'s next reply to `op`: the worker did it (an initiate installed the batch and runs
 * its connections: sends, acknowledges, takes in data), but the host does not hear of it.
 * Resolves once held.
 */
function holdNextReply(nic: WorkerNic, op: 'initiate' | 'terminate'): Promise<void> {
  return new Promise((resolve) => onNextReply(nic, op, () => resolve()));
}

/**
 * Spoil `nic`'s next reply to a terminate as it reaches the host (a slot list that is no list):
 * the worker did the move, but what the host reads of it is refused as malformed.
 */
function spoilNextTerminate(nic: WorkerNic): Promise<void> {
  return new Promise((resolve) =>
    onNextReply(nic, 'terminate', (m, deliver) => {
      deliver({ ...m, moved: 'spoilt' });
      resolve();
    }),
  );
}

/**
 * Hold `nic`'s next answer to a terminate until the caller lets it go: resolves, once it is held,
 * with the function that delivers it.
 */
function delayNextTerminate(nic: WorkerNic): Promise<() => void> {
  return new Promise((resolve) => onNextReply(nic, 'terminate', (m, deliver) => resolve(() => deliver(m))));
}

/**
 * Each RST the host stack sends, with what the host, the team and the peer knew of its connection
 * at that moment. A failing `assertClean` carries this log: which connections were reset and why is
 * what a run under load that sent them shows only once.
 */
function watchRsts(rig: WorkerTeamRig): { check: (p: Promise<void>) => Promise<void> } {
  const log: unknown[] = [];
  // The host's last segments on each connection: what drew the peer's answer that met no connection.
  const sent = new Map<number, string[]>();
  const link = rig.team.link;
  const send = link.send.bind(link);
  link.send = (frame: Uint8Array): boolean => {
    const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
    if (frame.length >= 54 && v.getUint16(12) === 0x0800 && frame[23] === 6) {
      const t = 14 + (frame[14]! & 0x0f) * 4;
      const flags = frame[t + 13]!;
      const localPort = v.getUint16(t);
      const remotePort = v.getUint16(t + 2);
      const len = v.getUint16(16) - (t - 14) - (frame[t + 12]! >> 4) * 4;
      const h = sent.get(localPort) ?? [];
      h.push(`${Math.round(rig.net.clock.now())}:${v.getUint32(t + 4)}+${len}/${flags.toString(16)}`);
      if (h.length > 6) h.shift();
      sent.set(localPort, h);
      if (flags & 4 && log.length < 20) {
        const key = { localIp: v.getUint32(26), localPort, remoteIp: v.getUint32(30), remotePort };
        const hc = rig.stack.tcp.lookup(key.localIp, localPort, key.remoteIp, remotePort) ?? undefined;
        const pc = [...rig.peer.stack.tcp.connections()].find(
          (c) => c.localPort === remotePort && c.remotePort === localPort,
        );
        const tcb = (c: typeof hc) => {
          if (!c) return 'none';
          const d = c.state.delegated;
          return {
            state: TCP_STATE_NAMES[d.state],
            sndUna: d.sndUna,
            sndNxt: d.sndNxt,
            sndMax: d.sndMax,
            rcvNxt: d.rcvNxt,
          };
        };
        const owner = rig.manager.ownerOf(key);
        log.push({
          at: Math.round(rig.net.clock.now()),
          port: localPort,
          seq: v.getUint32(t + 4),
          ack: v.getUint32(t + 8),
          flags,
          host: tcb(hc),
          owner: owner === 'host' || owner === null ? owner : owner.id,
          frozen: rig.stack.tcp.isFrozen(key.localIp, localPort, key.remoteIp, remotePort),
          peer: tcb(pc),
          hostSent: h,
        });
      }
    }
    return send(frame);
  };
  const check = async (p: Promise<void>): Promise<void> => {
    try {
      await p;
    } catch (e) {
      const c = rig.stack.counters.snapshot();
      const why = Object.fromEntries(
        Object.entries(c).filter(([k]) =>
          /rst|drop\.tcp|challenge|data-after-close|accept\.refused|offload\.|tlp|rto|retrans|spurious|recover|dsack|undo/.test(
            k,
          ),
        ),
      );
      if (e instanceof Error)
        e.message += `\nhost counters: ${JSON.stringify(why)}\nRSTs sent by the host: ${JSON.stringify(log)}`;
      throw e;
    }
  };
  return { check };
}

async function crashMidInitiate(rig: WorkerTeamRig, from: 'host' | WorkerNic): Promise<void> {
  const [victim] = rig.nics;
  const rsts = watchRsts(rig);
  const st = await streamBothWays(rig.host, rig.peer, CONNS, BYTES, CHUNK, GAP_MS);
  const keys = st.sockets.map(keyOf);
  if (from !== 'host') {
    const r = await rig.manager.offload(keys, from);
    assert.equal(r.moved.length, CONNS);
    await flowing(rig, [from]);
  }
  const held = holdNextReply(victim!, 'initiate');
  const transfer =
    from === 'host' ? rig.manager.offload(keys, victim!) : rig.manager.move(keys, from, victim!);
  await held;
  // Long enough for the worker to move every stream on by many segments both ways.
  await rig.net.sleep(300);
  await victim!.kill();
  const r = await transfer;
  // None runs at the dead destination: each is reported refused, rebuilt in the host.
  assert.equal(r.moved.length, 0);
  assert.deepEqual(
    new Set(r.refused.map((f) => f.reason)),
    new Set([`${victim!.id} died during the move; rebuilt in the host`]),
    `every connection runs somewhere: ${JSON.stringify(r.refused.slice(0, 3))}`,
  );
  assert.equal(r.refused.length, CONNS);
  await rig.team.settled();
  await rsts.check(assertClean(rig, st));
  assert.deepEqual(
    ownersOf(rig, st.sockets).filter((o) => o !== null && o !== 'host'),
    [],
    'every connection was rebuilt in the host',
  );
  assert.equal(rig.stack.counters.get('offload.initiate.died'), CONNS, 'all died in flight');
  assert.equal(
    rig.stack.counters.get('offload.rebuilt'),
    CONNS,
    'rebuilt from the hard state the worker left',
  );
}

/** None rebuilt in the host: every connection runs on `dst`, where the hand-over put it. */
function runAtDestination(rig: WorkerTeamRig, sockets: TcpSocket[], dst: WorkerNic): void {
  assert.equal(rig.stack.counters.get('offload.rebuilt') ?? 0, 0, 'none rebuilt: the destination runs them');
  assert.deepEqual(
    ownersOf(rig, sockets).filter((o) => o !== null && o !== dst),
    [],
    'every connection runs on the destination',
  );
}

/** A team of two WorkerNics whose first runs CONNS streaming connections. */
async function streamingOnFirst(t: TestContext, seed: number, seams?: WorkerNicTestSeams) {
  const rig = await setup(t, { seed, heartbeatMs: 20, seams });
  const [nic0, nic1] = rig.nics;
  const rsts = watchRsts(rig);
  const st = await streamBothWays(rig.host, rig.peer, CONNS, BYTES, CHUNK, GAP_MS);
  const keys = st.sockets.map(keyOf);
  assert.equal((await rig.manager.offload(keys, nic0!)).moved.length, CONNS);
  await flowing(rig, [nic0!]);
  return { rig, rsts, st, keys, nic0, nic1 };
}

describe('a worker killed while an initiate to it is in flight', () => {
  test('offload host → worker: every connection rebuilt from the memory the host gave it, none lost', {
    timeout: CASE_MS,
  }, async (t) => {
    const rig = await setup(t, { seed: 31, heartbeatMs: 20 });
    await crashMidInitiate(rig, 'host');
  });

  test('move worker → worker: every connection rebuilt from the memory the host gave it, none lost', {
    timeout: CASE_MS,
  }, async (t) => {
    const rig = await setup(t, { seed: 32, heartbeatMs: 20 });
    await crashMidInitiate(rig, rig.nics[1]!);
  });

  test('move worker → worker, the source dies before it hands the batch on: rebuilt from its hard state, none lost', {
    timeout: CASE_MS,
  }, async (t) => {
    const { rig, rsts, st, keys, nic0, nic1 } = await streamingOnFirst(t, 33);
    // Wedged, the source's worker never gets to the move: killed, it hands nothing on, and the
    // destination's worker, whose channel with it closes, tells the host to stop waiting.
    nic0!.stall(5000);
    const move = rig.manager.move(keys, nic0!, nic1!);
    await rig.net.sleep(100);
    await nic0!.kill();
    await assert.rejects(move, /died/);
    await rig.team.settled();
    assert.equal(rig.team.failovers.length, 1);
    assert.equal(rig.team.failovers[0]!.lost, 0, 'the failover lost nothing');
    await rsts.check(assertClean(rig, st));
    assert.equal(rig.stack.counters.get('offload.rebuilt'), CONNS, 'rebuilt from the hard state it left');
    assert.deepEqual(
      ownersOf(rig, st.sockets).filter((o) => o !== null && o !== nic1),
      [],
      'every connection runs on the survivor',
    );
  });

  test('move worker → worker, the source dies after it handed the batch on: every connection runs at the destination, none rebuilt twice', {
    timeout: CASE_MS,
  }, async (t) => {
    // Slow between its two messages, the source is killed as soon as the host reads the first
    // that reaches it: a worker that answered before it handed the batch on never hands it.
    const { rig, rsts, st, keys, nic0, nic1 } = await streamingOnFirst(t, 34, { handGapMs: 300 });
    // The source's worker released the batch and handed it to the destination's, but the host
    // never hears its answer: the destination's is what says where they run.
    const held = holdNextReply(nic0!, 'terminate');
    const move = rig.manager.move(keys, nic0!, nic1!);
    await held;
    await nic0!.kill();
    const r = await move;
    assert.equal(r.moved.length, CONNS, `every connection moved: ${JSON.stringify(r.refused.slice(0, 3))}`);
    await rig.team.settled();
    await rsts.check(assertClean(rig, st));
    assert.deepEqual(nic0!.salvage(), [], 'the dead source leaves none of them for salvage');
    runAtDestination(rig, st.sockets, nic1!);
  });

  test('move worker → worker, the source answers malformed after it handed the batch on: taken as dead, every connection runs at the destination only', {
    timeout: CASE_MS,
  }, async (t) => {
    const { rig, rsts, st, keys, nic0, nic1 } = await streamingOnFirst(t, 35);
    const spoilt = spoilNextTerminate(nic0!);
    const r = await rig.manager.move(keys, nic0!, nic1!);
    await spoilt;
    assert.equal(r.moved.length, CONNS, `every connection moved: ${JSON.stringify(r.refused.slice(0, 3))}`);
    assert.equal(nic0!.protocolErrors, 1, 'the answer was refused');
    assert.equal(nic0!.death?.kind, 'defective', 'a source that answers so is taken as dead');
    await rig.team.settled();
    await rsts.check(assertClean(rig, st));
    runAtDestination(rig, st.sockets, nic1!);
  });

  test('move worker → worker, the destination closed by its host mid-hand: each connection aborted with ECONNABORTED, none resumed, none left running', {
    timeout: CASE_MS,
  }, async (t) => {
    // The source's answer is held until the destination is closed: its worker has the batch
    // (installed, or not yet read) then, and the host has not yet taken the destination's answer.
    const { rig, st, keys, nic0, nic1 } = await streamingOnFirst(t, 36);
    const held = delayNextTerminate(nic0!);
    const move = rig.manager.move(keys, nic0!, nic1!);
    const release = await held;
    nic1!.close();
    release();
    const r = await move;
    assert.equal(r.moved.length, 0, 'none moved to a closed NIC');
    assert.equal(r.refused.length, CONNS, 'every connection reported');
    assert.deepEqual(
      new Set(r.refused.map((f) => `${f.status}: ${f.reason}`)),
      new Set([`closed: NIC ${nic1!.id} closed with the batch in hand`]),
    );
    await rig.net.sleep(50);
    const aborted = st.errors.filter((e) => (e as { code?: string }).code === 'ECONNABORTED');
    assert.ok(aborted.length >= CONNS, `every socket heard ECONNABORTED (${aborted.length})`);
    assert.deepEqual(
      ownersOf(rig, st.sockets).filter((o) => o !== null),
      [],
      'none runs anywhere: not resumed at the source, not left at the closed destination',
    );
    assert.equal(nic0!.death, null, 'the source is not taken as dead');
  });

  test('move worker → worker, the destination closed mid-hand and then the source killed: the abort wins, each connection ECONNABORTED at once, none rebuilt', {
    timeout: CASE_MS,
  }, async (t) => {
    // The source's answer is held (it has handed the batch on by then), the destination closed
    // (it aborts whatever it installed), then the source killed: its death must not rebuild, from
    // its hard state, connections whose peers the destination reset.
    const { rig, st, keys, nic0, nic1 } = await streamingOnFirst(t, 37);
    const held = delayNextTerminate(nic0!);
    const move = rig.manager.move(keys, nic0!, nic1!);
    await held;
    nic1!.close();
    await nic0!.kill();
    const r = await move;
    assert.equal(r.moved.length, 0, 'none moved to a closed NIC');
    assert.deepEqual(
      new Set(r.refused.map((f) => `${f.status}: ${f.reason}`)),
      new Set([`closed: NIC ${nic1!.id} closed with the batch in hand`]),
    );
    assert.equal(r.refused.length, CONNS, 'every connection reported');
    await rig.net.sleep(50);
    const aborted = st.errors.filter((e) => (e as { code?: string }).code === 'ECONNABORTED');
    assert.ok(aborted.length >= CONNS, `every socket heard ECONNABORTED at once (${aborted.length})`);
    await rig.team.settled();
    assert.equal(rig.stack.counters.get('offload.rebuilt') ?? 0, 0, 'none rebuilt from the dead source');
    assert.deepEqual(nic0!.salvage(), [], 'the dead source leaves none of them for salvage');
    assert.deepEqual(
      ownersOf(rig, st.sockets).filter((o) => o !== null),
      [],
      'none runs anywhere',
    );
  });
});
