import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InvalidArgumentError } from '../../src/core/errors.ts';
import {
  congestionControl,
  cubicK,
  cubicWindow,
  effectiveMss,
  flightSize,
} from '../../src/stack/tcp/congestion.ts';
import { createNeighborState } from '../../src/state/neighbor-state.ts';
import { createPathState } from '../../src/state/path-state.ts';
import {
  type CongestionAlgorithm,
  createTcpState,
  DEFAULT_TCP_CACHED,
  type TcpState,
} from '../../src/state/tcp-state.ts';
import fc from '../helpers/fc.ts';

const MSS = 1460;

function mkState(
  alg: CongestionAlgorithm,
  opts: { remoteMss?: number; mtu?: number; ts?: boolean; una?: number } = {},
): TcpState {
  const nb = createNeighborState({ srcMac: 0x020000000001, vlanId: -1, ip: 0x0a000002 });
  const path = createPathState({ localIp: 0x0a000001, remoteIp: 0x0a000002 }, nb, 0, opts.mtu ?? 1500);
  const s = createTcpState(
    {
      localIp: 0x0a000001,
      localPort: 40000,
      remoteIp: 0x0a000002,
      remotePort: 80,
      tsEnabled: opts.ts ?? false,
      sackEnabled: true,
      wsEnabled: true,
      sndWscale: 7,
      rcvWscale: 7,
      remoteMss: opts.remoteMss ?? MSS,
      localMss: MSS,
    },
    { ...DEFAULT_TCP_CACHED, congestion: alg },
    path,
  );
  const una = (opts.una ?? 1000) >>> 0;
  s.delegated.sndUna = una;
  s.delegated.sndNxt = una;
  s.delegated.sndMax = una;
  return s;
}

/** Put `bytes` in flight (snd.max = snd.una + bytes). */
function setFlight(s: TcpState, bytes: number): void {
  s.delegated.sndMax = (s.delegated.sndUna + bytes) >>> 0;
  s.delegated.sndNxt = s.delegated.sndMax;
}

/** Cumulative ACK of `bytes`: snd.una moves and the window refills to cwnd. */
function ack(s: TcpState, alg: CongestionAlgorithm, bytes: number, rtt: number, now: number): void {
  s.delegated.sndUna = (s.delegated.sndUna + bytes) >>> 0;
  congestionControl(alg).onAck(s, bytes, rtt, now);
  setFlight(s, s.delegated.cwnd);
}

/** A loss detected at t = 100 ms with 40 segments in a 40-segment window. */
function lossAtForty(s: TcpState, alg: CongestionAlgorithm) {
  const cc = congestionControl(alg);
  cc.init(s, 0);
  s.delegated.cwnd = 40 * MSS;
  setFlight(s, 40 * MSS);
  cc.onLossDetected(s, 100);
  return cc;
}

/**
 * One round trip: the whole window sent at its start is ACKed in `ackSize` pieces spread evenly
 * over the RTT. Returns the time at the end of the round.
 */
function round(s: TcpState, alg: CongestionAlgorithm, now: number, rtt: number, ackSize = MSS): number {
  const win = s.delegated.cwnd;
  const n = Math.ceil(win / ackSize);
  let left = win;
  for (let i = 0; i < n; i++) {
    const b = Math.min(ackSize, left);
    left -= b;
    ack(s, alg, b, rtt, now + ((i + 1) * rtt) / n);
  }
  return now + rtt;
}

describe('effectiveMss and flightSize', () => {
  test('MSS is bounded by the peer, the path MTU and the timestamp option', () => {
    assert.equal(effectiveMss(mkState('newreno')), 1460);
    assert.equal(effectiveMss(mkState('newreno', { ts: true })), 1448);
    assert.equal(effectiveMss(mkState('newreno', { mtu: 576 })), 536);
    assert.equal(effectiveMss(mkState('newreno', { remoteMss: 536, mtu: 9000 })), 536);
    assert.equal(effectiveMss(mkState('newreno', { remoteMss: 8960, mtu: 9000 })), 8960);
    assert.equal(effectiveMss(mkState('newreno', { mtu: 68, ts: true })), 64);
  });

  test('flight size is modulo 2^32', () => {
    const s = mkState('newreno', { una: 0xffffff00 });
    setFlight(s, 0x300);
    assert.equal(s.delegated.sndMax, 0x200);
    assert.equal(flightSize(s), 0x300);
  });

  test('unknown algorithm is a typed error; algorithms are singletons', () => {
    assert.throws(() => congestionControl('vegas' as CongestionAlgorithm), InvalidArgumentError);
    assert.equal(congestionControl('cubic'), congestionControl('cubic'));
    assert.equal(congestionControl('newreno'), congestionControl('newreno'));
    assert.notEqual(congestionControl('cubic'), congestionControl('newreno'));
  });
});

