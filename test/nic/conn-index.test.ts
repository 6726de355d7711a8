import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ConnKey } from '../../src/nic/nic.ts';
import { ConnIndex } from '../../src/nic/worker/conn-index.ts';

/** An Ethernet + IPv4 + TCP frame (no options) from (srcIp, sport) to (dstIp, dport). */
function frame(srcIp: number, sport: number, dstIp: number, dport: number, vlan = false): Uint8Array {
  const ip = vlan ? 18 : 14;
  const f = new Uint8Array(ip + 40);
  if (vlan) {
    f[12] = 0x81;
    f[16] = 0x08;
  } else f[12] = 0x08;
  f[ip] = 0x45;
  f[ip + 9] = 6;
  const dv = new DataView(f.buffer);
  dv.setUint32(ip + 12, srcIp >>> 0);
  dv.setUint32(ip + 16, dstIp >>> 0);
  dv.setUint16(ip + 20, sport);
  dv.setUint16(ip + 22, dport);
  return f;
}

test('connections with equal ports to different peers are told apart by their addresses', () => {
  const local = 0x0a000001;
  const a = { key: { localIp: local, localPort: 40000, remoteIp: 0x0a000002, remotePort: 80 } as ConnKey };
  const b = { key: { localIp: local, localPort: 40000, remoteIp: 0x0a000003, remotePort: 80 } as ConnKey };
  // A second local address with the same ports to A's peer, and a high (negative as i32) one.
  const c = {
    key: { localIp: 0x0a000004, localPort: 40000, remoteIp: 0x0a000002, remotePort: 80 } as ConnKey,
  };
  const d = { key: { localIp: 0xc0a80001 | 0, localPort: 40000, remoteIp: 0xc0a80002 | 0, remotePort: 80 } };
  const idx = new ConnIndex<{ key: ConnKey }>();
  for (const v of [a, b, c, d]) idx.add(v);
  assert.equal(idx.size, 4);
  for (const vlan of [false, true]) {
    for (const v of [a, b, c, d]) {
      const k = v.key;
      assert.equal(idx.ofFrame(frame(k.remoteIp, 80, k.localIp, 40000, vlan), true), v, 'received');
      assert.equal(idx.ofFrame(frame(k.localIp, 40000, k.remoteIp, 80, vlan), false), v, 'sent');
      // The same frame read the other way round is not ours.
      assert.equal(idx.ofFrame(frame(k.remoteIp, 80, k.localIp, 40000, vlan), false), undefined);
    }
  }
  assert.equal(idx.ofFrame(frame(0x0a000009, 80, local, 40000), true), undefined, 'an unknown peer');
  idx.remove(b);
  assert.equal(idx.ofFrame(frame(0x0a000003, 80, local, 40000), true), undefined);
  assert.equal(idx.ofFrame(frame(0x0a000002, 80, local, 40000), true), a, 'the other one stays');
  idx.remove(b);
  assert.equal(idx.size, 3);
});

test('frames that are not IPv4/TCP or too short belong to nothing', () => {
  const idx = new ConnIndex<{ key: ConnKey }>();
  idx.add({ key: { localIp: 1, localPort: 2, remoteIp: 3, remotePort: 4 } });
  const f = frame(3, 4, 1, 2);
  f[14 + 9] = 17;
  assert.equal(idx.ofFrame(f, true), undefined, 'UDP');
  assert.equal(idx.ofFrame(frame(3, 4, 1, 2).subarray(0, 40), true), undefined, 'truncated');
  assert.ok(idx.ofFrame(frame(3, 4, 1, 2), true));
});

