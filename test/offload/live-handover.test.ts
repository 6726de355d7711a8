/**
 * Transfers between owners of one thread (the host and LocalNics) hand the live TcpConnection
 * over: detached from one layer and attached to the other in one turn, the same object with its
 * rings, timer, RACK log, SACK board and counts.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { LocalNic } from '../../src/nic/local-nic.ts';
import type { ConnKey } from '../../src/nic/nic.ts';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import { connBytes } from '../../src/stack/tcp/tcp-mem.ts';
import { TcpStateId } from '../../src/state/tcp-state.ts';
import { keysOf, offloadPair, startStreams } from './helpers.ts';

const lookup = (tcp: LocalNic['engine']['tcp'], k: ConnKey): TcpConnection | undefined =>
  tcp.lookup(k.localIp, k.localPort, k.remoteIp, k.remotePort);

/**
 * Three connections offloaded to the first LocalNic; the first closes at the host's end first, so
 * its connection waits out TIME_WAIT at the NIC.
 */
async function timeWaitBatch() {
  const { net, host, peer } = offloadPair(87);
  await host.ping('10.0.0.2');
  peer
    .createServer((s) => {
      s.on('end', () => s.end());
      s.resume();
    })
    .listen(80);
  const socks = [0, 1, 2].map(() => host.connect(80, '10.0.0.2'));
  while (socks.some((s) => s.connecting)) await net.sleep(1);
  for (const s of socks) s.resume();
  const keys = keysOf(socks);
  const [n0, n1] = host.nics as LocalNic[];
  const m = host.offload;
  assert.equal((await m.offload(keys, n0!)).moved.length, 3);
  socks[0]!.end();
  await net.sleep(20);
  assert.equal(lookup(n0!.engine.tcp, keys[0]!)?.state.delegated.state, TcpStateId.TIME_WAIT);
  return { net, host, socks, keys, n0: n0!, n1: n1!, m };
}

