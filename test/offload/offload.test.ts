import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import {
  type ConnKey,
  type InitiateResult,
  isTreeTransfer,
  type Nic,
  type Transfer,
} from '../../src/nic/nic.ts';
import { POLICY_BATCH } from '../../src/offload/policy.ts';
import { buildTrees, flattenTrees } from '../../src/state/offload-tree.ts';
import { decodeBatch, encodeBatch, STATE_CODEC_LAYOUT } from '../../src/state/state-codec.ts';
import type { TcpState } from '../../src/state/tcp-state.ts';
import { readMac } from '../../src/wire/addr.ts';
import { offloadPair, type Pair, startStreams } from './helpers.ts';

function keysOf(p: Pair): ConnKey[] {
  return [...p.host.stack.tcp.connections()].map((c) => ({
    localIp: c.localIp,
    localPort: c.localPort,
    remoteIp: c.remoteIp,
    remotePort: c.remotePort,
  }));
}

/** Record the destination MAC and IP length of every TCP frame a NIC puts on its link. */
function tapTx(nic: LocalNic): { dst: number; ipLen: number }[] {
  const seen: { dst: number; ipLen: number }[] = [];
  const link = nic.engine.link;
  const send = link.send.bind(link);
  link.send = (frame: Uint8Array) => {
    if (frame[12] === 0x08 && frame[13] === 0x00 && frame[23] === 6) {
      seen.push({ dst: readMac(frame, 0), ipLen: (frame[16]! << 8) | frame[17]! });
    }
    return send(frame);
  };
  return seen;
}

