import { existsSync, mkdirSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';

/**
 * A local control socket: `chimney serve` answers status requests on it and `chimney status`
 * asks. One JSON line in, one JSON line out, so scripts can use it with socat as well.
 */

export const DEFAULT_CONTROL_PATH = '/run/chimney/serve.sock';

export interface ConnStatus {
  local: string;
  remote: string;
  /** 'host' or the id of the NIC that runs the connection. */
  owner: string;
  state: string;
  bytesIn: number;
  bytesOut: number;
  /** Bytes per second over the last status interval. */
  rateIn: number;
  rateOut: number;
  retransmits: number;
}

export interface PathStatus {
  remote: string;
  mtu: number;
  conns: ConnStatus[];
}

export interface NeighborStatus {
  ip: string;
  mac: string;
  paths: PathStatus[];
}

export interface NicStatus {
  id: string;
  health: string;
  linkUp: boolean;
  load: number;
  capacity: number;
}

export interface StatusSnapshot {
  name: string;
  addresses: string[];
  uptimeMs: number;
  nics: NicStatus[];
  trees: NeighborStatus[];
  listeners: string[];
  counters: Record<string, number>;
  failovers: unknown[];
}

export class ControlServer {
  private readonly server: net.Server;
  /** Where a failure of the socket after start-up is reported (the server keeps serving). */
  onError: (e: Error) => void = () => {};
  constructor(
    readonly path: string,
    provider: () => StatusSnapshot | Promise<StatusSnapshot>,
  ) {
    mkdirSync(dirname(path), { recursive: true });
    if (existsSync(path)) {
      // A socket file left by a server that died; a live one would still answer.
      unlinkSync(path);
    }
    this.server = net.createServer((sock) => {
      let buf = '';
      sock.setEncoding('utf8');
      sock.on('data', async (d: string) => {
        buf += d;
        const nl = buf.indexOf('\n');
        if (nl < 0) {
          if (buf.length > 4096) sock.destroy();
          return;
        }
        const line = buf.slice(0, nl).trim();
        buf = '';
        try {
          const req = JSON.parse(line) as { op?: string };
          if (req.op !== 'status') throw new Error(`unknown op ${String(req.op)}`);
          sock.end(`${JSON.stringify({ ok: true, status: await provider() })}\n`);
        } catch (e) {
          sock.end(`${JSON.stringify({ ok: false, error: (e as Error).message })}\n`);
        }
      });
      sock.on('error', () => {});
    });
    this.server.on('error', (e) => this.onError(e));
    this.server.listen(path);
  }

  close(): void {
    this.server.close();
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
  }
}

export class ControlError extends Error {
  readonly code = 'ERR_CHIMNEY_CONTROL';
}

/** Ask a running `chimney serve` for its status. */
export function queryStatus(path: string, timeoutMs = 3000): Promise<StatusSnapshot> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(path);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new ControlError(`no answer from ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write('{"op":"status"}\n'));
    sock.on('data', (d: string) => {
      buf += d;
    });
    sock.on('end', () => {
      clearTimeout(timer);
      try {
        const res = JSON.parse(buf) as { ok: boolean; status?: StatusSnapshot; error?: string };
        if (!res.ok || !res.status) reject(new ControlError(res.error ?? 'bad answer'));
        else resolve(res.status);
      } catch {
        reject(new ControlError(`unreadable answer from ${path}`));
      }
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const why =
        e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
          ? `no chimney serve is listening on ${path} (start one, or pass --control PATH)`
          : e.message;
      reject(new ControlError(why));
    });
  });
}

function human(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return String(Math.round(n));
}

/** The state trees as text, in the spirit of `netstat -t` with an owner column. */
export function formatStatus(s: StatusSnapshot): string {
  const out: string[] = [];
  out.push(`${s.name}  ${s.addresses.join(' ')}  up ${(s.uptimeMs / 1000).toFixed(0)} s`);
  if (s.nics.length) {
    out.push('');
    out.push('NIC         HEALTH       LINK  LOAD/CAP');
    for (const n of s.nics)
      out.push(
        `${n.id.padEnd(11)} ${n.health.padEnd(12)} ${(n.linkUp ? 'up' : 'down').padEnd(5)} ${n.load}/${n.capacity}`,
      );
  }
  if (s.listeners.length) out.push('', `listening: ${s.listeners.join(' ')}`);
  out.push('');
  let total = 0;
  for (const nb of s.trees) {
    out.push(`neighbor ${nb.ip} (${nb.mac})`);
    for (const p of nb.paths) {
      out.push(`  path → ${p.remote}  mtu ${p.mtu}  ${p.conns.length} connection(s)`);
      for (const c of p.conns) {
        total++;
        out.push(
          `    ${c.local.padEnd(21)} ${c.remote.padEnd(21)} ${c.state.padEnd(12)} ${(c.owner === 'host' ? 'in host' : `offloaded:${c.owner}`).padEnd(18)} in ${human(c.bytesIn).padStart(6)} out ${human(c.bytesOut).padStart(6)}  ${human(c.rateIn * 8)}b/s↓ ${human(c.rateOut * 8)}b/s↑  rtx ${c.retransmits}`,
        );
      }
    }
  }
  if (total === 0) out.push('no connections');
  return out.join('\n');
}
