/**
 * Send offload for TCP over IPv6: checksum offload and super-segments (TSO6) from the IPv6 path,
 * and the simulated switch that cuts them, in software, for a host whose port has no offload.
 */
import assert from 'node:assert/strict';
import { describe, type TestContext, test } from 'node:test';
import { InvalidArgumentError, StateValidationError } from '../../src/core/errors.ts';
import type { RxOffloadInfo } from '../../src/core/link.ts';
import { SeededRandom } from '../../src/core/random.ts';
import { GsoSegmenter } from '../../src/link/gso-segment.ts';
import {
  allocConnBlock,
  emptyHardState,
  HardStateRecord,
  rebuildTcpState,
} from '../../src/nic/hard-state.ts';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import type { ConnKey, Nic } from '../../src/nic/nic.ts';
import { NicGroupLink } from '../../src/nic/nic-group-link.ts';
import { WorkerNic } from '../../src/nic/worker-nic.ts';
import { OffloadManager } from '../../src/offload/offload-manager.ts';
import { type SimHost, SimNetwork, type SimOffloadHost } from '../../src/sim/sim-network.ts';
import { Host } from '../../src/socket/host.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { AddressTable } from '../../src/stack/address-table.ts';
import { Stack } from '../../src/stack/stack.ts';
import { ByteRing } from '../../src/state/byte-ring.ts';
import { createNeighborState } from '../../src/state/neighbor-state.ts';
import { createPathState } from '../../src/state/path-state.ts';
import { DEFAULT_TCP_CACHED } from '../../src/state/tcp-state.ts';
import { formatIpv6, formatMac, parseIpv6, readU16, readU32 } from '../../src/wire/addr.ts';
import {
  foldChecksum,
  l4Checksum6Ok,
  onesSum,
  pseudoHeaderSum,
  writeL4Checksum6,
} from '../../src/wire/checksum.ts';
import { collect, randomBytes, sha256, writeAll } from '../helpers/streams.ts';
import { tcpFrame, upOf } from '../nic/worker-helpers.ts';
import { sampleConn, sampleTrees } from '../state/helpers.ts';
import { connected, ipv6Frame, packetTooBig, pair, rawPort, tcp6Fields } from './helpers.ts';

const MTU = 1500;

/** Every frame `host` receives, inspected before its stack sees it (the callback must not keep it). */
function tapRx(host: SimHost, fn: (frame: Uint8Array, info?: RxOffloadInfo) => void): void {
  const port = host.port;
  const inner = port.handler!;
  port.handler = (f, info) => {
    fn(f, info);
    inner(f, info);
  };
}

/** `bytes` from a to b and 200 kB back over one IPv6 connection; resolves with both digests. */
async function transfer(net: SimNetwork, a: SimHost, b: SimHost, host: string, bytes: number) {
  const data = randomBytes(7, bytes);
  const back = randomBytes(8, 200_000);
  let got = '';
  const srv = b.createServer({ allowHalfOpen: true }, (s: TcpSocket) => {
    void writeAll(s, back).then(() => s.end());
    void collect(s).then((d) => {
      got = sha256(d);
    });
  });
  srv.listen(5010);
  const c = a.connect({ port: 5010, host, allowHalfOpen: true });
  await connected(c);
  const fromB = collect(c);
  await writeAll(c, data);
  c.end();
  assert.equal(sha256(await fromB), sha256(back), 'the reverse direction arrived intact');
  for (let i = 0; i < 100 && got === ''; i++) await net.sleep(10);
  srv.close();
  return { sent: sha256(data), got };
}

