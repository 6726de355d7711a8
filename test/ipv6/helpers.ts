import { type SimHost, type SimHostOptions, SimNetwork } from '../../src/sim/sim-network.ts';
import type { TcpSocket } from '../../src/socket/tcp-socket.ts';
import { parseIpv6, readU32, writeMac } from '../../src/wire/addr.ts';
import { writeL4Checksum6 } from '../../src/wire/checksum.ts';

/** Two (or more) Chimney hosts on one simulated segment with IPv4 and IPv6 addresses. */
export function pair(seed: number, a: Partial<SimHostOptions> = {}, b: Partial<SimHostOptions> = {}) {
  const net = new SimNetwork({ seed });
  const ipv6 = { dadTransmits: 0, routerSolicitations: 0 };
  const ha = net.addHost({ ip: '10.0.0.1/24', ip6: 'fd00::1/64', ipv6, ...a });
  const hb = net.addHost({ ip: '10.0.0.2/24', ip6: 'fd00::2/64', ipv6, ...b });
  return { net, a: ha, b: hb };
}

export function connected(s: TcpSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
}

export function failure(s: TcpSocket): Promise<Error & { code?: string }> {
  return new Promise((resolve, reject) => {
    s.once('connect', () => reject(new Error('connected')));
    s.once('error', resolve);
  });
}

/** Frames `host` sends, seen before the switch (the callback must copy what it keeps). */
export function tapTx(host: SimHost, fn: (frame: Uint8Array) => void): () => void {
  const port = host.port;
  const orig = port.send.bind(port);
  port.send = (frame: Uint8Array) => {
    fn(frame);
    return orig(frame);
  };
  return () => {
    port.send = orig;
  };
}

/** A raw port on the switch to inject hand-made frames. */
export function rawPort(net: SimNetwork) {
  const port = net.switch.addPort({ name: 'raw' });
  port.onFrame(() => {});
  return port;
}

export const RAW_MAC = 0x02_00_00_00_00_99;

/**
 * An Ethernet + IPv6 frame from `src` to `dst` (MAC `dstMac`) carrying `payload` after a fixed
 * header with next header `next`; with `checksum`, the L4 checksum at its protocol's field is
 * computed over the pseudo-header.
 */
export function ipv6Frame(
  dstMac: number,
  src: string,
  dst: string,
  next: number,
  payload: Uint8Array,
  checksum = true,
): Uint8Array {
  const f = new Uint8Array(14 + 40 + payload.length);
  writeMac(f, 0, dstMac);
  writeMac(f, 6, RAW_MAC);
  f[12] = 0x86;
  f[13] = 0xdd;
  f[14] = 0x60;
  f[18] = payload.length >>> 8;
  f[19] = payload.length & 0xff;
  f[20] = next;
  f[21] = 64;
  const s = parseIpv6(src);
  const d = parseIpv6(dst);
  f.set(s, 22);
  f.set(d, 38);
  f.set(payload, 54);
  if (checksum) writeL4Checksum6(f, 54, payload.length, s, d, next);
  return f;
}

/** Fields of an IPv6 TCP frame as sent by a Chimney host (no extension headers). */
export function tcp6Fields(f: Uint8Array) {
  if (f.length < 74 || f[12] !== 0x86 || f[13] !== 0xdd || f[20] !== 6) return null;
  return {
    flowLabel: ((f[15]! & 0x0f) << 16) | (f[16]! << 8) | f[17]!,
    hopLimit: f[21]!,
    trafficClass: ((f[14]! & 0x0f) << 4) | (f[15]! >>> 4),
    srcPort: (f[54]! << 8) | f[55]!,
    dstPort: (f[56]! << 8) | f[57]!,
    seq: readU32(f, 58),
    flags: f[67]!,
    ipLen: f.length - 14,
  };
}

/** ICMPv6 packet too big from router fd00::fe to `dst` (MAC `dstMac`), quoting `quoted` (IPv6 header on). */
export function packetTooBig(dstMac: number, dst: string, quoted: Uint8Array, mtu: number): Uint8Array {
  const body = new Uint8Array(8 + quoted.length);
  body[0] = 2;
  body[4] = mtu >>> 24;
  body[5] = (mtu >>> 16) & 0xff;
  body[6] = (mtu >>> 8) & 0xff;
  body[7] = mtu & 0xff;
  body.set(quoted, 8);
  return ipv6Frame(dstMac, 'fd00::fe', dst, 58, body);
}
