/**
 * Out-of-order data and the SACK scoreboard travel in transfer records between real worker threads:
 * a connection with holes in what it received, and a scoreboard of what the peer SACKed of what it
 * sent, moves host → worker → worker → host with both intact, by record (the codec fallback never
 * taken), and once the holes fill every byte arrives once, in order, both ways.
 * (`test/nic/record-lists.test.ts` covers the same lists in one thread, on virtual time.)
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import type { SwitchPort } from '../../src/link/memory-switch.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import { keyOf, setup, TEAM_IP, until, type WorkerTeamRig } from './worker-team-helpers.ts';

const BYTES = 12_000;
/** Byte offsets whose segments the peer's side loses while `holding`: two holes at the team. */
const PEER_HOLES = [3000, 9000];
/** And of the team's stream: one hole at the peer, which SACKs what follows it. */
const TEAM_HOLES = [4000];

function pattern(n: number, salt: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + salt + (i >> 8)) & 0xff;
  return b;
}

/**
 * Drops, in each direction of the peer's port, the TCP segments carrying any of `holes` bytes
 * (offsets into that direction's stream, from `base()`, its first sequence number) while `on()`,
 * and every TCP segment the peer sends while `mute()`. Returns how many TCP segments the peer's
 * port let out since.
 */
function loseHoles(
  port: SwitchPort,
  on: () => boolean,
  mute: () => boolean,
  out: { base: () => number; holes: number[] },
  into: { base: () => number; holes: number[] },
): () => number {
  const isTcp = (f: Uint8Array): boolean => f.length >= 54 && f[12] === 0x08 && f[13] === 0x00 && f[23] === 6;
  const carries = (f: Uint8Array, dir: { base: () => number; holes: number[] }): boolean => {
    const v = new DataView(f.buffer, f.byteOffset, f.byteLength);
    if (!isTcp(f)) return false;
    const ihl = (f[14]! & 0x0f) * 4;
    const t = 14 + ihl;
    const len = v.getUint16(16) - ihl - (f[t + 12]! >> 4) * 4;
    if (len <= 0) return false;
    const from = (v.getUint32(t + 4) - dir.base()) >>> 0;
    return dir.holes.some((h) => h >= from && h < from + len);
  };
  let passed = 0;
  const send = port.send.bind(port);
  port.send = (f) => {
    if ((mute() && isTcp(f)) || (on() && carries(f, out))) return true;
    if (isTcp(f)) passed++;
    return send(f);
  };
  const receive = port.handler!;
  port.handler = (f, info) => {
    if (on() && carries(f, into)) return;
    receive(f, info);
  };
  return () => passed;
}

/** Runs of out-of-order data (touching segments merged), as offsets into the stream from `base`. */
function runsOf(c: TcpConnection, base: number): [number, number][] {
  const out: [number, number][] = [];
  for (const seg of c.state.soft.ooo) {
    const from = (seg.seq - base) >>> 0;
    const last = out.at(-1);
    if (last !== undefined && last[1] === from) last[1] = from + seg.data.length;
    else out.push([from, from + seg.data.length]);
  }
  return out;
}

function sackedOf(c: TcpConnection, base: number): [number, number][] {
  return c.state.soft.sacked.map((r) => [(r.start - base) >>> 0, (r.end - base) >>> 0]);
}

function hostConn(rig: WorkerTeamRig, s: TcpSocket): TcpConnection | null {
  const k = keyOf(s);
  return rig.stack.tcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort) ?? null;
}

