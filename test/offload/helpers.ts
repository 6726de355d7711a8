import { EventEmitter, once } from 'node:events';
import type { Clock } from '../../src/core/clock.ts';
import type { Random } from '../../src/core/random.ts';
import type { Link } from '../../src/link/link.ts';
import { NicHostLink } from '../../src/nic/host-link.ts';
import type { ConnKey, Nic, NicCounterSnapshot, SalvageRecord } from '../../src/nic/nic.ts';
import { NicEngine } from '../../src/nic/nic-engine.ts';
import { NicGroupLink } from '../../src/nic/nic-group-link.ts';
import { OffloadManager } from '../../src/offload/offload-manager.ts';
import type { SimHost } from '../../src/sim/sim-network.ts';
import { SimNetwork, type SimOffloadHost, type SimOffloadHostOptions } from '../../src/sim/sim-network.ts';
import { Host } from '../../src/socket/host.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { Stack } from '../../src/stack/stack.ts';
import type { ConnectionHandle, TcpUser } from '../../src/stack/tcp/tcp-types.ts';
import { writeU16, writeU32 } from '../../src/wire/addr.ts';
import { writeL4Checksum } from '../../src/wire/checksum.ts';
import { collect, randomBytes, sha256 } from '../helpers/streams.ts';

export interface Pair {
  net: SimNetwork;
  host: SimOffloadHost;
  peer: SimHost;
}

/** An offload host (10.0.0.1, 2 LocalNics by default) and a plain peer (10.0.0.2) on one switch. */
export function offloadPair(seed: number, opts: Partial<SimOffloadHostOptions> = {}): Pair {
  const net = new SimNetwork({ seed, virtualTime: true });
  const host = net.addOffloadHost({ ip: '10.0.0.1/24', ...opts });
  const peer = net.addHost({ ip: '10.0.0.2/24' });
  return { net, host, peer };
}

/** Write `data` in chunks with backpressure, pausing `gapMs` of network time between chunks. */
export async function paced(net: SimNetwork, s: TcpSocket, data: Buffer, chunk: number, gapMs: number) {
  for (let off = 0; off < data.length; off += chunk) {
    if (!s.write(data.subarray(off, off + chunk))) await once(s, 'drain');
    if (gapMs > 0) await net.sleep(gapMs);
  }
  s.end();
}

export interface Streams {
  /** Host-side sockets (clients), in index order. */
  sockets: TcpSocket[];
  /** Resolves with the number of directions whose digest did not match. */
  done: Promise<number>;
  /** Errors seen on either side. */
  errors: Error[];
}

/**
 * `n` connections from the host to the peer, each streaming `bytes` both ways in paced chunks, so
 * that data is in flight for a while. Resolves `ready` once all are established.
 */
export async function startStreams(
  p: Pair,
  n: number,
  bytes: number,
  chunk = 2000,
  gapMs = 5,
): Promise<Streams> {
  const { net, host, peer } = p;
  // Resolve ARP first: a burst of SYNs would overflow the neighbor queue and wait a second.
  await host.ping('10.0.0.2');
  const errors: Error[] = [];
  const serverDone: Promise<boolean>[] = [];
  let accepted = 0;
  const allAccepted = new Promise<void>((resolve) => {
    peer
      .createServer((s) => {
        s.on('error', (e) => errors.push(e));
        serverDone.push(
          (async () => {
            const head = await readExactly(s, 4);
            const idx = head.readUInt32BE(0);
            const [got] = await Promise.all([
              collect(s),
              paced(net, s, randomBytes(2e6 + idx, bytes), chunk, gapMs),
            ]);
            return sha256(got) === sha256(randomBytes(1e6 + idx, bytes));
          })().catch(() => false),
        );
        if (++accepted === n) resolve();
      })
      .listen(5000);
  });
  const sockets: TcpSocket[] = [];
  const clientDone: Promise<boolean>[] = [];
  for (let i = 0; i < n; i++) {
    const s = host.connect(5000, '10.0.0.2');
    s.on('error', (e) => errors.push(e));
    sockets.push(s);
    clientDone.push(
      (async () => {
        await once(s, 'connect');
        const head = Buffer.alloc(4);
        head.writeUInt32BE(i);
        s.write(head);
        const [got] = await Promise.all([
          collect(s),
          paced(net, s, randomBytes(1e6 + i, bytes), chunk, gapMs),
        ]);
        return sha256(got) === sha256(randomBytes(2e6 + i, bytes));
      })().catch(() => false),
    );
  }
  await allAccepted;
  await Promise.all(sockets.map((s) => (s.connecting ? once(s, 'connect') : undefined)));
  const done = (async () => {
    const r = [...(await Promise.all(clientDone)), ...(await Promise.all(serverDone))];
    return r.filter((ok) => !ok).length;
  })();
  return { sockets, done, errors };
}

