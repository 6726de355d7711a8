import type { Clock, Timer } from '../core/clock.ts';
import type { Counters } from '../core/counters.ts';
import { InvalidArgumentError } from '../core/errors.ts';
import type { Random } from '../core/random.ts';
import { createNeighborState, type NeighborState } from '../state/neighbor-state.ts';
import {
  BROADCAST_MAC,
  copyIpv6,
  createIpv6,
  formatIpv6,
  ipv6Equal,
  isIpv6Multicast,
  isIpv6Unspecified,
  isMulticastMac,
  parseIpv4,
  parseMac,
  writeMac,
} from '../wire/addr.ts';
import { ARP_LENGTH, type ArpPacket, decodeArp, encodeArp } from '../wire/arp.ts';
import { decodeDropNames, type StackInterface } from './interface.ts';

/**
 * The ARP cache runs the RFC 4861 neighbor-unreachability state machine over ARP, as Linux does:
 *
 *   none ─send─► incomplete ─reply─► reachable ─reachableMs─► stale ─send─► delay ─staleMs─► probe
 *                    │                   ▲                                   │ confirm      │ reply
 *                    └─no reply──► failed └───────────────────────────────────┴──────────────┘
 *
 * `failed` entries restart resolution on the next packet. `static` entries never change.
 *
 * The same table holds IPv6 neighbors, resolved by neighbor solicitation (RFC 4861 7.2): one
 * state machine, one set of timers and queues, keyed by family. An IPv6 entry is keyed by its
 * address text and carries the address in `ip6`; its `NeighborState.const.ip` is 0 and its
 * `const.ip6` a copy of the address, so the state object means the same to any owner. The ND messages themselves are sent and validated by the
 * IPv6 layer (`ipv6.ts`), which calls `solicit6` here and reports what it learned with `learn6`.
 */
export type NeighborStatus =
  | 'none'
  | 'incomplete'
  | 'reachable'
  | 'stale'
  | 'delay'
  | 'probe'
  | 'failed'
  | 'static';

export interface ArpOptions {
  /** Broadcast requests sent while resolving before giving up (default 3). */
  retries?: number;
  /** Interval between requests, for resolution and probing (default 1000 ms). */
  retryMs?: number;
  /** Base time an entry stays reachable after proof; randomised ×0.5..1.5 per RFC 4861 (default 30000). */
  reachableMs?: number;
  /**
   * How long a stale entry that is being used waits in `delay` for an upper-layer confirmation
   * before it is probed (RFC 4861 DELAY_FIRST_PROBE_TIME, default 5000 ms).
   */
  staleMs?: number;
  /** Unicast probes of a delay entry before it fails (default 3). */
  probeRetries?: number;
  /** Packets held per neighbor while resolving; the oldest is dropped when full (default 16). */
  queueLimit?: number;
  /** Entries kept before unreferenced ones are evicted, oldest first (default 1024). */
  maxEntries?: number;
}

const ARP_OP_REQUEST = 1;
const ARP_OP_REPLY = 2;
const ETHERTYPE_ARP = 0x0806;
const TWO_32 = 0x1_0000_0000;

class NeighborEntry {
  status: NeighborStatus = 'none';
  /** RFC 4861 IsRouter flag, from neighbor advertisements (IPv6 only). */
  isRouter = false;
  /** Requests sent in the current resolution or probe round. */
  probes = 0;
  /** Paths pointing here; a referenced entry is never evicted. */
  refs = 0;
  queue: Uint8Array[] = [];
  /** Resolution and probing: ref'd, since a packet is waiting on it. */
  private readonly busyTimer: Timer;
  /** Reachable → stale ageing: unref'd, an idle cache must not keep a process (or simulator) alive. */
  private readonly ageTimer: Timer;
  constructor(
    readonly key: number | string,
    readonly state: NeighborState,
    readonly iface: StackInterface,
    /** The IPv6 address of an IPv6 neighbor; null for IPv4 (the address is `state.const.ip`). */
    readonly ip6: Uint8Array | null,
    clock: Clock,
    onTimer: (e: NeighborEntry) => void,
  ) {
    this.busyTimer = clock.createTimer(() => onTimer(this));
    this.ageTimer = clock.createTimer(() => onTimer(this)).unref();
  }

