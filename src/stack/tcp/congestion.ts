import { InvalidArgumentError } from '../../core/errors.ts';
import { type CongestionAlgorithm, NO_RTT, type TcpState } from '../../state/tcp-state.ts';
import { seqGeq } from './seq.ts';

/**
 * Congestion control as stateless singletons over TcpState: every variable lives in the state
 * object (delegated cwnd/ssthresh, soft caBytesAcked and cubic), so a connection keeps its window
 * when it moves between the host and a NIC.
 *
 * Division of labour with the engine: these functions only touch cwnd, ssthresh,
 * soft.caBytesAcked and soft.cubic. The engine owns dupAcks, inRecovery, recoveryPoint and highRxt,
 * decides when each event happens, and sets cwnd through a recovery itself (PRR, prrAck in
 * tcp-recovery.ts, with or without SACK; onLossDetected leaves cwnd = ssthresh). cwnd and ssthresh
 * are whole bytes.
 */
export interface CongestionControl {
  /** Initial window after the handshake (RFC 6928); ssthresh starts arbitrarily large (RFC 5681). */
  init(s: TcpState, now: number): void;
  /** New data cumulatively ACKed outside recovery. `rttMs` is the latest sample (0 or less: none). */
  onAck(s: TcpState, ackedBytes: number, rttMs: number, now: number): void;
  /** Entering fast recovery. Call before flightSize changes (i.e. with the pre-recovery snd.max). */
  onLossDetected(s: TcpState, now: number): void;
  /** A full ACK covered the recovery point; call after snd.una has moved. */
  onRecoveryExit(s: TcpState, now: number): void;
  /** Retransmission timeout. Call while soft.inRecovery still says whether fast recovery was running. */
  onTimeout(s: TcpState, now: number): void;
  /**
   * Sending resumes after an idle period longer than the RTO; call before delegated.lastSendAt
   * moves (the idle period is measured from it).
   */
  onIdleRestart(s: TcpState, now: number): void;
}

/** Larger than any window the connection can have; the RFC 5681 "arbitrarily high" ssthresh. */
const SSTHRESH_INFINITE = 0x7fffffff;
/** RFC 9406 section 4.3 constants (ms, samples, rounds). */
const HS_MIN_RTT_THRESH = 4;
const HS_MAX_RTT_THRESH = 16;
const HS_MIN_RTT_DIVISOR = 8;
const HS_N_RTT_SAMPLE = 8;
const HS_CSS_GROWTH_DIVISOR = 4;
const HS_CSS_ROUNDS = 5;

/** RFC 9438 §4.6 multiplicative decrease factor. */
const CUBIC_BETA = 0.7;
/** beta as a fraction, so ssthresh is computed in exact integer arithmetic. */
const CUBIC_BETA_NUM = 7;
const CUBIC_BETA_DEN = 10;
/** RFC 9438 §5: C in segments / s^3. */
const CUBIC_C = 0.4;
/** RFC 9438 §4.3: AIMD increase that matches Reno's average rate given beta 0.7. */
const CUBIC_ALPHA = (3 * (1 - CUBIC_BETA)) / (1 + CUBIC_BETA);

export function effectiveMss(s: TcpState): number {
  // 40 bytes of IPv4 and TCP headers, 60 over IPv6 (handles ≥ 2^32).
  let mss = Math.min(s.const.remoteMss, s.path.cached.mtu - (s.const.remoteIp >= 0x1_0000_0000 ? 60 : 40));
  if (s.const.tsEnabled) mss -= 12;
  return Math.max(mss, 64);
}

export function flightSize(s: TcpState): number {
  return (s.delegated.sndMax - s.delegated.sndUna) >>> 0;
}

/**
 * Without SACK, what Linux's packets_in_flight leaves out for the duplicate ACKs: a segment for
 * each (tcp_add_reno_sack's sacked_out), at most all but one segment of the flight
 * (tcp_limit_reno_sacked). PRR's pipe and the sender's window both take it from here: had the
 * sender left out dupAcks x MSS, a flight ending in a short segment let up to an MSS less a byte
 * go beyond what PRR counted.
 */
