import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { ConnectionError, InvalidArgumentError, InvalidStateError } from '../../src/core/errors.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import { collect } from '../helpers/streams.ts';

function pair() {
  const net = new SimNetwork({ seed: 1, virtualTime: true });
  const a = net.addHost({ ip: '10.0.0.1/24' });
  const b = net.addHost({ ip: '10.0.0.2/24' });
  return { net, a, b };
}

describe('TcpSocket and TcpServer behave like net.Socket and net.Server', () => {
  test('connect, addresses, byte counts, orderly close', async () => {
    const { net, a, b } = pair();
    const server = b.createServer((s) => {
      s.end('pong');
      s.resume();
    });
    server.listen(80);
    await once(server, 'listening');
    assert.deepEqual(server.address(), { address: '0.0.0.0', family: 'IPv4', port: 80 });
    const s = a.connect({ port: 80, host: '10.0.0.2' });
    assert.equal(s.connecting, true);
    await once(s, 'connect');
    assert.equal(s.connecting, false);
    assert.equal(s.remoteAddress, '10.0.0.2');
    assert.equal(s.remotePort, 80);
    assert.equal(s.localAddress, '10.0.0.1');
    assert.ok(s.localPort! >= 49152);
    const closed = once(s, 'close');
    s.end('ping');
    const got = await collect(s);
    assert.equal(got.toString(), 'pong');
    await closed;
    assert.equal(s.bytesRead, 4);
    assert.equal(s.bytesWritten, 4);
    net.close();
  });

  test('half-close with allowHalfOpen: the server answers after the client ends', async () => {
    const { net, a, b } = pair();
    b.createServer({ allowHalfOpen: true }, async (s) => {
      const got = await collect(s);
      s.end(`got ${got.length}`);
    }).listen(81);
    const s = a.connect(81, '10.0.0.2');
    s.end(Buffer.alloc(10_000, 1));
    assert.equal((await collect(s)).toString(), 'got 10000');
    net.close();
  });

  test('ECONNREFUSED when nothing listens', async () => {
    const { net, a } = pair();
    const s = a.connect(9999, '10.0.0.2');
    const [err] = (await once(s, 'error')) as [ConnectionError];
    assert.ok(err instanceof ConnectionError);
    assert.equal(err.code, 'ECONNREFUSED');
    net.close();
  });

  test('ETIMEDOUT or EHOSTUNREACH when the peer does not exist', async () => {
    const { net, a } = pair();
    const s = a.connect(80, '10.0.0.99');
    const [err] = (await once(s, 'error')) as [ConnectionError];
    assert.ok(['ETIMEDOUT', 'EHOSTUNREACH'].includes(err.code), err.code);
    net.close();
  });

  test('bad arguments throw typed errors', () => {
    const { net, a, b } = pair();
    assert.throws(() => a.connect(0, '10.0.0.2'), InvalidArgumentError);
    assert.throws(() => a.connect(70000, '10.0.0.2'), InvalidArgumentError);
    assert.throws(() => a.connect(80, '10.0.0.300'), InvalidArgumentError);
    assert.throws(() => b.createServer().listen(-1), InvalidArgumentError);
    assert.throws(() => net.addHost({ ip: 'nonsense' }), InvalidArgumentError);
    net.close();
  });

  test('EADDRINUSE arrives as an error event, as in Node', async () => {
    const { net, b } = pair();
    b.createServer().listen(80);
    const second = b.createServer().listen(80);
    const [err] = (await once(second, 'error')) as [Error & { code: string }];
    assert.equal(err.code, 'EADDRINUSE');
    net.close();
  });

  test('write after end is an error', async () => {
    const { net, a, b } = pair();
    b.createServer((s) => s.resume()).listen(80);
    const s = a.connect(80, '10.0.0.2');
    await once(s, 'connect');
    s.end();
    const emitted = once(s, 'error');
    const err = await new Promise<Error>((resolve) => s.write('late', (e) => resolve(e!)));
    assert.equal((err as Error & { code: string }).code, 'ERR_STREAM_WRITE_AFTER_END');
    assert.equal(((await emitted)[0] as Error & { code: string }).code, 'ERR_STREAM_WRITE_AFTER_END');
    net.close();
  });

  test("setTimeout emits 'timeout' after idle time on the network clock", async () => {
    const { net, a, b } = pair();
    b.createServer((s) => s.resume()).listen(80);
    const s = a.connect(80, '10.0.0.2');
    await once(s, 'connect');
    const t0 = net.now();
    s.setTimeout(5000);
    await once(s, 'timeout');
    assert.ok(net.now() - t0 >= 5000);
    s.destroy();
    net.close();
  });

  test('destroy() of a socket with unread data resets the peer', async () => {
    const { net, a, b } = pair();
    let serverSock: import('../../src/socket/tcp-socket.ts').TcpSocket | null = null;
    b.createServer((s) => {
      serverSock = s;
      s.write(Buffer.alloc(1000));
    }).listen(80);
    const s = a.connect(80, '10.0.0.2');
    await once(s, 'connect');
    // Do not read: wait until the data sits in the receive buffer, then destroy.
    await net.sleep(100);
    s.destroy();
    const [err] = (await once(serverSock!, 'error')) as [ConnectionError];
    assert.equal(err.code, 'ECONNRESET');
    net.close();
  });

  test('server close waits for its connections', async () => {
    const { net, a, b } = pair();
    const server = b.createServer((s) => s.pipe(s));
    server.listen(80);
    const s = a.connect(80, '10.0.0.2');
    await once(s, 'connect');
    let closed = false;
    server.close(() => {
      closed = true;
    });
    await net.sleep(10);
    assert.equal(closed, false);
    s.end();
    s.resume();
    await once(server, 'close');
    assert.equal(closed, true);
    net.close();
  });
});

