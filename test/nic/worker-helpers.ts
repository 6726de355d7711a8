import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { TestContext } from 'node:test';
import type { ConnKey } from '../../src/nic/nic.ts';
import { NicGroupLink } from '../../src/nic/nic-group-link.ts';
import { WorkerNic } from '../../src/nic/worker-nic.ts';
import type { WorkerNicTestSeams } from '../../src/nic/worker-nic-options.ts';
import { OffloadManager, type OffloadPolicy } from '../../src/offload/offload-manager.ts';
import { type SimHost, SimNetwork } from '../../src/sim/sim-network.ts';
import { Host } from '../../src/socket/host.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { Stack } from '../../src/stack/stack.ts';
import type { TcpCached } from '../../src/state/tcp-state.ts';
import { formatMac } from '../../src/wire/addr.ts';
import { collect, randomBytes, sha256 } from '../helpers/streams.ts';

/**
 * How long a real-time rig's ping waits for its echo. Icmp's default (1 s) is a window: the request
 * and its ARP cross a worker both ways, and on a loaded machine (load 30 on 2 cores) a worker's
 * turn came late enough that the first ping of streamBothWays failed with "no echo reply within
 * 1000 ms". The ping only resolves neighbors before a test starts; waiting longer costs nothing
 * when the answer comes sooner.
 */
export const PING_MS = 30_000;

/**
 * A rig's workers' silence deadline (WorkerNic's deadAfterMs) unless a test sets its own. The
 * default (2 s; the start-up allowance before a first heartbeat is 60 s) is a window on a loaded machine: at load 20-30 on
 * 2 cores workers that were only starved of a core were declared dead ("NIC w.nic0 died
 * (heartbeat)") in tests about something else (closed-worker-nic, delivery-turns,
 * worker-crash-settings, ...). A killed worker is still dead at once (its thread's exit); a test of
 * the silence itself passes a short deadline.
 */
export const STARVED_NOT_DEAD_MS = 30_000;

/**
 * The bound of a case that starts its own WorkerNics and then does a few seconds of work with
 * them. Each worker thread loads its modules (~80, from one bundle since session 48: spawn.ts)
 * before its first heartbeat, and the product allows it 60 s for that (worker-nic.ts
 * START_ALLOWANCE_MS); through tsx, at load 75-92 (busy loops beside) the first beats came 8-15 s
 * after the start and whole cases of named-moves, reset-unread-worker and shared-transfer took 15-29 s, and
 * at load 50+ with the helpers' own runs beside, cases ran out bounds of 30 and 60 s, below the
 * start allowance alone. Sized for the allowance and three times the measured rest.
 */
export const WORKER_CASE_MS = 180_000;

/** IPv6 without the waits of duplicate address detection and router solicitation. */
export const QUIET_IPV6 = { dadTransmits: 0, routerSolicitations: 0 };

export interface WorkerHost {
  host: Host;
  stack: Stack;
  nics: WorkerNic[];
  offload: OffloadManager;
  close(): void;
}

/**
 * A host (10.0.0.1) on a real-time SimNetwork whose stack reaches the switch through `count`
 * WorkerNics, each on its own switch port, all with the host's one IP and MAC.
 */
