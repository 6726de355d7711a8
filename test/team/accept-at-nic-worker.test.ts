/**
 * The passive open answered in a WorkerNic's thread (OffloadManager.acceptAtNic): the worker that
 * holds a path to the peer answers the SYN with the host's ISN, installs the connection on shared
 * memory it allocates and hands it to the host, which makes the socket over it; no transfer places
 * it. Once born it is an ordinary offloaded connection: moved worker to worker, uploaded to the
 * host and rebuilt after the worker is killed, intact, over IPv4 and IPv6 alike (an IPv6 one under
 * the host's address handles, listed in the born arena by its addresses' bytes), and for a
 * listener on one IPv6 address as for a wildcard one.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, type TestContext, test } from 'node:test';
import { SeededRandom } from '../../src/core/random.ts';
import { RING_FLOOR_BYTES, ringUnderLoad, sendRingAtPlacement } from '../../src/nic/hard-state.ts';
import type { Nic } from '../../src/nic/nic.ts';
import { DEFAULT_RING } from '../../src/nic/worker-nic.ts';
import type { ServerHost } from '../../src/socket/tcp-server.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { TWO_32 } from '../../src/stack/address-table.ts';
import { parseIpv4 } from '../../src/wire/addr.ts';
import { WORKER_CASE_MS } from '../nic/worker-helpers.ts';
import { Echoing, echo, pattern } from './accept-at-nic-helpers.ts';
import {
  keyOf,
  nextFailover,
  PEER_IP,
  PEER_IP6,
  setup,
  TEAM_IP,
  TEAM_IP6,
  type WorkerTeamOptions,
  type WorkerTeamRig,
  within,
} from './worker-team-helpers.ts';

function ownerName(rig: WorkerTeamRig, s: TcpSocket): string {
  const o = rig.manager.ownerOf(keyOf(s));
  return o === 'host' ? 'host' : o === null ? 'none' : (o as Nic).id;
}

/**
 * How long an echo's bytes may take to come back whole, and a handshake to end, through workers on
 * a loaded machine. A 4 MB echo moved and uploaded mid-stream ran out a 20 s bound at load 34, still
 * moving (the peer with 260 KB in flight and 512 KB queued): the bound is for a stall, not a rate.
 */
const ECHO_MS = 60_000;
const CONNECT_MS = 30_000;

/** Wait (real time, up to 30 s: a loaded machine's workers are slow) until `ok()`, or fail naming `what`. */
async function until(rig: WorkerTeamRig, ok: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 3000 && !ok(); i++) await rig.net.sleep(10);
  assert.ok(ok(), `timed out waiting for ${what}`);
}

/** A team of two workers serving an echo on port 80, and a third connection born in one of them. */
async function bornInWorker(
  t: TestContext,
  seed: number,
  beforeBorn?: (rig: WorkerTeamRig) => Promise<void>,
  opts: Omit<WorkerTeamOptions, 'seed'> = {},
  bindOne = false,
) {
  // One ISN secret for the host and its workers, so a born connection's ISN can be checked.
  const rig = await setup(t, { seed, isnSecret: new SeededRandom(seed).fill(new Uint8Array(16)), ...opts });
  const to = opts.ip6 === true ? TEAM_IP6 : TEAM_IP;
  const connect = () => rig.peer.connect({ port: 80, host: to });
  rig.manager.acceptAtNic = true;
  // The rig's host is a plain Host: give it TeamHost's hook.
  (rig.host as ServerHost).listening = (l) => rig.manager.listenAtNics(l);
  const accepted: { socket: TcpSocket; owner: string }[] = [];
  const server = rig.host
    .createServer((s: TcpSocket) => {
      accepted.push({ socket: s, owner: ownerName(rig, s) });
      s.on('error', () => {});
      s.on('data', (d: Buffer) => s.write(d));
      s.on('end', () => s.end());
    })
    .listen(bindOne ? { port: 80, host: to } : { port: 80 });
  // Two connections accepted in the host (no worker has a path yet), one placed on each worker.
  const firsts = [connect(), connect()];
  await within(Promise.all(firsts.map((c) => once(c, 'connect'))), 30_000, 'first connects', rig);
  await until(rig, () => accepted.length >= 2, 'first accepts');
  assert.deepEqual(
    accepted.map((a) => a.owner),
    ['host', 'host'],
  );
  for (let i = 0; i < 2; i++) {
    const r = await rig.manager.offload([keyOf(accepted[i]!.socket)], rig.nics[i]);
    assert.equal(r.moved.length, 1, JSON.stringify(r.refused));
  }
  await beforeBorn?.(rig);
  const c = connect();
  await within(once(c, 'connect'), 30_000, 'the born connect', rig);
  await until(rig, () => accepted.length >= 3, 'the born accept');
  const born = accepted[2]!;
  assert.match(born.owner, /nic/, `owner at accept: ${born.owner}`);
  assert.equal(rig.stack.counters.get('offload.accept-at-nic'), 1);
  return { rig, accepted, server, firsts, c, born, connect };
}

