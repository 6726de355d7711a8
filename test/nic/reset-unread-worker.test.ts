/**
 * The WorkerNic case of reset-unread-mem.test.ts: a paused socket keeps what it has not read after
 * the peer's reset, and with it the shared block its connection ran on in the worker, whose slot
 * the close freed. That block must stay counted by the NIC that owns it until the data is read or
 * the socket destroyed (WorkerNic's `heldClosed`), as Linux keeps a closed socket's queued data
 * charged: a place of the NIC's capacity each (its load, the worker's room: installs past it are
 * refused) and its bytes in the NIC's ring budget. Uncounted, paused readers of reset connections
 * held blocks in any number.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { addWorkerHost, socketKey } from './worker-helpers.ts';

const HELD = 20;
const CAPACITY = 24;

test('a worker connection closed with bytes unread keeps its block counted by the NIC until read or destroyed', {
  timeout: 60_000,
}, async (t) => {
  const net = new SimNetwork({ seed: 37, virtualTime: false });
  const wh = addWorkerHost(net, { count: 1, capacity: CAPACITY });
  t.after(() => {
    wh.close();
    net.close();
  });
  const nic = wh.nics[0]!;
  const peer = net.addHost({ ip: '10.0.0.2/24' });
  await Promise.all(wh.nics.map((n) => n.ready()));
  const served: TcpSocket[] = [];
  peer
    .createServer((s) => {
      s.on('error', () => {});
      served.push(s);
    })
    .listen(80);
  const open = async (n: number): Promise<TcpSocket[]> => {
    const out: TcpSocket[] = [];
    for (let i = 0; i < n; i++) {
      const s = wh.host.connect({ port: 80, host: '10.0.0.2' });
      s.on('error', () => {});
      out.push(s);
    }
    await Promise.all(out.map((s) => (s.connecting ? new Promise((r) => s.once('connect', r)) : null)));
    return out;
  };
  const socks = await open(HELD);
  t.after(() => {
    for (const s of socks) s.destroy();
  });
  for (const s of socks) s.once('data', () => s.pause());
  const r = await wh.offload.offload(socks.map(socketKey), nic);
  assert.equal(r.moved.length, HELD);
  for (let i = 0; i < 100 && served.length < HELD; i++) await net.sleep(10);
  assert.equal(served.length, HELD);
  for (const s of served) s.write(Buffer.alloc(400_000, 7));
  const unread = (): number => socks.reduce((n, s) => n + (s.connection?.readableLength ?? 0), 0);
  for (let i = 0; i < 200 && unread() < HELD * 100_000; i++) await net.sleep(20);
  assert.ok(unread() > HELD * 100_000, `${unread()} bytes unread before the reset`);

  for (const s of served) s.resetAndDestroy();
  for (let i = 0; i < 200 && nic.heldAfterClose.count < HELD; i++) await net.sleep(20);
  assert.equal(wh.offload.keysOn(nic).length, 0, 'the resets closed every connection in the worker');
  const held = unread();
  assert.ok(held > HELD * 100_000, `${held} bytes still unread after the reset`);
  // Their blocks stay the NIC's to count: each whole (record and both rings), so at least what is unread.
  assert.equal(nic.heldAfterClose.count, HELD);
  assert.ok(nic.heldAfterClose.bytes >= held, `${nic.heldAfterClose.bytes} bytes held, ${held} unread`);
  assert.equal(nic.load, HELD);
  assert.equal((await nic.counters())['nic.held-closed'], HELD);

  // At the limit: the worker takes no more than its capacity less the blocks held.
  const late = await open(10);
  t.after(() => {
    for (const s of late) s.destroy();
  });
  const more = await wh.offload.offload(late.map(socketKey), nic);
  assert.equal(more.moved.length, CAPACITY - HELD);
  assert.equal(more.refused.length, 10 - (CAPACITY - HELD));
  assert.ok(
    more.refused.every((x) => x.status === 'no-resources'),
    JSON.stringify(more.refused),
  );

  // Reading half of the sockets to the end: their blocks are no longer counted.
  const readers = socks.slice(0, HELD / 2);
  const ended = readers.map((s) => new Promise((res) => s.once('close', res)));
  for (const s of readers) s.resume();
  await Promise.all(ended);
  assert.equal(nic.heldAfterClose.count, HELD / 2);
  assert.equal(nic.load, HELD / 2 + CAPACITY - HELD);

  // Destroyed unread: nothing stays counted, and the worker has its room back.
  for (const s of socks.slice(HELD / 2)) s.destroy();
  await net.sleep(50);
  assert.deepEqual(nic.heldAfterClose, { count: 0, bytes: 0 });
  const rest = late.filter((s) => wh.offload.ownerOf(socketKey(s)) === 'host');
  const again = await wh.offload.offload(rest.map(socketKey), nic);
  assert.equal(again.moved.length, rest.length);
});
