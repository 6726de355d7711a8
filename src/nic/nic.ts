/*
 * The offload-target interface (design section 4). Signatures here are shared with WorkerNic:
 * any change to them is announced in this comment first.
 *
 * Changes since first publication:
 * - `initiate(batch, opts?)`: optional `InitiateOptions` (`prod`), additive; a target that ignores
 *   it stays correct, the moved connections' peers just wait for their own retransmission timer.
 * - `inProcess`, `initiate(Transfer)`, `terminate(keys, { trees: true })`: a target in the host's
 *   thread and on its clock takes and hands back the trees themselves, without the codec.
 * - `death`, `salvage()`, and the 'dead' and 'heartbeat' indications: what callers used to find
 *   by duck-typing. One salvage record type (`SalvageRecord`) for every target.
 * - `counterSnapshot()`: the engine's counters wherever it runs (callers used to tell a LocalNic's
 *   `counters` object from a WorkerNic's `counters()` request).
 * - `handTo(dst, keys, opts)`, optional: a target that can hand connections straight to another
 *   (two WorkerNics: worker to worker) says so by answering other than null; callers used to test
 *   both ends' classes. Absent or null: the transfer protocol's general way.
 * - `useRecords`: whether its states cross in transfer records (callers tested for a WorkerNic and
 *   read its own flag). A target that is not `inProcess` is handed large batches in parts.
 * - `listen?(spec, hooks)` and `holds?(...)`, optional: answering a host listener's SYNs at the
 *   target, and whether it holds a four-tuple now (callers tested for a LocalNic or a WorkerNic
 *   and read the WorkerNic's owner table). Absent: its SYNs go up to the host, and it holds none.
 * - The `disconnect` indication is gone: no host listener had a use for it (the socket hears the
 *   peer's FIN on its handle's event channel), and a worker posted one message per closing
 *   connection for it. `abort` stays, and the host forgets the connection at it as at `closed`.
 * - `engine?` and `handsLive?`, optional: a target whose connections run in the host's thread
 *   says so, and gives the engine that runs them (callers tested for a LocalNic and read its
 *   `engine`, `running` and `faults`). Absent: a target reached by its verbs only.
 * - `peer?(other)`, optional: link two targets so each passes the other the frames of the other's
 *   connections without the host's thread (the team tested both for a WorkerNic).
 * - `listen?`'s stop ends the listener's half-open connections at the target, and the host
 *   forgets their tuples at once (it had waited for their 'closed', which a closing manager
 *   never heard). Documented; what a LocalNic and a WorkerNic did already.
 * - `takesTrees?`, `takeAndDrop?(keys)` and `decodeReleased?(bytes, now, addrs)`, optional: a
 *   target not in process that takes `TreeTransfer`s anyway, one request for `takeQueued` and
 *   `dropFrozen`, and its own reading of its terminate's bytes (the transfer protocol tested for
 *   a HostNic). Absent: the caller encodes, makes both requests, and decodes with the codec.
 * - `captureDropped?` and `terminateThread?()`, optional: a target that captures off the host's
 *   thread, and one whose thread can be stopped outright (`chimney serve` tested for a WorkerNic).
 * - `NicListenSpec.ipBytes?`, additive: a listener on one IPv6 address comes with its bytes, so
 *   a target can check its handle (a target that ignores it answers none of its SYNs, as before).
 * - `attach` gives null once the target is closed, as once it is dead (a WorkerNic gave the
 *   handle of a connection its close was aborting). Documented; a LocalNic did so already.
 * - What a caller may rely on once `close()` returns, documented there and made so on both NICs:
 *   `salvage()` hands out nothing (a WorkerNic handed out the handles its close was resetting,
 *   and after a death both kept what it left); a request waiting for its answer fails with
 *   `InvalidStateError`, as at a death (a LocalNic ran it on its closed or crashed engine and
 *   answered as if nothing happened: a terminate in hand at a crash answered that it released
 *   none); `counterSnapshot()` is refused (a LocalNic's answered); `holds` is false and `listen?`
 *   null (a WorkerNic's table answered until its worker's next turn, and its listen gave a stop).
 *   A HostNic's `ready()` is refused once closed or dead, and a wait for it fails at the close.
 */
import type { Link } from '../link/link.ts';
import type { TcpConnection } from '../stack/tcp/tcp-connection.ts';
import type { ConnectionEnd, ConnectionHandle, TcpUser } from '../stack/tcp/tcp-types.ts';
import type { ByteRing } from '../state/byte-ring.ts';
import type { OffloadTree } from '../state/offload-tree.ts';
import type { AddressBook } from '../state/path-state.ts';
import type { TcpCached, TcpState } from '../state/tcp-state.ts';
import type { HardState } from './hard-state.ts';
import type { NicEngine } from './nic-engine.ts';