/** The source port of a pure ACK (no SYN, FIN, RST, no payload) over IPv4 to port 80, else -1. */
function pureAckTo80(f: Uint8Array): number {
  if (f.length < 54 || f[12] !== 0x08 || f[13] !== 0x00 || f[23] !== 6) return -1;
  const ihl = (f[14]! & 15) * 4;
  const tcp = 14 + ihl;
  if (((f[tcp + 2]! << 8) | f[tcp + 3]!) !== 80) return -1;
  const doff = (f[tcp + 12]! >> 4) * 4;
  const payload = ((f[16]! << 8) | f[17]!) - ihl - doff;
  return f[tcp + 13] === 0x10 && payload === 0 ? (f[tcp]! << 8) | f[tcp + 1]! : -1;
}

describe('the passive open answered in a WorkerNic', () => {
  test('handshakes a worker ends in one turn reach the host as one born message, every connection intact', {
    timeout: WORKER_CASE_MS,
  }, async (t) => {
    const links: Echoing[] = [];
    const { rig, accepted, firsts, c } = await bornInWorker(t, 37, undefined, {
      wrapLink: (tap, i) => (links[i] = new Echoing(tap)),
      // A loaded machine's starved worker is not dead: this test is about its messages.
      deadAfterMs: 10_000,
    });
    // The handshakes' last ACKs of N new connects are held at the members' links, then handed to
    // the workers in one turn of this thread (one batch of frames, one turn of a worker's input).
    const N = 8;
    const ports = new Set<number>();
    const held: [Echoing, Uint8Array][] = [];
    for (const l of links) {
      l.drop = (f) => {
        if (!ports.has(pureAckTo80(f))) return false;
        held.push([l, f.slice()]);
        return true;
      };
    }
    const conns = [];
    for (let i = 0; i < N; i++) {
      const s = rig.peer.connect(80, TEAM_IP);
      ports.add(s.localPort!);
      conns.push(s);
    }
    await within(Promise.all(conns.map((s) => once(s, 'connect'))), CONNECT_MS, 'the connects', rig);
    await until(rig, () => new Set(held.map(([, f]) => pureAckTo80(f))).size === N, 'every ACK held');
    // The 'born' messages the host receives from the workers from here on.
    let posts = 0;
    for (const nic of rig.nics)
      nic.worker.on('message', (m: { t?: string }) => {
        if (m?.t === 'born') posts++;
      });
    const acceptedBefore = accepted.length;
    for (const l of links) l.drop = null;
    const members = new Set(held.map(([l]) => l)).size;
    for (const [l, f] of held.splice(0)) l.handler!(f);
    await until(rig, () => accepted.length >= acceptedBefore + N, 'the accepts');
    assert.ok(
      accepted.slice(acceptedBefore).every((a) => /nic/.test(a.owner)),
      'every one born at a worker',
    );
    // One message a worker that ended any of them (a message per connection: N).
    assert.equal(posts, members);
    const echoes = conns.map((s, i) => echo(s, pattern(20_000, i)));
    await within(Promise.all(echoes.map((e) => e.done)), ECHO_MS, 'the echoes', rig);
    for (let i = 0; i < N; i++)
      assert.ok(echoes[i]!.got().equals(pattern(20_000, i)), `connection ${i} intact`);
    for (const s of [...conns, c, ...firsts]) s.destroy();
  });

  test('a connection born in a worker holding closed connections’ blocks gets the ring a placement there would', {
    timeout: 60_000,
  }, async (t) => {
    // The host counts held-closed blocks in a NIC's load, and sizes a placed connection's rings by
    // it (ringUnderLoad): told of 2,000 (as WorkerNic tells its worker, 'held-closed'), the worker
    // must size a born one's by the same, the floor past 1,024, not by the two it runs. (Its
    // receive ring holds the window its SYN-ACK offered already, whatever the share: the send's.)
    const HELD = 2000;
    const { rig, born } = await bornInWorker(t, 31, async (rig) => {
      for (const nic of rig.nics) {
        (nic as unknown as { post(m: { t: 'held-closed'; n: number }): void }).post({
          t: 'held-closed',
          n: HELD,
        });
        await nic.counters(); // Its port is in order: the count is in once this is answered.
      }
    });
    const from = rig.nics.find((n) => n.id === born.owner)!;
    const h = from.handle(keyOf(born.socket))!;
    assert.equal(ringUnderLoad(DEFAULT_RING, HELD), RING_FLOOR_BYTES);
    assert.equal(h.sendRing.capacity, RING_FLOOR_BYTES, `send ring of ${h.sendRing.capacity} bytes`);
  });

  test("a connection born in a worker of serve's send placement gets the send ring an offload there would", {
    timeout: WORKER_CASE_MS,
  }, async (t) => {
    // serve places send rings at 128 KiB (sendPlacementRing): the size a grow would reach while the
    // NIC's share covers it (sendRingAtPlacement), filled by the socket at once. A born one got
    // ringUnderLoad's whole ring instead (256 KiB at a NIC's first 128, 64 pages touched by a
    // download where 32 do), and half the share past 256, grown a moment later.
    const PLACED = 128 << 10;
    const { rig, born, accepted } = await bornInWorker(t, 37, undefined, { sendPlacementRing: PLACED });
    const from = rig.nics.find((n) => n.id === born.owner)!;
    const h = from.handle(keyOf(born.socket))!;
    assert.equal(ringUnderLoad(DEFAULT_RING, 2), DEFAULT_RING, "the receive ring's share: the whole ring");
    assert.equal(sendRingAtPlacement(PLACED, DEFAULT_RING, 2), PLACED);
    assert.equal(h.sendRing.capacity, PLACED, `send ring of ${h.sendRing.capacity} bytes`);
    assert.equal(h.sendGrown, PLACED, 'its socket fills it at once, as a grown one');
    const offloaded = [0, 1].map((i) => rig.nics[i]!.handle(keyOf(accepted[i]!.socket))?.sendRing.capacity);
    assert.deepEqual(offloaded, [PLACED, PLACED], 'as the offloaded ones beside it');
  });

  test("a closed listener takes its half-open connections out of the workers' owner tables: no tuple stays held", {
    timeout: 60_000,
  }, async (t) => {
    const { rig, server, firsts, c } = await bornInWorker(t, 41);
    // The peer hears nothing from now on: its next SYN leaves a half-open connection in a worker.
    rig.peer.impair({ rx: { loss: 1 } });
    const half = rig.peer.connect(80, TEAM_IP);
    half.on('error', () => {});
    const team = parseIpv4(TEAM_IP);
    const peer = parseIpv4(PEER_IP);
    const held = () => rig.nics.some((n) => n.holds(team, 80, peer, half.localPort!));
    await until(rig, held, 'the half-open connection listed in a worker');
    // The worker's listener stops at once ('unlisten'); its half-open connection's 'closed' comes
    // after, deferred: it was not taken out then, and the tuple stayed held for ever (a SYN from
    // it, to a listener answered at the NICs again, left unanswered by the host).
    server.close();
    await until(rig, () => !held(), 'the tuple let go');
    for (const s of [half, c, ...firsts]) s.destroy();
  });
  test("the host never misses a worker's tuple: a read the worker's compaction of its owner table disturbs counts as held", {
    timeout: 60_000,
  }, async (t) => {
    const { rig, c, firsts, born } = await bornInWorker(t, 43);
    const nic = rig.nics.find((n) => n.id === born.owner)!;
    const k = keyOf(born.socket);
    assert.ok(nic.holds(k.localIp, k.localPort, k.remoteIp, k.remotePort));
    // The worker mid-compaction, as the host's thread sees it: an odd version. Read as "not held",
    // a SYN for a tuple the worker had just published was answered by the host too (two SYN-ACKs).
    const words = new Int32Array(nic.owners.sab);
    Atomics.add(words, 0, 1);
    const during = nic.holds(k.localIp, k.localPort, k.remoteIp, k.remotePort);
    Atomics.add(words, 0, 1);
    assert.ok(during, 'held while the worker compacts');
    for (const s of [c, ...firsts]) s.destroy();
  });
});

