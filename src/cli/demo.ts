import { createHash } from 'node:crypto';
import { SeededRandom } from '../core/random.ts';
import type { Impairment } from '../link/impairment.ts';
import { SimNetwork } from '../sim/sim-network.ts';
import type { TcpSocket } from '../socket/tcp-socket.ts';
import type { CongestionAlgorithm } from '../state/tcp-state.ts';
import type { FailureEvent } from '../team/health.ts';
import { type FailoverSummary, summarizeFailover } from '../team/index.ts';
import type { FailoverRecord } from '../team/team.ts';

export interface DemoOptions {
  connections: number;
  bytes: number;
  seed: number;
  impair: Impairment;
  congestion: CongestionAlgorithm;
  /** Give up (and report failure) after this much simulated time. */
  timeLimitMs: number;
  /** NICs in the server's team (0: a plain host, no offload). */
  nics: number;
  /** Cut the link of the NIC carrying the most connections once this share of the bytes has arrived (0: never). */
  failoverAt: number;
}

export interface DemoProgress {
  simMs: number;
  /** Connections per owner on the server: 'host' or a NIC id. */
  owners: Record<string, number>;
  /** One line per failover so far. */
  events: string[];
  connected: number;
  finished: number;
  connections: number;
  bytes: number;
  totalBytes: number;
  retransmits: number;
}

export interface DemoSummary {
  connections: number;
  /** Bytes delivered to the applications, both directions together. */
  bytes: number;
  verified: boolean;
  /** Connections whose byte streams did not match what was sent. */
  mismatches: number;
  resets: number;
  errors: number;
  retransmits: number;
  /** Simulated duration. */
  durationMs: number;
  /** Wall-clock time the run took. */
  wallMs: number;
  /** Application goodput over simulated time, both directions. */
  goodputMbps: number;
  seed: number;
  impairments: Impairment;
  congestion: CongestionAlgorithm;
  drops: Record<string, number>;
  /** Failovers on the server's team during the run. */
  failovers: DemoFailover[];
}

/**
 * A failover as the demo saw it. `resumeMs`: detection to data at every client again, simulated
 * time into which each move's real duration is charged; `movedMs`: detection to the last
 * connection running at its new owner (the team's record); `resumeWallMs`: the real time this
 * process spent from detection to the end of the failover.
 */
export interface DemoFailover extends FailoverSummary {
  movedMs: number;
  resumeWallMs: number;
}

export const DEMO_DEFAULTS: DemoOptions = {
  connections: 50,
  bytes: 1 << 20,
  seed: 7,
  impair: { loss: 0.01, duplicate: 0.005, reorder: 0.01, delayMs: 5, jitterMs: 1 },
  congestion: 'cubic',
  timeLimitMs: 600_000,
  nics: 2,
  failoverAt: 0.4,
};

const BLOCK = 16 * 1024;

/** Deterministic payload for one direction of one connection: a random block, repeated. */
function pattern(seed: number, conn: number, dir: number): Uint8Array {
  return new SeededRandom(seed * 7919 + conn * 2 + dir).fill(new Uint8Array(BLOCK));
}

/** Stream `total` bytes of `block` into the socket, respecting backpressure; returns its SHA-256. */
function sendStream(sock: TcpSocket, block: Uint8Array, total: number): string {
  const h = createHash('sha256');
  let sent = 0;
  const pump = (): void => {
    while (sent < total) {
      const n = Math.min(block.length, total - sent);
      const chunk = Buffer.from(block.buffer, block.byteOffset, n);
      h.update(chunk);
      sent += n;
      if (!sock.write(chunk)) {
        sock.once('drain', pump);
        return;
      }
    }
    sock.end();
  };
  pump();
  return h.copy().digest('hex');
}

function expectedDigest(block: Uint8Array, total: number): string {
  const h = createHash('sha256');
  for (let sent = 0; sent < total; sent += block.length)
    h.update(block.subarray(0, Math.min(block.length, total - sent)));
  return h.digest('hex');
}

/**
 * Two hosts on the simulated network, the server's link impaired; every connection streams
 * `bytes` each way and both ends check what they received by SHA-256.
 */
