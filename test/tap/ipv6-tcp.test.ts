/**
 * TCP over IPv6 between `chimney serve` / `chimney get` on TAPs and the Linux kernel's TCP in the
 * lab namespace (curl -6, socat, python3's http.server):
 *
 * - a 64 MB download and a 20 MB upload (curl -T, and socat into the discard service);
 * - 50 concurrent downloads, seen as IPv6 connections by `chimney status`;
 * - `chimney get` as the client of http.server bound to the namespace's IPv6 address;
 * - a Linux router namespace lowering its next link's MTU in the middle of a download: it sends
 *   packet too big, Chimney lowers its segment size and the download completes;
 * - tshark finds no malformed frame in the capture of the whole run.
 *
 * Lab: 10.9.51.0/24 and fd00:51::/64 (the kernel .1 / ::1, serve .2 / ::2, get .3 / ::3), the far
 * namespace behind the router on fd00:51:1::/64. The veth keeps its offloads, so the kernel hands
 * Chimney's TAPs coalesced IPv6 segments with partial checksums (TSO6), on one TAP and on a team.
 * On the team (`--workers`) IPv6 connections are offloaded to the worker NICs as IPv4 ones are,
 * and `chimney status` shows them there. Carrier and reachability failover under IPv6 downloads,
 * which move those offloaded connections, are in `ipv6-failover.test.ts`.
 * Needs root, /dev/net/tun and the tools below: fails under CI, skips with the reason elsewhere.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { StatusSnapshot } from '../../src/cli/control.ts';
import { TSHARK_START_MS } from '../helpers/tshark.ts';
import {
  fileDigest,
  interopGate,
  type Lab,
  makeLab,
  patternDigest,
  type Served,
  shaOf,
  sleep,
  stopProcess,
  writeDataFile,
} from '../interop/lab.ts';
import { teamStatus, waitFor } from './team-downloads.ts';

const gate = interopGate(['curl', 'socat', 'python3', 'tshark', 'ethtool', 'ss'], { cli: true });
const SUBNET = 51;
const PREFIX = 'fd00:51::';
const KERNEL6 = `${PREFIX}1`;
const SERVE6 = `${PREFIX}2`;
const GET6 = `${PREFIX}3`;
const FAR_NET = 'fd00:51:1::';
const FAR6 = `${FAR_NET}2`;
/** Frames are captured up to this length: headers for every frame, not 200 MB of payload. */
const SNAPLEN = 256;

let lab: Lab | null = null;
let srv: Served | null = null;
let capture: ReturnType<Lab['spawn']> | null = null;
let pcap = '';

const url = (path: string): string => `http://[${SERVE6}]${path}`;
const control = (): string => join(lab!.dir, 'ctl.sock');

/** Connections of the http service to IPv6 peers, as `chimney status` reports them. */
async function ipv6HttpConns(
  ctl = control(),
): Promise<StatusSnapshot['trees'][number]['paths'][number]['conns']> {
  const s = await teamStatus(ctl);
  return s.trees.flatMap((nb) =>
    nb.paths.flatMap((p) => p.conns.filter((c) => c.local === `[${SERVE6}]:80` && c.remote.startsWith('['))),
  );
}

/** The lab namespace's tcp_rmem while downloads are held: a receive buffer of at most 1 MiB. */
const HELD_RMEM = '4096 131072 1048576';

/**
 * `n` concurrent curl -6 downloads of `size` bytes, each held open until `release()`: curl's
 * output waits in a pipe whose reader first waits for a lock the test holds, so curl stops
 * reading its socket and the kernel closes its window, with at most the pipe (64 KiB), curl's
 * buffer and the socket's receive buffer (tcp_rmem's maximum, lowered here to 1 MiB while held)
 * taken from the download. `size` is larger than that: each connection stays in Chimney's table,
 * whatever the machine's speed, until the test has seen what it wants and releases them; then all
 * of them run at full speed. (Rate-limited downloads did this by time: 8 MiB at 400 KB/s, 21 s,
 * for 50 connections that a slow machine might not even have opened by then; a poll for a file
 * instead of the lock cost 250 forks a second across 50 readers.) `run` resolves with `uniq -c`
 * of the digests.
 */
