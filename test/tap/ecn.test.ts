/**
 * ECN (RFC 3168) between `chimney serve` on a TAP and the kernel's TCP with tcp_ecn=1 (it asks on
 * its active opens), in a namespace of the test's own so the sysctl and the nftables rules touch
 * nothing else. The TAP and a veth into the namespace are ports of one bridge (a TAP moved into
 * the namespace would leave serve, which watches its carrier where it made it, without one).
 * tshark on the namespace's veth shows what each side sent; nftables there marks CE where a
 * congested router would (`ip ecn set ce`).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

const ROOT = process.getuid?.() === 0;
const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
const TAP = `chec${process.pid % 100000}`;
const NS = `checns${process.pid % 100000}`;
const BRIDGE = `checbr${process.pid % 100000}`;
/** The veth's ends: in the bridge, and in the namespace (where the kernel's client runs). */
const VETH = `checva${process.pid % 100000}`;
const VETH_NS = `checvb${process.pid % 100000}`;
const NET = `10.79.${process.pid % 250}`;
const KERNEL_IP = `${NET}.1`;
const CHIMNEY_IP = `${NET}.2`;

function have(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
}

const missing = ['ip', 'curl', 'tshark', 'dumpcap', 'nft'].filter((t) => !have(t));
const skipReason = !ROOT
  ? 'needs root to create TAP devices and namespaces (run as root, as CI does)'
  : missing.length > 0
    ? `needs ${missing.join(', ')}`
    : '';
if (skipReason && process.env.CI) {
  test('tap ECN prerequisites', () => {
    assert.fail(`CI must run the TAP tests: ${skipReason}`);
  });
} else if (skipReason) {
  console.log(`# skipping test/tap/ecn.test.ts: ${skipReason}`);
}

/** A command in the test's namespace. */
function inNs(cmd: string, args: string[], input?: Uint8Array): Buffer {
  return execFileSync('ip', ['netns', 'exec', NS, cmd, ...args], {
    input,
    maxBuffer: 64 << 20,
    timeout: 60_000,
  });
}

function nft(rule: string): void {
  inNs('nft', [rule]);
}

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** dumpcap on the namespace's veth into `pcap`, once it says it captures; returns its stop. */
async function capture(pcap: string): Promise<() => Promise<void>> {
  const p = spawn('ip', ['netns', 'exec', NS, 'dumpcap', '-i', VETH_NS, '-s', '128', '-w', pcap, '-q'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  p.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  // Slow to start on a loaded machine: wait for its word, up to a minute.
  for (let i = 0; i < 600 && !/Capturing on/.test(err) && p.exitCode === null; i++) await sleep(100);
  assert.match(err, /Capturing on/, 'dumpcap started');
  return async () => {
    // Its last frames reach the file before it stops (it flushes on SIGTERM).
    await sleep(300);
    const done = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await done;
  };
}

/** A TCP frame of a capture, as the checks read it. */
interface Frame {
  n: number;
  fromChimney: boolean;
  syn: boolean;
  ece: boolean;
  cwr: boolean;
  /** The IP ECN field: 0 not-ECT, 2 ECT(0), 3 CE. */
  ecn: number;
  len: number;
  resent: boolean;
}

/** Every TCP frame of `pcap` (one tshark read). */
function frames(pcap: string): Frame[] {
  const fields = [
    'frame.number',
    'ip.src',
    'tcp.flags.syn',
    'tcp.flags.ece',
    'tcp.flags.cwr',
    'ip.dsfield.ecn',
  ];
  const r = spawnSync(
    'tshark',
    [
      '-r',
      pcap,
      '-Y',
      'tcp',
      '-T',
      'fields',
      '-E',
      'separator=|',
      ...[...fields, 'tcp.len', 'tcp.analysis.retransmission'].flatMap((f) => ['-e', f]),
    ],
    { encoding: 'utf8', timeout: 120_000, maxBuffer: 64 << 20 },
  );
  assert.equal(r.status, 0, r.stderr);
  return r.stdout
    .trim()
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const [n, src, syn, ece, cwr, ecn, len, resent] = l.split('|');
      return {
        n: Number(n),
        fromChimney: src === CHIMNEY_IP,
        syn: syn === '1',
        ece: ece === '1',
        cwr: cwr === '1',
        ecn: Number(ecn),
        len: Number(len),
        resent: resent !== '',
      };
    });
}

