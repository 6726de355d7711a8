/**
 * A Chimney host on a real Linux TAP device: wall-clock time, cryptographic randomness, one stack
 * interface on the TAP, an optional capture. The CLI's `serve` and `get` build on it.
 */
import { type Clock, RealClock } from '../core/clock.ts';
import { InvalidArgumentError } from '../core/errors.ts';
import { CryptoRandom, type Random } from '../core/random.ts';
import { CarrierTee } from '../link/carrier-tee.ts';
import { impairLink, parseImpairment } from '../link/impaired-link.ts';
import type { Link } from '../link/link.ts';
import { capture, PcapWriter } from '../link/pcap.ts';
import { TapLink } from '../link/tap-link.ts';
import { Host } from '../socket/host.ts';
import { Stack, type StackOptions } from '../stack/stack.ts';
import { OUTPUT_BUDGET_BYTES } from '../stack/tcp/tcp-output.ts';
import type { TcpCached } from '../state/tcp-state.ts';
import { formatMac, parseMac } from '../wire/addr.ts';
import { checkAddresses } from './addresses.ts';

export interface TapHostOptions {
  /** TAP device name; opened if it exists, else created (and removed again on close). */
  tap: string;
  /**
   * Our addresses with their prefixes, e.g. 10.9.0.10/24 or ['10.9.0.10/24', 'fd00::10/64'], of
   * either family or both; IPv6 ones alone make an IPv6-only host (no ARP). The first IPv4 one
   * (else the first IPv6 one) names the default MAC.
   */
  ip: string | readonly string[];
  /**
   * Upper bound of the random delay before each address's first duplicate address detection probe
   * (RFC 4862 5.4.2), in ms; default TAP_DAD_DELAY_MS, 0 probes at once.
   */
  dadDelayMs?: number;
  /** IPv4 default gateway (on the subnet of an IPv4 address). */
  gw?: string;
  /** IPv6 default router (link-local, or on the subnet of an IPv6 address). */
  gw6?: string;
  /** Our MAC; by default a locally administered one derived from the address. */
  mac?: string;
  /** Device MTU to set (default: keep the device's). */
  mtu?: number;
  /** Write every frame to this pcap file. */
  pcap?: string;
  /** Use segmentation and checksum offload when the kernel grants it (default true). */
  offload?: boolean;
  /** Defaults for TCP connections (buffer sizes, ...). */
  tcp?: Partial<TcpCached>;
  /**
   * Loss, duplication, reordering and delay made in Chimney's link, e.g. 'loss=1%,reorder=1%'
   * (see parseImpairment). The TAP is then opened without offloads, so one lost frame is one
   * lost segment rather than a whole coalesced super-segment.
   */
  impair?: string;
  /** 802.1Q VLAN id (1..4094) every frame is tagged with; untagged when absent. */
  vlan?: number;
}

export interface TapHost {
  readonly host: Host;
  readonly stack: Stack;
  readonly tap: TapLink;
  /**
   * Tell `watcher` of the TAP's carrier changes too, after the stack. Not `tap.onCarrier`: a link
   * has one carrier handler, the stack's, and that would replace it.
   */
  onCarrier(watcher: (up: boolean) => void): void;
  /** Flush and close the capture, stop the stack, close the TAP (removing it if we created it). */
  close(): void;
}

/**
 * DAD's initial random delay on a real link: RFC 4862 5.4.2 asks for one up to
 * MAX_RTR_SOLICITATION_DELAY (1 s) when the interface comes up, so that hosts powered on together
 * do not probe together, and Linux draws it below rtr_solicit_delay, also 1 s by default
 * (addrconf_dad_kick). The same bound here keeps Chimney's first NS no sooner than a kernel's.
 */
export const TAP_DAD_DELAY_MS = 1000;

/** Large buffers by default: a real link has a real bandwidth-delay product. */
export const TAP_TCP_DEFAULTS: Partial<TcpCached> = { sndBufSize: 4 << 20, rcvBufSize: 4 << 20 };

/** A locally administered unicast MAC, 02:00 followed by 32 bits of the address (`macSeed`). */
export function macForIp(ip: number): string {
  return formatMac(0x020000000000 + ip);
}

/**
 * The stack a host on a real link runs: large buffers and DAD's initial delay. Given a clock and a
 * randomness source of the caller's, so a test can run the same stack on simulated time.
 */
export function tapStackOptions(
  o: Pick<TapHostOptions, 'tcp' | 'dadDelayMs'>,
  clock: Clock,
  random: Random,
): StackOptions {
  return {
    clock,
    random,
    name: 'chimney',
    tcp: { ...TAP_TCP_DEFAULTS, ...o.tcp },
    ipv6: { dadDelayMs: o.dadDelayMs ?? TAP_DAD_DELAY_MS },
  };
}

