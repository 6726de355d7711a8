/**
 * A Link over a Linux TAP device.
 *
 * Setup is all ioctls through koffi (tap-sys.ts): TUNSETIFF on /dev/net/tun, the virtio-net
 * header and offloads, and SIOCSIFMTU / SIOCSIFFLAGS on a datagram socket to set the MTU and
 * bring the device up (ioctls rather than spawning `ip`, so open() takes microseconds and needs
 * no iproute2).
 *
 * Reading: the fd is non-blocking. A burst is drained on the main thread with read(2) straight
 * into one reusable buffer (a failed read is a return code, not an exception), up to a budget
 * per event-loop turn. When the queue is empty, one poll(2) on [tap fd, wake pipe] waits on a
 * koffi async worker, so an idle link costs no CPU and a busy one does no thread hop per frame.
 * close() writes to the wake pipe so that wait ends at once. Each open TapLink therefore holds one
 * libuv pool thread while idle: with many links, raise UV_THREADPOOL_SIZE.
 *
 * Carrier: every `carrierPollMs` (10 ms) SIOCGIFFLAGS on the device name; up = IFF_UP and
 * IFF_RUNNING. A write failing with EIO (device down) drops carrier at once. A device that
 * disappears (ENODEV, EBADFD, or its ifindex changed) is carrier down for good. A down, however
 * found, is dated from the last write that went out (the device was up then) when that is later
 * than the last poll.
 */
import { fstatSync, readFileSync } from 'node:fs';
import { type Clock, RealClock, type Timer } from '../core/clock.ts';
import { Counters } from '../core/counters.ts';
import { InvalidArgumentError, InvalidStateError, LinkError } from '../core/errors.ts';
import { readU16 } from '../wire/addr.ts';
import { EtherType } from '../wire/ethernet.ts';
import { ethL3Offset, ipv4HeaderLen, ipv4Proto, tcpHeaderLen } from '../wire/fields.ts';
import { GsoSegmenter } from './gso-segment.ts';
import type { Link } from './link.ts';
import {
  AF_INET,
  EAGAIN,
  EINTR,
  errnoNames,
  getIfName,
  IFF_NAPI,
  IFF_NAPI_FRAGS,
  IFF_NO_PI,
  IFF_RUNNING,
  IFF_TAP,
  IFF_UP,
  IFF_VNET_HDR,
  IFREQ_SIZE,
  type Libc,
  loadLibc,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDWR,
  POLLIN,
  putIfName,
  SIOCGIFFLAGS,
  SIOCGIFINDEX,
  SIOCGIFMTU,
  SIOCSIFFLAGS,
  SIOCSIFMTU,
  SOCK_DGRAM,
  TUN_F_CSUM,
  TUN_F_TSO4,
  TUN_F_TSO6,
  TUNSETIFF,
  TUNSETOFFLOAD,
  TUNSETPERSIST,
  TUNSETVNETHDRSZ,
  TUNSETVNETLE,
} from './tap-sys.ts';
import {
  decodeVnetHdr,
  encodeVnetHdr,
  newRxInfo,
  pseudoHeaderSum,
  pseudoHeaderSum6,
  type TapRxInfo,
  VNET_F_NEEDS_CSUM,
  VNET_GSO_NONE,
  VNET_GSO_TCPV4,
  VNET_GSO_TCPV6,
  VNET_HDR_LEN,
} from './tap-vnet.ts';

export interface TapLinkOptions {
  /** Interface name, 1..15 characters. */
  name: string;
  /** Create the device if it does not exist (default true). With false a missing device is ENODEV. */
  create?: boolean;
  /** Set the device MTU (68..65521); by default the device keeps its MTU. */
  mtu?: number;
  /** Use the virtio-net header and ask for checksum and TSO offload (default true). */
  vnetHdr?: boolean;
  /** Keep a device this call creates after close (default false: it vanishes with our fd). */
  persist?: boolean;
  /** Bring the device administratively up (default true). */
  up?: boolean;
  clock?: Clock;
  counters?: Counters;
  /** Clone device to open (default /dev/net/tun); for tests and unusual systems. */
  tunPath?: string;
  /** Carrier poll interval in ms (default 10). */
  carrierPollMs?: number;
  /** Frames read per event-loop turn before yielding to other work (default 256). */
  readBudget?: number;
  /**
   * The longest one poll for the next frame waits on the libuv pool, ms (default POLL_MAX_MS);
   * tests of a thread stopped while its poll waits set it beyond their own bounds.
   */
  pollMaxMs?: number;
  /**
   * Hand the kernel each frame's payload as page fragments of its exact size (IFF_NAPI_FRAGS,
   * with the virtio-net header; default true, and off by itself where the kernel refuses it).
   * See `TapLink.napiFrags`.
   */
  napiFrags?: boolean;
  /**
   * Told everything the open holds of the process (descriptors, native memory) each time it makes
   * or frees some of it, from the first descriptor on: a thread killed while it opens (a worker's)
   * leaks whatever was not listed somewhere that outlives it. The object is the open's own and
   * changes after the call. Once open, `held` and `onRelease` say the same.
   */
  onHeld?: (held: TapHeld) => void;
  /**
   * The control socket, the clone device (`tunPath`) and the wake pipe made already, by a thread that outlives
   * this one and lists them where it frees them if this one is killed (`openTapDescriptors`): no
   * kill can then fall between a descriptor's making and its listing. The open takes them as its
   * own from its first step; until then (bad options), they stay the caller's.
   */
  fds?: TapDescriptors;
}

/** See TapLinkOptions.fds. */
export interface TapDescriptors {
  ctl: number;
  tun: number;
  /** The wake pipe: read end, write end. */
  wake: [number, number];
  /**
   * The native send buffer (TAP_NATIVE_TBUF_BYTES) and iovec array (TAP_NATIVE_IOV_BYTES) for
   * napiFrags, allocated and listed by the same thread as the descriptors: allocated in the
   * opening thread, a kill between an allocation and its listing leaked it. The link holds them
   * (and frees them at its close) whether or not the kernel then takes IFF_NAPI_FRAGS.
   */
  native?: { tbuf: bigint; iov: bigint };
}

export interface GsoSendOptions {
  /**
   * TCP payload bytes per segment the kernel cuts the frame into (the MSS). 0 asks only for
   * checksum offload: the frame must then fit the MTU, and may be TCP or UDP.
   */
  gsoSize: number;
  /** Offset in the frame of the L4 header, where the checksum sum starts. */
  csumStart: number;
  /** Offset of the checksum field from csumStart: 16 for TCP, 6 for UDP. */
  csumOffset: number;
}

export type TapFrameHandler = (frame: Uint8Array, info: TapRxInfo) => void;

const MAX_FRAME = 65535 + 18;
/**
 * The longest frame the kernel takes in fragments (tun_napi_alloc_frags: ETH_MAX_MTU minus
 * NET_SKB_PAD and NET_IP_ALIGN); a longer super-segment is cut here into wire segments.
 */
