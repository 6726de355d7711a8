import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AddressInUseError, InvalidArgumentError, InvalidStateError } from '../../src/core/errors.ts';
import { foldChecksum, internetChecksum, onesSum, pseudoHeaderSum } from '../../src/wire/checksum.ts';
import { bytes, etherType, IP_A, IP_B, MAC_A, MAC_B, twoHosts, udpFrame } from './harness.ts';

describe('UDP', () => {
  test('send and receive with a correct checksum, both ways', () => {
    const w = twoHosts();
    const atB: { data: Uint8Array; address: number; port: number }[] = [];
    const atA: Uint8Array[] = [];
    const b = w.b.udp.bind({ port: 5000 }, (data, r) => {
      atB.push({ data, ...r });
      b.send(
        data.map((x) => x ^ 0xff),
        r.port,
        r.address,
      );
    });
    const a = w.a.udp.bind({ ip: '10.0.0.1' }, (d) => atA.push(d));
    assert.ok(a.localPort >= 49152);
    assert.equal(a.send(bytes(300), 5000, '10.0.0.2'), true);
    w.clock.advance(10);
    assert.equal(atB.length, 1);
    assert.deepEqual(atB[0]!.data, bytes(300));
    assert.equal(atB[0]!.address, IP_A);
    assert.equal(atB[0]!.port, a.localPort);
    assert.deepEqual(
      atA[0],
      bytes(300).map((x) => x ^ 0xff),
    );
    const frame = w.hub.log.find((e) => e.from === 'a' && etherType(e.frame) === 0x0800)!.frame;
    const udpLen = frame.length - 34;
    assert.notEqual((frame[40]! << 8) | frame[41]!, 0, 'a checksum was sent');
    assert.equal(foldChecksum(onesSum(frame, 34, udpLen, pseudoHeaderSum(IP_A, IP_B, 17, udpLen))), 0);
  });

  test('a bad checksum is dropped; checksum 0 means none and is accepted', () => {
    const w = twoHosts();
    const got: Uint8Array[] = [];
    w.b.udp.bind({ port: 7 }, (d) => got.push(d));
    const mk = (noChecksum: boolean) =>
      udpFrame({
        dstMac: MAC_B,
        srcMac: MAC_A,
        src: IP_A,
        dst: IP_B,
        srcPort: 1,
        dstPort: 7,
        payload: bytes(20),
        noChecksum,
      });
    const bad = mk(false);
    bad[50]! ^= 0x40;
    w.pb.receive(bad);
    assert.equal(got.length, 0);
    assert.equal(w.b.counters.get('drop.udp.bad-checksum'), 1);
    w.pb.receive(mk(true));
    assert.equal(got.length, 1);
    assert.deepEqual(got[0], bytes(20));
  });

  test('the delivered data is a copy', () => {
    const w = twoHosts();
    const got: Uint8Array[] = [];
    w.b.udp.bind({ port: 7 }, (d) => got.push(d));
    const f = udpFrame({
      dstMac: MAC_B,
      srcMac: MAC_A,
      src: IP_A,
      dst: IP_B,
      srcPort: 1,
      dstPort: 7,
      payload: bytes(8),
    });
    w.pb.receive(f);
    f.fill(0);
    assert.deepEqual(got[0], bytes(8));
  });

  test('binding rules: EADDRINUSE, ephemeral ports, bad arguments, closed bindings', () => {
    const w = twoHosts();
    const one = w.a.udp.bind({ port: 53 }, () => {});
    assert.throws(() => w.a.udp.bind({ port: 53 }, () => {}), AddressInUseError);
    assert.throws(() => w.a.udp.bind({ port: 53, ip: '10.0.0.1' }, () => {}), AddressInUseError);
    assert.throws(() => w.a.udp.bind({ port: 70000 }, () => {}), InvalidArgumentError);
    assert.throws(() => w.a.udp.bind({ ip: '10.0.0.2' }, () => {}), InvalidArgumentError);
    assert.throws(() => one.send(new Uint8Array(1), 0, IP_B), InvalidArgumentError);
    assert.throws(() => one.send(new Uint8Array(70000), 7, IP_B), InvalidArgumentError);
    assert.throws(() => one.send(new Uint8Array(1), 7, 'x'), InvalidArgumentError);
    assert.equal(one.send(new Uint8Array(1), 7, '8.8.8.8'), false, 'no route');
    one.close();
    assert.throws(() => one.send(new Uint8Array(1), 7, IP_B), InvalidStateError);
    w.a.udp.bind({ port: 53 }, () => {});
    const ports = new Set<number>();
    for (let i = 0; i < 100; i++) ports.add(w.a.udp.bind({}, () => {}).localPort);
    assert.equal(ports.size, 100);
    for (const p of ports) assert.ok(p >= 49152 && p <= 65535);
  });

  test('broadcasts reach only wildcard bindings', () => {
    const w = twoHosts();
    const got: string[] = [];
    w.b.udp.bind({ port: 7, ip: '10.0.0.2' }, () => got.push('specific'));
    w.b.udp.bind({ port: 8 }, () => got.push('wildcard'));
    const to = (dst: number, dstMac: number, dstPort: number) =>
      udpFrame({ dstMac, srcMac: MAC_A, src: IP_A, dst, srcPort: 1, dstPort, payload: bytes(1) });
    w.pb.receive(to(IP_B, MAC_B, 7));
    w.pb.receive(to(0xffffffff, 0xffffffffffff, 7));
    w.pb.receive(to(0x0a0000ff, 0xffffffffffff, 8));
    assert.deepEqual(got, ['specific', 'wildcard']);
  });

  test('IPv4 options in received packets are skipped', () => {
    const w = twoHosts();
    const got: Uint8Array[] = [];
    w.b.udp.bind({ port: 7 }, (d) => got.push(d));
    const plain = udpFrame({
      dstMac: MAC_B,
      srcMac: MAC_A,
      src: IP_A,
      dst: IP_B,
      srcPort: 1,
      dstPort: 7,
      payload: bytes(30),
    });
    const f = new Uint8Array(plain.length + 4);
    f.set(plain.subarray(0, 34));
    f.set([1, 1, 1, 0], 34); // NOP NOP NOP EOL
    f.set(plain.subarray(34), 38);
    f[14] = 0x46;
    const total = ((f[16]! << 8) | f[17]!) + 4;
    f[16] = total >>> 8;
    f[17] = total & 0xff;
    f[24] = 0;
    f[25] = 0;
    const sum = internetChecksum(f, 14, 24);
    f[24] = sum >>> 8;
    f[25] = sum & 0xff;
    w.pb.receive(f);
    assert.equal(got.length, 1);
    assert.deepEqual(got[0], bytes(30));
  });
});
