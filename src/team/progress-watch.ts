import type { Clock, Timer } from '../core/clock.ts';
import type { Counters } from '../core/counters.ts';
import { connKeyId, type Nic, type QueryResult } from '../nic/nic.ts';
import { isV6 } from '../stack/address-table.ts';
import { formatMac } from '../wire/addr.ts';
import type { NicHealth, ResolvedHealthOptions } from './health.ts';

/** What the watch needs of one team member. */
export interface WatchedMember {
  nic: Nic;
  health: NicHealth;
}

/** What the watch remembers of one connection between windows. */
interface ConnTrack {
  una: number;
  segmentsIn: number;
  /** Retransmissions counted when snd.una last moved (or the connection was first seen). */
  retransAtMove: number;
  /** When snd.una last moved, or the connection last had nothing outstanding (clock ms). */
  movedAt: number;
  /** When a segment last arrived for it (clock ms). */
  heardAt: number;
  /** Segments it had sent when a segment last arrived for it. */
  outAtHeard: number;
  /**
   * When a segment it sent after it last heard its peer was first seen (clock ms; Infinity while
   * everything it sent has been answered).
   */
  unansweredSince: number;
}

interface MemberTrack {
  conns: Map<string, ConnTrack>;
  /** Last window in which any of its connections was acknowledged or received a segment (clock ms). */
  progressAt: number;
  suspectWindows: number;
  mismatchWindows: number;
}

/** What one window found on one member. */
export interface MemberWindow {
  /** Connections with data outstanding. */
  active: number;
  /** Of those, stalled: snd.una stuck for stallMs with retransmissions meanwhile. */
  stalled: number;
  /** The oldest last acknowledgement among the stalled (clock ms). */
  stalledSince: number;
  /** Connections to a probe target whose destination MAC differs from the target's probe reply. */
  mismatched: number;
  /** Connections to a probe target whose destination MAC matches the target's probe reply. */
  matched: number;
  mismatchDetail: string;
}

/**
 * Failures probes cannot see (issue 10, item 5): a member whose ARP probes are answered but whose
 * connections no longer get acknowledged, or whose probe replies come from another MAC than the
 * one its connections send to. Every window it reads each member's connections (`Nic.query`: the
 * same for a LocalNic and a WorkerNic) and keeps, per connection, when snd.una last moved and how
 * many retransmissions it had then.
 *
 * A member is suspect when at least `stallMinConns`, and at least `stallFraction` of its
 * connections with data outstanding, have not been acknowledged for `stallMs` although they
 * retransmitted meanwhile (a retransmission timeout fired and went unanswered) and a segment
 * sent since their peer was last heard has had no answer for `stallMs` (a zero-window
 * connection counts only by its unanswered probes: a peer that does not read is probed minutes
 * apart in the end, and its silence between probes is no fault), when nothing at
 * all was acknowledged or heard on it in that time (a few flows in their own backed-off timeouts
 * on a member that still hears its peers are not its fault; a member whose peers' segments reach
 * it but whose own never reach them goes unseen by this rule), while another member's connections
 * progressed within that time: if every member stalls, the fault is beyond
 * the team (the peer, the path) and moving connections would not help. Suspect for
 * `progressWindows` windows in a row, it is declared failed ('progress') and its connections move,
 * as Protective ReRoute repaths a flow on its timeouts. Ordinary loss does not get there: one
 * timeout, answered, moves snd.una again long before `stallMs`.
 *
 * A MAC mismatch ('mac-mismatch') is judged the same way, for `progressWindows` windows, and only
 * when another member's connections to the target agree with its replies (or it has none that
 * disagree): a peer whose MAC legitimately changed shows on every member until the neighbor update
 * reaches them, and is no member's fault.
 */
export class ProgressWatch {
  private readonly tracks = new Map<Nic, MemberTrack>();
  private readonly timer: Timer;
  private busy = false;
  private closed = false;

  constructor(
    private readonly clock: Clock,
    private readonly opts: ResolvedHealthOptions,
    private readonly members: () => readonly WatchedMember[],
    private readonly counters: Counters,
    /** The 16 bytes of an IPv6 address handle of the host's table, to match NS probe answers. */
    private readonly address6: (handle: number) => Uint8Array | undefined = () => undefined,
  ) {
    this.timer = clock.createTimer(this.tick).unref();
    if (opts.progressWindowMs > 0) this.timer.arm(opts.progressWindowMs);
  }

  close(): void {
    this.closed = true;
    this.timer.disarm();
  }

  private readonly tick = (): void => {
    if (this.closed) return;
    this.timer.arm(this.opts.progressWindowMs);
    // A window whose queries have not come back yet is not judged twice.
    if (this.busy) return;
    const ms = this.members().filter((m) => m.nic.death === null && m.health.state !== 'dead');
    if (ms.length < 2) return;
    this.busy = true;
    void Promise.allSettled(ms.map((m) => m.nic.query()))
      .then((rs) => {
        if (this.closed) return;
        const now = this.clock.now();
        const seen: { m: WatchedMember; t: MemberTrack; w: MemberWindow }[] = [];
        for (let i = 0; i < ms.length; i++) {
          const r = rs[i]!;
          if (r.status !== 'fulfilled') continue;
          const m = ms[i]!;
          const t = this.trackOf(m.nic);
          seen.push({ m, t, w: this.observe(m, t, r.value, now) });
        }
        for (const s of seen) this.judge(s, seen, now);
      })
      .finally(() => {
        this.busy = false;
      });
  };