const NAPI_MAX_FRAME = 65535 - 64 - 2;
/** A page: the largest fragment tun_napi_alloc_frags takes. */
const FRAG_BYTES = 4096;
/** The vnet header, the headers, and at most MAX_SKB_FRAGS (17) fragments. */
const MAX_IOV = 19;
/** Sizes of the native send buffer and iovec array a link with napiFrags writes from. */
const TAP_NATIVE_TBUF_BYTES = VNET_HDR_LEN + MAX_FRAME;
const TAP_NATIVE_IOV_BYTES = MAX_IOV * 16;
/** Something to block on for a few milliseconds (Atomics.wait on a word nobody changes). */
const BLOCK = new Int32Array(new SharedArrayBuffer(4));

/**
 * The longest one poll for the next frame waits on the libuv pool before it is asked again. A
 * thread cannot exit while its request waits there, and a worker killed while its TAP is idle
 * (after a kill the switch steers the team's frames to the other members) exited only at its next
 * broadcast frame, many seconds later; a bound costs one pool round trip per idle link and period.
 */
const POLL_MAX_MS = 200;

/**
 * How long `TapLink.openWhenFree` waits for a TAP's reader to let it go, ms: a reader that just
 * closed it holds it until its poll on a pool thread sees the wake-up, and at load that thread
 * waits its turn to run for hundreds of ms.
 */
export const TAP_FREE_BOUND_MS = 2000;
/**
 * The errors of a TUNSETIFF that found the TAP held by another reader: only those are a wait for it
 * to be let go (openWhenFree) and leave given descriptors unattached (kept for the next try). An
 * EBUSY of a later step (an MTU or flags ioctl) comes from a descriptor already attached.
 */
const tunBusy = new WeakSet<object>();

/** Between openWhenFree's tries. */
const TAP_FREE_RETRY_MS = 10;

/** Received frames up to this length get a cached view per length instead of a fresh subarray. */
const VIEW_CACHE_MAX = 2048;
const NAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;

/**
 * The Ethernet, IP and TCP or UDP headers of a frame, which the kernel must find in an skb's head;
 * the whole frame for anything else.
 */
function headersLen(frame: Uint8Array, len: number): number {
  const ipOff = len >= 14 ? ethL3Offset(frame) : -1;
  if (ipOff < 0 || len < ipOff + 40) return len;
  const type = readU16(frame, ipOff - 2);
  let l4: number;
  let proto: number;
  if (type === EtherType.IPV4) {
    // A fragment's payload is not an L4 header.
    if ((readU16(frame, ipOff + 6) & 0x3fff) !== 0) return len;
    l4 = ipOff + ipv4HeaderLen(frame, ipOff);
    proto = ipv4Proto(frame, ipOff);
  } else if (type === EtherType.IPV6) {
    l4 = ipOff + 40;
    proto = frame[ipOff + 6]!;
  } else return len;
  const end = proto === 6 && len >= l4 + 20 ? l4 + tcpHeaderLen(frame, l4) : proto === 17 ? l4 + 8 : len;
  return Math.min(end, len);
}

/** iovec `i` of a little-endian 64-bit array seen as 32-bit words. */
function setIov(iov: Uint32Array, i: number, base: number, len: number): void {
  iov[i * 4] = base >>> 0;
  iov[i * 4 + 1] = Math.floor(base / 0x1_0000_0000);
  iov[i * 4 + 2] = len;
  iov[i * 4 + 3] = 0;
}

function errName(e: number): string {
  return errnoNames[e] ?? `errno ${e}`;
}

/** A `Link` on a Linux TAP device (/dev/net/tun, vnet headers for TSO and partial checksums). */
export class TapLink implements Link {
  readonly name: string;
  /** The device MTU at open (after applying the `mtu` option). */
  readonly mtu: number;
  /** Whether this open created the device (and so close() removes it unless `persist`). */
  readonly created: boolean;
  readonly vnetHdr: boolean;
  /**
   * Whether frames go to the kernel as fragments of their exact size (IFF_NAPI_FRAGS). A plain
   * write(2) to a TAP makes the kernel copy the payload into pages of a power-of-two order
   * (alloc_skb_with_frags) or, below a page, into a 2 KB+ buffer (tun_build_skb), and a Linux
   * receiver charges every byte of those to its receive buffer: 5,000 readers with 32 KB buffers
   * held 1.14-1.17 bytes of memory for every byte of Chimney's data queued, against 1.01-1.03 for
   * the same data from Linux's own TCP, whose segments are charged what they carry; their
   * windows, computed from the first segment's ratio, then overran their memory, and they pruned
   * and dropped in-window data (TcpExtRcvPruned) from Chimney only. With fragments the kernel
   * charges each byte once (tun_napi_alloc_frags: truesize += data_len), as for Linux's segments.
   */
  readonly napiFrags: boolean;
  /**
   * What the kernel lets us hand it: TSO super-segments (sendGso), over IPv6 too when it granted
   * TSO6, and partial checksums.
   */
  readonly offloads: { readonly tso: boolean; readonly tso6: boolean; readonly csum: boolean };
  /** Offload facts about the frame being delivered; valid only during the frame handler. */
  readonly rxInfo: TapRxInfo = newRxInfo();
  readonly counters: Counters;

