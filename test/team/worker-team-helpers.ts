/**
 * Test rig: buildTeamHost's wiring with WorkerNics instead of LocalNics. Each member is a NIC on
 * its own worker thread, running on a ProbeTap that wraps its switch port; the host stack sits on
 * the team's link; an offload manager moves connections and the team drives it on failures.
 * WorkerNics need wall-clock time, so the SimNetwork runs on real time.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { TestContext } from 'node:test';
import { Counters } from '../../src/core/counters.ts';
import type { Link } from '../../src/link/link.ts';
import type { SwitchPort } from '../../src/link/memory-switch.ts';
import { type ConnKey, connKeyId, type Nic, type QueryResult } from '../../src/nic/nic.ts';
import type { FromWorker, WorkerOp } from '../../src/nic/worker/protocol.ts';
import { WorkerNic, type WorkerNicTestSeams } from '../../src/nic/worker-nic.ts';
import { OffloadManager } from '../../src/offload/offload-manager.ts';
import { type SimHost, SimNetwork } from '../../src/sim/sim-network.ts';
import { Host } from '../../src/socket/host.ts';
import type { ServerHost } from '../../src/socket/tcp-server.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { Stack } from '../../src/stack/stack.ts';
import { type TcpCached, TcpStateId } from '../../src/state/tcp-state.ts';
import type { HealthOptions } from '../../src/team/health.ts';
import { ManagerOffloader } from '../../src/team/manager-offloader.ts';
import { ProbeTap } from '../../src/team/probe-tap.ts';
import { type FailoverRecord, Team } from '../../src/team/team.ts';
import { formatMac, parseIpv4 } from '../../src/wire/addr.ts';
import { type CloseFirst, type Gap, STARVED_NOT_DEAD_MS, streamBothWays } from '../nic/worker-helpers.ts';

export const TEAM_IP = '10.0.0.1';
export const PEER_IP = '10.0.0.2';
export const TEAM_IP6 = 'fd00::1';
export const PEER_IP6 = 'fd00::2';
/** No DAD wait and no router solicitations: these rigs run on wall-clock time. */
const IPV6 = { dadTransmits: 0, routerSolicitations: 0 };
const TEAM_MAC = 0x02000000aa01;

export interface WorkerTeamRig {
  net: SimNetwork;
  team: Team;
  nics: WorkerNic[];
  taps: ProbeTap[];
  ports: SwitchPort[];
  stack: Stack;
  host: Host;
  manager: OffloadManager;
  peer: SimHost;
  counters: Counters;
  /** Stops the team, the workers, the stacks and the network; safe to call twice. */
  close(): void;
}

export interface WorkerTeamOptions {
  seed: number;
  /** Members (default 2). */
  nics?: number;
  /** Team health; probes go to the peer unless `probeTargets` says otherwise. */
  health?: HealthOptions;
  heartbeatMs?: number;
  /**
   * Each worker's silence deadline, or member i's at [i] (default STARVED_NOT_DEAD_MS: set it to
   * test the silence, on the member whose silence is tested only: a busy one at load is silent too).
   */
  deadAfterMs?: number | readonly number[];
  /** Connections per failover transfer (Team default 512). */
  batchSize?: number;
  /** Capture the peer's frames to this pcap file (debugging). */
  pcap?: string;
  /** Both ends get IPv6 addresses too (TEAM_IP6, PEER_IP6 on fd00::/64). */
  ip6?: boolean;
  /** TCP settings of both ends' connections (a state's cached part travels to the members). */
  tcp?: Partial<TcpCached>;
  /** Test seams of every member. */
  seams?: WorkerNicTestSeams;
  /** The link member i's worker runs on, over its port (default: the port's ProbeTap itself). */
  wrapLink?: (tap: Link, i: number) => Link;
  /** The host's ISN secret, given to the stack and every member (absent: each draws its own). */
  isnSecret?: Uint8Array;
  /** TeamOptions.oneReceivePort. */
  oneReceivePort?: boolean;
  /** Every member's WorkerNicOptions.sendPlacementRing (serve's). */
  sendPlacementRing?: number;
}

