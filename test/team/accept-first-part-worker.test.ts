/**
 * An accepted connection placed on a WorkerNic before the application's first write keeps its
 * first part (ACCEPT_FIRST_PART) through the move: the first write fills the worker's shared send
 * ring only that far, not to the send target. In a connect burst against the kernel, every
 * answer's first write filled 64 KiB of never-written shared memory on serve's main thread, a page
 * fault a page (BENCHMARKS.md, tap-team, "an accept's first part").
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import type { ServerHost } from '../../src/socket/tcp-server.ts';
import { ACCEPT_FIRST_PART, type TcpSocket } from '../../src/socket/tcp-socket.ts';
import { setup, TEAM_IP } from './worker-team-helpers.ts';

const CLIENTS = 4;
const BODY = 300_000;

test('an accept placed on a worker before its first write: that write queues its first part, and every byte arrives', {
  timeout: 180_000,
}, async (t) => {
  const rig = await setup(t, { seed: 41, health: { probeTargets: [] }, deadAfterMs: 10_000 });
  const nic = rig.nics[0]!;
  // TeamHost's hook on the rig's plain Host: each accept waits for its offload to the first member.
  (rig.host as ServerHost).placeAccepted = (conn) =>
    rig.manager
      .offload(
        [
          {
            localIp: conn.localIp,
            localPort: conn.localPort,
            remoteIp: conn.remoteIp,
            remotePort: conn.remotePort,
          },
        ],
        nic,
      )
      .then(() => {});
  const firstWrites: number[] = [];
  const owners: string[] = [];
  rig.host
    .createServer((s: TcpSocket) => {
      s.on('error', () => {});
      const c = s.connection!;
      const owner = rig.manager.ownerOf({
        localIp: c.localIp,
        localPort: c.localPort,
        remoteIp: c.remoteIp,
        remotePort: c.remotePort,
      });
      owners.push(owner === 'host' ? 'host' : owner === null ? 'none' : owner.id);
      s.end(Buffer.alloc(BODY, 5));
      firstWrites.push(s.connection?.writableLength ?? -1);
    })
    .listen(80);
  const got = await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      const c = rig.peer.connect(80, TEAM_IP);
      let n = 0;
      c.on('data', (d: Buffer) => {
        n += d.length;
      });
      await once(c, 'end');
      return n;
    }),
  );
  assert.deepEqual(got, Array(CLIENTS).fill(BODY), 'every byte of every body arrived');
  assert.deepEqual(owners, Array(CLIENTS).fill(nic.id), 'owners when accepted');
  assert.ok(
    firstWrites.every((n) => n > 0 && n <= ACCEPT_FIRST_PART),
    `queued at the first writes: ${firstWrites.join(',')}`,
  );
});
