/**
 * Gray failures against the kernel: `chimney serve --tap A --tap B --workers --probe <kernel>`,
 * curl downloading from the namespace, and a fault on the bridge (nftables, bridge family) that
 * the ARP probes cannot see, on the TAP carrying most downloads:
 *
 * - TCP is dropped both ways on that TAP while ARP passes: the probes are answered, the
 *   connections stop being acknowledged, the other member's download goes on ('progress');
 * - the probe replies on that TAP are rewritten to come from another MAC than the kernel's, the
 *   one its connections send to ('mac-mismatch');
 * - and a healthy team under 2 % loss on one TAP (netem on the kernel's side is not per TAP, so
 *   an nftables `numgen` drop on that TAP) must not be declared failed.
 *
 * Every download must finish with the right digest and no reset. Needs root, /dev/net/tun and
 * nft: fails under CI (which is root), skips with the reason elsewhere.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { StatusSnapshot } from '../../src/cli/control.ts';
import { interopGate, type Lab, makeLab, type Served, sleep } from '../interop/lab.ts';
import { busiestNic, checkAll, downloads, owners, teamStatus, waitFor } from './team-downloads.ts';

const gate = interopGate(['curl', 'nft'], { cli: true });
const SIZE = 60 * 1024 * 1024;
const DOWNLOADS = 3;
/** Slow enough that every download is still in flight when the fault comes. */
const RATE = '8M';
const FAKE_MAC = '02:00:00:00:ee:01';
let lab: Lab | null = null;
let table = '';

function control(): string {
  return join(lab!.dir, 'ctl.sock');
}

async function serveTeam(): Promise<Served> {
  return lab!.serve({
    services: ['http:80'],
    extra: ['--tap', lab!.taps[1]!, '--workers', '--control', control(), '--probe', lab!.kernelIp],
  });
}

function status(): Promise<StatusSnapshot> {
  return teamStatus(control());
}

/**
 * Rules on the bridge for one TAP. Frames from the TAP are dropped before the bridge learns
 * their source (prerouting), so the team MAC stays learned on the healthy port; frames to it
 * after forwarding.
 */
function nft(rules: { pre?: string[]; fwd?: string[] }): void {
  const body = [
    `table bridge ${table} {`,
    '  chain graypre {',
    '    type filter hook prerouting priority 0;',
    ...(rules.pre ?? []).map((r) => `    ${r}`),
    '  }',
    '  chain grayfwd {',
    '    type filter hook forward priority 0;',
    ...(rules.fwd ?? []).map((r) => `    ${r}`),
    '  }',
    '}',
  ].join('\n');
  execFileSync('nft', ['-f', '-'], { input: body, stdio: ['pipe', 'ignore', 'pipe'] });
}

function nftClear(): void {
  try {
    execFileSync('nft', ['delete', 'table', 'bridge', table], { stdio: 'ignore' });
  } catch {
    // Not there: nothing to undo.
  }
}

/**
 * Run the downloads, apply `fault` to the busiest TAP a second in, check what the team did while
 * they run (`during`) and once every download finished (`done`).
 */
async function grayRun(
  fault: (tap: string) => void,
  during: (srv: Served, tap: string) => Promise<void>,
  done: (srv: Served, tap: string) => Promise<void> = async () => undefined,
): Promise<void> {
  const srv = await serveTeam();
  try {
    const runs = downloads(lab!, SIZE, DOWNLOADS, RATE);
    const tap = await busiestNic(control(), DOWNLOADS, true);
    await sleep(1000);
    fault(tap);
    await during(srv, tap);
    await checkAll(runs, srv, SIZE);
    await done(srv, tap);
  } finally {
    nftClear();
    await srv.stop();
  }
}

