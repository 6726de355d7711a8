import { InvalidArgumentError } from '../core/errors.ts';

/** The all-ones Ethernet address. */
export const BROADCAST_MAC = 0xffffffffffff;

const TWO_32 = 0x1_0000_0000;

/** Big-endian u16. */
export function readU16(buf: Uint8Array, off: number): number {
  return (buf[off]! << 8) | buf[off + 1]!;
}

/** Big-endian u32; `>>> 0` keeps values with the top bit set positive. */
export function readU32(buf: Uint8Array, off: number): number {
  return ((buf[off]! << 24) | (buf[off + 1]! << 16) | (buf[off + 2]! << 8) | buf[off + 3]!) >>> 0;
}

/** Big-endian u16; bits above 16 are dropped by the byte array. */
export function writeU16(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v >>> 8;
  buf[off + 1] = v;
}

/** Big-endian u32. */
export function writeU32(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v >>> 24;
  buf[off + 1] = v >>> 16;
  buf[off + 2] = v >>> 8;
  buf[off + 3] = v;
}

/**
 * A MAC is 48 bits, wider than the 32 bits JS bitwise operators handle, so it is split into a
 * 16-bit high part and a 32-bit low part and combined with arithmetic.
 */
export function readMac(buf: Uint8Array, off: number): number {
  return readU16(buf, off) * TWO_32 + readU32(buf, off + 2);
}

/** Write a 48-bit MAC as six bytes (split like readMac, since bitwise operators stop at 32 bits). */
export function writeMac(buf: Uint8Array, off: number, mac: number): void {
  const hi = Math.floor(mac / TWO_32);
  writeU16(buf, off, hi);
  writeU32(buf, off + 2, mac - hi * TWO_32);
}

const DOTTED_OCTET = /^(0|[1-9][0-9]{0,2})$/;

/** Strict dotted quad: exactly four decimal octets 0..255, no leading zeros (they read as octal elsewhere). */
export function parseIpv4(s: string): number {
  if (typeof s !== 'string') throw new InvalidArgumentError(`IPv4 address must be a string, got ${typeof s}`);
  const parts = s.split('.');
  if (parts.length !== 4)
    throw new InvalidArgumentError(`invalid IPv4 address '${s}': expected four dotted octets`);
  let ip = 0;
  for (const p of parts) {
    if (!DOTTED_OCTET.test(p))
      throw new InvalidArgumentError(`invalid IPv4 address '${s}': bad octet '${p}'`);
    const v = Number(p);
    if (v > 255) throw new InvalidArgumentError(`invalid IPv4 address '${s}': octet ${v} above 255`);
    ip = ip * 256 + v;
  }
  return ip >>> 0;
}

/** Dotted quad of a u32 address, e.g. '10.0.0.1'. */
export function formatIpv4(ip: number): string {
  const v = ip >>> 0;
  return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
}

/** Network mask for a prefix length 0..32 as u32 (a shift by 32 is a no-op in JS, hence the special case). */
export function prefixMask(prefixLength: number): number {
  return prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0;
}

/** 'a.b.c.d/n'. The address keeps its host bits: '10.0.0.1/24' names an interface, not only a network. */
export function parseCidr(s: string): { ip: number; prefixLength: number; mask: number } {
  if (typeof s !== 'string') throw new InvalidArgumentError(`CIDR must be a string, got ${typeof s}`);
  const slash = s.indexOf('/');
  if (slash < 0) throw new InvalidArgumentError(`invalid CIDR '${s}': missing '/prefix'`);
  const ip = parseIpv4(s.slice(0, slash));
  const pfx = s.slice(slash + 1);
  if (!/^(0|[1-9][0-9]?)$/.test(pfx) || Number(pfx) > 32) {
    throw new InvalidArgumentError(`invalid CIDR '${s}': prefix length must be 0..32`);
  }
  const prefixLength = Number(pfx);
  return { ip, prefixLength, mask: prefixMask(prefixLength) };
}

const MAC_RE = /^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$/;

/** Six hex pairs separated consistently by ':' or '-'. */
export function parseMac(s: string): number {
  if (typeof s !== 'string') throw new InvalidArgumentError(`MAC address must be a string, got ${typeof s}`);
  if (!MAC_RE.test(s)) {
    throw new InvalidArgumentError(
      `invalid MAC address '${s}': expected six hex pairs like 02:00:00:00:00:01`,
    );
  }
  return Number.parseInt(s.replace(/[:-]/g, ''), 16);
}