export async function readExactly(s: TcpSocket, n: number): Promise<Buffer> {
  for (;;) {
    const b = s.read(n) as Buffer | null;
    if (b) return b;
    await once(s, 'readable');
  }
}

/** The four-tuple of each socket's connection, in order. */
export function keysOf(sockets: readonly TcpSocket[]): ConnKey[] {
  return sockets.map((s) => {
    const c = s.connection!;
    return { localIp: c.localIp, localPort: c.localPort, remoteIp: c.remoteIp, remotePort: c.remotePort };
  });
}

/**
 * A test's own kind of Nic, neither a LocalNic nor a WorkerNic: an engine on `link`, on the host's
 * clock, and the host link that reaches it; it emits the engine's indications. What it offers of
 * the contract's verbs is each subclass's own; the engine is `eng`, not `engine` (a Nic that has
 * `engine` offers the live hand-over).
 */
export abstract class EngineNic extends EventEmitter {
  readonly hostLink: NicHostLink;
  readonly useRecords = false;
  readonly death = null;
  protected readonly eng: NicEngine;

  constructor(
    readonly id: string,
    link: Link,
    protected readonly clock: Clock,
    random: Random,
  ) {
    super();
    let engine: NicEngine | undefined;
    this.hostLink = new NicHostLink(`${id}.host`, {
      send: (frame) => engine!.sendFromHost(frame),
      get mtu() {
        return link.mtu;
      },
      get carrier() {
        return link.carrier;
      },
    });
    const hostLink = this.hostLink;
    engine = this.eng = new NicEngine({
      id,
      link,
      clock,
      random,
      toHost: (frame) => {
        hostLink.deliver(frame);
      },
      hostCarrier: (up) => hostLink.carrierChanged(up),
      indicate: (event, ...args) => {
        this.emit(event, ...args);
      },
    });
  }

  get capacity(): number {
    return this.eng.capacity;
  }
  get load(): number {
    return this.eng.load;
  }
  get runningConns(): number {
    return this.eng.load;
  }
  get linkUp(): boolean {
    return this.eng.linkUp;
  }
  salvage(): SalvageRecord[] {
    return [];
  }
  async invalidate(): Promise<void> {}
  async counterSnapshot(): Promise<NicCounterSnapshot> {
    return { source: this.eng.counters, values: this.eng.counters.snapshot() };
  }
  inject(packets: readonly Uint8Array[]): void {
    this.clock.defer(() => this.eng.inject(packets));
  }
  attach(key: ConnKey, user: TcpUser | null): ConnectionHandle | null {
    const conn = this.eng.connection(key);
    if (conn === undefined) return null;
    conn.user = user;
    return conn;
  }
  close(): void {
    this.eng.close();
    this.hostLink.close();
  }
}

/**
 * A host (10.0.0.1) whose stack reaches the segment through two targets of a test's own kind
 * (`make`, each on a switch port named `${name}0`, `${name}1`) under a manual OffloadManager, and a
 * peer (10.0.0.2).
 */
export function nicRig<N extends Nic>(
  seed: number,
  name: string,
  make: (id: string, link: Link, clock: Clock, random: Random) => N,
) {
  const net = new SimNetwork({ seed, virtualTime: true });
  const peer = net.addHost({ ip: '10.0.0.2/24', name: 'peer' });
  const nics = [0, 1].map((i) =>
    make(`${name}${i}`, net.switch.addPort({ name: `${name}${i}` }), net.clock, net.random.fork()),
  ) as [N, N];
  const stack = new Stack({ clock: net.clock, random: net.random.fork(), name: 'host' });
  stack.addInterface(new NicGroupLink(nics), { mac: '02:00:00:00:00:31', ip: ['10.0.0.1/24'], name: 'eth0' });
  const m = new OffloadManager({ stack, nics, policy: { mode: 'manual' } });
  const pair = { net, host: new Host(stack), peer } as unknown as Pair;
  const close = () => {
    m.close();
    for (const n of nics) n.close();
    stack.close();
    net.close();
  };
  return { net, stack, nics, m, pair, close };
}

/** An IPv4 packet of the peer's on `k`: a bare ACK (a packet a host injects at a NIC). */
export function peerAck(k: ConnKey): Uint8Array {
  const p = new Uint8Array(40);
  p.set([0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6]);
  writeU32(p, 12, k.remoteIp);
  writeU32(p, 16, k.localIp);
  writeU16(p, 20, k.remotePort);
  writeU16(p, 22, k.localPort);
  p[32] = 0x50;
  p[33] = 0x10;
  writeL4Checksum(p, 20, 20, k.remoteIp, k.localIp, 6);
  return p;
}
