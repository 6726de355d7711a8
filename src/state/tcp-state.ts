import { ByteRing } from './byte-ring.ts';
import type { PathState } from './path-state.ts';

/**
 * Everything TCP knows about one connection lives here, split as NDIS chimney splits it, so any
 * owner (the host stack or an offload target) can pick the connection up and run it with the same
 * engine functions. Nothing about a connection may live in closures or private fields elsewhere.
 *
 * Sequence numbers are unsigned 32-bit values compared modulo 2^32 (see `seq.ts` in the engine).
 * Times are absolute clock milliseconds; a transfer codec turns them into deltas.
 */

export const TcpStateId = {
  CLOSED: 0,
  LISTEN: 1,
  SYN_SENT: 2,
  SYN_RECEIVED: 3,
  ESTABLISHED: 4,
  FIN_WAIT_1: 5,
  FIN_WAIT_2: 6,
  CLOSE_WAIT: 7,
  CLOSING: 8,
  LAST_ACK: 9,
  TIME_WAIT: 10,
} as const;
export type TcpStateId = (typeof TcpStateId)[keyof typeof TcpStateId];
export const TCP_STATE_NAMES: readonly string[] = Object.keys(TcpStateId);

export type CongestionAlgorithm = 'cubic' | 'newreno';

/** Fixed for the life of the connection once the handshake has negotiated it. */
export interface TcpConst {
  localIp: number;
  localPort: number;
  remoteIp: number;
  remotePort: number;
  /** RFC 7323 timestamps negotiated. */
  tsEnabled: boolean;
  /** RFC 2018 SACK-permitted negotiated. */
  sackEnabled: boolean;
  /** RFC 7323 window scaling negotiated. */
  wsEnabled: boolean;
  /** Shift applied to windows the peer advertises (its wscale option); 0 without scaling. */
  sndWscale: number;
  /** Shift we apply to windows we advertise; 0 without scaling. */
  rcvWscale: number;
  /** MSS the peer announced (536 when absent). */
  remoteMss: number;
  /** MSS we announced. */
  localMss: number;
}

/** Owned by the host; an offload target changes it only when the host pushes an update. */
export interface TcpCached {
  keepAlive: boolean;
  keepIdleMs: number;
  keepIntvlMs: number;
  keepCount: number;
  noDelay: boolean;
  /** Retransmissions of one segment before the connection is dropped with ETIMEDOUT. */
  maxRetransmits: number;
  /** Retransmissions of a SYN before connect fails. */
  maxSynRetransmits: number;
  ttl: number;
  tos: number;
  sndBufSize: number;
  rcvBufSize: number;
  timeWaitMs: number;
  delayedAckMs: number;
  minRtoMs: number;
  maxRtoMs: number;
  congestion: CongestionAlgorithm;
  /**
   * The socket set its own receive buffer (`rcvBufSize` among a connect's or a listen's options,
   * not the layer's default): its connections are not autotuned, as Linux's SO_RCVBUF sets
   * SOCK_RCVBUF_LOCK. An option of the socket: read once, when a connection is made
   * (newConnection), into the connection's soft.rcvLocked, which travels.
   */
  rcvBufLocked?: boolean;
}

/** Owned by whoever processes the connection now; handed back on upload. */
export interface TcpDelegated {
  state: TcpStateId;
  iss: number;
  irs: number;
  sndUna: number;
  sndNxt: number;
  /** Highest sequence number sent so far (snd.nxt can fall back below it on retransmission). */
  sndMax: number;
  /** Peer's window, already scaled (bytes). */
  sndWnd: number;
  maxSndWnd: number;
  sndWl1: number;
  sndWl2: number;
  rcvNxt: number;
  /** Right edge of the window we last advertised (rcv.nxt + advertised window). */
  rcvAdv: number;
  cwnd: number;
  ssthresh: number;
  /** Smoothed RTT in ms; 0 until the first measurement. */
  srtt: number;
  rttvar: number;
  rto: number;
  tsRecent: number;
  /** Clock time ts.recent was last updated (PAWS 24-day rule). */
  tsRecentAt: number;
  dupAcks: number;
  /** Consecutive retransmission timeouts (exponential backoff exponent). */
  backoff: number;
  /** Deadlines as absolute clock ms; Infinity when the timer is not running. */
  rtxDeadline: number;
  persistDeadline: number;
  keepaliveDeadline: number;
  timeWaitDeadline: number;
  keepaliveProbes: number;
  /** The application has called end(): a FIN follows the queued data. */
  finQueued: boolean;
  /** Our FIN has been sent (it occupies sequence number sndMax - 1 while unacknowledged). */
  finSent: boolean;
  /** The peer's FIN has been received and acknowledged. */
  finReceived: boolean;
  /** Unacknowledged and unsent data: the byte at the head has sequence number snd.una (after SYN). */
  sendBuffer: ByteRing;
  /** Received, acknowledged, not yet read by the application. */
  recvBuffer: ByteRing;
  /** Clock time of the last segment received (keepalive and idle accounting). */
  lastRecvAt: number;
  /** Clock time of the last data sent (RFC 5681 restart after idle; CUBIC epoch). */
  lastSendAt: number;
  /**
   * rcv.nxt carried by the last ACK we sent: RFC 7323's Last.ACK.sent (the ts.recent update rule)
   * and Linux's rcv_wup, below which a segment that ends is old (tcp-input.ts, the acceptance test).
   */
  lastAckSent: number;
  /** Zero-window probes sent since the window was last open (persist timer backoff exponent). */
  persistBackoff: number;
  /** The application called close(): it reads nothing more, so new data is answered with RST. */
  readClosed: boolean;
  /**
   * ECN (RFC 3168), as Linux's tp->ecn_flags: TcpEcn bits. Negotiated at the handshake (OK), and
   * the echo the peer still owes or is owed: hard state, since a new owner that forgot a CE mark it
   * had not yet echoed would leave the peer blind to the congestion, and one that forgot it owes
   * CWR would have the peer echo ECE for ever. Codec version 12 added it.
   */
  ecn: number;
  /**
   * While TcpEcn.CWR is set: snd.max when an ECE cut the window (Linux's high_seq in its CWR
   * state). Further ECEs are answered only once snd.una has passed it: one cut per window.
   */
  ecnCwrEnd: number;
  /*
   * Statistics since the connection began, whoever ran it: they travel with the state, so a
   * connection's counts do not restart at each move (`TcpConnection.stats` is a view of these).
   */
  segmentsIn: number;
  segmentsOut: number;
  retransmits: number;
  bytesIn: number;
  bytesOut: number;
  resetsIn: number;
  resetsOut: number;
}

