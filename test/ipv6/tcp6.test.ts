import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { formatIpv6, parseIpv6 } from '../../src/wire/addr.ts';
import { collect, randomBytes, sha256, writeAll } from '../helpers/streams.ts';
import { connected, failure, ipv6Frame, packetTooBig, pair, rawPort, tapTx, tcp6Fields } from './helpers.ts';

describe('TCP over IPv6 between two Chimney hosts', () => {
  test('10 MB each way with digests; ends, families and the MSS are IPv6 ones', async () => {
    const { net, a, b } = pair(61);
    const up = randomBytes(1, 10_000_000);
    const down = randomBytes(2, 10_000_000);
    let upDigest = '';
    let serverSide: TcpSocket | null = null;
    // Half-open allowed on both ends: each side's end() must not cut the other's transfer short.
    const srv = b.createServer({ allowHalfOpen: true }, (s) => {
      serverSide = s;
      void collect(s).then((d) => {
        upDigest = sha256(d);
      });
      void writeAll(s, down);
    });
    srv.listen(5001, 'fd00::2');
    assert.deepEqual(srv.address(), { address: 'fd00::2', family: 'IPv6', port: 5001 });
    const c = a.connect({ port: 5001, host: 'fd00::2', allowHalfOpen: true });
    await connected(c);
    assert.equal(c.remoteAddress, 'fd00::2');
    assert.equal(c.remoteFamily, 'IPv6');
    assert.equal(c.remotePort, 5001);
    assert.equal(c.localAddress, 'fd00::1');
    assert.deepEqual(c.address(), { address: 'fd00::1', family: 'IPv6', port: c.localPort });
    // 1500-byte link: MSS 1440 announced both ways (MTU - 40 - 20).
    const conn = [...a.tcp.connections()][0]!;
    assert.equal(conn.state.const.localMss, 1440);
    assert.equal(conn.state.const.remoteMss, 1440);
    const got = collect(c);
    await writeAll(c, up);
    assert.equal(sha256(await got), sha256(down));
    await net.sleep(10);
    assert.equal(upDigest, sha256(up));
    const ss = serverSide as TcpSocket | null;
    assert.equal(ss?.remoteAddress, 'fd00::1');
    assert.equal(ss?.remoteFamily, 'IPv6');
    assert.equal(a.stack.counters.get('drop.ipv6.tcp-bad-checksum'), 0);
    assert.ok(b.stack.counters.get('accept.tcp') > 7000);
    srv.close();
    net.close();
  });

  test('loss and reordering are repaired with SACK and timestamps, and every segment keeps one flow label', async () => {
    const { net, a, b } = pair(62, {}, { impair: { loss: 0.03, reorder: 0.02, delayMs: 2 } });
    const data = randomBytes(3, 3_000_000);
    const labels = new Map<string, Set<number>>();
    tapTx(a, (f) => {
      const t = tcp6Fields(f);
      if (!t) return;
      const k = `${t.srcPort}>${t.dstPort}`;
      if (!labels.has(k)) labels.set(k, new Set());
      labels.get(k)!.add(t.flowLabel);
      assert.equal(t.hopLimit, 64);
    });
    const digests: string[] = [];
    const srv = b.createServer((s) => {
      void collect(s).then((d) => {
        digests.push(sha256(d));
        s.end();
      });
    });
    srv.listen(5002);
    const c1 = a.connect(5002, 'fd00::2');
    const c2 = a.connect(5002, 'fd00::2');
    await Promise.all([connected(c1), connected(c2)]);
    const conns = [...a.tcp.connections()];
    for (const conn of conns) {
      assert.ok(conn.state.const.sackEnabled, 'SACK negotiated');
      assert.ok(conn.state.const.tsEnabled, 'timestamps negotiated');
    }
    const done = Promise.all([collect(c1), collect(c2)]);
    await Promise.all([writeAll(c1, data), writeAll(c2, data)]);
    await done;
    await net.sleep(50);
    assert.deepEqual(digests, [sha256(data), sha256(data)]);
    const retrans = conns.reduce((n, conn) => n + conn.stats.retransmits, 0);
    assert.ok(retrans > 0, 'losses were repaired by retransmission');
    assert.equal(labels.size, 2);
    const perConn = [...labels.values()];
    for (const set of perConn) {
      assert.equal(set.size, 1, 'one flow label per connection');
      assert.ok([...set][0]! > 0);
    }
    assert.notEqual([...perConn[0]!][0], [...perConn[1]!][0], 'connections get different labels');
    srv.close();
    net.close();
  });

  test('a connection to a closed port is refused with a RST (ECONNREFUSED)', async () => {
    const { net, a, b } = pair(63);
    const c = a.connect(81, 'fd00::2');
    const err = await failure(c);
    assert.equal(err.code, 'ECONNREFUSED');
    assert.equal(b.stack.counters.get('tcp.rst.out'), 1);
    assert.equal(b.stack.counters.get('drop.tcp.no-listener'), 1);
    net.close();
  });

  test('an on-link IPv6 host that never answers neighbor solicitations fails the connect with EHOSTUNREACH', async () => {
    const { net, a } = pair(67);
    const err = await failure(a.connect(80, 'fd00::77'));
    assert.equal(err.code, 'EHOSTUNREACH');
    assert.ok(a.stack.counters.get('nd.tx.ns') >= 3);
    assert.ok(a.stack.counters.get('tx.drop.neigh.ehostunreach') >= 1);
    net.close();
  });

  test('a new route re-points an existing IPv6 path to its next hop', async () => {
    const { net, a, b } = pair(69);
    const ipv6 = { dadTransmits: 0, routerSolicitations: 0 };
    const router = net.addHost({ ip: '10.0.0.3/24', ip6: 'fd00::3/64', ipv6 });
    const srv = b.createServer((s) => s.resume());
    srv.listen(5004);
    const c = a.connect(5004, 'fd00::2');
    await connected(c);
    const path = [...a.tcp.connections()][0]!.state.path;
    const before = path.neighbor;
    const macs = new Set<number>();
    tapTx(a, (f) => {
      if (tcp6Fields(f))
        macs.add(f[0]! * 2 ** 40 + ((f[1]! << 24) | (f[2]! << 16) | (f[3]! << 8) | f[4]!) * 256 + f[5]!);
    });
    a.stack.ip6.addRoute(a.stack.interfaces[0]!, 'fd00::2/128', 'fd00::3');
    assert.equal(a.stack.counters.get('ipv6.path.repointed'), 1);
    assert.notEqual(path.neighbor, before);
    c.write(Buffer.alloc(1000));
    await net.sleep(50);
    assert.ok(macs.has(router.stack.interfaces[0]!.mac), 'segments now go to the gateway');
    assert.ok(router.stack.counters.get('drop.ipv6.not-for-us') >= 1);
    c.destroy();
    srv.close();
    net.close();
  });

  test('packet too big lowers the path MTU and the MSS; a forged one quoting nothing in flight changes nothing', async () => {
    const { net, a, b } = pair(64, {}, { impair: { delayMs: 2 } });
    const raw = rawPort(net);
    const srv = b.createServer((s) => s.resume());
    srv.listen(5003);
    const c = a.connect(5003, 'fd00::2');
    await connected(c);
    const conn = [...a.tcp.connections()][0]!;
    const path = conn.state.path;
    assert.equal(path.cached.mtu, 1500);
    const macA = a.stack.interfaces[0]!.mac;
    const ptb = (seq: number, mtu: number) => {
      // ICMPv6 packet too big from a router, quoting a segment A sent (IPv6 header + TCP).
      const q = new Uint8Array(40 + 20);
      q[0] = 0x60;
      q[4] = 0x05;
      q[5] = 0xb4;
      q[6] = 6;
      q[7] = 64;
      q.set(parseIpv6('fd00::1'), 8);
      q.set(parseIpv6('fd00::2'), 24);
      q[40] = c.localPort! >>> 8;
      q[41] = c.localPort! & 0xff;
      q[42] = 5003 >>> 8;
      q[43] = 5003 & 0xff;
      q[44] = seq >>> 24;
      q[45] = (seq >>> 16) & 0xff;
      q[46] = (seq >>> 8) & 0xff;
      q[47] = seq & 0xff;
      return packetTooBig(macA, 'fd00::1', q, mtu);
    };
    // Forged: a sequence number far from anything in flight.
    raw.send(ptb((conn.state.delegated.sndUna + 0x40000000) >>> 0, 1280));
    await net.sleep(1);
    assert.equal(a.stack.counters.get('drop.icmpv6.tcp-not-in-flight'), 1);
    assert.equal(path.cached.mtu, 1500);

    // A real one, quoting the first full data segment of a bulk transfer while it is in flight.
    let biggest = 0;
    let armed = false;
    let reported = false;
    tapTx(a, (f) => {
      const t = tcp6Fields(f);
      if (!t) return;
      if (armed) biggest = Math.max(biggest, t.ipLen);
      if (!reported && t.ipLen > 1400) {
        reported = true;
        const seq = t.seq;
        net.clock.defer(() => {
          raw.send(ptb(seq, 1280));
          // Segments sent from now on must fit.
          net.clock.defer(() => {
            armed = true;
          });
        });
      }
    });
    const data = randomBytes(4, 2_000_000);
    await writeAll(c, data);
    await net.sleep(200);
    assert.equal(a.stack.counters.get('accept.icmpv6.packet-too-big'), 1);
    assert.equal(a.stack.counters.get('ipv6.pmtu.lowered'), 1);
    assert.equal(a.stack.counters.get('tcp.pmtu.resegment'), 1);
    assert.equal(path.cached.mtu, 1280);
    assert.ok(
      biggest > 0 && biggest <= 1280,
      `segments after the report fit 1280 bytes (largest ${biggest})`,
    );
    assert.equal(a.stack.ip6.pathMtu('fd00::2'), 1280);
    // Below the IPv6 minimum is clamped to 1280 (RFC 8200 5).
    raw.send(ptb(conn.state.delegated.sndUna, 600));
    await net.sleep(1);
    assert.equal(path.cached.mtu, 1280);
    srv.close();
    net.close();
  });

  test('malformed IPv6 TCP and UDP are dropped and counted, and answered with nothing', async () => {
    const { net, a } = pair(65);
    const raw = rawPort(net);
    const macA = a.stack.interfaces[0]!.mac;
    const srv = a.createServer(() => {});
    srv.listen(80);
    // Let the switch learn A's MAC.
    await a.ping('10.0.0.2');
    const syn = new Uint8Array(20);
    syn[1] = 99;
    syn[3] = 80;
    syn[12] = 0x50;
    syn[13] = 0x02;
    syn[14] = 0xff;
    const counters = a.stack.counters;
    const before = counters.get('tcp.segments.out');
    const bad = ipv6Frame(macA, 'fd00::9', 'fd00::1', 6, syn);
    bad[54 + 16]! ^= 0x55;
    raw.send(bad);
    raw.send(ipv6Frame(macA, 'fd00::9', 'fd00::1', 6, syn.subarray(0, 12)));
    raw.send(ipv6Frame(macA, '::', 'fd00::1', 6, syn));
    raw.send(ipv6Frame(0x33_33_00_00_00_01, 'fd00::9', 'ff02::1', 6, syn));
    const udp = Uint8Array.of(0x30, 0x39, 0x00, 0x35, 0x00, 0x0a, 0, 0, 1, 2);
    raw.send(ipv6Frame(macA, 'fd00::9', 'fd00::1', 17, udp, false));
    const udpBad = ipv6Frame(macA, 'fd00::9', 'fd00::1', 17, udp);
    udpBad[54 + 8]! ^= 1;
    raw.send(udpBad);
    // A bad UDP length field inside a good checksum.
    const udpLen = Uint8Array.of(0x30, 0x39, 0x00, 0x35, 0x00, 0x40, 0, 0, 1, 2);
    raw.send(ipv6Frame(macA, 'fd00::9', 'fd00::1', 17, udpLen));
    await net.sleep(5);
    assert.equal(counters.get('drop.ipv6.tcp-bad-checksum'), 1);
    assert.equal(counters.get('drop.ipv6.tcp-truncated'), 1);
    assert.equal(counters.get('drop.ipv6.martian-src'), 1);
    assert.equal(counters.get('drop.ipv6.tcp-multicast'), 1);
    assert.equal(counters.get('drop.ipv6.udp-zero-checksum'), 1);
    assert.equal(counters.get('drop.ipv6.udp-bad-checksum'), 1);
    assert.ok(counters.get('drop.udp.bad-length') + counters.get('drop.udp.truncated') === 1);
    assert.equal(counters.get('tcp.segments.out'), before, 'no RST, no SYN-ACK');
    assert.equal(counters.get('icmpv6.tx.unreachable'), 0);
    assert.equal(a.stack.addrs.find(parseIpv6('fd00::9'), 0), -1, 'no address kept for dropped packets');
    // And a well-formed SYN is answered.
    raw.send(ipv6Frame(macA, 'fd00::9', 'fd00::1', 6, syn));
    await net.sleep(5);
    assert.equal(counters.get('tcp.segments.out'), before + 1);
    srv.close();
    net.close();
  });
});

