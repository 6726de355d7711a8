import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { Counters } from '../../src/core/counters.ts';
import { SeededRandom } from '../../src/core/random.ts';
import type { IpSender } from '../../src/stack/ip-sender.ts';
import { type CongestionControl, congestionControl, flightSize } from '../../src/stack/tcp/congestion.ts';
import type { TcpConnection } from '../../src/stack/tcp/tcp-connection.ts';
import { TcpLayer } from '../../src/stack/tcp/tcp-layer.ts';
import type { TcpHostEnv, TcpUser } from '../../src/stack/tcp/tcp-types.ts';
import { createNeighborState } from '../../src/state/neighbor-state.ts';
import { createPathState, type PathState } from '../../src/state/path-state.ts';
import type { CongestionAlgorithm, TcpState } from '../../src/state/tcp-state.ts';
import { createTcpHeader, decodeTcp, finishTcpChecksum, TcpFlag } from '../../src/wire/tcp.ts';
import { ACK, add, Bench, bytes, type Opened, passiveOpen } from './harness.ts';

/**
 * Two TcpLayers back to back over an in-test IP "wire" with a fixed one-way delay, on virtual time.
 * A drop script sees every data segment from the client with its ordinal and how many times that
 * sequence number has been sent before, and can drop it.
 */

const IP_A = 0x0a000001;
const IP_B = 0x0a000002;
const PORT = 5001;
const DELAY = 5; // ms one way
const MSS = 1460;

interface DataSeg {
  /** Offset of the first byte in the stream (0 = first data byte). */
  off: number;
  len: number;
  /** Ordinal among all data segments the client sent. */
  index: number;
  /** 0 for the first transmission of this offset, 1 for its first retransmission, ... */
  copy: number;
  at: number;
  /** Segments the client had received when this one was sent (ACKs, in this one-way transfer). */
  acksIn: number;
}

type DropFn = (seg: DataSeg) => boolean;

interface CcEvent {
  ev: 'init' | 'ack' | 'loss' | 'exit' | 'rto' | 'idle';
  at: number;
  flight: number;
  cwndBefore: number;
  cwnd: number;
  ssthresh: number;
}

/** Records every congestion event with the window before and after, then defers to the real one. */
function spy(alg: CongestionAlgorithm, log: CcEvent[], clock: VirtualClock): CongestionControl {
  const real = congestionControl(alg);
  const wrap =
    (ev: CcEvent['ev'], fn: (s: TcpState, now: number) => void) =>
    (s: TcpState, now: number): void => {
      const flight = flightSize(s);
      const cwndBefore = s.delegated.cwnd;
      fn(s, now);
      log.push({
        ev,
        at: clock.now(),
        flight,
        cwndBefore,
        cwnd: s.delegated.cwnd,
        ssthresh: s.delegated.ssthresh,
      });
    };
  return {
    init: wrap('init', real.init),
    onAck(s, acked, rtt, now) {
      const cwndBefore = s.delegated.cwnd;
      real.onAck(s, acked, rtt, now);
      if (s.delegated.cwnd !== cwndBefore)
        log.push({
          ev: 'ack',
          at: now,
          flight: flightSize(s),
          cwndBefore,
          cwnd: s.delegated.cwnd,
          ssthresh: s.delegated.ssthresh,
        });
    },
    onLossDetected: wrap('loss', real.onLossDetected),
    onRecoveryExit: wrap('exit', real.onRecoveryExit),
    onTimeout: wrap('rto', real.onTimeout),
    onIdleRestart: wrap('idle', real.onIdleRestart),
  };
}

/** Turn the SACK-permitted and timestamp options of a SYN into NOPs: a peer that offers neither. */
function stripSynOptions(
  buf: Uint8Array,
  len: number,
  src: number,
  dst: number,
  sack: boolean,
  ts: boolean,
): void {
  const hl = (buf[12]! >>> 4) << 2;
  let i = 20;
  while (i < hl) {
    const kind = buf[i]!;
    if (kind === 0) break;
    if (kind === 1) {
      i++;
      continue;
    }
    const olen = buf[i + 1]!;
    if (olen < 2) break;
    if ((kind === 8 && !ts) || (kind === 4 && !sack)) buf.fill(1, i, i + olen);
    i += olen;
  }
  finishTcpChecksum(buf, 0, len, src, dst);
}

interface Scenario {
  alg: CongestionAlgorithm;
  sack: boolean;
  bytes: number;
  drop: DropFn;
  /** Keep the timestamp option (off by default). */
  ts?: boolean;
  /** A delay spike: data the client sends between these times arrives only after `to`. */
  spike?: { from: number; to: number };
  /** Upper bound of virtual time to run. */
  limitMs?: number;
  /** Drops the receiver's pure ACKs it sends at this virtual time. */
  dropAck?: (at: number) => boolean;
}

