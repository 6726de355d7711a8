import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { InvalidArgumentError, InvalidStateError } from '../../src/core/errors.ts';
import { capture, PcapWriter } from '../../src/link/pcap.ts';
import { BROADCAST, frame, hostMac, idOf, makeNet } from './helpers.ts';

interface PcapRecord {
  sec: number;
  usec: number;
  origLen: number;
  data: Uint8Array;
}

interface PcapFile {
  magic: number;
  major: number;
  minor: number;
  thiszone: number;
  snapLen: number;
  linkType: number;
  records: PcapRecord[];
}

/** Independent reader for the classic format, strict about lengths. */
function readPcap(bytes: Uint8Array): PcapFile {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  assert.ok(bytes.length >= 24, 'global header present');
  const out: PcapFile = {
    magic: dv.getUint32(0, true),
    major: dv.getUint16(4, true),
    minor: dv.getUint16(6, true),
    thiszone: dv.getInt32(8, true),
    snapLen: dv.getUint32(16, true),
    linkType: dv.getUint32(20, true),
    records: [],
  };
  let p = 24;
  while (p < bytes.length) {
    assert.ok(p + 16 <= bytes.length, 'record header complete');
    const incl = dv.getUint32(p + 8, true);
    assert.ok(p + 16 + incl <= bytes.length, 'record data complete');
    out.records.push({
      sec: dv.getUint32(p, true),
      usec: dv.getUint32(p + 4, true),
      origLen: dv.getUint32(p + 12, true),
      data: bytes.slice(p + 16, p + 16 + incl),
    });
    p += 16 + incl;
  }
  return out;
}

function collector(): { chunks: Uint8Array[]; write(c: Uint8Array): void; bytes(): Uint8Array } {
  const chunks: Uint8Array[] = [];
  return {
    chunks,
    write: (c) => chunks.push(c),
    bytes: () => Buffer.concat(chunks),
  };
}

const dir = mkdtempSync(join(tmpdir(), 'chimney-pcap-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('PcapWriter', () => {
  test('global header: classic magic, v2.4, snaplen 65535, Ethernet', () => {
    const sink = collector();
    const w = new PcapWriter(sink, { clock: new VirtualClock() });
    w.close();
    const bytes = sink.bytes();
    assert.equal(bytes.length, 24);
    assert.deepEqual([...bytes.subarray(0, 4)], [0xd4, 0xc3, 0xb2, 0xa1]);
    const f = readPcap(bytes);
    assert.equal(f.magic, 0xa1b2c3d4);
    assert.equal(f.major, 2);
    assert.equal(f.minor, 4);
    assert.equal(f.thiszone, 0);
    assert.equal(f.snapLen, 65535);
    assert.equal(f.linkType, 1);
    assert.equal(f.records.length, 0);
  });

  test('records carry clock time in microseconds, the bytes, and the original length', () => {
    const clock = new VirtualClock(1000);
    const sink = collector();
    const w = new PcapWriter(sink, { clock, epochMs: 1_700_000_000_000 });
    w.writeFrame(frame(BROADCAST, hostMac(1), 1, 60));
    clock.advance(1234.5678);
    w.writeFrame(frame(BROADCAST, hostMac(1), 2, 1514));
    w.writeFrame(frame(BROADCAST, hostMac(1), 3, 80), 5000);
    assert.equal(w.frames, 3);
    w.close();
    const f = readPcap(sink.bytes());
    assert.deepEqual(
      f.records.map((r) => [r.sec, r.usec, r.origLen, r.data.length, idOf(r.data)]),
      [
        [1_700_000_001, 0, 60, 60, 1],
        [1_700_000_002, 234568, 1514, 1514, 2],
        [1_700_000_005, 0, 80, 80, 3],
      ],
    );
  });

  test('a bare Clock may stand in for the options', () => {
    const clock = new VirtualClock(2500);
    const sink = collector();
    const w = new PcapWriter(sink, clock);
    w.writeFrame(frame(BROADCAST, hostMac(1), 1, 60));
    w.close();
    const f = readPcap(sink.bytes());
    assert.deepEqual([f.records[0]!.sec, f.records[0]!.usec], [2, 500000]);
    assert.throws(() => new PcapWriter(collector(), {} as VirtualClock), InvalidArgumentError);
  });

  test('frames longer than snapLen are truncated but keep their original length', () => {
    const sink = collector();
    const w = new PcapWriter(sink, { clock: new VirtualClock(), snapLen: 100 });
    w.writeFrame(frame(BROADCAST, hostMac(1), 9, 300));
    w.close();
    const f = readPcap(sink.bytes());
    assert.equal(f.snapLen, 100);
    assert.equal(f.records[0]!.data.length, 100);
    assert.equal(f.records[0]!.origLen, 300);
    assert.equal(idOf(f.records[0]!.data), 9);
  });

  test('a small buffer flushes as it fills; chunks handed out are not reused', () => {
    const sink = collector();
    const w = new PcapWriter(sink, { clock: new VirtualClock(), bufferBytes: 64, snapLen: 200 });
    for (let i = 0; i < 50; i++) w.writeFrame(frame(BROADCAST, hostMac(1), i, 100));
    w.close();
    assert.ok(sink.chunks.length > 5);
    const f = readPcap(sink.bytes());
    assert.deepEqual(
      f.records.map((r) => idOf(r.data)),
      Array.from({ length: 50 }, (_, i) => i),
    );
  });

  test('bad arguments and use after close are typed errors', () => {
    const clock = new VirtualClock();
    assert.throws(() => new PcapWriter(collector(), { clock, snapLen: 0 }), InvalidArgumentError);
    assert.throws(() => new PcapWriter(collector(), { clock, snapLen: 70000 }), InvalidArgumentError);
    assert.throws(() => new PcapWriter({} as unknown as string, { clock }), InvalidArgumentError);
    assert.throws(
      () => new PcapWriter(join(dir, 'no', 'such', 'dir', 'x.pcap'), { clock }),
      InvalidArgumentError,
    );
    const w = new PcapWriter(collector(), { clock });
    w.close();
    w.close();
    assert.throws(() => w.writeFrame(new Uint8Array(60)), InvalidStateError);
  });
});

