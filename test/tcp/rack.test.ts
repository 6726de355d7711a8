import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { RackLog } from '../../src/stack/tcp/rack.ts';
import { sackedPackets } from '../../src/stack/tcp/sack.ts';
import { createNeighborState } from '../../src/state/neighbor-state.ts';
import { createPathState } from '../../src/state/path-state.ts';
import type { TcpState } from '../../src/state/tcp-state.ts';
import { sampleConn } from '../state/helpers.ts';

const MSS = 1000;

function mkState(una: number, flight: number): TcpState {
  const nb = createNeighborState({ srcMac: 1, vlanId: -1, ip: 2 });
  const s = sampleConn(createPathState({ localIp: 1, remoteIp: 2 }, nb, 0, 1500));
  s.delegated.sndUna = una >>> 0;
  s.delegated.sndMax = (una + flight) >>> 0;
  s.delegated.sndNxt = s.delegated.sndMax;
  s.delegated.srtt = 10;
  // As at establishment (tcp-input): no recovery or timeout episode under way, nothing SACKed
  // (sampleConn's scoreboard has a range for the codec's sake).
  s.soft.recoveryPoint = s.delegated.sndUna;
  s.soft.sacked.length = 0;
  return s;
}

for (const una of [1000, 0xffffff00]) {
  describe(`RACK log (una ${una.toString(16)})`, () => {
    const at = (n: number) => (una + n) >>> 0;

    test('a segment sent a reordering window before a delivered one is lost; later ones are not', () => {
      const s = mkState(una, 4000);
      const r = new RackLog();
      r.onSend(at(0), at(1000), 0, false);
      r.onSend(at(1000), at(2000), 0, false); // same burst: merged
      r.onSend(at(2000), at(3000), 20, false);
      r.onSend(at(3000), at(4000), 21, false);
      assert.equal(r.entries.length, 3);
      // The ACK of the first burst gives min RTT 10.
      s.delegated.sndUna = at(1000);
      const low = { seq: 0 };
      assert.equal(r.onAck(s, 10, low, MSS), -1);
      // [2000, 3000) is SACKed at 30: [1000, 2000), sent 20 ms earlier, is lost; [3000, 4000) is not.
      s.soft.sacked.push({ start: at(2000), end: at(3000) });
      assert.equal(r.onAck(s, 30, low, MSS), at(2000));
      assert.equal(low.seq, at(1000));
      assert.equal(r.xmitTs, 20);
    });

    test('a retransmission overwrites the send time of its range; a lost retransmission is found again', () => {
      const s = mkState(una, 3000);
      const r = new RackLog();
      r.onSend(at(0), at(3000), 0, false);
      r.onSend(at(1000), at(2000), 50, true);
      assert.deepEqual(
        r.entries.map((e) => [e.start, e.end, e.sentAt]),
        [
          [at(0), at(1000), 0],
          [at(1000), at(2000), 50],
          [at(2000), at(3000), 0],
        ],
      );
      r.minRtt = 10;
      r.onSend(at(0), at(1000), 60, true);
      // The retransmission of [0, 1000) sent at 60 is delivered at 75; the one at 50 is not yet.
      s.delegated.sndUna = at(1000);
      const low = { seq: 0 };
      assert.equal(r.onAck(s, 75, low, MSS), at(3000), 'the retransmission at 50 and the tail at 0 are lost');
      assert.equal(low.seq, at(1000));
    });

    test('sends of one instant go by their order: a retransmission before new data that arrived is lost (RFC 8985 RACK_sent_after)', () => {
      for (const rtxFirst of [true, false]) {
        const s = mkState(una, 4000);
        s.soft.inRecovery = true;
        s.soft.recoveryPoint = s.delegated.sndMax;
        const r = new RackLog();
        r.minRtt = 10;
        r.onSend(at(0), at(3000), 0, false);
        // One output pass at 10 resends the hole and sends the last of the buffer: RFC 6675's
        // NextSeg puts a lost hole before new data, a hole not yet deemed lost after it.
        if (rtxFirst) r.onSend(at(0), at(1000), 10, true);
        r.onSend(at(3000), at(4000), 10, false);
        if (!rtxFirst) r.onSend(at(0), at(1000), 10, true);
        // All but the hole is SACKed a round trip later: the new data is the newest delivered.
        s.soft.sacked.push({ start: at(1000), end: at(4000) });
        const low = { seq: 0 };
        if (rtxFirst) {
          assert.equal(r.onAck(s, 20, low, MSS), at(1000), 'the copy sent before the new data is lost');
          assert.equal(low.seq, at(0));
        } else {
          assert.equal(r.onAck(s, 20, low, MSS), -1, 'the copy sent after the new data is not');
        }
      }
    });

    test("the resend of a burst's head drops what of the rest was SACKed: the next cumulative ACK is not an original come late", () => {
      // One burst of ten; 1-3 are SACKed (the entry keeps its head, 0, undelivered). Then 0 is
      // resent, cutting the entry at 1. The ACK of 0-3 delivers the resend and nothing new: 1-3
      // arrived before, in order. Left in the log, [1, 4) read as an original delivered below
      // the SACKed data (reordering seen), where Linux's tcp_check_sack_reordering sees none.
      const s = mkState(una, 10_000);
      const r = new RackLog();
      r.minRtt = 10;
      r.onSend(at(0), at(10_000), 0, false);
      s.soft.sacked.push({ start: at(1000), end: at(4000) });
      const low = { seq: 0 };
      r.onAck(s, 20, low, MSS);
      r.onSend(at(0), at(1000), 20, true, s.soft.sacked);
      assert.deepEqual(
        r.entries.map((e) => [e.start, e.end]),
        [
          [at(0), at(1000)],
          [at(4000), at(10_000)],
        ],
      );
      s.soft.sacked.length = 0;
      s.delegated.sndUna = at(4000);
      r.onAck(s, 40, low, MSS);
      assert.equal(r.reorderingSeen, false);
    });

    test('a spurious timeout forgets only its own copies: what went before it still dates a delivery', () => {
      const s = mkState(una, 3000);
      const r = new RackLog();
      r.minRtt = 10;
      // [1000, 2000) was resent at 0 and lost again; [0, 1000) went at 50 and arrived, its ACK lost.
      r.onSend(at(1000), at(2000), 0, true);
      r.onSend(at(0), at(1000), 50, true);
      r.noteTimeout(250);
      r.onSend(at(0), at(100), 250, true);
      // The ACK for [0, 1000) comes, for the copy sent at 50: the timeout was spurious.
      s.delegated.sndUna = at(1000);
      r.forgetBelow(at(1000));
      const low = { seq: 0 };
      assert.equal(r.onAck(s, 260, low, MSS), at(2000), 'the range resent at 0 is lost (delivery dated 50)');
      assert.equal(low.seq, at(1000));
      assert.equal(r.xmitTs, 50);
    });

    test('a segment of the delivered burst below it waits out the reordering window on the timer (RFC 8985 6.2 step 5)', () => {
      const s = mkState(una, 4000);
      const r = new RackLog();
      r.minRtt = 8;
      // One burst, one entry; its third segment alone is SACKed, a round trip of 10 later.
      r.onSend(at(0), at(4000), 0, false);
      s.soft.sacked.push({ start: at(2000), end: at(3000) });
      const low = { seq: 0 };
      assert.equal(r.onAck(s, 10, low, MSS), -1, 'not lost within the reordering window');
      assert.equal(r.reoDeadline, 12, 'the window (min RTT / 4) from the ACK');
      assert.equal(r.detect(s, 11.5, low, MSS), -1);
      assert.equal(r.reoDeadline, 12, 'still waiting');
      // Every byte not SACKed below the SACKed segment's end is lost: [0, 2000).
      assert.equal(r.detect(s, 12, low, MSS), at(3000), 'what went out before the SACKed segment is lost');
      assert.equal(low.seq, at(0));
      assert.equal(r.reoDeadline, Number.POSITIVE_INFINITY, 'nothing left to wait for');
    });

    test('no reordering seen: the window is zero in recovery and once DupThresh segments are SACKed (RFC 8985 6.2 step 4)', () => {
      for (const sacked of [1, 3]) {
        const s = mkState(una, 5000);
        const r = new RackLog();
        r.minRtt = 8;
        r.onSend(at(0), at(5000), 0, false);
        s.soft.inRecovery = sacked === 1;
        s.soft.sacked.push({ start: at(2000), end: at(2000 + sacked * 1000) });
        const low = { seq: 0 };
        assert.equal(r.onAck(s, 10, low, MSS), at(2000 + sacked * 1000), `${sacked} SACKed: lost at once`);
        assert.equal(low.seq, at(0));
        assert.equal(r.reoDeadline, Number.POSITIVE_INFINITY, 'nothing waits on a window');
      }
    });

    test('an original delivered below data delivered before it is reordering: the window stays (RFC 8985 6.2 step 3)', () => {
      const s = mkState(una, 3000);
      const r = new RackLog();
      r.minRtt = 8;
      r.onSend(at(0), at(1000), 0, false);
      r.onSend(at(1000), at(2000), 1, false);
      r.onSend(at(2000), at(3000), 2, false);
      s.soft.sacked.push({ start: at(1000), end: at(2000) });
      const low = { seq: 0 };
      r.onAck(s, 10, low, MSS);
      assert.equal(r.reorderingSeen, false, 'a hole is not yet reordering');
      r.onAck(s, 10.5, low, MSS);
      assert.equal(r.reorderingSeen, false, 'a SACK repeated is nothing new');
      // The original of the hole arrives after the SACKed segment above it.
      s.delegated.sndUna = at(2000);
      s.soft.sacked.length = 0;
      r.onAck(s, 11, low, MSS);
      assert.equal(r.reorderingSeen, true);
      s.soft.inRecovery = true;
      assert.equal(r.reoWnd(s, MSS), 2, 'min RTT / 4 even in recovery');
    });

    test('a retransmission filling a hole is not reordering', () => {
      const s = mkState(una, 2000);
      const r = new RackLog();
      r.minRtt = 8;
      r.onSend(at(0), at(1000), 0, false);
      r.onSend(at(1000), at(2000), 1, false);
      s.soft.sacked.push({ start: at(1000), end: at(2000) });
      const low = { seq: 0 };
      r.onAck(s, 10, low, MSS);
      r.onSend(at(0), at(1000), 12, true);
      s.delegated.sndUna = at(2000);
      s.soft.sacked.length = 0;
      r.onAck(s, 22, low, MSS);
      assert.equal(r.reorderingSeen, false);
      s.soft.inRecovery = true;
      assert.equal(r.reoWnd(s, MSS), 0);
    });

    test('DSACKs widen the window a quarter min RTT per round trip, for 16 recoveries (RFC 8985 6.2 step 4)', () => {
      const s = mkState(una, 4000);
      s.delegated.srtt = 100;
      const r = new RackLog();
      r.minRtt = 8;
      // Linux widens only on a path that has shown reordering, for what it resent (tcp_dsack_seen);
      // the case below pins both.
      r.reorderingSeen = true;
      r.onSend(at(0), at(4000), 0, false);
      r.onSend(at(0), at(3000), 1, true);
      assert.equal(r.reoWnd(s, MSS), 2);
      r.noteDsack(at(0), at(4000), 1000);
      r.noteDsack(at(1000), at(4000), 1000);
      assert.equal(r.reoWnd(s, MSS), 4, 'once per round trip');
      r.noteDsack(at(4000), at(8000), 1000);
      assert.equal(r.reoWnd(s, MSS), 6);
      s.delegated.srtt = 5;
      assert.equal(r.reoWnd(s, MSS), 5, 'never more than SRTT');
      for (let i = 0; i < 15; i++) r.noteRecoveryEnd();
      assert.equal(r.reoWndMult, 3);
      r.noteRecoveryEnd();
      assert.equal(r.reoWndMult, 1, 'back after 16 recoveries without a DSACK');
    });

    test("no reordering seen: the window is zero in a timeout's episode too (Linux's Loss state), not after its undo", () => {
      const s = mkState(una, 5000);
      const r = new RackLog();
      r.minRtt = 8;
      // A timeout fired with all of it out: recoveryPoint is snd.max, no fast recovery.
      s.soft.recoveryPoint = s.delegated.sndMax;
      s.soft.sacked.push({ start: at(3000), end: at(4000) });
      assert.equal(r.reoWnd(s, MSS), 0, 'Loss state: icsk_ca_state >= TCP_CA_Recovery');
      // Undone (F-RTO, Eifel) or over: recoveryPoint at snd.una, Linux back in Open.
      s.soft.recoveryPoint = s.delegated.sndUna;
      assert.equal(r.reoWnd(s, MSS), 2, 'one segment SACKed in Open: min RTT / 4');
    });

    test('DupThresh counts SACKed segments as Linux (a short last one counts; single bytes inside segments do not)', () => {
      const s = mkState(una, 6000);
      const r = new RackLog();
      r.minRtt = 8;
      // Two full segments and a short one: Linux's sacked_out is 3.
      s.soft.sacked.push({ start: at(1000), end: at(3999) });
      assert.equal(sackedPackets(s, MSS), 3);
      assert.equal(r.reoWnd(s, MSS), 0, 'three segments SACKed: zero window');
      s.soft.sacked.length = 0;
      // Single bytes inside segments, never a whole one: none SACKed.
      s.soft.sacked.push(
        { start: at(1500), end: at(1501) },
        { start: at(2500), end: at(2501) },
        { start: at(3500), end: at(3501) },
      );
      assert.equal(sackedPackets(s, MSS), 0);
      assert.equal(r.reoWnd(s, MSS), 2);
      // A short last segment, ending at snd.max, is one.
      s.soft.sacked.length = 0;
      s.soft.sacked.push({ start: at(5500), end: at(6000) });
      assert.equal(sackedPackets(s, MSS), 1);
    });

    test("the reordering degree grows to how late an original came, in segments, and gates the zero window (Linux's tcp_check_sack_reordering)", () => {
      const s = mkState(una, 10_000);
      const r = new RackLog();
      r.minRtt = 8;
      assert.equal(r.reordering, 3);
      for (let i = 0; i < 10; i++) r.onSend(at(i * 1000), at(i * 1000 + 1000), i, false);
      const low = { seq: 0 };
      // Segments 6-7 SACKed, then 0-2 arrive: Linux's fack is the highest SACKed segment's start.
      s.soft.sacked.push({ start: at(6000), end: at(8000) });
      r.onAck(s, 20, low, MSS);
      assert.equal(r.reordering, 3, 'a hole is not yet reordering');
      s.delegated.sndUna = at(3000);
      r.onAck(s, 21, low, MSS);
      assert.equal(r.reorderingSeen, true);
      assert.equal(r.reordering, 7, 'segment 0 came 7 segments late');
      // Everything below the SACKed ones arrives: nothing SACKed left, fack is snd.una (Linux).
      s.delegated.sndUna = at(10_000);
      s.soft.sacked.length = 0;
      r.onAck(s, 22, low, MSS);
      assert.equal(r.reordering, 7, 'segments 3-5 came at most 7 late');
      // A timeout outside recovery with that many SACKed says the degree was too high.
      r.noteTimeout(30, false, 9);
      assert.equal(r.reordering, 7, 'not from a recovery or a timeout episode');
      r.noteTimeout(30, true, 2);
      assert.equal(r.reordering, 7, 'fewer than three SACKed');
      r.noteTimeout(30, true, 3);
      assert.equal(r.reordering, 3);
      r.reset();
      assert.equal(r.reordering, 3);
    });

    test('the degree is capped at 300 segments (sysctl tcp_max_reordering), and without reordering seen it is what zeroes the window', () => {
      const s = mkState(una, 400_000);
      const r = new RackLog();
      r.minRtt = 8;
      r.onSend(at(0), at(1000), 0, false);
      r.onSend(at(1000), at(400_000), 1, false);
      s.soft.sacked.push({ start: at(1000), end: at(400_000) });
      const low = { seq: 0 };
      r.onAck(s, 10, low, MSS);
      s.delegated.sndUna = at(400_000);
      s.soft.sacked.length = 0;
      r.onAck(s, 11, low, MSS);
      assert.equal(r.reordering, 300);
      // With no reordering seen the window is zero at `reordering` SACKed segments, not at 3.
      const s2 = mkState(una, 10_000);
      const r2 = new RackLog();
      r2.minRtt = 8;
      r2.reordering = 5;
      s2.soft.sacked.push({ start: at(5000), end: at(9000) });
      assert.equal(r2.reoWnd(s2, MSS), 2, 'four SACKed, degree five');
      s2.soft.sacked[0]!.end = at(10_000);
      assert.equal(r2.reoWnd(s2, MSS), 0);
    });

    test("a DSACK widens the window only once reordering has been seen (Linux's tcp_dsack_seen)", () => {
      const s = mkState(una, 4000);
      s.delegated.srtt = 100;
      const r = new RackLog();
      r.minRtt = 8;
      r.onSend(at(0), at(4000), 0, false);
      r.onSend(at(0), at(2000), 1, true);
      r.noteDsack(at(0), at(4000), 1000);
      assert.equal(
        r.reoWndMult,
        1,
        'no reordering seen: a lost ACK or a needless timeout, not a narrow window',
      );
      r.reorderingSeen = true;
      r.noteDsack(at(4000), at(8000), 2000);
      assert.equal(r.reoWndMult, 1, 'more reported twice than was ever resent (dsack_dups > total_retrans)');
      r.onSend(at(2000), at(4000), 2, true);
      r.noteDsack(at(8000), at(12_000), 1000);
      assert.equal(r.reoWndMult, 2);
    });

    test('single bytes SACKed inside a segment date nothing (whole segments only, as Linux)', () => {
      const s = mkState(una, 4000);
      const r = new RackLog();
      r.minRtt = 8;
      r.onSend(at(0), at(4000), 0, false);
      s.soft.sacked.push({ start: at(2500), end: at(2501) }, { start: at(2503), end: at(2504) });
      const low = { seq: 0 };
      assert.equal(r.onAck(s, 10, low, MSS), -1);
      assert.equal(r.reoDeadline, Number.POSITIVE_INFINITY);
    });

    test('the log is bounded: a peer that SACKs every other byte cannot make it grow without limit', () => {
      const s = mkState(una, 100_000);
      const r = new RackLog();
      for (let i = 0; i < 10_000; i++) r.onSend(at(i * 10), at(i * 10 + 10), i, false);
      for (let i = 0; i < 10_000; i += 2) r.onSend(at(i * 10), at(i * 10 + 5), 20_000 + i, true);
      assert.ok(r.entries.length <= 4096, `${r.entries.length} entries`);
      assert.equal(r.entries.at(-1)!.end, at(100_000));
      void s;
    });
  });
}

