import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ConnectionError } from '../../src/core/errors.ts';
import type { IcmpErrorInfo } from '../../src/stack/ip-sender.ts';
import { IpProto } from '../../src/wire/ipv4.ts';
import fc from '../helpers/fc.ts';
import {
  bytes,
  etherType,
  fragment,
  fragmentFrame,
  IP_A,
  IP_B,
  MAC_A,
  MAC_B,
  twoHosts,
  udpFrame,
} from './harness.ts';

function frameTo(payload: Uint8Array, id = 77) {
  return udpFrame({
    dstMac: MAC_B,
    srcMac: MAC_A,
    src: IP_A,
    dst: IP_B,
    srcPort: 1000,
    dstPort: 7,
    payload,
    id,
  });
}

describe('fragmentation and reassembly', () => {
  test('an oversized UDP datagram is fragmented and reassembled', () => {
    const w = twoHosts();
    const got: Uint8Array[] = [];
    w.b.udp.bind({ port: 7 }, (d) => got.push(d));
    const data = bytes(5000);
    assert.equal(w.a.udp.bind({}, () => {}).send(data, 7, IP_B), true);
    w.clock.advance(10);
    assert.equal(got.length, 1);
    assert.deepEqual(got[0], data);
    const frags = w.hub.log.filter((e) => e.from === 'a' && etherType(e.frame) === 0x0800);
    assert.equal(frags.length, 4); // 5008 bytes in 1480-byte pieces
    for (const f of frags) assert.ok(f.frame.length - 14 <= 1500);
    assert.equal(w.b.counters.get('accept.ipv4.frag-queued'), 3);
    assert.equal(w.b.counters.get('accept.udp'), 1);
  });

  test('any arrival order and exact duplicates reassemble to the original (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 4000 }),
        fc.integer({ min: 1, max: 60 }),
        fc.array(fc.nat(), { minLength: 520, maxLength: 520 }),
        fc.array(fc.nat({ max: 600 }), { maxLength: 3 }),
        (size, units, keys, dups) => {
          const w = twoHosts();
          const got: Uint8Array[] = [];
          w.b.udp.bind({ port: 7 }, (d) => got.push(d));
          const data = bytes(size, size);
          const frags = fragmentFrame(frameTo(data), units * 8);
          const order = frags
            .map((_, i) => i)
            .sort((x, y) => keys[x % keys.length]! - keys[y % keys.length]! || x - y);
          const seq = order.map((i) => frags[i]!);
          // Duplicates of anything but the last arrival, placed before it, so it still completes.
          for (const d of dups) {
            if (order.length > 1) seq.splice(d % (seq.length - 1), 0, frags[order[d % (order.length - 1)]!]!);
          }
          for (const f of seq) w.pb.receive(f);
          assert.equal(got.length, 1);
          assert.deepEqual(got[0], data);
          assert.equal(w.b.ip.reassembly.size, 0);
          assert.equal(w.b.ip.reassembly.heldBytes, 0);
          assert.equal(w.b.counters.get('drop.ipv4.frag-duplicate'), order.length > 1 ? dups.length : 0);
        },
      ),
      { numRuns: 150 },
    );
  });

  test('a conflicting overlap discards the whole datagram and its later fragments', () => {
    const w = twoHosts();
    const got: Uint8Array[] = [];
    w.b.udp.bind({ port: 7 }, (d) => got.push(d));
    const frame = frameTo(bytes(3000));
    const frags = fragmentFrame(frame, 1000);
    w.pb.receive(frags[0]!);
    w.pb.receive(fragment(frame, 992, 16, true, 0xee)); // overlaps [992, 1008) with other bytes
    w.pb.receive(frags[1]!);
    w.pb.receive(frags[2]!);
    assert.equal(got.length, 0);
    assert.equal(w.b.counters.get('drop.ipv4.frag-overlap'), 1);
    assert.equal(w.b.counters.get('drop.ipv4.frag-poisoned'), 2);
    assert.equal(w.b.ip.reassembly.heldBytes, 64);
    // The same id may be reused once the poisoned entry has timed out.
    w.clock.advance(30_000);
    assert.equal(w.b.ip.reassembly.size, 0);
    for (const f of frags) w.pb.receive(f);
    assert.equal(got.length, 1);
  });

  test('fragments are validated', () => {
    const w = twoHosts();
    const frame = frameTo(bytes(3000));
    w.pb.receive(fragment(frame, 0, 1001, true)); // MF with a length not a multiple of 8
    w.pb.receive(fragment(frame, 65528, 16, false)); // beyond 65535
    assert.equal(w.b.counters.get('drop.ipv4.frag-bad-length'), 1);
    assert.equal(w.b.counters.get('drop.ipv4.frag-too-big'), 1);
    // Two "last" fragments that disagree on the total length.
    w.pb.receive(fragment(frame, 1000, 8, false));
    w.pb.receive(fragment(frame, 2000, 8, false));
    assert.equal(w.b.counters.get('drop.ipv4.frag-overlap'), 1);
  });

  test('timeout drops the datagram and sends time exceeded only if fragment zero arrived', () => {
    const w = twoHosts();
    const errors: ConnectionError[] = [];
    const sender = w.a.udp.bind(
      { port: 1000 },
      () => {},
      (e) => errors.push(e),
    );
    assert.equal(sender.localPort, 1000);
    const frame = frameTo(bytes(3000), 5);
    w.pb.receive(fragmentFrame(frame, 1000)[0]!);
    const other = frameTo(bytes(3000), 6);
    w.pb.receive(fragmentFrame(other, 1000)[1]!);
    w.clock.advance(29_999);
    assert.equal(w.b.counters.get('drop.ipv4.frag-timeout'), 0);
    w.clock.advance(10);
    assert.equal(w.b.counters.get('drop.ipv4.frag-timeout'), 2);
    w.clock.advance(10);
    const icmp = w.hub.log.filter(
      (e) => e.from === 'b' && etherType(e.frame) === 0x0800 && e.frame[23] === 1,
    );
    assert.equal(icmp.length, 1);
    assert.equal(icmp[0]!.frame[34], 11);
    assert.equal(icmp[0]!.frame[35], 1);
    assert.equal(w.a.counters.get('accept.icmp.error'), 1);
    assert.equal(errors.length, 1);
    assert.equal(errors[0]!.code, 'EHOSTUNREACH');
  });

  test('memory held by incomplete datagrams is bounded; the oldest are evicted', () => {
    const w = twoHosts({ reassembly: { maxBytes: 10_000 } });
    for (let id = 0; id < 100; id++) w.pb.receive(fragmentFrame(frameTo(bytes(3000), id), 1000)[0]!);
    assert.ok(w.b.ip.reassembly.heldBytes <= 10_000);
    assert.ok(w.b.ip.reassembly.size <= 10);
    assert.equal(w.b.counters.get('drop.ipv4.frag-evicted'), 100 - w.b.ip.reassembly.size);
    // The newest datagram is still there and can complete.
    const got: Uint8Array[] = [];
    w.b.udp.bind({ port: 7 }, (d) => got.push(d));
    for (const f of fragmentFrame(frameTo(bytes(3000), 99), 1000).slice(1)) w.pb.receive(f);
    assert.equal(got.length, 1);
  });
});

