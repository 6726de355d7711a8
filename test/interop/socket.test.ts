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

  test('100 MB into discard: socat delivers all of it and exits 0', {
    timeout: 65_000,
  }, async () => {
    const n = 100 * 1024 * 1024;
    const r = await lab!.sh(
      `socat -u -b 131072 OPEN:/dev/urandom,readbytes=${n} TCP:${lab!.chimneyIps[0]}:9 && echo sent`,
      60_000,
    );
    assert.equal(r.code, 0, `socat failed: ${r.stderr}\n${srv!.log().slice(-2000)}`);
    assert.equal(r.stdout.trim(), 'sent');
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
    const ip = lab!.chimneyIps[0]!;
    const r = await lab!.sh(
      `(socat -t 50 - TCP:${ip}:7 < ${files[0]} | sha256sum > ${files[0]}.out) & ` +
        `(socat -t 50 - TCP:${ip}:7 < ${files[1]} | sha256sum > ${files[1]}.out) & ` +
        `(socat -u OPEN:/dev/zero,readbytes=${16 << 20} TCP:${ip}:9) & wait; cat ${files[0]}.out ${files[1]}.out`,
      60_000,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n').map(shaOf), wants);
  });
});