describe('IPv6 send offload', () => {
  test('TSO6 sender, receiver without offload: the switch cuts MTU-sized segments with valid checksums, one flow label, and every byte arrives', async () => {
    const { net, a, b } = pair(71, { offload: true }, {});
    const N = 4_000_000;
    let frames = 0;
    let dataFrames = 0;
    const labels = new Set<number>();
    tapRx(b, (f, info) => {
      const t = tcp6Fields(f);
      if (t === null) return;
      frames++;
      assert.equal(info, undefined, 'a host without offload gets no offload facts');
      assert.ok(f.length <= 14 + MTU, `frame of ${f.length} bytes above the MTU`);
      assert.equal(readU16(f, 18), f.length - 54, 'each segment carries its own payload length');
      assert.ok(l4Checksum6Ok(f, 54, f.length - 54, f.subarray(22, 38), f.subarray(38, 54), 6), 'checksum');
      labels.add(t.flowLabel);
      if (f.length - 54 > (f[66]! >>> 4) * 4) dataFrames++;
    });
    const r = await transfer(net, a, b, 'fd00::2', N);
    assert.equal(r.got, r.sent);
    const tso = a.stack.counters.get('tx.offload.tso6');
    assert.ok(tso > 0, 'a sent IPv6 super-segments');
    // Far fewer sends than wire segments: what the offload is for.
    assert.ok(tso * 4 < dataFrames, `${tso} super-segments for ${dataFrames} wire segments`);
    assert.ok(dataFrames >= Math.ceil(N / 1440), 'every wire segment fits the MSS');
    assert.ok(net.switch.stats.get('gso.segmented') > 0);
    assert.equal(labels.size, 1, 'one flow label for the connection, cut segments included');
    assert.ok(frames > 0);
    assert.equal(b.stack.counters.get('drop.ipv6.tcp-bad-checksum'), 0);
    assert.equal(a.stack.counters.get('tx.drop.ipv6.bad-length'), 0);
    // b has no offload: it checksums in software and sends MTU-sized segments.
    assert.equal(b.stack.counters.sum('tx.offload'), 0);
    net.close();
  });

  test('both ends offload: IPv6 super-segments arrive whole, typed TCPv6, and the data is exact', async () => {
    const { net, a, b } = pair(72, { offload: true }, { offload: true });
    let maxLen = 0;
    const types = new Set<number>();
    tapRx(b, (f, info) => {
      if (tcp6Fields(f) === null) return;
      maxLen = Math.max(maxLen, f.length);
      if (info !== undefined && info.gsoType !== 0) types.add(info.gsoType);
    });
    const r = await transfer(net, a, b, 'fd00::2', 3_000_000);
    assert.equal(r.got, r.sent);
    assert.ok(maxLen > 14 + MTU, 'super-segments reached b whole');
    assert.deepEqual([...types], [4], 'marked VIRTIO_NET_HDR_GSO_TCPV6');
    assert.ok(b.stack.counters.get('rx.offload.gso') > 0);
    assert.ok(b.stack.counters.get('tx.offload.tso6') > 0, 'b offloads its sends too');
    net.close();
  });

  test('IPv4 super-segments are cut for a host without offload as well', async () => {
    const { net, a, b } = pair(73, { offload: true }, {});
    let bad = 0;
    let big = 0;
    tapRx(b, (f) => {
      if (f[12] !== 8 || f[13] !== 0 || f[23] !== 6) return;
      if (f.length > 14 + MTU) big++;
      const l4 = 14 + (f[14]! & 15) * 4;
      const len = readU16(f, 16) - (l4 - 14);
      const ps = pseudoHeaderSum(readU32(f, 26), readU32(f, 30), 6, len);
      if (foldChecksum(onesSum(f, l4, len, ps)) !== 0 || foldChecksum(onesSum(f, 14, 20)) !== 0) bad++;
    });
    const r = await transfer(net, a, b, '10.0.0.2', 2_000_000);
    assert.equal(r.got, r.sent);
    assert.ok(a.stack.counters.get('tx.offload.tso') > 0);
    assert.equal(big, 0);
    assert.equal(bad, 0);
    net.close();
  });
});

describe('GsoSegmenter', () => {
  /** An IPv6 TCP super-segment: 20-byte header + 12 bytes of options, `n` payload bytes. */
  function superSegment(n: number, flags: number): Uint8Array {
    const tcp = new Uint8Array(32 + n);
    tcp[0] = 0x13;
    tcp[1] = 0x89;
    tcp[2] = 0xc0;
    tcp[3] = 0x01;
    tcp.set([0xff, 0xff, 0xff, 0x00], 4); // sequence wraps inside the super-segment
    tcp[12] = 8 << 4;
    tcp[13] = flags;
    tcp[14] = 0x10;
    for (let i = 0; i < n; i++) tcp[32 + i] = (i * 31) & 0xff;
    const f = ipv6Frame(0x020000000002, 'fd00::1', 'fd00::2', 6, tcp, false);
    // Traffic class 0xb8 and flow label 0x12345, which every segment must keep.
    f[14] = 0x6b;
    f[15] = 0x81;
    f[16] = 0x23;
    f[17] = 0x45;
    return f;
  }

  test('cuts an IPv6 super-segment: payload lengths, sequence numbers, flags, header fields, checksums', () => {
    const n = 5000;
    const f = superSegment(n, 0x80 | 0x18 | 0x01); // CWR, PSH+ACK, FIN
    const seg = new GsoSegmenter();
    const out: Uint8Array[] = [];
    assert.equal(
      seg.segment(f, 1400, (s) => out.push(s.slice())),
      4,
    );
    assert.deepEqual(
      out.map((s) => s.length),
      [86 + 1400, 86 + 1400, 86 + 1400, 86 + 800],
    );
    const src = parseIpv6('fd00::1');
    const dst = parseIpv6('fd00::2');
    const payload: number[] = [];
    out.forEach((s, i) => {
      assert.deepEqual(s.subarray(0, 18), f.subarray(0, 18), 'MAC, version, class and flow label kept');
      assert.equal(readU16(s, 18), s.length - 54);
      assert.deepEqual(s.subarray(20, 54), f.subarray(20, 54), 'next header, hop limit, addresses kept');
      assert.deepEqual(s.subarray(74, 86), f.subarray(74, 86), 'options copied');
      assert.equal(readU32(s, 58), (0xffffff00 + i * 1400) >>> 0);
      const flags = s[67]!;
      assert.equal((flags & 0x80) !== 0, i === 0, 'CWR on the first segment only');
      assert.equal((flags & 0x09) !== 0, i === 3, 'FIN and PSH on the last only');
      assert.ok(flags & 0x10, 'ACK on every segment');
      assert.ok(l4Checksum6Ok(s, 54, s.length - 54, src, dst, 6));
      payload.push(...s.subarray(86));
    });
    assert.deepEqual(Uint8Array.from(payload), f.subarray(86));
  });

  test('a payload that fits one segment is only checksummed; what is not TCP is refused', () => {
    const f = superSegment(100, 0x18);
    const out: Uint8Array[] = [];
    assert.equal(
      new GsoSegmenter().segment(f, 0xffff, (s) => out.push(s.slice())),
      1,
    );
    const want = f.slice();
    writeL4Checksum6(want, 54, want.length - 54, parseIpv6('fd00::1'), parseIpv6('fd00::2'), 6);
    assert.deepEqual(out[0], want);
    const udp = ipv6Frame(0x020000000002, 'fd00::1', 'fd00::2', 17, new Uint8Array(3000));
    assert.equal(
      new GsoSegmenter().segment(udp, 1000, () => assert.fail('emitted')),
      -1,
    );
    assert.equal(
      new GsoSegmenter().segment(f.subarray(0, 60), 1000, () => assert.fail('emitted')),
      -1,
    );
  });
});