/** The 4-tuple that names a connection, from our side. */
/**
 * A connection's four-tuple. Addresses are numbers as the state objects keep them: an IPv4 u32,
 * or an IPv6 address handle of the owner's AddressTable (shared by the host and its LocalNics;
 * a key that crosses to a worker carries the 16 bytes instead, `transfer-wire.ts`).
 */
export interface ConnKey {
  localIp: number;
  localPort: number;
  remoteIp: number;
  remotePort: number;
}

/** The four-tuple of a connection's state. */
export function keyOfState(s: TcpState): ConnKey {
  const c = s.const;
  return { localIp: c.localIp, localPort: c.localPort, remoteIp: c.remoteIp, remotePort: c.remotePort };
}

/**
 * A stable string for maps and logs: "localIp:localPort>remoteIp:remotePort", IPv4 addresses as
 * u32 and IPv6 ones as their handle (above 2^32, kept whole: `>>> 0` would fold it onto an IPv4
 * address).
 */
export function connKeyId(k: ConnKey): string {
  const l = k.localIp >= 0x1_0000_0000 ? k.localIp : k.localIp >>> 0;
  const r = k.remoteIp >= 0x1_0000_0000 ? k.remoteIp : k.remoteIp >>> 0;
  return `${l}:${k.localPort}>${r}:${k.remotePort}`;
}

export function sameConnKey(a: ConnKey, b: ConnKey): boolean {
  return (
    a.localIp === b.localIp &&
    a.localPort === b.localPort &&
    a.remoteIp === b.remoteIp &&
    a.remotePort === b.remotePort
  );
}

/**
 * Per-object completion of an initiate, as NDIS reports it: 'partial' for a tree or path some of
 * whose dependents failed; a connection itself is only ever 'success', 'failure' or 'no-resources'.
 */
export type InitiateStatus = 'success' | 'partial' | 'failure' | 'no-resources';

export interface InitiateConnResult {
  key: ConnKey;
  status: 'success' | 'failure' | 'no-resources';
  /** Why it was refused (absent on success). */
  reason?: string;
}

/** How an initiate installs what it receives. */
export interface InitiateOptions {
  /**
   * Failover: make each installed connection's peer resume at once (send an ACK, retransmit from
   * snd.una) instead of waiting for its retransmission timer.
   */
  prod?: boolean;
  /**
   * The states the batch holds, as objects (the sender has them): a target on another thread
   * allocates their shared memory from them before the batch leaves (WorkerNic).
   */
  states?: readonly TcpState[];
  /**
   * Keep the segments this target's own link brings each installed connection until the settle
   * names it (`Nic.inject`'s `settled`), and run them after what the settle forwards: the source
   * held the peer's older segments through the move. Only for a target that says `settlesHeld`.
   */
  holdInput?: boolean;
}

export interface InitiateResult {
  /**
   * Whole transfer: 'success' when every connection was installed, 'partial' when some were,
   * 'failure' / 'no-resources' when none was. A batch that does not decode or validate is
   * 'failure' with `conns` empty: nothing from it was installed and the sender keeps everything.
   */
  status: InitiateStatus;
  reason?: string;
  conns: InitiateConnResult[];
  /**
   * How many connections `conns` names, when it is read without building it: a worker's answer
   * makes its list (an object per connection) only when something reads it, which a move whose
   * every connection was installed does not (`resultSize`).
   */
  size?: number;
}

/** How many connections `r.conns` names, without building a list made on demand. */
export function resultSize(r: InitiateResult): number {
  return r.size ?? r.conns.length;
}

/**
 * A host listener whose SYNs a NIC answers itself, so that what it accepts is born offloaded there
 * (`LocalNic.listen`, `WorkerNic.listen`): the host's address, port, backlog and the settings of its
 * accepted connections, and words the host shares with the NIC.
 */
export interface NicListenSpec {
  ip: number;
  /**
   * A listener on one IPv6 address (`ip` a handle of the host's table): its 16 bytes, so a NIC
   * whose table numbers addresses by the host's handles (a worker's mirror) can take it under that
   * handle, or refuse it when the handle names another address there. Absent otherwise.
   */
  ipBytes?: Uint8Array;
  port: number;
  v6Only: boolean;
  backlog: number;
  cached: TcpCached;
  /**
   * [0] is non-zero while the host's accept queue is full or the listener closes: the NIC then
   * passes SYNs up, and the host applies its own rules (a full queue drops the SYN, as Linux does),
   * and drops the last ACK of a handshake it answered, keeping the half-open connection (Linux's
   * tcp_abort_on_overflow off): what it accepts goes into the host's one queue.
   * [1] counts the half-open connections of the host's listener and of every NIC's, against the
   * one backlog. [2] is non-zero while cookies the host sent may still be answered. Shared memory,
   * so a NIC on another thread reads the host's words without a message.
   */
  gate: Int32Array;
  /** This NIC's own word of `gate`: its half-open connections, taken out of [1] if it dies. */
  word: number;
  /**
   * An owner table (worker/owner-table.ts) the host writes: the four-tuples of the half-open
   * connections the host's own listener made, and of those established that no NIC holds yet (at
   * most the backlog). A NIC on another thread leaves a SYN of one of them to the host: a second
   * SYN-ACK, with another sequence number, would break the handshake.
   */
  claims: SharedArrayBuffer;
}

