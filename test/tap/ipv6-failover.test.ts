/**
 * Failover under IPv6 downloads, against Linux on TAPs: `chimney serve --tap A --tap B [--workers]`
 * with an IPv6 and an IPv4 address, curl -6 downloading from the lab namespace, and
 *
 * - carrier: the TAP carrying the host's traffic goes down mid-transfer (WorkerNics, LocalNics);
 * - reachability: that TAP leaves the bridge while staying up, seen only by the members' neighbor
 *   solicitations (the team probes the namespace's IPv6 address only).
 *
 * The downloads run offloaded on the members (WorkerNics or LocalNics, as IPv4 ones do), and the
 * faults hit the member that carries the host stack's traffic once it runs some of them, so one
 * failover both moves IPv6 connections and moves the host's traffic (which is what makes the new
 * port announce the addresses). Every download must finish with the right digest and no reset;
 * the failover must have moved every IPv6 connection of the failed member to the other one, none
 * lost; the capture must show the unsolicited neighbor advertisements (override set, to all nodes)
 * of the port that took over, the members' NS probes, and no malformed frame.
 *
 * Lab: 10.9.52.0/24 and fd00:52::/64 (the kernel .1 / ::1, serve .2 / ::2). Needs root,
 * /dev/net/tun, curl and tshark: fails under CI, skips with the reason elsewhere.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { TSHARK_START_MS } from '../helpers/tshark.ts';
import {
  interopGate,
  type Lab,
  makeLab,
  type RunResult,
  type Served,
  sleep,
  stopProcess,
} from '../interop/lab.ts';
import { checkAll, FAILOVER_MS, teamStatus, waitFor } from './team-downloads.ts';

const gate = interopGate(['curl', 'tshark'], { cli: true });
const SUBNET = 52;
const KERNEL6 = 'fd00:52::1';
const SERVE6 = 'fd00:52::2';
const SIZE = 48 * 1024 * 1024;
const DOWNLOADS = 3;
/** Slow enough that every download is still in flight when the fault comes (6 s each). */
const RATE = '8M';
const SNAPLEN = 256;

let lab: Lab | null = null;
let capture: ReturnType<Lab['spawn']> | null = null;
let pcap = '';
/** The neighbor discovery frames of the capture, taken out in one pass so each question costs little. */
let ndPcap = '';

const control = (): string => join(lab!.dir, 'ctl.sock');

async function serveTeam(extra: string[] = [], workers = true): Promise<Served> {
  const srv = await lab!.serve({
    services: ['http:80'],
    extra: [
      '--tap',
      lab!.taps[1]!,
      ...(workers ? ['--workers'] : []),
      '--ip',
      `${SERVE6}/64`,
      '--control',
      control(),
      ...extra,
    ],
  });
  // Duplicate address detection passed before the ready line; the address must be usable.
  const s = await teamStatus(control());
  assert.ok(s.addresses.includes(`${SERVE6}/64`), s.addresses.join(' '));
  return srv;
}

function downloads6(): Promise<RunResult>[] {
  const url = `http://[${SERVE6}]/bytes/${SIZE}`;
  return Array.from({ length: DOWNLOADS }, () =>
    lab!.sh(
      `curl -6 -sS --fail --max-time 100 --limit-rate ${RATE} -w '%{stderr}%{size_download}' '${url}' | sha256sum`,
      110_000,
    ),
  );
}

interface Placement {
  /** The member carrying the host stack's traffic. */
  nic: string;
  /** Downloads it runs. */
  onIt: number;
}

/** The IPv6 download connections in `chimney status`, with their owners. */
function downloads6Of(s: Awaited<ReturnType<typeof teamStatus>>) {
  return s.trees.flatMap((nb) =>
    nb.paths.flatMap((p) => p.conns.filter((c) => c.local === `[${SERVE6}]:80` && c.state === 'ESTABLISHED')),
  );
}

/**
 * Once every IPv6 download is offloaded and the member carrying the host's traffic runs some of
 * them: that member, and how many it runs (the policy spreads three over two members, so each
 * gets some).
 */
