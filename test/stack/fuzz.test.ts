import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { SeededRandom } from '../../src/core/random.ts';
import type { Stack } from '../../src/stack/stack.ts';
import { writeMac, writeU16 } from '../../src/wire/addr.ts';
import { ARP_LENGTH, encodeArp } from '../../src/wire/arp.ts';
import { internetChecksum } from '../../src/wire/checksum.ts';
import { finishUdpChecksum } from '../../src/wire/udp.ts';
import {
  bytes,
  fragmentFrame,
  Hub,
  IP_A,
  IP_B,
  icmpMessage,
  ipFrame,
  MAC_A,
  MAC_B,
  makeStack,
  udpFrame,
} from './harness.ts';

const FRAMES = 100_000;

function arpFrame(op: number, senderIp: number, targetIp: number, dstMac: number): Uint8Array {
  const f = new Uint8Array(14 + ARP_LENGTH);
  writeMac(f, 0, dstMac);
  writeMac(f, 6, MAC_A);
  writeU16(f, 12, 0x0806);
  encodeArp({ op, senderMac: MAC_A, senderIp, targetMac: op === 2 ? MAC_B : 0, targetIp }, f, 14);
  return f;
}

function seeds(): Uint8Array[] {
  const udp = (dstPort: number, n: number) =>
    udpFrame({
      dstMac: MAC_B,
      srcMac: MAC_A,
      src: IP_A,
      dst: IP_B,
      srcPort: 999,
      dstPort,
      payload: bytes(n),
    });
  const quote = ipFrame({
    dstMac: MAC_A,
    srcMac: MAC_B,
    src: IP_B,
    dst: IP_A,
    protocol: 17,
    payload: bytes(8),
  }).slice(14);
  const icmp = (m: Uint8Array) =>
    ipFrame({ dstMac: MAC_B, srcMac: MAC_A, src: IP_A, dst: IP_B, protocol: 1, payload: m });
  const tcp = new Uint8Array(20);
  tcp[0] = 0x9c;
  tcp[3] = 80;
  tcp[12] = 0x50;
  tcp[13] = 0x02; // SYN
  return [
    arpFrame(1, IP_A, IP_B, 0xffffffffffff),
    arpFrame(2, IP_A, IP_B, MAC_B),
    arpFrame(1, IP_A, IP_A, 0xffffffffffff),
    udp(7, 40),
    udp(9, 100),
    icmp(icmpMessage(8, 0, bytes(56), 0, 1, 1)),
    icmp(icmpMessage(0, 0, bytes(56), 0, 1, 1)),
    icmp(icmpMessage(3, 4, quote, 1000)),
    icmp(icmpMessage(3, 3, quote)),
    icmp(icmpMessage(11, 0, quote)),
    ipFrame({ dstMac: MAC_B, srcMac: MAC_A, src: IP_A, dst: IP_B, protocol: 6, payload: tcp }),
    ...fragmentFrame(udp(7, 3000), 1000),
  ];
}

/** Re-seal IPv4 (and sometimes UDP) checksums so mutations reach the deeper layers too. */
function fixChecksums(f: Uint8Array, r: SeededRandom): void {
  if (f.length < 34 || f[12] !== 0x08 || f[13] !== 0x00 || f[14]! >>> 4 !== 4) return;
  const hl = (f[14]! & 15) * 4;
  if (hl < 20 || 14 + hl > f.length) return;
  f[24] = 0;
  f[25] = 0;
  const s = internetChecksum(f, 14, hl);
  f[24] = s >>> 8;
  f[25] = s & 0xff;
  const l4 = 14 + hl;
  const l4len = Math.min(((f[16]! << 8) | f[17]!) - hl, f.length - l4);
  if (f[23] === 17 && l4len >= 8 && r.float() < 0.5) {
    const ulen = (f[l4 + 4]! << 8) | f[l4 + 5]!;
    if (ulen >= 8 && ulen <= l4len) {
      const src = ((f[26]! << 24) | (f[27]! << 16) | (f[28]! << 8) | f[29]!) >>> 0;
      const dst = ((f[30]! << 24) | (f[31]! << 16) | (f[32]! << 8) | f[33]!) >>> 0;
      finishUdpChecksum(f, l4, ulen, src, dst);
    }
  }
  if (f[23] === 1 && l4len >= 8 && r.float() < 0.5) {
    f[l4 + 2] = 0;
    f[l4 + 3] = 0;
    const s2 = internetChecksum(f, l4, l4len);
    f[l4 + 2] = s2 >>> 8;
    f[l4 + 3] = s2 & 0xff;
  }
}

