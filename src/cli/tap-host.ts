/**
 * A Chimney host on a real Linux TAP device: wall-clock time, cryptographic randomness, one stack
 * interface on the TAP, an optional capture. The CLI's `serve` and `get` build on it.
 */
import { RealClock } from '../core/clock.ts';
import { InvalidArgumentError } from '../core/errors.ts';
import { CryptoRandom } from '../core/random.ts';
import { impairLink, parseImpairment } from '../link/impaired-link.ts';
import type { Link } from '../link/link.ts';
import { capture, PcapWriter } from '../link/pcap.ts';
import { TapLink } from '../link/tap-link.ts';
import { Host } from '../socket/host.ts';
import { Stack } from '../stack/stack.ts';
import { OUTPUT_BUDGET_BYTES } from '../stack/tcp/tcp-output.ts';
import type { TcpCached } from '../state/tcp-state.ts';
import { formatMac, parseCidr, parseIpv4, parseMac } from '../wire/addr.ts';

export interface TapHostOptions {
  /** TAP device name; opened if it exists, else created (and removed again on close). */
  tap: string;
  /** Our address with its prefix, e.g. 10.9.0.10/24. */
  ip: string;
  /** Default gateway (on the subnet of `ip`). */
  gw?: string;
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
  /** Flush and close the capture, stop the stack, close the TAP (removing it if we created it). */
  close(): void;
}

/** Large buffers by default: a real link has a real bandwidth-delay product. */
export const TAP_TCP_DEFAULTS: Partial<TcpCached> = { sndBufSize: 4 << 20, rcvBufSize: 4 << 20 };

/** A locally administered unicast MAC, 02:00 followed by the IPv4 address. */
export function macForIp(ip: number): string {
  return formatMac(0x020000000000 + ip);
}

/** Check the options that need no system call; throws InvalidArgumentError naming the flag. */
export function checkTapHostOptions(o: TapHostOptions): void {
  const bad = (flag: string, why: string): never => {
    throw new InvalidArgumentError(`${flag}: ${why}`);
  };
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(o.tap)) bad('--tap', `'${o.tap}' is not a device name (1..15 chars)`);
  let cidr: { ip: number; mask: number; prefixLength: number } | undefined;
  try {
    cidr = parseCidr(o.ip);
  } catch (e) {
    bad('--ip', `'${o.ip}' is not an address/prefix (${(e as Error).message})`);
  }
  if (!o.ip.includes('/') || cidr!.prefixLength === 0) bad('--ip', `'${o.ip}' needs a prefix, e.g. /24`);
  if (o.gw !== undefined) {
    let gw = 0;
    try {
      gw = parseIpv4(o.gw);
    } catch {
      bad('--gw', `'${o.gw}' is not an IPv4 address`);
    }
    if ((gw & cidr!.mask) >>> 0 !== (cidr!.ip & cidr!.mask) >>> 0) {
      bad('--gw', `${o.gw} is not on the subnet of ${o.ip}`);
    }
  }
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
  try {
    let link: Link = impaired ? impairLink(tap, parseImpairment(o.impair!), clock, new CryptoRandom()) : tap;
    if (o.pcap !== undefined) {
      writer = new PcapWriter(o.pcap, { clock, epochMs: Date.now() - clock.now() });
      link = capture(link, writer);
    }
    stack = new Stack({
      clock,
      random: new CryptoRandom(),
      name: 'chimney',
      tcp: { ...TAP_TCP_DEFAULTS, ...o.tcp },
    });
    stack.tcp.outputBudget = OUTPUT_BUDGET_BYTES;
    const ip = parseCidr(o.ip).ip;
    stack.addInterface(link, {
      mac: o.mac ?? macForIp(ip),
      ip: o.ip,
      vlan: o.vlan,
      offload: o.offload ?? true,
    });
    if (o.gw !== undefined) stack.setDefaultGateway(o.gw);
  } catch (e) {
    stack?.close();
    writer?.close();
    tap.close();
    throw e;
  }
  const s = stack;
  const w = writer;
  let closed = false;
  return {
    host: new Host(s),
    stack: s,
    tap,
    close() {
      if (closed) return;
      closed = true;
      s.close();
      w?.close();
      tap.close();
    },
  };
}
