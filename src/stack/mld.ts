import type { Clock, Timer } from '../core/clock.ts';
import type { Counters } from '../core/counters.ts';
import type { Random } from '../core/random.ts';
import {
  copyIpv6,
  createIpv6,
  formatIpv6,
  ipv6MulticastMac,
  isIpv6LinkLocal,
  parseIpv6,
} from '../wire/addr.ts';
import { EtherType } from '../wire/ethernet.ts';
import {
  createIpv6Header,
  encodeIpv6,
  IPV6_HEADER_LENGTH,
  IPV6_MIN_MTU,
  type Ipv6Header,
  Ipv6Next,
} from '../wire/ipv6.ts';
import {
  createMldMessage,
  decodeMld,
  encodeMldReport,
  encodeMldV1,
  MldRecordType,
  MldType,
  mldReportLength,
} from '../wire/mld.ts';
import { decodeDropNames, type StackInterface } from './interface.ts';
import { positive, positiveInt } from './neighbor.ts';

/*
 * Multicast listener discovery for the groups the host joins (RFC 3810, MLDv2, with the MLDv1
 * compatibility of its section 8): every solicited-node group of our addresses, and any other the
 * IPv6 layer joins. Without it a bridge or switch that snoops MLD (Linux's multicast_snooping with
 * a querier on the segment) learns no listener for our solicited-node groups and stops forwarding
 * the neighbor solicitations sent to them: nobody can resolve our address.
 *
 * - A join or leave sends a state change report at once (TO_EX {} or TO_IN {}: this host never
 *   filters sources) and repeats it [robustness - 1] times at random moments within the
 *   unsolicited report interval (6.1). The IPv6 layer joins a tentative address's solicited-node
 *   group before it sends the first DAD probe, so the report precedes the solicitation as
 *   RFC 4862 5.4.2 requires; while no link-local address is usable, reports come from :: (5.2.13).
 * - Queries are answered after a random part of their maximum response delay (6.2): a general
 *   query with the current state of every group, a multicast address-specific one with that
 *   group's. A multicast address and source specific query is answered like the latter: our state
 *   is EXCLUDE {} for every group, which covers any source list the querier asks about.
 * - An MLDv1 query puts the interface into MLDv1 compatibility for the older version querier
 *   present timeout (8.2, 9.12): reports become MLDv1 reports to the group, leaves MLDv1 dones
 *   to all-routers.
 * - When the link comes back (`resend`, from the stack's carrier handler) every group is reported
 *   again like a fresh join: a snooping bridge drops a port's memberships when its link goes down.
 * - All-nodes (ff02::1) and groups of scope 0 or 1 are never reported (RFC 3810 6).
 *
 * Queries are taken only from a link-local source with hop limit 1 and a router alert (5.1.14,
 * RFC 3810 5); anything else MLD is counted and dropped. Reports from other listeners need no
 * answer in MLDv2 (no suppression), and MLDv1 suppression is optional: they are counted only.
 */

export interface MldOptions {
  /** Send reports and answer queries (default true). */
  enabled?: boolean;
  /** Robustness variable until a query says otherwise (default 2, RFC 3810 9.1). */
  robustness?: number;
  /** Unsolicited report interval (default 1000 ms, RFC 3810 9.11). */
  unsolicitedIntervalMs?: number;
}

export interface MldContext {
  clock: Clock;
  random: Random;
  counters: Counters;
  /** The interface's usable link-local address, or null while it is tentative. */
  linkLocal(iface: StackInterface): Uint8Array | null;
}

const ALL_MLDV2_ROUTERS = parseIpv6('ff02::16');
const ALL_ROUTERS = parseIpv6('ff02::2');
const ALL_NODES = parseIpv6('ff02::1');
const UNSPECIFIED = createIpv6();
/** Query interval (9.2) for the older version querier present timeout. */
const QUERY_INTERVAL_MS = 125_000;
const DROP = decodeDropNames('mld');
/** Hop-by-hop header: next header ICMPv6, length 0, router alert (RFC 2711) value 0 (MLD), PadN. */
const HOP_BY_HOP = [Ipv6Next.ICMPV6, 0, 5, 2, 0, 0, 1, 0];