for (const alg of ['newreno', 'cubic'] as const) {
  describe(`${alg}: shared behaviour`, () => {
    test('RFC 6928 initial window', () => {
      const cases: [number, number, number][] = [
        // remoteMss, mtu, expected IW
        [1460, 1500, 14600],
        [536, 576, 5360],
        [8960, 9000, 17920], // max(2*mss, 14600) < 10*mss
        [1000, 1500, 10000],
      ];
      for (const [remoteMss, mtu, iw] of cases) {
        const s = mkState(alg, { remoteMss, mtu });
        congestionControl(alg).init(s, 0);
        assert.equal(s.delegated.cwnd, iw, `mss ${remoteMss}`);
        assert.ok(s.delegated.ssthresh >= 0x7fffffff);
      }
    });

    test('slow start doubles cwnd every RTT with per-segment ACKs', () => {
      const s = mkState(alg);
      congestionControl(alg).init(s, 0);
      setFlight(s, s.delegated.cwnd);
      let now = 0;
      for (const expect of [20, 40, 80, 160]) {
        now = round(s, alg, now, 50);
        assert.equal(s.delegated.cwnd, expect * MSS);
      }
    });

    test('slow start with delayed ACKs still doubles (ABC)', () => {
      const s = mkState(alg);
      congestionControl(alg).init(s, 0);
      let now = 0;
      for (const expect of [20, 40, 80]) {
        now = round(s, alg, now, 50, 2 * MSS);
        assert.equal(s.delegated.cwnd, expect * MSS);
      }
    });

    test('slow start takes the whole of a stretch ACK (Linux tcp_slow_start)', () => {
      const s = mkState(alg);
      congestionControl(alg).init(s, 0);
      // One ACK per super-segment: a window sent as one packet doubles with its one ACK.
      ack(s, alg, 10 * MSS, 50, 10);
      assert.equal(s.delegated.cwnd, 20 * MSS);
      ack(s, alg, 20 * MSS, 50, 15);
      assert.equal(s.delegated.cwnd, 40 * MSS);
      ack(s, alg, 100, 50, 20);
      assert.equal(s.delegated.cwnd, 40 * MSS + 100);
      // After a loss too: an ACK of the whole window doubles it.
      s.delegated.ssthresh = 30 * MSS;
      s.delegated.cwnd = 10 * MSS;
      setFlight(s, 10 * MSS);
      ack(s, alg, 10 * MSS, 50, 25);
      assert.equal(s.delegated.cwnd, 20 * MSS);
    });

    test('no growth during recovery or for zero-byte ACKs', () => {
      const s = mkState(alg);
      congestionControl(alg).init(s, 0);
      s.soft.inRecovery = true;
      ack(s, alg, MSS, 50, 10);
      assert.equal(s.delegated.cwnd, 10 * MSS);
      s.soft.inRecovery = false;
      ack(s, alg, 0, 50, 20);
      assert.equal(s.delegated.cwnd, 10 * MSS);
    });

    test('RTO: loss window of one MSS, then slow start up to ssthresh', () => {
      const s = mkState(alg, { una: 0xfffff000 });
      const cc = congestionControl(alg);
      cc.init(s, 0);
      s.delegated.cwnd = 40 * MSS;
      setFlight(s, 40 * MSS);
      cc.onTimeout(s, 1000);
      assert.equal(s.delegated.cwnd, MSS);
      const expected = alg === 'newreno' ? 20 * MSS : 28 * MSS;
      assert.equal(s.delegated.ssthresh, expected);
      // A second timeout of the same data must not lower ssthresh again.
      cc.onTimeout(s, 3000);
      assert.equal(s.delegated.ssthresh, expected);
      assert.equal(s.delegated.cwnd, MSS);
      let now = 3000;
      // 1 -> 2 -> 4 -> 8 -> 16 -> 32 (crosses ssthresh) and then additive.
      for (const c of [2, 4, 8, 16]) {
        now = round(s, alg, now, 50);
        assert.equal(s.delegated.cwnd, c * MSS);
      }
      now = round(s, alg, now, 50);
      assert.ok(s.delegated.cwnd >= expected, 'slow start reaches ssthresh');
      const atSsthresh = s.delegated.cwnd;
      now = round(s, alg, now, 50);
      assert.ok(s.delegated.cwnd < atSsthresh * 1.5, 'growth is no longer exponential');
    });

    test('RTO during fast recovery never raises the ssthresh recovery chose', () => {
      const s = mkState(alg);
      const cc = lossAtForty(s, alg);
      const ssthresh = s.delegated.ssthresh;
      const wMax = s.soft.cubic.wMax;
      s.soft.inRecovery = true;
      // Window inflation sent plenty of new data before the retransmission was lost again.
      setFlight(s, 200 * MSS);
      cc.onTimeout(s, 400);
      assert.equal(s.delegated.ssthresh, ssthresh);
      assert.equal(s.soft.cubic.wMax, wMax);
      assert.equal(s.delegated.cwnd, MSS);
    });

    test("a loss's ssthresh is from the window, not the flight (Linux's tcp_reno_ssthresh, bictcp_recalc_ssthresh)", () => {
      const s = mkState(alg);
      const cc = congestionControl(alg);
      cc.init(s, 0);
      // The application holds the flight at eight segments of a window of ten.
      s.delegated.cwnd = 10 * MSS;
      setFlight(s, 8 * MSS);
      cc.onLossDetected(s, 100);
      assert.equal(s.delegated.ssthresh, alg === 'newreno' ? 5 * MSS : 7 * MSS);
      s.delegated.cwnd = 10 * MSS;
      cc.onTimeout(s, 200);
      assert.equal(s.delegated.ssthresh, alg === 'newreno' ? 5 * MSS : 7 * MSS);
    });

    test('RTO with a tiny flight keeps ssthresh at least 2 MSS', () => {
      const s = mkState(alg);
      const cc = congestionControl(alg);
      cc.init(s, 0);
      s.delegated.cwnd = 2 * MSS;
      setFlight(s, MSS);
      cc.onTimeout(s, 100);
      assert.equal(s.delegated.ssthresh, 2 * MSS);
      assert.equal(s.delegated.cwnd, MSS);
    });

    test('HyStart++ (RFC 9406): a rising round minimum RTT ends the initial slow start through CSS', () => {
      const s = mkState(alg);
      const cc = congestionControl(alg);
      cc.init(s, 0);
      setFlight(s, s.delegated.cwnd);
      let now = 0;
      for (let i = 0; i < 3; i++) now = round(s, alg, now, 40);
      assert.equal(s.soft.hsInCss, false, 'a steady RTT is plain slow start');
      const atRise = s.delegated.cwnd;
      let sawCss = false;
      let rounds = 0;
      while (s.delegated.cwnd < s.delegated.ssthresh && rounds++ < 10) {
        now = round(s, alg, now, 50);
        sawCss ||= s.soft.hsInCss;
      }
      assert.ok(sawCss, 'the RTT rose by more than max(4 ms, 40/8 ms): Conservative Slow Start');
      assert.ok(s.delegated.ssthresh < 1e9, 'slow start ended without a loss');
      assert.ok(s.delegated.ssthresh <= s.delegated.cwnd);
      // Doubling for the ~7 rounds it took would have given 128x; CSS grows by a quarter.
      assert.ok(s.delegated.cwnd < atRise * 16, `cwnd ${s.delegated.cwnd / MSS} MSS from ${atRise / MSS}`);
    });

    test('HyStart++: an RTT that falls back during CSS resumes slow start', () => {
      const s = mkState(alg);
      const cc = congestionControl(alg);
      cc.init(s, 0);
      setFlight(s, s.delegated.cwnd);
      let now = 0;
      for (let i = 0; i < 3; i++) now = round(s, alg, now, 40);
      for (let i = 0; i < 2 && !s.soft.hsInCss; i++) now = round(s, alg, now, 50);
      assert.ok(s.soft.hsInCss);
      for (let i = 0; i < 2 && s.soft.hsInCss; i++) now = round(s, alg, now, 41);
      assert.equal(s.soft.hsInCss, false);
      assert.ok(s.delegated.ssthresh > 1e9);
    });

    test('application-limited (RFC 9438 5.8, RFC 7661): an unused window does not grow', () => {
      for (const ssthresh of [0x7fffffff, 20 * MSS]) {
        const s = mkState(alg);
        const cc = congestionControl(alg);
        cc.init(s, 0);
        s.delegated.cwnd = 40 * MSS;
        s.delegated.ssthresh = ssthresh;
        let now = 0;
        for (let i = 0; i < 200; i++) {
          // The application keeps only eight segments in flight.
          setFlight(s, 8 * MSS);
          s.delegated.sndUna = (s.delegated.sndUna + MSS) >>> 0;
          now += 5;
          cc.onAck(s, MSS, 40, now);
        }
        assert.equal(s.delegated.cwnd, 40 * MSS, ssthresh > 1e9 ? 'slow start' : 'congestion avoidance');
        // Once the window is full again it grows.
        setFlight(s, 40 * MSS);
        round(s, alg, now, 40);
        assert.ok(s.delegated.cwnd > 40 * MSS);
      }
    });

    test('restart after idle: min(IW, cwnd)', () => {
      const s = mkState(alg);
      const cc = congestionControl(alg);
      cc.init(s, 0);
      s.delegated.cwnd = 50 * MSS;
      cc.onIdleRestart(s, 10_000);
      assert.equal(s.delegated.cwnd, 14600);
      s.delegated.cwnd = 5 * MSS;
      cc.onIdleRestart(s, 20_000);
      assert.equal(s.delegated.cwnd, 5 * MSS);
      assert.equal(s.soft.cubic.epochStart, -1);
    });

    test('restart after idle halves the window per RTO idle, down to IW, and ssthresh keeps 3/4 (Linux tcp_cwnd_restart)', () => {
      const s = mkState(alg);
      const cc = congestionControl(alg);
      cc.init(s, 0);
      const d = s.delegated;
      d.rto = 200;
      d.ssthresh = 20 * MSS;
      for (const [idle, cwnd] of [
        [150, 40 * MSS],
        [300, 20 * MSS],
        [450, 10 * MSS],
        [5000, 10 * MSS],
      ] as const) {
        d.cwnd = 40 * MSS;
        d.lastSendAt = 30_000;
        cc.onIdleRestart(s, 30_000 + idle);
        assert.equal(d.cwnd, cwnd, `idle ${idle} ms`);
        assert.equal(d.ssthresh, 30 * MSS);
      }
    });

    test('recovery exit: cwnd = min(ssthresh, max(flight, mss) + mss)', () => {
      const s = mkState(alg);
      const cc = lossAtForty(s, alg);
      const ssthresh = s.delegated.ssthresh;
      // Full ACK with lots of new data sent during recovery: capped at ssthresh.
      s.delegated.sndUna = (s.delegated.sndUna + 40 * MSS) >>> 0;
      setFlight(s, 30 * MSS);
      cc.onRecoveryExit(s, 200);
      assert.equal(s.delegated.cwnd, ssthresh);
      // Full ACK that drained the pipe: no burst, one segment more than is in flight.
      s.delegated.cwnd = ssthresh;
      setFlight(s, 3 * MSS);
      cc.onRecoveryExit(s, 300);
      assert.equal(s.delegated.cwnd, 4 * MSS);
      setFlight(s, 0);
      cc.onRecoveryExit(s, 400);
      assert.equal(s.delegated.cwnd, 2 * MSS);
    });

    test('property: cwnd never drops below 1 MSS and ssthresh below 2 MSS over random events', () => {
      fc.assert(
        fc.property(
          fc.array(
            fc.record({
              ev: fc.constantFrom('ack', 'ack', 'ack', 'loss', 'exit', 'rto', 'idle'),
              bytes: fc.integer({ min: 1, max: 20 * MSS }),
              dt: fc.integer({ min: 0, max: 3000 }),
            }),
            { maxLength: 200 },
          ),
          fc.integer({ min: 0, max: 0xffffffff }),
          (events, una) => {
            const s = mkState(alg, { una });
            const cc = congestionControl(alg);
            let now = 0;
            cc.init(s, now);
            setFlight(s, s.delegated.cwnd);
            // Congestion avoidance is bounded over a run of ACKs, not per ACK: growth owed from
            // earlier small ACKs (CUBIC's fraction of a byte, and its Reno estimate W_est, which
            // takes over the window only once it passes the curve) may land on a later ACK.
            let caGrowth = 0;
            let caLimit = 0;
            for (const e of events) {
              now += e.dt;
              if (e.ev === 'ack') {
                const before = s.delegated.cwnd;
                const slowStart = before < s.delegated.ssthresh;
                const bytes = Math.min(e.bytes, flightSize(s));
                ack(s, alg, bytes, 40, now);
                const growth = s.delegated.cwnd - before;
                if (slowStart) {
                  // Slow start grows by the bytes ACKed (as Linux, no per-ACK limit L).
                  assert.ok(
                    growth <= bytes,
                    `slow start: +${growth} B on an ACK of ${bytes} B (cwnd ${before})`,
                  );
                  caGrowth = 0;
                  caLimit = 0;
                } else {
                  // Reno adds at most one SMSS per ACK (RFC 5681 eq. 3 with byte counting); CUBIC's
                  // target is at most 1.5 cwnd one RTT ahead (RFC 9438 4.2), so an ACK adds at most
                  // half the bytes it ACKs, or one SMSS of the Reno estimate (4.3).
                  caGrowth += growth;
                  caLimit += alg === 'newreno' ? MSS : Math.max(Math.ceil(bytes / 2), MSS);
                  assert.ok(
                    caGrowth <= caLimit + 1,
                    `CA: +${caGrowth} B over ACKs allowing ${caLimit} B (cwnd ${before}, this ACK ${bytes} B)`,
                  );
                }
              } else {
                caGrowth = 0;
                caLimit = 0;
                if (e.ev === 'loss') cc.onLossDetected(s, now);
                else if (e.ev === 'exit') cc.onRecoveryExit(s, now);
                else if (e.ev === 'rto') cc.onTimeout(s, now);
                else cc.onIdleRestart(s, now);
              }
              assert.ok(s.delegated.cwnd >= MSS);
              assert.ok(s.delegated.ssthresh >= 2 * MSS);
              assert.ok(Number.isInteger(s.delegated.cwnd) && Number.isInteger(s.delegated.ssthresh));
            }
          },
        ),
        { numRuns: 200 },
      );
    });
  });
}

