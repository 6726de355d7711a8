import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { AddressInUseError, InvalidArgumentError, InvalidStateError } from '../../src/core/errors.ts';
import { SeededRandom } from '../../src/core/random.ts';
import { parseIpv4, readMac } from '../../src/wire/addr.ts';
import { etherType, Hub, IP_B, MAC_A, MAC_B, MAC_C, makeStack, twoHosts } from './harness.ts';

describe('VLANs', () => {
  test('two VLANs on one link do not see each other', async () => {
    const clock = new VirtualClock();
    const random = new SeededRandom(7);
    const hub = new Hub(clock);
    const a = makeStack(clock, random);
    const b = makeStack(clock, random);
    a.addInterface(hub.port('a'), { mac: MAC_A, ip: '10.0.0.1/24', vlan: 10 });
    b.addInterface(hub.port('b'), { mac: MAC_B, ip: '10.0.0.2/24', vlan: 20 });
    clock.advance(1);
    const p = a.ping('10.0.0.2', { timeoutMs: 5000 });
    const failed = assert.rejects(p, { code: 'EHOSTUNREACH' });
    clock.advance(5000);
    await failed;
    assert.ok(b.counters.get('drop.eth.unknown-vlan') >= 3);
    assert.equal(b.neighbors.size, 0);
  });

  test('one host with two VLAN interfaces on one link reaches a peer on each', async () => {
    const clock = new VirtualClock();
    const random = new SeededRandom(8);
    const hub = new Hub(clock);
    const trunk = hub.port('trunk');
    const h = makeStack(clock, random);
    const v10 = h.addInterface(trunk, { mac: MAC_A, ip: '10.0.10.1/24', vlan: 10 });
    const v20 = h.addInterface(trunk, { mac: MAC_A, ip: '10.0.20.1/24', vlan: 20 });
    assert.throws(
      () => h.addInterface(trunk, { mac: MAC_A, ip: '10.0.30.1/24', vlan: 20 }),
      InvalidStateError,
    );
    const p10 = makeStack(clock, random);
    const p20 = makeStack(clock, random);
    p10.addInterface(hub.port('p10'), { mac: MAC_B, ip: '10.0.10.2/24', vlan: 10 });
    p20.addInterface(hub.port('p20'), { mac: MAC_C, ip: '10.0.20.2/24', vlan: 20 });
    clock.advance(1);
    const r1 = h.ping('10.0.10.2');
    const r2 = h.ping('10.0.20.2');
    clock.advance(10);
    await r1;
    await r2;
    assert.equal(h.routeTo(parseIpv4('10.0.10.2'))?.iface, v10);
    assert.equal(h.routeTo(parseIpv4('10.0.20.2'))?.iface, v20);
    // Frames of each VLAN carry its tag.
    const tags = new Set(
      hub.log.filter((e) => e.from === 'trunk').map((e) => (e.frame[14]! << 8) | e.frame[15]!),
    );
    assert.deepEqual([...tags].sort(), [10, 20]);
    // A packet for the VLAN 20 address arriving tagged 10 is not accepted (strong host).
    assert.equal(p10.neighbors.lookup(parseIpv4('10.0.20.1')), null);
  });
});

describe('routing', () => {
  test('connected routes, default gateway, most specific prefix', () => {
    const w = twoHosts();
    assert.equal(w.a.routeTo(IP_B)?.nextHop, IP_B);
    assert.equal(w.a.routeTo(parseIpv4('8.8.8.8')), null);
    assert.equal(w.a.pathTo(parseIpv4('8.8.8.8')), null);
    w.a.setDefaultGateway('10.0.0.2');
    assert.equal(w.a.routeTo(parseIpv4('8.8.8.8'))?.nextHop, IP_B);
    w.a.addRoute('8.8.0.0/16', '10.0.0.3');
    assert.equal(w.a.routeTo(parseIpv4('8.8.8.8'))?.nextHop, parseIpv4('10.0.0.3'));
    assert.equal(w.a.routeTo(parseIpv4('8.9.8.8'))?.nextHop, IP_B);
    assert.throws(() => w.a.addRoute('1.0.0.0/8', '192.168.1.1'), InvalidArgumentError);
    assert.throws(() => w.a.addRoute('1.0.0.0/8'), InvalidArgumentError);
    assert.throws(() => w.a.addRoute('1.0.0.0/33', '10.0.0.2'), InvalidArgumentError);
    assert.throws(() => w.a.addRoute('1.0.0.0/8', undefined, 'nope'), InvalidArgumentError);
    assert.ok(w.a.isLocal(parseIpv4('10.0.0.1')));
    assert.equal(w.a.isLocal(IP_B), false);
  });

  test('packets beyond the gateway go to the gateway MAC; paths are shared and re-pointed', () => {
    const w = twoHosts();
    w.a.setDefaultGateway('10.0.0.2');
    const far = parseIpv4('192.0.2.7');
    const path = w.a.pathTo(far)!;
    assert.equal(w.a.pathTo(far), path, 'one PathState per (local, remote)');
    assert.equal(path.neighbor, w.a.pathTo(IP_B)!.neighbor, 'the gateway neighbor is shared');
    w.a.udp.bind({}, () => {}).send(new Uint8Array(4), 53, far);
    w.clock.advance(10);
    const ipFrames = w.hub.log.filter((e) => e.from === 'a' && etherType(e.frame) === 0x0800);
    assert.equal(ipFrames.length, 1);
    assert.equal(readMac(ipFrames[0]!.frame, 0), MAC_B);
    assert.equal(w.b.counters.get('drop.ipv4.not-for-us'), 1, 'B does not forward');
    // A more specific route moves the existing path to its new next hop.
    w.a.addRoute('192.0.2.0/24', '10.0.0.3');
    assert.equal(path.neighbor.const.ip, parseIpv4('10.0.0.3'));
  });

  test('interface configuration is validated', () => {
    const w = twoHosts();
    const p = w.hub.port('x');
    assert.throws(() => w.a.addInterface(p, { mac: 'nope', ip: '10.1.0.1/24' }), InvalidArgumentError);
    assert.throws(
      () => w.a.addInterface(p, { mac: 'ff:ff:ff:ff:ff:ff', ip: '10.1.0.1/24' }),
      InvalidArgumentError,
    );
    assert.throws(() => w.a.addInterface(p, { mac: MAC_C, ip: '10.1.0.1' }), InvalidArgumentError);
    assert.throws(() => w.a.addInterface(p, { mac: MAC_C, ip: '10.1.0.0/24' }), InvalidArgumentError);
    assert.throws(() => w.a.addInterface(p, { mac: MAC_C, ip: '10.0.0.1/24' }), AddressInUseError);
    assert.throws(
      () => w.a.addInterface(p, { mac: MAC_C, ip: '10.1.0.1/24', vlan: 4095 }),
      InvalidArgumentError,
    );
    assert.throws(
      () => w.a.addInterface(p, { mac: MAC_C, ip: '10.1.0.1/24', mtu: 9000 }),
      InvalidArgumentError,
    );
    const i = w.a.addInterface(p, { mac: MAC_C, ip: ['10.1.0.1/24', '10.2.0.1/16'], mtu: 1400 });
    assert.equal(i.mtu, 1400);
    assert.equal(w.a.pathTo(parseIpv4('10.2.3.4'))?.cached.mtu, 1400);
    assert.equal(w.a.pathTo(parseIpv4('10.2.3.4'))?.const.localIp, parseIpv4('10.2.0.1'));
    assert.equal(w.a.interfaces.length, 2);
  });
});
