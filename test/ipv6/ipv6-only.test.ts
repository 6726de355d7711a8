/**
 * IPv6-only interfaces (simulator): a host and a team with IPv6 addresses alone, as Linux runs an
 * interface without IPv4. TCP runs both ways, a team fails over with neighbor solicitations as its
 * only probes and unsolicited advertisements as its only announcement, and no ARP frame is sent.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ImpairmentSpec } from '../../src/link/impairment.ts';
import type { Link } from '../../src/link/link.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import { Host } from '../../src/socket/host.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import type { Ipv6Options } from '../../src/stack/ipv6.ts';
import { Stack } from '../../src/stack/stack.ts';
import { buildTeamHost } from '../../src/team/team-host.ts';
import { ARP_LENGTH, ArpOp, createArpPacket, encodeArp } from '../../src/wire/arp.ts';
import { ethType } from '../../src/wire/fields.ts';
import { type StreamStats, sendPattern, verifyIncoming, WrappedLink } from '../team/team-sim.ts';
import { rawPort } from './helpers.ts';

const ETH_ARP = 0x0806;

/** A port that counts what its owner sends, by EtherType. */
class CountingLink extends WrappedLink {
  readonly sent = new Map<number, number>();
  override send(f: Uint8Array): boolean {
    const t = ethType(f);
    this.sent.set(t, (this.sent.get(t) ?? 0) + 1);
    return this.inner.send(f);
  }
  get arp(): number {
    return this.sent.get(ETH_ARP) ?? 0;
  }
}

/** A host whose one interface has IPv6 addresses only. */
function v6Host(
  net: SimNetwork,
  name: string,
  ip6: string,
  mac: string,
  o: { ipv6?: Ipv6Options; impair?: ImpairmentSpec } = {},
) {
  const link = new CountingLink(net.switch.addPort({ name, impair: o.impair }) as Link);
  const stack = new Stack({
    clock: net.clock,
    random: net.random.fork(),
    name,
    ipv6: o.ipv6,
    tcp: { minRtoMs: 20 },
  });
  stack.addInterface(link, { mac, ip: [ip6], name: 'eth0' });
  return { stack, host: new Host(stack), link };
}

function newStats(): StreamStats {
  return { ok: 0, errors: [], resets: 0, maxGapMs: 0, bytes: 0 };
}

async function until(net: SimNetwork, cond: () => boolean, limitMs: number): Promise<void> {
  const end = net.now() + limitMs;
  while (!cond() && net.now() < end) await net.sleep(20);
}

/** `n` streams of `bytes` each way between a server on `srv` and clients on `cli` to `dst`. */
function streams(
  net: SimNetwork,
  srv: Host,
  cli: Host,
  dst: string,
  port: number,
  n: number,
  bytes: number,
  first: number,
) {
  const stats = newStats();
  let finished = 0;
  const done = (): void => {
    finished++;
  };
  // One pattern up and one down for all streams of a call: the server cannot tell them apart.
  srv
    .createServer((s: TcpSocket) => {
      verifyIncoming(s, first, bytes, stats, done, () => net.now());
      sendPattern(s, first + 100, bytes);
    })
    .listen(port);
  const socks: TcpSocket[] = [];
  for (let i = 0; i < n; i++) {
    const s = cli.connect(port, dst);
    socks.push(s);
    s.once('connect', () => {
      verifyIncoming(s, first + 100, bytes, stats, done, () => net.now());
      sendPattern(s, first, bytes);
    });
  }
  return { stats, finished: () => finished, socks };
}