  private readonly lib: Libc;
  private fd: number;
  private readonly ctl: number;
  private readonly wakeR: number;
  private readonly wakeW: number;
  private readonly ifindex: number;
  private readonly ifr = new Uint8Array(IFREQ_SIZE);
  private readonly ifrView: DataView;
  private readonly clock: Clock;
  private readonly carrierTimer: Timer;
  private readonly carrierPollMs: number;
  private readonly readBudget: number;
  private readonly pollMaxMs: number;
  private readonly hdr: number;
  private readonly rbuf: Uint8Array;
  private readonly tbuf: Uint8Array;
  /**
   * Native memory the link holds and frees at its close: tbuf's and the iovec array's with
   * napiFrags, or buffers made for it by another thread (TapDescriptors.native) that it ended up
   * not using.
   */
  private readonly nativeAddrs: readonly bigint[];
  /**
   * With napiFrags: tbuf's native address as a number (user-space addresses fit 53 bits): no
   * BigInt made per frame.
   */
  private readonly tbufBase: number = 0;
  private readonly iovAddr: bigint = 0n;
  /** The iovec array as 32-bit words (base low, base high, length low, length high). */
  private readonly iov: Uint32Array | null = null;
  private readonly segmenter: GsoSegmenter | null = null;
  private readonly pollFds = new Uint8Array(16);
  /**
   * Times the receive queue was read empty. Between two increments every frame the kernel queued
   * before the later one has been delivered: a reply that was not delivered was never sent.
   */
  drains = 0;
  /** Called at every drain (a worker publishes the count to another thread). */
  onDrain: ((drains: number) => void) | null = null;
  /** Clock time of the latest drain (the queue was empty then; opening it counts as one). */
  drainedAt: number;
  /**
   * The earliest time the latest frame delivered could have arrived: the drain before it, or, for a
   * reader that stays behind, the time it had read a whole queue (tx_queue_len) fewer frames. A
   * frame read behind a backlog proves its sender reached this port then, not when it was read.
   */
  rxSince: number;
  /** Frames the device queues at most (tx_queue_len; Infinity when unknown). */
  private readonly queueLen: number;
  private reads = 0;
  /** Clock time every 64th read. */
  private readonly readAt = new Float64Array(READ_SAMPLES);
  /** Every frame read from now on arrived after this: the latest drain, or the queue turned over since. */
  private since: number;
  /**
   * Called with what the link still holds each time close() is about to free part of it (so a
   * copy of `held` kept elsewhere never names a freed descriptor): as close() begins, and, if a
   * poll was pending then, once more when that poll ends and the wake pipe's read end, which it
   * still used, is closed.
   */
  onRelease: ((left: TapHeld) => void) | null = null;
  private readonly views: (Uint8Array | undefined)[] = [];
  private frameHandler: TapFrameHandler | null = null;
  private carrierHandler: ((up: boolean, since?: number) => void) | null = null;
  /** When the carrier was last read as it stands: a change happened after this. */
  private carrierSeenAt = 0;
  /**
   * When a write last went out: the device existed and was administratively up then (tun refuses
   * a write with EIO only without IFF_UP), so a device taken down or away, found later (by a
   * write's EIO or a poll), went after it. A busy link writes far more often than it polls, and a
   * worker's poll timer runs late behind its turns (its last poll some 30 ms before a cut at 1,000
   * downloads), so such a down is dated from here rather than from a poll up to an interval, or a
   * late turn, before the cut. A lost carrier with the device still up (IFF_RUNNING clear, as
   * `ip link set carrier off` or TUNSETCARRIER make it) lets writes succeed: a write says nothing
   * of it, and it is dated from the last poll.
   */
  private txOkAt = 0;
  /** Whether the last poll read IFF_UP set (a down it finds with IFF_UP clear is administrative). */
  private adminUp = true;
  private up = false;
  private gone = false;
  private closed = false;
  private waiting = false;
  private pumpScheduled = false;
  /** Inside read(): a handler's drain() must not read (and reuse rbuf) under the frame it is handed. */
  private reading = false;
  /** yieldRx() was called: the read under way stops after the frame it delivers. */
  private yieldAsked = false;
  /**
   * A read ended at a yield, and the next batch (afterYield) has not run yet: until then drain()
   * and a pump asked earlier read nothing. A TCP loss timer asks for a drain
   * (TcpHostEnv.drainInput), and Node runs timers before the immediates where the application
   * takes its accepts: the yield a full accept queue asked was undone by the first timer to fall
   * due, whose drain read the rest of the burst against that queue (all 88 `tcp.listen.overflow`
   * drops of test/tap/syn-cookies.test.ts came in one such read, each a cookie's ACK or the
   * request behind it; Linux drops neither there, its application accepting on its own CPU).
   */
  private yieldHeld = false;

  private constructor(
    lib: Libc,
    fd: number,
    ctl: number,
    wake: [number, number],
    name: string,
    mtu: number,
    ifindex: number,
    created: boolean,
    vnetHdr: boolean,
    napiFrags: boolean,
    native: NativeBuffers | null,
    nativeAddrs: readonly bigint[],
    offloads: { tso: boolean; tso6: boolean; csum: boolean },
    opts: TapLinkOptions,
  ) {
    this.nativeAddrs = nativeAddrs;
    this.lib = lib;
    this.fd = fd;
    this.ctl = ctl;
    [this.wakeR, this.wakeW] = wake;
    this.name = name;
    this.mtu = mtu;
    this.ifindex = ifindex;
    this.created = created;
    this.vnetHdr = vnetHdr;
    this.offloads = offloads;
    this.hdr = vnetHdr ? VNET_HDR_LEN : 0;
    this.rbuf = new Uint8Array(this.hdr + MAX_FRAME);
    this.napiFrags = napiFrags;
    if (native) {
      const { t, v } = native;
      this.tbufBase = Number(t.addr);
      this.tbuf = t.bytes;
      this.iovAddr = v.addr;
      this.iov = new Uint32Array(v.bytes.buffer, v.bytes.byteOffset, MAX_IOV * 4);
      this.segmenter = new GsoSegmenter();
    } else this.tbuf = new Uint8Array(this.hdr + MAX_FRAME);
    this.ifrView = new DataView(this.ifr.buffer);
    this.clock = opts.clock ?? new RealClock();
    this.counters = opts.counters ?? new Counters();
    this.carrierPollMs = opts.carrierPollMs ?? 10;
    this.readBudget = opts.readBudget ?? 256;
    this.pollMaxMs = opts.pollMaxMs ?? POLL_MAX_MS;
    const pv = new DataView(this.pollFds.buffer);
    pv.setInt32(0, fd, true);
    pv.setInt16(4, POLLIN, true);
    pv.setInt32(8, this.wakeR, true);
    pv.setInt16(12, POLLIN, true);
    this.carrierTimer = this.clock.createTimer(this.pollCarrier).unref();
    this.up = this.readCarrier();
    this.carrierSeenAt = this.clock.now();
    this.drainedAt = this.rxSince = this.since = this.carrierSeenAt;
    this.queueLen = txQueueLen(name);
    this.carrierTimer.arm(this.carrierPollMs);
    this.schedulePump();
  }

  /**
   * Open (and by default create) a TAP device. Throws InvalidArgumentError for bad options and
   * LinkError (code ENOENT, EACCES, EPERM, EBUSY, ENODEV, EEXIST, EINVAL, ...) when the system
   * refuses; nothing is left open after a throw.
   */
  static open(opts: TapLinkOptions): TapLink {
    // A device that must exist (`create: false`) may follow its last reader's close at once, so
    // that open waits that out, 2 s; a new device's, 200 ms. This blocks the thread (Atomics.wait):
    // a thread that must go on meanwhile (the host on a dead port, a restarted worker that beats
    // for its watchdog) opens with openWhenFree.
    return TapLink.openTrying(opts, (opts.create ?? true) ? 20 : 200);
  }

  /**
   * Open a TAP device that another reader may still hold for a moment (the host's open of a dead
   * worker's port right after that worker's thread exited; a restarted worker's own open right
   * after the host let it go): EBUSY is tried again every 10 ms on the clock for up to `boundMs`,
   * and the thread goes on with its other work in between (open blocks it). Past the bound it
   * rejects with LinkError EBUSY; every other refusal as `open` throws it, at once. Descriptors
   * given in `opts.fds` are kept across the tries and closed once it fails for good, as `open`
   * closes them.
   */
  static async openWhenFree(opts: TapLinkOptions, boundMs = TAP_FREE_BOUND_MS): Promise<TapLink> {
    if (!(Number.isFinite(boundMs) && boundMs >= 0)) {
      throw new InvalidArgumentError(
        `openWhenFree's bound must be a finite number of ms >= 0, got ${boundMs}`,
      );
    }
    const clock = opts.clock ?? new RealClock();
    const start = clock.now();
    let retry: (() => void) | null = null;
    const timer = clock.createTimer(() => retry?.());
    try {
      for (;;) {
        const waited = clock.now() - start;
        const last = waited >= boundMs;
        try {
          return TapLink.openTrying(opts, 0, !last);
        } catch (e) {
          if (!tunBusy.has(e as object)) throw e;
          if (last) {
            throw new LinkError(
              'EBUSY',
              `TAP device ${opts.name} is still in use by another reader (a TAP has one) ${Math.round(waited)} ms after the first try; close it there or pick another name`,
              { cause: e },
            );
          }
          await new Promise<void>((resolve) => {
            retry = resolve;
            timer.arm(Math.min(TAP_FREE_RETRY_MS, boundMs - waited));
          });
        }
      }
    } finally {
      timer.disarm();
    }
  }

