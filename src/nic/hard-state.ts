import { InvalidArgumentError, StateValidationError } from '../core/errors.ts';
import { effectiveMss } from '../stack/tcp/congestion.ts';
import { restoreRtt } from '../stack/tcp/rtt.ts';
import { seqAdd, seqDiff, seqSub } from '../stack/tcp/seq.ts';
import { ByteRing } from '../state/byte-ring.ts';
import type { PathState } from '../state/path-state.ts';
import {
  initSharedRing,
  RING_READ,
  RING_WRITE,
  type SharedRingRef,
  sharedRingAdvance,
  sharedRingBytes,
  sharedRingRead,
  sharedRingWrite,
  sharedWords,
} from '../state/shared-ring.ts';
import {
  copyRackPath,
  createTcpState,
  RACK_REORDERING_MIN,
  type RackPathState,
  resetTcpState,
  TCP_ECN_BITS,
  type TcpCached,
  type TcpConst,
  TcpEcn,
  type TcpState,
  TcpStateId,
  widenNumbers,
  zeroTcpConst,
} from '../state/tcp-state.ts';
import { isOffloadable, validateTcpState } from '../state/validate.ts';
import { readU32, writeU32 } from '../wire/addr.ts';
import { TRANSFER_RECORD_BYTES } from './transfer-record.ts';

/*
 * The hard state of one connection run by a worker NIC (design section 6): the few numbers that,
 * with the shared send and receive rings, let the host rebuild the connection if the NIC dies.
 * Everything else (congestion window, out-of-order data, SACK) is soft and comes back from
 * traffic. The RTT estimate rides along although it is soft too: it comes back from traffic only
 * once a resend is acknowledged, and until then the rebuilt connection would wait out a 1 s RTO
 * doubling on every loss.
 *
 * The NIC writes the record under a sequence lock and the host reads it whenever it likes. A
 * seqlock alone has a weakness here: a worker killed in the middle of a write leaves the sequence
 * odd for ever. So the record is kept twice, and the writer finishes one copy before it starts
 * the other: whichever moment the writer stops at, one copy is whole, and the reader takes the
 * newer whole one. Every word is read and written with Atomics, so no plain access can be
 * reordered around the sequence checks.
 *
 * The record also notes where the send ring's read position and the receive ring's write position
 * stood when it was written. Those positions move in step with snd.una and rcv.nxt (the engine
 * consumes exactly the acknowledged bytes and advances rcv.nxt by exactly the bytes it stored), so
 * a reader can bring a record that is one batch old up to the rings' present: nothing the NIC
 * acknowledged is lost and nothing is delivered twice.
 */

const W_SEQ = 0;
const W_STATE = 1;
const W_SND_UNA = 2;
const W_SND_NXT = 3;
const W_SND_MAX = 4;
const W_RCV_NXT = 5;
const W_RCV_ADV = 6;
const W_TS_RECENT = 7;
const W_ISS = 8;
const W_IRS = 9;
const W_SND_WND = 10;
const W_FLAGS = 11;
const W_SEND_READ = 12;
const W_RECV_WRITE = 13;
const W_LOCAL_IP = 14;
const W_REMOTE_IP = 15;
/** The ports (local << 16 | remote) and the MSSes (remote | local << 16): tests damage them. */
export const W_PORTS = 16;
const W_OPTS = 17;
export const W_MSS = 18;
const W_SND_WL1 = 19;
const W_SND_WL2 = 20;
const W_MAX_SND_WND = 21;
const W_SRTT_US = 22;
const W_RTTVAR_US = 23;
/** Statistics since the connection began (counts wrap at 2^32; bytes in two words each). */
const W_SEGS_IN = 24;
const W_SEGS_OUT = 25;
const W_RETRANS = 26;
const W_BYTES_IN_LO = 27;
const W_BYTES_IN_HI = 28;
const W_BYTES_OUT_LO = 29;
const W_BYTES_OUT_HI = 30;
/**
 * RACK's knowledge of the path (TcpSoft.reordering ...: Linux keeps it for the socket's life, so a
 * rebuilt connection does not start again at a degree of 3 on a path known to reorder): the degree
 * (bits 0-8), reordering seen (bit 9), reoWndMult (bits 10-17), reoWndPersist (bits 18-22). 0: not
 * written (the defaults).
 */
const W_RACK = 31;
/**
 * IPv6 addresses: the local then the remote address, 16 bytes each as big-endian words, from here
 * (W_ADDR6 .. +7), with F_IPV6 set and W_LOCAL_IP/W_REMOTE_IP 0. Bytes, not the handles the
 * state objects hold: the record must mean the same to whoever reads it after the writer died.
 * Zero for IPv4, whose addresses are the words above.
 */
export const W_ADDR6 = 32;
/**
 * RACK's bytes resent and bytes DSACKs reported (TcpSoft.rtxBytes, dsackBytes), each in two words
 * (low, high) as the byte counts above: both only ever grow, and a rebuilt connection goes on
 * counting from them. Layout 1 kept only their difference in one word, which served RACK's rule
 * (a DSACK counts while no more was reported twice than was ever resent) but not its accounting
 * of either, so a rebuild lost both counts.
 */
const W_RTX_LO = 40;
const W_RTX_HI = 41;
const W_DSACK_LO = 42;
const W_DSACK_HI = 43;
/**
 * Which arrangement of words the record has (HARD_STATE_LAYOUT). A record is read only by the
 * process that wrote it, but a reader that meets words it cannot place (a stale block, memory
 * written by other code) takes no snapshot from them rather than misread them as a connection.
 */
export const W_LAYOUT = 44;
/**
 * RSTs received and sent (TcpDelegated.resetsIn, resetsOut), which layout 2 left out: a rebuild
 * started them over at 0. RSTs received can pile up on a live connection (each in-window one
 * that does not match rcv.nxt is counted and answered with a challenge ACK), so a whole word each.
 */
const W_RESETS_IN = 45;
const W_RESETS_OUT = 46;
/**
 * Layout 3: the resets counted (layout 2, 46 words, had none); layout 2: rtxBytes and dsackBytes
 * each whole (layout 1, 42 words, kept their difference).
 */
export const HARD_STATE_LAYOUT = 3;
/** Even, so the copies (and the transfer record after them) stay 8-byte aligned. */
const WORDS = 48;
export const COPY_BYTES = WORDS * 4;
/** Where the block's transfer record (src/nic/transfer-record.ts) starts, after the two copies. */
export const TRANSFER_RECORD_AT = 2 * COPY_BYTES;
/** The records in front of a block's rings: two copies of the hard state, then the transfer record. */
export const HARD_STATE_BYTES = TRANSFER_RECORD_AT + TRANSFER_RECORD_BYTES;

