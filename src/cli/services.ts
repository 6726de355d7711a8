/**
 * The services `chimney serve` offers on Chimney sockets: echo (RFC 862), discard (RFC 863) and a
 * small HTTP server (Node's own `http` over our TcpSockets).
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import { InvalidArgumentError } from '../core/errors.ts';
import type { Host } from '../socket/host.ts';
import type { TcpServer } from '../socket/tcp-server.ts';
import type { TcpSocket } from '../socket/tcp-socket.ts';
import { formatIpv4, formatIpv6, parseCidr, parseIpv4, parseIpv6 } from '../wire/addr.ts';
import type { CheckedAddresses } from './addresses.ts';

export const SERVICE_NAMES = ['echo', 'discard', 'http'] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

const DEFAULT_PORTS: Record<ServiceName, number> = { echo: 7, discard: 9, http: 80 };

/** Every IPv4 address (and none of IPv6's), as bind(2) to INADDR_ANY on an AF_INET socket. */
const ANY4_TEXT = '0.0.0.0';
/** Every address of both families, as a dual-stack socket bound to in6addr_any. */
const ANY6_TEXT = '::';

export interface ServiceSpec {
  name: ServiceName;
  port: number;
  /**
   * The one local address it listens on: a dotted quad, or an IPv6 address in RFC 5952 form
   * (no brackets); '0.0.0.0' is every IPv4 address, '::' every address. Absent: every address.
   */
  host?: string;
}

/** `name:port`, with `@addr` (`@[v6]`) when the service is bound to one address. */
export function serviceLabel(s: ServiceSpec): string {
  if (s.host === undefined) return `${s.name}:${s.port}`;
  return `${s.name}:${s.port}@${s.host.includes(':') ? `[${s.host}]` : s.host}`;
}

/**
 * The address after `@` in canonical form: a dotted quad, or an IPv6 address in brackets (as in a
 * URL: `[fd00::1]`), which keeps the separator unambiguous for readers of either syntax.
 */
function parseBindAddress(v: string, text: string): string {
  const e = (why: string): never => {
    throw new InvalidArgumentError(`service '${v}': ${why}`);
  };
  if (text === '') e("no address after '@' (e.g. http:80@10.9.0.10 or http:80@[fd00::10])");
  if (text.startsWith('[')) {
    if (!text.endsWith(']')) e(`'${text}' has no closing ']'`);
    try {
      return formatIpv6(parseIpv6(text.slice(1, -1)));
    } catch {
      return e(`'${text.slice(1, -1)}' is not an IPv6 address`);
    }
  }
  if (text.includes(':')) e(`an IPv6 address goes in brackets, e.g. @[${text}]`);
  try {
    return formatIpv4(parseIpv4(text));
  } catch {
    return e(`'${text}' is not an IPv4 address (an IPv6 one goes in brackets, e.g. @[fd00::10])`);
  }
}

/** `name`, `name:port`, either with `@addr` or `@[v6addr]`; throws InvalidArgumentError saying what is wrong. */
export function parseService(v: string): ServiceSpec {
  const s = v.trim();
  const at = s.indexOf('@');
  const m = /^([a-z]+)(?::(.*))?$/.exec(at < 0 ? s : s.slice(0, at));
  const name = m?.[1] as ServiceName | undefined;
  if (!m || !name || !SERVICE_NAMES.includes(name)) {
    throw new InvalidArgumentError(
      `unknown service '${v}' (known: ${SERVICE_NAMES.join(', ')}; e.g. http:80 or http:80@10.9.0.10)`,
    );
  }
  let port = DEFAULT_PORTS[name];
  if (m[2] !== undefined) {
    port = Number(m[2]);
    if (!/^\d+$/.test(m[2]) || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw new InvalidArgumentError(`service '${v}': port must be 1..65535`);
    }
  }
  if (at < 0) return { name, port };
  return { name, port, host: parseBindAddress(v, s.slice(at + 1)) };
}

/**
 * Whether two services would take the same port on some address (Linux refuses the second bind
 * with EADDRINUSE): a wildcard of the address's family, '::' or no address overlap every one.
 */
export function servicesOverlap(a: ServiceSpec, b: ServiceSpec): boolean {
  if (a.port !== b.port) return false;
  const x = a.host;
  const y = b.host;
  if (x === undefined || y === undefined || x === ANY6_TEXT || y === ANY6_TEXT || x === y) return true;
  if (x === ANY4_TEXT) return !y.includes(':');
  if (y === ANY4_TEXT) return !x.includes(':');
  return false;
}

/**
 * Every address a service is bound to must be one of the host's (`--ip`): Linux refuses bind(2) to
 * an address no interface holds (EADDRNOTAVAIL), and a listener there would never hear a SYN.
 * Throws InvalidArgumentError naming the service.
 */
export function checkServiceAddresses(specs: readonly ServiceSpec[], a: CheckedAddresses): void {
  const own = `--ip ${[...a.v4, ...a.v6].join(', ')}`;
  for (const s of specs) {
    const h = s.host;
    if (h === undefined) continue;
    const bad = (why: string): never => {
      throw new InvalidArgumentError(`--service ${serviceLabel(s)}: ${why}`);
    };
    if (h === ANY4_TEXT) {
      if (a.v4.length === 0) bad(`Chimney has no IPv4 address (${own})`);
    } else if (h === ANY6_TEXT) {
      if (a.v6.length === 0) bad(`Chimney has no IPv6 address (${own})`);
    } else if (h.includes(':')) {
      if (!a.v6.some((c) => c.slice(0, c.indexOf('/')) === h))
        bad(`${h} is not one of Chimney's addresses (${own})`);
    } else {
      const ip = parseIpv4(h);
      if (!a.v4.some((c) => parseCidr(c).ip === ip)) bad(`${h} is not one of Chimney's addresses (${own})`);
    }
  }
}