function run(sc: Scenario) {
  const clock = new VirtualClock(0);
  const rnd = new SeededRandom(42);
  const hdr = createTcpHeader();
  const log: CcEvent[] = [];
  const segs: DataSeg[] = [];
  const dropped: DataSeg[] = [];
  const sentCount = new Map<number, number>();
  let iss = -1;
  let dataIndex = 0;
  let acksIn = 0;
  const layers = new Map<number, TcpLayer>();

  function mkEnv(self: number, peer: number): TcpHostEnv {
    const nb = createNeighborState({ srcMac: self, vlanId: -1, ip: peer }, peer, 0);
    const path: PathState = createPathState({ localIp: self, remoteIp: peer }, nb, 0, 1500);
    const txBuf = new Uint8Array(65536);
    const ip: IpSender = {
      txBuf,
      begin: () => 0,
      commit(_p, _proto, l4Len) {
        const pkt = txBuf.slice(0, l4Len);
        if (decodeTcp(pkt, 0, l4Len, self, peer, hdr, false) !== null) return true;
        if (hdr.flags & TcpFlag.SYN) {
          stripSynOptions(pkt, l4Len, self, peer, sc.sack, sc.ts === true);
          if (self === IP_A) iss = hdr.seq;
        }
        const payload = l4Len - hdr.headerLength;
        if (self === IP_A && payload > 0) {
          const off = (hdr.seq - iss - 1) >>> 0;
          const copy = sentCount.get(off) ?? 0;
          sentCount.set(off, copy + 1);
          const seg: DataSeg = { off, len: payload, index: dataIndex++, copy, at: clock.now(), acksIn };
          segs.push(seg);
          if (sc.drop(seg)) {
            dropped.push(seg);
            return true;
          }
        }
        if (self === IP_B && !(hdr.flags & TcpFlag.SYN) && sc.dropAck?.(clock.now())) return true;
        const t = clock.createTimer(() => {
          if (peer === IP_A) acksIn++;
          layers.get(peer)!.input({ src: self, dst: peer, ttl: 64, tos: 0, ifIndex: 0 }, pkt, 0, l4Len);
        });
        const now = clock.now();
        const held = self === IP_A && sc.spike && now >= sc.spike.from && now < sc.spike.to;
        t.arm(held ? sc.spike!.to - now + DELAY : DELAY);
        return true;
      },
    };
    return {
      clock,
      random: rnd,
      ip,
      counters: new Counters(),
      pathTo: (remote) => (remote === peer ? path : null),
      isLocal: (x) => x === self,
    };
  }

  const envA = mkEnv(IP_A, IP_B);
  const envB = mkEnv(IP_B, IP_A);
  const a = new TcpLayer(envA, { congestion: sc.alg });
  const b = new TcpLayer(envB, { congestion: sc.alg });
  layers.set(IP_A, a);
  layers.set(IP_B, b);
  const cc = spy(sc.alg, log, clock);
  a.congestion = () => cc;

  const data = new Uint8Array(sc.bytes);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >>> 8) * 13) & 0xff;
  const received = new Uint8Array(sc.bytes);
  let got = 0;
  let server: TcpConnection | null = null;
  const readBuf = new Uint8Array(65536);

  const noop = () => {};
  const serverUser: TcpUser = {
    onConnected: noop,
    onReadable() {
      for (;;) {
        const n = server!.read(readBuf);
        if (n === 0) break;
        received.set(readBuf.subarray(0, Math.min(n, sc.bytes - got)), got);
        got += n;
      }
    },
    onWritable: noop,
    onRemoteEnd: noop,
    onClosed: noop,
  };
  b.listen({ port: PORT }, (conn) => {
    server = conn;
    conn.user = serverUser;
    return true;
  });
  let written = 0;
  const client: TcpConnection = a.connect(
    { remoteIp: IP_B, remotePort: PORT },
    {
      onConnected() {
        written += client.write(data);
      },
      onReadable: noop,
      onWritable() {
        if (written < data.length) written += client.write(data, written);
      },
      onRemoteEnd: noop,
      onClosed: noop,
    },
  );
  const limit = sc.limitMs ?? 60_000;
  while (got < sc.bytes && clock.now() < limit) {
    if (clock.step() === 0) break;
  }
  // Let the last ACKs land so the sender's state is final.
  clock.advance(100);
  const retransmitted = segs.filter((x) => x.copy > 0);
  return { clock, log, segs, dropped, retransmitted, got, data, received, client, counters: envA.counters };
}

function assertIntact(r: ReturnType<typeof run>): void {
  assert.equal(r.got, r.data.length, 'every byte arrived');
  assert.ok(Buffer.from(r.received).equals(Buffer.from(r.data)), 'and in order, unchanged');
  assert.equal(r.client.state.delegated.sndUna, r.client.state.delegated.sndMax, 'all data ACKed');
}

const events = (r: ReturnType<typeof run>, ev: CcEvent['ev']) => r.log.filter((e) => e.ev === ev);