export function renoLeftOut(s: TcpState, mss: number): number {
  return Math.max(Math.min(s.delegated.dupAcks * mss, flightSize(s) - mss), 0);
}

function initialWindow(mss: number): number {
  return Math.min(10 * mss, Math.max(2 * mss, 14600));
}

/**
 * RFC 5681 slow start counting bytes (RFC 3465), and HyStart++ (RFC 9406) in the initial one;
 * returns true when the ACK was consumed by slow start. As Linux's tcp_slow_start, an ACK grows
 * cwnd by all it ACKs (no per-ACK limit L): with segmentation offload on both ends one ACK
 * answers a whole super-segment, often the whole window, and a limit per ACK makes slow start
 * after a timeout linear in the ACKs (10 % loss on a TAP: packets of 1-2 MSS and 38 timeouts per
 * 20 MB with L = 8, where Linux sends 45-MSS packets). Unlike Linux the ACK that crosses ssthresh
 * is taken whole (at most doubling the window, as any slow-start round may): stopping it at
 * ssthresh made sim-loss at 10 % 28.2 s (68 timeouts) against 20.4 s (56), median of 5 seeds.
 */
function slowStart(s: TcpState, acked: number, rttMs: number): boolean {
  const d = s.delegated;
  if (d.cwnd >= d.ssthresh) return false;
  // RFC 9406 4.3: only the initial slow start; later ones stop at the ssthresh a loss found.
  const divisor = d.ssthresh === SSTHRESH_INFINITE ? hystart(s, rttMs) : 1;
  if (divisor === 0) return false;
  d.cwnd += Math.floor(acked / divisor);
  s.soft.caBytesAcked = 0;
  return true;
}

/** HyStart++'s state at the start of a connection (RFC 9406 4.2). */
function hystartInit(s: TcpState): void {
  const soft = s.soft;
  soft.hsWindowEnd = s.delegated.sndMax;
  soft.hsLastRoundMinRtt = NO_RTT;
  soft.hsCurrentRoundMinRtt = NO_RTT;
  soft.hsRttSamples = 0;
  soft.hsInCss = false;
  soft.hsCssBaselineMinRtt = NO_RTT;
  soft.hsCssRounds = 0;
}

/**
 * RFC 9406 4.2: a round's minimum RTT that rose by more than an eighth of the last round's (4-16
 * ms) means a queue is building: grow by a quarter (Conservative Slow Start) for up to five
 * rounds, back to slow start if the RTT falls again, else on to congestion avoidance. Returns
 * the growth divisor for this ACK (1 slow start, 4 CSS), or 0 when slow start just ended.
 */
function hystart(s: TcpState, rttMs: number): number {
  const d = s.delegated;
  const soft = s.soft;
  if (seqGeq(d.sndUna, soft.hsWindowEnd)) {
    soft.hsWindowEnd = d.sndMax;
    soft.hsLastRoundMinRtt = soft.hsCurrentRoundMinRtt;
    soft.hsCurrentRoundMinRtt = NO_RTT;
    soft.hsRttSamples = 0;
    if (soft.hsInCss && ++soft.hsCssRounds >= HS_CSS_ROUNDS) {
      soft.hsInCss = false;
      d.ssthresh = d.cwnd;
      return 0;
    }
  }
  if (rttMs >= 0) {
    if (rttMs < soft.hsCurrentRoundMinRtt) soft.hsCurrentRoundMinRtt = rttMs;
    soft.hsRttSamples++;
  }
  if (
    soft.hsRttSamples >= HS_N_RTT_SAMPLE &&
    soft.hsCurrentRoundMinRtt !== NO_RTT &&
    soft.hsLastRoundMinRtt !== NO_RTT
  ) {
    if (!soft.hsInCss) {
      const thresh = Math.max(
        HS_MIN_RTT_THRESH,
        Math.min(soft.hsLastRoundMinRtt / HS_MIN_RTT_DIVISOR, HS_MAX_RTT_THRESH),
      );
      if (soft.hsCurrentRoundMinRtt >= soft.hsLastRoundMinRtt + thresh) {
        soft.hsInCss = true;
        soft.hsCssBaselineMinRtt = soft.hsCurrentRoundMinRtt;
        soft.hsCssRounds = 0;
      }
    } else if (soft.hsCurrentRoundMinRtt < soft.hsCssBaselineMinRtt) {
      // The RTT rise was a fluke: back to slow start.
      soft.hsInCss = false;
      soft.hsCssBaselineMinRtt = NO_RTT;
    }
  }
  return soft.hsInCss ? HS_CSS_GROWTH_DIVISOR : 1;
}

