import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { connBytes } from '../../src/stack/tcp/tcp-mem.ts';
import { randomBytes, sha256 } from '../helpers/streams.ts';

const VICTIM = '10.0.0.1';

/**
 * A victim with limits, a sink on port 80 that never reads (what the attack fills), a digest
 * server on port 81, and a bystander connected to it before the attack starts.
 */
async function setup(limits: { maxConnections?: number; memBytes?: number }) {
  const net = new SimNetwork({ seed: 21, virtualTime: true });
  const victim = net.addHost({ ip: `${VICTIM}/24`, tcpLimits: limits });
  const attacker = net.addHost({ ip: '10.0.0.66/24', tcp: { maxSynRetransmits: 2 } });
  const friend = net.addHost({ ip: '10.0.0.2/24' });
  victim
    .createServer((s) => {
      s.on('error', () => {});
      s.pause();
    })
    .listen(80);
  const digests: string[] = [];
  victim
    .createServer((s) => {
      s.on('error', () => {});
      const parts: Buffer[] = [];
      s.on('data', (d: Buffer) => parts.push(d));
      s.on('end', () => {
        digests.push(sha256(Buffer.concat(parts)));
        s.end();
      });
    })
    .listen(81);
  const bystander = friend.connect(81, VICTIM);
  await once(bystander, 'connect');
  return { net, victim, attacker, bystander, digests };
}

/** The bystander sends `data` while the attack runs; resolves with the simulated ms it took. */
async function transfer(
  net: SimNetwork,
  s: TcpSocket,
  data: Buffer,
  digests: string[],
  check: () => void,
): Promise<number> {
  const t0 = net.now();
  let off = 0;
  const pump = (): void => {
    while (off < data.length) {
      const ok = s.write(data.subarray(off, off + 16384));
      off += 16384;
      if (!ok) return;
    }
    s.end();
  };
  s.on('drain', pump);
  s.resume();
  pump();
  for (let i = 0; i < 600 && digests.length === 0; i++) {
    await net.sleep(100);
    check();
  }
  return net.now() - t0;
}

