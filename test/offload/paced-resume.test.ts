/**
 * A crash's rebuild resumes its sockets paced: the connections run at the new NIC from the settle
 * on, and the sockets (each with its application's writes held through the rebuild) resume a
 * turn's share at a time (TransferProtocol.pacedResumes), not all in the settle's turn, which was
 * serve's longest block after a worker's crash. Each socket still resumes, on the handle its
 * connection runs behind when its turn comes, or through a transfer that takes it over before.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import type { TransferProtocol } from '../../src/offload/transfer.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { keysOf, offloadPair, startStreams } from './helpers.ts';

const CONNS = 80;
/** TransferProtocol's RESUMES_PER_TURN. */
const PER_TURN = 32;

/** `CONNS` streams offloaded to the second of two LocalNics, which then crashes. */
async function crashedWithStreams(seed: number) {
  const p = offloadPair(seed);
  const m = p.host.offload;
  const [n0, n1] = p.host.nics as [LocalNic, LocalNic];
  const st = await startStreams(p, CONNS, 30_000);
  const keys = keysOf(st.sockets);
  assert.equal((await m.offload(keys, n1)).moved.length, CONNS);
  await p.net.sleep(40);
  n1.crash('test: crashed with every stream on it');
  const proto = (m as unknown as { proto: TransferProtocol }).proto;
  return { p, m, n0, n1, st, keys, proto };
}

/** Each socket's resumes, named by the turn of the paced queue that ran it (its `carried`). */
function watchResumes(sockets: readonly TcpSocket[], proto: TransferProtocol): number[] {
  const turns: number[] = [];
  for (const s of sockets) {
    const complete = s._completeMove.bind(s);
    s._completeMove = (h) => {
      turns.push(proto.pacedResumes.carried);
      complete(h);
    };
  }
  return turns;
}

describe("a crash's rebuild resumes its sockets paced", () => {
  it("a turn's share at a time after the settle, each once, every byte arriving", async () => {
    const { p, m, n0, n1, st, proto } = await crashedWithStreams(71);
    const turns = watchResumes(st.sockets, proto);
    const rec = await m.recover(n1, n0);
    assert.equal(rec.moved.length, CONNS, 'all rebuilt at n0');
    // The settle's own turn resumed its share and no more; the rest wait, frozen.
    const inSettle = turns.length;
    assert.ok(inSettle >= 1 && inSettle <= PER_TURN, `${inSettle} resumed in the settle's turn`);
    assert.equal(st.sockets.filter((s) => s.moving).length, CONNS - inSettle, 'the rest still frozen');
    assert.equal(proto.pacedResumes.size, CONNS - inSettle);
    assert.equal(p.host.stack.counters.get('offload.settle.paced'), CONNS);
    for (let i = 0; i < 200 && st.sockets.some((s) => s.moving); i++) await p.net.sleep(1);
    assert.equal(st.sockets.filter((s) => s.moving).length, 0, 'every socket resumed');
    assert.equal(turns.length, CONNS, 'each once');
    const perTurn = new Map<number, number>();
    for (const t of turns) perTurn.set(t, (perTurn.get(t) ?? 0) + 1);
    for (const [t, n] of perTurn) assert.ok(n <= PER_TURN, `turn ${t} resumed ${n}`);
    assert.ok(perTurn.size >= Math.ceil(CONNS / PER_TURN), `${perTurn.size} turns`);
    for (const s of st.sockets) assert.equal(s.connection, n0.engine.connection(keysOf([s])[0]!), 'on n0');
    assert.equal(await st.done, 0, 'every byte arrived, both ways');
    assert.deepEqual(st.errors, []);
  });

  it('a transfer before their turn takes the waiting sockets over, and each resumes once, where it ends', async () => {
    const { p, m, n0, n1, st, keys, proto } = await crashedWithStreams(72);
    // The general protocol, whose freeze takes each socket over (a live hand-over moves none).
    m.liveHandover = false;
    const turns = watchResumes(st.sockets, proto);
    assert.equal((await m.recover(n1, n0)).moved.length, CONNS);
    const waiting = proto.pacedResumes.size;
    assert.ok(waiting >= CONNS - PER_TURN, `${waiting} sockets wait for their turn`);
    // Up to the host in the same turn as the recover ended: before any of their turns came.
    const up = await m.upload(keys);
    assert.equal(up.moved.length, CONNS, 'every connection uploaded, none refused for a socket moving');
    assert.equal(st.sockets.filter((s) => s.moving).length, 0, 'every socket resumed at the upload');
    assert.equal(turns.length, CONNS + (CONNS - waiting), 'once in the recover or the upload, not twice');
    for (let i = 0; i < 20; i++) await p.net.sleep(1);
    assert.equal(proto.pacedResumes.size, 0);
    assert.equal(turns.length, CONNS + (CONNS - waiting), 'no stale turn resumed one again');
    for (const k of keys) assert.equal(m.ownerOf(k), 'host', 'the host runs it');
    assert.equal(await st.done, 0, 'every byte arrived, both ways');
    assert.deepEqual(st.errors, []);
  });
});
