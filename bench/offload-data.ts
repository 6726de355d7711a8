import { pathToFileURL } from 'node:url';
import type { WorkerNic } from '../src/nic/worker-nic.ts';
import { SimNetwork } from '../src/sim/sim-network.ts';
import type { TcpSocket } from '../src/socket/tcp-socket.ts';
import { type TransferFigures, timeTransfers } from './offload.ts';
import { benchWorkerHost } from './worker-host.ts';

export interface DataOffloadBenchResult {
  connections: number;
  /** Bytes waiting in the host's send rings when the transfers start (unacknowledged data). */
  bytesQueued: number;
  runs: number;
  offload: TransferFigures;
  move: TransferFigures;
  upload: TransferFigures;
  /** Bytes of data the NICs' initiates copied into shared memory over the whole bench, warm-up included (null: not counted). */
  copiedBytes: number | null;
}

/**
 * WorkerNic transfers of connections whose send rings are full, as a web server's are when it
 * has written a response body the peer has not taken yet: `connections` connections each with
 * up to `sendBuffer` bytes queued behind a peer that does not read (its window is 16 KiB), moved
 * host → worker → worker → host `runs` times. What the idle-connection bench cannot show: whether
 * a move's cost grows with the data the connections hold.
 */
export async function benchOffloadData(
  opts: { connections?: number; runs?: number; sendBuffer?: number } = {},
): Promise<DataOffloadBenchResult> {
  const connections = opts.connections ?? 500;
  const runs = opts.runs ?? 2;
  const sendBuffer = opts.sendBuffer ?? 256 * 1024;
  const net = new SimNetwork({ seed: 3, virtualTime: false });
  const wh = benchWorkerHost(net, { capacity: connections + 8, ringCapacity: sendBuffer });
  const peer = net.addHost({ ip: '10.0.0.2/24' });
  await Promise.all(wh.nics.map((n) => n.ready()));
  peer
    .createServer({ tcp: { rcvBufSize: 16384 } }, (s) => {
      s.pause();
      s.on('error', () => {});
    })
    .listen(81);
  await wh.host.ping('10.0.0.2');
  const body = Buffer.alloc(sendBuffer, 0x42);
  const sockets: TcpSocket[] = [];
  for (let i = 0; i < connections; i++) {
    const s = wh.host.connect({
      port: 81,
      host: '10.0.0.2',
      tcp: { sndBufSize: sendBuffer, rcvBufSize: 16384 },
    });
    s.on('error', () => {});
    s.on('connect', () => s.write(body));
    sockets.push(s);
    if (i % 100 === 99) await net.sleep(5);
  }
  const queued = (): number => {
    let n = 0;
    for (const c of wh.stack.tcp.connections()) n += c.state.delegated.sendBuffer.length;
    return n;
  };
  // Until the rings stop filling (bounded: 100 looks, 5 s).
  let last = -1;
  for (let i = 0; i < 100; i++) {
    await net.sleep(50);
    const q = queued();
    if (q === last && !sockets.some((s) => s.connecting)) break;
    last = q;
  }
  const bytesQueued = queued();
  const copied = () =>
    wh.nics.reduce(
      (n, nic) => n + ((nic as WorkerNic & { copiedBytes?: number }).copiedBytes ?? Number.NaN),
      0,
    );
  // The untimed warm-up round trip of timeTransfers copies the host's data into shared memory
  // once (the host ran these connections in its own memory); every timed transfer after it would
  // add bytesQueued again if it copied.
  const times = await timeTransfers(wh.offload, wh.nics[0]!, wh.nics[1]!, connections, runs);
  const copiedBytes = copied();
  for (const s of sockets) s.destroy();
  wh.close();
  net.close();
  return {
    connections,
    bytesQueued,
    runs,
    ...times,
    copiedBytes: Number.isNaN(copiedBytes) ? null : copiedBytes,
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const r = await benchOffloadData({
    connections: Number(process.env.CHIMNEY_BENCH_CONNS ?? 500),
    runs: Number(process.env.CHIMNEY_BENCH_RUNS ?? 2),
  });
  console.log(JSON.stringify(r));
  process.exit(0);
}
