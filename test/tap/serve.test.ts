/**
 * `chimney serve` on a real TAP device, with the kernel's TCP (curl, socat) as the peer.
 *
 * Needs root for the TAP. Each run uses its own device name and subnet (from the pid), lets
 * `serve` create the TAP, puts the kernel's address on it, and checks the device is gone after
 * SIGTERM. Without root: fails under CI (which runs as root), skips with a reason elsewhere.
 */

import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { StatusSnapshot } from '../../src/cli/control.ts';

const ROOT = process.getuid?.() === 0;
const MAIN = new URL('../../src/cli/main.ts', import.meta.url).pathname;
const TAP = `chsv${process.pid % 100000}`;
const NET = `10.78.${process.pid % 250}`;
const KERNEL_IP = `${NET}.1`;
const CHIMNEY_IP = `${NET}.2`;

function have(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
}

const missing = ['ip', 'curl', 'socat'].filter((t) => !have(t));
const skipReason = !ROOT
  ? 'needs root to create TAP devices (run as root, as CI does)'
  : missing.length > 0
    ? `needs ${missing.join(', ')} (apt-get install ${missing.join(' ')})`
    : '';
if (skipReason && process.env.CI) {
  test('tap serve prerequisites', () => {
    assert.fail(`CI must run the TAP tests: ${skipReason}`);
  });
} else if (skipReason) {
  console.log(`# skipping test/tap/serve.test.ts: ${skipReason}`);
}

function chimney(args: string[]): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
}

