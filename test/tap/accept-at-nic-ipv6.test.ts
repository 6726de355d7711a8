/**
 * The passive open answered at the NIC over IPv6, against Linux on TAPs: `chimney serve --tap A
 * --tap B [--workers] --accept-at-nic` with an IPv4 and an IPv6 address, curl -6 downloading from
 * the lab namespace. The first downloads are accepted in the host and offloaded, one moved
 * over the control socket if the policy put both on one member (so each member holds an IPv6 path
 * to the kernel); the next ones are answered at a member and born
 * there (`offload.accept-at-nic`). Then the member carrying the host's traffic loses its carrier
 * mid-transfer: every download, born ones included, ends with the right digest, no reset, none lost.
 *
 * Services bound to one address (`--service http:80@10.9.53.2 --service http:8080@[fd00:53::2]`,
 * a second IPv6 address beside them) on one WorkerNic: the kernel's connects to a bound address
 * are answered at the NIC, those to the same port on another address refused with a RST, as Linux
 * refuses a port no socket listens on there.
 *
 * Lab: 10.9.53.0/24 and fd00:53::/64 (the kernel .1 / ::1, serve .2 / ::2). Needs root,
 * /dev/net/tun and curl: fails under CI, skips with the reason elsewhere.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { controlRequest } from '../../src/cli/control.ts';
import { interopGate, type Lab, makeLab, python3, type RunResult, sleep } from '../interop/lab.ts';
import { checkAll, teamStatus, waitFor } from './team-downloads.ts';

const gate = interopGate(['curl'], { cli: true });
const SUBNET = 53;
const KERNEL6 = 'fd00:53::1';
const SERVE6 = 'fd00:53::2';
/** Serve's second IPv6 address: only an echo service on port 80 is bound to it. */
const OTHER6 = 'fd00:53::3';
/** Each download of the one-address case: the connection is answered, at the NIC, and served whole. */
const BOUND_SIZE = 1024 * 1024;
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

/** The host's counter `name` (every counter set, raw: `serve`'s 'counters'). */
async function hostCounter(name: string): Promise<number> {
  const sets = (await controlRequest(control(), { op: 'counters' })) as Record<
    string,
    Record<string, number>
  >;
  return sets.host?.[name] ?? 0;
}

/** Connections the host accepted born at a member. */
const bornCount = (): Promise<number> => hostCounter('offload.accept-at-nic');

/** Downloads from `url` (curl in the namespace, the body's digest on stdout, its length on stderr). */
function fetches(url: string, n: number): Promise<RunResult>[] {
  return Array.from({ length: n }, () =>
    lab!.sh(`curl -sS --fail --max-time 100 -w '%{stderr}%{size_download}' '${url}' | sha256sum`, 110_000),
  );
}

/**
 * Idle connections from the kernel to each of `to` [host, port], held until its stdin ends: a
 * member answers a SYN only over a path to the peer it already holds (synHere), and these keep
 * one for each address however long the machine takes to reach the next connects (serve's http
 * server never listens itself, so Node's header timeouts never close an idle connection of it).
 */
function holdOpen(to: [string, number][]): ChildProcess {
  const script = [
    'import socket, sys',
    `held = [socket.create_connection(a, timeout=60) for a in ${JSON.stringify(to)}]`,
    "print('connected', flush=True)",
    'sys.stdin.read()',
  ].join('\n');
  return lab!.spawnNs([python3(), '-c', script], { stdio: ['pipe', 'pipe', 'pipe'] });
}

/** How the kernel's connect to each of `to` ends: 'open', 'refused' (ECONNREFUSED), or another error's name. */
async function connects(to: [string, number][]): Promise<string[]> {
  const script = [
    'import socket',
    `for a in ${JSON.stringify(to)}:`,
    '    try:',
    '        socket.create_connection(a, timeout=60).close()',
    "        print('open')",
    '    except ConnectionRefusedError:',
    "        print('refused')",
    '    except OSError as e:',
    '        print(type(e).__name__)',
  ].join('\n');
  const r = await lab!.run(['ip', 'netns', 'exec', lab!.ns, python3(), '-c', script], 200_000);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim().split('\n');
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

  test('WorkerNics: services bound to one IPv4 and one IPv6 address, answered at the NIC there, refused with a RST elsewhere', {
    timeout: 200_000,
  }, async (t) => {
    const ip4 = lab!.chimneyIps[0]!;
    const srv = await lab!.serve({
      services: [`http:80@${ip4}`, `http:8080@[${SERVE6}]`, `echo:80@[${OTHER6}]`],
      extra: [
        '--workers',
        '--accept-at-nic',
        '--ip',
        `${SERVE6}/64,${OTHER6}/64`,
        '--dad-delay',
        '0',
        '--control',
        control(),
      ],
      // Workers and two IPv6 addresses' DAD: 16.5 s at load 32 on two cores.
      readyMs: 60_000,
    });
    let anchor: ChildProcess | null = null;
    try {
      assert.match(
        srv.readyLine,
        new RegExp(`serving http:80@${ip4} http:8080@\\[${SERVE6}\\] echo:80@\\[${OTHER6}\\] on `),
      );
      // The first connection to each address is the host's (no path at the NIC yet), placed on the
      // one member by the policy; held open, it keeps that path there.
      anchor = holdOpen([
        [ip4, 80],
        [SERVE6, 8080],
      ]);
      const bound = [`${ip4}:80`, `[${SERVE6}]:8080`];
      let held: string[] = [];
      await waitFor(
        'the held connections offloaded',
        async () => {
          held = (await teamStatus(control())).trees.flatMap((nb) =>
            nb.paths.flatMap((p) =>
              p.conns
                .filter((c) => bound.includes(c.local) && c.state === 'ESTABLISHED' && c.owner !== 'host')
                .map((c) => c.local),
            ),
          );
          return bound.every((b) => held.includes(b));
        },
        60_000,
      ).catch((e) =>
        assert.fail(`${String(e)}; offloaded: ${held.join(',')}; serve: ${srv.log().slice(-2000)}`),
      );
      // One family at a time, so each one's connects are seen born at the NIC.
      for (const url of [
        `http://${ip4}/bytes/${BOUND_SIZE}`,
        `http://[${SERVE6}]:8080/bytes/${BOUND_SIZE}`,
      ]) {
        const before = await bornCount();
        const runs = fetches(url, 2);
        await checkAll(runs, srv, BOUND_SIZE);
        const born = (await bornCount()) - before;
        assert.equal(born, runs.length, `${url}: born at the NIC ${born} of ${runs.length}`);
      }
      // The same ports on the addresses they are not bound to: no listener there, so the host
      // answers with a RST (<SEQ=0><ACK=SEG.SEQ+1><CTL=RST,ACK>, RFC 9293 3.10.7.1), and the kernel's
      // connect fails with ECONNREFUSED, not a timeout. Port 80 of the second IPv6 address is the
      // echo service's: one port, two listeners, each on its own address.
      const refusedBefore = await hostCounter('drop.tcp.no-listener');
      const tries: [string, number][] = [
        [OTHER6, 80],
        [SERVE6, 80],
        [OTHER6, 8080],
        [ip4, 8080],
      ];
      assert.deepEqual(await connects(tries), ['open', 'refused', 'refused', 'refused']);
      const refused = (await hostCounter('drop.tcp.no-listener')) - refusedBefore;
      assert.ok(refused >= tries.length - 1, `SYNs the host found no listener for: ${refused}`);
      t.diagnostic(`born at the NIC: ${await bornCount()}; refused: ${refused}`);
    } finally {
      anchor?.stdin?.end();
      await srv.stop();
    }
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
