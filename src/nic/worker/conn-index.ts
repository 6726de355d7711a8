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

  /** Addresses compared as u32, whichever sign the caller's numbers have. */
  get(localIp: number, localPort: number, remoteIp: number, remotePort: number): T | undefined {
    const list = this.byPorts.get(localPort * 65536 + remotePort);
    if (list === undefined) return undefined;
    for (let i = 0; i < list.length; i++) {
      const k = list[i]!.key;
      if (k.localIp >>> 0 === localIp >>> 0 && k.remoteIp >>> 0 === remoteIp >>> 0) return list[i];
    }
    return undefined;
  }

  /**
   * The connection an Ethernet frame carrying IPv4/TCP belongs to: received (`inbound`, our port is
   * the destination) or sent. Undefined for anything else, or a frame too short to say.
   */
  ofFrame(frame: Uint8Array, inbound: boolean): T | undefined {
    if (this.count === 0 || frame.length < 54) return undefined;
    const ip = frame[12] === 0x81 && frame[13] === 0x00 ? 18 : 14;
    if (frame[ip + 9] !== 6) return undefined;
    const t = ip + ((frame[ip]! & 0x0f) << 2);
    if (frame.length < t + 4) return undefined;
    const sport = (frame[t]! << 8) | frame[t + 1]!;
    const dport = (frame[t + 2]! << 8) | frame[t + 3]!;
    const src =
      ((frame[ip + 12]! << 24) | (frame[ip + 13]! << 16) | (frame[ip + 14]! << 8) | frame[ip + 15]!) >>> 0;
    const dst =
      ((frame[ip + 16]! << 24) | (frame[ip + 17]! << 16) | (frame[ip + 18]! << 8) | frame[ip + 19]!) >>> 0;
    return inbound ? this.get(dst, dport, src, sport) : this.get(src, sport, dst, dport);
  }
}
