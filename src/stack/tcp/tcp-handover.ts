import { AddressInUseError, InvalidStateError } from '../../core/errors.ts';
import { type TcpState, TcpStateId } from '../../state/tcp-state.ts';
import { createIpv4Header, encodeIpv4, IpProto } from '../../wire/ipv4.ts';
import { TcpFlag } from '../../wire/tcp.ts';
import { TWO_32 } from '../address-table.ts';
import type { IpInfo } from '../ip-sender.ts';
import { effectiveMss } from './congestion.ts';
import type { ConnTable, Forward, Placeholder, TableEntry } from './conn-table.ts';
import { backedOffRto } from './rtt.ts';
import { seqAdd, seqLt, seqSub } from './seq.ts';
import { isSynchronized, TcpConnection, TcpEvent } from './tcp-connection.ts';
import { rewind } from './tcp-drive.ts';
import { flushDelayedAck } from './tcp-flush.ts';
import type { TcpLayer } from './tcp-layer.ts';
import { emit, sendAck, tcpOutput, transmit, tsNow } from './tcp-output.ts';
import { scheduleTimer } from './tcp-timers.ts';
import type { TcpUser } from './tcp-types.ts';

/** Send what `ph` held to `fn`, and what arrives from now on; what `fn` refuses stays held. */
function forwardVia(ph: Placeholder, fn: Forward): void {
  ph.forward = fn;
  const q = ph.queue;
  if (q.length === 0) return;
  ph.queue = [];
  if (q.length > 1 && fn.many !== undefined) {
    if (!fn.many(q)) ph.queue = q;
    return;
  }
  for (const p of q) if (!fn(p)) ph.queue.push(p);
}

/** Segments a frozen 4-tuple holds while its connection moves; more are dropped and counted. */
const FROZEN_QUEUE_LIMIT = 4096;

export interface AdoptOptions {
  /**
   * Make the peer recover at once (failover): send an ACK and retransmit from snd.una if data is
   * outstanding, instead of waiting for the retransmission timer.
   */
  prod?: boolean;
  /**
   * The caller counts `tcp.attached` (and `tcp.detached` at the source) once for its whole batch
   * (`TcpLayer.countHandovers`): a live hand-over of 10,000 connections spent two counter lookups
   * by name on each.
   */
  batched?: boolean;
  /**
   * The host table's entry of the state's tuple, as the caller found it (`ConnTable.tagEntry`, an
   * upload's): when it is the tuple's only entry (`ConnTable.soleIn`), the address-in-use check
   * reads it there and the connection is linked in it, else the table is searched.
   */
  at?: TableEntry;
}

/**
 * Make the peer of a connection whose path just changed (failover: a new owner, or the host's
 * traffic moved to another member) recover at once, instead of waiting for a retransmission timer
 * backed off on the path that failed: resend snd.una's segment, or send an ACK when nothing is
 * outstanding, then re-arm the timer. Output and timer are done here.
 *
 * One segment, not the window: as after a retransmission timeout (RFC 6298 5.4, Linux's
 * tcp_retransmit_timer), only the head goes now; snd.nxt is rewound, so the rest follows as the
 * peer's ACK of the head returns, from the first byte that ACK says is missing (the whole flight
 * may have arrived, and then nothing more is resent). A failover of 10,000 connections used to
 * resend every window in the charged turn, some 8 frames a connection.
 *
 * Three duplicate ACKs go first only when SACK was not negotiated: such a peer (RFC 5681 3.2,
 * Linux's tcp_add_reno_sack) resends the data it had in flight towards us at once. A SACK peer
 * counts only ACKs that SACK new data (RFC 6675 2; Linux, and this stack), and a receiver has
 * nothing to SACK of data lost in the outage, so that data waits the peer's own timer (tail
 * probe or RTO) whatever we send; with SACK the resent head, or one ACK, is all. At 10,000
 * connections the duplicates were 30,000 of the hand-over's 40,000 frames.
 *
 * A connection rebuilt from a dead owner's hard state (soft.repaired) resends nothing at first:
 * its owner died after sending the flight, so the flight was not lost on a failed path, and what
 * went missing is the peer's ACKs of it. The flight counts as sent, and a probe with no data at
 * snd.una - 1 draws the peer's ACK (Linux sends the same when a socket leaves TCP_REPAIR,
 * tcp_send_window_probe); that ACK (repairAnswered) says what the peer has, and only the rest goes
 * again, at once. Resending the head first cost one needless segment a connection whenever the
 * peer had it, which after a crash it nearly always did (1,000 kernel readers: one D-SACK per
 * rebuilt connection). A peer that got nothing hears one round trip later than it did; a probe
 * the peer does not answer (Linux answers out-of-window segments without data once in 500 ms a
 * socket, tcp_invalid_ratelimit) leaves the resend to the retransmission timer.
 */
