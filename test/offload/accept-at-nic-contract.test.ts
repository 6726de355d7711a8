/**
 * Accept-at-NIC goes through the Nic contract only (`listen?`, `holds?`): a target of any kind
 * that implements them is asked to answer a host listener's SYNs, and the host leaves a SYN whose
 * four-tuple such a target holds. Before, the manager chose by the NIC's class (LocalNic,
 * WorkerNic) and read a WorkerNic's owner table, so another kind of target was never asked.
 *
 * And the race between the host and a NIC on another thread for one SYN (the peer's SYN waiting
 * on the main thread while a worker answers its resend, or one SYN reaching both): each side
 * publishes its half-open tuple before it answers and looks at the other's after, so no
 * interleaving lets both answer. The interleavings are played here in one thread, each side's
 * step run at the moment the other looks.
 *
 * And a NIC the manager forgets (a team member's dead NIC a restart replaced) stops answering and
 * frees its word of the listeners' gates for the next one.
 */
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { test } from 'node:test';
import { SeededRandom } from '../../src/core/random.ts';
import type { ConnKey, Nic, NicBornHooks, NicListenHooks, NicListenSpec } from '../../src/nic/nic.ts';
import { NicEngine } from '../../src/nic/nic-engine.ts';
import { OwnerTable } from '../../src/nic/worker/owner-table.ts';
import { OffloadManager } from '../../src/offload/offload-manager.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { AddressTable, ANY6 } from '../../src/stack/address-table.ts';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import type { ConnectionHandle } from '../../src/stack/tcp/tcp-types.ts';
import { DEFAULT_TCP_CACHED } from '../../src/state/tcp-state.ts';
import { buildTeamHost } from '../../src/team/team-host.ts';
import { parseIpv6 } from '../../src/wire/addr.ts';
import { TcpFlag } from '../../src/wire/tcp.ts';
import { dataOf } from '../helpers/segments.ts';

/** A target that is neither a LocalNic nor a WorkerNic: it records what it is asked to answer. */
class ContractNic extends EventEmitter {
  readonly id = 'contract';
  readonly capacity = 8;
  readonly load = 0;
  readonly linkUp = true;
  readonly death = null;
  readonly inProcess = true;
  readonly useRecords = false;
  readonly listens: { spec: NicListenSpec; hooks: NicListenHooks }[] = [];
  stops = 0;
  /** Local port whose four-tuples it claims to hold (-1: none). */
  holding = -1;
  listen(spec: NicListenSpec, hooks: NicListenHooks): () => void {
    this.listens.push({ spec, hooks });
    return () => {
      this.stops++;
    };
  }
  holds(_li: number, lp: number, _ri: number, _rp: number): boolean {
    return lp === this.holding;
  }
}

/**
 * A worker that takes the host's SYN in the host's window: at the host's first look at what it
 * holds, it has published nothing yet, and its whole step runs right then (it reads the host's
 * claims, finds none, answers and publishes).
 */
class RacingNic extends ContractNic {
  answered = 0;
  private held = false;
  private stepped = false;
  override holds(li: number, lp: number, ri: number, rp: number): boolean {
    if (lp !== 80) return false;
    const before = this.held;
    if (!this.stepped) {
      this.stepped = true;
      const claims = new OwnerTable(this.listens[0]!.spec.claims);
      if (!claims.has(li, lp, ri, rp)) {
        this.answered++;
        this.held = true;
      }
    }
    return before;
  }
}

/** A host and a peer, the host's manager answering listeners at `nic` alone (accept-at-NIC on). */
function rig(seed: number, nic: ContractNic, ip6?: string) {
  const net = new SimNetwork({ seed });
  const host = net.addHost({ ip: '10.0.0.1/24', ...(ip6 ? { ip6 } : {}), name: 'host' });
  const peer = net.addHost({ ip: '10.0.0.2/24', name: 'peer' });
  const m = new OffloadManager({
    stack: host.stack,
    nics: [nic as unknown as Nic],
    policy: { mode: 'manual' },
  });
  m.acceptAtNic = true;
  return { net, host, peer, m };
}