interface Group {
  readonly addr: Uint8Array;
  refs: number;
  /** Answer to a multicast address-specific query. */
  readonly timer: Timer;
}

interface Change {
  readonly addr: Uint8Array;
  /** CHANGE_TO_EXCLUDE (join) or CHANGE_TO_INCLUDE (leave). */
  type: number;
  /** Transmissions still owed. */
  left: number;
}

class MldIface {
  readonly groups = new Map<string, Group>();
  readonly changes = new Map<string, Change>();
  /** Retransmits pending state changes. */
  readonly changeTimer: Timer;
  /** Answers a general query. */
  readonly generalTimer: Timer;
  robustness: number;
  /** Clock time until which an MLDv1 querier is taken to be present. */
  v1Until = Number.NEGATIVE_INFINITY;
  constructor(
    readonly iface: StackInterface,
    robustness: number,
    clock: Clock,
    onChange: (m: MldIface) => void,
    onGeneral: (m: MldIface) => void,
  ) {
    this.robustness = robustness;
    this.changeTimer = clock.createTimer(() => onChange(this)).unref();
    this.generalTimer = clock.createTimer(() => onGeneral(this)).unref();
  }
}

export class Mld {
  private readonly ifs = new Map<StackInterface, MldIface>();
  private readonly enabled: boolean;
  private readonly robustness: number;
  private readonly uriMs: number;
  private readonly msg = createMldMessage();
  private readonly txIp = createIpv6Header();

  constructor(
    private readonly ctx: MldContext,
    opts: MldOptions = {},
  ) {
    this.enabled = opts.enabled ?? true;
    this.robustness = positiveInt(opts.robustness, 2, 'ipv6.mld.robustness');
    this.uriMs = positive(opts.unsolicitedIntervalMs, 1000, 'ipv6.mld.unsolicitedIntervalMs');
  }

  /** The groups reported on `iface` (RFC 5952 text), for status and tests. */
  groups(iface: StackInterface): string[] {
    return [...(this.ifs.get(iface)?.groups.values() ?? [])].map((g) => formatIpv6(g.addr));
  }

  /** The IPv6 layer joined `group` on `iface` (counted: only the first join is reported). */
  join(iface: StackInterface, group: Uint8Array): void {
    if (!this.enabled || !reportable(group)) return;
    const m = this.ifaceOf(iface);
    const key = formatIpv6(group);
    const g = m.groups.get(key);
    if (g) {
      g.refs++;
      return;
    }
    const addr = createIpv6();
    copyIpv6(addr, 0, group, 0);
    const ng: Group = {
      addr,
      refs: 1,
      timer: this.ctx.clock.createTimer(() => this.answerGroup(m, ng)).unref(),
    };
    m.groups.set(key, ng);
    this.change(m, key, addr, MldRecordType.CHANGE_TO_EXCLUDE);
  }

  /** The IPv6 layer left `group` on `iface`: reported once nothing else holds it. */
  leave(iface: StackInterface, group: Uint8Array): void {
    if (!this.enabled || !reportable(group)) return;
    const m = this.ifs.get(iface);
    const key = formatIpv6(group);
    const g = m?.groups.get(key);
    if (!m || !g) return;
    if (--g.refs > 0) return;
    g.timer.disarm();
    m.groups.delete(key);
    this.change(m, key, g.addr, MldRecordType.CHANGE_TO_INCLUDE);
  }

