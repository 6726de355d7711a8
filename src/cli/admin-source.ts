import type { Nic, QueryResult } from '../nic/nic.ts';
import type { Stack } from '../stack/stack.ts';
import type { FailoverRecord } from '../team/team.ts';
import type { TeamHost } from '../team/team-host.ts';
import { formatEndpoint } from './addresses.ts';
import type { FailoverStatus, NicStatus } from './control.ts';
import { ChimneyMetrics, type MetricsSource, watchMoves } from './metrics.ts';
import type { StatusReporter } from './status.ts';

/** The status extras of a team host: owners, NIC health, failovers, what each NIC runs. */
export function teamStatusExtras(
  th: TeamHost,
  kind: string,
): Required<
  Pick<
    ConstructorParameters<typeof StatusReporter>[2] & object,
    'ownerOf' | 'nics' | 'failovers' | 'offloaded'
  >
> {
  const now = (): number => th.stack.clock.now();
  return {
    ownerOf: (a, b, c, d) => th.manager.nicOf(a, b, c, d)?.id ?? 'host',
    nics: (): NicStatus[] =>
      th.health().map((h) => ({
        id: h.nic,
        kind,
        health: h.health.state,
        linkUp: h.health.carrier,
        reachable: h.health.reachable,
        carriesHost: h.carriesHost,
        load: h.load,
        runningConns: h.runningConns,
        capacity: h.capacity,
        failures: h.health.failures,
        restarts: h.restarts,
        lastFailure: h.health.lastFailure && {
          cause: h.health.lastFailure.cause,
          detail: h.health.lastFailure.detail,
          agoMs: now() - h.health.lastFailure.at,
        },
      })),
    failovers: (): FailoverStatus[] =>
      th.failovers.map((f) => ({
        nic: f.nic,
        cause: f.cause,
        detectMs: f.detectMs,
        resumeMs: f.resumeMs,
        connections: f.connections,
        to: f.to,
        lost: f.lost,
        agoMs: now() - f.at,
      })),
    offloaded: async () => {
      const out: { owner: string; conns: QueryResult[] }[] = [];
      for (const nic of th.nics) {
        if (nic.runningConns === 0) continue;
        try {
          out.push({ owner: nic.id, conns: await nic.query(th.manager.keysOn(nic)) });
        } catch {
          // A NIC that died between the two calls: its connections are being rebuilt.
        }
      }
      return out;
    },
  };
}

/** A NIC's counters, once per set: NICs built on one shared Counters would be counted twice. */
async function nicCounters(nic: Nic, seen: Set<unknown>): Promise<Record<string, number>> {
  try {
    const { source, values } = await nic.counterSnapshot();
    if (seen.has(source)) return {};
    seen.add(source);
    return values;
  } catch {
    // A dead NIC has no counters; the totals keep what was already read from it.
  }
  return {};
}

/**
 * Every counter set by name, raw: the host stack's, the team's and each NIC's (`nic:<id>`; a dead
 * NIC's is empty). For the admin endpoint's metrics and serve's `counters` control request.
 */
export async function counterSets(
  stack: Stack,
  team?: TeamHost,
): Promise<Record<string, Record<string, number>>> {
  const sets: Record<string, Record<string, number>> = { host: stack.counters.snapshot() };
  if (team) {
    if (team.counters !== stack.counters) sets.team = team.counters.snapshot();
    const seen = new Set<unknown>([stack.counters, team.counters]);
    for (const nic of team.nics) sets[`nic:${nic.id}`] = await nicCounters(nic, seen);
  }
  return sets;
}

/**
 * Metrics for a running stack, and for its team when it has one: the team's failovers and the
 * offload manager's batches are recorded as they happen.
 */
export function stackMetrics(
  stack: Stack,
  reporter: StatusReporter,
  team?: TeamHost,
  opts: { processMetrics?: boolean } = {},
): ChimneyMetrics {
  const source: MetricsSource = {
    snapshot: () => reporter.snapshot(),
    now: () => stack.clock.now(),
    limits: () => {
      const t = stack.tcp;
      return {
        connections: t.liveCount,
        maxConnections: t.budget.maxConnections,
        memBytes: t.budget.used,
        maxMemBytes: t.budget.memBytes,
      };
    },
    counters: () => counterSets(stack, team),
  };
  const metrics = new ChimneyMetrics(source, opts);
  // Connections the host stack closes report their last bytes (one that closes on a NIC is
  // counted up to the last snapshot that saw it).
  const previous = stack.tcp.onClosed;
  stack.tcp.onClosed = (conn) => {
    previous?.(conn);
    const c = conn.state.const;
    metrics.connectionClosed(
      // An IPv6 handle was released just before this call; its slot keeps the bytes until reused.
      formatEndpoint(stack.addrs, c.localIp, c.localPort),
      formatEndpoint(stack.addrs, c.remoteIp, c.remotePort),
      conn.stats.bytesIn,
      conn.stats.bytesOut,
    );
  };
  if (team) {
    team.team.on('failover', (r: FailoverRecord) => metrics.failover(r));
    watchMoves(team.manager, metrics, () => stack.clock.now());
  }
  return metrics;
}