/**
 * Soft state: rebuilt from traffic if lost. It may travel with a transfer but a receiver must
 * cope without it.
 */
export interface TcpSoft {
  /** Out-of-order segments waiting for the hole before them: sorted, non-overlapping. */
  ooo: OooSegment[];
  /** SACK scoreboard for data we sent: sorted, merged [start, end) seq ranges the peer SACKed. */
  sacked: SeqRange[];
  /** Ranges we received out of order, most recent first (what our SACK blocks report). */
  recvSackRecent: SeqRange[];
  /** Loss recovery (RFC 6582 / RFC 6675). */
  inRecovery: boolean;
  recoveryPoint: number;
  /** RFC 6675 HighRxt: highest sequence retransmitted during this recovery. */
  highRxt: number;
  /** Clock time of the last retransmission during recovery (lost-retransmission detection). */
  rxtAt: number;
  /** RTT sample in flight when timestamps are off: sequence and send time (Karn: cleared on retransmit). */
  rttSeq: number;
  rttSentAt: number;
  rttActive: boolean;
  /** A delayed ACK is pending; its deadline (Infinity when none). */
  delayedAckDeadline: number;
  /**
   * Unused since codec version 9 (the every-second-segment rule counts bytes against rcvMss, as
   * Linux does): kept, always 0, so that batches of versions 2..8, which carry it, still decode.
   */
  unackedSegments: number;
  /** RFC 3465 byte counting in congestion avoidance: bytes ACKed toward the next +1 MSS (NewReno). */
  caBytesAcked: number;
  /** CUBIC (RFC 9438) variables. */
  cubic: CubicState;
  /** RFC 5961 challenge-ACK rate limiting: window start and count. */
  challengeWindowStart: number;
  challengeCount: number;
  /** An ACK must go out with the next output pass (out-of-order data, FIN, window update, ...). */
  ackNow: boolean;
  /** The peer's FIN arrived ahead of a hole; it takes effect when rcv.nxt reaches oooFinSeq. */
  oooFin: boolean;
  oooFinSeq: number;
  /** RACK (RFC 8985): every un-SACKed byte below this sequence number is deemed lost. */
  rackLostEdge: number;
  /** Tail loss probe (RFC 8985 7): its deadline (Infinity when not armed), and the probe out. */
  tlpDeadline: number;
  tlpInFlight: boolean;
  /** snd.max when the probe went out: an ACK at or above it ends the probe episode. */
  tlpHighSeq: number;
  /** Zero-window probes sent since the peer last sent an acceptable segment. */
  persistProbesOut: number;
  /** When we last answered an out-of-window pure ACK or SYN (rate limit; -1: never). */
  lastOowAckAt: number;
  /**
   * Undo (RFC 3708 with RFC 2883 D-SACKs): cwnd and ssthresh before the last recovery, the bytes
   * it retransmitted not yet reported as needless, and where it began. undoArmed: an undo is
   * still possible (cleared by a timeout or by the undo itself).
   */
  undoCwnd: number;
  undoSsthresh: number;
  undoRetrans: number;
  undoLow: number;
  undoArmed: boolean;
  /** Tail of the undo record: CUBIC's W_max before the reduction (RFC 9438 4.9). */
  undoWMax: number;
  /**
   * TSval of the first retransmission of the current episode (0: none). An ACK echoing an older
   * TSval was sent for an original transmission, so that retransmission was needless (RFC 3522,
   * Linux tcp_packet_delayed).
   */
  undoTsVal: number;
  /**
   * PRR (RFC 6937, Linux tcp_cwnd_reduction): bytes delivered to the receiver and bytes sent
   * since recovery began, and cwnd when it began.
   */
  prrDelivered: number;
  prrOut: number;
  prrPriorCwnd: number;
  /**
   * F-RTO (RFC 5682 SACK-enhanced, Linux tcp_frto=2): 0 off, 1 a timeout's retransmission is out
   * and the next ACK decides, 2 new data was sent on it and the ACK after decides. The episode
   * lasts while snd.una is below recoveryPoint (snd.max at the timeout).
   */
  frto: number;
  /**
   * HyStart++ (RFC 9406): end of the current round, the minimum RTT of the last and the current
   * round (NO_RTT: none yet), RTT samples this round, and Conservative Slow Start's state.
   */
  hsWindowEnd: number;
  hsLastRoundMinRtt: number;
  hsCurrentRoundMinRtt: number;
  hsRttSamples: number;
  hsInCss: boolean;
  hsCssBaselineMinRtt: number;
  hsCssRounds: number;
  /**
   * End of the last new-data segment shorter than the MSS (Linux's snd_sml, for Minshall's Nagle):
   * one is in flight while this lies in (snd.una, snd.max]. It travels with the connection so a new
   * owner does not let a second short segment go while the first is unacknowledged.
   */
  smallSentEnd: number;
  /*
   * RACK's knowledge of the path (RFC 8985 6.2), for the connection's life as Linux keeps it in
   * tcp_sock, whoever runs it: a new owner that started again at the defaults would take the next
   * reordering for loss and resend needlessly until it learned the path again.
   */
  /**
   * The reordering degree in segments (Linux's tp->reordering, RFC 8985's DupThresh):
   * RACK_REORDERING_MIN up to RACK_REORDERING_MAX; without SACK, the duplicate-ACK threshold,
   * which duplicates past the flight set to the flight, so from 1 (tcp_check_reno_reordering).
   */
  reordering: number;
  /** RACK.reordering_seen (Linux's tp->reord_seen): an original was delivered below later data. */
  reorderingSeen: boolean;
  /** RACK.reo_wnd_mult (Linux's reo_wnd_steps): 1 to 255 quarters of the minimum RTT. */
  reoWndMult: number;
  /** Recoveries the widened window still outlives (Linux's reo_wnd_persist): 0 to RACK_REO_PERSIST. */
  reoWndPersist: number;
  /** Bytes resent and bytes DSACKs reported (Linux's total_retrans and dsack_dups, in bytes). */
  rtxBytes: number;
  dsackBytes: number;
  /**
   * Tail of the undo record: snd.nxt when the timeout episode began, what its undo gives back.
   * Below snd.max when a prod (failover) had rewound the flight the failed path lost: that part
   * was not in flight any more. Last, as codec version 6 added it.
   */
  undoNxt: number;
  /**
   * Rebuilt from a dead owner's hard state (rebuildTcpState) with data in flight that no ACK since
   * has spoken for. The owner died after sending that flight, whose ACKs went to it; so most of
   * the flight is usually at the peer, and a prod asks what before it resends anything (as Linux
   * sends a window probe when a socket leaves TCP_REPAIR): false once an ACK answers, or the
   * retransmission timer does. Last, as codec version 7 added it.
   */
  repaired: boolean;
  /**
   * The receiver's ACK mode, as Linux keeps it in icsk_ack (tcp-ack-mode.ts): ACKs of new data
   * still to go at once rather than delayed (`quick`: 0 to MAX_QUICK_ACKS, or FIRST_DATA_PENDING
   * from the handshake to the first data), whether the connection reads as interactive
   * (`pingpong`: its ACKs wait for its answers), and when in-order data last came (`lrcvtime`;
   * -1 not yet known). It travels so a moved connection delays its ACKs as it would have where
   * it was. Codec version 8 added them.
   */
  quickAcks: number;
  pingpong: boolean;
  lastDataAt: number;
  /**
   * The peer's segment size as this receiver estimates it (Linux's icsk_ack.rcv_mss,
   * tcp_measure_rcv_mss; 0 not yet measured: tcp-ack-mode.ts gives the kernel's starting hint),
   * and the small segments since our last ACK (icsk_ack.pending's ICSK_ACK_PUSHED = 1, PUSHED2 =
   * 2), which have the application's read ACK them. Codec version 9 added them.
   */
  rcvMss: number;
  ackPushed: number;
  /**
   * Receive-buffer autotuning (tcp-window.ts), as Linux keeps it in tcp_sock: the window clamp it
   * grew (window_clamp; 0: none, the connection offers its whole buffer, as one rebuilt from hard
   * state or taken from an older build); the measure to beat, the next byte unread when the
   * measure began and when (rcvq_space: space, seq, time); the receiver's RTT estimate in ms (0:
   * none yet), the edge and time its window measure began (-1: none) and the last timestamp echo
   * it sampled (rcv_rtt_est, rcv_rtt_last_tsecr). Codec version 10 added them.
   */
  rcvClamp: number;
  rcvSpace: number;
  rcvSpaceSeq: number;
  rcvSpaceAt: number;
  rcvRtt: number;
  rcvRttSeq: number;
  rcvRttAt: number;
  rcvRttEcr: number;
  /**
   * The window the receiver lets itself offer so far (Linux's rcv_ssthresh, tcp_grow_window:
   * tcp-window.ts): it starts at the SYN's window and grows by the segments that arrive, up to
   * the clamp. 0: no such bound (a connection not autotuned, one rebuilt from hard state or taken
   * from an older build): the clamp alone.
   */
  rcvSsthresh: number;
  /**
   * The socket set its own receive buffer (TcpCached.rcvBufLocked, Linux's SOCK_RCVBUF_LOCK): the
   * handshake's end does not tune it (establish). Kept in the state from the connection's making,
   * so one moved before its handshake ends is not tuned where it ends; after that its effect is in
   * rcvClamp (0) already. With rcvSsthresh, last, as codec version 11 added them; an older batch
   * leaves false.
   */
  rcvLocked: boolean;
}

