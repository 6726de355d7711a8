/**
 * SYN cookies against the kernel on a TAP: `chimney serve --backlog 4`, and a burst of connects
 * from the lab namespace (scripts/tap-load.py, all opened at once) that overflows the half-open
 * queue. Every download must arrive whole, none reset, Chimney's counters must show cookies sent
 * and accepted, and the capture of Chimney's link must hold no RST at all.
 *
 * Linux with the same backlog (kernel 6.18: a python asyncio listener with listen(fd, 4) in one
 * namespace, net.ipv4.tcp_syncookies=1, somaxconn 4096; the same tap-load.py burst from another
 * namespace over a veth pair; nstat; 5 runs by hand on 2026-12-06): every download intact, no
 * reset, 23-43 cookies sent a run, 64-235 SYNs and ACKs dropped at a full accept queue
 * (ListenOverflows), 1.3-27.7 s for the burst. Chimney then: 60 cookies sent, 60 connections made
 * from them, 244 drops at a full accept queue (tcp.listen.overflow), 21 s with the serve start.
 * Both bound the half-open queue by the backlog itself (tcp_max_syn_backlog bounds nothing while
 * syncookies are on), and both drop a SYN or a cookie's ACK while the accept queue is full, so the
 * peer's resends (1 s, then 2 s ...) set the burst's time. Chimney's queue is full only within the
 * TAP read that filled it, which ends there and holds the link until serve's accepts have run
 * (Link.yieldRx), so here it drops none (2026-12-07: 0 a run, main's build 94-108, all of them a
 * loss timer's drain reading past the yield). Where they differ: Linux counts every
 * ACK that passes the cookie check (TcpExtSyncookiesRecv, 54-230 a run, more than it sent: an
 * ACK dropped at the full accept queue is checked again with the peer's next segment); Chimney
 * counts a cookie once its connection is made (tcp.syncookies.ok), so ok <= sent here. And
 * Linux's veth hands back the ACKs within microseconds, while Chimney's TAP is read by a thread
 * that is behind on a busy machine, so more of the burst meets a full half-open queue.
 * Needs root, /dev/net/tun, python3 and tshark: fails under CI (which is root), skips elsewhere.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { StatusSnapshot } from '../../src/cli/control.ts';
import { captureRows, flagOn } from '../helpers/tshark.ts';
import { CHIMNEY, interopGate, type Lab, makeLab, ROOT } from '../interop/lab.ts';

const gate = interopGate(['python3', 'tshark'], { cli: true });
const BACKLOG = 4;
const CONNECTIONS = 64;
const SIZE = 20_000;
let lab: Lab | null = null;

/** The counters that tell what the listener did with the burst. */
function seen(c: Record<string, number>): string {
  return JSON.stringify(
    Object.fromEntries(Object.entries(c).filter(([k]) => /cookie|listen|rst|ecn/.test(k))),
  );
}

function counters(control: string): Record<string, number> {
  const out = execFileSync(process.execPath, [CHIMNEY, 'status', '--control', control, '--json'], {
    encoding: 'utf8',
    cwd: ROOT,
    timeout: 30_000,
  });
  return (JSON.parse(out) as StatusSnapshot).counters;
}

