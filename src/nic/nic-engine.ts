import type { Clock, Timer } from '../core/clock.ts';
import { Counters } from '../core/counters.ts';
import { InvalidArgumentError, StateValidationError } from '../core/errors.ts';
import type { Random } from '../core/random.ts';
import type { Link, LinkGsoOptions, RxOffloadInfo } from '../link/link.ts';
import { AddressTable, ANY6, TWO_32 } from '../stack/address-table.ts';
import { Ipv4Output } from '../stack/ip-output.ts';
import type { IpInfo, IpSender } from '../stack/ip-sender.ts';
import { flowLabel6, writeIpv6Fixed } from '../stack/ipv6.ts';
import { seqGt, seqLeq } from '../stack/tcp/seq.ts';
import type { TcpConnection } from '../stack/tcp/tcp-connection.ts';
import {
  armKeepalive,
  deliverEvents,
  resume,
  rewind,
  scheduleTimer,
  terminate,
} from '../stack/tcp/tcp-drive.ts';
import type { AdoptOptions } from '../stack/tcp/tcp-handover.ts';
import { TcpLayer } from '../stack/tcp/tcp-layer.ts';
import type { TcpHostEnv } from '../stack/tcp/tcp-types.ts';
import { RingPoolTrim } from '../state/byte-ring.ts';
import { createNeighborState, type NeighborState } from '../state/neighbor-state.ts';
import { buildTrees, type OffloadTree } from '../state/offload-tree.ts';
import type { PathState } from '../state/path-state.ts';
import { type DecodeOptions, decodeBatch, encodeBatch, releaseTreeAddresses } from '../state/state-codec.ts';
import type { TcpConst, TcpState } from '../state/tcp-state.ts';
import { TcpStateId } from '../state/tcp-state.ts';
import { isOffloadable, validateTcpState } from '../state/validate.ts';
import { readU16, readU32 } from '../wire/addr.ts';
import {
  completePartialL4Checksum,
  foldChecksum,
  onesSum,
  pseudoHeaderSum,
  pseudoHeaderSum6,
  writeL4Checksum,
  writeL4ChecksumFrom,
} from '../wire/checksum.ts';
import {
  ETHERNET_HEADER_LENGTH,
  ETHERNET_VLAN_HEADER_LENGTH,
  EtherType,
  writeEthernetHeader,
} from '../wire/ethernet.ts';
import {
  ethIpv4Offset,
  ethL3Offset,
  ethType,
  ipv4Dst,
  ipv4HeaderLen,
  ipv4IsFragment,
  ipv4Proto,
  ipv4Src,
  ipv4TotalLen,
  l4DstPort,
  l4SrcPort,
  tcpAck,
  tcpFlags,
} from '../wire/fields.ts';
import { createIpv4Header, decodeIpv4, IpProto } from '../wire/ipv4.ts';
import { TcpFlag } from '../wire/tcp.ts';
import {
  type ConnKey,
  connKeyId,
  type EngineIndicationArgs,
  type InitiateConnResult,
  type InitiateOptions,
  type InitiateResult,
  type InvalidateTarget,
  isTreeTransfer,
  type NeighborName,
  type NeighborSpec,
  type NicBornHooks,
  type NicListenSpec,
  type OffloadUpdate,
  type QueryResult,
  SCAN,
  type TcpUpdateScope,
  type Transfer,
  type TreeTransfer,
} from './nic.ts';
import { TupleMap } from './tuple-map.ts';

/** How the engine reports an indication to whoever hosts it (an EventEmitter, a MessagePort, ...). */
export type IndicationSink = (...indication: EngineIndicationArgs) => void;

export interface NicEngineOptions {
  id: string;
  /** The NIC's own link; the engine installs its receive and carrier handlers. */
  link: Link;
  clock: Clock;
  random: Random;
  /** The host's ISN secret (StackOptions.isnSecret); absent, the engine draws its own. */
  isnSecret?: Uint8Array;
  counters?: Counters;
  /** Connections it accepts at once (default 100000). */
  capacity?: number;
  /** Every received frame that is not for an offloaded connection (borrowed: copy to keep). */
  toHost: (frame: Uint8Array) => void;
  /** Carrier changes of the link, for the host's view of it. */
  hostCarrier?: (up: boolean) => void;
  indicate: IndicationSink;
  /** Report each neighbor's reachability this often (ms); 0 (default) never. */
  reachabilityIntervalMs?: number;
  /**
   * The table IPv6 address handles of this engine's connections belong to. A worker's engine has
   * its own (decoded transfers are interned there); without one, a LocalNic's engine takes the
   * table of the first IPv6 trees handed to it in process, the host's, so a handle means the same
   * on both sides of a same-thread transfer.
   */
  addrs?: AddressTable;
  /**
   * Called for every connection a batch installs or releases: a worker's proof of life. A batch
   * of thousands runs in one synchronous call, longer than a watchdog's deadline under load, and a
   * busy thread must not read as a dead one.
   */
  progress?: () => void;
  /**
   * True while input for this engine's connections may also wait where a drain of its link does
   * not reach: a worker with peers (a team shares one MAC, the switch delivers to whichever port
   * sent last, and a peer forwards this NIC's segments by message), or other TAPs of the team in
   * this thread. A loss timer's drain then still reads the link, but cannot say all was read, so a
   * late timer keeps its one turn for that input (tcp-timers.ts LATE_TIMER_MS). Absent: none can.
   */
  moreInput?: () => boolean;
  /**
   * How long a connection's hold for its settle lasts at most (ms of `clock`; default
   * SETTLE_HOLD_MS). Only tests set it, long, where what they assert is the order the hold keeps
   * and a slow machine's settle must not reach the engine past the bound (a worker's rig runs in
   * real time).
   */
  settleHoldMs?: number;
  /**
   * Told of each packet another owner forwarded (`inject`) or the link kept for a settle
   * (`endAwait`) just before it runs: a worker marks the connection it is for before anything of
   * it changes, as it does for each frame of its link (nic-worker.ts noteFrame), so that a read of
   * the application's that races the packet's ACK is never judged quiet (quietReads).
   */
  beforeInjected?: (packet: Uint8Array) => void;
  /**
   * Told of each connection an update changes (`update`: a TCP settings update's, or one resent on
   * a path that changed under it) just before it changes, as `beforeInjected` is of a packet: an
   * update is the host's word, run in this thread, that can change what a read of the
   * application's makes the connection send, so a worker marks it as it would for a frame.
   */
  beforeUpdated?: (conn: TcpConnection) => void;
  /**
   * Told of each connection whose timer fired, just before its work runs (TcpHostEnv.beforeTimer):
   * the one change of a connection that comes from neither a frame, a packet, a call nor an
   * update, so a worker that marks those marks these too, and need not rewrite quiet records
   * now and then in case a timer changed one.
   */
  beforeTimer?: (conn: TcpConnection) => void;
}

/** A listener on one IPv6 address handed to an engine with no address table yet (NicEngine.listen). */
interface WaitingListen {
  spec: NicListenSpec;
  born: NicBornHooks;
  /** What stops it once made (null while it waits, or when refused). */
  stop: (() => void) | null;
}

interface NeighborSlot {
  state: NeighborState;
  /** Paths pointing at it. */
  refs: number;
}

export interface PathSlot {
  state: PathState;
  /** Connections using it. */
  refs: number;
}

/** A connection an initiate may take without building it (its state stays in its transfer record). */
export interface LazyConn {
  readonly key: ConnKey;
}

/**
 * Connections of an initiate taken unbuilt, by the index of their path in the batch (trees in
 * order, their paths in order): each counts in the load and holds its path like an installed one;
 * `taken` hears of each one the engine accepted (room, not here already), with its path.
 */
export interface LazyTake {
  byNode: readonly (readonly LazyConn[] | undefined)[];
  taken(c: LazyConn, path: PathSlot): void;
}

/** Room for the largest IP packet behind a tagged Ethernet header. */
const TX_BUF_SIZE = 18 + 65535;
const IPV4_MAX_PACKET = 65535;
const DEFAULT_CAPACITY = 100_000;
const noProgress = (): void => {};

/** An address as a map key: an IPv4 u32 normalized, an IPv6 handle (above 2^32) as it is. */
function addrOf(ip: number): number {
  return ip >= TWO_32 ? ip : ip >>> 0;
}

/**
 * Both addresses whole: a number made of two u32 (local * 2^32 + remote) exceeds 2^53 and loses
 * the low bits of the remote address, so paths to neighbouring peers would share one slot.
 */
function pathKey(localIp: number, remoteIp: number): string {
  return `${addrOf(localIp)}>${addrOf(remoteIp)}`;
}

/**
 * The last mark a verb of an engine of this thread put on the connections its keys name
 * (`TcpConnection.namedIn`). Negative, so it never equals the offload layer's own (positive) batch
 * numbers on the same field, and counted for the whole thread, not per engine: a connection handed
 * live between two engines (LocalNics) would otherwise meet a mark the other engine's next verb uses.
 */
let lastMark = 0;

/** Connections closed before any attach an engine keeps for a settle at most (`unclaimed`). */
const UNCLAIMED_MAX = 64;

/**
 * Segments one connection installed with `InitiateOptions.holdInput` keeps for its settle at most
 * (`awaiting`): past it, what it kept runs and later ones run as they come, as without the hold,
 * so a settle that never comes costs the order, never the segments.
 */
const AWAITING_MAX = 64;

/**
 * How long (ms of the engine's clock) a connection waits for its settle at most (`awaiting`): then
 * what it kept runs, in order, and later segments run as they come, as at a full hold. The hold
 * exists to spare the peer a stall; past this the peer, whose RTO is at least 200 ms (Linux's
 * TCP_RTO_MIN), has resent more than once, and a hold that lasts on only adds to the stall: a
 * settle this late is a host (or source NIC) that stalls or never answers, not a move. The cost of
 * running them is the order the hold kept: PAWS may drop the held segments of a settle that comes
 * after, and the peer resends them, as before the hold existed. Dropping them instead, as a NIC
 * out of buffers would, would cost the peer a timeout for data this NIC had in hand.
 */
export const SETTLE_HOLD_MS = 1000;