describe('offload through LocalNics', () => {
  test('a neighbor MAC change and a path MTU drop reach every offloaded connection', async () => {
    const p = offloadPair(11);
    const { net, host } = p;
    const st = await startStreams(p, 40, 60_000, 1400, 10);
    const [n0, n1] = host.nics as LocalNic[];
    const r = await host.offload.offload('all');
    assert.equal(r.moved.length, 40);
    assert.ok(n0!.load > 0 && n1!.load > 0, 'spread over both NICs');
    const tx = [tapTx(n0!), tapTx(n1!)];
    const peerIp = 0x0a000002;
    const realMac = host.stack.neighbors.lookup(peerIp)!.mac;
    const fakeMac = 0x02aabbccddee;

    host.stack.neighbors.setStatic(peerIp, fakeMac);
    await net.sleep(30);
    for (const t of tx) t.length = 0;
    await net.sleep(30);
    const q = [...(await n0!.query()), ...(await n1!.query())];
    assert.equal(q.length, 40);
    assert.ok(q.every((x) => x.dstMac === fakeMac));
    const frames = [...tx[0]!, ...tx[1]!];
    assert.ok(frames.length > 0, 'connections kept sending');
    assert.ok(
      frames.every((f) => f.dst === fakeMac),
      'every frame goes to the new MAC',
    );

    host.stack.neighbors.setStatic(peerIp, realMac);
    host.stack.ip.updatePmtu(0x0a000001, peerIp, 1000);
    await net.sleep(5);
    for (const t of tx) t.length = 0;
    await net.sleep(40);
    const q2 = [...(await n0!.query()), ...(await n1!.query())];
    assert.ok(q2.every((x) => x.mtu === 1000 && x.dstMac === realMac));
    const after = [...tx[0]!, ...tx[1]!];
    assert.ok(after.length > 0);
    assert.ok(
      after.every((f) => f.ipLen <= 1000),
      `largest ${Math.max(...after.map((f) => f.ipLen))}`,
    );
    assert.ok(after.every((f) => f.dst === realMac));
    assert.ok(
      after.some((f) => f.ipLen > 900),
      'full-sized segments use the new MTU',
    );

    assert.equal(await st.done, 0, 'every byte arrives');
    assert.deepEqual(st.errors, []);
    net.close();
  });

  test('malformed trees are refused whole and the connections keep running where they were', async () => {
    const p = offloadPair(12);
    const { net, host } = p;
    const st = await startStreams(p, 6, 40_000, 1000, 10);
    const nic = host.nics[0] as LocalNic;
    await net.sleep(20);
    const now = net.now();
    const live = [...host.stack.tcp.connections()].map((c) => c.state);
    const good = encodeBatch(buildTrees(live), now);
    const copies = (): TcpState[] => flattenTrees(decodeBatch(good, now));
    const withCopies = (mutate: (s: TcpState) => void): Uint8Array => {
      const states = copies();
      mutate(states[0]!);
      return encodeBatch(buildTrees(states), now, { skipValidation: true });
    };
    const versioned = good.slice();
    versioned[5] = 99;
    const dangling = good.slice();
    // The first path record starts with the index of its neighbor: point it at one that is not there.
    new DataView(dangling.buffer).setUint32(
      STATE_CODEC_LAYOUT.headerSize + STATE_CODEC_LAYOUT.neighborSize,
      7,
    );
    const cases: [string, Uint8Array][] = [
      ['truncated', good.subarray(0, good.length - 9)],
      ['unknown version', versioned],
      ['dangling parent', dangling],
      [
        'bad sequence order',
        withCopies((s) => {
          s.delegated.sndNxt = (s.delegated.sndMax + 10) >>> 0;
        }),
      ],
      [
        'window beyond scale',
        withCopies((s) => {
          s.delegated.sndWnd = 65535 * 2 ** s.const.sndWscale + 1;
        }),
      ],
    ];
    for (const [name, batch] of cases) {
      const res: InitiateResult = await nic.initiate(batch);
      assert.equal(res.status, 'failure', name);
      assert.deepEqual(res.conns, [], `${name}: nothing installed`);
      assert.equal(nic.load, 0, `${name}: NIC holds nothing`);
      assert.ok(res.reason && res.reason.length > 0, `${name}: a reason is given`);
    }
    assert.equal(host.stack.tcp.size, 6, 'every connection still runs in the host');
    assert.equal(await st.done, 0, 'every byte arrives');
    assert.deepEqual(st.errors, []);
    net.close();
  });

  test('a refusing target sends connections back to their source, data intact', async () => {
    const p = offloadPair(13);
    const { net, host } = p;
    const st = await startStreams(p, 10, 40_000, 1000, 10);
    const [n0, n1] = host.nics as LocalNic[];
    // The general protocol's initiate is what refuses here (a live hand-over does not call it).
    host.offload.liveHandover = false;
    // n1 refuses every other connection, as a target with a failing validator would.
    const real = n1!.initiate.bind(n1);
    let calls = 0;
    n1!.initiate = async (batch: Transfer) => {
      // In this thread the trees arrive as objects; either form must be honoured.
      const trees = isTreeTransfer(batch) ? batch.trees : decodeBatch(batch, net.now());
      const states = flattenTrees(trees);
      const keep = states.filter((_, i) => i % 2 === 0);
      calls++;
      const res = await real(
        isTreeTransfer(batch)
          ? { kind: 'trees', trees: buildTrees(keep) }
          : encodeBatch(buildTrees(keep), net.now()),
      );
      for (const s of states.filter((_, i) => i % 2 === 1)) {
        const c = s.const;
        res.conns.push({
          key: { localIp: c.localIp, localPort: c.localPort, remoteIp: c.remoteIp, remotePort: c.remotePort },
          status: 'failure',
          reason: 'test refusal',
        });
      }
      return { ...res, status: 'partial' };
    };
    const toHost = await host.offload.offload('all', n1 as Nic);
    assert.equal(toHost.moved.length, 5);
    assert.equal(toHost.refused.length, 5);
    assert.equal(host.stack.tcp.size, 5, 'refused ones stay in the host');
    await net.sleep(20);
    await host.offload.offload('all', n0 as Nic);
    assert.equal(n0!.load, 5);
    const moved = await host.offload.move('all', n0 as Nic, n1 as Nic);
    assert.equal(moved.moved.length, 3);
    assert.equal(n0!.load, 2, 'refused ones went back to the source NIC');
    assert.equal(n1!.load, 8);
    assert.ok(calls >= 2);
    assert.equal(await st.done, 0, 'every byte arrives');
    assert.deepEqual(st.errors, []);
    net.close();
  });

  test("capacity: the overflow gets 'no-resources' and stays in the host", async () => {
    const p = offloadPair(14, { nics: 1, nicCapacity: 4 });
    const { net, host } = p;
    const st = await startStreams(p, 7, 30_000, 1000, 10);
    const nic = host.nics[0]!;
    const r = await host.offload.offload('all');
    assert.equal(r.moved.length, 4);
    assert.deepEqual(
      r.refused.map((x) => x.status),
      ['no-resources', 'no-resources', 'no-resources'],
    );
    assert.equal(nic.load, 4);
    assert.equal(host.stack.tcp.size, 3);
    assert.equal(await st.done, 0);
    assert.deepEqual(st.errors, []);
    net.close();
  });

  test('upload requests: mandatory reasons are honoured, advisory ones by policy; invalidate uploads', async () => {
    const p = offloadPair(15, { policy: { advisory: ['small-io'] } });
    const { net, host } = p;
    const st = await startStreams(p, 8, 40_000, 1000, 10);
    const [n0] = host.nics as LocalNic[];
    await host.offload.offload('all', n0 as Nic);
    assert.equal(n0!.load, 8);
    const keys = host.offload.keysOn(n0 as Nic);
    n0!.emit('upload-requested', keys.slice(0, 2), 'low-activity');
    await net.sleep(5);
    assert.equal(n0!.load, 8, 'advisory reason not in the policy: ignored');
    n0!.emit('upload-requested', keys.slice(0, 2), 'urgent-data');
    await net.sleep(5);
    assert.equal(n0!.load, 6, 'mandatory reason: uploaded');
    n0!.emit('upload-requested', keys.slice(2, 3), 'small-io');
    await net.sleep(5);
    assert.equal(n0!.load, 5, 'advisory reason the policy accepts: uploaded');
    await n0!.invalidate({ neighborIp: 0x0a000002 });
    await net.sleep(5);
    assert.equal(n0!.load, 0, 'invalidate: the target asks, the host takes them all back');
    assert.equal(host.stack.tcp.size, 8);
    assert.equal(await st.done, 0);
    assert.deepEqual(st.errors, []);
    net.close();
  });

  test('policy: connections are offloaded once they have lived long enough', async () => {
    const p = offloadPair(16, { policy: { mode: 'after', minAgeMs: 50, minBytes: 1e9, scanIntervalMs: 10 } });
    const { net, host } = p;
    host.createServer(() => {}).listen(80);
    const st = await startStreams(p, 5, 30_000, 1000, 10);
    assert.equal(host.offload.offloadedCount, 0, 'too young at first');
    await net.sleep(120);
    assert.equal(host.offload.offloadedCount, 5);
    assert.equal(keysOf(p).length, 0, 'no stream is left in the host');
    assert.equal(await st.done, 0);
    net.close();
  });

  test('policy: many ready at once go in transfers of at most POLICY_BATCH, one after the other', async () => {
    const p = offloadPair(17, { policy: { mode: 'after', minAgeMs: 50, minBytes: 1e9, scanIntervalMs: 10 } });
    const { net, host } = p;
    const sizes: number[] = [];
    // The policy's own way in (OffloadManager.policyOffload), which the scanner calls.
    const m = host.offload as unknown as { policyOffload: (c: unknown[]) => Promise<unknown> };
    const offload = m.policyOffload.bind(m);
    m.policyOffload = (conns) => {
      sizes.push(conns.length);
      return offload(conns);
    };
    const n = POLICY_BATCH * 2 + 20;
    const st = await startStreams(p, n, 30_000, 1000, 10);
    await net.sleep(200);
    assert.equal(host.offload.offloadedCount, n, 'every one offloaded in the end');
    assert.deepEqual(sizes, [POLICY_BATCH, POLICY_BATCH, 20], 'in batches of at most POLICY_BATCH');
    assert.equal(await st.done, 0);
    net.close();
  });
});
