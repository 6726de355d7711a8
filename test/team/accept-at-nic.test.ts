/**
 * The passive open answered at the NIC (OffloadManager.acceptAtNic): a member that already holds a
 * path to the peer answers a listener's SYN itself, and the connection is born there, offloaded
 * from its first segment, with no transfer. Once born it is an ordinary offloaded connection:
 * moved, uploaded and closed as a placed one is, over IPv4 and IPv6 alike (born under the host's
 * address handles); a closed listener stops the members' accepts, and a listener on one address
 * of either family is answered there too.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import type { ConnKey } from '../../src/nic/nic.ts';
import type { SimNetwork } from '../../src/sim/sim-network.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { TWO_32 } from '../../src/stack/address-table.ts';
import type { TeamHost } from '../../src/team/team-host.ts';
import { echo, PEER_IP6, pattern, rig, TEAM_IP6 } from './accept-at-nic-helpers.ts';

const HOST_IP = 0x0a000001;
const PEER_IP = 0x0a000002;

/** The four-tuple of a socket's connection (read while it is open). */
const keyOf = (s: TcpSocket): ConnKey => {
  const c = s.connection!;
  return { localIp: c.localIp, localPort: c.localPort, remoteIp: c.remoteIp, remotePort: c.remotePort };
};

function ownerName(host: TeamHost<LocalNic>, s: TcpSocket): string {
  const o = host.manager.ownerOf(keyOf(s));
  return o === 'host' ? 'host' : o === null ? 'none' : o.id;
}

type Peer = ReturnType<SimNetwork['addHost']>;

/** A connection from the peer to port 80 at `to`, once the address is up (IPv6: past its DAD). */
async function dial(net: SimNetwork, peer: Peer, to: string) {
  for (;;) {
    let err: Error | null;
    let c: ReturnType<Peer['connect']> | undefined;
    try {
      c = peer.connect({ port: 80, host: to });
      err = await Promise.race([
        once(c, 'connect').then(() => null),
        once(c, 'error').then(([e]) => e as Error),
      ]);
    } catch (e) {
      err = e as Error;
    }
    if (err === null) return c!;
    // A tentative address has no route for a while; past 10 s (virtual) it is a failure.
    assert.ok(net.clock.now() < 10_000, `connect to ${to} failed: ${err.message}`);
    await net.sleep(100);
  }
}

/**
 * An echo server whose accepts are recorded with their owner at accept time; two first connections
 * to `to` accepted in the host and placed one on each member give both members the path to the peer.
 */
async function withPaths(
  net: SimNetwork,
  host: TeamHost<LocalNic>,
  peer: Peer,
  backlog?: number,
  to = '10.0.0.1',
  bind?: string,
) {
  const accepted: { socket: TcpSocket; owner: string }[] = [];
  const server = host
    .createServer((s: TcpSocket) => {
      accepted.push({ socket: s, owner: ownerName(host, s) });
      s.on('error', () => {});
      s.on('data', (d: Buffer) => s.write(d));
      s.on('end', () => s.end());
    })
    .listen({ port: 80, backlog, ...(bind === undefined ? {} : { host: bind }) });
  if (to === '10.0.0.1') await peer.ping(to);
  // One at a time: with a backlog of 1, two at once would overflow it, and after a cookie the
  // members pass SYNs up for as long as it may be answered (Listener.pending).
  const firsts: ReturnType<typeof peer.connect>[] = [];
  for (let i = 0; i < 2; i++) firsts.push(await dial(net, peer, to));
  while (accepted.length < 2) await net.sleep(1);
  assert.deepEqual(
    accepted.map((a) => a.owner),
    ['host', 'host'],
    'no path at the members yet: the host answers',
  );
  for (let i = 0; i < 2; i++) {
    const r = await host.manager.offload([keyOf(accepted[i]!.socket)], host.nics[i]);
    assert.equal(r.moved.length, 1);
  }
  return { accepted, server, firsts };
}

/** A third connection, after the two `withPaths` made: accepted at a member. */
async function bornOne(net: SimNetwork, peer: Peer, accepted: { owner: string }[], to = '10.0.0.1') {
  const c = await dial(net, peer, to);
  while (accepted.length < 3) await net.sleep(1);
  return c;
}