export function buildWorkerTeam(opts: WorkerTeamOptions): WorkerTeamRig {
  const net = new SimNetwork({ seed: opts.seed, virtualTime: false, pcap: opts.pcap });
  const peer = net.addHost({
    ip: `${PEER_IP}/24`,
    name: 'peer',
    tcp: opts.tcp,
    ...(opts.ip6 ? { ip6: `${PEER_IP6}/64`, ipv6: IPV6 } : {}),
  });
  const counters = new Counters();
  const team = new Team({
    clock: net.clock,
    mac: TEAM_MAC,
    ip: parseIpv4(TEAM_IP),
    health: { probeTargets: [parseIpv4(PEER_IP)], holdMs: 100, ...opts.health },
    batchSize: opts.batchSize,
    counters,
    oneReceivePort: opts.oneReceivePort,
  });
  const nics: WorkerNic[] = [];
  const taps: ProbeTap[] = [];
  const ports: SwitchPort[] = [];
  for (let i = 0; i < (opts.nics ?? 2); i++) {
    const port = net.switch.addPort({ name: `wt.nic${i}`, mtu: 1500 });
    // A probe MAC of its own per port, as buildTeamHost does: probing never moves the team MAC.
    const tap = new ProbeTap(port, 0x020000bb0000 + (TEAM_MAC & 0xff) * 256 + i + 1, counters);
    const nic = new WorkerNic(
      {
        id: `wt.nic${i}`,
        link: opts.wrapLink?.(tap, i) ?? tap,
        seed: 200 + i,
        isnSecret: opts.isnSecret,
        sendPlacementRing: opts.sendPlacementRing,
        heartbeatMs: opts.heartbeatMs,
        // A starved worker is not a dead one: see STARVED_NOT_DEAD_MS.
        deadAfterMs:
          (typeof opts.deadAfterMs === 'number' ? opts.deadAfterMs : opts.deadAfterMs?.[i]) ??
          STARVED_NOT_DEAD_MS,
      },
      opts.seams,
    );
    team.add({ nic, tap });
    nics.push(nic);
    taps.push(tap);
    ports.push(port);
  }
  const stack = new Stack({
    clock: net.clock,
    random: net.random.fork(),
    isnSecret: opts.isnSecret,
    name: 'wt',
    tcp: opts.tcp,
    ...(opts.ip6 ? { ipv6: IPV6 } : {}),
  });
  stack.addInterface(team.link, {
    mac: formatMac(TEAM_MAC),
    ip: opts.ip6 ? [`${TEAM_IP}/24`, `${TEAM_IP6}/64`] : `${TEAM_IP}/24`,
    name: 'wt0',
  });
  const manager = new OffloadManager({ stack, nics });
  manager.eligible = (nic) => team.isUsable(nic) && nic.load < nic.capacity;
  team.setOffloader(new ManagerOffloader(manager));
  const host = new Host(stack);
  let closed = false;
  return {
    net,
    team,
    nics,
    taps,
    ports,
    stack,
    host,
    manager,
    peer,
    counters,
    close() {
      if (closed) return;
      closed = true;
      team.close();
      manager.close();
      for (const n of nics) n.close();
      stack.close();
      net.close();
    },
  };
}

/** The team's member that runs each socket's connection now ('host' or null otherwise). */
export function ownersOf(rig: WorkerTeamRig, sockets: readonly TcpSocket[]): (Nic | 'host' | null)[] {
  return sockets.map((s) => {
    const c = s.connection;
    if (!c) return null;
    return rig.manager.ownerOf({
      localIp: c.localIp,
      localPort: c.localPort,
      remoteIp: c.remoteIp,
      remotePort: c.remotePort,
    });
  });
}

// Real threads cannot share virtual time: these run on wall-clock time, with every connection
// streaming both ways for a second or two so that each fault lands mid-stream.
export const CONNS = 50;
export const BYTES = 300_000;
export const CHUNK = 3000;
export const GAP_MS = 10;

export function keyOf(s: TcpSocket): ConnKey {
  const c = s.connection!;
  return { localIp: c.localIp, localPort: c.localPort, remoteIp: c.remoteIp, remotePort: c.remotePort };
}

/** The TCP state `nic` holds for `s`'s connection, or null once it holds none. */
export async function stateOn(nic: Nic, s: TcpSocket): Promise<number | null> {
  const k = keyOf(s);
  const q = (await nic.query()).find(
    (x) =>
      x.key.localPort === k.localPort &&
      x.key.remotePort === k.remotePort &&
      x.key.localIp === k.localIp &&
      x.key.remoteIp === k.remoteIp,
  );
  return q === undefined ? null : q.state;
}

/**
 * A server on the rig's host whose SYNs the workers answer where they can (acceptAtNic): every
 * socket it accepts is pushed on the list returned, after `onSocket` has seen it.
 */
