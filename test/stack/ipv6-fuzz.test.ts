import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { SeededRandom } from '../../src/core/random.ts';
import { ipv6MulticastMac, linkLocalFromMac, parseIpv6, writeMac } from '../../src/wire/addr.ts';
import { writeL4Checksum6 } from '../../src/wire/checksum.ts';
import { createIpv6Header, decodeIpv6, encodeIpv6, encodeIpv6Fragment } from '../../src/wire/ipv6.ts';
import { encodeNd } from '../../src/wire/ndp.ts';
import { FRAMES6 } from '../wire/fixtures6.ts';
import { Hub, makeStack } from './harness.ts';

const FRAMES = 50_000;
/** The kernel fixtures' peer, fd00::2 / 02:00:00:00:00:02, is the stack under test. */
const MAC = 0x020000000002;
const ROUTER_MAC = 0x0200000000fe;

/** A router advertisement with a prefix drawn from `r`: each one is a new address to form. */
function raSeed(r: SeededRandom): Uint8Array {
  const src = linkLocalFromMac(ROUTER_MAC);
  const dst = parseIpv6('ff02::1');
  const prefix = parseIpv6('2001:db8::');
  prefix[4] = r.u32() & 0xff;
  prefix[5] = r.u32() & 0xff;
  const body = new Uint8Array(16 + 8 + 32);
  const n = encodeNd(
    {
      type: 134,
      curHopLimit: 64,
      routerLifetime: 600,
      sourceLla: ROUTER_MAC,
      prefixes: [
        {
          prefixLength: 64,
          onLink: true,
          autonomous: true,
          validLifetime: 600,
          preferredLifetime: 300,
          prefix,
        },
      ],
    },
    body,
    0,
    src,
    dst,
  );
  const f = new Uint8Array(54 + n);
  writeMac(f, 0, ipv6MulticastMac(dst));
  writeMac(f, 6, ROUTER_MAC);
  f[12] = 0x86;
  f[13] = 0xdd;
  const h = createIpv6Header();
  h.payloadLength = n;
  h.nextHeader = 58;
  h.hopLimit = 255;
  h.src.set(src);
  h.dst.set(dst);
  encodeIpv6(h, f, 14);
  f.set(body.subarray(0, n), 54);
  return f;
}

/**
 * A fragment of a 4000-byte echo request from fd00::1 to fd00::2: one of 256 identifications and
 * any 8-byte-aligned offset, so datagrams fill, overlap, complete and time out.
 */
function fragSeed(r: SeededRandom): Uint8Array {
  const n = 8 * (1 + (r.u32() % 150));
  const off = 8 * (r.u32() % 500);
  const f = new Uint8Array(62 + n);
  f.set(FRAMES6[5]!.subarray(0, 54));
  f[18] = (8 + n) >>> 8;
  f[19] = (8 + n) & 0xff;
  f[20] = 44;
  encodeIpv6Fragment(f, 54, 58, off, off + n < 4008, r.u32() % 256);
  for (let i = 62; i < f.length; i++) f[i] = r.u32() & 0xff;
  if (off === 0) f.set(FRAMES6[5]!.subarray(54, 62), 62);
  return f;
}

const ip = createIpv6Header();

/** Mutate a copy, then often repair the upper-layer checksum so that ND and ICMPv6 logic see it. */
function mutate(base: Uint8Array, r: SeededRandom): Uint8Array {
  let f = base.slice();
  const n = 1 + (r.u32() % 4);
  for (let k = 0; k < n && f.length > 0; k++) {
    const at = 14 + (r.u32() % Math.max(1, f.length - 14));
    switch (r.u32() % 4) {
      case 0:
        f[at % f.length]! ^= 1 << (r.u32() % 8);
        break;
      case 1:
        f[at % f.length] = r.u32() & 0xff;
        break;
      case 2:
        f = f.slice(0, r.u32() % (f.length + 1));
        break;
      default: {
        const e = new Uint8Array(f.length + (r.u32() % 48));
        e.set(f);
        for (let i = f.length; i < e.length; i++) e[i] = r.u32() & 0xff;
        f = e;
      }
    }
  }
  if (r.float() < 0.7 && f.length > 54 && decodeIpv6(f, 14, f.length - 14, ip) === null && !ip.fragment) {
    if ([6, 17, 58].includes(ip.protocol) && ip.payloadLen >= 8) {
      writeL4Checksum6(f, ip.payloadOffset, ip.payloadLen, ip.src, ip.dst, ip.protocol);
    }
  }
  return f;
}

test('50,000 mutated IPv6 frames: no exception, bounded tables, every frame accounted for', () => {
  const clock = new VirtualClock();
  const r = new SeededRandom(20261203);
  const hub = new Hub(clock);
  hub.record = false;
  const port = hub.port('b');
  const b = makeStack(clock, r, { arp: { maxEntries: 256 }, ipv6: { reassembly: { maxBytes: 1 << 20 } } });
  const iface = b.addInterface(port, { mac: MAC, ip: ['10.0.0.2/24', 'fd00::2/64'] });
  clock.advance(1500);
  const base = [...FRAMES6];
  let heapAfterWarmup = 0;
  for (let i = 0; i < FRAMES; i++) {
    const dice = r.float();
    const seed = dice < 0.2 ? raSeed(r) : dice < 0.35 ? fragSeed(r) : base[r.u32() % base.length]!;
    port.receive(r.float() < 0.15 ? seed : mutate(seed, r));
    if (i % 500 === 499) clock.advance(1000);
    if (i === 5_000) heapAfterWarmup = process.memoryUsage().heapUsed;
  }
  clock.advance(100);
  const c = b.counters;
  assert.equal(c.get('rx.frames'), FRAMES);
  const perDatagram = c.get('drop.ipv6.frag-timeout') + c.get('drop.ipv6.frag-evicted');
  assert.equal(
    c.sum('accept.') + c.sum('drop.') - c.sum('drop.tcp.') - perDatagram,
    FRAMES,
    JSON.stringify(c.snapshot()),
  );
  for (const p of ['accept.nd.', 'accept.icmpv6.', 'drop.ipv6.', 'drop.icmpv6.', 'drop.nd.']) {
    assert.ok(c.sum(p) > 0, `no ${p} counted`);
  }
  assert.ok(c.get('accept.nd.ra') > 1000);
  assert.ok(b.neighbors.size <= 256);
  assert.ok(b.ip6.reassembly.heldBytes <= 1 << 20);
  assert.ok(
    c.get('accept.ipv6.frag-queued') > 500 && c.get('drop.ipv6.frag-overlap') > 0,
    JSON.stringify(c.snapshot()),
  );
  assert.ok(b.ip6.addresses(iface).length <= 16, 'forged prefixes cannot add addresses without bound');
  assert.ok(b.ip6.routers(iface).length <= 8);
  const growth = process.memoryUsage().heapUsed - heapAfterWarmup;
  assert.ok(growth < 64 * 1024 * 1024, `heap grew by ${growth} bytes`);
});
