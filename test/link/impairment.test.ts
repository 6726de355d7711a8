import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InvalidArgumentError } from '../../src/core/errors.ts';
import { type Impairment, splitImpairment, validateImpairment } from '../../src/link/impairment.ts';
import fc from '../helpers/fc.ts';
import { frame, hostMac, makeNet, type Net } from './helpers.ts';

/** Port 0 sends `n` frames to port 1, one every `gapMs`; returns the send times by id. */
function stream(net: Net, n: number, gapMs: number, len = 64): number[] {
  const sent: number[] = [];
  // Teach the switch where port 1 is, so nothing floods.
  net.ports[1]!.send(frame(hostMac(0), hostMac(1), 0xffffffff));
  net.drain();
  net.rx.length = 0;
  for (let i = 0; i < n; i++) {
    sent.push(net.clock.now());
    net.ports[0]!.send(frame(hostMac(1), hostMac(0), i, len));
    if (gapMs > 0) net.clock.advance(gapMs);
  }
  net.drain();
  return sent;
}

describe('validateImpairment', () => {
  const bad: [string, unknown][] = [
    ['loss below 0', { loss: -0.01 }],
    ['loss above 1', { loss: 1.01 }],
    ['loss NaN', { loss: Number.NaN }],
    ['loss as string', { loss: '0.1' }],
    ['duplicate above 1', { duplicate: 2 }],
    ['reorder below 0', { reorder: -1 }],
    ['negative delay', { delayMs: -1 }],
    ['infinite delay', { delayMs: Number.POSITIVE_INFINITY }],
    ['negative jitter', { jitterMs: -0.5 }],
    ['negative reorderDelayMs', { reorderDelayMs: -2 }],
    ['zero rate', { rateBps: 0 }],
    ['negative rate', { rateBps: -100 }],
    ['fractional queue', { rateBps: 1e6, queueBytes: 10.5 }],
    ['queue without rate', { queueBytes: 1000 }],
    ['misspelt field', { lossRate: 0.1 }],
    ['not an object', null],
  ];
  for (const [name, spec] of bad) {
    test(`refuses ${name}`, () => {
      assert.throws(() => validateImpairment(spec as Impairment), InvalidArgumentError);
    });
  }

  test('accepts the edges and a full spec', () => {
    validateImpairment({});
    validateImpairment({ loss: 0, duplicate: 1, reorder: 1 });
    validateImpairment({
      loss: 0.5,
      duplicate: 0.1,
      reorder: 0.1,
      reorderDelayMs: 3,
      delayMs: 0,
      jitterMs: 2,
      rateBps: 1e9,
      queueBytes: 0,
    });
  });

  test('validateImpairment also checks each direction of a directional spec', () => {
    validateImpairment({ tx: { loss: 0.1 }, rx: { delayMs: 1 } });
    assert.throws(() => validateImpairment({ rx: { jitterMs: -1 } }), InvalidArgumentError);
  });

  test('directional specs: validated per direction, no mixing', () => {
    const s = splitImpairment({ tx: { loss: 0.1 } });
    assert.deepEqual(s.tx, { loss: 0.1 });
    assert.equal(s.rx, undefined);
    const both = splitImpairment({ delayMs: 3 });
    assert.equal(both.tx, both.rx);
    assert.throws(() => splitImpairment({ rx: { loss: 3 } }), InvalidArgumentError);
    assert.throws(
      () => splitImpairment({ tx: {}, loss: 0.1 } as unknown as Impairment),
      InvalidArgumentError,
    );
  });

  test('impair() with a bad spec changes nothing', () => {
    const net = makeNet(1, 2);
    net.ports[0]!.impair({ delayMs: 7 });
    assert.throws(() => net.ports[0]!.impair({ tx: { delayMs: 1 }, rx: { loss: -1 } }));
    const sent = stream(net, 1, 0);
    assert.equal(net.rx[0]!.t - sent[0]!, 7);
  });
});