/** A two-port network where port 0 is captured, with some traffic each way. */
function capturedRun(path: string): { frames: number[][]; sent: number; received: number } {
  const net = makeNet(5, 2, { impair: { delayMs: 1.5, jitterMs: 0.5 } });
  const w = new PcapWriter(path, { clock: net.clock });
  const link = capture(net.ports[0]!, w);
  assert.equal(link.name, net.ports[0]!.name);
  assert.equal(link.mtu, 1500);
  assert.equal(link.carrier, true);
  let received = 0;
  link.onFrame(() => received++);
  let sent = 0;
  for (let i = 0; i < 40; i++) {
    if (link.send(frame(hostMac(1), hostMac(0), i, 60 + i * 30))) sent++;
    net.ports[1]!.send(frame(hostMac(0), hostMac(1), 1000 + i, 64));
    net.clock.advance(0.25);
  }
  link.onCarrier(() => {});
  net.ports[0]!.cut();
  // Refused by the cut port: not on the wire, so not in the capture.
  assert.equal(link.send(frame(hostMac(1), hostMac(0), 99)), false);
  net.drain();
  w.close();
  const f = readPcap(readFileSync(path));
  return { frames: f.records.map((r) => [r.sec, r.usec, r.data.length, idOf(r.data)]), sent, received };
}

describe('capture', () => {
  test('records every frame sent and received, in time order', () => {
    const path = join(dir, 'run.pcap');
    const { frames, sent, received } = capturedRun(path);
    assert.equal(sent, 40);
    assert.ok(received > 0);
    assert.equal(frames.length, sent + received);
    const ids = frames.map((r) => r[3]!);
    for (let i = 0; i < 40; i++) assert.ok(ids.includes(i), `sent frame ${i} captured`);
    assert.equal(ids.filter((id) => id >= 1000).length, received);
    assert.ok(!ids.includes(99));
    const times = frames.map((r) => r[0]! * 1e6 + r[1]!);
    for (let i = 1; i < times.length; i++) assert.ok(times[i]! >= times[i - 1]!);
  });

  test('virtual time makes captures byte-identical', () => {
    capturedRun(join(dir, 'a.pcap'));
    capturedRun(join(dir, 'b.pcap'));
    assert.deepEqual(readFileSync(join(dir, 'a.pcap')), readFileSync(join(dir, 'b.pcap')));
  });

  test('a closed writer stops recording but the link keeps working', () => {
    const net = makeNet(1, 2);
    const sink = collector();
    const w = new PcapWriter(sink, { clock: net.clock });
    const link = capture(net.ports[0]!, w);
    let got = 0;
    link.onFrame(() => got++);
    w.close();
    assert.equal(link.send(frame(hostMac(1), hostMac(0), 1)), true);
    net.ports[1]!.send(frame(hostMac(0), hostMac(1), 2));
    net.drain();
    assert.equal(got, 1);
    assert.deepEqual(net.ids(1), [1]);
    link.close();
    assert.equal(net.ports[0]!.carrier, false);
  });

  test('tshark reads every frame of the capture', (t) => {
    let version: string;
    try {
      version = execFileSync('tshark', ['--version'], { encoding: 'utf8' });
    } catch {
      const reason = 'tshark not found on PATH (apt-get install -y tshark)';
      if (process.env.CI) assert.fail(`${reason}: required in CI`);
      console.log(`# skipping tshark check: ${reason}`);
      t.skip(reason);
      return;
    }
    assert.match(version, /TShark/);
    const path = join(dir, 'tshark.pcap');
    const { frames } = capturedRun(path);
    const out = execFileSync('tshark', ['-r', path, '-T', 'fields', '-e', 'frame.len', '-e', 'eth.src'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const lines = out.trim().split('\n');
    assert.equal(lines.length, frames.length);
    assert.deepEqual(
      lines.map((l) => Number(l.split('\t')[0])),
      frames.map((r) => r[2]),
    );
    for (const l of lines) assert.match(l.split('\t')[1]!, /^02:00:00:00:00:0[01]$/);
  });
});
