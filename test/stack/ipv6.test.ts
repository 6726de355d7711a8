import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { InvalidStateError } from '../../src/core/errors.ts';
import { SeededRandom } from '../../src/core/random.ts';
import type { Stack } from '../../src/stack/stack.ts';
import {
  formatIpv6,
  ipv6MulticastMac,
  linkLocalFromMac,
  parseIpv6,
  readMac,
  solicitedNodeAddress,
  writeMac,
} from '../../src/wire/addr.ts';
import { EtherType } from '../../src/wire/ethernet.ts';
import { createIcmpv6Header, decodeIcmpv6, encodeIcmpv6, Icmpv6Type } from '../../src/wire/icmpv6.ts';
import {
  createIpv6Header,
  decodeIpv6,
  encodeIpv6,
  encodeIpv6Fragment,
  Ipv6Next,
  Ipv6Problem,
} from '../../src/wire/ipv6.ts';
import { isMldType } from '../../src/wire/mld.ts';
import { createNdMessage, decodeNd, encodeNd, ND_INFINITE, type NdEncode } from '../../src/wire/ndp.ts';
import { etherType, Hub, type HubPort, MAC_A, MAC_B, makeStack } from './harness.ts';

const PEER_MAC = 0x020000000099;
const PEER = parseIpv6('fd00::99');
const PEER_LL = linkLocalFromMac(PEER_MAC);
const ROUTER_MAC = 0x0200000000fe;
const ROUTER_LL = linkLocalFromMac(ROUTER_MAC);
const ALL_NODES = parseIpv6('ff02::1');

interface Rig {
  clock: VirtualClock;
  hub: Hub;
  a: Stack;
  port: HubPort;
  /** The test's own port: frames injected from here reach `a`. */
  peer: HubPort;
}

function rig(ip: string | string[] = ['10.0.0.1/24', 'fd00::1/64'], ipv6Opts = {}): Rig {
  const clock = new VirtualClock();
  const random = new SeededRandom(7);
  const hub = new Hub(clock);
  const port = hub.port('a');
  const peer = hub.port('peer');
  const a = makeStack(clock, random, { name: 'a', ipv6: ipv6Opts });
  a.addInterface(port, { mac: MAC_A, ip });
  return { clock, hub, a, port, peer };
}

/** Let DAD finish and forget what was sent meanwhile. */
function settle(r: Rig): void {
  r.clock.advance(1500);
  r.hub.log.length = 0;
}

interface Decoded {
  dstMac: number;
  srcMac: number;
  ip: ReturnType<typeof createIpv6Header>;
  icmp: ReturnType<typeof createIcmpv6Header>;
  nd: ReturnType<typeof createNdMessage> | null;
  frame: Uint8Array;
}

/** The IPv6/ICMPv6 frames `a` sent, decoded (checksums verified). */
function sent(r: Rig): Decoded[] {
  const out: Decoded[] = [];
  for (const { from, frame } of r.hub.log) {
    if (from !== 'a' || etherType(frame) !== EtherType.IPV6) continue;
    const ip = createIpv6Header();
    assert.equal(decodeIpv6(frame, 14, frame.length - 14, ip), null);
    assert.equal(ip.protocol, Ipv6Next.ICMPV6);
    const icmp = createIcmpv6Header();
    assert.equal(decodeIcmpv6(frame, ip.payloadOffset, ip.payloadLen, ip.src, ip.dst, icmp), null);
    // MLD reports of the groups joined are test/stack/mld.test.ts's.
    if (isMldType(icmp.type)) continue;
    let nd: Decoded['nd'] = null;
    if (icmp.type >= 133 && icmp.type <= 137) {
      nd = createNdMessage();
      assert.equal(decodeNd(frame, ip.payloadOffset, ip.payloadLen, nd), null);
      assert.equal(ip.hopLimit, 255);
    }
    out.push({ dstMac: readMac(frame, 0), srcMac: readMac(frame, 6), ip, icmp, nd, frame });
  }
  return out;
}

interface FrameOpts {
  srcMac?: number;
  dstMac?: number;
  src: Uint8Array;
  dst: Uint8Array;
  hopLimit?: number;
}

function ipv6Frame(o: FrameOpts, next: number, payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(14 + 40 + payload.length);
  writeMac(f, 0, o.dstMac ?? MAC_A);
  writeMac(f, 6, o.srcMac ?? PEER_MAC);
  f[12] = 0x86;
  f[13] = 0xdd;
  const h = createIpv6Header();
  h.payloadLength = payload.length;
  h.nextHeader = next;
  h.hopLimit = o.hopLimit ?? 255;
  h.src.set(o.src);
  h.dst.set(o.dst);
  encodeIpv6(h, f, 14);
  f.set(payload, 54);
  return f;
}

function ndFrame(o: FrameOpts, m: NdEncode): Uint8Array {
  const body = new Uint8Array(24 + 8 + 8 + 8 + 32 * (m.prefixes?.length ?? 0));
  const n = encodeNd(m, body, 0, o.src, o.dst);
  return ipv6Frame(o, Ipv6Next.ICMPV6, body.subarray(0, n));
}

function echoFrame(o: FrameOpts, id: number, seq: number, data: Uint8Array): Uint8Array {
  const body = new Uint8Array(8 + data.length);
  body.set(data, 8);
  const h = createIcmpv6Header();
  h.type = Icmpv6Type.ECHO_REQUEST;
  h.id = id;
  h.seq = seq;
  encodeIcmpv6(h, body, 0, data.length, o.src, o.dst);
  return ipv6Frame(o, Ipv6Next.ICMPV6, body);
}

