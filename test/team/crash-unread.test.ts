/**
 * A NIC dies holding a connection that ended there (TIME_WAIT) while its application had not read
 * all the peer sent: the peer's bytes were acknowledged (the peer believes them delivered), so the
 * socket must still hand every one of them to its reader, then end. The rebuild does not rebuild
 * such a connection (nothing is left to do on the wire); the unread bytes are in the receive ring
 * salvaged from the dead NIC. A connection CLOSED and let go at the NIC before it died (never
 * salvaged) and one in CLOSE_WAIT (rebuilt, as any live one) are the controls. On both kinds of
 * NIC: a worker thread killed, and a LocalNic crashed in the simulator.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { TestContext } from 'node:test';
import { describe, test } from 'node:test';
import type { Nic } from '../../src/nic/nic.ts';
import type { OffloadManager } from '../../src/offload/offload-manager.ts';
import type { Host } from '../../src/socket/host.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { TCP_STATE_NAMES, TcpStateId } from '../../src/state/tcp-state.ts';
import type { Team } from '../../src/team/team.ts';
import { PING_MS } from '../nic/worker-helpers.ts';
import { buildTeamRig } from './team-sim.ts';
import { keyOf, PEER_IP, setup, stateOn } from './worker-team-helpers.ts';

const BYTES = 20_000;

interface Rig {
  host: Host;
  peer: { createServer: Host['createServer'] };
  manager: OffloadManager;
  team: Team;
  nic: Nic;
  kill(): Promise<unknown> | undefined;
  sleep(ms: number): Promise<void>;
}

async function workerRig(t: TestContext): Promise<Rig> {
  const r = await setup(t, { seed: 41 });
  const nic = r.nics[0]!;
  return {
    host: r.host,
    peer: r.peer,
    manager: r.manager,
    team: r.team,
    nic,
    kill: () => nic.kill(),
    sleep: (ms) => r.net.sleep(ms),
  };
}

function localRig(t: TestContext): Promise<Rig> {
  const r = buildTeamRig({ seed: 41, nics: 2 });
  t.after(() => {
    r.host.close();
    r.net.close();
  });
  const nic = r.nics[0]!;
  return Promise.resolve({
    host: r.host,
    peer: r.peer,
    manager: r.manager,
    team: r.team,
    nic,
    kill: () => {
      nic.crash('test: crashed');
      return undefined;
    },
    sleep: (ms) => r.net.sleep(ms),
  });
}

function payload(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + (i >> 8)) & 0xff;
  return b;
}

/** The NIC's state of `s`'s connection, or null once it holds none. */
function stateAt(rig: Rig, s: TcpSocket): Promise<number | null> {
  return stateOn(rig.nic, s);
}

/** Waits (up to ~30 s of a loaded machine) for the worker to show the state. */
async function reach(rig: Rig, s: TcpSocket, want: TcpStateId | null): Promise<void> {
  let st = await stateAt(rig, s);
  for (let i = 0; i < 1500 && st !== want; i++) {
    await rig.sleep(20);
    st = await stateAt(rig, s);
  }
  const name = (x: number | null): string => (x === null ? 'none' : (TCP_STATE_NAMES[x] ?? String(x)));
  assert.equal(name(st), name(want));
}

/**
 * One connection from the team to the peer, offloaded to the NIC and paused there (its application
 * reads nothing); the peer sends BYTES then its FIN. `end`: the team's side closes before the peer
 * sends (TIME_WAIT at the NIC), after the peer's FIN (CLOSED, and the NIC lets go of it), or not
 * (CLOSE_WAIT).
 */
async function pausedWithData(rig: Rig, end: 'time-wait' | 'close-wait' | 'closed'): Promise<TcpSocket> {
  await rig.host.ping(PEER_IP, PING_MS);
  const data = payload(BYTES);
  let peerSide: TcpSocket | undefined;
  const accepted = new Promise<void>((resolve) => {
    rig.peer
      .createServer({ allowHalfOpen: true }, (p) => {
        peerSide = p;
        p.resume();
        resolve();
      })
      .listen({ port: 5000 });
  });
  const s = rig.host.connect({ port: 5000, host: PEER_IP, allowHalfOpen: true });
  s.pause();
  await once(s, 'connect');
  await accepted;
  const r = await rig.manager.offload([keyOf(s)], rig.nic);
  assert.equal(r.moved.length, 1, JSON.stringify(r.refused));
  if (end === 'time-wait') {
    const peerEnded = once(peerSide!, 'end');
    s.end();
    await peerEnded;
  }
  peerSide!.end(data);
  await reach(rig, s, end === 'time-wait' ? TcpStateId.TIME_WAIT : TcpStateId.CLOSE_WAIT);
  if (end === 'closed') {
    // Our FIN after the peer's: LAST_ACK, then CLOSED at the peer's acknowledgement.
    s.end();
    await reach(rig, s, null);
  }
  assert.equal(s.connection?.readableLength, BYTES, 'every byte waits unread in the receive ring');
  return s;
}

/** Kill the NIC, wait for its failover, then read the socket to its end. */
async function crashThenRead(rig: Rig, s: TcpSocket): Promise<void> {
  const errors: Error[] = [];
  s.on('error', (e) => errors.push(e));
  const failover = once(rig.team, 'failover');
  await rig.kill();
  await failover;
  await rig.team.settled();
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  const ended = new Promise<void>((resolve) => {
    s.on('end', resolve);
    s.on('close', resolve);
  });
  s.resume();
  await ended;
  assert.equal(errors[0] ?? null, null);
  const got = Buffer.concat(chunks);
  assert.equal(got.length, BYTES);
  assert.ok(got.equals(payload(BYTES)), 'the bytes as sent');
  s.destroy();
}

for (const [kind, make] of [
  ['a worker thread killed', workerRig],
  ['a LocalNic crashed', localRig],
] as const) {
  describe(kind, () => {
    test('a connection in TIME_WAIT its application had not read: every byte reaches the socket, then its end', async (t) => {
      const rig = await make(t);
      await crashThenRead(rig, await pausedWithData(rig, 'time-wait'));
    });

    test('control: a connection CLOSED and let go at the NIC, unread: every byte, then its end', async (t) => {
      const rig = await make(t);
      await crashThenRead(rig, await pausedWithData(rig, 'closed'));
    });

    test('control: a connection in CLOSE_WAIT, unread: rebuilt, every byte, then its end', async (t) => {
      const rig = await make(t);
      await crashThenRead(rig, await pausedWithData(rig, 'close-wait'));
    });
  });
}
