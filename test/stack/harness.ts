import { VirtualClock } from '../../src/core/clock.ts';
import { SeededRandom } from '../../src/core/random.ts';
import type { Link } from '../../src/link/link.ts';
import { Stack, type StackOptions } from '../../src/stack/stack.ts';
import { parseIpv4, writeMac, writeU16 } from '../../src/wire/addr.ts';
import { createIcmpHeader, encodeIcmp } from '../../src/wire/icmp.ts';
import { createIpv4Header, encodeIpv4 } from '../../src/wire/ipv4.ts';
import { createUdpHeader, encodeUdpHeader, finishUdpChecksum } from '../../src/wire/udp.ts';

/** A shared segment: every frame sent by one port is delivered (later, via the clock) to all others. */
export class Hub {
  readonly ports: HubPort[] = [];
  /** Return false to lose the frame. */
  filter: ((frame: Uint8Array, from: HubPort) => boolean) | null = null;
  /** Every frame sent, with its sender's name. */
  readonly log: { from: string; frame: Uint8Array }[] = [];
  /** Keep `log`; off for long runs. */
  record = true;
  constructor(readonly clock: VirtualClock) {}
  port(name = `p${this.ports.length}`, mtu = 1500): HubPort {
    const p = new HubPort(this, name, mtu);
    this.ports.push(p);
    return p;
  }
  /** @internal */
  carry(from: HubPort, frame: Uint8Array): void {
    const copy = frame.slice();
    if (this.record) this.log.push({ from: from.name, frame: copy });
    if (this.filter && !this.filter(copy, from)) return;
    this.clock.defer(() => {
      for (const p of this.ports) if (p !== from) p.receive(copy);
    });
  }
}

export class HubPort implements Link {
  carrier = true;
  private handler: ((f: Uint8Array) => void) | null = null;
  private carrierHandler: ((up: boolean) => void) | null = null;
  constructor(
    private readonly hub: Hub,
    readonly name: string,
    readonly mtu: number,
  ) {}
  send(frame: Uint8Array): boolean {
    if (!this.carrier) return false;
    this.hub.carry(this, frame);
    return true;
  }
  onFrame(h: (f: Uint8Array) => void): void {
    this.handler = h;
  }
  onCarrier(h: (up: boolean) => void): void {
    this.carrierHandler = h;
  }
  setCarrier(up: boolean): void {
    this.carrier = up;
    this.carrierHandler?.(up);
  }
  /** Hand a frame in as if it came off the wire. */
  receive(frame: Uint8Array): void {
    if (this.carrier) this.handler?.(frame);
  }
  close(): void {
    this.handler = null;
  }
}

export const MAC_A = 0x020000000001;
export const MAC_B = 0x020000000002;
export const MAC_C = 0x020000000003;
export const IP_A = parseIpv4('10.0.0.1');
export const IP_B = parseIpv4('10.0.0.2');
export const IP_C = parseIpv4('10.0.0.3');

export interface World {
  clock: VirtualClock;
  random: SeededRandom;
  hub: Hub;
  a: Stack;
  b: Stack;
  pa: HubPort;
  pb: HubPort;
}

export function makeStack(
  clock: VirtualClock,
  random: SeededRandom,
  extra: Partial<StackOptions> = {},
): Stack {
  return new Stack({ clock, random: random.fork(), ...extra });
}

/** Two hosts, 10.0.0.1 and 10.0.0.2/24, on one hub. */
export function twoHosts(extra: Partial<StackOptions> = {}, mtu = 1500): World {
  const clock = new VirtualClock();
  const random = new SeededRandom(42);
  const hub = new Hub(clock);
  const pa = hub.port('a', mtu);
  const pb = hub.port('b', mtu);
  const a = makeStack(clock, random, { name: 'a', ...extra });
  const b = makeStack(clock, random, { name: 'b', ...extra });
  a.addInterface(pa, { mac: MAC_A, ip: '10.0.0.1/24' });
  b.addInterface(pb, { mac: MAC_B, ip: '10.0.0.2/24' });
  clock.advance(1);
  hub.log.length = 0;
  return { clock, random, hub, a, b, pa, pb };
}

export function etherType(frame: Uint8Array): number {
  const t = (frame[12]! << 8) | frame[13]!;
  return t === 0x8100 ? (frame[16]! << 8) | frame[17]! : t;
}

export function arpOp(frame: Uint8Array): number {
  const off = ((frame[12]! << 8) | frame[13]!) === 0x8100 ? 18 : 14;
  return (frame[off + 6]! << 8) | frame[off + 7]!;
}