const F_FIN_QUEUED = 1;
const F_FIN_SENT = 2;
const F_FIN_RECEIVED = 4;
const F_READ_CLOSED = 8;
const F_IPV6 = 16;
/** TcpDelegated.ecn (TcpEcn's five bits) from this bit of the flags word up. */
const F_ECN_SHIFT = 5;
const O_TS = 1;
const O_SACK = 2;
const O_WS = 4;

/**
 * A consistent snapshot of one connection's hard state, with RACK's knowledge of the path (as
 * TcpSoft's fields of the same names).
 */
export interface HardState extends RackPathState {
  /** Writes so far (0: never written). */
  version: number;
  state: number;
  sndUna: number;
  sndNxt: number;
  sndMax: number;
  rcvNxt: number;
  /** Right edge of the window last advertised. */
  rcvAdv: number;
  tsRecent: number;
  iss: number;
  irs: number;
  sndWnd: number;
  maxSndWnd: number;
  sndWl1: number;
  sndWl2: number;
  /**
   * The connection's RTT estimate (ms; 0: none yet). Not needed for correctness, but without it a
   * rebuilt connection starts over from the 1 s initial RTO, which on a fast path stretches every
   * loss after the rebuild into seconds.
   */
  srtt: number;
  rttvar: number;
  finQueued: boolean;
  finSent: boolean;
  finReceived: boolean;
  readClosed: boolean;
  /**
   * ECN (TcpDelegated.ecn): negotiated, and the echo owed each way. A rebuild that lost it would
   * leave an unechoed CE mark unechoed and stop marking its data ECT on a connection the peer
   * still treats as ECN-capable.
   */
  ecn: number;
  /** Send ring read position and receive ring write position when this was written. */
  sendReadPos: number;
  recvWritePos: number;
  /** IPv4 addresses; 0 for IPv6, whose bytes are in local6/remote6. */
  localIp: number;
  localPort: number;
  remoteIp: number;
  remotePort: number;
  /** An IPv6 connection's addresses (16 bytes each), else null. */
  local6: Uint8Array | null;
  remote6: Uint8Array | null;
  tsEnabled: boolean;
  sackEnabled: boolean;
  wsEnabled: boolean;
  sndWscale: number;
  rcvWscale: number;
  remoteMss: number;
  localMss: number;
  /** Since the connection began, whoever ran it. */
  segmentsIn: number;
  segmentsOut: number;
  retransmits: number;
  bytesIn: number;
  bytesOut: number;
  resetsIn: number;
  resetsOut: number;
}

/**
 * A new hard state: one literal, every field written out. RACK's defaults spread in at its end
 * defined those fields one by one on each object (a crash's salvage makes one per connection); a
 * copy of a template instead (`{ ...T }`) is born on a layout of its own, which widening
 * (WIDENED_HARD_STATE) does not reach (test/state/layout-records.test.ts).
 */
export function emptyHardState(): HardState {
  return {
    version: 0,
    state: 0,
    sndUna: 0,
    sndNxt: 0,
    sndMax: 0,
    rcvNxt: 0,
    rcvAdv: 0,
    tsRecent: 0,
    iss: 0,
    irs: 0,
    sndWnd: 0,
    maxSndWnd: 0,
    sndWl1: 0,
    sndWl2: 0,
    srtt: 0,
    rttvar: 0,
    finQueued: false,
    finSent: false,
    finReceived: false,
    readClosed: false,
    ecn: 0,
    sendReadPos: 0,
    recvWritePos: 0,
    local6: null,
    remote6: null,
    localIp: 0,
    localPort: 0,
    remoteIp: 0,
    remotePort: 0,
    tsEnabled: false,
    sackEnabled: false,
    wsEnabled: false,
    sndWscale: 0,
    rcvWscale: 0,
    remoteMss: 0,
    localMss: 0,
    segmentsIn: 0,
    segmentsOut: 0,
    retransmits: 0,
    bytesIn: 0,
    bytesOut: 0,
    resetsIn: 0,
    resetsOut: 0,
    reordering: RACK_REORDERING_MIN,
    reorderingSeen: false,
    reoWndMult: 1,
    reoWndPersist: 0,
    rtxBytes: 0,
    dsackBytes: 0,
  };
}

/**
 * A hard state whose number fields hold fractions, kept: the layout every hard state is born on
 * (as widenTcpState's). Its tuple and options are copied from a state's widened constants, heap
 * numbers where V8 has not optimized the read; hard states born on small-integer fields took a
 * new map at the first such store, and V8 migrated every one then alive at its next store.
 */
export const WIDENED_HARD_STATE: HardState = widenedHardState();

function widenedHardState(): HardState {
  const h = emptyHardState();
  widenNumbers(h);
  return h;
}

/**
 * The hard-state record of one connection as an object, taken from its state at this instant: what
 * a NIC whose connections are not in shared memory (a LocalNic) leaves for salvage, the same fields
 * a WorkerNic keeps under its seqlock.
 */
export function hardStateOf(s: TcpState, out: HardState = emptyHardState()): HardState {
  const d = s.delegated;
  const c = s.const;
  out.version++;
  out.state = d.state;
  out.sndUna = d.sndUna;
  out.sndNxt = d.sndNxt;
  out.sndMax = d.sndMax;
  out.rcvNxt = d.rcvNxt;
  out.rcvAdv = d.rcvAdv;
  out.tsRecent = d.tsRecent;
  out.iss = d.iss;
  out.irs = d.irs;
  out.sndWnd = d.sndWnd;
  out.maxSndWnd = d.maxSndWnd;
  out.sndWl1 = d.sndWl1;
  out.sndWl2 = d.sndWl2;
  out.srtt = d.srtt;
  out.rttvar = d.rttvar;
  out.finQueued = d.finQueued;
  out.finSent = d.finSent;
  out.finReceived = d.finReceived;
  out.readClosed = d.readClosed;
  out.ecn = d.ecn;
  // The record is taken at the instant of death, so the rebuild must find nothing to catch up:
  // thread-local rings have no positions, but a connection a worker ran keeps its block's shared
  // rings wherever it runs next (a LocalNic too), and their positions carry its whole history,
  // which read against 0 would move snd.una and rcv.nxt past bytes never acknowledged or received.
  const sr = d.sendBuffer.shared;
  const rr = d.recvBuffer.shared;
  out.sendReadPos = sr === null ? 0 : sharedRingRead(sr);
  out.recvWritePos = rr === null ? 0 : sharedRingWrite(rr);
  const v6 = c.remoteIp > 0xffffffff ? s.path.addrs : undefined;
  out.localIp = v6 ? 0 : c.localIp;
  out.localPort = c.localPort;
  out.remoteIp = v6 ? 0 : c.remoteIp;
  out.remotePort = c.remotePort;
  out.local6 = v6 ? v6.bytes(c.localIp).slice() : null;
  out.remote6 = v6 ? v6.bytes(c.remoteIp).slice() : null;
  out.tsEnabled = c.tsEnabled;
  out.sackEnabled = c.sackEnabled;
  out.wsEnabled = c.wsEnabled;
  out.sndWscale = c.sndWscale;
  out.rcvWscale = c.rcvWscale;
  out.remoteMss = c.remoteMss;
  out.localMss = c.localMss;
  out.segmentsIn = d.segmentsIn;
  out.segmentsOut = d.segmentsOut;
  out.retransmits = d.retransmits;
  out.bytesIn = d.bytesIn;
  out.bytesOut = d.bytesOut;
  out.resetsIn = d.resetsIn;
  out.resetsOut = d.resetsOut;
  copyRackPath(out, s.soft);
  return out;
}