export function prod(conn: TcpConnection): void {
  const state = conn.state;
  const d = state.delegated;
  const now = conn.engine.env.clock.now();
  const outstanding = d.sndMax !== d.sndUna;
  const repair = outstanding && state.soft.repaired && headGoesNow(state);
  if (outstanding) {
    if (repair) {
      d.sndNxt = d.sndMax;
      state.soft.rttActive = false;
    } else rewind(state);
    // The backoff was earned on the path that failed (or while no link was left at all), and
    // says nothing about the one we resend on now: like RFC 6069's revert after a known
    // disruption, the timer that guards this resend starts from the plain RTO.
    d.backoff = 0;
    d.rtxDeadline = Number.POSITIVE_INFINITY;
    // A tail probe timed on the failed path: the resend stands for it, and none is due while the
    // rest of the flight waits to go again (RFC 8985 7.2, as after a timeout).
    state.soft.tlpDeadline = Number.POSITIVE_INFINITY;
    state.soft.tlpInFlight = false;
  }
  conn.rttEchoFloor = tsNow(now);
  const sack = state.const.sackEnabled;
  // The shut window's probe below carries the ACK as well (the peer takes the ACK field of a
  // duplicate octet, then answers the octet at once): an ACK of its own before it was a second
  // frame a connection for nothing, half a carrier failover's frames when most readers had shut
  // their windows (1,000 kernel readers with 32 KiB buffers).
  const probes = d.persistDeadline !== Number.POSITIVE_INFINITY || (outstanding && !headGoesNow(state));
  let ackOwed = false;
  if (!sack) {
    sendAck(conn);
    sendAck(conn);
    sendAck(conn);
  } else if (!repair && (!outstanding || state.soft.inRecovery || !headGoesNow(state))) {
    // The resent head (or the repair's probe) carries our ACK. Without it, one ACK: data that
    // arrived while our ACKs of it were lost in the outage is acknowledged, and the peer sends on
    // at once.
    if (probes) ackOwed = true;
    else sendAck(conn);
  }
  const sentBefore = conn.stats.segmentsOut;
  if (!outstanding || (state.soft.inRecovery && sack)) {
    // Nothing in flight: new data if there is any. In SACK recovery the recovery's own output
    // decides: holes first within cwnd - pipe, none the old owner already resent again.
    tcpOutput(conn);
  } else if (repair) {
    emit(conn, seqSub(d.sndUna, 1), TcpFlag.ACK, 0, 0);
    conn.engine.env.counters.inc('tcp.prod.repair-probes');
    d.rtxDeadline = now + backedOffRto(state);
  } else if (d.persistDeadline === Number.POSITIVE_INFINITY) {
    if (headGoesNow(state)) {
      const used = transmit(conn, d.sndUna, Math.min(effectiveMss(state), d.sndWnd), now);
      d.sndNxt = seqAdd(d.sndUna, used);
    }
    d.rtxDeadline = now + backedOffRto(state);
  }
  if (d.persistDeadline !== Number.POSITIVE_INFINITY || (outstanding && !headGoesNow(state))) {
    // Waiting for the peer to open its window: the update that opened it may have gone to the
    // dead owner or into the failed link, and the peer sends it once. An ACK in its window gets
    // no answer, so the connection would wait out its persist timer (1,000 kernel readers after
    // a crash: the last resumed 0.64 s after its rebuild). Nor does a probe without data at
    // snd.una - 1 do for it: Linux answers such out-of-window segments once in 500 ms a socket
    // (tcp_invalid_ratelimit), and the old owner's own probe had often just used that up. The
    // last acknowledged octet sent again (RFC 1122 4.2.3.6's garbage octet) is data, which the
    // peer answers at once with its window, whatever its state (Linux: a duplicate forces an
    // immediate ACK with a D-SACK of it).
    const at = seqSub(d.sndUna, 1);
    emit(conn, at, TcpFlag.ACK, -1, 1);
    conn.probeOctet = at;
    conn.engine.env.counters.inc('tcp.prod.window-probes');
  } else if (ackOwed && conn.stats.segmentsOut === sentBefore) {
    // The output above took the persist timer down and sent nothing: no frame carried the ACK.
    sendAck(conn);
  }
  scheduleTimer(conn);
}