// ---- IPv6 connections offloaded (issue 12 item 5) ---------------------------------------------

const IPV6 = { dadTransmits: 0, routerSolicitations: 0 };

/**
 * A host with two LocalNics and a plain peer, both dual-stack; the NICs' ports run at 100 Mbit/s
 * so that a few megabytes take long enough (in simulated time) for moves to happen midstream.
 */
function offloadPair(seed: number) {
  const net = new SimNetwork({ seed });
  const h = net.addOffloadHost({
    ip: '10.0.0.1/24',
    ip6: 'fd00::1/64',
    ipv6: IPV6,
    impair: { rateBps: 100e6, queueBytes: 1 << 20 },
  });
  const peer = net.addHost({ ip: '10.0.0.2/24', ip6: 'fd00::2/64', ipv6: IPV6 });
  return { net, h, peer };
}

function keyOf(s: TcpSocket): ConnKey {
  const conn = s.connection!;
  return {
    localIp: conn.localIp,
    localPort: conn.localPort,
    remoteIp: conn.remoteIp,
    remotePort: conn.remotePort,
  };
}

/**
 * Stream `bytes` each way over one connection from `h` to the peer at `host` while `moves` run
 * (each after the previous one and a pause); resolves with both directions' digests.
 */
async function streamWhile(
  net: SimNetwork,
  h: SimOffloadHost,
  peer: SimHost,
  host: string,
  port: number,
  bytes: number,
  moves: ((key: ConnKey) => Promise<void>)[],
) {
  const up = randomBytes(port, bytes);
  const down = randomBytes(port + 1, bytes);
  let gotUp = '';
  const srv = peer.createServer({ allowHalfOpen: true }, (s: TcpSocket) => {
    void writeAll(s, down).then(() => s.end());
    void collect(s).then((d) => {
      gotUp = sha256(d);
    });
  });
  srv.listen(port);
  const c = h.connect({ port, host, allowHalfOpen: true });
  await connected(c);
  const key = keyOf(c);
  const fromPeer = collect(c);
  const sending = writeAll(c, up).then(() => c.end());
  for (const m of moves) {
    await net.sleep(40);
    assert.ok(
      h.stack.tcp.size + h.offload.keysOn(h.nics[0]!).length + h.offload.keysOn(h.nics[1]!).length > 0,
      'still streaming',
    );
    await m(key);
  }
  await sending;
  const gotDown = sha256(await fromPeer);
  for (let i = 0; i < 200 && gotUp === ''; i++) await net.sleep(10);
  srv.close();
  return { key, upOk: gotUp === sha256(up), downOk: gotDown === sha256(down), socket: c };
}