for (const v6 of [false, true]) {
  describe(`the passive open answered in a WorkerNic, over ${v6 ? 'IPv6' : 'IPv4'}`, () => {
    test(`a connection born in a worker carries data both ways, is moved to the other worker and uploaded intact; a closed listener stops the workers${v6 ? ' (a listener on one address)' : ''}`, {
      timeout: WORKER_CASE_MS,
    }, async (t) => {
      // Over IPv6 the listener is on one address (the other cases here take `::`): it reaches the
      // workers before any path names its address, and each worker's mirror takes it under the
      // host's handle from the bytes the spec carries (NicEngine.listen).
      const { rig, server, firsts, c, born, connect } = await bornInWorker(t, 31, undefined, { ip6: v6 }, v6);
      const key = keyOf(born.socket);
      assert.equal(key.remoteIp > TWO_32, v6, 'of the family it was asked in');
      if (v6) {
        const addrs = rig.stack.addrs!;
        assert.deepEqual([addrs.format(key.localIp), addrs.format(key.remoteIp)], [TEAM_IP6, PEER_IP6]);
      }
      // One ISN function per host: the worker's SYN-ACK carried the host's ISN for the tuple (read
      // later: ahead by 250 a millisecond, bounded generously for a loaded machine).
      const peerConn = [...rig.peer.stack.tcp.connections()].find((x) => x.localPort === c.localPort)!;
      const hostIss = rig.stack.tcp.isn.next(key.localIp, key.localPort, key.remoteIp, key.remotePort);
      const ahead = (hostIss - peerConn.state.delegated.irs) >>> 0;
      assert.ok(ahead < 250 * 60_000, `the host's ISN is ${ahead} past the worker's`);
      const from = rig.nics.find((n) => n.id === born.owner)!;
      const to = rig.nics.find((n) => n !== from)!;
      const out = pattern(4_000_000, 9);
      const e = echo(c, out);
      await until(rig, () => e.n() > 0, 'data back');
      const moved = await rig.manager.move([key], from, to);
      assert.equal(moved.moved.length, 1, JSON.stringify(moved.refused));
      assert.equal(ownerName(rig, born.socket), to.id);
      const up = await rig.manager.upload([key]);
      assert.equal(up.moved.length, 1, JSON.stringify(up.refused));
      assert.equal(ownerName(rig, born.socket), 'host');
      await within(e.done, ECHO_MS, 'the echo', rig);
      assert.ok(e.got().equals(out), 'echoed intact across the move and the upload');
      // Closed: no worker answers the port any more, and the host refuses it.
      const syns = async () => {
        let s = 0;
        for (const nic of rig.nics) s += (await nic.counters())['nic.listen.syn'] ?? 0;
        return s;
      };
      const before = await syns();
      assert.ok(before >= 1, `${before} SYNs answered in the workers`);
      server.close();
      const late = connect();
      const [err] = (await within(once(late, 'error'), 30_000, 'the refusal', rig)) as [
        NodeJS.ErrnoException,
      ];
      assert.equal(err.code, 'ECONNREFUSED');
      assert.equal(await syns(), before);
      for (const s of [c, ...firsts]) s.destroy();
    });
    test('a connection born in a worker survives the worker killed: rebuilt on the other from the memory the host holds', {
      timeout: WORKER_CASE_MS,
    }, async (t) => {
      const { rig, c, born } = await bornInWorker(t, 37, undefined, { ip6: v6 });
      const victim = rig.nics.find((n) => n.id === born.owner)!;
      const out = pattern(4_000_000, 11);
      const e = echo(c, out);
      await until(rig, () => e.n() > 0, 'data back');
      const failover = nextFailover(rig);
      await victim.kill();
      const f = await within(failover, 20_000, 'the failover', rig);
      assert.equal(f.nic, victim.id);
      assert.equal(f.lost, 0);
      await within(e.done, ECHO_MS, 'the echo', rig);
      assert.ok(e.got().equals(out), 'echoed intact across the rebuild');
      assert.notEqual(ownerName(rig, born.socket), victim.id);
    });
    test("a connection whose handshake ended in a worker killed before it told the host ('born') survives: adopted from the worker's arena and rebuilt", {
      timeout: WORKER_CASE_MS,
    }, async (t) => {
      // Word 1 arms the stop (not before: the setup's own connections are born as usual), word 0
      // says a worker reached it (WorkerNicTestSeams.stopBeforeBorn).
      const flag = new SharedArrayBuffer(8);
      const w = new Int32Array(flag);
      const {
        rig,
        accepted,
        c: c0,
        firsts,
        connect,
      } = await bornInWorker(t, 53, undefined, {
        seams: { stopBeforeBorn: flag },
        ip6: v6,
      });
      const before = accepted.length;
      Atomics.store(w, 1, 1);
      const c = connect();
      await within(once(c, 'connect'), CONNECT_MS, 'the connect', rig);
      await until(rig, () => Atomics.load(w, 0) === 1, 'a worker stopped before its born');
      // The peer is established; the host has heard nothing of it.
      assert.equal(accepted.length, before, 'not accepted yet');
      const { localIp: team, remoteIp: peer } = keyOf(accepted[0]!.socket);
      const victim = rig.nics.find((n) => n.holds(team, 80, peer, c.localPort!));
      assert.ok(victim, 'the worker that ended its handshake lists it');
      const failover = nextFailover(rig);
      await victim.kill();
      const f = await within(failover, 20_000, 'the failover', rig);
      assert.equal(f.nic, victim.id);
      assert.equal(f.lost, 0);
      await until(rig, () => accepted.length > before, 'the accept of the adopted connection');
      const adopted = accepted[before]!;
      assert.equal(adopted.socket.remotePort, c.localPort);
      assert.notEqual(ownerName(rig, adopted.socket), victim.id);
      const out = pattern(300_000, 13);
      const e = echo(c, out);
      await within(e.done, ECHO_MS, 'the echo', rig);
      assert.ok(e.got().equals(out), 'echoed intact after the rebuild');
      assert.equal(victim.adoptedAtDeath, 1, 'adopted from the arena');
      for (const s of [c, c0, ...firsts]) s.destroy();
    });
  });
}
