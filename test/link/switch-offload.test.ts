import assert from 'node:assert/strict';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { SeededRandom } from '../../src/core/random.ts';
import type { RxOffloadInfo } from '../../src/link/link.ts';
import { MemorySwitch } from '../../src/link/memory-switch.ts';
import { SimNetwork } from '../../src/sim/sim-network.ts';
import { collect, randomBytes, sha256, writeAll } from '../helpers/streams.ts';
import { frame, hostMac } from './helpers.ts';

describe('memory switch segmentation offload (like veth)', () => {
  function setup() {
    const clock = new VirtualClock();
    const sw = new MemorySwitch({ clock, random: new SeededRandom(1) });
    const a = sw.addPort({ offload: true });
    const b = sw.addPort({ offload: true });
    const plain = sw.addPort();
    const got: { port: string; len: number; info?: RxOffloadInfo }[] = [];
    for (const [name, p] of [
      ['b', b],
      ['plain', plain],
    ] as const) {
      p.onFrame((f, info) => got.push({ port: name, len: f.length, info: info && { ...info } }));
    }
    // Teach the switch where b and plain live.
    b.send(frame(hostMac(1), hostMac(2), 0));
    plain.send(frame(hostMac(1), hostMac(3), 0));
    clock.runDue();
    got.length = 0;
    return { clock, sw, a, b, plain, got };
  }

  test('a super-segment reaches an offloading port whole, marked checksum-valid', () => {
    const { clock, a, b, got } = setup();
    const before = b.rxFrames;
    assert.deepEqual(a.offloads, { tso: true, tso6: true, csum: true });
    assert.equal(
      a.sendGso(frame(hostMac(2), hostMac(1), 7, 30_000), { gsoSize: 1448, csumStart: 34, csumOffset: 16 }),
      true,
    );
    clock.runDue();
    assert.equal(got.length, 1, JSON.stringify(got));
    assert.equal(got[0]!.port, 'b');
    assert.equal(got[0]!.len, 30_000);
    assert.equal(got[0]!.info?.csumValid, true);
    assert.equal(got[0]!.info?.gsoSize, 1448);
    assert.equal(got[0]!.info?.gsoType, 1);
    assert.equal(b.rxFrames, before + 1);
  });

  test('ports without offload refuse to send super-segments and never receive one', () => {
    const { clock, sw, a, plain, got } = setup();
    assert.deepEqual(plain.offloads, { tso: false, tso6: false, csum: false });
    assert.equal(
      plain.sendGso(frame(hostMac(2), hostMac(3), 1, 30_000), {
        gsoSize: 1448,
        csumStart: 34,
        csumOffset: 16,
      }),
      false,
    );
    a.sendGso(frame(hostMac(3), hostMac(1), 2, 30_000), { gsoSize: 1448, csumStart: 34, csumOffset: 16 });
    clock.runDue();
    assert.equal(got.length, 0);
    assert.equal(sw.stats.get('drop.gso-unsupported'), 2);
    // Ordinary frames above the MTU stay oversize even on offload ports.
    assert.equal(a.send(frame(hostMac(2), hostMac(1), 3, 3000)), false);
  });

  test('TCP between offloading hosts uses super-segments and every byte arrives', async () => {
    const net = new SimNetwork({ seed: 4 });
    const x = net.addHost({ ip: '10.0.0.1/24', offload: true });
    const y = net.addHost({ ip: '10.0.0.2/24', offload: true });
    y.createServer((s) => s.pipe(s)).listen(7);
    const sock = x.connect(7, '10.0.0.2');
    await once(sock, 'connect');
    const data = randomBytes(11, 4_000_000);
    const [echoed] = await Promise.all([collect(sock), writeAll(sock, data)]);
    assert.equal(sha256(echoed), sha256(data));
    assert.ok(x.stack.counters.get('tx.offload.tso') > 0);
    assert.ok(y.stack.counters.get('rx.offload.csum-valid') > 0);
    assert.ok(
      x.port.txFrames < 4_000_000 / 1448 / 2,
      `${x.port.txFrames} frames: segments should be coalesced`,
    );
    net.close();
  });
});
