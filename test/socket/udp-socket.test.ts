import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { ConnectionError, InvalidArgumentError } from '../../src/core/errors.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import type { RemoteInfo } from '../../src/socket/udp-socket.ts';

describe('UdpSocket behaves like dgram.Socket', () => {
  test('datagrams go both ways with the sender address, large ones fragmented and reassembled', async () => {
    const net = new SimNetwork({ seed: 2 });
    const a = net.addHost({ ip: '10.0.0.1/24' });
    const b = net.addHost({ ip: '10.0.0.2/24' });
    const server = b.createUdpSocket();
    server.bind(5353);
    await once(server, 'listening');
    assert.deepEqual(server.address(), { address: '0.0.0.0', family: 'IPv4', port: 5353 });
    server.on('message', (msg: Buffer, rinfo: RemoteInfo) =>
      server.send(Buffer.concat([Buffer.from('re:'), msg]), rinfo.port, rinfo.address),
    );
    const client = a.createUdpSocket();
    client.bind(0);
    await once(client, 'listening');
    const small = once(client, 'message');
    client.send('hello', 5353, '10.0.0.2');
    const [msg, rinfo] = (await small) as [Buffer, RemoteInfo];
    assert.equal(msg.toString(), 're:hello');
    assert.equal(rinfo.address, '10.0.0.2');
    assert.equal(rinfo.port, 5353);
    const big = Buffer.alloc(20_000, 7);
    const bigReply = once(client, 'message');
    client.send(big, 5353, '10.0.0.2');
    const [reply] = (await bigReply) as [Buffer];
    assert.equal(reply.length, 20_003);
    assert.ok(a.stack.counters.get('tx.ipv4.fragmented') > 0, 'a 20 KB datagram leaves in fragments');
    assert.ok(b.stack.counters.get('accept.ipv4.frag-queued') > 0, 'and is reassembled');
    client.close();
    server.close();
    net.close();
  });

  test('a datagram to a closed port brings ECONNREFUSED back as an error event', async () => {
    const net = new SimNetwork({ seed: 2 });
    const a = net.addHost({ ip: '10.0.0.1/24' });
    net.addHost({ ip: '10.0.0.2/24' });
    const s = a.createUdpSocket();
    s.send('anyone?', 9, '10.0.0.2');
    const [err] = (await once(s, 'error')) as [ConnectionError];
    assert.ok(err instanceof ConnectionError);
    assert.equal(err.code, 'ECONNREFUSED');
    s.close();
    net.close();
  });

  test('bad ports and addresses throw typed errors; EADDRINUSE is an error event', async () => {
    const net = new SimNetwork({ seed: 2 });
    const a = net.addHost({ ip: '10.0.0.1/24' });
    const s = a.createUdpSocket();
    assert.throws(() => s.bind(70000), InvalidArgumentError);
    assert.throws(() => s.send('x', 0, '10.0.0.2'), InvalidArgumentError);
    assert.throws(() => s.send('x', 53, '10.0.0'), InvalidArgumentError);
    a.createUdpSocket().bind(53);
    const second = a.createUdpSocket().bind(53);
    const [err] = (await once(second, 'error')) as [Error & { code: string }];
    assert.equal(err.code, 'EADDRINUSE');
    net.close();
  });
});
