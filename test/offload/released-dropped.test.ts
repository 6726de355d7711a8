/**
 * A transfer pairs what the source released with the connections asked for; one left without a
 * state closed at the source meanwhile, and its socket carries on with the handle it has (the
 * close, and what is left to read, come through it). But a connection the source released and
 * then dropped, because its state failed validation there (NDIS: the target fails it and aborts),
 * is missing too, and the handle its socket has is one the source let go: resumed on it, the
 * socket heard nothing, ever (its stream never ended). It must lose its move with ECONNABORTED,
 * and the other connections of the batch move on.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import type { Nic } from '../../src/nic/nic.ts';
import { keysOf, offloadPair, startStreams } from './helpers.ts';

/** `n` streams offloaded to the first of two LocalNics; transfers by the general protocol. */
async function streamsAtFirstNic(seed: number, n: number) {
  const p = offloadPair(seed);
  const m = p.host.offload;
  // The general protocol's terminate and pairing (a live hand-over releases nothing).
  m.liveHandover = false;
  const [n0, n1] = p.host.nics as [LocalNic, LocalNic];
  const st = await startStreams(p, n, 60_000, 1000, 10);
  const keys = keysOf(st.sockets);
  assert.equal((await m.offload(keys, n0)).moved.length, n);
  await p.net.sleep(50);
  return { p, m, n0, n1, st, keys };
}

describe('a connection the source released and dropped (its state refused there)', () => {
  for (const to of ['another NIC', 'the host'] as const) {
    it(`is lost to its socket with ECONNABORTED, the rest move (${to})`, async () => {
      const { p, m, n0, n1, st, keys } = await streamsAtFirstNic(to === 'the host' ? 61 : 60, 4);
      const victim = 1;
      const k = keys[victim]!;
      const errors: NodeJS.ErrnoException[] = [];
      st.sockets[victim]!.on('error', (e) => errors.push(e));
      // A state that fails validateTcpState at the release (soft.reoWndMult 0): dropped at n0.
      n0.engine.connection(k)!.state.soft.reoWndMult = 0;
      const r = to === 'the host' ? await m.upload(keys) : await m.move(keys, n0, n1);
      const dst: Nic | 'host' = to === 'the host' ? 'host' : n1;
      assert.equal(r.moved.length, 3, 'the other three moved');
      assert.equal(r.refused.length, 1);
      assert.equal(r.refused[0]!.key.localPort, k.localPort);
      assert.equal(r.refused[0]!.status, 'failure');
      assert.equal(m.ownerOf(k), null, 'the host forgot it');
      const s = st.sockets[victim]!;
      assert.equal(s.moving, false);
      await p.net.sleep(10);
      assert.equal(errors[0]?.code, 'ECONNABORTED', 'its socket hears it is lost');
      assert.equal(s.destroyed, true, 'and ends');
      for (let i = 0; i < keys.length; i++) {
        if (i === victim) continue;
        assert.equal(m.ownerOf(keys[i]!), dst, `connection ${i} runs at the destination`);
      }
      // Its two directions fail (lost here, reset at the peer's next segment); the other six whole.
      assert.equal(await st.done, 2);
      p.net.close();
    });
  }
});
