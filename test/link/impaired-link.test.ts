import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { InvalidArgumentError, InvalidStateError } from '../../src/core/errors.ts';
import { SeededRandom } from '../../src/core/random.ts';
import { type FrameInfo, impairLink, parseImpairment } from '../../src/link/impaired-link.ts';
import type { ImpairmentSpec } from '../../src/link/impairment.ts';
import type { Link } from '../../src/link/link.ts';
import { newRxInfo } from '../../src/link/tap-vnet.ts';
import fc from '../helpers/fc.ts';
import { frame, hostMac, idOf } from './helpers.ts';

/** A link that records what is sent into it and lets the test inject received frames. */
class FakeLink implements Link {
  readonly name = 'fake0';
  readonly mtu = 1500;
  carrier = true;
  closed = false;
  sent: { id: number; t: number }[] = [];
  handler: ((f: Uint8Array, info?: FrameInfo) => void) | null = null;
  carrierHandler: ((up: boolean) => void) | null = null;
  constructor(private readonly clock: VirtualClock) {}
  send(f: Uint8Array): boolean {
    if (!this.carrier) return false;
    this.sent.push({ id: idOf(f), t: this.clock.now() });
    return true;
  }
  onFrame(h: (f: Uint8Array, info?: FrameInfo) => void): void {
    this.handler = h;
  }
  onCarrier(h: (up: boolean) => void): void {
    this.carrierHandler = h;
  }
  close(): void {
    this.closed = true;
  }
  /** The wire hands the wrapper a frame in a buffer it reuses afterwards, as a TapLink does. */
  private readonly rbuf = new Uint8Array(64);
  receive(id: number, info?: FrameInfo): void {
    this.rbuf.set(frame(hostMac(1), hostMac(2), id));
    this.handler!(this.rbuf, info);
    this.rbuf.fill(0xee);
  }
}

function setup(spec: ImpairmentSpec, seed = 1) {
  const clock = new VirtualClock();
  const inner = new FakeLink(clock);
  const link = impairLink(inner, spec, clock, new SeededRandom(seed));
  const rx: { id: number; t: number; info?: FrameInfo }[] = [];
  link.onFrame((f, info) => rx.push({ id: idOf(f), t: clock.now(), info: info ? { ...info } : undefined }));
  const drain = (): void => {
    let guard = 0;
    while (clock.pending > 0 && guard++ < 1_000_000) clock.step();
  };
  return { clock, inner, link, rx, drain };
}

function sendN(s: ReturnType<typeof setup>, n: number, gapMs = 0): number[] {
  const at: number[] = [];
  const buf = new Uint8Array(64);
  for (let i = 0; i < n; i++) {
    at.push(s.clock.now());
    buf.set(frame(hostMac(2), hostMac(1), i));
    s.link.send(buf);
    // The caller reuses its buffer at once; the wrapper must have copied what it holds.
    buf.fill(0xdd);
    if (gapMs) s.clock.advance(gapMs);
  }
  s.drain();
  return at;
}

function lateShare(ids: number[]): number {
  let late = 0;
  let max = -1;
  for (const id of ids) {
    if (id < max) late++;
    else max = id;
  }
  return late / ids.length;
}

describe('parseImpairment', () => {
  test('plain keys apply to both directions, prefixed keys to one', () => {
    assert.deepEqual(parseImpairment('loss=0.01,reorder=0.01'), {
      tx: { loss: 0.01, reorder: 0.01 },
      rx: { loss: 0.01, reorder: 0.01 },
    });
    assert.deepEqual(parseImpairment('tx.loss=5%, rx.delay=2,jitter=1'), {
      tx: { loss: 0.05, jitterMs: 1 },
      rx: { delayMs: 2, jitterMs: 1 },
    });
    assert.deepEqual(parseImpairment('rx.rate=10M,rx.queue=64k,dup=0.1,reorder-delay=3'), {
      tx: { duplicate: 0.1, reorderDelayMs: 3 },
      rx: { rateBps: 10e6, queueBytes: 64000, duplicate: 0.1, reorderDelayMs: 3 },
    });
  });
  const bad = [
    '',
    'loss',
    'loss=',
    'loss=abc',
    'loss=1.5',
    'loss=-1%',
    'lost=0.1',
    'xx.loss=0.1',
    'delay=-3',
    'rate=0',
    'queue=100',
    '=0.1',
  ];
  for (const b of bad) {
    test(`refuses '${b}'`, () => {
      assert.throws(() => parseImpairment(b), InvalidArgumentError);
    });
  }
});

