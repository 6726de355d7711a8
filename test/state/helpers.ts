import { allocConnBlock, TRANSFER_RECORD_AT } from '../../src/nic/hard-state.ts';
import { TransferRecord } from '../../src/nic/transfer-record.ts';
import { ByteRing } from '../../src/state/byte-ring.ts';
import { createNeighborState, type NeighborState } from '../../src/state/neighbor-state.ts';
import type { OffloadTree } from '../../src/state/offload-tree.ts';
import { createPathState, type PathState } from '../../src/state/path-state.ts';
import {
  type CongestionAlgorithm,
  createTcpState,
  DEFAULT_TCP_CACHED,
  type TcpState,
  TcpStateId,
} from '../../src/state/tcp-state.ts';
import fc from '../helpers/fc.ts';

/**
 * A transfer record written from `s` (at time 1000) in a block of its own, taken by owner 1, with
 * the block's rings holding `s`'s bytes: what a thread reads a moved connection from.
 */
export function recordOf(s: TcpState): { rec: TransferRecord; send: ByteRing; recv: ByteRing } {
  const d = s.delegated;
  const block = allocConnBlock(64, Math.max(d.recvBuffer.maxCapacity, 4096));
  const send = ByteRing.createShared(block.send.capacity, block.send);
  const recv = ByteRing.createShared(block.recv.capacity, block.recv);
  send.write(d.sendBuffer.toArray());
  recv.write(d.recvBuffer.toArray());
  const rec = new TransferRecord(block.sab, block.at + TRANSFER_RECORD_AT);
  rec.write(s, 1000, 0, 1, recv);
  if (!rec.take(1)) throw new Error('record not taken');
  return { rec, send, recv };
}

/** A valid ESTABLISHED connection with some data both ways, for mutation tests. */
export function sampleConn(path: PathState, localPort = 40000, remotePort = 80): TcpState {
  const s = createTcpState(
    {
      localIp: path.const.localIp,
      localPort,
      remoteIp: path.const.remoteIp,
      remotePort,
      tsEnabled: true,
      sackEnabled: true,
      wsEnabled: true,
      sndWscale: 7,
      rcvWscale: 7,
      remoteMss: 1460,
      localMss: 1460,
    },
    { ...DEFAULT_TCP_CACHED, sndBufSize: 4096, rcvBufSize: 4096 },
    path,
  );
  const d = s.delegated;
  d.state = TcpStateId.ESTABLISHED;
  d.iss = 1000;
  d.irs = 0xfffffff0;
  d.sndUna = 1001;
  d.sndNxt = 1101;
  d.sndMax = 1201;
  d.sendBuffer.write(new Uint8Array(300).fill(7));
  d.sndWnd = 65535;
  d.maxSndWnd = 65535;
  d.rcvNxt = 0xfffffff1 + 50;
  d.rcvNxt >>>= 0;
  d.rcvAdv = (d.rcvNxt + 20000) >>> 0;
  d.recvBuffer.write(new Uint8Array(50).fill(9));
  d.cwnd = 14600;
  d.srtt = 12.5;
  d.rttvar = 3.25;
  d.rto = 200;
  d.tsRecentAt = 900;
  d.rtxDeadline = 1200;
  d.lastRecvAt = 990;
  d.lastSendAt = 995;
  s.soft.delayedAckDeadline = 1040;
  s.soft.cubic.epochStart = 500;
  s.soft.sacked.push({ start: 1101, end: 1151 });
  s.soft.ooo.push({ seq: (d.rcvNxt + 100) >>> 0, data: new Uint8Array([1, 2, 3]) });
  s.soft.recvSackRecent.push({ start: (d.rcvNxt + 100) >>> 0, end: (d.rcvNxt + 103) >>> 0 });
  return s;
}

export function sampleNeighbor(i = 0): NeighborState {
  const n = createNeighborState(
    { srcMac: 0x020000000001, vlanId: -1, ip: (0x0a000001 + i) >>> 0 },
    0x020000000100 + i,
    950,
  );
  n.delegated.nicReachableAt = 980;
  return n;
}

export function samplePath(nb: NeighborState, remoteIp = 0x0a0000fe): PathState {
  return createPathState({ localIp: 0x0a000002, remoteIp }, nb, 1, 1500);
}

/** One neighbor, one path, `n` connections. */
export function sampleTrees(n = 2): OffloadTree[] {
  const nb = sampleNeighbor();
  const path = samplePath(nb);
  const conns: TcpState[] = [];
  for (let i = 0; i < n; i++) conns.push(sampleConn(path, 40000 + i));
  return [{ neighbor: nb, paths: [{ path, conns }] }];
}