/**
 * Whether prod resends snd.una's segment itself: a shut window is the persist timer's to probe,
 * and a retransmission stays within the window the peer offered (Linux's tcp_retransmit_skb).
 */
function headGoesNow(state: TcpState): boolean {
  const d = state.delegated;
  return d.persistDeadline === Number.POSITIVE_INFINITY && d.sndWnd > 0;
}

/**
 * `prod` for a connection its owner keeps running while the path under it changed (the host's
 * traffic moved to another team member): output and timer follow at once. False, and nothing
 * sent, when the connection has no synchronized peer to prod (a handshake retransmits on its own
 * timer; TIME_WAIT's peer may be gone) or is not this owner's to run.
 */
export function prodInPlace(conn: TcpConnection): boolean {
  const st = conn.state.delegated.state;
  if (!conn.linked || conn.released || !isSynchronized(st) || st === TcpStateId.TIME_WAIT) return false;
  prod(conn);
  conn.engine.env.counters.inc('tcp.prodded');
  return true;
}

/**
 * The connection object each released state left, by the state's identity, for every layer of
 * this thread: a worker, and the host, read a connection's record back into the state it released
 * (TransferRecord.readInto), and a crash's rebuild fills the states a dead LocalNic released
 * (SalvageRecord.spare); adopt then takes up the old object too (TcpConnection.revive), on
 * whichever layer of the thread adopts the state, as a live hand-over runs one object on another
 * layer (`attach`). A crash of 10,000 made 10,000 connections, their keys and timers anew at the
 * surviving NIC, inside the charged rebuild. Weak: a state that never comes back takes its
 * connection object with it.
 */
const releasedBy = new WeakMap<TcpState, TcpConnection>();

/** What `takeQueuedOf` returns for a placeholder that held nothing: no list made per connection. */
const NOTHING_QUEUED = Object.freeze([]) as unknown as Uint8Array[];

/**
 * Hand-over of live connections between owners (the patent's offload, upload and failover): the
 * consistent point where a connection leaves (`release`), the placeholder that holds or forwards
 * its segments meanwhile, and the new owner taking it up (`adopt`).
 */
export class Handover {
  private readonly pktHdr = createIpv4Header();

  constructor(
    private readonly layer: TcpLayer,
    private readonly table: ConnTable,
  ) {}

  /**
   * Take over an established connection's state (validated by the caller): link it into the table,
   * re-arm its timer from the deadlines it carries and resume output. A placeholder for the same
   * 4-tuple stays until `dropFrozen` so the caller can replay what it held (`takeQueued`).
   */
  adopt(state: TcpState, user: TcpUser | null, opts: AdoptOptions = {}): TcpConnection {
    const layer = this.layer;
    const c = state.const;
    // The tuple's only entry, given: the connection this table runs there, if any, is in it, and
    // the adopted one goes in it (no search for either).
    const sole =
      opts.at === undefined
        ? null
        : this.table.soleIn(opts.at, c.localIp, c.localPort, c.remoteIp, c.remotePort);
    if (
      sole !== null
        ? sole.runBy === this.table
        : this.table.lookup(c.localIp, c.localPort, c.remoteIp, c.remotePort) !== undefined
    ) {
      throw new AddressInUseError('adopt: this layer already runs a connection with that 4-tuple');
    }
    let conn = releasedBy.get(state);
    if (
      conn?.released &&
      !conn.linked &&
      conn.state === state &&
      // Its timer runs on the clock it was made on (as `attach` requires).
      (conn.engine === layer || conn.engine.env.clock === layer.env.clock)
    ) {
      releasedBy.delete(state);
      // Turns are counted per scheduler (as in `attach`); on the same layer its share stays spent.
      if (conn.engine !== layer) conn.outputTurn = -1;
      conn.engine = layer;
      conn.revive();
      layer.env.counters.inc('tcp.adopt.revived');
    } else conn = new TcpConnection(layer, state);
    if (sole !== null) this.table.placeIn(conn, sole);
    conn.user = user;
    // The delayed-ACK timer never travels: the previous owner flushed it.
    state.soft.delayedAckDeadline = Number.POSITIVE_INFINITY;
    layer.link(conn);
    if (opts.prod === true) {
      prod(conn);
      layer.env.counters.inc('tcp.adopt.prodded');
    } else {
      // Not prodded, a rebuilt connection's output resends its flight from snd.nxt without asking
      // first: no probe is out, so the next ACK is no answer to one, and must not send it again
      // (soft.repaired stays only where a prod counted the flight as sent, snd.nxt at snd.max).
      if (seqLt(state.delegated.sndNxt, state.delegated.sndMax)) state.soft.repaired = false;
      tcpOutput(conn);
      scheduleTimer(conn);
    }
    if (state.delegated.recvBuffer.length > 0) conn.events |= TcpEvent.READABLE;
    // The peer's FIN may have come in the old owner's last turn, whose delivery of it was dropped
    // with the release (or died with a crashed NIC): nothing else tells the user its stream ended.
    // A user that heard it already takes it again as nothing new.
    if (state.delegated.finReceived) conn.events |= TcpEvent.REMOTE_END;
    conn.deferDelivery();
    return conn;
  }