export interface ServiceLog {
  /** One line per connection event (suppressed by --quiet), with its facts for a structured log. */
  info(line: string, fields?: Record<string, unknown>): void;
  /** One line per error. */
  error(line: string): void;
}

/**
 * Linux's net.core.somaxconn default (since 5.4), the most listen(2) gives a socket unless raised:
 * a thousand clients connecting within a second must not overflow the half-open queue into SYN
 * cookies (Node's default backlog is 511).
 */
export const DEFAULT_LISTEN_BACKLOG = 4096;

/** Byte i of a /bytes/N body is i mod 251 (a prime, so the pattern never lines up with powers of two). */
const PATTERN_PERIOD = 251;
/** Chunks are whole periods, so every chunk starts at pattern offset 0 and one block serves all. */
const PATTERN_BLOCK = Buffer.alloc(PATTERN_PERIOD * 256, 0).map((_, i) => i % PATTERN_PERIOD);

const INDEX = `chimney http service
GET  /bytes/N   N bytes, byte i = i mod 251
POST /sha256    hex SHA-256 of the request body
`;

function peer(s: TcpSocket): string {
  return `${s.remoteAddress}:${s.remotePort}`;
}

/** Send `n` pattern bytes on `res`, waiting for 'drain' whenever the socket's buffer is full. */
function streamPattern(res: http.ServerResponse, n: number): void {
  let left = n;
  const pump = (): void => {
    while (left > 0) {
      const k = Math.min(left, PATTERN_BLOCK.length);
      left -= k;
      const more = res.write(k === PATTERN_BLOCK.length ? PATTERN_BLOCK : PATTERN_BLOCK.subarray(0, k));
      if (!more && left > 0) {
        res.once('drain', pump);
        return;
      }
    }
    res.end();
  };
  res.on('close', () => {
    left = 0;
  });
  pump();
}

function httpHandler(log: ServiceLog) {
  return (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const url = req.url ?? '/';
    const bytes = /^\/bytes\/(\d{1,16})$/.exec(url);
    if (req.method === 'GET' && bytes) {
      const n = Number(bytes[1]);
      if (!Number.isSafeInteger(n)) {
        res.writeHead(400, { 'content-type': 'text/plain' }).end('N too large\n');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n });
      streamPattern(res, n);
      return;
    }
    if (req.method === 'POST' && url === '/sha256') {
      const h = createHash('sha256');
      req.on('data', (d: Buffer) => h.update(d));
      req.on('end', () => {
        const hex = `${h.digest('hex')}\n`;
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': hex.length }).end(hex);
      });
      req.on('error', (e) => log.error(`http: request body: ${e.message}`));
      return;
    }
    if ((req.method === 'GET' || req.method === 'HEAD') && url === '/') {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': INDEX.length }).end(INDEX);
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  };
}

export interface RunningService {
  spec: ServiceSpec;
  server: TcpServer;
  /** Stop listening and end (FIN) every connection of this service. */
  close(): void;
  /** Connections still open. */
  readonly open: number;
  /** Abort what is still open. */
  destroyAll(): void;
}

/** Listen for `spec` on `host`. */
export function startService(
  host: Host,
  spec: ServiceSpec,
  log: ServiceLog,
  backlog = DEFAULT_LISTEN_BACKLOG,
): RunningService {
  const sockets = new Set<TcpSocket>();
  const tag = serviceLabel(spec);
  let httpServer: http.Server | null = null;
  if (spec.name === 'http') {
    httpServer = http.createServer(httpHandler(log));
    httpServer.on('clientError', (e, sock) => {
      log.error(`${tag}: client error: ${e.message}`);
      sock.destroy();
    });
  }
  const server = host.createServer((sock) => {
    const who = peer(sock);
    sockets.add(sock);
    log.info(`${tag}: connection from ${who}`, { event: 'connection-open', service: tag, peer: who });
    sock.on('error', (e) => log.error(`${tag}: ${who}: ${e.message}`));
    sock.on('close', () => {
      sockets.delete(sock);
      log.info(`${tag}: ${who} closed (in ${sock.bytesRead} B, out ${sock.bytesWritten} B)`, {
        event: 'connection-close',
        service: tag,
        peer: who,
        bytesIn: sock.bytesRead,
        bytesOut: sock.bytesWritten,
      });
    });
    switch (spec.name) {
      case 'echo':
        // pipe() gives backpressure both ways: a peer that does not read stops us reading.
        sock.pipe(sock);
        break;
      case 'discard': {
        // The count and digest let whoever sent the data check what arrived, not only that it was taken.
        const h = createHash('sha256');
        let n = 0;
        sock.on('data', (d: Uint8Array) => {
          h.update(d);
          n += d.length;
        });
        sock.on('end', () => {
          log.info(`${tag}: ${who} sent ${n} B, sha256 ${h.digest('hex')}`);
          sock.end();
        });
        break;
      }
      case 'http':
        httpServer!.emit('connection', sock);
        break;
    }
  });
  server.on('error', (e: Error) => log.error(`${tag}: ${e.message}`));
  server.listen({ port: spec.port, host: spec.host, backlog });
  return {
    spec,
    server,
    close() {
      server.close();
      for (const s of sockets) s.end();
    },
    get open() {
      return sockets.size;
    },
    destroyAll() {
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
  };
}
