/**
 * DAD's random initial delay on real links (RFC 4862 5.4.2): the stack `serve` and `get` build on a
 * TAP (tapStackOptions), run here on simulated time, waits a random time below --dad-delay before
 * each address's first neighbor solicitation, reports its groups (MLD) at once, and takes
 * connections once DAD has passed. A bad --dad-delay is refused before any device is opened.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { checkTapHostOptions, TAP_DAD_DELAY_MS, tapStackOptions } from '../../src/cli/tap-host.ts';
import { CarrierTee } from '../../src/link/carrier-tee.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import { Host } from '../../src/socket/host.ts';
import { Stack } from '../../src/stack/stack.ts';
import { ethType } from '../../src/wire/fields.ts';
import { Icmpv6Type } from '../../src/wire/icmpv6.ts';
import { MldType } from '../../src/wire/mld.ts';
import { WrappedLink } from '../team/team-sim.ts';

const BIN = join(import.meta.dirname, '../../bin/chimney.js');

/** A port that keeps the time and ICMPv6 type of every IPv6 frame its owner sends. */
class Icmp6Log extends WrappedLink {
  readonly sent: { at: number; type: number; unspecifiedSrc: boolean }[] = [];
  now: () => number = () => 0;
  override send(f: Uint8Array): boolean {
    // ICMPv6 right after the fixed header, or after a hop-by-hop header (MLD's router alert).
    if (ethType(f) === 0x86dd) {
      const next = f[14 + 6];
      const at = next === 58 ? 54 : next === 0 && f[54] === 58 ? 54 + (f[55]! + 1) * 8 : -1;
      const unspecifiedSrc = f.subarray(22, 38).every((b) => b === 0);
      if (at > 0) this.sent.push({ at: this.now(), type: f[at]!, unspecifiedSrc });
    }
    return this.inner.send(f);
  }
}

function tapLikeHost(net: SimNetwork, ip6: string, mac: string, dadDelayMs?: number) {
  const link = new Icmp6Log(net.switch.addPort({ name: mac }));
  link.now = () => net.now();
  const stack = new Stack(tapStackOptions({ dadDelayMs }, net.clock, net.random.fork()));
  const t0 = net.now();
  stack.addInterface(link, { mac, ip: [ip6] });
  return { stack, host: new Host(stack), link, t0 };
}

