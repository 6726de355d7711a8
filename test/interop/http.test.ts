/**
 * curl in a namespace against `chimney serve`'s http service over a TAP: downloads of the /bytes
 * pattern with their digests, an upload to /sha256, and 200 concurrent downloads.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { interopGate, type Lab, makeLab, patternDigest, type Served, shaOf, writeDataFile } from './lab.ts';

const gate = interopGate(['curl', 'ss'], { cli: true });
let lab: Lab | null = null;
let srv: Served | null = null;

describe('curl ↔ chimney serve (http)', { skip: gate.skip, timeout: 1_800_000 }, () => {
  before(async () => {
    if (gate.reason) assert.fail(`interop tests cannot run: ${gate.reason}`);
    lab = makeLab({ tag: 'http', subnet: 11 }, gate.reason);
    srv = await lab!.serve({ services: ['http:80'] });
  });
  after(async () => {
    await srv?.stop();
    await lab?.down();
  });

  const url = (path: string): string => `http://${lab!.chimneyIps[0]}${path}`;
  const STALL = '--speed-limit 1 --speed-time 30';
  const HANG_MS = 300_000;

  // Time limits here only stop a hung test: curl gives up on a transfer that made no progress for
  // STALL seconds, and the shell limits are far above any plausible run. Speed is `npm run bench`'s.
  for (const n of [1024, 1 << 20, 200 * 1024 * 1024]) {
    test(`GET /bytes/${n}: length and SHA-256 match`, { timeout: HANG_MS + 5000 }, async () => {
      const r = await lab!.sh(
        `curl -sS --fail ${STALL} -w '%{stderr}%{size_download}' ${url(`/bytes/${n}`)} | sha256sum`,
        HANG_MS,
      );
      assert.equal(r.code, 0, `curl failed: ${r.stderr}\n${srv!.log().slice(-2000)}`);
      assert.equal(Number(r.stderr.trim().split(/\s+/).pop()), n, `length: ${r.stderr}`);
      assert.equal(shaOf(r.stdout), patternDigest(n));
    });
  }

  test('POST 50 MB to /sha256 answers the digest of the body', { timeout: 65_000 }, async () => {
    const file = join(lab!.dir, 'post.bin');
    const want = await writeDataFile(file, 50 * 1024 * 1024, 3);
    const r = await lab!.sh(
      `curl -sS --fail ${STALL} -H 'content-type: application/octet-stream' --data-binary @${file} ${url('/sha256')}`,
      62_000,
    );
    assert.equal(r.code, 0, `curl failed: ${r.stderr}\n${srv!.log().slice(-2000)}`);
    assert.equal(r.stdout.trim(), want);
  });

  test('a flood of connection attempts does not disturb an established download', {
    timeout: 80_000,
  }, async () => {
    const n = 100 * 1024 * 1024;
    // 3,000 connection attempts, each abandoned at once (SYN, then RST or nothing), bounded in count
    // and time, while one download runs; afterwards a fresh request is still served.
    const flood =
      'python3 - <<"PY"\n' +
      'import socket, time\n' +
      'end = time.time() + 20\n' +
      'for i in range(3000):\n' +
      '    if time.time() > end: break\n' +
      '    s = socket.socket(); s.setblocking(False)\n' +
      `    s.connect_ex(("${lab!.chimneyIps[0]}", 80)); s.close()\n` +
      'print("flooded", i + 1)\n' +
      'PY\n';
    const r = await lab!.sh(
      `(curl -sS --fail ${STALL} ${url(`/bytes/${n}`)} | sha256sum > ${lab!.dir}/flood.sum) & dl=$!; ` +
        `${flood}wait $dl; cat ${lab!.dir}/flood.sum; curl -sS --fail ${STALL} ${url('/bytes/1000')} | sha256sum`,
      75_000,
    );
    assert.equal(r.code, 0, `failed: ${r.stderr}\n${srv!.log().slice(-2000)}`);
    assert.match(r.stdout, /flooded \d+/);
    const sums = r.stdout
      .trim()
      .split('\n')
      .filter((l) => /^[0-9a-f]{64}/.test(l));
    assert.equal(sums.length, 2, r.stdout);
    assert.equal(shaOf(sums[0]!), patternDigest(n), 'the download ran through the flood intact');
    assert.equal(shaOf(sums[1]!), patternDigest(1000), 'and a new request is served afterwards');
  });

  test('200 concurrent downloads of 1 MB all arrive intact', { timeout: HANG_MS + 5000 }, async () => {
    const n = 200;
    const size = 1 << 20;
    const out = join(lab!.dir, 'many');
    const r = await lab!.sh(
      `mkdir -p ${out}; i=0; while [ $i -lt ${n} ]; do ` +
        `(curl -sS --fail ${STALL} ${url(`/bytes/${size}`)} | sha256sum > ${out}/$i) & i=$((i+1)); done; wait; cat ${out}/*`,
      HANG_MS,
    );
    assert.equal(r.code, 0, r.stderr);
    const sums = r.stdout.trim().split('\n').map(shaOf);
    assert.equal(sums.length, n);
    const want = patternDigest(size);
    const bad = sums.filter((s) => s !== want).length;
    assert.equal(bad, 0, `${bad} of ${n} downloads were wrong or incomplete: ${r.stderr.slice(0, 2000)}`);
  });
});
