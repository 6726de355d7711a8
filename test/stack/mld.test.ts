/**
 * MLD for the groups the host joins (RFC 3810, src/stack/mld.ts): reports on the wire as the
 * decoder of src/wire/mld.ts reads them, before duplicate address detection's solicitations
 * (RFC 4862 5.4.2), repeated per the robustness variable, on leave, and in answer to queries.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { SeededRandom } from '../../src/core/random.ts';
import type { Stack } from '../../src/stack/stack.ts';
import {
  formatIpv6,
  ipv6MulticastMac,
  linkLocalFromMac,
  parseIpv6,
  readMac,
  solicitedNodeAddress,
  writeMac,
} from '../../src/wire/addr.ts';
import { writeL4Checksum6 } from '../../src/wire/checksum.ts';
import { EtherType } from '../../src/wire/ethernet.ts';
import { createIcmpv6Header, decodeIcmpv6, Icmpv6Type } from '../../src/wire/icmpv6.ts';
import { createIpv6Header, decodeIpv6, encodeIpv6, Ipv6Next } from '../../src/wire/ipv6.ts';
import {
  createMldMessage,
  decodeMld,
  encodeMldQuery,
  isMldType,
  type MldQueryEncode,
  MldRecordType,
  MldType,
} from '../../src/wire/mld.ts';
import { createNdMessage, decodeNd, encodeNd } from '../../src/wire/ndp.ts';
import { etherType, Hub, type HubPort, MAC_A, makeStack } from './harness.ts';

const ROUTER_MAC = 0x0200000000fe;
const ROUTER_LL = linkLocalFromMac(ROUTER_MAC);
const ALL_NODES = parseIpv6('ff02::1');
const LL_A = linkLocalFromMac(MAC_A);
/** Two addresses whose solicited-node groups differ from the link-local's (ff02::1:ff00:1). */
const STATIC = ['fd00::abcd', 'fd00::1:beef'];
const GROUPS = [LL_A, ...STATIC.map(parseIpv6)].map((a) => formatIpv6(solicitedNodeAddress(a)));

interface Rig {
  clock: VirtualClock;
  hub: Hub;
  a: Stack;
  peer: HubPort;
}

function rig(ipv6: object = {}, seed = 7, extra: string[] = []): Rig {
  const clock = new VirtualClock();
  const hub = new Hub(clock);
  const port = hub.port('a');
  const peer = hub.port('peer');
  const a = makeStack(clock, new SeededRandom(seed), { name: 'a', ipv6 });
  const ip = ['10.0.0.1/24', ...[...STATIC, ...extra].map((s) => `${s}/64`)];
  a.addInterface(port, { mac: MAC_A, ip });
  return { clock, hub, a, peer };
}

/** What `a` sent, in order: MLD messages decoded and checked, ND messages named, the rest skipped. */
type Out =
  | {
      kind: 'mld';
      src: string;
      dst: string;
      dstMac: number;
      type: number;
      records: Array<[number, string]>;
      group: string;
      at: number;
    }
  | { kind: 'nd'; type: number; target: string; src: string; at: number };

function sent(r: Rig, from = 0): Out[] {
  const out: Out[] = [];
  for (const { from: who, frame } of r.hub.log.slice(from)) {
    if (who !== 'a' || etherType(frame) !== EtherType.IPV6) continue;
    const ip = createIpv6Header();
    assert.equal(decodeIpv6(frame, 14, frame.length - 14, ip), null);
    if (ip.protocol !== Ipv6Next.ICMPV6) continue;
    const icmp = createIcmpv6Header();
    assert.equal(decodeIcmpv6(frame, ip.payloadOffset, ip.payloadLen, ip.src, ip.dst, icmp), null);
    const at = out.length;
    if (isMldType(icmp.type)) {
      // RFC 3810 5: hop limit 1, router alert (value 0, MLD) in a hop-by-hop header.
      assert.equal(ip.hopLimit, 1);
      assert.equal(ip.nextHeader, Ipv6Next.HOP_BY_HOP);
      assert.equal(ip.routerAlert, 0);
      const m = createMldMessage();
      assert.equal(decodeMld(frame, ip.payloadOffset, ip.payloadLen, m), null);
      const src = formatIpv6(ip.src);
      assert.ok(src === '::' || src.startsWith('fe80:'), `source ${src} is :: or link-local`);
      const records = m.records
        .slice(0, m.recordCount)
        .map((x) => [x.type, formatIpv6(x.group)] as [number, string]);
      for (const x of m.records.slice(0, m.recordCount)) assert.equal(x.sourceCount, 0);
      out.push({
        kind: 'mld',
        src,
        dst: formatIpv6(ip.dst),
        dstMac: readMac(frame, 0),
        type: icmp.type,
        records,
        group: formatIpv6(m.group),
        at,
      });
    } else if (icmp.type === Icmpv6Type.NEIGHBOR_SOLICITATION) {
      const nd = createNdMessage();
      assert.equal(decodeNd(frame, ip.payloadOffset, ip.payloadLen, nd), null);
      out.push({ kind: 'nd', type: icmp.type, target: formatIpv6(nd.target), src: formatIpv6(ip.src), at });
    }
  }
  return out;
}