  /**
   * An MLD message (the ICMPv6 message at frame[h.payloadOffset], checksum already verified) came
   * in on `iface`. Counts exactly one `accept.mld.*` or `drop.mld.*`.
   */
  input(iface: StackInterface, frame: Uint8Array, h: Ipv6Header): void {
    const c = this.ctx.counters;
    const q = this.msg;
    const err = decodeMld(frame, h.payloadOffset, h.payloadLen, q);
    if (err !== null) {
      c.inc(DROP[err]);
      return;
    }
    if (q.type !== MldType.QUERY) {
      // Other listeners' reports: MLDv2 has no suppression; MLDv1's is optional (RFC 2710 4).
      c.inc('accept.mld.report');
      return;
    }
    if (!isIpv6LinkLocal(h.src) || h.hopLimit !== 1 || h.routerAlert !== 0) {
      c.inc('drop.mld.bad-query');
      return;
    }
    const m = this.ifs.get(iface);
    if (!this.enabled || !m) {
      c.inc('accept.mld.query');
      return;
    }
    const now = this.ctx.clock.now();
    if (q.version === 1) {
      // 9.12: older version querier present timeout; an MLDv1 query's delay is the QRI.
      m.v1Until = now + m.robustness * QUERY_INTERVAL_MS + q.maxResponseMs;
    } else if (q.qrv > 0) m.robustness = q.qrv;
    const at = now + this.ctx.random.float() * q.maxResponseMs;
    const general = q.group.every((b) => b === 0);
    c.inc(general ? 'accept.mld.general-query' : 'accept.mld.group-query');
    // 6.2: an answer already due sooner for everything covers this query.
    if (m.generalTimer.armed && m.generalTimer.deadline <= at) return;
    if (general) {
      m.generalTimer.armAt(at);
      return;
    }
    const g = m.groups.get(formatIpv6(q.group));
    if (!g) return;
    if (!g.timer.armed || g.timer.deadline > at) g.timer.armAt(at);
  }

  close(): void {
    for (const m of this.ifs.values()) {
      m.changeTimer.disarm();
      m.generalTimer.disarm();
      for (const g of m.groups.values()) g.timer.disarm();
    }
  }

  private ifaceOf(iface: StackInterface): MldIface {
    let m = this.ifs.get(iface);
    if (!m) {
      m = new MldIface(
        iface,
        this.robustness,
        this.ctx.clock,
        (x) => this.retransmit(x),
        (x) => this.answerGeneral(x),
      );
      this.ifs.set(iface, m);
    }
    return m;
  }

  private v1(m: MldIface): boolean {
    return m.v1Until > this.ctx.clock.now();
  }

  /**
   * The link under `iface` came back: a snooping bridge forgets the memberships of a port whose
   * link went down, so every group is reported again as if just joined, as Linux does when an
   * interface comes up (ipv6_mc_up). Returns the number of groups reported.
   */
  resend(iface: StackInterface): number {
    const m = this.ifs.get(iface);
    if (!this.enabled || !m || m.groups.size === 0) return 0;
    const chs: Change[] = [];
    for (const [key, g] of m.groups) {
      const ch: Change = { addr: g.addr, type: MldRecordType.CHANGE_TO_EXCLUDE, left: m.robustness };
      m.changes.set(key, ch);
      chs.push(ch);
    }
    this.startChanges(m, chs);
    this.ctx.counters.inc('mld.resend');
    return chs.length;
  }

  /** A state change: report it now, owe robustness - 1 more. A later change of a group replaces it. */
  private change(m: MldIface, key: string, addr: Uint8Array, type: number): void {
    const ch: Change = { addr, type, left: m.robustness };
    m.changes.set(key, ch);
    this.startChanges(m, [ch]);
  }

  private startChanges(m: MldIface, chs: Change[]): void {
    this.sendChanges(m, chs);
    for (const [k, ch] of m.changes) if (ch.left <= 0) m.changes.delete(k);
    if (m.changes.size > 0 && !m.changeTimer.armed) m.changeTimer.arm(this.ctx.random.float() * this.uriMs);
  }

  private retransmit(m: MldIface): void {
    const due = [...m.changes.values()];
    this.sendChanges(m, due);
    for (const [k, ch] of m.changes) if (ch.left <= 0) m.changes.delete(k);
    if (m.changes.size > 0) m.changeTimer.arm(this.ctx.random.float() * this.uriMs);
  }

