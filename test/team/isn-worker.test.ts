/**
 * One ISN function per host (RFC 9293 3.4.1, RFC 6528; Linux's secure_tcp_seq has one secret per
 * boot): a SYN a WorkerNic's thread answers gets the ISN the host stack's own generator gives the
 * same four-tuple, so a four-tuple reopened on another thread still starts above its last ISN.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import { SeededRandom } from '../../src/core/random.ts';
import { parseIpv4 } from '../../src/wire/addr.ts';
import { keyOf, PEER_IP, serveAtNics, setup, TEAM_IP, within } from './worker-team-helpers.ts';

test("a SYN answered in a worker's thread gets the host's ISN for its four-tuple", async (t) => {
  const rig = await setup(t, { seed: 41, isnSecret: new SeededRandom(99).fill(new Uint8Array(16)) });
  const accepted = serveAtNics(rig, { port: 80 });
  const until = async (ok: () => boolean, what: string) => {
    for (let i = 0; i < 3000 && !ok(); i++) await rig.net.sleep(10);
    assert.ok(ok(), `timed out waiting for ${what}`);
  };
  // A worker answers SYNs once it holds a path to the peer: place one connection on each.
  const firsts = [rig.peer.connect(80, TEAM_IP), rig.peer.connect(80, TEAM_IP)];
  await within(Promise.all(firsts.map((c) => once(c, 'connect'))), 30_000, 'first connects', rig);
  await until(() => accepted.length >= 2, 'first accepts');
  for (let i = 0; i < 2; i++) {
    const r = await rig.manager.offload([keyOf(accepted[i]!)], rig.nics[i]);
    assert.equal(r.moved.length, 1, JSON.stringify(r.refused));
  }
  const c = rig.peer.connect(80, TEAM_IP);
  await within(once(c, 'connect'), 30_000, 'the born connect', rig);
  await until(() => accepted.length >= 3, 'the born accept');
  assert.equal(rig.stack.counters.get('offload.accept-at-nic'), 1, 'the third SYN was answered in a worker');
  const peerConn = [...rig.peer.stack.tcp.connections()].find((x) => x.localPort === c.localPort);
  assert.ok(peerConn);
  const workerIss = peerConn.state.delegated.irs;
  const hostIss = rig.stack.tcp.isn.next(parseIpv4(TEAM_IP), 80, parseIpv4(PEER_IP), c.localPort!);
  // The same function, read later: ahead by 250 a millisecond since the worker's SYN-ACK (bounded
  // generously for a loaded machine). Under another secret the two differ by a uniform 32-bit
  // number, inside this bound 0.35 % of the time.
  const ahead = (hostIss - workerIss) >>> 0;
  assert.ok(ahead < 250 * 60_000, `the host's ISN is ${ahead} past the worker's`);
});
