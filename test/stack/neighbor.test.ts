import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConnectionError, InvalidArgumentError } from '../../src/core/errors.ts';
import type { NeighborState } from '../../src/state/neighbor-state.ts';
import { arpOp, etherType, IP_A, IP_B, MAC_A, MAC_B, MAC_C, makeStack, twoHosts } from './harness.ts';

const ARP = 0x0806;

describe('neighbor layer (ARP)', () => {
  test('resolves a neighbor, answers requests, and learns the requester', async () => {
    const w = twoHosts();
    const p = w.a.ping('10.0.0.2');
    w.clock.advance(5);
    const r = await p;
    assert.ok(r.rttMs >= 0);
    const arps = w.hub.log.filter((e) => etherType(e.frame) === ARP);
    assert.equal(arps.length, 2, 'one request, one reply');
    assert.equal(arpOp(arps[0]!.frame), 1);
    assert.equal(arps[0]!.from, 'a');
    assert.equal(arpOp(arps[1]!.frame), 2);
    assert.equal(arps[1]!.from, 'b');
    assert.equal(w.a.neighbors.lookup(IP_B)?.status, 'reachable');
    assert.equal(w.a.neighbors.lookup(IP_B)?.mac, MAC_B);
    // B learned A from the request (RFC 826 merge) and so never had to ask.
    assert.equal(w.b.neighbors.lookup(IP_A)?.mac, MAC_A);
    assert.equal(w.b.counters.get('arp.tx.request'), 0);
  });

  test('retries lost requests and then resolves', async () => {
    const w = twoHosts();
    let lost = 0;
    w.hub.filter = (f) => !(etherType(f) === ARP && arpOp(f) === 1 && lost++ < 2);
    const p = w.a.ping('10.0.0.2', { timeoutMs: 5000 });
    w.clock.advance(999);
    assert.equal(w.a.neighbors.lookup(IP_B)?.status, 'incomplete');
    w.clock.advance(1500);
    assert.equal(w.a.neighbors.lookup(IP_B)?.status, 'reachable');
    await p;
    assert.equal(w.a.counters.get('arp.tx.request'), 3);
  });

  test('fails after the retries, drops the queue and reports EHOSTUNREACH', async () => {
    const w = twoHosts();
    w.hub.filter = (f) => etherType(f) !== ARP;
    const p = w.a.ping('10.0.0.2', { timeoutMs: 10000 });
    const rejected = assert.rejects(
      p,
      (e: unknown) => e instanceof ConnectionError && e.code === 'EHOSTUNREACH',
    );
    w.clock.advance(3500);
    await rejected;
    assert.equal(w.a.counters.get('arp.tx.request'), 3);
    assert.equal(w.a.neighbors.lookup(IP_B)?.status, 'failed');
    assert.equal(w.a.neighbors.lookup(IP_B)?.mac, -1);
    assert.equal(w.a.counters.get('tx.drop.neigh.ehostunreach'), 1);
  });

  test('the wait queue is bounded and drops the oldest', () => {
    const w = twoHosts({ arp: { queueLimit: 4 } });
    w.hub.filter = (f) => etherType(f) !== ARP;
    const got: number[] = [];
    w.b.udp.bind({ port: 7 }, (d) => got.push(d[0]!));
    const s = w.a.udp.bind({}, () => {});
    for (let i = 0; i < 10; i++) assert.equal(s.send(new Uint8Array([i]), 7, '10.0.0.2'), true);
    assert.equal(w.a.neighbors.lookup(IP_B)?.queued, 4);
    assert.equal(w.a.counters.get('tx.drop.neigh.queue-full'), 6);
    w.hub.filter = null;
    w.clock.advance(1100); // the retry gets through
    assert.deepEqual(got, [6, 7, 8, 9]);
  });

  test('gratuitous ARP updates the shared NeighborState in place', () => {
    const w = twoHosts();
    const path = w.a.pathTo(IP_B)!;
    w.a.udp.bind({}, () => {}).send(new Uint8Array(1), 9, IP_B);
    w.clock.advance(10);
    const nb: NeighborState = path.neighbor;
    assert.equal(nb.cached.dstMac, MAC_B);
    const changes: [number, number][] = [];
    w.a.neighbors.onChange((n, old) => {
      assert.equal(n, nb);
      changes.push([old, n.cached.dstMac]);
    });
    // B's address moves to a new NIC with another MAC and announces it.
    w.b.close();
    const pc = w.hub.port('c');
    const c = makeStack(w.clock, w.random);
    c.addInterface(pc, { mac: MAC_C, ip: '10.0.0.2/24' });
    w.clock.advance(1);
    assert.equal(path.neighbor, nb, 'same object');
    assert.equal(nb.cached.dstMac, MAC_C);
    assert.deepEqual(changes, [[MAC_B, MAC_C]]);
    assert.equal(w.a.counters.get('accept.arp.gratuitous'), 1);
    // A gratuitous ARP for an address we never used creates nothing.
    assert.equal(c.neighbors.lookup(IP_A), null);
  });

  test('reachable → stale → delay → probe → reachable', () => {
    const w = twoHosts({ arp: { reachableMs: 1000, staleMs: 500, retryMs: 100 } });
    const s = w.a.udp.bind({}, () => {});
    s.send(new Uint8Array(1), 9, IP_B);
    w.clock.advance(10);
    assert.equal(w.a.neighbors.lookup(IP_B)?.status, 'reachable');
    w.clock.advance(1600); // beyond 1.5 × reachableMs
    assert.equal(w.a.neighbors.lookup(IP_B)?.status, 'stale');
    w.hub.log.length = 0;
    s.send(new Uint8Array(1), 9, IP_B);
    assert.equal(w.a.neighbors.lookup(IP_B)?.status, 'delay');
    w.clock.advance(10);
    assert.equal(
      w.hub.log.filter((e) => etherType(e.frame) === ARP).length,
      0,
      'stale entries are used as is',
    );
    w.hub.filter = () => false; // hold the probe's answer back for a moment
    w.clock.advance(500);
    assert.equal(w.a.neighbors.lookup(IP_B)?.status, 'probe');
    const probe = w.hub.log.find((e) => etherType(e.frame) === ARP)!;
    assert.equal(arpOp(probe.frame), 1);
    // Unicast to the known MAC, not broadcast (RFC 4861 7.3.3).
    assert.equal(probe.frame[0], 0x02);
    w.hub.filter = null;
    w.clock.advance(150); // the second probe is answered
    assert.equal(w.a.neighbors.lookup(IP_B)?.status, 'reachable');
  });

  test('an unanswered probe fails the entry; confirm() avoids probing', () => {
    const w = twoHosts({ arp: { reachableMs: 1000, staleMs: 500, retryMs: 100, probeRetries: 2 } });
    const s = w.a.udp.bind({}, () => {});
    s.send(new Uint8Array(1), 9, IP_B);
    w.clock.advance(1700);
    s.send(new Uint8Array(1), 9, IP_B);
    assert.equal(w.a.neighbors.lookup(IP_B)?.status, 'delay');
    w.a.neighbors.confirm(IP_B);
    assert.equal(w.a.neighbors.lookup(IP_B)?.status, 'reachable');
    w.clock.advance(1700);
    s.send(new Uint8Array(1), 9, IP_B);
    w.hub.filter = (f) => etherType(f) !== ARP;
    w.clock.advance(500 + 2 * 100 + 10);
    assert.equal(w.a.neighbors.lookup(IP_B)?.status, 'failed');
    assert.equal(w.a.neighbors.lookup(IP_B)?.mac, -1);
  });

  test('setStatic pins a MAC and ARP never changes it', () => {
    const w = twoHosts();
    const nb = w.a.neighbors.setStatic('10.0.0.2', '02:00:00:00:00:09');
    assert.equal(nb.cached.dstMac, 0x020000000009);
    w.b.announce();
    w.clock.advance(1);
    assert.equal(w.a.neighbors.lookup(IP_B)?.status, 'static');
    assert.equal(w.a.neighbors.lookup(IP_B)?.mac, 0x020000000009);
    assert.throws(() => w.a.neighbors.setStatic('192.168.9.9', MAC_B), InvalidArgumentError);
    assert.throws(() => w.a.neighbors.setStatic('10.0.0.5', 'ff:ff:ff:ff:ff:ff'), InvalidArgumentError);
    assert.throws(() => w.a.neighbors.setStatic('10.0.0.5', 'zz'), InvalidArgumentError);
  });

  test('ARP claiming our own address is refused', () => {
    const w = twoHosts();
    const pc = w.hub.port('c');
    const c = makeStack(w.clock, w.random);
    c.addInterface(pc, { mac: MAC_C, ip: '10.0.0.1/24' }); // duplicate of A, announces
    w.clock.advance(1);
    assert.equal(w.a.counters.get('drop.arp.address-conflict'), 1);
    assert.equal(w.b.neighbors.lookup(IP_A), null);
  });
});