describe("DAD's initial delay on real links", () => {
  test(`serve's stack: MLD reports at once, each address's first DAD probe after a random wait below ${TAP_DAD_DELAY_MS} ms; connections once DAD passed`, async () => {
    const firsts: number[] = [];
    for (let seed = 1; seed <= 8; seed++) {
      const net = new SimNetwork({ seed });
      const c = tapLikeHost(net, 'fd00:58::10/64', '02:00:00:00:00:10');
      await net.sleep(TAP_DAD_DELAY_MS + 1500);
      const sent = c.link.sent;
      const reports = sent.filter((x) => x.type === MldType.V2_REPORT);
      const dad = sent.filter((x) => x.type === Icmpv6Type.NEIGHBOR_SOLICITATION && x.unspecifiedSrc);
      assert.ok(reports.length > 0 && reports[0]!.at === c.t0, 'the first report goes out at once');
      assert.equal(dad.length, 2, 'one probe for the link-local address, one for fd00:58::10');
      for (const d of dad) {
        assert.ok(d.at > c.t0 && d.at < c.t0 + TAP_DAD_DELAY_MS, `a probe at +${d.at - c.t0} ms`);
      }
      firsts.push(dad[0]!.at - c.t0);
      // Both addresses passed (RetransTimer after their probe) and take connections both ways.
      assert.deepEqual(
        c.stack.ip6.addresses(c.stack.interfaces[0]!).map((a) => a.state),
        ['preferred', 'preferred'],
      );
      const peer = tapLikeHost(net, 'fd00:58::1/64', '02:00:00:00:00:01', 0);
      await net.sleep(1100);
      c.host.createServer((s) => s.end('hello')).listen(80);
      const got = await new Promise<string>((resolve, reject) => {
        let buf = '';
        const s = peer.host.connect(80, 'fd00:58::10');
        s.on('data', (d: Buffer) => {
          buf += d.toString();
        });
        s.on('end', () => resolve(buf));
        s.on('error', reject);
      });
      assert.equal(got, 'hello');
      c.stack.close();
      peer.stack.close();
      net.close();
    }
    assert.ok(new Set(firsts).size > 4, `the delay is drawn, not fixed: ${firsts.join(', ')} ms`);
  });

  test("a carrier watcher beside the stack (serve's log) leaves the stack its carrier: reports resent, DAD run", async () => {
    const net = new SimNetwork({ seed: 11 });
    const port = net.switch.addPort({ name: 'watched' });
    const log = new Icmp6Log(port);
    log.now = () => net.now();
    port.cut();
    const tee = new CarrierTee(log);
    const stack = new Stack(tapStackOptions({}, net.clock, net.random.fork()));
    stack.addInterface(log, { mac: '02:00:00:00:00:11', ip: ['fd00:58::11/64'] });
    // The stack sends on the link itself: the tee stands in the way of no frame.
    assert.ok(stack.interfaces[0]!.link === log, 'no wrapper between the stack and its link');
    // What serve does once the stack runs: watch the same carrier to log it.
    const heard: boolean[] = [];
    tee.watch((up) => heard.push(up));
    await net.sleep(1500);
    port.restore();
    await net.sleep(TAP_DAD_DELAY_MS + 1500);
    // The switch tells of the cut after the call (deferred), so the watcher hears it too.
    assert.deepEqual(heard, [false, true], 'the watcher heard the carrier go and come back');
    assert.equal(stack.counters.get('mld.resend'), 1, 'the stack heard it too: groups reported again');
    const iface = stack.interfaces[0]!;
    assert.deepEqual(
      stack.ip6.addresses(iface).map((a) => a.state),
      ['preferred', 'preferred'],
      'DAD ran once the link came up',
    );
    stack.close();
    net.close();
  });

  test('without carrier DAD waits: no probe, the address stays tentative; on carrier it starts, delay included', async () => {
    const net = new SimNetwork({ seed: 10 });
    const port = net.switch.addPort({ name: 'late' });
    const link = new Icmp6Log(port);
    link.now = () => net.now();
    port.cut();
    const stack = new Stack(tapStackOptions({}, net.clock, net.random.fork()));
    stack.addInterface(link, { mac: '02:00:00:00:00:10', ip: ['fd00:58::10/64'] });
    await net.sleep(3000);
    const iface = stack.interfaces[0]!;
    assert.deepEqual(
      stack.ip6.addresses(iface).map((a) => a.state),
      ['tentative', 'tentative'],
      'never preferred unprobed',
    );
    assert.equal(stack.counters.get('nd.dad.wait-link'), 2);
    const tUp = net.now();
    port.restore();
    await net.sleep(TAP_DAD_DELAY_MS + 1500);
    const dad = link.sent.filter((x) => x.type === Icmpv6Type.NEIGHBOR_SOLICITATION && x.unspecifiedSrc);
    assert.equal(dad.length, 2, 'one probe per address once the link is up');
    for (const d of dad) assert.ok(d.at > tUp && d.at < tUp + TAP_DAD_DELAY_MS, `+${d.at - tUp} ms`);
    const report = link.sent.findIndex((x) => x.type === MldType.V2_REPORT && x.at >= tUp);
    const probe = link.sent.findIndex((x) => x.type === Icmpv6Type.NEIGHBOR_SOLICITATION && x.at >= tUp);
    assert.ok(report >= 0 && report < probe, 'the groups are reported again before the first probe');
    assert.deepEqual(
      stack.ip6.addresses(iface).map((a) => a.state),
      ['preferred', 'preferred'],
    );
    stack.close();
    net.close();
  });

  test('--dad-delay 0 probes at once, as the simulator does', async () => {
    const net = new SimNetwork({ seed: 9 });
    const c = tapLikeHost(net, 'fd00:58::10/64', '02:00:00:00:00:10', 0);
    const dad = c.link.sent.filter((x) => x.type === Icmpv6Type.NEIGHBOR_SOLICITATION && x.unspecifiedSrc);
    assert.equal(dad.length, 2);
    assert.ok(dad.every((d) => d.at === c.t0));
    c.stack.close();
    net.close();
  });

  test('a bad --dad-delay is refused with the flag and the reason, before any TAP is opened', () => {
    for (const [v, cmd] of [
      ['-5', ['serve']],
      ['60001', ['serve']],
      ['soon', ['get', 'http://[fd00:58::1]/']],
    ] as const) {
      const r = spawnSync(
        process.execPath,
        [BIN, ...cmd, '--tap', 'chnone0', '--ip', 'fd00:58::10/64', '--dad-delay', v],
        { encoding: 'utf8', timeout: 60_000 },
      );
      assert.equal(r.status, 1, `${cmd[0]} --dad-delay ${v}: ${r.stderr}`);
      assert.match(r.stderr, /--dad-delay <ms>' argument '.*' is invalid/);
      assert.match(r.stderr, /is not an integer|is outside 0\.\.60000/);
    }
    assert.throws(
      () => checkTapHostOptions({ tap: 'chx0', ip: 'fd00::10/64', dadDelayMs: -1 }),
      /--dad-delay: -1 is not a whole number of ms in 0\.\.60000/,
    );
  });
});