test('a target of any kind answers through listen/holds: asked to listen, its held tuples left to it, stopped with the listener', async () => {
  const fake = new ContractNic();
  const { net, host, peer, m } = rig(31, fake);
  const accepted: TcpConnection[] = [];
  const l = host.stack.tcp.listen({ port: 80 }, (conn) => {
    accepted.push(conn);
    return true;
  });
  const stop = m.listenAtNics(l);
  assert.ok(stop !== null, 'a NIC answers');
  assert.equal(fake.listens.length, 1, 'the target is asked to answer the listener');
  const spec = fake.listens[0]!.spec;
  assert.equal(spec.port, 80);
  assert.equal(spec.word, 3, 'its word of the gate: the first NIC');
  assert.equal(spec.gate, l.gate, "the listener's gate is shared with it");

  // While it holds the four-tuple, the host leaves the SYN to it: no answer, counted.
  fake.holding = 80;
  const c = peer.connect(80, '10.0.0.1');
  c.on('error', () => {});
  await net.sleep(200);
  assert.ok(host.stack.counters.get('tcp.listen.syn-held-elsewhere') >= 1, 'the host saw it held');
  assert.equal(accepted.length, 0, 'not answered in the host');
  // Let go, the peer's SYN sent again is the host's.
  fake.holding = -1;
  await once(c, 'connect');
  while (accepted.length < 1) await net.sleep(1);

  stop!();
  assert.equal(fake.stops, 1, 'stopped with the listener');
  assert.equal(l.heldElsewhere, null);
  m.close();
  net.close();
});

test("the host's side of the race: a NIC that answers between the host's look and its claim has the SYN to itself", async () => {
  const nic = new RacingNic();
  const { net, host, peer, m } = rig(32, nic);
  const l = host.stack.tcp.listen({ port: 80 }, () => true);
  m.listenAtNics(l);
  const c = peer.connect(80, '10.0.0.1');
  c.on('error', () => {});
  await net.sleep(100);
  assert.equal(nic.answered, 1, 'the NIC answered');
  assert.equal(host.stack.counters.get('tcp.listen.syn-held-late'), 1, 'the host saw it after its claim');
  assert.equal(l.pending, 0, 'and made no half-open connection of its own: one SYN-ACK only');
  const k: ConnKey = { localIp: 0x0a000001, localPort: 80, remoteIp: 0x0a000002, remotePort: c.localPort! };
  const claims = new OwnerTable(nic.listens[0]!.spec.claims);
  assert.equal(claims.has(k.localIp, k.localPort, k.remoteIp, k.remotePort), false, 'its claim taken back');
  m.close();
  net.close();
});

test("the host's side of the race for a cookie: a NIC that answers between the host's look and its cookie has the SYN to itself", async () => {
  const nic = new RacingNic();
  const { net, host, peer, m } = rig(34, nic);
  const l = host.stack.tcp.listen({ port: 80, backlog: 1 }, () => true);
  m.listenAtNics(l);
  // The backlog is full (the NICs' half-open connections count in [1]): the host would answer
  // with a cookie, and a peer on it, meeting the NIC's SYN-ACK too, would be reset (see
  // Listeners.sendCookieUnlessHeld).
  Atomics.store(l.gate!, 1, 1);
  const c = peer.connect(80, '10.0.0.1');
  c.on('error', () => {});
  await net.sleep(100);
  assert.equal(nic.answered, 1, 'the NIC answered');
  assert.equal(host.stack.counters.get('tcp.syncookies.sent'), 0, 'no cookie: one SYN-ACK only');
  assert.equal(host.stack.counters.get('tcp.listen.syn-held-late'), 1, 'the host saw it after raising [2]');
  m.close();
  net.close();
});

test('an ACK whose four-tuple a NIC holds is left to it: the listener neither resets it nor takes it for a cookie', async () => {
  const fake = new ContractNic();
  const { net, host, peer, m } = rig(35, fake);
  const l = host.stack.tcp.listen({ port: 80 }, () => true);
  m.listenAtNics(l);
  // The peer's SYN, as it sent it: its Ethernet header and ISN for the ACK made below.
  let syn: Uint8Array | null = null;
  const send = peer.port.send.bind(peer.port);
  peer.port.send = (f: Uint8Array) => {
    if (syn === null && f.length >= 54 && f[23] === 6 && f[47] === TcpFlag.SYN) syn = f.slice();
    return send(f);
  };
  fake.holding = 80;
  const c = peer.connect(80, '10.0.0.1');
  c.on('error', () => {});
  while (syn === null) await net.sleep(1);
  const s: Uint8Array = syn;
  const k: ConnKey = { localIp: 0x0a000001, localPort: 80, remoteIp: 0x0a000002, remotePort: c.localPort! };
  const isn = new DataView(s.buffer, s.byteOffset).getUint32(38);
  // What a worker whose half-open connection gave way passes up (NicEngine.givesWay): the peer's
  // ACK and request on another member's SYN-ACK, whose connection that member holds. The
  // listener's RST to it (seq = its ack) is exactly what would reset the peer there.
  const ack = (): Uint8Array => {
    const ipPkt = dataOf(k, (isn + 1) >>> 0, 0x12345679, Buffer.from('GET / HTTP/1.0\r\n\r\n'));
    const f = new Uint8Array(14 + ipPkt.length);
    f.set(s.subarray(0, 14));
    f.set(ipPkt, 14);
    return f;
  };
  peer.port.send(ack());
  await net.sleep(50);
  assert.equal(host.stack.counters.get('tcp.listen.ack-held-elsewhere'), 1, 'the host saw it held');
  assert.equal(host.stack.counters.get('tcp.rst.out.listen-ack'), 0, 'no RST to a tuple a NIC holds');
  // Held by no one, the same ACK draws the listener's RST, Linux's answer to an ACK it cannot place.
  fake.holding = -1;
  peer.port.send(ack());
  await net.sleep(50);
  assert.equal(host.stack.counters.get('tcp.rst.out.listen-ack'), 1, 'a stray ACK is still reset');
  c.destroy();
  m.close();
  net.close();
});