  /**
   * `open`, waiting out EBUSY (Atomics.wait) `busyWaitsMax` times 10 ms. With `keepGivenOnBusy`, an
   * EBUSY leaves given descriptors open and listed, for the caller's next try.
   */
  private static openTrying(opts: TapLinkOptions, busyWaitsMax: number, keepGivenOnBusy = false): TapLink {
    const name = opts.name;
    if (typeof name !== 'string' || !NAME_RE.test(name)) {
      throw new InvalidArgumentError(
        `TAP name must be 1..15 characters of letters, digits, '_', '.', '-', got ${JSON.stringify(name)}`,
      );
    }
    if (opts.mtu !== undefined && (!Number.isInteger(opts.mtu) || opts.mtu < 68 || opts.mtu > 65521)) {
      throw new InvalidArgumentError(`TAP mtu must be an integer 68..65521, got ${opts.mtu}`);
    }
    if (opts.carrierPollMs !== undefined && !(opts.carrierPollMs >= 1)) {
      throw new InvalidArgumentError(`carrierPollMs must be >= 1, got ${opts.carrierPollMs}`);
    }
    if (opts.pollMaxMs !== undefined && !(Number.isInteger(opts.pollMaxMs) && opts.pollMaxMs >= 1)) {
      throw new InvalidArgumentError(`pollMaxMs must be an integer >= 1, got ${opts.pollMaxMs}`);
    }
    if (opts.readBudget !== undefined && !(Number.isInteger(opts.readBudget) && opts.readBudget >= 1)) {
      throw new InvalidArgumentError(`readBudget must be an integer >= 1, got ${opts.readBudget}`);
    }
    if (process.platform !== 'linux') {
      throw new LinkError('ENOTSUP', `TAP devices need Linux; this is ${process.platform}`);
    }
    let lib: Libc;
    try {
      lib = loadLibc();
    } catch (e) {
      throw new LinkError(
        'ERR_CHIMNEY_NO_FFI',
        `cannot load koffi/libc to talk to /dev/net/tun (${(e as Error).message}); run \`npm install koffi\``,
        { cause: e },
      );
    }

    // Listed with onHeld as each is made; unlisted before a failure frees them, so that a thread
    // killed in between leaks rather than has them freed twice.
    const held: TapHeld = { addrs: [], fds: [] };
    const hold = <T>(list: T[], x: T): void => {
      list.push(x);
      opts.onHeld?.(held);
    };
    // Whatever ends the open early (a refusal, or a throw nobody foresaw) frees what it made.
    try {
      return TapLink.openHeld(opts, lib, name, held, hold, busyWaitsMax);
    } catch (e) {
      // Given descriptors are all an open holds before its TUNSETIFF, so an EBUSY made nothing of
      // its own to free.
      if (keepGivenOnBusy && opts.fds !== undefined && tunBusy.has(e as object)) throw e;
      const { fds, addrs } = held;
      held.fds = [];
      held.addrs = [];
      if (fds.length + addrs.length > 0) opts.onHeld?.(held);
      for (const f of fds) lib.close(f);
      for (const a of addrs) lib.freeNative(a);
      throw e;
    }
  }