  /** Arm the timer for the current status (`ageing` for reachable), disarming the other. */
  arm(ms: number, ageing = false): void {
    (ageing ? this.busyTimer : this.ageTimer).disarm();
    (ageing ? this.ageTimer : this.busyTimer).arm(ms);
  }

  disarm(): void {
    this.busyTimer.disarm();
    this.ageTimer.disarm();
  }
}

export interface NeighborInfo {
  ip: number;
  mac: number;
  status: NeighborStatus;
  ifIndex: number;
  queued: number;
}

export interface Neighbor6Info {
  /** RFC 5952 text. */
  ip: string;
  mac: number;
  status: NeighborStatus;
  ifIndex: number;
  queued: number;
  isRouter: boolean;
}

/** What a neighbor discovery message said about a neighbor's link-layer address (RFC 4861 7.2.3-5). */
export interface Nd6Learn {
  /** 'ns' (a solicitation with a source link-layer option, or an RA/RS/redirect) or 'na'. */
  from: 'ns' | 'na';
  /** The link-layer address the message carried, -1 when it carried none. */
  mac: number;
  solicited?: boolean;
  override?: boolean;
  router?: boolean;
}

export interface NeighborContext {
  clock: Clock;
  random: Random;
  counters: Counters;
  /** The interface whose subnet holds `ip` (for setStatic without an interface name). */
  ifaceFor(ip: number): StackInterface | null;
  ifaceByName(name: string): StackInterface | null;
  /** Packets dropped because resolution failed, so the owner can tell transports (EHOSTUNREACH). */
  onUnreachable?(frame: Uint8Array, ethLen: number): void;
  /**
   * Send a neighbor solicitation for `target` on `iface`: to its solicited-node group when
   * `dstMac` is -1, else unicast to that MAC (a reachability probe). Set by the IPv6 layer.
   */
  solicit6?(iface: StackInterface, target: Uint8Array, dstMac: number): void;
}

/** ARP cache and resolver: the neighbor layer of the host stack. */
export class NeighborTable {
  private readonly entries = new Map<number | string, NeighborEntry>();
  /** IPv6 entries by their state object, for `outputState6`. */
  private readonly byState6 = new WeakMap<NeighborState, NeighborEntry>();
  private readonly changeHandlers: ((nb: NeighborState, oldMac: number) => void)[] = [];
  private readonly retries: number;
  private readonly retryMs: number;
  private readonly reachableMs: number;
  private readonly staleMs: number;
  private readonly probeRetries: number;
  private readonly queueLimit: number;
  private readonly maxEntries: number;
  private readonly arp: ArpPacket = { op: 0, senderMac: 0, senderIp: 0, targetMac: 0, targetIp: 0 };
  private readonly txArp: ArpPacket = { op: 0, senderMac: 0, senderIp: 0, targetMac: 0, targetIp: 0 };
  private readonly scratch = new Uint8Array(18 + ARP_LENGTH + 32);
  private readonly onTimerBound = (e: NeighborEntry): void => this.onTimer(e);

  constructor(
    private readonly ctx: NeighborContext,
    opts: ArpOptions = {},
  ) {
    this.retries = positiveInt(opts.retries, 3, 'arp.retries');
    this.retryMs = positive(opts.retryMs, 1000, 'arp.retryMs');
    this.reachableMs = positive(opts.reachableMs, 30000, 'arp.reachableMs');
    this.staleMs = positive(opts.staleMs, 5000, 'arp.staleMs');
    this.probeRetries = positiveInt(opts.probeRetries, 3, 'arp.probeRetries');
    this.queueLimit = positiveInt(opts.queueLimit, 16, 'arp.queueLimit');
    this.maxEntries = positiveInt(opts.maxEntries, 1024, 'arp.maxEntries');
  }

  get size(): number {
    return this.entries.size;
  }

  /** Register a handler called whenever a neighbor's MAC changes (-1 when resolution fails). */
  onChange(cb: (nb: NeighborState, oldMac: number) => void): void {
    this.changeHandlers.push(cb);
  }

  /**
   * The shared NeighborState for `ip` on `iface`, created (unresolved) on first use. `ref` marks it
   * as used by a path, which protects it from eviction until `release`.
   */
  acquire(iface: StackInterface, ip: number, ref = true): NeighborState {
    const e = this.entry(iface, ip);
    if (ref) e.refs++;
    return e.state;
  }

