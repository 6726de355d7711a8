/**
 * Gray failures on the simulator: a member whose ARP probes are answered but whose data frames
 * vanish, a member whose probe replies come from another MAC than its connections send to, and a
 * healthy member under ordinary loss that must not be declared failed.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { VirtualClock } from '../../src/core/clock.ts';
import { Counters } from '../../src/core/counters.ts';
import type { RxOffloadInfo } from '../../src/link/link.ts';
import { packScan, type QueryResult } from '../../src/nic/nic.ts';
import { decodeNdFrame, encodeNdFrame, ND_FRAME_MAX } from '../../src/stack/nd-frame.ts';
import { resolveHealthOptions } from '../../src/team/health.ts';
import { ProgressWatch, type WatchedMember } from '../../src/team/progress-watch.ts';
import { readU16, writeMac } from '../../src/wire/addr.ts';
import { ArpOp } from '../../src/wire/arp.ts';
import { EtherType } from '../../src/wire/ethernet.ts';
import { ethDst } from '../../src/wire/fields.ts';
import { Icmpv6Type } from '../../src/wire/icmpv6.ts';
import { createIpv6Header } from '../../src/wire/ipv6.ts';
import { createNdMessage } from '../../src/wire/ndp.ts';
import { assertClean, runScenario, type ScenarioOptions, type ScenarioResult } from './scenario.ts';
import { PEER_IP6, WrappedLink } from './team-sim.ts';

/**
 * A member's port with a fault only frames of one kind see: ARP passes, everything else can be
 * dropped (a filter that drops the data and lets the probes through), and ARP replies can be
 * rewritten to come from another MAC (a second device answering for the peer on that port).
 */
class GrayLink extends WrappedLink {
  dropData = false;
  /** Only what arrives on the port is dropped (ARP still passes): the port fails to receive. */
  dropDataIn = false;
  fakeReplyMac = -1;
  dropped = 0;
  protected override rx(f: Uint8Array, info?: RxOffloadInfo): void {
    if ((this.dropData || this.dropDataIn) && !isArp(f)) {
      this.dropped++;
      return;
    }
    if (this.fakeReplyMac >= 0 && isArp(f) && readU16(f, 14 + 6) === ArpOp.REPLY) {
      const c = f.slice();
      writeMac(c, 6, this.fakeReplyMac);
      writeMac(c, 14 + 8, this.fakeReplyMac);
      this.handler?.(c, info);
      return;
    }
    this.handler?.(f, info);
  }
  override send(f: Uint8Array): boolean {
    if (this.dropData && !isArp(f)) {
      this.dropped++;
      return true;
    }
    return this.inner.send(f);
  }
}

/**
 * A member's port on which the peer's neighbor advertisements arrive as if another device sent
 * them: source MAC and target link-layer address rewritten, checksum still good.
 */
class NaRewriteLink extends WrappedLink {
  fakeNaMac = -1;
  rewritten = 0;
  private readonly ip = createIpv6Header();
  private readonly nd = createNdMessage();
  private readonly out = new Uint8Array(ND_FRAME_MAX);
  protected override rx(f: Uint8Array, info?: RxOffloadInfo): void {
    const { ip, nd } = this;
    if (
      this.fakeNaMac >= 0 &&
      decodeNdFrame(f, ip, nd) &&
      nd.type === Icmpv6Type.NEIGHBOR_ADVERTISEMENT &&
      nd.targetLla >= 0
    ) {
      const msg = {
        type: nd.type,
        router: nd.router,
        solicited: nd.solicited,
        override: nd.override,
        target: nd.target.slice(),
        targetLla: this.fakeNaMac,
      };
      const n = encodeNdFrame(
        {
          dstMac: ethDst(f),
          srcMac: this.fakeNaMac,
          vlanId: -1,
          src: ip.src.slice(),
          dst: ip.dst.slice(),
          msg,
        },
        this.out,
      );
      assert.ok(n > 0);
      this.rewritten++;
      this.handler?.(this.out.slice(0, n), info);
      return;
    }
    this.handler?.(f, info);
  }
}

function isArp(f: Uint8Array): boolean {
  return f.length >= 14 && readU16(f, 12) === EtherType.ARP;
}

/** Scaled to the simulator's 20 ms minimum RTO as the defaults are to 200 ms: windows of 20 ms, a stall of 100 ms. */
const HEALTH = { progressWindowMs: 20, stallMs: 100, progressWindows: 2 };
const BASE = { seed: 7, nics: 2, conns: 8, bytes: 2_000_000, rateBps: 2e7, limitMs: 60_000, health: HEALTH };