/**
 * What a NIC answering a host listener's SYNs tells the host, in the turn it happens (same thread):
 * a half-open connection made here (so frames of its four-tuple that reach the host through another
 * member come here), and its handshake done (the host makes the socket; false: refused, the NIC
 * resets it).
 */
export interface NicBornHooks {
  halfOpen(conn: TcpConnection): void;
  accepted(conn: TcpConnection): boolean;
  /**
   * Whether a four-tuple is someone else's already (the host's, another member's): its SYN, sent
   * again, goes where that connection is instead of being answered a second time here.
   */
  taken(localIp: number, localPort: number, remoteIp: number, remotePort: number): boolean;
  /**
   * A NIC on another thread, racing the host for a SYN: publish a half-open connection's tuple
   * before its SYN-ACK goes (`open`), or take it back when it is left unanswered (`claimed`).
   * False for `open`: it could not be listed (a full table), and the SYN is left unanswered.
   */
  publish?(conn: TcpConnection, open: boolean): boolean;
  /**
   * Asked after `publish`: whether another owner took the tuple meanwhile (the host publishes its
   * own half-open ones before it looks at the NICs', Listener.heldElsewhere). True: the SYN is
   * left to it, unanswered here. Together they leave no moment in which both answer.
   */
  claimed?(localIp: number, localPort: number, remoteIp: number, remotePort: number): boolean;
  /**
   * `accepted` puts the connection on rings of its own (a worker installs it on shared memory):
   * its half-open state needs no buffers of the listener's size meanwhile (Listener.ringsAtAccept).
   */
  ringsAtAccept?: boolean;
}

/**
 * What the host gives a NIC that answers a host listener's SYNs (`Nic.listen`). A NIC in the host's
 * thread uses the NicBornHooks (it hands over its half-open connections and its accepted ones
 * themselves, and asks `taken` per SYN); one on another thread keeps its half-open connections
 * (its `holds` answers for them, and it reads the host's claims itself) and hands over a handle
 * once a handshake is done (`born`; false: refused, it resets the connection).
 */
export interface NicListenHooks extends NicBornHooks {
  born(h: ConnectionHandle): boolean;
}

/** Cached TCP settings the host may push to offloaded connections. */
export type TcpCachedUpdate = Partial<
  Pick<
    TcpCached,
    'keepAlive' | 'keepIdleMs' | 'keepIntvlMs' | 'keepCount' | 'noDelay' | 'maxRetransmits' | 'ttl' | 'tos'
  >
>;

/** Where a TCP settings update applies: named connections, everything under a path or a neighbor, or all. */
export type TcpUpdateScope =
  | { keys: ConnKey[] }
  | { remoteIp: number; localIp?: number }
  | NeighborName
  | 'all';

/**
 * A neighbor, as updates and invalidations name it: an IPv4 address, or (`neighborIp` 0) an IPv6
 * neighbor's 16 bytes and, when the link has VLANs, its VLAN (absent: any VLAN). Bytes rather than a
 * handle, because a router's link-local address is in no table when no path ends there.
 */
export interface NeighborName {
  neighborIp: number;
  ip6?: Uint8Array;
  vlanId?: number;
}

/** Neighbor fields sent when a path is re-pointed, so the target can create the neighbor if new. */
export interface NeighborSpec {
  /** IPv4 address, or 0 for an IPv6 neighbor (then `ip6`). */
  ip: number;
  srcMac: number;
  vlanId: number;
  dstMac: number;
  /** An IPv6 neighbor's 16 bytes. */
  ip6?: Uint8Array;
}

export type OffloadUpdate =
  /** The neighbor's MAC changed (-1: unresolved; the target stops sending through it). */
  | {
      kind: 'neighbor';
      /** IPv4 address, or 0 for an IPv6 neighbor named by `ip6` and `vlanId`. */
      neighborIp: number;
      dstMac: number;
      ip6?: Uint8Array;
      vlanId?: number;
    }
  /** Path cached state changed (MTU, TTL, TOS), and/or the path now goes through another neighbor. */
  | {
      kind: 'path';
      remoteIp: number;
      localIp?: number;
      mtu?: number;
      ttl?: number;
      tos?: number;
      neighbor?: NeighborSpec;
    }
  | { kind: 'tcp'; scope: TcpUpdateScope; settings: TcpCachedUpdate };