/**
 * Bits of TcpDelegated.ecn, as Linux's TCP_ECN_* (include/net/tcp.h) plus its CWR congestion
 * state: OK, ECN was negotiated; QUEUE_CWR, our next new data carries CWR (a window cut for an ECE
 * is to be told); DEMAND_CWR, a CE mark arrived and every segment echoes ECE until the peer's CWR;
 * SEEN, an ECT or CE packet arrived; CWR, the window was cut for an ECE and is not cut again for
 * one until snd.una passes ecnCwrEnd.
 */
export const TcpEcn = { OK: 1, QUEUE_CWR: 2, DEMAND_CWR: 4, SEEN: 8, CWR: 16 } as const;
/** Every bit TcpEcn defines: a state with any other is refused. */
export const TCP_ECN_BITS = 31;

/** Linux's TCP_MAX_QUICKACKS (include/net/tcp.h): the most quick ACKs one event grants. */
export const MAX_QUICK_ACKS = 16;
/**
 * soft.quickAcks from the handshake to the first data (Linux: ato still 0). Only a connection that
 * completed its handshake here has it: one rebuilt from the hard state is past its start, or
 * treated so.
 */
export const FIRST_DATA_PENDING = -1;

/** The reordering degree a connection starts at (Linux's sysctl tcp_reordering, RFC 8985's DupThresh). */
export const RACK_REORDERING_MIN = 3;
/** Linux's sysctl tcp_max_reordering: the most the reordering degree grows to. */
export const RACK_REORDERING_MAX = 300;
/** Linux's TCP_RACK_RECOVERY_THRESH: recoveries a widened reordering window outlives. */
export const RACK_REO_PERSIST = 16;