/** The neighbor solicitation a peer sends to resolve `target`, with its link-layer address. */
function nsFor(target: Uint8Array, o: Partial<FrameOpts> = {}): Uint8Array {
  return ndFrame(
    {
      src: PEER,
      dst: solicitedNodeAddress(target),
      dstMac: ipv6MulticastMac(solicitedNodeAddress(target)),
      ...o,
    },
    { type: Icmpv6Type.NEIGHBOR_SOLICITATION, target, sourceLla: PEER_MAC },
  );
}

function inject(r: Rig, f: Uint8Array): void {
  r.peer.send(f);
  r.clock.advance(0);
}

/** fd00::1 and fd00::2 (and 10.0.0.1/.2) on one hub, DAD done. */
function twoHosts6(seed: number): { clock: VirtualClock; a: Stack; b: Stack } {
  const clock = new VirtualClock();
  const random = new SeededRandom(seed);
  const hub = new Hub(clock);
  const a = makeStack(clock, random, { name: 'a' });
  const b = makeStack(clock, random, { name: 'b' });
  a.addInterface(hub.port('a'), { mac: MAC_A, ip: ['10.0.0.1/24', 'fd00::1/64'] });
  b.addInterface(hub.port('b'), { mac: MAC_B, ip: ['10.0.0.2/24', 'fd00::2/64'] });
  clock.advance(1500);
  return { clock, a, b };
}

/** Every frame a stack is handed counts exactly one accept or drop (reassembly timeouts count datagrams). */
function accounted(s: Stack): void {
  const c = s.counters;
  const perDatagram = c.get('drop.ipv6.frag-timeout') + c.get('drop.ipv6.frag-evicted');
  assert.equal(c.sum('accept.') + c.sum('drop.') - c.sum('drop.tcp.') - perDatagram, c.get('rx.frames'));
}

describe('IPv6 addressing and duplicate address detection', () => {
  test('enabling IPv6 probes the link-local and static addresses from ::, then solicits routers', () => {
    const r = rig();
    r.clock.advance(0);
    const probes = sent(r);
    assert.equal(probes.length, 2);
    for (const p of probes) {
      assert.equal(formatIpv6(p.ip.src), '::');
      assert.equal(p.nd!.type, Icmpv6Type.NEIGHBOR_SOLICITATION);
      assert.deepEqual(p.ip.dst, solicitedNodeAddress(p.nd!.target));
      assert.equal(p.dstMac, ipv6MulticastMac(p.ip.dst));
      assert.equal(p.nd!.sourceLla, -1, 'no link-layer option from ::');
      assert.ok(p.nd!.nonce >= 0, 'RFC 7527 nonce');
    }
    assert.deepEqual(
      probes.map((p) => formatIpv6(p.nd!.target)),
      ['fe80::ff:fe00:1', 'fd00::1'],
    );
    assert.deepEqual(
      r.a.ip6.addresses(r.a.interfaces[0]!).map((x) => x.state),
      ['tentative', 'tentative'],
    );
    r.hub.log.length = 0;
    r.clock.advance(1000);
    assert.deepEqual(
      r.a.ip6.addresses(r.a.interfaces[0]!).map((x) => [x.ip, x.state, x.origin]),
      [
        ['fe80::ff:fe00:1', 'preferred', 'link-local'],
        ['fd00::1', 'preferred', 'static'],
      ],
    );
    const rs = sent(r);
    assert.equal(rs.length, 1);
    assert.equal(rs[0]!.nd!.type, Icmpv6Type.ROUTER_SOLICITATION);
    assert.equal(formatIpv6(rs[0]!.ip.src), 'fe80::ff:fe00:1');
    assert.equal(formatIpv6(rs[0]!.ip.dst), 'ff02::2');
    assert.equal(rs[0]!.nd!.sourceLla, MAC_A);
    // No router answers: three solicitations in all, 4 s apart, then silence.
    r.hub.log.length = 0;
    r.clock.advance(20000);
    assert.equal(sent(r).filter((p) => p.nd?.type === Icmpv6Type.ROUTER_SOLICITATION).length, 2);
  });

  test('with dadDelayMs, each first DAD probe waits a random time below it (RFC 4862 5.4.2), the same nonces drawn', () => {
    const at = (d: number) => {
      const r = rig(['10.0.0.1/24', 'fd00::1/64', 'fd00::2/64', 'fd00::3/64'], { dadDelayMs: d });
      const probes: { ms: number; target: string; nonce: number }[] = [];
      for (let ms = 0; ms <= 2100; ms += 10) {
        r.clock.advance(ms === 0 ? 0 : 10);
        for (const p of sent(r))
          if (p.nd?.type === Icmpv6Type.NEIGHBOR_SOLICITATION)
            probes.push({ ms, target: formatIpv6(p.nd.target), nonce: p.nd.nonce });
        r.hub.log.length = 0;
      }
      return { r, probes };
    };
    const now = at(0);
    const later = at(1000);
    assert.deepEqual(
      now.probes.map((p) => p.ms),
      [0, 0, 0, 0],
      'without the delay every address probes at once',
    );
    const delays = later.probes.map((p) => p.ms);
    assert.equal(delays.length, 4, 'one probe per address');
    assert.ok(
      delays.every((ms) => ms >= 0 && ms < 1000),
      `each probe within the delay: ${delays}`,
    );
    assert.ok(new Set(delays).size > 1, `the addresses do not probe in one burst: ${delays}`);
    const byTarget = (x: typeof now.probes) => x.map((p) => `${p.target} ${p.nonce}`).sort();
    assert.deepEqual(byTarget(later.probes), byTarget(now.probes), 'the same nonces: no extra random draw');
    // Each address is usable one RetransTimer after its own probe, not before.
    const states = later.r.a.ip6.addresses(later.r.a.interfaces[0]!).map((x) => x.state);
    assert.deepEqual(states, ['preferred', 'preferred', 'preferred', 'preferred']);
    assert.throws(() => rig(undefined, { dadDelayMs: -1 }), /dadDelayMs/);
  });

  test('a tentative address that someone else advertises is a duplicate and never used', () => {
    const r = rig();
    r.clock.advance(10);
    const target = parseIpv6('fd00::1');
    inject(
      r,
      ndFrame(
        { src: target, dst: ALL_NODES, dstMac: ipv6MulticastMac(ALL_NODES) },
        { type: Icmpv6Type.NEIGHBOR_ADVERTISEMENT, override: true, target, targetLla: PEER_MAC },
      ),
    );
    r.clock.advance(2000);
    const addrs = r.a.ip6.addresses(r.a.interfaces[0]!);
    assert.equal(addrs.find((x) => x.ip === 'fd00::1')!.state, 'duplicate');
    assert.equal(addrs.find((x) => x.ip === 'fe80::ff:fe00:1')!.state, 'preferred');
    assert.equal(r.a.counters.get('nd.dad.duplicate'), 1);
    // It answers nothing for the address it lost.
    r.hub.log.length = 0;
    inject(r, nsFor(target));
    assert.equal(sent(r).length, 0);
    assert.equal(r.a.counters.get('drop.nd.not-our-target'), 1);
    accounted(r.a);
  });

  test("another node's DAD probe for our tentative address is a conflict; our own looped back is not", () => {
    const r = rig();
    r.clock.advance(0);
    const mine = sent(r).find((p) => formatIpv6(p.nd!.target) === 'fd00::1')!;
    // Our own probe reflected by the link (same nonce): ignored. With our own source MAC Ethernet
    // already drops it; the nonce also catches a reflection through a device that rewrote the MAC.
    const echoed = mine.frame.slice();
    writeMac(echoed, 6, PEER_MAC);
    r.peer.send(echoed);
    r.clock.advance(0);
    assert.equal(r.a.counters.get('accept.nd.dad-looped'), 1);
    // The same probe with another nonce: a second node wants fd00::1.
    const target = parseIpv6('fd00::1');
    const group = solicitedNodeAddress(target);
    inject(
      r,
      ndFrame(
        { src: parseIpv6('::'), dst: group, dstMac: ipv6MulticastMac(group) },
        { type: Icmpv6Type.NEIGHBOR_SOLICITATION, target, nonce: mine.nd!.nonce ^ 1 },
      ),
    );
    r.clock.advance(2000);
    assert.equal(r.a.ip6.addresses(r.a.interfaces[0]!).find((x) => x.ip === 'fd00::1')!.state, 'duplicate');
    accounted(r.a);
  });

  test('a DAD probe for an address we hold is answered to all nodes, without the solicited flag', () => {
    const r = rig();
    settle(r);
    const target = parseIpv6('fd00::1');
    const group = solicitedNodeAddress(target);
    inject(
      r,
      ndFrame(
        { src: parseIpv6('::'), dst: group, dstMac: ipv6MulticastMac(group) },
        { type: Icmpv6Type.NEIGHBOR_SOLICITATION, target, nonce: 12345 },
      ),
    );
    const [na] = sent(r);
    assert.equal(na!.nd!.type, Icmpv6Type.NEIGHBOR_ADVERTISEMENT);
    assert.equal(formatIpv6(na!.ip.dst), 'ff02::1');
    assert.deepEqual([na!.nd!.solicited, na!.nd!.override, na!.nd!.targetLla], [false, true, MAC_A]);
  });
});

