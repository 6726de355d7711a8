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
