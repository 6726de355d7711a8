/**
 * Per-connection statistics (bytes, segments, retransmits, resets since the connection began) travel with
 * the state through WorkerNics, where they cross a thread in the codec and live in the hard-state
 * record: host → worker, worker → worker, a carrier failover, a worker killed and its connections
 * rebuilt on the other from the hard state in shared memory, worker → host. No move resets them,
 * and at the end the host counts exactly what the peer counted the other way.
 * (LocalNics and a crash rebuilt in the host: test/offload/stats.test.ts.)
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ConnKey, QueryResult } from '../../src/nic/nic.ts';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import { streamBothWays } from '../nic/worker-helpers.ts';
import { assertClean, keyOf, nextFailover, prodded, setup, until, within } from './worker-team-helpers.ts';

const N = 6;
const BYTES = 400_000;
const CHUNK = 2000;
/** Chunks 20 ms apart while the moves run. */
const GAP_MS = 20;
/**
 * Chunks each stream may send per step: six steps take 150 of the 200, so every stream still has
 * data to send at the last step, however long the moves take; the rest then goes at once. Paced by
 * the clock alone (200 chunks, about 4 s) the streams ended before the last step on a loaded
 * machine, where the moves and the failovers took longer than that, and the test found no new bytes.
 */
const STEP_CHUNKS = 25;

const FIELDS = [
  'bytesIn',
  'bytesOut',
  'segmentsIn',
  'segmentsOut',
  'retransmits',
  'resetsIn',
  'resetsOut',
] as const;
type Counts = Pick<QueryResult, (typeof FIELDS)[number]>;