const reports = (o: Out[]) => o.filter((x) => x.kind === 'mld');

interface QueryFrame {
  src?: Uint8Array;
  dst?: Uint8Array;
  hopLimit?: number;
  routerAlert?: boolean;
}

/** A query as a querier sends it: link-local source, hop limit 1, router alert. */
function queryFrame(q: MldQueryEncode, o: QueryFrame = {}): Uint8Array {
  const src = o.src ?? ROUTER_LL;
  const dst = o.dst ?? ALL_NODES;
  const body = new Uint8Array(28 + 16 * (q.sources?.length ?? 0));
  const n = encodeMldQuery(q, body, 0, src, dst);
  const ra = o.routerAlert ?? true;
  const hbh = ra ? [Ipv6Next.ICMPV6, 0, 5, 2, 0, 0, 1, 0] : [Ipv6Next.ICMPV6, 0, 1, 4, 0, 0, 0, 0];
  const f = new Uint8Array(14 + 40 + 8 + n);
  writeMac(f, 0, ipv6MulticastMac(dst));
  writeMac(f, 6, ROUTER_MAC);
  f[12] = 0x86;
  f[13] = 0xdd;
  const h = createIpv6Header();
  h.payloadLength = 8 + n;
  h.nextHeader = Ipv6Next.HOP_BY_HOP;
  h.hopLimit = o.hopLimit ?? 1;
  h.src.set(src);
  h.dst.set(dst);
  encodeIpv6(h, f, 14);
  f.set(hbh, 54);
  f.set(body.subarray(0, n), 62);
  return f;
}

function inject(r: Rig, f: Uint8Array): void {
  r.peer.send(f);
  r.clock.advance(0);
}

/** DAD done, the join reports all retransmitted; the log starts afresh. */
function settle(r: Rig): void {
  r.clock.advance(3000);
  r.hub.log.length = 0;
}