test('holes and a SACK scoreboard move host → worker → worker → host by record, then fill: every byte once', async (t) => {
  // Retransmission timeouts (which drop a scoreboard) well beyond the moves: the lists must travel,
  // not be rebuilt. The minimum is part of the state's cached part and travels with it.
  const rig = await setup(t, { seed: 47, tcp: { minRtoMs: 3000 } });
  const [nic0, nic1] = rig.nics;
  let server: TcpSocket | undefined;
  const atHost: Buffer[] = [];
  rig.host
    .createServer((s: TcpSocket) => {
      server = s;
      s.on('data', (d: Buffer) => atHost.push(d));
    })
    .listen(8080);
  const client = rig.peer.connect(8080, TEAM_IP);
  // The stream's short tail goes at once, as a Linux sender's does (Minshall's check lets it go
  // behind full segments); behind this stack's classic Nagle it waits for all in flight to be
  // acknowledged, which the holes held here never are, and only a loss probe sends it: once RACK
  // marks a hole lost at the first SACK (a zero reordering window) there is none, and the end of
  // the stream the lists must carry never reached the team.
  client.setNoDelay(true);
  const atPeer: Buffer[] = [];
  client.on('data', (d: Buffer) => atPeer.push(d));
  await once(client, 'connect');
  await until(
    rig,
    async () => server,
    (s) => s !== undefined,
  );
  const peerConn = [...rig.peer.stack.tcp.connections()].find((c) => c.localPort === client.localPort);
  assert.ok(peerConn);
  const peerState = peerConn.state.delegated;
  // Offsets count from the first data byte of each direction.
  const peerBase = (peerState.iss + 1) >>> 0;
  const teamBase = (peerState.irs + 1) >>> 0;
  let holding = true;
  let muted = false;
  // The handshake is over and neither side has written: no segment of the peer's is on its way.
  const seenBefore = hostConn(rig, server!)!.stats.segmentsIn;
  const passed = loseHoles(
    rig.peer.port,
    () => holding,
    () => muted,
    { base: () => peerBase, holes: PEER_HOLES },
    { base: () => teamBase, holes: TEAM_HOLES },
  );
  const fromPeer = pattern(BYTES, 1);
  const fromTeam = pattern(BYTES, 2);
  client.write(fromPeer);
  server!.write(fromTeam);

  const lists = (c: TcpConnection | null) => ({
    ooo: c ? runsOf(c, peerBase) : [],
    sacked: c ? sackedOf(c, teamBase) : [],
  });
  await until(
    rig,
    async () => lists(hostConn(rig, server!)),
    (l) => l.ooo.length === 2 && l.sacked.length === 1 && l.sacked[0]![1] === BYTES,
  );
  // From here on the peer says nothing more until the connection is back in the host (on a loaded
  // machine a move can take long enough for a resend of a hole, cut smaller, whose SACK would
  // change or rebuild what must travel): the lists at the end are what the records carried. What
  // it sent before is let through first: the lists are read once the host's connection has run
  // as many segments as the peer's port let out. Two reads 50 ms apart that agreed stood for
  // that, and at load 36-40 a SACK the peer sent before the mute, still on its way through a
  // worker, came after them and moved the scoreboard's edge during the moves (4344 read, 4324
  // after). At least as many: a frame the switch floods reaches the host through both members.
  muted = true;
  const seen = await until(
    rig,
    async () => hostConn(rig, server!)!.stats.segmentsIn - seenBefore,
    (n) => n >= passed(),
    { everyMs: 50 },
  );
  assert.ok(seen >= passed(), `the host ran ${seen} of the ${passed()} segments the peer's port let out`);
  const before = lists(hostConn(rig, server!));
  assert.equal(before.ooo.length, 2, `two runs of out-of-order data: ${JSON.stringify(before)}`);
  assert.equal(before.ooo.at(-1)![1], BYTES, 'the second run reaches the end of the stream');
  assert.deepEqual(before.sacked.length, 1, 'the peer SACKed what follows the team-side hole');
  assert.ok(before.sacked[0]![0] > TEAM_HOLES[0]!);

  const key = keyOf(server!);
  assert.equal((await rig.manager.offload([key], nic0!)).moved.length, 1, 'host → worker 0');
  assert.equal((await rig.manager.move([key], nic0!, nic1!)).moved.length, 1, 'worker 0 → worker 1');
  assert.equal((await rig.manager.upload([key])).moved.length, 1, 'worker 1 → host');
  const back = hostConn(rig, server!);
  assert.ok(back, 'in the host again');
  assert.deepEqual(lists(back), before, 'the same holes and the same scoreboard after three moves');

  muted = false;
  holding = false;
  const whole = (parts: Buffer[]) => parts.reduce((n, b) => n + b.length, 0) >= BYTES;
  await until(
    rig,
    async () => whole(atHost) && whole(atPeer),
    (done) => done,
    { tries: 1500 },
  );
  assert.ok(Buffer.concat(atHost).equals(fromPeer), 'the team got the peer’s stream once, in order');
  assert.ok(Buffer.concat(atPeer).equals(fromTeam), 'the peer got the team’s stream once, in order');
  for (const nic of [nic0!, nic1!]) {
    assert.equal(nic.recordFallbacks, 0, `${nic.id}: every initiate by record`);
    const c = await nic.counters();
    assert.equal(c['nic.terminate.record-fallbacks'] ?? 0, 0, `${nic.id}: every terminate by record`);
  }
  client.end();
  server!.end();
  await once(client, 'close');
});
