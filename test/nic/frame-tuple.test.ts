/**
 * The frame readers of src/nic/frame-tuple.ts on what a NIC sends: a worker on a TAP publishes a
 * connection's snd.max from the segment about to leave (publishAhead), for IPv4 and IPv6 alike.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { tcpSegmentEnd } from '../../src/nic/frame-tuple.ts';

/** An Ethernet frame of one TCP segment: `v6` or IPv4 with `ihl` words, `payload` bytes, `flags`. */
function segment(v6: boolean, seq: number, payload: number, flags: number, ihl = 5): Uint8Array {
  const ipLen = v6 ? 40 : ihl * 4;
  const f = new Uint8Array(14 + ipLen + 20 + payload);
  const dv = new DataView(f.buffer);
  dv.setUint16(12, v6 ? 0x86dd : 0x0800);
  if (v6) {
    f[14] = 0x60;
    dv.setUint16(18, 20 + payload);
    f[20] = 6;
    f[21] = 64;
  } else {
    f[14] = 0x40 | ihl;
    dv.setUint16(16, ipLen + 20 + payload);
    f[22] = 64;
    f[23] = 6;
  }
  const t = 14 + ipLen;
  dv.setUint32(t + 4, seq >>> 0);
  f[t + 12] = 0x50;
  f[t + 13] = flags;
  return f;
}

const ACK = 0x10;
const FIN = 0x01;
const SYN = 0x02;

describe('tcpSegmentEnd: the sequence number past a segment we send', () => {
  for (const v6 of [false, true]) {
    const fam = v6 ? 'IPv6' : 'IPv4';
    test(`${fam}: payload, SYN and FIN count, the header does not`, () => {
      assert.equal(tcpSegmentEnd(segment(v6, 1000, 1448, ACK)), 2448);
      assert.equal(tcpSegmentEnd(segment(v6, 1000, 0, ACK)), 1000, 'a pure ACK occupies nothing');
      assert.equal(tcpSegmentEnd(segment(v6, 1000, 10, ACK | FIN)), 1011);
      assert.equal(tcpSegmentEnd(segment(v6, 0xffff_fff0, 0, SYN)), 0xffff_fff1);
      assert.equal(tcpSegmentEnd(segment(v6, 0xffff_fff0, 100, ACK)), 84, 'wraps at 2^32');
    });
  }
  test('IPv4 with options: the TCP header is found behind them', () => {
    assert.equal(tcpSegmentEnd(segment(false, 5000, 100, ACK, 8)), 5100);
  });
});
