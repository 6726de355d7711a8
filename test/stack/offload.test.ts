/**
 * Segmentation and checksum offload through the stack, against a fake device that does what the
 * kernel does for a TAP: cuts super-segments from `sendGso`, completes checksums, and hands frames
 * up with a partial checksum.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { SeededRandom } from '../../src/core/random.ts';
import type { Link, LinkGsoOptions, RxOffloadInfo } from '../../src/link/link.ts';
import { Stack } from '../../src/stack/stack.ts';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import type { TcpUser } from '../../src/stack/tcp/tcp-types.ts';
import { parseIpv4, readU16, readU32, writeU16, writeU32 } from '../../src/wire/addr.ts';
import { foldChecksum, internetChecksum, onesSum, pseudoHeaderSum } from '../../src/wire/checksum.ts';

const MTU = 1500;

class FakeLink implements Link {
  carrier = true;
  peer: FakeLink | null = null;
  handler: ((f: Uint8Array, info?: RxOffloadInfo) => void) | null = null;
  readonly offloads: { tso: boolean; csum: boolean };
  /** Largest frame that reached the wire. */
  maxWire = 0;
  gsoFrames = 0;
  /** Largest TCP payload handed over in one super-segment. */
  maxGsoPayload = 0;
  constructor(
    readonly name: string,
    readonly clock: VirtualClock,
    offload: boolean,
    /** Deliver incoming TCP with a partial checksum, as the kernel does for local senders. */
    readonly partialRx: boolean,
  ) {
    this.offloads = { tso: offload, csum: offload };
  }
  get mtu(): number {
    return MTU;
  }
  send(frame: Uint8Array): boolean {
    assert.ok(frame.length <= MTU + 14, `plain send of ${frame.length} bytes`);
    this.wire(frame.slice());
    return true;
  }
  sendGso(frame: Uint8Array, o: LinkGsoOptions): boolean {
    assert.ok(this.offloads.csum);
    this.gsoFrames++;
    this.maxGsoPayload = Math.max(
      this.maxGsoPayload,
      frame.length - o.csumStart - (frame[o.csumStart + 12]! >>> 4) * 4,
    );
    for (const seg of segment(frame.slice(), o)) this.wire(seg);
    return true;
  }
  onFrame(h: (f: Uint8Array, info?: RxOffloadInfo) => void): void {
    this.handler = h;
  }
  onCarrier(): void {}
  close(): void {}
  private wire(f: Uint8Array): void {
    this.maxWire = Math.max(this.maxWire, f.length);
    const p = this.peer!;
    this.clock.defer(() => p.receive(f));
  }
  receive(f: Uint8Array): void {
    const isTcp = f[12] === 8 && f[13] === 0 && f[23] === 6;
    if (this.partialRx && isTcp) {
      // Replace the checksum with the pseudo-header sum only, as a NEEDS_CSUM frame carries it.
      const ip = 14;
      const l4 = ip + (f[ip]! & 15) * 4;
      const len = readU16(f, ip + 2) - (l4 - ip);
      const ps = pseudoHeaderSum(readU32(f, ip + 12), readU32(f, ip + 16), 6, len);
      writeU16(f, l4 + 16, ~foldChecksum(ps) & 0xffff);
      this.handler?.(f, { csumPartial: true, csumValid: false, gsoType: 0, gsoSize: 0 });
    } else this.handler?.(f);
  }
}

/** What the device does with a TSO frame: one wire segment per gsoSize payload bytes. */
function segment(f: Uint8Array, o: LinkGsoOptions): Uint8Array[] {
  const ip = 14;
  const l4 = o.csumStart;
  const thl = (f[l4 + 12]! >>> 4) * 4;
  const payload = f.length - l4 - thl;
  const cuts: [number, number][] = [];
  if (o.gsoSize === 0 || payload <= o.gsoSize) cuts.push([0, payload]);
  else for (let at = 0; at < payload; at += o.gsoSize) cuts.push([at, Math.min(o.gsoSize, payload - at)]);
  const seq = readU32(f, l4 + 4);
  const flags = f[l4 + 13]!;
  return cuts.map(([at, n], i) => {
    const s = new Uint8Array(l4 + thl + n);
    s.set(f.subarray(0, l4 + thl));
    s.set(f.subarray(l4 + thl + at, l4 + thl + at + n), l4 + thl);
    writeU16(s, ip + 2, s.length - ip);
    writeU16(s, ip + 10, 0);
    writeU16(s, ip + 10, internetChecksum(s, ip, 20));
    writeU32(s, l4 + 4, (seq + at) >>> 0);
    // FIN and PSH belong to the last segment only.
    if (i < cuts.length - 1) s[l4 + 13] = flags & ~0x09;
    writeU16(s, l4 + 16, 0);
    const len = s.length - l4;
    const ps = pseudoHeaderSum(readU32(s, ip + 12), readU32(s, ip + 16), 6, len);
    writeU16(s, l4 + 16, foldChecksum(onesSum(s, l4, len, ps)));
    return s;
  });
}

function user(over: Partial<TcpUser> = {}): TcpUser {
  return { onConnected() {}, onReadable() {}, onWritable() {}, onRemoteEnd() {}, onClosed() {}, ...over };
}

