import { Worker } from 'node:worker_threads';

/*
 * Fresh memory costs the thread that first writes to it a page fault and a zeroed page. On the
 * two-core VM of the 5,000-connection soak that is about 14 µs of CPU a 4 KiB page (7 in the
 * guest, the rest the hypervisor backing it), against 0.5 µs to copy a page into memory already
 * touched; bare metal pays less, but never nothing. In the connect burst the host's main thread
 * was the first to write every new connection's block (its record and ring headers when the
 * transfer prepares it, the first 32 KiB of its send ring when the service writes the body): 40 %
 * of that thread, which also runs every handshake, every placement and every refill of every
 * flowing connection's send ring, so downloads already flowing waited seconds for their next
 * bytes behind it.
 *
 * So a thread of its own touches slab memory ahead of the allocator (allocConnBlock): it adds 0
 * to one word of each page with Atomics.add, a write that leaves whatever is there as it was, so
 * it may run over memory that is already in use (a block handed out, a ring the host is writing
 * to) and the allocator never waits for it. Nothing comes back: if it falls behind, the page is
 * faulted by whoever gets there first, as before.
 */

/** The toucher's whole program (plain JavaScript: it runs as it is, compiled build or not). */
const TOUCHER_SOURCE = `
const { parentPort } = require('node:worker_threads');
parentPort.on('message', (m) => {
  const w = new Int32Array(m.sab);
  const end = Math.min(w.length, m.to >>> 2);
  for (let i = (m.from >>> 2) & ~1023; i < end; i += 1024) Atomics.add(w, i, 0);
  if (m.ack) parentPort.postMessage(m.to);
});
`;

/** One worker that touches the pages of shared buffers it is given, in the order given. */
export class SlabToucher {
  private worker: Worker | null = null;
  private broken = false;
  /** Bytes handed to the thread so far (diagnostics and tests). */
  handed = 0;
  private readonly acks: ((to: number) => void)[] = [];

  /** Touch every page of `sab` in [from, to) on the toucher's thread, soon. */
  touch(sab: SharedArrayBuffer, from: number, to: number): void {
    if (to <= from || this.broken) return;
    const w = this.start();
    if (w === null) return;
    w.postMessage({ sab, from, to, ack: false });
    this.handed += to - from;
  }

  /** The same, resolved once those pages are touched (tests). */
  touchAndWait(sab: SharedArrayBuffer, from: number, to: number): Promise<void> {
    const w = this.start();
    if (w === null) return Promise.reject(new Error('the slab toucher could not start'));
    // Awaited, the answer must keep the process up until it comes.
    w.ref();
    return new Promise((resolve) => {
      this.acks.push(() => {
        if (this.acks.length === 0) w.unref();
        resolve();
      });
      w.postMessage({ sab, from, to, ack: true });
      this.handed += to - from;
    });
  }

  private start(): Worker | null {
    if (this.worker !== null || this.broken) return this.worker;
    try {
      const w = new Worker(TOUCHER_SOURCE, { eval: true });
      w.on('message', (to: number) => this.acks.shift()?.(to));
      // Without it pages are faulted where they are used, as before: nothing to report.
      w.on('error', () => this.stop());
      w.on('exit', () => this.stop());
      // A helper, never a reason for the process to stay up (after the listeners, which ref it).
      w.unref();
      this.worker = w;
    } catch {
      this.broken = true;
    }
    return this.worker;
  }

  private stop(): void {
    this.broken = true;
    this.worker = null;
  }
}
