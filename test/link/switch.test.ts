import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { RealClock, VirtualClock } from '../../src/core/clock.ts';
import { InvalidArgumentError, InvalidStateError } from '../../src/core/errors.ts';
import { SeededRandom } from '../../src/core/random.ts';
import { MemorySwitch } from '../../src/link/memory-switch.ts';
import { BROADCAST, fillFrame, frame, hostMac, idOf, makeNet } from './helpers.ts';

describe('MemorySwitch learning', () => {
  test('unknown destination floods to every other port, never back to the sender', () => {
    const net = makeNet(1, 4);
    net.ports[0]!.send(frame(hostMac(9), hostMac(0), 1));
    net.drain();
    assert.deepEqual(net.ids(0), []);
    assert.deepEqual(net.ids(1), [1]);
    assert.deepEqual(net.ids(2), [1]);
    assert.deepEqual(net.ids(3), [1]);
    assert.equal(net.sw.stats.get('frames.flooded'), 1);
  });

  test('a unicast after learning reaches only the learned port', () => {
    const net = makeNet(1, 4);
    // Port 2 speaks first, so the switch learns where hostMac(2) lives.
    net.ports[2]!.send(frame(BROADCAST, hostMac(2), 1));
    net.drain();
    assert.equal(net.sw.portFor(hostMac(2)), net.ports[2]);
    net.rx.length = 0;
    net.ports[0]!.send(frame(hostMac(2), hostMac(0), 2));
    net.drain();
    assert.deepEqual(
      net.rx.map((r) => [r.port, r.id]),
      [[2, 2]],
    );
    assert.equal(net.sw.stats.get('frames.forwarded'), 1);
    // And the reply goes straight back, since port 0 was learned from that frame.
    net.rx.length = 0;
    net.ports[2]!.send(frame(hostMac(0), hostMac(2), 3));
    net.drain();
    assert.deepEqual(
      net.rx.map((r) => [r.port, r.id]),
      [[0, 3]],
    );
  });

  test('broadcast and multicast always flood, even to a learned address', () => {
    const net = makeNet(1, 3);
    net.ports[1]!.send(frame(BROADCAST, hostMac(1), 1));
    net.ports[2]!.send(frame(BROADCAST, hostMac(2), 2));
    net.drain();
    net.rx.length = 0;
    net.ports[0]!.send(frame(BROADCAST, hostMac(0), 3));
    net.ports[0]!.send(frame(0x01005e000001, hostMac(0), 4)); // IPv4 multicast MAC
    net.drain();
    assert.deepEqual(net.ids(1), [3, 4]);
    assert.deepEqual(net.ids(2), [3, 4]);
  });

  test('a frame for an address learned on the sending port is filtered, not echoed', () => {
    const net = makeNet(1, 2);
    net.ports[0]!.send(frame(BROADCAST, hostMac(0), 1));
    net.drain();
    net.rx.length = 0;
    net.ports[0]!.send(frame(hostMac(0), hostMac(5), 2));
    net.drain();
    assert.deepEqual(net.rx, []);
    assert.equal(net.sw.stats.get('drop.filtered'), 1);
  });

  test('a station that moves is relearned on its new port', () => {
    const net = makeNet(1, 3);
    net.ports[1]!.send(frame(BROADCAST, hostMac(7), 1));
    net.drain();
    net.ports[2]!.send(frame(BROADCAST, hostMac(7), 2));
    net.drain();
    assert.equal(net.sw.portFor(hostMac(7)), net.ports[2]);
    assert.equal(net.sw.stats.get('mac.moved'), 1);
  });

  test('entries age out, after which the destination floods again', () => {
    const net = makeNet(1, 3, { ageMs: 1000 });
    net.ports[1]!.send(frame(BROADCAST, hostMac(1), 1));
    net.drain();
    net.clock.advance(999);
    assert.equal(net.sw.portFor(hostMac(1)), net.ports[1]);
    net.clock.advance(2);
    assert.equal(net.sw.portFor(hostMac(1)), undefined);
    net.rx.length = 0;
    net.ports[0]!.send(frame(hostMac(1), hostMac(0), 2));
    net.drain();
    assert.deepEqual(net.ids(1), [2]);
    assert.deepEqual(net.ids(2), [2]);
    assert.equal(net.sw.stats.get('mac.aged'), 1);
  });

  test('a multicast source address is never learned', () => {
    const net = makeNet(1, 2);
    net.ports[0]!.send(frame(BROADCAST, 0x01005e000001, 1));
    net.drain();
    assert.equal(net.sw.portFor(0x01005e000001), undefined);
  });

  test('the MAC table is bounded; unlearned addresses still get flooded', () => {
    const clock = new VirtualClock();
    const sw = new MemorySwitch({ clock, random: new SeededRandom(1), maxMacEntries: 4 });
    const a = sw.addPort();
    const b = sw.addPort();
    let got = 0;
    b.onFrame(() => got++);
    for (let i = 0; i < 10; i++) a.send(frame(BROADCAST, hostMac(100 + i), i));
    while (clock.pending) clock.step();
    assert.equal(got, 10);
    assert.equal(sw.stats.get('mac.learned'), 4);
    assert.equal(sw.stats.get('mac.full'), 6);
  });
});