async function heldDownloads(
  name: string,
  n: number,
  size: number,
): Promise<{ run: ReturnType<Lab['sh']>; release(): Promise<void> }> {
  const dir = join(lab!.dir, name);
  mkdirSync(dir);
  const gate = join(dir, 'gate');
  const holder = lab!.spawn(['flock', '-x', gate, '-c', 'echo held; exec cat'], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let said = '';
  holder.stdout!.on('data', (d: Buffer) => {
    said += d.toString();
  });
  await waitFor('the gate lock', () => said.includes('held'), 60_000);
  const was = await lab!.sh('sysctl -n net.ipv4.tcp_rmem', 10_000);
  assert.equal(was.code, 0, was.stderr);
  const set = await lab!.sh(`sysctl -qw net.ipv4.tcp_rmem='${HELD_RMEM}'`, 10_000);
  assert.equal(set.code, 0, set.stderr);
  const run = lab!.sh(
    `for i in $(seq ${n}); do (curl -6 -sS --fail --max-time 180 '${url(`/bytes/${size}`)}' | { flock -s ${gate} true; sha256sum; } > ${dir}/$i) & done; wait; cat ${dir}/* | sort | uniq -c`,
    200_000,
  );
  let released = false;
  return {
    run,
    async release() {
      if (released) return;
      released = true;
      holder.stdin!.end();
      // The namespace's own setting again: released, the downloads need not stay small.
      const reset = await lab!.sh(`sysctl -qw net.ipv4.tcp_rmem='${was.stdout.trim()}'`, 10_000);
      assert.equal(reset.code, 0, reset.stderr);
    },
  };
}

describe('TCP over IPv6 against Linux on a TAP (curl -6, socat, http.server)', {
  skip: gate.skip,
  timeout: 600_000,
}, () => {
  before(async () => {
    if (gate.reason) assert.fail(`interop tests cannot run: ${gate.reason}`);
    lab = makeLab({ tag: 'v6t', subnet: SUBNET, taps: 2 }, gate.reason);
    lab!.ip('-n', lab!.ns, 'addr', 'add', `${KERNEL6}/64`, 'dev', lab!.vethPeer, 'nodad');
    pcap = join(lab!.dir, 'v6tcp.pcapng');
    capture = lab!.spawn(['tshark', '-i', lab!.veth, '-s', String(SNAPLEN), '-w', pcap, '-q']);
    let capErr = '';
    capture.stderr!.on('data', (d: Buffer) => {
      capErr += d.toString();
    });
    await waitFor('tshark to start', () => /Capturing on/.test(capErr), TSHARK_START_MS);
    srv = await lab!.serve({
      services: ['echo:7', 'discard:9', 'http:80'],
      extra: ['--ip', `${SERVE6}/64`, '--gw6', KERNEL6, '--control', control()],
    });
    assert.match(srv.readyLine, new RegExp(`${SERVE6}/64`), srv.readyLine);
  });
  after(async () => {
    if (capture) await stopProcess(capture, 3000);
    if (srv) await srv.stop();
    await lab?.down();
  });

  test('chimney status lists the IPv6 address as usable (DAD passed before the ready line)', async () => {
    const s = await teamStatus(control());
    assert.ok(s.addresses.includes(`${SERVE6}/64`), s.addresses.join(' '));
    assert.ok(
      s.addresses.some((a) => /^fe80::/.test(a) && !a.includes('(')),
      s.addresses.join(' '),
    );
  });

  test('curl -6 downloads 64 MB from chimney serve, every byte checked', async () => {
    const size = 64 * 1024 * 1024;
    const r = await lab!.sh(
      `curl -6 -sS --fail --max-time 120 -w '%{stderr}%{size_download}' '${url(`/bytes/${size}`)}' | sha256sum`,
      130_000,
    );
    assert.equal(r.code, 0, `${r.stderr}\n${srv!.log().slice(-2000)}`);
    assert.equal(Number(r.stderr.trim().split(/\s+/).pop()), size);
    assert.equal(shaOf(r.stdout), patternDigest(size));
  });

  test('20 MB uploads: curl -T into /sha256, socat into discard; Chimney hashes what arrived', async () => {
    const size = 20 * 1024 * 1024;
    const file = join(lab!.dir, 'up.bin');
    const want = await writeDataFile(file, size, 51);
    const r = await lab!.sh(
      `curl -6 -sS --fail --max-time 120 -X POST -T '${file}' '${url('/sha256')}'`,
      130_000,
    );
    assert.equal(r.code, 0, `${r.stderr}\n${srv!.log().slice(-2000)}`);
    assert.equal(r.stdout.trim(), want);
    const s = await lab!.sh(`socat -u -b 262144 'FILE:${file}' 'TCP6:[${SERVE6}]:9'`, 130_000);
    assert.equal(s.code, 0, s.stderr);
    await waitFor(
      'the discard service to log the upload',
      () => srv!.log().includes(`sent ${size} B`),
      20_000,
    );
    assert.ok(srv!.log().includes(`sent ${size} B, sha256 ${want}`), srv!.log().slice(-2000));
  });

  test('50 concurrent downloads, each seen by chimney status as an IPv6 connection', async () => {
    // Each connection is counted by its client port in whatever state status shows it: Chimney may
    // have queued all of a download and closed its side (FIN_WAIT_1) while the client holds it.
    const size = 2 * 1024 * 1024;
    const n = 50;
    const { run, release } = await heldDownloads('par', n, size);
    const seen = new Map<string, string>();
    // Downloads that end before status saw them all (none should: they are held) fail at once.
    let done = false;
    void run.finally(() => {
      done = true;
    });
    try {
      await waitFor(
        'fifty IPv6 connections in chimney status',
        async () => {
          for (const c of await ipv6HttpConns())
            seen.set(c.remote, `${c.local} ${c.remote} ${c.owner} ${c.state}`);
          if (done && seen.size < n) {
            const r = await run;
            assert.fail(
              `the downloads ended with ${seen.size} of ${n} seen in status: ${r.code} ${r.stdout} ${r.stderr}`,
            );
          }
          return seen.size >= n;
        },
        60_000,
      );
    } finally {
      await release();
    }
    const lines = [...seen.values()];
    assert.ok(
      lines.every((l) => /^\[[0-9a-f:]+\]:80 \[[0-9a-f:]+\]:\d+ host /.test(l)),
      `IPv6 connections, in the host: ${lines.join('\n')}`,
    );
    const r = await run;
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), `${n} ${patternDigest(size)}  -`, r.stdout);
  });

  test("chimney get fetches from python3's http.server bound to the kernel's IPv6 address", async () => {
    const size = 20 * 1024 * 1024;
    const dir = join(lab!.dir, 'www');
    mkdirSync(dir);
    const want = await writeDataFile(join(dir, 'data.bin'), size, 52);
    const py = lab!.spawnNs(['python3', '-m', 'http.server', '8000', '--bind', KERNEL6, '--directory', dir]);
    try {
      // python3 starts in seconds at nice 19 under load 20 (10 s was run out once).
      await lab!.waitListening(8000, 60_000);
      const out = join(lab!.dir, 'got.bin');
      const r = await lab!.get(`http://[${KERNEL6}]:8000/data.bin`, out, 120_000, {
        extra: ['--ip', `${GET6}/64`],
      });
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      assert.equal(await fileDigest(out), want);
      const missing = await lab!.get(`http://[${KERNEL6}]:8000/nothing-here`, join(lab!.dir, 'x'), 60_000, {
        extra: ['--ip', `${GET6}/64`],
      });
      assert.notEqual(missing.code, 0);
      assert.match(missing.stderr, /HTTP 404/);
    } finally {
      await stopProcess(py, 3000);
    }
  });

  test('a Linux router lowers its next link to 1280 during a download: packet too big, the download completes', async () => {
    // The lab namespace routes fd00:51:1::/64 over a veth into the far namespace; the far side keeps
    // MTU 1500 (so its SYN offers MSS 1440) and the router's side drops to 1280 mid-transfer.
    const far = `chfar-${lab!.tag}`;
    lab!.ip('netns', 'add', far);
    // Chimney hands the TAP TSO6 super-segments, which a capture on a veth with TSO shows uncut.
    // Without TSO on the captured veth the kernel cuts them, before the capture, at the segment
    // size Chimney chose: the capture then shows the segments the router has to forward.
    execFileSync('ethtool', ['-K', lab!.veth, 'tso', 'off'], { stdio: 'ignore' });
    try {
      lab!.ip('-n', lab!.ns, 'link', 'add', 'rt0', 'type', 'veth', 'peer', 'name', 'rt1', 'netns', far);
      lab!.ip('-n', lab!.ns, 'addr', 'add', `${FAR_NET}1/64`, 'dev', 'rt0', 'nodad');
      lab!.ip('-n', lab!.ns, 'link', 'set', 'rt0', 'up');
      lab!.ip('-n', far, 'addr', 'add', `${FAR6}/64`, 'dev', 'rt1', 'nodad');
      lab!.ip('-n', far, 'link', 'set', 'rt1', 'up');
      lab!.ip('-n', far, 'link', 'set', 'lo', 'up');
      lab!.ip('-n', far, '-6', 'route', 'add', 'default', 'via', `${FAR_NET}1`);
      assert.equal((await lab!.sh('sysctl -qw net.ipv6.conf.all.forwarding=1', 10_000)).code, 0);
      // More than the far kernel's receive buffer can take before the drop (tcp_rmem's maximum,
      // 32 MB on some hosts, plus 1.5 s at the rate): a fast sender (TSO6) must still be sending
      // when the MTU falls, or no segment ever meets the smaller link.
      const size = 64 * 1024 * 1024;
      const dl = lab!.run(
        [
          'ip',
          'netns',
          'exec',
          far,
          'bash',
          '-c',
          `set -o pipefail; curl -6 -sS --fail --max-time 120 --limit-rate 8M '${url(`/bytes/${size}`)}' | sha256sum`,
        ],
        130_000,
      );
      // Mid-download by the router's count, not by a fixed sleep: at load 20 curl and Chimney
      // were 1.5 s in with only 65 full-size segments forwarded (the capture check wants 100).
      const forwarded = async (): Promise<number> => {
        const r = await lab!.sh('cat /sys/class/net/rt0/statistics/tx_packets', 10_000);
        return r.code === 0 ? Number(r.stdout.trim()) : 0;
      };
      const t0 = performance.now();
      while ((await forwarded()) < 400 && performance.now() - t0 < 60_000) await sleep(100);
      assert.ok((await forwarded()) >= 400, 'the download reached the router');
      lab!.ip('-n', lab!.ns, 'link', 'set', 'rt0', 'mtu', '1280');
      const r = await dl;
      assert.equal(r.code, 0, `${r.stderr}\n${srv!.log().slice(-2000)}`);
      assert.equal(shaOf(r.stdout), patternDigest(size));
      // The capture shows the router's packet too big, and Chimney's segments to the far host fit
      // 1280 bytes after it.
      // tshark writes the capture file behind the traffic: look again until the PTB is in it.
      const readPtb = () =>
        lab!.run(
          [
            'tshark',
            '-r',
            pcap,
            '-Y',
            `icmpv6.type == 2 && ipv6.dst == ${SERVE6}`,
            '-T',
            'fields',
            '-e',
            'frame.number',
            '-e',
            'icmpv6.mtu',
            '-e',
            'tcp.seq_raw',
          ],
          60_000,
        );
      let ptb = await readPtb();
      for (let i = 0; i < 20 && ptb.code === 0 && ptb.stdout.trim() === ''; i++) {
        await sleep(500);
        ptb = await readPtb();
      }
      assert.equal(ptb.code, 0, ptb.stderr);
      const first = ptb.stdout.trim().split('\n')[0]!.split('\t');
      assert.equal(first[1], '1280', `packet too big from the router: ${ptb.stdout}`);
      const after = await lab!.run(
        [
          'tshark',
          '-r',
          pcap,
          '-Y',
          `frame.number > ${first[0]} && ipv6.src == ${SERVE6} && ipv6.dst == ${FAR6} && tcp.len > 0`,
          '-T',
          'fields',
          '-e',
          'ipv6.plen',
          '-e',
          'tcp.seq_raw',
        ],
        60_000,
      );
      assert.equal(after.code, 0, after.stderr);
      const before = await lab!.run(
        [
          'tshark',
          '-r',
          pcap,
          '-Y',
          `frame.number < ${first[0]} && ipv6.src == ${SERVE6} && ipv6.dst == ${FAR6} && ipv6.plen > 1240`,
          '-T',
          'fields',
          '-e',
          'frame.number',
        ],
        60_000,
      );
      assert.equal(before.code, 0, before.stderr);
      const fullSize = before.stdout.trim() === '' ? 0 : before.stdout.trim().split('\n').length;
      assert.ok(
        fullSize > 100,
        `only ${fullSize} segments over 1280 bytes before the drop: it was not mid-download`,
      );
      // [IPv6 payload length, raw sequence number] of each data segment captured after the PTB.
      const segs = after.stdout
        .trim()
        .split('\n')
        .map((l) => l.split('\t').map(Number) as [number, number]);
      assert.ok(segs.length > 1000, `segments after the PTB: ${segs.length}`);
      // Segments Chimney wrote before it read the PTB are captured after it, at the old size, and a
      // short one among them (a burst's short tail, at a window edge or the end of what was queued)
      // fits 1280 bytes without marking the switch: taken for it, the full-size ones written after
      // it, still before the read, counted as late. What marks it: reading the PTB, Chimney goes
      // back to snd.una and resends at the new size (TcpLayer.icmpError: rewind), at or below the
      // sequence number the PTB quotes (that segment was dropped, so never acknowledged), while
      // before the read it sent only new data, above it. Its first segment at or below the quoted
      // one is therefore the first it wrote after the read (a tail probe due then does not go
      // first: TcpLayer.icmpError cancels it); from there every segment must fit, resends included.
      const quoted = Number(first[2]);
      assert.ok(Number.isInteger(quoted), `the PTB quotes a TCP segment: ${ptb.stdout}`);
      const fits = (p: number): boolean => p + 40 <= 1280;
      const switchAt = segs.findIndex(([, seq]) => ((seq - quoted) | 0) <= 0);
      assert.ok(switchAt >= 0, `no resend at or below the quoted sequence number ${quoted} after the PTB`);
      const late = segs.slice(switchAt).filter(([p]) => !fits(p)).length;
      assert.equal(late, 0, `${late} segments larger than 1280 bytes after Chimney read the PTB`);
      const short = segs.slice(0, switchAt).filter(([p]) => fits(p)).length;
      console.log(
        `${fullSize} segments over 1280 bytes before the PTB; ${switchAt} written before Chimney read it (${short} of them short enough to fit), ${segs.length - switchAt} after`,
      );
    } finally {
      execFileSync('ethtool', ['-K', lab!.veth, 'tso', 'on'], { stdio: 'ignore' });
      lab!.ip('netns', 'del', far);
    }
  });

  test('on a team of two worker NICs, IPv6 connections carry every byte both ways', async () => {
    await srv!.stop();
    srv = null;
    const ctl = join(lab!.dir, 'team.sock');
    srv = await lab!.serve({
      services: ['http:80'],
      extra: ['--tap', lab!.taps[1]!, '--workers', '--ip', `${SERVE6}/64`, '--control', ctl],
    });
    const size = 16 * 1024 * 1024;
    const dl = await lab!.sh(
      `curl -6 -sS --fail --max-time 60 '${url(`/bytes/${size}`)}' | sha256sum`,
      70_000,
    );
    assert.equal(dl.code, 0, `${dl.stderr}\n${srv.log().slice(-2000)}`);
    assert.equal(shaOf(dl.stdout), patternDigest(size));
    const file = join(lab!.dir, 'up-team.bin');
    const want = await writeDataFile(file, 4 * 1024 * 1024, 53);
    const up = await lab!.sh(
      `curl -6 -sS --fail --max-time 60 -X POST -T '${file}' '${url('/sha256')}'`,
      70_000,
    );
    assert.equal(up.code, 0, `${up.stderr}\n${srv.log().slice(-2000)}`);
    assert.equal(up.stdout.trim(), want);
    // IPv4 on the same team is offloaded as before.
    const v4 = await lab!.sh(
      `curl -4 -sS --fail --max-time 60 'http://${lab!.chimneyIps[0]}/bytes/${size}' | sha256sum`,
      70_000,
    );
    assert.equal(v4.code, 0, v4.stderr);
    assert.equal(shaOf(v4.stdout), patternDigest(size));
  });

  test('on the worker team, concurrent IPv6 downloads run on the workers: chimney status shows them offloaded', async () => {
    // The team `serve` of the previous test, with its control socket.
    const ctl = join(lab!.dir, 'team.sock');
    // Held as above, and larger than the client takes while held (at most ~1.1 MiB) plus the
    // most Chimney's send ring grows to against a window that small: the service is still
    // writing, so each connection is ESTABLISHED while status is read.
    const size = 4 * 1024 * 1024;
    const n = 8;
    const { run, release } = await heldDownloads('par-team', n, size);
    let seen: string[] = [];
    try {
      await waitFor(
        `${n} IPv6 connections on the workers in chimney status`,
        async () => {
          const conns = (await ipv6HttpConns(ctl)).filter((c) => c.state === 'ESTABLISHED');
          const onWorkers = conns.filter((c) => c.owner !== 'host');
          if (onWorkers.length > seen.length) seen = onWorkers.map((c) => `${c.remote} ${c.owner}`);
          return onWorkers.length >= n;
        },
        60_000,
      );
    } finally {
      await release();
    }
    assert.equal(seen.length, n, seen.join('\n'));
    const r = await run;
    assert.equal(r.code, 0, `${r.stderr}\n${srv!.log().slice(-2000)}`);
    assert.equal(r.stdout.trim(), `${n} ${patternDigest(size)}  -`, r.stdout);
  });

  test('tshark finds no malformed frame in the capture of the whole run', async () => {
    await sleep(300);
    await stopProcess(capture!, 5000);
    capture = null;
    const count = await lab!.run(
      ['tshark', '-r', pcap, '-Y', `tcp && ipv6.src == ${SERVE6}`, '-T', 'fields', '-e', 'frame.number'],
      120_000,
    );
    assert.equal(count.code, 0, count.stderr);
    assert.ok(count.stdout.trim().split('\n').length > 10_000, 'the capture holds the transfers');
    const bad = await lab!.run(
      [
        'tshark',
        '-r',
        pcap,
        '-Y',
        '_ws.malformed || _ws.expert.severity == error || icmpv6.checksum.status == 0',
      ],
      120_000,
    );
    assert.equal(bad.code, 0, bad.stderr);
    assert.equal(bad.stdout.trim(), '', `bad frames:\n${bad.stdout.slice(0, 3000)}`);
  });
});
