/**
 * IPv6 connections as transfer records: the record carries the connection's family and flow label
 * with its addresses as handles of the host's numbering (which a worker's mirror table shares,
 * bound by the batch's paths before any record is read), and a record whose family, addresses or
 * label do not match the key and path it was offered under is refused before anything changes.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { StateValidationError } from '../../src/core/errors.ts';
import { SeededRandom } from '../../src/core/random.ts';
import { allocConnBlock, type ConnBlockRef, TRANSFER_RECORD_AT } from '../../src/nic/hard-state.ts';
import { type ConnKey, keyOfState } from '../../src/nic/nic.ts';
import {
  connFlowLabel,
  TRANSFER_RECORD_TAIL,
  TransferRecord,
  transferRecordSlot,
} from '../../src/nic/transfer-record.ts';
import { packBlocks } from '../../src/nic/worker/transfer-wire.ts';
import { AddressTable } from '../../src/stack/address-table.ts';
import { ByteRing } from '../../src/state/byte-ring.ts';
import { createNeighborState } from '../../src/state/neighbor-state.ts';
import { flattenTrees, type OffloadTree } from '../../src/state/offload-tree.ts';
import { createPathState } from '../../src/state/path-state.ts';
import type { TcpState } from '../../src/state/tcp-state.ts';
import { validateTcpState } from '../../src/state/validate.ts';
import { parseIpv6 } from '../../src/wire/addr.ts';
import { pathsOnly, recordChannel } from '../nic/record-helpers.ts';
import { workerSetup as setup } from '../nic/worker-helpers.ts';
import { sampleConn, sampleTrees } from '../state/helpers.ts';

/** An IPv6 tree (neighbor by its bytes, path with a flow seed) of `n` connections in `book`. */
function tree6(book: AddressTable, n: number, peer = '2001:db8::7'): OffloadTree {
  const nb = createNeighborState(
    { srcMac: 0x020000000001, vlanId: -1, ip: 0, ip6: parseIpv6('fe80::1') },
    0x020000000105,
    950,
  );
  const path = createPathState(
    { localIp: book.intern(parseIpv6('fd00::1')), remoteIp: book.intern(parseIpv6(peer)) },
    nb,
    1,
    1500,
    64,
    book,
  );
  path.flow = { base: 0x2345_6789, k0: 0x1111, k1: 0x7777 };
  const conns: TcpState[] = [];
  for (let i = 0; i < n; i++) conns.push(sampleConn(path, 41000 + i, 443));
  return { neighbor: nb, paths: [{ path, conns }] };
}

function blockFor(s: TcpState): { block: ConnBlockRef; recv: ByteRing } {
  const d = s.delegated;
  const block = allocConnBlock(4096, 4096);
  ByteRing.createShared(block.send.capacity, block.send).write(d.sendBuffer.toArray());
  const recv = ByteRing.createShared(block.recv.capacity, block.recv);
  recv.write(d.recvBuffer.toArray());
  return { block, recv };
}

const recordOf = (b: ConnBlockRef) => new TransferRecord(b.sab, b.at + TRANSFER_RECORD_AT);

