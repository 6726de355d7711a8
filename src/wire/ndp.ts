/*
 * Neighbor discovery messages (RFC 4861 4) and their options (4.6), over the ICMPv6 message: the
 * caller has decoded (and checksummed) it with decodeIcmpv6 and hands its bytes here. What is
 * checked here is the framing that 6.1 and 7.1 put on the message itself (code 0, minimum length,
 * no option of length zero, an Ethernet link-layer option of exactly 8 bytes); the rules that need
 * the IPv6 header (hop limit 255, source and destination addresses) belong to the receiver.
 */
import { copyIpv6, readMac, readU16, readU32, writeMac, writeU16, writeU32 } from './addr.ts';
import type { DecodeError } from './decode-error.ts';
import { createIcmpv6Header, encodeIcmpv6, Icmpv6Type } from './icmpv6.ts';

export const NdOption = {
  SOURCE_LLA: 1,
  TARGET_LLA: 2,
  PREFIX_INFO: 3,
  REDIRECTED_HEADER: 4,
  MTU: 5,
  NONCE: 14,
} as const;

/** Prefix information options kept per message; further ones are counted in `prefixesDropped`. */
export const ND_MAX_PREFIXES = 8;
/** Lifetimes of all ones mean infinity (RFC 4861 4.6.2). */
export const ND_INFINITE = 0xffffffff;

/** Fixed part (after the 4-byte ICMPv6 type/code/checksum) of each message type. */
const FIXED: Record<number, number> = {
  [Icmpv6Type.ROUTER_SOLICITATION]: 4,
  [Icmpv6Type.ROUTER_ADVERTISEMENT]: 12,
  [Icmpv6Type.NEIGHBOR_SOLICITATION]: 20,
  [Icmpv6Type.NEIGHBOR_ADVERTISEMENT]: 20,
  [Icmpv6Type.REDIRECT]: 36,
};

export interface NdPrefix {
  prefixLength: number;
  /** L: the prefix is on-link. */
  onLink: boolean;
  /** A: usable for stateless address autoconfiguration. */
  autonomous: boolean;
  /** Seconds; ND_INFINITE for ever. */
  validLifetime: number;
  preferredLifetime: number;
  readonly prefix: Uint8Array;
}

export interface NdMessage {
  /** One of the five ND types of Icmpv6Type. */
  type: number;
  // ---- router advertisement ----
  curHopLimit: number;
  managed: boolean;
  other: boolean;
  /** Seconds; 0: not a default router. */
  routerLifetime: number;
  /** Milliseconds; 0: unspecified. */
  reachableTime: number;
  retransTimer: number;
  // ---- neighbor advertisement ----
  router: boolean;
  solicited: boolean;
  override: boolean;
  // ---- NS, NA, redirect ----
  /** The target address (NS, NA, redirect). */
  readonly target: Uint8Array;
  /** Redirect: the destination being redirected. */
  readonly destination: Uint8Array;
  // ---- options ----
  /** Source / target link-layer address options as 48-bit MACs, -1 when absent. */
  sourceLla: number;
  targetLla: number;
  /** MTU option value, -1 when absent. */
  mtu: number;
  /** Nonce option (RFC 7527, 6 bytes as carried by Linux) as a number, -1 when absent. */
  nonce: number;
  /** Nonce option length in bytes (0 when absent). */
  nonceLength: number;
  prefixCount: number;
  prefixesDropped: number;
  readonly prefixes: readonly NdPrefix[];
}

function createPrefix(): NdPrefix {
  return {
    prefixLength: 0,
    onLink: false,
    autonomous: false,
    validLifetime: 0,
    preferredLifetime: 0,
    prefix: new Uint8Array(16),
  };
}

/** A zeroed NdMessage for decodeNd to fill (one per caller, reused per message). */
export function createNdMessage(): NdMessage {
  const prefixes: NdPrefix[] = [];
  for (let i = 0; i < ND_MAX_PREFIXES; i++) prefixes.push(createPrefix());
  return {
    type: 0,
    curHopLimit: 0,
    managed: false,
    other: false,
    routerLifetime: 0,
    reachableTime: 0,
    retransTimer: 0,
    router: false,
    solicited: false,
    override: false,
    target: new Uint8Array(16),
    destination: new Uint8Array(16),
    sourceLla: -1,
    targetLla: -1,
    mtu: -1,
    nonce: -1,
    nonceLength: 0,
    prefixCount: 0,
    prefixesDropped: 0,
    prefixes,
  };
}

/** True for the five neighbor discovery message types. */
export function isNdType(type: number): boolean {
  return type >= Icmpv6Type.ROUTER_SOLICITATION && type <= Icmpv6Type.REDIRECT;
}