describe('gray failures against the kernel on a team of two WorkerNics (TAP)', {
  skip: gate.skip,
  timeout: 600_000,
}, () => {
  before(() => {
    if (gate.reason) assert.fail(`interop tests cannot run: ${gate.reason}`);
    lab = makeLab({ tag: 'gry', subnet: 19, taps: 2 }, gate.reason);
    table = `chimney_${lab!.tag}`;
    nftClear();
  });
  after(async () => {
    nftClear();
    await lab?.down();
  });

  test('TCP dropped on the loaded TAP while ARP passes: failed for lack of progress', {
    timeout: 150_000,
  }, async () => {
    await grayRun(
      (tap) =>
        nft({
          pre: [`iifname "${tap}" ether type ip ip protocol tcp drop`],
          fwd: [`oifname "${tap}" ether type ip ip protocol tcp drop`],
        }),
      async (srv, tap) => {
        await waitFor('the failover', () => srv.log().includes(`failover ${tap} (progress)`), 15_000).catch(
          async (e: Error) =>
            assert.fail(`${e.message}: ${JSON.stringify((await status()).nics)}\n${srv.log().slice(-2000)}`),
        );
        const s = await status();
        assert.equal(s.failovers.length, 1, JSON.stringify(s.failovers));
        assert.equal(s.failovers[0]?.cause, 'progress');
        const h = s.nics.find((n) => n.id === tap);
        assert.equal(h?.linkUp, true, 'carrier stayed up');
        assert.equal(h?.reachable, true, 'the probes were answered throughout');
        assert.ok(!(await owners(control())).includes(tap), 'nothing runs on the gray member');
      },
    );
  });

  test('probe replies from another MAC than the kernel’s on the loaded TAP: failed (mac-mismatch)', {
    timeout: 150_000,
  }, async () => {
    await grayRun(
      (tap) =>
        nft({
          fwd: [
            `oifname "${tap}" ether type arp arp operation reply arp daddr ip 0.0.0.0 ether saddr set ${FAKE_MAC} arp saddr ether set ${FAKE_MAC}`,
          ],
        }),
      async (srv, tap) => {
        await waitFor('the failover', () => srv.log().includes(`failover ${tap} (mac-mismatch)`), 15_000);
        const h = (await status()).nics.find((n) => n.id === tap);
        assert.equal(h?.lastFailure?.cause, 'mac-mismatch');
        assert.match(h?.lastFailure?.detail ?? '', new RegExp(`probe reply from ${FAKE_MAC}`));
      },
    );
  });

  test('2 % loss on the loaded TAP: no member is declared failed', { timeout: 150_000 }, async () => {
    await grayRun(
      (tap) =>
        nft({
          // Every frame is counted before the random drop: the frames are GSO super-frames of up
          // to 64 KB, so how many pass in a run varies, and the check is on the share dropped.
          pre: [
            `iifname "${tap}" ether type ip counter`,
            `iifname "${tap}" ether type ip numgen random mod 100 < 2 counter drop`,
          ],
          fwd: [
            `oifname "${tap}" ether type ip counter`,
            `oifname "${tap}" ether type ip numgen random mod 100 < 2 counter drop`,
          ],
        }),
      async () => undefined,
      async (srv) => {
        assert.deepEqual((await status()).failovers, []);
        assert.doesNotMatch(srv.log(), /failover /);
        let seen = 0;
        let dropped = 0;
        const listing = execFileSync('nft', ['list', 'table', 'bridge', table], { encoding: 'utf8' });
        for (const m of listing.matchAll(/counter packets (\d+) bytes \d+( drop)?/g)) {
          if (m[2] === undefined) seen += Number(m[1]);
          else dropped += Number(m[1]);
        }
        assert.ok(seen >= 1000, `only ${seen} frames crossed the lossy TAP`);
        // Drops are binomial (n = seen, p = 2 %): at least four standard deviations under the mean.
        const floor = 0.02 * seen - 4 * Math.sqrt(seen * 0.02 * 0.98);
        assert.ok(dropped > 0 && dropped >= floor, `the loss dropped ${dropped} of ${seen} frames`);
      },
    );
  });
});