describe('IPv6 connections on LocalNics', () => {
  test('offloaded, moved NIC to NIC and uploaded while 3 MB stream each way: every byte intact, one flow label', async () => {
    const { net, h, peer } = offloadPair(81);
    const [n0, n1] = h.nics as [LocalNic, LocalNic];
    const labels = new Set<number>();
    let nicFrames = 0;
    tapRx(peer, (f) => {
      const t = tcp6Fields(f);
      if (t !== null && t.dstPort === 6001) labels.add(t.flowLabel);
    });
    const owners: string[] = [];
    const where = (key: ConnKey) =>
      owners.push(h.offload.nicOf(key.localIp, key.localPort, key.remoteIp, key.remotePort)?.id ?? 'host');
    const r = await streamWhile(net, h, peer, 'fd00::2', 6001, 3_000_000, [
      async (key) => {
        const rep = await h.offload.offload([key]);
        assert.deepEqual(rep.refused, []);
        assert.equal(rep.moved.length, 1);
        where(key);
      },
      async (key) => {
        nicFrames = n0.engine.counters.get('nic.rx.offloaded');
        const rep = await h.offload.move([key], n0, n1);
        assert.deepEqual(rep.refused, []);
        where(key);
      },
      async (key) => {
        const rep = await h.offload.upload([key]);
        assert.equal(rep.moved.length, 1);
        where(key);
      },
    ]);
    assert.ok(r.upOk, 'the host-to-peer direction arrived intact');
    assert.ok(r.downOk, 'the peer-to-host direction arrived intact');
    assert.deepEqual(owners, [n0.id, n1.id, 'host']);
    assert.ok(nicFrames > 0, 'the first NIC ran the connection on its own');
    assert.ok(n1.engine.counters.get('nic.rx.offloaded') > 0, 'and so did the second');
    assert.ok(n0.engine.counters.get('tx.nic.frames') > 0 && n1.engine.counters.get('tx.nic.frames') > 0);
    assert.equal(labels.size, 1, `one flow label whoever sends: ${[...labels].join(', ')}`);
    assert.equal(h.stack.counters.get('drop.tcp.bad-forwarded'), 0);
    // Every handle the NICs and placeholders held went back: the peer's address only by the path.
    const remote = h.stack.addrs.find(parseIpv6('fd00::2'), 0);
    await net.sleep(200);
    assert.ok(h.stack.addrs.refCount(remote) >= 1);
    h.offload.close();
    net.close();
  });

  test('mixed families in one transfer: IPv4 and IPv6 connections offloaded, moved and uploaded together', async () => {
    const { net, h, peer } = offloadPair(82);
    const [n0, n1] = h.nics as [LocalNic, LocalNic];
    const srv = peer.createServer((s) => s.pipe(s));
    srv.listen(7);
    const socks = [
      h.connect(7, 'fd00::2'),
      h.connect(7, '10.0.0.2'),
      h.connect(7, 'fd00::2'),
      h.connect(7, '10.0.0.2'),
    ];
    await Promise.all(socks.map(connected));
    const echo = async (round: number) => {
      for (const [i, s] of socks.entries()) {
        const msg = `round ${round} socket ${i} `.repeat(200);
        const got = collectN(s, msg.length);
        s.write(msg);
        assert.equal(String(await got), msg);
      }
    };
    const off = await h.offload.offload('all');
    assert.equal(off.moved.length, 4);
    assert.deepEqual(off.refused, []);
    await echo(1);
    const onN0 = h.offload.keysOn(n0).length;
    const mv = await h.offload.move('all', n0, n1);
    assert.equal(mv.moved.length, onN0);
    assert.equal(h.offload.keysOn(n0).length, 0);
    await echo(2);
    const upl = await h.offload.upload('all');
    assert.equal(upl.moved.length, 4);
    assert.equal(h.stack.tcp.size, 4);
    await echo(3);
    assert.ok(n1.engine.counters.get('nic.rx.offloaded') > 0);
    for (const s of socks) s.destroy();
    h.offload.close();
    srv.close();
    net.close();
  });
});

describe('a LocalNic that crashes with IPv6 connections', () => {
  test('its connections are rebuilt in the host from the hard state it left, mid-stream, nothing lost', async () => {
    const { net, h, peer } = offloadPair(84);
    // The second NIC: the host's own frames leave through the first (NicGroupLink).
    const n1 = h.nics[1] as LocalNic;
    let key: ConnKey | null = null;
    const r = await streamWhile(net, h, peer, 'fd00::2', 6003, 2_000_000, [
      async (k) => {
        key = k;
        assert.equal((await h.offload.offload([k], n1)).moved.length, 1);
      },
      async () => {
        n1.crash('test');
        const rep = await h.offload.recover(n1, 'host');
        assert.equal(rep.moved.length, 1, JSON.stringify(rep.refused));
        assert.deepEqual(rep.refused, []);
      },
    ]);
    assert.ok(r.upOk && r.downOk, 'both directions intact across the crash');
    assert.equal(h.stack.counters.get('offload.rebuilt'), 1);
    assert.ok(key !== null && (key as ConnKey).remoteIp > 0xffffffff);
    h.offload.close();
    net.close();
  });
});

