import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { StateValidationError } from '../../src/core/errors.ts';
import { createNeighborState } from '../../src/state/neighbor-state.ts';
import { countTrees, flattenTrees } from '../../src/state/offload-tree.ts';
import { createPathState } from '../../src/state/path-state.ts';
import { decodeBatch, encodeBatch, STATE_CODEC_VERSION } from '../../src/state/state-codec.ts';
import { createTcpState, DEFAULT_TCP_CACHED, TcpEcn } from '../../src/state/tcp-state.ts';
import { NEIGHBOR_FIELDS, PATH_FIELDS, TCP_FIELDS, validateTrees } from '../../src/state/validate.ts';
import fc from '../helpers/fc.ts';
import { arbTrees, normalize, sampleTrees, sharingHolds } from './helpers.ts';

/** Dotted names of every leaf an object carries, nested plain objects walked (not arrays or rings). */
function leafNames(obj: object, prefix: string, skip: ReadonlySet<string>): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(obj)) {
    if (skip.has(k)) continue;
    const name = prefix === '' ? k : `${prefix}.${k}`;
    if (v !== null && typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
      out.push(...leafNames(v, name, new Set()));
    } else out.push(name);
  }
  return out;
}

describe('state codec round trip', () => {
  test('decode(encode(trees)) equals the trees, with shared objects shared again', () => {
    fc.assert(
      fc.property(arbTrees, fc.integer({ min: -1e9, max: 1e12 }), (trees, now) => {
        const buf = encodeBatch(trees, now);
        const back = decodeBatch(buf, now);
        assert.deepStrictEqual(normalize(back), normalize(trees));
        assert.ok(sharingHolds(back));
        assert.deepEqual(countTrees(back), countTrees(trees));
      }),
      { numRuns: 150 },
    );
  });

  test('one neighbor with two paths of three connections each decodes to 1 + 2 shared objects', () => {
    const [t] = sampleTrees(3);
    const nb = t!.neighbor;
    const extra = createPathState({ localIp: 0x0a000002, remoteIp: 0x0a0000fd }, nb, 1, 9000);
    const conns = t!.paths[0]!.conns.map((c, i) => {
      const s = createTcpState({ ...c.const, remoteIp: 0x0a0000fd, localPort: 50000 + i }, c.cached, extra);
      Object.assign(s.delegated, {
        ...c.delegated,
        sendBuffer: s.delegated.sendBuffer,
        recvBuffer: s.delegated.recvBuffer,
      });
      s.delegated.sendBuffer.write(c.delegated.sendBuffer.toArray());
      s.delegated.recvBuffer.write(c.delegated.recvBuffer.toArray());
      return s;
    });
    t!.paths.push({ path: extra, conns });
    const [back] = decodeBatch(encodeBatch([t!], 0), 0);
    assert.equal(back!.paths.length, 2);
    for (const node of back!.paths) {
      assert.equal(node.path.neighbor, back!.neighbor);
      assert.equal(node.conns.length, 3);
      for (const c of node.conns) assert.equal(c.path, node.path);
    }
    assert.notEqual(back!.paths[0]!.path, back!.paths[1]!.path);
    assert.equal(back!.paths[1]!.path.cached.mtu, 9000);
    // Decoded objects are fresh: nothing aliases the sender's state or the buffer.
    assert.notEqual(back!.neighbor, nb);
    assert.notEqual(
      back!.paths[0]!.conns[0]!.delegated.sendBuffer,
      t!.paths[0]!.conns[0]!.delegated.sendBuffer,
    );
  });

  test('decoded rings keep the data and the capacity limit from the cached buffer sizes', () => {
    const trees = sampleTrees(1);
    const c = trees[0]!.paths[0]!.conns[0]!;
    const back = flattenTrees(decodeBatch(encodeBatch(trees, 0), 0))[0]!;
    assert.deepEqual(back.delegated.sendBuffer.toArray(), c.delegated.sendBuffer.toArray());
    assert.deepEqual(back.delegated.recvBuffer.toArray(), c.delegated.recvBuffer.toArray());
    assert.equal(back.delegated.sendBuffer.maxCapacity, c.cached.sndBufSize);
    assert.equal(back.delegated.recvBuffer.maxCapacity, c.cached.rcvBufSize);
    // The ring still grows to its limit after a decode sized it to the data.
    const more = new Uint8Array(c.cached.sndBufSize);
    assert.equal(back.delegated.sendBuffer.write(more), c.cached.sndBufSize - c.delegated.sendBuffer.length);
  });

  test('decodes from a view into a larger buffer (non-zero byteOffset)', () => {
    const trees = sampleTrees(2);
    const buf = encodeBatch(trees, 0);
    const big = new Uint8Array(buf.length + 37);
    big.set(buf, 17);
    const back = decodeBatch(big.subarray(17, 17 + buf.length), 0);
    assert.deepStrictEqual(normalize(back), normalize(trees));
  });

  test('an empty batch round-trips', () => {
    assert.deepEqual(decodeBatch(encodeBatch([], 5), 9), []);
  });
});

