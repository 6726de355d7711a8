/*
 * The offload-target interface (design section 4). Signatures here are shared with WorkerNic:
 * any change to them is announced in this comment first.
 *
 * Changes since first publication:
 * - `initiate(batch, opts?)`: optional `InitiateOptions` (`prod`), additive; a target that ignores
 *   it stays correct, the moved connections' peers just wait for their own retransmission timer.
 */
import type { Link } from '../link/link.ts';
import type { ConnectionHandle, TcpUser } from '../stack/tcp/tcp-types.ts';
import type { TcpCached } from '../state/tcp-state.ts';

/** The 4-tuple that names a connection, from our side. */
export interface ConnKey {
  localIp: number;
  localPort: number;
  remoteIp: number;
  remotePort: number;
}

/** A stable string for maps and logs: "localIp:localPort>remoteIp:remotePort" (addresses as u32). */
export function connKeyId(k: ConnKey): string {
  return `${k.localIp >>> 0}:${k.localPort}>${k.remoteIp >>> 0}:${k.remotePort}`;
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
  | { neighborIp: number }
  | 'all';

/** Neighbor fields sent when a path is re-pointed, so the target can create the neighbor if new. */
export interface NeighborSpec {
  ip: number;
  srcMac: number;
  vlanId: number;
  dstMac: number;
}

export type OffloadUpdate =
  /** The neighbor's MAC changed (-1: unresolved; the target stops sending through it). */
  | { kind: 'neighbor'; neighborIp: number; dstMac: number }
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

export type InvalidateTarget = { neighborIp: number } | { keys: ConnKey[] };

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
  bytesIn: number;
  bytesOut: number;
}

export interface NicIndications {
  /** The target asks the host to take these connections back. */
  'upload-requested': (keys: ConnKey[], reason: UploadReason) => void;
  /** The peer's FIN arrived on an offloaded connection. */
  disconnect: (key: ConnKey) => void;
  /** A RST arrived on an offloaded connection (it is now closed). */
  abort: (key: ConnKey) => void;
  /** An offloaded connection reached CLOSED on the target and its resources are free. */
  closed: (key: ConnKey) => void;
  /** Carrier of the target's link changed; `since` (clock ms) as the link reported it. */
  link: (up: boolean, since?: number) => void;
  /** Last time the target had proof `neighborIp` is reachable (clock ms). */
  reachability: (neighborIp: number, lastHeardAt: number) => void;
}

export type NicIndication = keyof NicIndications;

/**
 * An offload target: owns one link and runs offloaded connections on it. Frames that are not for
 * its connections go to the host stack through `hostLink`, and the host's frames go out through it.
 */
export interface Nic {
  readonly id: string;
  /** Connections it can hold at once. */
  readonly capacity: number;
  /** Connections it holds now. */
  readonly load: number;
  readonly linkUp: boolean;
  /** The host stack's view of the NIC's link. */
  readonly hostLink: Link;
  /** Install the encoded trees (state-codec); per-connection status. Nothing from a refused tree is installed. */
  initiate(batch: Uint8Array, opts?: InitiateOptions): Promise<InitiateResult>;
  /**
   * Upload: bring the named connections to a consistent point and return them, encoded. Segments
   * that arrive for them afterwards are held (see `takeQueued`) until `dropFrozen`.
   */
  terminate(keys: ConnKey[] | 'all'): Promise<Uint8Array>;
  update(u: OffloadUpdate): Promise<void>;
  /** Stop sending on these objects and ask (indication) to have them uploaded with 'invalid-state'. */
  invalidate(target: InvalidateTarget): Promise<void>;
  query(keys?: ConnKey[]): Promise<QueryResult[]>;
  /** Segments (IPv4 packets) queued for terminated connections; the queue is emptied, the hold remains. */
  takeQueued(keys: ConnKey[]): Promise<Uint8Array[]>;
  /** Forget terminated connections: later segments for them go up to the host. */
  dropFrozen(keys: ConnKey[]): Promise<void>;
  /** Segments (IPv4 packets, e.g. forwarded from another owner) for connections this target runs. */
  inject(packets: readonly Uint8Array[]): void;
  /**
   * The application-facing handle of an installed connection, with `user` attached to it; null if
   * the target does not run that connection.
   */
  attach(key: ConnKey, user: TcpUser | null): ConnectionHandle | null;
  on<E extends NicIndication>(event: E, handler: NicIndications[E]): this;
  off<E extends NicIndication>(event: E, handler: NicIndications[E]): this;
  /** Abort everything and release the link. */
  close(): void;
}
