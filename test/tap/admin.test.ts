/**
 * `chimney serve --admin --log-format json` on a real TAP with the kernel as client: the admin
 * endpoint's /metrics and /api/status describe what curl did, and the log has one JSON object per
 * connection event. Needs root for the TAP: fails under CI without it, skips elsewhere.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { StatusSnapshot } from '../../src/cli/control.ts';
import { parsePrometheusText, sumOf } from '../helpers/prom-text.ts';

const ROOT = process.getuid?.() === 0;
const BIN = fileURLToPath(new URL('../../bin/chimney.js', import.meta.url));
const TAP = `chad${process.pid % 100000}`;
const NET = `10.77.${process.pid % 250}`;
const ADMIN_PORT = 20000 + (process.pid % 20000);
const haveCurl = spawnSync('sh', ['-c', 'command -v curl']).status === 0;
const skip = !ROOT ? 'needs root to create a TAP device' : !haveCurl ? 'needs curl' : '';
if (skip && process.env.CI) {
  test('tap admin prerequisites', () => assert.fail(`CI must run the TAP tests: ${skip}`));
}

describe('chimney serve --admin on a TAP', { skip: skip || false }, () => {
  let proc: ChildProcess;
  let stderr = '';
  const admin = `http://127.0.0.1:${ADMIN_PORT}`;
  before(async () => {
    proc = spawn(
      process.execPath,
      [
        BIN,
        'serve',
        '--tap',
        TAP,
        '--ip',
        `${NET}.2/24`,
        '--service',
        'http:80',
        '--admin',
        `127.0.0.1:${ADMIN_PORT}`,
        '--log-format',
        'json',
        '--control',
        `/tmp/chimney-${TAP}.sock`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    proc.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    await new Promise<void>((resolve, reject) => {
      // tsx's start of the CLI took 24 s at load 34: room for a slower machine.
      const t = setTimeout(() => reject(new Error(`serve not ready in 60 s: ${stderr}`)), 60_000);
      proc.stdout!.once('data', () => {
        clearTimeout(t);
        resolve();
      });
      proc.on('exit', (c) => reject(new Error(`serve exited ${c}: ${stderr}`)));
    });
    execFileSync('ip', ['addr', 'add', `${NET}.1/24`, 'dev', TAP]);
    execFileSync('ip', ['link', 'set', TAP, 'up']);
  });
  after(async () => {
    if (!proc || proc.exitCode !== null) return;
    const code = await new Promise((r) => {
      proc.on('exit', r);
      proc.kill('SIGTERM');
    });
    assert.equal(code, 0, stderr);
  });

  test('metrics, status and JSON logs follow a transfer made by the kernel', async () => {
    const body = execFileSync('curl', ['-s', '-m', '10', `http://${NET}.2/bytes/300000`], {
      maxBuffer: 1 << 20,
    });
    assert.equal(body.length, 300_000);
    const m = parsePrometheusText(await (await fetch(`${admin}/metrics`)).text());
    assert.ok(sumOf(m, 'chimney_tcp_bytes_total', { direction: 'out' }) >= 300_000);
    assert.ok(m.has('process_resident_memory_bytes'));
    const s = (await (await fetch(`${admin}/api/status`)).json()) as StatusSnapshot;
    assert.deepEqual(s.addresses, [`${NET}.2/24`]);
    assert.deepEqual(s.listeners, ['http:80']);
    assert.equal((await fetch(`${admin}/nope`)).status, 404);
    // The close is logged when the kernel's FIN has arrived; give it a moment (bounded).
    for (let i = 0; i < 100 && !stderr.includes('"connection-close"'); i++)
      await new Promise((r) => setTimeout(r, 20));
    const events = stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const close = events.find((e) => e.event === 'connection-close');
    assert.ok(close, stderr);
    assert.equal(close.service, 'http:80');
    assert.ok((close.bytesOut as number) >= 300_000);
    assert.ok(events.some((e) => e.event === 'connection-open'));
  });
});
