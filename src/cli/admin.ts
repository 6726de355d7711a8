import http from 'node:http';
import { isIP } from 'node:net';
import type { ChimneyMetrics } from './metrics.ts';
import { PAGE_HTML, PAGE_JS } from './web/page.ts';

/** Where and how the admin endpoint listens. */
export interface AdminOptions {
  host: string;
  port: number;
  /** Allow an address other than loopback (the endpoint has no authentication). */
  public?: boolean;
  /** Interval of the live view's pushed updates. */
  pushMs?: number;
  /** A live-view client with more unsent bytes than this misses updates until it catches up. */
  backlogBytes?: number;
}

/** A client's unsent output beyond this, and its updates are dropped (and counted) until it drains. */
const CLIENT_BACKLOG = 256 * 1024;
const MAX_CLIENTS = 32;

/** Parse `host:port` / `[v6]:port` / `port` for --admin; loopback unless `allowPublic`. */
export function parseAdminAddress(spec: string, allowPublic: boolean): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(spec) ?? /^()()(\d+)$/.exec(spec);
  if (!m) throw new Error(`--admin: '${spec}' is not host:port`);
  const host = m[1] || m[2] || '127.0.0.1';
  const port = Number(m[3]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--admin: bad port in '${spec}'`);
  if (host !== 'localhost' && isIP(host) === 0) throw new Error(`--admin: '${host}' is not an IP address`);
  const loopback = host === 'localhost' || host === '::1' || /^127\./.test(host);
  if (!loopback && !allowPublic)
    throw new Error(`--admin: ${host} is not a loopback address; add --admin-public to serve it anyway`);
  return { host, port };
}

/**
 * The admin endpoint: `/metrics` (Prometheus text), `/api/status` (the status snapshot as JSON),
 * `/` (the live view) and `/events` (its server-sent updates). Updates are made once per interval
 * and written to every client that keeps up; a slow one misses updates instead of holding memory
 * or time, so no client can slow the stack.
 */
export class AdminServer {
  private readonly server: http.Server;
  private readonly clients = new Set<http.ServerResponse>();
  private readonly ticker: NodeJS.Timeout;
  private busy = false;

  private constructor(
    private readonly metrics: ChimneyMetrics,
    pushMs: number,
    private readonly backlog: number,
  ) {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((e: Error) => {
        if (!res.headersSent) this.reply(res, 500, 'text/plain', `${e.message}\n`);
        else res.destroy();
      });
    });
    this.server.on('clientError', (e: NodeJS.ErrnoException, socket) => {
      const status =
        e.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
      if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\n\r\n`);
      else socket.destroy();
    });
    this.server.headersTimeout = 10_000;
    this.server.requestTimeout = 10_000;
    this.ticker = setInterval(() => void this.push(), pushMs);
    this.ticker.unref();
  }

  static async start(metrics: ChimneyMetrics, o: AdminOptions): Promise<AdminServer> {
    const a = new AdminServer(metrics, o.pushMs ?? 1000, o.backlogBytes ?? CLIENT_BACKLOG);
    await new Promise<void>((resolve, reject) => {
      a.server.once('error', reject);
      a.server.listen(o.port, o.host, () => {
        a.server.off('error', reject);
        resolve();
      });
    });
    return a;
  }

  /** The URL the endpoint answers on. */
  get url(): string {
    const addr = this.server.address();
    if (addr === null || typeof addr === 'string') return String(addr);
    return `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  }

  private reply(res: http.ServerResponse, code: number, type: string, body: string): void {
    res.writeHead(code, {
      'content-type': type,
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
    });
    res.end(body);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let path: string;
    try {
      path = new URL(req.url ?? '', 'http://admin').pathname;
    } catch {
      return this.reply(res, 400, 'text/plain', 'bad request target\n');
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return this.reply(res, 405, 'text/plain', 'only GET\n');
    }
    switch (path) {
      case '/metrics':
        return this.reply(res, 200, this.metrics.registry.contentType, await this.metrics.text());
      case '/api/status':
        return this.reply(res, 200, 'application/json', `${JSON.stringify(await this.metrics.refresh())}\n`);
      case '/api/timeline':
        return this.reply(res, 200, 'application/json', `${JSON.stringify(this.metrics.timeline)}\n`);
      case '/':
      case '/index.html':
        return this.reply(res, 200, 'text/html; charset=utf-8', PAGE_HTML);
      case '/app.js':
        return this.reply(res, 200, 'text/javascript; charset=utf-8', PAGE_JS);
      case '/events':
        return this.subscribe(req, res);
      default:
        return this.reply(res, 404, 'text/plain', 'not found\n');
    }
  }

  private subscribe(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (this.clients.size >= MAX_CLIENTS) {
      this.reply(res, 503, 'text/plain', 'too many viewers\n');
      return;
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-store',
      connection: 'keep-alive',
    });
    res.write('retry: 2000\n\n');
    this.clients.add(res);
    req.socket.setNoDelay(true);
    const gone = (): void => {
      this.clients.delete(res);
    };
    res.on('close', gone);
    res.on('error', gone);
    void this.push(res);
  }

  /** One update, made once and written to every client with room for it. */
  private async push(only?: http.ServerResponse): Promise<void> {
    if (this.clients.size === 0 || (this.busy && !only)) return;
    this.busy = true;
    try {
      const status = await this.metrics.refresh();
      const data = `data: ${JSON.stringify({ status, timeline: this.metrics.timeline, resets: this.metrics.resetTotals })}\n\n`;
      for (const res of only ? [only] : this.clients) {
        if (res.writableLength > this.backlog) {
          this.metrics.updatesDropped.inc();
          continue;
        }
        res.write(data);
      }
    } finally {
      this.busy = false;
    }
  }

  async close(): Promise<void> {
    clearInterval(this.ticker);
    for (const res of this.clients) res.destroy();
    this.clients.clear();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