describe('live hand-over between owners of one thread', () => {
  test('the same connection object runs at each owner in turn, its counts carried', async () => {
    const p = offloadPair(81);
    const { net, host } = p;
    const st = await startStreams(p, 4, 200_000, 2000, 2);
    const keys = keysOf(st.sockets);
    const [n0, n1] = host.nics as LocalNic[];
    const m = host.offload;
    await net.sleep(30);
    const conns = keys.map((k) => lookup(host.stack.tcp, k)!);
    const before = conns.map((c) => c.stats.segmentsIn);
    assert.ok(
      before.every((n) => n > 0),
      'data flowed before the move',
    );
    assert.equal((await m.offload(keys, n0!)).moved.length, 4);
    for (const [i, k] of keys.entries()) {
      assert.equal(lookup(n0!.engine.tcp, k), conns[i], 'the NIC runs the host’s own object');
      assert.equal(lookup(host.stack.tcp, k), undefined, 'the host runs it no more');
      assert.ok(host.stack.tcp.isFrozen(k.localIp, k.localPort, k.remoteIp, k.remotePort), 'host forwards');
      assert.ok(conns[i]!.stats.segmentsIn >= before[i]!, 'counts carried, not restarted');
    }
    await net.sleep(30);
    assert.equal((await m.move(keys, n0!, n1!)).moved.length, 4);
    for (const [i, k] of keys.entries()) assert.equal(lookup(n1!.engine.tcp, k), conns[i]);
    assert.equal(n0!.load, 0);
    await net.sleep(30);
    assert.equal((await m.upload(keys)).moved.length, 4);
    for (const [i, k] of keys.entries()) {
      assert.equal(lookup(host.stack.tcp, k), conns[i]);
      assert.ok(!host.stack.tcp.isFrozen(k.localIp, k.localPort, k.remoteIp, k.remotePort), 'no placeholder');
    }
    assert.equal(n1!.load, 0);
    const hc = host.stack.counters;
    assert.equal(hc.get('offload.handover'), 12);
    assert.equal(hc.get('tcp.released'), 0, 'no state was released to be rebuilt');
    assert.equal(hc.get('tcp.detached'), 4);
    assert.equal(hc.get('tcp.attached'), 4);
    assert.equal(n0!.counters.get('tcp.attached') + n1!.counters.get('tcp.attached'), 8);
    assert.equal(await st.done, 0, 'every byte arrived');
    assert.deepEqual(st.errors, []);
    net.close();
  });

  test('timers fire on the owner that runs the connection now, and on no other', async () => {
    const { net, host, peer } = offloadPair(82);
    await host.ping('10.0.0.2');
    peer.createServer(() => {}).listen(80);
    // Idle connections with keepalive (a probe after 200 ms idle, then Linux's 75 s interval):
    // only their timers make them send.
    const sockets = [host.connect(80, '10.0.0.2'), host.connect(80, '10.0.0.2')];
    while (sockets.some((s) => s.connecting)) await net.sleep(5);
    for (const s of sockets) s.setKeepAlive(true, 200);
    const keys = keysOf(sockets);
    const [n0, n1] = host.nics as LocalNic[];
    const m = host.offload;
    const probes = (c: { get(n: string): number }) => c.get('tcp.keepalive.probes');
    assert.equal((await m.offload(keys, n0!)).moved.length, 2);
    const host0 = probes(host.stack.counters);
    await net.sleep(80_000);
    const at0 = probes(n0!.counters);
    assert.ok(at0 > 0, 'the NIC that runs them sends the probes');
    assert.equal(probes(host.stack.counters), host0, 'the host’s layer fires no timer of theirs');
    assert.equal((await m.move(keys, n0!, n1!)).moved.length, 2);
    await net.sleep(80_000);
    assert.equal(probes(n0!.counters), at0, 'the old NIC fires none after the move');
    assert.ok(probes(n1!.counters) > 0, 'the new NIC does');
    assert.equal((await m.upload(keys)).moved.length, 2);
    const at1 = probes(n1!.counters);
    await net.sleep(80_000);
    assert.equal(probes(n1!.counters), at1, 'nor the NIC it left');
    assert.ok(probes(host.stack.counters) > host0, 'the host again');
    for (const s of sockets) assert.ok(!s.destroyed, 'the peer answered every probe');
    net.close();
  });

  test('a NIC that crashes after a hand-over leaves hard state: rebuilt in the host, every byte', async () => {
    const NC = 6;
    const p = offloadPair(83);
    const { net, host } = p;
    const st = await startStreams(p, NC, 300_000, 2000, 2);
    const keys = keysOf(st.sockets);
    const [n0, n1] = host.nics as LocalNic[];
    const m = host.offload;
    await net.sleep(40);
    assert.equal((await m.offload(keys, n0!)).moved.length, NC);
    await net.sleep(40);
    assert.equal((await m.move(keys, n0!, n1!)).moved.length, NC);
    await net.sleep(40);
    n1!.crash('test: after a live hand-over');
    const r = await m.recover(n1!, 'host');
    assert.equal(r.moved.length, NC, 'all rebuilt');
    assert.equal(host.stack.counters.get('offload.rebuilt'), NC);
    assert.equal(await st.done, 0, 'every byte arrived');
    assert.deepEqual(st.errors, []);
    net.close();
  });

  test('a full or link-down NIC takes nothing: the connections stay where they ran', async () => {
    const p = offloadPair(84, { nicCapacity: 3 });
    const { net, host } = p;
    const st = await startStreams(p, 5, 100_000, 2000, 2);
    const keys = keysOf(st.sockets);
    const [n0, n1] = host.nics as LocalNic[];
    const m = host.offload;
    const r = await m.offload(keys, n0!);
    assert.equal(r.moved.length, 3);
    assert.deepEqual(
      r.refused.map((x) => x.status),
      ['no-resources', 'no-resources'],
    );
    assert.equal(host.stack.tcp.size, 2, 'the overflow runs in the host');
    host.ports[1]!.cut();
    assert.equal(n1!.linkUp, false);
    const mv = await m.move(m.keysOn(n0!), n0!, n1!);
    assert.equal(mv.moved.length, 0);
    assert.deepEqual(
      mv.refused.map((x) => x.reason),
      ['link down', 'link down', 'link down'],
    );
    assert.equal(n0!.load, 3, 'still where they ran');
    assert.equal(n1!.load, 0);
    host.ports[1]!.restore();
    assert.equal(await st.done, 0, 'every byte arrived');
    assert.deepEqual(st.errors, []);
    net.close();
  });
  test('a connection keeps one key object and one host record through its moves; a record gone stale is looked up', async () => {
    const p = offloadPair(86);
    const { net, host } = p;
    const st = await startStreams(p, 4, 100_000, 2000, 2);
    const keys = keysOf(st.sockets);
    const [n0, n1] = host.nics as LocalNic[];
    const m = host.offload;
    const conns = keys.map((k) => lookup(host.stack.tcp, k)!);
    const record = (c: TcpConnection) => c.tableEntry?.tag;
    const first = await m.offload(keys, n0!);
    assert.deepEqual(first.moved, keys);
    assert.deepEqual(
      first.moved.map((k, i) => k === conns[i]!.key),
      [true, true, true, true],
      'reported by the connection’s own key',
    );
    const records = conns.map(record);
    assert.ok(records.every((r) => r !== undefined));
    const named = m.keysOn(n0!);
    await net.sleep(20);
    assert.equal((await m.move(named, n0!, n1!)).moved.length, 4);
    assert.deepEqual(conns.map(record), records, 'a move re-points the record');
    assert.equal((await m.upload(named)).moved.length, 4);
    assert.ok(conns.every((c) => c.tableEntry?.taggedBy === null));
    await net.sleep(20);
    const again = await m.offload(keys, n1!);
    assert.deepEqual(
      again.moved.map((k, i) => k === first.moved[i]),
      [true, true, true, true],
      'the same key objects as the first offload',
    );
    assert.deepEqual(conns.map(record), records, 'the record of the last offload taken up again');
    // Through the general protocol the NIC runs objects of its own: the record names none, and
    // a hand-over back looks each key up.
    m.liveHandover = false;
    assert.equal((await m.move(keys, n1!, n0!)).moved.length, 4);
    m.liveHandover = true;
    assert.ok(keys.every((k) => m.ownerOf(k) === n0));
    assert.equal((await m.move(keys, n0!, n1!)).moved.length, 4);
    assert.equal((await m.upload(keys)).moved.length, 4);
    for (const k of keys) assert.ok(lookup(host.stack.tcp, k));
    assert.equal(await st.done, 0, 'every byte arrived');
    assert.deepEqual(st.errors, []);
    net.close();
  });

  test('the host and its LocalNics keep one four-tuple store; a move rolled back runs at its source again', async () => {
    const p = offloadPair(85, { nicCapacity: 2 });
    const { net, host } = p;
    const st = await startStreams(p, 4, 100_000, 2000, 2);
    const keys = keysOf(st.sockets);
    const [n0, n1] = host.nics as LocalNic[];
    const m = host.offload;
    const hostTable = host.stack.tcp.table;
    assert.ok(n0!.engine.tcp.table.sharesWith(hostTable) && n1!.engine.tcp.table.sharesWith(hostTable));
    const conn = lookup(host.stack.tcp, keys[0]!)!;
    const entry = conn.tableEntry;
    assert.equal((await m.offload(keys.slice(0, 2), n0!)).moved.length, 2);
    assert.equal((await m.offload(keys.slice(2), n1!)).moved.length, 2);
    assert.equal(conn.tableEntry, entry, 'offloaded in the entry it had in the host');
    // The general protocol releases at the source, and the full destination refuses: back to n0.
    m.liveHandover = false;
    const mv = await m.move(keys.slice(0, 2), n0!, n1!);
    assert.equal(mv.moved.length, 0);
    assert.deepEqual(
      mv.refused.map((x) => x.status),
      ['no-resources', 'no-resources'],
    );
    for (const [i, k] of keys.entries()) {
      const owner = i < 2 ? n0! : n1!;
      const other = i < 2 ? n1! : n0!;
      assert.ok(lookup(owner.engine.tcp, k), `${i} runs at ${owner.id}`);
      assert.equal(lookup(other.engine.tcp, k), undefined);
      assert.equal(lookup(host.stack.tcp, k), undefined);
      assert.equal(m.ownerOf(k), owner);
      assert.ok(host.stack.tcp.isFrozen(k.localIp, k.localPort, k.remoteIp, k.remotePort), 'host forwards');
      assert.ok(
        !owner.engine.tcp.isFrozen(k.localIp, k.localPort, k.remoteIp, k.remotePort),
        'no NIC placeholder left',
      );
    }
    assert.deepEqual([n0!.load, n1!.load], [2, 2]);
    m.liveHandover = true;
    // Each layer is charged the buffers of what it runs, the figure a hand-over carries.
    const charged = (tcp: LocalNic['engine']['tcp']) =>
      [...tcp.connections()].reduce((n, c) => n + connBytes(c), 0);
    for (const tcp of [host.stack.tcp, n0!.engine.tcp, n1!.engine.tcp])
      assert.equal(tcp.budget.used, charged(tcp));
    // Segments for the connections reach whoever runs them now, after moves both ways.
    assert.equal((await m.upload(keys.slice(2))).moved.length, 2);
    assert.equal((await m.move(keys.slice(0, 2), n0!, n1!)).moved.length, 2);
    for (const tcp of [host.stack.tcp, n0!.engine.tcp, n1!.engine.tcp])
      assert.equal(tcp.budget.used, charged(tcp));
    assert.ok(host.stack.tcp.budget.used > 0 && n1!.engine.tcp.budget.used > 0);
    assert.equal(await st.done, 0, 'every byte arrived');
    assert.deepEqual(st.errors, []);
    net.close();
  });
  test("a user attached to a NIC's connection after the peer's FIN came hears the end", async () => {
    // A NIC installs a moved connection with nobody to tell; the host attaches the socket only at
    // the settle, after segments held meanwhile were replayed there (a crash's rebuild holds them
    // in the host). A FIN among them was heard by no one, and the socket never ended: 577 of a
    // 10,000-connection crash failover's connections in the benchmark.
    const { net, host, peer } = offloadPair(86);
    await host.ping('10.0.0.2');
    peer.createServer((s) => s.end()).listen(80);
    // Half open: the host's side stays, so the connection is still there to move and attach.
    const sock = host.connect({ port: 80, host: '10.0.0.2', allowHalfOpen: true });
    sock.resume();
    await new Promise((r) => sock.once('end', r));
    const keys = keysOf([sock]);
    const [n0] = host.nics as LocalNic[];
    assert.equal((await host.offload.offload(keys, n0!)).moved.length, 1);
    const conn = lookup(n0!.engine.tcp, keys[0]!)!;
    assert.ok(conn.state.delegated.finReceived);
    const told: string[] = [];
    const user = {
      onConnected: () => told.push('connected'),
      onReadable: () => told.push('readable'),
      onWritable: () => told.push('writable'),
      onRemoteEnd: () => told.push('end'),
      onClosed: () => told.push('closed'),
    };
    assert.equal(n0!.attach(keys[0]!, user), conn);
    await net.sleep(1);
    assert.ok(told.includes('end'), `told: ${told.join(', ')}`);
    net.close();
  });
  test('a connection in TIME_WAIT does not hold back its batch: the rest moves live', async () => {
    const { net, host, socks, keys, n0, n1, m } = await timeWaitBatch();
    const live = [1, 2].map((i) => lookup(n0!.engine.tcp, keys[i]!)!);
    const before = host.stack.counters.get('offload.handover');
    const r = await m.move(m.keysOn(n0!), n0!, n1!);
    assert.equal(host.stack.counters.get('offload.handover') - before, 2, 'two handed live');
    for (const [i, c] of live.entries())
      assert.equal(lookup(n1!.engine.tcp, keys[i + 1]!), c, 'the same object runs at the destination');
    assert.ok(r.moved.length >= 2);
    for (const s of socks.slice(1)) s.end();
    await net.sleep(50);
    for (const s of socks) assert.ok(!s.errored, 'no error');
    net.close();
  });
  test('a connection in TIME_WAIT ends at the source in the hand-over turn: no terminate, no freeze', async () => {
    const { net, host, socks, keys, n0, n1, m } = await timeWaitBatch();
    // The general protocol's verbs at the source, and its freeze in the host, counted.
    let terminates = 0;
    const nic = n0 as unknown as { terminate: (...a: unknown[]) => unknown };
    const terminate = nic.terminate.bind(n0);
    nic.terminate = (...a: unknown[]) => {
      terminates++;
      return terminate(...a);
    };
    let frozen = 0;
    const freeze = host.stack.tcp.freeze.bind(host.stack.tcp);
    host.stack.tcp.freeze = (...a: Parameters<typeof freeze>) => {
      frozen++;
      return freeze(...a);
    };
    const r = await m.move(m.keysOn(n0!), n0!, n1!);
    assert.equal(terminates, 0, 'no terminate at the source');
    assert.equal(frozen, 0, 'nothing frozen in the host');
    assert.equal(n0!.engine.counters.get('nic.terminate.time-wait-dropped'), 1);
    assert.equal(lookup(n0!.engine.tcp, keys[0]!), undefined, 'the TIME_WAIT connection ended at the source');
    assert.deepEqual(
      r.refused.map((x) => [x.key.localPort, x.status]),
      [[keys[0]!.localPort, 'closed']],
    );
    assert.equal(r.moved.length, 2);
    await net.sleep(1);
    assert.equal(m.keysOn(n0!).length, 0, 'the host forgot it');
    for (const s of socks.slice(1)) s.end();
    await net.sleep(50);
    for (const s of socks) assert.ok(!s.errored, 'no error');
    assert.ok(socks[0]!.destroyed, 'its socket closed');
    net.close();
  });
  test('a TIME_WAIT connection ended in the hand-over turn leaves its unread data to its socket', async () => {
    const { net, host, peer } = offloadPair(88);
    await host.ping('10.0.0.2');
    const sent = Buffer.alloc(3000);
    for (let i = 0; i < sent.length; i++) sent[i] = (i * 7) & 0xff;
    peer
      .createServer((s) => {
        s.write(sent);
        s.on('end', () => s.end());
        s.resume();
      })
      .listen(80);
    const socks = [0, 1].map(() => host.connect(80, '10.0.0.2'));
    while (socks.some((s) => s.connecting)) await net.sleep(1);
    // The application has not read what the peer sent before its FIN: on Linux the socket keeps
    // it whatever becomes of the connection (tcp_time_wait hands the tuple to a timewait sock).
    socks[0]!.pause();
    socks[1]!.resume();
    const keys = keysOf(socks);
    const [n0, n1] = host.nics as LocalNic[];
    const m = host.offload;
    assert.equal((await m.offload(keys, n0!)).moved.length, 2);
    socks[0]!.end();
    await net.sleep(20);
    const tw = lookup(n0!.engine.tcp, keys[0]!);
    assert.equal(tw?.state.delegated.state, TcpStateId.TIME_WAIT);
    assert.equal(tw.readableLength, sent.length, 'unread at the NIC');
    const told: string[] = [];
    socks[0]!.on('end', () => told.push('end'));
    socks[0]!.on('close', (hadError: boolean) => told.push(`close ${hadError}`));
    socks[0]!.on('error', (e) => told.push(`error ${e.message}`));
    const r = await m.move(m.keysOn(n0!), n0!, n1!);
    assert.deepEqual(
      r.refused.map((x) => x.status),
      ['closed'],
    );
    for (const tcp of [n0!.engine.tcp, n1!.engine.tcp, host.stack.tcp])
      assert.equal(lookup(tcp, keys[0]!), undefined, 'run nowhere');
    await net.sleep(5);
    const chunks: Buffer[] = [];
    socks[0]!.on('data', (d: Buffer) => chunks.push(d));
    socks[0]!.resume();
    await net.sleep(50);
    assert.ok(Buffer.concat(chunks).equals(sent), 'every byte the peer sent read after the move');
    assert.deepEqual(told, ['end', 'close false']);
    socks[1]!.end();
    await net.sleep(50);
    assert.ok(!socks[1]!.errored);
    net.close();
  });
});