async function hostMember(): Promise<Placement> {
  let at: Placement = { nic: '', onIt: 0 };
  let seen = '';
  try {
    await waitFor(
      'the IPv6 downloads to be offloaded, some on the member carrying the host traffic',
      async () => {
        const s = await teamStatus(control());
        const conns = downloads6Of(s);
        const nic = s.nics.find((n) => n.carriesHost)?.id ?? '';
        seen = `${nic}: ${conns.map((c) => c.owner).join(',')}`;
        at = { nic, onIt: conns.filter((c) => c.owner === nic).length };
        return (
          conns.length === DOWNLOADS && nic !== '' && conns.every((c) => c.owner !== 'host') && at.onIt > 0
        );
      },
      15_000,
    );
  } catch (e) {
    assert.fail(`${String(e)}; last seen (host member: owners) ${seen}`);
  }
  return at;
}

/**
 * The failover of `at.nic` moved every IPv6 download it ran to the other member (none lost, none
 * to the host), and status shows none left on it.
 */
async function assertMoved(at: Placement, cause: string): Promise<void> {
  const s = await teamStatus(control());
  const f = s.failovers.find((x) => x.nic === at.nic);
  assert.ok(f, `a failover of ${at.nic}: ${JSON.stringify(s.failovers)}`);
  assert.equal(f.cause, cause);
  assert.ok(f.connections >= at.onIt, `it had ${at.onIt} IPv6 download(s) to move: ${JSON.stringify(f)}`);
  assert.equal(f.lost, 0, 'none lost');
  const other = s.nics.find((n) => n.id !== at.nic)!.id;
  assert.deepEqual(f.to, [other], 'all moved to the other member, none to the host');
  const owners = downloads6Of(s).map((c) => c.owner);
  assert.ok(!owners.includes(at.nic), `no IPv6 download left on the failed member: ${owners.join(',')}`);
}

/** The server's log line for the failover of `nic` (detection and resume times), for the record. */
function failoverLine(srv: Served, nic: string): string {
  return srv
    .log()
    .split('\n')
    .find((l) => l.includes(`failover ${nic} (`))!;
}

/** Frames of `file` that match a tshark display filter. */
async function count(filter: string, file = ndPcap): Promise<number> {
  const r = await lab!.run(
    ['tshark', '-r', file, '-Y', filter, '-T', 'fields', '-e', 'frame.number'],
    300_000,
  );
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.split('\n').filter((l) => l.trim() !== '').length;
}

