import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';

function pair() {
  const net = new SimNetwork({ seed: 7, virtualTime: true });
  const a = net.addHost({ ip: '10.0.0.1/24' });
  const b = net.addHost({ ip: '10.0.0.2/24' });
  return { net, a, b };
}

describe('TcpServer releases what the application never reads or never takes', () => {
  test('a socket never read ends and closes at the peer FIN (as net.Socket does), and the server lets go of it', async () => {
    const { net, a, b } = pair();
    const server = b.createServer((s) => {
      s.on('error', () => {});
      // Writes and ends, never reads: Node still emits 'end' at the peer's FIN and then 'close'.
      s.end('bye');
    });
    server.listen(80);
    const socks: TcpSocket[] = [];
    for (let i = 0; i < 20; i++) {
      const s = a.connect(80, '10.0.0.2');
      s.on('error', () => {});
      s.on('end', () => s.end());
      s.resume();
      socks.push(s);
    }
    await Promise.all(socks.map((s) => once(s, 'close')));
    // The server's sockets saw their end; TIME_WAIT is TCP's business, not the server's.
    await net.sleep(100);
    assert.equal(server.connections, 0);
    const closed = once(server, 'close');
    server.close();
    await closed;
    net.close();
  });

  test('closing a server with nobody listening leaves what it accepted open, as Node does; it closes once they end', async () => {
    const { net, a, b } = pair();
    const server = b.createServer();
    server.listen({ port: 80, backlog: 8 });
    const socks: TcpSocket[] = [];
    for (let i = 0; i < 3; i++) {
      const s = a.connect(80, '10.0.0.2');
      s.on('error', () => {});
      socks.push(s);
    }
    await Promise.all(socks.map((s) => once(s, 'connect')));
    await net.sleep(10);
    assert.equal(server.connections, 3, 'accepted, with nobody listening');
    server.close();
    await net.sleep(100);
    assert.equal(server.connections, 3, 'the accepted ones stay open');
    assert.ok(socks.every((s) => !s.destroyed));
    const closed = once(server, 'close');
    for (const s of socks) {
      s.resume();
      s.end();
    }
    await closed;
    assert.equal(server.connections, 0);
    net.close();
  });
});