describe('neighbor solicitation and advertisement', () => {
  test('an NS for our address is answered (solicited, override) and its sender learned as stale', () => {
    const r = rig();
    settle(r);
    inject(r, nsFor(parseIpv6('fd00::1')));
    const [na] = sent(r);
    assert.ok(na);
    assert.equal(na.dstMac, PEER_MAC, 'straight to the MAC the solicitation carried');
    assert.equal(formatIpv6(na.ip.src), 'fd00::1');
    assert.equal(formatIpv6(na.ip.dst), 'fd00::99');
    assert.deepEqual(
      [na.nd!.solicited, na.nd!.override, na.nd!.router, formatIpv6(na.nd!.target), na.nd!.targetLla],
      [true, true, false, 'fd00::1', MAC_A],
    );
    const n = r.a.neighbors.lookup6('fd00::99');
    assert.deepEqual([n?.mac, n?.status], [PEER_MAC, 'stale']);
    accounted(r.a);
  });

  test('forged or malformed solicitations change nothing and get no answer', () => {
    const r = rig();
    settle(r);
    const target = parseIpv6('fd00::1');
    const group = solicitedNodeAddress(target);
    const cases: [string, Uint8Array][] = [
      ['hop limit 64 (forwarded from off-link)', nsFor(target, { hopLimit: 64 })],
      [
        'multicast target',
        ndFrame(
          { src: PEER, dst: group, dstMac: ipv6MulticastMac(group) },
          { type: Icmpv6Type.NEIGHBOR_SOLICITATION, target: ALL_NODES, sourceLla: PEER_MAC },
        ),
      ],
      [
        'from :: with a link-layer address',
        ndFrame(
          { src: parseIpv6('::'), dst: group, dstMac: ipv6MulticastMac(group) },
          { type: Icmpv6Type.NEIGHBOR_SOLICITATION, target, sourceLla: PEER_MAC },
        ),
      ],
      [
        'from :: to a unicast address',
        ndFrame({ src: parseIpv6('::'), dst: target }, { type: Icmpv6Type.NEIGHBOR_SOLICITATION, target }),
      ],
      // Same low 24 bits as fd00::1, so the same solicited-node group: it arrives, but is not ours.
      ['not our target', nsFor(parseIpv6('fd00:1::1'))],
    ];
    for (const [what, f] of cases) {
      inject(r, f);
      assert.equal(sent(r).length, 0, what);
      assert.equal(r.a.neighbors.lookup6('fd00::99'), null, what);
    }
    // A bad checksum is refused before anything looks at the message.
    const bad = nsFor(target);
    bad[bad.length - 1]! ^= 1;
    inject(r, bad);
    assert.equal(r.a.counters.get('drop.icmpv6.bad-checksum'), 1);
    assert.equal(r.a.counters.get('drop.nd.hop-limit'), 1);
    assert.equal(r.a.counters.get('drop.nd.bad-target'), 1);
    assert.equal(r.a.counters.get('drop.nd.bad-dad-probe'), 2);
    assert.equal(r.a.counters.get('drop.nd.not-our-target'), 1);
    accounted(r.a);
  });

  test('resolution: packets wait for the advertisement, which makes the neighbor reachable', async () => {
    const r = rig();
    settle(r);
    const ping = r.a.ip6.ping('fd00::99', { timeoutMs: 3000 });
    const [ns] = sent(r);
    assert.equal(ns!.nd!.type, Icmpv6Type.NEIGHBOR_SOLICITATION);
    assert.equal(formatIpv6(ns!.ip.dst), 'ff02::1:ff00:99');
    assert.equal(ns!.dstMac, 0x3333ff000099);
    assert.equal(ns!.nd!.sourceLla, MAC_A);
    assert.equal(r.a.neighbors.lookup6('fd00::99')?.status, 'incomplete');
    r.hub.log.length = 0;
    inject(
      r,
      ndFrame(
        { src: PEER, dst: parseIpv6('fd00::1') },
        {
          type: Icmpv6Type.NEIGHBOR_ADVERTISEMENT,
          solicited: true,
          override: true,
          target: PEER,
          targetLla: PEER_MAC,
        },
      ),
    );
    assert.equal(r.a.neighbors.lookup6('fd00::99')?.status, 'reachable');
    const [echo] = sent(r);
    assert.equal(echo!.icmp.type, Icmpv6Type.ECHO_REQUEST);
    assert.equal(echo!.dstMac, PEER_MAC);
    // Answer it as the peer would.
    const reply = echo!.frame.slice();
    const ip = echo!.ip;
    const h = createIcmpv6Header();
    decodeIcmpv6(reply, ip.payloadOffset, ip.payloadLen, ip.src, ip.dst, h);
    h.type = Icmpv6Type.ECHO_REPLY;
    encodeIcmpv6(h, reply, ip.payloadOffset, ip.payloadLen - 8, ip.dst, ip.src);
    reply.set(reply.slice(38, 54), 22);
    reply.set(ip.src, 38);
    writeMac(reply, 0, MAC_A);
    writeMac(reply, 6, PEER_MAC);
    inject(r, reply);
    const { rttMs } = await ping;
    assert.equal(rttMs, 0);
    accounted(r.a);
  });

  test('advertisement rules (RFC 4861 7.2.5): no entry, override, solicited-to-multicast, our address', () => {
    const r = rig();
    settle(r);
    const na = (m: Partial<NdEncode>, dst = parseIpv6('fd00::1'), dstMac = MAC_A) =>
      ndFrame({ src: PEER, dst, dstMac }, { type: Icmpv6Type.NEIGHBOR_ADVERTISEMENT, target: PEER, ...m });
    // Nobody asked: no entry is created.
    inject(r, na({ solicited: false, override: true, targetLla: PEER_MAC }));
    assert.equal(r.a.neighbors.lookup6('fd00::99'), null);
    // Learn it (solicited), then an advertisement without override naming another MAC only casts doubt.
    r.a.ip6.ping('fd00::99', { timeoutMs: 100 }).catch(() => {});
    inject(r, na({ solicited: true, override: true, targetLla: PEER_MAC }));
    assert.equal(r.a.neighbors.lookup6('fd00::99')?.status, 'reachable');
    inject(r, na({ solicited: false, override: false, targetLla: 0x02000000abcd }));
    assert.deepEqual(
      [r.a.neighbors.lookup6('fd00::99')?.mac, r.a.neighbors.lookup6('fd00::99')?.status],
      [PEER_MAC, 'stale'],
    );
    // Solicited flag on an advertisement to a multicast group: invalid, dropped.
    inject(
      r,
      na(
        { solicited: true, override: true, targetLla: 0x02000000abcd },
        ALL_NODES,
        ipv6MulticastMac(ALL_NODES),
      ),
    );
    assert.equal(r.a.neighbors.lookup6('fd00::99')?.mac, PEER_MAC);
    assert.equal(r.a.counters.get('drop.nd.solicited-to-multicast'), 1);
    // A forged one with hop limit 64 cannot move it either.
    inject(
      r,
      ndFrame(
        { src: PEER, dst: ALL_NODES, dstMac: ipv6MulticastMac(ALL_NODES), hopLimit: 64 },
        { type: Icmpv6Type.NEIGHBOR_ADVERTISEMENT, override: true, target: PEER, targetLla: 0x02000000abcd },
      ),
    );
    assert.equal(r.a.neighbors.lookup6('fd00::99')?.mac, PEER_MAC);
    // With override the new MAC is taken (unproven: stale), as a failed-over peer announces itself.
    inject(r, na({ override: true, targetLla: 0x02000000abcd }, ALL_NODES, ipv6MulticastMac(ALL_NODES)));
    assert.deepEqual(
      [r.a.neighbors.lookup6('fd00::99')?.mac, r.a.neighbors.lookup6('fd00::99')?.status],
      [0x02000000abcd, 'stale'],
    );
    // Someone advertising our own address never changes what we hold.
    inject(
      r,
      ndFrame(
        { src: PEER, dst: ALL_NODES, dstMac: ipv6MulticastMac(ALL_NODES) },
        {
          type: Icmpv6Type.NEIGHBOR_ADVERTISEMENT,
          override: true,
          target: parseIpv6('fd00::1'),
          targetLla: PEER_MAC,
        },
      ),
    );
    assert.equal(r.a.counters.get('drop.nd.address-conflict'), 1);
    assert.equal(r.a.ip6.addresses(r.a.interfaces[0]!).find((x) => x.ip === 'fd00::1')!.state, 'preferred');
    accounted(r.a);
  });

  test('reachability: reachable ages to stale; a stale neighbor in use is probed by unicast and fails', () => {
    const r = rig(['10.0.0.1/24', 'fd00::1/64']);
    settle(r);
    inject(r, nsFor(parseIpv6('fd00::1')));
    r.a.neighbors.confirm6(PEER);
    assert.equal(r.a.neighbors.lookup6('fd00::99')?.status, 'reachable');
    r.clock.advance(46000); // reachable time 30 s × at most 1.5
    assert.equal(r.a.neighbors.lookup6('fd00::99')?.status, 'stale');
    r.hub.log.length = 0;
    r.a.ip6.ping('fd00::99', { timeoutMs: 100 }).catch(() => {});
    assert.equal(r.a.neighbors.lookup6('fd00::99')?.status, 'delay');
    r.clock.advance(5000);
    assert.equal(r.a.neighbors.lookup6('fd00::99')?.status, 'probe');
    r.clock.advance(3000);
    const probes = sent(r).filter((p) => p.nd?.type === Icmpv6Type.NEIGHBOR_SOLICITATION);
    assert.equal(probes.length, 3);
    for (const p of probes) {
      assert.equal(p.dstMac, PEER_MAC, 'unicast probe to the cached MAC');
      assert.equal(formatIpv6(p.ip.dst), 'fd00::99');
    }
    assert.equal(r.a.neighbors.lookup6('fd00::99')?.status, 'failed');
  });

  test('a closed stack sends no unsolicited advertisement: refused with a typed error', () => {
    const r = rig();
    settle(r);
    r.a.close();
    const before = sent(r).length;
    assert.throws(() => r.a.ip6.announce(r.a.interfaces[0]!), InvalidStateError);
    assert.equal(sent(r).length, before);
  });

  test('unsolicited advertisements with override announce every address', () => {
    const r = rig();
    settle(r);
    assert.equal(r.a.ip6.announce(r.a.interfaces[0]!), 2);
    const nas = sent(r);
    assert.deepEqual(
      nas.map((p) => [
        formatIpv6(p.nd!.target),
        p.nd!.override,
        p.nd!.solicited,
        formatIpv6(p.ip.dst),
        p.dstMac,
      ]),
      [
        ['fe80::ff:fe00:1', true, false, 'ff02::1', 0x333300000001],
        ['fd00::1', true, false, 'ff02::1', 0x333300000001],
      ],
    );
  });
});

