/**
 * IPv4 reassembly under a flood of tiny fragments (the CVE-2018-5391 "FragmentSmack" and
 * CVE-2019-11477/11478 class): the work per fragment must not grow with the fragments already
 * held, whatever order a hostile peer sends them in. The reassembler counts its steps (`work`);
 * a sorted-list insertion (scan to the place, shift the tail) costs Θ(N²) here and fails.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { Counters } from '../../src/core/counters.ts';
import { SeededRandom } from '../../src/core/random.ts';
import { Reassembler } from '../../src/stack/reassembly.ts';
import { createIpv4Header } from '../../src/wire/ipv4.ts';

const N = 20_000;
/** Steps allowed per fragment: a constant, independent of N. */
const C = 8;
/** 8-byte fragments that fit one datagram's 65,515 payload bytes below the offset of its last. */
const PER_DATAGRAM = 8000;

interface Frag {
  id: number;
  off: number;
  len: number;
  mf: boolean;
  fill: number;
}

function feed(frags: Frag[]): { r: Reassembler; counters: Counters; done: number } {
  const counters = new Counters();
  const r = new Reassembler(new VirtualClock(0), counters, {}, () => {});
  const h = createIpv4Header();
  const buf = new Uint8Array(20 + 64);
  let done = 0;
  for (const f of frags) {
    h.src = 0x0a000001;
    h.dst = 0x0a000002;
    h.protocol = 17;
    h.id = f.id;
    h.fragOffset = f.off;
    h.totalLength = 20 + f.len;
    h.headerLength = 20;
    h.mf = f.mf;
    buf.fill(f.fill, 20, 20 + f.len);
    if (r.add(h, buf, 0)) done++;
  }
  return { r, counters, done };
}

/** N tiny fragments of N / PER_DATAGRAM datagrams, each datagram's in `order`, none completed. */
function flood(order: (offs: number[], rnd: SeededRandom) => number[]): Frag[] {
  const rnd = new SeededRandom(11);
  const out: Frag[] = [];
  for (let id = 0; id * PER_DATAGRAM < N; id++) {
    const offs = Array.from({ length: Math.min(PER_DATAGRAM, N - id * PER_DATAGRAM) }, (_, k) => 8 * (k + 1));
    for (const off of order(offs, rnd)) out.push({ id, off, len: 8, mf: true, fill: off & 0xff });
  }
  return out;
}

function shuffle(a: number[], rnd: SeededRandom): number[] {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rnd.float() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

describe('reassembly work under a flood of tiny fragments is linear', () => {
  const orders: [string, (offs: number[], rnd: SeededRandom) => number[]][] = [
    ['ascending', (o) => o],
    ['descending', (o) => o.reverse()],
    ['shuffled', shuffle],
    [
      'from both ends inwards',
      (o) => o.map((_, k) => (k % 2 === 0 ? o[k >> 1]! : o[o.length - 1 - (k >> 1)]!)),
    ],
  ];
  for (const [name, order] of orders) {
    test(`${N} 8-byte fragments, ${name}: at most ${C} steps each, all held`, () => {
      const frags = flood(order);
      assert.equal(frags.length, N);
      const { r, counters, done } = feed(frags);
      assert.equal(done, 0);
      assert.equal(counters.get('accept.ipv4.frag-queued'), N, 'every fragment held');
      assert.ok(r.work >= N, `work ${r.work} counts every fragment`);
      assert.ok(r.work <= C * N, `work ${r.work} > ${C}·${N}`);
    });
  }

  test(`${N} fragments that each overlap or duplicate one held: at most ${C} steps each`, () => {
    // Per datagram: a run of held fragments, then copies of them (duplicates, dropped) and
    // 16-byte fragments straddling two (overlaps, which poison the datagram).
    const frags: Frag[] = [];
    let id = 0;
    while (frags.length < N) {
      const held = 500;
      for (let k = held; k >= 1; k--) frags.push({ id, off: 8 * k, len: 8, mf: true, fill: k & 0xff });
      for (let k = 1; k <= held; k++) frags.push({ id, off: 8 * k, len: 8, mf: true, fill: k & 0xff });
      frags.push({ id, off: 8 * 250 + 8, len: 16, mf: true, fill: 0xee });
      for (let k = 1; k <= held; k++) frags.push({ id, off: 8 * k, len: 8, mf: true, fill: k & 0xff });
      id++;
    }
    const { r, counters } = feed(frags);
    const n = frags.length;
    assert.equal(counters.get('drop.ipv4.frag-duplicate'), id * 500);
    assert.equal(counters.get('drop.ipv4.frag-overlap'), id);
    assert.equal(counters.get('drop.ipv4.frag-poisoned'), id * 500);
    assert.ok(r.work <= C * n, `work ${r.work} > ${C}·${n}`);
  });

  test('the datagrams still reassemble whole in any order after the flood (work counted on the way)', () => {
    const counters = new Counters();
    const r = new Reassembler(new VirtualClock(0), counters, {}, () => {});
    const h = createIpv4Header();
    const total = 8 * 4000 + 5;
    const payload = new Uint8Array(total);
    for (let i = 0; i < total; i++) payload[i] = (i * 31) & 0xff;
    const rnd = new SeededRandom(3);
    const offs = shuffle(
      Array.from({ length: 4001 }, (_, k) => 8 * k),
      rnd,
    );
    const buf = new Uint8Array(20 + 8);
    let out: Uint8Array | null = null;
    for (const off of offs) {
      const len = Math.min(8, total - off);
      h.src = 1;
      h.dst = 2;
      h.protocol = 17;
      h.id = 9;
      h.fragOffset = off;
      h.totalLength = 20 + len;
      h.headerLength = 20;
      h.mf = off + len < total;
      buf.set(payload.subarray(off, off + len), 20);
      const got = r.add(h, buf, 0);
      if (got) out = got;
    }
    assert.ok(out, 'completed');
    assert.ok(Buffer.from(out.subarray(20)).equals(Buffer.from(payload)));
    assert.ok(r.work <= C * offs.length, `work ${r.work}`);
    assert.equal(r.size, 0);
    assert.equal(r.heldBytes, 0);
  });
});