export function serveAtNics(
  rig: WorkerTeamRig,
  listen: { port: number; backlog?: number },
  onSocket?: (s: TcpSocket) => void,
): TcpSocket[] {
  rig.manager.acceptAtNic = true;
  // The rig's host is a plain Host: give it TeamHost's hook.
  (rig.host as ServerHost).listening = (l) => rig.manager.listenAtNics(l);
  const accepted: TcpSocket[] = [];
  rig.host
    .createServer((s: TcpSocket) => {
      accepted.push(s);
      s.on('error', () => {});
      onSocket?.(s);
    })
    .listen(listen);
  return accepted;
}

export async function setup(t: TestContext, opts: WorkerTeamOptions): Promise<WorkerTeamRig> {
  const rig = buildWorkerTeam(opts);
  // Even when an assertion fails: live workers would keep the test process running.
  t.after(() => rig.close());
  await Promise.all(rig.nics.map((n) => n.ready()));
  return rig;
}

/**
 * Start the streams to the peer's address `to` and offload them: `split[i]` connections to member i
 * (`closeFirst`, `gap`: see streamBothWays).
 */
export async function startOffloaded(
  rig: WorkerTeamRig,
  split: number[],
  to = PEER_IP,
  closeFirst?: CloseFirst,
  gap: Gap = GAP_MS,
) {
  const n = split.reduce((a, b) => a + b, 0);
  const st = await streamBothWays(rig.host, rig.peer, n, BYTES, CHUNK, gap, to, closeFirst);
  const keys = st.sockets.map(keyOf);
  let at = 0;
  for (let i = 0; i < split.length; i++) {
    const part = keys.slice(at, at + split[i]!);
    at += split[i]!;
    if (part.length === 0) continue;
    const r = await rig.manager.offload(part, rig.nics[i]!);
    assert.equal(
      r.moved.length,
      part.length,
      `offloaded to ${rig.nics[i]!.id}: ${JSON.stringify(r.refused)}`,
    );
  }
  return { st, keys };
}

/**
 * `p`, or a failure naming the step that hung and what the team looked like then: a step that
 * never ends would otherwise surface only as the test's timeout, with nothing to go on.
 */
export async function within<T>(p: Promise<T>, ms: number, what: string, rig: WorkerTeamRig): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      void stuck(rig).then((conns) => {
        const nics = rig.nics.map((n) => ({ id: n.id, death: n.death, load: n.load, linkUp: n.linkUp }));
        const state = { failovers: rig.team.failovers, nics, conns };
        reject(new Error(`${what}: not within ${ms} ms; ${JSON.stringify(state)}`));
      });
    }, ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Connections still open at the peer, each with the member's view of it: what a stall looks like. */
async function stuck(rig: WorkerTeamRig): Promise<unknown[]> {
  const out: unknown[] = [];
  const live = rig.nics.filter((n) => n.death === null);
  const views = (await Promise.all(live.map((n) => n.query().catch(() => [])))).flat();
  for (const c of rig.peer.stack.tcp.connections()) {
    if (c.state.delegated.state === TcpStateId.CLOSED || c.state.delegated.state === TcpStateId.TIME_WAIT)
      continue;
    const nic = views.find((v) => v.key.localPort === c.remotePort && v.key.remotePort === c.localPort);
    const t = c.state.delegated;
    out.push({
      port: c.remotePort,
      peer: { state: t.state, sndUna: t.sndUna, sndNxt: t.sndNxt, rcvNxt: t.rcvNxt, sndWnd: t.sndWnd },
      peerQueued: { send: c.writableLength, recv: c.readableLength },
      nic: nic ?? 'not on a member',
    });
    if (out.length >= 5) break;
  }
  return out;
}

/**
 * Polls `probe` until `done` holds for what it returned, `tries` times at most `everyMs` apart, and
 * returns the last value either way for the caller to assert on. Tests wait for the state they
 * need, not for a time that stands for it: a time long enough on an idle machine is too short under
 * load.
 */
export async function until<T>(
  rig: WorkerTeamRig,
  probe: () => Promise<T>,
  done: (v: T) => boolean,
  { tries = 500, everyMs = 20 }: { tries?: number; everyMs?: number } = {},
): Promise<T> {
  let v = await probe();
  for (let i = 1; i < tries && !done(v); i++) {
    await rig.net.sleep(everyMs);
    v = await probe();
  }
  return v;
}

/**
 * Waits until every connection each of `nics` runs has carried `bytes` more in each direction than
 * when called, and asserts it did: a fault injected next lands mid-stream, on connections that
 * flow on their NIC, however slowly the machine runs (a fixed sleep stood for this and did not say
 * whether it held).
 */