  /**
   * The consistent point of a hand-over: flush a pending delayed ACK, stop the timer, take the
   * connection out of the table and leave a placeholder that queues segments for its 4-tuple.
   * Returns the state, which now belongs to whoever takes it next; `conn` is dead from here on.
   * With `crash`, the owner is a NIC that died: it sends nothing, the delayed ACK included (the
   * rebuilt state owes one ACK anyway, see rebuildTcpState).
   */
  release(conn: TcpConnection, crash = false): TcpState {
    if (!conn.linked || conn.released)
      throw new InvalidStateError('release: connection not run by this layer');
    if (!crash) flushDelayedAck(conn);
    const s = conn.state;
    // The SACK scoreboard travels with the state (records and codec alike): a move in the middle
    // of a recovery resends only the holes. The data SACKed stays in the send buffer until it is
    // cumulatively acknowledged, so a peer that reneges loses nothing (an RTO drops the
    // scoreboard, as Linux's does).
    s.soft.ackNow = false;
    conn.disarmTimer();
    conn.timerTarget = Number.POSITIVE_INFINITY;
    // The placeholder first, in the connection's own entry (as `detach`): the entry never empties,
    // so it is not unchained from its hash and made again for the placeholder, a tuple hashed
    // twice and three new objects per connection released.
    this.placeOf(conn).forward = null;
    this.layer.unlinkQuiet(conn);
    conn.released = true;
    // Taken up again if the same state object comes back here (a pooled read of the record).
    releasedBy.set(s, conn);
    this.layer.env.counters.inc('tcp.released');
    return s;
  }

  /**
   * In-thread hand-over, first half: take a live connection out of this layer as it stands (its
   * timer stays armed, its SACK board and RACK log stay, nothing is flushed), to be attached to
   * another layer of this thread in the same turn. With `forward`, a placeholder sends the
   * 4-tuple's segments there from now on (the host's, once the connection runs on a NIC).
   */
  detach(conn: TcpConnection, forward: Forward | null, batched = false): void {
    if (!conn.linked || conn.released || conn.engine !== this.layer)
      throw new InvalidStateError('detach: connection not run by this layer');
    // The placeholder first: the table entry then never empties, and is reused as it stands.
    if (forward !== null) this.placeOf(conn).forward = forward;
    this.layer.unlinkQuiet(conn, true);
    if (!batched) this.layer.env.counters.inc('tcp.detached');
  }

