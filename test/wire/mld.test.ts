import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { formatIpv6, parseIpv6 } from '../../src/wire/addr.ts';
import { l4Checksum6Ok } from '../../src/wire/checksum.ts';
import { createIpv6Header, decodeIpv6, Ipv6Next } from '../../src/wire/ipv6.ts';
import {
  createMldMessage,
  decodeMld,
  encodeMldQuery,
  encodeMldReport,
  encodeMldV1,
  MLD_MAX_RECORDS,
  MLD_MAX_SOURCES,
  MldRecordType,
  MldType,
  mldMaxResponseMs,
  mldQqiSeconds,
  mldReportLength,
} from '../../src/wire/mld.ts';
import fc from '../helpers/fc.ts';
import { DECODE_ERRORS } from './fixtures.ts';
import { MLD_REPORT } from './fixtures6.ts';
import { mutate, mutations } from './mutate.ts';

const LL = parseIpv6('fe80::1');
const ROUTERS = parseIpv6('ff02::16');
const m = createMldMessage();

const group = (i: number): Uint8Array =>
  parseIpv6(`ff02::1:ff${((i >>> 16) & 0xff).toString(16).padStart(2, '0')}:${(i & 0xffff).toString(16)}`);

describe('MLD codec (RFC 3810 5, RFC 2710 3)', () => {
  test('an MLDv2 report round-trips, summed over the pseudo-header', () => {
    const groups = [group(1), group(0x12345), parseIpv6('ff05::1:3')];
    const buf = new Uint8Array(200);
    const n = encodeMldReport(MldRecordType.CHANGE_TO_EXCLUDE, groups, buf, 4, LL, ROUTERS);
    assert.equal(n, mldReportLength(3));
    assert.ok(l4Checksum6Ok(buf, 4, n, LL, ROUTERS, Ipv6Next.ICMPV6));
    assert.equal(decodeMld(buf, 4, n, m), null);
    assert.equal(m.type, MldType.V2_REPORT);
    assert.equal(m.version, 2);
    assert.equal(m.recordCount, 3);
    assert.deepEqual(
      m.records.slice(0, 3).map((r) => [r.type, r.sourceCount, formatIpv6(r.group)]),
      groups.map((g) => [MldRecordType.CHANGE_TO_EXCLUDE, 0, formatIpv6(g)]),
    );
  });

  test("the kernel's MLDv2 report (a veth capture) decodes, and ours for the same join is byte-identical", () => {
    const ip = createIpv6Header();
    assert.equal(decodeIpv6(MLD_REPORT, 14, MLD_REPORT.length - 14, ip), null);
    assert.deepEqual([ip.hopLimit, ip.routerAlert, ip.protocol], [1, 0, Ipv6Next.ICMPV6]);
    assert.equal(decodeMld(MLD_REPORT, ip.payloadOffset, ip.payloadLen, m), null);
    assert.equal(m.recordCount, 1);
    assert.deepEqual(
      [m.records[0]!.type, formatIpv6(m.records[0]!.group)],
      [MldRecordType.CHANGE_TO_EXCLUDE, 'ff02::1:ff00:1'],
    );
    const ours = new Uint8Array(ip.payloadLen);
    const n = encodeMldReport(
      MldRecordType.CHANGE_TO_EXCLUDE,
      [m.records[0]!.group],
      ours,
      0,
      ip.src,
      ip.dst,
    );
    assert.deepEqual(
      ours.subarray(0, n),
      MLD_REPORT.subarray(ip.payloadOffset, ip.payloadOffset + ip.payloadLen),
    );
  });

  test('queries: 24 bytes is MLDv1, 28 + 16 per source is MLDv2 with its fields', () => {
    const buf = new Uint8Array(200);
    let n = encodeMldQuery({ version: 1, maxResponseMs: 10_000, group: new Uint8Array(16) }, buf, 0, LL, LL);
    assert.equal(n, 24);
    assert.equal(decodeMld(buf, 0, n, m), null);
    assert.deepEqual([m.version, m.maxResponseMs, formatIpv6(m.group)], [1, 10_000, '::']);
    const sources = [parseIpv6('fd00::1'), parseIpv6('fd00::2')];
    n = encodeMldQuery({ maxResponseMs: 1234, group: group(7), qrv: 3, qqiS: 60, sources }, buf, 0, LL, LL);
    assert.equal(n, 28 + 32);
    assert.equal(decodeMld(buf, 0, n, m), null);
    assert.deepEqual(
      [m.version, m.maxResponseMs, m.qrv, m.qqiS, m.sourceCount, formatIpv6(m.group)],
      [2, 1234, 3, 60, 2, 'ff02::1:ff00:7'],
    );
    assert.deepEqual(
      m.sources.slice(0, 2).map((s) => formatIpv6(s)),
      ['fd00::1', 'fd00::2'],
    );
    // Any other length is neither version (8.1); sources past the end are truncation.
    assert.equal(decodeMld(buf, 0, 26, m), 'bad-length');
    assert.equal(decodeMld(buf, 0, 28 + 16, m), 'truncated');
  });

  test('the floating-point forms of the maximum response code and QQIC (5.1.3, 5.1.9)', () => {
    assert.equal(mldMaxResponseMs(0x7fff), 32767);
    assert.equal(mldMaxResponseMs(0x8000), 0x1000 << 3);
    assert.equal(mldMaxResponseMs(0xffff), 0x1fff << 10);
    assert.equal(mldQqiSeconds(127), 127);
    assert.equal(mldQqiSeconds(0x80), 0x10 << 3);
    assert.equal(mldQqiSeconds(0xff), 0x1f << 10);
    const buf = new Uint8Array(28);
    encodeMldQuery({ maxResponseMs: 0, group: new Uint8Array(16) }, buf, 0, LL, LL);
    buf[4] = 0x80;
    buf[5] = 0x01;
    buf[25] = 0x81;
    assert.equal(decodeMld(buf, 0, 28, m), null);
    assert.equal(m.maxResponseMs, 0x1001 << 3);
    assert.equal(m.qqiS, 0x11 << 3);
  });

  test('MLDv1 report and done carry their group', () => {
    const buf = new Uint8Array(24);
    for (const t of [MldType.V1_REPORT, MldType.V1_DONE] as const) {
      assert.equal(encodeMldV1(t, group(5), buf, 0, LL, group(5)), 24);
      assert.ok(l4Checksum6Ok(buf, 0, 24, LL, group(5), Ipv6Next.ICMPV6));
      assert.equal(decodeMld(buf, 0, 24, m), null);
      assert.deepEqual([m.type, m.version, formatIpv6(m.group)], [t, 1, 'ff02::1:ff00:5']);
      assert.equal(decodeMld(buf, 0, 23, m), 'truncated');
    }
  });

  test('a report of more records than kept counts the rest; a record past the end is truncation', () => {
    const groups = Array.from({ length: MLD_MAX_RECORDS + 5 }, (_, i) => group(i));
    const buf = new Uint8Array(mldReportLength(groups.length));
    const n = encodeMldReport(MldRecordType.MODE_IS_EXCLUDE, groups, buf, 0, LL, ROUTERS);
    assert.equal(decodeMld(buf, 0, n, m), null);
    assert.equal(m.recordCount, MLD_MAX_RECORDS);
    assert.equal(m.recordsDropped, 5);
    assert.equal(decodeMld(buf, 0, n - 1, m), 'truncated');
    // A record claiming sources it does not carry.
    buf[8 + 3] = 1;
    assert.equal(decodeMld(buf, 0, mldReportLength(1), m), 'truncated');
  });

  test('hostile input: any bytes at any offset never throw, and what is kept lies inside', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 1500 }),
        fc.integer({ min: -4, max: 1504 }),
        fc.integer({ min: -4, max: 1504 }),
        (buf, off, len) => {
          const r = decodeMld(buf, off, len, m);
          if (r !== null) {
            assert.ok(DECODE_ERRORS.has(r), r);
            return;
          }
          assert.ok(off >= 0 && off + len <= buf.length);
          assert.ok(m.recordCount <= MLD_MAX_RECORDS && m.recordCount + m.recordsDropped <= len / 20);
          assert.ok(m.sourceCount * 16 <= len && MLD_MAX_SOURCES === m.sources.length);
        },
      ),
      { numRuns: 3000 },
    );
  });

  test('hostile input: mutated reports and queries decode or are refused, never throw', () => {
    const report = new Uint8Array(mldReportLength(4));
    encodeMldReport(MldRecordType.CHANGE_TO_EXCLUDE, [1, 2, 3, 4].map(group), report, 0, LL, ROUTERS);
    const query = new Uint8Array(28 + 32);
    encodeMldQuery({ maxResponseMs: 1000, group: group(1), sources: [LL, ROUTERS] }, query, 0, LL, LL);
    // Steering bytes: type, record count, a record's aux length and source count, query sources.
    const steer = [[0], [6, 7], [9, 10, 11, 29, 30, 31], [26, 27]];
    fc.assert(
      fc.property(fc.constantFrom(report, query), fc.array(mutations(steer), { maxLength: 6 }), (f, muts) => {
        const x = mutate(f, muts);
        const r = decodeMld(x, 0, x.length, m);
        if (r !== null) assert.ok(DECODE_ERRORS.has(r), r);
      }),
      { numRuns: 3000 },
    );
  });
});
