import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { InvalidArgumentError } from '../../src/core/errors.ts';
import { BatchList } from '../../src/nic/batch-list.ts';
import { allocConnBlock, type ConnBlockRef } from '../../src/nic/hard-state.ts';
import type { ConnKey, InitiateResult } from '../../src/nic/nic.ts';
import { TupleMap } from '../../src/nic/tuple-map.ts';
import {
  packBlocks,
  packInitiate,
  packKeys,
  unpackBlocks,
  unpackInitiate,
  unpackKeys,
  unpackKnownKeys,
} from '../../src/nic/worker/transfer-wire.ts';

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const port = fc.integer({ min: 1, max: 65535 });
const key = fc.record({ localIp: u32, localPort: port, remoteIp: u32, remotePort: port });

describe('transfer messages in flat words', () => {
  test('keys survive packing, every address and port whole (batches up to 300 keys)', () => {
    fc.assert(
      fc.property(fc.array(key, { minLength: 0, maxLength: 300, size: 'max' }), (keys) => {
        assert.deepEqual(
          unpackKeys(packKeys(keys)),
          keys.map((k) => ({ ...k })),
        );
      }),
      { numRuns: 50 },
    );
  });

  test('keys this side holds come back as its own objects, in order; the others as new ones, whole', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(key, {
          minLength: 1,
          maxLength: 300,
          selector: (k) => `${k.localIp}:${k.localPort}:${k.remoteIp}:${k.remotePort}`,
        }),
        fc.integer({ min: 0, max: 1000 }),
        (keys, seed) => {
          // Every other key (by seed) is held here as an object of this side's.
          const held = new TupleMap<ConnKey>();
          keys.forEach((k, i) => {
            if ((i + seed) % 2 === 0) held.set(k, { ...k });
          });
          const asked: number[] = [];
          const out = unpackKnownKeys(packKeys(keys), null, (t, i) => {
            asked.push(i);
            return held.get(t);
          });
          assert.deepEqual(
            asked,
            keys.map((_, i) => i),
            'asked once per key, in order',
          );
          keys.forEach((k, i) => {
            assert.deepEqual(out[i], { ...k });
            const own = held.get(k);
            if (own !== undefined) assert.equal(out[i], own, 'the held object itself');
          });
          // A new key object each, not the scratch the lookup was asked with.
          const fresh = out.filter((o) => held.get(o) !== o);
          assert.equal(new Set(fresh).size, fresh.length);
        },
      ),
      { numRuns: 50 },
    );
    assert.throws(() => unpackKnownKeys(new Uint32Array(5), null, () => undefined), InvalidArgumentError);
  });

  test('packed keys of the wrong shape are refused with a typed error', () => {
    assert.throws(() => unpackKeys(new Uint32Array(5)), InvalidArgumentError);
    assert.throws(() => unpackKeys([1, 2, 3, 4] as unknown as Uint32Array), InvalidArgumentError);
  });

  test('blocks keep their buffer, offsets and capacities; a buffer travels once', () => {
    const keys: ConnKey[] = Array.from({ length: 100 }, (_, i) => ({
      localIp: 0x0a000001,
      localPort: 40000 + i,
      remoteIp: 0xc0a80001,
      remotePort: 443,
    }));
    const blocks = keys.map((k) => [k, allocConnBlock(4096, 8192)] as const);
    const p = packBlocks(
      blocks.length,
      (i) => blocks[i]![0],
      (i) => blocks[i]![1],
    );
    assert.equal(p.sabs.length, new Set(blocks.map(([, b]) => b.sab)).size);
    const back = unpackBlocks(p);
    assert.equal(back.size, 100);
    for (const [k, b] of blocks) assert.deepEqual(back.get(k), b);
    assert.throws(() => unpackBlocks({ ...p, words: p.words.subarray(6) }), InvalidArgumentError);
    const bad = new Int32Array(p.words);
    bad[0] = 99;
    assert.throws(() => unpackBlocks({ ...p, words: bad }), InvalidArgumentError);
  });

  test('an initiate answer keeps every outcome, reason and installed slot', () => {
    const k = (i: number): ConnKey => ({ localIp: 1, localPort: i, remoteIp: 0xffffffff, remotePort: 80 });
    const r: InitiateResult = {
      status: 'partial',
      conns: [
        { key: k(1), status: 'success' },
        { key: k(2), status: 'no-resources', reason: 'capacity 1 reached' },
        { key: k(3), status: 'failure', reason: 'already offloaded here' },
      ],
    };
    const block = allocConnBlock(16, 16);
    const p = packInitiate(r, [{ key: k(1), slot: 7, block }]);
    const { result, installed } = unpackInitiate(structuredClone(p));
    assert.deepEqual(result, r);
    assert.equal(installed.length, 1);
    assert.deepEqual(installed[0]!.key, k(1));
    assert.equal(installed[0]!.slot, 7);
    assert.equal(installed[0]!.block.send.offset, block.send.offset);
    assert.throws(() => unpackInitiate({ ...p, codes: new Uint8Array([0, 9, 0]) }), InvalidArgumentError);
  });

  test("a block the host gave comes back as the host's own object, its buffer not sent again; a claim of one it did not give is refused", () => {
    const k = (i: number): ConnKey => ({ localIp: 1, localPort: i, remoteIp: 2, remotePort: 80 });
    const given = allocConnBlock(4096, 4096);
    const own = allocConnBlock(16, 16);
    const r: InitiateResult = {
      status: 'success',
      conns: [
        { key: k(1), status: 'success' },
        { key: k(2), status: 'success' },
      ],
    };
    const p = packInitiate(r, [
      { key: k(1), slot: 0, block: given, given: true },
      { key: k(2), slot: 1, block: own },
    ]);
    assert.deepEqual(p.installed.sabs, [own.sab], "only the worker's own buffer travels");
    const byId = new TupleMap<ConnBlockRef>().set(k(1), given);
    const { installed } = unpackInitiate(structuredClone(p), null, byId);
    assert.equal(installed[0]!.block, given, 'the very object the host gave');
    assert.equal(installed[1]!.block.send.offset, own.send.offset);
    // Without the host's block, or with one at another place, the answer is refused.
    assert.throws(() => unpackInitiate(structuredClone(p)), InvalidArgumentError);
    const elsewhere = allocConnBlock(4096, 4096);
    assert.throws(
      () => unpackInitiate(structuredClone(p), null, new TupleMap<ConnBlockRef>().set(k(1), elsewhere)),
      InvalidArgumentError,
    );
  });
  test("an answer is paired with the host's batch by place only where the tuples agree: out of order, with refusals, or naming a key not sent", () => {
    // The host's side of a batch of six: its keys and the blocks it gave, in the order sent.
    const k = (i: number): ConnKey => ({
      localIp: 0x0a000001,
      localPort: 40000 + i,
      remoteIp: 0x0a000002,
      remotePort: 80,
    });
    const sent = new BatchList<{ key: ConnKey; block: ConnBlockRef }>();
    for (let i = 0; i < 6; i++) sent.push({ key: k(i), block: allocConnBlock(4096, 4096) });
    const blockOf = (i: number) => sent.list[i]!.block;
    const given = () => {
      sent.rewind();
      return { get: (key: ConnKey) => sent.get(key)?.block, keys: sent.list.map((e) => e.key) };
    };
    const answer = (order: number[], refused: number[]) =>
      structuredClone(
        packInitiate(
          {
            status: refused.length === 0 ? 'success' : 'partial',
            conns: order.map((i) =>
              refused.includes(i)
                ? { key: k(i), status: 'failure', reason: 'no' }
                : { key: k(i), status: 'success' },
            ),
          },
          order
            .filter((i) => !refused.includes(i))
            .map((i, slot) => ({ key: k(i), slot, block: blockOf(i), given: true })),
        ),
      );
    // In order, all installed: the keys cross once, one array named twice (a clone keeps it one);
    // the host's own key and block objects, none made.
    const once = answer([0, 1, 2, 3, 4, 5], []);
    assert.equal(once.installed.keys, once.keys, 'the installed keys are the answer keys, one array');
    assert.equal(answer([0, 1, 2, 3, 4, 5], [3]).installed.keys.length, 5 * 10, 'a refusal: its own list');
    const inOrder = unpackInitiate(once, null, given());
    inOrder.installed.forEach((inst, i) => {
      assert.equal(inst.key, sent.list[i]!.key, `key ${i} is the host's object`);
      assert.equal(inst.block, blockOf(i));
    });
    // Out of order, two refused: each installed connection gets its own block and tuple.
    const order = [3, 0, 5, 1, 4, 2];
    const mixed = unpackInitiate(answer(order, [0, 4]), null, given());
    assert.deepEqual(
      mixed.result.conns.map((c) => [c.key.localPort, c.status]),
      order.map((i) => [40000 + i, i === 0 || i === 4 ? 'failure' : 'success']),
    );
    assert.deepEqual(
      mixed.installed.map((c) => c.key.localPort),
      [3, 5, 1, 2].map((i) => 40000 + i),
    );
    for (const inst of mixed.installed)
      assert.equal(inst.block, blockOf(inst.key.localPort - 40000), 'its own block');
    // The host's batch looked up out of order finds each entry by its tuple.
    sent.rewind();
    for (const i of [5, 2, 2, 0, 4]) assert.equal(sent.get(k(i))?.block, blockOf(i));
    assert.equal(sent.get(k(9)), undefined);
    // A key the host did not send, claiming a given block at the place of one it did: refused.
    const bad = answer([0, 1, 2, 3, 4, 5], []);
    bad.keys.set(packKeys([k(9)]), 2 * 10);
    assert.throws(() => unpackInitiate(bad, null, given()), InvalidArgumentError);
    // A key one port off the host's at its place: read as the tuple it is, not as the host's key;
    // and claiming that place's block for it is refused.
    const other = answer([0, 1, 2, 3, 4, 5], []);
    const near = { ...k(1), remotePort: 81 };
    // An answer whose installed keys are another array (a worker's answer with refusals is one).
    other.installed.keys = other.keys.slice();
    other.keys.set(packKeys([near]), 1 * 10);
    const r = unpackInitiate(structuredClone(other), null, given());
    assert.deepEqual(r.result.conns[1]!.key, near);
    assert.equal(r.installed[1]!.key, sent.list[1]!.key);
    other.installed.keys.set(packKeys([near]), 1 * 10);
    assert.throws(() => unpackInitiate(other, null, given()), InvalidArgumentError);
  });
});