describe('times travel as deltas', () => {
  test('encode at 1000, decode at 5000: every time moves by 4000, Infinity and -1 stay', () => {
    const trees = sampleTrees(1);
    const nb = trees[0]!.neighbor;
    const c = trees[0]!.paths[0]!.conns[0]!;
    c.delegated.persistDeadline = Number.POSITIVE_INFINITY;
    c.delegated.keepaliveDeadline = 7200;
    c.delegated.tsRecentAt = -1;
    const [back] = decodeBatch(encodeBatch(trees, 1000), 5000);
    const b = back!.paths[0]!.conns[0]!;
    assert.equal(b.delegated.rtxDeadline, c.delegated.rtxDeadline + 4000);
    assert.equal(b.delegated.keepaliveDeadline, 11200);
    assert.equal(b.delegated.persistDeadline, Number.POSITIVE_INFINITY);
    assert.equal(b.delegated.timeWaitDeadline, Number.POSITIVE_INFINITY);
    assert.equal(b.delegated.tsRecentAt, -1);
    assert.equal(b.delegated.lastRecvAt, c.delegated.lastRecvAt + 4000);
    assert.equal(b.delegated.lastSendAt, c.delegated.lastSendAt + 4000);
    assert.equal(b.soft.delayedAckDeadline, c.soft.delayedAckDeadline + 4000);
    assert.equal(b.soft.cubic.epochStart, c.soft.cubic.epochStart + 4000);
    assert.equal(back!.neighbor.cached.hostReachableAt, nb.cached.hostReachableAt + 4000);
    assert.equal(back!.neighbor.delegated.nicReachableAt, nb.delegated.nicReachableAt + 4000);
    // Durations and sequence numbers are not times and do not move.
    assert.equal(b.delegated.rto, c.delegated.rto);
    assert.equal(b.delegated.srtt, c.delegated.srtt);
    assert.equal(b.delegated.sndUna, c.delegated.sndUna);
    assert.equal(b.cached.keepIdleMs, c.cached.keepIdleMs);
  });

  test('a receiver clock behind the sender gives earlier (possibly negative) times', () => {
    const trees = sampleTrees(1);
    const c = trees[0]!.paths[0]!.conns[0]!;
    const [back] = decodeBatch(encodeBatch(trees, 1_000_000), 10);
    assert.equal(back!.paths[0]!.conns[0]!.delegated.lastRecvAt, c.delegated.lastRecvAt - 999_990);
  });
});