export function addWorkerHost(
  net: SimNetwork,
  opts: {
    count?: number;
    policy?: Partial<OffloadPolicy>;
    ringCapacity?: number;
    placementRing?: number;
    sendPlacementRing?: number;
    heartbeatMs?: number;
    deadAfterMs?: number;
    capacity?: number;
    /** Dual stack: fd00::1/64 beside 10.0.0.1 (no DAD, no router solicitations). */
    ipv6?: boolean;
    /** Each NIC's test seams, by its index. */
    seams?: readonly WorkerNicTestSeams[];
  } = {},
): WorkerHost {
  const nics: WorkerNic[] = [];
  for (let i = 0; i < (opts.count ?? 2); i++) {
    const port = net.switch.addPort({ name: `w.nic${i}`, mtu: 1500 });
    nics.push(
      new WorkerNic(
        {
          id: `w.nic${i}`,
          link: port,
          seed: 100 + i,
          ringCapacity: opts.ringCapacity,
          placementRing: opts.placementRing,
          sendPlacementRing: opts.sendPlacementRing,
          capacity: opts.capacity,
          heartbeatMs: opts.heartbeatMs,
          deadAfterMs: opts.deadAfterMs ?? STARVED_NOT_DEAD_MS,
        },
        opts.seams?.[i],
      ),
    );
  }
  const v6 = opts.ipv6 === true;
  const stack = new Stack({
    clock: net.clock,
    random: net.random.fork(),
    name: 'w',
    ...(v6 ? { ipv6: QUIET_IPV6 } : {}),
  });
  stack.addInterface(new NicGroupLink(nics), {
    mac: formatMac(0x02000000aa01),
    ip: v6 ? ['10.0.0.1/24', 'fd00::1/64'] : '10.0.0.1/24',
    name: 'eth0',
  });
  const offload = new OffloadManager({ stack, nics, policy: opts.policy });
  const host = new Host(stack);
  return {
    host,
    stack,
    nics,
    offload,
    close() {
      offload.close();
      for (const n of nics) n.close();
      stack.close();
    },
  };
}

/**
 * A real-time SimNetwork with a worker host (10.0.0.1) of `nics` WorkerNics and `n` idle
 * connections from it to a peer's server (10.0.0.2:80), closed with the test.
 */
export async function idleConnections(
  t: TestContext,
  o: { seed: number; n: number; nics?: number; capacity: number },
): Promise<{ wh: WorkerHost; sockets: TcpSocket[] }> {
  const net = new SimNetwork({ seed: o.seed, virtualTime: false });
  const wh = addWorkerHost(net, { count: o.nics, capacity: o.capacity });
  t.after(() => {
    wh.close();
    net.close();
  });
  const peer = net.addHost({ ip: '10.0.0.2/24' });
  await Promise.all(wh.nics.map((x) => x.ready()));
  let held = 0;
  peer
    .createServer(() => {
      held++;
    })
    .listen(80);
  // No SYN may wait on its retransmission timer (1 s, then 3, 7, 15 s...), whose waits grow
  // faster than a slow machine's work: the peer's address is resolved first (SYNs sent before are
  // queued at the neighbour, and past its queue dropped: 84 of 600), and the connections open in
  // waves, each connected before the next (600 at once took longer than the SYN's first timeout
  // at load 11-16: 684 retransmissions, 20 s; a case of 600 was cancelled at 60 s at load 40).
  await wh.host.ping('10.0.0.2', PING_MS);
  const sockets: TcpSocket[] = [];
  for (let i = 0; i < o.n; i++) {
    const s = wh.host.connect({ port: 80, host: '10.0.0.2' });
    s.on('error', () => {});
    sockets.push(s);
    if (i % IDLE_WAVE === IDLE_WAVE - 1 || i === o.n - 1) await connected(sockets.slice(-IDLE_WAVE));
  }
  await peerHolds(() => held, o.n);
  t.after(() => {
    for (const s of sockets) s.destroy();
  });
  return { wh, sockets };
}

/** How long a peer's application may take to be handed every connection: a turn or two when quiet. */
const ACCEPTED_WITHIN_MS = 60_000;

/**
 * Until the peer's application holds `n` connections (`held()`), failing at ACCEPTED_WITHIN_MS
 * with how many it holds. A socket here connects at the SYN-ACK, but the peer hands its side to
 * its application only once the handshake's last ACK went out through a worker and back over the
 * switch. At load 46-49 all 30 of idleConnections' sockets had connected while the peer still
 * held 29-30 sides half-open, for 0.4-1.2 s: a case going on meanwhile saw the peer's resent
 * SYN-ACKs arrive during its moves, or ended sides the peer did not hold yet (slab-collect).
 */
export async function peerHolds(held: () => number, n: number): Promise<void> {
  const by = Date.now() + ACCEPTED_WITHIN_MS;
  while (held() < n && Date.now() < by) await new Promise((r) => setTimeout(r, 10));
  assert.equal(held(), n, `the peer's application holds every connection within ${ACCEPTED_WITHIN_MS} ms`);
}