/** Plain data for deep comparison: rings become their limit and bytes (their layout is private). */
export function normalize(v: unknown): unknown {
  if (v instanceof ByteRing) return { ring: true, maxCapacity: v.maxCapacity, bytes: v.toArray() };
  if (v instanceof Uint8Array) return v;
  if (Array.isArray(v)) return v.map(normalize);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) {
      // Structural back-pointers are checked by identity separately.
      if (k === 'neighbor' && 'ifIndex' in v) continue;
      if (k === 'path' && 'delegated' in v) continue;
      out[k] = normalize(x);
    }
    return out;
  }
  return v;
}

/** True when every back-pointer matches the tree shape and no object appears twice. */
export function sharingHolds(trees: readonly OffloadTree[]): boolean {
  const seen = new Set<unknown>();
  for (const t of trees) {
    if (seen.has(t.neighbor)) return false;
    seen.add(t.neighbor);
    for (const node of t.paths) {
      if (node.path.neighbor !== t.neighbor || seen.has(node.path)) return false;
      seen.add(node.path);
      for (const c of node.conns) {
        if (c.path !== node.path || seen.has(c)) return false;
        seen.add(c);
      }
    }
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// fast-check arbitraries of valid trees

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const time = fc.oneof(
  fc.integer({ min: -1_000_000, max: 1_000_000_000 }),
  fc.constant(Number.POSITIVE_INFINITY),
  fc.constant(-1),
);
const num = fc.oneof(fc.double({ min: 0, max: 1e9, noNaN: true, noDefaultInfinity: true }), fc.nat(100000));
const bytes = (max: number) => fc.uint8Array({ minLength: 0, maxLength: max });

export interface ConnDraw {
  wsEnabled: boolean;
  sndWscale: number;
  rcvWscale: number;
  flags: [boolean, boolean];
  mss: [number, number];
  cached: {
    keepAlive: boolean;
    noDelay: boolean;
    keepIdleMs: number;
    counts: [number, number, number];
    ttl: number;
    tos: number;
    bufExtra: [number, number];
    congestion: CongestionAlgorithm;
  };
  state: number;
  seqs: [number, number, number, number, number, number, number, number];
  sendData: Uint8Array;
  sentFrac: number;
  nxtFrac: number;
  finSent: boolean;
  finQueued: boolean;
  finAcked: boolean;
  finReceived: boolean;
  readClosed: boolean;
  ecn: number;
  recvData: Uint8Array;
  wndFrac: number;
  sndWndFrac: number;
  nums: number[];
  times: number[];
  counters: number[];
  wrap: number;
  ooo: { gap: number; data: Uint8Array }[];
  sackCuts: number[];
  recent: { start: number; len: number }[];
  softBools: [boolean, boolean, boolean];
}

export const connDraw: fc.Arbitrary<ConnDraw> = fc.record({
  wsEnabled: fc.boolean(),
  sndWscale: fc.integer({ min: 0, max: 14 }),
  rcvWscale: fc.integer({ min: 0, max: 14 }),
  flags: fc.tuple(fc.boolean(), fc.boolean()),
  mss: fc.tuple(fc.integer({ min: 64, max: 65495 }), fc.integer({ min: 64, max: 65495 })),
  cached: fc.record({
    keepAlive: fc.boolean(),
    noDelay: fc.boolean(),
    keepIdleMs: num,
    counts: fc.tuple(fc.nat(100), fc.nat(100), fc.nat(100)),
    ttl: fc.integer({ min: 1, max: 255 }),
    tos: fc.integer({ min: 0, max: 255 }),
    bufExtra: fc.tuple(fc.nat(1 << 20), fc.nat(1 << 20)),
    congestion: fc.constantFrom<CongestionAlgorithm>('cubic', 'newreno'),
  }),
  state: fc.integer({ min: 4, max: 9 }),
  seqs: fc.tuple(u32, u32, u32, u32, u32, u32, u32, u32),
  sendData: bytes(400),
  sentFrac: fc.double({ min: 0, max: 1, noNaN: true }),
  nxtFrac: fc.double({ min: 0, max: 1, noNaN: true }),
  finSent: fc.boolean(),
  finQueued: fc.boolean(),
  finAcked: fc.boolean(),
  finReceived: fc.boolean(),
  readClosed: fc.boolean(),
  // ECN off, or negotiated with any of its echo bits (TcpEcn).
  ecn: fc.oneof(
    fc.constant(0),
    fc.nat(15).map((b) => 1 | (b << 1)),
  ),
  recvData: bytes(400),
  wndFrac: fc.double({ min: 0, max: 1, noNaN: true }),
  sndWndFrac: fc.double({ min: 0, max: 1, noNaN: true }),
  nums: fc.array(num, { minLength: 14, maxLength: 14 }),
  times: fc.array(time, { minLength: 12, maxLength: 12 }),
  counters: fc.array(fc.nat(1000), { minLength: 8, maxLength: 8 }),
  wrap: fc.nat(64),
  ooo: fc.array(
    fc.record({
      gap: fc.integer({ min: 1, max: 3000 }),
      data: fc.uint8Array({ minLength: 1, maxLength: 40 }),
    }),
    {
      maxLength: 3,
    },
  ),
  sackCuts: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 6 }),
  recent: fc.array(fc.record({ start: u32, len: fc.integer({ min: 1, max: 100000 }) }), { maxLength: 3 }),
  softBools: fc.tuple(fc.boolean(), fc.boolean(), fc.boolean()),
});