  private trackOf(nic: Nic): MemberTrack {
    let t = this.tracks.get(nic);
    if (t === undefined) {
      t = { conns: new Map(), progressAt: Number.NEGATIVE_INFINITY, suspectWindows: 0, mismatchWindows: 0 };
      this.tracks.set(nic, t);
    }
    return t;
  }

  private observe(m: WatchedMember, t: MemberTrack, rs: readonly QueryResult[], now: number): MemberWindow {
    const w: MemberWindow = {
      active: 0,
      stalled: 0,
      stalledSince: now,
      mismatched: 0,
      matched: 0,
      mismatchDetail: '',
    };
    const next = new Map<string, ConnTrack>();
    for (const r of rs) {
      const k = connKeyId(r.key);
      const prev = t.conns.get(k);
      const outstanding = r.sndMax !== r.sndUna;
      const heard = prev === undefined || prev.segmentsIn !== r.segmentsIn;
      if (prev !== undefined && (heard || prev.una !== r.sndUna)) t.progressAt = now;
      const heardAt = heard || prev === undefined ? now : prev.heardAt;
      const outAtHeard = heard || prev === undefined ? r.segmentsOut : prev.outAtHeard;
      // Silence alone is no fault: a peer that shut its window (it does not read) is probed at
      // exponentially backed-off intervals, as Linux does up to two minutes apart, and a flow
      // with nothing to send sends nothing to answer. What counts is a segment sent since the
      // peer was last heard that stays unanswered; it is first seen in this window at the latest.
      let unansweredSince = heard || prev === undefined ? Number.POSITIVE_INFINITY : prev.unansweredSince;
      if (unansweredSince === Number.POSITIVE_INFINITY && r.segmentsOut !== outAtHeard) unansweredSince = now;
      const unanswered = now - unansweredSince >= this.opts.stallMs;
      let c: ConnTrack;
      if (prev === undefined || prev.una !== r.sndUna || !outstanding)
        c = {
          una: r.sndUna,
          segmentsIn: r.segmentsIn,
          retransAtMove: r.retransmits,
          movedAt: now,
          heardAt,
          outAtHeard,
          unansweredSince,
        };
      else c = { ...prev, segmentsIn: r.segmentsIn, heardAt, outAtHeard, unansweredSince };
      next.set(k, c);
      if (outstanding && r.sndWnd > 0) {
        w.active++;
        if (now - c.movedAt >= this.opts.stallMs && r.retransmits > c.retransAtMove && unanswered) {
          w.stalled++;
          w.stalledSince = Math.min(w.stalledSince, c.movedAt);
        }
      } else if (r.sndWnd === 0 && r.sendQueued > 0) {
        // A closed window: the peer answers every window probe, so a closed window stays a
        // conversation however far apart the probes are; it is stalled when a probe goes unanswered.
        w.active++;
        if (unanswered) {
          w.stalled++;
          w.stalledSince = Math.min(w.stalledSince, c.heardAt);
        }
      }
      const replyMac = this.replyMacFor(m, r.key.remoteIp);
      if (replyMac !== undefined && r.dstMac >= 0) {
        if (replyMac === r.dstMac) w.matched++;
        else {
          w.mismatched++;
          w.mismatchDetail = `probe reply from ${formatMac(replyMac)}, frames sent to ${formatMac(r.dstMac)}`;
        }
      }
    }
    t.conns = next;
    return w;
  }

  /** Who answered the member's last probe of this peer (ARP or NS), if it is a probe target. */
  private replyMacFor(m: WatchedMember, remoteIp: number): number | undefined {
    if (!isV6(remoteIp)) return m.health.probeReplyMac(remoteIp);
    const bytes = this.address6(remoteIp);
    return bytes === undefined ? undefined : m.health.probeReplyMac6(bytes);
  }

  private judge(
    s: { m: WatchedMember; t: MemberTrack; w: MemberWindow },
    all: readonly { m: WatchedMember; t: MemberTrack; w: MemberWindow }[],
    now: number,
  ): void {
    const { m, t, w } = s;
    const o = this.opts;
    if (m.health.state !== 'up') {
      t.suspectWindows = 0;
      t.mismatchWindows = 0;
      return;
    }
    const others = all.filter((x) => x !== s && x.m.health.state === 'up');
    const progressElsewhere = others.some((x) => now - x.t.progressAt <= o.stallMs);
    // A member on which any connection was acknowledged or heard from lately still reaches its
    // peers: the few that stall are in their own timeouts (the tail of a thousand downloads left
    // two waiting out backed-off RTOs while the rest finished, and was taken for a gray failure).
    const quietHere = now - t.progressAt > o.stallMs;
    const stalled = w.stalled >= o.stallMinConns && w.stalled >= o.stallFraction * w.active;
    if (stalled) this.counters.inc('team.progress.stalled-window');
    t.suspectWindows = stalled && quietHere && progressElsewhere ? t.suspectWindows + 1 : 0;
    if (t.suspectWindows >= o.progressWindows) {
      t.suspectWindows = 0;
      m.health.gray(
        'progress',
        `${w.stalled} of ${w.active} connections unacknowledged for ${Math.round(now - w.stalledSince)} ms despite retransmitting, while another member's progressed`,
        w.stalledSince,
      );
      return;
    }
    // Alone in disagreeing: no other member's connections disagree with their replies.
    const mismatch = w.mismatched > 0 && others.length > 0 && others.every((x) => x.w.mismatched === 0);
    t.mismatchWindows = mismatch ? t.mismatchWindows + 1 : 0;
    if (t.mismatchWindows >= o.progressWindows) {
      t.mismatchWindows = 0;
      m.health.gray('mac-mismatch', w.mismatchDetail, now - o.progressWindowMs * o.progressWindows);
    }
  }
}
