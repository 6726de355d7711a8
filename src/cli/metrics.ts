import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { OffloadManager, TransferReport } from '../offload/offload-manager.ts';
import type { FailoverRecord } from '../team/team.ts';
import type { StatusSnapshot } from './control.ts';

/** Where the admin endpoint reads a running stack: its status tree and its raw counter sets. */
export interface MetricsSource {
  snapshot(): Promise<StatusSnapshot>;
  /** Counter sets by name (the host stack, each NIC); a set may restart from zero (a NIC rebuilt). */
  counters(): Promise<Record<string, Record<string, number>>>;
  /** Clock time in ms, for the timeline. */
  now(): number;
  /** The host stack's TCP limits and what is used of them (absent: not exported). */
  limits?(): { connections: number; maxConnections: number; memBytes: number; maxMemBytes: number };
}

/** Counters of the TCP limits (tcp-mem.ts, the accept queue), exported by event. */
const LIMIT_EVENTS = new Set([
  'tcp.conn.limit',
  'tcp.mem.limit',
  'tcp.mem.pressure',
  'tcp.mem.shrunk',
  'tcp.mem.ooo-pruned',
  'tcp.listen.overflow',
]);

/** One entry of the failover and move timeline. */
export interface TimelineEntry {
  /** Clock ms since the model started. */
  at: number;
  kind: 'failover' | 'move';
  /** Failover: the failed NIC; move: the source ('host' or a NIC). */
  from: string;
  to: string[];
  connections: number;
  cause?: string;
  detectMs?: number;
  resumeMs?: number;
  /** Move: how long the batch took. */
  ms?: number;
  /** Move: offload (host → NIC), move (NIC → NIC), upload (NIC → host), recover (rebuild). */
  move?: string;
}

const TIMELINE_MAX = 500;
const REUSE_MS = 150;
const SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * Increases of values read from sources that can restart, so a total built from them never goes
 * backwards. A value seen for the first time counts whole (what its source counted so far). A
 * value seen lower than before is, for a counter set, a source that restarted from zero (a NIC
 * rebuilt): its value counts whole again; for a connection's byte count, a count that did not
 * travel with the connection to its new owner: it is re-based and counts from there.
 */
class Monotonic {
  private readonly last = new Map<string, number>();
  constructor(private readonly onDecrease: 'restart' | 'rebase') {}
  /** The increase of `key` since it was last seen. */
  delta(key: string, value: number): number {
    const prev = this.last.get(key);
    this.last.set(key, value);
    if (prev === undefined) return value;
    if (value < prev) return this.onDecrease === 'restart' ? value : 0;
    return value - prev;
  }
  forget(keep: (key: string) => boolean): void {
    for (const k of this.last.keys()) if (!keep(k)) this.last.delete(k);
  }
}

/**
 * The Prometheus view of a running stack (prom-client): gauges set from one status snapshot per
 * scrape, counters advanced from monotonic deltas, histograms fed by failovers and moves as they
 * happen. `refresh()` takes one snapshot and sets every series from it, so a scrape is consistent.
 */
export class ChimneyMetrics {
  readonly registry = new Registry();
  readonly timeline: TimelineEntry[] = [];
  private readonly t0: number;
  private readonly seen = new Monotonic('restart');
  private readonly connBytes = new Monotonic('rebase');
  private last: StatusSnapshot | null = null;
  private lastAt = 0;
  /** RSTs so far, as chimney_tcp_resets_total counts them (host stack and every NIC), for the live view. */
  readonly resetTotals = { in: 0, out: 0 };
  private pending: Promise<StatusSnapshot> | null = null;

