import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BROADCAST_MAC } from '../../src/wire/addr.ts';
import { ARP_LENGTH, ArpOp, createArpPacket, decodeArp, encodeArp } from '../../src/wire/arp.ts';
import { createEthernetHeader, decodeEthernet, EtherType, encodeEthernet } from '../../src/wire/ethernet.ts';
import fc from '../helpers/fc.ts';
import { ARP_REQUEST, HOST_IP, HOST_MAC, hex, mac, PEER_IP, TCP_SYN, u32 } from './fixtures.ts';

describe('Ethernet', () => {
  test('decodes untagged frames', () => {
    const e = createEthernetHeader();
    assert.equal(decodeEthernet(ARP_REQUEST, 0, ARP_REQUEST.length, e), null);
    assert.equal(e.dst, BROADCAST_MAC);
    assert.equal(e.src, HOST_MAC);
    assert.equal(e.etherType, EtherType.ARP);
    assert.equal(e.vlanId, -1);
    assert.equal(e.headerLength, 14);
    assert.equal(decodeEthernet(TCP_SYN, 0, TCP_SYN.length, e), null);
    assert.equal(e.etherType, EtherType.IPV4);
    assert.equal(e.dst, 0x020000000002);
  });

  test('decodes an 802.1Q tag', () => {
    const f = hex('ffffffffffff 020000000001 8100 b00a 0806');
    const e = createEthernetHeader();
    assert.equal(decodeEthernet(f, 0, f.length, e), null);
    assert.equal(e.vlanId, 10);
    assert.equal(e.pcp, 5);
    assert.equal(e.dei, true);
    assert.equal(e.etherType, EtherType.ARP);
    assert.equal(e.headerLength, 18);
    // an untagged decode into the same object clears the tag fields
    assert.equal(decodeEthernet(ARP_REQUEST, 0, ARP_REQUEST.length, e), null);
    assert.equal(e.vlanId, -1);
    assert.equal(e.pcp, 0);
    assert.equal(e.dei, false);
  });

  test('errors', () => {
    const e = createEthernetHeader();
    assert.equal(decodeEthernet(ARP_REQUEST, 0, 13, e), 'truncated');
    assert.equal(decodeEthernet(ARP_REQUEST, 30, 14, e), 'truncated'); // past the end of buf
    assert.equal(decodeEthernet(hex('ffffffffffff 020000000001 8100 b00a'), 0, 16, e), 'truncated');
    assert.equal(decodeEthernet(hex('ffffffffffff 020000000001 0040'), 0, 14, e), 'unsupported');
    assert.equal(
      decodeEthernet(hex('ffffffffffff 020000000001 8100 0001 8100 0002 0800'), 0, 22, e),
      'unsupported',
    );
  });

  test('encode/decode round-trip, tagged and untagged', () => {
    const enc = createEthernetHeader();
    const dec = createEthernetHeader();
    const buf = new Uint8Array(24);
    const tag = fc.option(
      fc.record({
        vlanId: fc.integer({ min: 0, max: 4095 }),
        pcp: fc.integer({ min: 0, max: 7 }),
        dei: fc.boolean(),
      }),
      { nil: null },
    );
    const etherType = fc.integer({ min: 0x0600, max: 0xffff }).filter((t) => t !== EtherType.VLAN);
    fc.assert(
      fc.property(mac, mac, tag, etherType, fc.integer({ min: 0, max: 6 }), (dst, src, t, type, off) => {
        Object.assign(enc, {
          dst,
          src,
          etherType: type,
          vlanId: t?.vlanId ?? -1,
          pcp: t?.pcp ?? 0,
          dei: t?.dei ?? false,
        });
        const hl = encodeEthernet(enc, buf, off);
        assert.equal(hl, t ? 18 : 14);
        assert.equal(decodeEthernet(buf, off, hl, dec), null);
        assert.deepEqual(dec, enc);
      }),
    );
  });
});

describe('ARP', () => {
  test('decodes a real request', () => {
    const a = createArpPacket();
    assert.equal(decodeArp(ARP_REQUEST, 14, ARP_REQUEST.length - 14, a), null);
    assert.deepEqual(a, {
      op: ArpOp.REQUEST,
      senderMac: HOST_MAC,
      senderIp: HOST_IP,
      targetMac: 0,
      targetIp: PEER_IP,
    });
  });

  test('encodes the same bytes as the kernel', () => {
    const out = new Uint8Array(ARP_LENGTH);
    const n = encodeArp(
      { op: ArpOp.REQUEST, senderMac: HOST_MAC, senderIp: HOST_IP, targetMac: 0, targetIp: PEER_IP },
      out,
      0,
    );
    assert.equal(n, 28);
    assert.deepEqual(out, ARP_REQUEST.subarray(14));
  });

  test('errors', () => {
    const a = createArpPacket();
    assert.equal(decodeArp(ARP_REQUEST, 14, 27, a), 'truncated');
    const mutate = (i: number, v: number) => {
      const b = ARP_REQUEST.slice(14);
      b[i] = v;
      return decodeArp(b, 0, b.length, a);
    };
    assert.equal(mutate(1, 6), 'unsupported'); // hardware type IEEE 802
    assert.equal(mutate(2, 0x86), 'unsupported'); // protocol type
    assert.equal(mutate(4, 8), 'unsupported'); // hardware length
    assert.equal(mutate(5, 16), 'unsupported'); // protocol length
    assert.equal(mutate(7, 3), 'bad-type'); // RARP request
    assert.equal(mutate(7, 0), 'bad-type');
    assert.equal(mutate(7, 2), null);
    assert.equal(a.op, ArpOp.REPLY);
  });

  test('round-trip', () => {
    const dec = createArpPacket();
    const buf = new Uint8Array(40);
    fc.assert(
      fc.property(
        fc.constantFrom(1, 2),
        mac,
        u32,
        mac,
        u32,
        fc.integer({ min: 0, max: 12 }),
        (op, sm, si, tm, ti, off) => {
          const p = { op, senderMac: sm, senderIp: si, targetMac: tm, targetIp: ti };
          assert.equal(encodeArp(p, buf, off), ARP_LENGTH);
          assert.equal(decodeArp(buf, off, ARP_LENGTH, dec), null);
          assert.deepEqual(dec, p);
        },
      ),
    );
  });
});
