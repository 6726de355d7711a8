/**
 * Failover on IPv6 (simulator): the port that takes over the host's traffic announces the team's
 * IPv6 addresses with unsolicited neighbor advertisements (override set, to all nodes, three a
 * second apart), members probe IPv6 neighbors with neighbor solicitations under the ARP probes'
 * rules, and mixed-family streams survive carrier, reachability and crash faults.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { Counters } from '../../src/core/counters.ts';
import { SeededRandom } from '../../src/core/random.ts';
import type { Link, RxOffloadInfo } from '../../src/link/link.ts';
import { MemorySwitch } from '../../src/link/memory-switch.ts';
import { decodeNdFrame, encodeNdFrame, ND_FRAME_MAX } from '../../src/stack/nd-frame.ts';
import { ProbeTap } from '../../src/team/probe-tap.ts';
import {
  formatIpv6,
  formatMac,
  ipv6MulticastMac,
  linkLocalFromMac,
  parseIpv6,
  parseMac,
  readU16,
} from '../../src/wire/addr.ts';
import { ethDst, ethSrc, ethTagged, ethType } from '../../src/wire/fields.ts';
import { Icmpv6Type } from '../../src/wire/icmpv6.ts';
import { createIpv6Header, decodeIpv6, Ipv6Next } from '../../src/wire/ipv6.ts';
import { createMldMessage, decodeMld, MldType } from '../../src/wire/mld.ts';
import { createNdMessage } from '../../src/wire/ndp.ts';
import { assertClean, runScenario } from './scenario.ts';
import { buildTeamRig, PEER_IP6, TEAM_IP6, WrappedLink } from './team-sim.ts';

const TEAM_MAC = parseMac('02:00:00:00:aa:01');

/** A member's port that records what the member sends and can drop the neighbor advertisements it hears. */
class NdLink extends WrappedLink {
  readonly sent: { at: number; frame: Uint8Array }[] = [];
  dropNa = false;
  droppedNa = 0;
  constructor(
    inner: Link,
    private readonly now: () => number,
  ) {
    super(inner);
  }
  protected override rx(f: Uint8Array, info?: RxOffloadInfo): void {
    if (this.dropNa && ndType(f) === Icmpv6Type.NEIGHBOR_ADVERTISEMENT) {
      this.droppedNa++;
      return;
    }
    this.handler?.(f, info);
  }
  override send(f: Uint8Array): boolean {
    if (ethType(f) === 0x86dd) this.sent.push({ at: this.now(), frame: f.slice() });
    return this.inner.send(f);
  }
}

/** The ICMPv6 type of an untagged IPv6 frame without extension headers, or -1. */
function ndType(f: Uint8Array): number {
  if (f.length < 14 + 40 + 4 || ethType(f) !== 0x86dd || f[14 + 6] !== 58) return -1;
  return f[14 + 40]!;
}

function ndRig(opts: { probeTargets?: string[]; validate?: 'any' | 'probe'; vlan?: number } = {}) {
  const links: NdLink[] = [];
  let now = (): number => 0;
  const rig = buildTeamRig({
    seed: 3,
    nics: 2,
    ip6: true,
    probeTargets: opts.probeTargets,
    health: { validate: opts.validate },
    vlan: opts.vlan,
    wrapPort: (p) => {
      const l = new NdLink(p, () => now());
      links.push(l);
      return l;
    },
  });
  now = () => rig.net.now();
  return { ...rig, links };
}

const ip6 = createIpv6Header();
const nd = createNdMessage();
const mld = createMldMessage();

