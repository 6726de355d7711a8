/**
 * The two halves of a hand-over's order (src/nic/worker/hand-order.ts), without threads: the
 * destination holds a handed batch's input until the source's 'through' and then runs it in the
 * order it came; the source unlists what it handed only on the destination's word, and not what it
 * runs again by then.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import type { ConnKey } from '../../src/nic/nic.ts';
import {
  HandedOn,
  type HandsLink,
  HeldIn,
  HOLD_BYTES,
  HOLD_FRAMES,
  HOLD_MS,
  TUPLE_READ,
  tcpTuple,
} from '../../src/nic/worker/hand-order.ts';
import type { FrameBatcher } from '../../src/nic/worker/protocol.ts';

const LOCAL = 0x0a000001;
const PEER = 0x0a000002;

/** An Ethernet + IPv4 + TCP frame from the peer's port `sport` to local port `dport`, tagged by its sequence number. */
function segment(sport: number, dport: number, seq: number, length = 54): Uint8Array {
  const f = new Uint8Array(length);
  f[12] = 0x08;
  f[14] = 0x45;
  f[14 + 9] = 6;
  const dv = new DataView(f.buffer);
  dv.setUint32(14 + 12, PEER);
  dv.setUint32(14 + 16, LOCAL);
  dv.setUint16(34, sport);
  dv.setUint16(36, dport);
  dv.setUint32(38, seq);
  return f;
}

const key = (localPort: number, remotePort: number): ConnKey => ({
  localIp: LOCAL,
  localPort,
  remoteIp: PEER,
  remotePort,
});
const seqOf = (f: Uint8Array): number => new DataView(f.buffer, f.byteOffset).getUint32(38);

function held(clock = new VirtualClock()) {
  const ran: { seq: number; peer: boolean }[] = [];
  const counts: Record<string, number> = {};
  const h = new HeldIn(clock, {
    run: (f, _info, peer) => ran.push({ seq: seqOf(f), peer }),
    count: (what, n) => {
      counts[what] = (counts[what] ?? 0) + n;
    },
  });
  return { h, ran, counts, clock };
}

test('the destination holds a handed batch input until the source says through, then runs it in order', () => {
  const { h, ran, counts } = held();
  const from = {};
  h.hold(from, 1, [key(80, 5000)]);
  const f1 = segment(5000, 80, 1);
  assert.equal(h.offer(f1, undefined, false), true, 'its own link: held');
  f1.fill(0); // the batch's buffer, reused: what is held is a copy
  assert.equal(h.offer(segment(5000, 80, 2), undefined, true), true, 'from a peer: held');
  assert.equal(h.offer(segment(5001, 80, 9), undefined, false), false, 'another connection runs now');
  h.through(from, 0);
  assert.deepEqual(ran, [], 'an earlier hand says nothing of this one');
  h.through({}, 1);
  assert.deepEqual(ran, [], 'another source says nothing of it');
  h.through(from, 1);
  assert.deepEqual(ran, [
    { seq: 1, peer: false },
    { seq: 2, peer: true },
  ]);
  assert.equal(h.size, 0);
  assert.equal(h.offer(segment(5000, 80, 3), undefined, false), false, 'after through: runs at once');
  assert.equal(counts.held, 2);
});

test("a hold ends when the source's channel closes, or on its own after HOLD_MS", () => {
  const { h, ran, counts, clock } = held();
  const a = {};
  const b = {};
  h.hold(a, 1, [key(80, 5000)]);
  h.hold(b, 1, [key(80, 5001)]);
  h.offer(segment(5000, 80, 1), undefined, false);
  h.offer(segment(5001, 80, 2), undefined, false);
  h.closed(a);
  assert.deepEqual(
    ran.map((r) => r.seq),
    [1],
  );
  clock.advance(HOLD_MS - 1);
  assert.equal(ran.length, 1);
  clock.advance(1);
  assert.deepEqual(
    ran.map((r) => r.seq),
    [1, 2],
  );
  assert.equal(counts.expired, 1);
  assert.equal(h.size, 0);
});

test('the source unlists what it handed on the destination word, not what runs there again', () => {
  const unlisted: number[] = [];
  const on = new HandedOn((k) => unlisted.push(k.remotePort));
  const link: HandsLink = { owner: 2, port: null as never, out: null as unknown as FrameBatcher, sent: 0 };
  assert.equal(on.add(link, [key(80, 5000), key(80, 5001)]), 1);
  assert.equal(on.add(link, [key(80, 5002)]), 2);
  assert.equal(tcpTuple(segment(5000, 80, 1), null), TUPLE_READ);
  assert.equal(on.linkOfTuple(), link, 'a frame for a handed connection follows the hand');
  assert.equal(tcpTuple(segment(5009, 80, 1), null), TUPLE_READ);
  assert.equal(on.linkOfTuple(), undefined);
  on.reinstalled(key(80, 5001));
  on.installed(link, 1);
  assert.deepEqual(unlisted, [5000], 'hand 1, less the connection run here again');
  assert.equal(tcpTuple(segment(5000, 80, 1), null), TUPLE_READ);
  assert.equal(on.linkOfTuple(), undefined, 'listed at the destination now: the usual way');
  on.closed(link);
  assert.deepEqual(unlisted, [5000, 5002], 'the channel closed: hand 2 too');
  assert.equal(on.size, 0);
});

