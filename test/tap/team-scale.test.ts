/**
 * `chimney serve --tap A --tap B --workers` at scale with the Linux kernel as the peer: a thousand
 * concurrent HTTP downloads, each read slowly by one asyncio client in the lab namespace
 * (scripts/tap-load.py), with no fault, with a carrier fault, with a reachability fault and with
 * its worker killed, on the NIC carrying most of them. Every download must arrive whole (length,
 * every byte, SHA-256), none reset, and serve must log no loss and no failure but the one
 * injected: a busy worker is not a dead worker, and a busy link is not an unreachable one.
 * Needs root, /dev/net/tun and python3: fails under CI (which is root), skips elsewhere.
 * Then `--pcap` on the team: every frame of both members, offloaded connections' included, in one
 * capture that tshark reads.
 * Larger counts: `npx tsx scripts/soak-tap.ts --connections 5000 --fault all`.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { interopGate, type Lab, makeLab, ROOT } from '../interop/lab.ts';
import { type FaultKind, runLoad } from '../interop/tap-load.ts';

const gate = interopGate(['python3', 'tshark'], { cli: true });
const CONNECTIONS = 1000;
const SIZE = 200_000;
/** Bytes/s each download is read at: slow enough that all thousand are in flight together. */
const RATE = 80_000;
let lab: Lab | null = null;

async function check(fault: FaultKind): Promise<void> {
  const r = await runLoad(lab!, {
    connections: CONNECTIONS,
    size: SIZE,
    rate: RATE,
    fault,
    timeoutS: 150,
    // Five 10 ms rounds (50 ms, the aim for reachability): under a thousand connects a second on two
    // shared cores the kernel's ARP replies were seen to take over 30 ms, and three rounds then
    // condemned a healthy member.
    extra: fault === 'reachability' ? ['--probe-misses', '5'] : [],
  });
  const c = r.client;
  const why = `${JSON.stringify({ ...c, stalls: c.stalls.length })}\n${r.bad.slice(0, 20).join('\n')}`;
  assert.equal(c.ok, CONNECTIONS, `downloads intact: ${why}`);
  assert.equal(c.resets, 0, `resets: ${why}`);
  assert.equal(c.bytes, CONNECTIONS * SIZE, `bytes: ${why}`);
  assert.deepEqual(r.bad, [], `serve logged a loss, a reset or a failure it should not have: ${why}`);
  if (fault !== 'none') {
    assert.ok(r.detectMs >= 0, `the ${fault} failover of ${r.nic} was logged:\n${r.log.slice(-2000)}`);
    assert.ok(r.movedByFault > 0, `the fault hit downloads in flight: ${r.log.slice(-1500)}`);
  }
}

describe(`chimney serve on two WorkerNics, ${CONNECTIONS} downloads from the kernel at once`, {
  skip: gate.skip,
  timeout: 900_000,
}, () => {
  before(() => {
    if (gate.reason) assert.fail(`interop tests cannot run: ${gate.reason}`);
    lab = makeLab({ tag: 'tsc', subnet: 16, taps: 2 }, gate.reason);
  });
  after(async () => {
    await lab?.down();
  });

  test('no fault: every download intact, no worker taken for dead', { timeout: 240_000 }, () =>
    check('none'),
  );
  test('carrier lost on the busiest NIC: every download intact', { timeout: 240_000 }, () =>
    check('carrier'),
  );
  test(
    'the busiest NIC leaves the bridge (reachability): every download intact',
    {
      timeout: 240_000,
    },
    () => check('reachability'),
  );
  test(
    "the busiest NIC's worker is killed: every connection rebuilt from hard state (those that had ended closed, not rebuilt), every download intact",
    { timeout: 240_000 },
    () => check('crash'),
  );

  test('--pcap on the team captures every member, offloaded connections included', {
    timeout: 120_000,
  }, async () => {
    const file = join(lab!.dir, 'team.pcap');
    const n = 40;
    const size = 100_000;
    // A port of its own: the kernel may still be retransmitting a FIN of an earlier case's
    // connection to port 80, which would show up as an extra stream.
    const port = 8080;
    const srv = await lab!.serve({
      services: [`http:${port}`],
      pcap: file,
      extra: ['--tap', lab!.taps[1]!, '--workers', '--quiet'],
    });
    try {
      const argv = ['ip', 'netns', 'exec', lab!.ns, 'python3', join(ROOT, 'scripts/tap-load.py')];
      argv.push('--host', lab!.chimneyIps[0]!, '--port', String(port));
      argv.push('--connections', String(n), '--size', String(size));
      argv.push('--rate', '0', '--timeout', '60');
      const r = await lab!.run(argv, 90_000);
      assert.equal(r.code, 0, `downloads: ${r.stdout} ${r.stderr}`);
    } finally {
      await srv.stop();
    }
    assert.doesNotMatch(srv.log(), /capture: .* dropped/);
    // One line per frame: TCP stream, source port, payload length, SYN, FIN.
    const fields = ['tcp.stream', 'tcp.srcport', 'tcp.len', 'tcp.flags.syn', 'tcp.flags.fin'];
    const out = execFileSync(
      'tshark',
      ['-r', file, '-Y', `tcp.port == ${port}`, '-T', 'fields', ...fields.flatMap((f) => ['-e', f])],
      {
        encoding: 'utf8',
        maxBuffer: 256 << 20,
      },
    );
    const streams = new Map<string, { syn: boolean; fin: boolean; out: number }>();
    for (const line of out.trim().split('\n')) {
      const [stream, sport, len, syn, fin] = line.split('\t');
      const st = streams.get(stream!) ?? { syn: false, fin: false, out: 0 };
      if (syn === '1' || syn === 'True') st.syn = true;
      if (fin === '1' || fin === 'True') st.fin = true;
      if (sport === String(port)) st.out += Number(len);
      streams.set(stream!, st);
    }
    assert.equal(streams.size, n, `one TCP stream per download in the capture, got ${streams.size}`);
    for (const [id, st] of streams) {
      assert.ok(st.syn && st.fin, `stream ${id}: handshake and close captured`);
      // Headers and body, sent by whichever worker ran the connection: none of it is missing.
      assert.ok(
        st.out >= size,
        `stream ${id}: ${st.out} payload bytes from the server captured, want >= ${size}`,
      );
    }
  });
});