test("a frame and a packet the host injects are read as one: a later fragment, whose payload is not ports, is no connection's", () => {
  const idx = new ConnIndex<{ key: ConnKey }>();
  const v = { key: { localIp: 0x0a000001, localPort: 40000, remoteIp: 0x0a000002, remotePort: 80 } };
  idx.add(v);
  const first = frame(0x0a000002, 80, 0x0a000001, 40000);
  first[14 + 6] = 0x20; // more fragments, offset 0: the segment's header, ports and all
  assert.equal(idx.ofFrame(first, true), v, 'a first fragment carries its ports');
  assert.equal(idx.ofPacket(first.subarray(14)), null, 'injected, a fragment cannot say');
  // A later fragment of the segment: its payload's first bytes happen to read as the ports.
  const later = frame(0x0a000002, 80, 0x0a000001, 40000);
  later[14 + 7] = 0xb9; // offset 1480 bytes, last fragment
  assert.equal(idx.ofFrame(later, true), undefined, 'a later fragment: payload, not ports');
  assert.equal(idx.ofPacket(later.subarray(14)), null);
  const whole = frame(0x0a000002, 80, 0x0a000001, 40000);
  assert.equal(idx.ofFrame(whole, true), v);
  assert.equal(idx.ofPacket(whole.subarray(14)), v, 'the same segment injected');
});

test('ports that share an index key are told apart by the ports themselves', () => {
  const ip = { localIp: 0x0a000001, remoteIp: 0x0a000002 };
  // Keys are 30 bits of both ports: these four pairs (local ports 4 apart in their low two
  // bits' place, remote ports matching) land on one key.
  const pairs = [
    [40000, 80],
    [40001, 80 ^ (1 << 14)],
    [40002, 80 ^ (2 << 14)],
    [40003, 80 ^ (3 << 14)],
  ] as const;
  const vs = pairs.map(([localPort, remotePort]) => ({ key: { ...ip, localPort, remotePort } }));
  const idx = new ConnIndex<{ key: ConnKey }>();
  for (const v of vs) idx.add(v);
  for (const v of vs) {
    const k = v.key;
    assert.equal(idx.get(k.localIp, k.localPort, k.remoteIp, k.remotePort), v);
    assert.equal(idx.ofFrame(frame(k.remoteIp, k.remotePort, k.localIp, k.localPort), true), v);
  }
  idx.remove(vs[1]!);
  assert.equal(idx.get(ip.localIp, 40001, ip.remoteIp, 80 ^ (1 << 14)), undefined);
  for (const v of [vs[0]!, vs[2]!, vs[3]!])
    assert.equal(idx.get(v.key.localIp, v.key.localPort, v.key.remoteIp, v.key.remotePort), v);
});

test('connections that leave and come back take up the lists they left', () => {
  const idx = new ConnIndex<{ key: ConnKey }>();
  const vs = Array.from({ length: 300 }, (_, i) => ({
    key: { localIp: 0x0a000001, localPort: 33000 + i, remoteIp: 0x0a000002, remotePort: 80 },
  }));
  for (const v of vs) idx.add(v);
  const made = idx.listsMade;
  assert.equal(made, 300);
  // Moves of 100 out and back in: a list and a map entry per connection and move before.
  for (let round = 0; round < 10; round++)
    for (let b = 0; b < vs.length; b += 100) {
      for (const v of vs.slice(b, b + 100)) idx.remove(v);
      for (const v of vs.slice(b, b + 100)) idx.add(v);
    }
  assert.equal(idx.listsMade, made);
  assert.equal(idx.size, 300);
  for (const v of vs) assert.equal(idx.get(v.key.localIp, v.key.localPort, v.key.remoteIp, 80), v);
});

test('an ICMP error names the connection whose segment it quotes; a quote cut short names none and says so', () => {
  const idx = new ConnIndex<{ key: ConnKey }>();
  const v = { key: { localIp: 0x0a000001, localPort: 40000, remoteIp: 0x0a000002, remotePort: 80 } };
  idx.add(v);
  // Ethernet, the error's IPv4 header (20), its ICMP header (8), then the quoted segment we sent.
  const error = (quoted: Uint8Array): Uint8Array => {
    const f = new Uint8Array(14 + 20 + 8 + quoted.length);
    f.set(quoted, 42);
    return f;
  };
  const sent = frame(0x0a000001, 40000, 0x0a000002, 80).subarray(14, 14 + 28);
  assert.equal(idx.ofQuote(error(sent), 34, false), v, 'our segment, quoted');
  const back = frame(0x0a000002, 80, 0x0a000001, 40000).subarray(14, 14 + 28);
  assert.equal(idx.ofQuote(error(back), 34, false), undefined, "the peer's segment is not ours");
  const later = sent.slice();
  later[7] = 1;
  assert.equal(idx.ofQuote(error(later), 34, false), undefined, 'a later fragment has no ports');
  assert.equal(idx.ofQuote(error(sent.subarray(0, 27)), 34, false), null, 'cut short');
  const long = sent.slice();
  long[0] = 0x4f;
  assert.equal(idx.ofQuote(error(long), 34, false), null, 'options the quote does not hold');
  const v6 = sent.slice();
  v6[0] = 0x60;
  assert.equal(idx.ofQuote(error(v6), 34, false), null, 'not the outer family');
});