/**
 * Decode the ND message at buf[off, off+len) (the whole ICMPv6 message, type byte first).
 * 'bad-type' for a non-ND type, 'unsupported' for a code other than 0, 'truncated' below the
 * fixed size, 'bad-option' for an option of length 0, one past the end, or a link-layer option
 * that is not 8 bytes. Unknown options are skipped (RFC 4861 4.6).
 */
export function decodeNd(buf: Uint8Array, off: number, len: number, out: NdMessage): DecodeError | null {
  if (off < 0 || len < 4 || off + len > buf.length) return 'truncated';
  const type = buf[off]!;
  if (!isNdType(type)) return 'bad-type';
  if (buf[off + 1] !== 0) return 'unsupported';
  const fixed = 4 + FIXED[type]!;
  if (len < fixed) return 'truncated';
  out.type = type;
  out.curHopLimit = 0;
  out.managed = false;
  out.other = false;
  out.routerLifetime = 0;
  out.reachableTime = 0;
  out.retransTimer = 0;
  out.router = false;
  out.solicited = false;
  out.override = false;
  out.target.fill(0);
  out.destination.fill(0);
  out.sourceLla = -1;
  out.targetLla = -1;
  out.mtu = -1;
  out.nonce = -1;
  out.nonceLength = 0;
  out.prefixCount = 0;
  out.prefixesDropped = 0;
  switch (type) {
    case Icmpv6Type.ROUTER_ADVERTISEMENT: {
      out.curHopLimit = buf[off + 4]!;
      const f = buf[off + 5]!;
      out.managed = (f & 0x80) !== 0;
      out.other = (f & 0x40) !== 0;
      out.routerLifetime = readU16(buf, off + 6);
      out.reachableTime = readU32(buf, off + 8);
      out.retransTimer = readU32(buf, off + 12);
      break;
    }
    case Icmpv6Type.NEIGHBOR_ADVERTISEMENT: {
      const f = buf[off + 4]!;
      out.router = (f & 0x80) !== 0;
      out.solicited = (f & 0x40) !== 0;
      out.override = (f & 0x20) !== 0;
      copyIpv6(out.target, 0, buf, off + 8);
      break;
    }
    case Icmpv6Type.NEIGHBOR_SOLICITATION:
      copyIpv6(out.target, 0, buf, off + 8);
      break;
    case Icmpv6Type.REDIRECT:
      copyIpv6(out.target, 0, buf, off + 8);
      copyIpv6(out.destination, 0, buf, off + 24);
      break;
  }
  return decodeOptions(buf, off + fixed, off + len, out);
}

function decodeOptions(buf: Uint8Array, i: number, end: number, out: NdMessage): DecodeError | null {
  while (i < end) {
    if (i + 2 > end) return 'bad-option';
    const otype = buf[i]!;
    const olen = buf[i + 1]! << 3;
    if (olen === 0 || i + olen > end) return 'bad-option';
    switch (otype) {
      case NdOption.SOURCE_LLA:
      case NdOption.TARGET_LLA:
        // On Ethernet the option is 8 bytes (RFC 2464 6); any other size is not ours to read.
        if (olen !== 8) return 'bad-option';
        if (otype === NdOption.SOURCE_LLA) out.sourceLla = readMac(buf, i + 2);
        else out.targetLla = readMac(buf, i + 2);
        break;
      case NdOption.PREFIX_INFO: {
        if (olen !== 32) return 'bad-option';
        if (out.prefixCount >= ND_MAX_PREFIXES) {
          out.prefixesDropped++;
          break;
        }
        const p = out.prefixes[out.prefixCount++]!;
        p.prefixLength = buf[i + 2]!;
        const f = buf[i + 3]!;
        p.onLink = (f & 0x80) !== 0;
        p.autonomous = (f & 0x40) !== 0;
        p.validLifetime = readU32(buf, i + 4);
        p.preferredLifetime = readU32(buf, i + 8);
        copyIpv6(p.prefix, 0, buf, i + 16);
        if (p.prefixLength > 128) return 'bad-option';
        break;
      }
      case NdOption.MTU:
        if (olen !== 8) return 'bad-option';
        out.mtu = readU32(buf, i + 4);
        break;
      case NdOption.NONCE:
        // Linux sends 6 bytes; RFC 7527 allows any length. Only the first 6 are compared.
        out.nonceLength = olen - 2;
        out.nonce = readMac(buf, i + 2);
        break;
      default:
        break;
    }
    i += olen;
  }
  return null;
}

