import type { Clock, Timer } from '../core/clock.ts';
import type { Counters } from '../core/counters.ts';
import { type Nic, SCAN } from '../nic/nic.ts';
import { isV6 } from '../stack/address-table.ts';
import { formatMac } from '../wire/addr.ts';
import type { NicHealth, ResolvedHealthOptions } from './health.ts';

/** What the watch needs of one team member. */
export interface WatchedMember {
  nic: Nic;
  health: NicHealth;
}

/** What the watch remembers of one connection between windows (updated in place each window). */
interface ConnTrack {
  localIp: number;
  localPort: number;
  remoteIp: number;
  remotePort: number;
  /** The window that last saw it (tracks not seen in a window are forgotten). */
  seenIn: number;
  una: number;
  segmentsIn: number;
  /** Retransmissions counted when snd.una last moved (or the connection was first seen). */
  retransAtMove: number;
  /** Retransmissions and segments sent, as last seen. */
  retransmits: number;
  segmentsOut: number;
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
  /** By a hash of the four-tuple; a collision keeps a chain. */
  conns: Map<number, ConnTrack | ConnTrack[]>;
  window: number;
  /** Last window in which any of its connections was acknowledged or received a segment (clock ms). */
  progressAt: number;
  suspectWindows: number;
  mismatchWindows: number;
}

/**
 * The team's one receive port, as the watch sees it (TeamOptions.oneReceivePort): every member's
 * inbound segments come in through that one port, so a gray failure of it stalls every member.
 */
