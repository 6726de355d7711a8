import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { allocConnBlock, type ConnBlockRef, TRANSFER_RECORD_AT } from '../../src/nic/hard-state.ts';
import { type ConnKey, keyOfState } from '../../src/nic/nic.ts';
import {
  OWNER_HOST,
  RECORD_OOO_MAX,
  RECORD_SACKED_MAX,
  TransferRecord,
  transferRecordSlot,
} from '../../src/nic/transfer-record.ts';
import { packBlocks } from '../../src/nic/worker/transfer-wire.ts';
import type { WorkerNic } from '../../src/nic/worker-nic.ts';
import type { TcpEngine } from '../../src/stack/tcp/tcp-connection.ts';
import { sendStateAck } from '../../src/stack/tcp/tcp-output.ts';
import { ByteRing } from '../../src/state/byte-ring.ts';
import { flattenTrees, type OffloadTree } from '../../src/state/offload-tree.ts';
import type { TcpState } from '../../src/state/tcp-state.ts';
import { ACK_FIELDS, TCP_FIELDS, validateAckOn, validateTcpState } from '../../src/state/validate.ts';
import { createTcpHeader } from '../../src/wire/tcp.ts';
import { arbTrees, normalize, sampleTrees } from '../state/helpers.ts';
import { pathsOnly, recordChannel } from './record-helpers.ts';
import { workerSetup as setup, socketKey, streamBothWays } from './worker-helpers.ts';

/** A connection block holding the state's ring bytes, as WorkerNic.initiate prepares one. */
function blockFor(s: TcpState): { block: ConnBlockRef; send: ByteRing; recv: ByteRing } {
  const d = s.delegated;
  // Room for the out-of-order data beyond the readable bytes, as a ring sized to the window has.
  const last = s.soft.ooo.at(-1);
  const extent = last === undefined ? 0 : (last.seq + last.data.length - d.rcvNxt) >>> 0;
  const block = allocConnBlock(
    Math.max(d.sendBuffer.maxCapacity, 64),
    Math.max(d.recvBuffer.maxCapacity, d.recvBuffer.length + extent, 64),
  );
  const send = ByteRing.createShared(block.send.capacity, block.send);
  const recv = ByteRing.createShared(block.recv.capacity, block.recv);
  send.write(d.sendBuffer.toArray());
  recv.write(d.recvBuffer.toArray());
  return { block, send, recv };
}

function recordOf(block: ConnBlockRef): TransferRecord {
  return new TransferRecord(block.sab, block.at + TRANSFER_RECORD_AT);
}

/** What a record keeps: the whole state but its path (the reader's). */
function withoutPath(s: TcpState): unknown {
  const n = normalize(s) as { soft: Record<string, unknown>; path?: unknown };
  delete n.path;
  return n;
}

/** Connections to read records into, never none (the generator may make no connection at all). */
function poolOf(a: OffloadTree[]): TcpState[] {
  return [...flattenTrees(a), ...flattenTrees(sampleTrees(1))];
}

/** `s` written at `now` to a record of a block of its own, and that block's rings. */
function written(s: TcpState, now: number): { rec: TransferRecord; send: ByteRing; recv: ByteRing } {
  const { block } = blockFor(s);
  const rec = recordOf(block);
  rec.write(s, now, 0, 1, ByteRing.attachShared(block.recv));
  return { rec, send: ByteRing.attachShared(block.send), recv: ByteRing.attachShared(block.recv) };
}

/** Another connection's state as a record read makes it: what a pooled or scratch state held before. */
function readOther(old: TcpState, now: number): TcpState {
  const oldBlock = blockFor(old).block;
  recordOf(oldBlock).write(old, now, 0, 1, ByteRing.attachShared(oldBlock.recv));
  return recordOf(oldBlock).read(
    now,
    old.path,
    ByteRing.attachShared(oldBlock.send),
    ByteRing.attachShared(oldBlock.recv),
  );
}