/** Lower-case colon form of a 48-bit MAC, e.g. '02:00:00:00:00:01'. */
export function formatMac(mac: number): string {
  let out = '';
  for (let shift = 40; shift >= 0; shift -= 8) {
    const b = Math.floor(mac / 2 ** shift) % 256;
    out += (shift === 40 ? '' : ':') + b.toString(16).padStart(2, '0');
  }
  return out;
}

/** True for group (multicast and broadcast) MACs: the I/G bit is the low bit of the first octet. */
export function isMulticastMac(mac: number): boolean {
  return Math.floor(mac / 2 ** 40) % 2 === 1;
}

// ---- IPv6 ---------------------------------------------------------------------------------------
// An IPv6 address is 16 bytes: a `Uint8Array` of its own, or 16 bytes inside a packet at an offset.
// 128 bits fit no JS number, and a bigint or a string per packet would allocate on the hot path.

export const IPV6_ADDR_LENGTH = 16;

/** A zeroed address (::), to be filled by a decoder or `copyIpv6`. */
export function createIpv6(): Uint8Array {
  return new Uint8Array(IPV6_ADDR_LENGTH);
}

const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

/**
 * An IPv6 address in any RFC 4291 2.2 text form: eight hex groups, one `::` for a run of zero
 * groups, optionally a dotted IPv4 tail. Zone indices (`%eth0`) name an interface, not an address,
 * and are refused here.
 */
export function parseIpv6(s: string): Uint8Array {
  if (typeof s !== 'string') throw new InvalidArgumentError(`IPv6 address must be a string, got ${typeof s}`);
  const bad = (why: string) => new InvalidArgumentError(`invalid IPv6 address '${s}': ${why}`);
  if (s.length > 45 || s.length < 2) throw bad('wrong length');
  const out = new Uint8Array(IPV6_ADDR_LENGTH);
  const dbl = s.indexOf('::');
  if (dbl >= 0 && s.indexOf('::', dbl + 1) >= 0) throw bad("more than one '::'");
  const head = dbl >= 0 ? s.slice(0, dbl) : s;
  const tail = dbl >= 0 ? s.slice(dbl + 2) : '';
  const groups = (part: string, allowV4: boolean): number[] => {
    if (part === '') return [];
    const fields = part.split(':');
    const words: number[] = [];
    for (let i = 0; i < fields.length; i++) {
      const f = fields[i]!;
      if (allowV4 && i === fields.length - 1 && f.includes('.')) {
        let v4: number;
        try {
          v4 = parseIpv4(f);
        } catch {
          throw bad(`bad IPv4 tail '${f}'`);
        }
        words.push(v4 >>> 16, v4 & 0xffff);
      } else if (HEX_GROUP.test(f)) words.push(Number.parseInt(f, 16));
      else throw bad(`bad group '${f}'`);
    }
    return words;
  };
  const hw = groups(head, dbl < 0);
  const tw = groups(tail, true);
  if (dbl < 0) {
    if (hw.length !== 8) throw bad('expected eight groups');
  } else if (hw.length + tw.length > 7) throw bad("'::' must stand for at least one zero group");
  for (let i = 0; i < hw.length; i++) writeU16(out, 2 * i, hw[i]!);
  for (let i = 0; i < tw.length; i++) writeU16(out, 16 - 2 * (tw.length - i), tw[i]!);
  return out;
}

/**
 * RFC 5952 text form: lower case, no leading zeros, the longest run of two or more zero groups
 * (the first of equal runs) as `::`, and the IPv4-mapped range with a dotted tail (5952 5).
 */
export function formatIpv6(a: Uint8Array, off = 0): string {
  let mapped = true;
  for (let i = 0; i < 10; i++) if (a[off + i] !== 0) mapped = false;
  if (mapped && a[off + 10] === 0xff && a[off + 11] === 0xff) {
    return `::ffff:${formatIpv4(readU32(a, off + 12))}`;
  }
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (readU16(a, off + 2 * i) !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && readU16(a, off + 2 * j) === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (i === bestAt) {
      out += '::';
      i += bestLen - 1;
      continue;
    }
    if (out !== '' && !out.endsWith(':')) out += ':';
    out += readU16(a, off + 2 * i).toString(16);
  }
  return out;
}

