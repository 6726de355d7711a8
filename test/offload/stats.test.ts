import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatStatus } from '../../src/cli/control.ts';
import { StatusReporter } from '../../src/cli/status.ts';
import type { ConnKey, Nic } from '../../src/nic/nic.ts';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import { keysOf, offloadPair, startStreams } from './helpers.ts';

const BYTES = 300_000;

test('per-connection statistics travel with the state: host → NIC → NIC → crash → rebuilt in the host', async () => {
  const p = offloadPair(31);
  const { net, host, peer } = p;
  const st = await startStreams(p, 3, BYTES, 2000, 2);
  const keys = keysOf(st.sockets);
  const peerConn = (k: ConnKey): TcpConnection =>
    peer.stack.tcp.lookup(k.remoteIp, k.remotePort, k.localIp, k.localPort)!;
  const [n0, n1] = host.nics;
  const m = host.offload;
  const status = new StatusReporter(host.stack, 'host', {
    ownerOf: (li, lp, ri, rp) => m.nicOf(li, lp, ri, rp)?.id ?? 'host',
    offloaded: async () =>
      Promise.all(
        (host.nics as readonly Nic[])
          .filter((n) => n.death === null && n.load > 0)
          .map(async (n) => ({ owner: n.id, conns: await n.query() })),
      ),
  });
  const row = async (k: ConnKey) => {
    const snap = await status.snapshot();
    const local = `10.0.0.1:${k.localPort}`;
    for (const t of snap.trees)
      for (const pa of t.paths) for (const c of pa.conns) if (c.local === local) return c;
    throw new Error(`no status row for ${local}`);
  };

  await net.sleep(40);
  // What the peer has received and sent so far is a floor for what the host counts from now on.
  const floor = keys.map((k) => ({ in: peerConn(k).stats.bytesOut, out: peerConn(k).stats.bytesIn }));
  // RSTs counted before the moves (as in-window RSTs answered by a challenge ACK leave them on a
  // live connection): every owner after must go on from these counts.
  const resets = keys.map((_, i) => ({ resetsIn: 3 + i, resetsOut: 1 }));
  for (const [i, k] of keys.entries())
    Object.assign(host.stack.tcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort)!.stats, resets[i]);
  assert.ok(
    floor.every((f) => f.in > 0 && f.out > 0),
    'data has flowed before the first move',
  );
  // Status shows them for a connection in the host, in its rows and its text.
  for (const [i, k] of keys.entries()) {
    const r = await row(k);
    assert.deepEqual([r.owner, r.resetsIn, r.resetsOut], ['host', resets[i]!.resetsIn, 1]);
  }
  assert.match(formatStatus(await status.snapshot()), /rtx \d+ {2}rst 4↓ 1↑/);
  assert.equal((await m.offload(keys, n0 as Nic)).moved.length, 3);
  await net.sleep(40);
  assert.equal((await m.move(keys, n0 as Nic, n1 as Nic)).moved.length, 3);
  await net.sleep(40);
  for (const [i, k] of keys.entries()) {
    const r = await row(k);
    assert.equal(r.owner, n1!.id);
    // The NIC's query carries them (no RST has crossed the wire yet), and its text row shows them.
    assert.deepEqual([r.resetsIn, r.resetsOut], [resets[i]!.resetsIn, 1], 'query() shows resets');
    // A NIC that started counting at its own adoption would show less than the host had counted.
    assert.ok(
      r.bytesIn >= floor[i]!.in,
      `status counts bytes in across moves (${r.bytesIn} >= ${floor[i]!.in})`,
    );
    assert.ok(
      r.bytesOut >= floor[i]!.out,
      `status counts bytes out across moves (${r.bytesOut} >= ${floor[i]!.out})`,
    );
  }
  assert.match(formatStatus(await status.snapshot()), new RegExp(`offloaded:${n1!.id}.* rst 5↓ 1↑`));
  // The NIC dies: the connections are rebuilt in the host from the hard state it left.
  n1!.crash('test');
  const rec = await m.recover(n1 as Nic, 'host');
  assert.equal(rec.moved.length, 3);
  assert.equal(await st.done, 0, 'every byte arrives');
  await net.sleep(200);
  let extraResets = 0;
  for (const [i, k] of keys.entries()) {
    const mine = host.stack.tcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort)?.stats;
    const theirs = peerConn(k)?.stats;
    // Both ends may have closed by now; the host socket keeps its last connection.
    const sock = st.sockets.find((s) => s.localPort === k.localPort)!;
    const h = mine ?? (sock.connection as TcpConnection | null)?.stats;
    assert.ok(h, 'the host still knows the connection');
    // The whole transfer, counted once across four owners: the 4-byte index and the data out,
    // the data in; the same bytes the peer counted the other way.
    assert.equal(h.bytesOut, BYTES + 4);
    assert.equal(h.bytesIn, BYTES);
    if (theirs) {
      assert.equal(h.bytesOut, theirs.bytesIn);
      assert.equal(h.bytesIn, theirs.bytesOut);
    }
    // Through two LocalNics and a crash rebuilt from the record its LocalNic left.
    // None sent by the host; received, the ones set plus any the peer sent since (a RST
    // answering a segment its closed connection no longer knew, counted in TIME_WAIT: see below).
    assert.equal(h.resetsOut, resets[i]!.resetsOut, 'resets out counted across moves');
    assert.ok(h.resetsIn >= resets[i]!.resetsIn, `resets in never start over (${h.resetsIn})`);
    extraResets += h.resetsIn - resets[i]!.resetsIn;
    assert.ok(h.segmentsIn >= BYTES / 2000, `segments in counted across moves (${h.segmentsIn})`);
    assert.ok(h.segmentsOut >= BYTES / 2000, `segments out counted across moves (${h.segmentsOut})`);
  }
  assert.ok(
    extraResets <= (peer.stack.counters.get('tcp.rst.out') ?? 0),
    `RSTs received after the set (${extraResets}) were all sent by the peer`,
  );
  // Those RSTs are harmless, as from Linux: a peer that closed second (LAST_ACK) resent its FIN
  // (tail loss probe or RTO) before the host's ACK of it came back on a loaded machine; it closes on
  // that ACK and answers the host's second one (for the resent FIN, in TIME_WAIT) with a RST, which
  // TIME_WAIT ignores (RFC 1337) after the application had its clean end. A RST that found the host's
  // connection in any other state, or at a NIC, would be a fault.
  assert.equal(
    host.stack.counters.get('tcp.rst.in.time-wait'),
    extraResets,
    'every RST received after the set found the host connection in TIME_WAIT',
  );
  assert.equal(host.stack.counters.get('tcp.rst.in'), extraResets, 'the host stack received no other RST');
  // A RST that reached a live connection would also show here, as ECONNRESET.
  assert.deepEqual(st.errors.map(String), [], 'no socket errors');
  net.close();
});
