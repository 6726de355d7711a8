import assert from 'node:assert/strict';
import { SeededRandom } from '../../src/core/random.ts';
import type { Link } from '../../src/link/link.ts';
import type { SwitchPort } from '../../src/link/memory-switch.ts';
import type { HealthOptions } from '../../src/team/health.ts';
import type { RestartOptions } from '../../src/team/team.ts';
import {
  buildTeamRig,
  type StreamStats,
  sendPattern,
  TEAM_IP,
  TEAM_IP6,
  type TeamRig,
  verifyIncoming,
} from './team-sim.ts';

export type FaultKind = 'cut' | 'restore' | 'blackhole' | 'unblackhole' | 'crash' | 'corrupt';
/** `at`: ms after the streams start. 'corrupt': the member's next terminate returns garbage. */
export type Fault = { at: number; kind: FaultKind; nic: number };

export interface ScenarioOptions {
  seed: number;
  nics: number;
  conns: number;
  bytes: number;
  faults?: Fault[];
  /** Random cuts, restores, blackholes and crashes drawn from the seed (ignored when `faults` is given). */
  chaos?: boolean;
  loss?: number;
  failback?: boolean;
  health?: HealthOptions;
  rateBps?: number;
  /** Give up after this much virtual time (ms). */
  limitMs?: number;
  /**
   * Every connection carries data both ways at once (default false: connections alternate, half
   * sending to the team and half from it, so both directions are loaded but each connection is
   * one-way). Full duplex under loss needs the TCP engine's pure ACKs to carry snd.max.
   */
  duplex?: boolean;
  /** The team and its peer on this 802.1Q VLAN (default untagged). */
  vlan?: number;
  /**
   * Mixed families: both ends get IPv6 addresses, the members probe the peer over both, and every
   * other connection runs over IPv6 (default false: IPv4 only).
   */
  mixed?: boolean;
  /** What the members probe (default: the peer's address of each family in use). */
  probeTargets?: readonly string[];
  /** False: every connection stays in the host stack (default true). */
  offload?: boolean;
  /** Offload every connection to this member (default: spread over the healthy ones). */
  offloadTo?: number;
  /**
   * The team server's listen backlog (default the stack's, 511): past it the connections open by
   * SYN cookie, which a segment reaching the listener later can open again.
   */
  backlog?: number;
  /** Connections the team moves in one batch (default the team's). */
  batchSize?: number;
  /** What member `i` sends and hears through instead of its bare switch port. */
  wrapPort?: (port: SwitchPort, i: number) => Link;
  /** A dead member's port goes to the host (TeamHostOptions.hostPortsAfterDeath). */
  hostPorts?: boolean;
  /** A crashed member is started again, with these settings (TeamHostOptions.restartMembers). */
  restart?: RestartOptions;
  /** The switch's MAC ageing time (default 300 s). */
  macAgeMs?: number;
  /** The receive port's learning frames (TeamOptions.learnIntervalMs). */
  learnIntervalMs?: number;
  /** TeamOptions.oneReceivePort. */
  oneReceivePort?: boolean;
  /** Called when the streams start (virtual ms), to schedule faults of the test's own. */
  onStart?: (rig: TeamRig, t0: number) => void;
  /** Called once the rig is built, before any connection opens (benchmarks hook events here). */
  onRig?: (rig: TeamRig) => void;
  /** Every delivery of data to an application: the stream's peer port, which end, virtual time. */
  onData?: (stream: number, at: 'peer' | 'team', now: number) => void;
}

export interface ScenarioResult {
  rig: TeamRig;
  stats: StreamStats;
  expected: number;
  /** Virtual time the streams started, and when the last finished. */
  startedAt: number;
  finishedAt: number;
  /** Bytes every stream whose connection opened should have delivered, together. */
  expectedBytes: number;
  /** Bytes the connections that never opened (at the peer) should have carried. */
  unopenedBytes: number;
  faults: Fault[];
}

/**
 * Random faults for a seed: cuts and blackholes on random members, each undone later, and at most
 * one crash (a crashed member never returns, so never the last live one).
 */
export function chaosFaults(seed: number, nics: number): Fault[] {
  const r = new SeededRandom(seed ^ 0x5eed);
  const out: Fault[] = [];
  const n = 1 + (r.u32() % 4);
  let t = 2 + r.float() * 20;
  let crashed = -1;
  for (let i = 0; i < n; i++) {
    const nic = r.u32() % nics;
    const x = r.float();
    if (x < 0.15 && crashed < 0 && nics > 1) {
      crashed = nic;
      out.push({ at: t, kind: 'crash', nic });
    } else if (nic !== crashed) {
      const hole = x < 0.4;
      out.push({ at: t, kind: hole ? 'blackhole' : 'cut', nic });
      const dur = 2 + r.float() * 200;
      out.push({ at: t + dur, kind: hole ? 'unblackhole' : 'restore', nic });
    }
    t += r.float() * 60;
  }
  return out.sort((a, b) => a.at - b.at);
}

