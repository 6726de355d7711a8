/**
 * Frames captured from a Linux 6.x kernel through a TAP device (no checksum offload, so every
 * checksum is the one the kernel computed). Host 10.0.0.1 / 02:00:00:00:00:01, peer 10.0.0.2 /
 * 02:00:00:00:00:02. The ARP frame is as the kernel wrote it, before any Ethernet padding.
 */
export function hex(s: string): Uint8Array {
  const clean = s.replace(/\s+/g, '');
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** "Who has 10.0.0.2? Tell 10.0.0.1", broadcast. */
export const ARP_REQUEST = hex(
  'ffffffffffff 020000000001 0806' + '0001 0800 06 04 0001 020000000001 0a000001 000000000000 0a000002',
);

/** Linux SYN to 10.0.0.2:8080: MSS 1460, SACK-permitted, timestamps, NOP, window scale 10. */
export const TCP_SYN = hex(
  '020000000002 020000000001 0800' +
    '4500003c 50934000 4006d626 0a000001 0a000002' +
    'e9341f90 babfe5fc 00000000 a002faf0 5b3d0000' +
    '020405b4 0402080a 30c40387 00000000 0103030a',
);

/** Echo request built by the test harness (id 0x1234, seq 1), sent from 10.0.0.2. */
export const ICMP_ECHO_REQUEST = hex(
  '020000000001 020000000002 0800' +
    '45000031 42424000 4001e487 0a000002 0a000001' +
    '08008fff 12340001 6368696d6e65792d70696e672d6162636465666768',
);

/** The kernel's echo reply to ICMP_ECHO_REQUEST. */
export const ICMP_ECHO_REPLY = hex(
  '020000000002 020000000001 0800' +
    '45000031 99e60000 4001cce3 0a000001 0a000002' +
    '000097ff 12340001 6368696d6e65792d70696e672d6162636465666768',
);

/** UDP 10.0.0.1:5353 -> 10.0.0.2:9999, payload "hello chimney". */
export const UDP_DATAGRAM = hex(
  '020000000002 020000000001 0800' +
    '45000029 c2104000 401164b1 0a000001 0a000002' +
    '14e9270f 0015b79b 68656c6c6f206368696d6e6579',
);

export const HOST_IP = 0x0a000001;
export const PEER_IP = 0x0a000002;
export const HOST_MAC = 0x020000000001;
export const PEER_MAC = 0x020000000002;

import fc from '../helpers/fc.ts';

export const u8 = fc.integer({ min: 0, max: 0xff });
export const u16 = fc.integer({ min: 0, max: 0xffff });
/** fast-check integers are 32-bit signed; `>>> 0` spreads them over the whole u32 range. */
export const u32 = fc.integer({ min: -0x80000000, max: 0x7fffffff }).map((x) => x >>> 0);
export const mac = fc.tuple(u16, u32).map(([hi, lo]) => hi * 0x1_0000_0000 + lo);

export const DECODE_ERRORS = new Set([
  'truncated',
  'bad-checksum',
  'bad-version',
  'bad-header-length',
  'bad-length',
  'bad-option',
  'bad-type',
  'unsupported',
]);
