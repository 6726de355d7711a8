import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type SimHost, SimNetwork } from '../../src/sim/sim-network.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { TcpStateId } from '../../src/state/tcp-state.ts';
import { parseIpv6 } from '../../src/wire/addr.ts';
import { writeL4Checksum6 } from '../../src/wire/checksum.ts';
import { collect, randomBytes, sha256, writeAll } from '../helpers/streams.ts';
import { connected, pair, tcp6Fields } from './helpers.ts';

/**
 * SYN cookies over IPv6 between two Chimney hosts (review r2 of s35: the cookie hash takes the
 * addresses' 16 bytes, not their handles, and `Listeners.cookieOverHalfOpen` had no IPv6 case).
 * The server listens with a backlog of one, so of two SYNs arriving together the second is
 * answered with a cookie.
 */

const SYN = 0x02;
const ACK = 0x10;
const RST = 0x04;

/**
 * Wraps `host`'s port: `fn` sees each frame it sends and returns false to keep it off the wire
 * (the frame is the sender's buffer: copy what is kept).
 */
function filterTx(host: SimHost, fn: (frame: Uint8Array) => boolean): (frame: Uint8Array) => boolean {
  const port = host.port;
  const orig = port.send.bind(port);
  port.send = (frame: Uint8Array) => (fn(frame) ? orig(frame) : true);
  return orig;
}

/** Overwrites the timestamp option of an IPv6 TCP frame with NOPs (a peer that does not offer it). */
function stripTimestamps(f: Uint8Array): void {
  const tcp = 54;
  const end = tcp + (f[tcp + 12]! >>> 4) * 4;
  for (let i = tcp + 20; i < end; ) {
    const kind = f[i]!;
    if (kind === 0) break;
    if (kind === 1) {
      i++;
      continue;
    }
    const len = f[i + 1]!;
    if (kind === 8) f.fill(1, i, i + len);
    i += len;
  }
  writeL4Checksum6(f, tcp, f.length - tcp, f.subarray(22, 38), f.subarray(38, 54), 6);
}

async function exchange(c: TcpSocket, s: TcpSocket, seed: number): Promise<void> {
  const up = randomBytes(seed, 200_000);
  const down = randomBytes(seed + 1, 200_000);
  const gotUp = collect(s);
  const gotDown = collect(c);
  await Promise.all([writeAll(c, up), writeAll(s, down)]);
  c.end();
  s.end();
  assert.equal(sha256(await gotUp), sha256(up), 'client to server');
  assert.equal(sha256(await gotDown), sha256(down), 'server to client');
}

function serverOf(b: SimHost, port: number) {
  const conn = [...b.tcp.connections()].find((x) => x.remotePort === port);
  assert.ok(conn, `server side of :${port}`);
  return conn;
}

