/**
 * A SYN the peer sent again, answered by the host meanwhile, reaching a worker that answers the
 * host's listener once the host's connection is established (issue 10 item 1: 7 downloads of
 * 5,000 on TAP reset with nothing received, `serve --accept-at-nic`). The host lists its
 * established connections in its claims until a NIC holds them (AcceptAtNic.held), at most the
 * backlog of them: a worker leaves such a SYN to the host. Past that bound the worker answers it;
 * its SYN-ACK draws the peer's challenge ACK, which acknowledges the host's ISS, and a RST to that
 * ACK would carry exactly the sequence number the peer expects: the worker gives way instead,
 * over IPv4 and IPv6 alike (NicEngine.tcpForUs6 calls givesWay as the IPv4 path does).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type TestContext, test } from 'node:test';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { EtherType } from '../../src/wire/ethernet.ts';
import { ethType } from '../../src/wire/fields.ts';
import { echo, pattern } from './accept-at-nic-helpers.ts';
import { keyOf, serveAtNics, setup, TEAM_IP, TEAM_IP6, until, within } from './worker-team-helpers.ts';

/**
 * How long a wait for what the peer's frame brings about may take: tens of seconds, for a machine
 * 4x slower than a loaded one (500 polls 10 ms apart, about 5 s, was the bound before).
 */
const POLL = { tries: 1500, everyMs: 20 };

/**
 * Where TCP starts in an IPv4 frame without options in its IP header, or an IPv6 one with TCP
 * right behind the fixed header (the simulator's peer sends no other); -1 for anything else.
 */
function tcpAt(f: Uint8Array): number {
  if (f.length >= 54 && ethType(f) === EtherType.IPV4 && f[23] === 6) return 34;
  if (f.length >= 74 && ethType(f) === EtherType.IPV6 && f[20] === 6) return 54;
  return -1;
}
function tcpFlags(f: Uint8Array): number {
  const at = tcpAt(f);
  return at < 0 ? -1 : f[at + 13]!;
}
function srcPort(f: Uint8Array): number {
  const at = tcpAt(f);
  return (f[at]! << 8) | f[at + 1]!;
}

/**
 * A worker team answering port 80 at its NIC, an echo server, and the peer's SYNs as it sent them;
 * `v6`: the peer connects over IPv6 (the listener is dual-stack).
 */
async function echoTeam(t: TestContext, backlog?: number, v6 = false) {
  const rig = await setup(t, { seed: 51, nics: 1, ip6: v6 });
  const accepted = serveAtNics(rig, { port: 80, backlog }, (s) => {
    s.on('data', (d: Buffer) => s.write(d));
    s.on('end', () => s.end());
  });
  // The peer's SYNs, as it sent them (to send one again, as if it had waited in a worker's queue).
  const syns = new Map<number, Uint8Array>();
  const port = rig.peer.port;
  const send = port.send.bind(port);
  port.send = (f: Uint8Array) => {
    if (tcpFlags(f) === 0x02) syns.set(srcPort(f), f.slice());
    return send(f);
  };
  const nic = rig.nics[0]!;
  const count = async (name: string) => (await nic.counters())[name] ?? 0;
  /** A connection the host answers and accepts (no worker has a path to the peer, or it is left). */
  const connect = async (): Promise<{ c: TcpSocket; s: TcpSocket }> => {
    const c = rig.peer.connect(80, v6 ? TEAM_IP6 : TEAM_IP);
    await within(once(c, 'connect'), 30_000, 'the connect', rig);
    await until(
      rig,
      async () => accepted.some((a) => a.remotePort === c.localPort),
      (ok) => ok,
      POLL,
    );
    const s = accepted.find((a) => a.remotePort === c.localPort);
    assert.ok(s !== undefined, 'accepted');
    return { c, s };
  };
  return { rig, syns, count, connect, nic };
}

