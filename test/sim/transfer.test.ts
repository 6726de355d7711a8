import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { collect, randomBytes, sha256, writeAll } from '../helpers/streams.ts';

const LOSSY = { loss: 0.03, duplicate: 0.01, reorder: 0.02, delayMs: 2, jitterMs: 1 };

/** Every connection sends `bytes` each way at once; returns whether all of them arrived intact. */
async function bidirectional(net: SimNetwork, conns: number, bytes: number): Promise<number> {
  const a = net.hosts[0]!;
  const b = net.hosts[1]!;
  const serverResults: Promise<boolean>[] = [];
  // Each end closes its own direction only (see sendPattern in test/team/team-sim.ts).
  b.createServer({ allowHalfOpen: true }, (s) => {
    serverResults.push(
      (async () => {
        const head = await readExactly(s, 4);
        const idx = head.readUInt32BE(0);
        const [got] = await Promise.all([collect(s), writeAll(s, randomBytes(2000 + idx, bytes))]);
        return sha256(got) === sha256(randomBytes(1000 + idx, bytes));
      })(),
    );
  }).listen(5000);
  const clientResults = Array.from({ length: conns }, async (_, i) => {
    const s = a.connect({ port: 5000, host: '10.0.0.2', allowHalfOpen: true });
    await once(s, 'connect');
    const head = Buffer.alloc(4);
    head.writeUInt32BE(i);
    s.write(head);
    const [got] = await Promise.all([collect(s), writeAll(s, randomBytes(1000 + i, bytes))]);
    return sha256(got) === sha256(randomBytes(2000 + i, bytes));
  });
  const all = [...(await Promise.all(clientResults)), ...(await Promise.all(serverResults))];
  assert.equal(all.length, 2 * conns);
  return all.filter((ok) => !ok).length;
}

async function readExactly(s: TcpSocket, n: number): Promise<Buffer> {
  for (;;) {
    const b = s.read(n) as Buffer | null;
    if (b) return b;
    await once(s, 'readable');
  }
}

