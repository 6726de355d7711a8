/**
 * The address flags of `chimney serve` and `chimney get` (--ip in both families, --gw, --gw6, URL
 * hosts in brackets): what is accepted, and that every refusal is a typed error naming the flag.
 * No root needed: the checks run before any device is opened.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checkAddresses, collectIps, urlHostLiteral } from '../../src/cli/addresses.ts';
import { checkTapHostOptions } from '../../src/cli/tap-host.ts';
import { chimney, refuses } from './helpers.ts';

describe('--ip, --gw and --gw6', () => {
  test('both families, repeatable and comma-separated, in the order given; IPv6 in RFC 5952 form', () => {
    const ips = collectIps('FD00:0:0:0::10/64,10.9.0.10/24', collectIps('10.9.1.10/24', undefined));
    assert.deepEqual(ips, ['10.9.1.10/24', 'FD00:0:0:0::10/64', '10.9.0.10/24']);
    const a = checkAddresses(ips, { gw: '10.9.0.1', gw6: 'fd00::1' });
    assert.deepEqual(a.v4, ['10.9.1.10/24', '10.9.0.10/24']);
    assert.deepEqual(a.v6, ['fd00::10/64']);
    assert.equal(a.primary, (10 << 24) | (9 << 16) | (1 << 8) | 10);
    assert.equal(a.gw6, 'fd00::1');
    assert.equal(checkAddresses(['10.0.0.2/8', '2001:db8::2/64'], { gw6: 'fe80::1' }).gw6, 'fe80::1');
    assert.equal(checkAddresses('10.0.0.2/8').v6.length, 0);
  });

  for (const [ips, re] of [
    [['10.9.0.10'], /'10\.9\.0\.10' needs a prefix, e\.g\. \/24/],
    [['fd00::10', '10.9.0.10/24'], /'fd00::10' needs a prefix, e\.g\. \/64/],
    [['fd00::1::10/64', '10.9.0.10/24'], /not an IPv6 address\/prefix.*more than one '::'/],
    [['fd00::g/64', '10.9.0.10/24'], /not an IPv6 address\/prefix.*bad group 'g'/],
    [['fd00::10/129', '10.9.0.10/24'], /prefix length must be 0\.\.128/],
    [['fd00::10/0', '10.9.0.10/24'], /an IPv6 prefix must be 1\.\.127/],
    [['fd00::10/128', '10.9.0.10/24'], /an IPv6 prefix must be 1\.\.127/],
    [['ff02::1/64', '10.9.0.10/24'], /'ff02::1\/64' is not a unicast address/],
    [['::/64', '10.9.0.10/24'], /is not a unicast address/],
    [['::1/64', '10.9.0.10/24'], /is not a unicast address/],
    [['fe80::10/64', '10.9.0.10/24'], /link-local: Chimney forms its link-local address from the MAC/],
    [['fd00::10/64', 'fd00:0::10/64', '10.9.0.10/24'], /fd00:0::10\/64 is given twice/],
    [['10.9.0.300/24'], /'10\.9\.0\.300\/24' is not an address\/prefix.*octet 300/],
    [['10.9.0.3/33'], /prefix length must be 0\.\.32/],
    [['10.9.0.3/0'], /needs a prefix/],
    [[], /at least one address/],
  ] as const) {
    test(`--ip ${ips.join(' --ip ') || '(none)'} is refused: ${re.source}`, () => {
      refuses(() => checkAddresses(ips), /^--ip: /);
      refuses(() => checkAddresses(ips), re);
    });
  }

  test('IPv6 addresses alone make an IPv6-only host: no primary IPv4 address, the MAC seeded from the IPv6 one; --gw refused', () => {
    const a = checkAddresses(['fd00:57::10/64', 'fd01::abcd:1234/64'], { gw6: 'fd00:57::1' });
    assert.deepEqual(a.v4, []);
    assert.deepEqual(a.v6, ['fd00:57::10/64', 'fd01::abcd:1234/64']);
    assert.equal(a.primary, null);
    assert.equal(a.macSeed, 0x10, 'the last 32 bits of the first IPv6 address');
    assert.equal(checkAddresses(['10.9.0.10/24', 'fd00::abcd:1234/64']).macSeed, 0x0a09000a, 'IPv4 first');
    refuses(
      () => checkAddresses(['fd00::10/64'], { gw: '10.9.0.1' }),
      /^--gw: an IPv4 gateway needs an IPv4 --ip/,
    );
  });

  test('an empty --ip value is refused', () => {
    refuses(() => collectIps(' , ', undefined), /--ip: ' , ' names no address/);
  });

  for (const [o, flag, re] of [
    [{ gw: 'fd00::1' }, '--gw', /not an IPv4 address \(an IPv6 router goes in --gw6\)/],
    [{ gw: '10.8.0.1' }, '--gw', /10\.8\.0\.1 is not on the subnet of 10\.9\.0\.10\/24/],
    [{ gw6: '10.9.0.1' }, '--gw6', /'10\.9\.0\.1' is not an IPv6 address/],
    [{ gw6: 'fd01::1' }, '--gw6', /neither link-local nor on the subnet of fd00::10\/64/],
    [{ gw6: 'ff02::2' }, '--gw6', /not a unicast address/],
    [{ gw6: 'fd00::10' }, '--gw6', /one of Chimney's own addresses/],
    [{ mtu: 1279 }, '--mtu', /1279 is below 1280, the smallest MTU that carries IPv6/],
  ] as const) {
    test(`${flag} ${JSON.stringify(o)} is refused: ${re.source}`, () => {
      refuses(() => checkAddresses(['10.9.0.10/24', 'fd00::10/64'], o), new RegExp(`^${flag}: `));
      refuses(() => checkAddresses(['10.9.0.10/24', 'fd00::10/64'], o), re);
    });
  }

  test('--gw6 without an IPv6 address is refused; --mtu 576 stays fine for IPv4 alone', () => {
    refuses(() => checkAddresses(['10.9.0.10/24'], { gw6: 'fe80::1' }), /--gw6: needs an IPv6 --ip/);
    assert.equal(checkAddresses(['10.9.0.10/24'], { mtu: 576 }).v6.length, 0);
  });

  test('checkTapHostOptions applies the same checks', () => {
    refuses(
      () => checkTapHostOptions({ tap: 'chx0', ip: ['10.9.0.10/24', 'fd00::10/60'], gw6: 'fd00:0:0:10::1' }),
      /--gw6: .* neither link-local nor on the subnet of fd00::10\/60/,
    );
    checkTapHostOptions({ tap: 'chx0', ip: ['10.9.0.10/24', 'fd00::10/60'], gw6: 'fd00:0:0:f::1' });
  });
});

describe('URL hosts', () => {
  test('an IPv6 literal in brackets, an IPv4 literal, and nothing else', () => {
    assert.deepEqual(urlHostLiteral(new URL('http://[FD00:0::1]:8000/x').hostname), {
      host: 'fd00::1',
      family: 6,
    });
    assert.deepEqual(urlHostLiteral(new URL('http://10.9.0.1/').hostname), { host: '10.9.0.1', family: 4 });
    assert.equal(urlHostLiteral(new URL('http://example.org/').hostname), null);
    // WHATWG URL already rewrites the IPv4 tail into hex groups; what comes out is still one address.
    assert.deepEqual(urlHostLiteral(new URL('http://[::ffff:10.0.0.1]/').hostname), {
      host: '::ffff:10.0.0.1',
      family: 6,
    });
    assert.equal(urlHostLiteral('[fd00::1'), null);
    assert.equal(urlHostLiteral('[zz::1]'), null);
  });
});

describe('the commands say what is wrong and exit non-zero (no device is opened)', () => {
  test('serve: a bad IPv6 --ip names the flag and the reason', () => {
    const r = chimney('serve', '--tap', 'chx0', '--ip', '10.1.2.3/24', '--ip', 'fd00::10:/64');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /chimney serve: --ip: 'fd00::10:\/64' is not an IPv6 address\/prefix/);
  });

  test('serve: --gw6 off the subnet names the flag', () => {
    const r = chimney('serve', '--tap', 'chx0', '--ip', '10.1.2.3/24,fd00::10/64', '--gw6', 'fd01::1');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /chimney serve: --gw6: fd01::1 is neither link-local nor on the subnet/);
  });

  test('get: an IPv6 URL needs an IPv6 --ip; a host name is refused', () => {
    let r = chimney('get', 'http://[fd00::1]:8000/x', '--tap', 'chx0', '--ip', '10.1.2.3/24');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /an IPv6 host needs an IPv6 --ip/);
    r = chimney('get', 'http://example.org/', '--tap', 'chx0', '--ip', '10.1.2.3/24');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /IPv6 one in brackets, http:\/\/\[fd00::1\]\//);
  });
});