describe('soft state is optional', () => {
  test("soft: 'none' and dropSoft give fresh soft state and the same hard state", () => {
    const trees = sampleTrees(2);
    const fresh = createTcpState(
      trees[0]!.paths[0]!.conns[0]!.const,
      DEFAULT_TCP_CACHED,
      trees[0]!.paths[0]!.path,
    );
    const full = encodeBatch(trees, 0);
    const none = encodeBatch(trees, 0, { soft: 'none' });
    assert.ok(none.length < full.length);
    for (const back of [decodeBatch(none, 0), decodeBatch(full, 0, { dropSoft: true })]) {
      for (const c of flattenTrees(back)) {
        assert.deepStrictEqual(c.soft, fresh.soft);
        assert.deepStrictEqual(normalize(c.delegated), normalize(trees[0]!.paths[0]!.conns[0]!.delegated));
      }
    }
  });

  test("soft: 'scalars' carries cubic and timers but no queued segments or SACK lists", () => {
    const trees = sampleTrees(1);
    const c = trees[0]!.paths[0]!.conns[0]!;
    c.soft.cubic.wMax = 12345.5;
    c.soft.inRecovery = true;
    const b = flattenTrees(decodeBatch(encodeBatch(trees, 0, { soft: 'scalars' }), 0))[0]!;
    assert.equal(b.soft.cubic.wMax, 12345.5);
    assert.equal(b.soft.inRecovery, true);
    assert.equal(b.soft.delayedAckDeadline, c.soft.delayedAckDeadline);
    assert.deepEqual(b.soft.ooo, []);
    assert.deepEqual(b.soft.sacked, []);
    assert.deepEqual(b.soft.recvSackRecent, []);
    assert.ok(c.soft.ooo.length > 0 && c.soft.sacked.length > 0);
  });
});