/** The shell command that replays one seed of the chaos test. */
export function replayCommand(
  seed: number,
  o: { nics: number; conns: number; bytes: number; loss?: number; duplex?: boolean; mixed?: boolean },
): string {
  const loss = o.loss ? ` --loss ${o.loss}` : '';
  const duplex = o.duplex ? ' --duplex' : '';
  const mixed = o.mixed ? ' --mixed' : '';
  return `npx tsx scripts/chaos.ts --from ${seed} --seeds 1 --nics ${o.nics} --conns ${o.conns} --bytes ${o.bytes}${loss}${duplex}${mixed}`;
}

export async function runScenario(o: ScenarioOptions): Promise<ScenarioResult> {
  const rig = buildTeamRig({
    seed: o.seed,
    nics: o.nics,
    loss: o.loss,
    failback: o.failback,
    health: o.health,
    rateBps: o.rateBps,
    wrapPort: o.wrapPort,
    vlan: o.vlan,
    ip6: o.mixed,
    probeTargets: o.probeTargets,
    batchSize: o.batchSize,
    hostPorts: o.hostPorts,
    restart: o.restart,
    macAgeMs: o.macAgeMs,
    learnIntervalMs: o.learnIntervalMs,
    oneReceivePort: o.oneReceivePort,
  });
  const { net, host, peer } = rig;
  // Duplicate address detection (1 s) must be over on both ends before an IPv6 connect.
  if (o.mixed) await net.sleep(1500);
  o.onRig?.(rig);
  const stats: StreamStats = { ok: 0, errors: [], resets: 0, maxGapMs: 0, bytes: 0, streams: [] };
  const now = (): number => net.now();
  const expected = o.conns * 2;
  let finished = 0;
  let resolveAll!: () => void;
  const all = new Promise<void>((r) => {
    resolveAll = r;
  });
  let go!: () => void;
  const started = new Promise<void>((r) => {
    go = r;
  });
  const done = (): void => {
    if (++finished === expected) resolveAll();
  };
  let connected = 0;
  let resolveConnected!: () => void;
  const allConnected = new Promise<void>((r) => {
    resolveConnected = r;
  });
  // Both ends must be established before the offload: count accepted and connected.
  const up = (): void => {
    if (++connected === o.conns * 2) resolveConnected();
  };
  // Which way stream `s` (the peer's port) carries data: the peer's upload, the team's, or both.
  const up1 = (s: number): number => (o.duplex || s % 2 === 0 ? o.bytes : 0);
  const down1 = (s: number): number => (o.duplex || s % 2 === 1 ? o.bytes : 0);
  const server = host.createServer({ allowHalfOpen: true }, (sock) => {
    up();
    const s = sock.remotePort ?? 0;
    verifyIncoming(sock, s, up1(s), stats, done, now);
    if (o.onData) sock.on('data', () => o.onData!(s, 'team', now()));
    void started.then(() => sendPattern(sock, s + 100000, down1(s)));
  });
  server.listen({ port: 80, backlog: o.backlog });
  const faults = o.faults ?? (o.chaos ? chaosFaults(o.seed, o.nics) : []);
  const ports: number[] = [];
  for (let i = 0; i < o.conns; i++) {
    const host6 = o.mixed === true && i % 2 === 1;
    const sock = peer.connect({ port: 80, host: host6 ? TEAM_IP6 : TEAM_IP, allowHalfOpen: true });
    sock.once('connect', () => {
      up();
      const s = sock.localPort ?? 0;
      ports.push(s);
      verifyIncoming(sock, s + 100000, down1(s), stats, done, now);
      if (o.onData) sock.on('data', () => o.onData!(s, 'peer', now()));
      void started.then(() => sendPattern(sock, s, up1(s)));
    });
    sock.on('error', () => undefined);
  }
  await Promise.race([allConnected, net.sleep(5000)]);
  // Offload everything once established, spread over the healthy members.
  if (o.offload === false) {
    // The host stack runs them all, on whichever member carries its traffic.
  } else if (o.offloadTo !== undefined) await rig.manager.offload('all', rig.nics[o.offloadTo]);
  else await host.offloadAll();
  const t0 = net.now();
  go();
  o.onStart?.(rig, t0);
  for (const f of faults) {
    const t = net.clock.createTimer(() => {
      const p = rig.ports[f.nic]!;
      const nic = rig.nics[f.nic]!;
      if (f.kind === 'cut') p.cut();
      else if (f.kind === 'restore') p.restore();
      else if (f.kind === 'crash') nic.crash('chaos: crashed');
      else if (f.kind === 'corrupt') nic.faults.corruptTerminate = true;
      else p.blackhole(f.kind === 'blackhole');
    });
    t.armAt(t0 + f.at);
  }
  const limit = o.limitMs ?? 60_000;
  const timeout = net.sleep(limit).then(() => 'timeout' as const);
  const r = await Promise.race([all.then(() => 'ok' as const), timeout]);
  if (r === 'timeout') stats.errors.push(`${expected - finished} streams unfinished after ${limit} ms`);
  const finishedAt = net.now();
  await rig.team.settled();
  server.close();
  host.close();
  net.close();
  let expectedBytes = 0;
  for (const s of ports) expectedBytes += up1(s) + down1(s);
  // A connection the peer never saw connect carried nothing it should have: `bytes` each way it
  // was to carry (both in duplex, one otherwise).
  const unopenedBytes = (o.conns - ports.length) * o.bytes * (o.duplex ? 2 : 1);
  return { rig, stats, expected, startedAt: t0, finishedAt, faults, expectedBytes, unopenedBytes };
}

