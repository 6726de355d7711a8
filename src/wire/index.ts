/**
 * Header codecs over Uint8Array: Ethernet + 802.1Q, ARP, IPv4, ICMPv4, IPv6 (with its extension
 * headers), ICMPv6 and neighbor discovery, UDP, TCP with its options,
 * and Internet checksums. Decoders fill a caller-owned header and return null or a `DecodeError`
 * reason: they never throw and never allocate. Nothing here knows state, time or I/O.
 */
export * from './addr.ts';
export * from './arp.ts';
export * from './checksum.ts';
export type * from './decode-error.ts';
export * from './ethernet.ts';
export * from './fields.ts';
export * from './icmp.ts';
export * from './icmpv6.ts';
export * from './ipv4.ts';
export * from './ipv6.ts';
export * from './mld.ts';
export * from './ndp.ts';
export * from './tcp.ts';
export * from './udp.ts';