describe('impairments, measured', () => {
  test('loss rate is near the setting', () => {
    const net = makeNet(11, 2);
    net.ports[0]!.impair({ tx: { loss: 0.1 } });
    const n = 20_000;
    stream(net, n, 0);
    const rate = 1 - net.rx.length / n;
    assert.ok(Math.abs(rate - 0.1) < 0.01, `loss rate ${rate}`);
    assert.equal(net.sw.stats.get('drop.loss'), n - net.rx.length);
  });

  test('a plain spec applies to both directions', () => {
    const net = makeNet(12, 2);
    net.ports[0]!.impair({ loss: 0.2 });
    const n = 20_000;
    stream(net, n, 0);
    // Port 1's own wire is clean, port 0's frames cross one lossy wire.
    const rate = 1 - net.rx.length / n;
    assert.ok(Math.abs(rate - 0.2) < 0.015, `loss rate ${rate}`);
    net.rx.length = 0;
    for (let i = 0; i < n; i++) net.ports[1]!.send(frame(hostMac(0), hostMac(1), i));
    net.drain();
    const back = 1 - net.rx.length / n;
    assert.ok(Math.abs(back - 0.2) < 0.015, `loss rate towards port 0 ${back}`);
  });

  test('duplicates: near the setting, each frame at most twice, back to back', () => {
    const net = makeNet(13, 2);
    net.ports[0]!.impair({ tx: { duplicate: 0.05 } });
    const n = 20_000;
    stream(net, n, 0);
    const ids = net.ids(1);
    const extra = ids.length / n - 1;
    assert.ok(Math.abs(extra - 0.05) < 0.008, `duplicate rate ${extra}`);
    assert.equal(net.sw.stats.get('dup'), ids.length - n);
    const counts = new Map<number, number>();
    for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1);
    assert.equal(counts.size, n);
    for (const c of counts.values()) assert.ok(c === 1 || c === 2);
    // Without reordering a duplicate follows its original directly.
    for (let i = 1; i < ids.length; i++) assert.ok(ids[i]! >= ids[i - 1]!);
  });

  test('reorder: about the set share of frames arrive after later ones, none lost', () => {
    const net = makeNet(14, 2);
    net.ports[0]!.impair({ tx: { reorder: 0.1 } });
    const n = 10_000;
    // 0.05 ms apart, so frames held 0.5..1 ms (the default) are always overtaken.
    stream(net, n, 0.05);
    const ids = net.ids(1);
    assert.deepEqual(
      [...ids].sort((a, b) => a - b),
      Array.from({ length: n }, (_, i) => i),
    );
    let late = 0;
    let max = -1;
    for (const id of ids) {
      if (id < max) late++;
      else max = id;
    }
    const share = late / n;
    assert.ok(Math.abs(share - 0.1) < 0.015, `reordered share ${share}`);
    assert.equal(net.sw.stats.get('reordered'), late);
  });

  test('reorder holds frames by at most reorderDelayMs past their due time', () => {
    const net = makeNet(15, 2);
    net.ports[0]!.impair({ tx: { reorder: 0.5, delayMs: 2, reorderDelayMs: 4 } });
    const sent = stream(net, 2000, 0.1);
    for (const r of net.rx) {
      const lat = r.t - sent[r.id]!;
      assert.ok(lat >= 2 - 1e-9 && lat <= 6 + 1e-9, `latency ${lat}`);
    }
    assert.ok(
      net.rx.some((r) => r.t - sent[r.id]! > 4),
      'some frames were held',
    );
  });

  test('fixed delay: every frame arrives exactly delayMs later', () => {
    const net = makeNet(16, 2);
    net.ports[0]!.impair({ tx: { delayMs: 10 } });
    const sent = stream(net, 100, 0.3);
    assert.equal(net.rx.length, 100);
    for (const r of net.rx) assert.ok(Math.abs(r.t - sent[r.id]! - 10) < 1e-9);
  });

  test('delay on both wires adds up', () => {
    const net = makeNet(17, 2, { impair: { delayMs: 3 } });
    const sent = stream(net, 10, 1);
    for (const r of net.rx) assert.ok(Math.abs(r.t - sent[r.id]! - 6) < 1e-9);
  });

  test('jitter: latency spread over delay..delay+jitter, order never changes', () => {
    const net = makeNet(18, 2);
    net.ports[0]!.impair({ tx: { delayMs: 10, jitterMs: 5 } });
    const n = 5000;
    const sent = stream(net, n, 0.5);
    assert.deepEqual(
      net.ids(1),
      Array.from({ length: n }, (_, i) => i),
    );
    const lats = net.rx.map((r) => r.t - sent[r.id]!);
    assert.ok(Math.min(...lats) >= 10 - 1e-9);
    assert.ok(Math.max(...lats) <= 15 + 1e-9);
    const mean = lats.reduce((a, b) => a + b, 0) / n;
    // Non-decreasing delivery pulls the mean a little above 12.5 when frames are close together.
    assert.ok(mean > 12 && mean < 14, `mean latency ${mean}`);
    for (let i = 1; i < n; i++) assert.ok(net.rx[i]!.t >= net.rx[i - 1]!.t);
  });

  test('rate limit: frames leave one serialization time apart', () => {
    const net = makeNet(19, 2);
    // 1 Mbit/s: a 1250-byte frame takes 10 ms.
    net.ports[0]!.impair({ tx: { rateBps: 1e6, delayMs: 1 } });
    stream(net, 10, 0, 1250);
    assert.deepEqual(
      net.rx.map((r) => Math.round(r.t * 1000) / 1000),
      [11, 21, 31, 41, 51, 61, 71, 81, 91, 101],
    );
  });

  test('rate limit: a full queue drops and send says so; the queue drains with time', () => {
    const net = makeNet(20, 2);
    net.ports[0]!.impair({ tx: { rateBps: 1e6, queueBytes: 5000 } });
    net.ports[1]!.send(frame(hostMac(0), hostMac(1), 0xffffffff));
    net.drain();
    net.rx.length = 0;
    const results: boolean[] = [];
    for (let i = 0; i < 8; i++) results.push(net.ports[0]!.send(frame(hostMac(1), hostMac(0), i, 1250)));
    assert.deepEqual(results, [true, true, true, true, false, false, false, false]);
    assert.equal(net.sw.stats.get('drop.queue'), 4);
    net.clock.advance(10); // one frame serialized: room for one more
    assert.equal(net.ports[0]!.send(frame(hostMac(1), hostMac(0), 8, 1250)), true);
    assert.equal(net.ports[0]!.send(frame(hostMac(1), hostMac(0), 9, 1250)), false);
    net.drain();
    assert.deepEqual(net.ids(1), [0, 1, 2, 3, 8]);
  });

  test('rate limit measured over a long run matches the configured rate', () => {
    const net = makeNet(21, 2);
    net.ports[0]!.impair({ tx: { rateBps: 10e6, queueBytes: 1e6 } });
    stream(net, 500, 0, 1500);
    const secs = net.rx[net.rx.length - 1]!.t / 1000;
    const bps = (500 * 1500 * 8) / secs;
    assert.ok(Math.abs(bps - 10e6) / 10e6 < 1e-6, `measured ${bps}`);
  });

  test('removing a delay does not let new frames overtake frames still in flight', () => {
    const net = makeNet(22, 2);
    net.ports[0]!.impair({ tx: { delayMs: 50 } });
    net.ports[1]!.send(frame(hostMac(0), hostMac(1), 0xffffffff));
    net.drain();
    net.rx.length = 0;
    net.ports[0]!.send(frame(hostMac(1), hostMac(0), 1));
    net.ports[0]!.impair({});
    net.ports[0]!.send(frame(hostMac(1), hostMac(0), 2));
    net.drain();
    assert.deepEqual(net.ids(1), [1, 2]);
  });

  test('directional impairment touches only its direction', () => {
    const net = makeNet(23, 2);
    net.ports[0]!.impair({ rx: { delayMs: 20 } });
    const sent = stream(net, 5, 0);
    for (const r of net.rx) assert.equal(r.t - sent[r.id]!, 0);
    net.rx.length = 0;
    net.ports[1]!.send(frame(hostMac(0), hostMac(1), 1));
    const t0 = net.clock.now();
    net.drain();
    assert.equal(net.rx[0]!.t - t0, 20);
  });
});