describe('MemorySwitch delivery', () => {
  test('delivery is never synchronous with send', () => {
    const net = makeNet(1, 2);
    net.ports[0]!.send(frame(hostMac(1), hostMac(0), 1));
    assert.equal(net.rx.length, 0);
    net.clock.runDue();
    assert.equal(net.rx.length, 1);
    assert.equal(net.rx[0]!.t, 0);
  });

  test('frames arrive in send order on a perfect wire', () => {
    const net = makeNet(1, 2);
    for (let i = 0; i < 500; i++) net.ports[0]!.send(frame(hostMac(1), hostMac(0), i));
    net.drain();
    assert.deepEqual(
      net.ids(1),
      Array.from({ length: 500 }, (_, i) => i),
    );
  });

  test('the sender may reuse its buffer right after send; the receiver sees the original bytes', () => {
    const net = makeNet(1, 3, { impair: { delayMs: 5 } });
    const seen: number[][] = [];
    net.ports[1]!.onFrame((f) => seen.push([idOf(f), f[63]!]));
    const buf = new Uint8Array(64);
    for (let i = 0; i < 20; i++) {
      fillFrame(buf, BROADCAST, hostMac(0), i);
      buf[63] = i * 3;
      assert.equal(net.ports[0]!.send(buf), true);
    }
    buf.fill(0xee);
    net.drain();
    assert.deepEqual(
      seen,
      Array.from({ length: 20 }, (_, i) => [i, i * 3]),
    );
    assert.equal(net.ids(2).length, 20);
    assert.equal(net.sw.framesInFlight, 0);
  });

  test('a flood copies the frame once and every receiver sees the same bytes', () => {
    const net = makeNet(1, 5);
    const views: Uint8Array[] = [];
    for (let i = 1; i < 5; i++) net.ports[i]!.onFrame((f) => views.push(f));
    net.ports[0]!.send(frame(BROADCAST, hostMac(0), 42, 100));
    assert.equal(net.sw.framesInFlight, 1);
    net.drain();
    assert.equal(views.length, 4);
    assert.equal(new Set(views.map((v) => v.buffer)).size, 1);
    assert.equal(net.sw.framesInFlight, 0);
  });

  test('receive buffers are recycled: steady traffic allocates no new buffers', () => {
    const net = makeNet(1, 2);
    const buffers = new Set<ArrayBufferLike>();
    net.ports[1]!.onFrame((f) => buffers.add(f.buffer));
    const f = frame(hostMac(1), hostMac(0), 0, 1514);
    for (let round = 0; round < 50; round++) {
      for (let i = 0; i < 4; i++) net.ports[0]!.send(f);
      net.drain();
    }
    assert.ok(buffers.size <= 4, `used ${buffers.size} distinct buffers`);
  });

  test('a receiver that keeps the view sees it reused; it must copy', () => {
    const net = makeNet(1, 2);
    const kept: Uint8Array[] = [];
    const copies: number[] = [];
    net.ports[1]!.onFrame((f) => {
      kept.push(f);
      copies.push(idOf(f.slice()));
    });
    net.ports[0]!.send(frame(hostMac(1), hostMac(0), 1));
    net.drain();
    net.ports[0]!.send(frame(hostMac(1), hostMac(0), 2));
    net.drain();
    assert.deepEqual(copies, [1, 2]);
    assert.equal(idOf(kept[0]!), 2, 'the first view now shows the second frame');
  });

  test('runt and oversize frames are refused and counted', () => {
    const net = makeNet(1, 2, { mtu: 1500 });
    assert.equal(net.ports[0]!.send(new Uint8Array(10)), false);
    assert.equal(net.ports[0]!.send(frame(BROADCAST, hostMac(0), 1, 1519)), false);
    assert.equal(net.ports[0]!.send(frame(BROADCAST, hostMac(0), 2, 1518)), true);
    net.drain();
    assert.equal(net.sw.stats.get('drop.runt'), 1);
    assert.equal(net.sw.stats.get('drop.oversize'), 1);
    assert.deepEqual(net.ids(1), [2]);
  });

  test('a frame bigger than the egress port MTU is dropped there', () => {
    const clock = new VirtualClock();
    const sw = new MemorySwitch({ clock, random: new SeededRandom(1) });
    const big = sw.addPort({ mtu: 9000 });
    const small = sw.addPort({ mtu: 1500 });
    let got = 0;
    small.onFrame(() => got++);
    assert.equal(big.send(frame(BROADCAST, hostMac(0), 1, 9018)), true);
    assert.equal(big.send(frame(BROADCAST, hostMac(0), 1, 1500)), true);
    while (clock.pending) clock.step();
    assert.equal(got, 1);
    assert.equal(sw.stats.get('drop.oversize'), 1);
  });

  test('jumbo ports carry 64 KiB frames', () => {
    const net = makeNet(1, 2, { mtu: 65535 });
    const f = frame(hostMac(1), hostMac(0), 7, 65535 + 14);
    f[f.length - 1] = 0x5a;
    let last = -1;
    net.ports[1]!.onFrame((g) => {
      last = g[g.length - 1]!;
      net.rx.push({ port: 1, id: idOf(g), t: 0, len: g.length });
    });
    assert.equal(net.ports[0]!.send(f), true);
    net.drain();
    assert.deepEqual(
      net.rx.map((r) => [r.id, r.len]),
      [[7, 65549]],
    );
    assert.equal(last, 0x5a);
  });

  test('a port without a receive handler drops and counts', () => {
    const clock = new VirtualClock();
    const sw = new MemorySwitch({ clock, random: new SeededRandom(1) });
    const a = sw.addPort();
    sw.addPort();
    a.send(frame(BROADCAST, hostMac(0), 1));
    while (clock.pending) clock.step();
    assert.equal(sw.stats.get('drop.nohandler'), 1);
    assert.equal(sw.framesInFlight, 0);
  });

  test('a throwing receive handler does not wedge the port', () => {
    const net = makeNet(1, 2);
    let calls = 0;
    net.ports[1]!.onFrame((f) => {
      calls++;
      if (idOf(f) === 0) throw new Error('handler bug');
    });
    net.ports[0]!.send(frame(hostMac(1), hostMac(0), 0));
    net.ports[0]!.send(frame(hostMac(1), hostMac(0), 1));
    assert.throws(() => net.clock.runDue(), /handler bug/);
    net.drain();
    assert.equal(calls, 2);
    assert.equal(net.sw.framesInFlight, 0);
  });

  test('a handler that answers at once does not recurse and does not starve other traffic', () => {
    const net = makeNet(1, 2);
    let pings = 0;
    let pongs = 0;
    net.ports[1]!.onFrame((f) => {
      pings++;
      if (pings < 100) net.ports[1]!.send(frame(hostMac(0), hostMac(1), idOf(f)));
    });
    net.ports[0]!.onFrame((f) => {
      pongs++;
      net.ports[0]!.send(frame(hostMac(1), hostMac(0), idOf(f) + 1));
    });
    net.ports[0]!.send(frame(hostMac(1), hostMac(0), 0));
    net.drain();
    assert.equal(pings, 100);
    assert.equal(pongs, 99);
  });
});