/**
 * Is the window what limits the sender (RFC 9438 5.8, RFC 7661; Linux tcp_is_cwnd_limited)? A
 * window the application or the receiver leaves unused says nothing about the path and must not
 * grow. In slow start the window may grow while the flight before this ACK is at least half of
 * it, as Linux allows; in congestion avoidance the flight must have filled it to within a segment.
 */
function cwndLimited(s: TcpState, acked: number, mss: number): boolean {
  const d = s.delegated;
  const flightBefore = flightSize(s) + acked;
  if (d.cwnd < d.ssthresh) return d.cwnd < 2 * flightBefore;
  return flightBefore + mss > d.cwnd;
}

function resetCubicEpoch(s: TcpState): void {
  s.soft.cubic.epochStart = -1;
  s.soft.cubic.cwndFrac = 0;
}

/**
 * A repeated RTO before anything was ACKed finds cwnd still at the loss window; RFC 5681 §3.1
 * lowers ssthresh only the first time a segment is resent by the timer, otherwise a string of
 * timeouts would ratchet ssthresh down on a window that was never in flight.
 */
function isRepeatedTimeout(s: TcpState, mss: number): boolean {
  return s.delegated.cwnd <= mss && s.delegated.ssthresh !== SSTHRESH_INFINITE;
}

/**
 * Reno's ssthresh as Linux's tcp_reno_ssthresh: half the window, at least two segments. RFC 5681
 * (eq. 4) halves the flight instead; Linux is the reference here, and the two part where the
 * application or the receiver held the flight under the window: eight segments out of a window of
 * ten gave four, where Linux has five, and the recovery then sent nothing on a duplicate that
 * Linux answers with a new segment (conformance flow.test, Reno on both).
 */
function renoSsthresh(s: TcpState): number {
  return Math.max(Math.floor(s.delegated.cwnd / 2), 2 * effectiveMss(s));
}

const newReno: CongestionControl = {
  init(s) {
    const mss = effectiveMss(s);
    s.delegated.cwnd = initialWindow(mss);
    s.delegated.ssthresh = SSTHRESH_INFINITE;
    s.soft.caBytesAcked = 0;
    resetCubicEpoch(s);
    hystartInit(s);
  },
  onAck(s, acked, rttMs) {
    if (acked <= 0 || s.soft.inRecovery) return;
    const d = s.delegated;
    const mss = effectiveMss(s);
    if (!cwndLimited(s, acked, mss)) return;
    if (slowStart(s, acked, rttMs)) return;
    // RFC 3465 §2.1: one SMSS per cwnd's worth of ACKed bytes gives exactly +1 MSS per RTT
    // whatever the ACK pattern, where RFC 5681 eq. 3 would undershoot with delayed ACKs.
    s.soft.caBytesAcked += acked;
    if (s.soft.caBytesAcked >= d.cwnd) {
      s.soft.caBytesAcked -= d.cwnd;
      d.cwnd += mss;
    }
  },
  onLossDetected(s) {
    const d = s.delegated;
    d.ssthresh = renoSsthresh(s);
    d.cwnd = d.ssthresh;
    s.soft.caBytesAcked = 0;
  },
  onRecoveryExit(s) {
    recoveryExit(s);
  },
  onTimeout(s) {
    const d = s.delegated;
    const mss = effectiveMss(s);
    // As CUBIC's below (Linux's tcp_enter_loss): a timeout in the middle of fast recovery is the
    // congestion event recovery already answered, and keeps its ssthresh.
    if (!isRepeatedTimeout(s, mss) && !s.soft.inRecovery) d.ssthresh = renoSsthresh(s);
    d.cwnd = mss;
    s.soft.caBytesAcked = 0;
  },
  onIdleRestart(s, now) {
    idleRestart(s, now);
  },
};