describe('impairLink', () => {
  test('refuses bad specs and bad arguments before touching the link', () => {
    const clock = new VirtualClock();
    const inner = new FakeLink(clock);
    const r = new SeededRandom(1);
    assert.throws(() => impairLink(inner, { loss: 2 }, clock, r), InvalidArgumentError);
    assert.throws(() => impairLink(inner, { tx: { delayMs: -1 } }, clock, r), InvalidArgumentError);
    assert.throws(
      () => impairLink(inner, { tx: {}, loss: 0.1 } as unknown as ImpairmentSpec, clock, r),
      InvalidArgumentError,
    );
    assert.throws(() => impairLink(null as unknown as Link, {}, clock, r), InvalidArgumentError);
    assert.throws(() => impairLink(inner, {}, null as unknown as VirtualClock, r), InvalidArgumentError);
    assert.equal(inner.handler, null);
  });

  test('a perfect wire passes frames through at once, both ways, and forwards the rest', () => {
    const s = setup({});
    assert.equal(s.link.name, 'fake0');
    assert.equal(s.link.mtu, 1500);
    assert.equal(s.link.carrier, true);
    assert.equal(s.link.send(frame(hostMac(2), hostMac(1), 7)), true);
    assert.deepEqual(s.inner.sent, [{ id: 7, t: 0 }]);
    s.inner.receive(9);
    assert.equal(s.rx.length, 1);
    assert.equal(s.rx[0]!.id, 9);
    let carrier: boolean | null = null;
    s.link.onCarrier((up) => {
      carrier = up;
    });
    s.inner.carrierHandler!(false);
    assert.equal(carrier, false);
    s.inner.carrier = false;
    assert.equal(s.link.carrier, false);
    assert.equal(s.link.send(frame(hostMac(2), hostMac(1), 8)), false);
  });

  test('fixed delay on tx only: sent frames arrive delayMs later, received ones at once', () => {
    const s = setup({ tx: { delayMs: 10 } });
    const at = sendN(s, 50, 0.3);
    assert.equal(s.inner.sent.length, 50);
    for (const f of s.inner.sent) assert.ok(Math.abs(f.t - at[f.id]! - 10) < 1e-9);
    s.inner.receive(1);
    assert.equal(s.rx.length, 1);
  });

  test('loss near the setting in its direction only, counted', () => {
    const s = setup({ tx: { loss: 0.05 } }, 3);
    const n = 20_000;
    sendN(s, n);
    const rate = 1 - s.inner.sent.length / n;
    assert.ok(Math.abs(rate - 0.05) < 0.006, `tx loss ${rate}`);
    assert.equal(s.link.counters.get('impair.tx.loss'), n - s.inner.sent.length);
    for (let i = 0; i < 1000; i++) s.inner.receive(i);
    s.drain();
    assert.equal(s.rx.length, 1000);
    assert.equal(s.link.counters.get('impair.rx.loss'), 0);
  });

  test('rx loss and duplication: near the settings, every frame at most twice', () => {
    const s = setup({ rx: { loss: 0.01, duplicate: 0.02 } }, 4);
    const n = 20_000;
    for (let i = 0; i < n; i++) s.inner.receive(i);
    s.drain();
    const c = s.link.counters;
    assert.equal(s.rx.length, n - c.get('impair.rx.loss') + c.get('impair.rx.dup'));
    assert.ok(Math.abs(c.get('impair.rx.loss') / n - 0.01) < 0.003);
    assert.ok(Math.abs(c.get('impair.rx.dup') / n - 0.02) < 0.004);
    const counts = new Map<number, number>();
    for (const r of s.rx) counts.set(r.id, (counts.get(r.id) ?? 0) + 1);
    for (const v of counts.values()) assert.ok(v === 1 || v === 2);
  });

  test('reorder: about the set share arrives late, none lost, each copy intact', () => {
    const s = setup({ reorder: 0.1 }, 5);
    const n = 10_000;
    sendN(s, n, 0.05);
    const ids = s.inner.sent.map((f) => f.id);
    assert.deepEqual(
      [...ids].sort((a, b) => a - b),
      Array.from({ length: n }, (_, i) => i),
    );
    const share = lateShare(ids);
    assert.ok(Math.abs(share - 0.1) < 0.015, `reordered share ${share}`);
    assert.equal(s.link.counters.get('impair.tx.reordered'), Math.round(share * n));
  });

  test('the receive info of a delayed frame travels with it, copied', () => {
    const s = setup({ rx: { delayMs: 5, reorder: 0.5 } }, 6);
    const info = newRxInfo();
    for (let i = 0; i < 200; i++) {
      info.csumPartial = i % 2 === 0;
      info.gsoSize = i;
      s.inner.receive(i, info);
      s.clock.advance(0.1);
    }
    s.inner.receive(1000);
    s.drain();
    assert.equal(s.rx.length, 201);
    for (const r of s.rx) {
      if (r.id === 1000) assert.equal(r.info, undefined);
      else {
        assert.equal(r.info!.gsoSize, r.id);
        assert.equal(r.info!.csumPartial, r.id % 2 === 0);
      }
    }
    assert.ok(lateShare(s.rx.map((r) => r.id)) > 0.1);
  });

  test('setImpairment: removing a delay does not let new frames overtake old ones', () => {
    const s = setup({ tx: { delayMs: 50 } });
    s.link.send(frame(hostMac(2), hostMac(1), 1));
    s.link.setImpairment({});
    s.link.send(frame(hostMac(2), hostMac(1), 2));
    s.drain();
    assert.deepEqual(
      s.inner.sent.map((f) => f.id),
      [1, 2],
    );
    assert.throws(() => s.link.setImpairment({ loss: -1 }), InvalidArgumentError);
  });

  test('rate limit: a full queue refuses and counts; frames leave one serialization apart', () => {
    const s = setup({ tx: { rateBps: 1e6, queueBytes: 200 } });
    // 64-byte frames at 1 Mbit/s take 0.512 ms each.
    const res: boolean[] = [];
    for (let i = 0; i < 6; i++) res.push(s.link.send(frame(hostMac(2), hostMac(1), i)));
    // The first frame finds the serializer idle; the next two fit the 200-byte queue behind it.
    assert.deepEqual(res, [true, true, true, false, false, false]);
    assert.equal(s.link.counters.get('impair.tx.queue'), 3);
    s.drain();
    assert.deepEqual(
      s.inner.sent.map((f) => Math.round(f.t * 1000)),
      [512, 1024, 1536],
    );
  });

  test('close drops what is in flight, closes the inner link, delivers nothing later', () => {
    const s = setup({ delayMs: 5 });
    s.link.send(frame(hostMac(2), hostMac(1), 1));
    s.inner.receive(2);
    assert.equal(s.link.framesInFlight, 2);
    s.link.close();
    assert.equal(s.inner.closed, true);
    assert.equal(s.link.carrier, false);
    assert.equal(s.link.send(frame(hostMac(2), hostMac(1), 3)), false);
    s.drain();
    assert.equal(s.inner.sent.length, 0);
    assert.equal(s.rx.length, 0);
    assert.equal(s.link.framesInFlight, 0);
    assert.throws(() => s.link.setImpairment({}), InvalidStateError);
  });

  test('the same seed gives the same fate; another seed does not', () => {
    const run = (seed: number): string => {
      const s = setup({ loss: 0.05, duplicate: 0.05, reorder: 0.1, delayMs: 1, jitterMs: 2 }, seed);
      for (let i = 0; i < 500; i++) {
        s.link.send(frame(hostMac(2), hostMac(1), i));
        s.inner.receive(i);
        s.clock.advance(0.05);
      }
      s.drain();
      return JSON.stringify([s.inner.sent, s.rx]);
    };
    assert.equal(run(9), run(9));
    assert.notEqual(run(9), run(10));
  });

  test('property: reordering, jitter and duplication never lose or invent a frame', () => {
    fc.assert(
      fc.property(
        fc.integer(),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.array(fc.double({ min: 0, max: 3, noNaN: true }), { minLength: 1, maxLength: 60 }),
        (seed, reorder, duplicate, gaps) => {
          const s = setup({ tx: { reorder, duplicate, delayMs: 1, jitterMs: 1 } }, seed);
          gaps.forEach((g, i) => {
            s.link.send(frame(hostMac(2), hostMac(1), i));
            s.clock.advance(g);
          });
          s.drain();
          const ids = s.inner.sent.map((f) => f.id);
          assert.deepEqual(
            [...new Set(ids)].sort((a, b) => a - b),
            gaps.map((_, i) => i),
          );
          assert.equal(ids.length, gaps.length + s.link.counters.get('impair.tx.dup'));
          assert.equal(s.link.framesInFlight, 0);
        },
      ),
      { numRuns: 150 },
    );
  });
});
