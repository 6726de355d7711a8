import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SeededRandom } from '../../src/core/random.ts';
import { TcpStateId } from '../../src/state/tcp-state.ts';
import { ACK, activeOpen, add, Bench, bytes, FIN, RST, SYN } from './harness.ts';

// Issue 11, "Bad input": every malformed or hostile segment is dropped or answered, counted, never
// throws, and never stalls another connection. 20,000 hostile segments (random flags, sequence and
// acknowledgment numbers, windows, options, payloads, some with a bad checksum) go to a victim
// connection's four-tuple and to tuples nobody holds, interleaved with a bystander's transfer.
test('20,000 hostile segments: none throws, each is counted, and a bystander transfers intact', () => {
  const b = new Bench({ seed: 9 });
  const victim = activeOpen(b);
  b.take();
  const by = activeOpen(b);
  assert.equal(by.conn.state.delegated.state, TcpStateId.ESTABLISHED);
  const r = new SeededRandom(11);
  const flagsOf = [ACK, SYN, RST, FIN, SYN | ACK, RST | ACK, FIN | ACK, SYN | FIN, 0, 0xff];
  const sent = bytes(200_000, 3);
  const got: number[] = [];
  const readBuf = new Uint8Array(65536);
  let bySeq = by.peerSeq;
  let off = 0;
  let hostile = 0;
  const segsIn0 = b.count('tcp.segments.in');
  for (let i = 0; i < 20_000; i++) {
    const toVictim = r.u32() % 2 === 0;
    const payload = r.u32() % 4 === 0 ? bytes(r.u32() % 1400, i) : undefined;
    b.inject({
      srcPort: toVictim ? 80 : 1 + (r.u32() % 65535),
      dstPort: toVictim ? victim.conn.localPort : 1 + (r.u32() % 65535),
      seq: r.u32() % 3 === 0 ? add(victim.peerSeq, r.u32() % 100_000) : r.u32(),
      ack: r.u32() % 3 === 0 ? add(victim.iss, 1 + (r.u32() % 1000)) : r.u32(),
      flags: flagsOf[r.u32() % flagsOf.length]!,
      window: r.u32() % 65536,
      mss: r.u32() % 5 === 0 ? r.u32() % 65536 : -1,
      wscale: r.u32() % 5 === 0 ? r.u32() % 20 : -1,
      sackPermitted: r.u32() % 2 === 0,
      ts: r.u32() % 3 === 0 ? [r.u32(), r.u32()] : undefined,
      sack: r.u32() % 4 === 0 ? [[r.u32(), r.u32()]] : undefined,
      data: payload,
      badChecksum: r.u32() % 10 === 0,
    });
    hostile++;
    // Every tenth turn the bystander's peer sends it the next 100 bytes, in order.
    if (i % 10 === 0 && off < sent.length) {
      const n = Math.min(100, sent.length - off);
      b.inject({
        srcPort: 80,
        dstPort: by.conn.localPort,
        seq: bySeq,
        ack: add(by.iss, 1),
        flags: ACK,
        data: sent.subarray(off, off + n),
      });
      bySeq = add(bySeq, n);
      off += n;
      for (let k = by.conn.read(readBuf); k > 0; k = by.conn.read(readBuf))
        got.push(...readBuf.subarray(0, k));
    }
    if (i % 1000 === 999) b.advance(50);
  }
  assert.equal(off, sent.length);
  assert.equal(by.conn.state.delegated.state, TcpStateId.ESTABLISHED);
  assert.deepEqual(Buffer.from(got), Buffer.from(sent));
  // Every segment the layer was handed went somewhere with a name: the decoder's drops, or input.
  const inputs = b.count('tcp.segments.in') - segsIn0;
  assert.equal(inputs, hostile + sent.length / 100);
  const c = b.env.counters.snapshot();
  assert.ok(c['drop.tcp.bad-checksum']! > 1000, JSON.stringify(c));
  assert.ok(c['drop.tcp.no-listener']! > 1000, JSON.stringify(c));
});
