import { createHash } from 'node:crypto';
import type { Random } from '../../core/random.ts';
import { TWO_32 } from '../address-table.ts';

/**
 * SYN cookies: when a listener's half-open backlog is full, the connection's whole memory goes into
 * our ISN so nothing is stored until the handshake's final ACK proves the peer can receive.
 *
 * ISN layout: bits 31..27 a 64-second counter (mod 32), bits 26..24 an index into MSS_TABLE, bits
 * 23..0 a keyed hash over the 4-tuple, the counter, the MSS index and the peer's ISN. A cookie is
 * accepted for two counter periods (64 to 128 s).
 *
 * With timestamps the peer echoes our TSval, so the low 6 bits of it carry what else the SYN asked
 * for (window scale in bits 0..3, 0xf for none; SACK-permitted in bit 4; ECN agreed in bit 5, as
 * Linux's cookie_init_timestamp). Without timestamps the cookie connection runs without window
 * scaling, SACK and ECN.
 */

export const MSS_TABLE: readonly number[] = [536, 1220, 1360, 1440, 1460, 4312, 8960, 65495];
const PERIOD_MS = 64_000;
const TS_BITS = 6;
const TS_MASK = (1 << TS_BITS) - 1;
const WS_NONE = 0xf;
const TS_SACK = 0x10;
const TS_ECN = 0x20;

export interface CookieOptions {
  mss: number;
  /** -1 when window scaling is not in use. */
  wscale: number;
  sackPermitted: boolean;
  /** The cookie's SYN-ACK agreed to ECN (it said ECE). */
  ecn: boolean;
}

export class SynCookies {
  private readonly secret: Uint8Array;
  private readonly scratch = new Uint8Array(21);
  private readonly view = new DataView(this.scratch.buffer);

  constructor(
    random: Random,
    /** The 16 bytes of an IPv6 address handle (absent on an IPv4-only engine). */
    private readonly addrBytes?: (ip: number) => Uint8Array,
  ) {
    this.secret = random.fill(new Uint8Array(16));
  }

  private hash(
    lip: number,
    lport: number,
    rip: number,
    rport: number,
    counter: number,
    peerIsn: number,
    mssIdx: number,
  ): number {
    const v = this.view;
    // An IPv6 handle is a table slot, reused once nothing holds the address: the peer's path may
    // be evicted between its SYN and its ACK (by the flood of other sources cookies are for) and
    // the address come back under another slot, so only its bytes may go into the hash.
    const bytes = rip >= TWO_32 ? this.addrBytes : undefined;
    v.setUint32(0, bytes ? 0 : lip >>> 0);
    v.setUint32(4, bytes ? 0 : rip >>> 0);
    v.setUint16(8, lport);
    v.setUint16(10, rport);
    v.setUint32(12, counter >>> 0);
    v.setUint32(16, peerIsn >>> 0);
    v.setUint8(20, mssIdx);
    const hash = createHash('sha256').update(this.secret).update(this.scratch);
    if (bytes) hash.update(bytes(lip)).update(bytes(rip));
    return hash.digest().readUInt32BE(0) & 0xffffff;
  }

  /** Index of the largest table MSS not above `mss`. */
  static mssIndex(mss: number): number {
    let i = 0;
    while (i + 1 < MSS_TABLE.length && MSS_TABLE[i + 1]! <= mss) i++;
    return i;
  }

  /** The ISN for a SYN-ACK answering the peer's SYN with sequence `peerIsn`. */
  make(
    lip: number,
    lport: number,
    rip: number,
    rport: number,
    peerIsn: number,
    mss: number,
    nowMs: number,
  ): number {
    const counter = Math.floor(nowMs / PERIOD_MS);
    const idx = SynCookies.mssIndex(mss);
    const h = this.hash(lip, lport, rip, rport, counter, peerIsn, idx);
    return (((counter & 31) << 27) | (idx << 24) | h) >>> 0;
  }

  /** The MSS the cookie carries, or -1 if it is forged or too old. */
  check(
    lip: number,
    lport: number,
    rip: number,
    rport: number,
    peerIsn: number,
    cookie: number,
    nowMs: number,
  ): number {
    const now = Math.floor(nowMs / PERIOD_MS);
    const c5 = cookie >>> 27;
    const idx = (cookie >>> 24) & 7;
    for (let age = 0; age <= 1; age++) {
      const counter = now - age;
      if ((counter & 31) !== c5) continue;
      if (this.hash(lip, lport, rip, rport, counter, peerIsn, idx) === (cookie & 0xffffff))
        return MSS_TABLE[idx]!;
    }
    return -1;
  }

  /** Our TSval for a cookie SYN-ACK: at most 63 ms behind the clock, low bits holding the options. */
  static encodeTs(nowTs: number, wscale: number, sackPermitted: boolean, ecn: boolean): number {
    const bits =
      (wscale >= 0 ? Math.min(wscale, 14) : WS_NONE) | (sackPermitted ? TS_SACK : 0) | (ecn ? TS_ECN : 0);
    let ts = ((nowTs & ~TS_MASK) | bits) >>> 0;
    if (ts > nowTs >>> 0) ts = (ts - (TS_MASK + 1)) >>> 0;
    return ts;
  }

  static decodeTs(tsEcr: number, out: CookieOptions): void {
    const ws = tsEcr & 0xf;
    out.wscale = ws === WS_NONE ? -1 : ws;
    out.sackPermitted = (tsEcr & TS_SACK) !== 0;
    out.ecn = (tsEcr & TS_ECN) !== 0;
  }
}
