import assert from 'node:assert/strict';
import http from 'node:http';
import { describe, test } from 'node:test';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import type { RemoteInfo } from '../../src/socket/udp-socket.ts';
import { randomBytes, sha256 } from '../helpers/streams.ts';
import { connected, failure, pair } from './helpers.ts';

function accepted(srv: { once(ev: 'connection', cb: (s: TcpSocket) => void): unknown }): Promise<TcpSocket> {
  return new Promise((resolve) => srv.once('connection', resolve));
}

describe('Node-shaped sockets with IPv6 literals', () => {
  test("listen() on a dual-stack host is '::' and takes both families, an IPv4 peer shown as ::ffff:a.b.c.d", async () => {
    const { net, a, b } = pair(71);
    const srv = b.createServer();
    srv.listen(80);
    assert.deepEqual(srv.address(), { address: '::', family: 'IPv6', port: 80 });
    const got4 = accepted(srv);
    const c4 = a.connect(80, '10.0.0.2');
    await connected(c4);
    const s4 = await got4;
    // What Node prints for an IPv4 client of a '::' server.
    assert.equal(s4.remoteAddress, '::ffff:10.0.0.1');
    assert.equal(s4.remoteFamily, 'IPv6');
    assert.equal(s4.localAddress, '::ffff:10.0.0.2');
    assert.deepEqual(s4.address(), { address: '::ffff:10.0.0.2', family: 'IPv6', port: 80 });
    // The client's own view stays IPv4.
    assert.equal(c4.remoteAddress, '10.0.0.2');
    assert.equal(c4.remoteFamily, 'IPv4');
    const got6 = accepted(srv);
    const c6 = a.connect({ port: 80, host: 'fd00::2' });
    await connected(c6);
    const s6 = await got6;
    assert.equal(s6.remoteAddress, 'fd00::1');
    assert.equal(s6.remoteFamily, 'IPv6');
    assert.equal(s6.localAddress, 'fd00::2');
    // A second listener on the port overlaps the dual-stack one (EADDRINUSE as an 'error' event).
    const clash = b.createServer();
    const err = await new Promise<Error & { code?: string }>((r) =>
      clash.listen(80, '0.0.0.0').once('error', r),
    );
    assert.equal(err.code, 'EADDRINUSE');
    srv.close();
    net.close();
  });

  test("listen(port, 'fd00::2') and ipv6Only take IPv6 only; an IPv4 SYN is refused", async () => {
    const { net, a, b } = pair(72);
    const srv = b.createServer();
    srv.listen(81, 'fd00::2');
    const refused = await failure(a.connect(81, '10.0.0.2'));
    assert.equal(refused.code, 'ECONNREFUSED');
    const ok = a.connect(81, 'fd00::2');
    await connected(ok);
    const only = b.createServer();
    only.listen({ port: 82, host: '::', ipv6Only: true });
    assert.deepEqual(only.address(), { address: '::', family: 'IPv6', port: 82 });
    assert.equal((await failure(a.connect(82, '10.0.0.2'))).code, 'ECONNREFUSED');
    await connected(a.connect(82, 'fd00::2'));
    // With IPv6 only, an IPv4 wildcard listener may share the port.
    const v4 = b.createServer();
    v4.listen(82, '0.0.0.0');
    await connected(a.connect(82, '10.0.0.2'));
    for (const s of [srv, only, v4]) s.close();
    net.close();
  });

  test('connect to a link-local address and from a chosen local address', async () => {
    const { net, a, b } = pair(73);
    const ll = b.stack.ip6.addresses(b.stack.interfaces[0]!).find((x) => x.origin === 'link-local')!.ip;
    const srv = b.createServer();
    srv.listen(90);
    const c = a.connect(90, ll);
    await connected(c);
    assert.equal(c.remoteAddress, ll);
    assert.ok(c.localAddress!.startsWith('fe80::'), 'a link-local destination takes a link-local source');
    const c2 = a.connect({ port: 90, host: 'fd00::2', localAddress: 'fd00::1', localPort: 4000 });
    await connected(c2);
    assert.deepEqual(c2.address(), { address: 'fd00::1', family: 'IPv6', port: 4000 });
    assert.throws(() => a.connect(90, 'fd00::2::1'), /IPv6|address/i);
    assert.throws(() => a.connect(90, '::'), /unicast/);
    srv.close();
    net.close();
  });

  test("Node's http.get runs over a Chimney socket to an IPv6 host", async () => {
    const { net, a, b } = pair(74, {}, { impair: { loss: 0.01, delayMs: 1 } });
    const body = randomBytes(9, 1_000_000);
    const httpServer = http.createServer((req, res) => {
      res.writeHead(200, { 'content-length': body.length, 'x-peer': String(req.socket.remoteAddress) });
      res.end(body);
    });
    const srv = b.createServer((s) => httpServer.emit('connection', s));
    srv.listen(8080, '::');
    const { status, peer, data } = await new Promise<{ status: number; peer: string; data: Buffer }>(
      (resolve, reject) => {
        const req = http.get(
          { createConnection: () => a.connect(8080, 'fd00::2') as never, path: '/x', host: 'fd00::2' },
          (res) => {
            const parts: Buffer[] = [];
            res.on('data', (d: Buffer) => parts.push(d));
            res.on('end', () =>
              resolve({
                status: res.statusCode ?? 0,
                peer: String(res.headers['x-peer']),
                data: Buffer.concat(parts),
              }),
            );
            res.on('error', reject);
          },
        );
        req.on('error', reject);
      },
    );
    assert.equal(status, 200);
    assert.equal(peer, 'fd00::1');
    assert.equal(sha256(data), sha256(body));
    srv.close();
    net.close();
  });

  test('udp6: datagrams both ways over IPv6, IPv4 into a :: socket as ::ffff:, port unreachable answered', async () => {
    const { net, a, b } = pair(75);
    const rx = b.createUdpSocket('udp6');
    const msgs: { data: string; info: RemoteInfo }[] = [];
    rx.on('message', (d: Buffer, info: RemoteInfo) => {
      msgs.push({ data: d.toString(), info });
      rx.send(`re:${d}`, info.port, info.address);
    });
    await new Promise<void>((r) => rx.bind(5353, r));
    assert.deepEqual(rx.address(), { address: '::', family: 'IPv6', port: 5353 });
    const tx = a.createUdpSocket('udp6');
    const replies: RemoteInfo[] = [];
    tx.on('message', (_d: Buffer, info: RemoteInfo) => replies.push(info));
    await new Promise<void>((r) => tx.bind(0, 'fd00::1', r));
    assert.equal(tx.address().address, 'fd00::1');
    tx.send('hello', 5353, 'fd00::2');
    const tx4 = a.createUdpSocket('udp4');
    tx4.send('v4', 5353, '10.0.0.2');
    // A big datagram leaves in IPv6 fragments and is reassembled.
    const big = 'x'.repeat(4000);
    tx.send(big, 5353, 'fd00::2');
    await net.sleep(20);
    assert.deepEqual(
      // The IPv4 one waits for ARP, so arrival order is not send order.
      msgs.map((m) => [m.data.length > 100 ? 'big' : m.data, m.info.address, m.info.family]).sort(),
      [
        ['big', 'fd00::1', 'IPv6'],
        ['hello', 'fd00::1', 'IPv6'],
        ['v4', '::ffff:10.0.0.1', 'IPv6'],
      ],
    );
    assert.equal(msgs.find((m) => m.data.length > 100)?.data, big);
    assert.ok(a.stack.counters.get('ipv6.tx.fragmented') >= 1);
    assert.deepEqual(
      replies.map((r) => [r.address, r.family, r.port]),
      [
        ['fd00::2', 'IPv6', 5353],
        ['fd00::2', 'IPv6', 5353],
      ],
    );
    // Nobody on 9999: ICMPv6 port unreachable comes back and reaches the sending socket.
    const errors: Error[] = [];
    tx.on('error', (e) => errors.push(e));
    tx.send('anyone?', 9999, 'fd00::2');
    await net.sleep(20);
    assert.equal(b.stack.counters.get('icmpv6.tx.unreachable'), 1);
    assert.equal(a.stack.counters.get('udp.icmp-error'), 1);
    assert.match(String((errors[0] as { code?: string } | undefined)?.code), /ECONNREFUSED/);
    assert.throws(() => tx4.send('x', 1, 'fd00::2'), /udp4/);
    for (const s of [rx, tx, tx4]) s.close();
    net.close();
  });
});