describe('MLD: reports for the groups joined (RFC 3810)', () => {
  test('each solicited-node group is reported (TO_EX {}) before the DAD probe for its address, from ::', () => {
    const r = rig();
    r.clock.advance(0);
    const out = sent(r);
    for (const [i, addr] of [formatIpv6(LL_A), ...STATIC].entries()) {
      const probe = out.find((x) => x.kind === 'nd' && x.target === addr);
      assert.ok(probe, `a DAD probe for ${addr}`);
      const rep = out.find((x) => x.kind === 'mld' && x.records.some(([, g]) => g === GROUPS[i]));
      assert.ok(
        rep && rep.at < probe.at,
        `the report of ${GROUPS[i]} precedes the probe:\n${JSON.stringify(out)}`,
      );
      assert.equal(rep.kind === 'mld' && rep.src, '::', 'no usable link-local address yet (RFC 3810 5.2.13)');
    }
    for (const m of reports(out)) {
      assert.equal(m.type, MldType.V2_REPORT);
      assert.equal(m.dst, 'ff02::16');
      assert.equal(m.dstMac, 0x333300000016);
      for (const [t, g] of m.records) {
        assert.equal(t, MldRecordType.CHANGE_TO_EXCLUDE);
        assert.notEqual(g, 'ff02::1', 'all-nodes is never reported');
      }
    }
    assert.deepEqual(r.a.ip6.mld.groups(r.a.interfaces[0]!).sort(), [...GROUPS].sort());
  });

  test('each join is reported exactly robustness times within the unsolicited report interval', () => {
    for (const robustness of [1, 2, 3]) {
      const r = rig({ mld: { robustness, unsolicitedIntervalMs: 1000 } });
      r.clock.advance(0);
      const first = r.clock.now();
      r.clock.advance(robustness * 1000 + 10);
      const times = new Map<string, number>();
      for (const m of reports(sent(r))) {
        for (const [, g] of m.records) times.set(g, (times.get(g) ?? 0) + 1);
      }
      assert.deepEqual([...times.keys()].sort(), [...GROUPS].sort());
      for (const [g, n] of times)
        assert.equal(n, robustness, `${g} reported ${n} times (robustness ${robustness})`);
      // Nothing more later: the retransmissions are done.
      const before = r.hub.log.length;
      r.clock.advance(10_000);
      assert.equal(reports(sent(r, before)).length, 0);
      assert.ok(r.clock.now() > first);
    }
  });

  test('once DAD is done, reports come from the link-local address', () => {
    const r = rig();
    settle(r);
    inject(r, queryFrame({ maxResponseMs: 500, group: new Uint8Array(16) }));
    r.clock.advance(600);
    const out = reports(sent(r));
    assert.equal(out.length, 1);
    assert.equal(out[0]!.kind === 'mld' && out[0]!.src, formatIpv6(LL_A));
  });

  test('a general query is answered within its maximum response delay with every group (IS_EX {})', () => {
    for (const seed of [1, 2, 3, 4]) {
      const r = rig({}, seed);
      settle(r);
      inject(r, queryFrame({ maxResponseMs: 2000, group: new Uint8Array(16), qrv: 2 }));
      r.clock.advance(2001);
      const out = reports(sent(r));
      assert.equal(out.length, 1, `one answer (seed ${seed})`);
      const m = out[0]!;
      assert.ok(m.kind === 'mld');
      assert.deepEqual(
        m.records.map(([t]) => t),
        GROUPS.map(() => MldRecordType.MODE_IS_EXCLUDE),
      );
      assert.deepEqual(m.records.map(([, g]) => g).sort(), [...GROUPS].sort());
      assert.equal(r.a.counters.get('accept.mld.general-query'), 1);
    }
  });

  test('a multicast address-specific query is answered for that group only, and only if joined', () => {
    const r = rig();
    settle(r);
    const g = parseIpv6(GROUPS[1]!);
    inject(r, queryFrame({ maxResponseMs: 1000, group: g }, { dst: g }));
    r.clock.advance(1001);
    const out = reports(sent(r));
    assert.equal(out.length, 1);
    assert.ok(out[0]!.kind === 'mld');
    assert.deepEqual(out[0]!.records, [[MldRecordType.MODE_IS_EXCLUDE, GROUPS[1]]]);
    // A group we never joined (all-nodes accepts the frame, but the query is not about us).
    const from = r.hub.log.length;
    inject(r, queryFrame({ maxResponseMs: 1000, group: parseIpv6('ff05::1:3') }));
    r.clock.advance(1001);
    assert.equal(reports(sent(r, from)).length, 0);
  });

  test('queries that fail RFC 3810 validation are dropped and counted, never answered', () => {
    const r = rig();
    settle(r);
    const q = { maxResponseMs: 100, group: new Uint8Array(16) };
    inject(r, queryFrame(q, { src: parseIpv6('fd00::fe') }));
    inject(r, queryFrame(q, { hopLimit: 2 }));
    inject(r, queryFrame(q, { routerAlert: false }));
    r.clock.advance(200);
    assert.equal(reports(sent(r)).length, 0);
    assert.equal(r.a.counters.get('drop.mld.bad-query'), 3);
    // 26 bytes: neither an MLDv1 (24) nor an MLDv2 (28 or more) query (RFC 3810 8.1).
    const f = queryFrame(q);
    const cut = f.slice(0, 14 + 40 + 8 + 26);
    cut[14 + 5] = 8 + 26;
    cut[62 + 2] = 0;
    cut[62 + 3] = 0;
    writeL4Checksum6(cut, 62, 26, ROUTER_LL, ALL_NODES, Ipv6Next.ICMPV6);
    inject(r, cut);
    assert.equal(r.a.counters.get('drop.mld.bad-length'), 1);
  });

  test('an MLDv1 query switches to MLDv1: v1 reports to the group, and a leave is a v1 done', () => {
    const r = rig({}, 7, ['fd00::2:1234']);
    r.clock.advance(0);
    r.hub.log.length = 0;
    inject(r, queryFrame({ version: 1, maxResponseMs: 100, group: new Uint8Array(16) }));
    r.clock.advance(101);
    const out = reports(sent(r));
    assert.deepEqual(
      out.map((m) => m.kind === 'mld' && [m.type, m.dst, m.group]).sort(),
      [...GROUPS, 'ff02::1:ff02:1234'].map((g) => [MldType.V1_REPORT, g, g]).sort(),
    );
    // The address found duplicate while tentative leaves its group: an MLDv1 done to all-routers.
    const from = r.hub.log.length;
    duplicateAddress(r, 'fd00::2:1234');
    const after = reports(sent(r, from));
    assert.equal(after.length, 1, JSON.stringify(after));
    const done = after[0]!;
    assert.ok(done.kind === 'mld');
    assert.equal(done.type, MldType.V1_DONE);
    assert.equal(done.dst, 'ff02::2');
    assert.equal(done.group, 'ff02::1:ff02:1234');
  });

  test('a leave is reported (TO_IN {}) robustness times; a group still held by another address is not', () => {
    const r = rig({}, 7, ['fd00::2:1234', 'fd00::1']);
    r.clock.advance(0);
    r.hub.log.length = 0;
    duplicateAddress(r, 'fd00::2:1234');
    // fd00::1 shares the link-local's group (ff02::1:ff00:1): losing it leaves nothing.
    duplicateAddress(r, 'fd00::1');
    r.clock.advance(3000);
    const out = reports(sent(r));
    const leaves = out.filter(
      (m) => m.kind === 'mld' && m.records.some(([t]) => t === MldRecordType.CHANGE_TO_INCLUDE),
    );
    assert.equal(leaves.length, 2, `TO_IN sent robustness (2) times: ${JSON.stringify(out)}`);
    for (const m of leaves) {
      assert.ok(m.kind === 'mld');
      assert.deepEqual(
        m.records.filter(([t]) => t === MldRecordType.CHANGE_TO_INCLUDE),
        [[MldRecordType.CHANGE_TO_INCLUDE, 'ff02::1:ff02:1234']],
      );
    }
    const groups = r.a.ip6.mld.groups(r.a.interfaces[0]!);
    assert.ok(!groups.includes('ff02::1:ff02:1234'));
    assert.ok(groups.includes('ff02::1:ff00:1'));
  });

  test('the link coming back reports every group again, robustness times (a bridge forgot the port)', () => {
    const r = rig();
    settle(r);
    const port = r.a.interfaces[0]!.link as HubPort;
    port.setCarrier(false);
    port.setCarrier(true);
    r.clock.advance(1001);
    const times = new Map<string, number>();
    for (const m of reports(sent(r))) {
      assert.ok(m.kind === 'mld');
      for (const [t, g] of m.records) {
        assert.equal(t, MldRecordType.CHANGE_TO_EXCLUDE);
        times.set(g, (times.get(g) ?? 0) + 1);
      }
    }
    assert.deepEqual([...times.keys()].sort(), [...GROUPS].sort());
    for (const [g, n] of times) assert.equal(n, 2, `${g} reported ${n} times`);
    assert.equal(r.a.counters.get('mld.resend'), 1);
  });

  test('MLD off: no report, no answer', () => {
    const r = rig({ mld: { enabled: false } });
    r.clock.advance(3000);
    inject(r, queryFrame({ maxResponseMs: 100, group: new Uint8Array(16) }));
    r.clock.advance(200);
    assert.equal(reports(sent(r)).length, 0);
    assert.ok(
      sent(r).some((x) => x.kind === 'nd'),
      'DAD still probes',
    );
  });
});