describe('nothing runs on a closed stack', () => {
  test('connect: the socket emits ENETDOWN and no SYN leaves', async () => {
    const { net, a, b } = pair();
    b.createServer().listen(80);
    await net.sleep(1);
    a.stack.close();
    const before = b.stack.counters.get('rx.frames');
    const s = a.connect(80, '10.0.0.2');
    const [err] = (await once(s, 'error')) as [ConnectionError];
    assert.ok(err instanceof ConnectionError);
    assert.equal(err.code, 'ENETDOWN');
    await net.sleep(10_000);
    assert.equal(b.stack.counters.get('rx.frames'), before, 'nothing reached the peer');
    assert.equal(a.stack.tcp.size, 0, 'no connection (and so no timer) was left behind');
    net.close();
  });

  test('listen is refused with a typed error: no SYN arriving afterwards is answered', async () => {
    const { net, b } = pair();
    b.stack.close();
    assert.throws(() => b.createServer().listen(80), InvalidStateError);
    net.close();
  });

  test('a UDP bind or send is refused, as an error event, and nothing is sent', async () => {
    const { net, a, b } = pair();
    a.stack.close();
    const before = b.stack.counters.get('rx.frames');
    const bound = a.createUdpSocket();
    bound.bind(5000);
    const [err] = (await once(bound, 'error')) as [Error];
    assert.ok(err instanceof InvalidStateError, String(err));
    const u = a.createUdpSocket();
    const errors: Error[] = [];
    u.on('error', (e: Error) => errors.push(e));
    let sendErr: Error | null = null;
    u.send('x', 5000, '10.0.0.2', (e) => {
      sendErr = e;
    });
    await net.sleep(100);
    assert.ok(errors[0] instanceof InvalidStateError, 'the implicit bind is refused');
    assert.ok(sendErr !== null, 'the send fails');
    assert.equal(b.stack.counters.get('rx.frames'), before, 'nothing reached the peer');
    bound.close();
    u.close();
    net.close();
  });

  test('announce is refused with a typed error: no gratuitous ARP leaves', async () => {
    const { net, a, b } = pair();
    await net.sleep(1);
    a.stack.close();
    const before = b.stack.counters.get('rx.frames');
    const announced = a.stack.counters.get('arp.tx.gratuitous');
    assert.throws(() => a.stack.announce(), InvalidStateError);
    assert.throws(() => a.stack.announce(a.stack.interfaces[0]!), InvalidStateError);
    await net.sleep(100);
    assert.equal(b.stack.counters.get('rx.frames'), before, 'nothing reached the peer');
    assert.equal(a.stack.counters.get('arp.tx.gratuitous'), announced);
    net.close();
  });
});
