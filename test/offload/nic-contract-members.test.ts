/**
 * The general transfer protocol asks a target what it offers through the Nic contract's optional
 * members (`takesTrees`, `takeAndDrop`, `decodeReleased`), whatever its class: a target reached by
 * its verbs that offers them is handed trees, settled with one request and reads its own
 * terminate's bytes; one that does not is handed the codec's bytes, asked for its held segments
 * and to drop them in two requests, and its bytes are decoded by the codec. Before, the transfer
 * tested for a HostNic, so any other target got the second way whatever it offered.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  type ConnKey,
  type InitiateOptions,
  type InitiateResult,
  isTreeTransfer,
  type Nic,
  type OffloadUpdate,
  type QueryResult,
  type Transfer,
} from '../../src/nic/nic.ts';
import type { OffloadTree } from '../../src/state/offload-tree.ts';
import type { AddressBook } from '../../src/state/path-state.ts';
import { decodeBatch } from '../../src/state/state-codec.ts';
import { EngineNic, keysOf, nicRig, startStreams } from './helpers.ts';

/**
 * A target that is neither a LocalNic nor a WorkerNic and is reached by its verbs only (not in
 * process, no `engine`): an engine on a link, run a turn later as another thread's would be. It
 * counts the verbs the transfer asks of it.
 */
class VerbNic extends EngineNic implements Nic {
  readonly inProcess = false;
  /** The form of every initiate's transfer, in order. */
  readonly initiated: ('trees' | 'bytes')[] = [];
  readonly calls = { takeQueued: 0, dropFrozen: 0, takeAndDrop: 0, decodeReleased: 0 };

  protected later<T>(fn: () => T): Promise<T> {
    return new Promise((resolve, reject) =>
      this.clock.defer(() => {
        try {
          resolve(fn());
        } catch (e) {
          reject(e);
        }
      }),
    );
  }

  initiate(batch: Transfer, opts?: InitiateOptions): Promise<InitiateResult> {
    this.initiated.push(isTreeTransfer(batch) ? 'trees' : 'bytes');
    return this.later(() => this.eng.initiate(batch, opts));
  }
  terminate(keys: ConnKey[] | 'all'): Promise<Uint8Array>;
  terminate(keys: ConnKey[] | 'all', opts: object): Promise<Transfer>;
  terminate(keys: ConnKey[] | 'all'): Promise<Transfer> {
    return this.later(() => this.eng.terminate(keys));
  }
  update(u: OffloadUpdate): Promise<void> {
    return this.later(() => this.eng.update(u));
  }
  query(keys?: ConnKey[]): Promise<QueryResult[]> {
    return this.later(() => this.eng.query(keys));
  }
  progressScan(): Promise<Float64Array> {
    return this.later(() => this.eng.progressScan());
  }
  takeQueued(keys: ConnKey[]): Promise<Uint8Array[]> {
    this.calls.takeQueued++;
    return this.later(() => this.eng.takeQueued(keys));
  }
  dropFrozen(keys: ConnKey[]): Promise<void> {
    this.calls.dropFrozen++;
    return this.later(() => this.eng.dropFrozen(keys));
  }
}

/** The same target offering the contract's optional members. */
class OfferingNic extends VerbNic {
  readonly takesTrees = true;
  takeAndDrop(keys: ConnKey[]): Promise<Uint8Array[]> {
    this.calls.takeAndDrop++;
    return this.later(() => {
      const held = this.eng.takeQueued(keys);
      this.eng.dropFrozen(keys);
      return held;
    });
  }
  decodeReleased(bytes: Uint8Array, now: number, addrs?: AddressBook): OffloadTree[] {
    this.calls.decodeReleased++;
    return decodeBatch(bytes, now, { addrs });
  }
}

/** Offload three streaming connections to the first target, move them to the second, upload them. */
async function roundTrip(offering: boolean) {
  const Kind = offering ? OfferingNic : VerbNic;
  const { net, nics, m, pair, close } = nicRig(
    43,
    'verb',
    (id, link, clock, random) => new Kind(id, link, clock, random),
  );
  const [v0, v1]: VerbNic[] = nics;
  const st = await startStreams(pair, 3, 150_000, 2000, 2);
  const keys = keysOf(st.sockets);
  await net.sleep(20);
  const off = await m.offload(keys, v0);
  assert.equal(off.moved.length, 3, JSON.stringify(off.refused));
  await net.sleep(20);
  const moved = await m.move(keys, v0, v1);
  assert.equal(moved.moved.length, 3, JSON.stringify(moved.refused));
  await net.sleep(20);
  const up = await m.upload(keys);
  assert.equal(up.moved.length, 3, JSON.stringify(up.refused));
  assert.equal(await st.done, 0, 'every byte arrived');
  assert.deepEqual(st.errors, []);
  close();
  return { v0, v1 };
}

test('a target reached by its verbs that offers takesTrees, takeAndDrop and decodeReleased is handed trees, settled in one request, and reads its own bytes', async () => {
  const { v0, v1 } = await roundTrip(true);
  assert.deepEqual(v0.initiated, ['trees'], 'the host handed it the trees (takesTrees)');
  // A move between two targets whose bytes carry every state passes the source's bytes on as
  // they are, whatever the destination takes.
  assert.deepEqual(v1.initiated, ['bytes']);
  for (const v of [v0, v1]) {
    assert.ok(v.calls.takeAndDrop >= 1, `${v.id}: its held segments taken with takeAndDrop`);
    assert.equal(v.calls.takeQueued, 0, `${v.id}: no separate takeQueued`);
    assert.equal(v.calls.dropFrozen, 0, `${v.id}: no separate dropFrozen`);
    assert.ok(v.calls.decodeReleased >= 1, `${v.id}: its terminate's bytes read by its decodeReleased`);
  }
});

test('a target reached by its verbs that offers none of them is handed bytes and settled in two requests', async () => {
  const { v0, v1 } = await roundTrip(false);
  assert.deepEqual(v0.initiated, ['bytes']);
  assert.deepEqual(v1.initiated, ['bytes']);
  for (const v of [v0, v1]) {
    assert.ok(v.calls.takeQueued >= 1, `${v.id}: takeQueued asked for`);
    assert.equal(v.calls.dropFrozen, v.calls.takeQueued, `${v.id}: each followed by its dropFrozen`);
    assert.equal(v.calls.takeAndDrop, 0);
    assert.equal(v.calls.decodeReleased, 0);
  }
});
