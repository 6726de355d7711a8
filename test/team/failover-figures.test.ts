/**
 * The failover benchmark's stream figures are counted stream by stream, not assumed. Its old
 * `bytesLost` (bytes expected from the connections the peer saw open, less every byte any socket
 * delivered) went negative when the host took a segment of a connection it had elsewhere for a new
 * one, and it never looked at the streams that did not end: a run that gave up after its time
 * limit still reported 0 resets.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { summariseStreams } from '../../bench/failover.ts';
import { assertClean, runScenario, secondSockets } from './scenario.ts';
import { pattern } from './team-sim.ts';

describe('failover benchmark figures', () => {
  test('streams left unfinished are reported, and the figures are not intact', async () => {
    // 40 streams of 200 kB over a 10 Mbit/s wire cannot end in 50 ms.
    const r = await runScenario({ seed: 3, nics: 2, conns: 20, bytes: 200_000, rateBps: 1e7, limitMs: 50 });
    const f = summariseStreams(r);
    assert.equal(f.streams, 40);
    assert.ok(f.unfinished > 0, `unfinished ${f.unfinished}`);
    assert.equal(f.streamsOk + f.unfinished, 40);
    assert.ok(f.errors >= 1);
    assert.match(f.errorSamples[0]!, /streams unfinished/);
    assert.ok(f.bytesLost > 0);
    assert.equal(f.intact, false);
  });

  test('a stream delivered twice counts as extra bytes and does not hide another stream loss', async () => {
    const r = await runScenario({ seed: 4, nics: 2, conns: 4, bytes: 3000 });
    const clean = summariseStreams(r);
    assert.deepEqual(
      { ...clean, errorSamples: clean.errorSamples.length },
      {
        streams: 8,
        streamsOk: 8,
        unfinished: 0,
        errors: 0,
        errorSamples: 0,
        resets: 0,
        bytesLost: 0,
        bytesExtra: 0,
        intact: true,
      },
    );
    // What the cookie bug did: a second socket of one stream delivered its first segment again,
    // while another stream came up short by as many bytes. Together they summed to nothing.
    const streams = r.stats.streams!;
    const dup = streams.find((s) => s.total > 0)!;
    const short = streams.find((s) => s.total > 0 && s !== dup)!;
    streams.push({
      id: dup.id,
      from: dup.from,
      total: dup.total,
      good: 1448,
      got: 1448,
      ended: false,
      bad: false,
    });
    short.good -= 1448;
    short.got -= 1448;
    const f = summariseStreams(r);
    assert.equal(f.bytesLost, 1448);
    assert.equal(f.bytesExtra, 1448);
    assert.equal(f.streamsOk, 7);
    assert.equal(f.errors, 1);
    assert.match(f.errorSamples[0]!, /second socket/);
    assert.equal(f.intact, false);
    // The tests' own check sees it too, though the counts of finished streams add up.
    assert.deepEqual(secondSockets(r), [dup.id]);
    assert.throws(() => assertClean(r), /second socket/);
  });

  test("a stream's bytes repeat neither along it nor in the stream 256 ports on", () => {
    // With the hash's low byte they did both: a segment delivered again 256 bytes on, or by a
    // second socket, matched the pattern and went uncounted as damage.
    const s = 50_001;
    assert.notDeepEqual(pattern(s, 0, 64), pattern(s, 256, 64));
    assert.notDeepEqual(pattern(s, 1448, 64), pattern(s, 1448 + 4096, 64));
    assert.notDeepEqual(pattern(s, 0, 64), pattern(s + 256, 0, 64));
  });
});