describe('NewReno (RFC 5681 / RFC 6582)', () => {
  test('congestion avoidance adds exactly one MSS per RTT', () => {
    for (const ackSize of [MSS, 2 * MSS, 500]) {
      const s = mkState('newreno');
      congestionControl('newreno').init(s, 0);
      s.delegated.cwnd = 20 * MSS;
      s.delegated.ssthresh = 20 * MSS;
      let now = 0;
      for (let r = 1; r <= 10; r++) {
        now = round(s, 'newreno', now, 100, ackSize);
        assert.equal(s.delegated.cwnd, (20 + r) * MSS, `ack size ${ackSize}, round ${r}`);
      }
    }
  });

  test("fast retransmit: ssthresh = max(cwnd/2, 2 MSS) (Linux's tcp_reno_ssthresh), cwnd = ssthresh (no inflation)", () => {
    const s = mkState('newreno', { una: 0xffffffff - 10 * MSS });
    const cc = congestionControl('newreno');
    cc.init(s, 0);
    s.delegated.cwnd = 30 * MSS;
    setFlight(s, 30 * MSS);
    cc.onLossDetected(s, 10);
    assert.equal(s.delegated.ssthresh, 15 * MSS);
    assert.equal(s.delegated.cwnd, 15 * MSS);
    // The window, not the flight (RFC 5681 eq. 4), drives the reduction, as in Linux.
    s.delegated.cwnd = 30 * MSS;
    setFlight(s, 9 * MSS);
    cc.onLossDetected(s, 20);
    assert.equal(s.delegated.ssthresh, 15 * MSS);
    s.delegated.cwnd = 3 * MSS;
    setFlight(s, MSS);
    cc.onLossDetected(s, 30);
    assert.equal(s.delegated.ssthresh, 2 * MSS);
    assert.equal(s.delegated.cwnd, 2 * MSS);
  });

  test('slow start hands over to congestion avoidance at ssthresh', () => {
    const s = mkState('newreno');
    congestionControl('newreno').init(s, 0);
    s.delegated.ssthresh = 30 * MSS;
    let now = round(s, 'newreno', 0, 100); // 10 -> 20
    now = round(s, 'newreno', now, 100); // 20 -> 30 after 10 ACKs, then CA for the other 10
    assert.equal(s.delegated.cwnd, 30 * MSS);
    now = round(s, 'newreno', now, 100);
    assert.equal(s.delegated.cwnd, 31 * MSS);
  });
});