  private static openHeld(
    opts: TapLinkOptions,
    lib: Libc,
    name: string,
    held: TapHeld,
    hold: <T>(list: T[], x: T) => void,
    busyWaitsMax: number,
  ): TapLink {
    const tunPath = opts.tunPath ?? '/dev/net/tun';
    const vnetHdr = opts.vnetHdr ?? true;
    const create = opts.create ?? true;
    const ifr = new Uint8Array(IFREQ_SIZE);
    const iv = new DataView(ifr.buffer);
    const given = opts.fds;
    if (given !== undefined) {
      if (given.native !== undefined) held.addrs.push(given.native.tbuf, given.native.iov);
      held.fds.push(given.ctl, given.tun, given.wake[0]);
      hold(held.fds, given.wake[1]);
    }

    const ctl = given?.ctl ?? lib.socket(AF_INET, SOCK_DGRAM | O_CLOEXEC, 0);
    if (ctl < 0) {
      throw new LinkError(errName(lib.errno()), `cannot open a control socket: ${errName(lib.errno())}`);
    }
    if (given === undefined) hold(held.fds, ctl);

    putIfName(ifr, name);
    const existed = lib.ioctlPtr(ctl, SIOCGIFINDEX, ifr) === 0;
    if (!existed && !create) {
      throw new LinkError(
        'ENODEV',
        `TAP device ${name} does not exist; create it (scripts/lab.sh up, or ip tuntap add mode tap ${name}) or open with create: true`,
      );
    }

    const fd = given?.tun ?? lib.open(tunPath, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      const e = errName(lib.errno());
      const hint =
        e === 'ENOENT' || e === 'ENXIO' || e === 'ENODEV'
          ? 'the tun driver is missing: run `modprobe tun`, or in a container pass --device /dev/net/tun'
          : e === 'EACCES' || e === 'EPERM'
            ? 'permission denied: run as root, or make it mode 0666 (the usual default) and grant CAP_NET_ADMIN (setcap cap_net_admin+ep $(which node))'
            : 'cannot open it';
      throw new LinkError(e, `cannot open ${tunPath}: ${hint}`);
    }
    if (given === undefined) hold(held.fds, fd);

    // CHIMNEY_TAP_NAPI_FRAGS=0 turns it off for a back-to-back comparison (BENCHMARKS.md).
    const wanted = opts.napiFrags ?? process.env.CHIMNEY_TAP_NAPI_FRAGS !== '0';
    let napiFrags = vnetHdr && wanted && hostIsLittleEndian();
    const flags = (): number =>
      IFF_TAP | IFF_NO_PI | (vnetHdr ? IFF_VNET_HDR : 0) | (napiFrags ? IFF_NAPI | IFF_NAPI_FRAGS : 0);
    putIfName(ifr, name);
    iv.setUint16(IFNAMSIZ_OFF, flags(), true);
    // A reader that just closed the device may still hold it for a moment: its poll on a pool
    // thread keeps the file until the wake-up reaches it (see `open` and `openWhenFree`).
    let busyWaits = 0;
    while (lib.ioctlPtr(fd, TUNSETIFF, ifr) !== 0) {
      const e = errName(lib.errno());
      // A kernel without IFF_NAPI_FRAGS, or a caller without CAP_NET_ADMIN, which it needs.
      if (napiFrags && (e === 'EINVAL' || e === 'EPERM')) {
        napiFrags = false;
        putIfName(ifr, name);
        iv.setUint16(IFNAMSIZ_OFF, flags(), true);
        continue;
      }
      if (e === 'EBUSY' && busyWaits++ < busyWaitsMax) {
        Atomics.wait(BLOCK, 0, 0, 10);
        putIfName(ifr, name);
        iv.setUint16(IFNAMSIZ_OFF, flags(), true);
        continue;
      }
      const msg =
        e === 'EBUSY'
          ? `TAP device ${name} is in use by another reader (a TAP has one) ${busyWaitsMax * 10} ms after the first try; close it there or pick another name`
          : e === 'EPERM' || e === 'EACCES'
            ? `not allowed to ${existed ? 'attach to' : 'create'} TAP device ${name}: run as root or grant CAP_NET_ADMIN`
            : e === 'EINVAL' && existed
              ? `interface ${name} exists and is not a TAP device; pick another name`
              : `TUNSETIFF ${name} failed: ${e}`;
      const err = new LinkError(e, msg);
      if (e === 'EBUSY') tunBusy.add(err);
      throw err;
    }
    const actual = getIfName(ifr) || name;

    let offloads = { tso: false, tso6: false, csum: false };
    if (vnetHdr) {
      const sz = new Uint8Array(4);
      new DataView(sz.buffer).setInt32(0, VNET_HDR_LEN, true);
      if (lib.ioctlPtr(fd, TUNSETVNETHDRSZ, sz) !== 0) {
        throw new LinkError(errName(lib.errno()), `TUNSETVNETHDRSZ ${VNET_HDR_LEN} on ${name} failed`);
      }
      // Little-endian header fields whatever the host; on a little-endian host this is a no-op, so
      // a kernel without cross-endian support (EINVAL) changes nothing there.
      const one = new Uint8Array([1, 0, 0, 0]);
      if (lib.ioctlPtr(fd, TUNSETVNETLE, one) !== 0 && !hostIsLittleEndian()) {
        throw new LinkError(errName(lib.errno()), `TUNSETVNETLE on ${name} failed on a big-endian host`);
      }
      // TSO6 lets the kernel hand over coalesced IPv6 TCP too (the IPv6 layer takes super-segments);
      // a kernel that refuses it still gets the IPv4 offloads.
      // The flags we set on the device are also what it accepts from us: TSO6 lets us hand it IPv6
      // super-segments.
      if (lib.ioctlInt(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) === 0)
        offloads = { tso: true, tso6: true, csum: true };
      else if (lib.ioctlInt(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4) === 0)
        offloads = { tso: true, tso6: false, csum: true };
      else if (lib.ioctlInt(fd, TUNSETOFFLOAD, TUN_F_CSUM) === 0)
        offloads = { tso: false, tso6: false, csum: true };
    } else {
      // Offload flags outlive the fd that set them; a reader without the header must clear them
      // or the kernel keeps handing it frames with partial checksums.
      lib.ioctlInt(fd, TUNSETOFFLOAD, 0);
    }
    if (opts.persist && lib.ioctlInt(fd, TUNSETPERSIST, 1) !== 0) {
      throw new LinkError(errName(lib.errno()), `TUNSETPERSIST on ${name} failed`);
    }

    putIfName(ifr, actual);
    if (opts.mtu !== undefined) {
      iv.setInt32(IFNAMSIZ_OFF, opts.mtu, true);
      if (lib.ioctlPtr(ctl, SIOCSIFMTU, ifr) !== 0) {
        throw new LinkError(errName(lib.errno()), `cannot set MTU ${opts.mtu} on ${actual}`);
      }
    }
    putIfName(ifr, actual);
    if (lib.ioctlPtr(ctl, SIOCGIFMTU, ifr) !== 0) {
      throw new LinkError(errName(lib.errno()), `cannot read the MTU of ${actual}`);
    }
    const mtu = iv.getInt32(IFNAMSIZ_OFF, true);
    if (opts.up ?? true) {
      putIfName(ifr, actual);
      if (lib.ioctlPtr(ctl, SIOCGIFFLAGS, ifr) !== 0) {
        throw new LinkError(errName(lib.errno()), `cannot read the flags of ${actual}`);
      }
      const flags = iv.getUint16(IFNAMSIZ_OFF, true);
      if ((flags & IFF_UP) === 0) {
        iv.setUint16(IFNAMSIZ_OFF, flags | IFF_UP, true);
        if (lib.ioctlPtr(ctl, SIOCSIFFLAGS, ifr) !== 0) {
          throw new LinkError(errName(lib.errno()), `cannot bring ${actual} up`);
        }
      }
    }
    putIfName(ifr, actual);
    if (lib.ioctlPtr(ctl, SIOCGIFINDEX, ifr) !== 0) {
      throw new LinkError(errName(lib.errno()), `cannot read the ifindex of ${actual}`);
    }
    const ifindex = iv.getInt32(IFNAMSIZ_OFF, true);

    const pipe = new Int32Array(2);
    if (given !== undefined) pipe.set(given.wake);
    else {
      if (lib.pipe2(pipe, O_NONBLOCK | O_CLOEXEC) !== 0) {
        throw new LinkError(errName(lib.errno()), 'cannot create the wake pipe');
      }
      held.fds.push(pipe[0]!);
      hold(held.fds, pipe[1]!);
    }
    let native: NativeBuffers | null = null;
    const made = given?.native;
    if (napiFrags && made !== undefined) {
      native = {
        t: { addr: made.tbuf, bytes: lib.nativeView(made.tbuf, TAP_NATIVE_TBUF_BYTES) },
        v: { addr: made.iov, bytes: lib.nativeView(made.iov, TAP_NATIVE_IOV_BYTES) },
      };
    } else if (napiFrags) {
      // The iovecs name addresses, so the frame is built in memory that never moves.
      const t = lib.nativeBytes(TAP_NATIVE_TBUF_BYTES);
      hold(held.addrs, t.addr);
      const v = lib.nativeBytes(TAP_NATIVE_IOV_BYTES);
      hold(held.addrs, v.addr);
      native = { t, v };
    }
    return new TapLink(
      lib,
      fd,
      ctl,
      [pipe[0]!, pipe[1]!],
      actual,
      mtu,
      ifindex,
      !existed,
      vnetHdr,
      napiFrags,
      native,
      [...held.addrs],
      offloads,
      opts,
    );
  }

  get carrier(): boolean {
    return this.up;
  }

  /** True once the device has been removed under us (or the link closed): carrier stays down. */
  get detached(): boolean {
    return this.gone || this.closed;
  }

  onFrame(handler: TapFrameHandler): void {
    this.frameHandler = handler;
  }

  onCarrier(handler: (up: boolean, since?: number) => void): void {
    this.carrierHandler = handler;
  }

  /** Write one Ethernet frame with no offload requested. */
  send(frame: Uint8Array): boolean {
    if (!this.txReady()) return false;
    const len = frame.length;
    if (len < 14) {
      this.counters.inc('drop.link.runt');
      return false;
    }
    if (len > this.mtu + 18) {
      this.counters.inc('drop.link.too-big');
      return false;
    }
    if (this.hdr === 0) return this.write(frame, len);
    const t = this.tbuf;
    encodeVnetHdr(t, 0, 0, VNET_GSO_NONE, 0, 0, 0, 0);
    t.set(frame, VNET_HDR_LEN);
    return this.write(t, len + VNET_HDR_LEN, this.napiFrags ? headersLen(frame, len) : len);
  }

