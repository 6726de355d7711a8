import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { Counters } from '../../src/core/counters.ts';
import type { ConnectionError } from '../../src/core/errors.ts';
import { SeededRandom } from '../../src/core/random.ts';
import type { IpSender } from '../../src/stack/ip-sender.ts';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import { TcpLayer } from '../../src/stack/tcp/tcp-layer.ts';
import type { TcpHostEnv, TcpUser } from '../../src/stack/tcp/tcp-types.ts';
import { createNeighborState } from '../../src/state/neighbor-state.ts';
import { createPathState, type PathState } from '../../src/state/path-state.ts';
import type { TcpCached } from '../../src/state/tcp-state.ts';
import { bytes } from './harness.ts';

const A = 0x0a000001;
const B = 0x0a000002;
const LATENCY_MS = 5;

/**
 * Two TcpLayers on one virtual clock, joined by a wire with fixed latency. `drop(n)` decides, for
 * the n-th segment on the wire, whether it is lost (deterministic loss patterns).
 */
class Wire {
  readonly clock = new VirtualClock(0);
  readonly a: TcpLayer;
  readonly b: TcpLayer;
  sent = 0;
  dropped = 0;
  constructor(drop: (n: number, len: number) => boolean, defaults?: Partial<TcpCached>, mtu = 1500) {
    const mk = (self: number, peer: () => TcpLayer, seed: number): TcpLayer => {
      const clock = this.clock;
      const wire = this;
      const paths = new Map<number, PathState>();
      const ip: IpSender = {
        txBuf: new Uint8Array(70_000),
        begin: () => 20,
        commit(path, _proto, l4Len) {
          const n = wire.sent++;
          if (drop(n, l4Len)) {
            wire.dropped++;
            return true;
          }
          const copy = ip.txBuf.slice(20, 20 + l4Len);
          const src = path.const.localIp;
          const dst = path.const.remoteIp;
          clock
            .createTimer(() => peer().input({ src, dst, ttl: 64, tos: 0, ifIndex: 0 }, copy, 0, copy.length))
            .arm(LATENCY_MS);
          return true;
        },
      };
      const env: TcpHostEnv = {
        clock,
        random: new SeededRandom(seed),
        ip,
        counters: new Counters(),
        pathTo(remoteIp) {
          let p = paths.get(remoteIp);
          if (!p) {
            p = createPathState(
              { localIp: self, remoteIp },
              createNeighborState({ srcMac: 1, vlanId: -1, ip: remoteIp }, 2),
              0,
              mtu,
            );
            paths.set(remoteIp, p);
          }
          return p;
        },
        isLocal: (x) => x === self,
      };
      return new TcpLayer(env, defaults);
    };
    this.a = mk(A, () => this.b, 11);
    this.b = mk(B, () => this.a, 22);
  }
  run(untilMs: number, done: () => boolean): void {
    while (!done() && this.clock.now() < untilMs) {
      if (this.clock.step() === 0) break;
    }
  }
}

/** A user that streams `data` out and collects what arrives. */
class Pump implements TcpUser {
  conn!: TcpConnection;
  private sentOff = 0;
  readonly chunks: Uint8Array[] = [];
  received = 0;
  ended = false;
  closed: ConnectionError | null | undefined = undefined;
  private readonly scratch = new Uint8Array(65536);
  constructor(private readonly data: Uint8Array) {}
  start(conn: TcpConnection): void {
    this.conn = conn;
  }
  pump(): void {
    while (this.sentOff < this.data.length) {
      const n = this.conn.write(this.data, this.sentOff, this.data.length - this.sentOff);
      this.sentOff += n;
      if (n === 0) return;
    }
    this.conn.shutdown();
  }
  onConnected(): void {
    this.pump();
  }
  onReadable(): void {
    for (;;) {
      const n = this.conn.read(this.scratch);
      if (n === 0) break;
      this.chunks.push(this.scratch.slice(0, n));
      this.received += n;
    }
  }
  onWritable(): void {
    this.pump();
  }
  onRemoteEnd(): void {
    this.onReadable();
    this.ended = true;
  }
  onClosed(e: ConnectionError | null): void {
    this.closed = e;
  }
  joined(): Uint8Array {
    const out = new Uint8Array(this.received);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
}

function transfer(wire: Wire, size: number, options?: Partial<TcpCached>): { client: Pump; server: Pump } {
  const up = bytes(size, 1);
  const down = bytes(size, 2);
  const server = new Pump(down);
  wire.b.listen({ port: 80, options }, (c) => {
    c.user = server;
    server.start(c);
    return true;
  });
  const client = new Pump(up);
  const conn = wire.a.connect({ remoteIp: B, remotePort: 80, options }, client);
  client.start(conn);
  wire.run(600_000, () => client.closed !== undefined && server.closed !== undefined);
  assert.equal(client.received, size, 'client received everything');
  assert.equal(server.received, size, 'server received everything');
  assert.deepEqual(Buffer.from(server.joined()).equals(Buffer.from(up)), true);
  assert.deepEqual(Buffer.from(client.joined()).equals(Buffer.from(down)), true);
  assert.equal(client.ended && server.ended, true);
  assert.equal(client.closed, null);
  assert.equal(server.closed, null);
  return { client, server };
}

describe('end to end between two TcpLayers', () => {
  test('1 MB each way, no loss', () => {
    const w = new Wire(() => false);
    transfer(w, 1 << 20);
    assert.equal(w.dropped, 0);
  });

  test('1 MB each way with 2% deterministic loss (SACK, CUBIC)', () => {
    const w = new Wire((n) => n % 50 === 17);
    transfer(w, 1 << 20);
    assert.ok(w.dropped > 0);
    // The side that closed first lingers in TIME_WAIT.
    assert.ok([...w.a.connections(), ...w.b.connections()].length >= 1);
  });

  test('1 MB each way with bursty loss, NewReno, small buffers', () => {
    const w = new Wire((n) => n % 97 < 3 && n > 5, undefined);
    transfer(w, 1 << 20, { congestion: 'newreno', sndBufSize: 64 * 1024, rcvBufSize: 48 * 1024 });
    assert.ok(w.dropped > 0);
  });

  test('jumbo MTU uses segments larger than 1460 bytes', () => {
    let max = 0;
    const w = new Wire(
      (_n, len) => {
        max = Math.max(max, len);
        return false;
      },
      undefined,
      9000,
    );
    transfer(w, 256 * 1024);
    assert.ok(max > 8000, `largest segment ${max}`);
  });
});
