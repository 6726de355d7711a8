/**
 * 802.1Q on real TAPs: `chimney serve --vlan 100` on one TAP of a Linux bridge, `chimney get
 * --vlan 100` on another. The bridge forwards the tagged frames as they are. The kernel's TCP cannot
 * be the peer here: this machine's kernel has no 802.1Q at all (CONFIG_VLAN_8021Q is not set, and
 * the bridge has no VLAN filtering), so the VLAN case against Linux is left to a kernel that has
 * them; the team's tagged probes and announcements are tested on the simulator
 * (test/team/failover.test.ts).
 *
 * Needs root and /dev/net/tun: fails under CI (which is root), skips with the reason elsewhere.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { assertCleanCapture, readCapture } from '../helpers/tshark.ts';
import { fileDigest, interopGate, type Lab, makeLab, patternDigest } from '../interop/lab.ts';

const gate = interopGate(['tshark'], { cli: true });
const VLAN = 100;
let lab: Lab | null = null;

describe('802.1Q VLAN between two Chimney hosts on TAPs of a Linux bridge', {
  skip: gate.skip,
  timeout: 300_000,
}, () => {
  before(() => {
    if (gate.reason) assert.fail(`interop tests cannot run: ${gate.reason}`);
    lab = makeLab({ tag: 'vlan', subnet: 41, taps: 2, vlan: VLAN }, gate.reason);
  });
  after(async () => {
    await lab?.down();
  });

  test('get --vlan downloads 30 MB from serve --vlan; every captured frame is tagged 100, none malformed', {
    timeout: 120_000,
  }, async () => {
    const size = 30 * 1024 * 1024;
    const pcap = join(lab!.dir, 'vlan.pcap');
    const srv = await lab!.serve({ services: ['http:80'], pcap });
    try {
      const out = join(lab!.dir, 'got.bin');
      const r = await lab!.get(`http://${lab!.chimneyIps[0]}/bytes/${size}`, out, 90_000);
      assert.equal(r.code, 0, `chimney get failed (${r.code ?? r.signal}): ${r.stderr.slice(-2000)}`);
      assert.equal(await fileDigest(out), patternDigest(size));
    } finally {
      await srv.stop();
    }
    // What the server sent, all of it tagged. (Untagged frames the bridge floods, the kernel's own
    // IPv6 solicitations and reports, reach the TAP too and are not Chimney's.)
    const mine = `eth.src == ${lab!.mac(0)} || arp.src.hw_mac == ${lab!.mac(0)}`;
    const ids = await readCapture(lab!, pcap, mine, ['vlan.id']);
    assert.ok(ids.length > 300, `${ids.length} frames sent by the server captured (TSO: up to 64 KiB each)`);
    const other = ids.filter((id) => id !== String(VLAN));
    assert.equal(other.length, 0, `frames sent off VLAN ${VLAN}: ${other.slice(0, 5).join(',')}`);
    // Headers and body: at least the 30 MB of payload crossed the VLAN.
    const lens = await readCapture(lab!, pcap, 'vlan.id == 100 && tcp.srcport == 80', ['tcp.len']);
    const payload = lens.reduce((a, l) => a + Number(l || 0), 0);
    assert.ok(payload >= size, `${payload} bytes of TCP payload on VLAN ${VLAN}`);
    // The TAPs sum TCP in the kernel (checksum offload): structure only, and tshark's errors.
    await assertCleanCapture(lab!, pcap, { expertErrors: true, checksums: false });
  });

  test('a client on another VLAN (200) cannot reach the server on VLAN 100, which still answers its own', {
    timeout: 60_000,
  }, async () => {
    const srv = await lab!.serve({ services: ['http:80'] });
    try {
      const out = join(lab!.dir, 'nothing.bin');
      // The last --vlan wins: ARP for the server goes out on VLAN 200, where nobody answers.
      const r = await lab!.get(`http://${lab!.chimneyIps[0]}/bytes/1000`, out, 30_000, {
        extra: ['--vlan', '200'],
      });
      assert.notEqual(r.code, 0, 'the request must not reach a server on another VLAN');
      const again = await lab!.get(`http://${lab!.chimneyIps[0]}/bytes/1000`, out, 30_000);
      assert.equal(again.code, 0, `on its own VLAN the server still answers: ${again.stderr.slice(-1000)}`);
      assert.equal(await fileDigest(out), patternDigest(1000));
    } finally {
      await srv.stop();
    }
  });
});