/**
 * A NIC answering port 81 for a host played here, with one SYN from the peer. `claim`: the host
 * takes the SYN whole between the NIC's look (nothing claimed) and its publication. `list`: what
 * the NIC's publication answers (false: its table full). `cookie`: the host sends a cookie in
 * that window instead (raises [2]). Returns what it published and counted.
 */
/** A team of one LocalNic and a peer; a first connection, placed on the NIC, gives it the path. */
async function nicWithPath(seed: number) {
  const net = new SimNetwork({ seed });
  const peer = net.addHost({ ip: '10.0.0.2/24', name: 'peer', impair: { delayMs: 1 } });
  const team = buildTeamHost(net, { ip: '10.0.0.1/24', nics: 1, policy: { mode: 'manual' } });
  const nic = team.nics[0]!;
  const firsts: TcpSocket[] = [];
  team.createServer((s: TcpSocket) => firsts.push(s)).listen(80);
  await peer.ping('10.0.0.1');
  const first = peer.connect(80, '10.0.0.1');
  await once(first, 'connect');
  while (firsts.length < 1) await net.sleep(1);
  const k0: ConnKey = {
    localIp: 0x0a000001,
    localPort: 80,
    remoteIp: 0x0a000002,
    remotePort: first.localPort!,
  };
  assert.equal((await team.manager.offload([k0], nic)).moved.length, 1);
  return { net, peer, team, nic };
}

async function raceAtNic(claim: boolean, list: boolean, cookie = false) {
  const { net, peer, team, nic } = await nicWithPath(33);

  // The NIC answers port 81 for a host played here: it looks (nothing claimed), then the host takes
  // the SYN whole before the NIC publishes its half-open tuple.
  let hostClaimed = false;
  const published: boolean[] = [];
  const gate = new Int32Array(new SharedArrayBuffer(4 * 8));
  const stop = nic.listen(
    {
      ip: 0x0a000001,
      port: 81,
      v6Only: false,
      backlog: 16,
      cached: { ...DEFAULT_TCP_CACHED },
      gate,
      word: 3,
      claims: OwnerTable.create(16),
    },
    {
      taken: () => false,
      halfOpen: () => {},
      accepted: () => true,
      born: () => true,
      publish: (_conn, open) => {
        published.push(open);
        return !open || list;
      },
      claimed: () => {
        const seen = hostClaimed;
        hostClaimed = claim;
        if (cookie) Atomics.store(gate, 2, 1);
        return seen;
      },
    },
  );
  assert.ok(stop !== null);
  const c = peer.connect(81, '10.0.0.1');
  c.on('error', () => {});
  await net.sleep(20);
  const r = {
    published,
    synAcks: nic.engine.counters.get('nic.listen.syn'),
    heldLate: nic.engine.counters.get('tcp.listen.syn-held-late'),
    unlisted: nic.engine.counters.get('tcp.listen.syn-unlisted'),
    conn: nic.engine.tcp.lookup(0x0a000001, 81, 0x0a000002, c.localPort!),
    halfOpen: Atomics.load(gate, 1) + Atomics.load(gate, 3),
  };
  stop!();
  team.close();
  net.close();
  return r;
}

test("the NIC's side of the race: a host that claims between the NIC's look and its publication has the SYN to itself", async () => {
  const r = await raceAtNic(true, true);
  assert.deepEqual(r.published, [true, false], 'published before its answer, taken back');
  assert.equal(r.synAcks, 0, 'the NIC sent no SYN-ACK');
  assert.equal(r.heldLate, 1);
  assert.equal(r.conn, undefined);
  assert.equal(r.halfOpen, 0, 'no half-open counted');
});