describe('TCP over the simulated network', () => {
  test('echo through a lossy, duplicating, reordering link', async () => {
    const net = new SimNetwork({ seed: 7, virtualTime: true });
    const a = net.addHost({ ip: '10.0.0.1/24' });
    const b = net.addHost({ ip: '10.0.0.2/24', impair: LOSSY });
    b.createServer((sock) => sock.pipe(sock)).listen(7);
    const sock = a.connect(7, '10.0.0.2');
    const data = randomBytes(1, 300_000);
    const [echoed] = await Promise.all([collect(sock), writeAll(sock, data)]);
    assert.equal(sha256(echoed), sha256(data));
    assert.ok(
      a.stack.counters.get('tcp.retransmits') + b.stack.counters.get('tcp.retransmits') > 0,
      'loss must cause retransmissions',
    );
    // Segments carrying SACK blocks must still fit the MTU (DF is set on every TCP packet).
    assert.equal(
      a.stack.counters.get('tx.drop.ipv4.frag-needed') + b.stack.counters.get('tx.drop.ipv4.frag-needed'),
      0,
    );
    net.close();
  });

  test('200 connections move 1 MB each way through 3% loss, 1% duplication, 2% reordering; a seed replays exactly', async () => {
    const run = async (): Promise<string> => {
      const net = new SimNetwork({ seed: 3, virtualTime: true, trace: true });
      net.addHost({ ip: '10.0.0.1/24' });
      net.addHost({ ip: '10.0.0.2/24', impair: LOSSY });
      const failed = await bidirectional(net, 200, 1 << 20);
      assert.equal(failed, 0);
      // Each side closes its own direction, so a duplicate of a last FIN can arrive after its
      // connection is gone and draws a RST (as Linux answers it), which the other end, in
      // TIME_WAIT, ignores (RFC 1337). What must not happen is a RST reaching an open connection.
      const count = (k: string): number => net.hosts.reduce((n, h) => n + h.stack.counters.get(k), 0);
      assert.equal(count('tcp.rst.in') - count('tcp.rst.in.time-wait'), 0, 'no open connection may be reset');
      const digest = net.traceDigest();
      net.close();
      return digest;
    };
    const first = await run();
    assert.equal(await run(), first, 'two runs with the same seed must put the same frames on the wire');
  });

  test('small runs: the same seed gives the same trace, another seed another', async () => {
    const run = async (seed: number): Promise<string> => {
      const net = new SimNetwork({ seed, virtualTime: true, trace: true });
      net.addHost({ ip: '10.0.0.1/24' });
      net.addHost({ ip: '10.0.0.2/24', impair: LOSSY });
      assert.equal(await bidirectional(net, 20, 100_000), 0);
      const d = net.traceDigest();
      assert.ok(net.framesTraced > 1000);
      net.close();
      return d;
    };
    const first = await run(5);
    assert.equal(await run(5), first);
    assert.notEqual(await run(6), first);
  });

  test('virtual time: a transfer survives a 30 s outage and timers jump ahead', async () => {
    const net = new SimNetwork({ seed: 9, virtualTime: true });
    const a = net.addHost({ ip: '10.0.0.1/24' });
    const b = net.addHost({ ip: '10.0.0.2/24' });
    b.createServer((s) => s.pipe(s)).listen(7);
    const sock = a.connect(7, '10.0.0.2');
    await once(sock, 'connect');
    const data = randomBytes(2, 200_000);
    const echoed = collect(sock);
    const t0 = net.now();
    sock.write(data.subarray(0, 100_000));
    b.cut();
    const restore = net.clock.createTimer(() => b.restore());
    restore.arm(30_000);
    await writeAll(sock, data.subarray(100_000));
    assert.equal(sha256(await echoed), sha256(data));
    assert.ok(net.now() - t0 >= 30_000, `virtual time advanced ${net.now() - t0} ms`);
    net.close();
  });

  test('ECN: a link that marks CE instead of dropping slows the sender without a loss or a resend', async () => {
    // The client asks for ECN (Linux's tcp_ecn=1), the server agrees (the default, 2) and echoes
    // a 1 MB download through a link that marks 5 % of ECN-capable packets. Asked not to, the
    // client's connection is not ECN-capable and the link marks nothing.
    const run = async (ask: boolean) => {
      const net = new SimNetwork({ seed: 11, virtualTime: true });
      const a = net.addHost({ ip: '10.0.0.1/24' });
      const b = net.addHost({ ip: '10.0.0.2/24', impair: { ceMark: 0.05, delayMs: 5 } });
      a.stack.tcp.ecn = ask ? 1 : 2;
      const data = randomBytes(4, 1 << 20);
      b.createServer((s) => s.end(data)).listen(80);
      const got = await collect(a.connect(80, '10.0.0.2'));
      assert.equal(sha256(got), sha256(data));
      const count = (h: typeof a, k: string): number => h.stack.counters.get(k);
      const r = {
        marked: net.switch.stats.get('ce-marked'),
        ceReceived: count(a, 'tcp.ecn.ce-received'),
        reductions: count(b, 'tcp.ecn.reductions'),
        resent: count(a, 'tcp.retransmits') + count(b, 'tcp.retransmits'),
      };
      net.close();
      return r;
    };
    const on = await run(true);
    assert.ok(on.marked > 10, `${on.marked} packets marked`);
    assert.ok(on.ceReceived > 0 && on.ceReceived <= on.marked, `${on.ceReceived} CE received`);
    assert.ok(on.reductions > 0, 'the server cut its window for the echoes');
    // One cut a window, not one a mark.
    assert.ok(on.reductions < on.ceReceived, `${on.reductions} cuts for ${on.ceReceived} marks`);
    assert.equal(on.resent, 0, 'no loss, so nothing resent');
    const off = await run(false);
    assert.deepEqual(off, { marked: 0, ceReceived: 0, reductions: 0, resent: 0 });
  });
});