/** The double seqlock record at `offset` of a SharedArrayBuffer. */
export class HardStateRecord {
  /** The whole buffer's words; the two copies start at word `a` and word `b`. */
  private readonly v: Int32Array;
  private readonly a: number;
  private readonly b: number;

  constructor(
    readonly sab: SharedArrayBuffer,
    readonly offset = 0,
  ) {
    if (!(sab instanceof SharedArrayBuffer))
      throw new InvalidArgumentError('hard state needs a SharedArrayBuffer');
    if (
      !Number.isInteger(offset) ||
      offset < 0 ||
      offset % 8 !== 0 ||
      offset + HARD_STATE_BYTES > sab.byteLength
    ) {
      throw new InvalidArgumentError('hard state record does not fit at that offset');
    }
    // The whole buffer's one view (sharedWords), shared by every record and ring in it: records
    // are made per connection and move, and a view each was garbage for the collector to find.
    this.v = sharedWords(sab);
    this.a = offset >> 2;
    this.b = (offset + COPY_BYTES) >> 2;
  }

  /**
   * NIC side: publish the connection's hard state, with the rings' positions as they are now.
   * A record that would not change is left alone (its version too): a worker refreshes every
   * record it runs now and then, and fenced stores into ten thousand quiet records kept it busy
   * enough to delay its transfers and its heartbeat.
   */
  write(s: TcpState, send: SharedRingRef | null, recv: SharedRingRef | null): void {
    const sendPos = send ? this.position(send, RING_READ) : 0;
    const recvPos = recv ? this.position(recv, RING_WRITE) : 0;
    const w = SCRATCH;
    fillWords(w, s, sendPos, recvPos);
    const v = this.v;
    const a = this.a;
    const seq = v[a + W_SEQ]!;
    if (seq !== 0 && (seq & 1) === 0 && v[this.b + W_SEQ] === seq) {
      let same = true;
      for (let i = 1; i < WORDS; i++) {
        if (v[a + i] !== w[i]) {
          same = false;
          break;
        }
      }
      if (same) return;
    }
    writeCopy(v, a, w);
    writeCopy(v, this.b, w);
  }

  private position(ref: SharedRingRef, which: number): number {
    if (ref.sab === this.sab) return Atomics.load(this.v, (ref.offset >> 2) + which);
    return which === RING_READ ? sharedRingRead(ref) : sharedRingWrite(ref);
  }

  /**
   * Host side: a consistent snapshot into `out`, or false if none could be had (never written,
   * a writer racing us for too long, or words of another layout; a dead writer always leaves one
   * whole copy).
   */
  read(out: HardState): boolean {
    const v = this.v;
    for (let attempt = 0; attempt < 64; attempt++) {
      const sa = Atomics.load(v, this.a + W_SEQ);
      const sb = Atomics.load(v, this.b + W_SEQ);
      // The newer whole copy first: `a` is written first, so when both are whole `a` is newest.
      const aFirst = (sa & 1) === 0 && sa >= sb;
      // Two tries by index: a list of the two copies per attempt was an array per record read.
      for (let i = 0; i < 2; i++) {
        const c = aFirst === (i === 0) ? this.a : this.b;
        const seq = Atomics.load(v, c + W_SEQ);
        if (seq === 0 || (seq & 1) === 1) continue;
        const layout = Atomics.load(v, c + W_LAYOUT);
        readCopy(v, c, out);
        if (Atomics.load(v, c + W_SEQ) === seq) {
          if (layout !== HARD_STATE_LAYOUT) return false;
          out.version = seq >>> 1;
          return true;
        }
      }
    }
    return false;
  }
}

/** The words of a record (all but the sequence), computed once per write for both copies. */
const SCRATCH = new Int32Array(WORDS);
const ADDR_SCRATCH = new Uint8Array(32);

function fillWords(c: Int32Array, s: TcpState, sendPos: number, recvPos: number): void {
  const k = s.const;
  const d = s.delegated;
  c[W_STATE] = d.state;
  c[W_SND_UNA] = d.sndUna;
  c[W_SND_NXT] = d.sndNxt;
  c[W_SND_MAX] = d.sndMax;
  c[W_RCV_NXT] = d.rcvNxt;
  c[W_RCV_ADV] = d.rcvAdv;
  c[W_TS_RECENT] = d.tsRecent;
  c[W_ISS] = d.iss;
  c[W_IRS] = d.irs;
  c[W_SND_WND] = d.sndWnd;
  c[W_MAX_SND_WND] = d.maxSndWnd;
  c[W_SND_WL1] = d.sndWl1;
  c[W_SND_WL2] = d.sndWl2;
  c[W_SRTT_US] = toMicros(d.srtt);
  c[W_RTTVAR_US] = toMicros(d.rttvar);
  const v6 = k.remoteIp > 0xffffffff ? s.path.addrs : undefined;
  c[W_FLAGS] =
    (d.finQueued ? F_FIN_QUEUED : 0) |
    (d.finSent ? F_FIN_SENT : 0) |
    (d.finReceived ? F_FIN_RECEIVED : 0) |
    (d.readClosed ? F_READ_CLOSED : 0) |
    (v6 ? F_IPV6 : 0) |
    (d.ecn << F_ECN_SHIFT);
  c[W_SEND_READ] = sendPos;
  c[W_RECV_WRITE] = recvPos;
  if (v6) {
    c[W_LOCAL_IP] = 0;
    c[W_REMOTE_IP] = 0;
    v6.write(k.localIp, ADDR_SCRATCH, 0);
    v6.write(k.remoteIp, ADDR_SCRATCH, 16);
    for (let i = 0; i < 8; i++) c[W_ADDR6 + i] = readU32(ADDR_SCRATCH, i * 4) | 0;
  } else {
    c[W_LOCAL_IP] = k.localIp;
    c[W_REMOTE_IP] = k.remoteIp;
    for (let i = 0; i < 8; i++) c[W_ADDR6 + i] = 0;
  }
  c[W_PORTS] = (k.localPort << 16) | k.remotePort;
  c[W_OPTS] =
    k.sndWscale |
    (k.rcvWscale << 8) |
    (((k.tsEnabled ? O_TS : 0) | (k.sackEnabled ? O_SACK : 0) | (k.wsEnabled ? O_WS : 0)) << 16);
  c[W_MSS] = k.remoteMss | (k.localMss << 16);
  c[W_SEGS_IN] = d.segmentsIn;
  c[W_SEGS_OUT] = d.segmentsOut;
  c[W_RETRANS] = d.retransmits;
  c[W_BYTES_IN_LO] = d.bytesIn % 4294967296;
  c[W_BYTES_IN_HI] = Math.floor(d.bytesIn / 4294967296);
  c[W_BYTES_OUT_LO] = d.bytesOut % 4294967296;
  c[W_BYTES_OUT_HI] = Math.floor(d.bytesOut / 4294967296);
  c[W_RESETS_IN] = d.resetsIn;
  c[W_RESETS_OUT] = d.resetsOut;
  const r = s.soft;
  c[W_RACK] =
    (r.reordering & 0x1ff) |
    (r.reorderingSeen ? 0x200 : 0) |
    ((r.reoWndMult & 0xff) << 10) |
    ((r.reoWndPersist & 0x1f) << 18);
  c[W_RTX_LO] = r.rtxBytes % 4294967296;
  c[W_RTX_HI] = Math.floor(r.rtxBytes / 4294967296);
  c[W_DSACK_LO] = r.dsackBytes % 4294967296;
  c[W_DSACK_HI] = Math.floor(r.dsackBytes / 4294967296);
  c[W_LAYOUT] = HARD_STATE_LAYOUT;
}

