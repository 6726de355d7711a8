/**
 * What every layer may import: the injected `Clock` (re-armable timers; real and virtual time) and
 * `Random` (seeded or crypto), typed errors with Node-style codes, `Counters`, and the `Link`
 * contract that the stack consumes and src/link implements. Nothing here imports another folder.
 */
export * from './clock.ts';
export * from './counters.ts';
export * from './errors.ts';
export type * from './link.ts';
export * from './random.ts';