describe('loss recovery end to end', () => {
  test('lossless baseline: no retransmission, slow start then growth', () => {
    const r = run({ alg: 'newreno', sack: false, bytes: 200_000, drop: () => false });
    assertIntact(r);
    assert.equal(r.retransmitted.length, 0);
    assert.equal(events(r, 'init').length, 1);
    assert.equal(events(r, 'init')[0]!.cwnd, 10 * MSS);
    assert.equal(events(r, 'loss').length + events(r, 'rto').length, 0);
  });

  test('NewReno without SACK: fast retransmit after 3 dupacks for one lost segment', () => {
    const lostOff = 30 * MSS;
    const r = run({
      alg: 'newreno',
      sack: false,
      bytes: 300_000,
      drop: (s) => s.off === lostOff && s.copy === 0,
    });
    assertIntact(r);
    assert.equal(r.client.state.const.sackEnabled, false);
    assert.equal(r.client.state.const.tsEnabled, false);
    assert.deepEqual(
      r.retransmitted.map((s) => s.off),
      [lostOff],
      'only the lost segment is sent again',
    );
    assert.equal(r.counters.get('tcp.fast_retransmits'), 1);
    assert.equal(events(r, 'rto').length, 0, 'no timeout');
    const [loss] = events(r, 'loss');
    assert.ok(loss);
    assert.equal(
      loss.ssthresh,
      Math.max(Math.floor(loss.cwndBefore / 2), 2 * MSS),
      "Linux's tcp_reno_ssthresh",
    );
    // The fast retransmit goes out within one RTT of the loss: three dupacks, not a timer.
    const rtx = r.retransmitted[0]!;
    const orig = r.segs.find((s) => s.off === lostOff && s.copy === 0)!;
    assert.ok(rtx.at - orig.at <= 2 * DELAY + 1, `fast retransmit after ${rtx.at - orig.at} ms`);
    const exits = events(r, 'exit');
    assert.equal(exits.length, 1);
    const exit = exits[0]!;
    assert.ok(exit.at > loss.at);
    assert.equal(exit.cwnd, Math.min(loss.ssthresh, Math.max(exit.flight, MSS) + MSS), 'RFC 6582 deflation');
  });

  test('NewReno without SACK: a burst of three losses is repaired by partial ACKs in one recovery', () => {
    const first = 40;
    const lost = new Set([first, first + 1, first + 2].map((i) => i * MSS));
    const r = run({
      alg: 'newreno',
      sack: false,
      bytes: 400_000,
      drop: (s) => lost.has(s.off) && s.copy === 0,
    });
    assertIntact(r);
    assert.deepEqual(
      r.retransmitted.map((s) => s.off).sort((x, y) => x - y),
      [...lost],
      'each hole resent once, nothing else',
    );
    assert.equal(events(r, 'loss').length, 1, 'one window reduction for one loss event (RFC 6582)');
    assert.equal(events(r, 'rto').length, 0);
    assert.equal(events(r, 'exit').length, 1);
    // Partial ACKs resend the next hole one round trip apart.
    const times = r.retransmitted.map((s) => s.at);
    assert.ok(times[1]! - times[0]! >= 2 * DELAY - 1 && times[2]! - times[1]! >= 2 * DELAY - 1);
    const loss = events(r, 'loss')[0]!;
    assert.equal(loss.ssthresh, Math.max(Math.floor(loss.cwndBefore / 2), 2 * MSS));
  });

  test('NewReno without SACK: a lost retransmission needs the RTO', () => {
    const lostOff = 30 * MSS;
    const r = run({
      alg: 'newreno',
      sack: false,
      bytes: 300_000,
      drop: (s) => s.off === lostOff && s.copy <= 1,
    });
    assertIntact(r);
    const copies = r.segs.filter((s) => s.off === lostOff);
    assert.equal(copies.length, 3, 'original, fast retransmit, timeout retransmit');
    assert.ok(copies[2]!.at - copies[1]!.at >= 200, 'third copy waits for the RTO (min 200 ms)');
    const [rto] = events(r, 'rto');
    assert.ok(rto);
    assert.equal(rto.cwnd, MSS, 'loss window');
    // The timeout hits during fast recovery: it keeps the ssthresh recovery chose (Linux's
    // tcp_enter_loss sets none in its Recovery state).
    const [loss] = events(r, 'loss');
    assert.ok(loss && loss.at < rto.at);
    assert.equal(rto.ssthresh, loss.ssthresh);
    assert.equal(r.counters.get('tcp.rto'), 1);
    // After the timeout the window grows again from one segment.
    const after = r.log.filter((e) => e.ev === 'ack' && e.at > rto.at);
    assert.ok(after.length > 0 && after[0]!.cwndBefore === MSS);
  });

  test('SACK: a lost retransmission is detected from later SACKs and resent without waiting for the RTO', () => {
    const lostOff = 30 * MSS;
    const r = run({
      alg: 'cubic',
      sack: true,
      bytes: 600_000,
      drop: (s) => s.off === lostOff && s.copy <= 1,
    });
    assertIntact(r);
    const copies = r.segs.filter((s) => s.off === lostOff);
    assert.equal(copies.length, 3, 'original, fast retransmit, and a second retransmission');
    assert.ok(copies[2]!.at - copies[1]!.at < 200, 'the second retransmission does not wait for the RTO');
    assert.equal(r.counters.get('tcp.rto'), 0);
    assert.ok(r.counters.get('tcp.lost_retransmits') >= 1);
  });

  for (const alg of ['newreno', 'cubic'] as const) {
    test(`${alg} with SACK: recovery resends only the holes`, () => {
      const lost = new Set([50, 52, 55, 56].map((i) => i * MSS));
      const r = run({
        alg,
        sack: true,
        bytes: 400_000,
        drop: (s) => lost.has(s.off) && s.copy === 0,
      });
      assertIntact(r);
      assert.equal(r.client.state.const.sackEnabled, true);
      assert.deepEqual(
        r.retransmitted.map((s) => s.off).sort((x, y) => x - y),
        [...lost],
        'no SACKed segment is resent',
      );
      assert.equal(events(r, 'loss').length, 1);
      assert.equal(events(r, 'rto').length, 0);
      assert.equal(events(r, 'exit').length, 1);
      const loss = events(r, 'loss')[0]!;
      const expected =
        alg === 'newreno'
          ? Math.max(Math.floor(loss.cwndBefore / 2), 2 * MSS)
          : Math.max(Math.floor((loss.cwndBefore * 7) / 10), 2 * MSS);
      assert.equal(loss.ssthresh, expected);
      assert.equal(loss.cwnd, loss.ssthresh);
      // All holes are resent within about one RTT of the detection, not one per RTT.
      const times = r.retransmitted.map((s) => s.at);
      assert.ok(Math.max(...times) - Math.min(...times) <= 2 * DELAY + 1, `spread ${times}`);
      const exit = events(r, 'exit')[0]!;
      assert.ok(exit.cwnd <= loss.ssthresh && exit.cwnd >= MSS);
    });
  }

  // One segment at `lost` segments in is lost once; the window's ACKs then reach the sender one by
  // one after the fast retransmit. After each of `after` of them, the new segments released so far
  // are ssthresh/prior-cwnd of them, give or take one (RFC 6937, Linux's tcp_cwnd_reduction).
  function prrPaces(sack: boolean, lost: number, after: number[]): void {
    const lostOff = lost * MSS;
    const r = run({ alg: 'cubic', sack, bytes: 1_000_000, drop: (s) => s.off === lostOff && s.copy === 0 });
    assertIntact(r);
    assert.equal(r.client.state.const.sackEnabled, sack);
    const loss = events(r, 'loss')[0]!;
    const ratio = loss.ssthresh / loss.cwndBefore;
    const fr = r.segs.find((s) => s.copy > 0)!;
    assert.equal(fr.off, lostOff);
    assert.deepEqual(
      r.retransmitted.map((s) => s.off),
      [lostOff],
      'only the lost segment is sent again',
    );
    const fresh = r.segs.filter((s) => s.index > fr.index && s.copy === 0);
    for (const j of after) {
      const sent = fresh.filter((s) => s.acksIn - fr.acksIn <= j).length;
      assert.ok(sent >= Math.floor(j * ratio) - 1, `${sent} new segments after ${j} ACKs`);
      assert.ok(sent <= Math.ceil(j * ratio) + 1, `${sent} new segments after ${j} ACKs`);
    }
  }

  test('PRR (RFC 6937): during recovery each ACK releases ssthresh/cwnd of what it delivered, from the start', () => {
    // RFC 6675 with cwnd = ssthresh sends nothing until the flight has fallen to ssthresh (30 %
    // of the window's ACKs); PRR sends in proportion from the second ACK on.
    prrPaces(true, 60, [5, 10, 20]);
  });

  test("without SACK, recovery reduces by PRR as Linux's does (tcp_cwnd_reduction over tcp_add_reno_sack's count), not by RFC 6582's inflation", () => {
    // Inflated (cwnd = ssthresh + 3 segments, one more per duplicate) nothing new went until the
    // duplicates had raised cwnd past the whole flight (30 % of the window's ACKs). Not past 15
    // ACKs: the hole holds snd.una while new data goes, and the peer's 64 KiB window binds.
    prrPaces(false, 20, [5, 10, 15]);
  });

  for (const ts of [false, true]) {
    test(`a spurious timeout (delay spike) is undone: F-RTO${ts ? ' and Eifel timestamps' : ''}`, () => {
      const r = run({
        alg: 'cubic',
        sack: true,
        ts,
        bytes: 1_000_000,
        drop: () => false,
        spike: { from: 60, to: 600 },
      });
      assertIntact(r);
      const rto = events(r, 'rto');
      assert.equal(rto.length, 1, 'one timeout in the spike');
      // Only the timeout's own retransmission: the originals were all delivered.
      assert.equal(r.retransmitted.length, 1, `resent ${r.retransmitted.map((s) => s.off / MSS)}`);
      const cc = r.client.state.delegated;
      assert.ok(cc.ssthresh >= rto[0]!.cwndBefore || cc.ssthresh > 1e9, `ssthresh ${cc.ssthresh} restored`);
      assert.ok(cc.cwnd >= rto[0]!.cwndBefore, 'cwnd restored');
      assert.equal(r.counters.get(ts ? 'tcp.rto.undo.eifel' : 'tcp.rto.spurious'), 1);
    });
  }

  test('F-RTO: after a timeout, new data probes the path; its duplicate ACKs show the loss was real', () => {
    // An outage: everything sent between 30 and 100 ms is lost, the tail loss probe with it, so
    // only the timer can repair it.
    const r = run({
      alg: 'cubic',
      sack: true,
      bytes: 1_000_000,
      drop: (s) => s.at >= 30 && s.at < 100,
    });
    assertIntact(r);
    const rto = events(r, 'rto');
    assert.equal(rto.length, 1);
    assert.equal(r.counters.get('tcp.rto.spurious'), 0);
    const after = r.segs.filter((s) => s.at >= rto[0]!.at);
    // Step 1: the first unacknowledged segment; step 2b: on its ACK, two new segments rather
    // than more retransmissions; step 3a: their SACKs show the loss, and the holes are resent.
    assert.equal(after[0]!.copy, 1);
    assert.deepEqual(
      after.slice(1, 3).map((s) => s.copy),
      [0, 0],
      'new data after the first ACK',
    );
    assert.ok(
      after.slice(3, 10).every((s) => s.copy === 1),
      'then the lost data',
    );
  });

  test('F-RTO with no new data to send falls back to resending at once, not one segment per timeout', () => {
    // The whole tail is lost in an outage, probe included, and everything was already sent.
    const r = run({
      alg: 'cubic',
      sack: true,
      bytes: 20 * MSS,
      drop: (s) => s.off >= 10 * MSS && s.at < 100,
    });
    assertIntact(r);
    assert.equal(events(r, 'rto').length, 1, 'one timeout, then the rest is resent in slow start');
  });

  test('whole window lost with SACK: a tail loss probe and RACK repair it without a timeout (RFC 8985)', () => {
    const r = run({
      alg: 'newreno',
      sack: true,
      bytes: 100_000,
      drop: (s) => s.index < 10 && s.copy === 0,
    });
    assertIntact(r);
    assert.equal(events(r, 'rto').length, 0);
    assert.equal(events(r, 'loss').length, 1, 'one fast recovery');
    const firstRtx = r.retransmitted[0]!;
    assert.ok(firstRtx.at < 200, `repair began at ${firstRtx.at}, before any RTO`);
    assert.equal(new Set(r.retransmitted.map((s) => s.off)).size, r.retransmitted.length, 'each once');
  });

  test("a recovery's first ACK resends what PRR allows: one segment for the probe's one SACKed, then slow start up to ssthresh (Linux's tcp_cwnd_reduction)", () => {
    // The whole first window is lost; the loss probe's SACK starts the recovery with nine holes
    // and nothing in flight. Linux forces one segment on entry (sndcnt 1: one delivered) and
    // resends no more than cwnd - in_flight (tcp_xmit_retransmit_queue); its ACK lets out two.
    // Sending the first hole before PRR's step added one to whatever PRR then allowed (and with
    // segmentation offload went as one super-segment of the whole hole, past cwnd).
    const r = run({
      alg: 'cubic',
      sack: true,
      bytes: 100_000,
      drop: (s) => s.index < 10 && s.copy === 0,
    });
    assertIntact(r);
    assert.equal(events(r, 'rto').length, 0);
    const bursts = new Map<number, number>();
    for (const x of r.retransmitted) bursts.set(x.acksIn, (bursts.get(x.acksIn) ?? 0) + 1);
    assert.deepEqual([...bursts.values()].slice(0, 2), [1, 2], 'resends per ACK: 1, then 2');
  });

  test("a retransmission lost at the tail of recovery waits for the timeout: no loss probe in recovery (Linux's tcp_schedule_loss_probe)", () => {
    // Ten segments, the first lost twice: after its retransmission nothing new is left to send
    // and nothing is delivered after it, so RACK cannot see it died. Linux probes only in its
    // Open and CWR states, so the timer repairs it there; so it does here.
    const r = run({
      alg: 'cubic',
      sack: true,
      bytes: 10 * MSS,
      drop: (s) => s.off === 0 && s.copy <= 1,
    });
    assertIntact(r);
    assert.equal(events(r, 'rto').length, 1);
    assert.equal(r.counters.get('tcp.tlp.probes') ?? 0, 0, 'no probe in recovery');
    assert.equal(r.retransmitted.filter((s) => s.off === 0).length, 2, 'the head went twice more');
  });

  for (const ts of [false, true]) {
    test(`after a timeout, the ACK of the resent head SACKing three originals above holes resends the holes at once${ts ? ' (timestamps)' : ''}`, () => {
      // Ten segments: the first four and the last three are lost, and so is the tail loss probe;
      // 4-6 arrive, but the ACKs that SACK them are lost. The ACK of the timeout's resend of the
      // head SACKs them all: F-RTO undoes the timeout (originals arrived), and the holes are lost
      // by RFC 6675's count. Linux resends them at once (conformance: flow.test.ts).
      const r = run({
        alg: 'cubic',
        sack: true,
        ts,
        bytes: 10 * MSS,
        drop: (s) => s.at < 150 && (s.copy > 0 || s.index < 4 || s.index > 6),
        dropAck: (at) => at < 150,
      });
      assertIntact(r);
      assert.equal(events(r, 'rto').length, 1, 'one timeout');
      const first = r.segs.filter((s) => s.copy === 0);
      const head = r.retransmitted.find((s) => s.off === 0 && s.at >= 150)!;
      for (const k of [1, 2, 3]) {
        const h = r.retransmitted.find((s) => s.off === first[k]!.off && s.at >= 150);
        assert.ok(h, `hole ${k} resent`);
        // One round trip after the head's resend: on the ACK that answers it.
        assert.ok(h.at <= head.at + 2 * DELAY, `hole ${k} resent at ${h.at}, the head at ${head.at}`);
      }
      const sacked = new Set(first.slice(4, 7).map((s) => s.off));
      assert.deepEqual(
        r.retransmitted.filter((s) => sacked.has(s.off)).map((s) => s.index),
        [],
        'nothing SACKed resent',
      );
    });
  }

  test("after a timeout, one SACKed original above holes: RACK's reordering timer resends the holes a reordering window after the ACK", () => {
    // As above with only segment 5 arriving: too little SACKed for RFC 6675's count. The ACK that
    // undoes the timeout SACKs 5, which went out in the same burst as the holes below it: RACK
    // deems them lost once a reordering window (a quarter of the minimum RTT, from the handshake)
    // has passed, and its timer resends them then, as Linux's tcp_rack_reo_timeout
    // (conformance: flow.test.ts). Without the timer they waited for the loss probe's SACK.
    const r = run({
      alg: 'cubic',
      sack: true,
      bytes: 10 * MSS,
      drop: (s) => s.at < 150 && (s.copy > 0 || s.index !== 5),
      dropAck: (at) => at < 150,
    });
    assertIntact(r);
    assert.equal(events(r, 'rto').length, 1, 'one timeout');
    assert.deepEqual(
      r.retransmitted.filter((s) => s.off === 5 * MSS && s.at >= 150).map((s) => s.at),
      [],
      'the SACKed segment was not resent',
    );
    const head = r.retransmitted.find((s) => s.off === 0 && s.at >= 150)!;
    const hole = r.retransmitted.find((s) => s.off === MSS && s.at >= 150)!;
    // The ACK of the head (one round trip), the probe two smoothed RTTs plus 2 ms later, its SACK.
    assert.ok(hole.at <= head.at + 5 * 2 * DELAY, `first hole resent at ${hole.at}, the head at ${head.at}`);
    // The ACK of the head one round trip later, then the reordering window: 10 ms / 4.
    assert.ok(hole.at <= head.at + 2 * DELAY + (2 * DELAY) / 4, `hole at ${hole.at}, the head at ${head.at}`);
    assert.ok(hole.at > head.at + 2 * DELAY, 'not before the window has passed');
    assert.ok(r.counters.get('tcp.rack.reo-timeouts') >= 1, 'by the reordering timer');
    // The timer enters recovery through PRR as an ACK that delivered one segment would (Linux:
    // tcp_cwnd_reduction(sk, 1, 0) in tcp_rack_reo_timeout): one segment, not cwnd's worth (the
    // kernel with CUBIC, conformance: flow.test.ts). The ACK of that one lets two go (PRR's
    // slow start below ssthresh: what it delivered and one more), the ACK of those the last.
    const burst = r.retransmitted.filter((s) => s.at === hole.at);
    assert.equal(burst.length, 1, `sent at once: ${burst.map((s) => s.off / MSS).join(', ')}`);
    for (const k of [2, 3]) {
      const h = r.retransmitted.find((s) => s.off === k * MSS && s.at >= 150);
      assert.ok(h && h.at <= hole.at + 2 * DELAY, `hole ${k} resent at ${h?.at}`);
    }
    const h4 = r.retransmitted.find((s) => s.off === 4 * MSS && s.at >= 150);
    assert.ok(h4 && h4.at <= hole.at + 4 * DELAY, `hole 4 resent at ${h4?.at}`);
  });

  for (const sack of [false]) {
    test(`whole window lost (sack ${sack}): RTO, loss window, slow start again`, () => {
      // The initial window is 10 segments; lose all ten first transmissions.
      const r = run({
        alg: 'newreno',
        sack,
        bytes: 100_000,
        drop: (s) => s.index < 10 && s.copy === 0,
      });
      assertIntact(r);
      const rtos = events(r, 'rto');
      assert.equal(rtos.length, 1);
      const rto = rtos[0]!;
      assert.equal(rto.flight, 10 * MSS);
      assert.equal(rto.ssthresh, 5 * MSS);
      assert.equal(rto.cwnd, MSS);
      assert.equal(events(r, 'loss').length, 0, 'no dupacks, so no fast retransmit');
      const firstRtx = r.retransmitted[0]!;
      assert.equal(firstRtx.off, 0);
      assert.ok(firstRtx.at >= 200, `RTO fired at ${firstRtx.at}`);
      // Slow start from one segment: 1, 2, 4 ... until ssthresh.
      const grow = r.log.filter((e) => e.ev === 'ack' && e.at > rto.at);
      assert.equal(grow[0]!.cwndBefore, MSS);
      assert.ok(grow.some((e) => e.cwnd >= 5 * MSS));
      // Ten segments resent (go-back-N within the collapsing window), each exactly once.
      assert.equal(new Set(r.retransmitted.map((s) => s.off)).size, r.retransmitted.length);
    });
  }
});