describe('IPv6 failover: unsolicited neighbor advertisements', () => {
  test('the port that takes over the host traffic advertises every team address, override set, three times 1 s apart', async () => {
    const r = ndRig();
    // Duplicate address detection on both ends first.
    await r.net.sleep(1500);
    const host = r.team.hostNic!;
    const from = r.nics.indexOf(host as (typeof r.nics)[number]);
    const to = 1 - from;
    assert.ok(from >= 0);
    const tCut = r.net.now();
    const before = r.links[to]!.sent.length;
    r.ports[from]!.cut();
    await r.net.sleep(3500);
    assert.equal(r.team.hostNic, r.nics[to], 'the host traffic moved');
    const nas = r.links[to]!.sent.slice(before).filter((s) => {
      if (!decodeNdFrame(s.frame, ip6, nd)) return false;
      return nd.type === Icmpv6Type.NEIGHBOR_ADVERTISEMENT;
    });
    const want = [TEAM_IP6, formatIpv6(linkLocalFromMac(TEAM_MAC))].sort();
    assert.equal(nas.length, 3 * want.length, `3 rounds of ${want.length}, got ${nas.length}`);
    for (const s of nas) {
      assert.ok(decodeNdFrame(s.frame, ip6, nd));
      assert.equal(nd.override, true, 'override set');
      assert.equal(nd.solicited, false, 'unsolicited');
      assert.equal(nd.targetLla, TEAM_MAC, 'target link-layer address is the team MAC');
      assert.equal(formatIpv6(ip6.dst), 'ff02::1', 'to all nodes');
      assert.equal(ip6.hopLimit, 255);
      assert.equal(formatIpv6(ip6.src), formatIpv6(nd.target), 'from the advertised address itself');
      assert.equal(ethDst(s.frame), ipv6MulticastMac(parseIpv6('ff02::1')));
      assert.equal(
        formatMac(ethSrc(s.frame)),
        formatMac(TEAM_MAC),
        'from the team MAC: the switch learns it here',
      );
    }
    const rounds: number[][] = [[], [], []];
    nas.forEach((s, i) => {
      assert.ok(decodeNdFrame(s.frame, ip6, nd));
      rounds[Math.floor(i / want.length)]!.push(s.at);
      if (i % want.length === want.length - 1) {
        const targets = nas
          .slice(i + 1 - want.length, i + 1)
          .map((x) => {
            assert.ok(decodeNdFrame(x.frame, ip6, nd));
            return formatIpv6(nd.target);
          })
          .sort();
        assert.deepEqual(targets, want, 'every address in every round');
      }
    });
    assert.ok(rounds[0]![0]! - tCut < 10, 'the first round goes out at the takeover');
    assert.ok(rounds[1]![0]! - rounds[0]![0]! >= 1000, 'RetransTimer apart (RFC 4861 7.2.6)');
    assert.ok(rounds[2]![0]! - rounds[1]![0]! >= 1000);
    assert.equal(r.counters.get('team.unsolicited-na'), 3 * want.length);
    // The peer took them as valid advertisements (nothing counted as malformed).
    assert.ok(r.peer.stack.counters.get('accept.nd.na') >= nas.length);
    r.host.close();
    r.net.close();
  });

  test("the port that takes over reports the host stack's multicast groups again (MLD), for a snooping switch", async () => {
    // A reachability failure, not a carrier cut: the team's link never goes down, so the stack's
    // own resend on carrier-up does not run; only the team can tell it the port changed.
    const r = ndRig({ probeTargets: [PEER_IP6], validate: 'probe' });
    await r.net.sleep(2000);
    const from = r.nics.indexOf(r.team.hostNic as (typeof r.nics)[number]);
    const to = 1 - from;
    const before = r.links[to]!.sent.length;
    const resends = r.host.stack.counters.get('mld.resend');
    r.links[from]!.dropNa = true;
    await r.net.sleep(3500);
    assert.equal(r.team.hostNic, r.nics[to], 'the host traffic moved');
    const groups = new Set<string>();
    for (const s of r.links[to]!.sent.slice(before)) {
      const f = s.frame;
      assert.equal(decodeIpv6(f, 14, f.length - 14, ip6), null);
      if (ip6.protocol !== Ipv6Next.ICMPV6 || f[ip6.payloadOffset] !== MldType.V2_REPORT) continue;
      assert.equal(decodeMld(f, ip6.payloadOffset, ip6.payloadLen, mld), null);
      for (const x of mld.records.slice(0, mld.recordCount)) groups.add(formatIpv6(x.group));
    }
    // The solicited-node group of each team address (ff02::1:ffXX:XXXX, its last 24 bits).
    const want = [TEAM_IP6, formatIpv6(linkLocalFromMac(TEAM_MAC))].map((a) => {
      const b = parseIpv6(a);
      return formatIpv6(
        parseIpv6(
          `ff02::1:ff${b[13]!.toString(16).padStart(2, '0')}:${((b[14]! << 8) | b[15]!).toString(16)}`,
        ),
      );
    });
    for (const g of want)
      assert.ok(groups.has(g), `${g} reported from the new port: ${[...groups].join(' ')}`);
    assert.ok(r.host.stack.counters.get('mld.resend') > resends, 'counted as a resend');
    r.host.close();
    r.net.close();
  });

  test('an IPv4-only team announces nothing over IPv6', async () => {
    const links: NdLink[] = [];
    const r = buildTeamRig({
      seed: 4,
      nics: 2,
      wrapPort: (p) => {
        const l = new NdLink(p, () => 0);
        links.push(l);
        return l;
      },
    });
    await r.net.sleep(100);
    const from = r.nics.indexOf(r.team.hostNic as (typeof r.nics)[number]);
    const garp = r.counters.get('team.garp');
    r.ports[from]!.cut();
    await r.net.sleep(2500);
    assert.notEqual(r.team.hostNic, r.nics[from]);
    assert.equal(r.counters.get('team.unsolicited-na'), 0);
    assert.equal(r.counters.get('team.garp'), garp + 1, 'gratuitous ARP as before');
    r.host.close();
    r.net.close();
  });
});

