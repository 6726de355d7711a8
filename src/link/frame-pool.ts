/**
 * Pooled, reference-counted frame buffers. A frame is copied once when a port accepts it; a
 * flood or a duplicate takes another reference instead of another copy.
 */

/** Size classes: powers of two from 128 B to 64 KiB, then one class for a full 64 KiB jumbo. */
const MIN_SHIFT = 7;
const POW2_CLASSES = 10; // 128 .. 65536
/** Largest Ethernet frame a port can carry: 65535 payload + 14 header + 4 VLAN tag, rounded up. */
export const MAX_POOLED_FRAME = 65600;

function classOf(len: number): number {
  if (len <= 1 << MIN_SHIFT) return 0;
  const c = 32 - Math.clz32(len - 1) - MIN_SHIFT;
  return Math.min(c, POW2_CLASSES);
}

function sizeOfClass(c: number): number {
  return c < POW2_CLASSES ? 1 << (c + MIN_SHIFT) : MAX_POOLED_FRAME;
}

/** One pooled frame buffer: capacity fixed by its size class, `len` bytes in use, reference counted. */
export class PoolBuf {
  readonly data: Uint8Array;
  len = 0;
  refs = 0;
  /** Payload bytes per wire segment of an offloaded super-segment; 0 for an ordinary frame. */
  gsoSize = 0;
  /**
   * The rest of a link's receive offload facts (RxOffloadInfo), for a frame that waits in an
   * impaired lane on its way to a receive handler; meaningful only while `hasInfo`.
   */
  hasInfo = false;
  csumPartial = false;
  csumValid = false;
  gsoType = 0;
  private v: Uint8Array;
  private vLen = -1;
  constructor(
    readonly cls: number,
    size: number,
  ) {
    this.data = new Uint8Array(size);
    this.v = this.data;
  }
  /** The frame bytes; the view object is reused while the length stays the same. */
  view(): Uint8Array {
    if (this.vLen !== this.len) {
      this.v = this.data.subarray(0, this.len);
      this.vLen = this.len;
    }
    return this.v;
  }
}

/** Frame buffers recycled by size class, so the switch and impaired links allocate nothing per frame. */
export class FramePool {
  private readonly free: PoolBuf[][] = [];
  private freeBytes = 0;
  /** Buffers currently handed out (for leak checks in tests). */
  outstanding = 0;

  /** `maxFreeBytes` bounds what the pool keeps after a burst; the rest goes to the GC. */
  constructor(private readonly maxFreeBytes = 64 * 1024 * 1024) {
    for (let c = 0; c <= POW2_CLASSES; c++) this.free.push([]);
  }

  /** Copy `src` into a pooled buffer holding one reference. `src.length` must be <= MAX_POOLED_FRAME. */
  take(src: Uint8Array): PoolBuf {
    const len = src.length;
    const c = classOf(len);
    const list = this.free[c]!;
    let b = list.pop();
    if (b === undefined) b = new PoolBuf(c, sizeOfClass(c));
    else this.freeBytes -= b.data.length;
    b.data.set(src);
    b.len = len;
    b.refs = 1;
    b.gsoSize = 0;
    b.hasInfo = false;
    this.outstanding++;
    return b;
  }

  retain(b: PoolBuf): void {
    b.refs++;
  }

  release(b: PoolBuf): void {
    if (--b.refs !== 0) return;
    this.outstanding--;
    const size = b.data.length;
    if (this.freeBytes + size > this.maxFreeBytes) return;
    this.freeBytes += size;
    this.free[b.cls]!.push(b);
  }
}
