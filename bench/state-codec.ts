import { pathToFileURL } from 'node:url';
import { createNeighborState } from '../src/state/neighbor-state.ts';
import { buildTrees } from '../src/state/offload-tree.ts';
import { createPathState, type PathState } from '../src/state/path-state.ts';
import { decodeBatch, encodeBatch } from '../src/state/state-codec.ts';
import { createTcpState, DEFAULT_TCP_CACHED, type TcpState, TcpStateId } from '../src/state/tcp-state.ts';

export interface StateCodecBench {
  connections: number;
  batchBytes: number;
  /** Bytes of send plus receive data carried per connection. */
  dataBytesPerConn: number;
  encodeUsPerConn: number;
  decodeUsPerConn: number;
  /** Same, without the soft blocks (what a receiver that drops soft state pays). */
  decodeNoSoftUsPerConn: number;
  /** Reference measured in the same run: JSON.stringify + JSON.parse of the same fields (rings left out). */
  referenceJsonRoundTripUsPerConn: number;
}

function conn(path: PathState, port: number, data: Uint8Array): TcpState {
  const s = createTcpState(
    {
      localIp: path.const.localIp,
      localPort: 1024 + (port % 60000),
      remoteIp: path.const.remoteIp,
      remotePort: 80 + Math.floor(port / 60000),
      tsEnabled: true,
      sackEnabled: true,
      wsEnabled: true,
      sndWscale: 7,
      rcvWscale: 7,
      remoteMss: 1460,
      localMss: 1460,
    },
    { ...DEFAULT_TCP_CACHED, sndBufSize: 1 << 13, rcvBufSize: 1 << 13 },
    path,
  );
  const d = s.delegated;
  d.state = TcpStateId.ESTABLISHED;
  d.iss = port * 7919;
  d.sndUna = (d.iss + 1) >>> 0;
  d.sendBuffer.write(data);
  d.sndNxt = (d.sndUna + data.length) >>> 0;
  d.sndMax = d.sndNxt;
  d.rcvNxt = port * 104729;
  d.rcvAdv = (d.rcvNxt + 65535) >>> 0;
  d.recvBuffer.write(data);
  d.cwnd = 14600;
  d.srtt = 1.5;
  d.rtxDeadline = 1200;
  return s;
}

/** Encode and decode one batch of `n` connections over 100 paths, 10 neighbors; µs per connection. */
export function benchStateCodec(n = 10000, dataBytes = 64): StateCodecBench {
  const neighbors = Array.from({ length: 10 }, (_, i) =>
    createNeighborState({ srcMac: 0x020000000001, vlanId: -1, ip: 0x0a000001 + i }, 0x020000001000 + i, 0),
  );
  const paths = Array.from({ length: 100 }, (_, i) =>
    createPathState({ localIp: 0x0a0000fe, remoteIp: 0x0a010000 + i }, neighbors[i % 10]!, 1, 1500),
  );
  const data = new Uint8Array(dataBytes).fill(0x5a);
  const states: TcpState[] = [];
  for (let i = 0; i < n; i++) states.push(conn(paths[i % 100]!, i, data));
  const trees = buildTrees(states);

  const time = (f: () => void): number => {
    // Best of several rounds after a warm-up: the figure wanted is the steady-state cost.
    for (let i = 0; i < 3; i++) f();
    let best = Number.POSITIVE_INFINITY;
    for (let i = 0; i < 7; i++) {
      const t0 = process.hrtime.bigint();
      f();
      best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1000);
    }
    return best / n;
  };
  let buf = encodeBatch(trees, 1000);
  const encodeUs = time(() => {
    buf = encodeBatch(trees, 1000);
  });
  const decodeUs = time(() => decodeBatch(buf, 5000));
  const decodeNoSoftUs = time(() => decodeBatch(buf, 5000, { dropSoft: true }));
  const plain = states.map((s) => ({
    const: s.const,
    cached: s.cached,
    delegated: { ...s.delegated, sendBuffer: null, recvBuffer: null },
    soft: s.soft,
  }));
  const jsonUs = time(() => JSON.parse(JSON.stringify(plain)));
  const r2 = (x: number) => Math.round(x * 1000) / 1000;
  return {
    connections: n,
    batchBytes: buf.length,
    dataBytesPerConn: 2 * dataBytes,
    encodeUsPerConn: r2(encodeUs),
    decodeUsPerConn: r2(decodeUs),
    decodeNoSoftUsPerConn: r2(decodeNoSoftUs),
    referenceJsonRoundTripUsPerConn: r2(jsonUs),
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  console.log(benchStateCodec(Number(process.argv[2] ?? 10000)));
}
