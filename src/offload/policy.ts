import type { Timer } from '../core/clock.ts';
import { InvalidArgumentError } from '../core/errors.ts';
import type { UploadReason } from '../nic/nic.ts';
import { isV6 } from '../stack/address-table.ts';
import type { Stack } from '../stack/stack.ts';
import type { TcpConnection } from '../stack/tcp/tcp-connection.ts';
import { isOffloadable } from '../state/validate.ts';

export interface OffloadPolicy {
  /**
   * 'manual': only explicit offload() calls; 'immediate': every offloadable connection as soon as
   * a scan sees it; 'after': once it has lived `minAgeMs` or moved `minBytes` (whichever first).
   */
  mode: 'manual' | 'immediate' | 'after';
  minAgeMs: number;
  minBytes: number;
  /** How often the policy looks for candidates (ms). */
  scanIntervalMs: number;
  /** Advisory upload reasons honoured (mandatory ones always are). */
  advisory: readonly UploadReason[];
}

export const DEFAULT_OFFLOAD_POLICY: Readonly<OffloadPolicy> = {
  mode: 'manual',
  minAgeMs: 1000,
  minBytes: 1 << 20,
  scanIntervalMs: 100,
  advisory: [],
};

/** The defaults with `p` over them, checked. */
export function makePolicy(p: Partial<OffloadPolicy> | undefined): OffloadPolicy {
  const out = { ...DEFAULT_OFFLOAD_POLICY, ...p };
  if (!['manual', 'immediate', 'after'].includes(out.mode))
    throw new InvalidArgumentError(`unknown offload policy mode ${out.mode}`);
  for (const k of ['minAgeMs', 'minBytes'] as const) {
    if (!Number.isFinite(out[k]) || out[k] < 0) throw new InvalidArgumentError(`policy ${k} must be >= 0`);
  }
  if (!(out.scanIntervalMs > 0)) throw new InvalidArgumentError('policy scanIntervalMs must be > 0');
  return out;
}

/**
 * Looks at the host's connections every `scanIntervalMs` and hands those the policy finds ready
 * to `offload`; the next scan waits for that offload to finish.
 */
export class PolicyScanner {
  private readonly firstSeen = new Map<TcpConnection, number>();
  private readonly timer: Timer | null;
  private stopped = false;

  constructor(
    private readonly stack: Stack,
    private readonly policy: OffloadPolicy,
    private readonly offload: (ready: TcpConnection[]) => Promise<unknown>,
    private readonly onError: (e: unknown) => void,
  ) {
    if (policy.mode === 'manual') {
      this.timer = null;
      return;
    }
    this.timer = stack.clock.createTimer(() => this.scan()).unref();
    this.timer.arm(policy.scanIntervalMs);
  }

  stop(): void {
    this.stopped = true;
    this.timer?.disarm();
  }

  private scan(): void {
    if (this.stopped) return;
    const p = this.policy;
    const now = this.stack.clock.now();
    const ready: TcpConnection[] = [];
    const seen = new Set<TcpConnection>();
    for (const conn of this.stack.tcp.connections()) {
      // IPv6 connections stay in the host (no codec for them yet); offload() would refuse them.
      if (!isOffloadable(conn.state) || conn.listener !== null || isV6(conn.state.const.remoteIp)) continue;
      seen.add(conn);
      let first = this.firstSeen.get(conn);
      if (first === undefined) {
        first = now;
        this.firstSeen.set(conn, now);
      }
      const bytes = conn.stats.bytesIn + conn.stats.bytesOut;
      if (p.mode === 'immediate' || now - first >= p.minAgeMs || bytes >= p.minBytes) ready.push(conn);
    }
    for (const c of this.firstSeen.keys()) if (!seen.has(c)) this.firstSeen.delete(c);
    const next = (): void => {
      if (!this.stopped) this.timer?.arm(p.scanIntervalMs);
    };
    if (ready.length === 0) {
      next();
      return;
    }
    this.offload(ready).then(next, (e) => {
      this.onError(e);
      next();
    });
  }
}
