import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SeededRandom } from '../../src/core/random.ts';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import type { Nic } from '../../src/nic/nic.ts';
import { type ConnKey, connKeyId } from '../../src/nic/nic.ts';
import type { Owner } from '../../src/offload/offload-manager.ts';
import { keysOf, offloadPair, startStreams } from './helpers.ts';

const CONNS = Number(process.env.CHURN_CONNS ?? 1000);
const ROUNDS = 20;

test(`${CONNS} connections streaming both ways survive ${ROUNDS} random transfers each (live hand-over)`, () =>
  churn(true));

test(`${CONNS} connections streaming both ways survive ${ROUNDS} random transfers each (general protocol)`, () =>
  churn(false));

/**
 * `live`: transfers between the host and LocalNics hand the live connections over in one turn
 * (nothing is held, since nothing can arrive between the halves); otherwise each runs the general
 * protocol's steps, and segments that arrive mid-move are held and forwarded.
 */
async function churn(live: boolean): Promise<void> {
  const p = offloadPair(4242);
  const { net, host, peer } = p;
  const rnd = new SeededRandom(99);
  const st = await startStreams(p, CONNS, 24_000, 800, 20);
  const keys = keysOf(st.sockets);
  const m = host.offload;
  m.liveHandover = live;
  const nics = host.nics as readonly Nic[];
  const moves = new Map<string, number>();
  let finished = false;
  void st.done.then(() => {
    finished = true;
  });
  for (let round = 0; round < ROUNDS && !finished; round++) {
    // Each round every connection moves once: off the host, back to it, or NIC to NIC, in a few
    // groups at random instants.
    const groups = new Map<string, { keys: ConnKey[]; src: Owner; dst: Owner }>();
    for (const k of keys) {
      const owner = m.ownerOf(k);
      if (owner === null) continue;
      let dst: Owner;
      if (owner === 'host') dst = nics[rnd.u32() % nics.length]!;
      else dst = rnd.float() < 0.5 ? 'host' : nics.find((n) => n !== owner)!;
      const slot = rnd.u32() % 3;
      const gk = `${owner === 'host' ? 'host' : owner.id}>${dst === 'host' ? 'host' : dst.id}#${slot}`;
      const g = groups.get(gk) ?? { keys: [], src: owner, dst };
      g.keys.push(k);
      groups.set(gk, g);
    }
    for (const g of groups.values()) {
      await net.sleep(rnd.float() * 3);
      let r: Awaited<ReturnType<typeof m.upload>>;
      if (g.src === 'host') r = await m.offload(g.keys, g.dst as Nic);
      else if (g.dst === 'host') r = await m.upload(g.keys);
      else r = await m.move(g.keys, g.src, g.dst);
      for (const k of r.moved) moves.set(connKeyId(k), (moves.get(connKeyId(k)) ?? 0) + 1);
      const unexpected = r.refused.filter((x) => x.status !== 'closed' && x.status !== 'ineligible');
      assert.deepEqual(unexpected, [], 'no transfer refused');
    }
  }
  const bad = await st.done;
  assert.equal(bad, 0, 'every byte arrives intact in both directions');
  assert.deepEqual(st.errors.map(String), [], 'no socket errors');
  const rst = (c: { get(n: string): number }) => c.get('tcp.rst.in') + c.get('tcp.rst.out');
  const resets =
    rst(host.stack.counters) +
    rst(peer.stack.counters) +
    nics.reduce((a, n) => a + rst((n as LocalNic).counters), 0);
  assert.equal(resets, 0, 'no resets');
  const counts = [...moves.values()];
  assert.equal(counts.length, CONNS);
  assert.ok(
    Math.min(...counts) >= ROUNDS,
    `every connection moved ${ROUNDS} times (min ${Math.min(...counts)})`,
  );
  const total = counts.reduce((a, b) => a + b, 0);
  const hc = host.stack.counters;
  const held =
    hc.get('tcp.frozen.queued') +
    nics.reduce((a, n) => a + (n as LocalNic).counters.get('tcp.frozen.queued'), 0);
  if (live) {
    assert.equal(hc.get('offload.handover'), total, 'every transfer handed the live connection over');
    assert.equal(held, 0, 'nothing held: no segment can arrive between the two halves of a hand-over');
    assert.equal(hc.get('tcp.released'), 0, 'no state released to be rebuilt');
  } else {
    // Segments that arrived mid-move were held and handed on, never discarded.
    assert.equal(hc.get('offload.handover'), 0);
    assert.ok(held > 0, 'some segments arrived mid-move');
    assert.ok(
      hc.get('offload.forwarded') + hc.get('tcp.frozen.forwarded') > 0,
      'held segments were forwarded',
    );
  }
  for (const c of [hc, ...nics.map((n) => (n as LocalNic).counters)]) {
    assert.equal(c.get('drop.tcp.frozen-discarded'), 0);
    assert.equal(c.get('drop.tcp.frozen-overflow'), 0);
  }
  console.log(
    `transfers ${total}, min ${Math.min(...counts)} per connection, virtual ${net.now().toFixed(0)} ms`,
  );
  net.close();
}
