/**
 * A paused socket keeps what it has not read after the peer's reset (the reset waits behind the
 * data, as read(2) on Linux gives it), but the reset closes the connection and takes it out of the
 * layer: its memory charge must stay until the data is read or the socket destroyed, or the
 * stack's memory limit (TcpLimits.memBytes, Linux's tcp_mem) no longer bounds what paused readers
 * of reset connections hold. Linux keeps queued skbs charged until recvmsg frees them or close(2)
 * purges them. Reviewer r3's scenario: 20 paused sockets, 400 KB sent to each, clients reset.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';

test('unread data of reset connections stays charged until read or destroyed', async () => {
  const net = new SimNetwork({ seed: 5, virtualTime: true });
  try {
    const a = net.addHost({ ip: '10.0.0.1/24' });
    const b = net.addHost({ ip: '10.0.0.2/24' });
    const socks: TcpSocket[] = [];
    b.createServer((s) => {
      s.once('data', () => s.pause());
      s.on('error', () => {});
      socks.push(s);
    }).listen(80);
    const clients: TcpSocket[] = [];
    for (let i = 0; i < 20; i++) {
      const c = a.connect(80, '10.0.0.2');
      c.on('error', () => {});
      clients.push(c);
    }
    await net.sleep(50);
    for (const c of clients) c.write(Buffer.alloc(400_000));
    await net.sleep(2000);
    const budget = b.stack.tcp.budget;
    const unread = (): number => socks.reduce((n, s) => n + (s.connection?.readableLength ?? 0), 0);
    assert.equal(socks.length, 20);
    const before = budget.used;
    assert.ok(unread() > 1_000_000, `${unread()} bytes unread before the reset`);

    for (const c of clients) c.resetAndDestroy();
    await net.sleep(500);
    assert.equal(b.stack.tcp.liveCount, 0, 'the resets closed every connection');
    const held = unread();
    assert.ok(held > 1_000_000, `${held} bytes still unread after the reset`);
    assert.ok(before >= held);
    // The rings are gone from the layer; what the sockets still hold is what stays charged.
    assert.equal(budget.used, held);
    // So the limit still bounds them: at it, a new connection is refused.
    budget.set({ memBytes: held });
    const refused = b.stack.counters.get('tcp.mem.limit');
    const late = a.connect(80, '10.0.0.2');
    late.on('error', () => {});
    await net.sleep(100);
    assert.equal(b.stack.counters.get('tcp.mem.limit'), refused + 1);
    late.destroy();
    budget.set({ memBytes: Number.POSITIVE_INFINITY });
    await net.sleep(10);
    assert.equal(socks.length, 20);

    // Reading half of the sockets to the end: their charge goes with their data.
    for (const s of socks.slice(0, 10)) s.resume();
    await net.sleep(500);
    assert.ok(
      socks.slice(0, 10).every((s) => s.destroyed),
      'read to the reset',
    );
    const rest = unread();
    assert.ok(rest > 0 && rest < held);
    assert.equal(budget.used, rest);

    // Destroyed unread: nothing stays charged.
    for (const s of socks.slice(10)) s.destroy();
    await net.sleep(10);
    assert.equal(budget.used, 0);
  } finally {
    net.close();
  }
});
