import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { SeededRandom } from '../../src/core/random.ts';
import { impairLink } from '../../src/link/impaired-link.ts';
import type { Impairment } from '../../src/link/impairment.ts';
import type { Link } from '../../src/link/link.ts';
import { MemorySwitch } from '../../src/link/memory-switch.ts';
import fc from '../helpers/fc.ts';
import { frame, hostMac, idOf } from './helpers.ts';

/** What became of a run: each send's result, and every arrival as `id@time`, in order. */
interface Fate {
  accepted: boolean[];
  arrived: string[];
}

/** A link that hands what is sent into it to `onSend` and lets `receive` inject frames. */
function recorder(onSend: (f: Uint8Array) => void): Link & { receive(f: Uint8Array): void } {
  let handler: ((f: Uint8Array) => void) | null = null;
  return {
    name: 'rec0',
    mtu: 1500,
    carrier: true,
    send: (f) => {
      onSend(f);
      return true;
    },
    onFrame: (h) => {
      handler = h;
    },
    onCarrier: () => {},
    close: () => {},
    receive: (f) => handler?.(f),
  };
}

function drain(clock: VirtualClock): void {
  let guard = 0;
  while (clock.pending > 0 && guard++ < 1_000_000) clock.step();
}

/** Frames cross a switch from port a to port b; `dir` says whether a's tx or b's rx is impaired. */
function viaSwitch(seed: number, dir: 'tx' | 'rx', imp: Impairment, gaps: number[], len: number): Fate {
  const clock = new VirtualClock();
  const sw = new MemorySwitch({ clock, random: new SeededRandom(seed) });
  const a = sw.addPort({ impair: { tx: dir === 'tx' ? imp : {} } });
  const b = sw.addPort({ impair: { rx: dir === 'rx' ? imp : {} } });
  const arrived: string[] = [];
  b.onFrame((f) => arrived.push(`${idOf(f)}@${clock.now()}`));
  const accepted = gaps.map((g, i) => {
    const ok = a.send(frame(hostMac(2), hostMac(1), i, len));
    clock.advance(g);
    return ok;
  });
  drain(clock);
  assert.equal(sw.framesInFlight, 0);
  return { accepted, arrived };
}

/** The same frames through impairLink: sent into it (tx) or handed to it by the inner link (rx). */
function viaImpairLink(seed: number, dir: 'tx' | 'rx', imp: Impairment, gaps: number[], len: number): Fate {
  const clock = new VirtualClock();
  const arrived: string[] = [];
  const record = (f: Uint8Array): void => {
    arrived.push(`${idOf(f)}@${clock.now()}`);
  };
  const inner = recorder(record);
  const link = impairLink(inner, { [dir]: imp }, clock, new SeededRandom(seed));
  link.onFrame(record);
  const accepted = gaps.map((g, i) => {
    const f = frame(hostMac(2), hostMac(1), i, len);
    let ok = true;
    if (dir === 'tx') ok = link.send(f);
    else inner.receive(f);
    clock.advance(g);
    return ok;
  });
  drain(clock);
  assert.equal(link.framesInFlight, 0);
  return { accepted, arrived };
}

const impairment = fc
  .record(
    {
      loss: fc.double({ min: 0, max: 0.3, noNaN: true }),
      duplicate: fc.double({ min: 0, max: 0.3, noNaN: true }),
      reorder: fc.double({ min: 0, max: 0.5, noNaN: true }),
      reorderDelayMs: fc.double({ min: 0, max: 5, noNaN: true }),
      delayMs: fc.double({ min: 0, max: 5, noNaN: true }),
      jitterMs: fc.double({ min: 0, max: 3, noNaN: true }),
      rateBps: fc.double({ min: 1e5, max: 1e8, noNaN: true }),
      queueBytes: fc.integer({ min: 0, max: 20_000 }),
    },
    { requiredKeys: [] },
  )
  .map((i): Impairment => {
    if (i.rateBps === undefined) delete i.queueBytes;
    return i;
  });

describe('one impairment engine', () => {
  test('property: a switch port and impairLink give every frame the same fate, for any seed and spec, either way', () => {
    fc.assert(
      fc.property(
        fc.integer(),
        fc.constantFrom('tx' as const, 'rx' as const),
        impairment,
        fc.array(fc.double({ min: 0, max: 2, noNaN: true }), { minLength: 1, maxLength: 100 }),
        fc.integer({ min: 60, max: 1514 }),
        (seed, dir, imp, gaps, len) => {
          const sw = viaSwitch(seed, dir, imp, gaps, len);
          assert.deepEqual(viaImpairLink(seed, dir, imp, gaps, len), sw);
        },
      ),
      { numRuns: 200 },
    );
  });

  test('the same fate includes drops at a full rate-limited queue', () => {
    const imp = { rateBps: 1e6, queueBytes: 300, loss: 0.1, duplicate: 0.1 };
    const gaps = Array.from({ length: 400 }, (_, i) => (i % 10 === 0 ? 2 : 0));
    const sw = viaSwitch(7, 'tx', imp, gaps, 100);
    assert.ok(sw.accepted.includes(false), 'the queue must overflow in this run');
    assert.deepEqual(viaImpairLink(7, 'tx', imp, gaps, 100), sw);
  });

  test('impairLink has the switch lanes byte limit: frames beyond it are refused and counted', () => {
    const clock = new VirtualClock();
    const sent: number[] = [];
    const inner = recorder((f) => sent.push(idOf(f)));
    const link = impairLink(inner, { tx: { delayMs: 5 } }, clock, new SeededRandom(1), {
      laneLimitBytes: 200,
    });
    const res = [0, 1, 2, 3].map((i) => link.send(frame(hostMac(2), hostMac(1), i)));
    // Three 64-byte frames fit in 200 bytes; the fourth does not.
    assert.deepEqual(res, [true, true, true, false]);
    assert.equal(link.counters.get('impair.tx.queue'), 1);
    drain(clock);
    assert.deepEqual(sent, [0, 1, 2]);
    assert.throws(() => impairLink(inner, {}, clock, new SeededRandom(1), { laneLimitBytes: 0 }));
  });
});