describe('IPv6 transfer records', () => {
  test('a record keeps the handles, the family and the flow label; the reader checks them against its path', () => {
    const book = new AddressTable(new SeededRandom(3));
    const t = tree6(book, 1);
    const s = t.paths[0]!.conns[0]!;
    const path = t.paths[0]!.path;
    const { block, recv } = blockFor(s);
    const rec = recordOf(block);
    rec.write(s, 0, 0, 2, recv);
    const tail = new Int32Array(block.sab, block.at + TRANSFER_RECORD_AT + TRANSFER_RECORD_TAIL.at, 8);
    assert.equal(tail[TRANSFER_RECORD_TAIL.family], 6);
    const label = connFlowLabel(s, path);
    assert.ok(label > 0 && label <= 0xfffff, 'a 20-bit label');
    assert.equal(tail[TRANSFER_RECORD_TAIL.flow], label);
    const send = ByteRing.attachShared(block.send);
    const back = rec.read(0, path, send, ByteRing.attachShared(block.recv));
    assert.equal(back.const.localIp, s.const.localIp);
    assert.equal(back.const.remoteIp, s.const.remoteIp);
    assert.deepEqual(keyOfState(back), keyOfState(s));
    validateTcpState(back);

    // Another seed gives the connection another label: its peer would see it change.
    const moved = { ...path, flow: { base: 1, k0: 2, k1: 3 } };
    assert.throws(
      () => rec.read(0, moved, send, ByteRing.attachShared(block.recv)),
      (e) => e instanceof StateValidationError && e.field === 'flow',
    );
    // An IPv6 record read on an IPv4 path, and an IPv4 family word over IPv6 handles.
    const p4 = sampleTrees(1)[0]!.paths[0]!.path;
    assert.throws(
      () => rec.read(0, p4, send, ByteRing.attachShared(block.recv)),
      (e) => e instanceof StateValidationError && e.field === 'family',
    );
    tail[TRANSFER_RECORD_TAIL.family] = 4;
    assert.throws(
      () => rec.read(0, path, send, ByteRing.attachShared(block.recv)),
      (e) => e instanceof StateValidationError && e.field === 'family',
    );
  });

  test('a worker takes a mixed-family batch of records; a malformed IPv6 record refuses it before anything is installed or taken', {
    timeout: 60_000,
  }, async (t) => {
    const { wh } = await setup(41, t);
    const nic = wh.nics[0]!;
    const { owner, request } = recordChannel(nic);
    const book = new AddressTable(new SeededRandom(4));
    // A handle the worker's mirror has never been given.
    const stranger = book.intern(parseIpv6('2001:db8::99'));

    /** One IPv4 connection and two IPv6 ones as records; `spoil` damages the last after it is written. */
    const send = async (
      spoil: ((f: Float64Array, tail: Int32Array, rec: TransferRecord, s: TcpState) => void) | null,
    ) => {
      const trees = [sampleTrees(1)[0]!, tree6(book, 2)];
      const states = flattenTrees(trees);
      for (const s of states) s.soft.ooo = [];
      const batch = pathsOnly(trees);
      const keys: ConnKey[] = states.map(keyOfState);
      const made = states.map(blockFor);
      const recs = made.map((m) => recordOf(m.block));
      states.forEach((s, i) => {
        validateTcpState(s);
        recs[i]!.write(s, 0, i === 0 ? 0 : 1, owner, made[i]!.recv);
      });
      const last = made[2]!.block;
      const base = last.at + TRANSFER_RECORD_AT;
      if (spoil)
        spoil(
          new Float64Array(last.sab, base),
          new Int32Array(last.sab, base + TRANSFER_RECORD_TAIL.at, 8),
          recs[2]!,
          states[2]!,
        );
      const res = await request({
        op: 'initiate',
        arg: {
          batch,
          prod: false,
          blocks: packBlocks(
            keys.length,
            (i) => keys[i]!,
            (i) => made[i]!.block,
            book,
          ),
          owner,
        },
      });
      return { res, recs };
    };

    const at = (name: string): number => transferRecordSlot(name);
    const spoilers: [
      string,
      (f: Float64Array, tail: Int32Array, rec: TransferRecord, s: TcpState) => void,
    ][] = [
      ['the IPv4 family word over IPv6 handles', (_f, tail) => (tail[TRANSFER_RECORD_TAIL.family] = 4)],
      ['a family word that is none', (_f, tail) => (tail[TRANSFER_RECORD_TAIL.family] = 5)],
      ['a flow label the path does not give it', (_f, tail) => (tail[TRANSFER_RECORD_TAIL.flow] ^= 1)],
      ['an IPv4 address where the IPv6 handle was', (f) => (f[at('const.remoteIp')] = 0x0a000002)],
      ['a handle the mirror never bound', (f) => (f[at('const.remoteIp')] = stranger)],
      ['the local handle for the remote one', (f) => (f[at('const.remoteIp')] = f[at('const.localIp')]!)],
      [
        'the IPv4 path for an IPv6 record',
        (_f, _t, rec) => {
          const r = rec as unknown as { i: Int32Array; io: number };
          r.i[r.io + 1] = 0;
        },
      ],
      ['a port of another connection', (f) => (f[at('const.localPort')] = 41000)],
    ];
    const before = (await nic.counters())['nic.initiate.refused'] ?? 0;
    for (const [what, spoil] of spoilers) {
      const { res, recs } = await send(spoil);
      assert.equal(res.value.status, 'failure', what);
      assert.equal(res.value.slots.length, 0, `${what}: nothing installed`);
      assert.equal(nic.load, 0, what);
      for (const r of recs.slice(0, 2)) assert.equal(r.owner, -owner, `${what}: the good records not taken`);
    }
    const c = await nic.counters();
    assert.equal((c['nic.initiate.refused'] ?? 0) - before, spoilers.length);
    assert.equal(c['nic.initiate.records'] ?? 0, 0);

    const { res, recs } = await send(null);
    assert.equal(res.value.status, 'success');
    assert.equal(res.value.slots.length, 3, 'both families installed from their records');
    for (const r of recs) assert.equal(r.owner, owner, 'taken by the NIC');
    const after = await nic.counters();
    assert.equal(after['nic.initiate.records'], 3);
    assert.equal(after['nic.initiate.conns'], 3);
  });
});
