/**
 * A WorkerNic's events reach their sockets a bounded number per turn of the main thread: one
 * message from a worker that made a thousand connections readable or writable once ran all their
 * sockets' refills in one turn (0.3-1.2 s under load), and the worker's death, heartbeats and the
 * team's timers waited behind them.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { EV_WRITABLE } from '../../src/nic/worker/protocol.ts';
import type { WorkerConnectionHandle, WorkerNic } from '../../src/nic/worker-nic.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { addWorkerHost, socketKey } from './worker-helpers.ts';

const N = 200;

describe('WorkerNic deliveries', () => {
  test('events for 200 connections at once reach their sockets at most 32 a turn, all of them, in order', {
    timeout: 60_000,
  }, async (t) => {
    const net = new SimNetwork({ seed: 7, virtualTime: false });
    const wh = addWorkerHost(net, { count: 1, capacity: N + 10 });
    t.after(() => {
      wh.close();
      net.close();
    });
    const peer = net.addHost({ ip: '10.0.0.2/24' });
    await Promise.all(wh.nics.map((n) => n.ready()));
    peer.createServer(() => {}).listen(80);
    const sockets: TcpSocket[] = [];
    for (let i = 0; i < N; i++) {
      const s = wh.host.connect({ port: 80, host: '10.0.0.2' });
      s.on('error', () => {});
      sockets.push(s);
    }
    await Promise.all(sockets.map((s) => (s.connecting ? new Promise((r) => s.once('connect', r)) : null)));
    t.after(() => {
      for (const s of sockets) s.destroy();
    });
    const nic = wh.nics[0] as WorkerNic;
    assert.equal((await wh.offload.offload(sockets.map(socketKey), nic)).moved.length, N);
    // Let what the offload itself delivered go by.
    await new Promise((r) => setTimeout(r, 50));
    const handles = (nic as unknown as { handles: (WorkerConnectionHandle | undefined)[] }).handles.filter(
      (h): h is WorkerConnectionHandle => h !== undefined,
    );
    assert.equal(handles.length, N);
    // Each socket's writable indication, counted per turn of the event loop: a marker immediate
    // runs once a turn (one queued in the check phase runs in the next).
    const order: TcpSocket[] = [];
    let inTurn = 0;
    const perTurn: number[] = [];
    for (const s of sockets) {
      const onWritable = s.onWritable.bind(s);
      s.onWritable = () => {
        order.push(s);
        inTurn++;
        onWritable();
      };
    }
    let marking = true;
    const mark = (): void => {
      perTurn.push(inTurn);
      inTurn = 0;
      if (marking) setImmediate(mark);
    };
    setImmediate(mark);
    // As one 'ev' message from the worker does: every handle told at once, in slot order.
    for (const h of handles) h._event(EV_WRITABLE, null);
    while (order.length < N) await new Promise((r) => setTimeout(r, 5));
    marking = false;
    await new Promise((r) => setImmediate(r));
    perTurn.push(inTurn);
    assert.equal(order.length, N, 'every socket told once');
    assert.ok(Math.max(...perTurn) <= 32, `at most 32 a turn, got ${Math.max(...perTurn)}`);
    assert.ok(perTurn.filter((n) => n > 0).length >= Math.ceil(N / 32), `${perTurn.join(',')}`);
    // In the order the events came.
    const bySocket = new Map(handles.map((h, i) => [i, h]));
    const slotOrder = sockets.map((s) => socketKey(s).localPort);
    const handleOrder = [...bySocket.values()].map((h) => h.localPort);
    assert.deepEqual(
      order.map((s) => socketKey(s).localPort),
      handleOrder,
      `delivered in the handles' order (${slotOrder.length})`,
    );
  });
});