function fillRing(ring: ByteRing, data: Uint8Array, wrap: number): void {
  // Leave the head somewhere inside the ring so the copy-out has to handle a wrapped layout.
  if (wrap > 0 && wrap + data.length <= ring.maxCapacity) {
    ring.write(new Uint8Array(wrap));
    ring.consume(wrap);
  }
  ring.write(data);
}

export function buildConn(path: PathState, localPort: number, remotePort: number, g: ConnDraw): TcpState {
  const sndBufSize = g.sendData.length + g.cached.bufExtra[0] + 1;
  let oooBytes = 0;
  for (const seg of g.ooo) oooBytes += seg.data.length;
  const rcvBufSize = g.recvData.length + oooBytes + g.cached.bufExtra[1] + 1;
  const s = createTcpState(
    {
      localIp: path.const.localIp,
      localPort,
      remoteIp: path.const.remoteIp,
      remotePort,
      tsEnabled: g.flags[0],
      sackEnabled: g.flags[1],
      wsEnabled: g.wsEnabled,
      sndWscale: g.wsEnabled ? g.sndWscale : 0,
      rcvWscale: g.wsEnabled ? g.rcvWscale : 0,
      remoteMss: g.mss[0],
      localMss: g.mss[1],
    },
    {
      keepAlive: g.cached.keepAlive,
      keepIdleMs: g.cached.keepIdleMs,
      keepIntvlMs: g.nums[0]!,
      keepCount: g.cached.counts[0],
      noDelay: g.cached.noDelay,
      maxRetransmits: g.cached.counts[1],
      maxSynRetransmits: g.cached.counts[2],
      ttl: g.cached.ttl,
      tos: g.cached.tos,
      sndBufSize,
      rcvBufSize,
      timeWaitMs: g.nums[1]!,
      delayedAckMs: g.nums[2]!,
      minRtoMs: Math.min(g.nums[3]!, g.nums[4]!),
      maxRtoMs: Math.max(g.nums[3]!, g.nums[4]!),
      congestion: g.cached.congestion,
    },
    path,
  );
  const d = s.delegated;
  const [una, iss, irs, rcvNxt, tsRecent, wl1, wl2] = g.seqs;
  d.state = g.state as TcpState['delegated']['state'];
  d.iss = iss;
  d.irs = irs;
  d.sndUna = una;
  const sendLen = g.sendData.length;
  const finSent = g.finSent;
  let flight: number;
  if (finSent) flight = g.finAcked ? 0 : sendLen + 1;
  else flight = Math.floor(g.sentFrac * sendLen);
  fillRing(d.sendBuffer, finSent && g.finAcked ? new Uint8Array(0) : g.sendData, g.wrap);
  d.sndMax = (una + flight) >>> 0;
  d.sndNxt = (una + Math.floor(g.nxtFrac * flight)) >>> 0;
  d.finSent = finSent;
  d.finQueued = finSent || g.finQueued;
  d.finReceived = g.finReceived;
  d.readClosed = g.readClosed;
  d.ecn = g.ecn;
  d.ecnCwrEnd = d.ecn === 0 ? 0 : d.sndMax;
  d.sndWnd = Math.floor(g.sndWndFrac * (65535 * 2 ** s.const.sndWscale));
  d.maxSndWnd = d.sndWnd;
  d.sndWl1 = wl1;
  d.sndWl2 = wl2;
  d.rcvNxt = rcvNxt;
  d.rcvAdv = (rcvNxt + Math.floor(g.wndFrac * (65535 << s.const.rcvWscale))) >>> 0;
  fillRing(d.recvBuffer, g.recvData, g.wrap);
  d.cwnd = g.nums[5]!;
  d.ssthresh = g.nums[6]!;
  d.srtt = g.nums[7]!;
  d.rttvar = g.nums[8]!;
  d.rto = g.nums[9]!;
  d.tsRecent = tsRecent;
  d.tsRecentAt = g.times[0]!;
  d.rtxDeadline = g.times[1]!;
  d.persistDeadline = g.times[2]!;
  d.keepaliveDeadline = g.times[3]!;
  d.timeWaitDeadline = g.times[4]!;
  d.lastRecvAt = g.times[5]!;
  d.lastSendAt = g.times[6]!;
  d.dupAcks = g.counters[0]!;
  d.backoff = g.counters[1]!;
  d.keepaliveProbes = g.counters[2]!;
  d.persistBackoff = g.counters[3]!;
  d.lastAckSent = (rcvNxt - g.counters[4]!) >>> 0;

  const soft = s.soft;
  let seq = (rcvNxt + 1) >>> 0;
  for (const seg of g.ooo) {
    seq = (seq + seg.gap) >>> 0;
    soft.ooo.push({ seq, data: seg.data });
    seq = (seq + seg.data.length) >>> 0;
  }
  const cuts = g.sackCuts.map((c) => Math.floor(c * flight)).sort((a, b) => a - b);
  for (let i = 0; i + 1 < cuts.length; i += 2) {
    if (cuts[i + 1]! > cuts[i]!)
      soft.sacked.push({ start: (una + cuts[i]!) >>> 0, end: (una + cuts[i + 1]!) >>> 0 });
  }
  for (const r of g.recent) soft.recvSackRecent.push({ start: r.start, end: (r.start + r.len) >>> 0 });
  soft.inRecovery = g.softBools[0];
  soft.rttActive = g.softBools[1];
  soft.ackNow = g.softBools[2];
  soft.recoveryPoint = g.seqs[1];
  soft.highRxt = g.seqs[2];
  soft.smallSentEnd = g.seqs[7];
  soft.rttSeq = g.seqs[3];
  soft.rttSentAt = g.times[7]!;
  soft.delayedAckDeadline = g.times[8]!;
  soft.unackedSegments = g.counters[5]!;
  soft.caBytesAcked = g.nums[10]!;
  soft.challengeWindowStart = g.times[9]!;
  soft.challengeCount = g.counters[6]!;
  const cubic = soft.cubic;
  cubic.wMax = g.nums[11]!;
  cubic.k = g.nums[12]!;
  cubic.epochStart = g.times[10]!;
  cubic.originPoint = g.nums[13]!;
  cubic.wEst = g.nums[0]!;
  cubic.cwndPrior = g.nums[1]!;
  cubic.cwndFrac = g.nums[2]! % 1;
  return s;
}