describe('version 4: the end of the short segment in flight (soft.smallSentEnd)', () => {
  test('travels in version 4 with the soft scalars; an older batch leaves it out and decodes to the default', () => {
    // Version 5 carries more after it (RACK's knowledge of the path, below).
    assert.ok(STATE_CODEC_VERSION >= 4);
    const trees = sampleTrees(2);
    const conns = flattenTrees(trees);
    conns[0]!.soft.smallSentEnd = 0xfffffff0;
    conns[1]!.soft.smallSentEnd = 12345;
    for (const soft of ['all', 'scalars'] as const) {
      const back = flattenTrees(decodeBatch(encodeBatch(trees, 0, { soft }), 0));
      assert.deepEqual(
        back.map((c) => c.soft.smallSentEnd),
        [0xfffffff0, 12345],
        soft,
      );
    }
    const fresh = createTcpState(conns[0]!.const, DEFAULT_TCP_CACHED, conns[0]!.path).soft.smallSentEnd;
    for (const version of [2, 3]) {
      const old = encodeBatch(trees, 0, { version });
      // Version 2 also lacks the family bytes of the neighbor and the path.
      assert.equal(
        encodeBatch(trees, 0, { version: 4 }).length - old.length,
        4 * 2 + (version === 2 ? 2 : 0),
        `version ${version}: 4 bytes a connection fewer`,
      );
      const back = flattenTrees(decodeBatch(old, 0));
      assert.deepEqual(
        back.map((c) => c.soft.smallSentEnd),
        [fresh, fresh],
        `version ${version}`,
      );
      // Everything else arrives as in version 4.
      for (const [i, c] of back.entries()) c.soft.smallSentEnd = conns[i]!.soft.smallSentEnd;
      assert.deepStrictEqual(normalize(back), normalize(conns));
    }
    // Without soft state it is the default, as every soft field.
    const none = flattenTrees(decodeBatch(encodeBatch(trees, 0, { soft: 'none' }), 0));
    assert.deepEqual(
      none.map((c) => c.soft.smallSentEnd),
      [fresh, fresh],
    );
  });

  test('a value that is no sequence number is refused, in memory and by the encoder', () => {
    for (const bad of [-1, 2 ** 32, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      const trees = sampleTrees(1);
      flattenTrees(trees)[0]!.soft.smallSentEnd = bad;
      const refused = (e: unknown) =>
        e instanceof StateValidationError && e.field === 'soft.smallSentEnd' && /u32/.test(e.message);
      assert.throws(() => validateTrees(trees), refused, String(bad));
      assert.throws(() => encodeBatch(trees, 0), refused, String(bad));
    }
  });
});

describe("version 5: RACK's knowledge of the path (soft.reordering and the rest)", () => {
  test('travels in version 5 with the soft scalars; a version-4 batch leaves it out and decodes to the defaults', () => {
    const trees = sampleTrees(2);
    const conns = flattenTrees(trees);
    const learned = {
      reordering: 42,
      reorderingSeen: true,
      reoWndMult: 4,
      reoWndPersist: 9,
      rtxBytes: 2 ** 40,
      dsackBytes: 2920,
    };
    Object.assign(conns[0]!.soft, learned);
    const pick = (c: (typeof conns)[number]) => ({
      reordering: c.soft.reordering,
      reorderingSeen: c.soft.reorderingSeen,
      reoWndMult: c.soft.reoWndMult,
      reoWndPersist: c.soft.reoWndPersist,
      rtxBytes: c.soft.rtxBytes,
      dsackBytes: c.soft.dsackBytes,
    });
    const fresh = pick(createTcpState(conns[0]!.const, DEFAULT_TCP_CACHED, conns[0]!.path));
    for (const soft of ['all', 'scalars'] as const) {
      const back = flattenTrees(decodeBatch(encodeBatch(trees, 0, { soft, version: 5 }), 0));
      assert.deepEqual(back.map(pick), [learned, fresh], soft);
    }
    const old = encodeBatch(trees, 0, { version: 4 });
    assert.equal(
      encodeBatch(trees, 0, { version: 5 }).length - old.length,
      21 * 2,
      'version 4: 21 bytes a connection fewer',
    );
    assert.deepEqual(flattenTrees(decodeBatch(old, 0)).map(pick), [fresh, fresh]);
  });
});

describe("version 6: where a timeout's undo puts snd.nxt (soft.undoNxt)", () => {
  test('travels in version 6 with the soft scalars; a version-5 batch leaves it out and decodes to 0', () => {
    const trees = sampleTrees(2);
    const conns = flattenTrees(trees);
    conns[0]!.soft.undoNxt = 0xfedc_ba98;
    for (const soft of ['all', 'scalars'] as const) {
      const back = flattenTrees(decodeBatch(encodeBatch(trees, 0, { soft, version: 6 }), 0));
      assert.deepEqual(
        back.map((c) => c.soft.undoNxt),
        [0xfedc_ba98, 0],
        soft,
      );
    }
    const old = encodeBatch(trees, 0, { version: 5 });
    assert.equal(
      encodeBatch(trees, 0, { version: 6 }).length - old.length,
      4 * 2,
      'version 5: a u32 a connection fewer',
    );
    assert.deepEqual(
      flattenTrees(decodeBatch(old, 0)).map((c) => c.soft.undoNxt),
      [0, 0],
    );
  });
});

describe('version 7: a rebuilt connection whose flight no ACK has spoken for (soft.repaired)', () => {
  test('travels in version 7 with the soft scalars; a version-6 batch leaves it out and decodes to false', () => {
    const trees = sampleTrees(2);
    const conns = flattenTrees(trees);
    conns[0]!.soft.repaired = true;
    for (const soft of ['all', 'scalars'] as const) {
      const back = flattenTrees(decodeBatch(encodeBatch(trees, 0, { soft, version: 7 }), 0));
      assert.deepEqual(
        back.map((c) => c.soft.repaired),
        [true, false],
        soft,
      );
    }
    const old = encodeBatch(trees, 0, { version: 6 });
    assert.ok(encodeBatch(trees, 0, { version: 7 }).length > old.length, 'version 6: shorter by the flag');
    assert.deepEqual(
      flattenTrees(decodeBatch(old, 0)).map((c) => c.soft.repaired),
      [false, false],
    );
  });
});

describe("version 8: the receiver's ACK mode (soft.quickAcks, pingpong, lastDataAt)", () => {
  test('travels in version 8 with the soft scalars; a version-7 batch leaves it out and decodes to none', () => {
    assert.ok(STATE_CODEC_VERSION >= 8);
    const trees = sampleTrees(2);
    const conns = flattenTrees(trees);
    Object.assign(conns[0]!.soft, { quickAcks: 11, pingpong: true, lastDataAt: 900 });
    Object.assign(conns[1]!.soft, { quickAcks: -1 });
    const mode = (c: (typeof conns)[0]) => [c.soft.quickAcks, c.soft.pingpong, c.soft.lastDataAt];
    for (const soft of ['all', 'scalars'] as const) {
      // Times travel as deltas from the sender's clock (1000) to the receiver's (5000).
      const back = flattenTrees(decodeBatch(encodeBatch(trees, 1000, { soft }), 5000));
      assert.deepEqual(
        back.map(mode),
        [
          [11, true, 4900],
          [-1, false, -1],
        ],
        soft,
      );
    }
    const old = encodeBatch(trees, 0, { version: 7 });
    assert.ok(encodeBatch(trees, 0).length > old.length, 'version 7: shorter by the mode');
    assert.deepEqual(flattenTrees(decodeBatch(old, 0)).map(mode), [
      [0, false, -1],
      [0, false, -1],
    ]);
  });
});

describe("version 9: the peer's segment size as estimated, and the small segments owed an ACK (soft.rcvMss, ackPushed)", () => {
  test('travel in version 9 with the soft scalars; a version-8 batch leaves them out and decodes to none', () => {
    assert.ok(STATE_CODEC_VERSION >= 9);
    const trees = sampleTrees(2);
    const conns = flattenTrees(trees);
    Object.assign(conns[0]!.soft, { rcvMss: 536, ackPushed: 3, quickAcks: 5 });
    Object.assign(conns[1]!.soft, { rcvMss: 1448, ackPushed: 1 });
    const est = (c: (typeof conns)[0]) => [c.soft.rcvMss, c.soft.ackPushed];
    for (const soft of ['all', 'scalars'] as const) {
      const back = flattenTrees(decodeBatch(encodeBatch(trees, 0, { soft }), 0));
      assert.deepEqual(
        back.map(est),
        [
          [536, 3],
          [1448, 1],
        ],
        soft,
      );
    }
    const old = encodeBatch(trees, 0, { version: 8 });
    assert.ok(encodeBatch(trees, 0).length > old.length, 'version 8: shorter by the two');
    const back8 = flattenTrees(decodeBatch(old, 0));
    assert.deepEqual(back8.map(est), [
      [0, 0],
      [0, 0],
    ]);
    assert.equal(back8[0]!.soft.quickAcks, 5, "version 8's own fields still travel");
  });
});

describe('version 12: ECN in the delegated state (delegated.ecn, ecnCwrEnd)', () => {
  test('travels in version 12 with the hard state, soft or not; a version-11 batch leaves it out: no ECN', () => {
    assert.equal(STATE_CODEC_VERSION, 12);
    const trees = sampleTrees(2);
    const conns = flattenTrees(trees);
    const ecn = TcpEcn.OK | TcpEcn.DEMAND_CWR | TcpEcn.CWR;
    conns[0]!.delegated.ecn = ecn;
    conns[0]!.delegated.ecnCwrEnd = 0xfffffff0;
    for (const soft of ['all', 'none'] as const) {
      const back = flattenTrees(decodeBatch(encodeBatch(trees, 1000, { soft }), 2000));
      assert.equal(back[0]!.delegated.ecn, ecn, soft);
      assert.equal(back[0]!.delegated.ecnCwrEnd, 0xfffffff0, soft);
      assert.equal(back[1]!.delegated.ecn, 0, soft);
    }
    const old = encodeBatch(trees, 1000, { version: 11 });
    assert.equal(
      encodeBatch(trees, 1000).length - old.length,
      2 * 5,
      'version 11: 5 bytes a connection fewer',
    );
    const back11 = flattenTrees(decodeBatch(old, 2000));
    assert.equal(back11[0]!.delegated.ecn, 0, 'an older build never negotiated ECN');
    assert.equal(back11[0]!.delegated.ecnCwrEnd, 0);
    assert.equal(
      back11[0]!.delegated.sndUna,
      conns[0]!.delegated.sndUna,
      "version 11's own fields still travel",
    );
    // An older batch of connections with empty rings and no soft block is exactly as long as its
    // records: the decoder's size check counts that version's records, not this one's.
    const bare = encodeBatch(trees, 1000, { version: 11, soft: 'none' });
    assert.equal(flattenTrees(decodeBatch(bare, 2000)).length, 2);
  });

  test('bits TcpEcn does not define, or echo state without ECN negotiated, are refused', () => {
    for (const [bits, re] of [
      [32, /beyond/],
      [TcpEcn.DEMAND_CWR, /without ECN negotiated/],
    ] as const) {
      const trees = sampleTrees(1);
      flattenTrees(trees)[0]!.delegated.ecn = bits;
      assert.throws(
        () => decodeBatch(encodeBatch(trees, 0, { skipValidation: true }), 0),
        (e: unknown) =>
          e instanceof StateValidationError && e.field === 'delegated.ecn' && re.test(e.message),
      );
    }
  });
});

describe('version 10: receive-buffer autotuning (soft.rcvClamp, rcvSpace, rcvRtt and their measures)', () => {
  test('travels in version 10 with the soft scalars; a version-9 batch leaves it out: no clamp, the whole buffer', () => {
    assert.ok(STATE_CODEC_VERSION >= 10);
    const trees = sampleTrees(2);
    const conns = flattenTrees(trees);
    const tuned = {
      rcvClamp: 186_574,
      rcvSpace: 30_000,
      rcvSpaceSeq: 0xfffff000,
      rcvSpaceAt: 950,
      rcvRtt: 10.5,
      rcvRttSeq: 123_456,
      rcvRttAt: 990,
      rcvRttEcr: 77,
    };
    Object.assign(conns[0]!.soft, tuned, { rcvMss: 1448 });
    const fields = Object.keys(tuned) as (keyof typeof tuned)[];
    const of = (c: (typeof conns)[0]) => Object.fromEntries(fields.map((k) => [k, c.soft[k]]));
    for (const soft of ['all', 'scalars'] as const) {
      // Times travel as deltas from the sender's clock (1000 here) to the receiver's (2000).
      const back = flattenTrees(decodeBatch(encodeBatch(trees, 1000, { soft }), 2000));
      assert.deepEqual(of(back[0]!), { ...tuned, rcvSpaceAt: 1950, rcvRttAt: 1990 }, soft);
      assert.equal(back[1]!.soft.rcvClamp, 0, soft);
    }
    const old = encodeBatch(trees, 1000, { version: 9 });
    assert.ok(encodeBatch(trees, 1000).length > old.length, 'version 9: shorter by the eight');
    const back9 = flattenTrees(decodeBatch(old, 2000));
    assert.equal(back9[0]!.soft.rcvClamp, 0, 'no clamp: the whole buffer, as the older build offered');
    assert.equal(back9[0]!.soft.rcvRtt, 0);
    assert.equal(back9[0]!.soft.rcvMss, 1448, "version 9's own fields still travel");
  });

  test('a clamp past the largest window a header can name is refused', () => {
    const trees = sampleTrees(1);
    flattenTrees(trees)[0]!.soft.rcvClamp = 2 ** 30 + 1;
    assert.throws(() => decodeBatch(encodeBatch(trees, 0), 0), /soft\.rcvClamp/);
  });
});

describe('version 11: the bound the receive window grows under and the lock of the buffer (soft.rcvSsthresh, rcvLocked)', () => {
  test('travels in version 11 with the soft scalars; a version-10 batch leaves it out: the clamp alone', () => {
    assert.ok(STATE_CODEC_VERSION >= 11);
    const trees = sampleTrees(2);
    const conns = flattenTrees(trees);
    Object.assign(conns[0]!.soft, { rcvClamp: 186_574, rcvSsthresh: 71_000 });
    conns[1]!.soft.rcvLocked = true;
    for (const soft of ['all', 'scalars'] as const) {
      const back = flattenTrees(decodeBatch(encodeBatch(trees, 1000, { soft }), 2000));
      assert.equal(back[0]!.soft.rcvSsthresh, 71_000, soft);
      assert.equal(back[1]!.soft.rcvSsthresh, 0, soft);
      assert.deepEqual([back[0]!.soft.rcvLocked, back[1]!.soft.rcvLocked], [false, true], soft);
    }
    const old = encodeBatch(trees, 1000, { version: 10 });
    assert.ok(encodeBatch(trees, 1000).length > old.length, 'version 10: shorter by the bound');
    const back10 = flattenTrees(decodeBatch(old, 2000));
    assert.equal(back10[0]!.soft.rcvSsthresh, 0, 'no bound: the clamp alone, as the older build offered');
    assert.equal(back10[1]!.soft.rcvLocked, false, 'not locked: the new owner tunes it');
    assert.equal(back10[0]!.soft.rcvClamp, 186_574, "version 10's own fields still travel");
  });

  test('a bound past the largest window a header can name is refused', () => {
    const trees = sampleTrees(1);
    flattenTrees(trees)[0]!.soft.rcvSsthresh = 2 ** 30 + 1;
    assert.throws(() => decodeBatch(encodeBatch(trees, 0), 0), /soft\.rcvSsthresh/);
  });
});

describe('the codec covers every field', () => {
  const nb = createNeighborState({ srcMac: 1, vlanId: -1, ip: 1 }, 2, 0);
  const path = createPathState({ localIp: 1, remoteIp: 2 }, nb, 0, 1500);
  const tcp = createTcpState(
    {
      localIp: 1,
      localPort: 1,
      remoteIp: 2,
      remotePort: 2,
      tsEnabled: false,
      sackEnabled: false,
      wsEnabled: false,
      sndWscale: 0,
      rcvWscale: 0,
      remoteMss: 536,
      localMss: 536,
    },
    DEFAULT_TCP_CACHED,
    path,
  );

  test('every field of createTcpState(...) has a row in TCP_FIELDS, in the same order', () => {
    const actual = leafNames(tcp, '', new Set(['path']));
    assert.deepEqual(
      TCP_FIELDS.map((f) => f.name),
      actual,
    );
  });

  test('every field of createNeighborState and createPathState has a row', () => {
    assert.deepEqual(
      NEIGHBOR_FIELDS.map((f) => f.name),
      leafNames(nb, '', new Set()),
    );
    assert.deepEqual(
      PATH_FIELDS.map((f) => f.name),
      leafNames(path, '', new Set(['neighbor'])),
    );
  });

  test('the structural links are the only keys left out', () => {
    assert.deepEqual(Object.keys(tcp).sort(), ['cached', 'const', 'delegated', 'path', 'soft']);
    assert.deepEqual(Object.keys(path).sort(), ['cached', 'const', 'ifIndex', 'neighbor']);
  });

  test('soft rows are exactly the fields under soft', () => {
    for (const f of TCP_FIELDS) assert.equal(f.soft !== undefined, f.name.startsWith('soft.'), f.name);
  });

  test('encoding refuses a state it could not carry faithfully', () => {
    const trees = sampleTrees(1);
    trees[0]!.paths[0]!.conns[0]!.delegated.srtt = Number.NaN;
    assert.throws(
      () => encodeBatch(trees, 0),
      (e) => e instanceof StateValidationError && e.field === 'delegated.srtt',
    );
  });
});
