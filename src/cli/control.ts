import { existsSync, mkdirSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';
import type { Nic } from '../nic/nic.ts';

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
  /** RSTs received and sent on it, whoever ran it (the counts travel with the state). */
  resetsIn: number;
  resetsOut: number;
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
  /** 'worker' (its own thread) or 'local' (the main thread). */
  kind?: string;
  /** up, down, holding (recovered, sitting out its hold) or dead. */
  health: string;
  linkUp: boolean;
  /** Last probe answered within interval × misses (true when nothing is probed). */
  reachable?: boolean;
  /** Carries the host stack's own traffic (ARP, new connections, what stays in the host). */
  carriesHost?: boolean;
  /** What takes a place of capacity (running connections and closed ones' blocks held unread). */
  load: number;
  /** Connections it runs (absent from older servers: take `load`). */
  runningConns?: number;
  capacity: number;
  failures?: number;
  /** Times its NIC was started again after dying (serve --workers; failures count the new NIC's). */
  restarts?: number;
  /** The latest failure: cause, detail and how long ago (ms). */
  lastFailure?: { cause: string; detail: string; agoMs: number } | null;
}

/** One failover the server went through (its FailoverRecord, with the time as an age). */
export interface FailoverStatus {
  nic: string;
  cause: string;
  detectMs: number;
  resumeMs: number;
  connections: number;
  to: string[];
  lost: number;
  agoMs: number;
}

export interface StatusSnapshot {
  name: string;
  addresses: string[];
  uptimeMs: number;
  nics: NicStatus[];
  trees: NeighborStatus[];
  listeners: string[];
  counters: Record<string, number>;
  failovers: FailoverStatus[];
}

/** What one control request asks; `op` picks the handler. */
export interface ControlRequest {
  op: string;
  [k: string]: unknown;
}

export type ControlHandler = (req: ControlRequest) => unknown;

export class ControlServer {
  private readonly server: net.Server;
  /** Where a failure of the socket after start-up is reported (the server keeps serving). */
  onError: (e: Error) => void = () => {};
  constructor(
    readonly path: string,
    /** One handler per op ('status', 'move', ...); what it returns (or resolves to) is the answer. */
    private readonly handlers: Record<string, ControlHandler>,
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
          const req = JSON.parse(line) as ControlRequest;
          const h = typeof req?.op === 'string' ? this.handlers[req.op] : undefined;
          if (!h || !Object.hasOwn(this.handlers, req.op)) {
            throw new Error(
              `unknown op ${String(req?.op)} (known: ${Object.keys(this.handlers).join(', ')})`,
            );
          }
          sock.end(`${JSON.stringify({ ok: true, result: await h(req) })}\n`);
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

/** The answer to `kill-nic`: the worker was told to stop; its exit is logged when it comes. */
export interface KillAnswer {
  killed: string;
  threadId: number;
  /** Always false: the answer does not wait for the exit. */
  exited: boolean;
}

/**
 * The `kill-nic` drill: tell the NIC's worker thread to stop and answer at once. A killed thread
 * can take many seconds to exit (its TAP reader's poll on the libuv pool must end first, and the
 * switch now steers the team's frames to the other members), and an answer that waited for the
 * exit left the harness's request unanswered within its 10 s; the team does not wait for the exit
 * either (`Nic.terminateThread`, a WorkerNic's). `note` hears of the exit when it comes.
 */
export function killWorkerNic(
  nic: Pick<Nic, 'id'> & Required<Pick<Nic, 'terminateThread'>>,
  note: (threadId: number, exitCode: number) => void = () => {},
): KillAnswer {
  const { threadId, exited } = nic.terminateThread();
  void exited.then((code) => note(threadId, code));
  return { killed: nic.id, threadId, exited: false };
}

export class ControlError extends Error {
  readonly code = 'ERR_CHIMNEY_CONTROL';
}

/** Send one request to a running `chimney serve` and resolve with its answer. */
export function controlRequest(path: string, req: ControlRequest, timeoutMs = 10_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(path);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new ControlError(`no answer from ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('data', (d: string) => {
      buf += d;
    });
    sock.on('end', () => {
      clearTimeout(timer);
      let res: { ok: boolean; result?: unknown; error?: string };
      try {
        res = JSON.parse(buf) as typeof res;
      } catch {
        reject(new ControlError(`unreadable answer from ${path}`));
        return;
      }
      if (!res.ok) reject(new ControlError(res.error ?? 'bad answer'));
      else resolve(res.result);
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

/** Ask a running `chimney serve` for its status. */
export async function queryStatus(path: string, timeoutMs = 3000): Promise<StatusSnapshot> {
  const s = (await controlRequest(path, { op: 'status' }, timeoutMs)) as StatusSnapshot | undefined;
  if (!s || typeof s.name !== 'string') throw new ControlError(`no status in the answer from ${path}`);
  return s;
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
    out.push(
      'NIC           KIND    HEALTH   LINK  REACH  HOST  LOAD/CAP      FAILURES  RESTARTS  LAST FAILURE',
    );
    for (const n of s.nics) {
      const f = n.lastFailure;
      const last = f ? `${f.cause} ${(f.agoMs / 1000).toFixed(1)} s ago (${f.detail})` : '-';
      out.push(
        `${n.id.padEnd(13)} ${(n.kind ?? '-').padEnd(7)} ${n.health.padEnd(8)} ${(n.linkUp ? 'up' : 'down').padEnd(5)} ${(n.reachable === undefined ? '-' : n.reachable ? 'yes' : 'no').padEnd(6)} ${(n.carriesHost ? 'yes' : '').padEnd(5)} ${`${n.load}/${n.capacity}`.padEnd(13)} ${String(n.failures ?? 0).padEnd(9)} ${String(n.restarts ?? 0).padEnd(9)} ${last}`,
      );
    }
  }
  if (s.failovers.length) {
    out.push('', 'failovers:');
    for (const f of s.failovers)
      out.push(
        `  ${(f.agoMs / 1000).toFixed(1)} s ago  ${f.nic} ${f.cause}: detected in ${f.detectMs.toFixed(1)} ms, ${f.connections} connection(s) to ${f.to.join(',') || '-'} in ${f.resumeMs.toFixed(1)} ms${f.lost ? `, ${f.lost} lost` : ''}`,
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
          `    ${c.local.padEnd(21)} ${c.remote.padEnd(21)} ${c.state.padEnd(12)} ${(c.owner === 'host' ? 'in host' : `offloaded:${c.owner}`).padEnd(18)} in ${human(c.bytesIn).padStart(6)} out ${human(c.bytesOut).padStart(6)}  ${human(c.rateIn * 8)}b/s↓ ${human(c.rateOut * 8)}b/s↑  rtx ${c.retransmits}  rst ${c.resetsIn}↓ ${c.resetsOut}↑`,
        );
      }
    }
  }
  if (total === 0) out.push('no connections');
  return out.join('\n');
}
