import { AddressInUseError, InvalidArgumentError } from '../../core/errors.ts';
import type { ByteRing } from '../../state/byte-ring.ts';
import { createNeighborState } from '../../state/neighbor-state.ts';
import { createPathState, type PathState } from '../../state/path-state.ts';
import { createTcpState, type TcpCached, type TcpConst, TcpStateId } from '../../state/tcp-state.ts';
import { ANY6, TWO_32 } from '../address-table.ts';
import { seqAdd } from './seq.ts';
import { connError, reportClosed, TcpConnection, type TcpEngine } from './tcp-connection.ts';
import { ecnActiveOpen } from './tcp-ecn.ts';
import type { TcpLayer } from './tcp-layer.ts';
import { checkAddress, checkPort } from './tcp-options.ts';
import { sendSyn, wscaleFor } from './tcp-output.ts';
import { scheduleTimer } from './tcp-timers.ts';
import type { TcpUser } from './tcp-types.ts';

const EPHEMERAL_LOW = 49152;
const EPHEMERAL_COUNT = 65536 - EPHEMERAL_LOW;
/** Largest MSS we announce: a 65535-byte IP packet minus 40 bytes of headers. */
const MAX_ANNOUNCED_MSS = 65495;

export function announcedMss(path: PathState): number {
  // RFC 879 / RFC 8200 8.3: the path MTU less the IP (20, or IPv6's 40) and TCP headers.
  const headers = path.const.remoteIp >= TWO_32 ? 60 : 40;
  return Math.max(88, Math.min(path.cached.mtu - headers, MAX_ANNOUNCED_MSS));
}

/** A connection in CLOSED with the options it will negotiate; not yet in any table. */
export function newConnection(
  engine: TcpEngine,
  localIp: number,
  localPort: number,
  remoteIp: number,
  remotePort: number,
  cached: TcpCached,
  path: PathState,
  rings?: { send: ByteRing; recv: ByteRing },
): TcpConnection {
  const c: TcpConst = {
    localIp,
    localPort,
    remoteIp,
    remotePort,
    tsEnabled: false,
    sackEnabled: false,
    wsEnabled: false,
    sndWscale: 0,
    rcvWscale: 0,
    remoteMss: 536,
    localMss: announcedMss(path),
  };
  const conn = new TcpConnection(engine, createTcpState(c, cached, path, rings));
  conn.offeredWscale = wscaleFor(cached.rcvBufSize);
  conn.state.soft.rcvLocked = cached.rcvBufLocked === true;
  return conn;
}

export interface ConnectOptions {
  remoteIp: number;
  remotePort: number;
  localIp?: number;
  localPort?: number;
  options?: Partial<TcpCached>;
}

/** The active open: validate, pick the local end, send the SYN. */
export function openConnection(
  layer: TcpLayer,
  opts: ConnectOptions,
  cached: (options?: Partial<TcpCached>) => TcpCached,
  user: TcpUser,
): TcpConnection {
  if (!opts || typeof opts !== 'object') throw new InvalidArgumentError('connect: options required');
  const remoteIp = checkAddress(opts.remoteIp, 'remoteIp', layer.env.addrs !== undefined);
  const remotePort = checkPort(opts.remotePort, 'remotePort');
  if (opts.localIp !== undefined) checkAddress(opts.localIp, 'localIp', layer.env.addrs !== undefined);
  if (opts.localPort !== undefined) checkPort(opts.localPort, 'localPort');
  if (
    remoteIp === ANY6 ||
    (remoteIp < TWO_32 && (remoteIp === 0 || remoteIp === 0xffffffff || remoteIp >>> 28 === 14))
  ) {
    throw new InvalidArgumentError('connect: remote address must be unicast');
  }
  if (opts.localIp !== undefined && opts.localIp >= TWO_32 !== remoteIp >= TWO_32) {
    throw new InvalidArgumentError('connect: local and remote addresses must be of one family');
  }
  const env = layer.env;
  const admitted = layer.admitNew();
  const options = layer.budget.sized(cached(opts.options));
  const path = env.pathTo(remoteIp, opts.localIp);
  const localIp = opts.localIp ?? path?.const.localIp ?? 0;
  let localPort = opts.localPort ?? 0;
  if (localPort !== 0) {
    if (layer.lookup(localIp, localPort, remoteIp, remotePort)) {
      throw new AddressInUseError(`connect: local port ${localPort} already used for this peer`);
    }
  } else {
    localPort = ephemeralPort(layer, localIp, remoteIp, remotePort);
  }
  const thePath = path ?? unroutablePath(localIp, remoteIp);
  const conn = newConnection(layer, localIp, localPort, remoteIp, remotePort, options, thePath);
  conn.user = user;
  if (!path) {
    env.counters.inc('tcp.connect.no-route');
    reportClosed(conn, connError('ENETUNREACH', 'no route to the remote address'));
    conn.deferDelivery();
    return conn;
  }
  if (!admitted) {
    // Past the stack's connection or memory limit: fails like a socket(2) without buffers.
    reportClosed(conn, connError('ENOBUFS', 'TCP connection or memory limit reached'));
    conn.deferDelivery();
    return conn;
  }
  const now = env.clock.now();
  const d = conn.state.delegated;
  d.iss = layer.isn.next(localIp, localPort, remoteIp, remotePort);
  d.sndUna = d.iss;
  d.sndNxt = seqAdd(d.iss, 1);
  d.sndMax = d.sndNxt;
  // Linux starts snd_sml at the ISS: no short segment is in flight.
  conn.state.soft.smallSentEnd = d.iss;
  d.state = TcpStateId.SYN_SENT;
  layer.link(conn);
  conn.state.soft.rttSentAt = now;
  ecnActiveOpen(conn);
  sendSyn(conn);
  d.rtxDeadline = now + d.rto;
  scheduleTimer(conn);
  return conn;
}

function ephemeralPort(layer: TcpLayer, localIp: number, remoteIp: number, remotePort: number): number {
  const start = layer.env.random.u32() % EPHEMERAL_COUNT;
  for (let i = 0; i < EPHEMERAL_COUNT; i++) {
    const port = EPHEMERAL_LOW + ((start + i) % EPHEMERAL_COUNT);
    if (!layer.lookup(localIp, port, remoteIp, remotePort) && !layer.listeners.has(port)) return port;
  }
  throw new AddressInUseError('connect: no free ephemeral port');
}

/** A stand-in path for a connect with no route: the connection fails at once, asynchronously. */
function unroutablePath(localIp: number, remoteIp: number): PathState {
  const nb = createNeighborState({ srcMac: 0, vlanId: -1, ip: remoteIp });
  return createPathState({ localIp, remoteIp }, nb, -1, 576);
}
