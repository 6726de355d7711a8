import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ACK, activeOpen, add, Bench, bytes } from './harness.ts';

describe('the sequence number of pure ACKs', () => {
  test('after a timeout rewinds snd.nxt, ACKs still carry snd.max (no ACK war with a rewound peer)', () => {
    const b = new Bench();
    const o = activeOpen(b, { ts: [1000, 0], wscale: 0 });
    b.take();
    const una = add(o.iss, 1);
    o.conn.write(bytes(3000));
    b.take();
    const d = o.conn.state.delegated;
    // Nagle may hold a short tail back; what matters is what went out.
    const sent = d.sndMax;
    assert.ok(d.sndMax !== una);
    // Nothing is acknowledged: the retransmission timer fires and snd.nxt falls back.
    b.advance(1500);
    const rtx = b.take();
    assert.ok(rtx.length >= 1 && rtx[0]!.h.seq === una, 'the timeout resends from snd.una');
    assert.notEqual(d.sndNxt, d.sndMax, 'snd.nxt has fallen behind snd.max');
    // The peer got everything but its ACKs are lost; it sends data acknowledging nothing new.
    // Our ACKs must be acceptable to it: numbered snd.max, not the rewound snd.nxt.
    b.inject({
      flags: ACK,
      seq: o.peerSeq,
      ack: una,
      srcPort: 80,
      dstPort: o.conn.localPort,
      ts: [1100, 0],
      data: bytes(10),
    });
    b.inject({
      flags: ACK,
      seq: add(o.peerSeq, 10),
      ack: una,
      srcPort: 80,
      dstPort: o.conn.localPort,
      ts: [1101, 0],
      data: bytes(10),
    });
    b.advance(200);
    const acks = b.take().filter((s) => s.data.length === 0);
    assert.ok(acks.length >= 1);
    assert.notEqual(d.sndNxt, d.sndMax);
    for (const a of acks) assert.equal(a.h.seq, sent);
  });
});