describe('address handles on a stack', () => {
  test('a full table refuses new IPv6 peers (counted) and takes them once a connection has closed', async () => {
    const ipv6 = { dadTransmits: 0, routerSolicitations: 0 };
    // The server's own link-local and fd00::2 take two of its four handles.
    const { net, a, b } = pair(66, {}, { addresses: { maxIpv6: 4 } });
    const c3host = net.addHost({ ip: '10.0.0.3/24', ip6: 'fd00::3/64', ipv6 });
    const c4host = net.addHost({ ip: '10.0.0.4/24', ip6: 'fd00::4/64', ipv6 });
    const server: TcpSocket[] = [];
    const srv = b.createServer((s) => {
      server.push(s);
      s.on('end', () => s.end());
      s.resume();
    });
    srv.listen(7);
    const c1 = a.connect(7, 'fd00::2');
    const c2 = c3host.connect(7, 'fd00::2');
    await Promise.all([connected(c1), connected(c2)]);
    assert.equal(b.stack.addrs.size, 4);
    const c3 = c4host.connect(7, 'fd00::2');
    let c3up = false;
    c3.once('connect', () => {
      c3up = true;
    });
    await net.sleep(3000);
    assert.equal(c3up, false);
    assert.ok(b.stack.counters.get('drop.ipv6.address-table-full') >= 2, 'each SYN refused and counted');
    assert.ok(b.stack.addrs.refused >= 2);
    // fd00::1 leaves: its connection closes, its idle path gives the handle back.
    c1.end();
    c1.resume();
    await new Promise((r) => c1.once('close', r));
    await net.sleep(10);
    assert.equal(
      b.stack.addrs.refCount(b.stack.addrs.find(parseIpv6('fd00::1'), 0)),
      1,
      'only the path holds it',
    );
    await connected(c3);
    assert.ok(b.stack.counters.get('ipv6.path.reclaimed') >= 1);
    assert.equal(b.stack.addrs.find(parseIpv6('fd00::1'), 0), -1);
    assert.equal(formatIpv6(parseIpv6(server[2]!.remoteAddress!)), 'fd00::4');
    srv.close();
    net.close();
  });
});