/**
 * RFC 6582 §3.2 step 3 option 1: what is actually in flight plus one segment, capped by ssthresh,
 * so the first ACKs after recovery cannot release a burst. Linux ends PRR with cwnd = ssthresh
 * (tcp_end_cwnd_reduction); measured here that doubles the timeouts at 10 % loss (sim-loss, median
 * of 3 seeds: 30.7 s and 58 timeouts against 15.2 s and 27), after recoveries that drained the
 * pipe; measured again over PRR (sim-loss, per-segment loss 10 %: 55.6 s and 146 timeouts against
 * 25.8 s and 65).
 */
function recoveryExit(s: TcpState): void {
  const d = s.delegated;
  const mss = effectiveMss(s);
  d.cwnd = Math.max(Math.min(d.ssthresh, Math.max(flightSize(s), mss) + mss), mss);
  s.soft.caBytesAcked = 0;
  resetCubicEpoch(s);
}

/**
 * RFC 2861 as Linux has it (tcp_cwnd_restart): the window halves for every RTO of idle time, down
 * to the initial window (RFC 5681 4.1's restart window), and ssthresh keeps three quarters of the
 * window it had, so slow start climbs back to where the path was. Cutting straight to the initial
 * window, as RFC 5681 alone reads, differed from Linux for a reader that shuts its window a little
 * longer than the RTO every buffer it drains: 1,000 such downloads on the TAP sent each reopened
 * window as ten segments, then twenty, and the rest waited for the reader's delayed ACK, which a
 * loss probe beat (a needless resend per buffer), where Linux's window had only halved.
 */
function idleRestart(s: TcpState, now: number): void {
  const d = s.delegated;
  const restart = Math.min(d.cwnd, initialWindow(effectiveMss(s)));
  if (!s.soft.inRecovery) d.ssthresh = Math.max(d.ssthresh, Math.floor(d.cwnd / 2) + Math.floor(d.cwnd / 4));
  let cwnd = d.cwnd;
  const rto = Math.max(d.rto, 1);
  for (let idle = now - d.lastSendAt - rto; idle > 0 && cwnd > restart; idle -= rto)
    cwnd = Math.floor(cwnd / 2);
  d.cwnd = Math.max(cwnd, restart);
  s.soft.caBytesAcked = 0;
  // The CUBIC curve is a function of time since the epoch began; idle time is not growth time.
  resetCubicEpoch(s);
}

/** RFC 9438 eq. 1 in bytes: W_cubic(t) = C * (t - K)^3 * mss + W_max, t and K in seconds. */
export function cubicWindow(t: number, k: number, wMax: number, mss: number): number {
  const x = t - k;
  return CUBIC_C * x * x * x * mss + wMax;
}

/** RFC 9438 eq. 2 in bytes: time for the curve to climb from cwndEpoch back to wMax. */
export function cubicK(wMax: number, cwndEpoch: number, mss: number): number {
  return wMax > cwndEpoch ? Math.cbrt((wMax - cwndEpoch) / (CUBIC_C * mss)) : 0;
}

/** RFC 9438 §4.6 / §4.7: remember where the loss happened and back off by beta. */
function cubicReduce(s: TcpState, mss: number): void {
  const d = s.delegated;
  const c = s.soft.cubic;
  c.cwndPrior = d.cwnd;
  c.afterRto = false;
  // Fast convergence: a flow that lost before reaching its previous W_max is probably sharing the
  // path with a newcomer, so it aims lower to release bandwidth.
  c.wMax = d.cwnd < c.wMax ? (d.cwnd * (1 + CUBIC_BETA)) / 2 : d.cwnd;
  d.ssthresh = Math.max(Math.floor((d.cwnd * CUBIC_BETA_NUM) / CUBIC_BETA_DEN), 2 * mss);
}

