/**
 * A crash's rebuild gives each socket's held writes to the rebuilt connection at the settle, not
 * at the socket's paced resume: after a crash most of a download is the application's write held
 * in its socket (the dead NIC's send ring holds little beyond the peer's flight), and with the
 * write held until the socket's turn, the peer got nothing new for as long as the paced resumes
 * took (seconds at a thousand under load) though its connection ran at the new NIC already.
 * Here every socket's resume is held back by the test, as a slow turn would: the peers must get
 * the rest of their downloads meanwhile, whole and in order, the writes made during the rebuild
 * after those held through it.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import type { ConnectionHandle } from '../../src/stack/tcp/tcp-types.ts';
import { randomBytes, sha256 } from '../helpers/streams.ts';
import { keysOf, offloadPair } from './helpers.ts';

const CONNS = 16;
/**
 * Each download's first write, far past what its socket lets the connection take while the peer
 * does not read (the peer's 1 MiB window and the socket's send target), and its second.
 */
const FIRST = 3_000_000;
const SECOND = 200_000;

describe("a crash's rebuild gives the sockets' held writes at the settle", () => {
  it('the peers get the rest of their downloads before the sockets resume, every byte in order', async () => {
    const p = offloadPair(91);
    const m = p.host.offload;
    const [n0, n1] = p.host.nics as [LocalNic, LocalNic];
    await p.host.ping('10.0.0.2');
    const got = new Map<number, Buffer[]>();
    const gotBytes = new Map<number, number>();
    const ended: Promise<unknown>[] = [];
    const peers: TcpSocket[] = [];
    // The peers read nothing before the crash: their windows, not the sockets' targets, bound
    // what the connections took, and the rest waits in the sockets.
    p.peer.createServer((s) => peers.push(s)).listen(5000);
    const read = (s: TcpSocket): void => {
      const port = s.remotePort!;
      got.set(port, []);
      gotBytes.set(port, 0);
      ended.push(once(s, 'end'));
      s.on('data', (b: Buffer) => {
        got.get(port)!.push(b);
        gotBytes.set(port, gotBytes.get(port)! + b.length);
      });
    };
    const sockets: TcpSocket[] = [];
    const errors: Error[] = [];
    for (let i = 0; i < CONNS; i++) {
      const s = p.host.connect(5000, '10.0.0.2');
      s.on('error', (e) => errors.push(e));
      sockets.push(s);
    }
    await Promise.all(sockets.map((s) => once(s, 'connect')));
    const keys = keysOf(sockets);
    assert.equal((await m.offload(keys, n1)).moved.length, CONNS);
    for (let i = 0; i < CONNS; i++) sockets[i]!.write(randomBytes(300 + i, FIRST));
    await p.net.sleep(30);
    n1.crash('test: crashed mid-download');
    // Written while the connections wait for their rebuild: after what the sockets hold.
    for (let i = 0; i < CONNS; i++) sockets[i]!.end(randomBytes(700 + i, SECOND));
    const taken = sockets.map((s) => s.bytesTaken);
    for (const t of taken) assert.ok(t < FIRST - 500_000, `held writes left at the crash (${t} taken)`);
    assert.equal(peers.length, CONNS);
    for (const s of peers) read(s);
    // Every socket's resume waits until the test lets it go, as behind a long paced queue.
    const resumes: (() => void)[] = [];
    for (const s of sockets) {
      const complete = s._completeMove.bind(s);
      s._completeMove = (h: ConnectionHandle) => {
        resumes.push(() => complete(h));
      };
    }
    assert.equal((await m.recover(n1, n0)).moved.length, CONNS, 'all rebuilt at n0');
    const past = (): number =>
      sockets.filter((s, i) => (gotBytes.get(s.localPort!) ?? 0) > taken[i]! + 65_536).length;
    for (let i = 0; i < 4000 && past() < CONNS; i++) await p.net.sleep(5);
    assert.equal(past(), CONNS, 'every peer got data its socket held through the rebuild, before its resume');
    assert.ok(
      sockets.every((s) => s.moving),
      'no socket resumed yet',
    );
    for (const r of resumes.splice(0)) r();
    let allEnded = false;
    void Promise.all(ended).then(() => {
      allEnded = true;
    });
    for (let i = 0; i < 8000 && !allEnded; i++) await p.net.sleep(5);
    assert.ok(allEnded, 'every download ended');
    for (let i = 0; i < CONNS; i++) {
      const s = sockets[i]!;
      const all = Buffer.concat(got.get(s.localPort!) ?? []);
      assert.equal(all.length, FIRST + SECOND, `stream ${i}: every byte, none twice`);
      assert.equal(
        sha256(all),
        sha256(Buffer.concat([randomBytes(300 + i, FIRST), randomBytes(700 + i, SECOND)])),
        `stream ${i}: in order`,
      );
    }
    assert.deepEqual(errors, []);
    for (const k of keys) assert.equal(m.ownerOf(k), n0, 'n0 runs it');
  });
});