/** Connections idleConnections opens at once: a wave's handshakes well within the SYN's 1 s. */
const IDLE_WAVE = 50;

/** Until every one of `sockets` that is connecting has connected. */
function connected(sockets: readonly TcpSocket[]): Promise<unknown> {
  return Promise.all(sockets.map((s) => (s.connecting ? once(s, 'connect') : null)));
}

export function socketKey(s: TcpSocket): ConnKey {
  const c = s.connection!;
  return { localIp: c.localIp, localPort: c.localPort, remoteIp: c.remoteIp, remotePort: c.remotePort };
}

/**
 * A real-time network with a WorkerHost (two WorkerNics unless `count`, started; addWorkerHost's
 * options) and a peer at 10.0.0.2 (and fd00::2 with `ipv6`, the host dual-stack too), its TCP
 * defaults `peerTcp` over the stack's.
 */
export async function workerSetup(
  seed: number,
  t: TestContext,
  opts: Parameters<typeof addWorkerHost>[1] & { peerTcp?: Partial<TcpCached> } = {},
) {
  const net = new SimNetwork({ seed, virtualTime: false });
  const wh = addWorkerHost(net, opts);
  // Even when an assertion fails: live workers would keep the test process running.
  t.after(() => {
    wh.close();
    net.close();
  });
  const peer = net.addHost({
    ip: '10.0.0.2/24',
    ...(opts.ipv6 === true ? { ip6: 'fd00::2/64', ipv6: QUIET_IPV6 } : {}),
    tcp: opts.peerTcp,
  });
  await Promise.all(wh.nics.map((n) => n.ready()));
  return { net, wh, peer };
}

/** A server on `peer`'s port 80 that keeps every connection it accepts (their errors ignored). */
export function keptServer(peer: SimHost): TcpSocket[] {
  const served: TcpSocket[] = [];
  peer
    .createServer((s) => {
      s.on('error', () => {});
      served.push(s);
    })
    .listen(80);
  return served;
}

/**
 * `n` connections from `host` to a server on `peer`, each streaming `bytes` both ways in chunks,
 * with a pause of `gapMs` (wall-clock) between chunks so that data is in flight for a while.
 * Readers are attached before any data can arrive. `done` resolves with the number of directions
 * whose bytes did not arrive intact. Each side ends once it has sent its bytes, so which closes
 * first is a race unless `closeFirst` (given the client's port) names the side that does: the other
 * then ends only after the first one's FIN.
 */
export type CloseFirst = (clientPort: number) => 'client' | 'peer';

export async function streamBothWays(
  host: Host,
  peer: SimHost,
  n: number,
  bytes: number,
  chunk: number,
  gapMs: Gap,
  /** The peer's address the connections go to (its IPv4 one is pinged first either way). */
  to = '10.0.0.2',
  closeFirst?: CloseFirst,
): Promise<{ sockets: TcpSocket[]; done: Promise<number>; errors: Error[] }> {
  await host.ping('10.0.0.2', PING_MS);
  const errors: Error[] = [];
  const server: Promise<boolean>[] = [];
  let accepted = 0;
  const allAccepted = new Promise<void>((resolve) => {
    peer
      // Half-open, as each direction finishes on its own time: a side that ends early must not end the other.
      .createServer({ allowHalfOpen: true }, (s) => {
        s.on('error', (e) => errors.push(e));
        const got = collect(s);
        got.catch(() => undefined);
        server.push(
          (async () => {
            const data = await got;
            const idx = data.readUInt32BE(0);
            return sha256(data.subarray(4)) === digestOf(1e6 + idx, bytes);
          })().catch(() => false),
        );
        // The index is not known until the first bytes arrive: answer with the data of the
        // connection's port instead, which the client knows too.
        const endAfter = closeFirst?.(s.remotePort!) === 'client' ? got : undefined;
        void pace(s, streamData(3e6 + s.remotePort!, bytes), chunk, gapMs, endAfter).catch(() => undefined);
        if (++accepted === n) resolve();
      })
      // Every connection may be half-open at once: a full backlog would answer with SYN cookies.
      .listen({ port: 5000, backlog: n + 16 });
  });
  const sockets: TcpSocket[] = [];
  const client: Promise<boolean>[] = [];
  const connected: Promise<unknown>[] = [];
  for (let i = 0; i < n; i++) {
    // Handshakes in waves: a thousand SYNs in one turn only measure the peer's SYN queue.
    if (i > 0 && i % CONNECT_WAVE === 0) await Promise.all(connected.splice(0));
    const s = host.connect({ port: 5000, host: to, allowHalfOpen: true });
    s.on('error', (e) => errors.push(e));
    sockets.push(s);
    const got = collect(s);
    // Errors are collected above and fail the check below; the promise must not go unhandled.
    got.catch(() => undefined);
    const up = once(s, 'connect');
    connected.push(up.catch(() => undefined));
    client.push(
      (async () => {
        await up;
        const head = Buffer.alloc(4);
        head.writeUInt32BE(i);
        s.write(head);
        const endAfter = closeFirst?.(s.localPort!) === 'peer' ? got : undefined;
        await pace(s, streamData(1e6 + i, bytes), chunk, gapMs, endAfter);
        return sha256(await got) === digestOf(3e6 + s.localPort!, bytes);
      })().catch(() => false),
    );
  }
  await allAccepted;
  const done = (async () => {
    const r = [...(await Promise.all(client)), ...(await Promise.all(server))];
    return r.filter((ok) => !ok).length;
  })();
  return { sockets, done, errors };
}