test("the NIC's side of the race for a cookie: a host that sends one between the NIC's look and its publication has the SYN to itself", async () => {
  const r = await raceAtNic(false, true, true);
  assert.deepEqual(r.published, [true, false], 'published before its answer, taken back');
  assert.equal(r.synAcks, 0, 'the NIC sent no SYN-ACK (its ISS is not the cookie)');
  assert.equal(r.heldLate, 1);
  assert.equal(r.conn, undefined);
  assert.equal(r.halfOpen, 0, 'no half-open counted');
});

test('a NIC whose table cannot list its half-open tuple leaves the SYN unanswered: the host could not see it', async () => {
  const r = await raceAtNic(false, false);
  assert.deepEqual(r.published, [true, false], 'tried before its answer, taken back');
  assert.equal(r.synAcks, 0, 'the NIC sent no SYN-ACK');
  assert.equal(r.unlisted, 1);
  assert.equal(r.heldLate, 0, 'nobody claimed it');
  assert.equal(r.conn, undefined);
  assert.equal(r.halfOpen, 0, 'no half-open counted');
});

test('a NIC that lists its half-open tuple, unclaimed, answers the SYN', async () => {
  const r = await raceAtNic(false, true);
  // Told again as it is established (the peer's ACK), as a half-open connection ends either way.
  assert.deepEqual(r.published, [true, false]);
  assert.equal(r.synAcks, 1, 'one SYN-ACK from the NIC');
  assert.equal(r.unlisted + r.heldLate, 0);
  assert.ok(r.conn !== undefined, 'its connection lives');
});

test('a NIC whose connections get their rings at accept makes half-open ones on the least rings, which grow for data that comes before', async () => {
  const { net, peer, team, nic } = await nicWithPath(35);
  const cached = { ...DEFAULT_TCP_CACHED };
  const halfOpen: number[] = [];
  const got: { conn: TcpConnection | null } = { conn: null };
  const stop = nic.listen(
    {
      ip: 0x0a000001,
      port: 81,
      v6Only: false,
      backlog: 16,
      cached,
      gate: new Int32Array(new SharedArrayBuffer(4 * 8)),
      word: 3,
      claims: OwnerTable.create(16),
    },
    {
      taken: () => false,
      halfOpen: () => {},
      // Kept on the rings it was made with: this NIC puts it on none of its own.
      accepted: (conn) => {
        got.conn = conn;
        return true;
      },
      born: () => true,
      publish: (conn, open) => {
        if (open) {
          const d = conn.state.delegated;
          halfOpen.push(
            d.sendBuffer.capacity,
            d.recvBuffer.capacity,
            d.sendBuffer.maxCapacity,
            d.recvBuffer.maxCapacity,
          );
        }
        return true;
      },
      claimed: () => false,
      ringsAtAccept: true,
    },
  );
  const c = peer.connect(81, '10.0.0.1');
  c.on('error', () => {});
  await once(c, 'connect');
  const out = Buffer.alloc(20_000);
  for (let i = 0; i < out.length; i++) out[i] = (i * 13 + (i >> 9)) & 0xff;
  c.write(out);
  for (let i = 0; i < 200 && (got.conn?.state.delegated.recvBuffer.length ?? 0) < out.length; i++)
    await net.sleep(5);
  // Its bounds are the listener's; only the memory behind them waits for data (4 KiB each before).
  assert.deepEqual(halfOpen, [16, 16, cached.sndBufSize, cached.rcvBufSize]);
  const recv = got.conn?.state.delegated.recvBuffer;
  assert.ok(recv !== undefined, 'accepted at the NIC');
  assert.equal(recv.length, out.length);
  assert.ok(Buffer.from(recv.toArray()).equals(out), 'the bytes intact in the grown ring');
  stop!();
  team.close();
  net.close();
});

/** A host with an IPv6 address too, its manager answering listeners at a ContractNic alone. */
function rig6(seed: number) {
  const fake = new ContractNic();
  return { fake, ...rig(seed, fake, 'fd00::1/64') };
}