describe('cut, restore, blackhole, close', () => {
  test('cut drops carrier, drops frames both ways (counted), restore brings it back', () => {
    const net = makeNet(1, 2, { impair: { delayMs: 10 } });
    const events: [number, boolean][] = [];
    net.ports[0]!.onCarrier((up) => events.push([net.clock.now(), up]));
    net.ports[1]!.send(frame(hostMac(0), hostMac(1), 1)); // in flight towards port 0
    net.ports[0]!.send(frame(hostMac(1), hostMac(0), 2)); // in flight towards port 1
    net.clock.advance(5);
    net.ports[0]!.cut();
    assert.equal(net.ports[0]!.carrier, false);
    assert.deepEqual(events, [], 'the carrier event is not delivered inside cut()');
    assert.equal(net.ports[0]!.send(frame(hostMac(1), hostMac(0), 3)), false);
    net.drain();
    assert.deepEqual(events, [[5, false]]);
    // Frame 2 was still on port 0's wire and frame 3 was refused: two drops. Frame 1 reached the
    // switch after the cut and was flooded past the dead port.
    assert.deepEqual(net.ids(0), []);
    assert.deepEqual(net.ids(1), []);
    assert.equal(net.sw.stats.get('drop.cut'), 2);
    net.ports[0]!.restore();
    assert.equal(net.ports[0]!.carrier, true);
    net.drain();
    assert.deepEqual(events, [
      [5, false],
      [net.clock.now(), true],
    ]);
    net.rx.length = 0;
    net.ports[1]!.send(frame(hostMac(0), hostMac(1), 4));
    net.drain();
    assert.deepEqual(net.ids(0), [4]);
    assert.equal(net.sw.framesInFlight, 0);
  });

  test('cut flushes addresses learned on the port, so its station is flooded for at once', () => {
    const net = makeNet(1, 3);
    net.ports[1]!.send(frame(BROADCAST, hostMac(1), 1));
    net.drain();
    assert.equal(net.sw.portFor(hostMac(1)), net.ports[1]);
    net.ports[1]!.cut();
    assert.equal(net.sw.portFor(hostMac(1)), undefined);
    net.rx.length = 0;
    net.ports[0]!.send(frame(hostMac(1), hostMac(0), 2));
    net.drain();
    assert.deepEqual(net.ids(2), [2]);
    assert.deepEqual(net.ids(1), []);
  });

  test('cut twice and restore twice report one change each', () => {
    const net = makeNet(1, 1);
    const events: boolean[] = [];
    net.ports[0]!.onCarrier((up) => events.push(up));
    net.ports[0]!.cut();
    net.ports[0]!.cut();
    net.ports[0]!.restore();
    net.ports[0]!.restore();
    net.drain();
    assert.deepEqual(events, [false, true]);
  });

  test('blackhole: carrier stays up, send says yes, nothing arrives either way', () => {
    const net = makeNet(1, 2);
    net.ports[0]!.blackhole(true);
    assert.equal(net.ports[0]!.carrier, true);
    assert.equal(net.ports[0]!.send(frame(hostMac(1), hostMac(0), 1)), true);
    net.ports[1]!.send(frame(hostMac(0), hostMac(1), 2));
    net.drain();
    assert.deepEqual(net.rx, []);
    assert.equal(net.sw.stats.get('drop.blackhole'), 2);
    net.ports[0]!.blackhole(false);
    net.ports[0]!.send(frame(hostMac(1), hostMac(0), 3));
    net.ports[1]!.send(frame(hostMac(0), hostMac(1), 4));
    net.drain();
    assert.deepEqual(net.ids(0), [4]);
    assert.deepEqual(net.ids(1), [3]);
  });

  test('blackhole also swallows frames already on the wire', () => {
    const net = makeNet(1, 2, { impair: { delayMs: 10 } });
    net.ports[1]!.send(frame(hostMac(0), hostMac(1), 1));
    net.clock.advance(1);
    net.ports[0]!.blackhole(true);
    net.drain();
    assert.deepEqual(net.rx, []);
    assert.equal(net.sw.framesInFlight, 0);
  });

  test('close drops what is in flight, refuses sends, and other calls then fail clearly', () => {
    const net = makeNet(1, 2, { impair: { delayMs: 10 } });
    net.ports[0]!.send(frame(hostMac(1), hostMac(0), 1));
    net.ports[1]!.send(frame(hostMac(0), hostMac(1), 2));
    net.ports[0]!.close();
    net.ports[0]!.close();
    assert.equal(net.ports[0]!.carrier, false);
    assert.equal(net.ports[0]!.send(frame(hostMac(1), hostMac(0), 3)), false);
    net.drain();
    assert.deepEqual(net.rx, []);
    assert.ok(net.sw.stats.get('drop.closed') >= 2);
    assert.equal(net.sw.framesInFlight, 0);
    assert.throws(() => net.ports[0]!.cut(), InvalidStateError);
    assert.throws(() => net.ports[0]!.impair({ loss: 0.1 }), InvalidStateError);
  });
});