describe('IPv6 failover: neighbor solicitation probes', () => {
  test('a team probing only an IPv6 neighbor: answered NS keep both members up; a member whose NS go unanswered is failed', async () => {
    const r = ndRig({ probeTargets: [PEER_IP6], validate: 'probe' });
    // The peer answers once its address passed duplicate address detection (1 s); then the
    // members sit out their hold.
    await r.net.sleep(1500);
    const sentBefore = r.counters.get('team.probe.sent6');
    const repliesBefore = r.counters.get('team.probe.reply6');
    await r.net.sleep(500);
    assert.deepEqual(
      r.team.health().map((h) => h.health.state),
      ['up', 'up'],
    );
    assert.equal(r.counters.get('team.probe.sent'), 0, 'no ARP probe without an IPv4 target');
    const sent6 = r.counters.get('team.probe.sent6') - sentBefore;
    const replies = r.counters.get('team.probe.reply6') - repliesBefore;
    assert.ok(sent6 >= 2 * 40, `both members probe every 10 ms (${sent6})`);
    assert.ok(replies >= sent6 * 0.9, `and are answered (${replies} of ${sent6})`);
    // The probes are NS from the port's own link-local probe address, with its MAC as source LLA.
    const ns = r.links[1]!.sent.filter(
      (s) => decodeNdFrame(s.frame, ip6, nd) && nd.type === Icmpv6Type.NEIGHBOR_SOLICITATION,
    );
    assert.ok(ns.length > 0);
    assert.ok(decodeNdFrame(ns[0]!.frame, ip6, nd));
    assert.equal(formatIpv6(nd.target), PEER_IP6);
    assert.equal(formatIpv6(ip6.dst), formatIpv6(parseIpv6('ff02::1:ff00:2')), 'to the solicited-node group');
    assert.notEqual(nd.sourceLla, TEAM_MAC, 'never from the team MAC');
    assert.equal(ethSrc(ns[0]!.frame), nd.sourceLla);
    assert.equal(formatIpv6(ip6.src), formatIpv6(linkLocalFromMac(nd.sourceLla)));
    assert.equal(r.team.health()[1]!.health.reachable, true);
    const t0 = r.net.now();
    const failures1 = r.team.health()[1]!.health.failures;
    r.links[0]!.dropNa = true;
    await r.net.sleep(200);
    const h = r.team.health();
    assert.equal(h[0]!.health.state, 'down', 'member 0 failed');
    assert.equal(h[0]!.health.lastFailure?.cause, 'reachability');
    assert.match(h[0]!.health.lastFailure?.detail ?? '', /no NS reply/);
    const detect = h[0]!.health.lastFailure!.at - t0;
    // interval × misses (30 ms), judged at the next probe round.
    assert.ok(detect >= 30 && detect <= 50, `detected in ${detect} ms`);
    assert.equal(h[1]!.health.state, 'up', 'member 1, whose NS are answered, is not failed');
    assert.equal(h[1]!.health.failures, failures1);
    assert.ok(r.links[0]!.droppedNa > 0);
    // Answers come back and the member recovers through its hold.
    r.links[0]!.dropNa = false;
    await r.net.sleep(500);
    assert.equal(r.team.health()[0]!.health.state, 'up');
    r.host.close();
    r.net.close();
  });

  test('probe answers are consumed by the tap: the team stack never sees an NA for the probe address', async () => {
    const r = ndRig({ probeTargets: [PEER_IP6] });
    await r.net.sleep(1500);
    assert.ok(r.counters.get('team.probe.reply6') > 0);
    // The stack's own counters: no advertisement reached it from the probes (none is for a team
    // address, so any that passed would count as accepted).
    assert.equal(r.host.stack.counters.get('accept.nd.na'), 0);
    // The reply carried the peer's MAC, kept per member for the progress watch's comparison.
    const peerMac = r.peer.stack.interfaces[0]!.mac;
    assert.equal(r.team.health()[0]!.health.reachable, true);
    const nh = (r.team as unknown as { slots: { health: { probeReplyMac6(t: Uint8Array): number } }[] })
      .slots;
    assert.equal(nh[0]!.health.probeReplyMac6(parseIpv6(PEER_IP6)), peerMac);
    r.host.close();
    r.net.close();
  });
});