/** RACK's knowledge of the path, the part of TcpSoft that RackLog reads and grows. */
export type RackPathState = Pick<
  TcpSoft,
  'reordering' | 'reorderingSeen' | 'reoWndMult' | 'reoWndPersist' | 'rtxBytes' | 'dsackBytes'
>;

/** What a connection knows of its path at first (a copy each: the caller may change it). */
export function rackPathDefaults(): RackPathState {
  return {
    reordering: RACK_REORDERING_MIN,
    reorderingSeen: false,
    reoWndMult: 1,
    reoWndPersist: 0,
    rtxBytes: 0,
    dsackBytes: 0,
  };
}

/** Copy RACK's knowledge of the path from `from` to `to` (a move, a record, a rebuild). */
export function copyRackPath(to: RackPathState, from: RackPathState): void {
  to.reordering = from.reordering;
  to.reorderingSeen = from.reorderingSeen;
  to.reoWndMult = from.reoWndMult;
  to.reoWndPersist = from.reoWndPersist;
  to.rtxBytes = from.rtxBytes;
  to.dsackBytes = from.dsackBytes;
}

/** HyStart++'s "no RTT measured yet" (a finite value, so it travels as a plain number). */
export const NO_RTT = 1e9;

/** A new connection's ring capacity before its first bytes (createTcpState). */
export const FIRST_RING = 64;

export interface CubicState {
  wMax: number;
  k: number;
  epochStart: number;
  originPoint: number;
  wEst: number;
  cwndPrior: number;
  /** Growth the per-ACK formula asked for that is still below one byte (keeps cwnd integral). */
  cwndFrac: number;
  /** RFC 9438 4.8: the first congestion avoidance after a timeout starts with K = 0 at cwnd. */
  afterRto: boolean;
}

export interface OooSegment {
  seq: number;
  data: Uint8Array;
}

export interface SeqRange {
  start: number;
  end: number;
}

export interface TcpState {
  readonly const: TcpConst;
  readonly cached: TcpCached;
  readonly delegated: TcpDelegated;
  readonly soft: TcpSoft;
  /** The path this connection uses; shared with every connection to the same remote address. */
  path: PathState;
}

