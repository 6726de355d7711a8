export * from './addr.ts';
export * from './arp.ts';
export * from './checksum.ts';
export type * from './decode-error.ts';
export * from './ethernet.ts';
export * from './icmp.ts';
export * from './ipv4.ts';
export * from './tcp.ts';
export * from './udp.ts';