/** 'addr/n' with n in 0..128; the address keeps its interface bits, as in parseCidr. */
export function parseIpv6Cidr(s: string): { ip: Uint8Array; prefixLength: number } {
  if (typeof s !== 'string') throw new InvalidArgumentError(`CIDR must be a string, got ${typeof s}`);
  const slash = s.indexOf('/');
  if (slash < 0) throw new InvalidArgumentError(`invalid IPv6 CIDR '${s}': missing '/prefix'`);
  const pfx = s.slice(slash + 1);
  if (!/^(0|[1-9][0-9]{0,2})$/.test(pfx) || Number(pfx) > 128) {
    throw new InvalidArgumentError(`invalid IPv6 CIDR '${s}': prefix length must be 0..128`);
  }
  return { ip: parseIpv6(s.slice(0, slash)), prefixLength: Number(pfx) };
}

/** True when the 16 bytes at a[ao] and b[bo] are the same address. */
export function ipv6Equal(a: Uint8Array, ao: number, b: Uint8Array, bo: number): boolean {
  for (let i = 0; i < IPV6_ADDR_LENGTH; i++) if (a[ao + i] !== b[bo + i]) return false;
  return true;
}

/** Copy 16 bytes from src[so] to dst[do_]. */
export function copyIpv6(dst: Uint8Array, dstOff: number, src: Uint8Array, srcOff: number): void {
  for (let i = 0; i < IPV6_ADDR_LENGTH; i++) dst[dstOff + i] = src[srcOff + i]!;
}

/** True when the first `prefixLength` bits of the two addresses agree. */
export function ipv6PrefixMatch(
  a: Uint8Array,
  ao: number,
  b: Uint8Array,
  bo: number,
  prefixLength: number,
): boolean {
  const whole = prefixLength >>> 3;
  for (let i = 0; i < whole; i++) if (a[ao + i] !== b[bo + i]) return false;
  const rest = prefixLength & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((a[ao + whole]! ^ b[bo + whole]!) & mask) === 0;
}

/** :: (the unspecified address, the source of a duplicate address detection probe). */
export function isIpv6Unspecified(a: Uint8Array, off = 0): boolean {
  for (let i = 0; i < IPV6_ADDR_LENGTH; i++) if (a[off + i] !== 0) return false;
  return true;
}

/** ff00::/8. */
export function isIpv6Multicast(a: Uint8Array, off = 0): boolean {
  return a[off] === 0xff;
}

/** fe80::/10. */
export function isIpv6LinkLocal(a: Uint8Array, off = 0): boolean {
  return a[off] === 0xfe && (a[off + 1]! & 0xc0) === 0x80;
}

/** ::1. */
export function isIpv6Loopback(a: Uint8Array, off = 0): boolean {
  for (let i = 0; i < 15; i++) if (a[off + i] !== 0) return false;
  return a[off + 15] === 1;
}

/**
 * Write the modified EUI-64 interface identifier of a 48-bit MAC (RFC 4291 appendix A: ff:fe in
 * the middle, the universal/local bit flipped) into a[off + 8 .. off + 16).
 */
export function writeInterfaceId(a: Uint8Array, off: number, mac: number): void {
  const m = new Uint8Array(6);
  writeMac(m, 0, mac);
  a[off + 8] = m[0]! ^ 0x02;
  a[off + 9] = m[1]!;
  a[off + 10] = m[2]!;
  a[off + 11] = 0xff;
  a[off + 12] = 0xfe;
  a[off + 13] = m[3]!;
  a[off + 14] = m[4]!;
  a[off + 15] = m[5]!;
}

/** fe80::/64 with the MAC's EUI-64 interface identifier (RFC 4862 5.3). */
export function linkLocalFromMac(mac: number): Uint8Array {
  const a = createIpv6();
  a[0] = 0xfe;
  a[1] = 0x80;
  writeInterfaceId(a, 0, mac);
  return a;
}

/** The solicited-node multicast group of an address: ff02::1:ff00:0/104 and its low 24 bits (RFC 4291 2.7.1). */
export function solicitedNodeAddress(target: Uint8Array, off = 0): Uint8Array {
  const a = createIpv6();
  a[0] = 0xff;
  a[1] = 0x02;
  a[11] = 0x01;
  a[12] = 0xff;
  a[13] = target[off + 13]!;
  a[14] = target[off + 14]!;
  a[15] = target[off + 15]!;
  return a;
}

/** The Ethernet group MAC an IPv6 multicast address maps to: 33:33 and its low 32 bits (RFC 2464 7). */
export function ipv6MulticastMac(a: Uint8Array, off = 0): number {
  return 0x3333 * TWO_32 + readU32(a, off + 12);
}