describe('loss recovery without SACK: the duplicate count (tcp_add_reno_sack)', () => {
  // Linux's scoreboard for a peer without SACK counts a segment held above the hole for each
  // duplicate ACK, at most all but one of the flight (tcp_limit_reno_sacked): a duplicate past
  // that (the network duplicated a segment) delivered nothing, and PRR sends nothing for it.
  test('duplicates past the flight less one deliver nothing and send nothing', () => {
    const o = passiveOpen(new Bench());
    const { b, conn } = o;
    const s = conn.state;
    const d = s.delegated;
    assert.equal(s.const.sackEnabled, false);
    const m = 1460;
    d.cwnd = 4 * m;
    conn.write(bytes(4 * m));
    assert.equal(b.take().filter((x) => x.data.length > 0).length, 4);
    const una = d.sndUna;
    const dupAck = (): void => b.inject({ flags: ACK, seq: o.peerSeq, ack: una, window: 65535 });
    // Segment 1 lost: segments 2-4 draw three duplicates, and the third starts the recovery.
    for (let i = 0; i < 3; i++) dupAck();
    assert.equal(s.soft.inRecovery, true);
    const rtx = b.take().filter((x) => x.data.length > 0);
    assert.deepEqual(
      rtx.map((x) => x.h.seq),
      [una],
      'the fast retransmit, and nothing else: the flight is the resent head alone',
    );
    assert.equal(s.soft.prrDelivered, m, "PRR's delivered: the third duplicate's segment");
    // More to send, then three duplicates of duplicates: nothing more has left the network.
    conn.write(bytes(4 * m));
    for (let i = 0; i < 3; i++) dupAck();
    assert.equal(b.take().filter((x) => x.data.length > 0).length, 0, 'they sent nothing');
    assert.equal(d.dupAcks, 3, 'at most the flight less one');
    assert.equal(s.soft.prrDelivered, m, 'and delivered nothing');
    // The head's ACK ends the recovery; new data goes again.
    b.inject({ flags: ACK, seq: o.peerSeq, ack: add(una, 4 * m), window: 65535 });
    assert.equal(s.soft.inRecovery, false);
    assert.ok(b.take().filter((x) => x.data.length > 0).length > 0, 'new data after the recovery');
  });

  // Linux's tcp_check_reno_reordering: a duplicate past that cap (or an ACK that leaves more
  // counted than the flight) says segments were reordered, and tp->reordering, the threshold
  // tcp_newreno_mark_lost counts the duplicates against, becomes the flight in segments.
  function dupSeries(o: Opened, n: number): { first: number; out: string[] } {
    const { b, conn } = o;
    const d = conn.state.delegated;
    const head = d.sndUna;
    const out: string[] = [];
    let first = -1;
    for (let k = 0; k < n; k++) {
      b.inject({ flags: ACK, seq: o.peerSeq, ack: head, window: 65535 });
      const sent = b.take().filter((x) => x.data.length > 0);
      if (first < 0 && sent.some((x) => x.h.seq === head)) first = k + 1;
      out.push(sent.map((x) => (x.h.seq === head ? 'head' : 'other')).join('+') || '0');
    }
    return { first, out };
  }

  /**
   * `before` segments out and their duplicates (`dups`), then all of them ACKed, then a window of
   * ten whose head is lost: which of `after` duplicates resends the head, and the degree between.
   */
  function reorderedThenLoss(before: number, dups: number, after: number) {
    const o = passiveOpen(new Bench());
    const { b, conn } = o;
    const s = conn.state;
    const d = s.delegated;
    const m = 1460;
    d.cwnd = 10 * m;
    conn.write(bytes(before * m));
    assert.equal(b.take().filter((x) => x.data.length > 0).length, before);
    const una = d.sndUna;
    const first = dupSeries(o, dups).first;
    const degree = s.soft.reordering;
    b.inject({ flags: ACK, seq: o.peerSeq, ack: add(una, before * m), window: 65535 });
    assert.equal(s.soft.inRecovery, false);
    b.take();
    d.cwnd = 10 * m;
    conn.write(bytes(10 * m));
    assert.equal(b.take().filter((x) => x.data.length > 0).length, 10);
    return { first, degree, next: dupSeries(o, after), s };
  }

  test('duplicates past the flight raise the threshold to the flight: the next loss waits for six (tcp_check_reno_reordering)', () => {
    // Six duplicates of a flight of six: the third resends the head, the sixth is one more than
    // the five segments that can be held above it.
    const { first, degree, next, s } = reorderedThenLoss(6, 6, 6);
    assert.equal(first, 3);
    assert.equal(degree, 6, 'the degree is the flight');
    assert.equal(next.first, 6, `the sixth, not the third: ${next.out.join(', ')}`);
    assert.equal(s.soft.inRecovery, true);
  });

  test('duplicates past a flight of two lower the threshold to two: the next loss resends on the second (tcp_check_reno_reordering)', () => {
    // Three duplicates of a flight of two: one segment at most is held above the head, so no
    // recovery, and the degree, as Linux assigns it, falls to the flight.
    const { first, degree, next } = reorderedThenLoss(2, 3, 3);
    assert.equal(first, -1, 'nothing resent');
    assert.equal(degree, 2);
    assert.equal(next.first, 2, `the second, not the third: ${next.out.join(', ')}`);
  });

  test('a partial ACK resends the next head within PRR, with no RFC 6582 deflation', () => {
    const o = passiveOpen(new Bench());
    const { b, conn } = o;
    const s = conn.state;
    const d = s.delegated;
    const m = 1460;
    d.cwnd = 10 * m;
    conn.write(bytes(10 * m));
    assert.equal(b.take().filter((x) => x.data.length > 0).length, 10);
    const una = d.sndUna;
    const ack = (to: number): void => b.inject({ flags: ACK, seq: o.peerSeq, ack: to, window: 65535 });
    // Segments 1 and 2 lost: 3-10 draw eight duplicates.
    for (let i = 0; i < 8; i++) ack(una);
    assert.equal(s.soft.inRecovery, true);
    assert.equal(d.dupAcks, 8);
    b.take();
    // The resent head arrives: the partial ACK covers segment 1 and marks segment 2 lost.
    ack(add(una, m));
    assert.equal(d.dupAcks, 8, 'one segment ACKed: it filled the hole, no duplicate used up');
    const next = b.take().filter((x) => x.data.length > 0);
    assert.equal(next[0]?.h.seq, add(una, m), 'segment 2 resent first');
    assert.equal(b.count('tcp.retransmits'), 2, 'the two heads, nothing else resent');
    // Linux's packets_in_flight: 9 out, 8 held above the hole, the head resent: one. PRR, below
    // ssthresh, sends what was delivered (the duplicates' and the partial ACK's) less what it sent.
    const mss = m;
    const pipe = 9 * mss - 8 * mss;
    assert.ok(d.cwnd >= pipe, `cwnd ${d.cwnd}`);
    assert.ok(d.cwnd <= d.ssthresh, `cwnd ${d.cwnd} within ssthresh ${d.ssthresh}, not inflated`);
  });
});

