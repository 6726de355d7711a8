import { ConnectionError, InvalidArgumentError } from '../core/errors.ts';
import { ANY6 } from '../stack/address-table.ts';
import type { TcpCached } from '../state/tcp-state.ts';
import { parseIpv4 } from '../wire/addr.ts';
import type { ServerHost } from './tcp-server.ts';
import { TcpSocket, type TcpSocketOptions } from './tcp-socket.ts';

export interface ConnectOptions extends TcpSocketOptions {
  port: number;
  host: string;
  localAddress?: string;
  localPort?: number;
  noDelay?: boolean;
  keepAlive?: boolean;
  keepAliveInitialDelay?: number;
  /** Idle timeout in ms, as socket.setTimeout. */
  timeout?: number;
  /** TCP settings for this connection (buffer sizes, congestion control, ...). */
  tcp?: Partial<TcpCached>;
}

function checkPort(port: unknown, what: string): number {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535)
    throw new InvalidArgumentError(`${what} must be an integer 1-65535, got ${String(port)}`);
  return port;
}

/** Normalise net.connect-style arguments: (port, host?, cb?) or (options, cb?). */
export function normalizeConnectArgs(
  a: number | ConnectOptions,
  b?: string | (() => void),
  c?: () => void,
): { opts: ConnectOptions; cb?: () => void } {
  if (typeof a === 'object' && a !== null) return { opts: a, cb: typeof b === 'function' ? b : c };
  if (typeof b === 'function') return { opts: { port: a, host: '127.0.0.1' }, cb: b };
  if (typeof b !== 'string') throw new InvalidArgumentError('connect(port, host) needs a host address');
  return { opts: { port: a, host: b }, cb: c };
}

/** Open a connection like net.connect; failures arrive as 'error' events, bad arguments throw. */
export function connectSocket(host: ServerHost, opts: ConnectOptions, cb?: () => void): TcpSocket {
  const remotePort = checkPort(opts.port, 'port');
  if (typeof opts.host !== 'string') throw new InvalidArgumentError('connect needs a host address');
  const addrs = host.addrs;
  const localPort = opts.localPort === undefined ? undefined : checkPort(opts.localPort, 'localPort');
  // An IPv6 literal becomes a handle with a reference we hold until the connection holds its own.
  const remoteIp = addrs ? addrs.parse(opts.host) : parseIpv4(opts.host);
  let localIp: number | undefined;
  const socket = new TcpSocket(host, opts);
  if (cb) socket.once('connect', cb);
  try {
    if (remoteIp === ANY6) throw new InvalidArgumentError(`connect: '${opts.host}' is not a unicast address`);
    if (opts.localAddress) {
      localIp = addrs ? addrs.parse(opts.localAddress) : parseIpv4(opts.localAddress);
      if (localIp === ANY6) localIp = undefined;
    }
    if (remoteIp < 0 || (localIp !== undefined && localIp < 0)) {
      // The table of IPv6 addresses is full: a new peer is refused like any lack of resources.
      throw new ConnectionError('ENOBUFS', 'too many IPv6 addresses in use');
    }
    const conn = host.tcp.connect({ remoteIp, remotePort, localIp, localPort, options: opts.tcp }, socket);
    socket._attachConnecting(conn);
  } catch (e) {
    if (e instanceof ConnectionError) {
      e.syscall = 'connect';
      e.address = opts.host;
      e.port = remotePort;
      host.clock.defer(() => socket._failConnect(e));
      return socket;
    }
    throw e;
  } finally {
    addrs?.release(remoteIp);
    if (localIp !== undefined) addrs?.release(localIp);
  }
  if (opts.noDelay) socket.setNoDelay(true);
  if (opts.keepAlive) socket.setKeepAlive(true, opts.keepAliveInitialDelay ?? 0);
  if (opts.timeout) socket.setTimeout(opts.timeout);
  return socket;
}