/**
 * `ms` as a settle hold's bound (NicEngineOptions.settleHoldMs; SETTLE_HOLD_MS when absent), or an
 * InvalidArgumentError: a negative or non-finite bound would arm the hold's timer in the past or
 * never, and a hold that never ends keeps its connection's link input from it for good.
 */
export function settleHoldOf(ms: number | undefined): number {
  if (ms === undefined) return SETTLE_HOLD_MS;
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0)
    throw new InvalidArgumentError(`settleHoldMs must be a finite number of ms, 0 or more, got ${ms}`);
  return ms;
}

/** A connection's hold for its settle (`awaiting`): since when, and the segments it kept. */
interface SettleHold {
  readonly since: number;
  readonly kept: Uint8Array[];
}

/** The error of a request that names a connection twice (a worker refuses its unbuilt ones with it too). */
export function namedTwice(verb: string, key: ConnKey): InvalidArgumentError {
  return new InvalidArgumentError(`${verb}: the request names connection ${connKeyId(key)} twice`);
}

/** A neighbor's identity here: its IPv4 address, or its IPv6 bytes and VLAN as text. */
function neighborKey(n: NeighborState): number | string {
  return nbKey(n.const.ip, n.const.ip6, n.const.vlanId);
}

/** Whether `n` names the neighbor `nb` (an IPv4 name never an IPv6 neighbor, whose `ip` is 0). */
function names(n: NeighborName, nb: NeighborState): boolean {
  const c = nb.const;
  if (n.ip6 === undefined) return c.ip6 === undefined && c.ip === n.neighborIp >>> 0;
  if (c.ip6 === undefined || (n.vlanId !== undefined && n.vlanId !== c.vlanId)) return false;
  for (let i = 0; i < 16; i++) if (c.ip6[i] !== n.ip6[i]) return false;
  return true;
}

/** A neighbor name from a caller, checked: IPv6 bytes are 16 and come with `neighborIp` 0. */
function checkNeighborName(n: NeighborName): NeighborName {
  if (typeof n.neighborIp !== 'number' || !Number.isInteger(n.neighborIp))
    throw new InvalidArgumentError('neighborIp must be an integer');
  if (n.ip6 !== undefined && (!(n.ip6 instanceof Uint8Array) || n.ip6.length !== 16 || n.neighborIp !== 0))
    throw new InvalidArgumentError('an IPv6 neighbor is named by 16 bytes in ip6, with neighborIp 0');
  if (n.vlanId !== undefined && !(Number.isInteger(n.vlanId) && n.vlanId >= -1 && n.vlanId <= 4094))
    throw new InvalidArgumentError(`vlanId must be -1..4094, not ${n.vlanId}`);
  return n;
}

function nbKey(ip: number, ip6: Uint8Array | undefined, vlanId: number): number | string {
  if (ip6 === undefined) return ip >>> 0;
  let k = `${vlanId}/`;
  for (let i = 0; i < 16; i++) k += ip6[i]! < 16 ? `0${ip6[i]!.toString(16)}` : ip6[i]!.toString(16);
  return k;
}

const IPV6_HEADER = 40;

function keyOf(s: TcpState): ConnKey {
  const c = s.const;
  return { localIp: c.localIp, localPort: c.localPort, remoteIp: c.remoteIp, remotePort: c.remotePort };
}

/**
 * Sends TCP segments straight onto the NIC's link, with headers from the offloaded path and
 * neighbor objects. There is no ARP here: a neighbor whose MAC is unknown (-1) is not sent to.
 */
class NicIpSender implements IpSender {
  readonly txBuf = new Uint8Array(TX_BUF_SIZE);
  private readonly gso: LinkGsoOptions = { gsoSize: 0, csumStart: 0, csumOffset: 16 };
  private readonly ipOut: Ipv4Output;
  constructor(
    private readonly link: Link,
    private readonly counters: Counters,
    idSecret: number,
    /** The engine's address table (IPv6 paths only run once it has one). */
    private readonly addrs: () => AddressTable | null,
  ) {
    this.ipOut = new Ipv4Output(idSecret);
  }

  begin(path: PathState): number {
    const eth = path.neighbor.const.vlanId >= 0 ? ETHERNET_VLAN_HEADER_LENGTH : ETHERNET_HEADER_LENGTH;
    return eth + (path.const.remoteIp >= TWO_32 ? IPV6_HEADER : 20);
  }

  /** Write the Ethernet header in front of the IP header; returns where the IP header starts. */
  private ethernet(path: PathState): number {
    const nb = path.neighbor;
    return writeEthernetHeader(
      this.txBuf,
      0,
      nb.cached.dstMac,
      nb.const.srcMac,
      nb.const.vlanId,
      path.const.remoteIp >= TWO_32 ? EtherType.IPV6 : EtherType.IPV4,
    );
  }

  /**
   * The Ethernet and IPv6 fixed headers in front of `l4Len` transport bytes: traffic class and hop
   * limit from the connection (or the path), the connection's flow label from the path's seed and
   * the ports, as the host stack sent it. Returns the offset of the IPv6 header.
   */
  private header6(path: PathState, protocol: number, l4Len: number, ttl?: number, tos?: number): number {
    const buf = this.txBuf;
    const ip = this.ethernet(path);
    const addrs = this.addrs()!;
    const ports = l4Len >= 4 ? readU32(buf, ip + IPV6_HEADER) : 0;
    const f = path.flow;
    const label =
      f === undefined ? flowLabel6(path.const.remoteIp, ports, 1, 0) : flowLabel6(f.base, ports, f.k0, f.k1);
    writeIpv6Fixed(buf, ip, path, addrs, label, protocol, l4Len, ttl, tos);
    return ip;
  }

  /** `commit` on an IPv6 path: never fragmented here (TCP sets DF; the MTU floor is 1280). */
  private commit6(path: PathState, protocol: number, l4Len: number, ttl?: number, tos?: number): boolean {
    const c = this.counters;
    const total = IPV6_HEADER + l4Len;
    if (total > path.cached.mtu || total > this.link.mtu || l4Len > 0xffff) {
      c.inc('tx.drop.nic.too-big');
      return false;
    }
    const ip = this.header6(path, protocol, l4Len, ttl, tos);
    if (!this.link.send(this.txBuf.subarray(0, ip + total))) {
      c.inc('tx.drop.nic.link');
      return false;
    }
    c.inc('tx.nic.frames');
    return true;
  }

  commit(path: PathState, protocol: number, l4Len: number, df: boolean, ttl?: number, tos?: number): boolean {
    const c = this.counters;
    if (path.const.remoteIp >= TWO_32) {
      if (path.neighbor.cached.dstMac < 0 || this.addrs() === null) {
        c.inc('tx.drop.nic.no-neighbor');
        return false;
      }
      return this.commit6(path, protocol, l4Len, ttl, tos);
    }
    const nb = path.neighbor;
    if (nb.cached.dstMac < 0) {
      c.inc('tx.drop.nic.no-neighbor');
      return false;
    }
    const total = 20 + l4Len;
    if (total > path.cached.mtu || total > this.link.mtu) {
      c.inc('tx.drop.nic.too-big');
      return false;
    }
    const ip = this.ethernet(path);
    this.ipOut.write(this.txBuf, ip, path, protocol, total, df, ttl, tos);
    if (!this.link.send(this.txBuf.subarray(0, ip + total))) {
      c.inc('tx.drop.nic.link');
      return false;
    }
    c.inc('tx.nic.frames');
    return true;
  }

  // A link that finishes checksums and cuts super-segments (a TAP with vnet headers) gets them,
  // as the host stack's path layer does.

  checksumOffload(path: PathState): boolean {
    return this.link.offloads?.csum === true && path.neighbor.cached.dstMac >= 0;
  }

  maxPacketBytes(path: PathState): number {
    const tso = path.const.remoteIp >= TWO_32 ? this.link.offloads?.tso6 : this.link.offloads?.tso;
    return tso === true && this.checksumOffload(path) ? IPV4_MAX_PACKET : path.cached.mtu;
  }

  /** A TCP packet on an IPv6 path whose checksum the link completes, cut by it when above the MTU (TSO6). */
  private offload6(path: PathState, l4Len: number, segSize: number, ttl?: number, tos?: number): boolean {
    const c = this.counters;
    const buf = this.txBuf;
    const l4 = this.begin(path);
    const mtu = Math.min(path.cached.mtu, this.link.mtu);
    const segmented = IPV6_HEADER + l4Len > mtu;
    const addrs = this.addrs();
    if (
      addrs === null ||
      !this.checksumOffload(path) ||
      typeof this.link.sendGso !== 'function' ||
      (segmented && this.link.offloads?.tso6 !== true)
    ) {
      if (addrs !== null && l4Len >= 20 && l4 + l4Len <= buf.length) {
        const p = path.const;
        writeL4ChecksumFrom(
          buf,
          l4,
          l4Len,
          IpProto.TCP,
          addrs.pseudoSum(p.localIp, p.remoteIp, IpProto.TCP, l4Len),
        );
      }
      c.inc('tx.nic.offload.fallback');
      return this.commit(path, IpProto.TCP, l4Len, true, ttl, tos);
    }
    const tcpHl = l4Len >= 20 ? (buf[l4 + 12]! >>> 4) * 4 : 0;
    if (
      tcpHl < 20 ||
      tcpHl > l4Len ||
      l4 + l4Len > buf.length ||
      l4Len > 0xffff ||
      (segmented && (segSize < 1 || IPV6_HEADER + tcpHl + segSize > mtu))
    ) {
      c.inc('tx.drop.nic.bad-length');
      return false;
    }
    this.header6(path, IpProto.TCP, l4Len, ttl, tos);
    const o = this.gso;
    o.gsoSize = segmented ? segSize : 0;
    o.csumStart = l4;
    o.csumOffset = 16;
    if (!this.link.sendGso(buf.subarray(0, l4 + l4Len), o)) {
      c.inc('tx.drop.nic.link');
      return false;
    }
    c.inc(segmented ? 'tx.nic.offload.tso6' : 'tx.nic.offload.csum6');
    return true;
  }