export const DEFAULT_TCP_CACHED: Readonly<TcpCached> = {
  keepAlive: false,
  keepIdleMs: 7_200_000,
  keepIntvlMs: 75_000,
  keepCount: 9,
  noDelay: false,
  maxRetransmits: 15,
  maxSynRetransmits: 6,
  ttl: 64,
  tos: 0,
  sndBufSize: 1 << 20,
  rcvBufSize: 1 << 20,
  timeWaitMs: 60_000,
  delayedAckMs: 40,
  minRtoMs: 200,
  maxRtoMs: 120_000,
  congestion: 'cubic',
};

/**
 * A copy of `c` as a literal, every field written out: a copy made by spread takes a layout of its
 * own (and, from sources of mixed layouts, V8's slow path), where a literal shares the layout of
 * every state's settings (createTcpState's). A crash's survivor copies one per connection it
 * installs (WorkerConnectionHandle.settings).
 */
export function copyTcpCached(c: TcpCached): TcpCached {
  return {
    keepAlive: c.keepAlive,
    keepIdleMs: c.keepIdleMs,
    keepIntvlMs: c.keepIntvlMs,
    keepCount: c.keepCount,
    noDelay: c.noDelay,
    maxRetransmits: c.maxRetransmits,
    maxSynRetransmits: c.maxSynRetransmits,
    ttl: c.ttl,
    tos: c.tos,
    sndBufSize: c.sndBufSize,
    rcvBufSize: c.rcvBufSize,
    timeWaitMs: c.timeWaitMs,
    delayedAckMs: c.delayedAckMs,
    minRtoMs: c.minRtoMs,
    maxRtoMs: c.maxRtoMs,
    congestion: c.congestion,
  };
}

/** `from`'s settings written into `into`, field by field (no Object.assign, whose generic walk is slower). */
export function assignTcpCached(into: TcpCached, from: TcpCached): void {
  into.keepAlive = from.keepAlive;
  into.keepIdleMs = from.keepIdleMs;
  into.keepIntvlMs = from.keepIntvlMs;
  into.keepCount = from.keepCount;
  into.noDelay = from.noDelay;
  into.maxRetransmits = from.maxRetransmits;
  into.maxSynRetransmits = from.maxSynRetransmits;
  into.ttl = from.ttl;
  into.tos = from.tos;
  into.sndBufSize = from.sndBufSize;
  into.rcvBufSize = from.rcvBufSize;
  into.timeWaitMs = from.timeWaitMs;
  into.delayedAckMs = from.delayedAckMs;
  into.minRtoMs = from.minRtoMs;
  into.maxRtoMs = from.maxRtoMs;
  into.congestion = from.congestion;
}

