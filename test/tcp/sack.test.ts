import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  recvSackAdd,
  recvSackBlocks,
  recvSackPrune,
  SACK_MAX_RANGES,
  sackHighest,
  sackIsLost,
  sackIsSacked,
  sackLimits,
  sackNextSeg,
  sackPipe,
  sackPrune,
  sackUpdate,
  sackWork,
} from '../../src/stack/tcp/sack.ts';
import { createNeighborState } from '../../src/state/neighbor-state.ts';
import { createPathState } from '../../src/state/path-state.ts';
import { createTcpState, DEFAULT_TCP_CACHED, type TcpState } from '../../src/state/tcp-state.ts';
import fc from '../helpers/fc.ts';

function mkState(una: number, flight: number): TcpState {
  const nb = createNeighborState({ srcMac: 0x020000000001, vlanId: -1, ip: 0x0a000002 });
  const path = createPathState({ localIp: 0x0a000001, remoteIp: 0x0a000002 }, nb, 0, 1500);
  const s = createTcpState(
    {
      localIp: 0x0a000001,
      localPort: 40000,
      remoteIp: 0x0a000002,
      remotePort: 80,
      tsEnabled: false,
      sackEnabled: true,
      wsEnabled: true,
      sndWscale: 7,
      rcvWscale: 7,
      remoteMss: 1460,
      localMss: 1460,
    },
    { ...DEFAULT_TCP_CACHED },
    path,
  );
  s.delegated.sndUna = una >>> 0;
  s.delegated.sndNxt = (una + flight) >>> 0;
  s.delegated.sndMax = (una + flight) >>> 0;
  s.soft.highRxt = una >>> 0;
  s.delegated.rcvNxt = una >>> 0;
  return s;
}

const u32 = (x: number) => x >>> 0;
const blocks = (...pairs: [number, number][]) => Uint32Array.from(pairs.flat().map(u32));

/** The scoreboard as [start, end) offsets from snd.una, for readable assertions. */
function board(s: TcpState): [number, number][] {
  const una = s.delegated.sndUna;
  return s.soft.sacked.map((r) => [u32(r.start - una), u32(r.end - una)]);
}

function assertInvariants(s: TcpState): void {
  const una = s.delegated.sndUna;
  const win = u32(s.delegated.sndMax - una);
  let prevEnd = -1;
  for (const r of s.soft.sacked) {
    const a = u32(r.start - una);
    const b = u32(r.end - una);
    assert.ok(a < b, 'range not empty');
    assert.ok(b <= win, 'range within snd.max');
    assert.ok(a > prevEnd, 'sorted, merged, not touching');
    prevEnd = b;
  }
}

// Worked scenario used by several tests: ten 1000-byte segments in flight; the peer SACKs
// segments 2, 4 and 6 (0-based), so 0, 1, 3, 5 and 7..9 are holes.
const SEG = 1000;
function tenSegments(una: number): TcpState {
  const s = mkState(una, 10 * SEG);
  const b = (i: number): [number, number] => [una + i * SEG, una + (i + 1) * SEG];
  assert.equal(sackUpdate(s, blocks(b(2), b(4), b(6)), 3), 3 * SEG);
  return s;
}

