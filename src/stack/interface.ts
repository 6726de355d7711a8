import type { Link } from '../link/link.ts';
import { writeMac, writeU16 } from '../wire/addr.ts';
import type { DecodeError } from '../wire/decode-error.ts';

/** One IPv4 address configured on an interface, with its subnet precomputed for on-link tests. */
export interface InterfaceAddress {
  readonly ip: number;
  readonly prefixLength: number;
  readonly mask: number;
  readonly network: number;
  /** Directed broadcast of the subnet; for /31 and /32 there is none and this is 0xffffffff. */
  readonly broadcast: number;
}

export interface InterfaceOptions {
  mac: number | string;
  /** 'a.b.c.d/n', or several of them; the first is the primary address. */
  ip: string | readonly string[];
  /** 802.1Q VLAN id 1..4094; absent for untagged. */
  vlan?: number;
  /** Largest IP packet; defaults to the link's MTU and may not exceed it. */
  mtu?: number;
  name?: string;
}

const ETHERTYPE_VLAN = 0x8100;

/**
 * A stack interface: one (link, VLAN) pair with its own MAC and addresses. Several interfaces can
 * share a link when their VLAN ids differ, which is how a tagged trunk is split into subnets.
 */
export class StackInterface {
  /** Ethernet header length of frames this interface sends: 18 with an 802.1Q tag, 14 without. */
  readonly ethHeaderLength: number;

  constructor(
    readonly index: number,
    readonly name: string,
    readonly link: Link,
    readonly mac: number,
    /** 802.1Q VLAN id, or -1 when untagged. */
    readonly vlanId: number,
    readonly mtu: number,
    readonly addresses: readonly InterfaceAddress[],
  ) {
    this.ethHeaderLength = vlanId >= 0 ? 18 : 14;
  }

  get primaryIp(): number {
    return this.addresses[0]!.ip;
  }

  get up(): boolean {
    return this.link.carrier;
  }

  hasAddress(ip: number): boolean {
    for (const a of this.addresses) if (a.ip === ip) return true;
    return false;
  }

  /** Limited broadcast or the directed broadcast of one of our subnets. */
  isBroadcast(ip: number): boolean {
    if (ip === 0xffffffff) return true;
    for (const a of this.addresses) if (a.prefixLength < 31 && a.broadcast === ip) return true;
    return false;
  }

  /** The configured address whose subnet contains `ip`, or null. */
  addressFor(ip: number): InterfaceAddress | null {
    for (const a of this.addresses) if ((ip & a.mask) >>> 0 === a.network) return a;
    return null;
  }

  /**
   * Source address for packets to `nextHop`: the address on the next hop's subnet if there is one
   * (so the peer can answer on-link), else the primary address.
   */
  sourceFor(nextHop: number): number {
    return this.addressFor(nextHop)?.ip ?? this.primaryIp;
  }

  /**
   * Write the Ethernet header (with the VLAN tag if this interface has one) at buf[0]. Writing the
   * bytes directly keeps the per-packet transmit path free of header objects.
   */
  writeEthernet(buf: Uint8Array, dstMac: number, etherType: number): number {
    writeMac(buf, 0, Math.max(dstMac, 0));
    writeMac(buf, 6, this.mac);
    if (this.vlanId >= 0) {
      writeU16(buf, 12, ETHERTYPE_VLAN);
      writeU16(buf, 14, this.vlanId & 0x0fff);
      writeU16(buf, 16, etherType);
      return 18;
    }
    writeU16(buf, 12, etherType);
    return 14;
  }
}

export function makeAddress(ip: number, prefixLength: number, mask: number): InterfaceAddress {
  const network = (ip & mask) >>> 0;
  const broadcast = prefixLength >= 31 ? 0xffffffff : (network | ~mask) >>> 0;
  return { ip, prefixLength, mask, network, broadcast };
}

const DECODE_ERRORS: readonly DecodeError[] = [
  'truncated',
  'bad-checksum',
  'bad-version',
  'bad-header-length',
  'bad-length',
  'bad-option',
  'bad-type',
  'unsupported',
];

/**
 * Counter names `drop.<layer>.<decode error>`, built once so that counting a malformed frame does
 * not build a string per frame.
 */
export function decodeDropNames(layer: string): Readonly<Record<DecodeError, string>> {
  const out = {} as Record<DecodeError, string>;
  for (const e of DECODE_ERRORS) out[e] = `drop.${layer}.${e}`;
  return out;
}