export function createTcpState(
  c: TcpConst,
  cached: TcpCached,
  path: PathState,
  /**
   * Rings the state takes as they are (a rebuild over the rings a dead NIC left): none made, where
   * two made only to be replaced cost a third of a crash failover's rebuild at 10,000 connections.
   */
  rings?: { send: ByteRing; recv: ByteRing },
): TcpState {
  const inf = Number.POSITIVE_INFINITY;
  // Every part written out as a literal, no spread: a copy made by spread takes a layout of its
  // own, apart from a literal's, and a transfer record's reader builds its states as literals
  // with these keys in this order (genReader), which then share these layouts and their widening.
  return {
    const: {
      localIp: c.localIp,
      localPort: c.localPort,
      remoteIp: c.remoteIp,
      remotePort: c.remotePort,
      tsEnabled: c.tsEnabled,
      sackEnabled: c.sackEnabled,
      wsEnabled: c.wsEnabled,
      sndWscale: c.sndWscale,
      rcvWscale: c.rcvWscale,
      remoteMss: c.remoteMss,
      localMss: c.localMss,
    },
    cached: copyTcpCached(cached),
    path,
    delegated: {
      state: TcpStateId.CLOSED,
      iss: 0,
      irs: 0,
      sndUna: 0,
      sndNxt: 0,
      sndMax: 0,
      sndWnd: 0,
      maxSndWnd: 0,
      sndWl1: 0,
      sndWl2: 0,
      rcvNxt: 0,
      rcvAdv: 0,
      cwnd: 0,
      ssthresh: 0x7fffffff,
      srtt: 0,
      rttvar: 0,
      rto: 1000,
      tsRecent: 0,
      tsRecentAt: -1,
      dupAcks: 0,
      backoff: 0,
      rtxDeadline: inf,
      persistDeadline: inf,
      keepaliveDeadline: inf,
      timeWaitDeadline: inf,
      keepaliveProbes: 0,
      finQueued: false,
      finSent: false,
      finReceived: false,
      segmentsIn: 0,
      segmentsOut: 0,
      retransmits: 0,
      bytesIn: 0,
      bytesOut: 0,
      resetsIn: 0,
      resetsOut: 0,
      // Rings start small and double up to the buffer size: 10,000 idle connections cost
      // megabytes, not gigabytes. Small enough to lie in V8's heap (typed arrays of 64 bytes or
      // less do): a 4 KiB ring was a buffer of its own, whose allocation and external-memory
      // accounting took 0.5 s of serve's main thread in a burst of 5,000 accepts, for rings the
      // connections, offloaded at once, never used.
      sendBuffer: rings?.send ?? new ByteRing(Math.min(cached.sndBufSize, FIRST_RING), cached.sndBufSize),
      recvBuffer: rings?.recv ?? new ByteRing(Math.min(cached.rcvBufSize, FIRST_RING), cached.rcvBufSize),
      lastRecvAt: 0,
      lastSendAt: 0,
      lastAckSent: 0,
      persistBackoff: 0,
      readClosed: false,
      ecn: 0,
      ecnCwrEnd: 0,
    },
    soft: {
      ooo: [],
      sacked: [],
      recvSackRecent: [],
      inRecovery: false,
      recoveryPoint: 0,
      highRxt: 0,
      rxtAt: -1,
      rttSeq: 0,
      rttSentAt: 0,
      rttActive: false,
      delayedAckDeadline: inf,
      unackedSegments: 0,
      caBytesAcked: 0,
      cubic: {
        wMax: 0,
        k: 0,
        epochStart: -1,
        originPoint: 0,
        wEst: 0,
        cwndPrior: 0,
        cwndFrac: 0,
        afterRto: false,
      },
      challengeWindowStart: 0,
      challengeCount: 0,
      ackNow: false,
      oooFin: false,
      oooFinSeq: 0,
      rackLostEdge: 0,
      tlpDeadline: inf,
      tlpInFlight: false,
      tlpHighSeq: 0,
      persistProbesOut: 0,
      lastOowAckAt: -1,
      undoCwnd: 0,
      undoSsthresh: 0,
      undoRetrans: 0,
      undoLow: 0,
      undoArmed: false,
      undoWMax: 0,
      undoTsVal: 0,
      prrDelivered: 0,
      prrOut: 0,
      prrPriorCwnd: 0,
      frto: 0,
      hsWindowEnd: 0,
      hsLastRoundMinRtt: NO_RTT,
      hsCurrentRoundMinRtt: NO_RTT,
      hsRttSamples: 0,
      hsInCss: false,
      hsCssBaselineMinRtt: NO_RTT,
      hsCssRounds: 0,
      smallSentEnd: 0,
      // rackPathDefaults(), written out (see above).
      reordering: RACK_REORDERING_MIN,
      reorderingSeen: false,
      reoWndMult: 1,
      reoWndPersist: 0,
      rtxBytes: 0,
      dsackBytes: 0,
      undoNxt: 0,
      repaired: false,
      quickAcks: 0,
      pingpong: false,
      lastDataAt: -1,
      rcvMss: 0,
      ackPushed: 0,
      rcvClamp: 0,
      rcvSpace: 0,
      rcvSpaceSeq: 0,
      rcvSpaceAt: -1,
      rcvRtt: 0,
      rcvRttSeq: 0,
      rcvRttAt: -1,
      rcvRttEcr: 0,
      rcvSsthresh: 0,
      rcvLocked: false,
    },
  };
}

/**
 * `into` made what `createTcpState(c, cached, path, rings)` returns, in place: every field as a
 * new state has it, and no object made. For a state nothing runs or reads any more (one a dead
 * NIC of this thread left), which a rebuild takes instead of a new one: at 10,000 connections a
 * crash's rebuild made about ten objects per connection (the state, its parts, their lists), and
 * the collections they brought landed in the failover's charged time. Its own lists are kept and
 * emptied. Field by field, not Object.assign from a template state: that took about 30 µs a
 * state in a crash's rebuild (profiled). A field createTcpState gains must be put here too
 * (test/state/reset-state.test.ts fails until it is).
 */