describe('path MTU of an offloaded IPv6 connection', () => {
  test("packet too big reaches the host, the NIC's copy of the path drops to 1280, and every later segment fits", async () => {
    const { net, h, peer } = offloadPair(83);
    const raw = rawPort(net);
    let got = '';
    const srv = peer.createServer((s: TcpSocket) => {
      void collect(s).then((d) => {
        got = sha256(d);
      });
    });
    srv.listen(6002);
    const c = h.connect(6002, 'fd00::2');
    await connected(c);
    const key = keyOf(c);
    assert.equal((await h.offload.offload([key])).moved.length, 1);
    const nic = h.offload.nicOf(key.localIp, key.localPort, key.remoteIp, key.remotePort) as LocalNic;
    const macH = h.stack.interfaces[0]!.mac;
    // The report goes out when the peer sees the first full-sized segment; from the moment the
    // NIC's copy of the path says 1280, every segment the NIC transmits must fit (frames already
    // queued on the 100 Mbit/s port were sent before).
    let biggest = 0;
    let after = 0;
    let reported = false;
    tapRx(peer, (f) => {
      const t = tcp6Fields(f);
      if (t === null || t.dstPort !== 6002 || reported || t.ipLen <= 1400) return;
      reported = true;
      const quoted = f.slice(14, 14 + 40 + 20);
      net.clock.defer(() => raw.send(packetTooBig(macH, 'fd00::1', quoted, 1280)));
    });
    const link = nic.engine.link;
    const send = link.send.bind(link);
    link.send = (f: Uint8Array) => {
      const t = tcp6Fields(f);
      if (t !== null && t.dstPort === 6002 && nic.engine.connection(key)?.state.path.cached.mtu === 1280) {
        after++;
        biggest = Math.max(biggest, t.ipLen);
      }
      return send(f);
    };
    const data = randomBytes(9, 2_000_000);
    await writeAll(c, data);
    for (let i = 0; i < 200 && got === ''; i++) await net.sleep(10);
    assert.equal(got, sha256(data), 'every byte arrived');
    assert.equal(h.stack.counters.get('accept.icmpv6.packet-too-big'), 1);
    assert.ok(nic.engine.counters.get('nic.update.path') >= 1, 'the NIC heard of the new MTU');
    assert.ok(after > 100, `${after} segments sent after the NIC took the new MTU`);
    assert.ok(biggest <= 1280, `segments after the report fit 1280 bytes (largest ${biggest})`);
    assert.equal(
      h.offload.nicOf(key.localIp, key.localPort, key.remoteIp, key.remotePort),
      nic,
      'still on the NIC',
    );
    h.offload.close();
    srv.close();
    net.close();
  });
});

/** The next `n` bytes `s` delivers. */
function collectN(s: TcpSocket, n: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let have = 0;
    const on = (d: Buffer) => {
      parts.push(d);
      have += d.length;
      if (have >= n) {
        s.off('data', on);
        resolve(Buffer.concat(parts));
      }
    };
    s.on('data', on);
  });
}

/** A dual-stack host (10.0.0.1, fd00::1) whose stack reaches the switch through two WorkerNics. */
async function workerHost6(seed: number, t: TestContext, reachabilityIntervalMs?: number) {
  const net = new SimNetwork({ seed, virtualTime: false });
  const nics: WorkerNic[] = [];
  for (let i = 0; i < 2; i++) {
    const port = net.switch.addPort({ name: `w6.nic${i}`, mtu: 1500 });
    nics.push(new WorkerNic({ id: `w6.nic${i}`, link: port, seed: 200 + i, reachabilityIntervalMs }));
  }
  const stack = new Stack({ clock: net.clock, random: net.random.fork(), name: 'w6', ipv6: IPV6 });
  stack.addInterface(new NicGroupLink(nics), {
    mac: formatMac(0x02000000aa06),
    ip: ['10.0.0.1/24', 'fd00::1/64'],
    name: 'eth0',
  });
  const offload = new OffloadManager({ stack, nics });
  const host = new Host(stack);
  const peer = net.addHost({ ip: '10.0.0.2/24', ip6: 'fd00::2/64', ipv6: IPV6 });
  t.after(() => {
    offload.close();
    for (const n of nics) n.close();
    stack.close();
    net.close();
  });
  await Promise.all(nics.map((n) => n.ready()));
  return { net, nics, stack, offload, host, peer };
}

/** A TCP segment from the peer (fd00::2) to the host (fd00::1) as an Ethernet frame, its last four bytes `n`. */
function segment6(sport: number, dport: number, n: number): Uint8Array {
  const tcp = new Uint8Array(20 + 4);
  const dv = new DataView(tcp.buffer);
  dv.setUint16(0, sport);
  dv.setUint16(2, dport);
  tcp[12] = 0x50;
  dv.setUint32(20, n);
  return ipv6Frame(0x02000000aa06, 'fd00::2', 'fd00::1', 6, tcp, false);
}

/** `n` echo connections to the peer's port 7 over IPv6 and IPv4 alternately. */
async function echoConns(host: Host, peer: SimHost, n: number): Promise<TcpSocket[]> {
  peer.createServer((s) => s.pipe(s)).listen(7);
  const socks: TcpSocket[] = [];
  for (let i = 0; i < n; i++) socks.push(host.connect(7, i % 2 === 0 ? 'fd00::2' : '10.0.0.2'));
  await Promise.all(socks.map(connected));
  return socks;
}

