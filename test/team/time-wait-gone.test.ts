/**
 * A worker's connection that enters TIME_WAIT with nothing in its rings gives its shared block
 * back (nic-worker.ts giveBack; the host's handle lets go of it too): only its state is held for
 * the 60 s of TIME_WAIT, as Linux holds a small timewait sock. One with bytes its application has
 * not read keeps its block (the bytes are the application's). A connection whose block is gone
 * still crashes and moves cleanly: the salvage ends it from the hard state the host kept, a move
 * ends it at the worker and moves the rest of its batch.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { TestContext } from 'node:test';
import { test } from 'node:test';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { TCP_STATE_NAMES, TcpStateId } from '../../src/state/tcp-state.ts';
import { PING_MS } from '../nic/worker-helpers.ts';
import { keyOf, PEER_IP, setup, stateOn, type WorkerTeamRig } from './worker-team-helpers.ts';

const BYTES = 20_000;

function stateAt(rig: WorkerTeamRig, s: TcpSocket): Promise<number | null> {
  return stateOn(rig.nics[0]!, s);
}

/** Waits (up to ~30 s of a loaded machine) for the worker to show the state. */
async function reach(rig: WorkerTeamRig, s: TcpSocket, want: TcpStateId): Promise<void> {
  let st = await stateAt(rig, s);
  for (let i = 0; i < 1500 && st !== want; i++) {
    await rig.net.sleep(20);
    st = await stateAt(rig, s);
  }
  assert.equal(st === null ? 'none' : TCP_STATE_NAMES[st], TCP_STATE_NAMES[want]);
}

/**
 * `n` connections offloaded to the first worker. The first `closed` of them close at the team's
 * end first, then the peer's: TIME_WAIT at the worker; with `unread`, the peer sends that many
 * bytes before its FIN, which the paused sockets leave in their receive rings.
 */
async function connections(
  t: TestContext,
  n: number,
  closed: number,
  unread = 0,
  deadAfterMs?: number,
): Promise<{ rig: WorkerTeamRig; sockets: TcpSocket[] }> {
  const rig = await setup(t, { seed: 43, deadAfterMs });
  await rig.host.ping(PEER_IP, PING_MS);
  const peers: TcpSocket[] = [];
  rig.peer
    .createServer({ allowHalfOpen: true }, (p: TcpSocket) => {
      p.resume();
      p.on('error', () => {});
      peers.push(p);
    })
    .listen({ port: 5000 });
  const sockets: TcpSocket[] = [];
  for (let i = 0; i < n; i++) {
    const s = rig.host.connect({ port: 5000, host: PEER_IP, allowHalfOpen: true });
    if (unread > 0) s.pause();
    sockets.push(s);
    await once(s, 'connect');
  }
  while (peers.length < n) await rig.net.sleep(10);
  const r = await rig.manager.offload(sockets.map(keyOf), rig.nics[0]!);
  assert.equal(r.moved.length, n, JSON.stringify(r.refused));
  for (let i = 0; i < closed; i++) {
    const peerEnded = once(peers[i]!, 'end');
    sockets[i]!.end();
    await peerEnded;
    if (unread > 0) peers[i]!.end(Buffer.alloc(unread, 9));
    else peers[i]!.end();
    await reach(rig, sockets[i]!, TcpStateId.TIME_WAIT);
  }
  return { rig, sockets };
}

test('connections entering TIME_WAIT with empty rings give their blocks back', async (t) => {
  const { rig } = await connections(t, 3, 3);
  const c = await rig.nics[0]!.counters();
  assert.equal(c['nic.time-wait.given'], 3);
  assert.equal(c['nic.time-wait.blocks'], 0);
});

test('a connection in TIME_WAIT with unread bytes keeps its block, and the socket reads them all', async (t) => {
  const { rig, sockets } = await connections(t, 1, 1, BYTES);
  const s = sockets[0]!;
  assert.equal(s.connection?.readableLength, BYTES, 'unread in the receive ring');
  const c = await rig.nics[0]!.counters();
  assert.equal(c['nic.time-wait.given'] ?? 0, 0);
  assert.equal(c['nic.time-wait.blocks'], 1);
  assert.equal(c['nic.time-wait.unread'], 1);
  let got = 0;
  s.on('data', (b: Buffer) => {
    got += b.length;
  });
  const ended = once(s, 'end');
  s.resume();
  await ended;
  assert.equal(got, BYTES);
});

test('a worker dies holding a connection in TIME_WAIT whose block is gone: ended, nothing lost', async (t) => {
  const { rig, sockets } = await connections(t, 2, 1);
  assert.equal((await rig.nics[0]!.counters())['nic.time-wait.given'], 1);
  const errors: Error[] = [];
  for (const s of sockets) s.on('error', (e) => errors.push(e));
  const failover = once(rig.team, 'failover');
  await rig.nics[0]!.kill();
  const [rec] = (await failover) as [{ lost: number; connections: number }];
  await rig.team.settled();
  assert.equal(rec.connections, 2, 'both salvaged from the dead worker');
  assert.equal(rec.lost, 0, 'neither lost');
  assert.deepEqual(errors, []);
  // The live one still runs where the failover put it.
  const echoed = once(sockets[1]!, 'drain');
  sockets[1]!.write(Buffer.alloc(1 << 20, 1));
  await echoed;
});

test('a move of a connection in TIME_WAIT whose block is gone ends it there; the rest of the batch moves', async (t) => {
  const { rig, sockets } = await connections(t, 2, 1);
  assert.equal((await rig.nics[0]!.counters())['nic.time-wait.given'], 1);
  const r = await rig.manager.move(sockets.map(keyOf), rig.nics[0]!, rig.nics[1]!);
  assert.equal(r.moved.length, 1);
  assert.equal(r.moved[0]!.localPort, keyOf(sockets[1]!).localPort);
  assert.equal(await stateAt(rig, sockets[0]!), null, 'the first worker holds neither any more');
  assert.equal((await rig.nics[0]!.counters())['nic.terminate.time-wait-dropped'], 1);
});

test('the count of TIME_WAIT connections holding their blocks falls as they leave the worker', async (t) => {
  // Kept as slots enter TIME_WAIT and leave it, not found by a walk of the slots per request.
  // A worker busy on a loaded machine is not dead (this counts, it does not fail over).
  const { rig, sockets } = await connections(t, 2, 1, BYTES, 30_000);
  let c = await rig.nics[0]!.counters();
  assert.equal(c['nic.time-wait.blocks'], 1);
  assert.equal(c['nic.time-wait.unread'], 1);
  const r = await rig.manager.move(sockets.map(keyOf), rig.nics[0]!, rig.nics[1]!);
  assert.ok(r.moved.length >= 1, JSON.stringify(r.refused));
  assert.equal(await stateAt(rig, sockets[0]!), null, 'the first worker holds neither any more');
  c = await rig.nics[0]!.counters();
  assert.equal(c['nic.time-wait.blocks'], 0, 'none left holding a block');
  assert.equal(c['nic.time-wait.unread'], 0);
  const d = await rig.nics[1]!.counters();
  // A terminate ends a TIME_WAIT; one carried on would be counted where it went.
  assert.equal(d['nic.time-wait.blocks'], r.moved.length - 1, `moved ${r.moved.length}`);
});