export function resetTcpState(
  into: TcpState,
  c: TcpConst,
  cached: TcpCached,
  path: PathState,
  rings: { send: ByteRing; recv: ByteRing },
): TcpState {
  const k = into.const;
  k.localIp = c.localIp;
  k.localPort = c.localPort;
  k.remoteIp = c.remoteIp;
  k.remotePort = c.remotePort;
  k.tsEnabled = c.tsEnabled;
  k.sackEnabled = c.sackEnabled;
  k.wsEnabled = c.wsEnabled;
  k.sndWscale = c.sndWscale;
  k.rcvWscale = c.rcvWscale;
  k.remoteMss = c.remoteMss;
  k.localMss = c.localMss;
  const ca = into.cached;
  if (ca !== cached) assignTcpCached(ca, cached);
  into.path = path;
  const inf = Number.POSITIVE_INFINITY;
  const d = into.delegated;
  d.state = TcpStateId.CLOSED;
  d.iss = 0;
  d.irs = 0;
  d.sndUna = 0;
  d.sndNxt = 0;
  d.sndMax = 0;
  d.sndWnd = 0;
  d.maxSndWnd = 0;
  d.sndWl1 = 0;
  d.sndWl2 = 0;
  d.rcvNxt = 0;
  d.rcvAdv = 0;
  d.cwnd = 0;
  d.ssthresh = 0x7fffffff;
  d.srtt = 0;
  d.rttvar = 0;
  d.rto = 1000;
  d.tsRecent = 0;
  d.tsRecentAt = -1;
  d.dupAcks = 0;
  d.backoff = 0;
  d.rtxDeadline = inf;
  d.persistDeadline = inf;
  d.keepaliveDeadline = inf;
  d.timeWaitDeadline = inf;
  d.keepaliveProbes = 0;
  d.finQueued = false;
  d.finSent = false;
  d.finReceived = false;
  d.segmentsIn = 0;
  d.segmentsOut = 0;
  d.retransmits = 0;
  d.bytesIn = 0;
  d.bytesOut = 0;
  d.resetsIn = 0;
  d.resetsOut = 0;
  d.sendBuffer = rings.send;
  d.recvBuffer = rings.recv;
  d.lastRecvAt = 0;
  d.lastSendAt = 0;
  d.lastAckSent = 0;
  d.persistBackoff = 0;
  d.readClosed = false;
  d.ecn = 0;
  d.ecnCwrEnd = 0;
  const o = into.soft;
  o.ooo.length = 0;
  o.sacked.length = 0;
  o.recvSackRecent.length = 0;
  o.inRecovery = false;
  o.recoveryPoint = 0;
  o.highRxt = 0;
  o.rxtAt = -1;
  o.rttSeq = 0;
  o.rttSentAt = 0;
  o.rttActive = false;
  o.delayedAckDeadline = inf;
  o.unackedSegments = 0;
  o.caBytesAcked = 0;
  o.challengeWindowStart = 0;
  o.challengeCount = 0;
  o.ackNow = false;
  o.oooFin = false;
  o.oooFinSeq = 0;
  o.rackLostEdge = 0;
  o.tlpDeadline = inf;
  o.tlpInFlight = false;
  o.tlpHighSeq = 0;
  o.persistProbesOut = 0;
  o.lastOowAckAt = -1;
  o.undoCwnd = 0;
  o.undoSsthresh = 0;
  o.undoRetrans = 0;
  o.undoLow = 0;
  o.undoArmed = false;
  o.undoWMax = 0;
  o.undoTsVal = 0;
  o.prrDelivered = 0;
  o.prrOut = 0;
  o.prrPriorCwnd = 0;
  o.frto = 0;
  o.hsWindowEnd = 0;
  o.hsLastRoundMinRtt = NO_RTT;
  o.hsCurrentRoundMinRtt = NO_RTT;
  o.hsRttSamples = 0;
  o.hsInCss = false;
  o.hsCssBaselineMinRtt = NO_RTT;
  o.hsCssRounds = 0;
  o.smallSentEnd = 0;
  o.undoNxt = 0;
  o.repaired = false;
  o.quickAcks = 0;
  o.pingpong = false;
  o.lastDataAt = -1;
  o.rcvMss = 0;
  o.ackPushed = 0;
  o.rcvClamp = 0;
  o.rcvSpace = 0;
  o.rcvSpaceSeq = 0;
  o.rcvSpaceAt = -1;
  o.rcvRtt = 0;
  o.rcvRttSeq = 0;
  o.rcvRttAt = -1;
  o.rcvRttEcr = 0;
  o.rcvSsthresh = 0;
  o.rcvLocked = false;
  const cu = o.cubic;
  cu.wMax = 0;
  cu.k = 0;
  cu.epochStart = -1;
  cu.originPoint = 0;
  cu.wEst = 0;
  cu.cwndPrior = 0;
  cu.cwndFrac = 0;
  cu.afterRto = false;
  o.reordering = RACK_REORDERING_MIN;
  o.reorderingSeen = false;
  o.reoWndMult = 1;
  o.reoWndPersist = 0;
  o.rtxBytes = 0;
  o.dsackBytes = 0;
  return into;
}

/**
 * Give the layouts every state is born with a fractional-number field for each number field,
 * once, before any connection exists. V8 keeps a number field as a small integer until the field
 * first holds a fraction (or a value beyond 2^30); then it makes a new layout and deprecates the
 * old one, and every object still on the old one is migrated, a call into the runtime, the next
 * time code stores into it. States start with integers (-1, 0) in their times and sequence
 * numbers, and the simulator's clock turns fractional once moves are charged to it, so the first
 * fraction often came inside a failover: at 10,000 connections each dead NIC's state was migrated
 * by the rebuild's first store into it (`resetTcpState`, about 14 µs a state of a crash's charged
 * time, profiled), and a move's first store into each connection's soft state likewise. Widened
 * here, a new state is born on the final layout (`test/state/reset-state.test.ts`).
 */
