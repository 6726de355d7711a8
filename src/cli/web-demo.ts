import { SimNetwork } from '../sim/sim-network.ts';
import type { TcpSocket } from '../socket/tcp-socket.ts';
import type { TeamHost } from '../team/team-host.ts';
import { AdminServer } from './admin.ts';
import { stackMetrics, teamStatusExtras } from './admin-source.ts';
import type { ChimneyMetrics } from './metrics.ts';
import { StatusReporter } from './status.ts';

export interface WebDemoOptions {
  /** Port of the page (0: any free one). */
  port: number;
  host?: string;
  connections: number;
  nics: number;
  seed: number;
  /** Bytes each connection sends per second, each way. */
  bytesPerSecond: number;
  /** Cut the busiest NIC's link this often and restore it half a period later (0: only on request). */
  cutEveryMs: number;
  pushMs?: number;
}

export const WEB_DEMO_DEFAULTS: WebDemoOptions = {
  port: 8080,
  connections: 12,
  nics: 2,
  seed: 7,
  bytesPerSecond: 64 * 1024,
  cutEveryMs: 12_000,
};

export interface WebDemo {
  url: string;
  team: TeamHost;
  metrics: ChimneyMetrics;
  /** Cut the link of NIC `index` (default: the busiest); returns its id. */
  cut(index?: number): string;
  restore(index: number): void;
  /** Reset client connection `index` (RST), as a client that gives up does; returns whether it was open. */
  reset(index: number): boolean;
  close(): Promise<void>;
}

const CHUNK = 4096;

/**
 * The demo for a browser: the simulated network on real time, so what happens is watchable, with
 * echo connections that each carry a steady paced stream, the server a team of NICs, and (unless
 * told otherwise) the busiest NIC's link cut and restored periodically, so connections are seen
 * moving off it and back. The admin endpoint of `chimney serve` serves the page.
 */
export async function startWebDemo(o: WebDemoOptions): Promise<WebDemo> {
  const net = new SimNetwork({ seed: o.seed, virtualTime: false });
  const client = net.addHost({ ip: '10.0.0.1/24', name: 'client' });
  const team = net.addTeamHost({
    ip: '10.0.0.2/24',
    name: 'server',
    nics: o.nics,
    nicCapacity: Math.max(o.connections, 1),
    impair: { loss: 0.002, delayMs: 2, jitterMs: 1 },
    policy: { mode: 'immediate', scanIntervalMs: 50 },
    failback: true,
    health: { holdMs: 2000 },
  });
  const srv = team.createServer((sock) => {
    sock.on('error', () => {});
    sock.pipe(sock);
  });
  srv.listen(7);
  const socks: TcpSocket[] = [];
  const block = Buffer.alloc(CHUNK, 0x61);
  // Paced writers: each connection sends bytesPerSecond, in chunks, on a real-time interval.
  const period = Math.max(10, Math.round((1000 * CHUNK) / Math.max(1, o.bytesPerSecond)));
  for (let i = 0; i < o.connections; i++) {
    const s = client.connect(7, '10.0.0.2');
    s.on('error', () => {});
    s.on('data', () => {});
    socks.push(s);
  }
  const pump = setInterval(() => {
    for (const s of socks) if (s.writable && s.writableLength < 8 * CHUNK) s.write(block);
  }, period);

  const reporter = new StatusReporter(team.stack, 'chimney demo (simulated network)', {
    ...teamStatusExtras(team, 'local'),
    listeners: () => ['echo:7'],
  });
  const metrics = stackMetrics(team.stack, reporter, team);
  const admin = await AdminServer.start(metrics, {
    host: o.host ?? '127.0.0.1',
    port: o.port,
    pushMs: o.pushMs ?? 500,
  });

  const cut = (index?: number): string => {
    const i =
      index ??
      [...team.nics.keys()].sort((a, b) => team.nics[b]!.runningConns - team.nics[a]!.runningConns)[0]!;
    team.ports[i]!.cut();
    return team.nics[i]!.id;
  };
  const restore = (i: number): void => team.ports[i]!.restore();
  const timers: NodeJS.Timeout[] = [];
  if (o.cutEveryMs > 0) {
    timers.push(
      setInterval(() => {
        const id = cut();
        const i = team.nics.findIndex((n) => n.id === id);
        timers.push(setTimeout(() => restore(i), o.cutEveryMs / 2));
      }, o.cutEveryMs),
    );
  }
  return {
    url: admin.url,
    team,
    metrics,
    cut,
    restore,
    reset: (i) => {
      const s = socks[i];
      if (s === undefined || s.destroyed) return false;
      s.resetAndDestroy();
      return true;
    },
    close: async () => {
      clearInterval(pump);
      for (const t of timers) clearTimeout(t);
      await admin.close();
      for (const s of socks) s.destroy();
      srv.close();
      team.close();
      net.close();
    },
  };
}

/** `chimney demo --web`: serve the live view until interrupted. */
export async function runWebDemo(o: {
  port: number;
  connections: number;
  nics: number;
  seed: number;
}): Promise<void> {
  const demo = await startWebDemo({
    ...WEB_DEMO_DEFAULTS,
    port: o.port,
    // The batch demo's defaults (50 connections of 1 MiB) are for throughput; a page shows fewer best.
    connections: Math.min(o.connections, 64),
    nics: Math.max(2, o.nics),
    seed: o.seed,
  });
  process.stderr.write(
    `chimney demo: live view on ${demo.url}/ (metrics on ${demo.url}/metrics); a NIC's link is cut every ${WEB_DEMO_DEFAULTS.cutEveryMs / 1000} s. Ctrl-C stops.\n`,
  );
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await demo.close();
}