/** What encodeNd writes: the decoded form, plus which options to include. */
export interface NdEncode {
  type: number;
  curHopLimit?: number;
  managed?: boolean;
  other?: boolean;
  routerLifetime?: number;
  reachableTime?: number;
  retransTimer?: number;
  router?: boolean;
  solicited?: boolean;
  override?: boolean;
  target?: Uint8Array;
  destination?: Uint8Array;
  sourceLla?: number;
  targetLla?: number;
  mtu?: number;
  /** Written as a 6-byte nonce option. */
  nonce?: number;
  prefixes?: readonly NdPrefix[];
}

/**
 * Write the ND message body (from byte 4 of the ICMPv6 message on: the fixed part and options)
 * at buf[off]. The caller writes type, code and checksum with encodeIcmpv6, which leaves bytes
 * 4-7 of ND types alone. Returns the number of bytes written after the 4-byte ICMPv6 preamble;
 * the ICMPv6 body length for encodeIcmpv6 is that minus 4.
 */
export function encodeNdBody(m: NdEncode, buf: Uint8Array, off: number): number {
  const fixed = FIXED[m.type];
  if (fixed === undefined) return 0;
  buf.fill(0, off, off + fixed);
  switch (m.type) {
    case Icmpv6Type.ROUTER_ADVERTISEMENT:
      buf[off] = m.curHopLimit ?? 0;
      buf[off + 1] = (m.managed ? 0x80 : 0) | (m.other ? 0x40 : 0);
      writeU16(buf, off + 2, m.routerLifetime ?? 0);
      writeU32(buf, off + 4, m.reachableTime ?? 0);
      writeU32(buf, off + 8, m.retransTimer ?? 0);
      break;
    case Icmpv6Type.NEIGHBOR_ADVERTISEMENT:
      buf[off] = (m.router ? 0x80 : 0) | (m.solicited ? 0x40 : 0) | (m.override ? 0x20 : 0);
      if (m.target) copyIpv6(buf, off + 4, m.target, 0);
      break;
    case Icmpv6Type.NEIGHBOR_SOLICITATION:
      if (m.target) copyIpv6(buf, off + 4, m.target, 0);
      break;
    case Icmpv6Type.REDIRECT:
      if (m.target) copyIpv6(buf, off + 4, m.target, 0);
      if (m.destination) copyIpv6(buf, off + 20, m.destination, 0);
      break;
  }
  let i = off + fixed;
  if (m.sourceLla !== undefined && m.sourceLla >= 0) i = llaOption(buf, i, NdOption.SOURCE_LLA, m.sourceLla);
  if (m.targetLla !== undefined && m.targetLla >= 0) i = llaOption(buf, i, NdOption.TARGET_LLA, m.targetLla);
  if (m.mtu !== undefined && m.mtu >= 0) {
    buf[i] = NdOption.MTU;
    buf[i + 1] = 1;
    writeU16(buf, i + 2, 0);
    writeU32(buf, i + 4, m.mtu);
    i += 8;
  }
  for (const p of m.prefixes ?? []) {
    buf.fill(0, i, i + 32);
    buf[i] = NdOption.PREFIX_INFO;
    buf[i + 1] = 4;
    buf[i + 2] = p.prefixLength;
    buf[i + 3] = (p.onLink ? 0x80 : 0) | (p.autonomous ? 0x40 : 0);
    writeU32(buf, i + 4, p.validLifetime);
    writeU32(buf, i + 8, p.preferredLifetime);
    copyIpv6(buf, i + 16, p.prefix, 0);
    i += 32;
  }
  if (m.nonce !== undefined && m.nonce >= 0) {
    buf[i] = NdOption.NONCE;
    buf[i + 1] = 1;
    writeMac(buf, i + 2, m.nonce);
    i += 8;
  }
  return i - off;
}

function llaOption(buf: Uint8Array, i: number, type: number, mac: number): number {
  buf[i] = type;
  buf[i + 1] = 1;
  writeMac(buf, i + 2, mac);
  return i + 8;
}

const txHeader = createIcmpv6Header();

/**
 * Write the whole ICMPv6 ND message at buf[off] (type, code 0, body, options, checksum over the
 * pseudo-header of src and dst). Returns its length.
 */
export function encodeNd(
  m: NdEncode,
  buf: Uint8Array,
  off: number,
  src: Uint8Array,
  dst: Uint8Array,
): number {
  const n = encodeNdBody(m, buf, off + 4);
  if (n === 0) return 0;
  txHeader.type = m.type;
  txHeader.code = 0;
  return encodeIcmpv6(txHeader, buf, off, n - 4, src, dst);
}