function runChimney(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', MAIN, ...args], {
    encoding: 'utf8',
    // tsx's start of the CLI alone took over 20 s at load 41 (two cases failed with no stderr).
    timeout: 90_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

function pattern(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = i % 251;
  return b;
}

function exec(cmd: string, args: string[], input?: Uint8Array): Buffer {
  return execFileSync(cmd, args, { input, maxBuffer: 64 << 20, timeout: 20_000 });
}

function devExists(name: string): boolean {
  return spawnSync('ip', ['link', 'show', 'dev', name], { stdio: 'ignore' }).status === 0;
}

describe('chimney serve: argument errors', () => {
  test('an unknown service exits non-zero and names it', () => {
    const r = runChimney(['serve', '--tap', 'chx0', '--ip', '10.1.2.3/24', '--service', 'gopher:70']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /unknown service 'gopher:70'/);
  });
  test('a bad port exits non-zero', () => {
    const r = runChimney(['serve', '--tap', 'chx0', '--ip', '10.1.2.3/24', '--service', 'http:70000']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /port must be 1\.\.65535/);
  });
  test('a bad address exits non-zero and names the flag', () => {
    const r = runChimney(['serve', '--tap', 'chx0', '--ip', '10.1.2.300/24']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--ip/);
  });
  test('a bad --impair spec exits non-zero and names the flag', () => {
    const r = runChimney(['serve', '--tap', 'chx0', '--ip', '10.1.2.3/24', '--impair', 'loss=150%']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--impair/);
  });
  // --pcap works on a team since capture crosses from the workers (test/tap/team-scale.test.ts).
  test('a team refuses --impair, a TAP named twice, and get on several TAPs', () => {
    let r = runChimney(['serve', '--tap', 'chx0', '--workers', '--ip', '10.1.2.3/24', '--impair', 'loss=1%']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--impair: not available with a team/);
    r = runChimney(['serve', '--tap', 'chx0,chx0', '--ip', '10.1.2.3/24']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /a TAP is named twice/);
    r = runChimney(['get', 'http://10.1.2.1/', '--tap', 'chx0,chx1', '--ip', '10.1.2.3/24']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /get runs on one TAP/);
  });
  test('bad team flags name the flag', () => {
    let r = runChimney(['serve', '--tap', 'chx0', '--ip', '10.1.2.3/24', '--offload-policy', 'sometimes']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--offload-policy/);
    r = runChimney(['serve', '--tap', 'chx0', '--ip', '10.1.2.3/24', '--probe', '10.1.2']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /'10\.1\.2' is not an IPv4 address/);
    r = runChimney(['serve', '--tap', 'chx0', '--ip', '10.1.2.3/24', '--probe-misses', '0']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--probe-misses/);
    r = runChimney(['serve', '--tap', 'chx0', '--ip', '10.1.2.3/24', '--max-connections', '0']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--max-connections/);
    r = runChimney(['serve', '--tap', 'chx0', '--ip', '10.1.2.3/24', '--tcp-mem', 'lots']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--tcp-mem/);
    r = runChimney(['serve', '--tap', 'chx0', '--ip', '10.1.2.3/24', '--backlog', '0']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--backlog <n>' argument '0' is invalid\. 0 is outside 1\.\.65535/);
    r = runChimney(['serve', '--tap', 'chx0', '--ip', '10.1.2.3/24', '--backlog', 'many']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--backlog <n>' argument 'many' is invalid\. 'many' is not an integer/);
    r = runChimney(['serve', '--tap', 'chx0', '--ip', '10.1.2.3/24', '--accept-at-nic']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /--accept-at-nic: needs a team/);
  });
  test('a device that is not a TAP cannot be opened', { skip: skipReason || false }, () => {
    const r = runChimney(['serve', '--tap', 'lo', '--ip', '10.1.2.3/24']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /lo/);
  });
});

describe('chimney serve on a TAP, the kernel as client', { skip: skipReason || false }, () => {
  let proc: ChildProcess;
  let stderr = '';

  before(async () => {
    assert.ok(!devExists(TAP), `${TAP} already exists`);
    proc = chimney(['serve', '--tap', TAP, '--ip', `${CHIMNEY_IP}/24`]);
    proc.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const ready = await new Promise<string>((resolve, reject) => {
      let out = '';
      // tsx's start of the CLI took 24 s at load 34 (runChimney above): room for a slower machine.
      const t = setTimeout(() => reject(new Error(`serve not ready in 60 s; stderr: ${stderr}`)), 60_000);
      proc.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) {
          clearTimeout(t);
          resolve(out);
        }
      });
      proc.on('exit', (code) => reject(new Error(`serve exited ${code}: ${stderr}`)));
    });
    assert.match(ready, new RegExp(`^chimney: serving echo:7 discard:9 http:80 on ${TAP} ${CHIMNEY_IP}/24`));
    exec('ip', ['addr', 'add', `${KERNEL_IP}/24`, 'dev', TAP]);
    exec('ip', ['link', 'set', TAP, 'up']);
  });

  after(async () => {
    if (!proc || proc.exitCode !== null) return;
    const code = await new Promise<number | null>((resolve) => {
      proc.on('exit', (c) => resolve(c));
      proc.kill('SIGTERM');
    });
    assert.equal(code, 0, `serve exit code after SIGTERM; stderr: ${stderr}`);
    assert.ok(!devExists(TAP), `${TAP} should be removed after SIGTERM`);
  });

  test('curl GET /bytes/1000 and /bytes/1000000 match the pattern', () => {
    for (const n of [1000, 1_000_000]) {
      const body = exec('curl', ['-sSf', '-m', '15', `http://${CHIMNEY_IP}/bytes/${n}`]);
      assert.equal(body.length, n);
      assert.equal(sha256(body), sha256(pattern(n)));
    }
  });

  test('curl POST /sha256 answers the digest of the body', () => {
    const body = randomBytes(3_000_000);
    const out = exec(
      'curl',
      [
        '-sSf',
        '-m',
        '15',
        '--data-binary',
        '@-',
        '-H',
        'content-type: application/octet-stream',
        `http://${CHIMNEY_IP}/sha256`,
      ],
      body,
    );
    assert.equal(out.toString().trim(), sha256(body));
  });

  test('chimney status shows a live connection in its tree, owned by the host', async () => {
    const sock = net.connect(7, CHIMNEY_IP);
    await once(sock, 'connect');
    sock.write(Buffer.alloc(5000, 1));
    let echoed = 0;
    sock.on('data', (d: Buffer) => {
      echoed += d.length;
    });
    while (echoed < 5000) await new Promise((r) => setTimeout(r, 20));
    const control = `/run/chimney/${TAP}.sock`;
    const js = runChimney(['status', '--control', control, '--json']);
    assert.equal(js.status, 0, js.stderr);
    const snap = JSON.parse(js.stdout) as StatusSnapshot;
    const conns = snap.trees.flatMap((t) => t.paths.flatMap((p) => p.conns));
    const mine = conns.find(
      (c) => c.local === `${CHIMNEY_IP}:7` && c.remote === `${KERNEL_IP}:${sock.localPort}`,
    );
    assert.ok(mine, `connection missing from ${JSON.stringify(snap.trees)}`);
    assert.equal(mine.owner, 'host');
    assert.equal(mine.state, 'ESTABLISHED');
    assert.ok(mine.bytesIn >= 5000 && mine.bytesOut >= 5000);
    const text = runChimney(['status', '--control', control]);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`${CHIMNEY_IP.replace(/\./g, '\\.')}:7 .*ESTABLISHED +in host`));
    sock.destroy();
  });

  test('chimney status without a server says so and exits non-zero', () => {
    const r = runChimney(['status', '--control', '/run/chimney/none-such.sock']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /no chimney serve is listening/);
  });

  test('unknown paths are 404', () => {
    const r = spawnSync('curl', ['-sf', '-m', '10', `http://${CHIMNEY_IP}/nope`]);
    assert.equal(r.status, 22, 'curl -f exits 22 on HTTP >= 400');
  });

  test('echo returns what socat sends', () => {
    const data = randomBytes(200_000);
    const out = exec('socat', ['-t', '5', '-T', '10', '-', `TCP:${CHIMNEY_IP}:7`], data);
    assert.equal(out.length, data.length);
    assert.ok(out.equals(data));
  });

  test('discard takes everything and closes cleanly', async () => {
    const data = randomBytes(1_000_000);
    const out = exec('socat', ['-t', '5', '-T', '10', '-', `TCP:${CHIMNEY_IP}:9`], data);
    assert.equal(out.length, 0);
    // The server logs the byte count when the connection closes.
    for (let i = 0; i < 50 && !/discard:9: .* closed \(in 1000000 B/.test(stderr); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.match(stderr, /discard:9: .* closed \(in 1000000 B, out 0 B\)/);
  });
});

