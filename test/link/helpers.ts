import { VirtualClock } from '../../src/core/clock.ts';
import { SeededRandom } from '../../src/core/random.ts';
import type { ImpairmentSpec } from '../../src/link/impairment.ts';
import { MemorySwitch, type SwitchPort } from '../../src/link/memory-switch.ts';

export const BROADCAST = 0xffffffffffff;

/** A locally administered unicast MAC for host `n`. */
export function hostMac(n: number): number {
  return 0x020000000000 + n;
}

export function writeMac(out: Uint8Array, off: number, mac: number): void {
  const hi = Math.floor(mac / 0x100000000);
  const lo = mac >>> 0;
  out[off] = (hi >>> 8) & 0xff;
  out[off + 1] = hi & 0xff;
  out[off + 2] = lo >>> 24;
  out[off + 3] = (lo >>> 16) & 0xff;
  out[off + 4] = (lo >>> 8) & 0xff;
  out[off + 5] = lo & 0xff;
}

/** An Ethernet frame carrying `id` as a big-endian u32 right after the header. */
export function frame(dst: number, src: number, id: number, len = 64): Uint8Array {
  const f = new Uint8Array(len);
  fillFrame(f, dst, src, id);
  return f;
}

export function fillFrame(f: Uint8Array, dst: number, src: number, id: number): void {
  writeMac(f, 0, dst);
  writeMac(f, 6, src);
  f[12] = 0x08;
  f[13] = 0x00;
  new DataView(f.buffer, f.byteOffset, f.byteLength).setUint32(14, id >>> 0);
}

export function idOf(f: Uint8Array): number {
  return new DataView(f.buffer, f.byteOffset, f.byteLength).getUint32(14);
}

export interface Rx {
  port: number;
  id: number;
  t: number;
  len: number;
}

export interface Net {
  clock: VirtualClock;
  sw: MemorySwitch;
  ports: SwitchPort[];
  rx: Rx[];
  /** Received ids per port. */
  ids(port: number): number[];
  /** Run virtual time until nothing is pending. */
  drain(): void;
}

export function makeNet(
  seed: number,
  nPorts: number,
  opts: { impair?: ImpairmentSpec; mtu?: number; ageMs?: number } = {},
): Net {
  const clock = new VirtualClock();
  const sw = new MemorySwitch({ clock, random: new SeededRandom(seed), name: 'sw', ageMs: opts.ageMs });
  const rx: Rx[] = [];
  const ports: SwitchPort[] = [];
  for (let i = 0; i < nPorts; i++) {
    const p = sw.addPort({ mtu: opts.mtu, impair: opts.impair });
    p.onFrame((f) => rx.push({ port: i, id: idOf(f), t: clock.now(), len: f.length }));
    ports.push(p);
  }
  return {
    clock,
    sw,
    ports,
    rx,
    ids: (port) => rx.filter((r) => r.port === port).map((r) => r.id),
    drain: () => {
      let guard = 0;
      while (clock.pending > 0 && guard++ < 10_000_000) clock.step();
    },
  };
}