function widenTcpState(): TcpState {
  const s = shapeSampleTcpState();
  // The constants and cached settings too: a transfer record's reader builds them on the same
  // layouts with numbers read from a Float64Array (fractions to V8), so the first record read
  // would otherwise turn every state's ports and settings over to a new layout.
  widenNumbers(s.const, SMALL_CONST);
  widenNumbers(s.cached, SMALL_CACHED);
  widenNumbers(s.delegated, SMALL_DELEGATED);
  widenNumbers(s.soft, SMALL_SOFT);
  widenNumbers(s.soft.cubic);
  return s;
}

/*
 * The number fields that only ever hold small integers (counts, enums, option values, settings,
 * windows below 2^30, bytes of one recovery): these need no fraction's layout, only one that
 * takes any value (see widenNumbers). Every other number field (sequence numbers, times, sizes
 * and counters that may pass 2^31, congestion arithmetic) is widened to fractions.
 */
const SMALL_CONST: ReadonlySet<string> = new Set([
  'localPort',
  'remotePort',
  'sndWscale',
  'rcvWscale',
  'remoteMss',
  'localMss',
]);
/** Every cached setting: a count, a TTL or TOS, a buffer size or a whole number of ms. */
const SMALL_CACHED: ReadonlySet<string> = new Set(Object.keys(DEFAULT_TCP_CACHED));
const SMALL_DELEGATED: ReadonlySet<string> = new Set([
  'state',
  'ecn',
  'sndWnd',
  'maxSndWnd',
  'dupAcks',
  'backoff',
  'keepaliveProbes',
  'persistBackoff',
  'retransmits',
  'resetsIn',
  'resetsOut',
]);
const SMALL_SOFT: ReadonlySet<string> = new Set([
  'quickAcks',
  'rcvMss',
  'ackPushed',
  'rcvClamp',
  'rcvSpace',
  'rcvSsthresh',
  'unackedSegments',
  'caBytesAcked',
  'challengeCount',
  'persistProbesOut',
  'undoRetrans',
  'prrDelivered',
  'prrOut',
  'prrPriorCwnd',
  'frto',
  'hsRttSamples',
  'hsCssRounds',
  'reordering',
  'reoWndMult',
  'reoWndPersist',
]);

const SMALL: Readonly<Record<string, ReadonlySet<string>>> = {
  const: SMALL_CONST,
  cached: SMALL_CACHED,
  delegated: SMALL_DELEGATED,
  soft: SMALL_SOFT,
};

/**
 * Field `key` of a state's part `part` is one of the small-integer fields above: a reader that
 * takes its value from a Float64Array (a transfer record) gets a heap number, which such a field
 * keeps as a box of its own, as a fraction's layout would (see TransferRecord's readers).
 */
export function smallTcpField(part: string, key: string): boolean {
  return SMALL[part]?.has(key) === true;
}

/**
 * A state with no connection behind it (zero addresses, no path), only for giving layouts their
 * final shape (`widenNumbers`); the TCP engine's connection object takes one for its own.
 */
export function shapeSampleTcpState(): TcpState {
  const c = zeroTcpConst();
  const path = { const: {}, cached: {}, neighbor: null, ifIndex: 0 } as unknown as PathState;
  return createTcpState(c, DEFAULT_TCP_CACHED, path, { send: new ByteRing(1), recv: new ByteRing(1) });
}

/** A TcpConst of zeros, to be filled in (a rebuild's scratch) or to stand for none (a sample). */
export function zeroTcpConst(): TcpConst {
  return {
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
  };
}

/**
 * Store a fraction into every number field `o` has, so its layout holds fractions from now on:
 * for a throwaway object made by the same literal or class as the ones that matter (see
 * widenTcpState). Booleans, arrays and objects keep what they had.
 *
 * The fields named in `small` get a layout that takes any value instead (a non-number stored,
 * then the number back): a field on a fraction's layout keeps its number in a box of its own,
 * 16 bytes per field and object on a 64-bit heap (V8 no longer unboxes them), while a small
 * integer in a field that takes any value is stored in the field. Such a field that does take a
 * fraction or a number past 2^31 keeps its layout too, and boxes that number at each store: for
 * fields that do so never or once in a connection's life. 16 bytes each of 53 fields of a
 * connection's objects (BENCHMARKS.md, "Bytes per connection").
 */
export function widenNumbers(o: object, small?: ReadonlySet<string>): void {
  const r = o as Record<string, unknown>;
  for (const key of Object.keys(r)) {
    const v = r[key];
    if (typeof v !== 'number') continue;
    if (small?.has(key) === true) {
      r[key] = null;
      r[key] = v;
    } else r[key] = 0.5;
  }
}
/**
 * The widened sample, kept: V8 holds the transitions to a layout weakly, and a collection that
 * finds no object on the widened layouts drops them, so the next state is born on small-integer
 * fields again and the first fraction migrates every state then alive. A worker thread loads this
 * module long before its first connection (a collection between is all but sure), and a host
 * whose connections have all gone starts over likewise; in a WorkerNic failover each moved
 * connection's objects were migrated on the surviving worker (test/state/layout.test.ts).
 */
export const WIDENED_TCP_STATE: TcpState = widenTcpState();