export interface UdpFrameOptions {
  dstMac: number;
  srcMac: number;
  src: number;
  dst: number;
  srcPort: number;
  dstPort: number;
  payload: Uint8Array;
  id?: number;
  ttl?: number;
  vlan?: number;
  /** Leave the UDP checksum 0 ("none"). */
  noChecksum?: boolean;
}

/** A complete Ethernet + IPv4 + UDP frame. */
export function udpFrame(o: UdpFrameOptions): Uint8Array {
  const eth = o.vlan === undefined ? 14 : 18;
  const len = 8 + o.payload.length;
  const f = new Uint8Array(eth + 20 + len);
  writeMac(f, 0, o.dstMac);
  writeMac(f, 6, o.srcMac);
  if (o.vlan !== undefined) {
    writeU16(f, 12, 0x8100);
    writeU16(f, 14, o.vlan);
    writeU16(f, 16, 0x0800);
  } else writeU16(f, 12, 0x0800);
  const h = createIpv4Header();
  h.totalLength = 20 + len;
  h.id = o.id ?? 1;
  h.ttl = o.ttl ?? 64;
  h.protocol = 17;
  h.src = o.src;
  h.dst = o.dst;
  encodeIpv4(h, f, eth);
  const u = createUdpHeader();
  u.srcPort = o.srcPort;
  u.dstPort = o.dstPort;
  u.length = len;
  encodeUdpHeader(u, f, eth + 20);
  f.set(o.payload, eth + 28);
  if (!o.noChecksum) finishUdpChecksum(f, eth + 20, len, o.src, o.dst);
  return f;
}

/**
 * Split the IPv4 packet of an untagged frame into RFC 791 fragments of at most `chunk` payload
 * bytes (a multiple of 8), each a complete frame.
 */
export function fragmentFrame(frame: Uint8Array, chunk: number): Uint8Array[] {
  const payload = frame.subarray(14 + 20);
  const out: Uint8Array[] = [];
  for (let at = 0; at < payload.length; at += chunk) {
    const n = Math.min(chunk, payload.length - at);
    out.push(fragment(frame, at, n, at + n < payload.length));
  }
  return out;
}

/** One fragment of the untagged frame's IPv4 payload: bytes [at, at+n), with MF as given. */
export function fragment(frame: Uint8Array, at: number, n: number, mf: boolean, fill?: number): Uint8Array {
  const payload = frame.subarray(14 + 20);
  const f = new Uint8Array(14 + 20 + n);
  f.set(frame.subarray(0, 14 + 20));
  if (fill === undefined) f.set(payload.subarray(at, at + n), 34);
  else f.fill(fill, 34);
  const h = createIpv4Header();
  h.totalLength = 20 + n;
  h.id = (frame[18]! << 8) | frame[19]!;
  h.mf = mf;
  h.fragOffset = at;
  h.ttl = frame[22]!;
  h.protocol = frame[23]!;
  h.src = ((frame[26]! << 24) | (frame[27]! << 16) | (frame[28]! << 8) | frame[29]!) >>> 0;
  h.dst = ((frame[30]! << 24) | (frame[31]! << 16) | (frame[32]! << 8) | frame[33]!) >>> 0;
  encodeIpv4(h, f, 14);
  return f;
}

export function bytes(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 7) & 0xff;
  return b;
}

export interface IpFrameOptions {
  dstMac: number;
  srcMac: number;
  src: number;
  dst: number;
  protocol: number;
  payload: Uint8Array;
  id?: number;
}

/** A complete untagged Ethernet + IPv4 frame around `payload`. */
export function ipFrame(o: IpFrameOptions): Uint8Array {
  const f = new Uint8Array(14 + 20 + o.payload.length);
  writeMac(f, 0, o.dstMac);
  writeMac(f, 6, o.srcMac);
  writeU16(f, 12, 0x0800);
  const h = createIpv4Header();
  h.totalLength = 20 + o.payload.length;
  h.id = o.id ?? 1;
  h.ttl = 64;
  h.protocol = o.protocol;
  h.src = o.src;
  h.dst = o.dst;
  encodeIpv4(h, f, 14);
  f.set(o.payload, 34);
  return f;
}

/** An ICMP message (header + body) with a correct checksum. */
export function icmpMessage(
  type: number,
  code: number,
  body: Uint8Array,
  mtu = 0,
  id = 0,
  seq = 0,
): Uint8Array {
  const m = new Uint8Array(8 + body.length);
  m.set(body, 8);
  const h = createIcmpHeader();
  h.type = type;
  h.code = code;
  h.mtu = mtu;
  h.id = id;
  h.seq = seq;
  encodeIcmp(h, m, 0, body.length);
  return m;
}