  private sendChanges(m: MldIface, chs: Change[]): void {
    for (const ch of chs) ch.left--;
    if (!this.v1(m)) {
      const join = chs.filter((ch) => ch.type === MldRecordType.CHANGE_TO_EXCLUDE).map((ch) => ch.addr);
      const leave = chs.filter((ch) => ch.type === MldRecordType.CHANGE_TO_INCLUDE).map((ch) => ch.addr);
      this.report(m, MldRecordType.CHANGE_TO_EXCLUDE, join);
      this.report(m, MldRecordType.CHANGE_TO_INCLUDE, leave);
      return;
    }
    for (const ch of chs) {
      if (ch.type === MldRecordType.CHANGE_TO_EXCLUDE) this.sendV1(m, MldType.V1_REPORT, ch.addr, ch.addr);
      else this.sendV1(m, MldType.V1_DONE, ch.addr, ALL_ROUTERS);
    }
  }

  private answerGeneral(m: MldIface): void {
    const all = [...m.groups.values()].map((g) => g.addr);
    if (this.v1(m)) for (const a of all) this.sendV1(m, MldType.V1_REPORT, a, a);
    else this.report(m, MldRecordType.MODE_IS_EXCLUDE, all);
  }

  private answerGroup(m: MldIface, g: Group): void {
    if (this.v1(m)) this.sendV1(m, MldType.V1_REPORT, g.addr, g.addr);
    else this.report(m, MldRecordType.MODE_IS_EXCLUDE, [g.addr]);
  }

  /** MLDv2 reports of `groups`, as many per packet as the minimum MTU holds (5.2.15). */
  private report(m: MldIface, type: number, groups: Uint8Array[]): void {
    const per = Math.floor((IPV6_MIN_MTU - IPV6_HEADER_LENGTH - 8 - mldReportLength(0)) / 20);
    for (let i = 0; i < groups.length; i += per) {
      const part = groups.slice(i, i + per);
      this.send(m, ALL_MLDV2_ROUTERS, mldReportLength(part.length), (buf, at, src) =>
        encodeMldReport(type, part, buf, at, src, ALL_MLDV2_ROUTERS),
      );
      this.ctx.counters.inc('mld.tx.report');
    }
  }

  private sendV1(
    m: MldIface,
    type: typeof MldType.V1_REPORT | typeof MldType.V1_DONE,
    g: Uint8Array,
    dst: Uint8Array,
  ): void {
    this.send(m, dst, 24, (buf, at, src) => encodeMldV1(type, g, buf, at, src, dst));
    this.ctx.counters.inc(type === MldType.V1_REPORT ? 'mld.tx.v1-report' : 'mld.tx.v1-done');
  }

  /** An MLD message to `dst`: link-local source (or ::), hop limit 1, router alert (RFC 3810 5). */
  private send(
    m: MldIface,
    dst: Uint8Array,
    icmpLen: number,
    encode: (buf: Uint8Array, at: number, src: Uint8Array) => number,
  ): void {
    const x = m.iface;
    const eth = x.ethHeaderLength;
    const frame = new Uint8Array(eth + IPV6_HEADER_LENGTH + 8 + icmpLen);
    x.writeEthernet(frame, ipv6MulticastMac(dst), EtherType.IPV6);
    const src = this.ctx.linkLocal(x) ?? UNSPECIFIED;
    const h = this.txIp;
    h.trafficClass = 0;
    h.flowLabel = 0;
    h.payloadLength = 8 + icmpLen;
    h.nextHeader = Ipv6Next.HOP_BY_HOP;
    h.hopLimit = 1;
    copyIpv6(h.src, 0, src, 0);
    copyIpv6(h.dst, 0, dst, 0);
    encodeIpv6(h, frame, eth);
    frame.set(HOP_BY_HOP, eth + IPV6_HEADER_LENGTH);
    encode(frame, eth + IPV6_HEADER_LENGTH + 8, src);
    if (!x.link.send(frame)) this.ctx.counters.inc('tx.drop.link');
  }
}

/** RFC 3810 6: never all-nodes, never a group of scope 0 (reserved) or 1 (interface-local). */
function reportable(g: Uint8Array): boolean {
  if (g[0] !== 0xff || (g[1]! & 0x0f) <= 1) return false;
  for (let i = 0; i < 16; i++) if (g[i] !== ALL_NODES[i]) return true;
  return false;
}