  commitOffload(path: PathState, l4Len: number, segSize: number, ttl?: number, tos?: number): boolean {
    if (path.const.remoteIp >= TWO_32) return this.offload6(path, l4Len, segSize, ttl, tos);
    const c = this.counters;
    const buf = this.txBuf;
    const ethLen = this.begin(path) - 20;
    const mtu = Math.min(path.cached.mtu, this.link.mtu);
    if (
      !this.checksumOffload(path) ||
      typeof this.link.sendGso !== 'function' ||
      (20 + l4Len > mtu && !this.link.offloads?.tso)
    ) {
      // The link lost its offloads meanwhile: finish here, and commit refuses what is too big.
      writeL4Checksum(buf, ethLen + 20, l4Len, path.const.localIp, path.const.remoteIp, IpProto.TCP);
      c.inc('tx.nic.offload.fallback');
      return this.commit(path, IpProto.TCP, l4Len, true, ttl, tos);
    }
    const o = this.gso;
    if (!this.ipOut.writeOffloaded(buf, ethLen, path, l4Len, segSize, mtu, IPV4_MAX_PACKET, o, ttl, tos)) {
      c.inc('tx.drop.nic.bad-length');
      return false;
    }
    this.ethernet(path);
    const segmented = o.gsoSize > 0;
    if (!this.link.sendGso(buf.subarray(0, ethLen + 20 + l4Len), o)) {
      c.inc('tx.drop.nic.link');
      return false;
    }
    c.inc(segmented ? 'tx.nic.offload.tso' : 'tx.nic.offload.csum');
    return true;
  }
}

/**
 * The thread-agnostic core of an offload target: it owns a link, runs offloaded connections with
 * its own TcpLayer, demultiplexes received frames (its connections' segments to that layer,
 * everything else up to the host), keeps the installed neighbor and path objects shared by those
 * connections, and answers the offload verbs synchronously. LocalNic runs it in the caller's
 * thread; WorkerNic runs it inside a worker. It uses no worker or port API itself.
 */
export class NicEngine {
  readonly id: string;
  readonly tcp: TcpLayer;
  readonly counters: Counters;
  readonly capacity: number;
  readonly link: Link;
  private readonly clock: Clock;
  private readonly random: Random;
  private readonly indicate: IndicationSink;
  private readonly toHost: (frame: Uint8Array) => void;
  private readonly progress: () => void;
  private readonly neighbors = new Map<number | string, NeighborSlot>();
  /** See NicEngineOptions.addrs; null until the first IPv6 connection. */
  private addrs: AddressTable | null;
  private readonly env: TcpHostEnv;
  private readonly paths = new Map<string, PathSlot>();
  /** Connections invalidated: released (frozen) and waiting for terminate. */
  private readonly parked = new Map<string, TcpState>();
  /**
   * Connections that closed here before anything attached to them, with data unread: an install's
   * whose peer reset it while the transfer that brought it awaited its settle. Kept for that
   * settle's attach (`claimClosed`), so the application reads the data before it hears the reset;
   * let go when the tuple is installed or terminated here again, or the engine closes.
   */
  private readonly unclaimed = new TupleMap<TcpConnection>();
  /**
   * Connections installed with `InitiateOptions.holdInput` whose settle has not come (`inject`'s
   * `settled`), with the segments this NIC's link brought them meanwhile, as IP packets in the
   * order they came. The source held the peer's segments of the move, older than these; run
   * first, these would set ts.recent past them and PAWS would drop them all at the settle.
   */
  private readonly awaiting = new TupleMap<SettleHold>();
  /** Ends the holds older than `settleHoldMs` (`awaiting`, whose order is their start's). */
  private readonly settleTimer: Timer;
  /** NicEngineOptions.settleHoldMs. */
  private readonly settleHoldMs: number;
  /** NicEngineOptions.beforeInjected. */
  private readonly beforeInjected: ((packet: Uint8Array) => void) | undefined;
  /** Lets go of this thread's ring pool trim (RingPoolTrim) at close. */
  private readonly trimHeld: () => void;
  /** NicEngineOptions.beforeUpdated. */
  private readonly beforeUpdated: ((conn: TcpConnection) => void) | undefined;
  /** The tuples of an initiate's trees, while `twiceIn` reads them (kept, emptied after each). */
  private readonly batchKeys = new TupleMap<true>(true);
  private readonly ipHdr = createIpv4Header();
  private readonly rxInfo: IpInfo = { src: 0, dst: 0, ttl: 0, tos: 0, ifIndex: 0 };
  private readonly reachTimer: Timer | null;
  private readonly reachIntervalMs: number;
  private closed = false;
  /** Connections taken unbuilt (LazyTake): counted in the load, holding their paths. */
  private lazyCount = 0;
  /**
   * Connections that closed here whose memory the host still holds for the application (a worker
   * NIC's blocks with bytes unread: WorkerNic's `heldClosed`): they take a place of `capacity`
   * each, as Linux charges a closed socket's unread data until it is read or the socket closed,
   * so a NIC whose reset connections are held by paused readers takes no more than it could run.
   */
  heldClosed = 0;
  /** Whether a connection is held here unbuilt (set by whoever takes connections lazily). */
  isLazy: ((key: ConnKey) => boolean) | null = null;
  /** Host listeners whose SYNs are answered here (`listen`): the words the host shares, its hooks. */
  private readonly gates = new Map<object, { gate: Int32Array; born: NicBornHooks }>();
  /** Listeners on one IPv6 address waiting for this engine's address table (`listen`). */
  private readonly waitingListens = new Set<WaitingListen>();

  constructor(opts: NicEngineOptions) {
    if (!opts?.link || !opts.clock || !opts.random) {
      throw new InvalidArgumentError('NicEngine needs a link, a clock and a random source');
    }
    this.settleHoldMs = settleHoldOf(opts.settleHoldMs);
    this.beforeInjected = opts.beforeInjected;
    this.beforeUpdated = opts.beforeUpdated;
    const capacity = opts.capacity ?? DEFAULT_CAPACITY;
    if (!Number.isInteger(capacity) || capacity < 0) {
      throw new InvalidArgumentError(`NIC capacity must be a non-negative integer, got ${capacity}`);
    }
    this.id = opts.id;
    this.link = opts.link;
    this.clock = opts.clock;
    this.random = opts.random;
    this.capacity = capacity;
    this.counters = opts.counters ?? new Counters();
    this.indicate = opts.indicate;
    this.toHost = opts.toHost;
    this.progress = opts.progress ?? noProgress;
    this.addrs = opts.addrs ?? null;
    const env: TcpHostEnv = {
      clock: opts.clock,
      random: opts.random,
      counters: this.counters,
      ip: new NicIpSender(opts.link, this.counters, opts.random.u32(), () => this.addrs),
      pathTo: (remoteIp, localIp) => this.findPath(remoteIp, localIp),
      isLocal: () => false,
      isnSecret: opts.isnSecret,
    };
    if (opts.beforeTimer !== undefined)
      (env as { beforeTimer?: (c: TcpConnection) => void }).beforeTimer = opts.beforeTimer;
    if (this.addrs !== null) (env as { addrs?: AddressTable }).addrs = this.addrs;
    const link = opts.link;
    const moreInput = opts.moreInput;
    // Read empty, the link has given all it held; whether that is all the engine hears is
    // moreInput's to say (the host's own frames come as calls, never as input).
    if (link.drain !== undefined)
      (env as { drainInput?: () => boolean }).drainInput = () => link.drain!() && moreInput?.() !== true;
    this.env = env;
    this.tcp = new TcpLayer(env);
    this.tcp.onClosed = (conn) => this.connClosed(conn);
    const hostCarrier = opts.hostCarrier;
    this.link.onFrame((frame, info) => this.onFrame(frame, info));
    this.link.onCarrier((up, since) => {
      hostCarrier?.(up);
      this.indicate('link', up, since ?? opts.clock.now());
    });
    this.settleTimer = opts.clock.createTimer(() => this.expireHolds()).unref();
    this.reachIntervalMs = opts.reachabilityIntervalMs ?? 0;
    if (this.reachIntervalMs > 0) {
      this.reachTimer = opts.clock.createTimer(() => this.reportReachability()).unref();
      this.reachTimer.arm(this.reachIntervalMs);
    } else {
      this.reachTimer = null;
    }
    // Rings of connections that end here give their memory to the thread's pool: trimmed while it runs.
    this.trimHeld = RingPoolTrim.hold(opts.clock);
  }

  /** Connections installed (parked ones included: they still hold their slot). */
  get load(): number {
    return this.tcp.size + this.parked.size + this.lazyCount;
  }

  /** Connections taken unbuilt and not yet built or let go. */
  get lazy(): number {
    return this.lazyCount;
  }

  /**
   * Build a connection taken unbuilt, from its state (read from its record and validated by the
   * caller): it runs from here as if the initiate had installed it, prodded when that initiate
   * asked for a prod, its link's input held for its settle when that initiate asked for it
   * (`holdInput`, the settle not come yet).
   */
  adoptLazy(s: TcpState, path: PathSlot, prod = false, holdInput = false): TcpConnection {
    this.lazyCount--;
    s.path = path.state;
    const conn = this.tcp.adopt(s, null, { prod });
    this.takeHeld(s.const);
    if (holdInput) this.startAwait(conn.key, this.clock.now());
    this.counters.inc('nic.lazy.built');
    return conn;
  }

  /** A connection taken unbuilt left unbuilt (handed on, or refused at its build): its path's hold goes. */
  dropLazy(path: PathSlot): void {
    this.lazyCount--;
    this.unrefPath(path);
  }

  /**
   * Segments held here from an earlier terminate of this connection (a transfer that came back)
   * belong to it again.
   */
  private takeHeld(key: TcpConst): void {
    if (
      this.tcp.frozenSize === 0 ||
      !this.tcp.isFrozen(key.localIp, key.localPort, key.remoteIp, key.remotePort)
    )
      return;
    for (const p of this.tcp.takeQueued(key.localIp, key.localPort, key.remoteIp, key.remotePort))
      this.tcp.inputPacket(p);
    this.tcp.dropFrozen(key.localIp, key.localPort, key.remoteIp, key.remotePort);
  }