export type InvalidateTarget = NeighborName | { keys: ConnKey[] };

/** Why a target asks to have connections uploaded (NDIS reasons). */
export type UploadReason =
  | 'hardware-failure'
  | 'invalid-state'
  | 'urgent-data'
  | 'timeout'
  | 'upload-requested'
  | 'resources'
  | 'high-drop-rate'
  | 'high-fragmentation'
  | 'out-of-order'
  | 'low-activity'
  | 'no-buffer'
  | 'small-io';

/** Reasons the host must honour; the others it may ignore by policy. */
export const MANDATORY_UPLOAD_REASONS: ReadonlySet<UploadReason> = new Set<UploadReason>([
  'hardware-failure',
  'invalid-state',
  'urgent-data',
  'timeout',
  'upload-requested',
  'resources',
]);

/** A decoded snapshot of one offloaded connection, read without moving it. */
export interface QueryResult {
  key: ConnKey;
  state: number;
  sndUna: number;
  sndNxt: number;
  sndMax: number;
  rcvNxt: number;
  sndWnd: number;
  cwnd: number;
  srtt: number;
  /** Bytes in the send buffer (unacknowledged + unsent) and the receive buffer (undelivered). */
  sendQueued: number;
  recvQueued: number;
  /** Path MTU and neighbor MAC the target is using for it. */
  mtu: number;
  dstMac: number;
  /** Since the connection began, whoever ran it (the counts travel with the state). */
  bytesIn: number;
  bytesOut: number;
  segmentsIn: number;
  segmentsOut: number;
  retransmits: number;
  /** RSTs received and sent on it (an in-window one answered by a challenge ACK leaves it alive). */
  resetsIn: number;
  resetsOut: number;
  /**
   * Its timer is armed (a retransmission, persist, keepalive, TIME_WAIT, delayed-ACK, tail-loss or
   * reordering deadline): something will wake it before its next segment or call. What a caller
   * waits on for a connection to go quiet (a worker takes only a quiet one unbuilt), where a fixed
   * sleep would stand for it and fail on a starved thread.
   */
  timerArmed: boolean;
}

/**
 * What the team's progress watch reads of every connection of a NIC each window (a few times a
 * second): one row of SCAN.columns numbers per connection, in one Float64Array that crosses a
 * thread by transfer. Objects per connection (`query`) cost a worker with thousands of
 * connections tens of milliseconds a window to build and clone, time its connections waited.
 */
export const SCAN = {
  localIp: 0,
  localPort: 1,
  remoteIp: 2,
  remotePort: 3,
  sndUna: 4,
  /** 1 when snd.max differs from snd.una (data or a FIN outstanding). */
  outstanding: 5,
  sndWnd: 6,
  sendQueued: 7,
  segmentsIn: 8,
  segmentsOut: 9,
  retransmits: 10,
  /** The neighbor MAC its frames go to (-1: unresolved). */
  dstMac: 11,
  /** Numbers in a row. */
  columns: 12,
} as const;

/** The scan rows of query results (the same numbers `progressScan` gives, for tests and tools). */
export function packScan(rs: readonly QueryResult[]): Float64Array {
  const out = new Float64Array(rs.length * SCAN.columns);
  rs.forEach((r, i) => {
    const at = i * SCAN.columns;
    out[at + SCAN.localIp] = r.key.localIp;
    out[at + SCAN.localPort] = r.key.localPort;
    out[at + SCAN.remoteIp] = r.key.remoteIp;
    out[at + SCAN.remotePort] = r.key.remotePort;
    out[at + SCAN.sndUna] = r.sndUna;
    out[at + SCAN.outstanding] = r.sndMax !== r.sndUna ? 1 : 0;
    out[at + SCAN.sndWnd] = r.sndWnd;
    out[at + SCAN.sendQueued] = r.sendQueued;
    out[at + SCAN.segmentsIn] = r.segmentsIn;
    out[at + SCAN.segmentsOut] = r.segmentsOut;
    out[at + SCAN.retransmits] = r.retransmits;
    out[at + SCAN.dstMac] = r.dstMac;
  });
  return out;
}

/**
 * A transfer that stays in the host's memory: the trees themselves, each state validated by the
 * side that released it, nothing encoded. Only between owners on one thread and one clock (their
 * deadlines are absolute times of that clock); a transfer that crosses a thread or a trust boundary
 * is the codec's bytes (`state-codec.ts`), decoded and validated field by field on arrival.
 */
export interface TreeTransfer {
  readonly kind: 'trees';
  readonly trees: OffloadTree[];
}

export type Transfer = Uint8Array | TreeTransfer;