export async function runDemo(
  opts: DemoOptions,
  onProgress?: (p: DemoProgress) => void,
): Promise<DemoSummary> {
  const started = performance.now();
  const net = new SimNetwork({ seed: opts.seed, virtualTime: true });
  const tcp = { congestion: opts.congestion };
  const client = net.addHost({ ip: '10.0.0.1/24', name: 'client', tcp });
  // The server is a team of NICs presenting one address; its connections are offloaded to them
  // as soon as they are established, and one NIC's link is cut mid-run.
  const team =
    opts.nics > 0
      ? net.addTeamHost({
          ip: '10.0.0.2/24',
          name: 'server',
          nics: opts.nics,
          nicCapacity: Math.max(opts.connections, 1),
          impair: opts.impair,
          tcp,
          policy: { mode: 'immediate', scanIntervalMs: 5 },
        })
      : null;
  // A move costs the simulated clock what it costs in real time: the resume times printed are
  // what a peer would live through, not the zero a free move would show.
  if (team) {
    team.manager.chargeWallTime = true;
    for (const n of team.nics) n.chargeWork = true;
  }
  const server = team ?? net.addHost({ ip: '10.0.0.2/24', name: 'server', impair: opts.impair, tcp });
  const events: string[] = [];
  // Resumed means data reaches the client's application again: per failure, the first data each
  // client connection receives after detection; the failover's figure is the slowest of them.
  const resumes = new Map<string, Map<TcpSocket, number>>();
  const resumeKey = (nic: string, at: number): string => `${nic}@${at}`;
  const wall = new Map<string, { detected: number; done: number }>();
  team?.team.on('failure', (ev: FailureEvent) => {
    resumes.set(resumeKey(ev.nic, ev.at), new Map());
    wall.set(resumeKey(ev.nic, ev.at), { detected: performance.now(), done: -1 });
  });
  const peerResumeMs = (r: FailoverRecord): number => {
    const first = resumes.get(resumeKey(r.nic, r.at));
    let max = 0;
    for (const t of first?.values() ?? []) max = Math.max(max, t - r.at);
    return max;
  };
  team?.team.on('failover', (r: FailoverRecord) => {
    const w = wall.get(resumeKey(r.nic, r.at));
    if (w) w.done = performance.now();
    events.push(
      `${(net.now() / 1000).toFixed(2)}s failover: ${r.nic} ${r.cause}, ${r.connections} connections → ${r.to.join(', ') || 'none'}, detected in ${r.detectMs.toFixed(1)} ms, moved in ${r.resumeMs.toFixed(1)} ms`,
    );
  });
  let cutDone = opts.failoverAt <= 0 || !team;
  const owners = (): Record<string, number> => {
    const out: Record<string, number> = {};
    let inHost = server.stack.tcp.size;
    if (team) {
      for (const n of team.nics) {
        // The connections each runs (`load` also counts closed ones' blocks held unread).
        if (n.runningConns > 0) out[n.id] = n.runningConns;
        inHost -= n.runningConns;
      }
    }
    out.host = Math.max(0, inHost);
    return out;
  };

  let received = 0;
  let connected = 0;
  let finished = 0;
  let resets = 0;
  let errors = 0;
  let mismatches = 0;
  const results: Promise<void>[] = [];
  const serverSide = new Map<number, Promise<boolean>>();

  const receive = (sock: TcpSocket, expect: string, atClient = false): Promise<boolean> =>
    new Promise((resolve) => {
      const h = createHash('sha256');
      sock.on('data', (d: Buffer) => {
        h.update(d);
        received += d.length;
        if (atClient) for (const first of resumes.values()) if (!first.has(sock)) first.set(sock, net.now());
      });
      sock.on('error', (e: NodeJS.ErrnoException) => {
        if (e.code === 'ECONNRESET') resets++;
        else errors++;
        resolve(false);
      });
      sock.on('end', () => resolve(h.digest('hex') === expect));
    });

  // Each side ends its own direction only: with allowHalfOpen false a socket ends its writes at the
  // peer's FIN (as net.Socket does), and a stream still being written when the other ended would
  // lose its tail; a socket holds its send target, not the whole stream, so that happens.
  const srv = server.createServer({ allowHalfOpen: true }, (sock) => {
    // The client announces its index in the first 4 bytes, so the server knows which pattern to expect.
    sock.once('readable', function first() {
      const head = sock.read(4) as Buffer | null;
      if (!head) {
        sock.once('readable', first);
        return;
      }
      const idx = head.readUInt32BE(0);
      const expect = expectedDigest(pattern(opts.seed, idx, 0), opts.bytes);
      const ok = receive(sock, expect);
      serverSide.set(idx, ok);
      sendStream(sock, pattern(opts.seed, idx, 1), opts.bytes);
    });
  });
  srv.listen(5001);

  for (let i = 0; i < opts.connections; i++) {
    results.push(
      new Promise<void>((resolve) => {
        const sock = client.connect({ port: 5001, host: '10.0.0.2', allowHalfOpen: true });
        const expect = expectedDigest(pattern(opts.seed, i, 1), opts.bytes);
        const ok = receive(sock, expect, true);
        sock.on('connect', () => {
          connected++;
          const head = Buffer.alloc(4);
          head.writeUInt32BE(i);
          sock.write(head);
          sendStream(sock, pattern(opts.seed, i, 0), opts.bytes);
        });
        sock.on('close', async () => {
          const mine = await ok;
          const theirs = (await serverSide.get(i)) ?? false;
          if (!mine || !theirs) mismatches++;
          finished++;
          resolve();
        });
      }),
    );
  }

  const retransmits = (): number =>
    client.stack.counters.get('tcp.retransmits') + server.stack.counters.get('tcp.retransmits');
  const progress = (): void => {
    if (!cutDone && team && received >= opts.failoverAt * 2 * opts.connections * opts.bytes) {
      cutDone = true;
      const busiest = [...team.nics.keys()].sort(
        (a, b) => team.nics[b]!.runningConns - team.nics[a]!.runningConns,
      )[0]!;
      const nic = team.nics[busiest]!;
      events.push(
        `${(net.now() / 1000).toFixed(2)}s cutting the link of ${nic.id} (${nic.runningConns} connections)`,
      );
      team.ports[busiest]!.cut();
    }
    onProgress?.({
      simMs: net.now(),
      owners: owners(),
      events: [...events],
      connected,
      finished,
      connections: opts.connections,
      bytes: received,
      totalBytes: 2 * opts.connections * opts.bytes,
      retransmits: retransmits(),
    });
  };
  const ticker = net.clock.createTimer(() => {
    progress();
    if (finished < opts.connections) ticker.arm(20);
  });
  ticker.unref().arm(20);

  // A ref'd deadline: if the run stalls with nothing else pending, virtual time jumps here.
  let stop: () => void = () => {};
  const stalled = new Promise<void>((resolve) => {
    stop = resolve;
  });
  const limit = net.clock.createTimer(() => stop());
  limit.arm(opts.timeLimitMs);
  await Promise.race([Promise.all(results), stalled]);
  limit.disarm();
  ticker.disarm();
  progress();
  const durationMs = net.now();
  srv.close();
  const drops = {
    ...prefixed(client.stack.counters.snapshot(), 'drop.'),
    ...prefixed(server.stack.counters.snapshot(), 'drop.'),
  };
  const failovers = team
    ? team.failovers.map((r): DemoFailover => {
        const w = wall.get(resumeKey(r.nic, r.at));
        const wallMs = w && w.done >= 0 ? Math.round((w.done - w.detected) * 1000) / 1000 : -1;
        return {
          ...summarizeFailover(r),
          resumeMs: peerResumeMs(r),
          movedMs: r.resumeMs,
          resumeWallMs: wallMs,
        };
      })
    : [];
  team?.close();
  net.close();
  const incomplete = opts.connections - finished;
  const bytes = received;
  return {
    connections: opts.connections,
    bytes,
    verified: mismatches === 0 && incomplete === 0 && bytes === 2 * opts.connections * opts.bytes,
    mismatches: mismatches + incomplete,
    resets,
    errors,
    retransmits: retransmits(),
    durationMs: Math.round(durationMs),
    wallMs: Math.round(performance.now() - started),
    goodputMbps: durationMs > 0 ? Math.round(((bytes * 8) / (durationMs * 1000)) * 10) / 10 : 0,
    seed: opts.seed,
    impairments: opts.impair,
    congestion: opts.congestion,
    drops,
    failovers,
  };
}

function prefixed(o: Record<string, number>, p: string): Record<string, number> {
  return Object.fromEntries(Object.entries(o).filter(([k]) => k.startsWith(p)));
}