describe('router advertisements and autoconfiguration', () => {
  test('IPv6 is off on an IPv4-only interface unless asked for; `ipv6: true` gives a link-local address', () => {
    const off = rig('10.0.0.1/24');
    settle(off);
    assert.equal(off.a.ip6.enabled(off.a.interfaces[0]!), false);
    const clock = new VirtualClock();
    const hub = new Hub(clock);
    const st = makeStack(clock, new SeededRandom(1));
    const i = st.addInterface(hub.port('x'), { mac: MAC_A, ip: '10.0.0.1/24', ipv6: true });
    clock.advance(1500);
    assert.deepEqual(
      st.ip6.addresses(i).map((x) => [x.ip, x.state]),
      [['fe80::ff:fe00:1', 'preferred']],
    );
  });

  const prefix = (p: string, valid: number, preferred: number, auto = true, onLink = true) => ({
    prefixLength: 64,
    onLink,
    autonomous: auto,
    validLifetime: valid,
    preferredLifetime: preferred,
    prefix: parseIpv6(p),
  });
  const ra = (m: Partial<NdEncode>, o: Partial<FrameOpts> = {}) =>
    ndFrame(
      { src: ROUTER_LL, dst: ALL_NODES, dstMac: ipv6MulticastMac(ALL_NODES), srcMac: ROUTER_MAC, ...o },
      {
        type: Icmpv6Type.ROUTER_ADVERTISEMENT,
        curHopLimit: 64,
        routerLifetime: 1800,
        sourceLla: ROUTER_MAC,
        ...m,
      },
    );

  test('an RA gives a default router, an on-link prefix and an address formed from the MAC', () => {
    const s = rig(['10.0.0.1/24', 'fd00::1/64']);
    settle(s);
    inject(s, ra({ prefixes: [prefix('2001:db8:1::', 86400, 14400)], mtu: 1400, curHopLimit: 99 }));
    const i = s.a.interfaces[0]!;
    assert.deepEqual(s.a.ip6.routers(i), ['fe80::ff:fe00:fe']);
    assert.equal(s.a.ip6.mtu(i), 1400);
    const auto = s.a.ip6.addresses(i).find((x) => x.origin === 'slaac')!;
    assert.equal(auto.ip, '2001:db8:1::ff:fe00:1');
    assert.equal(auto.state, 'tentative');
    s.clock.advance(1000);
    assert.equal(s.a.ip6.addresses(i).find((x) => x.origin === 'slaac')!.state, 'preferred');
    // The router's link-layer address was learned from the RA.
    assert.equal(s.a.neighbors.lookup6(ROUTER_LL)?.mac, ROUTER_MAC);
    // Routing: on-link prefixes go direct, anything else via the router.
    assert.equal(formatIpv6(s.a.ip6.route(parseIpv6('2001:db8:1::5'))!.nextHop), '2001:db8:1::5');
    assert.equal(formatIpv6(s.a.ip6.route(parseIpv6('fd00::5'))!.nextHop), 'fd00::5');
    assert.equal(formatIpv6(s.a.ip6.route(parseIpv6('2001:db8:9::1'))!.nextHop), 'fe80::ff:fe00:fe');
    // Source selection follows the destination.
    assert.equal(formatIpv6(s.a.ip6.sourceFor(i, parseIpv6('2001:db8:9::1'))!), '2001:db8:1::ff:fe00:1');
    assert.equal(formatIpv6(s.a.ip6.sourceFor(i, parseIpv6('fd00::5'))!), 'fd00::1');
    assert.equal(formatIpv6(s.a.ip6.sourceFor(i, parseIpv6('fe80::5'))!), 'fe80::ff:fe00:1');
    // The RA's hop limit is used from now on.
    s.hub.log.length = 0;
    s.a.ip6.ping('2001:db8:1::5', { timeoutMs: 10 }).catch(() => {});
    s.a.neighbors.setStatic6(i, parseIpv6('2001:db8:1::5'), PEER_MAC);
    const echo = sent(s).find((p) => p.icmp.type === Icmpv6Type.ECHO_REQUEST)!;
    assert.equal(echo.ip.hopLimit, 99);
    s.clock.advance(20);
    // Router lifetime 0 withdraws it.
    inject(s, ra({ routerLifetime: 0 }));
    assert.deepEqual(s.a.ip6.routers(i), []);
    assert.equal(s.a.ip6.route(parseIpv6('2001:db8:9::1')), null);
    accounted(s.a);
  });

  test('invalid RAs change nothing: off-link source, hop limit, bad MTU, preferred beyond valid', () => {
    const s = rig(['10.0.0.1/24', 'fd00::1/64']);
    settle(s);
    const i = s.a.interfaces[0]!;
    inject(s, ra({ prefixes: [prefix('2001:db8:1::', 600, 600)] }, { src: PEER }));
    inject(s, ra({ prefixes: [prefix('2001:db8:1::', 600, 600)] }, { hopLimit: 254 }));
    assert.deepEqual(s.a.ip6.routers(i), []);
    assert.equal(s.a.ip6.addresses(i).length, 2);
    inject(s, ra({ mtu: 1200, prefixes: [prefix('2001:db8:2::', 600, 700)] }));
    assert.equal(s.a.ip6.mtu(i), 1500, 'below the 1280 floor');
    assert.equal(s.a.ip6.addresses(i).length, 2, 'preferred > valid is ignored');
    assert.equal(s.a.counters.get('drop.nd.ra-not-link-local'), 1);
    assert.equal(s.a.counters.get('drop.nd.hop-limit'), 1);
    accounted(s.a);
  });

  test('prefix lifetimes: the address expires with its prefix; a short lifetime cannot cut below two hours', () => {
    const s = rig(['10.0.0.1/24', 'fd00::1/64']);
    settle(s);
    const i = s.a.interfaces[0]!;
    inject(s, ra({ prefixes: [prefix('2001:db8:1::', 600, 300)] }));
    s.clock.advance(1000);
    assert.equal(s.a.ip6.addresses(i).find((x) => x.origin === 'slaac')!.state, 'preferred');
    s.clock.advance(300_000);
    assert.equal(s.a.ip6.addresses(i).find((x) => x.origin === 'slaac')!.state, 'deprecated');
    s.clock.advance(300_000);
    assert.equal(
      s.a.ip6.addresses(i).find((x) => x.origin === 'slaac'),
      undefined,
    );
    // Long lifetime, then an RA claiming 60 s: kept at two hours (RFC 4862 5.5.3 e).
    inject(s, ra({ prefixes: [prefix('2001:db8:1::', 86400, 86400)] }));
    inject(s, ra({ prefixes: [prefix('2001:db8:1::', 60, 60)] }));
    const a = s.a.ip6.addresses(i).find((x) => x.origin === 'slaac')!;
    assert.equal(a.validLifetime, 7200);
    inject(s, ra({ prefixes: [prefix('2001:db8:1::', ND_INFINITE, ND_INFINITE)] }));
    assert.equal(
      s.a.ip6.addresses(i).find((x) => x.origin === 'slaac')!.validLifetime,
      Number.POSITIVE_INFINITY,
    );
  });
});

