import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ControlServer } from '../../src/cli/control.ts';
import { StatusReporter } from '../../src/cli/status.ts';
import { renderFrame } from '../../src/cli/status-watch.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';

const BIN = fileURLToPath(new URL('../../bin/chimney.js', import.meta.url));

test('status --watch refreshes the view of a running server the asked number of times', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'chimney-watch-'));
  const simnet = new SimNetwork({ seed: 1, virtualTime: false });
  const a = simnet.addHost({ ip: '10.0.0.1/24' });
  const b = simnet.addHost({ ip: '10.0.0.2/24' });
  b.createServer((s) => s.pipe(s)).listen(7);
  const sock = a.connect(7, '10.0.0.2');
  await new Promise((r) => sock.once('connect', r));
  const reporter = new StatusReporter(b.stack, 'watched server');
  let asked = 0;
  const control = new ControlServer(join(dir, 'w.sock'), {
    status: () => {
      asked++;
      return reporter.snapshot();
    },
  });
  try {
    const child = spawn(process.execPath, [
      BIN,
      'status',
      '--watch',
      '--interval',
      '100',
      '--count',
      '3',
      '--control',
      control.path,
    ]);
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d) => {
      out += d;
    });
    const code = await new Promise((r) => child.on('close', r));
    assert.equal(code, 0);
    assert.equal(asked, 3);
    // Not a terminal: each refresh follows the last, whole, with the connection in it.
    assert.equal(out.match(/^watched server {2}10\.0\.0\.2\/24/gm)?.length, 3, out);
    assert.equal(out.match(/10\.0\.0\.1:\d+/g)?.length, 3);
    assert.equal(out.includes('\x1b['), false);
  } finally {
    control.close();
    sock.destroy();
    simnet.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a watch frame redraws in place and fits the terminal', async () => {
  const simnet = new SimNetwork({ seed: 1 });
  const h = simnet.addHost({ ip: '10.0.0.9/24' });
  const s = await new StatusReporter(h.stack, `x${'y'.repeat(200)}`).snapshot();
  simnet.close();
  const frame = renderFrame(s, new Date(0), { rows: 2, cols: 40 });
  assert.ok(frame.startsWith('\x1b[H\x1b[2J'), 'cursor home and clear first');
  const lines = frame.slice('\x1b[H\x1b[2J'.length).split('\n');
  assert.equal(lines.length, 2);
  assert.ok(lines.every((l) => l.length <= 40));
  assert.match(lines[1]!, /^… \d+ more lines$/);
  const err = renderFrame(new Error('no server'), new Date(0), { rows: 10, cols: 80 });
  assert.match(err, /error: no server/);
});