describe('IPv6-only interfaces', () => {
  test('two hosts with IPv6 addresses only: TCP both ways after DAD, no ARP sent, an ARP request dropped unanswered, IPv4 unreachable', async () => {
    const net = new SimNetwork({ seed: 61 });
    const a = v6Host(net, 'a', 'fd00::1/64', '02:00:00:00:00:01');
    const b = v6Host(net, 'b', 'fd00::2/64', '02:00:00:00:00:02');
    assert.equal(a.stack.interfaces[0]!.ipv4, false);
    assert.equal(a.stack.interfaces[0]!.primaryIp, 0);
    // Duplicate address detection (1 probe, RetransTimer 1 s) on both ends.
    await net.sleep(1500);
    assert.deepEqual(
      a.stack.ip6.addresses(a.stack.interfaces[0]!).map((x) => x.state),
      ['preferred', 'preferred'],
      'link-local and fd00::1 passed DAD',
    );
    const ab = streams(net, a.host, b.host, 'fd00::1', 80, 2, 200_000, 1);
    const ba = streams(net, b.host, a.host, 'fd00::2', 81, 2, 200_000, 11);
    await until(net, () => ab.finished() === 4 && ba.finished() === 4, 20_000);
    assert.deepEqual([...ab.stats.errors, ...ba.stats.errors], []);
    assert.equal(ab.stats.bytes + ba.stats.bytes, 8 * 200_000, 'every byte, in order, both ways');
    for (const s of [...ab.socks, ...ba.socks]) assert.equal(s.remoteFamily, 'IPv6');

    // An ARP request for anything: an IPv6-only interface neither answers nor learns.
    const raw = rawPort(net);
    const arp = createArpPacket();
    arp.op = ArpOp.REQUEST;
    arp.senderMac = 0x02_00_00_00_00_99;
    arp.senderIp = 0x0a000063;
    arp.targetMac = 0;
    arp.targetIp = 0x0a000001;
    const f = new Uint8Array(14 + ARP_LENGTH);
    f.fill(0xff, 0, 6);
    f.set([0x02, 0, 0, 0, 0, 0x99], 6);
    f[12] = 0x08;
    f[13] = 0x06;
    encodeArp(arp, f, 14);
    raw.send(f);
    await net.sleep(10);
    assert.equal(a.stack.counters.get('drop.arp.no-ipv4'), 1);
    assert.equal(b.stack.counters.get('drop.arp.no-ipv4'), 1);

    // IPv4 has no route from here: the connect fails, it does not hang or throw.
    const err = await new Promise<string | undefined>((resolve) => {
      const s = a.host.connect(80, '10.0.0.2');
      s.once('error', (e: Error & { code?: string }) => resolve(e.code));
      s.once('connect', () => resolve('connected'));
    });
    assert.equal(err, 'ENETUNREACH');

    assert.equal(a.link.arp + b.link.arp, 0, 'no ARP frame sent by either host');
    assert.equal(a.stack.counters.get('arp.tx.gratuitous'), 0);
    assert.ok((a.link.sent.get(0x86dd) ?? 0) > 100, 'the traffic was IPv6');
    a.stack.close();
    b.stack.close();
    net.close();
  });

  for (const fault of ['carrier', 'reachability'] as const) {
    test(`an IPv6-only team fails over (${fault}) with NS probes and unsolicited NAs only: streams both ways intact, no ARP`, async () => {
      const net = new SimNetwork({ seed: fault === 'carrier' ? 62 : 63 });
      const links: CountingLink[] = [];
      const th = buildTeamHost(net, {
        ip6: ['fd00::1/64'],
        nics: 2,
        probeTargets: ['fd00::2'],
        health: { holdMs: 100 },
        tcp: { minRtoMs: 20 },
        wrapPort: (p) => {
          const l = new CountingLink(p);
          links.push(l);
          return l;
        },
      });
      assert.equal(th.team.ip, null, 'the team has no IPv4 address');
      assert.equal(th.ip, 'fd00::1');
      // A 20 MB/s wire with a 5 ms queue: the streams are mid-flight at the offload and the fault.
      // The members take any frame from the peer as a sign of life (validate 'any', the default):
      // its NS answers alone are dropped by the full queue often enough to fail both members.
      const peer = v6Host(net, 'peer', 'fd00::2/64', '02:00:00:00:00:02', {
        impair: { delayMs: 1, rateBps: 2e7, queueBytes: 100_000 },
      });
      await net.sleep(1500);
      assert.deepEqual(
        th.health().map((h) => h.health.state),
        ['up', 'up'],
        'both members answered by NS probes',
      );
      const toTeam = streams(net, th, peer.host, 'fd00::1', 80, 3, 400_000, 1);
      const toPeer = streams(net, peer.host, th, 'fd00::2', 81, 3, 400_000, 11);
      await net.sleep(50);
      const moved = await th.offloadAll();
      assert.equal(moved, 6, 'every connection offloaded');
      await net.sleep(20);
      // The member that carries the host's traffic too, so the takeover must be announced.
      const victim = th.nics.indexOf(th.team.hostNic as (typeof th.nics)[number]);
      assert.ok(victim >= 0 && th.nics[victim]!.load > 0, 'the host port runs connections');
      const loadBefore = th.nics[victim]!.load;
      if (fault === 'carrier') th.ports[victim]!.cut();
      else th.ports[victim]!.blackhole(true);
      await until(net, () => toTeam.finished() === 6 && toPeer.finished() === 6, 30_000);
      assert.deepEqual([...toTeam.stats.errors, ...toPeer.stats.errors], []);
      assert.equal(toTeam.stats.resets + toPeer.stats.resets, 0);
      assert.equal(toTeam.stats.bytes + toPeer.stats.bytes, 12 * 400_000, 'every byte, in order, both ways');
      const rec = th.failovers.find((r) => r.nic === th.nics[victim]!.id);
      assert.ok(rec, 'a failover of the member that ran connections');
      assert.equal(rec.cause, fault);
      assert.equal(rec.connections, loadBefore);
      assert.equal(rec.lost, 0);
      assert.equal(th.counters.get('team.probe.sent'), 0, 'no ARP probe');
      assert.ok(th.counters.get('team.probe.sent6') > 0, 'NS probes');
      assert.equal(th.counters.get('team.garp'), 0, 'no gratuitous ARP');
      assert.equal(th.team.hostNic, th.nics[1 - victim]);
      assert.ok(th.counters.get('team.unsolicited-na') > 0, 'the new host port announced with NAs');
      for (const l of links) assert.equal(l.arp, 0, `${l.name}: no ARP frame`);
      assert.equal(peer.link.arp, 0);
      assert.equal(th.stack.counters.get('arp.tx.gratuitous'), 0);
      th.close();
      peer.stack.close();
      net.close();
    });
  }
});
