/**
 * Per-segment loss (Impairment.lossPerSegment): a wire behind TSO loses MSS segments one by one,
 * where nftables on a veth drops a whole GSO super-segment.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { InvalidArgumentError } from '../../src/core/errors.ts';
import { SeededRandom } from '../../src/core/random.ts';
import { type Impairment, validateImpairment } from '../../src/link/impairment.ts';
import { MemorySwitch } from '../../src/link/memory-switch.ts';
import { frame, hostMac, writeMac } from './helpers.ts';

const MSS = 1000;
const SEGS = 10;
const ISN = 0x10000;

/** An IPv4 TCP super-segment from host 1 to host 2 carrying SEGS * MSS payload bytes. */
function superSegment(): Uint8Array {
  const f = new Uint8Array(54 + SEGS * MSS);
  const v = new DataView(f.buffer);
  writeMac(f, 0, hostMac(2));
  writeMac(f, 6, hostMac(1));
  v.setUint16(12, 0x0800);
  f[14] = 0x45;
  v.setUint16(16, f.length - 14);
  f[22] = 64;
  f[23] = 6;
  v.setUint32(26, 0x0a000001);
  v.setUint32(30, 0x0a000002);
  v.setUint16(34, 40000);
  v.setUint16(36, 9);
  v.setUint32(38, ISN);
  f[46] = 5 << 4;
  f[47] = 0x18;
  return f;
}

/** Sends one super-segment from a to b, whose rx lane has `imp`; returns what b received. */
function run(seed: number, imp: Impairment): { seqs: number[]; lens: number[]; lossCount: number } {
  const clock = new VirtualClock();
  const sw = new MemorySwitch({ clock, random: new SeededRandom(seed) });
  const a = sw.addPort({ offload: true });
  const b = sw.addPort({ offload: true });
  const seqs: number[] = [];
  const lens: number[] = [];
  b.onFrame((f) => {
    if (f.length < 54) return;
    seqs.push(new DataView(f.buffer, f.byteOffset).getUint32(38) - ISN);
    lens.push(f.length - 54);
  });
  b.send(frame(hostMac(1), hostMac(2), 0));
  clock.runDue();
  b.impair({ rx: imp });
  assert.equal(a.sendGso(superSegment(), { gsoSize: MSS, csumStart: 34, csumOffset: 16 }), true);
  while (clock.pending > 0) clock.step();
  return { seqs, lens, lossCount: sw.stats.get('drop.loss') };
}

/** The segment indices the lane's draws must drop: one float per segment, in order. */
function seededDrops(seed: number, loss: number): number[] {
  const r = new SeededRandom(seed);
  const out: number[] = [];
  for (let i = 0; i < SEGS; i++) if (r.float() < loss) out.push(i);
  return out;
}

describe('per-segment loss on a lane', () => {
  test('a 10-MSS super-segment arrives as its segments with exactly the seeded ones missing', () => {
    let checked = 0;
    for (let seed = 1; seed <= 20; seed++) {
      const drops = seededDrops(seed, 0.3);
      const got = run(seed, { loss: 0.3, lossPerSegment: true });
      if (drops.length === 0) {
        // Nothing lost: the super-segment goes on whole, as GRO would rebuild it.
        assert.deepEqual(got.seqs, [0]);
        assert.deepEqual(got.lens, [SEGS * MSS]);
        continue;
      }
      const want = [];
      for (let i = 0; i < SEGS; i++) if (!drops.includes(i)) want.push(i * MSS);
      assert.deepEqual(got.seqs, want, `seed ${seed}: drops ${drops}`);
      assert.equal(got.lossCount, drops.length, 'each lost segment is counted');
      assert.ok(
        got.lens.every((n) => n === MSS),
        'survivors are single segments',
      );
      checked++;
    }
    assert.ok(checked >= 10, `only ${checked} seeds lost a segment`);
  });

  test('without lossPerSegment one draw takes the whole super-segment or nothing', () => {
    for (let seed = 1; seed <= 10; seed++) {
      const lost = new SeededRandom(seed).float() < 0.3;
      const got = run(seed, { loss: 0.3 });
      assert.deepEqual(got.lens, lost ? [] : [SEGS * MSS]);
    }
  });

  test('lossPerSegment must be a boolean', () => {
    assert.throws(
      () => validateImpairment({ loss: 0.1, lossPerSegment: 1 as unknown as boolean }),
      InvalidArgumentError,
    );
    validateImpairment({ rx: { loss: 0.1, lossPerSegment: true } });
  });
});
