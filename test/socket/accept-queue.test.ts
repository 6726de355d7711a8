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

  test('without a connection listener, established connections wait in a queue bounded by the backlog; the rest are dropped like a full accept queue', async () => {
    const { net, a, b } = pair();
    const server = b.createServer();
    server.listen({ port: 80, backlog: 4 });
    await once(server, 'listening');
    const socks: TcpSocket[] = [];
    const connected: number[] = [];
    for (let i = 0; i < 10; i++) {
      const s = a.connect(80, '10.0.0.2');
      s.on('error', () => {});
      // Like any client, it speaks first: its data carries the handshake's ACK again.
      s.on('connect', () => {
        connected.push(i);
        s.write('hi');
      });
      socks.push(s);
    }
    await net.sleep(500);
    // Linux's sk_acceptq_is_full: backlog + 1 fit (the test is "more than backlog").
    assert.equal(server.connections, 5);
    assert.equal(b.stack.counters.get('tcp.listen.overflow') > 0, true);
    // Nobody was reset: the others wait in SYN_SENT or SYN_RECEIVED, retrying, as against Linux.
    assert.equal(a.stack.counters.get('tcp.rst.in') ?? 0, 0);
    // Once the application takes connections, the queue drains and the waiting ones get in.
    const got: TcpSocket[] = [];
    server.on('connection', (s: TcpSocket) => {
      got.push(s);
      s.on('error', () => {});
      s.resume();
      s.end();
    });
    for (let i = 0; i < 120 && got.length < 10; i++) await net.sleep(1000);
    assert.equal(got.length, 10);
    assert.equal(connected.length, 10);
    for (const s of socks) {
      s.resume();
      s.end();
    }
    await net.sleep(1000);
    net.close();
  });

  test('a queued connection that the peer resets leaves the queue; closing the server resets the rest', async () => {
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
    assert.equal(server.connections, 3);
    socks[0]!.resetAndDestroy();
    await net.sleep(10);
    assert.equal(server.connections, 2);
    const resets: string[] = [];
    const closed = socks.slice(1).map(
      (s) =>
        new Promise<void>((resolve) => {
          s.on('error', (e: NodeJS.ErrnoException) => resets.push(String(e.code)));
          s.once('close', () => resolve());
        }),
    );
    server.close();
    await Promise.all(closed);
    assert.deepEqual(resets, ['ECONNRESET', 'ECONNRESET']);
    assert.equal(b.stack.tcp.size, 0);
    net.close();
  });
});
