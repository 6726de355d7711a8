/**
 * The passive open answered at the NIC over IPv6, against Linux on TAPs: `chimney serve --tap A
 * --tap B [--workers] --accept-at-nic` with an IPv4 and an IPv6 address, curl -6 downloading from
 * the lab namespace. The first downloads are accepted in the host and offloaded, one moved
 * over the control socket if the policy put both on one member (so each member holds an IPv6 path
 * to the kernel); the next ones are answered at a member and born
 * there (`offload.accept-at-nic`). Then the member carrying the host's traffic loses its carrier
 * mid-transfer: every download, born ones included, ends with the right digest, no reset, none lost.
 *
 * Lab: 10.9.53.0/24 and fd00:53::/64 (the kernel .1 / ::1, serve .2 / ::2). Needs root,
 * /dev/net/tun and curl: fails under CI, skips with the reason elsewhere.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { controlRequest } from '../../src/cli/control.ts';
import { interopGate, type Lab, makeLab, type RunResult, sleep } from '../interop/lab.ts';
import { checkAll, teamStatus, waitFor } from './team-downloads.ts';

const gate = interopGate(['curl'], { cli: true });
const SUBNET = 53;
const KERNEL6 = 'fd00:53::1';
const SERVE6 = 'fd00:53::2';
const SIZE = 16 * 1024 * 1024;
/** Slow enough that every download is still in flight when the fault comes (8 s each). */
const RATE = '2M';
/** Downloads accepted in the host and offloaded first: at least one for each member. */
const FIRSTS = 2;
const BORN = 4;

let lab: Lab | null = null;

const control = (): string => join(lab!.dir, 'ctl.sock');

function downloads6(n: number): Promise<RunResult>[] {
  const url = `http://[${SERVE6}]/bytes/${SIZE}`;
  return Array.from({ length: n }, () =>
    lab!.sh(
      `curl -6 -sS --fail --max-time 100 --limit-rate ${RATE} -w '%{stderr}%{size_download}' '${url}' | sha256sum`,
      110_000,
    ),
  );
}

/** Connections the host accepted born at a member (every counter set, raw: `serve`'s 'counters'). */
async function bornCount(): Promise<number> {
  const sets = (await controlRequest(control(), { op: 'counters' })) as Record<
    string,
    Record<string, number>
  >;
  return sets.host?.['offload.accept-at-nic'] ?? 0;
}

/** The IPv6 download connections in `chimney status`, with their owners. */
async function owners6(): Promise<string[]> {
  const s = await teamStatus(control());
  return s.trees.flatMap((nb) =>
    nb.paths.flatMap((p) =>
      p.conns.filter((c) => c.local === `[${SERVE6}]:80` && c.state === 'ESTABLISHED').map((c) => c.owner),
    ),
  );
}

describe('accept at a NIC over IPv6 against Linux on TAPs', { skip: gate.skip, timeout: 600_000 }, () => {
  before(() => {
    if (gate.reason) assert.fail(`interop tests cannot run: ${gate.reason}`);
    lab = makeLab({ tag: 'a6n', subnet: SUBNET, taps: 2 }, gate.reason);
    lab!.ip('-n', lab!.ns, 'addr', 'add', `${KERNEL6}/64`, 'dev', lab!.vethPeer, 'nodad');
  });
  after(async () => {
    await lab?.down();
  });

  for (const workers of [true, false]) {
    test(`${workers ? 'WorkerNics' : 'LocalNics'}: IPv6 downloads born at a member, then a carrier failure, every byte intact`, {
      timeout: 200_000,
    }, async (t) => {
      const srv = await lab!.serve({
        services: ['http:80'],
        extra: [
          '--accept-at-nic',
          '--ip',
          `${SERVE6}/64`,
          '--tap',
          lab!.taps[1]!,
          '--control',
          control(),
          ...(workers ? ['--workers'] : []),
        ],
      });
      try {
        const runs = downloads6(FIRSTS);
        // A member answers a SYN only over an IPv6 path to the peer it already holds (synHere), and
        // the policy may put every first download on one member: so once the policy has offloaded
        // them, one is moved to a member that has none. Each member then holds a path, whichever
        // the kernel's frames reach.
        let seen: string[] = [];
        await waitFor(
          'the first IPv6 downloads offloaded',
          async () => {
            seen = await owners6();
            return seen.length === runs.length && seen.every((o) => o !== 'host');
          },
          60_000,
        ).catch((e) => assert.fail(`${String(e)}; owners: ${seen.join(',')}`));
        const members = (await teamStatus(control())).nics.map((n) => n.id);
        assert.equal(members.length, 2, `members: ${members.join(',')}`);
        const bare = members.find((m) => !seen.includes(m));
        if (bare !== undefined) {
          const from = members.find((m) => m !== bare)!;
          const r = (await controlRequest(control(), { op: 'move', from, to: bare, count: 1 })) as {
            moved: number;
          };
          assert.equal(r.moved, 1, `moved from ${from} to ${bare}: ${JSON.stringify(r)}`);
          t.diagnostic(`the policy put both first downloads on ${from}: one moved to ${bare}`);
        }
        await waitFor(
          'the first IPv6 downloads on both members',
          async () => {
            seen = await owners6();
            return seen.length === runs.length && members.every((m) => seen.includes(m));
          },
          30_000,
        ).catch((e) => assert.fail(`${String(e)}; owners: ${seen.join(',')}`));
        const placed = runs.length;
        runs.push(...downloads6(BORN));
        let born = 0;
        await waitFor(
          'IPv6 downloads answered at a member',
          async () => {
            born = await bornCount();
            return born >= 1 && (await owners6()).length === runs.length;
          },
          60_000,
        ).catch((e) => assert.fail(`${String(e)}; born ${born}`));
        t.diagnostic(`${placed} placed first, ${born} born at a member in all`);
        const s = await teamStatus(control());
        const nic = s.nics.find((n) => n.carriesHost)?.id ?? '';
        assert.notEqual(nic, '');
        await sleep(500);
        lab!.ip('link', 'set', 'dev', nic, 'down');
        await waitFor('the failover', () => srv.log().includes(`failover ${nic} (carrier)`), 20_000);
        await checkAll(runs, srv, SIZE);
        const after = await teamStatus(control());
        const f = after.failovers.find((x) => x.nic === nic);
        assert.ok(f, `a failover of ${nic}: ${JSON.stringify(after.failovers)}`);
        assert.equal(f.lost, 0, 'none lost');
      } finally {
        for (const tap of lab!.taps) lab!.ip('link', 'set', 'dev', tap, 'up');
        await srv.stop();
      }
    });
  }
});
