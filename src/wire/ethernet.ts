import { readMac, readU16, writeMac, writeU16 } from './addr.ts';
import type { DecodeError } from './decode-error.ts';

export const EtherType = { IPV4: 0x0800, ARP: 0x0806, VLAN: 0x8100, IPV6: 0x86dd } as const;
export const ETHERNET_HEADER_LENGTH = 14;
export const ETHERNET_VLAN_HEADER_LENGTH = 18;
/** Values below this in the type field are IEEE 802.3 lengths (LLC frames), not EtherTypes. */
export const ETHERTYPE_MIN = 0x0600;

export interface EthernetHeader {
  dst: number;
  src: number;
  /** 802.1Q VLAN id 0..4095, or -1 when the frame is untagged. */
  vlanId: number;
  pcp: number;
  dei: boolean;
  etherType: number;
  /** 14, or 18 with a VLAN tag. */
  headerLength: number;
}

/** A zeroed EthernetHeader for decodeEthernet to fill (one per caller, reused per frame). */
export function createEthernetHeader(): EthernetHeader {
  return {
    dst: 0,
    src: 0,
    vlanId: -1,
    pcp: 0,
    dei: false,
    etherType: 0,
    headerLength: ETHERNET_HEADER_LENGTH,
  };
}

/**
 * Decode an Ethernet II header with at most one 802.1Q tag. 802.3 length-typed frames and stacked
 * tags are 'unsupported': nothing above this layer speaks LLC, and only single tagging is modelled.
 */
export function decodeEthernet(
  buf: Uint8Array,
  off: number,
  len: number,
  out: EthernetHeader,
): DecodeError | null {
  if (off < 0 || len < ETHERNET_HEADER_LENGTH || off + len > buf.length) return 'truncated';
  let type = readU16(buf, off + 12);
  if (type === EtherType.VLAN) {
    if (len < ETHERNET_VLAN_HEADER_LENGTH) return 'truncated';
    const tci = readU16(buf, off + 14);
    type = readU16(buf, off + 16);
    if (type === EtherType.VLAN) return 'unsupported';
    out.vlanId = tci & 0xfff;
    out.pcp = tci >>> 13;
    out.dei = (tci & 0x1000) !== 0;
    out.headerLength = ETHERNET_VLAN_HEADER_LENGTH;
  } else {
    out.vlanId = -1;
    out.pcp = 0;
    out.dei = false;
    out.headerLength = ETHERNET_HEADER_LENGTH;
  }
  if (type < ETHERTYPE_MIN) return 'unsupported';
  out.dst = readMac(buf, off);
  out.src = readMac(buf, off + 6);
  out.etherType = type;
  return null;
}

/** Write the header at buf[off]; returns its length (18 with a VLAN tag) and stores it in h. */
export function encodeEthernet(h: EthernetHeader, buf: Uint8Array, off: number): number {
  h.headerLength = writeEthernetHeader(buf, off, h.dst, h.src, h.vlanId, h.etherType, h.pcp, h.dei);
  return h.headerLength;
}

/**
 * Write an Ethernet header from plain values at buf[off], tagged when `vlanId` >= 0; returns its
 * length (14 or 18). The transmit paths call this per packet, where a header object would only be
 * filled to be read back.
 */
export function writeEthernetHeader(
  buf: Uint8Array,
  off: number,
  dst: number,
  src: number,
  vlanId: number,
  etherType: number,
  pcp = 0,
  dei = false,
): number {
  writeMac(buf, off, dst);
  writeMac(buf, off + 6, src);
  if (vlanId >= 0) {
    writeU16(buf, off + 12, EtherType.VLAN);
    writeU16(buf, off + 14, ((pcp & 7) << 13) | (dei ? 0x1000 : 0) | (vlanId & 0xfff));
    writeU16(buf, off + 16, etherType);
    return ETHERNET_VLAN_HEADER_LENGTH;
  }
  writeU16(buf, off + 12, etherType);
  return ETHERNET_HEADER_LENGTH;
}
