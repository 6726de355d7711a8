/**
 * A Chimney host on several TAP devices of one bridge (or one TAP with --workers): one address and
 * one MAC on a team of NICs, each NIC owning one TAP. With `workers` each NIC is a WorkerNic whose
 * thread opens its TAP and runs the connections offloaded to it; without, LocalNics run them on
 * the main thread. `chimney serve` builds on it.
 */
import { type Clock, RealClock } from '../core/clock.ts';
import { Counters } from '../core/counters.ts';
import { InvalidArgumentError, InvalidStateError } from '../core/errors.ts';
import { CryptoRandom } from '../core/random.ts';
import type { Link } from '../link/link.ts';
import { capture, type PcapWriter } from '../link/pcap.ts';
import { TapLink } from '../link/tap-link.ts';
import { LocalNic } from '../nic/local-nic.ts';
import type { Nic } from '../nic/nic.ts';
import { WorkerNic } from '../nic/worker-nic.ts';
import type { OffloadPolicy } from '../offload/offload-manager.ts';
import type { Ipv6Options } from '../stack/ipv6.ts';
import { OUTPUT_BUDGET_BYTES } from '../stack/tcp/tcp-output.ts';
import type { TcpCached } from '../state/tcp-state.ts';
import type { HealthOptions } from '../team/health.ts';
import { ProbeTap } from '../team/probe-tap.ts';
import type { RestartOptions, TeamMember } from '../team/team.ts';
import { assembleTeamHost, probeMacFor, type TeamHost } from '../team/team-host.ts';
import { parseMac } from '../wire/addr.ts';

export interface TapTeamOptions {
  taps: readonly string[];
  /** The team's IPv4 address with prefix; absent: IPv6 only (addresses enabled on its stack later). */
  ip?: string;
  mac: string;
  /** The IPv6 layer's options of the team's stack (DAD's initial delay). */
  ipv6?: Ipv6Options;
  mtu?: number;
  /** Use the TAPs' checksum and segmentation offload (default true). */
  offload?: boolean;
  /** 802.1Q VLAN id of the team's interface, its probes and its announcements. */
  vlan?: number;
  /** One WorkerNic (its own thread) per TAP; false: LocalNics on the main thread. */
  workers: boolean;
  policy?: Partial<OffloadPolicy>;
  /** Addresses probed by ARP from every member (reachability); empty: carrier and death only. */
  probeTargets?: readonly string[];
  health?: HealthOptions;
  failback?: boolean;
  /** TeamOptions.oneReceivePort (default true; `--no-one-receive-port`). */
  oneReceivePort?: boolean;
  tcp?: Partial<TcpCached>;
  /** Heartbeat watch of the workers (defaults 50 ms / 2000 ms). */
  heartbeatMs?: number;
  deadAfterMs?: number;
  /**
   * Capture every frame of every member here, offloaded connections' included: a member on this
   * thread writes directly, a worker sends its records over (see WorkerNicOptions.capture).
   */
  pcap?: PcapWriter;
  /** A dead worker is started again on its TAP (with --workers): backoff and limit (Team). */
  restart?: RestartOptions;
}

/**
 * How long a dead worker's thread may take to exit once told to stop before its TAP is given up
 * on for this try: a thread exits at its next interrupt check, or once a request of its on the
 * libuv pool ends (its TAP poll, woken at the stop), and its heap's teardown with thousands of
 * connections takes hundreds of ms more; seconds at load.
 */
export const THREAD_EXIT_BOUND_MS = 10_000;

/** What threadGone needs of a worker NIC. */
export interface StoppableThread {
  readonly threadExited: Promise<number>;
  terminateThread(): unknown;
  /** Let go of its TAP though its thread has not exited (WorkerNic.detachTap); true if done. */
  detachTap?(): boolean;
  /** Whether detachTap let its TAP go. */
  readonly tapDetached?: boolean;
}

/**
 * A dead member's thread gone, so its TAP is free (TUNSETIFF refuses a TAP still attached). A
 * member the team took for dead while its thread still runs (the team's heartbeat timeout, a
 * stall past its progress watch: `Team.declareDead`) never exits by itself, and its TAP would be
 * held for good, the member never restarted: it is told to stop here (no reset: the team calls
 * the restart and the dead-port opener only once the failover moved its connections off,
 * `Team.afterMove`). A thread wedged in native code may still not exit: past `boundMs` its TAP
 * is let go under it (detachTap; 'detached': the next opener may still meet EBUSY while a system
 * call of that thread's on the TAP lasts, and waits it out as after any close), or where that
 * cannot be done this rejects (InvalidStateError), and the team tries again at its next backoff.
 */