/**
 * Streams that a second socket delivered too: the host made a connection for a tuple it had
 * elsewhere (its first segments, delivered again from offset 0, match the pattern; and the
 * second socket's end counts toward `ok` and `expected` in place of the stream still open).
 */
export function secondSockets(r: ScenarioResult): number[] {
  const seen = new Set<string>();
  const twice: number[] = [];
  for (const st of r.stats.streams ?? []) {
    const k = `${st.from}/${st.id}`;
    if (seen.has(k)) twice.push(st.id);
    seen.add(k);
  }
  return twice;
}

/** Every stream delivered every byte, in order, without an error or a reset. */
export function assertClean(r: ScenarioResult): void {
  assert.deepEqual(r.stats.errors, []);
  assert.equal(r.stats.resets, 0);
  assert.deepEqual(secondSockets(r), [], 'no stream delivered by a second socket');
  assert.equal(r.stats.ok, r.expected, 'every stream delivered every byte, in order');
}

export interface ChaosOptions {
  nics?: number;
  conns?: number;
  bytes?: number;
  loss?: number;
  duplex?: boolean;
  /** Half the connections over IPv6, the members probing the peer over both families. */
  mixed?: boolean;
}

/** The scenario of one chaos seed; unspecified sizes are drawn from the seed (2-4 NICs, 100-250 connections). */
export function chaosScenario(seed: number, o: ChaosOptions = {}): ScenarioOptions {
  const r = new SeededRandom(seed ^ 0xc4a05);
  const nics = o.nics ?? 2 + (r.u32() % 3);
  const conns = o.conns ?? 100 + (r.u32() % 151);
  const bytes = o.bytes ?? 2000 + (r.u32() % 6000);
  const loss = o.loss ?? (r.float() < 0.3 ? 0.005 : 0);
  return {
    seed,
    nics,
    conns,
    bytes,
    loss,
    duplex: o.duplex,
    mixed: o.mixed,
    chaos: true,
    // A slower wire, so that every fault lands while data is still flowing.
    rateBps: 2e7,
    limitMs: 30_000,
  };
}

/** Run one chaos seed; null when every invariant held, else what broke and how to replay it. */
export async function checkChaosSeed(seed: number, o: ChaosOptions = {}): Promise<string | null> {
  const sc = chaosScenario(seed, o);
  let r: ScenarioResult;
  try {
    r = await runScenario(sc);
  } catch (e) {
    return `seed ${seed}: threw ${(e as Error).stack ?? String(e)}\n  replay: ${replayCommand(seed, sc)}`;
  }
  const bad: string[] = [];
  if (r.stats.resets > 0) bad.push(`${r.stats.resets} resets`);
  if (r.stats.ok !== r.expected) bad.push(`${r.stats.ok}/${r.expected} streams complete`);
  const twice = secondSockets(r);
  if (twice.length > 0) bad.push(`${twice.length} streams delivered by a second socket`);
  bad.push(...r.stats.errors.slice(0, 5));
  if (bad.length === 0) return null;
  const faults = r.faults.map((f) => `${f.kind}(nic${f.nic})@${f.at.toFixed(1)}`).join(' ');
  return `seed ${seed} (${sc.nics} NICs, ${sc.conns} conns × ${sc.bytes} B, loss ${sc.loss}${sc.mixed ? ', mixed IPv4/IPv6' : ''}; ${faults}): ${bad.join('; ')}\n  replay: ${replayCommand(seed, sc)}`;
}
