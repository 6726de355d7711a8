/**
 * With an 'immediate' offload policy, an accepted connection reaches the application only once the
 * policy has placed it: the application's first writes then go to the member's rings, and no
 * transfer carries them out of the host's buffers (against the kernel, a transfer of 256
 * connections whose HTTP bodies sat in host buffers held serve's main thread for seconds).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import type { PlaceTimeout } from '../../src/offload/offload-manager.ts';
import {
  PLACE_PIPELINE,
  PLACE_REPORT_MS,
  PLACE_TIMEOUT_COUNTER,
  POLICY_BATCH,
} from '../../src/offload/policy.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { buildTeamHost } from '../../src/team/team-host.ts';

const BODY = 200_000;
const CLIENTS = 40;

function rig(mode: 'immediate' | 'manual', placeTimeoutMs?: number) {
  const net = new SimNetwork({ seed: 7 });
  const peer = net.addHost({ ip: '10.0.0.2/24', name: 'peer', impair: { delayMs: 1 } });
  const host = buildTeamHost(net, {
    ip: '10.0.0.1/24',
    nics: 2,
    policy: { mode, scanIntervalMs: 100, ...(placeTimeoutMs === undefined ? {} : { placeTimeoutMs }) },
  });
  return { net, peer, host };
}

/** Who runs an accepted connection now: 'host', a member's id, or 'none'. */
function ownerName(host: ReturnType<typeof rig>['host'], s: TcpSocket): string {
  const owner = host.manager.ownerOf({
    localIp: 0x0a000001,
    localPort: 80,
    remoteIp: 0x0a000002,
    remotePort: s.remotePort!,
  });
  return owner === 'host' ? 'host' : owner === null ? 'none' : owner.id;
}