export async function threadGone(
  nic: StoppableThread,
  name: string,
  clock: Clock,
  boundMs = THREAD_EXIT_BOUND_MS,
): Promise<'exited' | 'detached'> {
  let exited = false;
  void nic.threadExited.then(() => {
    exited = true;
  });
  // Settled exits are seen after one turn of microtasks.
  await Promise.resolve();
  if (exited) return 'exited';
  // Let go already (the other of the dead-port opener and the restart asked first): nothing to
  // wait for, and the wait would end in a rejection for a TAP that is free.
  if (nic.tapDetached === true) return 'detached';
  nic.terminateThread();
  let timer: ReturnType<Clock['createTimer']> | null = null;
  const late = new Promise<never>((_, reject) => {
    timer = clock.createTimer(() =>
      reject(
        new InvalidStateError(
          `--tap ${name}: the dead worker's thread has not exited ${boundMs} ms after it was told to stop; its TAP is still held`,
        ),
      ),
    );
    timer.arm(boundMs);
  });
  try {
    await Promise.race([nic.threadExited, late]);
    return 'exited';
  } catch (e) {
    if (!exited && nic.detachTap?.() === true) return 'detached';
    throw e;
  } finally {
    timer!.disarm();
  }
}

export interface TapTeam {
  readonly team: TeamHost;
  /** Resolves once every worker runs and every member with carrier is usable; rejects if one died. */
  ready(timeoutMs: number): Promise<void>;
  close(): void;
}

/**
 * The send ring a worker NIC gives a connection it is handed (WorkerNicOptions.sendPlacementRing;
 * the receive ring keeps the placement of DEFAULT_RING, whose capacity is the window offered), below the
 * largest it may grow to (DEFAULT_RING). A ring's positions run over its whole capacity, so a
 * download touches every page of its ring however little it holds at once: at 256 KiB the first
 * quarter of each NIC's connections in the connect burst of 1,000 (ringUnderLoad reckons a burst's
 * first placements against the few placed before them) faulted in 64 pages each while their
 * sockets held 64 KiB. 128 KiB is twice the flight of a Linux reader's 62 KiB window, what its
 * sender grows to (tcp-mem.ts sendRingTarget): placed at it while the NIC's share covers it
 * (sendRingAtPlacement, 512 a NIC), such a download never grows, and its socket fills it at once
 * (WorkerConnectionHandle.sendGrown). A faster sender still grows to DEFAULT_RING. BENCHMARKS.md,
 * "Ring memory in the connect burst of 1,000".
 */
const PLACEMENT_RING = 128 << 10;

/**
 * Open the team. With offload, the NICs' TAPs take super-segments to cut and hand over coalesced
 * ones with partial checksums; the NIC engines complete the checksum of what they pass up to the
 * host stack, which hears frames without their offload facts.
 */
