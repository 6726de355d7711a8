import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InvalidArgumentError } from '../../src/core/errors.ts';
import {
  BROADCAST_MAC,
  formatIpv4,
  formatMac,
  isMulticastMac,
  parseCidr,
  parseIpv4,
  parseMac,
  readMac,
  readU16,
  readU32,
  writeMac,
  writeU16,
  writeU32,
} from '../../src/wire/addr.ts';
import fc from '../helpers/fc.ts';
import { mac, u16, u32 } from './fixtures.ts';

describe('IPv4 addresses', () => {
  test('parse and format known values', () => {
    assert.equal(parseIpv4('10.0.0.1'), 0x0a000001);
    assert.equal(parseIpv4('255.255.255.255'), 0xffffffff);
    assert.equal(parseIpv4('0.0.0.0'), 0);
    assert.equal(parseIpv4('192.168.1.200'), 0xc0a801c8);
    assert.equal(formatIpv4(0xc0a801c8), '192.168.1.200');
    assert.equal(formatIpv4(0xffffffff), '255.255.255.255');
  });

  test('rejects malformed addresses with InvalidArgumentError', () => {
    for (const bad of [
      '',
      '10.0.0',
      '10.0.0.1.2',
      '256.0.0.1',
      '01.0.0.1',
      '1..2.3',
      'a.b.c.d',
      ' 1.2.3.4',
      '1.2.3.-4',
    ]) {
      assert.throws(() => parseIpv4(bad), InvalidArgumentError, bad);
    }
    assert.throws(() => parseIpv4(42 as unknown as string), InvalidArgumentError);
  });

  test('format/parse round-trip', () => {
    fc.assert(fc.property(u32, (ip) => parseIpv4(formatIpv4(ip)) === ip));
  });

  test('CIDR', () => {
    assert.deepEqual(parseCidr('10.0.0.1/24'), { ip: 0x0a000001, prefixLength: 24, mask: 0xffffff00 });
    assert.deepEqual(parseCidr('0.0.0.0/0'), { ip: 0, prefixLength: 0, mask: 0 });
    assert.deepEqual(parseCidr('1.2.3.4/32'), { ip: 0x01020304, prefixLength: 32, mask: 0xffffffff });
    assert.equal(parseCidr('172.16.0.0/12').mask, 0xfff00000);
    for (const bad of ['10.0.0.1', '10.0.0.1/33', '10.0.0.1/', '10.0.0.1/-1', '10.0.0.1/08', '300.0.0.1/8']) {
      assert.throws(() => parseCidr(bad), InvalidArgumentError, bad);
    }
  });
});

describe('MAC addresses', () => {
  test('parse and format known values', () => {
    assert.equal(parseMac('02:00:00:00:00:01'), 0x020000000001);
    assert.equal(parseMac('FF-FF-FF-FF-FF-FF'), BROADCAST_MAC);
    assert.equal(BROADCAST_MAC, 0xffffffffffff);
    assert.equal(formatMac(0x0a1b2c3d4e5f), '0a:1b:2c:3d:4e:5f');
    assert.equal(formatMac(0), '00:00:00:00:00:00');
    assert.equal(formatMac(BROADCAST_MAC), 'ff:ff:ff:ff:ff:ff');
  });

  test('rejects malformed MACs with InvalidArgumentError', () => {
    for (const bad of [
      '',
      '02:00:00:00:00',
      '02:00:00:00:00:01:02',
      '02-00:00:00:00:01',
      '0g:00:00:00:00:01',
      '2:0:0:0:0:1',
    ]) {
      assert.throws(() => parseMac(bad), InvalidArgumentError, bad);
    }
  });

  test('group bit', () => {
    assert.equal(isMulticastMac(BROADCAST_MAC), true);
    assert.equal(isMulticastMac(0x01005e000001), true);
    assert.equal(isMulticastMac(0x020000000001), false);
  });

  test('format/parse and write/read round-trips', () => {
    const buf = new Uint8Array(9);
    fc.assert(
      fc.property(mac, fc.integer({ min: 0, max: 3 }), (m, off) => {
        assert.equal(parseMac(formatMac(m)), m);
        writeMac(buf, off, m);
        assert.equal(readMac(buf, off), m);
      }),
    );
  });

  test('readMac is big-endian', () => {
    assert.equal(readMac(Uint8Array.of(0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54), 0), 0xfedcba987654);
  });
});

describe('integer helpers', () => {
  test('big-endian and unsigned', () => {
    const b = Uint8Array.of(0xff, 0xfe, 0xfd, 0xfc);
    assert.equal(readU16(b, 0), 0xfffe);
    assert.equal(readU32(b, 0), 0xfffefdfc);
    writeU32(b, 0, 0x80000001);
    assert.deepEqual([...b], [0x80, 0, 0, 1]);
    writeU16(b, 2, 0x1234);
    assert.deepEqual([...b], [0x80, 0, 0x12, 0x34]);
  });

  test('round-trips', () => {
    const buf = new Uint8Array(6);
    fc.assert(
      fc.property(u16, u32, (a, b) => {
        writeU16(buf, 0, a);
        writeU32(buf, 2, b);
        return readU16(buf, 0) === a && readU32(buf, 2) === b;
      }),
    );
  });
});
