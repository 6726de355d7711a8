import type { Clock } from '../core/clock.ts';
import type { Stack } from '../stack/stack.ts';
import { type ConnectOptions, connectSocket, normalizeConnectArgs } from './connect.ts';
import { TcpServer, type TcpServerOptions } from './tcp-server.ts';
import type { TcpSocket } from './tcp-socket.ts';
import { UdpSocket } from './udp-socket.ts';

/**
 * The application's view of one stack: Node-shaped factories for sockets and servers.
 * `host.connect(...)` is `net.connect(...)`, `host.createServer(...)` is `net.createServer(...)`.
 */
export class Host {
  constructor(readonly stack: Stack) {}

  get clock(): Clock {
    return this.stack.clock;
  }
  get tcp() {
    return this.stack.tcp;
  }
  get addrs() {
    return this.stack.addrs;
  }
  hasIpv6(): boolean {
    return this.stack.interfaces.some((i) => this.stack.ip6.enabled(i));
  }
  get udp() {
    return this.stack.udp;
  }

  connect(port: number, host: string, cb?: () => void): TcpSocket;
  connect(opts: ConnectOptions, cb?: () => void): TcpSocket;
  connect(a: number | ConnectOptions, b?: string | (() => void), c?: () => void): TcpSocket {
    const { opts, cb } = normalizeConnectArgs(a, b, c);
    return connectSocket(this, opts, cb);
  }

  createServer(listener?: (socket: TcpSocket) => void): TcpServer;
  createServer(opts: TcpServerOptions, listener?: (socket: TcpSocket) => void): TcpServer;
  createServer(
    a?: TcpServerOptions | ((socket: TcpSocket) => void),
    b?: (socket: TcpSocket) => void,
  ): TcpServer {
    if (typeof a === 'function') return new TcpServer(this, {}, a);
    return new TcpServer(this, a ?? {}, b);
  }

  /** Like dgram.createSocket: 'udp4' (default) or 'udp6'. */
  createUdpSocket(type: 'udp4' | 'udp6' = 'udp4'): UdpSocket {
    return new UdpSocket(this, type);
  }

  /** ICMP echo to `ip`; resolves with the round-trip time. */
  ping(ip: string, timeoutMs = 1000): Promise<{ rttMs: number }> {
    return this.stack.icmp.ping(ip, { timeoutMs });
  }
}