describe('SACK scoreboard under a hostile receiver', () => {
  test('a peer SACKing every other byte cannot grow the scoreboard without bound', async () => {
    const { sackUpdate, SACK_MAX_RANGES } = await import('../../src/stack/tcp/sack.ts');
    const nb = createNeighborState({ srcMac: 1, vlanId: -1, ip: 2 });
    const s = sampleConn(createPathState({ localIp: 1, remoteIp: 2 }, nb, 0, 1500));
    s.soft.sacked.length = 0;
    s.delegated.sndUna = 1000;
    s.delegated.sndMax = 1000 + 1_000_000;
    const blocks = new Uint32Array(8);
    for (let i = 0; i < 20_000; i++) {
      const at = 1001 + 2 * i;
      blocks[0] = at;
      blocks[1] = at + 1;
      sackUpdate(s, blocks, 1);
    }
    assert.ok(s.soft.sacked.length <= SACK_MAX_RANGES, `${s.soft.sacked.length} ranges`);
  });
});

/**
 * The log as onSend built it before it cut entries in place (arrays per retransmission): the
 * model the in-place version must match, entry for entry.
 */
type ModelEntry = { start: number; end: number; sentAt: number; rtx: boolean; order: number };

/** `order`: how many sends came before this one (every send here is non-empty). */
function modelSend(e: ModelEntry[], s0: number, e0: number, now: number, rtx: boolean, order: number): void {
  const start = s0 >>> 0;
  const end = e0 >>> 0;
  const lt = (a: number, b: number) => ((a - b) | 0) < 0;
  const leq = (a: number, b: number) => ((a - b) | 0) <= 0;
  if (!lt(start, end)) return;
  const last = e[e.length - 1];
  if (!last || leq(last.end, start)) {
    const next = last !== undefined && last.order === order - 1;
    if (next && last.end === start && last.rtx === rtx && now - last.sentAt <= 0.5) {
      last.end = end;
      last.sentAt = now;
      last.order = order;
    } else e.push({ start, end, sentAt: now, rtx, order });
    return;
  }
  let i = 0;
  while (i < e.length && leq(e[i]!.end, start)) i++;
  const out: typeof e = [];
  let j = i;
  while (j < e.length && lt(e[j]!.start, end)) {
    const r = e[j]!;
    if (lt(r.start, start)) out.push({ ...r, end: start });
    if (lt(end, r.end)) out.push({ ...r, start: end });
    j++;
  }
  const before = out.filter((r) => lt(r.start, start));
  const after = out.filter((r) => !lt(r.start, start));
  e.splice(i, j - i, ...before, { start, end, sentAt: now, rtx, order }, ...after);
}