describe("loss recovery without SACK: PRR in whole segments (Linux's snd_ssthresh counts packets)", () => {
  test('a flight of nine: above ssthresh, PRR counts six segments, as Linux counts 9 x 717 / 1024, not six and 438 B', () => {
    // CUBIC's ssthresh in bytes, 0.7 of nine segments, is six and 438 B; Linux's snd_ssthresh is
    // 6 packets. Nine out, the first lost, more to send, one duplicate at a time. Linux: the first
    // two send by limited transmit (pipe 8 of cwnd 9); the third enters the recovery (prior cwnd
    // 9, the head marked lost, pipe 7) and resends the head; above ssthresh PRR sends
    // ceil(6 x delivered / 9) less what it sent: 2 - 1 on the fourth, 2 - 2 on the fifth. In
    // bytes, rounded up to segments, the fifth sent ceil(2.1) - 2.
    const o = passiveOpen(new Bench(), {}, { congestion: 'cubic' });
    const { b, conn } = o;
    const d = conn.state.delegated;
    const m = 1460;
    d.cwnd = 9 * m;
    conn.write(bytes(30 * m));
    assert.equal(b.take().filter((x) => x.data.length > 0).length, 9);
    const head = d.sndUna;
    let next = d.sndNxt;
    const sent: string[] = [];
    for (let k = 0; k < 5; k++) {
      b.inject({ flags: ACK, seq: o.peerSeq, ack: head, window: 65535 });
      if (k === 2) assert.equal(d.ssthresh, 6 * m + 438);
      const out = b.take().filter((x) => x.data.length > 0);
      sent.push(
        out.map((x) => (x.h.seq === head ? 'head' : x.h.seq === next ? 'new' : 'old')).join('+') || '0',
      );
      for (const x of out) if (x.h.seq === next) next = add(next, x.data.length);
    }
    assert.deepEqual(sent, ['new', 'new', 'head', 'new', '0']);
  });

  test('a flight ending in a short segment: the sender leaves out what the pipe leaves out, not a segment per duplicate', () => {
    // Three segments and 100 B out, the first lost: three duplicates, all the flight less one
    // segment can count (tcp_limit_reno_sacked). Linux's packets_in_flight is then 4 - 3 - 1 lost
    // + 1 resent = 1, PRR's cwnd 1: the resent head fills it. Left out by dupAcks x MSS the
    // sender saw a flight of 100 B beside a cwnd of a segment, and sent 1,000 B more.
    const o = passiveOpen(new Bench(), {}, { congestion: 'cubic', noDelay: true });
    const { b, conn } = o;
    const d = conn.state.delegated;
    const m = 1460;
    d.cwnd = 10 * m;
    conn.write(bytes(3 * m + 100));
    assert.equal(b.take().filter((x) => x.data.length > 0).length, 4);
    const head = d.sndUna;
    for (let k = 0; k < 3; k++) b.inject({ flags: ACK, seq: o.peerSeq, ack: head, window: 65535 });
    assert.equal(conn.state.soft.inRecovery, true);
    assert.equal(d.dupAcks, 3);
    assert.deepEqual(
      b
        .take()
        .filter((x) => x.data.length > 0)
        .map((x) => x.h.seq),
      [head],
      'the fast retransmit alone',
    );
    conn.write(bytes(1000));
    assert.equal(b.take().filter((x) => x.data.length > 0).length, 0, 'nothing new beyond the pipe');
  });

  for (const cc of ['cubic', 'newreno'] as const) {
    const want =
      cc === 'cubic'
        ? ['new', 'new', 'head', 'new', '0', 'new', 'new', '0', '0', 'new', 'new']
        : ['new', 'new', 'head', '0', 'new', '0', 'new', '0', 'new', '0', '0', 'new'];
    test(`${cc}: a window of eleven, its ssthresh between whole segments: at ssthresh, PRR's room is 0 packets, not a fraction rounded up to one`, () => {
      // Eleven out, the first lost. Linux's snd_ssthresh is 11 x 717 / 1024 = 7 (CUBIC) or
      // 11 >> 1 = 5 (Reno) packets, where bytes hold 7.7 or 5.5 segments. Once the flight is down
      // to it, tcp_cwnd_reduction's room is 7 - 7 (5 - 5): nothing, and one on the next duplicate.
      // In bytes the 0.7 (0.5) segment left rounded up to a new segment a duplicate early.
      const o = passiveOpen(new Bench(), {}, { congestion: cc });
      const { b, conn } = o;
      const d = conn.state.delegated;
      const m = 1460;
      d.cwnd = 11 * m;
      conn.write(bytes(40 * m));
      assert.equal(b.take().filter((x) => x.data.length > 0).length, 11);
      const head = d.sndUna;
      let next = d.sndNxt;
      const sent: string[] = [];
      for (let k = 0; k < want.length; k++) {
        b.inject({ flags: ACK, seq: o.peerSeq, ack: head, window: 65535 });
        if (k === 2) assert.equal(d.ssthresh, cc === 'cubic' ? 11242 : 11 * 730);
        const out = b.take().filter((x) => x.data.length > 0);
        sent.push(
          out.map((x) => (x.h.seq === head ? 'head' : x.h.seq === next ? 'new' : 'old')).join('+') || '0',
        );
        for (const x of out) if (x.h.seq === next) next = add(next, x.data.length);
      }
      assert.deepEqual(sent, want);
    });
  }

  test("newreno: eight out of a window of ten: ssthresh is half the window, five, not half the flight (Linux's tcp_reno_ssthresh)", () => {
    // The application wrote eight segments; the first is lost. The third duplicate starts the
    // recovery with ssthresh 5 and the pipe at 8 - 3 - 1 = 4: the head goes, then the write finds
    // cwnd full, then each duplicate takes a segment out and PRR sends one back (room 5 - 4).
    // With half the flight (4) the fourth duplicate found no room.
    const o = passiveOpen(new Bench(), {}, { congestion: 'newreno' });
    const { b, conn } = o;
    const d = conn.state.delegated;
    const m = 1460;
    d.cwnd = 10 * m;
    conn.write(bytes(8 * m));
    assert.equal(b.take().filter((x) => x.data.length > 0).length, 8);
    const head = d.sndUna;
    let next = d.sndNxt;
    const sent: string[] = [];
    const name = (): void => {
      const out = b.take().filter((x) => x.data.length > 0);
      sent.push(
        out.map((x) => (x.h.seq === head ? 'head' : x.h.seq === next ? 'new' : 'old')).join('+') || '0',
      );
      for (const x of out) if (x.h.seq === next) next = add(next, x.data.length);
    };
    for (let k = 0; k < 8; k++) {
      b.inject({ flags: ACK, seq: o.peerSeq, ack: head, window: 65535 });
      if (k === 2) assert.equal(d.ssthresh, 5 * m);
      name();
      if (k === 2) {
        conn.write(bytes(20 * m));
        name();
      }
    }
    assert.deepEqual(sent, ['0', '0', 'head', '0', 'new', 'new', 'new', 'new', 'new']);
  });
});
