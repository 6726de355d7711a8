import type { TcpState } from '../../state/tcp-state.ts';

/** Clock granularity G of RFC 6298 (our clock is in fractional ms). */
const CLOCK_GRANULARITY_MS = 1;
export const INITIAL_RTO_MS = 1000;

/**
 * Feed one RTT measurement into srtt/rttvar and recompute the RTO (RFC 6298 section 2). The floor
 * is cached.minRtoMs, 200 ms by default as Linux does rather than the RFC's 1 s: on today's paths
 * a 1 s floor turns every tail loss into a long stall, and the RFC itself allows a lower bound.
 */
export function rttSample(s: TcpState, rttMs: number, expectedSamples = 1): void {
  const d = s.delegated;
  const r = Math.max(rttMs, 0);
  if (d.srtt === 0) {
    d.srtt = r > 0 ? r : 0.001;
    d.rttvar = r / 2;
  } else {
    // RFC 7323 appendix G: with timestamps every ACK is a sample, so a round trip brings
    // ExpectedSamples of them; each weighs 1/ExpectedSamples in RTTVAR, or RTTVAR would forget a
    // round trip's variation within it and the RTO would sink towards SRTT (Linux keeps the
    // round trip's largest deviation instead, tcp_rtt_estimator's mdev_max). SRTT takes every
    // sample at 1/8 as Linux does, not the appendix's 1/(8 ExpectedSamples): averaged over that
    // many, a slow reader's window, half ACKed at once and half by its delayed ACK 40 ms later,
    // kept SRTT near 12 ms, and the loss probe at two SRTTs beat the delayed ACK every buffer
    // (100 downloads on the TAP: 1,445 needless resends against 506 at 1/8, Linux's sender 501).
    const n = Math.max(expectedSamples, 1);
    const beta = 0.25 / n;
    const alpha = 0.125;
    d.rttvar = (1 - beta) * d.rttvar + beta * Math.abs(d.srtt - r);
    d.srtt = (1 - alpha) * d.srtt + alpha * r;
  }
  d.rto = rtoFor(s);
}

/**
 * Take over an RTT estimate measured earlier on the same connection (a rebuild after its owner
 * died): RFC 6298's 1 s initial RTO is for a sender that has no measurement yet, and RFC 9040
 * lets a connection start from an estimate kept for the same path. Ignored when there is none.
 */
export function restoreRtt(s: TcpState, srttMs: number, rttvarMs: number): void {
  if (!(srttMs > 0) || !Number.isFinite(srttMs) || !(rttvarMs >= 0) || !Number.isFinite(rttvarMs)) return;
  const d = s.delegated;
  d.srtt = srttMs;
  d.rttvar = rttvarMs;
  d.rto = rtoFor(s);
}

function rtoFor(s: TcpState): number {
  const d = s.delegated;
  return clampRto(s, d.srtt + Math.max(CLOCK_GRANULARITY_MS, 4 * d.rttvar));
}

export function clampRto(s: TcpState, rto: number): number {
  const c = s.cached;
  return Math.min(Math.max(rto, c.minRtoMs), c.maxRtoMs);
}

/** The RTO with the current exponential backoff applied (RFC 6298 5.5). */
export function backedOffRto(s: TcpState): number {
  const d = s.delegated;
  return Math.min(d.rto * 2 ** Math.min(d.backoff, 30), s.cached.maxRtoMs);
}