function mutate(seed: Uint8Array, r: SeededRandom): Uint8Array {
  const kind = r.u32() % 10;
  if (kind === 0) {
    // Pure noise, sometimes addressed to us so it gets past the MAC filter.
    const f = r.fill(new Uint8Array(r.u32() % 1600));
    if (f.length >= 6 && r.float() < 0.7) writeMac(f, 0, r.float() < 0.5 ? MAC_B : 0xffffffffffff);
    return f;
  }
  let f = seed.slice();
  if (kind === 1) f = f.subarray(0, r.u32() % (f.length + 1));
  if (kind === 2 && f.length > 14) {
    // Insert an 802.1Q tag with a random VLAN id.
    const t = new Uint8Array(f.length + 4);
    t.set(f.subarray(0, 12));
    writeU16(t, 12, 0x8100);
    writeU16(t, 14, r.u32() & 0xffff);
    t.set(f.subarray(12), 16);
    f = t;
  }
  const flips = 1 + (r.u32() % 6);
  for (let i = 0; i < flips && f.length; i++) {
    // Bias towards the headers, where the decisions are.
    const at = r.float() < 0.8 ? r.u32() % Math.min(f.length, 64) : r.u32() % f.length;
    f[at] = r.float() < 0.5 ? r.u32() & 0xff : f[at]! ^ (1 << (r.u32() % 8));
  }
  // Keep our MAC most of the time so the upper layers see traffic.
  if (f.length >= 6 && r.float() < 0.6) writeMac(f, 0, MAC_B);
  if (r.float() < 0.7) fixChecksums(f, r);
  return f;
}

function accounted(s: Stack): number {
  const c = s.counters;
  return (
    c.sum('accept.') +
    c.sum('drop.') -
    c.sum('drop.tcp.') -
    c.get('drop.ipv4.frag-timeout') -
    c.get('drop.ipv4.frag-evicted')
  );
}

test('100,000 random and mutated frames: no exception, bounded memory, every frame accounted for', () => {
  const clock = new VirtualClock();
  const r = new SeededRandom(20261125);
  const hub = new Hub(clock);
  hub.record = false;
  const port = hub.port('b');
  const b = makeStack(clock, r, { arp: { maxEntries: 256 }, reassembly: { maxBytes: 1 << 20 } });
  b.addInterface(port, { mac: MAC_B, ip: '10.0.0.2/24' });
  b.udp.bind({ port: 7 }, () => {});
  b.setDefaultGateway('10.0.0.1');
  clock.advance(1);
  const base = seeds();
  let heapAfterWarmup = 0;
  for (let i = 0; i < FRAMES; i++) {
    port.receive(mutate(base[r.u32() % base.length]!, r));
    if (i % 500 === 499) clock.advance(7);
    if (i === 10_000) heapAfterWarmup = process.memoryUsage().heapUsed;
  }
  clock.advance(100);
  assert.equal(b.counters.get('rx.frames'), FRAMES);
  assert.equal(accounted(b), FRAMES, JSON.stringify(b.counters.snapshot()));
  // Every layer saw a share of the traffic.
  for (const p of [
    'accept.arp.',
    'accept.udp',
    'accept.icmp.',
    'accept.tcp',
    'drop.eth.',
    'drop.ipv4.',
    'drop.udp.',
  ]) {
    assert.ok(b.counters.sum(p) > 0, `no ${p} counted`);
  }
  assert.ok(b.neighbors.size <= 256);
  assert.ok(b.ip.reassembly.heldBytes <= 1 << 20);
  const growth = process.memoryUsage().heapUsed - heapAfterWarmup;
  assert.ok(growth < 64 * 1024 * 1024, `heap grew by ${growth} bytes`);
});