describe('IPv6 probe answers that fail validation', () => {
  test('a forged or damaged NA to the probe MAC is no proof of reachability and goes on to the NIC', () => {
    const clock = new VirtualClock();
    const sw = new MemorySwitch({ clock, random: new SeededRandom(5) });
    const port = sw.addPort({ name: 'nic0' });
    const other = sw.addPort({ name: 'forger' });
    const probeMac = 0x02_00_00_bb_01_01;
    const tap = new ProbeTap(port, probeMac, new Counters());
    const heard: string[] = [];
    const passed: Uint8Array[] = [];
    tap.onProbeReply6((t) => heard.push(formatIpv6(t)));
    tap.onFrame((f) => passed.push(f));
    const target = parseIpv6(PEER_IP6);
    const na = (t = target): Uint8Array => {
      const buf = new Uint8Array(ND_FRAME_MAX);
      const n = encodeNdFrame(
        {
          dstMac: probeMac,
          srcMac: 0x02_00_00_00_00_02,
          vlanId: -1,
          src: target,
          dst: tap.probeAddress6,
          msg: {
            type: Icmpv6Type.NEIGHBOR_ADVERTISEMENT,
            solicited: true,
            override: true,
            target: t,
            targetLla: 0x02_00_00_00_00_02,
          },
        },
        buf,
      );
      return buf.subarray(0, n);
    };
    // Teach the switch where the probe MAC lives, as the first probe does.
    tap.sendProbe6(target);
    clock.advance(1);
    other.send(na());
    clock.advance(1);
    assert.deepEqual(heard, [PEER_IP6], 'a valid answer is heard');
    assert.equal(passed.length, 0, 'and consumed');
    const damaged = (d: (f: Uint8Array) => void): Uint8Array => {
      const f = na().slice();
      d(f);
      return f;
    };
    const forged: [string, Uint8Array][] = [
      // The checksum does not cover the hop limit: only the hop-limit rule refuses this one.
      ['hop limit 64 (forwarded from off-link)', damaged((f) => (f[14 + 7] = 64))],
      ['bad checksum', damaged((f) => (f[14 + 40 + 2]! ^= 0xff))],
      ['multicast target', na(parseIpv6('ff02::1'))],
      ['truncated', na().slice(0, 14 + 40 + 20)],
    ];
    for (const [why, f] of forged) {
      other.send(f);
      clock.advance(1);
      assert.equal(heard.length, 1, `${why}: not heard`);
    }
    assert.equal(passed.length, forged.length, 'every refused one went on to the NIC, nothing lost');
  });
});

