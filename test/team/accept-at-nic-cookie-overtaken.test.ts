/**
 * Issue 10 item 1 (s41h7): a cookie's connection reset in a connect burst. The peer took the host's
 * cookie SYN-ACK, sent its ACK and its request, and then met the SYN-ACK of the half-open connection
 * its resent SYN made, which it answered with an ACK numbered past the request. That ACK reached
 * the host first (the ACK and request came up through a member whose queue was behind, or were
 * lost at a full TAP); the host checked it for a cookie as a listener does (seq - 1 for the peer's
 * ISN), refused it, and the half-open connection's RST reset the peer (8 of 5,000 downloads of a
 * `serve --workers` burst: bad-ack 2, rst.out 2, over-half-open 1, rst.in 1 each). Here the team's
 * ports hold the connection's frames and hand them on in that order.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { cookieRig, heldConnect } from './accept-at-nic-helpers.ts';

test('accept-at-nic: the ACK the half-open SYN-ACK draws, overtaking the cookie ACK and request, resets nothing', async () => {
  const r = await cookieRig();
  const { net, host, accepted } = r;
  const l = host.stack.tcp.listeners.find(0x0a000001, 80)!;
  const gate = l.gate!;
  const c = await heldConnect(r);
  const { x, held, handOn } = c;
  // The host's half-open backlog is full (a burst's thousands of SYNs): the first SYN gets a cookie.
  Atomics.store(gate, 1, l.backlog);
  const [s1, s2] = held.splice(0, 2);
  const cookies0 = host.stack.counters.get('tcp.syncookies.sent');
  handOn(s1!);
  await net.sleep(5);
  assert.equal(host.stack.counters.get('tcp.syncookies.sent') - cookies0, 1, 'answered with a cookie');
  assert.equal(x.connecting, false, "the peer took the cookie's SYN-ACK");
  x.write('ping');
  await net.sleep(5);
  const early = held.splice(0);
  assert.ok(
    early.some((h) => h.flags & 0x08),
    'the ACK and the request wait in a member',
  );
  // The burst's handshakes end, making room; the resent SYN makes a half-open connection whose
  // SYN-ACK the peer answers with an ACK past its request.
  Atomics.store(gate, 1, 0);
  const n = l.pending;
  l.pending = n;
  handOn(s2!);
  await net.sleep(5);
  const late = held.splice(0);
  assert.ok(
    late.length > 0 && late.every((h) => h.flags === 0x10),
    "the peer's answer to the second SYN-ACK",
  );
  const badAck0 = host.stack.counters.get('drop.tcp.bad-ack');
  c.release();
  for (const h of late) handOn(h);
  for (const h of early) handOn(h);
  await net.sleep(200);
  assert.equal(c.err, null, 'the peer is not reset');
  assert.equal(host.stack.counters.get('drop.tcp.bad-ack') - badAck0, 0);
  while (accepted.length < 1) await net.sleep(10);
  const conn = accepted[0]!;
  const got = conn.read?.() ?? (await once(conn, 'data'))[0];
  assert.equal(String(got), 'ping', "the request, on the cookie's connection");
  host.close();
  net.close();
});
