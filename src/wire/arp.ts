import { readMac, readU16, readU32, writeMac, writeU16, writeU32 } from './addr.ts';
import type { DecodeError } from './decode-error.ts';
import { EtherType } from './ethernet.ts';

export const ArpOp = { REQUEST: 1, REPLY: 2 } as const;
export const ARP_LENGTH = 28;
const HTYPE_ETHERNET = 1;

export interface ArpPacket {
  op: number;
  senderMac: number;
  senderIp: number;
  targetMac: number;
  targetIp: number;
}

/** A zeroed ArpPacket for decodeArp to fill (one per caller, reused per packet). */
export function createArpPacket(): ArpPacket {
  return { op: 0, senderMac: 0, senderIp: 0, targetMac: 0, targetIp: 0 };
}

/**
 * Decode an Ethernet/IPv4 ARP packet (RFC 826). Other hardware or protocol types are 'unsupported';
 * operations other than request and reply (RARP, InARP) are 'bad-type'.
 */
export function decodeArp(buf: Uint8Array, off: number, len: number, out: ArpPacket): DecodeError | null {
  if (off < 0 || len < ARP_LENGTH || off + len > buf.length) return 'truncated';
  if (
    readU16(buf, off) !== HTYPE_ETHERNET ||
    readU16(buf, off + 2) !== EtherType.IPV4 ||
    buf[off + 4] !== 6 ||
    buf[off + 5] !== 4
  ) {
    return 'unsupported';
  }
  const op = readU16(buf, off + 6);
  if (op !== ArpOp.REQUEST && op !== ArpOp.REPLY) return 'bad-type';
  out.op = op;
  out.senderMac = readMac(buf, off + 8);
  out.senderIp = readU32(buf, off + 14);
  out.targetMac = readMac(buf, off + 18);
  out.targetIp = readU32(buf, off + 24);
  return null;
}

/** Write the 28-byte packet at buf[off]; returns 28. */
export function encodeArp(p: ArpPacket, buf: Uint8Array, off: number): number {
  writeU16(buf, off, HTYPE_ETHERNET);
  writeU16(buf, off + 2, EtherType.IPV4);
  buf[off + 4] = 6;
  buf[off + 5] = 4;
  writeU16(buf, off + 6, p.op);
  writeMac(buf, off + 8, p.senderMac);
  writeU32(buf, off + 14, p.senderIp);
  writeMac(buf, off + 18, p.targetMac);
  writeU32(buf, off + 24, p.targetIp);
  return ARP_LENGTH;
}
