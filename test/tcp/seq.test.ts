import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SeededRandom } from '../../src/core/random.ts';
import { seqAdd, seqDiff, seqGeq, seqGt, seqLeq, seqLt, seqSub } from '../../src/stack/tcp/seq.ts';
import { MSS_TABLE, SynCookies } from '../../src/stack/tcp/syn-cookies.ts';
import fc from '../helpers/fc.ts';

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const dist = fc.integer({ min: 1, max: 0x7fffffff });

test('sequence comparisons hold across the 2^32 wrap', () => {
  fc.assert(
    fc.property(u32, dist, (a, n) => {
      const b = seqAdd(a, n);
      assert.ok(seqLt(a, b) && seqLeq(a, b) && seqGt(b, a) && seqGeq(b, a));
      assert.ok(!seqLt(b, a) && !seqGt(a, b));
      assert.equal(seqDiff(b, a), n);
      assert.equal(seqSub(b, n), a);
    }),
  );
});

test('SYN cookies round-trip MSS and reject a changed tuple or peer ISN', () => {
  const c = new SynCookies(new SeededRandom(9));
  fc.assert(
    fc.property(
      u32,
      fc.integer({ min: 1, max: 65535 }),
      fc.integer({ min: 0, max: 1e9 }),
      (isn, mss, now) => {
        const k = c.make(1, 80, 2, 5000, isn, mss, now);
        const got = c.check(1, 80, 2, 5000, isn, k, now + 1000);
        assert.equal(got, MSS_TABLE[SynCookies.mssIndex(mss)]);
        assert.equal(c.check(1, 80, 2, 5001, isn, k, now), -1);
        assert.equal(c.check(1, 80, 2, 5000, (isn + 1) >>> 0, k, now), -1);
      },
    ),
    { numRuns: 200 },
  );
});

test('cookie timestamp bits carry wscale, SACK and ECN and never run ahead of the clock', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 64, max: 0xffffffff }),
      fc.integer({ min: -1, max: 14 }),
      fc.boolean(),
      fc.boolean(),
      (ts, ws, sack, ecn) => {
        const v = SynCookies.encodeTs(ts, ws, sack, ecn);
        assert.ok(v <= ts && ts - v < 128);
        const o = { mss: 0, wscale: 0, sackPermitted: false, ecn: false };
        SynCookies.decodeTs(v, o);
        assert.equal(o.wscale, ws);
        assert.equal(o.sackPermitted, sack);
        assert.equal(o.ecn, ecn);
      },
    ),
  );
});
