/**
 * Links: what moves Ethernet frames and reports carrier, and nothing above that. The contract
 * (`Link`) lives in src/core/link.ts so the stack can use it without importing this folder; here
 * are its implementations: the in-memory learning switch and its ports (`MemorySwitch`), seeded
 * impairments (loss, reordering, delay, queue limits), `TapLink` on a Linux TAP with vnet headers,
 * pooled frame buffers, and the pcap writer.
 */
export { FramePool, MAX_POOLED_FRAME, PoolBuf } from './frame-pool.ts';
export {
  DEFAULT_QUEUE_BYTES,
  type DirectedImpairment,
  type Impairment,
  type ImpairmentSpec,
  ResolvedImpairment,
  splitImpairment,
  validateImpairment,
} from './impairment.ts';
export type { Link } from './link.ts';
export { MemorySwitch, type PortOptions, type SwitchOptions, SwitchPort } from './memory-switch.ts';
export { type ByteSink, capture, PcapWriter, type PcapWriterOptions } from './pcap.ts';