test('a hold that is full runs what it kept, in order, then the frame that found it full: none is lost', () => {
  const { h, ran, counts } = held();
  const from = {};
  h.hold(from, 1, [key(80, 5000)]);
  for (let i = 0; i < HOLD_FRAMES; i++)
    assert.equal(h.offer(segment(5000, 80, i), undefined, i % 2 === 0), true, `frame ${i} held`);
  assert.equal(ran.length, 0);
  assert.equal(h.offer(segment(5000, 80, HOLD_FRAMES), undefined, false), false, 'the caller runs it, now');
  assert.equal(ran.length, HOLD_FRAMES, 'everything held ran first');
  assert.ok(
    ran.every((r, i) => r.seq === i && r.peer === (i % 2 === 0)),
    'in the order it came, each as it came',
  );
  assert.equal(counts.overflow, 1);
  assert.equal(h.size, 0, 'the hold ended');
  assert.equal(
    h.offer(segment(5000, 80, HOLD_FRAMES + 1), undefined, false),
    false,
    'later ones run as they come',
  );
  h.through(from, 1);
  assert.equal(ran.length, HOLD_FRAMES, "the source's word finds nothing left to run");
});

test("a hold ends as full at its byte bound too (a TAP's coalesced frames), and another hold keeps its own", () => {
  const { h, ran, counts } = held();
  const from = {};
  h.hold(from, 1, [key(80, 5000)]);
  h.hold(from, 2, [key(80, 5001)]);
  const big = 64 * 1024;
  const fit = HOLD_BYTES / big;
  assert.ok(fit < HOLD_FRAMES, 'the byte bound is reached first');
  for (let i = 0; i < fit; i++) assert.equal(h.offer(segment(5000, 80, i, big), undefined, false), true);
  assert.equal(h.offer(segment(5001, 80, 1000), undefined, false), true, "the other hold's");
  assert.equal(h.offer(segment(5000, 80, fit, big), undefined, false), false, 'past the bound: runs now');
  assert.deepEqual(
    ran.map((r) => r.seq),
    Array.from({ length: fit }, (_, i) => i),
  );
  assert.equal(counts.overflow, 1);
  assert.equal(h.size, 1, 'the other hold still holds');
  h.through(from, 2);
  assert.equal(ran.at(-1)!.seq, 1000);
});

test('how long the longest hold lasted, from the install to its end', () => {
  const { h, clock } = held();
  const from = {};
  h.hold(from, 1, [key(80, 5000)]);
  clock.advance(30);
  h.through(from, 1);
  h.hold(from, 2, [key(80, 5000)]);
  clock.advance(10);
  h.closed(from);
  assert.equal(h.longestMs, 30);
  h.hold(from, 3, [key(80, 5000)]);
  h.offer(segment(5000, 80, 1), undefined, false);
  clock.advance(HOLD_MS);
  assert.equal(h.longestMs, HOLD_MS, 'an expired hold too');
});

test('a hold expires HOLD_MS after its first frame, not after the install: a slow source with nothing held costs nothing', () => {
  const { h, ran, counts, clock } = held();
  const from = {};
  h.hold(from, 1, [key(80, 5000)]);
  clock.advance(10 * HOLD_MS);
  assert.equal(h.size, 1, 'empty, it waits for the word');
  h.offer(segment(5000, 80, 1), undefined, false);
  clock.advance(HOLD_MS / 2);
  h.offer(segment(5000, 80, 2), undefined, false);
  clock.advance(HOLD_MS / 2 - 1);
  assert.equal(ran.length, 0);
  clock.advance(1);
  assert.deepEqual(
    ran.map((r) => r.seq),
    [1, 2],
    'the first frame waited HOLD_MS: all run, in order',
  );
  assert.equal(counts.expired, 1);
  assert.equal(h.size, 0);
});

test("the source unlists a hand on the destination's word and keeps its frames following the hand until installed", () => {
  const unlisted: number[] = [];
  const on = new HandedOn((k) => unlisted.push(k.remotePort));
  const link: HandsLink = { owner: 2, port: null as never, out: null as unknown as FrameBatcher, sent: 0 };
  on.add(link, [key(80, 5000), key(80, 5001)]);
  on.add(link, [key(80, 5002)]);
  on.unlist(link, 1);
  assert.deepEqual(
    unlisted,
    [5000, 5001],
    "hand 1 is off the owner table: the team's other members send to the destination",
  );
  assert.equal(tcpTuple(segment(5000, 80, 1), null), TUPLE_READ);
  assert.equal(on.linkOfTuple(), link, 'what still comes here for it follows the hand');
  on.unlist(link, 1);
  on.reinstalled(key(80, 5001));
  on.installed(link, 1);
  assert.deepEqual(unlisted, [5000, 5001], 'unlisted once');
  assert.equal(tcpTuple(segment(5000, 80, 1), null), TUPLE_READ);
  assert.equal(on.linkOfTuple(), undefined, 'installed: the usual way');
  assert.equal(tcpTuple(segment(5002, 80, 1), null), TUPLE_READ);
  assert.equal(on.linkOfTuple(), link, 'hand 2 still follows');
  on.closed(link);
  assert.deepEqual(unlisted, [5000, 5001, 5002]);
  assert.equal(on.size, 0);
});