/** Every socket echoes `bytes` of its own data back intact; resolves with how many failed. */
async function echoAll(socks: TcpSocket[], round: number, bytes: number): Promise<number> {
  const results = await Promise.all(
    socks.map(async (s, i) => {
      const data = randomBytes(round * 1000 + i, bytes);
      const got = collectN(s, bytes);
      s.write(data);
      return sha256((await got).subarray(0, bytes)) === sha256(data);
    }),
  );
  return results.filter((ok) => !ok).length;
}

/** A NIC's reachability reports, from now on, by neighbor: its IPv4 address or its IPv6 bytes and VLAN. */
function reachabilityReports(nic: Nic): Map<string, number[]> {
  const seen = new Map<string, number[]>();
  nic.on('reachability', (ip, last, ip6, vlanId) => {
    const name = ip6 === undefined ? `v4 ${ip}` : `v6 ${formatIpv6(ip6)} vlan ${vlanId} ip ${ip}`;
    seen.set(name, [...(seen.get(name) ?? []), last]);
  });
  return seen;
}

describe('IPv6 neighbors of offloaded connections: reachability reports and invalidate', () => {
  test("LocalNic: each family's neighbor is reported with its last proof, and invalidated by its own name", async () => {
    const { net, h, peer } = offloadPair(85);
    const n0 = h.nics[0]! as LocalNic;
    const socks = await echoConns(h, peer, 6);
    const keys = socks.map(keyOf);
    assert.equal((await h.offload.offload(keys, n0)).moved.length, 6);
    const seen = reachabilityReports(n0);
    const before = net.clock.now();
    assert.equal(await echoAll(socks, 1, 20_000), 0);
    n0.engine.reportReachability();
    const v6 = seen.get('v6 fd00::2 vlan -1 ip 0');
    const v4 = seen.get(`v4 ${0x0a000002}`);
    assert.deepEqual(
      [...seen.keys()].sort(),
      [`v4 ${0x0a000002}`, 'v6 fd00::2 vlan -1 ip 0'],
      'one report per neighbor',
    );
    assert.ok(
      v6![0]! >= before && v6![0]! <= net.clock.now(),
      `the IPv6 neighbor was heard from meanwhile: ${v6}`,
    );
    assert.ok(v4![0]! >= before, 'and so was the IPv4 one');

    // Bad names are refused, nothing moves.
    for (const bad of [
      { neighborIp: 0, ip6: new Uint8Array(15) },
      { neighborIp: 0x0a000002, ip6: parseIpv6('fd00::2') },
      { neighborIp: 0, ip6: parseIpv6('fd00::2'), vlanId: 5000 },
    ]) {
      await assert.rejects(n0.invalidate(bad), InvalidArgumentError, JSON.stringify(bad));
    }
    assert.equal(n0.load, 6);

    // Another IPv6 neighbor, or the right one on another VLAN, names no connection here.
    await n0.invalidate({ neighborIp: 0, ip6: parseIpv6('fd00::3') });
    await n0.invalidate({ neighborIp: 0, ip6: parseIpv6('fd00::2'), vlanId: 7 });
    await net.sleep(5);
    assert.equal(n0.load, 6);
    await n0.invalidate({ neighborIp: 0, ip6: parseIpv6('fd00::2') });
    await net.sleep(5);
    assert.equal(n0.load, 3, "the IPv6 neighbor's connections were uploaded, the IPv4 ones stay");
    assert.ok(h.offload.keysOn(n0).every((k) => k.remoteIp <= 0xffffffff));
    await n0.invalidate({ neighborIp: 0x0a000002 });
    await net.sleep(5);
    assert.equal(n0.load, 0, "then the IPv4 neighbor's");
    assert.equal(h.stack.tcp.size, 6);
    assert.equal(await echoAll(socks, 2, 20_000), 0, 'every byte both ways in the host again');
    for (const s of socks) s.destroy();
    net.close();
  });

  test("WorkerNic: the IPv6 neighbor is reported across the thread, on the host's clock", {
    timeout: 60_000,
  }, async (t) => {
    const { net, nics, offload, host, peer } = await workerHost6(93, t, 20);
    const w = nics[0]! as WorkerNic;
    const socks = await echoConns(host, peer, 4);
    assert.equal((await offload.offload(socks.map(keyOf), w)).moved.length, 4);
    const seen = reachabilityReports(w);
    const before = net.clock.now();
    assert.equal(await echoAll(socks, 1, 50_000), 0);
    await net.sleep(60);
    const v6 = seen.get('v6 fd00::2 vlan -1 ip 0') ?? [];
    assert.ok(v6.length > 0, `the worker reported the IPv6 neighbor: ${JSON.stringify([...seen.keys()])}`);
    assert.ok(seen.has(`v4 ${0x0a000002}`), 'and the IPv4 one');
    const last = v6[v6.length - 1]!;
    assert.ok(
      last >= before && last <= net.clock.now(),
      `heard from during the echo, on this clock: ${before} <= ${last}`,
    );
    await w.invalidate({ neighborIp: 0, ip6: parseIpv6('fd00::2') });
    for (let i = 0; i < 100 && w.load > 2; i++) await net.sleep(10);
    assert.equal(w.load, 2, 'the IPv6 connections were uploaded, the IPv4 ones stay');
    assert.equal(await echoAll(socks, 2, 50_000), 0);
    for (const s of socks) s.destroy();
  });
});