describe(`chimney serve --backlog ${BACKLOG}, ${CONNECTIONS} connects from the kernel at once`, {
  skip: gate.skip,
  timeout: 420_000,
}, () => {
  before(() => {
    if (gate.reason) assert.fail(`interop tests cannot run: ${gate.reason}`);
    lab = makeLab({ tag: 'syck', subnet: 61, taps: 1 }, gate.reason);
    // The kernel asks for ECN (its active opens), so cookies must keep the agreement.
    // And keeps asking in its resent SYNs (RFC 3168 6.1.1.1's fallback off): the burst's cookies
    // answer resends mostly, which by default no longer ask, so they would test little ECN.
    for (const knob of ['net.ipv4.tcp_ecn=1', 'net.ipv4.tcp_ecn_fallback=0']) {
      execFileSync('ip', ['netns', 'exec', lab!.ns, 'sysctl', '-qw', knob], { timeout: 30_000 });
    }
  });
  after(async () => {
    await lab?.down();
  });

  test('every connection completes, past the backlog through SYN cookies, and nothing is reset', {
    timeout: 360_000,
  }, async () => {
    const pcap = join(lab!.dir, 'cookies.pcap');
    const control = join(lab!.dir, 'serve.sock');
    const srv = await lab!.serve({
      services: ['http:80'],
      pcap,
      extra: ['--backlog', String(BACKLOG), '--quiet', '--control', control],
    });
    let c: Record<string, number>;
    try {
      const argv = ['ip', 'netns', 'exec', lab!.ns, 'python3', join(ROOT, 'scripts/tap-load.py')];
      argv.push('--host', lab!.chimneyIps[0]!, '--connections', String(CONNECTIONS));
      // A SYN or cookie ACK dropped at the full accept queue waits for the peer's resend, 1 s, 2 s,
      // 4 s ... (Linux alike): at load 39 one burst's last connection took 83 s, so 240 s.
      argv.push('--size', String(SIZE), '--rate', '0', '--ramp-ms', '0', '--timeout', '240');
      const r = await lab!.run(argv, 270_000);
      // Read before the verdict, so a failed burst says which drops and RSTs made it (the one CI
      // failure of this file, 5 of 64 reset at 224 s, left no counters to tell).
      c = counters(control);
      const res = JSON.parse(r.stdout || '{}') as { ok?: number; resets?: number };
      const why = `${r.stdout.slice(0, 2000)} ${r.stderr.slice(-2000)}\ncounters: ${seen(c)}\nserve: ${srv.log().slice(-2000)}`;
      assert.equal(res.ok, CONNECTIONS, `downloads intact: ${why}`);
      assert.equal(res.resets, 0, `resets: ${why}`);
    } finally {
      await srv.stop();
    }
    assert.ok(
      (c['tcp.syncookies.sent'] ?? 0) > 0,
      `the burst overflowed the backlog into cookies: ${seen(c)}`,
    );
    assert.ok((c['tcp.syncookies.ok'] ?? 0) > 0, `cookies' ACKs made connections: ${seen(c)}`);
    assert.equal(c['tcp.syncookies.failed'] ?? 0, 0, `no cookie refused: ${seen(c)}`);
    // A full accept queue ends the TAP's read and holds it until serve's accepts have run (Link.yieldRx),
    // so no frame of the burst meets a queue that only the batch it came in filled. A loss timer's
    // drain that read past the yield dropped 88-98 cookie ACKs and requests a run here.
    assert.equal(c['tcp.listen.overflow'] ?? 0, 0, `nothing dropped at a full accept queue: ${seen(c)}`);
    assert.equal(c['tcp.rst.out'] ?? 0, 0, `no RST sent: ${seen(c)}`);
    // Linux (tcp_syncookies=2, captured 2026-12-07): a cookie's SYN-ACK says ECE to a SYN that
    // asked and offers 65,160, as its other SYN-ACKs do. Every SYN asks here, resent or not.
    const syns = await captureRows(
      lab!,
      pcap,
      'tcp.flags.syn == 1',
      ['tcp.stream', 'tcp.flags.ack', 'tcp.flags.ece', 'tcp.flags.cwr', 'tcp.window_size_value'],
      { checksums: false },
    );
    const bare = syns.filter((f) => !flagOn(f[1]) && !(flagOn(f[2]) && flagOn(f[3])));
    assert.deepEqual(
      bare.map((f) => f.join(' ')),
      [],
      'every SYN asks for ECN',
    );
    const synAcks = syns.filter((f) => flagOn(f[1]));
    assert.ok(synAcks.length >= CONNECTIONS, `${synAcks.length} SYN-ACKs captured`);
    const odd = synAcks.filter((f) => f[4] !== '65160' || !flagOn(f[2]) || flagOn(f[3]));
    assert.deepEqual(
      odd.map((f) => f.join(' ')),
      [],
      'every SYN-ACK offers 65,160, with ECE alone',
    );
    assert.ok((c['tcp.ecn.accepted'] ?? 0) > 0, `connections agreed to ECN: ${seen(c)}`);
    // The capture sees both directions: a RST from the kernel (a cookie's connection it did not
    // know) shows here though Chimney's counters cannot. One sent after the kernel's own FIN is
    // left out: its socket closed at the ACK of its FIN, and a second ACK, to the FIN it resent
    // (a tail probe, while serve was late to answer at load 40), found no socket there, which
    // Linux answers with a RST whoever the server is; the download was whole by then.
    const frames = await captureRows(
      lab!,
      pcap,
      'tcp.flags.reset == 1 || tcp.flags.fin == 1',
      ['frame.number', 'tcp.stream', 'ip.src', 'tcp.flags.reset'],
      { checksums: false },
    );
    const finished = new Set<string>();
    const rsts: string[] = [];
    for (const [frame, stream, src, reset] of frames) {
      const who = `${stream} ${src}`;
      if (!flagOn(reset)) finished.add(who);
      else if (!finished.has(who)) rsts.push(frame!);
    }
    assert.deepEqual(rsts, [], `RST frames in the capture: ${rsts.join(' ')}`);
  });
});