describe('IPv6 input', () => {
  test('echo requests are answered with the same identifier, sequence and data', () => {
    const r = rig();
    settle(r);
    inject(r, nsFor(parseIpv6('fd00::1')));
    r.hub.log.length = 0;
    const data = new TextEncoder().encode('chimney six');
    inject(r, echoFrame({ src: PEER, dst: parseIpv6('fd00::1'), hopLimit: 64 }, 0x75db, 7, data));
    const [rep] = sent(r);
    assert.equal(rep!.icmp.type, Icmpv6Type.ECHO_REPLY);
    assert.deepEqual([rep!.icmp.id, rep!.icmp.seq], [0x75db, 7]);
    assert.deepEqual(rep!.frame.subarray(rep!.icmp.bodyOffset), data);
    assert.equal(formatIpv6(rep!.ip.dst), 'fd00::99');
    assert.equal(rep!.dstMac, PEER_MAC);
    // To the all-nodes group it answers too, from its own unicast address.
    r.hub.log.length = 0;
    inject(r, echoFrame({ src: PEER_LL, dst: ALL_NODES, dstMac: ipv6MulticastMac(ALL_NODES) }, 1, 1, data));
    r.a.neighbors.setStatic6(r.a.interfaces[0]!, PEER_LL, PEER_MAC);
    const [rep2] = sent(r);
    assert.equal(formatIpv6(rep2!.ip.src), 'fe80::ff:fe00:1');
    accounted(r.a);
  });

  test('an unknown next header gets a parameter problem pointing at it; not for multicast', () => {
    const r = rig();
    settle(r);
    r.a.neighbors.setStatic6(r.a.interfaces[0]!, PEER, PEER_MAC);
    const opts = new Uint8Array([253, 0, 1, 4, 0, 0, 0, 0]);
    inject(r, ipv6Frame({ src: PEER, dst: parseIpv6('fd00::1'), hopLimit: 64 }, Ipv6Next.DEST_OPTS, opts));
    const [pp] = sent(r);
    assert.equal(pp!.icmp.type, Icmpv6Type.PARAMETER_PROBLEM);
    assert.deepEqual([pp!.icmp.code, pp!.icmp.pointer], [Ipv6Problem.NEXT_HEADER, 40]);
    r.hub.log.length = 0;
    inject(
      r,
      ipv6Frame({ src: PEER, dst: ALL_NODES, dstMac: ipv6MulticastMac(ALL_NODES) }, Ipv6Next.DEST_OPTS, opts),
    );
    assert.equal(sent(r).length, 0);
    // An unknown option of type 10xxxxxx is answered even to multicast (RFC 8200 4.2).
    const bad = new Uint8Array([59, 0, 0x9e, 2, 0, 0, 0, 0]);
    inject(
      r,
      ipv6Frame({ src: PEER, dst: ALL_NODES, dstMac: ipv6MulticastMac(ALL_NODES) }, Ipv6Next.DEST_OPTS, bad),
    );
    const [opt] = sent(r);
    assert.deepEqual([opt!.icmp.code, opt!.icmp.pointer], [Ipv6Problem.OPTION, 42]);
    assert.equal(r.a.counters.get('drop.ipv6.unknown-protocol'), 2);
    accounted(r.a);
  });

  test('frames for groups we did not join, other hosts and tentative addresses are dropped', () => {
    const r = rig();
    r.clock.advance(0);
    const data = new Uint8Array(4);
    // While fd00::1 is tentative nothing addressed to it is taken.
    inject(r, echoFrame({ src: PEER, dst: parseIpv6('fd00::1') }, 1, 1, data));
    assert.equal(r.a.counters.get('drop.ipv6.tentative-dst'), 1);
    settle(r);
    const other = solicitedNodeAddress(parseIpv6('fd00::1234:5678'));
    inject(r, echoFrame({ src: PEER, dst: other, dstMac: ipv6MulticastMac(other) }, 1, 1, data));
    assert.equal(r.a.counters.get('drop.eth.not-for-us'), 1, 'the group MAC is filtered at Ethernet');
    inject(r, echoFrame({ src: PEER, dst: parseIpv6('fd00::2') }, 1, 1, data));
    assert.equal(r.a.counters.get('drop.ipv6.not-for-us'), 1);
    inject(r, echoFrame({ src: ALL_NODES, dst: parseIpv6('fd00::1') }, 1, 1, data));
    assert.equal(r.a.counters.get('drop.ipv6.martian-src'), 1);
    assert.equal(sent(r).length, 0);
    accounted(r.a);
  });

  test('two stacks find each other and ping over IPv6 with nothing configured but addresses', async () => {
    const { clock, a, b } = twoHosts6(3);
    const p = a.ip6.ping('fd00::2');
    clock.advance(10);
    assert.ok((await p).rttMs >= 0);
    const ll = a.ip6.ping(formatIpv6(linkLocalFromMac(MAC_B)));
    clock.advance(10);
    await ll;
    assert.equal(a.neighbors.lookup6('fd00::2')?.mac, MAC_B);
    assert.equal(b.neighbors.lookup6('fd00::1')?.mac, MAC_A);
    assert.equal(b.counters.get('icmpv6.tx.echo-reply'), 2);
    accounted(a);
    accounted(b);
  });
});