for (const v6 of [false, true]) {
  const to = v6 ? TEAM_IP6 : '10.0.0.1';
  describe(`the passive open answered at the NIC, over ${v6 ? 'IPv6' : 'IPv4'}`, () => {
    test('a connection born on a member carries data both ways, and no transfer placed it', async () => {
      const { net, peer, host } = rig(v6);
      const { accepted } = await withPaths(net, host, peer, undefined, to);
      const transfersBefore = host.stack.counters.get('offload.handover');
      const c = await bornOne(net, peer, accepted, to);
      const born = accepted[2]!;
      assert.match(born.owner, /^team\.nic\d$/, `owner at accept: ${born.owner}`);
      assert.equal(host.stack.counters.get('offload.accept-at-nic'), 1);
      const k = keyOf(born.socket);
      assert.equal(k.remoteIp > TWO_32, v6, 'of the family it was asked in');
      const nic = host.nics.find((n) => n.id === born.owner)!;
      assert.equal(nic.engine.counters.get('nic.listen.syn'), 1);
      if (v6) {
        // Under the host's handles; and one ISN function per host: the member hashed the
        // addresses' bytes, as the host does (its engine got the host's table after it started).
        const addrs = host.stack.addrs!;
        assert.deepEqual([addrs.format(k.localIp), addrs.format(k.remoteIp)], [TEAM_IP6, PEER_IP6]);
        const peerConn = [...peer.stack.tcp.connections()].find((x) => x.localPort === c.localPort)!;
        const hostIss = host.stack.tcp.isn.next(k.localIp, k.localPort, k.remoteIp, k.remotePort);
        const ahead = (hostIss - peerConn.state.delegated.irs) >>> 0;
        assert.ok(ahead < 250 * 60_000, `the host's ISN is ${ahead} past the member's`);
      }
      const out = pattern(150_000, 1);
      const e = echo(c, out);
      await e.done;
      assert.ok(e.got().equals(out), 'echoed intact');
      // Nothing moved it: the two first connections' offloads are the only hand-overs.
      assert.equal(host.stack.counters.get('offload.handover'), transfersBefore);
      assert.equal(ownerName(host, born.socket), born.owner);
      c.end();
      await once(c, 'close');
      // Its close reaches the host's records as a placed one's does.
      await net.sleep(100);
      assert.equal(host.manager.ownerOf(k), null);
      host.close();
      net.close();
    });

    test('a connection born on a member is moved to the other and uploaded to the host with every byte', async () => {
      const { net, peer, host } = rig(v6);
      const { accepted } = await withPaths(net, host, peer, undefined, to);
      const c = await bornOne(net, peer, accepted, to);
      const born = accepted[2]!;
      assert.match(born.owner, /^team\.nic\d$/);
      const key = keyOf(born.socket);
      const from = host.nics.find((n) => n.id === born.owner)!;
      const other = host.nics.find((n) => n !== from)!;
      const out = pattern(3_000_000, 3);
      const e = echo(c, out);
      // Mid-stream: to the other member, then back to the host.
      await net.sleep(5);
      assert.ok(e.n() > 0, 'data flows before the move');
      const moved = await host.manager.move([key], from, other);
      assert.equal(moved.moved.length, 1, JSON.stringify(moved.refused));
      assert.equal(ownerName(host, born.socket), other.id);
      await net.sleep(5);
      const up = await host.manager.upload([key]);
      assert.ok(e.n() < out.length, `${e.n()} bytes back at the upload: mid-stream`);
      assert.equal(up.moved.length, 1, JSON.stringify(up.refused));
      assert.equal(ownerName(host, born.socket), 'host');
      await e.done;
      assert.ok(e.got().equals(out), 'echoed intact across the move and the upload');
      host.close();
      net.close();
    });

    test("a connection born on a member survives its member's crash: rebuilt on the other with every byte", async () => {
      const { net, peer, host } = rig(v6);
      const { accepted } = await withPaths(net, host, peer, undefined, to);
      const c = await bornOne(net, peer, accepted, to);
      const born = accepted[2]!;
      const at = host.nics.findIndex((n) => n.id === born.owner);
      assert.ok(at >= 0, born.owner);
      const out = pattern(2_000_000, 5);
      const e = echo(c, out);
      await net.sleep(5);
      assert.ok(e.n() > 0 && e.n() < out.length, `${e.n()} bytes back when it crashes`);
      host.nics[at]!.crash('test: crashed');
      await e.done;
      assert.ok(e.got().equals(out), 'echoed intact across the failover');
      await host.team.settled();
      const failovers = host.failovers.filter((f) => f.nic === born.owner);
      assert.equal(failovers.length, 1);
      assert.equal(failovers[0]!.lost, 0);
      assert.notEqual(ownerName(host, born.socket), born.owner);
      host.close();
      net.close();
    });
  });
}