describe('failover under IPv6 downloads against Linux on TAPs', {
  skip: gate.skip,
  timeout: 900_000,
}, () => {
  before(async () => {
    if (gate.reason) assert.fail(`interop tests cannot run: ${gate.reason}`);
    lab = makeLab({ tag: 'v6f', subnet: SUBNET, taps: 2 }, gate.reason);
    lab!.ip('-n', lab!.ns, 'addr', 'add', `${KERNEL6}/64`, 'dev', lab!.vethPeer, 'nodad');
    // On the namespace's side of the bridge: what the kernel hears, which is where the
    // advertisements must arrive.
    pcap = join(lab!.dir, 'v6fail.pcapng');
    capture = lab!.spawn(['tshark', '-i', lab!.veth, '-s', String(SNAPLEN), '-w', pcap, '-q']);
    let capErr = '';
    capture.stderr!.on('data', (d: Buffer) => {
      capErr += d.toString();
    });
    await waitFor('tshark to start', () => /Capturing on/.test(capErr), TSHARK_START_MS);
  });
  after(async () => {
    if (capture) await stopProcess(capture, 3000);
    await lab?.down();
  });

  for (const workers of [true, false]) {
    test(`carrier (${workers ? 'WorkerNics' : 'LocalNics'}): the TAP carrying the IPv6 downloads goes down mid-transfer`, {
      timeout: 150_000,
    }, async (t) => {
      const srv = await serveTeam([], workers);
      try {
        const runs = downloads6();
        const at = await hostMember();
        const nic = at.nic;
        await sleep(1000);
        lab!.ip('link', 'set', 'dev', nic, 'down');
        await waitFor('the failover', () => srv.log().includes(`failover ${nic} (carrier)`), FAILOVER_MS);
        t.diagnostic(failoverLine(srv, nic));
        await assertMoved(at, 'carrier');
        await checkAll(runs, srv, SIZE);
        const s = await teamStatus(control());
        assert.notEqual(s.nics.find((n) => n.carriesHost)?.id, nic, 'the host traffic moved');
        assert.equal(s.failovers[0]?.cause, 'carrier');
      } finally {
        for (const t of lab!.taps) lab!.ip('link', 'set', 'dev', t, 'up');
        await srv.stop();
      }
    });
  }

  test('reachability: the TAP carrying the IPv6 downloads leaves the bridge, seen by NS probes only', {
    timeout: 150_000,
  }, async (t) => {
    // Only an IPv6 target: the members probe with neighbor solicitations, every 10 ms, 3 misses.
    const srv = await serveTeam(['--probe', KERNEL6]);
    let nic = '';
    try {
      const runs = downloads6();
      const at = await hostMember();
      nic = at.nic;
      await sleep(1000);
      lab!.ip('link', 'set', 'dev', nic, 'nomaster');
      await waitFor('the failover', () => srv.log().includes(`failover ${nic} (reachability)`), FAILOVER_MS);
      t.diagnostic(failoverLine(srv, nic));
      assert.match(srv.log(), /no NS reply from 1 target/);
      await assertMoved(at, 'reachability');
      await checkAll(runs, srv, SIZE);
      const s = await teamStatus(control());
      const h = s.nics.find((n) => n.id === nic);
      assert.equal(h?.linkUp, true, 'carrier stayed up');
      assert.equal(h?.reachable, false, 'status shows it unreachable');
      const other = s.nics.find((n) => n.id !== nic);
      assert.equal(other?.reachable, true, 'the member whose NS are answered is not failed');
      assert.equal(other?.failures ?? 0, 0);
    } finally {
      if (nic) lab!.ip('link', 'set', 'dev', nic, 'master', lab!.bridge);
      await srv.stop();
    }
  });

  test('the capture: unsolicited NAs with override from the new port, NS probes answered, nothing malformed', {
    timeout: 600_000,
  }, async (t) => {
    await stopProcess(capture!, 3000);
    capture = null;
    // Every frame of the whole run, the downloads included, read once for errors...
    assert.equal(
      await count('_ws.malformed || _ws.expert.severity == error || icmpv6.checksum.status == 0', pcap),
      0,
      'no malformed frame',
    );
    // ...and once to take out the neighbor discovery.
    ndPcap = join(lab!.dir, 'nd.pcapng');
    const x = await lab!.run(
      ['tshark', '-r', pcap, '-Y', 'icmpv6.type == 135 || icmpv6.type == 136', '-w', ndPcap],
      300_000,
    );
    assert.equal(x.code, 0, x.stderr);
    // Three takeovers, three rounds each, of the global and the link-local address.
    const unsolicited = await count(
      `icmpv6.type == 136 && ipv6.dst == ff02::1 && icmpv6.nd.na.flag.o == 1 && icmpv6.nd.na.flag.s == 0 && icmpv6.nd.na.target_address == ${SERVE6}`,
    );
    assert.ok(unsolicited >= 3 * 3, `unsolicited NAs for ${SERVE6}: ${unsolicited}`);
    const linkLocal = await count(
      'icmpv6.type == 136 && ipv6.dst == ff02::1 && icmpv6.nd.na.flag.o == 1 && icmpv6.nd.na.target_address == fe80::/64',
    );
    assert.ok(linkLocal >= 3 * 3, `unsolicited NAs for the link-local address: ${linkLocal}`);
    const probes = await count(
      `icmpv6.type == 135 && icmpv6.nd.ns.target_address == ${KERNEL6} && ipv6.src == fe80::/64`,
    );
    assert.ok(probes > 100, `NS probes: ${probes}`);
    const answers = await count(
      `icmpv6.type == 136 && icmpv6.nd.na.flag.s == 1 && icmpv6.nd.na.target_address == ${KERNEL6}`,
    );
    assert.ok(answers > 100, `answered by the kernel: ${answers}`);
    t.diagnostic(
      `unsolicited NAs: ${unsolicited} for ${SERVE6}, ${linkLocal} for the link-local address; NS probes ${probes}, answered ${answers}`,
    );
  });
});
