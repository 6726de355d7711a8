import type { Clock } from '../../core/clock.ts';
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
 *
 * RFC 9293 3.4.1 and RFC 6528 want one such function per host, so that a four-tuple's next ISN is
 * above its last whichever part of the host opens it: the host stack and the NICs it offloads to
 * (each with a TCP layer of its own, a WorkerNic's on another thread) share one secret, and M
 * reads wall-clock time where the clock has it (each thread's performance.now() starts at that
 * thread's start, so a worker's M ran behind the host's by its start's lateness times 250).
 */
export class IsnGenerator {
  private readonly key: SipKey;
  /** localip, remoteip, localport, remoteport (IPv4), or the two 16-byte addresses and the ports. */
  private readonly tuple = new Uint8Array(36);
  private readonly view = new DataView(this.tuple.buffer);

  private readonly origin: number;

  constructor(
    private readonly clock: Clock,
    /** The host's 16-byte secret (TcpHostEnv.isnSecret). */
    secret: Uint8Array,
    /** The 16 bytes of an IPv6 address handle (absent on an IPv4-only engine). */
    private readonly addrBytes?: (ip: number) => Uint8Array,
  ) {
    this.key = sipKey(secret);
    this.origin = clock.origin ?? 0;
  }

  next(localIp: number, localPort: number, remoteIp: number, remotePort: number): number {
    // Whole 4 us ticks below 2^53 for any epoch time: >>> 0 keeps their low 32 bits exactly.
    const m = Math.floor((this.origin + this.clock.now()) * 250) >>> 0;
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