/** One copy (at word `at` of `v`) under its sequence: odd while it is being written. */
function writeCopy(v: Int32Array, at: number, w: Int32Array): void {
  const seq = Atomics.load(v, at + W_SEQ);
  Atomics.store(v, at + W_SEQ, seq + 1);
  for (let i = 1; i < WORDS; i++) Atomics.store(v, at + i, w[i]!);
  Atomics.store(v, at + W_SEQ, seq + 2);
}

/** An RTT in ms as whole microseconds in one signed word (about 35 minutes at most). */
function toMicros(ms: number): number {
  if (!(ms > 0)) return 0;
  return Math.min(Math.round(ms * 1000), 0x7fffffff);
}

function readCopy(v: Int32Array, at: number, o: HardState): void {
  o.state = Atomics.load(v, at + W_STATE);
  o.sndUna = Atomics.load(v, at + W_SND_UNA) >>> 0;
  o.sndNxt = Atomics.load(v, at + W_SND_NXT) >>> 0;
  o.sndMax = Atomics.load(v, at + W_SND_MAX) >>> 0;
  o.rcvNxt = Atomics.load(v, at + W_RCV_NXT) >>> 0;
  o.rcvAdv = Atomics.load(v, at + W_RCV_ADV) >>> 0;
  o.tsRecent = Atomics.load(v, at + W_TS_RECENT) >>> 0;
  o.iss = Atomics.load(v, at + W_ISS) >>> 0;
  o.irs = Atomics.load(v, at + W_IRS) >>> 0;
  o.sndWnd = Atomics.load(v, at + W_SND_WND) >>> 0;
  o.maxSndWnd = Atomics.load(v, at + W_MAX_SND_WND) >>> 0;
  o.sndWl1 = Atomics.load(v, at + W_SND_WL1) >>> 0;
  o.sndWl2 = Atomics.load(v, at + W_SND_WL2) >>> 0;
  o.srtt = Atomics.load(v, at + W_SRTT_US) / 1000;
  o.rttvar = Atomics.load(v, at + W_RTTVAR_US) / 1000;
  const f = Atomics.load(v, at + W_FLAGS);
  o.finQueued = (f & F_FIN_QUEUED) !== 0;
  o.finSent = (f & F_FIN_SENT) !== 0;
  o.finReceived = (f & F_FIN_RECEIVED) !== 0;
  o.readClosed = (f & F_READ_CLOSED) !== 0;
  o.ecn = (f >>> F_ECN_SHIFT) & TCP_ECN_BITS;
  o.sendReadPos = Atomics.load(v, at + W_SEND_READ);
  o.recvWritePos = Atomics.load(v, at + W_RECV_WRITE);
  o.localIp = Atomics.load(v, at + W_LOCAL_IP) >>> 0;
  o.remoteIp = Atomics.load(v, at + W_REMOTE_IP) >>> 0;
  if ((f & F_IPV6) !== 0) {
    const b = new Uint8Array(32);
    for (let i = 0; i < 8; i++) writeU32(b, i * 4, Atomics.load(v, at + W_ADDR6 + i) >>> 0);
    o.local6 = b.subarray(0, 16);
    o.remote6 = b.subarray(16, 32);
  } else {
    o.local6 = null;
    o.remote6 = null;
  }
  const ports = Atomics.load(v, at + W_PORTS) >>> 0;
  o.localPort = ports >>> 16;
  o.remotePort = ports & 0xffff;
  const opts = Atomics.load(v, at + W_OPTS);
  o.sndWscale = opts & 0xff;
  o.rcvWscale = (opts >>> 8) & 0xff;
  o.tsEnabled = ((opts >>> 16) & O_TS) !== 0;
  o.sackEnabled = ((opts >>> 16) & O_SACK) !== 0;
  o.wsEnabled = ((opts >>> 16) & O_WS) !== 0;
  const mss = Atomics.load(v, at + W_MSS) >>> 0;
  o.remoteMss = mss & 0xffff;
  o.localMss = mss >>> 16;
  o.segmentsIn = Atomics.load(v, at + W_SEGS_IN) >>> 0;
  o.segmentsOut = Atomics.load(v, at + W_SEGS_OUT) >>> 0;
  o.retransmits = Atomics.load(v, at + W_RETRANS) >>> 0;
  o.bytesIn =
    (Atomics.load(v, at + W_BYTES_IN_HI) >>> 0) * 4294967296 + (Atomics.load(v, at + W_BYTES_IN_LO) >>> 0);
  o.bytesOut =
    (Atomics.load(v, at + W_BYTES_OUT_HI) >>> 0) * 4294967296 + (Atomics.load(v, at + W_BYTES_OUT_LO) >>> 0);
  o.resetsIn = Atomics.load(v, at + W_RESETS_IN) >>> 0;
  o.resetsOut = Atomics.load(v, at + W_RESETS_OUT) >>> 0;
  const rack = Atomics.load(v, at + W_RACK);
  if (rack === 0) {
    o.reordering = RACK_REORDERING_MIN;
    o.reorderingSeen = false;
    o.reoWndMult = 1;
    o.reoWndPersist = 0;
  } else {
    o.reordering = rack & 0x1ff;
    o.reorderingSeen = (rack & 0x200) !== 0;
    o.reoWndMult = (rack >>> 10) & 0xff;
    o.reoWndPersist = (rack >>> 18) & 0x1f;
  }
  o.rtxBytes = (Atomics.load(v, at + W_RTX_HI) >>> 0) * 4294967296 + (Atomics.load(v, at + W_RTX_LO) >>> 0);
  o.dsackBytes =
    (Atomics.load(v, at + W_DSACK_HI) >>> 0) * 4294967296 + (Atomics.load(v, at + W_DSACK_LO) >>> 0);
}