/** A state's fields but its rings and its path, to compare two reads of one record. */
function stripped(x: TcpState): unknown {
  const n = normalize(x) as { delegated: Record<string, unknown>; path?: unknown };
  delete n.delegated.sendBuffer;
  delete n.delegated.recvBuffer;
  delete n.path;
  return n;
}

/** A field of a state by its dotted name (`soft.cubic.wMax` included). */
function fieldOf(s: TcpState, name: string): { obj: Record<string, unknown>; key: string } {
  const path = name.split('.');
  let obj = s as unknown as Record<string, unknown>;
  for (const k of path.slice(0, -1)) obj = obj[k] as Record<string, unknown>;
  return { obj, key: path.at(-1)! };
}

const ACK_NAMES = new Set(ACK_FIELDS.map((f) => f.name));
const SCALAR = (t: string) => t !== 'ring' && t !== 'ooo' && t !== 'ranges';

/** Every soft scalar an ACK from the record does not read, changed: what a stale scratch state holds. */
function dirtyOutsideAck(s: TcpState): void {
  for (const f of TCP_FIELDS) {
    if ((f.part !== 'soft' && f.part !== 'cubic') || ACK_NAMES.has(f.name) || !SCALAR(f.type)) continue;
    const { obj, key } = fieldOf(s, f.part === 'cubic' ? `soft.${f.name.slice('soft.'.length)}` : f.name);
    const v = obj[key];
    obj[key] = typeof v === 'boolean' ? !v : typeof v === 'number' && Number.isFinite(v) ? v + 7 : 1234;
  }
}

/** The pure ACK sendStateAck sends from `s` at `now`: its bytes, TTL and TOS, through a stand-in engine. */
function ackOf(s: TcpState, now: number): { sent: boolean; bytes: number[]; ttl: number; tos: number } {
  const txBuf = new Uint8Array(256);
  const out = { sent: false, bytes: [] as number[], ttl: -1, tos: -1 };
  const eng = {
    txHdr: createTcpHeader(),
    env: {
      clock: { now: () => now },
      counters: { inc() {} },
      ip: {
        txBuf,
        begin: () => 0,
        commit: (_p: unknown, _proto: number, len: number, _df: boolean, ttl: number, tos: number) => {
          out.bytes = [...txBuf.subarray(0, len)];
          out.ttl = ttl;
          out.tos = tos;
          return true;
        },
      },
    },
  } as unknown as TcpEngine;
  out.sent = sendStateAck(eng, s);
  return out;
}

