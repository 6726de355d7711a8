import type { ConnKey } from '../../src/nic/nic.ts';
import { createIpv4Header, encodeIpv4, IpProto } from '../../src/wire/ipv4.ts';
import { createTcpHeader, encodeTcpHeader, finishTcpChecksum, TcpFlag } from '../../src/wire/tcp.ts';

/** The peer's reset of `key` at `seq` (its receive point), as an IPv4 packet (what a NIC's inject takes). */
export function resetOf(key: ConnKey, seq: number): Uint8Array {
  const buf = new Uint8Array(40);
  const ip = createIpv4Header();
  ip.totalLength = 40;
  ip.ttl = 64;
  ip.protocol = IpProto.TCP;
  ip.src = key.remoteIp;
  ip.dst = key.localIp;
  encodeIpv4(ip, buf, 0);
  const h = createTcpHeader();
  h.srcPort = key.remotePort;
  h.dstPort = key.localPort;
  h.seq = seq;
  h.flags = TcpFlag.RST;
  encodeTcpHeader(h, buf, 20);
  finishTcpChecksum(buf, 20, 20, key.remoteIp, key.localIp);
  return buf;
}

/**
 * The peer's data segment for `key`: `payload` at `seq`, acknowledging `ack`, with timestamps when
 * `ts` is given (a connection that negotiated them checks PAWS against `ts.val`), and its FIN
 * after the payload when `fin`.
 */
export function dataOf(
  key: ConnKey,
  seq: number,
  ack: number,
  payload: Uint8Array,
  ts?: { val: number; ecr: number },
  fin = false,
): Uint8Array {
  const h = createTcpHeader();
  h.srcPort = key.remotePort;
  h.dstPort = key.localPort;
  h.seq = seq;
  h.ack = ack;
  h.flags = TcpFlag.ACK | TcpFlag.PSH | (fin ? TcpFlag.FIN : 0);
  h.window = 0xffff;
  if (ts !== undefined) {
    h.hasTimestamps = true;
    h.tsVal = ts.val;
    h.tsEcr = ts.ecr;
  }
  const tcpLen = 20 + (ts !== undefined ? 12 : 0);
  const total = 20 + tcpLen + payload.length;
  const buf = new Uint8Array(total);
  const ip = createIpv4Header();
  ip.totalLength = total;
  ip.ttl = 64;
  ip.protocol = IpProto.TCP;
  ip.src = key.remoteIp;
  ip.dst = key.localIp;
  encodeIpv4(ip, buf, 0);
  const hl = encodeTcpHeader(h, buf, 20);
  buf.set(payload, 20 + hl);
  finishTcpChecksum(buf, 20, hl + payload.length, key.remoteIp, key.localIp);
  return buf;
}