  get linkUp(): boolean {
    return this.link.carrier;
  }

  /** A frame from the host stack, to go out on the link. */
  sendFromHost(frame: Uint8Array): boolean {
    if (this.closed) return false;
    this.counters.inc('tx.nic.host-frames');
    return this.link.send(frame);
  }

  connection(key: ConnKey): TcpConnection | undefined {
    return this.tcp.lookup(key.localIp, key.localPort, key.remoteIp, key.remotePort);
  }

  /** A connection closed here before anything attached to it, with data unread (`unclaimed`), taken. */
  claimClosed(key: ConnKey): TcpConnection | undefined {
    if (this.unclaimed.size === 0) return undefined;
    const conn = this.unclaimed.get(key);
    if (conn !== undefined) this.unclaimed.delete(key);
    return conn;
  }

  /**
   * A kept closed connection of `key` nobody claimed, let go: its unread data stays charged to this
   * engine's memory (TcpBudget.holdUnread) until dropped, and nothing else will drop it now.
   */
  private letGoUnclaimed(key: ConnKey): void {
    const conn = this.unclaimed.get(key);
    if (conn === undefined) return;
    this.unclaimed.delete(key);
    conn.dropUnread();
  }

  // ---- the verbs -------------------------------------------------------------------------------

  /**
   * `decode.fill`: called with the decoded trees before anything is installed, to add connections
   * that came another way (transfer records); what it throws refuses the batch.
   */
  initiate(
    batch: Transfer,
    opts: InitiateOptions = {},
    decode?: DecodeOptions & { fill?: (trees: OffloadTree[]) => void; lazy?: LazyTake },
  ): InitiateResult {
    if (isTreeTransfer(batch)) {
      // Trees in process skip the decoder, whose validation refuses a connection named twice:
      // installed as they come, the second naming was refused as "already offloaded here" after
      // the first had been installed, and a caller that rolled back what was refused had the
      // connection run twice.
      const twice = this.twiceIn(batch.trees);
      if (twice !== null) {
        this.counters.inc('nic.initiate.refused');
        return { status: 'failure', reason: twice.message, conns: [] };
      }
      return this.install(batch.trees, opts, true);
    }
    let trees: ReturnType<typeof decodeBatch> | undefined;
    try {
      const addrs = this.addressTable();
      // A worker's table mirrors the host's: addresses keep the host's handles here.
      trees = decodeBatch(batch, this.clock.now(), { ...decode, addrs, senderHandles: addrs.mirror });
      decode?.fill?.(trees);
    } catch (e) {
      // Refused by `fill` after the decode: the references its IPv6 paths took go back, so a
      // refused batch leaves the mirror table as it found it.
      if (trees !== undefined) releaseTreeAddresses(trees);
      this.counters.inc('nic.initiate.refused');
      const reason = e instanceof StateValidationError ? e.message : String(e);
      return { status: 'failure', reason, conns: [] };
    }
    return this.install(trees, opts, false, decode?.lazy);
  }

  /**
   * Install trees. `borrowed`: they came in process, so their neighbor and path objects still
   * belong to the sender (the host, or another NIC) and are copied, once per tree; the TCP states
   * themselves, released by the sender, become this NIC's.
   */
  private install(
    trees: readonly OffloadTree[],
    opts: InitiateOptions,
    borrowed: boolean,
    lazy?: LazyTake,
  ): InitiateResult {
    const prod = opts?.prod === true;
    if (this.closed || !this.link.carrier) {
      const reason = this.closed ? 'NIC closed' : 'link down';
      const conns: InitiateConnResult[] = [];
      for (const t of trees)
        for (const p of t.paths)
          for (const s of p.conns) conns.push({ key: keyOf(s), status: 'failure', reason });
      for (const l of lazy?.byNode ?? [])
        for (const c of l ?? []) conns.push({ key: c.key, status: 'failure', reason });
      return { status: 'failure', reason, conns };
    }
    const conns: InitiateConnResult[] = [];
    let ok = 0;
    let room = this.room;
    let nodeIndex = -1;
    // The batch installs in this one turn: its holds start together, the clock read once.
    const holdSince = opts.holdInput === true ? this.clock.now() : 0;
    for (const t of trees) {
      const foreign = this.foreignAddresses(t);
      if (foreign !== null) {
        for (const p of t.paths) {
          for (const s of p.conns) conns.push({ key: keyOf(s), status: 'failure', reason: foreign });
          for (const c of lazy?.byNode[++nodeIndex] ?? [])
            conns.push({ key: c.key, status: 'failure', reason: foreign });
        }
        continue;
      }
      const nb = this.installNeighbor(t.neighbor, borrowed);
      for (const node of t.paths) {
        const path = this.installPath(node.path, nb, borrowed);
        for (const s of node.conns) {
          this.progress();
          const key = s.const;
          if (room <= 0) {
            conns.push({
              key: keyOf(s),
              status: 'no-resources',
              reason: `capacity ${this.capacity} reached`,
            });
            continue;
          }
          if (
            this.connection(key) !== undefined ||
            (this.parked.size > 0 && this.parked.has(connKeyId(key))) ||
            (this.lazyCount > 0 && this.isLazy?.(key) === true)
          ) {
            conns.push({ key: keyOf(s), status: 'failure', reason: 'already offloaded here' });
            continue;
          }
          s.path = path.state;
          path.refs++;
          if (this.unclaimed.size > 0) this.letGoUnclaimed(key);
          const conn = this.tcp.adopt(s, null, { prod });
          room--;
          ok++;
          // Named by the connection's own key, made once per connection object (a revived one
          // keeps it): a key object per connection and move before.
          conns.push({ key: conn.key, status: 'success' });
          this.takeHeld(key);
          if (opts.holdInput === true) this.startAwait(conn.key, holdSince);
        }
        for (const c of lazy?.byNode[++nodeIndex] ?? []) {
          this.progress();
          if (room <= 0) {
            conns.push({ key: c.key, status: 'no-resources', reason: `capacity ${this.capacity} reached` });
            continue;
          }
          if (
            this.connection(c.key) !== undefined ||
            (this.parked.size > 0 && this.parked.has(connKeyId(c.key))) ||
            this.isLazy?.(c.key) === true
          ) {
            conns.push({ key: c.key, status: 'failure', reason: 'already offloaded here' });
            continue;
          }
          path.refs++;
          this.lazyCount++;
          room--;
          ok++;
          conns.push({ key: c.key, status: 'success' });
          lazy!.taken(c, path);
        }
        if (path.refs === 0) this.unrefPath(path, false);
      }
    }
    this.counters.inc('nic.initiate.conns', ok);
    const total = conns.length;
    const status =
      ok === total
        ? 'success'
        : ok > 0
          ? 'partial'
          : conns.some((c) => c.status === 'failure')
            ? 'failure'
            : 'no-resources';
    return { status, conns };
  }

  terminate(keys: readonly ConnKey[] | 'all', encode?: { ringsByRef?: boolean }): Uint8Array {
    const now = this.clock.now();
    const states = this.releaseStates(keys);
    const trees = buildTrees(states);
    const out = encodeBatch(trees, now, { skipValidation: true, ringsByRef: encode?.ringsByRef === true });
    this.dropTrees(trees);
    this.counters.inc('nic.terminate.conns', states.length);
    return out;
  }

  /** Terminate in process: the released, validated states themselves, grouped in trees. */
  terminateTrees(keys: readonly ConnKey[] | 'all'): TreeTransfer {
    const states = this.releaseStates(keys);
    const trees = buildTrees(states);
    this.dropTrees(trees);
    this.counters.inc('nic.terminate.conns', states.length);
    return { kind: 'trees', trees };
  }

  private releaseStates(keys: readonly ConnKey[] | 'all'): TcpState[] {
    const states: TcpState[] = [];
    const list: readonly ConnKey[] = keys === 'all' ? this.allKeys() : keys;
    // Found once, before anything is released: a request that names a connection twice is refused
    // whole (the list from 'all' names each once).
    const found = keys === 'all' ? null : this.namedOnce('terminate', keys);
    for (let i = 0; i < list.length; i++) {
      const key = list[i]!;
      this.progress();
      const id = this.parked.size > 0 ? connKeyId(key) : '';
      const parked = id === '' ? undefined : this.parked.get(id);
      let s: TcpState;
      if (parked !== undefined) {
        this.parked.delete(id);
        s = parked;
      } else {
        const conn = found === null ? this.connection(key) : found[i];
        if (conn === undefined) {
          if (this.unclaimed.size > 0) this.letGoUnclaimed(key);
          continue;
        }
        // Terminated before its settle (a move rolled back): what its link brought it runs first,
        // so the state handed on has taken it.
        if (this.awaiting.size > 0) this.endAwait(conn.key);
        if (!isOffloadable(conn.state)) {
          this.endTimeWait(conn);
          continue;
        }
        s = this.tcp.release(conn);
      }
      try {
        validateTcpState(s);
      } catch {
        // Corrupt here: NDIS has the target fail it and abort; the host cannot run it either.
        this.counters.inc('nic.terminate.invalid');
        this.dropState(s);
        this.indicate('abort', key);
        continue;
      }
      states.push(s);
    }
    return states;
  }

  // ---- live hand-over in this thread (TcpLayer.detach / attach) --------------------------------

  /**
   * Why this engine takes no live connection now (closed, link down), or null. A transfer in this
   * thread asks before it detaches anything, so a refusal leaves the connections where they run.
   */
  liveRefusal(): string | null {
    if (this.closed) return 'NIC closed';
    if (!this.link.carrier) return 'link down';
    return null;
  }

  /** Connections this engine may still take (those closed whose memory is held count: heldClosed). */
  get room(): number {
    return this.capacity - this.load - this.heldClosed;
  }

  /** Connections invalidated here and waiting for a terminate: they hand over as states only. */
  get parkedCount(): number {
    return this.parked.size;
  }