for (const v6 of [false, true]) {
  test(`past the backlog of held claims, a SYN sent again reaching a worker after the host established its connection resets nothing (${v6 ? 'IPv6' : 'IPv4'})`, {
    timeout: 60_000,
  }, async (t) => {
    // Backlog 1: c0 holds the one claim of an established connection, so c1's is not listed.
    const { rig, syns, count, connect } = await echoTeam(t, 1, v6);
    // Two connections answered in the host, one after the other (a second half-open one would get
    // a cookie): no worker has a path to the peer yet.
    const { c: c0, s: s0 } = await connect();
    const { c: c1 } = await connect();
    // c0 placed on the worker gives it the path: from now on it answers the listener's SYNs.
    const r = await rig.manager.offload([keyOf(s0)], rig.nics[0]!);
    assert.equal(r.moved.length, 1, JSON.stringify(r.refused));
    const syn = syns.get(c1.localPort!);
    assert.ok(syn !== undefined, "c1's SYN seen");
    let reset: Error | null = null;
    c1.on('error', (e) => {
      reset = e;
    });
    const before = await count('nic.listen.syn');
    // c1's SYN again, late, to the worker's port (c1 is established with the host, which still runs it).
    rig.peer.port.send(syn);
    await until(
      rig,
      () => count('nic.listen.syn'),
      (n) => n !== before,
      POLL,
    );
    assert.equal((await count('nic.listen.syn')) - before, 1, 'the worker answered the SYN sent again');
    // The peer's challenge ACK to that SYN-ACK acknowledges the host's: the worker gives way.
    await until(
      rig,
      () => count('nic.listen.gave-way'),
      (n) => reset !== null || n !== 0,
      POLL,
    );
    await rig.net.sleep(100);
    assert.equal(reset, null, 'c1 reset');
    assert.equal(await count('nic.listen.gave-way'), 1);
    assert.equal(rig.manager.ownerOf({ ...keyOf(s0), remotePort: c1.localPort! }), 'host');
    const out = pattern(200_000, 5);
    const e = echo(c1, out);
    await within(e.done, 10_000, 'the echo on c1', rig);
    assert.ok(e.got().equals(out), 'c1 intact');
    for (const s of [c0, c1]) s.destroy();
  });
}

test('a host connection waiting for its placement stays claimed: a worker leaves its SYN sent again to the host', {
  timeout: 60_000,
}, async (t) => {
  const { rig, syns, count, connect, nic } = await echoTeam(t);
  const { c: c0, s: s0 } = await connect();
  const { c: c1, s: s1 } = await connect();
  // c0 placed on the worker gives it the path: from now on it answers the listener's SYNs.
  const r = await rig.manager.offload([keyOf(s0)], nic);
  assert.equal(r.moved.length, 1, JSON.stringify(r.refused));
  let reset: Error | null = null;
  c1.on('error', (e) => {
    reset = e;
  });
  const synBefore = await count('nic.listen.syn');
  const upBefore = rig.stack.counters.get('tcp.segments.in');
  // c1's SYN again, late, to the worker's port: c1 is established in the host, not yet placed.
  rig.peer.port.send(syns.get(c1.localPort!)!);
  // It goes up to the host, whose connection answers it (a challenge ACK).
  await until(
    rig,
    async () => rig.stack.counters.get('tcp.segments.in'),
    (n) => n !== upBefore,
    POLL,
  );
  await rig.net.sleep(100);
  assert.ok(rig.stack.counters.get('tcp.segments.in') > upBefore, 'the SYN went up to the host');
  assert.equal((await count('nic.listen.syn')) - synBefore, 0, 'the worker answered the SYN sent again');
  assert.equal(await count('nic.listen.gave-way'), 0);
  assert.equal(reset, null, 'c1 reset');
  // Placed, c1 leaves the claims: c2, established in the host once the worker holds c1, is
  // listed while the backlog of held claims (511) has room, and its SYN sent again is left too.
  const r1 = await rig.manager.offload([keyOf(s1)], nic);
  assert.equal(r1.moved.length, 1, JSON.stringify(r1.refused));
  const out = pattern(200_000, 5);
  const e = echo(c1, out);
  await within(e.done, 10_000, 'the echo on c1', rig);
  assert.ok(e.got().equals(out), 'c1 intact');
  for (const s of [c0, c1]) s.destroy();
});

test('a host connection placed on a NIC leaves the claims: the one claim of backlog 1 serves the next', {
  timeout: 60_000,
}, async (t) => {
  const { rig, syns, count, connect, nic } = await echoTeam(t, 1);
  const { c: c0, s: s0 } = await connect();
  // c0 placed on the worker: its claim goes, and the worker has a path to the peer.
  const r = await rig.manager.offload([keyOf(s0)], nic);
  assert.equal(r.moved.length, 1, JSON.stringify(r.refused));
  // c1 answered in the host although the worker has a path: its gate says the accept queue is
  // full (the worker passes SYNs up), as when the host is behind, for c1's handshake only.
  const gate = rig.stack.tcp.listeners.find(0, 80)!.gate!;
  Atomics.store(gate, 0, 1);
  const { c: c1 } = await connect();
  Atomics.store(gate, 0, 0);
  assert.equal(await count('nic.listen.syn'), 0);
  // Its SYN sent again: listed in the claim c0 gave back, it is left to the host.
  rig.peer.port.send(syns.get(c1.localPort!)!);
  await rig.net.sleep(200);
  assert.equal(await count('nic.listen.syn'), 0, 'the worker answered the SYN sent again');
  assert.equal(await count('nic.listen.gave-way'), 0);
  for (const s of [c0, c1]) s.destroy();
});
