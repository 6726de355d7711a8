import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConnectionError, InvalidStateError } from '../../src/core/errors.ts';
import { ACK, Bench, PEER_ISN, REMOTE, Recorder, SYN } from './harness.ts';

describe('a TcpLayer that was closed starts nothing', () => {
  test('connect throws ENETDOWN: no SYN leaves and no connection (nor its timer) is left', () => {
    const b = new Bench();
    b.layer.close();
    assert.throws(
      () => b.layer.connect({ remoteIp: REMOTE, remotePort: 80 }, new Recorder()),
      (e: unknown) => e instanceof ConnectionError && e.code === 'ENETDOWN',
    );
    b.advance(60_000);
    assert.deepEqual(b.take(), []);
    assert.equal(b.layer.size, 0);
  });

  test('listen throws a typed error', () => {
    const b = new Bench();
    b.layer.close();
    assert.throws(() => b.layer.listen({ port: 80 }, () => true), InvalidStateError);
  });

  test('a SYN arriving after the close is neither accepted nor answered', () => {
    const b = new Bench();
    let accepted = 0;
    b.layer.listen({ port: 80 }, () => {
      accepted++;
      return true;
    });
    b.layer.close();
    // As a segment a transfer held and replays into the closed layer reaches it.
    b.inject({ flags: SYN, seq: PEER_ISN, mss: 1460 });
    b.inject({ flags: ACK, seq: PEER_ISN + 1, ack: 1 });
    b.advance(10_000);
    assert.deepEqual(
      b.take().map((s) => s.h.flags),
      [],
      'no SYN-ACK, and no RST from the closed stack',
    );
    assert.equal(accepted, 0);
    assert.equal(b.count('drop.tcp.closed'), 2);
  });
});
