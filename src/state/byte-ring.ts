/**
 * A bounded FIFO of bytes over one ArrayBuffer (or SharedArrayBuffer, so a worker NIC and the
 * host can both see it). TCP's send queue (bytes from snd.una on) and receive queue (in-order
 * bytes not yet read by the application) are ByteRings, which is what lets them travel with a
 * connection's state.
 */
export class ByteRing {
  private buf: Uint8Array;
  private head = 0;
  private len = 0;

  constructor(
    capacity: number,
    /** Upper bound the ring may grow to; growth doubles, so small connections stay small. */
    readonly maxCapacity: number = capacity,
  ) {
    this.buf = new Uint8Array(Math.max(16, Math.min(capacity, maxCapacity)));
  }

  get length(): number {
    return this.len;
  }
  get capacity(): number {
    return this.buf.length;
  }
  /** Bytes that can still be written without exceeding maxCapacity. */
  get free(): number {
    return this.maxCapacity - this.len;
  }

  /** Append up to `len` bytes; returns how many were taken. */
  write(src: Uint8Array, off = 0, len = src.length - off): number {
    const n = Math.min(len, this.maxCapacity - this.len);
    if (n <= 0) return 0;
    if (this.len + n > this.buf.length) this.grow(this.len + n);
    const cap = this.buf.length;
    const tail = (this.head + this.len) % cap;
    const first = Math.min(n, cap - tail);
    this.buf.set(src.subarray(off, off + first), tail);
    if (n > first) this.buf.set(src.subarray(off + first, off + n), 0);
    this.len += n;
    return n;
  }

  /** Copy `len` bytes starting `from` bytes after the head into `dst` at `dstOff`, without consuming. */
  peek(from: number, dst: Uint8Array, dstOff: number, len: number): number {
    const n = Math.max(0, Math.min(len, this.len - from));
    if (n === 0) return 0;
    const cap = this.buf.length;
    const start = (this.head + from) % cap;
    const first = Math.min(n, cap - start);
    dst.set(this.buf.subarray(start, start + first), dstOff);
    if (n > first) dst.set(this.buf.subarray(0, n - first), dstOff + first);
    return n;
  }

  /** Drop `n` bytes from the head. */
  consume(n: number): void {
    const k = Math.min(n, this.len);
    this.head = (this.head + k) % this.buf.length;
    this.len -= k;
    if (this.len === 0) this.head = 0;
  }

  /** Copy out and consume up to `len` bytes. */
  read(dst: Uint8Array, dstOff = 0, len = dst.length - dstOff): number {
    const n = this.peek(0, dst, dstOff, len);
    this.consume(n);
    return n;
  }

  /** All queued bytes as a fresh array (for state transfer and tests, not hot paths). */
  toArray(): Uint8Array {
    const out = new Uint8Array(this.len);
    this.peek(0, out, 0, this.len);
    return out;
  }

  clear(): void {
    this.head = 0;
    this.len = 0;
  }

  private grow(need: number): void {
    let cap = this.buf.length;
    while (cap < need) cap *= 2;
    cap = Math.min(Math.max(cap, need), this.maxCapacity);
    const next = new Uint8Array(cap);
    this.peek(0, next, 0, this.len);
    this.buf = next;
    this.head = 0;
  }
}