  private readonly connections = new Gauge({
    name: 'chimney_connections',
    help: 'TCP connections by owner (host or NIC) and state',
    labelNames: ['owner', 'state'] as const,
    registers: [this.registry],
  });
  private readonly bytes = new Counter({
    name: 'chimney_tcp_bytes_total',
    help: 'TCP payload bytes, by direction (in: received, out: sent)',
    labelNames: ['direction'] as const,
    registers: [this.registry],
  });
  private readonly retransmits = new Counter({
    name: 'chimney_tcp_retransmits_total',
    help: 'TCP segments retransmitted, on the host stack and every NIC',
    registers: [this.registry],
  });
  private readonly resets = new Counter({
    name: 'chimney_tcp_resets_total',
    help: 'TCP RSTs, by direction (in: received, out: sent), on the host stack and every NIC',
    labelNames: ['direction'] as const,
    registers: [this.registry],
  });
  private readonly rtos = new Counter({
    name: 'chimney_tcp_rto_total',
    help: 'TCP retransmission timeouts',
    registers: [this.registry],
  });
  private readonly drops = new Counter({
    name: 'chimney_drops_total',
    help: 'frames and segments dropped, by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  private readonly limitEvents = new Counter({
    name: 'chimney_tcp_limit_events_total',
    help: 'TCP limit events: connections refused (conn.limit, mem.limit, listen.overflow), memory pressure entered, new connections shrunk, out-of-order queues pruned',
    labelNames: ['event'] as const,
    registers: [this.registry],
  });
  private readonly limitGauge = new Gauge({
    name: 'chimney_tcp_limit',
    help: "the host stack's TCP usage and limits: connections, max_connections, mem_bytes, max_mem_bytes",
    labelNames: ['what'] as const,
    registers: [this.registry],
  });
  private readonly failovers = new Counter({
    name: 'chimney_failovers_total',
    help: 'failovers, by failed NIC and cause',
    labelNames: ['nic', 'cause'] as const,
    registers: [this.registry],
  });
  private readonly detect = new Histogram({
    name: 'chimney_failover_detect_seconds',
    help: 'from the last evidence a NIC was fine to the detection of its failure',
    buckets: SECONDS,
    registers: [this.registry],
  });
  private readonly resume = new Histogram({
    name: 'chimney_failover_resume_seconds',
    help: 'from detection to the last connection running at its new owner',
    buckets: SECONDS,
    registers: [this.registry],
  });
  private readonly moves = new Counter({
    name: 'chimney_moves_total',
    help: 'connections moved, by kind (offload, move, upload, recover)',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  private readonly moveSeconds = new Histogram({
    name: 'chimney_move_seconds',
    help: 'duration of one batched transfer',
    labelNames: ['kind'] as const,
    buckets: SECONDS,
    registers: [this.registry],
  });
  private readonly nicUp = new Gauge({
    name: 'chimney_nic_up',
    help: '1 when the NIC is healthy and usable, else 0',
    labelNames: ['nic'] as const,
    registers: [this.registry],
  });
  private readonly nicLoad = new Gauge({
    name: 'chimney_nic_load',
    help: 'connections the NIC runs',
    labelNames: ['nic'] as const,
    registers: [this.registry],
  });
  /** Live-view updates not sent because a client was too slow to take them. */
  readonly updatesDropped = new Counter({
    name: 'chimney_admin_updates_dropped_total',
    help: 'live-view updates dropped for slow clients',
    registers: [this.registry],
  });

  constructor(
    private readonly source: MetricsSource,
    opts: { processMetrics?: boolean } = {},
  ) {
    this.t0 = source.now();
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  /** Record a failover as it happens (the team's 'failover' event). */
  failover(r: FailoverRecord): void {
    this.failovers.inc({ nic: r.nic, cause: r.cause });
    this.detect.observe(r.detectMs / 1000);
    this.resume.observe(r.resumeMs / 1000);
    this.push({
      at: r.at - this.t0,
      kind: 'failover',
      from: r.nic,
      to: r.to,
      connections: r.connections,
      cause: r.cause,
      detectMs: r.detectMs,
      resumeMs: r.resumeMs,
    });
  }

  /** Record one batched transfer. */
  move(kind: string, from: string, to: string, connections: number, ms: number): void {
    this.moves.inc({ kind }, connections);
    this.moveSeconds.observe({ kind }, ms / 1000);
    this.push({ at: this.source.now() - this.t0, kind: 'move', move: kind, from, to: [to], connections, ms });
  }

  private push(e: TimelineEntry): void {
    this.timeline.push(e);
    if (this.timeline.length > TIMELINE_MAX) this.timeline.splice(0, this.timeline.length - TIMELINE_MAX);
  }

  /**
   * A connection closed: its bytes since the last snapshot count now, since no later snapshot
   * will show it (a short transfer between two scrapes would otherwise never be counted).
   */
  connectionClosed(local: string, remote: string, bytesIn: number, bytesOut: number): void {
    const key = `${local}>${remote}`;
    this.bytes.inc({ direction: 'in' }, this.connBytes.delta(`${key}/in`, bytesIn));
    this.bytes.inc({ direction: 'out' }, this.connBytes.delta(`${key}/out`, bytesOut));
    this.connBytes.forget((k) => !k.startsWith(`${key}/`));
  }

  /** The latest snapshot (null before the first refresh). */
  get status(): StatusSnapshot | null {
    return this.last;
  }

  /**
   * Take one snapshot and set every series from it. Callers arriving together (a scrape, the live
   * view, /api/status) share one snapshot, and one younger than REUSE_MS is reused: the status
   * reporter's rates are deltas between snapshots, which two snapshots a millisecond apart ruin.
   */
  refresh(): Promise<StatusSnapshot> {
    if (this.pending) return this.pending;
    if (this.last && performance.now() - this.lastAt < REUSE_MS) return Promise.resolve(this.last);
    this.pending = this.take().finally(() => {
      this.pending = null;
      this.lastAt = performance.now();
    });
    return this.pending;
  }

  private async take(): Promise<StatusSnapshot> {
    const [snap, sets] = await Promise.all([this.source.snapshot(), this.source.counters()]);
    this.last = snap;
    this.connections.reset();
    for (const n of snap.trees)
      for (const p of n.paths)
        for (const c of p.conns) this.connections.inc({ owner: c.owner, state: c.state });
    const live = new Set<string>();
    for (const n of snap.trees)
      for (const p of n.paths)
        for (const c of p.conns) {
          // Keyed by the 4-tuple, not by owner: a connection that moves keeps its running byte count.
          const key = `${c.local}>${c.remote}`;
          live.add(`${key}/in`);
          live.add(`${key}/out`);
          this.bytes.inc({ direction: 'in' }, this.connBytes.delta(`${key}/in`, c.bytesIn));
          this.bytes.inc({ direction: 'out' }, this.connBytes.delta(`${key}/out`, c.bytesOut));
        }
    this.connBytes.forget((k) => live.has(k));
    for (const [set, counters] of Object.entries(sets)) {
      for (const [name, value] of Object.entries(counters)) {
        const d = this.seen.delta(`${set}/${name}`, value);
        if (d <= 0) continue;
        if (name === 'tcp.retransmits') this.retransmits.inc(d);
        else if (name === 'tcp.rto') this.rtos.inc(d);
        // From the counters, not the status rows: a RST that ends a connection removes its row
        // before any scrape could see the count, and the stateless ones have no row at all.
        else if (name === 'tcp.rst.in') {
          this.resets.inc({ direction: 'in' }, d);
          this.resetTotals.in += d;
        } else if (name === 'tcp.rst.out') {
          this.resets.inc({ direction: 'out' }, d);
          this.resetTotals.out += d;
        } else if (name.startsWith('drop.')) this.drops.inc({ reason: name.slice(5) }, d);
        else if (LIMIT_EVENTS.has(name)) this.limitEvents.inc({ event: name.slice(4) }, d);
      }
    }
    const lim = this.source.limits?.();
    if (lim) {
      this.limitGauge.set({ what: 'connections' }, lim.connections);
      this.limitGauge.set({ what: 'max_connections' }, lim.maxConnections);
      this.limitGauge.set({ what: 'mem_bytes' }, lim.memBytes);
      this.limitGauge.set({ what: 'max_mem_bytes' }, lim.maxMemBytes);
    }
    this.nicUp.reset();
    this.nicLoad.reset();
    for (const nic of snap.nics) {
      this.nicUp.set({ nic: nic.id }, nic.health === 'up' && nic.linkUp ? 1 : 0);
      this.nicLoad.set({ nic: nic.id }, nic.runningConns ?? nic.load);
    }
    return snap;
  }

  /** The Prometheus text of one consistent refresh. */
  async text(): Promise<string> {
    await this.refresh();
    return this.registry.metrics();
  }
}

/**
 * Time every batched transfer of an offload manager and report it to `metrics`. The manager has no
 * event for a finished batch, so its four transfer verbs are wrapped on this instance.
 */
export function watchMoves(manager: OffloadManager, metrics: ChimneyMetrics, now: () => number): void {
  const nameOf = (x: unknown): string =>
    typeof x === 'string' ? x : x !== null && typeof x === 'object' && 'id' in x ? String(x.id) : 'any';
  const wrap = (
    verb: 'offload' | 'move' | 'upload' | 'recover',
    ends: (args: unknown[]) => [string, string],
  ): void => {
    const m = manager as unknown as Record<string, (...a: unknown[]) => Promise<TransferReport>>;
    const orig = m[verb]!.bind(manager);
    m[verb] = async (...args: unknown[]) => {
      const t = now();
      const r = await orig(...args);
      if (r.moved.length > 0) {
        const [from, to] = ends(args);
        metrics.move(verb, from, to, r.moved.length, now() - t);
      }
      return r;
    };
  };
  wrap('offload', (a) => ['host', nameOf(a[1])]);
  wrap('move', (a) => [nameOf(a[1]), nameOf(a[2])]);
  wrap('upload', (a) => [nameOf(a[0]), 'host']);
  wrap('recover', (a) => [nameOf(a[0]), nameOf(a[1])]);
}