describe("Don't Fragment", () => {
  test('a DF packet above the MTU is not sent; the transport hears frag-needed locally', async () => {
    const w = twoHosts();
    const errs: IcmpErrorInfo[] = [];
    w.a.tcp.icmpError = (e: IcmpErrorInfo) => errs.push(e);
    const path = w.a.pathTo(IP_B)!;
    const off = w.a.ip.begin(path);
    assert.equal(off, 34);
    const buf = w.a.ip.txBuf;
    buf.fill(0, off, off + 1480);
    buf[off] = 0x12; // source port 0x1234
    buf[off + 1] = 0x34;
    buf[off + 7] = 9; // sequence number 9
    assert.equal(w.a.ip.commit(path, IpProto.TCP, 1481, true), false);
    assert.equal(errs.length, 0, 'deferred, never re-entrant');
    w.clock.advance(1);
    assert.equal(errs.length, 1);
    assert.deepEqual(
      { kind: errs[0]!.kind, mtu: errs[0]!.mtu, srcPort: errs[0]!.srcPort, seq: errs[0]!.seq },
      { kind: 'frag-needed', mtu: 1500, srcPort: 0x1234, seq: 9 },
    );
    assert.equal(w.hub.log.filter((e) => e.from === 'a' && etherType(e.frame) === 0x0800).length, 0);
    // Exactly the MTU goes.
    w.a.ip.begin(path);
    assert.equal(w.a.ip.commit(path, IpProto.TCP, 1480, true), true);
  });

  test('ping with DF above the MTU fails with EMSGSIZE; without DF it is fragmented', async () => {
    const w = twoHosts();
    const p = w.a.ping('10.0.0.2', { size: 2000, df: true });
    await assert.rejects(p, { code: 'EMSGSIZE' });
    const q = w.a.ping('10.0.0.2', { size: 2000 });
    w.clock.advance(10);
    await q;
    assert.equal(w.b.counters.get('accept.icmp.echo-request'), 1);
    assert.equal(w.a.counters.get('accept.icmp.echo-reply'), 1);
  });
});
