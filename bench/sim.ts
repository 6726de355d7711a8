import { once } from 'node:events';
import net from 'node:net';
import { SimNetwork } from '../src/sim/sim-network.ts';

export interface SimBenchResult {
  /** Chimney-to-Chimney bulk throughput at MTU 1500 with segmentation and checksum offload (as veth has). */
  gbps: number;
  mtu: number;
  /** CPU time per TCP segment handed to the switch (both stacks and the switch). */
  cpuUsPerSegment: number;
  /** The same at MTU 1500 with every segment built and checksummed in software. */
  gbpsNoOffload: number;
  cpuUsPerSegmentNoOffload: number;
  /** The same as `gbps` over IPv6 (TSO6 and checksum offload), same run. */
  gbpsIpv6: number;
  cpuUsPerSegmentIpv6: number;
  /** The same as `gbpsNoOffload` over IPv6, same run. */
  gbpsIpv6NoOffload: number;
  cpuUsPerSegmentIpv6NoOffload: number;
  /** The same with a 64 KB MTU and no offload. */
  gbpsJumbo: number;
  bytes: number;
  /** Reference measured in the same run: the kernel's TCP over loopback, driven by Node's net. */
  kernelLoopbackGbps: number;
  ratio: number;
}

/** Move `bytes` from one simulated host to another as fast as the CPU allows. */
async function chimneyBulk(
  bytes: number,
  mtu: number,
  offload = false,
  ipv6 = false,
): Promise<{ gbps: number; cpuUsPerSegment: number }> {
  const sim = new SimNetwork({ seed: 1, virtualTime: true, mtu });
  const tcp = { sndBufSize: 4 << 20, rcvBufSize: 4 << 20 };
  const v6 = ipv6 ? { ipv6: { dadTransmits: 0, routerSolicitations: 0 } } : {};
  const a = sim.addHost({ ip: '10.0.0.1/24', tcp, offload, ...(ipv6 ? { ip6: 'fd00::1/64' } : {}), ...v6 });
  const b = sim.addHost({ ip: '10.0.0.2/24', tcp, offload, ...(ipv6 ? { ip6: 'fd00::2/64' } : {}), ...v6 });
  let received = 0;
  const done = new Promise<void>((resolve) => {
    b.createServer((s) => {
      s.on('data', (d: Buffer) => {
        received += d.length;
      });
      s.on('end', () => {
        s.end();
        resolve();
      });
    }).listen(9);
  });
  const sock = a.connect(9, ipv6 ? 'fd00::2' : '10.0.0.2');
  await once(sock, 'connect');
  const chunk = Buffer.alloc(256 * 1024, 0x5a);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let sent = 0;
  while (sent < bytes) {
    sent += chunk.length;
    if (!sock.write(chunk)) await once(sock, 'drain');
  }
  sock.end();
  await done;
  const secs = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const segs = a.stack.counters.get('tcp.segments.out') + b.stack.counters.get('tcp.segments.out');
  sim.close();
  if (received !== sent) throw new Error(`sim bench lost data: sent ${sent}, received ${received}`);
  return { gbps: (received * 8) / secs / 1e9, cpuUsPerSegment: (cpu.user + cpu.system) / Math.max(1, segs) };
}

/** The kernel's TCP over loopback through Node's net module, in this same process. */
async function kernelBulk(bytes: number): Promise<number> {
  let received = 0;
  const server = net.createServer((s) => {
    s.on('data', (d) => {
      received += d.length;
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  const sock = net.connect(port, '127.0.0.1');
  await once(sock, 'connect');
  const chunk = Buffer.alloc(256 * 1024, 0x5a);
  const t0 = performance.now();
  let sent = 0;
  while (sent < bytes) {
    sent += chunk.length;
    if (!sock.write(chunk)) await once(sock, 'drain');
  }
  while (received < sent) await new Promise((r) => setImmediate(r));
  const secs = (performance.now() - t0) / 1000;
  sock.destroy();
  server.close();
  return (received * 8) / secs / 1e9;
}

export async function benchSim(bytes = 1 << 30): Promise<SimBenchResult> {
  const offloaded = await chimneyBulk(bytes, 1500, true);
  const plain = await chimneyBulk(Math.min(bytes, 256 << 20), 1500, false);
  const offloaded6 = await chimneyBulk(bytes, 1500, true, true);
  const plain6 = await chimneyBulk(Math.min(bytes, 256 << 20), 1500, false, true);
  const jumbo = await chimneyBulk(bytes, 65535, false);
  const kernel = await kernelBulk(bytes);
  const r2 = (x: number): number => Math.round(x * 100) / 100;
  return {
    gbps: r2(offloaded.gbps),
    mtu: 1500,
    cpuUsPerSegment: r2(offloaded.cpuUsPerSegment),
    gbpsNoOffload: r2(plain.gbps),
    cpuUsPerSegmentNoOffload: r2(plain.cpuUsPerSegment),
    gbpsIpv6: r2(offloaded6.gbps),
    cpuUsPerSegmentIpv6: r2(offloaded6.cpuUsPerSegment),
    gbpsIpv6NoOffload: r2(plain6.gbps),
    cpuUsPerSegmentIpv6NoOffload: r2(plain6.cpuUsPerSegment),
    gbpsJumbo: r2(jumbo.gbps),
    bytes,
    kernelLoopbackGbps: r2(kernel),
    ratio: r2(offloaded.gbps / kernel),
  };
}
