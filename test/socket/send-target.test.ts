import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import { SEND_TARGET_INITIAL, type TcpSocket } from '../../src/socket/tcp-socket.ts';
import { ringPool } from '../../src/state/byte-ring.ts';
import { collect } from '../helpers/streams.ts';

/**
 * A server socket that is given a whole body in one write keeps only its send target queued in the
 * connection, as a Linux writer waits in sk_stream_wait_memory, and the target grows when it, not
 * a window, bounds the sender (tcp_sndbuf_expand).
 */
describe('the socket holds its writes at its send target', () => {
  function rig(delayMs: number, clientRcvBuf?: number) {
    const net = new SimNetwork({ seed: 7, virtualTime: true });
    const a = net.addHost({
      ip: '10.0.0.1/24',
      impair: { delayMs },
      tcp: clientRcvBuf === undefined ? undefined : { rcvBufSize: clientRcvBuf },
    });
    const b = net.addHost({ ip: '10.0.0.2/24', impair: { delayMs } });
    return { net, a, b };
  }

  /** Serve `body` in one write; returns the most the connection ever held and what arrived. */
  async function download(delayMs: number, body: Buffer, readSlowly: boolean, clientRcvBuf?: number) {
    const { net, a, b } = rig(delayMs, clientRcvBuf);
    let most = 0;
    let server: TcpSocket | null = null;
    b.createServer((s) => {
      server = s as TcpSocket;
      s.end(body);
    }).listen(80);
    const c = a.connect(80, '10.0.0.2');
    await once(c, 'connect');
    // Sampled on the network's clock, between the simulation's steps.
    const sample = (): void => {
      const q = server?.connection?.writableLength ?? 0;
      if (q > most) most = q;
    };
    const ticker = net.clock.createTimer(function tick() {
      sample();
      ticker.arm(1);
    });
    ticker.arm(1);
    if (readSlowly) {
      // Read nothing for two seconds: the window shuts and the rest of the body must wait.
      c.pause();
      await new Promise<void>((res) => net.clock.createTimer(res).arm(2_000));
      c.resume();
    }
    const got = await collect(c);
    ticker.disarm();
    net.close();
    return { most, got };
  }

  test('a reader that does not read: the connection holds the target, not the body', async () => {
    // A client of 32 KiB of receive buffer (as scripts/tap-load.py sets): the window, not the
    // target, bounds the sender, so the target stays where it started.
    const body = Buffer.alloc(2_000_000, 7);
    const { most, got } = await download(1, body, true, 32 * 1024);
    assert.equal(got.length, body.length);
    assert.ok(got.equals(body), 'every byte arrived in order');
    assert.ok(most > 0, 'the watch saw bytes queued');
    assert.ok(most <= SEND_TARGET_INITIAL, `held ${most} bytes, target ${SEND_TARGET_INITIAL}`);
  });

  test('a fast reader on a long path: the target grows past its start', async () => {
    // 2 x 20 ms each way: a window of 64 KiB per 80 ms round trip would bound the sender.
    const body = Buffer.alloc(8_000_000, 3);
    const { most, got } = await download(20, body, false);
    assert.ok(got.equals(body), 'every byte arrived in order');
    assert.ok(most > SEND_TARGET_INITIAL, `held at most ${most} bytes`);
  });
});

test('one download after another: the rings of a closed connection serve the next one, not new memory', async () => {
  // A burst of 5,000 HTTP answers each grew its send ring in fresh memory, 1.36 s of serve's main
  // thread (BENCHMARKS.md, s46h1); Linux's send path reuses what closed sockets gave back.
  const net = new SimNetwork({ seed: 9, virtualTime: true });
  const a = net.addHost({ ip: '10.0.0.1/24' });
  const b = net.addHost({ ip: '10.0.0.2/24', tcp: { sndBufSize: 4 << 20 } });
  const body = Buffer.alloc(200_000, 5);
  const ended: Promise<unknown>[] = [];
  b.createServer((s) => {
    ended.push(once(s, 'close'));
    s.on('data', () => {});
    s.end(body);
  }).listen(80);
  const fresh: number[] = [];
  const reused: number[] = [];
  for (let i = 0; i < 4; i++) {
    const before = ringPool.freshBytes;
    const reusedBefore = ringPool.reused;
    const c = a.connect(80, '10.0.0.2');
    await once(c, 'connect');
    const got = await collect(c);
    assert.ok(got.equals(body), 'every byte arrived in order');
    // The server's side is closed (its rings given back) before the next download begins.
    while (ended.length <= i) await net.sleep(1);
    await ended[i];
    fresh.push(ringPool.freshBytes - before);
    reused.push(ringPool.reused - reusedBefore);
  }
  net.close();
  // The first download's rings (both ends run in this one thread) may be new memory, or what the
  // cases before gave back; the send ring alone grows 64 KiB, then 128 KiB. From the second on,
  // each grows into what the one before gave back: no new memory beyond small rings' starts.
  const seen = `new bytes ${fresh.join(', ')}; buffers reused ${reused.join(', ')}`;
  for (let i = 1; i < fresh.length; i++) {
    assert.ok(fresh[i]! < 16 << 10, `download ${i + 1}: ${seen}`);
    assert.ok(reused[i]! >= 2, `download ${i + 1}: ${seen}`);
  }
});