  /**
   * Run a live connection another owner of this thread detached: its path is re-pointed at this
   * NIC's copy (installed once per path and call: `slots`, which the caller passes to
   * `settleLive` afterwards), and the same TcpConnection runs on this engine's layer. The caller
   * checked `liveRefusal`, the room and the 4-tuple first.
   */
  takeLive(conn: TcpConnection, adopt: AdoptOptions, slots: Map<PathState, PathSlot>): void {
    const from = conn.state.path;
    let slot = slots.get(from);
    if (slot === undefined) {
      slot = this.installPath(from, this.installNeighbor(from.neighbor, true), true);
      slots.set(from, slot);
    }
    conn.state.path = slot.state;
    slot.refs++;
    this.tcp.attach(conn, adopt);
  }

  /** After `takeLive` calls: count them, and drop a path installed for none. */
  settleLive(slots: Map<PathState, PathSlot>, taken: number): void {
    for (const slot of slots.values()) if (slot.refs === 0) this.unrefPath(slot, false);
    this.counters.inc('nic.initiate.conns', taken);
  }

  /**
   * Hand a live connection to another owner of this thread (which attaches it in the same turn).
   * `slots`: this batch's paths found so far, so the path's key is built once per path, not once
   * per connection.
   */
  giveLive(conn: TcpConnection, slots: Map<PathState, PathSlot | null>, batched = false): void {
    this.tcp.detach(conn, null, batched);
    const p = conn.state.path;
    let slot = slots.get(p);
    if (slot === undefined) {
      const found = this.paths.get(pathKey(p.const.localIp, p.const.remoteIp));
      slot = found !== undefined && found.state === p ? found : null;
      slots.set(p, slot);
    }
    if (slot !== null) this.unrefPath(slot);
  }

  /**
   * A connection a transfer takes from here that is not offloadable (TIME_WAIT, or a handshake
   * that a terminate finds: nothing left to hand over) ends here; the host hears 'closed'.
   */
  endTimeWait(conn: TcpConnection): void {
    this.counters.inc('nic.terminate.time-wait-dropped');
    terminate(conn, null, true);
    deliverEvents(conn);
  }

  /** After `giveLive` calls: count them. */
  gaveLive(n: number): void {
    this.counters.inc('nic.terminate.conns', n);
  }

  update(u: OffloadUpdate): void {
    if (!u || typeof u !== 'object') throw new InvalidArgumentError('update needs an object');
    switch (u.kind) {
      case 'neighbor': {
        const slot = this.neighbors.get(nbKey(u.neighborIp, u.ip6, u.vlanId ?? -1));
        if (!slot) return;
        slot.state.cached.dstMac = u.dstMac;
        if (u.dstMac >= 0) slot.state.cached.hostReachableAt = this.clock.now();
        this.counters.inc('nic.update.neighbor');
        return;
      }
      case 'path': {
        for (const slot of this.paths.values()) {
          const p = slot.state;
          if (p.const.remoteIp !== addrOf(u.remoteIp)) continue;
          if (u.localIp !== undefined && p.const.localIp !== addrOf(u.localIp)) continue;
          const lowered = u.mtu !== undefined && u.mtu < p.cached.mtu;
          if (u.mtu !== undefined) p.cached.mtu = u.mtu;
          if (u.ttl !== undefined) p.cached.ttl = u.ttl;
          if (u.tos !== undefined) p.cached.tos = u.tos;
          if (u.neighbor !== undefined) this.repoint(slot, u.neighbor);
          this.counters.inc('nic.update.path');
          if (lowered || u.neighbor !== undefined) this.resendOnPath(p);
        }
        return;
      }
      case 'tcp': {
        const s = u.settings;
        if (typeof u.scope === 'object' && u.scope !== null && 'neighborIp' in u.scope)
          checkNeighborName(u.scope);
        for (const conn of this.scope(u.scope)) {
          this.beforeUpdated?.(conn);
          const k = conn.state.cached;
          if (s.keepIdleMs !== undefined) k.keepIdleMs = s.keepIdleMs;
          if (s.keepIntvlMs !== undefined) k.keepIntvlMs = s.keepIntvlMs;
          if (s.keepCount !== undefined) k.keepCount = s.keepCount;
          if (s.maxRetransmits !== undefined) k.maxRetransmits = s.maxRetransmits;
          if (s.ttl !== undefined) k.ttl = s.ttl;
          if (s.tos !== undefined) k.tos = s.tos;
          if (s.keepAlive !== undefined || s.keepIdleMs !== undefined) {
            if (s.keepAlive !== undefined) k.keepAlive = s.keepAlive;
            armKeepalive(conn);
            scheduleTimer(conn);
          }
          if (s.noDelay !== undefined) conn.setNoDelay(s.noDelay);
          this.counters.inc('nic.update.tcp');
        }
        return;
      }
      default:
        throw new InvalidArgumentError(`unknown update kind ${(u as { kind: unknown }).kind}`);
    }
  }

  invalidate(target: InvalidateTarget): void {
    const keys: ConnKey[] = [];
    let conns: TcpConnection[];
    if ('neighborIp' in target) {
      conns = this.scope(checkNeighborName(target));
    } else {
      // Refused whole before anything is parked: let through, the second naming's release of a
      // connection the first had parked threw, and the first stayed parked with no upload asked.
      conns = [];
      for (const c of this.namedOnce('invalidate', target.keys)) if (c) conns.push(c);
    }
    for (const conn of conns) {
      if (!isOffloadable(conn.state)) continue;
      const key = keyOf(conn.state);
      // Stopped where it stands: no output, segments held, state kept for terminate.
      this.parked.set(connKeyId(key), this.tcp.release(conn));
      keys.push(key);
    }
    this.counters.inc('nic.invalidated', keys.length);
    if (keys.length > 0) this.indicate('upload-requested', keys, 'invalid-state');
  }

  query(keys?: readonly ConnKey[]): QueryResult[] {
    const out: QueryResult[] = [];
    const conns: TcpConnection[] = [];
    if (keys === undefined) conns.push(...this.tcp.connections());
    else
      for (const k of keys) {
        const c = this.connection(k);
        if (c) conns.push(c);
      }
    for (const conn of conns) {
      const s = conn.state;
      const d = s.delegated;
      out.push({
        key: keyOf(s),
        state: d.state,
        sndUna: d.sndUna,
        sndNxt: d.sndNxt,
        sndMax: d.sndMax,
        rcvNxt: d.rcvNxt,
        sndWnd: d.sndWnd,
        cwnd: d.cwnd,
        srtt: d.srtt,
        sendQueued: d.sendBuffer.length,
        recvQueued: d.recvBuffer.length,
        mtu: s.path.cached.mtu,
        dstMac: s.path.neighbor.cached.dstMac,
        bytesIn: conn.stats.bytesIn,
        bytesOut: conn.stats.bytesOut,
        segmentsIn: conn.stats.segmentsIn,
        segmentsOut: conn.stats.segmentsOut,
        retransmits: conn.stats.retransmits,
        resetsIn: conn.stats.resetsIn,
        resetsOut: conn.stats.resetsOut,
        timerArmed: conn.timerArmed,
      });
    }
    return out;
  }

  progressScan(): Float64Array {
    const out = new Float64Array(this.tcp.size * SCAN.columns);
    let at = 0;
    for (const conn of this.tcp.connections()) {
      if (at + SCAN.columns > out.length) break;
      const s = conn.state;
      const d = s.delegated;
      const k = s.const;
      out[at + SCAN.localIp] = k.localIp;
      out[at + SCAN.localPort] = k.localPort;
      out[at + SCAN.remoteIp] = k.remoteIp;
      out[at + SCAN.remotePort] = k.remotePort;
      out[at + SCAN.sndUna] = d.sndUna;
      out[at + SCAN.outstanding] = d.sndMax !== d.sndUna ? 1 : 0;
      out[at + SCAN.sndWnd] = d.sndWnd;
      out[at + SCAN.sendQueued] = d.sendBuffer.length;
      out[at + SCAN.segmentsIn] = conn.stats.segmentsIn;
      out[at + SCAN.segmentsOut] = conn.stats.segmentsOut;
      out[at + SCAN.retransmits] = conn.stats.retransmits;
      out[at + SCAN.dstMac] = s.path.neighbor.cached.dstMac;
      at += SCAN.columns;
    }
    return at === out.length ? out : out.slice(0, at);
  }