  /**
   * In-thread hand-over, second half: run a connection another layer of this thread detached,
   * the same object, from now on. The timer armed on the shared clock fires here (the callback
   * goes through `conn.engine`); the output scheduler's turn count restarts on this layer's; a
   * placeholder this layer kept for the 4-tuple (a forwarder while the connection ran elsewhere,
   * or segments held since an earlier release) is replayed and dropped.
   */
  attach(conn: TcpConnection, opts: AdoptOptions = {}): void {
    const layer = this.layer;
    if (conn.linked || conn.released) throw new InvalidStateError('attach: connection still run by a layer');
    if (conn.engine.env.clock !== layer.env.clock)
      throw new InvalidStateError("attach: the connection's timer runs on another clock");
    if (this.table.lookupOf(conn) !== undefined) {
      throw new AddressInUseError('attach: this layer already runs a connection with that 4-tuple');
    }
    if (conn.engine !== layer) conn.outputTurn = -1;
    conn.engine = layer;
    layer.link(conn, true);
    if (opts.batched !== true) layer.env.counters.inc('tcp.attached');
    if (opts.prod === true) {
      prod(conn);
      layer.env.counters.inc('tcp.adopt.prodded');
    }
    const ph = this.table.placeholderOf(conn);
    if (ph !== undefined) {
      const q = ph.queue;
      if (q.length > 0) {
        ph.queue = [];
        for (const p of q) layer.inputPacket(p);
      }
      // The addresses matter only as an IPv6 tuple's handles (`dropHeld`): the const part is
      // another object, read per connection only then.
      const c = conn.ipv6 ? conn.state.const : null;
      this.dropHeld(this.table.unholdOf(conn), c?.localIp ?? 0, c?.remoteIp ?? 0);
    }
  }

  /** Hold segments for this 4-tuple (a placeholder in queueing mode). */
  freeze(localIp: number, localPort: number, remoteIp: number, remotePort: number): void {
    this.place(localIp, localPort, remoteIp, remotePort).forward = null;
  }

  /** `freeze`, the placeholder read from `at` (ConnTable.tagEntry) when it holds it. */
  freezeIn(at: TableEntry, localIp: number, localPort: number, remoteIp: number, remotePort: number): void {
    const ph =
      this.table.heldIn(at, localIp, localPort, remoteIp, remotePort) ??
      this.place(localIp, localPort, remoteIp, remotePort);
    ph.forward = null;
  }

  /**
   * The placeholder of a 4-tuple, made if new. A new one of an IPv6 connection holds its address
   * handles, which the table's keys are: the connection runs elsewhere meanwhile (a NIC), and a
   * handle freed and reused would make this placeholder another connection's.
   */
  private place(localIp: number, localPort: number, remoteIp: number, remotePort: number): Placeholder {
    const addrs = this.layer.env.addrs;
    if (
      remoteIp >= TWO_32 &&
      addrs &&
      this.table.placeholder(localIp, localPort, remoteIp, remotePort) === undefined
    ) {
      addrs.ref(localIp);
      addrs.ref(remoteIp);
    }
    return this.table.hold(localIp, localPort, remoteIp, remotePort);
  }

  /** `place` for `conn`'s tuple, found from the connection's table entry when it can be. */
  private placeOf(conn: TcpConnection): Placeholder {
    const addrs = this.layer.env.addrs;
    if (conn.ipv6 && addrs && this.table.placeholderOf(conn) === undefined) {
      const c = conn.state.const;
      addrs.ref(c.localIp);
      addrs.ref(c.remoteIp);
    }
    return this.table.holdOf(conn);
  }

  /**
   * Send segments for this 4-tuple to `fn` (the connection's owner elsewhere) instead of holding
   * them. Creates the placeholder if needed; segments already held are forwarded first.
   */
  forwardTo(localIp: number, localPort: number, remoteIp: number, remotePort: number, fn: Forward): void {
    forwardVia(this.place(localIp, localPort, remoteIp, remotePort), fn);
  }

  /** `forwardTo`, the placeholder read from `at` (ConnTable.tagEntry) when it holds it. */
  forwardIn(
    at: TableEntry,
    localIp: number,
    localPort: number,
    remoteIp: number,
    remotePort: number,
    fn: Forward,
  ): void {
    forwardVia(
      this.table.heldIn(at, localIp, localPort, remoteIp, remotePort) ??
        this.place(localIp, localPort, remoteIp, remotePort),
      fn,
    );
  }

  /** `forwardTo` for `conn`'s tuple (a connection another layer of this thread runs now). */
  forwardOf(conn: TcpConnection, fn: Forward): void {
    forwardVia(this.placeOf(conn), fn);
  }

  /** The segments held for this 4-tuple, oldest first; the placeholder stays. */
  takeQueued(localIp: number, localPort: number, remoteIp: number, remotePort: number): Uint8Array[] {
    const ph = this.table.placeholder(localIp, localPort, remoteIp, remotePort);
    if (ph === undefined) return [];
    const q = ph.queue;
    ph.queue = [];
    return q;
  }