describe('sender scoreboard: sackUpdate / sackPrune', () => {
  for (const una of [1000, 0xffffffff - 3500]) {
    test(`merges, orders and counts newly SACKed bytes (una ${una.toString(16)})`, () => {
      const s = mkState(una, 10_000);
      const at = (o: number) => u32(una + o);
      assert.equal(sackUpdate(s, blocks([at(5000), at(6000)]), 1), 1000);
      assert.equal(sackUpdate(s, blocks([at(2000), at(3000)]), 1), 1000);
      assert.deepEqual(board(s), [
        [2000, 3000],
        [5000, 6000],
      ]);
      // Overlap with both and the gap between: only the gap is news.
      assert.equal(sackUpdate(s, blocks([at(2500), at(5500)]), 1), 2000);
      assert.deepEqual(board(s), [[2000, 6000]]);
      // Adjacent blocks merge into one range.
      assert.equal(sackUpdate(s, blocks([at(6000), at(7000)], [at(1000), at(2000)]), 2), 2000);
      assert.deepEqual(board(s), [[1000, 7000]]);
      // Repeating old news adds nothing.
      assert.equal(sackUpdate(s, blocks([at(1000), at(7000)]), 1), 0);
      assertInvariants(s);
    });
  }

  test('ignores invalid blocks and trims one that straddles snd.una', () => {
    const una = 0xfffffc00;
    const s = mkState(una, 4000);
    const at = (o: number) => u32(una + o);
    const bad = blocks(
      [at(2000), at(2000)], // empty
      [at(3000), at(2000)], // reversed
      [at(-500), at(0)], // D-SACK below snd.una
      [at(-2000), at(-1000)], // older D-SACK
      [at(3000), at(4001)], // past snd.max
      [at(5000), at(6000)], // entirely past snd.max
    );
    assert.equal(sackUpdate(s, bad, 6), 0);
    assert.deepEqual(board(s), []);
    assert.equal(sackUpdate(s, blocks([at(-100), at(500)]), 1), 500);
    assert.deepEqual(board(s), [[0, 500]]);
    // count larger than the array does not read past it.
    assert.equal(sackUpdate(s, blocks([at(1000), at(1100)]), 5), 100);
    assertInvariants(s);
  });

  test('prune drops and trims ranges below a new snd.una, across the wrap', () => {
    const una = 0xfffff000;
    const s = mkState(una, 0x3000);
    sackUpdate(
      s,
      blocks([una + 0x100, una + 0x200], [una + 0x800, una + 0x1800], [una + 0x2000, una + 0x2100]),
      3,
    );
    s.delegated.sndUna = u32(una + 0x1000); // exactly the wrap point: 0
    assert.equal(s.delegated.sndUna, 0);
    sackPrune(s);
    assert.deepEqual(board(s), [
      [0, 0x800],
      [0x1000, 0x1100],
    ]);
    assert.equal(s.soft.sacked[0]!.start, 0);
    s.delegated.sndUna = 0x1100;
    sackPrune(s);
    assert.deepEqual(board(s), []);
    assert.equal(sackHighest(s), 0x1100);
  });

  test('property: scoreboard equals a naive byte map, stays sorted, merged and in window', () => {
    const op = fc.oneof(
      fc.record({
        kind: fc.constant('sack' as const),
        bl: fc.array(fc.tuple(fc.integer({ min: -300, max: 2300 }), fc.integer({ min: -300, max: 2300 })), {
          minLength: 1,
          maxLength: 4,
        }),
      }),
      fc.record({ kind: fc.constant('ack' as const), n: fc.integer({ min: 0, max: 400 }) }),
      fc.record({ kind: fc.constant('send' as const), n: fc.integer({ min: 0, max: 400 }) }),
    );
    fc.assert(
      fc.property(
        fc.oneof(
          fc.integer({ min: 0xffffffff - 3000, max: 0xffffffff }),
          fc.integer({ min: 0, max: 0xffffffff }),
        ),
        fc.integer({ min: 1, max: 2000 }),
        fc.array(op, { maxLength: 40 }),
        (una0, flight, ops) => {
          const s = mkState(una0, flight);
          // Model over offsets from the initial snd.una; the window only moves forward.
          const sacked = new Set<number>();
          let una = 0;
          let max = flight;
          for (const o of ops) {
            if (o.kind === 'ack') {
              una = Math.min(max, una + o.n);
              s.delegated.sndUna = u32(una0 + una);
              for (const x of [...sacked]) if (x < una) sacked.delete(x);
              if (o.n % 2) sackPrune(s); // the next update must cope with a stale board too
            } else if (o.kind === 'send') {
              max += o.n;
              s.delegated.sndMax = u32(una0 + max);
            } else {
              const arr = blocks(...o.bl.map(([l, r]): [number, number] => [una0 + una + l, una0 + una + r]));
              let expectNew = 0;
              for (const [l0, r0] of o.bl) {
                const l = una + l0;
                const r = una + r0;
                if (l >= r || r <= una || r > max) continue;
                for (let x = Math.max(l, una); x < r; x++) {
                  if (!sacked.has(x)) {
                    sacked.add(x);
                    expectNew++;
                  }
                }
              }
              assert.equal(sackUpdate(s, arr, o.bl.length), expectNew);
              assertInvariants(s);
              const runs: [number, number][] = [];
              for (let x = una; x < max; x++) {
                if (!sacked.has(x)) continue;
                const last = runs[runs.length - 1];
                if (last && last[1] === x - una) last[1]++;
                else runs.push([x - una, x - una + 1]);
              }
              assert.deepEqual(board(s), runs);
              const hi = runs.length ? runs[runs.length - 1]![1] : 0;
              assert.equal(sackHighest(s), u32(una0 + una + hi));
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  test('property: up to 800 islands keep the scoreboard within SACK_MAX_RANGES, and a covering block still merges', () => {
    // Islands are one byte at even offsets, so no two touch: each new one is a range of its own
    // until the bound, past which it is ignored (and counted as nothing newly SACKed).
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.array(fc.nat(1199), { minLength: 1, maxLength: 800 }),
        (una, islands) => {
          const win = 2400;
          const s = mkState(una, win);
          const held = new Set<number>();
          for (const k of islands) {
            const fresh = !held.has(k) && held.size < SACK_MAX_RANGES;
            if (fresh) held.add(k);
            assert.equal(sackUpdate(s, blocks([una + 2 * k, una + 2 * k + 1]), 1), fresh ? 1 : 0);
            assert.equal(s.soft.sacked.length, held.size);
          }
          const sorted = [...held].sort((a, b) => a - b);
          assert.deepEqual(
            board(s),
            sorted.map((k): [number, number] => [2 * k, 2 * k + 1]),
          );
          // One block over the whole window is never an island: it merges every range, bound or not.
          assert.equal(sackUpdate(s, blocks([una, una + win]), 1), win - held.size);
          assert.deepEqual(board(s), [[0, win]]);
        },
      ),
      // Shrinking a failing 800-element run takes minutes and the counterexample stays large anyway.
      { numRuns: 60, endOnFailure: true },
    );
  });

  test('the cap can be switched off (attack benchmark): 700 islands are then all kept', () => {
    const una = 1000;
    const s = mkState(una, 2000);
    sackLimits.maxRanges = Number.POSITIVE_INFINITY;
    try {
      for (let k = 0; k < 700; k++) assert.equal(sackUpdate(s, blocks([una + 2 * k, una + 2 * k + 1]), 1), 1);
      assert.equal(s.soft.sacked.length, 700);
    } finally {
      sackLimits.maxRanges = SACK_MAX_RANGES;
    }
    const t = mkState(una, 2000);
    for (let k = 0; k < 700; k++) sackUpdate(t, blocks([una + 2 * k, una + 2 * k + 1]), 1);
    assert.equal(t.soft.sacked.length, SACK_MAX_RANGES);
  });
});

describe('scoreboard work under a receiver SACKing alternate segments', () => {
  /**
   * `acks` ACKs as a hostile receiver sends them: each SACKs one more island (every other
   * segment, newest highest, the worst case for a scan from the bottom) and repeats the two
   * before it, as RFC 2018 receivers do. Returns the scoreboard's steps.
   */
  function flood(acks: number): number {
    const mss = 1000;
    const una = 0xffff0000;
    const s = mkState(una, 2 * mss * (acks + 1));
    const island = (k: number): [number, number] => [una + 2 * mss * k + mss, una + 2 * mss * (k + 1)];
    const before = sackWork.steps;
    for (let k = 0; k < acks; k++) {
      sackUpdate(s, blocks(island(k), island(Math.max(k - 1, 0)), island(Math.max(k - 2, 0))), 3);
    }
    return sackWork.steps - before;
  }

  test('20,000 ACKs of 3 blocks: work per block bounded by the range cap, and linear in the ACKs', () => {
    const n = 20_000;
    const w = flood(n);
    const w2 = flood(n / 2);
    assert.ok(w >= 3 * n, `work ${w} counts every block`);
    assert.ok(w <= (SACK_MAX_RANGES + 8) * 3 * n, `work ${w} over ${SACK_MAX_RANGES + 8} per block`);
    // Twice the ACKs, twice the work (a quadratic scoreboard would take four times).
    assert.ok(w / w2 < 2.2, `work ${w} for ${n} ACKs, ${w2} for ${n / 2}: ratio ${(w / w2).toFixed(2)}`);
  });

  test('the same flood with the cap off grows quadratically: what the bound above catches', () => {
    sackLimits.maxRanges = Number.POSITIVE_INFINITY;
    try {
      const w = flood(4000);
      const w2 = flood(2000);
      assert.ok(w / w2 > 3.5, `ratio ${(w / w2).toFixed(2)}`);
      assert.ok(w > (SACK_MAX_RANGES + 8) * 3 * 4000 * 0.5, `work ${w}`);
    } finally {
      sackLimits.maxRanges = SACK_MAX_RANGES;
    }
  });
});

describe('sender queries: RFC 6675 IsLost / SetPipe / NextSeg', () => {
  for (const una of [5000, 0xffffffff - 4999]) {
    const at = (o: number) => u32(una + o);
    test(`IsLost by discontiguous ranges and by SACKed bytes (una ${una.toString(16)})`, () => {
      const s = tenSegments(una);
      assert.equal(sackIsLost(s, at(0), SEG), true); // 3 ranges above
      assert.equal(sackIsLost(s, at(SEG), SEG), true);
      assert.equal(sackIsLost(s, at(3 * SEG), SEG), false); // 2 ranges, 2000 bytes: not more than 2*SMSS
      assert.equal(sackIsLost(s, at(5 * SEG), SEG), false);
      assert.equal(sackIsLost(s, at(7 * SEG), SEG), false);
      // Byte rule alone: one contiguous block of three segments.
      const t = mkState(una, 10 * SEG);
      sackUpdate(t, blocks([at(SEG), at(4 * SEG)]), 1);
      assert.equal(sackIsLost(t, at(0), SEG), true);
      const v = mkState(una, 10 * SEG);
      sackUpdate(v, blocks([at(SEG), at(3 * SEG)]), 1);
      assert.equal(sackIsLost(v, at(0), SEG), false);
      // Count rule alone: three tiny ranges.
      const w = mkState(una, 10 * SEG);
      sackUpdate(w, blocks([at(1000), at(1010)], [at(2000), at(2010)], [at(3000), at(3010)]), 3);
      assert.equal(sackIsLost(w, at(0), SEG), true);
      assert.equal(sackIsLost(w, at(1500), SEG), false);
    });

    test(`SetPipe and NextSeg through a recovery episode (una ${una.toString(16)})`, () => {
      const s = tenSegments(una);
      const out = { seq: 0, len: 0 };
      // Holes 0-1 are lost and not yet resent: out of the pipe. Holes 3, 5 and 7-9 are in flight.
      assert.equal(sackPipe(s, SEG), 5 * SEG);
      assert.equal(sackNextSeg(s, SEG, out), true);
      assert.deepEqual(out, { seq: at(0), len: SEG });
      assert.equal(sackIsLost(s, out.seq, SEG), true, 'rule 1');
      s.soft.highRxt = at(SEG); // segment 0 retransmitted
      assert.equal(sackPipe(s, SEG), 6 * SEG);
      assert.equal(sackNextSeg(s, SEG, out), true);
      assert.deepEqual(out, { seq: at(SEG), len: SEG });
      s.soft.highRxt = at(2 * SEG);
      assert.equal(sackPipe(s, SEG), 7 * SEG);
      // No lost data left below the highest SACK: rule 3 offers segment 3, which is not lost.
      assert.equal(sackNextSeg(s, SEG, out), true);
      assert.deepEqual(out, { seq: at(3 * SEG), len: SEG });
      assert.equal(sackIsLost(s, out.seq, SEG), false, 'rule 3');
      s.soft.highRxt = at(4 * SEG);
      assert.equal(sackPipe(s, SEG), 8 * SEG);
      assert.equal(sackNextSeg(s, SEG, out), true);
      assert.deepEqual(out, { seq: at(5 * SEG), len: SEG });
      s.soft.highRxt = at(6 * SEG);
      // Segments 7..9 lie above the highest SACK: new-data territory (rule 2), not ours.
      assert.equal(sackNextSeg(s, SEG, out), false);
      // The cumulative ACK for 0..2 arrives: the board shrinks and pipe follows.
      s.delegated.sndUna = at(3 * SEG);
      // Segments 3 and 5 count twice (original and retransmission both in flight), 7..9 once.
      assert.equal(sackPipe(s, SEG), 7 * SEG);
      assert.deepEqual(board(s), [
        [SEG, 2 * SEG],
        [3 * SEG, 4 * SEG],
      ]);
    });

    test(`NextSeg caps the segment at the next SACKed range and skips resent bytes (una ${una.toString(16)})`, () => {
      const s = tenSegments(una);
      const out = { seq: 0, len: 0 };
      assert.equal(sackNextSeg(s, 1500, out), true);
      assert.deepEqual(out, { seq: at(0), len: 1500 });
      s.soft.highRxt = at(1500);
      assert.equal(sackNextSeg(s, 1500, out), true);
      assert.deepEqual(out, { seq: at(1500), len: 500 });
      // A stale highRxt below snd.una means nothing has been resent in this recovery.
      s.soft.highRxt = at(-100_000);
      assert.equal(sackNextSeg(s, 1500, out), true);
      assert.equal(out.seq, at(0));
      assert.equal(sackPipe(s, SEG), 5 * SEG);
    });
  }

  test('no scoreboard: no NextSeg, pipe is the whole flight, nothing lost', () => {
    const s = mkState(0xfffffff0, 5000);
    const out = { seq: 7, len: 7 };
    assert.equal(sackNextSeg(s, 1000, out), false);
    assert.deepEqual(out, { seq: 7, len: 7 });
    assert.equal(sackPipe(s, 1000), 5000);
    assert.equal(sackIsLost(s, 0xfffffff0, 1000), false);
    assert.equal(sackHighest(s), 0xfffffff0);
  });

  test('sackIsSacked needs the whole range inside one SACKed range', () => {
    const una = 0xffffff00;
    const s = mkState(una, 0x1000);
    sackUpdate(s, blocks([una + 0x80, una + 0x180], [una + 0x200, una + 0x300]), 2);
    assert.equal(sackIsSacked(s, u32(una + 0x80), 0x100), true);
    assert.equal(sackIsSacked(s, u32(una + 0x100), 0x10), true); // 0x00..0x10 after the wrap
    assert.equal(sackIsSacked(s, u32(una + 0x100), 0x100), false); // runs into the hole
    assert.equal(sackIsSacked(s, u32(una + 0x70), 0x20), false);
    assert.equal(sackIsSacked(s, u32(una + 0x200), 0x100), true);
    assert.equal(sackIsSacked(s, u32(una + 0x200), 0), false);
    assert.equal(sackIsSacked(s, u32(una - 0x10), 0x10), false, 'ACKed is not SACKed');
    assert.equal(sackHighest(s), u32(una + 0x300));
  });

  test('property: IsLost, pipe and NextSeg equal a naive octet-by-octet RFC 6675 model', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.integer({ min: 0xffffffff - 2000, max: 0xffffffff }),
          fc.integer({ min: 0, max: 0xffffffff }),
        ),
        fc.integer({ min: 1, max: 1500 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 1500 }), fc.integer({ min: 1, max: 300 })), {
          maxLength: 8,
        }),
        fc.integer({ min: 1, max: 400 }),
        fc.integer({ min: -50, max: 1600 }),
        (una, win, bl, mss, rxt) => {
          const s = mkState(una, win);
          sackUpdate(s, blocks(...bl.map(([l, n]): [number, number] => [una + l, una + l + n])), bl.length);
          s.soft.highRxt = u32(una + rxt);
          const marked: boolean[] = [];
          for (const r of board(s)) for (let x = r[0]; x < r[1]; x++) marked[x] = true;
          // Suffix counts: SACKed bytes and SACKed runs strictly above each offset.
          const bytesAbove = new Array<number>(win + 1).fill(0);
          const runsAbove = new Array<number>(win + 1).fill(0);
          for (let x = win - 1; x >= 0; x--) {
            bytesAbove[x] = bytesAbove[x + 1]! + (marked[x + 1] ? 1 : 0);
            runsAbove[x] = runsAbove[x + 1]! + (marked[x + 1] && !marked[x + 2] ? 1 : 0);
          }
          const isLost = (x: number) => runsAbove[x]! >= 3 || bytesAbove[x]! > 2 * mss;
          const hrx = rxt < 0 ? 0 : Math.min(rxt, win);
          let pipe = 0;
          for (let x = 0; x < win; x++) {
            if (marked[x]) continue;
            if (!isLost(x)) pipe++;
            if (x < hrx) pipe++;
          }
          assert.equal(sackPipe(s, mss), pipe);
          for (let x = 0; x < win; x += 37) assert.equal(sackIsLost(s, u32(una + x), mss), isLost(x));
          const highest = marked.length;
          let cand = -1;
          for (let x = hrx; x < highest; x++) {
            if (!marked[x] && isLost(x)) {
              cand = x;
              break;
            }
          }
          if (cand < 0) {
            for (let x = hrx; x < highest; x++) {
              if (!marked[x]) {
                cand = x;
                break;
              }
            }
          }
          const out = { seq: 0, len: 0 };
          assert.equal(sackNextSeg(s, mss, out), cand >= 0);
          if (cand >= 0) {
            let len = 0;
            while (len < mss && cand + len < highest && !marked[cand + len]) len++;
            assert.deepEqual(out, { seq: u32(una + cand), len });
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('receiver SACK blocks (RFC 2018)', () => {
  function recvState(rcvNxt: number): TcpState {
    const s = mkState(0, 0);
    s.delegated.rcvNxt = rcvNxt >>> 0;
    return s;
  }
  function blocksOf(s: TcpState, max = 4): number[] {
    const out = new Uint32Array(8);
    const n = recvSackBlocks(s, out, max);
    return Array.from(out.subarray(0, 2 * n));
  }

  for (const base of [5000, 0xffffffff - 1499]) {
    const at = (x: number) => u32(base + x - 5000);
    test(`RFC 2018 §3 case 2: every other segment lost, most recent block first (base ${base})`, () => {
      const s = recvState(at(5000));
      recvSackAdd(s, at(5500), at(6000));
      assert.deepEqual(blocksOf(s), [at(5500), at(6000)]);
      recvSackAdd(s, at(6500), at(7000));
      assert.deepEqual(blocksOf(s), [at(6500), at(7000), at(5500), at(6000)]);
      recvSackAdd(s, at(7500), at(8000));
      assert.deepEqual(blocksOf(s), [at(7500), at(8000), at(6500), at(7000), at(5500), at(6000)]);
      // Filling the hole between the two older blocks merges them into the first block reported.
      recvSackAdd(s, at(6000), at(6500));
      assert.deepEqual(blocksOf(s), [at(5500), at(7000), at(7500), at(8000)]);
      // An overlapping duplicate of the newest data moves nothing but order.
      recvSackAdd(s, at(7600), at(7700));
      assert.deepEqual(blocksOf(s), [at(7500), at(8000), at(5500), at(7000)]);
      // The hole at 5000 is filled: rcv.nxt jumps to 7000 and the block below it disappears.
      s.delegated.rcvNxt = at(7000);
      recvSackPrune(s);
      assert.deepEqual(blocksOf(s), [at(7500), at(8000)]);
      s.delegated.rcvNxt = at(7800);
      assert.deepEqual(blocksOf(s), [at(7800), at(8000)]); // trimmed, never reporting ACKed data
      s.delegated.rcvNxt = at(8000);
      assert.deepEqual(blocksOf(s), []);
    });
  }

  test('bounded memory and the caller-supplied maximum', () => {
    const s = recvState(0);
    for (let i = 0; i < 12; i++) recvSackAdd(s, 1000 * (i + 1), 1000 * (i + 1) + 100);
    assert.ok(s.soft.recvSackRecent.length <= 8);
    assert.deepEqual(blocksOf(s, 3), [12000, 12100, 11000, 11100, 10000, 10100]);
    const out = new Uint32Array(2);
    assert.equal(recvSackBlocks(s, out, 4), 1, 'limited by the output array too');
    assert.equal(recvSackBlocks(s, out, 0), 0);
    // Empty or reversed ranges are ignored.
    recvSackAdd(s, 500, 500);
    recvSackAdd(s, 600, 550);
    assert.deepEqual(blocksOf(s, 1), [12000, 12100]);
  });

  test('a range spanning the wrap merges with neighbours on both sides', () => {
    const s = recvState(0xffffff00);
    recvSackAdd(s, 0xffffff80, 0xfffffff0);
    recvSackAdd(s, 0x10, 0x40);
    recvSackAdd(s, 0xfffffff0, 0x10);
    assert.deepEqual(blocksOf(s), [0xffffff80, 0x40]);
  });

  test('property: blocks are disjoint, non-adjacent, above rcv.nxt, and cover the newest range', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.array(fc.tuple(fc.integer({ min: 1, max: 3000 }), fc.integer({ min: 1, max: 400 })), {
          minLength: 1,
          maxLength: 30,
        }),
        (nxt, adds) => {
          const s = recvState(nxt);
          const model = new Set<number>();
          for (const [o, n] of adds) {
            recvSackAdd(s, nxt + o, nxt + o + n);
            for (let x = o; x < o + n; x++) model.add(x);
            const b = blocksOf(s, 8);
            assert.ok(b.length >= 2);
            // The first block contains the range just added (RFC 2018 §4).
            assert.ok(u32(b[0]! - nxt) <= o && u32(b[1]! - nxt) >= o + n);
            const seen: [number, number][] = [];
            for (let i = 0; i < b.length; i += 2) {
              const l = u32(b[i]! - nxt);
              const r = u32(b[i + 1]! - nxt);
              assert.ok(l >= 1 && l < r, 'above rcv.nxt, not empty');
              for (let x = l; x < r; x++) assert.ok(model.has(x), 'only received data');
              for (const [pl, pr] of seen) assert.ok(r < pl || l > pr, 'disjoint and not touching');
              seen.push([l, r]);
            }
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});