  release(iface: StackInterface, ip: number): void {
    const e = this.entries.get(key(iface, ip));
    if (e && e.refs > 0) e.refs--;
  }

  /** Snapshot of one entry (first match over interfaces unless `ifIndex` is given). */
  lookup(ip: number, ifIndex = -1): NeighborInfo | null {
    for (const e of this.entries.values()) {
      if (e.ip6 || e.state.const.ip !== ip || (ifIndex >= 0 && e.iface.index !== ifIndex)) continue;
      return {
        ip,
        mac: e.state.cached.dstMac,
        status: e.status,
        ifIndex: e.iface.index,
        queued: e.queue.length,
      };
    }
    return null;
  }

  list(): NeighborInfo[] {
    const out: NeighborInfo[] = [];
    for (const e of this.entries.values()) {
      if (e.ip6) continue;
      out.push({
        ip: e.state.const.ip,
        mac: e.state.cached.dstMac,
        status: e.status,
        ifIndex: e.iface.index,
        queued: e.queue.length,
      });
    }
    return out;
  }

  /** Pin `ip` to `mac`; the entry is updated in place if it exists, so every path sees it. */
  setStatic(ip: number | string, mac: number | string, ifName?: string): NeighborState {
    const addr = typeof ip === 'string' ? parseIpv4(ip) : checkIp(ip);
    const m = typeof mac === 'string' ? parseMac(mac) : checkMac(mac);
    if (isMulticastMac(m)) throw new InvalidArgumentError('a neighbor MAC must be unicast');
    const iface = ifName === undefined ? this.ctx.ifaceFor(addr) : this.ctx.ifaceByName(ifName);
    if (!iface) throw new InvalidArgumentError(`no interface reaches ${ip}`);
    const e = this.entry(iface, addr);
    e.disarm();
    this.setMac(e, m);
    e.status = 'static';
    this.flush(e);
    return e.state;
  }

  /** Remove an entry (static or not); paths that point at it keep the object and resolve again. */
  delete(ip: number, ifIndex = -1): boolean {
    let found = false;
    for (const e of this.entries.values()) {
      if (e.ip6 || e.state.const.ip !== ip || (ifIndex >= 0 && e.iface.index !== ifIndex)) continue;
      this.drop(e);
      found = true;
    }
    return found;
  }

  /**
   * Upper-layer proof that `ip` is reachable (RFC 4861 7.3.1), e.g. TCP seeing new data acked: it
   * keeps a working neighbor out of probing without any ARP traffic.
   */
  confirm(ip: number): void {
    const now = this.ctx.clock.now();
    for (const e of this.entries.values()) {
      if (e.ip6 || e.state.const.ip !== ip) continue;
      this.confirmEntry(e, now);
    }
  }

  private confirmEntry(e: NeighborEntry, now: number): void {
    if (e.status === 'static') e.state.cached.hostReachableAt = now;
    else if (e.state.cached.dstMac >= 0) this.becomeReachable(e);
  }

  /** Send gratuitous ARP for every address of `iface` (or of all interfaces given). */
  announce(ifaces: readonly StackInterface[]): number {
    let n = 0;
    for (const iface of ifaces) {
      for (const a of iface.addresses) {
        this.sendArp(iface, ARP_OP_REQUEST, BROADCAST_MAC, a.ip, 0, a.ip);
        n++;
      }
    }
    this.ctx.counters.inc('arp.tx.gratuitous', n);
    return n;
  }

  /**
   * Send a complete frame (Ethernet header at 0, destination MAC still to be filled) to `nb`. The
   * frame is borrowed: it is copied only if it must wait for resolution.
   */
  output(iface: StackInterface, nb: NeighborState, frame: Uint8Array, len: number): boolean {
    let e = this.entries.get(key(iface, nb.const.ip));
    if (!e) {
      // The path outlived its entry (evicted or deleted): adopt its state object again.
      e = this.adopt(iface, nb);
    } else if (e.state !== nb) {
      nb.cached.dstMac = e.state.cached.dstMac;
    }
    return this.send(e, frame, len);
  }