describe('accepted connections wait for the offload policy', () => {
  test('immediate: every connection is on a member when the application gets it, its body written there', async () => {
    const { net, peer, host } = rig('immediate');
    const ownersAtAccept: string[] = [];
    let hostSendBytes = 0;
    host
      .createServer((s: TcpSocket) => {
        ownersAtAccept.push(ownerName(host, s));
        s.on('error', () => {});
        s.end(Buffer.alloc(BODY, 7));
      })
      .listen(80);
    await peer.ping('10.0.0.1');
    const got: number[] = [];
    const clients = Array.from({ length: CLIENTS }, () => {
      const c = peer.connect(80, '10.0.0.1');
      let n = 0;
      c.on('data', (d: Buffer) => {
        n += d.length;
      });
      return once(c, 'end').then(() => got.push(n));
    });
    // What the host's own connections hold while the policy moves them: nothing an application wrote.
    let samples = 0;
    const watch = net.clock
      .createTimer(() => {
        samples++;
        for (const c of host.stack.tcp.connections()) hostSendBytes += c.state.delegated.sendBuffer.length;
        watch.arm(1);
      })
      .unref();
    watch.arm(0);
    await Promise.all(clients);
    watch.disarm();
    assert.ok(samples > 10, `${samples} samples`);
    assert.equal(got.length, CLIENTS);
    assert.ok(
      got.every((n) => n === BODY),
      `bodies: ${got.join(',')}`,
    );
    assert.equal(ownersAtAccept.length, CLIENTS);
    assert.deepEqual(
      ownersAtAccept.filter((o) => o === 'host' || o === 'none'),
      [],
      `owners when accepted: ${ownersAtAccept.join(',')}`,
    );
    assert.equal(hostSendBytes, 0);
    host.close();
    net.close();
  });

  test('a placement that does not complete: the host serves each accept after placeTimeoutMs, counted, reported once for the burst', async () => {
    const { net, peer, host } = rig('immediate');
    const placeMs = host.manager.policy.placeTimeoutMs;
    assert.equal(placeMs, 5000);
    // Each member's initiate waits for `open` (a worker that does not answer): the policy's first
    // transfers hang (as many as it runs at once, PLACE_PIPELINE), and the scanner, which waits
    // for one of them to end, places nothing meanwhile.
    host.manager.liveHandover = false;
    let open!: () => void;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    for (const nic of host.nics) {
      const initiate = nic.initiate.bind(nic);
      nic.initiate = (batch, opts) => gate.then(() => initiate(batch, opts));
    }
    const reports: PlaceTimeout[] = [];
    host.manager.on('place-timeout', (ev: PlaceTimeout) => reports.push(ev));
    const waited = new Map<number, number>();
    const owners = new Map<number, string>();
    const connectedAt = new Map<number, number>();
    host
      .createServer((s: TcpSocket) => {
        waited.set(s.remotePort!, net.clock.now() - connectedAt.get(s.remotePort!)!);
        owners.set(s.remotePort!, ownerName(host, s));
        s.on('error', () => {});
        s.end(Buffer.alloc(BODY, 7));
      })
      .listen(80);
    await peer.ping('10.0.0.1');
    const download = () => {
      const c = peer.connect(80, '10.0.0.1');
      c.once('connect', () => connectedAt.set(c.localPort!, net.clock.now()));
      let n = 0;
      c.on('data', (d: Buffer) => {
        n += d.length;
      });
      return { port: () => c.localPort!, done: once(c, 'end').then(() => n) };
    };
    // The first ones go into the transfers that hang, one each; the burst comes while they do.
    const firsts: ReturnType<typeof download>[] = [];
    for (let i = 0; i < PLACE_PIPELINE; i++) {
      firsts.push(download());
      await net.sleep(50);
    }
    const burst = Array.from({ length: CLIENTS }, download);
    const bodies = await Promise.race([
      Promise.all(burst.map((d) => d.done)),
      net.sleep(10_000).then(() => null),
    ]);
    assert.ok(bodies !== null, 'the burst was served while the placement hung');
    assert.deepEqual(
      bodies.filter((n) => n !== BODY),
      [],
    );
    for (const d of burst) {
      assert.equal(owners.get(d.port()), 'host', 'served by the host');
      const w = waited.get(d.port())!;
      assert.ok(w >= placeMs && w <= placeMs + 50, `waited ${w} ms for its placement`);
    }
    // The connections in the hung transfers went to the application too, frozen (owned by nobody
    // while they move: their writes wait in the socket) until the transfers end.
    for (const first of firsts) assert.equal(owners.get(first.port()), 'none');
    open();
    for (const first of firsts) assert.equal(await first.done, BODY);
    const counters = host.stack.counters.snapshot();
    assert.equal(counters[PLACE_TIMEOUT_COUNTER], CLIENTS + PLACE_PIPELINE);
    await net.sleep(2 * PLACE_REPORT_MS);
    assert.deepEqual(
      reports,
      [{ connections: CLIENTS + PLACE_PIPELINE, waitedMs: placeMs }],
      'one report for the burst',
    );
    host.close();
    net.close();
  });

  test('a burst queued behind transfers that each end in time waits its turn, longer than placeTimeoutMs, and is placed', async () => {
    // A bound of 500 ms, shorter than the burst's wait, so that a bound counted from each arrival
    // (and not from the policy's last progress) would show.
    const { net, peer, host } = rig('immediate', 500);
    const placeMs = host.manager.policy.placeTimeoutMs;
    // A slow member: each initiate takes 300 ms of the clock, so a burst beyond the transfers the
    // policy runs at once (PLACE_PIPELINE of POLICY_BATCH) waits for several, each ending within
    // placeTimeoutMs of the last.
    host.manager.liveHandover = false;
    for (const nic of host.nics) {
      const initiate = nic.initiate.bind(nic);
      nic.initiate = (batch, opts) => net.sleep(300).then(() => initiate(batch, opts));
    }
    const clients = PLACE_PIPELINE * POLICY_BATCH + 100;
    const reports: PlaceTimeout[] = [];
    host.manager.on('place-timeout', (ev: PlaceTimeout) => reports.push(ev));
    const waited: number[] = [];
    const owners: string[] = [];
    const connectedAt = new Map<number, number>();
    host
      .createServer((s: TcpSocket) => {
        waited.push(net.clock.now() - connectedAt.get(s.remotePort!)!);
        owners.push(ownerName(host, s));
        s.on('error', () => {});
        s.end(Buffer.alloc(1000, 7));
      })
      .listen(80);
    await peer.ping('10.0.0.1');
    const done = Array.from({ length: clients }, () => {
      const c = peer.connect(80, '10.0.0.1');
      c.once('connect', () => connectedAt.set(c.localPort!, net.clock.now()));
      c.resume();
      return once(c, 'end');
    });
    await Promise.all(done);
    assert.equal(owners.length, clients);
    assert.deepEqual(
      owners.filter((o) => o === 'host' || o === 'none'),
      [],
      'every accept placed on a member',
    );
    assert.ok(Math.max(...waited) > placeMs, `the last waited ${Math.max(...waited)} ms`);
    assert.equal(host.stack.counters.snapshot()[PLACE_TIMEOUT_COUNTER] ?? 0, 0);
    assert.deepEqual(reports, []);
    host.close();
    net.close();
  });

  test('manual: the application gets the connection at once, in the host', async () => {
    const { net, peer, host } = rig('manual');
    const owners: string[] = [];
    host
      .createServer((s: TcpSocket) => {
        owners.push(ownerName(host, s));
        s.end('x');
      })
      .listen(80);
    await peer.ping('10.0.0.1');
    const c = peer.connect(80, '10.0.0.1');
    c.resume();
    await once(c, 'end');
    assert.deepEqual(owners, ['host']);
    host.close();
    net.close();
  });
});
