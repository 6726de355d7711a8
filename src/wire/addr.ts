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
