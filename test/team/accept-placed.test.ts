/**
 * With an 'immediate' offload policy, an accepted connection reaches the application only once the
 * policy has placed it: the application's first writes then go to the member's rings, and no
 * transfer carries them out of the host's buffers (against the kernel, a transfer of 256
 * connections whose HTTP bodies sat in host buffers held serve's main thread for seconds).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { buildTeamHost } from '../../src/team/team-host.ts';

const BODY = 200_000;
const CLIENTS = 40;

function rig(mode: 'immediate' | 'manual') {
  const net = new SimNetwork({ seed: 7 });
  const peer = net.addHost({ ip: '10.0.0.2/24', name: 'peer', impair: { delayMs: 1 } });
  const host = buildTeamHost(net, {
    ip: '10.0.0.1/24',
    nics: 2,
    policy: { mode, scanIntervalMs: 100 },
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