/** A scenario whose member `nic` turns gray (`fault`) 30 ms after the streams start. */
function grayScenario(
  nic: number,
  fault: (g: GrayLink, all: readonly GrayLink[]) => void,
  more: Partial<ScenarioOptions> = {},
): Promise<ScenarioResult & { links: GrayLink[] }> {
  const links: GrayLink[] = [];
  return runScenario({
    ...BASE,
    ...more,
    wrapPort: (p) => {
      const g = new GrayLink(p);
      links.push(g);
      return g;
    },
    onStart: (rig, t0) => {
      more.onStart?.(rig, t0);
      rig.net.clock.createTimer(() => fault(links[nic]!, links)).armAt(t0 + 30);
    },
  }).then((r) => ({ ...r, links }));
}

describe('gray failures the probes cannot see (simulator)', () => {
  // Both ways: with one receive port (the default) member 0 is also the receive port, and the
  // port moves before its member is judged; without it, the member rule alone decides.
  for (const oneReceivePort of [true, false])
    test(`data blackholed on one member while ARP passes: declared failed for lack of progress, connections moved (one receive port: ${oneReceivePort})`, async () => {
      const r = await grayScenario(
        0,
        (g) => {
          g.dropData = true;
        },
        { oneReceivePort },
      );
      assertClean(r);
      const fs = r.rig.team.failovers;
      assert.equal(fs.length, 1, `one failover, got ${JSON.stringify(fs.map((f) => f.cause))}`);
      const f = fs[0]!;
      assert.equal(f.nic, 'team.nic0');
      assert.equal(f.cause, 'progress');
      assert.ok(f.connections > 0, 'the gray member carried connections');
      assert.deepEqual(f.to, ['team.nic1']);
      assert.equal(f.lost, 0);
      assert.ok(r.links[0]!.dropped > 0, 'the filter dropped data');
      assert.equal(r.rig.counters.get('team.fail.reachability'), 0, 'the probes never saw it');
      assert.ok(r.rig.nics[0]!.linkUp);
    });

  test('probe replies from another MAC than the connections send to: declared failed (mac-mismatch)', async () => {
    const r = await grayScenario(1, (g) => {
      g.fakeReplyMac = 0x02000000ee01;
    });
    assertClean(r);
    const fs = r.rig.team.failovers;
    assert.equal(fs.length, 1);
    assert.equal(fs[0]!.nic, 'team.nic1');
    assert.equal(fs[0]!.cause, 'mac-mismatch');
    assert.match(fs[0]!.detail, /02:00:00:00:ee:01/);
    assert.deepEqual(fs[0]!.to, ['team.nic0']);
    assert.equal(fs[0]!.lost, 0);
  });

  test('over IPv6: NS probe answers from another MAC than the IPv6 connections send to: declared failed (mac-mismatch)', async () => {
    const links: NaRewriteLink[] = [];
    const r = await runScenario({
      ...BASE,
      mixed: true,
      // Only NS probes: the IPv4 half of the connections has no probe answer to compare with.
      probeTargets: [PEER_IP6],
      wrapPort: (p) => {
        const l = new NaRewriteLink(p);
        links.push(l);
        return l;
      },
      onStart: (rig, t0) => {
        rig.net.clock
          .createTimer(() => {
            links[1]!.fakeNaMac = 0x02000000ee06;
          })
          .armAt(t0 + 30);
      },
    });
    assertClean(r);
    assert.ok(links[1]!.rewritten > 0, 'answers were rewritten');
    const fs = r.rig.team.failovers;
    assert.equal(fs.length, 1, JSON.stringify(fs.map((f) => [f.nic, f.cause, f.detail])));
    assert.equal(fs[0]!.nic, 'team.nic1');
    assert.equal(fs[0]!.cause, 'mac-mismatch');
    assert.match(fs[0]!.detail, /02:00:00:00:ee:06/);
    assert.equal(fs[0]!.lost, 0);
  });

  test('a healthy member under 2 % loss (the other one lossless) is never declared failed', async () => {
    let timeouts = 0;
    for (const seed of [7, 8, 9]) {
      const r = await runScenario({
        ...BASE,
        seed,
        // Loss on member 0's port only: its connections retransmit while member 1's progress,
        // which is exactly the comparison the watch makes.
        wrapPort: (p, i) => {
          if (i === 0) p.impair({ loss: 0.02 });
          return p;
        },
      });
      assertClean(r);
      assert.deepEqual(
        r.rig.team.failovers.map((f) => f.cause),
        [],
        `seed ${seed}`,
      );
      // With one receive port (the default) member 0 receives for both: its loss is every
      // member's, and still some connection progresses somewhere, so the port never moves.
      assert.equal(r.rig.counters.get('team.receive-port.moved'), 0, `seed ${seed}`);
      const rtx = r.rig.nics[0]!.counters.get('tcp.retransmits');
      assert.ok(rtx > 0, `seed ${seed}: the loss cost member 0 retransmissions`);
      timeouts += r.rig.nics[0]!.counters.get('tcp.rto');
    }
    // Retransmission timeouts did fire on the lossy member: each was answered while its other
    // connections progressed, so none made it suspect for long enough.
    assert.ok(timeouts > 0, 'the loss cost member 0 retransmission timeouts');
  });
});