describe('ECN: chimney serve and the kernel (tcp_ecn=1)', {
  skip: skipReason || false,
  timeout: 300_000,
}, () => {
  let proc: ChildProcess;
  let stderr = '';
  let dir = '';

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'chimney-ecn-'));
    execFileSync('ip', ['netns', 'add', NS]);
    proc = spawn(
      process.execPath,
      ['--import', 'tsx', MAIN, 'serve', '--tap', TAP, '--ip', `${CHIMNEY_IP}/24`],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    proc.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    await new Promise<void>((resolve, reject) => {
      // tsx's start of the CLI took 24 s at load 34 (serve.test.ts): room for a slower machine.
      const t = setTimeout(() => reject(new Error(`serve not ready in 90 s; stderr: ${stderr}`)), 90_000);
      proc.stdout!.once('data', () => {
        clearTimeout(t);
        resolve();
      });
      proc.on('exit', (code) => reject(new Error(`serve exited ${code}: ${stderr}`)));
    });
    execFileSync('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
    execFileSync('ip', ['link', 'set', BRIDGE, 'up']);
    execFileSync('ip', ['link', 'add', VETH, 'type', 'veth', 'peer', 'name', VETH_NS, 'netns', NS]);
    for (const dev of [VETH, TAP]) execFileSync('ip', ['link', 'set', dev, 'master', BRIDGE, 'up']);
    inNs('ip', ['link', 'set', 'lo', 'up']);
    inNs('ip', ['addr', 'add', `${KERNEL_IP}/24`, 'dev', VETH_NS]);
    inNs('ip', ['link', 'set', VETH_NS, 'up']);
    inNs('sysctl', ['-qw', 'net.ipv4.tcp_ecn=1']);
    // A SYN the kernel resends asks no more (RFC 3168 6.1.1.1, tcp_ecn_fallback=1 by default), so a
    // first SYN lost, or answered past the kernel's 1 s SYN timeout at load, made a connection without
    // ECN, whose receiver never echoes a mark. Off here, every SYN asks, whatever the machine's speed.
    inNs('sysctl', ['-qw', 'net.ipv4.tcp_ecn_fallback=0']);
    nft('add table ip marks');
  });

  after(async () => {
    if (proc && proc.exitCode === null) {
      const done = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await done;
    }
    // The namespace's end of the veth goes with it, and the other end with that.
    spawnSync('ip', ['netns', 'del', NS]);
    spawnSync('ip', ['link', 'del', BRIDGE]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('the handshake negotiates ECN through a resent SYN and Chimney sends its new data ECT(0), its ACKs not-ECT', async () => {
    const pcap = join(dir, 'plain.pcap');
    // The kernel's first SYN is dropped before the wire (and the capture), so the handshake is
    // always the one a slow machine may make: a resent SYN, which must still ask.
    nft('add chain ip marks lose { type filter hook output priority 0; }');
    nft('add rule ip marks lose tcp flags & (syn|ack) == syn quota until 100 bytes drop');
    const stop = await capture(pcap);
    const body = inNs('curl', ['-sSf', '-m', '60', `http://${CHIMNEY_IP}/bytes/1000000`]);
    await stop();
    nft('delete chain ip marks lose');
    assert.equal(body.length, 1_000_000);
    const f = frames(pcap);
    const syn = f.filter((x) => x.syn && !x.fromChimney);
    assert.ok(syn.length > 0, 'the resent SYN');
    assert.ok(
      syn.every((x) => x.ece && x.cwr),
      'the kernel asks with ECE and CWR',
    );
    const synAck = f.filter((x) => x.syn && x.fromChimney);
    assert.ok(synAck.length > 0, 'a SYN-ACK');
    assert.ok(
      synAck.every((x) => x.ece && !x.cwr && x.ecn === 0),
      'Chimney agrees with ECE alone, in a not-ECT SYN-ACK',
    );
    const data = f.filter((x) => x.fromChimney && x.len > 0);
    assert.ok(data.length > 10, `${data.length} data frames`);
    // A resend (none is expected on this wire, but a stall at load may time one out) goes not-ECT.
    assert.deepEqual([...new Set(data.filter((x) => !x.resent).map((x) => x.ecn))], [2], 'new data ECT(0)');
    assert.ok(
      data.every((x) => !x.resent || x.ecn === 0),
      'resent data not-ECT',
    );
    const acks = f.filter((x) => x.fromChimney && x.len === 0 && !x.syn);
    assert.ok(acks.length > 0, 'Chimney sent pure ACKs');
    assert.deepEqual([...new Set(acks.map((x) => x.ecn))], [0], 'pure ACKs not-ECT');
  });

  test("CE marks on Chimney's data: the kernel echoes ECE, Chimney answers with CWR and resends nothing", async () => {
    const pcap = join(dir, 'download.pcap');
    // A router that marks one ECT packet from Chimney in ten, before the kernel's TCP sees it (the
    // capture, taken before the hook, shows them ECT(0)).
    nft('add chain ip marks pre { type filter hook prerouting priority 0; }');
    nft(`add rule ip marks pre ip saddr ${CHIMNEY_IP} ip ecn ect0 numgen random mod 10 0 ip ecn set ce`);
    const stop = await capture(pcap);
    const body = inNs('curl', ['-sSf', '-m', '60', `http://${CHIMNEY_IP}/bytes/2000000`]);
    await stop();
    nft('delete chain ip marks pre');
    assert.equal(body.length, 2_000_000);
    const f = frames(pcap);
    const ece = f.filter((x) => !x.fromChimney && !x.syn && x.ece);
    // Said with the handshake and the data's ECN field, so a failure tells a connection that did
    // not negotiate ECN (a resent SYN no longer asks) from marks that were not echoed.
    const shape = (xs: Frame[]): string =>
      xs.map((x) => `${x.n}:${x.ece ? 'E' : ''}${x.cwr ? 'C' : ''}`).join(' ');
    const fromChimney = f.filter((x) => x.fromChimney && x.len > 0);
    const why = `SYNs ${shape(f.filter((x) => x.syn))}; ${fromChimney.length} data frames, ECN fields ${[...new Set(fromChimney.map((x) => x.ecn))]}`;
    assert.ok(ece.length > 0, `the kernel echoed the marks: ${why}`);
    const cwr = f.filter((x) => x.fromChimney && x.cwr);
    assert.ok(cwr.length > 0, 'Chimney said CWR');
    assert.ok(cwr[0]!.n > ece[0]!.n, 'after the first echo');
    assert.ok(cwr.length < ece.length, `${cwr.length} CWRs for ${ece.length} echoes: one per window`);
    assert.ok(
      cwr.every((x) => x.len > 0 && x.ecn === 2),
      'CWR on new data',
    );
    assert.deepEqual(
      // Data only: a SYN-ACK resent to a SYN the kernel resent at load is not a mark's doing.
      f.filter((x) => x.fromChimney && x.len > 0 && x.resent).map((x) => x.n),
      [],
      'marks are not losses',
    );
  });

  test("CE marks on the kernel's data: Chimney echoes ECE until the kernel's CWR", async () => {
    const pcap = join(dir, 'upload.pcap');
    // Marked on the way out, after the kernel's TCP: the capture shows the marks Chimney gets.
    nft('add chain ip marks out { type filter hook output priority 0; }');
    nft(`add rule ip marks out ip daddr ${CHIMNEY_IP} ip ecn ect0 numgen random mod 10 0 ip ecn set ce`);
    const stop = await capture(pcap);
    const upload = randomBytes(2_000_000);
    const out = inNs(
      'curl',
      [
        '-sSf',
        '-m',
        '60',
        '--data-binary',
        '@-',
        '-H',
        'content-type: application/octet-stream',
        `http://${CHIMNEY_IP}/sha256`,
      ],
      upload,
    );
    await stop();
    nft('delete chain ip marks out');
    assert.equal(out.toString().trim(), sha256(upload));
    const f = frames(pcap);
    const ce = f.filter((x) => !x.fromChimney && x.len > 0 && x.ecn === 3);
    assert.ok(ce.length > 0, 'marks went to Chimney');
    const ece = f.filter((x) => x.fromChimney && !x.syn && x.ece);
    assert.ok(ece.length > 0, 'Chimney echoed them');
    assert.ok(ece[0]!.n > ce[0]!.n, 'after the first mark');
    assert.ok(
      f.some((x) => !x.fromChimney && x.cwr),
      'the kernel cut its window and said so',
    );
    // The echo is not for ever: after the kernel's CWR Chimney's ACKs go without ECE again.
    assert.ok(
      f.some((x) => x.fromChimney && !x.ece && x.n > ece[0]!.n),
      'the echo stopped after CWR',
    );
  });
});
