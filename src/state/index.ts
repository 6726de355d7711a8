/**
 * The state objects that travel between owners: `NeighborState`, `PathState` and `TcpState`, each
 * split into const / cached / delegated (TCP also soft) parts, the offload trees that group them,
 * their versioned binary codec and field-by-field validation, and the byte rings (plain and in
 * shared memory) that hold a connection's send and receive data. Plain data: no time, no I/O.
 */
export * from './byte-ring.ts';
export * from './neighbor-state.ts';
export * from './offload-tree.ts';
export * from './path-state.ts';
export * from './shared-ring.ts';
export * from './state-codec.ts';
export * from './tcp-state.ts';
export * from './validate.ts';