describe('one receive port: every member stalls when that port is gray (simulator)', () => {
  // The default; said here so that these cases keep one receive port whatever the default becomes.
  const ONE = { oneReceivePort: true };

  test('data blackholed on the receive port while ARP passes: the receive port moves, then its member fails over', async () => {
    let receiver = '';
    const r = await grayScenario(
      0,
      (g) => {
        g.dropData = true;
      },
      {
        ...ONE,
        onStart: (rig) => {
          receiver = rig.team.hostNic?.id ?? '';
        },
      },
    );
    assertClean(r);
    assert.equal(receiver, 'team.nic0', 'the gray member was the receive port');
    const c = r.rig.counters;
    assert.equal(c.get('team.receive-port.moved'), 1);
    assert.equal(c.get('team.receive-port.failed'), 1, 'progress came back once it moved');
    assert.equal(r.rig.team.hostNic?.id, 'team.nic1');
    const fs = r.rig.team.failovers;
    assert.equal(fs.length, 1, `one failover, got ${JSON.stringify(fs.map((f) => f.cause))}`);
    assert.equal(fs[0]!.nic, 'team.nic0');
    assert.equal(fs[0]!.cause, 'progress');
    assert.deepEqual(fs[0]!.to, ['team.nic1']);
    assert.equal(fs[0]!.lost, 0);
    assert.equal(c.get('team.fail.reachability'), 0, 'the probes never saw it');
  });

  test('the receive port fails to receive only: it moves, the old port is failed for receive, its member keeps its connections', async () => {
    const r = await grayScenario(
      0,
      (g) => {
        g.dropDataIn = true;
      },
      ONE,
    );
    assertClean(r);
    const c = r.rig.counters;
    assert.ok(r.links[0]!.dropped > 0, 'the filter dropped inbound data');
    assert.equal(c.get('team.receive-port.moved'), 1);
    assert.equal(c.get('team.receive-port.failed'), 1);
    assert.equal(r.rig.team.hostNic?.id, 'team.nic1');
    // Its own sending works, and its inbound now comes through the new receive port.
    assert.deepEqual(
      r.rig.team.failovers.map((f) => f.cause),
      [],
    );
  });

  test('a dead peer (every member blackholed) moves the receive port once, never back and forth', async () => {
    let links: readonly GrayLink[] = [];
    const moves: string[] = [];
    const r = await grayScenario(
      0,
      (_, all) => {
        links = all;
        for (const g of all) g.dropData = true;
      },
      {
        ...ONE,
        onStart: (rig, t0) => {
          rig.team.on('receive-port', (e: { from: string; to: string }) => moves.push(`${e.from}>${e.to}`));
          // Thirty stalls long: a watch that kept trying would have moved the port many times.
          rig.net.clock
            .createTimer(() => {
              for (const g of links) g.dropData = false;
            })
            .armAt(t0 + 3030);
        },
      },
    );
    assertClean(r);
    const c = r.rig.counters;
    assert.ok(links[0]!.dropped > 0 && links[1]!.dropped > 0);
    assert.deepEqual(moves, ['team.nic0>team.nic1']);
    assert.equal(c.get('team.receive-port.moved'), 1);
    assert.equal(c.get('team.receive-port.beyond'), 1, 'the move brought nothing back');
    assert.equal(c.get('team.receive-port.failed'), 0);
    // Nothing failed while the peer was dead. (Once it came back, the member that heard first got
    // the other declared failed while that one's retransmissions, backed off over three seconds,
    // had not come around yet: the watch's own rule, with or without one receive port.)
    const dead = r.rig.team.failovers.filter((f) => f.at < r.startedAt + 3030);
    assert.deepEqual(
      dead.map((f) => [f.nic, f.cause, f.at]),
      [],
    );
  });
});