export function isTreeTransfer(t: unknown): t is TreeTransfer {
  return typeof t === 'object' && t !== null && (t as TreeTransfer).kind === 'trees';
}

export interface TerminateOptions {
  /** Hand back a `TreeTransfer` if the target is in process (`inProcess`); bytes otherwise. */
  trees?: boolean;
}

/**
 * What a hand-over between two NICs did (`Nic.handTo`). Every key asked for was released at the
 * source and offered to the destination (`released`), or was not: it closed at the source
 * meanwhile, or (`sourceDied`) the source died before it let go of it, and it is left for the
 * source's `salvage()`.
 */
export interface Handed {
  /** Null: every key asked, in the order asked (the usual part; no list is made for it). */
  released: ConnKey[] | null;
  /**
   * The destination's answer for the released; null when it died with them in hand: they are left
   * for its `salvage()` (the hard state the source wrote as it let go of them, or newer).
   */
  result: InitiateResult | null;
  sourceDied: boolean;
  /**
   * Set (the reason) when the destination was closed by its owner with the batch in hand: its
   * close aborts (RST) whatever it installed, and whether it had is unknown, so none is resumed:
   * each is lost to its user with ECONNABORTED, as after an initiate to a NIC closed so.
   */
  aborted?: string;
  /**
   * The states of released connections the destination did not install, now the caller's to roll
   * back (decoded and validated). Throws when they cannot be read (or `sourceDied`): they are left
   * for the source's `salvage()` then.
   */
  readRefused(keys: readonly ConnKey[], now: number, addrs?: AddressBook): OffloadTree[];
}

/** Why a NIC is gone: the failover layer then rebuilds its connections from hard state. */
export interface NicDeath {
  /**
   * 'crash': the NIC failed by itself (LocalNic.crash); the others are a worker thread's ends
   * ('killed': told to stop, and between turns of its JavaScript then or silent since, its exit
   * not yet seen; 'defective': it answered a request that may have changed what it runs with a
   * message the host refused, so what it did is unknown and it is stopped: see
   * ON_MALFORMED_ANSWER in worker/protocol.ts).
   */
  kind: 'crash' | 'error' | 'exit' | 'heartbeat' | 'killed' | 'defective';
  /** What the NIC said ('crash'); 'never started' (a 'heartbeat' death before the first beat). */
  detail?: string;
  /** The worker's uncaught error ('error'), or the answer refused ('defective'). */
  error?: Error;
  /** Exit code ('exit'). */
  exitCode?: number;
  /** Silence before it was declared dead ('heartbeat', 'killed'). */
  silentMs?: number;
}

/** A death as a log line; `immediate` when it is certain at once (no silence to wait out). */
export function describeDeath(d: NicDeath): { detail: string; immediate: boolean } {
  switch (d.kind) {
    case 'exit':
      return { detail: `worker exited (code ${d.exitCode ?? '?'})`, immediate: true };
    case 'error':
      return { detail: `worker threw: ${d.error?.message ?? 'unknown error'}`, immediate: true };
    case 'defective':
      return {
        detail: `worker answered a request malformed: ${d.error?.message ?? 'unknown'}`,
        immediate: true,
      };
    case 'heartbeat':
      return {
        detail: `no heartbeat for ${Math.round(d.silentMs ?? 0)} ms${d.detail ? ` (${d.detail})` : ''}`,
        immediate: false,
      };
    case 'killed':
      return {
        detail: `worker killed (silent ${Math.round(d.silentMs ?? 0)} ms since it was told to stop)`,
        immediate: true,
      };
    default:
      return { detail: d.detail ?? 'NIC died', immediate: false };
  }
}

/**
 * What a dead NIC (or one that handed back a transfer the host cannot read) leaves of one
 * connection: the last whole hard-state record and the buffers (design section 6), enough for
 * `rebuildTcpState`. The caller owns them once handed out.
 */
export interface SalvageRecord {
  key: ConnKey;
  /** The last whole hard-state record, or null if none was ever written. */
  hard: HardState | null;
  /**
   * `hard` read into `out` (or `hard` itself once asked for: the same snapshot), where the NIC
   * can read it from where it lies (LazySalvage); absent: `hard` is the record. A rebuild reads
   * every record of a batch into one object this way, instead of one object per connection.
   */
  readHard?(out: HardState): HardState | null;
  sendRing: ByteRing;
  recvRing: ByteRing;
  /** The cached settings, when the NIC still has them (the host owns them anyway). */
  cached?: TcpCached;
  user: TcpUser | null;
  /**
   * A state object nothing runs or reads any more, which the rebuild makes the connection's
   * (reset to a new state's fields, then filled from `hard`) instead of making one: a LocalNic's
   * state, released at its crash. Absent: a new one is made.
   */
  spare?: TcpState;
  /**
   * `hard` was taken in the host's own thread from a state this thread ran (a LocalNic's, at its
   * crash), as a live hand-over between owners of this thread takes its connections: nothing
   * crossed a thread, a process or a codec, so the rebuilt state is not validated field by field
   * (rebuildTcpState). Absent: the record was read from memory another thread wrote (a WorkerNic's
   * shared block), and a writer that died may have died of a wrong state: validated.
   */
  ownThread?: true;
}

