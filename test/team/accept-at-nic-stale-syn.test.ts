/**
 * A SYN the peer sent again, answered by the host meanwhile, reaching a worker that answers the
 * host's listener once the host's connection is established (issue 10 item 1: 7 downloads of
 * 5,000 on TAP reset with nothing received, `serve --accept-at-nic`). The worker cannot see the
 * host's established connections (its claims list half-open ones only); answered, its SYN-ACK
 * draws the peer's challenge ACK, which acknowledges the host's ISS, and a RST to that ACK
 * carries exactly the sequence number the peer expects: the peer's connection was reset.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import type { ServerHost } from '../../src/socket/tcp-server.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { EtherType } from '../../src/wire/ethernet.ts';
import { ethType } from '../../src/wire/fields.ts';
import { echo, pattern } from './accept-at-nic-helpers.ts';
import { keyOf, setup, TEAM_IP, within } from './worker-team-helpers.ts';

/** The TCP flags of an IPv4 frame without options in its IP header (or -1). */
function tcpFlags(f: Uint8Array): number {
  if (f.length < 54 || ethType(f) !== EtherType.IPV4 || f[23] !== 6) return -1;
  return f[14 + 20 + 13]!;
}
function srcPort(f: Uint8Array): number {
  return (f[34]! << 8) | f[35]!;
}

test('a SYN sent again, reaching a worker after the host established its connection, resets nothing', {
  timeout: 60_000,
}, async (t) => {
  const rig = await setup(t, { seed: 51, nics: 1 });
  rig.manager.acceptAtNic = true;
  (rig.host as ServerHost).listening = (l) => rig.manager.listenAtNics(l);
  const accepted: TcpSocket[] = [];
  rig.host
    .createServer((s: TcpSocket) => {
      accepted.push(s);
      s.on('error', () => {});
      s.on('data', (d: Buffer) => s.write(d));
      s.on('end', () => s.end());
    })
    .listen(80);
  // The peer's SYNs, as it sent them (to send one again, as if it had waited in a worker's queue).
  const syns = new Map<number, Uint8Array>();
  const port = rig.peer.port;
  const send = port.send.bind(port);
  port.send = (f: Uint8Array) => {
    if (tcpFlags(f) === 0x02) syns.set(srcPort(f), f.slice());
    return send(f);
  };
  // Two connections answered in the host: no worker has a path to the peer yet.
  const c0 = rig.peer.connect(80, TEAM_IP);
  const c1 = rig.peer.connect(80, TEAM_IP);
  await within(Promise.all([once(c0, 'connect'), once(c1, 'connect')]), 5000, 'the connects', rig);
  for (let i = 0; i < 500 && accepted.length < 2; i++) await rig.net.sleep(10);
  assert.equal(accepted.length, 2);
  const s0 = accepted.find((s) => s.remotePort === c0.localPort)!;
  // c0 placed on the worker gives it the path: from now on it answers the listener's SYNs.
  const r = await rig.manager.offload([keyOf(s0)], rig.nics[0]!);
  assert.equal(r.moved.length, 1, JSON.stringify(r.refused));
  const syn = syns.get(c1.localPort!);
  assert.ok(syn !== undefined, "c1's SYN seen");
  let reset: Error | null = null;
  c1.on('error', (e) => {
    reset = e;
  });
  const nic = rig.nics[0]!;
  const count = async (name: string) => (await nic.counters())[name] ?? 0;
  const before = await count('nic.listen.syn');
  // c1's SYN again, late, to the worker's port (c1 is established with the host, which still runs it).
  rig.peer.port.send(syn);
  for (let i = 0; i < 500 && (await count('nic.listen.syn')) === before; i++) await rig.net.sleep(10);
  assert.equal((await count('nic.listen.syn')) - before, 1, 'the worker answered the SYN sent again');
  // The peer's challenge ACK to that SYN-ACK acknowledges the host's: the worker gives way.
  for (let i = 0; i < 500 && reset === null && (await count('nic.listen.gave-way')) === 0; i++)
    await rig.net.sleep(10);
  await rig.net.sleep(100);
  assert.equal(reset, null, 'c1 reset');
  assert.equal(await count('nic.listen.gave-way'), 1);
  assert.equal(rig.manager.ownerOf(keyOf(accepted.find((s) => s.remotePort === c1.localPort)!)), 'host');
  const out = pattern(200_000, 5);
  const e = echo(c1, out);
  await within(e.done, 10_000, 'the echo on c1', rig);
  assert.ok(e.got().equals(out), 'c1 intact');
  for (const s of [c0, c1]) s.destroy();
});