  /** `takeQueued` of `conn`'s tuple, read from the connection's table entry when it can be. */
  takeQueuedOf(conn: TcpConnection): Uint8Array[] {
    const ph = this.table.placeholderOf(conn);
    if (ph === undefined || ph.queue.length === 0) return NOTHING_QUEUED;
    const q = ph.queue;
    ph.queue = [];
    return q;
  }

  /** `dropFrozen` of `conn`'s tuple (see `takeQueuedOf`). */
  dropFrozenOf(conn: TcpConnection): void {
    const ph = this.table.unholdOf(conn);
    if (ph === undefined) return;
    // The addresses matter only as an IPv6 tuple's handles (as in `attach`).
    const c = conn.ipv6 ? conn.state.const : null;
    this.dropHeld(ph, c?.localIp ?? 0, c?.remoteIp ?? 0);
  }

  /** Forget the placeholder: later segments for the 4-tuple are handled as for any unknown one. */
  dropFrozen(localIp: number, localPort: number, remoteIp: number, remotePort: number): void {
    this.dropHeld(this.table.unhold(localIp, localPort, remoteIp, remotePort), localIp, remoteIp);
  }

  /** What is left to do of a placeholder the table let go of (`held`, if it had one for `c`). */
  private dropHeld(held: Placeholder | undefined, localIp: number, remoteIp: number): void {
    if (held === undefined) return;
    if (held.queue.length > 0) this.layer.env.counters.inc('drop.tcp.frozen-discarded', held.queue.length);
    const addrs = this.layer.env.addrs;
    if (remoteIp >= TWO_32 && addrs) {
      addrs.release(localIp);
      addrs.release(remoteIp);
    }
  }

  /**
   * Copy the segment into a fresh IPv4 packet, or an IPv6 one (fixed header, TCP behind it) for
   * an IPv6 connection (the receive buffer is reused after we return).
   */
  hold(ph: Placeholder, ip: IpInfo, buf: Uint8Array, off: number, len: number): void {
    const counters = this.layer.env.counters;
    if (ph.forward === null && ph.queue.length >= FROZEN_QUEUE_LIMIT) {
      counters.inc('drop.tcp.frozen-overflow');
      return;
    }
    const pkt = ip.src >= TWO_32 ? this.packet6(ip, buf, off, len) : this.packet4(ip, buf, off, len);
    if (pkt === null) {
      counters.inc('drop.tcp.frozen-unheld');
      return;
    }
    if (ph.forward !== null) {
      if (ph.forward(pkt)) {
        counters.inc('tcp.frozen.forwarded');
        return;
      }
      // The owner it went to is dead: held for whoever rebuilds the connection, or the peer's
      // segments of the whole rebuild (its retransmissions among them) are lost, and each stream
      // waits for its peer's next timeout after the rebuild, backed off through the dead time.
      if (ph.queue.length >= FROZEN_QUEUE_LIMIT) {
        counters.inc('drop.tcp.frozen-overflow');
        return;
      }
      counters.inc('tcp.frozen.refused');
    }
    counters.inc('tcp.frozen.queued');
    ph.queue.push(pkt);
  }

  private packet6(ip: IpInfo, buf: Uint8Array, off: number, len: number): Uint8Array | null {
    const addrs = this.layer.env.addrs;
    if (!addrs || len > 0xffff) return null;
    const pkt = new Uint8Array(40 + len);
    pkt[0] = 0x60 | (ip.tos >>> 4);
    pkt[1] = (ip.tos & 0x0f) << 4;
    pkt[4] = len >>> 8;
    pkt[5] = len & 0xff;
    pkt[6] = IpProto.TCP;
    pkt[7] = ip.ttl > 0 ? ip.ttl : 64;
    addrs.write(ip.src, pkt, 8);
    addrs.write(ip.dst, pkt, 24);
    pkt.set(buf.subarray(off, off + len), 40);
    return pkt;
  }

  private packet4(ip: IpInfo, buf: Uint8Array, off: number, len: number): Uint8Array {
    const pkt = new Uint8Array(20 + len);
    const h = this.pktHdr;
    h.tos = ip.tos;
    h.totalLength = 20 + len;
    h.id = 0;
    h.df = true;
    h.mf = false;
    h.fragOffset = 0;
    h.ttl = ip.ttl > 0 ? ip.ttl : 64;
    h.protocol = IpProto.TCP;
    h.src = ip.src;
    h.dst = ip.dst;
    encodeIpv4(h, pkt, 0);
    pkt.set(buf.subarray(off, off + len), 20);
    return pkt;
  }
}
