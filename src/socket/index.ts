export { type ConnectOptions, connectSocket, normalizeConnectArgs } from './connect.ts';
export { Host } from './host.ts';
export { type ListenOptions, type ServerHost, TcpServer, type TcpServerOptions } from './tcp-server.ts';
export { type SocketHost, TcpSocket, type TcpSocketOptions } from './tcp-socket.ts';
export { type RemoteInfo, type UdpHost, UdpSocket } from './udp-socket.ts';
