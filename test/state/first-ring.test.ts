/**
 * A connection's rings start inside V8's heap: an accept in a burst made two 4 KiB buffers of its
 * own, each an allocation outside the heap whose accounting drives the collector, for rings that
 * a connection offloaded at once never used.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sampleConn, sampleNeighbor, samplePath } from './helpers.ts';

test("10,000 new connections' rings take no memory outside V8's heap, and grow when data comes", () => {
  const path = samplePath(sampleNeighbor());
  const before = process.memoryUsage().arrayBuffers;
  const conns = Array.from({ length: 10_000 }, (_, i) => sampleConn(path, 1024 + (i % 60000), 80));
  const outside = process.memoryUsage().arrayBuffers - before;
  // Two 4 KiB rings each were 83 MB in all; what a state holds besides its rings is about 6 MB.
  assert.ok(outside < 16 << 20, `${outside} bytes of buffers for ${conns.length} connections' rings`);
  const { delegated: d, cached } = conns[0]!;
  const body = new Uint8Array(100_000).fill(7);
  const had = d.sendBuffer.length;
  d.sendBuffer.write(body);
  d.recvBuffer.write(body);
  assert.equal(d.sendBuffer.length, cached.sndBufSize);
  assert.equal(d.recvBuffer.length, cached.rcvBufSize);
  assert.deepEqual(d.sendBuffer.toArray().subarray(had), body.subarray(0, cached.sndBufSize - had));
});