describe('IPv6 connections on WorkerNics', () => {
  test('offloaded, moved NIC to NIC and uploaded with data both ways intact; IPv4 and IPv6 in the same transfers', {
    timeout: 60_000,
  }, async (t) => {
    const { nics, offload, host, peer, stack } = await workerHost6(91, t);
    const socks = await echoConns(host, peer, 6);
    const keys = socks.map(keyOf);
    const [w0, w1] = nics as [WorkerNic, WorkerNic];
    const off = await offload.offload(keys, w0);
    assert.deepEqual(off.refused, []);
    assert.equal(off.moved.length, 6);
    assert.equal(await echoAll(socks, 1, 300_000), 0, 'every byte both ways on the first worker');
    const q0 = await w0.query();
    assert.equal(q0.length, 6);
    assert.equal(q0.filter((q) => q.key.remoteIp > 0xffffffff).length, 3, 'three IPv6 connections there');
    assert.ok(
      q0.every((q) => q.bytesIn >= 300_000),
      'each ran its data on the worker',
    );
    const mv = await offload.move('all', w0, w1);
    assert.deepEqual(mv.refused, []);
    assert.equal(mv.moved.length, 6);
    assert.equal(await echoAll(socks, 2, 300_000), 0, 'every byte both ways on the second worker');
    const q1 = await w1.query(keys.filter((k) => k.remoteIp > 0xffffffff));
    assert.equal(q1.length, 3, 'the host and the worker name IPv6 connections by the same keys');
    const up = await offload.upload('all');
    assert.equal(up.moved.length, 6);
    assert.equal(stack.tcp.size, 6);
    assert.equal(await echoAll(socks, 3, 100_000), 0, 'and in the host again');
    // Every move between threads went by transfer records, IPv6 connections included.
    const [c0, c1] = await Promise.all([w0.counters(), w1.counters()]);
    // A record is read at the take, or the connection is taken unbuilt (idle IPv4 ones) and its
    // record read at its first touch: both crossed as records, none through the codec.
    const asRecords = (c: Record<string, number>) =>
      (c['nic.initiate.records'] ?? 0) + (c['nic.initiate.unbuilt'] ?? 0);
    assert.equal(asRecords(c0), 6, 'the offload: all six as records');
    assert.equal(asRecords(c1), 6, 'the move: all six as records');
    assert.equal(c0['nic.worker.record-fallbacks'] ?? 0, 0);
    assert.equal(c1['nic.worker.record-fallbacks'] ?? 0, 0);
    assert.equal(c1['nic.terminate.record-fallbacks'] ?? 0, 0);
    for (const s of socks) s.destroy();
  });

  test("a worker's death runs the IPv6 frames passed up of its own connections before 'dead', and only those, as the IPv4 ones", {
    timeout: 60_000,
  }, async (t) => {
    // The failover starts from the host's placeholders of the dead worker's connections, so their
    // frames passed up before the death reach the host stack first; any other frame keeps its
    // turn. IPv6 frames were not read there: all of them ran at the death, whoever they were for.
    const { nics, offload, host, peer } = await workerHost6(93, t);
    const socks = await echoConns(host, peer, 4);
    const keys = socks.map(keyOf);
    const w = nics[0]!;
    assert.equal((await offload.offload(keys, w)).moved.length, 4);
    const got: number[] = [];
    (w as unknown as { host: { handler: ((f: Uint8Array) => void) | null } }).host.handler = (f) => {
      got.push(readU32(f, f.length - 4));
    };
    // 300 frames from the peer: every tenth a segment of one of the NIC's connections, the others
    // of connections it does not have (their peer's port one off); IPv6 and IPv4 alternately.
    const frames: Uint8Array[] = [];
    const mine: number[] = [];
    for (let i = 0; i < 300; i++) {
      const c = keys[i % keys.length]!;
      const ours = i % 10 === 0;
      const sport = ours ? c.remotePort : c.remotePort + 1;
      const v6 = c.remoteIp > 0xffffffff;
      frames.push(
        v6 ? segment6(sport, c.localPort, i) : tcpFrame(0x0a000002, sport, 0x0a000001, c.localPort, i),
      );
      if (ours) mine.push(i);
    }
    assert.ok(
      mine.some((i) => keys[i % keys.length]!.remoteIp > 0xffffffff),
      'IPv6 connections among them',
    );
    w.worker.emit('message', upOf(frames));
    await new Promise((r) => setImmediate(r));
    const before = got.length;
    assert.ok(before < 300, 'frames still wait for their turns');
    let atDeath: number[] | null = null;
    w.prependListener('dead', () => {
      atDeath = got.slice(before);
    });
    (w as unknown as { die(cause: { kind: 'heartbeat'; silentMs: number }): void }).die({
      kind: 'heartbeat',
      silentMs: 0,
    });
    assert.deepEqual(
      atDeath,
      mine.filter((i) => i >= before),
      "the waiting frames of the NIC's connections, IPv6 and IPv4, in order, and no other, before 'dead'",
    );
    void w.kill();
    for (const s of socks) s.destroy();
  });

  test('a worker killed with IPv6 connections mid-stream: rebuilt from hard state, nothing lost', {
    timeout: 60_000,
  }, async (t) => {
    const { net, nics, offload, host, peer, stack } = await workerHost6(92, t);
    const socks = await echoConns(host, peer, 4);
    const keys = socks.map(keyOf);
    const w = nics[1]! as WorkerNic;
    assert.equal((await offload.offload(keys, w)).moved.length, 4);
    const BYTES = 2_000_000;
    const sums = socks.map((s, i) => {
      const data = randomBytes(500 + i, BYTES);
      const got = collectN(s, BYTES);
      void writeAll(s, data);
      return got.then((b) => sha256(b.subarray(0, BYTES)) === sha256(data));
    });
    await net.sleep(30);
    const before = await w.query();
    const busy6 = before.filter((q) => q.key.remoteIp > 0xffffffff && q.bytesIn + q.bytesOut < 2 * BYTES);
    assert.equal(busy6.length, 2, 'both IPv6 connections are mid-stream on the worker when it dies');
    await w.kill();
    const report = await offload.recover(w, 'host');
    assert.deepEqual(
      report.refused.filter((r) => r.status !== 'closed'),
      [],
    );
    assert.equal(report.moved.length, 4, 'every connection rebuilt, IPv6 ones included');
    const ok = await Promise.all(sums);
    assert.deepEqual(ok, [true, true, true, true], 'every byte arrived in both directions');
    assert.equal(stack.counters.get('offload.rebuilt'), 4);
    for (const s of socks) s.destroy();
  });
});