const CONNECT_WAVE = 100;

/*
 * Stream contents: each stream is a window of one random pool, at an offset of its own, so that
 * bytes of one connection turning up in another are caught; a thousand streams of their own
 * random bytes, generated twice (to send and to check), would keep the main thread busy for a
 * minute and stall every connection while it does.
 */
const POOL_SPREAD = 1 << 20;
let pool: Buffer = Buffer.alloc(0);
const digests = new Map<string, string>();

function streamData(key: number, bytes: number): Buffer {
  if (pool.length < bytes + POOL_SPREAD) pool = randomBytes(0x5eed, bytes + POOL_SPREAD);
  const off = (Math.imul(key, 0x9e3779b1) >>> 0) % POOL_SPREAD;
  return pool.subarray(off, off + bytes);
}

function digestOf(key: number, bytes: number): string {
  const id = `${key}/${bytes}`;
  let d = digests.get(id);
  if (d === undefined) digests.set(id, (d = sha256(streamData(key, bytes))));
  return d;
}

/**
 * Between chunks: wait `gap` ms, or until `gap(next, total)` resolves (a test that paces streams by
 * its own rounds), `next` being the offset of the chunk to be written after it in a stream of
 * `total` bytes.
 */
export type Gap = number | ((next: number, total: number) => Promise<void>);

/**
 * A `Gap` that holds every stream halfway until `open()`: what a test does meanwhile (a move, a
 * death, a recover) finds every connection open with bytes still to send both ways, however fast
 * or slow the machine, and the second half crosses whatever the test left them on.
 */
export function halfwayGate(): { gap: Gap; open(): void } {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  return {
    gap: async (next, total) => {
      if (2 * next >= total) await gate;
    },
    open,
  };
}

/** Writes `data` in chunks `gap` apart, then ends, once `endAfter` (if any) has settled. */
async function pace(
  s: TcpSocket,
  data: Buffer,
  chunk: number,
  gap: Gap,
  endAfter?: Promise<unknown>,
): Promise<void> {
  for (let off = 0; off < data.length; off += chunk) {
    if (!s.write(data.subarray(off, off + chunk))) await once(s, 'drain');
    if (typeof gap === 'function') await gap(off + chunk, data.length);
    else if (gap > 0) await new Promise((r) => setTimeout(r, gap));
  }
  await endAfter?.catch(() => undefined);
  s.end();
}