describe('SYN cookies over IPv6', () => {
  for (const ts of [true, false]) {
    test(`a full backlog answers with a cookie; its ACK makes a connection that carries data both ways (${ts ? 'with' : 'without'} timestamps)`, async () => {
      const { net, a, b } = pair(ts ? 71 : 72);
      if (!ts) {
        filterTx(a, (f) => {
          if (tcp6Fields(f)?.flags === SYN) stripTimestamps(f);
          return true;
        });
      }
      const accepted = new Map<number, TcpSocket>();
      const srv = b.createServer({ allowHalfOpen: true }, (s) => accepted.set(s.remotePort!, s));
      srv.listen({ port: 5010, backlog: 1 });
      const c1 = a.connect({ port: 5010, host: 'fd00::2', allowHalfOpen: true });
      const c2 = a.connect({ port: 5010, host: 'fd00::2', allowHalfOpen: true });
      await Promise.all([connected(c1), connected(c2)]);
      const counters = b.stack.counters;
      assert.equal(counters.get('tcp.syncookies.sent'), 1, 'the second SYN found the backlog full');
      assert.equal(counters.get('tcp.syncookies.ok'), 1);
      assert.equal(counters.get('tcp.syncookies.failed'), 0);
      const k = serverOf(b, c2.localPort!).state.const;
      assert.equal(k.remoteMss, 1440, "the cookie's MSS: the table's 1440 for IPv6 on a 1500-byte link");
      assert.deepEqual([k.tsEnabled, k.wsEnabled, k.sackEnabled], [ts, ts, ts]);
      await net.sleep(5);
      const s2 = accepted.get(c2.localPort!);
      assert.ok(s2, 'the cookie connection accepted');
      assert.equal(s2.remoteAddress, 'fd00::1');
      await exchange(c2, s2, ts ? 10 : 20);
      await exchange(c1, accepted.get(c1.localPort!)!, ts ? 30 : 40);
      srv.close();
      net.close();
    });
  }

  test('a cookie ACK that finds the half-open connection its resent SYN made is honoured, not reset', async () => {
    // As the IPv4 case in test/tcp/defects.test.ts: the cookie SYN-ACK is late, the client's SYN
    // is sent again once the backlog has room and makes a half-open connection with another ISS,
    // then the cookie SYN-ACK arrives and the client is established on it.
    const { net, a, b } = pair(73);
    const srv = b.createServer({ allowHalfOpen: true }, () => {});
    const accepted = new Map<number, TcpSocket>();
    srv.on('connection', (s: TcpSocket) => accepted.set(s.remotePort!, s));
    srv.listen({ port: 5011, backlog: 1 });
    const c1 = a.connect({ port: 5011, host: 'fd00::2', allowHalfOpen: true });
    const c2 = a.connect({ port: 5011, host: 'fd00::2', allowHalfOpen: true });
    const port2 = c2.localPort!;
    let held: Uint8Array | null = null;
    let synAcks = 0;
    let resets = 0;
    const send = filterTx(b, (f) => {
      const t = tcp6Fields(f);
      if (t === null || t.dstPort !== port2) return true;
      if (t.flags & RST) resets++;
      if (t.flags !== (SYN | ACK)) return true;
      // The first is the cookie's: held back. The half-open connection's never arrive.
      if (synAcks++ === 0) held = f.slice();
      return false;
    });
    await connected(c1);
    assert.equal(b.stack.counters.get('tcp.syncookies.sent'), 1);
    // The client's SYN goes again after its 1 s RTO; the backlog has room now.
    await net.sleep(1500);
    assert.ok(synAcks >= 2, 'the resent SYN was answered by a half-open connection');
    const half = serverOf(b, port2);
    assert.equal(half.state.delegated.state, TcpStateId.SYN_RECEIVED);
    assert.ok(held);
    const cookieIss = ((held[58]! << 24) | (held[59]! << 16) | (held[60]! << 8) | held[61]!) >>> 0;
    assert.notEqual(half.state.delegated.iss, cookieIss, 'the half-open connection has its own ISS');
    send(held);
    await connected(c2);
    await net.sleep(5);
    const counters = b.stack.counters;
    assert.equal(resets, 0, 'no reset');
    assert.equal(counters.get('tcp.syncookies.over-half-open'), 1);
    assert.equal(counters.get('tcp.syncookies.ok'), 1);
    const mine = [...b.tcp.connections()].filter((x) => x.remotePort === port2);
    assert.equal(mine.length, 1, 'the half-open connection is gone');
    assert.equal(mine[0]!.state.delegated.state, TcpStateId.ESTABLISHED);
    assert.equal(mine[0]!.state.delegated.sndUna, (cookieIss + 1) >>> 0, "on the cookie's sequence space");
    const s2 = accepted.get(port2);
    assert.ok(s2, 'the cookie connection accepted');
    await exchange(c2, s2, 50);
    srv.close();
    net.close();
  });

  test("a cookie holds when the peer's address comes back under another table slot before its ACK", async () => {
    // The cookie hash took the IPv6 handles (address-table slots) besides the addresses: a peer
    // whose path was evicted by other sources' SYNs (the flood cookies are for) and whose address
    // was interned again under another slot at its ACK had its cookie refused and was reset.
    const net = new SimNetwork({ seed: 74 });
    const ipv6 = { dadTransmits: 0, routerSolicitations: 0 };
    const b = net.addHost({ ip: '10.0.0.2/24', ip6: 'fd00::2/64', ipv6: { ...ipv6, maxPaths: 1 } });
    const a = net.addHost({ ip: '10.0.0.1/24', ip6: 'fd00::1/64', ipv6 });
    const others = [3, 4, 5].map((i) => net.addHost({ ip: `10.0.0.${i}/24`, ip6: `fd00::${i}/64`, ipv6 }));
    const accepted = new Map<number, TcpSocket>();
    const srv = b.createServer({ allowHalfOpen: true }, (s) => accepted.set(s.remotePort!, s));
    srv.listen({ port: 5012, backlog: 1 });
    let toA = -1;
    let held: Uint8Array | null = null;
    let resets = 0;
    const send = filterTx(b, (f) => {
      const t = tcp6Fields(f);
      if (t === null) return true;
      if (t.dstPort === toA && t.flags & RST) resets++;
      if (t.flags !== (SYN | ACK)) return true;
      // The others' handshakes never finish: the first stays half-open and fills the backlog.
      if (t.dstPort === toA && held === null) held = f.slice();
      return false;
    });
    const quiet = () => {};
    others[0]!.connect(5012, 'fd00::2').on('error', quiet);
    await net.sleep(5);
    const c = a.connect({ port: 5012, host: 'fd00::2', allowHalfOpen: true });
    toA = c.localPort!;
    await net.sleep(5);
    assert.ok(held, 'the cookie SYN-ACK');
    const addrA = parseIpv6('fd00::1');
    const handle = b.stack.addrs.find(addrA, 0);
    // Two more sources, each path evicting the one before: the first takes a fresh slot and
    // frees fd00::1's, the second takes that one, so fd00::1 comes back elsewhere.
    for (const o of others.slice(1)) {
      o.connect(5012, 'fd00::2').on('error', quiet);
      await net.sleep(5);
    }
    assert.equal(b.stack.addrs.find(addrA, 0), -1, "fd00::1's path evicted, its handle released");
    send(held);
    await connected(c);
    await net.sleep(5);
    const counters = b.stack.counters;
    assert.equal(counters.get('tcp.syncookies.sent'), 3);
    assert.equal(counters.get('tcp.syncookies.failed'), 0);
    assert.equal(counters.get('tcp.syncookies.ok'), 1);
    assert.equal(resets, 0, 'no reset');
    assert.notEqual(b.stack.addrs.find(addrA, 0), handle, 'fd00::1 is under another handle now');
    const s = accepted.get(toA);
    assert.ok(s, 'the cookie connection accepted');
    await exchange(c, s, 60);
    srv.close();
    net.close();
  });
});