// ---- the per-connection shared block ----------------------------------------------------------

/** Where one connection's shared memory lives: hard state, then send ring, then receive ring. */
export interface ConnBlockRef {
  readonly sab: SharedArrayBuffer;
  /** Byte offset of the hard-state record in `sab` (the block starts there). */
  readonly at: number;
  readonly send: SharedRingRef;
  readonly recv: SharedRingRef;
}

/**
 * Blocks are cut from slabs of this size: a SharedArrayBuffer costs tens of microseconds to create
 * (and its external memory drives the garbage collector), which was most of a WorkerNic move.
 * A slab is larger than the C allocator's largest mmap threshold (32 MB for glibc on 64 bits), so
 * its memory always comes straight from mmap, zero until touched: a block of two 256 KiB rings
 * costs the pages its connection writes, not half a megabyte cleared up front (with a buffer per
 * block, calloc cleared each one from the heap: 26 % of serve's main thread in a burst of 5,000
 * accepts, and 2.5 GB resident for their rings). A slab is freed when no block of it is
 * referenced any more, so one long-lived connection keeps at most a slab alive (its address
 * space, and the pages the slab's dead blocks once touched); blocks larger than a sixteenth of a
 * slab get a buffer of their own.
 */
export const CONN_SLAB_BYTES = 64 << 20;
let slab: SharedArrayBuffer | null = null;
let slabUsed = 0;
let slabsMade = 0;

/** Slabs of CONN_SLAB_BYTES this thread made (bench/churn.ts). */
export function connSlabsMade(): number {
  return slabsMade;
}

function newSlab(): SharedArrayBuffer {
  slabsMade++;
  return new SharedArrayBuffer(CONN_SLAB_BYTES);
}

/**
 * Slabs made before any block needed them, each with the bytes below `touched` already written
 * (warmSlabs). A page of fresh memory costs the thread that first writes it a fault: 11-25 µs on
 * this project's virtual machines, 85 µs at load, where the host backs the guest's page too. In
 * a burst of 5,000 accepts serve's main thread spent 4.4 s of its 12 faulting in the rings it was
 * placing connections on (the header's first write, the body's first copy) while every SYN behind
 * them waited. Only this thread ever names a spare: it leaves the list before its first block is
 * cut, and warmSlabs writes only to slabs on the list, so no byte it writes belongs to anyone.
 */
const spares: { readonly sab: SharedArrayBuffer; touched: number }[] = [];
/** The stride of warmSlabs' writes: the smallest page size Linux runs on. */
const PAGE_BYTES = 4096;

/** Spare slabs whose every page is written (warmSlabs), ready for the blocks of a burst. */
export function warmSlabCount(): number {
  let n = 0;
  for (const s of spares) if (s.touched >= CONN_SLAB_BYTES) n++;
  return n;
}

/**
 * Bring this thread's spare slabs up to `want`, every page of each written once, stopping as
 * soon as `now()` reaches `untilMs` (checked every PAGES_PER_CHECK pages): the work is the page
 * faults, moved to a moment the caller chose (SlabWarmer: while the thread has nothing else to
 * do) from the moment a connection waits for its ring. Writing a zero over a zero changes no
 * byte: a spare is still fresh memory to allocConnBlock. True once `want` spares are warm.
 */
export function warmSlabs(want: number, untilMs: number, now: () => number): boolean {
  while (spares.length < want) spares.push({ sab: newSlab(), touched: 0 });
  for (const s of spares) {
    if (s.touched >= CONN_SLAB_BYTES) continue;
    const bytes = new Uint8Array(s.sab);
    while (s.touched < CONN_SLAB_BYTES) {
      const end = Math.min(CONN_SLAB_BYTES, s.touched + PAGES_PER_CHECK * PAGE_BYTES);
      for (let i = s.touched; i < end; i += PAGE_BYTES) bytes[i] = 0;
      s.touched = end;
      if (now() >= untilMs) return warmSlabCount() >= want;
    }
  }
  return true;
}
const PAGES_PER_CHECK = 64;

/** Shared memory for one connection's record and rings, fresh (zeroed) and 8-byte aligned. */
export function allocConnBlock(sendCapacity: number, recvCapacity: number): ConnBlockRef {
  const sendAt = HARD_STATE_BYTES;
  const recvAt = sendAt + sharedRingBytes(sendCapacity);
  const bytes = recvAt + sharedRingBytes(recvCapacity);
  let sab: SharedArrayBuffer;
  let at = 0;
  if (bytes > CONN_SLAB_BYTES / 16) sab = new SharedArrayBuffer(bytes);
  else {
    if (slab === null || slabUsed + bytes > CONN_SLAB_BYTES) {
      slab = spares.shift()?.sab ?? newSlab();
      slabUsed = 0;
    }
    sab = slab;
    at = slabUsed;
    slabUsed += bytes;
  }
  return {
    sab,
    at,
    send: { sab, offset: at + sendAt, capacity: sendCapacity },
    recv: { sab, offset: at + recvAt, capacity: recvCapacity },
  };
}

let gone: ConnBlockRef | null = null;

/**
 * What a connection's worker slot and host handle hold in place of the block it gave back: a
 * connection in TIME_WAIT with nothing left in its rings needs no buffers, only its state (as
 * Linux keeps a small timewait sock, not the socket), and its block held the block's slab alive
 * for the 60 s of TIME_WAIT (see giveBack in nic-worker.ts). One per thread, never named to another
 * thread; what is written to it is read by nobody.
 */
export function goneBlock(): ConnBlockRef {
  if (gone !== null) return gone;
  const ring = sharedRingBytes(8);
  const sab = new SharedArrayBuffer(HARD_STATE_BYTES + 2 * ring);
  gone = {
    sab,
    at: 0,
    send: initSharedRing(sab, HARD_STATE_BYTES, 8),
    recv: initSharedRing(sab, HARD_STATE_BYTES + ring, 8),
  };
  return gone;
}

