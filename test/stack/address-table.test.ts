import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SeededRandom } from '../../src/core/random.ts';
import { AddressTable, ANY6, endpointsOverlap, isV6, TWO_32 } from '../../src/stack/address-table.ts';
import { formatIpv6, parseIpv6 } from '../../src/wire/addr.ts';
import { foldChecksum, pseudoHeaderSum, pseudoHeaderSum6 } from '../../src/wire/checksum.ts';
import fc from '../helpers/fc.ts';

const addr6 = fc.uint8Array({ minLength: 16, maxLength: 16 }).filter((b) => b.some((x) => x !== 0));

describe('AddressTable', () => {
  test('intern, find, ref and release agree with a model over up to 300 operations', () => {
    fc.assert(
      fc.property(
        fc.array(addr6, { minLength: 1, maxLength: 40 }),
        fc.array(fc.tuple(fc.constantFrom('intern', 'release', 'find'), fc.nat(39)), {
          minLength: 50,
          maxLength: 300,
        }),
        fc.integer({ min: 1, max: 24 }),
        (pool, ops, cap) => {
          const t = new AddressTable(new SeededRandom(cap), { maxIpv6: cap });
          const model = new Map<string, { handle: number; refs: number }>();
          for (const [op, i] of ops) {
            const b = pool[i % pool.length]!;
            const key = formatIpv6(b);
            const m = model.get(key);
            if (op === 'intern') {
              const h = t.intern(b, 0);
              if (m) {
                assert.equal(h, m.handle);
                m.refs++;
              } else if (model.size >= cap) {
                assert.equal(h, -1);
              } else {
                assert.ok(isV6(h) && h > ANY6 && h < 2 ** 37 && Number.isInteger(h));
                model.set(key, { handle: h, refs: 1 });
              }
            } else if (op === 'release') {
              if (!m) continue;
              t.release(m.handle);
              if (--m.refs === 0) model.delete(key);
            } else {
              assert.equal(t.find(b, 0), m ? m.handle : -1);
            }
            assert.equal(t.size, model.size);
          }
          const handles = new Set<number>();
          for (const [key, m] of model) {
            assert.equal(t.format(m.handle), key);
            assert.equal(t.refCount(m.handle), m.refs);
            handles.add(m.handle);
          }
          assert.equal(handles.size, model.size, 'distinct addresses have distinct handles');
        },
      ),
      { numRuns: 200 },
    );
  });

  test('a full table refuses, counts, and takes new addresses once one is released', () => {
    const t = new AddressTable(new SeededRandom(1), { maxIpv6: 3 });
    const hs = ['fd00::1', 'fd00::2', 'fd00::3'].map((s) => t.intern(parseIpv6(s)));
    assert.ok(hs.every((h) => h > TWO_32));
    assert.equal(t.intern(parseIpv6('fd00::4')), -1);
    assert.equal(t.refused, 1);
    t.release(hs[1]!);
    assert.equal(t.find(parseIpv6('fd00::2'), 0), -1);
    const h4 = t.intern(parseIpv6('fd00::4'));
    assert.ok(h4 > TWO_32);
    assert.equal(t.format(h4), 'fd00::4');
    assert.equal(t.format(hs[0]!), 'fd00::1');
    assert.equal(t.format(hs[2]!), 'fd00::3');
  });

  test('onFull may free room for the address being interned', () => {
    const t = new AddressTable(new SeededRandom(2), { maxIpv6: 1 });
    const a = t.intern(parseIpv6('fd00::a'));
    t.onFull = () => {
      t.release(a);
      return 1;
    };
    const b = t.intern(parseIpv6('fd00::b'));
    assert.ok(b > TWO_32);
    assert.equal(t.format(b), 'fd00::b');
    assert.equal(t.refused, 0);
  });

  test('the pseudo-header sum is RFC 793 for IPv4 and RFC 8200 8.1 for IPv6 handles', () => {
    const t = new AddressTable(new SeededRandom(3), { maxIpv6: 4 });
    fc.assert(
      fc.property(
        addr6,
        addr6,
        fc.integer({ min: 0, max: 70000 }),
        fc.constantFrom(6, 17),
        (s, d, len, p) => {
          const hs = t.intern(s, 0);
          const hd = t.intern(d, 0);
          assert.equal(
            foldChecksum(t.pseudoSum(hs, hd, p, len)),
            foldChecksum(pseudoHeaderSum6(s, 0, d, 0, p, len)),
          );
          t.release(hs);
          t.release(hd);
        },
      ),
      { numRuns: 300 },
    );
    fc.assert(
      fc.property(fc.nat(0xffffffff), fc.nat(0xffffffff), fc.integer({ min: 0, max: 65535 }), (s, d, len) => {
        assert.equal(t.pseudoSum(s, d, 6, len), pseudoHeaderSum(s, d, 6, len));
      }),
    );
  });

  test('parse: IPv4 is its u32, :: is ANY6, an IPv4-mapped literal is the IPv4 address', () => {
    const t = new AddressTable(new SeededRandom(4));
    assert.equal(t.parse('10.0.0.1'), 0x0a000001);
    assert.equal(t.parse('::'), ANY6);
    assert.equal(t.parse('::ffff:10.0.0.2'), 0x0a000002);
    const h = t.parse('FD00:0:0::10');
    assert.equal(t.format(h), 'fd00::10');
    assert.equal(t.refCount(h), 1);
    assert.throws(() => t.parse('fd00::1::2'));
    assert.throws(() => t.release(TWO_32 + 1 + 9_999_999), /not an IPv6 address handle/);
  });

  test('wildcards: 0 takes IPv4 only, :: both families unless v6-only', () => {
    const v6 = TWO_32 + 5;
    assert.ok(endpointsOverlap(0, false, ANY6, false));
    assert.ok(!endpointsOverlap(0, false, ANY6, true));
    assert.ok(endpointsOverlap(ANY6, true, v6, false));
    assert.ok(!endpointsOverlap(0, false, v6, false));
    assert.ok(endpointsOverlap(0x0a000001, false, ANY6, false));
    assert.ok(!endpointsOverlap(0x0a000001, false, v6, false));
  });
});
