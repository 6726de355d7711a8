/**
 * One receive port for the team (issue 10 item 6), against Linux on TAPs: `chimney serve --tap A
 * --tap B --workers` with an IPv4 and an IPv6 address, the kernel uploading to the discard service.
 * Every upload runs on the member that does not carry the host's traffic (moved there over the
 * control socket), which sends from a MAC of its own, so the bridge keeps the team MAC on the other
 * member's port: each of the kernel's segments arrives there, and must reach its owner's worker
 * directly over the peer channel, not through the host's placeholder on the main thread. Over IPv6
 * the receiving member runs no connection with the kernel's address, so it reads the segment's
 * addresses in the host's table, not its own mirror. Every upload must arrive whole, nothing reset
 * or lost. Lab: 10.9.63.0/24 and fd00:63::/64 (the kernel .1 / ::1, serve .2 / ::2). Needs root and
 * /dev/net/tun: fails under CI (which is root), skips with the reason elsewhere.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { controlRequest } from '../../src/cli/control.ts';
import { interopGate, type Lab, makeLab, python3, type RunResult, sleep } from '../interop/lab.ts';
import { teamStatus, waitFor } from './team-downloads.ts';

const gate = interopGate([], { cli: true });
const SUBNET = 63;
const KERNEL6 = 'fd00:63::1';
const SERVE6 = 'fd00:63::2';
const UPLOADS = 4;
const SIZE = 24 * 1024 * 1024;
/** Bytes a second per upload: each runs about 24 s, through the offload, the move and the count. */
const RATE = 1_000_000;

let lab: Lab | null = null;
const control = (): string => join(lab!.dir, 'ctl.sock');

/** `UPLOADS` paced uploads of SIZE bytes to the discard service at `host`; prints 'done' when all ended. */
function uploads(host: string): Promise<RunResult> {
  const script = [
    'import socket, threading, time',
    `CH = 16384; buf = b'x' * CH`,
    'def one():',
    `    s = socket.create_connection((${JSON.stringify(host)}, 9), timeout=120); sent = 0; t0 = time.time()`,
    `    while sent < ${SIZE}:`,
    '        s.sendall(buf); sent += CH',
    `        ahead = sent / ${RATE} - (time.time() - t0)`,
    '        if ahead > 0: time.sleep(ahead)',
    '    s.shutdown(socket.SHUT_WR); s.recv(1); s.close()',
    `ts = [threading.Thread(target=one) for _ in range(${UPLOADS})]`,
    '[t.start() for t in ts]; [t.join() for t in ts]',
    "print('done')",
  ].join('\n');
  return lab!.run(['ip', 'netns', 'exec', lab!.ns, python3(), '-c', script], 180_000);
}

type Sets = Record<string, Record<string, number>>;
const counters = async (): Promise<Sets> => (await controlRequest(control(), { op: 'counters' })) as Sets;