describe('the progress watch judges a member, not a flow', () => {
  /** A member whose connections read as `rows` gives, and whose gray verdicts land in `verdicts`. */
  const member = (id: string, rows: () => QueryResult[], verdicts: string[]) =>
    ({
      nic: { id, death: null, progressScan: async () => packScan(rows()) },
      health: {
        state: 'up',
        probeReplyMac: () => undefined,
        gray: (cause: string, detail: string) => verdicts.push(`${id}: ${cause}: ${detail}`),
      },
    }) as unknown as WatchedMember;
  /** One connection's query row: 4,000 bytes outstanding on an open window, unless `over` says otherwise. */
  const row = (port: number, over: Partial<QueryResult>): QueryResult =>
    ({
      key: { localIp: 1, localPort: port, remoteIp: 2, remotePort: 80 },
      state: 4,
      sndUna: 1000,
      sndNxt: 5000,
      sndMax: 5000,
      rcvNxt: 1,
      sndWnd: 65535,
      cwnd: 14480,
      srtt: 1,
      sendQueued: 4000,
      recvQueued: 0,
      mtu: 1500,
      dstMac: -1,
      bytesIn: 0,
      bytesOut: 0,
      segmentsIn: 0,
      segmentsOut: 0,
      retransmits: 0,
      ...over,
    }) as QueryResult;

  /**
   * Two members read by a watch on a virtual clock: member A has two connections whose snd.una
   * is stuck while they retransmit, and a third whose segments keep arriving when `heard`; member
   * B's one connection keeps being acknowledged. Returns the gray verdicts A drew.
   */
  async function watchA(heard: boolean): Promise<string[]> {
    const clock = new VirtualClock();
    const opts = resolveHealthOptions({ progressWindowMs: 20, stallMs: 100, progressWindows: 2 });
    let window = 0;
    const verdicts: string[] = [];
    const a = member(
      'A',
      () => [
        row(1, { retransmits: window, segmentsOut: window }),
        row(2, { retransmits: window, segmentsOut: window }),
        // Nothing outstanding, but the peer keeps talking on it (or not).
        row(3, { sndNxt: 1000, sndMax: 1000, sendQueued: 0, segmentsIn: heard ? window : 0 }),
      ],
      verdicts,
    );
    const b = member('B', () => [row(4, { sndUna: 1000 + window * 100 })], verdicts);
    const watch = new ProgressWatch(clock, opts, () => [a, b], new Counters());
    for (window = 0; window < 30; window++) {
      clock.advance(20);
      await new Promise((r) => setImmediate(r));
    }
    watch.close();
    return verdicts;
  }

  test('flows stuck in their own timeouts on a member that still hears its peers: not a gray failure', async () => {
    assert.deepEqual(await watchA(true), []);
  });

  test('the same flows on a member that hears nothing at all: declared failed for lack of progress', async () => {
    const v = await watchA(false);
    assert.equal(v.length >= 1, true, 'declared failed');
    assert.match(v[0]!, /^A: progress: 2 of 2 connections unacknowledged/);
  });

  /**
   * Member A's one connection faces a shut window (its peer does not read): zero-window probes at
   * backed-off intervals, 40 ms doubling to 640 ms, far beyond twice `stallMs` (100 ms), each
   * answered unless `answeredUntil` has passed. Member B's connection keeps being acknowledged.
   */
  async function zeroWindowA(answeredUntil: number): Promise<string[]> {
    const clock = new VirtualClock();
    const opts = resolveHealthOptions({ progressWindowMs: 20, stallMs: 100, progressWindows: 2 });
    const probes = [20, 60, 140, 300, 620, 1260];
    const sent = (t: number): number => probes.filter((p) => p <= t).length;
    const answered = (t: number): number => probes.filter((p) => p <= t && p <= answeredUntil).length;
    const verdicts: string[] = [];
    const a = member(
      'A',
      () => {
        const t = clock.now();
        // One probe byte out, the rest waiting for the window.
        return [
          row(1, {
            sndNxt: 1001,
            sndMax: 1001,
            sndWnd: 0,
            sendQueued: 200_000,
            segmentsOut: sent(t),
            segmentsIn: answered(t),
          }),
        ];
      },
      verdicts,
    );
    const b = member(
      'B',
      () => {
        const t = clock.now();
        const una = 1000 + t * 10;
        return [
          row(2, {
            sndWnd: 65535,
            sndUna: una,
            sndNxt: una + 8000,
            sndMax: una + 8000,
            segmentsIn: t,
            segmentsOut: t,
          }),
        ];
      },
      verdicts,
    );
    const watch = new ProgressWatch(clock, opts, () => [a, b], new Counters());
    for (let i = 0; i < 70; i++) {
      clock.advance(20);
      await new Promise((r) => setImmediate(r));
    }
    watch.close();
    return verdicts;
  }

  test('a peer that does not read: answered zero-window probes, however far apart, are not a gray failure', async () => {
    assert.deepEqual(await zeroWindowA(Number.POSITIVE_INFINITY), []);
  });

  test('zero-window probes that go unanswered on a member while another progresses: declared failed', async () => {
    const v = await zeroWindowA(140);
    assert.equal(v.length >= 1, true, 'declared failed');
    assert.match(v[0]!, /^A: progress: 1 of 1 connections unacknowledged/);
  });
});
