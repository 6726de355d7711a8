/**
 * Downloads from `chimney serve` on a team of TAPs, shared by the TAP team tests: curl in the
 * lab's namespace, the owner of each connection read from the control socket, every byte checked.
 */
import assert from 'node:assert/strict';
import { controlRequest, type StatusSnapshot } from '../../src/cli/control.ts';
import { type Lab, patternDigest, type RunResult, type Served, shaOf, sleep } from '../interop/lab.ts';

/**
 * How long a case waits for serve to log a failover after the fault it made (a link down, a TAP
 * off the bridge, a worker killed), or the host taking a TAP after the last member died. Serve
 * runs in its own process: on a quiet machine the line comes within a second or two, but at load
 * 30+ on 2 cores serve's threads wait seconds at a time for a core (its start took over 20 s at
 * load 34, BENCHMARKS.md, s44h7), and 10 s was a window rather than a limit.
 */
export const FAILOVER_MS = 30_000;

/** Through the control socket directly: spawning the CLI for every poll would take a second each. */
export async function teamStatus(control: string): Promise<StatusSnapshot> {
  return (await controlRequest(control, { op: 'status' })) as StatusSnapshot;
}

/** Owner of every established connection to the http service. */
export async function owners(control: string): Promise<string[]> {
  const out: string[] = [];
  for (const nb of (await teamStatus(control)).trees)
    for (const p of nb.paths)
      for (const c of p.conns) if (c.local.endsWith(':80') && c.state === 'ESTABLISHED') out.push(c.owner);
  return out;
}

/** Start `count` downloads of `size` bytes at `rate`; each resolves with its result when done. */
export function downloads(lab: Lab, size: number, count: number, rate: string): Promise<RunResult>[] {
  const url = `http://${lab.chimneyIps[0]}/bytes/${size}`;
  return Array.from({ length: count }, () =>
    lab.sh(
      `curl -sS --fail --max-time 100 --limit-rate ${rate} -w '%{stderr}%{size_download}' ${url} | sha256sum`,
      110_000,
    ),
  );
}

export async function waitFor(
  what: string,
  cond: () => boolean | Promise<boolean>,
  ms: number,
): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await sleep(100);
  }
  assert.fail(`timed out waiting for ${what}`);
}

/** Every download complete, with the right digest, and nothing lost or reset in the server's log. */
export async function checkAll(runs: Promise<RunResult>[], srv: Served, size: number): Promise<void> {
  const want = patternDigest(size);
  for (const r of await Promise.all(runs)) {
    assert.equal(r.code, 0, `curl failed: ${r.stderr}\n${srv.log().slice(-3000)}`);
    assert.equal(Number(r.stderr.trim().split(/\s+/).pop()), size, `length: ${r.stderr}`);
    assert.equal(shaOf(r.stdout), want, 'digest');
  }
  assert.doesNotMatch(srv.log(), /LOST|reset|error:/, srv.log().slice(-3000));
}

/**
 * The NIC most of the `count` downloads run on, once all of them run on NICs (and, with
 * `bothMembers`, once each of two members carries some).
 */
export async function busiestNic(control: string, count: number, bothMembers = false): Promise<string> {
  let o: string[] = [];
  await waitFor(
    bothMembers ? 'the downloads to be offloaded to both members' : 'the downloads to be offloaded',
    async () => {
      o = await owners(control);
      return o.length === count && o.every((x) => x !== 'host') && (!bothMembers || new Set(o).size === 2);
    },
    15_000,
  );
  const n = (x: string): number => o.filter((y) => y === x).length;
  return [...new Set(o)].sort((a, b) => n(b) - n(a))[0]!;
}