  private send(e: NeighborEntry, frame: Uint8Array, len: number): boolean {
    switch (e.status) {
      case 'static':
      case 'reachable':
      case 'delay':
      case 'probe':
        return this.transmit(e, frame, len);
      case 'stale':
        e.status = 'delay';
        e.arm(this.staleMs);
        return this.transmit(e, frame, len);
      case 'none':
      case 'failed':
        this.enqueue(e, frame, len);
        this.startResolution(e);
        return true;
      case 'incomplete':
        this.enqueue(e, frame, len);
        return true;
    }
  }

  /** An ARP packet at buf[off, off+len) arrived on `iface`. Counts exactly one accept or drop. */
  input(iface: StackInterface, buf: Uint8Array, off: number, len: number): void {
    const c = this.ctx.counters;
    if (!iface.ipv4) {
      // IPv6-only, as Linux with no IPv4 address on the device: nothing to answer, and learning
      // IPv4 neighbors there would only fill the cache for a family the interface cannot send.
      c.inc('drop.arp.no-ipv4');
      return;
    }
    const p = this.arp;
    const err = decodeArp(buf, off, len, p);
    if (err !== null) {
      c.inc(ARP_DROP[err]);
      return;
    }
    if (isMulticastMac(p.senderMac) || p.senderMac === 0) {
      c.inc('drop.arp.bad-sender-mac');
      return;
    }
    if (iface.hasAddress(p.senderIp)) {
      // Someone else claims our address; never let that poison our own view.
      c.inc('drop.arp.address-conflict');
      return;
    }
    const forUs = iface.hasAddress(p.targetIp);
    const existing = p.senderIp !== 0 ? this.entries.get(key(iface, p.senderIp)) : undefined;

    // RFC 826 merge: an entry we already hold is refreshed from any ARP packet naming its sender.
    if (existing && existing.status !== 'static') {
      const changed = existing.state.cached.dstMac !== p.senderMac;
      this.setMac(existing, p.senderMac);
      const solicited =
        p.op === ARP_OP_REPLY &&
        forUs &&
        (existing.status === 'incomplete' || existing.status === 'probe' || existing.status === 'delay');
      if (solicited) this.becomeReachable(existing);
      else if (changed || existing.status === 'none' || existing.status === 'failed') {
        // A MAC nobody asked for is unproven: use it, but verify before trusting it (RFC 4861 7.2.5).
        this.becomeStale(existing);
      }
      this.flush(existing);
    }

    if (p.op === ARP_OP_REQUEST && forUs) {
      if (!existing && p.senderIp !== 0 && iface.addressFor(p.senderIp)) {
        // The sender is about to talk to us; learning it now saves a resolution round trip.
        const e = this.entry(iface, p.senderIp);
        this.setMac(e, p.senderMac);
        this.becomeStale(e);
      }
      this.sendArp(iface, ARP_OP_REPLY, p.senderMac, p.targetIp, p.senderMac, p.senderIp);
      c.inc('arp.tx.reply');
      c.inc('accept.arp.request');
      return;
    }
    if (existing) {
      c.inc(p.senderIp === p.targetIp ? 'accept.arp.gratuitous' : 'accept.arp.update');
      return;
    }
    c.inc(p.op === ARP_OP_REPLY && forUs ? 'drop.arp.unsolicited-reply' : 'drop.arp.not-for-us');
  }

  // ---- IPv6 -------------------------------------------------------------------------------------

  /**
   * Send a complete IPv6 frame (Ethernet header at 0, destination MAC still to be filled) to the
   * on-link neighbor `ip6`, resolving it with neighbor solicitations first if needed.
   */
  output6(iface: StackInterface, ip6: Uint8Array, frame: Uint8Array, len: number): boolean {
    return this.send(this.entry6(iface, ip6), frame, len);
  }

  /**
   * The shared NeighborState of the IPv6 neighbor `ip6` on `iface` for a path, created on first
   * use and protected from eviction until `release6`.
   */
  acquire6(iface: StackInterface, ip6: Uint8Array): NeighborState {
    const e = this.entry6(iface, ip6);
    e.refs++;
    return e.state;
  }

  release6(iface: StackInterface, ip6: Uint8Array): void {
    const e = this.entries.get(key6(iface, ip6));
    if (e && e.refs > 0) e.refs--;
  }

