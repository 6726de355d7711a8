/**
 * `chimney serve --service name[:port][@addr]`: a service bound to one address. What the parser
 * takes, every refusal a typed error that says why, the ports two services may share, and the
 * address checked against `--ip` before any device is opened. No root needed.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checkAddresses } from '../../src/cli/addresses.ts';
import {
  checkServiceAddresses,
  parseService,
  type ServiceSpec,
  serviceLabel,
  servicesOverlap,
} from '../../src/cli/services.ts';
import { chimney, refuses } from './helpers.ts';

describe('--service name[:port][@addr]', () => {
  test('an address after @: IPv4 dotted, IPv6 in brackets in RFC 5952 form, the wildcards; labels round-trip', () => {
    const cases: [string, ServiceSpec, string][] = [
      ['http', { name: 'http', port: 80 }, 'http:80'],
      ['echo:7007', { name: 'echo', port: 7007 }, 'echo:7007'],
      ['http:8080@10.9.1.2', { name: 'http', port: 8080, host: '10.9.1.2' }, 'http:8080@10.9.1.2'],
      ['discard@10.9.1.2', { name: 'discard', port: 9, host: '10.9.1.2' }, 'discard:9@10.9.1.2'],
      ['http:80@[FD00:0:0::0:2]', { name: 'http', port: 80, host: 'fd00::2' }, 'http:80@[fd00::2]'],
      ['echo@0.0.0.0', { name: 'echo', port: 7, host: '0.0.0.0' }, 'echo:7@0.0.0.0'],
      ['echo@[::]', { name: 'echo', port: 7, host: '::' }, 'echo:7@[::]'],
    ];
    for (const [text, spec, label] of cases) {
      assert.deepEqual(parseService(text), spec, text);
      assert.equal(serviceLabel(spec), label, text);
      assert.deepEqual(parseService(label), spec, label);
    }
  });

  for (const [text, re] of [
    ['http:80@', /no address after '@'/],
    ['http:80@fd00::2', /an IPv6 address goes in brackets, e\.g\. @\[fd00::2\]/],
    ['http:80@[fd00::2', /'\[fd00::2' has no closing '\]'/],
    ['http:80@[fd00::zz]', /'fd00::zz' is not an IPv6 address/],
    ['http:80@10.9.1', /'10\.9\.1' is not an IPv4 address/],
    ['http:80@10.9.1.256', /'10\.9\.1\.256' is not an IPv4 address/],
    ['http:80@host.example', /'host\.example' is not an IPv4 address/],
    ['http:0@10.9.1.2', /port must be 1\.\.65535/],
    ['http:@10.9.1.2', /port must be 1\.\.65535/],
    ['gopher@10.9.1.2', /unknown service 'gopher@10\.9\.1\.2'/],
  ] as const) {
    test(`'${text}' is refused: ${re.source}`, () => refuses(() => parseService(text), re));
  }

  test('two services share a port only on addresses that do not overlap, as bind(2) allows', () => {
    const s = (t: string) => parseService(t);
    // Apart: two addresses, or the IPv4 wildcard and an IPv6 address, or two ports.
    assert.equal(servicesOverlap(s('http:80@10.9.1.2'), s('echo:80@[fd00::2]')), false);
    assert.equal(servicesOverlap(s('http:80@[fd00::2]'), s('echo:80@[fd00::3]')), false);
    assert.equal(servicesOverlap(s('http:80@0.0.0.0'), s('echo:80@[fd00::2]')), false);
    assert.equal(servicesOverlap(s('http:80'), s('echo:81')), false);
    // Overlapping: the same address, a wildcard covering it, or no address at all.
    assert.equal(servicesOverlap(s('http:80@10.9.1.2'), s('echo:80@10.9.1.2')), true);
    assert.equal(servicesOverlap(s('http:80@0.0.0.0'), s('echo:80@10.9.1.2')), true);
    assert.equal(servicesOverlap(s('http:80@[::]'), s('echo:80@10.9.1.2')), true);
    assert.equal(servicesOverlap(s('http:80'), s('echo:80@[fd00::2]')), true);
  });

  test('a bound address must be one of --ip: each family checked, the wildcards need an address of theirs', () => {
    const dual = checkAddresses(['10.9.1.2/24', 'fd00::2/64']);
    const v4 = checkAddresses(['10.9.1.2/24']);
    const v6 = checkAddresses(['fd00::2/64']);
    const ok = (a: typeof dual, t: string) => checkServiceAddresses([parseService(t)], a);
    ok(dual, 'http:80@10.9.1.2');
    ok(dual, 'http:80@[fd00:0::2]');
    ok(dual, 'http@0.0.0.0');
    ok(dual, 'http@[::]');
    ok(v4, 'http');
    refuses(
      () => ok(dual, 'http:80@10.9.1.3'),
      /^--service http:80@10\.9\.1\.3: 10\.9\.1\.3 is not one of Chimney's addresses \(--ip 10\.9\.1\.2\/24, fd00::2\/64\)$/,
    );
    refuses(() => ok(dual, 'http:80@[fd00::3]'), /fd00::3 is not one of Chimney's addresses/);
    // The link-local address is Chimney's own, but no --ip: a server binds the addresses it was given.
    refuses(() => ok(dual, 'http:80@[fe80::1]'), /fe80::1 is not one of Chimney's addresses/);
    refuses(
      () => ok(v4, 'http:80@[fd00::2]'),
      /fd00::2 is not one of Chimney's addresses \(--ip 10\.9\.1\.2\/24\)/,
    );
    refuses(() => ok(v6, 'http:80@10.9.1.2'), /10\.9\.1\.2 is not one of Chimney's addresses/);
    refuses(() => ok(v6, 'http@0.0.0.0'), /Chimney has no IPv4 address/);
    refuses(() => ok(v4, 'http@[::]'), /Chimney has no IPv6 address/);
  });
});

describe('serve refuses a bad binding and exits non-zero (no device is opened)', () => {
  test('an address it does not hold', () => {
    const r = chimney(
      'serve',
      '--tap',
      'chx0',
      '--ip',
      '10.1.2.3/24,fd00::10/64',
      '--service',
      'http:80@[fd00::11]',
    );
    assert.notEqual(r.status, 0);
    assert.match(
      r.stderr,
      /chimney serve: --service http:80@\[fd00::11\]: fd00::11 is not one of Chimney's addresses \(--ip 10\.1\.2\.3\/24, fd00::10\/64\) \(ERR_CHIMNEY_INVALID_ARG\)/,
    );
  });

  test('a port two services would both take', () => {
    const r = chimney(
      'serve',
      '--tap',
      'chx0',
      '--ip',
      '10.1.2.3/24',
      '--service',
      'http:80',
      '--service',
      'echo:80@10.1.2.3',
    );
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /echo:80@10\.1\.2\.3: port 80 is taken by http:80/);
  });
});