describe('one receive port for a team of WorkerNics, against Linux on TAPs', {
  skip: gate.skip,
  timeout: 600_000,
}, () => {
  before(() => {
    if (gate.reason) assert.fail(`interop tests cannot run: ${gate.reason}`);
    lab = makeLab({ tag: 'rxp', subnet: SUBNET, taps: 2 }, gate.reason);
    lab!.ip('-n', lab!.ns, 'addr', 'add', `${KERNEL6}/64`, 'dev', lab!.vethPeer, 'nodad');
  });
  after(async () => {
    await lab?.down();
  });

  for (const family of ['IPv4', 'IPv6'] as const) {
    test(`${family}: the kernel's segments for the other member's connections reach its worker directly`, {
      timeout: 240_000,
    }, async (t) => {
      const v6 = family === 'IPv6';
      const srv = await lab!.serve({
        services: ['discard:9'],
        extra: [
          '--ip',
          `${SERVE6}/64`,
          '--dad-delay',
          '0',
          '--tap',
          lab!.taps[1]!,
          '--workers',
          '--one-receive-port',
          '--control',
          control(),
        ],
        readyMs: 60_000,
      });
      try {
        const local = v6 ? `[${SERVE6}]:9` : `${lab!.chimneyIps[0]}:9`;
        const run = uploads(v6 ? SERVE6 : lab!.chimneyIps[0]!);
        const ownersNow = async (): Promise<string[]> =>
          (await teamStatus(control())).trees.flatMap((nb) =>
            nb.paths.flatMap((p) =>
              p.conns.filter((c) => c.local === local && c.state === 'ESTABLISHED').map((c) => c.owner),
            ),
          );
        let seen: string[] = [];
        await waitFor(
          'the uploads offloaded',
          async () => {
            seen = await ownersNow();
            return seen.length === UPLOADS && seen.every((o) => o !== 'host');
          },
          60_000,
        ).catch((e) => assert.fail(`${String(e)}; owners: ${seen.join(',')}`));
        const nics = (await teamStatus(control())).nics;
        assert.equal(nics.length, 2, `members: ${nics.map((n) => n.id).join(',')}`);
        const receiver = nics.find((n) => n.carriesHost === true)?.id;
        const owner = nics.find((n) => n.carriesHost !== true)?.id;
        assert.ok(
          receiver !== undefined && owner !== undefined,
          `one member carries the host: ${JSON.stringify(nics)}`,
        );
        const onReceiver = seen.filter((o) => o === receiver).length;
        if (onReceiver > 0) {
          const r = (await controlRequest(control(), {
            op: 'move',
            from: receiver,
            to: owner,
            count: onReceiver,
          })) as { moved: number };
          assert.equal(r.moved, onReceiver, `moved to ${owner}: ${JSON.stringify(r)}`);
        }
        await waitFor(
          `every upload on ${owner}`,
          async () => {
            seen = await ownersNow();
            return seen.length === UPLOADS && seen.every((o) => o === owner);
          },
          30_000,
        ).catch((e) => assert.fail(`${String(e)}; owners: ${seen.join(',')}`));
        // Past the move's own hand-over (its segments wait in the host's placeholder by design).
        await sleep(1000);
        const before = await counters();
        await sleep(3000);
        const after = await counters();
        const d = (set: string, k: string): number => (after[set]?.[k] ?? 0) - (before[set]?.[k] ?? 0);
        const rx = `nic:${receiver}`;
        const own = `nic:${owner}`;
        const why = JSON.stringify({
          direct: d(rx, 'nic.forward.direct'),
          received: d(own, 'nic.forward.received'),
          upFromReceiver: d(rx, 'nic.forward.host'),
          viaHost: d('host', 'tcp.frozen.forwarded'),
          ownerDirect: d(own, 'nic.forward.direct'),
        });
        t.diagnostic(why);
        // The bridge holds the team MAC on the receiver's port (the owner sends from its own MAC):
        // the kernel's segments of the owner's connections arrive there and cross worker to worker.
        // With both members sending from the team MAC the bridge kept it on the owner's port, which
        // sends every ACK, and the receiver handed over next to nothing.
        assert.ok(d(rx, 'nic.forward.direct') > 100, `the receiver handed the owner its segments: ${why}`);
        assert.ok(d(own, 'nic.forward.received') > 100, `the owner's worker received them: ${why}`);
        // Over IPv6 the receiver's mirror holds neither address (it runs no IPv6 connection): it
        // reads them in the host's table, or every segment climbed to the main thread.
        assert.equal(d(rx, 'nic.forward.host'), 0, `none climbed to the host from the receiver: ${why}`);
        assert.equal(
          d('host', 'tcp.frozen.forwarded'),
          0,
          `none went through the host's placeholder: ${why}`,
        );
        const r = await run;
        assert.equal(r.code, 0, `uploads: ${r.stderr}\n${srv.log().slice(-3000)}`);
        assert.match(r.stdout, /done/);
        // The discard service logs each upload's length and digest when the kernel closes it.
        const whole = `sent ${SIZE} B, sha256 ${createHash('sha256').update(Buffer.alloc(SIZE, 'x')).digest('hex')}`;
        const count = (): number => srv.log().split(whole).length - 1;
        await waitFor('every upload logged whole', () => count() === UPLOADS, 10_000).catch(() =>
          assert.fail(`${count()} of ${UPLOADS} uploads arrived whole: ${srv.log().slice(-3000)}`),
        );
        assert.doesNotMatch(srv.log(), /LOST|reset|error:/, srv.log().slice(-3000));
      } finally {
        await srv.stop();
      }
    });
  }
});