describe('option validation', () => {
  const clock = new VirtualClock();
  const random = new SeededRandom(1);
  test('switch options', () => {
    assert.throws(() => new MemorySwitch({ clock, random, ageMs: 0 }), InvalidArgumentError);
    assert.throws(() => new MemorySwitch({ clock, random, ageMs: Number.NaN }), InvalidArgumentError);
    assert.throws(() => new MemorySwitch({ clock, random, maxMacEntries: 0 }), InvalidArgumentError);
    assert.throws(
      () => new MemorySwitch({ clock: undefined as unknown as VirtualClock, random }),
      InvalidArgumentError,
    );
  });
  test('port options', () => {
    const sw = new MemorySwitch({ clock, random });
    assert.throws(() => sw.addPort({ mtu: 67 }), InvalidArgumentError);
    assert.throws(() => sw.addPort({ mtu: 65536 }), InvalidArgumentError);
    assert.throws(() => sw.addPort({ mtu: 1500.5 }), InvalidArgumentError);
    assert.throws(() => sw.addPort({ impair: { loss: 2 } }), InvalidArgumentError);
    assert.equal(sw.ports.length, 0, 'a refused port is not added');
    const p = sw.addPort({ name: 'eth0' });
    assert.equal(p.name, 'eth0');
    assert.equal(p.mtu, 1500);
    assert.equal(p.switch, sw);
    assert.equal(sw.addPort().name, 'switch.p1');
    assert.throws(() => p.onFrame(null as unknown as () => void), InvalidArgumentError);
  });
});

