export { SimHost, type SimHostOptions, SimNetwork, type SimNetworkOptions } from './sim-network.ts';
export { FrameTrace } from './trace.ts';
export { VirtualTimeDriver } from './virtual-time-driver.ts';