/** DAD finds tentative `addr` in use: another node advertises it (RFC 4862 5.4.4). */
function duplicateAddress(r: Rig, addr: string): void {
  const target = parseIpv6(addr);
  const body = new Uint8Array(32);
  const n = encodeNd(
    {
      type: Icmpv6Type.NEIGHBOR_ADVERTISEMENT,
      override: true,
      target,
      targetLla: 0x020000000077,
    },
    body,
    0,
    linkLocalFromMac(0x020000000077),
    ALL_NODES,
  );
  const f = new Uint8Array(14 + 40 + n);
  writeMac(f, 0, 0x333300000001);
  writeMac(f, 6, 0x020000000077);
  f[12] = 0x86;
  f[13] = 0xdd;
  const h = createIpv6Header();
  h.payloadLength = n;
  h.nextHeader = Ipv6Next.ICMPV6;
  h.hopLimit = 255;
  h.src.set(linkLocalFromMac(0x020000000077));
  h.dst.set(ALL_NODES);
  encodeIpv6(h, f, 14);
  f.set(body.subarray(0, n), 54);
  inject(r, f);
  const info = r.a.ip6.addresses(r.a.interfaces[0]!).find((x) => x.ip === addr);
  assert.equal(info?.state, 'duplicate', `${addr} found duplicate`);
}