describe('IPv6 failover on an 802.1Q VLAN', () => {
  test('tagged NS probes are answered, and the takeover advertisements are tagged', async () => {
    const r = ndRig({ probeTargets: [PEER_IP6], validate: 'probe', vlan: 7 });
    await r.net.sleep(1500);
    const replies = r.counters.get('team.probe.reply6');
    await r.net.sleep(300);
    assert.ok(r.counters.get('team.probe.reply6') - replies >= 40, 'answered over the VLAN');
    assert.deepEqual(
      r.team.health().map((h) => h.health.state),
      ['up', 'up'],
    );
    const from = r.nics.indexOf(r.team.hostNic as (typeof r.nics)[number]);
    const to = 1 - from;
    const before = r.links[to]!.sent.length;
    r.ports[from]!.cut();
    await r.net.sleep(100);
    const nas = r.links[to]!.sent.slice(before).filter(
      (s) => decodeNdFrame(s.frame, ip6, nd) && nd.type === Icmpv6Type.NEIGHBOR_ADVERTISEMENT && nd.override,
    );
    assert.equal(nas.length, 2, 'the global and the link-local address');
    for (const s of nas)
      assert.ok(ethTagged(s.frame) && (readU16(s.frame, 14) & 0xfff) === 7, 'tagged with VLAN 7');
    r.host.close();
    r.net.close();
  });
});

describe('IPv6 failover: mixed-family streams', () => {
  const BASE = { seed: 11, nics: 2, conns: 8, bytes: 300_000, rateBps: 2e7, limitMs: 60_000, mixed: true };

  test('carrier cut, reachability loss and a crash under IPv4 and IPv6 streams: nothing lost, no reset', async () => {
    let v6 = 0;
    const r = await runScenario({
      ...BASE,
      nics: 3,
      onStart: (rig) => {
        v6 = countV6(rig.peer.stack.tcp.connections());
      },
      faults: [
        { at: 5, kind: 'cut', nic: 0 },
        { at: 40, kind: 'blackhole', nic: 1 },
        { at: 90, kind: 'restore', nic: 0 },
        { at: 140, kind: 'unblackhole', nic: 1 },
        { at: 200, kind: 'crash', nic: 2 },
      ],
    });
    assertClean(r);
    const causes = r.rig.team.failovers.map((f) => f.cause).sort();
    assert.deepEqual(causes, ['carrier', 'dead', 'reachability']);
    assert.ok(
      r.rig.counters.get('team.unsolicited-na') > 0,
      'the new host port announced the IPv6 addresses',
    );
    assert.equal(v6, BASE.conns / 2, 'half the streams ran over IPv6');
  });

  test('the host member fails while IPv6 streams run in the host: they resume on the next member', async () => {
    let hostIndex = -1;
    const r = await runScenario({
      ...BASE,
      offload: false,
      onStart: (rig, t0) => {
        assert.equal(countV6(rig.peer.stack.tcp.connections()), BASE.conns / 2);
        hostIndex = rig.nics.indexOf(rig.team.hostNic as (typeof rig.nics)[number]);
        rig.net.clock.createTimer(() => rig.ports[hostIndex]!.blackhole(true)).armAt(t0 + 10);
      },
    });
    assertClean(r);
    assert.equal(r.rig.team.failovers.length, 1);
    assert.equal(r.rig.team.failovers[0]!.cause, 'reachability');
    assert.notEqual(r.rig.team.hostNic, r.rig.nics[hostIndex]);
    assert.ok(r.rig.counters.get('team.unsolicited-na') >= 2);
  });
});

function countV6(conns: Iterable<{ remoteIp: number }>): number {
  let n = 0;
  for (const c of conns) if (c.remoteIp > 0xffffffff) n++;
  return n;
}