describe('RACK log: retransmissions inside the log', () => {
  test('cutting entries in place builds the same log as the model, across sequence wrap', () => {
    const send = fc.record({
      // Offsets into a 20,000-byte window: many land inside the log (retransmissions), some
      // past its end (new data), some in gaps an ACK left.
      from: fc.integer({ min: 0, max: 20_000 }),
      len: fc.integer({ min: 1, max: 6_000 }),
      dt: fc.constantFrom(0, 0.2, 1, 5),
      rtx: fc.boolean(),
    });
    fc.assert(
      fc.property(
        fc.constantFrom(1000, 0xffffc000),
        fc.array(send, { minLength: 1, maxLength: 60 }),
        (base, sends) => {
          const r = new RackLog();
          const model: ModelEntry[] = [];
          let now = 0;
          for (const [n, x] of sends.entries()) {
            now += x.dt;
            const a = (base + x.from) >>> 0;
            const b = (base + x.from + x.len) >>> 0;
            r.onSend(a, b, now, x.rtx);
            modelSend(model, a, b, now, x.rtx, n);
            assert.deepEqual(
              r.entries.map((q) => ({ ...q })),
              model,
            );
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});

test('RACK log: a resend of whole entries reuses their objects instead of building new ones', () => {
  const r = new RackLog();
  r.onSend(0, 1000, 0, false);
  r.onSend(1000, 2000, 5, false);
  r.onSend(2000, 3000, 10, false);
  const [a, b] = r.entries;
  // A prod's rewind: snd.nxt back to snd.una, the first two segments resent.
  r.onSend(0, 1000, 20, true);
  r.onSend(1000, 2000, 20, true);
  assert.equal(r.entries.length, 3);
  assert.equal(r.entries[0], a);
  assert.equal(r.entries[1], b);
  assert.deepEqual({ ...r.entries[1]! }, { start: 1000, end: 2000, sentAt: 20, rtx: true, order: 4 });
});