describe('statistics across every kind of move through WorkerNics', () => {
  test('host → worker → worker → failover → crash rebuild → host: counted once, never reset', {
    timeout: 120_000,
  }, async (t) => {
    const rig = await setup(t, { seed: 47 });
    const nic0 = rig.nics[0]!;
    const nic1 = rig.nics[1]!;
    let allowed = STEP_CHUNKS * CHUNK;
    let stepping = true;
    let held: (() => void)[] = [];
    const release = (): void => {
      allowed += STEP_CHUNKS * CHUNK;
      const h = held;
      held = [];
      for (const r of h) r();
    };
    const gap = async (next: number, total: number): Promise<void> => {
      if (!stepping || next >= total) return;
      while (stepping && next >= allowed) await new Promise<void>((r) => held.push(r));
      if (stepping) await rig.net.sleep(GAP_MS);
    };
    const st = await streamBothWays(rig.host, rig.peer, N, BYTES, CHUNK, gap);
    const keys = st.sockets.map(keyOf);
    // The counted fields alone: a failure prints them, not the whole state.
    const pick = (s: Counts): Counts => Object.fromEntries(FIELDS.map((f) => [f, s[f]])) as Counts;
    const counts = async (k: ConnKey): Promise<Counts> => {
      const o = rig.manager.ownerOf(k);
      if (o === 'host')
        return pick(rig.stack.tcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort)!.stats);
      assert.ok(o !== null, 'the connection runs somewhere');
      const [q] = await o.query([k]);
      assert.ok(q, `${o.id} knows the connection`);
      return pick(q);
    };
    let last: Counts[] = keys.map(() => ({
      bytesIn: 0,
      bytesOut: 0,
      segmentsIn: 0,
      segmentsOut: 0,
      retransmits: 0,
      resetsIn: 0,
      resetsOut: 0,
    }));
    const grew = (now: Counts[]): boolean =>
      now.every((c, i) => c.bytesIn > last[i]!.bytesIn && c.bytesOut > last[i]!.bytesOut);
    const step = async (where: string): Promise<Counts[]> => {
      const read = async (): Promise<Counts[]> => {
        const now = await Promise.all(keys.map(counts));
        for (let i = 0; i < keys.length; i++)
          for (const f of FIELDS)
            assert.ok(
              now[i]![f] >= last[i]![f],
              `${where}: ${f} of connection ${i} went back (${last[i]![f]} → ${now[i]![f]})`,
            );
        return now;
      };
      // Until every connection carried new bytes both ways: a connection that has just moved may
      // wait for its prod or its retransmission timer, longer than a fixed sleep that holds on an
      // idle machine.
      const now = await until(rig, read, grew);
      // Data flowed since the last step: the counts carry on from where they were.
      assert.ok(
        grew(now),
        `${where}: every connection counted new bytes both ways: ${JSON.stringify({ last, now })}`,
      );
      last = now;
      release();
      return now;
    };

    await step('in the host');
    // RSTs counted before the moves (as in-window RSTs answered by a challenge ACK leave them on a
    // live connection): every owner after must go on from these counts.
    const resets = keys.map((_, i) => ({ resetsIn: 3 + i, resetsOut: 1 }));
    for (const [i, k] of keys.entries())
      Object.assign(rig.stack.tcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort)!.stats, resets[i]);
    // From here every owner's query() must show at least these (step() checks no count goes back).
    last = last.map((c, i) => ({ ...c, ...resets[i] }));
    assert.equal((await rig.manager.offload(keys, nic0)).moved.length, N);
    await step('host → worker');
    assert.equal((await rig.manager.move(keys, nic0, nic1)).moved.length, N);
    await step('worker → worker');
    const failover = nextFailover(rig);
    const proddedBefore = prodded(await nic0.counters());
    rig.ports[1]!.cut();
    const f = await within(failover, 20_000, 'carrier failover', rig);
    assert.equal(f.connections, N);
    assert.deepEqual(f.to, [nic0.id]);
    // Every moved connection is prodded where it runs now (a resend from snd.una, counted there
    // as a retransmission when it had data in flight; whether any had at the cut depends on the
    // worker threads' timing, so the prod itself is what is counted here, and step() checks that
    // every count carried over and went on growing; a quiet one is prodded unbuilt, nic-worker.ts
    // prodUnbuilt). The prods are paced after the install (buildOwed), and one that waits for its
    // settle is prodded when that comes, so the count is waited for (a CI run read 3 of 6 at once).
    const proddedNow = await until(
      rig,
      async () => prodded(await nic0.counters()) - proddedBefore,
      (n) => n >= N,
    );
    assert.equal(proddedNow, N, 'each moved connection prodded');
    await step('carrier failover');
    rig.ports[1]!.restore();
    // Bounded: a member that never came back (taken for dead, say) fails here and says so, where
    // an endless wait hung the test process past its own timeout.
    const back = await until(
      rig,
      async () => rig.team.isUsable(nic1),
      (u) => u,
    );
    assert.ok(back, `${nic1.id} usable again: ${JSON.stringify({ death: nic1.death, linkUp: nic1.linkUp })}`);
    const crash = nextFailover(rig);
    await nic0.kill();
    const c = await within(crash, 20_000, 'crash failover', rig);
    assert.equal(c.cause, 'dead');
    assert.equal(rig.stack.counters.get('offload.rebuilt'), N, 'rebuilt from the hard state');
    assert.ok(keys.every((k) => rig.manager.ownerOf(k) === nic1));
    await step('crash, rebuilt on the other worker');
    assert.equal((await rig.manager.upload(keys)).moved.length, N);
    await step('worker → host');
    stepping = false;
    release();

    await within(assertClean(rig, st), 30_000, 'streams', rig);
    await rig.net.sleep(200);
    let extraResets = 0;
    for (const [i, k] of keys.entries()) {
      const h = (st.sockets[i]!.connection as TcpConnection | null)?.stats;
      assert.ok(h, 'the host still knows the connection');
      const peer = rig.peer.stack.tcp.lookup(k.remoteIp, k.remotePort, k.localIp, k.localPort)?.stats;
      // The 4-byte index and the data out; the data in: each byte counted once across five owners.
      assert.equal(h.bytesOut, BYTES + 4);
      assert.equal(h.bytesIn, BYTES);
      if (peer) {
        assert.equal(h.bytesOut, peer.bytesIn);
        assert.equal(h.bytesIn, peer.bytesOut);
      }
      assert.ok(h.segmentsIn >= BYTES / CHUNK, `segments in (${h.segmentsIn})`);
      assert.ok(h.segmentsOut >= BYTES / CHUNK, `segments out (${h.segmentsOut})`);
      assert.ok(h.retransmits >= last[i]!.retransmits, 'retransmits never reset');
      // Through the codec, the transfer records, the hard record and its crash rebuild.
      // None sent by the host; received, the ones set plus any the peer sent since (a RST
      // answering a segment its closed connection no longer knew, counted in TIME_WAIT: see below).
      assert.equal(h.resetsOut, resets[i]!.resetsOut, 'resets out counted across moves');
      assert.ok(h.resetsIn >= resets[i]!.resetsIn, `resets in never start over (${h.resetsIn})`);
      extraResets += h.resetsIn - resets[i]!.resetsIn;
    }
    assert.ok(
      extraResets <= (rig.peer.stack.counters.get('tcp.rst.out') ?? 0),
      `RSTs received after the set (${extraResets}) were all sent by the peer`,
    );
    // Those RSTs are harmless, as from Linux: a peer that closed second (LAST_ACK) resent its FIN
    // (tail loss probe or RTO) before the host's ACK of it came back on a loaded machine; it closes on
    // that ACK and answers the host's second one (for the resent FIN, in TIME_WAIT) with a RST, which
    // TIME_WAIT ignores (RFC 1337) after the application had its clean end. A RST that found the host's
    // connection in any other state, or at a NIC, would be a fault.
    assert.equal(
      rig.stack.counters.get('tcp.rst.in.time-wait'),
      extraResets,
      'every RST received after the set found the host connection in TIME_WAIT',
    );
    assert.equal(rig.stack.counters.get('tcp.rst.in'), extraResets, 'the host stack received no other RST');
  });
});
