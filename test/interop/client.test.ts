/**
 * Chimney as an HTTP client of Linux (`chimney get` against python3 http.server), and both
 * directions of a 50 MB HTTP transfer with loss and reordering made in Chimney's own link
 * (impairLink on the TAP, Chimney in this process).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { ImpairedLink } from '../../src/link/impaired-link.ts';
import { startInProc, writePattern } from './inproc.ts';
import {
  cliMissing,
  fileDigest,
  interopGate,
  type Lab,
  makeLab,
  patternDigest,
  shaOf,
  writeDataFile,
} from './lab.ts';

const gate = interopGate(['python3', 'curl', 'ss']);
const SIZE = 50 * 1024 * 1024;
let lab: Lab | null = null;
let fileSha = '';

describe('Chimney as a client of Linux, and lossy links both ways', {
  skip: gate.skip,
  timeout: 300_000,
}, () => {
  before(async () => {
    if (gate.reason) assert.fail(`interop tests cannot run: ${gate.reason}`);
    lab = makeLab({ tag: 'cli', subnet: 13, taps: 2 }, gate.reason);
    fileSha = await writeDataFile(join(lab!.dir, 'f.bin'), SIZE, 11);
    await lab!.pythonHttp(lab!.dir, 8000);
  });
  after(async () => {
    await lab?.down();
  });

  const cli = cliMissing();
  test('chimney get fetches 50 MB from python http.server, digest checked', {
    skip: cli && !process.env.CI ? cli : false,
    timeout: 70_000,
  }, async () => {
    assert.equal(cli, null, cli ?? '');
    const out = join(lab!.dir, 'got.bin');
    const r = await lab!.get(`http://${lab!.kernelIp}:8000/f.bin`, out, 60_000);
    assert.equal(r.code, 0, `chimney get failed (${r.code ?? r.signal}): ${r.stderr.slice(-2000)}`);
    assert.equal(await fileDigest(out), fileSha);
  });

  test('chimney get exits non-zero for a missing file and for a refused port', {
    skip: cli && !process.env.CI ? cli : false,
    timeout: 40_000,
  }, async () => {
    const out = join(lab!.dir, 'nothing.bin');
    const missing = await lab!.get(`http://${lab!.kernelIp}:8000/no-such-file`, out, 15_000);
    assert.notEqual(missing.code, 0);
    const refused = await lab!.get(`http://${lab!.kernelIp}:8001/`, out, 15_000);
    assert.notEqual(refused.code, 0);
  });

  for (const loss of [0.01, 0.05]) {
    const impair = { loss, reorder: 0.01, reorderDelayMs: 2 };
    test(`${loss * 100}% loss + 1% reordering in Chimney's link: Chimney downloads 50 MB from Linux`, {
      timeout: 100_000,
    }, async () => {
      const c = startInProc(lab!, 0, { impair, seed: 100 + loss * 100 });
      try {
        const got = await new Promise<{ sha: string; bytes: number }>((resolve, reject) => {
          const req = http.request(
            {
              createConnection: () => c.host.connect(8000, lab!.kernelIp) as never,
              path: '/f.bin',
              timeout: 90_000,
            },
            (res) => {
              if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
              const h = createHash('sha256');
              let bytes = 0;
              res.on('data', (d: Buffer) => {
                h.update(d);
                bytes += d.length;
              });
              res.on('end', () => resolve({ sha: h.digest('hex'), bytes }));
              res.on('error', reject);
            },
          );
          req.on('error', reject);
          req.on('timeout', () => req.destroy(new Error('timed out')));
          req.end();
        });
        assert.equal(got.bytes, SIZE);
        assert.equal(got.sha, fileSha);
        const lost = (c.link as ImpairedLink).counters;
        assert.ok(
          lost.get('impair.rx.loss') > 0 && lost.get('impair.tx.loss') > 0,
          'the link did lose frames',
        );
      } finally {
        c.close();
      }
    });

    const txSize = SIZE;
    test(`${loss * 100}% loss + 1% reordering in Chimney's link: curl downloads ${txSize >> 20} MB from Chimney`, {
      timeout: 100_000,
    }, async () => {
      const c = startInProc(lab!, 0, { impair, seed: 200 + loss * 100 });
      const server = http.createServer((req, res) => {
        const m = /^\/bytes\/(\d+)$/.exec(req.url ?? '');
        if (!m) {
          res.writeHead(404).end();
          return;
        }
        res.writeHead(200, { 'content-length': m[1] });
        void writePattern(res as never, Number(m[1]));
      });
      const tcp = c.host.createServer((s) => server.emit('connection', s));
      tcp.listen(80);
      try {
        const r = await lab!.sh(
          `curl -sS --fail --max-time 90 -w '%{stderr}%{size_download}' http://${lab!.chimneyIps[0]}/bytes/${txSize} | sha256sum`,
          95_000,
        );
        assert.equal(r.code, 0, `curl failed: ${r.stderr}\n${JSON.stringify(c.stack.counters.snapshot())}`);
        assert.equal(Number(r.stderr.trim()), txSize);
        assert.equal(shaOf(r.stdout), patternDigest(txSize));
        const lost = (c.link as ImpairedLink).counters;
        assert.ok(
          lost.get('impair.tx.loss') > 0 && lost.get('impair.rx.loss') > 0,
          'the link did lose frames',
        );
      } finally {
        tcp.close();
        c.close();
      }
    });
  }
});
