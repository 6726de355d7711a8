import { createHash } from 'node:crypto';
import type { Clock } from '../../core/clock.ts';
import type { Random } from '../../core/random.ts';
import { TWO_32 } from '../address-table.ts';

/**
 * Initial sequence numbers per RFC 6528: ISN = M + F(localip, localport, remoteip, remoteport,
 * secretkey), M a timer ticking every 4 microseconds. Hashing once per connection is cheap enough
 * to afford SHA-256.
 */
export class IsnGenerator {
  private readonly secret: Uint8Array;
  private readonly tuple = new Uint8Array(12);
  private readonly view = new DataView(this.tuple.buffer);

  constructor(
    private readonly clock: Clock,
    random: Random,
    /** The 16 bytes of an IPv6 address handle (absent on an IPv4-only engine). */
    private readonly addrBytes?: (ip: number) => Uint8Array,
  ) {
    this.secret = random.fill(new Uint8Array(16));
  }

  next(localIp: number, localPort: number, remoteIp: number, remotePort: number): number {
    const m = Math.floor(this.clock.now() * 250) >>> 0;
    if (remoteIp >= TWO_32 && this.addrBytes) {
      // A handle is a table slot, not the address: hash the address itself.
      const ports = this.tuple.subarray(8, 12);
      this.view.setUint16(8, localPort);
      this.view.setUint16(10, remotePort);
      const h = createHash('sha256')
        .update(this.secret)
        .update(this.addrBytes(localIp))
        .update(this.addrBytes(remoteIp))
        .update(ports)
        .digest();
      return (m + h.readUInt32BE(0)) >>> 0;
    }
    const v = this.view;
    v.setUint32(0, localIp >>> 0);
    v.setUint32(4, remoteIp >>> 0);
    v.setUint16(8, localPort);
    v.setUint16(10, remotePort);
    const h = createHash('sha256').update(this.secret).update(this.tuple).digest();
    const f = h.readUInt32BE(0);
    return (m + f) >>> 0;
  }
}
