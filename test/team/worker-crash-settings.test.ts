/**
 * A dead worker's connections keep their settings through the rebuild: what the host handed over
 * at install (the stack's TTL and buffer size, an application's noDelay and keepalive set before
 * the offload), what went with a move from worker to worker, and what the application set while
 * they ran there (posted to the worker as ops). A WorkerNic's salvage records once carried none,
 * and every rebuilt connection ran with the defaults.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import type { ConnKey } from '../../src/nic/nic.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { DEFAULT_TCP_CACHED, type TcpCached } from '../../src/state/tcp-state.ts';
import { keyOf, nextFailover, PEER_IP, setup } from './worker-team-helpers.ts';

const CONNS = 6;
/** Not the defaults, so a rebuild that fell back to them shows. */
const TCP: Partial<TcpCached> = { ttl: 33, sndBufSize: 3 << 20, maxRtoMs: 60_000, congestion: 'newreno' };

test("a killed worker's connections are rebuilt with the settings they ran with, not the defaults", {
  timeout: 60_000,
}, async (t) => {
  const rig = await setup(t, { seed: 41, heartbeatMs: 20, tcp: TCP });
  const [nic0, nic1] = rig.nics;
  rig.peer.createServer(() => {}).listen(80);
  const sockets: TcpSocket[] = [];
  for (let i = 0; i < CONNS; i++) {
    const s = rig.host.connect({ port: 80, host: PEER_IP });
    s.on('error', () => {});
    sockets.push(s);
  }
  await Promise.all(sockets.map((s) => once(s, 'connect')));
  const keys: ConnKey[] = sockets.map(keyOf);
  // 0, 1: set in the host, before any move. 2, 3: set while on the first worker. 4, 5: on the second.
  const set = (s: TcpSocket, idle: number): void => {
    s.setNoDelay(true);
    s.setKeepAlive(true, idle);
  };
  set(sockets[0]!, 5000);
  set(sockets[1]!, 5000);
  assert.equal((await rig.manager.offload(keys, nic0)).moved.length, CONNS);
  set(sockets[2]!, 6000);
  set(sockets[3]!, 6000);
  // Worker to worker: the host never holds the state, so the settings go with the handles.
  const moved = await rig.manager.move(keys, nic0!, nic1!);
  assert.equal(moved.moved.length, CONNS, JSON.stringify(moved.refused));
  assert.equal(rig.stack.counters.get('offload.handed'), CONNS, 'handed from worker to worker');
  set(sockets[4]!, 7000);
  set(sockets[5]!, 7000);
  // The ops reach the worker before the kill: the test is of what the host keeps, not of a race.
  await nic1!.query(keys);
  const failover = nextFailover(rig);
  await nic1!.kill();
  const f = await failover;
  assert.equal(f.nic, nic1!.id);
  assert.equal(f.cause, 'dead');
  assert.equal(f.connections, CONNS);
  assert.equal(f.lost, 0);
  assert.equal(rig.stack.counters.get('offload.rebuilt'), CONNS, 'rebuilt from hard state');
  // Rebuilt and placed on the survivor; taken back to read the states the rebuild made.
  const up = await rig.manager.upload(keys);
  assert.equal(up.moved.length, CONNS, JSON.stringify(up.refused));
  const idles = [5000, 5000, 6000, 6000, 7000, 7000];
  for (let i = 0; i < CONNS; i++) {
    const k = keys[i]!;
    const conn = [...rig.stack.tcp.connections()].find(
      (c) => c.localPort === k.localPort && c.remotePort === k.remotePort,
    );
    assert.ok(conn, `connection ${i} in the host`);
    const c = conn.state.cached;
    assert.equal(c.noDelay, true, `connection ${i}: noDelay`);
    assert.equal(c.keepAlive, true, `connection ${i}: keepalive`);
    assert.equal(c.keepIdleMs, idles[i], `connection ${i}: keepalive idle`);
    assert.equal(c.ttl, TCP.ttl, `connection ${i}: TTL`);
    assert.equal(c.sndBufSize, TCP.sndBufSize, `connection ${i}: send buffer`);
    assert.equal(c.maxRtoMs, TCP.maxRtoMs, `connection ${i}: RTO limit`);
    assert.equal(c.congestion, TCP.congestion, `connection ${i}: congestion control`);
    assert.equal(c.keepCount, DEFAULT_TCP_CACHED.keepCount, 'what no one set stays the default');
  }
  for (const s of sockets) s.destroy();
});