const cubic: CongestionControl = {
  init(s, now) {
    newReno.init(s, now);
    const c = s.soft.cubic;
    c.wMax = 0;
    c.k = 0;
    c.originPoint = 0;
    c.wEst = 0;
    c.cwndPrior = 0;
    c.afterRto = false;
  },
  onAck(s, acked, rttMs, now) {
    if (acked <= 0 || s.soft.inRecovery) return;
    const d = s.delegated;
    const mss = effectiveMss(s);
    const c = s.soft.cubic;
    if (!cwndLimited(s, acked, mss)) {
      // RFC 9438 5.8: t must not count time the application held the flow back, or the curve
      // would jump ahead when it is window-limited again (Linux shifts the epoch the same way).
      if (c.epochStart >= 0) c.epochStart = Math.min(now, c.epochStart + Math.max(now - d.lastRecvAt, 0));
      return;
    }
    if (slowStart(s, acked, rttMs)) return;
    if (c.epochStart < 0) {
      c.epochStart = now;
      c.cwndFrac = 0;
      if (c.afterRto) {
        // RFC 9438 4.8: the first congestion avoidance after a timeout starts its curve at the
        // window it has (K = 0, W_max = cwnd), not at the W_max from before the timeout.
        c.wMax = d.cwnd;
        c.originPoint = d.cwnd;
        c.k = 0;
      } else {
        // Above the old W_max (slow start overshot it, or no loss yet) the curve starts at its
        // inflection point at the current window: probing upward right away.
        c.originPoint = Math.max(c.wMax, d.cwnd);
        c.k = cubicK(c.originPoint, d.cwnd, mss);
      }
      c.wEst = d.cwnd;
    }
    const rtt = d.srtt > 0 ? d.srtt : Math.max(rttMs, 0);
    const t = (now - c.epochStart) / 1000;

    // RFC 9438 §4.3: a Reno flow with the same losses would be at W_est; never do worse than it.
    const alpha = c.wEst >= c.cwndPrior ? 1 : CUBIC_ALPHA;
    c.wEst += (alpha * mss * acked) / d.cwnd;
    if (cubicWindow(t, c.k, c.originPoint, mss) < c.wEst) {
      const est = Math.floor(c.wEst);
      if (est > d.cwnd) d.cwnd = est;
      c.cwndFrac = 0;
      return;
    }

    // RFC 9438 §4.2: aim at where the curve will be one RTT from now, bounded to 1.5x per RTT.
    let target = cubicWindow(t + rtt / 1000, c.k, c.originPoint, mss);
    if (target < d.cwnd) target = d.cwnd;
    else if (target > 1.5 * d.cwnd) target = 1.5 * d.cwnd;
    c.cwndFrac += ((target - d.cwnd) * acked) / d.cwnd;
    if (c.cwndFrac >= 1) {
      const whole = Math.floor(c.cwndFrac);
      d.cwnd += whole;
      c.cwndFrac -= whole;
    }
  },
  onLossDetected(s) {
    const mss = effectiveMss(s);
    cubicReduce(s, mss);
    s.delegated.cwnd = s.delegated.ssthresh;
    s.soft.caBytesAcked = 0;
    resetCubicEpoch(s);
  },
  onRecoveryExit(s) {
    recoveryExit(s);
  },
  onTimeout(s) {
    const mss = effectiveMss(s);
    // RFC 9438 §4.8: Reno's loss window, but ssthresh (and W_max) from CUBIC's own rules.
    // A timeout in the middle of fast recovery is the same congestion event recovery already
    // answered: reducing W_max and ssthresh again would count it twice.
    if (!isRepeatedTimeout(s, mss) && !s.soft.inRecovery) cubicReduce(s, mss);
    s.soft.cubic.afterRto = true;
    s.delegated.cwnd = mss;
    s.soft.caBytesAcked = 0;
    resetCubicEpoch(s);
  },
  onIdleRestart(s, now) {
    idleRestart(s, now);
  },
};

export function congestionControl(name: CongestionAlgorithm): CongestionControl {
  if (name === 'newreno') return newReno;
  if (name === 'cubic') return cubic;
  throw new InvalidArgumentError(`unknown congestion control algorithm: ${String(name)}`);
}
