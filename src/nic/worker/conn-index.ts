import type { AddressBook } from '../../state/path-state.ts';
import { EtherType } from '../../wire/ethernet.ts';
import {
  ethL3Offset,
  ethType,
  ipv4Dst,
  ipv4HeaderLen,
  ipv4Proto,
  ipv4Src,
  l4DstPort,
  l4SrcPort,
} from '../../wire/fields.ts';
import { IpProto } from '../../wire/ipv4.ts';
import type { ConnKey } from '../nic.ts';

/**
 * The worker's connections by four-tuple, found from a frame without decoding it twice. Keyed by
 * both ports first (cheap, and nearly always unique), then told apart by both addresses: two
 * connections may share their ports with different peers (or local addresses), and a frame
 * filed under the wrong one would publish one connection's snd.max into the other's record.
 */
export class ConnIndex<T extends { readonly key: ConnKey }> {
  private readonly byPorts = new Map<number, T[]>();
  private count = 0;

  /**
   * `addrs`: the table the keys' IPv6 handles belong to, through which an IPv6 frame's addresses
   * are found (none: IPv6 frames belong to no connection here).
   */
  constructor(private readonly addrs: () => AddressBook | null = () => null) {}

  get size(): number {
    return this.count;
  }

  add(v: T): void {
    const p = v.key.localPort * 65536 + v.key.remotePort;
    const list = this.byPorts.get(p);
    if (list === undefined) this.byPorts.set(p, [v]);
    else list.push(v);
    this.count++;
  }

  remove(v: T): void {
    const p = v.key.localPort * 65536 + v.key.remotePort;
    const list = this.byPorts.get(p);
    const at = list === undefined ? -1 : list.indexOf(v);
    if (at < 0) return;
    list!.splice(at, 1);
    if (list!.length === 0) this.byPorts.delete(p);
    this.count--;
  }

  /** IPv4 addresses compared as u32, whichever sign the caller's numbers have; IPv6 handles whole. */
  get(localIp: number, localPort: number, remoteIp: number, remotePort: number): T | undefined {
    const list = this.byPorts.get(localPort * 65536 + remotePort);
    if (list === undefined) return undefined;
    const l = addr(localIp);
    const r = addr(remoteIp);
    for (let i = 0; i < list.length; i++) {
      const k = list[i]!.key;
      if (addr(k.localIp) === l && addr(k.remoteIp) === r) return list[i];
    }
    return undefined;
  }

  /**
   * The connection an Ethernet frame carrying IPv4/TCP belongs to: received (`inbound`, our port is
   * the destination) or sent. Undefined for anything else, or a frame too short to say.
   */
  ofFrame(frame: Uint8Array, inbound: boolean): T | undefined {
    if (this.count === 0 || frame.length < 54) return undefined;
    const ip = ethL3Offset(frame);
    const type = ethType(frame);
    if (type === EtherType.IPV6) return this.ofFrame6(frame, ip, inbound);
    if (type !== EtherType.IPV4 || ipv4Proto(frame, ip) !== IpProto.TCP) return undefined;
    const t = ip + ipv4HeaderLen(frame, ip);
    if (frame.length < t + 4) return undefined;
    const sport = l4SrcPort(frame, t);
    const dport = l4DstPort(frame, t);
    const src = ipv4Src(frame, ip) >>> 0;
    const dst = ipv4Dst(frame, ip) >>> 0;
    return inbound ? this.get(dst, dport, src, sport) : this.get(src, sport, dst, dport);
  }

  /** The same for IPv6 with TCP right behind the fixed header, addresses found in the table. */
  private ofFrame6(frame: Uint8Array, ip: number, inbound: boolean): T | undefined {
    const addrs = this.addrs();
    if (addrs === null || frame.length < ip + 44 || frame[ip + 6] !== IpProto.TCP) return undefined;
    const src = addrs.find(frame, ip + 8);
    const dst = src < 0 ? -1 : addrs.find(frame, ip + 24);
    if (dst < 0) return undefined;
    const sport = l4SrcPort(frame, ip + 40);
    const dport = l4DstPort(frame, ip + 40);
    return inbound ? this.get(dst, dport, src, sport) : this.get(src, sport, dst, dport);
  }
}

function addr(ip: number): number {
  return ip > 0xffffffff ? ip : ip >>> 0;
}