describe('IPv6 fragments and path MTU', () => {
  /** Split an IPv6 frame built by ipv6Frame into fragments of `chunk` payload bytes each. */
  function fragments(whole: Uint8Array, chunk: number, id: number): Uint8Array[] {
    const next = whole[14 + 6]!;
    const data = whole.subarray(54);
    const out: Uint8Array[] = [];
    for (let off = 0; off < data.length; off += chunk) {
      const n = Math.min(chunk, data.length - off);
      const f = new Uint8Array(54 + 8 + n);
      f.set(whole.subarray(0, 54));
      f[18] = (8 + n) >>> 8;
      f[19] = (8 + n) & 0xff;
      f[20] = Ipv6Next.FRAGMENT;
      encodeIpv6Fragment(f, 54, next, off, off + n < data.length, id);
      f.set(data.subarray(off, off + n), 62);
      out.push(f);
    }
    return out;
  }

  test('a fragmented echo request is reassembled in any order and answered in fragments', () => {
    const r = rig();
    settle(r);
    r.a.neighbors.setStatic6(r.a.interfaces[0]!, PEER, PEER_MAC);
    const data = new Uint8Array(3000).map((_, i) => (i * 7) & 0xff);
    const req = echoFrame({ src: PEER, dst: parseIpv6('fd00::1'), hopLimit: 64 }, 9, 1, data);
    const frags = fragments(req, 1232, 0xabc);
    assert.equal(frags.length, 3);
    for (const f of [frags[2]!, frags[0]!, frags[1]!]) inject(r, f);
    assert.equal(r.a.counters.get('accept.ipv6.frag-queued'), 2);
    assert.equal(r.a.counters.get('accept.icmpv6.echo-request'), 1);
    // The 3008-byte reply does not fit 1500: it leaves in fragments the peer can put together.
    const out = r.hub.log.filter((e) => e.from === 'a').map((e) => e.frame);
    assert.equal(out.length, 3);
    const rx = makeStack(r.clock, new SeededRandom(9));
    rx.addInterface(r.hub.port('probe'), {
      mac: PEER_MAC,
      ip: ['10.0.0.99/24', 'fd00::99/64'],
    });
    const h = createIpv6Header();
    let got = 0;
    for (const f of out) {
      assert.ok(f.length <= 14 + 1500);
      assert.equal(decodeIpv6(f, 14, f.length - 14, h), null);
      assert.ok(h.fragment);
      const whole = rx.ip6.reassembly.add6(h, f, 14);
      if (whole) {
        assert.equal(decodeIpv6(whole, 0, whole.length, h), null);
        const m = createIcmpv6Header();
        assert.equal(decodeIcmpv6(whole, h.payloadOffset, h.payloadLen, h.src, h.dst, m), null);
        assert.deepEqual([m.type, m.id, m.seq], [Icmpv6Type.ECHO_REPLY, 9, 1]);
        assert.deepEqual(whole.subarray(m.bodyOffset), data);
        got++;
      }
    }
    assert.equal(got, 1);
    accounted(r.a);
  });

  test('neighbor discovery that arrives in fragments is ignored (RFC 6980)', () => {
    const r = rig();
    settle(r);
    const ns = nsFor(parseIpv6('fd00::1'), { dst: parseIpv6('fd00::1'), dstMac: MAC_A });
    for (const f of fragments(ns, 16, 77)) inject(r, f);
    assert.equal(r.a.counters.get('drop.nd.fragmented'), 1);
    assert.equal(sent(r).length, 0);
    assert.equal(r.a.neighbors.lookup6('fd00::99'), null);
    accounted(r.a);
  });

  test('overlapping fragments discard the datagram; an incomplete one times out with time exceeded', () => {
    const r = rig();
    settle(r);
    r.a.neighbors.setStatic6(r.a.interfaces[0]!, PEER, PEER_MAC);
    const req = echoFrame({ src: PEER, dst: parseIpv6('fd00::1'), hopLimit: 64 }, 9, 1, new Uint8Array(2000));
    const a = fragments(req, 1232, 1);
    const b = fragments(req, 1000, 1); // same id, other boundaries: overlaps a[0]
    inject(r, a[0]!);
    inject(r, b[1]!);
    inject(r, a[1]!);
    assert.equal(r.a.counters.get('drop.ipv6.frag-overlap'), 1);
    assert.equal(r.a.counters.get('accept.icmpv6.echo-request'), 0);
    // Only the first fragment of another datagram: after 60 s the sender hears why.
    inject(r, fragments(req, 1232, 2)[0]!);
    r.hub.log.length = 0;
    r.clock.advance(61_000);
    const te = sent(r).find((p) => p.icmp.type === Icmpv6Type.TIME_EXCEEDED)!;
    assert.ok(te);
    assert.equal(te.icmp.code, 1);
    assert.equal(formatIpv6(te.ip.dst), 'fd00::99');
    assert.equal(r.a.ip6.reassembly.size, 0);
    accounted(r.a);
  });

  test('packet too big lowers the path MTU, never below 1280, and only for packets we sent', () => {
    const r = rig();
    settle(r);
    r.a.neighbors.setStatic6(r.a.interfaces[0]!, PEER, PEER_MAC);
    const ptb = (mtu: number, quotedSrc: Uint8Array) => {
      const quote = ipv6Frame(
        { src: quotedSrc, dst: PEER, hopLimit: 64 },
        Ipv6Next.ICMPV6,
        new Uint8Array(1200),
      ).subarray(14);
      const body = new Uint8Array(8 + quote.length);
      body.set(quote, 8);
      const h = createIcmpv6Header();
      h.type = Icmpv6Type.PACKET_TOO_BIG;
      h.mtu = mtu;
      const router = parseIpv6('fd00::fe');
      encodeIcmpv6(h, body, 0, quote.length, router, parseIpv6('fd00::1'));
      return ipv6Frame({ src: router, dst: parseIpv6('fd00::1'), hopLimit: 64 }, Ipv6Next.ICMPV6, body);
    };
    assert.equal(r.a.ip6.pathMtu('fd00::99'), 1500);
    inject(r, ptb(1400, parseIpv6('fd00::5')));
    assert.equal(r.a.ip6.pathMtu('fd00::99'), 1500, 'a quote of a packet we did not send');
    inject(r, ptb(1400, parseIpv6('fd00::1')));
    assert.equal(r.a.ip6.pathMtu('fd00::99'), 1400);
    inject(r, ptb(1450, parseIpv6('fd00::1')));
    assert.equal(r.a.ip6.pathMtu('fd00::99'), 1400, 'never raised by a report');
    inject(r, ptb(500, parseIpv6('fd00::1')));
    assert.equal(r.a.ip6.pathMtu('fd00::99'), 1280, 'the IPv6 minimum');
    r.hub.log.length = 0;
    r.a.ip6.ping('fd00::99', { size: 1400, timeoutMs: 10 }).catch(() => {});
    const out = r.hub.log.filter((e) => e.from === 'a').map((e) => e.frame);
    assert.equal(out.length, 2);
    for (const f of out) assert.ok(f.length - 14 <= 1280);
    r.clock.advance(10 * 60 * 1000 + 1);
    assert.equal(r.a.ip6.pathMtu('fd00::99'), 1500, 'the learned value expires');
    accounted(r.a);
  });

  test('two stacks ping each other with 5000-byte echoes over a 1500-byte link', async () => {
    const { clock, a, b } = twoHosts6(5);
    const p = a.ip6.ping('fd00::2', { size: 5000 });
    clock.advance(10);
    await p;
    assert.equal(b.counters.get('accept.icmpv6.echo-request'), 1);
    assert.equal(a.counters.get('accept.icmpv6.echo-reply'), 1);
    assert.equal(b.counters.get('ipv6.tx.fragmented'), 1);
  });
});