  /**
   * Like `output6` for a path's neighbor object (from `acquire6`): found by object, so the hot path
   * builds no string key. An entry deleted meanwhile is created again from `ip6`.
   */
  outputState6(
    iface: StackInterface,
    nb: NeighborState,
    ip6: Uint8Array,
    frame: Uint8Array,
    len: number,
  ): boolean {
    const e = this.byState6.get(nb);
    if (e !== undefined && this.entries.get(e.key) === e) return this.send(e, frame, len);
    const own = createIpv6();
    copyIpv6(own, 0, ip6, 0);
    const fresh = this.insert(key6(iface, ip6), nb, iface, own);
    fresh.refs++;
    if (nb.cached.dstMac >= 0) fresh.status = 'stale';
    return this.send(fresh, frame, len);
  }

  /** Snapshot of one IPv6 entry, or null. */
  lookup6(ip6: Uint8Array | string, ifIndex = -1): Neighbor6Info | null {
    const text = typeof ip6 === 'string' ? ip6 : formatIpv6(ip6);
    for (const e of this.entries.values()) {
      if (!e.ip6 || (ifIndex >= 0 && e.iface.index !== ifIndex)) continue;
      if (e.key === `${e.iface.index}/${text}`) return info6(e);
    }
    return null;
  }

  list6(): Neighbor6Info[] {
    const out: Neighbor6Info[] = [];
    for (const e of this.entries.values()) if (e.ip6) out.push(info6(e));
    return out;
  }

  /** Pin an IPv6 neighbor to `mac` on `iface`. */
  setStatic6(iface: StackInterface, ip6: Uint8Array, mac: number | string): void {
    const m = typeof mac === 'string' ? parseMac(mac) : checkMac(mac);
    if (isMulticastMac(m)) throw new InvalidArgumentError('a neighbor MAC must be unicast');
    if (isIpv6Multicast(ip6) || isIpv6Unspecified(ip6))
      throw new InvalidArgumentError(`${formatIpv6(ip6)} is not a unicast address`);
    const e = this.entry6(iface, ip6);
    e.disarm();
    this.setMac(e, m);
    e.status = 'static';
    this.flush(e);
  }

  /** Upper-layer proof that the IPv6 neighbor is reachable (RFC 4861 7.3.1). */
  confirm6(ip6: Uint8Array): void {
    const now = this.ctx.clock.now();
    for (const e of this.entries.values()) {
      if (e.ip6 && ipv6Equal(e.ip6, 0, ip6, 0)) this.confirmEntry(e, now);
    }
  }

  /**
   * Apply what a validated ND message said about `ip6` (RFC 4861 7.2.3 for solicitations and
   * router messages with a source link-layer option, 7.2.5 for advertisements). Returns false when
   * the message changed nothing (e.g. an advertisement for a neighbor nobody asked about).
   */
  learn6(iface: StackInterface, ip6: Uint8Array, m: Nd6Learn): boolean {
    const c = this.ctx.counters;
    const existing = this.entries.get(key6(iface, ip6));
    if (existing?.status === 'static') return false;
    if (m.from === 'ns') {
      if (m.mac < 0) return false;
      const e = existing ?? this.entry6(iface, ip6);
      if (
        e.state.cached.dstMac !== m.mac ||
        e.status === 'none' ||
        e.status === 'incomplete' ||
        e.status === 'failed'
      ) {
        this.setMac(e, m.mac);
        this.becomeStale(e);
      }
      this.flush(e);
      c.inc('nd.learn.solicitation');
      return true;
    }
    // 7.2.5: an advertisement with no entry is silently discarded; it creates none.
    if (!existing) {
      c.inc('nd.ignore.na-no-entry');
      return false;
    }
    const e = existing;
    if (e.status === 'incomplete' || e.status === 'none' || e.status === 'failed') {
      if (m.mac < 0) {
        c.inc('nd.ignore.na-no-lla');
        return false;
      }
      this.setMac(e, m.mac);
      if (m.solicited) this.becomeReachable(e);
      else this.becomeStale(e);
      e.isRouter = m.router === true;
      this.flush(e);
      c.inc('nd.learn.advertisement');
      return true;
    }
    const differs = m.mac >= 0 && m.mac !== e.state.cached.dstMac;
    if (!m.override && differs) {
      // Without override a different address is not taken; a reachable entry is put to doubt.
      const doubted = e.status === 'reachable';
      if (doubted) this.becomeStale(e);
      c.inc('nd.ignore.na-no-override');
      return doubted;
    }
    if (differs) this.setMac(e, m.mac);
    if (m.solicited) this.becomeReachable(e);
    else if (differs) this.becomeStale(e);
    e.isRouter = m.router === true;
    c.inc('nd.learn.advertisement');
    return true;
  }