export interface ReceivePortHooks {
  /**
   * Every member stalls: hand the receive port to another healthy member (learning frame from
   * it). Returns the NIC that was the receive port, or null when one receive port is not in
   * effect or no other member can take it.
   */
  move(detail: string): Nic | null;
  /** Progress came back once the receive port left `old`: it fails to receive (its hold starts). */
  failed(old: Nic, detail: string): void;
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
  /** Weak: a restarted member's dead NIC, and its connections' tracks, go with the NIC. */
  private readonly tracks = new WeakMap<Nic, MemberTrack>();
  private readonly timer: Timer;
  private busy = false;
  private closed = false;
  /** Windows in a row in which every member stalled with no progress anywhere. */
  private allStallWindows = 0;
  /** The receive port was moved off `old` at `at` (clock ms); progress since then convicts it. */
  private trial: { old: Nic; at: number; detail: string } | null = null;
  /**
   * A move of the receive port brought no progress back: the fault is beyond the team (a dead
   * peer, the path), and no other move is tried until some progress is seen after this time.
   */
  private beyondAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly clock: Clock,
    private readonly opts: ResolvedHealthOptions,
    private readonly members: () => readonly WatchedMember[],
    private readonly counters: Counters,
    /** The 16 bytes of an IPv6 address handle of the host's table, to match NS probe answers. */
    private readonly address6: (handle: number) => Uint8Array | undefined = () => undefined,
    /** Whether the team is moving connections between members now (a failover, a failback). */
    private readonly moving: () => boolean = () => false,
    /** The team's one receive port, blamed when every member stalls (absent: none). */
    private readonly receivePort: ReceivePortHooks | null = null,
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
    // Nor is one taken while the team moves connections: what they did meanwhile says nothing
    // about a member (they are leaving it, or arriving), and the scan is no free look. On the
    // simulator's charged clock each scan of a member's 10,000 connections (10-40 ms of work on
    // the thread that also prods them) fell inside a carrier failover a dozen times, delaying the
    // last prods by as much. Windows count per scan, so a track resumes where it stood.
    if (this.moving()) {
      this.counters.inc('team.progress.skipped-moving');
      return;
    }
    const ms = this.members().filter((m) => m.nic.death === null && m.health.state !== 'dead');
    if (ms.length < 2) return;
    this.busy = true;
    void Promise.allSettled(ms.map((m) => m.nic.progressScan()))
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
        this.judgeReceivePort(seen, now);
      })
      .finally(() => {
        this.busy = false;
      });
  };

  private trackOf(nic: Nic): MemberTrack {
    let t = this.tracks.get(nic);
    if (t === undefined) {
      t = {
        conns: new Map(),
        window: 0,
        progressAt: Number.NEGATIVE_INFINITY,
        suspectWindows: 0,
        mismatchWindows: 0,
      };
      this.tracks.set(nic, t);
    }
    return t;
  }

  private observe(m: WatchedMember, t: MemberTrack, rows: Float64Array, now: number): MemberWindow {
    const w: MemberWindow = {
      active: 0,
      stalled: 0,
      stalledSince: now,
      mismatched: 0,
      matched: 0,
      mismatchDetail: '',
    };
    const win = ++t.window;
    for (let at = 0; at + SCAN.columns <= rows.length; at += SCAN.columns) {
      const una = rows[at + SCAN.sndUna]!;
      const segmentsIn = rows[at + SCAN.segmentsIn]!;
      const segmentsOut = rows[at + SCAN.segmentsOut]!;
      const retransmits = rows[at + SCAN.retransmits]!;
      const sndWnd = rows[at + SCAN.sndWnd]!;
      const outstanding = rows[at + SCAN.outstanding] === 1;
      let c = this.trackFor(t, rows, at);
      if (c !== undefined && c.seenIn !== win - 1) c = undefined;
      const heard = c === undefined || c.segmentsIn !== segmentsIn;
      if (c !== undefined && (heard || c.una !== una)) t.progressAt = now;
      const heardAt = heard || c === undefined ? now : c.heardAt;
      const outAtHeard = heard || c === undefined ? segmentsOut : c.outAtHeard;
      // Silence alone is no fault: a peer that shut its window (it does not read) is probed at
      // exponentially backed-off intervals, as Linux does up to two minutes apart, and a flow
      // with nothing to send sends nothing to answer. What counts is a segment sent since the
      // peer was last heard that stays unanswered; it is first seen in this window at the latest.
      let unansweredSince = heard || c === undefined ? Number.POSITIVE_INFINITY : c.unansweredSince;
      if (unansweredSince === Number.POSITIVE_INFINITY && segmentsOut !== outAtHeard) unansweredSince = now;
      const unanswered = now - unansweredSince >= this.opts.stallMs;
      const fresh = c === undefined;
      if (c === undefined) c = this.newTrack(t, rows, at);
      if (fresh || c.una !== una || !outstanding) {
        c.una = una;
        c.retransAtMove = retransmits;
        c.movedAt = now;
      }
      c.seenIn = win;
      c.segmentsIn = segmentsIn;
      c.retransmits = retransmits;
      c.segmentsOut = segmentsOut;
      c.heardAt = heardAt;
      c.outAtHeard = outAtHeard;
      c.unansweredSince = unansweredSince;
      if (outstanding && sndWnd > 0) {
        w.active++;
        if (now - c.movedAt >= this.opts.stallMs && retransmits > c.retransAtMove && unanswered) {
          w.stalled++;
          w.stalledSince = Math.min(w.stalledSince, c.movedAt);
        }
      } else if (sndWnd === 0 && rows[at + SCAN.sendQueued]! > 0) {
        // A closed window: the peer answers every window probe, so a closed window stays a
        // conversation however far apart the probes are; it is stalled when a probe goes unanswered.
        w.active++;
        if (unanswered) {
          w.stalled++;
          w.stalledSince = Math.min(w.stalledSince, c.heardAt);
        }
      }
      const dstMac = rows[at + SCAN.dstMac]!;
      const replyMac = this.replyMacFor(m, rows[at + SCAN.remoteIp]!);
      if (replyMac !== undefined && dstMac >= 0) {
        if (replyMac === dstMac) w.matched++;
        else {
          w.mismatched++;
          w.mismatchDetail = `probe reply from ${formatMac(replyMac)}, frames sent to ${formatMac(dstMac)}`;
        }
      }
    }
    // Connections this window did not see have closed or moved away.
    for (const [h, e] of t.conns) {
      if (!Array.isArray(e)) {
        if (e.seenIn !== win) t.conns.delete(h);
        continue;
      }
      const kept = e.filter((c) => c.seenIn === win);
      if (kept.length === 0) t.conns.delete(h);
      else t.conns.set(h, kept.length === 1 ? kept[0]! : kept);
    }
    return w;
  }

  private trackFor(t: MemberTrack, rows: Float64Array, at: number): ConnTrack | undefined {
    const e = t.conns.get(tupleHash(rows, at));
    if (e === undefined) return undefined;
    if (!Array.isArray(e)) return sameTuple(e, rows, at) ? e : undefined;
    return e.find((c) => sameTuple(c, rows, at));
  }

  private newTrack(t: MemberTrack, rows: Float64Array, at: number): ConnTrack {
    const c: ConnTrack = {
      localIp: rows[at + SCAN.localIp]!,
      localPort: rows[at + SCAN.localPort]!,
      remoteIp: rows[at + SCAN.remoteIp]!,
      remotePort: rows[at + SCAN.remotePort]!,
      seenIn: 0,
      una: 0,
      segmentsIn: 0,
      retransAtMove: 0,
      retransmits: 0,
      segmentsOut: 0,
      movedAt: 0,
      heardAt: 0,
      outAtHeard: 0,
      unansweredSince: Number.POSITIVE_INFINITY,
    };
    const h = tupleHash(rows, at);
    const e = t.conns.get(h);
    if (e === undefined) t.conns.set(h, c);
    else if (Array.isArray(e)) {
      // A stale track under this hash (not seen last window) gives its place.
      const i = e.findIndex((x) => sameTuple(x, rows, at));
      if (i >= 0) e[i] = c;
      else e.push(c);
    } else if (sameTuple(e, rows, at)) t.conns.set(h, c);
    else t.conns.set(h, [e, c]);
    return c;
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

  /**
   * Every member stalls at once. Without one receive port that is beyond the team: each member
   * has a path of its own to the peer, and all of them failing together is the peer or the path
   * past the switch. With one receive port every member's inbound shares that port, so a gray
   * failure of it (data dropped on its link while ARP passes) looks the same. The only way to tell
   * the two apart is to try: the receive port moves to another healthy member; if progress comes
   * back, the old port failed to receive (and the ordinary rule above then judges its member's own
   * sending, now that others progress); if it does not come back within a few stalls, the fault was
   * beyond the team and nothing more is tried until some progress is seen again, so a dead peer
   * does not send the receive port back and forth. Judged over `progressWindows` windows in a row,
   * as a member is: ordinary loss, which leaves some connection progressing somewhere, never gets here.
   */
  private judgeReceivePort(
    seen: readonly { m: WatchedMember; t: MemberTrack; w: MemberWindow }[],
    now: number,
  ): void {
    const hooks = this.receivePort;
    if (hooks === null) return;
    const o = this.opts;
    const up = seen.filter((x) => x.m.health.state === 'up');
    let progressAt = Number.NEGATIVE_INFINITY;
    for (const x of seen) progressAt = Math.max(progressAt, x.t.progressAt);
    const trial = this.trial;
    if (trial !== null) {
      if (progressAt > trial.at) {
        this.trial = null;
        this.allStallWindows = 0;
        hooks.failed(
          trial.old,
          `${trial.detail}; progress came back ${Math.round(progressAt - trial.at)} ms after the receive port left it`,
        );
        return;
      }
      // A few stalls: the connections' backed-off retransmissions (and the peer's) need time to
      // come around and find the new port.
      if (now - trial.at < 3 * o.stallMs) return;
      this.trial = null;
      this.beyondAt = now;
      this.allStallWindows = 0;
      this.counters.inc('team.receive-port.beyond');
      return;
    }
    if (progressAt <= this.beyondAt) return;
    let active = 0;
    let stalled = 0;
    let since = now;
    for (const x of up) {
      active += x.w.active;
      stalled += x.w.stalled;
      if (x.w.stalled > 0) since = Math.min(since, x.w.stalledSince);
    }
    const all =
      up.length >= 2 &&
      now - progressAt > o.stallMs &&
      stalled >= o.stallMinConns &&
      stalled >= o.stallFraction * active;
    this.allStallWindows = all ? this.allStallWindows + 1 : 0;
    if (this.allStallWindows < o.progressWindows) return;
    this.allStallWindows = 0;
    const detail = `${stalled} of ${active} connections on every member unacknowledged for ${Math.round(now - since)} ms despite retransmitting`;
    const old = hooks.move(detail);
    if (old === null) {
      // Nothing to try: the same as a move that brought nothing back.
      this.beyondAt = now;
      return;
    }
    this.counters.inc('team.receive-port.moved');
    this.trial = { old, at: now, detail };
    // Every connection's inbound takes a new path now: what each suffered on the old one says
    // nothing of it, and a member is judged afresh, on retransmissions sent from now on. Else the
    // first member to hear through the new port would get the others declared failed before
    // their backed-off retransmissions came around to find it (the old port's member among them,
    // when its port fails only to receive).
    for (const x of seen)
      for (const e of x.t.conns.values()) for (const c of Array.isArray(e) ? e : [e]) restart(c, now);
  }
}

/** Judge a connection afresh from `now`, as if snd.una had just moved and its peer just spoken. */
function restart(c: ConnTrack, now: number): void {
  c.movedAt = now;
  c.retransAtMove = c.retransmits;
  c.outAtHeard = c.segmentsOut;
  c.heardAt = now;
  c.unansweredSince = Number.POSITIVE_INFINITY;
}

function tupleHash(rows: Float64Array, at: number): number {
  // Ports and the low bits of the addresses (IPv6 handles differ in their low bits as well).
  const lo = (rows[at + SCAN.localPort]! << 16) | rows[at + SCAN.remotePort]!;
  return (
    (lo ^
      Math.imul((rows[at + SCAN.remoteIp]! % 0x40000000) | 0, 0x9e3779b1) ^
      ((rows[at + SCAN.localIp]! % 0x40000000) | 0)) >>>
    0
  );
}

function sameTuple(c: ConnTrack, rows: Float64Array, at: number): boolean {
  return (
    c.remotePort === rows[at + SCAN.remotePort] &&
    c.localPort === rows[at + SCAN.localPort] &&
    c.remoteIp === rows[at + SCAN.remoteIp] &&
    c.localIp === rows[at + SCAN.localIp]
  );
}