/**
 * A salvage record whose hard state is read where it lies (a dead worker's shared block, a dead
 * LocalNic's released state) when first asked, not when salvaged: a crash's salvage at 10,000
 * connections made a HardState object of some fifty fields per connection, read once by the
 * rebuild and then garbage the collector found in the failover's charged time. The rebuild
 * asks in the turn of the salvage (readHard into its one object), so it reads what the salvage
 * would have; `hard` reads into an object of its own, once, for any other caller.
 */
export abstract class LazySalvage implements SalvageRecord {
  abstract readonly key: ConnKey;
  abstract readonly sendRing: ByteRing;
  abstract readonly recvRing: ByteRing;
  abstract readonly user: TcpUser | null;
  private taken: HardState | null | undefined = undefined;

  /** The record as it lies now, into `out` (a new object without it); null if none is whole. */
  protected abstract readInto(out?: HardState): HardState | null;

  get hard(): HardState | null {
    if (this.taken === undefined) this.taken = this.readInto();
    return this.taken;
  }
  set hard(h: HardState | null) {
    this.taken = h;
  }

  readHard(out: HardState): HardState | null {
    return this.taken !== undefined ? this.taken : this.readInto(out);
  }
}

export interface NicIndications {
  /** The target asks the host to take these connections back. */
  'upload-requested': (keys: ConnKey[], reason: UploadReason) => void;
  /**
   * An offloaded connection was aborted on the target: a RST arrived (then 'closed' follows), or
   * its state was found corrupt and dropped (nothing follows). Either way the target runs it no
   * more, and the host forgets it as at 'closed'.
   */
  abort: (key: ConnKey) => void;
  /** An offloaded connection reached CLOSED on the target and its resources are free. */
  closed: (key: ConnKey) => void;
  /** Carrier of the target's link changed; `since` (clock ms) as the link reported it. */
  link: (up: boolean, since?: number) => void;
  /**
   * Last time the target had proof a neighbor is reachable (clock ms): `neighborIp`, or for an IPv6
   * neighbor (`neighborIp` 0) its bytes and VLAN (-1 untagged), as a `NeighborName` names it.
   */
  reachability: (neighborIp: number, lastHeardAt: number, ip6?: Uint8Array, vlanId?: number) => void;
  /** The target died: its connections are left for `salvage()`. */
  dead: (cause: NicDeath) => void;
  /** A target on another thread is alive (a team stamps its last proof of life with it). */
  heartbeat: () => void;
}

export type NicIndication = keyof NicIndications;

/** A NIC's counters, read once. */
export interface NicCounterSnapshot {
  /**
   * Where they were read from: NICs built on one shared set of counters give the same `source`,
   * and a sum over NICs counts it once.
   */
  source: object;
  values: Record<string, number>;
}

/** The indications a NIC's engine raises itself ('dead' and 'heartbeat' are its host side's). */
export type EngineIndication = Exclude<NicIndication, 'dead' | 'heartbeat'>;

/** One engine indication as a tuple: its name, then its arguments. */
export type EngineIndicationArgs = {
  [E in EngineIndication]: [E, ...Parameters<NicIndications[E]>];
}[EngineIndication];

/** A connection closed before its settle's attach (`Nic.attachClosed`): its handle, and how it ended. */
export interface ClosedConnection extends ConnectionEnd {
  readonly handle: ConnectionHandle;
}

/**
 * An offload target: owns one link and runs offloaded connections on it. Frames that are not for
 * its connections go to the host stack through `hostLink`, and the host's frames go out through it.
 */