  takeQueued(keys: readonly ConnKey[]): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (const k of keys) out.push(...this.tcp.takeQueued(k.localIp, k.localPort, k.remoteIp, k.remotePort));
    return out;
  }

  dropFrozen(keys: readonly ConnKey[]): void {
    for (const k of keys) this.tcp.dropFrozen(k.localIp, k.localPort, k.remoteIp, k.remotePort);
  }

  /**
   * IPv4 or IPv6 packets for connections run here, forwarded by another owner. `settled`: the
   * connections these close the settle of (InitiateOptions.holdInput): their own link's segments,
   * kept since the install, run after these, which the source held from before them.
   */
  inject(packets: readonly Uint8Array[], settled?: readonly ConnKey[]): void {
    this.injectNow(packets);
    if (settled === undefined || this.awaiting.size === 0) return;
    for (const k of settled) this.endAwait(k);
  }

  /** Connections whose link input waits for their settle now (`awaiting`). */
  get awaitingSettles(): number {
    return this.awaiting.size;
  }

  /**
   * The end of `k`'s hold for its settle: what its link brought meanwhile runs now, in order. For
   * a caller that injects the settle's packets itself first (a worker, whose connections taken
   * unbuilt are not the engine's yet); `k` may be a scratch tuple.
   */
  endAwait(k: ConnKey): void {
    const hold = this.awaiting.get(k);
    if (hold === undefined) return;
    this.awaiting.delete(k);
    if (this.awaiting.size === 0) this.settleTimer.disarm();
    // Counted as the link's segments run here, which they are.
    if (hold.kept.length > 0) this.injectNow(hold.kept, 'nic.rx.offloaded');
  }

  /** `k`'s link input waits for its settle from `since` (now), for `settleHoldMs` at most. */
  private startAwait(k: ConnKey, since: number): void {
    // Set anew at the end, so the map's order stays the order of the holds' starts.
    this.awaiting.delete(k);
    this.awaiting.set(k, { since, kept: [] });
    if (!this.settleTimer.armed) this.settleTimer.armAt(since + this.settleHoldMs);
  }

  /** End every hold that has waited `settleHoldMs` for its settle, oldest first. */
  private expireHolds(): void {
    const now = this.clock.now();
    for (let k = this.awaiting.oldestKey(); k !== undefined; k = this.awaiting.oldestKey()) {
      const due = this.awaiting.get(k)!.since + this.settleHoldMs;
      if (due > now) {
        this.settleTimer.armAt(due);
        return;
      }
      this.counters.inc('nic.rx.settle-hold-expired');
      this.endAwait(k);
    }
  }

  /**
   * Keep a segment of the link for a connection awaiting its settle (`awaiting`), as the IP packet
   * `inject` takes: true when kept. A full hold ends here, older segments first.
   */
  private awaitSettle(
    conn: TcpConnection,
    frame: Uint8Array,
    ip: number,
    end: number,
    partial: boolean,
  ): boolean {
    const kept = this.awaiting.get(conn.key)?.kept;
    if (kept === undefined) return false;
    if (kept.length >= AWAITING_MAX) {
      this.counters.inc('nic.rx.settle-hold-full');
      this.endAwait(conn.key);
      return false;
    }
    // `inject` sums every packet: one whose checksum the device left partial is completed first.
    if (partial) this.completeChecksum(frame);
    kept.push(frame.slice(ip, end));
    this.counters.inc('nic.rx.settle-held');
    return true;
  }

  private injectNow(packets: readonly Uint8Array[], counter = 'nic.rx.injected'): void {
    const h = this.ipHdr;
    const before = this.beforeInjected;
    for (const p of packets) {
      before?.(p);
      if (p.length >= IPV6_HEADER && p[0]! >>> 4 === 6) {
        this.inject6(p, counter);
        continue;
      }
      if (decodeIpv4(p, 0, p.length, h, false) !== null || h.protocol !== IpProto.TCP) {
        this.counters.inc('drop.nic.bad-injected');
        continue;
      }
      const l4 = h.headerLength;
      if (h.totalLength < l4 + 4) {
        this.counters.inc('drop.nic.bad-injected');
        continue;
      }
      const sport = l4SrcPort(p, l4);
      const dport = l4DstPort(p, l4);
      if (!this.tcp.owns(h.dst, dport, h.src, sport)) {
        this.counters.inc('drop.nic.injected-unknown');
        continue;
      }
      this.counters.inc(counter);
      this.tcp.inputPacket(p);
    }
  }

  /** An IPv6 packet (fixed header, TCP behind it) from another owner, checked there. */
  private inject6(p: Uint8Array, counter: string): void {
    const addrs = this.addrs;
    const len = readU16(p, 4);
    if (addrs === null || p[6] !== IpProto.TCP || len < 20 || IPV6_HEADER + len > p.length) {
      this.counters.inc('drop.nic.bad-injected');
      return;
    }
    const dst = addrs.find(p, 24);
    const src = dst < 0 ? -1 : addrs.find(p, 8);
    if (src < 0 || !this.tcp.owns(dst, l4DstPort(p, IPV6_HEADER), src, l4SrcPort(p, IPV6_HEADER))) {
      this.counters.inc('drop.nic.injected-unknown');
      return;
    }
    this.counters.inc(counter);
    this.tcp.inputPacket(p);
  }

  /** Report each neighbor's last-heard time now (also run by the reachability timer). */
  reportReachability(): void {
    for (const [ip, slot] of this.neighbors) {
      const d = slot.state;
      const last = Math.max(d.delegated.nicReachableAt, d.cached.hostReachableAt);
      // A copy: the indication may cross to another thread, or be kept by whoever listens.
      if (d.const.ip6 !== undefined)
        this.indicate('reachability', 0, last, d.const.ip6.slice(), d.const.vlanId);
      else this.indicate('reachability', ip as number, last);
    }
    if (this.reachTimer && !this.closed) this.reachTimer.arm(this.reachIntervalMs);
  }

  /** Abort every offloaded connection (RST) and stop. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.reachTimer?.disarm();
    this.settleTimer.disarm();
    this.trimHeld();
    this.tcp.close();
    this.gates.clear();
    this.waitingListens.clear();
    this.parked.clear();
    this.unclaimed.clear();
    this.awaiting.clear();
  }

  // ---- receive ---------------------------------------------------------------------------------

  private onFrame(frame: Uint8Array, offload?: RxOffloadInfo): void {
    const c = this.counters;
    if (this.closed) {
      c.inc('drop.nic.closed');
      return;
    }
    if (this.tcp.size > 0 || this.tcp.frozenSize > 0 || this.gates.size > 0) {
      if (frame.length >= 54 && this.tcpForUs(frame, frame.length, offload)) return;
    }
    // The host hears frames without their offload facts: hand it a whole checksum.
    if (offload?.csumPartial === true) this.completeChecksum(frame);
    c.inc('nic.rx.host');
    this.toHost(frame);
  }

  private completeChecksum(frame: Uint8Array): void {
    if (frame.length >= ETHERNET_VLAN_HEADER_LENGTH && ethType(frame) === EtherType.IPV6) {
      this.completeChecksum6(frame);
      return;
    }
    const ip = ethIpv4Offset(frame);
    if (ip < 0) return;
    const proto = ipv4Proto(frame, ip);
    if ((proto !== IpProto.TCP && proto !== IpProto.UDP) || ipv4IsFragment(frame, ip)) return;
    const ihl = ipv4HeaderLen(frame, ip);
    const total = ipv4TotalLen(frame, ip);
    if (total < ihl || ip + total > frame.length) return;
    if (completePartialL4Checksum(frame, ip + ihl, total - ihl, proto))
      this.counters.inc('nic.rx.csum-completed');
  }

  /**
   * IPv6 connections stay in the host stack, so their frames pass through here. A partial checksum
   * the kernel left is over TCP or UDP right behind the fixed header (it puts no extension header in
   * front of them); anything else is handed up as it is.
   */
  private completeChecksum6(frame: Uint8Array): void {
    const ip = ethL3Offset(frame);
    if (frame.length < ip + 40) return;
    const proto = frame[ip + 6]!;
    const len = (frame[ip + 4]! << 8) | frame[ip + 5]!;
    if ((proto !== IpProto.TCP && proto !== IpProto.UDP) || ip + 40 + len > frame.length) return;
    if (completePartialL4Checksum(frame, ip + 40, len, proto)) this.counters.inc('nic.rx.csum-completed');
  }

  /** Feed the frame to the TCP layer if it is for a connection held here; false otherwise. */
  private tcpForUs(frame: Uint8Array, len: number, offload: RxOffloadInfo | undefined): boolean {
    const ip = ethIpv4Offset(frame);
    if (ip < 0) return this.addrs !== null && this.tcpForUs6(frame, len, offload);
    if (ipv4Proto(frame, ip) !== IpProto.TCP) return false;
    // Fragments go to the host, which reassembles.
    if (ipv4IsFragment(frame, ip)) return false;
    const ihl = ipv4HeaderLen(frame, ip);
    if (len < ip + ihl + 20) return false;
    const src = ipv4Src(frame, ip);
    const dst = ipv4Dst(frame, ip);
    const sport = l4SrcPort(frame, ip + ihl);
    const dport = l4DstPort(frame, ip + ihl);
    const tcp = this.tcp;
    const conn = tcp.lookup(dst, dport, src, sport);
    let born: PathSlot | null = null;
    if (conn === undefined && !tcp.owns(dst, dport, src, sport)) {
      born = this.gates.size > 0 ? this.synHere(frame, ip + ihl, dst, dport, src) : null;
      if (born === null) return false;
    }
    const h = this.ipHdr;
    const err = decodeIpv4(frame, ip, len - ip, h, true);
    if (err !== null) {
      this.counters.inc(`drop.nic.ipv4.${err}`);
      return true;
    }
    // The device vouched for the data (or it never left this machine unsummed): TCP skips the sum.
    const vouched = offload !== undefined && (offload.csumPartial || offload.csumValid);
    if (
      conn !== undefined &&
      this.gates.size > 0 &&
      this.givesWay(conn, frame, ip + ihl, h.totalLength - ihl, src, dst, vouched)
    )
      return false;
    if (
      conn !== undefined &&
      this.awaiting.size > 0 &&
      this.awaitSettle(conn, frame, ip, ip + h.totalLength, offload?.csumPartial === true)
    )
      return true;
    this.counters.inc('nic.rx.offloaded');
    const info = this.rxInfo;
    info.src = src;
    info.dst = dst;
    info.ttl = h.ttl;
    info.tos = h.tos;
    info.l4ChecksumOk = vouched;
    this.deliver(conn, frame, ip + ihl, h.totalLength - ihl);
    if (born !== null) this.bornHere(born, dst, dport, src, sport);
    return true;
  }

  /**
   * Answer the SYNs of a host listener here (NicListenSpec): what it accepts is born on this NIC.
   * Returns what stops it (the listener's half-open connections here go, as a closed listener's).
   */
  listen(spec: NicListenSpec, born: NicBornHooks): (() => void) | null {
    if (this.closed) throw new InvalidArgumentError('listen: the NIC is closed');
    if (spec.ip <= ANY6) return this.listenNow(spec, born);
    // One IPv6 address: an engine with no table yet (a LocalNic's, until its first IPv6 trees
    // bring it the host's) cannot name it, and answers no IPv6 SYN before then anyway (synHere
    // needs a path to the peer): the listener waits for the table.
    if (this.addrs === null) {
      const w: WaitingListen = { spec, born, stop: null };
      this.waitingListens.add(w);
      return () => {
        this.waitingListens.delete(w);
        w.stop?.();
        w.stop = null;
      };
    }
    return this.listenAt6(spec, born);
  }

  /**
   * A listener on one IPv6 address, `spec.ip` a handle of the host's table: made only if this
   * engine's table holds the address the host's bytes say under that handle, or (a worker's
   * mirror) can take it there now. A mirror still holding the handle for another address (the
   * host reused it while a path here keeps the old one) is refused, and the host answers the
   * SYNs: a SYN to the old address must not find this listener, nor a born connection carry an
   * address the host would read as another. Null when refused (counted).
   */
  private listenAt6(spec: NicListenSpec, born: NicBornHooks): (() => void) | null {
    const t = this.addrs!;
    const b = spec.ipBytes;
    let held = false;
    if (b !== undefined && b.length === 16) {
      if (t.mirror) held = t.internAt(b, 0, spec.ip) === spec.ip;
      else held = t.find(b, 0) === spec.ip;
    }
    if (!held) {
      this.counters.inc('nic.listen.unknown-address');
      return null;
    }
    try {
      return this.listenNow(spec, born);
    } finally {
      // The listener holds its own reference (Listeners.listen); the mirror's from `internAt` goes.
      if (t.mirror) t.release(spec.ip);
    }
  }

  private listenNow(spec: NicListenSpec, born: NicBornHooks): () => void {
    const l = this.tcp.listen(
      { ip: spec.ip, port: spec.port, backlog: spec.backlog, options: spec.cached, v6Only: spec.v6Only },
      (conn) => born.accepted(conn),
    );
    // Its half-open connections count in the host's word, against the one backlog.
    l.gateWord = spec.word;
    l.gate = spec.gate;
    l.ringsAtAccept = born.ringsAtAccept === true;
    // Racing the host's thread for a SYN (NicBornHooks.publish): published, then looked again.
    if (born.publish !== undefined && born.claimed !== undefined) {
      l.onHalfOpen = (conn, open) => born.publish?.(conn, open) !== false;
      l.heldElsewhere = (li, lp, ri, rp) => born.claimed?.(li, lp, ri, rp) === true;
    }
    this.gates.set(l, { gate: spec.gate, born });
    return () => {
      if (!this.gates.delete(l)) return;
      l.close();
    };
  }

  /**
   * The path slot a SYN with no connection here may be answered over, or null: it goes to the host.
   * Taken only where this NIC would do what the host does: a pure SYN for a listener answered here,
   * the host's accept queue not full (its word), this listener's half-open connections under its
   * backlog (past it the host answers with SYN cookies, whose secret and ACKs are the host's), room
   * for a connection, and a path to the peer here already (a neighbor's resolution is the host's).
   */
  private synHere(frame: Uint8Array, l4: number, dst: number, dport: number, src: number): PathSlot | null {
    if ((frame[l4 + 13]! & (TcpFlag.SYN | TcpFlag.ACK | TcpFlag.RST | TcpFlag.FIN)) !== TcpFlag.SYN)
      return null;
    const l = this.tcp.listeners.find(dst, dport);
    const at = l === null ? undefined : this.gates.get(l);
    if (at === undefined) return null;
    const gate = at.gate;
    if (Atomics.load(gate, 0) !== 0 || Atomics.load(gate, 2) !== 0) return null;
    if (Atomics.load(gate, 1) >= l!.backlog || this.room <= 0 || !this.link.carrier) return null;
    if (at.born.taken(dst, dport, src, l4SrcPort(frame, l4))) return null;
    for (const slot of this.paths.values()) {
      const c = slot.state.const;
      if (c.remoteIp === addrOf(src) && c.localIp === addrOf(dst)) return slot;
    }
    return null;
  }

  /**
   * A half-open connection answered here for a host listener, and a segment that acknowledges
   * another SYN-ACK than ours: the peer took someone else's answer to its SYN. A SYN it sent again
   * can reach this NIC after the host answered the first while the host's claims could not list
   * it (NicListenSpec.claims keeps an established host connection until a NIC holds it, up to the
   * listener's backlog; past that only the host's own table knows it). The peer, established
   * there, meets our SYN-ACK with a
   * challenge ACK; the RST RFC 9293 sends for it in SYN_RECEIVED carries exactly the sequence
   * number the peer expects, and reset its connection (7, then 142 of 5,000 downloads on TAP with
   * `serve --accept-at-nic`). So this connection ends without a word and the segment goes up to
   * the host, which runs it on the connection it holds, or sends it where that runs, or, holding
   * nothing, answers it with its listener's RST: the answer this NIC would have given. A tuple
   * another member holds (its connection not yet known to the host) the listener leaves alone
   * (Listeners.input, `tcp.listen.ack-held-elsewhere`): that member's connection is the peer's.
   */
  private givesWay(
    conn: TcpConnection,
    frame: Uint8Array,
    l4: number,
    l4Len: number,
    src: number,
    dst: number,
    vouched: boolean,
  ): boolean {
    const d = conn.state.delegated;
    if (d.state !== TcpStateId.SYN_RECEIVED) return false;
    const l = conn.listener;
    if (l === null || !this.gates.has(l)) return false;
    if ((tcpFlags(frame, l4) & (TcpFlag.SYN | TcpFlag.ACK | TcpFlag.RST)) !== TcpFlag.ACK) return false;
    // Acceptable as RFC 9293 takes it in SYN_RECEIVED (tcp-input): ours, the handshake goes on.
    const ack = tcpAck(frame, l4);
    if (seqGt(ack, d.sndUna) && seqLeq(ack, d.sndMax)) return false;
    // A damaged segment must not end the connection: TCP's own input drops it.
    if (
      !vouched &&
      foldChecksum(onesSum(frame, l4, l4Len, pseudoHeaderSum(src, dst, IpProto.TCP, l4Len))) !== 0
    )
      return false;
    this.counters.inc('nic.listen.gave-way');
    terminate(conn, null, false);
    return true;
  }

  /** After a SYN answered here: the half-open connection holds its path, and the host hears of it. */
  private bornHere(slot: PathSlot, dst: number, dport: number, src: number, sport: number): void {
    const conn = this.tcp.lookup(dst, dport, src, sport);
    // None: the layer's limits dropped the SYN, as the host's would.
    if (conn === undefined || conn.state.path !== slot.state) return;
    slot.refs++;
    this.counters.inc('nic.listen.syn');
    const l = conn.listener;
    const at = l === null ? undefined : this.gates.get(l);
    at?.born.halfOpen(conn);
  }

  /** Run a checked segment through the TCP layer (`rxInfo` filled), noting proof of the neighbor. */
  private deliver(conn: TcpConnection | undefined, frame: Uint8Array, off: number, len: number): void {
    if (conn !== undefined) conn.state.path.neighbor.delegated.nicReachableAt = this.clock.now();
    this.tcp.input(this.rxInfo, frame, off, len);
  }

  /**
   * The IPv6 counterpart: TCP right behind the fixed header (a segment behind extension headers
   * goes up to the host, which walks them and hands it back through its placeholder), both
   * addresses known to the table, a four-tuple held here, and a checksum that holds over the IPv6
   * pseudo-header unless the link vouched for it. Anything else is not ours and goes up whole.
   */
  private tcpForUs6(frame: Uint8Array, len: number, offload: RxOffloadInfo | undefined): boolean {
    const ip = ethL3Offset(frame);
    if (len < ip + IPV6_HEADER + 20 || ethType(frame) !== EtherType.IPV6) return false;
    if (frame[ip]! >>> 4 !== 6 || frame[ip + 6] !== IpProto.TCP) return false;
    const addrs = this.addrs!;
    const dst = addrs.find(frame, ip + 24);
    const src = dst < 0 ? -1 : addrs.find(frame, ip + 8);
    if (src < 0) return false;
    const l4 = ip + IPV6_HEADER;
    const sport = l4SrcPort(frame, l4);
    const dport = l4DstPort(frame, l4);
    const tcp = this.tcp;
    const conn = tcp.lookup(dst, dport, src, sport);
    // A listener's SYN is answered here under the IPv4 rules (synHere): both addresses are then
    // held by the path it needs, so a worker's mirror knows them by the host's handles.
    let born: PathSlot | null = null;
    if (conn === undefined && !tcp.owns(dst, dport, src, sport)) {
      born = this.gates.size > 0 ? this.synHere(frame, l4, dst, dport, src) : null;
      if (born === null) return false;
    }
    const l4Len = readU16(frame, ip + 4);
    if (l4 + l4Len > len || l4Len < 20) {
      this.counters.inc('drop.nic.ipv6.truncated');
      return true;
    }
    const vouched = offload !== undefined && (offload.csumPartial || offload.csumValid);
    if (!vouched) {
      const sum = pseudoHeaderSum6(frame, ip + 8, frame, ip + 24, IpProto.TCP, l4Len);
      if (foldChecksum(onesSum(frame, l4, l4Len, sum)) !== 0) {
        this.counters.inc('drop.nic.ipv6.tcp-bad-checksum');
        return true;
      }
    }
    // The checksum held (or was vouched for) just above: givesWay need not sum it again.
    if (conn !== undefined && this.gates.size > 0 && this.givesWay(conn, frame, l4, l4Len, src, dst, true))
      return false;
    if (
      conn !== undefined &&
      this.awaiting.size > 0 &&
      this.awaitSettle(conn, frame, ip, l4 + l4Len, offload?.csumPartial === true)
    )
      return true;
    this.counters.inc('nic.rx.offloaded');
    const info = this.rxInfo;
    info.src = src;
    info.dst = dst;
    info.ttl = frame[ip + 7]!;
    info.tos = ((frame[ip]! & 0x0f) << 4) | (frame[ip + 1]! >>> 4);
    info.l4ChecksumOk = true;
    this.deliver(conn, frame, l4, l4Len);
    if (born !== null) this.bornHere(born, dst, dport, src, sport);
    return true;
  }

  // ---- addresses ---------------------------------------------------------------------------------

  /** The table of this engine's IPv6 handles (null before its first IPv6 connection). */
  get addressBook(): AddressTable | null {
    return this.addrs;
  }

  /** The engine's address table, made now if it has none (a transfer decoded here interns there). */
  private addressTable(): AddressTable {
    if (this.addrs === null) this.bindAddresses(new AddressTable(this.random));
    return this.addrs!;
  }

  private bindAddresses(t: AddressTable): void {
    this.addrs = t;
    (this.env as { addrs?: AddressTable }).addrs = t;
    for (const w of this.waitingListens) {
      this.waitingListens.delete(w);
      // The port taken here meanwhile (`Listeners.listen` throws): its SYNs stay the host's.
      try {
        w.stop = this.listenAt6(w.spec, w.born);
      } catch {
        this.counters.inc('nic.listen.refused');
      }
    }
  }

  /**
   * Why a tree's IPv6 paths cannot run here, or null. Handles name addresses in one table: an
   * engine without one takes the table of the first IPv6 trees it is handed (the host's, in
   * process); trees whose handles belong to another table would mean other addresses here.
   */
  private foreignAddresses(t: OffloadTree): string | null {
    for (const node of t.paths) {
      const book = node.path.addrs;
      if (node.path.const.remoteIp < TWO_32 || book === this.addrs) continue;
      if (this.addrs === null && book instanceof AddressTable) {
        this.bindAddresses(book);
        continue;
      }
      this.counters.inc('nic.initiate.foreign-addresses');
      return 'IPv6 addresses of another address table';
    }
    return null;
  }

  // ---- installed objects -------------------------------------------------------------------------

  private installNeighbor(n: NeighborState, borrowed: boolean): NeighborSlot {
    const ip = neighborKey(n);
    let slot = this.neighbors.get(ip);
    if (slot === undefined) {
      const own = borrowed
        ? { const: { ...n.const }, cached: { ...n.cached }, delegated: { ...n.delegated } }
        : n;
      slot = { state: own, refs: 0 };
      this.neighbors.set(ip, slot);
    } else {
      // Cached state is the host's: the newest transfer carries its current view.
      slot.state.cached.dstMac = n.cached.dstMac;
      slot.state.cached.hostReachableAt = n.cached.hostReachableAt;
    }
    return slot;
  }

  private installPath(p: PathState, nb: NeighborSlot, borrowed: boolean): PathSlot {
    const key = pathKey(p.const.localIp, p.const.remoteIp);
    let slot = this.paths.get(key);
    if (slot === undefined) {
      const own: PathState = borrowed
        ? { const: { ...p.const }, cached: { ...p.cached }, neighbor: nb.state, ifIndex: p.ifIndex }
        : p;
      own.neighbor = nb.state;
      nb.refs++;
      // The slot holds its IPv6 handles; a decoded path already came with those references.
      if (borrowed && own.const.remoteIp >= TWO_32) {
        own.addrs = p.addrs;
        if (p.flow !== undefined) own.flow = p.flow;
        this.addrs!.ref(own.const.localIp);
        this.addrs!.ref(own.const.remoteIp);
      }
      slot = { state: own, refs: 0 };
      this.paths.set(key, slot);
    } else {
      if (!borrowed) this.releaseAddresses(p);
      slot.state.cached.mtu = p.cached.mtu;
      slot.state.cached.ttl = p.cached.ttl;
      slot.state.cached.tos = p.cached.tos;
      if (slot.state.neighbor !== nb.state) this.repointTo(slot, nb);
    }
    return slot;
  }

  private repoint(slot: PathSlot, spec: NeighborSpec): void {
    const key = nbKey(spec.ip, spec.ip6, spec.vlanId);
    // A path keeps its family: an IPv6 path is never re-pointed at an IPv4 neighbor, nor the reverse.
    if ((spec.ip6 !== undefined) !== slot.state.const.remoteIp >= TWO_32) return;
    let nb = this.neighbors.get(key);
    if (nb === undefined) {
      const c = { ip: spec.ip >>> 0, srcMac: spec.srcMac, vlanId: spec.vlanId };
      nb = {
        state: createNeighborState(
          spec.ip6 === undefined ? c : { ...c, ip6: spec.ip6 },
          spec.dstMac,
          this.clock.now(),
        ),
        refs: 0,
      };
      this.neighbors.set(key, nb);
    } else {
      nb.state.cached.dstMac = spec.dstMac;
    }
    this.repointTo(slot, nb);
  }

  private repointTo(slot: PathSlot, nb: NeighborSlot): void {
    const old = this.neighbors.get(neighborKey(slot.state.neighbor));
    slot.state.neighbor = nb.state;
    nb.refs++;
    if (old && old !== nb) {
      old.refs--;
      if (old.refs <= 0) this.neighbors.delete(neighborKey(old.state));
    }
  }

  /** Drop a path's references on its IPv6 handles. */
  private releaseAddresses(p: PathState): void {
    if (p.const.remoteIp < TWO_32 || this.addrs === null) return;
    this.addrs.release(p.const.localIp);
    this.addrs.release(p.const.remoteIp);
  }

  /** After the path changed under them: resend outstanding data at the new size, through the new hop. */
  private resendOnPath(p: PathState): void {
    for (const conn of this.tcp.connections()) {
      if (conn.state.path !== p) continue;
      const d = conn.state.delegated;
      if (d.state < TcpStateId.ESTABLISHED || d.state === TcpStateId.TIME_WAIT) continue;
      this.beforeUpdated?.(conn);
      rewind(conn.state);
      resume(conn);
    }
  }

  private unrefPath(slot: PathSlot, dec = true): void {
    if (dec) slot.refs--;
    if (slot.refs > 0) return;
    const p = slot.state;
    this.paths.delete(pathKey(p.const.localIp, p.const.remoteIp));
    this.releaseAddresses(p);
    const nbKey = neighborKey(p.neighbor);
    const nb = this.neighbors.get(nbKey);
    if (nb) {
      nb.refs--;
      if (nb.refs <= 0) this.neighbors.delete(nbKey);
    }
  }

  /** The states of these trees left this NIC: release their holds on the paths, once per path. */
  private dropTrees(trees: readonly OffloadTree[]): void {
    for (const t of trees) {
      for (const node of t.paths) {
        const p = node.path;
        const slot = this.paths.get(pathKey(p.const.localIp, p.const.remoteIp));
        if (slot === undefined || slot.state !== p) continue;
        slot.refs -= node.conns.length - 1;
        this.unrefPath(slot);
      }
    }
  }

  /** The state left this NIC: release its hold on the path. */
  private dropState(s: TcpState): void {
    const slot = this.paths.get(pathKey(s.path.const.localIp, s.path.const.remoteIp));
    if (slot && slot.state === s.path) this.unrefPath(slot);
  }

  private connClosed(conn: TcpConnection): void {
    if (conn.released) return;
    this.dropState(conn.state);
    const key = keyOf(conn.state);
    // Closed with nobody attached (not a half-open of a listener here: those the host has not
    // accepted): data its peer sent before would be lost, where Linux reads it before the error.
    // At most UNCLAIMED_MAX, the oldest let go first: one born here and reset before the host
    // accepted it is never claimed, and a peer doing that over and over must not hold memory.
    if (conn.user === null && conn.listener === null && conn.readableLength > 0) {
      // One of the same tuple kept before is let go, not overwritten with its charge.
      if (this.unclaimed.size > 0) this.letGoUnclaimed(key);
      if (this.unclaimed.size >= UNCLAIMED_MAX) {
        const oldest = this.unclaimed.oldestKey();
        if (oldest !== undefined) this.letGoUnclaimed(oldest);
      }
      this.unclaimed.set(key, conn);
    }
    // terminate() records why only after unlinking: look once the engine has finished.
    this.clock.defer(() => {
      if (conn.closeError?.code === 'ECONNRESET') this.indicate('abort', key);
      this.indicate('closed', key);
    });
  }

  private findPath(remoteIp: number, localIp?: number): PathState | null {
    for (const slot of this.paths.values()) {
      const p = slot.state;
      if (
        p.const.remoteIp === addrOf(remoteIp) &&
        (localIp === undefined || p.const.localIp === addrOf(localIp))
      )
        return p;
    }
    return null;
  }

  /**
   * The connection each of `keys` names here (undefined: none runs), found once; throws
   * (InvalidArgumentError) before anything changes when two keys name the same connection, or the
   * same connection parked by an invalidate. Marked on the connection (`namedIn`) as the offload
   * layer marks its own: no set of the request's tuples for the connections that run.
   */
  private namedOnce(verb: string, keys: readonly ConnKey[]): (TcpConnection | undefined)[] {
    if (!Array.isArray(keys)) throw new InvalidArgumentError(`${verb} needs a list of connection keys`);
    const mark = --lastMark;
    const out = new Array<TcpConnection | undefined>(keys.length);
    let parked: Set<string> | null = null;
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      const conn = this.connection(key);
      out[i] = conn;
      if (conn !== undefined) {
        if (conn.namedIn === mark) throw namedTwice(verb, key);
        conn.namedIn = mark;
      } else if (this.parked.size > 0) {
        const id = connKeyId(key);
        if (!this.parked.has(id)) continue;
        parked ??= new Set();
        if (parked.has(id)) throw namedTwice(verb, key);
        parked.add(id);
      }
    }
    return out;
  }

  /** A connection that `trees` hold twice (as one state object or two), refused; null when none. */
  private twiceIn(trees: readonly OffloadTree[]): StateValidationError | null {
    const seen = this.batchKeys;
    for (const t of trees)
      for (const node of t.paths)
        for (const s of node.conns) {
          if (seen.has(s.const)) {
            seen.clear();
            return new StateValidationError('tcp.const', `connection ${connKeyId(s.const)} appears twice`);
          }
          seen.set(s.const, true);
        }
    // Deleted one by one, not cleared: the map keeps the entries for the next batch's tuples.
    for (const t of trees) for (const node of t.paths) for (const s of node.conns) seen.delete(s.const);
    return null;
  }

  private allKeys(): ConnKey[] {
    const out: ConnKey[] = [];
    for (const conn of this.tcp.connections()) out.push(keyOf(conn.state));
    for (const s of this.parked.values()) out.push(keyOf(s));
    return out;
  }

  private scope(scope: TcpUpdateScope): TcpConnection[] {
    const out: TcpConnection[] = [];
    if (scope === 'all') {
      out.push(...this.tcp.connections());
      return out;
    }
    if ('keys' in scope) {
      for (const k of scope.keys) {
        const c = this.connection(k);
        if (c) out.push(c);
      }
      return out;
    }
    for (const conn of this.tcp.connections()) {
      const p = conn.state.path;
      if ('neighborIp' in scope) {
        if (names(scope, p.neighbor)) out.push(conn);
      } else if (
        p.const.remoteIp === addrOf(scope.remoteIp) &&
        (scope.localIp === undefined || p.const.localIp === addrOf(scope.localIp))
      ) {
        out.push(conn);
      }
    }
    return out;
  }
}