/** An Ethernet frame with an IPv4 TCP segment from ip:port to ip:port, its last four bytes `n`. */
export function tcpFrame(src: number, sport: number, dst: number, dport: number, n: number): Uint8Array {
  const f = new Uint8Array(14 + 20 + 20 + 4);
  const dv = new DataView(f.buffer);
  dv.setUint16(12, 0x0800);
  f[14] = 0x45;
  dv.setUint16(16, 20 + 20 + 4);
  f[22] = 64;
  f[23] = 6;
  dv.setUint32(26, src >>> 0);
  dv.setUint32(30, dst >>> 0);
  dv.setUint16(34, sport);
  dv.setUint16(36, dport);
  f[46] = 0x50;
  dv.setUint32(f.length - 4, n);
  return f;
}

/** Frames as one 'up' message of a worker, as its FrameBatcher makes it (a length, then the frame, each). */
export function upOf(frames: Uint8Array[]): { t: 'up'; buf: ArrayBuffer; len: number } {
  const buf = new ArrayBuffer(frames.reduce((n, f) => n + 4 + f.length, 0));
  const dv = new DataView(buf);
  let at = 0;
  for (const f of frames) {
    dv.setUint32(at, f.length);
    new Uint8Array(buf, at + 4, f.length).set(f);
    at += 4 + f.length;
  }
  return { t: 'up', buf, len: buf.byteLength };
}

/**
 * `len` bytes of `fill` from `s` to the echoing peer and back, checked byte for byte. Within 30 s
 * unless `withinMs`: the bytes cross a worker's thread both ways, and at load 30+ on 2 cores its
 * turns come seconds apart (salvage-corrupt passes 30 s to each of its echoes too).
 */
export async function echo(
  net: SimNetwork,
  s: TcpSocket,
  len: number,
  fill: number,
  withinMs = 30_000,
): Promise<void> {
  const want = Buffer.alloc(len, fill);
  const parts: Buffer[] = [];
  let got = 0;
  const on = (d: Uint8Array): void => {
    parts.push(Buffer.from(d));
    got += d.length;
  };
  s.on('data', on);
  s.write(want);
  const t0 = net.now();
  while (got < len && net.now() - t0 < withinMs) await net.sleep(5);
  s.off('data', on);
  assert.deepEqual(
    Buffer.concat(parts),
    want,
    `echo of ${len} bytes of ${fill} on port ${s.connection?.localPort}`,
  );
}

/** A worker's counter (0 when it has none). */
export async function nicCounter(n: WorkerNic, key: string): Promise<number> {
  return (await n.counters())[key] ?? 0;
}

/** Poll `n`'s counter until it equals `want` (or 20 s pass); its last value. */
export async function nicCounterIs(
  net: SimNetwork,
  n: WorkerNic,
  key: string,
  want: number,
): Promise<number> {
  const t0 = net.now();
  let v = await nicCounter(n, key);
  while (v !== want && net.now() - t0 < 20_000) {
    await net.sleep(10);
    v = await nicCounter(n, key);
  }
  return v;
}

/** Collect what each socket receives from now on; `check` waits (30 s at most) for `want` and compares. */
export function receiving(net: SimNetwork, sockets: readonly TcpSocket[]) {
  const got = sockets.map(() => [] as Buffer[]);
  const lengths = sockets.map(() => 0);
  sockets.forEach((s, i) => {
    s.on('data', (d: Uint8Array) => {
      got[i]!.push(Buffer.from(d));
      lengths[i]! += d.length;
    });
  });
  return async (want: readonly Buffer[], what: string): Promise<void> => {
    const t0 = net.now();
    while (lengths.some((n, i) => n < want[i]!.length) && net.now() - t0 < 30_000) await net.sleep(10);
    for (const s of sockets) s.removeAllListeners('data');
    for (const [i, s] of sockets.entries())
      assert.deepEqual(Buffer.concat(got[i]!), want[i]!, `${what} on port ${s.connection?.localPort}`);
  };
}

/** Each socket sends `base + i` bytes of its own value at once; each gets exactly them back. */
export async function echoAll(net: SimNetwork, sockets: readonly TcpSocket[], base: number): Promise<void> {
  const want = sockets.map((_, i) => Buffer.alloc(base + i, (base + i) & 0xff));
  const check = receiving(net, sockets);
  for (const [i, s] of sockets.entries()) s.write(want[i]!);
  await check(want, 'echo');
}