  /**
   * Write an IPv4 or IPv6 frame whose L4 checksum the kernel completes, and which, if its TCP
   * payload is larger than `gsoSize`, the kernel cuts into segments of `gsoSize` (TSO, TSO6 for
   * IPv6). The IP header must be complete for the whole super-segment (IPv4: total length and
   * checksum; IPv6: payload length, and no extension headers); its L4 checksum field is ignored:
   * we replace it, in our copy, with the pseudo-header sum the kernel expects. Throws
   * InvalidArgumentError for a frame or options that cannot be offloaded.
   */
  sendGso(frame: Uint8Array, o: GsoSendOptions): boolean {
    if (!this.offloads.csum || (o.gsoSize > 0 && !this.offloads.tso)) {
      throw new InvalidStateError(
        `${this.name}: the kernel did not grant ${o.gsoSize > 0 ? 'TSO' : 'checksum'} offload (vnetHdr: ${this.vnetHdr})`,
      );
    }
    const len = frame.length;
    const ipOff = len >= 14 ? ethL3Offset(frame) : -1;
    const type = ipOff >= 0 && len >= ipOff ? readU16(frame, ipOff - 2) : -1;
    let ihl: number;
    let proto: number;
    if (type === EtherType.IPV4 && len >= ipOff + 20) {
      ihl = ipv4HeaderLen(frame, ipOff);
      proto = ipv4Proto(frame, ipOff);
    } else if (type === EtherType.IPV6 && len >= ipOff + 40 && frame[ipOff]! >>> 4 === 6) {
      ihl = 40;
      proto = frame[ipOff + 6]!;
      if (readU16(frame, ipOff + 4) !== len - ipOff - 40) {
        throw new InvalidArgumentError('sendGso: IPv6 payload length does not match the frame');
      }
      if (o.gsoSize > 0 && !this.offloads.tso6) {
        throw new InvalidStateError(`${this.name}: the kernel did not grant TSO6`);
      }
    } else throw new InvalidArgumentError('sendGso: frame is not IPv4 or IPv6 over Ethernet');
    const v6 = type === EtherType.IPV6;
    const { gsoSize, csumStart, csumOffset } = o;
    if (!Number.isInteger(gsoSize) || gsoSize < 0 || gsoSize > 65535) {
      throw new InvalidArgumentError(`sendGso: gsoSize must be 0..65535, got ${gsoSize}`);
    }
    if (csumStart !== ipOff + ihl || ihl < 20) {
      throw new InvalidArgumentError(
        `sendGso: csumStart ${csumStart} is not the L4 header at ${ipOff + ihl}`,
      );
    }
    const want = proto === 6 ? 16 : proto === 17 ? 6 : -1;
    if (csumOffset !== want || (gsoSize > 0 && proto !== 6)) {
      throw new InvalidArgumentError(
        `sendGso: csumOffset ${csumOffset} / protocol ${proto}: need TCP (16)${gsoSize > 0 ? '' : ' or UDP (6)'}`,
      );
    }
    const l4Len = len - csumStart;
    const l4Hdr = proto === 6 ? tcpHeaderLen(frame, csumStart) : 8;
    if (l4Len < l4Hdr || l4Hdr < 8) throw new InvalidArgumentError('sendGso: truncated L4 header');
    if (len > MAX_FRAME)
      throw new InvalidArgumentError(`sendGso: frame of ${len} bytes exceeds ${MAX_FRAME}`);
    const payload = l4Len - l4Hdr;
    const segmented = gsoSize > 0 && payload > gsoSize;
    if (!segmented && len > this.mtu + 18) {
      throw new InvalidArgumentError(`sendGso: frame of ${len} bytes exceeds the MTU and is not segmented`);
    }
    if (!this.txReady()) return false;
    if (segmented && this.napiFrags && len > NAPI_MAX_FRAME) return this.sendCut(frame, gsoSize);
    const t = this.tbuf;
    t.set(frame, VNET_HDR_LEN);
    const seed = v6
      ? pseudoHeaderSum6(frame, ipOff, proto, l4Len)
      : pseudoHeaderSum(frame, ipOff, proto, l4Len);
    const at = VNET_HDR_LEN + csumStart + csumOffset;
    t[at] = seed >>> 8;
    t[at + 1] = seed & 0xff;
    encodeVnetHdr(
      t,
      0,
      VNET_F_NEEDS_CSUM,
      segmented ? (v6 ? VNET_GSO_TCPV6 : VNET_GSO_TCPV4) : VNET_GSO_NONE,
      segmented ? csumStart + l4Hdr : 0,
      segmented ? gsoSize : 0,
      csumStart,
      csumOffset,
    );
    return this.write(t, len + VNET_HDR_LEN, csumStart + l4Hdr);
  }

  /** A super-segment too long for the kernel's fragments, cut here into wire segments. */
  private sendCut(frame: Uint8Array, gsoSize: number): boolean {
    let ok = true;
    this.segmenter!.segment(frame, gsoSize, (seg) => {
      if (!this.send(seg)) ok = false;
    });
    this.counters.inc('link.tx.cut');
    return ok;
  }