describe('the passive open answered at the NIC', () => {
  for (const v6 of [false, true]) {
    const to = v6 ? TEAM_IP6 : '10.0.0.1';
    test(`a listener on one ${v6 ? 'IPv6' : 'IPv4'} address is answered at the members too: its connection is born there`, async () => {
      const { net, peer, host } = rig(v6);
      // One closed before the members could open it (no IPv6 table there yet) must never open.
      host
        .createServer(() => {})
        .listen({ port: 81, host: to })
        .close();
      const { accepted } = await withPaths(net, host, peer, undefined, to, to);
      // The members' engines had no address table when the IPv6 listener came: it waited for the
      // host's, which came with the first IPv6 trees (NicEngine.listen).
      for (const nic of host.nics) {
        assert.equal(nic.engine.tcp.listeners.has(80), true, nic.id);
        assert.equal(nic.engine.tcp.listeners.has(81), false, `${nic.id}: the closed one`);
      }
      const c = await bornOne(net, peer, accepted, to);
      const born = accepted[2]!;
      assert.match(born.owner, /^team\.nic\d$/, `owner at accept: ${born.owner}`);
      assert.equal(host.stack.counters.get('offload.accept-at-nic'), 1);
      const k = keyOf(born.socket);
      if (v6) assert.equal(host.stack.addrs.format(k.localIp), TEAM_IP6, 'under the host’s handle');
      const out = pattern(60_000, 3);
      const e = echo(c, out);
      await e.done;
      assert.ok(e.got().equals(out), 'echoed intact');
      host.close();
      net.close();
    });
  }

  test('a SYN that also reaches the other member is answered once: the other leaves it to the one that holds it', async () => {
    const { net, peer, host, ports } = rig();
    const { accepted } = await withPaths(net, host, peer);
    // From now on every pure SYN a member receives reaches the other member too, after it.
    for (let i = 0; i < 2; i++) {
      const other = ports[1 - i]!;
      ports[i]!.also = (f) => {
        if (f.length < 54 || f[12] !== 0x08 || f[13] !== 0x00 || f[23] !== 6) return;
        const ihl = (f[14]! & 0x0f) * 4;
        if ((f[14 + ihl + 13]! & 0x17) !== 0x02) return;
        const copy = f.slice();
        other.handler?.(copy);
      };
    }
    const c = await bornOne(net, peer, accepted);
    const syns = host.nics.map((x) => x.engine.counters.get('nic.listen.syn'));
    assert.deepEqual(syns.slice().sort(), [0, 1], `SYNs answered by each member: ${syns.join(',')}`);
    const out = pattern(100_000, 7);
    const e = echo(c, out);
    await e.done;
    assert.ok(e.got().equals(out), 'echoed intact');
    assert.equal(host.stack.counters.get('offload.accept-at-nic'), 1);
    host.close();
    net.close();
  });

  test("the host's accept queue full: a member passes the SYN up, and the host drops it as Linux does", async () => {
    const { net, peer, host } = rig();
    const { accepted } = await withPaths(net, host, peer);
    const l = host.stack.tcp.listeners.find(HOST_IP, 80)!;
    const syns = () => host.nics.reduce((a, x) => a + x.engine.counters.get('nic.listen.syn'), 0);
    // The application takes nothing: the queue holds more than the backlog.
    l.queued = l.backlog + 1;
    const overflow0 = host.stack.counters.get('tcp.listen.overflow');
    const c = peer.connect(80, '10.0.0.1');
    await net.sleep(300);
    assert.equal(syns(), 0, 'no member answered while the queue was full');
    assert.ok(host.stack.counters.get('tcp.listen.overflow') > overflow0, 'the host dropped the SYN');
    assert.equal(accepted.length, 2);
    // Room again: the peer's SYN sent again is answered at a member.
    l.queued = 0;
    await once(c, 'connect');
    while (accepted.length < 3) await net.sleep(1);
    assert.match(accepted[2]!.owner, /^team\.nic\d$/);
    assert.equal(syns(), 1);
    host.close();
    net.close();
  });

  test("the host's accept queue full as a member's handshake ends: the member drops the last ACK and keeps the connection half-open, as Linux does", async () => {
    const { net, peer, host, ports } = rig();
    const { accepted } = await withPaths(net, host, peer);
    const l = host.stack.tcp.listeners.find(HOST_IP, 80)!;
    const overflows = () => host.nics.reduce((a, x) => a + x.engine.counters.get('tcp.listen.overflow'), 0);
    // The queue fills (the application takes nothing) after a member answered the SYN, before the
    // handshake's last ACK reaches it: the first pure ACK to port 80 that a member receives.
    let filled = false;
    for (const p of ports)
      p.drop = (f) => {
        if (filled || f.length < 54 || f[12] !== 0x08 || f[13] !== 0x00 || f[23] !== 6) return false;
        const t = 14 + (f[14]! & 0x0f) * 4;
        if (((f[t + 2]! << 8) | f[t + 3]!) !== 80 || (f[t + 13]! & 0x17) !== 0x10) return false;
        filled = true;
        l.queued = l.backlog + 1;
        return false;
      };
    const c = peer.connect(80, '10.0.0.1');
    await once(c, 'connect');
    // Virtual time: 5 s covers the member's SYN-ACK sent again on its timer, more than once.
    const until = net.clock.now() + 5_000;
    while (overflows() === 0 && net.clock.now() < until) await net.sleep(10);
    assert.equal(accepted.length, 2, 'nothing went into the full accept queue');
    assert.ok(overflows() > 0, 'the member dropped the last ACK');
    assert.equal(l.queued, l.backlog + 1);
    assert.equal(host.stack.counters.get('offload.accept-at-nic'), 0);
    // Room again: the member's SYN-ACK, sent again on its timer, draws the peer's ACK, which ends
    // the handshake there.
    l.queued = 0;
    const by = net.clock.now() + 30_000;
    while (accepted.length < 3 && net.clock.now() < by) await net.sleep(10);
    assert.equal(accepted.length, 3, 'accepted once there was room');
    assert.match(accepted[2]!.owner, /^team\.nic\d$/);
    const out = pattern(20_000, 5);
    const e = echo(c, out);
    await e.done;
    assert.ok(e.got().equals(out), 'echoed intact');
    host.close();
    net.close();
  });

  test('the backlog bounds the half-open connections of the host and the members together: past it, SYN cookies from the host', async () => {
    const { net, peer, host } = rig();
    const { accepted } = await withPaths(net, host, peer, 1);
    const cookies0 = host.stack.counters.get('tcp.syncookies.sent');
    // Two SYNs at once: the first is answered at a member, which takes the one half-open place.
    const cs = [peer.connect(80, '10.0.0.1'), peer.connect(80, '10.0.0.1')];
    await Promise.all(cs.map((c) => once(c, 'connect')));
    while (accepted.length < 4) await net.sleep(1);
    assert.equal(host.stack.counters.get('tcp.syncookies.sent') - cookies0, 1);
    assert.deepEqual(
      accepted
        .slice(2)
        .map((a) => (a.owner === 'host' ? 'host' : 'member'))
        .sort(),
      ['host', 'member'],
    );
    // Neither holds a half-open place any more.
    assert.equal(Atomics.load(host.stack.tcp.listeners.find(HOST_IP, 80)!.gate!, 1), 0);
    host.close();
    net.close();
  });

  test("a closed listener stops the members' accepts: its port is refused there too", async () => {
    const { net, peer, host } = rig();
    const { accepted, server } = await withPaths(net, host, peer);
    await bornOne(net, peer, accepted);
    assert.match(accepted[2]!.owner, /^team\.nic\d$/);
    const synsBefore = host.nics.map((x) => x.engine.counters.get('nic.listen.syn'));
    server.close();
    for (const nic of host.nics) assert.equal(nic.engine.tcp.listeners.has(80), false, nic.id);
    const late = peer.connect(80, '10.0.0.1');
    const [err] = (await once(late, 'error')) as [NodeJS.ErrnoException];
    assert.equal(err.code, 'ECONNREFUSED');
    assert.deepEqual(
      host.nics.map((x) => x.engine.counters.get('nic.listen.syn')),
      synsBefore,
      'no member answered a SYN after the close',
    );
    assert.equal(accepted.length, 3);
    host.close();
    net.close();
  });

  test('a manager closed with a half-open connection at a member forgets its tuple: no placeholder forwards it to the member', async () => {
    const { net, peer, host, ports } = rig();
    const { accepted } = await withPaths(net, host, peer);
    // The peer's segments to port 80 other than SYNs are lost at both members: the handshake a
    // member answers stays half-open there.
    for (const p of ports)
      p.drop = (f) => {
        if (f.length < 54 || f[12] !== 0x08 || f[13] !== 0x00 || f[23] !== 6) return false;
        const l4 = 14 + (f[14]! & 0x0f) * 4;
        return ((f[l4 + 2]! << 8) | f[l4 + 3]!) === 80 && (f[l4 + 13]! & 0x02) === 0;
      };
    const c = peer.connect(80, '10.0.0.1');
    c.on('error', () => {});
    await net.sleep(20);
    const syns = host.nics.reduce((a, x) => a + x.engine.counters.get('nic.listen.syn'), 0);
    assert.equal(syns, 1, 'a member answered the SYN');
    const tcp = host.stack.tcp;
    const rp = c.localPort!;
    assert.equal(
      tcp.isFrozen(HOST_IP, 80, PEER_IP, rp),
      true,
      'the host forwards the half-open tuple to its member',
    );
    assert.equal(accepted.length, 2);
    // The manager stops the members' listeners, which abort their half-open connections ('closed'
    // is indicated a turn later, when the manager hears its NICs no more).
    host.manager.close();
    await net.sleep(10);
    for (const nic of host.nics) assert.equal(nic.holds(HOST_IP, 80, PEER_IP, rp), false, nic.id);
    assert.equal(tcp.isFrozen(HOST_IP, 80, PEER_IP, rp), false, 'the host forgot the tuple');
    host.close();
    net.close();
  });
});
