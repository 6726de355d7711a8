/**
 * The addresses `chimney serve` and `chimney get` are given: `--ip` (repeatable, either family),
 * `--gw` (the IPv4 default gateway) and `--gw6` (the IPv6 default router). Checked here, before
 * any device is opened, so a mistake is reported with the flag and the reason and nothing is made.
 */
import { InvalidArgumentError } from '../core/errors.ts';
import { type AddressTable, isV6 } from '../stack/address-table.ts';
import {
  formatIpv6,
  ipv6PrefixMatch,
  isIpv6LinkLocal,
  isIpv6Loopback,
  isIpv6Multicast,
  isIpv6Unspecified,
  parseCidr,
  parseIpv4,
  parseIpv6,
  parseIpv6Cidr,
} from '../wire/addr.ts';

/** The IPv6 minimum link MTU (RFC 8200 5): a smaller --mtu cannot carry IPv6. */
export const IPV6_MIN_MTU = 1280;

export interface CheckedAddresses {
  /** IPv4 'a.b.c.d/n', in the order given; the first names the host (its default MAC). */
  v4: string[];
  /** IPv6 'addr/n' in RFC 5952 form, in the order given. */
  v6: string[];
  /** The first IPv4 address as a number, or null when every address is IPv6. */
  primary: number | null;
  /**
   * 32 bits that name the host, for its default MAC (02:00 + these): the first IPv4 address, or
   * the last 32 bits of the first IPv6 one on an IPv6-only host.
   */
  macSeed: number;
  /** The IPv6 default router, RFC 5952 form, when --gw6 was given. */
  gw6?: string;
}

function bad(flag: string, why: string): never {
  throw new InvalidArgumentError(`${flag}: ${why}`);
}

/** Split a comma-separated `--ip` value (repeatable) into its addresses. */
export function collectIps(v: string, prev: string[] | undefined): string[] {
  const list = v
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
  if (list.length === 0) bad('--ip', `'${v}' names no address`);
  return [...(prev ?? []), ...list];
}

/**
 * Check and sort the addresses. An IPv6 address on a TAP must be a global or unique-local unicast
 * address with a prefix: the link-local one is formed from the MAC (RFC 4862 5.3). Either family
 * may be absent, as on Linux: IPv6 addresses alone make an IPv6-only interface (no ARP). Throws
 * InvalidArgumentError naming the flag.
 */