  close(): void {
    for (const e of this.entries.values()) {
      e.disarm();
      e.queue.length = 0;
    }
  }

  // ---------------------------------------------------------------------------------------------

  private entry(iface: StackInterface, ip: number): NeighborEntry {
    const k = key(iface, ip);
    const e = this.entries.get(k);
    if (e) return e;
    return this.insert(k, createNeighborState({ srcMac: iface.mac, vlanId: iface.vlanId, ip }), iface, null);
  }

  private entry6(iface: StackInterface, ip6: Uint8Array): NeighborEntry {
    const k = key6(iface, ip6);
    const e = this.entries.get(k);
    if (e) return e;
    const own = createIpv6();
    copyIpv6(own, 0, ip6, 0);
    return this.insert(
      k,
      createNeighborState({ srcMac: iface.mac, vlanId: iface.vlanId, ip: 0, ip6: own }),
      iface,
      own,
    );
  }

  private adopt(iface: StackInterface, nb: NeighborState): NeighborEntry {
    const e = this.insert(key(iface, nb.const.ip), nb, iface, null);
    // The adopted object may carry a MAC from before; treat it as unproven.
    if (nb.cached.dstMac >= 0) e.status = 'stale';
    return e;
  }

  private insert(
    k: number | string,
    state: NeighborState,
    iface: StackInterface,
    ip6: Uint8Array | null,
  ): NeighborEntry {
    if (this.entries.size >= this.maxEntries) this.evictOne();
    const e = new NeighborEntry(k, state, iface, ip6, this.ctx.clock, this.onTimerBound);
    this.entries.set(k, e);
    if (ip6) this.byState6.set(state, e);
    return e;
  }

  /** Evict the oldest entry no path uses, preferring ones that never resolved. */
  private evictOne(): void {
    let victim: NeighborEntry | null = null;
    for (const e of this.entries.values()) {
      if (e.refs > 0 || e.status === 'static') continue;
      if (e.status === 'failed' || e.status === 'none' || e.status === 'incomplete') {
        victim = e;
        break;
      }
      victim ??= e;
    }
    if (victim) {
      this.ctx.counters.inc('neigh.evicted');
      this.drop(victim);
    }
  }

  private drop(e: NeighborEntry): void {
    e.disarm();
    if (e.queue.length) this.ctx.counters.inc('tx.drop.neigh.evicted', e.queue.length);
    e.queue.length = 0;
    this.entries.delete(e.key);
  }

  private enqueue(e: NeighborEntry, frame: Uint8Array, len: number): void {
    if (e.queue.length >= this.queueLimit) {
      e.queue.shift();
      this.ctx.counters.inc('tx.drop.neigh.queue-full');
    }
    e.queue.push(frame.slice(0, len));
  }

  private transmit(e: NeighborEntry, frame: Uint8Array, len: number): boolean {
    writeMac(frame, 0, e.state.cached.dstMac);
    const ok = e.iface.link.send(len === frame.length ? frame : frame.subarray(0, len));
    if (!ok) this.ctx.counters.inc('tx.drop.link');
    return ok;
  }

  private flush(e: NeighborEntry): void {
    if (e.state.cached.dstMac < 0 || !e.queue.length) return;
    const q = e.queue;
    e.queue = [];
    for (const f of q) this.transmit(e, f, f.length);
  }

  private startResolution(e: NeighborEntry): void {
    e.status = 'incomplete';
    e.probes = 0;
    this.solicit(e, BROADCAST_MAC);
  }