describe('chimney get against a Linux HTTP server', { skip: skipReason || false }, () => {
  const tap = `chgt${process.pid % 100000}`;
  const net = `10.79.${process.pid % 250}`;
  let dir = '';
  let server: ChildProcess | null = null;

  before(async () => {
    exec('ip', ['tuntap', 'add', 'mode', 'tap', 'name', tap, 'vnet_hdr']);
    exec('ip', ['addr', 'add', `${net}.1/24`, 'dev', tap]);
    exec('ip', ['link', 'set', tap, 'up']);
    dir = mkdtempSync(join(tmpdir(), 'chimney-get-'));
    server = spawn('python3', ['-m', 'http.server', '8080', '--bind', `${net}.1`, '--directory', dir], {
      stdio: 'ignore',
    });
    await new Promise((r) => setTimeout(r, 700));
  });

  after(() => {
    server?.kill('SIGTERM');
    spawnSync('ip', ['link', 'del', tap]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('fetches a 5 MB file intact, and fails on 404', () => {
    const body = randomBytes(5_000_000);
    writeFileSync(join(dir, 'blob'), body);
    const args = ['--tap', tap, '--ip', `${net}.2/24`, '--timeout', '5000'];
    const out = execFileSync(
      process.execPath,
      ['--import', 'tsx', MAIN, 'get', `http://${net}.1:8080/blob`, ...args],
      {
        maxBuffer: 64 << 20,
        // Starting tsx and the stack takes seconds on a loaded machine: generous, the file is the subject.
        timeout: 60_000,
      },
    );
    assert.equal(sha256(out), sha256(body));
    const r = runChimney(['get', `http://${net}.1:8080/missing`, ...args]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /HTTP 404/);
  });
});