// ---- blocks handed on from one worker NIC to the next -----------------------------------------

/**
 * Blocks of the connections the latest terminate took out of a worker NIC, by connKeyId: a move
 * to another worker hands the same memory on instead of allocating and filling a new block (the
 * bytes are already there). Only the latest terminate's blocks are kept, so one nobody takes is
 * soon garbage; and a block is taken only while its rings hold exactly the bytes of the state
 * being installed, so a stale one can never stand in for data that changed meanwhile.
 */
const released = new Map<string, ConnBlockRef>();

/** The blocks a terminate just freed (their connections' states are in its transfer). */
export function keepReleasedBlocks(blocks: Iterable<readonly [string, ConnBlockRef]>): void {
  released.clear();
  for (const [id, b] of blocks) released.set(id, b);
}

/**
 * The block the connection `id` left behind, if its rings have the capacities asked for and hold
 * exactly the state's send and receive data; null otherwise. Each block is handed out once.
 */
export function takeReleasedBlock(id: string, s: TcpState, send: number, recv: number): ConnBlockRef | null {
  if (released.size === 0) return null;
  const b = released.get(id);
  if (b === undefined) return null;
  released.delete(id);
  if (b.send.capacity !== send || b.recv.capacity !== recv) return null;
  const d = s.delegated;
  if (!sameBytes(ByteRing.attachShared(b.send), d.sendBuffer)) return null;
  if (!sameBytes(ByteRing.attachShared(b.recv), d.recvBuffer)) return null;
  return b;
}