/** Check the options that need no system call; throws InvalidArgumentError naming the flag. */
export function checkTapHostOptions(o: TapHostOptions): void {
  const bad = (flag: string, why: string): never => {
    throw new InvalidArgumentError(`${flag}: ${why}`);
  };
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(o.tap)) bad('--tap', `'${o.tap}' is not a device name (1..15 chars)`);
  checkAddresses(o.ip, { gw: o.gw, gw6: o.gw6, mtu: o.mtu });
  if (o.mac !== undefined) {
    try {
      parseMac(o.mac);
    } catch {
      bad('--mac', `'${o.mac}' is not a MAC address (aa:bb:cc:dd:ee:ff)`);
    }
  }
  if (o.mtu !== undefined && (!Number.isInteger(o.mtu) || o.mtu < 576 || o.mtu > 65521)) {
    bad('--mtu', `${o.mtu} is outside 576..65521`);
  }
  if (o.vlan !== undefined && (!Number.isInteger(o.vlan) || o.vlan < 1 || o.vlan > 4094)) {
    bad('--vlan', `${o.vlan} is outside 1..4094`);
  }
  if (
    o.dadDelayMs !== undefined &&
    !(Number.isInteger(o.dadDelayMs) && o.dadDelayMs >= 0 && o.dadDelayMs <= 60_000)
  ) {
    bad('--dad-delay', `${o.dadDelayMs} is not a whole number of ms in 0..60000`);
  }
  if (o.impair !== undefined) {
    try {
      parseImpairment(o.impair);
    } catch (e) {
      bad('--impair', (e as Error).message);
    }
  }
}

/**
 * Open the TAP and build a host on it. Throws InvalidArgumentError for bad options and LinkError
 * when the TAP cannot be opened; nothing stays open after a throw.
 */
export function createTapHost(o: TapHostOptions): TapHost {
  checkTapHostOptions(o);
  const clock = new RealClock();
  // `offload: false` only stops us asking the link for offloads on send; what the kernel hands us
  // (coalesced segments, partial checksums) the stack takes either way.
  const impaired = o.impair !== undefined;
  const tap = TapLink.open({ name: o.tap, mtu: o.mtu, clock, vnetHdr: !impaired });
  let writer: PcapWriter | null = null;
  let stack: Stack | null = null;
  let tee: CarrierTee | null = null;
  try {
    let link: Link = impaired ? impairLink(tap, parseImpairment(o.impair!), clock, new CryptoRandom()) : tap;
    if (o.pcap !== undefined) {
      writer = new PcapWriter(o.pcap, { clock, epochMs: Date.now() - clock.now() });
      link = capture(link, writer);
    }
    tee = new CarrierTee(link);
    stack = new Stack(tapStackOptions(o, clock, new CryptoRandom()));
    stack.tcp.outputBudget = OUTPUT_BUDGET_BYTES;
    const a = checkAddresses(o.ip, { gw: o.gw, gw6: o.gw6, mtu: o.mtu });
    const iface = stack.addInterface(link, {
      mac: o.mac ?? macForIp(a.macSeed),
      ip: [...a.v4, ...a.v6],
      vlan: o.vlan,
      offload: o.offload ?? true,
    });
    if (o.gw !== undefined) stack.setDefaultGateway(o.gw);
    if (a.gw6 !== undefined) stack.ip6.addRoute(iface, '::/0', a.gw6);
  } catch (e) {
    stack?.close();
    writer?.close();
    tap.close();
    throw e;
  }
  const s = stack;
  const w = writer;
  const t = tee;
  let closed = false;
  return {
    host: new Host(s),
    stack: s,
    tap,
    onCarrier: (watcher) => t.watch(watcher),
    close() {
      if (closed) return;
      closed = true;
      s.close();
      w?.close();
      tap.close();
    },
  };
}

/**
 * Resolves once every IPv6 address of the stack has passed duplicate address detection, so the
 * first connection after it finds its source address usable. Throws InvalidArgumentError naming an
 * address another node holds, and after `timeoutMs` naming the ones still tentative.
 */
export async function ipv6Settled(stack: Stack, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const all = stack.interfaces.flatMap((i) => (stack.ip6.enabled(i) ? stack.ip6.addresses(i) : []));
    const dup = all.find((a) => a.state === 'duplicate');
    if (dup) {
      throw new InvalidArgumentError(
        `--ip ${dup.ip}: duplicate address detection found it in use on the link (RFC 4862)`,
      );
    }
    const pending = all.filter((a) => a.state === 'tentative');
    if (pending.length === 0) return;
    if (Date.now() >= end) {
      throw new InvalidArgumentError(
        `--ip: ${pending.map((a) => a.ip).join(', ')} still tentative after ${timeoutMs} ms`,
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