export interface Nic {
  readonly id: string;
  /** Connections it can hold at once. */
  readonly capacity: number;
  /**
   * What takes a place of `capacity` now, for placement: the connections it runs and, on a worker
   * NIC, those closed whose blocks their sockets still hold unread.
   */
  readonly load: number;
  /** Connections it runs now (what is told connection updates, shown as its connections). */
  readonly runningConns: number;
  readonly linkUp: boolean;
  /** The host stack's view of the NIC's link. */
  readonly hostLink: Link;
  /**
   * Runs in the host's thread on the host's clock: it takes and gives `TreeTransfer`s. A target
   * that is not takes a large batch in parts (each request a few hundred connections), so no
   * request keeps its thread from its heartbeat for long.
   */
  readonly inProcess: boolean;
  /**
   * The states of its transfers cross in transfer records, in memory it shares with the host
   * (WorkerNic, by default): its initiate takes the states as objects (a `TreeTransfer`) and
   * writes their records itself, and the bytes its terminate hands back name only what its
   * records could not carry (read them with `decodeReleasedBy`), so they are no transfer for
   * another target. False: its terminate's bytes carry every state whole.
   */
  readonly useRecords: boolean;
  /**
   * Its initiate takes a `TreeTransfer` though it is not `inProcess`: it encodes the trees itself
   * (a WorkerNic names their rings instead of copying their data). False or absent on a target
   * that is not `inProcess`: the caller hands it the codec's bytes.
   */
  readonly takesTrees?: boolean;
  /** Why the NIC died, or null while it lives. */
  readonly death: NicDeath | null;
  /**
   * Install the trees (encoded, or in process the objects); per-connection status. Nothing from a
   * refused tree is installed. A target that is not `inProcess` encodes a `TreeTransfer` first.
   */
  initiate(batch: Transfer, opts?: InitiateOptions): Promise<InitiateResult>;
  /**
   * Upload: bring the named connections to a consistent point and return them, encoded (or with
   * `trees`, in process, as objects). Segments that arrive for them afterwards are held (see
   * `takeQueued`) until `dropFrozen`.
   */
  terminate(keys: ConnKey[] | 'all'): Promise<Uint8Array>;
  terminate(keys: ConnKey[] | 'all', opts: TerminateOptions): Promise<Transfer>;
  /**
   * What is left of connections the NIC can no longer run (after its death, or a terminate it
   * damaged): those named, or all. Each is handed out once; a NIC may hand out more than asked
   * (a dead worker's connections cannot stay there). None once `close()` was called, even after
   * a death: a caller that rebuilds salvages before it closes.
   */
  salvage(keys?: readonly ConnKey[]): SalvageRecord[];
  update(u: OffloadUpdate): Promise<void>;
  /** Stop sending on these objects and ask (indication) to have them uploaded with 'invalid-state'. */
  invalidate(target: InvalidateTarget): Promise<void>;
  query(keys?: ConnKey[]): Promise<QueryResult[]>;
  /** Every connection's progress, SCAN.columns numbers a row (see SCAN). */
  progressScan(): Promise<Float64Array>;
  /** The counters of the NIC's engine, wherever it runs; rejects once the NIC is closed or dead. */
  counterSnapshot(): Promise<NicCounterSnapshot>;
  /** Segments (IPv4 packets) queued for terminated connections; the queue is emptied, the hold remains. */
  takeQueued(keys: ConnKey[]): Promise<Uint8Array[]>;
  /** Forget terminated connections: later segments for them go up to the host. */
  dropFrozen(keys: ConnKey[]): Promise<void>;
  /**
   * `takeQueued` then `dropFrozen` for the same keys, in one request: each request to a target on
   * another thread wakes that thread, which on a loaded machine can cost the host's thread its
   * time slice. Absent: the caller makes both requests.
   */
  takeAndDrop?(keys: ConnKey[]): Promise<Uint8Array[]>;
  /**
   * Decode and validate the bytes this target's terminate handed back, attaching what they name
   * but do not carry (a WorkerNic's rings in the memory it shares with the host, its records).
   * Absent: the bytes carry every state whole and the codec reads them (`decodeReleasedBy`).
   */
  decodeReleased?(bytes: Uint8Array, now: number, addrs?: AddressBook): OffloadTree[];
  /**
   * Hand the named connections (frozen by the caller) straight to `dst`: released here and
   * installed there without passing through the caller, who hears once. Null, with nothing
   * changed, when this pair cannot (another kind of target, IPv6 keys, records off): the caller
   * then takes the general way (terminate here, initiate there). `handles`, if given: the handle
   * this NIC gave for each key when the connection was last settled here (or null), a hint that
   * spares the NIC a search by key, checked before it is used. Neither list is kept once this
   * returns (the caller reuses them for its next part).
   */
  handTo?(
    dst: Nic,
    keys: readonly ConnKey[],
    opts: InitiateOptions,
    handles?: readonly (ConnectionHandle | null)[],
  ): Promise<Handed> | null;
  /**
   * The host is placing a burst of connections (accepts wait for their placement) or has stopped:
   * a target whose rings grow in memory the host's thread faults in (WorkerNic) holds their growth
   * until the burst is placed, so rings grown early in it do not take the budget the rest need.
   */
  placing?(on: boolean): void;
  /**
   * Answer the SYNs of a host listener here (NicListenSpec): what it accepts is born offloaded on
   * this target, and the host hears of it through `hooks`. Returns what stops it, or null when
   * this target cannot now (closed, dead). The stop ends the listener's half-open connections
   * here, as a closed listener's (their 'closed' may follow in a later turn): the host forgets
   * their tuples as it calls it. Absent: it answers none; they go up to the host.
   */
  listen?(spec: NicListenSpec, hooks: NicListenHooks): (() => void) | null;
  /**
   * Whether this target holds the four-tuple now, a connection or a half-open one, as the host's
   * thread can tell at once without a request (a target on another thread: what it published in
   * shared memory, nothing once dead). Absent: it holds none the host does not know of otherwise.
   */
  holds?(localIp: number, localPort: number, remoteIp: number, remotePort: number): boolean;
  /**
   * Link this target with `other`, another member of its team, so that each passes the other the
   * frames of the other's connections that reach it (the switch delivers the team MAC to whichever
   * member sent last) without the host's thread: two WorkerNics, worker to worker
   * (`worker/peers.ts`). False, nothing changed, when this pair cannot (another kind of target, one
   * of them dead): their frames go up to the host, which forwards them. Absent: never.
   */
  peer?(other: Nic): boolean;
  /**
   * Frames this target sends on its link with `teamMac` as their source leave with `mac` instead
   * (null: as they are). A team gives every member but the one that carries the host's
   * traffic a MAC of its own, so the switch learns the team MAC on that one port only: inbound
   * frames then take one path to each connection's owner (that port, then worker to worker), and
   * no segment overtakes another on a second path (bonding's TLB: transmit from every member,
   * receive on one). Absent: its frames go as they are.
   */
  sendFrom?(teamMac: number, mac: number | null): void;
  /**
   * Present on a target whose connections run in the host's thread (LocalNic): the engine that
   * runs them, on the clock it was given. Its TCP layer keeps its four-tuples in the host's table
   * (`ConnTable.share`, when it joins a manager), and the host hands live connections to and from
   * it in one turn (`TransferProtocol.handover`: the same objects detached from one layer and
   * attached to the other, nothing encoded or validated) while `handsLive` is true and the
   * engine's clock is the host's. Absent: a target reached by its verbs only (another thread).
   */
  readonly engine?: NicEngine;
  /**
   * With `engine`: whether its connections may be handed live now (neither closed nor dead, and
   * nothing armed that its next terminate must meet, such as a LocalNic's test faults). False or
   * absent: every transfer to or from it takes the general protocol's steps.
   */
  readonly handsLive?: boolean;
  /**
   * Frames left out of its capture because the writer on the host's thread fell behind: a target
   * that captures on a thread of its own (a WorkerNic given `capture`). Absent: it drops none.
   */
  readonly captureDropped?: number;
  /**
   * Stop the thread the target runs on outright (a failover drill), and return at once: the
   * thread's id, and its exit, which can come much later. The death is indicated as any other.
   * Absent: a target with no thread of its own.
   */
  terminateThread?(): { threadId: number; exited: Promise<number> };
  /**
   * Segments (IPv4 packets, e.g. forwarded from another owner) for connections this target runs.
   * `settled`: connections installed with `InitiateOptions.holdInput` whose settle this inject
   * ends; a target that does not say `settlesHeld` ignores it.
   */
  inject(packets: readonly Uint8Array[], settled?: readonly ConnKey[]): void;
  /**
   * True: an initiate's `holdInput` is kept (see there), so a move's settle delivers what the
   * source held before anything that reached this target directly since its install. Absent: its
   * input runs from the install on, and segments the source held may arrive behind newer ones.
   */
  readonly settlesHeld?: boolean;
  /**
   * The application-facing handle of an installed connection, with `user` attached to it; null if
   * the target does not run that connection, and always once it is closed or dead.
   */
  attach(key: ConnKey, user: TcpUser | null): ConnectionHandle | null;
  /**
   * For a settle whose `attach` found nothing: the handle of a connection installed here that
   * closed before anything attached to it (its peer's reset, FIN then reset, or a timeout came
   * during the settle), kept for the data its peer sent before and nobody has read, with `user`
   * attached, and how it ended (`user` was told none of it); null when there is none (or no
   * data). The caller tells `user` of the end. Absent: such data is not kept.
   */
  attachClosed?(key: ConnKey, user: TcpUser | null): ClosedConnection | null;
  on<E extends NicIndication>(event: E, handler: NicIndications[E]): this;
  off<E extends NicIndication>(event: E, handler: NicIndications[E]): this;
  /**
   * The owner's end of the NIC: abort everything it runs (RST to each peer) and release the link.
   * Once it returns, on every target: a request still waiting for its answer has failed with
   * `InvalidStateError` (an initiate in hand fails with ECONNABORTED: the target installed it and
   * the close reset it), every verb is refused, `attach` gives null, `holds` false and `listen`
   * null, and `salvage` nothing, whether the NIC ran or had died. A second close does nothing.
   */
  close(): void;
}
