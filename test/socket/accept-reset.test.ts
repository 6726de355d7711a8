/**
 * A connection in the accept queue stays there whatever its peer does before the application
 * takes it, as in Linux (the child socket stays queued; accept() returns it): Node on Linux emits
 * 'connection' for it, and the socket then reports what happened. Reset: 'error' ECONNRESET and
 * 'close' with hadError. FIN: readable to its end, then 'end' and 'close'. Checked against Node
 * 20 on Linux 6.18 with a net.Server whose event loop was blocked while the peer reset or ended.
 * (Node there, with data queued before the reset, gives the data and 'end', not the error: libuv
 * takes a short read with EPOLLHUP as EOF. Chimney gives the data, then reports the reset, as
 * read(2) on Linux would.)
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import type { Clock } from '../../src/core/clock.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import type { TcpServer } from '../../src/socket/tcp-server.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';

interface Seen {
  events: string[];
  data: string;
}

/**
 * A server whose application is slow to take its accepts: its deferred drains are held (as a
 * busy event loop holds them) until `take` is called. `peer` runs on the client's connected socket.
 */
async function slowAccept(peer: (s: TcpSocket) => void): Promise<Seen[]> {
  const net = new SimNetwork({ seed: 5, virtualTime: true });
  const a = net.addHost({ ip: '10.0.0.1/24' });
  const b = net.addHost({ ip: '10.0.0.2/24' });
  let server: TcpServer | null = null;
  const held: (() => void)[] = [];
  let holding = true;
  const clock = net.clock as Clock;
  const defer = clock.defer.bind(clock);
  clock.defer = (cb) => {
    const drain = (server as unknown as { drain: () => void } | null)?.drain;
    if (holding && cb === drain) held.push(cb);
    else defer(cb);
  };
  const seen: Seen[] = [];
  server = b.createServer((s) => {
    const one: Seen = { events: ['connection'], data: '' };
    seen.push(one);
    s.on('data', (d: Buffer) => (one.data += d.toString()));
    s.on('end', () => one.events.push('end'));
    s.on('error', (e: NodeJS.ErrnoException) => one.events.push(`error ${e.code}`));
    s.on('close', () => one.events.push('close'));
  });
  server.listen({ port: 80, backlog: 8 });
  const c = a.connect(80, '10.0.0.2');
  c.on('error', () => {});
  c.resume();
  await once(c, 'connect');
  peer(c);
  await net.sleep(500);
  assert.equal(seen.length, 0, 'not taken while the application is busy');
  holding = false;
  for (const cb of held.splice(0)) defer(cb);
  await net.sleep(500);
  net.close();
  return seen;
}

describe('a queued connection is handed out whatever its peer did meanwhile (as Node on Linux)', () => {
  test('reset before the application takes it: handed out, then ECONNRESET', async () => {
    const seen = await slowAccept((c) => c.resetAndDestroy());
    assert.deepEqual(seen, [{ events: ['connection', 'error ECONNRESET', 'close'], data: '' }]);
  });

  test('data, then a reset, before the application takes it: handed out, the data, then ECONNRESET', async () => {
    const seen = await slowAccept((c) => {
      c.write('hello');
      c.resetAndDestroy();
    });
    assert.deepEqual(seen, [{ events: ['connection', 'error ECONNRESET', 'close'], data: 'hello' }]);
  });

  test('ended with data before the application takes it: handed out, readable to its end', async () => {
    const seen = await slowAccept((c) => c.end('hello'));
    assert.deepEqual(seen, [{ events: ['connection', 'end', 'close'], data: 'hello' }]);
  });

  test('ended without data before the application takes it: handed out, then end', async () => {
    const seen = await slowAccept((c) => c.end());
    assert.deepEqual(seen, [{ events: ['connection', 'end', 'close'], data: '' }]);
  });
});
