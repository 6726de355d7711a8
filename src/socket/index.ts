/**
 * The switching layer: Node-shaped sockets (`TcpSocket` like net.Socket, `TcpServer` like
 * net.Server, `UdpSocket` like dgram) that route every application call to whoever owns the
 * connection now, host stack or NIC, and hold calls while the connection moves. `Host` makes them.
 */
export { type ConnectOptions, connectSocket, normalizeConnectArgs } from './connect.ts';
export { Host } from './host.ts';
export { type ListenOptions, type ServerHost, TcpServer, type TcpServerOptions } from './tcp-server.ts';
export { type SocketHost, TcpSocket, type TcpSocketOptions } from './tcp-socket.ts';
export { type RemoteInfo, type UdpHost, UdpSocket } from './udp-socket.ts';
