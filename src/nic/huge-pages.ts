import { createRequire } from 'node:module';

/*
 * Transparent huge pages for the connections' shared slabs (madvise(MADV_HUGEPAGE), through koffi,
 * which the TAP link already loads). A slab's pages are first touched by the thread that writes a
 * ring there, in a connect burst serve's main thread, and on this project's VMs (Firecracker) each
 * fresh 4 KiB page costs a guest fault plus a host fault: about 10 µs quiet, several times that
 * with both cores busy, 40 % of serve's main thread in a burst of 5,000 accepts. One fault a 2 MiB
 * page takes the guest's part away; the host's remains. Where THP is `madvise` (the usual
 * distribution default, and this VM's) nothing happens without the advice; where it is `always`
 * the advice changes nothing, and where it is `never`, or the platform is not Linux, or koffi or
 * libc cannot be loaded, slabs stay on small pages, silently: the advice is an optimisation,
 * never a condition.
 */

const MADV_HUGEPAGE = 14;
const HUGE = 2 << 20;

interface Madvise {
  madvise(at: Uint8Array, len: number): number;
  address(buf: Uint8Array): bigint;
}

let libc: Madvise | null | undefined;

function load(): Madvise | null {
  if (libc !== undefined) return libc;
  libc = null;
  if (process.platform !== 'linux' || process.env.CHIMNEY_HUGE_PAGES === '0') return null;
  try {
    const koffi = createRequire(import.meta.url)('koffi') as {
      load(name: string): { func(decl: string): (...a: unknown[]) => unknown };
    };
    const lib = koffi.load('libc.so.6');
    const madvise = lib.func('int madvise(void *addr, size_t len, int advice)');
    // memset of 0 bytes returns its argument: the address of a buffer's bytes, to align on.
    const addressOf = lib.func('uintptr_t memset(void *s, int c, size_t n)');
    libc = {
      madvise: (at, len) => madvise(at, len, MADV_HUGEPAGE) as number,
      address: (buf) => BigInt(addressOf(buf, 0, 0) as number | bigint),
    };
  } catch {
    // No koffi or no glibc: small pages.
  }
  return libc;
}

/**
 * Ask for huge pages over the 2 MiB-aligned interior of `sab` (its ends, a part of a huge page,
 * stay small). Call before anything touches it: a page already faulted in stays small until the
 * kernel's background collapse, if ever. True if the kernel took the advice.
 */
export function adviseHugePages(sab: SharedArrayBuffer): boolean {
  const c = load();
  if (c === null || sab.byteLength < 2 * HUGE) return false;
  const bytes = new Uint8Array(sab);
  const addr = c.address(bytes);
  const start = Number(((addr + BigInt(HUGE - 1)) & ~BigInt(HUGE - 1)) - addr);
  const len = Math.floor((sab.byteLength - start) / HUGE) * HUGE;
  if (len <= 0) return false;
  return c.madvise(bytes.subarray(start), len) === 0;
}
