import { readU16, readU32, writeU16, writeU32 } from '../wire/addr.ts';
import { foldChecksum, onesSum, pseudoHeaderSum, pseudoHeaderSum6 } from '../wire/checksum.ts';
import { EtherType } from '../wire/ethernet.ts';
import { ethL3Offset } from '../wire/fields.ts';

const TCP = 6;
const FIN_PSH = 0x09;
const CWR = 0x80;

/**
 * What a device without segmentation offload does to a TCP super-segment it is handed (Linux's
 * software GSO, `tcp_gso_segment`): cut it into segments of `gsoSize` payload bytes, each with a
 * copy of the IP and TCP headers, and complete every checksum. IPv4 segments get their own total
 * length, consecutive ids and a fresh header checksum; IPv6 segments their own payload length and
 * the super-segment's flow label and traffic class unchanged. Sequence numbers advance by the
 * payload before each segment; FIN and PSH stay on the last segment, CWR on the first. A frame
 * whose payload fits one segment (a checksum-only offload) is only checksummed.
 *
 * One segmenter reuses one buffer: each segment handed to `emit` is valid only during the call.
 */
export class GsoSegmenter {
  private buf = new Uint8Array(2048);

  /**
   * Cut `frame` (Ethernet, optionally 802.1Q, then IPv4 or an IPv6 fixed header, then TCP) into
   * segments of `gsoSize` payload bytes and hand each to `emit`. Returns the number of segments,
   * or -1, emitting nothing, if the frame is not TCP over IPv4 or IPv6 that can be cut.
   */
  segment(frame: Uint8Array, gsoSize: number, emit: (seg: Uint8Array) => void): number {
    const len = frame.length;
    if (len < 14 || gsoSize < 1) return -1;
    const ip = ethL3Offset(frame);
    if (len < ip) return -1;
    const type = readU16(frame, ip - 2);
    let ipHl: number;
    let v6: boolean;
    if (type === EtherType.IPV4 && len >= ip + 20 && frame[ip]! >>> 4 === 4) {
      ipHl = (frame[ip]! & 15) * 4;
      v6 = false;
      // A fragment cannot be cut: its TCP header is not where this code would look.
      if (ipHl < 20 || frame[ip + 9] !== TCP || (readU16(frame, ip + 6) & 0x3fff) !== 0) return -1;
    } else if (type === EtherType.IPV6 && len >= ip + 40 && frame[ip]! >>> 4 === 6) {
      ipHl = 40;
      v6 = true;
      if (frame[ip + 6] !== TCP) return -1;
    } else return -1;
    const l4 = ip + ipHl;
    if (len < l4 + 20) return -1;
    const thl = (frame[l4 + 12]! >>> 4) * 4;
    const hdr = l4 + thl;
    if (thl < 20 || hdr > len) return -1;
    const payload = len - hdr;
    const count = payload <= gsoSize ? 1 : Math.ceil(payload / gsoSize);
    const seq = readU32(frame, l4 + 4);
    const flags = frame[l4 + 13]!;
    const id = v6 ? 0 : readU16(frame, ip + 4);
    const most = hdr + Math.min(payload, gsoSize);
    if (this.buf.length < most) this.buf = new Uint8Array(most);
    const s = this.buf;
    s.set(frame.subarray(0, hdr), 0);
    for (let i = 0, at = 0; i < count; i++, at += gsoSize) {
      const n = Math.min(gsoSize, payload - at);
      const end = hdr + n;
      s.set(frame.subarray(hdr + at, hdr + at + n), hdr);
      const l4Len = thl + n;
      if (v6) writeU16(s, ip + 4, l4Len);
      else {
        writeU16(s, ip + 2, ipHl + l4Len);
        writeU16(s, ip + 4, (id + i) & 0xffff);
        writeU16(s, ip + 10, 0);
        writeU16(s, ip + 10, foldChecksum(onesSum(s, ip, ipHl)));
      }
      writeU32(s, l4 + 4, (seq + at) >>> 0);
      let f = flags;
      if (i < count - 1) f &= ~FIN_PSH;
      if (i > 0) f &= ~CWR;
      s[l4 + 13] = f;
      writeU16(s, l4 + 16, 0);
      const pseudo = v6
        ? pseudoHeaderSum6(s, ip + 8, s, ip + 24, TCP, l4Len)
        : pseudoHeaderSum(readU32(s, ip + 12), readU32(s, ip + 16), TCP, l4Len);
      writeU16(s, l4 + 16, foldChecksum(onesSum(s, l4, l4Len, pseudo)));
      emit(s.subarray(0, end));
    }
    return count;
  }
}