describe('on real time', () => {
  test('RealClock: frames arrive after the delay, in order', async () => {
    const sw = new MemorySwitch({ clock: new RealClock(), random: new SeededRandom(3) });
    const a = sw.addPort({ impair: { tx: { delayMs: 5 } } });
    const b = sw.addPort();
    const got: number[] = [];
    const start = performance.now();
    const done = new Promise<number>((resolve) => {
      b.onFrame((f) => {
        got.push(idOf(f));
        if (got.length === 20) resolve(performance.now() - start);
      });
    });
    for (let i = 0; i < 20; i++) a.send(frame(hostMac(1), hostMac(0), i));
    const elapsed = await done;
    assert.ok(elapsed >= 4, `arrived after ${elapsed} ms`);
    assert.deepEqual(
      got,
      Array.from({ length: 20 }, (_, i) => i),
    );
    assert.equal(sw.framesInFlight, 0);
  });

  test('RealClock: a switch left open does not keep the process alive', async () => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', fileURLToPath(new URL('./real-time-child.ts', import.meta.url))],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    // The child ends on its own or not at all; the kill only stops a hung test.
    const guard = setTimeout(() => child.kill('SIGKILL'), 30_000);
    const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
    clearTimeout(guard);
    assert.equal(signal, null, `the child had to be killed: it did not exit by itself\n${out}`);
    assert.equal(code, 0);
    assert.equal(out, `${Array.from({ length: 20 }, (_, i) => i).join(',')}\nexit in-flight=0\n`);
  });
});
