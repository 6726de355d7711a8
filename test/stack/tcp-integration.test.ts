import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { TcpUser } from '../../src/stack/tcp/tcp-types.ts';
import { bytes, etherType, IP_A, IP_B, twoHosts } from './harness.ts';

function user(over: Partial<TcpUser> = {}): TcpUser {
  return {
    onConnected() {},
    onReadable() {},
    onWritable() {},
    onRemoteEnd() {},
    onClosed() {},
    ...over,
  };
}

test('TCP runs over the stack: ARP, path MTU and delivery', () => {
  const w = twoHosts();
  const data = bytes(20_000, 3);
  const received: number[] = [];
  const buf = new Uint8Array(65536);
  w.b.tcp.listen({ port: 80 }, (conn) => {
    conn.user = user({
      onReadable() {
        for (let n = conn.read(buf); n > 0; n = conn.read(buf)) received.push(...buf.subarray(0, n));
      },
    });
    return true;
  });
  let connected = false;
  const c = w.a.tcp.connect(
    { remoteIp: IP_B, remotePort: 80 },
    user({
      onConnected() {
        connected = true;
      },
    }),
  );
  w.clock.advance(50);
  assert.equal(connected, true);
  assert.equal(c.state.path, w.a.pathTo(IP_B), 'the connection uses the shared path');
  let off = 0;
  for (let i = 0; i < 200 && off < data.length; i++) {
    off += c.write(data, off);
    w.clock.advance(20);
  }
  w.clock.advance(500);
  assert.equal(received.length, data.length);
  assert.deepEqual(Uint8Array.from(received), data);
  // Every TCP packet carried DF and fit the MTU.
  const tcp = w.hub.log.filter((e) => etherType(e.frame) === 0x0800 && e.frame[23] === 6);
  assert.ok(tcp.length > 10);
  for (const e of tcp) {
    assert.ok(e.frame.length - 14 <= 1500);
    assert.equal(e.frame[20]! & 0x40, 0x40, 'DF');
  }
  assert.equal(w.a.neighbors.lookup(IP_B)?.status, 'reachable');
  assert.equal(w.b.neighbors.lookup(IP_A)?.mac !== -1, true);
});