function sameBytes(a: ByteRing, b: ByteRing): boolean {
  if (a.length !== b.length) return false;
  if (a.length === 0) return true;
  const x = a.toArray();
  const y = b.toArray();
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/**
 * Both rings of every connection a NIC runs, at most, before it gives new ones smaller rings
 * (ringUnderLoad). 64 MiB, so that a NIC of 512 connections (1,000 downloads over two) still
 * gives each a send ring of 64 KiB: a Linux reader with 32 KiB of SO_RCVBUF advertises 62,464
 * bytes, and a send ring smaller than the window is sent whole and acknowledged before the reader
 * has read it, so its next bytes wait for the application's refill, which on a worker is a round
 * trip through the main thread (two threads' waits for a core). At 32 MiB half of the thousand
 * had 32 KiB rings, and that refill was three quarters of the team's stall time after the burst
 * (BENCHMARKS.md, "What a team's stall waits for"). Beyond 1,024 connections a NIC the floor
 * rules, as before.
 */
export const RING_BUDGET_BYTES = 64 << 20;
/**
 * The smallest ring ringUnderLoad gives. Each new ring is fresh memory that the host's first write
 * of a body faults in page by page: at 64 KiB a ring that was half of serve's main thread in a
 * burst of 5,000 accepts, whose placement waited behind it (first byte 3.8-9.8 s). But a send ring
 * also bounds what a connection has in flight, which is what its peer holds to read through a
 * pause of the sender: at 16 KiB (Linux's first send buffer, tcp_wmem[1]) the first byte came in
 * 2.0-3.8 s, yet a failover stalled about 2,000 of the 5,000 slow readers for 1.8-2.4 s. 32 KiB,
 * about the window of a reader of 32 KiB of receive buffer, gave 2.1-3.1 s and left none
 * stalled (BENCHMARKS.md, "where it goes"). A floor only beyond 1,024 connections a NIC.
 */
export const RING_FLOOR_BYTES = 32 << 10;

/**
 * The ring capacity for connections a NIC takes on while it runs `conns` (those included): its
 * `ringCapacity` while their rings fit in RING_BUDGET_BYTES, less beyond (RING_FLOOR_BYTES at
 * least), as Linux gives sockets smaller buffers under memory pressure (tcp_mem). A ring's pages
 * are touched as its positions advance, and fresh memory costs the thread that first touches it
 * a page fault and a zeroed page: a download of 200 kB through a 256 KiB ring touches 200 kB of
 * it, through a 64 KiB ring 64 KiB, over and over. In a burst of 5,000 such downloads the host's
 * writes of their bodies into fresh ring memory were 62-70 % of serve's main thread, which also
 * places the accepts (BENCHMARKS.md, "The first byte at 5,000").
 */
export function ringUnderLoad(ringCapacity: number, conns: number): number {
  const fair = Math.floor(RING_BUDGET_BYTES / (2 * Math.max(1, conns)) / 4096) * 4096;
  return Math.min(ringCapacity, Math.max(RING_FLOOR_BYTES, fair));
}

/**
 * The largest a send ring of a NIC running `conns` connections may grow to (WorkerNic.regrow):
 * its share of RING_BUDGET_BYTES, counting grown rings, as ringUnderLoad shares it at placement.
 * Linux does not expand sk_sndbuf once TCP's memory is past tcp_mem[0] (tcp_should_expand_sndbuf);
 * the budget is this NIC's tcp_mem. A growing ring takes the whole share, not half: the budget
 * halves at placement because a new connection's direction is unknown, but a ring grows only for
 * a sender whose writer fills it, the pages that cost (a download's receive ring, holding a
 * request, stays mostly untouched). So the 500 connections a NIC of 1,000 downloads over two NICs
 * grow their 64 KiB rings to the 124 KiB a 62,464-byte window calls for, 1,000 a NIC grow to
 * 64 KiB, and from 2,048 a NIC (a burst of 5,000 over two) nothing grows past the floor: there
 * every grown ring was fresh memory serve's main thread faulted in during the burst, where the
 * floor was set to keep it out (RING_FLOOR_BYTES; BENCHMARKS.md, "A send ring that grows with the
 * connection"). Whole pages, like a grown ring.
 */
export function ringGrowLimit(ringCapacity: number, conns: number): number {
  return Math.min(ringCapacity, Math.floor(RING_BUDGET_BYTES / Math.max(1, conns) / 4096) * 4096);
}

/**
 * The send ring a NIC running `conns` connections (those included) gives one it is handed: its
 * `placementRing` while the share a grown ring may take (ringGrowLimit) still covers it, else
 * ringUnderLoad's. A ring's positions run over its whole capacity, so a connection that sends more
 * than its ring touches every page of it however little it holds, and a sender of a 62 KiB window
 * placed at ringUnderLoad's 64 KiB (half the share: a new connection's direction is unknown) grew
 * to 128 KiB a moment later: a new block, the old ring's 16 pages left faulted in for nothing, the
 * bytes copied, a round trip through the main thread. Placed at the size the grow gives, it never
 * grows; a connection that sends little touches no more pages for the larger capacity. In the
 * connect burst of 1,000 downloads (500 a NIC, serve's 128 KiB placement ring) the ~500 grows
 * went and serve's main thread faulted in about 30 % fewer pages (BENCHMARKS.md, "Ring memory in
 * the connect burst of 1,000"). Beyond the share (2,048 a NIC of a burst of 5,000), as before.
 */
export function sendRingAtPlacement(placementRing: number, ringCapacity: number, conns: number): number {
  return ringGrowLimit(ringCapacity, conns) >= placementRing
    ? placementRing
    : ringUnderLoad(placementRing, conns);
}

/**
 * The ring capacities a NIC gives a connection it adopts: capped at `ringCapacity` (the send ring
 * at `sendRing`, sendRingAtPlacement), but never
 * below what the buffers hold nor below the window already advertised, so nothing acknowledged or
 * promised is lost. With `grownLimit`, a send ring the connection grew keeps that size up to
 * `grownLimit` (the NIC's share, ringGrowLimit): placed anew at the placement's size, a connection
 * back from the host grew again through a round trip, with its writer held meanwhile. A ring grew
 * if its bound is below sndBufSize (a worker's block sized to its grow) or a grow in this thread
 * set it (ByteRing.grown, growSendRingHere): a host ring grown to the whole of sndBufSize has the
 * bound of a ring never grown, which is placed at the placement's size.
 */
export function connRingCapacities(
  s: TcpState,
  ringCapacity: number,
  grownLimit = 0,
  sendRing = ringCapacity,
): { send: number; recv: number } {
  const d = s.delegated;
  const sendLen = d.sendBuffer.length;
  const recvLen = d.recvBuffer.length;
  const promised = Math.max(0, seqDiff(d.rcvAdv, d.rcvNxt));
  const sndBuf = s.cached.sndBufSize;
  const rcvBuf = s.cached.rcvBufSize;
  const ring = d.sendBuffer;
  const grown = ring.grown || ring.maxCapacity < sndBuf ? Math.min(ring.maxCapacity, grownLimit) : 0;
  const send = Math.min(sndBuf, Math.max(sendLen, grown, Math.min(sndBuf, sendRing)));
  const recv = Math.min(rcvBuf, Math.max(recvLen + promised, Math.min(rcvBuf, ringCapacity)));
  return { send: Math.max(1, send), recv: Math.max(1, recv) };
}

// ---- rebuilding a connection from hard state alone --------------------------------------------

const HALF = 0x80000000;
/** The most payload one counted segment carries: an IP packet's largest (coalesced or TSO). */
const MAX_COUNTED_SEGMENT = 65535;

/**
 * A valid TcpState from a dead NIC's hard state and the shared rings it left (design section 6),
 * for the host (or another NIC) to adopt. `hard` may be a little older than the rings: snd.una and
 * rcv.nxt are brought forward by how far the rings' positions moved since it was written. Soft
 * state starts fresh: one-segment congestion window (a restart after loss, RFC 5681), an empty
 * SACK scoreboard and no out-of-order data; the sender goes back to snd.una and resends everything
 * in flight, unless it is prodded: then it first asks the peer what of the flight it has
 * (soft.repaired). The RTT estimate the record carries is kept (the initial RTO only without one): with
 * a 1 s RTO, a rebuilt connection whose first resends are lost has only a handful of tries left
 * in the next half minute.
 *
 * The rings are used as they are (the host becomes both their producer and consumer), so no byte
 * is copied. Throws StateValidationError if the pieces do not make a connection.
 */
export function rebuildTcpState(
  hard: HardState,
  sendRing: ByteRing,
  recvRing: ByteRing,
  cached: TcpCached,
  path: PathState,
  now = 0,
  /**
   * A state nothing runs or reads any more (SalvageRecord.spare), made this connection's in place
   * (resetTcpState) instead of a new one: no soft state of what it was survives.
   */
  into: TcpState | null = null,
  /**
   * The record was taken in this thread from a state this thread ran (SalvageRecord.ownThread):
   * the rebuilt state is not validated field by field (see there), only its TCP state checked.
   */
  ownThread = false,
): TcpState {
  if (hard.version === 0) throw new StateValidationError('hard.version', 'hard state never written');
  const addrs = hardAddresses(hard, path);
  const send = sendRing.shared;
  const recv = recvRing.shared;
  const c = CONST_SCRATCH;
  c.localIp = addrs.local;
  c.localPort = hard.localPort;
  c.remoteIp = addrs.remote;
  c.remotePort = hard.remotePort;
  c.tsEnabled = hard.tsEnabled;
  c.sackEnabled = hard.sackEnabled;
  c.wsEnabled = hard.wsEnabled;
  c.sndWscale = hard.sndWscale;
  c.rcvWscale = hard.rcvWscale;
  c.remoteMss = hard.remoteMss;
  c.localMss = hard.localMss;
  RINGS_SCRATCH.send = sendRing;
  RINGS_SCRATCH.recv = recvRing;
  const s =
    into === null
      ? createTcpState(c, cached, path, RINGS_SCRATCH)
      : resetTcpState(into, c, cached, path, RINGS_SCRATCH);
  RINGS_SCRATCH.send = RINGS_SCRATCH.recv = NO_RING;
  // Raised on the state's own copy of `cached`: a second copy made only to carry these two was
  // an object of twenty fields per connection in a crash's charged rebuild.
  const k = s.cached;
  k.sndBufSize = Math.max(k.sndBufSize, sendRing.capacity);
  k.rcvBufSize = Math.max(k.rcvBufSize, recvRing.capacity);
  const d = s.delegated;
  // Bytes acknowledged (consumed from the send ring) and stored (written to the receive ring)
  // after the record was written.
  const acked = send ? sharedRingAdvance(send, hard.sendReadPos, sharedRingRead(send)) : 0;
  const stored = recv ? sharedRingAdvance(recv, hard.recvWritePos, sharedRingWrite(recv)) : 0;
  const sndUna = seqAdd(hard.sndUna, acked);
  const rcvNxt = seqAdd(hard.rcvNxt, stored);
  const sendLen = sendRing.length;
  // snd.max may be stale too; it is at least snd.una, and what is in flight must be in the ring.
  let sndMax = seqDiff(hard.sndMax, sndUna) > 0 ? hard.sndMax : sndUna;
  let finSent = hard.finSent;
  const flight = seqSub(sndMax, sndUna);
  if (flight >= HALF) sndMax = sndUna;
  const dataInFlight = seqSub(sndMax, sndUna) - (finSent && sndMax !== sndUna ? 1 : 0);
  if (dataInFlight > sendLen || (finSent && dataInFlight !== sendLen)) {
    // The FIN's place is no longer certain: send it again after the data.
    sndMax = seqAdd(sndUna, Math.min(dataInFlight, sendLen));
    finSent = false;
  }
  d.state = hard.state as TcpStateId;
  d.iss = hard.iss;
  d.irs = hard.irs;
  d.sndUna = sndUna;
  d.sndNxt = sndUna;
  d.sndMax = sndMax;
  d.sndWnd = Math.min(hard.sndWnd, 65535 * 2 ** hard.sndWscale);
  d.maxSndWnd = Math.max(d.sndWnd, hard.maxSndWnd);
  d.sndWl1 = hard.sndWl1;
  d.sndWl2 = hard.sndWl2;
  d.rcvNxt = rcvNxt;
  d.rcvAdv = seqDiff(hard.rcvAdv, rcvNxt) > 0 ? hard.rcvAdv : rcvNxt;
  if (seqDiff(d.rcvAdv, rcvNxt) > 65535 << hard.rcvWscale) d.rcvAdv = seqAdd(rcvNxt, 65535 << hard.rcvWscale);
  d.tsRecent = hard.tsRecent;
  d.tsRecentAt = now;
  d.finQueued = hard.finQueued;
  d.finSent = finSent;
  d.finReceived = hard.finReceived;
  d.readClosed = hard.readClosed;
  // A reduction in progress is moot: the rebuilt window starts at one segment.
  d.ecn = hard.ecn & ~TcpEcn.CWR;
  d.retransmits = hard.retransmits;
  // RSTs leave no trace in the rings: those after the record died with the writer, uncounted.
  d.resetsIn = hard.resetsIn;
  d.resetsOut = hard.resetsOut;
  // The bytes stored after the record arrived in order and were counted by the writer, whose count
  // died with it; likewise data acknowledged beyond the recorded snd.max was sent after the record.
  // Neither comes again, so without them the rebuilt counts fall short of the peer's for good.
  const sentAfter = Math.min(acked, Math.max(0, seqDiff(sndUna, hard.sndMax)));
  d.bytesIn = hard.bytesIn + stored;
  d.bytesOut = hard.bytesOut + sentAfter;
  // Segments after the record: the rings tell how many bytes, not in how many segments (a
  // coalesced receive or a TSO send counts once, whatever it carries), and pure ACKs, window
  // updates and resends leave no trace in them. So the counts continue from the record by the
  // fewest segments that can have carried those bytes, and the peer's acknowledgment of them: a
  // lower bound, never a count of something that did not happen (a gray-failure check reading
  // them must not see traffic that was not there). Exact counts would need a shared word stored
  // per segment, in step with what the segment did: for a received one before its bytes reach
  // the ring (a record is written once per batch, and a batch's segments move the ring one by
  // one); for a sent one where it leaves the process, which for a proxied link is the main
  // thread's post of the batch, after the worker (and its count) may be gone. The record rides
  // the batch instead, and the hot path stays free of per-segment fenced stores.
  d.segmentsIn =
    (hard.segmentsIn + Math.max(Math.ceil(stored / MAX_COUNTED_SEGMENT), acked > 0 ? 1 : 0)) >>> 0;
  d.segmentsOut = (hard.segmentsOut + Math.ceil(sentAfter / MAX_COUNTED_SEGMENT)) >>> 0;
  d.lastRecvAt = now;
  d.lastSendAt = now;
  // rcv_wup (not in the record): at rcv.nxt, an old segment is read only if it ends there or later.
  d.lastAckSent = rcvNxt;
  restoreRtt(s, hard.srtt, hard.rttvar);
  // One segment as the engine cuts them (options included): the remote MSS alone would leave a
  // few bytes of window that go out as a tiny second segment behind the first.
  d.cwnd = effectiveMss(s);
  d.ssthresh = 0x7fffffff;
  // Whatever is in flight goes again at once: snd.nxt is back at snd.una, so the adopter's first
  // output resends it. The timer only guards that resend; a deadline of `now` would fire right
  // after it, send snd.una a second time and count a timeout (doubling the RTO, collapsing
  // ssthresh) for a segment that had not had a round trip to be lost in.
  d.rtxDeadline = d.sndMax !== d.sndUna ? now + d.rto : Number.POSITIVE_INFINITY;
  // But the flight was sent before the owner died, and it is the peer's ACKs of it that died with
  // the owner: a prod asks the peer what it has before resending any of it (see prod).
  s.soft.repaired = d.sndMax !== d.sndUna;
  s.soft.ackNow = true;
  // No short segment is known to be in flight: snd.una says so whatever the flight, where a fresh
  // state's 0 could fall inside it and hold a tail back for nothing.
  s.soft.smallSentEnd = sndUna;
  // What RACK learned of the path: the new owner does not take the next reordering for loss
  // (validateTcpState below refuses a record whose values are out of range).
  copyRackPath(s.soft, hard);
  // An orphaned FIN_WAIT_2 (nobody reads) does not wait forever for the peer's FIN.
  if (d.state === TcpStateId.FIN_WAIT_2 && d.readClosed) d.timeWaitDeadline = now + s.cached.timeWaitMs;
  if (d.state === TcpStateId.FIN_WAIT_1 && !d.finQueued) d.finQueued = true;
  if (!ownThread) validateTcpState(s);
  else if (!isOffloadable(s)) {
    // The one rule a connection this thread ran can fail: it may not have been synchronized yet
    // (a half-open one), which no owner takes over. Everything else validateTcpState checks held
    // while it ran here, or is made to hold above (the positions, windows and buffer sizes a
    // record one batch old needs brought forward), or is a new state's own (the soft state).
    throw new StateValidationError('delegated.state', `state ${d.state} cannot be offloaded`);
  }
  return s;
}

/** The constants and rings a rebuild hands createTcpState/resetTcpState, which copy them: one of each. */
const CONST_SCRATCH: TcpConst = zeroTcpConst();
const NO_RING = new ByteRing(1);
const RINGS_SCRATCH = { send: NO_RING, recv: NO_RING };

/**
 * The addresses a rebuilt connection takes: an IPv4 record's own, or for an IPv6 record the
 * handles of the path it is rebuilt on, once the record's bytes are checked to be that path's.
 */
function hardAddresses(hard: HardState, path: PathState): { local: number; remote: number } {
  if (hard.remote6 === null || hard.local6 === null) return { local: hard.localIp, remote: hard.remoteIp };
  const p = path.const;
  const book = path.addrs;
  if (book === undefined || p.remoteIp <= 0xffffffff)
    throw new StateValidationError('hard.remote6', 'an IPv6 record for a path that is not IPv6');
  const same = (a: Uint8Array, b: Uint8Array) => a.every((x, i) => x === b[i]);
  if (!same(hard.local6, book.bytes(p.localIp)) || !same(hard.remote6, book.bytes(p.remoteIp)))
    throw new StateValidationError('hard.remote6', 'the record names other addresses than its path');
  return { local: p.localIp, remote: p.remoteIp };
}