describe('hard state of an IPv6 connection', () => {
  function conn6(book: AddressTable) {
    const nb = createNeighborState(
      { srcMac: 0x020000000001, vlanId: -1, ip: 0, ip6: parseIpv6('fe80::1') },
      5,
    );
    const path = createPathState(
      { localIp: book.intern(parseIpv6('fd00::1')), remoteIp: book.intern(parseIpv6('2001:db8::7')) },
      nb,
      1,
      1500,
      64,
      book,
    );
    return { path, s: sampleConn(path) };
  }

  test("the record carries both addresses as bytes; a rebuild takes its path's handles, and refuses another path", () => {
    const worker = new AddressTable(new SeededRandom(1));
    const { s } = conn6(worker);
    const block = allocConnBlock(4096, 4096);
    new HardStateRecord(block.sab, block.at).write(s, block.send, block.recv);
    const hard = emptyHardState();
    assert.ok(new HardStateRecord(block.sab, block.at).read(hard));
    assert.equal(formatIpv6(hard.local6!), 'fd00::1');
    assert.equal(formatIpv6(hard.remote6!), '2001:db8::7');
    assert.equal(hard.localIp, 0);
    // The host numbers the same addresses otherwise: the rebuilt state takes the host path's handles.
    const host = new AddressTable(new SeededRandom(2));
    host.intern(parseIpv6('fd00::99'));
    const { path } = conn6(host);
    const send = ByteRing.createShared(block.send.capacity, block.send);
    const recv = ByteRing.createShared(block.recv.capacity, block.recv);
    const rebuilt = rebuildTcpState(hard, send, recv, DEFAULT_TCP_CACHED, path, 0);
    assert.equal(rebuilt.const.remoteIp, path.const.remoteIp);
    assert.notEqual(rebuilt.const.remoteIp, s.const.remoteIp);
    // A path to another peer is not this connection's.
    const other = createPathState(
      { localIp: path.const.localIp, remoteIp: host.intern(parseIpv6('2001:db8::8')) },
      path.neighbor,
      1,
      1500,
      64,
      host,
    );
    assert.throws(
      () => rebuildTcpState(hard, send, recv, DEFAULT_TCP_CACHED, other, 0),
      (e) => e instanceof StateValidationError && e.field === 'hard.remote6',
    );
    // An IPv4 record leaves the IPv6 words zero and reads back without bytes.
    const [t4] = sampleTrees(1);
    const b4 = allocConnBlock(4096, 4096);
    new HardStateRecord(b4.sab, b4.at).write(t4!.paths[0]!.conns[0]!, b4.send, b4.recv);
    const h4 = emptyHardState();
    assert.ok(new HardStateRecord(b4.sab, b4.at).read(h4));
    assert.equal(h4.remote6, null);
    assert.equal(h4.remoteIp, 0x0a0000fe);
  });
});
