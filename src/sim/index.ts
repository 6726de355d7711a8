/**
 * The simulated network: a switch and any number of hosts (plain, with NICs, or teams) in one
 * thread, on virtual time that jumps to the next deadline, so a scenario replays exactly from its
 * seed. It sits above every layer, beside the CLI: only the CLI and the package index import it.
 */
export { SimHost, type SimHostOptions, SimNetwork, type SimNetworkOptions } from './sim-network.ts';
export { FrameTrace } from './trace.ts';
export { VirtualTimeDriver } from './virtual-time-driver.ts';