export function checkAddresses(
  ips: string | readonly string[],
  o: { gw?: string; gw6?: string; mtu?: number } = {},
): CheckedAddresses {
  const all = typeof ips === 'string' ? [ips] : [...ips];
  if (all.length === 0) bad('--ip', 'give at least one address, e.g. --ip 10.9.0.10/24');
  const v4: { s: string; ip: number; mask: number }[] = [];
  const v6: { s: string; ip: Uint8Array; prefixLength: number }[] = [];
  for (const s of all) {
    if (!s.includes('/')) bad('--ip', `'${s}' needs a prefix, e.g. ${s.includes(':') ? '/64' : '/24'}`);
    if (s.includes(':')) {
      let c: { ip: Uint8Array; prefixLength: number };
      try {
        c = parseIpv6Cidr(s);
      } catch (e) {
        bad('--ip', `'${s}' is not an IPv6 address/prefix (${(e as Error).message})`);
      }
      if (c.prefixLength === 0 || c.prefixLength === 128)
        bad('--ip', `'${s}': an IPv6 prefix must be 1..127 (the on-link subnet, e.g. /64)`);
      if (isIpv6Multicast(c.ip) || isIpv6Unspecified(c.ip) || isIpv6Loopback(c.ip))
        bad('--ip', `'${s}' is not a unicast address`);
      if (isIpv6LinkLocal(c.ip))
        bad('--ip', `'${s}' is link-local: Chimney forms its link-local address from the MAC`);
      const text = `${formatIpv6(c.ip)}/${c.prefixLength}`;
      if (v6.some((x) => x.s === text)) bad('--ip', `${s} is given twice`);
      v6.push({ s: text, ip: c.ip, prefixLength: c.prefixLength });
    } else {
      let c: { ip: number; prefixLength: number; mask: number };
      try {
        c = parseCidr(s);
      } catch (e) {
        bad('--ip', `'${s}' is not an address/prefix (${(e as Error).message})`);
      }
      if (c.prefixLength === 0) bad('--ip', `'${s}' needs a prefix, e.g. /24`);
      if (v4.some((x) => x.ip === c.ip)) bad('--ip', `${s} is given twice`);
      v4.push({ s, ip: c.ip, mask: c.mask });
    }
  }
  if (o.gw !== undefined) {
    if (v4.length === 0) bad('--gw', 'an IPv4 gateway needs an IPv4 --ip (e.g. --ip 10.9.0.10/24)');
    let gw = 0;
    try {
      gw = parseIpv4(o.gw);
    } catch {
      bad(
        '--gw',
        `'${o.gw}' is not an IPv4 address${o.gw.includes(':') ? ' (an IPv6 router goes in --gw6)' : ''}`,
      );
    }
    if (!v4.some((a) => (gw & a.mask) >>> 0 === (a.ip & a.mask) >>> 0)) {
      bad('--gw', `${o.gw} is not on the subnet of ${v4.map((a) => a.s).join(' or ')}`);
    }
  }
  let gw6: string | undefined;
  if (o.gw6 !== undefined) {
    let r: Uint8Array;
    try {
      r = parseIpv6(o.gw6);
    } catch (e) {
      bad('--gw6', `'${o.gw6}' is not an IPv6 address (${(e as Error).message})`);
    }
    if (v6.length === 0) bad('--gw6', 'needs an IPv6 --ip (e.g. --ip fd00::10/64)');
    if (isIpv6Multicast(r) || isIpv6Unspecified(r) || isIpv6Loopback(r))
      bad('--gw6', `'${o.gw6}' is not a unicast address`);
    // A router is a neighbor: reachable on the link by its link-local address or inside our prefix.
    if (!isIpv6LinkLocal(r) && !v6.some((a) => ipv6PrefixMatch(a.ip, 0, r, 0, a.prefixLength)))
      bad('--gw6', `${o.gw6} is neither link-local nor on the subnet of ${v6.map((a) => a.s).join(' or ')}`);
    if (v6.some((a) => a.s.startsWith(`${formatIpv6(r)}/`)))
      bad('--gw6', `${o.gw6} is one of Chimney's own addresses`);
    gw6 = formatIpv6(r);
  }
  if (v6.length > 0 && o.mtu !== undefined && o.mtu < IPV6_MIN_MTU)
    bad('--mtu', `${o.mtu} is below ${IPV6_MIN_MTU}, the smallest MTU that carries IPv6`);
  const first6 = v6[0]?.ip;
  const primary = v4.length > 0 ? v4[0]!.ip : null;
  const macSeed =
    primary ?? ((first6![12]! << 24) | (first6![13]! << 16) | (first6![14]! << 8) | first6![15]!) >>> 0;
  return { v4: v4.map((a) => a.s), v6: v6.map((a) => a.s), primary, macSeed, gw6 };
}

/** `[fd00::1]` (a URL's host) → `fd00::1`; an IPv4 literal unchanged; null for anything else. */
export function urlHostLiteral(hostname: string): { host: string; family: 4 | 6 } | null {
  if (hostname.startsWith('[') && hostname.endsWith(']')) {
    const inner = hostname.slice(1, -1);
    try {
      return { host: formatIpv6(parseIpv6(inner)), family: 6 };
    } catch {
      return null;
    }
  }
  try {
    parseIpv4(hostname);
    return { host: hostname, family: 4 };
  } catch {
    return null;
  }
}

/** 'a.b.c.d:port', or '[v6]:port' as in a URL, for an address of either family (a handle for IPv6). */
export function formatEndpoint(addrs: AddressTable, ip: number, port: number): string {
  return isV6(ip) ? `[${addrs.format(ip)}]:${port}` : `${addrs.format(ip)}:${port}`;
}
