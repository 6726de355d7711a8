import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AdminServer, parseAdminAddress } from '../../src/cli/admin.ts';
import { stackMetrics } from '../../src/cli/admin-source.ts';
import type { StatusSnapshot } from '../../src/cli/control.ts';
import { StatusReporter } from '../../src/cli/status.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';

const BIN = fileURLToPath(new URL('../../bin/chimney.js', import.meta.url));

/** Send raw bytes to the endpoint and return everything it answers before closing. */
function raw(port: number, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.end(bytes));
    let out = '';
    s.setEncoding('latin1');
    s.on('data', (d) => {
      out += d;
    });
    s.on('close', () => resolve(out));
    s.on('error', reject);
  });
}

describe('admin endpoint', () => {
  const CONNS = 40;
  let simnet: SimNetwork;
  let admin: AdminServer;
  let port: number;
  let metrics: ReturnType<typeof stackMetrics>;
  const socks: TcpSocket[] = [];
  before(async () => {
    simnet = new SimNetwork({ seed: 3, virtualTime: false });
    const a = simnet.addHost({ ip: '10.0.0.1/24' });
    const b = simnet.addHost({ ip: '10.0.0.2/24' });
    b.createServer((s) => s.pipe(s)).listen(7);
    await Promise.all(
      Array.from({ length: CONNS }, () => {
        const s = a.connect(7, '10.0.0.2');
        socks.push(s);
        return new Promise((r) => s.once('connect', r));
      }),
    );
    for (const s of socks) s.write('x'.repeat(1000));
    metrics = stackMetrics(b.stack, new StatusReporter(b.stack, 'test'), undefined, {
      processMetrics: false,
    });
    admin = await AdminServer.start(metrics, { host: '127.0.0.1', port: 0, pushMs: 5, backlogBytes: 1 });
    port = Number(new URL(admin.url).port);
  });
  after(async () => {
    await admin.close();
    for (const s of socks) s.destroy();
    simnet.close();
  });

  test('serves /metrics in the strict text format and /api/status as the status snapshot', async () => {
    const scrape = async () => parsePrometheusText(await (await fetch(`${admin.url}/metrics`)).text());
    let m = await scrape();
    assert.equal(sumOf(m, 'chimney_connections', { owner: 'host', state: 'ESTABLISHED' }), CONNS);
    // Bytes counted before the first scrape count too, and totals never fall between scrapes.
    let last = 0;
    for (let i = 0; i < 100 && sumOf(m, 'chimney_tcp_bytes_total', { direction: 'in' }) < CONNS * 1000; i++) {
      const now = sumOf(m, 'chimney_tcp_bytes_total', { direction: 'in' });
      assert.ok(now >= last);
      last = now;
      await new Promise((r) => setTimeout(r, 20));
      m = await scrape();
    }
    assert.equal(sumOf(m, 'chimney_tcp_bytes_total', { direction: 'in' }), CONNS * 1000);
    assert.equal(sumOf(m, 'chimney_tcp_bytes_total', { direction: 'out' }), CONNS * 1000, 'the echo');
    // The TCP limits: the 40 echo connections and the bytes their buffers hold, next to the limits.
    assert.equal(sumOf(m, 'chimney_tcp_limit', { what: 'connections' }), CONNS);
    assert.equal(sumOf(m, 'chimney_tcp_limit', { what: 'max_connections' }), 65_536);
    // Rings start small and grow with what passes (FIRST_RING): each connection's two grew to hold
    // the 1,000 bytes that went each way.
    assert.ok(sumOf(m, 'chimney_tcp_limit', { what: 'mem_bytes' }) >= CONNS * 2 * 1000);
    assert.equal(sumOf(m, 'chimney_tcp_limit', { what: 'max_mem_bytes' }), 1 << 30);
    const s = (await (await fetch(`${admin.url}/api/status`)).json()) as StatusSnapshot;
    assert.equal(s.name, 'test');
    assert.deepEqual(s.addresses, ['10.0.0.2/24']);
    assert.equal(s.trees[0]?.paths[0]?.conns.length, CONNS);
  });

  test('a SYN refused at the connection limit shows in the limit events', async () => {
    const b = simnet.hosts[1]!;
    const a = simnet.hosts[0]!;
    b.stack.tcp.budget.set({ maxConnections: CONNS });
    try {
      const s = a.connect(7, '10.0.0.2');
      s.on('error', () => {});
      let m = parsePrometheusText(await (await fetch(`${admin.url}/metrics`)).text());
      for (
        let i = 0;
        i < 100 && sumOf(m, 'chimney_tcp_limit_events_total', { event: 'conn.limit' }) < 1;
        i++
      ) {
        await new Promise((r) => setTimeout(r, 20));
        m = parsePrometheusText(await (await fetch(`${admin.url}/metrics`)).text());
      }
      assert.ok(sumOf(m, 'chimney_tcp_limit_events_total', { event: 'conn.limit' }) >= 1);
      assert.equal(sumOf(m, 'chimney_tcp_limit', { what: 'max_connections' }), CONNS);
      s.destroy();
    } finally {
      b.stack.tcp.budget.set({ maxConnections: 65_536 });
    }
  });

  test('RSTs received and sent, on connections and without one, show in chimney_tcp_resets_total', async () => {
    const a = simnet.hosts[0]!;
    const scrape = async () => parsePrometheusText(await (await fetch(`${admin.url}/metrics`)).text());
    const resets = (m: Awaited<ReturnType<typeof scrape>>) => [
      sumOf(m, 'chimney_tcp_resets_total', { direction: 'in' }),
      sumOf(m, 'chimney_tcp_resets_total', { direction: 'out' }),
    ];
    const [in0, out0] = resets(await scrape());
    // A SYN to a port nothing listens on: b answers with a RST no connection of b's sends.
    const refused = a.connect(9, '10.0.0.2');
    await new Promise((r) => refused.once('error', r));
    // An established connection the client resets: b receives it, and the connection ends with it.
    const srv = simnet.hosts[1]!.createServer((c) => c.on('error', () => {}));
    srv.listen(8);
    const s = a.connect(8, '10.0.0.2');
    await new Promise((r) => s.once('connect', r));
    s.resetAndDestroy();
    let m = await scrape();
    for (let i = 0; i < 100 && (resets(m)[0]! < in0! + 1 || resets(m)[1]! < out0! + 1); i++) {
      await new Promise((r) => setTimeout(r, 20));
      m = await scrape();
    }
    assert.deepEqual(resets(m), [in0! + 1, out0! + 1]);
    srv.close();
  });

  test('a malformed or unknown request gets a 4xx and nothing else', async () => {
    assert.match(await raw(port, 'GARBAGE\r\n\r\n'), /^HTTP\/1\.1 400 /);
    assert.match(
      await raw(port, 'GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n'),
      /^HTTP\/1\.1 400 /,
    );
    assert.match(
      await raw(port, `GET /${'a'.repeat(20000)} HTTP/1.1\r\nX: ${'b'.repeat(20000)}\r\n\r\n`),
      /^HTTP\/1\.1 431 /,
    );
    assert.equal((await fetch(`${admin.url}/no-such-page`)).status, 404);
    const post = await fetch(`${admin.url}/metrics`, { method: 'POST', body: 'x' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    // And the endpoint still answers afterwards.
    assert.equal((await fetch(`${admin.url}/metrics`)).status, 200);
  });

  test('a live-view client that never reads misses updates, counted, while others are served', async () => {
    const stuck = net.connect(port, '127.0.0.1');
    stuck.write('GET /events HTTP/1.1\r\nHost: x\r\n\r\n');
    stuck.pause();
    let dropped = 0;
    for (let i = 0; i < 1200 && dropped === 0; i++) {
      await new Promise((r) => setTimeout(r, 25));
      dropped = sumOf(
        parsePrometheusText(await (await fetch(`${admin.url}/metrics`)).text()),
        'chimney_admin_updates_dropped_total',
      );
    }
    assert.ok(dropped > 0, 'updates for the stuck client are dropped and counted');
    // The stack under it still moves data.
    const echoed = await new Promise<number>((resolve) => {
      socks[0]!.once('data', (d: Buffer) => resolve(d.length));
      socks[0]!.write('ping');
    });
    assert.ok(echoed > 0);
    stuck.destroy();
  });

  test('only loopback unless told otherwise', () => {
    assert.deepEqual(parseAdminAddress('127.0.0.1:9464', false), { host: '127.0.0.1', port: 9464 });
    assert.deepEqual(parseAdminAddress('[::1]:9464', false), { host: '::1', port: 9464 });
    assert.throws(() => parseAdminAddress('0.0.0.0:9464', false), /not a loopback address.*--admin-public/);
    assert.throws(() => parseAdminAddress('192.0.2.1:9464', false), /--admin-public/);
    assert.deepEqual(parseAdminAddress('0.0.0.0:9464', true), { host: '0.0.0.0', port: 9464 });
    assert.throws(() => parseAdminAddress('127.0.0.1:99999', false), /bad port/);
    assert.throws(() => parseAdminAddress('example.com:80', false), /not an IP address/);
    // The command refuses before it opens anything (no TAP, no root needed).
    const r = spawnSync(
      process.execPath,
      [BIN, 'serve', '--tap', 'chimney-none0', '--ip', '10.9.0.2/24', '--admin', '10.9.0.2:9464'],
      {
        encoding: 'utf8',
        timeout: 60_000,
      },
    );
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--admin: 10\.9\.0\.2 is not a loopback address; add --admin-public/);
  });
});