interface TreeDraw {
  neighbor: { srcMac: number; vlanId: number; dstMac: number; times: [number, number] };
  paths: { mtu: number; ttl: number; tos: number; ifIndex: number; conns: ConnDraw[] }[];
}

const treeDraw: fc.Arbitrary<TreeDraw> = fc.record({
  neighbor: fc.record({
    srcMac: fc.integer({ min: 0, max: 2 ** 48 - 1 }),
    vlanId: fc.integer({ min: -1, max: 4094 }),
    dstMac: fc.integer({ min: -1, max: 2 ** 48 - 1 }),
    times: fc.tuple(time, time),
  }),
  paths: fc.array(
    fc.record({
      mtu: fc.integer({ min: 68, max: 65535 }),
      ttl: fc.integer({ min: 1, max: 255 }),
      tos: fc.integer({ min: 0, max: 255 }),
      ifIndex: u32,
      conns: fc.array(connDraw, { maxLength: 4 }),
    }),
    { maxLength: 3 },
  ),
});

/** Random valid batches: 0..4 neighbors, 0..3 paths each, 0..4 connections per path. */
export const arbTrees: fc.Arbitrary<OffloadTree[]> = fc.array(treeDraw, { maxLength: 4 }).map((draws) => {
  let remote = 0x0a010001;
  return draws.map((td, ni) => {
    const nd = td.neighbor;
    const neighbor = createNeighborState(
      { srcMac: nd.srcMac, vlanId: nd.vlanId, ip: (0x0a000001 + ni) >>> 0 },
      nd.dstMac,
    );
    neighbor.cached.hostReachableAt = nd.times[0];
    neighbor.delegated.nicReachableAt = nd.times[1];
    return {
      neighbor,
      paths: td.paths.map((pd) => {
        const path = createPathState(
          { localIp: 0xc0a80002, remoteIp: remote++ },
          neighbor,
          pd.ifIndex,
          pd.mtu,
          pd.ttl,
        );
        path.cached.tos = pd.tos;
        return { path, conns: pd.conns.map((cd, ci) => buildConn(path, 1024 + ci, 443 + ci, cd)) };
      }),
    };
  });
});