function transfer(offload: boolean, rcvBufSize?: number) {
  const clock = new VirtualClock();
  const la = new FakeLink('a', clock, offload, offload);
  const lb = new FakeLink('b', clock, false, false);
  la.peer = lb;
  lb.peer = la;
  const a = new Stack({ clock, random: new SeededRandom(1), name: 'a' });
  const b = new Stack({ clock, random: new SeededRandom(2), name: 'b' });
  a.addInterface(la, { mac: '02:00:00:00:00:01', ip: '10.0.0.1/24' });
  b.addInterface(lb, { mac: '02:00:00:00:00:02', ip: '10.0.0.2/24' });
  const N = 2_000_000;
  const data = new Uint8Array(N).map((_, i) => (i * 7) % 253);
  const got = new Uint8Array(N);
  let gotLen = 0;
  const tmp = new Uint8Array(65536);
  // b sends to a as well, so a's receive path (partial checksums) carries data too.
  let back = 0;
  let served: TcpConnection | null = null;
  b.tcp.listen({ port: 9, options: rcvBufSize ? { rcvBufSize } : undefined }, (conn: TcpConnection) => {
    served = conn;
    conn.user = user({
      onReadable() {
        for (let n = conn.read(tmp); n > 0; n = conn.read(tmp)) {
          got.set(tmp.subarray(0, n), gotLen);
          gotLen += n;
        }
      },
    });
    conn.write(data.subarray(0, 100_000));
    return true;
  });
  let sent = 0;
  const c: TcpConnection = a.tcp.connect(
    { remoteIp: parseIpv4('10.0.0.2'), remotePort: 9 },
    user({
      onConnected() {
        sent += c.write(data.subarray(sent));
      },
      onWritable() {
        sent += c.write(data.subarray(sent));
      },
      onReadable() {
        for (let n = c.read(tmp); n > 0; n = c.read(tmp)) back += n;
      },
    }),
  );
  for (let i = 0; i < 2000 && (gotLen < N || back < 100_000); i++) clock.advance(1);
  return { a, b, la, lb, data, got, gotLen, back, c, served: served as TcpConnection | null };
}

test('with TSO the sender hands 64 KB super-segments to the link, and the peer gets every byte', () => {
  const r = transfer(true);
  assert.equal(r.gotLen, r.data.length);
  assert.deepEqual(r.got, r.data);
  assert.equal(r.back, 100_000);
  assert.ok(r.a.counters.get('tx.offload.tso') > 0, 'super-segments sent');
  assert.ok(r.la.gsoFrames > 0);
  assert.ok(r.la.maxWire <= MTU + 14, 'the device never put more than the MTU on the wire');
  // Fewer sends than wire segments: the point of the exercise.
  assert.ok(r.a.counters.get('tx.offload.tso') * 2 < r.data.length / 1448);
  assert.ok(r.a.counters.get('rx.offload.csum-partial') > 0, 'partial checksums completed on receive');
  for (const st of [r.a, r.b]) {
    assert.equal(st.counters.sum('drop.tcp'), 0);
    assert.equal(st.counters.sum('drop.ipv4'), 0);
  }
});

test('a super-segment carries at most half the largest window the peer offered, as Linux (tcp_bound_to_half_wnd)', () => {
  // A receiver with a small buffer charges a whole super-segment to it at once; Linux's sender
  // cuts its size goal to half the peer's largest window, so a window is never one packet.
  const r = transfer(true, 16_384);
  assert.deepEqual(r.got, r.data);
  const maxWnd = r.c.state.delegated.maxSndWnd;
  assert.ok(maxWnd >= 8192 && maxWnd <= 32_768, `peer's largest window ${maxWnd}`);
  assert.ok(r.la.gsoFrames > 0, 'super-segments still used');
  assert.ok(r.la.maxGsoPayload > 1448, `super-segments of more than one MSS (${r.la.maxGsoPayload})`);
  assert.ok(
    r.la.maxGsoPayload <= maxWnd / 2,
    `largest super-segment ${r.la.maxGsoPayload} B against a largest window of ${maxWnd} B`,
  );
});

test('without offload every segment fits the MTU and no offload counters move', () => {
  const r = transfer(false);
  assert.deepEqual(r.got, r.data);
  assert.equal(r.a.counters.sum('tx.offload'), 0);
  assert.equal(r.la.gsoFrames, 0);
});

test('an offloading interface can be told not to use it', () => {
  const clock = new VirtualClock();
  const l = new FakeLink('a', clock, true, false);
  const s = new Stack({ clock, random: new SeededRandom(1) });
  const i = s.addInterface(l, { mac: '02:00:00:00:00:01', ip: '10.0.0.1/24', offload: { tso: false } });
  assert.equal(i.tso, false);
  assert.equal(i.csumOffload, true);
  assert.throws(
    () =>
      s.addInterface(new FakeLink('b', clock, true, false), {
        mac: '02:00:00:00:00:03',
        ip: '10.0.1.1/24',
        offload: 3 as never,
      }),
    /offload must be/,
  );
});
