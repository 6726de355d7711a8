import type { Clock } from '../../core/clock.ts';
import type { Random } from '../../core/random.ts';
import { type SipKey, sipHash24, sipKey } from '../../core/siphash.ts';
import { TWO_32 } from '../address-table.ts';

/**
 * Initial sequence numbers per RFC 6528: ISN = M + F(localip, localport, remoteip, remoteport,
 * secretkey), M a timer ticking every 4 microseconds, F a keyed pseudorandom function: SipHash-2-4
 * under a 128-bit secret drawn once, as Linux's secure_tcp_seq (net_secret). An observer who sees
 * the ISNs of its own connections learns nothing of another four-tuple's, and a four-tuple reused
 * soon after starts above its previous incarnation. F runs for every SYN a listener answers, on a
 * worker NIC's thread in a burst of thousands; node:crypto's SHA-256 did the same job with an
 * object, a native call and a digest buffer each.
 */
export class IsnGenerator {
  private readonly key: SipKey;
  /** localip, remoteip, localport, remoteport (IPv4), or the two 16-byte addresses and the ports. */
  private readonly tuple = new Uint8Array(36);
  private readonly view = new DataView(this.tuple.buffer);

  constructor(
    private readonly clock: Clock,
    random: Random,
    /** The 16 bytes of an IPv6 address handle (absent on an IPv4-only engine). */
    private readonly addrBytes?: (ip: number) => Uint8Array,
  ) {
    this.key = sipKey(random.fill(new Uint8Array(16)));
  }

  next(localIp: number, localPort: number, remoteIp: number, remotePort: number): number {
    const m = Math.floor(this.clock.now() * 250) >>> 0;
    const t = this.tuple;
    const v = this.view;
    let n: number;
    if (remoteIp >= TWO_32 && this.addrBytes) {
      // A handle is a table slot, not the address: hash the address itself.
      t.set(this.addrBytes(localIp), 0);
      t.set(this.addrBytes(remoteIp), 16);
      n = 32;
    } else {
      v.setUint32(0, localIp >>> 0);
      v.setUint32(4, remoteIp >>> 0);
      n = 8;
    }
    v.setUint16(n, localPort);
    v.setUint16(n + 2, remotePort);
    return (m + sipHash24(this.key, t, 0, n + 4)) >>> 0;
  }
}
