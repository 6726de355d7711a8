/**
 * What a LocalNic's crash leaves (hardStateOf of each state it ran, taken in the host's thread) is
 * rebuilt without validateTcpState (`SalvageRecord.ownThread`). That is sound only if a crash never
 * finds a state half-way through an operation. It cannot: crash() is a call of the host's thread,
 * which runs between the engine's turns, and inside a turn the engine calls no outside code while a
 * connection's state is between two consistent points (user events are queued and delivered once it
 * is consistent, 'closed' and 'abort' are deferred, frames for the host and the other indications go
 * out between one connection's operations and the next). This pins it: crashes at many instants of
 * lossy, reordered two-way streams leave records that the full validator accepts, and the host goes
 * on from them with every byte delivered once.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rebuildTcpState } from '../../src/nic/hard-state.ts';
import type { Nic, SalvageRecord } from '../../src/nic/nic.ts';
import { DEFAULT_TCP_CACHED } from '../../src/state/tcp-state.ts';
import { keysOf, offloadPair, startStreams } from './helpers.ts';

const CONNS = 3;
const BYTES = 120_000;

test("a LocalNic's crash at any instant leaves records the full validator accepts, and every byte arrives", async () => {
  let rebuilt = 0;
  let refused = 0;
  for (const [seed, atMs] of [
    [61, 3],
    [62, 17],
    [63, 41],
    [64, 88],
    [68, 101],
    [65, 130],
    [67, 152],
    [66, 211],
  ] as const) {
    const p = offloadPair(seed);
    const { net, host, peer } = p;
    const st = await startStreams(p, CONNS, BYTES, 1500, 2);
    peer.impair({ loss: 0.03, reorder: 0.05, delayMs: 2, jitterMs: 1 });
    const keys = keysOf(st.sockets);
    // n1: the host's own frames leave through n0's port, which goes on after the crash.
    const n0 = host.nics[1] as Nic;
    const m = host.offload;
    assert.equal((await m.offload(keys, n0)).moved.length, CONNS, `seed ${seed}`);
    await net.sleep(atMs);
    // Each record the host's rebuild will take, rebuilt apart first both ways (a state of its own
    // over the same rings, which a rebuild reads and leaves as they are): the full validator must
    // refuse nothing the same-thread shortcut lets through.
    const salvage = n0.salvage.bind(n0);
    n0.salvage = (k) => {
      const recs: SalvageRecord[] = salvage(k);
      for (const r of recs) {
        assert.equal(r.ownThread, true);
        const hard = r.hard;
        const spare = r.spare;
        assert.ok(hard !== null && spare !== undefined);
        const outcome = (ownThread: boolean): string => {
          try {
            rebuildTcpState(
              hard,
              r.sendRing,
              r.recvRing,
              r.cached ?? DEFAULT_TCP_CACHED,
              spare.path,
              net.now(),
              null,
              ownThread,
            );
            return 'rebuilt';
          } catch (e) {
            return String(e);
          }
        };
        const own = outcome(true);
        assert.equal(outcome(false), own, `seed ${seed}, ${atMs} ms: state ${hard.state}`);
        if (own === 'rebuilt') rebuilt++;
        else refused++;
      }
      return recs;
    };
    const rebuiltBefore = rebuilt;
    (n0 as unknown as { crash(cause: string): void }).crash(`test: ${atMs} ms after the offload`);
    const rec = await m.recover(n0, 'host');
    assert.equal(rec.moved.length, rebuilt - rebuiltBefore, `seed ${seed}: what rebuilt runs in the host`);
    peer.impair({});
    assert.equal(await st.done, 0, `seed ${seed}: every byte arrives, once`);
    assert.deepEqual(st.errors, [], `seed ${seed}`);
    net.close();
  }
  // Crashes while data flowed both ways (the last one finds the streams over, in TIME_WAIT, which
  // no owner takes over, either way).
  assert.ok(rebuilt >= 5 * CONNS, `${rebuilt} records rebuilt, ${refused} refused both ways`);
});