describe('determinism', () => {
  function run(seed: number): string {
    const net = makeNet(seed, 3, {
      impair: { loss: 0.05, duplicate: 0.05, reorder: 0.1, delayMs: 2, jitterMs: 3, rateBps: 50e6 },
    });
    for (let i = 0; i < 600; i++) {
      const from = i % 3;
      net.ports[from]!.send(frame(hostMac((from + 1) % 3), hostMac(from), i, 64 + (i % 900)));
      net.clock.advance(0.07);
    }
    net.drain();
    assert.equal(net.sw.framesInFlight, 0);
    return JSON.stringify(net.rx);
  }
  test('the same seed gives the same delivery sequence; another seed does not', () => {
    const a = run(7);
    assert.equal(run(7), a);
    assert.notEqual(run(8), a);
  });
});

describe('properties', () => {
  const spec = fc.record(
    {
      delayMs: fc.double({ min: 0, max: 20, noNaN: true }),
      jitterMs: fc.double({ min: 0, max: 20, noNaN: true }),
      rateBps: fc.double({ min: 1e5, max: 1e9, noNaN: true }),
    },
    { requiredKeys: [] },
  );
  const gaps = fc.array(fc.double({ min: 0, max: 3, noNaN: true }), { minLength: 1, maxLength: 80 });

  test('without loss, duplication or reordering: every frame once, in order', () => {
    fc.assert(
      fc.property(fc.integer(), spec, spec, gaps, (seed, to, from, gapList) => {
        const net = makeNet(seed, 2);
        // A queue big enough that nothing overflows: this property is about order, not drops.
        const deep = (i: Impairment): Impairment => (i.rateBps ? { ...i, queueBytes: 1e9 } : i);
        net.ports[0]!.impair({ tx: deep(to), rx: deep(from) });
        net.ports[1]!.impair({ rx: deep(from) });
        net.ports[1]!.send(frame(hostMac(0), hostMac(1), 0xffffffff));
        net.drain();
        net.rx.length = 0;
        gapList.forEach((g, i) => {
          net.ports[0]!.send(frame(hostMac(1), hostMac(0), i, 200));
          net.clock.advance(g);
        });
        net.drain();
        assert.deepEqual(
          net.ids(1),
          gapList.map((_, i) => i),
        );
        assert.equal(net.sw.framesInFlight, 0);
      }),
      { numRuns: 150 },
    );
  });

  test('with reordering and duplication: nothing is lost or invented', () => {
    fc.assert(
      fc.property(
        fc.integer(),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        gaps,
        (seed, reorder, duplicate, gapList) => {
          const net = makeNet(seed, 2);
          net.ports[0]!.impair({ tx: { reorder, duplicate, delayMs: 1, jitterMs: 1 } });
          net.ports[1]!.send(frame(hostMac(0), hostMac(1), 0xffffffff));
          net.drain();
          net.rx.length = 0;
          gapList.forEach((g, i) => {
            net.ports[0]!.send(frame(hostMac(1), hostMac(0), i, 100));
            net.clock.advance(g);
          });
          net.drain();
          const got = [...new Set(net.ids(1))].sort((a, b) => a - b);
          assert.deepEqual(
            got,
            gapList.map((_, i) => i),
          );
          assert.equal(net.ids(1).length, gapList.length + net.sw.stats.get('dup'));
          assert.equal(net.sw.framesInFlight, 0);
        },
      ),
      { numRuns: 150 },
    );
  });
});
