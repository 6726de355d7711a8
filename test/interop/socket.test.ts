/**
 * socat in a namespace against `chimney serve`'s discard (RFC 863) and echo (RFC 862) services.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { interopGate, type Lab, makeLab, type Served, shaOf, writeDataFile } from './lab.ts';

const gate = interopGate(['socat', 'ss'], { cli: true });
let lab: Lab | null = null;
let srv: Served | null = null;

/** The discard service logs each stream's byte count and SHA-256 when the sender closes it. */
async function discarded(n: number, sha: string): Promise<void> {
  const line = `sent ${n} B, sha256 ${sha}`;
  for (let i = 0; i < 200 && !srv!.log().includes(line); i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(srv!.log().includes(line), `discard did not log "${line}":\n${srv!.log().slice(-2000)}`);
}

describe('socat ↔ chimney serve (discard, echo)', { skip: gate.skip, timeout: 180_000 }, () => {
  before(async () => {
    if (gate.reason) assert.fail(`interop tests cannot run: ${gate.reason}`);
    lab = makeLab({ tag: 'sock', subnet: 12 }, gate.reason);
    srv = await lab!.serve({ services: ['echo:7', 'discard:9'] });
  });
  after(async () => {
    await srv?.stop();
    await lab?.down();
  });

  test('100 MB into discard: the service received every byte (count and SHA-256)', {
    timeout: 65_000,
  }, async () => {
    const n = 100 * 1024 * 1024;
    const file = join(lab!.dir, 'discard.bin');
    const want = await writeDataFile(file, n, 5);
    const r = await lab!.sh(
      `socat -u -b 131072 FILE:${file} TCP:${lab!.chimneyIps[0]}:9 && echo sent`,
      60_000,
    );
    assert.equal(r.code, 0, `socat failed: ${r.stderr}\n${srv!.log().slice(-2000)}`);
    assert.equal(r.stdout.trim(), 'sent');
    await discarded(n, want);
  });

  test('32 MB through echo while it echoes back, both directions at once, data checked', {
    timeout: 65_000,
  }, async () => {
    const file = join(lab!.dir, 'echo.bin');
    const want = await writeDataFile(file, 32 * 1024 * 1024, 7);
    // -t: after our EOF, keep reading the echo for up to 50 s instead of socat's 0.5 s default.
    const r = await lab!.sh(
      `socat -t 50 -b 131072 - TCP:${lab!.chimneyIps[0]}:7 < ${file} | sha256sum`,
      60_000,
    );
    assert.equal(r.code, 0, `socat failed: ${r.stderr}\n${srv!.log().slice(-2000)}`);
    assert.equal(shaOf(r.stdout), want);
  });

  test('two echo streams and a discard stream at once, all checked', { timeout: 65_000 }, async () => {
    const files = [0, 1].map((i) => join(lab!.dir, `echo${i}.bin`));
    const wants = await Promise.all(files.map((f, i) => writeDataFile(f, 8 * 1024 * 1024, 20 + i)));
    const dfile = join(lab!.dir, 'discard2.bin');
    const dwant = await writeDataFile(dfile, 16 << 20, 30);
    const ip = lab!.chimneyIps[0]!;
    // Each job's status is waited for by pid: a bare `wait` returns 0 whatever they did.
    const r = await lab!.sh(
      `(socat -t 50 - TCP:${ip}:7 < ${files[0]} | sha256sum > ${files[0]}.out) & a=$!; ` +
        `(socat -t 50 - TCP:${ip}:7 < ${files[1]} | sha256sum > ${files[1]}.out) & b=$!; ` +
        `socat -u FILE:${dfile} TCP:${ip}:9 & c=$!; ` +
        `wait $a && wait $b && wait $c && cat ${files[0]}.out ${files[1]}.out`,
      60_000,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n').map(shaOf), wants);
    await discarded(16 << 20, dwant);
  });
});
