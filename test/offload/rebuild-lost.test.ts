/**
 * A rebuild that loses a connection (no hard state left, or a destination that closed the batch in
 * hand): its socket waits frozen on the handle of a NIC that died, which let go of it at its crash.
 * Resumed there with bytes unread at the NIC and a read pending, the socket reads that handle,
 * which throws out of the rebuild's loop and leaves the rest frozen. Each lost item must hear
 * ECONNABORTED instead, and the others carry on.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConnectionError } from '../../src/core/errors.ts';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import type { ConnKey, SalvageRecord } from '../../src/nic/nic.ts';
import { keysOf, offloadPair, startStreams } from './helpers.ts';

const same = (a: ConnKey, b: ConnKey) => a.localPort === b.localPort && a.remotePort === b.remotePort;

/**
 * `n` streams offloaded to the first of two LocalNics, which crashes while the `victim`'s
 * application has not read all the NIC holds for it. Its salvage, which the recover's rebuild
 * asks for right after its freeze, passes each record through `spoil` (null: none), and the
 * victim's application reads then, with its connection frozen: that read waits for the move.
 */
async function streamsOnCrashedNic(
  seed: number,
  n: number,
  victim: number,
  spoil: (r: SalvageRecord, victim: boolean) => SalvageRecord | null = (r) => r,
) {
  const p = offloadPair(seed);
  const m = p.host.offload;
  const [n0, n1] = p.host.nics as [LocalNic, LocalNic];
  const st = await startStreams(p, n, 120_000);
  const keys = keysOf(st.sockets);
  const errs = st.sockets.map(() => [] as Error[]);
  for (const [i, s] of st.sockets.entries()) s.on('error', (e) => errs[i]!.push(e));
  assert.equal((await m.offload(keys, n0)).moved.length, n);
  const v = st.sockets[victim]!;
  v.pause();
  await p.net.sleep(300);
  assert.ok(v.connection!.readableLength > 0, 'bytes unread at the NIC');
  n0.crash('test: crashed');
  const salvage = n0.salvage.bind(n0);
  n0.salvage = (ks) => {
    assert.equal(v.moving, true, 'frozen by the recover');
    assert.notEqual(v.read(), null, 'the application reads what the socket had');
    const out: SalvageRecord[] = [];
    for (const r of salvage(ks)) {
      const kept = spoil(r, same(r.key, keys[victim]!));
      if (kept !== null) out.push(kept);
    }
    return out;
  };
  return { p, m, n0, n1, st, keys, errs };
}

function code(errs: readonly Error[]): string | undefined {
  return (errs[0] as NodeJS.ErrnoException | undefined)?.code;
}

describe('rebuild: a connection lost on the way', () => {
  for (const [what, spoil] of [
    ['no hard state left', () => null],
    ['hard state never written', (r: SalvageRecord) => ({ ...r, hard: null })],
  ] as const) {
    it(`${what}: that socket hears ECONNABORTED, the rest are rebuilt`, async () => {
      const victim = 3;
      const { p, m, n0, n1, st, keys, errs } = await streamsOnCrashedNic(40, 8, victim, (r, v) =>
        v ? spoil(r) : r,
      );
      const k = keys[victim]!;
      const r = await m.recover(n0, n1);
      assert.equal(r.moved.length, 7, 'the other seven rebuilt');
      assert.deepEqual(
        r.refused.map((f) => [f.key.localPort, f.reason]),
        [[k.localPort, what]],
      );
      assert.equal(m.ownerOf(k), null, 'the host forgot it');
      assert.equal(st.sockets.filter((s) => s.moving).length, 0, 'no socket left frozen');
      // Its move lost, the socket hears of it at once, not on a later turn.
      assert.equal(st.sockets[victim]!.destroyed, true, 'the lost socket ended');
      await p.net.sleep(10);
      assert.equal(code(errs[victim]!), 'ECONNABORTED');
      for (let i = 0; i < keys.length; i++) {
        if (i === victim) continue;
        assert.equal(m.ownerOf(keys[i]!), n1, `connection ${i} runs at the destination`);
        assert.deepEqual(errs[i], [], `connection ${i} carries on`);
      }
      // The lost one's two directions fail; the other 14 arrive whole.
      assert.equal(await st.done, 2);
    });
  }

  it('a destination that closes the batch in hand: every socket hears ECONNABORTED, none frozen', async () => {
    const { p, m, n0, n1, st, errs } = await streamsOnCrashedNic(41, 4, 1);
    n1.initiate = () => Promise.reject(new ConnectionError('ECONNABORTED', 'test: closed in hand'));
    const r = await m.recover(n0, n1);
    assert.equal(r.moved.length, 0);
    assert.equal(r.refused.length, 4);
    for (const f of r.refused) assert.equal(f.status, 'closed');
    assert.equal(st.sockets.filter((s) => s.moving).length, 0, 'no socket left frozen');
    await p.net.sleep(10);
    for (let i = 0; i < errs.length; i++) {
      assert.equal(st.sockets[i]!.destroyed, true, `socket ${i} ended`);
      assert.equal(code(errs[i]!), 'ECONNABORTED', `socket ${i} heard why`);
    }
    assert.equal(await st.done, 8);
  });
});