  /**
   * What this link holds of the process rather than of its thread: native memory (with
   * napiFrags) and descriptors. A thread that dies without close() (a killed worker) leaves
   * them behind; whoever outlives it frees them with `releaseTapHeld` once that thread has exited.
   */
  get held(): TapHeld {
    return {
      addrs: [...this.nativeAddrs],
      fds: [this.fd, this.ctl, this.wakeR, this.wakeW],
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    // First, so that a thread killed from here on leaks what is left rather than have it freed
    // twice; but the wake pipe's read end stays listed while a pending poll still uses it (onPoll
    // closes it): unlisted here, a thread killed before that poll ended would leak it.
    this.release(this.waiting ? [this.wakeR] : []);
    this.carrierTimer.disarm();
    // End the pending poll so the pool thread, and its reference to the device, go at once.
    this.lib.write(this.wakeW, WAKE_BYTE, 1);
    this.lib.close(this.fd);
    this.fd = -1;
    this.lib.close(this.ctl);
    this.lib.close(this.wakeW);
    for (const a of this.nativeAddrs) this.lib.freeNative(a);
    if (!this.waiting) this.lib.close(this.wakeR);
    this.frameHandler = null;
    if (this.up) {
      this.up = false;
      const h = this.carrierHandler;
      this.carrierHandler = null;
      h?.(false);
    }
    this.carrierHandler = null;
  }

  private txReady(): boolean {
    if (this.closed || this.gone || !this.up) {
      this.counters.inc('drop.link.no-carrier');
      return false;
    }
    return true;
  }

  /**
   * Write `len` bytes of `buf` (the vnet header first, if any). With napiFrags `buf` is tbuf and
   * `linear` the frame's leading bytes the kernel must find in its head (every header: it
   * dissects them there); the rest goes as page-sized fragments.
   */
  private write(buf: Uint8Array, len: number, linear = 0): boolean {
    const iov = this.iov;
    let count = 0;
    if (iov !== null && buf === this.tbuf) {
      const h = this.hdr;
      const frame = len - h;
      const head = linear > 0 && linear < frame ? linear : frame;
      setIov(iov, 0, this.tbufBase, h);
      setIov(iov, 1, this.tbufBase + h, head);
      count = 2;
      for (let off = h + head; off < len; off += FRAG_BYTES) {
        setIov(iov, count++, this.tbufBase + off, Math.min(FRAG_BYTES, len - off));
      }
    }
    for (;;) {
      const r = count > 0 ? this.lib.writev(this.fd, this.iovAddr, count) : this.lib.write(this.fd, buf, len);
      if (r === len) {
        this.counters.inc('link.tx.frames');
        // One clock read per write: a few tens of nanoseconds beside the write's system call.
        this.txOkAt = this.clock.now();
        return true;
      }
      if (r >= 0) {
        this.counters.inc('drop.link.tx-short');
        return false;
      }
      const e = this.lib.errno();
      if (e === EINTR) continue;
      if (e === EAGAIN) this.counters.inc('drop.link.tx-full');
      else if (e === 5 /* EIO: device administratively down */) {
        this.counters.inc('drop.link.no-carrier');
        this.setCarrier(false, true);
      } else if (e === 19 || e === 77 /* ENODEV, EBADFD: device removed */) {
        this.counters.inc('drop.link.no-carrier');
        this.detach();
      } else this.counters.inc('drop.link.tx-error');
      return false;
    }
  }

  private schedulePump(): void {
    if (this.pumpScheduled || this.closed) return;
    this.pumpScheduled = true;
    this.clock.defer(this.pump);
  }

  private readonly pump = (): void => {
    this.pumpScheduled = false;
    // A pump asked before the yield runs ahead of the work the yield waits for.
    if (!this.yieldHeld) this.read();
  };

  /** The batch after a yield, deferred behind what the frames that asked for it deferred. */
  private readonly afterYield = (): void => {
    this.yieldHeld = false;
    this.read();
  };

  /**
   * Read and deliver, now, the frames the kernel queued (up to the read budget), instead of when
   * the pool thread's poll answers: Node runs expired timers before it polls for I/O, so a thread
   * that was kept from running wakes to its loss timers before the ACKs that made them moot. True
   * when the queue was read empty (or nothing can come any more); false when the budget ran out,
   * a read failed, a read is already under way (a handler that asks from inside one), or the last
   * read ended at a yield whose turn has not come yet (yieldHeld).
   */
  drain(): boolean {
    if (this.reading || this.yieldHeld) return false;
    return this.read();
  }

  /** See Link.yieldRx: asked outside a read, it has nothing to end. */
  yieldRx(): void {
    if (this.reading) this.yieldAsked = true;
  }

  private read(): boolean {
    if (this.closed || this.gone) return true;
    const lib = this.lib;
    const buf = this.rbuf;
    this.reading = true;
    this.yieldAsked = false;
    try {
      for (let n = 0; n < this.readBudget; n++) {
        const r = lib.read(this.fd, buf, buf.length);
        if (r < 0) {
          const e = lib.errno();
          if (e === EINTR) continue;
          if (e === EAGAIN) {
            this.drainedAt = this.since = this.clock.now();
            this.drains++;
            this.onDrain?.(this.drains);
            this.waitReadable();
            return true;
          }
          if (e === 19 || e === 77 || e === 5) {
            this.detach();
            return true;
          }
          this.counters.inc('drop.link.rx-error');
          break;
        }
        if ((++this.reads & 63) === 0) this.sampleReads();
        this.rxSince = this.since;
        this.deliver(r);
        if (this.closed) return true;
        if (this.yieldAsked) {
          this.yieldHeld = true;
          this.clock.defer(this.afterYield);
          return false;
        }
      }
    } finally {
      this.reading = false;
    }
    // Budget spent (or a transient error): let timers, I/O and what the frames deferred run, then
    // carry on.
    this.schedulePump();
    return false;
  }

  /**
   * When the count of reads stood at 64j the queue held at most queueLen frames, all read by
   * 64j + queueLen: every frame read after that arrived after that time.
   */
  private sampleReads(): void {
    const m = this.reads / 64;
    this.readAt[m % READ_SAMPLES] = this.clock.now();
    const j = Math.floor((this.reads - this.queueLen - 1) / 64);
    if (j >= 0 && m - j < READ_SAMPLES) {
      const at = this.readAt[j % READ_SAMPLES]!;
      if (at > this.since) this.since = at;
    }
  }

  private deliver(r: number): void {
    const h = this.hdr;
    if (r < h + 14) {
      this.counters.inc('drop.link.runt');
      return;
    }
    if (h !== 0) decodeVnetHdr(this.rbuf, 0, this.rxInfo);
    const len = r - h;
    let v: Uint8Array | undefined;
    if (len <= VIEW_CACHE_MAX) {
      v = this.views[len];
      if (v === undefined) this.views[len] = v = this.rbuf.subarray(h, r);
    } else v = this.rbuf.subarray(h, r);
    this.counters.inc('link.rx.frames');
    const fh = this.frameHandler;
    if (fh === null) {
      this.counters.inc('drop.link.no-handler');
      return;
    }
    try {
      fh(v, this.rxInfo);
    } catch (e) {
      // A throwing handler must not stop the read loop; the error still reaches the process.
      this.counters.inc('link.rx.handler-error');
      queueMicrotask(() => {
        throw e;
      });
    }
  }

  /** The device's file descriptor (-1 once closed), for tapQueueEmpty on another thread. */
  get fileDescriptor(): number {
    return this.fd;
  }

  /** Nothing waits to be read right now: every frame that arrived has been taken. */
  queueEmpty(): boolean {
    return tapQueueEmpty(this.fd) ?? true;
  }

  /** Tell onRelease that only `fds` are left; the last call (nothing left) forgets the callback. */
  private release(fds: number[]): void {
    const cb = this.onRelease;
    if (fds.length === 0) this.onRelease = null;
    cb?.({ addrs: [], fds });
  }

  private waitReadable(): void {
    if (this.waiting || this.closed) return;
    this.waiting = true;
    this.lib.pollAsync(this.pollFds, 2, this.pollMaxMs, this.onPoll);
  }

  private readonly onPoll = (_err: unknown, n: number): void => {
    this.waiting = false;
    if (this.closed) {
      this.release([]);
      this.lib.close(this.wakeR);
      return;
    }
    if (n === 0) {
      this.waitReadable();
      return;
    }
    this.schedulePump();
  };

  private readonly pollCarrier = (): void => {
    if (this.closed || this.gone) return;
    const now = this.clock.now();
    const up = this.readCarrier();
    this.setCarrier(up, !this.adminUp);
    this.carrierSeenAt = now;
    if (!this.gone) this.carrierTimer.arm(this.carrierPollMs);
  };

  /** Up and running per the kernel; detaches (for good) if the device went away. */
  private readCarrier(): boolean {
    const ifr = this.ifr;
    putIfName(ifr, this.name);
    if (
      this.lib.ioctlPtr(this.ctl, SIOCGIFINDEX, ifr) !== 0 ||
      this.ifrView.getInt32(IFNAMSIZ_OFF, true) !== this.ifindex
    ) {
      this.detach();
      return false;
    }
    putIfName(ifr, this.name);
    if (this.lib.ioctlPtr(this.ctl, SIOCGIFFLAGS, ifr) !== 0) {
      this.detach();
      return false;
    }
    const f = this.ifrView.getUint16(IFNAMSIZ_OFF, true);
    this.adminUp = (f & IFF_UP) !== 0;
    return this.adminUp && (f & IFF_RUNNING) !== 0;
  }

  private detach(): void {
    if (this.gone) return;
    this.gone = true;
    this.carrierTimer.disarm();
    this.setCarrier(false, true);
  }

  /** `writeDated`: a down that a successful write rules out (administrative, or the device gone). */
  private setCarrier(up: boolean, writeDated = false): void {
    if (this.gone) up = false;
    if (up === this.up) return;
    this.up = up;
    this.counters.inc(up ? 'link.carrier.up' : 'link.carrier.down');
    // The change happened after the last read that saw the old state (up to a poll interval ago,
    // or a late turn's more) and, for a down a write rules out, after the last write that went out.
    this.carrierHandler?.(
      up,
      up || !writeDated ? this.carrierSeenAt : Math.max(this.carrierSeenAt, this.txOkAt),
    );
  }
}

const IFNAMSIZ_OFF = 16;
const WAKE_BYTE = new Uint8Array([1]);

function hostIsLittleEndian(): boolean {
  return new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
}

/** The send buffer and iovec array of a TapLink with napiFrags, in native memory. */
interface NativeBuffers {
  t: { addr: bigint; bytes: Uint8Array };
  v: { addr: bigint; bytes: Uint8Array };
}

/** Native memory (addresses) and descriptors a TapLink holds of the process (see `held`). */
export interface TapHeld {
  addrs: bigint[];
  fds: number[];
}

/**
 * The control socket, clone device and wake pipe a TapLink opened in another thread needs
 * (TapLinkOptions.fds), made here; null when they cannot be (that thread's open then tries, and
 * says why it failed).
 */
export function openTapDescriptors(tunPath = '/dev/net/tun', napiFrags = false): TapDescriptors | null {
  if (process.platform !== 'linux') return null;
  let lib: Libc;
  try {
    lib = loadLibc();
  } catch {
    return null;
  }
  const ctl = lib.socket(AF_INET, SOCK_DGRAM | O_CLOEXEC, 0);
  if (ctl < 0) return null;
  const tun = lib.open(tunPath, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  const pipe = new Int32Array(2);
  if (tun < 0 || lib.pipe2(pipe, O_NONBLOCK | O_CLOEXEC) !== 0) {
    if (tun >= 0) lib.close(tun);
    lib.close(ctl);
    return null;
  }
  const fds: TapDescriptors = { ctl, tun, wake: [pipe[0]!, pipe[1]!] };
  if (napiFrags) {
    const t = lib.nativeBytes(TAP_NATIVE_TBUF_BYTES).addr;
    fds.native = { tbuf: t, iov: lib.nativeBytes(TAP_NATIVE_IOV_BYTES).addr };
  }
  return fds;
}

/**
 * A descriptor of its own for the write end of a wake pipe made by `openTapDescriptors`, or -1 when
 * none can be had: the thread that stops a TapLink's thread from outside (a worker killed) ends
 * that link's pending poll with it (`wakeTapPoll`) without racing the link's own close of the
 * original, whose number may then be reused. Closed with `closeWakeEnd`.
 */
export function keepWakeEnd(wakeW: number): number {
  try {
    return loadLibc().dup(wakeW);
  } catch {
    return -1;
  }
}

/** End the poll a TapLink waits in (see keepWakeEnd): its wake pipe becomes readable. */
export function wakeTapPoll(wakeEnd: number): void {
  // Non-blocking: a full pipe (it never is: one byte per close or kill) already wakes the poll.
  if (wakeEnd >= 0) loadLibc().write(wakeEnd, WAKE_BYTE, 1);
}

/**
 * Let go of the TAP open as `fd` under a thread that will not (one stopped while wedged in native
 * code, which exits only when that call returns): `fd` is made to refer, in one step, to the read
 * end of a pipe of its own whose write end is closed, so the number stays taken (the thread's list
 * of what it holds still names it, and its exit closes it), a late read of that thread's finds the
 * end of the file and a late write fails, and the number's file is one no other descriptor refers
 * to: the exit closes the number only while it still refers to that file (descriptorIdentity), not
 * once the thread closed it itself and it was reused. The kernel detaches the TAP once no system
 * call on it is under way: at once, unless that thread sits in one on this descriptor (its poll for
 * frames: until it returns). False when it could not be done.
 */
export function detachTapDescriptor(fd: number): boolean {
  if (fd < 0) return false;
  const lib = loadLibc();
  const ends = new Int32Array(2);
  if (lib.pipe2(ends, O_CLOEXEC) !== 0) return false;
  const ok = lib.dup3(ends[0]!, fd) === fd;
  lib.close(ends[0]!);
  lib.close(ends[1]!);
  return ok;
}

/**
 * What the descriptor `fd` of this process refers to ("device:inode"), or null when it is not open:
 * a number closed and opened again (by another thread meanwhile) refers to another file.
 */
export function descriptorIdentity(fd: number): string | null {
  try {
    const st = fstatSync(fd, { bigint: true });
    return `${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}

export function closeWakeEnd(wakeEnd: number): void {
  if (wakeEnd >= 0) loadLibc().close(wakeEnd);
}

/**
 * Whether an open with `opts` may use napiFrags (the kernel may still refuse it): the native
 * buffers another thread makes for it are worth making only then.
 */
export function tapMayUseNapiFrags(opts: TapLinkOptions): boolean {
  const wanted = opts.napiFrags ?? process.env.CHIMNEY_TAP_NAPI_FRAGS !== '0';
  return (opts.vnetHdr ?? true) && wanted && hostIsLittleEndian();
}

/**
 * Free what a TapLink held when the thread that opened it ended without closing it. Only once that
 * thread has exited (its pending poll has ended then) and only what it did not release itself.
 */
export function releaseTapHeld(held: TapHeld): void {
  const lib = loadLibc();
  for (const a of held.addrs) if (a !== 0n) lib.freeNative(a);
  for (const fd of held.fds) if (fd >= 0) lib.close(fd);
}

const LOOK = new Uint8Array(8);

/**
 * Whether the receive queue of the TAP open as `fd` (in this process, on any thread) is empty now:
 * a zero-timeout poll. Null when it cannot be asked (no fd, libc unavailable).
 */
export function tapQueueEmpty(fd: number): boolean | null {
  if (fd < 0) return null;
  let lib: Libc;
  try {
    lib = loadLibc();
  } catch {
    return null;
  }
  const v = new DataView(LOOK.buffer);
  v.setInt32(0, fd, true);
  v.setInt16(4, POLLIN, true);
  v.setInt16(6, 0, true);
  const n = lib.poll(LOOK, 1, 0);
  return n < 0 ? null : n === 0;
}

/** Samples of the read count kept: a queue longer than about 64 of them (4,000 frames) is not followed. */
const READ_SAMPLES = 64;

/**
 * The device's tx_queue_len: the TAP's receive queue (its ptr_ring) holds no more, plus one frame
 * on its way out, counted for safety. Infinity when it cannot be read.
 */
function txQueueLen(name: string): number {
  try {
    const n = Number(readFileSync(`/sys/class/net/${name}/tx_queue_len`, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n + 1 : Number.POSITIVE_INFINITY;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}