test("a dual-stack listener reaches the NICs as `::`, and a connection born there under an address the host's table no longer holds is refused", async () => {
  const { fake, net, host, m } = rig6(35);
  const l = host.stack.tcp.listen({ ip: ANY6, port: 80 }, () => true);
  const taken: ConnectionHandle[] = [];
  l.acceptBorn = (h) => {
    taken.push(h);
    return true;
  };
  m.listenAtNics(l);
  const spec = fake.listens[0]!.spec;
  assert.equal(spec.ip, ANY6, 'the IPv6 wildcard');
  assert.equal(spec.v6Only, false, 'and IPv4 too, as the listener');
  // A worker's 'born' names an address the host's table let go as 0 (unpackKeys): no key of the
  // host's would name it, so it is refused (the worker resets it) before the listener sees it.
  const h = { localIp: 0, localPort: 80, remoteIp: 0, remotePort: 40000 } as ConnectionHandle;
  assert.equal(fake.listens[0]!.hooks.born(h), false);
  assert.equal(host.stack.counters.get('offload.accept-at-nic.unknown-address'), 1);
  assert.equal(taken.length, 0, 'the listener never saw it');
  assert.equal(m.ownerOf({ localIp: 0, localPort: 80, remoteIp: 0, remotePort: 40000 }), null);
  m.close();
  net.close();
});

test('a listener on one IPv6 address reaches the NICs with its bytes; a mirror table takes it under the host’s handle, or refuses a handle it holds for another address', () => {
  const { fake, net, host, m } = rig6(36);
  const own = host.stack.addrs.intern(parseIpv6('fd00::1'));
  const l = host.stack.tcp.listen({ ip: own, port: 80 }, () => true);
  host.stack.addrs.release(own);
  m.listenAtNics(l);
  const spec = fake.listens[0]!.spec;
  assert.equal(spec.ip, own, 'the host’s handle');
  assert.deepEqual([...spec.ipBytes!], [...parseIpv6('fd00::1')], 'and the address it names');

  // A worker's engine: its mirror still holds that handle for another address (the host reused
  // it while a path there kept the old one).
  const mirror = new AddressTable(new SeededRandom(1), { mirror: true });
  const engine = new NicEngine({
    id: 'mirror',
    link: net.switch.addPort({ name: 'mirror', mtu: 1500 }),
    clock: net.clock,
    random: net.random.fork(),
    addrs: mirror,
    toHost: () => {},
    indicate: () => {},
  });
  const hooks = fake.listens[0]!.hooks as unknown as NicBornHooks;
  assert.equal(mirror.internAt(parseIpv6('fd00::99'), 0, own), own);
  assert.equal(engine.listen(spec, hooks), null, 'refused: the handle names another address here');
  assert.equal(engine.counters.get('nic.listen.unknown-address'), 1);
  assert.equal(engine.tcp.listeners.has(80), false);
  assert.equal(engine.listen({ ...spec, ipBytes: undefined }, hooks), null, 'refused: no address given');
  assert.equal(mirror.refCount(own), 1, 'the refusals took nothing');
  mirror.release(own);
  // The old address gone: taken under the host's handle, held by the listener alone, and let go
  // with it.
  const stop = engine.listen(spec, hooks);
  assert.notEqual(stop, null);
  assert.equal(engine.tcp.listeners.find(own, 80)?.ip, own);
  assert.equal(mirror.find(parseIpv6('fd00::1'), 0), own);
  assert.equal(mirror.refCount(own), 1);
  stop!();
  assert.equal(mirror.refCount(own), 0);
  engine.close();
  m.close();
  net.close();
});

test('a NIC the manager forgets stops answering and gives its gate word to the next: a member replaced 70 times still answers, in a word of its own', () => {
  const first = new ContractNic();
  const { net, host, m } = rig(33, first);
  const other = new ContractNic();
  m.addNic(other as unknown as Nic);
  const l = host.stack.tcp.listen({ port: 80 }, () => true);
  assert.ok(m.listenAtNics(l) !== null);
  assert.equal(other.listens[0]!.spec.word, 4, 'the second NIC: the second word');
  let old = first;
  // More than the gate's 64 NIC words: each word was a NIC's place in the manager's list, which
  // only grew while dead members stayed in it.
  for (let i = 0; i < 70; i++) {
    const next = new ContractNic();
    assert.equal(m.removeNic(old as unknown as Nic), true, 'nothing runs there');
    m.addNic(next as unknown as Nic);
    assert.equal(old.stops, 1, 'the forgotten NIC stopped answering');
    assert.equal(next.listens.length, 1, `replacement ${i + 1} is asked to answer`);
    // Not its place in the list (now 1): that is the other NIC's word, its count read and
    // cleared in the other's.
    assert.equal(next.listens[0]!.spec.word, 3, "it takes the forgotten NIC's word, not the other's");
    old = next;
  }
  assert.deepEqual(m.nics, [other, old], 'the manager lists the live NICs only');
  m.close();
  net.close();
});