export async function flowing(
  rig: WorkerTeamRig,
  nics: readonly WorkerNic[],
  bytes = 3 * CHUNK,
): Promise<void> {
  await Promise.all(
    nics.map(async (nic) => {
      const base = new Map((await nic.query()).map((q) => [connKeyId(q.key), q]));
      const behind = (qs: QueryResult[]): string[] =>
        qs
          .filter((q) => {
            const b = base.get(connKeyId(q.key));
            return b === undefined || q.bytesIn - b.bytesIn < bytes || q.bytesOut - b.bytesOut < bytes;
          })
          .map((q) => connKeyId(q.key));
      const last = await until(
        rig,
        () => nic.query(),
        (qs) => behind(qs).length === 0,
      );
      assert.ok(base.size > 0, `${nic.id} runs connections`);
      assert.deepEqual(
        behind(last),
        [],
        `every connection on ${nic.id} carried ${bytes} more bytes each way`,
      );
    }),
  );
}

export async function nextFailover(rig: WorkerTeamRig): Promise<FailoverRecord> {
  const [rec] = (await once(rig.team, 'failover')) as [FailoverRecord];
  await rig.team.settled();
  return rec;
}

/**
 * Every byte arrived intact both ways, no application saw an error, and no connection was reset:
 * the peer never received a RST, and neither the host stack nor any live member sent one.
 *
 * The peer's own RSTs are not counted against the team: with one MAC on several ports the switch
 * delivers to whichever port sent last, so some segments reach their NIC through the other member
 * and the host (a detour that reorders them). A connection can then see its final ACK twice, and
 * the peer, already CLOSED after LAST_ACK, answers the duplicate with a RST that hits nothing.
 */
export async function assertClean(
  rig: WorkerTeamRig,
  st: Awaited<ReturnType<typeof startOffloaded>>['st'],
): Promise<void> {
  assert.equal(await st.done, 0, 'every byte arrives intact in both directions (SHA-256)');
  assert.deepEqual(st.errors.map(String), [], 'no socket errors');
  const get = (c: Record<string, number>, k: string): number => c[k] ?? 0;
  const host = rig.stack.counters.snapshot();
  const peer = rig.peer.stack.counters.snapshot();
  // One RST is legitimate, as it is from Linux: a connection rebuilt in the host that ends in
  // LAST_ACK, whose tail loss probe resent the FIN before the peer's ACK came back, closes on the
  // first ACK and answers the peer's second (for the probe) with a RST, which the peer, in
  // TIME_WAIT, takes without harm. Nothing else is excused: every RST the host sent answered a bare
  // ACK for a tuple it no longer held, and every RST the peer received found it in TIME_WAIT.
  const strayAcks = get(host, 'tcp.rst.out.stray-ack');
  assert.equal(get(host, 'tcp.rst.out') - strayAcks, 0, 'the host stack sent no RST but to stray ACKs');
  assert.equal(
    get(peer, 'tcp.rst.in') - get(peer, 'tcp.rst.in.time-wait'),
    0,
    'the peer received no RST outside TIME_WAIT',
  );
  for (const n of rig.nics) {
    if (n.death !== null) continue;
    assert.equal(get(await n.counters(), 'tcp.rst.out'), 0, `${n.id} sent no RST`);
  }
}

/**
 * `nic`'s next successful answer to `op` goes to `act` instead of the host; `deliver` hands a
 * message (that one, changed or not) on to the host.
 */
export function onNextReply(
  nic: WorkerNic,
  op: WorkerOp,
  act: (m: FromWorker, deliver: (m: unknown) => void) => void,
): void {
  const w = nic.worker;
  const listeners = w.listeners('message') as ((m: unknown) => void)[];
  w.removeAllListeners('message');
  const deliver = (m: unknown): void => {
    for (const l of listeners) l(m);
  };
  let taken = false;
  w.on('message', (m: FromWorker) => {
    if (!taken && m.t === 'res' && m.ok && m.op === op) {
      taken = true;
      act(m, deliver);
      return;
    }
    deliver(m);
  });
}

/**
 * Connections a worker prodded, by its counters: built and prodded (`tcp.adopt.prodded`), or,
 * quiet, prodded by an ACK from the record and left unbuilt (`nic.lazy.acked`).
 */
export function prodded(c: Readonly<Record<string, number>>): number {
  return (c['tcp.adopt.prodded'] ?? 0) + (c['nic.lazy.acked'] ?? 0);
}