test('connections that leave and come back find their keys kept in the map; emptied lists are bounded', () => {
  const idx = new ConnIndex<{ key: ConnKey }>();
  const vs = Array.from({ length: 3000 }, (_, i) => ({
    key: { localIp: 0x0a000001, localPort: 20000 + i, remoteIp: 0x0a000002, remotePort: 80 },
  }));
  for (const v of vs) idx.add(v);
  // Every connection leaves (a move away) and comes back (the move back), in batches of 100:
  // deleted and set again, the map's table shrank and grew at every step.
  for (let round = 0; round < 3; round++) {
    for (let b = 0; b < vs.length; b += 100) for (const v of vs.slice(b, b + 100)) idx.remove(v);
    assert.equal(idx.size, 0);
    assert.equal(idx.places, 3000, 'the keys stay while their lists are empty');
    assert.equal(idx.get(0x0a000001, 20000, 0x0a000002, 80), undefined, 'an emptied list finds nothing');
    for (let b = 0; b < vs.length; b += 100) for (const v of vs.slice(b, b + 100)) idx.add(v);
  }
  assert.equal(idx.placesDropped, 0);
  assert.equal(idx.size, 3000);
  for (const v of vs) assert.equal(idx.get(v.key.localIp, v.key.localPort, v.key.remoteIp, 80), v);
  // Tuples that pass through 50 at a time and never come back: the emptied lists kept are bounded
  // by the most connections held at once (3,000 here), then dropped.
  for (const v of vs) idx.remove(v);
  for (let i = 0; i < 20_000; i += 50) {
    const batch = Array.from({ length: 50 }, (_, j) => ({
      key: {
        localIp: 0x0a000001,
        localPort: 1024 + ((i + j) % 60_000),
        remoteIp: 0x0a000003,
        remotePort: 443,
      },
    }));
    for (const v of batch) idx.add(v);
    for (const v of batch) idx.remove(v);
    assert.ok(idx.places <= 3000 + 1, `${idx.places} keys held for 0 connections`);
  }
  assert.ok(idx.placesDropped > 0);
  assert.equal(idx.size, 0);
});

test('past the bound a remove drops one emptied list, the one emptied longest ago, never a walk of them all', () => {
  const idx = new ConnIndex<{ key: ConnKey }>();
  const conn = (port: number, remote = 0x0a000002) => ({
    key: { localIp: 0x0a000001, localPort: port, remoteIp: remote, remotePort: 80 },
  });
  // A peak of 2,000 held at once: up to 2,000 emptied lists may stay.
  const held = Array.from({ length: 2000 }, (_, i) => conn(10_000 + i));
  for (const v of held) idx.add(v);
  for (const v of held) idx.remove(v);
  assert.equal(idx.places, 2000);
  // A connection of the first ones comes back and leaves again: now the newest emptied.
  idx.add(held[0]!);
  idx.remove(held[0]!);
  let most = 0;
  for (let i = 0; i < 5000; i++) {
    const v = conn(30_000 + i, 0x0a000003);
    idx.add(v);
    const before = idx.placesDropped;
    idx.remove(v);
    most = Math.max(most, idx.placesDropped - before);
    assert.ok(idx.places <= 2000, `${idx.places} keys held for 0 connections`);
    // The oldest go first: until 1,999 others have gone, the one emptied again last stays.
    if (i < 1999) assert.equal(idx.places, 2000);
  }
  assert.equal(most, 1, 'one list dropped per remove at most');
  assert.equal(idx.placesDropped, 5000);
  // The 1,999 first ones went, then the returned one, then 3,000 of those passing through: a new
  // key takes a dropped list up again.
  const made = idx.listsMade;
  idx.add(held[1]!);
  assert.equal(idx.listsMade, made, 'a dropped list is a spare for a new key');
});
