import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Ipv4Output } from '../../src/stack/ip-output.ts';
import { createNeighborState } from '../../src/state/neighbor-state.ts';
import { createPathState } from '../../src/state/path-state.ts';
import { createIpv4Header, decodeIpv4, IpProto } from '../../src/wire/ipv4.ts';
import { createTcpHeader, encodeTcpHeader } from '../../src/wire/tcp.ts';

const LOCAL = 0x0a000001;
const REMOTE = 0x0a000002;

function path(remote = REMOTE) {
  const nb = createNeighborState({ ip: remote, srcMac: 0x020000000001, vlanId: -1 }, 0x020000000002);
  const p = createPathState({ localIp: LOCAL, remoteIp: remote }, nb, 0, 1500, 61);
  p.cached.tos = 0x10;
  return p;
}

function decoded(buf: Uint8Array, ip: number) {
  const h = createIpv4Header();
  assert.equal(decodeIpv4(buf, ip, buf.length - ip, h), null);
  return h;
}

/** A buffer with a 20-byte TCP header (no options) at ip + 20, as a transport leaves it. */
function withTcp(ip: number, size: number): Uint8Array {
  const buf = new Uint8Array(size);
  encodeTcpHeader(createTcpHeader(), buf, ip + 20);
  return buf;
}

describe('Ipv4Output', () => {
  test('writes a valid header from the path, with consecutive ids and per-packet overrides', () => {
    const out = new Ipv4Output(0x5eed);
    const p = path();
    const buf = new Uint8Array(14 + 20 + 100);
    assert.equal(out.write(buf, 14, p, IpProto.UDP, 120, false), 20);
    let h = decoded(buf, 14);
    const first = h.id;
    assert.deepEqual(
      [h.src, h.dst, h.ttl, h.tos, h.protocol, h.totalLength, h.df],
      [LOCAL, REMOTE, 61, 0x10, IpProto.UDP, 120, false],
    );
    out.write(buf, 14, p, IpProto.TCP, 40, true, 1, 0);
    h = decoded(buf, 14);
    assert.deepEqual(
      [h.id, h.ttl, h.tos, h.df],
      [(first + 1) & 0xffff, 1, 0, true],
      'TTL and TOS overridden',
    );
    for (let i = 0; i < 0xffff; i++) out.write(buf, 14, p, IpProto.TCP, 40, true);
    assert.equal(decoded(buf, 14).id, first, 'the id wraps after 65536 datagrams');
  });

  test('each destination has a counter of its own, from a keyed start (RFC 7739)', () => {
    const out = new Ipv4Output(0x5eed);
    const buf = new Uint8Array(14 + 40);
    const idTo = (o: Ipv4Output, remote: number): number => {
      o.write(buf, 14, path(remote), IpProto.TCP, 40, true);
      return decoded(buf, 14).id;
    };
    const a0 = idTo(out, REMOTE);
    for (let i = 0; i < 9; i++) idTo(out, REMOTE);
    const b0 = idTo(out, REMOTE + 1);
    assert.equal(idTo(out, REMOTE), (a0 + 10) & 0xffff, 'sending elsewhere did not advance this counter');
    assert.notEqual(b0, (a0 + 10) & 0xffff, 'a new destination does not continue another one');
    // Starts spread over the id space, and a sender with another key starts elsewhere.
    const starts = new Set(
      Array.from({ length: 256 }, (_, i) => idTo(new Ipv4Output(0x5eed), REMOTE + 100 + i)),
    );
    assert.ok(starts.size > 240, `${starts.size} distinct starts for 256 destinations`);
    assert.notEqual(idTo(new Ipv4Output(0x5eee), REMOTE), a0, 'another key, another start');
    assert.equal(idTo(new Ipv4Output(0x5eed), REMOTE), a0, 'the same key, the same start');
  });

  test('a super-segment takes one id per segment the device will cut', () => {
    const out = new Ipv4Output(100);
    const p = path();
    const gso = { gsoSize: 0, csumStart: 0, csumOffset: 0 };
    const buf = withTcp(18, 18 + 65535);
    // 10 segments of 1448 bytes plus a short one: 11 segments, ids x..x+10.
    const l4Len = 20 + 10 * 1448 + 500;
    assert.ok(out.writeOffloaded(buf, 18, p, l4Len, 1448, 1500, 65535, gso));
    const x = decoded(buf, 18).id;
    assert.deepEqual(gso, { gsoSize: 1448, csumStart: 38, csumOffset: 16 });
    out.write(buf, 18, p, IpProto.TCP, 40, true);
    assert.equal(decoded(buf, 18).id, (x + 11) & 0xffff);
    // One that fits the MTU is not cut and takes one id.
    assert.ok(out.writeOffloaded(buf, 18, p, 20 + 1000, 1448, 1500, 65535, gso));
    assert.equal(gso.gsoSize, 0);
    assert.equal(decoded(buf, 18).id, (x + 12) & 0xffff);
  });

  test('refuses what cannot be offloaded, writing nothing and taking no id', () => {
    const out = new Ipv4Output(7);
    const p = path();
    const buf0 = withTcp(14, 14 + 40);
    out.write(buf0, 14, p, IpProto.TCP, 40, true);
    const x = decoded(buf0, 14).id;
    const gso = { gsoSize: 0, csumStart: 0, csumOffset: 0 };
    const buf = withTcp(14, 14 + 65535);
    const before = buf.slice(14, 34);
    assert.equal(out.writeOffloaded(buf, 14, p, 19, 1448, 1500, 65535, gso), false, 'no whole TCP header');
    assert.equal(out.writeOffloaded(buf, 14, p, 4000, 1448, 1500, 1500, gso), false, 'above maxPacket');
    assert.equal(
      out.writeOffloaded(buf, 14, p, 4000, 1461, 1500, 65535, gso),
      false,
      'segments above the MTU',
    );
    assert.equal(out.writeOffloaded(buf, 14, p, 4000, 0, 1500, 65535, gso), false, 'no segment size');
    const small = withTcp(14, 14 + 20 + 100);
    assert.equal(out.writeOffloaded(small, 14, p, 200, 1448, 1500, 65535, gso), false, 'past the buffer');
    assert.deepEqual(buf.slice(14, 34), before);
    out.write(buf, 14, p, IpProto.TCP, 40, true);
    assert.equal(decoded(buf, 14).id, (x + 1) & 0xffff);
  });
});
