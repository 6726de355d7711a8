/**
 * A crash's paced resumes give the writes their sockets held through the rebuild a first part at
 * a time (REBUILT_FIRST_PART), the rest as the rebuilt connection's acknowledgements ask: filling
 * each ring to the send target in the resume's turn cost a page fault per page at load (the rings
 * of young connections are fresh memory), 2-4 ms of serve's main thread per socket, which slowed
 * the paced resumes to a few sockets a turn. Every byte still arrives, once and in order.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import { REBUILT_FIRST_PART, type TransferProtocol } from '../../src/offload/transfer.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { collect, randomBytes, sha256 } from '../helpers/streams.ts';
import { keysOf, offloadPair } from './helpers.ts';

const CONNS = 48;
/** Written before the crash, and delivered whole before it (the rings hold nothing then). */
const BEFORE = 20_000;
/** Written after the crash: held until each socket's resume. */
const HELD = 150_000;
/** TransferProtocol's RESUMES_PER_TURN. */
const PER_TURN = 32;

describe("a crash's paced resumes give the held writes a first part, the rest on the acks", () => {
  it('at most REBUILT_FIRST_PART a socket before its first acknowledgement; every byte arrives once, in order', async () => {
    const p = offloadPair(91);
    const m = p.host.offload;
    const [n0, n1] = p.host.nics as [LocalNic, LocalNic];
    await p.host.ping('10.0.0.2');
    const received: Promise<Buffer>[] = [];
    const got: number[] = [];
    p.peer
      .createServer((s) => {
        const i = received.length;
        got.push(0);
        s.on('data', (d: Buffer) => {
          got[i]! += d.length;
        });
        received.push(collect(s));
      })
      .listen(5000);
    const sockets: TcpSocket[] = [];
    const errors: Error[] = [];
    for (let i = 0; i < CONNS; i++) {
      const s = p.host.connect(5000, '10.0.0.2');
      s.on('error', (e) => errors.push(e));
      sockets.push(s);
    }
    await Promise.all(sockets.map((s) => once(s, 'connect')));
    const data = sockets.map((_, i) => randomBytes(7e5 + i, BEFORE + HELD));
    assert.equal((await m.offload(keysOf(sockets), n1)).moved.length, CONNS);
    for (let i = 0; i < CONNS; i++) sockets[i]!.write(data[i]!.subarray(0, BEFORE));
    // Everything written so far delivered: the rings hold nothing, so only the bound held back
    // what a resume gives (the send target would let 64 KiB through).
    for (let i = 0; i < 2000 && !(got.length === CONNS && got.every((n) => n === BEFORE)); i++)
      await p.net.sleep(5);
    assert.deepEqual(
      got,
      sockets.map(() => BEFORE),
    );
    n1.crash('test: crashed with writes about to be held');
    const proto = (m as unknown as { proto: TransferProtocol }).proto;
    // What each socket's connection took from its resume on until the first acknowledgement
    // asked for more (onWritable): what the resume gave, in its turn and that turn's ticks, where
    // the stream hands the next chunks on.
    const inTurn: { turn: number; bytes: number }[] = [];
    for (const s of sockets) {
      const complete = s._completeMove.bind(s);
      const writable = s.onWritable.bind(s);
      let open: { turn: number; before: number } | null = null;
      const close = (): void => {
        if (open === null) return;
        inTurn.push({ turn: open.turn, bytes: s.bytesTaken - open.before });
        open = null;
      };
      s._completeMove = (h, closed, part) => {
        open = { turn: proto.pacedResumes.carried, before: s.bytesTaken };
        complete(h, closed, part);
      };
      s.onWritable = () => {
        close();
        writable();
      };
      s.on('finish', close);
    }
    // Written after the crash, before the rebuild: the connections' NIC let go of them, so the
    // sockets hold the writes (as a frozen socket does) until their resume.
    for (let i = 0; i < CONNS; i++) sockets[i]!.end(data[i]!.subarray(BEFORE));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(
      sockets.map((s) => s.bytesTaken),
      sockets.map(() => BEFORE),
      'every socket held its write',
    );
    const recovering = m.recover(n1, n0);
    assert.equal((await recovering).moved.length, CONNS, 'all rebuilt at n0');
    for (let i = 0; i < 2000 && inTurn.length < CONNS; i++) await p.net.sleep(1);
    assert.equal(inTurn.length, CONNS, 'each socket resumed once');
    for (const r of inTurn)
      assert.ok(r.bytes <= REBUILT_FIRST_PART, `a resume gave ${r.bytes} bytes before an acknowledgement`);
    assert.ok(
      inTurn.every((r) => r.bytes > 0),
      'each resume gave its connection a first part',
    );
    const perTurn = new Map<number, number>();
    for (const r of inTurn) perTurn.set(r.turn, (perTurn.get(r.turn) ?? 0) + r.bytes);
    for (const [t, b] of perTurn) assert.ok(b <= PER_TURN * REBUILT_FIRST_PART, `turn ${t} gave ${b} bytes`);
    const all = await Promise.all(received);
    assert.deepEqual(
      all.map((b, i) => b.length === data[i]!.length && sha256(b) === sha256(data[i]!)),
      sockets.map(() => true),
      'every byte arrived, once and in order',
    );
    assert.deepEqual(errors, []);
    for (const s of sockets) assert.equal(s.connection, n0.engine.connection(keysOf([s])[0]!), 'on n0');
  });
});