export function createTapTeam(o: TapTeamOptions, clock = new RealClock()): TapTeam {
  if (o.taps.length < 1 || o.taps.length > 16) throw new InvalidArgumentError('a team needs 1..16 TAPs');
  if (new Set(o.taps).size !== o.taps.length) throw new InvalidArgumentError('--tap: a TAP is named twice');
  const random = new CryptoRandom();
  // One ISN function for the host and its NICs: a four-tuple reopened on another NIC's thread
  // still starts above its last ISN (isn.ts).
  const isnSecret = random.fill(new Uint8Array(16));
  const counters = new Counters();
  const mac = parseMac(o.mac);
  const members: TeamMember[] = [];
  const opened: { close(): void }[] = [];
  /** The WorkerNics made here: their workers' start is waited for (`ready`). */
  const workers: WorkerNic[] = [];
  /**
   * Member `i`'s worker on its TAP; `restart` starts the next one once this one's thread exited.
   * A restarted worker never creates its TAP (`create: false`): one serve made itself went with the
   * dead worker's descriptors, and a new device of that name would be in no bridge, a port with
   * carrier that reaches nobody.
   */
  const workerMember = (name: string, i: number, create?: false): TeamMember & { nic: WorkerNic } => {
    const nic = new WorkerNic({
      // A restart's: loaded first, it opens the TAP once the host has let it go (TeamMember.restart).
      openWhenLet: create === false,
      id: name,
      link: {
        tap: { name, mtu: o.mtu, vnetHdr: o.offload !== false, ...(create === false ? { create } : {}) },
      },
      seed: random.u32(),
      isnSecret,
      sendPlacementRing: PLACEMENT_RING,
      heartbeatMs: o.heartbeatMs,
      deadAfterMs: o.deadAfterMs,
      capture: o.pcap ? (records) => o.pcap!.writeRecords(records) : undefined,
    });
    // The worker owns the TAP: probes and gratuitous ARP go out through its host link.
    const tap = new ProbeTap(nic.hostLink, probeMacFor(mac, i), counters, {
      rxFrames: () => nic.rxFrames,
      readState: () => nic.rxReadState(),
      rxSince: () => nic.rxSince(),
    });
    // Once the worker is dead and no member can carry the host's traffic, the host opens the
    // TAP on this thread itself (the thread's exit released its descriptors). Never created
    // here: a TAP that went with the worker's descriptors is no longer a port of the segment.
    const hostPortAfterDeath = async (): Promise<ProbeTap> => {
      await threadGone(nic, name, clock);
      // Its last poll may hold the TAP a moment past the exit: waited out on the clock, as every
      // other connection of the host runs on this thread.
      const link = await TapLink.openWhenFree({
        name,
        mtu: o.mtu,
        clock,
        vnetHdr: o.offload !== false,
        create: false,
      });
      const wire: Link = o.pcap ? capture(link, o.pcap) : link;
      return new ProbeTap(wire, probeMacFor(mac, i), counters, {
        readState: () => ({ drains: link.drains, empty: link.queueEmpty(), drainedAt: link.drainedAt }),
        rxSince: () => link.rxSince,
      });
    };
    // A new worker on the same TAP, once this thread let it go: a still-attached TAP answers the
    // new one's TUNSETIFF with EBUSY. It loads its code first and opens the TAP only once the
    // host, which may carry its own traffic there meanwhile, has let it go. One that dies starting
    // is refused once its thread is gone too, so the port is free again for the host or the next
    // try.
    const restart = async (letGo: () => void): Promise<TeamMember> => {
      await threadGone(nic, name, clock);
      const next = workerMember(name, i, false);
      try {
        await next.nic.loaded;
        letGo();
        next.nic.letOpen();
        await next.nic.ready();
      } catch (e) {
        next.nic.close();
        await next.nic.threadExited;
        const why = next.nic.death?.error?.message ?? (e as Error).message;
        throw new InvalidArgumentError(`--tap ${name}: the restarted worker died while starting: ${why}`);
      }
      return next;
    };
    return { nic, tap, hostLink: tap, hostPortAfterDeath, restart };
  };
  try {
    o.taps.forEach((name, i) => {
      if (o.workers) {
        const m = workerMember(name, i);
        opened.push(m.nic);
        workers.push(m.nic);
        members.push(m);
      } else {
        const link = TapLink.open({ name, mtu: o.mtu, clock, vnetHdr: o.offload !== false });
        opened.push(link);
        const wire: Link = o.pcap ? capture(link, o.pcap) : link;
        const tap = new ProbeTap(wire, probeMacFor(mac, i), counters, {
          readState: () => ({ drains: link.drains, empty: link.queueEmpty(), drainedAt: link.drainedAt }),
          rxSince: () => link.rxSince,
        });
        // One MAC on every TAP: the switch delivers the team's frames to the port it learned the
        // MAC on (the one receive port, or whichever port sent last without it), so this NIC's
        // segments may wait in a sibling's TAP, which this NIC's drain does not read.
        const nic = new LocalNic({
          id: name,
          link: tap,
          clock,
          random: random.fork(),
          isnSecret,
          moreInput: o.taps.length > 1 ? () => true : undefined,
        });
        opened.push(nic);
        members.push({ nic, tap });
      }
    });
  } catch (e) {
    for (const x of opened.reverse()) x.close();
    throw e;
  }
  const team = assembleTeamHost({
    clock,
    random,
    isnSecret,
    name: 'chimney',
    ip: o.ip,
    ipv6: o.ipv6,
    mac: o.mac,
    members,
    counters,
    probeTargets: o.probeTargets,
    vlan: o.vlan,
    health: o.health,
    failback: o.failback,
    oneReceivePort: o.oneReceivePort,
    tcp: o.tcp,
    policy: o.policy,
    restart: o.restart,
  });
  // On a real clock one connection's output must not hold a turn (TCP small queues; a worker NIC
  // and a lone TAP host budget theirs): the host's stack and every same-thread NIC share this one.
  team.stack.tcp.outputBudget = OUTPUT_BUDGET_BYTES;
  for (const nic of team.nics)
    if (nic.engine !== undefined) nic.engine.tcp.outputBudget = OUTPUT_BUDGET_BYTES;
  return {
    team,
    async ready(timeoutMs: number): Promise<void> {
      try {
        await Promise.all(workers.map((w) => w.ready()));
      } catch (e) {
        // Say why: the worker's own error (a TAP that is busy, missing rights) is the useful part.
        const dead = workers.find((w) => w.death !== null);
        const d = dead?.death;
        if (!dead || !d) throw e;
        const why = d.error?.message ?? (d.exitCode !== undefined ? `exit code ${d.exitCode}` : d.kind);
        throw new InvalidArgumentError(`--tap ${dead.id}: its worker died while starting: ${why}`);
      }
      const end = Date.now() + timeoutMs;
      // A member comes up through its hold; one without carrier (an unplugged TAP) is not waited for.
      const pending = (): Nic[] => team.nics.filter((n) => n.linkUp && !team.team.isUsable(n));
      while (pending().length > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    },
    close(): void {
      team.close();
    },
  };
}
