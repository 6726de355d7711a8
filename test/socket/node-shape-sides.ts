/** The two implementations node-shape-script.ts runs on: node:net on loopback, Chimney on a SimNetwork. */
import net, { type AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import type { Side, Sock } from './node-shape-script.ts';

export const nodeSide: Side = {
  host: '127.0.0.1',
  async listen(opts, onPeer) {
    const srv = net.createServer({ allowHalfOpen: opts.allowHalfOpen }, (p) => onPeer(p as unknown as Sock));
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    return { port: (srv.address() as AddressInfo).port, close: () => srv.close() };
  },
  connect: (port, opts) => net.connect({ port, host: '127.0.0.1', ...opts }) as unknown as Sock,
  async closedPort() {
    const srv = net.createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const { port } = srv.address() as AddressInfo;
    await new Promise((r) => srv.close(r));
    return port;
  },
  sleep: (ms) => sleep(ms).then(() => undefined),
};

/** A fresh simulated pair per case; `close` stops it. */
export function chimneySide(): Side & { close(): void } {
  const sim = new SimNetwork({ seed: 3, virtualTime: true });
  const a = sim.addHost({ ip: '10.0.0.1/24' });
  const b = sim.addHost({ ip: '10.0.0.2/24' });
  let nextPort = 8000;
  return {
    host: '10.0.0.2',
    async listen(opts, onPeer) {
      const port = nextPort++;
      const srv = b.createServer({ allowHalfOpen: opts.allowHalfOpen }, (p) => onPeer(p as unknown as Sock));
      srv.listen(port);
      await new Promise((r) => srv.once('listening', r));
      return { port, close: () => srv.close() };
    },
    connect: (port, opts) => a.connect({ port, host: '10.0.0.2', ...opts }) as unknown as Sock,
    closedPort: async () => 7999,
    sleep: (ms) => sim.sleep(ms),
    close: () => sim.close(),
  };
}
