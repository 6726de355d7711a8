/**
 * Review r2 of s35h3: the cookie's ACK over a half-open connection (Listeners.cookieOverHalfOpen)
 * is honoured only where the cookie was made, the host. With accept-at-NIC the host cleared its
 * listener's gate word [2] (NICs pass SYNs up) as soon as no half-open connection was left
 * anywhere; a peer's SYN resent before it took the host's cookie SYN-ACK, arriving after that, was
 * answered at a member with another ISS, and the member's half-open connection answered the
 * cookie's ACK (or the peer's challenge ACK) with a RST: the peer was reset. Now [2] stays set
 * while a cookie of the host may still be answered (as NicListenSpec.gate says), so the member
 * passes the resent SYN up and the host's half-open connection gives way to the cookie. The gate's
 * count of half-open connections is set by hand for what a burst makes (the backlog full, then
 * empty); the clearing runs the listener's own code.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { cookieRig, heldConnect } from './accept-at-nic-helpers.ts';

const HOST_IP = 0x0a000001;
const PEER_IP = 0x0a000002;

test('accept-at-nic: a SYN resent after the peer took a cookie is passed up by the member, and the cookie connection lives', async () => {
  const r = await cookieRig();
  const { net, peer, host, accepted } = r;
  const firsts = [peer.connect(80, '10.0.0.1'), peer.connect(80, '10.0.0.1')];
  await Promise.all(firsts.map((c) => once(c, 'connect')));
  while (accepted.length < 2) await net.sleep(1);
  for (let i = 0; i < 2; i++) {
    const s = accepted[i]!;
    const r = await host.manager.offload(
      [{ localIp: HOST_IP, localPort: 80, remoteIp: PEER_IP, remotePort: s.remotePort! }],
      host.nics[i],
    );
    assert.equal(r.moved.length, 1);
  }
  const l = host.stack.tcp.listeners.find(HOST_IP, 80)!;
  const gate = l.gate!;
  // The listener's count of half-open connections written again, as its own paths do on a change.
  const recount = () => {
    const n = l.pending;
    l.pending = n;
  };
  // Every frame of the new connection held from the peer, to its SYN's resend.
  const c = await heldConnect(r);
  const { x, held } = c;
  // Serve's main thread catches up: its half-open backlog full (as thousands of SYNs make it),
  // the first SYN gets a cookie.
  Atomics.store(gate, 1, l.backlog);
  const [s1, s2] = held.splice(0, 2);
  const cookies0 = host.stack.counters.get('tcp.syncookies.sent');
  c.handOn(s1!);
  await net.sleep(5);
  assert.ok(host.stack.counters.get('tcp.syncookies.sent') > cookies0, 'the host answered with a cookie');
  assert.equal(x.connecting, false, "the peer took the cookie's SYN-ACK");
  // The handshakes in progress end: none half-open anywhere, and the listener's own count says so.
  Atomics.store(gate, 1, 0);
  recount();
  assert.equal(Atomics.load(gate, 2), 1, 'NICs still pass SYNs up while a cookie may be answered');
  // The resent SYN, then the cookie's ACK.
  const syn = () => host.nics.reduce((a, n) => a + n.engine.counters.get('nic.listen.syn'), 0);
  const syns0 = syn();
  const over0 = host.stack.counters.get('tcp.syncookies.over-half-open');
  c.handOn(s2!);
  await net.sleep(5);
  assert.equal(syn() - syns0, 0, 'no member answered the resent SYN');
  for (const h of held.splice(0)) c.handOn(h);
  c.release();
  await net.sleep(200);
  assert.equal(c.err, null, 'the peer is not reset');
  assert.ok(
    host.stack.counters.get('tcp.syncookies.over-half-open') > over0,
    "the host's half-open connection gave way",
  );
  while (accepted.length < 3) await net.sleep(10);
  x.write('ping');
  const [got] = await once(accepted[2]!, 'data');
  assert.equal(String(got), 'ping', 'the cookie connection carries data');
  // Once no cookie can be answered, the next change of the count lets the NICs answer again.
  await net.sleep(121_000);
  recount();
  assert.equal(Atomics.load(gate, 2), 0, 'the gate clears once cookies expire');
  host.close();
  net.close();
});