describe('transfer records', () => {
  test('quiet: an established connection with no deadline, nothing unacknowledged, no ACK owed, no keepalive; aged, its times move back', () => {
    const INF = Number.POSITIVE_INFINITY;
    const base = (): TcpState => {
      const s = flattenTrees(sampleTrees(1))[0]!;
      const d = s.delegated;
      d.state = 4;
      d.sndMax = d.sndUna;
      d.sndNxt = d.sndUna;
      d.rtxDeadline = INF;
      d.persistDeadline = INF;
      d.keepaliveDeadline = INF;
      d.timeWaitDeadline = INF;
      s.soft.delayedAckDeadline = INF;
      s.soft.tlpDeadline = INF;
      s.soft.ackNow = false;
      s.cached.keepAlive = false;
      return s;
    };
    const quiet = (change: (s: TcpState) => void): boolean => {
      const s = base();
      change(s);
      const { block } = blockFor(s);
      const rec = recordOf(block);
      rec.write(s, 1000, 0, 1, ByteRing.attachShared(block.recv));
      return rec.quiet;
    };
    assert.equal(
      quiet(() => {}),
      true,
    );
    const loud: [string, (s: TcpState) => void][] = [
      ['retransmission', (s) => (s.delegated.rtxDeadline = 1200)],
      ['persist', (s) => (s.delegated.persistDeadline = 1200)],
      ['keepalive deadline', (s) => (s.delegated.keepaliveDeadline = 1200)],
      ['TIME_WAIT', (s) => (s.delegated.timeWaitDeadline = 1200)],
      ['delayed ACK', (s) => (s.soft.delayedAckDeadline = 1200)],
      ['tail-loss probe', (s) => (s.soft.tlpDeadline = 1200)],
      ['ACK owed', (s) => (s.soft.ackNow = true)],
      ['keepalive on', (s) => (s.cached.keepAlive = true)],
      ['unacknowledged', (s) => (s.delegated.sndMax = (s.delegated.sndUna + 10) >>> 0)],
      ['not established', (s) => (s.delegated.state = 7)],
    ];
    for (const [what, change] of loud) assert.equal(quiet(change), false, what);
    // Aged by 300 ms, a record read at the writer's clock has every time 300 ms further back.
    const s = base();
    s.delegated.lastRecvAt = 900;
    const { block } = blockFor(s);
    const rec = recordOf(block);
    rec.write(s, 1000, 0, 1, ByteRing.attachShared(block.recv));
    rec.age(300);
    const back = rec.read(1000, s.path, ByteRing.attachShared(block.send), ByteRing.attachShared(block.recv));
    assert.equal(back.delegated.lastRecvAt, 600);
    assert.equal(back.delegated.rtxDeadline, INF, 'not running: no time to move');
  });
  test('a record carries every field of any valid state, SACK lists and out-of-order data included (times onto the reader clock)', () => {
    fc.assert(
      fc.property(arbTrees, fc.integer({ min: 0, max: 1_000_000 }), (trees, shift) => {
        for (const s of flattenTrees(trees)) {
          const { block } = blockFor(s);
          const rec = recordOf(block);
          rec.write(s, 10_000, 3, 7, ByteRing.attachShared(block.recv));
          assert.equal(rec.owner, -7, 'offered');
          assert.equal(rec.pathIndex, 3);
          const send = ByteRing.attachShared(block.send);
          const recv = ByteRing.attachShared(block.recv);
          const back = rec.read(10_000, s.path, send, recv);
          assert.equal(back.path, s.path);
          assert.equal(back.delegated.sendBuffer, send, 'over the rings given');
          assert.equal(back.delegated.recvBuffer, recv);
          const expect = withoutPath(s) as { delegated: Record<string, unknown> };
          const got = withoutPath(back) as { delegated: Record<string, unknown> };
          for (const k of ['sendBuffer', 'recvBuffer']) {
            assert.deepEqual(
              (got.delegated[k] as { bytes: unknown }).bytes,
              (expect.delegated[k] as { bytes: unknown }).bytes,
            );
            delete got.delegated[k];
            delete expect.delegated[k];
          }
          assert.deepEqual(got, expect);
          // The same record read on a clock `shift` ms later: running timers move with it.
          const later = rec.read(10_000 + shift, s.path, send, recv);
          const d = s.delegated;
          const dl = later.delegated;
          // -1 ("never") and Infinity (not running) are no times and stay as they are.
          const moved = (t: number): number => (t === -1 || t === Infinity ? t : t + shift);
          assert.equal(dl.rtxDeadline, moved(d.rtxDeadline));
          assert.equal(dl.lastRecvAt, moved(d.lastRecvAt));
          assert.equal(later.soft.cubic.epochStart, moved(s.soft.cubic.epochStart));
        }
      }),
      { numRuns: 60 },
    );
  });

  test('a state read into a pooled state that held another connection is the state a fresh read makes: nothing of the other carries over', () => {
    fc.assert(
      fc.property(arbTrees, arbTrees, fc.integer({ min: 0, max: 1_000_000 }), (a, b, now) => {
        const pool = poolOf(a);
        const next = flattenTrees(b);
        for (let i = 0; i < next.length; i++) {
          const s = next[i]!;
          const { rec, send, recv } = written(s, now);
          // The pooled state first as a read makes it, then dirtied as a running connection would.
          const old = pool[i % pool.length]!;
          const pooled = readOther(old, now);
          pooled.soft.ooo = old.soft.ooo.slice();
          pooled.soft.sacked = [{ start: 1, end: 2 }] as never;
          pooled.soft.recvSackRecent = [{ start: 3, end: 4 }] as never;
          pooled.soft.cubic.wMax = 12345;
          const into = rec.readInto(pooled, now, s.path, send, recv);
          assert.equal(into, pooled, 'the pooled object itself');
          const fresh = rec.read(now, s.path, send, recv);
          assert.equal(into.path, s.path);
          assert.equal(into.delegated.sendBuffer, send);
          assert.equal(into.delegated.recvBuffer, recv);
          assert.deepEqual(stripped(into), stripped(fresh));
          assert.deepEqual(Object.keys(into.soft), Object.keys(fresh.soft), 'same shape');
          validateTcpState(into);
        }
      }),
      { numRuns: 60 },
    );
  });

  test('an ACK from a record read for it alone (readForAck) is the ACK from the whole record, with the same marks, whatever the scratch state held', () => {
    fc.assert(
      fc.property(arbTrees, arbTrees, fc.integer({ min: 0, max: 1_000_000 }), (a, b, now) => {
        const pool = poolOf(a);
        const next = flattenTrees(b);
        for (let i = 0; i < next.length; i++) {
          const s = next[i]!;
          // As the records prodUnbuilt takes (TransferRecord.quietButAck): no delayed ACK armed,
          // which the ACK disarms and noteAck therefore does not write back.
          s.soft.delayedAckDeadline = Number.POSITIVE_INFINITY;
          const { rec, send, recv } = written(s, now);
          // The scratch state: another connection's, read whole, then its fields outside the ACK's changed.
          const scratch = readOther(pool[i % pool.length]!, now);
          scratch.soft.ooo = [];
          scratch.soft.recvSackRecent = [];
          dirtyOutsideAck(scratch);
          const got = rec.readForAck(scratch, now, s.path, send, recv);
          if (s.soft.ooo.length !== 0 || s.soft.recvSackRecent.length !== 0) {
            assert.equal(got, null, 'out-of-order data or SACK blocks: no ACK from the record');
            continue;
          }
          assert.equal(got, scratch, 'into the scratch state');
          assert.equal(got.path, s.path);
          assert.equal(got.delegated.recvBuffer, recv);
          validateAckOn(got, s.path);
          const whole = rec.read(now, s.path, send, recv);
          const same = (what: string) => {
            for (const f of ACK_FIELDS) {
              if (!SCALAR(f.type)) continue;
              const x = fieldOf(got, f.name);
              const y = fieldOf(whole, f.name);
              assert.equal(x.obj[x.key], y.obj[y.key], `${what}: ${f.name}`);
            }
          };
          same('read');
          assert.deepEqual(ackOf(got, now + 5), ackOf(whole, now + 5), 'the same ACK');
          same('after the ACK');
          // What the ACK changed, written back (noteAck), is the record the whole state's ACK leaves.
          rec.noteAck(got);
          assert.deepEqual(
            stripped(rec.read(now, s.path, send, recv)),
            stripped(whole),
            'the record after noteAck',
          );
        }
      }),
      { numRuns: 60 },
    );
  });

  test('a record read for an ACK alone refuses what the ACK rests on when damaged', () => {
    const s = flattenTrees(sampleTrees(1))[0]!;
    s.soft.ooo = [];
    s.soft.recvSackRecent = [];
    const damage: [string, number, RegExp][] = [
      ['const.rcvWscale', 15, /rcvWscale/],
      ['const.tsEnabled', 2, /tsEnabled/],
      ['const.localPort', 0, /localPort/],
      ['delegated.rcvAdv', -1, /rcvAdv/],
      ['soft.quickAcks', 1e6, /quickAcks/],
      ['soft.rcvClamp', 2 ** 31, /rcvClamp/],
      ['cached.ttl', 0, /ttl/],
    ];
    for (const [name, v, why] of damage) {
      const { block, send, recv } = blockFor(s);
      const rec = recordOf(block);
      rec.write(s, 1000, 0, 1, recv);
      const scratch = rec.read(1000, s.path, send, recv);
      validateAckOn(rec.readForAck(scratch, 1000, s.path, send, recv)!, s.path);
      const at = (block.at + TRANSFER_RECORD_AT) / 8 + transferRecordSlot(name);
      new Float64Array(block.sab)[at] = v;
      assert.throws(
        () => validateAckOn(rec.readForAck(scratch, 1000, s.path, send, recv)!, s.path),
        why,
        name,
      );
    }
  });

  test('the owner word: offered, taken once by the NIC it was offered to, handed back', () => {
    const s = flattenTrees(sampleTrees(1))[0]!;
    const { block, recv } = blockFor(s);
    const rec = recordOf(block);
    rec.write(s, 0, 0, 4, recv);
    assert.equal(rec.take(5), false, 'not offered to 5');
    assert.equal(rec.take(4), true);
    assert.equal(rec.owner, 4);
    assert.equal(rec.take(4), false, 'taken once');
    rec.setOwner(OWNER_HOST);
    assert.equal(rec.owner, OWNER_HOST);
  });

  test('a worker refuses a batch of records with one malformed record before installing anything; the same batch well formed installs from the records', {
    timeout: 60_000,
  }, async (t) => {
    const { wh } = await setup(31, t);
    const nic = wh.nics[0]!;
    const { owner, request } = recordChannel(nic);

    /** Two connections of one path as records; `spoil` damages the second's after it is written. */
    const send = async (spoil: ((f: Float64Array, rec: TransferRecord, keys: ConnKey[]) => void) | null) => {
      const trees = sampleTrees(2);
      const states = flattenTrees(trees);
      const batch = pathsOnly(trees);
      const keys = states.map(keyOfState);
      const made = states.map(blockFor);
      const blocks = made.map((m) => m.block);
      const recs = blocks.map(recordOf);
      states.forEach((s, i) => {
        validateTcpState(s);
        recs[i]!.write(s, 0, 0, owner, made[i]!.recv);
      });
      const last = blocks[1]!;
      if (spoil) spoil(new Float64Array(last.sab, last.at + TRANSFER_RECORD_AT), recs[1]!, keys);
      const packed = packBlocks(
        keys.length,
        (i) => keys[i]!,
        (i) => blocks[i]!,
      );
      const res = await request({ op: 'initiate', arg: { batch, prod: false, blocks: packed, owner } });
      return { res, recs };
    };

    const at = (name: string): number => {
      const i = transferRecordSlot(name);
      assert.ok(i > 0, name);
      return i;
    };
    const spoilers: [string, (f: Float64Array, rec: TransferRecord, keys: ConnKey[]) => void][] = [
      ['a state that cannot be offloaded', (f) => (f[at('delegated.state')] = 1)],
      ['a sequence number that is not one', (f) => (f[at('delegated.sndUna')] = 2 ** 32 + 5)],
      ['snd.max before snd.una', (f) => (f[at('delegated.sndMax')] = f[at('delegated.sndUna')]! - 10)],
      [
        'more in flight than the send ring holds',
        (f) => (f[at('delegated.sndMax')] = f[at('delegated.sndUna')]! + 5000),
      ],
      ['a send buffer smaller than what is queued', (f) => (f[at('cached.sndBufSize')] = 1)],
      ['a boolean that is neither', (f) => (f[at('const.tsEnabled')] = 2)],
      ['an unknown congestion algorithm', (f) => (f[at('cached.congestion')] = 9)],
      ['a time that is NaN', (f) => (f[at('delegated.rtxDeadline')] = Number.NaN)],
      ['a short-segment end that is no sequence number', (f) => (f[at('soft.smallSentEnd')] = -1)],
      ['a window scale beyond 14', (f) => (f[at('const.sndWscale')] = 15)],
      ['another connection than the block was named for', (f) => (f[at('const.localPort')] = 40000)],
      ['an address that differs from its path', (f) => (f[at('const.remoteIp')] = 0x0a000063)],
      [
        'a path index outside the batch',
        (_f, rec) => {
          const r = rec as unknown as { i: Int32Array; io: number };
          r.i[r.io + 1] = 1;
        },
      ],
      ['a record offered to another NIC', (_f, rec) => rec.setOwner(-(owner + 1))],
      ['a record already taken', (_f, rec) => rec.setOwner(owner)],
    ];
    const before = (await nic.counters())['nic.initiate.refused'] ?? 0;
    for (const [what, spoil] of spoilers) {
      const { res, recs } = await send(spoil);
      assert.equal(res.value.status, 'failure', what);
      assert.equal(res.value.slots.length, 0, `${what}: nothing installed`);
      assert.equal(nic.load, 0, what);
      assert.equal(recs[0]!.owner, -owner, `${what}: the good record was not taken`);
    }
    const c = await nic.counters();
    assert.equal((c['nic.initiate.refused'] ?? 0) - before, spoilers.length);
    assert.equal(c['nic.initiate.conns'] ?? 0, 0);
    assert.equal(c['nic.initiate.records'] ?? 0, 0);

    const { res, recs } = await send(null);
    assert.equal(res.value.status, 'success');
    assert.equal(res.value.slots.length, 2);
    for (const r of recs) assert.equal(r.owner, owner, 'taken by the NIC');
    const after = await nic.counters();
    assert.equal(after['nic.initiate.records'], 2);
    assert.equal(after['nic.initiate.conns'], 2);
  });

  test('WorkerNic.initiate hands connections with SACK lists and out-of-order data over as records; lists longer than a record holds go through the codec, counted; all in the codec when told', {
    timeout: 60_000,
  }, async (t) => {
    const { wh } = await setup(32, t);
    const [a, b] = wh.nics as [WorkerNic, WorkerNic];
    const make = () => {
      const trees = sampleTrees(4);
      const [s0, s1, s2, s3] = flattenTrees(trees) as [TcpState, TcpState, TcpState, TcpState];
      assert.equal(s1.soft.ooo.length, 1);
      s0.soft.ooo = [];
      s0.soft.recvSackRecent = [];
      // 33 islands SACKed: one more than a record holds.
      s2.soft.sacked = Array.from({ length: RECORD_SACKED_MAX + 1 }, (_, k) => ({
        start: s2.delegated.sndUna + 3 * k,
        end: s2.delegated.sndUna + 3 * k + 2,
      }));
      // 33 runs of out-of-order data, one byte each.
      const r3 = s3.delegated.rcvNxt;
      s3.soft.ooo = Array.from({ length: RECORD_OOO_MAX + 1 }, (_, k) => ({
        seq: (r3 + 100 + 3 * k) >>> 0,
        data: new Uint8Array([k]),
      }));
      for (const s of [s0, s1, s2, s3]) validateTcpState(s);
      return trees;
    };
    assert.equal((await a.initiate({ kind: 'trees', trees: make() })).status, 'success');
    b.useRecords = false;
    assert.equal((await b.initiate({ kind: 'trees', trees: make() })).status, 'success');
    const [ca, cb] = await Promise.all([a.counters(), b.counters()]);
    assert.equal(ca['nic.initiate.records'], 2, 'the plain one and the one with a hole');
    assert.equal(ca['nic.initiate.conns'], 4);
    assert.equal(ca['nic.worker.record-fallbacks'], 2, 'the long scoreboard and the many runs');
    assert.equal(a.recordFallbacks, 2);
    assert.equal(cb['nic.initiate.records'] ?? 0, 0);
    assert.equal(cb['nic.initiate.conns'], 4);
    assert.equal(cb['nic.worker.record-fallbacks'] ?? 0, 0, 'records off: nothing falls back');
  });

  test('a terminate hands its states back as records the host reads; a malformed one refuses the answer and leaves every released connection salvageable', {
    timeout: 60_000,
  }, async (t) => {
    const { wh } = await setup(33, t);
    const nic = wh.nics[0]!;
    const handOver = async () => {
      const trees = sampleTrees(2);
      const states = flattenTrees(trees);
      const keys = states.map(keyOfState);
      assert.equal((await nic.initiate({ kind: 'trees', trees })).status, 'success');
      const blocks = keys.map((k) => nic.handle(k)!.block);
      const bytes = await nic.terminate(keys, {});
      assert.ok(bytes instanceof Uint8Array);
      assert.equal(nic.load, 0, 'released by the worker');
      for (const b of blocks) assert.equal(recordOf(b).owner, OWNER_HOST, 'handed to the host');
      return { states, keys, blocks, bytes };
    };

    const good = await handOver();
    const trees = nic.decodeReleased(good.bytes, 0);
    const back = flattenTrees(trees);
    assert.equal(back.length, 2);
    for (const s of good.states) {
      const b = back.find((x) => x.const.localPort === s.const.localPort)!;
      assert.equal(b.delegated.sndUna, s.delegated.sndUna);
      assert.equal(b.delegated.rcvNxt, s.delegated.rcvNxt);
      assert.equal(b.delegated.iss, s.delegated.iss);
      assert.equal(b.cached.sndBufSize, s.cached.sndBufSize);
      assert.deepEqual(b.soft.sacked, s.soft.sacked, 'the SACK scoreboard, through the worker and back');
      assert.deepEqual(b.soft.recvSackRecent, s.soft.recvSackRecent);
      assert.deepEqual(b.soft.ooo, s.soft.ooo, 'the out-of-order data');
      assert.deepEqual(
        [...b.delegated.sendBuffer.toArray()],
        new Array(300).fill(7),
        'over the shared rings',
      );
    }

    const bad = await handOver();
    const f = new Float64Array(bad.blocks[1]!.sab, bad.blocks[1]!.at + TRANSFER_RECORD_AT);
    f[transferRecordSlot('delegated.sndMax')] = f[transferRecordSlot('delegated.sndUna')]! + 100_000;
    assert.throws(() => nic.decodeReleased(bad.bytes, 0), /sendBuffer/);
    assert.equal(nic.load, 2, 'both kept, the good one too');
    const left = nic.salvage(bad.keys);
    assert.equal(left.length, 2);
    for (const r of left) {
      assert.ok(r.hard !== null && r.hard.version > 0, 'its last hard state');
      assert.deepEqual([...r.sendRing.toArray()], new Array(300).fill(7), 'the unacknowledged data');
    }
  });

  test('streaming connections move between a WorkerNic by records and one by the codec, both ways, and arrive intact', {
    timeout: 120_000,
  }, async (t) => {
    const { wh, peer } = await setup(34, t);
    const [a, b] = wh.nics as [WorkerNic, WorkerNic];
    b.useRecords = false;
    const st = await streamBothWays(wh.host, peer, 6, 300_000, 20_000, 5);
    const keys = st.sockets.map((s) => socketKey(s));
    const m = wh.offload;
    assert.equal((await m.offload(keys, a)).moved.length, 6);
    assert.equal((await m.move(keys, a, b)).moved.length, 6);
    assert.equal((await m.move(keys, b, a)).moved.length, 6);
    assert.equal((await m.upload(keys)).moved.length, 6);
    assert.equal(await st.done, 0, 'every direction of every connection intact');
    assert.deepEqual(st.errors, []);
    const [ca, cb] = await Promise.all([a.counters(), b.counters()]);
    assert.equal(ca['nic.initiate.records'], 12, 'a took its connections as records, twice');
    assert.equal(cb['nic.initiate.records'] ?? 0, 0, 'b through the codec');
    assert.equal(cb['nic.initiate.conns'], 6);
  });
});