describe('stack-wide TCP limits (Linux tcp_mem, and a connection cap)', () => {
  test('a connection flood stops at maxConnections; the bystander transfers intact meanwhile', async () => {
    const { net, victim, attacker, bystander, digests } = await setup({ maxConnections: 50 });
    const tcp = victim.stack.tcp;
    // 200 connects at a time, each refused or finished one replaced, 2,000 in all: the flood
    // goes on for the whole transfer.
    let attempts = 0;
    const open = (): void => {
      if (attempts++ >= 2000) return;
      const s = attacker.connect(80, VICTIM);
      s.on('error', () => {});
      s.on('connect', () => s.write(Buffer.alloc(1000, 1)));
      s.on('close', open);
    };
    await attacker.ping(VICTIM);
    for (let i = 0; i < 200; i++) open();
    await net.sleep(500);
    let most = tcp.liveCount;
    const data = randomBytes(5, 2 << 20);
    const ms = await transfer(net, bystander, data, digests, () => {
      most = Math.max(most, tcp.liveCount);
    });
    assert.deepEqual(digests, [sha256(data)]);
    assert.ok(ms < 30_000, `bystander took ${ms} ms of simulated time`);
    // The bystander is one of the 50; the attacker got the other 49.
    assert.ok(most <= 50, `${most} live connections`);
    assert.equal(most, 50);
    assert.ok(victim.stack.counters.get('tcp.conn.limit') >= 150);
    // The flood was still on when the bystander finished.
    assert.ok(attempts < 2000 || tcp.liveCount === 50, `${attempts} attempts`);
    net.close();
  });

  test('a memory flood: pressure shrinks newcomers, the limit refuses them and stops growth; usage stays bounded and the bystander transfers intact', async () => {
    const mem = 4 << 20;
    const { net, victim, attacker, bystander, digests } = await setup({ memBytes: mem });
    const tcp = victim.stack.tcp;
    const c = victim.stack.counters;
    // Each attacking connection sends 256 KiB the victim's application never reads; a new one
    // every 20 ms, so some arrive below pressure, some under it and some past the limit.
    await attacker.ping(VICTIM);
    for (let i = 0; i < 100; i++) {
      const s = attacker.connect(80, VICTIM);
      s.on('error', () => {});
      s.on('connect', () => s.write(Buffer.alloc(256 << 10, 1)));
      await net.sleep(20);
    }
    let most = 0;
    const data = randomBytes(6, 2 << 20);
    const ms = await transfer(net, bystander, data, digests, () => {
      most = Math.max(most, tcp.budget.used);
      // The budget is the sum of what the connections hold, not an estimate that drifts.
      let sum = 0;
      for (const conn of tcp.connections()) sum += connBytes(conn);
      assert.equal(tcp.budget.used, sum);
    });
    assert.deepEqual(digests, [sha256(data)]);
    assert.ok(ms < 60_000, `bystander took ${ms} ms of simulated time`);
    // Overshoot past the limit: one ring's last doubling (1 MiB rings: 512 KiB), and the 16 KiB
    // floor each ring of a connection may still fill at the limit.
    const floors = tcp.liveCount * 2 * (16 << 10);
    assert.ok(most <= mem + (512 << 10) + floors, `${most} bytes held at most, limit ${mem}`);
    const seen = JSON.stringify(c.snapshot());
    assert.ok(c.get('tcp.mem.pressure') >= 1, seen);
    assert.ok(c.get('tcp.mem.shrunk') > 0, seen);
    assert.ok(c.get('tcp.mem.limit') > 0, seen);
    net.close();
  });

  test('over the limit, out-of-order data is pruned, and refused connects fail with ENOBUFS', async () => {
    const net = new SimNetwork({ seed: 22, virtualTime: true });
    const a = net.addHost({ ip: '10.0.0.1/24', tcpLimits: { memBytes: 64 << 10 } });
    const b = net.addHost({ ip: '10.0.0.2/24' });
    b.createServer((s) => {
      s.on('error', () => {});
      s.write(Buffer.alloc(200 << 10, 3));
    }).listen(80);
    const first = a.connect(80, '10.0.0.2');
    first.on('error', () => {});
    first.pause();
    await net.sleep(1000);
    assert.ok(a.stack.tcp.budget.full, `${a.stack.tcp.budget.used} bytes held`);
    const late = a.connect(80, '10.0.0.2');
    const [err] = (await once(late, 'error')) as [NodeJS.ErrnoException];
    assert.equal(err.code, 'ENOBUFS');
    // A connection with out-of-order data loses it at its next segment once memory is full.
    const conn = [...a.stack.tcp.connections()][0]!;
    conn.state.soft.ooo.push({ seq: (conn.state.delegated.rcvNxt + 5000) >>> 0, data: new Uint8Array(1000) });
    conn.oooBytes += 1000;
    a.stack.tcp.memCharge(conn);
    first.resume();
    await net.sleep(1000);
    assert.equal(conn.state.soft.ooo.length, 0);
    assert.ok(a.stack.counters.get('tcp.mem.ooo-pruned') >= 1);
    net.close();
  });

  test('limits are validated, and a running layer takes new ones', () => {
    const net = new SimNetwork({ seed: 23, virtualTime: true });
    assert.throws(
      () => net.addHost({ ip: '10.0.0.1/24', tcpLimits: { maxConnections: 0 } }),
      /maxConnections/,
    );
    assert.throws(() => net.addHost({ ip: '10.0.0.1/24', tcpLimits: { memBytes: 1.5 } }), /memBytes/);
    const a = net.addHost({ ip: '10.0.0.1/24' });
    const b = a.stack.tcp.budget;
    assert.equal(b.maxConnections, 65_536);
    assert.equal(b.memBytes, 1 << 30);
    assert.throws(() => b.set({ maxConnections: -1, memBytes: 100 }), /maxConnections/);
    assert.equal(b.memBytes, 1 << 30);
    b.set({ memBytes: 100 });
    assert.equal(b.memBytes, 100);
    assert.equal(b.maxConnections, 65_536);
    net.close();
  });

  test('connections handed to a NIC still count against maxConnections', async () => {
    const net = new SimNetwork({ seed: 24, virtualTime: true });
    const host = net.addOffloadHost({
      ip: '10.0.0.1/24',
      tcpLimits: { maxConnections: 5 },
      policy: { mode: 'immediate', scanIntervalMs: 10 },
    });
    const client = net.addHost({ ip: '10.0.0.2/24', tcp: { maxSynRetransmits: 1 } });
    host
      .createServer((s) => {
        s.on('error', () => {});
        s.resume();
      })
      .listen(80);
    await client.ping('10.0.0.1');
    const first: TcpSocket[] = [];
    for (let i = 0; i < 5; i++) {
      const s = client.connect(80, '10.0.0.1');
      s.on('error', () => {});
      first.push(s);
    }
    await Promise.all(first.map((s) => once(s, 'connect')));
    await net.sleep(200);
    // All five run on NICs now; the host runs none of them itself.
    assert.equal(host.stack.tcp.size, 0);
    assert.equal(host.stack.tcp.liveCount, 5);
    const late = client.connect(80, '10.0.0.1');
    const closed = new Promise<string>((resolve) =>
      late.on('error', (e: NodeJS.ErrnoException) => resolve(String(e.code))),
    );
    assert.equal(await closed, 'ETIMEDOUT');
    assert.ok(host.stack.counters.get('tcp.conn.limit') >= 1);
    net.close();
  });
});
