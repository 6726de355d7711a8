import { closeSync, openSync, writeSync } from 'node:fs';
import type { Clock } from '../core/clock.ts';
import { InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import type { Link, LinkGsoOptions, RxOffloadInfo } from './link.ts';
import { LinkWrapper } from './link-wrapper.ts';

/** Anything that takes bytes; the writer hands it chunks it may keep. */
export interface ByteSink {
  write(chunk: Uint8Array): void;
}

export interface PcapWriterOptions {
  /** Source of record timestamps; a VirtualClock gives byte-identical captures for a seed. */
  clock: Clock;
  /** Added to clock time (ms) to form the Unix timestamp; default 0. */
  epochMs?: number;
  /** Longest stored frame, 1..65535 (default 65535); longer frames are truncated. */
  snapLen?: number;
  /** Bytes collected before they are written out (default 1 MiB). */
  bufferBytes?: number;
}

const PCAP_MAGIC = 0xa1b2c3d4;
const LINKTYPE_ETHERNET = 1;
const GLOBAL_HEADER = 24;
const RECORD_HEADER = 16;

/**
 * Classic libpcap capture (microsecond timestamps, Ethernet link type), written in the host's
 * little-endian order as readers expect from the magic number. Writes are buffered and done
 * synchronously when the buffer fills, on `flush()` and on `close()`.
 */
export class PcapWriter {
  readonly snapLen: number;
  private readonly clock: Clock;
  private readonly epochMs: number;
  private fd: number | null = null;
  private readonly sink: ByteSink | null = null;
  private buf: Uint8Array;
  private dv: DataView;
  private pos = 0;
  private closedFlag = false;
  /** Frames recorded so far. */
  frames = 0;

  /** `clockOrOpts`: the Clock for timestamps, or options that include it. */
  constructor(target: string | ByteSink, clockOrOpts: Clock | PcapWriterOptions) {
    const opts: PcapWriterOptions =
      clockOrOpts && 'clock' in clockOrOpts ? clockOrOpts : { clock: clockOrOpts as Clock };
    if (!opts.clock || typeof opts.clock.now !== 'function') {
      throw new InvalidArgumentError('PcapWriter needs a clock');
    }
    const snapLen = opts.snapLen ?? 65535;
    if (!Number.isInteger(snapLen) || snapLen < 1 || snapLen > 65535) {
      throw new InvalidArgumentError(`snapLen must be an integer in 1..65535, got ${String(snapLen)}`);
    }
    const bufferBytes = opts.bufferBytes ?? 1 << 20;
    if (!Number.isInteger(bufferBytes) || bufferBytes < 1) {
      throw new InvalidArgumentError(`bufferBytes must be a positive integer, got ${String(bufferBytes)}`);
    }
    const epochMs = opts.epochMs ?? 0;
    if (!Number.isFinite(epochMs)) throw new InvalidArgumentError('epochMs must be finite');
    this.snapLen = snapLen;
    this.clock = opts.clock;
    this.epochMs = epochMs;
    // Room for at least one full record, so a record never has to be split.
    this.buf = new Uint8Array(Math.max(bufferBytes, GLOBAL_HEADER + RECORD_HEADER + snapLen));
    this.dv = new DataView(this.buf.buffer);
    if (typeof target === 'string') {
      try {
        this.fd = openSync(target, 'w');
      } catch (err) {
        throw new InvalidArgumentError(`cannot open capture file ${target}: ${(err as Error).message}`);
      }
    } else if (target && typeof target.write === 'function') {
      this.sink = target;
    } else {
      throw new InvalidArgumentError('PcapWriter target must be a file path or have write(chunk)');
    }
    const dv = this.dv;
    dv.setUint32(0, PCAP_MAGIC, true);
    dv.setUint16(4, 2, true);
    dv.setUint16(6, 4, true);
    dv.setInt32(8, 0, true); // thiszone: timestamps are UTC
    dv.setUint32(12, 0, true); // sigfigs
    dv.setUint32(16, snapLen, true);
    dv.setUint32(20, LINKTYPE_ETHERNET, true);
    this.pos = GLOBAL_HEADER;
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** Record one frame, stamped with `atMs` (clock time) or now. The frame is copied. */
  writeFrame(frame: Uint8Array, atMs?: number): void {
    if (this.closedFlag) throw new InvalidStateError('PcapWriter is closed');
    const incl = Math.min(frame.length, this.snapLen);
    if (this.pos + RECORD_HEADER + incl > this.buf.length) this.flush();
    const us = Math.round((this.epochMs + (atMs ?? this.clock.now())) * 1000);
    const t = Math.max(us, 0);
    const sec = Math.floor(t / 1e6);
    const dv = this.dv;
    const p = this.pos;
    dv.setUint32(p, sec >>> 0, true);
    dv.setUint32(p + 4, t - sec * 1e6, true);
    dv.setUint32(p + 8, incl, true);
    dv.setUint32(p + 12, frame.length, true);
    this.buf.set(incl === frame.length ? frame : frame.subarray(0, incl), p + RECORD_HEADER);
    this.pos = p + RECORD_HEADER + incl;
    this.frames++;
  }

  /** Write out what is buffered. */
  flush(): void {
    if (this.pos === 0) return;
    if (this.fd !== null) {
      let off = 0;
      while (off < this.pos) off += writeSync(this.fd, this.buf, off, this.pos - off);
    } else {
      this.sink!.write(this.buf.slice(0, this.pos));
    }
    this.pos = 0;
  }

  /** Flush and release the file; later writes throw InvalidStateError. Closing twice is harmless. */
  /**
   * Append records another PcapWriter made (one per worker thread, say), whole and in order:
   * `records` holds complete records and no file header.
   */
  writeRecords(records: Uint8Array): void {
    if (this.closedFlag) throw new InvalidStateError('PcapWriter is closed');
    if (this.pos + records.length > this.buf.length) this.flush();
    if (records.length > this.buf.length) {
      if (this.fd !== null) {
        let off = 0;
        while (off < records.length) off += writeSync(this.fd, records, off, records.length - off);
      } else this.sink!.write(records.slice());
      return;
    }
    this.buf.set(records, this.pos);
    this.pos += records.length;
  }

  close(): void {
    if (this.closedFlag) return;
    try {
      this.flush();
    } finally {
      this.closedFlag = true;
      if (this.fd !== null) {
        closeSync(this.fd);
        this.fd = null;
      }
    }
  }
}

/**
 * A Link that behaves exactly like `link` and records, into `writer`, every frame it accepted for
 * sending and every frame it received. Closing the returned link closes `link`, not the writer.
 */
export function capture(link: Link, writer: PcapWriter): Link {
  return new CapturedLink(link, writer);
}

class CapturedLink extends LinkWrapper {
  constructor(
    inner: Link,
    private readonly writer: PcapWriter,
  ) {
    super(inner);
  }
  override send(frame: Uint8Array): boolean {
    // Record only what went onto the wire, as a sniffer on the interface would.
    const ok = this.inner.send(frame);
    if (ok && !this.writer.closed) this.writer.writeFrame(frame);
    return ok;
  }
  /** Offloaded sends are recorded as the super-segment we handed over (as Linux captures do). */
  protected override sendOffloaded(frame: Uint8Array, opts: LinkGsoOptions): boolean {
    const ok = this.inner.sendGso!(frame, opts);
    if (ok && !this.writer.closed) this.writer.writeFrame(frame);
    return ok;
  }
  override onFrame(handler: (frame: Uint8Array, info?: RxOffloadInfo) => void): void {
    const w = this.writer;
    this.inner.onFrame((frame, info) => {
      if (!w.closed) w.writeFrame(frame);
      handler(frame, info);
    });
  }
}