  private solicit(e: NeighborEntry, dstMac: number): void {
    e.probes++;
    if (e.ip6) {
      this.ctx.solicit6?.(e.iface, e.ip6, dstMac === BROADCAST_MAC ? -1 : dstMac);
      this.ctx.counters.inc('nd.tx.ns');
      e.arm(this.retryMs);
      return;
    }
    const ip = e.state.const.ip;
    const targetMac = dstMac === BROADCAST_MAC ? 0 : dstMac;
    this.sendArp(e.iface, ARP_OP_REQUEST, dstMac, e.iface.sourceFor(ip), targetMac, ip);
    this.ctx.counters.inc('arp.tx.request');
    e.arm(this.retryMs);
  }

  private onTimer(e: NeighborEntry): void {
    switch (e.status) {
      case 'incomplete':
        if (e.probes >= this.retries) this.fail(e);
        else this.solicit(e, BROADCAST_MAC);
        return;
      case 'reachable':
        this.becomeStale(e);
        return;
      case 'delay':
        e.status = 'probe';
        e.probes = 0;
        this.solicit(e, e.state.cached.dstMac);
        return;
      case 'probe':
        if (e.probes >= this.probeRetries) this.fail(e);
        else this.solicit(e, e.state.cached.dstMac);
        return;
      default:
        return;
    }
  }

  private fail(e: NeighborEntry): void {
    e.status = 'failed';
    e.disarm();
    const q = e.queue;
    e.queue = [];
    if (q.length) this.ctx.counters.inc('tx.drop.neigh.ehostunreach', q.length);
    this.setMac(e, -1);
    if (this.ctx.onUnreachable) for (const f of q) this.ctx.onUnreachable(f, e.iface.ethHeaderLength);
  }

  private becomeReachable(e: NeighborEntry): void {
    e.status = 'reachable';
    e.probes = 0;
    e.state.cached.hostReachableAt = this.ctx.clock.now();
    e.arm(this.reachableMs * (0.5 + this.ctx.random.float()), true);
  }

  private becomeStale(e: NeighborEntry): void {
    e.status = 'stale';
    e.probes = 0;
    e.disarm();
  }

  private setMac(e: NeighborEntry, mac: number): void {
    const old = e.state.cached.dstMac;
    if (old === mac) return;
    e.state.cached.dstMac = mac;
    for (const h of this.changeHandlers) h(e.state, old);
  }

  private sendArp(
    iface: StackInterface,
    op: number,
    ethDst: number,
    senderIp: number,
    targetMac: number,
    targetIp: number,
  ): void {
    const buf = this.scratch;
    const off = iface.writeEthernet(buf, ethDst, ETHERTYPE_ARP);
    const a = this.txArp;
    a.op = op;
    a.senderMac = iface.mac;
    a.senderIp = senderIp;
    a.targetMac = targetMac;
    a.targetIp = targetIp;
    const n = encodeArp(a, buf, off);
    if (!iface.link.send(buf.subarray(0, off + n))) this.ctx.counters.inc('tx.drop.link');
  }
}

const ARP_DROP = decodeDropNames('arp');

function key(iface: StackInterface, ip: number): number {
  return iface.index * TWO_32 + ip;
}

/** IPv6 keys are strings, so they never meet the numeric IPv4 keys. */
function key6(iface: StackInterface, ip6: Uint8Array): string {
  return `${iface.index}/${formatIpv6(ip6)}`;
}

function positive(v: number | undefined, dflt: number, name: string): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) {
    throw new InvalidArgumentError(`${name} must be a positive number`);
  }
  return v;
}

function positiveInt(v: number | undefined, dflt: number, name: string): number {
  const n = positive(v, dflt, name);
  if (!Number.isInteger(n)) throw new InvalidArgumentError(`${name} must be an integer`);
  return n;
}

function checkIp(ip: number): number {
  if (!Number.isInteger(ip) || ip < 0 || ip > 0xffffffff)
    throw new InvalidArgumentError(`bad IPv4 address ${ip}`);
  return ip;
}

function checkMac(mac: number): number {
  if (!Number.isInteger(mac) || mac < 0 || mac > 0xffffffffffff)
    throw new InvalidArgumentError(`bad MAC ${mac}`);
  return mac;
}

export { checkIp, checkMac, positive, positiveInt };

function info6(e: NeighborEntry): Neighbor6Info {
  return {
    ip: formatIpv6(e.ip6!),
    mac: e.state.cached.dstMac,
    status: e.status,
    ifIndex: e.iface.index,
    queued: e.queue.length,
    isRouter: e.isRouter,
  };
}