describe('CUBIC (RFC 9438)', () => {
  test('4.8: after a timeout the first congestion avoidance starts its curve at cwnd (K = 0)', () => {
    const s = mkState('cubic');
    const cc = congestionControl('cubic');
    cc.init(s, 0);
    s.delegated.cwnd = 100 * MSS;
    s.delegated.ssthresh = 100 * MSS;
    setFlight(s, 100 * MSS);
    cc.onTimeout(s, 1000);
    assert.equal(s.soft.cubic.wMax, 100 * MSS);
    setFlight(s, s.delegated.cwnd);
    let now = 1000;
    while (s.delegated.cwnd < s.delegated.ssthresh) now = round(s, 'cubic', now, 40);
    ack(s, 'cubic', MSS, 40, now + 1);
    assert.equal(s.soft.cubic.k, 0);
    const c = s.soft.cubic;
    // W_max is the window congestion avoidance began with, not the 100 segments before the timeout.
    assert.ok(c.wMax >= s.delegated.ssthresh && c.wMax <= s.delegated.cwnd, `W_max ${c.wMax / MSS} MSS`);
    // A later loss is an ordinary one again.
    cc.onLossDetected(s, now + 100);
    assert.equal(s.soft.cubic.afterRto, false);
  });

  const RTT = 100;

  function afterLoss(wMaxSegs: number): TcpState {
    const s = mkState('cubic');
    const cc = congestionControl('cubic');
    cc.init(s, 0);
    s.delegated.cwnd = wMaxSegs * MSS;
    setFlight(s, wMaxSegs * MSS);
    cc.onLossDetected(s, 1000);
    s.delegated.srtt = RTT;
    return s;
  }

  test('loss: W_max = cwnd, ssthresh = cwnd = 0.7 W_max, K from eq. 2', () => {
    const s = afterLoss(100);
    assert.equal(s.soft.cubic.wMax, 100 * MSS);
    assert.equal(s.soft.cubic.cwndPrior, 100 * MSS);
    assert.equal(s.delegated.ssthresh, 70 * MSS);
    assert.equal(s.delegated.cwnd, 70 * MSS);
    ack(s, 'cubic', MSS, RTT, 1100);
    assert.ok(Math.abs(s.soft.cubic.k - Math.cbrt(30 / 0.4)) < 1e-9);
    assert.ok(Math.abs(cubicK(100 * MSS, 70 * MSS, MSS) - 4.2171633) < 1e-6);
    assert.equal(s.soft.cubic.epochStart, 1100);
  });

  test('fast convergence: a loss below the previous W_max lowers W_max to cwnd (1 + beta) / 2', () => {
    const s = afterLoss(100);
    const cc = congestionControl('cubic');
    s.delegated.cwnd = 80 * MSS;
    setFlight(s, 80 * MSS);
    cc.onLossDetected(s, 5000);
    assert.equal(s.soft.cubic.wMax, 80 * MSS * 0.85);
    assert.equal(s.delegated.ssthresh, 56 * MSS);
    assert.equal(s.delegated.cwnd, 56 * MSS);
    // A loss above the previous W_max just records it.
    s.delegated.cwnd = 120 * MSS;
    cc.onLossDetected(s, 9000);
    assert.equal(s.soft.cubic.wMax, 120 * MSS);
    assert.equal(s.delegated.ssthresh, 84 * MSS);
  });

  test('cwnd follows W(t) = C (t - K)^3 + W_max: concave up to W_max, plateau, then convex', () => {
    const s = afterLoss(100);
    let now = 1000;
    const samples: { t: number; cwnd: number }[] = [];
    for (let r = 0; r < 90; r++) {
      now = round(s, 'cubic', now, RTT);
      const c = s.soft.cubic;
      const t = (now - c.epochStart) / 1000;
      const w = cubicWindow(t, c.k, 100 * MSS, MSS);
      if (w >= c.wEst) {
        // The per-ACK rule aims at W(t + RTT) so cwnd sits between W(t) and W(t + RTT).
        assert.ok(s.delegated.cwnd >= w - MSS / 2, `round ${r}: cwnd ${s.delegated.cwnd} < W(t) ${w}`);
        assert.ok(
          s.delegated.cwnd <= cubicWindow(t + RTT / 1000, c.k, 100 * MSS, MSS) + MSS / 2,
          `round ${r}: cwnd above W(t + RTT)`,
        );
      }
      samples.push({ t, cwnd: s.delegated.cwnd });
    }
    const at = (t: number) => samples.find((x) => x.t >= t)!.cwnd;
    const k = Math.cbrt(75);
    // Concave: the first second gains more than the second before K.
    assert.ok(at(1) - at(0.1) > at(k) - at(k - 1));
    assert.ok(Math.abs(at(k) - 100 * MSS) <= MSS, 'back at W_max after K seconds');
    assert.ok(at(k + 0.5) - at(k) < 2 * MSS, 'plateau around W_max');
    // Convex beyond K: W(K + 4) = W_max + 0.4 * 64 segments.
    assert.ok(at(k + 4) > 100 * MSS + 20 * MSS);
  });

  test('Reno-friendly region: cwnd tracks W_est when it exceeds W_cubic', () => {
    const s = afterLoss(20);
    let now = 1000;
    let friendlyRounds = 0;
    const alpha = (3 * 0.3) / 1.7;
    assert.equal(s.soft.cubic.cwndPrior, 20 * MSS);
    for (let r = 0; r < 40; r++) {
      const startCwnd = s.delegated.cwnd;
      const startEst = r === 0 ? 14 * MSS : s.soft.cubic.wEst;
      now = round(s, 'cubic', now, RTT);
      const c = s.soft.cubic;
      const t = (now - c.epochStart) / 1000;
      // One window ACKed per RTT adds alpha segments to W_est (1 once it passed cwnd_prior); the
      // window grows within the round, so the gain is a little less than that.
      const rate = c.wEst < 20 * MSS ? alpha : startEst >= 20 * MSS ? 1 : -1;
      if (rate > 0) {
        const gain = c.wEst - startEst;
        assert.ok(gain <= rate * MSS + 1e-6, `round ${r}: W_est gained ${gain}`);
        assert.ok(gain >= (rate * MSS * startCwnd) / s.delegated.cwnd - 1e-6, `round ${r}: gain ${gain}`);
      }
      if (cubicWindow(t, c.k, c.originPoint, MSS) < c.wEst) {
        friendlyRounds++;
        assert.ok(Math.abs(s.delegated.cwnd - c.wEst) < MSS, `round ${r}: cwnd follows W_est`);
      }
    }
    assert.ok(friendlyRounds > 20, 'the scenario exercises the Reno-friendly region');
    // Well past K = 2.47 s the Reno estimate (alpha 1 beyond cwnd_prior) is far above W_max.
    assert.ok(s.delegated.cwnd > 35 * MSS);
  });

  test('without a previous loss the epoch starts at the inflection point (K = 0)', () => {
    const s = mkState('cubic');
    const cc = congestionControl('cubic');
    cc.init(s, 0);
    s.delegated.cwnd = 50 * MSS;
    s.delegated.ssthresh = 50 * MSS;
    s.delegated.srtt = RTT;
    setFlight(s, s.delegated.cwnd);
    ack(s, 'cubic', MSS, RTT, 0);
    assert.equal(s.soft.cubic.k, 0);
    assert.equal(s.soft.cubic.originPoint, 50 * MSS);
    let now = 0;
    for (let r = 0; r < 30; r++) now = round(s, 'cubic', now, RTT);
    assert.ok(s.delegated.cwnd > 50 * MSS + 0.4 * 27 * MSS - MSS);
  });

  test('RTO: W_max and ssthresh from beta, epoch restarts afterwards', () => {
    const s = afterLoss(100);
    const cc = congestionControl('cubic');
    let now = 1000;
    for (let r = 0; r < 10; r++) now = round(s, 'cubic', now, RTT);
    const before = s.delegated.cwnd;
    assert.ok(s.soft.cubic.epochStart >= 0);
    cc.onTimeout(s, now);
    assert.equal(s.delegated.cwnd, MSS);
    assert.equal(s.delegated.ssthresh, Math.floor((before * 7) / 10));
    assert.equal(s.soft.cubic.wMax, (before * 1.7) / 2, 'fast convergence also applies to RTO');
    assert.equal(s.soft.cubic.epochStart, -1);
  });
});
